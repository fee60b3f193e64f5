//! Version-control working copies inside a synced folder (DESIGN.md, "Watching"; issue 8).
//!
//! A `.git` (also `.hg`, `.svn`) directory is synced as a consistent unit: the watcher holds a
//! batch that touches it while the tool holds a lock there (`crate::watch`), the tool's transient
//! files are never replicated (`crate::scan::ignore_rules::VCS_TRANSIENT`), and this module
//! decides what becomes of concurrent versions of a path inside one, because a conflict copy
//! there would corrupt the repository (`HEAD.conflict-home-…` is not a ref git can read) and
//! Syncthing's experience shows where that ends (syncthing#7215):
//!
//! - **Objects** are content-addressed: the same name is the same object, so either copy is
//!   right and the union of both sides' objects is simply every file of both.
//! - **A ref that moved on both sides** (`.git/refs/…`, a detached `HEAD`) keeps the winner's
//!   value; the loser's is kept as `.git/refs/briefcase/REPLICA/…` (`refs/heads/main` of home →
//!   `refs/briefcase/home/heads/main`), so `git log --all` shows both lines of work and
//!   `briefcase conflicts` lists it. The refs of a losing `packed-refs` that differ from the
//!   winner's are kept the same way.
//! - **Everything else** (`index`, logs, `COMMIT_EDITMSG`, `ORIG_HEAD`, config, Mercurial's and
//!   Subversion's metadata) takes the winner's copy: caches and history that git rebuilds or
//!   that only describe the winner's state.
//!
//! The winner is the planner's (the later mtime, then the higher replica ID): the same answer on
//! every machine.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use briefcase_mirror::RelPath;

/// Names of the metadata directories of version-control tools.
pub const VCS_DIRS: &[&[u8]] = &[b".git", b".hg", b".svn"];

/// Namespace under `refs/` where the losing side of a ref that moved on two replicas is kept.
pub const REFS_NAMESPACE: &str = "briefcase";

/// The version-control metadata directory (`.git`, `.hg`, `.svn`) a path lies in (the innermost,
/// for nested repositories), if any. The directory itself counts as inside.
pub fn metadata_dir_of(path: &RelPath) -> Option<RelPath> {
    let bytes = path.as_bytes();
    let mut end = None;
    let mut start = 0;
    for c in path.components() {
        let stop = start + c.len();
        if VCS_DIRS.contains(&c) {
            end = Some(stop);
        }
        start = stop + 1;
    }
    end.and_then(|e| bytes.get(..e))
        .and_then(|b| RelPath::new(b.to_vec()).ok())
}

/// What to do with the losing version of a path inside a version-control directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loser {
    /// A git ref: keep the loser's value at this path (`.git/refs/briefcase/REPLICA/…`).
    KeepAsRef(RelPath),
    /// git's `packed-refs`: the winner's file stays; the loser's refs that differ are kept as
    /// loose refs under `.git/refs/briefcase/REPLICA/` (see [`packed_refs`]).
    PackedRefs {
        /// The `.git` directory.
        git_dir: RelPath,
    },
    /// Objects, caches, logs: the winner's copy is right; nothing is kept.
    Drop,
}

/// How the losing version of `path` is kept when two replicas changed it concurrently, or
/// `None` when `path` is not inside a version-control directory (an ordinary conflict copy).
/// `replica` is the losing replica's name.
pub fn loser_of(path: &RelPath, replica: &str) -> Option<Loser> {
    let dir = metadata_dir_of(path)?;
    if !dir.as_bytes().ends_with(b".git") {
        return Some(Loser::Drop);
    }
    let rest = path.as_bytes().get(dir.as_bytes().len() + 1..)?;
    let who = ref_component(replica);
    let ns = format!("refs/{REFS_NAMESPACE}/");
    let kept = |tail: &[u8]| -> Option<Loser> {
        let mut p = dir.as_bytes().to_vec();
        p.extend_from_slice(format!("/{ns}{who}/").as_bytes());
        p.extend_from_slice(tail);
        RelPath::new(p).ok().map(Loser::KeepAsRef)
    };
    match rest {
        b"HEAD" => kept(b"HEAD"),
        b"packed-refs" => Some(Loser::PackedRefs { git_dir: dir }),
        // Our own namespace: two replicas' saved refs of a third; the winner's is as good.
        r if r.starts_with(ns.as_bytes()) => Some(Loser::Drop),
        r => match r.strip_prefix(b"refs/") {
            Some(tail) if !tail.is_empty() => kept(tail),
            _ => Some(Loser::Drop),
        },
    }
}

