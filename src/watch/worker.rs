//! The debouncer thread and the set of watched directories.
//!
//! Directories are watched one by one, non-recursively, so that the budget counts exactly what is
//! watched, ignored directories cost nothing, and symlinks are never followed. The worker keeps the
//! set in step with the tree: a directory that appears (created, renamed in) is watched with its
//! subtree, breadth first, as far as the budget allows; one that disappears (deleted, renamed away)
//! is unwatched with its subtree, so a renamed directory is re-watched under its new name instead of
//! reporting stale paths. Whatever the budget leaves unwatched is polled.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use briefcase_mirror::RelPath;
use notify::event::{CreateKind, ModifyKind, RemoveKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::error::TrySendError;

use super::batch::{git_lock, Pending};
use super::budget::{abs, child_dirs, list_dirs, wants_watch, Budget};
use super::{Hint, Msg, RawReceiver, Stats, WatchError, WatchOptions};
use crate::scan::IgnoreRules;

/// How often a batch held for a git lock checks the lock again.
const GIT_LOCK_CHECK: Duration = Duration::from_millis(10);
/// How soon a hint refused by a full queue is offered again (merged with anything new).
const SEND_RETRY: Duration = Duration::from_millis(50);
/// Longest sleep of the worker, so that a stop is noticed even if its message was lost.
const IDLE_TICK: Duration = Duration::from_millis(500);

/// What became of an attempt to watch a directory.
enum Outcome {
    /// It is watched (now or already).
    Watched,
    /// No watch left: poll it.
    NoBudget,
    /// It vanished meanwhile or is not a directory: nothing to do.
    Skipped,
}

/// The directories watched and polled, and the notify watcher that holds the watches.
pub(crate) struct Watches {
    root: PathBuf,
    rules: IgnoreRules,
    watcher: RecommendedWatcher,
    /// Watched directories, relative to the root; the root is the empty path. Ordered by
    /// components, so a directory's subtree follows it contiguously.
    watched: BTreeSet<PathBuf>,
    /// Roots of the subtrees left unwatched (their parent is watched); the empty path means the
    /// root itself could not be watched and the whole folder is polled.
    polled: BTreeSet<PathBuf>,
    budget: Budget,
    poll_interval: Duration,
    warned_exhausted: bool,
    stats: Arc<Stats>,
}

impl Watches {
    pub fn new(
        root: PathBuf,
        rules: IgnoreRules,
        watcher: RecommendedWatcher,
        budget: Budget,
        poll_interval: Duration,
        stats: Arc<Stats>,
    ) -> Watches {
        Watches {
            root,
            rules,
            watcher,
            watched: BTreeSet::new(),
            polled: BTreeSet::new(),
            budget,
            poll_interval,
            warned_exhausted: false,
            stats,
        }
    }

    /// Counts the directories, warns when the budget is short, and watches breadth first as many
    /// as the budget allows; the rest is polled.
    ///
    /// # Errors
    /// [`WatchError::WatchRoot`] when the root itself cannot be watched for a reason other than
    /// the budget.
    pub fn initial(&mut self) -> Result<(), WatchError> {
        let dirs = list_dirs(&self.root, &self.rules);
        let needed = dirs.len();
        for d in dirs {
            if let Some(parent) = d.parent() {
                if !self.watched.contains(parent) {
                    continue; // below a polled or vanished directory
                }
            }
            match self.try_watch(&d) {
                Ok(Outcome::Watched) | Ok(Outcome::Skipped) => {}
                Ok(Outcome::NoBudget) => {
                    self.polled.insert(d);
                }
                Err(source) if d.as_os_str().is_empty() => {
                    return Err(WatchError::WatchRoot {
                        root: self.root.clone(),
                        source,
                    })
                }
                Err(e) => {
                    tracing::warn!(dir = %abs(&self.root, &d).display(), error = %e, "cannot watch directory; changes in it are found by full rescans only");
                }
            }
        }
        if !self.polled.is_empty() && !self.warned_exhausted {
            self.warn_short(needed);
            self.warned_exhausted = true;
        }
        self.update_stats();
        tracing::debug!(root = %self.root.display(), watched = self.watched.len(), polled = self.polled.len(), "watching");
        Ok(())
    }

    fn warn_short(&self, needed: usize) {
        let b = &self.budget;
        let why = if b.forced {
            format!("limited to {} by the watcher's options", b.available)
        } else {
            match b.max_user_watches {
                Some(m) => format!(
                    "fs.inotify.max_user_watches = {m}, about {} in use by this user's programs, {} kept free for them",
                    b.used,
                    super::WATCH_HEADROOM
                ),
                None => "the kernel refused more".to_string(),
            }
        };
        let n = b.suggested_limit(needed);
        tracing::warn!(
            "not enough inotify watches for {root}: it needs {needed} (one per directory) but only {avail} are available ({why}). \
             Watching {watched} directories and rescanning the {polled} subtrees left over every {poll:?}; syncing goes on, changes there are just found later. \
             To watch everything: `sudo sysctl fs.inotify.max_user_watches={n}`, and to keep it after a reboot put the line \
             `fs.inotify.max_user_watches={n}` in /etc/sysctl.d/90-briefcase.conf (each watch costs about 1 KiB of kernel memory)",
            root = self.root.display(),
            avail = b.available,
            watched = self.watched.len(),
            polled = self.polled.len(),
            poll = self.poll_interval,
        );
    }

    fn update_stats(&self) {
        self.stats
            .watched
            .store(self.watched.len(), Ordering::Relaxed);
        self.stats
            .polled
            .store(self.polled.len(), Ordering::Relaxed);
    }

    fn try_watch(&mut self, rel: &Path) -> Result<Outcome, notify::Error> {
        if self.watched.contains(rel) {
            return Ok(Outcome::Watched);
        }
        if self.watched.len() >= self.budget.available {
            return Ok(Outcome::NoBudget);
        }
        let full = abs(&self.root, rel);
        match self.watcher.watch(&full, RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.watched.insert(rel.to_path_buf());
                Ok(Outcome::Watched)
            }
            Err(e) => match &e.kind {
                notify::ErrorKind::MaxFilesWatch => {
                    // Other programs took watches meanwhile: this is our budget now.
                    self.budget.available = self.watched.len();
                    if !self.warned_exhausted {
                        self.warned_exhausted = true;
                        let needed = list_dirs(&self.root, &self.rules).len();
                        self.warn_short(needed);
                    }
                    Ok(Outcome::NoBudget)
                }
                notify::ErrorKind::PathNotFound => Ok(Outcome::Skipped),
                notify::ErrorKind::Io(io)
                    if io.kind() == std::io::ErrorKind::NotFound
                        || io.raw_os_error() == Some(libc::ENOTDIR) =>
                {
                    Ok(Outcome::Skipped)
                }
                _ => Err(e),
            },
        }
    }

    /// Watches `rel` and its subtree breadth first as far as the budget allows; what is left
    /// becomes polled.
    fn ensure_subtree(&mut self, rel: PathBuf) {
        let mut queue = VecDeque::from([rel]);
        while let Some(d) = queue.pop_front() {
            let is_root = d.as_os_str().is_empty();
            if !is_root && !wants_watch(&d, &self.rules) {
                continue;
            }
            match self.try_watch(&d) {
                Ok(Outcome::Watched) => {
                    self.polled.remove(&d);
                    queue.extend(child_dirs(&self.root, &d, &self.rules));
                }
                Ok(Outcome::NoBudget) => {
                    self.drop_polled_under(&d);
                    self.polled.insert(d);
                }
                Ok(Outcome::Skipped) => {}
                Err(e) => {
                    tracing::warn!(dir = %abs(&self.root, &d).display(), error = %e, "cannot watch directory; changes in it are found by full rescans only");
                }
            }
        }
        if !self.watched.contains(Path::new("")) {
            // The root is gone or unwatchable: poll it, which also retries watching it.
            self.polled.insert(PathBuf::new());
        }
        self.update_stats();
    }

    fn under<'a>(set: &'a BTreeSet<PathBuf>, rel: &'a Path) -> impl Iterator<Item = &'a PathBuf> {
        set.range(rel.to_path_buf()..)
            .take_while(move |p| p.starts_with(rel))
    }

    fn drop_polled_under(&mut self, rel: &Path) {
        let v: Vec<PathBuf> = Self::under(&self.polled, rel).cloned().collect();
        for p in v {
            self.polled.remove(&p);
        }
    }

    /// Unwatches `rel` and everything below it, and forgets polled subtrees there (the path is
    /// gone or is something else now). Never the root.
    fn forget_subtree(&mut self, rel: &Path) {
        if rel.as_os_str().is_empty() {
            return;
        }
        let v: Vec<PathBuf> = Self::under(&self.watched, rel).cloned().collect();
        for p in v {
            // notify may have dropped it already (it does on delete and move-from): ignore.
            let _ = self.watcher.unwatch(&abs(&self.root, &p));
            self.watched.remove(&p);
        }
        self.drop_polled_under(rel);
        self.update_stats();
    }

    /// Something appeared at `rel` (created, renamed in): watch it if it is a directory; if it
    /// is not (any more), forget what was watched there.
    fn appeared(&mut self, rel: &Path) {
        match fs::symlink_metadata(abs(&self.root, rel)) {
            Ok(m) if m.is_dir() => {
                if wants_watch(rel, &self.rules) {
                    self.ensure_subtree(rel.to_path_buf());
                }
            }
            _ => {
                if Self::under(&self.watched, rel).next().is_some()
                    || Self::under(&self.polled, rel).next().is_some()
                {
                    self.forget_subtree(rel);
                }
            }
        }
    }

    /// After lost events: drop watches of directories that are gone and watch the ones that
    /// appeared unseen.
    fn resync(&mut self) {
        let gone: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|d| {
                !d.as_os_str().is_empty()
                    && !fs::symlink_metadata(abs(&self.root, d))
                        .map(|m| m.is_dir())
                        .unwrap_or(false)
            })
            .cloned()
            .collect();
        for g in gone {
            self.forget_subtree(&g);
        }
        let root_is_dir = fs::metadata(&self.root)
            .map(|m| m.is_dir())
            .unwrap_or(false);
        if !root_is_dir && self.watched.remove(Path::new("")) {
            // Deleted, moved away or unmounted: poll until it is back, then watch it again.
            let _ = self.watcher.unwatch(&self.root);
        }
        let root = self.root.clone();
        self.polled.retain(|p| {
            p.as_os_str().is_empty()
                || fs::symlink_metadata(abs(&root, p))
                    .map(|m| m.is_dir())
                    .unwrap_or(false)
        });
        self.ensure_subtree(PathBuf::new());
    }
}

