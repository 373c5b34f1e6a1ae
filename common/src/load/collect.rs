//! Walks the document and flattens nested entities into per-kind lists, each item carrying its
//! path in the file, its decoded authored type and its parent (for nested items).
//!
//! Every entity is decoded on its own, and a failing entity is decoded field by field, so all
//! bad fields of all entities are reported in one pass. A bad field is dropped (its place is
//! settled, so no "required field missing" follows) and the rest of the entity still gets
//! validated.

use serde::de::value::MapDeserializer;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::config;
use crate::error::{field_path, index_path, Issues};
use crate::snapshot_ext::write_canonical;

/// Where a child entity was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parent {
    /// At the top level; the parent (if any) is named by a foreign-key field.
    Top,
    /// Nested in the parent list's item with this index.
    Nested(usize),
}

/// Where a plugin was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PluginParent {
    Top,
    Service(usize),
    Route(usize),
    Consumer(usize),
}

/// One authored entity and where it came from.
#[derive(Debug)]
pub(crate) struct Item<T> {
    pub path: String,
    pub cfg: T,
    pub parent: Parent,
    /// Canonical JSON of the entity's own fields minus metadata and foreign keys: the id input
    /// for entities with no natural key (a service or route without a name). Empty when the
    /// entity decoded and has a natural key ([`Authored::keyless`]), since it is not used then.
    pub content: String,
}

/// All entities of the file, flattened.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub services: Vec<Item<config::Service>>,
    pub routes: Vec<Item<config::Route>>,
    pub upstreams: Vec<Item<config::Upstream>>,
    pub targets: Vec<Item<config::Target>>,
    pub consumers: Vec<Item<config::Consumer>>,
    pub keyauth: Vec<Item<config::KeyAuthCredential>>,
    pub jwt: Vec<Item<config::JwtSecret>>,
    pub basicauth: Vec<Item<config::BasicAuthCredential>>,
    pub acls: Vec<Item<config::Acl>>,
    pub plugins: Vec<(Item<config::Plugin>, PluginParent)>,
    pub certificates: Vec<Item<config::Certificate>>,
    pub snis: Vec<Item<config::Sni>>,
    pub ca_certificates: Vec<Item<config::CaCertificate>>,
}

/// Top-level keys holding entities Portico reads.
pub(crate) const ENTITY_KEYS: &[&str] = &[
    "services",
    "routes",
    "upstreams",
    "targets",
    "consumers",
    "plugins",
    "keyauth_credentials",
    "jwt_secrets",
    "basicauth_credentials",
    "acls",
    "certificates",
    "snis",
    "ca_certificates",
];

/// Top-level keys Kong knows that Portico does not implement yet: refused unless empty.
pub(crate) const UNSUPPORTED_KEYS: &[&str] = &[
    "vaults",
    "key_sets",
    "keys",
    "filter_chains",
    "parameters",
    "hmacauth_credentials",
    "oauth2_credentials",
    "oauth2_authorization_codes",
    "oauth2_tokens",
    "consumer_groups",
];

/// Fields whose values must never be echoed in an error message.
const SECRET_FIELDS: &[&str] = &["key", "secret", "password"];

