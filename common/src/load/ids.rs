//! Deterministic entity ids, after Kong's `generate_uuid`
//! (K:kong/db/schema/others/declarative_config.lua).
//!
//! Kong: `id = uuid_v5(uuid_v5(ROOT, "<entity table>"), key)`. The key is the endpoint key for
//! entities whose key is globally unique (a service's or route's or upstream's `name`, a
//! consumer's `username`), and a cache key `"<entity>:<ws>:<k1>:<k2>.."` for the others
//! (targets: upstream + target; plugins: name + route + service + consumer; acls: consumer +
//! group), with the workspace written `*` as in a DB-less load. Named entities therefore get
//! the same id as in Kong.
//!
//! Where Portico differs, and why:
//! - Foreign keys in a cache key are always the parent's resolved id. Kong uses the parent id
//!   when nested but the parent's *name* at the top level, so the same plugin gets two ids
//!   depending on how it is written; here both forms give one id.
//! - Where Kong falls back to a random id (no name; credentials whose key is auto-generated)
//!   Portico derives one so reloads keep ids: a nameless service or route from its content
//!   (plus its service), a consumer with only `custom_id` from that, a key-auth credential from
//!   its consumer and the rank of its key among that consumer's keys (never from the key: the
//!   id is sent upstream in `X-Credential-Identifier`, and a hash of a key leaks it).

use std::sync::OnceLock;

use uuid::Uuid;

use super::collect::ENTITY_KEYS;

/// Kong's root namespace for declarative ids.
const ROOT: Uuid = Uuid::from_u128(0xfd02801f_0957_4a15_a55a_c8d9606f30b5);

/// Kong's `generate_uuid(entity, key)`.
pub(crate) fn generate(entity: &str, key: &str) -> Uuid {
    Uuid::new_v5(&namespace(entity), key.as_bytes())
}

/// `uuid_v5(ROOT, entity)`, computed once per entity kind rather than once per entity.
fn namespace(entity: &str) -> Uuid {
    static KNOWN: OnceLock<Vec<(&'static str, Uuid)>> = OnceLock::new();
    let compute = |e: &str| Uuid::new_v5(&ROOT, e.as_bytes());
    KNOWN
        .get_or_init(|| ENTITY_KEYS.iter().map(|e| (*e, compute(e))).collect())
        .iter()
        .find(|(e, _)| *e == entity)
        .map_or_else(|| compute(entity), |&(_, ns)| ns)
}

/// Kong's `build_cache_key`: `"<entity>:*:<part>:<part>.."`.
pub(crate) fn cache_key(entity: &str, parts: &[&str]) -> String {
    let mut key = format!("{entity}:*");
    for p in parts {
        key.push(':');
        key.push_str(p);
    }
    key
}

/// How an id was obtained; decides the wording when two entities end up with the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdFrom {
    /// Written in the file, or derived from a natural key (name, username, ...).
    KeyOrExplicit,
    /// Derived from the entity's content: a collision means two identical nameless entities.
    Content,
}

/// Explicit id, else the natural key, else the content (with a marker so it never equals a key).
pub(crate) fn assign(
    entity: &str,
    explicit: Option<Uuid>,
    key: Option<&str>,
    content: &str,
) -> (Uuid, IdFrom) {
    match (explicit, key) {
        (Some(id), _) => (id, IdFrom::KeyOrExplicit),
        (None, Some(k)) => (generate(entity, k), IdFrom::KeyOrExplicit),
        (None, None) => (
            generate(entity, &format!("{entity}:*:#content:{content}")),
            IdFrom::Content,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespacing_is_per_entity() {
        assert_ne!(generate("services", "a"), generate("routes", "a"));
        for entity in ENTITY_KEYS.iter().chain(&["other"]) {
            let ns = Uuid::new_v5(&ROOT, entity.as_bytes());
            assert_eq!(generate(entity, "k"), Uuid::new_v5(&ns, b"k"));
        }
        assert_eq!(generate("services", "a"), generate("services", "a"));
        assert_eq!(cache_key("targets", &["u", "h:80"]), "targets:*:u:h:80");
    }
}
