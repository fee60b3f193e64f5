//! The stick's layout on the medium (docs/stick-format.md has the whole story):
//!
//! ```text
//! MOUNT/briefcase/FOLDER-ID/
//!     STICK                 plain TOML: format, folder ID, public recipients (no secrets)
//!     keys.0.age keys.1.age the stick secret, age-encrypted to every machine (two copies)
//!     recovery.age          the stick secret, age-encrypted with the passphrase (optional)
//!     state.0.age state.1.age  two generations of the root: which segments make the catalog
//!     segments/GEN-RAND.age the catalog: a base, then small incremental segments
//!     chunks/xx/NAME        one encrypted chunk; NAME = keyed blake3 of its plaintext hash
//! ```
//!
//! Every name is lowercase ASCII, no file is larger than a few MiB, and nothing depends on the
//! medium's mtimes, so FAT32 and exFAT hold it as well as ext4.

use briefcase_mirror::{FolderId, RelPath};
use serde::{Deserialize, Serialize};

use crate::keys::Recipient;

/// Format version written in `STICK`: 2 since roots and segments carry a MAC and the list of
/// recipients is kept encrypted; 3 since segments record a changed chunk list as a splice of the
/// one committed before and pages hold ~16 chunks (formats 1 and 2 are still read, and migrated
/// at the next commit).
pub const FORMAT: u32 = 3;
/// The oldest format this version reads.
pub const FORMAT_OLDEST: u32 = 1;
/// Top directory on the medium.
pub const TOP: &str = "briefcase";
/// The plain marker file.
pub const STICK_FILE: &str = "STICK";
/// The two copies of the wrapped stick secret.
pub const KEYS: [&str; 2] = ["keys.0.age", "keys.1.age"];
/// The stick secret as an older briefcase (format 1) wrapped it, kept when a machine first
/// re-wraps a migrated stick: format 1 listed its recipients in plain only, so the machines it
/// was wrapped to are unknown and keep their access through this copy.
pub const KEYS_LEGACY: &str = "keys.legacy.age";
/// The passphrase-wrapped stick secret.
pub const RECOVERY: &str = "recovery.age";
/// The two root generations.
pub const ROOTS: [&str; 2] = ["state.0.age", "state.1.age"];
/// Directory of catalog segments.
pub const SEGMENTS: &str = "segments";
/// Directory of chunks.
pub const CHUNKS: &str = "chunks";

/// Largest plaintext of a root, in bytes.
pub const MAX_ROOT: u64 = 1 << 20;
/// Largest plaintext of a segment, in bytes (a base of ~1 million entries).
pub const MAX_SEGMENT: u64 = 512 << 20;
/// Largest plaintext of a key file, in bytes.
pub const MAX_KEYS: u64 = 16 << 10;
/// Largest `STICK` file read, in bytes.
pub const MAX_STICK_FILE: u64 = 64 << 10;
/// Largest encrypted file of the stick's own read besides segments (keys, roots), in bytes.
pub const MAX_SMALL_FILE: u64 = MAX_ROOT + (MAX_ROOT >> 12) + 4096;
/// Largest encrypted segment file read, in bytes (a plaintext of [`MAX_SEGMENT`] plus age's
/// 16 bytes per 64 KiB and its header).
pub const MAX_SEGMENT_FILE: u64 = MAX_SEGMENT + (MAX_SEGMENT >> 12) + 4096;
/// Recipient lines of `STICK` shown in messages, at most.
pub const MAX_DISPLAY_RECIPIENTS: usize = 32;
/// Characters of a recipient's key or label shown in messages, at most.
pub const MAX_DISPLAY_CHARS: usize = 100;

/// `s` as display text: control characters (terminal escapes, newlines) dropped, at most
/// [`MAX_DISPLAY_CHARS`] characters (an ellipsis marks a cut).
pub fn display_text(s: &str) -> String {
    let clean: String = s.chars().filter(|c| !c.is_control()).collect();
    if clean.chars().count() > MAX_DISPLAY_CHARS {
        let mut cut: String = clean.chars().take(MAX_DISPLAY_CHARS).collect();
        cut.push('…');
        cut
    } else {
        clean
    }
}

