//! The `stick` backend: a replica of a folder on a removable drive that office and home carry
//! between them, encrypted with age, stored as content-defined chunks so that an edit writes
//! about one chunk, and laid out so that FAT32 and exFAT hold it (docs/stick-format.md).
//!
//! It is a *layer*, after rclone's `crypt` and rustic's `decrypt` backends: [`StickMirror`]
//! implements [`Mirror`] for the engine, and stores everything through another [`Mirror`] used
//! as plain storage (a [`briefcase_dir::DirMirror::storage`] over the mount point; an `ssh` or
//! `ftp` storage can take its place). The data tree the engine sees is virtual: it lives in the
//! encrypted catalog ([`catalog`]), and file content in encrypted chunks.
//!
//! - Files are cut with FastCDC (Xia et al., "FastCDC: a Fast and Efficient Content-Defined
//!   Chunking Approach for Data Deduplication", USENIX ATC 2016; the `fastcdc` crate's 2020
//!   variant), 16 KiB min / 64 KiB average / 256 KiB max; each chunk is named by its blake3 hash
//!   keyed with a secret name key and stored once, whichever files and versions share it.
//! - Each chunk, catalog segment and root is an age file encrypted to the stick's own X25519
//!   recipient; that identity is wrapped for every machine ([`keys`]).
//! - A pushed file's chunk list comes with it from the engine's journal (`PutItem::chunks`, the
//!   scanner's FastCDC cut): the stick reads the file along it, hashing each chunk, instead of
//!   cutting it again (its own cut when the sizes differ).
//! - Writes go to chunks first; the catalog (tree, chunk-list pages, the engine's state parts)
//!   is committed by every [`StateStore::commit_state`]: one small encrypted segment (a changed
//!   chunk list as a splice of the committed one, format 3), then the root into the older of two
//!   generation slots. Until then nothing new is visible, so a stick yanked at any instant shows
//!   the last committed catalog; the stick declares `atomic_commit`, so the engine's state rides
//!   in that one log, without roots or intents of its own. Chunks nothing refers to are removed
//!   after the commit that dropped them; any a crash left behind, by [`Mirror::sweep`].
//! - Every chunk read is decrypted (age authenticates it) and checked against the blake3 hash the
//!   catalog holds, so a swapped or altered chunk is refused (invariant 6).
//! - age does not authenticate the sender, so roots and segments also end with a keyed blake3
//!   MAC under a key derived from the stick secret: only its holders can make a catalog that is
//!   read. The root also holds the list of machines the secret is wrapped to (the plain `STICK`
//!   is display text, never encrypted to), and a machine pins the stick's ID
//!   ([`StickMirror::with_pin`]) so that a stick with another secret is refused before anything
//!   is read from it or written (invariant 8).
#![deny(missing_docs)]

pub mod catalog;
pub mod format;
pub mod keys;
mod kind;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use briefcase_mirror::{
    split_runs, Capabilities, ChunkRef, ContentHash, Detail, EntryKind, FileMeta, FolderId, Mirror,
    MirrorError, MirrorExt, MirrorResult, Presence, PutItem, PutSource, RelPath, RemoteStat, Run,
    StateStore, WriteOp, WriteResult,
};
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, Content, Delta, Node};
use crate::format::{
    RecipientLine, StickFile, CHUNKS, KEYS, KEYS_LEGACY, RECOVERY, ROOTS, SEGMENTS, STICK_FILE, TOP,
};
use crate::keys::{decrypt_with, encrypt_to, StickSecret};
pub use crate::keys::{KeyError, MachineKey, Recipient, Recipients, StickId, Unlock};
pub use crate::kind::{StickKind, KIND};
pub use age::secrecy::{ExposeSecret, SecretString};
/// FastCDC sizes (the contract's type; the stick cuts with [`ChunkParams::default`] unless
/// [`StickMirror::with_chunk_params`] says otherwise).
pub use briefcase_mirror::ChunkParams;

/// Largest encrypted chunk file accepted, in bytes (a max chunk plus age's overhead).
const MAX_CHUNK_FILE: u64 = 1 << 20;
/// Segments after which the next commit writes a new base.
const MAX_SEGMENTS: usize = 32;
/// Segments may add up to half the base plus this many bytes before a new base is written.
const SEGMENT_SLACK: u64 = 16 << 10;
/// Chunks written per storage batch (one flush each).
const BATCH_CHUNKS: usize = 512;
/// Bytes written per storage batch.
const BATCH_BYTES: usize = 32 << 20;
/// A root of format 1 (no MAC, no recipient list): read, never written.
const ROOT_MAGIC_V1: &[u8; 8] = b"BCSTKRT1";
/// A segment of format 1 (no MAC): read under a format 1 root only, never written.
const SEGMENT_MAGIC_V1: &[u8; 8] = b"BCSTKSG1";
/// A root of format 2 (segments of format 2 under it): read, never written.
const ROOT_MAGIC_V2: &[u8; 8] = b"BCSTKRT2";
/// A segment of format 2 (as format 3, without splices): read under a format 2 root only.
const SEGMENT_MAGIC_V2: &[u8; 8] = b"BCSTKSG2";
/// A root of format 3: magic, postcard [`RootRec`], keyed blake3 MAC of both (32 bytes).
const ROOT_MAGIC: &[u8; 8] = b"BCSTKRT3";
/// A segment of format 3: magic, postcard [`Delta`] (splices allowed), keyed blake3 MAC of both
/// (32 bytes).
const SEGMENT_MAGIC: &[u8; 8] = b"BCSTKSG3";
/// Length of the MAC that ends a root or segment of format 2 or 3, bytes.
const MAC_LEN: usize = 32;

/// One catalog part a root lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PartRef {
    /// Path relative to the folder directory (`segments/GEN-RAND.age`).
    name: String,
    /// Length of the encrypted file, bytes.
    len: u64,
    /// blake3 of the encrypted file.
    hash: [u8; 32],
}

/// A root of format 1: which parts make the catalog of one generation.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RootRecV1 {
    folder: FolderId,
    generation: u64,
    parts: Vec<PartRef>,
}

/// A root: which parts make the catalog of one generation, and who may open the stick. Sealed
/// with a MAC under a key derived from the stick secret, so only its holders can make one.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RootRec {
    folder: FolderId,
    generation: u64,
    parts: Vec<PartRef>,
    /// The machines the stick secret is wrapped to: the list briefcase encrypts to when it
    /// re-wraps the keys (never the plain `STICK`).
    recipients: Vec<RecipientLine>,
    /// Whether `recipients` is the whole list; false on a stick migrated from format 1, whose
    /// list was in plain only (its machines keep their access through `keys.legacy.age`).
    recipients_known: bool,
    /// Whether `recovery.age` exists.
    passphrase: bool,
}

/// A root as read: the record, and its format (1: unauthenticated; its segments are of the same
/// format).
#[derive(Debug)]
struct ReadRoot {
    rec: RootRec,
    format: u32,
}

/// An open stick: keys unlocked, catalog loaded.
struct Open {
    folder: FolderId,
    secret: Arc<StickSecret>,
    stick: StickFile,
    cat: Catalog,
    generation: u64,
    /// blake3 of the newest root file as read or written (to notice another machine's writes).
    root_digest: [u8; 32],
    parts: Vec<PartRef>,
    /// Parts of the other slot's root, kept until it is overwritten.
    other_parts: Vec<PartRef>,
    /// Who may open the stick, as the authenticated root says (see [`RootRec`]).
    recipients: Vec<RecipientLine>,
    recipients_known: bool,
    passphrase: bool,
    /// The format of the root the catalog was read from: below [`format::FORMAT`], the next
    /// commit writes a new base and a root of the current format, and rewrites `STICK`.
    format: u32,
    dirs_made: HashSet<String>,
    /// The stick was seen missing since: check it is still the same before going on.
    stale: bool,
    /// Chunk files no catalog refers to were swept since the stick was opened.
    swept: bool,
}

/// Called once with the ID of a stick that had no pin when it was first opened (trust on first
/// use), so that the caller records it; see [`StickMirror::on_first_pin`].
pub type PinHook = Arc<dyn Fn(&StickId) + Send + Sync>;

/// The encrypted stick (see the crate docs).
pub struct StickMirror {
    location: String,
    mount: PathBuf,
    storage: Arc<dyn Mirror>,
    folder_hint: Option<FolderId>,
    unlock: Unlock,
    create: Option<Recipients>,
    params: ChunkParams,
    open: tokio::sync::Mutex<Option<Open>>,
    /// The stick ID this machine accepts; learnt at the first opening when `None`.
    pin: std::sync::Mutex<Option<StickId>>,
    /// The pin came from the caller (the config), not from this process's first opening.
    pin_given: bool,
    on_pin: Option<PinHook>,
}

impl std::fmt::Debug for StickMirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StickMirror")
            .field("location", &self.location)
            .field("folder", &self.folder_hint)
            .finish()
    }
}

/// What [`StickMirror::folders`] finds on a medium.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundFolder {
    /// The folder.
    pub folder: FolderId,
    /// Its plain `STICK` file.
    pub stick: StickFile,
}

impl StickMirror {
    /// A stick at the mount point `mount` (a directory on the medium), for `folder` when known
    /// (a medium may carry several folders; without one it must carry exactly one). `unlock`
    /// opens it; `create` is what [`Mirror::init`] encrypts a new stick to. No I/O here.
    pub fn new(
        mount: PathBuf,
        folder: Option<FolderId>,
        unlock: Unlock,
        create: Option<Recipients>,
    ) -> StickMirror {
        let mount = std::path::absolute(&mount).unwrap_or(mount);
        let storage = Arc::new(briefcase_dir::DirMirror::storage(mount.clone()));
        Self::over(storage, mount, folder, unlock, create)
    }

    /// The layer over any storage mirror rooted at the medium's top (`mount` is only for
    /// messages).
    pub fn over(
        storage: Arc<dyn Mirror>,
        mount: PathBuf,
        folder: Option<FolderId>,
        unlock: Unlock,
        create: Option<Recipients>,
    ) -> StickMirror {
        StickMirror {
            location: format!("stick:{}", mount.display()),
            mount,
            storage,
            folder_hint: folder,
            unlock,
            create,
            params: ChunkParams::default(),
            open: tokio::sync::Mutex::new(None),
            pin: std::sync::Mutex::new(None),
            pin_given: false,
            on_pin: None,
        }
    }

    /// Accepts only the stick whose secret has ID `pin` (as recorded in this machine's config
    /// when the mirror was added or cloned): any other is refused with
    /// [`MirrorError::Corrupt`] before anything is read from its catalog or written to it.
    /// `None`: the first stick opened is pinned (trust on first use) and
    /// [`StickMirror::on_first_pin`]'s hook is told.
    /// With a pin, [`Mirror::init`] never makes a new stick where the pinned one is missing.
    pub fn with_pin(mut self, pin: Option<StickId>) -> StickMirror {
        *self
            .pin
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = pin;
        self.pin_given = pin.is_some();
        self
    }

    /// Calls `hook` when a stick opened without a pin gets pinned (to record the ID).
    pub fn on_first_pin(mut self, hook: PinHook) -> StickMirror {
        self.on_pin = Some(hook);
        self
    }

