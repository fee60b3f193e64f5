//! What one sync with one mirror came to, as the CLI (`sync`), `watch` and the daemon report and
//! record it; how many changes a mirror carries for this machine; the conflict copies of a folder.
//!
//! Shared by the one-shot commands and the long-running ones so that a sync through the daemon
//! reports exactly what a `briefcase sync` would have.

use briefcase_mirror::{state, Mirror, MirrorError, Presence};

use crate::config::MirrorConfig;
use crate::journal::JournalError;
use crate::reconcile::conflict::{is_conflict_copy, original_of, CONFLICT_TAG};
use crate::reconcile::{self, ReconcileError, SyncOptions, SyncReport};
use crate::replica::LocalReplica;

/// How one mirror's sync ended.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MirrorOutcome {
    /// Synced (maybe with conflicts or deferred paths).
    Synced(SyncReport),
    /// Offline or paused: reported, not an error for the other mirrors. The text says why and
    /// what to do.
    Offline(String),
    /// Failed; the text names the mirror, its target and the cause.
    #[serde(rename = "error")]
    Failed(String),
}

/// What `status` shows for a mirror after a sync: the result line, whether the sync was complete
/// (sets the "last reconciled here" time), and why it is paused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorStatusLine {
    /// `ok`, `partial: …`, `offline: …`, `paused: …` or `error: …`.
    pub result: String,
    /// The sync finished with both sides in sync (knowledge advanced).
    pub ok: bool,
    /// Why syncing is paused (a mass deletion waiting for `--allow-mass-delete`).
    pub paused: Option<String>,
}

/// Records `status` for mirror `m` in the journal (a warning if that fails: the status is
/// informative, the sync itself is already committed).
pub fn record_status(rep: &mut LocalReplica, m: &MirrorConfig, status: &MirrorStatusLine) {
    if let Err(e) = rep.journal.set_mirror_status(
        &m.name,
        None,
        &status.result,
        status.ok,
        status.paused.as_deref(),
    ) {
        tracing::warn!(folder = %rep.root.display(), mirror = %m.name, error = %e, "could not record the mirror status");
    }
}

/// Syncs `rep` with mirror `m` through an open `backend`, keeping `session` (see
/// [`reconcile::Session`]); returns the outcome and the status line to record. Never fails: an
/// error is an outcome.
pub async fn sync_with(
    rep: &mut LocalReplica,
    m: &MirrorConfig,
    backend: &dyn Mirror,
    opts: &SyncOptions,
    session: &mut reconcile::Session,
) -> (MirrorOutcome, MirrorStatusLine) {
    let opts = SyncOptions {
        send_only: m.send_only || opts.send_only,
        ..opts.clone()
    };
    let r = reconcile::sync_session(rep, backend, &m.name, &opts, session).await;
    let (outcome, result, ok, paused) = match r {
        Ok(report) if report.held.is_some() => {
            let why = report.held.clone().unwrap_or_default();
            (
                MirrorOutcome::Synced(report),
                format!("paused: {why}"),
                false,
                Some(why),
            )
        }
        Ok(report) => {
            let s = if report.complete {
                "ok".to_string()
            } else {
                format!(
                    "partial: {} deferred, {} failed",
                    report.deferred.len(),
                    report.failed.len()
                )
            };
            let complete = report.complete;
            (MirrorOutcome::Synced(report), s, complete, None)
        }
        Err(ReconcileError::Mirror(e @ MirrorError::Offline { .. })) => {
            let s = e.to_string();
            (
                MirrorOutcome::Offline(s.clone()),
                format!("offline: {s}"),
                false,
                None,
            )
        }
        // Another machine is syncing it: here, and working; tried again at the next sync.
        Err(e @ ReconcileError::Busy { .. }) => {
            let s = format!("folder {}: {e}", rep.root.display());
            (
                MirrorOutcome::Offline(s.clone()),
                format!("busy: {s}"),
                false,
                Some(s),
            )
        }
        Err(e @ ReconcileError::MassDelete { .. }) => {
            let s = e.to_string();
            (
                MirrorOutcome::Offline(s.clone()),
                format!("paused: {s}"),
                false,
                Some(s),
            )
        }
        Err(e) => {
            let s = format!(
                "folder {}: mirror {} ({}): {e}",
                rep.root.display(),
                m.name,
                m.target
            );
            (
                MirrorOutcome::Failed(s.clone()),
                format!("error: {s}"),
                false,
                None,
            )
        }
    };
    (outcome, MirrorStatusLine { result, ok, paused })
}

