//! Settling concurrent versions on the local side, as new local changes the next round sends:
//! a merge of the same content, edit beats delete, and conflicts, whose losing version is kept
//! beside the winner under a conflict copy name (once, not once per sync), or, inside a
//! version-control directory, as a ref or not at all (crate::vcs).
//!
//! Invariant 5: concurrent versions never overwrite each other silently; a copy is never
//! written over.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use briefcase_mirror::fsutil::{self, mtime_ns};
use briefcase_mirror::{Entry, EntryKind, RelPath, Stamp};

use super::batch::flush;
use super::local::{
    fetch_verified, full, local_entry, local_io, local_parents, local_unchanged, materialise,
    mismatch, vcs_busy,
};
use super::{Ctx, Outcome, StepError, StepResult};
use crate::reconcile::conflict::{conflict_name, conflict_name_tagged, original_of, CONFLICT_TAG};
use crate::reconcile::plan::{Resolution, Side};
use crate::reconcile::{FailureKind, SyncReport};

/// A new local stamp for `e` whose version dominates both `e` and `other`.
pub(super) fn settled(
    cx: &mut Ctx<'_>,
    e: Entry,
    other: &Entry,
    m: Option<&fs::Metadata>,
    op: &str,
    detail: Option<&str>,
) -> Result<Stamp, StepError> {
    settle_as(cx, e, other, m, op, detail, true)
}

/// [`settled`], with the version the join of both plus a new event of this replica (`event`),
/// or the join alone. A merge of the same content must not add an event: two machines merging
/// the same content would then make two new concurrent versions, which two mirrors they both
/// sync with carry across to be merged again, forever. The join of the same versions is the
/// same everywhere, and the new stamp still marks the entry as changed here, to be sent on.
fn settle_as(
    cx: &mut Ctx<'_>,
    mut e: Entry,
    other: &Entry,
    m: Option<&fs::Metadata>,
    op: &str,
    detail: Option<&str>,
    event: bool,
) -> Result<Stamp, StepError> {
    flush(cx).map_err(StepError::Fatal)?;
    let mut b = cx.local.journal.begin()?;
    let stamp = b.next_osn();
    e.version = e.version.merged(&other.version);
    if event {
        e.version.set(stamp.replica, stamp.osn);
    }
    e.stamp = stamp;
    if let Some(m) = m {
        e.inode = m.ino();
        e.observed_mtime_ns = mtime_ns(m);
    }
    b.put(&e)?;
    b.log(stamp, op, &e.path, detail)?;
    b.commit()?;
    Ok(stamp)
}

/// Journals a conflict copy as a new local file.
fn record_copy(
    cx: &mut Ctx<'_>,
    mut e: Entry,
    at: &RelPath,
    m: &fs::Metadata,
    of: &RelPath,
) -> Result<(), StepError> {
    let mut b = cx.local.journal.begin()?;
    let old = b.entry(at)?;
    let stamp = b.next_osn();
    e.path = at.clone();
    e.version = old.map(|o| o.version).unwrap_or_default();
    e.version.set(stamp.replica, stamp.osn);
    e.stamp = stamp;
    e.inode = m.ino();
    e.observed_mtime_ns = mtime_ns(m);
    b.put(&e)?;
    b.log(
        stamp,
        "conflict",
        at,
        Some(&format!("losing version of {of}")),
    )?;
    b.commit()?;
    Ok(())
}

