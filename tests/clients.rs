//! Real client tools inside a watched folder (issue 8): `briefcase watch FOLDER NAS` runs as a
//! child process with a `dir` mirror, a tool does its work in the folder, and once the mirror
//! has converged (polled every 50 ms, with a deadline of `CLIENTS_DEADLINE_S`, default 60 s,
//! never a timing assertion) every step is checked (`kit::Scenario::settle`):
//!
//! 1. mirror tree == folder tree (content, executable bit, directories, symlinks), without
//!    `.briefcase/`, `.briefcase-folder` and the names that are never replicated (inside `.git`:
//!    `*.lock`, `gc.pid`, `objects/**/tmp_*`, `objects/**/.tmp-*`, `objects/incoming-*`; editor
//!    temps `*.swp`, `*.swo`, `*.swx`, `*~`, `.#*`, `#*#`, `4913`, `*.tmp`, `.~lock.*#`,
//!    `*___jb_tmp___`, `*___jb_old___`);
//! 2. no conflict copy (`.conflict-`) on either side, and `briefcase conflicts` lists none;
//! 3. git scenarios (`Scenario::check_git`): `git fsck --full` clean on the mirror's copy, the
//!    same `HEAD` on both sides, the local repository still takes `git commit --allow-empty`, and
//!    no `*.lock`, `gc.pid` or `tmp_pack_*` in a `.git` on either side;
//! 4. no temp litter on the mirror: `.briefcase-tmp-*`, the editor temps above, rsync's
//!    `.NAME.XXXXXX`, sed's `sedXXXXXX`, GLib's `.goutputstream-*`, `*.vsctmp`;
//! 5. no line of the watch log (`BRIEFCASE_LOG=info`) speaks of a conflict.
//!
//! The scenarios:
//!
//! - `git_workflow_issue8`: the issue's scenario on a ~1,500-file repository of real source
//!   (this repository's trees and crates of `~/.cargo/registry/src`) in `FOLDER/proj`: five
//!   commits on `feature`, `checkout main`, a commit, `rebase feature`, `gc --aggressive
//!   --prune=now`, a branch created, left and deleted, and three vim saves (`backupcopy` no, yes,
//!   auto, with swap files), checked after each step.
//! - `git_gc_prune_now`: thirty commits of loose objects, then `git gc --prune=now`, which
//!   removes more than half of the folder's files: the mirror follows without
//!   `--allow-mass-delete` and `briefcase status` does not show it paused.
//! - `git_gc_prune_now_while_the_watch_is_frozen`: the same with the watch frozen (SIGSTOP)
//!   during the gc, so that one sync sees all of its deletions at once (on a quick machine the
//!   watch may see them in several smaller syncs, which the guard never weighed together).
//! - `rm_rf_build_dir`: `rm -rf target/` (3,000 files) while, at the same moment, a file is
//!   edited, new files appear and a directory is moved elsewhere: all of it reaches the mirror.
//! - `branch_switch_hundreds`: two branches differing in hundreds of files (deleted, added,
//!   changed, moved), switched back and forth three times.
//! - `tar_x_5000`: `tar x` of a 5,000-file archive (with symlinks and empty directories, old
//!   mtimes) into the folder.
//! - `editors_and_tools`: vim (backupcopy no/yes/auto, swap files), emacs (real in batch mode
//!   when installed, else its syscalls: `.#NAME` lock symlink, `#NAME#` auto-save, `NAME~` backup
//!   by rename, new file), JetBrains safe write (`NAME___jb_tmp___`, `NAME___jb_old___`), VS Code
//!   (in place, and `NAME.vsctmp` + rename), gedit (`.goutputstream-XXXXXX` + rename), LibreOffice
//!   (`.~lock.NAME#` around a `luXXXX.tmp` + rename), `sed -i`, `rsync -a` (a first copy, then
//!   updates with `--delete`), `cp -a`, `unzip` (and `unzip -o` over it).
//!
//! `CLIENTS_KEEP_GOING=1` records failed checks and goes on, to see every step that fails; the
//! test still fails at the end. Run with `--nocapture` to see each step's convergence time.

#![allow(clippy::unwrap_used)]

mod support;

#[path = "support/clients.rs"]
mod kit;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use kit::{append, files_under, have, run_ok, text, write, Rng, Scenario};

