//! Prometheus text helpers shared by both planes' `/metrics` endpoints. Pure text: `common`
//! still depends on no metrics crate.

/// OpenMetrics text without `# EOF` to Prometheus text 0.0.4: prometheus-client writes only
/// OpenMetrics, whose counter families are named without the `_total` their samples carry; the
/// older format (still what promtool and many scrapers read) names the family as the samples.
/// `# UNIT` is a comment there and is dropped.
pub fn to_prometheus_text(om: &str) -> String {
    let counters: Vec<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len() + 16 * counters.len());
    for line in om.lines() {
        if line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(&name) {
                out.push_str(prefix);
                out.push_str(name);
                out.push_str("_total ");
                out.push_str(tail);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_families_take_their_samples_name_and_units_go() {
        let om = "# HELP x_requests Requests.\n# TYPE x_requests counter\nx_requests_total{a=\"1\"} 3\n# HELP x_lat Latency.\n# TYPE x_lat histogram\n# UNIT x_lat seconds\nx_lat_count 1\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\nx_requests_total{a=\"1\"} 3\n# HELP x_lat Latency.\n# TYPE x_lat histogram\nx_lat_count 1\n"
        );
    }
}
