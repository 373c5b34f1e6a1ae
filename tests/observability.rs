//! `deploy/observability/`: the alert rules pass `promtool check rules` and their unit tests
//! (`promtool test rules`), the dashboard's queries are valid PromQL, and every metric the rules
//! and the dashboard use is exposed, with samples, by a real control plane and data plane after
//! real traffic. promtool is required (Debian's `prometheus` package; `.ci/run` installs it).

#[path = "support/binary.rs"]
mod binary;
#[path = "../data-plane/tests/support/harness.rs"]
mod harness;

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::Duration;

use binary::{eventually, Portico};
use harness::{get, Upstream};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/observability");
const RULES: &str = "portico-alerts.yml";
const RULE_TESTS: &str = "portico-alerts.test.yml";
const DASHBOARD: &str = "portico-dashboard.json";

/// Runs promtool in `dir`; fails (never skips) when it is not installed.
fn promtool(dir: &str, args: &[&str]) -> Output {
    match Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!(
            "cannot run promtool ({e}). These tests need it: install Debian's `prometheus` \
             package (`apt-get install prometheus`, which ships promtool) or put promtool from \
             https://prometheus.io/download/ on PATH. `.ci/run` installs it when missing."
        ),
    }
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{DIR}/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn alert_rules_pass_promtool_check() {
    let out = promtool(DIR, &["check", "rules", RULES]);
    assert_success("promtool check rules", &out);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("SUCCESS"), "{said}");
}

#[test]
fn alerts_fire_on_failures_and_stay_quiet_on_a_healthy_fleet() {
    // The unit tests must cover what the issue asks the rules to catch, firing and quiet.
    let tests = read(RULE_TESTS);
    for alert in [
        "PorticoHigh5xxRate",
        "PorticoHighP99Latency",
        "PorticoConfigNacked",
        "PorticoDataPlaneDown",
    ] {
        assert!(
            tests.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - "
            )),
            "{RULE_TESTS} has no test where {alert} fires"
        );
        assert!(
            tests.contains(&format!("alertname: {alert}, exp_alerts: []")),
            "{RULE_TESTS} has no healthy-fleet test where {alert} stays quiet"
        );
    }
    let out = promtool(DIR, &["test", "rules", RULE_TESTS]);
    assert_success("promtool test rules", &out);
}

#[test]
fn dashboard_is_a_grafana_dashboard_with_valid_promql() {
    let dash: serde_json::Value = serde_json::from_str(&read(DASHBOARD)).expect("dashboard JSON");
    assert!(
        dash["schemaVersion"].as_u64().unwrap_or(0) >= 36,
        "schemaVersion"
    );
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for v in ["datasource", "service", "route"] {
        assert!(vars.contains(&v), "template variable {v} missing: {vars:?}");
    }
    let exprs = dashboard_exprs(&dash);
    assert!(exprs.len() >= 15, "{exprs:?}");
    // Every query goes to the chosen data source.
    let mut panels = Vec::new();
    collect_panels(&dash["panels"], &mut panels);
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {}",
            p["title"]
        );
    }

    // Grafana's variables replaced by what they expand to, each query becomes a recording rule
    // that promtool parses.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "5m")
            .replace("$__interval", "1m")
            .replace("$service", ".*")
            .replace("$route", ".*")
            .replace("$group", ".*");
        assert!(!e.contains('$'), "unknown variable in {e}");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::Value::String(e)
        ));
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("dashboard.yml"), &rules).unwrap();
    let out = promtool(
        tmp.path().to_str().unwrap(),
        &["check", "rules", "dashboard.yml"],
    );
    assert_success(&format!("promtool check rules on\n{rules}"), &out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_and_dashboard_use_is_exposed() {
    let mut wanted = BTreeSet::new();
    for e in rule_exprs(&read(RULES)) {
        wanted.extend(metric_names(&e));
    }
    let dash: serde_json::Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    for e in dashboard_exprs(&dash) {
        wanted.extend(metric_names(&e));
    }
    wanted.remove("up"); // Prometheus's own, per scrape target
                         // The tokenizer found the metrics it should (it did not drop everything).
    for m in [
        "portico_http_requests_total",
        "portico_request_latency_seconds_bucket",
        "portico_cp_data_planes",
        "portico_control_plane_connected",
    ] {
        assert!(wanted.contains(m), "{m} not extracted: {wanted:?}");
    }

    // A control plane and one data plane; traffic that gives every family a sample: a balanced
    // service with a circuit-breaker, a rate-limited route refusing its second request.
    let up = Upstream::echo("a").await;
    let tmp = tempfile::tempdir().unwrap();
    let cp = Portico::cp(&tmp.path().join("cp"), &[]);
    let dp = Portico::dp_cluster(
        &cp.cluster_url(),
        "default",
        "dp-obs",
        &tmp.path().join("cache"),
        &[],
    );
    let config = format!(
        "_format_version: \"3.0\"
upstreams:
  - name: pool
    targets:
      - target: {addr}
services:
  - name: app
    host: pool
    plugins:
      - name: circuit-breaker
    routes:
      - name: app
        paths: [/app]
      - name: limited
        paths: [/limited]
        plugins:
          - name: rate-limiting
            config: {{ minute: 1, policy: local }}
",
        addr = up.addr
    );
    let posted = harness::send(
        http::Request::post(format!("http://{}/config", cp.admin))
            .body(http_body_util::Full::new(bytes::Bytes::from(config)))
            .unwrap(),
    )
    .await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    let ready = format!("http://{}/status/ready", dp.status);
    eventually("the data plane to serve the config", WAIT, || {
        let u = ready.clone();
        async move { (get(&u, &[]).await.status == 200).then_some(()) }
    })
    .await;
    for _ in 0..3 {
        assert_eq!(
            get(&format!("http://{}/app/x", dp.proxy), &[]).await.status,
            200
        );
    }
    let limited = format!("http://{}/limited", dp.proxy);
    assert_eq!(get(&limited, &[]).await.status, 200);
    assert_eq!(get(&limited, &[]).await.status, 429);

    // The control plane has timed the ACK once the node shows in sync.
    let cp_metrics = format!("http://{}/metrics", cp.admin);
    let cp_text = eventually("the control plane to record the ACK", WAIT, || {
        let u = cp_metrics.clone();
        async move {
            let text = get(&u, &[]).await.body;
            text.contains("portico_cp_data_planes{group=\"default\",state=\"in_sync\"} 1")
                .then_some(text)
        }
    })
    .await;
    let dp_text = get(&format!("http://{}/metrics", dp.status), &[])
        .await
        .body;

    let exposed: BTreeSet<String> = sample_names(&dp_text)
        .into_iter()
        .chain(sample_names(&cp_text))
        .collect();
    let missing: Vec<&String> = wanted.iter().filter(|m| !exposed.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "used by {RULES} or {DASHBOARD} but without a sample in the scrapes: {missing:?}\n\
         --- data plane ---\n{dp_text}\n--- control plane ---\n{cp_text}"
    );
}

const WAIT: Duration = Duration::from_secs(20);

/// The `expr:` of every rule: inline, or a `|`/`>` block of the lines indented deeper.
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest.starts_with('|') || rest.starts_with('>') {
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || indent(l) > indent(line))
                .map(|l| l.trim())
                .collect();
            out.push(block.join("\n"));
        } else {
            out.push(rest.trim_matches(|c| c == '\'' || c == '"').to_owned());
        }
    }
    assert!(
        out.len() >= 10,
        "expected the rule expressions, got {out:?}"
    );
    out
}

