//! The journal: this replica's durable state in SQLite (WAL): identity, the OSN counter, the
//! manifest with version vectors and tombstones, the knowledge vector, the human log, and the
//! status of each mirror.
//!
//! Invariant 3 (durable journal) lives here: every change is one SQLite transaction that bumps
//! the OSN counter together with the rows it numbers, so an OSN is never reused, even after
//! `kill -9`. The schema is a list of numbered `.sql` files; `PRAGMA user_version` says how many
//! have been applied (Syncthing's `internal/db/sqlite/sql/schema/` is the model).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use briefcase_mirror::{
    ChunkRef, ContentHash, Entry, EntryKind, FolderId, KnowledgeVector, Osn, RelPath, ReplicaId,
    Stamp, VersionVector,
};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::scan::Known;

/// `PRAGMA application_id` of a briefcase journal ("BRFC").
const APPLICATION_ID: i32 = 0x4252_4643;

/// Schema files, applied in order; entry `i` produces `user_version = i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("schema/0001-initial.sql"),
    include_str!("schema/0002-found-by-scan.sql"),
];

/// An error from the journal, naming the database file.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// SQLite failed (I/O, locking, corruption).
    #[error("journal {path}: {source}. If the file is damaged, run `briefcase init --rebuild DIR` to rebuild it from the folder (the replica ID is kept)")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The cause.
        source: rusqlite::Error,
    },
    /// The file is not a briefcase journal, or is from a newer version.
    #[error("journal {path}: {reason}")]
    Incompatible {
        /// The database file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The journal's file or directory could not be created or made private.
    #[error(
        "journal {path}: {source}; check that this user owns it and that the disk is not full"
    )]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A stored value does not decode (damage).
    #[error("journal {path}: damaged value in {what}. Run `briefcase init --rebuild DIR` to rebuild it from the folder")]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// Which table/column/key.
        what: String,
    },
}

/// Result of journal operations.
pub type JournalResult<T> = Result<T, JournalError>;

/// One row of the human log (`briefcase log`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogRow {
    /// Replica that made the change (16 hex digits).
    pub replica: String,
    /// Its OSN on that replica.
    pub osn: u64,
    /// When it was journaled here, ns since the epoch.
    pub time_ns: i64,
    /// `create`, `modify`, `delete`, `rename`, `conflict`, `merge`.
    pub op: String,
    /// The path (lossy UTF-8).
    pub path: String,
    /// Extra words, e.g. the old name of a rename.
    pub detail: Option<String>,
}

/// Status of one mirror as last seen by this replica.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MirrorStatus {
    /// Configured name.
    pub name: String,
    /// The mirror's replica ID, once known.
    pub replica: Option<String>,
    /// Wall clock of the last complete sync, ns since the epoch.
    pub last_sync_ns: Option<i64>,
    /// `ok`, `offline: …` or `error: …`.
    pub last_result: Option<String>,
    /// Why syncing with it is paused, if it is.
    pub paused: Option<String>,
}

/// The open journal of one local replica. Owned by one thread at a time.
pub struct Journal {
    conn: Connection,
    path: PathBuf,
    folder_id: FolderId,
    replica_id: ReplicaId,
    name: String,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .field("replica", &self.replica_id)
            .finish()
    }
}

