//! The encrypted stick, end to end with the real binary and a real FAT32 image (mounted with
//! `fusefat`; needs root, dosfstools and fusefat, which `.ci/run` installs): the office/home story
//! of DESIGN.md, "pop the stick into the home desktop, continue working, pop it into the office
//! computer next morning".
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use briefcase_mirror::usb::{UsbFs, UsbImage};
use support::{tree, write, Machine};

/// A FAT32 stick, or `None` (printed why) where images cannot be mounted.
fn fat_stick(size_mib: u64) -> Option<UsbImage> {
    stick_of(UsbFs::Vfat, size_mib)
}

/// A plugged stick with file system `fs`, or `None` (printed why).
fn stick_of(fs: UsbFs, size_mib: u64) -> Option<UsbImage> {
    if let Some(why) = UsbImage::missing_prerequisite(fs) {
        eprintln!("skipped: {why}");
        return None;
    }
    let s = UsbImage::make(size_mib, fs).unwrap();
    s.plug().unwrap();
    Some(s)
}

/// Copies the real files of `from` (this project's sources: text of every size) into `to`.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for de in fs::read_dir(from).unwrap().flatten() {
        let p = de.path();
        let t = to.join(de.file_name());
        if p.is_dir() {
            copy_tree(&p, &t);
        } else {
            fs::copy(&p, &t).unwrap();
        }
    }
}

/// Files with a given content, by path, without conflict copies.
fn originals(t: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    t.iter()
        .filter(|(p, _)| !p.contains(".conflict-"))
        .map(|(p, c)| (p.clone(), c.clone()))
        .collect()
}

#[test]
fn office_and_home_through_a_fat_stick() {
    office_and_home(UsbFs::Vfat);
}

#[test]
fn office_and_home_through_an_exfat_stick() {
    office_and_home(UsbFs::Exfat);
}

