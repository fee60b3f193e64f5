//! The mirror lease: one machine at a time writes a shared mirror (a NAS directory that the
//! office and the home desktop both sync with).
//!
//! Two syncs interleaving on one mirror corrupt it: each store of the incremental state removes
//! the parts that no root lists, and the other machine's parts, written but not yet listed by
//! its root, are among them. So a sync first takes the mirror's **lease**, a small record in the
//! mirror's state directory naming the holder (replica, name, host, PID) and when it expires,
//! renews it while it runs and releases it at the end; a second machine waits for it, or reports
//! "busy: synced by HOST since …". It is the lock lifetime of the DFS seed's lock server, kept on
//! the shared medium itself because the machines have no server in common.
//!
//! **Protocol.** Lease records are the state files `lease.N`; the one with the highest `N` is
//! current. Every transition (take, renew, take over an expired one, release) is an exclusive
//! create of `lease.N+1` ([`Mirror::create_meta_exclusive`], a `link(2)` on a dir mirror), so it
//! is a compare-and-swap on `N`: of two machines trying at once, one wins, and a holder that
//! stalled past its expiry finds, at its next renewal, that someone moved on, and stops. The
//! older records are removed after each transition. A lease is stale when its expiry has passed
//! on this machine's clock (the machines' clocks are assumed to agree within the lease length),
//! when its holder ran on this host and its process is gone (a `kill -9`), when it was released,
//! or when it cannot be read or claims an expiry further ahead than any holder would write
//! (forged). A medium that cannot create files exclusively (the stick: it is plugged into one
//! machine at a time) needs no lease.

use briefcase_mirror::MirrorExt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use briefcase_mirror::{Mirror, MirrorError, ReplicaId};

use super::{ReconcileError, ReconcileResult};

/// Prefix of lease records in the mirror's state directory.
pub const LEASE_PREFIX: &str = "lease.";

/// Records numbered at or above this are ignored (planted).
const MAX_RECORD: u64 = 1 << 48;

/// How long a lease lasts and how long to wait for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseOptions {
    /// Life of a lease record (renewed every third of it while the sync runs). Default 60 s;
    /// `BRIEFCASE_LEASE_SECS` overrides it.
    pub duration: Duration,
    /// How long a sync waits for a mirror another machine holds before it reports it busy.
    /// Default 60 s; `BRIEFCASE_LEASE_WAIT_SECS` overrides it.
    pub wait: Duration,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        let secs = |var: &str, default: u64| {
            std::env::var(var)
                .ok()
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map_or(Duration::from_secs(default), Duration::from_secs_f64)
        };
        LeaseOptions {
            duration: secs("BRIEFCASE_LEASE_SECS", 60).max(Duration::from_millis(300)),
            wait: secs("BRIEFCASE_LEASE_WAIT_SECS", 60),
        }
    }
}

/// A lease record (`lease.N`, JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Record {
    /// The holder's replica ID (16 hex digits).
    replica: String,
    /// The holder's replica name.
    name: String,
    /// The holder's host name.
    host: String,
    /// The holder's machine and boot (`/etc/machine-id` and the kernel's `boot_id`): its PID
    /// means something only to a process of the same boot. Empty when unknown.
    #[serde(default)]
    boot: String,
    /// The holder's process, and its start time (clock ticks after boot, `/proc/PID/stat`).
    pid: u32,
    start: u64,
    /// When the holder took the lease, and when it expires (ns since the epoch, holder's clock).
    since_ns: i64,
    expires_ns: i64,
    /// Given back.
    released: bool,
}

/// A lease held by this process: renew it while the sync runs ([`Lease::renew`]) and
/// [`Lease::release`] it at the end.
#[derive(Debug)]
pub struct Lease {
    n: u64,
    record: Record,
    opts: LeaseOptions,
    /// The current expiry (ns since the epoch), shared with the sync's [`Fence`].
    expiry: Arc<AtomicI64>,
}

/// What the sync checks before each write of the mirror's state (its commit point): that the
/// lease it runs under has not expired. A process that stalled or a machine that slept past
/// its lease learns it at its next renewal, up to a third of the lease later; the fence stops
/// it before it commits anything in that time.
#[derive(Debug, Clone)]
pub struct Fence {
    expiry: Arc<AtomicI64>,
    mirror: String,
    location: String,
    seconds: f64,
}

