//! One folder under watch: the machinery `briefcase watch` and the daemon share.
//!
//! A folder task owns the local replica (journal, scanner) and one [`MirrorRun`] per configured
//! mirror, and is the only one that syncs them, so two syncs of one folder never overlap (a
//! `briefcase sync` through the daemon is queued here as a [`FolderCommand`]). It reacts to:
//!
//! - the local watcher: journal the change, then sync every mirror that is not known offline
//!   (watched mirrors skip their scan: their own changes come as their watcher's hints);
//! - a mirror's watcher: sync that mirror, scanning what it reported;
//! - a mirror coming back: its [`PresenceWatch`] or a mount-table change makes the task probe
//!   it; once it carries this folder's marker it is reconciled both ways at once, with progress
//!   in the log and the live view, and "safe to unplug" once the final state store is done;
//! - a mirror going away (unmounted, or a sync failing because it vanished): it is marked
//!   offline, nothing is deleted, and the task keeps running;
//! - every `interval`: offline mirrors are probed again and mirrors that cannot be watched are
//!   synced (the fallback); every `rescan_interval`: a full rescan of both sides.
//!
//! The task finishes the sync in flight before it stops (invariant 3 does not depend on it, but
//! there is no reason to redo the work).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use briefcase_mirror::registry::{Place, Target};
use briefcase_mirror::{FolderId, Mirror, Presence};
use tokio::sync::{mpsc, oneshot, watch};

use super::control::{ErrorKind, MirrorReply, Response};
use super::mounts::{presence_dirs, PresenceWatch};
use super::outcome::{
    changes_waiting, conflict_rows, record_status, sync_with, MirrorOutcome, MirrorStatusLine,
};
use super::progress::{Counters, Counting};
use super::view::{Availability, FolderState, FolderView, MirrorView, Progress, ViewHandle};
use super::{DaemonError, Shutdown};
use crate::config::MirrorConfig;
use crate::journal::now_ns;
use crate::reconcile::{MirrorScan, Session, SyncOptions};
use crate::replica::{LocalReplica, Seen};
use crate::scan::IgnoreRules;
use crate::watch::{FolderWatcher, Hint, WatchOptions};

/// Builds the backend of a configured mirror of a folder (the CLI's `backend()`); the error says
/// what is wrong with the target and what to do.
pub type BackendFactory =
    Arc<dyn Fn(FolderId, &MirrorConfig) -> Result<Box<dyn Mirror>, String> + Send + Sync>;

/// A long sync logs its progress this often.
pub const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(10);

/// How often a sync that left paths deferred is retried right after a mirror arrived.
const ARRIVAL_ATTEMPTS: usize = 3;

/// A folder to run: its root and its mirrors, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderSpec {
    /// The folder root.
    pub root: PathBuf,
    /// Its mirrors.
    pub mirrors: Vec<MirrorConfig>,
}

/// Timing of a running folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOptions {
    /// Between probes of offline mirrors and syncs with mirrors that cannot be watched
    /// (`--interval`, default 30 s).
    pub interval: Duration,
    /// Between full rescans of the folder and of watched mirrors (`--rescan-interval`,
    /// default 3600 s).
    pub rescan_interval: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            interval: Duration::from_secs(30),
            rescan_interval: Duration::from_secs(3600),
        }
    }
}

/// Work asked of a folder task through the control socket.
#[derive(Debug)]
pub enum FolderCommand {
    /// Rescan and sync now (`briefcase sync`); the answer is a [`Response::Synced`] or an error.
    Sync {
        /// Only this mirror.
        mirror: Option<String>,
        /// Plan only.
        dry_run: bool,
        /// Allow a mass deletion.
        allow_mass_delete: bool,
        /// Where the answer goes.
        reply: oneshot::Sender<Response>,
    },
    /// Rescan and list the conflict copies (`briefcase conflicts`).
    Conflicts {
        /// Where the answer goes.
        reply: oneshot::Sender<Response>,
    },
}

/// What a folder task is given besides its [`FolderSpec`].
pub struct FolderContext {
    /// Where journals live ([`crate::config::Dirs::data`]).
    pub data_dir: PathBuf,
    /// Builds each mirror's backend.
    pub backends: BackendFactory,
    /// Timing.
    pub options: RunOptions,
    /// Stops the task (after the sync in flight).
    pub shutdown: Shutdown,
    /// Work from the control socket.
    pub commands: mpsc::Receiver<FolderCommand>,
    /// The live view to keep up to date; the folder's entry is keyed by [`FolderSpec::root`].
    pub view: ViewHandle,
    /// Mount-table changes ([`super::mounts::watch_mounts`]), when watched.
    pub mounts: Option<watch::Receiver<u64>>,
    /// Told once the journal is open and the watchers run (or why that failed).
    pub started: Option<oneshot::Sender<Result<(), String>>>,
    /// Told once the first sync with every mirror is done, with the number of mirrors.
    pub first_sync: Option<oneshot::Sender<usize>>,
}

