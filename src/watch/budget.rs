//! How many inotify watches this watcher may use, and the directories that want one.

use std::collections::VecDeque;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use briefcase_mirror::RelPath;

use super::WATCH_HEADROOM;
use crate::scan::IgnoreRules;

/// Where the kernel keeps the per-user watch limit.
const MAX_USER_WATCHES: &str = "/proc/sys/fs/inotify/max_user_watches";

/// The watch budget and where it came from (for the warning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Budget {
    /// Watches this watcher may use.
    pub available: usize,
    /// `fs.inotify.max_user_watches`, when known and not forced.
    pub max_user_watches: Option<usize>,
    /// Watches already used by this user's processes (0 when unknown).
    pub used: usize,
    /// Whether the budget was forced by [`super::WatchOptions::max_watches`].
    pub forced: bool,
}

impl Budget {
    /// The forced budget, or the system limit minus what is in use minus the headroom.
    pub fn compute(forced: Option<usize>) -> Budget {
        if let Some(n) = forced {
            return Budget {
                available: n,
                max_user_watches: None,
                used: 0,
                forced: true,
            };
        }
        let max = fs::read_to_string(MAX_USER_WATCHES)
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok());
        let used = watches_in_use();
        let available = match max {
            Some(m) => m.saturating_sub(used).saturating_sub(WATCH_HEADROOM),
            // Not Linux, or /proc not mounted: try, and learn the limit from ENOSPC.
            None => usize::MAX,
        };
        Budget {
            available,
            max_user_watches: max,
            used,
            forced: false,
        }
    }

    /// The value to suggest for `fs.inotify.max_user_watches` so that `dirs` directories fit:
    /// what is in use plus `dirs` plus the headroom, rounded up to a multiple of 65,536 to leave
    /// room to grow.
    pub fn suggested_limit(&self, dirs: usize) -> usize {
        let need = self.used + dirs + WATCH_HEADROOM;
        need.div_ceil(65_536).max(1) * 65_536
    }
}

/// inotify watches held by all processes of this user, counted from `/proc/*/fdinfo` (one
/// `inotify wd:` line per watch). 0 when `/proc` cannot be read. Costs one `readlink` per open
/// file descriptor of this user's processes; done once at start.
pub(crate) fn watches_in_use() -> usize {
    let Ok(me) = fs::metadata("/proc/self").map(|m| m.uid()) else {
        return 0;
    };
    let Ok(procs) = fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for p in procs.flatten() {
        let name = p.file_name();
        if !name.as_encoded_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let dir = p.path();
        if fs::metadata(&dir).map(|m| m.uid()).ok() != Some(me) {
            continue;
        }
        let Ok(fds) = fs::read_dir(dir.join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let is_inotify = fs::read_link(fd.path())
                .map(|t| t.as_os_str() == "anon_inode:inotify")
                .unwrap_or(false);
            if !is_inotify {
                continue;
            }
            if let Ok(info) = fs::read_to_string(dir.join("fdinfo").join(fd.file_name())) {
                total += info
                    .lines()
                    .filter(|l| l.starts_with("inotify wd:"))
                    .count();
            }
        }
    }
    total
}

/// The directories under `root` that want a watch, `root` itself first (as the empty path), in
/// breadth-first order (parents before children, top levels first). Skips reserved and ignored
/// directories, never follows symlinks, and skips directories that cannot be read (with a
/// warning).
pub(crate) fn list_dirs(root: &Path, rules: &IgnoreRules) -> Vec<PathBuf> {
    let mut out = vec![PathBuf::new()];
    let mut queue = VecDeque::from([PathBuf::new()]);
    while let Some(dir) = queue.pop_front() {
        for child in child_dirs(root, &dir, rules) {
            out.push(child.clone());
            queue.push_back(child);
        }
    }
    out
}

/// The subdirectories of `root/dir` that want a watch (relative to `root`), sorted.
pub(crate) fn child_dirs(root: &Path, dir: &Path, rules: &IgnoreRules) -> Vec<PathBuf> {
    let full = abs(root, dir);
    let rd = match fs::read_dir(&full) {
        Ok(rd) => rd,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %full.display(), error = %e, "cannot list directory; its subdirectories are not watched");
            }
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for de in rd.flatten() {
        // DirEntry::file_type does not follow symlinks.
        if !de.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let rel = dir.join(de.file_name());
        if wants_watch(&rel, rules) {
            out.push(rel);
        }
    }
    out.sort();
    out
}

/// Whether the directory `rel` (relative, non-empty) is neither reserved nor ignored.
pub(crate) fn wants_watch(rel: &Path, rules: &IgnoreRules) -> bool {
    match RelPath::from_path(rel) {
        Ok(r) => !r.is_reserved() && !rules.is_ignored(&r, true),
        Err(_) => false,
    }
}

/// `root/rel`, or `root` for the empty path.
pub(crate) fn abs(root: &Path, rel: &Path) -> PathBuf {
    if rel.as_os_str().is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}
