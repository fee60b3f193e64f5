//! Invariant 1 (no lost writes) against the exact race it is about: the user saves a file while
//! a sync is bringing in another version of it. A wrapper mirror edits the local file at chosen
//! moments of a real sync (while the incoming file is fetched, while a batch of fetched files
//! waits to land, while a batch of pushes is being written; and a file made on the mirror in a
//! directory the sync just made there), on a real `dir` mirror and real local folders. Every
//! version must survive: the local edit under its name or as a conflict copy, and the incoming
//! version too; after a few more rounds both machines agree.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;

mod support;
use briefcase_dir::DirMirror;
use briefcase_mirror::{
    Capabilities, Detail, FolderId, Mirror, MirrorResult, Presence, RelPath, RemoteStat,
    StateStore, WriteOp, WriteResult,
};
use support::pair::Pair;

/// What to do to a local file, and when.
#[derive(Debug, Clone)]
enum Trigger {
    /// After the mirror's `get` of `on` returns, write `content` to local `edit`.
    AfterGet {
        on: &'static str,
        edit: PathBuf,
        content: Vec<u8>,
    },
    /// After a `put_batch`/`put` returns, write `content` to local `edit`.
    AfterPut { edit: PathBuf, content: Vec<u8> },
    /// Before a `put_batch` reads its sources, write `content` to local `edit` (a save landing
    /// while the file is being sent).
    BeforePut { edit: PathBuf, content: Vec<u8> },
    /// After the mirror's `mkdir` of `on` returns, write `content` to `edit` on the mirror
    /// (someone on the NAS puts a file into a directory the sync has just made).
    AfterMkdir {
        on: &'static str,
        edit: PathBuf,
        content: Vec<u8>,
    },
}

/// A `dir` mirror that plays the user at the moments listed in `triggers` (each fires once).
#[derive(Debug)]
struct Racing {
    inner: DirMirror,
    triggers: Mutex<Vec<Trigger>>,
}

impl Racing {
    fn fire_get(&self, path: &RelPath) {
        let mut t = self.triggers.lock().expect("lock");
        if let Some(i) = t
            .iter()
            .position(|x| matches!(x, Trigger::AfterGet { on, .. } if path.display() == *on))
        {
            if let Trigger::AfterGet { edit, content, .. } = t.remove(i) {
                std::fs::write(edit, content).expect("user edit");
            }
        }
    }

    fn fire_before_put(&self) {
        let mut t = self.triggers.lock().expect("lock");
        if let Some(i) = t
            .iter()
            .position(|x| matches!(x, Trigger::BeforePut { .. }))
        {
            if let Trigger::BeforePut { edit, content } = t.remove(i) {
                std::fs::write(edit, content).expect("user edit");
            }
        }
    }

    fn fire_mkdir(&self, path: &RelPath) {
        let mut t = self.triggers.lock().expect("lock");
        if let Some(i) = t
            .iter()
            .position(|x| matches!(x, Trigger::AfterMkdir { on, .. } if path.display() == *on))
        {
            if let Trigger::AfterMkdir { edit, content, .. } = t.remove(i) {
                std::fs::write(edit, content).expect("edit on the mirror");
            }
        }
    }

    fn fire_put(&self) {
        let mut t = self.triggers.lock().expect("lock");
        if let Some(i) = t.iter().position(|x| matches!(x, Trigger::AfterPut { .. })) {
            if let Trigger::AfterPut { edit, content } = t.remove(i) {
                std::fs::write(edit, content).expect("user edit");
            }
        }
    }
}

#[async_trait]
impl StateStore for Racing {
    async fn read_state(&self, name: &str) -> MirrorResult<Option<Vec<u8>>> {
        self.inner.read_state(name).await
    }
    async fn commit_state(&self, write: &[(&str, &[u8])], remove: &[&str]) -> MirrorResult<()> {
        self.inner.commit_state(write, remove).await
    }
    async fn list_state(&self) -> MirrorResult<Vec<String>> {
        self.inner.list_state().await
    }
    async fn create_state_exclusive(&self, name: &str, bytes: &[u8]) -> MirrorResult<bool> {
        self.inner.create_state_exclusive(name, bytes).await
    }
}

