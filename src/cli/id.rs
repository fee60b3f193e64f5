//! `briefcase id`: this machine's public key for the backends that encrypt, created on first
//! use.

use anyhow::{bail, Result};
use briefcase::backends::BACKENDS;
use briefcase::config::Dirs;
use briefcase_mirror::registry::{BackendKind, MachineIdentity};

/// Arguments of `id`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(dirs: &Dirs, _a: Args) -> Result<u8> {
    let path = dirs.identity_file();
    let Some(id) = BACKENDS.machine_identity(&path)? else {
        bail!("no backend of this build encrypts: there is no machine identity to show");
    };
    if id.created {
        eprintln!(
            "created this machine's identity in {} (mode 0600; keep it private, back it up)",
            path.display()
        );
    }
    println!("{}", id.public_key);
    Ok(super::EXIT_OK)
}

/// This machine's public key for `kind`'s encryption, created on first use (and said so);
/// `None` when `kind` does not encrypt.
pub fn machine_identity(dirs: &Dirs, kind: &dyn BackendKind) -> Result<Option<MachineIdentity>> {
    let path = dirs.identity_file();
    let id = kind.machine_identity(&path)?;
    if let Some(id) = id.as_ref().filter(|id| id.created) {
        eprintln!(
            "created this machine's identity in {} (public key {}; `briefcase id` prints it)",
            path.display(),
            id.public_key
        );
    }
    Ok(id)
}
