//! `briefcase watch DIR [TARGET...]`: init and add mirrors as needed, sync, then follow changes
//! on both sides (inotify on the folder; inotify on mirrors that are local paths, a periodic
//! sync for the rest) until SIGINT/SIGTERM, finishing the batch in flight.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use briefcase::config::{Dirs, MirrorConfig, Target};
use briefcase::reconcile::{MirrorScan, Session, SyncOptions};
use briefcase::replica::LocalReplica;
use briefcase::scan::IgnoreRules;
use briefcase::watch::{FolderWatcher, Hint, WatchOptions};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use briefcase_mirror::Mirror;

use super::sync::{record_status, sync_with, MirrorOutcome, MirrorStatusLine};

/// Arguments of `watch`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The folder (initialised if it is not one yet).
    pub dir: PathBuf,
    /// Mirrors to add if not configured yet (`/path` or `dir:/path`).
    pub targets: Vec<String>,
    /// Seconds between checks for mirrors that came back online, and syncs with mirrors that
    /// cannot be watched.
    #[arg(long, default_value_t = 30)]
    pub interval: u64,
    /// Seconds between full rescans of the folder and of watched mirrors (catches what no event
    /// reported; inotify reports everything else as it happens). Syncthing's default is 3600.
    #[arg(long, default_value_t = 3600)]
    pub rescan_interval: u64,
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
    let configs: Vec<MirrorConfig> = super::load_config(dirs)?
        .folder(&root)
        .map(|f| f.mirrors.clone())
        .unwrap_or_default();
    let mut mirrors = Vec::with_capacity(configs.len());
    for m in configs {
        let backend = super::backend(dirs, Some(rep.journal.folder_id()), &m.target)?;
        mirrors.push(Run {
            cfg: m,
            backend,
            session: Session::default(),
            recorded: None,
            last_sync: Instant::now(),
        });
    }

    // Watch before the first sync, so nothing that happens during it is missed.
    let (_local_watch, mut local_rx) =
        FolderWatcher::start(root.clone(), rep.rules.clone(), WatchOptions::default())?;
    let (mtx, mut mirror_rx) = mpsc::channel::<(usize, Hint)>(64);
    let mut mirror_watches: Vec<Option<FolderWatcher>> = Vec::new();
    for (i, m) in mirrors.iter().enumerate() {
        mirror_watches.push(start_mirror_watch(i, &m.cfg, &mtx));
    }

    let opts = SyncOptions {
        rescan_local: false,
        ..Default::default()
    };
    rep.rescan(None)?;
    sync_all(&mut rep, &mut mirrors, &opts, &MirrorScan::Full).await;
    eprintln!(
        "watching {} with {} mirror(s); Ctrl-C to stop",
        root.display(),
        mirrors.len()
    );

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(Duration::from_secs(a.interval.max(1)));
    tick.tick().await;
    let mut full = tokio::time::interval(Duration::from_secs(a.rescan_interval.max(1)));
    full.tick().await;
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
                        // A watched mirror's own changes arrive as its hints; the others are
                        // scanned whole (their changes are only seen that way).
                        for i in 0..mirrors.len() {
                            let scan = if mirror_watches[i].is_some() {
                                MirrorScan::Skip
                            } else {
                                MirrorScan::Full
                            };
                            sync_run(&mut rep, &mut mirrors[i], &opts, &scan).await;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "rescan failed; will retry"),
                }
            }
            Some((i, hint)) = mirror_rx.recv() => {
                // Merge what else is queued for the same mirror.
                let mut hints = vec![(i, hint)];
                while let Ok(h) = mirror_rx.try_recv() {
                    hints.push(h);
                }
                for (i, m) in mirrors.iter_mut().enumerate() {
                    let mine: Vec<&Hint> = hints.iter().filter(|(j, _)| *j == i).map(|(_, h)| h).collect();
                    if mine.is_empty() {
                        continue;
                    }
                    let scan = mirror_scan_for(m, &mine);
                    sync_run(&mut rep, m, &opts, &scan).await;
                }
            }
            _ = tick.tick() => {
                for (i, m) in mirrors.iter_mut().enumerate() {
                    if mirror_watches[i].is_none() {
                        mirror_watches[i] = start_mirror_watch(i, &m.cfg, &mtx);
                        // Back online, or never watchable (not a local path): a full pass.
                        sync_run(&mut rep, m, &opts, &MirrorScan::Full).await;
                    }
                    // An idle watcher keeps no copy of the mirror's state (memory); the next
                    // sync reads it again.
                    if m.last_sync.elapsed() > Duration::from_secs(a.interval.max(1)) {
                        m.session = Session::default();
                    }
                }
            }
            _ = full.tick() => {
                if let Err(e) = rep.rescan(None) {
                    tracing::warn!(error = %e, "periodic rescan failed");
                }
                sync_all(&mut rep, &mut mirrors, &opts, &MirrorScan::Full).await;
            }
        }
    }
    eprintln!("stopped watching {}", root.display());
    Ok(super::EXIT_OK)
}

