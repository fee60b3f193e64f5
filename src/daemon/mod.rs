//! The daemon: every configured folder under watch, a control socket, and mirrors noticed as
//! they come and go.
//!
//! Shaped like tokio's mini-redis server: [`run`] takes the configuration and a `shutdown`
//! future; a broadcast channel tells every task to stop ([`Shutdown`]), and `run` returns once
//! each has finished what it was doing.
//!
//! - [`folder`]: one folder under watch (shared with `briefcase watch`): local and mirror
//!   watchers, syncs, mirrors arriving and leaving. Each folder runs on its own thread with its
//!   own single-threaded runtime, so a long scan or sync of one never delays another folder or
//!   the control socket, and only that task touches the folder's journal.
//! - [`control`]: the socket `$XDG_RUNTIME_DIR/briefcase/control.sock` and its line-delimited
//!   JSON protocol (a client too, for the CLI).
//! - [`mounts`]: mount-table changes (`/proc/self/mountinfo`) and watches for an absent mirror
//!   path to appear.
//! - [`view`]: the live view `status` shows; [`progress`]: counters of the running sync;
//!   [`outcome`]: what a sync came to, as every command reports it.
//!
//! The service manager is told `READY=1` once every folder is running (opened and watched; the
//! first syncs follow), `STATUS=` lines as mirrors come, go and sync, and `STOPPING=1` at
//! shutdown (`sd-notify`; nothing happens without `NOTIFY_SOCKET`).

pub mod control;
pub mod folder;
pub mod mounts;
pub mod outcome;
pub mod progress;
pub mod view;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::config::{Config, ConfigError, Dirs};
use control::{ControlSocket, ErrorKind, Request, Response};
pub use folder::{BackendFactory, FolderCommand, FolderContext, FolderSpec, RunOptions};
use view::ViewHandle;

/// Why the daemon (or a folder in it) could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Another daemon already serves this runtime directory.
    #[error("another briefcase daemon{} is already running and answers on {socket}; stop it first (`systemctl --user stop briefcase`{})", pid.map(|p| format!(" (pid {p})")).unwrap_or_default(), pid.map(|p| format!(" or `kill {p}`")).unwrap_or_default())]
    AlreadyRunning {
        /// Its socket.
        socket: PathBuf,
        /// Its process ID, when it answered.
        pid: Option<u32>,
    },
    /// The control socket (or its directory or lock) could not be set up.
    #[error("cannot {what} {path}: {source}; check XDG_RUNTIME_DIR and the permissions of that directory")]
    Socket {
        /// The path concerned.
        path: PathBuf,
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The configuration cannot be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A folder cannot be opened or scanned.
    #[error("folder {root}: {source}")]
    Folder {
        /// The folder root.
        root: PathBuf,
        /// The cause (says what to do).
        source: crate::replica::ReplicaError,
    },
    /// A mirror's target cannot be used.
    #[error("folder {root}, mirror {mirror}: {reason}; fix it with `briefcase mirror remove {root} {mirror}` and `briefcase mirror add`")]
    Mirror {
        /// The folder root.
        root: PathBuf,
        /// The mirror's name.
        mirror: String,
        /// What is wrong.
        reason: String,
    },
    /// A folder cannot be watched.
    #[error("folder {root}: {source}")]
    Watch {
        /// The folder root.
        root: PathBuf,
        /// The cause.
        source: crate::watch::WatchError,
    },
    /// A thread or runtime for a folder cannot be started.
    #[error("folder {root}: cannot start its task: {source}")]
    Task {
        /// The folder root.
        root: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The folder's task panicked: a bug, or input that no check caught. The folder shows as
    /// failed and is restarted like any failed folder.
    #[error("folder {root}: its task stopped on an internal error ({what}); nothing more is synced for it until it restarts. This is a bug: please report it with the log")]
    Panicked {
        /// The folder root.
        root: PathBuf,
        /// The panic's message.
        what: String,
    },
}

/// Listens for the shutdown signal (mini-redis's `Shutdown`): [`Shutdown::recv`] returns once the
/// daemon stops (the broadcast was sent, or its sender dropped), and at once ever after.
#[derive(Debug)]
pub struct Shutdown {
    is_shutdown: bool,
    notify: broadcast::Receiver<()>,
}

impl Shutdown {
    /// Listens on `notify`.
    pub fn new(notify: broadcast::Receiver<()>) -> Shutdown {
        Shutdown {
            is_shutdown: false,
            notify,
        }
    }

    /// Whether the signal was received.
    pub fn is_shutdown(&self) -> bool {
        self.is_shutdown
    }

    /// Whether the signal has been sent, without waiting (for a long task to check between steps).
    pub fn check(&mut self) -> bool {
        if !self.is_shutdown {
            self.is_shutdown = !matches!(
                self.notify.try_recv(),
                Err(broadcast::error::TryRecvError::Empty)
            );
        }
        self.is_shutdown
    }

    /// Waits for the signal.
    pub async fn recv(&mut self) {
        if self.is_shutdown {
            return;
        }
        let _ = self.notify.recv().await;
        self.is_shutdown = true;
    }
}

impl Clone for Shutdown {
    fn clone(&self) -> Self {
        Shutdown {
            is_shutdown: self.is_shutdown,
            notify: self.notify.resubscribe(),
        }
    }
}

/// Tells the service manager `states` (nothing without `NOTIFY_SOCKET`).
fn sd_notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "cannot notify the service manager");
    }
}

