//! opentelemetry (KONG.md §3.15): the routes the plugin applies to are traced to its own
//! OTLP/HTTP collector instead of the node's `--otlp-endpoint`.
//!
//! The plugin builds the trace pipeline ([`Tracing`], OTLP/HTTP protobuf) once per config;
//! the chain hands it to the proxy (`Chain::tracing`), which starts the request's trace before
//! any plugin runs, as Kong's tracing starts before its plugins do. The access phase only
//! removes the `propagation.clear` headers from the upstream request (the client's context
//! was already read).
//!
//! A config swap that leaves the pipeline's settings as they were reuses the running
//! pipeline (its exporter, batch thread and queued spans) instead of building a new one.

use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use portico_common::plugins::opentelemetry::Config;

use super::{BuildEnv, Ctx, Flow, Instance, Plugin, Req};
use crate::telemetry::trace::{OtlpProtocol, TraceExport, Tracing};

/// The opentelemetry plugin.
#[derive(Debug)]
pub struct Opentelemetry {
    tracing: Arc<Tracing>,
    /// `propagation.clear`, lowercased.
    clear: Vec<HeaderName>,
}

impl Opentelemetry {
    /// The plugin's trace pipeline.
    pub fn tracing(&self) -> &Arc<Tracing> {
        &self.tracing
    }
}

impl Plugin for Opentelemetry {
    const NAME: &'static str = "opentelemetry";
    type Config = Box<Config>;

    fn build(config: Box<Config>, env: &BuildEnv<'_>) -> Result<Self, String> {
        let export = export(&config, env)?;
        let clear = config
            .propagation
            .clear
            .iter()
            .flatten()
            .map(|h| {
                HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                    .map_err(|_| format!("propagation.clear: '{h}' is not a header name"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let reused = match env.previous {
            Some(Instance::Opentelemetry(old)) if old.tracing.export == export => {
                Some(Arc::clone(&old.tracing))
            }
            _ => None,
        };
        let tracing = match reused {
            Some(t) => t,
            None => Arc::new(Tracing::new(export)?),
        };
        Ok(Opentelemetry { tracing, clear })
    }

    async fn access<'r>(&'r self, req: &mut Req<'_>, _ctx: &mut Ctx<'r>) -> Flow {
        for name in &self.clear {
            req.headers.remove(name);
        }
        Flow::Continue
    }
}

/// The pipeline settings of `config` on this node.
fn export(config: &Config, env: &BuildEnv<'_>) -> Result<TraceExport, String> {
    let endpoint = config
        .traces_endpoint
        .clone()
        // The loader refuses a config without one; this keeps a re-typed snapshot honest.
        .ok_or_else(|| "traces_endpoint is required".to_owned())?;
    let response_header = config
        .http_response_header_for_traceid
        .as_deref()
        .map(|h| {
            HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).map_err(|_| {
                format!("http_response_header_for_traceid: '{h}' is not a header name")
            })
        })
        .transpose()?;
    let pairs = |m: &Option<std::collections::BTreeMap<String, String>>| {
        m.iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    Ok(TraceExport {
        endpoint,
        protocol: OtlpProtocol::HttpProtobuf,
        headers: pairs(&config.headers),
        resource: pairs(&config.resource_attributes),
        sampling_rate: config.sampling_rate.unwrap_or(env.sampling_rate),
        timeout: Duration::from_millis(u64::from(config.send_timeout)),
        max_batch: config.max_batch(),
        response_header,
        node_id: env.node_id.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::Enabled;
    use crate::pool::Pools;
    use portico_common::plugins::PluginConfig;
    use serde_json::json;

    fn config(value: serde_json::Value) -> Box<Config> {
        match PluginConfig::parse("opentelemetry", &value).expect("valid") {
            PluginConfig::Opentelemetry(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_unchanged_config_keeps_its_pipeline_and_a_changed_one_gets_a_new_one() {
        let pools = Pools::default();
        let enabled = Enabled::default();
        let env = BuildEnv {
            sampling_rate: 0.25,
            node_id: "dp-1",
            ..BuildEnv::new(&pools, &enabled)
        };
        let base = json!({"traces_endpoint": "http://127.0.0.1:9/v1/traces",
                          "headers": {"x-token": "t"}, "queue": {"max_batch_size": 7}});
        let first =
            Instance::Opentelemetry(Opentelemetry::build(config(base.clone()), &env).unwrap());
        let Instance::Opentelemetry(p) = &first else {
            unreachable!()
        };
        let e = &p.tracing.export;
        assert_eq!(e.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(e.sampling_rate, 0.25, "unset sampling_rate is the node's");
        assert_eq!(e.node_id, "dp-1");
        assert_eq!(e.max_batch, 7);
        assert_eq!(e.timeout, Duration::from_millis(5000));
        assert_eq!(e.headers, [("x-token".to_owned(), "t".to_owned())]);

        let again = BuildEnv {
            previous: Some(&first),
            ..env
        };
        let same = Opentelemetry::build(config(base.clone()), &again).unwrap();
        assert!(
            Arc::ptr_eq(&same.tracing, &p.tracing),
            "same settings reuse the pipeline"
        );

        let mut changed = base;
        changed["sampling_rate"] = json!(1);
        let other = Opentelemetry::build(config(changed), &again).unwrap();
        assert!(!Arc::ptr_eq(&other.tracing, &p.tracing));
        assert_eq!(other.tracing.export.sampling_rate, 1.0);
    }
}
