//! `briefcase mirror add|list|remove`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
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
        /// Stick only: another machine that may open it (`age1…` from `briefcase id` there,
        /// optionally `NAME=age1…`). Repeatable; this machine is always included. On an existing
        /// stick, adds the recipient (only the keys are re-encrypted).
        #[arg(long = "recipient", value_name = "AGE1…")]
        recipients: Vec<String>,
        /// Stick only: also encrypt to a recovery passphrase (read from the terminal or
        /// BRIEFCASE_PASSPHRASE), to open it on a new machine.
        #[arg(long)]
        passphrase: bool,
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
            recipients,
            passphrase,
        } => {
            let keys = StickKeys {
                recipients,
                passphrase,
                pin: None,
            };
            let name = add_with(dirs, &dir, &target, name, send_only, &keys)
                .await
                .with_context(|| format!("folder {}, mirror {target}", dir.display()))?;
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
    add_with(dirs, dir, target, name, send_only, &StickKeys::default()).await
}

/// What `mirror add` was told about a stick's keys.
#[derive(Debug, Default)]
pub struct StickKeys {
    /// `age1…` or `NAME=age1…`.
    pub recipients: Vec<String>,
    /// Whether to add a recovery passphrase.
    pub passphrase: bool,
    /// The stick ID to accept (`clone` opened the stick already); else the one the config
    /// records for this mirror, or the stick found now (which is then recorded).
    pub pin: Option<briefcase_stick::StickId>,
}

/// [`add`], with the recipients of a stick.
pub async fn add_with(
    dirs: &Dirs,
    dir: &std::path::Path,
    target: &str,
    name: Option<String>,
    send_only: bool,
    keys: &StickKeys,
) -> Result<String> {
    let parsed = Target::parse(target)?;
    let url = parsed.to_url();
    let folder = briefcase::replica::read_marker(dir)
        .ok()
        .map(|m| m.folder_id);
    let mut stick = None;
    let mut plain = None;
    match &parsed {
        Target::Stick(mount) => {
            let me = super::id::machine_key(dirs)?;
            let cfg = super::load_config(dirs)?;
            let here = dir.canonicalize().ok();
            let configured = cfg
                .folders
                .iter()
                .filter(|f| here.as_ref() == Some(&f.path))
                .flat_map(|f| &f.mirrors)
                .find(|m| Target::parse(&m.target).ok().as_ref() == Some(&parsed));
            let pin = match (keys.pin, configured) {
                (Some(p), _) => Some(p),
                (None, Some(m)) => super::stick_pin(m)?,
                (None, None) => None,
            };
            let mut machines = vec![briefcase_stick::Recipient {
                key: me.recipient(),
                label: cfg.machine_name(),
            }];
            for r in &keys.recipients {
                let (label, key) = match r.split_once('=') {
                    Some((l, k)) => (l.trim(), k.trim()),
                    None => ("", r.trim()),
                };
                machines.push(
                    briefcase_stick::Recipient::parse(key, label)
                        .map_err(|e| anyhow::anyhow!("--recipient: {e}"))?,
                );
            }
            let passphrase = if keys.passphrase {
                Some(super::read_passphrase(true)?)
            } else {
                None
            };
            let create = briefcase_stick::Recipients {
                machines,
                passphrase: passphrase.clone(),
            };
            let s = super::stick(
                dirs,
                folder,
                mount.clone(),
                Some(create.clone()),
                passphrase.or_else(super::passphrase_from_env),
            )?
            .with_pin(pin);
            stick = Some((s, create));
        }
        Target::Dir(_) => plain = Some(super::backend(dirs, folder, &url)?),
    };
    let backend: &dyn briefcase_mirror::Mirror = match (&stick, &plain) {
        (Some((s, _)), _) => s,
        (None, Some(b)) => b.as_ref(),
        (None, None) => bail!("no backend for {target}"),
    };
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
        .iter_mut()
        .find(|m| Target::parse(&m.target).ok().as_ref() == Some(&parsed))
    {
        if let Some((s, create)) = &stick {
            let id = s.stick_id().await?;
            update_recipients(s, create, keys).await?;
            if m.stick_id.is_none() {
                m.stick_id = Some(id.to_string());
                eprintln!(
                    "{}: recorded stick ID {id} (a stick with another key is refused from now on)",
                    s.mount().display()
                );
                let name = m.name.clone();
                cfg.save(dirs)?;
                return Ok(name);
            }
        }
        return Ok(m.name.clone());
    }
    let p = match &parsed {
        Target::Dir(p) | Target::Stick(p) => p,
    };
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
    let fresh = matches!(
        backend.probe().await?,
        briefcase_mirror::Presence::Absent
            | briefcase_mirror::Presence::Empty
            | briefcase_mirror::Presence::Unmarked
    );
    reconcile::ensure_initialised(&rep, backend, &name, true).await?;
    if let (Some((s, create)), false) = (&stick, fresh) {
        update_recipients(s, create, keys).await?;
    }
    let stick_id = match &stick {
        Some((s, _)) => Some(s.stick_id().await?.to_string()),
        None => None,
    };
    f.mirrors.push(MirrorConfig {
        name: name.clone(),
        target: url,
        send_only,
        stick_id,
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

/// Adds the recipients (and passphrase) `mirror add` was given to an existing stick, keeping
/// those it has (as its encrypted list says; never those of the plain `STICK`); only its keys
/// are re-encrypted.
async fn update_recipients(
    s: &briefcase_stick::StickMirror,
    create: &briefcase_stick::Recipients,
    keys: &StickKeys,
) -> Result<()> {
    if keys.recipients.is_empty() && !keys.passphrase {
        return Ok(());
    }
    let added = s.add_recipients(create).await?;
    for a in &added {
        eprintln!("{}: added recipient {}", s.mount().display(), a.key);
    }
    if create.passphrase.is_some() {
        eprintln!("{}: recovery passphrase set", s.mount().display());
    }
    Ok(())
}
