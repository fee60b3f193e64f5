//! The batch being accumulated: paths, the rescan flag, the git directories it touches, and the
//! rules that turn it into a [`Hint`].

use std::collections::{BTreeSet, HashMap};
use std::fs;
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

/// A lock the version-control tool holds in `vcs_dir` ([`crate::vcs::lock_held`]).
pub(crate) fn git_lock(vcs_dir: &Path) -> Option<(PathBuf, u64)> {
    crate::vcs::lock_held(vcs_dir)
}
