//! Text to a generic JSON value: JSON when the text starts with `{`, YAML otherwise.
//!
//! Everything downstream works on `serde_json::Value` so secrets, migration and validation are
//! written once for both syntaxes. YAML merge keys (`<<: *defaults`) are applied here, since
//! Kong users share settings between services that way.

use serde_json::Value;

use crate::error::ConfigErrors;

/// Parses the whole document; syntax errors are a single file-level issue.
pub(crate) fn parse_document(text: &str) -> Result<Value, ConfigErrors> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('{') {
        return serde_json::from_str(trimmed)
            .map_err(|e| ConfigErrors::single("", format!("invalid JSON: {e}")));
    }
    let mut yaml: serde_yaml::Value = serde_yaml::from_str(trimmed)
        .map_err(|e| ConfigErrors::single("", format!("invalid YAML: {e}")))?;
    yaml.apply_merge()
        .map_err(|e| ConfigErrors::single("", format!("invalid YAML: {e}")))?;
    serde_json::to_value(yaml).map_err(|e| {
        ConfigErrors::single(
            "",
            format!("invalid YAML: {e} (map keys must be strings or numbers)"),
        )
    })
}
