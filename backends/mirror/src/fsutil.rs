//! File-system helpers shared by local-disk backends and the local replica:
//! symlink-safe resolution of a [`RelPath`] under a root (invariant 6: nothing is written outside
//! the root, no symlink inside it is followed), and atomic durable replacement (invariant 2: temp
//! file in the same directory, fsync, mode and mtime, rename, fsync the directory).

use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::beneath::{Anchored, Beneath};
use crate::model::EntryKind;
use crate::path::RelPath;
use crate::{FileMeta, RemoteStat, TMP_PREFIX};

pub use crate::beneath::ResolveError;

/// Joins `rel` to `root` after checking that every ancestor of `rel` inside the root is a real
/// directory (not a symlink). Missing ancestors are fine. The final component is not checked:
/// callers use `symlink_metadata` on it.
///
/// The check and the later use of the string are not atomic (an ancestor can be swapped for a
/// symlink in between): only for reads whose content is verified afterwards (a push source
/// checked against its journaled hash). Everything that writes, renames, removes or changes
/// modes goes through [`crate::beneath::Beneath`].
///
/// # Errors
/// [`ResolveError::UnsafeParent`] naming the first offending ancestor.
pub fn resolve(root: &Path, rel: &RelPath) -> Result<PathBuf, ResolveError> {
    for anc in rel.ancestors() {
        match fs::symlink_metadata(anc.under(root)) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => return Err(ResolveError::UnsafeParent(anc.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(rel.under(root))
}

/// A fresh temp file name in `dir`: `.briefcase-tmp-<random>`.
pub fn temp_path(dir: &Path) -> PathBuf {
    dir.join(temp_name())
}

/// A fresh temp file name: `.briefcase-tmp-<random>` (16 hex digits).
pub fn temp_name() -> std::ffi::OsString {
    let n: u64 = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.write_u32(std::process::id());
        h.finish()
    };
    format!("{TMP_PREFIX}{n:016x}").into()
}

/// Above this many distinct directories, [`fsync_dirs`] makes them durable with one `syncfs(2)`
/// per file system instead (an fsync of a directory costs ~6 ms on this kind of machine: a
/// `git gc` that empties 256 object directories would spend 1.5 s in them).
pub const SYNCFS_DIRS: usize = 8;

/// fsyncs each distinct directory of `dirs` once (renames or removals in them become durable);
/// returns, per directory, the error of its fsync if any. A directory that no longer exists
/// (removed later in the same batch) has nothing left to make durable and is not an error.
/// More than [`SYNCFS_DIRS`] directories are flushed with one `syncfs(2)` per file system
/// (except on FUSE, where `syncfs` only reaches the driver).
pub fn fsync_dirs<'a>(
    dirs: impl Iterator<Item = &'a Path>,
) -> std::collections::BTreeMap<PathBuf, Option<String>> {
    let mut out = std::collections::BTreeMap::new();
    for d in dirs {
        out.entry(d.to_path_buf()).or_insert(None);
    }
    let mut synced_devs = std::collections::BTreeSet::new();
    if out.len() > SYNCFS_DIRS {
        let mut tried = std::collections::BTreeSet::new();
        for d in out.keys() {
            let Ok(m) = fs::metadata(d) else { continue };
            if !tried.insert(m.dev()) {
                continue;
            }
            let Ok(f) = File::open(d) else { continue };
            #[allow(clippy::useless_conversion)]
            let fuse =
                rustix::fs::fstatfs(&f).is_ok_and(|st| i64::from(st.f_type) == FUSE_SUPER_MAGIC);
            if !fuse && rustix::fs::syncfs(&f).is_ok() {
                synced_devs.insert(m.dev());
            }
        }
    }
    for (d, err) in out.iter_mut() {
        if !synced_devs.is_empty()
            && fs::metadata(d.as_path()).is_ok_and(|m| synced_devs.contains(&m.dev()))
        {
            continue;
        }
        match fsync_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => *err = Some(e.to_string()),
        }
    }
    out
}

