//! The watcher: turns inotify events (through `notify`) into [`Hint`]s — debounced, coalesced
//! batches of subtrees for the scanner to look at. Events are only hints; the scanner is the truth
//! (DESIGN.md, "Watching"), so this module never decides *what* changed, only *where to look*.
//!
//! What it owns:
//! - **Debouncing.** A batch is emitted after [`WatchOptions::quiet`] without new events, or at
//!   most [`WatchOptions::cap`] after its first event, so an editor's temp-file-and-rename save is
//!   one batch and a `git checkout` or `tar x` is a few.
//! - **Scopes.** A batch names the minimal set of paths to rescan: a path below another path of the
//!   batch is dropped; a created or renamed-in directory is itself the scope, because inotify can
//!   miss its children right after `mkdir -p` or a directory rename. Temp files that came and went
//!   need no special case: rescanning a path that no longer exists finds nothing.
//! - **Dropped events.** notify's `Rescan` flag (kernel queue overflow), an overflow of our own
//!   queue, or a watcher error become [`Hint::Rescan`]: earlier events can no longer be trusted.
//! - **Version control.** A batch touching a `.git` directory is held while git holds a lock
//!   file there (`index.lock`, `HEAD.lock`, `refs/**/*.lock`, `gc.pid`, …; `.hg` and `.svn`
//!   likewise), up to [`WatchOptions::git_lock_wait`], so a mirror never gets half a commit.
//! - **The watch budget.** inotify needs one watch per directory and `max_user_watches` is shared
//!   by all of a user's programs. Directories are watched one by one (non-recursively, skipping
//!   ignored ones, never following symlinks), breadth first; when the budget is short the warning
//!   says how many watches are needed and the `sysctl` that fixes it, and the subtrees left
//!   unwatched are polled every [`WatchOptions::poll_interval`]. Running out of watches never stops
//!   syncing.
//!
//! Reserved paths (`.briefcase/`, `.briefcase-folder`, `.briefcase-tmp-*`) and ignored paths never
//! appear in a hint, so the same watcher serves a local folder and a local mirror root.

mod batch;
mod budget;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use briefcase_mirror::RelPath;
use notify::{EventKind, RecommendedWatcher, Watcher};

use crate::scan::IgnoreRules;

/// Capacity of the queue of hints to the consumer. When it is full, batches keep merging in the
/// watcher instead (a slow consumer gets fewer, larger hints, never a lost one).
pub const HINT_QUEUE: usize = 16;

/// Capacity of the queue of raw events between notify's thread and the debouncer, in events. When
/// it overflows the next batch is a [`Hint::Rescan`].
pub const RAW_QUEUE: usize = 65_536;

/// inotify watches left to the user's other programs when computing the budget from
/// `max_user_watches` (not applied to [`WatchOptions::max_watches`]).
pub const WATCH_HEADROOM: usize = 512;

/// Tuning of a [`FolderWatcher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    /// A batch is emitted once no new event arrived for this long (default 8 ms: an editor's
    /// save — temp file, rename, backup removal — happens within it; lsyncd with `delay = 0`,
    /// the fastest peer measured in docs/performance.md, reacts in ~20 ms).
    pub quiet: Duration,
    /// A batch is emitted at most this long after its first event, even while events keep coming
    /// (default 1 s).
    pub cap: Duration,
    /// Interval at which subtrees left unwatched (short watch budget) are rescanned (default 10 s).
    pub poll_interval: Duration,
    /// Longest time a batch touching `.git` (or `.hg`, `.svn`) is held while the tool holds a
    /// lock file there (default 30 s); after that the batch is emitted anyway, with a warning.
    /// Zero: never held (a mirror's watcher: only briefcase writes there, and lock files are
    /// never replicated, so a lock seen there is a leftover no process holds).
    pub git_lock_wait: Duration,
    /// Number of inotify watches (directories) this watcher may use. `None` (default): the
    /// system's `fs.inotify.max_user_watches` minus the watches this user already uses minus
    /// [`WATCH_HEADROOM`]. Tests force a small budget with it.
    pub max_watches: Option<usize>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            quiet: Duration::from_millis(8),
            cap: Duration::from_secs(1),
            poll_interval: Duration::from_secs(10),
            git_lock_wait: Duration::from_secs(30),
            max_watches: None,
        }
    }
}

/// One coalesced batch of places to rescan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    /// Rescan these paths and everything below them (files, directories, or paths that no longer
    /// exist). Sorted; none lies below another; never empty.
    Paths(Vec<RelPath>),
    /// Events were lost (queue overflow, watcher error, unwatched root): rescan the whole tree.
    Rescan,
}

impl Hint {
    /// Whether rescanning this hint looks at `path`.
    pub fn covers(&self, path: &RelPath) -> bool {
        match self {
            Hint::Rescan => true,
            Hint::Paths(scopes) => scopes.iter().any(|s| path.starts_with(s)),
        }
    }
}

