-- briefcase journal, schema version 2.
-- How a tombstone was found, for the mass-deletion guard (invariant 7): 1 when a full scan found
-- the path gone (at start after downtime, the periodic rescan, a one-shot `sync`), 0 when the
-- watcher saw it go (a `git gc`, `rm -rf target/` or branch switch the user is doing now) or the
-- row came from elsewhere. Only deletions found by a scan can mean an unmounted disk or a wiped
-- folder, so only those stop a sync that would delete more than half of a replica's files.
-- Any later write of the row (INSERT OR REPLACE) resets it to 0.
ALTER TABLE entries ADD COLUMN found_by_scan INTEGER NOT NULL DEFAULT 0;
CREATE INDEX entries_found_by_scan ON entries (found_by_scan) WHERE found_by_scan = 1;
