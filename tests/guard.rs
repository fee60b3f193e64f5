//! The mass-deletion guard (invariant 7; docs/architecture.md "The mass-deletion guard"), both
//! sides of its rule, through the library with a real `dir` mirror:
//!
//! | case | deleted | how it came to light | held? |
//! |---|---|---|---|
//! | `watched_subtree_removal_goes_through` | 30 of 35 files (`rm -rf target/`) | the watcher | no |
//! | `found_by_scan_is_held_and_the_rest_goes_through` | the same | a full scan (downtime) | yes, and an edit, a new file go through |
//! | `watched_removal_of_every_file_is_held` | all 35 | the watcher | yes: the folder looks wiped |
//! | `emptied_mirror_is_held` | 30 of 35 on the mirror | a scan of the mirror | yes |
//! | `another_machines_watched_deletions_go_through` | 30 of 35 by beta | beta's watcher | no |
#![allow(clippy::unwrap_used)]

use std::fs;

use briefcase::reconcile::{sync, SyncOptions, SyncReport};
use briefcase::replica::{LocalReplica, Seen};
use briefcase_dir::DirMirror;
use briefcase_mirror::RelPath;

mod support;
use support::pair::Pair;
use support::{tree, write};

fn rp(s: &str) -> RelPath {
    RelPath::try_from(s).unwrap()
}

/// Alpha holds `target/` (30 files) and 5 others, synced to the mirror (and to beta).
fn setup() -> Pair<DirMirror> {
    let mut p = Pair::new(|m| m);
    let a = p.a.root.clone();
    for i in 0..30 {
        write(&a.join(format!("target/debug/o{i}")), "object");
    }
    for i in 0..5 {
        write(&a.join(format!("src/s{i}.rs")), "source");
    }
    assert!(p.sync(false).complete);
    assert!(p.sync(true).complete);
    p
}

/// A sync that takes the journal as it is (the watcher kept it fresh: no full rescan first).
fn sync_watched(p: &mut Pair<DirMirror>, b: bool) -> SyncReport {
    let opts = SyncOptions {
        rescan_local: false,
        ..SyncOptions::default()
    };
    let rep: &mut LocalReplica = if b { &mut p.b } else { &mut p.a };
    p.rt.block_on(sync(rep, &p.m, "m", &opts)).unwrap()
}

/// `rm -rf target/` plus an edit and a new file elsewhere, seen as `how`.
fn work(p: &mut Pair<DirMirror>, how: Seen) {
    let a = p.a.root.clone();
    fs::remove_dir_all(a.join("target")).unwrap();
    write(&a.join("src/s0.rs"), "edited");
    write(&a.join("src/new.rs"), "new");
    let scopes = [rp("target"), rp("src")];
    match how {
        Seen::Watched => p.a.rescan_as(Some(&scopes), how).unwrap(),
        Seen::FoundByScan => p.a.rescan_as(None, how).unwrap(),
    };
}

fn mirror_has(p: &Pair<DirMirror>, path: &str) -> bool {
    p.mirror_root().join(path).exists()
}

#[test]
fn watched_subtree_removal_goes_through() {
    let mut p = setup();
    work(&mut p, Seen::Watched);
    let r = sync_watched(&mut p, false);
    assert_eq!(r.held, None);
    assert!(r.complete, "{r:?}");
    assert!(!mirror_has(&p, "target"));
    assert_eq!(tree(&p.mirror_root()), tree(&p.a.root));
}

#[test]
fn found_by_scan_is_held_and_the_rest_goes_through() {
    let mut p = setup();
    work(&mut p, Seen::FoundByScan);
    let r = sync_watched(&mut p, false);
    let why = r.held.clone().expect("held");
    assert!(
        why.contains("30 of 35") && why.contains("--allow-mass-delete"),
        "{why}"
    );
    assert!(!r.complete);
    // The deletions wait; the edit and the new file do not.
    assert!(mirror_has(&p, "target/debug/o7"));
    assert_eq!(
        fs::read_to_string(p.mirror_root().join("src/s0.rs")).unwrap(),
        "edited"
    );
    assert!(mirror_has(&p, "src/new.rs"));
    // Held again at the next sync, until let through.
    assert!(sync_watched(&mut p, false).held.is_some());
    let opts = SyncOptions {
        allow_mass_delete: true,
        ..SyncOptions::default()
    };
    let r = p.rt.block_on(sync(&mut p.a, &p.m, "m", &opts)).unwrap();
    assert!(r.complete && r.held.is_none(), "{r:?}");
    assert!(!mirror_has(&p, "target/debug/o7"));
}

#[test]
fn watched_removal_of_every_file_is_held() {
    let mut p = setup();
    let a = p.a.root.clone();
    fs::remove_dir_all(a.join("target")).unwrap();
    fs::remove_dir_all(a.join("src")).unwrap();
    p.a.rescan_as(Some(&[rp("target"), rp("src")]), Seen::Watched)
        .unwrap();
    let r = sync_watched(&mut p, false);
    let why = r
        .held
        .expect("a folder emptied while watched still looks wiped");
    assert!(why.contains("35 of 35"), "{why}");
    assert!(mirror_has(&p, "src/s1.rs"));
}

#[test]
fn emptied_mirror_is_held() {
    let mut p = setup();
    fs::remove_dir_all(p.mirror_root().join("target")).unwrap();
    let r = p.sync(false);
    let why = r.held.expect("deletions found on the mirror");
    assert!(why.contains("this machine"), "{why}");
    assert!(
        p.a.root.join("target/debug/o3").exists(),
        "nothing deleted here"
    );
}

#[test]
fn another_machines_watched_deletions_go_through() {
    let mut p = setup();
    let b = p.b.root.clone();
    fs::remove_dir_all(b.join("target")).unwrap();
    p.b.rescan_as(Some(&[rp("target")]), Seen::Watched).unwrap();
    let r = sync_watched(&mut p, true);
    assert!(r.complete && r.held.is_none(), "{r:?}");
    // Alpha takes them: beta's watcher saw them go.
    let r = sync_watched(&mut p, false);
    assert!(r.complete && r.held.is_none(), "{r:?}");
    assert!(!p.a.root.join("target/debug/o3").exists());
}
