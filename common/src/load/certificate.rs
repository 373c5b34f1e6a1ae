//! Certificates and SNIs (KONG.md §1.7): each certificate's PEM chain and key are parsed and
//! checked against each other here, so a bad one is refused with the entity and field it came
//! from instead of failing a handshake later. SNIs nested in a certificate and top-level ones
//! (`certificate:`) end up in the same [`Certificate`], nested ones first.

use super::checks::{self, explicit_id};
use super::collect::{Collected, Item, Parent};
use super::{ids, Ctx, Index};
use crate::config;
use crate::error::field_path;
use crate::snapshot::{CaCertificate, Certificate, Service, Sni};
use crate::tls::{self, Field};

/// Validates certificates, then attaches every SNI to its certificate.
pub(crate) fn build(c: &Collected, ctx: &mut Ctx) -> Vec<Certificate> {
    let mut out: Vec<Certificate> = c
        .certificates
        .iter()
        .map(|item| certificate(item, ctx))
        .collect();
    let mut index = Index::default();
    for (i, cert) in out.iter().enumerate() {
        index.add(None, cert.id, i);
    }
    for item in &c.snis {
        let owner = index.parent(
            item.parent,
            &item.cfg.certificate,
            "certificates",
            &item.path,
            "certificate",
            true,
            &mut ctx.issues,
        );
        if let Some(sni) = sni(item, ctx) {
            if let Some(o) = owner {
                out[o].snis.push(sni);
            }
        }
    }
    out
}

fn certificate(item: &Item<config::Certificate>, ctx: &mut Ctx) -> Certificate {
    let (cfg, path) = (&item.cfg, item.path.as_str());
    let explicit = explicit_id(&cfg.id, path, &mut ctx.issues);
    let cert = checks::required(&cfg.cert, path, "cert", &mut ctx.issues).cloned();
    let key = checks::required(&cfg.key, path, "key", &mut ctx.issues).cloned();
    let main = match (&cert, &key) {
        (Some(c), Some(k)) => pair(c, k, path, ("cert", "key"), ctx),
        _ => None,
    };
    match (&cfg.cert_alt, &cfg.key_alt) {
        (Some(c), Some(k)) => {
            let alt = pair(c, k, path, ("cert_alt", "key_alt"), ctx);
            if let (Some(main), Some(alt)) = (main, alt) {
                if main == alt {
                    ctx.issues.error(
                        &field_path(path, "cert_alt"),
                        format!(
                            "certificate and alternative certificate need to have different type (e.g. RSA and ECDSA), the provided certificates were both of the same type ({})",
                            tls::algorithm_name(main)
                        ),
                    );
                }
            }
        }
        (None, None) => {}
        _ => ctx.issues.error(
            path,
            "all or none of these fields must be set: 'cert_alt', 'key_alt'",
        ),
    }
    // No natural key: the certificate itself names it (the public part, never the key).
    let (id, from) = ids::assign(
        "certificates",
        explicit,
        Some(cert.as_deref().unwrap_or("").trim()),
        "",
    );
    ctx.claim_id("certificates", id, from, path);
    Certificate {
        id,
        cert: cert.unwrap_or_default(),
        key: key.unwrap_or_default(),
        cert_alt: cfg.cert_alt.clone(),
        key_alt: cfg.key_alt.clone(),
        snis: Vec::new(),
        tags: checks::tags(&cfg.tags, path, &mut ctx.issues),
    }
}

/// Parses one chain and key; reports under `fields` and returns the key's type.
fn pair(
    cert: &str,
    key: &str,
    path: &str,
    (cert_field, key_field): (&str, &str),
    ctx: &mut Ctx,
) -> Option<rustls::SignatureAlgorithm> {
    match tls::parse(cert, key) {
        Ok(parsed) => Some(parsed.algorithm),
        Err(e) => {
            let field = match e.field {
                Field::Cert => cert_field,
                Field::Key => key_field,
            };
            ctx.issues.error(&field_path(path, field), e.message);
            None
        }
    }
}

