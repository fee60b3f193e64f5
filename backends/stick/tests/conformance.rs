//! The briefcase-mirror conformance suite against `StickMirror`, over a temp dir standing for the
//! mount point (the stick's layout is created inside it), with small chunks so that ordinary
//! files span several chunks and pages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use briefcase_mirror::testkit::Fixture;
use briefcase_mirror::Mirror;
use briefcase_stick::{ChunkParams, MachineKey, Recipient, Recipients, StickMirror, Unlock};

/// A stick over `BASE/mount`; vanishing renames the mount point away (the stick is unplugged
/// and its mount point is gone too).
struct StickFixture {
    mirror: StickMirror,
    mount: PathBuf,
    away: PathBuf,
    _dir: tempfile::TempDir,
}

impl Fixture for StickFixture {
    fn mirror(&self) -> &dyn Mirror {
        &self.mirror
    }
    fn set_root_present(&self, present: bool) -> std::io::Result<()> {
        if present {
            std::fs::rename(&self.away, &self.mount)
        } else {
            std::fs::rename(&self.mount, &self.away)
        }
    }
}

fn stick_at(mount: &Path, key: &MachineKey) -> StickMirror {
    let me = Recipient {
        key: key.recipient(),
        label: "conformance".into(),
    };
    StickMirror::new(
        mount.to_path_buf(),
        None,
        Unlock {
            machine: Some(key.clone()),
            passphrase: None,
        },
        Some(Recipients {
            machines: vec![me],
            passphrase: None,
        }),
    )
    .with_chunk_params(ChunkParams {
        min: 1 << 10,
        avg: 4 << 10,
        max: 16 << 10,
    })
}

async fn fixture() -> StickFixture {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("mount");
    std::fs::create_dir(&mount).unwrap();
    let key = MachineKey::generate();
    StickFixture {
        mirror: stick_at(&mount, &key),
        away: dir.path().join("mount.away"),
        mount,
        _dir: dir,
    }
}

briefcase_mirror::conformance!(stick, fixture().await);