/// `n` files of `all` spread evenly, starting at `offset`.
fn pick(all: &[String], n: usize, offset: usize) -> Vec<String> {
    let step = (all.len() / n.max(1)).max(1);
    (0..n)
        .map(|i| all[(offset + i * step) % all.len()].clone())
        .collect()
}

#[test]
fn git_workflow_issue8() {
    let mut s = Scenario::new("git_workflow_issue8");
    let proj = s.folder.join("proj");
    s.make_repo(&proj, 1500);
    let tracked = files_under(&proj);
    s.start_watch();
    s.settle("initial sync");
    s.check_git("initial sync", "proj");

    s.git(&proj, &["checkout", "-q", "-b", "feature"]);
    for i in 1..=5 {
        let step = format!("commit {i} of 5 on feature");
        s.edit(
            &proj,
            &pick(&tracked, 3, i * 7),
            &format!("feature change {i}"),
        );
        s.git(
            &proj,
            &["commit", "-q", "-a", "-m", &format!("feature {i}")],
        );
        s.settle(&step);
        s.check_git(&step, "proj");
    }

    s.git(&proj, &["checkout", "-q", "main"]);
    s.settle("checkout main");
    s.check_git("checkout main", "proj");

    // Files the feature commits did not touch, so the rebase applies cleanly.
    let mains: Vec<String> = tracked
        .iter()
        .filter(|f| f.starts_with("docs/"))
        .take(2)
        .cloned()
        .collect();
    s.edit(&proj, &mains, "a change on main");
    s.git(&proj, &["commit", "-q", "-a", "-m", "on main"]);
    s.settle("a commit on main");
    s.check_git("a commit on main", "proj");

    s.git(&proj, &["rebase", "-q", "feature"]);
    s.settle("rebase feature");
    s.check_git("rebase feature", "proj");

    s.git(&proj, &["gc", "-q", "--aggressive", "--prune=now"]);
    s.settle("gc --aggressive --prune=now");
    s.check_git("gc --aggressive --prune=now", "proj");

    s.git(&proj, &["checkout", "-q", "-b", "other"]);
    s.git(&proj, &["checkout", "-q", "main"]);
    s.git(&proj, &["branch", "-q", "-D", "other"]);
    s.settle("checkout -b other, checkout main, branch -D other");
    s.check_git("checkout -b other, checkout main, branch -D other", "proj");

    let file = proj.join(&mains[0]);
    for bkc in ["no", "yes", "auto"] {
        let step = format!("vim save, backupcopy={bkc}");
        s.vim_save(&file, bkc, &format!("saved by vim with backupcopy={bkc}"));
        s.settle(&step);
        s.check_git(&step, "proj");
    }
    s.settle("the last empty commit");
    s.finish();
}

/// A 1,500-file repository in `FOLDER/proj`, watched, with thirty commits of loose objects on
/// top (no automatic gc in between: they stay loose until an explicit one); checked.
fn thirty_loose_commits(s: &mut Scenario) -> PathBuf {
    let proj = s.folder.join("proj");
    s.make_repo(&proj, 1500);
    s.git(&proj, &["config", "gc.auto", "0"]);
    let tracked = files_under(&proj);
    s.start_watch();
    s.settle("initial sync");
    for i in 0..30 {
        s.edit(&proj, &pick(&tracked, 20, i * 3), &format!("change {i}"));
        s.git(&proj, &["commit", "-q", "-a", "-m", &format!("change {i}")]);
    }
    s.settle("thirty commits");
    s.check_git("thirty commits", "proj");
    proj
}

#[test]
fn git_gc_prune_now() {
    let mut s = Scenario::new("git_gc_prune_now");
    let proj = thirty_loose_commits(&mut s);

    let count = |root: &Path| {
        kit::snapshot(root)
            .values()
            .filter(|n| matches!(n, kit::Node::File { .. }))
            .count()
    };
    let before = count(&s.folder);
    s.git(&proj, &["gc", "-q", "--prune=now"]);
    let after = count(&s.folder);
    let removed = before.saturating_sub(after);
    assert!(
        removed * 2 > before,
        "scenario: gc should remove more than half of the folder's files, removed {removed} of {before}"
    );
    eprintln!("[git_gc_prune_now] gc removed {removed} of {before} files");
    s.settle("gc --prune=now");
    s.check_not_paused("gc --prune=now");
    s.check_git("gc --prune=now", "proj");
    s.settle("the last empty commit");
    s.finish();
}

