//! Unit tests of the balancer: wheel, picks around unhealthy targets, threshold, prober life.

use std::sync::Arc;
use std::time::Duration;

use portico_common::snapshot::{Target, Upstream};
use uuid::Uuid;

use super::hashing::RequestKey;
use super::*;

fn upstream(algorithm: &str, weights: &[u32], healthchecks: serde_json::Value) -> Upstream {
    Upstream {
        id: Uuid::nil(),
        name: "u".into(),
        algorithm: algorithm.into(),
        hash_on: "none".into(),
        hash_fallback: "none".into(),
        slots: 100,
        host_header: None,
        hash_inputs: Default::default(),
        healthchecks,
        targets: weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Target {
                id: Uuid::from_u128(i as u128 + 1),
                target: format!("10.0.0.{i}:80"),
                host: format!("10.0.0.{i}"),
                port: 80,
                weight,
                tags: vec![],
            })
            .collect(),
        tags: vec![],
    }
}

fn passive(http_failures: u32) -> serde_json::Value {
    serde_json::json!({"passive": {"unhealthy": {"http_failures": http_failures}}})
}

fn picks(b: &Balancer, n: usize) -> Vec<usize> {
    (0..n)
        .map(|_| {
            b.pick_for(&RequestKey::default(), 0)
                .map_or(usize::MAX, |p| p.index)
        })
        .collect()
}

#[test]
fn wheel_follows_weights_and_interleaves() {
    let wheel = build_wheel(&[300, 100]);
    assert_eq!(wheel.len(), 4);
    assert_eq!(wheel.iter().filter(|&&i| i == 0).count(), 3);
    // Smooth: the light target is not starved to the end of the cycle in a burst pattern.
    let wheel = build_wheel(&[5, 1, 1]);
    assert_eq!(wheel, vec![0, 0, 1, 0, 2, 0, 0]);
}

#[test]
fn huge_weights_are_scaled_not_dropped() {
    let wheel = build_wheel(&[65_535, 65_534, 1]);
    assert!(wheel.len() as u64 <= super::MAX_WHEEL + 3);
    assert!(
        wheel.contains(&2),
        "a weight-1 target keeps at least one slot"
    );
}

#[test]
fn unhealthy_targets_are_skipped_and_none_left_means_no_peer() {
    let b = Balancer::new(
        &upstream("round-robin", &[100, 100], passive(1)),
        &Pools::default(),
    );
    b.report(0, Outcome::Status(500));
    assert_eq!(picks(&b, 4), vec![1, 1, 1, 1]);
    b.report(1, Outcome::Status(503));
    assert!(b.pick().is_none());
    assert_eq!(b.status()["healthy"], false);
}

#[test]
fn least_connections_prefers_idle_targets_and_rotates_ties() {
    let b = Balancer::new(
        &upstream(
            "least-connections",
            &[100, 100, 100],
            serde_json::Value::Null,
        ),
        &Pools::default(),
    );
    // Idle targets tie: the picks rotate.
    let mut first = picks(&b, 3);
    first.sort_unstable();
    assert_eq!(first, vec![0, 1, 2]);
    // Held picks count: three held requests land on three targets.
    let key = RequestKey::default();
    let mut held: Vec<Picked<'_>> = (0..3).filter_map(|_| b.pick_for(&key, 0)).collect();
    let mut on: Vec<usize> = held.iter().map(|p| p.index).collect();
    on.sort_unstable();
    assert_eq!(on, vec![0, 1, 2]);
    // Finishing one makes its target the least loaded.
    let freed = held.remove(1);
    let index = freed.index;
    drop(freed);
    for _ in 0..3 {
        assert_eq!(b.pick_for(&key, 0).map(|p| p.index), Some(index));
    }
}

#[test]
fn threshold_takes_the_whole_upstream_out() {
    let mut hc = passive(1);
    hc["threshold"] = serde_json::json!(60);
    let b = Balancer::new(&upstream("round-robin", &[100, 100], hc), &Pools::default());
    assert!(b.pick().is_some());
    b.report(0, Outcome::Status(500));
    // 50% healthy < 60%: no peer although target 1 is fine.
    assert!(b.pick().is_none());
}

#[tokio::test]
async fn the_prober_stops_when_the_balancer_is_dropped() {
    let hc = serde_json::json!({"active": {"healthy": {"interval": 0.05}, "unhealthy": {"interval": 0.05, "tcp_failures": 1}}});
    let b = Balancer::new(&upstream("round-robin", &[100], hc), &Pools::default());
    let inner = Arc::downgrade(&b.inner);
    assert_eq!(inner.strong_count(), 2, "the prober holds the shared part");
    drop(b);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while inner.strong_count() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the prober outlived its balancer"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
