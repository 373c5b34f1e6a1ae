//! Where the benchmark examples' processes run (`LOAD_LAYOUT`), after PERF.md part B.
//!
//! - `pin` (the default on 2 or more cores): the server under test runs alone on the last
//!   core, pinned with `taskset`, with one worker; wrk, the upstream and any sink share the
//!   other cores. Requests/s is then one core's capacity for that server (its helper threads,
//!   such as exporters and log writers, included), and CPU µs per request is comparable.
//! - `free`: nothing pinned; every process has all cores and competes with wrk and the
//!   upstream, which the numbers then include.

// Each example uses part of this module.
#![allow(dead_code)]

use std::process::{Command, Stdio};

use crate::wrk;

pub struct Layout {
    pub name: String,
    /// `taskset -c` list for the server under test.
    pub server: Option<String>,
    /// `taskset -c` list for wrk, the upstream and in-process helpers.
    pub client: Option<String>,
    /// Workers the server under test gets (nginx's `worker_processes`).
    pub workers: usize,
    pub cpus: usize,
}

impl Layout {
    /// From `LOAD_LAYOUT`; exits with a message on an unknown value.
    pub fn from_env() -> Layout {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let name = std::env::var("LOAD_LAYOUT")
            .unwrap_or_else(|_| if cpus >= 2 { "pin" } else { "free" }.into());
        let (server, client, workers) = match name.as_str() {
            "pin" if cpus >= 2 => (
                Some(format!("{}", cpus - 1)),
                Some(if cpus == 2 {
                    "0".to_string()
                } else {
                    format!("0-{}", cpus - 2)
                }),
                1,
            ),
            "free" | "pin" => (None, None, cpus),
            other => {
                eprintln!("LOAD_LAYOUT must be pin or free, not {other}");
                std::process::exit(2);
            }
        };
        Layout {
            name,
            server,
            client,
            workers,
            cpus,
        }
    }

    /// One line saying where things run.
    pub fn describe(&self) -> String {
        match (&self.server, &self.client) {
            (Some(s), Some(c)) => format!(
                "layout {}: server under test alone on CPU {s} with 1 worker; wrk, the upstream and sinks on CPU {c}",
                self.name
            ),
            _ => format!(
                "layout {}: nothing pinned, every process shares the {} cores",
                self.name, self.cpus
            ),
        }
    }

    /// Pins this process (and the threads it starts from now on) to the client CPUs, so an
    /// in-process sink does not compete with the server under test.
    pub fn pin_self(&self) {
        if let Some(cpus) = &self.client {
            let ok = Command::new("taskset")
                .args(["-p", "-c", cpus, &std::process::id().to_string()])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "taskset -p -c {cpus} failed");
        }
    }

    /// `wrk` on the client CPUs.
    /// [`wrk::h2load`] on the client CPUs.
    #[allow(dead_code)] // not every example uses it
    pub fn h2load(&self, url: &str, seconds: u64, connections: usize, streams: usize) -> wrk::Run {
        match &self.client {
            Some(cpu) => wrk::h2load(url, seconds, connections, streams, &["taskset", "-c", cpu]),
            None => wrk::h2load(url, seconds, connections, streams, &[]),
        }
    }

    pub fn wrk(&self, url: &str, seconds: u64, connections: usize, extra: &[&str]) -> wrk::Run {
        match &self.client {
            Some(cpu) => {
                wrk::wrk_with_prefix(url, seconds, connections, extra, &["taskset", "-c", cpu])
            }
            None => wrk::wrk(url, seconds, connections, extra),
        }
    }
}
