//! Applying a plan: the effects. Local writes keep invariants 1 and 2: incoming content goes to a
//! `.briefcase-tmp-*` file in the target's directory, is verified against its blake3 hash,
//! fsynced, given its mode and mtime, and renamed over the target only after re-checking that the
//! local file still matches what the journal recorded; if it does not, the step is deferred and
//! the local edit is journaled first, so the next round sees a conflict instead of losing a write.
//! Every local path is resolved without following symlinks (invariant 6).
//!
//! This module owns the entry point ([`apply`]), the context one application runs in and the
//! dispatch of each step; the effects live by concern:
//! - [`batch`]: the batch queues (fetched files landed together, file pushes and removals sent
//!   together, the journal's batch of pulled entries);
//! - [`local`]: effects on the local replica (pull, materialise, parents, local checks);
//! - [`mirror`]: effects on the mirror (push, parents, renames, mirror checks);
//! - [`resolve`]: settling concurrent versions (merge, edit beats delete, conflict copies).

mod batch;
mod local;
mod mirror;
mod resolve;

use std::collections::HashMap;
use std::path::PathBuf;

use briefcase_mirror::beneath::{Beneath, ParentDir};
use briefcase_mirror::fsutil;
use briefcase_mirror::{ContentHash, Entry, EntryKind, Mirror, MirrorError, MirrorState};

use super::plan::Step;
use super::{ReconcileResult, SyncReport};
use crate::journal::JournalError;
use crate::replica::LocalReplica;
use batch::{flush, land_fetched, send_queued, send_removals};
use local::{pull, rename_locally};
use mirror::{push, rename_on_mirror};
use resolve::resolve;

pub use local::local_mode;
pub(super) use mirror::mirror_entry;

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
