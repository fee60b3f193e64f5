//! Fuzz targets for the stick's decoders of untrusted bytes (issue 9, DESIGN.md invariants 6
//! and 8; docs/stick-format.md, "Protected: the reader"): the plain `STICK` file, the key record
//! a key file holds once decrypted, the catalog's roots and segments (formats 3 and 2, MAC
//! checked; format 1), and the names of the files listed on a stick (chunks, segments, the parts
//! a root lists). Each must answer any input with a value or an error, never a panic, a hang or an
//! allocation far beyond the input.
//!
//! Each target is a `#[test]` around `bolero::check!()`: under `cargo test` it replays its
//! committed corpus (`tests/__fuzz__/<target>/corpus/`: real files of a format 2 stick an
//! earlier version wrote, and `v3-*` files of format 3 that `write_seed_corpus` made from them
//! with the same stick secret) and then random inputs for bolero's default of one second
//! (`BOLERO_RANDOM_TEST_TIME_MS` / `BOLERO_RANDOM_ITERATIONS` change that). The decoders are
//! private; `briefcase_stick::fuzz` exposes thin wrappers.
//!
//! Targets: `stick_file`, `key_record`, `root`, `segment` (bytes, corpora of real files) and
//! `chunk_name` (names as listed on a stick or listed by a root). Random bytes never carry a
//! valid MAC, so `catalog_edits` is structure-aware: it edits the postcard body of a real root or
//! segment and seals it again with the stick's key (the real key record is in the `key_record`
//! corpus), so that edited records reach the decoder; `text_edits` edits the real `STICK` and key
//! record. The whole binary takes about 4 s (debug, two threads); docs/fuzzing.md says how to
//! run longer (`BOLERO_RANDOM_TEST_TIME_MS`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use bolero::{check, TypeGenerator};
use briefcase_mirror::{ChunkRef, ContentHash, EntryKind, FolderId, RelPath};
use briefcase_stick::catalog::{Catalog, Content, Delta, Node, NodeRec};
use briefcase_stick::format::{self, StickFile};
use briefcase_stick::fuzz::{self as entry, Secret};
use briefcase_stick::StickId;

// ---------------------------------------------------------------------------------------------
// Harness

#[global_allocator]
static WATCH: briefcase_mirror::alloc_watch::Watch = briefcase_mirror::alloc_watch::Watch;

use briefcase_mirror::alloc_watch::{bounded, bounded_by};

/// The committed corpus of `target`, where `bolero::check!(name = target)` finds it.
fn corpus_dir(target: &str) -> PathBuf {
    briefcase_mirror::testkit::fuzz_corpus_dir(env!("CARGO_MANIFEST_DIR"), target)
}

/// The files of a corpus directory, by name.
fn corpus_files(target: &str) -> BTreeMap<String, Vec<u8>> {
    briefcase_mirror::testkit::fuzz_corpus(env!("CARGO_MANIFEST_DIR"), target)
}

/// The real stick secret the corpora were written with (its decrypted key record).
fn real_secret() -> Secret {
    Secret::decode(&corpus_files("key_record")["keys.0"]).unwrap()
}

/// The plaintext of a root or segment: `bytes` decrypted when it is an age file encrypted to
/// the stick (the corpus holds both the files as on the medium and their plaintexts).
fn plaintext(secret: &Secret, bytes: &[u8], limit: u64) -> Option<Vec<u8>> {
    if bytes.starts_with(b"age-encryption.org/") {
        secret.decrypt(bytes, limit).ok()
    } else {
        None
    }
}

/// The corpora's two real stick catalogs: the prefix of their files' names, and their format.
const REAL: [(&str, u32); 2] = [("", 2), ("v3-", 3)];

/// The plaintexts of the two real roots whose corpus files' names start with `prefix`.
fn real_roots(prefix: &str) -> Vec<Vec<u8>> {
    let roots = corpus_files("root");
    ["state.0", "state.1"]
        .iter()
        .map(|n| roots[&format!("{prefix}{n}")].clone())
        .collect()
}

