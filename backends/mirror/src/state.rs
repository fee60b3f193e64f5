//! Crash-safe, incremental storage of a [`MirrorState`] through any [`Mirror`].
//!
//! A state is a **base** (every entry) plus **segments** (the entries changed since), each a
//! *part* file `part.GEN.RAND` in the state directory, and a small **root** that lists the parts
//! with their lengths and blake3 hashes. Roots live in two generation slots (`state.0`,
//! `state.1`), each an envelope with a magic, the generation number, the payload length and a
//! blake3 checksum. A store writes its part first, then the root into the slot the previous
//! generation does not occupy; the reader takes the newest root whose envelope and every part
//! verify, so a mirror yanked at any instant leaves the last complete generation readable
//! (DESIGN.md, "Mirror state is written crash-safely"). A one-line edit therefore writes one
//! small segment and one root, not the manifest; when the segments add up to more than half the
//! base (or there are [`MAX_SEGMENTS`]), the next store writes a new base instead. Parts that
//! neither slot refers to are removed after the root is written. This is the log-structured
//! layout of LFS and of SQLite's WAL with a checkpoint, at file granularity.
//!
//! Envelope (roots, and the intents record): `MAGIC` (8) | generation u64 LE (8) | payload
//! length u64 LE (8) | blake3(generation ‖ payload) (32) | payload. Root payload: postcard
//! [`Root`]; part payload: postcard `Delta`. Slots in the whole-state format of version 0.1
//! (`BCSTATE1`) are still read; the next store replaces them with a base.
//!
//! **On a mirror with one log of its own** ([`Capabilities::atomic_commit`](crate::Capabilities),
//! the stick), each [`StateStore::commit_state`](crate::StateStore::commit_state) is already a
//! whole generation, made durable with the data it records, none or all: the parts are written
//! without roots. A store writes its segment, or a base together with the removal of every
//! other part, in one commit, so the parts present are always a base and its segments; a load
//! lists them and applies them in generation order. The state then rides in the mirror's own
//! log (one root, the mirror's) instead of being a second log inside it. Roots left by the
//! layout above (a stick written before) are read, and the next store replaces them and their
//! parts with a base.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{MirrorError, MirrorResult};
use crate::model::{Entry, FolderId, KnowledgeVector, MirrorState, Osn, ReplicaId};
use crate::path::RelPath;
use crate::{Mirror, MirrorExt};

const MAGIC_V1: &[u8; 8] = b"BCSTATE1";
const MAGIC_ROOT: &[u8; 8] = b"BCSTATE2";
const MAGIC_PART: &[u8; 8] = b"BCPART01";
const HEADER: usize = 8 + 8 + 8 + 32;
/// Largest state part (or whole state of the old format) accepted, in bytes (256 MiB: ~1 million
/// entries). Larger is refused as corrupt.
pub const MAX_STATE_BYTES: usize = 256 << 20;
/// Largest root accepted, in bytes.
const MAX_ROOT_BYTES: usize = 1 << 20;
/// Segments after which the next store writes a new base.
pub const MAX_SEGMENTS: usize = 32;
/// Segments may add up to half the base plus this many bytes before a new base is written.
const SEGMENT_SLACK: u64 = 16 << 10;
/// The two generation slots, in `.briefcase/`.
pub const SLOTS: [&str; 2] = ["state.0", "state.1"];
/// Prefix of part files in `.briefcase/`.
pub const PART_PREFIX: &str = "part.";

/// Wraps `payload` in the envelope for `generation` (the intents record and roots).
pub fn seal(generation: u64, payload: &[u8]) -> Vec<u8> {
    seal_with(MAGIC_V1, generation, payload)
}

fn seal_with(magic: &[u8; 8], generation: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(checksum(generation, payload).as_bytes());
    out.extend_from_slice(payload);
    out
}

