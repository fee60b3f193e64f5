//! The randomized **live** model test (issue 8, "Prove it"): operations are applied to a folder
//! *while* `briefcase watch FOLDER NAS` runs (the real binary, with its own XDG dirs), not only
//! between syncs, so that events land in every phase of the watcher's debounce and of a running
//! sync.
//!
//! # The world
//!
//! One writer: only the test writes, and only in `FOLDER`. `NAS` is a `dir` mirror that `watch`
//! creates. The test keeps a model of the tree it made (paths → directory or file bytes) and of
//! the paths it deleted and never created again.
//!
//! # The operations
//!
//! Steps drawn from a seeded RNG (xorshift; `BRIEFCASE_LIVE_SEED`, printed at the start and on
//! failure), each one or a burst of file-system calls with no pause between them:
//! - create/overwrite a file (unique content: `wNNNNN` and padding; a path never holds the same
//!   size twice, so that no failure is the stat scanner's known blind spot of a recycled inode
//!   with the same size in the same coarse mtime tick), append, delete,
//!   rename a file (half of them over an existing file), mkdir, `rm -r` of a subtree, rename a
//!   directory;
//! - bursts on the same paths within microseconds (git's lock files and editors): `x.lock`
//!   written and renamed over `x`; `y.tmp` created and deleted; create/delete/create one name;
//!   a file written and deleted at once; `a → b → a`; vim's save (`4913` created and deleted,
//!   `f → f~`, `f` written, `f~` deleted); editor temp files (`.f.swp`, `#f#`, `.~lock.f#`)
//!   created or removed, some left in place across checks;
//! - a `.git` layout in `proj/.git`: a "commit" (objects written as `objects/xx/tmp_obj_*`, made
//!   read-only and renamed to their final names, `index.lock` renamed over `index`, the reflog
//!   appended, `refs/heads/main.lock` renamed over `refs/heads/main`), `index.lock` created and
//!   removed (an aborted command), `HEAD.lock` over `HEAD`, `gc.pid` created and removed.
//!
//! Between steps the test sleeps 0 ms (a third of the time), up to 5 ms, or up to 30 ms.
//!
//! # What is checked
//!
//! `BRIEFCASE_LIVE_ROUNDS` rounds (default 3) of: `BRIEFCASE_LIVE_OPS / ROUNDS` steps (default 300
//! in all) → wait until the mirror holds what the folder holds and the watcher is quiet (polled
//! every 50 ms; the tree and the log unchanged for 10 polls in a row; deadline 60 s) → check:
//! 1. the mirror tree equals the folder tree, leaving out `.briefcase/`, `.briefcase-folder` and
//!    the names never replicated: `*.lock` and `gc.pid` inside `.git`, `tmp_*` under `objects/`
//!    inside `.git`, editor temp files (`*.swp *.swo *.swx *~ .#* #*# 4913 *.tmp .~lock.*#`);
//! 2. no name never replicated is on the mirror at all;
//! 3. no conflict copy (`.conflict-` in a path) on either side, and `briefcase conflicts FOLDER`
//!    lists none;
//! 4. nothing resurrected: no path the test deleted and never created again exists in the
//!    folder or on the mirror;
//! 5. the folder equals the test's model (single writer: briefcase never changes the folder);
//! 6. the watch log (`BRIEFCASE_LOG=info`) has no line about a conflict and no "deferred" line
//!    about a path "changed on mirror";
//! 7. `watch` is still running (and, at the end, stops on SIGTERM with exit code 0).
//!
//! A file-system call of the test that fails (briefcase changed the folder under it) fails the
//! test at once, with checks 4 and 5 of the folder.
//!
//! On failure: the seed (the sequence of operations is the seed's; the timing, and so what the
//! watcher sees, is not), the failed checks, the last 50 file-system calls, the diffs, for each
//! path involved the test's calls on it and the log's lines about it, and the tail of the log.
//! `BRIEFCASE_LIVE_KEEP=1` keeps the folder, the mirror and the log.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use briefcase::reconcile::conflict::{is_conflict_copy, original_of};
use briefcase_mirror::RelPath;

mod support;
use support::{strip_ansi, Machine};

/// Poll period while waiting for convergence.
const POLL: Duration = Duration::from_millis(50);
/// Polls in a row with nothing changing (trees and log) before the checks run.
const QUIET_POLLS: usize = 10;
/// Deadline for convergence after a burst of operations (never asserted as a duration).
const CONVERGENCE_DEADLINE: Duration = Duration::from_secs(60);
/// File-system calls kept for the failure report.
const OPS_SHOWN: usize = 50;

fn env_num(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

// ---------------------------------------------------------------------------------------------
// Randomness

/// xorshift64*, seeded through splitmix64.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 1 } else { z })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `pct` percent.
    fn chance(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }

    fn pick<T: Clone>(&mut self, v: &[T]) -> Option<T> {
        if v.is_empty() {
            None
        } else {
            Some(v[self.below(v.len())].clone())
        }
    }

    fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b"0123456789abcdef"[self.below(16)]))
            .collect()
    }

    fn alnum(&mut self, n: usize) -> String {
        const A: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        (0..n).map(|_| char::from(A[self.below(A.len())])).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Trees

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
    Link(String),
}

impl Node {
    fn show(&self) -> String {
        match self {
            Node::Dir => "dir".into(),
            Node::Link(t) => format!("symlink -> {t}"),
            Node::File(b) => {
                let s = String::from_utf8_lossy(b);
                let s: String = s.chars().take(48).collect();
                format!("file {} B {:?}", b.len(), s)
            }
        }
    }
}

