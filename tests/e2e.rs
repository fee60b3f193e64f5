//! End-to-end stories with the real binary, two "machines" (separate XDG dirs) and real
//! directories. Each test names the DESIGN.md invariant it proves.
//!
//! - `two_machines_share_a_dir_mirror`: office → NAS → home and back; concurrent edits keep both (inv. 5).
//! - `absent_root_is_offline_not_deletion`: missing mirror root, missing marker, missing local marker (inv. 4).
//! - `mass_delete_stops_and_asks`: more than half deleted → stop until `--allow-mass-delete` (inv. 7).
//! - `malicious_manifest_is_refused`: `../` paths in a mirror's state, garbage state (inv. 6).
//! - `planted_symlink_is_not_followed`: a mirror dir swapped for a symlink to outside (inv. 6).
//! - `leftover_local_temp_files_are_removed_by_the_next_sync`: what a killed pull left (inv. 2).
//! - `kill_9_during_sync_converges`: SIGKILL while a large sync writes the mirror, 6 times, then
//!   two syncs converge without temp files or conflict copies (inv. 2, 3; see also `crash.rs`).

mod support;

use std::fs;
use std::time::Duration;

use support::{temp_files, tree, write, Machine};

#[test]
fn two_machines_share_a_dir_mirror() {
    let office = Machine::new("office");
    let home = Machine::new("home");
    let d = tempfile::tempdir().unwrap();
    let (work, nas, home_work) = (
        d.path().join("work"),
        d.path().join("nas"),
        d.path().join("home-work"),
    );
    write(&work.join("report.txt"), "v1");
    write(&work.join("src/main.rs"), "fn main() {}");
    std::os::unix::fs::symlink("report.txt", work.join("latest")).unwrap();
    let (w, n, h) = (
        work.to_str().unwrap(),
        nas.to_str().unwrap(),
        home_work.to_str().unwrap(),
    );

    office.ok(&["init", w]);
    office.ok(&["mirror", "add", w, n, "--name", "nas"]);
    office.ok(&["sync", w]);
    home.ok(&["mirror", "add", h, n, "--name", "nas"]);
    home.ok(&["sync", h]);
    assert_eq!(tree(&work), tree(&home_work));

    // Both edit the same file; home also renames and deletes.
    write(&home_work.join("report.txt"), "home's version");
    fs::rename(home_work.join("src/main.rs"), home_work.join("src/lib.rs")).unwrap();
    home.ok(&["sync", h]);
    write(&work.join("report.txt"), "office's version");
    let out = office.ok(&["sync", w]);
    assert!(out.contains("conflict"), "{out}");
    office.ok(&["sync", w]);
    home.ok(&["sync", h]);
    let (a, b) = (tree(&work), tree(&home_work));
    assert_eq!(a, b);
    let contents: Vec<&String> = a.values().collect();
    assert!(contents.contains(&&"home's version".to_string()), "{a:?}");
    assert!(contents.contains(&&"office's version".to_string()), "{a:?}");
    assert!(
        a.contains_key("src/lib.rs") && !a.contains_key("src/main.rs"),
        "{a:?}"
    );
    let (code, list) = office.run(&["conflicts", w]);
    assert_eq!(code, 4, "{list}");
    assert!(list.contains("report.conflict-"), "{list}");

    // Settle it everywhere.
    office.ok(&["resolve", "--all", w, "--keep", "local"]);
    office.ok(&["sync", w]);
    home.ok(&["sync", h]);
    assert_eq!(tree(&work), tree(&home_work));
    assert!(!tree(&home_work).keys().any(|k| k.contains(".conflict-")));
    assert_eq!(tree(&work), tree(&nas));
}

