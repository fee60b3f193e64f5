//! Crash-safe storage of a [`MirrorState`] through any [`Mirror`]: two generations
//! (`state.0`, `state.1`), each an envelope with a magic, a generation number, the payload length
//! and a blake3 checksum. The writer overwrites the older generation; the reader takes the newest
//! valid one, so a mirror yanked at any instant leaves the last complete generation readable
//! (DESIGN.md, "Mirror state is written crash-safely").
//!
//! Envelope: `b"BCSTATE1"` (8) | generation u64 LE (8) | payload length u64 LE (8) |
//! blake3(generation ‖ payload) (32) | payload (postcard-encoded `MirrorState`).

use crate::error::{MirrorError, MirrorResult};
use crate::model::{Entry, MirrorState};
use crate::Mirror;

const MAGIC: &[u8; 8] = b"BCSTATE1";
const HEADER: usize = 8 + 8 + 8 + 32;
/// Largest state accepted, in bytes (256 MiB: ~1 million entries). Larger is refused as corrupt.
pub const MAX_STATE_BYTES: usize = 256 << 20;
/// The two generation slots, in `.briefcase/`.
pub const SLOTS: [&str; 2] = ["state.0", "state.1"];

/// Wraps `payload` in the envelope for `generation`.
pub fn seal(generation: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(checksum(generation, payload).as_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks an envelope and returns `(generation, payload)`.
///
/// # Errors
/// A human-readable reason when the magic, length or checksum is wrong.
pub fn open(bytes: &[u8]) -> Result<(u64, &[u8]), String> {
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err("not a briefcase state file (bad magic or too short)".into());
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
    Ok((generation, payload))
}

fn checksum(generation: u64, payload: &[u8]) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(&generation.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// A state as loaded: which generation it was.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The generation number read.
    pub generation: u64,
    /// The envelope's checksum: with `generation`, identifies exactly what was read (two
    /// machines writing the same generation number still differ here).
    pub checksum: [u8; 32],
    /// The state.
    pub state: MirrorState,
}

/// Reads the newest valid generation. `Ok(None)` when neither slot exists (a new mirror).
///
/// # Errors
/// [`MirrorError::Corrupt`] when slots exist but none is valid (naming both reasons);
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
/// when the newest valid generation has the `known` (generation, checksum), it is not decoded
/// again, so an unchanged state costs a read and a checksum, not a decode of every entry. Only
/// the newest valid envelope is decoded (the older one only if that fails).
///
/// # Errors
/// As [`load`].
pub async fn load_unless(
    mirror: &dyn Mirror,
    known: Option<(u64, [u8; 32])>,
) -> MirrorResult<Reload> {
    let mut valid: Vec<(u64, [u8; 32], Vec<u8>, &str)> = Vec::new();
    let mut problems = Vec::new();
    let mut seen = 0;
    for slot in SLOTS {
        let Some(bytes) = mirror.read_meta(slot).await? else {
            continue;
        };
        seen += 1;
        if bytes.len() > MAX_STATE_BYTES + HEADER {
            problems.push(format!("{slot}: larger than {MAX_STATE_BYTES} bytes"));
            continue;
        }
        match open(&bytes) {
            Ok((generation, _)) => {
                let mut sum = [0u8; 32];
                sum.copy_from_slice(&bytes[24..56]);
                valid.push((generation, sum, bytes, slot));
            }
            Err(e) => problems.push(format!("{slot}: {e}")),
        }
    }
    valid.sort_by_key(|v| std::cmp::Reverse(v.0));
    for (generation, checksum, bytes, slot) in valid {
        if known == Some((generation, checksum)) {
            return Ok(Reload::Unchanged);
        }
        let payload = &bytes[HEADER..];
        let _ = crate::path::take_last_rejected();
        match postcard::from_bytes::<MirrorState>(payload) {
            Ok(state) => {
                return Ok(Reload::Loaded(Loaded {
                    generation,
                    checksum,
                    state,
                }))
            }
            Err(e) => match crate::path::take_last_rejected() {
                Some((path, why)) => {
                    return Err(MirrorError::InvalidPath {
                        location: mirror.location(),
                        path,
                        source: why,
                    })
                }
                None => problems.push(format!("{slot}: undecodable ({e})")),
            },
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

/// Writes `state` as generation `previous + 1` into the slot the previous generation does not
/// occupy, and returns the new generation. Write chunks and content before calling this.
///
/// # Errors
/// Errors from the mirror's [`Mirror::write_meta`].
pub async fn store(mirror: &dyn Mirror, previous: u64, state: &MirrorState) -> MirrorResult<u64> {
    store_tracked(mirror, previous, state).await.map(|(g, _)| g)
}

/// [`store`], also returning the new envelope's checksum (for [`load_unless`]).
///
/// # Errors
/// As [`store`].
pub async fn store_tracked(
    mirror: &dyn Mirror,
    previous: u64,
    state: &MirrorState,
) -> MirrorResult<(u64, [u8; 32])> {
    let generation = previous + 1;
    let payload = postcard::to_stdvec(state).map_err(|e| MirrorError::Corrupt {
        location: mirror.location(),
        what: "state".into(),
        reason: format!("cannot encode: {e}"),
    })?;
    let slot = SLOTS[(generation % 2) as usize];
    let sealed = seal(generation, &payload);
    let mut sum = [0u8; 32];
    sum.copy_from_slice(&sealed[24..56]);
    mirror.write_meta(slot, &sealed).await?;
    Ok((generation, sum))
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
/// # Errors
/// Errors from the mirror's [`Mirror::write_meta`].
pub async fn store_intents(
    mirror: &dyn Mirror,
    generation: u64,
    entries: &[Entry],
) -> MirrorResult<()> {
    let payload = postcard::to_stdvec(entries).map_err(|e| MirrorError::Corrupt {
        location: mirror.location(),
        what: INTENTS.to_string(),
        reason: format!("cannot encode: {e}"),
    })?;
    mirror
        .write_meta(INTENTS, &seal(generation, &payload))
        .await
}

/// The intents recorded by [`store_intents`] against state `generation` (the one just loaded),
/// or nothing: intents of another generation are history (the state written after them records
/// what was done), and an unreadable record is treated as absent (it only ever saves work).
///
/// # Errors
/// I/O errors from the mirror.
pub async fn load_intents(mirror: &dyn Mirror, generation: u64) -> MirrorResult<Vec<Entry>> {
    let Some(bytes) = mirror.read_meta(INTENTS).await? else {
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
/// Errors from the mirror's [`Mirror::write_meta`].
pub async fn clear_intents(mirror: &dyn Mirror) -> MirrorResult<()> {
    mirror.write_meta(INTENTS, &seal(0, &[])).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip() {
        let s = seal(7, b"hello");
        assert_eq!(open(&s).unwrap(), (7, &b"hello"[..]));
    }

    #[cfg(feature = "testkit")]
    #[tokio::test]
    async fn intents_hold_only_for_their_generation() {
        use crate::memory::MemoryMirror;
        use crate::model::{EntryKind, Osn, ReplicaId, Stamp, VersionVector};
        use crate::path::RelPath;
        let m = MemoryMirror::new("m");
        m.init(crate::FolderId(7)).await.unwrap();
        assert!(load_intents(&m, 3).await.unwrap().is_empty(), "none yet");
        let mut version = VersionVector::new();
        version.set(ReplicaId(1), Osn(9));
        let e = Entry {
            path: RelPath::try_from("d/f").unwrap(),
            kind: EntryKind::File,
            deleted: false,
            size: 1,
            mode: 0o644,
            mtime_ns: 5,
            hash: Some(crate::ContentHash::of(b"x")),
            symlink_target: None,
            chunks: vec![],
            version,
            stamp: Stamp {
                replica: ReplicaId(1),
                osn: Osn(9),
            },
            inode: 0,
            observed_mtime_ns: 5,
        };
        store_intents(&m, 3, std::slice::from_ref(&e))
            .await
            .unwrap();
        assert_eq!(load_intents(&m, 3).await.unwrap(), vec![e]);
        assert!(
            load_intents(&m, 4).await.unwrap().is_empty(),
            "state stored since"
        );
        clear_intents(&m).await.unwrap();
        assert!(load_intents(&m, 3).await.unwrap().is_empty());
        m.write_meta(INTENTS, b"garbage").await.unwrap();
        assert!(load_intents(&m, 3).await.unwrap().is_empty());
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
}
