//! The mirror lease (issue 10): two machines sharing one NAS directory never write it at the
//! same time, whatever instant they sync at; a lease left by a killed sync is taken over; a
//! mirror another machine holds is reported busy.
//!
//! The two machines are two sets of XDG directories driving the real binary, as in
//! `tests/e2e.rs`. Interleaving is checked on what the processes log when they take and give
//! back the lease (one clock: one host).
#![allow(clippy::unwrap_used)]

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use support::{strip_ansi, tree, write, Machine};

/// `briefcase sync DIR`, started now, logging the lease at debug level.
fn spawn_sync(m: &Machine, dir: &Path, env: &[(&str, &str)]) -> Child {
    let mut c: Command = m.cmd();
    c.args(["sync", dir.to_str().unwrap()])
        .env("BRIEFCASE_LOG", "warn,briefcase::reconcile::lease=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

fn finish(c: Child) -> (i32, String) {
    let out = c.wait_with_output().unwrap();
    let text = strip_ansi(&format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ));
    (out.status.code().unwrap_or(-1), text)
}

/// ns since the epoch of a log line's leading RFC 3339 timestamp.
fn stamp(line: &str) -> Option<i128> {
    let t = line.split_whitespace().next()?;
    let t = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos())
}

/// (taken, released) times of each lease one process held, from its log.
fn held(log: &str) -> Vec<(i128, i128)> {
    let mut out = Vec::new();
    let mut open = None;
    for line in log.lines() {
        if line.contains("lease taken") {
            open = stamp(line);
        } else if line.contains("lease released") {
            if let (Some(a), Some(b)) = (open.take(), stamp(line)) {
                out.push((a, b));
            }
        }
    }
    out
}

/// A small random generator (xorshift), seeded per run and printed, so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One machine's own files (`prefix*.txt`, which only it edits), as it last wrote them.
fn edit(
    rng: &mut Rng,
    dir: &Path,
    prefix: &str,
    mine: &mut BTreeMap<String, String>,
    round: usize,
) {
    for _ in 0..1 + rng.next(3) {
        let name = format!("{prefix}{}.txt", rng.next(12));
        let p = dir.join(&name);
        if mine.contains_key(&name) && rng.next(4) == 0 {
            fs::remove_file(&p).unwrap();
            mine.remove(&name);
        } else {
            let body = format!("{prefix} round {round} {}\n", rng.next(1 << 30));
            write(&p, &body);
            mine.insert(name, body);
        }
    }
}

fn pair(d: &Path) -> (Machine, PathBuf, Machine, PathBuf, PathBuf) {
    let (office, home) = (Machine::new("office"), Machine::new("home"));
    let (ow, hw, nas) = (d.join("office"), d.join("home"), d.join("nas"));
    write(&ow.join("start.txt"), "start\n");
    office.ok(&["init", ow.to_str().unwrap()]);
    office.ok(&[
        "mirror",
        "add",
        ow.to_str().unwrap(),
        nas.to_str().unwrap(),
        "--name",
        "nas",
    ]);
    office.ok(&["sync", ow.to_str().unwrap()]);
    home.ok(&["clone", nas.to_str().unwrap(), hw.to_str().unwrap()]);
    (office, ow, home, hw, nas)
}