/// Whether a mirror can be reached, as far as this task knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Not looked at yet.
    Unknown,
    /// Its root carries this folder's marker.
    Online,
    /// It does not (absent, empty, unmarked): waiting for it to come back.
    Offline,
}

/// One configured mirror while its folder runs.
struct MirrorRun {
    cfg: MirrorConfig,
    backend: Counting,
    session: Session,
    /// The status last recorded in the journal (rewritten when it changes or a minute passed).
    recorded: Option<(MirrorStatusLine, Instant)>,
    last_sync: Instant,
    /// inotify on the mirror's data (local mirrors that are online).
    watch: Option<FolderWatcher>,
    /// inotify where an offline local mirror will appear.
    presence: Option<PresenceWatch>,
    link: Link,
    /// Its target, as its backend parsed it (`None`: no registered backend takes it).
    target: Option<Target>,
    /// Where it shows up on this machine (a mount point, a directory): watched for while it
    /// is offline.
    place: Option<Place>,
    /// It comes and goes: say when it is safe to unplug.
    removable: bool,
    /// Its last sync was complete: unplugged while no sync writes to it, nothing is lost.
    in_sync: bool,
    /// Why deletions are held back for it (mass-deletion guard), as last logged.
    held: Option<String>,
}

impl MirrorRun {
    /// What its backend calls it in messages ("mirror", "stick").
    fn noun(&self) -> &'static str {
        self.target.as_ref().map_or("mirror", Target::noun)
    }

    /// Known offline and noticed through its path when it comes back (no need to try a sync).
    fn waiting(&self) -> bool {
        self.link == Link::Offline && self.place.is_some()
    }
}

struct Runner {
    /// Watching the folder (dropping it stops the watch).
    _local_watch: FolderWatcher,
    key: PathBuf,
    rep: LocalReplica,
    runs: Vec<MirrorRun>,
    view: ViewHandle,
    options: RunOptions,
    hint_tx: mpsc::Sender<(usize, Hint)>,
    presence_tx: mpsc::Sender<usize>,
    /// Base options of the syncs the watcher triggers.
    base: SyncOptions,
    /// When to let go of what the last burst of work kept in memory ([`Runner::let_go`]).
    let_go_at: Option<tokio::time::Instant>,
}

/// How long after the last sync or local change a folder keeps the mirrors' decoded states and
/// SQLite's page cache (ms). A burst of saves within it syncs without reading any mirror's state
/// again; after it the folder holds no per-file structure in memory (issue 10: idle footprint).
pub const LET_GO_AFTER: Duration = Duration::from_millis(5_000);

/// Runs one folder until `ctx.shutdown`: opens it, starts the watchers, syncs every mirror, then
/// follows changes (see the module docs).
///
/// # Errors
/// [`DaemonError::Folder`] when the folder cannot be opened or rescanned at start (offline,
/// damaged journal), [`DaemonError::Mirror`] for a target no backend can be built for,
/// [`DaemonError::Watch`] when the folder cannot be watched. Later failures are logged and retried,
/// never returned.
pub async fn run_folder(spec: FolderSpec, mut ctx: FolderContext) -> Result<(), DaemonError> {
    let key = spec.root.clone();
    ctx.view.set_folder(
        &key,
        FolderView {
            path: key.clone(),
            folder_id: None,
            state: FolderState::Starting,
            error: None,
            mirrors: spec
                .mirrors
                .iter()
                .map(|m| MirrorView::new(&m.name, &m.target, m.send_only))
                .collect(),
        },
    );
    let started = start(&spec, &ctx);
    let (mut runner, local_rx, mirror_rx, presence_rx) = match started {
        Ok(s) => s,
        Err(e) => {
            let msg = e.to_string();
            ctx.view.update_folder(&key, |f| {
                f.state = FolderState::Failed;
                f.error = Some(msg.clone());
            });
            if let Some(tx) = ctx.started.take() {
                let _ = tx.send(Err(msg));
            }
            return Err(e);
        }
    };
    if let Some(tx) = ctx.started.take() {
        let _ = tx.send(Ok(()));
    }
    runner.first_pass(&mut ctx.shutdown).await?;
    if let Some(tx) = ctx.first_sync.take() {
        let _ = tx.send(runner.runs.len());
    }
    runner.follow(ctx, local_rx, mirror_rx, presence_rx).await;
    Ok(())
}