fn sni(item: &Item<config::Sni>, ctx: &mut Ctx) -> Option<Sni> {
    let (cfg, path) = (&item.cfg, item.path.as_str());
    let explicit = explicit_id(&cfg.id, path, &mut ctx.issues);
    let name = checks::required(&cfg.name, path, "name", &mut ctx.issues)?.to_ascii_lowercase();
    if let Err(msg) = checks::sni_name(&name) {
        ctx.issues.error(&field_path(path, "name"), msg);
        return None;
    }
    let tags = checks::tags(&cfg.tags, path, &mut ctx.issues);
    let (id, from) = ids::assign("snis", explicit, Some(&name), "");
    if ctx
        .unique
        .check("snis", "name", &name, path, &mut ctx.issues)
    {
        ctx.claim_id("snis", id, from, path);
    }
    // A nested SNI names no certificate; a top-level one must (checked by the caller).
    debug_assert!(item.parent == Parent::Top || cfg.certificate.is_none());
    Some(Sni { id, name, tags })
}

/// CA certificates (KONG.md §1.7): one CA certificate each, not expired.
pub(crate) fn build_ca(c: &Collected, ctx: &mut Ctx) -> Vec<CaCertificate> {
    let mut out = Vec::with_capacity(c.ca_certificates.len());
    for item in &c.ca_certificates {
        let (cfg, path) = (&item.cfg, item.path.as_str());
        let explicit = explicit_id(&cfg.id, path, &mut ctx.issues);
        let cert = checks::required(&cfg.cert, path, "cert", &mut ctx.issues).cloned();
        if let Some(pem) = &cert {
            if let Err(msg) = tls::check_ca(pem) {
                ctx.issues.error(&field_path(path, "cert"), msg);
            }
        }
        let (id, from) = ids::assign(
            "ca_certificates",
            explicit,
            Some(cert.as_deref().unwrap_or("").trim()),
            "",
        );
        ctx.claim_id("ca_certificates", id, from, path);
        out.push(CaCertificate {
            id,
            cert: cert.unwrap_or_default(),
            tags: checks::tags(&cfg.tags, path, &mut ctx.issues),
        });
    }
    out
}

/// Resolves each https service's `ca_certificates` and `client_certificate` (ids of the
/// entities above; Kong's `{ id = ... }` form is taken too). `services` is aligned with
/// `items`.
pub(crate) fn service_tls(
    items: &[Item<config::Service>],
    services: &mut [Service],
    certificates: &[Certificate],
    cas: &[CaCertificate],
    ctx: &mut Ctx,
) {
    for (item, service) in items.iter().zip(services.iter_mut()) {
        let path = item.path.as_str();
        for (i, reference) in item.cfg.ca_certificates.iter().flatten().enumerate() {
            let field = crate::error::index_path(&field_path(path, "ca_certificates"), i);
            match uuid::Uuid::parse_str(reference)
                .ok()
                .filter(|id| cas.iter().any(|c| c.id == *id))
            {
                Some(id) if !service.ca_certificates.contains(&id) => {
                    service.ca_certificates.push(id);
                }
                Some(_) => {}
                None => ctx.issues.error(
                    &field,
                    format!("invalid reference '{reference}' (no such entry in 'ca_certificates')"),
                ),
            }
        }
        let reference = match &item.cfg.client_certificate {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Object(o)) => match o.get("id") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                _ => Some(String::new()),
            },
            Some(_) => Some(String::new()),
        };
        if let Some(reference) = reference {
            let field = field_path(path, "client_certificate");
            match uuid::Uuid::parse_str(&reference)
                .ok()
                .filter(|id| certificates.iter().any(|c| c.id == *id))
            {
                Some(id) => service.client_certificate = Some(id),
                None if reference.is_empty() => ctx.issues.error(
                    &field,
                    "expected a certificate id, or an object with its 'id'",
                ),
                None => ctx.issues.error(
                    &field,
                    format!(
                        "invalid reference 'client_certificate: {reference}' (no such entry in 'certificates')"
                    ),
                ),
            }
        }
    }
}
