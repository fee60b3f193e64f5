//! Keys: this machine's age identity, and the stick's own secret wrapped for every recipient.
//!
//! Two levels, like a LUKS key slot or restic's key files: the stick has one secret of its own
//! (an age X25519 identity plus a 32-byte key for chunk names, [`StickSecret`]), created when the
//! stick is initialised. Chunks and state are encrypted to the stick's own recipient; the secret
//! itself is stored in `keys.0.age` and `keys.1.age` (two copies, the same content), encrypted to
//! the X25519 recipient of every machine that shares the folder, and, when a passphrase was
//! given, in `recovery.age`, encrypted with age's scrypt passphrase recipient (age does not let a
//! passphrase share a file with other recipients). Adding a machine rewrites the key files only.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::{ExposeSecret, SecretString};
use age::x25519;
use briefcase_mirror::FolderId;

/// What can go wrong with keys, each naming the file involved.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The identity file cannot be read or written.
    #[error("identity file {path}: {source}; check that this user owns it and that the disk is not full")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The identity file does not hold an age X25519 identity.
    #[error("identity file {path} holds no age identity (AGE-SECRET-KEY-1…): {reason}; move it away and run `briefcase id` to make a new one (sticks encrypted to the old one then need its key)")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The identity file can be read by others.
    #[error("identity file {path} has mode {mode:o}; it must be readable by its owner only: run `chmod 600 {path}`")]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// This machine's age X25519 identity, kept in the config dir with mode 0600.
pub struct MachineKey {
    identity: x25519::Identity,
}

impl std::fmt::Debug for MachineKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MachineKey({})", self.recipient())
    }
}

impl Clone for MachineKey {
    fn clone(&self) -> Self {
        MachineKey {
            identity: self.identity.clone(),
        }
    }
}

impl MachineKey {
    /// A new random identity (not saved).
    pub fn generate() -> MachineKey {
        MachineKey {
            identity: x25519::Identity::generate(),
        }
    }

    /// Reads the identity at `path`; `Ok(None)` when the file does not exist.
    ///
    /// # Errors
    /// [`KeyError::Io`], [`KeyError::Malformed`], and [`KeyError::Exposed`] when the file is
    /// readable by group or others.
    pub fn load(path: &Path) -> Result<Option<MachineKey>, KeyError> {
        use std::os::unix::fs::PermissionsExt;
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let mode = f.metadata().map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut text = String::new();
        f.take(64 << 10).read_to_string(&mut text).map_err(io)?;
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
            .ok_or_else(|| KeyError::Malformed {
                path: path.to_path_buf(),
                reason: "no line starts with AGE-SECRET-KEY-1".into(),
            })?;
        let identity = x25519::Identity::from_str(line).map_err(|e| KeyError::Malformed {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Some(MachineKey { identity }))
    }

    /// Reads the identity at `path`, creating it (and its directory, mode 0700) on first use.
    /// Returns the key and whether it was created now.
    ///
    /// # Errors
    /// As [`MachineKey::load`].
    pub fn load_or_create(path: &Path) -> Result<(MachineKey, bool), KeyError> {
        if let Some(k) = MachineKey::load(path)? {
            return Ok((k, false));
        }
        let k = MachineKey::generate();
        k.save(path)?;
        Ok((k, true))
    }

    /// Writes the identity to `path` (mode 0600, atomically; refuses to replace an existing file).
    ///
    /// # Errors
    /// [`KeyError::Io`].
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        let tmp = dir.join(format!(".identity-{}.tmp", std::process::id()));
        let text = format!(
            "# briefcase machine identity, created {}\n# public key: {}\n{}\n",
            humantime_now(),
            self.recipient(),
            self.identity.to_string().expose_secret()
        );
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        let written = f
            .write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .and_then(|()| std::fs::hard_link(&tmp, path));
        let _ = std::fs::remove_file(&tmp);
        written.map_err(io)?;
        briefcase_mirror::fsutil::fsync_dir(dir).map_err(io)
    }

    /// The public recipient (`age1…`) to give other machines.
    pub fn recipient(&self) -> x25519::Recipient {
        self.identity.to_public()
    }

    pub(crate) fn identity(&self) -> &x25519::Identity {
        &self.identity
    }
}

/// Seconds since the epoch, for the identity file's comment (no time crate needed here).
fn humantime_now() -> String {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("at unix time {s}")
}

/// A recipient of a stick: a machine's public key and a label for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The age X25519 recipient.
    pub key: x25519::Recipient,
    /// A human label (the machine's name), shown in "this stick accepts …" messages.
    pub label: String,
}

impl Recipient {
    /// Parses `age1…`, with an optional label.
    ///
    /// # Errors
    /// A message naming the bad key and what a recipient looks like.
    pub fn parse(key: &str, label: &str) -> Result<Recipient, String> {
        let key = x25519::Recipient::from_str(key.trim()).map_err(|e| {
            format!(
                "{key:?} is not an age X25519 recipient ({e}); it looks like age1… and is printed by `briefcase id` on the other machine"
            )
        })?;
        Ok(Recipient {
            key,
            label: label.to_string(),
        })
    }
}

