//! `/metrics` on the admin listener: behind the admin token, data planes by group and state,
//! the apply-to-ACK propagation histogram, each group's live version, and a clean
//! `promtool check metrics`.

#[path = "support/harness.rs"]
mod harness;

#[path = "../../test-support/promtool.rs"]
mod promtool;

use harness::{config, eventually, http, start, FakeDp};
use hyper::Method;
use portico_control_plane::CpOptions;

const AUTH: (&str, &str) = ("authorization", "Bearer t0ken");

async fn scrape(cp: &harness::Cp) -> String {
    let (status, body) = http(Method::GET, &cp.url("/metrics"), None, &[AUTH])
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of the sample written exactly as `series`, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[tokio::test]
async fn fleet_states_and_propagation_after_an_apply() {
    let cp = start(CpOptions {
        admin_token: Some("t0ken".into()),
        ..Default::default()
    })
    .await;
    // The admin token covers /metrics like every admin call.
    let (status, _) = http(Method::GET, &cp.url("/metrics"), None, &[])
        .await
        .unwrap();
    assert_eq!(status, 401);

    let mut dp = FakeDp::plain(&cp, "dp-1", "default", (0, "")).await;
    let (status, body) = http(
        Method::POST,
        &cp.url("/config"),
        Some(("text/yaml", &config(1))),
        &[AUTH],
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let u = dp.update().await;
    dp.ack(&u).await;
    // A second node refuses the same version.
    let mut bad = FakeDp::plain(&cp, "dp-2", "default", (0, "")).await;
    let u2 = bad.update().await;
    bad.nack(&u2, "plugins[0]", "unknown plugin").await;

    let text = eventually("both nodes settled in /metrics", || async {
        let text = scrape(&cp).await;
        let settled = sample(
            &text,
            r#"portico_cp_data_planes{group="default",state="in_sync"}"#,
        ) == Some(1.0)
            && sample(
                &text,
                r#"portico_cp_data_planes{group="default",state="nacked"}"#,
            ) == Some(1.0);
        settled.then_some(text)
    })
    .await;
    for (state, n) in [("applying", 0.0), ("lagging", 0.0), ("disconnected", 0.0)] {
        let series = format!(r#"portico_cp_data_planes{{group="default",state="{state}"}}"#);
        assert_eq!(sample(&text, &series), Some(n), "{series} in:\n{text}");
    }
    // Only the ACK is timed: a NACK never propagated the version.
    assert_eq!(
        sample(
            &text,
            r#"portico_cp_config_propagation_seconds_count{group="default"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"portico_cp_config_version{group="default"}"#),
        Some(1.0),
        "{text}"
    );
    promtool::check_metrics(&text);

    let (status, om) = http(
        Method::GET,
        &cp.url("/metrics"),
        None,
        &[
            AUTH,
            ("accept", "application/openmetrics-text;version=1.0.0"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert!(om.ends_with("# EOF\n"), "{om}");
    dp.close();
    bad.close();
    cp.stop().await;
}
