//! `briefcase daemon [--interval S] [--rescan-interval S]`: every configured folder under watch,
//! the control socket for `status`/`sync`/`conflicts`, mirrors noticed as they come and go, until
//! SIGINT/SIGTERM. The work is in [`briefcase::daemon`]; this file only wires the CLI to it.

use std::time::Duration;

use anyhow::Result;
use briefcase::config::Dirs;
use briefcase::daemon::{BackendFactory, RunOptions};
use tokio::signal::unix::{signal, SignalKind};

/// Arguments of `daemon`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds between probes of offline mirrors (a fallback: mount changes and the mirror's
    /// path are watched), syncs with mirrors that cannot be watched, and re-reads of the config.
    #[arg(long, default_value_t = 30)]
    pub interval: u64,
    /// Seconds between full rescans of each folder and of watched mirrors.
    #[arg(long, default_value_t = 3600)]
    pub rescan_interval: u64,
}

pub async fn run(dirs: &Dirs, a: Args) -> Result<u8> {
    let options = RunOptions {
        interval: Duration::from_secs(a.interval.max(1)),
        rescan_interval: Duration::from_secs(a.rescan_interval.max(1)),
    };
    briefcase::daemon::run(
        dirs.clone(),
        options,
        backend_factory(dirs),
        shutdown_signal()?,
    )
    .await?;
    Ok(super::EXIT_OK)
}

/// The daemon's backend factory: every configured mirror through the registry
/// ([`briefcase::backends::open_configured`], pinned as the config records).
pub fn backend_factory(dirs: &Dirs) -> BackendFactory {
    briefcase::backends::factory(dirs)
}

/// Completes at the first SIGTERM or SIGINT (Ctrl-C).
///
/// # Errors
/// The signal handlers cannot be installed.
pub fn shutdown_signal() -> Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
