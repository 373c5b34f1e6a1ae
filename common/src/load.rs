//! The loader: Kong declarative text to a validated [`Snapshot`], or every error at once.
//!
//! Pipeline: parse (YAML or JSON) to a generic value -> check the file's meta-fields ->
//! resolve secrets (`${VAR}`, `{vault://env/..}`) -> migrate 1.1/2.1 route paths -> flatten
//! and decode each entity on its own (`collect`) -> per entity kind: ids, references,
//! defaults and checks -> uniqueness -> entity digests and content hash. Errors are collected,
//! never returned early, so a user sees every problem of a file in one run.

mod certificate;
pub(crate) mod checks;
pub(crate) mod collect;
mod consumer;
mod ids;
mod migrate;
mod parse;
mod plugin;
mod route;
mod secrets;
mod service;
mod upstream;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;
use uuid::Uuid;

use crate::digest::Digests;
use crate::error::{field_path, ConfigErrors, ConfigIssue, Issues};
use crate::path::PathError;
use crate::snapshot::Snapshot;

use checks::Unique;
use collect::{kind, ENTITY_KEYS, UNSUPPORTED_KEYS};
use ids::IdFrom;

/// A validated config and the warnings found on the way (they never refuse a config).
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub snapshot: Snapshot,
    pub warnings: Vec<ConfigIssue>,
    /// The digests of `snapshot`'s entities; `snapshot.hash` is their root. Keep them to build
    /// or apply a [`crate::delta::Delta`] without hashing the snapshot again.
    pub digests: Digests,
}

/// The format versions Kong's declarative loader accepts.
pub const FORMAT_VERSIONS: [&str; 3] = ["1.1", "2.1", "3.0"];

/// Loads a declarative config from text (YAML, or JSON when it starts with `{`); `env` looks up
/// variables for `${VAR}` and `{vault://env/..}`.
pub fn load_str(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, ConfigErrors> {
    load_with(text, env, crate::path::canonicalize, None)
}

/// [`load_str`] for the next version of a config whose previous load was `previous` (its
/// snapshot and digests): the same result, found faster when most entities did not change.
/// A service, route or consumer equal to the one with its id in `previous` keeps that one's
/// digest instead of being serialized and hashed again, and the new snapshot shares its `Arc`.
pub fn load_str_after(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    previous: (&Snapshot, &Digests),
) -> Result<Loaded, ConfigErrors> {
    load_with(text, env, crate::path::canonicalize, Some(previous))
}

/// The config `text` as a client sends it to the control plane: the parsed document as compact
/// JSON, taken before secrets are resolved or anything is migrated, so `${VAR}` and
/// `{vault://..}` references travel as written and resolve on the control plane, and the
/// control plane loads exactly the document `text` holds (JSON parses several times faster than
/// YAML). `text` itself when it is JSON already, does not parse, is not an object at the top
/// level, or holds a float JSON would not carry exactly: the control plane then reports or
/// loads it as it always did.
pub fn transport_text(text: &str) -> Cow<'_, str> {
    match parse::transport_json(text) {
        Some(json) => Cow::Owned(json),
        None => Cow::Borrowed(text),
    }
}

/// Reads and loads a file, resolving secrets from the process environment.
pub fn load_file(path: &Path) -> Result<Loaded, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::single(
            "",
            format!("cannot read config file '{}': {e}", path.display()),
        )
    })?;
    load_str(&text, &|name| std::env::var(name).ok())
}

/// The path normalizer prefix paths must already agree with (injected so tests can pin it).
pub(crate) type Canonicalize = for<'a> fn(&'a str) -> Result<Cow<'a, str>, PathError>;

/// State shared by the per-entity builders.
pub(crate) struct Ctx {
    pub issues: Issues,
    pub unique: Unique,
    pub canonicalize: Canonicalize,
    /// `_transform`: hash basic-auth passwords (false when re-importing hashed values).
    pub transform: bool,
    ids: HashMap<&'static str, HashMap<Uuid, (String, IdFrom)>>,
}