impl Fence {
    /// Ok while the lease holds.
    ///
    /// # Errors
    /// [`ReconcileError::LeaseLost`] once it has expired.
    pub fn check(&self) -> ReconcileResult<()> {
        if now_ns() > self.expiry.load(Ordering::Relaxed) {
            return Err(ReconcileError::LeaseLost {
                mirror: self.mirror.clone(),
                location: self.location.clone(),
                holder: "another machine, perhaps (it expired while this sync was stalled)".into(),
                seconds: self.seconds,
            });
        }
        Ok(())
    }
}

/// Who holds the mirror, for the "busy" message. The names come from the mirror (anyone who can
/// write the NAS): control characters are dropped and lengths bounded, so a forged record cannot
/// drive the terminal that shows the message.
fn describe(r: &Record) -> String {
    let clean = |s: &str| -> String { s.chars().filter(|c| !c.is_control()).take(64).collect() };
    format!(
        "{} (host {}, pid {}) since {}",
        clean(&r.name),
        clean(&r.host),
        r.pid,
        fmt_time(r.since_ns)
    )
}

/// `ns` (since the epoch) as an RFC 3339 UTC time.
fn fmt_time(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ns.div_euclid(1_000_000_000))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ns.to_string())
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// This machine and boot: `/etc/machine-id` and `/proc/sys/kernel/random/boot_id` (two machines
/// may share a host name; a container shares the host's name but not its PIDs). Empty when
/// either is unknown: then no lease is judged by its PID.
fn this_boot() -> String {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string());
    match (
        read("/etc/machine-id").or_else(|_| read("/var/lib/dbus/machine-id")),
        read("/proc/sys/kernel/random/boot_id"),
    ) {
        (Ok(m), Ok(b)) if !m.is_empty() && !b.is_empty() => format!("{m}:{b}"),
        _ => String::new(),
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Start time of process `pid` (field 22 of `/proc/PID/stat`), `None` when it is gone.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Why `r` (read from the mirror now) no longer holds the mirror, or `None` while it does.
fn stale(r: &Record, opts: &LeaseOptions, now: i64) -> Option<String> {
    if r.released {
        return Some("released".into());
    }
    if now > r.expires_ns {
        return Some(format!("it expired at {}", fmt_time(r.expires_ns)));
    }
    let span = i64::try_from(opts.duration.as_nanos()).unwrap_or(i64::MAX);
    // A holder writes now + duration; allow for clocks up to five minutes apart.
    if r.expires_ns > now.saturating_add(span).saturating_add(300_000_000_000) {
        return Some("it claims an expiry no holder would write (forged?)".into());
    }
    if !r.boot.is_empty() && r.boot == this_boot() && process_start(r.pid) != Some(r.start) {
        return Some(format!("its process {} on this host is gone", r.pid));
    }
    None
}

fn lease_name(n: u64) -> String {
    format!("{LEASE_PREFIX}{n}")
}

/// The lease records on the mirror, by number.
async fn records(mirror: &dyn Mirror) -> ReconcileResult<Vec<u64>> {
    let mut ns: Vec<u64> = mirror
        .list_state()
        .await?
        .iter()
        .filter_map(|n| n.strip_prefix(LEASE_PREFIX)?.parse().ok())
        // A holder renews every 20 s: 2^48 records take 178 million years. A larger number was
        // planted, and would leave no next number to take.
        .filter(|n| *n < MAX_RECORD)
        .collect();
    ns.sort_unstable();
    Ok(ns)
}

/// Removes the records below `n` (best effort: a leftover is removed at the next transition).
async fn remove_below(mirror: &dyn Mirror, n: u64) {
    if let Ok(ns) = records(mirror).await {
        for m in ns.into_iter().filter(|m| *m < n) {
            let _ = mirror.remove_state(&lease_name(m)).await;
        }
    }
}

/// What holds the mirror now.
enum Current {
    /// No lease, or a stale one (with why, for the log): record `n` is the last.
    Free {
        n: u64,
        stale: Option<(Record, String)>,
    },
    /// Held by someone else: record `n`.
    Held(u64, Record),
    /// Record `n` cannot be read as a record (see [`UNREADABLE_GRACE`]).
    Unreadable(u64),
}

/// How long a newest record that cannot be read is taken for held before it is taken over: on
/// a medium without hard links a record is seen empty between its creation and its write; one
/// that stays unreadable was forged or damaged (a FIFO, a directory, garbage).
const UNREADABLE_GRACE: Duration = Duration::from_secs(2);

async fn current(mirror: &dyn Mirror, opts: &LeaseOptions) -> ReconcileResult<Current> {
    let Some(&n) = records(mirror).await?.last() else {
        return Ok(Current::Free { n: 0, stale: None });
    };
    let record = match mirror.read_state(&lease_name(n)).await {
        Ok(bytes) => bytes.and_then(|b| serde_json::from_slice::<Record>(&b).ok()),
        Err(e) if e.is_transient() => return Err(e.into()),
        // Not a regular file, too large: as unreadable.
        Err(_) => None,
    };
    Ok(match record {
        None => Current::Unreadable(n),
        Some(r) => match stale(&r, opts, now_ns()) {
            Some(why) => Current::Free {
                n,
                stale: (!r.released).then_some((r, why)),
            },
            None => Current::Held(n, r),
        },
    })
}

/// Takes the lease of `mirror` (named `mirror_name` in the config) for this replica, waiting up
/// to `opts.wait` while another machine holds it. `Ok(None)` when the medium needs no lease
/// ([`Mirror::create_meta_exclusive`] unsupported).
///
/// # Errors
/// [`ReconcileError::Busy`] naming the holder when it is still held after the wait; mirror
/// errors.
pub async fn acquire(
    mirror: &dyn Mirror,
    mirror_name: &str,
    replica: ReplicaId,
    replica_name: &str,
    opts: LeaseOptions,
) -> ReconcileResult<Option<Lease>> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(5);
    let pid = std::process::id();
    let mut told = false;
    // The newest record, unreadable since when.
    let mut unreadable: Option<(u64, std::time::Instant)> = None;
    let mut last_holder = String::from("another machine (its lease record is being written)");
    loop {
        let now_held = match current(mirror, &opts).await {
            Ok(c) => c,
            // State files cannot be listed: a medium without a lease (see the module doc).
            Err(ReconcileError::Mirror(MirrorError::Unsupported { .. })) => return Ok(None),
            Err(e) => return Err(e),
        };
        let free = match now_held {
            Current::Free { n, stale } => Some((n, stale)),
            Current::Unreadable(n) => match unreadable {
                Some((m, since)) if m == n && since.elapsed() >= UNREADABLE_GRACE => {
                    tracing::warn!(mirror = %mirror_name, "lease record {} of mirror {mirror_name} cannot be read; taking the mirror over", lease_name(n));
                    Some((n, None))
                }
                Some((m, _)) if m == n => None,
                _ => {
                    unreadable = Some((n, std::time::Instant::now()));
                    None
                }
            },
            Current::Held(n, r) => {
                if r.replica == replica.to_string() && r.pid == pid && r.boot == this_boot() {
                    // Our own, left by an earlier sync of this process that could not give it
                    // back (the mirror went away): renewed at once, not trusted to last.
                    let expiry = Arc::new(AtomicI64::new(r.expires_ns));
                    let mut l = Lease {
                        n,
                        record: r,
                        opts,
                        expiry,
                    };
                    l.renew(mirror, mirror_name).await?;
                    return Ok(Some(l));
                }
                last_holder = describe(&r);
                if !told && started.elapsed() >= Duration::from_secs(2) {
                    // Waits of a few ms are the normal case for two live daemons: said only
                    // when it lasts.
                    tracing::info!(mirror = %mirror_name, "mirror {mirror_name} is being synced by {last_holder}; waiting");
                    told = true;
                }
                None
            }
        };
        if let Some((n, stale)) = free {
            let now = now_ns();
            let record = Record {
                replica: replica.to_string(),
                name: replica_name.to_string(),
                host: host_name(),
                boot: this_boot(),
                pid,
                start: process_start(pid).unwrap_or(0),
                since_ns: now,
                expires_ns: now
                    .saturating_add(i64::try_from(opts.duration.as_nanos()).unwrap_or(0)),
                released: false,
            };
            let bytes = serde_json::to_vec(&record).unwrap_or_default();
            let next = n.saturating_add(1);
            match mirror
                .create_state_exclusive(&lease_name(next), &bytes)
                .await
            {
                Err(MirrorError::Unsupported { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
                Ok(false) => {} // someone else took it first: look again
                Ok(true) => {
                    // Won only if nobody moved past our record meanwhile.
                    if records(mirror).await?.last() == Some(&next) {
                        if let Some((old, why)) = stale {
                            tracing::warn!(
                                mirror = %mirror_name,
                                "took over the lease of mirror {mirror_name} from {}: {why}",
                                describe(&old)
                            );
                        }
                        remove_below(mirror, next).await;
                        tracing::debug!(mirror = %mirror_name, lease = next, "lease taken");
                        let expiry = Arc::new(AtomicI64::new(record.expires_ns));
                        return Ok(Some(Lease {
                            n: next,
                            record,
                            opts,
                            expiry,
                        }));
                    }
                }
            }
        }
        if started.elapsed() >= opts.wait {
            return Err(ReconcileError::Busy {
                mirror: mirror_name.to_string(),
                location: mirror.location(),
                holder: last_holder,
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

impl Lease {
    /// The fence the sync checks before each state write (see [`Fence`]).
    pub fn fence(&self, mirror: &dyn Mirror, mirror_name: &str) -> Fence {
        Fence {
            expiry: Arc::clone(&self.expiry),
            mirror: mirror_name.to_string(),
            location: mirror.location(),
            seconds: self.opts.duration.as_secs_f64(),
        }
    }

    /// How often to renew: a third of the lease's life.
    pub fn renew_every(&self) -> Duration {
        self.opts.duration / 3
    }

    /// Extends the lease by its duration from now.
    ///
    /// # Errors
    /// [`ReconcileError::LeaseLost`] when another machine took it over (this process stalled
    /// past its expiry): the sync must stop writing. Mirror errors.
    pub async fn renew(&mut self, mirror: &dyn Mirror, mirror_name: &str) -> ReconcileResult<()> {
        let mut record = self.record.clone();
        record.expires_ns =
            now_ns().saturating_add(i64::try_from(self.opts.duration.as_nanos()).unwrap_or(0));
        self.step(mirror, mirror_name, record).await
    }

    /// Gives the lease back (the next machine need not wait for its expiry).
    ///
    /// # Errors
    /// As [`Lease::renew`].
    pub async fn release(mut self, mirror: &dyn Mirror, mirror_name: &str) -> ReconcileResult<()> {
        let mut record = self.record.clone();
        record.released = true;
        // Logged before the record that frees the mirror is written: another machine may take
        // the lease (and log it) the moment it is, so the two log lines keep their true order.
        tracing::debug!(mirror = %mirror_name, lease = self.n, "lease released");
        self.step(mirror, mirror_name, record).await
    }

    /// Moves to record `n + 1` holding `record`: a compare-and-swap on `n`. Refused when this
    /// lease expired (this process stalled or slept past it: someone may have taken the mirror
    /// and moved on), when a later record than ours exists, or when `n + 1` is taken; and when
    /// a later record appears right after ours (two writers raced: neither goes on).
    async fn step(
        &mut self,
        mirror: &dyn Mirror,
        mirror_name: &str,
        record: Record,
    ) -> ReconcileResult<()> {
        let lost = |holder: String| ReconcileError::LeaseLost {
            mirror: mirror_name.to_string(),
            location: mirror.location(),
            holder,
            seconds: self.opts.duration.as_secs_f64(),
        };
        let holder = |c: ReconcileResult<Current>| match c {
            Ok(Current::Held(_, r)) => describe(&r),
            _ => "another machine".into(),
        };
        if now_ns() > self.record.expires_ns {
            return Err(lost(holder(current(mirror, &self.opts).await)));
        }
        if records(mirror).await?.last() != Some(&self.n) {
            return Err(lost(holder(current(mirror, &self.opts).await)));
        }
        let next = self.n.saturating_add(1);
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        if !mirror
            .create_state_exclusive(&lease_name(next), &bytes)
            .await?
            || records(mirror).await?.last() != Some(&next)
        {
            return Err(lost(holder(current(mirror, &self.opts).await)));
        }
        let _ = mirror.remove_state(&lease_name(self.n)).await;
        self.n = next;
        self.expiry.store(
            if record.released {
                i64::MIN
            } else {
                record.expires_ns
            },
            Ordering::Relaxed,
        );
        self.record = record;
        Ok(())
    }
}

/// Runs `body` while holding `lease` (when there is one), renewing it every
/// [`Lease::renew_every`]; releases it when `body` ends, whatever its result. When a renewal
/// finds the lease lost, `body` is dropped where it stands (as if the process had been killed,
/// which the engine survives: intents, atomic replacement) and the loss is the result.
///
/// # Errors
/// `body`'s error, or the lease's.
pub async fn hold<T>(
    mirror: &dyn Mirror,
    mirror_name: &str,
    lease: Option<Lease>,
    body: impl std::future::Future<Output = ReconcileResult<T>>,
) -> ReconcileResult<T> {
    let Some(mut lease) = lease else {
        return body.await;
    };
    let every = lease.renew_every();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(body);
    let out = loop {
        tokio::select! {
            r = &mut body => break r,
            _ = tick.tick() => {
                if let Err(e) = lease.renew(mirror, mirror_name).await {
                    if matches!(e, ReconcileError::LeaseLost { .. }) {
                        return Err(e);
                    }
                    // The medium failed (gone?): the sync itself will say so.
                    tracing::debug!(mirror = %mirror_name, error = %e, "could not renew the lease");
                }
            }
        }
    };
    if let Err(e) = lease.release(mirror, mirror_name).await {
        tracing::debug!(mirror = %mirror_name, error = %e, "could not release the lease");
    }
    out
}

/// Entry points for the fuzz target `lease_record` (tests/fuzz_lease.rs); not an API.
#[doc(hidden)]
pub mod fuzz {
    use super::{describe, stale, LeaseOptions, Record};

    /// Decodes `bytes` as a lease record read from a mirror and judges it as [`super::acquire`]
    /// does at `now_ns`: `None` when it is not a record (taken over), else whether it is stale.
    /// A record that decodes encodes back to itself.
    ///
    /// # Panics
    /// When a decoded record does not survive a round trip (the target's assertion).
    pub fn judge(bytes: &[u8], now_ns: i64) -> Option<bool> {
        let r: Record = serde_json::from_slice(bytes).ok()?;
        let again: Record =
            serde_json::from_slice(&serde_json::to_vec(&r).unwrap_or_default()).ok()?;
        assert_eq!(again, r, "a lease record does not survive a round trip");
        let shown = describe(&r);
        assert!(
            !shown.chars().any(char::is_control),
            "the busy message shows control characters: {shown:?}"
        );
        Some(stale(&r, &LeaseOptions::default(), now_ns).is_some())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use briefcase_memory::MemoryMirror;
    use briefcase_mirror::FolderId;

    async fn mirror() -> MemoryMirror {
        let m = MemoryMirror::new("nas");
        m.init(FolderId(7)).await.unwrap();
        m
    }

    fn opts() -> LeaseOptions {
        LeaseOptions {
            duration: Duration::from_secs(60),
            wait: Duration::ZERO,
        }
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_release_frees_it() {
        let m = mirror().await;
        let a = acquire(&m, "nas", ReplicaId(1), "office", opts())
            .await
            .unwrap()
            .unwrap();
        // Another replica (or process) is refused while it is held.
        let mut other = opts();
        other.wait = Duration::from_millis(20);
        let busy = acquire(&m, "nas", ReplicaId(2), "home", other).await;
        match busy {
            Err(ReconcileError::Busy { holder, .. }) => assert!(holder.contains("office")),
            other => panic!("{other:?}"),
        }
        a.release(&m, "nas").await.unwrap();
        let b = acquire(&m, "nas", ReplicaId(2), "home", opts())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(records(&m).await.unwrap(), vec![b.n]);
    }

    #[tokio::test]
    async fn a_stale_lease_is_taken_over_and_its_holder_finds_out() {
        let m = mirror().await;
        let mut short = opts();
        short.duration = Duration::from_millis(300);
        let mut a = acquire(&m, "nas", ReplicaId(1), "office", short)
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(350)).await;
        let _b = acquire(&m, "nas", ReplicaId(2), "home", opts())
            .await
            .unwrap()
            .unwrap();
        // The stalled holder may not renew over it.
        assert!(matches!(
            a.renew(&m, "nas").await,
            Err(ReconcileError::LeaseLost { .. })
        ));
    }

    /// The fence stops a sync that outlived its lease before it writes the state, whatever the
    /// renewal timer says (a machine that slept).
    #[tokio::test]
    async fn the_fence_holds_while_the_lease_does() {
        let m = mirror().await;
        let mut short = opts();
        short.duration = Duration::from_millis(300);
        let mut l = acquire(&m, "nas", ReplicaId(1), "office", short)
            .await
            .unwrap()
            .unwrap();
        let fence = l.fence(&m, "nas");
        fence.check().unwrap();
        l.renew(&m, "nas").await.unwrap();
        fence.check().unwrap();
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(matches!(
            fence.check(),
            Err(ReconcileError::LeaseLost { .. })
        ));
    }

    #[tokio::test]
    async fn forged_and_unreadable_leases_do_not_block() {
        let m = mirror().await;
        m.write_state("lease.7", b"not json").await.unwrap();
        // A number with no next one to take is not a record.
        m.write_state("lease.18446744073709551615", b"{}")
            .await
            .unwrap();
        // Unreadable: taken for a record being written, then over after the grace.
        let mut patient = opts();
        patient.wait = Duration::from_secs(10);
        let t = std::time::Instant::now();
        let l = acquire(&m, "nas", ReplicaId(1), "office", patient)
            .await
            .unwrap()
            .unwrap();
        assert!(t.elapsed() >= UNREADABLE_GRACE);
        assert_eq!(l.n, 8);
        let mut forged = l.record.clone();
        forged.replica = ReplicaId(9).to_string();
        forged.host = "elsewhere".into();
        forged.expires_ns = i64::MAX;
        l.release(&m, "nas").await.unwrap();
        m.write_state("lease.20", &serde_json::to_vec(&forged).unwrap())
            .await
            .unwrap();
        let l = acquire(&m, "nas", ReplicaId(1), "office", opts())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(l.n, 21);
        assert_eq!(records(&m).await.unwrap(), vec![21]);
    }

    /// A holder that was passed over (another machine took the mirror, renewed and deleted the
    /// records in between) cannot step onto a free number below the newest.
    #[tokio::test]
    async fn a_passed_over_holder_cannot_reuse_a_deleted_number() {
        let m = mirror().await;
        let mut a = acquire(&m, "nas", ReplicaId(1), "office", opts())
            .await
            .unwrap()
            .unwrap();
        let n = a.n;
        let mut other = a.record.clone();
        other.replica = ReplicaId(2).to_string();
        let bytes = serde_json::to_vec(&other).unwrap();
        m.write_state(&lease_name(n + 1), &bytes).await.unwrap();
        m.write_state(&lease_name(n + 2), &bytes).await.unwrap();
        m.remove_state(&lease_name(n + 1)).await.unwrap();
        m.remove_state(&lease_name(n)).await.unwrap();
        assert!(matches!(
            a.renew(&m, "nas").await,
            Err(ReconcileError::LeaseLost { .. })
        ));
        assert_eq!(records(&m).await.unwrap(), vec![n + 2]);
    }

    #[test]
    fn a_forged_holder_name_cannot_drive_the_terminal() {
        let r = Record {
            replica: "x".into(),
            name: "evil\u{1b}[2J\u{7}name".into(),
            host: "h\nost".repeat(100),
            boot: String::new(),
            pid: 1,
            start: 0,
            since_ns: i64::MIN,
            expires_ns: 0,
            released: false,
        };
        let d = describe(&r);
        assert!(!d.chars().any(char::is_control), "{d:?}");
        assert!(d.len() < 250, "{d}");
    }

    #[tokio::test]
    async fn a_dead_holder_on_this_host_is_stale_at_once() {
        let m = mirror().await;
        let l = acquire(&m, "nas", ReplicaId(1), "office", opts())
            .await
            .unwrap()
            .unwrap();
        let mut dead = l.record.clone();
        dead.replica = ReplicaId(9).to_string();
        dead.start = dead.start.wrapping_add(1); // a process of that PID, but not that one
        m.write_state(&lease_name(l.n + 1), &serde_json::to_vec(&dead).unwrap())
            .await
            .unwrap();
        let l2 = acquire(&m, "nas", ReplicaId(2), "home", opts())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(l2.n, l.n + 2);
    }
}
