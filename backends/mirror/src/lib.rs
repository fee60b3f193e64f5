//! The contract every briefcase backend implements.
//!
//! A *mirror* is any replica of a folder other than the local one. The engine (in the `briefcase`
//! crate) is backend-agnostic: it loads the mirror's state through [`state::load`], scans the
//! mirror's data with [`Mirror::list`], plans, moves bytes with [`Mirror::get`] / [`Mirror::put`]
//! and friends, and commits the mirror's state with [`state::store`]. Backends only store and fetch
//! bytes and metadata; they never decide what wins.
//!
//! - [`model`]: replica/folder IDs, OSNs, version vectors, manifest entries, [`MirrorState`].
//! - [`path`]: [`RelPath`], the checked relative path (invariant 6).
//! - [`state`]: the two-generation, checksummed state envelope.
//! - [`fsutil`]: symlink-safe path resolution and atomic writes for local-disk backends and the
//!   local replica.
//! - [`registry`]: how the `briefcase` crate finds a backend by its URL scheme ([`registry::BackendKind`],
//!   implemented once by each backend crate) and opens it without naming its kind.
//! - [`fixture`]: what the conformance suite runs against (a mirror, and a way to unplug it).
//! - `testkit` (feature): the conformance suite every backend runs (after rclone's fstest), as
//!   the [`conformance!`] macro. The in-memory test double is its own backend crate,
//!   `briefcase-memory`.
#![deny(missing_docs)]

#[cfg(feature = "testkit")]
pub mod alloc_watch;
pub mod beneath;
pub mod error;
pub mod fixture;
pub mod fsutil;
pub mod model;
pub mod path;
pub mod registry;
pub mod state;
#[cfg(feature = "testkit")]
pub mod testkit;
#[cfg(feature = "testkit")]
pub mod usb;

use std::path::{Path, PathBuf};

pub use error::{ErrorKind, MirrorError, MirrorResult};
pub use model::{
    ChunkParams, ChunkRef, Chunking, ContentHash, Entry, EntryKind, FolderId, KnowledgeVector,
    MirrorState, Osn, ReplicaId, Stamp, VectorOrdering, VersionVector,
};
pub use path::{PathError, RelPath};

/// Name of the per-root state directory on a mirror.
pub const STATE_DIR: &str = ".briefcase";
/// Prefix of temporary files; never watched, never replicated, removed at start (invariant 2).
pub const TMP_PREFIX: &str = ".briefcase-tmp-";

/// What a backend can do beyond the basics. A capability a backend lacks is declared here, and
/// the conformance suite and the engine respect it rather than skipping silently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Changes can be read back from the mirror (false for publish-only targets such as FTP).
    pub two_way: bool,
    /// [`Mirror::rename`] is supported (else the engine copies and removes).
    pub rename: bool,
    /// Symlinks can be stored as links.
    pub symlinks: bool,
    /// Permission bits survive a round trip.
    pub modes: bool,
    /// Granularity of stored mtimes, in ns (1 on ext4; 2 s on FAT).
    pub mtime_granularity_ns: u64,
    /// Names differing only in case collide on this medium.
    pub case_insensitive: bool,
    /// Largest file the medium can hold, in bytes (`None`: no limit known).
    pub max_file_size: Option<u64>,
    /// Stored mtimes may be off by exactly one hour (FAT keeps local time and shifts it when
    /// daylight saving time starts or ends): an mtime one hour away (within the granularity)
    /// still matches.
    pub mtime_dst_shift: bool,
    /// Names are stored in another form than the tree shows (FAT: characters it forbids are
    /// mapped), so a watcher on the medium sees on-disk names: after its events the engine
    /// scans the whole mirror, not the reported paths.
    pub maps_names: bool,
    /// A medium carried from machine to machine (a stick): it comes and goes, and messages say
    /// when it is safe to unplug.
    pub removable: bool,
    /// The mirror keeps one log of its own (the stick's catalog): what [`Mirror::write`]
    /// changes is kept only by the next [`StateStore::commit_state`], which commits it with the
    /// state files written and removed, all or nothing, so a crash or yank before it loses the
    /// writes and leaves the last commit whole. The engine then keeps its state there as parts
    /// only ([`state`]: each commit is a consistent generation, no root slots), and writes no
    /// intents record (a write that a crash cut off is gone with its record).
    pub atomic_commit: bool,
}