/// The key of a folder in the view and the registry: its root with symlinks resolved (what
/// `find_root` gives a client), or as configured when it cannot be resolved (offline).
pub fn folder_key(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// `briefcase watch`: runs one folder in the current task until `shutdown` completes; `synced`
/// is told the number of mirrors once the first sync with each is done.
///
/// # Errors
/// As [`folder::run_folder`].
pub async fn watch_folder(
    spec: FolderSpec,
    data_dir: PathBuf,
    backends: BackendFactory,
    options: RunOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    synced: Option<oneshot::Sender<usize>>,
) -> Result<(), DaemonError> {
    let (notify, rx) = broadcast::channel(1);
    tokio::spawn(async move {
        shutdown.await;
        let _ = notify.send(());
    });
    let (_mount_watch, mounts) = match mounts::watch_mounts() {
        Ok((w, rx)) => (Some(w), Some(rx)),
        Err(e) => {
            tracing::debug!(error = %e, "cannot watch the mount table");
            (None, None)
        }
    };
    // No one sends commands to `watch`; the sender is kept so the channel stays open.
    let (_commands_tx, commands) = mpsc::channel(1);
    folder::run_folder(
        spec,
        FolderContext {
            data_dir,
            backends,
            options,
            shutdown: Shutdown::new(rx),
            commands,
            view: ViewHandle::default(),
            mounts,
            started: None,
            first_sync: synced,
        },
    )
    .await
}

/// A folder's task as the daemon sees it.
struct Running {
    spec: FolderSpec,
    stop: broadcast::Sender<()>,
    thread: std::thread::JoinHandle<Result<(), String>>,
}

/// The folders' command channels, for the control socket.
type Registry = Arc<Mutex<BTreeMap<PathBuf, mpsc::Sender<FolderCommand>>>>;

struct Supervisor {
    dirs: Dirs,
    options: RunOptions,
    backends: BackendFactory,
    view: ViewHandle,
    registry: Registry,
    mounts: Option<tokio::sync::watch::Receiver<u64>>,
    folders: BTreeMap<PathBuf, Running>,
}

impl Supervisor {
    /// Starts the task of folder `spec` on its own thread; the receiver says when it runs.
    /// `failed_before`: its last run failed, so a new failure is logged at debug level only (it
    /// is retried every interval, and `status` shows the error).
    fn start(
        &mut self,
        spec: FolderSpec,
        failed_before: bool,
    ) -> Option<oneshot::Receiver<Result<(), String>>> {
        let key = spec.root.clone();
        let (stop, stop_rx) = broadcast::channel(1);
        let (cmd_tx, commands) = mpsc::channel(16);
        let (started_tx, started_rx) = oneshot::channel();
        let ctx = FolderContext {
            data_dir: self.dirs.data.clone(),
            backends: Arc::clone(&self.backends),
            options: self.options,
            shutdown: Shutdown::new(stop_rx),
            commands,
            view: self.view.clone(),
            mounts: self.mounts.clone(),
            started: Some(started_tx),
            first_sync: None,
        };
        let view = self.view.clone();
        let task_spec = spec.clone();
        let interval = self.options.interval.as_secs();
        let spawned = std::thread::Builder::new()
            .name("briefcase-folder".into())
            .spawn(move || {
                let key = task_spec.root.clone();
                let result = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    // A panic (a bug, or input no check caught) must show as failed in `status`,
                    // never leave the folder looking fine while nothing syncs.
                    Ok(rt) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        rt.block_on(folder::run_folder(task_spec, ctx))
                    }))
                    .unwrap_or_else(|p| {
                        let what = p
                            .downcast_ref::<String>()
                            .map(String::as_str)
                            .or_else(|| p.downcast_ref::<&str>().copied())
                            .unwrap_or("no message");
                        Err(DaemonError::Panicked {
                            root: key.clone(),
                            what: what.to_string(),
                        })
                    })
                    .map_err(|e| e.to_string()),
                    Err(source) => Err(DaemonError::Task {
                        root: key.clone(),
                        source,
                    }
                    .to_string()),
                };
                if let Err(e) = &result {
                    if failed_before {
                        tracing::debug!("{e}");
                    } else {
                        tracing::error!("{e}; retrying every {interval} s");
                    }
                    view.update_folder(&key, |f| {
                        f.state = view::FolderState::Failed;
                        f.error = Some(e.clone());
                    });
                }
                result
            });
        match spawned {
            Ok(thread) => {
                self.registry
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key.clone(), cmd_tx);
                self.folders.insert(key, Running { spec, stop, thread });
                Some(started_rx)
            }
            Err(source) => {
                let e = DaemonError::Task { root: key, source };
                tracing::error!("{e}");
                None
            }
        }
    }

    /// Stops folder `key` and waits for its task to finish the sync in flight.
    async fn stop(&mut self, key: &Path) -> Option<Result<(), String>> {
        let run = self.folders.remove(key)?;
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        let _ = run.stop.send(());
        match tokio::task::spawn_blocking(move || run.thread.join()).await {
            Ok(Ok(r)) => Some(r),
            _ => Some(Err(format!("folder {}: its task panicked", key.display()))),
        }
    }

    /// The folders of `cfg`, by key.
    fn wanted(cfg: &Config) -> BTreeMap<PathBuf, FolderSpec> {
        cfg.folders
            .iter()
            .map(|f| {
                let root = folder_key(&f.path);
                (
                    root.clone(),
                    FolderSpec {
                        root,
                        mirrors: f.mirrors.clone(),
                    },
                )
            })
            .collect()
    }

    /// Follows the config: starts new folders, stops removed ones, restarts those whose mirrors
    /// changed and those that failed.
    async fn reload(&mut self) {
        let cfg = match Config::load(&self.dirs) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("{e}; the folders keep running as they were");
                return;
            }
        };
        let wanted = Self::wanted(&cfg);
        let keys: Vec<PathBuf> = self.folders.keys().cloned().collect();
        for key in keys {
            let Some(run) = self.folders.get(&key) else {
                continue;
            };
            let (same, finished) = (
                wanted.get(&key).map(|spec| *spec == run.spec),
                run.thread.is_finished(),
            );
            match same {
                None => {
                    tracing::info!(folder = %key.display(), "folder removed from the config: stopping it");
                    self.stop(&key).await;
                    self.view.remove_folder(&key);
                }
                Some(false) => {
                    tracing::info!(folder = %key.display(), "mirrors changed in the config: restarting the folder");
                    let failed = matches!(self.stop(&key).await, Some(Err(_)));
                    if let Some(spec) = wanted.get(&key) {
                        self.start(spec.clone(), failed);
                    }
                }
                Some(true) if finished => {
                    // It failed (or its watcher ended): try again.
                    let failed = matches!(self.stop(&key).await, Some(Err(_)));
                    if let Some(spec) = wanted.get(&key) {
                        self.start(spec.clone(), failed);
                    }
                }
                Some(true) => {}
            }
        }
        for (key, spec) in wanted {
            if !self.folders.contains_key(&key) {
                tracing::info!(folder = %key.display(), "folder added to the config: starting it");
                self.start(spec, false);
            }
        }
    }
}

