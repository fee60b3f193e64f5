//! The scanner: the truth about a local tree. Watcher events are only hints of where to look;
//! this module walks a tree (or a subtree), compares each path's stat data with what the journal
//! recorded (kind, size, mtime, inode, mode), and hashes only what changed — on all cores, blake3
//! for the content and FastCDC (v2020, Xia et al.) for the chunk list.
//!
//! It never writes: it returns [`Change`]s for the caller to journal in one batch.

pub mod ignore_rules;

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use briefcase_mirror::fsutil::{kind_of, mtime_ns};
use briefcase_mirror::{ChunkRef, ContentHash, Entry, EntryKind, RelPath, TMP_PREFIX};
use rayon::prelude::*;

pub use ignore_rules::IgnoreRules;

/// FastCDC minimum chunk size, bytes.
pub const CHUNK_MIN: u32 = 16 * 1024;
/// FastCDC average chunk size, bytes (DESIGN.md: ~64 KiB).
pub const CHUNK_AVG: u32 = 64 * 1024;
/// FastCDC maximum chunk size, bytes.
pub const CHUNK_MAX: u32 = 256 * 1024;

/// What the scanner found at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Path relative to the root.
    pub path: RelPath,
    /// File, dir or symlink.
    pub kind: EntryKind,
    /// Bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// mtime, ns since the epoch.
    pub mtime_ns: i64,
    /// Inode number.
    pub inode: u64,
    /// Link target of a symlink.
    pub symlink_target: Option<Vec<u8>>,
    /// blake3 of content (file) or target (symlink).
    pub hash: Option<ContentHash>,
    /// FastCDC chunks of a file.
    pub chunks: Vec<ChunkRef>,
}

/// A difference between the tree and the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The path is new or differs from its journal entry.
    Upsert(Observed),
    /// The journal has a live entry that is no longer on disk.
    Remove(RelPath),
}

impl Change {
    /// The path concerned.
    pub fn path(&self) -> &RelPath {
        match self {
            Change::Upsert(o) => &o.path,
            Change::Remove(p) => p,
        }
    }
}

/// A scan failure, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// Reading the tree failed.
    #[error("scanning {path}: {source}")]
    Io {
        /// The full path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The root itself is missing or not a directory (invariant 4: offline, not deleted).
    #[error("folder root {0} is missing or is not a directory; is the disk mounted? Nothing was changed")]
    RootMissing(PathBuf),
}

/// What the scanner needs of a journal entry: enough to tell from a stat whether the path still
/// holds what was recorded, and whether it is live. The journal reads only these columns for a
/// scan ([`crate::journal::Journal::known_under`]), not the hash, chunk list and version vector
/// of every path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// The path.
    pub path: RelPath,
    /// File, dir or symlink.
    pub kind: EntryKind,
    /// A tombstone.
    pub deleted: bool,
    /// Bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Local inode when recorded.
    pub inode: u64,
    /// Local mtime when recorded, ns.
    pub observed_mtime_ns: i64,
}

impl From<&Entry> for Known {
    fn from(e: &Entry) -> Known {
        Known {
            path: e.path.clone(),
            kind: e.kind,
            deleted: e.deleted,
            size: e.size,
            mode: e.mode,
            inode: e.inode,
            observed_mtime_ns: e.observed_mtime_ns,
        }
    }
}

impl Known {
    /// Whether the path (a live entry) still matches the stat data `m`, without hashing.
    pub fn matches(&self, m: &fs::Metadata) -> bool {
        same_stat(
            (self.kind, self.deleted, self.size, self.mode),
            (self.inode, self.observed_mtime_ns),
            m,
        )
    }
}

/// Whether `e` (a live journal entry) still matches the stat data `m`, without hashing.
pub fn stat_matches(e: &Entry, m: &fs::Metadata) -> bool {
    same_stat(
        (e.kind, e.deleted, e.size, e.mode),
        (e.inode, e.observed_mtime_ns),
        m,
    )
}

/// [`stat_matches`] on the fields it compares: kind, tombstone, size, mode; inode, observed mtime.
fn same_stat(
    (kind, deleted, size, mode): (EntryKind, bool, u64, u32),
    (inode, observed_mtime_ns): (u64, i64),
    m: &fs::Metadata,
) -> bool {
    let Some(now) = kind_of(m) else { return false };
    if deleted || kind != now {
        return false;
    }
    match now {
        EntryKind::Dir => true,
        EntryKind::Symlink => inode == m.ino() && observed_mtime_ns == mtime_ns(m),
        EntryKind::File => {
            size == m.len()
                && observed_mtime_ns == mtime_ns(m)
                && inode == m.ino()
                && mode == m.mode() & 0o7777
        }
    }
}

