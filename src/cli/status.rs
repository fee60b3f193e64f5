//! `briefcase status` (the daemon's live view when one runs the folder, else what this command
//! sees by probing each mirror) and `briefcase log`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use briefcase::config::{Dirs, MirrorConfig};
use briefcase::daemon::control::{Client, ControlError, Request, Response, QUICK_TIMEOUT};
use briefcase::daemon::outcome::changes_waiting;
use briefcase::daemon::view::{Availability, FolderView, MirrorView};
use briefcase::replica::LocalReplica;
use briefcase_mirror::EntryKind;

/// Arguments of `status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The folder (default: the one containing the current directory).
    pub dir: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `log`.
#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// The folder (default: the one containing the current directory).
    pub dir: Option<PathBuf>,
    /// How many entries (newest last).
    #[arg(short = 'n', long, default_value_t = 50)]
    pub limit: usize,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

pub fn status(dirs: &Dirs, a: StatusArgs) -> Result<u8> {
    let rep = super::open_folder(dirs, a.dir.as_deref())?;
    let cfg = super::load_config(dirs)?;
    let entries = rep.journal.entries()?;
    let live = entries.values().filter(|e| !e.deleted);
    let (files, dirs_n, links) = live.fold((0, 0, 0), |(f, d, l), e| match e.kind {
        EntryKind::File => (f + 1, d, l),
        EntryKind::Dir => (f, d + 1, l),
        EntryKind::Symlink => (f, d, l + 1),
    });
    let bytes: u64 = entries
        .values()
        .filter(|e| !e.deleted)
        .map(|e| e.size)
        .sum();
    let conflicts = entries
        .values()
        .filter(|e| !e.deleted && briefcase::reconcile::conflict::is_conflict_copy(&e.path))
        .count();
    let statuses = rep.journal.mirror_statuses()?;
    let configured: Vec<MirrorConfig> = cfg
        .folder(&rep.root)
        .map(|f| f.mirrors.clone())
        .unwrap_or_default();
    let daemon = daemon_view(dirs, &rep.root);
    let views: Vec<MirrorView> = match &daemon {
        Some((_, f)) => f.mirrors.clone(),
        None => look_at_mirrors(dirs, &rep, &configured),
    };
    let mirrors: Vec<serde_json::Value> = configured
        .iter()
        .map(|m| {
            let s = statuses.iter().find(|s| s.name == m.name);
            let v = views.iter().find(|v| v.name == m.name);
            serde_json::json!({
                "name": m.name,
                "target": m.target,
                "send_only": m.send_only,
                "last_sync_ns": s.and_then(|s| s.last_sync_ns),
                "last_result": s.and_then(|s| s.last_result.clone()),
                "paused": s.and_then(|s| s.paused.clone()),
                "state": v.map_or("unknown", |v| v.state.as_str()),
                "detail": v.and_then(|v| v.detail.clone()),
                "last_reconciled_ns": v.and_then(|v| v.last_reconciled_ns).or(s.and_then(|s| s.last_sync_ns)),
                "changes_waiting": v.and_then(|v| v.changes_waiting),
                "removable": v.is_some_and(|v| v.removable),
                "safe_to_unplug": v.and_then(|v| v.safe_to_unplug),
                "progress": v.and_then(|v| v.progress),
            })
        })
        .collect();
    let v = serde_json::json!({
        "folder": rep.root,
        "folder_id": rep.journal.folder_id().to_string(),
        "replica_id": rep.journal.replica_id().to_string(),
        "name": rep.journal.name(),
        "osn": rep.journal.osn()?.0,
        "files": files, "dirs": dirs_n, "symlinks": links, "bytes": bytes,
        "tombstones": entries.values().filter(|e| e.deleted).count(),
        "conflicts": conflicts,
        "mirrors": mirrors,
        "daemon": daemon.as_ref().map(|(pid, f)| serde_json::json!({
            "pid": pid,
            "state": f.state,
            "error": f.error,
        })),
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(super::EXIT_OK);
    }
    println!(
        "folder   {} ({} files, {} dirs, {} symlinks, {} bytes)",
        rep.root.display(),
        files,
        dirs_n,
        links,
        bytes
    );
    println!(
        "replica  {} \"{}\", OSN {}",
        rep.journal.replica_id(),
        rep.journal.name(),
        rep.journal.osn()?
    );
    if let Some((pid, f)) = &daemon {
        match &f.error {
            Some(e) => println!("daemon   pid {pid}: cannot run this folder: {e}"),
            None => println!("daemon   pid {pid} runs this folder (live view)"),
        }
    }
    if conflicts > 0 {
        println!("conflicts {conflicts}: see `briefcase conflicts`");
    }
    for m in v["mirrors"].as_array().into_iter().flatten() {
        let when = m["last_reconciled_ns"]
            .as_i64()
            .map(fmt_time)
            .unwrap_or_else(|| "never".into());
        let progress = m["progress"]
            .as_object()
            .map(|p| {
                format!(
                    " ({} sent, {} received, {} removed there)",
                    p.get("files_sent").and_then(|v| v.as_u64()).unwrap_or(0),
                    p.get("files_received")
                        .and_then(|v| v.as_u64())
                        .unwrap_or(0),
                    p.get("removed").and_then(|v| v.as_u64()).unwrap_or(0)
                )
            })
            .unwrap_or_default();
        let waiting = m["changes_waiting"]
            .as_u64()
            .map(|n| format!("  {n} change(s) for this machine"))
            .unwrap_or_default();
        let unplug = match m["safe_to_unplug"].as_bool() {
            Some(true) => "  safe to unplug",
            Some(false) => "  do not unplug yet",
            None => "",
        };
        println!(
            "mirror   {:<10} {}  {}{}  last reconciled here: {}{}{}  {}{}",
            m["name"].as_str().unwrap_or(""),
            m["target"].as_str().unwrap_or(""),
            m["state"].as_str().unwrap_or(""),
            progress,
            when,
            waiting,
            unplug,
            m["detail"]
                .as_str()
                .or(m["last_result"].as_str())
                .map(|d| d.strip_prefix("offline: ").unwrap_or(d))
                .unwrap_or(""),
            m["paused"]
                .as_str()
                .map(|p| format!("  PAUSED: {p}"))
                .unwrap_or_default()
        );
    }
    Ok(super::EXIT_OK)
}

/// The running daemon's live view of folder `root` and its PID; `None` when no daemon runs it
/// (or it does not answer: then this command looks for itself, and says so).
fn daemon_view(dirs: &Dirs, root: &Path) -> Option<(u32, FolderView)> {
    let ask = || -> Result<Option<Response>, ControlError> {
        let Some(mut c) = Client::connect(&dirs.runtime)? else {
            return Ok(None);
        };
        c.call(
            &Request::Status {
                folder: Some(root.to_path_buf()),
            },
            Some(QUICK_TIMEOUT),
        )
        .map(Some)
    };
    match ask() {
        Ok(Some(Response::Status { pid, folders })) => folders.into_iter().next().map(|f| (pid, f)),
        Ok(_) => None,
        Err(e) => {
            eprintln!("briefcase: {e}; showing what this command can see by itself");
            None
        }
    }
}

/// Without a daemon: probes each mirror and counts the changes each reachable one carries for
/// this machine (reads its state).
fn look_at_mirrors(dirs: &Dirs, rep: &LocalReplica, mirrors: &[MirrorConfig]) -> Vec<MirrorView> {
    let look = async {
        let mut out = Vec::with_capacity(mirrors.len());
        for m in mirrors {
            let mut v = MirrorView::new(&m.name, &m.target, m.send_only);
            match super::configured_backend(dirs, rep.journal.folder_id(), m) {
                Err(e) => {
                    v.state = Availability::Error;
                    v.detail = Some(format!("{e:#}"));
                }
                Ok(b) => {
                    v.removable = b.capabilities().removable;
                    match changes_waiting(rep, b.as_ref()).await {
                        Ok(Some(n)) => {
                            v.state = Availability::Online;
                            v.changes_waiting = Some(n);
                        }
                        Ok(None) => {
                            v.state = Availability::Offline;
                            v.detail = Some(
                            "not reachable now (not mounted, not plugged in, or its marker is missing); nothing is deleted".into(),
                        );
                        }
                        Err(e) => {
                            v.state = Availability::Error;
                            v.detail = Some(e.to_string());
                        }
                    }
                }
            }
            out.push(v);
        }
        out
    };
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(look))
}

fn fmt_time(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ns / 1_000_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ns.to_string())
}

pub fn log(dirs: &Dirs, a: LogArgs) -> Result<u8> {
    let rep = super::open_folder(dirs, a.dir.as_deref())?;
    let rows = rep.journal.log_tail(a.limit)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(super::EXIT_OK);
    }
    for r in rows {
        println!(
            "{:>6} {}  {}  {:<8} {}{}",
            r.osn,
            &r.replica[..8],
            fmt_time(r.time_ns),
            r.op,
            r.path,
            r.detail.map(|d| format!("  ({d})")).unwrap_or_default()
        );
    }
    Ok(super::EXIT_OK)
}