/// What a stick is encrypted to when it is created or re-keyed.
#[derive(Clone, Default)]
pub struct Recipients {
    /// Machines (this one included by the caller).
    pub machines: Vec<Recipient>,
    /// A recovery passphrase, if any.
    pub passphrase: Option<SecretString>,
}

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recipients")
            .field("machines", &self.machines)
            .field("passphrase", &self.passphrase.is_some())
            .finish()
    }
}

/// How this process may open a stick: this machine's key, and a passphrase if one was given.
#[derive(Clone, Default)]
pub struct Unlock {
    /// This machine's identity.
    pub machine: Option<MachineKey>,
    /// A recovery passphrase.
    pub passphrase: Option<SecretString>,
}

impl std::fmt::Debug for Unlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unlock")
            .field("machine", &self.machine)
            .field("passphrase", &self.passphrase.is_some())
            .finish()
    }
}

/// A stick's identity as this machine pins it: the first 16 bytes of a blake3 key derivation
/// over the stick secret (its X25519 identity, name key and folder), shown as 32 hex digits.
///
/// Two sticks have the same ID only if they have the same secret, and the ID reveals nothing
/// of the secret. A machine records it in its config when it adds or clones a stick and
/// refuses a stick whose secret gives another ID.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StickId(pub [u8; 16]);

impl std::fmt::Display for StickId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for StickId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StickId({self})")
    }
}

impl FromStr for StickId {
    type Err = String;

    /// Parses 32 hex digits.
    ///
    /// # Errors
    /// A message saying what a stick ID looks like.
    fn from_str(s: &str) -> Result<StickId, String> {
        let mut out = [0u8; 16];
        if parse_hex(s.trim(), &mut out) {
            Ok(StickId(out))
        } else {
            Err(format!("{s:?} is not a stick ID (32 hex digits)"))
        }
    }
}

/// Fills `out` from exactly `2 * out.len()` hex digits; false on anything else. Never panics,
/// whatever `s` holds (it is read from untrusted files).
pub(crate) fn parse_hex(s: &str, out: &mut [u8]) -> bool {
    let b = s.as_bytes();
    if b.len() != out.len() * 2 {
        return false;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        match (
            pair.first().copied().and_then(digit),
            pair.get(1).copied().and_then(digit),
        ) {
            (Some(hi), Some(lo)) => *o = hi << 4 | lo,
            _ => return false,
        }
    }
    true
}

/// Key-derivation contexts (blake3 `derive_key`), fixed forever.
const ID_CONTEXT: &str = "briefcase stick 2025-06 stick ID";
const MAC_CONTEXT: &str = "briefcase stick 2025-06 root and segment MAC key";

/// The stick's own secret: the identity its chunks and state are encrypted to, and the key of
/// the keyed blake3 hash that names chunks. Never stored in plain.
#[derive(Clone)]
pub(crate) struct StickSecret {
    pub identity: x25519::Identity,
    pub recipient: x25519::Recipient,
    pub name_key: [u8; 32],
    pub folder: FolderId,
    /// What machines pin (derived from the three above).
    pub id: StickId,
    /// The key of the keyed blake3 MAC over roots and segments (derived from the three above).
    pub mac_key: [u8; 32],
}

const SECRET_MAGIC: &str = "briefcase-stick-secret 1";
/// Largest decrypted key record accepted, in bytes.
const MAX_SECRET_TEXT: usize = 4096;

impl StickSecret {
    fn with(identity: x25519::Identity, name_key: [u8; 32], folder: FolderId) -> StickSecret {
        let mut material = Vec::with_capacity(160);
        material.extend_from_slice(identity.to_string().expose_secret().as_bytes());
        material.push(0);
        material.extend_from_slice(&name_key);
        material.extend_from_slice(folder.to_string().as_bytes());
        let id_full = blake3::derive_key(ID_CONTEXT, &material);
        let mac_key = blake3::derive_key(MAC_CONTEXT, &material);
        material.fill(0);
        let mut id = [0u8; 16];
        id.copy_from_slice(id_full.get(..16).unwrap_or(&[0u8; 16]));
        StickSecret {
            recipient: identity.to_public(),
            identity,
            name_key,
            folder,
            id: StickId(id),
            mac_key,
        }
    }

    pub fn generate(folder: FolderId) -> StickSecret {
        let mut name_key = [0u8; 32];
        rand::fill(&mut name_key);
        StickSecret::with(x25519::Identity::generate(), name_key, folder)
    }

    pub fn encode(&self) -> SecretString {
        let hex: String = self.name_key.iter().map(|b| format!("{b:02x}")).collect();
        SecretString::from(format!(
            "{SECRET_MAGIC}\nfolder {}\nidentity {}\nnames {hex}\n",
            self.folder,
            self.identity.to_string().expose_secret()
        ))
    }