    /// The stick ID this mirror accepts now: the one given to [`StickMirror::with_pin`], or the
    /// one pinned at the first opening.
    pub fn pinned(&self) -> Option<StickId> {
        *self
            .pin
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens the stick (checking its pin) and returns its ID.
    ///
    /// # Errors
    /// Offline, locked, corrupt (a stick other than the pinned one) and I/O errors.
    pub async fn stick_id(&self) -> MirrorResult<StickId> {
        let mut g = self.lock().await?;
        Ok(self.opened(&mut g)?.secret.id)
    }

    /// Uses other FastCDC sizes (tests that want many chunks from small files).
    pub fn with_chunk_params(mut self, params: ChunkParams) -> StickMirror {
        self.params = params;
        self
    }

    /// The mount point.
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// The folders this medium carries (`briefcase/*/STICK`).
    ///
    /// # Errors
    /// I/O errors; [`MirrorError::Offline`] when the medium is absent.
    pub async fn folders(&self) -> MirrorResult<Vec<FoundFolder>> {
        let top = rel(TOP);
        let mut out = Vec::new();
        if self.storage.stat(&top).await?.is_none() {
            return Ok(out);
        }
        for s in self.storage.list_under(&top).await? {
            let comps: Vec<&[u8]> = s.path.components().collect();
            if comps.len() == 3
                && comps.get(2) == Some(&STICK_FILE.as_bytes())
                && s.kind == EntryKind::File
            {
                let bytes = self
                    .storage
                    .read_bytes(&s.path, format::MAX_STICK_FILE)
                    .await?;
                let stick = StickFile::parse(&bytes).map_err(|e| self.corrupt(&s.path, e))?;
                let folder = stick.folder_id().map_err(|e| self.corrupt(&s.path, e))?;
                out.push(FoundFolder { folder, stick });
            }
        }
        Ok(out)
    }

    /// The folder: the hint, or the only one on the medium.
    async fn folder(&self) -> MirrorResult<FolderId> {
        if let Some(f) = self.folder_hint {
            return Ok(f);
        }
        let found = self.folders().await?;
        match found.as_slice() {
            [one] => Ok(one.folder),
            [] => Err(MirrorError::Offline {
                location: self.location.clone(),
                reason: format!(
                    "no briefcase folder on it ({}/{TOP}/*/{STICK_FILE} is missing); is the right stick inserted?",
                    self.mount.display()
                ),
            }),
            many => Err(MirrorError::Refused {
                location: self.location.clone(),
                path: TOP.into(),
                reason: format!(
                    "it carries {} folders ({}); name one with --folder ID",
                    many.len(),
                    many.iter()
                        .map(|f| f.folder.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }

    fn corrupt(&self, what: impl std::fmt::Display, reason: impl Into<String>) -> MirrorError {
        MirrorError::Corrupt {
            location: self.location.clone(),
            what: what.to_string(),
            reason: reason.into(),
        }
    }

    fn offline(&self, folder: FolderId) -> MirrorError {
        MirrorError::Offline {
            location: self.location.clone(),
            reason: format!(
                "{}/{TOP}/{folder}/{STICK_FILE} is missing; is the stick inserted? Nothing was deleted",
                self.mount.display()
            ),
        }
    }

    /// Reads `STICK` of `folder`; `None` when absent.
    async fn read_stick_file(&self, folder: FolderId) -> MirrorResult<Option<StickFile>> {
        let p = format::at(folder, STICK_FILE);
        match self.storage.read_bytes(&p, format::MAX_STICK_FILE).await {
            Ok(bytes) => StickFile::parse(&bytes)
                .map(Some)
                .map_err(|e| self.corrupt(&p, e)),
            Err(MirrorError::NotFound { .. }) => Ok(None),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Locks the stick and makes sure it is open and present. A stick that went missing is
    /// reported offline; its open catalog (with changes not committed yet) is kept, and used
    /// again when the same stick comes back unchanged (see [`StickMirror::revalidate`]).
    async fn lock(&self) -> MirrorResult<tokio::sync::MutexGuard<'_, Option<Open>>> {
        let mut g = self.open.lock().await;
        if let Some(o) = g.as_mut() {
            let p = format::at(o.folder, STICK_FILE);
            match self.storage.stat(&p).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    o.stale = true;
                    return Err(self.offline(o.folder));
                }
                Err(e) => {
                    o.stale = true;
                    return Err(e);
                }
            }
            if o.stale {
                self.revalidate(&mut g).await;
            }
        }
        if g.is_none() {
            let o = self.open_stick().await?;
            *g = Some(o);
        }
        Ok(g)
    }

    /// Forgets the open catalog unless the medium's newest root is still the one this process
    /// read or wrote (a stick used on another machine meanwhile is read again; what this process
    /// had not committed then is dropped, and the engine, whose state was not stored either,
    /// writes it again).
    async fn revalidate(&self, g: &mut Option<Open>) {
        let Some(o) = g.as_mut() else { return };
        let newest = format::at(o.folder, ROOTS[(o.generation % 2) as usize]);
        let same = match self
            .storage
            .read_bytes(&newest, format::MAX_SMALL_FILE)
            .await
        {
            Ok(b) => blake3::hash(&b).as_bytes() == &o.root_digest,
            Err(_) => false,
        };
        let other = format::at(o.folder, ROOTS[((o.generation + 1) % 2) as usize]);
        let newer_elsewhere = match self
            .storage
            .read_bytes(&other, format::MAX_SMALL_FILE)
            .await
        {
            Ok(b) => decrypt_with(
                &[&o.secret.identity as &dyn age::Identity],
                &b,
                format::MAX_ROOT,
            )
            .ok()
            .and_then(|p| decode_root(&o.secret, &p).ok())
            .is_some_and(|r| r.rec.generation > o.generation),
            Err(_) => false,
        };
        if same && !newer_elsewhere {
            o.stale = false;
        } else {
            tracing::info!(stick = %self.location, "the stick changed elsewhere since it was last read here; reading it again");
            *g = None;
        }
    }

    /// The open stick behind the guard [`StickMirror::lock`] returned (it is always open
    /// there; the error only stands in for a panic).
    fn opened<'a>(&self, g: &'a mut Option<Open>) -> MirrorResult<&'a mut Open> {
        g.as_mut()
            .ok_or_else(|| self.corrupt("stick", "not open after opening it (a bug); sync again"))
    }

    /// Unlocks the keys and loads the newest valid catalog.
    async fn open_stick(&self) -> MirrorResult<Open> {
        let folder = self.folder().await?;
        let stick = self
            .read_stick_file(folder)
            .await?
            .ok_or_else(|| self.offline(folder))?;
        if stick.folder_id().ok() != Some(folder) {
            return Err(self.corrupt(
                format::at(folder, STICK_FILE),
                format!("it names folder {}, not {folder}", stick.folder),
            ));
        }
        let (secret, by_machine) = self.unlock_secret(folder, &stick).await?;
        let secret = Arc::new(secret);
        let loaded = self.load_catalog(folder, &secret).await?;
        let mut recipients = loaded.root.recipients.clone();
        let mut passphrase = loaded.root.passphrase;
        if loaded.format == 1 {
            // Format 1 kept the list in plain only: it is unknown, but for this machine, which
            // just opened the stick with its own key.
            passphrase = stick.passphrase;
            if let (true, Some(m)) = (by_machine, &self.unlock.machine) {
                recipients.push(RecipientLine {
                    key: m.recipient().to_string(),
                    label: String::new(),
                });
            }
        }
        if self.pinned().is_none() {
            *self
                .pin
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(secret.id);
            // A configured mirror without a pin (added by an older version) is pinned now: trust
            // on first use, said in the log. Otherwise the caller is adding the stick and
            // records the ID itself.
            if let Some(hook) = &self.on_pin {
                tracing::warn!(
                    stick = %self.location,
                    %folder,
                    id = %secret.id,
                    "no stick ID was recorded for this mirror: pinned the stick opened now (trust on first use); \
                     from now on a stick with another key is refused"
                );
                hook(&secret.id);
            }
        }
        Ok(Open {
            folder,
            secret,
            stick,
            cat: loaded.cat,
            generation: loaded.root.generation,
            root_digest: loaded.digest,
            parts: loaded.root.parts,
            other_parts: loaded.other_parts,
            recipients,
            recipients_known: loaded.root.recipients_known,
            passphrase,
            format: loaded.format,
            dirs_made: HashSet::new(),
            stale: false,
            swept: false,
        })
    }

    /// The error for a stick whose secret is not the pinned one (its keys were replaced, or it
    /// was re-created).
    fn not_pinned(
        &self,
        folder: FolderId,
        file: &str,
        found: StickId,
        pin: StickId,
    ) -> MirrorError {
        self.corrupt(
            format::at(folder, file),
            format!(
                "the stick at {} is not the one folder {folder} was shared with: its key (stick ID {found}) \
                 is not the one this machine recorded when it added the mirror (stick ID {pin}); someone may \
                 have replaced its keys and state. Nothing was applied here and nothing was written to it. \
                 If you re-created the stick on purpose, remove and add the mirror again \
                 (`briefcase mirror remove DIR NAME`, then `briefcase mirror add DIR {}`)",
                self.mount.display(),
                self.location
            ),
        )
    }

    /// Finds the stick secret: in a key file this machine's key decrypts, or in `recovery.age`
    /// with the passphrase. With a pin, only a secret with the pinned ID is taken (a key file
    /// anyone made for this machine's public key is refused). Returns it and whether this
    /// machine's own key opened it.
    async fn unlock_secret(
        &self,
        folder: FolderId,
        stick: &StickFile,
    ) -> MirrorResult<(StickSecret, bool)> {
        let pin = self.pinned();
        let mut k = KeyHunt {
            folder,
            pin,
            problems: Vec::new(),
            malformed: None,
            foreign: None,
        };
        if let Some(machine) = &self.unlock.machine {
            for name in KEYS.into_iter().chain([KEYS_LEGACY]) {
                let p = format::at(folder, name);
                let bytes = match self.storage.read_bytes(&p, format::MAX_KEYS + 4096).await {
                    Ok(b) => b,
                    Err(e) if is_not_found(&e) => continue,
                    Err(MirrorError::Corrupt { reason, .. }) => {
                        k.problems.push(format!("{name}: {reason}"));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let ids: [&dyn age::Identity; 1] = [machine.identity()];
                match decrypt_with(&ids, &bytes, format::MAX_KEYS) {
                    Ok(plain) => {
                        if let Some(s) = k.judge(name, &plain) {
                            return Ok((s, true));
                        }
                    }
                    Err(age::DecryptError::NoMatchingKeys) => {}
                    Err(e) => k.problems.push(format!("{name}: {e}")),
                }
            }
        }
        if let Some(pass) = &self.unlock.passphrase {
            let p = format::at(folder, RECOVERY);
            match self.storage.read_bytes(&p, format::MAX_KEYS + 4096).await {
                Ok(bytes) => {
                    // scrypt costs about a second by design: off the async threads.
                    let id = keys::passphrase_identity(pass);
                    let plain = tokio::task::spawn_blocking(move || {
                        decrypt_with(&[&id as &dyn age::Identity], &bytes, format::MAX_KEYS)
                    })
                    .await
                    .map_err(|e| self.corrupt(RECOVERY, e.to_string()))?;
                    match plain {
                        Ok(plain) => {
                            if let Some(s) = k.judge(RECOVERY, &plain) {
                                return Ok((s, false));
                            }
                        }
                        Err(age::DecryptError::DecryptionFailed)
                        | Err(age::DecryptError::NoMatchingKeys) => {
                            k.problems.push("the passphrase is wrong".into())
                        }
                        Err(e) => k.problems.push(format!("{RECOVERY}: {e}")),
                    }
                }
                Err(e) if is_not_found(&e) => k
                    .problems
                    .push("this stick has no recovery passphrase".into()),
                Err(e) => return Err(e),
            }
        }
        let KeyHunt {
            problems,
            malformed,
            foreign,
            ..
        } = k;
        if let (Some((name, found)), Some(pin)) = (foreign, pin) {
            return Err(self.not_pinned(folder, name, found, pin));
        }
        if let Some((name, why)) = malformed {
            return Err(self.corrupt(
                format::at(folder, name),
                format!(
                    "it decrypts with this machine's key but holds no valid stick key ({why}): it was altered \
                     or damaged, and nothing was applied. The stick's other key copies did not open it either; \
                     open it with its recovery passphrase (`--passphrase` or BRIEFCASE_PASSPHRASE) if it has \
                     one, or set up a new stick from a machine that has the folder (`briefcase mirror add`)"
                ),
            ));
        }
        let me = self
            .unlock
            .machine
            .as_ref()
            .map(|m| format!("this machine ({})", m.recipient()))
            .unwrap_or_else(|| "this process (no machine key)".into());
        Err(MirrorError::Locked {
            location: self.location.clone(),
            reason: format!(
                "{me} cannot decrypt it{}. Its STICK file says it accepts: {}. On a machine that can open it, run \
                 `briefcase mirror add DIR {} --recipient age1…` with the key `briefcase id` prints here, \
                 or open it with the recovery passphrase (`--passphrase`, or BRIEFCASE_PASSPHRASE)",
                if problems.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", problems.join("; "))
                },
                stick.describe_recipients(),
                self.location
            ),
        })
    }

    /// Reads both roots and loads the newest whose parts all verify. A root of format 2 or 3
    /// must carry a valid MAC; a format 1 root (no MAC) is taken only while neither slot holds
    /// an authenticated root, i.e. on a stick not migrated yet.
    async fn load_catalog(&self, folder: FolderId, secret: &StickSecret) -> MirrorResult<Loaded> {
        let mut roots: Vec<(ReadRoot, [u8; 32])> = Vec::new();
        let mut problems = Vec::new();
        for name in ROOTS {
            let p = format::at(folder, name);
            let bytes = match self.storage.read_bytes(&p, format::MAX_SMALL_FILE).await {
                Ok(b) => b,
                Err(e) if is_not_found(&e) => continue,
                Err(MirrorError::Corrupt { reason, .. }) => {
                    problems.push(format!("{name}: {reason}"));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let digest = *blake3::hash(&bytes).as_bytes();
            match decrypt_with(
                &[&secret.identity as &dyn age::Identity],
                &bytes,
                format::MAX_ROOT,
            )
            .map_err(explain_decrypt)
            .and_then(|plain| decode_root(secret, &plain))
            {
                Ok(r) if r.rec.folder == folder => roots.push((r, digest)),
                Ok(r) => problems.push(format!("{name} belongs to folder {}", r.rec.folder)),
                Err(e) => problems.push(format!("{name}: {e}")),
            }
        }
        if roots.iter().any(|(r, _)| r.format > 1) {
            let before = roots.len();
            roots.retain(|(r, _)| r.format > 1);
            if roots.len() < before {
                problems.push(
                    "a format 1 root (without MAC) beside an authenticated one was ignored".into(),
                );
            }
        }
        roots.sort_by_key(|(r, _)| std::cmp::Reverse(r.rec.generation));
        let other: Vec<Vec<PartRef>> = roots.iter().map(|(r, _)| r.rec.parts.clone()).collect();
        for (i, (root, digest)) in roots.iter().enumerate() {
            match self
                .load_parts(folder, secret, &root.rec.parts, root.format)
                .await?
            {
                Ok(cat) => {
                    if !problems.is_empty() {
                        tracing::warn!(
                            stick = %self.location,
                            generation = root.rec.generation,
                            "the newest catalog on the stick is damaged ({}); using the previous one. \
                             Nothing is lost: what it lacks is sent again by the machines that have it",
                            problems.join("; ")
                        );
                    }
                    let other_parts = other
                        .iter()
                        .enumerate()
                        .find(|(j, _)| *j != i)
                        .map(|(_, p)| p.clone())
                        .unwrap_or_default();
                    return Ok(Loaded {
                        root: root.rec.clone(),
                        format: root.format,
                        digest: *digest,
                        other_parts,
                        cat,
                    });
                }
                Err(e) => problems.push(format!("generation {}: {e}", root.rec.generation)),
            }
        }
        Err(self.corrupt(
            format::at(folder, "state.{0,1}.age"),
            format!(
                "{}; no complete catalog is left. The chunks are intact, but the list of files is not: \
                 keep the stick, and sync the folder to a new stick (`briefcase mirror add`)",
                if problems.is_empty() {
                    "neither generation exists".to_string()
                } else {
                    problems.join("; ")
                }
            ),
        ))
    }

    async fn load_parts(
        &self,
        folder: FolderId,
        secret: &StickSecret,
        parts: &[PartRef],
        root_format: u32,
    ) -> MirrorResult<Result<Catalog, String>> {
        let mut cat = Catalog::new(folder);
        for part in parts {
            let p = match part_path(folder, part) {
                Ok(p) => p,
                Err(e) => return Ok(Err(e)),
            };
            let bytes = match self.storage.read_bytes(&p, part.len).await {
                Ok(b) => b,
                Err(e) if is_not_found(&e) => return Ok(Err(format!("{} is missing", part.name))),
                Err(MirrorError::Corrupt { reason, .. }) => {
                    return Ok(Err(format!("{}: {reason}", part.name)))
                }
                Err(e) => return Err(e),
            };
            if bytes.len() as u64 != part.len || blake3::hash(&bytes).as_bytes() != &part.hash {
                return Ok(Err(format!("{} does not match its root", part.name)));
            }
            let _ = briefcase_mirror::path::take_last_rejected();
            let delta = match decrypt_with(
                &[&secret.identity as &dyn age::Identity],
                &bytes,
                format::MAX_SEGMENT,
            )
            .map_err(explain_decrypt)
            .and_then(|plain| decode_segment(secret, &plain, root_format))
            {
                Ok(d) => d,
                Err(e) => {
                    if let Some((path, why)) = briefcase_mirror::path::take_last_rejected() {
                        return Err(MirrorError::InvalidPath {
                            location: self.location.clone(),
                            path,
                            source: why,
                        });
                    }
                    return Ok(Err(format!("{}: {e}", part.name)));
                }
            };
            if let Err(e) = cat.apply(delta) {
                return Ok(Err(format!("{}: {e}", part.name)));
            }
        }
        if let Err(e) = cat.finish_load() {
            return Ok(Err(e));
        }
        Ok(Ok(cat))
    }

    /// Ensures `folder-dir/dir` exists on the storage.
    async fn ensure_dir(&self, o: &mut Open, dir: &str) -> MirrorResult<()> {
        if o.dirs_made.contains(dir) {
            return Ok(());
        }
        let meta = FileMeta {
            mode: 0o700,
            mtime_ns: 0,
        };
        let mut acc = String::new();
        for comp in dir.split('/') {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(comp);
            if o.dirs_made.contains(&acc) {
                continue;
            }
            self.storage
                .mkdir(&format::at(o.folder, &acc), meta)
                .await?;
            o.dirs_made.insert(acc.clone());
        }
        Ok(())
    }

    /// Commits the catalog's changes: a segment (or a new base), then the root; then removes
    /// chunks and segments nothing refers to any more.
    ///
    /// `force` commits a new root even when the catalog did not change (its list of recipients
    /// did). A stick read from an older format gets a new base and a root of the current
    /// format, and its `STICK` is rewritten with it. `STICK` is rewritten too whenever it
    /// differs from what the authenticated root says (someone edited it).
    async fn commit(&self, o: &mut Open, force: bool) -> MirrorResult<()> {
        let migrate = o.format < format::FORMAT;
        if !o.cat.is_dirty() && !force && !migrate {
            return Ok(());
        }
        let generation = o.generation + 1;
        let seg = o.cat.segment();
        let mut plain =
            encode_magic(SEGMENT_MAGIC, &seg).map_err(|e| self.corrupt("catalog", e))?;
        let base_len = o.parts.first().map_or(0, |p| p.len);
        let segs_len: u64 = o.parts.iter().skip(1).map(|p| p.len).sum();
        let mut parts = o.parts.clone();
        tracing::debug!(
            nodes = seg.nodes.len() + seg.gone.len(),
            pages = seg.pages.len(),
            meta = seg.meta.len(),
            meta_bytes = seg.meta.iter().map(|(_, v)| v.len()).sum::<usize>(),
            bytes = plain.len(),
            base_len,
            segs_len,
            "stick segment"
        );
        if parts.is_empty()
            || migrate
            || parts.len() > MAX_SEGMENTS
            || segs_len + plain.len() as u64 > base_len / 2 + SEGMENT_SLACK
        {
            parts.clear();
            plain = encode_magic(SEGMENT_MAGIC, &o.cat.base())
                .map_err(|e| self.corrupt("catalog", e))?;
        }
        seal(&o.secret.mac_key, &mut plain);
        let recipient = o.secret.recipient.clone();
        let cipher = tokio::task::spawn_blocking(move || {
            encrypt_to(&[&recipient as &dyn age::Recipient], &plain)
        })
        .await
        .map_err(|e| self.corrupt("catalog", e.to_string()))?
        .map_err(|e| self.corrupt("catalog", e))?;
        let name = format!(
            "{SEGMENTS}/{generation:012}-{:08x}.age",
            rand::random::<u32>()
        );
        self.ensure_dir(o, SEGMENTS).await?;
        self.write_file(o.folder, &name, cipher.clone()).await?;
        parts.push(PartRef {
            name,
            len: cipher.len() as u64,
            hash: *blake3::hash(&cipher).as_bytes(),
        });
        let root = RootRec {
            folder: o.folder,
            generation,
            parts: parts.clone(),
            recipients: o.recipients.clone(),
            recipients_known: o.recipients_known,
            passphrase: o.passphrase,
        };
        let mut plain = encode_magic(ROOT_MAGIC, &root).map_err(|e| self.corrupt("root", e))?;
        seal(&o.secret.mac_key, &mut plain);
        let cipher = encrypt_to(&[&o.secret.recipient as &dyn age::Recipient], &plain)
            .map_err(|e| self.corrupt("root", e))?;
        let digest = *blake3::hash(&cipher).as_bytes();
        self.write_file(o.folder, ROOTS[(generation % 2) as usize], cipher)
            .await?;
        o.other_parts = std::mem::replace(&mut o.parts, parts);
        o.generation = generation;
        o.root_digest = digest;
        o.cat.clear_changes();
        if migrate {
            tracing::info!(stick = %self.location, from = o.format, "migrated the stick to format {}", format::FORMAT);
            o.format = format::FORMAT;
        }
        self.collect(o).await;
        if let Err(e) = self.fix_stick_file(o).await {
            tracing::warn!(stick = %self.location, "cannot rewrite its STICK file ({e}); it is tried again at the next commit");
        }
        Ok(())
    }

    /// `STICK` as the open stick's authenticated state says it should read: format 2, the
    /// passphrase flag, and the recipients (display copies; while the list is not known, after a
    /// migration from format 1, the lines the file had).
    fn stick_file_for(&self, o: &Open) -> StickFile {
        let mut f = StickFile::new(o.folder, &[], o.passphrase);
        f.recipients = if o.recipients_known {
            o.recipients.clone()
        } else {
            o.stick.recipients.clone()
        };
        f
    }

    /// Rewrites `STICK` when it differs from [`StickMirror::stick_file_for`] (after a migration,
    /// a change of recipients, or an edit by someone else).
    async fn fix_stick_file(&self, o: &mut Open) -> MirrorResult<()> {
        let want = self.stick_file_for(o);
        if want == o.stick {
            return Ok(());
        }
        if o.recipients_known && o.stick.format == format::FORMAT {
            let extra = self.unlisted(o);
            if !extra.is_empty() {
                tracing::warn!(
                    stick = %self.location,
                    "its STICK file listed {} as able to open it, which the stick's encrypted list does not hold: \
                     someone edited it (briefcase never encrypts to keys from it); rewritten",
                    extra.join(", ")
                );
            }
        }
        self.write_file(o.folder, STICK_FILE, want.render().into_bytes())
            .await?;
        o.stick = want;
        Ok(())
    }

    /// Keys the open stick's `STICK` lists that its authenticated list does not hold.
    fn unlisted(&self, o: &Open) -> Vec<String> {
        o.stick
            .recipients
            .iter()
            .filter(|r| !o.recipients.iter().any(|k| k.key == r.key))
            .map(|r| r.key.clone())
            .collect()
    }

    /// Removes chunks nothing refers to and segments neither root lists. Best effort: what is
    /// left is removed by a later commit or [`Mirror::sweep`].
    async fn collect(&self, o: &mut Open) {
        let orphans = o.cat.take_orphans();
        if !orphans.is_empty() {
            let paths: Vec<RelPath> = orphans
                .iter()
                .map(|h| format::at(o.folder, &format::chunk_name(&o.secret.name_key, h)))
                .collect();
            let n = paths.len();
            let failed = self
                .storage
                .remove_batch(paths)
                .await
                .into_iter()
                .filter(Result::is_err)
                .count();
            tracing::debug!(
                removed = n - failed,
                failed,
                "collected unreferenced chunks"
            );
        }
        let keep: HashSet<&str> = o
            .parts
            .iter()
            .chain(&o.other_parts)
            .map(|p| p.name.as_str())
            .collect();
        let seg_dir = format::at(o.folder, SEGMENTS);
        if let Ok(list) = self.storage.list_under(&seg_dir).await {
            let prefix = format!("{}/", format::folder_dir(o.folder));
            let stale: Vec<RelPath> = list
                .into_iter()
                .filter(|s| {
                    let name = s.path.display();
                    let local = name.strip_prefix(&prefix).unwrap_or(&name);
                    segment_generation(local).is_some_and(|g| g < o.generation)
                        && !keep.contains(local)
                })
                .map(|s| s.path)
                .collect();
            if !stale.is_empty() {
                let _ = self.storage.remove_batch(stale).await;
            }
        }
    }

    /// Writes one file of the stick's own (durably, atomically).
    async fn write_file(&self, folder: FolderId, name: &str, bytes: Vec<u8>) -> MirrorResult<()> {
        let item = PutItem {
            path: format::at(folder, name),
            source: PutSource::Bytes(bytes),
            meta: FileMeta {
                mode: 0o600,
                mtime_ns: now_ns(),
            },
            expect: None,
            chunks: None,
        };
        match self.storage.put_batch(vec![item]).await.pop() {
            Some(r) => r.map(|_| ()),
            None => Err(self.corrupt(name, "the storage returned no result")),
        }
    }

    /// Creates the stick: keys, an empty catalog, then `STICK` (so a half-made stick is never
    /// taken for a stick).
    async fn create_stick(&self, folder: FolderId, rc: &Recipients) -> MirrorResult<Open> {
        if rc.machines.is_empty() && rc.passphrase.is_none() {
            return Err(MirrorError::Refused {
                location: self.location.clone(),
                path: format::folder_dir(folder),
                reason: "no recipient to encrypt to; give this machine's key (`briefcase id`) and/or a passphrase".into(),
            });
        }
        let dir_meta = FileMeta {
            mode: 0o700,
            mtime_ns: 0,
        };
        self.storage.init(folder).await?;
        self.storage.mkdir(&rel(TOP), dir_meta).await?;
        self.storage
            .mkdir(&rel(&format::folder_dir(folder)), dir_meta)
            .await?;
        let secret = StickSecret::generate(folder);
        let encoded = {
            use age::secrecy::ExposeSecret;
            secret.encode().expose_secret().as_bytes().to_vec()
        };
        if !rc.machines.is_empty() {
            let wrapped = wrap_for(&rc.machines, &encoded).map_err(|e| self.corrupt(KEYS[0], e))?;
            for name in KEYS {
                self.write_file(folder, name, wrapped.clone()).await?;
            }
        }
        if let Some(pass) = &rc.passphrase {
            let r = keys::passphrase_recipient(pass);
            let enc = encoded.clone();
            let wrapped =
                tokio::task::spawn_blocking(move || encrypt_to(&[&r as &dyn age::Recipient], &enc))
                    .await
                    .map_err(|e| self.corrupt(RECOVERY, e.to_string()))?
                    .map_err(|e| self.corrupt(RECOVERY, e))?;
            self.write_file(folder, RECOVERY, wrapped).await?;
        }
        let stick = StickFile::new(folder, &rc.machines, rc.passphrase.is_some());
        let id = secret.id;
        let mut o = Open {
            folder,
            secret: Arc::new(secret),
            stick: stick.clone(),
            cat: Catalog::new(folder),
            generation: 0,
            root_digest: [0; 32],
            parts: Vec::new(),
            other_parts: Vec::new(),
            recipients: stick.recipients.clone(),
            recipients_known: true,
            passphrase: rc.passphrase.is_some(),
            format: format::FORMAT,
            dirs_made: HashSet::new(),
            stale: false,
            swept: true,
        };
        self.ensure_dir(&mut o, SEGMENTS).await?;
        self.ensure_dir(&mut o, CHUNKS).await?;
        // An empty catalog, committed (the marker below must never precede a root).
        self.commit(&mut o, true).await?;
        self.write_file(folder, STICK_FILE, stick.render().into_bytes())
            .await?;
        *self
            .pin
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(id);
        Ok(o)
    }

    /// Adds the machines of `add` (and its passphrase, if any) to those that may open the
    /// stick: the stick secret is re-encrypted to the stick's own list (kept in its
    /// authenticated root, never taken from the plain `STICK`) plus `add`, a new root records
    /// the list, and `STICK` is rewritten; chunks and catalog are untouched. Returns the
    /// machines that were not on the list before.
    ///
    /// On a stick migrated from format 1, whose list was in plain only, the key files as they
    /// were are kept as `keys.legacy.age` (the machines they were encrypted to keep their
    /// access) and the list starts with this machine and `add`.
    ///
    /// # Errors
    /// Offline, locked (this machine cannot open the stick) and I/O errors;
    /// [`MirrorError::Corrupt`] naming `STICK` when it lists a key the authenticated list does
    /// not hold (someone edited it): nothing is changed then.
    pub async fn add_recipients(&self, add: &Recipients) -> MirrorResult<Vec<Recipient>> {
        let mut g = self.lock().await?;
        let o = self.opened(&mut g)?;
        if o.recipients_known {
            let extra = self.unlisted(o);
            if !extra.is_empty() {
                return Err(self.corrupt(
                    format::at(o.folder, STICK_FILE),
                    format!(
                        "it lists {} as able to open the stick of folder {}, but the stick's encrypted list of \
                         machines does not: someone edited it. briefcase never encrypts to keys taken from it, \
                         and nothing was changed (no key was added, nothing was applied). Check who had the \
                         stick; `briefcase sync` on a machine that shares it rewrites STICK from the encrypted list",
                        extra.join(", "),
                        o.folder
                    ),
                ));
            }
        }
        let mut machines: Vec<Recipient> = o
            .recipients
            .iter()
            .filter_map(|r| Recipient::parse(&r.key, &r.label).ok())
            .collect();
        let mut added = Vec::new();
        for r in &add.machines {
            match machines.iter_mut().find(|m| m.key == r.key) {
                Some(m) if m.label.is_empty() => m.label = r.label.clone(),
                Some(_) => {}
                None => {
                    machines.push(r.clone());
                    added.push(r.clone());
                }
            }
        }
        if added.is_empty() && add.passphrase.is_none() && o.recipients_known {
            return Ok(added);
        }
        if machines.is_empty() {
            return Err(MirrorError::Refused {
                location: self.location.clone(),
                path: format::at(o.folder, KEYS[0]).to_string(),
                reason: "a stick needs at least one machine recipient".into(),
            });
        }
        if !o.recipients_known {
            self.keep_legacy_keys(o).await?;
        }
        let encoded = {
            use age::secrecy::ExposeSecret;
            o.secret.encode().expose_secret().as_bytes().to_vec()
        };
        let wrapped = wrap_for(&machines, &encoded).map_err(|e| self.corrupt(KEYS[0], e))?;
        for name in KEYS {
            self.write_file(o.folder, name, wrapped.clone()).await?;
        }
        if let Some(pass) = &add.passphrase {
            let r = keys::passphrase_recipient(pass);
            let w = tokio::task::spawn_blocking(move || {
                encrypt_to(&[&r as &dyn age::Recipient], &encoded)
            })
            .await
            .map_err(|e| self.corrupt(RECOVERY, e.to_string()))?
            .map_err(|e| self.corrupt(RECOVERY, e))?;
            self.write_file(o.folder, RECOVERY, w).await?;
            o.passphrase = true;
        }
        o.recipients = machines
            .iter()
            .map(|r| RecipientLine {
                key: r.key.to_string(),
                label: format::display_text(&r.label),
            })
            .collect();
        o.recipients_known = true;
        let r = self.commit(o, true).await;
        if r.is_err() {
            *g = None;
        }
        r.map_err(|e| self.no_space_hint(e))?;
        Ok(added)
    }

    /// Copies the key file this machine opened (format 1: encrypted to machines this one does
    /// not know) to `keys.legacy.age`, unless it is there already.
    async fn keep_legacy_keys(&self, o: &Open) -> MirrorResult<()> {
        let legacy = format::at(o.folder, KEYS_LEGACY);
        if self.storage.stat(&legacy).await?.is_some() {
            return Ok(());
        }
        for name in KEYS {
            let p = format::at(o.folder, name);
            match self.storage.read_bytes(&p, format::MAX_KEYS + 4096).await {
                Ok(bytes) => {
                    tracing::info!(
                        stick = %self.location,
                        "this stick was set up by an older briefcase, whose list of machines was in plain text; \
                         the machines its keys were encrypted to keep their access through {KEYS_LEGACY}"
                    );
                    return self.write_file(o.folder, KEYS_LEGACY, bytes).await;
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The machines that may open the stick, as its authenticated root lists them (on a stick
    /// migrated from format 1 and not re-keyed since: this machine only, the others being
    /// unknown).
    ///
    /// # Errors
    /// Offline, locked, corrupt and I/O errors.
    pub async fn recipients(&self) -> MirrorResult<Vec<Recipient>> {
        let mut g = self.lock().await?;
        let o = self.opened(&mut g)?;
        Ok(o.recipients
            .iter()
            .filter_map(|r| Recipient::parse(&r.key, &r.label).ok())
            .collect())
    }

    /// The plain `STICK` file of the open stick (recipients, folder).
    ///
    /// # Errors
    /// Offline, locked and I/O errors.
    pub async fn stick_file(&self) -> MirrorResult<StickFile> {
        let g = self.lock().await?;
        match g.as_ref() {
            Some(o) => Ok(o.stick.clone()),
            None => Err(self.offline(self.folder().await?)),
        }
    }

    /// Chunks `items`, writes the chunks the stick lacks, and records the files in the catalog
    /// (committed by the next `commit_state`). Chunk writes are pipelined: while one batch is
    /// encrypted and written, the next files are read and cut. A file is recorded once every
    /// batch holding its chunks is durable; after a failed batch (a full stick, a yank) the
    /// remaining files fail with its error.
    async fn put_items(&self, o: &mut Open, items: Vec<PutItem>) -> Vec<MirrorResult<RemoteStat>> {
        let mut out: Vec<Option<MirrorResult<RemoteStat>>> =
            (0..items.len()).map(|_| None).collect();
        let mut ready: Vec<Queued> = Vec::new();
        let mut pending = Pending::default();
        for (i, it) in items.into_iter().enumerate() {
            if pending.failed.is_some() {
                out[i] = pending.failed.as_ref().map(|e| Err(e.duplicate()));
                continue;
            }
            if let Err(e) = self.check_new_file(o, &it.path) {
                out[i] = Some(Err(e));
                continue;
            }
            match self.chunk_one(o, &it, &mut pending).await {
                Ok((size, chunks)) => {
                    ready.push(Queued {
                        needs: pending.started + u64::from(!pending.chunks.is_empty()),
                        index: i,
                        path: it.path,
                        meta: it.meta,
                        size,
                        chunks,
                    });
                }
                Err(e) => out[i] = Some(Err(e)),
            }
            if pending.is_full() {
                self.start_flush(o, &mut pending).await;
            }
            self.record(o, &mut ready, pending.done, &mut out);
        }
        self.start_flush(o, &mut pending).await;
        self.finish_flush(o, &mut pending).await;
        self.record(o, &mut ready, pending.done, &mut out);
        if let Some(e) = &pending.failed {
            for q in ready.drain(..) {
                out[q.index] = Some(Err(e.duplicate()));
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(self.corrupt("batch", "item lost"))))
            .collect()
    }

    /// Records the files of `ready` whose chunks are durable (their batches ≤ `done`).
    fn record(
        &self,
        o: &mut Open,
        ready: &mut Vec<Queued>,
        done: u64,
        out: &mut [Option<MirrorResult<RemoteStat>>],
    ) {
        let (now, later): (Vec<_>, Vec<_>) = ready.drain(..).partition(|q| q.needs <= done);
        *ready = later;
        for Queued {
            index: i,
            path,
            meta,
            size,
            chunks,
            ..
        } in now
        {
            // The pages this path's list shares with the new one are kept: an edit adds a page
            // or two to the catalog, whatever the file's size.
            let content = o.cat.content_replacing(&path, chunks);
            let node = Node {
                kind: EntryKind::File,
                size,
                mode: meta.mode & 0o7777,
                mtime_ns: meta.mtime_ns,
                ino: o.cat.next_ino(),
                target: None,
                content,
            };
            let st = stat_of(&path, &node);
            o.cat.set_node(path, node);
            out[i] = Some(Ok(st));
        }
    }

    /// Cuts one source into chunks; queues the ones the stick lacks into `pending` (flushing
    /// when full). Returns the size and the chunk list.
    async fn chunk_one(
        &self,
        o: &mut Open,
        it: &PutItem,
        pending: &mut Pending,
    ) -> MirrorResult<(u64, Vec<ChunkRef>)> {
        let (tx, mut rx) =
            tokio::sync::mpsc::channel::<std::io::Result<Vec<(ChunkRef, Vec<u8>)>>>(2);
        let params = self.params;
        let source = it.source.clone();
        let given = given_chunks(it, params);
        let reader = tokio::task::spawn_blocking(move || match given {
            Some(list) => read_given(source, list, &tx),
            None => cut(source, params, &tx),
        });
        let mut chunks = Vec::new();
        let mut size = 0u64;
        let mut fail = None;
        // What was read, hashed as a whole for `PutItem::expect` (files only).
        let mut whole = match (&it.source, it.expect) {
            (PutSource::File(_), Some(_)) => Some(blake3::Hasher::new()),
            _ => None,
        };
        while let Some(slice) = rx.recv().await {
            let slice = match slice {
                Ok(s) => s,
                Err(e) => {
                    fail = Some(e);
                    break;
                }
            };
            for (r, data) in slice {
                size += u64::from(r.len);
                if let Some(h) = whole.as_mut() {
                    h.update(&data);
                }
                if !o.cat.has_chunk(&r.hash.0) && !pending.has(&r.hash.0) {
                    pending.push(r.hash.0, data);
                }
                chunks.push(r);
            }
            if pending.is_full() {
                self.start_flush(o, pending).await;
            }
            if pending.failed.is_some() {
                break;
            }
        }
        drop(rx);
        let _ = reader.await;
        if let Some(e) = &pending.failed {
            return Err(e.duplicate());
        }
        if fail.as_ref().is_some_and(is_changed) {
            // The file no longer holds the chunks its list names: it changed since it was
            // cut. The chunks queued meanwhile are referenced by nothing; the sweep takes them.
            return Err(MirrorError::SourceChanged {
                location: self.location.clone(),
                path: it.path.to_string(),
            });
        }
        if let Some(e) = fail {
            let path = match &it.source {
                PutSource::File(p) => p.display().to_string(),
                PutSource::Bytes(_) | PutSource::Blob(_) => it.path.to_string(),
            };
            return Err(MirrorError::Io {
                location: self.location.clone(),
                op: "read local source",
                path,
                source: e,
            });
        }
        if let (Some(h), Some(want)) = (whole, it.expect) {
            if ContentHash(*h.finalize().as_bytes()) != want {
                // The chunks queued meanwhile are referenced by nothing; the sweep takes them.
                return Err(MirrorError::SourceChanged {
                    location: self.location.clone(),
                    path: it.path.to_string(),
                });
            }
        }
        Ok((size, chunks))
    }

    /// Waits for the batch in flight, if any, and notes its chunks as present (or the failure).
    async fn finish_flush(&self, o: &mut Open, pending: &mut Pending) {
        let Some(task) = pending.in_flight.take() else {
            return;
        };
        let hashes = std::mem::take(&mut pending.in_flight_hashes);
        let results = match task.await {
            Ok(r) => r,
            Err(e) => Err(self.corrupt("chunks", format!("the writer task failed: {e}"))),
        };
        let results = match results {
            Ok(r) => r,
            Err(e) => {
                pending.failed.get_or_insert(e);
                return;
            }
        };
        for (h, r) in results {
            match r {
                Ok(_) => o.cat.note_written(h),
                Err(e) => {
                    if pending.failed.is_none() {
                        pending.failed = Some(self.no_space_hint(e));
                    }
                }
            }
        }
        drop(hashes);
        if pending.failed.is_none() {
            pending.done = pending.started;
        }
    }

    /// Sends the queued chunks to be encrypted (both cores) and written durably in the
    /// background, after waiting for the batch before (one batch in flight at a time).
    async fn start_flush(&self, o: &mut Open, pending: &mut Pending) {
        self.finish_flush(o, pending).await;
        if pending.chunks.is_empty() || pending.failed.is_some() {
            return;
        }
        let chunks = std::mem::take(&mut pending.chunks);
        pending.bytes = 0;
        pending.in_flight_hashes = std::mem::take(&mut pending.hashes);
        let mut dirs: Vec<String> = chunks
            .iter()
            .map(|(h, _)| {
                let n = format::chunk_name(&o.secret.name_key, h);
                n.get(..CHUNKS.len() + 3).unwrap_or(&n).to_string()
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        for d in dirs {
            if let Err(e) = self.ensure_dir(o, &d).await {
                pending.failed = Some(self.no_space_hint(e));
                return;
            }
        }
        let secret = o.secret.clone();
        let folder = o.folder;
        let storage = self.storage.clone();
        let location = self.location.clone();
        pending.started += 1;
        pending.in_flight = Some(tokio::spawn(async move {
            let corrupt = |reason: String| MirrorError::Corrupt {
                location: location.clone(),
                what: "chunks".into(),
                reason,
            };
            let encrypted = tokio::task::spawn_blocking(move || {
                use rayon::prelude::*;
                chunks
                    .into_par_iter()
                    .map(|(h, data)| {
                        let cipher =
                            encrypt_to(&[&secret.recipient as &dyn age::Recipient], &data)?;
                        Ok((
                            h,
                            format::at(folder, &format::chunk_name(&secret.name_key, &h)),
                            cipher,
                        ))
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
            .await
            .map_err(|e| corrupt(e.to_string()))?
            .map_err(corrupt)?;
            let meta = FileMeta {
                mode: 0o600,
                mtime_ns: now_ns(),
            };
            let hashes: Vec<[u8; 32]> = encrypted.iter().map(|(h, _, _)| *h).collect();
            let items: Vec<PutItem> = encrypted
                .into_iter()
                .map(|(_, path, cipher)| PutItem {
                    path,
                    source: PutSource::Blob(cipher),
                    meta,
                    expect: None,
                    chunks: None,
                })
                .collect();
            let results = storage.put_batch(items).await;
            Ok(hashes.into_iter().zip(results).collect())
        }));
    }

    /// Says "the stick is full" in words when the storage ran out of space: `ENOSPC`, or another
    /// write error while the medium has (almost) no free space left (fusefat answers `EPERM`).
    fn no_space_hint(&self, e: MirrorError) -> MirrorError {
        let full = match &e {
            MirrorError::Io { source, .. } => {
                source.raw_os_error() == Some(28)
                    || rustix::fs::statvfs(&self.mount)
                        .is_ok_and(|v| v.f_bavail.saturating_mul(v.f_frsize) < MAX_CHUNK_FILE)
            }
            _ => false,
        };
        match e {
            MirrorError::Io { path, .. } if full => MirrorError::Refused {
                location: self.location.clone(),
                path,
                reason: "the stick is full; nothing was lost (its last complete state is intact): \
                         free space on it or use a bigger one, then sync again"
                    .into(),
            },
            other => other,
        }
    }

    fn check_new_file(&self, o: &Open, path: &RelPath) -> MirrorResult<()> {
        self.check_parent(o, path)?;
        match o.cat.node(path) {
            Some(n) if n.kind == EntryKind::Dir => Err(MirrorError::Io {
                location: self.location.clone(),
                op: "write",
                path: path.to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::IsADirectory,
                    "a directory is in the way",
                ),
            }),
            _ => Ok(()),
        }
    }

    /// The parent of `path` must be a directory in the tree (symlinked parents are unsafe).
    fn check_parent(&self, o: &Open, path: &RelPath) -> MirrorResult<()> {
        if path.is_reserved() {
            return Err(MirrorError::Unsafe {
                location: self.location.clone(),
                path: path.to_string(),
                reason: "reserved name (state or temp file)".into(),
            });
        }
        self.check_ancestors(o, path)?;
        if let Some(parent) = path.parent() {
            match o.cat.node(&parent) {
                Some(n) if n.kind == EntryKind::Dir => {}
                _ => {
                    return Err(MirrorError::Io {
                        location: self.location.clone(),
                        op: "write",
                        path: path.to_string(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            format!("parent directory {parent} does not exist"),
                        ),
                    })
                }
            }
        }
        Ok(())
    }

    fn check_ancestors(&self, o: &Open, path: &RelPath) -> MirrorResult<()> {
        for a in path.ancestors() {
            if let Some(n) = o.cat.node(&a) {
                if n.kind == EntryKind::Symlink {
                    return Err(MirrorError::Unsafe {
                        location: self.location.clone(),
                        path: path.to_string(),
                        reason: format!("parent {a} is a symlink"),
                    });
                }
            }
        }
        Ok(())
    }
}

/// A catalog as loaded from the newest valid root.
struct Loaded {
    root: RootRec,
    /// The root's format.
    format: u32,
    /// blake3 of the root file.
    digest: [u8; 32],
    /// The parts the other slot's root lists.
    other_parts: Vec<PartRef>,
    cat: Catalog,
}

/// What [`StickMirror::unlock_secret`] found so far in the key files it could decrypt.
struct KeyHunt {
    folder: FolderId,
    pin: Option<StickId>,
    problems: Vec<String>,
    /// The first key file that decrypted but holds no valid record, and why.
    malformed: Option<(&'static str, String)>,
    /// The first valid secret whose ID is not the pinned one.
    foreign: Option<(&'static str, StickId)>,
}

impl KeyHunt {
    /// The secret in the decrypted key file `name`, if it is valid, for this folder, and the
    /// pinned one (when there is a pin); else notes why not.
    fn judge(&mut self, name: &'static str, plain: &[u8]) -> Option<StickSecret> {
        match StickSecret::decode(plain) {
            Ok(s) if s.folder != self.folder => {
                self.problems
                    .push(format!("{name} is for folder {}", s.folder));
                None
            }
            Ok(s) => match self.pin {
                Some(p) if p != s.id => {
                    self.foreign.get_or_insert((name, s.id));
                    None
                }
                _ => Some(s),
            },
            Err(e) => {
                self.problems.push(format!("{name}: {e}"));
                self.malformed.get_or_insert((name, e));
                None
            }
        }
    }
}

/// What reading a chunk needs, cheap to clone into a task.
#[derive(Clone)]
struct ChunkReader {
    storage: Arc<dyn Mirror>,
    secret: Arc<StickSecret>,
    folder: FolderId,
    location: String,
}

impl ChunkReader {
    fn corrupt(&self, path: &RelPath, reason: String) -> MirrorError {
        MirrorError::Corrupt {
            location: self.location.clone(),
            what: path.to_string(),
            reason,
        }
    }

    /// Reads, decrypts and verifies one chunk of the file at `path`.
    async fn read(self, path: RelPath, want: ChunkRef) -> MirrorResult<Vec<u8>> {
        let name = format::chunk_name(&self.secret.name_key, &want.hash.0);
        let p = format::at(self.folder, &name);
        let bytes = match self.storage.read_bytes(&p, MAX_CHUNK_FILE).await {
            Ok(b) => b,
            Err(e) if is_not_found(&e) => {
                return Err(self.corrupt(
                    &path,
                    format!("its chunk {name} is missing from the stick; sync it from a machine that has the file"),
                ))
            }
            Err(e) => return Err(e),
        };
        let secret = self.secret.clone();
        let plain = tokio::task::spawn_blocking(move || {
            decrypt_with(&[&secret.identity as &dyn age::Identity], &bytes, MAX_CHUNK_FILE)
        })
        .await
        .map_err(|e| self.corrupt(&path, e.to_string()))?
        .map_err(|e| {
            self.corrupt(
                &path,
                format!("chunk {name} cannot be decrypted ({e}): it was altered or damaged; nothing was applied"),
            )
        })?;
        if plain.len() != want.len as usize || ContentHash::of(&plain) != want.hash {
            return Err(self.corrupt(
                &path,
                format!("chunk {name} does not match its hash: it was swapped or altered; nothing was applied"),
            ));
        }
        Ok(plain)
    }
}

/// Chunks read ahead of the one being written out, per file.
const READ_AHEAD: usize = 8;

/// A file cut into chunks, waiting for its chunks to be durable before it is recorded.
struct Queued {
    /// Batches that must be durable first.
    needs: u64,
    /// Its index in the caller's batch.
    index: usize,
    path: RelPath,
    meta: FileMeta,
    size: u64,
    chunks: Vec<ChunkRef>,
}

/// Results of one written batch of chunks: each chunk's hash and its write's outcome.
type Written = MirrorResult<Vec<([u8; 32], MirrorResult<RemoteStat>)>>;

/// Chunks waiting to be encrypted and written, and the batch being written.
#[derive(Default)]
struct Pending {
    chunks: Vec<([u8; 32], Vec<u8>)>,
    hashes: HashSet<[u8; 32]>,
    bytes: usize,
    in_flight: Option<tokio::task::JoinHandle<Written>>,
    in_flight_hashes: HashSet<[u8; 32]>,
    /// Batches started, and batches durable (all of them up to this count).
    started: u64,
    done: u64,
    /// The first failure: nothing more is written.
    failed: Option<MirrorError>,
}

impl Pending {
    fn has(&self, h: &[u8; 32]) -> bool {
        self.hashes.contains(h) || self.in_flight_hashes.contains(h)
    }
    fn push(&mut self, h: [u8; 32], data: Vec<u8>) {
        self.bytes += data.len();
        self.hashes.insert(h);
        self.chunks.push((h, data));
    }
    fn is_full(&self) -> bool {
        self.chunks.len() >= BATCH_CHUNKS || self.bytes >= BATCH_BYTES
    }
}

/// A slice of a file's chunks: each one's reference and bytes.
type Slice = std::io::Result<Vec<(ChunkRef, Vec<u8>)>>;

/// The chunk list of `it` if the stick can take it instead of cutting the file itself: a local
/// file's list cut with the stick's own sizes, every chunk of a length FastCDC makes with them
/// (1 to `max` bytes). Otherwise (another caller's sizes, a stick with sizes of its own) the
/// stick cuts the file as always.
fn given_chunks(it: &PutItem, params: ChunkParams) -> Option<Vec<ChunkRef>> {
    let c = it.chunks.as_ref()?;
    let usable = matches!(it.source, PutSource::File(_))
        && c.params == params
        && c.chunks.iter().all(|r| r.len > 0 && r.len <= params.max);
    usable.then(|| c.chunks.clone())
}

/// The error [`read_given`] ends with when the file does not hold the chunks of its list.
#[derive(Debug)]
struct Changed;

impl std::fmt::Display for Changed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the file no longer holds the chunks of its list")
    }
}

impl std::error::Error for Changed {}

/// Whether `e` is [`read_given`]'s "the file changed".
fn is_changed(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<Changed>())
}

/// Reads `source` along the chunk list `list` (the caller's FastCDC cut, not computed again),
/// hashing each chunk as it is read, and sends them as [`cut`] does. A chunk that does not hash
/// to its entry, a file that ends early or goes on after the last chunk: the error [`Changed`]
/// (nothing sent after it; what was sent is referenced by nothing).
fn read_given(source: PutSource, list: Vec<ChunkRef>, tx: &tokio::sync::mpsc::Sender<Slice>) {
    let changed = || std::io::Error::new(std::io::ErrorKind::InvalidData, Changed);
    let PutSource::File(path) = source else {
        let _ = tx.blocking_send(Err(changed()));
        return;
    };
    let mut reader = match std::fs::File::open(&path) {
        Ok(f) => std::io::BufReader::with_capacity(1 << 20, f),
        Err(e) => {
            let _ = tx.blocking_send(Err(e));
            return;
        }
    };
    let mut slice = Vec::new();
    let mut bytes = 0usize;
    for want in list {
        let mut data = vec![0u8; want.len as usize];
        match reader.read_exact(&mut data) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                let _ = tx.blocking_send(Err(changed()));
                return;
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
        if ContentHash::of(&data) != want.hash {
            let _ = tx.blocking_send(Err(changed()));
            return;
        }
        bytes += data.len();
        slice.push((want, data));
        if bytes >= 8 << 20 {
            if tx.blocking_send(Ok(std::mem::take(&mut slice))).is_err() {
                return;
            }
            bytes = 0;
        }
    }
    match reader.read(&mut [0u8; 1]) {
        Ok(0) => {}
        Ok(_) => {
            let _ = tx.blocking_send(Err(changed()));
            return;
        }
        Err(e) => {
            let _ = tx.blocking_send(Err(e));
            return;
        }
    }
    if !slice.is_empty() {
        let _ = tx.blocking_send(Ok(slice));
    }
}

/// Cuts `source` into FastCDC chunks, sending them in slices of ~8 MiB.
fn cut(source: PutSource, p: ChunkParams, tx: &tokio::sync::mpsc::Sender<Slice>) {
    let reader: Box<dyn Read> = match source {
        PutSource::File(path) => match std::fs::File::open(&path) {
            Ok(f) => Box::new(std::io::BufReader::with_capacity(1 << 20, f)),
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        },
        PutSource::Bytes(b) | PutSource::Blob(b) => Box::new(std::io::Cursor::new(b)),
    };
    let mut slice = Vec::new();
    let mut bytes = 0usize;
    for c in fastcdc::v2020::StreamCDC::new(reader, p.min as usize, p.avg as usize, p.max as usize)
    {
        match c {
            Ok(c) => {
                let r = ChunkRef {
                    hash: ContentHash::of(&c.data),
                    len: c.length as u32,
                };
                bytes += c.data.len();
                slice.push((r, c.data));
                if bytes >= 8 << 20 {
                    if tx.blocking_send(Ok(std::mem::take(&mut slice))).is_err() {
                        return;
                    }
                    bytes = 0;
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                return;
            }
        }
    }
    if !slice.is_empty() {
        let _ = tx.blocking_send(Ok(slice));
    }
}

/// Encrypts `plain` to every machine in `machines`.
fn wrap_for(machines: &[Recipient], plain: &[u8]) -> Result<Vec<u8>, String> {
    let recips: Vec<&dyn age::Recipient> = machines
        .iter()
        .map(|r| &r.key as &dyn age::Recipient)
        .collect();
    encrypt_to(&recips, plain)
}

/// Why a file of the stick's own cannot be decrypted, in words.
fn explain_decrypt(e: age::DecryptError) -> String {
    match e {
        age::DecryptError::NoMatchingKeys => {
            "not encrypted with this stick's key (copied from another stick or folder?)".into()
        }
        age::DecryptError::DecryptionFailed | age::DecryptError::InvalidMac => {
            "altered or damaged (authentication failed)".into()
        }
        other => format!("unreadable ({other})"),
    }
}

/// The path of the catalog part `part` a root lists (read from the medium: checked, never
/// panics): a name under `segments/` of `[A-Za-z0-9/-._]`, no `..`, at most a segment's size.
fn part_path(folder: FolderId, part: &PartRef) -> Result<RelPath, String> {
    if !part.name.starts_with("segments/")
        || part.name.contains("..")
        || !part
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._".contains(&b))
    {
        return Err(format!(
            "part {:?} is not a segment",
            format::display_text(&part.name)
        ));
    }
    if part.len > format::MAX_SEGMENT_FILE {
        return Err(format!(
            "{} is listed as {} bytes, more than a segment",
            part.name, part.len
        ));
    }
    format::try_at(folder, &part.name)
        .ok_or_else(|| format!("part {:?} is not a valid path", part.name))
}

/// The generation of a segment file named `local` (`segments/GEN-RAND.age`, relative to the
/// folder directory, as listed on the medium), if it is one.
fn segment_generation(local: &str) -> Option<u64> {
    local
        .strip_prefix("segments/")
        .and_then(|n| n.split('-').next())
        .and_then(|g| g.parse::<u64>().ok())
}

/// Appends the keyed blake3 MAC of `bytes` (magic and body) under `key`.
fn seal(key: &[u8; 32], bytes: &mut Vec<u8>) {
    let mac = blake3::keyed_hash(key, bytes);
    bytes.extend_from_slice(mac.as_bytes());
}

/// The body of a sealed record with magic `magic`, its MAC checked (in constant time).
fn unseal<'a>(key: &[u8; 32], magic: &[u8; 8], bytes: &'a [u8]) -> Result<&'a [u8], String> {
    let Some(at) = bytes.len().checked_sub(MAC_LEN) else {
        return Err("too short".into());
    };
    let (signed, mac) = bytes.split_at_checked(at).ok_or("too short")?;
    let mac: [u8; MAC_LEN] = mac.try_into().map_err(|_| "too short")?;
    if blake3::keyed_hash(key, signed) != blake3::Hash::from(mac) {
        return Err(
            "its MAC does not match: it was not written by a holder of this stick's key (forged or altered)"
                .into(),
        );
    }
    signed
        .strip_prefix(magic.as_slice())
        .ok_or_else(|| "not a briefcase stick file (bad magic)".into())
}

/// Decodes a decrypted root: format 3 or 2 (MAC checked; the same record) or format 1 (no
/// MAC).
fn decode_root(secret: &StickSecret, plain: &[u8]) -> Result<ReadRoot, String> {
    for (magic, format) in [(ROOT_MAGIC, 3), (ROOT_MAGIC_V2, 2)] {
        if plain.starts_with(magic) {
            let body = unseal(&secret.mac_key, magic, plain)?;
            let rec: RootRec =
                postcard::from_bytes(body).map_err(|e| format!("undecodable ({e})"))?;
            return Ok(ReadRoot { rec, format });
        }
    }
    let v1: RootRecV1 = decode_magic(ROOT_MAGIC_V1, plain)?;
    Ok(ReadRoot {
        rec: RootRec {
            folder: v1.folder,
            generation: v1.generation,
            parts: v1.parts,
            recipients: Vec::new(),
            recipients_known: false,
            passphrase: false,
        },
        format: 1,
    })
}

/// Decodes a decrypted segment of the format of the root that lists it: 3 or 2 (MAC checked;
/// splices only in format 3), or 1 (no MAC).
fn decode_segment(secret: &StickSecret, plain: &[u8], root_format: u32) -> Result<Delta, String> {
    let delta: Delta = match root_format {
        3 | 2 => {
            let magic = if root_format == 3 {
                SEGMENT_MAGIC
            } else {
                SEGMENT_MAGIC_V2
            };
            if !plain.starts_with(magic) {
                return Err(format!(
                    "not a format {root_format} segment (bad magic) under a format {root_format} root"
                ));
            }
            let body = unseal(&secret.mac_key, magic, plain)?;
            postcard::from_bytes(body).map_err(|e| format!("undecodable ({e})"))?
        }
        1 => decode_magic(SEGMENT_MAGIC_V1, plain)?,
        other => return Err(format!("format {other} is not one this briefcase reads")),
    };
    if root_format < 3 && delta.has_splices() {
        return Err(format!(
            "a format {root_format} segment holds splices, which format 3 introduced"
        ));
    }
    Ok(delta)
}

fn encode_magic<T: Serialize>(magic: &[u8; 8], v: &T) -> Result<Vec<u8>, String> {
    let mut out = magic.to_vec();
    let body = postcard::to_stdvec(v).map_err(|e| e.to_string())?;
    out.extend_from_slice(&body);
    Ok(out)
}

fn decode_magic<T: serde::de::DeserializeOwned>(
    magic: &[u8; 8],
    bytes: &[u8],
) -> Result<T, String> {
    match bytes.strip_prefix(magic.as_slice()) {
        Some(body) => postcard::from_bytes(body).map_err(|e| format!("undecodable ({e})")),
        None => Err("not a briefcase stick file (bad magic)".into()),
    }
}

fn rel(s: &str) -> RelPath {
    format::fixed(s)
}

fn is_not_found(e: &MirrorError) -> bool {
    match e {
        MirrorError::NotFound { .. } => true,
        MirrorError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn stat_of(path: &RelPath, n: &Node) -> RemoteStat {
    RemoteStat {
        path: path.clone(),
        kind: n.kind,
        size: if n.kind == EntryKind::File { n.size } else { 0 },
        mode: n.mode,
        mtime_ns: n.mtime_ns,
        inode: n.ino,
        symlink_target: n.target.clone(),
    }
}

#[async_trait]
impl Mirror for StickMirror {
    fn location(&self) -> String {
        self.location.clone()
    }

    /// A virtual tree in an encrypted catalog: everything is kept, whatever the medium; changes
    /// are kept by the next catalog commit, with the state (one log).
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            removable: true,
            atomic_commit: true,
            ..Capabilities::default()
        }
    }

    fn marker_location(&self) -> Option<String> {
        let folder = self
            .folder_hint
            .map_or_else(|| "FOLDER-ID".to_string(), |f| f.to_string());
        Some(
            self.mount
                .join(TOP)
                .join(folder)
                .join(STICK_FILE)
                .display()
                .to_string(),
        )
    }

    async fn probe(&self) -> MirrorResult<Presence> {
        let presence = self.storage.probe().await?;
        if presence == Presence::Absent {
            if let Some(o) = self.open.lock().await.as_mut() {
                o.stale = true;
            }
            return Ok(Presence::Absent);
        }
        let folder = match self.folder_hint {
            Some(f) => Some(f),
            None => match self.folders().await?.as_slice() {
                [one] => Some(one.folder),
                [] => None,
                _ => Some(self.folder().await?),
            },
        };
        if let Some(folder) = folder {
            if let Some(stick) = self.read_stick_file(folder).await? {
                let found = stick
                    .folder_id()
                    .map_err(|e| self.corrupt(format::at(folder, STICK_FILE), e))?;
                // Plugged elsewhere since: the next operation reopens it.
                let mut g = self.open.lock().await;
                self.revalidate(&mut g).await;
                return Ok(Presence::Marked(found));
            }
        }
        if let Some(o) = self.open.lock().await.as_mut() {
            o.stale = true;
        }
        Ok(presence)
    }

    async fn init(&self, folder: FolderId) -> MirrorResult<()> {
        if let Some(hint) = self.folder_hint {
            if hint != folder {
                return Err(self.corrupt(
                    format::folder_dir(folder),
                    format!("this stick mirror is set up for folder {hint}"),
                ));
            }
        }
        match self.read_stick_file(folder).await {
            Ok(Some(stick)) if stick.folder_id().ok() == Some(folder) => return Ok(()),
            Ok(_) | Err(MirrorError::Offline { .. }) => {}
            Err(e) => return Err(e),
        }
        if let (Some(pin), true) = (self.pinned(), self.pin_given) {
            return Err(self.corrupt(
                format::at(folder, STICK_FILE),
                format!(
                    "the stick at {} holds no stick for folder {folder}, but this machine recorded one (stick ID {pin}) \
                     when it added the mirror: it is not the stick this folder was shared with, and a new one is \
                     not made in its place. Nothing was applied or written. If you re-created it on purpose, remove \
                     and add the mirror again (`briefcase mirror remove DIR NAME`, then `briefcase mirror add DIR {}`)",
                    self.mount.display(),
                    self.location
                ),
            ));
        }
        let Some(rc) = &self.create else {
            return Err(MirrorError::Refused {
                location: self.location.clone(),
                path: format::folder_dir(folder),
                reason: "this stick is not set up yet; add it with `briefcase mirror add DIR stick:PATH` (which names its recipients)".into(),
            });
        };
        let o = self.create_stick(folder, rc).await?;
        *self.open.lock().await = Some(o);
        Ok(())
    }

    async fn walk(&self, under: Option<&RelPath>, detail: Detail) -> MirrorResult<Vec<RemoteStat>> {
        let g = self.lock().await?;
        let Some(o) = g.as_ref() else {
            return Ok(Vec::new());
        };
        if let Some(dir) = under {
            self.check_ancestors(o, dir)?;
        }
        let keep = |n: &Node| detail == Detail::Stats || n.kind == EntryKind::File;
        let name_only = |p: &RelPath| RemoteStat {
            path: p.clone(),
            kind: EntryKind::File,
            size: 0,
            mode: 0,
            mtime_ns: 0,
            inode: 0,
            symlink_target: None,
        };
        let one = |(p, n): (&RelPath, &Node)| match detail {
            Detail::Stats => stat_of(p, n),
            Detail::FileNames => name_only(p),
        };
        Ok(match under {
            None => o
                .cat
                .tree()
                .iter()
                .filter(|(_, n)| keep(n))
                .map(one)
                .collect(),
            Some(dir) => o.cat.below(dir).filter(|(_, n)| keep(n)).map(one).collect(),
        })
    }

    /// Runs of puts write their chunks together ([`StickMirror::put_items`]); every other
    /// change is a change of the catalog in memory, committed with the state
    /// ([`StateStore::commit_state`]).
    async fn write(&self, ops: Vec<WriteOp>) -> Vec<WriteResult> {
        let mut out = Vec::with_capacity(ops.len());
        for run in split_runs(ops) {
            match run {
                Run::Puts(_, items) => {
                    out.extend(self.put_many(items).await.into_iter().map(|r| r.map(Some)));
                }
                Run::Removes(_, paths) => {
                    for p in paths {
                        out.push(self.remove_one(&p).await.map(|()| None));
                    }
                }
                Run::One(_, op) => out.push(match op {
                    WriteOp::Mkdir { path, meta } => self.mkdir_one(&path, meta).await.map(Some),
                    WriteOp::Symlink { path, target } => {
                        self.symlink_one(&path, &target).await.map(Some)
                    }
                    WriteOp::Rename { from, to } => self.rename_one(&from, &to).await.map(Some),
                    WriteOp::SetMeta { path, meta } => {
                        self.set_meta_one(&path, meta).await.map(Some)
                    }
                    WriteOp::Put(it) => match self.put_many(vec![it]).await.pop() {
                        Some(r) => r.map(Some),
                        None => Ok(None),
                    },
                    WriteOp::Remove(path) => self.remove_one(&path).await.map(|()| None),
                }),
            }
        }
        out
    }

    async fn stat(&self, path: &RelPath) -> MirrorResult<Option<RemoteStat>> {
        let g = self.lock().await?;
        let Some(o) = g.as_ref() else {
            return Ok(None);
        };
        self.check_ancestors(o, path)?;
        Ok(o.cat.node(path).map(|n| stat_of(path, n)))
    }

    async fn get(&self, path: &RelPath, dest: &Path) -> MirrorResult<RemoteStat> {
        let mut g = self.lock().await?;
        let o = self.opened(&mut g)?;
        self.check_ancestors(o, path)?;
        let node = match o.cat.node(path) {
            Some(n) if n.kind == EntryKind::File => n.clone(),
            Some(_) => {
                return Err(MirrorError::Io {
                    location: self.location.clone(),
                    op: "read",
                    path: path.to_string(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "not a regular file",
                    ),
                })
            }
            None => {
                return Err(MirrorError::NotFound {
                    location: self.location.clone(),
                    path: path.to_string(),
                })
            }
        };
        let chunks = o
            .cat
            .chunks_of(&node.content)
            .map_err(|e| self.corrupt(path, e))?;
        let local = |e: std::io::Error| MirrorError::Io {
            location: self.location.clone(),
            op: "write local copy",
            path: dest.display().to_string(),
            source: e,
        };
        let mut out =
            std::io::BufWriter::new(briefcase_mirror::fsutil::create_private(dest).map_err(local)?);
        let mut total = 0u64;
        // Up to READ_AHEAD chunks are read and decrypted (on both cores) while the oldest is
        // written out, in order.
        let reader = ChunkReader {
            storage: self.storage.clone(),
            secret: o.secret.clone(),
            folder: o.folder,
            location: self.location.clone(),
        };
        let mut next = chunks.iter();
        let mut window = std::collections::VecDeque::new();
        loop {
            while window.len() < READ_AHEAD {
                let Some(r) = next.next() else { break };
                window.push_back(tokio::spawn(reader.clone().read(path.clone(), *r)));
            }
            let Some(task) = window.pop_front() else {
                break;
            };
            let plain = match task.await {
                Ok(r) => r?,
                Err(e) => return Err(self.corrupt(path, format!("reader task failed: {e}"))),
            };
            total += plain.len() as u64;
            out.write_all(&plain).map_err(local)?;
        }
        out.flush().map_err(local)?;
        if total != node.size {
            return Err(self.corrupt(
                path,
                format!(
                    "its chunks add up to {total} bytes, the catalog says {}",
                    node.size
                ),
            ));
        }
        Ok(stat_of(path, &node))
    }

    /// Once per opening of the stick: removes the temp files and the chunk files no catalog
    /// refers to that a sync which died left in this folder's directory (names only: one
    /// directory read per `chunks/xx`, no stat per chunk; other files on the medium are never
    /// touched).
    async fn sweep(&self) -> MirrorResult<usize> {
        let mut g = self.lock().await?;
        let Some(o) = g.as_mut() else {
            return Ok(0);
        };
        // A STICK someone edited is put back as the authenticated root says (a stick still in
        // an older format gets its new STICK with the migrating commit).
        if o.format == format::FORMAT {
            if let Err(e) = self.fix_stick_file(o).await {
                tracing::warn!(stick = %self.location, "cannot rewrite its STICK file ({e}); it is tried again at the next sync");
            }
        }
        // A daemon syncs a stick (which has no watcher) on every change: once is enough.
        if o.swept {
            return Ok(0);
        }
        o.swept = true;
        let known: HashSet<String> = o
            .cat
            .known_chunks()
            .map(|h| format::chunk_name(&o.secret.name_key, h))
            .collect();
        let prefix = format!("{}/", format::folder_dir(o.folder));
        let names = self
            .storage
            .list_file_names_under(&format::fixed(&format::folder_dir(o.folder)))
            .await?;
        let is_temp = |p: &RelPath| {
            p.file_name()
                .starts_with(briefcase_mirror::TMP_PREFIX.as_bytes())
        };
        // Temp files are rare (a commit cut short); the storage sweeps them itself.
        let mut removed = if names.iter().any(is_temp) {
            self.storage.sweep().await?
        } else {
            0
        };
        let strays: Vec<RelPath> = names
            .into_iter()
            .filter(|p| {
                let name = p.display();
                let local = name.strip_prefix(&prefix).unwrap_or(&name);
                !is_temp(p) && local.starts_with("chunks/") && !known.contains(local)
            })
            .collect();
        let n = strays.len() + removed;
        if n == 0 {
            return Ok(0);
        }
        removed += self
            .storage
            .remove_batch(strays)
            .await
            .into_iter()
            .filter(Result::is_ok)
            .count();
        tracing::info!(stick = %self.location, removed, of = n, "removed what an interrupted sync left on the stick");
        Ok(removed)
    }
}

#[async_trait]
impl StateStore for StickMirror {
    async fn read_state(&self, name: &str) -> MirrorResult<Option<Vec<u8>>> {
        check_meta_name(&self.location, name)?;
        let g = self.lock().await?;
        Ok(g.as_ref().and_then(|o| o.cat.meta(name).cloned()))
    }

    /// All in one catalog commit with the data written since the last one: none or all of
    /// them. Removals alone are not committed: they land with the next commit (a part no root
    /// refers to is garbage either way).
    async fn commit_state(&self, write: &[(&str, &[u8])], remove: &[&str]) -> MirrorResult<()> {
        for name in write.iter().map(|(n, _)| *n).chain(remove.iter().copied()) {
            check_meta_name(&self.location, name)?;
        }
        let mut g = self.lock().await?;
        if write.is_empty() {
            if let Some(o) = g.as_mut() {
                for name in remove {
                    o.cat.remove_meta(name);
                }
            }
            return Ok(());
        }
        let o = self.opened(&mut g)?;
        for (name, bytes) in write {
            o.cat.set_meta(name, bytes.to_vec());
        }
        for name in remove {
            o.cat.remove_meta(name);
        }
        let r = self.commit(o, false).await;
        if r.is_err() {
            // What is committed is unknown now: read it again next time.
            *g = None;
        }
        r.map_err(|e| self.no_space_hint(e))
    }

    async fn list_state(&self) -> MirrorResult<Vec<String>> {
        let g = self.lock().await?;
        Ok(g.as_ref()
            .map(|o| o.cat.meta_names().cloned().collect())
            .unwrap_or_default())
    }

    /// A stick is used by one machine at a time: no lease is taken on it.
    async fn create_state_exclusive(&self, name: &str, bytes: &[u8]) -> MirrorResult<bool> {
        let _ = bytes;
        Err(MirrorError::Unsupported {
            location: self.location.clone(),
            what: format!("creating state files exclusively ({name}): a stick is used by one machine at a time"),
        })
    }
}

/// The changes [`Mirror::write`] applies: chunks written for puts, the catalog changed in memory
/// for the rest.
impl StickMirror {
    async fn put_many(&self, items: Vec<PutItem>) -> Vec<MirrorResult<RemoteStat>> {
        let n = items.len();
        let mut g = match self.lock().await {
            Ok(g) => g,
            Err(e) => return (0..n).map(|_| Err(e.duplicate())).collect(),
        };
        let Some(o) = g.as_mut() else {
            return (0..n)
                .map(|_| Err(self.corrupt("stick", "not open")))
                .collect();
        };
        self.put_items(o, items).await
    }

    async fn mkdir_one(&self, path: &RelPath, meta: FileMeta) -> MirrorResult<RemoteStat> {
        let mut g = self.lock().await?;
        let o = self.opened(&mut g)?;
        self.check_parent(o, path)?;
        match o.cat.node(path) {
            Some(n) if n.kind == EntryKind::Dir => {}
            Some(_) => {
                return Err(MirrorError::Io {
                    location: self.location.clone(),
                    op: "mkdir",
                    path: path.to_string(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "a file is in the way",
                    ),
                })
            }
            None => {
                let ino = o.cat.next_ino();
                o.cat.set_node(
                    path.clone(),
                    Node {
                        kind: EntryKind::Dir,
                        size: 0,
                        mode: meta.mode & 0o7777,
                        mtime_ns: meta.mtime_ns,
                        ino,
                        target: None,
                        content: Content::None,
                    },
                );
            }
        }
        o.cat
            .touch(path, meta.mode & 0o7777, meta.mtime_ns)
            .map(|n| stat_of(path, n))
            .ok_or_else(|| self.corrupt(path, "vanished"))
    }

    async fn symlink_one(&self, path: &RelPath, target: &[u8]) -> MirrorResult<RemoteStat> {
        let mut g = self.lock().await?;
        let o = self.opened(&mut g)?;
        self.check_new_file(o, path)?;
        let node = Node {
            kind: EntryKind::Symlink,
            size: 0,
            mode: 0o777,
            mtime_ns: now_ns(),
            ino: o.cat.next_ino(),
            target: Some(target.to_vec()),
            content: Content::None,
        };
        let st = stat_of(path, &node);
        o.cat.set_node(path.clone(), node);
        Ok(st)
    }

    async fn rename_one(&self, from: &RelPath, to: &RelPath) -> MirrorResult<RemoteStat> {
        let mut g = self.lock().await?;
        let o = self.opened(&mut g)?;
        self.check_ancestors(o, from)?;
        self.check_parent(o, to)?;
        let Some(src) = o.cat.node(from).cloned() else {
            return Err(MirrorError::NotFound {
                location: self.location.clone(),
                path: from.to_string(),
            });
        };
        if to.starts_with(from) && to != from {
            return Err(MirrorError::Unsafe {
                location: self.location.clone(),
                path: to.to_string(),
                reason: format!("cannot move {from} into itself"),
            });
        }
        if let Some(dst) = o.cat.node(to) {
            let dst_is_dir = dst.kind == EntryKind::Dir;
            if dst_is_dir && (src.kind != EntryKind::Dir || o.cat.below(to).next().is_some()) {
                return Err(MirrorError::Io {
                    location: self.location.clone(),
                    op: "rename",
                    path: to.to_string(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::DirectoryNotEmpty,
                        "a directory is in the way",
                    ),
                });
            }
        }
        o.cat.rename(from, to);
        o.cat
            .node(to)
            .map(|n| stat_of(to, n))
            .ok_or_else(|| self.corrupt(to, "vanished"))
    }

    async fn remove_one(&self, path: &RelPath) -> MirrorResult<()> {
        let mut g = self.lock().await?;
        let o = self.opened(&mut g)?;
        if path.is_reserved() {
            return Err(MirrorError::Unsafe {
                location: self.location.clone(),
                path: path.to_string(),
                reason: "reserved name (state or temp file)".into(),
            });
        }
        self.check_ancestors(o, path)?;
        if o.cat.below(path).next().is_some() {
            return Err(MirrorError::Io {
                location: self.location.clone(),
                op: "remove",
                path: path.to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::DirectoryNotEmpty,
                    "directory not empty",
                ),
            });
        }
        o.cat.remove_node(path);
        Ok(())
    }

    async fn set_meta_one(&self, path: &RelPath, meta: FileMeta) -> MirrorResult<RemoteStat> {
        let mut g = self.lock().await?;
        let o = self.opened(&mut g)?;
        self.check_ancestors(o, path)?;
        o.cat
            .touch(path, meta.mode & 0o7777, meta.mtime_ns)
            .map(|n| stat_of(path, n))
            .ok_or_else(|| MirrorError::NotFound {
                location: self.location.clone(),
                path: path.to_string(),
            })
    }
}

/// State file names: `[a-z0-9._-]+`, not `.`/`..`.
fn check_meta_name(location: &str, name: &str) -> MirrorResult<()> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.starts_with(briefcase_mirror::TMP_PREFIX)
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-'
        });
    if ok {
        Ok(())
    } else {
        Err(MirrorError::Unsafe {
            location: location.to_string(),
            path: name.to_string(),
            reason: "state file names must match [a-z0-9._-]+".into(),
        })
    }
}

/// Entry points for fuzz targets (`tests/fuzz.rs`, docs/fuzzing.md); not a stable API. Thin
/// wrappers over the private decoders of what is read from a stick, so that the targets reach
/// them without the internals being public.
#[doc(hidden)]
pub mod fuzz {
    use briefcase_mirror::{FolderId, RelPath};

    use super::{ExposeSecret, StickId};
    use crate::catalog::Catalog;
    use crate::keys::StickSecret;
    use crate::{
        format, PartRef, ROOT_MAGIC, ROOT_MAGIC_V1, ROOT_MAGIC_V2, SEGMENT_MAGIC, SEGMENT_MAGIC_V1,
        SEGMENT_MAGIC_V2,
    };

    /// The magic of a root (`root`) or segment of `format` (1 to 3).
    fn magic(format: u32, root: bool) -> &'static [u8; 8] {
        match (format, root) {
            (1, true) => ROOT_MAGIC_V1,
            (1, false) => SEGMENT_MAGIC_V1,
            (2, true) => ROOT_MAGIC_V2,
            (2, false) => SEGMENT_MAGIC_V2,
            (_, true) => ROOT_MAGIC,
            (_, false) => SEGMENT_MAGIC,
        }
    }

    /// A stick secret: the record a key file holds once decrypted.
    pub struct Secret(StickSecret);

    impl Secret {
        /// Parses a decrypted key record (`keys.N.age`, `recovery.age`), as opening a stick does.
        ///
        /// # Errors
        /// What is wrong with it.
        pub fn decode(bytes: &[u8]) -> Result<Secret, String> {
            StickSecret::decode(bytes).map(Secret)
        }

        /// The record as a key file holds it.
        pub fn encode(&self) -> String {
            self.0.encode().expose_secret().to_string()
        }

        /// The folder it is for.
        pub fn folder(&self) -> FolderId {
            self.0.folder
        }

        /// The stick ID machines pin.
        pub fn id(&self) -> StickId {
            self.0.id
        }

        /// `chunks/xx/NAME` of the chunk whose plaintext has blake3 `hash`.
        pub fn chunk_name(&self, hash: &[u8; 32]) -> String {
            format::chunk_name(&self.0.name_key, hash)
        }

        /// Decrypts an age file encrypted to the stick (root, segment, chunk), reading at most
        /// `limit` bytes of plaintext.
        ///
        /// # Errors
        /// Why it does not decrypt.
        pub fn decrypt(&self, cipher: &[u8], limit: u64) -> Result<Vec<u8>, String> {
            super::decrypt_with(&[&self.0.identity as &dyn age::Identity], cipher, limit)
                .map_err(super::explain_decrypt)
        }

        /// Encrypts `plain` to the stick, as it writes its roots, segments and chunks.
        ///
        /// # Errors
        /// Why it cannot be encrypted.
        pub fn encrypt(&self, plain: &[u8]) -> Result<Vec<u8>, String> {
            super::encrypt_to(&[&self.0.recipient as &dyn age::Recipient], plain)
        }

        /// The magic, `body` and the MAC: a root (`root`) or segment of the current format as
        /// a holder of the secret seals it.
        pub fn seal(&self, root: bool, body: &[u8]) -> Vec<u8> {
            self.seal_as(format::FORMAT, root, body)
        }

        /// [`Secret::seal`] in `format` (1: the magic and `body`, no MAC).
        pub fn seal_as(&self, format: u32, root: bool, body: &[u8]) -> Vec<u8> {
            let mut out = magic(format, root).to_vec();
            out.extend_from_slice(body);
            if format > 1 {
                super::seal(&self.0.mac_key, &mut out);
            }
            out
        }

        /// The format and postcard body of a sealed root (`root`) or segment of format 2 or 3,
        /// its magic and MAC checked.
        ///
        /// # Errors
        /// A bad magic or MAC, or too short.
        pub fn unseal<'a>(&self, root: bool, plain: &'a [u8]) -> Result<(u32, &'a [u8]), String> {
            let format = if plain.starts_with(magic(2, root)) {
                2
            } else {
                format::FORMAT
            };
            super::unseal(&self.0.mac_key, magic(format, root), plain).map(|b| (format, b))
        }
    }

    /// The postcard body of a root of `folder` and `generation` listing `parts` (name, length
    /// and blake3 of each encrypted segment file), this machine's `recipients` (key, label):
    /// what [`Secret::seal`] makes a root of (seed corpora of the current format).
    pub fn root_body(
        folder: FolderId,
        generation: u64,
        parts: &[(String, u64, [u8; 32])],
        recipients: &[(String, String)],
    ) -> Vec<u8> {
        let rec = super::RootRec {
            folder,
            generation,
            parts: parts
                .iter()
                .map(|(name, len, hash)| PartRef {
                    name: name.clone(),
                    len: *len,
                    hash: *hash,
                })
                .collect(),
            recipients: recipients
                .iter()
                .map(|(key, label)| super::RecipientLine {
                    key: key.clone(),
                    label: label.clone(),
                })
                .collect(),
            recipients_known: true,
            passphrase: false,
        };
        postcard::to_stdvec(&rec).unwrap_or_default()
    }

    /// A decoded root, as far as loading it goes before its parts are read.
    #[derive(Debug)]
    pub struct Root {
        /// Its folder.
        pub folder: FolderId,
        /// Its generation.
        pub generation: u64,
        /// Its format (1: no MAC).
        pub format: u32,
        /// Each listed part's path on the medium (or why it is refused), and its length.
        pub parts: Vec<(Result<RelPath, String>, u64)>,
        /// The recipients it lists (key, label).
        pub recipients: Vec<(String, String)>,
    }

    /// Decodes a decrypted root (format 3 or 2 with its MAC, or format 1) and checks the part
    /// names it lists, as [`super::StickMirror`] does when it loads a catalog.
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn decode_root(secret: &Secret, plain: &[u8]) -> Result<Root, String> {
        let r = super::decode_root(&secret.0, plain)?;
        let folder = r.rec.folder;
        Ok(Root {
            folder,
            generation: r.rec.generation,
            format: r.format,
            parts: r
                .rec
                .parts
                .iter()
                .map(|p| (super::part_path(folder, p), p.len))
                .collect(),
            recipients: r
                .rec
                .recipients
                .into_iter()
                .map(|l| (l.key, l.label))
                .collect(),
        })
    }

    /// Decodes decrypted segments (base first) and applies them to a catalog of `folder`, as
    /// loading a root's parts does under a root of format `root_format`.
    ///
    /// # Errors
    /// What is wrong with the first bad segment, or with the whole.
    pub fn load_segments(
        secret: &Secret,
        folder: FolderId,
        plains: &[&[u8]],
        root_format: u32,
    ) -> Result<Catalog, String> {
        let mut cat = Catalog::new(folder);
        for plain in plains {
            let delta = super::decode_segment(&secret.0, plain, root_format)?;
            cat.apply(delta)?;
        }
        cat.finish_load()?;
        Ok(cat)
    }

    /// The path of a part named `name` of `len` bytes that a root of `folder` lists, or why it
    /// is refused.
    ///
    /// # Errors
    /// Why the name is refused.
    pub fn part_path(folder: FolderId, name: &str, len: u64) -> Result<RelPath, String> {
        super::part_path(
            folder,
            &PartRef {
                name: name.to_string(),
                len,
                hash: [0; 32],
            },
        )
    }

    /// Decrypts a key file (`keys.N.age`) with a machine's identity, as opening a stick does
    /// (at most [`format::MAX_KEYS`] bytes of plaintext).
    ///
    /// # Errors
    /// Why it does not decrypt.
    pub fn decrypt_key_file(machine: &super::MachineKey, cipher: &[u8]) -> Result<Vec<u8>, String> {
        super::decrypt_with(
            &[machine.identity() as &dyn age::Identity],
            cipher,
            format::MAX_KEYS,
        )
        .map_err(super::explain_decrypt)
    }

    /// The generation of a segment file listed on the medium (`segments/GEN-RAND.age`).
    pub fn segment_generation(local: &str) -> Option<u64> {
        super::segment_generation(local)
    }

    /// Fills `out` from exactly `2 * out.len()` hex digits (stick IDs, name keys).
    pub fn parse_hex(s: &str, out: &mut [u8]) -> bool {
        crate::keys::parse_hex(s, out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::catalog::ContentRec;
    use briefcase_mirror::MirrorExt;

    const FOLDER: FolderId = FolderId(0x5eed);

    fn me(key: &MachineKey, label: &str) -> Recipient {
        Recipient {
            key: key.recipient(),
            label: label.into(),
        }
    }

    fn stick(mount: &Path, key: &MachineKey, create: bool) -> StickMirror {
        StickMirror::new(
            mount.to_path_buf(),
            Some(FOLDER),
            Unlock {
                machine: Some(key.clone()),
                passphrase: None,
            },
            create.then(|| Recipients {
                machines: vec![me(key, "office")],
                passphrase: None,
            }),
        )
    }

    /// Rewrites the stick at `mount` as briefcase wrote format 1: one unauthenticated base
    /// segment, a format 1 root in slot 1 (slot 0 removed), the key files wrapped to `machines`,
    /// and `STICK` of format 1 listing them.
    async fn downgrade_to_format_1(s: &StickMirror, mount: &Path, machines: &[Recipient]) {
        let g = s.open.lock().await;
        let o = g.as_ref().unwrap();
        let dir = mount.join(format::folder_dir(FOLDER));
        let plain = encode_magic(SEGMENT_MAGIC_V1, &o.cat.base()).unwrap();
        let seg = encrypt_to(&[&o.secret.recipient as &dyn age::Recipient], &plain).unwrap();
        let name = "segments/000000000099-00000001.age";
        std::fs::write(dir.join(name), &seg).unwrap();
        let root = RootRecV1 {
            folder: FOLDER,
            generation: 99,
            parts: vec![PartRef {
                name: name.into(),
                len: seg.len() as u64,
                hash: *blake3::hash(&seg).as_bytes(),
            }],
        };
        let plain = encode_magic(ROOT_MAGIC_V1, &root).unwrap();
        let cipher = encrypt_to(&[&o.secret.recipient as &dyn age::Recipient], &plain).unwrap();
        std::fs::write(dir.join(ROOTS[1]), cipher).unwrap();
        std::fs::remove_file(dir.join(ROOTS[0])).unwrap();
        let secret = o.secret.encode();
        let wrapped = wrap_for(machines, secret.expose_secret().as_bytes()).unwrap();
        for k in KEYS {
            std::fs::write(dir.join(k), &wrapped).unwrap();
        }
        let mut f = StickFile::new(FOLDER, machines, false);
        f.format = 1;
        std::fs::write(dir.join(STICK_FILE), f.render()).unwrap();
    }

    /// A format 1 stick is read as it is, migrated by the next commit (a new base, a format 2
    /// root, `STICK` of format 2), keeps its stick ID; a machine format 1 listed only in plain
    /// keeps its access through `keys.legacy.age` when the keys are re-wrapped; a format 1
    /// root beside a format 2 one is ignored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn format_1_is_read_and_migrated() {
        let d = tempfile::tempdir().unwrap();
        let mount = d.path().join("usb");
        std::fs::create_dir(&mount).unwrap();
        let (office, home, newpc) = (
            MachineKey::generate(),
            MachineKey::generate(),
            MachineKey::generate(),
        );
        let s = stick(&mount, &office, true);
        s.init(FOLDER).await.unwrap();
        let src = d.path().join("src");
        std::fs::write(&src, b"hello from format 1").unwrap();
        let meta = FileMeta {
            mode: 0o644,
            mtime_ns: 1,
        };
        let f = RelPath::try_from("f.txt").unwrap();
        s.put(&f, &src, meta).await.unwrap();
        s.write_state("state.0", b"one").await.unwrap();
        let id = s.stick_id().await.unwrap();
        downgrade_to_format_1(&s, &mount, &[me(&office, "office"), me(&home, "home")]).await;
        drop(s);
        let dir = mount.join(format::folder_dir(FOLDER));
        let v1_root = std::fs::read(dir.join(ROOTS[1])).unwrap();

        // Read as it is, pinned to the same ID.
        let s = stick(&mount, &office, false).with_pin(Some(id));
        assert_eq!(s.read_state("state.0").await.unwrap().unwrap(), b"one");
        assert_eq!(s.list().await.unwrap().len(), 1);
        assert_eq!(s.recipients().await.unwrap(), vec![me(&office, "")]);
        let out = d.path().join("out");
        s.get(&f, &out).await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"hello from format 1");
        // Migrated by the next commit.
        s.write_state("state.0", b"two").await.unwrap();
        let stick_text = std::fs::read_to_string(dir.join(STICK_FILE)).unwrap();
        assert!(
            stick_text.contains(&format!("format = {}", format::FORMAT)),
            "{stick_text}"
        );
        assert!(
            stick_text.contains(&home.recipient().to_string()),
            "the display lines are kept while the list is unknown: {stick_text}"
        );
        // Re-wrapping keeps format 1's keys as keys.legacy.age for the machines it listed.
        let added = s
            .add_recipients(&Recipients {
                machines: vec![me(&office, "office"), me(&newpc, "newpc")],
                passphrase: None,
            })
            .await
            .unwrap();
        assert_eq!(added, vec![me(&newpc, "newpc")]);
        assert!(dir.join(KEYS_LEGACY).exists());
        drop(s);
        for (who, key) in [("home", &home), ("newpc", &newpc), ("office", &office)] {
            let s = stick(&mount, key, false).with_pin(Some(id));
            assert_eq!(
                s.read_state("state.0").await.unwrap().unwrap(),
                b"two",
                "{who} opens the migrated stick"
            );
        }
        let s = stick(&mount, &office, false);
        assert_eq!(
            s.recipients().await.unwrap(),
            vec![me(&office, "office"), me(&newpc, "newpc")]
        );
        assert_eq!(s.stick_id().await.unwrap(), id);
        drop(s);

        // An unauthenticated format 1 root put back beside the format 2 ones is ignored, even
        // with a higher generation.
        let newest = (0..2)
            .max_by_key(|i| {
                std::fs::metadata(dir.join(ROOTS[*i]))
                    .unwrap()
                    .modified()
                    .unwrap()
            })
            .unwrap();
        std::fs::write(dir.join(ROOTS[1 - newest]), &v1_root).unwrap();
        let s = stick(&mount, &office, false).with_pin(Some(id));
        assert_eq!(s.read_state("state.0").await.unwrap().unwrap(), b"two");
    }

    /// The chunks of the file at `path` as the open catalog lists them.
    async fn chunks_at(s: &StickMirror, path: &RelPath) -> Vec<ChunkRef> {
        let g = s.open.lock().await;
        let o = g.as_ref().unwrap();
        o.cat.chunks_of(&o.cat.node(path).unwrap().content).unwrap()
    }

    /// A pushed file's chunk list is taken as given when it was cut with the stick's sizes (a
    /// cut FastCDC would never make proves it was not cut again), each chunk still hashed as it
    /// is read: a list the file no longer matches stores nothing (`SourceChanged`); a list cut
    /// with other sizes is ignored and the stick cuts the file itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_given_chunk_list_is_taken_and_checked() {
        let d = tempfile::tempdir().unwrap();
        let mount = d.path().join("usb");
        std::fs::create_dir(&mount).unwrap();
        let key = MachineKey::generate();
        let s = stick(&mount, &key, true);
        s.init(FOLDER).await.unwrap();
        let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let src = d.path().join("src");
        std::fs::write(&src, &content).unwrap();
        // Cut at 1,000 and 200,000 bytes: below FastCDC's 16 KiB minimum.
        let list: Vec<ChunkRef> = [0..1_000, 1_000..200_000, 200_000..300_000]
            .into_iter()
            .map(|r| ChunkRef {
                hash: ContentHash::of(&content[r.clone()]),
                len: r.len() as u32,
            })
            .collect();
        let item = |path: &str, chunks: Vec<ChunkRef>, params: ChunkParams| PutItem {
            path: RelPath::try_from(path).unwrap(),
            source: PutSource::File(src.clone()),
            meta: FileMeta {
                mode: 0o644,
                mtime_ns: 1,
            },
            expect: Some(ContentHash::of(&content)),
            chunks: Some(briefcase_mirror::Chunking { params, chunks }),
        };
        let taken = RelPath::try_from("taken").unwrap();
        let r = s
            .put_batch(vec![item("taken", list.clone(), ChunkParams::default())])
            .await;
        assert_eq!(r[0].as_ref().unwrap().size, 300_000);
        assert_eq!(chunks_at(&s, &taken).await, list, "the given cut is kept");
        let out = d.path().join("out");
        s.get(&taken, &out).await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), content);

        // Another cut of the same sizes: each chunk is hashed as read, so a stale list (the
        // file was saved again since it was cut) stores nothing.
        let mut stale = list.clone();
        stale[1].hash = ContentHash::of(b"what the file held when it was cut");
        let mut longer = list.clone();
        longer.push(list[0]);
        let mut shorter = list.clone();
        shorter.pop();
        for (name, bad) in [("stale", stale), ("longer", longer), ("shorter", shorter)] {
            let r = s
                .put_batch(vec![item(name, bad, ChunkParams::default())])
                .await;
            assert!(
                matches!(r[0], Err(MirrorError::SourceChanged { .. })),
                "{name}: {:?}",
                r[0]
            );
            let p = RelPath::try_from(name).unwrap();
            assert!(
                s.stat(&p).await.unwrap().is_none(),
                "{name}: nothing stored"
            );
        }

        // Cut with other sizes: ignored, the stick cuts the file itself.
        let other = ChunkParams {
            min: 1 << 10,
            ..ChunkParams::default()
        };
        let r = s.put_batch(vec![item("own", list.clone(), other)]).await;
        assert!(r[0].is_ok(), "{:?}", r[0]);
        let own = chunks_at(&s, &RelPath::try_from("own").unwrap()).await;
        assert_ne!(own, list);
        assert_eq!(own.iter().map(|c| c.len as usize).sum::<usize>(), 300_000);
    }

    /// Rewrites the stick at `mount` as briefcase wrote format 2: its catalog as one
    /// authenticated base of format 2 (no splices) under a format 2 root in slot 1 (slot 0
    /// removed), `STICK` of format 2.
    async fn downgrade_to_format_2(s: &StickMirror, mount: &Path) {
        let g = s.open.lock().await;
        let o = g.as_ref().unwrap();
        let dir = mount.join(format::folder_dir(FOLDER));
        let mut plain = encode_magic(SEGMENT_MAGIC_V2, &o.cat.base()).unwrap();
        seal(&o.secret.mac_key, &mut plain);
        let seg = encrypt_to(&[&o.secret.recipient as &dyn age::Recipient], &plain).unwrap();
        let name = "segments/000000000099-00000002.age";
        std::fs::write(dir.join(name), &seg).unwrap();
        let root = RootRec {
            folder: FOLDER,
            generation: 99,
            parts: vec![PartRef {
                name: name.into(),
                len: seg.len() as u64,
                hash: *blake3::hash(&seg).as_bytes(),
            }],
            recipients: o.recipients.clone(),
            recipients_known: true,
            passphrase: false,
        };
        let mut plain = encode_magic(ROOT_MAGIC_V2, &root).unwrap();
        seal(&o.secret.mac_key, &mut plain);
        let cipher = encrypt_to(&[&o.secret.recipient as &dyn age::Recipient], &plain).unwrap();
        std::fs::write(dir.join(ROOTS[1]), cipher).unwrap();
        std::fs::remove_file(dir.join(ROOTS[0])).unwrap();
        let mut f = o.stick.clone();
        f.format = 2;
        std::fs::write(dir.join(STICK_FILE), f.render()).unwrap();
    }

    /// A format 2 stick (pages of ~64 chunks, whole lists in every segment) is read as it is,
    /// its `STICK` left alone until the next commit migrates it (a new base and a format 3
    /// root, `STICK` of format 3); the pages of a big file are kept by an edit after that, which
    /// commits as a splice. The stick ID does not change.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn format_2_is_read_and_migrated() {
        let d = tempfile::tempdir().unwrap();
        let mount = d.path().join("usb");
        std::fs::create_dir(&mount).unwrap();
        let office = MachineKey::generate();
        let small = ChunkParams {
            min: 256,
            avg: 1024,
            max: 4096,
        };
        let s = stick(&mount, &office, true).with_chunk_params(small);
        s.init(FOLDER).await.unwrap();
        let content: Vec<u8> = (0..600_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let src = d.path().join("src");
        std::fs::write(&src, &content).unwrap();
        let meta = FileMeta {
            mode: 0o644,
            mtime_ns: 1,
        };
        let f = RelPath::try_from("big.bin").unwrap();
        s.put(&f, &src, meta).await.unwrap();
        s.write_state("part.1.00000001", b"engine state")
            .await
            .unwrap();
        let id = s.stick_id().await.unwrap();
        downgrade_to_format_2(&s, &mount).await;
        drop(s);
        let dir = mount.join(format::folder_dir(FOLDER));

        let s = stick(&mount, &office, false)
            .with_pin(Some(id))
            .with_chunk_params(small);
        assert_eq!(s.sweep().await.unwrap(), 0);
        let stick_text = std::fs::read_to_string(dir.join(STICK_FILE)).unwrap();
        assert!(
            stick_text.contains("format = 2"),
            "not rewritten before the catalog: {stick_text}"
        );
        assert_eq!(
            s.read_state("part.1.00000001").await.unwrap().unwrap(),
            b"engine state"
        );
        let out = d.path().join("out");
        s.get(&f, &out).await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), content);
        let pages_before = match &s
            .open
            .lock()
            .await
            .as_ref()
            .unwrap()
            .cat
            .node(&f)
            .unwrap()
            .content
        {
            Content::Paged(ids) => ids.clone(),
            other => panic!("paged: {other:?}"),
        };
        // Migrated by the next commit.
        s.write_state("part.2.00000002", b"more").await.unwrap();
        let stick_text = std::fs::read_to_string(dir.join(STICK_FILE)).unwrap();
        assert!(stick_text.contains("format = 3"), "{stick_text}");
        // An edit in the middle keeps the other pages.
        let mut edited = content.clone();
        edited[300_000..300_100].fill(7);
        std::fs::write(&src, &edited).unwrap();
        s.put(&f, &src, meta).await.unwrap();
        {
            let g = s.open.lock().await;
            let o = g.as_ref().unwrap();
            let Content::Paged(now) = &o.cat.node(&f).unwrap().content else {
                panic!("paged")
            };
            let kept = now.iter().filter(|id| pages_before.contains(id)).count();
            assert!(
                kept + 4 >= pages_before.len(),
                "{kept} of {} pages kept",
                pages_before.len()
            );
            let seg = o.cat.segment();
            assert!(
                matches!(seg.nodes[0].1.content, ContentRec::PagedSplice(_)),
                "{:?}",
                seg.nodes[0].1.content
            );
        }
        s.write_state("part.3.00000003", b"after the edit")
            .await
            .unwrap();
        drop(s);
        let s = stick(&mount, &office, false).with_pin(Some(id));
        assert_eq!(s.stick_id().await.unwrap(), id);
        s.get(&f, &out).await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), edited);
        assert_eq!(
            s.read_state("part.3.00000003").await.unwrap().unwrap(),
            b"after the edit"
        );
    }

    /// A format 2 root or segment sealed with another key (made by someone who knows the stick's
    /// public recipient but not its secret) is refused.
    #[test]
    fn a_root_without_the_right_mac_is_refused() {
        let s = StickSecret::generate(FOLDER);
        let other = StickSecret::generate(FOLDER);
        let rec = RootRec {
            folder: FOLDER,
            generation: 7,
            parts: Vec::new(),
            recipients: Vec::new(),
            recipients_known: true,
            passphrase: false,
        };
        let mut good = encode_magic(ROOT_MAGIC, &rec).unwrap();
        let mut forged = good.clone();
        seal(&s.mac_key, &mut good);
        seal(&other.mac_key, &mut forged);
        assert_eq!(decode_root(&s, &good).unwrap().rec.generation, 7);
        assert!(decode_root(&s, &forged).unwrap_err().contains("MAC"));
        let mut flipped = good.clone();
        flipped[9] ^= 1;
        assert!(decode_root(&s, &flipped).is_err());
        for n in 0..40 {
            assert!(decode_root(&s, &good[..n.min(good.len())]).is_err());
        }
        let mut seg = encode_magic(SEGMENT_MAGIC, &Catalog::new(FOLDER).base()).unwrap();
        seal(&other.mac_key, &mut seg);
        assert!(decode_segment(&s, &seg, 3).is_err());
        let v1 = encode_magic(SEGMENT_MAGIC_V1, &Catalog::new(FOLDER).base()).unwrap();
        assert!(decode_segment(&s, &v1, 1).is_ok());
        assert!(
            decode_segment(&s, &v1, 3).is_err() && decode_segment(&s, &v1, 2).is_err(),
            "no format 1 segment under an authenticated root"
        );
        let mut v2 = encode_magic(SEGMENT_MAGIC_V2, &Catalog::new(FOLDER).base()).unwrap();
        seal(&s.mac_key, &mut v2);
        assert!(decode_segment(&s, &v2, 2).is_ok());
        assert!(
            decode_segment(&s, &v2, 3).is_err(),
            "each root format lists segments of its own"
        );
    }
}
