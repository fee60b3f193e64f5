//! Harness of `tests/clients.rs`: a machine running `briefcase watch FOLDER NAS` as a child
//! process, trees compared without the names that are never replicated, convergence polled with
//! a deadline, and the checks every scenario makes after every step (mirror == folder, no
//! conflict copies, no temp litter, git repositories intact on both sides, a clean watch log).
//!
//! Included by `tests/clients.rs` as `#[path = "support/clients.rs"] mod kit;` next to
//! `mod support;` (whose `Machine` it uses).
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::fs;
use std::hash::Hasher;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{strip_ansi, Machine};

/// How often convergence is polled.
pub const POLL: Duration = Duration::from_millis(50);
/// Trees (and the watch log) must stay unchanged this long to count as converged: the engine may
/// still be about to act on what it just saw.
pub const SETTLED: Duration = Duration::from_millis(600);

/// The deadline for one convergence (`CLIENTS_DEADLINE_S`, default 60 s). A deadline, never a
/// timing assertion: a slow machine only waits longer.
pub fn deadline() -> Duration {
    Duration::from_secs(
        std::env::var("CLIENTS_DEADLINE_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    )
}

// ---------------------------------------------------------------------------------------------
// Names

/// The last component of a relative path.
fn base(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap_or(rel)
}

/// Editor and tool temp files the engine never replicates (issue 8's list).
pub fn is_editor_temp(name: &str) -> bool {
    name.ends_with(".swp")
        || name.ends_with(".swo")
        || name.ends_with(".swx")
        || name.ends_with('~')
        || name.starts_with(".#")
        || (name.len() >= 2 && name.starts_with('#') && name.ends_with('#'))
        || name == "4913"
        || name.ends_with(".tmp")
        || (name.starts_with(".~lock.") && name.ends_with('#'))
        || name.ends_with("___jb_tmp___")
        || name.ends_with("___jb_old___")
}

/// The part of `rel` inside its innermost `.git` directory, if it is inside one.
fn inside_git(rel: &str) -> Option<&str> {
    if let Some(i) = rel.rfind("/.git/") {
        return Some(&rel[i + 6..]);
    }
    rel.strip_prefix(".git/")
}

/// git's transient files: lock files, `gc.pid`, temp objects and packs, quarantine directories.
pub fn is_git_transient(rel: &str) -> bool {
    let Some(g) = inside_git(rel) else {
        return false;
    };
    let name = base(g);
    if name.ends_with(".lock") || name == "gc.pid" {
        return true;
    }
    if let Some(o) = g.strip_prefix("objects/") {
        if o.starts_with("incoming-") {
            return true;
        }
        if o.split('/')
            .any(|c| c.starts_with("tmp_") || c.starts_with(".tmp-"))
        {
            return true;
        }
    }
    false
}

/// Names a comparison of the two trees skips on both sides: briefcase's own state, its temp
/// files (checked for separately on the mirror) and everything the engine never replicates.
pub fn skipped(rel: &str) -> bool {
    rel == ".briefcase"
        || rel.starts_with(".briefcase/")
        || rel == ".briefcase-folder"
        || base(rel).starts_with(".briefcase-tmp-")
        || is_editor_temp(base(rel))
        || is_git_transient(rel)
}

/// `XXXXXX`: six characters of the alphabet mkstemp draws from.
fn six_random(s: &str) -> bool {
    s.len() == 6 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Temp names of the tools the scenarios run, which exist only while the tool runs: rsync's
/// `.NAME.XXXXXX`, sed's `sedXXXXXX`, GLib's `.goutputstream-XXXXXX`, VS Code's `NAME.vsctmp`.
pub fn is_tool_temp(name: &str) -> bool {
    if let Some(rest) = name.strip_prefix('.') {
        if let Some((stem, suffix)) = rest.rsplit_once('.') {
            if !stem.is_empty() && six_random(suffix) {
                return true;
            }
        }
    }
    if let Some(rest) = name.strip_prefix("sed") {
        if six_random(rest) {
            return true;
        }
    }
    name.starts_with(".goutputstream-") || name.ends_with(".vsctmp")
}

// ---------------------------------------------------------------------------------------------
// Trees

/// One node of a tree: what "mirror == folder" compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    /// Length, a hash of the content, and whether the owner may execute it.
    File {
        len: u64,
        hash: u64,
        exec: bool,
    },
    Link(PathBuf),
}

pub type Tree = BTreeMap<String, Node>;

/// Walks `root` (not following symlinks), calling `f(rel, metadata)` for every entry; `descend`
/// says whether to enter a directory (and whether to report an entry at all). Entries that vanish
/// while walked are left out.
fn walk_raw(
    root: &Path,
    dir: &Path,
    keep: &dyn Fn(&str) -> bool,
    f: &mut dyn FnMut(&str, &Path, &fs::Metadata),
) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut names: Vec<_> = rd.flatten().map(|d| d.path()).collect();
    names.sort();
    for p in names {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if !keep(&rel) {
            continue;
        }
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        f(&rel, &p, &m);
        if m.is_dir() {
            walk_raw(root, &p, keep, f);
        }
    }
}

fn hash_file(p: &Path) -> Option<(u64, u64)> {
    let bytes = fs::read(p).ok()?;
    let mut h = DefaultHasher::new();
    h.write(&bytes);
    Some((bytes.len() as u64, h.finish()))
}

/// The tree under `root` without the skipped names.
pub fn snapshot(root: &Path) -> Tree {
    let mut out = Tree::new();
    walk_raw(root, root, &|rel| !skipped(rel), &mut |rel, p, m| {
        let node = if m.file_type().is_symlink() {
            match fs::read_link(p) {
                Ok(t) => Node::Link(t),
                Err(_) => return,
            }
        } else if m.is_dir() {
            Node::Dir
        } else {
            match hash_file(p) {
                Some((len, hash)) => Node::File {
                    len,
                    hash,
                    exec: m.permissions().mode() & 0o100 != 0,
                },
                None => return,
            }
        };
        out.insert(rel.to_string(), node);
    });
    out
}

/// Every path under `root` (all names, except briefcase's state directory `.briefcase/` at the
/// root) for which `pred` holds.
pub fn find(root: &Path, pred: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    walk_raw(root, root, &|rel| rel != ".briefcase", &mut |rel, _, _| {
        if pred(rel) {
            out.push(rel.to_string());
        }
    });
    out
}

fn show(n: Option<&Node>) -> String {
    match n {
        None => "absent".into(),
        Some(Node::Dir) => "dir".into(),
        Some(Node::Link(t)) => format!("symlink -> {}", t.display()),
        Some(Node::File { len, hash, exec }) => {
            format!(
                "file {len} B #{:08x}{}",
                hash >> 32,
                if *exec { " +x" } else { "" }
            )
        }
    }
}

/// A readable difference of two trees (at most 40 paths listed), or `None` when equal.
pub fn diff(folder: &Tree, mirror: &Tree) -> Option<String> {
    if folder == mirror {
        return None;
    }
    let mut lines = Vec::new();
    let mut count = 0usize;
    let keys: std::collections::BTreeSet<&String> = folder.keys().chain(mirror.keys()).collect();
    for k in keys {
        let (a, b) = (folder.get(k), mirror.get(k));
        if a != b {
            count += 1;
            if lines.len() < 40 {
                lines.push(format!("  {k}: folder {} | mirror {}", show(a), show(b)));
            }
        }
    }
    Some(format!(
        "{count} path(s) differ ({} in the folder, {} on the mirror):\n{}{}",
        folder.len(),
        mirror.len(),
        lines.join("\n"),
        if count > lines.len() { "\n  …" } else { "" }
    ))
}

/// Polls until `folder` and `nas` hold the same tree, and it (and the file `quiet`, the watch
/// log) stayed unchanged for `SETTLED`; `Err(last difference)` when `within` runs out.
pub fn converge(
    folder: &Path,
    nas: &Path,
    within: Duration,
    quiet: Option<&Path>,
) -> Result<Tree, String> {
    let end = Instant::now() + within;
    let log_len = || quiet.and_then(|q| fs::metadata(q).ok()).map(|m| m.len());
    let mut stable: Option<(Tree, Option<u64>, Instant)> = None;
    loop {
        let a = snapshot(folder);
        let b = snapshot(nas);
        let why = match diff(&a, &b) {
            None => {
                let l = log_len();
                match &stable {
                    Some((t, ll, since)) if *t == a && *ll == l => {
                        if since.elapsed() >= SETTLED {
                            return Ok(a);
                        }
                    }
                    _ => stable = Some((a, l, Instant::now())),
                }
                "equal, but the trees or the watch log kept changing (the engine never settled)"
                    .to_string()
            }
            Some(d) => {
                stable = None;
                d
            }
        };
        if Instant::now() >= end {
            return Err(why);
        }
        std::thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------------------------
// The watch process

/// `briefcase watch FOLDER NAS` as a child process, killed by PID when dropped.
pub struct Watch {
    child: Child,
    pub log: PathBuf,
}

impl Watch {
    pub fn start(m: &Machine, folder: &Path, nas: &Path, log: &Path) -> Watch {
        let mut c = m.cmd();
        c.arg("watch")
            .arg(folder)
            .arg(nas)
            .env("BRIEFCASE_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(fs::File::create(log).unwrap())
            .stderr(fs::OpenOptions::new().append(true).open(log).unwrap());
        Watch {
            child: c.spawn().unwrap(),
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log, without terminal colour codes.
    pub fn log(&self) -> String {
        strip_ansi(&fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// The last `n` lines of the log, without the notify crate's complaints about watches of
    /// directories that are already gone (hundreds after a `git gc`; their count is given).
    pub fn tail(&self, n: usize) -> String {
        let l = self.log();
        let noise = |s: &&str| {
            s.contains("Unable to remove the path from the watches")
                || s.contains("unable to remove watch descriptor from inotify")
        };
        let skipped = l.lines().filter(noise).count();
        let lines: Vec<&str> = l.lines().filter(|s| !noise(s)).collect();
        let mut out = lines[lines.len().saturating_sub(n)..].join("\n");
        if skipped > 0 {
            out.push_str(&format!(
                "\n({skipped} line(s) of notify's \"unable to remove … watch\" left out)"
            ));
        }
        out
    }

    /// `None` while running, else how it ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn signal(&self, sig: rustix::process::Signal) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, sig);
        }
    }

    /// SIGSTOP: the process is frozen (a busy or swapped-out machine); the kernel queues the
    /// inotify events meanwhile.
    pub fn freeze(&self) {
        self.signal(rustix::process::Signal::STOP);
    }

    /// SIGCONT after `freeze`.
    pub fn thaw(&self) {
        self.signal(rustix::process::Signal::CONT);
    }

    /// SIGTERM and wait (up to 30 s, then SIGKILL); the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Some(st) = self.exited() {
            return Some(st);
        }
        self.thaw();
        self.signal(rustix::process::Signal::TERM);
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            if let Some(st) = self.exited() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        self.signal(rustix::process::Signal::KILL);
        self.child.wait().ok();
        None
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.signal(rustix::process::Signal::KILL);
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Commands

/// Runs `c`; panics with its output unless it succeeded.
pub fn run_ok(c: &mut Command, what: &str) -> Output {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("{what}: could not run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn write(p: &Path, content: impl AsRef<[u8]>) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(p, content).unwrap();
}

pub fn append(p: &Path, line: &str) {
    let mut f = fs::OpenOptions::new().append(true).open(p).unwrap();
    writeln!(f, "{line}").unwrap();
}

/// A small deterministic generator (xorshift), so every run builds the same trees.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: &[&str] = &[
    "fn",
    "let",
    "mut",
    "self",
    "mirror",
    "journal",
    "replica",
    "sync",
    "path",
    "entry",
    "state",
    "version",
    "vector",
    "knowledge",
    "stamp",
    "apply",
    "plan",
    "push",
    "pull",
    "rename",
    "match",
    "Some",
    "None",
    "Ok",
    "Err",
    "return",
    "impl",
    "struct",
    "pub",
    "use",
    "&",
    "=",
    "=>",
    "{",
    "}",
    "(",
    ")",
    ";",
    "//",
    "the",
    "a",
    "of",
    "to",
    "is",
    "when",
    "file",
    "tree",
    "folder",
];

/// Text that looks like source: `lines` lines of words.
pub fn text(rng: &mut Rng, lines: usize) -> String {
    let mut s = String::new();
    for _ in 0..lines {
        let indent = rng.below(4) as usize * 4;
        s.push_str(&" ".repeat(indent));
        for i in 0..(3 + rng.below(9)) {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
        }
        s.push('\n');
    }
    s
}

/// Every regular file under `root` (relative paths, sorted), skipping `.git` directories.
pub fn files_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    walk_raw(root, root, &|rel| base(rel) != ".git", &mut |rel, _, m| {
        if m.is_file() {
            out.push(rel.to_string());
        }
    });
    out
}

// ---------------------------------------------------------------------------------------------
// One scenario

/// A machine ("office") with a folder `FOLDER` watched against the dir mirror `NAS`, in one temp
/// dir; `HOME` for git and the editors is a temp dir too, so the host's configuration does not
/// matter.
pub struct Scenario {
    pub name: String,
    pub m: Machine,
    pub tmp: tempfile::TempDir,
    pub folder: PathBuf,
    pub nas: PathBuf,
    pub home: PathBuf,
    pub watch: Option<Watch>,
    /// With `CLIENTS_KEEP_GOING=1` a failed check is recorded and the scenario goes on (to see
    /// every step that fails); the test still fails at `finish`.
    keep_going: bool,
    failures: Vec<String>,
    started: Instant,
}

impl Scenario {
    pub fn new(name: &str) -> Scenario {
        let m = Machine::new("office");
        let tmp = tempfile::tempdir().unwrap();
        let folder = tmp.path().join("FOLDER");
        let nas = tmp.path().join("NAS");
        let home = tmp.path().join("home");
        fs::create_dir_all(&folder).unwrap();
        fs::create_dir_all(home.join(".config")).unwrap();
        Scenario {
            name: name.into(),
            m,
            tmp,
            folder,
            nas,
            home,
            watch: None,
            keep_going: std::env::var("CLIENTS_KEEP_GOING").is_ok_and(|v| v == "1"),
            failures: Vec::new(),
            started: Instant::now(),
        }
    }

    /// A scratch directory outside the folder.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.tmp.path().join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn log_path(&self) -> PathBuf {
        self.tmp.path().join("watch.log")
    }

    /// Starts `briefcase watch FOLDER NAS` and waits until it runs: the mirror carries its state
    /// and a file written into the folder after that arrived there (written again every second
    /// until it does, so a write that fell between the first scan and the watches being set up
    /// does not stall the start).
    pub fn start_watch(&mut self) {
        let w = Watch::start(&self.m, &self.folder, &self.nas, &self.log_path());
        self.watch = Some(w);
        let probe = self.folder.join("briefcase-test-ready.txt");
        let end = Instant::now() + deadline() * 2;
        let mut written: Option<Instant> = None;
        loop {
            if let Some(st) = self.watch.as_mut().unwrap().exited() {
                panic!(
                    "[{}] briefcase watch exited at start ({st}):\n{}",
                    self.name,
                    self.watch.as_ref().unwrap().log()
                );
            }
            if self.nas.join(".briefcase").is_dir()
                && written.is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
            {
                write(&probe, "ready\n");
                written = Some(Instant::now());
            }
            if written.is_some()
                && fs::read_to_string(self.nas.join("briefcase-test-ready.txt"))
                    .ok()
                    .as_deref()
                    == Some("ready\n")
            {
                break;
            }
            assert!(
                Instant::now() < end,
                "[{}] briefcase watch never became ready:\n{}",
                self.name,
                self.watch.as_ref().unwrap().log()
            );
            std::thread::sleep(POLL);
        }
        eprintln!(
            "[{}] watch ready, {:.1} s into the scenario (pid {})",
            self.name,
            self.started.elapsed().as_secs_f64(),
            self.watch.as_ref().unwrap().pid()
        );
    }

    fn tail(&self) -> String {
        self.watch.as_ref().map(|w| w.tail(60)).unwrap_or_default()
    }

    /// Records (or, by default, panics with) a failed check, with the tail of the watch log.
    pub fn fail(&mut self, step: &str, what: String) {
        let msg = format!(
            "[{}] step {step:?}: {what}\n--- watch log (last 60 lines; all of it: {}) ---\n{}\n---",
            self.name,
            self.kept_log().display(),
            self.tail()
        );
        if self.keep_going {
            eprintln!("FAILED {msg}");
            self.failures.push(msg);
        } else {
            panic!("{msg}");
        }
    }

    /// Waits for convergence after `step`, then checks: mirror == folder, no conflict copies on
    /// either side and none listed by `briefcase conflicts`, no temp litter on the mirror, no
    /// git transient left in any repository on either side, no conflict line in the watch log,
    /// and the watch still running.
    pub fn settle(&mut self, step: &str) {
        let t0 = Instant::now();
        let log = self.log_path();
        match converge(&self.folder, &self.nas, deadline(), Some(&log)) {
            Ok(tree) => eprintln!(
                "[{}] {step}: converged in {:.2} s ({} paths)",
                self.name,
                t0.elapsed().as_secs_f64(),
                tree.len()
            ),
            Err(d) => {
                let what = format!(
                    "mirror did not converge within {:?}; last difference: {d}",
                    deadline()
                );
                self.fail(step, what);
            }
        }
        self.check_watch_alive(step);
        self.check_no_conflict_copies(step);
        self.check_conflicts_command(step);
        self.check_no_litter(step);
        self.check_no_git_transients(step);
        self.check_log(step);
    }

    fn check_watch_alive(&mut self, step: &str) {
        if let Some(st) = self.watch.as_mut().and_then(|w| w.exited()) {
            self.fail(step, format!("briefcase watch exited ({st})"));
        }
    }

    fn check_no_conflict_copies(&mut self, step: &str) {
        for (side, root) in [
            ("folder", self.folder.clone()),
            ("mirror", self.nas.clone()),
        ] {
            let found = find(&root, &|rel| rel.contains(".conflict-"));
            if !found.is_empty() {
                self.fail(step, format!("conflict copies in the {side}: {found:#?}"));
            }
        }
    }

    fn check_conflicts_command(&mut self, step: &str) {
        let out = self
            .m
            .cmd()
            .args(["conflicts", "--json"])
            .arg(&self.folder)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let rows: Result<serde_json::Value, _> = serde_json::from_str(&text);
        let empty = matches!(&rows, Ok(serde_json::Value::Array(a)) if a.is_empty());
        if !out.status.success() || !empty {
            self.fail(
                step,
                format!(
                    "`briefcase conflicts` exited {} and listed:\n{text}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ),
            );
        }
    }

    /// No briefcase temp file, editor temp or tool temp on the mirror (a tool temp name that is
    /// a real file in the folder too is the user's file, not litter).
    fn check_no_litter(&mut self, step: &str) {
        let folder = self.folder.clone();
        let litter = find(&self.nas, &|rel| {
            let name = base(rel);
            name.starts_with(".briefcase-tmp-")
                || is_editor_temp(name)
                || is_git_transient(rel)
                || (is_tool_temp(name) && !folder.join(rel).exists())
        });
        if !litter.is_empty() {
            self.fail(step, format!("temp litter on the mirror: {litter:#?}"));
        }
        let local = find(&self.folder, &|rel| {
            base(rel).starts_with(".briefcase-tmp-")
        });
        if !local.is_empty() {
            self.fail(
                step,
                format!("briefcase temp files left in the folder: {local:#?}"),
            );
        }
    }

    /// No `*.lock`, `gc.pid` or `tmp_pack_*` in a `.git` directory, locally or on the mirror.
    fn check_no_git_transients(&mut self, step: &str) {
        for (side, root) in [
            ("folder", self.folder.clone()),
            ("mirror", self.nas.clone()),
        ] {
            let found = find(&root, &|rel| {
                inside_git(rel).is_some_and(|g| {
                    let n = base(g);
                    n.ends_with(".lock") || n == "gc.pid" || n.starts_with("tmp_pack_")
                })
            });
            if !found.is_empty() {
                self.fail(
                    step,
                    format!("git lock/temp files in the {side}: {found:#?}"),
                );
            }
        }
    }

    /// Lines of the watch log that speak of a conflict (the counters `conflicts=0` and
    /// `0 conflict(s)` of the "synced"/"reconciled" lines do not count, nor paths: this
    /// repository's own `src/cli/conflicts.rs` is among the files the scenarios edit).
    pub fn conflict_lines(&self) -> Vec<String> {
        let log = self.watch.as_ref().map(|w| w.log()).unwrap_or_default();
        log.lines()
            .filter(|l| {
                let words: Vec<&str> = l.split_whitespace().filter(|w| !w.contains('/')).collect();
                let s = words
                    .join(" ")
                    .to_lowercase()
                    .replace("conflicts=0", "")
                    .replace(" 0 conflict(s)", "");
                s.contains("conflict")
            })
            .map(str::to_string)
            .collect()
    }

    fn check_log(&mut self, step: &str) {
        let lines = self.conflict_lines();
        if !lines.is_empty() {
            self.fail(
                step,
                format!("the watch log speaks of conflicts:\n{}", lines.join("\n")),
            );
        }
    }

    /// `briefcase status --json`: the mirror is not paused (the mass-delete guard).
    pub fn check_not_paused(&mut self, step: &str) {
        let out = self
            .m
            .cmd()
            .args(["status", "--json"])
            .arg(&self.folder)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let mirrors = v["mirrors"].as_array().cloned().unwrap_or_default();
        let paused: Vec<_> = mirrors
            .iter()
            .filter(|m| !m["paused"].is_null() || m["state"] == "paused")
            .collect();
        if !out.status.success() || mirrors.is_empty() || !paused.is_empty() {
            self.fail(
                step,
                format!(
                    "`briefcase status` (exit {}) shows a paused or no mirror:\n{text}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ),
            );
        }
    }

    // -- git --------------------------------------------------------------------------------

    /// `git ARGS` in `dir` with a fixed identity and no host configuration.
    pub fn git_cmd(&self, dir: &Path) -> Command {
        let mut c = Command::new("git");
        c.arg("-C")
            .arg(dir)
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Office")
            .env("GIT_AUTHOR_EMAIL", "office@example.org")
            .env("GIT_COMMITTER_NAME", "Office")
            .env("GIT_COMMITTER_EMAIL", "office@example.org")
            .env("GIT_EDITOR", "true")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE")
            .env_remove("GIT_OBJECT_DIRECTORY")
            .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES")
            .env_remove("GIT_CONFIG_GLOBAL")
            .env_remove("GIT_CONFIG_PARAMETERS")
            .stdin(Stdio::null());
        c
    }

    /// `git ARGS` in `dir`; panics unless it succeeds; its stdout.
    pub fn git(&self, dir: &Path, args: &[&str]) -> String {
        let out = run_ok(
            self.git_cmd(dir).args(args),
            &format!(
                "[{}] git -C {} {}",
                self.name,
                dir.display(),
                args.join(" ")
            ),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// After `settle`, for the repository at `FOLDER/REL`: `git fsck --full` clean on the
    /// mirror's copy, the same HEAD on both sides, and the local repository still takes a commit
    /// (`git commit --allow-empty`, which a stale `index.lock` would refuse). The empty commit
    /// reaches the mirror with the next step's `settle`.
    pub fn check_git(&mut self, step: &str, rel: &str) {
        let local = self.folder.join(rel);
        let mirror = self.nas.join(rel);
        let fsck = self
            .git_cmd(&mirror)
            .args([
                "-c",
                "safe.directory=*",
                "fsck",
                "--full",
                "--no-dangling",
                "--no-progress",
            ])
            .output()
            .unwrap();
        let fsck_out = format!(
            "{}{}",
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        );
        if !fsck.status.success() || !fsck_out.trim().is_empty() {
            self.fail(
                step,
                format!(
                    "git fsck --full on the mirror's copy exited {}:\n{fsck_out}",
                    fsck.status
                ),
            );
        }
        let head = |dir: &Path| {
            let o = self
                .git_cmd(dir)
                .args(["-c", "safe.directory=*", "rev-parse", "HEAD"])
                .output()
                .unwrap();
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout).trim(),
                String::from_utf8_lossy(&o.stderr).trim()
            )
        };
        let (h_local, h_mirror) = (head(&local), head(&mirror));
        if h_local != h_mirror {
            self.fail(
                step,
                format!("HEAD differs: folder {h_local}, mirror {h_mirror}"),
            );
        }
        let commit = self
            .git_cmd(&local)
            .args(["commit", "-q", "--allow-empty", "-m"])
            .arg(format!("still usable after {step}"))
            .output()
            .unwrap();
        if !commit.status.success() {
            self.fail(
                step,
                format!(
                    "the local repository no longer takes a commit:\n{}{}",
                    String::from_utf8_lossy(&commit.stdout),
                    String::from_utf8_lossy(&commit.stderr)
                ),
            );
        }
    }

    /// Where the watch log is kept after the test: `CARGO_TARGET_TMPDIR/clients/NAME.log`.
    pub fn kept_log(&self) -> PathBuf {
        Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("clients")
            .join(format!("{}.log", self.name))
    }

    /// Stops the watch; fails if any check failed (with `CLIENTS_KEEP_GOING=1`). Prints what
    /// the log says about deferred steps, for the record.
    pub fn finish(mut self) {
        let log = self.watch.as_ref().map(|w| w.log()).unwrap_or_default();
        let deferred = log.lines().filter(|l| l.contains("deferred")).count();
        eprintln!(
            "[{}] done in {:.1} s; the watch log has {} line(s), {deferred} \"deferred\"",
            self.name,
            self.started.elapsed().as_secs_f64(),
            log.lines().count()
        );
        if let Some(w) = self.watch.as_mut() {
            let st = w.stop();
            if st.is_none_or(|s| !s.success()) {
                let what = format!("briefcase watch did not stop cleanly on SIGTERM: {st:?}");
                self.fail("stop", what);
            }
        }
        eprintln!(
            "[{}] watch log kept at {}",
            self.name,
            self.kept_log().display()
        );
        if !self.failures.is_empty() {
            panic!(
                "[{}] {} check(s) failed:\n\n{}",
                self.name,
                self.failures.len(),
                self.failures.join("\n\n")
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A real repository

/// Copies regular files of `src` into `dst` (same relative paths) until `budget` files were
/// copied in all; skips `target`/`.git` directories, big files, git attribute/ignore files (they
/// would change what git tracks) and names the engine never replicates.
fn copy_some(src: &Path, dst: &Path, budget: &mut usize, per_tree: usize) {
    let mut copied = 0usize;
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        let mut entries: Vec<_> = rd.flatten().map(|d| d.path()).collect();
        entries.sort();
        entries.reverse();
        for p in entries {
            if *budget == 0 || copied >= per_tree {
                return;
            }
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let Ok(m) = fs::symlink_metadata(&p) else {
                continue;
            };
            if m.is_dir() {
                if name != "target" && name != ".git" {
                    stack.push(p);
                }
                continue;
            }
            if !m.is_file()
                || m.len() > 256 * 1024
                || name == ".gitignore"
                || name == ".gitattributes"
                || is_editor_temp(&name)
                || is_tool_temp(&name)
                || name.contains(".conflict-")
            {
                continue;
            }
            let rel = p.strip_prefix(src).unwrap();
            let to = dst.join(rel);
            fs::create_dir_all(to.parent().unwrap()).unwrap();
            if fs::copy(&p, &to).is_ok() {
                let mut perm = fs::metadata(&to).unwrap().permissions();
                perm.set_mode(perm.mode() | 0o600);
                let _ = fs::set_permissions(&to, perm);
                copied += 1;
                *budget -= 1;
            }
        }
    }
}

/// Fills `dir` with about `want` files of real source: this repository's `src/`, `backends/`,
/// `docs/` and `tests/`, then crates of `~/.cargo/registry/src` (at most 40 files each) under
/// `vendor/`, then generated source under `gen/` if that was not enough.
pub fn real_source(dir: &Path, want: usize) {
    let me = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut budget = want;
    for t in ["src", "backends", "docs", "tests"] {
        copy_some(&me.join(t), &dir.join(t), &mut budget, usize::MAX);
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    if let Some(reg) = cargo_home.map(|c| c.join("registry/src")) {
        let mut indexes: Vec<_> = fs::read_dir(&reg)
            .map(|rd| rd.flatten().map(|d| d.path()).collect())
            .unwrap_or_default();
        indexes.sort();
        for idx in indexes {
            let mut crates: Vec<_> = fs::read_dir(&idx)
                .map(|rd| rd.flatten().map(|d| d.path()).collect())
                .unwrap_or_default();
            crates.sort();
            for c in crates {
                if budget == 0 {
                    break;
                }
                let name = c.file_name().unwrap().to_owned();
                copy_some(&c, &dir.join("vendor").join(name), &mut budget, 40);
            }
        }
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut i = 0;
    while budget > 0 {
        let lines = 20 + rng.below(200) as usize;
        write(
            &dir.join(format!("gen/mod{:02}/file{i:04}.rs", i / 50)),
            text(&mut rng, lines),
        );
        i += 1;
        budget -= 1;
    }
}

impl Scenario {
    /// A git repository at `dir` (branch `main`) holding ~`want` files of real source, committed.
    pub fn make_repo(&self, dir: &Path, want: usize) {
        fs::create_dir_all(dir).unwrap();
        real_source(dir, want);
        self.git(dir, &["init", "-q", "-b", "main"]);
        self.git(dir, &["add", "-A"]);
        self.git(dir, &["commit", "-q", "-m", "initial import"]);
    }

    /// Appends a line `tag` to each of `files` (relative to `dir`).
    pub fn edit(&self, dir: &Path, files: &[String], tag: &str) {
        for f in files {
            append(&dir.join(f), &format!("// {tag}"));
        }
    }

    /// Saves `file` with vim, really through its save path: `backupskip=` (the default skips
    /// backups for files under /tmp, where the tests live), `writebackup` with `backupcopy` as
    /// given (`no`: rename to `NAME~` and write a new file; `yes`: copy to `NAME~` and overwrite
    /// in place; `auto`: probe with `4913`, then rename), and a swap file `.NAME.swp` that lives
    /// while vim waits 300 ms before writing.
    pub fn vim_save(&self, file: &Path, backupcopy: &str, line: &str) {
        assert!(have("vim"), "vim is not installed");
        run_ok(
            Command::new("vim")
                .args(["-u", "NONE", "-i", "NONE", "-N", "-es"])
                .arg("-c")
                .arg(format!(
                    "set nobackup writebackup backupskip= backupcopy={backupcopy}"
                ))
                .arg("-c")
                .arg(format!("normal Go{line}"))
                .args(["-c", "sleep 300m", "-c", "wq"])
                .arg(file)
                .env("HOME", &self.home)
                .env("TERM", "dumb")
                .stdin(Stdio::null())
                .stdout(Stdio::null()),
            &format!("vim (backupcopy={backupcopy}) {}", file.display()),
        );
        let now = fs::read_to_string(file).unwrap();
        assert!(
            now.ends_with(&format!("{line}\n")),
            "vim did not save {}",
            file.display()
        );
    }
}

impl Drop for Scenario {
    /// Keeps the watch log (the temp dir goes), also when the test failed.
    fn drop(&mut self) {
        let to = self.kept_log();
        if let Some(d) = to.parent() {
            let _ = fs::create_dir_all(d);
        }
        let _ = fs::copy(self.log_path(), &to);
    }
}