/// How [`flush_files`] made the files durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flushed {
    /// One fsync per file: directory entries still need their directory's fsync.
    EachFile,
    /// One `syncfs(2)`: everything written on the file system so far is durable, directory
    /// entries included.
    WholeFileSystem,
}

/// `statfs(2)` magic of FUSE file systems.
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Makes the content of `files` (on the file system of `root`) durable: an fsync each for a
/// few, one `syncfs(2)` for more (cheaper than many fsyncs; falls back to them where `syncfs`
/// fails). On FUSE (fusefat, exfat-fuse) `syncfs` only hands the data to the driver, which need
/// not write it to the device, so each file is fsynced there.
///
/// # Errors
/// The first failing fsync or open.
pub fn flush_files(root: &Path, files: &[&Path]) -> io::Result<Flushed> {
    let each = || {
        files
            .iter()
            .try_for_each(|p| File::open(p).and_then(|f| f.sync_all()))
            .map(|()| Flushed::EachFile)
    };
    if files.len() <= 4 {
        return each();
    }
    let Ok(r) = File::open(root) else {
        return each();
    };
    // `f_type`'s integer type differs between architectures.
    #[allow(clippy::useless_conversion)]
    let fuse = rustix::fs::fstatfs(&r).is_ok_and(|st| i64::from(st.f_type) == FUSE_SUPER_MAGIC);
    if fuse {
        return each();
    }
    match rustix::fs::syncfs(&r) {
        Ok(()) => Ok(Flushed::WholeFileSystem),
        Err(_) => each(),
    }
}

/// Mode of every file briefcase creates before it holds its final content and mode (temp files,
/// fetched files, chunks): readable by this user only, so content on its way is never readable
/// by other users of the machine (invariant 8). The final mode is set at the end.
pub const PRIVATE_MODE: u32 = 0o600;

/// Creates (or truncates) `path` for writing with [`PRIVATE_MODE`], never following a symlink
/// there.
///
/// # Errors
/// I/O errors (`ELOOP` when `path` is a symlink).
pub fn create_private(path: &Path) -> io::Result<File> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Makes `dir` a directory of this user's only (invariant 8): created with mode 0700 (with any
/// missing parents, also 0700), and tightened to 0700 if it exists with group or world bits.
/// For briefcase's own directories only (never a user's folder).
///
/// # Errors
/// I/O errors of mkdir or chmod.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    private(dir, 0o700)
}

/// Tightens `path` to `mode` if it grants anything to group or world (a file or directory
/// briefcase made before it created them private). Absent: nothing to do.
///
/// # Errors
/// I/O errors of chmod.
pub fn private(path: &Path, mode: u32) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_symlink() && m.mode() & 0o077 != 0 => {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Largest file [`read_bounded`] reads for a mirror's state files (bytes): the state format's
/// own limit plus its header.
pub const MAX_META_FILE: u64 = crate::state::MAX_STATE_BYTES as u64 + 4096;

/// Largest folder marker (bytes): 32 hex digits and a newline, with room to spare.
pub const MAX_MARKER_FILE: u64 = 4096;

/// Reads a file that came from a mirror or stick, trusting nothing about it: opened with
/// `O_NOFOLLOW | O_NONBLOCK` (a symlink is refused, a FIFO does not block), checked to be a
/// regular file with `fstat`, and read to at most `limit` bytes (a device such as `/dev/zero`
/// or a file growing while read cannot exhaust memory).
///
/// # Errors
/// `NotFound` when absent; `InvalidData` naming what it is when not a regular file or larger
/// than `limit`; other I/O errors.
pub fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "it is a symlink, not a regular file",
                )
            } else {
                e
            }
        })?;
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it is {}, not a regular file", type_name(&m)),
        ));
    }
    if m.len() > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it is {} bytes, more than the {limit} allowed", m.len()),
        ));
    }
    let mut out = Vec::with_capacity(m.len() as usize);
    f.take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it grew past the {limit} bytes allowed while it was read"),
        ));
    }
    Ok(out)
}

