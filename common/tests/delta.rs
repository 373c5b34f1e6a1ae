//! Entity digests and deltas: `Delta::between(a, b).apply(a)` gives `b` (its hash and digests),
//! over many random-ish edits of every collection; the wire form; refused deltas.

use std::path::Path;
use std::sync::Arc;

use portico_common::digest::{entity_digest, Digests};
use portico_common::snapshot::{Acl, Route, Snapshot, Target, Upstream};
use portico_common::{load_str, load_str_after, Changes, Delta};
use serde_json::json;
use uuid::Uuid;

/// The golden config: every collection, nested children, free-form JSON.
/// The variables the golden config's secrets read.
fn golden_env(name: &str) -> Option<String> {
    match name {
        "MOBILE_APP_API_KEY" => Some("mk-123".to_owned()),
        "PARTNER_JWT_SECRET" => Some("s3cret".to_owned()),
        _ => None,
    }
}

fn base() -> (Snapshot, Digests) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let yaml = std::fs::read_to_string(dir.join("kong.yml")).unwrap();
    let loaded = load_str(&yaml, &golden_env).unwrap();
    assert_eq!(loaded.digests, Digests::of(&loaded.snapshot));
    assert_eq!(
        loaded.snapshot.hash,
        loaded.digests.root(&loaded.snapshot.source_format_version)
    );
    assert_eq!(loaded.snapshot.hash, loaded.snapshot.compute_hash());
    (loaded.snapshot, loaded.digests)
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn id(&mut self) -> Uuid {
        Uuid::from_u64_pair(self.next(), self.next())
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// One random edit: add, remove or change an entity of some collection, or the version.
fn edit(s: &mut Snapshot, rng: &mut Rng) {
    let n = rng.next();
    match rng.below(16) {
        0 if !s.routes.is_empty() => {
            let i = rng.below(s.routes.len());
            Arc::make_mut(&mut s.routes[i]).paths.push(format!("/p{n}"));
        }
        1 if !s.routes.is_empty() => {
            let mut r = (*s.routes[rng.below(s.routes.len())]).clone();
            r.id = rng.id();
            r.name = Some(format!("r{n}"));
            s.routes.push(Arc::new(r));
        }
        2 if !s.routes.is_empty() => {
            s.routes.remove(rng.below(s.routes.len()));
        }
        3 if !s.services.is_empty() => {
            let i = rng.below(s.services.len());
            Arc::make_mut(&mut s.services[i]).port = s.services[i].port.wrapping_add(1);
        }
        4 if !s.services.is_empty() => {
            let mut svc = (*s.services[rng.below(s.services.len())]).clone();
            svc.id = rng.id();
            s.services.push(Arc::new(svc));
        }
        5 if !s.services.is_empty() => {
            s.services.remove(rng.below(s.services.len()));
        }
        6 if !s.plugins.is_empty() => {
            let i = rng.below(s.plugins.len());
            let config = &mut Arc::make_mut(&mut s.plugins[i]).config;
            if let Some(obj) = config.as_object_mut() {
                obj.insert(
                    format!("k{}", n % 7),
                    json!({"nested": [n % 3, {"b": 1, "a": n % 5}]}),
                );
            }
        }
        7 if !s.plugins.is_empty() => {
            let mut p = (*s.plugins[rng.below(s.plugins.len())]).clone();
            p.id = rng.id();
            p.enabled = !p.enabled;
            s.plugins.push(Arc::new(p));
        }
        8 if !s.plugins.is_empty() => {
            s.plugins.remove(rng.below(s.plugins.len()));
        }
        9 if !s.consumers.is_empty() => {
            let i = rng.below(s.consumers.len());
            let acl = Acl {
                id: rng.id(),
                group: format!("g{n}"),
                tags: vec![],
            };
            Arc::make_mut(&mut s.consumers[i]).acls.push(acl);
        }
        10 if !s.consumers.is_empty() => {
            s.consumers.remove(rng.below(s.consumers.len()));
        }
        11 if !s.consumers.is_empty() => {
            let mut c = (*s.consumers[rng.below(s.consumers.len())]).clone();
            c.id = rng.id();
            c.username = Some(format!("u{n}"));
            s.consumers.push(Arc::new(c));
        }
        12 if !s.upstreams.is_empty() => {
            let i = rng.below(s.upstreams.len());
            match Arc::make_mut(&mut s.upstreams[i]).targets.first_mut() {
                Some(t) => t.weight = t.weight.wrapping_add(1),
                None => Arc::make_mut(&mut s.upstreams[i]).targets.push(Target {
                    id: rng.id(),
                    target: "10.9.9.9:80".into(),
                    host: "10.9.9.9".into(),
                    port: 80,
                    weight: 100,
                    tags: vec![],
                }),
            }
        }
        13 if !s.upstreams.is_empty() => {
            let i = rng.below(s.upstreams.len());
            let hc = &mut Arc::make_mut(&mut s.upstreams[i]).healthchecks;
            hc["active"]["healthy"]["interval"] = json!(n % 30);
        }
        14 => {
            let mut u = match s.upstreams.first() {
                Some(u) => Upstream::clone(u),
                None => return,
            };
            u.id = rng.id();
            u.name = format!("u{n}");
            if rng.below(2) == 0 {
                s.upstreams.clear();
            }
            s.upstreams.push(Arc::new(u));
        }
        _ => {
            s.source_format_version = ["1.1", "2.1", "3.0"][rng.below(3)].to_owned();
        }
    }
}

/// `a` after round `round` of random edits (1 to 6 of them; every fourth round also reorders
/// the routes and plugins).
fn edited(a: &Snapshot, rng: &mut Rng, round: usize) -> Snapshot {
    let mut b = a.clone();
    for _ in 0..=(round % 6) {
        edit(&mut b, rng);
    }
    if round.is_multiple_of(4) {
        rng.shuffle(&mut b.routes);
        rng.shuffle(&mut b.plugins);
    }
    b
}

fn assert_delta_turns(a: &Snapshot, da: &Digests, b: &Snapshot) -> Delta {
    let db = Digests::of(b);
    let delta = Delta::between(a, da, b, &db);
    let (applied, digests) = delta.apply(a, da).unwrap();
    assert_eq!(applied.hash, b.compute_hash());
    assert_eq!(digests, db);
    assert_eq!(applied.compute_hash(), applied.hash);
    assert_eq!(applied.source_format_version, b.source_format_version);
    // Same entities as `b` (order aside).
    let sorted = |s: &Snapshot| {
        let mut s = s.clone();
        s.services.sort_by_key(|e| e.id);
        s.routes.sort_by_key(|e| e.id);
        s.upstreams.sort_by_key(|e| e.id);
        s.consumers.sort_by_key(|e| e.id);
        s.plugins.sort_by_key(|e| e.id);
        s.hash = String::new();
        s
    };
    assert_eq!(sorted(&applied), sorted(b));
    delta
}

#[test]
fn between_then_apply_gives_the_new_snapshot() {
    let (a, da) = base();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut changed = 0;
    for round in 0..300 {
        let b = edited(&a, &mut rng, round);
        let delta = assert_delta_turns(&a, &da, &b);
        changed += delta.len();
        // The wire form carries the same delta.
        let wire = serde_json::to_string(&delta).unwrap();
        let back: Delta = serde_json::from_str(&wire).unwrap();
        assert_eq!(back, delta, "{wire}");
        assert_eq!(back.apply(&a, &da).unwrap().0.hash, b.compute_hash());
    }
    assert!(changed > 600, "the edits changed too little: {changed}");
}

/// `s` with every entity in a fresh allocation, as a new load of the same text gives it.
fn unshared(s: &Snapshot) -> Snapshot {
    fn copy<T: Clone>(v: &[Arc<T>]) -> Vec<Arc<T>> {
        v.iter().map(|e| Arc::new(T::clone(e))).collect()
    }
    Snapshot {
        source_format_version: s.source_format_version.clone(),
        services: copy(&s.services),
        routes: copy(&s.routes),
        upstreams: copy(&s.upstreams),
        consumers: copy(&s.consumers),
        plugins: copy(&s.plugins),
        certificates: copy(&s.certificates),
        ca_certificates: copy(&s.ca_certificates),
        hash: s.hash.clone(),
    }
}

#[test]
fn digests_reused_from_the_previous_snapshot_are_the_new_snapshots_digests() {
    let (a, da) = base();
    let mut rng = Rng(0x5eed_1234);
    let mut shared_routes = 0;
    for round in 0..300 {
        let b = edited(&a, &mut rng, round);
        let mut loaded = unshared(&b);
        let digests = Digests::of_reusing(&mut loaded, &a, &da);
        assert_eq!(digests, Digests::of(&b));
        assert_eq!(loaded, b, "reuse changes no content");
        // An unchanged route is now the previous snapshot's allocation; a changed one is not.
        for r in &loaded.routes {
            if let Some(old) = a.routes.iter().find(|o| o.id == r.id) {
                assert_eq!(Arc::ptr_eq(old, r), **old == **r, "route {}", r.id);
                shared_routes += usize::from(Arc::ptr_eq(old, r));
            }
        }
    }
    assert!(
        shared_routes > 300,
        "too few routes reused: {shared_routes}"
    );

    // Free-form JSON is always hashed: `0.0` and `-0.0` compare equal, serialize apart.
    let mut zero = a.clone();
    Arc::make_mut(&mut zero.plugins[0]).config = json!({"x": 0.0});
    let dz = Digests::of(&zero);
    let mut negative = unshared(&zero);
    Arc::make_mut(&mut negative.plugins[0]).config = json!({"x": -0.0});
    assert_eq!(negative.plugins[0], zero.plugins[0]);
    let reused = Digests::of_reusing(&mut negative.clone(), &zero, &dz);
    assert_eq!(reused, Digests::of(&negative));
    assert_ne!(reused.plugins, dz.plugins);
}

#[test]
fn load_after_a_previous_load_gives_what_a_plain_load_gives() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let text = std::fs::read_to_string(dir.join("kong.yml")).unwrap();
    let first = load_str(&text, &golden_env).unwrap();
    let edited = text.replacen("paths: [/users]", "paths: [/users, /people]", 1);
    assert_ne!(edited, text);
    for next in [&text, &edited] {
        let plain = load_str(next, &golden_env).unwrap();
        let after = load_str_after(next, &golden_env, (&first.snapshot, &first.digests)).unwrap();
        assert_eq!(after, plain);
    }
}

