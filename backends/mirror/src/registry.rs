//! The backend registry: how the `briefcase` crate finds a backend by the scheme of a target
//! (`dir:/mnt/nas`, `stick:/media/usb`, a bare `/path`) without naming any backend itself.
//!
//! Each backend crate implements [`BackendKind`] once, as a `pub static KIND`, and the
//! `briefcase` crate lists them in one [`Registry`] (`src/backends.rs`, one line per backend).
//! Everything the CLI and the daemon used to decide by the backend's kind goes through it:
//!
//! - parsing a target from the config or the command line into a [`Target`] (its canonical URL,
//!   where it shows up on this machine: a mount point or a plain directory, see [`Place`]);
//! - opening it with an [`OpenContext`] of backend-neutral ingredients (this machine's identity
//!   file, a passphrase, the pin the config recorded, who a new mirror is encrypted to);
//! - the key management of backends that encrypt, on the [`OpenedMirror`] it returns (the pin to
//!   record, adding machines), and this machine's public key ([`BackendKind::machine_identity`]);
//! - how a mirror is called in messages ([`BackendKind::noun`]), and which local directory the
//!   daemon may watch for changes made there ([`BackendKind::watch_root`]).
//!
//! Opening builds the backend only: no I/O on the medium happens until the mirror is used, so a
//! missing disk or stick is found by [`Mirror::probe`] and means "offline" (invariant 4).

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use secrecy::{ExposeSecret, SecretString};

use crate::{FolderId, Mirror, MirrorResult};

/// One backend as the registry knows it: implemented once by each backend crate (`KIND`).
pub trait BackendKind: Send + Sync {
    /// Its URL scheme, also its name: targets are written `SCHEME:ADDRESS` (`dir:/mnt/nas`).
    fn scheme(&self) -> &'static str;

    /// Whether a target written without a scheme (`/mnt/nas`, `../nas`) is this backend's.
    /// One registered backend says yes (`dir`); the first one that does takes bare paths.
    fn takes_bare_paths(&self) -> bool {
        false
    }

    /// The target's forms with a word on what it is, for help and error messages:
    /// ``a directory (`/path` or `dir:/path`)``.
    fn syntax(&self) -> &'static str;

    /// How a mirror of this backend is called in messages ("mirror"; "stick" for one carried
    /// from machine to machine).
    fn noun(&self) -> &'static str {
        "mirror"
    }

    /// Parses the address: what follows `SCHEME:`, or the whole target when it has no scheme
    /// and [`BackendKind::takes_bare_paths`]. Relative paths are taken from the current
    /// directory. No I/O on the medium.
    ///
    /// # Errors
    /// What is wrong with the address and what it should look like.
    fn parse(&self, address: &str) -> Result<Address, String>;

    /// This machine's public key for the encryption this backend does, read from
    /// `identity_file` and created there when it does not exist yet (`briefcase id`, and before
    /// `mirror add` or `clone` encrypt to it). `Ok(None)`, the default: the backend does not
    /// encrypt, and needs no identity.
    ///
    /// # Errors
    /// [`OpenError::Access`] when the file cannot be read, written or used.
    fn machine_identity(&self, identity_file: &Path) -> Result<Option<MachineIdentity>, OpenError> {
        let _ = identity_file;
        Ok(None)
    }

    /// Builds the mirror for `target` (parsed by this kind) with what `ctx` provides. No I/O on
    /// the medium (only local files the context names, such as the identity file).
    ///
    /// # Errors
    /// [`OpenError::Access`] when something the context holds cannot be used (an unreadable
    /// identity file, a malformed pin or recipient key).
    fn open(&self, target: &Target, ctx: &OpenContext) -> Result<Box<dyn OpenedMirror>, OpenError>;

    /// A local directory holding the mirror's data as plain files, ready to be watched with
    /// inotify for changes made there behind briefcase's back (it is initialised now); `None`
    /// otherwise, the default (encrypted, remote, in memory, or not there now): the daemon then
    /// scans it at every sync instead and looks again later. May stat the medium.
    fn watch_root(&self, target: &Target) -> Option<PathBuf> {
        let _ = target;
        None
    }
}

/// A target's address as its backend parsed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// The canonical text after `SCHEME:` (an absolute path for local backends).
    pub text: String,
    /// Where the mirror shows up on this machine, when it does.
    pub place: Option<Place>,
}

/// A local directory where a mirror shows up: a mount point, or the mirror's own root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    /// The directory. Its appearance (a disk mounted, a stick plugged in) means the mirror may
    /// be back: the daemon watches for it and probes the mirror then.
    pub path: PathBuf,
    /// How many directories below `path` the mirror's folder marker lies, so that a watch for
    /// it to appear looks that deep (`dir`: 1, `.briefcase/folder-id`).
    pub marker_depth: usize,
    /// `path` holds the mirror's data as plain files (a `dir` mirror), not a medium the backend
    /// lays out its own way: its name then makes the mirror's default name.
    pub plain: bool,
}

