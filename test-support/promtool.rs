//! `promtool check metrics`, shared by the data plane's and the control plane's metrics tests
//! (included with `#[path]`). promtool must be installed: Debian's `prometheus` package ships
//! it, and `.ci/run` installs it when missing. A missing promtool fails the test, never skips it.

use std::io::Write;
use std::process::{Command, Stdio};

/// Checks `text` (Prometheus text exposition) with `promtool check metrics`.
pub fn check_metrics(text: &str) {
    assert!(
        Command::new("promtool").arg("--version").output().is_ok(),
        "promtool is missing: install it (`apt-get install -y prometheus`; .ci/run does) so the \
         exposition is checked"
    );
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
