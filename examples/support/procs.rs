//! What the benchmark examples share: the release `portico` binary next to them, and a child
//! process killed when dropped.

use std::path::PathBuf;
use std::process::Child;

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