/// A replica name as one component of a git ref name: letters, digits, `-` and `_` kept,
/// anything else (dots, spaces, `~^:?*[\`, non-ASCII) becomes `-`; never empty.
pub fn ref_component(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if s.is_empty() {
        "replica".into()
    } else {
        s
    }
}

/// The refs of a `packed-refs` file: (ref name, 40- or 64-hex object ID), skipping the header,
/// peeled lines (`^…`) and anything malformed.
pub fn packed_refs(text: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.split(|b| *b == b'\n') {
        if line.first().is_some_and(|b| *b == b'#' || *b == b'^') {
            continue;
        }
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let mut it = line.trim_end().splitn(2, ' ');
        let (Some(id), Some(name)) = (it.next(), it.next()) else {
            continue;
        };
        let hex = id.len() == 40 || id.len() == 64;
        if hex && id.bytes().all(|b| b.is_ascii_hexdigit()) && name.starts_with("refs/") {
            out.push((name.to_string(), id.to_string()));
        }
    }
    out
}

/// The refs of the losing `packed-refs` (`loser`) that the winning one (`winner`) does not hold
/// with the same value, outside our own namespace: the lines of work to keep as loose refs.
pub fn packed_refs_lost(winner: &[u8], loser: &[u8]) -> Vec<(String, String)> {
    let won: std::collections::HashMap<String, String> = packed_refs(winner).into_iter().collect();
    let ns = format!("refs/{REFS_NAMESPACE}/");
    packed_refs(loser)
        .into_iter()
        .filter(|(name, id)| !name.starts_with(&ns) && won.get(name) != Some(id))
        .collect()
}

/// Whether `path` is a ref kept by [`Loser::KeepAsRef`] or from a losing `packed-refs`: a
/// line of work from another replica waiting for the user (`briefcase conflicts` lists it).
pub fn is_kept_ref(path: &RelPath) -> bool {
    let Some(dir) = metadata_dir_of(path) else {
        return false;
    };
    let ns = format!("/refs/{REFS_NAMESPACE}/");
    dir.as_bytes().ends_with(b".git")
        && path
            .as_bytes()
            .get(dir.as_bytes().len()..)
            .is_some_and(|r| r.starts_with(ns.as_bytes()))
}

