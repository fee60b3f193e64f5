//! The conformance suite every backend runs, after rclone's `fstest/fstests`.
//!
//! A backend's whole conformance test is one line per variant, [`conformance!`]`(NAME, FIXTURE)`:
//!
//! ```ignore
//! briefcase_mirror::conformance!(memory, briefcase_memory::MemoryMirror::new("full"));
//! briefcase_mirror::conformance!(posix, LocalFixture::tempdir(|root| Box::new(DirMirror::new(root))));
//! briefcase_mirror::conformance!(fat_image, optional fat_image_fixture().await);
//! ```
//!
//! The macro expands a `mod NAME` holding one `#[tokio::test]` per case (the calling crate needs
//! `tokio` with the `macros` and `rt-multi-thread` features as a dev-dependency). FIXTURE is an
//! expression giving a [`Fixture`], evaluated afresh in an `async` block for each case (it may
//! `.await`), so each case starts from a fresh, empty root and runs alone; `optional FIXTURE`
//! gives an `Option` of one, for media that need tools or privileges. Several calls run the suite
//! once per variant (file-system profile, capabilities) in one file.
//!
//! Every case asserts behaviour. A capability the backend lacks (see [`Capabilities`]) is not
//! skipped: the case asserts that the backend says so with [`MirrorError::Unsupported`] (symlinks,
//! rename) or, for permission bits, that the operation still succeeds and keeps content and mtime.
//! Limits of the *test medium* rather than the backend (a FUSE FAT driver that stores only ASCII
//! names) are declared by the fixture ([`Fixture::ascii_only_names`]) and turn the case into a
//! check that the backend refuses cleanly with [`MirrorError::Refused`].

use crate::MirrorExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::model::{EntryKind, FolderId, MirrorState, ReplicaId};
use crate::path::RelPath;
use crate::{state, Capabilities, FileMeta, Mirror, MirrorError, Presence, RemoteStat};

pub use crate::fixture::Fixture;

/// A [`Fixture`] whose root is a local directory `BASE/root`; vanishing moves it to
/// `BASE/root.away`. Built over a temp dir ([`LocalFixture::tempdir`]) or over any directory kept
/// alive by a guard, e.g. a mounted image ([`LocalFixture::in_dir`]).
pub struct LocalFixture {
    mirror: Box<dyn Mirror>,
    root: PathBuf,
    away: PathBuf,
    ascii_only: bool,
    // Dropped after the mirror: unmounts or deletes the medium.
    _guard: Box<dyn std::any::Any + Send>,
}

impl std::fmt::Debug for LocalFixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalFixture")
            .field("root", &self.root)
            .field("mirror", &self.mirror)
            .finish()
    }
}

impl LocalFixture {
    /// A fresh temp dir; `make` gets the (existing, empty) root and builds the mirror.
    ///
    /// # Panics
    /// When the temp dir cannot be created (this is test code).
    pub fn tempdir(make: impl FnOnce(PathBuf) -> Box<dyn Mirror>) -> Self {
        #[allow(clippy::expect_used)]
        let dir = tempfile::tempdir().expect("create temp dir for the fixture");
        let base = dir.path().to_path_buf();
        Self::in_dir(&base, make, Box::new(dir))
    }

    /// Root `base/root` (created here), kept alive by `guard`, which is dropped after the mirror.
    ///
    /// # Panics
    /// When the root cannot be created (this is test code).
    pub fn in_dir(
        base: &Path,
        make: impl FnOnce(PathBuf) -> Box<dyn Mirror>,
        guard: Box<dyn std::any::Any + Send>,
    ) -> Self {
        let root = base.join("root");
        #[allow(clippy::expect_used)]
        std::fs::create_dir(&root).expect("create the fixture root");
        LocalFixture {
            mirror: make(root.clone()),
            away: base.join("root.away"),
            root,
            ascii_only: false,
            _guard: guard,
        }
    }

    /// Declares that the medium stores only ASCII names (see [`Fixture::ascii_only_names`]).
    pub fn ascii_only_names(mut self) -> Self {
        self.ascii_only = true;
        self
    }
}

impl Fixture for LocalFixture {
    fn mirror(&self) -> &dyn Mirror {
        &*self.mirror
    }
    fn root(&self) -> Option<&Path> {
        Some(&self.root)
    }
    fn set_root_present(&self, present: bool) -> std::io::Result<()> {
        if present {
            if std::fs::symlink_metadata(&self.root).is_ok() {
                std::fs::remove_dir(&self.root)?;
            }
            std::fs::rename(&self.away, &self.root)
        } else {
            std::fs::rename(&self.root, &self.away)
        }
    }
    fn ascii_only_names(&self) -> bool {
        self.ascii_only
    }
}

/// The whole conformance suite against a backend, as `mod $name` of one `#[tokio::test]` per case
/// in [`cases`] (see the module docs):
///
/// ```ignore
/// briefcase_mirror::conformance!(memory, briefcase_memory::MemoryMirror::new("full"));
/// ```
///
/// `$fixture` is evaluated for each case inside an `async` block (it may `.await`), in a module
/// that sees the calling module's items (`use super::*`); it gives a [`Fixture`], or with
/// `optional` an `Option` of one (`None`: the medium is not available here; the fixture said why,
/// and the case passes without running).
#[macro_export]
macro_rules! conformance {
    ($name:ident, optional $fixture:expr $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_suite!(optional || async { $fixture });
        }
    };
    ($name:ident, $fixture:expr $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_suite!(|| async { $fixture });
        }
    };
}

/// The machinery of [`conformance!`]: one `#[tokio::test]` per case in [`cases`], each calling
/// `factory().await` (an async fn returning a [`Fixture`]) for a fresh root.
///
/// `conformance_suite!(optional factory)` takes a factory returning `Option<impl Fixture>`, for
/// media that need tools or privileges (a real FAT image needs root and `fusefat`): on `None` the
/// factory has printed why, and the case passes without running.
#[macro_export]
macro_rules! conformance_suite {
    (@cases $how:tt $($case:ident)*) => {
        $( $crate::conformance_suite!(@one $how $case); )*
    };
    (@one (required $factory:expr) $case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let fixture = ($factory)().await;
            $crate::testkit::cases::$case(&fixture).await;
        }
    };
    (@one (optional $factory:expr) $case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            if let Some(fixture) = ($factory)().await {
                $crate::testkit::cases::$case(&fixture).await;
            }
        }
    };
    (@all $how:tt) => {
        $crate::conformance_suite!(@cases $how
            probe_absent_empty_unmarked_marked
            init_marks_the_root
            meta_round_trip_overwrite_and_bad_names
            offline_when_root_or_marker_missing
            state_round_trip
            state_is_incremental
            state_newest_valid_generation_wins
            meta_list_and_remove
            read_bytes_reads_and_limits
            put_creates_and_overwrites
            put_without_parent_fails
            put_batch_reports_each_item
            put_batch_refuses_a_changed_source
            modes_round_trip_or_declared_absent
            get_copies_content
            list_parents_first_and_hides_reserved
            list_under_lists_one_subtree
            list_file_names_under_lists_files
            mkdir_is_idempotent
            rename_file_and_dir
            rename_over_existing_file
            remove_file_symlink_and_empty_dir
            remove_non_empty_dir_fails
            remove_batch_reports_each_path
            symlink_stored_as_link_never_followed
            symlink_parent_outside_root_is_unsafe
            set_meta_changes_mode_and_mtime
            unicode_names_round_trip
            non_utf8_names_round_trip
            empty_file
            large_file_verified_by_blake3
            put_is_atomic_for_readers
            stat_of_absent_is_none
            case_only_collisions
            oversize_file_refused
        );
    };
    (optional $factory:expr) => {
        $crate::conformance_suite!(@all (optional $factory));
    };
    ($factory:expr) => {
        $crate::conformance_suite!(@all (required $factory));
    };
}

