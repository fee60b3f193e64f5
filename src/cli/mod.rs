//! Command-line interface: one file per subcommand, a clap derive enum here.

mod clone;
mod conflicts;
mod daemon;
mod id;
mod init;
mod mirror;
mod status;
mod sync;
mod watch;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use briefcase::config::{Config, Dirs, MirrorConfig};
use briefcase::replica::{self, LocalReplica};
use briefcase_mirror::registry::SecretString;
use briefcase_mirror::Mirror;
use clap::{Parser, Subcommand};

/// Exit code: everything in sync.
pub const EXIT_OK: u8 = 0;
/// Exit code: a mirror was offline or paused (the others synced).
pub const EXIT_OFFLINE: u8 = 3;
/// Exit code: conflicts, deferred or failed paths remain.
pub const EXIT_ATTENTION: u8 = 4;

/// briefcase keeps your working folders identical across desktops, a NAS and USB sticks.
#[derive(Debug, Parser)]
#[command(name = "briefcase", version, about, long_about = None)]
pub struct Cli {
    /// More detail in the log (or set BRIEFCASE_LOG=debug).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make DIR a synced folder (marker, journal, first scan).
    #[command(after_help = "Example:\n  briefcase init ~/work")]
    Init(init::Args),
    /// Add, list or remove mirrors of a folder.
    #[command(subcommand)]
    Mirror(mirror::Command),
    /// Reconcile a folder with every reachable mirror once, both ways.
    #[command(
        after_help = "Examples:\n  briefcase sync ~/work\n  briefcase sync ~/work --mirror nas --dry-run"
    )]
    Sync(sync::Args),
    /// Make DIR a new replica of a folder that a mirror (e.g. a stick) carries, and sync it.
    #[command(
        after_help = "Examples:\n  briefcase clone stick:/media/usb ~/work\n  BRIEFCASE_PASSPHRASE=… briefcase clone stick:/media/usb ~/work --passphrase"
    )]
    Clone(clone::Args),
    /// Print this machine's public key (age1…), creating its identity on first use.
    #[command(
        after_help = "Give the printed key to the machine that sets up a stick:\n  briefcase mirror add ~/work stick:/media/usb --recipient age1…"
    )]
    Id(id::Args),
    /// Init and add mirrors as needed, sync, then follow changes on both sides until Ctrl-C.
    #[command(after_help = "Example:\n  briefcase watch ~/work /mnt/nas/work")]
    Watch(watch::Args),
    /// Run every configured folder, serve `status`/`sync`/`conflicts`, notice mirrors come and go.
    #[command(
        after_help = "Example:\n  briefcase daemon\n  systemctl --user enable --now briefcase   (see systemd/briefcase.service)"
    )]
    Daemon(daemon::Args),
    /// Show the state of a folder and its mirrors.
    #[command(after_help = "Example:\n  briefcase status ~/work --json")]
    Status(status::StatusArgs),
    /// Show the newest journal entries (OSN, time, op, path).
    #[command(after_help = "Example:\n  briefcase log ~/work")]
    Log(status::LogArgs),
    /// List conflict copies waiting to be resolved.
    #[command(after_help = "Example:\n  briefcase conflicts ~/work")]
    Conflicts(conflicts::ListArgs),
    /// Settle a conflict (or all of them) by keeping one version or both.
    #[command(
        after_help = "Examples:\n  briefcase resolve ~/work/report.txt --keep newest\n  briefcase resolve --all ~/work --keep local"
    )]
    Resolve(conflicts::ResolveArgs),
}

/// Runs a parsed command; returns the exit code.
pub async fn run(cli: Cli) -> Result<u8> {
    let dirs = Dirs::from_env()?;
    match cli.command {
        Command::Init(a) => init::run(&dirs, a),
        Command::Mirror(c) => mirror::run(&dirs, c).await,
        Command::Sync(a) => sync::run(&dirs, a).await,
        Command::Watch(a) => watch::run(&dirs, a).await,
        Command::Clone(a) => clone::run(&dirs, a).await,
        Command::Id(a) => id::run(&dirs, a),
        Command::Daemon(a) => daemon::run(&dirs, a).await,
        Command::Status(a) => status::status(&dirs, a),
        Command::Log(a) => status::log(&dirs, a),
        Command::Conflicts(a) => conflicts::list(&dirs, a),
        Command::Resolve(a) => conflicts::resolve(&dirs, a),
    }
}

/// Finds the folder root containing `start` (or the current directory): the nearest ancestor
/// holding `.briefcase-folder`.
pub fn find_root(start: Option<&Path>) -> Result<PathBuf> {
    let start = match start {
        Some(p) => p.to_path_buf(),
        None => std::env::current_dir().context("no current directory")?,
    };
    let abs = if start.exists() {
        start
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", start.display()))?
    } else {
        bail!("{} does not exist; is the disk mounted?", start.display());
    };
    let mut cur: Option<&Path> = Some(&abs);
    while let Some(d) = cur {
        if d.join(replica::MARKER).exists() {
            return Ok(d.to_path_buf());
        }
        cur = d.parent();
    }
    bail!(
        "{} is not inside a briefcase folder (no .briefcase-folder marker found); run `briefcase init DIR` first",
        abs.display()
    )
}

/// Opens the local replica of the folder containing `dir`.
pub fn open_folder(dirs: &Dirs, dir: Option<&Path>) -> Result<LocalReplica> {
    let root = find_root(dir)?;
    Ok(LocalReplica::open(&root, &dirs.data)?)
}

/// Builds the backend of the configured mirror `m` of `folder`
/// ([`briefcase::backends::open_configured`]: pinned as the config records, or pinned now).
pub fn configured_backend(
    dirs: &Dirs,
    folder: briefcase_mirror::FolderId,
    m: &MirrorConfig,
) -> Result<Box<dyn Mirror>> {
    Ok(briefcase::backends::open_configured(dirs, folder, m)?)
}

/// The recovery passphrase of a `noun` ("stick"): `BRIEFCASE_PASSPHRASE`, else asked on the
/// terminal (twice when `confirm`, for a new one).
pub fn read_passphrase(noun: &str, confirm: bool) -> Result<SecretString> {
    if let Some(p) = briefcase::backends::passphrase_from_env() {
        return Ok(p);
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        bail!("a passphrase is needed: set BRIEFCASE_PASSPHRASE or run this in a terminal");
    }
    let p = rpassword::prompt_password(format!("{noun} recovery passphrase: "))
        .context("cannot read the passphrase from the terminal")?;
    if p.is_empty() {
        bail!("the passphrase is empty; nothing was changed");
    }
    if confirm {
        let again = rpassword::prompt_password("the same passphrase again: ")
            .context("cannot read the passphrase from the terminal")?;
        if again != p {
            bail!("the two passphrases differ; nothing was changed");
        }
    }
    Ok(SecretString::from(p))
}

/// Loads the config.
pub fn load_config(dirs: &Dirs) -> Result<Config> {
    Ok(Config::load(dirs)?)
}