/// Flattens every entity list of the (already secret-resolved, migrated) document.
pub(crate) fn collect(doc: &Map<String, Value>, issues: &mut Issues) -> Collected {
    let mut c = Collected::default();
    for (path, obj) in list(doc, "", "services", issues) {
        let si = c.services.len();
        c.services.push(item(
            obj,
            &["routes", "plugins"],
            &path,
            Parent::Top,
            issues,
        ));
        for (rpath, robj) in list(obj, &path, "routes", issues) {
            let route =
                item::<config::Route>(robj, &["plugins"], &rpath, Parent::Nested(si), issues);
            forbid(
                route.cfg.service.is_some(),
                &rpath,
                "service",
                "a service",
                issues,
            );
            push_route(&mut c, route, robj, issues);
        }
        for (ppath, pobj) in list(obj, &path, "plugins", issues) {
            push_plugin(&mut c, pobj, &ppath, PluginParent::Service(si), issues);
        }
    }
    for (path, obj) in list(doc, "", "routes", issues) {
        let route = item(obj, &["plugins"], &path, Parent::Top, issues);
        push_route(&mut c, route, obj, issues);
    }
    for (path, obj) in list(doc, "", "upstreams", issues) {
        let ui = c.upstreams.len();
        c.upstreams
            .push(item(obj, &["targets"], &path, Parent::Top, issues));
        for (tpath, tobj) in list(obj, &path, "targets", issues) {
            let t = item::<config::Target>(tobj, &[], &tpath, Parent::Nested(ui), issues);
            forbid(
                t.cfg.upstream.is_some(),
                &tpath,
                "upstream",
                "an upstream",
                issues,
            );
            c.targets.push(t);
        }
    }
    for (path, obj) in list(doc, "", "targets", issues) {
        c.targets.push(item(obj, &[], &path, Parent::Top, issues));
    }
    for (path, obj) in list(doc, "", "consumers", issues) {
        let ci = c.consumers.len();
        let nested = [
            "keyauth_credentials",
            "jwt_secrets",
            "basicauth_credentials",
            "acls",
            "plugins",
        ];
        c.consumers
            .push(item(obj, &nested, &path, Parent::Top, issues));
        credentials(&mut c, obj, &path, Parent::Nested(ci), issues);
        for (ppath, pobj) in list(obj, &path, "plugins", issues) {
            push_plugin(&mut c, pobj, &ppath, PluginParent::Consumer(ci), issues);
        }
    }
    credentials(&mut c, doc, "", Parent::Top, issues);
    for (path, obj) in list(doc, "", "plugins", issues) {
        push_plugin(&mut c, obj, &path, PluginParent::Top, issues);
    }
    for (path, obj) in list(doc, "", "certificates", issues) {
        let ci = c.certificates.len();
        c.certificates
            .push(item(obj, &["snis"], &path, Parent::Top, issues));
        nested_snis(&mut c, obj, &path, ci, issues);
    }
    for (path, obj) in list(doc, "", "snis", issues) {
        c.snis.push(item(obj, &[], &path, Parent::Top, issues));
    }
    for (path, obj) in list(doc, "", "ca_certificates", issues) {
        c.ca_certificates
            .push(item(obj, &[], &path, Parent::Top, issues));
    }
    c
}

/// A certificate's `snis`: names (Kong's transient field) or nested SNI entities.
fn nested_snis(
    c: &mut Collected,
    cert: &Map<String, Value>,
    path: &str,
    ci: usize,
    issues: &mut Issues,
) {
    let list_path = field_path(path, "snis");
    let items = match cert.get("snis") {
        None | Some(Value::Null) => return,
        Some(Value::Array(items)) => items,
        Some(other) => {
            issues.error(
                &list_path,
                format!("expected an array, got {}", kind(other)),
            );
            return;
        }
    };
    for (i, v) in items.iter().enumerate() {
        let p = index_path(&list_path, i);
        match v {
            Value::String(name) => c.snis.push(Item {
                path: p,
                cfg: config::Sni {
                    name: Some(name.clone()),
                    ..config::Sni::default()
                },
                parent: Parent::Nested(ci),
                content: String::new(),
            }),
            Value::Object(obj) => {
                let sni = item::<config::Sni>(obj, &[], &p, Parent::Nested(ci), issues);
                forbid(
                    sni.cfg.certificate.is_some(),
                    &p,
                    "certificate",
                    "a certificate",
                    issues,
                );
                c.snis.push(sni);
            }
            other => issues.error(
                &p,
                format!("expected a name or an object, got {}", kind(other)),
            ),
        }
    }
}

fn push_route(
    c: &mut Collected,
    route: Item<config::Route>,
    obj: &Map<String, Value>,
    issues: &mut Issues,
) {
    let ri = c.routes.len();
    let path = route.path.clone();
    c.routes.push(route);
    for (ppath, pobj) in list(obj, &path, "plugins", issues) {
        push_plugin(c, pobj, &ppath, PluginParent::Route(ri), issues);
    }
}

