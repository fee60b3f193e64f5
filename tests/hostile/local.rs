//! What a writable NAS, or another user of this machine, can try (issue 9, cases 3–7). Each
//! attacker is a few lines against the real binary or the project's crates.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use briefcase_dir::DirMirror;
use briefcase_mirror::{state, Mirror, Osn, RelPath};

use super::support::{tree, write, Machine};

/// Office with `work` (a few files) synced to the `dir` mirror `nas` (named "nas").
fn office(d: &Path) -> (Machine, std::path::PathBuf, std::path::PathBuf) {
    let m = Machine::new("office");
    let (work, nas) = (d.join("work"), d.join("nas"));
    write(&work.join("notes.txt"), "mine\n");
    write(&work.join("bin/tool"), "#!/bin/sh\necho hi\n");
    write(&work.join("shared/readme"), "r\n");
    let (w, n) = (work.to_str().unwrap(), nas.to_str().unwrap());
    m.ok(&["init", w]);
    m.ok(&["mirror", "add", w, n, "--name", "nas"]);
    m.ok(&["sync", w]);
    (m, work, nas)
}

/// Runs briefcase with a deadline (a hang is a failure, not a stuck test run).
fn run_bounded(m: &Machine, args: &[&str]) -> (i32, String) {
    let mut child = m
        .cmd()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return (st.code().unwrap_or(-1), text);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("briefcase {args:?} hung for 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn umask() -> u32 {
    fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
        .unwrap()
}

/// Case 3: a forged next generation of the NAS state whose knowledge vector claims 2^63−1 for
/// every replica is refused (naming folder, mirror and what it claims); nothing is applied; a
/// clean second mirror keeps replicating.
#[test]
fn forged_knowledge_vector_is_refused() {
    forged_knowledge(false);
    forged_knowledge(true);
}

/// Case 3, variant: a state whose own OSN counter is at 2^64−1 (its next change would overflow)
/// is refused before anything is applied.
#[test]
fn forged_osn_counter_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (m, work, nas) = office(d.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mirror = DirMirror::new(nas.clone());
        let mut l = state::load(&mirror).await.unwrap().unwrap();
        l.state.osn = Osn(u64::MAX);
        state::store(&mirror as &dyn Mirror, &l.stored, &mut l.state)
            .await
            .unwrap();
    });
    write(&nas.join("planted.txt"), "from the NAS\n");
    let (code, out) = run_bounded(&m, &["sync", work.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("change counter"), "{out}");
    assert!(!work.join("planted.txt").exists(), "nothing applied");
}

fn forged_knowledge(only_others: bool) {
    let d = tempfile::tempdir().unwrap();
    let (m, work, nas) = office(d.path());
    let w = work.to_str().unwrap();
    // The attacker writes a "newer" state: everything integrated up to 2^63-1.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mirror = DirMirror::new(nas.clone());
        let mut l = state::load(&mirror).await.unwrap().unwrap();
        let mut who: Vec<_> = l.state.replica_names.keys().copied().collect();
        who.push(l.state.replica_id);
        if only_others {
            // Not this machine: the mirror's own replica only (clamping alone would not do).
            who = vec![l.state.replica_id];
        }
        for r in who {
            l.state.knowledge.raise(r, Osn(i64::MAX as u64));
        }
        state::store(&mirror as &dyn Mirror, &l.stored, &mut l.state)
            .await
            .unwrap();
    });
    let before = tree(&work);
    write(&work.join("new.txt"), "after the attack\n");
    let (code, out) = run_bounded(&m, &["sync", w, "--mirror", "nas"]);
    assert_ne!(code, 0, "{out}");
    for part in [w, "nas", "knowledge vector", "cannot be right"] {
        assert!(out.contains(part), "{part:?} not in: {out}");
    }
    let mut now = tree(&work);
    now.remove("new.txt");
    assert_eq!(now, before, "nothing applied locally");
    // The poison did not spread: a clean mirror still gets the new file.
    let nas2 = d.path().join("nas2");
    m.ok(&["mirror", "add", w, nas2.to_str().unwrap(), "--name", "nas2"]);
    m.ok(&["sync", w, "--mirror", "nas2"]);
    assert_eq!(
        fs::read_to_string(nas2.join("new.txt")).unwrap(),
        "after the attack\n"
    );
}

