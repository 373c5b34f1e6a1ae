//! Portico's configuration: the Kong declarative format (authored form), its validation, secret
//! resolution (`${VAR}` and `{vault://env/..}`), and the validated [`snapshot::Snapshot`] that both
//! planes consume.
//!
//! This crate owns the meaning of a config file. It must not depend on any runtime (no tokio, no
//! hyper): the control plane, the data plane and the CLI all call the same code, so a config that
//! validates here is one every plane accepts.

pub mod config;
pub mod delta;
pub mod digest;
pub mod error;
pub mod load;
pub mod metrics_text;
pub mod path;
pub mod plugins;
pub mod snapshot;
mod snapshot_ext;
pub mod tls;

pub use delta::{Changes, Delta};
pub use digest::{Digests, EntityDigest};
pub use error::{ConfigErrors, ConfigIssue};
pub use load::{load_file, load_str, load_str_after, Loaded};
pub use plugins::PluginConfig;
