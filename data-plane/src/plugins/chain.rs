//! Which config of each plugin a request runs, and in what order (KONG.md §3.1).
//!
//! Kong runs at most one instance of a plugin name per request: the most specific scope wins,
//! in this order (K:kong/runloop/plugins_iterator.lua `lookup_cfg`):
//!
//! | level | scope                      |
//! |-------|----------------------------|
//! | 1     | route + service + consumer |
//! | 2     | route + consumer           |
//! | 3     | service + consumer         |
//! | 4     | route + service            |
//! | 5     | consumer                   |
//! | 6     | route                      |
//! | 7     | service                    |
//! | 8     | global                     |
//!
//! "route + service" is one plugin entity naming both. Consumer-scoped configs (1, 2, 3, 5)
//! can only apply once a consumer is known, so the choice between them and the others is made
//! per request, when the chain reaches the plugin: a plugin that runs before the auth plugin
//! never sees them (Kong resolves configs walking the plugins in priority order).
//!
//! Everything else is settled here, once per snapshot: each route gets a [`Chain`] of slots in
//! priority order, each slot holding the best consumer-less config and the best config per
//! consumer. Routes with no route-scoped plugin share their service's chain, so 10,000 routes
//! without plugins cost one empty chain, not 10,000.

use std::collections::HashMap;

use crate::telemetry::trace::Tracing;
use std::sync::Arc;

use portico_common::plugins::PluginConfig;
use portico_common::snapshot::{Consumer, Plugin as PluginEntity, Protocol, Snapshot};
use portico_common::ConfigIssue;
use uuid::Uuid;

use super::{priority, BuildEnv, Ctx, Flow, Instance, Outcome, Req};

/// A built plugin with what decides whether it applies.
#[derive(Debug)]
pub struct Entry {
    pub id: Uuid,
    pub instance: Instance,
    http: bool,
    https: bool,
}

impl Entry {
    /// Whether the plugin's `protocols` cover this request.
    fn applies(&self, https: bool) -> bool {
        if https {
            self.https
        } else {
            self.http
        }
    }
}

/// One plugin name in a chain.
#[derive(Debug)]
struct Slot {
    /// The best config without a consumer (levels 4, 6, 7, 8), with its level.
    base: Option<(u8, Arc<Entry>)>,
    /// The best config per consumer (levels 1, 2, 3, 5), with its level.
    by_consumer: HashMap<Uuid, (u8, Arc<Entry>)>,
}

impl Slot {
    fn pick(&self, consumer: Option<&Consumer>) -> Option<&Entry> {
        let personal = consumer.and_then(|c| self.by_consumer.get(&c.id));
        match (personal, &self.base) {
            (Some((pl, p)), Some((bl, b))) => Some(if pl < bl { p } else { b }),
            (Some((_, p)), None) => Some(p),
            (None, Some((_, b))) => Some(b),
            (None, None) => None,
        }
    }
}

/// The plugins a route runs, in execution order.
#[derive(Debug, Default)]
pub struct Chain {
    slots: Vec<Slot>,
    /// The trace pipeline of the chain's `opentelemetry` plugin: the route is traced with it
    /// from the request's start, not only from the plugin's turn in the chain.
    tracing: Option<Arc<Tracing>>,
    /// The chain's consumer-less `prometheus` config has `per_consumer`: the route's requests
    /// are also counted by consumer (read once per config by the metrics slots).
    per_consumer: bool,
}

impl Chain {
    /// Whether the chain's `prometheus` plugin counts requests by consumer. Consumer-scoped
    /// `prometheus` configs do not change it: the label set of a route is settled per config,
    /// not per request.
    pub fn per_consumer(&self) -> bool {
        self.per_consumer
    }

    /// The `opentelemetry` plugin's trace pipeline, when the chain has one.
    pub fn tracing(&self) -> Option<&Arc<Tracing>> {
        self.tracing.as_ref()
    }