type Started = (
    Runner,
    mpsc::Receiver<Hint>,
    mpsc::Receiver<(usize, Hint)>,
    mpsc::Receiver<usize>,
);

/// Opens the folder, builds the backends and starts the watchers (before the first sync, so
/// nothing that happens during it is missed).
fn start(spec: &FolderSpec, ctx: &FolderContext) -> Result<Started, DaemonError> {
    let key = spec.root.clone();
    let rep =
        LocalReplica::open(&spec.root, &ctx.data_dir).map_err(|source| DaemonError::Folder {
            root: key.clone(),
            source,
        })?;
    let removed = briefcase_mirror::fsutil::remove_temp_files_under(&rep.root).unwrap_or(0);
    if removed > 0 {
        tracing::info!(folder = %rep.root.display(), count = removed, "removed leftover temp files of an interrupted sync");
    }
    let statuses = rep.journal.mirror_statuses().unwrap_or_default();
    let folder_id = rep.journal.folder_id();
    let mut runs = Vec::with_capacity(spec.mirrors.len());
    for m in &spec.mirrors {
        let inner = (ctx.backends)(folder_id, m).map_err(|reason| DaemonError::Mirror {
            root: key.clone(),
            mirror: m.name.clone(),
            reason,
        })?;
        let counters = Arc::new(Counters::default());
        let removable = inner.capabilities().removable;
        let target = crate::backends::parse(&m.target).ok();
        let place = target.as_ref().and_then(|t| t.place().cloned());
        runs.push(MirrorRun {
            cfg: m.clone(),
            backend: Counting::new(inner, counters),
            session: Session::default(),
            recorded: None,
            last_sync: Instant::now(),
            watch: None,
            presence: None,
            link: Link::Unknown,
            // Also true later for any mirror seen to go and come back (a disk unplugged).
            removable,
            in_sync: false,
            held: None,
            target,
            place,
        });
    }
    let (local_watch, local_rx) =
        FolderWatcher::start(rep.root.clone(), rep.rules.clone(), WatchOptions::default())
            .map_err(|source| DaemonError::Watch {
                root: key.clone(),
                source,
            })?;
    let (hint_tx, mirror_rx) = mpsc::channel::<(usize, Hint)>(64);
    let (presence_tx, presence_rx) = mpsc::channel::<usize>(64);
    for (i, m) in runs.iter_mut().enumerate() {
        m.watch = start_mirror_watch(i, m.target.as_ref(), &hint_tx);
    }
    ctx.view.update_folder(&key, |f| {
        f.folder_id = Some(folder_id.to_string());
        f.state = FolderState::Running;
        for (v, m) in f.mirrors.iter_mut().zip(&runs) {
            v.removable = m.removable;
            v.last_reconciled_ns = statuses
                .iter()
                .find(|s| s.name == m.cfg.name)
                .and_then(|s| s.last_sync_ns);
        }
    });
    let runner = Runner {
        _local_watch: local_watch,
        key,
        rep,
        runs,
        view: ctx.view.clone(),
        options: ctx.options,
        hint_tx,
        presence_tx,
        base: {
            let mut o = SyncOptions {
                rescan_local: false,
                ..Default::default()
            };
            // A folder task waiting for another machine's lease holds up its other mirrors:
            // wait a little, then show the mirror busy and try again at the next sync.
            o.lease.wait = o.lease.wait.min(Duration::from_secs(10));
            o
        },
        let_go_at: None,
    };
    Ok((runner, local_rx, mirror_rx, presence_rx))
}

impl Runner {
    /// The first sync with every mirror (after a full local rescan). A stick found plugged in is
    /// announced as arriving. Stops early, between two mirrors, when `shutdown` comes.
    async fn first_pass(&mut self, shutdown: &mut Shutdown) -> Result<(), DaemonError> {
        self.rep
            .rescan(None)
            .map_err(|source| DaemonError::Folder {
                root: self.key.clone(),
                source,
            })?;
        for i in 0..self.runs.len() {
            if shutdown.check() {
                return Ok(());
            }
            if self.runs[i].removable && self.is_marked(i).await {
                self.arrive(i).await;
            } else {
                self.sync_mirror(i, MirrorScan::Full, &self.base.clone(), false)
                    .await;
            }
        }
        Ok(())
    }

