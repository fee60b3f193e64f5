//! Case 9: a parent directory swapped for a symlink while briefcase works in it.
//!
//! The attacker can write the NAS share (or, for the local folder, runs as another process that
//! can write it) and swaps a directory `d` with a symlink to a directory outside the root,
//! atomically and over and over (`renameat2(RENAME_EXCHANGE)`), while `briefcase sync` writes,
//! removes and changes the modes of files in `d`. Checking each parent with `lstat` and then
//! handing a path string to the write is not enough: the write walks the string again and follows
//! the swapped-in symlink. These tests pass whatever the interleaving (the assertion is that
//! nothing outside was touched, never a timing); against the string-based code they failed in
//! every run on this machine.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::support::{write, Machine};

/// Files in the attacked directory.
const FILES: usize = 120;

fn name(i: usize) -> String {
    format!("f{i:03}.txt")
}

/// What the outside directory holds: name → (content, mode).
fn snapshot(dir: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
    fs::read_dir(dir)
        .unwrap()
        .map(|de| {
            let de = de.unwrap();
            let m = fs::symlink_metadata(de.path()).unwrap();
            let content = if m.is_file() {
                fs::read(de.path()).unwrap()
            } else {
                Vec::new()
            };
            (
                de.file_name().to_string_lossy().into_owned(),
                (content, m.mode()),
            )
        })
        .collect()
}

/// A directory outside every root, holding a canary under each name briefcase writes in `d`.
fn outside(d: &Path) -> PathBuf {
    let out = d.join("outside");
    fs::create_dir(&out).unwrap();
    for i in 0..FILES {
        let p = out.join(name(i));
        fs::write(&p, "canary: must never be touched\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    }
    out
}

/// Swaps `dir` and a symlink to `target` beside it, as fast as it can, until dropped; then
/// leaves the real directory at `dir`.
struct Swapper {
    stop: Arc<AtomicBool>,
    swaps: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
    dir: PathBuf,
    link: PathBuf,
}

impl Swapper {
    fn start(dir: &Path, target: &Path) -> Swapper {
        let link = dir.with_file_name(".swap");
        std::os::unix::fs::symlink(target, &link).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let (s, n, a, b) = (stop.clone(), swaps.clone(), dir.to_path_buf(), link.clone());
        let thread = std::thread::spawn(move || {
            use rustix::fs::{renameat_with, RenameFlags, CWD};
            while !s.load(Ordering::Relaxed) {
                if renameat_with(CWD, &a, CWD, &b, RenameFlags::EXCHANGE).is_ok() {
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Swapper {
            stop,
            swaps,
            thread: Some(thread),
            dir: dir.to_path_buf(),
            link,
        }
    }

    fn stop(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        if fs::symlink_metadata(&self.dir)
            .unwrap()
            .file_type()
            .is_symlink()
        {
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &self.dir,
                rustix::fs::CWD,
                &self.link,
                rustix::fs::RenameFlags::EXCHANGE,
            )
            .unwrap();
        }
        fs::remove_file(&self.link).unwrap();
        self.swaps.load(Ordering::Relaxed)
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Office with `work/d` holding [`FILES`] files, synced to the dir mirror `nas`.
fn office(d: &Path) -> (Machine, PathBuf, PathBuf) {
    let m = Machine::new("office");
    let (work, nas) = (d.join("work"), d.join("nas"));
    for i in 0..FILES {
        write(&work.join("d").join(name(i)), &format!("v0 {i}\n"));
    }
    write(&work.join("other.txt"), "x\n");
    let (w, n) = (work.to_str().unwrap(), nas.to_str().unwrap());
    m.ok(&["init", w]);
    m.ok(&["mirror", "add", w, n, "--name", "nas"]);
    m.ok(&["sync", w]);
    assert!(nas.join("d").join(name(0)).is_file());
    (m, work, nas)
}

/// Pushes (writes through a temp file and rename), mode changes and removals on the NAS while
/// its `d` is swapped with a symlink to a directory outside: nothing outside is written,
/// replaced, removed or re-moded, and no temp file lands there.
#[test]
fn a_mirror_parent_swapped_for_a_symlink_is_never_followed() {
    let d = tempfile::tempdir().unwrap();
    let out = outside(d.path());
    let before = snapshot(&out);
    let (m, work, nas) = office(d.path());
    let w = work.to_str().unwrap();
    let mut swapper = Swapper::start(&nas.join("d"), &out);
    for round in 1..=3 {
        for i in 0..FILES {
            let p = work.join("d").join(name(i));
            match round {
                1 => fs::write(&p, format!("v1 {i}\n")).unwrap(),
                2 => fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap(),
                _ if i % 2 == 0 => fs::remove_file(&p).unwrap(),
                _ => {}
            }
        }
        // Exit codes vary with what the attacker made the mirror show; only the outside counts.
        let _ = m.run(&["sync", w]);
        assert_eq!(
            snapshot(&out),
            before,
            "round {round}: touched outside the mirror"
        );
    }
    let swaps = swapper.stop();
    assert!(swaps > 0, "the attacker never swapped");
    let _ = m.run(&["sync", w]);
    assert_eq!(snapshot(&out), before, "touched outside the mirror");
}

/// Pulls (temp file, rename, mode) into the local folder while its `d` is swapped with a
/// symlink to a directory outside: nothing outside is written, replaced or re-moded.
#[test]
fn a_local_parent_swapped_for_a_symlink_is_never_followed() {
    let d = tempfile::tempdir().unwrap();
    let out = outside(d.path());
    let before = snapshot(&out);
    let (m, work, nas) = office(d.path());
    let w = work.to_str().unwrap();
    // Another machine's edits, as the NAS shows them: new content, new modes, removals.
    let home = Machine::new("home");
    let copy = d.path().join("home-work");
    home.ok(&["clone", nas.to_str().unwrap(), copy.to_str().unwrap()]);
    for i in 0..FILES {
        let p = copy.join("d").join(name(i));
        match i % 3 {
            0 => fs::write(&p, format!("home {i}\n")).unwrap(),
            1 => fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap(),
            _ => fs::remove_file(&p).unwrap(),
        }
    }
    home.ok(&["sync", copy.to_str().unwrap()]);
    let mut swapper = Swapper::start(&work.join("d"), &out);
    for round in 1..=3 {
        let _ = m.run(&["sync", w]);
        assert_eq!(
            snapshot(&out),
            before,
            "round {round}: touched outside the folder"
        );
    }
    let swaps = swapper.stop();
    assert!(swaps > 0, "the attacker never swapped");
    let _ = m.run(&["sync", w]);
    assert_eq!(snapshot(&out), before, "touched outside the folder");
}