fn push_plugin(
    c: &mut Collected,
    obj: &Map<String, Value>,
    path: &str,
    parent: PluginParent,
    issues: &mut Issues,
) {
    let p = item::<config::Plugin>(obj, &[], path, Parent::Top, issues);
    match parent {
        PluginParent::Service(_) => forbid(
            p.cfg.service.is_some(),
            path,
            "service",
            "a service",
            issues,
        ),
        PluginParent::Route(_) => forbid(p.cfg.route.is_some(), path, "route", "a route", issues),
        PluginParent::Consumer(_) => forbid(
            p.cfg.consumer.is_some(),
            path,
            "consumer",
            "a consumer",
            issues,
        ),
        PluginParent::Top => {}
    }
    c.plugins.push((p, parent));
}

/// The four credential lists, nested in a consumer (`parent` nested) or at the top level.
fn credentials(
    c: &mut Collected,
    obj: &Map<String, Value>,
    path: &str,
    parent: Parent,
    issues: &mut Issues,
) {
    c.keyauth.extend(credential_list(
        obj,
        path,
        "keyauth_credentials",
        parent,
        issues,
        |x: &config::KeyAuthCredential| x.consumer.is_some(),
    ));
    c.jwt.extend(credential_list(
        obj,
        path,
        "jwt_secrets",
        parent,
        issues,
        |x: &config::JwtSecret| x.consumer.is_some(),
    ));
    c.basicauth.extend(credential_list(
        obj,
        path,
        "basicauth_credentials",
        parent,
        issues,
        |x: &config::BasicAuthCredential| x.consumer.is_some(),
    ));
    c.acls.extend(credential_list(
        obj,
        path,
        "acls",
        parent,
        issues,
        |x: &config::Acl| x.consumer.is_some(),
    ));
}

/// One credential list under `key`; nested in a consumer, an entry may not name its consumer.
fn credential_list<T: Authored>(
    obj: &Map<String, Value>,
    path: &str,
    key: &str,
    parent: Parent,
    issues: &mut Issues,
    names_consumer: fn(&T) -> bool,
) -> Vec<Item<T>> {
    let nested = parent != Parent::Top;
    let mut out = Vec::new();
    for (p, o) in list(obj, path, key, issues) {
        let it = item::<T>(o, &[], &p, parent, issues);
        forbid(
            nested && names_consumer(&it.cfg),
            &p,
            "consumer",
            "a consumer",
            issues,
        );
        out.push(it);
    }
    out
}

/// A nested entity belongs to its enclosing parent; naming another one is a contradiction.
fn forbid(is_set: bool, path: &str, field: &str, parent: &str, issues: &mut Issues) {
    if is_set {
        issues.error(
            &field_path(path, field),
            format!("cannot be set here: the entity is nested in {parent}, which is its '{field}'"),
        );
    }
}

/// The objects of the array at `obj[key]` with their paths; wrong shapes are reported.
fn list<'a>(
    obj: &'a Map<String, Value>,
    parent: &str,
    key: &str,
    issues: &mut Issues,
) -> Vec<(String, &'a Map<String, Value>)> {
    let path = field_path(parent, key);
    match obj.get(key) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let p = index_path(&path, i);
                match v {
                    Value::Object(m) => Some((p, m)),
                    other => {
                        issues.error(&p, format!("expected an object, got {}", kind(other)));
                        None
                    }
                }
            })
            .collect(),
        Some(other) => {
            issues.error(&path, format!("expected an array, got {}", kind(other)));
            Vec::new()
        }
    }
}

/// An authored entity type, decoded by [`item`].
pub(crate) trait Authored: DeserializeOwned + Default {
    /// Whether no natural key is written (a name, a username): only then may the loader derive
    /// the id from the content, so only then is [`Item::content`] computed.
    fn keyless(&self) -> bool {
        false
    }
}

impl Authored for config::Service {
    fn keyless(&self) -> bool {
        self.name.is_none()
    }
}

