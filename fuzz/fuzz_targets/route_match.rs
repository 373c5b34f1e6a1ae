//! Route matching on arbitrary requests against a config with every kind of route field
//! (prefix and regex paths, exact and wildcard hosts with ports, methods, headers, snis): it
//! never panics, and what it answers is consistent (an upstream path that starts with `/`, a
//! route that exists).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portico_data_plane::router::{RouteRequest, Router};

const CONFIG: &str = r#"
_format_version: "3.0"
services:
  - name: a
    url: http://127.0.0.1:9/base
    routes:
      - name: prefix
        paths: [/api, /api/v1]
      - name: regex
        paths: ["~/users/(?<id>\\d+)/profile$", "~/items/[a-z]+"]
        regex_priority: 5
      - name: hosts
        hosts: [example.com, "*.example.org", "api.*", "ports.example.net:8443"]
        strip_path: false
        paths: [/]
      - name: methods
        methods: [POST, PUT]
        paths: [/api]
      - name: headers
        headers:
          x-version: ["2", "~*^v[0-9]+$"]
        paths: [/]
      - name: tls
        protocols: [https]
        snis: [secure.example.com, "*.wild.example.com"]
        paths: [/secure]
      - name: root
        paths: [/]
        strip_path: true
"#;

fn router() -> &'static (Router, usize) {
    static R: OnceLock<(Router, usize)> = OnceLock::new();
    R.get_or_init(|| {
        let loaded = portico_common::load_str(CONFIG, &|_| None).expect("fuzz config loads");
        let routes = loaded.snapshot.routes.len();
        (
            Router::new(&loaded.snapshot).expect("fuzz config compiles"),
            routes,
        )
    })
}

fuzz_target!(|data: &[u8]| {
    // method \0 host \0 path \0 header value \0 sni; bytes 0..2 of the last part pick flags.
    let mut parts = data.split(|b| *b == 0);
    let mut next = || std::str::from_utf8(parts.next().unwrap_or_default()).unwrap_or("");
    let (method, host, raw_path, header, sni) = (next(), next(), next(), next(), next());
    let Ok(path) = portico_common::path::canonicalize(raw_path) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(header) {
        headers.insert("x-version", v);
    }
    let https = sni.len() % 2 == 1;
    let (router, routes) = router();
    let req = RouteRequest {
        method,
        host,
        port: if host.len() % 3 == 0 { 8443 } else { 8000 },
        path: &path,
        headers: &headers,
        https,
        sni: https.then_some(sni),
    };
    if let Some(m) = router.find(&req) {
        assert!(m.route_index < *routes);
        assert!(m.upstream_path.starts_with('/'), "{:?}", m.upstream_path);
    }
});
