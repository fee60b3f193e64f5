//! Noticing mirrors come and go: the mount table and the mirror's path.
//!
//! - [`watch_mounts`]: the kernel signals a change of the mount table by making
//!   `/proc/self/mountinfo` "priority readable" (`poll(2)` with `POLLPRI`); a small thread waits
//!   for it (tokio's `AsyncFd` would need `unsafe` to register a file). Every change bumps a
//!   counter in a `watch` channel; the folder tasks then probe their offline mirrors (a stick was mounted) and
//!   their online ones (one was unmounted).
//! - [`PresenceWatch`]: an offline mirror with a local path is watched with inotify at its nearest
//!   existing ancestor (the path appears: `mkdir`, a directory renamed into place), and, when the
//!   path exists, at the path and the directories below it down to where its backend keeps the
//!   folder marker (its marker appears). Any event
//!   is only a hint to probe the mirror; the probe decides.
//!
//! Both are hints; the 30 s retry of offline mirrors stays as the fallback (a medium mounted in
//! another mount namespace, a watch that could not be set up).

use std::path::{Path, PathBuf};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use rustix::event::{PollFd, PollFlags};
use tokio::sync::watch;

/// The file whose priority readiness signals a mount-table change.
pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Most directories a [`PresenceWatch`] watches (the path's own subtree is cut at this many).
pub const PRESENCE_MAX_DIRS: usize = 64;

/// Watches the mount table. Dropping it stops the watch.
#[derive(Debug)]
pub struct MountWatcher {
    /// Closing it wakes the watching thread, which then ends.
    _stop: std::os::fd::OwnedFd,
}

/// Starts watching the mount table on a small thread (`poll(2)` on `/proc/self/mountinfo` and on
/// a pipe that ends it); the receiver's value grows by one at each change.
///
/// # Errors
/// `/proc/self/mountinfo` cannot be opened (no procfs) or the thread cannot start: the caller
/// falls back to the periodic retry.
pub fn watch_mounts() -> std::io::Result<(MountWatcher, watch::Receiver<u64>)> {
    let file = std::fs::File::open(MOUNTINFO)?;
    let (stop_rx, stop_tx) = rustix::pipe::pipe()?;
    let (tx, rx) = watch::channel(0u64);
    std::thread::Builder::new()
        .name("briefcase-mounts".into())
        .spawn(move || loop {
            let mut fds = [
                PollFd::new(&file, PollFlags::PRI),
                PollFd::new(&stop_rx, PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "stopped watching {MOUNTINFO}; mirrors that come back are noticed by their path or by the periodic retry");
                    break;
                }
            }
            if !fds[1].revents().is_empty() {
                break; // the watcher was dropped
            }
            if fds[0]
                .revents()
                .intersects(PollFlags::PRI | PollFlags::ERR)
            {
                tracing::debug!("mount table changed");
                tx.send_modify(|n| *n += 1);
                if tx.is_closed() {
                    break;
                }
            }
        })?;
    Ok((MountWatcher { _stop: stop_tx }, rx))
}

/// Watches where an offline mirror will appear. Dropping it stops the watch.
#[derive(Debug)]
pub struct PresenceWatch {
    _watcher: RecommendedWatcher,
    dirs: Vec<PathBuf>,
}

impl PresenceWatch {
    /// Watches for `path` to appear or change, and for a marker `depth` directories below it to
    /// appear (see the module docs), and calls `hint` on every event, from notify's thread
    /// (keep it short: a `try_send`).
    ///
    /// # Errors
    /// inotify cannot be set up, or not even one directory could be watched.
    pub fn start(
        path: &Path,
        depth: usize,
        hint: impl Fn() + Send + 'static,
    ) -> Result<PresenceWatch, notify::Error> {
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
                Ok(ev) if matches!(ev.kind, notify::EventKind::Access(_)) => {}
                _ => hint(),
            })?;
        let mut dirs = Vec::new();
        let mut last_err = None;
        for d in presence_dirs(path, depth) {
            match watcher.watch(&d, RecursiveMode::NonRecursive) {
                Ok(()) => dirs.push(d),
                Err(e) => last_err = Some(e),
            }
        }
        if dirs.is_empty() {
            return Err(last_err.unwrap_or_else(|| {
                notify::Error::generic(&format!(
                    "no existing directory above {} to watch",
                    path.display()
                ))
            }));
        }
        Ok(PresenceWatch {
            _watcher: watcher,
            dirs,
        })
    }

    /// The directories watched.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }
}