/// Settles the concurrent versions `l` (here) and `r` (the mirror's) as `how` says, on the local
/// side, as a new local change the next round sends.
pub(super) async fn resolve(
    cx: &mut Ctx<'_>,
    l: Entry,
    r: Entry,
    how: Resolution,
    report: &mut SyncReport,
) -> StepResult {
    let p = l.path.clone();
    if let Some(why) = vcs_busy(cx, &p)? {
        return Ok(Outcome::Deferred(why));
    }
    // A directory deleted here that the mirror keeps: if a directory is here now, nothing can
    // be lost (`materialise` keeps it, and what it holds has entries of its own), whoever made
    // it; e.g. this sync, for a file renamed into it (renames are taken before the other steps).
    let dir_there = matches!(how, Resolution::EditBeatsDelete { live: Side::Remote })
        && r.kind == EntryKind::Dir
        && fs::symlink_metadata(full(cx, &p)?).is_ok_and(|m| m.is_dir());
    if !dir_there && !local_unchanged(cx, &p, Some(&l))? {
        cx.local.rescan(Some(std::slice::from_ref(&p)))?;
        return Ok(Outcome::Deferred("changed here during the sync".into()));
    }
    match how {
        Resolution::Merge | Resolution::EditBeatsDelete { live: Side::Local } => {
            let m = fs::symlink_metadata(full(cx, &p)?).ok();
            let (op, detail) = if how == Resolution::Merge {
                report.merged += 1;
                ("merge", "same content on both sides")
            } else {
                ("keep", "edited here, deleted elsewhere: the edit wins")
            };
            let cur = if l.deleted {
                local_entry(&l, None)
            } else {
                local_entry(&l, m.as_ref())
            };
            settle_as(
                cx,
                cur,
                &r,
                if l.deleted { None } else { m.as_ref() },
                op,
                Some(detail),
                how != Resolution::Merge,
            )?;
            Ok(Outcome::Done)
        }
        Resolution::EditBeatsDelete { live: Side::Remote } => {
            match materialise(cx, &r, &p, Some(&l)).await? {
                Some(m) => {
                    report.pulled += 1;
                    settled(
                        cx,
                        r.clone(),
                        &l,
                        Some(&m),
                        "keep",
                        Some("edited elsewhere, deleted here: the edit wins"),
                    )?;
                    Ok(Outcome::Done)
                }
                None => Ok(Outcome::Deferred("changed here during the sync".into())),
            }
        }
        Resolution::Conflict { winner } => {
            let loser = if winner == Side::Local { &r } else { &l };
            let who = replica_name(cx, loser);
            // Inside .git/.hg/.svn a conflict copy would corrupt the repository (crate::vcs).
            let vcs = crate::vcs::loser_of(&p, &who);
            let mut is_ref = false;
            let target = match vcs {
                None => copy_target(cx, &p, loser)?,
                Some(crate::vcs::Loser::KeepAsRef(c)) => {
                    is_ref = true;
                    ref_target(cx, c, loser)?
                }
                Some(crate::vcs::Loser::PackedRefs { git_dir }) => {
                    keep_packed_refs(cx, &l, &r, winner, &git_dir, &who).await?;
                    return winner_takes_all(cx, l, r, winner).await;
                }
                Some(crate::vcs::Loser::Drop) => return winner_takes_all(cx, l, r, winner).await,
            };
            let copy = match &target {
                CopyAt::Kept(c) | CopyAt::Free(c, _) => c.clone(),
            };
            if winner == Side::Local {
                // Keep the mirror's version beside ours, unless it is kept already.
                if let CopyAt::Free(_, copy_here) = &target {
                    match materialise(cx, &r, &copy, copy_here.as_ref()).await? {
                        Some(m) => record_copy(cx, r.clone(), &copy, &m, &p)?,
                        None => {
                            return Ok(Outcome::Deferred(format!(
                                "{copy} changed here during the sync"
                            )))
                        }
                    }
                }
                keep_ours(
                    cx,
                    &l,
                    &r,
                    "conflict",
                    &format!("kept this version; the other is {copy}"),
                )?;
            } else {
                // Move our version aside (same inode: nothing is copied), unless that content
                // is kept already; then take theirs.
                let at_p = if let CopyAt::Free(..) = &target {
                    if is_ref {
                        local_parents(cx, &copy)?;
                    }
                    let (src, dst) = (full(cx, &p)?, full(cx, &copy)?);
                    let moved = if is_ref {
                        // A ref kept from this replica before is simply moved on.
                        fs::rename(src.path(), dst.path())
                    } else {
                        rename_noreplace(src.path(), dst.path())
                    };
                    match moved {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            cx.local.rescan(Some(std::slice::from_ref(&copy)))?;
                            return Ok(Outcome::Deferred(format!(
                                "{copy} appeared here during the sync"
                            )));
                        }
                        Err(e) => return Err(local_io(cx, &p, "move aside", e)),
                    }
                    let m = fs::symlink_metadata(dst.path())
                        .map_err(|e| local_io(cx, &copy, "stat", e))?;
                    record_copy(cx, l.clone(), &copy, &m, &p)?;
                    // The name is now free (the journal still says `l` was there).
                    let mut gone = l.clone();
                    gone.deleted = true;
                    gone
                } else {
                    l.clone()
                };
                match materialise(cx, &r, &p, Some(&at_p)).await? {
                    Some(m) => {
                        report.pulled += 1;
                        settled(
                            cx,
                            r.clone(),
                            &l,
                            Some(&m),
                            "conflict",
                            Some(&format!("took the other version; ours is {copy}")),
                        )?;
                    }
                    None => {
                        cx.local.rescan(Some(&[p.clone(), copy.clone()]))?;
                        return Ok(Outcome::Deferred("changed here during the sync".into()));
                    }
                }
            }
            tracing::warn!(path = %p, copy = %copy, "conflict: both versions kept");
            report.conflicts.push(copy.display());
            Ok(Outcome::Done)
        }
    }
}

