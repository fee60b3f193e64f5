//! Fuzz targets for every decoder of untrusted bytes in `briefcase-mirror` (issue 9, DESIGN.md
//! invariants 6 and 8): a dir mirror's state (roots `state.0`/`state.1`, base and segment parts,
//! the intents record), `RelPath` from bytes, strings, postcard and JSON, and the postcard values
//! the journal stores (version vectors, chunk lists). Each target must not panic, hang or
//! allocate far beyond its input, whatever the bytes.
//!
//! Each target is a `#[test]` around `bolero::check!()`: under `cargo test` it replays its
//! committed corpus (`tests/__fuzz__/<target>/corpus/`, real files written by the engine) and then
//! random inputs for one second (`BOLERO_RANDOM_TEST_TIME_MS` / `BOLERO_RANDOM_ITERATIONS`
//! change that); `cargo bolero test` (nightly) runs the same targets under libFuzzer,
//! coverage-guided, seeded from the same corpus. docs/fuzzing.md says how to run them long.
//!
//! The byte-level targets cannot get past the blake3 checksums by chance, so two targets are
//! structure-aware: `state_edits` edits the bytes of a real state and seals them again, and
//! `state_roundtrip` builds states from generated operations, stores them, and expects to read
//! back exactly what it stored.
//!
//! Needs the `testkit` feature (corpora, allocation watch), which `cargo test --workspace` enables.
#![allow(clippy::unwrap_used)]

use briefcase_mirror::MirrorExt;
use briefcase_mirror::StateStore;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use bolero::{check, TypeGenerator};
use briefcase_memory::MemoryMirror;
use briefcase_mirror::state::{self, Reload, Root, Stored};
use briefcase_mirror::{
    ChunkRef, ContentHash, Entry, EntryKind, FolderId, Mirror, MirrorError, MirrorState, Osn,
    RelPath, ReplicaId, Stamp, VersionVector,
};

// ---------------------------------------------------------------------------------------------
// Harness

#[global_allocator]
static WATCH: briefcase_mirror::alloc_watch::Watch = briefcase_mirror::alloc_watch::Watch;

use briefcase_mirror::alloc_watch::bounded;

/// Polls `f` once: `MemoryMirror`'s state-file calls never wait.
fn now<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a MemoryMirror state-file call waited"),
    }
}

/// The committed corpus of `target`, where `bolero::check!(name = target)` finds it.
fn corpus_dir(target: &str) -> PathBuf {
    briefcase_mirror::testkit::fuzz_corpus_dir(env!("CARGO_MANIFEST_DIR"), target)
}

/// The files of a corpus directory, by name.
fn corpus_files(target: &str) -> BTreeMap<String, Vec<u8>> {
    briefcase_mirror::testkit::fuzz_corpus(env!("CARGO_MANIFEST_DIR"), target)
}

/// A mirror holding the real state the corpora were taken from: both roots, every part, the
/// intents record.
fn real_mirror() -> MemoryMirror {
    let m = MemoryMirror::new("fuzz");
    now(m.init(FolderId(1))).unwrap();
    for (dir, files) in [
        ("state_part", corpus_files("state_part")),
        ("state_root", corpus_files("state_root")),
        ("intents", corpus_files("intents")),
    ] {
        for (name, bytes) in files {
            if name.starts_with("regression-") {
                continue;
            }
            assert!(
                name.starts_with(state::PART_PREFIX) || dir != "state_part",
                "{name}"
            );
            now(m.write_state(&name, &bytes)).unwrap();
        }
    }
    m
}

/// What a decoder may answer to hostile bytes: a value, or one of the errors that name the
/// problem. Anything else (an I/O error from a memory mirror) is a bug.
fn acceptable<T>(r: &Result<T, MirrorError>) -> bool {
    matches!(
        r,
        Ok(_) | Err(MirrorError::Corrupt { .. } | MirrorError::InvalidPath { .. })
    )
}

