//! `briefcase id`: this machine's age recipient, created on first use.

use anyhow::Result;
use briefcase::config::Dirs;
use briefcase_stick::MachineKey;

/// Arguments of `id`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(dirs: &Dirs, _a: Args) -> Result<u8> {
    let path = dirs.identity_file();
    let (key, created) = MachineKey::load_or_create(&path)?;
    if created {
        eprintln!(
            "created this machine's identity in {} (mode 0600; keep it private, back it up)",
            path.display()
        );
    }
    println!("{}", key.recipient());
    Ok(super::EXIT_OK)
}

/// This machine's key, created on first use.
pub fn machine_key(dirs: &Dirs) -> Result<MachineKey> {
    let path = dirs.identity_file();
    let (key, created) = MachineKey::load_or_create(&path)?;
    if created {
        eprintln!(
            "created this machine's identity in {} (public key {}; `briefcase id` prints it)",
            path.display(),
            key.recipient()
        );
    }
    Ok(key)
}