/// The name of the replica that made `e` (its short ID when no name is known).
fn replica_name(cx: &Ctx<'_>, e: &Entry) -> String {
    cx.names
        .get(&e.stamp.replica)
        .cloned()
        .unwrap_or_else(|| e.stamp.replica.short())
}

/// Where a losing git ref is kept (`refs/briefcase/REPLICA/…`): already there with that value
/// (here or on the mirror), or to be written over whatever an older loss of the same replica
/// left there (a ref moves; it is not a copy to keep beside).
fn ref_target(cx: &Ctx<'_>, at: RelPath, loser: &Entry) -> Result<CopyAt, StepError> {
    let here = cx.local.journal.entry(&at)?;
    let same = |e: &Entry| !e.deleted && e.same_content(loser);
    if here.as_ref().is_some_and(same) || cx.st.entry(&at).is_some_and(same) {
        return Ok(CopyAt::Kept(at));
    }
    Ok(CopyAt::Free(at, here))
}

/// Settles `l` (the local version, as it is on disk now) over `r` with a new local stamp.
fn keep_ours(
    cx: &mut Ctx<'_>,
    l: &Entry,
    r: &Entry,
    op: &str,
    detail: &str,
) -> Result<(), StepError> {
    let m = fs::symlink_metadata(full(cx, &l.path)?).ok();
    settled(
        cx,
        local_entry(l, m.as_ref()),
        r,
        m.as_ref(),
        op,
        Some(detail),
    )?;
    Ok(())
}

/// Concurrent versions of a cache, log or object inside a version-control directory: the
/// winner's copy stays (or replaces ours), nothing is kept beside it (crate::vcs).
async fn winner_takes_all(cx: &mut Ctx<'_>, l: Entry, r: Entry, winner: Side) -> StepResult {
    let p = l.path.clone();
    if winner == Side::Local {
        keep_ours(
            cx,
            &l,
            &r,
            "merge",
            "version-control metadata changed on both sides: this version kept",
        )?;
        return Ok(Outcome::Done);
    }
    match materialise(cx, &r, &p, Some(&l)).await? {
        Some(m) => {
            settled(
                cx,
                r.clone(),
                &l,
                Some(&m),
                "merge",
                Some("version-control metadata changed on both sides: the other version taken"),
            )?;
            Ok(Outcome::Done)
        }
        None => {
            cx.local.rescan(Some(std::slice::from_ref(&p)))?;
            Ok(Outcome::Deferred("changed here during the sync".into()))
        }
    }
}

/// Both sides changed `packed-refs`: before the winner's file is taken, every ref of the loser's
/// that the winner's does not hold with the same value is written as a loose ref under
/// `GIT_DIR/refs/briefcase/REPLICA/` here (journaled now, sent by the next round), so no line
/// of work is lost.
async fn keep_packed_refs(
    cx: &mut Ctx<'_>,
    l: &Entry,
    r: &Entry,
    winner: Side,
    git_dir: &RelPath,
    who: &str,
) -> Result<(), StepError> {
    if l.kind != EntryKind::File || r.kind != EntryKind::File || l.deleted || r.deleted {
        return Ok(());
    }
    let local_path = full(cx, &l.path)?;
    let ours = fs::read(local_path.path()).map_err(|e| local_io(cx, &l.path, "read", e))?;
    let Some(tmp) = fetch_verified(cx, r, &local_path, false).await? else {
        return Err(mismatch(cx, r));
    };
    let theirs = fs::read(tmp.path());
    let _ = fs::remove_file(tmp.path());
    let theirs = theirs.map_err(|e| local_io(cx, &r.path, "read", e))?;
    let (won, lost) = if winner == Side::Local {
        (&ours, &theirs)
    } else {
        (&theirs, &ours)
    };
    let mut written = Vec::new();
    for (name, id) in crate::vcs::packed_refs_lost(won, lost) {
        let tail = name.strip_prefix("refs/").unwrap_or(&name);
        let rel = format!(
            "{}/refs/{}/{}/{tail}",
            git_dir.display(),
            crate::vcs::REFS_NAMESPACE,
            crate::vcs::ref_component(who)
        );
        let Ok(at) = RelPath::try_from(rel.as_str()) else {
            continue;
        };
        local_parents(cx, &at)?;
        let dest = full(cx, &at)?;
        fsutil::replace_with(dest.path(), None, |f| {
            io::Write::write_all(f, format!("{id}\n").as_bytes())
        })
        .map_err(|e| local_io(cx, &at, "write", e))?;
        tracing::warn!(path = %at, "a ref of the other side's packed-refs kept beside ours");
        written.push(at);
    }
    if !written.is_empty() {
        cx.local.rescan(Some(&written))?;
    }
    Ok(())
}

