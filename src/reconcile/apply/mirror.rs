//! Effects on the mirror: pushing a path (a directory or symlink at once, a file queued for the
//! batch), the mirror's parent directories, renaming a file there, and the mirror-side checks
//! and entries the other parts use.
//!
//! What it keeps: a path is written only while the mirror still holds what its state says
//! (changed there during the sync: deferred), and every write is recorded in the mirror's state.

use briefcase_mirror::MirrorExt;
use briefcase_mirror::{Entry, EntryKind, FileMeta, RelPath, RemoteStat};

use super::batch::send_removals;
use super::local::{full, local_unchanged_at};
use super::{Ctx, Outcome, Queued, StepError, StepResult};
use crate::reconcile::remote::remote_matches;
use crate::reconcile::{FailureKind, SyncReport};

/// The mirror-side counterpart: does the mirror still hold what its state says?
pub(super) async fn remote_unchanged(
    cx: &Ctx<'_>,
    p: &RelPath,
    recorded: Option<&Entry>,
) -> Result<bool, StepError> {
    let s = cx.mirror.stat(p).await?;
    let g = cx.mirror.capabilities();
    Ok(match (s, recorded) {
        (None, r) => r.is_none_or(|e| e.deleted),
        (Some(_), None) => false,
        (Some(_), Some(e)) if e.deleted => false,
        (Some(s), Some(e)) => remote_matches(e, &s, &g),
    })
}

/// `e` as the mirror holds it: with the mirror's inode and observed mtime from `s` (none: the
/// entry's own mtime, no inode).
///
/// Chunk lists stay in the local journal (and in a stick's own catalog): the mirror's manifest
/// records content by its whole-file hash, so a one-line edit of a big file does not rewrite a
/// list of thousands of chunks in the mirror's state.
pub(in crate::reconcile) fn mirror_entry(e: &Entry, s: Option<&RemoteStat>) -> Entry {
    let mut m = e.clone();
    m.chunks = Vec::new();
    match s {
        Some(s) => {
            m.inode = s.inode;
            m.observed_mtime_ns = s.mtime_ns;
        }
        None => {
            m.inode = 0;
            m.observed_mtime_ns = e.mtime_ns;
        }
    }
    m
}

/// The metadata a mirror stores for `e`.
pub(super) fn meta(e: &Entry) -> FileMeta {
    FileMeta {
        mode: e.mode,
        mtime_ns: e.mtime_ns,
    }
}

/// Makes sure the mirror has the parent directories of `p` (creating missing ones with the
/// local directory's metadata).
async fn remote_parents(cx: &mut Ctx<'_>, p: &RelPath) -> Result<(), StepError> {
    for a in p.ancestors() {
        if cx
            .st
            .entry(&a)
            .is_some_and(|e| !e.deleted && e.kind == EntryKind::Dir)
        {
            continue;
        }
        let m = match cx.local.journal.entry(&a)? {
            Some(e) if !e.deleted && e.kind == EntryKind::Dir => meta(&e),
            _ => FileMeta {
                mode: 0o755,
                mtime_ns: crate::journal::now_ns(),
            },
        };
        let s = cx.mirror.mkdir(&a, m).await?;
        // Record it, or the next push of this directory would find an unexpected directory on
        // the mirror and defer.
        if let Some(e) = cx.local.journal.entry(&a)? {
            if !e.deleted && e.kind == EntryKind::Dir {
                cx.st.insert_entry(mirror_entry(&e, Some(&s)));
            }
        }
    }
    Ok(())
}

/// Moves the mirror's file `from_r` to where `to_l` says (it was renamed here), if both mirror
/// paths still hold what its state says; `Ok(false)` when not (the caller copies instead).
pub(super) async fn rename_on_mirror(
    cx: &mut Ctx<'_>,
    to_l: &Entry,
    to_r: Option<&Entry>,
    from_l: &Entry,
    from_r: &Entry,
) -> Result<bool, StepError> {
    if !remote_unchanged(cx, &from_r.path, Some(from_r)).await?
        || !remote_unchanged(cx, &to_l.path, to_r).await?
    {
        return Ok(false);
    }
    remote_parents(cx, &to_l.path).await?;
    let s = cx.mirror.rename(&from_r.path, &to_l.path).await?;
    let s = if s.mode != to_l.mode || s.mtime_ns != to_l.mtime_ns {
        cx.mirror.set_meta(&to_l.path, meta(to_l)).await?
    } else {
        s
    };
    cx.st.insert_entry(mirror_entry(to_l, Some(&s)));
    cx.st.insert_entry(mirror_entry(from_l, None));
    Ok(true)
}