/// Loads the state from `m` both ways a caller does ([`state::load`] and, as `watch` does,
/// [`state::load_unless`] with the generation just read); returns whether a state was loaded.
fn load_both(m: &MemoryMirror) -> bool {
    let r = now(state::load(m));
    assert!(acceptable(&r), "{r:?}");
    let Ok(Some(loaded)) = r else {
        return false;
    };
    // No root lists more parts than a store writes (regression-34-parts).
    assert!(loaded.stored.root.parts.len() <= state::MAX_SEGMENTS + 1);
    let known = Some((loaded.stored.generation, loaded.stored.checksum));
    let again = now(state::load_unless(m, known));
    assert!(
        matches!(again, Ok(Reload::Unchanged)),
        "same generation reread: {again:?}"
    );
    // A loaded state is used: entries are compared and OSNs issued.
    let st = loaded.state;
    for e in st.entries().values() {
        let _ = e.same_content_and_meta(e);
        let _ = e.version.compare(&st.knowledge);
        let _ = (e.path.parent(), e.path.ancestors(), e.path.is_reserved());
    }
    true
}

/// Seals a root listing `parts` as generation `generation` of the real state (a copy of a real
/// root envelope with the payload replaced).
fn root_listing(template: &[u8], parts: &[(&str, &[u8])]) -> Vec<u8> {
    let root = Root {
        parts: parts
            .iter()
            .map(|(name, bytes)| state::PartRef {
                name: (*name).to_string(),
                len: bytes.len() as u64,
                hash: *blake3::hash(bytes).as_bytes(),
            })
            .collect(),
    };
    state::reseal(template, &postcard::to_stdvec(&root).unwrap()).unwrap()
}

const HEADER: usize = 56;

// ---------------------------------------------------------------------------------------------
// 1. The dir mirror's state

static ROOTS_LOADED: AtomicUsize = AtomicUsize::new(0);

/// The bytes are a root slot (`state.0`); the mirror holds the real parts, so a real root (the
/// corpus) loads a whole state, and a damaged one must be refused with `Corrupt`.
#[test]
fn state_root() {
    let parts = corpus_files("state_part");
    check!(name = "state_root").for_each(|bytes: &[u8]| {
        let m = MemoryMirror::new("fuzz");
        now(m.init(FolderId(1))).unwrap();
        for (name, p) in &parts {
            if name.starts_with(state::PART_PREFIX) {
                now(m.write_state(name, p)).unwrap();
            }
        }
        now(m.write_state(state::SLOTS[0], bytes)).unwrap();
        if bounded(bytes.len(), || load_both(&m)) {
            ROOTS_LOADED.fetch_add(1, Ordering::Relaxed);
        }
    });
    // Random bytes never carry a valid checksum: a loaded state proves the corpus was read.
    #[cfg(not(fuzzing))]
    assert!(
        ROOTS_LOADED.load(Ordering::Relaxed) >= 2,
        "the committed roots in {} were not run",
        corpus_dir("state_root").display()
    );
}

static PARTS_LOADED: AtomicUsize = AtomicUsize::new(0);

