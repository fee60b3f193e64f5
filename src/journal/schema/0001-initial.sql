-- briefcase journal, schema version 1.
-- One database per local replica, under $XDG_DATA_HOME/briefcase/replicas/<replica-id>.sqlite.
-- Integers that are u64 in Rust (replica IDs, OSNs) are stored bit-for-bit as i64.

-- Facts about this replica: folder_id (32 hex), replica_id (16 hex), name, osn (the highest OSN
-- issued; never reused, bumped in the same transaction as the change it numbers), knowledge
-- (postcard VersionVector: what this replica has integrated from every replica).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;

-- The manifest: one row per path, live or tombstone. A row is the newest state of the path, so
-- the change log that replication needs is this table itself, "compacted to the newest entry per
-- path" (Coda's replay-log optimisation): a mirror is sent the rows whose stamp it does not know.
CREATE TABLE entries (
    path              BLOB PRIMARY KEY,   -- RelPath bytes, '/'-separated
    kind              INTEGER NOT NULL,   -- 0 file, 1 dir, 2 symlink
    deleted           INTEGER NOT NULL,   -- 1 = tombstone (kept until every replica knows it)
    size              INTEGER NOT NULL,   -- bytes
    mode              INTEGER NOT NULL,   -- permission bits
    mtime_ns          INTEGER NOT NULL,   -- carried mtime, ns since epoch
    hash              BLOB,               -- blake3 of content / link target
    symlink_target    BLOB,
    chunks            BLOB NOT NULL,      -- postcard Vec<ChunkRef>
    version           BLOB NOT NULL,      -- postcard VersionVector
    stamp_replica     INTEGER NOT NULL,   -- the change that produced this row
    stamp_osn         INTEGER NOT NULL,
    inode             INTEGER NOT NULL,   -- local stat when recorded: finds edits behind our back
    observed_mtime_ns INTEGER NOT NULL,
    ctime_ns          INTEGER NOT NULL    -- local ctime when recorded: catches same-size same-mtime edits
) STRICT;

-- "Entries above a knowledge vector" is a range scan per replica on this index.
CREATE INDEX entries_by_stamp ON entries (stamp_replica, stamp_osn);

-- Human-readable history for `briefcase log`, newest entry per path only (older rows of a path
-- are deleted when a newer one is written).
CREATE TABLE log (
    seq     INTEGER PRIMARY KEY,          -- insertion order
    replica INTEGER NOT NULL,             -- who made the change
    osn     INTEGER NOT NULL,             -- its OSN on that replica
    time_ns INTEGER NOT NULL,             -- wall clock when journaled here (display only)
    op      TEXT NOT NULL,                -- create | modify | delete | rename | conflict | merge
    path    BLOB NOT NULL,
    detail  TEXT                          -- e.g. "from old/name" for a rename
) STRICT;
CREATE INDEX log_by_path ON log (path);

-- Names of replicas this one has heard of, for messages and conflict copy names.
CREATE TABLE replicas (
    replica INTEGER PRIMARY KEY,
    name    TEXT NOT NULL
) STRICT;

-- Per mirror: what happened at the last sync, and whether it is paused (invariant 7).
CREATE TABLE mirror_status (
    name           TEXT PRIMARY KEY,      -- the mirror's configured name
    replica        INTEGER,               -- the mirror's replica ID once known
    last_sync_ns   INTEGER,               -- wall clock of the last complete sync
    last_result    TEXT,                  -- "ok", "offline: …", "error: …"
    paused         TEXT                   -- non-NULL: why syncing with it is paused
) STRICT;
