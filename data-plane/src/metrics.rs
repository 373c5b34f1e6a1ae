//! Prometheus metrics of the data plane, served as OpenMetrics text on the status listener's
//! `/metrics`.
//!
//! Per-request metrics are recorded once, at the end of `proxy::handle`, from an [`Observed`]
//! the proxy fills. Label values come only from config names (route and service name, or id when
//! unnamed), a fixed method set and the status code, never from raw paths or hosts, so the
//! number of series is bounded by the config. Node-level gauges (connections, target health,
//! circuits, config, control-plane link) are read from [`Shared`] at scrape time
//! (`metrics/scrape.rs`), so they cost the request path nothing.
//!
//! Consumers appear in labels only where a `prometheus` plugin with `per_consumer` applies, and
//! only in two families of their own (`portico_http_requests_by_consumer_total`,
//! `portico_rate_limited_by_consumer_total`): the label sets of the other families never change
//! with the config, and a consumer label is a config name (username, or id), so the series stay
//! bounded. Whether a route counts by consumer is settled when its slot is built, and consumer
//! labels are interned per config: the request path only looks one up by id.
//!
//! The request path takes no lock for the per-route metrics: each route's histograms and
//! counters are resolved once (on its first request after a config swap) into a slot of a table
//! built off the request path in [`Metrics::prepare`]. Only `portico_http_requests_total`, whose
//! labels include the status code, goes through `Family::get_or_create` (an uncontended
//! read lock and a hash of the label set).

mod scrape;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::{Method, Response};
use portico_common::snapshot::{Consumer, Route, Service, Snapshot};

use crate::telemetry::trace::RouteAttrs;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use uuid::Uuid;

use crate::response::ProxyBody;
use crate::runtime::Runtime;
use crate::state::Shared;

/// Latency buckets in seconds: Kong's millisecond buckets (exporter.lua), 1 ms to 60 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 60.0,
];

/// The content type of the OpenMetrics exposition.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the Prometheus text exposition (what `promtool check metrics` reads).
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `service` and `route` labels: config names, or ids for unnamed entities.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    service: Arc<str>,
    route: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: Arc<str>,
    route: Arc<str>,
    method: &'static str,
    code: u16,
    class: &'static str,
}

/// `portico_http_requests_by_consumer_total`: a route's requests by consumer and status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerRequestLabels {
    service: Arc<str>,
    route: Arc<str>,
    consumer: Arc<str>,
    code: u16,
    class: &'static str,
}

/// `portico_rate_limited_by_consumer_total`: a route's rate-limit rejections by consumer.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabels {
    service: Arc<str>,
    route: Arc<str>,
    consumer: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BandwidthLabels {
    service: Arc<str>,
    route: Arc<str>,
    direction: &'static str,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The data plane's metric families and the per-route handles of the runtime being served.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    upstream_latency: HistogramFamily,
    bandwidth: Family<BandwidthLabels, Counter>,
    rate_limited: Family<RouteLabels, Counter>,
    /// Requests of `per_consumer` routes that identified a consumer.
    requests_by_consumer: Family<ConsumerRequestLabels, Counter>,
    rate_limited_by_consumer: Family<ConsumerLabels, Counter>,
    /// Handles of the routes of the last runtime given to [`Metrics::prepare`].
    routes: ArcSwapOption<RouteTable>,
    /// Requests that matched no route share one slot with empty labels, as in Kong.
    unmatched: Arc<RouteSlot>,
    /// Duration of the last config apply from the control plane, in microseconds.
    last_apply_micros: AtomicU64,
}

/// The per-route slots of one snapshot, index-aligned with `snapshot.routes`.
#[derive(Debug)]
struct RouteTable {
    snapshot: Arc<Snapshot>,
    slots: Vec<Arc<RouteSlot>>,
    /// Each consumer's label (username, or id), by id; empty when no route counts by consumer.
    consumers: HashMap<Uuid, Arc<str>>,
}

/// One route's labels and, once it has seen a request, its resolved metrics.
#[derive(Debug)]
struct RouteSlot {
    labels: RouteLabels,
    /// The route's chain runs rate-limiting: a 429 answered by the chain is counted as a
    /// rate-limit rejection.
    rate_limiting: bool,
    /// The route's chain has `prometheus` with `per_consumer`: its requests are also counted
    /// by consumer.
    per_consumer: bool,
    handles: OnceLock<Handles>,
    /// The route's id (none for the unmatched slot).
    route_id: Option<Uuid>,
    /// The route's span attributes, encoded on the first traced request.
    span_attrs: OnceLock<RouteAttrs>,
}