/// A real catalog: the plaintexts of the parts the newest real root (corpus files named
/// `prefix…`) lists, base first.
fn real_parts(secret: &Secret, prefix: &str) -> Vec<Vec<u8>> {
    let newest = real_roots(prefix)
        .iter()
        .filter_map(|r| entry::decode_root(secret, r).ok())
        .max_by_key(|r| r.generation)
        .unwrap();
    let segments = corpus_files("segment");
    newest
        .parts
        .iter()
        .map(|(p, _)| {
            let p = p.as_ref().unwrap().to_string();
            let file = p.rsplit('/').next().unwrap().trim_end_matches(".age");
            segments[&format!("{prefix}{file}")].clone()
        })
        .collect()
}

/// Uses a loaded catalog as the mirror does: lists the tree, resolves every file's chunk list
/// (pages), reads the state files.
fn use_catalog(cat: &mut Catalog) {
    for (path, node) in cat.tree() {
        let _ = (path.parent(), path.is_reserved());
        let _ = cat.chunks_of(&node.content);
        let _ = cat.below(path).count();
    }
    for name in cat.meta_names() {
        let _ = cat.meta(name).map(Vec::len);
    }
    let _ = (cat.chunk_count(), cat.known_chunks().count());
    // The next write hands out an inode number (regression-next-ino).
    let _ = cat.next_ino();
}

// ---------------------------------------------------------------------------------------------
// 1. STICK

static STICK_PARSED: AtomicUsize = AtomicUsize::new(0);

/// The plain `STICK` file: anyone who can write the medium can edit it. A parsed file holds
/// display text only (no control characters, at most 32 recipients of at most 100 characters
/// and an ellipsis), and renders to a file that parses again.
#[test]
fn stick_file() {
    check!(name = "stick_file").for_each(|bytes: &[u8]| {
        bounded(bytes.len(), || {
            let Ok(f) = StickFile::parse(bytes) else {
                return;
            };
            STICK_PARSED.fetch_add(1, Ordering::Relaxed);
            assert!(f.recipients.len() <= format::MAX_DISPLAY_RECIPIENTS);
            for r in &f.recipients {
                for s in [&r.key, &r.label] {
                    assert!(s.chars().count() <= format::MAX_DISPLAY_CHARS + 1, "{s:?}");
                    assert!(!s.chars().any(char::is_control), "{s:?}");
                }
            }
            assert!(!f.folder.chars().any(char::is_control));
            if let Ok(id) = f.folder_id() {
                assert_eq!(id.to_string().len(), 32);
            }
            let _ = f.describe_recipients();
            let again = StickFile::parse(f.render().as_bytes());
            assert!(again.is_ok(), "{f:?} renders to {again:?}");
        });
    });
    #[cfg(not(fuzzing))]
    assert!(STICK_PARSED.load(Ordering::Relaxed) > 0, "no STICK parsed");
}

// ---------------------------------------------------------------------------------------------
// 2. The key record

static KEYS_DECODED: AtomicUsize = AtomicUsize::new(0);

