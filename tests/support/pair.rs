//! Two local replicas of one folder ("alpha" and "beta", separate journals) and one mirror over
//! a real `dir` mirror in a temp dir, driven through the library (no binary): for tests that
//! need to reach inside a sync (a racing or failing mirror, sessions).

use std::path::PathBuf;

use briefcase::reconcile::{ensure_initialised, sync, SyncOptions, SyncReport};
use briefcase::replica::LocalReplica;
use briefcase_dir::DirMirror;
use briefcase_mirror::Mirror;

pub struct Pair<M: Mirror> {
    pub tmp: tempfile::TempDir,
    pub a: LocalReplica,
    pub b: LocalReplica,
    pub m: M,
    pub rt: tokio::runtime::Runtime,
}

impl<M: Mirror> Pair<M> {
    /// A and B initialised (B with A's folder ID), and the mirror `wrap(dir mirror)` initialised
    /// from A.
    pub fn new(wrap: impl FnOnce(DirMirror) -> M) -> Pair<M> {
        let tmp = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let a = LocalReplica::init(&tmp.path().join("a"), &tmp.path().join("da"), "alpha", None)
            .unwrap();
        let b = LocalReplica::init(
            &tmp.path().join("b"),
            &tmp.path().join("db"),
            "beta",
            Some(a.journal.folder_id()),
        )
        .unwrap();
        let m = wrap(DirMirror::new(tmp.path().join("m")));
        rt.block_on(ensure_initialised(&a, &m, "m", false)).unwrap();
        Pair { tmp, a, b, m, rt }
    }

    /// The mirror's root directory.
    pub fn mirror_root(&self) -> PathBuf {
        self.tmp.path().join("m")
    }

    /// One sync of A (`b == false`) or B with the mirror, with default options.
    pub fn sync(&mut self, b: bool) -> SyncReport {
        let rep = if b { &mut self.b } else { &mut self.a };
        self.rt
            .block_on(sync(rep, &self.m, "m", &SyncOptions::default()))
            .unwrap()
    }
}
