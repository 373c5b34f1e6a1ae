//! rate-limiting's config: Kong's defaults and validation messages, Portico's refusals.

use portico_common::plugins::rate_limiting::{Algorithm, Config, LimitBy, Policy};
use portico_common::plugins::PluginConfig;
use portico_common::ConfigIssue;
use serde_json::{json, Value};

fn parse(config: Value) -> Config {
    match PluginConfig::parse("rate-limiting", &config) {
        Ok(PluginConfig::RateLimiting(c)) => c,
        other => panic!("{config} refused: {other:?}"),
    }
}

#[track_caller]
fn refused(config: Value, path: &str, message: &str) {
    match PluginConfig::parse("rate-limiting", &config) {
        Ok(c) => panic!("{config} accepted: {c:?}"),
        Err(e) => assert_eq!(e, [ConfigIssue::new(path, message)], "{config}"),
    }
}

#[test]
fn defaults_are_kongs() {
    let c = parse(json!({ "minute": 6 }));
    assert_eq!(c.minute, Some(6.0));
    assert_eq!(c.limit_by, LimitBy::Consumer);
    assert_eq!(c.policy, Policy::Local);
    assert!(c.fault_tolerant);
    assert!(!c.hide_client_headers);
    assert_eq!(c.error_code, 429);
    assert_eq!(c.error_message, "API rate limit exceeded");
    assert_eq!(c.sync_rate, -1.0);
    assert_eq!(c.algorithm, Algorithm::FixedWindow);
    assert_eq!(
        (c.redis.port, c.redis.timeout, c.redis.database),
        (6379, 2000, 0)
    );
    let v = PluginConfig::RateLimiting(c).to_value();
    assert_eq!(v["redis"]["port"], 6379);
    assert!(
        v.get("redis_host").is_none(),
        "shorthands are not written back"
    );
}

#[test]
fn kongs_validation_messages() {
    refused(
        json!({}),
        "config",
        "at least one of these fields must be non-empty: 'config.second', 'config.minute', \
         'config.hour', 'config.day', 'config.month', 'config.year'",
    );
    refused(
        json!({ "minute": 10, "hour": 5 }),
        "config",
        "The limit for hour(5.0) cannot be lower than the limit for minute(10.0)",
    );
    refused(
        json!({ "second": 0 }),
        "config.second",
        "value must be greater than 0",
    );
    refused(
        json!({ "hour": 5, "limit_by": "header" }),
        "config.header_name",
        "required field missing",
    );
    refused(
        json!({ "hour": 5, "limit_by": "path" }),
        "config.path",
        "required field missing",
    );
    refused(
        json!({ "hour": 5, "policy": "redis" }),
        "config.redis.host",
        "required field missing",
    );
    refused(
        json!({ "hour": 5, "sync_rate": 1 }),
        "config.sync_rate",
        "sync_rate is only supported with policy 'redis'",
    );
}

#[test]
fn portico_refuses_cluster_and_redis_tls() {
    let issues = PluginConfig::parse("rate-limiting", &json!({ "hour": 1, "policy": "cluster" }))
        .unwrap_err();
    assert_eq!(issues[0].path, "config.policy");
    assert!(
        issues[0].message.contains("database"),
        "{}",
        issues[0].message
    );
    let issues = PluginConfig::parse(
        "rate-limiting",
        &json!({ "hour": 1, "policy": "redis", "redis": { "host": "r", "ssl": true } }),
    )
    .unwrap_err();
    assert_eq!(issues[0].path, "config.redis.ssl");
}

#[test]
fn deprecated_redis_shorthands_fold_into_redis() {
    let c = parse(json!({
        "hour": 1, "policy": "redis", "redis_host": "cache", "redis_port": 6380,
        "redis_password": "pw", "redis_database": 2, "redis_timeout": 500,
    }));
    assert_eq!(c.redis.host.as_deref(), Some("cache"));
    assert_eq!(c.redis.port, 6380);
    assert_eq!(c.redis.password.as_deref(), Some("pw"));
    assert_eq!((c.redis.database, c.redis.timeout), (2, 500));
    assert_eq!(c.redis_host, None);
    assert!(
        !format!("{c:?}").contains("pw"),
        "Debug never shows the password"
    );
}

#[test]
fn algorithm_and_limit_by_values() {
    let c = parse(json!({ "day": "7", "algorithm": "sliding-window", "limit_by": "ip" }));
    assert_eq!(c.day, Some(7.0), "substituted strings read as numbers");
    assert_eq!(
        (c.algorithm, c.limit_by),
        (Algorithm::SlidingWindow, LimitBy::Ip)
    );
    let issues = PluginConfig::parse(
        "rate-limiting",
        &json!({ "day": 1, "algorithm": "token-bucket" }),
    )
    .unwrap_err();
    assert_eq!(issues[0].path, "config.algorithm");
}