impl Journal {
    /// Creates a new journal at `path` for a replica of `folder_id`.
    ///
    /// # Errors
    /// [`JournalError`] when the file exists or cannot be created.
    pub fn create(
        path: &Path,
        folder_id: FolderId,
        replica_id: ReplicaId,
        name: &str,
    ) -> JournalResult<Journal> {
        if path.exists() {
            return Err(JournalError::Incompatible {
                path: path.to_path_buf(),
                reason: "already exists; remove it or use `briefcase init --rebuild`".into(),
            });
        }
        secure_dirs(path)?;
        let mut conn = open_conn(path)?;
        migrate(&mut conn, path)?;
        let sq = |source| JournalError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let tx = conn.transaction().map_err(sq)?;
        for (k, v) in [
            ("folder_id", folder_id.to_string().into_bytes()),
            ("replica_id", replica_id.to_string().into_bytes()),
            ("name", name.as_bytes().to_vec()),
            ("osn", 0u64.to_le_bytes().to_vec()),
            ("knowledge", encode(&VersionVector::new())),
        ] {
            tx.execute(
                "INSERT INTO meta(key, value) VALUES (?1, ?2)",
                params![k, v],
            )
            .map_err(sq)?;
        }
        tx.execute(
            "INSERT INTO replicas(replica, name) VALUES (?1, ?2)",
            params![replica_id.0 as i64, name],
        )
        .map_err(sq)?;
        tx.commit().map_err(sq)?;
        Ok(Journal {
            conn,
            path: path.to_path_buf(),
            folder_id,
            replica_id,
            name: name.to_string(),
        })
    }