#[async_trait]
impl Mirror for Racing {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn probe(&self) -> MirrorResult<Presence> {
        self.inner.probe().await
    }
    async fn init(&self, folder: FolderId) -> MirrorResult<()> {
        self.inner.init(folder).await
    }
    async fn walk(&self, under: Option<&RelPath>, detail: Detail) -> MirrorResult<Vec<RemoteStat>> {
        self.inner.walk(under, detail).await
    }
    async fn stat(&self, path: &RelPath) -> MirrorResult<Option<RemoteStat>> {
        self.inner.stat(path).await
    }
    async fn get(&self, path: &RelPath, dest: &Path) -> MirrorResult<RemoteStat> {
        let r = self.inner.get(path, dest).await;
        self.fire_get(path);
        r
    }
    /// A user edit may fire just before a batch with puts reaches the mirror, and just after.
    async fn write(&self, ops: Vec<WriteOp>) -> Vec<WriteResult> {
        let puts = ops.iter().any(|op| matches!(op, WriteOp::Put(_)));
        if puts {
            self.fire_before_put();
        }
        let made: Vec<RelPath> = ops
            .iter()
            .filter_map(|op| match op {
                WriteOp::Mkdir { path, .. } => Some(path.clone()),
                _ => None,
            })
            .collect();
        let r = self.inner.write(ops).await;
        if puts {
            self.fire_put();
        }
        for p in &made {
            self.fire_mkdir(p);
        }
        r
    }
    async fn sweep(&self) -> MirrorResult<usize> {
        self.inner.sweep().await
    }
}

type Two = Pair<Racing>;

fn racing(inner: DirMirror) -> Racing {
    Racing {
        inner,
        triggers: Mutex::new(Vec::new()),
    }
}

trait Syncs {
    fn sync_a(&mut self);
    fn sync_b(&mut self) -> Vec<String>;
    fn settle(&mut self);
}

impl Syncs for Two {
    fn sync_a(&mut self) {
        let r = self.sync(false);
        assert!(r.failed.is_empty(), "a: {:?}", r.failed);
    }

    /// Syncs B; returns the deferred steps.
    fn sync_b(&mut self) -> Vec<String> {
        let r = self.sync(true);
        assert!(r.failed.is_empty(), "b: {:?}", r.failed);
        r.deferred
    }

    fn settle(&mut self) {
        for _ in 0..3 {
            self.sync_a();
            self.sync_b();
        }
        assert_eq!(tree(&self.a.root), tree(&self.b.root), "a and b differ");
    }
}

fn write(root: &Path, name: &str, content: &str) {
    std::fs::write(root.join(name), content).expect("write");
}

/// (relative path, content) of every file, without briefcase's marker.
fn tree(root: &Path) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(root).expect("read_dir") {
        let e = e.expect("entry");
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".briefcase") || !e.file_type().expect("type").is_file() {
            continue;
        }
        let c = std::fs::read_to_string(e.path()).expect("read");
        out.insert((name, c));
    }
    out
}

fn contents(root: &Path) -> BTreeSet<String> {
    tree(root).into_iter().map(|(_, c)| c).collect()
}

/// Incoming versions of many files (landed as one batch) race local saves: one save while its
/// own incoming version is being fetched, one save of a file fetched earlier whose batch has not
/// landed yet. Neither save may be overwritten.
#[test]
fn save_during_a_batched_pull_is_kept() {
    let mut w = Two::new(racing);
    for i in 0..12 {
        write(&w.a.root, &format!("f{i:02}"), &format!("v1 {i}"));
    }
    w.sync_a();
    assert!(w.sync_b().is_empty());
    for i in 0..12 {
        write(&w.a.root, &format!("f{i:02}"), &format!("v2 from a {i}"));
    }
    w.sync_a();
    w.m.triggers.lock().expect("lock").extend([
        Trigger::AfterGet {
            on: "f03",
            edit: w.b.root.join("f03"),
            content: b"saved on b while f03 was fetched".to_vec(),
        },
        Trigger::AfterGet {
            on: "f09",
            edit: w.b.root.join("f01"),
            content: b"saved on b while f01 waited to land".to_vec(),
        },
    ]);
    let deferred = w.sync_b();
    assert_eq!(deferred.len(), 2, "both raced paths deferred: {deferred:?}");
    assert!(w.m.triggers.lock().expect("lock").is_empty(), "both fired");
    w.settle();
    let have = contents(&w.a.root);
    for want in [
        "saved on b while f03 was fetched",
        "saved on b while f01 waited to land",
        "v2 from a 3",
        "v2 from a 1",
        "v2 from a 11",
    ] {
        assert!(have.contains(want), "lost {want:?}; have {have:?}");
    }
}

/// The same race with a single incoming file (a batch of one, flushed with a per-file fsync).
#[test]
fn save_during_a_single_pull_is_kept() {
    let mut w = Two::new(racing);
    write(&w.a.root, "notes.txt", "v1");
    w.sync_a();
    w.sync_b();
    write(&w.a.root, "notes.txt", "v2 from a");
    w.sync_a();
    w.m.triggers.lock().expect("lock").push(Trigger::AfterGet {
        on: "notes.txt",
        edit: w.b.root.join("notes.txt"),
        content: b"saved on b mid-sync".to_vec(),
    });
    assert_eq!(w.sync_b().len(), 1);
    w.settle();
    let have = contents(&w.b.root);
    assert!(have.contains("saved on b mid-sync"), "{have:?}");
    assert!(have.contains("v2 from a"), "{have:?}");
}