/// Case 4: setuid, setgid, sticky and world-writable modes made on the NAS are not applied
/// here: a pulled file or directory keeps only what this machine's umask allows.
#[test]
fn setuid_and_world_writable_modes_from_a_mirror_are_not_applied() {
    let d = tempfile::tempdir().unwrap();
    let (m, work, nas) = office(d.path());
    let w = work.to_str().unwrap();
    // Changed behind briefcase's back (content and mode), and new files and a directory.
    write(&nas.join("bin/tool"), "#!/bin/sh\necho owned\n");
    fs::set_permissions(nas.join("bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    write(&nas.join("notes.txt"), "changed there\n");
    fs::set_permissions(nas.join("notes.txt"), fs::Permissions::from_mode(0o2777)).unwrap();
    write(&nas.join("evil/planted"), "x\n");
    fs::set_permissions(nas.join("evil/planted"), fs::Permissions::from_mode(0o6777)).unwrap();
    fs::set_permissions(nas.join("evil"), fs::Permissions::from_mode(0o1777)).unwrap();
    m.ok(&["sync", w]);
    let forbidden = 0o7000 | (umask() & 0o022);
    for p in ["bin/tool", "notes.txt", "evil", "evil/planted"] {
        let mode = fs::symlink_metadata(work.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode & forbidden, 0, "{p} has mode {mode:o}");
    }
    // The executable bit is an ordinary bit: kept.
    let tool = fs::symlink_metadata(work.join("bin/tool")).unwrap().mode();
    assert_eq!(tool & 0o111, 0o111, "{tool:o}");
    // Nothing churns: the next sync has nothing to do here.
    let again = m.ok(&["sync", w, "--json"]);
    assert!(again.contains("\"pulled\": 0"), "{again}");
}

/// Case 5: a file fetched from a mirror is private (0600) while it is written and read back; it
/// gets its own mode only at the end, just before it is renamed into place.
#[test]
fn fetched_temp_files_are_private() {
    let d = tempfile::tempdir().unwrap();
    let nas = d.path().join("nas");
    write(&nas.join("secret"), "s3cret\n");
    fs::set_permissions(nas.join("secret"), fs::Permissions::from_mode(0o644)).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dest = d.path().join(".briefcase-tmp-x");
    rt.block_on(async {
        let m = DirMirror::storage(nas.clone());
        m.get(&RelPath::try_from("secret").unwrap(), &dest)
            .await
            .unwrap();
    });
    let mode = fs::metadata(&dest).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
}

/// Case 6: the journal (every file name of the folder) and the config are this user's only:
/// directories 0700, files 0600, also when an older version made them world-readable.
#[test]
fn journal_and_config_are_private() {
    let d = tempfile::tempdir().unwrap();
    let (m, work, _nas) = office(d.path());
    let check = |m: &Machine| {
        let data = m.data_dir();
        let config = m.home.path().join("config/briefcase");
        for dir in [data.clone(), data.join("replicas"), config.clone()] {
            let mode = fs::metadata(&dir).unwrap().mode() & 0o777;
            assert_eq!(mode, 0o700, "{} is {mode:o}", dir.display());
        }
        for f in fs::read_dir(data.join("replicas")).unwrap() {
            let f = f.unwrap().path();
            let mode = fs::metadata(&f).unwrap().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} is {mode:o}", f.display());
        }
        let mode = fs::metadata(config.join("config.toml")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "config.toml is {mode:o}");
    };
    check(&m);
    // Made readable by an older version: tightened at the next run.
    let data = m.data_dir();
    fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(data.join("replicas"), fs::Permissions::from_mode(0o755)).unwrap();
    for f in fs::read_dir(data.join("replicas")).unwrap() {
        fs::set_permissions(f.unwrap().path(), fs::Permissions::from_mode(0o644)).unwrap();
    }
    m.ok(&["sync", work.to_str().unwrap()]);
    check(&m);
}

/// Case 7: a FIFO as the NAS's marker or state file, or a symlink from the marker to
/// `/dev/zero`, neither hangs the sync nor eats memory: refused at once, naming the file.
#[test]
fn fifo_and_dev_zero_as_state_files_are_refused() {
    for (file, how) in [
        ("folder-id", "fifo"),
        ("state.0", "fifo"),
        ("folder-id", "dev-zero"),
    ] {
        let d = tempfile::tempdir().unwrap();
        let (m, work, nas) = office(d.path());
        let w = work.to_str().unwrap();
        let target = nas.join(".briefcase").join(file);
        let _ = fs::remove_file(&target);
        match how {
            "fifo" => {
                let ok = Command::new("mkfifo").arg(&target).status().unwrap();
                assert!(ok.success());
            }
            _ => std::os::unix::fs::symlink("/dev/zero", &target).unwrap(),
        }
        write(&work.join("new.txt"), "x\n");
        let (code, out) = run_bounded(&m, &["sync", w]);
        assert_ne!(code, 0, "{file} {how}: {out}");
        assert!(
            out.contains(&format!(".briefcase/{file}")) && out.contains("nas"),
            "{file} {how}: {out}"
        );
        assert!(
            out.contains("FIFO") || out.contains("symlink"),
            "{file} {how}: {out}"
        );
    }
}
