//! The jwt plugin through the real proxy (KONG.md §3.4, SECURITY.md §3.3): every Kong error body
//! and challenge, each algorithm family, each token source, and the hostile vectors, with the
//! upstream's request count proving nothing got through. Keys are generated at test time.

#[path = "support/harness.rs"]
mod harness;
#[path = "plugin_jwt/hostile.rs"]
mod hostile;

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use harness::{get, send, Gateway, Got, Upstream};
use http::Request;
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::KeyPair;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
use serde_json::{json, Value};

/// Key material shared by every test of this binary (RSA generation is slow in debug builds).
struct Keys {
    rsa_private: String,
    rsa_public: String,
    rsa_public_der: Vec<u8>,
    rsa_short_private: String,
    rsa_short_public: String,
    p256: KeyPair,
    p384: KeyPair,
    ed25519: KeyPair,
    attacker: KeyPair,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    let mut rng = rsa::rand_core::OsRng;
    let rsa = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
    let short = rsa::RsaPrivateKey::new(&mut rng, 1024).unwrap();
    let public = |k: &rsa::RsaPrivateKey| k.to_public_key().to_public_key_pem(LineEnding::LF);
    let ec = |alg| KeyPair::generate_for(alg).unwrap();
    Keys {
        rsa_private: rsa.to_pkcs1_pem(LineEnding::LF).unwrap().to_string(),
        rsa_public: public(&rsa).unwrap(),
        rsa_public_der: rsa.to_public_key().to_public_key_der().unwrap().to_vec(),
        rsa_short_private: short.to_pkcs1_pem(LineEnding::LF).unwrap().to_string(),
        rsa_short_public: public(&short).unwrap(),
        p256: ec(&rcgen::PKCS_ECDSA_P256_SHA256),
        p384: ec(&rcgen::PKCS_ECDSA_P384_SHA384),
        ed25519: ec(&rcgen::PKCS_ED25519),
        attacker: ec(&rcgen::PKCS_ECDSA_P256_SHA256),
    }
});

const HS_SECRET: &str = "a-long-enough-shared-secret-for-hs256";
/// `HS_B64_RAW` base64-encoded, for `secret_is_base64`.
const HS_B64_RAW: &[u8] = b"\x00\x01binary secret\xff";
const ATTACKER_SECRET: &str = "the-attacker-knows-this-one";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token for `header` and `claims` (JSON text, written as given) signed with `key` under
/// `alg`: how hostile headers (duplicate keys, `crit`) get a signature that would verify.
fn signed_raw(alg: Algorithm, key: &EncodingKey, header: &str, claims: &str) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).unwrap();
    format!("{input}.{sig}")
}

/// A token minted by `jsonwebtoken` itself.
fn mint(alg: Algorithm, key: &EncodingKey, claims: Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap()
}

fn hs(secret: &str) -> EncodingKey {
    EncodingKey::from_secret(secret.as_bytes())
}

fn rs() -> EncodingKey {
    EncodingKey::from_rsa_pem(KEYS.rsa_private.as_bytes()).unwrap()
}

fn ec(kp: &KeyPair) -> EncodingKey {
    EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap()
}

fn ed() -> EncodingKey {
    EncodingKey::from_ed_pem(KEYS.ed25519.serialize_pem().as_bytes()).unwrap()
}

fn secret(key: &str, algorithm: &str, material: &str) -> Value {
    if algorithm.starts_with("HS") {
        json!({ "key": key, "algorithm": algorithm, "secret": material })
    } else {
        json!({ "key": key, "algorithm": algorithm, "rsa_public_key": material })
    }
}