/// Scans `root` (or only the subtree `scope`) against `known` (journal entries of that scope, as
/// [`Known`]) and
/// returns the changes, parents before children for upserts.
///
/// # Errors
/// [`ScanError::RootMissing`] when the root is gone. A path that vanishes during the scan is
/// reported as removed or skipped; one that cannot be read (permissions, I/O errors) is logged
/// with what to check and kept as the journal had it (never taken for deleted), so one bad file
/// does not stop the folder.
pub fn scan(
    root: &Path,
    scope: Option<&RelPath>,
    known: &[Known],
    rules: &IgnoreRules,
) -> Result<Vec<Change>, ScanError> {
    scan_collecting(root, scope, known, rules, &mut Vec::new())
}

/// What a walk of a whole tree found ([`scan_tree`]).
#[derive(Debug, Default)]
pub struct Walked {
    /// The differences with the journal, as [`scan`] returns them.
    pub changes: Vec<Change>,
    /// The `.briefcase-tmp-*` files (or directories) an interrupted write left, which the walk
    /// skipped: garbage for the caller to remove (invariant 2), without a walk of its own.
    pub leftovers: Vec<RelPath>,
}

/// [`scan`] of the whole tree, also naming the temp files it came across.
///
/// # Errors
/// As [`scan`].
pub fn scan_tree(root: &Path, known: &[Known], rules: &IgnoreRules) -> Result<Walked, ScanError> {
    let mut leftovers = Vec::new();
    let changes = scan_collecting(root, None, known, rules, &mut leftovers)?;
    Ok(Walked { changes, leftovers })
}

