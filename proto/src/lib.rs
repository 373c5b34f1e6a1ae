//! Portico's wire types: the `portico.v1` protobuf package (discovery stream messages and
//! service), generated at build time by protox + tonic-prost-build without a system `protoc`.
//!
//! This crate holds wire types only; it must not depend on any other Portico crate. Config
//! meaning lives in `portico-common`, whose serde types the envelope carries.

/// The `portico.v1` package.
pub mod v1 {
    #![allow(missing_docs, clippy::all, unreachable_pub)]
    tonic::include_proto!("portico.v1");
}

/// Test services (the `testing` feature): an `Echo` service with the four call kinds.
#[cfg(feature = "testing")]
pub mod testing {
    #![allow(missing_docs, clippy::all, unreachable_pub)]
    tonic::include_proto!("portico.testing.v1");
}