/// A copy of the envelope `original` (a root, a part or a record) with `payload` in place of its
/// payload, sealed again: for tests that play an attacker who can write the mirror.
///
/// # Errors
/// When `original` is not a valid envelope.
pub fn reseal(original: &[u8], payload: &[u8]) -> Result<Vec<u8>, String> {
    let (magic, generation, _) = open_any(original)?;
    Ok(seal_with(magic, generation, payload))
}

/// Checks an envelope of any kind and returns `(generation, payload)`.
///
/// # Errors
/// A human-readable reason when the magic, length or checksum is wrong.
pub fn open(bytes: &[u8]) -> Result<(u64, &[u8]), String> {
    open_any(bytes).map(|(_, g, p)| (g, p))
}

fn open_any(bytes: &[u8]) -> Result<(&'static [u8; 8], u64, &[u8]), String> {
    let magic = match bytes.get(..8) {
        Some(m) if m == MAGIC_V1 => MAGIC_V1,
        Some(m) if m == MAGIC_ROOT => MAGIC_ROOT,
        Some(m) if m == MAGIC_PART => MAGIC_PART,
        _ => return Err("not a briefcase state file (bad magic or too short)".into()),
    };
    if bytes.len() < HEADER {
        return Err("not a briefcase state file (too short)".into());
    }
    let generation = u64::from_le_bytes(bytes[8..16].try_into().map_err(|_| "short header")?);
    let len = u64::from_le_bytes(bytes[16..24].try_into().map_err(|_| "short header")?);
    let payload = &bytes[HEADER..];
    if len != payload.len() as u64 {
        return Err(format!(
            "truncated: header says {len} bytes, file has {}",
            payload.len()
        ));
    }
    if checksum(generation, payload).as_bytes() != &bytes[24..56] {
        return Err("checksum mismatch".into());
    }
    Ok((magic, generation, payload))
}

fn checksum(generation: u64, payload: &[u8]) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(&generation.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// One part a root refers to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRef {
    /// State file name (`part.GEN.RAND`).
    pub name: String,
    /// Its length in bytes.
    pub len: u64,
    /// blake3 of the whole file.
    pub hash: [u8; 32],
}

/// A root: the parts of one generation, base first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    /// Base first, then segments in the order they apply.
    pub parts: Vec<PartRef>,
}

/// A part's content: the header fields, and the entries changed (all of them in a base).
#[derive(Debug, Serialize, Deserialize)]
struct Delta {
    folder_id: FolderId,
    replica_id: ReplicaId,
    osn: Osn,
    knowledge: KnowledgeVector,
    replica_names: BTreeMap<ReplicaId, String>,
    upserts: Vec<Entry>,
    removed: Vec<RelPath>,
}

/// [`Delta`] as written: the same fields in the same order, so the same bytes (serde writes a
/// reference as what it refers to), over borrowed entries: a base of 100,000 entries is encoded
/// without a second copy of the state in memory (it doubled the peak of a first sync).
#[derive(Serialize)]
struct DeltaOut<'a> {
    folder_id: FolderId,
    replica_id: ReplicaId,
    osn: Osn,
    knowledge: &'a KnowledgeVector,
    replica_names: &'a BTreeMap<ReplicaId, String>,
    upserts: Vec<&'a Entry>,
    removed: Vec<&'a RelPath>,
}

/// What is stored on the mirror for one generation: enough to tell whether the mirror still
/// holds it ([`load_unless`]) and to write the next one incrementally ([`store`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// Generation number (0: nothing stored yet).
    pub generation: u64,
    /// The root envelope's checksum: with `generation`, identifies exactly what was read (two
    /// machines writing the same generation number still differ here).
    pub checksum: [u8; 32],
    /// The root's parts (empty for the old whole-state format: the next store writes a base).
    pub root: Root,
}

impl Stored {
    fn base_len(&self) -> u64 {
        self.root.parts.first().map_or(0, |p| p.len)
    }
    fn segments_len(&self) -> u64 {
        self.root.parts.iter().skip(1).map(|p| p.len).sum()
    }
}

