//! `briefcase daemon` (and `watch`, which shares its machinery), driven as a user would: the
//! real binary, one "machine" per test (its own XDG dirs, so its own control socket).
//!
//! - `daemon_syncs_every_configured_folder`: two folders, two dir mirrors, both ways; SIGTERM
//!   stops it cleanly and removes the socket.
//! - `folders_and_mirrors_added_later_are_picked_up`: the config is read again every
//!   `--interval`.
//! - `absent_mirror_is_reconciled_once_it_appears`: a mirror whose path (and parent) does not
//!   exist at start is reconciled promptly when it appears (no fallback tick in the test's
//!   time), and the log says when it is safe to unplug.
//! - `status_sync_and_conflicts_go_through_the_daemon`: the live view, the socket's mode, a sync
//!   queued in the daemon, one daemon per user, a stale socket replaced.
//! - `ready_and_stopping_reach_the_notify_socket`: sd-notify `READY=1` and `STOPPING=1`.
//! - `mirror_removed_while_running_loses_nothing`: the mirror vanishes (and is deleted) during a
//!   sync; the daemon keeps running, marks it offline, and nothing is deleted here.
//! - `bind_mounted_mirror_is_noticed_through_the_mount_table`: a mirror mounted on its (empty)
//!   path is noticed through `/proc/self/mountinfo` (needs root; skipped otherwise).
//! - `watch_follows_one_folder`: `watch` on the shared machinery still does its job.
//!
//! Timing is never asserted with sleeps: each test polls for the expected outcome with a
//! generous deadline (a loaded 2-core CI box runs the other test binaries meanwhile).
#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{write, Machine};

