//! Admin REST and gRPC on one listener, against a real control plane.

#[path = "support/harness.rs"]
mod harness;

use harness::{config, get_json, http, start, start_in, FakeDp};
use hyper::Method;
use portico_control_plane::CpOptions;
use portico_proto::v1::{
    ApplyRequest, FleetRequest, GetConfigRequest, HistoryRequest, RollbackRequest,
};
use serde_json::Value;

const WITH_SECRETS: &str = r#"
_format_version: "3.0"
services:
  - name: api
    url: http://127.0.0.1:9999
    routes:
      - name: api
        paths: [/api]
consumers:
  - username: alice
    keyauth_credentials:
      - key: alice-super-secret-key
    jwt_secrets:
      - key: alice-issuer
        secret: alice-jwt-hmac-secret
    basicauth_credentials:
      - username: alice
        password: alice-password
plugins:
  - name: key-auth
    config: { key_names: [x-api-key], hide_credentials: true }
"#;

const INVALID: &str = r#"
_format_version: "3.0"
services:
  - name: a
    url: "not a url"
    routes:
      - name: r
        paths: ["no-slash"]
"#;

#[tokio::test]
async fn post_config_creates_versions_and_refuses_invalid_with_every_error() {
    let cp = start(CpOptions::default()).await;
    let (status, body) = http(
        Method::POST,
        &cp.url("/config?group=edge"),
        Some(("text/yaml", &config(1))),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(created["group"], "edge");
    assert_eq!(created["version"], 1);
    assert_eq!(created["unchanged"], false);
    assert!(created["summary"].as_str().unwrap().contains("1 service"));
    let hash = created["hash"].as_str().unwrap().to_owned();

    // Same content again: no new version.
    let (status, body) = http(
        Method::POST,
        &cp.url("/config?group=edge"),
        Some(("text/yaml", &config(1))),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, 201);
    let again: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (again["version"].as_u64(), again["unchanged"].as_bool()),
        (Some(1), Some(true))
    );

    // Invalid: 400 with structured errors, and nothing changed.
    let (status, body) = http(
        Method::POST,
        &cp.url("/config?group=edge"),
        Some(("text/yaml", INVALID)),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "{body}");
    let refused: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(refused["message"], "declarative config is invalid");
    let errors = refused["errors"].as_array().unwrap();
    assert!(errors.len() >= 2, "every error is reported: {errors:?}");
    assert!(errors
        .iter()
        .all(|e| e["path"].is_string() && e["message"].is_string()));
    assert!(errors
        .iter()
        .any(|e| e["path"].as_str().unwrap().starts_with("services[0]")));
    let (_, live) = get_json(&cp.url("/config?group=edge"), &[]).await;
    assert_eq!(
        (live["version"].as_u64(), live["hash"].as_str()),
        (Some(1), Some(hash.as_str()))
    );
    assert_eq!(live["config"], config(1));

    // Kong's JSON envelope {"config": "<text>"}.
    let envelope = serde_json::json!({ "config": config(2) }).to_string();
    let (status, body) = http(
        Method::POST,
        &cp.url("/config?group=edge"),
        Some(("application/json", &envelope)),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["version"], 2);

    // History, newest first.
    let (status, hist) = get_json(&cp.url("/history?group=edge"), &[]).await;
    assert_eq!(status, 200);
    let versions: Vec<u64> = hist["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, vec![2, 1]);

    // Status lists the group.
    let (_, status_body) = get_json(&cp.url("/status"), &[]).await;
    assert_eq!(status_body["groups"][0]["group"], "edge");
    assert_eq!(status_body["groups"][0]["version"], 2);
    assert_eq!(status_body["data_planes"]["total"], 0);
    cp.stop().await;
}

#[tokio::test]
async fn unknown_paths_methods_and_groups() {
    let cp = start(CpOptions::default()).await;
    let (status, body) = get_json(&cp.url("/nope"), &[]).await;
    assert_eq!((status, body["message"].as_str()), (404, Some("Not found")));
    let (status, body) = http(Method::DELETE, &cp.url("/config"), None, &[])
        .await
        .unwrap();
    assert_eq!(status, 405);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["message"],
        "Method not allowed"
    );
    let (status, body) = get_json(&cp.url("/config?group=ghost"), &[]).await;
    assert_eq!(status, 404);
    assert!(body["message"].as_str().unwrap().contains("ghost"));
    let (status, _) = http(
        Method::POST,
        &cp.url("/config?group=Bad!"),
        Some(("text/yaml", &config(1))),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, 400);
    cp.stop().await;
}

