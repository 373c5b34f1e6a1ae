//! SECURITY.md §3.3's hostile tokens: algorithm confusion, tampering, non-canonical encodings,
//! hostile JOSE headers. Every case asserts the exact 401 and that the upstream saw nothing.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey};
use rcgen::SigningKey as _;
use serde_json::{json, Value};

use super::harness::{self, get, Upstream};
use super::{
    b64, bearer, call, ec, hs, mint, msg, refused, rs, setup, signed_raw, ATTACKER_SECRET,
    HS_SECRET, KEYS,
};
/// An RS256 token signed with the 1024-bit key. jsonwebtoken's backend (aws-lc) refuses to sign
/// with a key that short, so the rsa crate signs it.
fn short_rsa_rs256(claims: &str) -> String {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::signature::{SignatureEncoding, Signer};
    let key = rsa::RsaPrivateKey::from_pkcs1_pem(&KEYS.rsa_short_private).unwrap();
    let input = format!("{}.{}", b64(r#"{"alg":"RS256","typ":"JWT"}"#), b64(claims));
    let signer = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(key);
    let sig = signer.sign(input.as_bytes()).to_vec();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[tokio::test]
async fn algorithm_confusion_is_refused() {
    let (gw, up) = setup().await;
    let claims = r#"{"iss":"rs256"}"#;
    let none = |alg: &str, sig: &str| {
        format!(
            "{}.{}.{sig}",
            b64(format!(r#"{{"alg":"{alg}"}}"#)),
            b64(claims)
        )
    };
    let bad_alg = msg("Bad token; invalid alg");
    let cases: Vec<(String, Value, &str)> = vec![
        (none("none", ""), bad_alg.clone(), "alg none"),
        (none("None", ""), bad_alg.clone(), "alg None"),
        (none("NONE", ""), bad_alg.clone(), "alg NONE"),
        (
            none("none", "c2lnbmF0dXJl"),
            bad_alg.clone(),
            "alg none with a signature",
        ),
        (none("", ""), bad_alg.clone(), "empty alg"),
        // HS256 keyed with the consumer's public key (PEM text and DER bytes).
        (
            mint(
                Algorithm::HS256,
                &hs(&KEYS.rsa_public),
                json!({ "iss": "rs256" }),
            ),
            msg("Invalid algorithm"),
            "HS256 with the RSA PEM",
        ),
        (
            mint(
                Algorithm::HS256,
                &EncodingKey::from_secret(&KEYS.rsa_public_der),
                json!({ "iss": "rs256" }),
            ),
            msg("Invalid algorithm"),
            "HS256 with the RSA DER",
        ),
        (
            mint(
                Algorithm::HS256,
                &hs(&KEYS.p256.public_key_pem()),
                json!({ "iss": "es256" }),
            ),
            msg("Invalid algorithm"),
            "HS256 with the EC PEM",
        ),
        // Right key, another algorithm of the family, or another family.
        (
            mint(Algorithm::PS256, &rs(), json!({ "iss": "rs256" })),
            msg("Invalid algorithm"),
            "RS256→PS256",
        ),
        (
            mint(Algorithm::RS256, &rs(), json!({ "iss": "ps256" })),
            msg("Invalid algorithm"),
            "PS256→RS256",
        ),
        (
            mint(Algorithm::RS512, &rs(), json!({ "iss": "rs256" })),
            msg("Invalid algorithm"),
            "RS256→RS512",
        ),
        (
            mint(Algorithm::ES256, &ec(&KEYS.p256), json!({ "iss": "rs256" })),
            msg("Invalid algorithm"),
            "ES256 for RS256",
        ),
        // RS256 header, PS256 signature: the pinned RS256 verifier refuses it.
        (
            {
                let t = mint(Algorithm::PS256, &rs(), json!({ "iss": "rs256" }));
                let sig = t.rsplit('.').next().unwrap().to_owned();
                let input = format!("{}.{}", b64(r#"{"alg":"RS256","typ":"JWT"}"#), b64(claims));
                format!("{input}.{sig}")
            },
            msg("Invalid signature"),
            "PS256 signature under an RS256 header",
        ),
        (
            mint(
                Algorithm::ES256,
                &ec(&KEYS.p256),
                json!({ "iss": "es256-wrong-curve" }),
            ),
            msg("Invalid key/secret"),
            "ES256 secret holding a P-384 key",
        ),
        (
            short_rsa_rs256(r#"{"iss":"rs-short"}"#),
            msg("Invalid key/secret"),
            "1024-bit RSA key",
        ),
    ];
    for (token, body, what) in cases {
        refused(&call(&gw, "/hs", &token).await, &up, 0, body, what);
    }
    gw.stop().await;
}

#[tokio::test]
async fn tampered_and_non_canonical_tokens_are_refused() {
    let (gw, up) = setup().await;
    let rs_token = mint(
        Algorithm::RS256,
        &rs(),
        json!({ "iss": "rs256", "admin": false }),
    );
    let es_token = mint(Algorithm::ES256, &ec(&KEYS.p256), json!({ "iss": "es256" }));
    let hs_token = mint(Algorithm::HS256, &hs(HS_SECRET), json!({ "iss": "hs256" }));
    let split = |t: &str| -> (String, String, String) {
        let p: Vec<&str> = t.split('.').collect();
        (p[0].into(), p[1].into(), p[2].into())
    };
    let (h, c, s) = split(&rs_token);
    let mut sig = URL_SAFE_NO_PAD.decode(&s).unwrap();
    sig[10] ^= 0x01;
    let flipped = b64(&sig);
    let (eh, ec_, es) = split(&es_token);
    let es_raw = URL_SAFE_NO_PAD.decode(&es).unwrap();
    let der = KEYS.p256.sign(format!("{eh}.{ec_}").as_bytes()).unwrap();
    let (hh, hc, hsig) = split(&hs_token);
    let inv_sig = msg("Invalid signature");
    let bad_sig = msg("Bad token; invalid signature");
    let bad_json = msg("Bad token; invalid JSON");
    let cases: Vec<(String, Value, &str)> = vec![
        (
            format!("{h}.{}.{s}", b64(r#"{"iss":"rs256","admin":true}"#)),
            inv_sig.clone(),
            "payload modified",
        ),
        (
            format!("{}.{c}.{s}", b64(r#"{"alg":"RS256","typ":"JWT","x":1}"#)),
            inv_sig.clone(),
            "header modified",
        ),
        (
            format!("{h}.{c}.{flipped}"),
            inv_sig.clone(),
            "one bit flipped",
        ),
        (
            format!("{h}.{c}.{}", b64(&sig[..250])),
            inv_sig.clone(),
            "truncated",
        ),
        (format!("{h}.{c}."), inv_sig.clone(), "signature removed"),
        (
            format!("{h}.{c}"),
            bad_json.clone(),
            "signature segment removed",
        ),
        (format!("{h}.{c}.{s}.{s}"), bad_sig.clone(), "extra segment"),
        (format!("{h}.{c}.{s}."), bad_sig.clone(), "trailing dot"),
        (
            format!("{hh}.{hc}.{hsig}="),
            bad_sig.clone(),
            "padded signature",
        ),
        (
            format!("{hh}=.{hc}.{hsig}"),
            bad_json.clone(),
            "padded header",
        ),
        (
            format!("{hh}.{hc}.+{}", &hsig[1..]),
            bad_sig.clone(),
            "standard alphabet",
        ),
        (
            json!({ "protected": h, "payload": c, "signature": s }).to_string(),
            bad_json.clone(),
            "JSON serialisation",
        ),
        (
            format!("{eh}.{ec_}.{}", b64([0u8; 64])),
            inv_sig.clone(),
            "ES256 r = s = 0",
        ),
        (
            format!("{eh}.{ec_}.{}", b64(&der)),
            inv_sig.clone(),
            "ES256 DER signature",
        ),
        (
            format!("{eh}.{ec_}.{}", b64(&es_raw[..63])),
            inv_sig.clone(),
            "ES256 short signature",
        ),
        (
            mint(
                Algorithm::HS256,
                &hs(ATTACKER_SECRET),
                json!({ "iss": "hs256" }),
            ),
            inv_sig.clone(),
            "another consumer's key claim, signed with the attacker's secret",
        ),
    ];
    // A signature whose last character carries non-zero unused bits decodes to the same bytes
    // in lenient decoders; it is not the canonical spelling.
    let last = hsig.chars().last().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = alphabet.find(last).unwrap();
    let sibling = alphabet.chars().nth(idx + 1).unwrap();
    let mut cases = cases;
    cases.push((
        format!("{hh}.{hc}.{}{sibling}", &hsig[..hsig.len() - 1]),
        bad_sig,
        "trailing bits",
    ));
    for (token, body, what) in cases {
        let got = get(&gw.url("/hs"), &[("authorization", &bearer(&token))]).await;
        refused(&got, &up, 0, body, what);
    }
    gw.stop().await;
}

#[tokio::test]
async fn hostile_headers_are_refused_or_ignored_but_never_followed() {
    let (gw, up) = setup().await;
    let attacker_host = Upstream::echo("attacker").await;
    let key = hs(HS_SECRET);
    let claims = r#"{"iss":"hs256"}"#;
    let signed = |header: &str| signed_raw(Algorithm::HS256, &key, header, claims);
    let crit = msg("Bad token; unsupported crit");
    let cases: Vec<(String, Value, &str)> = vec![
        (
            signed(r#"{"alg":"HS256","crit":["exp"],"exp":1}"#),
            crit.clone(),
            "crit exp",
        ),
        (
            signed(r#"{"alg":"HS256","crit":["x-unknown"],"x-unknown":1}"#),
            crit.clone(),
            "crit unknown",
        ),
        (signed(r#"{"alg":"HS256","crit":[]}"#), crit, "empty crit"),
        (
            signed(r#"{"alg":"none","alg":"HS256"}"#),
            msg("Bad token; invalid JSON"),
            "duplicate alg",
        ),
        (
            signed_raw(
                Algorithm::HS256,
                &key,
                r#"{"alg":"HS256"}"#,
                r#"{"iss":"nobody","iss":"hs256"}"#,
            ),
            msg("Bad token; invalid JSON"),
            "duplicate iss",
        ),
    ];
    for (token, body, what) in cases {
        refused(&call(&gw, "/hs", &token).await, &up, 0, body, what);
    }

    // A key named by the token (jku/x5u/jwk/x5c) is never fetched nor trusted: the attacker's
    // own EC key, advertised three ways, cannot stand in for the consumer's.
    let url = format!("http://{}/jwks.json", attacker_host.addr);
    let x = URL_SAFE_NO_PAD.encode(&KEYS.attacker.public_key_raw()[1..33]);
    let y = URL_SAFE_NO_PAD.encode(&KEYS.attacker.public_key_raw()[33..]);
    let jwk = json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y });
    let header = json!({ "alg": "ES256", "jku": url, "x5u": url, "jwk": jwk, "kid": "es256" });
    let token = signed_raw(
        Algorithm::ES256,
        &ec(&KEYS.attacker),
        &header.to_string(),
        r#"{"iss":"es256"}"#,
    );
    refused(
        &call(&gw, "/hs", &token).await,
        &up,
        0,
        msg("Invalid signature"),
        "jku/jwk",
    );
    // Ignored, not refused: the same headers on a token the consumer signed pass.
    let token = signed_raw(
        Algorithm::ES256,
        &ec(&KEYS.p256),
        &header.to_string(),
        r#"{"iss":"es256"}"#,
    );
    assert_eq!(call(&gw, "/hs", &token).await.status, 200);
    assert_eq!(
        attacker_host.count(),
        0,
        "a key URL from the token was fetched"
    );

    // kid injection: whatever the kid says, it is only ever a map key.
    let before = up.count();
    for kid in ["", "../../dev/null", "' OR 1=1--", "null"] {
        let h = json!({ "alg": "HS256", "kid": kid }).to_string();
        let token = signed_raw(Algorithm::HS256, &hs(""), &h, r#"{"sub":"x"}"#);
        let want = if kid.is_empty() {
            msg("Invalid 'kid' in claims")
        } else {
            msg("No credentials found for given 'kid'")
        };
        refused(&call(&gw, "/kid", &token).await, &up, before, want, kid);
    }
    let token = signed_raw(
        Algorithm::HS256,
        &key,
        r#"{"alg":"HS256","kid":null}"#,
        "{}",
    );
    refused(
        &call(&gw, "/kid", &token).await,
        &up,
        before,
        msg("Invalid 'kid' in claims"),
        "kid null",
    );
    // A big kid is looked up, not trusted; past the token limit it is not even decoded.
    let h = json!({ "alg": "HS256", "kid": "k".repeat(40_000) }).to_string();
    let token = signed_raw(Algorithm::HS256, &key, &h, "{}");
    let want = msg("No credentials found for given 'kid'");
    refused(
        &call(&gw, "/kid", &token).await,
        &up,
        before,
        want,
        "40 KB kid",
    );
    // 100 KB: past the node's 64 KiB head limit (`--max-header-size`), so the HTTP layer
    // answers 431 before the plugin runs (the plugin's own 64 KiB token cap is unit-tested in
    // token.rs, and matters when a node raises the head limit).
    let h = json!({ "alg": "HS256", "kid": "k".repeat(100_000) }).to_string();
    let token = signed_raw(Algorithm::HS256, &key, &h, "{}");
    let got = call(&gw, "/kid", &token).await;
    assert_eq!(got.status, 431, "100 KB kid");
    assert_eq!(up.count(), before);
    // 1 MB: the HTTP layer refuses the header before any plugin runs; never the upstream.
    let h = json!({ "alg": "HS256", "kid": "k".repeat(1 << 20) }).to_string();
    let token = signed_raw(Algorithm::HS256, &key, &h, "{}");
    let req = Request::get(gw.url("/kid"))
        .header("authorization", bearer(&token))
        .body(Full::new(Bytes::new()))
        .unwrap();
    if let Ok(resp) = harness::client().request(req).await {
        assert!(resp.status().is_client_error(), "{}", resp.status());
    }
    assert_eq!(up.count(), before);
    gw.stop().await;
}