    /// Opens an existing journal, applying pending migrations.
    ///
    /// # Errors
    /// [`JournalError::Incompatible`] for a foreign or newer file; [`JournalError::Damaged`] when
    /// identity rows are unreadable.
    pub fn open(path: &Path) -> JournalResult<Journal> {
        if !path.exists() {
            return Err(JournalError::Incompatible {
                path: path.to_path_buf(),
                reason: "does not exist; run `briefcase init DIR` (or `init --rebuild`)".into(),
            });
        }
        secure_dirs(path)?;
        let mut conn = open_conn(path)?;
        migrate(&mut conn, path)?;
        let get = |k: &str| -> JournalResult<Vec<u8>> {
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .map_err(|_| JournalError::Damaged {
                path: path.to_path_buf(),
                what: format!("meta.{k}"),
            })
        };
        let damaged = |what: &str| JournalError::Damaged {
            path: path.to_path_buf(),
            what: what.into(),
        };
        let folder_id = String::from_utf8(get("folder_id")?)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| damaged("meta.folder_id"))?;
        let replica_id = String::from_utf8(get("replica_id")?)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| damaged("meta.replica_id"))?;
        let name = String::from_utf8(get("name")?).map_err(|_| damaged("meta.name"))?;
        Ok(Journal {
            conn,
            path: path.to_path_buf(),
            folder_id,
            replica_id,
            name,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder this replica belongs to.
    pub fn folder_id(&self) -> FolderId {
        self.folder_id
    }

    /// This replica's ID.
    pub fn replica_id(&self) -> ReplicaId {
        self.replica_id
    }

    /// This replica's human name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn sq(&self) -> impl Fn(rusqlite::Error) -> JournalError + '_ {
        |source| JournalError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// The highest OSN issued so far.
    ///
    /// # Errors
    /// SQLite errors; damage.
    pub fn osn(&self) -> JournalResult<Osn> {
        read_osn(&self.conn, &self.path)
    }

    /// Frees what SQLite caches for this connection (its page cache: up to 2 MiB), for a caller
    /// going idle. Best effort: a failure only costs memory, and is logged at debug level.
    pub fn release_memory(&self) {
        if let Err(e) = self.conn.execute_batch("PRAGMA shrink_memory") {
            tracing::debug!(journal = %self.path.display(), error = %e, "shrinking SQLite's cache failed");
        }
    }

    /// This replica's knowledge vector (its own entry is its OSN).
    ///
    /// # Errors
    /// SQLite errors; damage.
    pub fn knowledge(&self) -> JournalResult<KnowledgeVector> {
        let mut k = read_knowledge(&self.conn, &self.path)?;
        k.raise(self.replica_id, self.osn()?);
        Ok(k)
    }

    /// The entry for `path`, live or tombstone.
    ///
    /// # Errors
    /// SQLite errors; damage.
    pub fn entry(&self, path: &RelPath) -> JournalResult<Option<Entry>> {
        self.conn
            .prepare_cached(&format!("SELECT {COLS} FROM entries WHERE path = ?1"))
            .and_then(|mut s| s.query_row([path.as_bytes()], row_raw).optional())
            .map_err(self.sq())?
            .map(|raw| raw.decode(&self.path))
            .transpose()
    }

    /// Paths of the tombstones a full scan found ([`Batch::mark_found_by_scan`]), as opposed to
    /// deletions the watcher saw happen.
    ///
    /// # Errors
    /// SQLite errors; damage.
    pub fn found_by_scan(&self) -> JournalResult<std::collections::BTreeSet<RelPath>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT path FROM entries WHERE found_by_scan = 1 AND deleted = 1")
            .map_err(self.sq())?;
        let rows = stmt
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .map_err(self.sq())?;
        let mut out = std::collections::BTreeSet::new();
        for r in rows {
            let bytes = r.map_err(self.sq())?;
            let p = RelPath::new(bytes).map_err(|_| JournalError::Damaged {
                path: self.path.clone(),
                what: "entries.path".into(),
            })?;
            out.insert(p);
        }
        Ok(out)
    }

    /// Every entry (live and tombstones), by path.
    ///
    /// # Errors
    /// SQLite errors; damage.
    pub fn entries(&self) -> JournalResult<BTreeMap<RelPath, Entry>> {
        self.query_entries(&format!("SELECT {COLS} FROM entries"), &[])
            .map(|v| v.into_iter().map(|e| (e.path.clone(), e)).collect())
    }

    /// Entries at `prefix` or below it (all entries for `None`), in path order.
    ///
    /// # Errors
    /// SQLite errors; damage.
    pub fn entries_under(&self, prefix: Option<&RelPath>) -> JournalResult<Vec<Entry>> {
        match prefix {
            None => self.query_entries(&format!("SELECT {COLS} FROM entries ORDER BY path"), &[]),
            Some(p) => {
                let mut lo = p.as_bytes().to_vec();
                lo.push(b'/');
                let mut hi = p.as_bytes().to_vec();
                hi.push(b'/' + 1);
                self.query_entries(
                    &format!("SELECT {COLS} FROM entries WHERE path = ?1 OR (path >= ?2 AND path < ?3) ORDER BY path"),
                    &[&p.as_bytes(), &lo, &hi],
                )
            }
        }
    }

    /// What a scan compares of the entries at `prefix` or below it (all for `None`), in path
    /// order: [`Journal::entries_under`] without the hashes, chunk lists and version vectors,
    /// which a scan of an unchanged tree never looks at.
    ///
    /// # Errors
    /// SQLite errors; damage.
    pub fn known_under(&self, prefix: Option<&RelPath>) -> JournalResult<Vec<Known>> {
        const KNOWN: &str = "path, kind, deleted, size, mode, inode, observed_mtime_ns";
        let (sql, args): (String, Vec<Vec<u8>>) = match prefix {
            None => (
                format!("SELECT {KNOWN} FROM entries ORDER BY path"),
                Vec::new(),
            ),
            Some(p) => {
                let mut lo = p.as_bytes().to_vec();
                lo.push(b'/');
                let mut hi = p.as_bytes().to_vec();
                hi.push(b'/' + 1);
                (
                    format!("SELECT {KNOWN} FROM entries WHERE path = ?1 OR (path >= ?2 AND path < ?3) ORDER BY path"),
                    vec![p.as_bytes().to_vec(), lo, hi],
                )
            }
        };
        let mut stmt = self.conn.prepare_cached(&sql).map_err(self.sq())?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(args.iter()))
            .map_err(self.sq())?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(self.sq())? {
            let damaged = |what: &str| JournalError::Damaged {
                path: self.path.clone(),
                what: format!("entries.{what}"),
            };
            let path: Vec<u8> = r.get(0).map_err(self.sq())?;
            out.push(Known {
                path: RelPath::new(path).map_err(|_| damaged("path"))?,
                kind: kind_of_code(r.get(1).map_err(self.sq())?).ok_or_else(|| damaged("kind"))?,
                deleted: r.get(2).map_err(self.sq())?,
                size: r.get::<_, i64>(3).map_err(self.sq())? as u64,
                mode: r.get(4).map_err(self.sq())?,
                inode: r.get::<_, i64>(5).map_err(self.sq())? as u64,
                observed_mtime_ns: r.get(6).map_err(self.sq())?,
            });
        }
        Ok(out)
    }

    /// Entries whose path starts with the bytes `prefix` (any depth), in path order; an index
    /// range scan, so finding the conflict copies of one file costs what they number.
    ///
    /// # Errors
    /// SQLite errors; damage.
    pub fn entries_with_prefix(&self, prefix: &[u8]) -> JournalResult<Vec<Entry>> {
        // Upper bound: the prefix with its last byte below 0xff incremented (or no bound).
        let mut hi = prefix.to_vec();
        while hi.last() == Some(&0xff) {
            hi.pop();
        }
        match hi.last_mut() {
            Some(b) => {
                *b += 1;
                self.query_entries(
                    &format!(
                        "SELECT {COLS} FROM entries WHERE path >= ?1 AND path < ?2 ORDER BY path"
                    ),
                    &[&prefix, &hi],
                )
            }
            None => self.query_entries(
                &format!("SELECT {COLS} FROM entries WHERE path >= ?1 ORDER BY path"),
                &[&prefix],
            ),
        }
    }

    /// Entries whose stamp `knowledge` does not cover: what a replica with that knowledge has
    /// not integrated yet ("reconcile by OSN"). Cost grows with the answer, not the tree.
    ///
    /// # Errors
    /// SQLite errors; damage.
    pub fn changes_since(&self, knowledge: &KnowledgeVector) -> JournalResult<Vec<Entry>> {
        let mut out = Vec::new();
        let known: Vec<(ReplicaId, Osn)> = knowledge.iter().collect();
        for (r, o) in &known {
            out.extend(self.query_entries(
                &format!("SELECT {COLS} FROM entries WHERE stamp_replica = ?1 AND stamp_osn > ?2"),
                &[&(r.0 as i64), &(o.0 as i64)],
            )?);
        }
        // Replicas the other side has never heard of: everything they stamped.
        let ids: Vec<i64> = known.iter().map(|(r, _)| r.0 as i64).collect();
        let list = ids
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let sql = if list.is_empty() {
            format!("SELECT {COLS} FROM entries")
        } else {
            format!("SELECT {COLS} FROM entries WHERE stamp_replica NOT IN ({list})")
        };
        out.extend(self.query_entries(&sql, &[])?);
        Ok(out)
    }

    fn query_entries(&self, sql: &str, args: &[&dyn rusqlite::ToSql]) -> JournalResult<Vec<Entry>> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(self.sq())?;
        let rows = stmt.query_map(args, row_raw).map_err(self.sq())?;
        let mut out = Vec::new();
        for raw in rows {
            out.push(raw.map_err(self.sq())?.decode(&self.path)?);
        }
        Ok(out)
    }

    /// Names of the replicas this one has heard of.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn replica_names(&self) -> JournalResult<BTreeMap<ReplicaId, String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT replica, name FROM replicas")
            .map_err(self.sq())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    ReplicaId(r.get::<_, i64>(0)? as u64),
                    r.get::<_, String>(1)?,
                ))
            })
            .map_err(self.sq())?;
        rows.collect::<Result<_, _>>().map_err(self.sq())
    }

    /// The newest `limit` rows of the human log, newest last.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn log_tail(&self, limit: usize) -> JournalResult<Vec<LogRow>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT replica, osn, time_ns, op, path, detail FROM
                 (SELECT * FROM log ORDER BY seq DESC LIMIT ?1) ORDER BY seq",
            )
            .map_err(self.sq())?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok(LogRow {
                    replica: ReplicaId(r.get::<_, i64>(0)? as u64).to_string(),
                    osn: r.get::<_, i64>(1)? as u64,
                    time_ns: r.get(2)?,
                    op: r.get(3)?,
                    path: String::from_utf8_lossy(&r.get::<_, Vec<u8>>(4)?).into_owned(),
                    detail: r.get(5)?,
                })
            })
            .map_err(self.sq())?;
        rows.collect::<Result<_, _>>().map_err(self.sq())
    }

    /// Status rows of all mirrors seen.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn mirror_statuses(&self) -> JournalResult<Vec<MirrorStatus>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, replica, last_sync_ns, last_result, paused FROM mirror_status ORDER BY name")
            .map_err(self.sq())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(MirrorStatus {
                    name: r.get(0)?,
                    replica: r
                        .get::<_, Option<i64>>(1)?
                        .map(|i| ReplicaId(i as u64).to_string()),
                    last_sync_ns: r.get(2)?,
                    last_result: r.get(3)?,
                    paused: r.get(4)?,
                })
            })
            .map_err(self.sq())?;
        rows.collect::<Result<_, _>>().map_err(self.sq())
    }

    /// Status of one mirror (default when never synced).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn mirror_status(&self, name: &str) -> JournalResult<MirrorStatus> {
        Ok(self
            .mirror_statuses()?
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| MirrorStatus {
                name: name.to_string(),
                ..Default::default()
            }))
    }

    /// Records the outcome of a sync with mirror `name`. `ok` sets the last-sync time.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_mirror_status(
        &mut self,
        name: &str,
        replica: Option<ReplicaId>,
        result: &str,
        ok: bool,
        paused: Option<&str>,
    ) -> JournalResult<()> {
        let now = now_ns();
        self.conn
            .execute(
                "INSERT INTO mirror_status(name, replica, last_sync_ns, last_result, paused)
                 VALUES (?1, ?2, CASE WHEN ?5 THEN ?3 END, ?4, ?6)
                 ON CONFLICT(name) DO UPDATE SET
                   replica = COALESCE(excluded.replica, replica),
                   last_sync_ns = CASE WHEN ?5 THEN ?3 ELSE last_sync_ns END,
                   last_result = excluded.last_result,
                   paused = excluded.paused",
                params![name, replica.map(|r| r.0 as i64), now, result, ok, paused],
            )
            .map_err(self.sq())?;
        Ok(())
    }

    /// Forgets a removed mirror's status.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn remove_mirror_status(&mut self, name: &str) -> JournalResult<()> {
        self.conn
            .execute("DELETE FROM mirror_status WHERE name = ?1", [name])
            .map_err(self.sq())?;
        Ok(())
    }

    /// Starts a batch: every change in it commits together, or none does.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn begin(&mut self) -> JournalResult<Batch<'_>> {
        let path = self.path.clone();
        let replica = self.replica_id;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|source| JournalError::Sqlite {
                path: path.clone(),
                source,
            })?;
        let osn = read_osn(&tx, &path)?;
        Ok(Batch {
            tx,
            path,
            replica,
            osn,
            start_osn: osn,
            knowledge_merge: None,
        })
    }
}