    /// Follows changes until shutdown.
    async fn follow(
        mut self,
        mut ctx: FolderContext,
        mut local_rx: mpsc::Receiver<Hint>,
        mut mirror_rx: mpsc::Receiver<(usize, Hint)>,
        mut presence_rx: mpsc::Receiver<usize>,
    ) {
        let interval = self.options.interval.max(Duration::from_secs(1));
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        let mut full =
            tokio::time::interval(self.options.rescan_interval.max(Duration::from_secs(1)));
        full.tick().await;
        let mut shutdown = ctx.shutdown;
        let mut mounts = ctx.mounts.take();
        loop {
            tokio::select! {
                _ = shutdown.recv() => break,
                hint = local_rx.recv() => {
                    let Some(hint) = hint else { break };
                    self.local_hint(hint).await;
                }
                Some((i, hint)) = mirror_rx.recv() => {
                    // Merge what else is queued for the same mirrors.
                    let mut hints = vec![(i, hint)];
                    while let Ok(h) = mirror_rx.try_recv() {
                        hints.push(h);
                    }
                    for i in 0..self.runs.len() {
                        let mine: Vec<&Hint> =
                            hints.iter().filter(|(j, _)| *j == i).map(|(_, h)| h).collect();
                        if mine.is_empty() || self.runs[i].waiting() {
                            continue;
                        }
                        let scan = mirror_scan_for(&self.runs[i], &mine);
                        self.sync_mirror(i, scan, &self.base.clone(), false).await;
                    }
                }
                Some(i) = presence_rx.recv() => {
                    let mut which = BTreeSet::from([i]);
                    while let Ok(j) = presence_rx.try_recv() {
                        which.insert(j);
                    }
                    for i in which {
                        self.presence_hint(i).await;
                    }
                }
                () = mount_change(&mut mounts) => self.mounts_changed().await,
                Some(cmd) = ctx.commands.recv() => self.command(cmd).await,
                _ = tick.tick() => self.tick().await,
                () = sleep_until_some(self.let_go_at) => self.let_go(),
                _ = full.tick() => {
                    if let Err(e) = self.rep.rescan(None) {
                        tracing::warn!(folder = %self.key.display(), error = %e, "periodic rescan failed; will retry");
                    }
                    for i in 0..self.runs.len() {
                        if self.runs[i].waiting() {
                            self.probe_offline(i).await;
                        } else {
                            self.sync_mirror(i, MirrorScan::Full, &self.base.clone(), false).await;
                        }
                    }
                }
            }
        }
    }

    /// Forgets what the last burst of work kept in memory: each mirror's decoded state (the next
    /// sync reads it again, [`Session`]) and SQLite's page cache (`PRAGMA shrink_memory`).
    fn let_go(&mut self) {
        self.let_go_at = None;
        for m in &mut self.runs {
            m.session = Session::default();
        }
        self.rep.journal.release_memory();
    }

