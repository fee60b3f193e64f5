//! What a sync reports when a step cannot be done as planned, through the library with real
//! local folders:
//!
//! | case | what stands in the way | reported |
//! |---|---|---|
//! | `too_big_for_the_mirror_is_a_refusal_there` | the mirror's `max_file_size` | failed: the path, mirror side, `Refused` |
//! | `a_file_where_a_directory_goes_is_unsafe_here` | a local file where the incoming file's parent goes | failed: the path, local side, `Unsafe` |
//! | `a_rename_is_a_rename` | nothing | renamed, nothing copied |
//! | `a_rename_that_cannot_be_done_is_a_copy` | the renamed file was edited here | the new name copied, the edit kept (deferred) |
//!
//! In each, a failure's `Display` and its JSON are the message users read.

#![allow(clippy::unwrap_used)]

use std::fs;

use briefcase::reconcile::{sync, FailureKind, Side, SyncOptions};
use briefcase_memory::MemoryMirror;
use briefcase_mirror::{Capabilities, RelPath};

mod support;
use support::pair::Pair;
use support::write;

fn rp(s: &str) -> RelPath {
    RelPath::try_from(s).unwrap()
}

/// Without the local rescan a sync starts with: what is on disk then is unknown to the journal,
/// as when it was written during the sync.
fn unscanned() -> SyncOptions {
    SyncOptions {
        rescan_local: false,
        ..Default::default()
    }
}

#[test]
fn too_big_for_the_mirror_is_a_refusal_there() {
    let caps = Capabilities {
        max_file_size: Some(4),
        ..Default::default()
    };
    let mut p = Pair::new(|_| MemoryMirror::with_capabilities("m", caps));
    write(&p.a.root.join("big"), "ten bytes!");
    write(&p.a.root.join("ok"), "tiny");
    let r = p.sync(false);
    assert_eq!(r.pushed, 1, "{r:?}");
    assert_eq!(r.failed.len(), 1, "{r:?}");
    let f = &r.failed[0];
    assert_eq!(
        (f.path.as_ref(), f.side, f.kind),
        (Some(&rp("big")), Some(Side::Remote), FailureKind::Refused)
    );
    assert!(
        f.message
            .starts_with("big (10 bytes) is larger than mirror memory:m can hold (4 bytes)"),
        "{f}"
    );
    assert_eq!(f.to_string(), f.message);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["failed"], serde_json::json!([f.message]));
}

#[test]
fn a_file_where_a_directory_goes_is_unsafe_here() {
    let mut p = Pair::new(|m| m);
    write(&p.a.root.join("d/f"), "from a");
    p.sync(false);
    // Unknown to b's journal: `d` is deferred (changed here), `d/f` cannot get its parent.
    write(&p.b.root.join("d"), "a file on b");
    let r =
        p.rt.block_on(sync(&mut p.b, &p.m, "m", &unscanned()))
            .unwrap();
    assert_eq!(r.failed.len(), 1, "{r:?}");
    let f = &r.failed[0];
    assert_eq!(
        (f.path.as_ref(), f.side, f.kind),
        (Some(&rp("d/f")), Some(Side::Local), FailureKind::Unsafe)
    );
    assert!(
        f.message
            .ends_with("d is not a directory (or is a symlink); cannot create d/f"),
        "{f}"
    );
    assert_eq!(
        fs::read_to_string(p.b.root.join("d")).unwrap(),
        "a file on b"
    );
}

/// A and B hold `a`; A renames it to `b`. Returns the pair after A's sync.
fn renamed_on_a() -> Pair<briefcase_dir::DirMirror> {
    let mut p = Pair::new(|m| m);
    write(&p.a.root.join("a"), "content");
    p.sync(false);
    let r = p.sync(true);
    assert_eq!(r.pulled, 1, "{r:?}");
    fs::rename(p.a.root.join("a"), p.a.root.join("b")).unwrap();
    let r = p.sync(false);
    assert_eq!(
        (r.renamed, r.pushed),
        (1, 0),
        "a rename on the mirror: {r:?}"
    );
    p
}

#[test]
fn a_rename_is_a_rename() {
    let mut p = renamed_on_a();
    let r = p.sync(true);
    assert_eq!((r.renamed, r.pulled, r.removed_local), (1, 0, 0), "{r:?}");
    assert!(r.failed.is_empty() && r.deferred.is_empty(), "{r:?}");
    assert!(!p.b.root.join("a").exists());
    assert_eq!(fs::read_to_string(p.b.root.join("b")).unwrap(), "content");
}

#[test]
fn a_rename_that_cannot_be_done_is_a_copy() {
    let mut p = renamed_on_a();
    // Edited on b and not journaled yet: `a` may not be moved away, nor removed.
    write(&p.b.root.join("a"), "edited on b, longer");
    let r =
        p.rt.block_on(sync(&mut p.b, &p.m, "m", &unscanned()))
            .unwrap();
    assert_eq!((r.renamed, r.pulled, r.removed_local), (0, 1, 0), "{r:?}");
    assert!(r.failed.is_empty(), "{r:?}");
    assert_eq!(r.deferred.len(), 1, "the removal of a: {r:?}");
    assert_eq!(
        fs::read_to_string(p.b.root.join("a")).unwrap(),
        "edited on b, longer"
    );
    assert_eq!(fs::read_to_string(p.b.root.join("b")).unwrap(), "content");
}