fn collect_panels<'a>(panels: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
    for p in panels.as_array().into_iter().flatten() {
        out.push(p);
        collect_panels(&p["panels"], out);
    }
}

/// Every panel query, and the selectors of the `label_values(...)` template variables.
fn dashboard_exprs(dash: &serde_json::Value) -> Vec<String> {
    let mut panels = Vec::new();
    collect_panels(&dash["panels"], &mut panels);
    let mut out: Vec<String> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        let q = v["definition"].as_str().unwrap_or("");
        if let Some(args) = q.strip_prefix("label_values(") {
            // label_values(selector, label): the selector only.
            let selector = args.rsplit_once(',').map_or(args, |(s, _)| s);
            out.push(selector.to_owned());
        }
    }
    out
}

/// Metric names in a PromQL expression: identifiers outside strings, label matchers, ranges and
/// grouping lists that are not functions, aggregations or keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: [&str; 12] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "and",
        "or",
        "unless",
        "atan2",
    ];
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Pass 1: drop strings, {label matchers} and [ranges].
    let mut plain = String::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                let mut escaped = false;
                for d in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if d == '\\' {
                        escaped = true;
                    } else if d == c {
                        break;
                    }
                }
                plain.push(' ');
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                let mut quote = None;
                for d in chars.by_ref() {
                    match quote {
                        Some(q) if d == q => quote = None,
                        Some(_) => {}
                        None if d == '"' || d == '\'' => quote = Some(d),
                        None if d == close => break,
                        None => {}
                    }
                }
                plain.push(' ');
            }
            c => plain.push(c),
        }
    }
    // Pass 2: identifiers; skip numbers, $variables and the label lists of grouping keywords.
    let bytes: Vec<char> = plain.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_digit() || c == '$' || c == '.' {
            i += 1;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || "_.:+-".contains(bytes[i]))
            {
                // `1e+3`, `$__rate_interval`, `0.99`
                if "+-".contains(bytes[i]) && !matches!(bytes[i - 1], 'e' | 'E') {
                    break;
                }
                i += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len()
            && (bytes[i].is_ascii_alphanumeric() || bytes[i] == '_' || bytes[i] == ':')
        {
            i += 1;
        }
        let word: String = bytes[start..i].iter().collect();
        let mut j = i;
        while j < bytes.len() && bytes[j].is_whitespace() {
            j += 1;
        }
        let rest: String = bytes[j..].iter().take(16).collect();
        // A call, or an aggregation with its grouping first: `sum by (le) (...)`.
        let called = (j < bytes.len() && bytes[j] == '(')
            || (!GROUPING.contains(&word.as_str())
                && ["by", "without"].iter().any(|g| {
                    rest.strip_prefix(g)
                        .is_some_and(|r| r.trim_start().starts_with('('))
                }));
        if GROUPING.contains(&word.as_str()) && called {
            // Skip `by (service, le)`.
            while j < bytes.len() && bytes[j] != ')' {
                j += 1;
            }
            i = j + 1;
            continue;
        }
        let lower = word.to_ascii_lowercase();
        if called || KEYWORDS.contains(&lower.as_str()) || lower == "inf" || lower == "nan" {
            continue; // a function, an aggregation or a keyword
        }
        names.insert(word);
    }
    names
}

/// The names of the samples in a Prometheus text exposition (histograms give `_bucket`,
/// `_count` and `_sum`).
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_tokenizer_finds_metrics_and_nothing_else() {
    let got = metric_names(
        "sum by (service, le) (rate(portico_x_bucket{class=\"5xx\", route=~\"$route\"}[$__rate_interval]))\n\
         / on(instance) group_left(version) portico_y offset 5m > 0.99 and up{job=\"a\"} == 1e3\n\
         or count without (le) (portico_z) unless topk(3, portico_y)",
    );
    let want: BTreeSet<String> = ["portico_x_bucket", "portico_y", "portico_z", "up"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(got, want);
}