/// A journal transaction: issue OSNs, write entries and log rows, merge knowledge, then
/// [`Batch::commit`]. Dropping it without committing rolls everything back, OSNs included.
pub struct Batch<'a> {
    tx: rusqlite::Transaction<'a>,
    path: PathBuf,
    replica: ReplicaId,
    osn: Osn,
    start_osn: Osn,
    knowledge_merge: Option<KnowledgeVector>,
}

impl Batch<'_> {
    fn sq(&self) -> impl Fn(rusqlite::Error) -> JournalError + '_ {
        |source| JournalError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Issues the next OSN of this replica.
    pub fn next_osn(&mut self) -> Stamp {
        self.osn = Osn(self.osn.0 + 1);
        Stamp {
            replica: self.replica,
            osn: self.osn,
        }
    }

    /// Reads an entry inside the transaction.
    ///
    /// # Errors
    /// SQLite errors; damage.
    pub fn entry(&self, path: &RelPath) -> JournalResult<Option<Entry>> {
        // Prepared once per connection: a scan of 20,000 new files asks this 20,000 times, and
        // parsing the SQL each time was a seventh of `init`.
        self.tx
            .prepare_cached(&format!("SELECT {COLS} FROM entries WHERE path = ?1"))
            .and_then(|mut s| s.query_row([path.as_bytes()], row_raw).optional())
            .map_err(self.sq())?
            .map(|raw| raw.decode(&self.path))
            .transpose()
    }

    /// Inserts or replaces the entry at `entry.path`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn put(&mut self, entry: &Entry) -> JournalResult<()> {
        self.put_with_ctime(entry, 0)
    }

    /// As [`Batch::put`], also recording the local ctime (ns) seen when the entry was recorded.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn put_with_ctime(&mut self, e: &Entry, ctime_ns: i64) -> JournalResult<()> {
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO entries(path, kind, deleted, size, mode, mtime_ns, hash, symlink_target,
                  chunks, version, stamp_replica, stamp_osn, inode, observed_mtime_ns, ctime_ns)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    e.path.as_bytes(),
                    kind_code(e.kind),
                    e.deleted,
                    e.size as i64,
                    e.mode,
                    e.mtime_ns,
                    e.hash.map(|h| h.0.to_vec()),
                    e.symlink_target,
                    encode(&e.chunks),
                    encode(&e.version),
                    e.stamp.replica.0 as i64,
                    e.stamp.osn.0 as i64,
                    e.inode as i64,
                    e.observed_mtime_ns,
                    ctime_ns,
                ])
            })
            .map_err(self.sq())?;
        Ok(())
    }

    /// Marks the tombstone just written at `path` as found by a full scan (not seen going by the
    /// watcher): the mass-deletion guard weighs it (invariant 7). Any later write of the row
    /// clears the mark.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn mark_found_by_scan(&mut self, path: &RelPath) -> JournalResult<()> {
        self.tx
            .prepare_cached("UPDATE entries SET found_by_scan = 1 WHERE path = ?1 AND deleted = 1")
            .and_then(|mut s| s.execute([path.as_bytes()]))
            .map_err(self.sq())?;
        Ok(())
    }

    /// Deletes the row of `path` entirely (a tombstone every replica knows, or an entry that
    /// was never replicated and cancelled out).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn forget(&mut self, path: &RelPath) -> JournalResult<()> {
        self.tx
            .prepare_cached("DELETE FROM entries WHERE path = ?1")
            .and_then(|mut s| s.execute([path.as_bytes()]))
            .map_err(self.sq())?;
        Ok(())
    }

    /// Appends a row to the human log, dropping older rows of the same path.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn log(
        &mut self,
        stamp: Stamp,
        op: &str,
        path: &RelPath,
        detail: Option<&str>,
    ) -> JournalResult<()> {
        self.tx
            .prepare_cached("DELETE FROM log WHERE path = ?1")
            .and_then(|mut s| s.execute([path.as_bytes()]))
            .map_err(self.sq())?;
        self.tx
            .prepare_cached(
                "INSERT INTO log(replica, osn, time_ns, op, path, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    stamp.replica.0 as i64,
                    stamp.osn.0 as i64,
                    now_ns(),
                    op,
                    path.as_bytes(),
                    detail
                ])
            })
            .map_err(self.sq())?;
        Ok(())
    }

    /// Merges `k` into this replica's knowledge vector at commit.
    pub fn merge_knowledge(&mut self, k: &KnowledgeVector) {
        self.knowledge_merge
            .get_or_insert_with(VersionVector::new)
            .merge(k);
    }

    /// Records the name of a replica.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn name_replica(&mut self, replica: ReplicaId, name: &str) -> JournalResult<()> {
        self.tx
            .execute(
                "INSERT INTO replicas(replica, name) VALUES (?1, ?2) ON CONFLICT(replica) DO UPDATE SET name = excluded.name",
                params![replica.0 as i64, name],
            )
            .map_err(self.sq())?;
        Ok(())
    }

    /// How many OSNs this batch issued.
    pub fn issued(&self) -> u64 {
        self.osn.0 - self.start_osn.0
    }

    /// Commits the batch (one SQLite transaction, durable on return).
    ///
    /// # Errors
    /// SQLite errors; nothing of the batch is kept then.
    pub fn commit(self) -> JournalResult<()> {
        let sq = |source| JournalError::Sqlite {
            path: self.path.clone(),
            source,
        };
        if self.osn != self.start_osn {
            self.tx
                .execute(
                    "UPDATE meta SET value = ?1 WHERE key = 'osn'",
                    [self.osn.0.to_le_bytes().to_vec()],
                )
                .map_err(sq)?;
        }
        if let Some(k) = &self.knowledge_merge {
            let mut cur = read_knowledge(&self.tx, &self.path)?;
            cur.merge(k);
            self.tx
                .execute(
                    "UPDATE meta SET value = ?1 WHERE key = 'knowledge'",
                    [encode(&cur)],
                )
                .map_err(sq)?;
        }
        self.tx.commit().map_err(sq)
    }
}

