//! The reconciliation engine: one two-way sync of the local replica with one mirror.
//!
//! 1. Open the mirror: absent root or missing marker → offline, nothing deleted (invariant 4).
//! 2. Load its state (newest valid generation) and scan its data against it, so edits made
//!    behind briefcase's back enter the mirror's journal under the mirror's replica ID.
//! 3. Take each side's entries above the other's knowledge ("reconcile by OSN"), plan per path
//!    ([`plan`], pure), refuse a mass deletion (invariant 7), and apply ([`apply`]).
//! 4. Commit: the mirror's state after its data, the local journal per batch; knowledge vectors
//!    advance only when every change was integrated, so an interrupted or partial sync is simply
//!    resumed next time (a transient error never discards sync state).
//!
//! Concurrent versions are settled on the local side as new local changes (a merge, or a
//! conflict copy), which the next round pushes; a sync runs rounds until nothing is left.

pub mod apply;
pub mod conflict;
pub mod failure;
pub mod lease;
pub mod plan;
pub mod remote;

use std::collections::BTreeMap;
use std::path::PathBuf;

use briefcase_mirror::{
    state, EntryKind, Mirror, MirrorError, MirrorState, Presence, RelPath, ReplicaId,
    VectorOrdering,
};

use crate::journal::JournalError;
use crate::replica::{LocalReplica, ReplicaError};
pub use failure::{FailureKind, PathFailure};
pub use plan::{Resolution, Side, Step};

/// Options of one sync.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Plan only; change nothing on either side.
    pub dry_run: bool,
    /// Allow a sync that deletes more than half of a replica's files.
    pub allow_mass_delete: bool,
    /// Push local changes but never pull (the mirror is a copy).
    pub send_only: bool,
    /// Rescan the whole local tree (one-shot sync; the watcher keeps it fresh otherwise), while
    /// the mirror is read.
    pub rescan_local: bool,
    /// Most rounds (settle conflicts, then push the settled state).
    pub max_rounds: usize,
    /// A replica with at least this many files is protected by the half rule.
    pub mass_delete_min_files: usize,
    /// Also stop when more than this many files would be deleted (None: no absolute limit).
    pub max_deletes: Option<usize>,
    /// Which part of the mirror to scan for changes made behind briefcase's back.
    pub mirror_scan: MirrorScan,
    /// The mirror lease: how long it lasts, how long to wait for another machine's.
    pub lease: lease::LeaseOptions,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            dry_run: false,
            allow_mass_delete: false,
            send_only: false,
            rescan_local: true,
            max_rounds: 4,
            mass_delete_min_files: 10,
            max_deletes: None,
            mirror_scan: MirrorScan::Full,
            lease: lease::LeaseOptions::default(),
        }
    }
}

/// What a sync did (also sent over the daemon's control socket, hence `Deserialize`).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct SyncReport {
    /// Mirror name.
    pub mirror: String,
    /// Paths written to the mirror (files, dirs, links, metadata).
    pub pushed: usize,
    /// Paths written locally.
    pub pulled: usize,
    /// Paths removed on the mirror.
    pub removed_remote: usize,
    /// Paths removed locally.
    pub removed_local: usize,
    /// Renames done as renames (no data copied).
    pub renamed: usize,
    /// Concurrent versions with the same content, merged.
    pub merged: usize,
    /// Conflict copies created (paths of the copies).
    pub conflicts: Vec<String>,
    /// Changes found on the mirror that were made behind briefcase's back.
    pub remote_changes_found: usize,
    /// Steps postponed because a side changed during the sync (redone next sync).
    pub deferred: Vec<String>,
    /// Steps that failed for one path (the others went ahead), each with its path, side, kind
    /// and message; retried next sync. In JSON, the messages.
    pub failed: Vec<PathFailure>,
    /// Planned steps (dry run), as `op path`.
    pub planned: Vec<String>,
    /// Whether both sides are now known to be in sync (knowledge advanced).
    pub complete: bool,
    /// Deletions held back by the mass-deletion guard (invariant 7): why, with the command that
    /// lets them through. Everything else was synced; the mirror shows as paused until then.
    #[serde(default)]
    pub held: Option<String>,
}

