//! Consumers and their credentials, indexed once per snapshot so an auth plugin finds a
//! credential with one hash lookup (KONG.md §1.6). Indexes point into the snapshot's
//! `consumers` list; nothing here copies a secret.

use std::collections::HashMap;

use portico_common::snapshot::{
    Acl, BasicAuthCredential, Consumer, JwtSecret, KeyAuthCredential, Snapshot,
};
use uuid::Uuid;

/// Where a credential sits: consumer index, credential index within that consumer's list.
type At = (usize, usize);

/// Credential lookups for one snapshot.
#[derive(Debug, Default)]
pub struct Consumers {
    by_id: HashMap<Uuid, usize>,
    by_username: HashMap<String, usize>,
    keys: HashMap<String, At>,
    jwt_keys: HashMap<String, At>,
    basic_usernames: HashMap<String, At>,
}

impl Consumers {
    /// Indexes every consumer of `snapshot`. Uniqueness was checked by the loader; on a
    /// duplicate anyway the first wins, as it would in a database lookup by unique key.
    pub fn new(snapshot: &Snapshot) -> Consumers {
        let mut c = Consumers::default();
        for (i, consumer) in snapshot.consumers.iter().enumerate() {
            c.by_id.entry(consumer.id).or_insert(i);
            if let Some(u) = &consumer.username {
                c.by_username.entry(u.clone()).or_insert(i);
            }
            for (j, k) in consumer.keyauth_credentials.iter().enumerate() {
                c.keys.entry(k.key.clone()).or_insert((i, j));
            }
            for (j, s) in consumer.jwt_secrets.iter().enumerate() {
                c.jwt_keys.entry(s.key.clone()).or_insert((i, j));
            }
            for (j, b) in consumer.basicauth_credentials.iter().enumerate() {
                c.basic_usernames
                    .entry(b.username.clone())
                    .or_insert((i, j));
            }
        }
        c
    }

    /// A consumer by id, or by username when `reference` is not a known id (Kong's
    /// `anonymous` accepts either).
    pub fn find<'s>(&self, snapshot: &'s Snapshot, reference: &str) -> Option<&'s Consumer> {
        let by_id = Uuid::parse_str(reference)
            .ok()
            .and_then(|id| self.by_id.get(&id));
        by_id
            .or_else(|| self.by_username.get(reference))
            .map(|&i| &*snapshot.consumers[i])
    }

    /// The consumer owning the key-auth `key`.
    pub fn key_auth<'s>(
        &self,
        snapshot: &'s Snapshot,
        key: &str,
    ) -> Option<(&'s Consumer, &'s KeyAuthCredential)> {
        let &(i, j) = self.keys.get(key)?;
        let c = &snapshot.consumers[i];
        Some((c, &c.keyauth_credentials[j]))
    }

    /// The consumer owning the jwt secret whose `key` is `key` (the `iss`, or whatever
    /// `key_claim_name` names).
    pub fn jwt<'s>(
        &self,
        snapshot: &'s Snapshot,
        key: &str,
    ) -> Option<(&'s Consumer, &'s JwtSecret)> {
        let &(i, j) = self.jwt_keys.get(key)?;
        let c = &snapshot.consumers[i];
        Some((c, &c.jwt_secrets[j]))
    }

    /// The consumer owning the basic-auth `username`.
    pub fn basic_auth<'s>(
        &self,
        snapshot: &'s Snapshot,
        username: &str,
    ) -> Option<(&'s Consumer, &'s BasicAuthCredential)> {
        let &(i, j) = self.basic_usernames.get(username)?;
        let c = &snapshot.consumers[i];
        Some((c, &c.basicauth_credentials[j]))
    }
}

/// The ACL groups of a consumer, in config order.
pub fn groups(consumer: &Consumer) -> impl Iterator<Item = &str> {
    consumer.acls.iter().map(|a: &Acl| a.group.as_str())
}
