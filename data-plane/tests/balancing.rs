//! Load balancing over real in-process upstreams (KONG.md §1.5): weighted round-robin,
//! least-connections and consistent-hashing on header, query argument and cookie.

#[path = "support/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use harness::{get, Gateway, Got, Upstream};
use http::Response;
use http_body_util::Full;

/// A config with one upstream `pool` (`upstream_extra`: more upstream fields, indented by 4)
/// holding `targets` (address, weight), and a catch-all service on it.
fn config(upstream_extra: &str, targets: &[(SocketAddr, u32)]) -> String {
    let mut y = String::from("_format_version: \"3.0\"\nupstreams:\n  - name: pool\n");
    y.push_str(upstream_extra);
    y.push_str("    targets:\n");
    for (addr, weight) in targets {
        y.push_str(&format!(
            "      - target: {addr}\n        weight: {weight}\n"
        ));
    }
    y.push_str("services:\n  - name: s\n    host: pool\n    routes:\n      - paths: [\"/\"]\n");
    y
}

fn name(got: &Got) -> String {
    assert_eq!(got.status, 200, "{}", got.body);
    got.headers["x-upstream"]
        .to_str()
        .expect("ascii")
        .to_owned()
}

#[tokio::test]
async fn round_robin_follows_the_weights_exactly() {
    let (a, b, c, z) = (
        Upstream::echo("a").await,
        Upstream::echo("b").await,
        Upstream::echo("c").await,
        Upstream::echo("z").await,
    );
    let gw = Gateway::start(&config(
        "",
        &[(a.addr, 300), (b.addr, 200), (c.addr, 100), (z.addr, 0)],
    ))
    .await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..60 {
        *counts
            .entry(name(&get(&gw.url("/"), &[]).await))
            .or_default() += 1;
    }
    assert_eq!(counts.get("a"), Some(&30));
    assert_eq!(counts.get("b"), Some(&20));
    assert_eq!(counts.get("c"), Some(&10));
    assert_eq!(z.count(), 0, "weight 0 is never chosen");
    gw.stop().await;
}

#[tokio::test]
async fn least_connections_sends_fewer_requests_to_a_slow_target() {
    let slow = Upstream::start(|_| async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let mut r = Response::new(Full::new(Bytes::from("slow")));
        r.headers_mut()
            .insert("x-upstream", http::HeaderValue::from_static("slow"));
        r
    })
    .await;
    let fast = Upstream::echo("fast").await;
    let gw = Gateway::start(&config(
        "    algorithm: least-connections\n",
        &[(slow.addr, 100), (fast.addr, 100)],
    ))
    .await;
    let url = gw.url("/");
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                for _ in 0..15 {
                    assert_eq!(get(&url, &[]).await.status, 200);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    assert_eq!(slow.count() + fast.count(), 60);
    // Round-robin would give each 30; the slow one holds its requests, so it gets far fewer.
    assert!(
        slow.count() * 3 < fast.count(),
        "slow {} fast {}",
        slow.count(),
        fast.count()
    );
    gw.stop().await;
}

#[tokio::test]
async fn consistent_hashing_sticks_spreads_and_falls_back() {
    let ups = [
        Upstream::echo("a").await,
        Upstream::echo("b").await,
        Upstream::echo("c").await,
    ];
    let zero = Upstream::echo("z").await;
    let gw = Gateway::start(&config(
        "    hash_on: header\n    hash_on_header: X-User\n    hash_fallback: query_arg\n    hash_fallback_query_arg: user\n    slots: 1000\n",
        &[
            (ups[0].addr, 100),
            (ups[1].addr, 100),
            (ups[2].addr, 100),
            (zero.addr, 0),
        ],
    ))
    .await;
    let mut used = std::collections::HashSet::new();
    for k in 0..30 {
        let key = format!("user-{k}");
        let first = name(&get(&gw.url("/"), &[("x-user", &key)]).await);
        for _ in 0..3 {
            let again = name(&get(&gw.url("/"), &[("x-user", &key)]).await);
            assert_eq!(again, first, "same key, same target ({key})");
        }
        // No header: the fallback (the query argument) hashes the same value the same way.
        let fallback = name(&get(&gw.url(&format!("/x?user={key}")), &[]).await);
        assert_eq!(fallback, first, "fallback for {key}");
        used.insert(first);
    }
    assert_eq!(used.len(), 3, "30 keys spread over every target: {used:?}");
    assert_eq!(zero.count(), 0, "weight 0 is never chosen");
    // Neither value: round-robin, still never the weight-0 target.
    for _ in 0..6 {
        name(&get(&gw.url("/"), &[]).await);
    }
    assert_eq!(zero.count(), 0);
    gw.stop().await;
}

