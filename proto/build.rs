//! Generates the `portico.v1` code with protox (a pure-Rust protobuf compiler), so building needs
//! no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/portico/v1/discovery.proto",
        "proto/portico/v1/admin.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    // Snapshots and deltas are sent to many data planes: `Bytes` lets every stream share one
    // buffer instead of copying megabytes per data plane.
    tonic_prost_build::configure()
        .bytes(".portico.v1.Update.snapshot_json")
        .bytes(".portico.v1.Update.delta_json")
        .compile_fds(fds)?;

    // Test-only protos (the `testing` feature, enabled by dev-dependencies).
    if std::env::var_os("CARGO_FEATURE_TESTING").is_some() {
        let testing = ["proto/portico/testing/v1/echo.proto"];
        for p in testing {
            println!("cargo:rerun-if-changed={p}");
        }
        let fds = protox::compile(testing, ["proto"])?;
        tonic_prost_build::configure().compile_fds(fds)?;
    }
    Ok(())
}