/// `git_gc_prune_now` with the watch frozen (SIGSTOP) while gc runs and thawed after: every
/// deletion reaches the watcher at once (the kernel queued the events), so one sync sees more
/// than half of the files gone, as on a busy machine. They were watched, not found by a scan: the
/// mirror follows and is not paused.
#[test]
fn git_gc_prune_now_while_the_watch_is_frozen() {
    let mut s = Scenario::new("git_gc_prune_now_while_the_watch_is_frozen");
    let proj = thirty_loose_commits(&mut s);

    s.watch.as_ref().unwrap().freeze();
    s.git(&proj, &["gc", "-q", "--prune=now"]);
    s.watch.as_ref().unwrap().thaw();
    s.settle("gc --prune=now while the watch was frozen");
    s.check_not_paused("gc --prune=now while the watch was frozen");
    s.check_git("gc --prune=now while the watch was frozen", "proj");
    s.settle("the last empty commit");
    s.finish();
}

#[test]
fn rm_rf_build_dir() {
    let mut s = Scenario::new("rm_rf_build_dir");
    let f = s.folder.clone();
    let mut rng = Rng(7);
    for i in 0..60 {
        let lines = 10 + rng.below(100) as usize;
        write(
            &f.join(format!("src/m{}/f{i}.rs", i % 6)),
            text(&mut rng, lines),
        );
    }
    write(&f.join("src/main.rs"), "fn main() {}\n");
    for i in 0..30 {
        write(
            &f.join(format!("assets/dirA/img{i}.txt")),
            text(&mut rng, 5),
        );
    }
    write(&f.join("assets/dirA/deeper/x.txt"), "x\n");
    for d in 0..30 {
        for i in 0..100 {
            let sub = match d % 3 {
                0 => format!("target/debug/deps/d{d}"),
                1 => format!("target/debug/build/crate-{d:04x}/out"),
                _ => format!("target/debug/incremental/s-{d}"),
            };
            write(&f.join(format!("{sub}/o{i}.rlib")), text(&mut rng, 3));
        }
    }
    s.start_watch();
    s.settle("initial sync");

    // At the same moment: the build directory goes, a file is edited, files are created and a
    // directory is moved elsewhere.
    let mut rm = Command::new("rm")
        .args(["-rf", "target"])
        .current_dir(&f)
        .spawn()
        .unwrap();
    append(&f.join("src/main.rs"), "// edited while target/ went away");
    for i in 0..10 {
        write(&f.join(format!("new/n{i}.txt")), format!("new {i}\n"));
    }
    fs::rename(f.join("assets/dirA"), f.join("moved-dirA")).unwrap();
    assert!(rm.wait().unwrap().success());
    assert!(!f.join("target").exists());
    s.settle("rm -rf target/ with an edit, new files and a moved directory");
    s.check_not_paused("rm -rf target/");
    assert!(!s.nas.join("target").exists());
    s.finish();
}

#[test]
fn branch_switch_hundreds() {
    let mut s = Scenario::new("branch_switch_hundreds");
    let proj = s.folder.join("proj");
    s.make_repo(&proj, 1500);
    let tracked = files_under(&proj);
    s.git(&proj, &["checkout", "-q", "-b", "alt"]);
    let mut rng = Rng(11);
    let deleted = pick(&tracked, 150, 0);
    let changed = pick(&tracked, 200, 1);
    let moved = pick(&tracked, 50, 2);
    let mut rm = vec!["rm".to_string(), "-q".into(), "--".into()];
    rm.extend(
        deleted
            .iter()
            .filter(|p| !changed.contains(p) && !moved.contains(p))
            .cloned(),
    );
    let rm: Vec<&str> = rm.iter().map(String::as_str).collect();
    s.git(&proj, &rm);
    for f in changed.iter().filter(|p| !moved.contains(p)) {
        if proj.join(f).exists() {
            let lines = 5 + rng.below(40) as usize;
            fs::write(proj.join(f), text(&mut rng, lines)).unwrap();
        }
    }
    for f in moved.iter().filter(|p| proj.join(p).exists()) {
        let to = format!("moved/{}", f.replace('/', "_"));
        fs::create_dir_all(proj.join("moved")).unwrap();
        s.git(&proj, &["mv", f, &to]);
    }
    for i in 0..150 {
        let lines = 5 + rng.below(60) as usize;
        write(
            &proj.join(format!("alt-only/part{}/new{i}.rs", i % 10)),
            text(&mut rng, lines),
        );
    }
    s.git(&proj, &["add", "-A"]);
    s.git(
        &proj,
        &["commit", "-q", "-m", "alt: hundreds of files differ"],
    );
    let diffstat = s.git(&proj, &["diff", "--shortstat", "main", "alt"]);
    eprintln!("[branch_switch_hundreds] main..alt:{diffstat}");
    s.git(&proj, &["checkout", "-q", "main"]);
    s.start_watch();
    s.settle("initial sync");
    s.check_git("initial sync", "proj");

    for round in 1..=3 {
        for branch in ["alt", "main"] {
            let step = format!("round {round}: checkout {branch}");
            s.git(&proj, &["checkout", "-q", branch]);
            s.settle(&step);
            s.check_git(&step, "proj");
        }
    }
    s.settle("the last empty commit");
    s.finish();
}