/// Where the losing version of a conflict is kept.
enum CopyAt {
    /// That very content is already kept as a copy of the path (here or on the mirror):
    /// DESIGN.md keeps the same losing content once, not once per sync.
    Kept(RelPath),
    /// A free name, with what the journal holds there (nothing, or a tombstone).
    Free(RelPath, Option<Entry>),
}

/// Picks the conflict copy name for the losing version `loser` of `p`: the plain
/// `NAME.conflict-REPLICA-TIME.EXT` when free, else the same with a content tag (so two losing
/// versions from one replica in the same second never share a name: a copy is never written
/// over). Names taken here, on disk (even unjournaled) or on the mirror all count as taken.
fn copy_target(cx: &Ctx<'_>, p: &RelPath, loser: &Entry) -> Result<CopyAt, StepError> {
    let who = replica_name(cx, loser);
    let base = conflict_name(p, &who, loser.mtime_ns);

    // Copies of `p` all start with `DIR/STEM.conflict-`.
    let b = base.as_bytes();
    let tag_at = b
        .windows(CONFLICT_TAG.len())
        .rposition(|w| w == CONFLICT_TAG.as_bytes())
        .map_or(b.len(), |i| i + CONFLICT_TAG.len());
    let prefix = &b[..tag_at];
    let kept =
        |e: &Entry| !e.deleted && e.same_content(loser) && original_of(&e.path).as_ref() == Some(p);
    if let Some(e) = cx
        .local
        .journal
        .entries_with_prefix(prefix)?
        .into_iter()
        .find(|e| kept(e))
    {
        return Ok(CopyAt::Kept(e.path));
    }
    if let Some(e) = cx
        .st
        .entries()
        .values()
        .skip_while(|e| e.path.as_bytes() < prefix)
        .take_while(|e| e.path.as_bytes().starts_with(prefix))
        .find(|e| kept(e))
    {
        return Ok(CopyAt::Kept(e.path.clone()));
    }

    let hex = match (loser.kind, loser.hash, &loser.symlink_target) {
        (EntryKind::File, Some(h), _) => h.to_hex(),
        (_, _, Some(t)) => blake3::hash(t).to_hex().to_string(),
        _ => blake3::hash(p.as_bytes()).to_hex().to_string(),
    };
    let candidates = std::iter::once(base.clone())
        .chain([8, 16, 64].map(|n| conflict_name_tagged(p, &who, loser.mtime_ns, Some(&hex[..n]))));
    for c in candidates {
        let here = cx.local.journal.entry(&c)?;
        let taken = here.as_ref().is_some_and(|e| !e.deleted)
            || fs::symlink_metadata(full(cx, &c)?).is_ok()
            || cx.st.entry(&c).is_some_and(|e| !e.deleted);
        if !taken {
            return Ok(CopyAt::Free(c, here));
        }
    }
    Err(StepError::local(
        FailureKind::Exists,
        format!(
            "folder {}: every conflict copy name for {p} is taken; rename or remove the old copies (briefcase conflicts) and sync again",
            cx.local.root.display()
        ),
    ))
}

/// `rename(2)` that fails with `AlreadyExists` instead of replacing `dst` (`renameat2` with
/// `RENAME_NOREPLACE`; a link-then-unlink fallback where the file system lacks it).
fn rename_noreplace(src: &Path, dst: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    match renameat_with(CWD, src, CWD, dst, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            fs::hard_link(src, dst)?;
            fs::remove_file(src)
        }
        Err(e) => Err(e.into()),
    }
}
