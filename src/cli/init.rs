//! `briefcase init DIR [--rebuild]`.

use std::path::PathBuf;

use anyhow::Result;
use briefcase::config::Dirs;
use briefcase::replica::LocalReplica;

/// Arguments of `init`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The folder to sync (created if missing).
    pub dir: PathBuf,
    /// Rebuild a damaged journal from the tree, keeping the replica ID of the folder marker.
    #[arg(long)]
    pub rebuild: bool,
    /// This replica's name (default: the machine's name).
    #[arg(long)]
    pub name: Option<String>,
}

pub fn run(dirs: &Dirs, a: Args) -> Result<u8> {
    let cfg = super::load_config(dirs)?;
    let name = a.name.clone().unwrap_or_else(|| cfg.machine_name());
    let mut rep = if a.rebuild {
        LocalReplica::rebuild(&a.dir, &dirs.data, &name)?
    } else {
        LocalReplica::init(&a.dir, &dirs.data, &name, None)?
    };
    let rec = rep.rescan(None)?;
    let mut cfg = cfg;
    cfg.folder_mut(&rep.root);
    cfg.save(dirs)?;
    println!(
        "{} folder {} (replica {} \"{}\"): {} paths journaled",
        if a.rebuild { "rebuilt" } else { "initialised" },
        rep.root.display(),
        rep.journal.replica_id(),
        name,
        rec.total()
    );
    Ok(super::EXIT_OK)
}

/// Opens the folder at `dir`, initialising it (with a first scan) when it is not one yet.
pub fn open_or_init(dirs: &Dirs, dir: &std::path::Path) -> Result<LocalReplica> {
    let cfg = super::load_config(dirs)?;
    if dir.join(briefcase::replica::MARKER).exists() {
        return Ok(LocalReplica::open(dir, &dirs.data)?);
    }
    let mut rep = LocalReplica::init(dir, &dirs.data, &cfg.machine_name(), None)?;
    let rec = rep.rescan(None)?;
    let mut cfg = cfg;
    cfg.folder_mut(&rep.root);
    cfg.save(dirs)?;
    eprintln!(
        "initialised folder {}: {} paths journaled",
        rep.root.display(),
        rec.total()
    );
    Ok(rep)
}
