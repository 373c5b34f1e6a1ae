//! Deltas between snapshots: the entities to upsert and the ids to remove, per collection, so a
//! one-route change travels as one route instead of the whole config.
//!
//! Entities are compared by id and [digest](crate::digest); order is not content. The receiver
//! applies a delta to the snapshot it has and checks the resulting hash against the one the
//! sender claims: a base that differs from the sender's, or a field this build dropped while
//! decoding, shows up as a mismatch (and the receiver asks for the whole snapshot).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::digest::{entity_digest, Digests, EntityDigest};
use crate::error::ConfigIssue;
use crate::snapshot::{
    CaCertificate, Certificate, Consumer, Plugin, Route, Service, Snapshot, Upstream,
};

/// What turns one snapshot into another. JSON on the wire; empty collections are left out.
///
/// Note: a delta can have no entity changes ([`Delta::is_empty`]) and still change
/// `source_format_version`; compare hashes, not emptiness, to decide whether anything changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// The new snapshot's format version (always sent; it is part of the hash).
    pub source_format_version: String,
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub services: Changes<Service>,
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub routes: Changes<Route>,
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub upstreams: Changes<Upstream>,
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub consumers: Changes<Consumer>,
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub plugins: Changes<Plugin>,
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub certificates: Changes<Certificate>,
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub ca_certificates: Changes<CaCertificate>,
}

/// The changes to one collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(serialize = "T: Serialize", deserialize = "T: Deserialize<'de>"))]
pub struct Changes<T> {
    /// New entities and changed ones (whole), by id; shared with the snapshot they come from
    /// or go to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upsert: Vec<Arc<T>>,
    /// Ids of entities that are gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<Uuid>,
}

impl<T> Default for Changes<T> {
    fn default() -> Self {
        Changes {
            upsert: Vec::new(),
            remove: Vec::new(),
        }
    }
}

impl<T> Changes<T> {
    /// Number of upserted + removed entities.
    pub fn len(&self) -> usize {
        self.upsert.len() + self.remove.len()
    }

    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty() && self.remove.is_empty()
    }
}

/// An entity of a snapshot collection.
trait Entity: Serialize {
    fn id(&self) -> Uuid;
}

macro_rules! entity {
    ($($t:ty),*) => {$(
        impl Entity for $t {
            fn id(&self) -> Uuid {
                self.id
            }
        }
    )*};
}
entity!(
    Service,
    Route,
    Upstream,
    Consumer,
    Plugin,
    Certificate,
    CaCertificate
);

impl Delta {
    /// What turns `old` into `new` (entities compared by id and digest). The digests must be
    /// those of the two snapshots (`Digests::of`, or kept from the loader / a previous apply).
    ///
    /// Upserts follow `new`'s order, removals `old`'s.
    pub fn between(
        old: &Snapshot,
        old_digests: &Digests,
        new: &Snapshot,
        new_digests: &Digests,
    ) -> Delta {
        Delta {
            source_format_version: new.source_format_version.clone(),
            services: changes(
                &old.services,
                &old_digests.services,
                &new.services,
                &new_digests.services,
            ),
            routes: changes(
                &old.routes,
                &old_digests.routes,
                &new.routes,
                &new_digests.routes,
            ),
            upstreams: changes(
                &old.upstreams,
                &old_digests.upstreams,
                &new.upstreams,
                &new_digests.upstreams,
            ),
            consumers: changes(
                &old.consumers,
                &old_digests.consumers,
                &new.consumers,
                &new_digests.consumers,
            ),
            plugins: changes(
                &old.plugins,
                &old_digests.plugins,
                &new.plugins,
                &new_digests.plugins,
            ),
            certificates: changes(
                &old.certificates,
                &old_digests.certificates,
                &new.certificates,
                &new_digests.certificates,
            ),
            ca_certificates: changes(
                &old.ca_certificates,
                &old_digests.ca_certificates,
                &new.ca_certificates,
                &new_digests.ca_certificates,
            ),
        }
    }

    /// Number of upserted + removed entities.
    pub fn len(&self) -> usize {
        self.services.len()
            + self.routes.len()
            + self.upstreams.len()
            + self.consumers.len()
            + self.plugins.len()
            + self.certificates.len()
            + self.ca_certificates.len()
    }

