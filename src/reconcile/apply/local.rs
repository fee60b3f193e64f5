//! Effects on the local replica: pulling (a file fetched into a verified temp file, a directory
//! or symlink materialised), local parent directories, keeping a directory that still holds
//! unseen files, renaming a file here, and the local checks and entries the other parts use.
//!
//! Invariants kept here: every local path is resolved beneath the root held open, without
//! following symlinks (6); incoming content replaces a file only through a verified temp file
//! renamed over it (2), right after re-checking that the file still holds what the journal
//! recorded (1); modes from a mirror never carry setuid, setgid or sticky bits (8).

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use briefcase_mirror::beneath::{Anchored, ResolveError};
use briefcase_mirror::fsutil::{self, mtime_ns};
use briefcase_mirror::{Entry, EntryKind, FileMeta, RelPath};

use super::resolve::settled;
use super::{Ctx, Outcome, StepError, StepResult};
use crate::reconcile::{FailureKind, SyncReport};
use crate::scan::{self, stat_matches};

/// What the mirror sent for `r` does not hash to what its state records.
pub(super) fn mismatch(cx: &Ctx<'_>, r: &Entry) -> StepError {
    StepError::mirror(
        FailureKind::Changed,
        format!(
            "{} on mirror {} does not match its recorded hash (changed during the sync?); not applied, retried next sync",
            r.path,
            cx.mirror.location()
        ),
    )
}

/// The directory `l` deleted here still holds, on the mirror (`r`), files this machine never
/// saw: edit beats delete. Keep it here too, as a change that dominates both (the next round
/// sends it back; its new contents are pulled).
pub(super) fn keep_dir(cx: &mut Ctx<'_>, l: Entry, r: Entry) -> StepResult {
    let p = l.path.clone();
    local_parents(cx, &p)?;
    let dir = full(cx, &p)?;
    match fs::create_dir(dir.path()) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(local_io(cx, &p, "create directory", e)),
    }
    let m = fs::symlink_metadata(dir.path()).ok();
    settled(
        cx,
        r,
        &l,
        m.as_ref(),
        "keep",
        Some("deleted here, but on the mirror it holds files this machine had not seen"),
    )?;
    cx.local.rescan(Some(std::slice::from_ref(&p)))?;
    Ok(Outcome::Done)
}

/// `p` in the local folder, its parent directory held open ([`Beneath::resolve`]): use its
/// path only while it lives.
pub(super) fn full(cx: &Ctx<'_>, p: &RelPath) -> Result<Anchored, StepError> {
    cx.beneath.resolve(p).map_err(|e| refused_local(cx, p, e))
}

/// `p` could not be resolved beneath the folder's root (a symlinked or missing parent).
fn refused_local(cx: &Ctx<'_>, p: &RelPath, e: ResolveError) -> StepError {
    let kind = match &e {
        ResolveError::UnsafeParent(_) => FailureKind::Unsafe,
        ResolveError::Io(e) => FailureKind::of_io(e),
    };
    StepError::local(
        kind,
        format!("refused {p} in folder {}: {e}", cx.local.root.display()),
    )
}

/// The path of a local file to send, checked like [`full`] (no ancestor may be a symlink), but
/// a plain path, read later by the mirror. Safe for reads only because what is read is checked
/// against the journaled hash ([`PutItem::expect`]): nothing else can be stored under that
/// name. For the files of one batch: each directory among their ancestors is looked at once
/// (`checked` holds those found to be real directories), not once per file in it.
///
/// [`PutItem::expect`]: briefcase_mirror::PutItem::expect
pub(super) fn source_in_batch(
    cx: &Ctx<'_>,
    p: &RelPath,
    checked: &mut std::collections::HashSet<RelPath>,
) -> Result<PathBuf, StepError> {
    for anc in p.ancestors() {
        if checked.contains(&anc) {
            continue;
        }
        match fs::symlink_metadata(anc.under(&cx.local.root)) {
            Ok(m) if m.file_type().is_dir() => {
                checked.insert(anc);
            }
            Ok(_) => {
                return Err(refused_local(
                    cx,
                    p,
                    ResolveError::UnsafeParent(anc.display()),
                ))
            }
            // Gone: the read fails, and the item with it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(refused_local(cx, p, e.into())),
        }
    }
    Ok(p.under(&cx.local.root))
}

/// A local I/O error at `p` while doing `what`.
pub(super) fn local_io(cx: &Ctx<'_>, p: &RelPath, what: &str, e: io::Error) -> StepError {
    StepError::local(
        FailureKind::of_io(&e),
        format!("folder {}: {what} {p}: {e}", cx.local.root.display()),
    )
}