#[test]
fn absent_root_is_offline_not_deletion() {
    let m = Machine::new("office");
    let d = tempfile::tempdir().unwrap();
    let (work, nas) = (d.path().join("work"), d.path().join("nas"));
    for i in 0..20 {
        write(&work.join(format!("f{i}")), &format!("content {i}"));
    }
    let (w, n) = (work.to_str().unwrap(), nas.to_str().unwrap());
    m.ok(&["init", w]);
    m.ok(&["mirror", "add", w, n, "--name", "nas"]);
    m.ok(&["sync", w]);
    let before = tree(&work);

    // The share is not mounted: the root is gone.
    fs::rename(&nas, d.path().join("nas.unmounted")).unwrap();
    let (code, out) = m.run(&["sync", w]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("offline"), "{out}");
    assert_eq!(tree(&work), before);

    // The mount point exists but is empty (marker missing).
    fs::create_dir(&nas).unwrap();
    let (code, out) = m.run(&["sync", w]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("marker"), "{out}");
    assert_eq!(tree(&work), before);
    assert!(
        tree(&nas).is_empty(),
        "nothing may be written into an unmounted share's mount point"
    );
    fs::remove_dir(&nas).unwrap();
    fs::rename(d.path().join("nas.unmounted"), &nas).unwrap();

    // The local folder's disk is gone (marker missing): nothing is deleted on the mirror.
    fs::rename(&work, d.path().join("work.unmounted")).unwrap();
    fs::create_dir(&work).unwrap();
    let (code, out) = m.run(&["sync", w]);
    assert_ne!(code, 0, "{out}");
    assert_eq!(tree(&nas), before);
    let st = m.ok(&[
        "status",
        "--json",
        d.path().join("work.unmounted").to_str().unwrap(),
    ]);
    assert!(st.contains("\"files\": 20"), "{st}");
}

#[test]
fn mass_delete_stops_and_asks() {
    let m = Machine::new("office");
    let d = tempfile::tempdir().unwrap();
    let (work, nas) = (d.path().join("work"), d.path().join("nas"));
    for i in 0..20 {
        write(&work.join(format!("f{i}")), "x");
    }
    let (w, n) = (work.to_str().unwrap(), nas.to_str().unwrap());
    m.ok(&["init", w]);
    m.ok(&["mirror", "add", w, n, "--name", "nas"]);
    m.ok(&["sync", w]);
    for i in 0..15 {
        fs::remove_file(work.join(format!("f{i}"))).unwrap();
    }
    let (code, out) = m.run(&["sync", w]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("--allow-mass-delete") && out.contains("15 of 20"),
        "{out}"
    );
    assert_eq!(tree(&nas).len(), 20, "nothing deleted on the mirror");
    let st = m.ok(&["status", w]);
    assert!(st.contains("PAUSED"), "{st}");
    m.ok(&["sync", w, "--allow-mass-delete"]);
    assert_eq!(tree(&nas).len(), 5);
}

fn sealed_state(nas: &std::path::Path) -> std::path::PathBuf {
    // The newest generation slot.
    let a = nas.join(".briefcase/state.0");
    let b = nas.join(".briefcase/state.1");
    let gen = |p: &std::path::Path| {
        fs::read(p)
            .ok()
            .and_then(|x| briefcase_mirror::state::open(&x).ok().map(|(g, _)| g))
            .unwrap_or(0)
    };
    if gen(&a) >= gen(&b) {
        a
    } else {
        b
    }
}

