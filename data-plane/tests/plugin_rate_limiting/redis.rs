//! `policy: redis` against real `redis-server` processes, each started by its test on a free
//! port (never 6379) and killed when the test ends.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::harness::{get, Upstream};
use super::{burst, header, num, statuses};

/// A throwaway redis-server.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a free port and waits (at most 10 s) until it answers PING.
    pub async fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (see .ci/run)");
        let server = RedisServer {
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.pings().await {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    async fn pings(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        if s.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        let read = tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut buf)).await;
        matches!(read, Ok(Ok(_))) && &buf == b"+PONG\r\n"
    }

    /// Kills the server now.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn config(port: u16, limits: &str, extra: &str) -> String {
    format!(
        "{{ {limits}, limit_by: service, policy: redis, \
         redis: {{ host: 127.0.0.1, port: {port}, timeout: 300 }}{extra} }}"
    )
}

#[tokio::test]
async fn redis_kongs_sequence() {
    let redis = RedisServer::start().await;
    let up = Upstream::echo("up").await;
    let gw = super::gateway(&up, &config(redis.port, "hour: 6", ""), "", "").await;
    let mut remaining = Vec::new();
    for i in 0..7 {
        let got = get(&gw.url("/"), &[]).await;
        assert_eq!(got.status, if i < 6 { 200 } else { 429 }, "{}", got.body);
        assert_eq!(num(&got, "x-ratelimit-limit-hour"), 6);
        remaining.push(num(&got, "x-ratelimit-remaining-hour"));
    }
    assert_eq!(remaining, [5, 4, 3, 2, 1, 0, 0]);
    assert!(num(&get(&gw.url("/"), &[]).await, "retry-after") <= 3600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_exact_under_50_concurrent_clients() {
    let redis = RedisServer::start().await;
    let up = Upstream::echo("up").await;
    let gw = super::gateway(&up, &config(redis.port, "hour: 20, day: 100", ""), "", "").await;
    let got = burst(&gw.url("/"), 50, &[]).await;
    assert_eq!(statuses(&got), (20, 30));
    assert_eq!(up.count(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_sharing_redis_hold_one_limit() {
    let redis = RedisServer::start().await;
    let up = Upstream::echo("up").await;
    let cfg = config(redis.port, "hour: 25", "");
    let (a, b) = (
        super::gateway(&up, &cfg, "", "").await,
        super::gateway(&up, &cfg, "", "").await,
    );
    let (ua, ub) = (a.url("/"), b.url("/"));
    let (ga, gb) = tokio::join!(burst(&ua, 30, &[]), burst(&ub, 30, &[]));
    let (oka, _) = statuses(&ga);
    let (okb, _) = statuses(&gb);
    assert_eq!(oka + okb, 25, "a admitted {oka}, b {okb}");
    assert_eq!(up.count(), 25);
}

#[tokio::test]
async fn redis_down_fault_tolerant_passes_without_headers() {
    let mut redis = RedisServer::start().await;
    let up = Upstream::echo("up").await;
    let gw = super::gateway(&up, &config(redis.port, "hour: 5", ""), "", "").await;
    let got = get(&gw.url("/"), &[]).await;
    assert_eq!(num(&got, "x-ratelimit-remaining-hour"), 4);
    redis.kill();
    for _ in 0..10 {
        let started = Instant::now();
        let got = get(&gw.url("/"), &[]).await;
        assert_eq!(got.status, 200, "{}", got.body);
        assert!(header(&got, "x-ratelimit-limit-hour").is_none());
        assert!(header(&got, "ratelimit-remaining").is_none());
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    assert_eq!(up.count(), 11);
}

#[tokio::test]
async fn redis_down_not_fault_tolerant_is_500() {
    let mut redis = RedisServer::start().await;
    let up = Upstream::echo("up").await;
    let cfg = config(redis.port, "hour: 5", ", fault_tolerant: false");
    let gw = super::gateway(&up, &cfg, "", "").await;
    assert_eq!(get(&gw.url("/"), &[]).await.status, 200);
    redis.kill();
    let got = get(&gw.url("/"), &[]).await;
    assert_eq!(got.status, 500);
    assert_eq!(got.json()["message"], "An unexpected error occurred");
    assert_eq!(up.count(), 1);
    // Redis back (a new server on the same port): counting resumes without a restart.
    let port = redis.port;
    let deadline = Instant::now() + Duration::from_secs(10);
    let _back = loop {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = RedisServer {
            port,
            child: Some(child),
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        if s.pings().await {
            break s;
        }
        assert!(Instant::now() < deadline, "redis-server did not restart");
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = get(&gw.url("/"), &[]).await;
        if got.status == 200 {
            // The restarted Redis is empty: this is its first count.
            assert_eq!(num(&got, "x-ratelimit-remaining-hour"), 4);
            break;
        }
        assert!(Instant::now() < deadline, "never reconnected: {}", got.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A "Redis" that accepts connections and never answers: requests must not hang.
#[tokio::test]
async fn a_hung_redis_costs_at_most_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let up = Upstream::echo("up").await;
    let tolerant = super::gateway(&up, &config(port, "hour: 5", ""), "", "").await;
    let strict = super::gateway(
        &up,
        &config(port, "hour: 5", ", fault_tolerant: false"),
        "",
        "",
    )
    .await;
    for _ in 0..3 {
        let started = Instant::now();
        let got = get(&tolerant.url("/"), &[]).await;
        assert_eq!(got.status, 200);
        assert!(header(&got, "ratelimit-limit").is_none());
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
        let started = Instant::now();
        assert_eq!(get(&strict.url("/"), &[]).await.status, 500);
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn redis_sliding_window_counts() {
    let redis = RedisServer::start().await;
    let up = Upstream::echo("up").await;
    let cfg = config(redis.port, "hour: 2", ", algorithm: sliding-window");
    let gw = super::gateway(&up, &cfg, "", "").await;
    let got = get(&gw.url("/"), &[]).await;
    // The previous hour may have no count (a fresh Redis): 2 − 1 left.
    assert_eq!(num(&got, "x-ratelimit-remaining-hour"), 1);
    assert_eq!(get(&gw.url("/"), &[]).await.status, 200);
    assert_eq!(get(&gw.url("/"), &[]).await.status, 429);
}