impl Capabilities {
    /// The shift [`Capabilities::mtime_dst_shift`] tolerates: one hour, in ns.
    pub const DST_SHIFT_NS: i64 = 3_600_000_000_000;
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            two_way: true,
            rename: true,
            symlinks: true,
            modes: true,
            mtime_granularity_ns: 1,
            case_insensitive: false,
            max_file_size: None,
            mtime_dst_shift: false,
            maps_names: false,
            removable: false,
            atomic_commit: false,
        }
    }
}

/// What is at a mirror's root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// The root does not exist (not mounted, not plugged in).
    Absent,
    /// The root exists and is empty: it may be initialised.
    Empty,
    /// The root exists, has content, but no folder marker: it may be initialised only on purpose
    /// (its content then enters as the mirror's changes), and while it was known as a mirror
    /// before, this means offline (invariant 4).
    Unmarked,
    /// The root carries the marker of this folder.
    Marked(FolderId),
}

/// Metadata briefcase carries for a file or directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileMeta {
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
    /// Modification time, ns since the Unix epoch.
    pub mtime_ns: i64,
}

/// Where the content of a [`PutItem`] comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutSource {
    /// A local file, copied (the engine pushing a file of the local replica).
    File(PathBuf),
    /// Bytes in memory (a layer over this mirror writing what it made itself, e.g. the stick's
    /// catalog).
    Bytes(Vec<u8>),
    /// Bytes of a new content-addressed file that nothing reads before a later commit refers to
    /// it (the stick's chunks): the backend may write it in place, without a temp file, rename or
    /// metadata, and without the case check (the caller's names are lowercase hex). Still
    /// durable when the batch returns. A write torn by a crash leaves a file no commit refers
    /// to, which the layer sweeps.
    Blob(Vec<u8>),
}

/// One file for [`Mirror::put_batch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutItem {
    /// Where on the mirror.
    pub path: RelPath,
    /// The content.
    pub source: PutSource,
    /// Mode and mtime to give it.
    pub meta: FileMeta,
    /// blake3 of the content the caller means to write (the engine: what its journal recorded
    /// for the local file). A backend that reads a [`PutSource::File`] hashes what it read and,
    /// when that differs, stores nothing for the item and answers
    /// [`MirrorError::SourceChanged`]: the mirror never holds content that no state records
    /// (a file saved again while it was sent would otherwise land unrecorded, and be taken for
    /// an edit made on the mirror). `None`: not checked.
    pub expect: Option<ContentHash>,
    /// The content's chunk list as the caller already cut it (the engine: the scanner's, from
    /// its journal entry), for a backend that stores chunks (the stick): when it cuts with the
    /// same [`ChunkParams`], it takes these boundaries instead of cutting the file again, still
    /// hashing each chunk as it reads it; a chunk that differs means the file changed since,
    /// and the item answers [`MirrorError::SourceChanged`] with nothing stored. Backends that
    /// store whole files ignore it. `None`: not known.
    pub chunks: Option<Chunking>,
}

/// A reader that hashes (blake3) what passes through it, for [`PutItem::expect`].
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: std::io::Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: blake3::Hasher::new(),
        }
    }

    /// The hash of everything read so far.
    pub fn hash(&self) -> ContentHash {
        ContentHash(*self.hasher.finalize().as_bytes())
    }
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(b) = buf.get(..n) {
            self.hasher.update(b);
        }
        Ok(n)
    }
}

