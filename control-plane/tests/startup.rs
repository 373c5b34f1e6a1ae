//! `run`'s refusals: exposed listeners without a token or TLS, a bad seed, unreadable TLS files.

use portico_control_plane::{run, ClusterTls, CpError, CpListeners, CpOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;

async fn listeners(admin: &str, cluster: &str) -> CpListeners {
    CpListeners {
        admin: TcpListener::bind(admin).await.unwrap(),
        cluster: TcpListener::bind(cluster).await.unwrap(),
    }
}

async fn run_once(opts: CpOptions, l: CpListeners) -> Result<(), CpError> {
    let (_tx, rx) = watch::channel(false);
    run(opts, l, rx).await
}

#[tokio::test]
async fn exposed_admin_without_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let opts = CpOptions {
        data_dir: dir.path().into(),
        ..Default::default()
    };
    let err = run_once(opts, listeners("0.0.0.0:0", "127.0.0.1:0").await)
        .await
        .unwrap_err();
    assert!(matches!(err, CpError::AdminWithoutToken { .. }), "{err}");
    assert!(err.to_string().contains("PORTICO_ADMIN_TOKEN"), "{err}");
}

#[tokio::test]
async fn exposed_cluster_without_tls_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let opts = CpOptions {
        data_dir: dir.path().into(),
        ..Default::default()
    };
    let err = run_once(opts, listeners("127.0.0.1:0", "0.0.0.0:0").await)
        .await
        .unwrap_err();
    assert!(matches!(err, CpError::ClusterWithoutTls { .. }), "{err}");
    assert!(err.to_string().contains("--cluster-cert"), "{err}");
}

#[tokio::test]
async fn insecure_allows_exposed_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let opts = CpOptions {
        data_dir: dir.path().into(),
        insecure: true,
        ..Default::default()
    };
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(run(opts, listeners("0.0.0.0:0", "0.0.0.0:0").await, rx));
    // It serves until told to stop; stopping returns Ok.
    tx.send_replace(true);
    tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn empty_token_invalid_seed_and_missing_tls_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = CpOptions {
        data_dir: dir.path().into(),
        ..Default::default()
    };
    let err = run_once(
        CpOptions {
            admin_token: Some(String::new()),
            ..base.clone()
        },
        listeners("127.0.0.1:0", "127.0.0.1:0").await,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CpError::EmptyAdminToken), "{err}");

    let err = run_once(
        CpOptions {
            seed: Some("_format_version: \"9.9\"\n".into()),
            ..base.clone()
        },
        listeners("127.0.0.1:0", "127.0.0.1:0").await,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CpError::Seed(_)), "{err}");

    let missing = dir.path().join("missing.pem");
    let err = run_once(
        CpOptions {
            cluster_tls: Some(ClusterTls {
                cert: missing.clone(),
                key: missing.clone(),
                client_ca: missing,
            }),
            ..base
        },
        listeners("127.0.0.1:0", "127.0.0.1:0").await,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CpError::ClusterTls(_)), "{err}");
    assert!(err.to_string().contains("missing.pem"), "{err}");
}