/// A lock the version-control tool holds in its metadata directory `vcs_dir`, with its inode.
/// git: `*.lock` directly in `.git`, under `refs/`, `objects/pack/` or `objects/info/`, and
/// `gc.pid` while `git gc` runs. Mercurial: `wlock`, `store/lock`. Subversion: the working-copy
/// database's `wc.db-journal` while it writes. `None` when there is none (or `vcs_dir` is not a
/// directory, e.g. a worktree's `.git` file).
pub fn lock_held(vcs_dir: &Path) -> Option<(PathBuf, u64)> {
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

/// A lock in `vcs_dir` younger than `stale` (by its mtime): the tool is at work there now, so
/// nothing should be written into the directory. An older one was left by a crashed command
/// and is not waited for.
pub fn busy(vcs_dir: &Path, stale: Duration) -> Option<PathBuf> {
    let (lock, _) = lock_held(vcs_dir)?;
    let age = fs::symlink_metadata(&lock)
        .ok()?
        .modified()
        .ok()
        .and_then(|m| m.elapsed().ok())
        .unwrap_or_default();
    (age < stale).then_some(lock)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rp(s: &str) -> RelPath {
        RelPath::try_from(s).unwrap()
    }

    #[test]
    fn metadata_dir_table() {
        for (p, want) in [
            (".git/index", Some(".git")),
            (".git", Some(".git")),
            ("a/.git/refs/heads/x", Some("a/.git")),
            ("a/.git/modules/b/.git/HEAD", Some("a/.git/modules/b/.git")),
            ("a/.hg/store/data", Some("a/.hg")),
            ("w/.svn/wc.db", Some("w/.svn")),
            ("src/main.rs", None),
            ("x.git/HEAD", None),
            (".github/workflows/ci.yml", None),
        ] {
            assert_eq!(
                metadata_dir_of(&rp(p)).map(|d| d.display()),
                want.map(String::from),
                "{p}"
            );
        }
    }

    #[test]
    fn loser_table() {
        let keep = |s: &str| Some(Loser::KeepAsRef(rp(s)));
        for (p, want) in [
            (
                "p/.git/refs/heads/main",
                keep("p/.git/refs/briefcase/home/heads/main"),
            ),
            (
                "p/.git/refs/heads/feat/x",
                keep("p/.git/refs/briefcase/home/heads/feat/x"),
            ),
            (
                "p/.git/refs/tags/v1",
                keep("p/.git/refs/briefcase/home/tags/v1"),
            ),
            (
                "p/.git/refs/remotes/origin/main",
                keep("p/.git/refs/briefcase/home/remotes/origin/main"),
            ),
            (".git/HEAD", keep(".git/refs/briefcase/home/HEAD")),
            (
                ".git/packed-refs",
                Some(Loser::PackedRefs {
                    git_dir: rp(".git"),
                }),
            ),
            (".git/refs/briefcase/office/heads/main", Some(Loser::Drop)),
            (".git/index", Some(Loser::Drop)),
            (".git/logs/HEAD", Some(Loser::Drop)),
            (".git/objects/ab/cdef", Some(Loser::Drop)),
            (".git/COMMIT_EDITMSG", Some(Loser::Drop)),
            (".git/config", Some(Loser::Drop)),
            (".hg/dirstate", Some(Loser::Drop)),
            (".svn/wc.db", Some(Loser::Drop)),
            ("src/main.rs", None),
        ] {
            assert_eq!(loser_of(&rp(p), "home"), want, "{p}");
        }
        assert_eq!(
            loser_of(&rp(".git/refs/heads/main"), "my laptop.local"),
            keep(".git/refs/briefcase/my-laptop-local/heads/main")
        );
    }

    #[test]
    fn packed_refs_parse_and_diff() {
        let a = "# pack-refs with: peeled fully-peeled sorted \n\
                 1111111111111111111111111111111111111111 refs/heads/main\n\
                 2222222222222222222222222222222222222222 refs/tags/v1\n\
                 ^3333333333333333333333333333333333333333\n\
                 garbage line\n";
        let b = "4444444444444444444444444444444444444444 refs/heads/main\n\
                 2222222222222222222222222222222222222222 refs/tags/v1\n\
                 5555555555555555555555555555555555555555 refs/heads/only-b\n\
                 6666666666666666666666666666666666666666 refs/briefcase/x/heads/main\n";
        assert_eq!(packed_refs(a.as_bytes()).len(), 2);
        assert_eq!(
            packed_refs_lost(a.as_bytes(), b.as_bytes()),
            vec![
                (
                    "refs/heads/main".into(),
                    "4444444444444444444444444444444444444444".into()
                ),
                (
                    "refs/heads/only-b".into(),
                    "5555555555555555555555555555555555555555".into()
                ),
            ]
        );
    }

    #[test]
    fn kept_refs() {
        assert!(is_kept_ref(&rp("p/.git/refs/briefcase/home/heads/main")));
        assert!(!is_kept_ref(&rp("p/.git/refs/heads/main")));
        assert!(!is_kept_ref(&rp("refs/briefcase/home/x")));
    }
}