/// What a backend reports about one path of its data tree (never of its state directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteStat {
    /// Path relative to the mirror root (already un-mapped for media with forbidden characters).
    pub path: RelPath,
    /// File, directory or symlink.
    pub kind: EntryKind,
    /// Bytes (files), 0 otherwise.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time as stored by the medium, ns since the epoch.
    pub mtime_ns: i64,
    /// Inode number or another identity that changes when the file is replaced (0 = none).
    pub inode: u64,
    /// Target bytes of a symlink.
    pub symlink_target: Option<Vec<u8>>,
}

/// How much [`Mirror::walk`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// Every file, directory and symlink with its stat, parents before children; never the
    /// state directory nor temp files.
    Stats,
    /// Only the paths of files, temp files included (a layer sweeping what an interrupted write
    /// left); the other fields of each [`RemoteStat`] are zero. Cheaper where the backend can
    /// skip a stat per entry (`dir` reads the directory entries' types).
    FileNames,
}

/// One change for [`Mirror::write`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    /// Atomically replaces (or creates) the file at `item.path` and sets its mode and mtime.
    /// Parent directories must exist. Answers the stat of what was written.
    Put(PutItem),
    /// Creates a directory (its parent must exist) with `meta`; succeeds when it already is one.
    Mkdir {
        /// Where.
        path: RelPath,
        /// Mode and mtime to give it.
        meta: FileMeta,
    },
    /// Creates (or atomically replaces) a symlink with these target bytes; never follows it.
    /// [`MirrorError::Unsupported`] where `capabilities().symlinks` is false.
    Symlink {
        /// Where.
        path: RelPath,
        /// The link's target, as bytes.
        target: Vec<u8>,
    },
    /// Renames `from` to `to`, replacing a file at `to`. [`MirrorError::Unsupported`] where
    /// `capabilities().rename` is false (the engine then copies and removes).
    Rename {
        /// The path now.
        from: RelPath,
        /// The new path.
        to: RelPath,
    },
    /// Removes a file, symlink or empty directory; succeeds when it is already absent. A
    /// directory that is not empty is [`MirrorError::is_dir_not_empty`]. Answers no stat.
    Remove(RelPath),
    /// Sets mode and mtime of an existing path ([`MirrorError::NotFound`] when absent).
    SetMeta {
        /// Where.
        path: RelPath,
        /// Mode and mtime to give it.
        meta: FileMeta,
    },
}

impl WriteOp {
    /// The path the operation changes (for a rename, the new one).
    pub fn path(&self) -> &RelPath {
        match self {
            WriteOp::Put(it) => &it.path,
            WriteOp::Mkdir { path, .. }
            | WriteOp::Symlink { path, .. }
            | WriteOp::SetMeta { path, .. }
            | WriteOp::Remove(path) => path,
            WriteOp::Rename { to, .. } => to,
        }
    }
}

/// The result of one [`WriteOp`]: the stat of what is now at the path (`None` for a removal).
pub type WriteResult = MirrorResult<Option<RemoteStat>>;

/// A run of [`WriteOp`]s of one kind, as [`split_runs`] groups them.
#[derive(Debug)]
pub enum Run {
    /// Consecutive puts, with the index of the first in the whole list.
    Puts(usize, Vec<PutItem>),
    /// Consecutive removals, with the index of the first.
    Removes(usize, Vec<RelPath>),
    /// Any other operation, with its index.
    One(usize, WriteOp),
}

/// Groups `ops` into runs a backend can amortise (its batched put and removal), keeping their
/// order: `[put a, put b, mkdir d, rm x, rm y]` → `[Puts(0, [a, b]), One(2, mkdir d),
/// Removes(3, [x, y])]`. Every index of `ops` is in exactly one run.
pub fn split_runs(ops: Vec<WriteOp>) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for (i, op) in ops.into_iter().enumerate() {
        match (runs.last_mut(), op) {
            (Some(Run::Puts(_, items)), WriteOp::Put(it)) => items.push(it),
            (Some(Run::Removes(_, paths)), WriteOp::Remove(p)) => paths.push(p),
            (_, WriteOp::Put(it)) => runs.push(Run::Puts(i, vec![it])),
            (_, WriteOp::Remove(p)) => runs.push(Run::Removes(i, vec![p])),
            (_, op) => runs.push(Run::One(i, op)),
        }
    }
    runs
}

