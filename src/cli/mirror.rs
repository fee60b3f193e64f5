//! `briefcase mirror add|list|remove`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use briefcase::config::{default_mirror_name, Dirs, MirrorConfig, Target};
use briefcase::reconcile;

/// Mirror subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Add a mirror to a folder; an empty or absent target is initialised, a target with files
    /// is adopted (its files meet the folder's at the next sync; nothing is lost).
    #[command(
        after_help = "Examples:\n  briefcase mirror add ~/work /mnt/nas/work --name nas\n  briefcase mirror add ~/work dir:/media/usb/work --send-only"
    )]
    Add {
        /// The folder.
        dir: PathBuf,
        /// `/path` or `dir:/path`.
        target: String,
        /// Name for messages and commands (default from the target path).
        #[arg(long)]
        name: Option<String>,
        /// Only send changes to this mirror, never take changes from it.
        #[arg(long)]
        send_only: bool,
    },
    /// List the mirrors of one folder or of all.
    #[command(after_help = "Example:\n  briefcase mirror list ~/work")]
    List {
        /// The folder (default: all folders).
        dir: Option<PathBuf>,
    },
    /// Remove a mirror from a folder (its data stays where it is).
    #[command(after_help = "Example:\n  briefcase mirror remove ~/work nas")]
    Remove {
        /// The folder.
        dir: PathBuf,
        /// The mirror's name.
        name: String,
    },
}

pub async fn run(dirs: &Dirs, c: Command) -> Result<u8> {
    match c {
        Command::Add {
            dir,
            target,
            name,
            send_only,
        } => {
            let name = add(dirs, &dir, &target, name, send_only).await?;
            println!("added mirror {name} ({target}) to {}; run `briefcase sync {}` or `briefcase watch {}`", dir.display(), dir.display(), dir.display());
            Ok(super::EXIT_OK)
        }
        Command::List { dir } => {
            let cfg = super::load_config(dirs)?;
            let root = match &dir {
                Some(d) => Some(super::find_root(Some(d))?),
                None => None,
            };
            for f in &cfg.folders {
                if root.as_ref().is_some_and(|r| r != &f.path) {
                    continue;
                }
                println!("{}", f.path.display());
                for m in &f.mirrors {
                    println!(
                        "  {:<12} {}{}",
                        m.name,
                        m.target,
                        if m.send_only { "  (send-only)" } else { "" }
                    );
                }
            }
            Ok(super::EXIT_OK)
        }
        Command::Remove { dir, name } => {
            let root = super::find_root(Some(&dir))?;
            let mut cfg = super::load_config(dirs)?;
            let f = cfg.folder_mut(&root);
            let before = f.mirrors.len();
            f.mirrors.retain(|m| m.name != name);
            if f.mirrors.len() == before {
                bail!(
                    "folder {} has no mirror named {name}; see `briefcase mirror list {}`",
                    root.display(),
                    root.display()
                );
            }
            cfg.save(dirs)?;
            let mut rep = super::open_folder(dirs, Some(&root))?;
            rep.journal.remove_mirror_status(&name)?;
            println!(
                "removed mirror {name} from {} (its data was left in place)",
                root.display()
            );
            Ok(super::EXIT_OK)
        }
    }
}

/// Adds (or finds) a mirror for `target`; initialises or adopts the target. When `dir` is not a
/// folder yet and the target already is a mirror of some folder, `dir` becomes a new replica of
/// that folder (a clone). Returns the mirror's name.
pub async fn add(
    dirs: &Dirs,
    dir: &std::path::Path,
    target: &str,
    name: Option<String>,
    send_only: bool,
) -> Result<String> {
    let parsed = Target::parse(target)?;
    let url = parsed.to_url();
    let folder = briefcase::replica::read_marker(dir).ok().map(|m| m.folder_id);
    let backend = super::backend(dirs, folder, &url)?;
    if !dir.join(briefcase::replica::MARKER).exists() {
        if let briefcase_mirror::Presence::Marked(folder) = backend.probe().await? {
            clone_into(dirs, dir, folder)?;
        }
    }
    let rep = super::init::open_or_init(dirs, dir)?;
    let mut cfg = super::load_config(dirs)?;
    let f = cfg.folder_mut(&rep.root);
    if let Some(m) = f
        .mirrors
        .iter()
        .find(|m| Target::parse(&m.target).ok().as_ref() == Some(&parsed))
    {
        return Ok(m.name.clone());
    }
    let Target::Dir(p) = &parsed;
    let p = p.canonicalize().unwrap_or_else(|_| p.clone());
    if p.starts_with(&rep.root) || rep.root.starts_with(&p) {
        bail!(
            "mirror target {} overlaps folder {}; choose a directory outside it",
            p.display(),
            rep.root.display()
        );
    }
    let taken: Vec<String> = f.mirrors.iter().map(|m| m.name.clone()).collect();
    let name = name.unwrap_or_else(|| default_mirror_name(&rep.root, &parsed, &taken));
    if taken.contains(&name) {
        bail!(
            "folder {} already has a mirror named {name}; pick another with --name",
            rep.root.display()
        );
    }
    reconcile::ensure_initialised(&rep, backend.as_ref(), &name, true).await?;
    f.mirrors.push(MirrorConfig {
        name: name.clone(),
        target: url,
        send_only,
    });
    cfg.save(dirs)?;
    Ok(name)
}

/// Makes `dir` a new replica of `folder` (its files, if any, meet the mirror's at the first sync).
pub fn clone_into(
    dirs: &Dirs,
    dir: &std::path::Path,
    folder: briefcase_mirror::FolderId,
) -> Result<()> {
    let cfg = super::load_config(dirs)?;
    let mut rep =
        briefcase::replica::LocalReplica::init(dir, &dirs.data, &cfg.machine_name(), Some(folder))?;
    rep.rescan(None)?;
    let mut cfg = cfg;
    cfg.folder_mut(&rep.root);
    cfg.save(dirs)?;
    eprintln!(
        "{} is now a replica of folder {folder} (replica {})",
        rep.root.display(),
        rep.journal.replica_id()
    );
    Ok(())
}