/// One configured mirror while watching: its open backend, the engine's session, and the status
/// last recorded in the journal (rewritten only when it changes or a minute has passed).
struct Run {
    cfg: MirrorConfig,
    backend: Box<dyn Mirror>,
    session: Session,
    recorded: Option<(MirrorStatusLine, Instant)>,
    last_sync: Instant,
}

/// How much of mirror `m` to scan for `hints` from its watcher: the reported paths, or all of it
/// when events were lost or the medium maps names (FAT: the watcher sees on-disk names).
fn mirror_scan_for(m: &Run, hints: &[&Hint]) -> MirrorScan {
    if !m.backend.capabilities().modes {
        return MirrorScan::Full;
    }
    let mut paths = Vec::new();
    for h in hints {
        match h {
            Hint::Rescan => return MirrorScan::Full,
            Hint::Paths(p) => paths.extend(p.iter().cloned()),
        }
    }
    paths.sort();
    paths.dedup();
    MirrorScan::Paths(paths)
}

fn start_mirror_watch(
    i: usize,
    m: &MirrorConfig,
    tx: &mpsc::Sender<(usize, Hint)>,
) -> Option<FolderWatcher> {
    let path = Target::parse(&m.target).ok()?.local_path()?.to_path_buf();
    if !path.join(briefcase_mirror::STATE_DIR).exists() {
        return None; // offline: retried on the next tick
    }
    let (w, mut rx) =
        FolderWatcher::start(path, IgnoreRules::defaults(), WatchOptions::default()).ok()?;
    let tx = tx.clone();
    tokio::spawn(async move {
        while let Some(h) = rx.recv().await {
            if tx.send((i, h)).await.is_err() {
                break;
            }
        }
    });
    Some(w)
}

async fn sync_all(
    rep: &mut LocalReplica,
    mirrors: &mut [Run],
    opts: &SyncOptions,
    scan: &MirrorScan,
) {
    for m in mirrors {
        sync_run(rep, m, opts, scan).await;
    }
}

async fn sync_run(rep: &mut LocalReplica, m: &mut Run, opts: &SyncOptions, scan: &MirrorScan) {
    let opts = SyncOptions {
        mirror_scan: scan.clone(),
        ..opts.clone()
    };
    let (out, status) = sync_with(rep, &m.cfg, m.backend.as_ref(), &opts, &mut m.session).await;
    m.last_sync = Instant::now();
    let stale = m
        .recorded
        .as_ref()
        .is_none_or(|(s, at)| *s != status || at.elapsed() > Duration::from_secs(60));
    if stale {
        record_status(rep, &m.cfg, &status);
        m.recorded = Some((status, Instant::now()));
    }
    report(out, &m.cfg);
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
