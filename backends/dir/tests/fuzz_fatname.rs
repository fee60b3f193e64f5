//! Fuzz target for the FAT name mapping (issue 9): names read from a FAT or exFAT medium are
//! untrusted bytes that `fatname::decode` maps back. Decoding must not panic and never makes a
//! `/` or a NUL that was not there (so one stored name stays one path component; `.` and `..`
//! can come out, and `RelPath` refuses them); every name a `RelPath` may hold that `encode`
//! accepts comes back unchanged.
//!
//! Under `cargo test` the target replays `tests/__fuzz__/fatname/corpus/` (stored names as the
//! mapping writes them) and then random names for one second; docs/fuzzing.md says how to run it
//! long.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};

use bolero::check;
use briefcase_dir::fatname::{decode, encode, fold};

static MAPPED: AtomicUsize = AtomicUsize::new(0);

#[test]
fn fatname() {
    check!(name = "fatname").for_each(|bytes: &[u8]| {
        // As a stored name read from the medium.
        let name = decode(bytes);
        for b in [b'/', 0] {
            assert!(
                bytes.contains(&b) || !name.contains(&b),
                "{bytes:?} decodes to {name:?}"
            );
        }
        let _ = fold(bytes);
        if name != bytes {
            MAPPED.fetch_add(1, Ordering::Relaxed);
        }
        // As a name being written: a valid component comes back unchanged.
        if !bytes.is_empty() && !bytes.contains(&b'/') && !bytes.contains(&0) {
            if let Ok(stored) = encode(bytes) {
                assert_eq!(decode(&stored), bytes, "stored as {stored:?}");
                assert!(!stored.ends_with(b".") && !stored.ends_with(b" "));
            }
        }
    });
    // Random bytes rarely hold a mapped character (3-byte U+F0xx): the committed names do.
    #[cfg(not(fuzzing))]
    assert!(
        MAPPED.load(Ordering::Relaxed) > 0,
        "the committed names were not run"
    );
}

/// Writes the seed corpus: names as the mapping stores them on FAT.
/// Run with `cargo test -p briefcase-dir --test fuzz_fatname -- --ignored write_seed_corpus`.
#[test]
#[ignore = "writes the committed seed corpus"]
fn write_seed_corpus() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/__fuzz__/fatname/corpus");
    std::fs::create_dir_all(&dir).unwrap();
    let names: [(&str, &[u8]); 6] = [
        ("forbidden", b"what?*<>|\"\\:"),
        ("trailing-dot", b"trailing."),
        ("trailing-space", b"trailing "),
        ("control", b"tab\there"),
        ("not-utf8", b"bad\xffname\xc3"),
        ("unicode", "ünï 😀.txt".as_bytes()),
    ];
    for (file, name) in names {
        std::fs::write(dir.join(file), encode(name).unwrap()).unwrap();
    }
}