/// One service, a route per plugin config, consumers with a secret of every algorithm.
fn config(upstream: std::net::SocketAddr) -> String {
    let route = |path: &str, conf: Value| {
        json!({ "name": path.trim_start_matches('/'), "paths": [path], "strip_path": false,
                "plugins": [{ "name": "jwt", "config": conf }] })
    };
    let p256 = KEYS.p256.public_key_pem();
    json!({
        "_format_version": "3.0",
        "services": [{
            "name": "s",
            "url": format!("http://{upstream}"),
            "routes": [
                route("/hs", json!({})),
                route("/kid", json!({ "key_claim_name": "kid" })),
                route("/b64", json!({ "secret_is_base64": true })),
                route("/claims", json!({ "claims_to_verify": ["exp", "nbf"] })),
                route("/max", json!({ "claims_to_verify": ["exp"], "maximum_expiration": 60 })),
                route("/realm", json!({ "realm": "portico" })),
                route("/cookie", json!({ "cookie_names": ["session"], "uri_param_names": [] })),
                route("/anon", json!({ "anonymous": "anonymous" })),
                route("/preflight", json!({ "run_on_preflight": false })),
            ],
        }],
        "consumers": [
            { "username": "alice", "custom_id": "c-alice", "jwt_secrets": [
                secret("hs256", "HS256", HS_SECRET),
                secret("hs384", "HS384", HS_SECRET),
                secret("hs512", "HS512", HS_SECRET),
                secret("rs256", "RS256", &KEYS.rsa_public),
                secret("rs384", "RS384", &KEYS.rsa_public),
                secret("rs512", "RS512", &KEYS.rsa_public),
                secret("ps256", "PS256", &KEYS.rsa_public),
                secret("ps384", "PS384", &KEYS.rsa_public),
                secret("ps512", "PS512", &KEYS.rsa_public),
                secret("es256", "ES256", &p256),
                secret("es384", "ES384", &KEYS.p384.public_key_pem()),
                secret("eddsa", "EdDSA", &KEYS.ed25519.public_key_pem()),
                secret("b64", "HS256", &STANDARD.encode(HS_B64_RAW)),
                secret("b64-empty", "HS256", "===="),
                secret("es256-wrong-curve", "ES256", &KEYS.p384.public_key_pem()),
                secret("rs-short", "RS256", &KEYS.rsa_short_public),
            ]},
            { "username": "mallory", "jwt_secrets": [secret("mallory", "HS256", ATTACKER_SECRET)] },
            { "username": "anonymous", "id": "00000000-0000-4000-8000-000000000001" },
        ],
    })
    .to_string()
}

