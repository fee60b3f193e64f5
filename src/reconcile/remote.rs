//! Finding changes made to a mirror behind briefcase's back (someone edits the NAS over SMB, or
//! the plain stick at a machine without briefcase): list the mirror, compare each path with its
//! manifest (kind, size, mtime within the medium's granularity, inode), fetch and hash only what
//! differs, and journal the differences in the mirror's state under the mirror's replica ID.

use briefcase_mirror::MirrorExt;
use std::collections::HashSet;

use briefcase_mirror::{
    Capabilities, Entry, EntryKind, Mirror, MirrorError, MirrorState, RelPath, RemoteStat, Stamp,
};

use crate::scan::IgnoreRules;

/// Whether the mirror's stat still matches what its state recorded.
pub fn remote_matches(e: &Entry, s: &RemoteStat, caps: &Capabilities) -> bool {
    if e.deleted || e.kind != s.kind {
        return false;
    }
    match s.kind {
        EntryKind::Dir => true,
        EntryKind::Symlink => e.symlink_target == s.symlink_target,
        EntryKind::File => {
            let g = i64::try_from(caps.mtime_granularity_ns.max(1)).unwrap_or(i64::MAX);
            let dt = e.observed_mtime_ns.abs_diff(s.mtime_ns);
            let dt = i64::try_from(dt).unwrap_or(i64::MAX);
            let mtime_ok =
                dt < g || (caps.mtime_dst_shift && (dt - Capabilities::DST_SHIFT_NS).abs() < g);
            e.size == s.size && mtime_ok && (e.inode == 0 || s.inode == 0 || e.inode == s.inode)
        }
    }
}

/// Scans the mirror against `st` and records what changed as the mirror's own changes.
/// Returns how many changes were found.
///
/// # Errors
/// Mirror errors (listing or fetching).
pub async fn scan_mirror(
    mirror: &dyn Mirror,
    st: &mut MirrorState,
    rules: &IgnoreRules,
) -> Result<usize, MirrorError> {
    scan_mirror_scoped(mirror, st, rules, None).await
}

/// [`scan_mirror`] limited to `scope` (paths and everything below them; `None`: the whole
/// mirror), for a watcher's hint: costs the size of the scope, not of the mirror.
///
/// # Errors
/// Mirror errors (listing or fetching).
pub async fn scan_mirror_scoped(
    mirror: &dyn Mirror,
    st: &mut MirrorState,
    rules: &IgnoreRules,
    scope: Option<&[RelPath]>,
) -> Result<usize, MirrorError> {
    if !mirror.capabilities().two_way {
        return Ok(0);
    }
    let g = mirror.capabilities();
    let listing = match scope {
        None => mirror.list().await?,
        Some(paths) => {
            let mut v = Vec::new();
            for p in paths {
                if let Some(s) = mirror.stat(p).await? {
                    let is_dir = s.kind == EntryKind::Dir;
                    v.push(s);
                    if is_dir {
                        v.extend(mirror.list_under(p).await?);
                    }
                }
            }
            v
        }
    };
    // A path is in scope when it or one of its ancestors is a scope path: a set lookup per
    // level, so the check costs the depth of the path, not the number of scope paths.
    let scope_set: Option<HashSet<&RelPath>> = scope.map(|ps| ps.iter().collect());
    let in_scope = |p: &RelPath| {
        scope_set
            .as_ref()
            .is_none_or(|set| set.contains(p) || p.ancestors().iter().any(|a| set.contains(a)))
    };
    let mut seen = HashSet::with_capacity(listing.len());
    // Listed directories found not ignored: a listing names parents before children, so a path
    // whose directory is among them is ignored only by a rule matching the path itself (one
    // match instead of one per level).
    let mut kept_dirs: HashSet<RelPath> = HashSet::new();
    let mut found = 0;
    let mut tmpdir = None;
    for s in listing {
        let is_dir = s.kind == EntryKind::Dir;
        let ignored = match s.path.parent() {
            Some(d) if !kept_dirs.contains(&d) => rules.is_ignored(&s.path, is_dir),
            _ => rules.is_ignored_itself(&s.path, is_dir),
        };
        if ignored {
            continue;
        }
        if is_dir {
            kept_dirs.insert(s.path.clone());
        }
        seen.insert(s.path.clone());
        if st.entry(&s.path).is_some_and(|e| remote_matches(e, &s, &g)) {
            continue;
        }
        let old = st.entry(&s.path).cloned();
        let old = old.as_ref();
        let (hash, chunks) = match s.kind {
            EntryKind::File => {
                // Made for the first file to hash: a sync with nothing new makes none.
                let dir = match &mut tmpdir {
                    Some(d) => d,
                    None => tmpdir.insert(tempfile::tempdir().map_err(|e| {
                        MirrorError::io(&mirror.location(), "create temp dir for", "hashing", e)
                    })?),
                };
                let dest = dir.path().join("probe");
                let got = mirror.get(&s.path, &dest).await?;
                let r = crate::scan::hash_file(&dest)
                    .map_err(|e| MirrorError::io(&mirror.location(), "hash", &s.path, e))?;
                let _ = std::fs::remove_file(&dest);
                if got.size != s.size {
                    continue; // changing right now: next scan
                }
                (Some(r.0), r.1)
            }
            EntryKind::Symlink => (
                s.symlink_target
                    .as_deref()
                    .map(briefcase_mirror::ContentHash::of),
                Vec::new(),
            ),
            EntryKind::Dir => (None, Vec::new()),
        };
        if let Some(old) = old {
            if !old.deleted
                && old.kind == s.kind
                && old.hash == hash
                && old.symlink_target == s.symlink_target
            {
                // Same content, only the stat moved (touched, copied back): refresh, no new change.
                let mut e = old.clone();
                e.inode = s.inode;
                e.observed_mtime_ns = s.mtime_ns;
                st.insert_entry(e);
                continue;
            }
        }
        let osn = st.next_osn();
        let stamp = Stamp {
            replica: st.replica_id,
            osn,
        };
        let mut version = old.map(|e| e.version.clone()).unwrap_or_default();
        version.set(stamp.replica, stamp.osn);
        let e = Entry {
            path: s.path.clone(),
            kind: s.kind,
            deleted: false,
            size: s.size,
            mode: s.mode,
            mtime_ns: s.mtime_ns,
            hash,
            symlink_target: s.symlink_target.clone(),
            chunks,
            version,
            stamp,
            inode: s.inode,
            observed_mtime_ns: s.mtime_ns,
        };
        st.insert_entry(e);
        found += 1;
    }
    let gone: Vec<_> = st
        .entries()
        .values()
        .filter(|e| {
            !e.deleted
                && !seen.contains(&e.path)
                && in_scope(&e.path)
                && !rules.is_ignored(&e.path, e.kind == EntryKind::Dir)
        })
        .map(|e| e.path.clone())
        .collect();
    for p in gone {
        let osn = st.next_osn();
        let stamp = Stamp {
            replica: st.replica_id,
            osn,
        };
        if let Some(e) = st.entry_mut(&p) {
            e.deleted = true;
            e.size = 0;
            e.hash = None;
            e.chunks.clear();
            e.symlink_target = None;
            e.inode = 0;
            e.version.set(stamp.replica, stamp.osn);
            e.stamp = stamp;
            found += 1;
        }
    }
    Ok(found)
}