/// Invariant 1: does the local path still hold what the journal says (`None`/tombstone: nothing)?
pub(super) fn local_unchanged(
    cx: &Ctx<'_>,
    p: &RelPath,
    recorded: Option<&Entry>,
) -> Result<bool, StepError> {
    let path = full(cx, p)?;
    local_unchanged_at(cx, p, &path, recorded)
}

/// [`local_unchanged`] of `p` already resolved to `path`.
pub(super) fn local_unchanged_at(
    cx: &Ctx<'_>,
    p: &RelPath,
    path: &Anchored,
    recorded: Option<&Entry>,
) -> Result<bool, StepError> {
    match (fs::symlink_metadata(path.path()), recorded) {
        (Err(e), _) if e.kind() == io::ErrorKind::NotFound => {
            Ok(recorded.is_none_or(|e| e.deleted))
        }
        (Err(e), _) => Err(local_io(cx, p, "stat", e)),
        (Ok(_), None) => Ok(false),
        (Ok(m), Some(e)) => Ok(stat_matches(e, &m)),
    }
}

/// `e` as the local replica holds it: with the inode, observed mtime and mode of `m` (none:
/// the entry's own mtime, no inode).
pub(super) fn local_entry(e: &Entry, m: Option<&fs::Metadata>) -> Entry {
    let mut l = e.clone();
    match m {
        Some(m) => {
            l.inode = m.ino();
            l.observed_mtime_ns = mtime_ns(m);
            // What the file has here ([`local_mode`] may have dropped bits the other side has).
            if matches!(l.kind, EntryKind::File | EntryKind::Dir) && !l.deleted {
                l.mode = m.mode() & 0o7777;
            }
        }
        None => {
            l.inode = 0;
            l.observed_mtime_ns = e.mtime_ns;
        }
    }
    l
}

/// The mode a file or directory from a mirror gets here (invariant 8): never setuid, setgid or
/// sticky (a mirror is writable by whoever can write the NAS or hold the stick: a setuid
/// binary from there must not become one here), and group or world write only where this
/// process's umask allows it.
pub fn local_mode(mode: u32) -> u32 {
    mode & 0o777 & !(umask() & 0o022)
}

/// This process's umask, read from `/proc/self/status` (`umask(2)` cannot read it without
/// setting it, which would race with other threads); 022 when it cannot be read.
fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o022)
    })
}

/// [`meta`] for writing locally: the mode through [`local_mode`].
fn local_meta(e: &Entry) -> FileMeta {
    FileMeta {
        mode: local_mode(e.mode),
        mtime_ns: e.mtime_ns,
    }
}

/// Makes sure the local parents of `p` exist as real directories (each made with `mkdirat`
/// under its held parent: [`Beneath::create_dir_all`]).
pub(super) fn local_parents(cx: &Ctx<'_>, p: &RelPath) -> Result<(), StepError> {
    if let Some(parent) = p.parent() {
        match cx.beneath.create_dir_all(&parent) {
            Ok(_) => {}
            Err(ResolveError::UnsafeParent(bad)) => {
                return Err(StepError::local(
                    FailureKind::Unsafe,
                    format!(
                        "folder {}: {bad} is not a directory (or is a symlink); cannot create {p}",
                        cx.local.root.display()
                    ),
                ))
            }
            Err(ResolveError::Io(e)) => return Err(local_io(cx, &parent, "create directory", e)),
        }
    }
    Ok(())
}

/// Moves the local file `from_l` to where `to_r` says (the mirror's side renamed it), if both
/// local paths still hold what the journal says; `Ok(false)` when not (the caller copies instead).
pub(super) fn rename_locally(
    cx: &mut Ctx<'_>,
    to_r: &Entry,
    to_l: Option<&Entry>,
    from_r: &Entry,
    from_l: &Entry,
) -> Result<bool, StepError> {
    if !local_unchanged(cx, &from_l.path, Some(from_l))? || !local_unchanged(cx, &to_r.path, to_l)?
    {
        return Ok(false);
    }
    local_parents(cx, &to_r.path)?;
    let (src, dst) = (full(cx, &from_l.path)?, full(cx, &to_r.path)?);
    fs::rename(src.path(), dst.path()).map_err(|e| local_io(cx, &to_r.path, "rename", e))?;
    fsutil::apply_meta(dst.path(), local_meta(to_r))
        .map_err(|e| local_io(cx, &to_r.path, "set metadata of", e))?;
    let m = fs::symlink_metadata(dst.path()).map_err(|e| local_io(cx, &to_r.path, "stat", e))?;
    cx.pending.push(local_entry(to_r, Some(&m)));
    cx.pending.push(local_entry(from_r, None));
    Ok(true)
}