const COLS: &str = "path, kind, deleted, size, mode, mtime_ns, hash, symlink_target, chunks, version, stamp_replica, stamp_osn, inode, observed_mtime_ns";

struct RawEntry {
    path: Vec<u8>,
    kind: i64,
    deleted: bool,
    size: i64,
    mode: u32,
    mtime_ns: i64,
    hash: Option<Vec<u8>>,
    symlink_target: Option<Vec<u8>>,
    chunks: Vec<u8>,
    version: Vec<u8>,
    stamp_replica: i64,
    stamp_osn: i64,
    inode: i64,
    observed_mtime_ns: i64,
}

fn row_raw(r: &Row<'_>) -> rusqlite::Result<RawEntry> {
    Ok(RawEntry {
        path: r.get(0)?,
        kind: r.get(1)?,
        deleted: r.get(2)?,
        size: r.get(3)?,
        mode: r.get(4)?,
        mtime_ns: r.get(5)?,
        hash: r.get(6)?,
        symlink_target: r.get(7)?,
        chunks: r.get(8)?,
        version: r.get(9)?,
        stamp_replica: r.get(10)?,
        stamp_osn: r.get(11)?,
        inode: r.get(12)?,
        observed_mtime_ns: r.get(13)?,
    })
}

impl RawEntry {
    fn decode(self, db: &Path) -> JournalResult<Entry> {
        let damaged = |what: &str| JournalError::Damaged {
            path: db.to_path_buf(),
            what: format!(
                "entries.{what} of {:?}",
                String::from_utf8_lossy(&self.path)
            ),
        };
        let path = RelPath::new(self.path.clone()).map_err(|_| damaged("path"))?;
        let kind = kind_of_code(self.kind).ok_or_else(|| damaged("kind"))?;
        let hash = match &self.hash {
            None => None,
            Some(h) => Some(ContentHash(
                h.as_slice().try_into().map_err(|_| damaged("hash"))?,
            )),
        };
        let chunks: Vec<ChunkRef> =
            postcard::from_bytes(&self.chunks).map_err(|_| damaged("chunks"))?;
        let version: VersionVector =
            postcard::from_bytes(&self.version).map_err(|_| damaged("version"))?;
        Ok(Entry {
            path,
            kind,
            deleted: self.deleted,
            size: self.size as u64,
            mode: self.mode,
            mtime_ns: self.mtime_ns,
            hash,
            symlink_target: self.symlink_target,
            chunks,
            version,
            stamp: Stamp {
                replica: ReplicaId(self.stamp_replica as u64),
                osn: Osn(self.stamp_osn as u64),
            },
            inode: self.inode as u64,
            observed_mtime_ns: self.observed_mtime_ns,
        })
    }
}

