//! request-size-limiting (KONG.md §3.11; K:kong/plugins/request-size-limiting/handler.lua):
//! refuses request bodies over a configured size.
//!
//! A declared `Content-Length` is checked before anything is read: 413, or 417 when the client
//! waits on `Expect: 100-continue` (so it never sends the body). A body without a length
//! (chunked, or an HTTP/2 stream) is where Portico does better than Kong: Kong reads it whole
//! into memory or a temp file before measuring; Portico streams it to the upstream and aborts
//! the exchange with 413 the moment it grows past the limit, holding at most one chunk.

use http::header::{CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING};
use http::StatusCode;
use portico_common::plugins::request_size_limiting::Config;
use serde_json::json;

use super::{BuildEnv, Ctx, Flow, Plugin, Reply, Req};
use crate::upstream_body::UpstreamBody;

/// Kong's messages, word for word.
const TOO_LARGE: &str = "Request size limit exceeded";
const LENGTH_REQUIRED: &str = "A valid Content-Length header is required";

/// The request-size-limiting plugin.
#[derive(Debug)]
pub struct RequestSizeLimiting {
    /// The limit in bytes.
    limit: u64,
    require_content_length: bool,
}

impl Plugin for RequestSizeLimiting {
    const NAME: &'static str = "request-size-limiting";
    type Config = Config;

    fn build(config: Config, _env: &BuildEnv<'_>) -> Result<Self, String> {
        Ok(RequestSizeLimiting {
            limit: config.limit_bytes(),
            require_content_length: config.require_content_length,
        })
    }

    async fn access<'r>(&'r self, req: &mut Req<'_>, _ctx: &mut Ctx<'r>) -> Flow {
        // hyper already refused a malformed or conflicting Content-Length, so an unparsable
        // one cannot reach here; it is treated as absent all the same, as Kong's `tonumber`.
        let declared = req
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(len) = declared {
            return self.check(len, req);
        }
        let chunked = req
            .headers
            .get(TRANSFER_ENCODING)
            .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"chunked"));
        if self.require_content_length && !chunked {
            // Kong's rule, literally: a bodiless GET without a Content-Length is refused too.
            return Flow::Respond(Reply::json(
                StatusCode::LENGTH_REQUIRED,
                &json!({ "message": LENGTH_REQUIRED }),
            ));
        }
        match req.body {
            // An earlier plugin (key-auth `key_in_body`) already read it: measure it.
            UpstreamBody::Buffered(Some(bytes)) => self.check(bytes.len() as u64, req),
            // Streamed with the limit enforced on the way; the proxy turns the overflow into
            // 413. No body (`Empty`) stays as it is.
            _ => {
                *req.body = std::mem::replace(req.body, UpstreamBody::Empty).limit(self.limit);
                Flow::Continue
            }
        }
    }
}

impl RequestSizeLimiting {
    /// Kong's `check_size`: 413, or 417 when the client is waiting on `100-continue`.
    fn check(&self, len: u64, req: &Req<'_>) -> Flow {
        if len <= self.limit {
            return Flow::Continue;
        }
        let expects_continue = req.headers.get(EXPECT).is_some_and(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .trim()
                .eq_ignore_ascii_case("100-continue")
        });
        let status = if expects_continue {
            StatusCode::EXPECTATION_FAILED
        } else {
            StatusCode::PAYLOAD_TOO_LARGE
        };
        Flow::Respond(Reply::json(status, &json!({ "message": TOO_LARGE })))
    }
}