/// What kind of file `m` describes, for messages: "a regular file", "a directory", "a
/// symlink", "a FIFO", "a device", "a socket".
pub fn type_name(m: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    match m.file_type() {
        t if t.is_file() => "a regular file",
        t if t.is_dir() => "a directory",
        t if t.is_symlink() => "a symlink",
        t if t.is_fifo() => "a FIFO",
        t if t.is_char_device() || t.is_block_device() => "a device",
        t if t.is_socket() => "a socket",
        _ => "not a regular file",
    }
}

/// fsyncs a directory so that a rename inside it is durable.
///
/// # Errors
/// I/O errors from open/fsync.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Sets permission bits and mtime (ns since the epoch) on a path without following a final
/// symlink: on a symlink only the link's own mtime is set (Linux has no permission bits on links).
/// The mtime is set before the mode, so a mode without owner read/write does not lock us out.
///
/// # Errors
/// I/O errors.
pub fn apply_meta(path: &Path, meta: FileMeta) -> io::Result<()> {
    set_mtime(path, meta.mtime_ns)?;
    crate::beneath::chmod_nofollow(path, meta.mode)
}

/// Sets only the mtime (ns since the epoch, negative = before 1970) of a path, not following a
/// final symlink; the atime is left alone. For media without permission bits (FAT).
///
/// # Errors
/// I/O errors.
pub fn set_mtime(path: &Path, mtime_ns: i64) -> io::Result<()> {
    let t = filetime_of(mtime_ns);
    let atime = filetime::FileTime::from_last_access_time(&fs::symlink_metadata(path)?);
    filetime::set_symlink_file_times(path, atime, t)
}

fn filetime_of(mtime_ns: i64) -> filetime::FileTime {
    let secs = mtime_ns.div_euclid(1_000_000_000);
    let nanos = mtime_ns.rem_euclid(1_000_000_000) as u32;
    filetime::FileTime::from_unix_time(secs, nanos)
}

/// Sets mode and mtime through an open file, so that a following `sync_all` makes them durable.
fn apply_meta_fd(f: &File, meta: FileMeta) -> io::Result<()> {
    filetime::set_file_handle_times(f, None, Some(filetime_of(meta.mtime_ns)))?;
    f.set_permissions(fs::Permissions::from_mode(meta.mode & 0o7777))
}