/// The engine's own files on a mirror: its state (roots and parts, [`state`]), the intents
/// record and the lease records (`briefcase::reconcile::lease`). Separate from the data tree: a
/// [`Mirror::walk`] never shows them. A backend either keeps them as files of its own
/// ([`StateInTree`] does it over any [`Mirror`]'s data operations, in `.briefcase/`), or
/// natively (the stick keeps them in its encrypted catalog, committed with it).
#[async_trait::async_trait]
pub trait StateStore: Send + Sync {
    /// Reads the state file `name` (`state.0`, `part.7.1a2b…`, `lease.12`). `Ok(None)` when
    /// absent.
    ///
    /// # Errors
    /// I/O errors; [`MirrorError::Offline`] when the root or marker vanished.
    async fn read_state(&self, name: &str) -> MirrorResult<Option<Vec<u8>>>;

    /// **The commit point.** Writes the files `write` in order, each atomically and durably,
    /// then removes the files `remove` (absent ones are no error). A crash leaves a prefix of
    /// the writes done; a backend may make the whole call durable at once (the stick commits
    /// its catalog once: none or all, with its data: [`Capabilities::atomic_commit`]).
    /// [`state::store`] writes a segment and then the root that refers to it with one call, and
    /// drops parts no generation needs in the next (on an atomic mirror: the segment, and the
    /// parts a new base replaces, in one call).
    ///
    /// # Errors
    /// I/O errors; [`MirrorError::Offline`] when the root or marker vanished.
    async fn commit_state(&self, write: &[(&str, &[u8])], remove: &[&str]) -> MirrorResult<()>;

    /// Names of all state files (not temp files, not the folder marker), in any order.
    ///
    /// # Errors
    /// I/O errors; [`MirrorError::Offline`].
    async fn list_state(&self) -> MirrorResult<Vec<String>>;

    /// Creates the state file `name` holding `bytes` only if no file of that name exists: of
    /// several processes trying at once, on this machine or others sharing the medium, exactly
    /// one gets `Ok(true)`; the others get `Ok(false)`. Not made durable (a crash may lose it).
    /// A reader may briefly see the file empty where the medium has no hard links (FAT). Serves
    /// the mirror lease (`briefcase::reconcile::lease`): state files are written by one machine
    /// at a time.
    ///
    /// # Errors
    /// I/O errors; [`MirrorError::Offline`]; [`MirrorError::Unsupported`] for a medium used by
    /// one machine at a time (the stick): no lease is taken there.
    async fn create_state_exclusive(&self, name: &str, bytes: &[u8]) -> MirrorResult<bool>;
}

/// A mirror backend: a place that stores one replica's data (this trait) and the engine's state
/// for it ([`StateStore`]).
///
/// The data side is nine operations, after rclone's `Fs` and rustic's backends: look at the root
/// ([`Mirror::probe`], [`Mirror::init`]), read ([`Mirror::walk`], [`Mirror::stat`],
/// [`Mirror::get`]), change ([`Mirror::write`], one batched entry point for every change) and
/// clean up ([`Mirror::sweep`]). Conveniences for one change at a time are in [`MirrorExt`],
/// implemented for every mirror. A layer (the stick's encryption, progress counting, a test's
/// crash injection) forwards these and [`StateStore`]'s four; nothing is optional except
/// [`Mirror::marker_location`] and [`Mirror::read_bytes`] (a faster path).
///
/// All paths are [`RelPath`]s, so a backend never sees `..` or an absolute path; a backend must
/// still refuse to follow symlinks inside its root ([`beneath`] does this for local disks).
/// Writes are atomic: a reader sees the old content or the new, never a mix.
#[async_trait::async_trait]
pub trait Mirror: StateStore + Send + Sync + std::fmt::Debug {
    /// Where the mirror is, for messages: `dir:/mnt/nas/work`.
    fn location(&self) -> String;

