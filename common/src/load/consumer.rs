//! Consumers and their credentials: key-auth keys, jwt secrets, basic-auth passwords, ACL
//! groups (KONG.md §1.6). Credentials nested in a consumer and top-level ones (`consumer:`)
//! end up in the same [`Consumer`], nested ones first.
//!
//! Portico is stricter than Kong where Kong would generate a secret: a declarative file must
//! write key-auth keys and HMAC jwt secrets. A random one changes on every reload, and one
//! derived from the credential's id could be computed by anyone.

use std::collections::HashMap;

use sha1::{Digest, Sha1};

use super::checks::{self, explicit_id, one_of};
use super::collect::{Collected, Item, Parent};
use super::{ids, Ctx, Index};
use crate::config;
use crate::error::field_path;
use crate::snapshot::{Acl, BasicAuthCredential, Consumer, JwtSecret, KeyAuthCredential};

const JWT_ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256",
    "PS384", "PS512", "EdDSA",
];

/// Validates consumers, then attaches every credential to its consumer.
pub(crate) fn build(c: &Collected, ctx: &mut Ctx) -> (Vec<Consumer>, Index) {
    let mut out: Vec<Consumer> = c.consumers.iter().map(|item| consumer(item, ctx)).collect();
    let mut index = Index::default();
    // Usernames first: they win over a custom_id spelled the same way.
    for (i, con) in out.iter().enumerate() {
        index.add(con.username.as_deref(), con.id, i);
    }
    for (i, con) in out.iter().enumerate() {
        index.add(con.custom_id.as_deref(), con.id, i);
    }

    let owner = |item_parent: Parent, reference: &Option<String>, path: &str, ctx: &mut Ctx| {
        index.parent(
            item_parent,
            reference,
            "consumers",
            path,
            "consumer",
            true,
            &mut ctx.issues,
        )
    };

    let keyauth_owners: Vec<Option<usize>> = c
        .keyauth
        .iter()
        .map(|it| owner(it.parent, &it.cfg.consumer, &it.path, ctx))
        .collect();
    let ranks = key_ranks(&c.keyauth, &keyauth_owners);
    for ((item, owner), rank) in c.keyauth.iter().zip(&keyauth_owners).zip(ranks) {
        if let Some(o) = *owner {
            let cred = keyauth(item, out[o].id, rank, ctx);
            out[o].keyauth_credentials.push(cred);
        }
    }

    let mut keyless: HashMap<usize, usize> = HashMap::new();
    for item in &c.jwt {
        let Some(o) = owner(item.parent, &item.cfg.consumer, &item.path, ctx) else {
            continue;
        };
        let ordinal = if item.cfg.key.is_none() {
            let n = keyless.entry(o).or_default();
            *n += 1;
            *n
        } else {
            0
        };
        let cred = jwt(item, out[o].id, ordinal, ctx);
        out[o].jwt_secrets.push(cred);
    }

    for item in &c.basicauth {
        let Some(o) = owner(item.parent, &item.cfg.consumer, &item.path, ctx) else {
            continue;
        };
        let cred = basicauth(item, out[o].id, ctx);
        out[o].basicauth_credentials.push(cred);
    }

    for item in &c.acls {
        let Some(o) = owner(item.parent, &item.cfg.consumer, &item.path, ctx) else {
            continue;
        };
        let acl = acl(item, out[o].id, ctx);
        out[o].acls.push(acl);
    }
    (out, index)
}

fn consumer(item: &Item<config::Consumer>, ctx: &mut Ctx) -> Consumer {
    let (cfg, path) = (&item.cfg, item.path.as_str());
    let explicit = explicit_id(&cfg.id, path, &mut ctx.issues);
    let username = cfg.username.clone().filter(|u| !u.is_empty());
    let custom_id = cfg.custom_id.clone().filter(|u| !u.is_empty());
    if username.is_none() && custom_id.is_none() {
        ctx.issues.error(
            path,
            "at least one of these fields must be non-empty: 'custom_id', 'username'",
        );
    }
    let key = match (&username, &custom_id) {
        (Some(u), _) => Some(u.clone()),
        (None, Some(c)) => Some(ids::cache_key("consumers", &["custom_id", c])),
        (None, None) => None,
    };
    let (id, from) = ids::assign("consumers", explicit, key.as_deref(), &item.content);
    let tags = checks::tags(&cfg.tags, path, &mut ctx.issues);
    let fresh_username = username.as_ref().is_none_or(|u| {
        ctx.unique
            .check("consumers", "username", u, path, &mut ctx.issues)
    });
    let fresh_custom_id = custom_id.as_ref().is_none_or(|c| {
        ctx.unique
            .check("consumers", "custom_id", c, path, &mut ctx.issues)
    });
    if fresh_username && fresh_custom_id {
        ctx.claim_id("consumers", id, from, path);
    }
    Consumer {
        id,
        username,
        custom_id,
        keyauth_credentials: Vec::new(),
        jwt_secrets: Vec::new(),
        basicauth_credentials: Vec::new(),
        acls: Vec::new(),
        tags,
    }
}

