//! `briefcase watch DIR [TARGET...]`: init and add mirrors as needed, sync, then follow changes
//! on both sides (inotify on the folder; inotify on mirrors that are local paths, a periodic
//! sync for the rest) until SIGINT/SIGTERM, finishing the batch in flight.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use briefcase::config::{Dirs, MirrorConfig, Target};
use briefcase::reconcile::SyncOptions;
use briefcase::replica::LocalReplica;
use briefcase::scan::IgnoreRules;
use briefcase::watch::{FolderWatcher, Hint, WatchOptions};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use super::sync::{sync_one, MirrorOutcome};

/// Arguments of `watch`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The folder (initialised if it is not one yet).
    pub dir: PathBuf,
    /// Mirrors to add if not configured yet (`/path` or `dir:/path`).
    pub targets: Vec<String>,
    /// Seconds between full syncs with every mirror (catches what no event reported).
    #[arg(long, default_value_t = 30)]
    pub interval: u64,
}

pub async fn run(dirs: &Dirs, a: Args) -> Result<u8> {
    let rep = super::init::open_or_init(dirs, &a.dir)?;
    let root = rep.root.clone();
    drop(rep);
    for t in &a.targets {
        super::mirror::add(dirs, &root, t, None, false).await?;
    }
    let mut rep = LocalReplica::open(&root, &dirs.data)?;
    let removed = briefcase_mirror::fsutil::remove_temp_files(&root).unwrap_or(0);
    if removed > 0 {
        tracing::info!(
            count = removed,
            "removed leftover temp files of an interrupted sync"
        );
    }
    let mirrors: Vec<MirrorConfig> = super::load_config(dirs)?
        .folder(&root)
        .map(|f| f.mirrors.clone())
        .unwrap_or_default();

    // Watch before the first sync, so nothing that happens during it is missed.
    let (_local_watch, mut local_rx) =
        FolderWatcher::start(root.clone(), rep.rules.clone(), WatchOptions::default())?;
    let (mtx, mut mirror_rx) = mpsc::channel::<usize>(64);
    let mut mirror_watches: Vec<Option<FolderWatcher>> = Vec::new();
    for (i, m) in mirrors.iter().enumerate() {
        mirror_watches.push(start_mirror_watch(i, m, &mtx));
    }

    let opts = SyncOptions {
        rescan_local: false,
        ..Default::default()
    };
    rep.rescan(None)?;
    sync_all(&mut rep, &mirrors, &opts).await;
    eprintln!(
        "watching {} with {} mirror(s); Ctrl-C to stop",
        root.display(),
        mirrors.len()
    );

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(Duration::from_secs(a.interval.max(1)));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            hint = local_rx.recv() => {
                let Some(hint) = hint else { break };
                let rec = match hint {
                    Hint::Rescan => rep.rescan(None),
                    Hint::Paths(p) => rep.rescan(Some(&p)),
                };
                match rec {
                    Ok(r) if r.total() > 0 => {
                        tracing::debug!(changes = r.total(), "local changes journaled");
                        sync_all(&mut rep, &mirrors, &opts).await;
                        drain(&mut mirror_rx);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "rescan failed; will retry"),
                }
            }
            Some(i) = mirror_rx.recv() => {
                drain(&mut mirror_rx);
                if let Some(m) = mirrors.get(i) {
                    report(sync_one(&mut rep, m, &opts).await, m);
                }
                drain(&mut mirror_rx);
            }
            _ = tick.tick() => {
                for (i, m) in mirrors.iter().enumerate() {
                    if mirror_watches[i].is_none() {
                        mirror_watches[i] = start_mirror_watch(i, m, &mtx);
                    }
                }
                if let Err(e) = rep.rescan(None) {
                    tracing::warn!(error = %e, "periodic rescan failed");
                }
                sync_all(&mut rep, &mirrors, &opts).await;
                drain(&mut mirror_rx);
            }
        }
    }
    eprintln!("stopped watching {}", root.display());
    Ok(super::EXIT_OK)
}

fn drain(rx: &mut mpsc::Receiver<usize>) {
    while rx.try_recv().is_ok() {}
}

fn start_mirror_watch(
    i: usize,
    m: &MirrorConfig,
    tx: &mpsc::Sender<usize>,
) -> Option<FolderWatcher> {
    let path = Target::parse(&m.target).ok()?.local_path()?.to_path_buf();
    if !path.join(briefcase_mirror::STATE_DIR).exists() {
        return None; // offline: retried on the next tick
    }
    let (w, mut rx) =
        FolderWatcher::start(path, IgnoreRules::defaults(), WatchOptions::default()).ok()?;
    let tx = tx.clone();
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            if tx.send(i).await.is_err() {
                break;
            }
        }
    });
    Some(w)
}

async fn sync_all(rep: &mut LocalReplica, mirrors: &[MirrorConfig], opts: &SyncOptions) {
    for m in mirrors {
        report(sync_one(rep, m, opts).await, m);
    }
}

fn report(out: MirrorOutcome, m: &MirrorConfig) {
    match out {
        MirrorOutcome::Synced(r) => {
            let moved = r.pushed + r.pulled + r.removed_local + r.removed_remote + r.renamed;
            if moved > 0 || !r.conflicts.is_empty() {
                tracing::info!(
                    mirror = %m.name, sent = r.pushed, received = r.pulled, removed_there = r.removed_remote,
                    removed_here = r.removed_local, renamed = r.renamed, conflicts = r.conflicts.len(), "synced"
                );
            }
            for c in &r.conflicts {
                tracing::warn!(mirror = %m.name, copy = %c, "conflict: both versions kept");
            }
            for f in &r.failed {
                tracing::warn!(mirror = %m.name, "{f}");
            }
        }
        MirrorOutcome::Offline(s) => tracing::warn!(mirror = %m.name, "{s}"),
        MirrorOutcome::Failed(s) => tracing::error!(mirror = %m.name, "{s}"),
    }
}
