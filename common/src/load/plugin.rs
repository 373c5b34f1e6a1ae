//! Plugin instances at every scope (KONG.md §1.2; K:kong/db/schema/entities/plugins.lua).
//! The plugin's `config` is typed and checked by [`PluginConfig::parse`] and stored normalized,
//! with every default filled in, as Kong stores it.

use serde_json::{Map, Value};
use uuid::Uuid;

use super::checks::{self, check_name, explicit_id};
use super::collect::{kind, Item, PluginParent};
use super::{ids, Ctx, Index};
use crate::config;
use crate::error::{field_path, index_path};
use crate::plugins::PluginConfig;
use crate::snapshot::{Plugin, Protocol};

/// Plugins that cannot be scoped to a consumer: the ones that authenticate or authorise it
/// (Kong's `consumer = typedefs.no_consumer` in their schemas; forward-auth is Portico's own).
const NO_CONSUMER: &[&str] = &["key-auth", "jwt", "basic-auth", "acl", "forward-auth"];

/// Kong's default `protocols` for a plugin.
const DEFAULT_PROTOCOLS: [Protocol; 4] = [
    Protocol::Grpc,
    Protocol::Grpcs,
    Protocol::Http,
    Protocol::Https,
];
const PROTOCOLS: &[&str] = &[
    "grpc",
    "grpcs",
    "http",
    "https",
    "tcp",
    "tls",
    "tls_passthrough",
    "udp",
    "ws",
    "wss",
];

/// One kind of entity a plugin can be scoped to: its ids (aligned with the index) and lookup.
pub(crate) struct Scope<'a> {
    pub ids: Vec<Uuid>,
    pub index: &'a Index,
    pub entity: &'static str,
    pub field: &'static str,
}

impl Scope<'_> {
    /// The enclosing entity when nested here, else the one the plugin's foreign key names.
    fn pick(
        &self,
        nested: Option<usize>,
        reference: &Option<String>,
        path: &str,
        issues: &mut crate::error::Issues,
    ) -> Option<Uuid> {
        let i = match (nested, reference) {
            (Some(i), _) => Some(i),
            (None, Some(r)) => self.index.resolve(r, self.entity, path, self.field, issues),
            (None, None) => None,
        };
        i.map(|i| self.ids[i])
    }
}

/// The three scopes.
pub(crate) struct Scopes<'a> {
    pub service: Scope<'a>,
    pub route: Scope<'a>,
    pub consumer: Scope<'a>,
}

pub(crate) fn build(
    items: &[(Item<config::Plugin>, PluginParent)],
    scopes: &Scopes<'_>,
    ctx: &mut Ctx,
) -> Vec<Plugin> {
    items
        .iter()
        .filter_map(|(item, parent)| plugin(item, *parent, scopes, ctx))
        .collect()
}

