//! Fuzz target for the mirror lease (issue 10): a lease record is read from a NAS that others
//! can write, so any bytes as `.briefcase/lease.N` must give a record or "not a record" (taken
//! over), never a panic or an allocation far beyond the file, and judging a record stale or live
//! must not panic whatever its numbers (PIDs, start times, expiries at the ends of `i64`).
//!
//! Under `cargo test` the target replays `tests/__fuzz__/lease_record/corpus/` (records as a sync
//! writes them) and then random bytes for one second; docs/fuzzing.md says how to run it long.
#![allow(clippy::unwrap_used)]

use bolero::check;
use briefcase::reconcile::lease::fuzz::judge;

#[global_allocator]
static WATCH: briefcase_mirror::alloc_watch::Watch = briefcase_mirror::alloc_watch::Watch;

use briefcase_mirror::alloc_watch;

#[test]
fn lease_record() {
    check!(name = "lease_record").for_each(|bytes: &[u8]| {
        for now in [0, 1_800_000_000_000_000_000, i64::MIN, i64::MAX] {
            let (_, largest, _) = alloc_watch::measure(|| judge(bytes, now));
            assert!(
                largest <= 4096 + 8 * bytes.len(),
                "a {}-byte record made a single allocation of {largest} bytes",
                bytes.len()
            );
        }
    });
}