#[test]
fn tar_x_5000() {
    let mut s = Scenario::new("tar_x_5000");
    let src = s.scratch("tar-src");
    let mut rng = Rng(5000);
    for i in 0..5000 {
        let lines = 2 + rng.below(60) as usize;
        write(
            &src.join(format!(
                "pkg/d{:02}/s{:02}/f{i:04}.txt",
                i % 50,
                (i / 50) % 4
            )),
            text(&mut rng, lines),
        );
    }
    for i in 0..20 {
        symlink(
            format!("../d{:02}/s00/f{:04}.txt", i, i),
            src.join(format!("pkg/d{:02}/link{i}", (i + 1) % 50)),
        )
        .unwrap();
    }
    for i in 0..5 {
        fs::create_dir_all(src.join(format!("pkg/empty{i}"))).unwrap();
    }
    let archive = s.tmp.path().join("pkg.tar");
    // Old mtimes, as from a download.
    run_ok(
        Command::new("tar")
            .arg("-cf")
            .arg(&archive)
            .args(["--mtime=2020-01-02 03:04:05", "-C"])
            .arg(&src)
            .arg("pkg"),
        "tar -c",
    );
    s.start_watch();
    s.settle("initial sync");

    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&s.folder),
        "tar -x",
    );
    let files = files_under(&s.folder.join("pkg")).len();
    assert_eq!(files, 5000, "scenario: the archive holds 5,000 files");
    s.settle("tar x of 5,000 files");
    s.finish();
}

/// emacs saving `file` (backups on, first save of the session): real emacs in batch mode, or its
/// syscalls when it is not installed.
fn emacs_save(s: &Scenario, file: &Path) {
    if have("emacs") {
        run_ok(
            Command::new("emacs")
                .arg("--batch")
                .arg(file)
                .arg("--eval")
                .arg(
                    "(progn (setq make-backup-files t backup-by-copying nil \
                     backup-enable-predicate (lambda (_f) t)) \
                     (goto-char (point-max)) (insert \"x\\n\") (save-buffer))",
                )
                .env("HOME", &s.home)
                .stdin(Stdio::null()),
            "emacs --batch",
        );
        return;
    }
    eprintln!("[editors_and_tools] emacs is not installed: playing its syscalls");
    let dir = file.parent().unwrap();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    // The buffer is modified: lock symlink, then an auto-save.
    symlink("office@desk.4242:1700000000", dir.join(format!(".#{name}"))).unwrap();
    let mut content = fs::read_to_string(file).unwrap();
    content.push_str("x\n");
    write(&dir.join(format!("#{name}#")), &content);
    std::thread::sleep(Duration::from_millis(300));
    // save-buffer: the original becomes the backup, the new content a new file, the auto-save
    // goes; then the buffer is killed and the lock goes.
    fs::rename(file, dir.join(format!("{name}~"))).unwrap();
    let mut f = fs::File::create(file).unwrap();
    std::io::Write::write_all(&mut f, content.as_bytes()).unwrap();
    f.sync_all().unwrap();
    drop(f);
    fs::remove_file(dir.join(format!("#{name}#"))).unwrap();
    fs::remove_file(dir.join(format!(".#{name}"))).unwrap();
}

/// A file written and fsynced at `tmp`, then renamed over `file`.
fn replace_via(tmp: &Path, file: &Path, content: &str) {
    let mut f = fs::File::create(tmp).unwrap();
    std::io::Write::write_all(&mut f, content.as_bytes()).unwrap();
    f.sync_all().unwrap();
    drop(f);
    fs::rename(tmp, file).unwrap();
}