/// A state as loaded, and which generation it was.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// What the mirror holds for this generation.
    pub stored: Stored,
    /// The state.
    pub state: MirrorState,
}

/// Reads the newest valid generation. `Ok(None)` when neither slot exists (a new mirror).
///
/// # Errors
/// [`MirrorError::Corrupt`] when slots exist but none is valid (naming both reasons);
/// [`MirrorError::InvalidPath`] for a path that is not a safe relative path (invariant 6);
/// I/O errors from the mirror.
pub async fn load(mirror: &dyn Mirror) -> MirrorResult<Option<Loaded>> {
    match load_unless(mirror, None).await? {
        Reload::Loaded(l) => Ok(Some(l)),
        Reload::Absent | Reload::Unchanged => Ok(None),
    }
}

/// What [`load_unless`] found.
#[derive(Debug)]
pub enum Reload {
    /// The newest valid generation is the one the caller already holds.
    Unchanged,
    /// A different newest generation, decoded.
    Loaded(Loaded),
    /// Neither slot exists (a new mirror).
    Absent,
}

/// [`load`] for a caller that keeps the state in memory between syncs (`watch`, the daemon):
/// when the newest valid root has the `known` (generation, checksum), nothing more is read, so
/// an unchanged state costs reading two small roots. Parts are read only for the root used (the
/// older root's only if the newer fails).
///
/// # Errors
/// As [`load`].
pub async fn load_unless(
    mirror: &dyn Mirror,
    known: Option<(u64, [u8; 32])>,
) -> MirrorResult<Reload> {
    if mirror.capabilities().atomic_commit {
        if let Some(r) = load_committed(mirror, known).await? {
            return Ok(r);
        }
    }
    // (generation, checksum, magic, bytes, slot) of each valid envelope.
    type Slot = (u64, [u8; 32], &'static [u8; 8], Vec<u8>, &'static str);
    let mut valid: Vec<Slot> = Vec::new();
    let mut problems = Vec::new();
    let mut seen = 0;
    for slot in SLOTS {
        let Some(bytes) = mirror.read_state(slot).await? else {
            continue;
        };
        seen += 1;
        if bytes.len() > MAX_STATE_BYTES + HEADER {
            problems.push(format!("{slot}: larger than {MAX_STATE_BYTES} bytes"));
            continue;
        }
        match open_any(&bytes) {
            Ok((magic, generation, _)) if magic != MAGIC_PART => {
                let mut sum = [0u8; 32];
                sum.copy_from_slice(&bytes[24..56]);
                valid.push((generation, sum, magic, bytes, slot));
            }
            Ok(_) => problems.push(format!("{slot}: a part file, not a root")),
            Err(e) => problems.push(format!("{slot}: {e}")),
        }
    }
    valid.sort_by_key(|v| std::cmp::Reverse(v.0));
    for (generation, checksum, magic, bytes, slot) in valid {
        if known == Some((generation, checksum)) {
            return Ok(Reload::Unchanged);
        }
        let payload = &bytes[HEADER..];
        let got = if magic == MAGIC_V1 {
            decode::<MirrorState>(mirror, payload)?.map(|mut state| {
                state.clear_changed();
                (Root::default(), state)
            })
        } else if payload.len() > MAX_ROOT_BYTES {
            Err(format!("root larger than {MAX_ROOT_BYTES} bytes"))
        } else {
            // A store never writes more than a base and MAX_SEGMENTS segments: a root listing
            // more (one large part listed 20,000 times) would make every load read and decode
            // it that often.
            match decode::<Root>(mirror, payload)? {
                Ok(root) if root.parts.len() > MAX_SEGMENTS + 1 => Err(format!(
                    "root lists {} parts, more than a base and {MAX_SEGMENTS} segments",
                    root.parts.len()
                )),
                Ok(root) => read_parts(mirror, &root).await?.map(|state| (root, state)),
                Err(e) => Err(e),
            }
        };
        match got {
            Ok((root, state)) => {
                return Ok(Reload::Loaded(Loaded {
                    stored: Stored {
                        generation,
                        checksum,
                        root,
                    },
                    state,
                }))
            }
            Err(e) => problems.push(format!("{slot} (generation {generation}): {e}")),
        }
    }
    if seen > 0 {
        return Err(MirrorError::Corrupt {
            location: mirror.location(),
            what: ".briefcase/state.0 and state.1".into(),
            reason: format!(
                "{}; no valid generation is left. Move .briefcase away and run `briefcase mirror add` again to rebuild it from the data",
                problems.join("; ")
            ),
        });
    }
    Ok(Reload::Absent)
}

