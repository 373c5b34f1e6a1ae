//! jwt (KONG.md §3.4; K:kong/plugins/jwt/handler.lua, jwt_parser.lua): a consumer identified by
//! a JSON Web Token signed with one of its `jwt_secrets`.
//!
//! Kong's behaviour and error bodies are kept; what Kong lets through and this does not:
//! non-canonical tokens (padding, stray base64 bits, duplicate JSON keys, extra segments: see
//! [`token`]), a `crit` header, key-claim values that are not strings, empty HMAC secrets and
//! RSA keys under 2048 bits, and several distinct tokens hidden in repeated headers or cookies
//! (Kong reads only the first). `jku`/`x5u`/`x5c`/`jwk` headers are ignored, never fetched or
//! trusted: the key is always the consumer's, and so is the algorithm.
//!
//! Signatures are checked with the secret's pinned algorithm: HMAC with aws-lc directly (a key
//! set up once per secret), public keys with `jsonwebtoken::crypto::verify`. The crate's
//! `decode`/`Validation` path is not used, so its defaults (required `exp`, 60 s leeway, `aud`
//! rejection) cannot change Kong's claim semantics: `exp`/`nbf` are checked here, only when
//! `claims_to_verify` lists them, with no leeway.
//!
//! A token whose signature verified is remembered ([`verified`]), so the same token on the next
//! request skips decoding and the signature; the claims that depend on the clock are checked
//! on every request.

pub mod keys;
pub mod token;
pub mod verified;

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{HeaderName, HeaderValue, COOKIE, WWW_AUTHENTICATE};
use http::{Method, StatusCode};
use portico_common::plugins::jwt::{Claim, Config};
use portico_common::snapshot::{Consumer, JwtSecret};
use serde_json::{json, Map, Value};

use self::keys::{KeyError, Keys};
use self::token::{Member, Token};
use super::{BuildEnv, Credential, Ctx, Flow, Plugin, Reply, Req};

/// The jwt plugin.
#[derive(Debug)]
pub struct Jwt {
    uri_param_names: Vec<String>,
    cookie_names: Vec<String>,
    header_names: Vec<HeaderName>,
    key_claim_name: String,
    secret_is_base64: bool,
    claims_to_verify: Vec<Claim>,
    maximum_expiration: u64,
    anonymous: Option<String>,
    run_on_preflight: bool,
    /// `WWW-Authenticate` when no token was found: `Bearer` or `Bearer realm="<realm>"`.
    challenge: HeaderValue,
    /// `WWW-Authenticate` for every other failure: the above plus ` error="invalid_token"`.
    challenge_invalid: HeaderValue,
    /// Parsed public keys of the snapshot this instance serves (instances are rebuilt with
    /// every runtime). Lives here until the runtime owns one next to `Consumers`.
    keys: OnceLock<Keys>,
}

/// Why authentication failed, and so what the client is told.
#[derive(Debug)]
enum Failure {
    /// No token anywhere: `{"message":"Unauthorized"}` with the bare challenge.
    NoToken,
    /// `{"message": ...}` with `error="invalid_token"`.
    Message(Cow<'static, str>),
    /// Failed claim checks, as Kong's error table (`{"exp":"token expired"}`).
    Claims(Map<String, Value>),
}

impl Plugin for Jwt {
    const NAME: &'static str = "jwt";
    type Config = Config;

