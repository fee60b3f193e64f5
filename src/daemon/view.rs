//! The daemon's live view: per folder, per mirror, what is happening now. Folder tasks write it,
//! the control socket reads it (`briefcase status`), and the service manager gets a one-line
//! summary of it (`STATUS=`). Writers hold the lock only to copy a few fields, never across an
//! `.await` or a sync.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::progress::{Counters, Counts};

/// How a folder is doing in the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FolderState {
    /// Opening the journal, starting the watchers.
    Starting,
    /// Watched and synced.
    Running,
    /// Could not start or stopped on an error (see `error`); retried at the next interval.
    Failed,
}

/// What a mirror is doing, as far as this machine can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    /// Not looked at yet.
    Unknown,
    /// Reachable and idle.
    Online,
    /// A sync is running (see `progress`).
    Syncing,
    /// Not reachable (not mounted, not plugged in, marker missing): nothing is deleted.
    Offline,
    /// Reachable, but syncing stopped to ask first (a mass deletion, see `detail`).
    Paused,
    /// Reachable, but the last sync failed (see `detail`).
    Error,
}

impl Availability {
    /// The word `status` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Unknown => "unknown",
            Availability::Online => "online",
            Availability::Syncing => "syncing",
            Availability::Offline => "offline",
            Availability::Paused => "paused",
            Availability::Error => "error",
        }
    }
}

/// Progress of the sync running now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// When it started, ns since the epoch.
    pub since_ns: i64,
    /// What moved so far.
    #[serde(flatten)]
    pub counts: Counts,
}

/// One mirror in the live view.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MirrorView {
    /// Configured name.
    pub name: String,
    /// Configured target.
    pub target: String,
    /// Push only.
    pub send_only: bool,
    /// What it is doing.
    pub state: Availability,
    /// The last result (`ok`, `partial: …`, why it is offline, paused or failing).
    pub detail: Option<String>,
    /// When the last complete sync with it finished here, ns since the epoch.
    pub last_reconciled_ns: Option<i64>,
    /// Changes it carries for this machine (entries whose stamp this machine's knowledge does
    /// not cover); `None` when unknown (offline, not looked at yet).
    pub changes_waiting: Option<usize>,
    /// It comes and goes (a stick, or a mirror seen offline while the daemon ran): the daemon
    /// says when it is safe to unplug.
    pub removable: bool,
    /// For a removable mirror: its last sync finished and stored its state, and none runs.
    pub safe_to_unplug: Option<bool>,
    /// The running sync's progress (state `syncing`).
    pub progress: Option<Progress>,
    /// Live counters of the running sync (not sent; `progress` is their snapshot).
    #[serde(skip)]
    pub(crate) live: Option<Arc<Counters>>,
}

impl MirrorView {
    /// A mirror not looked at yet.
    pub fn new(name: &str, target: &str, send_only: bool) -> MirrorView {
        MirrorView {
            name: name.to_string(),
            target: target.to_string(),
            send_only,
            state: Availability::Unknown,
            detail: None,
            last_reconciled_ns: None,
            changes_waiting: None,
            removable: false,
            safe_to_unplug: None,
            progress: None,
            live: None,
        }
    }
}

/// One folder in the live view.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FolderView {
    /// The folder root.
    pub path: PathBuf,
    /// Its folder ID, once the journal is open.
    pub folder_id: Option<String>,
    /// How it is doing.
    pub state: FolderState,
    /// Why it failed.
    pub error: Option<String>,
    /// Its mirrors, in config order.
    pub mirrors: Vec<MirrorView>,
}

/// Shared, lockable live view with a change signal.
#[derive(Debug, Clone)]
pub struct ViewHandle {
    folders: Arc<Mutex<BTreeMap<PathBuf, FolderView>>>,
    changed: Arc<watch::Sender<u64>>,
}

impl Default for ViewHandle {
    fn default() -> Self {
        ViewHandle {
            folders: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
        }
    }
}

impl ViewHandle {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<PathBuf, FolderView>> {
        // A writer that panicked left whole fields behind (each update is a few assignments).
        self.folders.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the whole entry of folder `root`.
    pub fn set_folder(&self, root: &Path, view: FolderView) {
        self.lock().insert(root.to_path_buf(), view);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Changes the entry of folder `root` (nothing when it has none).
    pub fn update_folder(&self, root: &Path, f: impl FnOnce(&mut FolderView)) {
        if let Some(v) = self.lock().get_mut(root) {
            f(v);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Changes mirror `name` of folder `root` (nothing when there is no such mirror).
    pub fn update_mirror(&self, root: &Path, name: &str, f: impl FnOnce(&mut MirrorView)) {
        if let Some(m) = self
            .lock()
            .get_mut(root)
            .and_then(|v| v.mirrors.iter_mut().find(|m| m.name == name))
        {
            f(m);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Forgets folder `root` (no longer configured).
    pub fn remove_folder(&self, root: &Path) {
        self.lock().remove(root);
        self.changed.send_modify(|n| *n += 1);
    }

    /// A copy of the view with the progress of running syncs filled in; only folder `root` when
    /// given.
    pub fn snapshot(&self, root: Option<&Path>) -> Vec<FolderView> {
        let mut out: Vec<FolderView> = self
            .lock()
            .iter()
            .filter(|(p, _)| root.is_none_or(|r| r == p.as_path()))
            .map(|(_, v)| v.clone())
            .collect();
        for f in &mut out {
            for m in &mut f.mirrors {
                if let (Some(live), Some(p)) = (&m.live, &mut m.progress) {
                    p.counts = live.snapshot();
                }
            }
        }
        out
    }

    /// A receiver that sees every change (its value is a change counter).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// One line for the service manager: folders, and what each mirror is doing.
    pub fn summary(&self) -> String {
        let folders = self.snapshot(None);
        let failed = folders
            .iter()
            .filter(|f| f.state == FolderState::Failed)
            .count();
        let mut parts = vec![format!(
            "{} folder(s){}",
            folders.len(),
            if failed > 0 {
                format!(", {failed} failed")
            } else {
                String::new()
            }
        )];
        for f in &folders {
            for m in &f.mirrors {
                let mut s = format!("{}: {}", m.name, m.state.as_str());
                if m.state == Availability::Syncing {
                    if let Some(p) = &m.progress {
                        s.push_str(&format!(
                            " ({} sent, {} received)",
                            p.counts.files_sent, p.counts.files_received
                        ));
                    }
                } else if m.safe_to_unplug == Some(true) {
                    s.push_str(", safe to unplug");
                }
                parts.push(s);
            }
        }
        parts.join("; ")
    }
}