#[tokio::test]
async fn hashing_on_the_consumer_sticks_per_consumer() {
    let ups = [
        Upstream::echo("a").await,
        Upstream::echo("b").await,
        Upstream::echo("c").await,
    ];
    let mut yaml = config(
        "    hash_on: consumer\n    hash_fallback: ip\n",
        &[(ups[0].addr, 100), (ups[1].addr, 100), (ups[2].addr, 100)],
    );
    yaml.push_str("    plugins:\n      - name: key-auth\nconsumers:\n");
    for k in 0..20 {
        yaml.push_str(&format!(
            "  - username: u{k}\n    keyauth_credentials:\n      - key: key-{k}\n"
        ));
    }
    let gw = Gateway::start(&yaml).await;
    let mut used = std::collections::HashSet::new();
    for k in 0..20 {
        let key = format!("key-{k}");
        let first = name(&get(&gw.url("/"), &[("apikey", &key)]).await);
        for _ in 0..2 {
            assert_eq!(name(&get(&gw.url("/"), &[("apikey", &key)]).await), first);
        }
        used.insert(first);
    }
    assert!(used.len() >= 2, "20 consumers on one target: {used:?}");
    gw.stop().await;
}

#[tokio::test]
async fn hashing_on_a_cookie_sets_it_when_missing() {
    let (a, b) = (Upstream::echo("a").await, Upstream::echo("b").await);
    let gw = Gateway::start(&config(
        "    hash_on: cookie\n    hash_on_cookie: sticky\n    hash_on_cookie_path: /app\n",
        &[(a.addr, 100), (b.addr, 100)],
    ))
    .await;
    let got = get(&gw.url("/"), &[]).await;
    let first = name(&got);
    let set = got.headers["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        set.starts_with("sticky=") && set.ends_with("; Path=/app"),
        "{set}"
    );
    let cookie = set.split(';').next().expect("pair").to_owned();
    for _ in 0..10 {
        let got = get(&gw.url("/"), &[("cookie", &format!("other=1; {cookie}"))]).await;
        assert_eq!(name(&got), first, "the cookie sticks");
        assert!(!got.headers.contains_key("set-cookie"));
    }
    gw.stop().await;
}

#[tokio::test]
async fn status_lists_the_upstreams_targets() {
    let (a, z) = (Upstream::echo("a").await, Upstream::echo("z").await);
    let gw = Gateway::start(&config("", &[(a.addr, 100), (z.addr, 0)])).await;
    let got = get(&format!("http://{}/status", gw.status), &[]).await;
    let pool = &got.json()["upstreams"]["pool"];
    assert_eq!(pool["algorithm"], "round-robin");
    let targets = pool["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 2, "{pool}");
    assert_eq!(targets[0]["address"], a.addr.to_string());
    assert_eq!(targets[0]["weight"], 100);
    // No check configured: Kong calls this HEALTHCHECKS_OFF.
    assert_eq!(targets[0]["health"], "healthchecks_off");
    assert_eq!(targets[1]["health"], "disabled");
    assert_eq!(targets[0]["counters"]["http_failures"], 0);
    gw.stop().await;
}