/// The cases, one `async fn(&dyn Fixture)` each; they panic on a violation (test code).
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub mod cases {
    use super::*;

    const FOLDER: FolderId = FolderId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
    /// An mtime that is not on a 2 s boundary and has sub-second digits.
    const MTIME: i64 = 1_600_000_001_123_456_789;
    const META: FileMeta = FileMeta {
        mode: 0o644,
        mtime_ns: MTIME,
    };

    pub(super) struct Ctx<'a> {
        pub m: &'a dyn Mirror,
        pub caps: Capabilities,
        pub scratch: tempfile::TempDir,
        n: AtomicUsize,
    }

    impl Ctx<'_> {
        fn src(&self, bytes: &[u8]) -> PathBuf {
            let p = self
                .scratch
                .path()
                .join(format!("src{}", self.n.fetch_add(1, Ordering::Relaxed)));
            std::fs::write(&p, bytes).unwrap();
            p
        }
        async fn put(&self, path: &str, bytes: &[u8]) -> Result<RemoteStat, MirrorError> {
            self.put_rel(&rp(path.as_bytes()), bytes, META).await
        }
        async fn put_rel(
            &self,
            path: &RelPath,
            bytes: &[u8],
            meta: FileMeta,
        ) -> Result<RemoteStat, MirrorError> {
            let src = self.src(bytes);
            self.m.put(path, &src, meta).await
        }
        async fn get(&self, path: &str) -> Vec<u8> {
            self.get_rel(&rp(path.as_bytes())).await
        }
        async fn get_rel(&self, path: &RelPath) -> Vec<u8> {
            let dest = self
                .scratch
                .path()
                .join(format!("dst{}", self.n.fetch_add(1, Ordering::Relaxed)));
            self.m
                .get(path, &dest)
                .await
                .unwrap_or_else(|e| panic!("get {path}: {e}"));
            std::fs::read(&dest).unwrap()
        }
        async fn mkdir(&self, path: &str) {
            self.m
                .mkdir(
                    &rp(path.as_bytes()),
                    FileMeta {
                        mode: 0o755,
                        mtime_ns: MTIME,
                    },
                )
                .await
                .unwrap();
        }
        async fn stat(&self, path: &str) -> Option<RemoteStat> {
            self.m.stat(&rp(path.as_bytes())).await.unwrap()
        }
        async fn paths(&self) -> Vec<String> {
            self.m
                .list()
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.path.display())
                .collect()
        }
        fn mtime_close(&self, got: i64, want: i64) -> bool {
            got.abs_diff(want) < self.caps.mtime_granularity_ns.max(1)
        }
    }

    /// Fails when `dir` (not below) holds a `.briefcase-tmp-*` file.
    fn assert_no_temp_files(dir: &Path) {
        let left: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| {
                n.as_encoded_bytes()
                    .starts_with(crate::TMP_PREFIX.as_bytes())
            })
            .collect();
        assert!(left.is_empty(), "temp files left in {dir:?}: {left:?}");
    }

    fn rp(bytes: &[u8]) -> RelPath {
        RelPath::new(bytes.to_vec()).unwrap()
    }

    fn ctx(fx: &dyn Fixture) -> Ctx<'_> {
        let m = fx.mirror();
        Ctx {
            m,
            caps: m.capabilities(),
            scratch: tempfile::tempdir().unwrap(),
            n: AtomicUsize::new(0),
        }
    }

    /// A context over a freshly initialised mirror.
    async fn ready(fx: &dyn Fixture) -> Ctx<'_> {
        let c = ctx(fx);
        c.m.init(FOLDER).await.unwrap();
        c
    }

    fn is_unsupported<T: std::fmt::Debug>(r: &Result<T, MirrorError>) -> bool {
        matches!(r, Err(MirrorError::Unsupported { .. }))
    }

    fn pseudo_random(seed: &[u8], len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        blake3::Hasher::new()
            .update(seed)
            .finalize_xof()
            .fill(&mut out);
        out
    }

    /// `probe` tells an absent root, an empty one, one with foreign content, and a marked one.
    pub async fn probe_absent_empty_unmarked_marked(fx: &dyn Fixture) {
        let c = ctx(fx);
        assert_eq!(c.m.probe().await.unwrap(), Presence::Empty, "fresh root");
        fx.set_root_present(false).unwrap();
        assert_eq!(
            c.m.probe().await.unwrap(),
            Presence::Absent,
            "vanished root"
        );
        fx.set_root_present(true).unwrap();
        assert_eq!(c.m.probe().await.unwrap(), Presence::Empty, "root is back");
        if let Some(root) = fx.root() {
            std::fs::write(root.join("foreign.txt"), b"not ours").unwrap();
            assert_eq!(
                c.m.probe().await.unwrap(),
                Presence::Unmarked,
                "content without marker"
            );
        } else {
            eprintln!("note: fixture has no local root; Unmarked is covered by backend tests");
        }
        c.m.init(FOLDER).await.unwrap();
        assert_eq!(c.m.probe().await.unwrap(), Presence::Marked(FOLDER));
    }

    /// `init` marks the root with the folder ID; init again is harmless; data written after init
    /// is listed.
    pub async fn init_marks_the_root(fx: &dyn Fixture) {
        let c = ready(fx).await;
        assert_eq!(c.m.probe().await.unwrap(), Presence::Marked(FOLDER));
        assert!(
            c.m.list().await.unwrap().is_empty(),
            "a fresh mirror lists nothing (marker/state hidden)"
        );
        c.m.init(FOLDER).await.unwrap();
        assert_eq!(c.m.probe().await.unwrap(), Presence::Marked(FOLDER));
        fx.set_root_present(false).unwrap();
        c.m.init(FOLDER).await.unwrap();
        assert_eq!(
            c.m.probe().await.unwrap(),
            Presence::Marked(FOLDER),
            "init creates an absent root"
        );
    }

    /// State files round trip, overwrite, and names that could escape are refused.
    pub async fn meta_round_trip_overwrite_and_bad_names(fx: &dyn Fixture) {
        let c = ready(fx).await;
        assert_eq!(c.m.read_state("state.0").await.unwrap(), None);
        c.m.write_state("state.0", b"first").await.unwrap();
        assert_eq!(
            c.m.read_state("state.0").await.unwrap().as_deref(),
            Some(&b"first"[..])
        );
        c.m.write_state("state.0", b"second, longer").await.unwrap();
        assert_eq!(
            c.m.read_state("state.0").await.unwrap().as_deref(),
            Some(&b"second, longer"[..])
        );
        c.m.write_state("state.0", b"").await.unwrap();
        assert_eq!(
            c.m.read_state("state.0").await.unwrap().as_deref(),
            Some(&b""[..])
        );
        for bad in [
            "../escape",
            "a/b",
            "",
            "..",
            "/etc/passwd",
            "UPPER",
            "sp ace",
        ] {
            assert!(
                c.m.write_state(bad, b"x").await.is_err(),
                "write_meta({bad:?}) must be refused"
            );
            assert!(
                c.m.read_state(bad).await.is_err(),
                "read_meta({bad:?}) must be refused"
            );
        }
        c.m.write_state("state.1", b"state").await.unwrap();
        for reserved in [
            ".briefcase/state.1",
            ".briefcase-tmp-1",
            "d/.briefcase-tmp-2",
        ] {
            let r = c.put(reserved, b"data over state").await;
            assert!(r.is_err(), "put {reserved} must be refused: {r:?}");
            assert!(
                c.m.stat(&rp(reserved.as_bytes())).await.is_err()
                    || c.stat(reserved).await.is_none()
            );
        }
        assert!(c.m.remove(&rp(b".briefcase/state.1")).await.is_err());
        assert_eq!(
            c.m.read_state("state.1").await.unwrap().as_deref(),
            Some(&b"state"[..])
        );
        assert!(
            c.m.list().await.unwrap().is_empty(),
            "state files are not data"
        );
        assert_eq!(c.m.probe().await.unwrap(), Presence::Marked(FOLDER));
    }

    /// A vanished root, or a root without its marker (an empty mount point), is offline: nothing
    /// is read as "empty", nothing is written (invariant 4).
    pub async fn offline_when_root_or_marker_missing(fx: &dyn Fixture) {
        let c = ready(fx).await;
        c.put("a.txt", b"a").await.unwrap();
        fx.set_root_present(false).unwrap();
        let offline = |r: &Result<_, MirrorError>, what: &str| {
            assert!(
                matches!(r, Err(MirrorError::Offline { .. })),
                "{what} on a vanished root: {:?}",
                r.as_ref().err()
            );
            assert!(
                r.as_ref().err().unwrap().is_transient(),
                "offline is transient"
            );
        };
        offline(&c.m.list().await.map(|_| ()), "list");
        offline(&c.m.read_state("state.0").await.map(|_| ()), "read_meta");
        offline(&c.m.write_state("state.0", b"x").await, "write_meta");
        if let Some(root) = fx.root() {
            std::fs::create_dir(root).unwrap(); // an empty mount point
            assert_eq!(c.m.probe().await.unwrap(), Presence::Empty);
            offline(&c.m.list().await.map(|_| ()), "list");
            offline(&c.m.read_state("state.0").await.map(|_| ()), "read_meta");
            offline(&c.m.write_state("state.0", b"x").await, "write_meta");
            offline(&c.put("b.txt", b"b").await.map(|_| ()), "put");
            offline(&c.m.mkdir(&rp(b"d"), META).await.map(|_| ()), "mkdir");
            offline(&c.m.remove(&rp(b"a.txt")).await, "remove");
            offline(&c.m.stat(&rp(b"a.txt")).await.map(|_| ()), "stat");
            assert_eq!(
                std::fs::read_dir(root).unwrap().count(),
                0,
                "nothing written into the empty mount point"
            );
        }
        fx.set_root_present(true).unwrap();
        assert_eq!(c.m.probe().await.unwrap(), Presence::Marked(FOLDER));
        assert_eq!(c.paths().await, ["a.txt"]);
    }

    fn sample_state() -> MirrorState {
        let mut s = MirrorState::new(FOLDER, ReplicaId(0xfeed), "conformance");
        s.next_osn();
        s
    }

    fn sample_entry(path: &str, n: u64) -> crate::Entry {
        let mut version = crate::VersionVector::new();
        version.set(ReplicaId(0xfeed), crate::Osn(n + 1));
        crate::Entry {
            path: rp(path.as_bytes()),
            kind: EntryKind::File,
            deleted: false,
            size: n,
            mode: 0o644,
            mtime_ns: MTIME,
            hash: Some(crate::ContentHash::of(path.as_bytes())),
            symlink_target: None,
            chunks: vec![],
            version,
            stamp: crate::Stamp {
                replica: ReplicaId(0xfeed),
                osn: crate::Osn(n + 1),
            },
            inode: n,
            observed_mtime_ns: MTIME,
        }
    }

    /// `state::store` then `state::load` returns what was stored, generation by generation.
    pub async fn state_round_trip(fx: &dyn Fixture) {
        let c = ready(fx).await;
        assert!(
            state::load(c.m).await.unwrap().is_none(),
            "a new mirror has no state"
        );
        let mut s = sample_state();
        let g1 = state::store(c.m, &state::Stored::default(), &mut s)
            .await
            .unwrap();
        let l = state::load(c.m).await.unwrap().unwrap();
        assert_eq!((&l.stored, &l.state), (&g1, &s));
        s.next_osn();
        let g2 = state::store(c.m, &g1, &mut s).await.unwrap();
        let l = state::load(c.m).await.unwrap().unwrap();
        assert_eq!((&l.stored, &l.state), (&g2, &s));
        assert_eq!(g2.generation, g1.generation + 1);
        assert!(c.m.list().await.unwrap().is_empty(), "state is not data");
    }

    /// Stores write segments holding only what changed, then a new base once segments have
    /// grown; every generation loads back exactly; parts no slot refers to are removed.
    pub async fn state_is_incremental(fx: &dyn Fixture) {
        let c = ready(fx).await;
        let mut s = sample_state();
        for i in 0..400u32 {
            s.insert_entry(sample_entry(&format!("dir/file-{i:04}"), i.into()));
        }
        let mut stored = state::store(c.m, &state::Stored::default(), &mut s)
            .await
            .unwrap();
        let base_len = stored.root.parts[0].len;
        let mut saw_segment = false;
        let mut saw_rebase = false;
        for round in 0..80u32 {
            let p = format!("dir/file-{:04}", (round * 7) % 400);
            let mut e = s.entry(&rp(p.as_bytes())).unwrap().clone();
            e.size += 1;
            s.insert_entry(e);
            s.next_osn();
            let next = state::store(c.m, &stored, &mut s).await.unwrap();
            let last = next.root.parts.last().unwrap();
            if next.root.parts.len() > 1 {
                saw_segment = true;
                assert!(
                    last.len < base_len / 10,
                    "a one-entry change writes a small segment ({} bytes, base {base_len})",
                    last.len
                );
            } else if round > 0 {
                saw_rebase = true;
            }
            stored = next;
            let l = state::load(c.m).await.unwrap().unwrap();
            assert_eq!((&l.stored, &l.state), (&stored, &s), "round {round}");
        }
        assert!(saw_segment && saw_rebase, "segments, then a new base");
        if let Ok(names) = c.m.list_state().await {
            let parts = names
                .iter()
                .filter(|n| n.starts_with(state::PART_PREFIX))
                .count();
            assert!(
                parts <= 2 * (state::MAX_SEGMENTS + 1),
                "old parts are collected ({parts} left)"
            );
        }
        // A removed entry stays removed.
        s.remove_entry(&rp(b"dir/file-0003"));
        let stored = state::store(c.m, &stored, &mut s).await.unwrap();
        let l = state::load(c.m).await.unwrap().unwrap();
        assert_eq!((&l.stored, &l.state), (&stored, &s));
        assert!(l.state.entry(&rp(b"dir/file-0003")).is_none());
    }

    /// When the newer slot is damaged, or a part it lists is, the older valid generation is
    /// loaded; when both are damaged, `load` says Corrupt. A mirror that commits atomically
    /// keeps no slots (its own log falls back): there, a damaged part is Corrupt.
    pub async fn state_newest_valid_generation_wins(fx: &dyn Fixture) {
        let c = ready(fx).await;
        if c.caps.atomic_commit {
            return state_damaged_part_is_corrupt(&c).await;
        }
        let mut s1 = sample_state();
        let g1 = state::store(c.m, &state::Stored::default(), &mut s1)
            .await
            .unwrap();
        let mut s2 = s1.clone();
        s2.next_osn();
        s2.insert_entry(sample_entry("new", 9));
        let g2 = state::store(c.m, &g1, &mut s2).await.unwrap();
        let newer = state::SLOTS[(g2.generation % 2) as usize];
        let good = c.m.read_state(newer).await.unwrap().unwrap();
        c.m.write_state(newer, b"garbage from a yanked stick")
            .await
            .unwrap();
        let l = state::load(c.m).await.unwrap().unwrap();
        assert_eq!(
            (&l.stored, &l.state),
            (&g1, &s1),
            "older valid generation wins"
        );
        // A truncated newer slot is just as invalid.
        c.m.write_state(newer, &good[..good.len() - 1])
            .await
            .unwrap();
        assert_eq!(state::load(c.m).await.unwrap().unwrap().stored, g1);
        // So is an intact root whose newest part is damaged.
        c.m.write_state(newer, &good).await.unwrap();
        assert_eq!(state::load(c.m).await.unwrap().unwrap().stored, g2);
        let part = &g2.root.parts.last().unwrap().name;
        let mut bytes = c.m.read_state(part).await.unwrap().unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        c.m.write_state(part, &bytes).await.unwrap();
        assert_eq!(state::load(c.m).await.unwrap().unwrap().stored, g1);
        c.m.write_state(state::SLOTS[(g1.generation % 2) as usize], b"also garbage")
            .await
            .unwrap();
        assert!(matches!(
            state::load(c.m).await,
            Err(MirrorError::Corrupt { .. })
        ));
    }

    /// On a mirror with `atomic_commit`: stores write parts only (no slots, no intents), a new
    /// base replaces every other part in its commit, and a damaged part is Corrupt.
    async fn state_damaged_part_is_corrupt(c: &Ctx<'_>) {
        let mut s = sample_state();
        let mut stored = state::store(c.m, &state::Stored::default(), &mut s)
            .await
            .unwrap();
        for i in 0..3 {
            s.insert_entry(sample_entry(&format!("f{i}"), i));
            s.next_osn();
            state::store_intents(c.m, stored.generation, &[sample_entry("x", 1)])
                .await
                .unwrap();
            stored = state::store(c.m, &stored, &mut s).await.unwrap();
        }
        let mut names = c.m.list_state().await.unwrap();
        names.sort();
        let mut parts: Vec<String> = stored.root.parts.iter().map(|p| p.name.clone()).collect();
        parts.sort();
        assert_eq!(names, parts, "parts only, the base and its segments");
        let l = state::load(c.m).await.unwrap().unwrap();
        assert_eq!((&l.stored, &l.state), (&stored, &s));
        let part = &stored.root.parts.last().unwrap().name;
        let mut bytes = c.m.read_state(part).await.unwrap().unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        c.m.write_state(part, &bytes).await.unwrap();
        assert!(matches!(
            state::load(c.m).await,
            Err(MirrorError::Corrupt { .. })
        ));
    }

    /// State files can be listed and removed (removing an absent one succeeds).
    pub async fn meta_list_and_remove(fx: &dyn Fixture) {
        let c = ready(fx).await;
        c.m.write_state("part.1.aa", b"a").await.unwrap();
        c.m.write_state("part.2.bb", b"b").await.unwrap();
        let mut names = c.m.list_state().await.unwrap();
        names.sort();
        assert!(
            names.contains(&"part.1.aa".to_string()) && names.contains(&"part.2.bb".to_string()),
            "{names:?}"
        );
        assert!(
            names.iter().all(|n| !n.starts_with(crate::TMP_PREFIX)),
            "{names:?}"
        );
        c.m.remove_state("part.1.aa").await.unwrap();
        c.m.remove_state("part.1.aa").await.unwrap();
        assert_eq!(c.m.read_state("part.1.aa").await.unwrap(), None);
        assert!(c.m.remove_state("../escape").await.is_err());
        assert_eq!(
            c.m.read_state("part.2.bb").await.unwrap().as_deref(),
            Some(&b"b"[..])
        );
    }

    /// `read_bytes` returns a file's content, and refuses one over the limit.
    pub async fn read_bytes_reads_and_limits(fx: &dyn Fixture) {
        let c = ready(fx).await;
        c.put("f", b"0123456789").await.unwrap();
        assert_eq!(c.m.read_bytes(&rp(b"f"), 10).await.unwrap(), b"0123456789");
        assert!(matches!(
            c.m.read_bytes(&rp(b"f"), 9).await,
            Err(MirrorError::Corrupt { .. })
        ));
        assert!(c.m.read_bytes(&rp(b"absent"), 10).await.is_err());
    }

    /// `put` creates and atomically overwrites; content, size and mtime (to the backend's
    /// granularity) are kept; no temp file is left behind.
    pub async fn put_creates_and_overwrites(fx: &dyn Fixture) {
        let c = ready(fx).await;
        let st = c.put("f.txt", b"hello").await.unwrap();
        assert_eq!(
            (st.kind, st.size, st.path.display().as_str()),
            (EntryKind::File, 5, "f.txt")
        );
        assert!(
            c.mtime_close(st.mtime_ns, MTIME),
            "mtime {} vs {MTIME}",
            st.mtime_ns
        );
        assert_eq!(c.get("f.txt").await, b"hello");
        let meta2 = FileMeta {
            mode: 0o640,
            mtime_ns: MTIME + 86_400_000_000_000,
        };
        let st2 = c.put_rel(&rp(b"f.txt"), b"bye", meta2).await.unwrap();
        assert_eq!(st2.size, 3);
        assert!(c.mtime_close(st2.mtime_ns, meta2.mtime_ns));
        assert_eq!(c.get("f.txt").await, b"bye");
        let stat = c.stat("f.txt").await.unwrap();
        assert_eq!((stat.size, stat.kind), (3, EntryKind::File));
        assert!(c.mtime_close(stat.mtime_ns, meta2.mtime_ns));
        if c.caps.modes {
            assert_eq!(stat.mode, 0o640);
        }
        if let Some(root) = fx.root() {
            assert_no_temp_files(root);
        }
        assert_eq!(c.paths().await, ["f.txt"]);
    }

    /// `put_batch` writes every item it can (new and overwritten files, in several directories),
    /// fails only the items that cannot be written, in order, and leaves no temp file.
    pub async fn put_batch_reports_each_item(fx: &dyn Fixture) {
        let c = ready(fx).await;
        c.mkdir("d").await;
        c.put("d/old", b"old").await.unwrap();
        let meta2 = FileMeta {
            mode: 0o640,
            mtime_ns: MTIME + 86_400_000_000_000,
        };
        // From memory as a new blob (written in place, no metadata promised), from a local
        // file, from memory, from a local file.
        let n = AtomicUsize::new(0);
        let item = |p: &str, bytes: &[u8], meta| crate::PutItem {
            path: rp(p.as_bytes()),
            source: match n.fetch_add(1, Ordering::Relaxed) {
                0 => crate::PutSource::Blob(bytes.to_vec()),
                2 => crate::PutSource::Bytes(bytes.to_vec()),
                _ => crate::PutSource::File(c.src(bytes)),
            },
            meta,
            expect: Some(crate::ContentHash::of(bytes)),
            chunks: None,
        };
        let items = vec![
            item("a", b"alpha", META),
            item("no/such/dir", b"x", META),
            item("d/old", b"new content", meta2),
            item("d/b", b"", META),
        ];
        let r = c.m.put_batch(items).await;
        assert_eq!(r.len(), 4);
        assert!(r[1].is_err(), "missing parent: {:?}", r[1]);
        for (i, want) in [(0, 5), (2, 11), (3, 0)] {
            let st = r[i].as_ref().unwrap_or_else(|e| panic!("item {i}: {e}"));
            assert_eq!((st.kind, st.size), (EntryKind::File, want), "item {i}");
        }
        assert!(c.mtime_close(r[2].as_ref().unwrap().mtime_ns, meta2.mtime_ns));
        assert_eq!(c.get("a").await, b"alpha");
        assert_eq!(c.get("d/old").await, b"new content");
        assert_eq!(c.get("d/b").await, b"");
        if c.caps.modes {
            assert_eq!(c.stat("d/old").await.unwrap().mode, 0o640);
        }
        assert_eq!(c.paths().await, ["a", "d", "d/b", "d/old"]);
        assert!(c.m.put_batch(Vec::new()).await.is_empty());
        if let Some(root) = fx.root() {
            assert_no_temp_files(root);
            assert_no_temp_files(&root.join("d"));
        }
    }

    /// A file source that no longer holds the content the caller expects (saved again while it
    /// was sent) is refused with `SourceChanged` and stores nothing: the old content stays, no
    /// temp file is left; the other items of the batch (one or many) are written.
    pub async fn put_batch_refuses_a_changed_source(fx: &dyn Fixture) {
        let c = ready(fx).await;
        c.put("f", b"old").await.unwrap();
        for others in [0usize, 3] {
            let mut items = vec![crate::PutItem {
                path: rp(b"f"),
                source: crate::PutSource::File(c.src(b"what the file holds now")),
                meta: META,
                expect: Some(crate::ContentHash::of(b"what the journal recorded")),
                // The journal's chunk list of what it recorded: stale as well.
                chunks: Some(crate::Chunking {
                    params: crate::ChunkParams::default(),
                    chunks: vec![crate::ChunkRef {
                        hash: crate::ContentHash::of(b"what the journal recorded"),
                        len: 25,
                    }],
                }),
            }];
            for i in 0..others {
                let name = format!("g{i}");
                items.push(crate::PutItem {
                    path: rp(name.as_bytes()),
                    source: crate::PutSource::File(c.src(name.as_bytes())),
                    meta: META,
                    expect: Some(crate::ContentHash::of(name.as_bytes())),
                    chunks: None,
                });
            }
            let r = c.m.put_batch(items).await;
            assert!(
                matches!(r[0], Err(MirrorError::SourceChanged { .. })),
                "changed source: {:?}",
                r[0]
            );
            for (i, res) in r.iter().enumerate().skip(1) {
                assert!(res.is_ok(), "item {i}: {res:?}");
            }
            assert_eq!(c.get("f").await, b"old");
        }
        if let Some(root) = fx.root() {
            assert_no_temp_files(root);
        }
    }

    /// `list_file_names_under` names the files below a directory (not directories, not
    /// siblings), and nothing for an absent directory.
    pub async fn list_file_names_under_lists_files(fx: &dyn Fixture) {
        let c = ready(fx).await;
        c.mkdir("d").await;
        c.mkdir("d/e").await;
        c.put("d/a", b"a").await.unwrap();
        c.put("d/e/b", b"b").await.unwrap();
        c.put("d0", b"sibling").await.unwrap();
        let mut got: Vec<String> =
            c.m.list_file_names_under(&rp(b"d"))
                .await
                .unwrap()
                .into_iter()
                .map(|p| p.display())
                .collect();
        got.sort();
        assert_eq!(got, ["d/a", "d/e/b"]);
        assert!(c
            .m
            .list_file_names_under(&rp(b"absent"))
            .await
            .unwrap()
            .is_empty());
    }

    /// `list_under` lists exactly what `list` shows below a directory (not the directory itself,
    /// not a sibling sharing its name as a prefix), and nothing for a file or an absent path.
    pub async fn list_under_lists_one_subtree(fx: &dyn Fixture) {
        let c = ready(fx).await;
        c.mkdir("d").await;
        c.mkdir("d/e").await;
        c.mkdir("dx").await;
        c.put("d/e/f", b"f").await.unwrap();
        c.put("d/g", b"g").await.unwrap();
        c.put("dx/h", b"h").await.unwrap();
        let under = |p: &'static str| async move {
            let mut v: Vec<String> =
                c.m.list_under(&rp(p.as_bytes()))
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|s| s.path.display())
                    .collect();
            v.sort();
            v
        };
        assert_eq!(under("d").await, ["d/e", "d/e/f", "d/g"]);
        assert_eq!(under("d/e").await, ["d/e/f"]);
        assert!(under("d/g").await.is_empty(), "a file has nothing below it");
        assert!(under("nope").await.is_empty(), "absent");
        let all = c.m.list().await.unwrap();
        let listed = c.m.list_under(&rp(b"d")).await.unwrap();
        for s in &listed {
            assert!(all.contains(s), "list_under and list disagree on {s:?}");
        }
    }

    /// `put` does not create parent directories.
    pub async fn put_without_parent_fails(fx: &dyn Fixture) {
        let c = ready(fx).await;
        assert!(c.put("no/such/dir.txt", b"x").await.is_err());
        assert!(c.m.list().await.unwrap().is_empty());
    }

    /// Permission bits round trip where `capabilities().modes`; elsewhere a mode is accepted and
    /// dropped, while content and mtime are still kept.
    pub async fn modes_round_trip_or_declared_absent(fx: &dyn Fixture) {
        let c = ready(fx).await;
        for mode in [0o600, 0o755, 0o444, 0o4755 & 0o777] {
            let st = c
                .put_rel(
                    &rp(b"m"),
                    b"mode",
                    FileMeta {
                        mode,
                        mtime_ns: MTIME,
                    },
                )
                .await
                .unwrap();
            assert!(c.mtime_close(st.mtime_ns, MTIME));
            if c.caps.modes {
                assert_eq!(st.mode, mode, "mode {mode:o} after put");
                assert_eq!(c.stat("m").await.unwrap().mode, mode);
            }
            assert_eq!(c.get("m").await, b"mode");
        }
        c.m.mkdir(
            &rp(b"d"),
            FileMeta {
                mode: 0o700,
                mtime_ns: MTIME,
            },
        )
        .await
        .unwrap();
        if c.caps.modes {
            assert_eq!(c.stat("d").await.unwrap().mode, 0o700);
        }
    }

    /// `get` copies content into a created or truncated local file and reports the stat.
    pub async fn get_copies_content(fx: &dyn Fixture) {
        let c = ready(fx).await;
        c.put("g.bin", b"\x00\x01binary\xff").await.unwrap();
        let dest = c.scratch.path().join("dest");
        std::fs::write(
            &dest,
            b"a much longer previous content that must be truncated",
        )
        .unwrap();
        let st = c.m.get(&rp(b"g.bin"), &dest).await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"\x00\x01binary\xff");
        assert_eq!((st.size, st.kind), (9, EntryKind::File));
        assert!(matches!(
            c.m.get(&rp(b"absent"), &dest).await,
            Err(MirrorError::NotFound { .. })
        ));
        c.mkdir("dir").await;
        assert!(
            c.m.get(&rp(b"dir"), &dest).await.is_err(),
            "get of a directory is an error"
        );
    }

    /// `list` returns every file, directory and symlink, parents before children, and never the
    /// state directory, temp files or special files.
    pub async fn list_parents_first_and_hides_reserved(fx: &dyn Fixture) {
        let c = ready(fx).await;
        c.mkdir("d").await;
        c.mkdir("d/e").await;
        c.put("d/e/f.txt", b"f").await.unwrap();
        c.put("d/g.txt", b"g").await.unwrap();
        c.put("top.txt", b"top").await.unwrap();
        c.put("d0", b"sorts after d/").await.unwrap();
        c.mkdir("z").await;
        c.m.write_state("state.0", b"s").await.unwrap();
        let mut want = vec!["d", "d/e", "d/e/f.txt", "d/g.txt", "d0", "top.txt", "z"];
        if c.caps.symlinks {
            c.m.symlink(&rp(b"z/ln"), b"../d/g.txt").await.unwrap();
            want.push("z/ln");
        }
        if let Some(root) = fx.root() {
            std::fs::write(root.join(".briefcase-tmp-123"), b"t").unwrap();
            std::fs::write(root.join("d/.briefcase-tmp-456"), b"t").unwrap();
            let fifo = root.join("d/fifo");
            let made = std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .is_ok_and(|s| s.success());
            if !made {
                let _ = std::fs::remove_file(&fifo); // FAT: no fifos (fusefat leaves a plain file)
            }
        }
        let list = c.m.list().await.unwrap();
        let mut got: Vec<String> = list.iter().map(|s| s.path.display()).collect();
        let order = got.clone();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        for (i, s) in list.iter().enumerate() {
            for anc in s.path.ancestors() {
                let at = list.iter().position(|x| x.path == anc);
                assert!(
                    at.is_some_and(|a| a < i),
                    "{} listed before its parent {anc}: {order:?}",
                    s.path
                );
            }
            assert!(!s.path.is_reserved());
            let kind = match s.path.display().as_str() {
                "d" | "d/e" | "z" => EntryKind::Dir,
                "z/ln" => EntryKind::Symlink,
                _ => EntryKind::File,
            };
            assert_eq!(s.kind, kind, "{}", s.path);
            if kind == EntryKind::Symlink {
                assert_eq!(s.symlink_target.as_deref(), Some(&b"../d/g.txt"[..]));
            }
        }
        let top = list.iter().find(|s| s.path.display() == "top.txt").unwrap();
        assert_eq!(top.size, 3);
        assert!(c.mtime_close(top.mtime_ns, MTIME));
    }

    /// `mkdir` creates a directory, succeeds again on it, and fails over a file.
    pub async fn mkdir_is_idempotent(fx: &dyn Fixture) {
        let c = ready(fx).await;
        let st = c.m.mkdir(&rp(b"dir"), META).await.unwrap();
        assert_eq!(st.kind, EntryKind::Dir);
        let st = c.m.mkdir(&rp(b"dir"), META).await.unwrap();
        assert_eq!(st.kind, EntryKind::Dir);
        c.mkdir("dir/sub").await;
        c.put("file", b"x").await.unwrap();
        assert!(
            c.m.mkdir(&rp(b"file"), META).await.is_err(),
            "mkdir over a file"
        );
        assert!(
            c.m.mkdir(&rp(b"no/parent"), META).await.is_err(),
            "mkdir without parent"
        );
        assert_eq!(c.paths().await, ["dir", "dir/sub", "file"]);
    }

    /// `rename` moves a file and a directory with its content (or is declared unsupported).
    pub async fn rename_file_and_dir(fx: &dyn Fixture) {
        let c = ready(fx).await;
        c.put("a", b"A").await.unwrap();
        let r = c.m.rename(&rp(b"a"), &rp(b"b")).await;
        if !c.caps.rename {
            assert!(is_unsupported(&r), "rename without the capability: {r:?}");
            return;
        }
        assert_eq!(r.unwrap().path.display(), "b");
        assert_eq!(c.get("b").await, b"A");
        assert!(c.stat("a").await.is_none());
        c.mkdir("d").await;
        c.put("d/x", b"X").await.unwrap();
        let st = c.m.rename(&rp(b"d"), &rp(b"e")).await.unwrap();
        assert_eq!(st.kind, EntryKind::Dir);
        assert_eq!(c.get("e/x").await, b"X");
        assert_eq!(c.paths().await, ["b", "e", "e/x"]);
        assert!(c.m.rename(&rp(b"missing"), &rp(b"m2")).await.is_err());
    }

    /// `rename` replaces an existing file at the destination.
    pub async fn rename_over_existing_file(fx: &dyn Fixture) {
        let c = ready(fx).await;
        c.put("new", b"new content").await.unwrap();
        c.put("old", b"old").await.unwrap();
        let r = c.m.rename(&rp(b"new"), &rp(b"old")).await;
        if !c.caps.rename {
            assert!(is_unsupported(&r), "rename without the capability: {r:?}");
            return;
        }
        r.unwrap();
        assert_eq!(c.get("old").await, b"new content");
        assert_eq!(c.paths().await, ["old"]);
    }

    /// `remove` deletes files, symlinks and empty directories, and is Ok when already absent.
    pub async fn remove_file_symlink_and_empty_dir(fx: &dyn Fixture) {
        let c = ready(fx).await;
        c.put("f", b"f").await.unwrap();
        c.mkdir("d").await;
        if c.caps.symlinks {
            c.m.symlink(&rp(b"l"), b"f").await.unwrap();
            c.m.remove(&rp(b"l")).await.unwrap();
            assert_eq!(c.get("f").await, b"f", "removing a link leaves its target");
        }
        c.m.remove(&rp(b"f")).await.unwrap();
        c.m.remove(&rp(b"d")).await.unwrap();
        assert!(c.m.list().await.unwrap().is_empty());
        c.m.remove(&rp(b"f")).await.unwrap();
        c.m.remove(&rp(b"never/was")).await.unwrap();
    }

    /// `remove` of a non-empty directory fails with an error that says so
    /// ([`MirrorError::is_dir_not_empty`]) and keeps it.
    pub async fn remove_non_empty_dir_fails(fx: &dyn Fixture) {
        let c = ready(fx).await;
        c.mkdir("d").await;
        c.put("d/x", b"x").await.unwrap();
        let r = c.m.remove(&rp(b"d")).await;
        assert!(
            r.as_ref().is_err_and(MirrorError::is_dir_not_empty),
            "remove of a non-empty dir: {r:?}"
        );
        assert_eq!(c.paths().await, ["d", "d/x"]);
    }

    /// `remove_batch` removes children then their directory in one call, reports a non-empty
    /// directory as such (and keeps it), and takes an absent path as removed.
    pub async fn remove_batch_reports_each_path(fx: &dyn Fixture) {
        let c = ready(fx).await;
        c.mkdir("d").await;
        c.mkdir("keep").await;
        for p in ["d/a", "d/b", "keep/x", "top"] {
            c.put(p, p.as_bytes()).await.unwrap();
        }
        let paths = ["d/a", "d/b", "d", "keep", "top", "never/was"].map(|p| rp(p.as_bytes()));
        let r = c.m.remove_batch(paths.to_vec()).await;
        assert_eq!(r.len(), 6);
        for i in [0, 1, 2, 4, 5] {
            assert!(r[i].is_ok(), "{}: {:?}", paths[i], r[i]);
        }
        assert!(
            r[3].as_ref().is_err_and(MirrorError::is_dir_not_empty),
            "non-empty dir: {:?}",
            r[3]
        );
        assert_eq!(c.paths().await, ["keep", "keep/x"]);
        assert!(c.m.remove_batch(Vec::new()).await.is_empty());
    }

    /// A symlink is stored as a link with its target bytes, replaced atomically, and never
    /// followed (or `symlink` is declared unsupported).
    pub async fn symlink_stored_as_link_never_followed(fx: &dyn Fixture) {
        let c = ready(fx).await;
        let r = c.m.symlink(&rp(b"ln"), b"target/does/not/exist").await;
        if !c.caps.symlinks {
            assert!(is_unsupported(&r), "symlink without the capability: {r:?}");
            assert!(c.m.list().await.unwrap().is_empty());
            return;
        }
        let st = r.unwrap();
        assert_eq!(st.kind, EntryKind::Symlink);
        assert_eq!(
            st.symlink_target.as_deref(),
            Some(&b"target/does/not/exist"[..])
        );
        c.put("real", b"real").await.unwrap();
        let st = c.m.symlink(&rp(b"ln"), b"real").await.unwrap();
        assert_eq!(st.symlink_target.as_deref(), Some(&b"real"[..]), "replaced");
        let st = c.stat("ln").await.unwrap();
        assert_eq!(
            (st.kind, st.symlink_target.as_deref()),
            (EntryKind::Symlink, Some(&b"real"[..]))
        );
        let dest = c.scratch.path().join("via-link");
        assert!(
            c.m.get(&rp(b"ln"), &dest).await.is_err(),
            "get must not follow a symlink"
        );
        let non_utf8 = [b'x', 0xff, b'y'];
        assert_eq!(
            c.m.symlink(&rp(b"ln2"), &non_utf8)
                .await
                .unwrap()
                .symlink_target
                .as_deref(),
            Some(&non_utf8[..])
        );
    }

    /// Nothing is written through a symlink to a directory outside the root.
    pub async fn symlink_parent_outside_root_is_unsafe(fx: &dyn Fixture) {
        let c = ready(fx).await;
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().as_os_str().as_encoded_bytes().to_vec();
        let r = c.m.symlink(&rp(b"link"), &target).await;
        if !c.caps.symlinks {
            assert!(is_unsupported(&r), "symlink without the capability: {r:?}");
            // The medium may still hold a link made behind our back.
            let Some(root) = fx.root() else { return };
            if std::os::unix::fs::symlink(outside.path(), root.join("link")).is_err() {
                eprintln!("note: the medium cannot hold symlinks at all; escape check done via Unsupported");
                return;
            }
        } else {
            r.unwrap();
        }
        let unsafe_ = |r: &Result<_, MirrorError>, what: &str| {
            assert!(
                matches!(r, Err(MirrorError::Unsafe { .. })),
                "{what} through link/: {:?}",
                r.as_ref().err()
            );
        };
        unsafe_(&c.put("link/x", b"escaped").await.map(|_| ()), "put");
        unsafe_(
            &c.m.mkdir(&rp(b"link/sub"), META).await.map(|_| ()),
            "mkdir",
        );
        unsafe_(&c.m.stat(&rp(b"link/x")).await.map(|_| ()), "stat");
        if c.caps.rename {
            c.put("inside", b"i").await.unwrap();
            unsafe_(
                &c.m.rename(&rp(b"inside"), &rp(b"link/moved"))
                    .await
                    .map(|_| ()),
                "rename",
            );
        }
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "something was created outside the root"
        );
    }

    /// `set_meta` changes mtime (and mode where supported) of files and directories; absent is
    /// NotFound.
    pub async fn set_meta_changes_mode_and_mtime(fx: &dyn Fixture) {
        let c = ready(fx).await;
        c.put("f", b"content").await.unwrap();
        c.mkdir("d").await;
        let meta = FileMeta {
            mode: 0o600,
            mtime_ns: 1_500_000_000_987_654_321,
        };
        for p in ["f", "d"] {
            let st = c.m.set_meta(&rp(p.as_bytes()), meta).await.unwrap();
            assert!(
                c.mtime_close(st.mtime_ns, meta.mtime_ns),
                "{p}: {} vs {}",
                st.mtime_ns,
                meta.mtime_ns
            );
            let st = c.stat(p).await.unwrap();
            assert!(c.mtime_close(st.mtime_ns, meta.mtime_ns));
            if c.caps.modes {
                assert_eq!(st.mode, 0o600, "{p}");
            }
        }
        assert_eq!(c.get("f").await, b"content");
        assert!(matches!(
            c.m.set_meta(&rp(b"absent"), meta).await,
            Err(MirrorError::NotFound { .. })
        ));
    }

    async fn names_round_trip(c: &Ctx<'_>, ascii_only: bool, dir: &[u8], file: &[u8]) {
        let d = rp(dir);
        let f = d.join(file).unwrap();
        let r = c.m.mkdir(&d, META).await;
        if ascii_only {
            assert!(
                matches!(r, Err(MirrorError::Refused { .. })),
                "medium stores ASCII only: {r:?}"
            );
            assert!(c.m.list().await.unwrap().is_empty());
            return;
        }
        r.unwrap();
        c.put_rel(&f, b"named", META).await.unwrap();
        let list = c.m.list().await.unwrap();
        let got: Vec<&RelPath> = list.iter().map(|s| &s.path).collect();
        assert_eq!(got, [&d, &f]);
        assert_eq!(c.get_rel(&f).await, b"named");
        assert_eq!(c.m.stat(&f).await.unwrap().unwrap().path, f);
        if c.caps.rename {
            let g = d.join(&[file, b"2"].concat()).unwrap();
            c.m.rename(&f, &g).await.unwrap();
            assert_eq!(c.get_rel(&g).await, b"named");
            c.m.remove(&g).await.unwrap();
        } else {
            c.m.remove(&f).await.unwrap();
        }
        c.m.remove(&d).await.unwrap();
        assert!(c.m.list().await.unwrap().is_empty());
    }

    /// Non-ASCII UTF-8 names (accents, CJK, emoji, combining marks) round trip byte for byte.
    pub async fn unicode_names_round_trip(fx: &dyn Fixture) {
        let c = ready(fx).await;
        names_round_trip(
            &c,
            fx.ascii_only_names(),
            "ünïcödé 日本語".as_bytes(),
            "😀 e\u{301} Ελληνικά.txt".as_bytes(),
        )
        .await;
    }

    /// Names that are not UTF-8 (byte 0xff) round trip byte for byte.
    pub async fn non_utf8_names_round_trip(fx: &dyn Fixture) {
        let c = ready(fx).await;
        names_round_trip(&c, fx.ascii_only_names(), b"dir\xfe", b"bad\xffname").await;
    }

    /// An empty file is stored and read back as empty.
    pub async fn empty_file(fx: &dyn Fixture) {
        let c = ready(fx).await;
        let st = c.put("empty", b"").await.unwrap();
        assert_eq!(st.size, 0);
        assert_eq!(c.get("empty").await, b"");
        c.put("empty", b"not yet").await.unwrap();
        c.put("empty", b"").await.unwrap();
        assert_eq!(c.stat("empty").await.unwrap().size, 0);
    }

    /// A 20 MiB file arrives intact (blake3 of what comes back).
    pub async fn large_file_verified_by_blake3(fx: &dyn Fixture) {
        let c = ready(fx).await;
        let data = pseudo_random(b"large", 20 << 20);
        let st = c.put("large.bin", &data).await.unwrap();
        assert_eq!(st.size, data.len() as u64);
        let back = c.get("large.bin").await;
        assert_eq!(back.len(), data.len());
        assert_eq!(blake3::hash(&back), blake3::hash(&data));
    }

    /// A reader polling a file while `put` replaces it (8 MiB, several times) only ever sees the
    /// complete old or the complete new content, and never a missing file.
    pub async fn put_is_atomic_for_readers(fx: &dyn Fixture) {
        let c = ready(fx).await;
        const LEN: usize = 8 << 20;
        let old = pseudo_random(b"old", LEN);
        let new = pseudo_random(b"new", LEN);
        let good = [blake3::hash(&old), blake3::hash(&new)];
        c.put("atomic.bin", &old).await.unwrap();
        let (src_old, src_new) = (c.src(&old), c.src(&new));
        let stop = AtomicBool::new(false);
        let reads = AtomicUsize::new(0);
        let missing = AtomicUsize::new(0);
        let target = rp(b"atomic.bin");
        let writer = async {
            for i in 0..6 {
                let src = if i % 2 == 0 { &src_new } else { &src_old };
                c.m.put(&target, src, META).await.unwrap();
            }
            stop.store(true, Ordering::SeqCst);
        };
        if let Some(root) = fx.root() {
            let path = root.join("atomic.bin");
            let may_hide = fx.rename_may_hide_target();
            std::thread::scope(|s| {
                s.spawn(|| {
                    while !stop.load(Ordering::SeqCst) || reads.load(Ordering::SeqCst) == 0 {
                        let bytes = match std::fs::read(&path) {
                            Ok(b) => b,
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound && may_hide => {
                                missing.fetch_add(1, Ordering::SeqCst);
                                continue;
                            }
                            Err(e) => panic!("target missing during put: {e}"),
                        };
                        assert!(
                            good.contains(&blake3::hash(&bytes)),
                            "reader saw a partial file ({} bytes)",
                            bytes.len()
                        );
                        reads.fetch_add(1, Ordering::SeqCst);
                    }
                });
                tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(writer));
            });
        } else {
            let reader = async {
                while !stop.load(Ordering::SeqCst) || reads.load(Ordering::SeqCst) == 0 {
                    let bytes = c.get_rel(&target).await;
                    assert!(
                        good.contains(&blake3::hash(&bytes)),
                        "reader saw a partial file"
                    );
                    reads.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                }
            };
            tokio::join!(writer, reader);
        }
        if missing.load(Ordering::SeqCst) > 0 {
            eprintln!(
                "note: the medium's rename hid the target from {} reads besides {} complete ones \
                 (declared by the fixture); no read was partial",
                missing.load(Ordering::SeqCst),
                reads.load(Ordering::SeqCst)
            );
        }
        assert!(reads.load(Ordering::SeqCst) > 0);
        assert_eq!(
            c.get("atomic.bin").await,
            old,
            "six puts end on the old content"
        );
    }

    /// `stat` of an absent path (or under an absent directory) is `None`.
    pub async fn stat_of_absent_is_none(fx: &dyn Fixture) {
        let c = ready(fx).await;
        assert!(c.stat("absent").await.is_none());
        assert!(c.stat("absent/child").await.is_none());
        c.put("file", b"x").await.unwrap();
        assert_eq!(c.stat("file").await.unwrap().kind, EntryKind::File);
        c.mkdir("dir").await;
        assert_eq!(c.stat("dir").await.unwrap().kind, EntryKind::Dir);
    }

    /// On a case-insensitive medium, names differing only in case are refused before writing
    /// (naming both); on a case-sensitive one they coexist.
    pub async fn case_only_collisions(fx: &dyn Fixture) {
        let c = ready(fx).await;
        c.put("Readme.TXT", b"first").await.unwrap();
        if !c.caps.case_insensitive {
            c.put("README.txt", b"second").await.unwrap();
            assert_eq!(c.get("Readme.TXT").await, b"first");
            assert_eq!(c.get("README.txt").await, b"second");
            return;
        }
        let refused = |r: &Result<_, MirrorError>, what: &str| match r {
            Err(e @ MirrorError::Refused { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("Readme.TXT") && msg.to_lowercase().contains("readme.txt"),
                    "{what}: {msg}"
                );
            }
            other => panic!("{what}: expected Refused, got {:?}", other.as_ref().err()),
        };
        refused(&c.put("README.txt", b"second").await.map(|_| ()), "put");
        refused(
            &c.m.mkdir(&rp(b"readme.txt"), META).await.map(|_| ()),
            "mkdir",
        );
        if c.caps.rename {
            c.put("other", b"o").await.unwrap();
            refused(
                &c.m.rename(&rp(b"other"), &rp(b"README.TXT"))
                    .await
                    .map(|_| ()),
                "rename",
            );
            c.m.rename(&rp(b"Readme.TXT"), &rp(b"readme.txt"))
                .await
                .unwrap();
            assert_eq!(
                c.paths().await,
                ["other", "readme.txt"],
                "a case-only rename of the file itself works"
            );
            assert_eq!(c.get("readme.txt").await, b"first");
        } else {
            assert_eq!(c.paths().await, ["Readme.TXT"]);
            assert_eq!(c.get("Readme.TXT").await, b"first");
        }
    }

    /// A file larger than `capabilities().max_file_size` is refused before anything is written.
    pub async fn oversize_file_refused(fx: &dyn Fixture) {
        let c = ready(fx).await;
        let Some(max) = c.caps.max_file_size else {
            eprintln!("note: backend declares no file size limit");
            return;
        };
        let src = c.scratch.path().join("sparse");
        std::fs::File::create(&src)
            .unwrap()
            .set_len(max + 1)
            .unwrap();
        let r = c.m.put(&rp(b"huge.bin"), &src, META).await;
        assert!(
            matches!(r, Err(MirrorError::Refused { .. })),
            "{:?}",
            r.err()
        );
        assert!(c.stat("huge.bin").await.is_none());
        assert!(c.m.list().await.unwrap().is_empty());
    }
}

/// The committed corpus directory of fuzz target `target` of the crate at `manifest_dir`
/// (`env!("CARGO_MANIFEST_DIR")`): `tests/__fuzz__/TARGET/corpus`, where
/// `bolero::check!(name = target)` finds it.
pub fn fuzz_corpus_dir(manifest_dir: &str, target: &str) -> std::path::PathBuf {
    std::path::Path::new(manifest_dir)
        .join("tests/__fuzz__")
        .join(target)
        .join("corpus")
}

/// The files of [`fuzz_corpus_dir`], by name.
///
/// # Panics
/// When the directory or a file cannot be read (a test fixture is missing).
pub fn fuzz_corpus(
    manifest_dir: &str,
    target: &str,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let dir = fuzz_corpus_dir(manifest_dir, target);
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("fuzz corpus {}: {e}", dir.display()));
    for e in entries {
        let e = e.unwrap_or_else(|e| panic!("fuzz corpus {}: {e}", dir.display()));
        let name = e.file_name().to_string_lossy().into_owned();
        let bytes = std::fs::read(e.path())
            .unwrap_or_else(|err| panic!("fuzz corpus {}: {err}", e.path().display()));
        out.insert(name, bytes);
    }
    out
}
