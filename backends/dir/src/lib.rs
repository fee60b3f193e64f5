//! The `dir` backend: a mirror that is a plain directory tree (a NAS share mounted over NFS/SMB,
//! a second disk, a plain USB stick), target syntax `/path` or `dir:/path`.
//!
//! Layout: the data is a plain, readable tree under the root; briefcase's own state lives in
//! `ROOT/.briefcase/` (the marker `folder-id`, holding the folder ID as 32 hex digits and a
//! newline, and the state generations `state.0`/`state.1`).
//!
//! Invariants kept here:
//! - **Atomic apply** (2): every file is written to `.briefcase-tmp-*` in the same directory,
//!   fsynced with its mode and mtime, renamed over the target, and the directory fsynced
//!   ([`briefcase_mirror::fsutil::replace_with`]).
//! - **An absent root is not a deletion** (4): every operation except [`Mirror::probe`] and
//!   [`Mirror::init`] first checks the marker and answers [`MirrorError::Offline`] when the root or
//!   marker is gone (an unmounted share, a stick not inserted), so an empty mount point is never
//!   read as "everything was deleted" and nothing is written into it.
//! - **Untrusted input is checked** (6): every path is resolved under the root held open with
//!   [`briefcase_mirror::beneath::Beneath`] (`openat2` with `RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS`), and each operation reaches its entry through the parent directory
//!   handle that resolution returned, so a parent swapped for a symlink between the check and the
//!   write (`RENAME_EXCHANGE`) is never followed; a symlink (or file) among the parents is refused
//!   with [`MirrorError::Unsafe`], and `list` opens each directory the same way.
//!
//! On FAT and exFAT (detected with `statfs` and `/proc/self/mountinfo`, or forced with
//! [`DirMirror::with_profile`]) the mirror follows [`Profile::Fat`]/[`Profile::ExFat`]: names are
//! mapped with [`fatname`], case-only collisions and files over 4 GiB − 1 (FAT32) are refused
//! before anything is written, and permission bits and symlinks are declared unsupported.
//! Blocking file-system work runs in `tokio::task::spawn_blocking`.
#![deny(missing_docs)]

pub mod fatname;
mod kind;
pub mod profile;

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use briefcase_mirror::beneath::{Anchored, Beneath, ParentDir};
use briefcase_mirror::fsutil::{self, ResolveError};
use briefcase_mirror::{
    split_runs, Capabilities, ContentHash, Detail, EntryKind, FileMeta, FolderId, HashingReader,
    Mirror, MirrorError, MirrorResult, Presence, PutItem, PutSource, RelPath, RemoteStat, Run,
    StateStore, WriteOp, WriteResult, STATE_DIR, TMP_PREFIX,
};

pub use kind::{DirKind, KIND};
pub use profile::{Detected, Profile};

/// Name of the folder marker inside [`STATE_DIR`].
pub const MARKER: &str = "folder-id";

/// A mirror in a local directory. Cheap to clone.
#[derive(Clone, Debug)]
pub struct DirMirror {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    location: String,
    forced: Option<Profile>,
    /// Storage under a layer (see [`DirMirror::storage`]): no folder marker.
    storage: bool,
    /// Last detection, keyed by the root's device number (a stick re-plugged elsewhere changes it).
    detected: Mutex<Option<(u64, Detected)>>,
    /// Directories in which [`Mirror::mkdir`] made a directory not yet made durable: they are
    /// fsynced (one `syncfs` for many) before the next state file is written, the engine's
    /// commit point. A first sync of 10,000 directories made 10,000 fsyncs (~6 ms each on a
    /// disk: a minute) before this.
    unsynced_dirs: Mutex<std::collections::BTreeSet<PathBuf>>,
}

impl DirMirror {
    /// A mirror rooted at `root` (made absolute against the current directory). The file-system
    /// profile is detected when the root exists, and again whenever its device changes. No I/O
    /// happens here; nothing is created until [`Mirror::init`].
    pub fn new(root: PathBuf) -> DirMirror {
        Self::build(root, None, false)
    }

    /// Plain storage for a layer that keeps its own marker and state in the tree (the encrypted
    /// stick over a mount point): online whenever `root` is a directory, no `.briefcase` marker
    /// is read or written, and [`Mirror::probe`] never answers `Marked`. The layer must check
    /// its own marker before writing (invariant 4). The file-system profile still applies.
    pub fn storage(root: PathBuf) -> DirMirror {
        Self::build(root, None, true)
    }

    /// A mirror with a forced profile instead of detection, e.g. to exercise the FAT rules on
    /// ext4 in tests, or for a FAT medium behind a network file system that hides its type.
    pub fn with_profile(root: PathBuf, profile: Profile) -> DirMirror {
        Self::build(root, Some(profile), false)
    }

    fn build(root: PathBuf, forced: Option<Profile>, storage: bool) -> DirMirror {
        let root = std::path::absolute(&root).unwrap_or(root);
        let location = format!("dir:{}", root.display());
        DirMirror {
            inner: Arc::new(Inner {
                root,
                location,
                forced,
                storage,
                detected: Mutex::new(None),
                unsynced_dirs: Mutex::new(Default::default()),
            }),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The profile in effect now (forced, or detected on the root's file system; [`Profile::Posix`]
    /// while the root does not exist). Does a `stat` and, on a new device, a `statfs`.
    pub fn profile(&self) -> Profile {
        self.inner.detected().profile
    }

    async fn run<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Inner) -> MirrorResult<T> + Send + 'static,
    ) -> MirrorResult<T> {
        let inner = self.inner.clone();
        let task = tokio::task::spawn_blocking(move || f(&inner));
        let Ok(joined) = tokio::time::timeout(OP_TIMEOUT, task).await else {
            // The thread stays blocked in the kernel; the caller goes on (transient error:
            // nothing is given up, the next sync retries).
            return Err(MirrorError::Io {
                location: self.inner.location.clone(),
                op,
                path: String::new(),
                source: io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no answer within {} s; is the share hung or the disk failing? The sync was abandoned and is retried later; nothing is lost",
                        OP_TIMEOUT.as_secs()
                    ),
                ),
            });
        };
        match joined {
            Ok(r) => r,
            Err(e) => Err(MirrorError::Io {
                location: self.inner.location.clone(),
                op,
                path: String::new(),
                source: io::Error::other(format!("worker thread failed: {e}")),
            }),
        }
    }
}

/// Longest time one operation (a batch included: up to 1,024 files or 64 MiB) may take before
/// the sync gives up on the medium (a hung NFS/SMB share, a dying USB stick): the daemon's folder
/// task must never hang on it. Generous, so that a slow but working medium is never cut off.
pub const OP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// `e` (which stopped a whole batch) as the result of each of its `n` items, each the same
/// error ([`MirrorError::duplicate`]): offline stays offline (transient: nothing is given up), a
/// damaged or unsafe mirror stays so.
fn fan_out<T>(n: usize, e: &MirrorError) -> Vec<MirrorResult<T>> {
    (0..n).map(|_| Err(e.duplicate())).collect()
}

/// Copies `src` into `f`; with `expect`, fails (setting `changed`) when what was read does not
/// hash to it, so the caller stores nothing ([`PutItem::expect`]).
fn copy_checked(
    src: &mut dyn io::Read,
    f: &mut File,
    expect: Option<ContentHash>,
    changed: &mut bool,
) -> io::Result<()> {
    // 256 KiB at a time: a thirty-second of the syscalls of io::copy's 8 KiB, and blake3 gets
    // long runs of 1 KiB chunks to hash side by side. One buffer per thread, not per file.
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let pump = |r: &mut dyn io::Read, f: &mut File| -> io::Result<()> {
        BUF.with_borrow_mut(|buf| {
            if buf.len() < 256 << 10 {
                buf.resize(256 << 10, 0);
            }
            loop {
                let n = match r.read(buf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                f.write_all(buf.get(..n).unwrap_or_default())?;
            }
        })
    };
    let Some(want) = expect else {
        return pump(src, f);
    };
    let mut r = HashingReader::new(src);
    pump(&mut r, f)?;
    if r.hash() != want {
        *changed = true;
        return Err(io::Error::other("the source changed while it was read"));
    }
    Ok(())
}

/// Reason given for a file over FAT's limit.
fn too_big_for_fat(len: u64) -> String {
    format!(
        "it is {len} bytes and FAT cannot hold files over 4 GiB (4294967295 bytes); use a `stick:` \
         mirror (which stores files as chunks) or reformat the medium as exFAT"
    )
}

/// Reason given when the root or its marker is missing.
fn offline_reason() -> String {
    format!("its folder marker {STATE_DIR}/{MARKER} is missing; is the share mounted / the stick inserted?")
}

/// Whether an error while looking at a path inside the mirror means "no such path" (a parent
/// that is gone or is a file counts as absent too).
fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Whether an error while looking at the root means "the medium is not there".
fn is_gone(e: &io::Error) -> bool {
    is_absent(e)
        || matches!(
            e.raw_os_error(),
            Some(libc::ENOTCONN | libc::EIO | libc::ENODEV | libc::ENXIO)
        )
}

/// Validates a state file name: `[a-z0-9._-]+`, not `.`/`..`, not a temp name, not the marker.
fn meta_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
        && name != "."
        && name != ".."
        && name != MARKER
        && !name.starts_with(TMP_PREFIX)
}

