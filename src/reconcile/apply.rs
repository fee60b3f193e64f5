//! Applying a plan: the effects. Local writes keep invariants 1 and 2: incoming content goes to a
//! `.briefcase-tmp-*` file in the target's directory, is verified against its blake3 hash,
//! fsynced, given its mode and mtime, and renamed over the target only after re-checking that the
//! local file still matches what the journal recorded; if it does not, the step is deferred and
//! the local edit is journaled first, so the next round sees a conflict instead of losing a write.
//! Every local path is resolved without following symlinks (invariant 6).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use briefcase_mirror::beneath::{Anchored, Beneath, ParentDir, ResolveError};
use briefcase_mirror::fsutil::{self, mtime_ns};
use briefcase_mirror::{
    ContentHash, Entry, EntryKind, FileMeta, Mirror, MirrorError, MirrorState, PutItem, PutSource,
    RelPath, RemoteStat, Stamp,
};

use super::conflict::{conflict_name, conflict_name_tagged, original_of, CONFLICT_TAG};
use super::plan::{Resolution, Side, Step};
use super::remote::remote_matches;
use super::{ReconcileResult, SyncReport};
use crate::journal::JournalError;
use crate::replica::LocalReplica;
use crate::scan::{self, stat_matches};

/// How one step ended.
enum Outcome {
    Done,
    /// A side changed under us; redo next time (the reason is reported).
    Deferred(String),
}

/// A per-step failure that does not stop the other steps.
type StepResult = Result<Outcome, StepError>;

enum StepError {
    /// Stops the whole sync (mirror went away, journal failed).
    Fatal(super::ReconcileError),
    /// Only this path.
    Path(String),
}

impl From<MirrorError> for StepError {
    fn from(e: MirrorError) -> Self {
        if e.is_transient() || matches!(e, MirrorError::Corrupt { .. }) {
            StepError::Fatal(e.into())
        } else {
            StepError::Path(e.to_string())
        }
    }
}

impl From<crate::replica::ReplicaError> for StepError {
    fn from(e: crate::replica::ReplicaError) -> Self {
        StepError::Fatal(e.into())
    }
}

impl From<JournalError> for StepError {
    fn from(e: JournalError) -> Self {
        StepError::Fatal(e.into())
    }
}

struct Ctx<'a> {
    local: &'a mut LocalReplica,
    /// The local root held open: every local write, rename, removal and mode change goes
    /// through it (invariant 6, without races).
    beneath: Beneath,
    mirror: &'a dyn Mirror,
    st: &'a mut MirrorState,
    /// Journal entries of pulled paths, committed in batches.
    pending: Vec<Entry>,
    names: HashMap<briefcase_mirror::ReplicaId, String>,
    /// File pushes waiting for [`send_queued`], and their size in bytes.
    queued: Vec<Entry>,
    queued_bytes: u64,
    /// Fetched and verified files waiting for [`land_fetched`] (temp files in `fetched`, the
    /// incoming and recorded local entries in `fetched_entries`), and their size in bytes.
    fetched: Option<fsutil::BatchReplace>,
    fetched_entries: Vec<(Entry, Option<Entry>)>,
    fetched_bytes: u64,
    /// Removals on the mirror waiting for [`send_removals`]: (local tombstone, mirror entry).
    removals: Vec<(Entry, Entry)>,
    /// Local directories whose entries were removed (held open, with the path to name them),
    /// fsynced once before the journal commit.
    dirty_dirs: std::collections::BTreeMap<ParentDir, PathBuf>,
}

/// Most files, and bytes, in one [`Mirror::put_batch`].
const PUT_BATCH: usize = 1024;
const PUT_BATCH_BYTES: u64 = 64 << 20;

/// Journal batch size for pulled entries (a crash between apply and commit is healed by the
/// next scan: the file is found with the same content and merged).
const JOURNAL_BATCH: usize = 512;

/// Applies `steps` (in order) and updates `st` (the mirror's state, committed by the caller) and
/// the local journal. Per-path problems are recorded in `report`.
///
/// # Errors
/// Only what stops the whole sync: a mirror going offline, journal failures.
pub async fn apply(
    local: &mut LocalReplica,
    mirror: &dyn Mirror,
    st: &mut MirrorState,
    steps: Vec<Step>,
    report: &mut SyncReport,
) -> ReconcileResult<()> {
    let mut names: HashMap<_, _> = local.journal.replica_names()?.into_iter().collect();
    for (r, n) in &st.replica_names {
        names.entry(*r).or_insert_with(|| n.clone());
    }
    let beneath = Beneath::open(&local.root).map_err(|source| super::ReconcileError::Local {
        path: local.root.clone(),
        source,
    })?;
    let mut cx = Ctx {
        local,
        beneath,
        mirror,
        st,
        pending: Vec::new(),
        names,
        queued: Vec::new(),
        queued_bytes: 0,
        fetched: None,
        fetched_entries: Vec::new(),
        fetched_bytes: 0,
        removals: Vec::new(),
        dirty_dirs: std::collections::BTreeMap::new(),
    };

    // Renames first: a path removed on one side whose content reappears under another name is
    // moved, not copied (this also covers renames whose event pair was missed).
    let steps = renames(&mut cx, steps, report).await?;

    for step in steps {
        // Queued writes go out before anything that is not another push of content.
        if !matches!(&step, Step::Push { local, .. } if !local.deleted) {
            send_queued(&mut cx, report).await?;
        }
        if !matches!(&step, Step::Push { local, .. } if local.deleted) {
            send_removals(&mut cx, report).await?;
        }
        if !matches!(&step, Step::Pull { remote, .. } if !remote.deleted) {
            land_fetched(&mut cx, report)?;
        }
        let path = step.path().display();
        let r = match step {
            Step::Push { local, remote } => push(&mut cx, local, remote, report).await,
            Step::Pull { remote, local } => pull(&mut cx, remote, local, report).await,
            Step::Resolve { local, remote, how } => {
                resolve(&mut cx, local, remote, how, report).await
            }
        };
        if let Some(e) = note(report, &path, r) {
            flush(&mut cx)?;
            return Err(e);
        }
        if cx.pending.len() >= JOURNAL_BATCH {
            flush(&mut cx)?;
        }
        if cx.queued.len() >= PUT_BATCH || cx.queued_bytes >= PUT_BATCH_BYTES {
            send_queued(&mut cx, report).await?;
        }
        if cx.removals.len() >= PUT_BATCH {
            send_removals(&mut cx, report).await?;
        }
        if cx.fetched_entries.len() >= PUT_BATCH || cx.fetched_bytes >= PUT_BATCH_BYTES {
            land_fetched(&mut cx, report)?;
        }
    }
    send_removals(&mut cx, report).await?;
    send_queued(&mut cx, report).await?;
    land_fetched(&mut cx, report)?;
    flush(&mut cx)?;
    Ok(())
}

