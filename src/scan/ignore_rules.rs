//! Which paths are never synced: briefcase's own files, editor temp files, and the user's
//! `.briefcaseignore` at the folder root (gitignore syntax, matched by the `ignore` crate).

use std::path::Path;

use briefcase_mirror::RelPath;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// Patterns ignored in every folder: editor temp files and atomic-save leftovers.
pub const DEFAULT_IGNORES: &[&str] = &[
    ".briefcase-tmp-*",
    "*.swp",
    "*.swx",
    "*.swo",
    "*~",
    ".#*",
    "4913",
    "*.tmp",
    ".~lock.*#",
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
        for p in DEFAULT_IGNORES {
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
        for p in DEFAULT_IGNORES {
            let _ = b.add_line(None, p);
        }
        IgnoreRules {
            matcher: b.build().unwrap_or_else(|_| Gitignore::empty()),
        }
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
        ] {
            assert_eq!(
                r.is_ignored(&RelPath::try_from(p).unwrap(), false),
                want,
                "{p}"
            );
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
    }
}
