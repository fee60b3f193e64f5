//! `briefcase conflicts` (through the daemon when one runs the folder: it rescans in its turn) and
//! `briefcase resolve`.
//!
//! A conflict copy is an ordinary file named `NAME.conflict-REPLICA-YYYYMMDD-HHMMSS.EXT`.
//! Resolving is a local file operation (keep one version at the name, drop or rename the other)
//! followed by a rescan; the next sync carries the decision to every replica.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use briefcase::config::Dirs;
use briefcase::daemon::control::{Client, ErrorKind, Request, Response};
use briefcase::daemon::outcome::{conflict_rows, replica_of, ConflictRow};
use briefcase::reconcile::conflict::{is_conflict_copy, original_of, CONFLICT_TAG};
use briefcase::replica::LocalReplica;
use briefcase_mirror::beneath::Beneath;
use briefcase_mirror::{Entry, RelPath};

/// Arguments of `conflicts`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The folder (default: the one containing the current directory).
    pub dir: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// Which version to keep.
#[derive(Debug, Clone, clap::ValueEnum, PartialEq, Eq)]
pub enum KeepKind {
    /// The version at the original name on this machine.
    Local,
    /// The version with the newest modification time.
    Newest,
    /// Both: the copy is renamed so it is no longer a conflict.
    Both,
}

/// Arguments of `resolve`.
#[derive(Debug, clap::Args)]
pub struct ResolveArgs {
    /// A conflict copy, or the original file (all its copies), or with --all the folder.
    pub path: Option<PathBuf>,
    /// Resolve every conflict of the folder.
    #[arg(long)]
    pub all: bool,
    /// local | newest | both | REPLICA (the name in the copy's file name).
    #[arg(long)]
    pub keep: String,
}

/// For a ref kept under `.git/refs/briefcase/` (briefcase::vcs): its ref name
/// (`refs/briefcase/home/heads/main`).
fn kept_git_ref(copy: &str) -> Option<String> {
    let at = copy.find(".git/refs/")?;
    copy.get(at + ".git/".len()..).map(str::to_string)
}

fn copies(rep: &LocalReplica) -> Result<Vec<Entry>> {
    Ok(rep
        .journal
        .entries()?
        .into_values()
        .filter(|e| !e.deleted && is_conflict_copy(&e.path))
        .collect())
}

/// The conflict copies as the daemon running folder `root` sees them after its rescan; `None`
/// when no daemon runs it.
fn through_daemon(dirs: &Dirs, root: &Path) -> Result<Option<Vec<ConflictRow>>> {
    let Some(mut c) = Client::connect(&dirs.runtime)? else {
        return Ok(None);
    };
    match c.call(
        &Request::Conflicts {
            folder: root.to_path_buf(),
        },
        None,
    )? {
        Response::Conflicts { conflicts, .. } => Ok(Some(conflicts)),
        Response::Error {
            kind: ErrorKind::UnknownFolder,
            ..
        } => Ok(None),
        Response::Error { message, .. } => bail!("{message}"),
        other => bail!("the daemon answered a conflicts request with {other:?}; restart it with `systemctl --user restart briefcase`"),
    }
}