/// The folder's directory on the medium, relative to the mount point.
pub fn folder_dir(folder: FolderId) -> String {
    format!("{TOP}/{folder}")
}

/// `rel` inside the folder's directory.
pub fn at(folder: FolderId, rel: &str) -> RelPath {
    fixed(&format!("{}/{rel}", folder_dir(folder)))
}

/// `rel` inside the folder's directory, or `None` when it is not a valid relative path (`rel`
/// read from the medium: never panics).
pub fn try_at(folder: FolderId, rel: &str) -> Option<RelPath> {
    RelPath::new(format!("{}/{rel}", folder_dir(folder)).into_bytes()).ok()
}

/// A path built from this module's fixed ASCII names and hex digits.
pub fn fixed(s: &str) -> RelPath {
    RelPath::new(s.as_bytes().to_vec()).unwrap_or_else(|_| unreachable_path())
}

#[allow(clippy::panic)]
fn unreachable_path() -> RelPath {
    panic!("the stick layout builds only valid relative paths")
}

/// The chunk file of plaintext hash `hash`: `chunks/xx/NAME`, NAME being the first 16 bytes of
/// blake3 keyed with the stick's name key over the hash, in hex (the directory is its first two
/// hex digits). Without the key, names reveal nothing about content.
pub fn chunk_name(name_key: &[u8; 32], hash: &[u8; 32]) -> String {
    let k = blake3::keyed_hash(name_key, hash);
    let hex: String = k.as_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir: String = hex.chars().take(2).collect();
    format!("{CHUNKS}/{dir}/{hex}")
}

/// One recipient line of `STICK`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientLine {
    /// `age1…`.
    pub key: String,
    /// The machine's name.
    pub label: String,
}

/// The plain `STICK` file: what a machine may know before decrypting anything. Anyone who can
/// write the medium can edit it, so nothing in it is trusted: the folder ID is checked against
/// the encrypted key record and roots, and the recipients are display text for the message a
/// machine that cannot open the stick gets (briefcase never encrypts to them; the list it
/// encrypts to is kept in the authenticated roots).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StickFile {
    /// Format version ([`FORMAT`]).
    pub format: u32,
    /// The folder, 32 hex digits.
    pub folder: String,
    /// Public keys the stick secret is encrypted to (so a machine that cannot open the stick
    /// can be told which can). Display text only, never encrypted to.
    #[serde(default)]
    pub recipients: Vec<RecipientLine>,
    /// Whether `recovery.age` exists.
    #[serde(default)]
    pub passphrase: bool,
}

impl StickFile {
    /// The file for `folder` with `recipients`.
    pub fn new(folder: FolderId, recipients: &[Recipient], passphrase: bool) -> StickFile {
        StickFile {
            format: FORMAT,
            folder: folder.to_string(),
            recipients: recipients
                .iter()
                .map(|r| RecipientLine {
                    key: r.key.to_string(),
                    label: r.label.clone(),
                })
                .collect(),
            passphrase,
        }
    }

    /// The file as written on the medium.
    pub fn render(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!(
            "# briefcase stick: an encrypted replica of one folder; see docs/stick-format.md.\n\
             # Nothing here is secret. Do not edit.\n{body}"
        )
    }

