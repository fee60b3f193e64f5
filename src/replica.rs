//! The local replica: a folder root on this machine, its marker, its journal and its ignore
//! rules. Turns scanner findings into journal changes (one transaction per batch) and keeps
//! invariant 4 on the local side: without the marker `.briefcase-folder` at the root, the folder
//! is offline and nothing is recorded as deleted.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use briefcase_mirror::beneath::Beneath;
use briefcase_mirror::{Entry, FolderId, RelPath, ReplicaId, Stamp};

use crate::journal::{Journal, JournalError};
use crate::scan::{self, Change, IgnoreRules, Known, Observed, ScanError, Walked};

/// Name of the marker file at a local folder root.
pub const MARKER: &str = ".briefcase-folder";

/// What the marker at a local root says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// The folder.
    pub folder_id: FolderId,
    /// This local replica.
    pub replica_id: ReplicaId,
}

/// Errors of the local replica.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The root or its marker is missing: offline, nothing is deleted (invariant 4).
    #[error("folder {0} is offline: its marker .briefcase-folder is missing (is the disk mounted?); nothing was changed. If this is a new folder, run `briefcase init {0}`")]
    Offline(PathBuf),
    /// The marker exists but cannot be read.
    #[error("folder {path}: the marker .briefcase-folder is damaged ({reason}); restore it from a mirror's .briefcase/folder-id or run `briefcase init --rebuild {path}`")]
    BadMarker {
        /// The folder root.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Already initialised.
    #[error("folder {0} is already a briefcase folder")]
    AlreadyInitialised(PathBuf),
    /// Journal failure.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Scanner failure.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// Other I/O on the folder.
    #[error("folder {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Result for the local replica.
pub type ReplicaResult<T> = Result<T, ReplicaError>;

/// What a batch of recorded changes amounted to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// New paths.
    pub created: usize,
    /// Changed paths.
    pub modified: usize,
    /// Deleted paths.
    pub deleted: usize,
    /// Of those, pairs recognised as renames (same inode and content).
    pub renamed: usize,
}

impl Recorded {
    /// Total journaled changes.
    pub fn total(&self) -> usize {
        self.created + self.modified + self.deleted
    }
}

/// A local folder with its journal.
#[derive(Debug)]
pub struct LocalReplica {
    /// The folder root (absolute).
    pub root: PathBuf,
    /// The journal.
    pub journal: Journal,
    /// Ignore rules (defaults + `.briefcaseignore`).
    pub rules: IgnoreRules,
}

/// Journal file of a replica under a data dir.
pub fn journal_path(data_dir: &Path, replica: ReplicaId) -> PathBuf {
    data_dir.join("replicas").join(format!("{replica}.sqlite"))
}

/// Reads the marker of a local root.
///
/// # Errors
/// [`ReplicaError::Offline`] when missing; [`ReplicaError::BadMarker`] when unreadable.
pub fn read_marker(root: &Path) -> ReplicaResult<Marker> {
    let text = match fs::read_to_string(root.join(MARKER)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ReplicaError::Offline(root.to_path_buf()))
        }
        Err(e) => {
            return Err(ReplicaError::BadMarker {
                path: root.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    let mut folder = None;
    let mut replica = None;
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "folder" => folder = v.trim().parse::<FolderId>().ok(),
                "replica" => replica = v.trim().parse::<ReplicaId>().ok(),
                _ => {}
            }
        }
    }
    match (folder, replica) {
        (Some(folder_id), Some(replica_id)) => Ok(Marker {
            folder_id,
            replica_id,
        }),
        _ => Err(ReplicaError::BadMarker {
            path: root.to_path_buf(),
            reason: "expected lines `folder = HEX` and `replica = HEX`".into(),
        }),
    }
}

fn write_marker(root: &Path, m: Marker) -> ReplicaResult<()> {
    let text = format!(
        "# briefcase folder marker: do not edit. Its absence means \"offline\", never \"deleted\".\nfolder = {}\nreplica = {}\n",
        m.folder_id, m.replica_id
    );
    briefcase_mirror::fsutil::replace_bytes(&root.join(MARKER), text.as_bytes())
        .map(|_| ())
        .map_err(|source| ReplicaError::Io {
            path: root.join(MARKER),
            source,
        })
}

/// A new random ID.
pub fn random_u64() -> u64 {
    rand::random::<u64>()
}

