//! basic-auth (KONG.md §3.5; K:kong/plugins/basic-auth/access.lua): a consumer identified by
//! a username and password in `Proxy-Authorization` or `Authorization`.
//!
//! Kong's behaviour, kept on purpose:
//! - `Proxy-Authorization` is tried first; `Authorization` only when the first gave no known
//!   username (a known username with a wrong password there fails, it does not fall back).
//! - Every failure is 401 "Unauthorized" (`kong.response.error`) with
//!   `WWW-Authenticate: Basic realm="<realm>"`, so a client cannot tell an unknown user from
//!   a wrong password.
//! - The stored password is Kong's hex `sha1(password .. consumer_id)`
//!   (K:kong/plugins/basic-auth/crypto.lua); the digest of what the client sent is compared with
//!   it in constant time.
//! - `hide_credentials` removes each header the plugin read, whether or not it authenticated.
//!
//! Where Portico is stricter: the scheme must start the header (`\s*[Bb]asic\s*(.+)` anchored;
//! Kong's search would also accept `xBasic ...`) and the username is everything before the
//! first `:` (Kong's unanchored `([^:]+):(.*)` skips leading colons).
//! Passwords and headers are never logged.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, PROXY_AUTHORIZATION, WWW_AUTHENTICATE};
use http::StatusCode;
use portico_common::plugins::basic_auth::Config;
use portico_common::snapshot::{BasicAuthCredential, Consumer};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use super::{BuildEnv, Credential, Ctx, Flow, Plugin, Reply, Req};

/// nginx's `ngx.decode_base64` accepts input with or without padding; so do we.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// The basic-auth plugin.
#[derive(Debug)]
pub struct BasicAuth {
    anonymous: Option<String>,
    hide_credentials: bool,
    www_authenticate: HeaderValue,
}

/// A username and password as the client sent them.
struct Given {
    username: String,
    password: Vec<u8>,
}

impl Plugin for BasicAuth {
    const NAME: &'static str = "basic-auth";
    type Config = Config;

    fn build(config: Config, _env: &BuildEnv<'_>) -> Result<Self, String> {
        let www_authenticate = HeaderValue::from_str(&format!("Basic realm=\"{}\"", config.realm))
            .map_err(|_| "realm: not a valid header value".to_owned())?;
        Ok(BasicAuth {
            anonymous: config.anonymous,
            hide_credentials: config.hide_credentials,
            www_authenticate,
        })
    }

    async fn access<'r>(&'r self, req: &mut Req<'_>, ctx: &mut Ctx<'r>) -> Flow {
        // With `anonymous`, auth plugins are a logical OR: an earlier one already succeeded.
        if self.anonymous.is_some() && ctx.credential.is_some() {
            return Flow::Continue;
        }
        if self.authenticate(req, ctx) {
            return Flow::Continue;
        }
        match &self.anonymous {
            Some(anonymous) => ctx.authenticate_anonymous(anonymous),
            None => Flow::Respond(
                Reply::error(StatusCode::UNAUTHORIZED, "Unauthorized")
                    .with_header(WWW_AUTHENTICATE, self.www_authenticate.clone()),
            ),
        }
    }
}

impl BasicAuth {
    /// Kong's `do_authentication`; `true` when the request is now the credential owner's.
    fn authenticate<'r>(&self, req: &mut Req<'_>, ctx: &mut Ctx<'r>) -> bool {
        if !req.headers.contains_key(AUTHORIZATION)
            && !req.headers.contains_key(PROXY_AUTHORIZATION)
        {
            return false;
        }
        let (snapshot, consumers) = (ctx.snapshot, ctx.consumers);
        let lookup = |given: &Option<Given>| {
            given
                .as_ref()
                .and_then(|g| consumers.basic_auth(snapshot, &g.username))
        };
        let mut given = self.retrieve(req, &PROXY_AUTHORIZATION);
        let mut found = lookup(&given);
        if found.is_none() {
            given = self.retrieve(req, &AUTHORIZATION);
            found = lookup(&given);
        }
        let (Some((consumer, credential)), Some(given)) = (found, given) else {
            tracing::debug!(
                plugin = Self::NAME,
                "no basic-auth credential for the request"
            );
            return false;
        };
        if !verify(consumer, credential, &given.password) {
            tracing::debug!(plugin = Self::NAME, credential = %credential.id, "wrong password");
            return false;
        }
        ctx.authenticate(consumer, Credential::Name(&credential.username));
        true
    }

    /// The username and password in header `name`, if it holds well-formed Basic credentials.
    /// With `hide_credentials` the header is removed either way, as Kong does.
    fn retrieve(&self, req: &mut Req<'_>, name: &HeaderName) -> Option<Given> {
        let given = req.headers.get(name).and_then(|v| parse(v.as_bytes()));
        if self.hide_credentials {
            req.headers.remove(name);
        }
        given
    }
}

/// `\s*[Bb]asic\s*(.+)`, then base64 `username:password`.
fn parse(header: &[u8]) -> Option<Given> {
    let rest = header.trim_ascii_start();
    let rest = rest
        .strip_prefix(b"Basic")
        .or_else(|| rest.strip_prefix(b"basic"))?;
    let encoded = rest.trim_ascii();
    if encoded.is_empty() {
        return None;
    }
    let decoded = BASE64.decode(encoded).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    if colon == 0 {
        return None;
    }
    let username = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some(Given {
        username,
        password: decoded[colon + 1..].to_vec(),
    })
}

/// `hex(sha1(password .. consumer_id)) == stored`, in constant time.
fn verify(consumer: &Consumer, credential: &BasicAuthCredential, password: &[u8]) -> bool {
    let mut sha = Sha1::new();
    sha.update(password);
    sha.update(consumer.id.to_string().as_bytes());
    let digest = hex::encode(sha.finalize());
    digest
        .as_bytes()
        .ct_eq(credential.password.as_bytes())
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kongs_header_forms() {
        let g = parse(b"  Basic dXNlcjpwYTpzcw==").unwrap();
        assert_eq!(
            (g.username.as_str(), &g.password[..]),
            ("user", &b"pa:ss"[..])
        );
        // nginx's decoder takes unpadded input; `\s*` allows no space after the scheme.
        let g = parse(b"basicdXNlcjpwYTpzcw").unwrap();
        assert_eq!(g.username, "user");
        assert!(parse(b"BASIC dXNlcjpwYTpzcw==").is_none());
        assert!(parse(b"Basic !!!").is_none());
        assert!(parse(b"Basic ").is_none());
        // ":pass" (no username) and "user" (no colon).
        assert!(parse(b"Basic OnBhc3M=").is_none());
        assert!(parse(b"Basic dXNlcg==").is_none());
        assert!(parse(b"Bearer dXNlcjpwYXNz").is_none());
    }
}
