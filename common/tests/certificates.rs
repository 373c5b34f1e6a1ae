//! Certificates, SNIs and route `snis` (KONG.md §1.7, §1.4): what loads, and the exact path
//! and message of what does not. Keys and certificates are generated here, at test time.

use portico_common::{load_str, ConfigErrors, Loaded};
use rcgen::{CertificateParams, KeyPair};

struct Pair {
    cert: String,
    key: String,
}

fn pair_with(names: &[&str], key: KeyPair) -> Pair {
    let params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.self_signed(&key).unwrap();
    Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// An ECDSA P-256 self-signed certificate for `names`.
fn pair(names: &[&str]) -> Pair {
    pair_with(names, KeyPair::generate().unwrap())
}

/// YAML block scalar of `pem`, indented for a field at `indent`.
fn block(pem: &str, indent: usize) -> String {
    let pad = " ".repeat(indent + 2);
    let mut s = String::from("|\n");
    for line in pem.trim_end().lines() {
        s.push_str(&pad);
        s.push_str(line);
        s.push('\n');
    }
    s
}

fn load(body: &str) -> Result<Loaded, ConfigErrors> {
    load_str(&format!("_format_version: \"3.0\"\n{body}"), &|_| None)
}

#[track_caller]
fn refused(body: &str) -> ConfigErrors {
    match load(body) {
        Ok(_) => panic!("config should have been refused:\n{body}"),
        Err(e) => e,
    }
}

fn cert_entry(p: &Pair, extra: &str) -> String {
    format!(
        "- cert: {}  key: {}{extra}",
        block(&p.cert, 2),
        block(&p.key, 2)
    )
}

#[test]
fn certificates_load_with_nested_and_top_level_snis() {
    let p = pair(&["api.example.com"]);
    let id = "3f4e6a0e-1b0c-4d8e-9a53-0c7f1f0a2b11";
    let body = format!(
        "certificates:\n{}  id: {id}\n  snis:\n  - API.example.com\n  - name: \"*.wild.example.com\"\n    tags: [edge]\nsnis:\n- name: default.example.com\n  certificate: {id}\n",
        cert_entry(&p, "")
    );
    let loaded = load(&body).unwrap_or_else(|e| panic!("{e}"));
    let certs = &loaded.snapshot.certificates;
    assert_eq!(certs.len(), 1);
    let c = &certs[0];
    assert_eq!(c.id.to_string(), id);
    let names: Vec<&str> = c.snis.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "api.example.com",
            "*.wild.example.com",
            "default.example.com"
        ],
        "nested first, lowercased"
    );
    assert_eq!(c.snis[1].tags, ["edge"]);
    assert_eq!(c.cert, p.cert.trim_end().to_owned() + "\n");
    assert!(loaded.snapshot.summary().ends_with("1 certificate"));

    // The same file loads to the same hash; another certificate changes it.
    let again = load(&body).unwrap();
    assert_eq!(again.snapshot.hash, loaded.snapshot.hash);
    let other = pair(&["api.example.com"]);
    let changed = load(
        &body
            .replace(&block(&p.cert, 2), &block(&other.cert, 2))
            .replace(&block(&p.key, 2), &block(&other.key, 2)),
    )
    .unwrap();
    assert_ne!(changed.snapshot.hash, loaded.snapshot.hash);
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused() {
    let a = pair(&["a.example.com"]);
    let b = pair(&["b.example.com"]);
    let body = format!(
        "certificates:\n- cert: {}  key: {}",
        block(&a.cert, 2),
        block(&b.key, 2)
    );
    let e = refused(&body);
    assert!(
        e.has("certificates[0].key", "certificate does not match key"),
        "{e}"
    );
    assert_eq!(e.errors.len(), 1, "{e}");
}

#[test]
fn malformed_pem_names_the_field_and_never_echoes_the_key() {
    let a = pair(&["a.example.com"]);
    let body = format!(
        "certificates:\n- cert: not a certificate\n  key: {}",
        block(&a.key, 2)
    );
    let e = refused(&body);
    assert!(
        e.has(
            "certificates[0].cert",
            "invalid certificate: no PEM 'CERTIFICATE' block found"
        ),
        "{e}"
    );

    let secret = "s3cr3t-key-material";
    let body = format!(
        "certificates:\n- cert: {}  key: \"-----BEGIN PRIVATE KEY-----\\n{secret}\\n-----END PRIVATE KEY-----\\n\"\n",
        block(&a.cert, 2)
    );
    let e = refused(&body);
    assert_eq!(e.errors.len(), 1, "{e}");
    assert_eq!(e.errors[0].path, "certificates[0].key", "{e}");
    assert!(e.errors[0].message.starts_with("invalid key"), "{e}");
    assert!(!e.to_string().contains(secret), "the key leaked into: {e}");

    let e = refused("certificates:\n- snis: [a.example.com]\n");
    assert!(
        e.has("certificates[0].cert", "required field missing"),
        "{e}"
    );
    assert!(
        e.has("certificates[0].key", "required field missing"),
        "{e}"
    );
}