#[test]
fn malicious_manifest_is_refused() {
    let m = Machine::new("office");
    let d = tempfile::tempdir().unwrap();
    let (work, nas) = (d.path().join("work"), d.path().join("nas"));
    write(&work.join("zz/x"), "innocent");
    let (w, n) = (work.to_str().unwrap(), nas.to_str().unwrap());
    m.ok(&["init", w]);
    m.ok(&["mirror", "add", w, n, "--name", "nas"]);
    m.ok(&["sync", w]);

    // Rewrite every "zz/x" in the manifest's parts as "../x", re-seal them and the root with
    // valid checksums, as an attacker with write access to the NAS could.
    use briefcase_mirror::state;
    let slot = sealed_state(&nas);
    let root_bytes = fs::read(&slot).unwrap();
    let (_, payload) = state::open(&root_bytes).unwrap();
    let mut root: state::Root = postcard::from_bytes(payload).unwrap();
    let mut hits = 0;
    for part in &mut root.parts {
        let file = nas.join(".briefcase").join(&part.name);
        let bytes = fs::read(&file).unwrap();
        let mut evil = state::open(&bytes).unwrap().1.to_vec();
        let needle = b"zz/x";
        for i in 0..=evil.len().saturating_sub(needle.len()) {
            if &evil[i..i + needle.len()] == needle {
                evil[i..i + needle.len()].copy_from_slice(b"../x");
                hits += 1;
            }
        }
        let sealed = state::reseal(&bytes, &evil).unwrap();
        part.len = sealed.len() as u64;
        part.hash = *blake3::hash(&sealed).as_bytes();
        fs::write(&file, sealed).unwrap();
    }
    assert!(hits > 0);
    let root_sealed = state::reseal(&root_bytes, &postcard::to_stdvec(&root).unwrap()).unwrap();
    for s in ["state.0", "state.1"] {
        fs::write(nas.join(".briefcase").join(s), &root_sealed).unwrap();
    }
    let (code, out) = m.run(&["sync", w]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("../x") && out.contains("nas"),
        "error must name the path and the mirror: {out}"
    );
    assert!(
        !d.path().join("x").exists(),
        "nothing written outside the root"
    );
    assert_eq!(fs::read_to_string(work.join("zz/x")).unwrap(), "innocent");

    // Garbage state.
    for s in ["state.0", "state.1"] {
        fs::write(nas.join(".briefcase").join(s), b"\x00garbage\xff").unwrap();
    }
    let (code, out) = m.run(&["sync", w]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("damaged"), "{out}");
    assert_eq!(fs::read_to_string(work.join("zz/x")).unwrap(), "innocent");
}

#[test]
fn planted_symlink_is_not_followed() {
    let m = Machine::new("office");
    let d = tempfile::tempdir().unwrap();
    let (work, nas, outside) = (
        d.path().join("work"),
        d.path().join("nas"),
        d.path().join("outside"),
    );
    fs::create_dir(&outside).unwrap();
    write(&work.join("sub/b"), "mine");
    let (w, n) = (work.to_str().unwrap(), nas.to_str().unwrap());
    m.ok(&["init", w]);
    m.ok(&["mirror", "add", w, n, "--name", "nas"]);
    m.ok(&["sync", w]);
    // Someone swaps the mirror's directory for a symlink pointing outside it.
    fs::remove_dir_all(nas.join("sub")).unwrap();
    std::os::unix::fs::symlink(&outside, nas.join("sub")).unwrap();
    write(&work.join("sub/b"), "new secret content");
    let _ = m.run(&["sync", w]);
    let _ = m.run(&["sync", w]);
    assert!(
        fs::read_dir(&outside).unwrap().next().is_none(),
        "wrote through a planted symlink"
    );
    // The local side never follows a pulled symlink either.
    assert!(work.join("sub").exists());
    let kept: Vec<String> = tree(&work).into_values().collect();
    assert!(
        kept.contains(&"new secret content".to_string()),
        "the local edit is kept: {kept:?}"
    );
}

/// A `briefcase sync` killed while it pulled leaves `.briefcase-tmp-*` files in the folder: the
/// next sync removes them (invariant 2), found by its rescan of the folder, and sends none.
#[test]
fn leftover_local_temp_files_are_removed_by_the_next_sync() {
    let m = Machine::new("office");
    let d = tempfile::tempdir().unwrap();
    let (work, nas) = (d.path().join("work"), d.path().join("nas"));
    write(&work.join("sub/f"), "data");
    let (w, n) = (work.to_str().unwrap(), nas.to_str().unwrap());
    m.ok(&["init", w]);
    m.ok(&["mirror", "add", w, n, "--name", "nas"]);
    write(
        &work.join("sub/.briefcase-tmp-0123456789abcdef"),
        "half a pull",
    );
    write(&work.join(".briefcase-tmp-dir/x"), "");
    m.ok(&["sync", w]);
    assert_eq!(temp_files(&work), Vec::<String>::new());
    assert_eq!(temp_files(&nas), Vec::<String>::new());
    assert_eq!(tree(&nas).get("sub/f").map(String::as_str), Some("data"));
}