    /// Journals a local change and syncs it to every mirror not known offline.
    async fn local_hint(&mut self, hint: Hint) {
        self.let_go_at = Some(tokio::time::Instant::now() + LET_GO_AFTER);
        let rec = match hint {
            // Lost events: the whole tree, but still work seen while watching the present folder
            // (not downtime), so its deletions are not weighed as a mass deletion.
            Hint::Rescan => self.rep.rescan_as(None, Seen::Watched),
            Hint::Paths(p) => self.rep.rescan(Some(&p)),
        };
        match rec {
            Ok(r) if r.total() > 0 => {
                tracing::debug!(folder = %self.key.display(), changes = r.total(), "local changes journaled");
                for i in 0..self.runs.len() {
                    if self.runs[i].waiting() {
                        continue;
                    }
                    // A watched mirror's own changes arrive as its hints; the others are
                    // scanned whole (their changes are only seen that way).
                    let scan = if self.runs[i].watch.is_some() {
                        MirrorScan::Skip
                    } else {
                        MirrorScan::Full
                    };
                    self.sync_mirror(i, scan, &self.base.clone(), false).await;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(folder = %self.key.display(), error = %e, "rescan failed; will retry")
            }
        }
    }

    /// The periodic fallback: probe offline mirrors, sync the ones that cannot be watched.
    async fn tick(&mut self) {
        for i in 0..self.runs.len() {
            if self.runs[i].watch.is_none() {
                if self.runs[i].waiting() {
                    self.probe_offline(i).await;
                } else {
                    let m = &mut self.runs[i];
                    m.watch = start_mirror_watch(i, m.target.as_ref(), &self.hint_tx);
                    // Never watchable (not a local path, not a plain tree): a full pass.
                    self.sync_mirror(i, MirrorScan::Full, &self.base.clone(), false)
                        .await;
                }
            }
        }
    }

    /// Whether mirror `i` carries this folder's marker now.
    async fn is_marked(&self, i: usize) -> bool {
        let folder = self.rep.journal.folder_id();
        match self.runs[i].backend.probe().await {
            Ok(Presence::Marked(f)) => f == folder,
            Ok(_) => false,
            Err(e) => {
                tracing::debug!(mirror = %self.runs[i].cfg.name, error = %e, "probe failed");
                false
            }
        }
    }

    /// An offline mirror may be back: reconcile it if it is, else keep watching where it will
    /// appear (the nearest existing directory may have changed).
    async fn probe_offline(&mut self, i: usize) {
        if self.is_marked(i).await {
            self.arrive(i).await;
        } else {
            self.watch_presence(i);
        }
    }

    /// Something happened where offline mirror `i` will appear.
    async fn presence_hint(&mut self, i: usize) {
        if i >= self.runs.len() {
            return;
        }
        if self.runs[i].link == Link::Online {
            self.runs[i].presence = None;
            return;
        }
        self.probe_offline(i).await;
    }

    /// The mount table changed: a stick was mounted or one was unmounted.
    async fn mounts_changed(&mut self) {
        for i in 0..self.runs.len() {
            if self.runs[i].place.is_none() {
                continue;
            }
            let marked = self.is_marked(i).await;
            match (self.runs[i].link, marked) {
                (Link::Online, false) => self.went_away(i),
                (Link::Offline | Link::Unknown, true) => self.arrive(i).await,
                _ => {}
            }
        }
    }

    /// Starts (or moves) the watch for offline mirror `i` to appear.
    fn watch_presence(&mut self, i: usize) {
        let m = &mut self.runs[i];
        let Some(place) = m.place.clone() else {
            return;
        };
        if m.presence
            .as_ref()
            .is_some_and(|p| p.dirs() == presence_dirs(&place.path, place.marker_depth).as_slice())
        {
            return;
        }
        let tx = self.presence_tx.clone();
        m.presence = match PresenceWatch::start(&place.path, place.marker_depth, move || {
            let _ = tx.try_send(i);
        }) {
            Ok(p) => {
                tracing::debug!(mirror = %m.cfg.name, dirs = ?p.dirs(), "watching for the mirror to appear");
                Some(p)
            }
            Err(e) => {
                tracing::debug!(mirror = %m.cfg.name, error = %e, "cannot watch for the mirror to appear; probing it every interval instead");
                None
            }
        };
    }

    /// Mirror `i` was found gone while idle (unmounted): offline, nothing deleted.
    fn went_away(&mut self, i: usize) {
        let m = &mut self.runs[i];
        gone_message(
            &self.key,
            m.noun(),
            &m.cfg.name,
            m.in_sync,
            &format!("{} is not there any more", m.cfg.target),
        );
        m.link = Link::Offline;
        m.removable = true;
        m.in_sync = false;
        m.watch = None;
        m.session = Session::default();
        let status = MirrorStatusLine {
            result: format!(
                "offline: {} {} went away; nothing was deleted",
                m.noun(),
                m.cfg.name
            ),
            ok: false,
            paused: None,
        };
        record_status(&mut self.rep, &m.cfg, &status);
        m.recorded = Some((status.clone(), Instant::now()));
        self.view.update_mirror(&self.key, &m.cfg.name, |v| {
            v.state = Availability::Offline;
            v.detail = Some(status.result);
            v.removable = true;
            v.safe_to_unplug = None;
            v.changes_waiting = None;
            v.progress = None;
            v.live = None;
        });
        self.watch_presence(i);
    }

    /// Mirror `i` is here (again): reconcile both ways at once, then say it is safe to unplug.
    async fn arrive(&mut self, i: usize) {
        let waiting = match changes_waiting(&self.rep, &self.runs[i].backend).await {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(mirror = %self.runs[i].cfg.name, error = %e, "cannot count the changes it carries");
                None
            }
        };
        let m = &mut self.runs[i];
        m.removable = true;
        m.link = Link::Online;
        m.presence = None;
        m.session = Session::default();
        if m.watch.is_none() {
            m.watch = start_mirror_watch(i, m.target.as_ref(), &self.hint_tx);
        }
        match waiting {
            Some(n) => tracing::info!(
                folder = %self.key.display(),
                "{} {} arrived: reconciling (it carries {n} change(s) for this machine)",
                m.noun(),
                m.cfg.name
            ),
            None => {
                tracing::info!(folder = %self.key.display(), "{} {} arrived: reconciling", m.noun(), m.cfg.name)
            }
        }
        self.view.update_mirror(&self.key, &m.cfg.name, |v| {
            v.removable = true;
            v.changes_waiting = waiting;
        });
        for _ in 0..ARRIVAL_ATTEMPTS {
            match self
                .sync_mirror(i, MirrorScan::Full, &self.base.clone(), true)
                .await
            {
                MirrorOutcome::Synced(r) if !r.complete => {
                    let m = &self.runs[i];
                    tracing::warn!(
                        folder = %self.key.display(),
                        "{} {} is not fully in sync yet ({} deferred, {} failed); keep it plugged in, trying again",
                        m.noun(),
                        m.cfg.name,
                        r.deferred.len(),
                        r.failed.len()
                    );
                }
                _ => return,
            }
        }
    }