#[test]
fn an_alternative_pair_must_be_complete_and_of_another_key_type() {
    let main = pair(&["a.example.com"]);
    let same_type = pair(&["a.example.com"]);
    let ed = pair_with(
        &["a.example.com"],
        KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
    );
    let with_alt = |alt: &Pair| {
        cert_entry(
            &main,
            &format!(
                "  cert_alt: {}  key_alt: {}",
                block(&alt.cert, 2),
                block(&alt.key, 2)
            ),
        )
    };
    load(&format!("certificates:\n{}", with_alt(&ed))).unwrap_or_else(|e| panic!("{e}"));

    let e = refused(&format!("certificates:\n{}", with_alt(&same_type)));
    assert_eq!(e.errors.len(), 1, "{e}");
    assert_eq!(e.errors[0].path, "certificates[0].cert_alt");
    assert!(
        e.errors[0]
            .message
            .starts_with("certificate and alternative certificate need to have different type"),
        "{e}"
    );

    let e = refused(&format!(
        "certificates:\n{}",
        cert_entry(&main, &format!("  cert_alt: {}", block(&ed.cert, 2)))
    ));
    assert!(
        e.has(
            "certificates[0]",
            "all or none of these fields must be set: 'cert_alt', 'key_alt'"
        ),
        "{e}"
    );
}

#[test]
fn sni_names_are_checked_and_unique() {
    let p = pair(&["a.example.com"]);
    let body = format!(
        "certificates:\n{}  snis: [a.example.com, \"a.*.com\", \"10.0.0.1\", \"b.example.com:443\"]\n",
        cert_entry(&p, "")
    );
    let e = refused(&body);
    assert!(
        e.has(
            "certificates[0].snis[1].name",
            "invalid wildcard: must be placed at leftmost or rightmost label"
        ),
        "{e}"
    );
    assert!(
        e.has(
            "certificates[0].snis[2].name",
            "invalid value '10.0.0.1': a server name cannot be an IP address"
        ),
        "{e}"
    );
    assert!(
        e.has(
            "certificates[0].snis[3].name",
            "invalid value 'b.example.com:443': a server name has no port"
        ),
        "{e}"
    );

    let q = pair(&["b.example.com"]);
    let body = format!(
        "certificates:\n{}  snis: [a.example.com]\n{}  snis: [A.EXAMPLE.COM]\n",
        cert_entry(&p, ""),
        cert_entry(&q, "")
    );
    let e = refused(&body);
    assert_eq!(e.errors.len(), 1, "{e}");
    assert_eq!(e.errors[0].path, "certificates[1].snis[0]");
    assert!(
        e.errors[0].message.starts_with("uniqueness violation"),
        "{e}"
    );

    let e = refused(
        "snis:\n- name: a.example.com\n  certificate: 3f4e6a0e-1b0c-4d8e-9a53-0c7f1f0a2b11\n",
    );
    assert!(
        e.has(
            "snis[0].certificate",
            "invalid reference 'certificate: 3f4e6a0e-1b0c-4d8e-9a53-0c7f1f0a2b11' (no such entry in 'certificates')"
        ),
        "{e}"
    );
    let e = refused("snis:\n- name: a.example.com\n");
    assert!(
        e.has("snis[0].certificate", "required field missing"),
        "{e}"
    );
}

#[test]
fn route_snis_need_a_tls_protocol() {
    let ok = load(
        "services:\n- name: s\n  url: http://127.0.0.1:9\n  routes:\n  - name: r\n    protocols: [https]\n    snis: [API.example.com, \"*.example.org\"]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        ok.snapshot.routes[0].snis,
        ["api.example.com", "*.example.org"]
    );

    let e = refused(
        "services:\n- name: s\n  url: http://127.0.0.1:9\n  routes:\n  - name: r\n    protocols: [http]\n    paths: [/]\n    snis: [api.example.com]\n",
    );
    assert!(
        e.has(
            "services[0].routes[0].snis",
            "'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls' or 'tls_passthrough'"
        ),
        "{e}"
    );

    // With http in the protocols, snis alone do not make a route match anything over http.
    let e = refused(
        "services:\n- name: s\n  url: http://127.0.0.1:9\n  routes:\n  - name: r\n    snis: [api.example.com]\n",
    );
    assert!(
        e.has(
            "services[0].routes[0]",
            "must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http'"
        ),
        "{e}"
    );

    let e = refused(
        "services:\n- name: s\n  url: http://127.0.0.1:9\n  routes:\n  - name: r\n    protocols: [https]\n    snis: [\"*\"]\n",
    );
    assert!(e.errors[0].path == "services[0].routes[0].snis[0]", "{e}");
}