/// Why a sync could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// A mirror error (offline, I/O, corrupt state).
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    /// A local replica error.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    /// A journal error.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The mirror belongs to another folder.
    #[error("mirror {mirror} at {location} belongs to folder {found}, not to folder {expected} of {folder}; check the target path")]
    ForeignMirror {
        /// Mirror name.
        mirror: String,
        /// Location.
        location: String,
        /// Local folder root.
        folder: PathBuf,
        /// The local folder ID.
        expected: String,
        /// The mirror's.
        found: String,
    },
    /// The sync would delete too much (invariant 7); reported in [`SyncReport::held`] while the
    /// rest of the sync goes ahead.
    #[error("sync of {folder} with mirror {mirror}: {count} of {total} files on {side} would be deleted; those deletions are held back (everything else is synced). If that is what you want, run `briefcase sync {folder} --mirror {mirror} --allow-mass-delete`")]
    MassDelete {
        /// Local folder root.
        folder: PathBuf,
        /// Mirror name.
        mirror: String,
        /// "this machine" or "the mirror".
        side: String,
        /// Files that would go.
        count: usize,
        /// Files there are.
        total: usize,
    },
    /// The mirror's state claims what cannot be (forged or damaged; see `check_claims`):
    /// nothing was applied on either side.
    #[error("mirror {mirror} at {location} (folder {folder}): its state cannot be right: {reason}. It was forged or damaged; nothing was applied on either side. If nobody else can write there, move the mirror's .briefcase directory away and run `briefcase mirror add` again; otherwise find out who wrote it")]
    ImpossibleState {
        /// Local folder root.
        folder: PathBuf,
        /// Mirror name.
        mirror: String,
        /// Location.
        location: String,
        /// The impossible claim.
        reason: String,
    },
    /// Another machine holds the mirror's lease ([`lease`]) and kept it for longer than this
    /// sync waits: nothing was done; sync again later.
    #[error("mirror {mirror} at {location} is busy: synced by {holder}; nothing was done here, sync again when it is finished")]
    Busy {
        /// Mirror name.
        mirror: String,
        /// Location.
        location: String,
        /// Who holds it, and since when.
        holder: String,
    },
    /// This sync stalled for longer than its lease and another machine took the mirror over:
    /// it stopped where it stood (as after a crash; nothing is lost) and is redone next sync.
    #[error("mirror {mirror} at {location}: this sync lost the mirror's lease to {holder} (it stalled for more than the lease's {seconds} s); it stopped, nothing is lost, and it is redone at the next sync")]
    LeaseLost {
        /// Mirror name.
        mirror: String,
        /// Location.
        location: String,
        /// Who holds it now.
        holder: String,
        /// The lease's length (s).
        seconds: f64,
    },
    /// A local I/O error outside a single path's apply.
    #[error("folder {path}: {source}")]
    Local {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Result of a sync.
pub type ReconcileResult<T> = Result<T, ReconcileError>;

/// Makes `mirror` a replica of the local folder if it is absent, empty or (when `adopt`) holds
/// files but no marker; checks the folder ID if it is already initialised. Returns the mirror's
/// state. Existing files of an adopted target enter as the mirror's own changes at the next sync
/// (same content merges; different content becomes a conflict: nothing is lost).
///
/// # Errors
/// [`ReconcileError::ForeignMirror`]; mirror errors.
pub async fn ensure_initialised(
    local: &LocalReplica,
    mirror: &dyn Mirror,
    name: &str,
    adopt: bool,
) -> ReconcileResult<MirrorState> {
    let folder = local.journal.folder_id();
    match mirror.probe().await? {
        Presence::Marked(f) if f != folder => {
            return Err(foreign(local, mirror, name, f));
        }
        Presence::Marked(_) => {}
        Presence::Absent | Presence::Empty => mirror.init(folder).await?,
        Presence::Unmarked if adopt => mirror.init(folder).await?,
        Presence::Unmarked => {
            return Err(MirrorError::Offline {
                location: mirror.location(),
                reason: "it holds files but no briefcase marker; add it with `briefcase mirror add` to adopt them".into(),
            }
            .into())
        }
    }
    // Two machines adding the same new mirror at once must not both store a first state (the
    // second would replace the first's, and the first's mirror replica would vanish): the first
    // state is stored under the lease, like every later one.
    let lease = lease::acquire(
        mirror,
        name,
        local.journal.replica_id(),
        local.journal.name(),
        lease::LeaseOptions::default(),
    )
    .await?;
    let first = async {
        match state::load(mirror).await? {
            Some(l) => Ok(l.state),
            None => {
                let mut st =
                    MirrorState::new(folder, ReplicaId(crate::replica::random_u64()), name);
                state::store(mirror, &state::Stored::default(), &mut st).await?;
                Ok(st)
            }
        }
    };
    lease::hold(mirror, name, lease, first).await
}

fn foreign(
    local: &LocalReplica,
    mirror: &dyn Mirror,
    name: &str,
    found: briefcase_mirror::FolderId,
) -> ReconcileError {
    ReconcileError::ForeignMirror {
        mirror: name.to_string(),
        location: mirror.location(),
        folder: local.root.clone(),
        expected: local.journal.folder_id().to_string(),
        found: found.to_string(),
    }
}

/// Opens an initialised mirror for syncing: offline unless its marker names this folder.
async fn open_mirror(
    local: &LocalReplica,
    mirror: &dyn Mirror,
    name: &str,
    cached: Option<(state::Stored, MirrorState)>,
) -> ReconcileResult<(state::Stored, MirrorState)> {
    match mirror.probe().await? {
        Presence::Marked(f) if f == local.journal.folder_id() => {}
        Presence::Marked(f) => return Err(foreign(local, mirror, name, f)),
        Presence::Absent => {
            return Err(MirrorError::Offline {
                location: mirror.location(),
                reason: format!("its root is missing; is it mounted or plugged in? Nothing was deleted (mirror {name})"),
            }
            .into())
        }
        Presence::Empty | Presence::Unmarked => {
            let marker = match mirror.marker_location() {
                Some(m) => format!("its folder marker {m}"),
                None => "its folder marker".to_string(),
            };
            return Err(MirrorError::Offline {
                location: mirror.location(),
                reason: format!("{marker} is missing; is it mounted or plugged in? Nothing was deleted (mirror {name})"),
            }
            .into())
        }
    }
    let known = cached.as_ref().map(|(s, _)| (s.generation, s.checksum));
    match state::load_unless(mirror, known).await? {
        state::Reload::Unchanged => match cached {
            Some(c) => Ok(c),
            None => unreachable_reload(mirror),
        },
        state::Reload::Loaded(l) if l.state.folder_id == local.journal.folder_id() => {
            let mut l = l;
            check_claims(local, mirror, name, &mut l.state)?;
            Ok((l.stored, l.state))
        }
        state::Reload::Loaded(l) => Err(foreign(local, mirror, name, l.state.folder_id)),
        state::Reload::Absent => Ok((
            state::Stored::default(),
            MirrorState::new(
                local.journal.folder_id(),
                ReplicaId(crate::replica::random_u64()),
                name,
            ),
        )),
    }
}

/// Checks what a freshly loaded mirror state claims (issue 9, invariant 8). A `dir` mirror is
/// writable by whoever can write the NAS, and its state's checksum is not a secret: a forged
/// generation whose knowledge vector says "integrated everything up to 2^63" would stop
/// replication both ways and spread to every other mirror through this machine's knowledge.
///
/// - **About this machine** the state may claim no knowledge, version or stamp above the last
///   OSN it issued: that is impossible, and refused.
/// - **About another replica** it may claim no knowledge above the highest OSN seen from it
///   anywhere: this machine's knowledge, the stamps and version vectors of the state's entries,
///   the mirror's own OSN counter. A claim above that is not always a forgery (a merge of the
///   same content takes a new OSN but adds no event to any vector, and a later version may
///   replace its entry), so it is clamped to that bound: the mirror then offers a few changes
///   again, which the planner finds equal, and a forged vector never enters this machine's
///   knowledge. A claim more than [`ABSURD_OSN_GAP`] above it is refused as forged.
///
/// # Errors
/// [`ReconcileError::ImpossibleState`], naming the claim.
fn check_claims(
    local: &LocalReplica,
    mirror: &dyn Mirror,
    name: &str,
    st: &mut MirrorState,
) -> ReconcileResult<()> {
    let me = local.journal.replica_id();
    if st.osn.0 > MAX_PLAUSIBLE_OSN {
        return Err(ReconcileError::ImpossibleState {
            folder: local.root.clone(),
            mirror: name.to_string(),
            location: mirror.location(),
            reason: format!(
                "its own change counter is {}, more than any replica can reach",
                st.osn.0
            ),
        });
    }
    let mut seen = local.journal.knowledge()?;
    let mine = seen.get(me);
    let refuse = |reason: String| ReconcileError::ImpossibleState {
        folder: local.root.clone(),
        mirror: name.to_string(),
        location: mirror.location(),
        reason,
    };
    for e in st.entries().values() {
        if e.version.get(me) > mine || (e.stamp.replica == me && e.stamp.osn > mine) {
            return Err(refuse(format!(
                "its entry for {} claims change {} of this machine, which has made only {}",
                e.path,
                e.version.get(me).0.max(e.stamp.osn.0),
                mine.0
            )));
        }
        for (r, o) in e.version.iter() {
            seen.raise(r, o);
        }
        seen.raise(e.stamp.replica, e.stamp.osn);
    }
    seen.raise(st.replica_id, st.osn);
    let mut clamped = st.knowledge.clone();
    for (r, o) in st.knowledge.iter() {
        let bound = seen.get(r);
        if o <= bound {
            continue;
        }
        if r == me || o.0 - bound.0 > ABSURD_OSN_GAP {
            let who = if r == me {
                "this machine".to_string()
            } else {
                format!("replica {}", r.short())
            };
            return Err(refuse(format!(
                "its knowledge vector claims change {} of {who}, but no replica has seen more than {}",
                o.0, bound.0
            )));
        }
        tracing::debug!(mirror = %name, replica = %r.short(), claimed = o.0, bound = bound.0, "knowledge above what was seen; clamped");
        clamped.set(r, bound);
    }
    st.knowledge = clamped;
    Ok(())
}

/// How far above the highest OSN seen from a replica a mirror's knowledge of it may be before
/// [`check_claims`] calls it forged rather than clamping it (no replica makes 2^32 changes
/// that leave no trace between two syncs).
const ABSURD_OSN_GAP: u64 = 1 << 32;

/// Highest OSN a replica's counter may hold (2^62): a million changes a second for 140,000
/// years. A mirror state above it is forged, and its next OSN could overflow.
const MAX_PLAUSIBLE_OSN: u64 = 1 << 62;

/// What a long-running caller (`watch`, the daemon) keeps between syncs with one mirror, so that
/// a sync after a small change costs what changed, not the size of the tree: the mirror's state
/// as this process last read or wrote it (re-read only when the mirror's newest generation is
/// another one, e.g. written by another machine), and whether leftover temp files were swept.
#[derive(Debug, Default)]
pub struct Session {
    /// What the mirror holds, and the state, as last read or stored.
    cached: Option<(state::Stored, MirrorState)>,
}

/// Which part of the mirror a sync scans for changes made behind briefcase's back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum MirrorScan {
    /// The whole mirror (a one-shot sync, a periodic pass, a watcher that lost events); also
    /// sweeps temp files left by an interrupted write.
    #[default]
    Full,
    /// Only these paths and what is below them (a watcher on the mirror reported them).
    Paths(Vec<RelPath>),
    /// Nothing: the caller watches the mirror and nothing was reported there (a sync for a local
    /// change). Writes still check each target on the mirror first (`apply`), so a change made
    /// there meanwhile is deferred, never overwritten.
    Skip,
}