/// Atomically replaces `target` with the bytes produced by `fill` writing into a temp file in the
/// same directory; the temp file gets `meta` (through its handle), is fsynced, and is renamed over
/// `target`; then the directory is fsynced. On error the temp file is removed. Returns the target's new metadata.
///
/// # Errors
/// I/O errors from any step.
pub fn replace_with(
    target: &Path,
    meta: Option<FileMeta>,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<Metadata> {
    let (tmp, f) = write_temp(target, meta, fill)?;
    let result = (|| {
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, target)?;
        if let Some(dir) = target.parent() {
            fsync_dir(dir)?;
        }
        fs::symlink_metadata(target)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes what `fill` produces, and `meta`, to a new temp file beside `target` (not fsynced);
/// returns its path and handle. On error the temp file is removed.
fn write_temp(
    target: &Path,
    meta: Option<FileMeta>,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<(PathBuf, File)> {
    let dir = target
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "target has no parent"))?;
    let tmp = temp_path(dir);
    write_temp_at(tmp, meta, fill)
}

/// [`write_temp`] to the temp file `tmp`.
fn write_temp_at(
    tmp: PathBuf,
    meta: Option<FileMeta>,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<(PathBuf, File)> {
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PRIVATE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        fill(&mut f)?;
        f.flush()?;
        if let Some(meta) = meta {
            apply_meta_fd(&f, meta)?;
        }
        Ok(f)
    })();
    match result {
        Ok(f) => Ok((tmp, f)),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Many atomic replacements made durable together: [`BatchReplace::stage`] writes each temp file
/// (with its metadata, not yet fsynced) beside its target; [`BatchReplace::commit`] flushes all of
/// them with one `syncfs(2)` (per-file `fsync` where the file system refuses it), renames each over
/// its target, and fsyncs every directory involved once. Each target still shows its old or its
/// new content, never a mix, at any instant and after a crash (invariant 2), like
/// [`replace_with`]; but a batch of small files costs two flushes, not two per file (an fsync of
/// a directory costs ~6.6 ms on this project's ext4 test machine, an `fsync` of a small file
/// ~0.7 ms; see docs/performance.md). Temp files not committed are removed on drop.
///
/// Targets are [`Anchored`] entries: each temp file is made, and renamed over its target,
/// through the directory handle the anchor holds, which the batch keeps open until it is done.
///
/// [`BatchReplace::stage`] takes `&self`: several threads may write their temp files into one
/// batch at once (a batch of thousands of small files spends its time creating inodes).
#[derive(Debug)]
pub struct BatchReplace {
    root: PathBuf,
    staged: std::sync::Mutex<Vec<(Anchored, Anchored)>>,
}

impl BatchReplace {
    /// A batch for targets on the file system of `root` (used for `syncfs` only).
    pub fn new(root: &Path) -> Self {
        BatchReplace {
            root: root.to_path_buf(),
            staged: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The staged items (a panic of another stager leaves them usable: each push is whole).
    fn staged(&self) -> std::sync::MutexGuard<'_, Vec<(Anchored, Anchored)>> {
        self.staged.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many files are staged.
    pub fn len(&self) -> usize {
        self.staged().len()
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.staged().is_empty()
    }

    /// Writes the future content of `target` (produced by `fill`) to a temp file beside it, with
    /// `meta` set through its handle. Returns the item's index for [`BatchReplace::commit`]'s
    /// results.
    ///
    /// # Errors
    /// I/O errors (the temp file is removed).
    pub fn stage(
        &self,
        target: &Anchored,
        meta: Option<FileMeta>,
        fill: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> io::Result<usize> {
        let tmp = target.sibling(&temp_name())?;
        write_temp_at(tmp.path().to_path_buf(), meta, fill)?;
        let mut staged = self.staged();
        staged.push((tmp, target.clone()));
        Ok(staged.len() - 1)
    }

    /// Takes a temp file already written beside `target` (by someone else, e.g. a mirror's
    /// `get`) into the batch; it is removed if not committed. Returns its index.
    pub fn adopt(&mut self, tmp: Anchored, target: Anchored) -> usize {
        let staged = self.staged.get_mut().unwrap_or_else(|p| p.into_inner());
        staged.push((tmp, target));
        staged.len() - 1
    }

    /// Makes every staged file durable, renames each over its target and makes the renames
    /// durable. Returns each target's new metadata, by staging index.
    ///
    /// # Errors
    /// Per item: the flush, rename or directory fsync that failed (a failed flush fails every
    /// item and renames nothing).
    pub fn commit(self) -> Vec<io::Result<Metadata>> {
        self.commit_checked(|_, _| true)
            .into_iter()
            .map(|r| r.and_then(|m| m.ok_or_else(|| io::Error::other("skipped"))))
            .collect()
    }

    /// [`BatchReplace::commit`], asking `check(index, target)` right before each rename whether
    /// the target may still be replaced (invariant 1: the engine re-checks that the local file
    /// still holds what its journal says); a refused item is dropped and reported as `Ok(None)`.
    ///
    /// # Errors
    /// As [`BatchReplace::commit`].
    pub fn commit_checked(
        mut self,
        mut check: impl FnMut(usize, &Path) -> bool,
    ) -> Vec<io::Result<Option<Metadata>>> {
        let staged = std::mem::take(self.staged.get_mut().unwrap_or_else(|p| p.into_inner()));
        if staged.is_empty() {
            return Vec::new();
        }
        let tmps: Vec<&Path> = staged.iter().map(|(tmp, _)| tmp.path()).collect();
        let flushed = flush_files(&self.root, &tmps);
        if let Err(e) = flushed {
            for (tmp, _) in &staged {
                let _ = fs::remove_file(tmp.path());
            }
            let kind = e.kind();
            let msg = e.to_string();
            return staged
                .iter()
                .map(|_| Err(io::Error::new(kind, msg.clone())))
                .collect();
        }
        let mut out: Vec<io::Result<bool>> = Vec::with_capacity(staged.len());
        for (i, (tmp, target)) in staged.iter().enumerate() {
            if !check(i, target.path()) {
                let _ = fs::remove_file(tmp.path());
                out.push(Ok(false));
                continue;
            }
            let r = fs::rename(tmp.path(), target.path());
            if r.is_err() {
                let _ = fs::remove_file(tmp.path());
            }
            out.push(r.map(|()| true));
        }
        let dirs = fsync_dirs(
            staged
                .iter()
                .zip(&out)
                .filter(|(_, r)| matches!(r, Ok(true)))
                .map(|((_, t), _)| t.parent()),
        );
        staged
            .iter()
            .zip(out)
            .map(|((_, target), r)| {
                if !r? {
                    return Ok(None);
                }
                if let Some(Some(e)) = dirs.get(target.parent()) {
                    return Err(io::Error::other(format!("fsync of the directory: {e}")));
                }
                fs::symlink_metadata(target.path()).map(Some)
            })
            .collect()
    }
}

impl Drop for BatchReplace {
    fn drop(&mut self) {
        for (tmp, _) in self
            .staged
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = fs::remove_file(tmp.path());
        }
    }
}

/// Atomically replaces `target` with `bytes` (see [`replace_with`]).
///
/// # Errors
/// I/O errors.
pub fn replace_bytes(target: &Path, bytes: &[u8]) -> io::Result<Metadata> {
    replace_with(target, None, |f| f.write_all(bytes))
}

/// Removes leftover `.briefcase-tmp-*` files anywhere under the root of `b` and returns how many
/// were removed. Run at start (invariant 2). Each directory is opened beneath the root without
/// following symlinks ([`Beneath::dir`]) and listed and cleaned through that handle, so a
/// directory swapped for a symlink meanwhile is skipped, never followed.
///
/// # Errors
/// I/O errors other than vanished entries.
pub fn remove_temp_files(b: &Beneath) -> io::Result<usize> {
    let mut removed = 0;
    let mut stack: Vec<Option<RelPath>> = vec![None];
    while let Some(rel) = stack.pop() {
        let dir = match b.dir(rel.as_ref()) {
            Ok(Some(d)) => d,
            Ok(None) | Err(ResolveError::UnsafeParent(_)) => continue,
            Err(ResolveError::Io(e)) => return Err(e),
        };
        let rd = match fs::read_dir(dir.path()) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for de in rd {
            let de = de?;
            let name = de.file_name();
            let ft = de.file_type()?;
            if name.as_encoded_bytes().starts_with(TMP_PREFIX.as_bytes()) {
                // `remove_dir_all` does not follow symlinks inside the tree it removes.
                let p = de.path();
                let r = if ft.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                match r {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            } else if ft.is_dir() {
                let child = match &rel {
                    None => RelPath::new(name.as_encoded_bytes().to_vec()),
                    Some(r) => r.join(name.as_encoded_bytes()),
                };
                if let Ok(child) = child {
                    stack.push(Some(child));
                }
            }
        }
    }
    Ok(removed)
}

/// [`remove_temp_files`] under the directory `root`.
///
/// # Errors
/// I/O errors opening the root, and as [`remove_temp_files`].
pub fn remove_temp_files_under(root: &Path) -> io::Result<usize> {
    remove_temp_files(&Beneath::open(root)?)
}

/// Modification time of `m` in ns since the epoch.
pub fn mtime_ns(m: &Metadata) -> i64 {
    m.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(m.mtime_nsec())
}

/// The [`EntryKind`] of `m`, or `None` for sockets, fifos and devices (never synced).
pub fn kind_of(m: &Metadata) -> Option<EntryKind> {
    let ft = m.file_type();
    if ft.is_file() {
        Some(EntryKind::File)
    } else if ft.is_dir() {
        Some(EntryKind::Dir)
    } else if ft.is_symlink() {
        Some(EntryKind::Symlink)
    } else {
        None
    }
}

/// A [`RemoteStat`] for `rel` from `symlink_metadata`; reads the link target of a symlink.
/// `Ok(None)` for special files.
///
/// # Errors
/// I/O errors reading a link target.
pub fn remote_stat(rel: RelPath, full: &Path, m: &Metadata) -> io::Result<Option<RemoteStat>> {
    let Some(kind) = kind_of(m) else {
        return Ok(None);
    };
    let symlink_target = if kind == EntryKind::Symlink {
        Some(fs::read_link(full)?.into_os_string().into_encoded_bytes())
    } else {
        None
    };
    Ok(Some(RemoteStat {
        path: rel,
        kind,
        size: if kind == EntryKind::File { m.len() } else { 0 },
        mode: m.mode() & 0o7777,
        mtime_ns: mtime_ns(m),
        inode: m.ino(),
        symlink_target,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn resolve_refuses_symlinked_parent() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("evil")).unwrap();
        let rel = RelPath::try_from("evil/passwd").unwrap();
        assert!(
            matches!(resolve(root.path(), &rel), Err(ResolveError::UnsafeParent(p)) if p == "evil")
        );
        fs::create_dir(root.path().join("ok")).unwrap();
        assert!(resolve(root.path(), &RelPath::try_from("ok/x").unwrap()).is_ok());
        assert!(resolve(root.path(), &RelPath::try_from("missing/x/y").unwrap()).is_ok());
    }

    #[test]
    fn replace_is_atomic_and_cleans_up() {
        let root = tempfile::tempdir().unwrap();
        let t = root.path().join("f");
        fs::write(&t, b"old").unwrap();
        let err = replace_with(&t, None, |f| {
            f.write_all(b"partial")?;
            Err(io::Error::other("boom"))
        });
        assert!(err.is_err());
        assert_eq!(fs::read(&t).unwrap(), b"old");
        assert_eq!(
            fs::read_dir(root.path()).unwrap().count(),
            1,
            "temp file left behind"
        );
        replace_bytes(&t, b"new").unwrap();
        assert_eq!(fs::read(&t).unwrap(), b"new");
    }

    #[test]
    fn apply_meta_does_not_follow_symlinks_and_keeps_mtime_with_closed_modes() {
        let root = tempfile::tempdir().unwrap();
        let outside = root.path().join("outside");
        fs::write(&outside, b"x").unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o644)).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        apply_meta(
            &link,
            FileMeta {
                mode: 0o600,
                mtime_ns: 1_000_000_000,
            },
        )
        .unwrap();
        assert_eq!(
            fs::metadata(&outside).unwrap().mode() & 0o7777,
            0o644,
            "followed the link"
        );
        assert_eq!(
            mtime_ns(&fs::symlink_metadata(&link).unwrap()),
            1_000_000_000
        );
        let f = root.path().join("f");
        fs::write(&f, b"x").unwrap();
        apply_meta(
            &f,
            FileMeta {
                mode: 0o000,
                mtime_ns: -1_500_000_000,
            },
        )
        .unwrap();
        let m = fs::symlink_metadata(&f).unwrap();
        assert_eq!((m.mode() & 0o7777, mtime_ns(&m)), (0, -1_500_000_000));
    }
}
