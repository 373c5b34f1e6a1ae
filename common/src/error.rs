//! Config problems as the user sees them: one [`ConfigIssue`] per problem, each naming the
//! place in the file (`services[1].routes[0].paths[2]`), and [`ConfigErrors`] carrying all of
//! them at once so a user fixes a file in one pass instead of one error per run.

use std::collections::HashSet;
use std::fmt;

/// One problem (or warning) at one place in the declarative file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Where: `services[0].routes[1].paths[0]`; empty for the file as a whole.
    pub path: String,
    pub message: String,
}

impl ConfigIssue {
    /// An issue at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigIssue {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every error found in a config; the config is refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    pub errors: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    /// A single file-level error (unreadable file, unparsable text).
    pub fn single(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigErrors {
            errors: vec![ConfigIssue::new(path, message)],
        }
    }

    /// Whether some error sits exactly at `path` with exactly `message` (handy in tests).
    pub fn has(&self, path: &str, message: &str) -> bool {
        self.errors
            .iter()
            .any(|e| e.path == path && e.message == message)
    }
}

/// Collects errors and warnings while the loader walks the file.
///
/// A value that already produced an error (an unset variable, a value of the wrong type) is
/// "settled": later checks on the same place or below it stay silent, so one mistake yields one
/// message and not a cascade ("not set", then "required field missing", then "invalid type").
#[derive(Debug, Default)]
pub(crate) struct Issues {
    pub errors: Vec<ConfigIssue>,
    pub warnings: Vec<ConfigIssue>,
    settled: HashSet<String>,
}

impl Issues {
    /// Records an error unless `path` (or a place above it) was already settled.
    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        if !self.is_settled(path) {
            self.errors.push(ConfigIssue::new(path, message));
        }
    }

    /// Records an error and settles `path`, silencing follow-up errors at or below it.
    pub fn error_settle(&mut self, path: &str, message: impl Into<String>) {
        self.error(path, message);
        self.settled.insert(path.to_owned());
    }

    /// Records a warning; warnings never refuse a config.
    pub fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(ConfigIssue::new(path, message));
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Whether `path` or one of its ancestors (`a.b` is above `a.b.c` and `a.b[0]`) is settled.
    fn is_settled(&self, path: &str) -> bool {
        if self.settled.is_empty() {
            return false;
        }
        if self.settled.contains(path) {
            return true;
        }
        path.char_indices()
            .filter(|&(_, c)| c == '.' || c == '[')
            .any(|(i, _)| self.settled.contains(&path[..i]))
    }
}

/// `parent.key`, or `key` at the top level.
pub(crate) fn field_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[index]`.
pub(crate) fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}