/// Answers one control request.
async fn handle(req: Request, view: ViewHandle, registry: Registry) -> Response {
    let pid = std::process::id();
    let folder_tx = |root: &Path| {
        registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(root)
            .cloned()
    };
    let unknown = |root: &Path| {
        Response::error(
            ErrorKind::UnknownFolder,
            format!(
                "the daemon does not run folder {} (not in its config yet; it reads the config every interval)",
                root.display()
            ),
        )
    };
    let not_running = |root: &Path| {
        let why = view
            .snapshot(Some(root))
            .into_iter()
            .find_map(|f| f.error)
            .unwrap_or_else(|| "its task stopped".into());
        Response::error(
            ErrorKind::Failed,
            format!(
                "the daemon cannot run folder {} now: {why} (it tries again every --interval seconds; `briefcase status` shows how it is doing)",
                root.display()
            ),
        )
    };
    match req {
        Request::Ping => Response::Pong {
            pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            protocol: control::PROTOCOL,
        },
        Request::Status { folder } => {
            let folders = view.snapshot(folder.as_deref());
            if let Some(root) = &folder {
                if folders.is_empty() {
                    return unknown(root);
                }
            }
            Response::Status { pid, folders }
        }
        Request::Sync {
            folder,
            mirror,
            dry_run,
            allow_mass_delete,
        } => {
            let Some(tx) = folder_tx(&folder) else {
                return unknown(&folder);
            };
            let (reply, rx) = oneshot::channel();
            let cmd = FolderCommand::Sync {
                mirror,
                dry_run,
                allow_mass_delete,
                reply,
            };
            if tx.send(cmd).await.is_err() {
                return not_running(&folder);
            }
            rx.await.unwrap_or_else(|_| not_running(&folder))
        }
        Request::Conflicts { folder } => {
            let Some(tx) = folder_tx(&folder) else {
                return unknown(&folder);
            };
            let (reply, rx) = oneshot::channel();
            if tx.send(FolderCommand::Conflicts { reply }).await.is_err() {
                return not_running(&folder);
            }
            rx.await.unwrap_or_else(|_| not_running(&folder))
        }
    }
}