/// `load_unless` says "unchanged" only when given a known state; kept as an error, not a panic.
fn unreachable_reload<T>(mirror: &dyn Mirror) -> ReconcileResult<T> {
    Err(MirrorError::Corrupt {
        location: mirror.location(),
        what: "state".into(),
        reason: "reported unchanged without a cached state (a bug); sync again".into(),
    }
    .into())
}

/// Runs one two-way sync of `local` with `mirror` (named `name` in the config).
///
/// # Errors
/// Offline and foreign mirrors, mass deletion, mirror/journal failures. Per-path failures do not
/// abort the sync; they are listed in [`SyncReport::failed`].
pub async fn sync(
    local: &mut LocalReplica,
    mirror: &dyn Mirror,
    name: &str,
    opts: &SyncOptions,
) -> ReconcileResult<SyncReport> {
    sync_session(local, mirror, name, opts, &mut Session::default()).await
}

/// [`sync`] for a caller that syncs with the same mirror again and again, keeping `session`
/// between calls (after an error the session forgets the state and the next sync reloads it).
///
/// Everything that reads or writes the mirror runs under its lease ([`lease`]): another machine
/// syncing the same mirror at the same moment waits (up to `opts.lease.wait`) instead of
/// interleaving its writes with ours. A dry run writes nothing and takes no lease.
///
/// # Errors
/// As [`sync`]; [`ReconcileError::Busy`] when another machine kept the mirror for longer than
/// the wait; [`ReconcileError::LeaseLost`] when this sync stalled past its lease.
pub async fn sync_session(
    local: &mut LocalReplica,
    mirror: &dyn Mirror,
    name: &str,
    opts: &SyncOptions,
    session: &mut Session,
) -> ReconcileResult<SyncReport> {
    if opts.dry_run {
        return sync_held(local, mirror, name, opts, session, None, &mut None).await;
    }
    // The local tree is walked on its own thread while the mirror's lease is taken and the
    // mirror is read and listed: the two walks are independent (rsync, too, walks both sides
    // at once), and on two cores the sync then costs the longer of them, not their sum.
    let mut walk = if opts.rescan_local {
        Some(LocalWalk::start(local)?)
    } else {
        None
    };
    let synced = async {
        let lease = lease::acquire(
            mirror,
            name,
            local.journal.replica_id(),
            local.journal.name(),
            opts.lease,
        )
        .await?;
        let fence = lease.as_ref().map(|l| l.fence(mirror, name));
        lease::hold(
            mirror,
            name,
            lease,
            sync_held(
                local,
                mirror,
                name,
                opts,
                session,
                fence.as_ref(),
                &mut walk,
            ),
        )
        .await
    }
    .await;
    // The mirror failed before the walk was joined (offline, busy): what the walk found is
    // journaled all the same, as when it ran first.
    if let Some(w) = walk.take() {
        w.finish(local).await?;
    }
    synced
}