fn office_and_home(fs_kind: UsbFs) {
    let Some(stick) = stick_of(fs_kind, 96) else {
        return;
    };
    let mnt = stick.mnt.to_str().unwrap().to_string();
    let target = format!("stick:{mnt}");
    let office = Machine::new("office");
    let home = Machine::new("home");
    let d = tempfile::tempdir().unwrap();
    let (ow, hw) = (d.path().join("office-work"), d.path().join("home-work"));
    let (o, h) = (ow.to_str().unwrap(), hw.to_str().unwrap());

    // The office's real tree: this project's sources and docs, plus a binary spanning many
    // chunks, plus files whose names and contents must never appear on the stick in plain.
    let project = Path::new(env!("CARGO_MANIFEST_DIR"));
    copy_tree(&project.join("src"), &ow.join("src"));
    copy_tree(&project.join("docs"), &ow.join("docs"));
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(ow.join("data.bin"), &big).unwrap();
    write(
        &ow.join("plans/secret-merger-plan.txt"),
        "ACME-TAKEOVER-CODENAME-BLUEBIRD\n",
    );
    write(&ow.join("shared.txt"), "first line\n");
    write(&ow.join("notes/todo.txt"), "buy milk\n");
    write(&ow.join("old/gone.txt"), "to be deleted\n");

    // Home's key goes to the office; the office sets up the stick for both.
    let home_key = home.stdout(&["id"]).trim().to_string();
    assert!(home_key.starts_with("age1"), "{home_key}");
    office.ok(&["init", o]);
    office.ok(&[
        "mirror",
        "add",
        o,
        &target,
        "--recipient",
        &format!("home={home_key}"),
    ]);
    office.ok(&["sync", o]);
    stick.unplug().unwrap();

    // At home: plug in, clone.
    stick.plug().unwrap();
    home.ok(&["clone", &target, h]);
    assert_eq!(tree(&hw), tree(&ow), "home's clone equals the office tree");
    stick.unplug().unwrap();

    // Evening at home: edits while the stick sits in the bag.
    write(&hw.join("shared.txt"), "first line\nhome's edit\n");
    write(&hw.join("home-only.txt"), "written at home\n");
    write(&hw.join("notes/todo.txt"), "buy milk\nand bread\n");
    fs::rename(hw.join("docs"), hw.join("documentation")).unwrap();
    fs::remove_file(hw.join("old/gone.txt")).unwrap();
    // Meanwhile the office edits the same file, and others.
    write(&ow.join("shared.txt"), "first line\noffice's edit\n");
    write(&ow.join("office-only.txt"), "written at the office\n");
    let mut big2 = big.clone();
    big2[1_500_000..1_504_096].fill(0xAB);
    fs::write(ow.join("data.bin"), &big2).unwrap();
    fs::remove_file(ow.join("src/lib.rs")).unwrap();

    // office → stick → home → stick → office.
    stick.plug().unwrap();
    office.ok(&["sync", o]);
    stick.unplug().unwrap();
    stick.plug().unwrap();
    home.ok(&["sync", h]);
    stick.unplug().unwrap();
    stick.plug().unwrap();
    office.ok(&["sync", o]);
    let (to, th) = (tree(&ow), tree(&hw));
    assert_eq!(
        th, to,
        "after office → stick → home → stick → office the trees are identical"
    );
    // And the next plug-in at home has nothing to do.
    stick.unplug().unwrap();
    stick.plug().unwrap();
    let out = home.ok(&["sync", h]);
    assert!(out.contains("0 sent, 0 received"), "{out}");
    assert_eq!(tree(&hw), to);

    // Every write is present under its name or as a conflict copy.
    let both = [
        "first line\nhome's edit\n".to_string(),
        "first line\noffice's edit\n".to_string(),
    ];
    let shared = to["shared.txt"].clone();
    assert!(both.contains(&shared), "shared.txt: {shared:?}");
    let copies: Vec<&String> = to
        .iter()
        .filter(|(p, _)| p.starts_with("shared.conflict-"))
        .map(|(_, c)| c)
        .collect();
    assert_eq!(copies.len(), 1, "one conflict copy of shared.txt: {to:#?}");
    assert!(both.contains(copies[0]) && *copies[0] != shared);
    let orig = originals(&to);
    assert_eq!(orig["home-only.txt"], "written at home\n");
    assert_eq!(orig["office-only.txt"], "written at the office\n");
    assert_eq!(orig["notes/todo.txt"], "buy milk\nand bread\n");
    assert!(orig.contains_key("documentation/architecture.md") && !orig.contains_key("docs"));
    assert!(!orig.contains_key("old/gone.txt") && !orig.contains_key("src/lib.rs"));
    assert_eq!(fs::read(hw.join("data.bin")).unwrap(), big2);

    // The stick never held a plain name or content.
    stick.unplug().unwrap();
    let raw = stick.raw().unwrap();
    for needle in [
        &b"ACME-TAKEOVER-CODENAME-BLUEBIRD"[..],
        b"secret-merger-plan",
        b"office's edit",
        b"home-only",
        b"documentation",
        b"reconcile",
        b"buy milk",
    ] {
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle),
            "the stick image holds {:?} in plain",
            String::from_utf8_lossy(needle)
        );
    }
}