/// The parts among state file `names`, as `(generation, name)` in the order they apply.
fn parts_in(names: &[String]) -> Vec<(u64, String)> {
    let mut parts: Vec<(u64, String)> = names
        .iter()
        .filter(|n| is_part_name(n))
        .filter_map(|n| Some((part_generation(n)?, n.clone())))
        .collect();
    parts.sort();
    parts
}

/// The generation in a part's name (`part.GEN.RAND`).
fn part_generation(name: &str) -> Option<u64> {
    name.strip_prefix(PART_PREFIX)?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// What identifies the parts of a root-less generation (for [`load_unless`]'s `known`): blake3
/// of their names in order (a name holds its generation and a random suffix).
fn names_checksum<'a>(names: impl Iterator<Item = &'a str>) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for n in names {
        h.update(n.as_bytes());
        h.update(b"\n");
    }
    *h.finalize().as_bytes()
}

/// [`load_unless`] on a mirror with [`Capabilities::atomic_commit`](crate::Capabilities): the
/// parts present, in generation order, are the state (see the module docs). `Ok(None)` when the
/// mirror still holds root slots (written before it committed atomically): the caller reads
/// them, and the next [`store`] replaces them.
///
/// # Errors
/// [`MirrorError::Corrupt`] when a part is damaged (every commit is whole, so there is no older
/// generation to fall back to here; the mirror's own log has one); as [`load`].
async fn load_committed(
    mirror: &dyn Mirror,
    known: Option<(u64, [u8; 32])>,
) -> MirrorResult<Option<Reload>> {
    let names = mirror.list_state().await?;
    if names.iter().any(|n| SLOTS.contains(&n.as_str())) {
        return Ok(None);
    }
    let parts = parts_in(&names);
    let Some((generation, _)) = parts.last() else {
        return Ok(Some(Reload::Absent));
    };
    let generation = *generation;
    let checksum = names_checksum(parts.iter().map(|(_, n)| n.as_str()));
    if known == Some((generation, checksum)) {
        return Ok(Some(Reload::Unchanged));
    }
    let corrupt = |reason: String| {
        MirrorError::Corrupt {
        location: mirror.location(),
        what: "state parts".into(),
        reason: format!(
            "{reason}. Move the mirror's state away and run `briefcase mirror add` again to rebuild it from the data"
        ),
    }
    };
    if parts.len() > MAX_SEGMENTS + 1 {
        return Err(corrupt(format!(
            "{} parts, more than a base and {MAX_SEGMENTS} segments",
            parts.len()
        )));
    }
    let mut root = Root::default();
    for (_, name) in &parts {
        let Some(bytes) = mirror.read_state(name).await? else {
            return Err(corrupt(format!("part {name} is listed but cannot be read")));
        };
        root.parts.push(PartRef {
            name: name.clone(),
            len: bytes.len() as u64,
            hash: *blake3::hash(&bytes).as_bytes(),
        });
    }
    match read_parts(mirror, &root).await? {
        Ok(state) => Ok(Some(Reload::Loaded(Loaded {
            stored: Stored {
                generation,
                checksum,
                root,
            },
            state,
        }))),
        Err(e) => Err(corrupt(e)),
    }
}