/// A whole-tree rescan of the local folder ([`SyncOptions::rescan_local`]) walking on a
/// blocking thread while the sync reads the mirror; joined, and its changes journaled, before
/// anything is planned.
struct LocalWalk(tokio::task::JoinHandle<Result<crate::scan::Walked, crate::scan::ScanError>>);

impl LocalWalk {
    fn start(local: &LocalReplica) -> ReconcileResult<LocalWalk> {
        let walk = local.begin_rescan()?;
        Ok(LocalWalk(tokio::task::spawn_blocking(move || walk.run())))
    }

    async fn finish(self, local: &mut LocalReplica) -> ReconcileResult<()> {
        let walked = self.0.await.map_err(|e| ReconcileError::Local {
            path: local.root.clone(),
            source: std::io::Error::other(format!("the scan of the folder stopped: {e}")),
        })?;
        local.finish_rescan(walked, crate::replica::Seen::FoundByScan)?;
        Ok(())
    }
}

/// [`sync_session`] once the mirror's lease is held (or needs none): `fence` is checked before
/// each write of the mirror's state; `walk`, the local rescan running meanwhile, is joined once
/// the mirror has been read (a dry run neither rescans nor writes).
async fn sync_held(
    local: &mut LocalReplica,
    mirror: &dyn Mirror,
    name: &str,
    opts: &SyncOptions,
    session: &mut Session,
    fence: Option<&lease::Fence>,
    walk: &mut Option<LocalWalk>,
) -> ReconcileResult<SyncReport> {
    let fenced = || fence.map_or(Ok(()), lease::Fence::check);
    let mut report = SyncReport {
        mirror: name.to_string(),
        ..Default::default()
    };
    // Within a session every write is followed by this process's own store (or the error that
    // empties the session), so intents need checking only after a fresh load.
    let fresh = session.cached.is_none();
    let (mut stored, mut st) = open_mirror(local, mirror, name, session.cached.take()).await?;
    if !opts.dry_run {
        if opts.mirror_scan == MirrorScan::Full {
            // Temp files of a sync killed mid-write are garbage (invariant 2).
            let swept = mirror.sweep().await?;
            if swept > 0 {
                tracing::info!(mirror = %name, count = swept, "removed leftover temp files of an interrupted sync");
            }
        }
        // Our own writes of a sync that died before storing the state that records them.
        let adopted = if fresh {
            adopt_intents(mirror, stored.generation, &mut st).await?
        } else {
            0
        };
        // Changes made on the mirror behind briefcase's back.
        report.remote_changes_found = match &opts.mirror_scan {
            MirrorScan::Full => remote::scan_mirror(mirror, &mut st, &local.rules).await?,
            MirrorScan::Paths(ps) => {
                remote::scan_mirror_scoped(mirror, &mut st, &local.rules, Some(ps)).await?
            }
            MirrorScan::Skip => 0,
        };
        if adopted > 0 || report.remote_changes_found > 0 {
            // The mirror's new OSNs are stored before any of them is copied into the local
            // journal: issued again after a crash, one could name two different versions.
            fenced()?;
            stored = state::store(mirror, &stored, &mut st).await?;
        }
    }
    if let Some(w) = walk.take() {
        w.finish(local).await?;
    }
    let mut names_changed = st
        .replica_names
        .insert(local.journal.replica_id(), local.journal.name().to_string())
        .is_none_or(|old| old != local.journal.name());
    let known = local.journal.replica_names()?;
    for (r, n) in &known {
        if !st.replica_names.contains_key(r) {
            st.replica_names.insert(*r, n.clone());
            names_changed = true;
        }
    }
    if st
        .replica_names
        .iter()
        .any(|(r, n)| known.get(r) != Some(n))
    {
        let mut b = local.journal.begin()?;
        for (r, n) in &st.replica_names {
            b.name_replica(*r, n)?;
        }
        b.commit()?;
    }

    let mut complete = false;
    for _round in 0..opts.max_rounds.max(1) {
        let kl = local.journal.knowledge()?;
        let kr = st.knowledge.clone();
        // Each candidate with its local entry: those above the mirror's knowledge come with it;
        // the mirror's own candidates look theirs up.
        let mut candidates: BTreeMap<RelPath, Option<briefcase_mirror::Entry>> = BTreeMap::new();
        for e in local.journal.changes_since(&kr)? {
            candidates.insert(e.path.clone(), Some(e));
        }
        if !opts.send_only {
            for e in st.entries().values() {
                if !kl.covers(e.stamp) {
                    candidates.entry(e.path.clone()).or_insert(None);
                }
            }
        }
        let mut items = Vec::with_capacity(candidates.len());
        for (p, l) in candidates {
            let l = match l {
                Some(l) => Some(l),
                None => local.journal.entry(&p)?,
            };
            let r = st.entry(&p).cloned();
            items.push((p, l, r));
        }
        let mut steps = plan::plan(items);
        if opts.send_only {
            steps.retain(|s| matches!(s, Step::Push { .. }));
        }
        if let Some(why) = hold_mass_deletes(local, &st, name, &mut steps, opts)? {
            report.held = Some(why);
        }
        if opts.dry_run {
            report.planned = steps.iter().map(describe).collect();
            return Ok(report);
        }
        let had_work = !steps.is_empty();
        let had_resolve = steps.iter().any(|s| matches!(s, Step::Resolve { .. }));
        // What this round will write to the mirror, recorded before the first write.
        let intents: Vec<briefcase_mirror::Entry> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Push { local, .. } => Some(briefcase_mirror::Entry {
                    chunks: Vec::new(),
                    ..local.clone()
                }),
                _ => None,
            })
            .collect();
        if !intents.is_empty() {
            fenced()?;
            state::store_intents(mirror, stored.generation, &intents).await?;
        }
        let round = apply::apply(local, mirror, &mut st, steps, &mut report).await;
        // The mirror's state is stored after its data, even after a failure, so work is not
        // redone. Intents need no clearing: they hold only for the generation they were written
        // against, and this store starts a new one.
        // Held deletions are not integrated: knowledge stays put, so they are planned (and
        // held) again at every sync until they are let through.
        let integrated = round.is_ok()
            && report.deferred.is_empty()
            && report.failed.is_empty()
            && !had_resolve
            && report.held.is_none();
        if integrated {
            // Everything above each side's knowledge was integrated: advance both (the mirror's
            // in the same store as the round's work).
            let before = st.knowledge.clone();
            st.knowledge.merge(&kl);
            names_changed |= st.knowledge != before;
        }
        if had_work || stored.generation == 0 || (integrated && names_changed) {
            fenced()?;
            stored = state::store(mirror, &stored, &mut st).await?;
            names_changed = false;
        }
        round?;
        if integrated {
            let local_knows = local.journal.knowledge()?;
            let mut merged = local_knows.clone();
            merged.merge(&kr);
            let named =
                local.journal.replica_names()?.get(&st.replica_id) == Some(&name.to_string());
            if !opts.send_only && (merged != local_knows || !named) {
                let mut b = local.journal.begin()?;
                b.merge_knowledge(&kr);
                b.name_replica(st.replica_id, name)?;
                b.commit()?;
            }
            complete = true;
            break;
        }
        if !report.deferred.is_empty() || !report.failed.is_empty() {
            break;
        }
        if report.held.is_some() && !had_resolve {
            break;
        }
    }
    if names_changed && !opts.dry_run {
        fenced()?;
        stored = state::store(mirror, &stored, &mut st).await?;
    }
    session.cached = Some((stored, st));
    report.complete = complete;
    Ok(report)
}