    fn build(config: Config, _env: &BuildEnv<'_>) -> Result<Self, String> {
        let header_names = config
            .header_names
            .iter()
            .map(|n| {
                HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes())
                    .map_err(|_| format!("header_names: '{n}' is not a header name"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Kong's exact spelling: no comma before `error` (K:kong/plugins/jwt/handler.lua).
        let base = match &config.realm {
            Some(r) => format!("Bearer realm=\"{r}\""),
            None => "Bearer".to_owned(),
        };
        let challenge = HeaderValue::from_str(&base)
            .map_err(|_| "realm is not a valid header value".to_owned())?;
        let challenge_invalid = HeaderValue::from_str(&format!("{base} error=\"invalid_token\""))
            .map_err(|_| "realm is not a valid header value".to_owned())?;
        Ok(Jwt {
            uri_param_names: config.uri_param_names,
            cookie_names: config.cookie_names,
            header_names,
            key_claim_name: config.key_claim_name,
            secret_is_base64: config.secret_is_base64,
            claims_to_verify: config.claims_to_verify,
            maximum_expiration: config.maximum_expiration,
            anonymous: config.anonymous,
            run_on_preflight: config.run_on_preflight,
            challenge,
            challenge_invalid,
            keys: OnceLock::new(),
        })
    }

    async fn access<'r>(&'r self, req: &mut Req<'_>, ctx: &mut Ctx<'r>) -> Flow {
        if !self.run_on_preflight && *req.method == Method::OPTIONS {
            return Flow::Continue;
        }
        // Logical OR between auth plugins: an earlier one already authenticated the request.
        if self.anonymous.is_some() && ctx.credential.is_some() {
            return Flow::Continue;
        }
        match self.authenticate(req, ctx) {
            Ok((consumer, secret)) => {
                ctx.authenticate(consumer, Credential::Name(&secret.key));
                Flow::Continue
            }
            Err(failure) => {
                tracing::debug!(
                    plugin = "jwt",
                    failure = failure.kind(),
                    "jwt authentication failed"
                );
                match &self.anonymous {
                    Some(anonymous) => ctx.authenticate_anonymous(anonymous),
                    None => Flow::Respond(self.reply(failure)),
                }
            }
        }
    }
}

impl Jwt {
    /// Kong's `do_authentication`: the consumer and secret a valid token names.
    fn authenticate<'r>(
        &'r self,
        req: &Req<'_>,
        ctx: &Ctx<'r>,
    ) -> Result<(&'r Consumer, &'r JwtSecret), Failure> {
        let raw = self.retrieve_token(req)?;
        let keys = self
            .keys
            .get_or_init(|| Keys::new(ctx.snapshot, self.secret_is_base64));
        let cache = keys.verified(ctx.snapshot);
        // A token verified before in this snapshot: only what depends on the clock is left.
        let remembered = cache.and_then(|c| {
            c.with(&raw, |v| {
                let found = ctx.consumers.jwt(ctx.snapshot, &v.key);
                found.map(|(consumer, secret)| (consumer, secret, v.exp, v.nbf))
            })
            .flatten()
        });
        let (consumer, secret, exp, nbf) = match remembered {
            Some(found) => found,
            None => {
                let (consumer, secret, token) = self.verify(&raw, keys, ctx)?;
                if let Some(c) = cache {
                    c.remember(&raw, &secret.key, token.exp, token.nbf);
                }
                (consumer, secret, token.exp, token.nbf)
            }
        };

        let now = now();
        self.verify_claims(exp, nbf, now)?;
        if self.maximum_expiration > 0 {
            let within = exp.is_some_and(|exp| exp - now <= self.maximum_expiration as f64);
            if !within {
                let mut errors = Map::new();
                errors.insert("exp".into(), "exceeds maximum allowed expiration".into());
                return Err(Failure::Claims(errors));
            }
        }
        Ok((consumer, secret))
    }

    /// Decodes `raw` and checks its signature: the consumer and secret it names, and the
    /// token (whose claims are not checked yet).
    fn verify<'r, 't>(
        &'r self,
        raw: &'t str,
        keys: &'r Keys,
        ctx: &Ctx<'r>,
    ) -> Result<(&'r Consumer, &'r JwtSecret, Token<'t>), Failure> {
        let claim = &self.key_claim_name;
        let token =
            token::decode(raw, claim).map_err(|e| bad(format!("Bad token; {}", e.reason())))?;

        // The key claim from the claims, then from the header (so `kid` works).
        let key = match &token.key {
            None => return Err(bad(format!("No mandatory '{claim}' in claims"))),
            // Kong looks up whatever value it finds; a number or object naming a secret is
            // type confusion, refused with the message for an empty value.
            Some(Member::Str(k)) if !k.is_empty() => k,
            Some(_) => return Err(bad(format!("Invalid '{claim}' in claims"))),
        };
        let (consumer, secret) = ctx
            .consumers
            .jwt(ctx.snapshot, key)
            .ok_or_else(|| bad(format!("No credentials found for given '{claim}'")))?;

        // The secret's algorithm, never the token's: the token may only agree with it.
        if token.alg != secret.algorithm {
            return Err(bad("Invalid algorithm"));
        }
        // ES512 (no P-521 in `jsonwebtoken`) ends here.
        let Some(alg) = keys::pinned(&secret.algorithm) else {
            // debug, not warn: clients choose how often this runs. The loader should refuse
            // such a secret up front.
            tracing::debug!(plugin = "jwt", jwt_secret = %secret.id, algorithm = %secret.algorithm, "jwt secret's algorithm is not supported by this build; its tokens are refused");
            return Err(bad("Invalid algorithm"));
        };
        let key = keys
            .key(ctx.snapshot, secret, alg)
            .map_err(|KeyError::Invalid| bad("Invalid key/secret"))?;
        let valid = key.verify(
            token.signing_input.as_bytes(),
            &token.signature,
            token.signature_b64,
            alg,
        );
        if !valid {
            return Err(bad("Invalid signature"));
        }
        Ok((consumer, secret, token))
    }

    /// Kong's `retrieve_tokens`: every non-empty token in the configured query arguments,
    /// cookies and `Bearer` headers; one distinct token or a failure.
    fn retrieve_token<'q>(&self, req: &'q Req<'_>) -> Result<Cow<'q, str>, Failure> {
        let mut found: Option<Cow<'q, str>> = None;
        let mut add = |t: Cow<'q, str>| -> Result<(), Failure> {
            match &found {
                _ if t.is_empty() => Ok(()),
                None => {
                    found = Some(t);
                    Ok(())
                }
                Some(f) if *f == t => Ok(()),
                Some(_) => Err(bad("Multiple tokens provided")),
            }
        };
        if let Some(q) = req.query.as_deref() {
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                if self.uri_param_names.iter().any(|n| *n == k) {
                    add(v)?;
                }
            }
        }
        if !self.cookie_names.is_empty() {
            // Every Cookie header and every pair: a second cookie of the same name must not
            // slip a different token past the first.
            for header in req.headers.get_all(COOKIE) {
                let Ok(header) = header.to_str() else {
                    continue;
                };
                for pair in header.split(';') {
                    let Some((name, value)) = pair.trim().split_once('=') else {
                        continue;
                    };
                    if self.cookie_names.iter().any(|n| n == name) {
                        add(Cow::Borrowed(value.trim()))?;
                    }
                }
            }
        }
        for name in &self.header_names {
            for value in req.headers.get_all(name) {
                if let Some(t) = value.to_str().ok().and_then(bearer) {
                    add(Cow::Borrowed(t))?;
                }
            }
        }
        found.ok_or(Failure::NoToken)
    }