#[test]
fn editors_and_tools() {
    let mut s = Scenario::new("editors_and_tools");
    let f = s.folder.clone();
    let mut rng = Rng(42);
    for n in ["a.txt", "b.md", "c.rs", "d.org", "e.py"] {
        write(&f.join("notes").join(n), text(&mut rng, 30));
    }
    write(&f.join("doc/report.odt"), vec![0x50u8, 0x4b, 3, 4, 1, 2, 3]);
    write(
        &f.join("conf/settings.ini"),
        "[main]\ncolour = old\nsize = 3\n",
    );
    s.start_watch();
    s.settle("initial sync");

    // vim, three ways of writing, each with its swap file alive while it waits.
    let a = f.join("notes/a.txt");
    for bkc in ["no", "yes", "auto"] {
        s.vim_save(&a, bkc, &format!("vim backupcopy={bkc}"));
        s.settle(&format!("vim save, backupcopy={bkc}"));
    }

    emacs_save(&s, &f.join("notes/d.org"));
    s.settle("emacs save (lock symlink, auto-save, backup by rename)");

    // JetBrains "safe write".
    let c = f.join("notes/c.rs");
    let new = format!("{}// saved by the IDE\n", fs::read_to_string(&c).unwrap());
    let tmp = f.join("notes/c.rs___jb_tmp___");
    let old = f.join("notes/c.rs___jb_old___");
    write(&tmp, &new);
    fs::rename(&c, &old).unwrap();
    fs::rename(&tmp, &c).unwrap();
    fs::remove_file(&old).unwrap();
    s.settle("JetBrains safe write");

    // VS Code: in place, then its atomic save (temp beside, rename).
    let b = f.join("notes/b.md");
    let mut content = fs::read_to_string(&b).unwrap();
    content.push_str("in place\n");
    fs::write(&b, &content).unwrap();
    s.settle("VS Code save in place");
    content.push_str("atomic\n");
    replace_via(&f.join("notes/b.md.vsctmp"), &b, &content);
    s.settle("VS Code atomic save (NAME.vsctmp + rename)");

    // gedit / GLib.
    let e = f.join("notes/e.py");
    let content = format!("{}# gedit\n", fs::read_to_string(&e).unwrap());
    replace_via(&f.join("notes/.goutputstream-K3J9QZ"), &e, &content);
    s.settle("gedit save (.goutputstream-XXXXXX + rename)");

    // LibreOffice: lock file while the document is open, save through a temp file.
    let lock = f.join("doc/.~lock.report.odt#");
    write(
        &lock,
        ",office,desk,02.01.2026 10:00,file:///home/office/.config/libreoffice/4;",
    );
    std::thread::sleep(Duration::from_millis(300));
    replace_via(
        &f.join("doc/lu4242abcd.tmp"),
        &f.join("doc/report.odt"),
        "PK\u{3}\u{4} saved by LibreOffice",
    );
    std::thread::sleep(Duration::from_millis(300));
    fs::remove_file(&lock).unwrap();
    s.settle("LibreOffice save with its lock file");

    run_ok(
        Command::new("sed")
            .args(["-i", "s/colour = old/colour = new/"])
            .arg(f.join("conf/settings.ini")),
        "sed -i",
    );
    assert!(fs::read_to_string(f.join("conf/settings.ini"))
        .unwrap()
        .contains("colour = new"));
    s.settle("sed -i");

    // A source tree for rsync, cp and unzip.
    let src = s.scratch("src-tree");
    for i in 0..200 {
        let lines = 3 + rng.below(50) as usize;
        write(
            &src.join(format!("d{}/f{i}.txt", i % 10)),
            text(&mut rng, lines),
        );
    }
    symlink("d0/f0.txt", src.join("first")).unwrap();
    fs::create_dir_all(src.join("empty")).unwrap();

    if have("rsync") {
        let rsync = |delete: bool| {
            let mut c = Command::new("rsync");
            c.arg("-a");
            if delete {
                c.arg("--delete");
            }
            c.arg(format!("{}/", src.display()))
                .arg(format!("{}/", f.join("sub").display()));
            run_ok(&mut c, "rsync");
        };
        rsync(false);
        s.settle("rsync -a SRC/ FOLDER/sub/ (first copy)");
        for i in (0..200).step_by(10) {
            let p = src.join(format!("d{}/f{i}.txt", i % 10));
            append(
                &p,
                "updated for rsync, a longer line so that the size changes",
            );
        }
        for i in [1, 2, 3, 4, 5] {
            fs::remove_file(src.join(format!("d{}/f{i}.txt", i % 10))).unwrap();
        }
        rsync(true);
        s.settle("rsync -a --delete SRC/ FOLDER/sub/ (updates: .NAME.XXXXXX + rename)");
    } else {
        eprintln!("[editors_and_tools] rsync is not installed: its steps are NOT run");
    }

    run_ok(
        Command::new("cp").arg("-a").arg(&src).arg(f.join("copy")),
        "cp -a",
    );
    s.settle("cp -a SRC FOLDER/copy");

    let zip = s.tmp.path().join("src.zip");
    let make_zip = || {
        let _ = fs::remove_file(&zip);
        if have("zip") {
            run_ok(
                Command::new("zip")
                    .args(["-q", "-r", "-y"])
                    .arg(&zip)
                    .arg(".")
                    .current_dir(&src),
                "zip",
            );
        } else {
            run_ok(
                Command::new("python3")
                    .args([
                        "-c",
                        "import os, sys, zipfile\n\
                         src, out = sys.argv[1], sys.argv[2]\n\
                         with zipfile.ZipFile(out, 'w') as z:\n\
                         \x20   for d, _, fs in os.walk(src):\n\
                         \x20       for f in fs:\n\
                         \x20           p = os.path.join(d, f)\n\
                         \x20           z.write(p, os.path.relpath(p, src))\n",
                    ])
                    .arg(&src)
                    .arg(&zip),
                "python3 zipfile",
            );
        }
    };
    make_zip();
    run_ok(
        Command::new("unzip")
            .arg("-q")
            .arg(&zip)
            .arg("-d")
            .arg(f.join("unzipped")),
        "unzip",
    );
    s.settle("unzip");
    for i in (7..200).step_by(20) {
        append(
            &src.join(format!("d{}/f{i}.txt", i % 10)),
            "changed in the archive",
        );
    }
    make_zip();
    run_ok(
        Command::new("unzip")
            .arg("-o")
            .arg("-q")
            .arg(&zip)
            .arg("-d")
            .arg(f.join("unzipped")),
        "unzip -o",
    );
    s.settle("unzip -o over the previous extraction");
    s.finish();
}

