//! Case 9: a parent directory swapped for a symlink while briefcase works in it.
//!
//! The attacker can write the NAS share (or, for the local folder, runs as another process that
//! can write it) and swaps a directory `d` with a symlink to a directory outside the root,
//! atomically and over and over (`renameat2(RENAME_EXCHANGE)`), while `briefcase sync` writes,
//! removes and changes the modes of files in `d`. Checking each parent with `lstat` and then
//! handing a path string to the write is not enough: the write walks the string again and follows
//! the swapped-in symlink. These tests pass whatever the interleaving (the assertion is that
//! nothing outside was touched, never a timing); against the string-based code of 7e0e846 the
//! pull test failed in 4 runs of 4 and the push test in 3 of 4 (files overwritten and temp files
//! left in the outside directory).

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

/// What a directory holds, as a watcher would see it change: name → (inode, mode, size, mtime).
fn listing(dir: &Path) -> BTreeMap<std::ffi::OsString, (u64, u32, u64, i64)> {
    let Ok(rd) = fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    rd.flatten()
        .filter_map(|de| {
            let m = fs::symlink_metadata(de.path()).ok()?;
            Some((de.file_name(), (m.ino(), m.mode(), m.len(), m.mtime_nsec())))
        })
        .collect()
}

/// The attacker: waits until briefcase starts changing `dir` (so that its listing at the start of
/// the sync has seen nothing odd), then swaps `dir` and a symlink to `target` beside it as fast
/// as it can, until stopped; then leaves the real directory at `dir`.
struct Swapper {
    stop: Arc<AtomicBool>,
    swaps: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
    dir: PathBuf,
    link: PathBuf,
    before: BTreeMap<std::ffi::OsString, (u64, u32, u64, i64)>,
}

impl Swapper {
    fn start(dir: &Path, target: &Path) -> Swapper {
        let link = dir.with_file_name(".swap");
        std::os::unix::fs::symlink(target, &link).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let (s, n, a, b) = (stop.clone(), swaps.clone(), dir.to_path_buf(), link.clone());
        let before = listing(dir);
        let unchanged = before.clone();
        let thread = std::thread::spawn(move || {
            use rustix::fs::{renameat_with, RenameFlags, CWD};
            while !s.load(Ordering::Relaxed) && listing(&a) == unchanged {}
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
            before,
        }
    }

    /// Stops swapping; returns how many swaps were made. When briefcase changed the directory,
    /// at least one swap is made first (however late the attacker's thread ran), so the count
    /// does not depend on timing.
    fn stop(mut self) -> u64 {
        while self.swaps.load(Ordering::Relaxed) == 0
            && self.thread.as_ref().is_some_and(|t| !t.is_finished())
            && listing(&self.dir) != self.before
        {
            std::thread::yield_now();
        }
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

/// Names under `out` that differ from `before` (the assertion message).
fn touched(out: &Path, before: &BTreeMap<String, (Vec<u8>, u32)>) -> Vec<String> {
    let now = snapshot(out);
    let mut names: Vec<String> = before
        .iter()
        .filter(|(k, v)| now.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    names.extend(now.keys().filter(|k| !before.contains_key(*k)).cloned());
    names
}

impl Drop for Swapper {
    fn drop(&mut self) {
        // A failed assertion: stop the thread; the temp dirs go with the test.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `briefcase sync FOLDER` while the attacker swaps `dir` (in the folder or on the mirror) with a
/// symlink to `out`; asserts nothing under `out` changed from `before`. Exit codes vary with
/// what the attacker made the sides show; only the outside counts. Returns the swaps made.
fn attacked_sync(
    m: &Machine,
    folder: &str,
    dir: &Path,
    out: &Path,
    before: &BTreeMap<String, (Vec<u8>, u32)>,
    round: usize,
) -> u64 {
    let swapper = Swapper::start(dir, out);
    let (code, text) = m.run(&["sync", folder]);
    let swaps = swapper.stop();
    if std::env::var_os("RACE_DEBUG").is_some() {
        eprintln!("round {round}: exit {code}\n{text}");
    }
    let bad = touched(out, before);
    assert!(
        bad.is_empty(),
        "round {round}: touched outside the root: {bad:?}\nsync exited {code}:\n{text}"
    );
    swaps
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
    let mut swaps = 0;
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
        swaps += attacked_sync(&m, w, &nas.join("d"), &out, &before, round);
    }
    assert!(swaps > 0, "the attacker never swapped");
    // Once the attacker stops, everything settles.
    m.ok(&["sync", w]);
    m.ok(&["sync", w]);
    assert!(touched(&out, &before).is_empty());
    for i in 0..FILES {
        let on_nas = nas.join("d").join(name(i));
        assert_eq!(on_nas.exists(), i % 2 == 1, "{}", on_nas.display());
    }
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
    let mut swaps = 0;
    for round in 1..=3 {
        swaps += attacked_sync(&m, w, &work.join("d"), &out, &before, round);
    }
    assert!(swaps > 0, "the attacker never swapped");
}