impl LocalReplica {
    /// Makes `root` a new folder (new folder ID) or, with `folder`, a new replica of an existing
    /// folder (clone). Creates the root, the marker and the journal; does not scan.
    ///
    /// # Errors
    /// [`ReplicaError::AlreadyInitialised`]; I/O and journal errors.
    pub fn init(
        root: &Path,
        data_dir: &Path,
        name: &str,
        folder: Option<FolderId>,
    ) -> ReplicaResult<LocalReplica> {
        fs::create_dir_all(root).map_err(|source| ReplicaError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        let root = root.canonicalize().map_err(|source| ReplicaError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        if root.join(MARKER).exists() {
            return Err(ReplicaError::AlreadyInitialised(root));
        }
        let marker = Marker {
            folder_id: folder
                .unwrap_or_else(|| FolderId(((random_u64() as u128) << 64) | random_u64() as u128)),
            replica_id: ReplicaId(random_u64()),
        };
        let journal = Journal::create(
            &journal_path(data_dir, marker.replica_id),
            marker.folder_id,
            marker.replica_id,
            name,
        )?;
        write_marker(&root, marker)?;
        let rules = IgnoreRules::load(&root);
        Ok(LocalReplica {
            root,
            journal,
            rules,
        })
    }

    /// Rebuilds the journal of an initialised folder from its tree, keeping the replica ID of its
    /// marker. The old journal is moved aside as `*.damaged-TIMESTAMP`.
    ///
    /// # Errors
    /// Marker, I/O and journal errors.
    pub fn rebuild(root: &Path, data_dir: &Path, name: &str) -> ReplicaResult<LocalReplica> {
        let root = root
            .canonicalize()
            .map_err(|_| ReplicaError::Offline(root.to_path_buf()))?;
        let marker = read_marker(&root)?;
        let jp = journal_path(data_dir, marker.replica_id);
        if jp.exists() {
            let aside = jp.with_extension(format!("damaged-{}", crate::journal::now_ns()));
            fs::rename(&jp, &aside).map_err(|source| ReplicaError::Io {
                path: jp.clone(),
                source,
            })?;
            for ext in ["sqlite-wal", "sqlite-shm"] {
                let _ = fs::remove_file(jp.with_extension(ext));
            }
        }
        let journal = Journal::create(&jp, marker.folder_id, marker.replica_id, name)?;
        let rules = IgnoreRules::load(&root);
        Ok(LocalReplica {
            root,
            journal,
            rules,
        })
    }

    /// Opens an initialised folder.
    ///
    /// # Errors
    /// [`ReplicaError::Offline`] without root or marker; journal errors.
    pub fn open(root: &Path, data_dir: &Path) -> ReplicaResult<LocalReplica> {
        let root = root
            .canonicalize()
            .map_err(|_| ReplicaError::Offline(root.to_path_buf()))?;
        let marker = read_marker(&root)?;
        let journal = Journal::open(&journal_path(data_dir, marker.replica_id))?;
        if journal.folder_id() != marker.folder_id {
            return Err(ReplicaError::BadMarker {
                path: root,
                reason: format!(
                    "marker says folder {} but the journal is of folder {}",
                    marker.folder_id,
                    journal.folder_id()
                ),
            });
        }
        let rules = IgnoreRules::load(&root);
        Ok(LocalReplica {
            root,
            journal,
            rules,
        })
    }

    /// Checks the marker is still there (invariant 4) before anything is recorded as deleted.
    ///
    /// # Errors
    /// [`ReplicaError::Offline`].
    pub fn ensure_online(&self) -> ReplicaResult<()> {
        match read_marker(&self.root) {
            Ok(m) if m.replica_id == self.journal.replica_id() => Ok(()),
            Ok(_) => Err(ReplicaError::BadMarker {
                path: self.root.clone(),
                reason: "marker belongs to another replica".into(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Rescans the whole tree (`None`) or the given subtrees, and journals the differences in one
    /// transaction. A whole-tree rescan also removes the temp files an interrupted write left
    /// ([`LocalReplica::finish_rescan`]).
    ///
    /// # Errors
    /// Offline, scan and journal errors; nothing is recorded then.
    pub fn rescan(&mut self, scopes: Option<&[RelPath]>) -> ReplicaResult<Recorded> {
        let how = match scopes {
            None => Seen::FoundByScan,
            Some(_) => Seen::Watched,
        };
        self.rescan_as(scopes, how)
    }

    /// [`LocalReplica::rescan`], saying how the changes came to light: a rescan for the live
    /// watcher's hint (also a whole-tree one after lost events) is [`Seen::Watched`]; the
    /// mass-deletion guard weighs only deletions [`Seen::FoundByScan`] (invariant 7).
    ///
    /// # Errors
    /// As [`LocalReplica::rescan`].
    pub fn rescan_as(&mut self, scopes: Option<&[RelPath]>, how: Seen) -> ReplicaResult<Recorded> {
        let Some(scopes) = scopes else {
            let walk = self.begin_rescan()?;
            return self.finish_rescan(walk.run(), how);
        };
        self.ensure_online()?;
        let mut changes = Vec::new();
        for s in minimal_scopes(scopes) {
            let known = self.journal.known_under(Some(&s))?;
            changes.extend(scan::scan(&self.root, Some(&s), &known, &self.rules)?);
        }
        // Re-check the marker: a root unmounted during the scan must not turn into deletions.
        self.ensure_online()?;
        self.record_as(changes, how)
    }

    /// The first half of a whole-tree rescan, for a caller that does other work while the tree
    /// is walked (a one-shot sync lists the mirror meanwhile): checks the marker and takes what
    /// the journal knows. Walk with [`TreeWalk::run`] on any thread, then journal what it found
    /// with [`LocalReplica::finish_rescan`]; nothing else may write the journal in between.
    ///
    /// # Errors
    /// Offline and journal errors.
    pub fn begin_rescan(&self) -> ReplicaResult<TreeWalk> {
        self.ensure_online()?;
        Ok(TreeWalk {
            root: self.root.clone(),
            known: self.journal.known_under(None)?,
            rules: self.rules.clone(),
        })
    }

    /// The second half of a whole-tree rescan ([`LocalReplica::begin_rescan`]): re-checks the
    /// marker (a root unmounted during the walk must not turn into deletions, invariant 4),
    /// removes the temp files of an interrupted write that the walk came across (so that a
    /// one-shot sync needs no walk of its own for them), and journals the changes in one
    /// transaction.
    ///
    /// # Errors
    /// The walk's error; offline and journal errors. Nothing is recorded then.
    pub fn finish_rescan(
        &mut self,
        walked: Result<Walked, ScanError>,
        how: Seen,
    ) -> ReplicaResult<Recorded> {
        let walked = walked?;
        self.ensure_online()?;
        self.remove_leftovers(&walked.leftovers);
        self.record_as(walked.changes, how)
    }

    /// Removes the temp files (`.briefcase-tmp-*`) of an interrupted write that a walk came
    /// across (invariant 2: they are garbage; nothing of this process is being written while it
    /// rescans). Each is reached beneath the root without following symlinks. Best effort: one
    /// that cannot be removed is logged and tried again at the next rescan.
    fn remove_leftovers(&self, paths: &[RelPath]) {
        if paths.is_empty() {
            return;
        }
        let b = match Beneath::open(&self.root) {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(folder = %self.root.display(), error = %e, "cannot open the folder to remove leftover temp files");
                return;
            }
        };
        let mut removed = 0;
        for p in paths {
            let r = b.resolve(p).map_err(io::Error::other).and_then(|a| {
                match fs::symlink_metadata(a.path()) {
                    // `remove_dir_all` does not follow symlinks inside what it removes.
                    Ok(m) if m.is_dir() => fs::remove_dir_all(a.path()),
                    Ok(_) => fs::remove_file(a.path()),
                    Err(e) => Err(e),
                }
            });
            match r {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %p, error = %e, "cannot remove a leftover temp file; it is tried again at the next scan");
                }
            }
        }
        if removed > 0 {
            tracing::info!(folder = %self.root.display(), count = removed, "removed leftover temp files of an interrupted sync");
        }
    }

    /// Journals scanner findings in one transaction: new OSNs, version vectors bumped from the
    /// previous entry (tombstones included), renames recognised by inode and content.
    ///
    /// # Errors
    /// Journal errors; nothing is recorded then.
    pub fn record(&mut self, changes: Vec<Change>) -> ReplicaResult<Recorded> {
        self.record_as(changes, Seen::Watched)
    }

    /// [`LocalReplica::record`], marking the deletions a full scan found as such.
    ///
    /// # Errors
    /// Journal errors; nothing is recorded then.
    pub fn record_as(&mut self, changes: Vec<Change>, how: Seen) -> ReplicaResult<Recorded> {
        let mut out = Recorded::default();
        if changes.is_empty() {
            return Ok(out);
        }
        let mut batch = self.journal.begin()?;
        // Removed entries by (inode, hash) to recognise renames.
        let mut removed: HashMap<(u64, Option<briefcase_mirror::ContentHash>), RelPath> =
            HashMap::new();
        for c in &changes {
            if let Change::Remove(p) = c {
                if let Some(e) = batch.entry(p)? {
                    removed.insert((e.inode, e.hash), p.clone());
                }
            }
        }
        for c in changes {
            match c {
                Change::Upsert(o) => {
                    let old = batch.entry(&o.path)?;
                    if let Some(old) = &old {
                        if !old.deleted && same_as(old, &o) {
                            // Only local stat data moved (e.g. identical atomic save): refresh it.
                            let mut e = old.clone();
                            e.inode = o.inode;
                            e.observed_mtime_ns = o.mtime_ns;
                            batch.put(&e)?;
                            continue;
                        }
                    }
                    let stamp = batch.next_osn();
                    let mut version = old.as_ref().map(|e| e.version.clone()).unwrap_or_default();
                    version.set(stamp.replica, stamp.osn);
                    let entry = entry_from(o, version, stamp);
                    let (op, detail) = match (&old, removed.get(&(entry.inode, entry.hash))) {
                        (_, Some(from)) if entry.inode != 0 => {
                            out.renamed += 1;
                            ("rename", Some(format!("from {from}")))
                        }
                        (Some(old), _) if !old.deleted => ("modify", None),
                        _ => ("create", None),
                    };
                    if op == "modify" {
                        out.modified += 1
                    } else {
                        out.created += 1
                    }
                    batch.put(&entry)?;
                    batch.log(stamp, op, &entry.path, detail.as_deref())?;
                }
                Change::Remove(p) => {
                    let Some(old) = batch.entry(&p)? else {
                        continue;
                    };
                    if old.deleted {
                        continue;
                    }
                    let stamp = batch.next_osn();
                    let mut tomb = old.clone();
                    tomb.deleted = true;
                    tomb.size = 0;
                    tomb.hash = None;
                    tomb.chunks.clear();
                    tomb.symlink_target = None;
                    tomb.inode = 0;
                    tomb.version.set(stamp.replica, stamp.osn);
                    tomb.stamp = stamp;
                    batch.put(&tomb)?;
                    if how == Seen::FoundByScan {
                        batch.mark_found_by_scan(&p)?;
                    }
                    batch.log(stamp, "delete", &p, None)?;
                    out.deleted += 1;
                }
            }
        }
        batch.commit()?;
        Ok(out)
    }
}

/// A walk of a whole local tree, detached from its [`LocalReplica`] so that it can run on
/// another thread ([`LocalReplica::begin_rescan`]): the root, the ignore rules, and the journal's
/// entries when it began. It only reads the tree.
#[derive(Debug)]
pub struct TreeWalk {
    root: PathBuf,
    known: Vec<Known>,
    rules: IgnoreRules,
}

impl TreeWalk {
    /// Walks the tree against the entries (stat first, hash only what changed;
    /// [`scan::scan_tree`]).
    ///
    /// # Errors
    /// As [`scan::scan`].
    pub fn run(self) -> Result<Walked, ScanError> {
        scan::scan_tree(&self.root, &self.known, &self.rules)
    }
}

/// How changes came to light, for the mass-deletion guard (invariant 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The watcher reported them while the folder was present: work the user is doing now
    /// (`git gc`, `rm -rf target/`, a branch switch).
    Watched,
    /// A full scan found them (at start after downtime, the periodic rescan, a one-shot `sync`):
    /// they may mean an unmounted disk or a wiped folder.
    FoundByScan,
}

/// Whether an observation has the same content and carried metadata as a live entry.
fn same_as(e: &Entry, o: &Observed) -> bool {
    e.kind == o.kind
        && e.size == o.size
        && e.hash == o.hash
        && e.symlink_target == o.symlink_target
        && (e.kind != briefcase_mirror::EntryKind::File
            || (e.mode == o.mode && e.mtime_ns == o.mtime_ns))
}

/// Builds a journal entry from an observation.
pub fn entry_from(o: Observed, version: briefcase_mirror::VersionVector, stamp: Stamp) -> Entry {
    Entry {
        path: o.path,
        kind: o.kind,
        deleted: false,
        size: o.size,
        mode: o.mode,
        mtime_ns: o.mtime_ns,
        hash: o.hash,
        symlink_target: o.symlink_target,
        chunks: o.chunks,
        version,
        stamp,
        inode: o.inode,
        observed_mtime_ns: o.mtime_ns,
    }
}

/// Drops scopes that lie inside another scope of the list.
pub fn minimal_scopes(scopes: &[RelPath]) -> Vec<RelPath> {
    let mut v: Vec<RelPath> = scopes.to_vec();
    v.sort();
    v.dedup();
    let mut out: Vec<RelPath> = Vec::new();
    for s in v {
        if !out.iter().any(|o| s.starts_with(o)) {
            out.push(s);
        }
    }
    out
}
