//! Test support: a "machine" is a set of XDG dirs and a replica name, so two machines can run
//! side by side in temp dirs and drive the real `briefcase` binary.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod pair;

pub struct Machine {
    pub home: tempfile::TempDir,
    pub name: String,
}

impl Machine {
    pub fn new(name: &str) -> Machine {
        Machine {
            home: tempfile::tempdir().unwrap(),
            name: name.into(),
        }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_briefcase"));
        c.env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .env("XDG_DATA_HOME", self.home.path().join("data"))
            .env("XDG_RUNTIME_DIR", self.home.path().join("run"))
            .env("BRIEFCASE_NAME", &self.name)
            .env("BRIEFCASE_LOG", "warn");
        c
    }

    /// Runs briefcase with `args`; returns (exit code, stdout+stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String) {
        let out: Output = self.cmd().args(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// Runs and asserts success (exit 0 or 4 = attention).
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, text) = self.run(args);
        assert!(
            code == 0 || code == 4,
            "briefcase {args:?} exited {code}:\n{text}"
        );
        text
    }

    /// Runs, asserts exit 0, and returns stdout alone.
    pub fn stdout(&self, args: &[&str]) -> String {
        let out: Output = self.cmd().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "briefcase {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.home.path().join("data").join("briefcase")
    }
}

/// The office makes `dir` a folder with a stick mirror at `target` (`stick:MNT`) encrypted to
/// itself and to `home`'s key (`briefcase id` there), and syncs it once.
pub fn share_a_stick(office: &Machine, home: &Machine, dir: &Path, target: &str) {
    let key = home.stdout(&["id"]).trim().to_string();
    let d = dir.to_str().unwrap();
    office.ok(&["init", d]);
    office.ok(&[
        "mirror",
        "add",
        d,
        target,
        "--recipient",
        &format!("home={key}"),
    ]);
    office.ok(&["sync", d]);
}

/// Path → content ("D" for dirs, "L:target" for links) of a tree, without briefcase's own files.
pub fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for de in rd.flatten() {
        let p = de.path();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if rel == ".briefcase" || rel == ".briefcase-folder" {
            continue;
        }
        let m = fs::symlink_metadata(&p).unwrap();
        if m.file_type().is_symlink() {
            out.insert(rel, format!("L:{}", fs::read_link(&p).unwrap().display()));
        } else if m.is_dir() {
            out.insert(rel, "D".into());
            walk(root, &p, out);
        } else {
            out.insert(
                rel,
                String::from_utf8_lossy(&fs::read(&p).unwrap()).into_owned(),
            );
        }
    }
}

/// Every `.briefcase-tmp-*` left under `root`.
pub fn temp_files(root: &Path) -> Vec<String> {
    let mut all = BTreeMap::new();
    walk(root, root, &mut all);
    all.keys()
        .filter(|k| k.contains(".briefcase-tmp-"))
        .cloned()
        .collect()
}

pub fn write(p: &Path, content: &str) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(p, content).unwrap();
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
