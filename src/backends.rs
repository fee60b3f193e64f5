//! The backends this build knows: [`BACKENDS`], one line per backend crate. Nothing else in
//! this crate names a backend: the config, the CLI and the daemon parse targets, open mirrors
//! and word their messages through this registry (see `briefcase_mirror::registry`), so adding
//! a backend is its crate, its line here, and its conformance test (docs/writing-a-backend.md).
//!
//! The in-memory backend (`memory:NAME`, a process-wide store) is registered in debug builds,
//! which is what the tests run, and with the `memory-backend` feature; a release build without
//! the feature refuses `memory:` targets like any unknown scheme.

use std::sync::Arc;

use briefcase_mirror::registry::{
    OpenContext, OpenError, Registry, SecretString, Target, TargetError,
};
use briefcase_mirror::{FolderId, Mirror};

use crate::config::{Config, ConfigError, Dirs, MirrorConfig};
use crate::daemon::BackendFactory;

/// Every registered backend, in the order targets are matched (the first that takes bare paths
/// takes `/path`).
pub static BACKENDS: Registry = Registry::new(&[
    &briefcase_dir::KIND,
    &briefcase_stick::KIND,
    #[cfg(any(debug_assertions, feature = "memory-backend"))]
    &briefcase_memory::KIND,
]);

/// Parses a target from the config or the command line ([`Registry::parse`]).
///
/// # Errors
/// [`TargetError`] for a target no registered backend takes.
pub fn parse(target: &str) -> Result<Target, TargetError> {
    BACKENDS.parse(target)
}

/// Why the backend of a configured mirror could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// No registered backend takes the target.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The backend could not be built with what this machine holds.
    #[error("mirror {mirror} ({target}): {source}")]
    Open {
        /// The mirror's name.
        mirror: String,
        /// Its target.
        target: String,
        /// What went wrong.
        source: OpenError,
    },
}

/// `BRIEFCASE_PASSPHRASE`, when set and not empty: a passphrase that may open a mirror.
pub fn passphrase_from_env() -> Option<SecretString> {
    std::env::var("BRIEFCASE_PASSPHRASE")
        .ok()
        .filter(|p| !p.is_empty())
        .map(SecretString::from)
}

/// Builds the backend of the configured mirror `m` of `folder`, with this machine's identity,
/// `BRIEFCASE_PASSPHRASE`, and the pin the config records for it. A backend that pins and finds
/// no pin recorded (a mirror added by an older version) pins the mirror at its first opening,
/// and the pin is recorded in the config then (trust on first use).
///
/// # Errors
/// [`BackendError`], naming the mirror and its target.
pub fn open_configured(
    dirs: &Dirs,
    folder: FolderId,
    m: &MirrorConfig,
) -> Result<Box<dyn Mirror>, BackendError> {
    let target = BACKENDS.parse(&m.target)?;
    let (hook_dirs, name, url) = (dirs.clone(), m.name.clone(), m.target.clone());
    let ctx = OpenContext {
        folder: Some(folder),
        identity_file: Some(dirs.identity_file()),
        passphrase: passphrase_from_env(),
        pin: m.pin.clone(),
        on_pin: Some(Arc::new(move |pin: &str| {
            if let Err(e) = record_pin(&hook_dirs, folder, &name, &url, pin) {
                tracing::warn!(mirror = %name, "cannot record its pin {pin} in the config: {e}; it is pinned again at the next opening");
            }
        })),
        create: None,
    };
    target
        .open(&ctx)
        .map(|o| o.into_mirror())
        .map_err(|source| BackendError::Open {
            mirror: m.name.clone(),
            target: m.target.clone(),
            source,
        })
}

/// [`open_configured`] as the daemon's backend factory.
pub fn factory(dirs: &Dirs) -> BackendFactory {
    let dirs = dirs.clone();
    Arc::new(move |folder, m| open_configured(&dirs, folder, m).map_err(|e| e.to_string()))
}