/// The bytes are a part (base or segment) that a valid root lists with their true length and
/// hash; then the same payload sealed again in a valid part envelope, so that damaged payloads
/// reach the decoder past the envelope's checksum.
#[test]
fn state_part() {
    let roots = corpus_files("state_root");
    let root_template = roots["state.0"].clone();
    let parts = corpus_files("state_part");
    let part_template = parts
        .iter()
        .find(|(n, _)| n.starts_with(state::PART_PREFIX))
        .map(|(_, b)| b.clone())
        .unwrap();
    check!(name = "state_part").for_each(|bytes: &[u8]| {
        let m = MemoryMirror::new("fuzz");
        now(m.init(FolderId(1))).unwrap();
        let name = "part.9.00000000";
        let mut files = vec![bytes.to_vec()];
        if let Some(payload) = bytes.get(HEADER..) {
            files.push(state::reseal(&part_template, payload).unwrap());
        }
        for file in files {
            now(m.write_state(name, &file)).unwrap();
            let root = root_listing(&root_template, &[(name, &file)]);
            now(m.write_state(state::SLOTS[0], &root)).unwrap();
            if bounded(bytes.len(), || load_both(&m)) {
                PARTS_LOADED.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    #[cfg(not(fuzzing))]
    assert!(
        PARTS_LOADED.load(Ordering::Relaxed) >= 2,
        "the committed parts in {} were not run",
        corpus_dir("state_part").display()
    );
}

static INTENTS_LOADED: AtomicUsize = AtomicUsize::new(0);

/// The bytes are the intents record, read against the generation its header names; then its
/// payload sealed again.
#[test]
fn intents() {
    check!(name = "intents").for_each(|bytes: &[u8]| {
        let m = MemoryMirror::new("fuzz");
        now(m.init(FolderId(1))).unwrap();
        let generation = state::open(bytes).map_or(0, |(g, _)| g);
        let mut files = vec![bytes.to_vec()];
        if let Some(payload) = bytes.get(HEADER..) {
            files.push(state::seal(generation, payload));
        }
        for file in files {
            now(m.write_state(state::INTENTS, &file)).unwrap();
            let got = bounded(bytes.len(), || now(state::load_intents(&m, generation)));
            if !got.unwrap().is_empty() {
                INTENTS_LOADED.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    #[cfg(not(fuzzing))]
    assert!(
        INTENTS_LOADED.load(Ordering::Relaxed) >= 1,
        "the committed intents in {} were not run",
        corpus_dir("intents").display()
    );
}

/// One change to the bytes of a state file.
#[derive(Debug, Clone, TypeGenerator)]
enum Edit {
    /// Overwrite the byte at (offset modulo the length).
    Set(u16, u8),
    /// Insert a byte.
    Insert(u16, u8),
    /// Remove a byte.
    Remove(u16),
    /// Cut the file at (offset modulo the length).
    Truncate(u16),
}

/// Edits to one file of the real state, and whether to seal it again afterwards (and fix the
/// length and hash the roots record for a part), which takes the edits past every checksum.
#[derive(Debug, Clone, TypeGenerator)]
struct Edits {
    file: u8,
    reseal: bool,
    edits: Vec<Edit>,
}

fn apply(bytes: &mut Vec<u8>, edits: &[Edit]) {
    for e in edits {
        let at = |o: u16, len: usize| if len == 0 { 0 } else { o as usize % len };
        match *e {
            Edit::Set(o, b) if !bytes.is_empty() => {
                let i = at(o, bytes.len());
                bytes[i] = b;
            }
            Edit::Set(..) => {}
            Edit::Insert(o, b) => {
                let i = at(o, bytes.len() + 1);
                bytes.insert(i, b);
            }
            Edit::Remove(o) if !bytes.is_empty() => {
                let i = at(o, bytes.len());
                bytes.remove(i);
            }
            Edit::Remove(_) => {}
            Edit::Truncate(o) => {
                let i = at(o, bytes.len() + 1);
                bytes.truncate(i);
            }
        }
    }
}

/// Structure-aware: byte edits of one file of a real state (a root, a base, a segment, the
/// intents), sealed again on request so that the edited payload reaches the postcard decoder.
#[test]
fn state_edits() {
    let base = real_mirror();
    let names: Vec<String> = now(base.list_state())
        .unwrap()
        .into_iter()
        .filter(|n| n != "folder-id")
        .collect();
    let originals: BTreeMap<String, Vec<u8>> = names
        .iter()
        .map(|n| (n.clone(), now(base.read_state(n)).unwrap().unwrap()))
        .collect();
    check!().with_type::<Edits>().for_each(|e: &Edits| {
        let m = real_mirror();
        let name = &names[e.file as usize % names.len()];
        let original = &originals[name];
        let mut bytes = original.clone();
        apply(&mut bytes, &e.edits);
        if e.reseal {
            if let Some(payload) = bytes.get(HEADER..) {
                bytes = state::reseal(original, payload).unwrap();
            }
            if name.starts_with(state::PART_PREFIX) {
                // Both roots record the part's new length and hash.
                for slot in state::SLOTS {
                    let sealed = &originals[slot];
                    let (_, payload) = state::open(sealed).unwrap();
                    let mut root: Root = postcard::from_bytes(payload).unwrap();
                    for p in &mut root.parts {
                        if &p.name == name {
                            p.len = bytes.len() as u64;
                            p.hash = *blake3::hash(&bytes).as_bytes();
                        }
                    }
                    let fixed =
                        state::reseal(sealed, &postcard::to_stdvec(&root).unwrap()).unwrap();
                    now(m.write_state(slot, &fixed)).unwrap();
                }
            }
        }
        now(m.write_state(name, &bytes)).unwrap();
        let len = originals.values().map(Vec::len).sum::<usize>() + e.edits.len();
        bounded(len, || {
            load_both(&m);
            for g in 0..10 {
                let _ = now(state::load_intents(&m, g)).unwrap();
            }
        });
    });
}

/// A generated manifest entry; its path is built from a few names so that paths repeat.
#[derive(Debug, Clone, TypeGenerator)]
struct GenEntry {
    path: Vec<u8>,
    kind: u8,
    deleted: bool,
    size: u64,
    mode: u32,
    mtime_ns: i64,
    hash: Option<[u8; 32]>,
    symlink_target: Option<Vec<u8>>,
    chunks: Vec<(u8, u32)>,
    version: Vec<(u8, u64)>,
    stamp: (u8, u64),
    inode: u64,
    observed_mtime_ns: i64,
}

const NAMES: [&str; 8] = ["a", "b", ".git", "é", "x y", "..a", "HEAD", "conflict-1"];

impl GenEntry {
    fn entry(&self) -> Entry {
        let path: Vec<&str> = self
            .path
            .iter()
            .take(4)
            .map(|i| NAMES[*i as usize % NAMES.len()])
            .collect();
        let path = if path.is_empty() {
            "root".to_string()
        } else {
            path.join("/")
        };
        let mut version = VersionVector::new();
        for (r, o) in &self.version {
            version.set(ReplicaId(u64::from(*r % 4)), Osn(*o));
        }
        Entry {
            path: RelPath::try_from(path.as_str()).unwrap(),
            kind: [EntryKind::File, EntryKind::Dir, EntryKind::Symlink][self.kind as usize % 3],
            deleted: self.deleted,
            size: self.size,
            mode: self.mode,
            mtime_ns: self.mtime_ns,
            hash: self.hash.map(ContentHash),
            symlink_target: self.symlink_target.clone(),
            chunks: self
                .chunks
                .iter()
                .map(|(h, len)| ChunkRef {
                    hash: ContentHash([*h; 32]),
                    len: *len,
                })
                .collect(),
            version,
            stamp: Stamp {
                replica: ReplicaId(u64::from(self.stamp.0 % 4)),
                osn: Osn(self.stamp.1),
            },
            inode: self.inode,
            observed_mtime_ns: self.observed_mtime_ns,
        }
    }
}

/// What happens to a state between loads and stores.
#[derive(Debug, Clone, TypeGenerator)]
enum Op {
    Upsert(GenEntry),
    /// Remove the entry at (index modulo the number of entries).
    Remove(u16),
    /// Change an entry in place.
    Touch(u16, u64),
    Knowledge(u8, u64),
    Name(u8, String),
    NextOsn,
    /// Store: a segment, or a new base when the segments have grown.
    Store,
    /// Load again from the mirror (the state must be what was last stored).
    Reload,
}

/// Structure-aware round trip: a state built from generated operations, stored incrementally
/// (bases and segments) and loaded again, is exactly the state that was stored.
#[test]
fn state_roundtrip() {
    check!().with_type::<Vec<Op>>().for_each(|ops: &Vec<Op>| {
        let m = MemoryMirror::new("fuzz");
        now(m.init(FolderId(7))).unwrap();
        let mut st = MirrorState::new(FolderId(7), ReplicaId(3), "nas");
        let mut stored = Stored::default();
        let mut last: Option<MirrorState> = None;
        for op in ops {
            match op {
                Op::Upsert(g) => {
                    st.insert_entry(g.entry());
                }
                Op::Remove(i) => {
                    let key = st
                        .entries()
                        .keys()
                        .nth(*i as usize % st.entries().len().max(1));
                    if let Some(p) = key.cloned() {
                        st.remove_entry(&p);
                    }
                }
                Op::Touch(i, v) => {
                    let key = st
                        .entries()
                        .keys()
                        .nth(*i as usize % st.entries().len().max(1));
                    if let Some(p) = key.cloned() {
                        let e = st.entry_mut(&p).unwrap();
                        e.size = *v;
                        e.deleted = !e.deleted;
                    }
                }
                Op::Knowledge(r, o) => st.knowledge.raise(ReplicaId(u64::from(*r % 4)), Osn(*o)),
                Op::Name(r, n) => {
                    st.replica_names
                        .insert(ReplicaId(u64::from(*r % 4)), n.clone());
                }
                Op::NextOsn => {
                    if st.osn.0 < u64::MAX {
                        st.next_osn();
                    }
                }
                Op::Store => {
                    stored = now(state::store(&m, &stored, &mut st)).unwrap();
                    last = Some(st.clone());
                    assert!(stored.root.parts.len() <= state::MAX_SEGMENTS + 1);
                }
                Op::Reload => {
                    let loaded = now(state::load(&m)).unwrap();
                    match (&last, loaded) {
                        (None, None) => {}
                        (Some(want), Some(l)) => {
                            assert_eq!(&l.state, want, "loaded state differs from stored");
                            assert_eq!(l.stored, stored);
                            st = l.state;
                        }
                        (want, got) => panic!("stored {want:?}, loaded {got:?}"),
                    }
                }
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// 2. RelPath

/// The rules of invariant 6, written out again independently of `RelPath`.
fn valid_path(b: &[u8]) -> bool {
    !b.is_empty()
        && b.len() <= briefcase_mirror::path::MAX_PATH_BYTES
        && !b.contains(&0)
        && b.split(|c| *c == b'/').all(|c| {
            !c.is_empty()
                && c != b"."
                && c != b".."
                && c.len() <= briefcase_mirror::path::MAX_NAME_BYTES
        })
}

/// Checks what a valid path promises: joined to a root it stays under it, and every path
/// derived from it is valid too.
fn check_path(p: &RelPath) {
    assert!(valid_path(p.as_bytes()), "{p:?}");
    let root = Path::new("/root");
    let under = p.under(root);
    assert!(under.starts_with(root));
    assert!(under.components().all(|c| matches!(
        c,
        std::path::Component::RootDir | std::path::Component::Normal(_)
    )));
    assert_eq!(p.components().count(), p.ancestors().len() + 1);
    for a in p.ancestors() {
        assert!(
            valid_path(a.as_bytes()) && p.starts_with(&a),
            "{a:?} of {p:?}"
        );
    }
    if let Some(parent) = p.parent() {
        assert!(p.starts_with(&parent));
        let rebased = p.rebase(&parent, &RelPath::try_from("z").unwrap());
        if let Some(r) = rebased {
            assert!(valid_path(r.as_bytes()));
        }
    }
    assert!(!p.file_name().is_empty() && !p.file_name().contains(&b'/'));
    if let Ok(j) = p.join(b"x") {
        assert_eq!(j.parent().as_ref(), Some(p));
    }
    let _ = (p.is_reserved(), p.display(), format!("{p:?}"));
}

static PATHS_VALID: AtomicUsize = AtomicUsize::new(0);

/// `RelPath` from raw bytes, from a string, from postcard (as a state or a stick's catalog
/// carries it) and from JSON (a byte array, serde's sequence path).
#[test]
fn relpath() {
    check!(name = "relpath").for_each(|bytes: &[u8]| {
        bounded(bytes.len(), || {
            let direct = RelPath::new(bytes.to_vec());
            assert_eq!(direct.is_ok(), valid_path(bytes), "{bytes:?}: {direct:?}");
            if let Ok(p) = &direct {
                check_path(p);
                PATHS_VALID.fetch_add(1, Ordering::Relaxed);
            }
            if let Ok(s) = std::str::from_utf8(bytes) {
                assert_eq!(RelPath::try_from(s).ok(), direct.clone().ok());
            }
            // The bytes as a postcard-encoded path, and the bytes encoded as one.
            let _ = briefcase_mirror::path::take_last_rejected();
            match postcard::from_bytes::<RelPath>(bytes) {
                Ok(p) => check_path(&p),
                Err(_) => {
                    let _ = briefcase_mirror::path::take_last_rejected();
                }
            }
            let encoded = postcard::to_stdvec(bytes).unwrap();
            let decoded = postcard::from_bytes::<RelPath>(&encoded);
            assert_eq!(decoded.as_ref().ok(), direct.as_ref().ok());
            if decoded.is_err() {
                let rejected = briefcase_mirror::path::take_last_rejected();
                assert!(
                    rejected.is_some(),
                    "a refused path is remembered for the message"
                );
            }
            let _ = postcard::from_bytes::<Vec<RelPath>>(bytes);
            // JSON: the bytes as text, and as an array of numbers.
            let _ = serde_json::from_slice::<RelPath>(bytes);
            let json = serde_json::to_vec(&bytes.to_vec()).unwrap();
            let from_json = serde_json::from_slice::<RelPath>(&json);
            assert_eq!(from_json.as_ref().ok(), direct.as_ref().ok());
            let _ = briefcase_mirror::path::take_last_rejected();
        });
    });
    #[cfg(not(fuzzing))]
    assert!(
        PATHS_VALID.load(Ordering::Relaxed) > 0,
        "no valid path was tried"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. The journal's stored values

/// Decodes `bytes` as `T`; when that works, encoding and decoding again gives the same value.
fn postcard_stable<T>(bytes: &[u8]) -> Option<T>
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    let v = postcard::from_bytes::<T>(bytes).ok()?;
    let again: T = postcard::from_bytes(&postcard::to_stdvec(&v).unwrap()).unwrap();
    assert_eq!(again, v);
    Some(v)
}

static VALUES_DECODED: AtomicUsize = AtomicUsize::new(0);

/// The postcard values the journal keeps in its rows (`entries.version`, `entries.chunks`,
/// `meta.knowledge`), and the other model types postcard carries (entries, whole states, roots).
#[test]
fn journal_values() {
    check!(name = "journal_values").for_each(|bytes: &[u8]| {
        bounded(bytes.len(), || {
            let v = postcard_stable::<VersionVector>(bytes);
            let c = postcard_stable::<Vec<ChunkRef>>(bytes);
            if v.is_some() || c.is_some() {
                VALUES_DECODED.fetch_add(1, Ordering::Relaxed);
            }
            // Two vectors from the two halves: compared and merged as the planner does.
            let (a, b) = bytes.split_at(bytes.len() / 2);
            if let (Ok(a), Ok(b)) = (
                postcard::from_bytes::<VersionVector>(a),
                postcard::from_bytes::<VersionVector>(b),
            ) {
                let m = a.merged(&b);
                assert!(m.dominates(&a) && m.dominates(&b), "{a} {b} {m}");
                let _ = (a.compare(&b), format!("{m}"));
            }
            let _ = postcard_stable::<Entry>(bytes);
            let _ = postcard_stable::<Vec<Entry>>(bytes);
            let _ = postcard::from_bytes::<MirrorState>(bytes);
            let _ = postcard_stable::<Root>(bytes);
            let _ = briefcase_mirror::path::take_last_rejected();
        });
    });
    #[cfg(not(fuzzing))]
    assert!(VALUES_DECODED.load(Ordering::Relaxed) > 0);
}

// ---------------------------------------------------------------------------------------------
// Regressions (found while writing the targets)

/// A root may list at most `MAX_SEGMENTS + 1` parts (what `store` ever writes). Before, a 1 MiB
/// root could list one large part ~20,000 times: every load then hashed and decoded it that
/// often (a 1 MiB base listed 20,000 times is 20 GB of work), a hang a writer of the NAS could
/// cause with two files. The committed `state_root/corpus/regression-34-parts` lists the real
/// base 34 times.
#[test]
fn regression_root_listing_a_part_many_times() {
    let m = MemoryMirror::new("fuzz");
    now(m.init(FolderId(7))).unwrap();
    let mut st = MirrorState::new(FolderId(7), ReplicaId(3), "nas");
    for i in 0..20_000u32 {
        let g = GenEntry {
            path: vec![],
            kind: 0,
            deleted: false,
            size: u64::from(i),
            mode: 0o644,
            mtime_ns: 0,
            hash: Some([1; 32]),
            symlink_target: None,
            chunks: vec![],
            version: vec![(1, u64::from(i) + 1)],
            stamp: (1, u64::from(i) + 1),
            inode: 0,
            observed_mtime_ns: 0,
        };
        let mut e = g.entry();
        e.path = RelPath::try_from(format!("d/f{i}").as_str()).unwrap();
        st.insert_entry(e);
    }
    let stored = now(state::store(&m, &Stored::default(), &mut st)).unwrap();
    let base = &stored.root.parts[0];
    let base_bytes = now(m.read_state(&base.name)).unwrap().unwrap();
    let template = now(m.read_state(state::SLOTS[1])).unwrap().unwrap();
    let times: usize = std::env::var("REGRESSION_PARTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(state::MAX_SEGMENTS + 2);
    let listing: Vec<(&str, &[u8])> = vec![(base.name.as_str(), &base_bytes); times];
    now(m.write_state(state::SLOTS[1], &root_listing(&template, &listing))).unwrap();
    let start = std::time::Instant::now();
    let r = now(state::load(&m));
    eprintln!(
        "a {} KiB base listed {times} times: {:?} in {:?}",
        base_bytes.len() >> 10,
        r.as_ref()
            .map(|l| l.as_ref().map(|l| l.state.entries().len())),
        start.elapsed()
    );
    assert!(
        matches!(&r, Err(MirrorError::Corrupt { reason, .. }) if reason.contains("parts")),
        "{r:?}"
    );
}

/// Writes `state_root/corpus/regression-*`: the real root `state.0` with its payload replaced by
/// a listing of the real base 34 times, and by a listing of it under a name no mirror accepts
/// (before, the mirror's `Unsafe` error stopped the load instead of the root counting as
/// damaged). Run with
/// `cargo test -p briefcase-mirror --features testkit --test fuzz -- --ignored write_regression`.
#[test]
#[ignore = "writes a committed regression input"]
fn write_regression_inputs() {
    let roots = corpus_files("state_root");
    let parts = corpus_files("state_part");
    let (name, base) = parts
        .iter()
        .find(|(n, _)| n.starts_with("part.2."))
        .unwrap();
    let listing: Vec<(&str, &[u8])> =
        vec![(name.as_str(), base.as_slice()); state::MAX_SEGMENTS + 2];
    std::fs::write(
        corpus_dir("state_root").join("regression-34-parts"),
        root_listing(&roots["state.0"], &listing),
    )
    .unwrap();
    // The root `state_edits` made: the real base under a name the mirror refuses.
    let mut bad_name = name.clone().into_bytes();
    bad_name.insert(7, 0x13);
    let bad_name = String::from_utf8(bad_name).unwrap();
    std::fs::write(
        corpus_dir("state_root").join("regression-part-name"),
        root_listing(&roots["state.0"], &[(bad_name.as_str(), base.as_slice())]),
    )
    .unwrap();
}
