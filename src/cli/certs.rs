//! `portico certs init`: a cluster CA and the certificates for mutual TLS between the control
//! plane and its data planes. Keys never leave the machine that ran the command; the CA key is
//! only needed again to issue more certificates.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// `portico certs ...`
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a cluster CA plus control-plane and data-plane certificates in a directory.
    Init(InitArgs),
}

/// Options of `portico certs init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Directory to write into (created; existing files are not overwritten).
    #[arg(long, env = "PORTICO_CERTS_OUT", default_value = "./portico-certs")]
    pub out: PathBuf,
    /// Names and IPs the control plane is reached at (its certificate's SANs).
    #[arg(
        long = "cp-host",
        env = "PORTICO_CERTS_CP_HOSTS",
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1"
    )]
    pub cp_hosts: Vec<String>,
    /// Validity of the control-plane and data-plane certificates, in days.
    #[arg(long, default_value_t = 825)]
    pub days: i64,
}

/// Runs `portico certs`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Init(a) => init(&a),
    }
}

/// The files `certs init` writes, in order.
pub const FILES: [&str; 6] = ["ca.crt", "ca.key", "cp.crt", "cp.key", "dp.crt", "dp.key"];

fn init(args: &InitArgs) -> anyhow::Result<ExitCode> {
    fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    for f in FILES {
        let p = args.out.join(f);
        if p.exists() {
            anyhow::bail!(
                "{} already exists; refusing to overwrite cluster credentials (use another --out)",
                p.display()
            );
        }
    }
    let bundle = generate(&args.cp_hosts, args.days)?;
    write(&args.out, "ca.crt", &bundle.ca_cert, false)?;
    write(&args.out, "ca.key", &bundle.ca_key, true)?;
    write(&args.out, "cp.crt", &bundle.cp_cert, false)?;
    write(&args.out, "cp.key", &bundle.cp_key, true)?;
    write(&args.out, "dp.crt", &bundle.dp_cert, false)?;
    write(&args.out, "dp.key", &bundle.dp_key, true)?;
    let d = args.out.display();
    println!("wrote a cluster CA and certificates to {d}:");
    println!("  control plane: portico cp --cluster-cert {d}/cp.crt --cluster-key {d}/cp.key --cluster-ca {d}/ca.crt");
    println!("  data plane:    portico dp --control-plane https://{}:8005 --cluster-cert {d}/dp.crt --cluster-key {d}/dp.key --cluster-ca {d}/ca.crt",
        args.cp_hosts.first().map_or("localhost", String::as_str));
    println!("keep ca.key offline; it is only needed to issue more certificates");
    Ok(ExitCode::SUCCESS)
}

/// PEM texts of a freshly generated cluster CA and its two leaf certificates.
#[derive(Debug)]
pub struct Bundle {
    pub ca_cert: String,
    pub ca_key: String,
    pub cp_cert: String,
    pub cp_key: String,
    pub dp_cert: String,
    pub dp_key: String,
}

/// Generates a CA (10 years) and control-plane (server) / data-plane (client) certificates.
pub fn generate(cp_hosts: &[String], days: i64) -> anyhow::Result<Bundle> {
    let now = OffsetDateTime::now_utc();
    let mut ca = CertificateParams::default();
    ca.distinguished_name = name("Portico cluster CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - Duration::days(1);
    ca.not_after = now + Duration::days(3650);
    let ca_key = KeyPair::generate()?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = CertifiedIssuer::self_signed(ca, ca_key)?;

    let leaf = |cn: &str,
                sans: Vec<String>,
                usage: ExtendedKeyUsagePurpose|
     -> anyhow::Result<(String, String)> {
        let mut p = CertificateParams::new(sans)?;
        p.distinguished_name = name(cn);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![usage];
        p.not_before = now - Duration::days(1);
        p.not_after = now + Duration::days(days);
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let (cp_cert, cp_key) = leaf(
        "portico-control-plane",
        cp_hosts.to_vec(),
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (dp_cert, dp_key) = leaf(
        "portico-data-plane",
        vec!["portico-data-plane".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    Ok(Bundle {
        ca_cert: issuer.pem(),
        ca_key: ca_key_pem,
        cp_cert,
        cp_key,
        dp_cert,
        dp_key,
    })
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "Portico");
    dn
}

fn write(dir: &Path, file: &str, contents: &str, secret: bool) -> anyhow::Result<()> {
    let path = dir.join(file);
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = opts
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}
