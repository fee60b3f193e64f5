//! Deterministic crash points of a sync (invariant 3: after a crash at any point, the next syncs
//! converge), in process, without timing: the mirror is wrapped in [`CrashMirror`], which lets the
//! first `n` mirror operations through and then "dies": that operation and every later one fails,
//! so the state store at the end of the round cannot happen either. The local replica is then
//! dropped and reopened from disk, exactly what `kill -9` leaves behind when it lands between two
//! mirror operations. Every `n` from 0 until the sync finishes is tried.
//!
//! A single machine that nobody else touches must converge with no conflict copies (a conflict
//! needs two writers), with no `.briefcase-tmp-*` left anywhere, and with the newest content of
//! every file on both sides.
//!
//! `e2e.rs::kill_9_during_sync_converges` checks the same with real `SIGKILL`s of the binary (which
//! also land *inside* mirror operations, e.g. between a temp file and its rename).
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use briefcase::reconcile::{ensure_initialised, sync, SyncOptions};
use briefcase::replica::LocalReplica;
use briefcase_dir::DirMirror;
use briefcase_mirror::{
    Capabilities, Detail, FolderId, Mirror, MirrorError, MirrorExt, MirrorResult, Presence,
    RelPath, RemoteStat, StateStore, WriteOp, WriteResult,
};
use support::{temp_files, tree, write};

/// A mirror that fails every operation after the first `budget` (a process killed there).
#[derive(Debug, Clone)]
struct CrashMirror {
    inner: DirMirror,
    left: Arc<AtomicUsize>,
    crashed: Arc<AtomicBool>,
}

impl CrashMirror {
    fn new(root: &Path, budget: usize) -> Self {
        CrashMirror {
            inner: DirMirror::new(root.to_path_buf()),
            left: Arc::new(AtomicUsize::new(budget)),
            crashed: Arc::new(AtomicBool::new(false)),
        }
    }

    fn tick(&self) -> MirrorResult<()> {
        let ok = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if ok && !self.crashed.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.crashed.store(true, Ordering::SeqCst);
        Err(MirrorError::Offline {
            location: self.inner.location(),
            reason: "simulated crash".into(),
        })
    }

    fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }
}

impl CrashMirror {
    /// How many of `n` operations may still run before the crash (ticking that many).
    fn allow(&self, n: usize) -> usize {
        (0..n).take_while(|_| self.tick().is_ok()).count()
    }

    fn died(&self) -> MirrorError {
        MirrorError::Offline {
            location: self.inner.location(),
            reason: "simulated crash".into(),
        }
    }
}

/// Every state file and every operation of a batch counts as one mirror operation: a crash can
/// land between any two, inside the batched paths too.
#[async_trait]
impl StateStore for CrashMirror {
    async fn read_state(&self, name: &str) -> MirrorResult<Option<Vec<u8>>> {
        self.tick()?;
        self.inner.read_state(name).await
    }
    async fn commit_state(&self, write: &[(&str, &[u8])], remove: &[&str]) -> MirrorResult<()> {
        let ok = self.allow(write.len());
        for (name, bytes) in write.iter().take(ok) {
            self.inner.write_state(name, bytes).await?;
        }
        if ok < write.len() {
            return Err(self.died());
        }
        self.tick()?;
        self.inner.commit_state(&[], remove).await
    }
    async fn list_state(&self) -> MirrorResult<Vec<String>> {
        self.tick()?;
        self.inner.list_state().await
    }
    async fn create_state_exclusive(&self, name: &str, bytes: &[u8]) -> MirrorResult<bool> {
        self.tick()?;
        self.inner.create_state_exclusive(name, bytes).await
    }
}

