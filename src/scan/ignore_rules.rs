//! Which paths are never synced: briefcase's own files, editor temp files, and the user's
//! `.briefcaseignore` at the folder root (gitignore syntax, matched by the `ignore` crate).

use std::path::Path;

use briefcase_mirror::RelPath;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// Patterns ignored in every folder: editor temp files and atomic-save leftovers, then the
/// transient files of version-control tools ([`VCS_TRANSIENT`]).
pub const DEFAULT_IGNORES: &[&str] = &[
    ".briefcase-tmp-*",
    // vim: swap files (.NAME.swp, .swo, … down to .swa), the write test file, backups.
    "*.swp",
    "*.swx",
    "*.swo",
    ".*.sw[a-p]",
    "4913",
    // vim, emacs and many others: backups NAME~.
    "*~",
    // emacs: the lock symlink .#NAME and the autosave #NAME#.
    ".#*",
    "\\#*#", // (a leading `#` starts a comment in gitignore syntax)
    // atomic saves (VS Code, many libraries) and JetBrains' safe write.
    "*.tmp",
    "*___jb_tmp___",
    "*___jb_old___",
    // LibreOffice's lock file, present while a document is open.
    ".~lock.*#",
];

/// Files version-control tools keep only while a command runs: lock files, git's temporary
/// objects and packs, quarantine directories, transaction journals. Replicating them would hand
/// another replica (or, pulled back, this one) a lock that no process holds ("Unable to create
/// '.git/index.lock': File exists"), so they are never synced. Everything else in `.git`, `.hg`
/// and `.svn` is (see `crate::vcs`).
pub const VCS_TRANSIENT: &[&str] = &[
    // git: index.lock, HEAD.lock, refs/**/NAME.lock, packed-refs.lock, config.lock, shallow.lock…
    "**/.git/**/*.lock",
    "**/.git/gc.pid",
    // git: objects being written (tmp_obj_*, tmp_pack_*, tmp_idx_*, .tmp-*-pack) and the
    // quarantine of a push being received.
    "**/.git/objects/**/tmp_*",
    "**/.git/objects/**/.tmp-*",
    "**/.git/objects/incoming-*",
    // Mercurial: the working-copy and store locks, transaction journals.
    "**/.hg/wlock",
    "**/.hg/store/lock",
    "**/.hg/**/*.lock",
    "**/.hg/journal*",
    "**/.hg/store/journal*",
    // Subversion: temporary files and the working-copy database's SQLite journal.
    "**/.svn/tmp/*",
    "**/.svn/wc.db-journal",
    "**/.svn/wc.db-wal",
    "**/.svn/wc.db-shm",
];

/// Name of the user's ignore file at the folder root.
pub const IGNORE_FILE: &str = ".briefcaseignore";

/// The compiled ignore rules of one folder.
#[derive(Debug, Clone)]
pub struct IgnoreRules {
    matcher: Gitignore,
}