impl Ctx {
    /// Records `id` for `entity`; a second entity with the same id is an error.
    pub fn claim_id(&mut self, entity: &'static str, id: Uuid, from: IdFrom, path: &str) {
        let seen = self.ids.entry(entity).or_default();
        match seen.get(&id) {
            None => {
                seen.insert(id, (path.to_owned(), from));
            }
            Some((first, IdFrom::Content)) if from == IdFrom::Content => {
                let msg = format!("same content as {first}; give one of them a 'name' or an 'id'");
                self.issues.error(path, msg);
            }
            Some(_) => {
                let msg = format!("uniqueness violation: '{entity}' entity with id set to '{id}' already declared");
                self.issues.error(path, msg);
            }
        }
    }
}

/// Finds an entity by its key (name, username) or by its id, as Kong's foreign keys do.
#[derive(Default)]
pub(crate) struct Index {
    by_key: HashMap<String, usize>,
    by_id: HashMap<Uuid, usize>,
}

impl Index {
    /// Adds entity `i`; the first entity with a key keeps it (duplicates are reported elsewhere).
    pub fn add(&mut self, key: Option<&str>, id: Uuid, i: usize) {
        if let Some(k) = key {
            self.by_key.entry(k.to_owned()).or_insert(i);
        }
        self.by_id.entry(id).or_insert(i);
    }

    fn find(&self, reference: &str) -> Option<usize> {
        self.by_key
            .get(reference)
            .or_else(|| {
                Uuid::parse_str(reference)
                    .ok()
                    .and_then(|u| self.by_id.get(&u))
            })
            .copied()
    }

    /// Resolves `field: reference`, reporting Kong's dangling-reference message.
    pub fn resolve(
        &self,
        reference: &str,
        entity: &str,
        path: &str,
        field: &str,
        issues: &mut Issues,
    ) -> Option<usize> {
        let found = self.find(reference);
        if found.is_none() {
            issues.error(
                &field_path(path, field),
                format!("invalid reference '{field}: {reference}' (no such entry in '{entity}')"),
            );
        }
        found
    }

    /// The parent of a child entity: the enclosing one when nested, else its foreign key.
    #[allow(clippy::too_many_arguments)]
    pub fn parent(
        &self,
        parent: collect::Parent,
        reference: &Option<String>,
        entity: &str,
        path: &str,
        field: &str,
        required: bool,
        issues: &mut Issues,
    ) -> Option<usize> {
        match (parent, reference) {
            (collect::Parent::Nested(i), _) => Some(i),
            (collect::Parent::Top, Some(r)) => self.resolve(r, entity, path, field, issues),
            (collect::Parent::Top, None) => {
                if required {
                    issues.error(&field_path(path, field), checks::REQUIRED);
                }
                None
            }
        }
    }
}