/// Makes the mirror's path match the local newer entry `l` (`r`: what the mirror's state holds
/// there): queues a removal or a file for its batch, sets metadata, or makes a directory or
/// symlink.
pub(super) async fn push(
    cx: &mut Ctx<'_>,
    l: Entry,
    r: Option<Entry>,
    report: &mut SyncReport,
) -> StepResult {
    let p = l.path.clone();
    // An earlier step of this sync may have written the path already (a parent directory made
    // for a child): what the state says now is what the mirror holds.
    let r = cx.st.entry(&p).cloned().or(r);
    // A file new to the mirror is checked to be still absent there when its batch is sent
    // (send_queued: one listing for a directory of new files, not a stat each).
    let new_file = l.kind == EntryKind::File && !l.deleted && r.as_ref().is_none_or(|e| e.deleted);
    if !new_file && !remote_unchanged(cx, &p, r.as_ref()).await? {
        return Ok(Outcome::Deferred(format!(
            "changed on mirror {} during the sync",
            cx.mirror.location()
        )));
    }
    let r_live = r.as_ref().filter(|e| !e.deleted);
    if l.deleted {
        if let Some(r) = r_live {
            // Removed in a batch (one fsync per directory); a directory waits for the removal
            // of what was queued below it.
            let depth = p.components().count();
            if cx
                .removals
                .last()
                .is_some_and(|(q, _)| q.path.components().count() > depth)
            {
                send_removals(cx, report).await.map_err(StepError::Fatal)?;
            }
            cx.removals.push((l, r.clone()));
            return Ok(Outcome::Done);
        }
        cx.st.insert_entry(mirror_entry(&l, None));
        return Ok(Outcome::Done);
    }
    // Same content already there: metadata only.
    if let Some(r) = r_live {
        if r.same_content(&l) {
            let s = if l.kind == EntryKind::File && (r.mode != l.mode || r.mtime_ns != l.mtime_ns) {
                report.pushed += 1;
                Some(cx.mirror.set_meta(&p, meta(&l)).await?)
            } else {
                cx.mirror.stat(&p).await?
            };
            cx.st.insert_entry(mirror_entry(&l, s.as_ref()));
            return Ok(Outcome::Done);
        }
        if r.kind != l.kind {
            cx.mirror.remove(&p).await?;
        }
    }
    remote_parents(cx, &p).await?;
    let s = match l.kind {
        EntryKind::Dir => cx.mirror.mkdir(&p, meta(&l)).await?,
        EntryKind::Symlink => {
            let target = l.symlink_target.clone().unwrap_or_default();
            cx.mirror.symlink(&p, &target).await?
        }
        EntryKind::File => {
            // The local file's directory stays open while the batch waits (the next files
            // there are resolved through it).
            let here = full(cx, &p)?;
            if !local_unchanged_at(cx, &p, &here, Some(&l))? {
                return Ok(Outcome::Deferred(
                    "changed here during the sync; it will be sent with its new content".into(),
                ));
            }
            if let Some(max) = cx.mirror.capabilities().max_file_size {
                if l.size > max {
                    return Err(StepError::mirror(
                        FailureKind::Refused,
                        format!(
                            "{p} ({} bytes) is larger than mirror {} can hold ({max} bytes); use an exFAT or ext4 medium or a stick: mirror",
                            l.size,
                            cx.mirror.location()
                        ),
                    ));
                }
            }
            // Sent in a batch (one flush for many small files); recorded there.
            cx.queued_bytes += l.size;
            cx.queued.push(Queued {
                entry: l,
                new_file,
                _here: here,
            });
            return Ok(Outcome::Done);
        }
    };
    report.pushed += 1;
    cx.st.insert_entry(mirror_entry(&l, Some(&s)));
    Ok(Outcome::Done)
}
