//! The batch queues of one application: fetched and verified files landed together (one flush
//! of the local file system, one fsync per directory), file pushes sent with one
//! [`Mirror::put_batch`](briefcase_mirror::Mirror::put_batch), removals sent with one
//! [`Mirror::remove_batch`](briefcase_mirror::Mirror::remove_batch), and the journal's batch of
//! pulled entries ([`flush`]).
//!
//! What each batch keeps: whatever the mirror holds after a batch is recorded in its state; a
//! pulled file is journaled only once it has landed (after the invariant 1 re-check); local
//! removals are durable before the journal records them.

use std::collections::{BTreeMap, HashSet};
use std::io;

use briefcase_mirror::beneath::ParentDir;
use briefcase_mirror::fsutil;
use briefcase_mirror::MirrorExt;
use briefcase_mirror::{
    ChunkParams, Chunking, EntryKind, MirrorError, PutItem, PutSource, RelPath,
};

use super::local::{keep_dir, local_entry, local_unchanged, source_in_batch};
use super::mirror::{meta, mirror_entry, remote_unchanged};
use super::{note, Ctx, Outcome, StepError};
use crate::reconcile::{
    FailureKind, PathFailure, ReconcileError, ReconcileResult, Side, SyncReport,
};

/// Lands the fetched files of the current batch: one flush of the local file system, then each
/// is renamed into place after re-checking that the local file still holds what the journal
/// says (invariant 1; if not, the local edit is journaled and the step deferred, so the two
/// meet as a conflict next round), then each directory is fsynced once, then journaled.
pub(super) fn land_fetched(cx: &mut Ctx<'_>, report: &mut SyncReport) -> ReconcileResult<()> {
    let Some(batch) = cx.fetched.take() else {
        return Ok(());
    };
    let entries = std::mem::take(&mut cx.fetched_entries);
    cx.fetched_bytes = 0;
    let mut check_err = None;
    let results = batch.commit_checked(|i, _| {
        let (r, l) = &entries[i];
        match local_unchanged(cx, &r.path, l.as_ref()) {
            Ok(ok) => ok,
            Err(e) => {
                check_err.get_or_insert((r.path.clone(), e));
                false
            }
        }
    });
    for ((r, _), res) in entries.into_iter().zip(results) {
        let p = r.path.clone();
        match res {
            Ok(Some(m)) => {
                report.pulled += 1;
                cx.pending.push(local_entry(&r, Some(&m)));
            }
            Ok(None) => {
                cx.local.rescan(Some(std::slice::from_ref(&p)))?;
                let why = "changed here during the sync; the local edit was journaled and will meet the incoming one as a conflict";
                tracing::info!(path = %p, reason = %why, "deferred to the next sync");
                report.deferred.push(format!("{p}: {why}"));
            }
            Err(e) => {
                let why = format!(
                    "folder {}: could not write {p} from mirror {}: {e}; nothing was replaced, it is retried next sync (check free space and permissions)",
                    cx.local.root.display(),
                    cx.mirror.location()
                );
                tracing::warn!(path = %p, error = %why, "not synced");
                let kind = FailureKind::of_io(&e);
                report
                    .failed
                    .push(PathFailure::new(p, Side::Local, kind, why));
            }
        }
    }
    match check_err {
        Some((p, e)) => {
            report.failed.push(e.at(&p)?);
            Ok(())
        }
        None => Ok(()),
    }
}

