//! The replication model shared by the journal, the engine and every backend: replica and folder
//! identities, operation serial numbers, version vectors, and manifest entries. No I/O here.
//!
//! Version vectors follow Parker et al., "Detection of mutual inconsistency in distributed
//! systems" (1983), as used by Coda and Syncthing (`lib/protocol/vector.go`); knowledge vectors
//! follow the "made-with knowledge" of Cimbiosys/WinFS: a replica that knows `(r, n)` has integrated
//! every change replica `r` numbered `1..=n`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::path::RelPath;

/// A replica's random 64-bit identity. Shown as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReplicaId(pub u64);

impl ReplicaId {
    /// The first 8 hex digits, enough to tell replicas apart in messages and conflict names.
    pub fn short(&self) -> String {
        format!("{:016x}", self.0)[..8].to_string()
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "R{}", self.short())
    }
}

impl std::str::FromStr for ReplicaId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(ReplicaId)
    }
}

/// A folder's random 128-bit identity, shared by all its replicas. Shown as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FolderId(pub u128);

impl fmt::Display for FolderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for FolderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "F{self}")
    }
}

impl std::str::FromStr for FolderId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u128::from_str_radix(s.trim(), 16).map(FolderId)
    }
}

/// Operation serial number: a replica numbers its own changes 1, 2, 3, …; 0 means "none yet".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Osn(pub u64);

impl fmt::Display for Osn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Which change produced an entry: the replica that made it and the OSN it gave the change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// The replica that made the change.
    pub replica: ReplicaId,
    /// That replica's serial number for the change.
    pub osn: Osn,
}

/// How two version vectors relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VectorOrdering {
    /// Same entries.
    Equal,
    /// `self` has seen everything `other` has, and more.
    Greater,
    /// `other` has seen everything `self` has, and more.
    Lesser,
    /// Each has seen a change the other has not: a conflict.
    Concurrent,
}

/// Map replica → OSN of the last change that replica made to one file (a version vector), or of
/// the last change of that replica that a replica has integrated (a knowledge vector).
/// A missing entry means 0.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionVector(BTreeMap<ReplicaId, Osn>);

/// A replica's knowledge: for every replica, the highest OSN whose changes it has integrated.
pub type KnowledgeVector = VersionVector;

impl VersionVector {
    /// The empty vector (a file nobody has written yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// The vector of a first change: `{replica: osn}`.
    pub fn single(replica: ReplicaId, osn: Osn) -> Self {
        let mut v = Self::new();
        v.set(replica, osn);
        v
    }

    /// The OSN recorded for `replica` (0 when absent).
    pub fn get(&self, replica: ReplicaId) -> Osn {
        self.0.get(&replica).copied().unwrap_or_default()
    }

    /// Sets the entry for `replica`; 0 removes it.
    pub fn set(&mut self, replica: ReplicaId, osn: Osn) {
        if osn.0 == 0 {
            self.0.remove(&replica);
        } else {
            self.0.insert(replica, osn);
        }
    }

    /// Raises the entry for `replica` to at least `osn`.
    pub fn raise(&mut self, replica: ReplicaId, osn: Osn) {
        if self.get(replica) < osn {
            self.set(replica, osn);
        }
    }

    /// Element-wise maximum with `other`.
    pub fn merge(&mut self, other: &VersionVector) {
        for (r, o) in &other.0 {
            self.raise(*r, *o);
        }
    }

    /// Element-wise maximum of two vectors.
    pub fn merged(&self, other: &VersionVector) -> VersionVector {
        let mut v = self.clone();
        v.merge(other);
        v
    }

    /// Compares two vectors.
    pub fn compare(&self, other: &VersionVector) -> VectorOrdering {
        let (mut greater, mut lesser) = (false, false);
        for r in self.0.keys().chain(other.0.keys()) {
            let (a, b) = (self.get(*r), other.get(*r));
            greater |= a > b;
            lesser |= a < b;
        }
        match (greater, lesser) {
            (false, false) => VectorOrdering::Equal,
            (true, false) => VectorOrdering::Greater,
            (false, true) => VectorOrdering::Lesser,
            (true, true) => VectorOrdering::Concurrent,
        }
    }

    /// Whether `self` has seen every change `other` has (equal or greater).
    pub fn dominates(&self, other: &VersionVector) -> bool {
        matches!(
            self.compare(other),
            VectorOrdering::Equal | VectorOrdering::Greater
        )
    }

    /// As a knowledge vector: whether the change `stamp` has been integrated.
    pub fn covers(&self, stamp: Stamp) -> bool {
        self.get(stamp.replica) >= stamp.osn
    }

    /// The entries, by replica.
    pub fn iter(&self) -> impl Iterator<Item = (ReplicaId, Osn)> + '_ {
        self.0.iter().map(|(r, o)| (*r, *o))
    }

    /// Whether no replica has an entry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (r, o)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}:{}", r.short(), o)?;
        }
        f.write_str("}")
    }
}