/// Two machines sync one dir mirror at the same instant, round after round, each after random
/// edits of its own files: their leases never overlap, no sync fails, the mirror's state is
/// never damaged, and both converge on the union of their edits.
#[test]
fn two_machines_syncing_one_nas_at_once_never_interleave() {
    let rounds: usize = std::env::var("LEASE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    let d = tempfile::tempdir().unwrap();
    let (office, ow, home, hw, _nas) = pair(d.path());
    let (mut o_files, mut h_files) = (BTreeMap::new(), BTreeMap::new());
    let mut intervals: Vec<(i128, i128, &str, usize)> = Vec::new();
    for round in 0..rounds {
        edit(&mut rng, &ow, "o", &mut o_files, round);
        edit(&mut rng, &hw, "h", &mut h_files, round);
        let a = spawn_sync(&office, &ow, &[]);
        let b = spawn_sync(&home, &hw, &[]);
        let (ca, ta) = finish(a);
        let (cb, tb) = finish(b);
        for (who, code, text) in [("office", ca, &ta), ("home", cb, &tb)] {
            assert!(
                code == 0 || code == 4,
                "round {round} (seed {seed}): {who}'s sync exited {code}:\n{text}"
            );
            assert!(!text.contains("damaged"), "round {round}: {who}:\n{text}");
        }
        for (a, b) in held(&ta) {
            intervals.push((a, b, "office", round));
        }
        for (a, b) in held(&tb) {
            intervals.push((a, b, "home", round));
        }
    }
    assert!(
        intervals.len() >= 2 * rounds,
        "expected a lease per sync, found {} for {rounds} rounds",
        intervals.len()
    );
    intervals.sort();
    for w in intervals.windows(2) {
        assert!(
            w[0].1 <= w[1].0,
            "seed {seed}: {}'s lease (round {}) and {}'s (round {}) overlap",
            w[0].2,
            w[0].3,
            w[1].2,
            w[1].3
        );
    }
    // Settle, then both hold the union of what each wrote last.
    for _ in 0..2 {
        office.ok(&["sync", ow.to_str().unwrap()]);
        home.ok(&["sync", hw.to_str().unwrap()]);
    }
    let mut want: BTreeMap<String, String> = o_files.into_iter().chain(h_files).collect();
    want.insert("start.txt".into(), "start\n".into());
    assert_eq!(tree(&ow), want, "seed {seed}: office");
    assert_eq!(tree(&hw), want, "seed {seed}: home");
}

/// A sync killed with SIGKILL while it holds the lease leaves it behind; the other machine's
/// next sync takes it over (this host: the holder's process is gone) and says so.
#[test]
fn a_lease_left_by_a_killed_sync_is_taken_over() {
    let d = tempfile::tempdir().unwrap();
    let (office, ow, home, hw, nas) = pair(d.path());
    // Enough to push that the sync is still running when it is killed.
    for i in 0..400 {
        write(&ow.join(format!("bulk/{i:03}.bin")), &"x".repeat(64 << 10));
    }
    let mut c = spawn_sync(&office, &ow, &[]);
    let state = nas.join(".briefcase");
    // The office's own lease, not released (a released record stays until the next one).
    let leased = || {
        fs::read_dir(&state).unwrap().flatten().any(|e| {
            e.file_name().to_string_lossy().starts_with("lease.")
                && fs::read_to_string(e.path()).is_ok_and(|t| {
                    t.contains("\"name\":\"office\"") && t.contains("\"released\":false")
                })
        })
    };
    while !leased() && c.try_wait().unwrap().is_none() {
        std::thread::yield_now();
    }
    let _ = c.kill();
    let (_, text) = finish(c);
    if !leased() {
        // The whole sync finished before the lease was seen: nothing to take over this time.
        eprintln!("the sync ended first:\n{text}");
        return;
    }
    let (code, out) = finish(spawn_sync(&home, &hw, &[]));
    assert!(code == 0 || code == 4, "home exited {code}:\n{out}");
    assert!(
        out.contains("took over the lease of mirror nas from office") && out.contains("is gone"),
        "{out}"
    );
    // And the office, run again, finishes its work.
    office.ok(&["sync", ow.to_str().unwrap()]);
    home.ok(&["sync", hw.to_str().unwrap()]);
    assert_eq!(tree(&ow), tree(&hw));
}

/// A lease record written by a machine elsewhere (forged here as its sync would write it).
fn foreign_lease(nas: &Path, n: u64, expires_in_s: f64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let rec = serde_json::json!({
        "replica": "00000000000000aa",
        "name": "laptop",
        "host": "elsewhere.example",
        "pid": 4242,
        "start": 1,
        "since_ns": now,
        "expires_ns": now + (expires_in_s * 1e9) as i64,
        "released": false,
    });
    fs::write(
        nas.join(".briefcase").join(format!("lease.{n}")),
        serde_json::to_vec(&rec).unwrap(),
    )
    .unwrap();
}

/// Another host's lease: the sync waits for it and reports the mirror busy when the wait ends
/// first (exit 3, naming the holder); once it expires, the sync takes it over and says why (a
/// wait of more than 2 s is said in the log).
#[test]
fn another_hosts_lease_is_waited_for_then_taken_over_after_its_expiry() {
    let d = tempfile::tempdir().unwrap();
    let (_office, _ow, home, hw, nas) = pair(d.path());
    foreign_lease(&nas, 50, 60.0);
    let (code, out) = finish(spawn_sync(
        &home,
        &hw,
        &[("BRIEFCASE_LEASE_WAIT_SECS", "0.3")],
    ));
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("is busy: synced by laptop (host elsewhere.example, pid 4242)"),
        "{out}"
    );
    foreign_lease(&nas, 51, 3.0);
    let (code, out) = finish(spawn_sync(
        &home,
        &hw,
        &[("BRIEFCASE_LEASE_WAIT_SECS", "60")],
    ));
    assert!(code == 0 || code == 4, "{out}");
    assert!(
        out.contains("is being synced by laptop") && out.contains("it expired at"),
        "{out}"
    );
    let left: Vec<_> = fs::read_dir(nas.join(".briefcase"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("lease."))
        .collect();
    assert_eq!(left.len(), 1, "old records removed: {left:?}");
}