fn scan_collecting(
    root: &Path,
    scope: Option<&RelPath>,
    known: &[Known],
    rules: &IgnoreRules,
    leftovers: &mut Vec<RelPath>,
) -> Result<Vec<Change>, ScanError> {
    match fs::symlink_metadata(root) {
        Ok(m) if m.is_dir() => {}
        _ => return Err(ScanError::RootMissing(root.to_path_buf())),
    }
    let known: BTreeMap<&RelPath, &Known> = known.iter().map(|e| (&e.path, e)).collect();
    let mut seen: HashSet<RelPath> = HashSet::new();
    let mut to_hash: Vec<(RelPath, fs::Metadata)> = Vec::new();
    let mut changes = Vec::new();

    let start = match scope {
        Some(s) => s.under(root),
        None => root.to_path_buf(),
    };
    let walk_from_scope = match scope {
        Some(s) => match fs::symlink_metadata(&start) {
            Ok(m) => {
                if rules.is_ignored(s, m.is_dir())
                    || s.ancestors().iter().any(|a| rules.is_ignored(a, true))
                {
                    return Ok(Vec::new());
                }
                visit(s.clone(), m, &known, &mut seen, &mut to_hash)?;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => {
                return Err(ScanError::Io {
                    path: start.clone(),
                    source: e,
                })
            }
        },
        None => true,
    };
    if walk_from_scope
        && fs::symlink_metadata(&start)
            .map(|m| m.is_dir())
            .unwrap_or(false)
    {
        let mut found = Found {
            known: &known,
            seen: &mut seen,
            to_hash: &mut to_hash,
            leftovers,
        };
        walk(root, &start, scope, rules, &mut found)?;
    }

    // Hash what changed, on all cores; a file that changes while hashed is retried.
    let hashed: Vec<Result<Option<Observed>, ScanError>> = to_hash
        .into_par_iter()
        .map(|(rel, m)| observe(root, rel, m))
        .collect();
    for h in hashed {
        match h {
            Ok(Some(o)) => changes.push(Change::Upsert(o)),
            Ok(None) => {}
            // One unreadable file must not stop the folder: it keeps its journal entry (it was
            // seen, so it is not taken for deleted) and is retried at the next scan.
            Err(ScanError::Io { path, source }) => {
                tracing::warn!(path = %path.display(), error = %source, "cannot read this file; it is not synced until it is readable (check its permissions)");
            }
            Err(e) => return Err(e),
        }
    }
    changes.sort_by(|a, b| a.path().cmp(b.path()));

    for (path, e) in &known {
        if !e.deleted && !seen.contains(*path) && !rules.is_ignored(path, e.kind == EntryKind::Dir)
        {
            changes.push(Change::Remove((*path).clone()));
        }
    }
    Ok(changes)
}

fn visit(
    rel: RelPath,
    m: fs::Metadata,
    known: &BTreeMap<&RelPath, &Known>,
    seen: &mut HashSet<RelPath>,
    to_hash: &mut Vec<(RelPath, fs::Metadata)>,
) -> Result<(), ScanError> {
    if kind_of(&m).is_none() {
        return Ok(()); // sockets, fifos, devices: never synced
    }
    let unchanged = known.get(&rel).is_some_and(|e| e.matches(&m));
    seen.insert(rel.clone());
    if !unchanged {
        to_hash.push((rel, m));
    }
    Ok(())
}

/// What a walk collects as it goes.
struct Found<'a, 'k> {
    /// The journal's entries of the walked scope.
    known: &'a BTreeMap<&'k RelPath, &'k Known>,
    /// Every path seen (the others are gone).
    seen: &'a mut HashSet<RelPath>,
    /// Paths whose stat differs from their entry.
    to_hash: &'a mut Vec<(RelPath, fs::Metadata)>,
    /// Temp files left by an interrupted write.
    leftovers: &'a mut Vec<RelPath>,
}

fn walk(
    root: &Path,
    start: &Path,
    scope: Option<&RelPath>,
    rules: &IgnoreRules,
    found: &mut Found<'_, '_>,
) -> Result<(), ScanError> {
    let known = found.known;
    // Each directory with its path relative to the root (`None`: the root): a child's path is
    // its directory's joined with its name, and it is stat'ed through the directory's open
    // handle (`fstatat`), not by walking its whole path again.
    let mut stack = vec![(start.to_path_buf(), scope.cloned())];
    while let Some((dir, dir_rel)) = stack.pop() {
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                // Unreadable (permissions, I/O error): skip it, and keep what the journal knows
                // below it, so nothing there is taken for deleted.
                tracing::warn!(path = %dir.display(), error = %e, "cannot list this directory; its contents are kept as they were and not synced until it is readable (check its permissions)");
                keep_known_below(root, &dir, known, found.seen);
                continue;
            }
        };
        for de in rd {
            let de = match de {
                Ok(de) => de,
                Err(e) => {
                    tracing::warn!(path = %dir.display(), error = %e, "listing this directory failed midway; its contents are kept as they were");
                    keep_known_below(root, &dir, known, found.seen);
                    break;
                }
            };
            let name = de.file_name();
            let rel = match &dir_rel {
                None => RelPath::new(name.as_encoded_bytes()),
                Some(d) => d.join(name.as_encoded_bytes()),
            };
            let Ok(rel) = rel else {
                tracing::warn!(path = %de.path().display(), "name cannot be synced (too long or invalid); skipped");
                continue;
            };
            if rel.is_reserved() {
                if name.as_encoded_bytes().starts_with(TMP_PREFIX.as_bytes()) {
                    found.leftovers.push(rel);
                }
                continue;
            }
            let m = match de.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    let full = de.path();
                    tracing::warn!(path = %full.display(), error = %e, "cannot stat this path; it is kept as it was and not synced until readable");
                    keep_known_below(root, &full, known, found.seen);
                    continue;
                }
            };
            // Its directory was not ignored (or the walk would not be here): only the rules
            // matching the path itself are left to ask.
            if rules.is_ignored_itself(&rel, m.is_dir()) {
                continue;
            }
            let is_dir = m.is_dir();
            if is_dir {
                stack.push((de.path(), Some(rel.clone())));
            }
            visit(rel, m, known, found.seen, found.to_hash)?;
        }
    }
    Ok(())
}

/// Marks `full` and every journal entry below it as seen (kept): used when a path cannot be
/// read, so that a permission problem never reads as a deletion.
fn keep_known_below(
    root: &Path,
    full: &Path,
    known: &BTreeMap<&RelPath, &Known>,
    seen: &mut HashSet<RelPath>,
) {
    let Ok(rel) = full
        .strip_prefix(root)
        .map_err(|_| ())
        .and_then(|r| RelPath::from_path(r).map_err(|_| ()))
    else {
        return;
    };
    for p in known.keys() {
        if p.starts_with(&rel) {
            seen.insert((*p).clone());
        }
    }
}

