//! request-termination: answer every request with a fixed response (K:kong/plugins/
//! request-termination/schema.lua, handler.lua).

use serde::{Deserialize, Serialize};

use super::de;
use super::fields::{header_name_error, is_present, Fields};
use crate::error::ConfigIssue;

/// request-termination's config, with Kong's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Status of the response.
    #[serde(deserialize_with = "de::int_in::<_, u16, 100, 599>")]
    pub status_code: u16,
    /// Sent as `{"message": ...}`; `None` uses Kong's default text for the status, if any.
    pub message: Option<String>,
    /// A raw body instead of the JSON message.
    pub body: Option<String>,
    /// The `Content-Type` of `body`.
    pub content_type: Option<String>,
    /// Only terminate requests carrying this header or query argument; `None` terminates all.
    pub trigger: Option<String>,
    /// Answer with a copy of the request instead (for debugging).
    #[serde(deserialize_with = "de::boolean")]
    pub echo: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            status_code: 503,
            message: None,
            body: None,
            content_type: None,
            trigger: None,
            echo: false,
        }
    }
}

pub(super) fn parse(mut f: Fields) -> Result<Config, Vec<ConfigIssue>> {
    let config = f.decode::<Config>();
    if let Some(c) = &config {
        if let Some(msg) = c.trigger.as_deref().and_then(header_name_error) {
            f.error("trigger", msg);
        }
        // Kong's custom_validator reports only its first failing rule; so does this.
        if let Some(msg) = conflict(c).filter(|_| f.whole()) {
            f.error("", msg);
        }
    }
    f.finish(config)
}

/// The response fields that contradict each other, with Kong's message.
fn conflict(c: &Config) -> Option<&'static str> {
    let (message, body, content_type) = (
        is_present(&c.message),
        is_present(&c.body),
        is_present(&c.content_type),
    );
    if message && (content_type || body) {
        Some("message cannot be used with content_type or body")
    } else if content_type && !body {
        Some("content_type requires a body")
    } else if c.echo && (content_type || body) {
        Some("echo cannot be used with content_type and body")
    } else {
        None
    }
}