    /// Syncs mirror `i`, keeping the live view, the log and the journal's status up to date.
    /// `announce`: log the counts even when nothing moved (a mirror that just arrived).
    async fn sync_mirror(
        &mut self,
        i: usize,
        scan: MirrorScan,
        base: &SyncOptions,
        announce: bool,
    ) -> MirrorOutcome {
        let opts = SyncOptions {
            mirror_scan: scan,
            ..base.clone()
        };
        let m = &mut self.runs[i];
        let counters = Arc::clone(m.backend.counters());
        counters.reset();
        let since = now_ns();
        let removable = m.removable;
        self.view.update_mirror(&self.key, &m.cfg.name, |v| {
            v.state = Availability::Syncing;
            v.progress = Some(Progress {
                since_ns: since,
                counts: Default::default(),
            });
            v.live = Some(Arc::clone(&counters));
            if removable {
                v.safe_to_unplug = Some(false);
            }
        });
        let what = format!("{} {}", m.noun(), m.cfg.name);
        let (out, status) = with_progress_log(
            sync_with(&mut self.rep, &m.cfg, &m.backend, &opts, &mut m.session),
            &counters,
            &what,
        )
        .await;
        m.last_sync = Instant::now();
        self.let_go_at = Some(tokio::time::Instant::now() + LET_GO_AFTER);
        if !opts.dry_run {
            let stale = m
                .recorded
                .as_ref()
                .is_none_or(|(s, at)| *s != status || at.elapsed() > Duration::from_secs(60));
            if stale {
                record_status(&mut self.rep, &m.cfg, &status);
                m.recorded = Some((status.clone(), Instant::now()));
            }
        }
        self.settle(i, &out, &status, opts.dry_run, announce, &counters)
            .await;
        out
    }