/// Records `pin` for mirror `name` (`target`) of the configured folder whose ID is `folder`,
/// where none is recorded yet.
///
/// # Errors
/// The config cannot be read or saved.
pub fn record_pin(
    dirs: &Dirs,
    folder: FolderId,
    name: &str,
    target: &str,
    pin: &str,
) -> Result<(), ConfigError> {
    let mut cfg = Config::load(dirs)?;
    let mut changed = false;
    for f in &mut cfg.folders {
        if crate::replica::read_marker(&f.path)
            .ok()
            .map(|m| m.folder_id)
            != Some(folder)
        {
            continue;
        }
        for m in &mut f.mirrors {
            if m.name == name && m.target == target && m.pin.is_none() {
                m.pin = Some(pin.to_string());
                changed = true;
            }
        }
    }
    if changed {
        cfg.save(dirs)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn targets_table() {
        /// Canonical URL, local place, plain tree.
        type Parsed<'a> = (&'a str, Option<&'a str>, bool);
        // (target, what it parses to); `None`: refused.
        let cases: &[(&str, Option<Parsed>)] = &[
            ("/mnt/nas", Some(("dir:/mnt/nas", Some("/mnt/nas"), true))),
            (
                "dir:/mnt/nas",
                Some(("dir:/mnt/nas", Some("/mnt/nas"), true)),
            ),
            (
                "stick:/media/usb",
                Some(("stick:/media/usb", Some("/media/usb"), false)),
            ),
            ("stick:", None),
            ("ssh://me@nas/x", None),
            ("ftp:x", None),
        ];
        for (given, want) in cases {
            let got = parse(given).ok().map(|t| {
                (
                    t.url(),
                    t.place().map(|p| p.path.display().to_string()),
                    t.place().is_some_and(|p| p.plain),
                )
            });
            let want = want.map(|(u, p, plain)| (u.to_string(), p.map(String::from), plain));
            assert_eq!(got, want, "{given}");
        }
        let e = parse("ssh://me@nas/x").unwrap_err().to_string();
        assert!(e.contains("not available"), "{e}");
        assert!(
            e.contains("`dir:/path`") && e.contains("`stick:/media/usb`"),
            "{e}"
        );
        if cfg!(any(debug_assertions, feature = "memory-backend")) {
            let m = parse("memory:t1").unwrap();
            assert_eq!((m.url().as_str(), m.place()), ("memory:t1", None));
            assert!(parse("memory:").is_err());
        }
        assert_eq!(parse("stick:/m").unwrap().noun(), "stick");
        assert_eq!(parse("/m").unwrap().noun(), "mirror");
        let rel = parse("some/dir").unwrap();
        assert!(
            rel.address().starts_with('/'),
            "relative paths are made absolute"
        );
    }

    /// The worked example of docs/writing-a-backend.md: a configured `memory:NAME` mirror is
    /// opened, initialised and synced through the registry, and is the one every part of the
    /// process reaches by that name.
    #[cfg(any(debug_assertions, feature = "memory-backend"))]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_configured_memory_mirror_syncs_through_the_registry() {
        let t = tempfile::tempdir().unwrap();
        let dirs = Dirs {
            config: t.path().join("config"),
            data: t.path().join("data"),
            runtime: t.path().join("run"),
        };
        let root = t.path().join("work");
        let mut rep =
            crate::replica::LocalReplica::init(&root, &dirs.data, "office", None).unwrap();
        std::fs::write(root.join("a.txt"), b"hello").unwrap();
        rep.rescan(None).unwrap();
        let m = MirrorConfig {
            name: "mem".into(),
            target: "memory:registry-example".into(),
            send_only: false,
            pin: None,
        };
        let mirror = open_configured(&dirs, rep.journal.folder_id(), &m).unwrap();
        crate::reconcile::ensure_initialised(&rep, mirror.as_ref(), &m.name, true)
            .await
            .unwrap();
        let report =
            crate::reconcile::sync(&mut rep, mirror.as_ref(), &m.name, &Default::default())
                .await
                .unwrap();
        assert_eq!(report.pushed, 1, "{report:?}");
        let shared = briefcase_memory::MemoryMirror::named("registry-example");
        let a = briefcase_mirror::RelPath::try_from("a.txt").unwrap();
        let st = shared.stat(&a).await.unwrap().expect("a.txt on the mirror");
        assert_eq!(st.size, 5);
    }
}
