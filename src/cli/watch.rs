//! `briefcase watch DIR [TARGET...]`: init and add mirrors as needed, sync, then follow changes
//! on both sides (inotify on the folder; inotify on mirrors that are local paths, a periodic
//! sync for the rest; mirrors that come back are noticed by their path and by mount changes)
//! until SIGINT/SIGTERM, finishing the batch in flight. The machinery is the daemon's, for one
//! folder ([`briefcase::daemon::folder`]), without the control socket.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use briefcase::config::{Dirs, MirrorConfig};
use briefcase::daemon::control::{Client, Request, Response, QUICK_TIMEOUT};
use briefcase::daemon::{FolderSpec, RunOptions};
use tokio::sync::oneshot;

/// Arguments of `watch`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The folder (initialised if it is not one yet).
    pub dir: PathBuf,
    /// Mirrors to add if not configured yet (`/path` or `dir:/path`).
    pub targets: Vec<String>,
    /// Seconds between checks for mirrors that came back online, and syncs with mirrors that
    /// cannot be watched.
    #[arg(long, default_value_t = 30)]
    pub interval: u64,
    /// Seconds between full rescans of the folder and of watched mirrors (catches what no event
    /// reported; inotify reports everything else as it happens). Syncthing's default is 3600.
    #[arg(long, default_value_t = 3600)]
    pub rescan_interval: u64,
}

pub async fn run(dirs: &Dirs, a: Args) -> Result<u8> {
    let rep = super::init::open_or_init(dirs, &a.dir)?;
    let root = rep.root.clone();
    drop(rep);
    if let Some(pid) = daemon_running(dirs, &root) {
        bail!(
            "the briefcase daemon (pid {pid}) already runs folder {}; see `briefcase status {}`, or stop the daemon (`systemctl --user stop briefcase`) to watch it here",
            root.display(),
            root.display()
        );
    }
    for t in &a.targets {
        super::mirror::add(dirs, &root, t, None, false).await?;
    }
    let mirrors: Vec<MirrorConfig> = super::load_config(dirs)?
        .folder(&root)
        .map(|f| f.mirrors.clone())
        .unwrap_or_default();
    let options = RunOptions {
        interval: Duration::from_secs(a.interval.max(1)),
        rescan_interval: Duration::from_secs(a.rescan_interval.max(1)),
    };
    let (synced_tx, synced_rx) = oneshot::channel();
    let shown = root.clone();
    tokio::spawn(async move {
        if let Ok(n) = synced_rx.await {
            eprintln!(
                "watching {} with {n} mirror(s); Ctrl-C to stop",
                shown.display()
            );
        }
    });
    briefcase::daemon::watch_folder(
        FolderSpec {
            root: root.clone(),
            mirrors,
        },
        dirs.data.clone(),
        super::daemon::backend_factory(dirs),
        options,
        super::daemon::shutdown_signal()?,
        Some(synced_tx),
    )
    .await?;
    eprintln!("stopped watching {}", root.display());
    Ok(super::EXIT_OK)
}

/// The PID of a daemon that runs folder `root` (two processes must not sync one folder).
fn daemon_running(dirs: &Dirs, root: &std::path::Path) -> Option<u32> {
    let mut c = Client::connect(&dirs.runtime).ok()??;
    match c
        .call(
            &Request::Status {
                folder: Some(root.to_path_buf()),
            },
            Some(QUICK_TIMEOUT),
        )
        .ok()?
    {
        Response::Status { pid, folders } if !folders.is_empty() => Some(pid),
        _ => None,
    }
}