    /// Parses a decrypted key record. Whoever knows a machine's public key can make a key file
    /// it decrypts, so this is untrusted input: checked parsing only, no slicing.
    pub fn decode(bytes: &[u8]) -> Result<StickSecret, String> {
        if bytes.len() > MAX_SECRET_TEXT {
            return Err(format!("{} bytes, more than a key record", bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| "not text")?;
        let mut lines = text.lines();
        if lines.next() != Some(SECRET_MAGIC) {
            return Err("unknown key format".into());
        }
        let (mut folder, mut identity, mut names) = (None, None, None);
        for l in lines {
            match l.split_once(' ') {
                Some(("folder", v)) => {
                    folder = Some(v.parse::<FolderId>().map_err(|_| "bad folder ID")?)
                }
                Some(("identity", v)) => {
                    identity = Some(x25519::Identity::from_str(v).map_err(|_| "bad identity")?)
                }
                Some(("names", v)) => {
                    let mut k = [0u8; 32];
                    if !parse_hex(v, &mut k) {
                        return Err("bad name key (not 64 hex digits)".into());
                    }
                    names = Some(k);
                }
                _ => {}
            }
        }
        match (folder, identity, names) {
            (Some(folder), Some(identity), Some(name_key)) => {
                Ok(StickSecret::with(identity, name_key, folder))
            }
            _ => Err("incomplete key record".into()),
        }
    }
}

/// Encrypts `plain` to `recipients` (at least one).
pub(crate) fn encrypt_to(
    recipients: &[&dyn age::Recipient],
    plain: &[u8],
) -> Result<Vec<u8>, String> {
    let enc =
        age::Encryptor::with_recipients(recipients.iter().copied()).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(plain.len() + 512);
    let mut w = enc.wrap_output(&mut out).map_err(|e| e.to_string())?;
    w.write_all(plain).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

/// Decrypts an age file with `identities`, reading at most `limit` plaintext bytes.
pub(crate) fn decrypt_with(
    identities: &[&dyn age::Identity],
    cipher: &[u8],
    limit: u64,
) -> Result<Vec<u8>, age::DecryptError> {
    let dec = age::Decryptor::new_buffered(cipher)?;
    let mut r = dec.decrypt(identities.iter().copied())?;
    let mut out = Vec::new();
    (&mut r).take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(age::DecryptError::Io(std::io::Error::other(format!(
            "more than {limit} bytes"
        ))));
    }
    Ok(out)
}

/// The scrypt identity for `pass`, with age's default cap on the work factor.
pub(crate) fn passphrase_identity(pass: &SecretString) -> age::scrypt::Identity {
    age::scrypt::Identity::new(pass.clone())
}

/// The scrypt recipient for `pass`.
pub(crate) fn passphrase_recipient(pass: &SecretString) -> age::scrypt::Recipient {
    age::scrypt::Recipient::new(pass.clone())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn secret_round_trip() {
        let s = StickSecret::generate(FolderId(42));
        let d = StickSecret::decode(s.encode().expose_secret().as_bytes()).unwrap();
        assert_eq!(d.name_key, s.name_key);
        assert_eq!(d.folder, s.folder);
        assert_eq!(d.recipient.to_string(), s.recipient.to_string());
        assert_eq!(d.id, s.id);
        assert_eq!(d.mac_key, s.mac_key);
        assert_ne!(StickSecret::generate(FolderId(42)).id, s.id);
        assert_eq!(s.id.to_string().parse::<StickId>().unwrap(), s.id);
        assert!(StickSecret::decode(b"garbage").is_err());
    }

    /// Issue 9, case 8: a names line with a multibyte character at byte 1 (64 bytes long) once
    /// panicked on a slice that was not at a char boundary.
    #[test]
    fn a_crafted_key_record_is_an_error_not_a_panic() {
        let s = StickSecret::generate(FolderId(42));
        let text = s.encode();
        let good = text.expose_secret();
        let names_at = good.find("names ").unwrap() + "names ".len();
        let mut crafted = good[..names_at].to_string();
        crafted.push('a');
        crafted.push('é');
        crafted.push_str(&"0".repeat(61));
        crafted.push('\n');
        assert_eq!(crafted.lines().last().unwrap().len(), "names ".len() + 64);
        assert!(StickSecret::decode(crafted.as_bytes()).is_err());
        for bad in [
            "names \u{0}".to_string(),
            format!("names {}", "é".repeat(32)),
            format!("names {}", "0".repeat(63)),
            "folder é".to_string(),
            "identity AGE-SECRET-KEY-1é".to_string(),
        ] {
            let t = format!("{SECRET_MAGIC}\n{bad}\n");
            assert!(StickSecret::decode(t.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(StickId::from_str("zz").is_err());
        assert!(StickId::from_str(&"é".repeat(16)).is_err());
    }

    #[test]
    fn identity_file_is_private_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("cfg/identity.txt");
        let (a, created) = MachineKey::load_or_create(&p).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (b, created) = MachineKey::load_or_create(&p).unwrap();
        assert!(!created);
        assert_eq!(a.recipient().to_string(), b.recipient().to_string());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            MachineKey::load(&p),
            Err(KeyError::Exposed { .. })
        ));
    }
}
