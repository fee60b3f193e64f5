//! `briefcase clone TARGET DIR`: a new local replica of a folder a mirror carries.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use briefcase::config::Dirs;
use briefcase_mirror::registry::{Grant, OpenContext};
use briefcase_mirror::Presence;

/// Arguments of `clone`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The mirror's target.
    #[arg(help = super::mirror::target_help())]
    pub target: String,
    /// The new folder (absent or empty).
    pub dir: PathBuf,
    /// Name of the mirror in this machine's config (default from the target).
    #[arg(long)]
    pub name: Option<String>,
    /// Mirrors that encrypt (a stick): open it with its recovery passphrase (read from the
    /// terminal or BRIEFCASE_PASSPHRASE), for a machine it was not encrypted to; this machine is
    /// then added to its recipients.
    #[arg(long)]
    pub passphrase: bool,
    /// Which folder, when the mirror carries several (a stick may).
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
    let parsed = briefcase::backends::parse(&a.target)?;
    let noun = parsed.noun();
    let folder_arg =
        match &a.folder {
            Some(f) => Some(f.parse::<briefcase_mirror::FolderId>().map_err(|_| {
                anyhow::anyhow!("--folder {f:?} is not a folder ID (32 hex digits)")
            })?),
            None => None,
        };
    let encrypts = super::id::machine_identity(dirs, parsed.kind())?.is_some();
    if a.passphrase && !encrypts {
        eprintln!(
            "{}: this backend does not encrypt; --passphrase is ignored",
            a.target
        );
    }
    let passphrase = if a.passphrase && encrypts {
        Some(super::read_passphrase(noun, false)?)
    } else {
        briefcase::backends::passphrase_from_env()
    };
    let opened = parsed.open(&OpenContext {
        folder: folder_arg,
        identity_file: Some(dirs.identity_file()),
        passphrase,
        ..Default::default()
    })?;
    let folder = match opened.mirror().probe().await? {
        Presence::Marked(f) => f,
        Presence::Absent => bail!(
            "nothing is at {}; plug in or mount the {noun} first",
            parsed
                .place()
                .map_or_else(|| a.target.clone(), |p| p.path.display().to_string())
        ),
        _ => bail!(
            "{} carries no briefcase folder; set one up from the machine that has the folder with `briefcase mirror add DIR {}`",
            a.target,
            a.target
        ),
    };
    // Opens it now: a machine that cannot decrypt it is told which can, before anything is
    // created here. Who may open it is taken from its encrypted list, never from plain text on
    // the medium.
    let pin = opened.pin().await?;
    if encrypts {
        let cfg = super::load_config(dirs)?;
        let me = Grant {
            machine_label: cfg.machine_name(),
            ..Default::default()
        };
        for key in opened.grant(&me).await? {
            eprintln!("added this machine ({key}) to the {noun}'s recipients");
        }
    }
    super::mirror::clone_into(dirs, &a.dir, folder)?;
    let keys = super::mirror::Keys {
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