    /// Kong's `verify_registered_claims` for `claims_to_verify`.
    fn verify_claims(&self, exp: Option<f64>, nbf: Option<f64>, now: f64) -> Result<(), Failure> {
        let mut errors = Map::new();
        for claim in &self.claims_to_verify {
            let (name, value) = match claim {
                Claim::Exp => ("exp", exp),
                Claim::Nbf => ("nbf", nbf),
            };
            // Any JSON number counts, as Lua's `type(x) == "number"`; a string "9999999999"
            // does not.
            let problem = match (claim, value) {
                (_, None) => Some("must be a number"),
                (Claim::Exp, Some(exp)) => (exp <= now).then_some("token expired"),
                (Claim::Nbf, Some(nbf)) => (nbf > now).then_some("token not valid yet"),
            };
            if let Some(p) = problem {
                errors.insert(name.to_owned(), p.into());
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Failure::Claims(errors))
        }
    }

    /// The 401 for `failure` (Kong's `kong.response.exit`: plain JSON, no request id).
    fn reply(&self, failure: Failure) -> Reply {
        let (body, challenge) = match failure {
            Failure::NoToken => (json!({ "message": "Unauthorized" }), &self.challenge),
            Failure::Message(m) => (json!({ "message": m }), &self.challenge_invalid),
            Failure::Claims(errors) => (Value::Object(errors), &self.challenge_invalid),
        };
        Reply::json(StatusCode::UNAUTHORIZED, &body)
            .with_header(WWW_AUTHENTICATE, challenge.clone())
    }
}

impl Failure {
    /// A stable, secret-free label for logs.
    fn kind(&self) -> &'static str {
        match self {
            Failure::NoToken => "no_token",
            Failure::Message(_) => "invalid_token",
            Failure::Claims(_) => "claims",
        }
    }
}

fn bad(message: impl Into<Cow<'static, str>>) -> Failure {
    Failure::Message(message.into())
}

/// The token of a `Bearer` header value: Kong's `\s*[Bb]earer\s+(.+)`, anchored at the start
/// so that a scheme like `Basic ...` with "Bearer " further in is not taken for one.
fn bearer(value: &str) -> Option<&str> {
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\x0B' | '\x0C' | '\r');
    let v = value.trim_start_matches(is_space);
    let rest = v
        .strip_prefix("Bearer")
        .or_else(|| v.strip_prefix("bearer"))?;
    let token = rest.trim_start_matches(is_space);
    (token.len() < rest.len() && !token.is_empty()).then_some(token)
}

/// Seconds since the epoch, whole like Kong's `ngx.time()`.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs() as f64)
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn bearer_matches_kongs_pattern() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("  bearer\tabc"), Some("abc"));
        assert_eq!(bearer("Bearer  a b"), Some("a b"));
        assert_eq!(bearer("Bearerabc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("BEARER abc"), None);
        assert_eq!(bearer("Basic Bearer abc"), None);
    }
}