/// [`load_str`] with an explicit path normalizer.
pub(crate) fn load_with(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    canonicalize: Canonicalize,
    previous: Option<(&Snapshot, &Digests)>,
) -> Result<Loaded, ConfigErrors> {
    let mut doc = parse::parse_document(text)?;
    let Value::Object(top) = &doc else {
        return Err(ConfigErrors::single(
            "",
            format!("expected an object at the top level, got {}", kind(&doc)),
        ));
    };
    let mut issues = Issues::default();
    let (version, transform) = read_meta(top, &mut issues);

    secrets::resolve(&mut doc, env, &mut issues);
    if version == "1.1" || version == "2.1" {
        migrate::migrate_route_paths(&mut doc, canonicalize);
    }
    let Value::Object(top) = &doc else {
        return Err(ConfigErrors::single(
            "",
            "expected an object at the top level",
        ));
    };
    let collected = collect::collect(top, &mut issues);

    let mut ctx = Ctx {
        issues,
        unique: Unique::default(),
        canonicalize,
        transform,
        ids: HashMap::new(),
    };
    let (mut services, service_index) = service::build(&collected.services, &mut ctx);
    let (routes, route_index) =
        route::build(&collected.routes, &services, &service_index, &mut ctx);
    let upstreams = upstream::build(&collected.upstreams, &collected.targets, &mut ctx);
    let (consumers, consumer_index) = consumer::build(&collected, &mut ctx);
    let scopes = plugin::Scopes {
        service: plugin::Scope {
            ids: services.iter().map(|s| s.id).collect(),
            index: &service_index,
            entity: "services",
            field: "service",
        },
        route: plugin::Scope {
            ids: routes.iter().map(|r| r.id).collect(),
            index: &route_index,
            entity: "routes",
            field: "route",
        },
        consumer: plugin::Scope {
            ids: consumers.iter().map(|c| c.id).collect(),
            index: &consumer_index,
            entity: "consumers",
            field: "consumer",
        },
    };
    let plugins = plugin::build(&collected.plugins, &scopes, &mut ctx);
    let certificates = certificate::build(&collected, &mut ctx);
    let ca_certificates = certificate::build_ca(&collected, &mut ctx);
    certificate::service_tls(
        &collected.services,
        &mut services,
        &certificates,
        &ca_certificates,
        &mut ctx,
    );

    if ctx.issues.has_errors() {
        return Err(ConfigErrors {
            errors: ctx.issues.errors,
        });
    }
    let mut snapshot = Snapshot {
        source_format_version: version,
        services: crate::snapshot::shared(services),
        routes: crate::snapshot::shared(routes),
        upstreams: crate::snapshot::shared(upstreams),
        consumers: crate::snapshot::shared(consumers),
        plugins: crate::snapshot::shared(plugins),
        certificates: crate::snapshot::shared(certificates),
        ca_certificates: crate::snapshot::shared(ca_certificates),
        hash: String::new(),
    };
    let digests = match previous {
        Some((before, digests)) => Digests::of_reusing(&mut snapshot, before, digests),
        None => Digests::of(&snapshot),
    };
    snapshot.hash = digests.root(&snapshot.source_format_version);
    Ok(Loaded {
        snapshot,
        warnings: ctx.issues.warnings,
        digests,
    })
}

/// Checks the `_`-prefixed file fields and the top-level keys; returns (format version, transform).
fn read_meta(top: &serde_json::Map<String, Value>, issues: &mut Issues) -> (String, bool) {
    let version = match top.get("_format_version") {
        None | Some(Value::Null) => {
            issues.error("_format_version", checks::REQUIRED);
            String::new()
        }
        // Unquoted YAML `3.0` is a float; accept it rather than punish a common slip.
        Some(Value::Number(n)) => format!("{:.1}", n.as_f64().unwrap_or_default()),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            issues.error(
                "_format_version",
                format!("expected a string, got {}", kind(other)),
            );
            String::new()
        }
    };
    if !version.is_empty() && !FORMAT_VERSIONS.contains(&version.as_str()) {
        issues.error(
            "_format_version",
            format!("expected one of: {}", FORMAT_VERSIONS.join(", ")),
        );
    }
    let transform = match top.get("_transform") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            issues.error(
                "_transform",
                format!("expected a boolean, got {}", kind(other)),
            );
            true
        }
    };
    for (key, value) in top {
        match key.as_str() {
            "_format_version" | "_transform" => {}
            "_comment" if !value.is_string() => issues.error(key, "expected a string"),
            "_ignore" if !value.is_array() => issues.error(key, "expected an array"),
            "_comment" | "_ignore" => {}
            k if ENTITY_KEYS.contains(&k) => {}
            k if UNSUPPORTED_KEYS.contains(&k) => {
                let empty = match value {
                    Value::Null => true,
                    Value::Array(a) => a.is_empty(),
                    _ => false,
                };
                if !empty {
                    issues.error(key, format!("'{k}' are not supported by Portico yet"));
                }
            }
            k => issues.error("", format!("unknown field '{k}'")),
        }
    }
    (version, transform)
}