fn mismatch(cx: &Ctx<'_>, r: &Entry) -> StepError {
    StepError::Path(format!(
        "{} on mirror {} does not match its recorded hash (changed during the sync?); not applied, retried next sync",
        r.path,
        cx.mirror.location()
    ))
}

/// Lands the fetched files of the current batch: one flush of the local file system, then each
/// is renamed into place after re-checking that the local file still holds what the journal
/// says (invariant 1; if not, the local edit is journaled and the step deferred, so the two
/// meet as a conflict next round), then each directory is fsynced once, then journaled.
fn land_fetched(cx: &mut Ctx<'_>, report: &mut SyncReport) -> ReconcileResult<()> {
    let Some(batch) = cx.fetched.take() else {
        return Ok(());
    };
    let entries = std::mem::take(&mut cx.fetched_entries);
    cx.fetched_bytes = 0;
    let mut check_err = None;
    let results = batch.commit_checked(|i, _| {
        let (r, l) = &entries[i];
        match local_unchanged(cx, &r.path, l.as_ref()) {
            Ok(ok) => ok,
            Err(e) => {
                check_err.get_or_insert(e);
                false
            }
        }
    });
    for ((r, _), res) in entries.into_iter().zip(results) {
        let p = r.path.clone();
        match res {
            Ok(Some(m)) => {
                report.pulled += 1;
                cx.pending.push(local_entry(&r, Some(&m)));
            }
            Ok(None) => {
                cx.local.rescan(Some(std::slice::from_ref(&p)))?;
                let why = "changed here during the sync; the local edit was journaled and will meet the incoming one as a conflict";
                tracing::info!(path = %p, reason = %why, "deferred to the next sync");
                report.deferred.push(format!("{p}: {why}"));
            }
            Err(e) => {
                let why = format!(
                    "folder {}: could not write {p} from mirror {}: {e}; nothing was replaced, it is retried next sync (check free space and permissions)",
                    cx.local.root.display(),
                    cx.mirror.location()
                );
                tracing::warn!(path = %p, error = %why, "not synced");
                report.failed.push(why);
            }
        }
    }
    match check_err {
        Some(StepError::Fatal(e)) => Err(e),
        Some(StepError::Path(why)) => {
            report.failed.push(why);
            Ok(())
        }
        None => Ok(()),
    }
}

