//! `briefcase sync [DIR] [--mirror NAME] [--dry-run] [--allow-mass-delete]`: through the daemon
//! when one runs the folder (it queues the sync behind its own), else in this process.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use briefcase::config::{Dirs, MirrorConfig};
use briefcase::daemon::control::{Client, ErrorKind, Request, Response};
use briefcase::daemon::outcome::{record_status, sync_with, MirrorOutcome};
use briefcase::reconcile::{self, SyncOptions, SyncReport};
use briefcase::replica::LocalReplica;

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

/// Syncs `rep` with one configured mirror and records the outcome in the journal.
pub async fn sync_one(
    dirs: &Dirs,
    rep: &mut LocalReplica,
    m: &MirrorConfig,
    opts: &SyncOptions,
) -> MirrorOutcome {
    let backend = match super::configured_backend(dirs, rep.journal.folder_id(), m) {
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

/// Asks a running daemon to sync folder `root` (so two processes never sync one folder at
/// once); `Ok(None)` when no daemon runs it.
async fn through_daemon(
    dirs: &Dirs,
    root: &Path,
    a: &Args,
    tty: bool,
) -> Result<Option<Vec<(String, MirrorOutcome)>>> {
    let Some(mut client) = Client::connect(&dirs.runtime)? else {
        return Ok(None);
    };
    let req = Request::Sync {
        folder: root.to_path_buf(),
        mirror: a.mirror.clone(),
        dry_run: a.dry_run,
        allow_mass_delete: a.allow_mass_delete,
    };
    let bar = tty.then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_message(format!("syncing {} through the daemon", root.display()));
        b.enable_steady_tick(std::time::Duration::from_millis(100));
        b
    });
    let answer = tokio::task::spawn_blocking(move || client.call(&req, None)).await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    match answer?? {
        Response::Synced { outcomes, .. } => Ok(Some(
            outcomes.into_iter().map(|r| (r.mirror, r.outcome)).collect(),
        )),
        Response::Error {
            kind: ErrorKind::UnknownFolder,
            ..
        } => Ok(None),
        Response::Error { message, .. } => bail!("{message}"),
        other => bail!("the daemon answered a sync with {other:?}; restart it with `systemctl --user restart briefcase`"),
    }
}

pub async fn run(dirs: &Dirs, a: Args) -> Result<u8> {
    let root = super::find_root(a.dir.as_deref())?;
    let tty = std::io::stderr().is_terminal() && !a.json;
    if let Some(outcomes) = through_daemon(dirs, &root, &a, tty).await? {
        return report_all(outcomes, &a);
    }
    // Temp files of a sync killed mid-pull are garbage (invariant 2): the sync's rescan of the
    // folder removes those it comes across.
    let mut rep = LocalReplica::open(&root, &dirs.data)?;
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
    let mut outcomes = Vec::new();
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
        outcomes.push((m.name.clone(), out));
    }
    report_all(outcomes, &a)
}

/// Prints every mirror's outcome (text or `--json`) and returns the exit code.
fn report_all(outcomes: Vec<(String, MirrorOutcome)>, a: &Args) -> Result<u8> {
    let mut code = super::EXIT_OK;
    let mut reports = Vec::new();
    for (name, out) in outcomes {
        match out {
            MirrorOutcome::Synced(r) => {
                if !r.conflicts.is_empty() || !r.deferred.is_empty() || !r.failed.is_empty() {
                    code = code.max(super::EXIT_ATTENTION);
                }
                if !a.json {
                    print_report(&r, a.dry_run);
                }
                if let Some(why) = &r.held {
                    // Paused for those deletions: the rest went through.
                    eprintln!("{why}");
                    code = code.max(super::EXIT_OFFLINE);
                }
                reports.push(serde_json::to_value(&r)?);
            }
            MirrorOutcome::Offline(s) => {
                eprintln!("{s}");
                code = code.max(super::EXIT_OFFLINE);
                reports.push(serde_json::json!({"mirror": name, "offline": s}));
            }
            MirrorOutcome::Failed(s) => {
                eprintln!("briefcase: {s}");
                code = 1;
                reports.push(serde_json::json!({"mirror": name, "error": s}));
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