/// SIGKILL of `briefcase sync` at varied points of the push phase of a 400-file tree, 6 times;
/// then two syncs must leave both trees identical (invariant 3), with no `.briefcase-tmp-*` on
/// either side (invariant 2), no conflict copy (there is one writer: a conflict could only come
/// from taking this machine's own interrupted writes for edits made on the mirror), and the
/// newest content of every file.
///
/// The kill points do not depend on timing: a watch on the mirror counts the steps of the writes
/// the sync makes there (a temp file created, a temp file renamed into place; files and state
/// alike) and kills it at the `k`-th, `k` drawn from a seeded xorshift (`BRIEFCASE_KILL9_SEED` to
/// try others). So every round dies in the middle of writing the mirror: with temp files not yet
/// renamed, or with files renamed into place that no stored state records yet.
#[test]
fn kill_9_during_sync_converges() {
    use notify::event::{ModifyKind, RenameMode};
    use notify::{EventKind, RecursiveMode, Watcher};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    let m = Machine::new("office");
    let d = tempfile::tempdir().unwrap();
    let (work, nas) = (d.path().join("work"), d.path().join("nas"));
    let mut newest = std::collections::BTreeMap::new();
    for i in 0..400 {
        let (p, c) = (format!("d{}/f{i}", i % 10), format!("{i}").repeat(2000));
        write(&work.join(&p), &c);
        newest.insert(p, c);
    }
    let (w, n) = (work.to_str().unwrap(), nas.to_str().unwrap());
    m.ok(&["init", w]);
    m.ok(&["mirror", "add", w, n, "--name", "nas"]);
    let mut seed: u64 = std::env::var("BRIEFCASE_KILL9_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    let seed0 = seed;
    let mut kills = 0;
    for round in 0..6 {
        // Change a slice of the tree (overlapping the previous round's), then kill a sync in the
        // middle of writing the mirror.
        for i in (round * 50)..(round * 50 + 60) {
            let (p, c) = (
                format!("d{}/f{i}", i % 10),
                format!("round {round} file {i}"),
            );
            write(&work.join(&p), &c);
            newest.insert(p, c);
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let kill_at = 1 + (seed % 120) as usize;
        let child = Arc::new(Mutex::new(
            m.cmd()
                .args(["sync", w])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        ));
        let (seen, killer) = (Arc::new(AtomicUsize::new(0)), child.clone());
        let counter = seen.clone();
        let mut watch = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            let Ok(ev) = ev else { return };
            let temp = ev.paths.iter().any(|p| {
                p.file_name()
                    .is_some_and(|f| f.to_string_lossy().starts_with(".briefcase-tmp-"))
            });
            // A temp file made (a write begins) or renamed into place (a write ends).
            let step = matches!(
                ev.kind,
                EventKind::Create(_)
                    | EventKind::Modify(ModifyKind::Name(RenameMode::From | RenameMode::Any))
            );
            if step && temp && counter.fetch_add(1, Ordering::SeqCst) + 1 == kill_at {
                let _ = killer.lock().unwrap().kill(); // SIGKILL
            }
        })
        .unwrap();
        watch.watch(&nas, RecursiveMode::Recursive).unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(s) = child.lock().unwrap().try_wait().unwrap() {
                break s;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "sync of round {round} hangs"
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        drop(watch);
        if status.code().is_none() {
            kills += 1;
        }
    }
    assert!(kills >= 3, "only {kills} of 6 syncs were killed");
    let s1 = m.ok(&["sync", w]);
    let s2 = m.ok(&["sync", w]);
    let (a, b) = (tree(&work), tree(&nas));
    let ctx = format!("seed {seed0}, {kills} kills\nsync 1: {s1}\nsync 2: {s2}");
    assert!(
        temp_files(&work).is_empty() && temp_files(&nas).is_empty(),
        "temp files left: {:?} {:?}\n{ctx}",
        temp_files(&work),
        temp_files(&nas)
    );
    let copies: Vec<&String> = a.keys().filter(|k| k.contains(".conflict-")).collect();
    assert!(
        copies.is_empty(),
        "conflict copies with a single writer: {copies:?}\n{ctx}"
    );
    for (p, c) in &newest {
        assert_eq!(a.get(p), Some(c), "local {p}\n{ctx}");
        assert_eq!(b.get(p), Some(c), "mirror {p}\n{ctx}");
    }
    assert_eq!(a, b, "{ctx}");
    let (code, out) = m.run(&["sync", w]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("in sync"), "{out}");
}
