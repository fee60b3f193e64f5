//! The long-running sync path (`watch`, later the daemon): a [`Session`] keeps the mirror's state
//! in memory between syncs and a [`MirrorScan`] limits the scan of the mirror to what its watcher
//! reported. These tests pin down that the shortcuts never hide a change or lose a write:
//! another machine's sync invalidates the cached state, a scoped scan finds edits and removals in
//! its scope, and a sync that skips the mirror scan still refuses to write over a change made on
//! the mirror behind briefcase's back.

use std::path::Path;

use briefcase::reconcile::{sync_session, MirrorScan, Session, SyncOptions, SyncReport};
use briefcase_dir::DirMirror;
use briefcase_mirror::RelPath;

mod support;
use support::pair::Pair;

type Two = Pair<DirMirror>;

/// A sync of A through `session`, scanning `s` of the mirror.
fn sync_a(w: &mut Two, session: &mut Session, s: MirrorScan) -> SyncReport {
    w.rt.block_on(sync_session(&mut w.a, &w.m, "m", &scan(s), session))
        .expect("sync a")
}

fn scan(s: MirrorScan) -> SyncOptions {
    SyncOptions {
        mirror_scan: s,
        ..Default::default()
    }
}

fn read(root: &Path, p: &str) -> Option<String> {
    std::fs::read_to_string(root.join(p)).ok()
}

fn rp(s: &str) -> RelPath {
    RelPath::try_from(s).expect("path")
}

/// A's session caches the mirror's state; B then syncs a change through the same mirror. A's
/// next session sync (skipping the mirror scan, as after a local event) must see B's new state
/// generation and pull the change, not trust its stale copy.
#[test]
fn another_machines_sync_invalidates_the_cached_state() {
    let mut w = Two::new(|m| m);
    let mut sa = Session::default();
    std::fs::write(w.a.root.join("f"), "one").expect("write");
    let r = sync_a(&mut w, &mut sa, MirrorScan::Full);
    assert!(r.complete);
    w.sync(true);
    std::fs::write(w.b.root.join("g"), "from b").expect("write");
    w.sync(true);
    let r = sync_a(&mut w, &mut sa, MirrorScan::Skip);
    assert!(r.complete, "{r:?}");
    assert_eq!(read(&w.a.root, "g").as_deref(), Some("from b"));
}

/// A scoped scan finds an edit and a removed directory inside its scope (and stores them), and
/// leaves what is outside its scope for a later full scan.
#[test]
fn scoped_scan_finds_changes_in_scope_only() {
    let mut w = Two::new(|m| m);
    let mut sa = Session::default();
    std::fs::create_dir_all(w.a.root.join("d/e")).expect("mkdir");
    for (p, c) in [
        ("d/e/x", "x1"),
        ("d/y", "y1"),
        ("top", "t1"),
        ("other", "o1"),
    ] {
        std::fs::write(w.a.root.join(p), c).expect("write");
    }
    sync_a(&mut w, &mut sa, MirrorScan::Full);
    // Behind briefcase's back, on the mirror.
    let m = w.mirror_root();
    std::fs::write(m.join("top"), "t2 edited on the mirror").expect("edit");
    std::fs::remove_dir_all(m.join("d/e")).expect("rm -r");
    std::fs::write(m.join("other"), "o2 edited on the mirror").expect("edit");
    let r = sync_a(&mut w, &mut sa, MirrorScan::Paths(vec![rp("d"), rp("top")]));
    assert!(r.complete, "{r:?}");
    assert_eq!(r.remote_changes_found, 3, "top, d/e and d/e/x: {r:?}");
    assert_eq!(
        read(&w.a.root, "top").as_deref(),
        Some("t2 edited on the mirror")
    );
    assert!(!w.a.root.join("d/e").exists(), "removal in scope applied");
    assert_eq!(read(&w.a.root, "d/y").as_deref(), Some("y1"));
    assert_eq!(
        read(&w.a.root, "other").as_deref(),
        Some("o1"),
        "out of scope: not yet"
    );
    sync_a(&mut w, &mut sa, MirrorScan::Full);
    assert_eq!(
        read(&w.a.root, "other").as_deref(),
        Some("o2 edited on the mirror")
    );
}

/// A sync for a local change skips the mirror scan; if the same file was edited on the mirror
/// meanwhile (its watcher event not handled yet), the push must not write over it: deferred, and
/// the next full scan turns the two edits into a conflict with both kept.
#[test]
fn skipped_scan_never_overwrites_a_mirror_edit() {
    let mut w = Two::new(|m| m);
    let mut sa = Session::default();
    std::fs::write(w.a.root.join("f"), "base").expect("write");
    sync_a(&mut w, &mut sa, MirrorScan::Full);
    std::fs::write(w.mirror_root().join("f"), "edited on the mirror, longer").expect("edit");
    std::fs::write(w.a.root.join("f"), "edited here").expect("edit");
    w.a.rescan(None).expect("rescan");
    let r = sync_a(&mut w, &mut sa, MirrorScan::Skip);
    assert_eq!(r.deferred.len(), 1, "{r:?}");
    assert_eq!(
        read(&w.mirror_root(), "f").as_deref(),
        Some("edited on the mirror, longer"),
        "the mirror edit was overwritten"
    );
    for _ in 0..2 {
        sync_a(&mut w, &mut sa, MirrorScan::Full);
    }
    let mut contents: Vec<String> = std::fs::read_dir(&w.a.root)
        .expect("ls")
        .filter_map(|e| {
            let e = e.ok()?;
            let n = e.file_name().to_string_lossy().into_owned();
            (n == "f" || n.starts_with("f.conflict-"))
                .then(|| std::fs::read_to_string(e.path()).ok())
                .flatten()
        })
        .collect();
    contents.sort();
    assert_eq!(contents, ["edited here", "edited on the mirror, longer"]);
}