pub fn list(dirs: &Dirs, a: ListArgs) -> Result<u8> {
    let root = super::find_root(a.dir.as_deref())?;
    let rows = match through_daemon(dirs, &root)? {
        Some(rows) => rows,
        None => {
            let mut rep = LocalReplica::open(&root, &dirs.data)?;
            rep.rescan(None)?;
            conflict_rows(&rep)?
        }
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if rows.is_empty() {
        println!("no conflicts in {}", root.display());
    } else {
        for r in &rows {
            println!(
                "{}  (other version of {}, from {})",
                r.copy,
                r.original.as_deref().unwrap_or("?"),
                r.replica
            );
            if let Some(git_ref) = kept_git_ref(&r.copy) {
                println!(
                    "    a git branch moved on both sides: `git log --all` shows both; merge it (`git merge {git_ref}`), then drop it (`git update-ref -d {git_ref}`)"
                );
            }
        }
        println!(
            "{} conflict(s); settle with `briefcase resolve PATH --keep local|newest|both|REPLICA`",
            rows.len()
        );
    }
    Ok(if rows.is_empty() {
        super::EXIT_OK
    } else {
        super::EXIT_ATTENTION
    })
}

pub fn resolve(dirs: &Dirs, a: ResolveArgs) -> Result<u8> {
    let target = a.path.clone();
    if !a.all && target.is_none() {
        bail!("name a conflict copy or its original (`briefcase resolve PATH --keep …`), or use `--all DIR`");
    }
    let mut rep = super::open_folder(
        dirs,
        target.as_deref().map(|p| {
            if p.is_dir() {
                p
            } else {
                p.parent().unwrap_or(p)
            }
        }),
    )?;
    rep.rescan(None)?;
    let all = copies(&rep)?;
    let chosen: Vec<Entry> = if a.all {
        all
    } else {
        let t = target.clone().unwrap_or_default();
        let abs = if t.is_absolute() {
            t.clone()
        } else {
            std::env::current_dir()?.join(&t)
        };
        let abs = abs
            .parent()
            .and_then(|d| d.canonicalize().ok())
            .map(|d| d.join(abs.file_name().unwrap_or_default()))
            .unwrap_or(abs);
        let rel = abs.strip_prefix(&rep.root).with_context(|| {
            format!(
                "{} is not inside folder {}",
                t.display(),
                rep.root.display()
            )
        })?;
        let rel = RelPath::from_path(rel).with_context(|| format!("bad path {}", t.display()))?;
        all.into_iter()
            .filter(|e| e.path == rel || original_of(&e.path).as_ref() == Some(&rel))
            .collect()
    };
    if chosen.is_empty() {
        println!("nothing to resolve");
        return Ok(super::EXIT_OK);
    }
    let keep = match a.keep.as_str() {
        "local" => Keep::Local,
        "newest" => Keep::Newest,
        "both" => Keep::Both,
        other => Keep::Replica(other.to_string()),
    };
    // Every rename and removal goes through the folder's root held open, as the engine's do
    // (no parent is followed if someone swaps it for a symlink meanwhile).
    let beneath = Beneath::open(&rep.root)
        .with_context(|| format!("cannot open folder {}", rep.root.display()))?;
    let anchor = |p: &RelPath| {
        beneath
            .resolve(p)
            .with_context(|| format!("refused {p} in folder {}", rep.root.display()))
    };
    let mut n = 0;
    for c in &chosen {
        let Some(orig) = original_of(&c.path) else {
            continue;
        };
        let (copy_shown, orig_shown) = (c.path.under(&rep.root), orig.under(&rep.root));
        let (copy_p, orig_p) = (anchor(&c.path)?, anchor(&orig)?);
        let copy_wins = match &keep {
            Keep::Local => false,
            Keep::Both => {
                let plain = c.path.display().replacen(CONFLICT_TAG, "-", 1);
                let plain_rel = RelPath::try_from(plain.as_str())
                    .with_context(|| format!("bad path {plain}"))?;
                let dest = anchor(&plain_rel)?;
                // Never over an existing file (`RENAME_NOREPLACE`).
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    copy_p.path(),
                    rustix::fs::CWD,
                    dest.path(),
                    rustix::fs::RenameFlags::NOREPLACE,
                )
                .map_err(std::io::Error::from)
                .with_context(|| {
                    format!(
                        "cannot keep both: rename {} to {}",
                        copy_shown.display(),
                        plain_rel.under(&rep.root).display()
                    )
                })?;
                println!("kept both: {} is now {}", c.path, plain);
                n += 1;
                continue;
            }
            Keep::Newest => {
                let mc = fs::symlink_metadata(copy_p.path())
                    .and_then(|m| m.modified())
                    .ok();
                let mo = fs::symlink_metadata(orig_p.path())
                    .and_then(|m| m.modified())
                    .ok();
                mc > mo
            }
            Keep::Replica(r) => &replica_of(&c.path) == r,
        };
        if copy_wins {
            fs::rename(copy_p.path(), orig_p.path()).with_context(|| {
                format!(
                    "rename {} over {}",
                    copy_shown.display(),
                    orig_shown.display()
                )
            })?;
            println!("{}: kept the version from {}", orig, replica_of(&c.path));
        } else {
            fs::remove_file(copy_p.path())
                .with_context(|| format!("remove {}", copy_shown.display()))?;
            println!("{}: kept the version at the name; removed {}", orig, c.path);
        }
        n += 1;
    }
    let rec = rep.rescan(None)?;
    println!("{n} conflict(s) resolved ({} change(s) journaled); the next sync carries them to the mirrors", rec.total());
    Ok(super::EXIT_OK)
}

enum Keep {
    Local,
    Newest,
    Both,
    Replica(String),
}