    /// No entity upserted or removed (the format version may still change, see [`Delta`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies this delta to `base`: returns the new snapshot (its `hash` set to the new root)
    /// and its digests.
    ///
    /// Digests of upserted entities are computed here from the decoded entities, so a field
    /// this build dropped while decoding shows up as a hash mismatch for the caller to detect;
    /// the others are taken from `base_digests`, which must be those of `base`. References
    /// between entities are not checked here: a result whose hash matches the sender's is the
    /// sender's validated snapshot.
    ///
    /// Removing an id the base does not have, removing an id twice, upserting the same id twice,
    /// or both upserting and removing an id is an error naming the collection and the id.
    /// Order: base order, replaced entities in place, removed ones dropped, new ones appended
    /// in delta order.
    pub fn apply(
        &self,
        base: &Snapshot,
        base_digests: &Digests,
    ) -> Result<(Snapshot, Digests), ConfigIssue> {
        let (services, services_d) = apply_changes(
            "services",
            &base.services,
            &base_digests.services,
            &self.services,
        )?;
        let (routes, routes_d) =
            apply_changes("routes", &base.routes, &base_digests.routes, &self.routes)?;
        let (upstreams, upstreams_d) = apply_changes(
            "upstreams",
            &base.upstreams,
            &base_digests.upstreams,
            &self.upstreams,
        )?;
        let (consumers, consumers_d) = apply_changes(
            "consumers",
            &base.consumers,
            &base_digests.consumers,
            &self.consumers,
        )?;
        let (plugins, plugins_d) = apply_changes(
            "plugins",
            &base.plugins,
            &base_digests.plugins,
            &self.plugins,
        )?;
        let (certificates, certificates_d) = apply_changes(
            "certificates",
            &base.certificates,
            &base_digests.certificates,
            &self.certificates,
        )?;
        let (ca_certificates, ca_certificates_d) = apply_changes(
            "ca_certificates",
            &base.ca_certificates,
            &base_digests.ca_certificates,
            &self.ca_certificates,
        )?;
        let digests = Digests {
            services: services_d,
            routes: routes_d,
            upstreams: upstreams_d,
            consumers: consumers_d,
            plugins: plugins_d,
            certificates: certificates_d,
            ca_certificates: ca_certificates_d,
        };
        let snapshot = Snapshot {
            hash: digests.root(&self.source_format_version),
            source_format_version: self.source_format_version.clone(),
            services,
            routes,
            upstreams,
            consumers,
            plugins,
            certificates,
            ca_certificates,
        };
        Ok((snapshot, digests))
    }
}

fn changes<T: Entity>(
    old: &[Arc<T>],
    old_digests: &HashMap<Uuid, EntityDigest>,
    new: &[Arc<T>],
    new_digests: &HashMap<Uuid, EntityDigest>,
) -> Changes<T> {
    let upsert = new
        .iter()
        .filter(|e| {
            let id = e.id();
            match (old_digests.get(&id), new_digests.get(&id)) {
                (Some(o), Some(n)) => o != n,
                _ => true,
            }
        })
        .cloned()
        .collect();
    let mut seen = HashSet::new();
    let remove = old
        .iter()
        .map(|e| e.id())
        .filter(|id| !new_digests.contains_key(id) && seen.insert(*id))
        .collect();
    Changes { upsert, remove }
}

type Applied<T> = (Vec<Arc<T>>, HashMap<Uuid, EntityDigest>);

fn apply_changes<T: Entity>(
    collection: &str,
    base: &[Arc<T>],
    base_digests: &HashMap<Uuid, EntityDigest>,
    changes: &Changes<T>,
) -> Result<Applied<T>, ConfigIssue> {
    if changes.is_empty() {
        return Ok((base.to_vec(), base_digests.clone()));
    }
    let mut upserts: HashMap<Uuid, usize> = HashMap::with_capacity(changes.upsert.len());
    for (i, e) in changes.upsert.iter().enumerate() {
        let id = e.id();
        if let Some(first) = upserts.insert(id, i) {
            return Err(ConfigIssue::new(
                format!("{collection}.upsert[{i}]"),
                format!("{collection} entity {id} is upserted twice (also at {collection}.upsert[{first}])"),
            ));
        }
    }
    let mut removes: HashSet<Uuid> = HashSet::with_capacity(changes.remove.len());
    for (i, &id) in changes.remove.iter().enumerate() {
        let here = format!("{collection}.remove[{i}]");
        if !base_digests.contains_key(&id) {
            return Err(ConfigIssue::new(
                here,
                format!("cannot remove {collection} entity {id}: not in the base snapshot"),
            ));
        }
        if upserts.contains_key(&id) {
            return Err(ConfigIssue::new(
                here,
                format!("{collection} entity {id} is both upserted and removed"),
            ));
        }
        if !removes.insert(id) {
            return Err(ConfigIssue::new(
                here,
                format!("{collection} entity {id} is removed twice"),
            ));
        }
    }

    let mut out = Vec::with_capacity(base.len() + changes.upsert.len());
    let mut placed = vec![false; changes.upsert.len()];
    for e in base {
        let id = e.id();
        if removes.contains(&id) {
            continue;
        }
        match upserts.get(&id) {
            // A base holding the id twice (never a validated one) keeps one, the new one.
            Some(&u) if placed[u] => {}
            Some(&u) => {
                placed[u] = true;
                out.push(Arc::clone(&changes.upsert[u]));
            }
            None => out.push(Arc::clone(e)),
        }
    }
    out.extend(
        changes
            .upsert
            .iter()
            .zip(&placed)
            .filter(|(_, &p)| !p)
            .map(|(e, _)| Arc::clone(e)),
    );

    let mut digests = base_digests.clone();
    for id in &removes {
        digests.remove(id);
    }
    for e in &changes.upsert {
        digests.insert(e.id(), entity_digest(&**e));
    }
    Ok((out, digests))
}