    /// What the backend supports on this medium.
    fn capabilities(&self) -> Capabilities;

    /// Where this mirror's folder marker is, for a message saying it is missing
    /// (`/mnt/nas/work/.briefcase/folder-id`). `None`, the default: no one place to name.
    fn marker_location(&self) -> Option<String> {
        None
    }

    /// Looks at the root: absent, empty, unmarked, or marked with a folder ID.
    ///
    /// # Errors
    /// I/O errors other than "not found"; [`MirrorError::Corrupt`] for an unreadable marker.
    async fn probe(&self) -> MirrorResult<Presence>;

    /// Creates the root if needed, the state directory, and the folder marker. Called only when
    /// [`Mirror::probe`] said `Absent`/`Empty` (or `Unmarked` on the user's explicit request).
    ///
    /// # Errors
    /// I/O errors.
    async fn init(&self, folder: FolderId) -> MirrorResult<()>;

    /// Lists the data tree (never the state directory), parents before children: all of it
    /// (`under` = `None`), or what is below the directory `under` (not `under` itself; empty
    /// when it is absent or not a directory), so a watcher's hint costs the size of a subtree.
    ///
    /// # Errors
    /// I/O errors; [`MirrorError::InvalidPath`] for a name that cannot be a [`RelPath`];
    /// [`MirrorError::Unsafe`] when a parent of `under` is a symlink.
    async fn walk(&self, under: Option<&RelPath>, detail: Detail) -> MirrorResult<Vec<RemoteStat>>;

    /// Stats one path without following a final symlink. `Ok(None)` when absent.
    ///
    /// # Errors
    /// I/O errors; [`MirrorError::Unsafe`] when a parent is a symlink.
    async fn stat(&self, path: &RelPath) -> MirrorResult<Option<RemoteStat>>;

    /// Copies the file at `path` to the local file `dest` (created or truncated) and returns the
    /// mirror's stat of what was read.
    ///
    /// # Errors
    /// [`MirrorError::NotFound`]; I/O errors on either side.
    async fn get(&self, path: &RelPath, dest: &Path) -> MirrorResult<RemoteStat>;

    /// Reads the whole file at `path` into memory. Files larger than `limit` bytes are refused
    /// with [`MirrorError::Corrupt`] (a layer reading its own small files: state, chunks). The
    /// default goes through [`Mirror::get`] and a local temp file; a backend that can read
    /// directly should override it.
    ///
    /// # Errors
    /// [`MirrorError::NotFound`]; [`MirrorError::Corrupt`] over `limit`; I/O errors.
    async fn read_bytes(&self, path: &RelPath, limit: u64) -> MirrorResult<Vec<u8>> {
        let local_err = |op: &'static str, e: std::io::Error| MirrorError::Io {
            location: self.location(),
            op,
            path: path.to_string(),
            source: e,
        };
        let tmp = tempfile::NamedTempFile::new()
            .map_err(|e| local_err("create a local temp file for", e))?;
        let st = self.get(path, tmp.path()).await?;
        if st.size > limit {
            return Err(MirrorError::Corrupt {
                location: self.location(),
                what: path.to_string(),
                reason: format!("{} bytes, more than the {limit} expected", st.size),
            });
        }
        std::fs::read(tmp.path()).map_err(|e| local_err("read back the local copy of", e))
    }

    /// Applies `ops` in order and returns one result per operation, once every change made is
    /// durable (with [`Capabilities::atomic_commit`], once the next commit of the state is). Each operation is atomic on its own (a reader and a crash see a file's old or
    /// new content, never a mix) and a failed one does not stop the next. A backend amortises
    /// durability over the batch ([`split_runs`]): `dir` flushes the temp files of a run of
    /// puts with one `syncfs(2)` and each directory once, instead of two fsyncs per file.
    ///
    /// A [`PutSource::File`] item with [`PutItem::expect`] is hashed as it is read; when that
    /// differs, nothing is stored for it and it answers [`MirrorError::SourceChanged`].
    async fn write(&self, ops: Vec<WriteOp>) -> Vec<WriteResult>;

    /// Removes what interrupted writes left behind (a process killed between writing a temp
    /// file and renaming it, invariant 2), in the data tree and the state directory, and
    /// returns how many files were removed; a layer also drops what no commit refers to (the
    /// stick's unreferenced chunks). Called at the start of every full sync.
    ///
    /// # Errors
    /// I/O errors; [`MirrorError::Offline`] when the root or marker vanished.
    async fn sweep(&self) -> MirrorResult<usize>;
}