type Tree = BTreeMap<String, Node>;

/// The tree under `root`, without briefcase's own `.briefcase/` and `.briefcase-folder` at the
/// root. Entries that vanish while it is read (briefcase renaming its temp files on the mirror)
/// are left out.
fn read_tree(root: &Path) -> Tree {
    let mut out = Tree::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Tree) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for de in rd.flatten() {
        let p = de.path();
        let Ok(rel) = p.strip_prefix(root) else {
            continue;
        };
        let rel = rel.to_string_lossy().into_owned();
        if rel == ".briefcase" || rel == ".briefcase-folder" {
            continue;
        }
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.file_type().is_symlink() {
            if let Ok(t) = fs::read_link(&p) {
                out.insert(rel, Node::Link(t.display().to_string()));
            }
        } else if m.is_dir() {
            out.insert(rel, Node::Dir);
            walk(root, &p, out);
        } else if let Ok(b) = fs::read(&p) {
            out.insert(rel, Node::File(b));
        }
    }
}

/// An editor's temp file name (never replicated).
fn editor_temp(name: &str) -> bool {
    name.ends_with(".swp")
        || name.ends_with(".swo")
        || name.ends_with(".swx")
        || name.ends_with('~')
        || name.starts_with(".#")
        || (name.len() >= 2 && name.starts_with('#') && name.ends_with('#'))
        || name == "4913"
        || name.ends_with(".tmp")
        || (name.starts_with(".~lock.") && name.ends_with('#'))
}

/// Whether `rel` is a name never replicated (itself or through a parent): editor temp files,
/// and inside a `.git` directory git's lock files, `gc.pid`, and `tmp_*` under `objects/`.
fn never_replicated(rel: &str) -> bool {
    let comps: Vec<&str> = rel.split('/').collect();
    for (i, c) in comps.iter().enumerate() {
        if editor_temp(c) {
            return true;
        }
        if let Some(g) = comps[..i].iter().position(|x| *x == ".git") {
            if c.ends_with(".lock") || *c == "gc.pid" {
                return true;
            }
            if c.starts_with("tmp_") && comps[g + 1..i].contains(&"objects") {
                return true;
            }
        }
    }
    false
}