fn ca_pem(expired: bool) -> String {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    if expired {
        params.not_before = rcgen::date_time_ymd(1999, 1, 1);
        params.not_after = rcgen::date_time_ymd(2000, 1, 1);
    }
    params
        .self_signed(&KeyPair::generate().unwrap())
        .unwrap()
        .pem()
}

#[test]
fn ca_certificates_must_be_one_unexpired_ca() {
    let ca = ca_pem(false);
    let id = "0b7c5f2e-7a3a-4c1e-9d55-6f3c2b1a0e99";
    let loaded = load(&format!(
        "ca_certificates:\n- id: {id}\n  cert: {}",
        block(&ca, 2)
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.snapshot.ca_certificates.len(), 1);
    assert_eq!(loaded.snapshot.ca_certificates[0].id.to_string(), id);

    let leaf = pair(&["a.example.com"]);
    let e = refused(&format!(
        "ca_certificates:\n- cert: {}",
        block(&leaf.cert, 2)
    ));
    assert!(
        e.has(
            "ca_certificates[0].cert",
            "certificate does not appear to be a CA because it is missing the \"CA\" basic constraint"
        ),
        "{e}"
    );
    let e = refused(&format!(
        "ca_certificates:\n- cert: {}",
        block(&ca_pem(true), 2)
    ));
    assert!(
        e.has(
            "ca_certificates[0].cert",
            "certificate expired, \"Not After\" time is in the past"
        ),
        "{e}"
    );
    let two = format!("{ca}{}", ca_pem(false));
    let e = refused(&format!("ca_certificates:\n- cert: {}", block(&two, 2)));
    assert!(
        e.has(
            "ca_certificates[0].cert",
            "please submit only one certificate at a time"
        ),
        "{e}"
    );
}

#[test]
fn https_services_reference_ca_certificates_and_a_client_certificate() {
    let ca = ca_pem(false);
    let client = pair(&["client.example.com"]);
    let ca_id = "0b7c5f2e-7a3a-4c1e-9d55-6f3c2b1a0e99";
    let cert_id = "3f4e6a0e-1b0c-4d8e-9a53-0c7f1f0a2b11";
    let entities = format!(
        "ca_certificates:\n- id: {ca_id}\n  cert: {}certificates:\n{}  id: {cert_id}\n",
        block(&ca, 2),
        cert_entry(&client, "")
    );
    let service = |extra: &str| {
        format!("services:\n- name: s\n  url: https://api.internal:8443\n{extra}{entities}")
    };
    let loaded = load(&service(&format!(
        "  tls_verify: true\n  ca_certificates: [{ca_id}]\n  client_certificate: {{id: {cert_id}}}\n"
    )))
    .unwrap_or_else(|e| panic!("{e}"));
    let s = &loaded.snapshot.services[0];
    assert_eq!(s.tls_verify, Some(true));
    assert_eq!(s.ca_certificates[0].to_string(), ca_id);
    assert_eq!(
        s.client_certificate.map(|c| c.to_string()).as_deref(),
        Some(cert_id)
    );

    let other = "9a9a9a9a-1b0c-4d8e-9a53-0c7f1f0a2b11";
    let e = refused(&service(&format!(
        "  ca_certificates: [{other}]\n  client_certificate: {other}\n"
    )));
    assert!(
        e.has(
            "services[0].ca_certificates[0]",
            &format!("invalid reference '{other}' (no such entry in 'ca_certificates')")
        ),
        "{e}"
    );
    assert!(
        e.has(
            "services[0].client_certificate",
            &format!(
                "invalid reference 'client_certificate: {other}' (no such entry in 'certificates')"
            )
        ),
        "{e}"
    );
    let e = refused(&format!(
        "services:\n- name: s\n  url: http://api.internal\n  client_certificate: {cert_id}\n{entities}"
    ));
    assert!(
        e.has(
            "services[0].client_certificate",
            "value must be null when 'protocol' is 'http'"
        ),
        "{e}"
    );
}