/// Runs the daemon until `shutdown` completes: binds the control socket (refusing to start when
/// another daemon runs), starts every folder of the config, tells the service manager it is
/// ready, follows config changes every `options.interval`, and at shutdown stops every folder
/// after its sync in flight. `backends` builds each mirror's backend.
///
/// # Errors
/// [`DaemonError::AlreadyRunning`], [`DaemonError::Socket`], [`DaemonError::Config`] at start.
/// A folder that cannot run is reported in the log and in `status`, and retried; it does not
/// stop the daemon.
pub async fn run(
    dirs: Dirs,
    options: RunOptions,
    backends: BackendFactory,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let cfg = Config::load(&dirs)?;
    let socket = ControlSocket::bind(&dirs.runtime)?;
    let (notify_shutdown, _) = broadcast::channel::<()>(1);
    let view = ViewHandle::default();
    let registry: Registry = Arc::default();
    let (_mount_watch, mounts) = match mounts::watch_mounts() {
        Ok((w, rx)) => (Some(w), Some(rx)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the mount table ({}); mirrors that come back are noticed by their path or within --interval", mounts::MOUNTINFO);
            (None, None)
        }
    };
    let mut sup = Supervisor {
        dirs,
        options,
        backends,
        view: view.clone(),
        registry: Arc::clone(&registry),
        mounts,
        folders: BTreeMap::new(),
    };
    let wanted = Supervisor::wanted(&cfg);
    if wanted.is_empty() {
        tracing::warn!("no folders configured yet; add one with `briefcase mirror add DIR TARGET` (the daemon reads the config every {} s)", options.interval.as_secs());
    }
    let mut pending = Vec::new();
    for (_, spec) in wanted {
        pending.extend(sup.start(spec, false));
    }
    tracing::info!(socket = %socket.path().display(), folders = sup.folders.len(), "briefcase daemon started");
    let server = {
        let shutdown = Shutdown::new(notify_shutdown.subscribe());
        let (view, registry) = (view.clone(), Arc::clone(&registry));
        tokio::spawn(async move {
            socket
                .serve(
                    move |req| handle(req, view.clone(), Arc::clone(&registry)),
                    shutdown,
                )
                .await;
            socket
        })
    };

    tokio::pin!(shutdown);
    let all_started = async {
        for rx in pending {
            let _ = rx.await;
        }
    };
    let mut stopping = tokio::select! {
        _ = all_started => false,
        _ = &mut shutdown => true,
    };
    if !stopping {
        let summary = view.summary();
        sd_notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&summary),
        ]);
        tracing::info!("ready: {summary}");
    }
    let mut reload = tokio::time::interval(options.interval.max(Duration::from_secs(1)));
    reload.tick().await;
    let mut changes = view.subscribe();
    let mut flush_at: Option<tokio::time::Instant> = None;
    let mut last_status = String::new();
    while !stopping {
        tokio::select! {
            _ = &mut shutdown => stopping = true,
            _ = reload.tick() => sup.reload().await,
            r = changes.changed() => {
                if r.is_ok() && flush_at.is_none() {
                    flush_at = Some(tokio::time::Instant::now() + Duration::from_millis(500));
                }
            }
            _ = async { if let Some(t) = flush_at { tokio::time::sleep_until(t).await } }, if flush_at.is_some() => {
                flush_at = None;
                let summary = view.summary();
                if summary != last_status {
                    sd_notify(&[sd_notify::NotifyState::Status(&summary)]);
                    last_status = summary;
                }
            }
        }
    }
    tracing::info!("stopping: finishing the syncs in flight");
    sd_notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("stopping: finishing the syncs in flight"),
    ]);
    let _ = notify_shutdown.send(());
    drop(notify_shutdown);
    let keys: Vec<PathBuf> = sup.folders.keys().cloned().collect();
    for k in &keys {
        if let Some(run) = sup.folders.get(k) {
            let _ = run.stop.send(());
        }
    }
    for k in keys {
        sup.stop(&k).await;
    }
    match server.await {
        Ok(socket) => drop(socket),
        Err(e) => tracing::debug!(error = %e, "control server task ended abnormally"),
    }
    tracing::info!("briefcase daemon stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn shutdown_is_seen_by_every_listener_and_stays_seen() {
        let (tx, rx) = broadcast::channel(1);
        let mut a = Shutdown::new(rx);
        let mut b = a.clone();
        assert!(!a.check() && !a.is_shutdown());
        tx.send(()).unwrap();
        assert!(a.check() && a.check(), "seen, and still seen");
        b.recv().await;
        assert!(b.is_shutdown());
        // A dropped sender is a shutdown too (the daemon is gone).
        let (tx, rx) = broadcast::channel::<()>(1);
        let mut c = Shutdown::new(rx);
        drop(tx);
        assert!(c.check());
    }

    #[test]
    fn already_running_names_the_pid_and_what_to_do() {
        let e = DaemonError::AlreadyRunning {
            socket: "/run/user/1000/briefcase/control.sock".into(),
            pid: Some(42),
        };
        let s = e.to_string();
        assert!(
            s.contains("(pid 42)")
                && s.contains("kill 42")
                && s.contains("systemctl --user stop briefcase"),
            "{s}"
        );
    }
}