    /// After a sync of mirror `i`: what it says about the mirror being there, the log, the view.
    async fn settle(
        &mut self,
        i: usize,
        out: &MirrorOutcome,
        status: &MirrorStatusLine,
        dry_run: bool,
        announce: bool,
        counters: &Counters,
    ) {
        let present = match out {
            MirrorOutcome::Synced(_) => true,
            MirrorOutcome::Offline(_) => status.paused.is_some(),
            MirrorOutcome::Failed(_) => self.is_marked(i).await,
        };
        let key = self.key.clone();
        let m = &mut self.runs[i];
        let before = m.link;
        let (noun, name) = (m.noun(), m.cfg.name.clone());
        let mut complete = false;
        match out {
            MirrorOutcome::Synced(r) => {
                complete = r.complete && !dry_run;
                let moved = r.pushed + r.pulled + r.removed_local + r.removed_remote + r.renamed;
                if announce {
                    tracing::info!(
                        folder = %key.display(),
                        sent = r.pushed, received = r.pulled, removed_there = r.removed_remote,
                        removed_here = r.removed_local, renamed = r.renamed, conflicts = r.conflicts.len(),
                        "{noun} {name} reconciled: {} sent, {} received, {} removed there, {} removed here, {} renamed, {} conflict(s)",
                        r.pushed, r.pulled, r.removed_remote, r.removed_local, r.renamed, r.conflicts.len()
                    );
                } else if moved > 0 || !r.conflicts.is_empty() {
                    tracing::info!(
                        mirror = %name, sent = r.pushed, received = r.pulled, removed_there = r.removed_remote,
                        removed_here = r.removed_local, renamed = r.renamed, conflicts = r.conflicts.len(), "synced"
                    );
                }
                for c in &r.conflicts {
                    tracing::warn!(mirror = %name, copy = %c, "conflict: both versions kept");
                }
                for f in &r.failed {
                    tracing::warn!(mirror = %name, "{f}");
                }
                if let Some(why) = &r.held {
                    // Said once when it starts; `status` shows it for as long as it lasts.
                    if m.held.as_deref() != Some(why.as_str()) {
                        tracing::warn!(mirror = %name, "{why}");
                    }
                }
                m.held = r.held.clone();
                if before == Link::Offline && !announce {
                    tracing::info!(folder = %key.display(), "{noun} {name} is back");
                }
                if complete && m.removable && (announce || moved > 0) {
                    tracing::info!(folder = %key.display(), "{noun} {name} is in sync; safe to unplug");
                }
            }
            MirrorOutcome::Offline(s) if present => tracing::warn!(mirror = %name, "{s}"),
            MirrorOutcome::Failed(s) if present => tracing::error!(mirror = %name, "{s}"),
            MirrorOutcome::Offline(s) | MirrorOutcome::Failed(s) => match before {
                Link::Online if counters.writes() > 0 => {
                    tracing::warn!(
                        folder = %key.display(),
                        "{noun} {name} was removed during the sync; nothing is lost, plug it in again to finish"
                    );
                    tracing::debug!(mirror = %name, "{s}");
                }
                // Nothing was being written: the sync was only looking.
                Link::Online => gone_message(&key, noun, &name, m.in_sync, s),
                Link::Unknown => {
                    tracing::warn!(mirror = %name, "{s}");
                    if m.place.is_some() {
                        tracing::info!(folder = %key.display(), "{noun} {name}: waiting for it to come back");
                    }
                }
                Link::Offline => tracing::debug!(mirror = %name, "{s}"),
            },
        }
        if present {
            m.link = Link::Online;
            m.presence = None;
            if before == Link::Offline {
                m.session = Session::default();
            }
            if m.watch.is_none() && before != Link::Online {
                m.watch = start_mirror_watch(i, m.target.as_ref(), &self.hint_tx);
            }
        } else {
            m.link = Link::Offline;
            m.watch = None;
            m.session = Session::default();
            if before != Link::Unknown {
                m.removable = true;
            }
        }
        m.in_sync = present && complete;
        let removable = m.removable;
        let waiting = match out {
            MirrorOutcome::Synced(r) if r.complete && !dry_run => Some(Some(0)),
            MirrorOutcome::Synced(_) if !dry_run => {
                Some(changes_waiting(&self.rep, &m.backend).await.ok().flatten())
            }
            _ if !present => Some(None),
            _ => None,
        };
        let now = now_ns();
        self.view.update_mirror(&key, &name, |v| {
            v.state = if !present {
                Availability::Offline
            } else if status.paused.is_some() {
                Availability::Paused
            } else if matches!(out, MirrorOutcome::Failed(_)) {
                Availability::Error
            } else {
                Availability::Online
            };
            if !dry_run || !present {
                v.detail = Some(status.result.clone());
            }
            if complete {
                v.last_reconciled_ns = Some(now);
            }
            if let Some(w) = waiting {
                v.changes_waiting = w;
            }
            v.removable = removable;
            v.safe_to_unplug = (removable && present).then_some(complete);
            v.progress = None;
            v.live = None;
        });
        if !present && m.place.is_some() {
            self.watch_presence(i);
        }
    }

    /// Work from the control socket.
    async fn command(&mut self, cmd: FolderCommand) {
        match cmd {
            FolderCommand::Sync {
                mirror,
                dry_run,
                allow_mass_delete,
                reply,
            } => {
                let r = self.command_sync(mirror, dry_run, allow_mass_delete).await;
                let _ = reply.send(r);
            }
            FolderCommand::Conflicts { reply } => {
                let r = match self.rep.rescan(None) {
                    Err(e) => Response::error(
                        ErrorKind::Failed,
                        format!("folder {}: {e}", self.key.display()),
                    ),
                    Ok(_) => match conflict_rows(&self.rep) {
                        Ok(conflicts) => Response::Conflicts {
                            folder: self.key.clone(),
                            conflicts,
                        },
                        Err(e) => Response::error(
                            ErrorKind::Failed,
                            format!("folder {}: {e}", self.key.display()),
                        ),
                    },
                };
                let _ = reply.send(r);
            }
        }
    }