/// Fetches the mirror's file into a verified temp file beside `dest` (in the directory `dest`
/// holds open); returns the temp file.
pub(super) async fn fetch_verified(
    cx: &Ctx<'_>,
    r: &Entry,
    dest: &Anchored,
    durable: bool,
) -> Result<Option<Anchored>, StepError> {
    let tmp = dest
        .sibling(&fsutil::temp_name())
        .map_err(|e| local_io(cx, &r.path, "name a temp file for", e))?;
    let res: Result<bool, StepError> = async {
        cx.mirror.get(&r.path, tmp.path()).await?;
        let (h, _) =
            scan::hash_file(tmp.path()).map_err(|e| local_io(cx, &r.path, "read back", e))?;
        if Some(h) != r.hash {
            return Ok(false);
        }
        if durable {
            let f = fs::File::open(tmp.path()).map_err(|e| local_io(cx, &r.path, "open", e))?;
            f.sync_all()
                .map_err(|e| local_io(cx, &r.path, "fsync", e))?;
        }
        fsutil::apply_meta(tmp.path(), local_meta(r))
            .map_err(|e| local_io(cx, &r.path, "set metadata of", e))?;
        Ok(true)
    }
    .await;
    match res {
        Ok(true) => Ok(Some(tmp)),
        other => {
            let _ = fs::remove_file(tmp.path());
            other.map(|_| None)
        }
    }
}

/// Writes the mirror's version `r` at local path `at` (which must hold what `recorded` says).
/// Returns the new local metadata, or `None` when deferred (a side changed).
pub(super) async fn materialise(
    cx: &mut Ctx<'_>,
    r: &Entry,
    at: &RelPath,
    recorded: Option<&Entry>,
) -> Result<Option<fs::Metadata>, StepError> {
    local_parents(cx, at)?;
    let dest = full(cx, at)?;
    let cur = fs::symlink_metadata(dest.path()).ok();
    match r.kind {
        EntryKind::Dir => {
            if let Some(m) = &cur {
                if !m.is_dir() {
                    if !local_unchanged(cx, at, recorded)? {
                        return Ok(None);
                    }
                    fs::remove_file(dest.path()).map_err(|e| local_io(cx, at, "remove", e))?;
                }
            }
            match fs::create_dir(dest.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(local_io(cx, at, "create directory", e)),
            }
            let _ = briefcase_mirror::beneath::chmod_nofollow(dest.path(), local_mode(r.mode));
        }
        EntryKind::Symlink => {
            let tmp = dest
                .sibling(&fsutil::temp_name())
                .map_err(|e| local_io(cx, at, "name a temp file for", e))?;
            let target = std::ffi::OsStr::new("").to_owned();
            let target = r
                .symlink_target
                .as_ref()
                .map(|t| {
                    <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(t).to_owned()
                })
                .unwrap_or(target);
            std::os::unix::fs::symlink(&target, tmp.path())
                .map_err(|e| local_io(cx, at, "create symlink", e))?;
            if !local_unchanged(cx, at, recorded)? || cur.as_ref().is_some_and(|m| m.is_dir()) {
                let _ = fs::remove_file(tmp.path());
                return Ok(None);
            }
            if let Err(e) = fs::rename(tmp.path(), dest.path()) {
                let _ = fs::remove_file(tmp.path());
                return Err(local_io(cx, at, "rename", e));
            }
        }
        EntryKind::File => {
            let Some(tmp) = fetch_verified(cx, r, &dest, true).await? else {
                return Err(mismatch(cx, r));
            };
            // Invariant 1: re-check right before the rename.
            if !local_unchanged(cx, at, recorded)? {
                let _ = fs::remove_file(tmp.path());
                return Ok(None);
            }
            if cur.as_ref().is_some_and(|m| m.is_dir()) {
                if let Err(e) = fs::remove_dir(dest.path()) {
                    let _ = fs::remove_file(tmp.path());
                    return Err(local_io(cx, at, "replace directory", e));
                }
            }
            if let Err(e) = fs::rename(tmp.path(), dest.path()) {
                let _ = fs::remove_file(tmp.path());
                return Err(local_io(cx, at, "rename", e));
            }
        }
    }
    let _ = fsutil::fsync_dir(dest.parent());
    fs::symlink_metadata(dest.path())
        .map(Some)
        .map_err(|e| local_io(cx, at, "stat", e))
}

