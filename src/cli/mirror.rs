//! `briefcase mirror add|list|remove`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use briefcase::backends::{self, BACKENDS};
use briefcase::config::{default_mirror_name, Dirs, MirrorConfig};
use briefcase::reconcile;
use briefcase_mirror::registry::{Grant, NamedKey, OpenContext, OpenedMirror, Target};

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
        /// The mirror's target.
        #[arg(help = target_help())]
        target: String,
        /// Name for messages and commands (default from the target path).
        #[arg(long)]
        name: Option<String>,
        /// Only send changes to this mirror, never take changes from it.
        #[arg(long)]
        send_only: bool,
        /// Mirrors that encrypt (a stick): another machine that may open it (`age1…` from
        /// `briefcase id` there, optionally `NAME=age1…`). Repeatable; this machine is always
        /// included. On an existing one, adds the recipient (only the keys are re-encrypted).
        #[arg(long = "recipient", value_name = "AGE1…")]
        recipients: Vec<String>,
        /// Mirrors that encrypt (a stick): also encrypt to a recovery passphrase (read from the
        /// terminal or BRIEFCASE_PASSPHRASE), to open it on a new machine.
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
            let keys = Keys {
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
    add_with(dirs, dir, target, name, send_only, &Keys::default()).await
}

/// The help of a target argument: the forms every registered backend takes.
pub fn target_help() -> String {
    format!("The mirror: {}", BACKENDS.forms())
}

/// Whether the configured target `configured` is `target`.
fn same_target(configured: &str, target: &Target) -> bool {
    backends::parse(configured).ok().as_ref() == Some(target)
}

/// What `mirror add` was told about the keys of a mirror that encrypts.
#[derive(Debug, Default)]
pub struct Keys {
    /// `age1…` or `NAME=age1…`.
    pub recipients: Vec<String>,
    /// Whether to add a recovery passphrase.
    pub passphrase: bool,
    /// The pin to accept (`clone` opened the mirror already); else the one the config records
    /// for this mirror, or the one found now (which is then recorded).
    pub pin: Option<String>,
}

impl Keys {
    /// Whether machines or a passphrase are to be added.
    fn grants(&self) -> bool {
        !self.recipients.is_empty() || self.passphrase
    }
}

/// [`add`], with the keys of a mirror that encrypts.
pub async fn add_with(
    dirs: &Dirs,
    dir: &std::path::Path,
    target: &str,
    name: Option<String>,
    send_only: bool,
    keys: &Keys,
) -> Result<String> {
    let parsed = backends::parse(target)?;
    let url = parsed.url();
    let noun = parsed.noun();
    let folder = briefcase::replica::read_marker(dir)
        .ok()
        .map(|m| m.folder_id);
    let cfg = super::load_config(dirs)?;
    let here = dir.canonicalize().ok();
    let configured_pin = cfg
        .folders
        .iter()
        .filter(|f| here.as_ref() == Some(&f.path))
        .flat_map(|f| &f.mirrors)
        .find(|m| same_target(&m.target, &parsed))
        .and_then(|m| m.pin.clone());
    let encrypts = super::id::machine_identity(dirs, parsed.kind())?.is_some();
    if !encrypts && keys.grants() {
        eprintln!("{url}: this backend does not encrypt; --recipient and --passphrase are ignored");
    }
    let grant = if encrypts {
        let passphrase = if keys.passphrase {
            Some(super::read_passphrase(noun, true)?)
        } else {
            None
        };
        Some(Grant {
            machine_label: cfg.machine_name(),
            recipients: keys.recipients.iter().map(|r| named_key(r)).collect(),
            passphrase,
        })
    } else {
        None
    };
    let opened = parsed.open(&OpenContext {
        folder,
        identity_file: Some(dirs.identity_file()),
        passphrase: grant
            .as_ref()
            .and_then(|g| g.passphrase.clone())
            .or_else(backends::passphrase_from_env),
        pin: keys.pin.clone().or(configured_pin),
        on_pin: None,
        create: grant.clone(),
    })?;
    let backend = opened.mirror();
    let granting = grant.as_ref().filter(|_| keys.grants());
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
        .find(|m| same_target(&m.target, &parsed))
    {
        if let Some(pin) = opened.pin().await? {
            if let Some(g) = granting {
                grant_access(opened.as_ref(), g).await?;
            }
            if m.pin.is_none() {
                m.pin = Some(pin.clone());
                eprintln!(
                    "{}: recorded its pin {pin} (a {noun} with another key is refused from now on)",
                    backend.location()
                );
                let name = m.name.clone();
                cfg.save(dirs)?;
                return Ok(name);
            }
        }
        return Ok(m.name.clone());
    }
    if let Some(place) = parsed.place() {
        let p = place
            .path
            .canonicalize()
            .unwrap_or_else(|_| place.path.clone());
        if p.starts_with(&rep.root) || rep.root.starts_with(&p) {
            bail!(
                "mirror target {} overlaps folder {}; choose a directory outside it",
                p.display(),
                rep.root.display()
            );
        }
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
    if let (Some(g), false) = (granting, fresh) {
        grant_access(opened.as_ref(), g).await?;
    }
    let pin = opened.pin().await?;
    f.mirrors.push(MirrorConfig {
        name: name.clone(),
        target: url,
        send_only,
        pin,
    });
    cfg.save(dirs)?;
    Ok(name)
}

/// `age1…` or `NAME=age1…` as a labelled key.
fn named_key(r: &str) -> NamedKey {
    let (label, key) = match r.split_once('=') {
        Some((l, k)) => (l.trim(), k.trim()),
        None => ("", r.trim()),
    };
    NamedKey {
        label: label.to_string(),
        key: key.to_string(),
    }
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

/// Lets the machines (and passphrase) `mirror add` was given open an existing mirror that
/// encrypts, keeping those that can already (as its own encrypted list says, never plain text
/// on the medium); only its keys are re-encrypted.
async fn grant_access(opened: &dyn OpenedMirror, g: &Grant) -> Result<()> {
    let location = opened.mirror().location();
    for key in opened.grant(g).await? {
        eprintln!("{location}: added recipient {key}");
    }
    if g.passphrase.is_some() {
        eprintln!("{location}: recovery passphrase set");
    }
    Ok(())
}