async fn setup() -> (Gateway, Upstream) {
    let up = Upstream::echo("up").await;
    let gw = Gateway::start(&config(up.addr)).await;
    (gw, up)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// GET `path` with `token` in Authorization.
async fn call(gw: &Gateway, path: &str, token: &str) -> Got {
    get(&gw.url(path), &[("authorization", &bearer(token))]).await
}

/// Asserts a 401 with `body` and the `invalid_token` challenge, and that nothing reached `up`.
#[track_caller]
fn refused(got: &Got, up: &Upstream, before: usize, body: Value, what: &str) {
    assert_eq!(got.status, 401, "{what}: {}", got.body);
    assert_eq!(got.json(), body, "{what}");
    assert_eq!(
        got.headers["www-authenticate"], "Bearer error=\"invalid_token\"",
        "{what}"
    );
    assert!(got.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(up.count(), before, "{what}: the upstream saw the request");
}

fn msg(m: &str) -> Value {
    json!({ "message": m })
}

#[tokio::test]
async fn every_algorithm_family_authenticates_with_the_consumers_headers() {
    let (gw, up) = setup().await;
    let claims = |iss: &str| json!({ "iss": iss, "sub": "x" });
    let cases: Vec<(&str, String)> = vec![
        (
            "hs256",
            mint(Algorithm::HS256, &hs(HS_SECRET), claims("hs256")),
        ),
        (
            "hs384",
            mint(Algorithm::HS384, &hs(HS_SECRET), claims("hs384")),
        ),
        (
            "hs512",
            mint(Algorithm::HS512, &hs(HS_SECRET), claims("hs512")),
        ),
        ("rs256", mint(Algorithm::RS256, &rs(), claims("rs256"))),
        ("rs384", mint(Algorithm::RS384, &rs(), claims("rs384"))),
        ("rs512", mint(Algorithm::RS512, &rs(), claims("rs512"))),
        ("ps256", mint(Algorithm::PS256, &rs(), claims("ps256"))),
        ("ps384", mint(Algorithm::PS384, &rs(), claims("ps384"))),
        ("ps512", mint(Algorithm::PS512, &rs(), claims("ps512"))),
        (
            "es256",
            mint(Algorithm::ES256, &ec(&KEYS.p256), claims("es256")),
        ),
        (
            "es384",
            mint(Algorithm::ES384, &ec(&KEYS.p384), claims("es384")),
        ),
        ("eddsa", mint(Algorithm::EdDSA, &ed(), claims("eddsa"))),
    ];
    let rt = gw.shared.runtime.load_full().expect("a runtime");
    let alice = rt.snapshot.consumers[0].id.to_string();
    for (i, (key, token)) in cases.iter().enumerate() {
        let got = call(&gw, "/hs", token).await;
        assert_eq!(got.status, 200, "{key}: {}", got.body);
        assert_eq!(up.count(), i + 1);
        let seen = up.last();
        assert_eq!(seen.headers["x-consumer-id"], alice.as_str(), "{key}");
        assert_eq!(seen.headers["x-consumer-username"], "alice", "{key}");
        assert_eq!(seen.headers["x-consumer-custom-id"], "c-alice", "{key}");
        assert_eq!(seen.headers["x-credential-identifier"], *key, "{key}");
        assert!(!seen.headers.contains_key("x-anonymous-consumer"));
        // Kong's jwt has no hide_credentials: the token goes upstream.
        assert_eq!(seen.headers["authorization"], bearer(token).as_str());
    }
    gw.stop().await;
}

#[tokio::test]
async fn missing_token_gets_the_bare_challenge_and_realm_is_added() {
    let (gw, up) = setup().await;
    let got = get(&gw.url("/hs"), &[]).await;
    assert_eq!(got.status, 401);
    assert_eq!(got.body, r#"{"message":"Unauthorized"}"#);
    assert_eq!(got.headers["www-authenticate"], "Bearer");
    // A non-Bearer Authorization is no token at all.
    let got = get(&gw.url("/hs"), &[("authorization", "Basic YTpi")]).await;
    assert_eq!(
        (got.status.as_u16(), got.json()),
        (401, msg("Unauthorized"))
    );
    let got = get(&gw.url("/realm"), &[]).await;
    assert_eq!(got.headers["www-authenticate"], "Bearer realm=\"portico\"");
    let got = call(&gw, "/realm", "garbage").await;
    assert_eq!(
        got.headers["www-authenticate"],
        "Bearer realm=\"portico\" error=\"invalid_token\""
    );
    assert_eq!(got.json(), msg("Bad token; invalid JSON"));
    assert_eq!(up.count(), 0);
    gw.stop().await;
}

#[tokio::test]
async fn tokens_come_from_query_cookie_and_header_and_must_agree() {
    let (gw, up) = setup().await;
    let token = mint(Algorithm::HS256, &hs(HS_SECRET), json!({ "iss": "hs256" }));
    let other = mint(Algorithm::HS256, &hs(HS_SECRET), json!({ "iss": "hs384" }));
    let got = get(&gw.url(&format!("/hs?jwt={token}")), &[]).await;
    assert_eq!(got.status, 200, "{}", got.body);
    let cookie = format!("a=1; session={token}");
    let got = get(&gw.url("/cookie"), &[("cookie", &cookie)]).await;
    assert_eq!(got.status, 200, "{}", got.body);
    // The same token in two places is one token.
    let got = get(
        &gw.url(&format!("/hs?jwt={token}")),
        &[("authorization", &bearer(&token))],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    // A lowercase scheme is Kong's pattern too.
    let got = get(
        &gw.url("/hs"),
        &[("authorization", &format!("bearer {token}"))],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let before = up.count();

    let multiple = msg("Multiple tokens provided");
    let got = get(
        &gw.url(&format!("/hs?jwt={other}")),
        &[("authorization", &bearer(&token))],
    )
    .await;
    refused(&got, &up, before, multiple.clone(), "query + header");
    let got = get(&gw.url(&format!("/hs?jwt={token}&jwt={other}")), &[]).await;
    refused(&got, &up, before, multiple.clone(), "repeated query arg");
    // Kong reads only the first Authorization header; a second one must not be ignored. The
    // proxy refuses a repeated Authorization for every route, before any plugin runs.
    let req = Request::get(gw.url("/hs"))
        .header("authorization", bearer(&token))
        .header("authorization", bearer(&other))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let got = send(req).await;
    assert_eq!(got.status, 400, "two headers: {}", got.body);
    assert_eq!(
        got.json()["message"],
        "Repeated header that must be single",
        "two headers"
    );
    assert_eq!(up.count(), before, "two headers");
    let cookie = format!("session={token}; session={other}");
    let got = get(&gw.url("/cookie"), &[("cookie", &cookie)]).await;
    refused(&got, &up, before, multiple, "two cookies");
    // The cookie route reads no query argument.
    let got = get(&gw.url(&format!("/cookie?jwt={token}")), &[]).await;
    assert_eq!(
        (got.status.as_u16(), got.json()),
        (401, msg("Unauthorized"))
    );
    assert_eq!(up.count(), before);
    gw.stop().await;
}

#[tokio::test]
async fn kongs_error_bodies() {
    let (gw, up) = setup().await;
    let t = |claims: Value| mint(Algorithm::HS256, &hs(HS_SECRET), claims);
    let h = b64(r#"{"alg":"HS256","typ":"JWT"}"#);
    let cases: Vec<(String, &str, Value)> = vec![
        ("not-a-jwt".into(), "/hs", msg("Bad token; invalid JSON")),
        (
            format!("{h}.{}.", b64("{nope")),
            "/hs",
            msg("Bad token; invalid JSON"),
        ),
        (
            format!("{}.{}.", b64(r#"{"typ":"JWT"}"#), b64("{}")),
            "/hs",
            msg("Bad token; invalid alg"),
        ),
        (
            format!("{h}.{}.", b64("null")),
            "/hs",
            msg("Bad token; invalid claims"),
        ),
        (
            format!("{h}.{}.A", b64("{}")),
            "/hs",
            msg("Bad token; invalid signature"),
        ),
        (
            t(json!({ "sub": "x" })),
            "/hs",
            msg("No mandatory 'iss' in claims"),
        ),
        (
            t(json!({ "iss": "" })),
            "/hs",
            msg("Invalid 'iss' in claims"),
        ),
        (
            t(json!({ "iss": 42 })),
            "/hs",
            msg("Invalid 'iss' in claims"),
        ),
        (
            t(json!({ "iss": "nobody" })),
            "/hs",
            msg("No credentials found for given 'iss'"),
        ),
        (
            t(json!({ "iss": "hs256" })),
            "/kid",
            msg("No mandatory 'kid' in claims"),
        ),
        (
            t(json!({ "iss": "rs256" })),
            "/hs",
            msg("Invalid algorithm"),
        ),
        (
            mint(Algorithm::HS256, &hs("wrong"), json!({ "iss": "hs256" })),
            "/hs",
            msg("Invalid signature"),
        ),
        (
            t(json!({ "iss": "b64-empty" })),
            "/b64",
            msg("Invalid key/secret"),
        ),
        (
            t(json!({ "iss": "hs256", "exp": now() - 1, "nbf": 0 })),
            "/claims",
            json!({ "exp": "token expired" }),
        ),
        (
            t(json!({ "iss": "hs256", "exp": now(), "nbf": now() })),
            "/claims",
            json!({ "exp": "token expired" }),
        ),
        (
            t(json!({ "iss": "hs256", "exp": "9999999999", "nbf": 0 })),
            "/claims",
            json!({ "exp": "must be a number" }),
        ),
        (
            t(json!({ "iss": "hs256" })),
            "/claims",
            json!({ "exp": "must be a number", "nbf": "must be a number" }),
        ),
        (
            t(json!({ "iss": "hs256", "exp": now() + 60, "nbf": now() + 30 })),
            "/claims",
            json!({ "nbf": "token not valid yet" }),
        ),
        (
            t(json!({ "iss": "hs256", "exp": now() - 1, "nbf": "0" })),
            "/claims",
            json!({ "exp": "token expired", "nbf": "must be a number" }),
        ),
        (
            t(json!({ "iss": "hs256", "exp": now() + 3600 })),
            "/max",
            json!({ "exp": "exceeds maximum allowed expiration" }),
        ),
        (
            t(json!({ "iss": "hs256", "exp": -1 })),
            "/max",
            json!({ "exp": "token expired" }),
        ),
    ];
    for (token, path, body) in cases {
        let got = call(&gw, path, &token).await;
        refused(&got, &up, 0, body.clone(), &format!("{path} {body}"));
    }
    // The same checks pass when they should: exp/nbf in range (floats count as numbers).
    let ok = [
        (
            t(json!({ "iss": "hs256", "exp": now() + 30, "nbf": now() })),
            "/claims",
        ),
        (
            t(json!({ "iss": "hs256", "exp": (now() + 30) as f64 + 0.5, "nbf": 1.5 })),
            "/claims",
        ),
        (t(json!({ "iss": "hs256", "exp": now() + 59 })), "/max"),
        // Not listed in claims_to_verify, so not checked (Kong).
        (t(json!({ "iss": "hs256", "exp": 1, "nbf": "soon" })), "/hs"),
    ];
    for (i, (token, path)) in ok.iter().enumerate() {
        let got = call(&gw, path, token).await;
        assert_eq!(got.status, 200, "{path}: {}", got.body);
        assert_eq!(up.count(), i + 1);
    }
    gw.stop().await;
}

#[tokio::test]
async fn kid_in_the_header_and_base64_secrets() {
    let (gw, up) = setup().await;
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rs256".into());
    let token = jsonwebtoken::encode(&header, &json!({ "sub": "x" }), &rs()).unwrap();
    let got = call(&gw, "/kid", &token).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(up.last().headers["x-credential-identifier"], "rs256");

    let key = EncodingKey::from_secret(HS_B64_RAW);
    let token = mint(Algorithm::HS256, &key, json!({ "iss": "b64" }));
    let got = call(&gw, "/b64", &token).await;
    assert_eq!(got.status, 200, "{}", got.body);
    // Without secret_is_base64 the same secret is its base64 text.
    refused(
        &call(&gw, "/hs", &token).await,
        &up,
        2,
        msg("Invalid signature"),
        "b64 off",
    );
    gw.stop().await;
}

#[tokio::test]
async fn anonymous_preflight_and_spoofed_identity_headers() {
    let (gw, up) = setup().await;
    let spoof = [
        ("x-consumer-id", "00000000-0000-4000-8000-0000000000ff"),
        ("x-consumer-username", "admin"),
        ("x-credential-identifier", "admin-key"),
        ("x-anonymous-consumer", "false"),
    ];
    // A valid token: the upstream sees who the token says, not what the client wrote.
    let token = mint(Algorithm::HS256, &hs(HS_SECRET), json!({ "iss": "hs256" }));
    let auth = bearer(&token);
    let mut headers = spoof.to_vec();
    headers.push(("authorization", &auth));
    let got = get(&gw.url("/hs"), &headers).await;
    assert_eq!(got.status, 200, "{}", got.body);
    let seen = up.last();
    assert_eq!(seen.headers["x-consumer-username"], "alice");
    assert_eq!(seen.headers["x-credential-identifier"], "hs256");
    assert!(!seen.headers.contains_key("x-anonymous-consumer"));

    // No valid token on the anonymous route: the anonymous consumer, without a credential.
    let stranger = mint(Algorithm::HS256, &hs(HS_SECRET), json!({ "iss": "nobody" }));
    for bad in [None, Some("garbage"), Some(stranger.as_str())] {
        let mut headers = spoof.to_vec();
        let auth = bad.map(bearer);
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        let got = get(&gw.url("/anon"), &headers).await;
        assert_eq!(got.status, 200, "{}", got.body);
        let seen = up.last();
        assert_eq!(
            seen.headers["x-consumer-id"],
            "00000000-0000-4000-8000-000000000001"
        );
        assert_eq!(seen.headers["x-consumer-username"], "anonymous");
        assert_eq!(seen.headers["x-anonymous-consumer"], "true");
        assert!(!seen.headers.contains_key("x-credential-identifier"));
    }
    // A valid token on the anonymous route still authenticates.
    let got = call(&gw, "/anon", &token).await;
    assert_eq!(got.status, 200);
    assert_eq!(up.last().headers["x-consumer-username"], "alice");

    // Spoofed headers and no token: refused, nothing upstream.
    let before = up.count();
    let got = get(&gw.url("/hs"), &spoof).await;
    assert_eq!(
        (got.status.as_u16(), got.json()),
        (401, msg("Unauthorized"))
    );
    assert_eq!(up.count(), before);

    // run_on_preflight = false lets OPTIONS through unauthenticated; other methods are checked.
    let req = Request::options(gw.url("/preflight"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(req).await.status, 200);
    assert_eq!(up.count(), before + 1);
    assert!(!up.last().headers.contains_key("x-consumer-id"));
    assert_eq!(get(&gw.url("/preflight"), &[]).await.status, 401);
    let req = Request::options(gw.url("/hs"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(req).await.status, 401);
    assert_eq!(up.count(), before + 1);
    gw.stop().await;
}

/// A token verified once is remembered (so its signature is not checked again), but what
/// depends on the clock is checked on every request, and a new config forgets it: a rotated
/// secret or a removed consumer refuses a token that was just accepted.
#[tokio::test]
async fn a_token_seen_before_is_still_checked_against_the_clock_and_the_current_config() {
    let (gw, up) = setup().await;
    // Valid for two to three more seconds on /claims, which verifies exp and nbf.
    let exp = now() + 3;
    let token = mint(
        Algorithm::HS256,
        &hs(HS_SECRET),
        json!({ "iss": "hs256", "exp": exp, "nbf": now() - 60 }),
    );
    for i in 1..=3 {
        let got = call(&gw, "/claims", &token).await;
        assert_eq!(got.status, 200, "request {i}: {}", got.body);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let expired = loop {
        let got = call(&gw, "/claims", &token).await;
        if got.status != 200 {
            break got;
        }
        assert!(
            now() <= exp + 1 && std::time::Instant::now() < deadline,
            "a token that expired at {exp} is still accepted at {}",
            now()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let before = up.count();
    refused(
        &expired,
        &up,
        before,
        json!({ "exp": "token expired" }),
        "expired after it was remembered",
    );
    assert!(now() >= exp, "refused before it expired");

    // A token without exp, accepted twice under the current secret.
    let token = mint(Algorithm::HS256, &hs(HS_SECRET), json!({ "iss": "hs256" }));
    for _ in 0..2 {
        assert_eq!(call(&gw, "/hs", &token).await.status, 200);
    }
    // Swaps in `doc` and checks the same token is now refused with `body`.
    async fn refused_under(gw: &Gateway, up: &Upstream, token: &str, doc: &Value, body: Value) {
        gw.apply(&doc.to_string());
        let before = up.count();
        let got = call(gw, "/hs", token).await;
        refused(&got, up, before, body, &format!("under {doc}"));
    }
    let mut doc: Value = serde_json::from_str(&config(up.addr)).unwrap();
    let alice_secrets = &mut doc["consumers"][0]["jwt_secrets"];
    assert_eq!(alice_secrets[0]["key"], "hs256");
    alice_secrets[0]["secret"] = json!("rotated-secret-that-the-token-was-not-signed-with");
    refused_under(&gw, &up, &token, &doc, msg("Invalid signature")).await;

    // Back to the old secret: accepted again; then alice's secret is removed.
    gw.apply(&config(up.addr));
    assert_eq!(call(&gw, "/hs", &token).await.status, 200);
    let mut doc: Value = serde_json::from_str(&config(up.addr)).unwrap();
    doc["consumers"][0]["jwt_secrets"]
        .as_array_mut()
        .unwrap()
        .remove(0);
    let body = msg("No credentials found for given 'iss'");
    refused_under(&gw, &up, &token, &doc, body).await;
    gw.stop().await;
}