/// Takes into `st` the entries this machine wrote to the mirror in a sync that died before
/// storing the state recording them ([`state::store_intents`]): a path whose content on the
/// mirror is exactly what was being written gets the written entry (as the lost state would have
/// had), instead of being found by [`remote::scan_mirror`] as an edit made behind briefcase's back.
/// Anything else on the mirror is left to the scan. Returns how many entries were taken.
async fn adopt_intents(
    mirror: &dyn Mirror,
    generation: u64,
    st: &mut MirrorState,
) -> ReconcileResult<usize> {
    if !mirror.capabilities().two_way {
        return Ok(0);
    }
    let intents = state::load_intents(mirror, generation).await?;
    if intents.is_empty() {
        return Ok(0);
    }
    let g = mirror.capabilities();
    let tmpdir = tempfile::tempdir().map_err(|e| ReconcileError::Local {
        path: std::env::temp_dir(),
        source: e,
    })?;
    let mut adopted = 0;
    for e in intents {
        let old = st.entry(&e.path);
        // Only what the push would have recorded: newer than the state's entry.
        if old.is_some_and(|o| e.version.compare(&o.version) != VectorOrdering::Greater) {
            continue;
        }
        let s = mirror.stat(&e.path).await?;
        if let (Some(o), Some(s)) = (old, s.as_ref()) {
            if remote::remote_matches(o, s, &g) {
                continue; // the write did not happen
            }
        }
        let written = match (s.as_ref(), e.deleted) {
            (None, true) => true,
            (Some(s), false) if s.kind == e.kind => match s.kind {
                EntryKind::Dir => true,
                EntryKind::Symlink => s.symlink_target == e.symlink_target,
                EntryKind::File => {
                    s.size == e.size && {
                        let dest = tmpdir.path().join("probe");
                        let got = mirror.get(&e.path, &dest).await?;
                        let h = crate::scan::hash_file(&dest).map(|r| r.0).ok();
                        let _ = std::fs::remove_file(&dest);
                        got.size == e.size && h.is_some() && h == e.hash
                    }
                }
            },
            _ => false,
        };
        if written {
            let m = apply::mirror_entry(&e, s.as_ref());
            tracing::debug!(path = %e.path, "written by an interrupted sync; taken as such");
            st.insert_entry(m);
            adopted += 1;
        }
    }
    Ok(adopted)
}