/// How many changes `mirror` carries for this machine: entries of its state whose stamp the
/// local journal's knowledge does not cover (what the next sync would bring here, before
/// conflicts are settled). `Ok(None)` when the mirror is offline (absent, empty, unmarked or
/// marked with another folder). Reads the mirror's whole state: call it when a mirror arrives or
/// for `status`, not per save.
///
/// # Errors
/// Journal errors; mirror I/O errors and a corrupt state ([`MirrorError`], naming the mirror).
pub async fn changes_waiting(
    rep: &LocalReplica,
    mirror: &dyn Mirror,
) -> Result<Option<usize>, ReconcileError> {
    match mirror.probe().await? {
        Presence::Marked(f) if f == rep.journal.folder_id() => {}
        _ => return Ok(None),
    }
    let knowledge = rep.journal.knowledge()?;
    Ok(match state::load(mirror).await? {
        Some(l) => Some(
            l.state
                .entries()
                .values()
                .filter(|e| !knowledge.covers(e.stamp))
                .count(),
        ),
        None => Some(0),
    })
}

/// One conflict copy waiting for the user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConflictRow {
    /// The copy's path in the folder.
    pub copy: String,
    /// The path it is the other version of (`None` when the name cannot be parsed back).
    pub original: Option<String>,
    /// The replica the losing version came from, as written in the copy's name.
    pub replica: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The replica name in a conflict copy's name (`NAME.conflict-REPLICA-YYYYMMDD-HHMMSS.EXT`).
pub fn replica_of(copy: &briefcase_mirror::RelPath) -> String {
    // `NAME.conflict-REPLICA-YYYYMMDD-HHMMSS[-TAG].EXT`; the replica name holds no `-` (mapped
    // to `_` when the copy is named), so it ends at the first one after the last tag.
    let name = copy.display();
    match name.rfind(CONFLICT_TAG) {
        Some(at) => name
            .get(at + CONFLICT_TAG.len()..)
            .and_then(|rest| rest.split('-').next())
            .unwrap_or("")
            .to_string(),
        None => String::new(),
    }
}

/// The conflict copies the journal knows in `rep` (rescan first to include the newest).
///
/// # Errors
/// Journal errors.
pub fn conflict_rows(rep: &LocalReplica) -> Result<Vec<ConflictRow>, JournalError> {
    Ok(rep
        .journal
        .entries()?
        .into_values()
        .filter(|e| !e.deleted && e.kind == briefcase_mirror::EntryKind::File)
        .filter_map(|e| {
            if is_conflict_copy(&e.path) {
                Some(ConflictRow {
                    replica: replica_of(&e.path),
                    original: original_of(&e.path).map(|p| p.display()),
                    copy: e.path.display(),
                    size: e.size,
                })
            } else if crate::vcs::is_kept_ref(&e.path) {
                // A line of work of another replica kept as a git ref (crate::vcs).
                let (replica, original) = kept_ref_origin(&e.path);
                Some(ConflictRow {
                    replica,
                    original,
                    copy: e.path.display(),
                    size: e.size,
                })
            } else {
                None
            }
        })
        .collect())
}

/// For a ref kept under `GIT_DIR/refs/briefcase/REPLICA/TAIL`: the replica and the ref it is
/// the other side of (`GIT_DIR/refs/TAIL`, or `GIT_DIR/HEAD`).
fn kept_ref_origin(path: &briefcase_mirror::RelPath) -> (String, Option<String>) {
    let s = path.display();
    let marker = format!("/refs/{}/", crate::vcs::REFS_NAMESPACE);
    let Some((git_dir, rest)) = s.split_once(&marker) else {
        return (String::new(), None);
    };
    let (replica, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let original = match tail {
        "" => None,
        "HEAD" => Some(format!("{git_dir}/HEAD")),
        t => Some(format!("{git_dir}/refs/{t}")),
    };
    (replica.to_string(), original)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::replica_of;

    #[test]
    fn replica_of_table() {
        for (copy, want) in [
            ("a.conflict-nas-20261203-124949.txt", "nas"),
            ("a.conflict-nas-20261203-124949-0a1b2c3d.txt", "nas"),
            ("d/b.conflict-home_pc-20261203-124949", "home_pc"),
            (
                "x.conflict-a-20261203-124949.conflict-b-20261204-010101.md",
                "b",
            ),
            ("plain.txt", ""),
        ] {
            let p = briefcase_mirror::RelPath::try_from(copy).unwrap();
            assert_eq!(replica_of(&p), want, "{copy}");
        }
    }
}