#[test]
fn deltas_chain_with_the_digests_they_return() {
    let (mut current, mut digests) = base();
    let mut rng = Rng(7);
    let mut truth = current.clone();
    for _ in 0..100 {
        edit(&mut truth, &mut rng);
        let delta = Delta::between(&current, &digests, &truth, &Digests::of(&truth));
        (current, digests) = delta.apply(&current, &digests).unwrap();
        assert_eq!(current.hash, truth.compute_hash());
        assert_eq!(digests, Digests::of(&current));
    }
}

#[test]
fn unchanged_snapshot_gives_an_empty_delta_even_reordered() {
    let (a, da) = base();
    let mut b = a.clone();
    b.routes.reverse();
    b.consumers.reverse();
    assert_eq!(b.compute_hash(), a.hash);
    let delta = Delta::between(&a, &da, &b, &Digests::of(&b));
    assert!(delta.is_empty());
    assert_eq!(delta.len(), 0);
    assert_eq!(
        serde_json::to_value(&delta).unwrap(),
        json!({"source_format_version": "3.0"})
    );
    let (applied, _) = delta.apply(&a, &da).unwrap();
    assert_eq!(applied, a);
}

#[test]
fn a_version_change_alone_changes_the_hash() {
    let (a, da) = base();
    let mut b = a.clone();
    b.source_format_version = "2.1".into();
    let delta = assert_delta_turns(&a, &da, &b);
    assert!(delta.is_empty());
    assert_ne!(b.compute_hash(), a.hash);
}