/// Clones of a route's series: a prometheus-client metric is an `Arc` around atomics, so
/// recording through these takes no lock.
#[derive(Debug)]
struct Handles {
    latency: Histogram,
    upstream_latency: Histogram,
    bytes_in: Counter,
    bytes_out: Counter,
    /// The route's request counters for the first (method, status) pairs it answers, so the
    /// usual request finds its series without the family's lock or hashing its labels.
    requests: [OnceLock<(&'static str, u16, Counter)>; REQUEST_SERIES_CACHED],
}

/// (method, status) series each route keeps at hand; others are looked up in the family.
const REQUEST_SERIES_CACHED: usize = 8;

/// What the proxy learnt about one request, recorded by [`Metrics::record`].
#[derive(Debug, Default)]
pub struct Observed {
    route: Option<Arc<RouteSlot>>,
    /// The consumer's label, when the route counts by consumer and one was identified.
    consumer: Option<Arc<str>>,
    /// Time to the upstream's response head, retries included; `None` when not proxied.
    pub upstream_latency: Option<Duration>,
    /// The route's plugin chain answered instead of the upstream.
    pub plugin_reply: bool,
    /// Headers plugins set for the client (rate-limit headers, an echoed correlation id), kept
    /// for the error page the proxy writes when the request fails after the chain ran.
    pub response_headers: crate::plugins::ResponseHeaders,
    /// When the request arrived (wall clock), for spans and the access log.
    pub started_at: Option<std::time::SystemTime>,
    /// The client's trace context, read before the request is taken apart when the node traces.
    pub parent: Option<crate::telemetry::trace::Parent>,
    /// The request's trace, once started.
    pub trace: Option<crate::telemetry::trace::RequestTrace>,
    /// Facts for the access log (filled when `logging`).
    pub facts: crate::telemetry::LogFacts,
    /// The access log is on: gather what it needs.
    pub logging: bool,
}

impl Observed {
    /// Notes the route the request matched in `rt`.
    pub fn matched(&mut self, metrics: &Metrics, rt: &Runtime, route_index: usize) {
        self.route = metrics.slot(rt, route_index);
    }

    /// Notes the consumer the plugin chain identified (if any). Kept only for a route whose
    /// chain counts by consumer; the label is the config's, interned when `rt` was prepared.
    pub fn identified(&mut self, metrics: &Metrics, rt: &Runtime, consumer: Option<&Consumer>) {
        let (Some(slot), Some(c)) = (&self.route, consumer) else {
            return;
        };
        if slot.per_consumer {
            self.consumer = Some(metrics.consumer_label(rt, c));
        }
    }

    /// The matched route's span attributes (its id and labels), encoded once per route.
    pub fn route_attrs(&self) -> Option<RouteAttrs> {
        let slot = self.route.as_ref()?;
        let id = slot.route_id?;
        Some(
            slot.span_attrs
                .get_or_init(|| {
                    RouteAttrs::new(id, Some(&slot.labels.route), Some(&slot.labels.service))
                })
                .clone(),
        )
    }

    /// The matched route's (route, service) labels: config names, or ids when unnamed.
    pub fn route_labels(&self) -> Option<(Arc<str>, Arc<str>)> {
        self.route
            .as_ref()
            .map(|s| (s.labels.route.clone(), s.labels.service.clone()))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Empty families, registered under the `portico_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portico");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let upstream_latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let bandwidth = Family::<BandwidthLabels, Counter>::default();
        let rate_limited = Family::<RouteLabels, Counter>::default();
        let requests_by_consumer = Family::<ConsumerRequestLabels, Counter>::default();
        let rate_limited_by_consumer = Family::<ConsumerLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Requests answered, by service, route, method, status code and class",
            requests.clone(),
        );
        registry.register_with_unit(
            "request_latency",
            "Time from the request to the response head (body streaming excluded)",
            Unit::Seconds,
            latency.clone(),
        );
        registry.register_with_unit(
            "upstream_latency",
            "Time from sending upstream to the upstream's response head, retries included",
            Unit::Seconds,
            upstream_latency.clone(),
        );
        registry.register_with_unit(
            "bandwidth",
            "Body bytes by direction (ingress: request Content-Length; egress: response body \
             bytes sent, counted when the body ends)",
            Unit::Bytes,
            bandwidth.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused with 429 by the rate-limiting plugin",
            rate_limited.clone(),
        );
        registry.register(
            "http_requests_by_consumer",
            "Requests answered on routes whose prometheus plugin has per_consumer, for those \
             that identified a consumer, by service, route, consumer, status code and class",
            requests_by_consumer.clone(),
        );
        registry.register(
            "rate_limited_by_consumer",
            "Requests refused with 429 by the rate-limiting plugin on routes whose prometheus \
             plugin has per_consumer, for those that identified a consumer",
            rate_limited_by_consumer.clone(),
        );
        let unmatched = Arc::new(RouteSlot {
            labels: RouteLabels {
                service: Arc::from(""),
                route: Arc::from(""),
            },
            rate_limiting: false,
            per_consumer: false,
            handles: OnceLock::new(),
            route_id: None,
            span_attrs: OnceLock::new(),
        });
        Metrics {
            registry,
            requests,
            latency,
            upstream_latency,
            bandwidth,
            rate_limited,
            requests_by_consumer,
            rate_limited_by_consumer,
            routes: ArcSwapOption::empty(),
            unmatched,
            last_apply_micros: AtomicU64::new(0),
        }
    }

    /// Builds the per-route slots of `rt`; called before `rt` is published so its first
    /// requests find them. Off the request path. The slot of a route that did not change
    /// (the same `Arc`, the same service label and plugins) is carried over with the series
    /// it already resolved, so a one-route change rebuilds one slot.
    pub fn prepare(&self, rt: &Runtime) {
        // One label per service, shared by its routes: no per-route search of the services.
        let services: HashMap<Uuid, Arc<str>> = rt
            .snapshot
            .services
            .iter()
            .map(|s| (s.id, service_label(s)))
            .collect();
        let previous = self.routes.load_full();
        let mut carry = previous.as_deref().map(Carry::new);
        let slots = (0..rt.snapshot.routes.len())
            .map(|i| {
                let service = rt.snapshot.routes[i]
                    .service
                    .and_then(|id| services.get(&id));
                // The route label is the route's own: the same `Arc`, the same label.
                let reused = carry
                    .as_mut()
                    .and_then(|c| c.find(&rt.snapshot.routes[i], i))
                    .filter(|old| {
                        *old.labels.service == *service.map_or("", |s| &**s)
                            && old.rate_limiting == RouteSlot::rate_limiting(rt, i)
                            && old.per_consumer == RouteSlot::per_consumer(rt, i)
                    });
                match reused {
                    Some(old) => Arc::clone(old),
                    None => Arc::new(RouteSlot::of(rt, i, service.cloned())),
                }
            })
            .collect::<Vec<Arc<RouteSlot>>>();
        // Interned only when some route counts by consumer: a config without the plugin pays
        // nothing per consumer.
        let consumers = if slots.iter().any(|s| s.per_consumer) {
            rt.snapshot
                .consumers
                .iter()
                .map(|c| (c.id, consumer_label(c)))
                .collect()
        } else {
            HashMap::new()
        };
        self.routes.store(Some(Arc::new(RouteTable {
            snapshot: rt.snapshot.clone(),
            slots,
            consumers,
        })));
    }

    /// Records how long the last config apply took.
    pub fn set_last_apply(&self, micros: u64) {
        self.last_apply_micros.store(micros, Ordering::Relaxed);
    }

    /// The slot of route `index` of `rt`. A request still on a runtime older than the table
    /// (a swap raced it) builds a slot on the spot: rare, and correct, only slower.
    fn slot(&self, rt: &Runtime, index: usize) -> Option<Arc<RouteSlot>> {
        let table = self.routes.load();
        if let Some(t) = table.as_ref() {
            if Arc::ptr_eq(&t.snapshot, &rt.snapshot) {
                return t.slots.get(index).cloned();
            }
        }
        let route = rt.snapshot.routes.get(index)?;
        let service = route
            .service
            .and_then(|id| rt.snapshot.services.iter().find(|s| s.id == id))
            .map(|s| service_label(s));
        Some(Arc::new(RouteSlot::of(rt, index, service)))
    }

    /// The label of consumer `c` of `rt`: interned by [`Metrics::prepare`]; built on the spot
    /// only for a request still on a runtime older than the table (rare, correct, slower).
    fn consumer_label(&self, rt: &Runtime, c: &Consumer) -> Arc<str> {
        let table = self.routes.load();
        table
            .as_ref()
            .filter(|t| Arc::ptr_eq(&t.snapshot, &rt.snapshot))
            .and_then(|t| t.consumers.get(&c.id))
            .cloned()
            .unwrap_or_else(|| consumer_label(c))
    }

    /// Records one answered request: `resp` is what the client gets, `elapsed` the time since
    /// the request arrived, `bytes_in` its body length when declared. Returns the route's egress
    /// counter: the response body's bytes are counted as they are sent (see `BodyEnd`).
    pub fn record(
        &self,
        observed: &Observed,
        method: &Method,
        resp: &Response<ProxyBody>,
        elapsed: Duration,
        bytes_in: Option<u64>,
    ) -> Counter {
        let slot = observed.route.as_ref().unwrap_or(&self.unmatched);
        let code = resp.status().as_u16();
        let h = slot.handles(self);
        slot.count_request(self, h, method_label(method), code);
        h.latency.observe(elapsed.as_secs_f64());
        if let Some(up) = observed.upstream_latency {
            h.upstream_latency.observe(up.as_secs_f64());
        }
        if let Some(n) = bytes_in.filter(|n| *n > 0) {
            h.bytes_in.inc_by(n);
        }
        let rate_limited = observed.plugin_reply && code == 429 && slot.rate_limiting;
        if rate_limited {
            self.rate_limited.get_or_create(&slot.labels).inc();
        }
        if let Some(consumer) = &observed.consumer {
            self.requests_by_consumer
                .get_or_create(&ConsumerRequestLabels {
                    service: slot.labels.service.clone(),
                    route: slot.labels.route.clone(),
                    consumer: consumer.clone(),
                    code,
                    class: class_label(code),
                })
                .inc();
            if rate_limited {
                self.rate_limited_by_consumer
                    .get_or_create(&ConsumerLabels {
                        service: slot.labels.service.clone(),
                        route: slot.labels.route.clone(),
                        consumer: consumer.clone(),
                    })
                    .inc();
            }
        }
        h.bytes_out.clone()
    }

    /// Every metric, the request families and the scrape-time gauges, as OpenMetrics text or,
    /// when `openmetrics` is false, as Prometheus text 0.0.4.
    pub fn render(&self, shared: &Shared, openmetrics: bool) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail; an encoding error would be a bug in a label type.
        if let Err(e) = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)
        {
            tracing::warn!(error = %e, "cannot encode the request metrics");
        }
        let node = scrape::node_registry(shared, self.last_apply_micros.load(Ordering::Relaxed));
        if let Err(e) = prometheus_client::encoding::text::encode_registry(&mut out, &node) {
            tracing::warn!(error = %e, "cannot encode the node metrics");
        }
        if openmetrics {
            let _ = prometheus_client::encoding::text::encode_eof(&mut out);
            out
        } else {
            portico_common::metrics_text::to_prometheus_text(&out)
        }
    }
}

/// The previous table's slots, found by route: same index first, else by id.
struct Carry<'t> {
    table: &'t RouteTable,
    by_id: Option<HashMap<Uuid, usize>>,
}

impl<'t> Carry<'t> {
    fn new(table: &'t RouteTable) -> Carry<'t> {
        Carry { table, by_id: None }
    }

    /// The slot of `route` in the previous table, when it is the same `Arc` there.
    fn find(&mut self, route: &Arc<Route>, index: usize) -> Option<&'t Arc<RouteSlot>> {
        let routes = &self.table.snapshot.routes;
        let at = match routes.get(index) {
            Some(r) if r.id == route.id => index,
            _ => *self
                .by_id
                .get_or_insert_with(|| routes.iter().enumerate().map(|(i, r)| (r.id, i)).collect())
                .get(&route.id)?,
        };
        if !Arc::ptr_eq(&routes[at], route) {
            return None;
        }
        self.table.slots.get(at)
    }
}

/// A consumer's label: its username, or its id when it has none (Kong's per_consumer label).
fn consumer_label(c: &Consumer) -> Arc<str> {
    match &c.username {
        Some(name) => Arc::from(name.as_str()),
        None => Arc::from(c.id.to_string()),
    }
}

/// A service's label: its name, or its id when unnamed.
fn service_label(s: &Service) -> Arc<str> {
    match &s.name {
        Some(name) => Arc::from(name.as_str()),
        None => Arc::from(s.id.to_string()),
    }
}

impl RouteSlot {
    /// The slot of route `index` (which must exist) of service label `service` (none for a
    /// serviceless route).
    fn of(rt: &Runtime, index: usize, service: Option<Arc<str>>) -> RouteSlot {
        let route = &rt.snapshot.routes[index];
        let route_name = route.name.clone().unwrap_or_else(|| route.id.to_string());
        RouteSlot {
            labels: RouteLabels {
                service: service.unwrap_or_else(|| Arc::from("")),
                route: Arc::from(route_name),
            },
            rate_limiting: RouteSlot::rate_limiting(rt, index),
            per_consumer: RouteSlot::per_consumer(rt, index),
            handles: OnceLock::new(),
            route_id: Some(route.id),
            span_attrs: OnceLock::new(),
        }
    }

    /// Whether route `index`'s chain runs rate-limiting.
    fn rate_limiting(rt: &Runtime, index: usize) -> bool {
        rt.plugins
            .for_route(index)
            .names()
            .contains(&"rate-limiting")
    }

    /// Whether route `index`'s chain counts requests by consumer.
    fn per_consumer(rt: &Runtime, index: usize) -> bool {
        rt.plugins.for_route(index).per_consumer()
    }

    /// The route's series, looked up in the families on its first request only.
    fn handles(&self, m: &Metrics) -> &Handles {
        self.handles.get_or_init(|| {
            let bw = |direction| BandwidthLabels {
                service: self.labels.service.clone(),
                route: self.labels.route.clone(),
                direction,
            };
            Handles {
                latency: m.latency.get_or_create_owned(&self.labels),
                upstream_latency: m.upstream_latency.get_or_create_owned(&self.labels),
                bytes_in: m.bandwidth.get_or_create_owned(&bw("ingress")),
                bytes_out: m.bandwidth.get_or_create_owned(&bw("egress")),
                requests: Default::default(),
            }
        })
    }

    /// Counts one request answered `code` to `method`: through the route's cached series when
    /// the pair is one of its first [`REQUEST_SERIES_CACHED`], else through the family.
    fn count_request(&self, m: &Metrics, h: &Handles, method: &'static str, code: u16) {
        let labels = || RequestLabels {
            service: self.labels.service.clone(),
            route: self.labels.route.clone(),
            method,
            code,
            class: class_label(code),
        };
        for cell in &h.requests {
            // An empty cell is claimed for this pair; a racing request may claim it for
            // another, and this one then tries the next cell.
            let (cm, cc, counter) =
                cell.get_or_init(|| (method, code, m.requests.get_or_create_owned(&labels())));
            if *cc == code && *cm == method {
                counter.inc();
                return;
            }
        }
        m.requests.get_or_create(&labels()).inc();
    }
}

/// The method label: the standard methods by name, anything else `other`, so a client cannot
/// mint series with made-up methods.
pub fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

fn class_label(code: u16) -> &'static str {
    match code / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use portico_common::load_str;

    use super::*;
    use crate::pool::Pools;

    const CONFIG: &str = r#"
_format_version: "3.0"
services:
  - name: a
    url: http://127.0.0.1:9
    routes:
      - { name: kept, paths: [/kept] }
      - { name: edited, paths: [/edited] }
  - name: b
    url: http://127.0.0.1:9
    routes:
      - { name: under-renamed, paths: [/b] }
"#;

    #[test]
    fn request_counts_are_exact_past_the_cached_series() {
        let pools = Pools::default();
        let m = Metrics::new();
        let snap = load_str(CONFIG, &|_| None).unwrap().snapshot;
        let rt = Runtime::compile(snap, &pools).unwrap();
        m.prepare(&rt);
        let slot = &slots(&m)[0];
        let h = slot.handles(&m);
        // More distinct pairs than the cache holds, each counted a known number of times,
        // interleaved.
        let pairs: Vec<(&'static str, u16)> = ["GET", "POST", "PUT"]
            .into_iter()
            .flat_map(|meth| [200u16, 404, 500, 201].map(|c| (meth, c)))
            .collect();
        assert!(pairs.len() > REQUEST_SERIES_CACHED);
        for round in 0..5 {
            for (i, (meth, code)) in pairs.iter().enumerate() {
                if round <= i % 5 {
                    slot.count_request(&m, h, meth, *code);
                }
            }
        }
        for (i, (meth, code)) in pairs.iter().enumerate() {
            let got = m
                .requests
                .get_or_create(&RequestLabels {
                    service: slot.labels.service.clone(),
                    route: slot.labels.route.clone(),
                    method: meth,
                    code: *code,
                    class: class_label(*code),
                })
                .get();
            assert_eq!(got, (i % 5 + 1) as u64, "{meth} {code}");
        }
    }

    fn slots(m: &Metrics) -> Vec<Arc<RouteSlot>> {
        m.routes.load_full().expect("prepared").slots.clone()
    }

    #[test]
    fn prepare_carries_over_the_slots_of_unchanged_routes_only() {
        let pools = Pools::default();
        let m = Metrics::new();
        let snap = load_str(CONFIG, &|_| None).unwrap().snapshot;
        let rt0 = Runtime::compile(snap.clone(), &pools).unwrap();
        m.prepare(&rt0);
        let before = slots(&m);

        // What a delta does: untouched entities stay the same `Arc`s.
        let mut next = snap;
        Arc::make_mut(&mut next.routes[1])
            .paths
            .push("/edited2".into());
        Arc::make_mut(&mut next.services[1]).name = Some("renamed".into());
        next.routes.swap(0, 2);
        let rt1 = Runtime::recompile(next, &pools, &rt0).unwrap();
        m.prepare(&rt1);
        let after = slots(&m);

        let by_route = |s: &[Arc<RouteSlot>], name: &str| {
            s.iter()
                .find(|s| &*s.labels.route == name)
                .cloned()
                .unwrap()
        };
        assert!(Arc::ptr_eq(
            &by_route(&before, "kept"),
            &by_route(&after, "kept")
        ));
        assert!(!Arc::ptr_eq(
            &by_route(&before, "edited"),
            &by_route(&after, "edited")
        ));
        let renamed = by_route(&after, "under-renamed");
        assert!(!Arc::ptr_eq(&by_route(&before, "under-renamed"), &renamed));
        assert_eq!(&*renamed.labels.service, "renamed");
        // Slots stay index-aligned with the new snapshot's routes.
        for (slot, route) in after.iter().zip(&rt1.snapshot.routes) {
            assert_eq!(Some(&*slot.labels.route), route.name.as_deref());
        }
    }

    #[test]
    fn turning_per_consumer_on_rebuilds_the_routes_slot_and_interns_consumer_labels() {
        let pools = Pools::default();
        let m = Metrics::new();
        let yaml = format!("{CONFIG}consumers:\n  - username: alice\n  - custom_id: no-name\n");
        let snap = load_str(&yaml, &|_| None).unwrap().snapshot;
        let rt0 = Runtime::compile(snap.clone(), &pools).unwrap();
        m.prepare(&rt0);
        let before = slots(&m);
        assert!(before.iter().all(|s| !s.per_consumer));
        assert!(m.routes.load_full().unwrap().consumers.is_empty());

        // The same routes (same `Arc`s), plus a global prometheus with per_consumer.
        let with = load_str(
            &format!(
                "{yaml}plugins:\n  - name: prometheus\n    config: {{ per_consumer: true }}\n"
            ),
            &|_| None,
        )
        .unwrap()
        .snapshot;
        let mut next = snap;
        next.plugins = with.plugins;
        let rt1 = Runtime::recompile(next, &pools, &rt0).unwrap();
        m.prepare(&rt1);
        let after = slots(&m);
        for (old, new) in before.iter().zip(&after) {
            assert!(new.per_consumer);
            assert!(
                !Arc::ptr_eq(old, new),
                "a slot must not keep a stale per_consumer"
            );
        }
        let table = m.routes.load_full().unwrap();
        let labels: Vec<&str> = rt1
            .snapshot
            .consumers
            .iter()
            .map(|c| &*table.consumers[&c.id])
            .collect();
        let no_name = rt1.snapshot.consumers[1].id.to_string();
        assert_eq!(labels, ["alice", no_name.as_str()]);
    }
}