/// A decrypted key file (whoever knows a machine's public key can make one it decrypts). A
/// record that decodes encodes to one that decodes to the same stick.
#[test]
fn key_record() {
    check!(name = "key_record").for_each(|bytes: &[u8]| {
        bounded(bytes.len(), || {
            let Ok(s) = Secret::decode(bytes) else {
                return;
            };
            KEYS_DECODED.fetch_add(1, Ordering::Relaxed);
            let again = Secret::decode(s.encode().as_bytes()).unwrap();
            assert_eq!((again.id(), again.folder()), (s.id(), s.folder()));
            let id: StickId = s.id().to_string().parse().unwrap();
            assert_eq!(id, s.id());
        });
    });
    #[cfg(not(fuzzing))]
    assert!(
        KEYS_DECODED.load(Ordering::Relaxed) > 0,
        "no key record decoded"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Roots and segments

/// Checks what a decoded root promises the loader: every listed part it accepts is a segment
/// file of its folder, no larger than a segment file.
fn check_root(r: &entry::Root) {
    let dir = format!("{}/segments/", format::folder_dir(r.folder));
    for (p, len) in &r.parts {
        if let Ok(p) = p {
            assert!(p.to_string().starts_with(&dir), "{p}");
            assert!(*len <= format::MAX_SEGMENT_FILE);
        }
    }
    let _ = format!("{r:?}");
}

static ROOTS_DECODED: AtomicUsize = AtomicUsize::new(0);

/// The bytes as a root (`state.N.age`): decrypted with the stick's identity when they are an age
/// file, else taken as a root's plaintext; decoded with the real stick's MAC key.
#[test]
fn root() {
    let secret = real_secret();
    check!(name = "root").for_each(|bytes: &[u8]| {
        bounded(bytes.len(), || {
            let plain = plaintext(&secret, bytes, format::MAX_ROOT);
            let plain = plain.as_deref().unwrap_or(bytes);
            if let Ok(r) = entry::decode_root(&secret, plain) {
                ROOTS_DECODED.fetch_add(1, Ordering::Relaxed);
                check_root(&r);
            }
        });
    });
    #[cfg(not(fuzzing))]
    assert!(
        ROOTS_DECODED.load(Ordering::Relaxed) > 0,
        "the committed roots did not decode"
    );
}

static SEGMENTS_LOADED: AtomicUsize = AtomicUsize::new(0);

/// The bytes as a segment (`segments/*.age`, or its plaintext): alone under a root of each
/// format, and in place of the newest part of the real catalogs of formats 2 and 3; a loaded
/// catalog is used.
#[test]
fn segment() {
    let secret = real_secret();
    let folder = secret.folder();
    let real: Vec<(u32, Vec<Vec<u8>>)> = REAL
        .iter()
        .map(|(prefix, f)| (*f, real_parts(&secret, prefix)))
        .collect();
    check!(name = "segment").for_each(|bytes: &[u8]| {
        let plain = plaintext(&secret, bytes, format::MAX_SEGMENT);
        let plain = plain.as_deref().unwrap_or(bytes);
        for root_format in [1, 2, 3] {
            let alone = bounded(bytes.len(), || {
                entry::load_segments(&secret, folder, &[plain], root_format)
            });
            let parts = real
                .iter()
                .find(|(f, _)| *f == root_format)
                .map_or(&[][..], |(_, p)| p.as_slice());
            let total = bytes.len() + parts.iter().map(Vec::len).sum::<usize>();
            let mut after: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            after.pop();
            after.push(plain);
            let after = bounded(total, || {
                entry::load_segments(&secret, folder, &after, root_format)
            });
            for mut cat in [alone, after].into_iter().flatten() {
                SEGMENTS_LOADED.fetch_add(1, Ordering::Relaxed);
                // A file's chunk list is longer than its node: each page ID (32 bytes) stands
                // for up to `PAGE_MAX` chunks (40 bytes each), 320 times its encoding.
                bounded_by(total, 512, || use_catalog(&mut cat));
            }
        }
    });
    #[cfg(not(fuzzing))]
    assert!(
        SEGMENTS_LOADED.load(Ordering::Relaxed) > 0,
        "the committed segments did not load"
    );
}

/// One edit of a record's postcard body.
#[derive(Debug, Clone, TypeGenerator)]
enum Edit {
    /// Set the byte at (index modulo the length).
    Set(u32, u8),
    /// Insert bytes at (index modulo the length + 1).
    Insert(u32, Vec<u8>),
    /// Remove up to `n` bytes at (index modulo the length).
    Remove(u32, u8),
    /// Keep the first (index modulo the length + 1) bytes.
    Truncate(u32),
    /// A large LEB128 varint at (index modulo the length + 1): a length or count field.
    Varint(u32, u64),
}

fn apply_edits(body: &mut Vec<u8>, edits: &[Edit]) {
    for e in edits {
        let len = body.len();
        match e {
            Edit::Set(i, b) => {
                if len > 0 {
                    body[*i as usize % len] = *b;
                }
            }
            Edit::Insert(i, bytes) => {
                let at = *i as usize % (len + 1);
                body.splice(at..at, bytes.iter().copied());
            }
            Edit::Remove(i, n) => {
                if len > 0 {
                    let at = *i as usize % len;
                    body.drain(at..(at + *n as usize).min(len));
                }
            }
            Edit::Truncate(i) => body.truncate(*i as usize % (len + 1)),
            Edit::Varint(i, v) => {
                let at = *i as usize % (len + 1);
                let mut enc = Vec::new();
                let mut v = *v;
                loop {
                    let b = (v & 0x7f) as u8;
                    v >>= 7;
                    if v == 0 {
                        enc.push(b);
                        break;
                    }
                    enc.push(b | 0x80);
                }
                body.splice(at..at, enc);
            }
        }
    }
}

static EDITS_DECODED: AtomicUsize = AtomicUsize::new(0);

/// Structure-aware: edits of the postcard body of a real root or segment (of either real
/// catalog, format 2 or 3), sealed again with the real stick's MAC key in its format, so that
/// edited records pass the MAC and reach the decoder (and a segment, the catalog's loading).
/// `which` picks the record: the catalog, then its roots, then its parts.
#[test]
fn catalog_edits() {
    let secret = real_secret();
    let folder = secret.folder();
    // Per real catalog: its roots and its parts.
    type Records = (Vec<Vec<u8>>, Vec<Vec<u8>>);
    let real: Vec<Records> = REAL
        .iter()
        .map(|(prefix, _)| (real_roots(prefix), real_parts(&secret, prefix)))
        .collect();
    check!()
        .with_type::<(u8, Vec<Edit>)>()
        .for_each(|(which, edits): &(u8, Vec<Edit>)| {
            let (roots, parts) = &real[*which as usize % real.len()];
            let n = roots.len() + parts.len();
            let i = (*which as usize / real.len()) % n;
            let is_root = i < roots.len();
            let record = if is_root {
                &roots[i]
            } else {
                &parts[i - roots.len()]
            };
            let (format, body) = secret.unseal(is_root, record).unwrap();
            let mut body = body.to_vec();
            apply_edits(&mut body, edits);
            let sealed = secret.seal_as(format, is_root, &body);
            if is_root {
                let r = bounded(sealed.len(), || entry::decode_root(&secret, &sealed));
                if let Ok(r) = r {
                    EDITS_DECODED.fetch_add(1, Ordering::Relaxed);
                    check_root(&r);
                }
            } else {
                // In its place among the real parts (a base replaces them all).
                let k = i - roots.len();
                let mut list: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
                list[k] = &sealed;
                let total: usize = list.iter().map(|p| p.len()).sum();
                let cat = bounded(total, || {
                    entry::load_segments(&secret, folder, &list[k..], format)
                });
                let cat_all = bounded(total, || {
                    entry::load_segments(&secret, folder, &list, format)
                });
                for mut cat in [cat, cat_all].into_iter().flatten() {
                    EDITS_DECODED.fetch_add(1, Ordering::Relaxed);
                    bounded_by(total, 512, || use_catalog(&mut cat));
                }
            }
        });
    #[cfg(not(fuzzing))]
    assert!(
        EDITS_DECODED.load(Ordering::Relaxed) > 0,
        "no edited record decoded"
    );
}

static TEXT_PARSED: AtomicUsize = AtomicUsize::new(0);

/// Structure-aware: edits of the real `STICK` file and key record (random bytes are rarely TOML
/// or start with the key record's first line), parsed as the targets above parse them.
#[test]
fn text_edits() {
    let stick = corpus_files("stick_file")["STICK"].clone();
    let record = corpus_files("key_record")["keys.0"].clone();
    check!()
        .with_type::<(bool, Vec<Edit>)>()
        .for_each(|(is_stick, edits): &(bool, Vec<Edit>)| {
            let mut bytes = if *is_stick {
                stick.clone()
            } else {
                record.clone()
            };
            apply_edits(&mut bytes, edits);
            bounded(bytes.len(), || {
                let ok = if *is_stick {
                    StickFile::parse(&bytes).map(|f| f.render()).is_ok()
                } else {
                    Secret::decode(&bytes).map(|s| s.encode()).is_ok()
                };
                if ok {
                    TEXT_PARSED.fetch_add(1, Ordering::Relaxed);
                }
            });
        });
    #[cfg(not(fuzzing))]
    assert!(
        TEXT_PARSED.load(Ordering::Relaxed) > 0,
        "no edited text parsed"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Names on the stick

static NAMES_RECOGNISED: AtomicUsize = AtomicUsize::new(0);

/// A name as listed in a stick's folder directory (relative to it) or as a root lists a part:
/// the sweep's segment generation, the part check (an accepted part is a segment file of the
/// folder), stick IDs and hex keys, and whether it is one of the real chunk names.
#[test]
fn chunk_name() {
    let secret = real_secret();
    let folder = secret.folder();
    let dir = format!("{}/segments/", format::folder_dir(folder));
    check!(name = "chunk_name").for_each(|bytes: &[u8]| {
        bounded(bytes.len(), || {
            let Ok(name) = std::str::from_utf8(bytes) else {
                return;
            };
            let generation = entry::segment_generation(name);
            if let Ok(p) = entry::part_path(folder, name, bytes.len() as u64) {
                assert!(p.to_string().starts_with(&dir), "{p}");
                assert!(!p.to_string().contains(".."));
                NAMES_RECOGNISED.fetch_add(1, Ordering::Relaxed);
            }
            if generation.is_some() {
                NAMES_RECOGNISED.fetch_add(1, Ordering::Relaxed);
            }
            let _ = format::try_at(folder, name);
            let _ = name.parse::<StickId>();
            let mut k = [0u8; 32];
            if entry::parse_hex(name, &mut k) {
                assert_eq!(name.len(), 64);
                let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
                assert_eq!(hex, name.to_ascii_lowercase());
            }
            // The chunk name of the bytes' hash: `chunks/xx/NAME`, NAME 32 hex digits.
            let chunk = secret.chunk_name(blake3::hash(bytes).as_bytes());
            let (dir_part, hex) = chunk
                .strip_prefix("chunks/")
                .and_then(|c| c.split_once('/'))
                .unwrap();
            assert!(hex.starts_with(dir_part));
            assert!(entry::parse_hex(hex, &mut [0u8; 16]));
            assert!(format::try_at(folder, &chunk).is_some());
        });
    });
    #[cfg(not(fuzzing))]
    assert!(NAMES_RECOGNISED.load(Ordering::Relaxed) > 0);
}

// ---------------------------------------------------------------------------------------------
// The seed corpus

/// Writes the format 3 seed corpora (`v3-*` files) from the committed format 2 catalog, with the
/// committed stick secret (so that one key record opens every corpus file): the catalog as a
/// format 3 base, then segments of edits a stick makes (a big file edited in the middle and at
/// its end, a small file written then edited, renames of a file and of a directory with an
/// edit on top, a touch, a removal, engine state parts), each sealed and encrypted as the
/// stick writes them, and the two roots of the last two generations. Run with
/// `cargo test -p briefcase-stick --test fuzz -- --ignored write_seed_corpus`; it replaces the
/// `v3-*` files (the format 2 files, written by a real stick of an earlier version, stay).
#[test]
#[ignore = "writes the committed seed corpus"]
fn write_seed_corpus() {
    let secret = real_secret();
    let folder = secret.folder();
    let parts2 = real_parts(&secret, "");
    let plains2: Vec<&[u8]> = parts2.iter().map(Vec::as_slice).collect();
    let mut cat = entry::load_segments(&secret, folder, &plains2, 2).unwrap();
    let path = |p: &str| RelPath::try_from(p).unwrap();
    let big = path("docs/big.bin");
    let mut segments = vec![postcard::to_stdvec(&cat.base()).unwrap()];
    let mut commit = |cat: &mut Catalog| {
        segments.push(postcard::to_stdvec(&cat.segment()).unwrap());
        cat.clear_changes();
    };
    let file = |cat: &mut Catalog, at: &RelPath, chunks: Vec<ChunkRef>| {
        let size = chunks.iter().map(|c| u64::from(c.len)).sum();
        let content = cat.content_replacing(at, chunks);
        Node {
            size,
            ino: cat.next_ino(),
            ..node(content)
        }
    };
    let mut list = cat.chunks_of(&cat.node(&big).unwrap().content).unwrap();
    // 1. A big file edited in the middle; a small file written.
    let mid = list.len() / 2;
    list[mid] = chunk(9_001);
    let n = file(&mut cat, &big, list.clone());
    cat.set_node(big.clone(), n);
    let n = file(&mut cat, &path("docs/n.txt"), (0..5).map(chunk).collect());
    cat.set_node(path("docs/n.txt"), n);
    cat.set_meta("part.2.0000beef", b"engine state part".to_vec());
    commit(&mut cat);
    // 2. The small file edited, the big one grown at its end, the link touched.
    let n = file(
        &mut cat,
        &path("docs/n.txt"),
        vec![chunk(0), chunk(9_002), chunk(2)],
    );
    cat.set_node(path("docs/n.txt"), n);
    list.extend((0..20).map(|i| chunk(9_100 + i)));
    let n = file(&mut cat, &big, list.clone());
    cat.set_node(big.clone(), n);
    cat.touch(&path("link"), 0o777, 1_700_000_000_000_000_001);
    commit(&mut cat);
    // 3. The directory renamed (its files move as splices), the big file edited on top; a
    //    state part replaced; the symlink removed.
    cat.rename(&path("docs"), &path("papers"));
    list[3] = chunk(9_003);
    let moved = path("papers/big.bin");
    let n = file(&mut cat, &moved, list.clone());
    cat.set_node(moved, n);
    cat.remove_meta("part.2.0000beef");
    cat.set_meta("part.3.0000cafe", b"engine state part".to_vec());
    cat.remove_node(&path("link"));
    commit(&mut cat);

    let roots2 = real_roots("");
    let recipients = entry::decode_root(&secret, &roots2[0]).unwrap().recipients;
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let d = corpus_dir(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), bytes).unwrap();
    };
    let mut listed = Vec::new();
    for (i, body) in segments.iter().enumerate() {
        let plain = secret.seal(false, body);
        let cipher = secret.encrypt(&plain).unwrap();
        let stem = format!("{:012}-{:08x}", 100 + i, i + 1);
        write("segment", &format!("v3-{stem}.age"), &cipher);
        write("segment", &format!("v3-{stem}"), &plain);
        let name = format!("segments/{stem}.age");
        write("chunk_name", &format!("v3-name-{i:03}"), name.as_bytes());
        listed.push((name, cipher.len() as u64, *blake3::hash(&cipher).as_bytes()));
    }
    let generation = 99 + listed.len() as u64;
    for (g, n) in [
        (generation - 1, listed.len() - 1),
        (generation, listed.len()),
    ] {
        let body = entry::root_body(folder, g, &listed[..n], &recipients);
        let plain = secret.seal(true, &body);
        let slot = g % 2;
        write(
            "root",
            &format!("v3-state.{slot}.age"),
            &secret.encrypt(&plain).unwrap(),
        );
        write("root", &format!("v3-state.{slot}"), &plain);
    }
    // The catalog they make is the one built here.
    let made: Vec<Vec<u8>> = segments.iter().map(|b| secret.seal(false, b)).collect();
    let made: Vec<&[u8]> = made.iter().map(Vec::as_slice).collect();
    let loaded = entry::load_segments(&secret, folder, &made, 3).unwrap();
    assert_eq!(loaded.tree(), cat.tree());
}

/// A page of `n` chunks that one file lists `n` times: a chunk list of n² entries from a
/// segment of about 70·n bytes (before the fix, 2000 made a 160 MB list from 140 KB), sealed
/// in `format` (the committed input is of format 2).
fn repeated_page_segment(secret: &Secret, n: u32, format: u32) -> Vec<u8> {
    let chunks: Vec<ChunkRef> = (0..n).map(chunk).collect();
    let id = *blake3::hash(&postcard::to_stdvec(&chunks).unwrap()).as_bytes();
    let mut d = delta(secret.folder());
    d.pages.push((id, chunks));
    d.nodes.push((
        RelPath::try_from("big").unwrap(),
        NodeRec::full(&node(Content::Paged(vec![id; n as usize]))),
    ));
    secret.seal_as(format, false, &postcard::to_stdvec(&d).unwrap())
}

/// A base whose next inode number is the largest: the next write's `next_ino` overflowed
/// (a panic in a debug build, inode numbers reused in release).
fn next_ino_segment(secret: &Secret, format: u32) -> Vec<u8> {
    let mut d = delta(secret.folder());
    d.next_ino = u64::MAX;
    secret.seal_as(format, false, &postcard::to_stdvec(&d).unwrap())
}

/// Regression: a page may hold at most `PAGE_MAX` chunks (what a writer makes); before, one
/// large page listed many times made a file's chunk list quadratic in the segment's size.
#[test]
fn regression_a_page_listed_many_times() {
    let secret = real_secret();
    for format in [2, 3] {
        let seg = repeated_page_segment(&secret, 2000, format);
        let r = bounded(seg.len(), || {
            entry::load_segments(&secret, secret.folder(), &[&seg], format)
        });
        let e = r.expect_err("a page of 2000 chunks is refused");
        assert!(e.contains("chunks"), "{e}");
        // Pages of the largest honest size, listed many times, load (a file of repeated
        // content).
        let max = briefcase_stick::catalog::PAGE_MAX as u32;
        let seg = repeated_page_segment(&secret, max, format);
        let cat = entry::load_segments(&secret, secret.folder(), &[&seg], format).unwrap();
        let big = cat.node(&RelPath::try_from("big").unwrap()).unwrap();
        assert_eq!(cat.chunks_of(&big.content).unwrap().len(), 256 * 256);
    }
}

/// Regression: a catalog's next inode number is at most 2^62, so that writes never overflow it.
#[test]
fn regression_next_ino_overflow() {
    let secret = real_secret();
    for format in [2, 3] {
        let seg = next_ino_segment(&secret, format);
        let r = entry::load_segments(&secret, secret.folder(), &[&seg], format);
        assert!(r.as_ref().is_err_and(|e| e.contains("inode")), "{r:?}");
    }
}

/// Writes `segment/corpus/regression-*` (the inputs of the two regressions above). Run with
/// `cargo test -p briefcase-stick --test fuzz -- --ignored write_regression_inputs`.
#[test]
#[ignore = "writes committed regression inputs"]
fn write_regression_inputs() {
    let secret = real_secret();
    let d = corpus_dir("segment");
    std::fs::write(
        d.join("regression-page-listed-many-times"),
        repeated_page_segment(&secret, 2000, 2),
    )
    .unwrap();
    std::fs::write(d.join("regression-next-ino"), next_ino_segment(&secret, 2)).unwrap();
}

/// A chunk reference for hand-built records.
fn chunk(i: u32) -> ChunkRef {
    ChunkRef {
        hash: ContentHash(*blake3::hash(&i.to_le_bytes()).as_bytes()),
        len: 1,
    }
}

/// A file node for hand-built records.
fn node(content: Content) -> Node {
    Node {
        kind: EntryKind::File,
        size: 0,
        mode: 0o644,
        mtime_ns: 0,
        ino: 1,
        target: None,
        content,
    }
}

/// An empty delta of `folder`.
fn delta(folder: FolderId) -> Delta {
    Delta {
        folder,
        next_ino: 1,
        nodes: Vec::new(),
        gone: Vec::new(),
        pages: Vec::new(),
        pages_gone: Vec::new(),
        meta: Vec::new(),
        meta_gone: Vec::new(),
    }
}