    /// No plugin at all: the request path skips the pipeline.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The names of the plugins in execution order (for tests and `/status`).
    pub fn names(&self) -> Vec<&'static str> {
        self.slots
            .iter()
            .filter_map(|s| {
                s.base.as_ref().map(|(_, e)| e.instance.name()).or_else(|| {
                    s.by_consumer
                        .values()
                        .next()
                        .map(|(_, e)| e.instance.name())
                })
            })
            .collect()
    }

    /// Runs the log phase of the plugins that let the request through: each slot's config is
    /// picked again for the final consumer, as Kong collects plugins during access.
    pub fn log(&self, outcome: Outcome, ctx: &Ctx<'_>, https: bool) {
        for slot in &self.slots {
            if let Some(entry) = slot.pick(ctx.consumer).filter(|e| e.applies(https)) {
                entry.instance.log(outcome, ctx);
            }
        }
    }

    /// Runs the access phase of each plugin in order; the first `Respond` ends the chain.
    pub async fn access<'r>(&'r self, req: &mut Req<'_>, ctx: &mut Ctx<'r>) -> Flow {
        for slot in &self.slots {
            let Some(entry) = slot.pick(ctx.consumer) else {
                continue;
            };
            if !entry.applies(req.https) {
                continue;
            }
            if let Flow::Respond(reply) = entry.instance.access(req, ctx).await {
                tracing::debug!(plugin = entry.instance.name(), plugin_id = %entry.id, "plugin answered the request");
                return Flow::Respond(reply);
            }
        }
        Flow::Continue
    }
}

/// The chains of every route of one snapshot.
#[derive(Debug, Default)]
pub struct Chains {
    chains: Vec<Chain>,
    /// Index-aligned with `snapshot.routes`: which chain each route runs. Empty when the
    /// snapshot has no enabled plugin.
    by_route: Vec<u32>,
    /// Global plugins only: what a request that matched no route runs.
    global: Chain,
    /// Every built plugin by id: what the next snapshot's build takes state from.
    by_id: HashMap<Uuid, Arc<Entry>>,
}

static EMPTY: Chain = Chain {
    slots: Vec::new(),
    tracing: None,
    per_consumer: false,
};

impl Chains {
    /// The chain of route `route_index`.
    pub fn for_route(&self, route_index: usize) -> &Chain {
        self.by_route
            .get(route_index)
            .map_or(&EMPTY, |&i| &self.chains[i as usize])
    }

    /// The chain of global plugins (requests no route matched).
    pub fn global(&self) -> &Chain {
        &self.global
    }

    /// Every built plugin instance with its entity id, in no particular order (read-only, for
    /// `/status`: the circuit breaker's circuits).
    pub fn instances(&self) -> impl Iterator<Item = (Uuid, &Instance)> + '_ {
        self.by_id.iter().map(|(id, e)| (*id, &e.instance))
    }

    /// Builds every enabled plugin of `snapshot` and each route's chain, handing each plugin
    /// its predecessor in `previous` (same id) so state survives the swap. Errors name the
    /// plugin entity.
    pub fn build(
        snapshot: &Snapshot,
        env: &BuildEnv<'_>,
        previous: Option<&Chains>,
    ) -> Result<Chains, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut built: Vec<(&PluginEntity, Arc<Entry>)> = Vec::new();
        for (i, p) in snapshot.plugins.iter().enumerate() {
            if !p.enabled {
                continue;
            }
            let path = format!("plugins[{i}] ({})", p.name);
            if !env.enabled.allows(&p.name) {
                issues.push(ConfigIssue::new(
                    format!("{path}.name"),
                    format!(
                        "plugin '{}' is not enabled on this data plane (its --plugins list); \
                         enable it there or remove it from the config",
                        p.name
                    ),
                ));
                continue;
            }
            let entry = PluginConfig::parse(&p.name, &p.config)
                .map_err(|errs| {
                    errs.into_iter()
                        .map(|e| ConfigIssue::new(format!("{path}.{}", e.path), e.message))
                        .collect::<Vec<_>>()
                })
                .and_then(|config| {
                    let env = BuildEnv {
                        id: p.id,
                        previous: previous
                            .and_then(|c| c.by_id.get(&p.id))
                            .map(|e| &e.instance),
                        ..*env
                    };
                    Instance::build(config, &env)
                        .map_err(|msg| vec![ConfigIssue::new(format!("{path}.config"), msg)])
                });
            match entry {
                Ok(instance) => built.push((
                    p,
                    Arc::new(Entry {
                        id: p.id,
                        instance,
                        http: p.protocols.contains(&Protocol::Http)
                            || p.protocols.contains(&Protocol::Grpc),
                        https: p.protocols.contains(&Protocol::Https)
                            || p.protocols.contains(&Protocol::Grpcs),
                    }),
                )),
                Err(e) => issues.extend(e),
            }
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        if built.is_empty() {
            return Ok(Chains::default());
        }

        let global = chain_for(&built, None, None);
        let route_scoped: std::collections::HashSet<Uuid> =
            built.iter().filter_map(|(p, _)| p.route).collect();
        let mut chains = vec![];
        let mut by_service: HashMap<Option<Uuid>, u32> = HashMap::new();
        let mut by_route = Vec::with_capacity(snapshot.routes.len());
        for route in &snapshot.routes {
            let index = if route_scoped.contains(&route.id) {
                chains.push(chain_for(&built, Some(route.id), route.service));
                (chains.len() - 1) as u32
            } else {
                *by_service.entry(route.service).or_insert_with(|| {
                    chains.push(chain_for(&built, None, route.service));
                    (chains.len() - 1) as u32
                })
            };
            by_route.push(index);
        }
        let by_id = built.iter().map(|(p, e)| (p.id, Arc::clone(e))).collect();
        Ok(Chains {
            chains,
            by_route,
            global,
            by_id,
        })
    }
}

