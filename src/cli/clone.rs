//! `briefcase clone TARGET DIR`: a new local replica of a folder a mirror carries.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use briefcase::config::{Dirs, Target};
use briefcase_mirror::{Mirror, Presence};

/// Arguments of `clone`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The mirror: `stick:/media/usb`, `/path` or `dir:/path`.
    pub target: String,
    /// The new folder (absent or empty).
    pub dir: PathBuf,
    /// Name of the mirror in this machine's config (default from the target).
    #[arg(long)]
    pub name: Option<String>,
    /// Stick only: open it with its recovery passphrase (read from the terminal or
    /// BRIEFCASE_PASSPHRASE), for a machine it was not encrypted to; this machine is then added
    /// to its recipients.
    #[arg(long)]
    pub passphrase: bool,
    /// Stick only: which folder, when the stick carries several.
    #[arg(long)]
    pub folder: Option<String>,
}

pub async fn run(dirs: &Dirs, a: Args) -> Result<u8> {
    let what = format!("folder {}, mirror {}", a.dir.display(), a.target);
    run_inner(dirs, a).await.context(what)
}

async fn run_inner(dirs: &Dirs, a: Args) -> Result<u8> {
    if a.dir.join(briefcase::replica::MARKER).exists() {
        bail!(
            "{} is already a briefcase folder; to add a mirror to it use `briefcase mirror add {} {}`",
            a.dir.display(),
            a.dir.display(),
            a.target
        );
    }
    if std::fs::read_dir(&a.dir).is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "{} is not empty; clone into a new or empty directory (to merge existing files with a mirror, use `briefcase mirror add {} {}`)",
            a.dir.display(),
            a.dir.display(),
            a.target
        );
    }
    let parsed = Target::parse(&a.target)?;
    let folder_arg =
        match &a.folder {
            Some(f) => Some(f.parse::<briefcase_mirror::FolderId>().map_err(|_| {
                anyhow::anyhow!("--folder {f:?} is not a folder ID (32 hex digits)")
            })?),
            None => None,
        };
    let (folder, pin) = match &parsed {
        Target::Stick(mount) => {
            let me = super::id::machine_key(dirs)?;
            let passphrase = if a.passphrase {
                Some(super::read_passphrase(false)?)
            } else {
                super::passphrase_from_env()
            };
            let s = super::stick(dirs, folder_arg, mount.clone(), None, passphrase)?;
            let folder = match s.probe().await? {
                Presence::Marked(f) => f,
                Presence::Absent => bail!(
                    "nothing is mounted at {}; insert the stick (and mount it) first",
                    mount.display()
                ),
                _ => bail!(
                    "{} carries no briefcase folder; set one up from the machine that has the folder with `briefcase mirror add DIR {}`",
                    mount.display(),
                    a.target
                ),
            };
            // Opens it now: a machine that cannot decrypt it is told which can, before
            // anything is created here. Who may open it is taken from its encrypted list,
            // never from the plain STICK.
            let pin = s.stick_id().await?;
            let listed = s.recipients().await?;
            if !listed.iter().any(|r| r.key == me.recipient()) {
                let cfg = super::load_config(dirs)?;
                s.add_recipients(&briefcase_stick::Recipients {
                    machines: vec![briefcase_stick::Recipient {
                        key: me.recipient(),
                        label: cfg.machine_name(),
                    }],
                    passphrase: None,
                })
                .await?;
                eprintln!(
                    "added this machine ({}) to the stick's recipients",
                    me.recipient()
                );
            }
            (folder, Some(pin))
        }
        Target::Dir(_) => {
            let b = super::backend(dirs, folder_arg, &a.target)?;
            match b.probe().await? {
                Presence::Marked(f) => (f, None),
                _ => bail!(
                    "{} is not a briefcase mirror; add it to an existing folder with `briefcase mirror add DIR {}`",
                    a.target,
                    a.target
                ),
            }
        }
    };
    super::mirror::clone_into(dirs, &a.dir, folder)?;
    let keys = super::mirror::StickKeys {
        pin,
        ..Default::default()
    };
    let name =
        super::mirror::add_with(dirs, &a.dir, &a.target, a.name.clone(), false, &keys).await?;
    println!(
        "cloned folder {folder} from {} into {} (mirror {name}); syncing",
        a.target,
        a.dir.display()
    );
    super::sync::run(
        dirs,
        super::sync::Args {
            dir: Some(a.dir.clone()),
            mirror: Some(name),
            dry_run: false,
            allow_mass_delete: false,
            json: false,
        },
    )
    .await
}