    /// Parses the file (at most [`MAX_STICK_FILE`] bytes). Recipient lines are kept as
    /// display text ([`display_text`]), at most [`MAX_DISPLAY_RECIPIENTS`] of them.
    ///
    /// # Errors
    /// What is wrong, in words.
    pub fn parse(bytes: &[u8]) -> Result<StickFile, String> {
        if bytes.len() as u64 > MAX_STICK_FILE {
            return Err(format!("{} bytes, more than a STICK file", bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
        let mut f: StickFile = toml::from_str(text).map_err(|e| display_text(&e.to_string()))?;
        if !(FORMAT_OLDEST..=FORMAT).contains(&f.format) {
            return Err(format!(
                "format {} (this briefcase reads formats {FORMAT_OLDEST} to {FORMAT}); update briefcase",
                f.format
            ));
        }
        f.folder = display_text(&f.folder);
        f.recipients.truncate(MAX_DISPLAY_RECIPIENTS);
        for r in &mut f.recipients {
            r.key = display_text(&r.key);
            r.label = display_text(&r.label);
        }
        Ok(f)
    }

    /// The folder ID.
    ///
    /// # Errors
    /// When it is not 32 hex digits.
    pub fn folder_id(&self) -> Result<FolderId, String> {
        if self.folder.len() != 32 || !self.folder.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("folder {:?} is not 32 hex digits", self.folder));
        }
        self.folder
            .parse::<FolderId>()
            .map_err(|_| format!("folder {:?} is not 32 hex digits", self.folder))
    }

    /// "age1… (office), age1… (home), or the recovery passphrase", for messages.
    pub fn describe_recipients(&self) -> String {
        let mut parts: Vec<String> = self
            .recipients
            .iter()
            .map(|r| {
                if r.label.is_empty() {
                    r.key.clone()
                } else {
                    format!("{} ({})", r.key, r.label)
                }
            })
            .collect();
        if self.passphrase {
            parts.push("the recovery passphrase".into());
        }
        if parts.is_empty() {
            "nobody listed".into()
        } else {
            parts.join(", ")
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stick_file_round_trip() {
        let r = Recipient::parse(
            &crate::keys::MachineKey::generate().recipient().to_string(),
            "office",
        )
        .unwrap();
        let f = StickFile::new(FolderId(7), &[r], true);
        let back = StickFile::parse(f.render().as_bytes()).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.folder_id().unwrap(), FolderId(7));
        assert!(back.describe_recipients().contains("(office)"));
        assert!(StickFile::parse(b"format = 99\nfolder = \"x\"").is_err());
        assert!(StickFile::parse(b"format = 1\nfolder = \"x\"").is_ok());
        assert!(StickFile::parse(b"format = 2\nfolder = \"x\"").is_ok());
    }

    #[test]
    fn stick_file_recipients_are_display_text() {
        let long = "x".repeat(500);
        let text = format!(
            "format = 2\nfolder = \"{}\"\n[[recipients]]\nkey = \"age1\\u001b[31mevil\\n\"\nlabel = \"{long}\"\n",
            FolderId(7)
        );
        let f = StickFile::parse(text.as_bytes()).unwrap();
        assert_eq!(f.recipients[0].key, "age1[31mevil");
        assert_eq!(f.recipients[0].label.chars().count(), MAX_DISPLAY_CHARS + 1);
        let many: String = (0..100)
            .map(|i| format!("[[recipients]]\nkey = \"k{i}\"\nlabel = \"\"\n"))
            .collect();
        let text = format!("format = 2\nfolder = \"{}\"\n{many}", FolderId(7));
        let f = StickFile::parse(text.as_bytes()).unwrap();
        assert_eq!(f.recipients.len(), MAX_DISPLAY_RECIPIENTS);
        assert!(StickFile::parse(&vec![b' '; 70 << 10]).is_err());
        let odd = format!("format = 2\nfolder = \"+{}\"\n", &"0".repeat(31));
        assert!(StickFile::parse(odd.as_bytes())
            .unwrap()
            .folder_id()
            .is_err());
    }

    #[test]
    fn chunk_names_are_keyed() {
        let h = [3u8; 32];
        let a = chunk_name(&[1; 32], &h);
        let b = chunk_name(&[2; 32], &h);
        assert_ne!(a, b);
        assert!(a.starts_with("chunks/") && a.len() == "chunks/xx/".len() + 32);
        assert_eq!(&a[7..9], &a[10..12]);
    }
}
