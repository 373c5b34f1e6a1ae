use super::*;

fn new_version(hash: &str) -> NewVersion {
    NewVersion {
        hash: hash.to_owned(),
        origin: "apply".to_owned(),
        summary: "0 services".to_owned(),
        config_text: format!("# {hash}\n_format_version: \"3.0\"\n"),
        snapshot: SnapshotJson::from_json(serde_json::json!({ "hash": hash }).to_string()).unwrap(),
    }
}

#[test]
fn versions_never_repeat_across_groups_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let a1 = store.commit("edge", new_version("a1")).unwrap();
    let b1 = store.commit("web", new_version("b1")).unwrap();
    let a2 = store.commit("edge", new_version("a2")).unwrap();
    assert_eq!(
        (a1.record.version, b1.record.version, a2.record.version),
        (1, 2, 3)
    );
    drop(store);

    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(store.current("edge").unwrap().version, 3);
    assert_eq!(store.current("web").unwrap().hash, "b1");
    let b2 = store.commit("web", new_version("b2")).unwrap();
    assert_eq!(b2.record.version, 4);
    let history: Vec<u64> = store
        .history("edge")
        .unwrap()
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(
        history,
        vec![3, 1],
        "newest first, only this group's versions"
    );
    assert_eq!(store.get("edge", 1).unwrap().unwrap().hash, "a1");
    assert!(store.get("edge", 2).unwrap().is_none(), "2 belongs to web");
}

#[test]
fn unchanged_content_makes_no_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let first = store.commit("default", new_version("h")).unwrap();
    let again = store.commit("default", new_version("h")).unwrap();
    assert!(!first.unchanged);
    assert!(again.unchanged);
    assert_eq!(again.record.version, first.record.version);
    assert_eq!(store.history("default").unwrap().len(), 1);
    // Going back to earlier content is a new version (the live hash differs).
    store.commit("default", new_version("other")).unwrap();
    let back = store.commit("default", new_version("h")).unwrap();
    assert!(!back.unchanged);
    assert_eq!(back.record.version, 3);
}

#[test]
fn invalid_group_names_are_refused() {
    for bad in ["", "Edge", "-x", "_x", "a/b", "a.b", &"a".repeat(64)] {
        assert!(!valid_group(bad), "{bad:?}");
    }
    for good in ["default", "0", "edge-1", "web_bff", &"a".repeat(63)] {
        assert!(valid_group(good), "{good:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    assert!(matches!(
        store.commit("../etc", new_version("h")),
        Err(StoreError::InvalidGroup(_))
    ));
}

#[test]
fn crash_after_version_written_before_current_reopens_at_last_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.commit("default", new_version("good")).unwrap();
    // The first two steps of a commit, then "crash" before the `current` pointer moves.
    let v = store.reserve_version().unwrap();
    let mut record = (*store.current("default").unwrap()).clone();
    record.version = v;
    record.hash = "half".into();
    store.write_version(&record).unwrap();
    // And a half-written temp file from an interrupted atomic write.
    let tmp = dir.path().join("groups/default/.current.tmp");
    std::fs::write(&tmp, "99").unwrap();
    drop(store);

    let mut store = Store::open(dir.path()).unwrap();
    let live = store.current("default").unwrap();
    assert_eq!((live.version, live.hash.as_str()), (1, "good"));
    assert_eq!(store.history("default").unwrap().len(), 1);
    assert!(!tmp.exists(), "temp files are cleaned up");
    assert!(
        !version_path(&dir.path().join("groups/default"), v).exists(),
        "uncommitted record removed"
    );
    // The burnt number is not reused.
    let next = store.commit("default", new_version("next")).unwrap();
    assert_eq!(next.record.version, v + 1);
}

#[test]
fn crash_before_first_commit_of_a_group_leaves_no_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let v = store.reserve_version().unwrap();
    let record = VersionRecord {
        group: "edge".into(),
        version: v,
        hash: "h".into(),
        applied_at: "2024-01-01T00:00:00Z".into(),
        origin: "apply".into(),
        summary: String::new(),
        config_text: String::new(),
        snapshot: SnapshotJson::from_json("null".to_owned()).unwrap(),
    };
    store.write_version(&record).unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert!(store.current("edge").is_none());
    assert!(store.history("edge").is_none());
    assert!(store.groups().is_empty());
}

#[test]
fn corrupt_current_pointer_is_reported_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.commit("default", new_version("h")).unwrap();
    drop(store);
    std::fs::write(dir.path().join("groups/default/current"), "not a number").unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("current"), "{err}");
}