/// The harness's name rules themselves (no watch): what is skipped in comparisons, what counts as
/// litter on the mirror.
#[test]
fn harness_name_rules() {
    use kit::{is_editor_temp, is_git_transient, is_tool_temp, skipped};
    for rel in [
        "proj/.git/index.lock",
        "proj/.git/refs/heads/main.lock",
        "proj/.git/gc.pid",
        "proj/.git/objects/pack/tmp_pack_AbC123",
        "proj/.git/objects/ab/tmp_obj_XyZ",
        "proj/.git/objects/.tmp-1234-pack",
        "proj/.git/objects/incoming-Zz9/pack/x.pack",
        ".git/index.lock",
    ] {
        assert!(is_git_transient(rel) && skipped(rel), "{rel}");
    }
    for rel in [
        "proj/Cargo.lock",
        "proj/.git/objects/pack/pack-1.pack",
        "proj/.git/index",
        "proj/.git/refs/heads/tmp_branch",
        "proj/src/gc.pid.rs",
    ] {
        assert!(!is_git_transient(rel) && !skipped(rel), "{rel}");
    }
    for n in [
        ".a.txt.swp",
        "a.txt~",
        ".#a.org",
        "#a.org#",
        "4913",
        "lu1234.tmp",
        ".~lock.report.odt#",
        "c.rs___jb_tmp___",
        "c.rs___jb_old___",
    ] {
        assert!(is_editor_temp(n), "{n}");
    }
    for n in ["a.txt", "#hash", "README.md", "4914"] {
        assert!(!is_editor_temp(n), "{n}");
    }
    for n in [
        ".f12.txt.Ab3dEf",
        "sedAbC123",
        ".goutputstream-K3J9QZ",
        "b.md.vsctmp",
    ] {
        assert!(is_tool_temp(n), "{n}");
    }
    // (A user's file may look like one, e.g. "sedentary": the litter check counts a tool temp
    // name only when the folder has no such file.)
    for n in [
        ".gitignore",
        "sed.rs",
        ".cargo_vcs_info.json",
        ".eslintrc.json",
    ] {
        assert!(!is_tool_temp(n), "{n}");
    }
    assert!(skipped(".briefcase/state.0") && skipped(".briefcase-folder"));
    assert!(skipped("a/.briefcase-tmp-123") && !skipped("a/briefcase.txt"));
}
