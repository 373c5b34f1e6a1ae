//! acl (KONG.md §3.6; K:kong/plugins/acl/handler.lua): lets a consumer in, or not, by the
//! groups it belongs to. Runs after every auth plugin (priority 950).
//!
//! Kong's precedence, kept:
//! 1. No consumer: the groups an external authenticator vouched for
//!    ([`Ctx::authenticated_groups`]) decide; without them, 403 "You cannot consume this
//!    service" when some credential was accepted, else 401 "Unauthorized".
//! 2. A consumer with no credential (the anonymous consumer): authenticated groups, when any,
//!    override its own groups.
//! 3. A consumer with a credential: its own groups, unless `always_use_authenticated_groups`
//!    and authenticated groups exist.
//! 4. A consumer without groups: allowed by a `deny` list; refused by an `allow` list with 403
//!    (credential) or 401 (anonymous).
//!
//! An allowed request carries its groups upstream joined with `", "`: `X-Consumer-Groups`
//! for a consumer's groups, `X-Authenticated-Groups` for authenticated ones, neither with
//! `hide_groups_header`. A client's own values of these headers were removed before the chain
//! ran (`headers::strip_client_identity`), so nothing here trusts the request's headers.
//! Where Kong would send an empty header (no groups under `deny`), none is sent.

use http::header::{HeaderName, HeaderValue};
use http::StatusCode;
use portico_common::plugins::acl::Config;

use super::{BuildEnv, Ctx, Flow, Plugin, Reply, Req};
use crate::consumers;

const CONSUMER_GROUPS: HeaderName = HeaderName::from_static("x-consumer-groups");
const AUTHENTICATED_GROUPS: HeaderName = HeaderName::from_static("x-authenticated-groups");
const FORBIDDEN: &str = "You cannot consume this service";

/// The acl plugin.
#[derive(Debug)]
pub struct Acl {
    /// `true` for a `deny` list, `false` for an `allow` list.
    deny: bool,
    groups: Vec<String>,
    hide_groups_header: bool,
    always_use_authenticated_groups: bool,
}

impl Plugin for Acl {
    const NAME: &'static str = "acl";
    type Config = Config;

    fn build(config: Config, _env: &BuildEnv<'_>) -> Result<Self, String> {
        // The loader guarantees exactly one non-empty list; Kong picks `deny` when it has
        // entries, `allow` otherwise.
        let (deny, groups) = match (config.deny, config.allow) {
            (Some(d), _) if !d.is_empty() => (true, d),
            (_, Some(a)) if !a.is_empty() => (false, a),
            _ => return Err("one of allow or deny must list at least one group".into()),
        };
        Ok(Acl {
            deny,
            groups,
            hide_groups_header: config.hide_groups_header,
            always_use_authenticated_groups: config.always_use_authenticated_groups,
        })
    }