#[test]
fn apply_keeps_base_order_replaces_in_place_and_appends() {
    let (a, da) = base();
    assert_eq!(a.routes.len(), 3);
    let mut changed = Route::clone(&a.routes[1]);
    changed.tags.push("new".into());
    let mut added = Route::clone(&a.routes[0]);
    added.id = Uuid::from_u128(42);
    let delta = Delta {
        source_format_version: a.source_format_version.clone(),
        routes: Changes {
            upsert: vec![Arc::new(added.clone()), Arc::new(changed.clone())],
            remove: vec![a.routes[0].id],
        },
        ..Delta::default()
    };
    assert_eq!(delta.len(), 3);
    let (applied, digests) = delta.apply(&a, &da).unwrap();
    let ids: Vec<Uuid> = applied.routes.iter().map(|r| r.id).collect();
    assert_eq!(ids, [a.routes[1].id, a.routes[2].id, added.id]);
    assert_eq!(*applied.routes[0], changed);
    assert_eq!(digests.routes[&changed.id], entity_digest(&changed));
    assert_eq!(applied.services, a.services);
    assert_eq!(applied.hash, applied.compute_hash());
}

#[test]
fn wire_form_leaves_out_empty_parts_and_accepts_them_missing() {
    let (a, da) = base();
    let mut b = a.clone();
    b.routes.remove(0);
    Arc::make_mut(&mut b.plugins[0]).enabled = false;
    let delta = Delta::between(&a, &da, &b, &Digests::of(&b));
    let value = serde_json::to_value(&delta).unwrap();
    let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 3, "{value}");
    assert_eq!(value["routes"], json!({"remove": [a.routes[0].id]}));
    assert_eq!(value["plugins"]["upsert"].as_array().unwrap().len(), 1);
    let partial: Delta = serde_json::from_value(json!({
        "source_format_version": "3.0",
        "routes": {"remove": [a.routes[0].id]},
        "plugins": {"upsert": value["plugins"]["upsert"]},
    }))
    .unwrap();
    assert_eq!(partial, delta);
}