impl Authored for config::Route {
    fn keyless(&self) -> bool {
        self.name.is_none()
    }
}

impl Authored for config::Upstream {
    fn keyless(&self) -> bool {
        self.name.is_none()
    }
}

impl Authored for config::Consumer {
    fn keyless(&self) -> bool {
        let unset = |v: &Option<String>| v.as_deref().is_none_or(str::is_empty);
        unset(&self.username) && unset(&self.custom_id)
    }
}

impl Authored for config::Target {}
impl Authored for config::KeyAuthCredential {}
impl Authored for config::JwtSecret {}
impl Authored for config::BasicAuthCredential {}
impl Authored for config::Acl {}
impl Authored for config::Plugin {}
impl Authored for config::Certificate {}
impl Authored for config::Sni {}
impl Authored for config::CaCertificate {}

/// Fields that never count as an entity's content: metadata and foreign keys.
const NOT_CONTENT: &[&str] = &[
    "_comment",
    "_ignore",
    "created_at",
    "updated_at",
    "service",
    "route",
    "consumer",
    "upstream",
];

/// Decodes one entity, minus its nested lists (`strip`), reporting every bad field.
fn item<T: Authored>(
    obj: &Map<String, Value>,
    strip: &[&str],
    path: &str,
    parent: Parent,
    issues: &mut Issues,
) -> Item<T> {
    // The common case: the entity decodes as a whole, straight from the document (no copy).
    let own_fields = || obj.iter().filter(|(k, _)| !strip.contains(&k.as_str()));
    let borrowed =
        MapDeserializer::<_, serde_json::Error>::new(own_fields().map(|(k, v)| (k.as_str(), v)));
    if let Ok(cfg) = T::deserialize(borrowed) {
        let content = if cfg.keyless() {
            content(own_fields().map(|(k, v)| (k.clone(), v.clone())).collect())
        } else {
            String::new()
        };
        return Item {
            path: path.to_owned(),
            cfg,
            parent,
            content,
        };
    }

    let mut own: Map<String, Value> = own_fields().map(|(k, v)| (k.clone(), v.clone())).collect();
    let cfg = match serde_json::from_value::<T>(Value::Object(own.clone())) {
        Ok(cfg) => cfg,
        Err(_) => {
            let bad: Vec<String> = own
                .iter()
                .filter_map(|(k, v)| {
                    let single = Value::Object(Map::from_iter([(k.clone(), v.clone())]));
                    let err = serde_json::from_value::<T>(single).err()?;
                    let msg = err.to_string();
                    if msg.starts_with("unknown field") {
                        issues.error(path, format!("unknown field '{k}'"));
                    } else if SECRET_FIELDS.contains(&k.as_str()) {
                        // serde quotes the bad value; for a secret that would put it in logs.
                        issues.error_settle(
                            &field_path(path, k),
                            format!("invalid type: {}, expected a string", kind(v)),
                        );
                    } else {
                        issues.error_settle(&field_path(path, k), tidy(&msg));
                    }
                    Some(k.clone())
                })
                .collect();
            bad.iter().for_each(|k| {
                own.remove(k);
            });
            serde_json::from_value::<T>(Value::Object(own.clone())).unwrap_or_default()
        }
    };
    Item {
        path: path.to_owned(),
        cfg,
        parent,
        content: content(own),
    }
}

/// Canonical JSON of an entity's own fields minus [`NOT_CONTENT`].
fn content(mut own: Map<String, Value>) -> String {
    for k in NOT_CONTENT {
        own.remove(*k);
    }
    let mut content = String::new();
    write_canonical(&Value::Object(own), &mut content);
    content
}

/// serde's wording to the user's: JSON/YAML names, not Rust's.
pub(crate) fn tidy(msg: &str) -> String {
    msg.replace("a sequence", "an array")
        .replace("a map", "an object")
        .replace("expected i64", "expected an integer")
        .replace("expected u64", "expected an integer")
}

/// The JSON kind of a value, for "expected X, got Y".
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