/// The debouncer: receives raw events, keeps the watches in step, and emits hints.
pub(crate) struct Worker {
    w: Watches,
    opts: WatchOptions,
    raw_rx: RawReceiver,
    hint_tx: tokio::sync::mpsc::Sender<Hint>,
    overflow: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    pending: Pending,
    next_poll: Instant,
    /// Do not try to flush before this (git lock hold, full hint queue).
    retry_at: Option<Instant>,
    /// Locks (path, inode) that outlived `git_lock_wait` once: not waited for again.
    stale_locks: HashSet<(PathBuf, u64)>,
}

impl Worker {
    pub fn new(
        w: Watches,
        opts: WatchOptions,
        raw_rx: RawReceiver,
        hint_tx: tokio::sync::mpsc::Sender<Hint>,
        overflow: Arc<AtomicBool>,
        stop: Arc<AtomicBool>,
    ) -> Worker {
        let next_poll = Instant::now() + opts.poll_interval;
        Worker {
            w,
            opts,
            raw_rx,
            hint_tx,
            overflow,
            stop,
            pending: Pending::default(),
            next_poll,
            retry_at: None,
            stale_locks: HashSet::new(),
        }
    }

    pub fn run(mut self) {
        loop {
            if self.stop.load(Ordering::Relaxed) || self.hint_tx.is_closed() {
                break;
            }
            let now = Instant::now();
            let timeout = self.next_wake(now).saturating_duration_since(now);
            match self.raw_rx.recv_timeout(timeout) {
                Ok(Msg::Event(res)) => self.on_event(res),
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            if self.overflow.swap(false, Ordering::Relaxed) {
                tracing::warn!(root = %self.w.root.display(), "too many file events at once; some were dropped, rescanning the whole folder");
                self.pending.add_rescan(now);
            }
            if now >= self.next_poll {
                self.poll(now);
            }
            if !self.flush(now) {
                break;
            }
        }
        // Stopped: hand over what is pending, if the consumer still listens.
        if !self.pending.is_empty() {
            if let Some(h) = self.pending.to_hint(&self.w.root, &self.w.rules) {
                let _ = self.hint_tx.try_send(h);
            }
        }
    }

    fn next_wake(&self, now: Instant) -> Instant {
        let mut t = now + IDLE_TICK;
        if !self.w.polled.is_empty() {
            t = t.min(self.next_poll);
        }
        match (
            self.retry_at,
            self.pending.due_at(self.opts.quiet, self.opts.cap),
        ) {
            (Some(r), _) => t = t.min(r),
            (None, Some(d)) => t = t.min(d),
            (None, None) => {}
        }
        t
    }

    fn on_event(&mut self, res: notify::Result<notify::Event>) {
        let now = Instant::now();
        let ev = match res {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(root = %self.w.root.display(), error = %e, "file watcher error; rescanning the whole folder");
                self.pending.add_rescan(now);
                return;
            }
        };
        if ev.need_rescan() {
            tracing::info!(root = %self.w.root.display(), "the kernel dropped file events (queue overflow); rescanning the whole folder");
            self.pending.add_rescan(now);
        }
        let kind = ev.kind;
        let dir_hint = match kind {
            EventKind::Access(_) => return,
            EventKind::Create(CreateKind::Folder) | EventKind::Remove(RemoveKind::Folder) => {
                Some(true)
            }
            EventKind::Create(CreateKind::File) | EventKind::Remove(RemoveKind::File) => {
                Some(false)
            }
            _ => None,
        };
        for p in &ev.paths {
            let Ok(rel) = p.strip_prefix(&self.w.root) else {
                continue;
            };
            if rel.as_os_str().is_empty() {
                if matches!(
                    kind,
                    EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
                ) {
                    tracing::warn!(root = %self.w.root.display(), "the folder root was moved or deleted");
                    self.pending.add_rescan(now);
                }
                continue;
            }
            let Ok(rp) = RelPath::from_path(rel) else {
                tracing::debug!(path = %p.display(), "event for a path that cannot be synced; ignored");
                continue;
            };
            if rp.is_reserved() {
                continue;
            }
            let was_watched = self.w.watched.contains(rel);
            match kind {
                EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
                    self.w.forget_subtree(rel)
                }
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {}
                EventKind::Create(_)
                | EventKind::Modify(ModifyKind::Name(_))
                | EventKind::Any
                | EventKind::Other => self.w.appeared(rel),
                _ => {}
            }
            self.pending
                .add(rp, dir_hint.or(was_watched.then_some(true)), now);
        }
    }

    /// Adds the polled subtrees to the batch (and watches them if watches became available).
    fn poll(&mut self, now: Instant) {
        self.next_poll = now + self.opts.poll_interval;
        if self.w.polled.is_empty() {
            return;
        }
        let roots = std::mem::take(&mut self.w.polled);
        for r in roots {
            if r.as_os_str().is_empty() {
                self.pending.add_rescan(now);
                continue;
            }
            self.w.appeared(&r);
            if let Ok(rp) = RelPath::from_path(&r) {
                self.pending.add(rp, Some(true), now);
            }
        }
        if self.pending.is_rescan() {
            // Retries watching the root (gone, unmounted or no budget); re-polls it if needed.
            self.w.ensure_subtree(PathBuf::new());
        }
        self.w.update_stats();
    }

    /// The git lock that holds the pending batch, if any.
    fn held_lock(&mut self) -> Option<(PathBuf, u64)> {
        if self.opts.git_lock_wait.is_zero() {
            return None;
        }
        for g in self.pending.git_dirs() {
            if let Some(l) = git_lock(&g.under(&self.w.root)) {
                if !self.stale_locks.contains(&l) {
                    return Some(l);
                }
            }
        }
        None
    }

    /// Emits the pending batch if it is due and not held. Returns false when the consumer is
    /// gone.
    fn flush(&mut self, now: Instant) -> bool {
        let Some(due) = self.pending.due_at(self.opts.quiet, self.opts.cap) else {
            return true;
        };
        if now < due || self.retry_at.is_some_and(|r| now < r) {
            return true;
        }
        if let Some(lock) = self.held_lock() {
            let since = *self.pending.hold_since.get_or_insert(now);
            if now.duration_since(since) < self.opts.git_lock_wait {
                self.retry_at = Some(now + GIT_LOCK_CHECK);
                return true;
            }
            tracing::warn!(lock = %lock.0.display(), waited = ?self.opts.git_lock_wait, "git has held this lock file too long; syncing anyway. If no git command is running, it was left by a crashed one: remove it");
            self.stale_locks.retain(|(p, _)| p.exists());
            self.stale_locks.insert(lock);
        }
        // Reserve a place first, so a busy consumer costs no work here (a batch can be large).
        let permit = match self.hint_tx.try_reserve() {
            Ok(p) => p,
            Err(TrySendError::Full(())) => {
                // Keep merging into this batch, offer it again later.
                self.pending.hold_since = None;
                self.retry_at = Some(now + SEND_RETRY);
                return true;
            }
            Err(TrySendError::Closed(())) => return false,
        };
        self.retry_at = None;
        if self.pending.is_rescan() {
            // Watch what appeared unseen before the consumer rescans, so nothing falls between.
            self.w.resync();
        }
        if let Some(hint) = self.pending.to_hint(&self.w.root, &self.w.rules) {
            permit.send(hint);
        }
        self.pending = Pending::default();
        true
    }
}
