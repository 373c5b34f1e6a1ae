//! Portico's control plane: the source-of-truth store, one validated snapshot per node group,
//! the discovery stream that feeds data planes, and the admin APIs.
//!
//! It depends on `portico-common` (config meaning) and `portico-proto` (wire types) and must
//! never depend on the data plane. The store, discovery server and admin APIs land with the
//! control-plane issue; today the crate only fixes the dependency direction of the workspace.