impl Inner {
    fn detected(&self) -> Detected {
        if let Some(p) = self.forced {
            return Detected::plain(p);
        }
        let dev = fs::metadata(&self.root)
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::dev(&m));
        let mut cache = self.detected.lock().unwrap_or_else(|p| p.into_inner());
        match (dev, *cache) {
            (Some(dev), Some((d, det))) if d == dev => det,
            (Some(_), _) => match profile::detect(&self.root) {
                Ok((dev, det)) => {
                    if det.profile != Profile::Posix {
                        tracing::debug!(location = %self.location, ?det, "file-system profile detected");
                    }
                    *cache = Some((dev, det));
                    det
                }
                Err(e) => {
                    tracing::warn!(location = %self.location, error = %e, "cannot detect the file system; assuming POSIX");
                    Detected::plain(Profile::Posix)
                }
            },
            (None, cached) => cached
                .map(|(_, d)| d)
                .unwrap_or(Detected::plain(Profile::Posix)),
        }
    }

    fn io(&self, op: &'static str, path: impl std::fmt::Display, e: io::Error) -> MirrorError {
        MirrorError::io(&self.location, op, path, e)
    }

    /// A failed write: [`MirrorError::SourceChanged`] when the source no longer held the expected
    /// content, else the I/O error.
    fn write_error(&self, rel: &RelPath, e: io::Error, changed: bool) -> MirrorError {
        if changed {
            MirrorError::SourceChanged {
                location: self.location.clone(),
                path: rel.to_string(),
            }
        } else {
            self.io("write", rel, e)
        }
    }

    fn offline(&self) -> MirrorError {
        MirrorError::Offline {
            location: self.location.clone(),
            reason: offline_reason(),
        }
    }

    fn marker_path(&self) -> PathBuf {
        self.root.join(STATE_DIR).join(MARKER)
    }

    /// Opens the root, under which every path is then resolved without races
    /// ([`Beneath`]), when it carries its marker (a real file in a real `.briefcase` directory).
    fn check_online(&self) -> MirrorResult<Beneath> {
        self.check_marked()?;
        Beneath::open(&self.root).map_err(|e| {
            if is_gone(&e) {
                self.offline()
            } else {
                self.io("open", "", e)
            }
        })
    }

    fn check_marked(&self) -> MirrorResult<()> {
        if self.storage {
            return match fs::symlink_metadata(&self.root) {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(_) => Err(self.unsafe_("", "the root is not a directory")),
                Err(e) if is_gone(&e) => Err(MirrorError::Offline {
                    location: self.location.clone(),
                    reason: "it is not there; is the stick inserted / the disk mounted?".into(),
                }),
                Err(e) => Err(self.io("stat", "", e)),
            };
        }
        let state_dir = self.root.join(STATE_DIR);
        match fs::symlink_metadata(&state_dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(self.unsafe_(
                    STATE_DIR,
                    "the state directory is a symlink or not a directory",
                ))
            }
            Err(e) if is_gone(&e) => return Err(self.offline()),
            Err(e) => return Err(self.io("stat", STATE_DIR, e)),
        }
        match fs::symlink_metadata(self.marker_path()) {
            Ok(m) if m.is_file() => Ok(()),
            Ok(m) => Err(self.unsafe_(
                format!("{STATE_DIR}/{MARKER}"),
                format!(
                    "the folder marker is {}, not a regular file; it was not read. Someone or \
                     something put it there: move {}/{STATE_DIR} away and run `briefcase mirror add` again",
                    fsutil::type_name(&m),
                    self.root.display()
                ),
            )),
            Err(e) if is_gone(&e) => Err(self.offline()),
            Err(e) => Err(self.io("stat", format!("{STATE_DIR}/{MARKER}"), e)),
        }
    }

    fn unsafe_(&self, path: impl std::fmt::Display, reason: impl Into<String>) -> MirrorError {
        MirrorError::Unsafe {
            location: self.location.clone(),
            path: path.to_string(),
            reason: reason.into(),
        }
    }

    fn refused(&self, path: &RelPath, reason: impl Into<String>) -> MirrorError {
        MirrorError::Refused {
            location: self.location.clone(),
            path: path.display(),
            reason: reason.into(),
        }
    }

    /// The on-disk form of `rel` under this profile.
    fn on_disk(&self, det: Detected, rel: &RelPath) -> MirrorResult<RelPath> {
        if !det.profile.is_fat_like() {
            return Ok(rel.clone());
        }
        let mut out = Vec::with_capacity(rel.as_bytes().len());
        for (i, c) in rel.components().enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            let enc = fatname::encode(c).map_err(|e| self.refused(rel, e.to_string()))?;
            out.extend_from_slice(&enc);
        }
        RelPath::new(out).map_err(|e| {
            self.refused(
                rel,
                format!("after mapping the characters FAT forbids, the name is unusable: {e}"),
            )
        })
    }

    /// Resolves `rel` (its on-disk form, and the entry anchored in its held parent directory),
    /// refusing reserved paths and symlinked parents.
    fn full(&self, b: &Beneath, det: Detected, rel: &RelPath) -> MirrorResult<(RelPath, Anchored)> {
        if rel.is_reserved() {
            return Err(self.unsafe_(
                rel,
                "it is briefcase's own state or temp file, not data; refusing to touch it",
            ));
        }
        let disk = self.on_disk(det, rel)?;
        match b.resolve(&disk) {
            Ok(p) => Ok((disk, p)),
            Err(e @ ResolveError::UnsafeParent(_)) => Err(self.unsafe_(rel, e.to_string())),
            Err(ResolveError::Io(e)) => Err(self.io("resolve", rel, e)),
        }
    }

    /// Checks, before creating `rel` (on disk `disk`), the rules of FAT-like media: ASCII-only
    /// drivers, and no sibling whose name differs only in case (except `allow`, the on-disk name
    /// of the source of a rename in the same directory).
    fn check_new_name(
        &self,
        det: Detected,
        rel: &RelPath,
        disk: &RelPath,
        full: &Anchored,
        allow: Option<&[u8]>,
    ) -> MirrorResult<()> {
        if !det.profile.is_fat_like() {
            return Ok(());
        }
        if det.fusefat && !disk.file_name().is_ascii() {
            return Err(self.refused(
                rel,
                "this FAT medium is mounted with the fusefat driver, which stores only ASCII names; mount it with \
                 the kernel vfat/exfat driver, or use a `stick:` mirror",
            ));
        }
        let name = disk.file_name();
        let folded = fatname::fold(name);
        let rd = match fs::read_dir(full.parent()) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(self.io(
                    "list",
                    rel.parent().map(|p| p.display()).unwrap_or_default(),
                    e,
                ))
            }
        };
        for de in rd {
            let de = de.map_err(|e| self.io("list", rel, e))?;
            let other = de.file_name();
            let other = other.as_bytes();
            if other == name || fatname::fold(other) != folded {
                continue;
            }
            if allow.is_some_and(|a| a == other) {
                continue;
            }
            let existing = String::from_utf8_lossy(&fatname::decode(other)).into_owned();
            return Err(self.refused(
                rel,
                format!(
                    "it differs only in case from the existing `{existing}` in the same folder, and FAT/exFAT \
                     cannot hold both; rename one of them"
                ),
            ));
        }
        Ok(())
    }

    fn stat_of(&self, rel: &RelPath, full: &Path) -> MirrorResult<RemoteStat> {
        let m = fs::symlink_metadata(full).map_err(|e| self.io("stat", rel, e))?;
        self.stat_from(rel, full, &m)?.ok_or_else(|| {
            self.io(
                "stat",
                rel,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a special file (fifo, socket or device)",
                ),
            )
        })
    }

    fn stat_from(
        &self,
        rel: &RelPath,
        full: &Path,
        m: &fs::Metadata,
    ) -> MirrorResult<Option<RemoteStat>> {
        fsutil::remote_stat(rel.clone(), full, m).map_err(|e| self.io("readlink", rel, e))
    }

    fn set_meta_at(&self, det: Detected, full: &Path, meta: FileMeta) -> io::Result<()> {
        if det.capabilities().modes {
            fsutil::apply_meta(full, meta)
        } else {
            fsutil::set_mtime(full, meta.mtime_ns)
        }
    }

    /// Sets the mtime again after a rename that reset it (fusefat), durably.
    fn reapply_mtime(
        &self,
        rel: &RelPath,
        full: &Path,
        mtime_ns: i64,
    ) -> MirrorResult<fs::Metadata> {
        fsutil::set_mtime(full, mtime_ns).map_err(|e| self.io("set metadata", rel, e))?;
        File::open(full)
            .and_then(|f| f.sync_all())
            .map_err(|e| self.io("fsync", rel, e))?;
        fs::symlink_metadata(full).map_err(|e| self.io("stat", rel, e))
    }

    fn fsync_parent(&self, rel: &RelPath, full: &Anchored) -> MirrorResult<()> {
        fsutil::fsync_dir(full.parent()).map_err(|e| self.io("fsync", rel, e))
    }

    // ---- the operations, run on a blocking thread ----

    fn probe(&self) -> MirrorResult<Presence> {
        match fs::symlink_metadata(&self.root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(self.unsafe_("", "the mirror root is not a directory")),
            Err(e) if is_gone(&e) => return Ok(Presence::Absent),
            Err(e) => return Err(self.io("stat", "", e)),
        }
        if self.storage {
            let mut rd = fs::read_dir(&self.root).map_err(|e| self.io("list", "", e))?;
            return Ok(if rd.next().is_some() {
                Presence::Unmarked
            } else {
                Presence::Empty
            });
        }
        match fsutil::read_bounded(&self.marker_path(), fsutil::MAX_MARKER_FILE) {
            Ok(bytes) => return self.parse_marker(&bytes).map(Presence::Marked),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(self.bad_state_file(MARKER, &e))
            }
            Err(e) if is_gone(&e) => return Ok(Presence::Absent),
            Err(e) => return Err(self.io("read", format!("{STATE_DIR}/{MARKER}"), e)),
        }
        let rd = fs::read_dir(&self.root).map_err(|e| self.io("list", "", e))?;
        for de in rd {
            let de = de.map_err(|e| self.io("list", "", e))?;
            let name = de.file_name();
            let name = name.as_bytes();
            if name != STATE_DIR.as_bytes() && !name.starts_with(TMP_PREFIX.as_bytes()) {
                return Ok(Presence::Unmarked);
            }
        }
        Ok(Presence::Empty)
    }

    /// A state file (or the marker) that is not what it must be: a FIFO, a device, a symlink,
    /// a directory, or larger than the format allows. Never read, never waited for.
    fn bad_state_file(&self, name: &str, e: &io::Error) -> MirrorError {
        MirrorError::Corrupt {
            location: self.location.clone(),
            what: format!("{STATE_DIR}/{name}"),
            reason: format!(
                "{e}; it was not read. Someone or something put it there: move {}/{STATE_DIR} away and run `briefcase mirror add` again",
                self.root.display()
            ),
        }
    }

    fn parse_marker(&self, bytes: &[u8]) -> MirrorResult<FolderId> {
        let text = std::str::from_utf8(bytes).unwrap_or("");
        let hex = text.strip_suffix('\n').unwrap_or(text);
        if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            if let Ok(id) = hex.parse::<FolderId>() {
                return Ok(id);
            }
        }
        Err(MirrorError::Corrupt {
            location: self.location.clone(),
            what: format!("{STATE_DIR}/{MARKER}"),
            reason: "it should hold a folder ID of 32 hex digits; if this directory is not a briefcase mirror, \
                     remove the .briefcase directory from it"
                .into(),
        })
    }

    fn init(&self, folder: FolderId) -> MirrorResult<()> {
        fs::create_dir_all(&self.root).map_err(|e| self.io("create", "", e))?;
        if self.storage {
            return Ok(());
        }
        let state_dir = self.root.join(STATE_DIR);
        match fs::create_dir(&state_dir) {
            Ok(()) => fsutil::fsync_dir(&self.root).map_err(|e| self.io("fsync", "", e))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(self.io("create", STATE_DIR, e)),
        }
        if !fs::symlink_metadata(&state_dir)
            .map_err(|e| self.io("stat", STATE_DIR, e))?
            .is_dir()
        {
            return Err(self.unsafe_(
                STATE_DIR,
                "the state directory is a symlink or not a directory",
            ));
        }
        let b = Beneath::open(&self.root).map_err(|e| self.io("open", "", e))?;
        let marker = self.state_file(&b, MARKER)?;
        if let Ok(bytes) = fsutil::read_bounded(marker.path(), fsutil::MAX_MARKER_FILE) {
            if let Ok(existing) = self.parse_marker(&bytes) {
                if existing == folder {
                    return Ok(());
                }
                return Err(MirrorError::Refused {
                    location: self.location.clone(),
                    path: format!("{STATE_DIR}/{MARKER}"),
                    reason: format!(
                        "this directory is already a mirror of folder {existing}; choose another directory for {folder}"
                    ),
                });
            }
        }
        fsutil::replace_bytes(marker.path(), format!("{folder}\n").as_bytes())
            .map_err(|e| self.io("write", format!("{STATE_DIR}/{MARKER}"), e))?;
        Ok(())
    }

    /// `STATE_DIR/name`, anchored in the state directory held open.
    fn state_file(&self, b: &Beneath, name: &str) -> MirrorResult<Anchored> {
        let rel = RelPath::new(format!("{STATE_DIR}/{name}"))
            .map_err(|e| self.unsafe_(format!("{STATE_DIR}/{name}"), e.to_string()))?;
        match b.resolve(&rel) {
            Ok(a) => Ok(a),
            Err(ResolveError::UnsafeParent(_)) => Err(self.unsafe_(
                STATE_DIR,
                "the state directory is a symlink or not a directory",
            )),
            Err(ResolveError::Io(e)) => Err(self.io("open", STATE_DIR, e)),
        }
    }

    fn meta_path(&self, name: &str) -> MirrorResult<Anchored> {
        if !meta_name_ok(name) {
            return Err(self.unsafe_(
                format!("{STATE_DIR}/{name}"),
                "state file names must match [a-z0-9._-]+ and not be `.`, `..`, a temp name or the marker",
            ));
        }
        let b = self.check_online()?;
        self.state_file(&b, name)
    }

    fn read_meta(&self, name: &str) -> MirrorResult<Option<Vec<u8>>> {
        let path = self.meta_path(name)?;
        match fsutil::read_bounded(path.path(), fsutil::MAX_META_FILE) {
            Ok(out) => Ok(Some(out)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(self.bad_state_file(name, &e)),
            Err(e) => Err(self.io("read", format!("{STATE_DIR}/{name}"), e)),
        }
    }

    /// A directory `rel` (on disk `disk`) was made: its entry is made durable now under a layer
    /// (the stick: nothing of ours commits later), else before the next state file.
    fn made_dir(&self, disk: &RelPath, full: &Anchored, rel: &RelPath) -> MirrorResult<()> {
        if self.storage {
            return self.fsync_parent(rel, full);
        }
        let parent = disk
            .parent()
            .map_or_else(|| self.root.clone(), |p| p.under(&self.root));
        self.unsynced_dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(parent);
        Ok(())
    }

    /// Makes the directories [`Inner::mkdir`] left unsynced durable.
    fn sync_made_dirs(&self) -> MirrorResult<()> {
        let dirs =
            std::mem::take(&mut *self.unsynced_dirs.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some((d, Some(e))) = fsutil::fsync_dirs(dirs.iter().map(PathBuf::as_path))
            .into_iter()
            .find(|(_, e)| e.is_some())
        {
            // Tried again before the next state file.
            self.unsynced_dirs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(dirs);
            return Err(self.io(
                "fsync",
                d.strip_prefix(&self.root).unwrap_or(&d).display(),
                io::Error::other(e),
            ));
        }
        Ok(())
    }

    fn write_meta(&self, name: &str, bytes: &[u8]) -> MirrorResult<()> {
        let path = self.meta_path(name)?;
        // What the state will record must be durable first (directories made since the last
        // state file).
        self.sync_made_dirs()?;
        fsutil::replace_bytes(path.path(), bytes)
            .map_err(|e| self.io("write", format!("{STATE_DIR}/{name}"), e))?;
        Ok(())
    }

    fn remove_meta(&self, name: &str) -> MirrorResult<()> {
        let path = self.meta_path(name)?;
        match fs::remove_file(path.path()) {
            Ok(()) => Ok(()),
            Err(e) if is_absent(&e) => Ok(()),
            Err(e) => Err(self.io("remove", format!("{STATE_DIR}/{name}"), e)),
        }
    }

    /// [`Mirror::create_meta_exclusive`]: the content is written to a private temp file, then
    /// hard-linked to its name (`link(2)` fails if the name exists: atomic on local file
    /// systems, NFS and SMB, and the file is never seen half written); where the medium has no
    /// hard links (FAT), created with `O_CREAT | O_EXCL` and written.
    fn create_meta_exclusive(&self, name: &str, bytes: &[u8]) -> MirrorResult<bool> {
        let target = self.meta_path(name)?;
        let shown = format!("{STATE_DIR}/{name}");
        let tmp = target
            .sibling(&fsutil::temp_name())
            .map_err(|e| self.io("write", &shown, e))?;
        let written = fsutil::create_private(tmp.path())
            .and_then(|mut f| f.write_all(bytes))
            .map_err(|e| self.io("write", &shown, e));
        let mut linked = written.and_then(|()| {
            fs::hard_link(tmp.path(), target.path()).map_err(|e| self.io("write", &shown, e))
        });
        // NFS: a LINK whose reply was lost is sent again, and the retry answers EEXIST although
        // the first one made the link. The temp file's link count tells (open(2), O_EXCL).
        if linked.is_err()
            && fs::symlink_metadata(tmp.path()).is_ok_and(|m| {
                use std::os::unix::fs::MetadataExt;
                m.nlink() == 2
            })
        {
            linked = Ok(());
        }
        let _ = fs::remove_file(tmp.path());
        match linked {
            Ok(()) => Ok(true),
            // Taken; or our temp file was swept by the holder's start-of-sync cleanup: look again.
            Err(MirrorError::Io { source, .. })
                if matches!(
                    source.kind(),
                    io::ErrorKind::AlreadyExists | io::ErrorKind::NotFound
                ) =>
            {
                Ok(false)
            }
            Err(MirrorError::Io { source, .. })
                if matches!(
                    source.raw_os_error(),
                    Some(libc::EPERM | libc::EOPNOTSUPP | libc::EMLINK)
                ) =>
            {
                match fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(target.path())
                {
                    Ok(mut f) => {
                        f.write_all(bytes)
                            .map_err(|e| self.io("write", &shown, e))?;
                        Ok(true)
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(self.io("write", &shown, e)),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn list_meta(&self) -> MirrorResult<Vec<String>> {
        let b = self.check_online()?;
        let dir = self.state_file(&b, MARKER)?;
        let rd = fs::read_dir(dir.parent()).map_err(|e| self.io("list", STATE_DIR, e))?;
        let mut out = Vec::new();
        for d in rd {
            let d = d.map_err(|e| self.io("list", STATE_DIR, e))?;
            if let Some(n) = d.file_name().to_str() {
                if meta_name_ok(n) {
                    out.push(n.to_string());
                }
            }
        }
        Ok(out)
    }

    fn read_bytes(&self, rel: &RelPath, limit: u64) -> MirrorResult<Vec<u8>> {
        let b = self.check_online()?;
        let det = self.detected();
        let (_, full) = self.full(&b, det, rel)?;
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(full.path())
            .map_err(|e| self.io("read", rel, e))?;
        let m = f.metadata().map_err(|e| self.io("stat", rel, e))?;
        if !m.is_file() {
            return Err(self.io(
                "read",
                rel,
                io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            ));
        }
        if m.len() > limit {
            return Err(MirrorError::Corrupt {
                location: self.location.clone(),
                what: rel.to_string(),
                reason: format!("{} bytes, more than the {limit} expected", m.len()),
            });
        }
        let mut out = Vec::with_capacity(m.len() as usize);
        io::Read::read_to_end(&mut io::Read::take(f, limit + 1), &mut out)
            .map_err(|e| self.io("read", rel, e))?;
        Ok(out)
    }

    fn list(&self) -> MirrorResult<Vec<RemoteStat>> {
        let b = self.check_online()?;
        self.list_from(&b, None)
    }

    fn list_under(&self, rel: &RelPath) -> MirrorResult<Vec<RemoteStat>> {
        let b = self.check_online()?;
        let det = self.detected();
        let (disk, full) = self.full(&b, det, rel)?;
        match fs::symlink_metadata(full.path()) {
            Ok(m) if m.is_dir() => self.list_from(&b, Some((disk, rel.clone()))),
            Ok(_) => Ok(Vec::new()),
            Err(e) if is_absent(&e) => Ok(Vec::new()),
            Err(e) => Err(self.io("list", rel, e)),
        }
    }

    /// The directory `disk` (on-disk form of `rel`; the root when `None`) held open for a
    /// listing; `None` when it is gone. One that became a symlink is refused.
    fn list_dir(
        &self,
        b: &Beneath,
        disk: Option<&RelPath>,
        rel: Option<&RelPath>,
    ) -> MirrorResult<Option<ParentDir>> {
        b.dir(disk).map_err(|e| match e {
            ResolveError::UnsafeParent(_) => self.unsafe_(
                rel.map(RelPath::display).unwrap_or_default(),
                "it became a symlink or a file while it was listed; refusing to follow it",
            ),
            ResolveError::Io(e) => {
                self.io("list", rel.map(RelPath::display).unwrap_or_default(), e)
            }
        })
    }

    /// Lists below the root (`start` `None`) or below the directory `start` (on-disk form,
    /// path). Each directory is opened under the root without following symlinks and listed
    /// through that handle.
    fn list_from(
        &self,
        b: &Beneath,
        start: Option<(RelPath, RelPath)>,
    ) -> MirrorResult<Vec<RemoteStat>> {
        let det = self.detected();
        let mut out = Vec::new();
        let mut stack: Vec<Option<(RelPath, RelPath)>> = vec![start];
        while let Some(at) = stack.pop() {
            let (disk_prefix, prefix) = match &at {
                Some((d, p)) => (Some(d), Some(p)),
                None => (None, None),
            };
            let shown = prefix.map(|p| p.display()).unwrap_or_default();
            let Some(dir) = self.list_dir(b, disk_prefix, prefix)? else {
                continue; // removed meanwhile
            };
            let rd = match fs::read_dir(dir.path()) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound && prefix.is_some() => continue, // removed meanwhile
                Err(e) if prefix.is_none() && is_gone(&e) => return Err(self.offline()),
                Err(e) => return Err(self.io("list", shown, e)),
            };
            for de in rd {
                let de = de.map_err(|e| self.io("list", &shown, e))?;
                let os_name = de.file_name();
                let stored = os_name.as_bytes();
                if (prefix.is_none() && stored == STATE_DIR.as_bytes())
                    || stored.starts_with(TMP_PREFIX.as_bytes())
                {
                    continue;
                }
                let name = if det.profile.is_fat_like() {
                    fatname::decode(stored)
                } else {
                    stored.to_vec()
                };
                let rel = match prefix {
                    None => RelPath::new(name.clone()),
                    Some(p) => p.join(&name),
                };
                let rel = rel.map_err(|source| MirrorError::InvalidPath {
                    location: self.location.clone(),
                    path: if shown.is_empty() {
                        String::from_utf8_lossy(&name).into_owned()
                    } else {
                        format!("{shown}/{}", String::from_utf8_lossy(&name))
                    },
                    source,
                })?;
                if rel.is_reserved() {
                    continue;
                }
                let full = de.path();
                // `fstatat` through the directory handle being read: the entry's name only, never
                // followed, and no walk of its path again.
                let m = match de.metadata() {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(self.io("stat", &rel, e)),
                };
                let Some(st) = self.stat_from(&rel, &full, &m)? else {
                    continue;
                };
                if st.kind == EntryKind::Dir {
                    let disk = match disk_prefix {
                        None => RelPath::new(stored.to_vec()),
                        Some(p) => p.join(stored),
                    };
                    let disk = disk.map_err(|source| MirrorError::InvalidPath {
                        location: self.location.clone(),
                        path: rel.display(),
                        source,
                    })?;
                    stack.push(Some((disk, rel.clone())));
                }
                out.push(st);
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Files below `rel` by their directory entries' types (no stat unless the file system
    /// does not report a type), temp files included.
    fn list_file_names_under(&self, rel: &RelPath) -> MirrorResult<Vec<RelPath>> {
        let b = self.check_online()?;
        let det = self.detected();
        let (disk, _) = self.full(&b, det, rel)?;
        let mut out = Vec::new();
        let mut stack = vec![(disk, rel.clone())];
        while let Some((disk_prefix, prefix)) = stack.pop() {
            let dir = match b.dir(Some(&disk_prefix)) {
                Ok(Some(d)) => d,
                Ok(None) => continue,
                // Not a directory (any more): no files under it.
                Err(ResolveError::UnsafeParent(_)) => continue,
                Err(ResolveError::Io(e)) => return Err(self.io("list", &prefix, e)),
            };
            let rd = match fs::read_dir(dir.path()) {
                Ok(rd) => rd,
                Err(e) if is_absent(&e) => continue,
                Err(e) => return Err(self.io("list", &prefix, e)),
            };
            for de in rd {
                let de = de.map_err(|e| self.io("list", &prefix, e))?;
                let os_name = de.file_name();
                let name = if det.profile.is_fat_like() {
                    fatname::decode(os_name.as_bytes())
                } else {
                    os_name.as_bytes().to_vec()
                };
                let Ok(child) = prefix.join(&name) else {
                    continue;
                };
                let ft = de.file_type().map_err(|e| self.io("list", &child, e))?;
                if ft.is_dir() {
                    let Ok(disk_child) = disk_prefix.join(os_name.as_bytes()) else {
                        continue;
                    };
                    stack.push((disk_child, child));
                } else if ft.is_file() {
                    out.push(child);
                }
            }
        }
        Ok(out)
    }

    fn stat(&self, rel: &RelPath) -> MirrorResult<Option<RemoteStat>> {
        let b = self.check_online()?;
        let det = self.detected();
        let (_, full) = self.full(&b, det, rel)?;
        match fs::symlink_metadata(full.path()) {
            Ok(m) => self.stat_from(rel, full.path(), &m),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(self.io("stat", rel, e)),
        }
    }

    /// [`Mirror::get`] into `out`, the destination the caller opened.
    fn get(&self, rel: &RelPath, mut out: File) -> MirrorResult<RemoteStat> {
        let b = self.check_online()?;
        let det = self.detected();
        let (_, full) = self.full(&b, det, rel)?;
        // O_NONBLOCK: a FIFO planted on the mirror must not hang the sync at open.
        let mut src = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(full.path())
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => self.io(
                    "read",
                    rel,
                    io::Error::other("it is a symlink; refusing to follow it"),
                ),
                _ => self.io("read", rel, e),
            })?;
        let m = src.metadata().map_err(|e| self.io("stat", rel, e))?;
        if !m.is_file() {
            return Err(self.io(
                "read",
                rel,
                io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            ));
        }
        io::copy(&mut src, &mut out).map_err(|e| self.io("copy", rel, e))?;
        out.flush().map_err(|e| self.io("copy", rel, e))?;
        self.stat_from(rel, full.path(), &m)?
            .ok_or_else(|| self.io("read", rel, io::Error::other("not a regular file")))
    }

    fn put(
        &self,
        rel: &RelPath,
        source: &Path,
        meta: FileMeta,
        expect: Option<ContentHash>,
    ) -> MirrorResult<RemoteStat> {
        let b = self.check_online()?;
        let det = self.detected();
        let caps = det.capabilities();
        let mut src = File::open(source).map_err(|e| MirrorError::Io {
            location: self.location.clone(),
            op: "open local source",
            path: source.display().to_string(),
            source: e,
        })?;
        let len = src.metadata().map(|m| m.len()).unwrap_or(0);
        if let Some(max) = caps.max_file_size {
            if len > max {
                return Err(self.refused(rel, too_big_for_fat(len)));
            }
        }
        let (disk, full) = self.full(&b, det, rel)?;
        self.check_new_name(det, rel, &disk, &full, None)?;
        let fd_meta = caps.modes.then_some(meta);
        let mut changed = false;
        let m = fsutil::replace_with(full.path(), fd_meta, |f| {
            copy_checked(&mut src, f, expect, &mut changed)?;
            if !caps.modes {
                filetime::set_file_handle_times(f, None, Some(filetime_of(meta.mtime_ns)))?;
            }
            Ok(())
        })
        .map_err(|e| self.write_error(rel, e, changed))?;
        let m = if det.fusefat {
            self.reapply_mtime(rel, full.path(), meta.mtime_ns)?
        } else {
            m
        };
        self.stat_from(rel, full.path(), &m)?
            .ok_or_else(|| self.io("write", rel, io::Error::other("not a regular file")))
    }

    /// [`Mirror::put_batch`]: every temp file first, one flush, then the renames.
    /// [`Mirror::write`] on the worker thread: the batch split into runs ([`split_runs`]).
    fn write(&self, ops: Vec<WriteOp>) -> Vec<WriteResult> {
        let mut out: Vec<WriteResult> = Vec::with_capacity(ops.len());
        for run in split_runs(ops) {
            match run {
                Run::Puts(_, items) => {
                    out.extend(self.put_batch(&items).into_iter().map(|r| r.map(Some)));
                }
                Run::Removes(_, paths) => {
                    out.extend(
                        self.remove_batch(&paths)
                            .into_iter()
                            .map(|r| r.map(|()| None)),
                    );
                }
                Run::One(_, op) => out.push(match op {
                    WriteOp::Mkdir { path, meta } => self.mkdir(&path, meta).map(Some),
                    WriteOp::Symlink { path, target } => self.symlink(&path, &target).map(Some),
                    WriteOp::Rename { from, to } => self.rename(&from, &to).map(Some),
                    WriteOp::SetMeta { path, meta } => self.set_meta(&path, meta).map(Some),
                    WriteOp::Put(it) => self
                        .put_batch(&[it])
                        .pop()
                        .map_or_else(|| Ok(None), |r| r.map(Some)),
                    WriteOp::Remove(path) => self.remove(&path).map(|()| None),
                }),
            }
        }
        out
    }

    fn put_batch(&self, items: &[PutItem]) -> Vec<MirrorResult<RemoteStat>> {
        let b = match self.check_online() {
            Ok(b) => b,
            Err(e) => return fan_out(items.len(), &e),
        };
        if items
            .iter()
            .any(|it| matches!(it.source, PutSource::Blob(_)))
        {
            let (blobs, rest): (Vec<usize>, Vec<usize>) =
                (0..items.len()).partition(|&i| matches!(items[i].source, PutSource::Blob(_)));
            let mut out: Vec<Option<MirrorResult<RemoteStat>>> =
                (0..items.len()).map(|_| None).collect();
            let bl: Vec<&PutItem> = blobs.iter().map(|&i| &items[i]).collect();
            for (i, r) in blobs.iter().zip(self.put_blobs(&b, &bl)) {
                out[*i] = Some(r);
            }
            let others: Vec<PutItem> = rest.iter().map(|&i| items[i].clone()).collect();
            for (i, r) in rest.iter().zip(self.put_batch(&others)) {
                out[*i] = Some(r);
            }
            return out
                .into_iter()
                .map(|r| {
                    r.unwrap_or_else(|| {
                        Err(self.io("write", "", io::Error::other("lost in the batch")))
                    })
                })
                .collect();
        }
        // A flush of the whole file system costs more than two fsyncs when little is written.
        if items.len() <= 2
            && items
                .iter()
                .all(|it| matches!(it.source, PutSource::File(_)))
        {
            return items
                .iter()
                .map(|it| match &it.source {
                    PutSource::File(source) => self.put(&it.path, source, it.meta, it.expect),
                    PutSource::Bytes(_) | PutSource::Blob(_) => {
                        unreachable!("only files take this path")
                    }
                })
                .collect();
        }
        let det = self.detected();
        let caps = det.capabilities();
        let batch = fsutil::BatchReplace::new(&self.root);
        // Per item: the staging index and the target (its directory held open until the
        // renames are done), or the error.
        let stage_one = |it: &PutItem| -> MirrorResult<(usize, Anchored)> {
            let rel = &it.path;
            (|| {
                let mut src: Box<dyn io::Read> = match &it.source {
                    PutSource::File(path) => {
                        let f = File::open(path).map_err(|e| MirrorError::Io {
                            location: self.location.clone(),
                            op: "open local source",
                            path: path.display().to_string(),
                            source: e,
                        })?;
                        if let Some(max) = caps.max_file_size {
                            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                            if len > max {
                                return Err(self.refused(rel, too_big_for_fat(len)));
                            }
                        }
                        Box::new(f)
                    }
                    PutSource::Bytes(b) | PutSource::Blob(b) => {
                        if caps.max_file_size.is_some_and(|max| b.len() as u64 > max) {
                            return Err(self.refused(rel, too_big_for_fat(b.len() as u64)));
                        }
                        Box::new(b.as_slice())
                    }
                };
                let (disk, full) = self.full(&b, det, rel)?;
                self.check_new_name(det, rel, &disk, &full, None)?;
                let meta = it.meta;
                let expect = match it.source {
                    PutSource::File(_) => it.expect,
                    PutSource::Bytes(_) | PutSource::Blob(_) => None,
                };
                let mut changed = false;
                let i = batch
                    .stage(&full, caps.modes.then_some(meta), |f| {
                        copy_checked(&mut src, f, expect, &mut changed)?;
                        if !caps.modes {
                            filetime::set_file_handle_times(
                                f,
                                None,
                                Some(filetime_of(meta.mtime_ns)),
                            )?;
                        }
                        Ok(())
                    })
                    .map_err(|e| self.write_error(rel, e, changed))?;
                Ok((i, full))
            })()
        };
        // A batch of small files spends its time in the kernel creating inodes, on one core:
        // on a POSIX medium the temp files are written by a few threads at once (each item
        // stays atomic; the batch is still made durable with one flush). FAT media keep one
        // writer (their case checks look at the directory as it stands).
        let workers = std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .min(4)
            .min(items.len() / 32);
        let staged: Vec<MirrorResult<(usize, Anchored)>> = if workers < 2
            || det.profile.is_fat_like()
        {
            items.iter().map(stage_one).collect()
        } else {
            let next = std::sync::atomic::AtomicUsize::new(0);
            let mut slots: Vec<Option<MirrorResult<(usize, Anchored)>>> =
                (0..items.len()).map(|_| None).collect();
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..workers)
                    .map(|_| {
                        scope.spawn(|| {
                            // Runs of neighbours (mostly one directory): two threads
                            // creating files in one directory wait for its lock.
                            const RUN: usize = 16;
                            let mut mine = Vec::new();
                            loop {
                                let at = next.fetch_add(RUN, std::sync::atomic::Ordering::Relaxed);
                                let Some(run) = items.get(at..).filter(|r| !r.is_empty()) else {
                                    break;
                                };
                                for (k, it) in run.iter().take(RUN).enumerate() {
                                    mine.push((at + k, stage_one(it)));
                                }
                            }
                            mine
                        })
                    })
                    .collect();
                for h in handles {
                    // A worker that panicked leaves its items unset: reported as errors.
                    for (i, r) in h.join().unwrap_or_default() {
                        if let Some(slot) = slots.get_mut(i) {
                            *slot = Some(r);
                        }
                    }
                }
            });
            slots
                .into_iter()
                .map(|r| {
                    r.unwrap_or_else(|| {
                        Err(self.io("write", "", io::Error::other("lost in the batch")))
                    })
                })
                .collect()
        };
        let mut done: Vec<Option<io::Result<fs::Metadata>>> =
            batch.commit().into_iter().map(Some).collect();
        items
            .iter()
            .zip(staged)
            .map(|(it, s)| {
                let (i, full) = s?;
                let rel = &it.path;
                let m = done
                    .get_mut(i)
                    .and_then(Option::take)
                    .unwrap_or_else(|| Err(io::Error::other("lost in the batch")))
                    .map_err(|e| self.io("write", rel, e))?;
                let m = if det.fusefat {
                    self.reapply_mtime(rel, full.path(), it.meta.mtime_ns)?
                } else {
                    m
                };
                self.stat_from(rel, full.path(), &m)?
                    .ok_or_else(|| self.io("write", rel, io::Error::other("not a regular file")))
            })
            .collect()
    }

    /// [`PutSource::Blob`] items: written in place, then one flush and one fsync per directory.
    fn put_blobs(&self, b: &Beneath, items: &[&PutItem]) -> Vec<MirrorResult<RemoteStat>> {
        let det = self.detected();
        let caps = det.capabilities();
        // Blobs come many to a directory: while their anchors live, each directory is opened once.
        let mut written: Vec<MirrorResult<(Anchored, fs::Metadata)>> =
            Vec::with_capacity(items.len());
        for it in items {
            let rel = &it.path;
            let r = (|| {
                let PutSource::Blob(bytes) = &it.source else {
                    return Err(self.io("write", rel, io::Error::other("not a blob")));
                };
                if caps
                    .max_file_size
                    .is_some_and(|max| bytes.len() as u64 > max)
                {
                    return Err(self.refused(rel, too_big_for_fat(bytes.len() as u64)));
                }
                let (_, full) = self.full(b, det, rel)?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(fsutil::PRIVATE_MODE)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(full.path())
                    .map_err(|e| self.io("write", rel, e))?;
                f.write_all(bytes).map_err(|e| self.io("write", rel, e))?;
                let m = f.metadata().map_err(|e| self.io("stat", rel, e))?;
                Ok((full, m))
            })();
            written.push(r);
        }
        let paths: Vec<&Path> = written
            .iter()
            .filter_map(|r| r.as_ref().ok().map(|(p, _)| p.path()))
            .collect();
        let flushed = fsutil::flush_files(b.root(), &paths);
        // After a syncfs the new directory entries are durable too.
        let dirs = match flushed {
            Ok(fsutil::Flushed::WholeFileSystem) => Default::default(),
            _ => fsutil::fsync_dirs(
                written
                    .iter()
                    .filter_map(|r| r.as_ref().ok().map(|(p, _)| p.parent())),
            ),
        };
        items
            .iter()
            .zip(written)
            .map(|(it, r)| {
                let (full, m) = r?;
                if let Err(e) = &flushed {
                    return Err(self.io(
                        "flush",
                        &it.path,
                        io::Error::new(e.kind(), e.to_string()),
                    ));
                }
                if let Some(Some(e)) = dirs.get(full.parent()) {
                    return Err(self.io(
                        "fsync the directory of",
                        &it.path,
                        io::Error::other(e.clone()),
                    ));
                }
                self.stat_from(&it.path, full.path(), &m)?.ok_or_else(|| {
                    self.io("write", &it.path, io::Error::other("not a regular file"))
                })
            })
            .collect()
    }

    fn mkdir(&self, rel: &RelPath, meta: FileMeta) -> MirrorResult<RemoteStat> {
        let b = self.check_online()?;
        let det = self.detected();
        let (disk, full) = self.full(&b, det, rel)?;
        // Before the lstat: on a case-insensitive medium it would find the other-cased sibling.
        self.check_new_name(det, rel, &disk, &full, None)?;
        match fs::symlink_metadata(full.path()) {
            // Made by a sync that died before it was durable, perhaps: made durable with the
            // others before the state records it.
            Ok(m) if m.is_dir() => self.made_dir(&disk, &full, rel)?,
            Ok(_) => {
                return Err(self.io(
                    "mkdir",
                    rel,
                    io::Error::new(io::ErrorKind::AlreadyExists, "a file is in the way"),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match fs::create_dir(full.path()) {
                    Ok(()) => {}
                    Err(e)
                        if e.kind() == io::ErrorKind::AlreadyExists
                            && fs::symlink_metadata(full.path()).is_ok_and(|m| m.is_dir()) => {}
                    Err(e) => return Err(self.io("mkdir", rel, e)),
                }
                self.made_dir(&disk, &full, rel)?;
            }
            Err(e) => return Err(self.io("stat", rel, e)),
        }
        self.set_meta_at(det, full.path(), meta)
            .map_err(|e| self.io("set metadata", rel, e))?;
        self.stat_of(rel, full.path())
    }

    fn symlink(&self, rel: &RelPath, target: &[u8]) -> MirrorResult<RemoteStat> {
        let b = self.check_online()?;
        let det = self.detected();
        let (_, full) = self.full(&b, det, rel)?;
        let tmp = fsutil::temp_path(full.parent());
        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &tmp)
            .map_err(|e| self.io("symlink", rel, e))?;
        if let Err(e) = fs::rename(&tmp, full.path()) {
            let _ = fs::remove_file(&tmp);
            return Err(self.io("symlink", rel, e));
        }
        self.fsync_parent(rel, &full)?;
        self.stat_of(rel, full.path())
    }

    fn rename(&self, from: &RelPath, to: &RelPath) -> MirrorResult<RemoteStat> {
        let b = self.check_online()?;
        let det = self.detected();
        let (disk_from, full_from) = self.full(&b, det, from)?;
        let (disk_to, full_to) = self.full(&b, det, to)?;
        fs::symlink_metadata(full_from.path()).map_err(|e| self.io("rename", from, e))?;
        let allow = full_from
            .same_parent(&full_to)
            .then(|| disk_from.file_name());
        self.check_new_name(det, to, &disk_to, &full_to, allow)?;
        fs::rename(full_from.path(), full_to.path())
            .map_err(|e| self.io("rename", format!("{from} to {to}"), e))?;
        self.fsync_parent(to, &full_to)?;
        if !full_from.same_parent(&full_to) {
            self.fsync_parent(from, &full_from)?;
        }
        self.stat_of(to, full_to.path())
    }

    fn remove(&self, rel: &RelPath) -> MirrorResult<()> {
        let b = self.check_online()?;
        let full = self.remove_unsynced(&b, rel)?;
        match full {
            Some(full) => self.fsync_parent(rel, &full),
            None => Ok(()),
        }
    }

    /// [`Mirror::remove_batch`]: each removal, then one fsync per directory involved.
    fn remove_batch(&self, paths: &[RelPath]) -> Vec<MirrorResult<()>> {
        let b = match self.check_online() {
            Ok(b) => b,
            Err(e) => return fan_out(paths.len(), &e),
        };
        let mut out: Vec<MirrorResult<Option<Anchored>>> =
            paths.iter().map(|p| self.remove_unsynced(&b, p)).collect();
        let dirs = fsutil::fsync_dirs(out.iter().flatten().flatten().map(Anchored::parent));
        paths
            .iter()
            .zip(out.drain(..))
            .map(|(rel, r)| match r? {
                Some(full) => match dirs.get(full.parent()) {
                    Some(Some(e)) => Err(self.io(
                        "remove",
                        rel,
                        io::Error::other(format!("fsync of the directory: {e}")),
                    )),
                    _ => Ok(()),
                },
                None => Ok(()),
            })
            .collect()
    }

    /// Removes `rel` without making it durable; returns the removed entry, its directory still
    /// held (None: already absent).
    fn remove_unsynced(&self, b: &Beneath, rel: &RelPath) -> MirrorResult<Option<Anchored>> {
        let det = self.detected();
        let (_, full) = self.full(b, det, rel)?;
        let r = match fs::symlink_metadata(full.path()) {
            // fusefat answers EPERM for a non-empty directory: report what it is.
            Ok(m) if m.is_dir() => fs::remove_dir(full.path()).map_err(|e| {
                match fs::read_dir(full.path()).map(|mut d| d.next().is_some()) {
                    Ok(true) => io::Error::from(io::ErrorKind::DirectoryNotEmpty),
                    _ => e,
                }
            }),
            Ok(_) => fs::remove_file(full.path()),
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => Ok(Some(full)),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(self.io("remove", rel, e)),
        }
    }

    fn remove_temp_files(&self) -> MirrorResult<usize> {
        let b = self.check_online()?;
        fsutil::remove_temp_files(&b).map_err(|e| self.io("remove temp files in", "", e))
    }

    fn set_meta(&self, rel: &RelPath, meta: FileMeta) -> MirrorResult<RemoteStat> {
        let b = self.check_online()?;
        let det = self.detected();
        let (_, full) = self.full(&b, det, rel)?;
        fs::symlink_metadata(full.path()).map_err(|e| self.io("set metadata", rel, e))?;
        self.set_meta_at(det, full.path(), meta)
            .map_err(|e| self.io("set metadata", rel, e))?;
        self.stat_of(rel, full.path())
    }
}

fn filetime_of(mtime_ns: i64) -> filetime::FileTime {
    filetime::FileTime::from_unix_time(
        mtime_ns.div_euclid(1_000_000_000),
        mtime_ns.rem_euclid(1_000_000_000) as u32,
    )
}

#[async_trait::async_trait]
impl StateStore for DirMirror {
    async fn read_state(&self, name: &str) -> MirrorResult<Option<Vec<u8>>> {
        let name = name.to_string();
        self.run("read", move |i| i.read_meta(&name)).await
    }

    async fn commit_state(&self, write: &[(&str, &[u8])], remove: &[&str]) -> MirrorResult<()> {
        let write: Vec<(String, Vec<u8>)> = write
            .iter()
            .map(|(n, b)| ((*n).to_string(), b.to_vec()))
            .collect();
        let remove: Vec<String> = remove.iter().map(|n| (*n).to_string()).collect();
        self.run("write", move |i| {
            for (name, bytes) in &write {
                i.write_meta(name, bytes)?;
            }
            for name in &remove {
                i.remove_meta(name)?;
            }
            Ok(())
        })
        .await
    }

    async fn list_state(&self) -> MirrorResult<Vec<String>> {
        self.run("list", |i| i.list_meta()).await
    }

    async fn create_state_exclusive(&self, name: &str, bytes: &[u8]) -> MirrorResult<bool> {
        let name = name.to_string();
        let bytes = bytes.to_vec();
        self.run("write", move |i| i.create_meta_exclusive(&name, &bytes))
            .await
    }
}

#[async_trait::async_trait]
impl Mirror for DirMirror {
    fn location(&self) -> String {
        self.inner.location.clone()
    }

    /// The capabilities of the current profile (see [`DirMirror::profile`]).
    fn capabilities(&self) -> Capabilities {
        self.inner.detected().capabilities()
    }

    fn marker_location(&self) -> Option<String> {
        (!self.inner.storage).then(|| self.inner.marker_path().display().to_string())
    }

    async fn probe(&self) -> MirrorResult<Presence> {
        self.run("probe", |i| i.probe()).await
    }

    async fn init(&self, folder: FolderId) -> MirrorResult<()> {
        self.run("init", move |i| i.init(folder)).await
    }

    async fn walk(&self, under: Option<&RelPath>, detail: Detail) -> MirrorResult<Vec<RemoteStat>> {
        let under = under.cloned();
        self.run("list", move |i| match (under, detail) {
            (None, Detail::Stats) => i.list(),
            (Some(dir), Detail::Stats) => i.list_under(&dir),
            (Some(dir), Detail::FileNames) => Ok(i
                .list_file_names_under(&dir)?
                .into_iter()
                .map(name_only)
                .collect()),
            (None, Detail::FileNames) => Ok(i
                .list()?
                .into_iter()
                .filter(|s| s.kind == EntryKind::File)
                .map(|s| name_only(s.path))
                .collect()),
        })
        .await
    }

    async fn read_bytes(&self, path: &RelPath, limit: u64) -> MirrorResult<Vec<u8>> {
        let path = path.clone();
        self.run("read", move |i| i.read_bytes(&path, limit)).await
    }

    async fn stat(&self, path: &RelPath) -> MirrorResult<Option<RemoteStat>> {
        let path = path.clone();
        self.run("stat", move |i| i.stat(&path)).await
    }

    async fn get(&self, path: &RelPath, dest: &Path) -> MirrorResult<RemoteStat> {
        // Opened here, while the caller's borrow holds: `dest` may name a directory through a
        // handle the caller keeps (`/proc/self/fd/N/…`), and the copy below can outlive the
        // caller (a timeout, a dropped sync), when `N` may name another directory.
        let out = fsutil::create_private(dest).map_err(|e| MirrorError::Io {
            location: self.location(),
            op: "create local copy",
            path: dest.display().to_string(),
            source: e,
        })?;
        let path = path.clone();
        self.run("read", move |i| i.get(&path, out)).await
    }

    /// One worker thread for the whole batch: runs of puts go through the batched put (one
    /// `syncfs`), runs of removals through the batched removal (each directory fsynced once).
    async fn write(&self, ops: Vec<WriteOp>) -> Vec<WriteResult> {
        let caps = self.capabilities();
        // Answered here, without the worker: what this medium cannot do at all.
        let refused = |op: &WriteOp| match op {
            WriteOp::Symlink { path, .. } if !caps.symlinks => Some(MirrorError::Unsupported {
                location: self.location(),
                what: format!("symlinks on FAT/exFAT ({path})"),
            }),
            WriteOp::Rename { from, .. } if !caps.rename => Some(MirrorError::Unsupported {
                location: self.location(),
                what: format!(
                    "rename with the fusefat driver, which loses directory contents ({from})"
                ),
            }),
            _ => None,
        };
        let mut out: Vec<Option<WriteResult>> = Vec::with_capacity(ops.len());
        let mut todo = Vec::new();
        for op in ops {
            match refused(&op) {
                Some(e) => out.push(Some(Err(e))),
                None => {
                    out.push(None);
                    todo.push(op);
                }
            }
        }
        let mut done = if todo.is_empty() {
            Vec::new()
        } else {
            let paths: Vec<String> = todo.iter().map(|op| op.path().to_string()).collect();
            match self.run("write", move |i| Ok(i.write(todo))).await {
                Ok(r) => r,
                Err(e) => paths.iter().map(|p| Err(e.duplicate_for(p))).collect(),
            }
        }
        .into_iter();
        out.into_iter()
            .map(|r| {
                r.or_else(|| done.next()).unwrap_or_else(|| {
                    Err(MirrorError::Corrupt {
                        location: self.location(),
                        what: "write".into(),
                        reason: "a batch answered fewer results than operations (a bug)".into(),
                    })
                })
            })
            .collect()
    }

    async fn sweep(&self) -> MirrorResult<usize> {
        self.run("remove temp files", |i| i.remove_temp_files())
            .await
    }
}

/// A [`Detail::FileNames`] entry.
fn name_only(path: RelPath) -> RemoteStat {
    RemoteStat {
        path,
        kind: EntryKind::File,
        size: 0,
        mode: 0,
        mtime_ns: 0,
        inode: 0,
        symlink_target: None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use briefcase_mirror::MirrorExt;

    fn rp(s: &str) -> RelPath {
        RelPath::try_from(s).unwrap()
    }

    const META: FileMeta = FileMeta {
        mode: 0o644,
        mtime_ns: 1_600_000_000_000_000_000,
    };
    const FOLDER: FolderId = FolderId(0xabc);

    #[test]
    fn meta_names() {
        for (n, ok) in [
            ("state.0", true),
            ("state.1", true),
            ("a-b_c.9", true),
            ("", false),
            (".", false),
            ("..", false),
            ("folder-id", false),
            (".briefcase-tmp-1", false),
            ("State", false),
            ("a/b", false),
            ("é", false),
        ] {
            assert_eq!(meta_name_ok(n), ok, "{n:?}");
        }
    }

    #[tokio::test]
    async fn marker_file_format_and_location() {
        let dir = tempfile::tempdir().unwrap();
        let m = DirMirror::new(dir.path().join("nas"));
        assert_eq!(
            m.location(),
            format!("dir:{}", dir.path().join("nas").display())
        );
        m.init(FOLDER).await.unwrap();
        let marker = fs::read_to_string(dir.path().join("nas/.briefcase/folder-id")).unwrap();
        assert_eq!(marker, format!("{:032x}\n", 0xabc));
        assert!(
            matches!(m.init(FolderId(7)).await, Err(MirrorError::Refused { .. })),
            "another folder's mirror"
        );
        fs::write(dir.path().join("nas/.briefcase/folder-id"), b"nonsense").unwrap();
        assert!(matches!(m.probe().await, Err(MirrorError::Corrupt { .. })));
    }

    #[tokio::test]
    async fn offline_message_tells_what_to_check() {
        let dir = tempfile::tempdir().unwrap();
        let m = DirMirror::new(dir.path().to_path_buf());
        let e = m.list().await.unwrap_err();
        assert!(
            e.to_string().contains(
                ".briefcase/folder-id is missing; is the share mounted / the stick inserted?"
            ),
            "{e}"
        );
    }

    #[tokio::test]
    async fn fat_profile_maps_names_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let m = DirMirror::with_profile(dir.path().to_path_buf(), Profile::Fat);
        m.init(FOLDER).await.unwrap();
        let src = dir.path().join(".briefcase/src");
        fs::write(&src, b"x").unwrap();
        m.mkdir(&rp("a:b"), META).await.unwrap();
        m.put(&rp("a:b/what?.txt"), &src, META).await.unwrap();
        m.put(&RelPath::new(b"raw\xff.".to_vec()).unwrap(), &src, META)
            .await
            .unwrap();
        assert!(
            dir.path().join("a\u{F03A}b/what\u{F03F}.txt").is_file(),
            "stored mapped"
        );
        assert!(
            dir.path().join("raw\u{F0FF}\u{F02E}").is_file(),
            "stored mapped"
        );
        let list: Vec<_> = m
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.path)
            .collect();
        assert_eq!(
            list,
            [
                rp("a:b"),
                rp("a:b/what?.txt"),
                RelPath::new(b"raw\xff.".to_vec()).unwrap()
            ]
        );
        assert_eq!(
            m.stat(&rp("a:b/what?.txt")).await.unwrap().unwrap().path,
            rp("a:b/what?.txt")
        );
        let r = m.put(&rp("pua\u{F03A}"), &src, META).await;
        assert!(matches!(r, Err(MirrorError::Refused { .. })), "{r:?}");
    }

    #[tokio::test]
    async fn fat_profile_refuses_case_collision_in_subdir_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let m = DirMirror::with_profile(dir.path().to_path_buf(), Profile::ExFat);
        m.init(FOLDER).await.unwrap();
        let src = dir.path().join(".briefcase/src");
        fs::write(&src, b"x").unwrap();
        m.mkdir(&rp("Docs"), META).await.unwrap();
        m.put(&rp("Docs/Ünï.txt"), &src, META).await.unwrap();
        let e = m.put(&rp("Docs/üNÏ.TXT"), &src, META).await.unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, MirrorError::Refused { .. })
                && msg.contains("Docs/üNÏ.TXT")
                && msg.contains("`Ünï.txt`"),
            "{msg}"
        );
        assert!(m.mkdir(&rp("DOCS"), META).await.is_err());
        assert_eq!(
            m.capabilities().max_file_size,
            None,
            "exFAT has no 4 GiB limit"
        );
    }

    #[tokio::test]
    async fn unmarked_and_tmp_only_roots() {
        let dir = tempfile::tempdir().unwrap();
        let m = DirMirror::new(dir.path().to_path_buf());
        fs::write(dir.path().join(".briefcase-tmp-1"), b"").unwrap();
        assert_eq!(
            m.probe().await.unwrap(),
            Presence::Empty,
            "a leftover temp file is not content"
        );
        fs::write(dir.path().join("x"), b"").unwrap();
        assert_eq!(m.probe().await.unwrap(), Presence::Unmarked);
    }

    #[tokio::test]
    async fn leftover_temp_files_are_removed_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let m = DirMirror::new(dir.path().join("m"));
        // Not mounted / not a mirror: nothing is touched.
        assert!(matches!(m.sweep().await, Err(MirrorError::Offline { .. })));
        m.init(FOLDER).await.unwrap();
        let root = dir.path().join("m");
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/.briefcase-tmp-1"), b"half").unwrap();
        fs::write(root.join(".briefcase-tmp-2"), b"").unwrap();
        fs::write(root.join(STATE_DIR).join(".briefcase-tmp-3"), b"st").unwrap();
        fs::write(root.join("a/keep"), b"data").unwrap();
        fs::write(outside.path().join(".briefcase-tmp-4"), b"not ours").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("a/link")).unwrap();
        assert_eq!(m.sweep().await.unwrap(), 3);
        assert!(
            outside.path().join(".briefcase-tmp-4").exists(),
            "followed a symlink"
        );
        assert!(root.join("a/keep").exists());
        let paths: Vec<String> = m
            .list()
            .await
            .unwrap()
            .iter()
            .map(|s| s.path.display())
            .collect();
        assert_eq!(paths, ["a", "a/b", "a/keep", "a/link"]);
        assert_eq!(m.sweep().await.unwrap(), 0);
    }

    /// A directory made on the mirror is made durable before the next state file, not one
    /// fsync each; under a layer (the stick), at once.
    #[tokio::test]
    async fn made_directories_are_synced_before_the_next_state_file() {
        let root = tempfile::tempdir().unwrap();
        let m = DirMirror::new(root.path().to_path_buf());
        m.init(FolderId(1)).await.unwrap();
        let meta = FileMeta {
            mode: 0o755,
            mtime_ns: 0,
        };
        for d in ["a", "a/b", "c"] {
            m.mkdir(&rp(d), meta).await.unwrap();
        }
        let pending = |m: &DirMirror| m.inner.unsynced_dirs.lock().unwrap().clone();
        let want: std::collections::BTreeSet<PathBuf> =
            [root.path().to_path_buf(), root.path().join("a")].into();
        assert_eq!(pending(&m), want);
        m.write_state("state.0", b"x").await.unwrap();
        assert!(pending(&m).is_empty());
        let storage = DirMirror::storage(root.path().join("layer"));
        storage.init(FolderId(1)).await.unwrap();
        storage.mkdir(&rp("top"), meta).await.unwrap();
        assert!(pending(&storage).is_empty());
    }

    /// A batch large enough to be written by several threads: every item's result is its own
    /// (a changed source, a missing directory), and what was stored is what was sent.
    #[tokio::test]
    async fn a_large_batch_keeps_each_items_result() {
        let root = tempfile::tempdir().unwrap();
        let src = tempfile::tempdir().unwrap();
        let m = DirMirror::new(root.path().to_path_buf());
        m.init(FOLDER).await.unwrap();
        for d in 0..10 {
            m.mkdir(&rp(&format!("d{d}")), META).await.unwrap();
        }
        let mut items = Vec::new();
        for i in 0..300 {
            let content = format!("file {i} ").repeat(i % 50 + 1);
            let source = src.path().join(format!("s{i}"));
            fs::write(&source, &content).unwrap();
            let dir = if i == 77 {
                "missing".to_string()
            } else {
                format!("d{}", i % 10)
            };
            let expect = if i == 150 {
                Some(ContentHash::of(b"not what the file holds"))
            } else {
                Some(ContentHash::of(content.as_bytes()))
            };
            items.push(PutItem {
                path: rp(&format!("{dir}/f{i}")),
                source: PutSource::File(source),
                meta: META,
                expect,
                chunks: None,
            });
        }
        let results = m.put_batch(items.clone()).await;
        assert_eq!(results.len(), items.len());
        for (i, (it, r)) in items.iter().zip(&results).enumerate() {
            match i {
                77 => assert!(r.is_err(), "no such directory: {r:?}"),
                150 => assert!(matches!(r, Err(MirrorError::SourceChanged { .. })), "{r:?}"),
                _ => {
                    let s = r.as_ref().unwrap();
                    assert_eq!(s.path, it.path);
                    let PutSource::File(source) = &it.source else {
                        unreachable!()
                    };
                    assert_eq!(
                        fs::read(it.path.under(root.path())).unwrap(),
                        fs::read(source).unwrap()
                    );
                    assert_eq!(s.size, fs::metadata(source).unwrap().len());
                }
            }
        }
        assert!(
            !root.path().join("d0/f150").exists(),
            "a changed source is not stored"
        );
        let listed = m.list().await.unwrap();
        assert_eq!(
            listed.len(),
            10 + 298,
            "no temp file left, nothing else written"
        );
    }

    #[tokio::test]
    async fn symlinked_state_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        fs::write(elsewhere.path().join(MARKER), format!("{FOLDER}\n")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join(STATE_DIR)).unwrap();
        let m = DirMirror::new(dir.path().to_path_buf());
        assert!(matches!(
            m.write_state("state.0", b"x").await,
            Err(MirrorError::Unsafe { .. })
        ));
        assert!(!elsewhere.path().join("state.0").exists());
    }
}
