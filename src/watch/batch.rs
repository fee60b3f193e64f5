//! The batch being accumulated: paths, the rescan flag, the git directories it touches, and the
//! rules that turn it into a [`Hint`].

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use briefcase_mirror::RelPath;

use super::Hint;
use crate::scan::IgnoreRules;

/// Events accumulated since the last emitted hint.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// Paths touched, with what the event said about them being directories (`None`: unknown).
    paths: HashMap<RelPath, Option<bool>>,
    /// Events were lost: the hint is [`Hint::Rescan`].
    rescan: bool,
    /// `.git` directories (relative) that paths of this batch lie in.
    git_dirs: BTreeSet<RelPath>,
    /// When the first event of the batch arrived.
    first: Option<Instant>,
    /// When the latest event arrived.
    last: Option<Instant>,
    /// Since when the batch is held for a git lock.
    pub hold_since: Option<Instant>,
}

impl Pending {
    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn touch(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// Adds a path (`is_dir` as far as the event says).
    pub fn add(&mut self, path: RelPath, is_dir: Option<bool>, now: Instant) {
        if let Some(g) = git_dir_of(&path) {
            self.git_dirs.insert(g);
        }
        let slot = self.paths.entry(path).or_insert(is_dir);
        if slot.is_none() {
            *slot = is_dir;
        }
        self.touch(now);
    }

    /// Marks the batch as a full rescan.
    pub fn add_rescan(&mut self, now: Instant) {
        self.rescan = true;
        self.touch(now);
    }

    /// Whether the batch is a full rescan.
    pub fn is_rescan(&self) -> bool {
        self.rescan
    }

    /// When the batch is due by the debounce rule alone: `quiet` after the last event or `cap`
    /// after the first. `None` when empty.
    pub fn due_at(&self, quiet: std::time::Duration, cap: std::time::Duration) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        Some((last + quiet).min(first + cap))
    }

    /// The `.git` directories this batch touches (relative). A rescan also checks `.git` at the
    /// root, the common case.
    pub fn git_dirs(&self) -> Vec<RelPath> {
        let mut v: Vec<RelPath> = self.git_dirs.iter().cloned().collect();
        if self.rescan {
            if let Ok(g) = RelPath::try_from(".git") {
                if !v.contains(&g) {
                    v.push(g);
                }
            }
        }
        v
    }

    /// The hint this batch amounts to, or `None` when every path turned out ignored. Paths are
    /// stat'ed to tell directories for the ignore rules.
    pub fn to_hint(&self, root: &Path, rules: &IgnoreRules) -> Option<Hint> {
        if self.rescan {
            return Some(Hint::Rescan);
        }
        let kept: Vec<RelPath> = self
            .paths
            .iter()
            .filter(|(p, hint)| {
                let is_dir = match fs::symlink_metadata(p.under(root)) {
                    Ok(m) => m.is_dir(),
                    Err(_) => hint.unwrap_or(false),
                };
                !rules.is_ignored(p, is_dir)
            })
            .map(|(p, _)| p.clone())
            .collect();
        let scopes = minimal(kept);
        (!scopes.is_empty()).then_some(Hint::Paths(scopes))
    }
}

/// Sorts, dedups, and drops every path that lies below another path of the list.
pub(crate) fn minimal(mut v: Vec<RelPath>) -> Vec<RelPath> {
    v.sort();
    v.dedup();
    let set: BTreeSet<&RelPath> = v.iter().collect();
    v.iter()
        .filter(|p| !p.ancestors().iter().any(|a| set.contains(a)))
        .cloned()
        .collect()
}

/// The version-control metadata directory (`.git`, `.hg`, `.svn`) a path lies in, if any.
pub(crate) fn git_dir_of(path: &RelPath) -> Option<RelPath> {
    crate::vcs::metadata_dir_of(path)
}

/// A lock the version-control tool holds in its metadata directory `vcs_dir`, with its inode.
/// git: `*.lock` directly in `.git`, under `refs/`, `objects/pack/` or `objects/info/`, and
/// `gc.pid` while `git gc` runs. Mercurial: `wlock`, `store/lock`. Subversion: the working-copy
/// database's `wc.db-journal` while it writes. `None` when there is none (or `vcs_dir` is not a
/// directory, e.g. a worktree's `.git` file).
pub(crate) fn git_lock(vcs_dir: &Path) -> Option<(PathBuf, u64)> {
    let name = vcs_dir.file_name().map(|n| n.as_encoded_bytes().to_vec());
    match name.as_deref() {
        Some(b".hg") => {
            return [vcs_dir.join("wlock"), vcs_dir.join("store").join("lock")]
                .into_iter()
                .find_map(|p| present(&p))
        }
        Some(b".svn") => return present(&vcs_dir.join("wc.db-journal")),
        _ => {}
    }
    if let Some(l) = lock_in(vcs_dir)
        .or_else(|| present(&vcs_dir.join("gc.pid")))
        .or_else(|| lock_in(&vcs_dir.join("objects").join("pack")))
        .or_else(|| lock_in(&vcs_dir.join("objects").join("info")))
    {
        return Some(l);
    }
    let mut stack = vec![vcs_dir.join("refs")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for de in rd.flatten() {
            let is_dir = de.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir {
                stack.push(de.path());
            } else if de.file_name().as_encoded_bytes().ends_with(b".lock") {
                if let Some(l) = present(&de.path()) {
                    return Some(l);
                }
            }
        }
    }
    None
}

/// `path` and its inode, if something is there.
fn present(path: &Path) -> Option<(PathBuf, u64)> {
    fs::symlink_metadata(path)
        .ok()
        .map(|m| (path.to_path_buf(), m.ino()))
}

fn lock_in(dir: &Path) -> Option<(PathBuf, u64)> {
    let rd = fs::read_dir(dir).ok()?;
    for de in rd.flatten() {
        if de.file_name().as_encoded_bytes().ends_with(b".lock") {
            if let Ok(m) = fs::symlink_metadata(de.path()) {
                if !m.is_dir() {
                    return Some((de.path(), m.ino()));
                }
            }
        }
    }
    None
}
