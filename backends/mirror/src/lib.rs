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

/// Writes `bytes` to a new local temp file (for defaults that need a file to read from).
fn spill(bytes: &[u8]) -> std::io::Result<tempfile::NamedTempFile> {
    use std::io::Write;
    let mut tmp = tempfile::NamedTempFile::new()?;
    tmp.write_all(bytes)?;
    tmp.flush()?;
    Ok(tmp)
}

/// Copies the file at `source` to a local temp file; `None` when what was read does not hash to
/// `want` (the file changed while it was read).
fn spill_checked(
    source: &Path,
    want: ContentHash,
) -> std::io::Result<Option<tempfile::NamedTempFile>> {
    use std::io::Write;
    let mut tmp = tempfile::NamedTempFile::new()?;
    let mut r = HashingReader::new(std::fs::File::open(source)?);
    std::io::copy(&mut r, &mut tmp)?;
    tmp.flush()?;
    Ok((r.hash() == want).then_some(tmp))
}

pub use error::{MirrorError, MirrorResult};
pub use model::{
    ChunkRef, ContentHash, Entry, EntryKind, FolderId, KnowledgeVector, MirrorState, Osn,
    ReplicaId, Stamp, VectorOrdering, VersionVector,
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

/// A mirror backend: a place that stores one replica's data and state.
///
/// All paths are [`RelPath`]s, so a backend never sees `..` or an absolute path; a backend must
/// still refuse to follow symlinks inside its root ([`fsutil::resolve`] does this for local
/// disks). Writes are atomic: a reader sees the old content or the new, never a mix. Optional
/// operations return [`MirrorError::Unsupported`] by default.
#[async_trait::async_trait]
pub trait Mirror: Send + Sync + std::fmt::Debug {
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

    /// Reads a state file from the state directory (`state.0`, …). `Ok(None)` when absent.
    ///
    /// # Errors
    /// I/O errors; [`MirrorError::Offline`] when the root or marker vanished.
    async fn read_meta(&self, name: &str) -> MirrorResult<Option<Vec<u8>>>;

    /// Writes a state file atomically and durably (temp, fsync, rename, fsync dir).
    ///
    /// # Errors
    /// I/O errors; [`MirrorError::Offline`] when the root or marker vanished.
    async fn write_meta(&self, name: &str, bytes: &[u8]) -> MirrorResult<()>;

    /// Writes several state files in order, each atomically and durably, like as many
    /// [`Mirror::write_meta`] calls (so a crash leaves a prefix of them written). A backend may
    /// make them durable together: the stick commits them in one catalog commit (none or all).
    /// The incremental state writes its segment and its root with one call.
    ///
    /// # Errors
    /// As [`Mirror::write_meta`].
    async fn write_meta_many(&self, files: &[(&str, &[u8])]) -> MirrorResult<()> {
        for (name, bytes) in files {
            self.write_meta(name, bytes).await?;
        }
        Ok(())
    }

    /// Removes a state file; succeeds when it is already absent. Lets the incremental state
    /// ([`state`]) drop segments no generation refers to any more.
    ///
    /// # Errors
    /// I/O errors; [`MirrorError::Offline`]; [`MirrorError::Unsupported`] by default.
    async fn remove_meta(&self, name: &str) -> MirrorResult<()> {
        Err(MirrorError::Unsupported {
            location: self.location(),
            what: format!("removing state files ({name})"),
        })
    }

    /// Names of all state files (not temp files, not the folder marker), in any order.
    ///
    /// # Errors
    /// I/O errors; [`MirrorError::Offline`]; [`MirrorError::Unsupported`] by default.
    async fn list_meta(&self) -> MirrorResult<Vec<String>> {
        Err(MirrorError::Unsupported {
            location: self.location(),
            what: "listing state files".into(),
        })
    }

    /// Creates the state file `name` holding `bytes` only if no file of that name exists: of
    /// several processes trying at once, on this machine or others sharing the medium, exactly
    /// one gets `Ok(true)`; the others get `Ok(false)`. Not made durable (a crash may lose it).
    /// A reader may briefly see the file empty where the medium has no hard links (FAT). Serves
    /// the mirror lease (`briefcase::reconcile::lease`): state files are written by one machine
    /// at a time.
    ///
    /// # Errors
    /// I/O errors; [`MirrorError::Offline`]; [`MirrorError::Unsupported`] by default (a medium
    /// that is used by one machine at a time, such as the stick).
    async fn create_meta_exclusive(&self, name: &str, bytes: &[u8]) -> MirrorResult<bool> {
        let _ = bytes;
        Err(MirrorError::Unsupported {
            location: self.location(),
            what: format!("creating state files exclusively ({name})"),
        })
    }

    /// Lists the whole data tree (not the state directory nor temp files), parents before children.
    ///
    /// # Errors
    /// I/O errors; [`MirrorError::InvalidPath`] for a name that cannot be a [`RelPath`].
    async fn list(&self) -> MirrorResult<Vec<RemoteStat>>;

    /// Lists what is below the directory `dir` (not `dir` itself), parents before children, like
    /// [`Mirror::list`]; empty when `dir` is absent or not a directory. Lets a watcher's hint
    /// cost the size of a subtree, not of the mirror. The default filters [`Mirror::list`].
    ///
    /// # Errors
    /// As [`Mirror::list`]; [`MirrorError::Unsafe`] when a parent of `dir` is a symlink.
    async fn list_under(&self, dir: &RelPath) -> MirrorResult<Vec<RemoteStat>> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter(|s| s.path != *dir && s.path.starts_with(dir))
            .collect())
    }

    /// Paths of the files below the directory `dir`, names only, *including* temp files (a
    /// layer sweeping what an interrupted write left); empty when `dir` is absent. Cheaper than
    /// [`Mirror::list_under`] where the backend can skip a stat per entry (`dir` reads the
    /// directory entries' types). The default takes the files of `list_under`.
    ///
    /// # Errors
    /// As [`Mirror::list_under`].
    async fn list_file_names_under(&self, dir: &RelPath) -> MirrorResult<Vec<RelPath>> {
        Ok(self
            .list_under(dir)
            .await?
            .into_iter()
            .filter(|s| s.kind == EntryKind::File)
            .map(|s| s.path)
            .collect())
    }

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

    /// Atomically replaces (or creates) the file at `path` with the content of the local file
    /// `source`, then sets `meta`. Parent directories must exist.
    ///
    /// # Errors
    /// [`MirrorError::Refused`] when the medium cannot hold it; [`MirrorError::Unsafe`]; I/O errors.
    async fn put(&self, path: &RelPath, source: &Path, meta: FileMeta) -> MirrorResult<RemoteStat>;

    /// [`Mirror::put`] for many files, with the same guarantee for each (a reader and a crash see
    /// a file's old or new content, never a mix); returns one result per item, in order, once
    /// all written ones are durable. A backend may amortise durability over the batch (`dir`
    /// flushes the temp files with one `syncfs(2)` and each directory once, instead of two
    /// fsyncs per file); the default calls `put` for each item.
    ///
    /// [`PutSource::Bytes`] items are written to a local temp file first by the default; a
    /// backend that can write bytes directly should override this.
    async fn put_batch(&self, items: Vec<PutItem>) -> Vec<MirrorResult<RemoteStat>> {
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            out.push(match &it.source {
                PutSource::File(source) => match it.expect {
                    None => self.put(&it.path, source, it.meta).await,
                    Some(want) => match spill_checked(source, want) {
                        Ok(Some(tmp)) => self.put(&it.path, tmp.path(), it.meta).await,
                        Ok(None) => Err(MirrorError::SourceChanged {
                            location: self.location(),
                            path: it.path.to_string(),
                        }),
                        Err(e) => Err(MirrorError::Io {
                            location: self.location(),
                            op: "read local source",
                            path: source.display().to_string(),
                            source: e,
                        }),
                    },
                },
                PutSource::Bytes(bytes) | PutSource::Blob(bytes) => match spill(bytes) {
                    Ok(tmp) => self.put(&it.path, tmp.path(), it.meta).await,
                    Err(e) => Err(MirrorError::Io {
                        location: self.location(),
                        op: "stage in a local temp file",
                        path: it.path.to_string(),
                        source: e,
                    }),
                },
            });
        }
        out
    }

    /// Reads the whole file at `path` into memory. Files larger than `limit` bytes are refused
    /// with [`MirrorError::Corrupt`] (a layer reading its own small files: state, chunks). The
    /// default goes through [`Mirror::get`] and a local temp file.
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

    /// Creates a directory (parents must exist); succeeds if it already is one.
    ///
    /// # Errors
    /// I/O errors; [`MirrorError::Unsafe`].
    async fn mkdir(&self, path: &RelPath, meta: FileMeta) -> MirrorResult<RemoteStat>;

    /// Creates (or atomically replaces) a symlink with the given target bytes. Never follows it.
    ///
    /// # Errors
    /// [`MirrorError::Unsupported`] where `capabilities().symlinks` is false; I/O errors.
    async fn symlink(&self, path: &RelPath, target: &[u8]) -> MirrorResult<RemoteStat> {
        let _ = target;
        Err(MirrorError::Unsupported {
            location: self.location(),
            what: format!("symlinks ({path})"),
        })
    }

    /// Renames `from` to `to`, replacing a file at `to`.
    ///
    /// # Errors
    /// [`MirrorError::Unsupported`] where `capabilities().rename` is false; I/O errors.
    async fn rename(&self, from: &RelPath, to: &RelPath) -> MirrorResult<RemoteStat> {
        let _ = to;
        Err(MirrorError::Unsupported {
            location: self.location(),
            what: format!("rename ({from})"),
        })
    }

    /// Removes a file, symlink or empty directory. Succeeds when already absent.
    ///
    /// # Errors
    /// I/O errors (a non-empty directory is an error).
    async fn remove(&self, path: &RelPath) -> MirrorResult<()>;

    /// [`Mirror::remove`] for many paths, in order (children before their directory), with one
    /// result per path; returns once the removals are durable. A backend may amortise that (`dir`
    /// fsyncs each directory once, not once per removed file: ~6.6 ms each on ext4 here). The
    /// default calls `remove` for each.
    async fn remove_batch(&self, paths: Vec<RelPath>) -> Vec<MirrorResult<()>> {
        let mut out = Vec::with_capacity(paths.len());
        for p in &paths {
            out.push(self.remove(p).await);
        }
        out
    }

    /// Sets mode and mtime of an existing path.
    ///
    /// # Errors
    /// [`MirrorError::NotFound`]; I/O errors.
    async fn set_meta(&self, path: &RelPath, meta: FileMeta) -> MirrorResult<RemoteStat>;

    /// Removes the `.briefcase-tmp-*` files an interrupted write left behind (a process killed
    /// between writing a temp file and renaming it, invariant 2), in the data tree and the state
    /// directory, and returns how many were removed. Called at the start of every sync. Backends
    /// whose writes leave nothing behind keep the default (nothing to do).
    ///
    /// # Errors
    /// I/O errors; [`MirrorError::Offline`] when the root or marker vanished.
    async fn remove_temp_files(&self) -> MirrorResult<usize> {
        Ok(0)
    }
}