/// Removes the queued paths with one [`Mirror::remove_batch`] and records each removal in the
/// mirror's state. A directory that still holds files this machine never saw is kept on both
/// sides (edit beats delete, as on the pull side).
async fn send_removals(cx: &mut Ctx<'_>, report: &mut SyncReport) -> ReconcileResult<()> {
    if cx.removals.is_empty() {
        return Ok(());
    }
    let queued = std::mem::take(&mut cx.removals);
    let results = cx
        .mirror
        .remove_batch(queued.iter().map(|(l, _)| l.path.clone()).collect())
        .await;
    let mut fatal = None;
    for ((l, r), res) in queued.into_iter().zip(results) {
        let p = l.path.clone();
        let outcome = match res {
            Ok(()) => {
                report.removed_remote += 1;
                cx.st.insert_entry(mirror_entry(&l, None));
                Ok(Outcome::Done)
            }
            Err(e) if e.is_dir_not_empty() && r.kind == EntryKind::Dir => keep_dir(cx, l, r),
            Err(e) if e.is_transient() => Err(e.into()),
            Err(e) => Err(StepError::Path(format!(
                "could not remove {p} on mirror {} ({e}); it is kept and retried next sync",
                cx.mirror.location()
            ))),
        };
        if let Some(e) = note(report, &p.display(), outcome) {
            fatal.get_or_insert(e);
        }
    }
    match fatal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The directory `l` deleted here still holds, on the mirror (`r`), files this machine never
/// saw: edit beats delete. Keep it here too, as a change that dominates both (the next round
/// sends it back; its new contents are pulled).
fn keep_dir(cx: &mut Ctx<'_>, l: Entry, r: Entry) -> StepResult {
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

/// Writes the queued file pushes with one [`Mirror::put_batch`] and records each in the mirror's
/// state. Each item carries the journal's hash ([`PutItem::expect`]): a file saved again while
/// it was sent is not stored at all (the step is deferred), so whatever the mirror holds is
/// always recorded in its state.
async fn send_queued(cx: &mut Ctx<'_>, report: &mut SyncReport) -> ReconcileResult<()> {
    if cx.queued.is_empty() {
        return Ok(());
    }
    let queued = std::mem::take(&mut cx.queued);
    cx.queued_bytes = 0;
    let items = queued
        .iter()
        .map(|l| -> Result<PutItem, StepError> {
            Ok(PutItem {
                path: l.path.clone(),
                source: PutSource::File(source(cx, &l.path)?),
                meta: meta(l),
                expect: l.hash,
            })
        })
        .collect::<Result<Vec<_>, _>>();
    let items = match items {
        Ok(v) => v,
        Err(StepError::Fatal(e)) => return Err(e),
        Err(StepError::Path(why)) => {
            report.failed.push(why);
            return Ok(());
        }
    };
    let results = cx.mirror.put_batch(items).await;
    let mut fatal = None;
    for (l, r) in queued.into_iter().zip(results) {
        let p = l.path.clone();
        let outcome = match r {
            // The backend checked that what it stored hashes to `l` (`PutItem::expect`): the
            // mirror holds exactly this version, whatever the local file holds by now. Leaving
            // it unrecorded would make the next look at the mirror take this machine's own
            // write for an edit made there, and meet the next local save as a conflict
            // (issue 8: spurious conflicts and resurrected lock files inside `.git`).
            Ok(s) => {
                report.pushed += 1;
                cx.st.insert_entry(mirror_entry(&l, Some(&s)));
                Ok(Outcome::Done)
            }
            // Saved again while it was read: nothing was stored; the new content is journaled
            // by the watcher (or the next scan) and sent then.
            Err(MirrorError::SourceChanged { .. }) => Ok(Outcome::Deferred(
                "changed here while it was sent; it will be sent again with its new content".into(),
            )),
            Err(e) => Err(StepError::from(e)),
        };
        if let Some(e) = note(report, &p.display(), outcome) {
            fatal.get_or_insert(e);
        }
    }
    match fatal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Records how a step ended in `report` (and the log); returns the error that stops the sync.
fn note(report: &mut SyncReport, path: &str, r: StepResult) -> Option<super::ReconcileError> {
    match r {
        Ok(Outcome::Done) => None,
        Ok(Outcome::Deferred(why)) => {
            tracing::info!(path = %path, reason = %why, "deferred to the next sync");
            report.deferred.push(format!("{path}: {why}"));
            None
        }
        Err(StepError::Path(why)) => {
            tracing::warn!(path = %path, error = %why, "not synced");
            report.failed.push(why);
            None
        }
        Err(StepError::Fatal(e)) => Some(e),
    }
}

fn flush(cx: &mut Ctx<'_>) -> ReconcileResult<()> {
    // Local removals become durable before the journal records them (one fsync per directory).
    let dirs = std::mem::take(&mut cx.dirty_dirs);
    if let Some((d, Some(e))) = fsutil::fsync_dirs(dirs.keys().map(ParentDir::path))
        .into_iter()
        .find(|(_, e)| e.is_some())
    {
        let shown = dirs
            .iter()
            .find(|(h, _)| h.path() == d)
            .map_or(d, |(_, p)| p.clone());
        return Err(super::ReconcileError::Local {
            path: shown,
            source: io::Error::other(format!("fsync after removals: {e}")),
        });
    }
    if cx.pending.is_empty() {
        return Ok(());
    }
    let mut b = cx.local.journal.begin()?;
    for e in cx.pending.drain(..) {
        b.put(&e)?;
        b.log(
            e.stamp,
            if e.deleted { "delete" } else { "pull" },
            &e.path,
            None,
        )?;
    }
    b.commit()?;
    Ok(())
}

/// `p` in the local folder, its parent directory held open ([`Beneath::resolve`]): use its
/// path only while it lives.
fn full(cx: &Ctx<'_>, p: &RelPath) -> Result<Anchored, StepError> {
    cx.beneath.resolve(p).map_err(|e| refused_local(cx, p, e))
}

fn refused_local(cx: &Ctx<'_>, p: &RelPath, e: ResolveError) -> StepError {
    StepError::Path(format!(
        "refused {p} in folder {}: {e}",
        cx.local.root.display()
    ))
}

/// The path of a local file to send: checked like [`full`], but a plain path, read later by the
/// mirror. Safe for reads only because what is read is checked against the journaled hash
/// ([`PutItem::expect`]): nothing else can be stored under that name.
fn source(cx: &Ctx<'_>, p: &RelPath) -> Result<PathBuf, StepError> {
    fsutil::resolve(&cx.local.root, p).map_err(|e| refused_local(cx, p, e))
}

fn local_io(cx: &Ctx<'_>, p: &RelPath, what: &str, e: io::Error) -> StepError {
    StepError::Path(format!(
        "folder {}: {what} {p}: {e}",
        cx.local.root.display()
    ))
}

/// Invariant 1: does the local path still hold what the journal says (`None`/tombstone: nothing)?
fn local_unchanged(cx: &Ctx<'_>, p: &RelPath, recorded: Option<&Entry>) -> Result<bool, StepError> {
    let path = full(cx, p)?;
    match (fs::symlink_metadata(path.path()), recorded) {
        (Err(e), _) if e.kind() == io::ErrorKind::NotFound => {
            Ok(recorded.is_none_or(|e| e.deleted))
        }
        (Err(e), _) => Err(local_io(cx, p, "stat", e)),
        (Ok(_), None) => Ok(false),
        (Ok(m), Some(e)) => Ok(stat_matches(e, &m)),
    }
}

/// The mirror-side counterpart: does the mirror still hold what its state says?
async fn remote_unchanged(
    cx: &Ctx<'_>,
    p: &RelPath,
    recorded: Option<&Entry>,
) -> Result<bool, StepError> {
    let s = cx.mirror.stat(p).await?;
    let g = cx.mirror.capabilities();
    Ok(match (s, recorded) {
        (None, r) => r.is_none_or(|e| e.deleted),
        (Some(_), None) => false,
        (Some(_), Some(e)) if e.deleted => false,
        (Some(s), Some(e)) => remote_matches(e, &s, &g),
    })
}

/// `e` as the mirror holds it: with the mirror's inode and observed mtime from `s` (none: the
/// entry's own mtime, no inode).
///
/// Chunk lists stay in the local journal (and in a stick's own catalog): the mirror's manifest
/// records content by its whole-file hash, so a one-line edit of a big file does not rewrite a
/// list of thousands of chunks in the mirror's state.
pub(super) fn mirror_entry(e: &Entry, s: Option<&RemoteStat>) -> Entry {
    let mut m = e.clone();
    m.chunks = Vec::new();
    match s {
        Some(s) => {
            m.inode = s.inode;
            m.observed_mtime_ns = s.mtime_ns;
        }
        None => {
            m.inode = 0;
            m.observed_mtime_ns = e.mtime_ns;
        }
    }
    m
}

fn local_entry(e: &Entry, m: Option<&fs::Metadata>) -> Entry {
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

fn meta(e: &Entry) -> FileMeta {
    FileMeta {
        mode: e.mode,
        mtime_ns: e.mtime_ns,
    }
}

/// Makes sure the mirror has the parent directories of `p` (creating missing ones with the
/// local directory's metadata).
async fn remote_parents(cx: &mut Ctx<'_>, p: &RelPath) -> Result<(), StepError> {
    for a in p.ancestors() {
        if cx
            .st
            .entry(&a)
            .is_some_and(|e| !e.deleted && e.kind == EntryKind::Dir)
        {
            continue;
        }
        let m = match cx.local.journal.entry(&a)? {
            Some(e) if !e.deleted && e.kind == EntryKind::Dir => meta(&e),
            _ => FileMeta {
                mode: 0o755,
                mtime_ns: crate::journal::now_ns(),
            },
        };
        let s = cx.mirror.mkdir(&a, m).await?;
        // Record it, or the next push of this directory would find an unexpected directory on
        // the mirror and defer.
        if let Some(e) = cx.local.journal.entry(&a)? {
            if !e.deleted && e.kind == EntryKind::Dir {
                cx.st.insert_entry(mirror_entry(&e, Some(&s)));
            }
        }
    }
    Ok(())
}

/// Makes sure the local parents of `p` exist as real directories (each made with `mkdirat`
/// under its held parent: [`Beneath::create_dir_all`]).
fn local_parents(cx: &Ctx<'_>, p: &RelPath) -> Result<(), StepError> {
    if let Some(parent) = p.parent() {
        match cx.beneath.create_dir_all(&parent) {
            Ok(_) => {}
            Err(ResolveError::UnsafeParent(bad)) => {
                return Err(StepError::Path(format!(
                    "folder {}: {bad} is not a directory (or is a symlink); cannot create {p}",
                    cx.local.root.display()
                )))
            }
            Err(ResolveError::Io(e)) => return Err(local_io(cx, &parent, "create directory", e)),
        }
    }
    Ok(())
}

async fn renames(
    cx: &mut Ctx<'_>,
    steps: Vec<Step>,
    report: &mut SyncReport,
) -> ReconcileResult<Vec<Step>> {
    // Content hash → index of a removal step whose other side still has that file.
    let mut push_removed: HashMap<ContentHash, usize> = HashMap::new();
    let mut pull_removed: HashMap<ContentHash, usize> = HashMap::new();
    for (i, s) in steps.iter().enumerate() {
        match s {
            Step::Push {
                local,
                remote: Some(r),
            } if local.deleted && !r.deleted && r.kind == EntryKind::File => {
                if let Some(h) = r.hash {
                    push_removed.insert(h, i);
                }
            }
            Step::Pull {
                remote,
                local: Some(l),
            } if remote.deleted && !l.deleted && l.kind == EntryKind::File => {
                if let Some(h) = l.hash {
                    pull_removed.insert(h, i);
                }
            }
            _ => {}
        }
    }
    if push_removed.is_empty() && pull_removed.is_empty() {
        return Ok(steps);
    }
    let mut done = vec![false; steps.len()];
    let can_rename = cx.mirror.capabilities().rename;
    for i in 0..steps.len() {
        let r = match &steps[i] {
            Step::Push { local, remote }
                if !local.deleted
                    && local.kind == EntryKind::File
                    && can_rename
                    && remote.as_ref().is_none_or(|r| r.deleted) =>
            {
                let Some(j) = local.hash.and_then(|h| push_removed.remove(&h)) else {
                    continue;
                };
                let Step::Push {
                    local: from_l,
                    remote: Some(from_r),
                } = &steps[j]
                else {
                    continue;
                };
                rename_on_mirror(cx, local, remote.as_ref(), from_l, from_r)
                    .await
                    .map(|ok| ok.then_some(j))
            }
            Step::Pull { remote, local }
                if !remote.deleted
                    && remote.kind == EntryKind::File
                    && local.as_ref().is_none_or(|l| l.deleted) =>
            {
                let Some(j) = remote.hash.and_then(|h| pull_removed.remove(&h)) else {
                    continue;
                };
                let Step::Pull {
                    remote: from_r,
                    local: Some(from_l),
                } = &steps[j]
                else {
                    continue;
                };
                rename_locally(cx, remote, local.as_ref(), from_r, from_l).map(|ok| ok.then_some(j))
            }
            _ => continue,
        };
        match r {
            Ok(Some(j)) => {
                done[i] = true;
                done[j] = true;
                report.renamed += 1;
            }
            Ok(None) => {}
            Err(StepError::Fatal(e)) => return Err(e),
            Err(StepError::Path(why)) => {
                tracing::debug!(error = %why, "rename shortcut not taken; copying instead")
            }
        }
    }
    flush(cx)?;
    Ok(steps
        .into_iter()
        .zip(done)
        .filter(|(_, d)| !d)
        .map(|(s, _)| s)
        .collect())
}

async fn rename_on_mirror(
    cx: &mut Ctx<'_>,
    to_l: &Entry,
    to_r: Option<&Entry>,
    from_l: &Entry,
    from_r: &Entry,
) -> Result<bool, StepError> {
    if !remote_unchanged(cx, &from_r.path, Some(from_r)).await?
        || !remote_unchanged(cx, &to_l.path, to_r).await?
    {
        return Ok(false);
    }
    remote_parents(cx, &to_l.path).await?;
    let s = cx.mirror.rename(&from_r.path, &to_l.path).await?;
    let s = if s.mode != to_l.mode || s.mtime_ns != to_l.mtime_ns {
        cx.mirror.set_meta(&to_l.path, meta(to_l)).await?
    } else {
        s
    };
    cx.st.insert_entry(mirror_entry(to_l, Some(&s)));
    cx.st.insert_entry(mirror_entry(from_l, None));
    Ok(true)
}

fn rename_locally(
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

async fn push(cx: &mut Ctx<'_>, l: Entry, r: Option<Entry>, report: &mut SyncReport) -> StepResult {
    let p = l.path.clone();
    // An earlier step of this sync may have written the path already (a parent directory made
    // for a child): what the state says now is what the mirror holds.
    let r = cx.st.entry(&p).cloned().or(r);
    if !remote_unchanged(cx, &p, r.as_ref()).await? {
        return Ok(Outcome::Deferred(format!(
            "changed on mirror {} during the sync",
            cx.mirror.location()
        )));
    }
    let r_live = r.as_ref().filter(|e| !e.deleted);
    if l.deleted {
        if let Some(r) = r_live {
            // Removed in a batch (one fsync per directory); a directory waits for the removal
            // of what was queued below it.
            let depth = p.components().count();
            if cx
                .removals
                .last()
                .is_some_and(|(q, _)| q.path.components().count() > depth)
            {
                send_removals(cx, report).await.map_err(StepError::Fatal)?;
            }
            cx.removals.push((l, r.clone()));
            return Ok(Outcome::Done);
        }
        cx.st.insert_entry(mirror_entry(&l, None));
        return Ok(Outcome::Done);
    }
    // Same content already there: metadata only.
    if let Some(r) = r_live {
        if r.same_content(&l) {
            let s = if l.kind == EntryKind::File && (r.mode != l.mode || r.mtime_ns != l.mtime_ns) {
                report.pushed += 1;
                Some(cx.mirror.set_meta(&p, meta(&l)).await?)
            } else {
                cx.mirror.stat(&p).await?
            };
            cx.st.insert_entry(mirror_entry(&l, s.as_ref()));
            return Ok(Outcome::Done);
        }
        if r.kind != l.kind {
            cx.mirror.remove(&p).await?;
        }
    }
    remote_parents(cx, &p).await?;
    let s = match l.kind {
        EntryKind::Dir => cx.mirror.mkdir(&p, meta(&l)).await?,
        EntryKind::Symlink => {
            let target = l.symlink_target.clone().unwrap_or_default();
            cx.mirror.symlink(&p, &target).await?
        }
        EntryKind::File => {
            if !local_unchanged(cx, &p, Some(&l))? {
                return Ok(Outcome::Deferred(
                    "changed here during the sync; it will be sent with its new content".into(),
                ));
            }
            if let Some(max) = cx.mirror.capabilities().max_file_size {
                if l.size > max {
                    return Err(StepError::Path(format!(
                        "{p} ({} bytes) is larger than mirror {} can hold ({max} bytes); use an exFAT or ext4 medium or a stick: mirror",
                        l.size,
                        cx.mirror.location()
                    )));
                }
            }
            // Sent in a batch (one flush for many small files); recorded there.
            cx.queued_bytes += l.size;
            cx.queued.push(l);
            return Ok(Outcome::Done);
        }
    };
    report.pushed += 1;
    cx.st.insert_entry(mirror_entry(&l, Some(&s)));
    Ok(Outcome::Done)
}

/// Fetches the mirror's file into a verified temp file beside `dest` (in the directory `dest`
/// holds open); returns the temp file.
async fn fetch_verified(
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
async fn materialise(
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

async fn pull(cx: &mut Ctx<'_>, r: Entry, l: Option<Entry>, report: &mut SyncReport) -> StepResult {
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

/// A new local stamp for `e` whose version dominates both `e` and `other`.
fn settled(
    cx: &mut Ctx<'_>,
    e: Entry,
    other: &Entry,
    m: Option<&fs::Metadata>,
    op: &str,
    detail: Option<&str>,
) -> Result<Stamp, StepError> {
    settle_as(cx, e, other, m, op, detail, true)
}

/// [`settled`], with the version the join of both plus a new event of this replica (`event`),
/// or the join alone. A merge of the same content must not add an event: two machines merging
/// the same content would then make two new concurrent versions, which two mirrors they both
/// sync with carry across to be merged again, forever. The join of the same versions is the
/// same everywhere, and the new stamp still marks the entry as changed here, to be sent on.
fn settle_as(
    cx: &mut Ctx<'_>,
    mut e: Entry,
    other: &Entry,
    m: Option<&fs::Metadata>,
    op: &str,
    detail: Option<&str>,
    event: bool,
) -> Result<Stamp, StepError> {
    flush(cx).map_err(StepError::Fatal)?;
    let mut b = cx.local.journal.begin()?;
    let stamp = b.next_osn();
    e.version = e.version.merged(&other.version);
    if event {
        e.version.set(stamp.replica, stamp.osn);
    }
    e.stamp = stamp;
    if let Some(m) = m {
        e.inode = m.ino();
        e.observed_mtime_ns = mtime_ns(m);
    }
    b.put(&e)?;
    b.log(stamp, op, &e.path, detail)?;
    b.commit()?;
    Ok(stamp)
}

/// Journals a conflict copy as a new local file.
fn record_copy(
    cx: &mut Ctx<'_>,
    mut e: Entry,
    at: &RelPath,
    m: &fs::Metadata,
    of: &RelPath,
) -> Result<(), StepError> {
    let mut b = cx.local.journal.begin()?;
    let old = b.entry(at)?;
    let stamp = b.next_osn();
    e.path = at.clone();
    e.version = old.map(|o| o.version).unwrap_or_default();
    e.version.set(stamp.replica, stamp.osn);
    e.stamp = stamp;
    e.inode = m.ino();
    e.observed_mtime_ns = mtime_ns(m);
    b.put(&e)?;
    b.log(
        stamp,
        "conflict",
        at,
        Some(&format!("losing version of {of}")),
    )?;
    b.commit()?;
    Ok(())
}

async fn resolve(
    cx: &mut Ctx<'_>,
    l: Entry,
    r: Entry,
    how: Resolution,
    report: &mut SyncReport,
) -> StepResult {
    let p = l.path.clone();
    if let Some(why) = vcs_busy(cx, &p)? {
        return Ok(Outcome::Deferred(why));
    }
    // A directory deleted here that the mirror keeps: if a directory is here now, nothing can
    // be lost (`materialise` keeps it, and what it holds has entries of its own), whoever made
    // it; e.g. this sync, for a file renamed into it (renames are taken before the other steps).
    let dir_there = matches!(how, Resolution::EditBeatsDelete { live: Side::Remote })
        && r.kind == EntryKind::Dir
        && fs::symlink_metadata(full(cx, &p)?).is_ok_and(|m| m.is_dir());
    if !dir_there && !local_unchanged(cx, &p, Some(&l))? {
        cx.local.rescan(Some(std::slice::from_ref(&p)))?;
        return Ok(Outcome::Deferred("changed here during the sync".into()));
    }
    match how {
        Resolution::Merge | Resolution::EditBeatsDelete { live: Side::Local } => {
            let m = fs::symlink_metadata(full(cx, &p)?).ok();
            let (op, detail) = if how == Resolution::Merge {
                report.merged += 1;
                ("merge", "same content on both sides")
            } else {
                ("keep", "edited here, deleted elsewhere: the edit wins")
            };
            let cur = if l.deleted {
                local_entry(&l, None)
            } else {
                local_entry(&l, m.as_ref())
            };
            settle_as(
                cx,
                cur,
                &r,
                if l.deleted { None } else { m.as_ref() },
                op,
                Some(detail),
                how != Resolution::Merge,
            )?;
            Ok(Outcome::Done)
        }
        Resolution::EditBeatsDelete { live: Side::Remote } => {
            match materialise(cx, &r, &p, Some(&l)).await? {
                Some(m) => {
                    report.pulled += 1;
                    settled(
                        cx,
                        r.clone(),
                        &l,
                        Some(&m),
                        "keep",
                        Some("edited elsewhere, deleted here: the edit wins"),
                    )?;
                    Ok(Outcome::Done)
                }
                None => Ok(Outcome::Deferred("changed here during the sync".into())),
            }
        }
        Resolution::Conflict { winner } => {
            let loser = if winner == Side::Local { &r } else { &l };
            let who = replica_name(cx, loser);
            // Inside .git/.hg/.svn a conflict copy would corrupt the repository (crate::vcs).
            let vcs = crate::vcs::loser_of(&p, &who);
            let mut is_ref = false;
            let target = match vcs {
                None => copy_target(cx, &p, loser)?,
                Some(crate::vcs::Loser::KeepAsRef(c)) => {
                    is_ref = true;
                    ref_target(cx, c, loser)?
                }
                Some(crate::vcs::Loser::PackedRefs { git_dir }) => {
                    keep_packed_refs(cx, &l, &r, winner, &git_dir, &who).await?;
                    return winner_takes_all(cx, l, r, winner).await;
                }
                Some(crate::vcs::Loser::Drop) => return winner_takes_all(cx, l, r, winner).await,
            };
            let copy = match &target {
                CopyAt::Kept(c) | CopyAt::Free(c, _) => c.clone(),
            };
            if winner == Side::Local {
                // Keep the mirror's version beside ours, unless it is kept already.
                if let CopyAt::Free(_, copy_here) = &target {
                    match materialise(cx, &r, &copy, copy_here.as_ref()).await? {
                        Some(m) => record_copy(cx, r.clone(), &copy, &m, &p)?,
                        None => {
                            return Ok(Outcome::Deferred(format!(
                                "{copy} changed here during the sync"
                            )))
                        }
                    }
                }
                keep_ours(
                    cx,
                    &l,
                    &r,
                    "conflict",
                    &format!("kept this version; the other is {copy}"),
                )?;
            } else {
                // Move our version aside (same inode: nothing is copied), unless that content
                // is kept already; then take theirs.
                let at_p = if let CopyAt::Free(..) = &target {
                    if is_ref {
                        local_parents(cx, &copy)?;
                    }
                    let (src, dst) = (full(cx, &p)?, full(cx, &copy)?);
                    let moved = if is_ref {
                        // A ref kept from this replica before is simply moved on.
                        fs::rename(src.path(), dst.path())
                    } else {
                        rename_noreplace(src.path(), dst.path())
                    };
                    match moved {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            cx.local.rescan(Some(std::slice::from_ref(&copy)))?;
                            return Ok(Outcome::Deferred(format!(
                                "{copy} appeared here during the sync"
                            )));
                        }
                        Err(e) => return Err(local_io(cx, &p, "move aside", e)),
                    }
                    let m = fs::symlink_metadata(dst.path())
                        .map_err(|e| local_io(cx, &copy, "stat", e))?;
                    record_copy(cx, l.clone(), &copy, &m, &p)?;
                    // The name is now free (the journal still says `l` was there).
                    let mut gone = l.clone();
                    gone.deleted = true;
                    gone
                } else {
                    l.clone()
                };
                match materialise(cx, &r, &p, Some(&at_p)).await? {
                    Some(m) => {
                        report.pulled += 1;
                        settled(
                            cx,
                            r.clone(),
                            &l,
                            Some(&m),
                            "conflict",
                            Some(&format!("took the other version; ours is {copy}")),
                        )?;
                    }
                    None => {
                        cx.local.rescan(Some(&[p.clone(), copy.clone()]))?;
                        return Ok(Outcome::Deferred("changed here during the sync".into()));
                    }
                }
            }
            tracing::warn!(path = %p, copy = %copy, "conflict: both versions kept");
            report.conflicts.push(copy.display());
            Ok(Outcome::Done)
        }
    }
}

/// How long a version-control lock here keeps incoming changes out of its directory before it
/// is taken for a leftover of a crashed command (the watcher's `git_lock_wait`).
const VCS_LOCK_STALE: std::time::Duration = std::time::Duration::from_secs(30);

/// Why nothing may be written at `p` now: it lies in a `.git` (`.hg`, `.svn`) directory whose
/// tool holds a lock here (a `git commit` or `gc` running). The step is deferred, not failed: a
/// repository is never changed under a running git command.
fn vcs_busy(cx: &Ctx<'_>, p: &RelPath) -> Result<Option<String>, StepError> {
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

/// The name of the replica that made `e` (its short ID when no name is known).
fn replica_name(cx: &Ctx<'_>, e: &Entry) -> String {
    cx.names
        .get(&e.stamp.replica)
        .cloned()
        .unwrap_or_else(|| e.stamp.replica.short())
}

/// Where a losing git ref is kept (`refs/briefcase/REPLICA/…`): already there with that value
/// (here or on the mirror), or to be written over whatever an older loss of the same replica
/// left there (a ref moves; it is not a copy to keep beside).
fn ref_target(cx: &Ctx<'_>, at: RelPath, loser: &Entry) -> Result<CopyAt, StepError> {
    let here = cx.local.journal.entry(&at)?;
    let same = |e: &Entry| !e.deleted && e.same_content(loser);
    if here.as_ref().is_some_and(same) || cx.st.entry(&at).is_some_and(same) {
        return Ok(CopyAt::Kept(at));
    }
    Ok(CopyAt::Free(at, here))
}

/// Settles `l` (the local version, as it is on disk now) over `r` with a new local stamp.
fn keep_ours(
    cx: &mut Ctx<'_>,
    l: &Entry,
    r: &Entry,
    op: &str,
    detail: &str,
) -> Result<(), StepError> {
    let m = fs::symlink_metadata(full(cx, &l.path)?).ok();
    settled(
        cx,
        local_entry(l, m.as_ref()),
        r,
        m.as_ref(),
        op,
        Some(detail),
    )?;
    Ok(())
}

/// Concurrent versions of a cache, log or object inside a version-control directory: the
/// winner's copy stays (or replaces ours), nothing is kept beside it (crate::vcs).
async fn winner_takes_all(cx: &mut Ctx<'_>, l: Entry, r: Entry, winner: Side) -> StepResult {
    let p = l.path.clone();
    if winner == Side::Local {
        keep_ours(
            cx,
            &l,
            &r,
            "merge",
            "version-control metadata changed on both sides: this version kept",
        )?;
        return Ok(Outcome::Done);
    }
    match materialise(cx, &r, &p, Some(&l)).await? {
        Some(m) => {
            settled(
                cx,
                r.clone(),
                &l,
                Some(&m),
                "merge",
                Some("version-control metadata changed on both sides: the other version taken"),
            )?;
            Ok(Outcome::Done)
        }
        None => {
            cx.local.rescan(Some(std::slice::from_ref(&p)))?;
            Ok(Outcome::Deferred("changed here during the sync".into()))
        }
    }
}

/// Both sides changed `packed-refs`: before the winner's file is taken, every ref of the loser's
/// that the winner's does not hold with the same value is written as a loose ref under
/// `GIT_DIR/refs/briefcase/REPLICA/` here (journaled now, sent by the next round), so no line
/// of work is lost.
async fn keep_packed_refs(
    cx: &mut Ctx<'_>,
    l: &Entry,
    r: &Entry,
    winner: Side,
    git_dir: &RelPath,
    who: &str,
) -> Result<(), StepError> {
    if l.kind != EntryKind::File || r.kind != EntryKind::File || l.deleted || r.deleted {
        return Ok(());
    }
    let local_path = full(cx, &l.path)?;
    let ours = fs::read(local_path.path()).map_err(|e| local_io(cx, &l.path, "read", e))?;
    let Some(tmp) = fetch_verified(cx, r, &local_path, false).await? else {
        return Err(mismatch(cx, r));
    };
    let theirs = fs::read(tmp.path());
    let _ = fs::remove_file(tmp.path());
    let theirs = theirs.map_err(|e| local_io(cx, &r.path, "read", e))?;
    let (won, lost) = if winner == Side::Local {
        (&ours, &theirs)
    } else {
        (&theirs, &ours)
    };
    let mut written = Vec::new();
    for (name, id) in crate::vcs::packed_refs_lost(won, lost) {
        let tail = name.strip_prefix("refs/").unwrap_or(&name);
        let rel = format!(
            "{}/refs/{}/{}/{tail}",
            git_dir.display(),
            crate::vcs::REFS_NAMESPACE,
            crate::vcs::ref_component(who)
        );
        let Ok(at) = RelPath::try_from(rel.as_str()) else {
            continue;
        };
        local_parents(cx, &at)?;
        let dest = full(cx, &at)?;
        fsutil::replace_with(dest.path(), None, |f| {
            io::Write::write_all(f, format!("{id}\n").as_bytes())
        })
        .map_err(|e| local_io(cx, &at, "write", e))?;
        tracing::warn!(path = %at, "a ref of the other side's packed-refs kept beside ours");
        written.push(at);
    }
    if !written.is_empty() {
        cx.local.rescan(Some(&written))?;
    }
    Ok(())
}

/// Where the losing version of a conflict is kept.
enum CopyAt {
    /// That very content is already kept as a copy of the path (here or on the mirror):
    /// DESIGN.md keeps the same losing content once, not once per sync.
    Kept(RelPath),
    /// A free name, with what the journal holds there (nothing, or a tombstone).
    Free(RelPath, Option<Entry>),
}

/// Picks the conflict copy name for the losing version `loser` of `p`: the plain
/// `NAME.conflict-REPLICA-TIME.EXT` when free, else the same with a content tag (so two losing
/// versions from one replica in the same second never share a name: a copy is never written
/// over). Names taken here, on disk (even unjournaled) or on the mirror all count as taken.
fn copy_target(cx: &Ctx<'_>, p: &RelPath, loser: &Entry) -> Result<CopyAt, StepError> {
    let who = replica_name(cx, loser);
    let base = conflict_name(p, &who, loser.mtime_ns);

    // Copies of `p` all start with `DIR/STEM.conflict-`.
    let b = base.as_bytes();
    let tag_at = b
        .windows(CONFLICT_TAG.len())
        .rposition(|w| w == CONFLICT_TAG.as_bytes())
        .map_or(b.len(), |i| i + CONFLICT_TAG.len());
    let prefix = &b[..tag_at];
    let kept =
        |e: &Entry| !e.deleted && e.same_content(loser) && original_of(&e.path).as_ref() == Some(p);
    if let Some(e) = cx
        .local
        .journal
        .entries_with_prefix(prefix)?
        .into_iter()
        .find(|e| kept(e))
    {
        return Ok(CopyAt::Kept(e.path));
    }
    if let Some(e) = cx
        .st
        .entries()
        .values()
        .skip_while(|e| e.path.as_bytes() < prefix)
        .take_while(|e| e.path.as_bytes().starts_with(prefix))
        .find(|e| kept(e))
    {
        return Ok(CopyAt::Kept(e.path.clone()));
    }

    let hex = match (loser.kind, loser.hash, &loser.symlink_target) {
        (EntryKind::File, Some(h), _) => h.to_hex(),
        (_, _, Some(t)) => blake3::hash(t).to_hex().to_string(),
        _ => blake3::hash(p.as_bytes()).to_hex().to_string(),
    };
    let candidates = std::iter::once(base.clone())
        .chain([8, 16, 64].map(|n| conflict_name_tagged(p, &who, loser.mtime_ns, Some(&hex[..n]))));
    for c in candidates {
        let here = cx.local.journal.entry(&c)?;
        let taken = here.as_ref().is_some_and(|e| !e.deleted)
            || fs::symlink_metadata(full(cx, &c)?).is_ok()
            || cx.st.entry(&c).is_some_and(|e| !e.deleted);
        if !taken {
            return Ok(CopyAt::Free(c, here));
        }
    }
    Err(StepError::Path(format!(
        "folder {}: every conflict copy name for {p} is taken; rename or remove the old copies (briefcase conflicts) and sync again",
        cx.local.root.display()
    )))
}

/// `rename(2)` that fails with `AlreadyExists` instead of replacing `dst` (`renameat2` with
/// `RENAME_NOREPLACE`; a link-then-unlink fallback where the file system lacks it).
fn rename_noreplace(src: &Path, dst: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    match renameat_with(CWD, src, CWD, dst, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            fs::hard_link(src, dst)?;
            fs::remove_file(src)
        }
        Err(e) => Err(e.into()),
    }
}