/// A blake3 hash (32 bytes) of a file's content, of a chunk, or of a symlink's target.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    /// blake3 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        ContentHash(*blake3::hash(bytes).as_bytes())
    }

    /// Lowercase hex, 64 digits.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..12])
    }
}

/// One content-defined chunk of a file (FastCDC, Xia et al., USENIX ATC 2016): its blake3 hash
/// and length in bytes. Offsets follow from the order of the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// blake3 of the chunk's bytes.
    pub hash: ContentHash,
    /// Length in bytes.
    pub len: u32,
}

/// FastCDC sizes a file is cut with, in bytes (the `fastcdc` crate's v2020 variant).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkParams {
    /// Smallest chunk (but the last of a file).
    pub min: u32,
    /// Average chunk.
    pub avg: u32,
    /// Largest chunk.
    pub max: u32,
}

impl Default for ChunkParams {
    /// 16 KiB min / 64 KiB average / 256 KiB max (DESIGN.md: ~64 KiB).
    fn default() -> Self {
        ChunkParams {
            min: 16 << 10,
            avg: 64 << 10,
            max: 256 << 10,
        }
    }
}

/// A file's chunk list as whoever computed it cut the file, and the sizes it cut with: what a
/// [`crate::PutItem`] may carry so that a backend storing chunks need not cut the file again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunking {
    /// The sizes the list was cut with.
    pub params: ChunkParams,
    /// The chunks, in order.
    pub chunks: Vec<ChunkRef>,
}

/// What a manifest entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link; its target is in [`Entry::symlink_target`] and is never followed.
    Symlink,
}

impl EntryKind {
    /// Lowercase name for messages and `--json`.
    pub fn as_str(&self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
        }
    }
}

/// One path of a replica's manifest: what is (or, for a tombstone, was) there, and its history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Where, relative to the root.
    pub path: RelPath,
    /// File, directory or symlink.
    pub kind: EntryKind,
    /// A tombstone: the path was deleted by the change in `stamp`.
    pub deleted: bool,
    /// Content length in bytes (0 for directories and tombstones).
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Modification time, nanoseconds since the Unix epoch (as carried between replicas).
    pub mtime_ns: i64,
    /// blake3 of the content (files) or of the target (symlinks); `None` for directories.
    pub hash: Option<ContentHash>,
    /// The link target bytes of a symlink.
    pub symlink_target: Option<Vec<u8>>,
    /// FastCDC chunk list of a file (may be empty when not computed).
    pub chunks: Vec<ChunkRef>,
    /// Which replica changed this path last with which OSN, for every replica that changed it.
    pub version: VersionVector,
    /// The change that produced this state of the entry.
    pub stamp: Stamp,
    /// This replica's own inode number for the path when it was recorded (0 = unknown). Used only
    /// to notice changes made behind briefcase's back; meaningless on another replica.
    pub inode: u64,
    /// This replica's own mtime (ns) as observed when recorded; may differ from `mtime_ns` where
    /// the medium rounds times (FAT: 2 s).
    pub observed_mtime_ns: i64,
}

impl Entry {
    /// Whether two entries describe the same content (kind, bytes or link target), ignoring
    /// history, mode and times. Two tombstones are the same content.
    pub fn same_content(&self, other: &Entry) -> bool {
        if self.deleted || other.deleted {
            return self.deleted == other.deleted;
        }
        self.kind == other.kind
            && match self.kind {
                EntryKind::Dir => true,
                EntryKind::File => self.size == other.size && self.hash == other.hash,
                EntryKind::Symlink => self.symlink_target == other.symlink_target,
            }
    }

    /// Whether two live entries agree on content and on the metadata briefcase carries (mode,
    /// mtime to the second for files).
    pub fn same_content_and_meta(&self, other: &Entry) -> bool {
        self.same_content(other)
            && (self.deleted
                || self.kind != EntryKind::File
                || (self.mode == other.mode
                    && self.mtime_ns.div_euclid(1_000_000_000)
                        == other.mtime_ns.div_euclid(1_000_000_000)))
    }
}

/// The whole state a mirror keeps next to its data (`.briefcase/state.N` and its parts): its
/// identity, OSN counter, knowledge vector and manifest. Stored incrementally by
/// [`crate::state`]: the manifest is private so that every change goes through
/// [`MirrorState::insert_entry`] or [`MirrorState::entry_mut`], which note the path as changed
/// since the last store (the next segment then carries only those entries).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorState {
    /// The folder this mirror is a replica of.
    pub folder_id: FolderId,
    /// This mirror's replica ID.
    pub replica_id: ReplicaId,
    /// Highest OSN this mirror's replica has issued.
    pub osn: Osn,
    /// What this mirror has integrated from every replica (including itself).
    pub knowledge: KnowledgeVector,
    /// Human names of the replicas this mirror has heard of.
    pub replica_names: BTreeMap<ReplicaId, String>,
    /// Manifest: live entries and tombstones, by path.
    entries: BTreeMap<RelPath, Entry>,
    /// Paths changed since the state was last loaded or stored (not stored; ignored by `==`).
    #[serde(skip)]
    changed: Changed,
}

