//! correlation-id (KONG.md §3.13; K:kong/plugins/correlation-id/handler.lua): every request
//! carries an id in `header_name`, the client's own when it sent a non-empty one, else a new
//! one; the upstream always gets it, and with `echo_downstream` so does the client (also on an
//! answer a later plugin gives instead of proxying).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{HeaderName, HeaderValue};
use portico_common::plugins::correlation_id::{Config, Generator};
use uuid::Uuid;

use super::{BuildEnv, Ctx, Flow, Plugin, Req};

/// This process's part of `uuid#counter` ids: Kong's is per nginx worker, ours per data plane
/// process, and the counter is shared by every instance so two plugins never hand out one id.
static PROCESS: LazyLock<Uuid> = LazyLock::new(Uuid::new_v4);
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The correlation-id plugin.
#[derive(Debug)]
pub struct CorrelationId {
    header: HeaderName,
    generator: Generator,
    echo: bool,
}

impl Plugin for CorrelationId {
    const NAME: &'static str = "correlation-id";
    type Config = Config;

    fn build(config: Config, _env: &BuildEnv<'_>) -> Result<Self, String> {
        let header = HeaderName::from_bytes(config.header_name.to_ascii_lowercase().as_bytes())
            .map_err(|_| format!("header_name: '{}' is not a header name", config.header_name))?;
        Ok(CorrelationId {
            header,
            generator: config.generator,
            echo: config.echo_downstream,
        })
    }

    async fn access<'r>(&'r self, req: &mut Req<'_>, ctx: &mut Ctx<'r>) -> Flow {
        let id = match req.headers.get(&self.header).filter(|v| !v.is_empty()) {
            Some(v) => v.clone(),
            None => {
                let id = self.generate(req);
                req.headers.insert(self.header.clone(), id.clone());
                id
            }
        };
        tracing::debug!(correlation_id = ?id, "correlation id");
        if self.echo {
            ctx.response_headers.insert(self.header.clone(), id);
        }
        Flow::Continue
    }
}

impl CorrelationId {
    fn generate(&self, req: &Req<'_>) -> HeaderValue {
        let text = match self.generator {
            Generator::Uuid => Uuid::new_v4().to_string(),
            Generator::UuidCounter => {
                let n = COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
                format!("{}#{n}", *PROCESS)
            }
            // Kong's tracker is server address, port, worker pid, connection serial, request
            // serial, client address, client port and time; the proxy does not hand plugins the
            // connection's details, so this one is host, pid, request serial, client address
            // and time: as unique, as readable.
            Generator::Tracker => {
                let n = COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                format!(
                    "{}-{}-{n}-{}-{now:.3}",
                    req.host,
                    std::process::id(),
                    req.client_ip
                )
            }
        };
        // Every generator writes visible ASCII only; the fallback keeps the request going.
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }
}