/// A parsed mirror target: its backend and address. Two targets are equal when their canonical
/// URLs are.
#[derive(Clone)]
pub struct Target {
    kind: &'static dyn BackendKind,
    address: Address,
}

impl Target {
    /// A target of `kind` at `address` (as [`BackendKind::parse`] returned it).
    pub fn new(kind: &'static dyn BackendKind, address: Address) -> Target {
        Target { kind, address }
    }

    /// Its backend.
    pub fn kind(&self) -> &'static dyn BackendKind {
        self.kind
    }

    /// The canonical address (after `SCHEME:`).
    pub fn address(&self) -> &str {
        &self.address.text
    }

    /// The canonical URL, as the config records it: `dir:/mnt/nas/work`.
    pub fn url(&self) -> String {
        format!("{}:{}", self.kind.scheme(), self.address.text)
    }

    /// Where the mirror shows up on this machine, if it does.
    pub fn place(&self) -> Option<&Place> {
        self.address.place.as_ref()
    }

    /// How the mirror is called in messages ([`BackendKind::noun`]).
    pub fn noun(&self) -> &'static str {
        self.kind.noun()
    }

    /// Builds the mirror ([`BackendKind::open`]).
    ///
    /// # Errors
    /// As [`BackendKind::open`].
    pub fn open(&self, ctx: &OpenContext) -> Result<Box<dyn OpenedMirror>, OpenError> {
        self.kind.open(self, ctx)
    }

    /// The directory to watch for changes made on the mirror ([`BackendKind::watch_root`]).
    pub fn watch_root(&self) -> Option<PathBuf> {
        self.kind.watch_root(self)
    }
}

impl PartialEq for Target {
    fn eq(&self, other: &Target) -> bool {
        self.kind.scheme() == other.kind.scheme() && self.address == other.address
    }
}

impl Eq for Target {}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url())
            .field("place", &self.address.place)
            .finish()
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind.scheme(), self.address.text)
    }
}

/// Called once with the pin of a mirror that was opened without one and got pinned at its first
/// opening (trust on first use), so that the caller records it.
pub type PinHook = Arc<dyn Fn(&str) + Send + Sync>;

/// What opening a mirror may use besides its target, in backend-neutral words, so that any
/// backend that encrypts, authenticates or pins (the stick today, an encrypted `ssh` later)
/// takes the same ingredients. A backend ignores what it does not need.
#[derive(Clone, Default)]
pub struct OpenContext {
    /// The folder the mirror is (or is to be) a replica of, when known: a medium may carry
    /// several folders; without it, it must carry exactly one.
    pub folder: Option<FolderId>,
    /// This machine's private identity file (encrypted backends decrypt with it).
    pub identity_file: Option<PathBuf>,
    /// A passphrase that may open the mirror (its recovery passphrase).
    pub passphrase: Option<SecretString>,
    /// The pin this machine recorded for the mirror (its config): the ID of the secret it was
    /// shared with. A mirror with another secret is refused before anything is read from it or
    /// written to it, and a new one is never made where the pinned one is missing.
    pub pin: Option<String>,
    /// Told the pin when the mirror had none and gets pinned at its first opening.
    pub on_pin: Option<PinHook>,
    /// Who a mirror created now ([`Mirror::init`]) is encrypted to (`mirror add`); `None`: this
    /// open does not create one.
    pub create: Option<Grant>,
}

impl std::fmt::Debug for OpenContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenContext")
            .field("folder", &self.folder)
            .field("identity_file", &self.identity_file)
            .field("passphrase", &self.passphrase.is_some())
            .field("pin", &self.pin)
            .field("on_pin", &self.on_pin.is_some())
            .field("create", &self.create)
            .finish()
    }
}

/// Who may open an encrypted mirror: this machine (always, from its identity file), other
/// machines by their public keys, and a recovery passphrase.
#[derive(Clone, Default)]
pub struct Grant {
    /// This machine's label among the recipients (its replica name).
    pub machine_label: String,
    /// Other machines, as the user gave them (`briefcase id` printed each key there).
    pub recipients: Vec<NamedKey>,
    /// Also encrypt to this passphrase.
    pub passphrase: Option<SecretString>,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("machine_label", &self.machine_label)
            .field("recipients", &self.recipients)
            .field("passphrase", &self.passphrase.is_some())
            .finish()
    }
}

/// A public key with a label (a machine's name), as text: the backend parses it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamedKey {
    /// A human label; may be empty.
    pub label: String,
    /// The public key (`age1…` for the stick).
    pub key: String,
}