#[tokio::test]
async fn listings_come_from_the_live_snapshot_without_secrets() {
    let cp = start(CpOptions::default()).await;
    let (status, body) = http(
        Method::POST,
        &cp.url("/config"),
        Some(("text/yaml", WITH_SECRETS)),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    for (path, n) in [
        ("/services", 1),
        ("/routes", 1),
        ("/consumers", 1),
        ("/plugins", 1),
        ("/upstreams", 0),
    ] {
        let (status, list) = get_json(&cp.url(path), &[]).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(list["data"].as_array().unwrap().len(), n, "{path}: {list}");
    }
    let (_, consumers) = get_json(&cp.url("/consumers?group=default"), &[]).await;
    let alice = &consumers["data"][0];
    assert_eq!(alice["username"], "alice");
    assert_eq!(
        alice["keyauth_credentials"].as_array().unwrap().len(),
        1,
        "credential listed"
    );
    let mut everything = String::new();
    for path in ["/consumers", "/plugins", "/config"] {
        everything.push_str(&http(Method::GET, &cp.url(path), None, &[]).await.unwrap().1);
    }
    // No plugin Portico runs has a secret in its config yet; `redact_snapshot`'s unit test
    // covers plugin configs.
    for secret in ["alice-super-secret-key", "alice-jwt-hmac-secret"] {
        let in_listings = everything.replace(WITH_SECRETS, "");
        let in_listings = in_listings.replace(&serde_json::to_string(WITH_SECRETS).unwrap(), "");
        assert!(!in_listings.contains(secret), "{secret} leaked");
    }
    let (_, consumers_raw) = http(Method::GET, &cp.url("/consumers"), None, &[])
        .await
        .unwrap();
    assert!(
        !consumers_raw.contains("\"password\""),
        "basic-auth hash leaked: {consumers_raw}"
    );
    cp.stop().await;
}

#[tokio::test]
async fn token_is_required_for_rest_and_grpc_when_set() {
    let cp = start(CpOptions {
        admin_token: Some("t0ken".into()),
        ..Default::default()
    })
    .await;
    let (status, body) = get_json(&cp.url("/status"), &[]).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (401, Some("Unauthorized"))
    );
    let (status, _) = get_json(&cp.url("/status"), &[("authorization", "Bearer wrong")]).await;
    assert_eq!(status, 401);
    let (status, _) = http(
        Method::POST,
        &cp.url("/config"),
        Some(("text/yaml", &config(1))),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, 401);
    let (status, _) = get_json(&cp.url("/status"), &[("authorization", "Bearer t0ken")]).await;
    assert_eq!(status, 200);

    let mut admin = cp.admin_client().await;
    let err = admin.fleet(FleetRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(FleetRequest::default());
    req.metadata_mut()
        .insert("authorization", "Bearer t0ken".parse().unwrap());
    admin.fleet(req).await.expect("token accepted");
    cp.stop().await;
}

#[tokio::test]
async fn grpc_apply_get_history_rollback_and_not_found() {
    let cp = start(CpOptions::default()).await;
    let mut admin = cp.admin_client().await;
    let apply = |text: String| ApplyRequest {
        group: "web".into(),
        config_text: text,
    };
    let r1 = admin.apply(apply(config(1))).await.unwrap().into_inner();
    let r2 = admin.apply(apply(config(2))).await.unwrap().into_inner();
    assert!(r1.accepted && r2.accepted);
    assert_eq!((r1.version, r2.version), (1, 2));

    let bad = admin
        .apply(apply(INVALID.into()))
        .await
        .unwrap()
        .into_inner();
    assert!(!bad.accepted);
    assert!(bad.errors.len() >= 2, "{:?}", bad.errors);

    let rb = admin
        .rollback(RollbackRequest {
            group: "web".into(),
            version: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(rb.accepted);
    assert_eq!(rb.version, 3, "rollback is a new version");
    assert_eq!(rb.hash, r1.hash);
    let hist = admin
        .history(HistoryRequest {
            group: "web".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let lines: Vec<(u64, &str)> = hist
        .entries
        .iter()
        .map(|e| (e.version, e.origin.as_str()))
        .collect();
    assert_eq!(
        lines,
        vec![(3, "rollback to 1"), (2, "apply"), (1, "apply")]
    );

    let live = admin
        .get_config(GetConfigRequest {
            group: "web".into(),
            version: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (live.version, live.config_text.as_str()),
        (3, config(1).as_str())
    );
    let old = admin
        .get_config(GetConfigRequest {
            group: "web".into(),
            version: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(old.config_text, config(2));
    assert!(!old.snapshot_json.is_empty());

    for (group, version) in [("web", 99), ("ghost", 0), ("ghost", 1)] {
        let err = admin
            .get_config(GetConfigRequest {
                group: group.into(),
                version,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{group} {version}");
        assert!(err.message().contains(group), "{}", err.message());
    }
    let err = admin
        .rollback(RollbackRequest {
            group: "web".into(),
            version: 42,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = admin
        .history(HistoryRequest {
            group: "ghost".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    cp.stop().await;
}

#[tokio::test]
async fn data_planes_endpoint_shows_connected_nodes() {
    let cp = start(CpOptions::default()).await;
    let (status, _) = http(
        Method::POST,
        &cp.url("/config"),
        Some(("text/yaml", &config(1))),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, 201);
    let mut dp = FakeDp::plain(&cp, "dp-rest", "default", (0, "")).await;
    let u = dp.update().await;
    dp.ack(&u).await;
    let node = harness::eventually("node in sync over REST", || async {
        let (_, body) = get_json(&cp.url("/clustering/data-planes"), &[]).await;
        body["data"]
            .as_array()
            .and_then(|d| d.iter().find(|n| n["id"] == "dp-rest").cloned())
            .filter(|n| n["state"] == "in_sync")
    })
    .await;
    assert_eq!(node["group"], "default");
    assert_eq!(node["serving_version"], 1);
    assert_eq!(node["config_hash"], u.hash.as_str());
    assert_eq!(node["ip"], "127.0.0.1");
    let (_, status_body) = get_json(&cp.url("/status"), &[]).await;
    assert_eq!(status_body["data_planes"]["in_sync"], 1);
    cp.stop().await;
}

#[tokio::test]
async fn versions_survive_a_restart_and_seed_applies_only_once() {
    let cp = start(CpOptions {
        seed: Some(config(1)),
        ..Default::default()
    })
    .await;
    let (_, live) = get_json(&cp.url("/config"), &[]).await;
    assert_eq!(live["version"], 1);
    let (status, _) = http(
        Method::POST,
        &cp.url("/config?group=other"),
        Some(("text/yaml", &config(2))),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, 201);
    let dir = cp.stop().await;

    // Restart with a different seed: "default" already has a config, so the seed is ignored.
    let cp = start_in(
        dir,
        CpOptions {
            seed: Some(config(5)),
            ..Default::default()
        },
    )
    .await;
    let (_, live) = get_json(&cp.url("/config"), &[]).await;
    assert_eq!(
        (live["version"].as_u64(), live["config"].as_str()),
        (Some(1), Some(config(1).as_str()))
    );
    let (_, created) = get_json(&cp.url("/status"), &[]).await;
    assert_eq!(created["groups"].as_array().unwrap().len(), 2);
    let (_, body) = http(
        Method::POST,
        &cp.url("/config"),
        Some(("text/yaml", &config(3))),
        &[],
    )
    .await
    .unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["version"], 3, "the counter survived the restart");
    cp.stop().await;
}