/// The kind stored as `code` ([`kind_code`]); `None` for a damaged value.
fn kind_of_code(code: i64) -> Option<EntryKind> {
    match code {
        0 => Some(EntryKind::File),
        1 => Some(EntryKind::Dir),
        2 => Some(EntryKind::Symlink),
        _ => None,
    }
}

fn kind_code(k: EntryKind) -> i64 {
    match k {
        EntryKind::File => 0,
        EntryKind::Dir => 1,
        EntryKind::Symlink => 2,
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).unwrap_or_default()
}

fn read_osn(conn: &Connection, path: &Path) -> JournalResult<Osn> {
    let v: Vec<u8> = conn
        .query_row("SELECT value FROM meta WHERE key = 'osn'", [], |r| r.get(0))
        .map_err(|source| JournalError::Sqlite {
            path: path.to_path_buf(),
            source,
        })?;
    let arr: [u8; 8] = v.as_slice().try_into().map_err(|_| JournalError::Damaged {
        path: path.to_path_buf(),
        what: "meta.osn".into(),
    })?;
    Ok(Osn(u64::from_le_bytes(arr)))
}

fn read_knowledge(conn: &Connection, path: &Path) -> JournalResult<KnowledgeVector> {
    let v: Vec<u8> = conn
        .query_row("SELECT value FROM meta WHERE key = 'knowledge'", [], |r| {
            r.get(0)
        })
        .map_err(|source| JournalError::Sqlite {
            path: path.to_path_buf(),
            source,
        })?;
    postcard::from_bytes(&v).map_err(|_| JournalError::Damaged {
        path: path.to_path_buf(),
        what: "meta.knowledge".into(),
    })
}