/// This machine's public key for a backend's encryption.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineIdentity {
    /// The public key, to give to the machine that sets up a mirror (`age1…`).
    pub public_key: String,
    /// The identity file was created now.
    pub created: bool,
}

/// A mirror a backend built, with the key management of backends that encrypt. For the others
/// the defaults apply (no pin, nothing to grant); [`Plain`] wraps such a mirror.
#[async_trait::async_trait]
pub trait OpenedMirror: Send + Sync {
    /// The mirror.
    fn mirror(&self) -> &dyn Mirror;

    /// The mirror alone (for the engine and the daemon).
    fn into_mirror(self: Box<Self>) -> Box<dyn Mirror>;

    /// Opens the mirror (decrypting what it must, checking the pin of the context) and returns
    /// its pin: the ID of the secret it is encrypted with, which the config records so that a
    /// mirror with another secret is refused later. `Ok(None)`, the default: the backend has
    /// no such secret.
    ///
    /// # Errors
    /// Offline, locked (this machine cannot open it), corrupt (not the pinned one) and I/O
    /// errors.
    async fn pin(&self) -> MirrorResult<Option<String>> {
        Ok(None)
    }

    /// Lets this machine and the machines and passphrase of `grant` open the mirror too, keeping
    /// those that can already; returns the public keys that were added (empty when all could).
    /// The default does nothing (a backend that does not encrypt).
    ///
    /// # Errors
    /// Offline, locked, corrupt and I/O errors; [`crate::MirrorError::Refused`] for a key that is not
    /// one.
    async fn grant(&self, grant: &Grant) -> MirrorResult<Vec<String>> {
        let _ = grant;
        Ok(Vec::new())
    }
}

/// An [`OpenedMirror`] over a mirror that has no keys.
#[derive(Debug)]
pub struct Plain(pub Box<dyn Mirror>);

impl Plain {
    /// Wraps `mirror`, boxed for [`BackendKind::open`].
    pub fn boxed(mirror: impl Mirror + 'static) -> Box<dyn OpenedMirror> {
        Box::new(Plain(Box::new(mirror)))
    }
}

impl OpenedMirror for Plain {
    fn mirror(&self) -> &dyn Mirror {
        &*self.0
    }

    fn into_mirror(self: Box<Self>) -> Box<dyn Mirror> {
        self.0
    }
}

/// A target that no registered backend understands.
#[derive(Debug, thiserror::Error)]
#[error("mirror target {target:?}: {reason}")]
pub struct TargetError {
    /// The target as given.
    pub target: String,
    /// What is wrong, with the accepted forms.
    pub reason: String,
}

/// Why a backend could not be built (building one does no I/O on the medium: what goes wrong
/// there is a [`crate::MirrorError`] of the mirror's operations).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Something the [`OpenContext`] holds cannot be used: an identity file, a pin, a key.
    #[error("{what}: {reason}")]
    Access {
        /// Which ingredient (`identity file /home/me/.config/briefcase/identity.txt`).
        what: String,
        /// What is wrong and what to do.
        reason: String,
    },
}

/// The registered backends, in order: the `briefcase` crate keeps one, listing each backend's
/// `KIND` on one line.
#[derive(Clone, Copy)]
pub struct Registry {
    kinds: &'static [&'static dyn BackendKind],
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.kinds.iter().map(|k| k.scheme()))
            .finish()
    }
}

