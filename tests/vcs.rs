//! Git repositories as units (issue 8, crate `briefcase::vcs`): office and home both commit in
//! the same repository between two plug-ins of an encrypted stick (here on a plain directory,
//! the stick's format is the same on FAT). No line of work may be lost and the repository must
//! stay valid on every replica:
//!
//! - `concurrent_commits_keep_both_lines_through_a_stick`: both branches moved; after the stick
//!   went office → home → office, both replicas hold the same repository, `git fsck --full` is
//!   clean, no `.conflict-` file exists inside `.git`, the loser's `main` is kept as
//!   `refs/briefcase/REPLICA/heads/main` (so `git log --all` shows both commits) and
//!   `briefcase conflicts` lists it.
//! - `concurrent_packed_refs_keep_the_losers_refs`: both sides ran `git pack-refs` after moving
//!   different branches; the losing `packed-refs`' moved refs are kept the same way.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::process::Command;

mod support;
use support::{share_a_stick, tree, write, Machine};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-c")
        .arg("safe.directory=*")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.org")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.org")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have_git() -> bool {
    Command::new("git").arg("--version").output().is_ok()
}

/// Every path of `root` holding `.conflict-`.
fn conflict_copies(root: &Path) -> Vec<String> {
    tree(root)
        .into_keys()
        .filter(|k| k.contains(".conflict-"))
        .collect()
}

/// Office and home with a shared stick and a committed repository `work/proj` on both.
fn two_machines(d: &Path) -> (Machine, Machine, std::path::PathBuf, std::path::PathBuf) {
    let (office, home) = (Machine::new("office"), Machine::new("home"));
    let (ow, hw, stick) = (d.join("office"), d.join("home"), d.join("stick"));
    let proj = ow.join("proj");
    fs::create_dir_all(&proj).unwrap();
    git(&proj, &["init", "-q", "-b", "main"]);
    for i in 0..20 {
        write(&proj.join(format!("src/f{i}.txt")), &format!("file {i}\n"));
    }
    git(&proj, &["add", "-A"]);
    git(&proj, &["commit", "-qm", "start"]);
    git(&proj, &["branch", "topic"]);
    let target = format!("stick:{}", stick.display());
    share_a_stick(&office, &home, &ow, &target);
    home.ok(&["clone", &target, hw.to_str().unwrap()]);
    (office, home, ow, hw)
}

fn sync(m: &Machine, dir: &Path) {
    m.ok(&["sync", dir.to_str().unwrap()]);
}

fn assert_same_valid_repo(ow: &Path, hw: &Path) {
    for w in [ow, hw] {
        assert_eq!(conflict_copies(w), Vec::<String>::new(), "{}", w.display());
        git(&w.join("proj"), &["fsck", "--full", "--no-progress"]);
    }
    let strip = |t: std::collections::BTreeMap<String, String>| {
        t.into_iter()
            .filter(|(k, _)| !k.ends_with(".lock") && !k.ends_with("gc.pid"))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (a, b) = (strip(tree(ow)), strip(tree(hw)));
    let diff: Vec<&String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .collect();
    assert!(diff.is_empty(), "office and home differ: {diff:?}");
}

#[test]
fn concurrent_commits_keep_both_lines_through_a_stick() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (office, home, ow, hw) = two_machines(d.path());
    // Both commit on main (and office on topic) while the stick is in the drawer.
    write(&ow.join("proj/src/f1.txt"), "office's edit\n");
    git(&ow.join("proj"), &["commit", "-qam", "office work"]);
    git(&ow.join("proj"), &["checkout", "-q", "topic"]);
    write(&ow.join("proj/src/f3.txt"), "office's topic edit\n");
    git(&ow.join("proj"), &["commit", "-qam", "office topic work"]);
    git(&ow.join("proj"), &["checkout", "-q", "main"]);
    write(&hw.join("proj/src/f2.txt"), "home's edit\n");
    git(&hw.join("proj"), &["commit", "-qam", "home work"]);
    git(&hw.join("proj"), &["checkout", "-q", "topic"]);
    write(&hw.join("proj/src/f4.txt"), "home's topic edit\n");
    git(&hw.join("proj"), &["commit", "-qam", "home topic work"]);
    git(&hw.join("proj"), &["checkout", "-q", "main"]);
    // Office → stick, home ↔ stick, office ↔ stick, home ↔ stick.
    sync(&office, &ow);
    sync(&home, &hw);
    sync(&office, &ow);
    sync(&home, &hw);
    assert_same_valid_repo(&ow, &hw);
    for w in [&ow, &hw] {
        let all = git(&w.join("proj"), &["log", "--all", "--format=%s"]);
        for s in [
            "office work",
            "home work",
            "office topic work",
            "home topic work",
            "start",
        ] {
            assert!(
                all.lines().any(|l| l == s),
                "{s} missing in {}:\n{all}",
                w.display()
            );
        }
        let kept = git(
            &w.join("proj"),
            &["for-each-ref", "--format=%(refname)", "refs/briefcase/"],
        );
        assert!(kept.lines().any(|l| l.ends_with("/heads/main")), "{kept}");
        assert!(kept.lines().any(|l| l.ends_with("/heads/topic")), "{kept}");
    }
    let listed = office.ok(&["conflicts", ow.to_str().unwrap()]);
    assert!(listed.contains("refs/briefcase/"), "{listed}");
    // Still usable: a commit works (no stale lock), on both.
    for w in [&ow, &hw] {
        git(
            &w.join("proj"),
            &["commit", "-q", "--allow-empty", "-m", "after"],
        );
    }
}

#[test]
fn concurrent_packed_refs_keep_the_losers_refs() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (office, home, ow, hw) = two_machines(d.path());
    write(&ow.join("proj/src/f1.txt"), "office's edit\n");
    git(&ow.join("proj"), &["commit", "-qam", "office work"]);
    git(&ow.join("proj"), &["pack-refs", "--all"]);
    git(&hw.join("proj"), &["checkout", "-q", "topic"]);
    write(&hw.join("proj/src/f2.txt"), "home's edit\n");
    git(&hw.join("proj"), &["commit", "-qam", "home work"]);
    git(&hw.join("proj"), &["checkout", "-q", "main"]);
    git(&hw.join("proj"), &["pack-refs", "--all"]);
    sync(&office, &ow);
    sync(&home, &hw);
    sync(&office, &ow);
    sync(&home, &hw);
    assert_same_valid_repo(&ow, &hw);
    for w in [&ow, &hw] {
        let all = git(&w.join("proj"), &["log", "--all", "--format=%s"]);
        for s in ["office work", "home work"] {
            assert!(
                all.lines().any(|l| l == s),
                "{s} missing in {}:\n{all}",
                w.display()
            );
        }
    }
}