/// Longest wait for anything the daemon should do "promptly".
const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `f` until it holds or [`DEADLINE`] passes.
fn until(mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + DEADLINE;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn read(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok()
}

/// A running `briefcase daemon` (or `watch`) with its log in a file.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn start(m: &Machine, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let log = m
            .home
            .path()
            .join(format!("log-{}-{}", args[0], rand_suffix()));
        let mut c = m.cmd();
        c.args(args)
            .env("BRIEFCASE_LOG", "info,briefcase=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap());
        for (k, v) in env {
            c.env(k, v);
        }
        Proc {
            child: c.spawn().unwrap(),
            log,
        }
    }

    fn daemon(m: &Machine) -> Proc {
        let mut p = Proc::start(m, &["daemon"], &[]);
        p.wait_log("ready");
        p
    }

    fn log(&self) -> String {
        read(&self.log).unwrap_or_default()
    }

    /// Waits until the log says `needle` (fails at once if the process exited).
    fn wait_log(&mut self, needle: &str) {
        let mut exited = None;
        until(|| {
            exited = self.child.try_wait().ok().flatten();
            self.log().contains(needle) || exited.is_some()
        });
        assert!(
            self.log().contains(needle),
            "never logged {needle:?} (exited: {exited:?}):\n{}",
            self.log()
        );
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    /// SIGTERM, then the exit code.
    fn stop(mut self) -> (i32, String) {
        self.signal(rustix::process::Signal::TERM);
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st.code().unwrap_or(-1), self.log());
            }
            assert!(
                Instant::now() < end,
                "did not stop on SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A folder at `root` with `files`, and a mirror at `target`.
fn folder(m: &Machine, root: &Path, target: &Path, files: &[(&str, &str)]) {
    for (p, c) in files {
        write(&root.join(p), c);
    }
    fs::create_dir_all(root).unwrap();
    m.ok(&["init", root.to_str().unwrap()]);
    m.ok(&[
        "mirror",
        "add",
        root.to_str().unwrap(),
        target.to_str().unwrap(),
    ]);
}

fn status_json(m: &Machine, dir: &Path) -> serde_json::Value {
    let out = m
        .cmd()
        .args(["status", "--json"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn socket(m: &Machine) -> PathBuf {
    m.home.path().join("run/briefcase/control.sock")
}

#[test]
fn daemon_syncs_every_configured_folder() {
    let m = Machine::new("office");
    let t = tempfile::tempdir().unwrap();
    let (w1, w2) = (t.path().join("work"), t.path().join("notes"));
    let (m1, m2) = (t.path().join("nas/work"), t.path().join("nas/notes"));
    folder(&m, &w1, &m1, &[("a.txt", "one")]);
    folder(&m, &w2, &m2, &[("b.txt", "two")]);
    let d = Proc::daemon(&m);
    // The first sync with each mirror.
    assert!(until(|| read(&m1.join("a.txt")).as_deref() == Some("one")
        && read(&m2.join("b.txt")).as_deref() == Some("two")));
    // Then every save, both ways, in both folders.
    write(&w1.join("src/main.rs"), "fn main() {}");
    write(&w2.join("todo.md"), "- test the daemon");
    write(&m1.join("from-nas.txt"), "edited on the NAS");
    assert!(
        until(
            || read(&m1.join("src/main.rs")).as_deref() == Some("fn main() {}")
                && read(&m2.join("todo.md")).as_deref() == Some("- test the daemon")
                && read(&w1.join("from-nas.txt")).as_deref() == Some("edited on the NAS")
        ),
        "not synced:\n{}",
        d.log()
    );
    assert!(socket(&m).exists());
    let (code, log) = d.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("briefcase daemon stopped"), "{log}");
    assert!(!socket(&m).exists(), "the socket is removed at exit");
}

#[test]
fn folders_and_mirrors_added_later_are_picked_up() {
    let m = Machine::new("office");
    let t = tempfile::tempdir().unwrap();
    let mut d = Proc::start(&m, &["daemon", "--interval", "1"], &[]);
    d.wait_log("ready");
    // A folder added to the config while the daemon runs.
    let w = t.path().join("work");
    let nas = t.path().join("nas");
    folder(&m, &w, &nas, &[("a.txt", "one")]);
    d.wait_log("folder added to the config");
    write(&w.join("b.txt"), "two");
    assert!(
        until(|| read(&nas.join("b.txt")).as_deref() == Some("two")),
        "{}",
        d.log()
    );
    // A second mirror of that folder.
    let usb = t.path().join("usb");
    m.ok(&["mirror", "add", w.to_str().unwrap(), usb.to_str().unwrap()]);
    assert!(
        until(|| read(&usb.join("b.txt")).as_deref() == Some("two")),
        "{}",
        d.log()
    );
    write(&w.join("c.txt"), "three");
    assert!(until(
        || read(&usb.join("c.txt")).is_some() && read(&nas.join("c.txt")).is_some()
    ));
    let (code, log) = d.stop();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn absent_mirror_is_reconciled_once_it_appears() {
    let m = Machine::new("home");
    let t = tempfile::tempdir().unwrap();
    let w = t.path().join("work");
    let media = t.path().join("media");
    let stick = media.join("stick");
    folder(&m, &w, &stick, &[("report.txt", "v1")]);
    m.ok(&["sync", w.to_str().unwrap()]);
    // Unplugged: the mirror's path and its parent are gone.
    let away = t.path().join("drawer");
    fs::rename(&media, &away).unwrap();
    // A long interval: only the path watch can make this prompt.
    let mut d = Proc::start(&m, &["daemon", "--interval", "3600"], &[]);
    d.wait_log("ready");
    d.wait_log("waiting for it to come back");
    let st = status_json(&m, &w);
    assert_eq!(st["mirrors"][0]["state"], "offline", "{st}");
    assert!(st["mirrors"][0]["changes_waiting"].is_null(), "{st}");
    write(
        &w.join("report.txt"),
        "v2, written while the stick was away",
    );
    write(&w.join("new.txt"), "new");
    // Plugged in: first its parent appears, then the stick itself, content and all.
    fs::create_dir(&media).unwrap();
    fs::rename(away.join("stick"), &stick).unwrap();
    assert!(
        until(|| read(&stick.join("report.txt")).as_deref()
            == Some("v2, written while the stick was away")
            && read(&stick.join("new.txt")).as_deref() == Some("new")),
        "not reconciled after the mirror appeared:\n{}",
        d.log()
    );
    d.wait_log("arrived: reconciling");
    d.wait_log("safe to unplug");
    assert!(until(|| {
        let st = status_json(&m, &w);
        let mi = &st["mirrors"][0];
        mi["state"] == "online"
            && mi["safe_to_unplug"] == true
            && mi["changes_waiting"] == 0
            && mi["removable"] == true
            && mi["last_reconciled_ns"].is_i64()
    }));
    let (code, log) = d.stop();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn status_sync_and_conflicts_go_through_the_daemon() {
    let m = Machine::new("office");
    let t = tempfile::tempdir().unwrap();
    let w = t.path().join("work");
    let nas = t.path().join("nas");
    folder(&m, &w, &nas, &[("a.txt", "one")]);
    m.ok(&["sync", w.to_str().unwrap()]);
    // Without a daemon, status looks at the mirror itself: reachable, nothing waiting.
    let st = status_json(&m, &w);
    assert!(st["daemon"].is_null(), "{st}");
    assert_eq!(st["mirrors"][0]["state"], "online", "{st}");
    assert_eq!(st["mirrors"][0]["changes_waiting"], 0, "{st}");
    // Another machine shares the mirror and leaves two changes on it for this one.
    let home = Machine::new("home");
    let w_home = t.path().join("home-work");
    let (h, n) = (w_home.to_str().unwrap(), nas.to_str().unwrap());
    home.ok(&["mirror", "add", h, n, "--name", "nas"]);
    home.ok(&["sync", h]);
    write(&w_home.join("from-home.txt"), "home");
    write(&w_home.join("a.txt"), "edited at home");
    home.ok(&["sync", h]);
    let st = status_json(&m, &w);
    assert_eq!(st["mirrors"][0]["changes_waiting"], 2, "{st}");
    let mut d = Proc::daemon(&m);
    let pid = d.child.id();
    assert!(until(|| {
        let st = status_json(&m, &w);
        st["daemon"]["pid"] == pid && st["mirrors"][0]["state"] == "online"
    }));
    let st = status_json(&m, &w);
    assert!(st["mirrors"][0]["last_reconciled_ns"].is_i64(), "{st}");
    assert_eq!(st["mirrors"][0]["changes_waiting"], 0, "{st}");
    assert_eq!(read(&w.join("from-home.txt")).as_deref(), Some("home"));
    assert_eq!(st["files"], 2, "{st}");
    let mode = fs::metadata(socket(&m)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "control socket mode");
    // A sync through the daemon: queued in its folder task, answered with the usual report.
    write(&w.join("b.txt"), "two");
    let out = m.cmd().args(["sync", "--json"]).arg(&w).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reports[0]["mirror"], "nas", "{reports}");
    assert_eq!(reports[0]["complete"], true, "{reports}");
    assert_eq!(read(&nas.join("b.txt")).as_deref(), Some("two"));
    d.wait_log("sync asked through the control socket");
    // `watch` refuses a folder the daemon runs (two processes would sync it).
    let (code, text) = m.run(&["watch", w.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("already runs folder"), "{text}");
    let text = m.ok(&["sync", w.to_str().unwrap()]);
    assert!(
        text.contains("mirror nas:") && text.contains("in sync"),
        "{text}"
    );
    let (code, text) = m.run(&["sync", w.to_str().unwrap(), "--mirror", "nope"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("no mirror named nope"), "{text}");
    // conflicts through the daemon.
    let text = m.ok(&["conflicts", w.to_str().unwrap(), "--json"]);
    assert_eq!(text.trim(), "[]", "{text}");
    // One daemon per user: a second one is refused and says who runs.
    let out = m.cmd().arg("daemon").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already running") && err.contains(&pid.to_string()),
        "{err}"
    );
    // A daemon killed with SIGKILL leaves its socket; the next one replaces it.
    d.signal(rustix::process::Signal::KILL);
    drop(d);
    assert!(socket(&m).exists());
    let (code, text) = m.run(&["status", w.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "status without a daemon, stale socket: {text}");
    let d = Proc::daemon(&m);
    let st = status_json(&m, &w);
    assert_eq!(st["daemon"]["pid"], d.child.id(), "{st}");
    let (code, log) = d.stop();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn ready_and_stopping_reach_the_notify_socket() {
    let m = Machine::new("office");
    let t = tempfile::tempdir().unwrap();
    folder(
        &m,
        &t.path().join("work"),
        &t.path().join("nas"),
        &[("a", "1")],
    );
    let path = m.home.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let d = Proc::start(
        &m,
        &["daemon"],
        &[("NOTIFY_SOCKET", path.to_str().unwrap())],
    );
    let mut seen = String::new();
    let end = Instant::now() + DEADLINE;
    while !seen.contains("READY=1") && Instant::now() < end {
        let mut buf = [0u8; 4096];
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert!(seen.contains("READY=1"), "{seen}\n{}", d.log());
    assert!(seen.contains("STATUS="), "{seen}");
    let (code, log) = d.stop();
    assert_eq!(code, 0, "{log}");
    let mut rest = String::new();
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while let Ok(n) = sock.recv(&mut buf) {
        rest.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(rest.contains("STOPPING=1"), "{rest}");
}

#[test]
fn mirror_removed_while_running_loses_nothing() {
    let m = Machine::new("office");
    let t = tempfile::tempdir().unwrap();
    let w = t.path().join("work");
    let stick = t.path().join("stick");
    let big = "x".repeat(64 * 1024);
    let files: Vec<(String, String)> = (0..40)
        .map(|i| (format!("d{}/f{i}.txt", i % 4), format!("{i}{big}")))
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    folder(&m, &w, &stick, &refs);
    let mut d = Proc::daemon(&m);
    assert!(until(|| read(&stick.join("d3/f39.txt")).is_some()));
    // Many new files: a sync is running while the mirror goes away.
    for i in 0..200 {
        write(&w.join(format!("new/n{i}.txt")), &format!("{i}{big}"));
    }
    assert!(until(|| stick.join("new").exists()));
    // The mirror goes away at once, as when a stick is pulled out, then is deleted. (A slow
    // `rm -r` of a watched mirror is, while it runs, indistinguishable from the user deleting
    // files there: those deletions are synced, bounded by the mass-deletion guard.)
    let pulled = t.path().join("pulled-out");
    fs::rename(&stick, &pulled).unwrap();
    let gone = until(|| {
        let _ = fs::remove_dir_all(&pulled);
        !pulled.exists()
    });
    assert!(gone, "could not remove the mirror");
    assert!(
        until(|| {
            let l = d.log();
            // Mid-sync (the usual case here), or between syncs.
            l.contains("was removed during the sync")
                || l.contains("went away before it was in sync")
                || l.contains("was unplugged; it was in sync")
        }),
        "the removal was not noticed:\n{}",
        d.log()
    );
    assert!(until(|| {
        let st = status_json(&m, &w);
        st["daemon"]["pid"] == d.child.id() && st["mirrors"][0]["state"] == "offline"
    }));
    assert!(d.alive(), "the daemon died:\n{}", d.log());
    // Nothing was deleted here.
    for (p, c) in &files {
        assert_eq!(read(&w.join(p)).as_deref(), Some(c.as_str()), "{p}");
    }
    for i in 0..200 {
        assert_eq!(
            read(&w.join(format!("new/n{i}.txt"))),
            Some(format!("{i}{big}"))
        );
    }
    // And the daemon still follows the folder.
    write(&w.join("after.txt"), "still watched");
    let (code, log) = d.stop();
    assert_eq!(code, 0, "{log}");
}

/// Mounting is a privilege; without it (not root, no mount in the sandbox) the test says so.
fn try_mount(args: &[&str]) -> bool {
    Command::new("mount")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn bind_mounted_mirror_is_noticed_through_the_mount_table() {
    let m = Machine::new("office");
    let t = tempfile::tempdir().unwrap();
    let w = t.path().join("work");
    let prepared = t.path().join("medium");
    folder(&m, &w, &prepared, &[("a.txt", "one")]);
    m.ok(&["sync", w.to_str().unwrap()]);
    // The mirror is configured at an empty mount point; the medium is mounted there later.
    let mount_point = t.path().join("mnt");
    fs::create_dir(&mount_point).unwrap();
    let mut cfg = fs::read_to_string(m.home.path().join("config/briefcase/config.toml")).unwrap();
    cfg = cfg.replace(prepared.to_str().unwrap(), mount_point.to_str().unwrap());
    fs::write(m.home.path().join("config/briefcase/config.toml"), cfg).unwrap();
    let mut d = Proc::start(&m, &["daemon", "--interval", "3600"], &[]);
    d.wait_log("waiting for it to come back");
    write(&w.join("b.txt"), "two");
    if !try_mount(&[
        "--bind",
        prepared.to_str().unwrap(),
        mount_point.to_str().unwrap(),
    ]) {
        eprintln!("skipped: cannot bind-mount here (needs root)");
        return;
    }
    let _unmount = Unmount(mount_point.clone());
    assert!(
        until(|| read(&prepared.join("b.txt")).as_deref() == Some("two")),
        "the mount was not noticed:\n{}",
        d.log()
    );
    d.wait_log("arrived: reconciling");
    d.wait_log("safe to unplug");
    // Unmounted while idle: offline, nothing deleted. (The daemon looks at its own writes once
    // more right after a sync, which can keep the mount busy for a moment: umount as a user would,
    // again until it works.)
    assert!(until(|| Command::new("umount")
        .arg(&mount_point)
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()));
    // Idle, or in the middle of that look at its own writes.
    assert!(
        until(|| {
            let l = d.log();
            l.contains("was unplugged; it was in sync") || l.contains("was removed during the sync")
        }),
        "the unmount was not noticed:\n{}",
        d.log()
    );
    assert_eq!(read(&w.join("a.txt")).as_deref(), Some("one"));
    assert_eq!(read(&w.join("b.txt")).as_deref(), Some("two"));
    let (code, log) = d.stop();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn watch_follows_one_folder() {
    let m = Machine::new("office");
    let t = tempfile::tempdir().unwrap();
    let w = t.path().join("work");
    let nas = t.path().join("nas");
    write(&w.join("a.txt"), "one");
    let mut p = Proc::start(
        &m,
        &["watch", w.to_str().unwrap(), nas.to_str().unwrap()],
        &[],
    );
    p.wait_log("mirror(s); Ctrl-C to stop");
    assert_eq!(read(&nas.join("a.txt")).as_deref(), Some("one"));
    write(&w.join("b.txt"), "two");
    write(&nas.join("c.txt"), "three");
    assert!(
        until(|| read(&nas.join("b.txt")).as_deref() == Some("two")
            && read(&w.join("c.txt")).as_deref() == Some("three")),
        "{}",
        p.log()
    );
    // `watch` serves no control socket: status looks for itself.
    let st = status_json(&m, &w);
    assert!(st["daemon"].is_null(), "{st}");
    let (code, log) = p.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("stopped watching"), "{log}");
}

/// The stick story with the daemon at home: plugging in a FAT32 stick (fusefat) that the office
/// wrote to makes the running daemon reconcile both ways at once and say when it is safe to
/// unplug; `status` shows when it was last reconciled here and what it carries for this machine.
#[test]
fn a_plugged_in_stick_is_reconciled_and_safe_to_unplug() {
    use briefcase_mirror::usb::{UsbFs, UsbImage};
    if let Some(why) = UsbImage::missing_prerequisite(UsbFs::Vfat) {
        eprintln!("skipped: {why}");
        return;
    }
    let stick = UsbImage::make(64, UsbFs::Vfat).unwrap();
    stick.plug().unwrap();
    let target = format!("stick:{}", stick.mnt.display());
    let (office, home) = (Machine::new("office"), Machine::new("home"));
    let d = tempfile::tempdir().unwrap();
    let (ow, hw) = (d.path().join("office"), d.path().join("home"));
    write(&ow.join("report.txt"), "v1\n");
    support::share_a_stick(&office, &home, &ow, &target);
    home.ok(&["clone", &target, hw.to_str().unwrap()]);
    stick.unplug().unwrap();

    // Home's daemon runs with the stick away; the office edits and carries the stick home. The
    // office's "machine" mounts it at its own mount point, so home's daemon does not see it
    // there (a stick is plugged into one machine at a time).
    let mut daemon = Proc::daemon(&home);
    write(&hw.join("home-note.txt"), "written at home\n");
    write(&ow.join("report.txt"), "v2 from the office\n");
    let at_office = stick.elsewhere(d.path().join("office-mnt"));
    at_office.plug().unwrap();
    office_sync_via(&office, &ow, &stick.mnt, &at_office.mnt);
    at_office.unplug().unwrap();
    stick.plug().unwrap();

    // Both ways at once, then "safe to unplug".
    assert!(
        until(|| read(&hw.join("report.txt")).as_deref() == Some("v2 from the office\n")),
        "the office's edit arrived:\n{}",
        daemon.log()
    );
    daemon.wait_log("safe to unplug");
    let st = status_json(&home, &hw);
    let text = st.to_string();
    assert!(
        text.contains("last_reconciled_ns") && text.contains("changes_waiting"),
        "{text}"
    );
    stick.unplug().unwrap();
    assert!(daemon.alive(), "unplugging does not stop the daemon");
    at_office.plug().unwrap();
    office_sync_via(&office, &ow, &stick.mnt, &at_office.mnt);
    assert_eq!(
        read(&ow.join("home-note.txt")).as_deref(),
        Some("written at home\n"),
        "home's note went out with the stick"
    );
    let (code, log) = daemon.stop();
    assert_eq!(code, 0, "{log}");
}

/// Syncs the office's folder with the stick mounted at `actual` instead of its configured
/// `configured` mount point (home's machine holds that one): the office's config is pointed
/// there for the call.
fn office_sync_via(office: &Machine, ow: &Path, configured: &Path, actual: &Path) {
    let cfg = office.home.path().join("config/briefcase/config.toml");
    let text = fs::read_to_string(&cfg).unwrap();
    let moved = text.replace(
        &format!("stick:{}", configured.display()),
        &format!("stick:{}", actual.display()),
    );
    assert_ne!(text, moved, "the office's config names the stick");
    fs::write(&cfg, &moved).unwrap();
    office.ok(&["sync", ow.to_str().unwrap()]);
    fs::write(&cfg, &text).unwrap();
}
