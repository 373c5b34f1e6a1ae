//! Running the real `portico` binary in tests: start it with JSON logs, wait for the addresses it
//! reports (its readiness signal), poll with deadlines, stop it with signals.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `portico` process.
pub struct Portico {
    pub child: Child,
    /// Proxy listener (data planes).
    pub proxy: SocketAddr,
    /// Status listener (data planes).
    pub status: SocketAddr,
    /// Proxy TLS listener (data planes started with `spawn_waiting(.., &[.., "proxy TLS"])`).
    pub proxy_tls: SocketAddr,
    /// Admin listener (control planes).
    pub admin: SocketAddr,
    /// Cluster listener (control planes).
    pub cluster: SocketAddr,
    logs: mpsc::Receiver<String>,
    pub log_lines: Vec<String>,
}

/// The `portico` command.
pub fn portico() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portico"))
}

impl Portico {
    /// Starts `portico dp -c config` on ephemeral ports and waits until both listeners are up.
    pub fn dp(config: &Path, extra: &[&str]) -> Portico {
        Portico::dp_waiting(config, extra, &["proxy", "status"])
    }

    /// [`Portico::dp`], waiting for the named listeners (`"proxy TLS"` too, say).
    pub fn dp_waiting(config: &Path, extra: &[&str], listeners: &[&str]) -> Portico {
        let mut cmd = portico();
        cmd.args(["--log-format", "json", "dp", "--config"])
            .arg(config)
            .args([
                "--proxy-listen",
                "127.0.0.1:0",
                "--proxy-listen-tls",
                "127.0.0.1:0",
                "--status-listen",
                "127.0.0.1:0",
            ])
            .args(extra);
        Portico::spawn_waiting(cmd, listeners)
    }

    /// Starts `portico cp` on ephemeral ports with its store in `data_dir`.
    pub fn cp(data_dir: &Path, extra: &[&str]) -> Portico {
        let mut cmd = portico();
        cmd.args(["--log-format", "json", "cp", "--data-dir"])
            .arg(data_dir)
            .args([
                "--admin-listen",
                "127.0.0.1:0",
                "--cluster-listen",
                "127.0.0.1:0",
            ])
            .args(extra);
        Portico::spawn_waiting(cmd, &["admin", "cluster"])
    }

    /// Starts `portico dp --control-plane url` on ephemeral ports.
    pub fn dp_cluster(url: &str, group: &str, node: &str, cache: &Path, extra: &[&str]) -> Portico {
        let mut cmd = portico();
        cmd.args([
            "--log-format",
            "json",
            "dp",
            "--control-plane",
            url,
            "--group",
            group,
            "--node-id",
            node,
        ])
        .arg("--cache-dir")
        .arg(cache)
        .args([
            "--proxy-listen",
            "127.0.0.1:0",
            "--proxy-listen-tls",
            "127.0.0.1:0",
            "--status-listen",
            "127.0.0.1:0",
        ])
        .args(extra);
        Portico::spawn(cmd)
    }

    /// Spawns `cmd` (which must log JSON) and waits for "proxy listening" and "status listening".
    pub fn spawn(cmd: Command) -> Portico {
        Portico::spawn_waiting(cmd, &["proxy", "status"])
    }

    /// Spawns `cmd` and waits for a "<name> listening" log line for each of `listeners`.
    pub fn spawn_waiting(mut cmd: Command, listeners: &[&str]) -> Portico {
        cmd.env("PORTICO_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start portico");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let none: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let mut p = Portico {
            child,
            proxy: none,
            status: none,
            proxy_tls: none,
            admin: none,
            cluster: none,
            logs: rx,
            log_lines: Vec::new(),
        };
        for l in listeners {
            let addr = p.wait_addr(&format!("{l} listening"));
            match *l {
                "proxy" => p.proxy = addr,
                "status" => p.status = addr,
                "proxy TLS" => p.proxy_tls = addr,
                "admin" => p.admin = addr,
                "cluster" => p.cluster = addr,
                other => panic!("unknown listener {other}"),
            }
        }
        p
    }

    /// `http://<admin>` for the CLI's --admin-url.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// `http://<cluster>` for a data plane's --control-plane.
    pub fn cluster_url(&self) -> String {
        format!("http://{}", self.cluster)
    }

    fn wait_addr(&mut self, message: &str) -> SocketAddr {
        let line = self.wait_log(|l| l.contains(message), Duration::from_secs(30));
        let v: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        v["addr"].as_str().unwrap().parse().unwrap()
    }

    /// Waits for a log line matching `pred`, returning it; panics with the log at the deadline.
    pub fn wait_log(&mut self, pred: impl Fn(&str) -> bool, within: Duration) -> String {
        if let Some(l) = self.log_lines.iter().find(|l| pred(l)) {
            return l.clone();
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(line) => {
                    self.log_lines.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no matching log line; log so far:\n{}",
                    self.log_lines.join("\n")
                ),
            }
        }
    }

    /// Drains log lines received so far.
    pub fn pump_logs(&mut self) {
        while let Ok(l) = self.logs.try_recv() {
            self.log_lines.push(l);
        }
    }

    /// Sends a signal by name (`TERM`, `HUP`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit within `within`.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "portico did not exit in {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Peak resident memory (VmHWM) of the process, in KiB (Linux).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        s.lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
    }
}

impl Drop for Portico {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns `Some`, or panics after `within` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