#[async_trait]
impl Mirror for CrashMirror {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn probe(&self) -> MirrorResult<Presence> {
        self.tick()?;
        self.inner.probe().await
    }
    async fn init(&self, folder: FolderId) -> MirrorResult<()> {
        self.tick()?;
        self.inner.init(folder).await
    }
    async fn walk(&self, under: Option<&RelPath>, detail: Detail) -> MirrorResult<Vec<RemoteStat>> {
        self.tick()?;
        self.inner.walk(under, detail).await
    }
    async fn stat(&self, path: &RelPath) -> MirrorResult<Option<RemoteStat>> {
        self.tick()?;
        self.inner.stat(path).await
    }
    async fn get(&self, path: &RelPath, dest: &Path) -> MirrorResult<RemoteStat> {
        self.tick()?;
        self.inner.get(path, dest).await
    }
    /// The first operations of the batch the budget allows go through, as one batch (the
    /// batched put and removal of the backend), and the rest fail.
    async fn write(&self, mut ops: Vec<WriteOp>) -> Vec<WriteResult> {
        let ok = self.allow(ops.len());
        let rest = ops.split_off(ok);
        let mut out = if ops.is_empty() {
            Vec::new()
        } else {
            self.inner.write(ops).await
        };
        out.extend(rest.iter().map(|_| Err(self.died())));
        out
    }
    async fn sweep(&self) -> MirrorResult<usize> {
        self.tick()?;
        self.inner.sweep().await
    }
}

struct World {
    _tmp: tempfile::TempDir,
    work: PathBuf,
    data: PathBuf,
    nas: PathBuf,
    rt: tokio::runtime::Runtime,
}

impl World {
    fn new(files: &[(&str, String)]) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let (work, data, nas) = (
            tmp.path().join("work"),
            tmp.path().join("data"),
            tmp.path().join("nas"),
        );
        for (p, c) in files {
            write(&work.join(p), c);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let w = World {
            _tmp: tmp,
            work,
            data,
            nas,
            rt,
        };
        let local = LocalReplica::init(&w.work, &w.data, "office", None).unwrap();
        w.rt.block_on(ensure_initialised(
            &local,
            &DirMirror::new(w.nas.clone()),
            "nas",
            false,
        ))
        .unwrap();
        drop(local);
        w
    }

    /// A sync that must finish; returns its report's one-line summary.
    fn sync(&self) -> String {
        let mut local = LocalReplica::open(&self.work, &self.data).unwrap();
        let m = DirMirror::new(self.nas.clone());
        let r = self
            .rt
            .block_on(sync(&mut local, &m, "nas", &SyncOptions::default()))
            .unwrap();
        format!(
            "pushed {} pulled {} merged {} conflicts {:?} found {} deferred {:?} failed {:?}",
            r.pushed, r.pulled, r.merged, r.conflicts, r.remote_changes_found, r.deferred, r.failed
        )
    }

    /// A sync that "crashes" after `budget` mirror operations; whether it crashed.
    fn crashing_sync(&self, budget: usize) -> bool {
        let mut local = LocalReplica::open(&self.work, &self.data).unwrap();
        let m = CrashMirror::new(&self.nas, budget);
        let r = self
            .rt
            .block_on(sync(&mut local, &m, "nas", &SyncOptions::default()));
        assert!(
            r.is_ok() || m.crashed(),
            "sync failed without a crash: {r:?}"
        );
        m.crashed()
    }

    /// Two plain syncs, then: both trees equal, no temp file, no conflict copy, `want` content.
    fn check(&self, budget: usize, want: &[(String, String)]) {
        let s1 = self.sync();
        let s2 = self.sync();
        let ctx = format!("crash after {budget} mirror operations\n  sync 1: {s1}\n  sync 2: {s2}");
        let (a, b) = (tree(&self.work), tree(&self.nas));
        assert!(
            temp_files(&self.work).is_empty() && temp_files(&self.nas).is_empty(),
            "temp files left: {:?} {:?}; {ctx}",
            temp_files(&self.work),
            temp_files(&self.nas)
        );
        let copies: Vec<&String> = a.keys().filter(|k| k.contains(".conflict-")).collect();
        assert!(
            copies.is_empty(),
            "conflict copies with a single writer: {copies:?}; {ctx}"
        );
        for (p, c) in want {
            assert_eq!(a.get(p), Some(c), "local {p}; {ctx}");
            assert_eq!(b.get(p), Some(c), "mirror {p}; {ctx}");
        }
        assert_eq!(a, b, "{ctx}");
    }
}