/// The journal lists every file name of the folder: its directories (`replicas/` and the data
/// dir above it) are this user's only, created 0700 and tightened if made before (invariant 8).
fn secure_dirs(path: &Path) -> JournalResult<()> {
    let io = |dir: &Path, source| JournalError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        briefcase_mirror::fsutil::private_dir(dir).map_err(|e| io(dir, e))?;
        if let Some(data) = dir.parent() {
            briefcase_mirror::fsutil::private(data, 0o700).map_err(|e| io(data, e))?;
        }
    }
    Ok(())
}

/// The database and its WAL files: this user's only, 0600 (SQLite gives the WAL files the
/// database's mode when it creates them).
fn secure_files(path: &Path) -> JournalResult<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let p = PathBuf::from(p);
        briefcase_mirror::fsutil::private(&p, 0o600).map_err(|source| JournalError::Io {
            path: p.clone(),
            source,
        })?;
    }
    Ok(())
}

fn open_conn(path: &Path) -> JournalResult<Connection> {
    let sq = |source| JournalError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    if !path.exists() {
        // Created empty and private before SQLite opens it, so it is never readable by others.
        briefcase_mirror::fsutil::create_private(path).map_err(|source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    }
    secure_files(path)?;
    let conn = Connection::open(path).map_err(sq)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sq)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sq)?;
    // FULL: a committed batch survives power loss, not just a process crash (invariant 3).
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sq)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(sq)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, path: &Path) -> JournalResult<()> {
    let sq = |source| JournalError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let app: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(sq)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sq)?;
    if app != 0 && app != APPLICATION_ID {
        return Err(JournalError::Incompatible {
            path: path.to_path_buf(),
            reason: format!("not a briefcase journal (application_id {app:#x}); move it away"),
        });
    }
    if app == 0 && version != 0 {
        return Err(JournalError::Incompatible {
            path: path.to_path_buf(),
            reason: "not a briefcase journal (another program's database); move it away".into(),
        });
    }
    if version as usize > MIGRATIONS.len() {
        return Err(JournalError::Incompatible {
            path: path.to_path_buf(),
            reason: format!(
                "written by a newer briefcase (schema {version}, this one knows {}); upgrade briefcase",
                MIGRATIONS.len()
            ),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction().map_err(sq)?;
        tx.execute_batch(sql).map_err(sq)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(sq)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(sq)?;
        tx.commit().map_err(sq)?;
    }
    Ok(())
}

/// Wall clock in ns since the epoch (display and log only; never decides who wins).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