fn plugin(
    item: &Item<config::Plugin>,
    parent: PluginParent,
    scopes: &Scopes<'_>,
    ctx: &mut Ctx,
) -> Option<Plugin> {
    let (cfg, path) = (&item.cfg, item.path.as_str());
    let issues = &mut ctx.issues;
    let explicit = explicit_id(&cfg.id, path, issues);

    let (on_service, on_route, on_consumer) = match parent {
        PluginParent::Service(i) => (Some(i), None, None),
        PluginParent::Route(i) => (None, Some(i), None),
        PluginParent::Consumer(i) => (None, None, Some(i)),
        PluginParent::Top => (None, None, None),
    };
    let service = scopes.service.pick(on_service, &cfg.service, path, issues);
    let route = scopes.route.pick(on_route, &cfg.route, path, issues);
    let consumer = scopes
        .consumer
        .pick(on_consumer, &cfg.consumer, path, issues);

    // A plugin whose scope did not resolve must not be checked as if it were global.
    let unresolved = (on_service.is_none() && cfg.service.is_some() && service.is_none())
        || (on_route.is_none() && cfg.route.is_some() && route.is_none())
        || (on_consumer.is_none() && cfg.consumer.is_some() && consumer.is_none());

    let name = match cfg.name.as_deref() {
        None => {
            issues.error(&field_path(path, "name"), checks::REQUIRED);
            return None;
        }
        Some("") => {
            issues.error(&field_path(path, "name"), "length must be at least 1");
            return None;
        }
        Some(n) => n.to_owned(),
    };
    check_name(&cfg.instance_name, path, "instance_name", issues);
    // Kong's `typedefs.no_consumer`: a plugin that decides who the consumer is cannot be
    // scoped to one (it would have to run before it knows whether it applies).
    if consumer.is_some() && NO_CONSUMER.contains(&name.as_str()) {
        issues.error(
            &field_path(path, "consumer"),
            format!("value must be null ('{name}' identifies the consumer, so it cannot be scoped to one)"),
        );
    }

    let empty = Value::Object(Map::new());
    let written = match &cfg.config {
        None | Some(Value::Null) => Some(&empty),
        Some(v @ Value::Object(_)) => Some(v),
        Some(other) => {
            issues.error(
                &field_path(path, "config"),
                format!("expected an object, got {}", kind(other)),
            );
            None
        }
    };
    // Typing needs no scope, so it runs even when the scope did not resolve: every error of
    // the file is reported in one pass. A config that is not an object was reported above;
    // only the plugin's name is still checked then.
    let config = match PluginConfig::parse(&name, written.unwrap_or(&empty)) {
        Ok(typed) if written.is_some() => typed.to_value(),
        Ok(_) => empty,
        Err(found) => {
            for issue in found {
                if written.is_some() || issue.path == "name" {
                    issues.error(&field_path(path, &issue.path), issue.message);
                }
            }
            empty
        }
    };
    let protocols = match &cfg.protocols {
        None => DEFAULT_PROTOCOLS.to_vec(),
        Some(list) => {
            let field = field_path(path, "protocols");
            if list.is_empty() {
                issues.error(&field, "length must be at least 1");
            }
            let mut out = Vec::new();
            for (i, p) in list.iter().enumerate() {
                match Protocol::parse(p).filter(|_| PROTOCOLS.contains(&p.as_str())) {
                    Some(proto) if !out.contains(&proto) => out.push(proto),
                    Some(_) => {}
                    None => issues.error(
                        &index_path(&field, i),
                        format!("expected one of: {}", PROTOCOLS.join(", ")),
                    ),
                }
            }
            out
        }
    };
    checks::unsupported(
        &cfg.run_on,
        &Value::String("first".to_owned()),
        path,
        "run_on",
        issues,
    );
    checks::unsupported(
        &cfg.consumer_group,
        &Value::Null,
        path,
        "consumer_group",
        issues,
    );
    checks::unsupported(&cfg.ordering, &Value::Null, path, "ordering", issues);
    let tags = checks::tags(&cfg.tags, path, issues);

    if unresolved {
        return None;
    }

    // Kong's plugin cache key: name, route, service, consumer (ids; "" when unset).
    let show = |u: Option<Uuid>| u.map(|u| u.to_string()).unwrap_or_default();
    let scope_key = [show(route), show(service), show(consumer)];
    let key = ids::cache_key(
        "plugins",
        &[&name, &scope_key[0], &scope_key[1], &scope_key[2]],
    );
    let (id, from) = ids::assign("plugins", explicit, Some(&key), "");

    // One instance of a plugin per exact scope: Kong picks one config per request and scope.
    let scope = format!("{}|{}|{}", scope_key[0], scope_key[1], scope_key[2]);
    let fresh = ctx
        .unique
        .check_scoped("plugins", "name", &name, &scope, path, &mut ctx.issues);
    if let Some(inst) = &cfg.instance_name {
        ctx.unique
            .check("plugins", "instance_name", inst, path, &mut ctx.issues);
    }
    if fresh {
        ctx.claim_id("plugins", id, from, path);
    }

    Some(Plugin {
        id,
        name,
        instance_name: cfg.instance_name.clone(),
        service,
        route,
        consumer,
        config,
        protocols,
        enabled: cfg.enabled.unwrap_or(true),
        tags,
    })
}