/// A save right after a batch of pushes was written: the mirror holds exactly the version sent
/// (the backend verified it against the journal's hash), so it is recorded as such and nothing is
/// deferred; the save is simply the next change, and reaches the other machine. (Before issue 8
/// this push was left unrecorded, and the mirror's copy later passed for an edit made there.)
#[test]
fn save_right_after_a_batched_push_is_sent_next() {
    let mut w = Two::new(racing);
    for i in 0..12 {
        write(&w.a.root, &format!("f{i:02}"), &format!("v1 {i}"));
    }
    w.m.triggers.lock().expect("lock").push(Trigger::AfterPut {
        edit: w.a.root.join("f05"),
        content: b"saved on a while the batch was sent".to_vec(),
    });
    let r = w.sync(false);
    assert!(r.deferred.is_empty(), "{:?}", r.deferred);
    assert!(r.conflicts.is_empty(), "{:?}", r.conflicts);
    w.settle();
    let have = tree(&w.b.root);
    assert!(
        have.contains(&(
            "f05".to_string(),
            "saved on a while the batch was sent".to_string()
        )),
        "{have:?}"
    );
}

/// A save while a batch of pushes reads its files (issue 8's root cause): the backend finds the
/// file no longer holds the journaled content and stores nothing for it (`SourceChanged`); the
/// step is deferred, the mirror keeps what its state says, and the save reaches the other
/// machine without a conflict on either side.
#[test]
fn save_during_a_batched_push_is_not_stored_and_sent_next() {
    let mut w = Two::new(racing);
    for i in 0..12 {
        write(&w.a.root, &format!("f{i:02}"), &format!("v1 {i}"));
    }
    w.m.triggers.lock().expect("lock").push(Trigger::BeforePut {
        edit: w.a.root.join("f05"),
        content: b"saved on a while the batch was read".to_vec(),
    });
    let r = w.sync(false);
    assert_eq!(r.deferred.len(), 1, "{:?}", r.deferred);
    assert!(
        !w.m.inner.root().join("f05").exists(),
        "nothing unrecorded stored on the mirror"
    );
    w.settle();
    for root in [&w.a.root, &w.b.root] {
        let have = tree(root);
        assert!(
            have.contains(&(
                "f05".to_string(),
                "saved on a while the batch was read".to_string()
            )),
            "{have:?}"
        );
        assert!(
            !have.iter().any(|(p, _)| p.contains(".conflict-")),
            "{have:?}"
        );
    }
}

/// A file written on the mirror into a directory the sync has just made there, before the batch
/// of the directory's new files is sent (they are checked with one listing of the directory,
/// not a stat each): that file is not overwritten, its push is deferred, and both versions
/// survive.
#[test]
fn file_made_on_the_mirror_in_a_new_directory_is_not_overwritten() {
    let mut w = Two::new(racing);
    std::fs::create_dir(w.a.root.join("new")).expect("mkdir");
    for i in 0..12 {
        write(&w.a.root, &format!("new/f{i:02}"), &format!("from a {i}"));
    }
    let edit = w.mirror_root().join("new/f03");
    w.m.triggers
        .lock()
        .expect("lock")
        .push(Trigger::AfterMkdir {
            on: "new",
            edit: edit.clone(),
            content: b"made on the mirror".to_vec(),
        });
    let r = w.sync(false);
    assert!(w.m.triggers.lock().expect("lock").is_empty(), "fired");
    assert_eq!(r.deferred.len(), 1, "{:?}", r.deferred);
    assert!(r.deferred[0].starts_with("new/f03"), "{:?}", r.deferred);
    assert_eq!(
        std::fs::read_to_string(&edit).expect("read"),
        "made on the mirror"
    );
    assert_eq!(r.pushed, 11 + 1, "the other files and the directory");
    for _ in 0..3 {
        w.sync(false);
        w.sync(true);
    }
    for root in [&w.a.root, &w.b.root] {
        let mut have = BTreeSet::new();
        for e in std::fs::read_dir(root.join("new")).expect("read_dir") {
            let e = e.expect("entry");
            have.insert(std::fs::read_to_string(e.path()).expect("read"));
        }
        assert!(have.contains("made on the mirror"), "{have:?}");
        assert!(have.contains("from a 3"), "{have:?}");
        assert_eq!(have.len(), 13, "{have:?}");
    }
}