/// The result of every operation of `ops` when one failure stopped the whole batch before any
/// was tried (the mirror went offline, a worker thread failed): the same error for each, naming
/// each operation's path ([`MirrorError::duplicate_for`]).
pub fn fan_out(ops: &[WriteOp], e: &MirrorError) -> Vec<WriteResult> {
    ops.iter()
        .map(|op| Err(e.duplicate_for(&op.path().to_string())))
        .collect()
}

/// The one result of a one-operation [`Mirror::write`].
fn only(location: impl FnOnce() -> String, mut r: Vec<WriteResult>) -> WriteResult {
    match (r.pop(), r.is_empty()) {
        (Some(one), true) => one,
        _ => Err(MirrorError::Corrupt {
            location: location(),
            what: "write".into(),
            reason: "the backend answered a different number of results than operations (a bug)"
                .into(),
        }),
    }
}

/// The stat of a write that must answer one.
fn stat_of(
    location: impl FnOnce() -> String,
    what: &RelPath,
    r: WriteResult,
) -> MirrorResult<RemoteStat> {
    match r? {
        Some(st) => Ok(st),
        None => Err(MirrorError::Corrupt {
            location: location(),
            what: what.to_string(),
            reason: "the backend answered no stat for a write (a bug)".into(),
        }),
    }
}

/// One change at a time, and the older names of the listing and state calls, over
/// [`Mirror::write`], [`Mirror::walk`] and [`StateStore`]: implemented for every mirror, so a
/// layer never forwards them.
#[async_trait::async_trait]
pub trait MirrorExt: Mirror {
    /// The whole data tree with stats ([`Mirror::walk`] of everything).
    ///
    /// # Errors
    /// As [`Mirror::walk`].
    async fn list(&self) -> MirrorResult<Vec<RemoteStat>> {
        self.walk(None, Detail::Stats).await
    }

    /// What is below `dir`, with stats.
    ///
    /// # Errors
    /// As [`Mirror::walk`].
    async fn list_under(&self, dir: &RelPath) -> MirrorResult<Vec<RemoteStat>> {
        self.walk(Some(dir), Detail::Stats).await
    }

    /// Paths of the files below `dir`, temp files included ([`Detail::FileNames`]).
    ///
    /// # Errors
    /// As [`Mirror::walk`].
    async fn list_file_names_under(&self, dir: &RelPath) -> MirrorResult<Vec<RelPath>> {
        Ok(self
            .walk(Some(dir), Detail::FileNames)
            .await?
            .into_iter()
            .map(|s| s.path)
            .collect())
    }

    /// [`WriteOp::Put`] of the local file `source`, unchecked.
    ///
    /// # Errors
    /// As [`Mirror::write`].
    async fn put(&self, path: &RelPath, source: &Path, meta: FileMeta) -> MirrorResult<RemoteStat> {
        let op = WriteOp::Put(PutItem {
            path: path.clone(),
            source: PutSource::File(source.to_path_buf()),
            meta,
            expect: None,
            chunks: None,
        });
        let r = only(|| self.location(), self.write(vec![op]).await);
        stat_of(|| self.location(), path, r)
    }