#[test]
fn a_second_store_on_the_same_directory_is_refused_until_the_first_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Store::open(dir.path()).unwrap();
    first.commit("default", new_version("h1")).unwrap();
    let err = Store::open(dir.path()).expect_err("the directory is in use");
    assert!(matches!(err, StoreError::Locked(_)), "{err}");
    assert!(err.to_string().contains("another control plane"), "{err}");
    drop(first);
    let reopened = Store::open(dir.path()).unwrap();
    assert_eq!(reopened.current("default").unwrap().hash, "h1");
}

#[test]
fn the_history_limit_deletes_the_oldest_versions_and_keeps_the_live_one() {
    let dir = tempfile::tempdir().unwrap();
    let limit = NonZeroUsize::new(3);
    let mut store = Store::open(dir.path()).unwrap().with_history_limit(limit);
    for i in 1..=5 {
        store
            .commit("default", new_version(&format!("h{i}")))
            .unwrap();
    }
    let versions = |s: &Store| -> Vec<u64> {
        s.history("default")
            .unwrap()
            .iter()
            .map(|m| m.version)
            .collect()
    };
    assert_eq!(versions(&store), [5, 4, 3], "newest first, three kept");
    assert!(store.get("default", 1).unwrap().is_none(), "pruned");
    assert_eq!(store.get("default", 3).unwrap().unwrap().hash, "h3");
    let files = std::fs::read_dir(dir.path().join("groups/default/versions"))
        .unwrap()
        .count();
    assert_eq!(files, 3, "the pruned versions' files are gone");
    // Another group keeps its own three; the numbering goes on.
    store.commit("web", new_version("w1")).unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(versions(&store), [5, 4, 3], "as pruned after a restart");
    assert_eq!(store.current("web").unwrap().version, 6);
}

#[test]
fn a_reserved_number_is_used_once_or_skipped_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let v = store.reserve_version().unwrap();
    assert_eq!(v, 1);
    let c = store.commit_reserved("edge", v, new_version("a")).unwrap();
    assert_eq!((c.record.version, c.unchanged), (1, false));
    // Used: refused a second time; never reserved: refused.
    assert!(store.commit_reserved("edge", 1, new_version("b")).is_err());
    assert!(store.commit_reserved("edge", 9, new_version("b")).is_err());
    // Same content: nothing stored, the number is burnt.
    let v = store.reserve_version().unwrap();
    let c = store.commit_reserved("edge", v, new_version("a")).unwrap();
    assert!(c.unchanged);
    assert_eq!(c.record.version, 1);
    drop(store);
    let mut store = Store::open(dir.path()).unwrap();
    let c = store.commit("edge", new_version("b")).unwrap();
    assert_eq!(
        c.record.version, 3,
        "2 was reserved, so it is never handed out"
    );
    assert_eq!(store.history("edge").unwrap().len(), 2);
}

#[test]
fn records_are_compressed_and_plain_records_of_earlier_builds_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let group_dir = dir.path().join("groups/default");
    let mut store = Store::open(dir.path()).unwrap();
    let big = format!("{}\n", "services: []\n".repeat(20_000));
    let mut v1 = new_version("one");
    v1.config_text = big.clone();
    let one = store.commit("default", v1).unwrap().record.version;
    let two = store
        .commit("default", new_version("two"))
        .unwrap()
        .record
        .version;
    drop(store);

    // New records are LZ4 frames, much smaller than their JSON.
    let compressed = std::fs::read(version_path(&group_dir, one)).unwrap();
    assert_eq!(
        &compressed[..4],
        &[0x04, 0x22, 0x4d, 0x18],
        "LZ4 frame magic"
    );
    assert!(compressed.len() < big.len() / 10, "{}", compressed.len());

    // Turn version 1 into what an earlier build wrote: plain JSON named `.json`.
    let record = read_record(&group_dir, one).unwrap();
    std::fs::write(
        legacy_path(&group_dir, one),
        serde_json::to_vec(&record).unwrap(),
    )
    .unwrap();
    std::fs::remove_file(version_path(&group_dir, one)).unwrap();

    let store = Store::open(dir.path()).unwrap();
    let history: Vec<u64> = store
        .history("default")
        .unwrap()
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(history, vec![two, one]);
    let old = store.get("default", one).unwrap().expect("legacy record");
    assert_eq!(
        (old.hash.as_str(), old.config_text.as_str()),
        ("one", big.as_str())
    );

    // A corrupt compressed record is named in the error.
    std::fs::write(version_path(&group_dir, two), b"not lz4").unwrap();
    drop(store);
    let err = Store::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains(&format!("{two:020}.json.lz4")), "{err}");
}