impl Registry {
    /// A registry of `kinds`.
    pub const fn new(kinds: &'static [&'static dyn BackendKind]) -> Registry {
        Registry { kinds }
    }

    /// The registered backends.
    pub fn kinds(&self) -> &'static [&'static dyn BackendKind] {
        self.kinds
    }

    /// The backend registered for `scheme`.
    pub fn get(&self, scheme: &str) -> Option<&'static dyn BackendKind> {
        self.kinds.iter().copied().find(|k| k.scheme() == scheme)
    }

    /// Parses a target: `SCHEME:ADDRESS` for a registered scheme, or a bare path for the
    /// backend that takes them. A target that looks like another scheme (`ssh://…`, `ftp:…`;
    /// a colon before any `/`) is refused with the forms this build accepts.
    ///
    /// # Errors
    /// [`TargetError`], saying what is wrong and what would be right.
    pub fn parse(&self, s: &str) -> Result<Target, TargetError> {
        let bad = |reason: String| TargetError {
            target: s.to_string(),
            reason,
        };
        for &kind in self.kinds {
            if let Some(rest) = s
                .strip_prefix(kind.scheme())
                .and_then(|r| r.strip_prefix(':'))
            {
                return kind.parse(rest).map(|a| Target::new(kind, a)).map_err(bad);
            }
        }
        if let Some((scheme, _)) = s
            .split_once("://")
            .or_else(|| s.split_once(':').filter(|(a, _)| !a.contains('/')))
        {
            return Err(bad(format!(
                "the {scheme:?} backend is not available in this version; use {}",
                self.forms()
            )));
        }
        match self.kinds.iter().copied().find(|k| k.takes_bare_paths()) {
            Some(kind) => kind.parse(s).map(|a| Target::new(kind, a)).map_err(bad),
            None => Err(bad(format!("it names no backend; use {}", self.forms()))),
        }
    }

    /// The target forms of every backend: ``a directory (`/path` or `dir:/path`), or …``.
    pub fn forms(&self) -> String {
        let all: Vec<&str> = self.kinds.iter().map(|k| k.syntax()).collect();
        match all.split_last() {
            None => "nothing: no backend is registered".into(),
            Some((last, [])) => (*last).to_string(),
            Some((last, rest)) => format!("{}, or {last}", rest.join(", ")),
        }
    }

    /// This machine's public key for the first registered backend that encrypts
    /// ([`BackendKind::machine_identity`]), created on first use; `Ok(None)` when none does.
    ///
    /// # Errors
    /// As [`BackendKind::machine_identity`].
    pub fn machine_identity(
        &self,
        identity_file: &Path,
    ) -> Result<Option<MachineIdentity>, OpenError> {
        for kind in self.kinds {
            if let Some(id) = kind.machine_identity(identity_file)? {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }
}

/// An address for a backend whose targets are local paths: `address` made absolute against
/// the current directory.
///
/// # Errors
/// A relative path when there is no current directory.
pub fn absolute_path(address: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(address);
    if p.is_absolute() {
        return Ok(p);
    }
    std::env::current_dir()
        .map(|c| c.join(&p))
        .map_err(|_| "relative path and no current directory".to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A backend taking bare paths (like `dir`) and one with a scheme only (like `stick`).
    struct Local(&'static str, bool);

    impl BackendKind for Local {
        fn scheme(&self) -> &'static str {
            self.0
        }
        fn takes_bare_paths(&self) -> bool {
            self.1
        }
        fn syntax(&self) -> &'static str {
            if self.1 {
                "a directory (`/path` or `plain:/path`)"
            } else {
                "a carried medium (`carried:/media/usb`)"
            }
        }
        fn parse(&self, address: &str) -> Result<Address, String> {
            if address.is_empty() && !self.1 {
                return Err("give the mount point".into());
            }
            let path = absolute_path(address)?;
            Ok(Address {
                text: path.display().to_string(),
                place: Some(Place {
                    path,
                    marker_depth: 1,
                    plain: self.1,
                }),
            })
        }
        fn open(&self, _: &Target, _: &OpenContext) -> Result<Box<dyn OpenedMirror>, OpenError> {
            Err(OpenError::Access {
                what: "test".into(),
                reason: "not openable".into(),
            })
        }
    }

    static PLAIN: Local = Local("plain", true);
    static CARRIED: Local = Local("carried", false);
    static REG: Registry = Registry::new(&[&PLAIN, &CARRIED]);

    #[test]
    fn parse_table() {
        // (target, canonical URL or the start of the error)
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("/mnt/nas", Ok("plain:/mnt/nas")),
            ("plain:/mnt/nas", Ok("plain:/mnt/nas")),
            ("plain:///mnt/nas", Ok("plain:///mnt/nas")),
            ("carried:/media/usb", Ok("carried:/media/usb")),
            ("carried:", Err("give the mount point")),
            (
                "ssh://me@nas/x",
                Err("the \"ssh\" backend is not available"),
            ),
            ("ftp:x", Err("the \"ftp\" backend is not available")),
            ("./a:b", Ok("plain:")),
        ];
        for (given, want) in cases {
            match (REG.parse(given), want) {
                (Ok(t), Ok(w)) => assert!(t.url().starts_with(w), "{given}: {}", t.url()),
                (Err(e), Err(w)) => assert!(e.reason.starts_with(w), "{given}: {e}"),
                (got, _) => panic!("{given}: {got:?}"),
            }
        }
        let e = REG.parse("ssh://x").unwrap_err().to_string();
        assert!(
            e.contains("`/path` or `plain:/path`") && e.contains("`carried:/media/usb`"),
            "{e}"
        );
        assert_eq!(REG.parse("/a").unwrap(), REG.parse("plain:/a").unwrap());
        assert_ne!(REG.parse("/a").unwrap(), REG.parse("carried:/a").unwrap());
        assert_eq!(REG.parse("carried:/a").unwrap().noun(), "mirror");
        assert!(REG.get("carried").is_some() && REG.get("ssh").is_none());
    }

    #[test]
    fn a_registry_without_bare_paths_says_so() {
        static ONLY: Registry = Registry::new(&[&CARRIED]);
        let e = ONLY.parse("/mnt/nas").unwrap_err();
        assert!(e.reason.contains("names no backend"), "{e}");
    }
}