    /// [`WriteOp::Put`] of each item, one result per item.
    async fn put_batch(&self, items: Vec<PutItem>) -> Vec<MirrorResult<RemoteStat>> {
        let paths: Vec<RelPath> = items.iter().map(|i| i.path.clone()).collect();
        let mut out = self
            .write(items.into_iter().map(WriteOp::Put).collect())
            .await;
        out.resize_with(paths.len(), || {
            Err(MirrorError::Corrupt {
                location: self.location(),
                what: "write".into(),
                reason: "the backend answered fewer results than operations (a bug)".into(),
            })
        });
        out.into_iter()
            .zip(&paths)
            .map(|(r, p)| stat_of(|| self.location(), p, r))
            .collect()
    }

    /// [`WriteOp::Mkdir`].
    ///
    /// # Errors
    /// As [`Mirror::write`].
    async fn mkdir(&self, path: &RelPath, meta: FileMeta) -> MirrorResult<RemoteStat> {
        let op = WriteOp::Mkdir {
            path: path.clone(),
            meta,
        };
        let r = only(|| self.location(), self.write(vec![op]).await);
        stat_of(|| self.location(), path, r)
    }

    /// [`WriteOp::Symlink`].
    ///
    /// # Errors
    /// As [`Mirror::write`].
    async fn symlink(&self, path: &RelPath, target: &[u8]) -> MirrorResult<RemoteStat> {
        let op = WriteOp::Symlink {
            path: path.clone(),
            target: target.to_vec(),
        };
        let r = only(|| self.location(), self.write(vec![op]).await);
        stat_of(|| self.location(), path, r)
    }

    /// [`WriteOp::Rename`].
    ///
    /// # Errors
    /// As [`Mirror::write`].
    async fn rename(&self, from: &RelPath, to: &RelPath) -> MirrorResult<RemoteStat> {
        let op = WriteOp::Rename {
            from: from.clone(),
            to: to.clone(),
        };
        let r = only(|| self.location(), self.write(vec![op]).await);
        stat_of(|| self.location(), to, r)
    }

    /// [`WriteOp::Remove`].
    ///
    /// # Errors
    /// As [`Mirror::write`].
    async fn remove(&self, path: &RelPath) -> MirrorResult<()> {
        only(
            || self.location(),
            self.write(vec![WriteOp::Remove(path.clone())]).await,
        )
        .map(|_| ())
    }

    /// [`WriteOp::Remove`] of each path, in order (children before their directory), one
    /// result per path.
    async fn remove_batch(&self, paths: Vec<RelPath>) -> Vec<MirrorResult<()>> {
        let n = paths.len();
        let mut out: Vec<MirrorResult<()>> = self
            .write(paths.into_iter().map(WriteOp::Remove).collect())
            .await
            .into_iter()
            .map(|r| r.map(|_| ()))
            .collect();
        out.resize_with(n, || {
            Err(MirrorError::Corrupt {
                location: self.location(),
                what: "write".into(),
                reason: "the backend answered fewer results than operations (a bug)".into(),
            })
        });
        out
    }

    /// [`WriteOp::SetMeta`].
    ///
    /// # Errors
    /// As [`Mirror::write`].
    async fn set_meta(&self, path: &RelPath, meta: FileMeta) -> MirrorResult<RemoteStat> {
        let op = WriteOp::SetMeta {
            path: path.clone(),
            meta,
        };
        let r = only(|| self.location(), self.write(vec![op]).await);
        stat_of(|| self.location(), path, r)
    }

    /// [`StateStore::commit_state`] of one file.
    ///
    /// # Errors
    /// As [`StateStore::commit_state`].
    async fn write_state(&self, name: &str, bytes: &[u8]) -> MirrorResult<()> {
        self.commit_state(&[(name, bytes)], &[]).await
    }