/// Each key's rank among its consumer's keys in sorted order: an id input that survives
/// reordering and says nothing about the key itself.
fn key_ranks(items: &[Item<config::KeyAuthCredential>], owners: &[Option<usize>]) -> Vec<usize> {
    let mut by_owner: HashMap<usize, Vec<(&str, usize)>> = HashMap::new();
    for (i, (item, owner)) in items.iter().zip(owners).enumerate() {
        if let (Some(o), Some(k)) = (owner, item.cfg.key.as_deref()) {
            by_owner.entry(*o).or_default().push((k, i));
        }
    }
    let mut ranks = vec![0; items.len()];
    for keys in by_owner.values_mut() {
        keys.sort();
        for (rank, (_, i)) in keys.iter().enumerate() {
            ranks[*i] = rank;
        }
    }
    ranks
}

fn keyauth(
    item: &Item<config::KeyAuthCredential>,
    consumer: uuid::Uuid,
    rank: usize,
    ctx: &mut Ctx,
) -> KeyAuthCredential {
    let (cfg, path) = (&item.cfg, item.path.as_str());
    let explicit = explicit_id(&cfg.id, path, &mut ctx.issues);
    let key = cfg.key.clone().unwrap_or_default();
    let fresh = match &cfg.key {
        None => {
            let msg = "required field missing (a declarative file must set the key: a generated one would change on every load)";
            ctx.issues.error(&field_path(path, "key"), msg);
            false
        }
        Some(k) if k.is_empty() => {
            ctx.issues
                .error(&field_path(path, "key"), "length must be at least 1");
            false
        }
        Some(k) => ctx
            .unique
            .check_secret("keyauth_credentials", "key", k, path, &mut ctx.issues),
    };
    let ttl = checks::int_in(cfg.ttl, 0, (0, 100_000_000), path, "ttl", &mut ctx.issues);
    if cfg.ttl.is_some() {
        // Kong's schema caps ttl at 100000000 s, but its DB-less mode (and Portico's key-auth)
        // reads a declarative ttl as the Unix time the credential expires: every value the
        // schema allows is in 1973 or earlier. Kong drops such a credential silently.
        ctx.issues.warn(
            &crate::error::field_path(path, "ttl"),
            "in a declarative config ttl is the Unix time the credential expires (as in Kong's \
             DB-less mode), so this credential has expired and will not authenticate; remove \
             ttl to keep it",
        );
    }
    let tags = checks::tags(&cfg.tags, path, &mut ctx.issues);
    let id_key = ids::cache_key(
        "keyauth_credentials",
        &[&consumer.to_string(), &format!("#{rank}")],
    );
    let (id, from) = ids::assign("keyauth_credentials", explicit, Some(&id_key), "");
    if fresh {
        ctx.claim_id("keyauth_credentials", id, from, path);
    }
    KeyAuthCredential {
        id,
        key,
        ttl: cfg.ttl.map(|_| ttl as u64),
        tags,
    }
}