/// The precedence level of `p` for a request on `route` of `service`, or `None` when it does
/// not apply there (see the module table).
fn level(p: &PluginEntity, route: Option<Uuid>, service: Option<Uuid>) -> Option<u8> {
    let on = |scope: Option<Uuid>, actual: Option<Uuid>| scope.is_none() || scope == actual;
    if !on(p.route, route) || !on(p.service, service) {
        return None;
    }
    Some(
        match (p.route.is_some(), p.service.is_some(), p.consumer.is_some()) {
            (true, true, true) => 1,
            (true, false, true) => 2,
            (false, true, true) => 3,
            (true, true, false) => 4,
            (false, false, true) => 5,
            (true, false, false) => 6,
            (false, true, false) => 7,
            (false, false, false) => 8,
        },
    )
}

fn chain_for(
    built: &[(&PluginEntity, Arc<Entry>)],
    route: Option<Uuid>,
    service: Option<Uuid>,
) -> Chain {
    let mut slots: HashMap<&str, Slot> = HashMap::new();
    for (p, entry) in built {
        let Some(level) = level(p, route, service) else {
            continue;
        };
        let slot = slots.entry(p.name.as_str()).or_insert_with(|| Slot {
            base: None,
            by_consumer: HashMap::new(),
        });
        let better = |current: Option<&(u8, Arc<Entry>)>| current.is_none_or(|(l, _)| level < *l);
        match p.consumer {
            Some(c) => {
                if better(slot.by_consumer.get(&c)) {
                    slot.by_consumer.insert(c, (level, Arc::clone(entry)));
                }
            }
            None => {
                if better(slot.base.as_ref()) {
                    slot.base = Some((level, Arc::clone(entry)));
                }
            }
        }
    }
    let mut named: Vec<(&str, Slot)> = slots.into_iter().collect();
    // Priority descending, then name descending (K:kong/db/dao/plugins.lua).
    named.sort_by(|(a, _), (b, _)| priority(b).cmp(&priority(a)).then_with(|| b.cmp(a)));
    let tracing = named
        .iter()
        .find_map(|(_, s)| s.base.as_ref().and_then(|(_, e)| e.instance.tracing()))
        .cloned();
    let per_consumer = named.iter().any(|(_, s)| {
        s.base
            .as_ref()
            .is_some_and(|(_, e)| e.instance.per_consumer())
    });
    Chain {
        slots: named.into_iter().map(|(_, s)| s).collect(),
        tracing,
        per_consumer,
    }
}