/// Runs `scenario(world, budget)` for every crash point until a sync no longer crashes.
fn every_crash_point(scenario: impl Fn(usize) -> bool) {
    for budget in 0..1000 {
        if !scenario(budget) {
            assert!(budget > 5, "the sync needs more than {budget} operations");
            return;
        }
    }
    panic!("never finished");
}

fn files(n: usize, tag: &str) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            (
                format!("d{}/f{i}", i % 3),
                format!("{tag} {i} {}", "x".repeat(i * 7 + tag.len())),
            )
        })
        .collect()
}

fn put_all(root: &Path, fs: &[(String, String)]) {
    for (p, c) in fs {
        write(&root.join(p), c);
    }
}

/// The local side edits files, a sync pushing them dies, the local side edits them again: the
/// data the dead sync already put on the mirror is this machine's own older version, not an
/// edit made on the mirror, so no conflict may come of it.
#[test]
fn crash_while_pushing_edits() {
    every_crash_point(|budget| {
        let v0 = files(6, "v0");
        let init: Vec<(&str, String)> = v0.iter().map(|(p, c)| (p.as_str(), c.clone())).collect();
        let w = World::new(&init);
        w.sync();
        put_all(&w.work, &files(6, "v1"));
        let crashed = w.crashing_sync(budget);
        let v2 = files(6, "v2-newest");
        put_all(&w.work, &v2);
        w.check(budget, &v2);
        crashed
    });
}

/// The first sync of a new folder dies; the folder is edited; the next syncs converge without
/// conflicts.
#[test]
fn crash_during_first_sync() {
    every_crash_point(|budget| {
        let v0 = files(6, "v0");
        let init: Vec<(&str, String)> = v0.iter().map(|(p, c)| (p.as_str(), c.clone())).collect();
        let w = World::new(&init);
        let crashed = w.crashing_sync(budget);
        let v1 = files(6, "v1-newest");
        put_all(&w.work, &v1);
        w.check(budget, &v1);
        crashed
    });
}

/// Files are deleted here, the sync dies, some names are created again here.
#[test]
fn crash_while_pushing_deletions() {
    every_crash_point(|budget| {
        let v0 = files(6, "v0");
        let init: Vec<(&str, String)> = v0.iter().map(|(p, c)| (p.as_str(), c.clone())).collect();
        let w = World::new(&init);
        w.sync();
        for (p, _) in &v0[..3] {
            std::fs::remove_file(w.work.join(p)).unwrap();
        }
        let crashed = w.crashing_sync(budget);
        let again: Vec<(String, String)> = files(2, "again").into_iter().collect();
        put_all(&w.work, &again);
        w.check(budget, &again);
        crashed
    });
}

/// Someone edits files on the mirror, a sync taking them in dies, they edit them again. The
/// second edit must arrive here: the mirror's change numbers issued by the dead sync must not be
/// issued again for different content (DESIGN.md: an OSN is stored durably before it is
/// announced), or both sides would believe they hold the same version.
#[test]
fn crash_while_pulling_mirror_edits() {
    every_crash_point(|budget| {
        let v0 = files(6, "v0");
        let init: Vec<(&str, String)> = v0.iter().map(|(p, c)| (p.as_str(), c.clone())).collect();
        let w = World::new(&init);
        w.sync();
        put_all(&w.nas, &files(4, "mirror-edit-1"));
        let crashed = w.crashing_sync(budget);
        let v2 = files(4, "mirror-edit-2-newest");
        put_all(&w.nas, &v2);
        w.check(budget, &v2);
        crashed
    });
}
