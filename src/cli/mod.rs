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
use briefcase::config::{Config, Dirs, MirrorConfig, Target};
use briefcase::replica::{self, LocalReplica};
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

/// Builds the backend for a configured target. `folder` is the folder it mirrors, when known
/// (a stick may carry several folders; without it, it must carry exactly one).
pub fn backend(
    dirs: &Dirs,
    folder: Option<briefcase_mirror::FolderId>,
    target: &str,
) -> Result<Box<dyn Mirror>> {
    Ok(match Target::parse(target)? {
        Target::Dir(p) => Box::new(briefcase_dir::DirMirror::new(p)),
        Target::Stick(p) => Box::new(stick(dirs, folder, p, None, passphrase_from_env())?),
    })
}

/// Builds the backend of the configured mirror `m` of `folder`. A stick is pinned to the
/// stick ID the config records for it (`stick_id`); when there is none (a mirror added by an
/// older version), the stick is pinned at its first opening and the ID is recorded then (trust
/// on first use).
pub fn configured_backend(
    dirs: &Dirs,
    folder: briefcase_mirror::FolderId,
    m: &MirrorConfig,
) -> Result<Box<dyn Mirror>> {
    let Target::Stick(mount) = Target::parse(&m.target)? else {
        return backend(dirs, Some(folder), &m.target);
    };
    let pin = stick_pin(m)?;
    let s = stick(dirs, Some(folder), mount, None, passphrase_from_env())?.with_pin(pin);
    if pin.is_some() {
        return Ok(Box::new(s));
    }
    let (dirs, name, target) = (dirs.clone(), m.name.clone(), m.target.clone());
    Ok(Box::new(s.on_first_pin(std::sync::Arc::new(move |id| {
        if let Err(e) = record_pin(&dirs, folder, &name, &target, id) {
            tracing::warn!(mirror = %name, "cannot record the stick's ID {id} in the config: {e:#}; it is pinned again at the next opening");
        }
    }))))
}

/// The stick ID the config records for mirror `m`, if any.
pub fn stick_pin(m: &MirrorConfig) -> Result<Option<briefcase_stick::StickId>> {
    match &m.stick_id {
        None => Ok(None),
        Some(t) => t.parse().map(Some).map_err(|e: String| {
            anyhow::anyhow!(
                "mirror {} ({}): stick_id in the config: {e}; fix it, or remove and add the mirror again",
                m.name,
                m.target
            )
        }),
    }
}

/// Records `id` as the stick ID of mirror `name` (`target`) of the configured folder whose ID
/// is `folder`, where none is recorded yet.
pub fn record_pin(
    dirs: &Dirs,
    folder: briefcase_mirror::FolderId,
    name: &str,
    target: &str,
    id: &briefcase_stick::StickId,
) -> Result<()> {
    let mut cfg = load_config(dirs)?;
    let mut changed = false;
    for f in &mut cfg.folders {
        if replica::read_marker(&f.path).ok().map(|m| m.folder_id) != Some(folder) {
            continue;
        }
        for m in &mut f.mirrors {
            if m.name == name && m.target == target && m.stick_id.is_none() {
                m.stick_id = Some(id.to_string());
                changed = true;
            }
        }
    }
    if changed {
        cfg.save(dirs)?;
    }
    Ok(())
}

/// A stick backend opened with this machine's key (and `passphrase`); `create` is what a new
/// stick is encrypted to.
pub fn stick(
    dirs: &Dirs,
    folder: Option<briefcase_mirror::FolderId>,
    mount: PathBuf,
    create: Option<briefcase_stick::Recipients>,
    passphrase: Option<briefcase_stick::SecretString>,
) -> Result<briefcase_stick::StickMirror> {
    let machine = briefcase_stick::MachineKey::load(&dirs.identity_file())?;
    Ok(briefcase_stick::StickMirror::new(
        mount,
        folder,
        briefcase_stick::Unlock {
            machine,
            passphrase,
        },
        create,
    ))
}

/// `BRIEFCASE_PASSPHRASE`, when set and not empty.
pub fn passphrase_from_env() -> Option<briefcase_stick::SecretString> {
    std::env::var("BRIEFCASE_PASSPHRASE")
        .ok()
        .filter(|p| !p.is_empty())
        .map(briefcase_stick::SecretString::from)
}

/// The recovery passphrase: `BRIEFCASE_PASSPHRASE`, else asked on the terminal (twice when
/// `confirm`, for a new one).
pub fn read_passphrase(confirm: bool) -> Result<briefcase_stick::SecretString> {
    if let Some(p) = passphrase_from_env() {
        return Ok(p);
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        bail!("a passphrase is needed: set BRIEFCASE_PASSPHRASE or run this in a terminal");
    }
    let p = rpassword::prompt_password("stick recovery passphrase: ")
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
    Ok(briefcase_stick::SecretString::from(p))
}

/// Loads the config.
pub fn load_config(dirs: &Dirs) -> Result<Config> {
    Ok(Config::load(dirs)?)
}