fn describe(s: &Step) -> String {
    let p = s.path().display();
    match s {
        Step::Push { local, .. } if local.deleted => format!("delete on mirror  {p}"),
        Step::Push { .. } => format!("push              {p}"),
        Step::Pull { remote, .. } if remote.deleted => format!("delete here       {p}"),
        Step::Pull { .. } => format!("pull              {p}"),
        Step::Resolve {
            how: Resolution::Merge,
            ..
        } => format!("merge (same)      {p}"),
        Step::Resolve {
            how: Resolution::EditBeatsDelete { .. },
            ..
        } => format!("keep edit         {p}"),
        Step::Resolve {
            how: Resolution::Conflict { .. },
            ..
        } => format!("conflict          {p}"),
    }
}

/// The mass-deletion guard (invariant 7; docs/architecture.md, "The mass-deletion guard").
/// Takes out of `steps` the deletions it holds back and returns why (the text of
/// [`ReconcileError::MassDelete`]), or `None`. Everything else in `steps` goes ahead: a held
/// deletion never holds back the rest of the folder.
///
/// Deletions are weighed by how they came to light:
/// - *found* — this machine's full scan found the files gone (at start after downtime, the
///   periodic rescan, a one-shot `sync`), or a scan of this mirror did (edits behind
///   briefcase's back: an emptied share). These are what an unmounted disk or a wiped folder
///   look like: when they would delete more than half of the other side's files (of at least
///   [`SyncOptions::mass_delete_min_files`]), they are held.
/// - *watched* — the watcher saw each one go in the present folder (`git gc`, `rm -rf target/`,
///   a branch switch), or another machine recorded them (its own guard weighed them there).
///   Work the user is doing: never held, unless together with the found ones they would leave
///   the other side without a single file (a folder emptied while watched still looks wiped).
///
/// [`SyncOptions::max_deletes`] holds any deletion beyond that count.
fn hold_mass_deletes(
    local: &LocalReplica,
    st: &MirrorState,
    name: &str,
    steps: &mut Vec<Step>,
    opts: &SyncOptions,
) -> ReconcileResult<Option<String>> {
    if opts.allow_mass_delete {
        return Ok(None);
    }
    let me = local.journal.replica_id();
    // Deletions of files (directories follow their files), each with whether it was found.
    let is_local_del = |s: &Step| matches!(s, Step::Pull { remote, local: Some(l) } if remote.deleted && !l.deleted && l.kind != EntryKind::Dir);
    let is_remote_del = |s: &Step| matches!(s, Step::Push { local, remote: Some(r) } if local.deleted && !r.deleted && r.kind != EntryKind::Dir);
    if !steps.iter().any(|s| is_local_del(s) || is_remote_del(s)) {
        return Ok(None);
    }
    let found_here = local.journal.found_by_scan()?;
    let found = |s: &Step| match s {
        Step::Push { local: l, .. } => l.stamp.replica == me && found_here.contains(&l.path),
        Step::Pull { remote: r, .. } => r.stamp.replica == st.replica_id,
        Step::Resolve { .. } => false,
    };
    let count = |side: &dyn Fn(&Step) -> bool| {
        let all = steps.iter().filter(|s| side(s)).count();
        let found = steps.iter().filter(|s| side(s) && found(s)).count();
        (all, found)
    };
    let (local_all, local_found) = count(&is_local_del);
    let (remote_all, remote_found) = count(&is_remote_del);
    let files = |e: &briefcase_mirror::Entry| !e.deleted && e.kind != EntryKind::Dir;
    let remote_total = st.entries().values().filter(|e| files(e)).count();
    let local_total = if local_all > 0 {
        local
            .journal
            .entries()?
            .values()
            .filter(|e| files(e))
            .count()
    } else {
        0
    };
    // Which deletions of one side to hold: all of them, only the found ones, or none.
    let verdict = |all: usize, found: usize, total: usize| -> Option<(bool, usize)> {
        let big = total >= opts.mass_delete_min_files;
        if opts.max_deletes.is_some_and(|m| all > m) || (big && all >= total) {
            Some((true, all))
        } else if big && found * 2 > total {
            Some((false, found))
        } else {
            None
        }
    };
    let mut why = None;
    for (side, (all, nfound, total)) in [
        ("this machine", (local_all, local_found, local_total)),
        ("the mirror", (remote_all, remote_found, remote_total)),
    ] {
        let Some((hold_all, held)) = verdict(all, nfound, total) else {
            continue;
        };
        let on_side: &dyn Fn(&Step) -> bool = if side == "this machine" {
            &is_local_del
        } else {
            &is_remote_del
        };
        steps.retain(|s| !(on_side(s) && (hold_all || found(s))));
        let e = ReconcileError::MassDelete {
            folder: local.root.clone(),
            mirror: name.to_string(),
            side: side.to_string(),
            count: held,
            total,
        };
        why.get_or_insert(e.to_string());
    }
    Ok(why)
}