/// Decodes postcard; `Err(InvalidPath)` for an unsafe path inside (invariant 6), `Ok(Err(why))`
/// for anything else undecodable.
fn decode<T: serde::de::DeserializeOwned>(
    mirror: &dyn Mirror,
    payload: &[u8],
) -> MirrorResult<Result<T, String>> {
    let _ = crate::path::take_last_rejected();
    match postcard::from_bytes::<T>(payload) {
        Ok(v) => Ok(Ok(v)),
        Err(e) => match crate::path::take_last_rejected() {
            Some((path, why)) => Err(MirrorError::InvalidPath {
                location: mirror.location(),
                path,
                source: why,
            }),
            None => Ok(Err(format!("undecodable ({e})"))),
        },
    }
}

/// Reads and applies the parts of `root`; `Ok(Err(why))` when one is missing or damaged.
async fn read_parts(mirror: &dyn Mirror, root: &Root) -> MirrorResult<Result<MirrorState, String>> {
    let mut state: Option<MirrorState> = None;
    for (i, part) in root.parts.iter().enumerate() {
        if !is_part_name(&part.name) || part.len > (MAX_STATE_BYTES + HEADER) as u64 {
            return Ok(Err(format!("part {:?} is not a state part", part.name)));
        }
        let Some(bytes) = mirror.read_state(&part.name).await? else {
            return Ok(Err(format!("part {} is missing", part.name)));
        };
        if bytes.len() as u64 != part.len || blake3::hash(&bytes).as_bytes() != &part.hash {
            return Ok(Err(format!("part {} does not match its root", part.name)));
        }
        let payload = match open_any(&bytes) {
            Ok((m, _, p)) if m == MAGIC_PART => p,
            Ok(_) => return Ok(Err(format!("part {} is not a part", part.name))),
            Err(e) => return Ok(Err(format!("part {}: {e}", part.name))),
        };
        let d = match decode::<Delta>(mirror, payload)? {
            Ok(d) => d,
            Err(e) => return Ok(Err(format!("part {}: {e}", part.name))),
        };
        let st = state.get_or_insert_with(|| MirrorState::new(d.folder_id, d.replica_id, ""));
        if i > 0 && (st.folder_id != d.folder_id || st.replica_id != d.replica_id) {
            return Ok(Err(format!(
                "part {} belongs to another replica",
                part.name
            )));
        }
        st.folder_id = d.folder_id;
        st.replica_id = d.replica_id;
        st.osn = d.osn;
        st.knowledge = d.knowledge;
        st.replica_names = d.replica_names;
        let entries = st.entries_loaded_mut();
        for p in d.removed {
            entries.remove(&p);
        }
        for e in d.upserts {
            entries.insert(e.path.clone(), e);
        }
    }
    match state {
        Some(mut s) => {
            s.clear_changed();
            Ok(Ok(s))
        }
        None => Ok(Err("root lists no parts".into())),
    }
}