impl IgnoreRules {
    /// Defaults plus `root/.briefcaseignore` if present. A bad line in the file is reported and
    /// skipped, not fatal.
    pub fn load(root: &Path) -> IgnoreRules {
        let mut b = GitignoreBuilder::new(root);
        for p in DEFAULT_IGNORES.iter().chain(VCS_TRANSIENT) {
            let _ = b.add_line(None, p);
        }
        let file = root.join(IGNORE_FILE);
        if file.exists() {
            if let Some(e) = b.add(&file) {
                tracing::warn!(file = %file.display(), error = %e, "some lines of the ignore file were not understood and are skipped");
            }
        }
        let matcher = b.build().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignore rules could not be compiled; using none");
            Gitignore::empty()
        });
        IgnoreRules { matcher }
    }

    /// Only the defaults (for mirrors and tests).
    pub fn defaults() -> IgnoreRules {
        let mut b = GitignoreBuilder::new("/");
        for p in DEFAULT_IGNORES.iter().chain(VCS_TRANSIENT) {
            let _ = b.add_line(None, p);
        }
        IgnoreRules {
            matcher: b.build().unwrap_or_else(|_| Gitignore::empty()),
        }
    }

    /// Whether `path` (a directory if `is_dir`) is ignored by a rule that matches the path
    /// itself: [`IgnoreRules::is_ignored`] for a walker that never enters an ignored directory,
    /// so that none of the path's parents is ignored. Costs one match, not one per level.
    pub fn is_ignored_itself(&self, path: &RelPath, is_dir: bool) -> bool {
        if path.is_reserved() {
            return true;
        }
        self.matcher
            .matched(Path::new(path.as_os_str()), is_dir)
            .is_ignore()
    }

    /// Whether `path` (a directory if `is_dir`) is ignored, itself or through an ignored parent.
    pub fn is_ignored(&self, path: &RelPath, is_dir: bool) -> bool {
        if path.is_reserved() {
            return true;
        }
        self.matcher
            .matched_path_or_any_parents(Path::new(path.as_os_str()), is_dir)
            .is_ignore()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_table() {
        let r = IgnoreRules::defaults();
        for (p, want) in [
            ("notes.txt", false),
            (".notes.txt.swp", true),
            ("dir/file~", true),
            ("4913", true),
            ("sub/4913", true),
            (".#lock", true),
            ("x.tmp", true),
            (".briefcase-tmp-abc", true),
            (".git/index", false),
            (".briefcase/state.0", true),
            // editors
            (".notes.txt.swa", true),
            ("#notes.txt#", true),
            ("notes.txt___jb_tmp___", true),
            ("notes.txt___jb_old___", true),
            (".~lock.report.odt#", true),
            (".config.backup", false),
            ("lock", false),
            // git
            (".git/index.lock", true),
            (".git/HEAD.lock", true),
            ("proj/.git/index.lock", true),
            ("a/b/proj/.git/refs/heads/feature/x.lock", true),
            ("proj/.git/packed-refs.lock", true),
            ("proj/.git/gc.pid", true),
            ("proj/.git/objects/pack/tmp_pack_Ab12Cd", true),
            ("proj/.git/objects/pack/tmp_idx_Ab12Cd", true),
            ("proj/.git/objects/ab/tmp_obj_Zx81aa", true),
            ("proj/.git/objects/pack/.tmp-1234-pack-abc.pack", true),
            ("proj/.git/objects/incoming-Ab12Cd/pack/x.pack", true),
            ("proj/.git/HEAD", false),
            ("proj/.git/index", false),
            ("proj/.git/packed-refs", false),
            ("proj/.git/refs/heads/main", false),
            ("proj/.git/objects/ab/cdef0123", false),
            ("proj/.git/objects/pack/pack-abc.pack", false),
            ("proj/.git/logs/HEAD", false),
            ("proj/.git/COMMIT_EDITMSG", false),
            ("src/Cargo.lock", false),
            ("gc.pid", false),
            ("objects/tmp_x", false),
            // mercurial, subversion
            ("proj/.hg/wlock", true),
            ("proj/.hg/store/lock", true),
            ("proj/.hg/store/journal", true),
            ("proj/.hg/store/00changelog.i", false),
            ("proj/.svn/tmp/svn-abc", true),
            ("proj/.svn/tmp", false),
            ("proj/.svn/wc.db-journal", true),
            ("proj/.svn/wc.db", false),
        ] {
            let p = RelPath::try_from(p).unwrap();
            assert_eq!(r.is_ignored(&p, false), want, "{p}");
            if !p.ancestors().iter().any(|a| r.is_ignored(a, true)) {
                assert_eq!(r.is_ignored_itself(&p, false), want, "{p}, itself");
            }
        }
    }

    #[test]
    fn user_file_with_gitignore_syntax() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(IGNORE_FILE), "build/\n*.o\n!keep.o\n").unwrap();
        let r = IgnoreRules::load(d.path());
        let p = |s| RelPath::try_from(s).unwrap();
        assert!(r.is_ignored(&p("build"), true));
        assert!(r.is_ignored(&p("build/out/x"), false));
        assert!(r.is_ignored(&p("a.o"), false));
        assert!(!r.is_ignored(&p("keep.o"), false));
        assert!(!r.is_ignored(&p("src/main.c"), false));
        // What a walker asks once it entered a directory that is not ignored.
        assert!(r.is_ignored_itself(&p("build"), true));
        assert!(r.is_ignored_itself(&p("src/a.o"), false));
        assert!(!r.is_ignored_itself(&p("src/keep.o"), false));
        assert!(!r.is_ignored_itself(&p("src/build.rs"), false));
    }
}