#[test]
fn a_machine_without_the_key_is_told_who_can_open_the_stick() {
    let Some(stick) = fat_stick(48) else { return };
    let target = format!("stick:{}", stick.mnt.display());
    let office = Machine::new("office");
    let stranger = Machine::new("stranger");
    let d = tempfile::tempdir().unwrap();
    let (ow, sw) = (d.path().join("w"), d.path().join("s"));
    write(&ow.join("a.txt"), "a\n");
    office.ok(&["init", ow.to_str().unwrap()]);
    office.ok(&["mirror", "add", ow.to_str().unwrap(), &target]);
    office.ok(&["sync", ow.to_str().unwrap()]);
    let office_key = office.stdout(&["id"]).trim().to_string();

    let (code, out) = stranger.run(&["clone", &target, sw.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("cannot be opened")
            && out.contains(&office_key)
            && out.contains("--recipient"),
        "the error names the recipients and how to add one: {out}"
    );
    assert!(
        !sw.join(".briefcase-folder").exists(),
        "nothing was created"
    );

    // The office adds the stranger; now the clone works.
    let key = stranger.stdout(&["id"]).trim().to_string();
    office.ok(&[
        "mirror",
        "add",
        ow.to_str().unwrap(),
        &target,
        "--recipient",
        &key,
    ]);
    stranger.ok(&["clone", &target, sw.to_str().unwrap()]);
    assert_eq!(fs::read_to_string(sw.join("a.txt")).unwrap(), "a\n");
}

#[test]
fn the_recovery_passphrase_opens_the_stick_on_a_new_machine() {
    let Some(stick) = fat_stick(48) else { return };
    let target = format!("stick:{}", stick.mnt.display());
    let office = Machine::new("office");
    let newpc = Machine::new("newpc");
    let d = tempfile::tempdir().unwrap();
    let (ow, nw) = (d.path().join("w"), d.path().join("n"));
    write(&ow.join("a.txt"), "a\n");
    office.ok(&["init", ow.to_str().unwrap()]);
    let out = office
        .cmd()
        .env("BRIEFCASE_PASSPHRASE", "correct horse battery staple")
        .args([
            "mirror",
            "add",
            ow.to_str().unwrap(),
            &target,
            "--passphrase",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    office.ok(&["sync", ow.to_str().unwrap()]);

    let wrong = newpc
        .cmd()
        .env("BRIEFCASE_PASSPHRASE", "wrong")
        .args(["clone", &target, nw.to_str().unwrap(), "--passphrase"])
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("passphrase is wrong"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    let right = newpc
        .cmd()
        .env("BRIEFCASE_PASSPHRASE", "correct horse battery staple")
        .args(["clone", &target, nw.to_str().unwrap(), "--passphrase"])
        .output()
        .unwrap();
    assert!(
        right.status.success(),
        "{}",
        String::from_utf8_lossy(&right.stderr)
    );
    assert_eq!(fs::read_to_string(nw.join("a.txt")).unwrap(), "a\n");
    // The new machine was added as a recipient: no passphrase needed any more.
    write(&nw.join("b.txt"), "b\n");
    newpc.ok(&["sync", nw.to_str().unwrap()]);
    office.ok(&["sync", ow.to_str().unwrap()]);
    assert_eq!(fs::read_to_string(ow.join("b.txt")).unwrap(), "b\n");
}

/// A stick on a plain directory (no image needed), with office and home sharing folder `work`:
/// `a.txt` holds "original" on both; then the office changes it and syncs. Returns the chunk
/// files that sync wrote.
struct Tamper {
    office: Machine,
    home: Machine,
    mount: std::path::PathBuf,
    ow: std::path::PathBuf,
    hw: std::path::PathBuf,
    new_chunks: Vec<std::path::PathBuf>,
    _d: tempfile::TempDir,
}

fn chunk_files(mount: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for folder in fs::read_dir(mount.join("briefcase")).unwrap().flatten() {
        let chunks = folder.path().join("chunks");
        for d in fs::read_dir(&chunks).into_iter().flatten().flatten() {
            for f in fs::read_dir(d.path()).unwrap().flatten() {
                out.push(f.path());
            }
        }
    }
    out.sort();
    out
}

fn folder_dir(mount: &Path) -> std::path::PathBuf {
    fs::read_dir(mount.join("briefcase"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path()
}

fn tamper_setup() -> Tamper {
    let d = tempfile::tempdir().unwrap();
    let mount = d.path().join("usb");
    fs::create_dir(&mount).unwrap();
    let target = format!("stick:{}", mount.display());
    let (office, home) = (Machine::new("office"), Machine::new("home"));
    let (ow, hw) = (d.path().join("ow"), d.path().join("hw"));
    write(&ow.join("a.txt"), "original\n");
    write(&ow.join("b.txt"), "another file, another chunk\n");
    support::share_a_stick(&office, &home, &ow, &target);
    home.ok(&["clone", &target, hw.to_str().unwrap()]);
    let before = chunk_files(&mount);
    write(&ow.join("a.txt"), "the office's new version\n");
    office.ok(&["sync", ow.to_str().unwrap()]);
    let new_chunks: Vec<_> = chunk_files(&mount)
        .into_iter()
        .filter(|c| !before.contains(c))
        .collect();
    assert_eq!(new_chunks.len(), 1, "one new chunk for the edit");
    Tamper {
        office,
        home,
        mount,
        ow,
        hw,
        new_chunks,
        _d: d,
    }
}

impl Tamper {
    /// Home syncs: must fail naming `what`, with home's files untouched.
    fn home_refuses(&self, what: &[&str]) {
        let (code, out) = self.home.run(&["sync", self.hw.to_str().unwrap()]);
        assert_ne!(code, 0, "a tampered stick must not sync cleanly: {out}");
        for w in what {
            assert!(out.contains(w), "the error names {w:?}: {out}");
        }
        assert_eq!(
            fs::read_to_string(self.hw.join("a.txt")).unwrap(),
            "original\n",
            "nothing was applied locally"
        );
        assert!(support::temp_files(&self.hw).is_empty());
    }
}

#[test]
fn a_flipped_byte_in_a_chunk_is_refused() {
    let t = tamper_setup();
    let c = &t.new_chunks[0];
    let mut bytes = fs::read(c).unwrap();
    let at = bytes.len() - 40;
    bytes[at] ^= 0x01;
    fs::write(c, bytes).unwrap();
    t.home_refuses(&["a.txt", "altered or damaged", "nothing was applied"]);
}

#[test]
fn a_truncated_chunk_is_refused() {
    let t = tamper_setup();
    let c = &t.new_chunks[0];
    let bytes = fs::read(c).unwrap();
    fs::write(c, &bytes[..bytes.len() / 2]).unwrap();
    t.home_refuses(&["a.txt", "altered or damaged"]);
}

#[test]
fn a_chunk_swapped_for_another_is_refused() {
    let t = tamper_setup();
    let c = &t.new_chunks[0];
    let other = chunk_files(&t.mount).into_iter().find(|x| x != c).unwrap();
    fs::copy(&other, c).unwrap();
    t.home_refuses(&["a.txt", "swapped or altered"]);
}

#[test]
fn a_damaged_newest_state_falls_back_and_both_damaged_are_refused() {
    let t = tamper_setup();
    let dir = folder_dir(&t.mount);
    // The newest root is the one written last.
    let roots = [dir.join("state.0.age"), dir.join("state.1.age")];
    let newest = roots
        .iter()
        .max_by_key(|p| fs::metadata(p).unwrap().modified().unwrap())
        .unwrap()
        .clone();
    let mut bytes = fs::read(&newest).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0x80;
    fs::write(&newest, &bytes).unwrap();
    let home_log = t
        .home
        .cmd()
        .env("BRIEFCASE_LOG", "warn")
        .args(["sync", t.hw.to_str().unwrap()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&home_log.stderr).into_owned();
    assert!(
        home_log.status.success(),
        "the previous generation is used: {out}"
    );
    assert!(out.contains("damaged"), "and the damage is reported: {out}");
    // The previous generation already held the new chunks (data is committed before the
    // state that records it); either version is whole, nothing partial.
    let a = fs::read_to_string(t.hw.join("a.txt")).unwrap();
    assert!(
        a == "original\n" || a == "the office's new version\n",
        "a whole version: {a:?}"
    );
    // The office, which has everything, repairs the stick at its next sync.
    t.office.ok(&["sync", t.ow.to_str().unwrap()]);
    t.home.ok(&["sync", t.hw.to_str().unwrap()]);
    assert_eq!(
        fs::read_to_string(t.hw.join("a.txt")).unwrap(),
        "the office's new version\n"
    );
    // Both roots damaged: refused, nothing changes.
    write(&t.ow.join("a.txt"), "third\n");
    t.office.ok(&["sync", t.ow.to_str().unwrap()]);
    for r in &roots {
        let mut b = fs::read(r).unwrap();
        let at = b.len() / 2;
        b[at] ^= 0x10;
        fs::write(r, b).unwrap();
    }
    let (code, out) = t.home.run(&["sync", t.hw.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("no complete catalog"), "{out}");
    assert_eq!(
        fs::read_to_string(t.hw.join("a.txt")).unwrap(),
        "the office's new version\n"
    );
}

#[test]
fn a_state_from_another_folder_is_refused() {
    let t = tamper_setup();
    // A second folder on the same stick, set up by the office.
    let other = t.ow.parent().unwrap().join("other");
    write(&other.join("x.txt"), "x\n");
    let target = format!("stick:{}", t.mount.display());
    t.office.ok(&["init", other.to_str().unwrap()]);
    t.office
        .ok(&["mirror", "add", other.to_str().unwrap(), &target]);
    t.office.ok(&["sync", other.to_str().unwrap()]);
    let ours = folder_dir_of(&t.mount, &t.ow, &t.office);
    let theirs = fs::read_dir(t.mount.join("briefcase"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| *p != ours)
        .unwrap();
    for r in ["state.0.age", "state.1.age"] {
        fs::copy(theirs.join(r), ours.join(r)).unwrap();
    }
    t.home_refuses(&["another stick or folder", "no complete catalog"]);
}

/// The stick directory of the folder at `dir` (its ID is in the folder marker).
fn folder_dir_of(mount: &Path, dir: &Path, _m: &Machine) -> std::path::PathBuf {
    let marker = fs::read_to_string(dir.join(".briefcase-folder")).unwrap();
    let id = marker
        .lines()
        .find_map(|l| {
            l.strip_prefix("folder = ")
                .or_else(|| l.strip_prefix("folder="))
        })
        .map(|v| v.trim().trim_matches('"').to_string())
        .unwrap_or_else(|| panic!("no folder in marker: {marker}"));
    mount.join("briefcase").join(id)
}

/// A tiny deterministic generator (xorshift64*), so a failing round can be replayed from its
/// printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// Files (not directories) of a tree, as bytes, without briefcase's own files.
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    tree(root)
        .into_iter()
        .filter(|(_, c)| c != "D")
        .map(|(p, _)| {
            let b = fs::read(root.join(&p)).unwrap();
            (p, b)
        })
        .collect()
}

/// Runs `briefcase sync DIR` as `m` in the background.
fn spawn_sync(m: &Machine, dir: &Path) -> std::process::Child {
    m.cmd()
        .args(["sync", dir.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `c` to end (killing it after 60 s: a sync must not hang on a vanished stick).
fn reap(c: &mut std::process::Child) -> Option<i32> {
    for _ in 0..3000 {
        if let Some(st) = c.try_wait().unwrap() {
            return st.code();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
    panic!("a sync hung for 60 s after its stick was pulled out");
}

/// Yank safety: while a large change is being written to (or read from) a FAT32 stick, the stick
/// is pulled out for real (its FUSE connection aborted, then `umount -l`), or the sync is killed
/// with SIGKILL, or both, at a random point. After plugging it back, the stick opens, its newest
/// complete state is used, nothing is lost on either machine, and the next sync completes.
/// `BRIEFCASE_YANK_ROUNDS` (default 4) and `BRIEFCASE_YANK_SEED` replay or extend it.
#[test]
fn yanked_or_killed_mid_sync_loses_nothing() {
    let Some(stick) = fat_stick(256) else { return };
    let rounds: u64 = std::env::var("BRIEFCASE_YANK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let seed: u64 = std::env::var("BRIEFCASE_YANK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("yank test: BRIEFCASE_YANK_SEED={seed} BRIEFCASE_YANK_ROUNDS={rounds}");
    let mut rng = Rng(seed);
    let target = format!("stick:{}", stick.mnt.display());
    let (office, home) = (Machine::new("office"), Machine::new("home"));
    let d = tempfile::tempdir().unwrap();
    let (ow, hw) = (d.path().join("office"), d.path().join("home"));
    for i in 0..20 {
        fs::create_dir_all(ow.join(format!("d{}", i % 4))).unwrap();
        fs::write(
            ow.join(format!("d{}/start-{i}.txt", i % 4)),
            rng.bytes(1000 + i * 100),
        )
        .unwrap();
    }
    support::share_a_stick(&office, &home, &ow, &target);
    home.ok(&["clone", &target, hw.to_str().unwrap()]);
    assert_eq!(files(&hw), files(&ow));
    // How long an uninterrupted push and pull of a round's change take (measured as rounds go),
    // so the interruption lands at a random point *during* the sync.
    let mut est = [std::time::Duration::from_millis(1500); 2];
    let mut landed = 0;

    for round in 0..rounds {
        // A large change at the office: new files of 100 KiB - 1 MiB, edits, deletions.
        for i in 0..12 {
            let n = 100_000 + rng.below(900_000) as usize;
            fs::write(
                ow.join(format!("d{}/r{round}-{i}.bin", i % 4)),
                rng.bytes(n),
            )
            .unwrap();
        }
        let existing: Vec<String> = files(&ow).into_keys().collect();
        for _ in 0..4 {
            let p = &existing[rng.below(existing.len() as u64) as usize];
            let mut b = fs::read(ow.join(p)).unwrap();
            let at = rng.below(b.len() as u64) as usize;
            b.splice(at..at, rng.bytes(300));
            fs::write(ow.join(p), b).unwrap();
        }
        let victim = &existing[rng.below(existing.len() as u64) as usize];
        fs::remove_file(ow.join(victim)).unwrap();
        let want = files(&ow);

        // Interrupt the office's push (even rounds) or home's pull of it (odd rounds).
        let pulling = round % 2 == 1;
        if pulling {
            let t = std::time::Instant::now();
            office.ok(&["sync", ow.to_str().unwrap()]);
            est[0] = t.elapsed();
        }
        let (who, dir) = if pulling {
            (&home, &hw)
        } else {
            (&office, &ow)
        };
        let before_home = files(&hw);
        let how = rng.below(3); // 0: yank, 1: kill -9, 2: kill -9 and yank
        let span = est[usize::from(pulling)].as_millis() as u64;
        let delay = std::time::Duration::from_millis(rng.below(span.max(20)));
        let mut child = spawn_sync(who, dir);
        std::thread::sleep(delay);
        if how >= 1 {
            let _ = child.kill();
        }
        if how != 1 {
            stick.yank().unwrap();
        }
        let code = reap(&mut child);
        if code != Some(0) {
            landed += 1;
        }
        eprintln!(
            "round {round}: {} {} after {delay:?} (exit {code:?})",
            if pulling {
                "home pulling"
            } else {
                "office pushing"
            },
            ["yanked", "killed", "killed and yanked"][how as usize]
        );
        // Nothing lost on the interrupted machine: every file is the old or the new version,
        // whole; the office (which only sent) is untouched.
        assert_eq!(
            files(&ow),
            want,
            "round {round}: the office's files are untouched"
        );
        for (p, b) in files(&hw) {
            if p.contains(".briefcase-tmp-") {
                continue;
            }
            assert!(
                want.get(&p) == Some(&b) || before_home.get(&p) == Some(&b),
                "round {round}: home's {p} is neither the old nor the new version"
            );
        }
        if !stick.is_plugged() {
            stick.plug().unwrap();
        }
        // The stick opens with its newest complete state, and the next syncs complete.
        let out = who.ok(&["sync", dir.to_str().unwrap()]);
        assert!(out.contains("in sync"), "round {round}: {out}");
        office.ok(&["sync", ow.to_str().unwrap()]);
        let t = std::time::Instant::now();
        home.ok(&["sync", hw.to_str().unwrap()]);
        if !pulling {
            est[1] = t.elapsed();
        }
        assert_eq!(files(&ow), want, "round {round}: office");
        assert_eq!(
            files(&hw),
            want,
            "round {round}: home has everything, whole"
        );
        assert!(
            support::temp_files(&hw).is_empty(),
            "round {round}: no temp files left"
        );
    }
    eprintln!("{landed} of {rounds} interruptions landed before the sync had finished");
}

/// A full stick (ENOSPC) stops the sync cleanly, says so, and keeps its last complete state: a
/// machine that clones it gets that state whole, and once there is room the next sync completes.
#[test]
fn a_full_stick_stops_cleanly_with_its_last_state_intact() {
    let Some(stick) = fat_stick(40) else { return };
    let target = format!("stick:{}", stick.mnt.display());
    let (office, home) = (Machine::new("office"), Machine::new("home"));
    let d = tempfile::tempdir().unwrap();
    let (ow, hw) = (d.path().join("office"), d.path().join("home"));
    let mut rng = Rng(7);
    write(&ow.join("small.txt"), "fits\n");
    support::share_a_stick(&office, &home, &ow, &target);
    // More than the stick holds.
    for i in 0..12 {
        fs::write(ow.join(format!("big-{i}.bin")), rng.bytes(4 << 20)).unwrap();
    }
    let (code, out) = office.run(&["sync", ow.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("full"),
        "the error says the stick is full: {out}"
    );
    // The stick still opens, with a complete state: home gets whole files only.
    home.ok(&["clone", &target, hw.to_str().unwrap()]);
    assert_eq!(fs::read_to_string(hw.join("small.txt")).unwrap(), "fits\n");
    for (p, b) in files(&hw) {
        assert_eq!(fs::read(ow.join(&p)).unwrap(), b, "{p} is whole on home");
    }
    // With room made, the next sync completes.
    for i in 4..12 {
        fs::remove_file(ow.join(format!("big-{i}.bin"))).unwrap();
    }
    let out = office.ok(&["sync", ow.to_str().unwrap()]);
    assert!(out.contains("in sync"), "{out}");
    home.ok(&["sync", hw.to_str().unwrap()]);
    assert_eq!(files(&hw), files(&ow));
}

/// What a stick writes to its storage: every file put (the stick's chunks, segments, roots,
/// `STICK`), with its length. All changes go through `Mirror::write`, so wrapping the storage
/// sees them all.
#[derive(Debug)]
struct WrittenTo {
    inner: std::sync::Arc<dyn briefcase_mirror::Mirror>,
    puts: std::sync::Mutex<Vec<(String, u64)>>,
}

#[async_trait::async_trait]
impl briefcase_mirror::StateStore for WrittenTo {
    async fn read_state(&self, name: &str) -> briefcase_mirror::MirrorResult<Option<Vec<u8>>> {
        self.inner.read_state(name).await
    }
    async fn commit_state(
        &self,
        write: &[(&str, &[u8])],
        remove: &[&str],
    ) -> briefcase_mirror::MirrorResult<()> {
        self.inner.commit_state(write, remove).await
    }
    async fn list_state(&self) -> briefcase_mirror::MirrorResult<Vec<String>> {
        self.inner.list_state().await
    }
    async fn create_state_exclusive(
        &self,
        name: &str,
        bytes: &[u8],
    ) -> briefcase_mirror::MirrorResult<bool> {
        self.inner.create_state_exclusive(name, bytes).await
    }
}

#[async_trait::async_trait]
impl briefcase_mirror::Mirror for WrittenTo {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn capabilities(&self) -> briefcase_mirror::Capabilities {
        self.inner.capabilities()
    }
    async fn probe(&self) -> briefcase_mirror::MirrorResult<briefcase_mirror::Presence> {
        self.inner.probe().await
    }
    async fn init(&self, folder: briefcase_mirror::FolderId) -> briefcase_mirror::MirrorResult<()> {
        self.inner.init(folder).await
    }
    async fn walk(
        &self,
        under: Option<&briefcase_mirror::RelPath>,
        detail: briefcase_mirror::Detail,
    ) -> briefcase_mirror::MirrorResult<Vec<briefcase_mirror::RemoteStat>> {
        self.inner.walk(under, detail).await
    }
    async fn stat(
        &self,
        path: &briefcase_mirror::RelPath,
    ) -> briefcase_mirror::MirrorResult<Option<briefcase_mirror::RemoteStat>> {
        self.inner.stat(path).await
    }
    async fn get(
        &self,
        path: &briefcase_mirror::RelPath,
        dest: &Path,
    ) -> briefcase_mirror::MirrorResult<briefcase_mirror::RemoteStat> {
        self.inner.get(path, dest).await
    }
    async fn read_bytes(
        &self,
        path: &briefcase_mirror::RelPath,
        limit: u64,
    ) -> briefcase_mirror::MirrorResult<Vec<u8>> {
        self.inner.read_bytes(path, limit).await
    }
    async fn write(
        &self,
        ops: Vec<briefcase_mirror::WriteOp>,
    ) -> Vec<briefcase_mirror::WriteResult> {
        use briefcase_mirror::{PutSource, WriteOp};
        let seen: Vec<(String, u64)> = ops
            .iter()
            .filter_map(|op| match op {
                WriteOp::Put(it) => Some((
                    it.path.to_string(),
                    match &it.source {
                        PutSource::Bytes(b) | PutSource::Blob(b) => b.len() as u64,
                        PutSource::File(f) => fs::metadata(f).unwrap().len(),
                    },
                )),
                _ => None,
            })
            .collect();
        self.puts.lock().unwrap().extend(seen);
        self.inner.write(ops).await
    }
    async fn sweep(&self) -> briefcase_mirror::MirrorResult<usize> {
        self.inner.sweep().await
    }
}

/// Issue 10: a 4 KiB change in a big file writes the chunks it touched and one commit of the
/// catalog (one segment, one root), whatever the file's size: the engine's state rides in the
/// stick's own log (no intents record, no roots of its own), and the segment records the
/// file's chunk list as a splice (a page or two), not the whole list. Counted at the stick's
/// storage. The budget: each new chunk the scanner's cut has (encrypted: the chunk, at most
/// 1 KiB of age header and its 16 bytes a 64 KiB), plus one segment holding at most two pages of four times
/// the average size (~16 chunk references of 35 bytes) and 2 KiB of records and root.
#[test]
fn issue_10_a_4_kib_change_in_a_big_file_writes_its_chunks_and_one_small_commit() {
    use briefcase::reconcile::{ensure_initialised, sync, SyncOptions};
    use briefcase::replica::LocalReplica;
    use briefcase_stick::{MachineKey, Recipient, Recipients, StickMirror, Unlock};
    use std::os::unix::fs::FileExt;

    const MIB: usize = 1 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("work");
    let mut a = LocalReplica::init(&root, &tmp.path().join("data"), "office", None).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    };
    let big = root.join("disk.img");
    fs::write(&big, random(32 * MIB)).unwrap();
    fs::write(root.join("notes.txt"), b"a small file beside it\n").unwrap();

    let mount = tmp.path().join("usb");
    fs::create_dir(&mount).unwrap();
    let storage = std::sync::Arc::new(WrittenTo {
        inner: std::sync::Arc::new(briefcase_dir::DirMirror::storage(mount.clone())),
        puts: std::sync::Mutex::new(Vec::new()),
    });
    let key = MachineKey::generate();
    let stick = StickMirror::over(
        storage.clone(),
        mount,
        Some(a.journal.folder_id()),
        Unlock {
            machine: Some(key.clone()),
            passphrase: None,
        },
        Some(Recipients {
            machines: vec![Recipient {
                key: key.recipient(),
                label: "office".into(),
            }],
            passphrase: None,
        }),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(ensure_initialised(&a, &stick, "s", false))
        .unwrap();
    let r = rt
        .block_on(sync(&mut a, &stick, "s", &SyncOptions::default()))
        .unwrap();
    assert_eq!(r.pushed, 2, "{r:?}");

    let (_, before) = briefcase::scan::hash_file(&big).unwrap();
    let f = fs::OpenOptions::new().write(true).open(&big).unwrap();
    f.write_all_at(&random(4096), 16 * MIB as u64 + 3 * 4096)
        .unwrap();
    drop(f);
    let (_, after) = briefcase::scan::hash_file(&big).unwrap();
    let old: std::collections::HashSet<_> = before.iter().map(|c| c.hash).collect();
    let mut new: Vec<_> = after.iter().filter(|c| !old.contains(&c.hash)).collect();
    new.dedup_by_key(|c| c.hash);
    assert!(
        (1..=3).contains(&new.len()),
        "{} new chunks for a 4 KiB change",
        new.len()
    );

    storage.puts.lock().unwrap().clear();
    let r = rt
        .block_on(sync(&mut a, &stick, "s", &SyncOptions::default()))
        .unwrap();
    assert_eq!((r.pushed, r.complete), (1, true), "{r:?}");
    let puts = storage.puts.lock().unwrap().clone();
    let of = |what: &str| -> Vec<u64> {
        puts.iter()
            .filter(|(p, _)| p.contains(what))
            .map(|(_, n)| *n)
            .collect()
    };
    let (chunks, segments, roots) = (of("/chunks/"), of("/segments/"), of("/state."));
    let total: u64 = puts.iter().map(|(_, n)| n).sum();
    eprintln!(
        "a 4 KiB change in 32 MiB: {total} bytes on the stick: {} chunk file(s) {:?}, segment(s) {:?}, root(s) {:?}; all: {puts:?}",
        chunks.len(),
        chunks,
        segments,
        roots
    );
    assert_eq!(
        chunks.len(),
        new.len(),
        "only the chunks the change touched"
    );
    assert_eq!(
        (segments.len(), roots.len(), puts.len()),
        (1, 1, new.len() + 2),
        "one commit of the catalog, nothing else: {puts:?}"
    );
    let chunk_budget: u64 = new
        .iter()
        // age's header (~170 bytes, plus a random "grease" stanza of up to a few hundred)
        // and its 16-byte tag per 64 KiB.
        .map(|c| u64::from(c.len) + 1024 + u64::from(c.len) / 4096)
        .sum();
    let page = 4 * 16 * 35;
    let catalog_budget = 2 * page + 2048;
    assert!(
        chunks.iter().sum::<u64>() <= chunk_budget,
        "chunks {chunks:?}, budget {chunk_budget}"
    );
    assert!(
        segments.iter().chain(&roots).sum::<u64>() <= catalog_budget,
        "segment {segments:?} and root {roots:?}, budget {catalog_budget}"
    );
    assert!(total <= chunk_budget + catalog_budget);

    // And what was written is what the folder holds.
    let out = tmp.path().join("out");
    rt.block_on(briefcase_mirror::Mirror::get(
        &stick,
        &briefcase_mirror::RelPath::try_from("disk.img").unwrap(),
        &out,
    ))
    .unwrap();
    assert!(fs::read(&out).unwrap() == fs::read(&big).unwrap());
}