#[test]
fn bad_deltas_are_refused_naming_collection_and_id() {
    let (a, da) = base();
    let unknown = Uuid::from_u128(7);
    let refuse = |delta: Delta| delta.apply(&a, &da).unwrap_err();

    let e = refuse(Delta {
        source_format_version: "3.0".into(),
        services: Changes {
            upsert: vec![],
            remove: vec![unknown],
        },
        ..Delta::default()
    });
    assert_eq!(e.path, "services.remove[0]");
    assert_eq!(
        e.message,
        format!("cannot remove services entity {unknown}: not in the base snapshot")
    );

    let r = a.routes[2].clone();
    let e = refuse(Delta {
        source_format_version: "3.0".into(),
        routes: Changes {
            upsert: vec![a.routes[0].clone(), r.clone(), r.clone()],
            remove: vec![],
        },
        ..Delta::default()
    });
    assert_eq!(e.path, "routes.upsert[2]");
    assert_eq!(
        e.message,
        format!(
            "routes entity {} is upserted twice (also at routes.upsert[1])",
            r.id
        )
    );

    let p = a.plugins[0].id;
    let e = refuse(Delta {
        source_format_version: "3.0".into(),
        plugins: Changes {
            upsert: vec![],
            remove: vec![p, p],
        },
        ..Delta::default()
    });
    assert_eq!(
        (e.path.as_str(), e.message),
        (
            "plugins.remove[1]",
            format!("plugins entity {p} is removed twice")
        )
    );

    let c = a.consumers[0].clone();
    let e = refuse(Delta {
        source_format_version: "3.0".into(),
        consumers: Changes {
            upsert: vec![c.clone()],
            remove: vec![c.id],
        },
        ..Delta::default()
    });
    assert_eq!(
        (e.path.as_str(), e.message),
        (
            "consumers.remove[0]",
            format!("consumers entity {} is both upserted and removed", c.id)
        )
    );
}

#[test]
fn a_field_lost_in_decoding_shows_as_a_hash_mismatch() {
    let (a, da) = base();
    let mut b = a.clone();
    Arc::make_mut(&mut b.routes[0]).tags.push("x".into());
    let db = Digests::of(&b);
    let mut delta = Delta::between(&a, &da, &b, &db);
    // A receiver whose build drops `tags` while decoding.
    Arc::make_mut(&mut delta.routes.upsert[0]).tags.clear();
    let (applied, _) = delta.apply(&a, &da).unwrap();
    assert_ne!(applied.hash, db.root(&b.source_format_version));
}