fn replicated(t: &Tree) -> Tree {
    t.iter()
        .filter(|(k, _)| !never_replicated(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Lines saying how `a` (named `an`) and `b` differ; empty when equal.
fn diff(an: &str, a: &Tree, bn: &str, b: &Tree) -> Vec<String> {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut out = Vec::new();
    for k in keys {
        match (a.get(k), b.get(k)) {
            (Some(x), None) => out.push(format!("  only in {an}: {k} ({})", x.show())),
            (None, Some(y)) => out.push(format!("  only in {bn}: {k} ({})", y.show())),
            (Some(x), Some(y)) if x != y => out.push(format!(
                "  differs: {k}\n      {an}: {}\n      {bn}: {}",
                x.show(),
                y.show()
            )),
            _ => {}
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The running `briefcase watch`

/// `briefcase watch FOLDER NAS` with its stderr (and stdout) in a log file; stopped by PID
/// (SIGTERM, then waiting) when dropped.
struct Watch {
    child: Option<Child>,
    log: PathBuf,
}

impl Watch {
    fn start(m: &Machine, folder: &Path, nas: &Path, log: &Path) -> Watch {
        let f = fs::File::create(log).expect("create the log");
        let f2 = f.try_clone().expect("clone the log handle");
        let child = m
            .cmd()
            .arg("watch")
            .arg(folder)
            .arg(nas)
            .env("BRIEFCASE_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(f2)
            .stderr(f)
            .spawn()
            .expect("start briefcase watch");
        Watch {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    fn log_text(&self) -> String {
        fs::read(&self.log)
            .map(|b| strip_ansi(&String::from_utf8_lossy(&b)))
            .unwrap_or_default()
    }

    fn log_len(&self) -> u64 {
        fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    /// `Some(status)` once the process has exited.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, then wait (SIGKILL after 30 s); the exit status.
    fn stop(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        if let Ok(Some(st)) = c.try_wait() {
            return Some(st);
        }
        if let Some(pid) = rustix::process::Pid::from_raw(c.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            match c.try_wait() {
                Ok(Some(st)) => return Some(st),
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    eprintln!(
                        "briefcase watch (pid {}) ignored SIGTERM for 30 s: killing it",
                        c.id()
                    );
                    let _ = c.kill();
                    return c.wait().ok();
                }
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Log lines that report a conflict (the counters `conflicts=0` and `0 conflict(s)` of a sync
/// that had none do not count).
fn conflict_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| {
            let rest = l
                .to_ascii_lowercase()
                .replace("conflicts=0", "")
                .replace(" 0 conflict(s)", "");
            rest.contains("conflict")
        })
        .map(str::to_string)
        .collect()
}

/// "deferred" log lines about a path that "changed on mirror".
fn mirror_deferred_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("deferred") && l.contains("changed on mirror"))
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The world: the folder, the mirror, the model

struct World {
    folder: PathBuf,
    nas: PathBuf,
    /// What the folder must hold (everything the test made, editor temp files included).
    model: Tree,
    /// Paths the test deleted (or renamed away) and did not create again since.
    gone: BTreeSet<String>,
    /// The last file-system calls.
    ops: VecDeque<String>,
    /// Every call, with the paths it touched (for the history of the paths that failed).
    history: Vec<(String, Vec<String>)>,
    /// The sizes each path has held: a path never holds a size twice (see `freshen`).
    sizes: BTreeMap<String, BTreeSet<usize>>,
    /// Every call made.
    calls: usize,
    writes: u64,
    t0: Instant,
    /// "r1 s17 lock-replace", for the op log.
    label: String,
}

/// Directories the generic operations create and remove.
const DIRS: &[&str] = &[
    "d0", "d1", "d2", "d0/e0", "d0/e1", "d1/e0", "d1/e1", "d2/e0", "d2/e1", "d0/e0/g0", "d1/e1/g0",
    "d2/e0/g0",
];
/// File names the generic operations use, in any directory.
const NAMES: &[&str] = &["f0", "f1", "f2", "f3", "f4", "notes.txt", "Cargo.lock"];
/// Object directories in `proj/.git/objects`.
const OBJ_DIRS: &[&str] = &["ab", "cd", "ef", "01"];

fn parent_of(p: &str) -> &str {
    p.rfind('/').map_or("", |i| &p[..i])
}

fn name_of(p: &str) -> &str {
    p.rfind('/').map_or(p, |i| &p[i + 1..])
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn under(p: &str, dir: &str) -> bool {
    p == dir || (p.len() > dir.len() && p.starts_with(dir) && p.as_bytes()[dir.len()] == b'/')
}

impl World {
    fn abs(&self, rel: &str) -> PathBuf {
        self.folder.join(rel)
    }

    fn note(&mut self, what: String, paths: &[&str]) {
        self.calls += 1;
        let ms = self.t0.elapsed().as_secs_f64() * 1000.0;
        if self.ops.len() == OPS_SHOWN {
            self.ops.pop_front();
        }
        let line = format!("{ms:>9.1} ms  {:<28} {what}", self.label);
        self.ops.push_back(line.clone());
        self.history
            .push((line, paths.iter().map(|p| p.to_string()).collect()));
    }

    /// The calls that touched `p`, a path under it or a directory above it.
    fn history_of(&self, p: &str) -> Vec<&str> {
        self.history
            .iter()
            .filter(|(_, ps)| ps.iter().any(|q| under(p, q) || under(q, p)))
            .map(|(l, _)| l.as_str())
            .collect()
    }

    fn content(&mut self, rng: &mut Rng) -> Vec<u8> {
        self.writes += 1;
        let pad = rng.below(64);
        let mut s = format!("w{:05}", self.writes);
        s.extend(std::iter::repeat_n('.', pad));
        s.push('\n');
        s.into_bytes()
    }

    /// `c` padded (before its last byte) to a size that none of `paths` has held yet. A
    /// stat-based scanner cannot tell two versions of a path apart when they have the same
    /// size, the same inode (recycled: a file deleted and created again, or `x.lock` renamed
    /// over `x`) and the same mtime (the kernel's coarse clock ticks every few ms): the known
    /// blind spot of every such scanner, which this test does not probe.
    fn freshen(&self, mut c: Vec<u8>, paths: &[&str]) -> Vec<u8> {
        let held = |n: usize| {
            paths
                .iter()
                .any(|p| self.sizes.get(*p).is_some_and(|s| s.contains(&n)))
        };
        while held(c.len()) {
            let at = c.len().saturating_sub(1);
            c.insert(at, b'.');
        }
        c
    }

    fn created(&mut self, p: &str, n: Node) {
        if let Node::File(b) = &n {
            self.sizes.entry(p.to_string()).or_default().insert(b.len());
        }
        self.model.insert(p.to_string(), n);
        self.gone.remove(p);
    }

    /// Removes `p` and everything under it from the model; they are gone.
    fn take_subtree(&mut self, p: &str) -> Vec<(String, Node)> {
        let keys: Vec<String> = self
            .model
            .range(p.to_string()..)
            .take_while(|(k, _)| k.starts_with(p))
            .filter(|(k, _)| under(k, p))
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .map(|k| {
                let n = self.model.remove(&k).expect("in the model");
                self.gone.insert(k.clone());
                (k, n)
            })
            .collect()
    }

    // --- file-system calls, each applied to the folder and to the model

    fn write(&mut self, p: &str, c: Vec<u8>) -> io::Result<()> {
        self.write_as(p, c, &[])
    }

    /// Writes `p` with a size that neither `p` nor `also` (where it will be renamed) has held.
    fn write_as(&mut self, p: &str, c: Vec<u8>, also: &[&str]) -> io::Result<()> {
        let mut paths = vec![p];
        paths.extend_from_slice(also);
        let c = self.freshen(c, &paths);
        self.note(
            format!(
                "write {p} ({} B, {})",
                c.len(),
                String::from_utf8_lossy(&c[..6.min(c.len())])
            ),
            &[p],
        );
        fs::write(self.abs(p), &c)?;
        self.created(p, Node::File(c));
        Ok(())
    }

    fn append(&mut self, p: &str, c: &[u8]) -> io::Result<()> {
        self.append_as(p, c, &[])
    }

    /// Appends to `p`, making a size that neither `p` nor `also` has held.
    fn append_as(&mut self, p: &str, c: &[u8], also: &[&str]) -> io::Result<()> {
        use std::io::Write as _;
        let cur = match self.model.get(p) {
            Some(Node::File(b)) => b.len(),
            _ => 0,
        };
        let mut paths = vec![p];
        paths.extend_from_slice(also);
        let mut c = c.to_vec();
        let held = |n: usize| {
            paths
                .iter()
                .any(|q| self.sizes.get(*q).is_some_and(|s| s.contains(&n)))
        };
        while held(cur + c.len()) {
            let at = c.len().saturating_sub(1);
            c.insert(at, b'.');
        }
        let c = &c[..];
        self.note(format!("append {p} (+{} B)", c.len()), &[p]);
        let mut f = fs::OpenOptions::new().append(true).open(self.abs(p))?;
        f.write_all(c)?;
        drop(f);
        match self.model.get_mut(p) {
            Some(Node::File(b)) => {
                b.extend_from_slice(c);
                let n = b.len();
                self.sizes.entry(p.to_string()).or_default().insert(n);
            }
            _ => {
                return Err(io::Error::other(format!(
                    "append: {p} is no file in the model"
                )))
            }
        }
        Ok(())
    }

    fn remove(&mut self, p: &str) -> io::Result<()> {
        self.note(format!("rm {p}"), &[p]);
        fs::remove_file(self.abs(p))?;
        self.take_subtree(p);
        Ok(())
    }

    fn mkdir(&mut self, p: &str) -> io::Result<()> {
        self.note(format!("mkdir {p}"), &[p]);
        fs::create_dir(self.abs(p))?;
        self.created(p, Node::Dir);
        Ok(())
    }

    fn rmtree(&mut self, p: &str) -> io::Result<()> {
        self.note(format!("rm -r {p}"), &[p]);
        fs::remove_dir_all(self.abs(p))?;
        self.take_subtree(p);
        Ok(())
    }

    /// `rename(2)` of a file or directory (over an existing file, or an empty directory).
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        let over = self.model.contains_key(to);
        self.note(
            format!("mv {from} {to}{}", if over { " (over it)" } else { "" }),
            &[from, to],
        );
        fs::rename(self.abs(from), self.abs(to))?;
        let moved = self.take_subtree(from);
        // What `to` held is replaced (not gone: the name still exists).
        let replaced: Vec<String> = self
            .model
            .keys()
            .filter(|k| under(k, to))
            .cloned()
            .collect();
        for k in replaced {
            self.model.remove(&k);
        }
        for (k, n) in moved {
            let nk = format!("{to}{}", &k[from.len()..]);
            self.created(&nk, n);
        }
        Ok(())
    }

    fn read_only(&mut self, p: &str) -> io::Result<()> {
        self.note(format!("chmod 0444 {p}"), &[p]);
        fs::set_permissions(self.abs(p), fs::Permissions::from_mode(0o444))
    }

    // --- what exists

    fn is_plain(p: &str) -> bool {
        !under(p, "proj") && !never_replicated(p)
    }

    /// Directories of the generic operations, the root ("") included.
    fn dirs(&self) -> Vec<String> {
        std::iter::once(String::new())
            .chain(
                self.model
                    .iter()
                    .filter(|(k, n)| **n == Node::Dir && Self::is_plain(k))
                    .map(|(k, _)| k.clone()),
            )
            .collect()
    }

    fn files(&self) -> Vec<String> {
        self.model
            .iter()
            .filter(|(k, n)| matches!(n, Node::File(_)) && Self::is_plain(k))
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn is_file(&self, p: &str) -> bool {
        matches!(self.model.get(p), Some(Node::File(_)))
    }

    /// A name in an existing directory that is not a directory (a file or nothing).
    fn file_slot(&self, rng: &mut Rng) -> String {
        for _ in 0..20 {
            let d = rng.pick(&self.dirs()).unwrap_or_default();
            let p = join(&d, rng.pick(NAMES).expect("names"));
            if !matches!(self.model.get(&p), Some(Node::Dir)) {
                return p;
            }
        }
        "f0".into()
    }

    /// A name in an existing directory where nothing is.
    fn free_slot(&self, rng: &mut Rng) -> Option<String> {
        (0..20)
            .map(|_| {
                let d = rng.pick(&self.dirs()).unwrap_or_default();
                join(&d, rng.pick(NAMES).expect("names"))
            })
            .find(|p| !self.model.contains_key(p))
    }

    // --- steps

    /// One step drawn from `rng`; returns its name.
    fn step(&mut self, rng: &mut Rng, label: &str) -> io::Result<&'static str> {
        const KINDS: &[(&str, usize)] = &[
            ("write", 14),
            ("append", 6),
            ("delete", 7),
            ("rename-file", 8),
            ("mkdir", 5),
            ("rm-r", 3),
            ("rename-dir", 3),
            ("lock-replace", 8),
            ("tmp-create-delete", 4),
            ("create-delete-create", 4),
            ("write-delete", 4),
            ("rename-back-and-forth", 4),
            ("vim-save", 4),
            ("editor-temp", 4),
            ("git-commit", 7),
            ("git-index-lock-abort", 3),
            ("git-misc", 3),
        ];
        let total: usize = KINDS.iter().map(|k| k.1).sum();
        let mut x = rng.below(total);
        let mut kind = KINDS[0].0;
        for (k, w) in KINDS {
            if x < *w {
                kind = k;
                break;
            }
            x -= w;
        }
        self.label = format!("{label} {kind}");
        match kind {
            "write" => {
                let p = self.file_slot(rng);
                let c = self.content(rng);
                self.write(&p, c)?;
            }
            "append" => {
                if let Some(p) = rng.pick(&self.files()) {
                    let c = self.content(rng);
                    self.append(&p, &c)?;
                }
            }
            "delete" => {
                if let Some(p) = rng.pick(&self.files()) {
                    self.remove(&p)?;
                }
            }
            "rename-file" => {
                if let Some(from) = rng.pick(&self.files()) {
                    let to = if rng.chance(50) {
                        rng.pick(&self.files()).filter(|t| *t != from)
                    } else {
                        self.free_slot(rng)
                    };
                    if let Some(to) = to {
                        self.rename(&from, &to)?;
                    }
                }
            }
            "mkdir" => {
                let cand: Vec<&str> = DIRS
                    .iter()
                    .copied()
                    .filter(|d| {
                        !self.model.contains_key(*d)
                            && (parent_of(d).is_empty()
                                || self.model.get(parent_of(d)) == Some(&Node::Dir))
                    })
                    .collect();
                if let Some(d) = rng.pick(&cand) {
                    self.mkdir(d)?;
                }
            }
            "rm-r" => {
                let ds: Vec<String> = self.dirs().into_iter().filter(|d| !d.is_empty()).collect();
                if let Some(d) = rng.pick(&ds) {
                    self.rmtree(&d)?;
                }
            }
            "rename-dir" => {
                let ds: Vec<String> = self.dirs().into_iter().filter(|d| !d.is_empty()).collect();
                if let Some(from) = rng.pick(&ds) {
                    let cand: Vec<&str> = DIRS
                        .iter()
                        .copied()
                        .filter(|d| {
                            !self.model.contains_key(*d)
                                && !under(d, &from)
                                && (parent_of(d).is_empty()
                                    || self.model.get(parent_of(d)) == Some(&Node::Dir))
                        })
                        .collect();
                    if let Some(to) = rng.pick(&cand) {
                        self.rename(&from, to)?;
                    }
                }
            }
            "lock-replace" => {
                // git's and many tools' way: x.lock written, renamed over x.
                let p = self.file_slot(rng);
                let lock = format!("{p}.lock");
                if !self.model.contains_key(&lock) {
                    let c = self.content(rng);
                    self.write_as(&lock, c, &[&p])?;
                    if rng.chance(50) {
                        let c = self.content(rng);
                        self.append_as(&lock, &c, &[&p])?;
                    }
                    self.rename(&lock, &p)?;
                }
            }
            "tmp-create-delete" => {
                let d = rng.pick(&self.dirs()).unwrap_or_default();
                let p = join(&d, &format!("y{}.tmp", rng.below(3)));
                if !self.model.contains_key(&p) {
                    let c = self.content(rng);
                    self.write(&p, c)?;
                    self.remove(&p)?;
                }
            }
            "create-delete-create" => {
                let p = self.file_slot(rng);
                let c = self.content(rng);
                self.write(&p, c)?;
                self.remove(&p)?;
                let c = self.content(rng);
                self.write(&p, c)?;
            }
            "write-delete" => {
                if let Some(p) = self.free_slot(rng) {
                    let c = self.content(rng);
                    self.write(&p, c)?;
                    self.remove(&p)?;
                }
            }
            "rename-back-and-forth" => {
                if let Some(a) = rng.pick(&self.files()) {
                    let b = if rng.chance(25) {
                        rng.pick(&self.files()).filter(|b| *b != a)
                    } else {
                        self.free_slot(rng)
                    };
                    if let Some(b) = b {
                        self.rename(&a, &b)?;
                        self.rename(&b, &a)?;
                    }
                }
            }
            "vim-save" => {
                if let Some(p) = rng.pick(&self.files()) {
                    let d = parent_of(&p).to_string();
                    let probe = join(&d, "4913");
                    let backup = format!("{p}~");
                    if !self.model.contains_key(&probe) && !self.model.contains_key(&backup) {
                        self.write(&probe, Vec::new())?;
                        self.remove(&probe)?;
                        self.rename(&p, &backup)?;
                        let c = self.content(rng);
                        self.write(&p, c)?;
                        self.remove(&backup)?;
                    }
                }
            }
            "editor-temp" => {
                // A swap file, an emacs autosave or a LibreOffice lock beside a file: created,
                // or removed when there is one (so some stay across checks).
                if let Some(p) = rng.pick(&self.files()) {
                    let (d, n) = (parent_of(&p).to_string(), name_of(&p).to_string());
                    let t = match rng.below(4) {
                        0 => format!(".{n}.swp"),
                        1 => format!("#{n}#"),
                        2 => format!(".~lock.{n}#"),
                        _ => format!(".#{n}"),
                    };
                    let t = join(&d, &t);
                    if self.is_file(&t) {
                        self.remove(&t)?;
                    } else if !self.model.contains_key(&t) {
                        let c = self.content(rng);
                        self.write(&t, c)?;
                    }
                }
            }
            "git-commit" => self.git_commit(rng)?,
            "git-index-lock-abort" => {
                let c = self.content(rng);
                self.write("proj/.git/index.lock", c)?;
                if rng.chance(50) {
                    let c = self.content(rng);
                    self.append("proj/.git/index.lock", &c)?;
                }
                self.remove("proj/.git/index.lock")?;
            }
            "git-misc" => match rng.below(3) {
                0 => {
                    let c = format!(
                        "ref: refs/heads/{}\n",
                        if rng.chance(50) { "main" } else { "topic" }
                    );
                    self.write_as("proj/.git/HEAD.lock", c.into_bytes(), &["proj/.git/HEAD"])?;
                    self.rename("proj/.git/HEAD.lock", "proj/.git/HEAD")?;
                }
                1 => {
                    self.write("proj/.git/gc.pid", b"4242 office\n".to_vec())?;
                    self.remove("proj/.git/gc.pid")?;
                }
                _ => {
                    let c = format!("{} refs/heads/topic\n", rng.hex(40));
                    self.write_as(
                        "proj/.git/packed-refs.lock",
                        c.into_bytes(),
                        &["proj/.git/packed-refs"],
                    )?;
                    self.rename("proj/.git/packed-refs.lock", "proj/.git/packed-refs")?;
                }
            },
            _ => unreachable!("{kind}"),
        }
        Ok(kind)
    }

    /// What `git commit` does in `proj/.git`, in its order.
    fn git_commit(&mut self, rng: &mut Rng) -> io::Result<()> {
        // An edit in the work tree first, sometimes.
        if rng.chance(50) {
            let p = format!("proj/src{}.txt", rng.below(3));
            let c = self.content(rng);
            self.write(&p, c)?;
        }
        // Loose objects: written as tmp_obj_*, made read-only, renamed to their names.
        let mut last = String::new();
        for _ in 0..1 + rng.below(3) {
            let od = rng.pick(OBJ_DIRS).expect("dirs");
            let dir = format!("proj/.git/objects/{od}");
            if !self.model.contains_key(&dir) {
                self.mkdir(&dir)?;
            }
            let tmp = format!("{dir}/tmp_obj_{}", rng.alnum(6));
            let c = self.content(rng);
            self.write(&tmp, c)?;
            self.read_only(&tmp)?;
            last = format!("{od}{}", rng.hex(38));
            self.rename(&tmp, &format!("{dir}/{}", &last[2..]))?;
        }
        // The index.
        let c = self.content(rng);
        self.write_as("proj/.git/index.lock", c, &["proj/.git/index"])?;
        self.rename("proj/.git/index.lock", "proj/.git/index")?;
        // The branch: main.lock, the reflogs appended while it is held, then the rename.
        let line = format!("{last}\n");
        self.write_as(
            "proj/.git/refs/heads/main.lock",
            line.clone().into_bytes(),
            &["proj/.git/refs/heads/main"],
        )?;
        let log = format!("{} {last} office <o@example> commit\n", rng.hex(40));
        for l in ["proj/.git/logs/HEAD", "proj/.git/logs/refs/heads/main"] {
            if self.is_file(l) {
                self.append(l, log.as_bytes())?;
            } else {
                self.write(l, log.clone().into_bytes())?;
            }
        }
        self.rename(
            "proj/.git/refs/heads/main.lock",
            "proj/.git/refs/heads/main",
        )?;
        if rng.chance(30) {
            self.write("proj/.git/ORIG_HEAD", line.into_bytes())?;
        }
        Ok(())
    }

    /// The starting tree, made before `watch` starts.
    fn seed(&mut self, rng: &mut Rng) -> io::Result<()> {
        self.label = "setup".into();
        for d in [
            "d0",
            "d1",
            "d0/e0",
            "proj",
            "proj/.git",
            "proj/.git/refs",
            "proj/.git/refs/heads",
            "proj/.git/objects",
            "proj/.git/logs",
            "proj/.git/logs/refs",
            "proj/.git/logs/refs/heads",
        ] {
            self.mkdir(d)?;
        }
        for p in [
            "f0",
            "f1",
            "notes.txt",
            "d0/f0",
            "d0/e0/f1",
            "d1/f2",
            "proj/src0.txt",
        ] {
            let c = self.content(rng);
            self.write(p, c)?;
        }
        self.write("proj/.git/HEAD", b"ref: refs/heads/main\n".to_vec())?;
        self.write("proj/.git/config", b"[core]\n\tbare = false\n".to_vec())?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Convergence and checks

/// Waits until the mirror holds what the folder holds (replicated names) and nothing moves (the
/// two trees and the log unchanged for `QUIET_POLLS` polls). `Err` with why when the deadline
/// passes or `watch` exits.
fn converge(w: &World, watch: &mut Watch) -> Result<(), String> {
    let end = Instant::now() + CONVERGENCE_DEADLINE;
    let mut last: Option<(Tree, Tree, u64)> = None;
    let mut quiet = 0;
    loop {
        if let Some(st) = watch.exited() {
            return Err(format!(
                "briefcase watch exited ({st}) while the folder was live"
            ));
        }
        let local = replicated(&read_tree(&w.folder));
        let nas = replicated(&read_tree(&w.nas));
        let len = watch.log_len();
        let snap = (local, nas, len);
        if snap.0 == snap.1 && last.as_ref() == Some(&snap) {
            quiet += 1;
            if quiet >= QUIET_POLLS {
                return Ok(());
            }
        } else {
            quiet = 0;
        }
        if Instant::now() >= end {
            return Err(if snap.0 == snap.1 {
                format!(
                    "the trees were equal but the watcher never went quiet within {CONVERGENCE_DEADLINE:?} (its log kept growing)"
                )
            } else {
                format!("the mirror did not converge to the folder within {CONVERGENCE_DEADLINE:?}")
            });
        }
        last = Some(snap);
        std::thread::sleep(POLL);
    }
}

/// The checks of the folder alone, at any moment (the test is its only writer): nothing the
/// test deleted is back (4), and it holds what the test made (5).
fn check_folder(w: &World) -> Vec<String> {
    let mut fails = Vec::new();
    let back: Vec<&String> = w
        .gone
        .iter()
        .filter(|p| fs::symlink_metadata(w.folder.join(p)).is_ok())
        .collect();
    if !back.is_empty() {
        fails.push(format!(
            "4. resurrected in FOLDER (deleted by the test, never created again): {back:?}"
        ));
    }
    let d = diff("MODEL", &w.model, "FOLDER", &read_tree(&w.folder));
    if !d.is_empty() {
        fails.push(format!(
            "5. the folder is not what the test made ({} difference(s)):\n{}",
            d.len(),
            d.join("\n")
        ));
    }
    fails
}

/// The failed checks after convergence (empty: all hold).
fn check(w: &World, m: &Machine, watch: &mut Watch) -> Vec<String> {
    let mut fails = Vec::new();
    let local = read_tree(&w.folder);
    let nas = read_tree(&w.nas);
    // 1. The mirror holds what the folder holds.
    let d = diff("FOLDER", &replicated(&local), "NAS", &replicated(&nas));
    if !d.is_empty() {
        fails.push(format!(
            "1. mirror != folder ({} difference(s), names never replicated left out):\n{}",
            d.len(),
            d.join("\n")
        ));
    }
    // 2. Names never replicated are not on the mirror.
    let leaked: Vec<&String> = nas.keys().filter(|k| never_replicated(k)).collect();
    if !leaked.is_empty() {
        fails.push(format!(
            "2. names never replicated are on the mirror: {leaked:?}"
        ));
    }
    // 3. No conflict copies.
    let copies: Vec<String> = local
        .keys()
        .map(|k| format!("FOLDER/{k}"))
        .chain(nas.keys().map(|k| format!("NAS/{k}")))
        .filter(|k| k.contains(".conflict-"))
        .collect();
    if !copies.is_empty() {
        fails.push(format!("3. conflict copies: {copies:?}"));
    }
    let out = m
        .cmd()
        .args(["conflicts", "--json"])
        .arg(&w.folder)
        .output()
        .expect("run briefcase conflicts");
    let text = String::from_utf8_lossy(&out.stdout);
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Array(a)) if a.is_empty() => {}
        _ => fails.push(format!(
            "3. `briefcase conflicts --json` (exit {:?}) lists conflicts or failed:\n{text}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
    // 4. Nothing resurrected.
    let back: Vec<String> = w
        .gone
        .iter()
        .flat_map(|p| {
            let mut v = Vec::new();
            if fs::symlink_metadata(w.folder.join(p)).is_ok() {
                v.push(format!("FOLDER/{p}"));
            }
            if fs::symlink_metadata(w.nas.join(p)).is_ok() {
                v.push(format!("NAS/{p}"));
            }
            v
        })
        .collect();
    if !back.is_empty() {
        fails.push(format!(
            "4. resurrected (deleted by the test, never created again): {back:?}"
        ));
    }
    // 5. briefcase never changed the folder.
    let d = diff("MODEL", &w.model, "FOLDER", &local);
    if !d.is_empty() {
        fails.push(format!(
            "5. the folder is not what the test made ({} difference(s)):\n{}",
            d.len(),
            d.join("\n")
        ));
    }
    // 6. The log.
    let log = watch.log_text();
    let c = conflict_lines(&log);
    if !c.is_empty() {
        fails.push(format!(
            "6. conflict lines in the watch log:\n{}",
            c.join("\n")
        ));
    }
    let c = mirror_deferred_lines(&log);
    if !c.is_empty() {
        fails.push(format!(
            "6. 'deferred ... changed on mirror' lines in the watch log:\n{}",
            c.join("\n")
        ));
    }
    // 7. Still running.
    if let Some(st) = watch.exited() {
        fails.push(format!("7. briefcase watch exited: {st}"));
    }
    fails
}

struct Report<'a> {
    seed: u64,
    ops: u64,
    rounds: u64,
    world: &'a World,
    watch: &'a Watch,
}

impl Report<'_> {
    fn fail(&self, round: u64, fails: &[String]) -> ! {
        let w = self.world;
        let log = self.watch.log_text();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(60)..].join("\n");
        let local = read_tree(&w.folder);
        let nas = read_tree(&w.nas);
        let mut s = String::new();
        s.push_str(&format!(
            "\n==== briefcase live test FAILED in round {round} of {}\n\
             seed: {} (again: BRIEFCASE_LIVE_SEED={} BRIEFCASE_LIVE_OPS={} BRIEFCASE_LIVE_ROUNDS={} cargo test --test live)\n\
             {} file-system calls made\n",
            self.rounds, self.seed, self.seed, self.ops, self.rounds, w.calls
        ));
        s.push_str("\n---- failed checks\n");
        for f in fails {
            s.push_str(f);
            s.push('\n');
        }
        s.push_str(&format!(
            "\n---- the last {} file-system calls\n",
            w.ops.len()
        ));
        for o in &w.ops {
            s.push_str(o);
            s.push('\n');
        }
        s.push_str("\n---- diff FOLDER vs NAS (all names)\n");
        s.push_str(&diff("FOLDER", &local, "NAS", &nas).join("\n"));
        s.push_str("\n\n---- diff MODEL vs FOLDER\n");
        s.push_str(&diff("MODEL", &w.model, "FOLDER", &local).join("\n"));
        // What happened to the paths that failed: the test's calls and the log's lines.
        let mut paths: BTreeSet<String> = BTreeSet::new();
        let (rl, rn) = (replicated(&local), replicated(&nas));
        for (a, b) in [(&rl, &rn), (&w.model, &local)] {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            paths.extend(keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).cloned());
        }
        paths.extend(nas.keys().filter(|k| never_replicated(k)).cloned());
        paths.extend(
            w.gone
                .iter()
                .filter(|p| local.contains_key(*p) || nas.contains_key(*p))
                .cloned(),
        );
        for l in conflict_lines(&log)
            .iter()
            .chain(mirror_deferred_lines(&log).iter())
        {
            for key in ["path=", "copy="] {
                if let Some(i) = l.find(key) {
                    let v = &l[i + key.len()..];
                    paths.insert(v.split(' ').next().unwrap_or_default().to_string());
                }
            }
        }
        let originals: Vec<String> = paths
            .iter()
            .filter_map(|p| RelPath::try_from(p.as_str()).ok())
            .filter(is_conflict_copy)
            .filter_map(|c| original_of(&c))
            .map(|o| o.to_string())
            .collect();
        paths.extend(originals);
        for p in paths.iter().take(12) {
            let calls = w.history_of(p);
            s.push_str(&format!(
                "\n\n---- {p}: the test's calls ({} in all, the last 15)\n",
                calls.len()
            ));
            s.push_str(&calls[calls.len().saturating_sub(15)..].join("\n"));
            let about: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| {
                    l.contains(&format!("path={p} "))
                        || l.contains(&format!("copy={p}"))
                        || l.ends_with(&format!("path={p}"))
                })
                .collect();
            s.push_str(&format!(
                "\n     log lines about it ({}, the last 15):\n",
                about.len()
            ));
            s.push_str(&about[about.len().saturating_sub(15)..].join("\n"));
        }
        s.push_str(&format!(
            "\n\n---- tail of the watch log ({})\n{tail}\n",
            self.watch.log.display()
        ));
        eprintln!("{s}");
        panic!(
            "live test failed in round {round} (seed {}): {}",
            self.seed,
            fails
                .iter()
                .map(|f| f.lines().next().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn live_folder_under_watch_converges_without_conflicts() {
    let seed = env_num("BRIEFCASE_LIVE_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        t ^ u64::from(std::process::id()).rotate_left(32)
    });
    let total_ops = env_num("BRIEFCASE_LIVE_OPS").unwrap_or(300).max(1);
    let rounds = env_num("BRIEFCASE_LIVE_ROUNDS").unwrap_or(3).max(1);
    eprintln!(
        "briefcase live test: seed {seed} (BRIEFCASE_LIVE_SEED={seed}), {total_ops} operations in {rounds} round(s)"
    );
    let mut rng = Rng::new(seed);
    let started = Instant::now();

    let m = Machine::new("office");
    let tmp = tempfile::tempdir().expect("tempdir");
    let folder = tmp.path().join("work");
    let nas = tmp.path().join("nas");
    fs::create_dir_all(&folder).expect("mkdir work");
    let mut w = World {
        folder: folder.clone(),
        nas: nas.clone(),
        model: Tree::new(),
        gone: BTreeSet::new(),
        ops: VecDeque::new(),
        history: Vec::new(),
        sizes: BTreeMap::new(),
        calls: 0,
        writes: 0,
        t0: Instant::now(),
        label: String::new(),
    };
    w.seed(&mut rng).expect("the starting tree");

    let log = tmp.path().join("watch.log");
    let mut watch = Watch::start(&m, &folder, &nas, &log);
    // Up and through its first sync.
    let end = Instant::now() + CONVERGENCE_DEADLINE;
    while !watch.log_text().contains("Ctrl-C to stop") {
        if let Some(st) = watch.exited() {
            panic!(
                "briefcase watch exited at start ({st}):\n{}",
                watch.log_text()
            );
        }
        assert!(
            Instant::now() < end,
            "briefcase watch never finished its first sync:\n{}",
            watch.log_text()
        );
        std::thread::sleep(POLL);
    }

    let keep = std::env::var_os("BRIEFCASE_LIVE_KEEP").is_some();
    let mut step = 0u64;
    let mut kinds: BTreeMap<&'static str, usize> = BTreeMap::new();
    for round in 1..=rounds {
        let n = total_ops / rounds + u64::from(round <= total_ops % rounds);
        for _ in 0..n {
            step += 1;
            let label = format!("r{round} s{step}");
            match w.step(&mut rng, &label) {
                Ok(k) => *kinds.entry(k).or_default() += 1,
                Err(e) => {
                    let mut fails = vec![format!(
                        "5. a file-system call of step {step} failed ({e}): briefcase changed the folder under the test?"
                    )];
                    fails.extend(check_folder(&w));
                    let r = Report {
                        seed,
                        ops: total_ops,
                        rounds,
                        world: &w,
                        watch: &watch,
                    };
                    if keep {
                        eprintln!("kept: {}", tmp.path().display());
                        let _ = tmp.keep();
                    }
                    r.fail(round, &fails);
                }
            }
            let pause = match rng.below(3) {
                0 => 0,
                1 => rng.below(6),
                _ => 5 + rng.below(26),
            };
            if pause > 0 {
                std::thread::sleep(Duration::from_millis(pause as u64));
            }
        }
        let t = Instant::now();
        let mut fails = Vec::new();
        if let Err(e) = converge(&w, &mut watch) {
            fails.push(e);
        }
        fails.extend(check(&w, &m, &mut watch));
        eprintln!(
            "round {round}: {n} steps, {} calls so far, settled/checked in {:.2} s, {} failed check(s)",
            w.calls,
            t.elapsed().as_secs_f64(),
            fails.len()
        );
        if !fails.is_empty() {
            let r = Report {
                seed,
                ops: total_ops,
                rounds,
                world: &w,
                watch: &watch,
            };
            if keep {
                eprintln!("kept: {}", tmp.path().display());
                let _ = tmp.keep();
            }
            r.fail(round, &fails);
        }
    }
    // 7. It stops on SIGTERM, cleanly.
    let st = watch.stop();
    let log_text = watch.log_text();
    assert!(
        st.is_some_and(|s| s.success()) && log_text.contains("stopped watching"),
        "briefcase watch did not stop cleanly on SIGTERM ({st:?}), seed {seed}:\n{log_text}"
    );
    eprintln!(
        "briefcase live test passed: seed {seed}, {step} steps ({} file-system calls) in {:.1} s; steps: {kinds:?}",
        w.calls,
        started.elapsed().as_secs_f64()
    );
}
