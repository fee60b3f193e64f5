use super::*;

fn entry(path: &str, stamp: Stamp) -> Entry {
    Entry {
        path: RelPath::try_from(path).unwrap(),
        kind: EntryKind::File,
        deleted: false,
        size: 3,
        mode: 0o644,
        mtime_ns: 1,
        hash: Some(ContentHash::of(b"abc")),
        symlink_target: None,
        chunks: vec![],
        version: VersionVector::single(stamp.replica, stamp.osn),
        stamp,
        inode: 7,
        observed_mtime_ns: 1,
    }
}

#[test]
fn osns_are_never_reused_after_rollback_or_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.sqlite");
    let mut j = Journal::create(&db, FolderId(1), ReplicaId(9), "here").unwrap();
    let mut b = j.begin().unwrap();
    let s1 = b.next_osn();
    b.put(&entry("a", s1)).unwrap();
    b.commit().unwrap();
    {
        let mut b = j.begin().unwrap();
        let s = b.next_osn();
        b.put(&entry("b", s)).unwrap();
        // dropped: rolled back
    }
    assert_eq!(j.osn().unwrap(), Osn(1));
    assert!(j.entry(&RelPath::try_from("b").unwrap()).unwrap().is_none());
    drop(j);
    let mut j = Journal::open(&db).unwrap();
    let mut b = j.begin().unwrap();
    assert_eq!(b.next_osn().osn, Osn(2));
    b.commit().unwrap();
    assert_eq!(j.knowledge().unwrap().get(ReplicaId(9)), Osn(2));
    assert_eq!(
        j.entry(&RelPath::try_from("a").unwrap()).unwrap().unwrap(),
        entry("a", s1)
    );
}

#[test]
fn changes_since_selects_by_knowledge() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::create(
        &dir.path().join("j.sqlite"),
        FolderId(1),
        ReplicaId(9),
        "here",
    )
    .unwrap();
    let mut b = j.begin().unwrap();
    for p in ["a", "b", "c"] {
        let s = b.next_osn();
        b.put(&entry(p, s)).unwrap();
    }
    b.put(&entry(
        "x",
        Stamp {
            replica: ReplicaId(5),
            osn: Osn(4),
        },
    ))
    .unwrap();
    b.commit().unwrap();
    let paths = |k: &KnowledgeVector| {
        let mut v: Vec<String> = j
            .changes_since(k)
            .unwrap()
            .into_iter()
            .map(|e| e.path.display())
            .collect();
        v.sort();
        v
    };
    assert_eq!(paths(&VersionVector::new()), ["a", "b", "c", "x"]);
    let mut k = VersionVector::single(ReplicaId(9), Osn(2));
    assert_eq!(paths(&k), ["c", "x"]);
    k.set(ReplicaId(5), Osn(4));
    assert_eq!(paths(&k), ["c"]);
}

#[test]
fn entries_under_is_a_subtree() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::create(
        &dir.path().join("j.sqlite"),
        FolderId(1),
        ReplicaId(9),
        "here",
    )
    .unwrap();
    let mut b = j.begin().unwrap();
    for p in ["a", "a/b", "a/b/c", "a-b", "a0", "b"] {
        let s = b.next_osn();
        b.put(&entry(p, s)).unwrap();
    }
    b.commit().unwrap();
    let under: Vec<String> = j
        .entries_under(Some(&RelPath::try_from("a").unwrap()))
        .unwrap()
        .into_iter()
        .map(|e| e.path.display())
        .collect();
    assert_eq!(under, ["a", "a/b", "a/b/c"]);
    // What a scan reads: the same rows, only the columns it compares.
    for scope in [None, Some(RelPath::try_from("a").unwrap())] {
        let full: Vec<crate::scan::Known> = j
            .entries_under(scope.as_ref())
            .unwrap()
            .iter()
            .map(crate::scan::Known::from)
            .collect();
        assert_eq!(j.known_under(scope.as_ref()).unwrap(), full, "{scope:?}");
    }
}

#[test]
fn foreign_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("other.sqlite");
    let c = Connection::open(&db).unwrap();
    c.execute_batch("CREATE TABLE t(x); PRAGMA user_version = 3;")
        .unwrap();
    drop(c);
    let err = Journal::open(&db).unwrap_err().to_string();
    assert!(err.contains("not a briefcase journal"), "{err}");
}
