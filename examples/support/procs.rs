//! What the benchmark examples share: the release `portico` binary next to them, and a child
//! process killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// `target/release/portico`, found from `target/release/examples/<example>`.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let p = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .join("portico");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --release` first",
        p.display()
    );
    p
}

/// A child process, killed and reaped when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child process that has children of its own (nginx's master and its workers): when
/// dropped it is asked to stop with SIGTERM, so that it stops its children too (SIGKILL would
/// leave the workers running, holding their ports and serving), and killed only if it has not
/// exited within five seconds.
#[allow(dead_code)] // not every example uses it
pub struct Parent(pub Child);

impl Drop for Parent {
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let asked = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while asked && std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns portico with JSON logs (under `taskset -c CPUS` when `pin` is given) and waits for it
/// to report `<name> listening`; returns it and that address. Its warnings and errors are
/// passed on to stderr afterwards (a failing exporter says so).
#[allow(dead_code)] // not every example uses it
pub fn spawn_listening(args: &[String], name: &str, pin: Option<&str>) -> (Proc, String) {
    let mut cmd = match pin {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus]).arg(binary());
            c
        }
        None => Command::new(binary()),
    };
    let mut child = cmd
        .args(["--log-format", "json"])
        .args(args)
        .env("PORTICO_LOG", "warn,portico_data_plane=info,portico=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn portico");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let needle = format!("{name} listening");
    let addr = loop {
        let line = lines.next().expect("portico exited").unwrap();
        if line.contains(&needle) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            break v["addr"].as_str().unwrap().to_string();
        }
    };
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.contains("\"WARN\"") || line.contains("\"ERROR\"") {
                eprintln!("{line}");
            }
        }
    });
    (Proc(child), addr)
}

/// `portico dp --config <config>` on loopback ports the OS picks, with `extra` arguments;
/// returns it and its proxy address.
#[allow(dead_code)] // not every example uses it
pub fn spawn_dp(config: &std::path::Path, extra: &[String], pin: Option<&str>) -> (Proc, String) {
    let mut args: Vec<String> = vec![
        "dp".into(),
        "--config".into(),
        config.display().to_string(),
        "--proxy-listen".into(),
        "127.0.0.1:0".into(),
        "--proxy-listen-tls".into(),
        "off".into(),
        "--status-listen".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend_from_slice(extra);
    spawn_listening(&args, "proxy", pin)
}
