//! `briefcase sync [DIR] [--mirror NAME] [--dry-run] [--allow-mass-delete]`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Result};
use briefcase::config::{Dirs, MirrorConfig};
use briefcase::reconcile::{self, ReconcileError, SyncOptions, SyncReport};
use briefcase::replica::LocalReplica;
use briefcase_mirror::MirrorError;

/// Arguments of `sync`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The folder (default: the one containing the current directory).
    pub dir: Option<PathBuf>,
    /// Only this mirror.
    #[arg(long)]
    pub mirror: Option<String>,
    /// Show what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Allow deleting more than half of a replica's files.
    #[arg(long)]
    pub allow_mass_delete: bool,
    /// Print the reports as JSON.
    #[arg(long)]
    pub json: bool,
}

/// How one mirror's sync ended.
pub enum MirrorOutcome {
    /// Synced (maybe with conflicts or deferred paths).
    Synced(SyncReport),
    /// Offline or paused: reported, not an error for the others.
    Offline(String),
    /// Failed.
    Failed(String),
}

/// Syncs `rep` with one configured mirror and records the outcome in the journal.
pub async fn sync_one(
    dirs: &Dirs,
    rep: &mut LocalReplica,
    m: &MirrorConfig,
    opts: &SyncOptions,
) -> MirrorOutcome {
    let backend = match super::backend(dirs, Some(rep.journal.folder_id()), &m.target) {
        Ok(b) => b,
        Err(e) => return MirrorOutcome::Failed(format!("mirror {}: {e:#}", m.name)),
    };
    let (outcome, status) = sync_with(
        rep,
        m,
        backend.as_ref(),
        opts,
        &mut reconcile::Session::default(),
    )
    .await;
    if !opts.dry_run {
        record_status(rep, m, &status);
    }
    outcome
}

/// What `status` shows for a mirror after a sync: the result line, whether it succeeded (sets
/// the last-sync time), and why it is paused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorStatusLine {
    pub result: String,
    pub ok: bool,
    pub paused: Option<String>,
}

/// Records `status` for mirror `m` in the journal (a warning if that fails).
pub fn record_status(rep: &mut LocalReplica, m: &MirrorConfig, status: &MirrorStatusLine) {
    if let Err(e) = rep.journal.set_mirror_status(
        &m.name,
        None,
        &status.result,
        status.ok,
        status.paused.as_deref(),
    ) {
        tracing::warn!(error = %e, "could not record the mirror status");
    }
}

/// Syncs `rep` with mirror `m` through an open `backend`, keeping `session` (see
/// [`reconcile::Session`]); returns the outcome and the status line to record.
pub async fn sync_with(
    rep: &mut LocalReplica,
    m: &MirrorConfig,
    backend: &dyn briefcase_mirror::Mirror,
    opts: &SyncOptions,
    session: &mut reconcile::Session,
) -> (MirrorOutcome, MirrorStatusLine) {
    let opts = SyncOptions {
        send_only: m.send_only || opts.send_only,
        ..opts.clone()
    };
    let r = reconcile::sync_session(rep, backend, &m.name, &opts, session).await;
    let (outcome, result, ok, paused) = match r {
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
            (MirrorOutcome::Synced(report), s, true, None)
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
            let s = format!("mirror {} ({}): {e}", m.name, m.target);
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

pub async fn run(dirs: &Dirs, a: Args) -> Result<u8> {
    let mut rep = super::open_folder(dirs, a.dir.as_deref())?;
    if !a.dry_run {
        // Temp files of a sync killed mid-pull are garbage (invariant 2), as at `watch` start.
        let removed = briefcase_mirror::fsutil::remove_temp_files(&rep.root).unwrap_or(0);
        if removed > 0 {
            tracing::info!(
                count = removed,
                "removed leftover temp files of an interrupted sync"
            );
        }
    }
    let cfg = super::load_config(dirs)?;
    let mirrors: Vec<MirrorConfig> = cfg
        .folder(&rep.root)
        .map(|f| f.mirrors.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|m| a.mirror.as_ref().is_none_or(|n| n == &m.name))
        .collect();
    if mirrors.is_empty() {
        match &a.mirror {
            Some(n) => bail!(
                "folder {} has no mirror named {n}; see `briefcase mirror list`",
                rep.root.display()
            ),
            None => bail!(
                "folder {} has no mirrors; add one with `briefcase mirror add {} /path/to/mirror`",
                rep.root.display(),
                rep.root.display()
            ),
        }
    }
    let opts = SyncOptions {
        dry_run: a.dry_run,
        allow_mass_delete: a.allow_mass_delete,
        ..Default::default()
    };
    let tty = std::io::stderr().is_terminal() && !a.json;
    let mut code = super::EXIT_OK;
    let mut reports = Vec::new();
    for m in &mirrors {
        let bar = tty.then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_message(format!(
                "syncing {} with {} ({})",
                rep.root.display(),
                m.name,
                m.target
            ));
            b.enable_steady_tick(std::time::Duration::from_millis(100));
            b
        });
        let out = sync_one(dirs, &mut rep, m, &opts).await;
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        match out {
            MirrorOutcome::Synced(r) => {
                if !r.conflicts.is_empty() || !r.deferred.is_empty() || !r.failed.is_empty() {
                    code = code.max(super::EXIT_ATTENTION);
                }
                if !a.json {
                    print_report(&r, a.dry_run);
                }
                reports.push(serde_json::to_value(&r)?);
            }
            MirrorOutcome::Offline(s) => {
                eprintln!("{s}");
                code = code.max(super::EXIT_OFFLINE);
                reports.push(serde_json::json!({"mirror": m.name, "offline": s}));
            }
            MirrorOutcome::Failed(s) => {
                eprintln!("briefcase: {s}");
                code = 1;
                reports.push(serde_json::json!({"mirror": m.name, "error": s}));
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(code)
}

fn print_report(r: &SyncReport, dry_run: bool) {
    if dry_run {
        println!("mirror {}: {} step(s) planned", r.mirror, r.planned.len());
        for p in &r.planned {
            println!("  {p}");
        }
        return;
    }
    println!(
        "mirror {}: {} sent, {} received, {} removed there, {} removed here, {} renamed, {} merged, {} conflict(s){}",
        r.mirror,
        r.pushed,
        r.pulled,
        r.removed_remote,
        r.removed_local,
        r.renamed,
        r.merged,
        r.conflicts.len(),
        if r.complete { "; in sync" } else { "; not yet in sync" }
    );
    for c in &r.conflicts {
        println!("  conflict: both versions kept, the other one is {c}");
    }
    for d in &r.deferred {
        println!("  deferred: {d}");
    }
    for f in &r.failed {
        println!("  failed: {f}");
    }
}