/// Makes the local path match the mirror's newer entry `r` (`l`: what the journal holds there):
/// removes it, sets its metadata, queues a plain file for the batch, or materialises the rest.
pub(super) async fn pull(
    cx: &mut Ctx<'_>,
    r: Entry,
    l: Option<Entry>,
    report: &mut SyncReport,
) -> StepResult {
    let p = r.path.clone();
    if let Some(why) = vcs_busy(cx, &p)? {
        return Ok(Outcome::Deferred(why));
    }
    let l_live = l.as_ref().filter(|e| !e.deleted);
    if r.deleted {
        if let Some(le) = l_live {
            if !local_unchanged(cx, &p, Some(le))? {
                cx.local.rescan(Some(std::slice::from_ref(&p)))?;
                return Ok(Outcome::Deferred(
                    "changed here during the sync; the edit is kept".into(),
                ));
            }
            let path = full(cx, &p)?;
            let res = if le.kind == EntryKind::Dir {
                fs::remove_dir(path.path())
            } else {
                fs::remove_file(path.path())
            };
            match res {
                Ok(()) => report.removed_local += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e)
                    if le.kind == EntryKind::Dir && e.raw_os_error() == Some(libc::ENOTEMPTY) =>
                {
                    // Files the deleting side never saw live in it: edit beats delete, keep the
                    // directory as a new local change that the next round sends back.
                    let mut b = cx.local.journal.begin()?;
                    let stamp = b.next_osn();
                    let mut keep = le.clone();
                    keep.version = le.version.merged(&r.version);
                    keep.version.set(stamp.replica, stamp.osn);
                    keep.stamp = stamp;
                    b.put(&keep)?;
                    b.log(
                        stamp,
                        "keep",
                        &p,
                        Some("directory deleted elsewhere still holds files"),
                    )?;
                    b.commit()?;
                    cx.local.rescan(Some(std::slice::from_ref(&p)))?;
                    return Ok(Outcome::Done);
                }
                Err(e) => return Err(local_io(cx, &p, "remove", e)),
            }
            let shown = p
                .parent()
                .map_or_else(|| cx.local.root.clone(), |d| d.under(&cx.local.root));
            cx.dirty_dirs.entry(path.parent_handle()).or_insert(shown);
        }
        cx.pending.push(local_entry(&r, None));
        return Ok(Outcome::Done);
    }
    // Same content here already: metadata only.
    if let Some(le) = l_live {
        if le.same_content(&r) && local_unchanged(cx, &p, Some(le))? {
            let path = full(cx, &p)?;
            if r.kind == EntryKind::File && (le.mode != r.mode || le.mtime_ns != r.mtime_ns) {
                fsutil::apply_meta(path.path(), local_meta(&r))
                    .map_err(|e| local_io(cx, &p, "set metadata of", e))?;
            }
            let m = fs::symlink_metadata(path.path()).ok();
            cx.pending.push(local_entry(&r, m.as_ref()));
            return Ok(Outcome::Done);
        }
    }
    // A plain file: fetched and verified now, landed with the others of its batch (one flush).
    if r.kind == EntryKind::File {
        local_parents(cx, &p)?;
        let dest = full(cx, &p)?;
        if !fs::symlink_metadata(dest.path()).is_ok_and(|m| m.is_dir()) {
            let Some(tmp) = fetch_verified(cx, &r, &dest, false).await? else {
                return Err(mismatch(cx, &r));
            };
            cx.fetched_bytes += r.size;
            let batch = cx
                .fetched
                .get_or_insert_with(|| fsutil::BatchReplace::new(&cx.local.root));
            batch.adopt(tmp, dest);
            cx.fetched_entries.push((r, l));
            return Ok(Outcome::Done);
        }
    }
    match materialise(cx, &r, &p, l.as_ref()).await? {
        Some(m) => {
            report.pulled += 1;
            cx.pending.push(local_entry(&r, Some(&m)));
            Ok(Outcome::Done)
        }
        None => {
            cx.local.rescan(Some(std::slice::from_ref(&p)))?;
            Ok(Outcome::Deferred("changed here during the sync; the local edit was journaled and will meet the incoming one as a conflict".into()))
        }
    }
}

/// How long a version-control lock here keeps incoming changes out of its directory before it
/// is taken for a leftover of a crashed command (the watcher's `git_lock_wait`).
const VCS_LOCK_STALE: std::time::Duration = std::time::Duration::from_secs(30);

/// Why nothing may be written at `p` now: it lies in a `.git` (`.hg`, `.svn`) directory whose
/// tool holds a lock here (a `git commit` or `gc` running). The step is deferred, not failed: a
/// repository is never changed under a running git command.
pub(super) fn vcs_busy(cx: &Ctx<'_>, p: &RelPath) -> Result<Option<String>, StepError> {
    let Some(dir) = crate::vcs::metadata_dir_of(p) else {
        return Ok(None);
    };
    let Ok(abs) = fsutil::resolve(&cx.local.root, &dir) else {
        return Ok(None);
    };
    Ok(crate::vcs::busy(&abs, VCS_LOCK_STALE).map(|lock| {
        format!(
            "{} is in use here ({} exists); taken at the next sync",
            dir,
            lock.display()
        )
    }))
}
