//! request-termination (K:kong/plugins/request-termination/handler.lua): answers with a fixed
//! status and body instead of proxying. How users block `/api/internal/**` with a 403 or take a
//! service down for maintenance; with `trigger`, only requests carrying that header or query
//! argument are terminated.

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use portico_common::plugins::request_termination::Config;
use serde_json::{json, Map, Value};

use super::{BuildEnv, Ctx, Flow, Plugin, Reply, Req};
use crate::response::ProxyBody;

/// The request-termination plugin.
#[derive(Debug)]
pub struct RequestTermination {
    status: StatusCode,
    /// `message`, or Kong's default text for the status (none for most statuses).
    message: Option<String>,
    /// `body` with its `content_type` (none unless configured, as in Kong).
    body: Option<(String, Option<HeaderValue>)>,
    trigger: Option<String>,
    echo: bool,
}

/// Kong's DEFAULT_RESPONSE table of the plugin.
fn default_message(status: StatusCode) -> Option<&'static str> {
    Some(match status.as_u16() {
        401 => "Unauthorized",
        404 => "Not found",
        405 => "Method not allowed",
        500 => "An unexpected error occurred",
        502 => "Bad Gateway",
        503 => "Service unavailable",
        _ => return None,
    })
}

impl Plugin for RequestTermination {
    const NAME: &'static str = "request-termination";
    type Config = Config;

    fn build(config: Config, _env: &BuildEnv<'_>) -> Result<Self, String> {
        let status = StatusCode::from_u16(config.status_code)
            .map_err(|_| format!("status_code {} is not an HTTP status", config.status_code))?;
        let body = match config.body {
            Some(b) => {
                let ct =
                    match config.content_type.as_deref() {
                        Some(ct) => Some(HeaderValue::from_str(ct).map_err(|_| {
                            format!("content_type '{ct}' is not a valid header value")
                        })?),
                        None => None,
                    };
                Some((b, ct))
            }
            None => None,
        };
        Ok(RequestTermination {
            status,
            message: config
                .message
                .or_else(|| default_message(status).map(str::to_owned)),
            body,
            trigger: config.trigger.map(|t| t.to_ascii_lowercase()),
            echo: config.echo,
        })
    }

    async fn access<'r>(&'r self, req: &mut Req<'_>, _ctx: &mut Ctx<'r>) -> Flow {
        if let Some(t) = &self.trigger {
            let in_header = req.headers.contains_key(t.as_str());
            if !in_header && req.query_arg(t).is_none() {
                return Flow::Continue;
            }
        }
        if self.echo {
            return Flow::Respond(Reply::json(self.status, &self.echo_body(req)));
        }
        if let Some((body, content_type)) = &self.body {
            let mut resp = Response::new(ProxyBody::full(body.clone()));
            *resp.status_mut() = self.status;
            if let Some(ct) = content_type {
                resp.headers_mut().insert(CONTENT_TYPE, ct.clone());
            }
            return Flow::Respond(Reply::Response(Box::new(resp)));
        }
        Flow::Respond(match &self.message {
            Some(m) => Reply::json(self.status, &json!({ "message": m })),
            None => {
                let mut resp = Response::new(ProxyBody::empty());
                *resp.status_mut() = self.status;
                Reply::Response(Box::new(resp))
            }
        })
    }
}

impl RequestTermination {
    /// Kong's `echo` body: the request as the gateway saw it, for debugging a route.
    fn echo_body(&self, req: &Req<'_>) -> Value {
        let mut headers = Map::new();
        for (name, value) in req.headers.iter() {
            let v = Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned());
            match headers.get_mut(name.as_str()) {
                Some(Value::Array(list)) => list.push(v),
                Some(first) => *first = Value::Array(vec![first.clone(), v]),
                None => {
                    headers.insert(name.as_str().to_owned(), v);
                }
            }
        }
        let mut query = Map::new();
        if let Some(q) = req.query.as_deref() {
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                query.insert(k.into_owned(), Value::String(v.into_owned()));
            }
        }
        json!({
            "message": self.message,
            "request": {
                "scheme": if req.https { "https" } else { "http" },
                "host": req.host,
                "method": req.method.as_str(),
                "path": req.path,
                "headers": headers,
                "query": query,
            },
        })
    }
}