/// The set of paths a [`MirrorState`] changed since its last store. Equal to any other, so that
/// two states compare by content only.
#[derive(Clone, Debug, Default)]
pub(crate) struct Changed(pub(crate) std::collections::BTreeSet<RelPath>);

impl PartialEq for Changed {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Changed {}

impl MirrorState {
    /// A new, empty state for a freshly initialised mirror.
    pub fn new(folder_id: FolderId, replica_id: ReplicaId, name: &str) -> Self {
        let mut replica_names = BTreeMap::new();
        replica_names.insert(replica_id, name.to_string());
        MirrorState {
            folder_id,
            replica_id,
            osn: Osn(0),
            knowledge: VersionVector::new(),
            replica_names,
            entries: BTreeMap::new(),
            changed: Changed::default(),
        }
    }

    /// Issues the next OSN of this mirror's replica and records that it knows it.
    pub fn next_osn(&mut self) -> Osn {
        // Saturating: a state with an impossibly high counter is refused before it is used
        // (the engine's `check_claims`); this only keeps a bug from becoming a panic.
        self.osn = Osn(self.osn.0.saturating_add(1));
        self.knowledge.raise(self.replica_id, self.osn);
        self.osn
    }

    /// The manifest, by path.
    pub fn entries(&self) -> &BTreeMap<RelPath, Entry> {
        &self.entries
    }

    /// The entry at `path`, if any.
    pub fn entry(&self, path: &RelPath) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// Inserts or replaces the entry at `entry.path`; returns the previous one.
    pub fn insert_entry(&mut self, entry: Entry) -> Option<Entry> {
        self.changed.0.insert(entry.path.clone());
        self.entries.insert(entry.path.clone(), entry)
    }

    /// The entry at `path` for changing in place (noted as changed, whatever is done with it).
    pub fn entry_mut(&mut self, path: &RelPath) -> Option<&mut Entry> {
        let e = self.entries.get_mut(path)?;
        self.changed.0.insert(path.clone());
        Some(e)
    }

    /// Removes the entry at `path` (tombstone collection); returns it.
    pub fn remove_entry(&mut self, path: &RelPath) -> Option<Entry> {
        let e = self.entries.remove(path)?;
        self.changed.0.insert(path.clone());
        Some(e)
    }

    /// Paths changed since the last load or store.
    pub(crate) fn changed(&self) -> &std::collections::BTreeSet<RelPath> {
        &self.changed.0
    }

    /// Forgets the changes (they are stored).
    pub(crate) fn clear_changed(&mut self) {
        self.changed.0.clear();
    }

    /// The manifest for applying decoded segments (no change noted).
    pub(crate) fn entries_loaded_mut(&mut self) -> &mut BTreeMap<RelPath, Entry> {
        &mut self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vv(pairs: &[(u64, u64)]) -> VersionVector {
        let mut v = VersionVector::new();
        for (r, o) in pairs {
            v.set(ReplicaId(*r), Osn(*o));
        }
        v
    }

    #[test]
    fn compare_table() {
        use VectorOrdering::*;
        let cases = [
            (vec![], vec![], Equal),
            (vec![(1, 1)], vec![], Greater),
            (vec![], vec![(1, 1)], Lesser),
            (vec![(1, 2)], vec![(1, 1)], Greater),
            (vec![(1, 1), (2, 1)], vec![(1, 1)], Greater),
            (vec![(1, 2)], vec![(1, 1), (2, 1)], Concurrent),
            (vec![(1, 1), (2, 3)], vec![(1, 1), (2, 3)], Equal),
        ];
        for (a, b, want) in cases {
            assert_eq!(vv(&a).compare(&vv(&b)), want, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn merge_dominates_both() {
        let a = vv(&[(1, 3), (2, 1)]);
        let b = vv(&[(1, 1), (3, 4)]);
        let m = a.merged(&b);
        assert!(m.dominates(&a) && m.dominates(&b));
        assert_eq!(m, vv(&[(1, 3), (2, 1), (3, 4)]));
    }

    #[test]
    fn knowledge_covers() {
        let k = vv(&[(1, 5)]);
        assert!(k.covers(Stamp {
            replica: ReplicaId(1),
            osn: Osn(5)
        }));
        assert!(!k.covers(Stamp {
            replica: ReplicaId(1),
            osn: Osn(6)
        }));
        assert!(!k.covers(Stamp {
            replica: ReplicaId(2),
            osn: Osn(1)
        }));
    }
}
