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
use briefcase_mirror::{Entry, Mirror, MirrorError, MirrorState, RelPath};

use super::plan::{self, Rename, Side, Step};
use super::{FailureKind, PathFailure, ReconcileResult, SyncReport};
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
    /// Only this path: where it failed, how, and the message ([`PathFailure`] once it is given
    /// the step's path).
    Path {
        side: Side,
        kind: FailureKind,
        message: String,
    },
}

impl StepError {
    /// A failure of this path on this machine.
    fn local(kind: FailureKind, message: String) -> StepError {
        StepError::Path {
            side: Side::Local,
            kind,
            message,
        }
    }

    /// A failure of this path on the mirror.
    fn mirror(kind: FailureKind, message: String) -> StepError {
        StepError::Path {
            side: Side::Remote,
            kind,
            message,
        }
    }

    /// The failure of the step at `path`, or the error that stops the sync.
    fn at(self, path: &RelPath) -> Result<PathFailure, super::ReconcileError> {
        match self {
            StepError::Path {
                side,
                kind,
                message,
            } => Ok(PathFailure::new(path.clone(), side, kind, message)),
            StepError::Fatal(e) => Err(e),
        }
    }
}

impl From<MirrorError> for StepError {
    fn from(e: MirrorError) -> Self {
        if e.is_transient() || matches!(e, MirrorError::Corrupt { .. }) {
            StepError::Fatal(e.into())
        } else {
            StepError::mirror(FailureKind::of_mirror(&e), e.to_string())
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
    queued: Vec<Queued>,
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

/// A file push waiting for its batch.
struct Queued {
    /// The local entry to send.
    entry: Entry,
    /// New to the mirror (its state holds nothing live there): checked to be still absent
    /// when the batch is sent.
    new_file: bool,
    /// The local file, its directory held open while the batch waits.
    _here: briefcase_mirror::beneath::Anchored,
}

/// Most files, and bytes, in one [`Mirror::put_batch`].
const PUT_BATCH: usize = 1024;
const PUT_BATCH_BYTES: u64 = 64 << 20;

/// Journal batch size for pulled entries (a crash between apply and commit is healed by the
/// next scan: the file is found with the same content and merged).
const JOURNAL_BATCH: usize = 512;

/// Applies `steps` (in the planner's order, [`plan::order`]; the renames among them first, see
/// [`plan::pair_renames`]) and updates `st` (the mirror's state, committed by the caller) and
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
    // moved, not copied (the planner pairs them).
    let (pairs, steps) = plan::pair_renames(steps, cx.mirror.capabilities().rename);
    let steps = renames(&mut cx, pairs, steps, report).await?;

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
        let path = step.path().clone();
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
fn note(report: &mut SyncReport, path: &RelPath, r: StepResult) -> Option<super::ReconcileError> {
    match r {
        Ok(Outcome::Done) => None,
        Ok(Outcome::Deferred(why)) => {
            tracing::info!(path = %path, reason = %why, "deferred to the next sync");
            report.deferred.push(format!("{path}: {why}"));
            None
        }
        Err(e) => match e.at(path) {
            Ok(f) => {
                tracing::warn!(path = %path, error = %f, "not synced");
                report.failed.push(f);
                None
            }
            Err(e) => Some(e),
        },
    }
}

/// Does the planner's renames ([`plan::pair_renames`]) where both sides still hold what was
/// planned; the others go back among `rest` (in the planner's [`plan::order`]) as the removal
/// and creation they stand for, done as a copy and a removal.
async fn renames(
    cx: &mut Ctx<'_>,
    pairs: Vec<Rename>,
    mut rest: Vec<Step>,
    report: &mut SyncReport,
) -> ReconcileResult<Vec<Step>> {
    if pairs.is_empty() {
        return Ok(rest);
    }
    let mut undone = Vec::new();
    for r in pairs {
        let moved = match r.side {
            Side::Remote => {
                rename_on_mirror(cx, &r.to, r.to_current.as_ref(), &r.from, &r.from_current).await
            }
            Side::Local => {
                rename_locally(cx, &r.to, r.to_current.as_ref(), &r.from, &r.from_current)
            }
        };
        match moved {
            Ok(true) => report.renamed += 1,
            Ok(false) => undone.push(r),
            Err(StepError::Fatal(e)) => return Err(e),
            Err(StepError::Path { message, .. }) => {
                tracing::debug!(error = %message, "rename shortcut not taken; copying instead");
                undone.push(r);
            }
        }
    }
    flush(cx)?;
    if !undone.is_empty() {
        rest.extend(undone.into_iter().flat_map(Rename::into_steps));
        plan::order(&mut rest);
    }
    Ok(rest)
}
