//! The discovery protocol against a real control plane over real sockets.

#[path = "support/harness.rs"]
mod harness;

use harness::{config, start, Cp, FakeDp};
use portico_control_plane::CpOptions;
use portico_proto::v1::{ApplyRequest, FleetRequest};

async fn apply(cp: &Cp, group: &str, text: String) -> (u64, String) {
    let mut admin = cp.admin_client().await;
    let resp = admin
        .apply(ApplyRequest {
            group: group.into(),
            config_text: text,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.accepted, "{:?}", resp.errors);
    (resp.version, resp.hash)
}

#[tokio::test]
async fn hello_gets_the_live_version_and_ack_puts_the_node_in_sync() {
    let cp = start(CpOptions::default()).await;
    let (v1, h1) = apply(&cp, "default", config(1)).await;
    // An empty group in Hello means "default".
    let mut dp = FakeDp::plain(&cp, "node-a", "", (0, "")).await;
    let u = dp.update().await;
    assert_eq!(
        (u.version, u.hash.as_str(), u.group.as_str()),
        (v1, h1.as_str(), "default")
    );
    let snapshot: portico_common::snapshot::Snapshot =
        serde_json::from_slice(&u.snapshot_json).expect("snapshot JSON decodes");
    assert_eq!(snapshot.hash, h1);
    assert_eq!(cp.node("node-a").await.unwrap().state, "applying");

    dp.ack(&u).await;
    let node = cp
        .wait_node("node-a", "node in sync", |n| n.state == "in_sync")
        .await;
    assert_eq!(
        (node.serving_version, node.serving_hash.as_str()),
        (v1, h1.as_str())
    );
    assert_eq!(node.group, "default");
    assert_eq!(node.build_version, "test-1.0");
    assert_eq!(node.last_apply_micros, 1234);
    assert!(node.address.starts_with("127.0.0.1:"), "{}", node.address);

    // A new apply reaches the connected node.
    let (v2, _) = apply(&cp, "default", config(2)).await;
    let u2 = dp.update().await;
    assert_eq!(u2.version, v2);
    assert_ne!(u2.nonce, u.nonce, "nonces are unique");
    cp.stop().await;
}

#[tokio::test]
async fn resume_with_the_live_version_sends_nothing() {
    let cp = start(CpOptions::default()).await;
    let (v1, h1) = apply(&cp, "edge", config(1)).await;
    let mut dp = FakeDp::plain(&cp, "node-r", "edge", (v1, &h1)).await;
    dp.assert_no_update(&cp, 7).await;
    assert_eq!(cp.node("node-r").await.unwrap().state, "in_sync");
    cp.stop().await;
}

#[tokio::test]
async fn a_group_without_config_sends_nothing_until_applied() {
    let cp = start(CpOptions::default()).await;
    let mut dp = FakeDp::plain(&cp, "node-e", "empty", (0, "")).await;
    dp.assert_no_update(&cp, 3).await;
    let (v, _) = apply(&cp, "empty", config(1)).await;
    assert_eq!(dp.update().await.version, v);
    cp.stop().await;
}

#[tokio::test]
async fn versions_applied_while_one_is_in_flight_coalesce_to_the_newest() {
    let cp = start(CpOptions::default()).await;
    let (v1, _) = apply(&cp, "default", config(1)).await;
    let mut dp = FakeDp::plain(&cp, "node-c", "default", (0, "")).await;
    let first = dp.update().await;
    assert_eq!(first.version, v1);
    apply(&cp, "default", config(2)).await;
    apply(&cp, "default", config(3)).await;
    let (v4, h4) = apply(&cp, "default", config(4)).await;
    dp.ack(&first).await;
    let next = dp.update().await;
    assert_eq!(
        (next.version, next.hash.as_str()),
        (v4, h4.as_str()),
        "only the newest"
    );
    dp.ack(&next).await;
    cp.wait_node("node-c", "in sync at v4", |n| {
        n.state == "in_sync" && n.serving_version == v4
    })
    .await;
    dp.assert_no_update(&cp, 11).await;
    cp.stop().await;
}

#[tokio::test]
async fn a_nacked_version_is_parked_until_a_newer_one_exists() {
    let cp = start(CpOptions::default()).await;
    let (v1, h1) = apply(&cp, "default", config(1)).await;
    let mut dp = FakeDp::plain(&cp, "node-n", "default", (0, "")).await;
    let u1 = dp.update().await;
    dp.ack(&u1).await;
    cp.wait_node("node-n", "in sync", |n| n.state == "in_sync")
        .await;

    let (v2, _) = apply(&cp, "default", config(2)).await;
    let u2 = dp.update().await;
    dp.nack(&u2, "plugins[0]", "plugin 'x' is not in this build")
        .await;
    let node = cp
        .wait_node("node-n", "nacked", |n| n.state == "nacked")
        .await;
    assert_eq!(node.nacked_version, v2);
    assert_eq!(node.nack_errors.len(), 1);
    assert_eq!(node.nack_errors[0].path, "plugins[0]");
    assert_eq!(
        node.nack_errors[0].message,
        "plugin 'x' is not in this build"
    );
    assert_eq!(
        (node.serving_version, node.serving_hash.as_str()),
        (v1, h1.as_str())
    );
    // Not resent on this stream.
    dp.assert_no_update(&cp, 21).await;

    // Nor after a reconnect of the same node that still serves v1.
    dp.close();
    cp.wait_node("node-n", "disconnected", |n| n.state == "disconnected")
        .await;
    let mut dp = FakeDp::plain(&cp, "node-n", "default", (v1, &h1)).await;
    dp.assert_no_update(&cp, 22).await;
    let node = cp.node("node-n").await.unwrap();
    assert_eq!(node.state, "nacked", "errors stay visible after reconnect");
    assert_eq!(node.nacked_version, v2);

    // A newer version is sent, and its ack clears the refusal.
    let (v3, _) = apply(&cp, "default", config(3)).await;
    let u3 = dp.update().await;
    assert_eq!(u3.version, v3);
    dp.ack(&u3).await;
    let node = cp
        .wait_node("node-n", "in sync at v3", |n| n.state == "in_sync")
        .await;
    assert_eq!(node.nacked_version, 0);
    assert!(node.nack_errors.is_empty());
    cp.stop().await;
}

#[tokio::test]
async fn a_parked_version_gets_a_fresh_chance_on_a_different_build() {
    let cp = start(CpOptions::default()).await;
    let (v1, _) = apply(&cp, "default", config(1)).await;
    let mut dp = FakeDp::plain(&cp, "node-b", "default", (0, "")).await;
    let u1 = dp.update().await;
    dp.nack(&u1, "plugins[0].name", "unknown plugin").await;
    cp.wait_node("node-b", "nacked", |n| n.state == "nacked")
        .await;
    dp.close();
    cp.wait_node("node-b", "disconnected", |n| n.state == "disconnected")
        .await;
    // The same build again: still parked.
    let mut dp = FakeDp::plain(&cp, "node-b", "default", (0, "")).await;
    dp.assert_no_update(&cp, 31).await;
    dp.close();
    cp.wait_node("node-b", "disconnected", |n| n.state == "disconnected")
        .await;
    // An upgraded build may run it: resent.
    let mut dp = FakeDp::plain_build(&cp, "node-b", "default", (0, ""), "test-2.0").await;
    assert_eq!(dp.update().await.version, v1);
    cp.stop().await;
}

#[tokio::test]
async fn unknown_nonces_are_ignored_and_disconnect_is_recorded() {
    let cp = start(CpOptions::default()).await;
    let (v1, _) = apply(&cp, "default", config(1)).await;
    let mut dp = FakeDp::plain(&cp, "node-u", "default", (0, "")).await;
    let mut u = dp.update().await;
    let real_nonce = std::mem::replace(&mut u.nonce, "bogus".into());
    dp.ack(&u).await;
    let node = dp.barrier(&cp, 5).await;
    assert_eq!(
        node.state, "applying",
        "an unknown nonce does not complete the update"
    );
    u.nonce = real_nonce;
    dp.ack(&u).await;
    cp.wait_node("node-u", "in sync", |n| {
        n.state == "in_sync" && n.serving_version == v1
    })
    .await;

    dp.close();
    let node = cp
        .wait_node("node-u", "disconnected", |n| n.state == "disconnected")
        .await;
    assert!(!node.last_seen.is_empty());
    cp.stop().await;
}

#[tokio::test]
async fn hello_is_required_first_and_fleet_filters_by_group() {
    let cp = start(CpOptions::default()).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", cp.cluster))
        .unwrap()
        .connect()
        .await
        .unwrap();
    // Invalid group name: refused with a clear status.
    let err = FakeDp::connect(channel.clone(), "n1", "Bad Group", (0, ""))
        .await
        .err()
        .expect("invalid group refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = FakeDp::connect(channel.clone(), "", "default", (0, ""))
        .await
        .err()
        .expect("empty node id refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let _a = FakeDp::connect(channel.clone(), "in-a", "a", (0, ""))
        .await
        .unwrap();
    let _b = FakeDp::connect(channel.clone(), "in-b", "b", (0, ""))
        .await
        .unwrap();
    cp.wait_node("in-b", "registered", |_| true).await;
    let mut admin = cp.admin_client().await;
    let fleet = admin
        .fleet(FleetRequest { group: "a".into() })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = fleet
        .data_planes
        .iter()
        .map(|d| d.node_id.as_str())
        .collect();
    assert_eq!(ids, vec!["in-a"]);
    cp.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let cp = start(CpOptions::default()).await;
    apply(&cp, "default", config(1)).await;
    let mut dp = FakeDp::plain(&cp, "node-s", "default", (0, "")).await;
    let _ = dp.update().await;
    // `stop` fails the test if run() does not return while a stream is open.
    cp.stop().await;
}

/// `services` services of one route each; route 0's path carries `variant`.
fn wide(services: u32, variant: u32) -> String {
    let mut s = String::from("_format_version: \"3.0\"\nservices:\n");
    for i in 0..services {
        let path = if i == 0 {
            format!("/r0-{variant}")
        } else {
            format!("/r{i}")
        };
        s.push_str(&format!(
            "  - name: svc{i}\n    url: http://127.0.0.1:{port}\n    routes:\n      - name: r{i}\n        paths: [{path}]\n",
            port = 9000 + i
        ));
    }
    s
}

#[tokio::test]
async fn a_node_on_the_previous_version_gets_only_the_change_and_can_ask_for_the_whole() {
    use portico_common::delta::Delta;
    use portico_common::digest::Digests;
    use portico_common::snapshot::Snapshot;

    let cp = start(CpOptions::default()).await;
    let (v1, h1) = apply(&cp, "default", wide(4, 1)).await;
    let mut dp = FakeDp::plain(&cp, "node-d", "", (0, "")).await;
    let u1 = dp.update().await;
    assert!(
        u1.delta_json.is_empty(),
        "a node serving nothing gets the whole snapshot"
    );
    let base: Snapshot = serde_json::from_slice(&u1.snapshot_json).unwrap();
    dp.ack(&u1).await;
    cp.wait_node("node-d", "in sync on v1", |n| n.serving_version == v1)
        .await;

    // One route changes: the node serving v1 gets a delta of that route alone.
    let (v2, h2) = apply(&cp, "default", wide(4, 2)).await;
    let u2 = dp.update().await;
    assert_eq!(
        (
            u2.version,
            u2.base_version,
            u2.base_hash.as_str(),
            u2.hash.as_str()
        ),
        (v2, v1, h1.as_str(), h2.as_str())
    );
    assert!(
        u2.snapshot_json.is_empty(),
        "a delta carries no whole snapshot"
    );
    let delta: Delta = serde_json::from_slice(&u2.delta_json).unwrap();
    assert_eq!(delta.len(), 1, "{delta:?}");
    assert_eq!(delta.routes.upsert[0].paths, ["/r0-2"]);
    let (next, _) = delta.apply(&base, &Digests::of(&base)).unwrap();
    assert_eq!(next.hash, h2, "the delta applied to v1 is exactly v2");

    // The node cannot use it: that is no refusal; the whole snapshot follows at once.
    dp.nack_resync(&u2).await;
    let u3 = dp.update().await;
    assert_eq!((u3.version, u3.hash.as_str()), (v2, h2.as_str()));
    assert!(u3.delta_json.is_empty());
    let whole: Snapshot = serde_json::from_slice(&u3.snapshot_json).unwrap();
    assert_eq!(whole.hash, h2);
    assert_ne!(cp.node("node-d").await.unwrap().state, "nacked");
    dp.ack(&u3).await;
    cp.wait_node("node-d", "in sync on v2", |n| n.serving_version == v2)
        .await;

    // A node that serves an older version than the delta's base gets the whole snapshot.
    let (v3, _) = apply(&cp, "default", wide(4, 3)).await;
    let mut old = FakeDp::plain(&cp, "node-old", "", (v1, &h1)).await;
    let u = old.update().await;
    assert_eq!(u.version, v3);
    assert!(u.delta_json.is_empty() && !u.snapshot_json.is_empty());
    // ... while the node on v2 gets the delta.
    let u4 = dp.update().await;
    assert_eq!((u4.version, u4.base_version), (v3, v2));
    assert!(!u4.delta_json.is_empty());
    cp.stop().await;
}

#[tokio::test]
async fn each_node_shows_its_propagation_time_and_how_far_behind_it_is() {
    let cp = start(CpOptions::default()).await;
    let (v1, _) = apply(&cp, "default", config(1)).await;

    // A node joining after v1 was applied is out of sync since it joined, not since v1.
    let mut dp = FakeDp::plain(&cp, "node-l", "default", (0, "")).await;
    let u1 = dp.update().await;
    let node = cp.node("node-l").await.unwrap();
    assert_eq!(node.state, "applying");
    assert_eq!(node.behind_versions, 1, "{node:?}");
    assert_eq!(node.out_of_sync_since, node.connected_since, "{node:?}");
    assert_eq!(node.propagation_micros, 0, "nothing ACKed yet: {node:?}");

    // In sync: a propagation time, nothing behind.
    dp.ack(&u1).await;
    let node = cp
        .wait_node("node-l", "in sync", |n| n.state == "in_sync")
        .await;
    assert_eq!(node.serving_version, v1);
    assert!(node.propagation_micros > 0, "{node:?}");
    assert_eq!(
        (
            node.behind_versions,
            node.out_of_sync_since.as_str(),
            node.out_of_sync_for_ms
        ),
        (0, "", 0),
        "{node:?}"
    );
    let propagated = node.propagation_micros;

    // v2 goes out; v3 is applied while v2 is in flight; the node refuses both.
    apply(&cp, "default", config(2)).await;
    let u2 = dp.update().await;
    let (v3, _) = apply(&cp, "default", config(3)).await;
    dp.nack(&u2, "plugins[0]", "plugin 'x' is not in this build")
        .await;
    let u3 = dp.update().await;
    assert_eq!(u3.version, v3);
    dp.nack(
        &u3,
        "services[0].plugins[1].name",
        "plugin 'y' is not in this build",
    )
    .await;
    let node = cp
        .wait_node("node-l", "nacked", |n| n.state == "nacked")
        .await;
    assert_eq!(node.nacked_version, v3);
    assert_eq!(node.behind_versions, 2, "v2 and v3 are missing: {node:?}");
    // Out of sync since the first version it missed was applied.
    let mut admin = cp.admin_client().await;
    let history = admin
        .history(portico_proto::v1::HistoryRequest {
            group: "default".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let v2_applied = &history.entries[1].applied_at;
    assert_eq!(&node.out_of_sync_since, v2_applied, "{node:?}");
    // Still serving v1, with v1's propagation time.
    assert_eq!(node.serving_version, v1);
    assert_eq!(node.propagation_micros, propagated);

    // The REST view says the same, errors with their paths.
    let (status, body) = harness::get_json(&cp.url("/clustering/data-planes"), &[]).await;
    assert_eq!(status, 200);
    let n = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == "node-l")
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(n["state"], "nacked");
    assert_eq!(n["nacked_version"], v3);
    assert_eq!(
        n["nack_errors"],
        serde_json::json!([{
            "path": "services[0].plugins[1].name",
            "message": "plugin 'y' is not in this build"
        }])
    );
    assert_eq!(n["behind_versions"], 2);
    assert_eq!(n["out_of_sync_since"], v2_applied.as_str());
    assert!(n["out_of_sync_for_ms"].as_u64().is_some(), "{n}");
    assert!(n["propagation_ms"].as_f64().unwrap() > 0.0, "{n}");

    // A reconnect serving the same version keeps its propagation time.
    dp.close();
    cp.wait_node("node-l", "disconnected", |n| n.state == "disconnected")
        .await;
    let v1_hash = node.serving_hash.clone();
    let dp = FakeDp::plain(&cp, "node-l", "default", (v1, &v1_hash)).await;
    let node = dp.barrier(&cp, 41).await;
    assert_eq!(node.propagation_micros, propagated, "{node:?}");
    assert_eq!(node.out_of_sync_since, *v2_applied, "{node:?}");
    cp.stop().await;
}