/// Hashes one path into an [`Observed`]; `Ok(None)` when it vanished meanwhile.
fn observe(root: &Path, rel: RelPath, mut m: fs::Metadata) -> Result<Option<Observed>, ScanError> {
    let full = rel.under(root);
    for _attempt in 0..5 {
        let Some(kind) = kind_of(&m) else {
            return Ok(None);
        };
        let io_err = |e: io::Error| ScanError::Io {
            path: full.clone(),
            source: e,
        };
        let (hash, chunks, target) = match kind {
            EntryKind::Dir => (None, Vec::new(), None),
            EntryKind::Symlink => match fs::read_link(&full) {
                Ok(t) => {
                    let t = t.into_os_string().into_encoded_bytes();
                    (Some(ContentHash::of(&t)), Vec::new(), Some(t))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_err(e)),
            },
            EntryKind::File => match hash_file(&full) {
                Ok((h, c)) => (Some(h), c, None),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_err(e)),
            },
        };
        let after = match fs::symlink_metadata(&full) {
            Ok(a) => a,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(e)),
        };
        let stable =
            after.len() == m.len() && mtime_ns(&after) == mtime_ns(&m) && after.ino() == m.ino();
        if stable || kind == EntryKind::Dir {
            return Ok(Some(Observed {
                path: rel,
                kind,
                size: if kind == EntryKind::File { m.len() } else { 0 },
                mode: m.mode() & 0o7777,
                mtime_ns: mtime_ns(&m),
                inode: m.ino(),
                symlink_target: target,
                hash,
                chunks,
            }));
        }
        m = after; // changed while we read it: read again
    }
    tracing::warn!(path = %full.display(), "file keeps changing while being read; will retry on the next scan");
    Ok(None)
}

/// blake3 of the whole file and its FastCDC chunk list, in one pass.
///
/// # Errors
/// I/O errors.
pub fn hash_file(path: &Path) -> io::Result<(ContentHash, Vec<ChunkRef>)> {
    let mut f = File::open(path)?;
    // A file of at most CHUNK_MIN bytes is one chunk (FastCDC never cuts below its minimum),
    // whose hash is the file's: one read and one hash, without FastCDC's 256 KiB buffer (most
    // files of a source tree are this small).
    if f.metadata()?.len() <= u64::from(CHUNK_MIN) {
        let mut data = Vec::with_capacity(CHUNK_MIN as usize + 1);
        (&mut f)
            .take(u64::from(CHUNK_MIN) + 1)
            .read_to_end(&mut data)?;
        if data.len() <= CHUNK_MIN as usize {
            return Ok(hash_small(&data));
        }
        // Grew meanwhile: what was read, then the rest.
        return hash_reader(io::Cursor::new(data).chain(f));
    }
    hash_reader(f)
}

/// [`hash_reader`] of content that fits in one chunk (at most [`CHUNK_MIN`] bytes).
fn hash_small(data: &[u8]) -> (ContentHash, Vec<ChunkRef>) {
    let hash = ContentHash::of(data);
    let chunks = if data.is_empty() {
        Vec::new()
    } else {
        vec![ChunkRef {
            hash,
            len: data.len() as u32,
        }]
    };
    (hash, chunks)
}

/// As [`hash_file`] for any reader.
///
/// # Errors
/// I/O errors.
pub fn hash_reader(r: impl Read) -> io::Result<(ContentHash, Vec<ChunkRef>)> {
    let mut whole = blake3::Hasher::new();
    let mut chunks = Vec::new();
    let cdc = fastcdc::v2020::StreamCDC::new(
        r,
        CHUNK_MIN as usize,
        CHUNK_AVG as usize,
        CHUNK_MAX as usize,
    );
    for c in cdc {
        let c = c.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(e) => e,
            other => io::Error::other(other.to_string()),
        })?;
        whole.update(&c.data);
        chunks.push(ChunkRef {
            hash: ContentHash::of(&c.data),
            len: c.length as u32,
        });
    }
    Ok((ContentHash(*whole.finalize().as_bytes()), chunks))
}

#[cfg(test)]
mod tests;