    /// [`StateStore::commit_state`] removing one file.
    ///
    /// # Errors
    /// As [`StateStore::commit_state`].
    async fn remove_state(&self, name: &str) -> MirrorResult<()> {
        self.commit_state(&[], &[name]).await
    }
}

impl<M: Mirror + ?Sized> MirrorExt for M {}

/// [`StateStore`] over any [`Mirror`]'s data operations, for a backend without a better place:
/// `files` is a mirror of the same backend rooted at the state directory (for `dir`, the root's
/// `.briefcase/`; for an SFTP backend, the same connection with that base path), so each state
/// file is a plain file there, written with [`WriteOp::Put`] (atomic and durable), read with
/// [`Mirror::read_bytes`] and listed with [`Mirror::walk`]. The data side of a backend refuses
/// `.briefcase/` paths (they are never replicated), which is why the state goes through a second
/// root rather than through reserved paths of the first. Exclusive creation needs a primitive no
/// data operation gives (`link(2)`, `O_EXCL`, SFTP's `SSH_FXF_EXCL`): it answers
/// [`MirrorError::Unsupported`], so no lease is taken, unless the backend implements
/// [`StateStore::create_state_exclusive`] itself.
#[derive(Debug)]
pub struct StateInTree<'a, M: Mirror + ?Sized> {
    files: &'a M,
}

impl<'a, M: Mirror + ?Sized> StateInTree<'a, M> {
    /// The state store whose files are the top-level files of `files`.
    pub fn new(files: &'a M) -> Self {
        StateInTree { files }
    }

    fn path(&self, name: &str) -> MirrorResult<RelPath> {
        if name.contains('/') || name.starts_with(TMP_PREFIX) {
            return Err(MirrorError::Unsafe {
                location: self.files.location(),
                path: name.to_string(),
                reason: "not a state file name".into(),
            });
        }
        RelPath::new(name).map_err(|source| MirrorError::InvalidPath {
            location: self.files.location(),
            path: name.to_string(),
            source,
        })
    }

    /// [`StateStore::read_state`].
    ///
    /// # Errors
    /// As [`StateStore::read_state`].
    pub async fn read(&self, name: &str) -> MirrorResult<Option<Vec<u8>>> {
        let p = self.path(name)?;
        let limit = (state::MAX_STATE_BYTES as u64).saturating_add(64);
        match self.files.read_bytes(&p, limit).await {
            Ok(b) => Ok(Some(b)),
            Err(MirrorError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// [`StateStore::commit_state`]: one durable write per file, in order, then the removals.
    ///
    /// # Errors
    /// As [`StateStore::commit_state`].
    pub async fn commit(&self, write: &[(&str, &[u8])], remove: &[&str]) -> MirrorResult<()> {
        for (name, bytes) in write {
            let op = WriteOp::Put(PutItem {
                path: self.path(name)?,
                source: PutSource::Bytes(bytes.to_vec()),
                meta: FileMeta {
                    mode: 0o600,
                    mtime_ns: 0,
                },
                expect: None,
                chunks: None,
            });
            only(|| self.files.location(), self.files.write(vec![op]).await)?;
        }
        let mut ops = Vec::with_capacity(remove.len());
        for name in remove {
            ops.push(WriteOp::Remove(self.path(name)?));
        }
        for r in self.files.write(ops).await {
            r?;
        }
        Ok(())
    }

    /// [`StateStore::list_state`].
    ///
    /// # Errors
    /// As [`StateStore::list_state`].
    pub async fn list(&self) -> MirrorResult<Vec<String>> {
        Ok(self
            .files
            .walk(None, Detail::FileNames)
            .await?
            .into_iter()
            .filter(|s| s.path.parent().is_none())
            .map(|s| String::from_utf8_lossy(s.path.file_name()).into_owned())
            .filter(|n| !n.starts_with(TMP_PREFIX))
            .collect())
    }
}