    /// `briefcase sync` through the daemon: what a one-shot sync does, in this task's turn.
    async fn command_sync(
        &mut self,
        mirror: Option<String>,
        dry_run: bool,
        allow_mass_delete: bool,
    ) -> Response {
        tracing::info!(folder = %self.key.display(), mirror = mirror.as_deref().unwrap_or("(all)"), dry_run, "sync asked through the control socket");
        let chosen: Vec<usize> = (0..self.runs.len())
            .filter(|&i| mirror.as_ref().is_none_or(|n| *n == self.runs[i].cfg.name))
            .collect();
        if chosen.is_empty() {
            let root = self.key.display();
            return match &mirror {
                Some(n) => Response::error(
                    ErrorKind::UnknownMirror,
                    format!("folder {root} has no mirror named {n}; see `briefcase mirror list`"),
                ),
                None => Response::error(
                    ErrorKind::UnknownMirror,
                    format!("folder {root} has no mirrors; add one with `briefcase mirror add {root} /path/to/mirror`"),
                ),
            };
        }
        if !dry_run {
            if let Err(e) = self.rep.rescan(None) {
                return Response::error(
                    ErrorKind::Failed,
                    format!("folder {}: {e}", self.key.display()),
                );
            }
        }
        let opts = SyncOptions {
            dry_run,
            allow_mass_delete,
            ..self.base.clone()
        };
        let mut outcomes = Vec::with_capacity(chosen.len());
        for i in chosen {
            let outcome = self.sync_mirror(i, MirrorScan::Full, &opts, false).await;
            outcomes.push(MirrorReply {
                mirror: self.runs[i].cfg.name.clone(),
                outcome,
            });
        }
        Response::Synced {
            folder: self.key.clone(),
            outcomes,
        }
    }
}

/// Logs that a mirror went away while nothing was being written to it: plainly when its last
/// sync was complete (it was safe to unplug), as a warning otherwise.
fn gone_message(folder: &std::path::Path, noun: &str, name: &str, in_sync: bool, why: &str) {
    if in_sync {
        tracing::info!(folder = %folder.display(), "{noun} {name} was unplugged; it was in sync, and is synced again as soon as it is back");
        tracing::debug!(mirror = %name, "{why}");
    } else {
        tracing::warn!(folder = %folder.display(), "{noun} {name} went away before it was in sync: {why}; nothing was deleted, and it is synced again as soon as it is back");
    }
}

/// Waits for the next mount-table change; forever when the table is not watched.
async fn mount_change(rx: &mut Option<watch::Receiver<u64>>) {
    let ok = match rx.as_mut() {
        Some(r) => r.changed().await.is_ok(),
        None => false,
    };
    if !ok {
        *rx = None;
        std::future::pending::<()>().await;
    }
}

/// Runs `fut` (a sync), logging the counters every [`PROGRESS_LOG_EVERY`] while it lasts.
async fn with_progress_log<T>(
    fut: impl std::future::Future<Output = T>,
    counters: &Counters,
    what: &str,
) -> T {
    tokio::pin!(fut);
    let mut every = tokio::time::interval_at(
        tokio::time::Instant::now() + PROGRESS_LOG_EVERY,
        PROGRESS_LOG_EVERY,
    );
    loop {
        tokio::select! {
            biased;
            r = &mut fut => return r,
            _ = every.tick() => tracing::info!("{what}: still reconciling: {}", counters.snapshot()),
        }
    }
}

/// How much of mirror `m` to scan for `hints` from its watcher: the reported paths, or all of it
/// when events were lost or the medium maps names (FAT: the watcher sees on-disk names).
fn mirror_scan_for(m: &MirrorRun, hints: &[&Hint]) -> MirrorScan {
    if m.backend.capabilities().maps_names {
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

/// Watches the data of a mirror whose backend says it is a plain tree in a local directory
/// ([`Target::watch_root`]); `None` when it is offline or not such a tree (retried every
/// interval).
fn start_mirror_watch(
    i: usize,
    target: Option<&Target>,
    tx: &mpsc::Sender<(usize, Hint)>,
) -> Option<FolderWatcher> {
    let path = target?.watch_root()?;
    // Only briefcase writes a mirror: nothing to wait for there (a lock file seen on a mirror
    // is a leftover no process holds; lock files are never replicated).
    let opts = WatchOptions {
        git_lock_wait: Duration::ZERO,
        ..WatchOptions::default()
    };
    let (w, mut rx) = FolderWatcher::start(path, IgnoreRules::defaults(), opts).ok()?;
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

/// Waits until `at`, or forever when `None` (a `select!` arm that is off).
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