/// Where to watch for `path` to appear: the path and the directories up to `depth` below it
/// when it is a directory (at most [`PRESENCE_MAX_DIRS`], symlinks not followed), else its
/// nearest existing ancestor.
pub fn presence_dirs(path: &Path, depth: usize) -> Vec<PathBuf> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        let mut out = vec![path.to_path_buf()];
        let mut level = vec![path.to_path_buf()];
        for _ in 0..depth {
            let mut next = Vec::new();
            for d in &level {
                let Ok(rd) = std::fs::read_dir(d) else {
                    continue;
                };
                for de in rd.flatten() {
                    if de.file_type().is_ok_and(|t| t.is_dir()) && out.len() < PRESENCE_MAX_DIRS {
                        out.push(de.path());
                        next.push(de.path());
                    }
                }
            }
            level = next;
        }
        return out;
    }
    let mut cur = path.parent();
    while let Some(d) = cur {
        if std::fs::metadata(d).is_ok_and(|m| m.is_dir()) {
            return vec![d.to_path_buf()];
        }
        cur = d.parent();
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn presence_dirs_table() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("stick/briefcase/f1")).unwrap();
        std::fs::create_dir_all(r.join("stick/other/deep/deeper")).unwrap();
        // (path asked for, directories watched)
        let cases: &[(&str, &[&str])] = &[
            ("absent/a/b", &[""]),
            ("stick/absent", &["stick"]),
            (
                "stick",
                &[
                    "stick",
                    "stick/briefcase",
                    "stick/briefcase/f1",
                    "stick/other",
                    "stick/other/deep",
                ],
            ),
        ];
        for (asked, want) in cases {
            let mut got = presence_dirs(&r.join(asked), 2);
            got.sort();
            let mut want: Vec<PathBuf> = want
                .iter()
                .map(|w| {
                    if w.is_empty() {
                        r.to_path_buf()
                    } else {
                        r.join(w)
                    }
                })
                .collect();
            want.sort();
            assert_eq!(got, want, "{asked}");
        }
        // A backend whose marker is one directory down is watched one level deep.
        let mut got = presence_dirs(&r.join("stick"), 1);
        got.sort();
        let want: Vec<PathBuf> = ["stick", "stick/briefcase", "stick/other"]
            .iter()
            .map(|w| r.join(w))
            .collect();
        assert_eq!(got, want);
    }

    fn wait_for(n: &AtomicUsize) -> bool {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if n.load(Ordering::SeqCst) > 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn presence_watch_sees_the_path_appear() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("media/stick");
        std::fs::create_dir(t.path().join("media")).unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = Arc::clone(&hits);
        let w = PresenceWatch::start(&path, 1, move || {
            h.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        assert_eq!(w.dirs(), [t.path().join("media")]);
        std::fs::create_dir(&path).unwrap();
        assert!(wait_for(&hits), "no event when the path appeared");
    }

    #[test]
    fn mount_watcher_sees_a_mount() {
        if !Path::new(MOUNTINFO).exists() {
            eprintln!("skipped: no {MOUNTINFO}");
            return;
        }
        let (w, rx) = watch_mounts().unwrap();
        assert_eq!(*rx.borrow(), 0);
        let t = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "briefcase-test"])
            .arg(t.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
            return;
        }
        let end = Instant::now() + Duration::from_secs(10);
        while *rx.borrow() == 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::process::Command::new("umount").arg(t.path()).status();
        assert!(*rx.borrow() > 0, "no mount-table change seen");
        drop(w); // ends the thread (the pipe closes)
    }
}