/// Whether `name` is a part name as [`store`] writes them, `part.GEN.RAND` (RAND: 8 lowercase
/// hex digits), which every backend accepts as a state file name.
/// A root naming anything else is damaged; the name is not passed on to the mirror, which would
/// refuse an unsafe one with an error that stops the load instead of falling back to the other
/// generation (the fuzz target `state_edits` found `part.8.\x131c82fb4`).
fn is_part_name(name: &str) -> bool {
    let Some((generation, rand)) = name
        .strip_prefix(PART_PREFIX)
        .and_then(|rest| rest.split_once('.'))
    else {
        return false;
    };
    !generation.is_empty()
        && generation.len() <= 20
        && generation.bytes().all(|b| b.is_ascii_digit())
        && rand.len() == 8
        && rand.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Writes `state` as generation `previous.generation + 1`: a segment with the entries changed
/// since `previous` (or a new base when there is none yet or segments have grown, see the
/// module docs), then the root into the slot `previous` does not occupy; then removes the parts
/// neither slot refers to any more. Returns what is now stored and forgets `state`'s changes.
/// Write chunks and content before calling this.
///
/// `previous` must be what this `state` was loaded from or last stored as
/// ([`Stored::default`] for a new mirror).
///
/// On a mirror with [`Capabilities::atomic_commit`](crate::Capabilities) no root is written:
/// the segment alone, or a base and the removal of every other part (and of roots and intents
/// an earlier layout left), in one commit.
///
/// # Errors
/// Errors from the mirror's [`StateStore::commit_state`](crate::StateStore::commit_state); then
/// nothing is forgotten, and storing again writes the same changes.
pub async fn store(
    mirror: &dyn Mirror,
    previous: &Stored,
    state: &mut MirrorState,
) -> MirrorResult<Stored> {
    let atomic = mirror.capabilities().atomic_commit;
    // On an atomic mirror, a segment only extends exactly the parts `previous` lists: anything
    // else there (roots of the earlier layout, another process's parts) is replaced by a base.
    let present = if atomic {
        Some(mirror.list_state().await?)
    } else {
        None
    };
    let extends = present.as_ref().is_none_or(|names| {
        let listed: BTreeSet<&str> = previous
            .root
            .parts
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        let here: BTreeSet<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| is_part_name(n) || SLOTS.contains(n))
            .collect();
        here == listed
    });
    let generation = previous.generation + 1;
    let encode_err = |e: postcard::Error| MirrorError::Corrupt {
        location: mirror.location(),
        what: "state".into(),
        reason: format!("cannot encode: {e}"),
    };
    fn header<'a>(
        state: &'a MirrorState,
        upserts: Vec<&'a Entry>,
        removed: Vec<&'a RelPath>,
    ) -> DeltaOut<'a> {
        DeltaOut {
            folder_id: state.folder_id,
            replica_id: state.replica_id,
            osn: state.osn,
            knowledge: &state.knowledge,
            replica_names: &state.replica_names,
            upserts,
            removed,
        }
    }
    let mut parts = previous.root.parts.clone();
    let mut payload = None;
    if extends && !parts.is_empty() && parts.len() <= MAX_SEGMENTS {
        let (mut upserts, mut removed) = (Vec::new(), Vec::new());
        for p in state.changed() {
            match state.entry(p) {
                Some(e) => upserts.push(e),
                None => removed.push(p),
            }
        }
        let seg = postcard::to_stdvec(&header(state, upserts, removed)).map_err(encode_err)?;
        if previous.segments_len() + seg.len() as u64 <= previous.base_len() / 2 + SEGMENT_SLACK {
            payload = Some(seg);
        }
    }
    let payload = match payload {
        Some(seg) => seg,
        None => {
            parts.clear();
            let all = state.entries().values().collect();
            postcard::to_stdvec(&header(state, all, Vec::new())).map_err(encode_err)?
        }
    };
    let bytes = seal_with(MAGIC_PART, generation, &payload);
    let name = format!("{PART_PREFIX}{generation}.{:08x}", rand_u32(&bytes));
    parts.push(PartRef {
        name: name.clone(),
        len: bytes.len() as u64,
        hash: *blake3::hash(&bytes).as_bytes(),
    });
    let root = Root { parts };
    if let Some(names) = present {
        // One commit: the part, and (with a base) the removal of everything it replaces.
        let drop: Vec<&str> = if root.parts.len() == 1 {
            names
                .iter()
                .map(String::as_str)
                .filter(|n| *n != name && (is_part_name(n) || SLOTS.contains(n) || *n == INTENTS))
                .collect()
        } else {
            Vec::new()
        };
        mirror.commit_state(&[(&name, &bytes)], &drop).await?;
        state.clear_changed();
        return Ok(Stored {
            generation,
            checksum: names_checksum(root.parts.iter().map(|p| p.name.as_str())),
            root,
        });
    }
    let root_payload = postcard::to_stdvec(&root).map_err(encode_err)?;
    let sealed = seal_with(MAGIC_ROOT, generation, &root_payload);
    let mut sum = [0u8; 32];
    sum.copy_from_slice(&sealed[24..56]);
    // The part before the root that lists it.
    mirror
        .commit_state(
            &[(&name, &bytes), (SLOTS[(generation % 2) as usize], &sealed)],
            &[],
        )
        .await?;
    state.clear_changed();
    collect_parts(mirror, generation, &root, &previous.root).await;
    Ok(Stored {
        generation,
        checksum: sum,
        root,
    })
}

