//! Driving `wrk` and reading processes' CPU and memory, for the benchmark examples.

// Each example uses part of this module.
#![allow(dead_code)]

use std::process::Command;

/// One `wrk` run.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub requests: u64,
}

/// Runs `wrk -t1 --latency` against `url` (`extra` arguments first, e.g. `-H`), bounded by a
/// deadline well past `seconds`. Panics when wrk is missing or saw errors.
pub fn wrk(url: &str, seconds: u64, connections: usize, extra: &[&str]) -> Run {
    wrk_with_prefix(url, seconds, connections, extra, &[])
}

/// [`wrk`] run under `prefix` (e.g. `taskset -c 3`).
pub fn wrk_with_prefix(
    url: &str,
    seconds: u64,
    connections: usize,
    extra: &[&str],
    prefix: &[&str],
) -> Run {
    let mut cmd = Command::new("timeout");
    cmd.arg(format!("{}", seconds + 30))
        .args(prefix)
        .arg("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s")])
        .args(["--timeout", "5s", "--latency"])
        .args(extra)
        .arg(url);
    let out = cmd
        .output()
        .expect("wrk is not installed: apt-get install -y wrk");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        !text.contains("Non-2xx"),
        "the load got errors from {url}:\n{text}"
    );
    parse(&text).unwrap_or_else(|| panic!("cannot read wrk's output for {url}:\n{text}"))
}

fn ms(v: &str) -> f64 {
    let (n, unit) = v.split_at(v.find(|c: char| c.is_alphabetic()).unwrap_or(v.len()));
    let n: f64 = n.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => n,
    }
}

fn parse(text: &str) -> Option<Run> {
    let field = |prefix: &str| -> Option<String> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
    };
    // "    Latency   612.00us  300.00us  12.00ms   90.00%": avg, stdev, max, +/- stdev.
    let max_ms = text
        .lines()
        .find(|l| l.trim_start().starts_with("Latency "))
        .and_then(|l| l.split_whitespace().nth(3).map(ms))
        .unwrap_or(f64::NAN);
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Some(Run {
        rps: field("Requests/sec:")?.parse().ok()?,
        p50_ms: field("50%").map_or(f64::NAN, |v| ms(&v)),
        p99_ms: field("99%").map_or(f64::NAN, |v| ms(&v)),
        max_ms,
        requests,
    })
}

/// CPU seconds (user + system) a process has used so far, its reaped children included.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of /proc/pid/stat: 12 and 13 after the ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident set size of a process (`VmHWM`), in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The process and its children (nginx's workers), by parent pid.
pub fn with_children(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            if rest.split_whitespace().nth(1) == Some(&pid.to_string()) {
                pids.push(child);
            }
        }
    }
    pids
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let text = "Running 4s test @ http://127.0.0.1:1/bench\n  1 threads and 50 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   612.00us  300.00us  12.00ms   90.00%\n    Req/Sec    50.00k     1.00k   52.00k    80.00%\n  Latency Distribution\n     50%  580.00us\n     75%  700.00us\n     90%  800.00us\n     99%    1.20ms\n  200000 requests in 4.00s, 30.00MB read\nRequests/sec:  50000.00\nTransfer/sec:      7.50MB\n";
        let r = parse(text).unwrap();
        assert_eq!(r.requests, 200000);
        assert!((r.rps - 50000.0).abs() < 1e-6);
        assert!((r.p50_ms - 0.58).abs() < 1e-9);
        assert!((r.p99_ms - 1.2).abs() < 1e-9);
        assert!((r.max_ms - 12.0).abs() < 1e-9);
    }
}

/// Runs `h2load` (HTTP/2 prior knowledge for `http://` URLs) against `url` for `seconds`, with
/// `connections` connections of `streams` concurrent streams each, under `prefix`. h2load
/// reports a mean and a max, not percentiles: the mean is returned as `p50_ms` and `p99_ms` is
/// NaN. Panics when h2load is missing or any request failed.
#[allow(dead_code)] // not every example uses it
pub fn h2load(url: &str, seconds: u64, connections: usize, streams: usize, prefix: &[&str]) -> Run {
    let mut cmd = Command::new("timeout");
    cmd.arg(format!("{}", seconds + 30))
        .args(prefix)
        .arg("h2load")
        .args(["-t1", &format!("-c{connections}"), &format!("-m{streams}")])
        .args([&format!("-D{seconds}"), "--warm-up-time=1"])
        .arg(url);
    let out = cmd
        .output()
        .expect("h2load is not installed: apt-get install -y nghttp2-client");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // "requests: 1000 total, 1000 started, 1000 done, 1000 succeeded, 0 failed, 0 errored, 0 timeout"
    let counts = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("cannot read h2load's output for {url}:\n{text}"));
    let count = |what: &str| -> u64 {
        counts
            .trim_start_matches("requests:")
            .split(',')
            .filter_map(|p| {
                let mut w = p.split_whitespace();
                Some((w.next()?.parse::<u64>().ok()?, w.next()?))
            })
            .find(|(_, word)| *word == what)
            .map_or(0, |(n, _)| n)
    };
    let succeeded = count("succeeded");
    assert!(
        count("failed") == 0 && count("errored") == 0 && count("timeout") == 0 && succeeded > 0,
        "h2load saw failures against {url}:\n{text}"
    );
    // "finished in 5.00s, 26072.36 req/s, 13.38MB/s"
    let rps = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|v| v.trim_end_matches(" req/s").parse().ok())
        .unwrap_or(f64::NAN);
    // "time for request:   389us  105.98ms  31.01ms  10.91ms  71.17%": min, max, mean, sd.
    let latency: Vec<f64> = text
        .lines()
        .find(|l| l.trim_start().starts_with("time for request:"))
        .map(|l| {
            l.trim_start()
                .trim_start_matches("time for request:")
                .split_whitespace()
                .take(3)
                .map(ms)
                .collect()
        })
        .unwrap_or_default();
    Run {
        rps,
        p50_ms: latency.get(2).copied().unwrap_or(f64::NAN),
        p99_ms: f64::NAN,
        max_ms: latency.get(1).copied().unwrap_or(f64::NAN),
        requests: succeeded,
    }
}
