//! `briefcase status` and `briefcase log`.

use std::path::PathBuf;

use anyhow::Result;
use briefcase::config::Dirs;
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
    let mirrors: Vec<serde_json::Value> = cfg
        .folder(&rep.root)
        .map(|f| f.mirrors.clone())
        .unwrap_or_default()
        .iter()
        .map(|m| {
            let s = statuses.iter().find(|s| s.name == m.name);
            serde_json::json!({
                "name": m.name,
                "target": m.target,
                "send_only": m.send_only,
                "last_sync_ns": s.and_then(|s| s.last_sync_ns),
                "last_result": s.and_then(|s| s.last_result.clone()),
                "paused": s.and_then(|s| s.paused.clone()),
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
    if conflicts > 0 {
        println!("conflicts {conflicts}: see `briefcase conflicts`");
    }
    for m in v["mirrors"].as_array().into_iter().flatten() {
        let when = m["last_sync_ns"]
            .as_i64()
            .map(fmt_time)
            .unwrap_or_else(|| "never".into());
        println!(
            "mirror   {:<10} {}  last sync: {}  {}{}",
            m["name"].as_str().unwrap_or(""),
            m["target"].as_str().unwrap_or(""),
            when,
            m["last_result"].as_str().unwrap_or(""),
            m["paused"]
                .as_str()
                .map(|p| format!("  PAUSED: {p}"))
                .unwrap_or_default()
        );
    }
    Ok(super::EXIT_OK)
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