/// A name suffix that differs between two machines writing the same generation.
fn rand_u32(bytes: &[u8]) -> u32 {
    let mut h = blake3::Hasher::new();
    h.update(bytes);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.update(&nanos.to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    let b = h.finalize();
    u32::from_le_bytes([
        b.as_bytes()[0],
        b.as_bytes()[1],
        b.as_bytes()[2],
        b.as_bytes()[3],
    ])
}

/// Removes the parts of generations before `generation` that neither `root` nor `previous` (the
/// other slot) refers to. Best effort: a part left behind is removed by a later store.
async fn collect_parts(mirror: &dyn Mirror, generation: u64, root: &Root, previous: &Root) {
    let names = match mirror.list_state().await {
        Ok(n) => n,
        Err(e) => {
            tracing::debug!(mirror = %mirror.location(), error = %e, "old state parts not listed; a later store removes them");
            return;
        }
    };
    let keep: BTreeSet<&str> = root
        .parts
        .iter()
        .chain(&previous.parts)
        .map(|p| p.name.as_str())
        .collect();
    let mut drop = Vec::new();
    for n in &names {
        let Some(rest) = n.strip_prefix(PART_PREFIX) else {
            continue;
        };
        let gen_of = rest.split('.').next().and_then(|g| g.parse::<u64>().ok());
        // Parts of later generations may be another machine's store in progress.
        if gen_of.is_some_and(|g| g < generation) && !keep.contains(n.as_str()) {
            drop.push(n.as_str());
        }
    }
    if drop.is_empty() {
        return;
    }
    if let Err(e) = mirror.commit_state(&[], &drop).await {
        tracing::debug!(mirror = %mirror.location(), error = %e, "old state parts not removed; a later store removes them");
    }
}

/// The intent record in `.briefcase/`: the entries a sync is about to write to the mirror.
pub const INTENTS: &str = "intents";

/// Records, durably and before any of them is written, the entries a sync is about to write to
/// the mirror (pushes: files, directories, links, removals), tied to `generation`, the newest
/// state generation stored. If the process dies before the state that records them is stored,
/// the next sync finds the mirror holding this machine's own writes that its state does not
/// know; [`load_intents`] lets it recognise them instead of taking them for edits made behind
/// briefcase's back (which would get new mirror OSNs and turn the next local edit of the same
/// file into a conflict with itself).
///
/// Nothing is written on a mirror with [`Capabilities::atomic_commit`](crate::Capabilities):
/// there the writes are kept only by the commit that stores the state recording them.
///
/// # Errors
/// Errors from the mirror's [`StateStore::commit_state`](crate::StateStore::commit_state).
pub async fn store_intents(
    mirror: &dyn Mirror,
    generation: u64,
    entries: &[Entry],
) -> MirrorResult<()> {
    if mirror.capabilities().atomic_commit {
        return Ok(());
    }
    let payload = postcard::to_stdvec(entries).map_err(|e| MirrorError::Corrupt {
        location: mirror.location(),
        what: INTENTS.to_string(),
        reason: format!("cannot encode: {e}"),
    })?;
    mirror
        .write_state(INTENTS, &seal(generation, &payload))
        .await
}

/// The intents recorded by [`store_intents`] against state `generation` (the one just loaded),
/// or nothing: intents of another generation are history (the state written after them records
/// what was done), and an unreadable record is treated as absent (it only ever saves work).
///
/// # Errors
/// I/O errors from the mirror.
pub async fn load_intents(mirror: &dyn Mirror, generation: u64) -> MirrorResult<Vec<Entry>> {
    if mirror.capabilities().atomic_commit {
        // A record an earlier layout left describes writes no commit kept.
        return Ok(Vec::new());
    }
    let Some(bytes) = mirror.read_state(INTENTS).await? else {
        return Ok(Vec::new());
    };
    if bytes.len() > MAX_STATE_BYTES + HEADER {
        return Ok(Vec::new());
    }
    match open(&bytes) {
        Ok((g, payload)) if g == generation && !payload.is_empty() => {
            let _ = crate::path::take_last_rejected();
            let decoded = postcard::from_bytes::<Vec<Entry>>(payload);
            let _ = crate::path::take_last_rejected();
            Ok(decoded.unwrap_or_default())
        }
        _ => Ok(Vec::new()),
    }
}

/// Empties the intent record once the state recording the writes is stored.
///
/// # Errors
/// Errors from the mirror's [`StateStore::commit_state`](crate::StateStore::commit_state).
pub async fn clear_intents(mirror: &dyn Mirror) -> MirrorResult<()> {
    if mirror.capabilities().atomic_commit {
        return Ok(());
    }
    mirror.write_state(INTENTS, &seal(0, &[])).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip() {
        let s = seal(7, b"hello");
        assert_eq!(open(&s).unwrap(), (7, &b"hello"[..]));
    }

    #[test]
    fn part_names() {
        for (name, ok) in [
            ("part.1.966b9232", true),
            ("part.18446744073709551615.0000abcd", true),
            ("part.8.\u{13}1c82fb4", false),
            ("part.1.966b923", false),
            ("part.1.966B9232", false),
            ("part..966b9232", false),
            ("part.1.966b9232/x", false),
            ("part./../state.0", false),
            ("state.0", false),
        ] {
            assert_eq!(is_part_name(name), ok, "{name:?}");
        }
    }

    #[test]
    fn damage_is_detected() {
        let s = seal(7, b"hello world");
        for i in 0..s.len() {
            let mut t = s.clone();
            t[i] ^= 0x40;
            assert!(open(&t).is_err(), "flip at {i} not detected");
        }
        assert!(open(&s[..s.len() - 1]).is_err());
        assert!(open(b"").is_err());
    }

    /// A part written from borrowed entries has the bytes of the owned [`Delta`] readers decode.
    #[test]
    fn delta_written_from_borrows_is_the_delta_read() {
        use crate::model::{ContentHash, EntryKind, Stamp, VersionVector};
        let mut st = MirrorState::new(FolderId(3), ReplicaId(4), "m");
        let osn = st.next_osn();
        let e = Entry {
            path: RelPath::new("d/f").expect("path"),
            kind: EntryKind::File,
            deleted: false,
            size: 3,
            mode: 0o644,
            mtime_ns: 7,
            hash: Some(ContentHash::of(b"abc")),
            symlink_target: None,
            chunks: vec![],
            version: VersionVector::single(ReplicaId(4), osn),
            stamp: Stamp {
                replica: ReplicaId(4),
                osn,
            },
            inode: 9,
            observed_mtime_ns: 7,
        };
        st.insert_entry(e.clone());
        let gone = RelPath::new("x").expect("path");
        let owned = Delta {
            folder_id: st.folder_id,
            replica_id: st.replica_id,
            osn: st.osn,
            knowledge: st.knowledge.clone(),
            replica_names: st.replica_names.clone(),
            upserts: vec![e.clone()],
            removed: vec![gone.clone()],
        };
        let borrowed = DeltaOut {
            folder_id: st.folder_id,
            replica_id: st.replica_id,
            osn: st.osn,
            knowledge: &st.knowledge,
            replica_names: &st.replica_names,
            upserts: vec![&e],
            removed: vec![&gone],
        };
        assert_eq!(
            postcard::to_stdvec(&owned).expect("encode"),
            postcard::to_stdvec(&borrowed).expect("encode")
        );
    }
}