    async fn access<'r>(&'r self, req: &mut Req<'_>, ctx: &mut Ctx<'r>) -> Flow {
        let has_credential = ctx.credential.is_some();
        let refuse = || {
            Flow::Respond(if has_credential {
                Reply::error(StatusCode::FORBIDDEN, FORBIDDEN)
            } else {
                Reply::error(StatusCode::UNAUTHORIZED, "Unauthorized")
            })
        };
        let authenticated = ctx.authenticated_groups.as_deref();
        let (groups, header): (Vec<&str>, HeaderName) = match ctx.consumer {
            None => match authenticated {
                Some(g) => (g.iter().map(String::as_str).collect(), AUTHENTICATED_GROUPS),
                None => return refuse(),
            },
            Some(consumer) => {
                let use_authenticated = !has_credential || self.always_use_authenticated_groups;
                match authenticated.filter(|_| use_authenticated) {
                    Some(g) => (g.iter().map(String::as_str).collect(), AUTHENTICATED_GROUPS),
                    None => {
                        let own: Vec<&str> = consumers::groups(consumer).collect();
                        if own.is_empty() && !self.deny {
                            return refuse();
                        }
                        (own, CONSUMER_GROUPS)
                    }
                }
            }
        };
        let listed = groups.iter().any(|g| self.groups.iter().any(|c| c == g));
        if listed == self.deny {
            return Flow::Respond(Reply::error(StatusCode::FORBIDDEN, FORBIDDEN));
        }
        if !self.hide_groups_header && !groups.is_empty() {
            match HeaderValue::from_str(&groups.join(", ")) {
                Ok(v) => {
                    req.headers.insert(header, v);
                }
                Err(_) => {
                    tracing::warn!(
                        plugin = Self::NAME,
                        "groups are not a valid header value; not sent"
                    )
                }
            }
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    //! Authenticated groups (set by an external authenticator) cannot come from a config yet,
    //! so their precedence is checked here, on the plugin itself.
    use std::borrow::Cow;

    use http::{HeaderMap, Method, Uri};
    use portico_common::snapshot::{Acl as Membership, Consumer, Snapshot};
    use uuid::Uuid;

    use super::*;
    use crate::consumers::Consumers;
    use crate::plugins::Credential;
    use crate::upstream_body::UpstreamBody;

    /// Built directly: `BuildEnv` is the registry's business, not this test's.
    fn acl(allow: &[&str], always: bool) -> Acl {
        Acl {
            deny: false,
            groups: allow.iter().map(|g| g.to_string()).collect(),
            hide_groups_header: false,
            always_use_authenticated_groups: always,
        }
    }

    /// Runs `plugin` for `consumer` (with a credential or not) and `authenticated` groups;
    /// the status it answered with, or the groups headers it set.
    async fn run(
        plugin: &Acl,
        consumer: Option<(&Consumer, bool)>,
        authenticated: Option<&[&str]>,
    ) -> Result<(Option<String>, Option<String>), StatusCode> {
        let (snapshot, consumers) = (Snapshot::default(), Consumers::default());
        let mut ctx = Ctx::new(&snapshot, &consumers);
        if let Some((c, credential)) = consumer {
            ctx.consumer = Some(c);
            ctx.credential = credential.then_some(Credential::Name("c"));
        }
        ctx.authenticated_groups = authenticated.map(|g| g.iter().map(|s| s.to_string()).collect());
        let (mut headers, mut body, uri) =
            (HeaderMap::new(), UpstreamBody::Empty, Uri::from_static("/"));
        let id = HeaderValue::from_static("id");
        let mut req = Req {
            method: &Method::GET,
            path: "/",
            uri: &uri,
            headers: &mut headers,
            query: None::<Cow<'_, str>>,
            body: &mut body,
            client_ip: "127.0.0.1".parse().unwrap(),
            https: false,
            host: "h",
            request_id: &id,
        };
        match plugin.access(&mut req, &mut ctx).await {
            Flow::Respond(Reply::Error { status, .. }) => Err(status),
            Flow::Respond(Reply::Response(r)) => Err(r.status()),
            Flow::Continue => {
                let get = |h: &HeaderName| headers.get(h).map(|v| v.to_str().unwrap().to_owned());
                Ok((get(&CONSUMER_GROUPS), get(&AUTHENTICATED_GROUPS)))
            }
        }
    }

    #[tokio::test]
    async fn authenticated_groups_follow_kongs_precedence() {
        let consumer = Consumer {
            id: Uuid::nil(),
            username: Some("c".into()),
            custom_id: None,
            keyauth_credentials: vec![],
            jwt_secrets: vec![],
            basicauth_credentials: vec![],
            acls: vec![Membership {
                id: Uuid::nil(),
                group: "own".into(),
                tags: vec![],
            }],
            tags: vec![],
        };
        let ldap = Some(&["ext", "x"][..]);
        let sent = |g: &str| Ok((None, Some(g.to_owned())));
        // No consumer: the authenticated groups decide, sent as X-Authenticated-Groups.
        assert_eq!(run(&acl(&["ext"], false), None, ldap).await, sent("ext, x"));
        assert_eq!(
            run(&acl(&["own"], false), None, ldap).await,
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            run(&acl(&["ext"], false), None, None).await,
            Err(StatusCode::UNAUTHORIZED)
        );
        // The anonymous consumer's own groups give way to authenticated ones.
        assert_eq!(
            run(&acl(&["ext"], false), Some((&consumer, false)), ldap).await,
            sent("ext, x")
        );
        // A credentialed consumer keeps its own groups unless always_use_authenticated_groups.
        let own = Ok((Some("own".to_owned()), None));
        assert_eq!(
            run(&acl(&["own"], false), Some((&consumer, true)), ldap).await,
            own
        );
        assert_eq!(
            run(&acl(&["own"], true), Some((&consumer, true)), ldap).await,
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            run(&acl(&["ext"], true), Some((&consumer, true)), ldap).await,
            sent("ext, x")
        );
        assert_eq!(
            run(&acl(&["own"], true), Some((&consumer, true)), None).await,
            own
        );
    }
}