/// Why a folder cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The root is missing or not a directory.
    #[error("cannot watch {root}: it is missing or not a directory; is the disk mounted? (nothing is synced from it until it is back)")]
    RootMissing {
        /// The folder root.
        root: PathBuf,
    },
    /// inotify could not be set up (usually too many inotify instances for this user).
    #[error("cannot start watching {root}: {source}; if this user runs many watching programs, raise the limit with `sudo sysctl fs.inotify.max_user_instances=1024`")]
    Init {
        /// The folder root.
        root: PathBuf,
        /// notify's error.
        source: notify::Error,
    },
    /// The root directory itself cannot be watched (permissions).
    #[error("cannot watch the folder root {root}: {source}; check that this user may read it")]
    WatchRoot {
        /// The folder root.
        root: PathBuf,
        /// notify's error.
        source: notify::Error,
    },
    /// The debouncer thread could not be started.
    #[error("cannot start the watcher thread for {root}: {source}")]
    Thread {
        /// The folder root.
        root: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Counters shared with the worker, for [`FolderWatcher::watched_dirs`] and
/// [`FolderWatcher::polled_subtrees`].
#[derive(Debug, Default)]
struct Stats {
    watched: AtomicUsize,
    polled: AtomicUsize,
}

/// A message from notify's thread (or from [`FolderWatcher`]'s drop) to the debouncer.
enum Msg {
    Event(notify::Result<notify::Event>),
    Stop,
}

/// The sending end of the raw event queue: bounded at [`RAW_QUEUE`] events, but allocated as
/// events arrive (std's `sync_channel` allocates its whole capacity up front: 4 MiB per watched
/// tree, held for the daemon's lifetime though the queue is empty nearly always).
#[derive(Clone, Debug)]
struct RawSender {
    tx: std::sync::mpsc::Sender<Msg>,
    queued: Arc<AtomicUsize>,
}

/// The receiving end of the raw event queue.
struct RawReceiver {
    rx: std::sync::mpsc::Receiver<Msg>,
    queued: Arc<AtomicUsize>,
}

fn raw_queue() -> (RawSender, RawReceiver) {
    let (tx, rx) = std::sync::mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        RawSender {
            tx,
            queued: Arc::clone(&queued),
        },
        RawReceiver { rx, queued },
    )
}

impl RawSender {
    /// Queues `msg` unless [`RAW_QUEUE`] messages wait already; returns whether it was queued.
    /// Never blocks.
    fn try_send(&self, msg: Msg) -> bool {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= RAW_QUEUE {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        if self.tx.send(msg).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Queues [`Msg::Stop`] even when the queue is full (the worker also polls its stop flag).
    fn send_stop(&self) {
        self.queued.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(Msg::Stop).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl RawReceiver {
    /// The next message, waiting at most `timeout`.
    fn recv_timeout(
        &self,
        timeout: std::time::Duration,
    ) -> Result<Msg, std::sync::mpsc::RecvTimeoutError> {
        let m = self.rx.recv_timeout(timeout)?;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        Ok(m)
    }
}

/// Watches one folder root and sends [`Hint`]s. Dropping it stops watching; the receiver then
/// gets the last pending batch, if any, and `None`.
#[derive(Debug)]
pub struct FolderWatcher {
    root: PathBuf,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    raw_tx: RawSender,
}

impl FolderWatcher {
    /// Starts watching `root` (resolved to an absolute path without symlinks first) with its
    /// ignore `rules`. Counts and watches the directories before returning (about 1 s per 100,000
    /// directories; call it from `spawn_blocking` in async code): every change made after `start`
    /// returns is reported. Needs no tokio runtime; the debouncer runs on its own thread.
    ///
    /// # Errors
    /// [`WatchError`] when the root is missing or unreadable, or inotify cannot be set up. A short
    /// watch budget is not an error (see the module docs).
    pub fn start(
        root: PathBuf,
        rules: IgnoreRules,
        opts: WatchOptions,
    ) -> Result<(FolderWatcher, tokio::sync::mpsc::Receiver<Hint>), WatchError> {
        // notify reports absolute, symlink-free paths under what it watches: map from the same.
        let root = match std::fs::canonicalize(&root) {
            Ok(r) if r.is_dir() => r,
            _ => return Err(WatchError::RootMissing { root }),
        };
        let (raw_tx, raw_rx) = raw_queue();
        let overflow = Arc::new(AtomicBool::new(false));
        let handler = {
            let tx = raw_tx.clone();
            let overflow = Arc::clone(&overflow);
            move |res: notify::Result<notify::Event>| {
                // Every open and close is reported, our own reads included: never a change.
                if let Ok(ev) = &res {
                    if matches!(ev.kind, EventKind::Access(_)) {
                        return;
                    }
                }
                // Never block notify's thread: the debouncer may be waiting on it (watch()).
                if !tx.try_send(Msg::Event(res)) {
                    overflow.store(true, Ordering::Relaxed);
                }
            }
        };
        let watcher =
            RecommendedWatcher::new(handler, notify::Config::default()).map_err(|source| {
                WatchError::Init {
                    root: root.clone(),
                    source,
                }
            })?;
        let stats = Arc::new(Stats::default());
        let budget = budget::Budget::compute(opts.max_watches);
        let mut watches = worker::Watches::new(
            root.clone(),
            rules,
            watcher,
            budget,
            opts.poll_interval,
            Arc::clone(&stats),
        );
        watches.initial()?;
        let (hint_tx, hint_rx) = tokio::sync::mpsc::channel(HINT_QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let w = worker::Worker::new(watches, opts, raw_rx, hint_tx, overflow, Arc::clone(&stop));
        std::thread::Builder::new()
            .name("briefcase-watch".into())
            .spawn(move || w.run())
            .map_err(|source| WatchError::Thread {
                root: root.clone(),
                source,
            })?;
        Ok((
            FolderWatcher {
                root,
                stats,
                stop,
                raw_tx,
            },
            hint_rx,
        ))
    }

    /// The watched root (absolute, symlinks resolved).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Number of directories watched through inotify now (one watch each).
    pub fn watched_dirs(&self) -> usize {
        self.stats.watched.load(Ordering::Relaxed)
    }

    /// Number of subtrees left unwatched for lack of watches and polled every
    /// [`WatchOptions::poll_interval`] instead (0 when everything is watched).
    pub fn polled_subtrees(&self) -> usize {
        self.stats.polled.load(Ordering::Relaxed)
    }
}

impl Drop for FolderWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.raw_tx.send_stop();
    }
}

#[cfg(test)]
mod tests;