/// Removes the queued paths with one [`Mirror::remove_batch`] and records each removal in the
/// mirror's state. A directory that still holds files this machine never saw is kept on both
/// sides (edit beats delete, as on the pull side).
pub(super) async fn send_removals(
    cx: &mut Ctx<'_>,
    report: &mut SyncReport,
) -> ReconcileResult<()> {
    if cx.removals.is_empty() {
        return Ok(());
    }
    let queued = std::mem::take(&mut cx.removals);
    let results = cx
        .mirror
        .remove_batch(queued.iter().map(|(l, _)| l.path.clone()).collect())
        .await;
    let mut fatal = None;
    for ((l, r), res) in queued.into_iter().zip(results) {
        let p = l.path.clone();
        let outcome = match res {
            Ok(()) => {
                report.removed_remote += 1;
                cx.st.insert_entry(mirror_entry(&l, None));
                Ok(Outcome::Done)
            }
            Err(e) if e.is_dir_not_empty() && r.kind == EntryKind::Dir => keep_dir(cx, l, r),
            Err(e) if e.is_transient() => Err(e.into()),
            Err(e) => Err(StepError::mirror(
                FailureKind::of_mirror(&e),
                format!(
                    "could not remove {p} on mirror {} ({e}); it is kept and retried next sync",
                    cx.mirror.location()
                ),
            )),
        };
        if let Some(e) = note(report, &p, outcome) {
            fatal.get_or_insert(e);
        }
    }
    match fatal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Writes the queued file pushes with one [`Mirror::put_batch`] and records each in the mirror's
/// state. Each item carries the journal's hash ([`PutItem::expect`]): a file saved again while
/// it was sent is not stored at all (the step is deferred), so whatever the mirror holds is
/// always recorded in its state. Files new to the mirror are first checked to be still absent
/// there ([`still_absent`]); one that appeared meanwhile is deferred, never overwritten.
pub(super) async fn send_queued(cx: &mut Ctx<'_>, report: &mut SyncReport) -> ReconcileResult<()> {
    if cx.queued.is_empty() {
        return Ok(());
    }
    let queued = std::mem::take(&mut cx.queued);
    cx.queued_bytes = 0;
    let new_files: Vec<&RelPath> = queued
        .iter()
        .filter(|q| q.new_file)
        .map(|q| &q.entry.path)
        .collect();
    let absent = match still_absent(cx, &new_files).await {
        Ok(a) => a,
        Err(e) => {
            // Nothing of the batch is written: each path fails (or the sync stops) as a
            // failed check of its own would.
            let mut fatal = None;
            for q in &queued {
                let r = match &e {
                    StepError::Fatal(_) => continue,
                    StepError::Path {
                        side,
                        kind,
                        message,
                    } => Err(StepError::Path {
                        side: *side,
                        kind: *kind,
                        message: message.clone(),
                    }),
                };
                if let Some(f) = note(report, &q.entry.path, r) {
                    fatal.get_or_insert(f);
                }
            }
            return match (e, fatal) {
                (StepError::Fatal(f), _) | (_, Some(f)) => Err(f),
                (StepError::Path { .. }, None) => Ok(()),
            };
        }
    };
    let mut checked = std::collections::HashSet::new();
    let mut sent = Vec::with_capacity(queued.len());
    let mut items = Vec::with_capacity(queued.len());
    let mut absent = absent.into_iter();
    for q in queued {
        if q.new_file && !absent.next().unwrap_or(false) {
            let why = format!("changed on mirror {} during the sync", cx.mirror.location());
            note(report, &q.entry.path, Ok(Outcome::Deferred(why)));
            continue;
        }
        let mut l = q.entry;
        match source_in_batch(cx, &l.path, &mut checked) {
            Ok(from) => items.push(PutItem {
                path: l.path.clone(),
                source: PutSource::File(from),
                meta: meta(&l),
                expect: l.hash,
                // The scanner's chunk list, so that a chunk store (the stick) does not cut the
                // file again; the mirror's entry drops it anyway (`mirror_entry`).
                chunks: journal_chunks(&mut l),
            }),
            Err(e) => {
                report.failed.push(e.at(&l.path)?);
                return Ok(());
            }
        }
        sent.push(l);
    }
    let results = cx.mirror.put_batch(items).await;
    let mut fatal = None;
    for (l, r) in sent.into_iter().zip(results) {
        let p = l.path.clone();
        let outcome = match r {
            // The backend checked that what it stored hashes to `l` (`PutItem::expect`): the
            // mirror holds exactly this version, whatever the local file holds by now. Leaving
            // it unrecorded would make the next look at the mirror take this machine's own
            // write for an edit made there, and meet the next local save as a conflict
            // (issue 8: spurious conflicts and resurrected lock files inside `.git`).
            Ok(s) => {
                report.pushed += 1;
                cx.st.insert_entry(mirror_entry(&l, Some(&s)));
                Ok(Outcome::Done)
            }
            // Saved again while it was read: nothing was stored; the new content is journaled
            // by the watcher (or the next scan) and sent then.
            Err(MirrorError::SourceChanged { .. }) => Ok(Outcome::Deferred(
                "changed here while it was sent; it will be sent again with its new content".into(),
            )),
            Err(e) => Err(StepError::from(e)),
        };
        if let Some(e) = note(report, &p, outcome) {
            fatal.get_or_insert(e);
        }
    }
    match fatal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The chunk list the journal holds for the local file `l` (cut by the scanner with its FastCDC
/// sizes), taken out of `l`; `None` when it holds none for content (an entry pulled from a
/// mirror whose state keeps no chunk lists).
fn journal_chunks(l: &mut briefcase_mirror::Entry) -> Option<Chunking> {
    if l.chunks.is_empty() || l.chunks.iter().map(|c| u64::from(c.len)).sum::<u64>() != l.size {
        return None;
    }
    Some(Chunking {
        params: ChunkParams {
            min: crate::scan::CHUNK_MIN,
            avg: crate::scan::CHUNK_AVG,
            max: crate::scan::CHUNK_MAX,
        },
        chunks: std::mem::take(&mut l.chunks),
    })
}

/// Whether each of `paths` (files the mirror's state holds nothing live at) is still absent on
/// the mirror, as [`remote_unchanged`] would say. The files of one directory below which the
/// state records nothing live (a directory this sync made, typically) are looked up with one
/// listing of it; the others with a stat each.
async fn still_absent(cx: &Ctx<'_>, paths: &[&RelPath]) -> Result<Vec<bool>, StepError> {
    let mut by_dir: BTreeMap<Option<RelPath>, Vec<usize>> = BTreeMap::new();
    for (i, p) in paths.iter().enumerate() {
        by_dir.entry(p.parent()).or_default().push(i);
    }
    let mut out = vec![false; paths.len()];
    for (dir, idx) in by_dir {
        let listed = match &dir {
            Some(d) if idx.len() > 1 && !records_below(cx, d) => Some(
                cx.mirror
                    .list_under(d)
                    .await?
                    .into_iter()
                    .map(|s| s.path)
                    .collect::<HashSet<_>>(),
            ),
            _ => None,
        };
        for i in idx {
            let p = paths[i];
            out[i] = match &listed {
                Some(there) => !there.contains(p),
                None => remote_unchanged(cx, p, None).await?,
            };
        }
    }
    Ok(out)
}

/// Whether the mirror's state records anything live strictly below the directory `d`.
fn records_below(cx: &Ctx<'_>, d: &RelPath) -> bool {
    use std::ops::Bound;
    cx.st
        .entries()
        .range::<RelPath, _>((Bound::Excluded(d), Bound::Unbounded))
        .take_while(|(p, _)| p.as_bytes().starts_with(d.as_bytes()))
        .any(|(p, e)| !e.deleted && p.starts_with(d))
}

/// Makes the batch's local removals durable (one fsync per directory), then journals the pulled
/// entries waiting in `cx.pending` in one transaction.
pub(super) fn flush(cx: &mut Ctx<'_>) -> ReconcileResult<()> {
    // Local removals become durable before the journal records them (one fsync per directory).
    let dirs = std::mem::take(&mut cx.dirty_dirs);
    if let Some((d, Some(e))) = fsutil::fsync_dirs(dirs.keys().map(ParentDir::path))
        .into_iter()
        .find(|(_, e)| e.is_some())
    {
        let shown = dirs
            .iter()
            .find(|(h, _)| h.path() == d)
            .map_or(d, |(_, p)| p.clone());
        return Err(ReconcileError::Local {
            path: shown,
            source: io::Error::other(format!("fsync after removals: {e}")),
        });
    }
    if cx.pending.is_empty() {
        return Ok(());
    }
    let mut b = cx.local.journal.begin()?;
    for e in cx.pending.drain(..) {
        b.put(&e)?;
        b.log(
            e.stamp,
            if e.deleted { "delete" } else { "pull" },
            &e.path,
            None,
        )?;
    }
    b.commit()?;
    Ok(())
}