fn jwt(
    item: &Item<config::JwtSecret>,
    consumer: uuid::Uuid,
    keyless_ordinal: usize,
    ctx: &mut Ctx,
) -> JwtSecret {
    let (cfg, path) = (&item.cfg, item.path.as_str());
    let issues = &mut ctx.issues;
    let explicit = explicit_id(&cfg.id, path, issues);
    let algorithm = cfg.algorithm.clone().unwrap_or_else(|| "HS256".to_owned());
    let known = one_of(&algorithm, JWT_ALGORITHMS, path, "algorithm", issues);
    if algorithm == "ES512" {
        // Kong accepts it; the verifier Portico uses (jsonwebtoken) has no P-521, and a secret
        // whose every token would be refused is better refused here, by name.
        issues.error(
            &field_path(path, "algorithm"),
            "ES512 is not supported by Portico yet (use ES256 or ES384, or EdDSA)",
        );
    }
    if known && algorithm.starts_with("HS") {
        if cfg.secret.as_deref().is_none_or(str::is_empty) {
            issues.error(
                &field_path(path, "secret"),
                format!("required field missing (a declarative file must set the secret for {algorithm}: a generated one would change on every load or be guessable)"),
            );
        }
    } else if known {
        match cfg.rsa_public_key.as_deref() {
            None => issues.error(&field_path(path, "rsa_public_key"), checks::REQUIRED),
            Some(k) if !k.trim_start().starts_with("-----BEGIN ") => issues.error(
                &field_path(path, "rsa_public_key"),
                "invalid key: expected a PEM public key",
            ),
            Some(_) => {}
        }
    }
    if cfg.key.as_deref() == Some("") {
        issues.error(&field_path(path, "key"), "length must be at least 1");
    }
    let tags = checks::tags(&cfg.tags, path, issues);

    // A key Kong would generate is derived from the id instead, so it survives reloads; the
    // key is not a secret (it is the token's `iss`).
    let id_key = match &cfg.key {
        Some(k) => ids::cache_key("jwt_secrets", &[k]),
        None => ids::cache_key(
            "jwt_secrets",
            &[&consumer.to_string(), &format!("#{keyless_ordinal}")],
        ),
    };
    let (id, from) = ids::assign("jwt_secrets", explicit, Some(&id_key), "");
    let key = cfg.key.clone().unwrap_or_else(|| id.simple().to_string());
    if ctx
        .unique
        .check("jwt_secrets", "key", &key, path, &mut ctx.issues)
    {
        ctx.claim_id("jwt_secrets", id, from, path);
    }
    JwtSecret {
        id,
        key,
        secret: cfg.secret.clone(),
        rsa_public_key: cfg.rsa_public_key.clone(),
        algorithm,
        tags,
    }
}

fn basicauth(
    item: &Item<config::BasicAuthCredential>,
    consumer: uuid::Uuid,
    ctx: &mut Ctx,
) -> BasicAuthCredential {
    let (cfg, path) = (&item.cfg, item.path.as_str());
    let explicit = explicit_id(&cfg.id, path, &mut ctx.issues);
    let username = checks::required(&cfg.username, path, "username", &mut ctx.issues)
        .cloned()
        .unwrap_or_default();
    let password = checks::required(&cfg.password, path, "password", &mut ctx.issues)
        .cloned()
        .unwrap_or_default();
    let tags = checks::tags(&cfg.tags, path, &mut ctx.issues);
    let fresh = cfg.username.is_some()
        && ctx.unique.check(
            "basicauth_credentials",
            "username",
            &username,
            path,
            &mut ctx.issues,
        );
    // Kong's K:kong/plugins/basic-auth/crypto.lua: sha1(password .. consumer_id), hex.
    let password = if ctx.transform {
        hex::encode(Sha1::digest(format!("{password}{consumer}").as_bytes()))
    } else {
        password
    };
    let id_key = ids::cache_key("basicauth_credentials", &[&username]);
    let (id, from) = ids::assign("basicauth_credentials", explicit, Some(&id_key), "");
    if fresh {
        ctx.claim_id("basicauth_credentials", id, from, path);
    }
    BasicAuthCredential {
        id,
        username,
        password,
        tags,
    }
}

fn acl(item: &Item<config::Acl>, consumer: uuid::Uuid, ctx: &mut Ctx) -> Acl {
    let (cfg, path) = (&item.cfg, item.path.as_str());
    let explicit = explicit_id(&cfg.id, path, &mut ctx.issues);
    let group = checks::required(&cfg.group, path, "group", &mut ctx.issues)
        .cloned()
        .unwrap_or_default();
    let tags = checks::tags(&cfg.tags, path, &mut ctx.issues);
    let consumer = consumer.to_string();
    let fresh = cfg.group.is_some()
        && ctx
            .unique
            .check_scoped("acls", "group", &group, &consumer, path, &mut ctx.issues);
    let id_key = ids::cache_key("acls", &[&consumer, &group]);
    let (id, from) = ids::assign("acls", explicit, Some(&id_key), "");
    if fresh {
        ctx.claim_id("acls", id, from, path);
    }
    Acl { id, group, tags }
}
