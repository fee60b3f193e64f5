//! Fuzz targets for the stick's decoders of untrusted bytes (issue 9, DESIGN.md invariants 6
//! and 8; docs/stick-format.md, "Protected: the reader"): the plain `STICK` file, the key record
//! a key file holds once decrypted, the catalog's roots and segments (format 2, MAC checked;
//! format 1), and the names of the files listed on a stick (chunks, segments, the parts a root
//! lists). Each must answer any input with a value or an error, never a panic, a hang or an
//! allocation far beyond the input.
//!
//! Each target is a `#[test]` around `bolero::check!()`: under `cargo test` it replays its
//! committed corpus (`tests/__fuzz__/<target>/corpus/`, real files of a stick the crate wrote,
//! see `write_seed_corpus`) and then random inputs for bolero's default of one second
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

use briefcase_mirror::MirrorExt;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use bolero::{check, TypeGenerator};
use briefcase_mirror::{ChunkRef, ContentHash, EntryKind, FolderId, RelPath};
use briefcase_stick::catalog::{Catalog, Content, Delta, Node};
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

/// The real catalog: the plaintexts of the parts the newest real root lists, base first.
fn real_parts(secret: &Secret) -> Vec<Vec<u8>> {
    let roots = corpus_files("root");
    let newest = ["state.0", "state.1"]
        .iter()
        .filter_map(|n| entry::decode_root(secret, &roots[*n]).ok())
        .max_by_key(|r| r.generation)
        .unwrap();
    let segments = corpus_files("segment");
    newest
        .parts
        .iter()
        .map(|(p, _)| {
            let p = p.as_ref().unwrap().to_string();
            let file = p.rsplit('/').next().unwrap().trim_end_matches(".age");
            segments[file].clone()
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

/// The bytes as a segment (`segments/*.age`, or its plaintext): alone, and after the real
/// stick's other parts, under a format 2 and a format 1 root; a loaded catalog is used.
#[test]
fn segment() {
    let secret = real_secret();
    let folder = secret.folder();
    let parts = real_parts(&secret);
    check!(name = "segment").for_each(|bytes: &[u8]| {
        let plain = plaintext(&secret, bytes, format::MAX_SEGMENT);
        let plain = plain.as_deref().unwrap_or(bytes);
        let total = bytes.len() + parts.iter().map(Vec::len).sum::<usize>();
        for legacy in [false, true] {
            let alone = bounded(bytes.len(), || {
                entry::load_segments(&secret, folder, &[plain], legacy)
            });
            let mut after: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            after.pop();
            after.push(plain);
            let after = bounded(total, || {
                entry::load_segments(&secret, folder, &after, legacy)
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

/// Structure-aware: edits of the postcard body of a real root or segment, sealed again with the
/// real stick's MAC key, so that edited records pass the MAC and reach the decoder (and a
/// segment, the catalog's loading). `which` picks the record: the roots, then the parts.
#[test]
fn catalog_edits() {
    let secret = real_secret();
    let folder = secret.folder();
    let roots = corpus_files("root");
    let roots: Vec<Vec<u8>> = ["state.0", "state.1"]
        .iter()
        .map(|n| roots[*n].clone())
        .collect();
    let parts = real_parts(&secret);
    check!()
        .with_type::<(u8, Vec<Edit>)>()
        .for_each(|(which, edits): &(u8, Vec<Edit>)| {
            let n = roots.len() + parts.len();
            let i = *which as usize % n;
            let is_root = i < roots.len();
            let record = if is_root {
                &roots[i]
            } else {
                &parts[i - roots.len()]
            };
            let mut body = secret.unseal(is_root, record).unwrap().to_vec();
            apply_edits(&mut body, edits);
            let sealed = secret.seal(is_root, &body);
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
                    entry::load_segments(&secret, folder, &list[k..], false)
                });
                let cat_all = bounded(total, || {
                    entry::load_segments(&secret, folder, &list, false)
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

/// Writes the seed corpora from a real stick: a stick made with the crate's own API in a temp
/// dir (small chunks, so a file spans pages; several commits, so the catalog is a base and
/// segments), then its files as on the medium and, for roots and segments, their plaintexts
/// (the key record is stored decrypted: the targets need the stick's MAC key). Run with
/// `cargo test -p briefcase-stick --test fuzz -- --ignored write_seed_corpus`; it replaces the
/// generated files (a `regression-*` input stays).
#[test]
#[ignore = "writes the committed seed corpus"]
fn write_seed_corpus() {
    use briefcase_mirror::{FileMeta, Mirror};
    use briefcase_stick::{ChunkParams, MachineKey, Recipient, Recipients, StickMirror, Unlock};

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mount = tmp.path().join("mount");
        std::fs::create_dir(&mount).unwrap();
        let key = MachineKey::generate();
        let folder = FolderId(0x5a89_7c11_eaf8_0a82_a2c6_f998_6054_3bfe);
        let s = StickMirror::new(
            mount.clone(),
            Some(folder),
            Unlock {
                machine: Some(key.clone()),
                passphrase: None,
            },
            Some(Recipients {
                machines: vec![Recipient {
                    key: key.recipient(),
                    label: "office".into(),
                }],
                passphrase: None,
            }),
        )
        .with_chunk_params(ChunkParams {
            min: 1 << 10,
            avg: 4 << 10,
            max: 16 << 10,
        });
        s.init(folder).await.unwrap();
        let meta = FileMeta {
            mode: 0o644,
            mtime_ns: 1_700_000_000_000_000_000,
        };
        let src = tmp.path().join("src");
        let path = |p: &str| RelPath::try_from(p).unwrap();
        s.mkdir(
            &path("docs"),
            FileMeta {
                mode: 0o755,
                ..meta
            },
        )
        .await
        .unwrap();
        std::fs::write(&src, b"hello stick\n").unwrap();
        s.put(&path("docs/a.txt"), &src, meta).await.unwrap();
        s.write_state("state.0", b"first state").await.unwrap();
        // A file of ~100 small chunks: its chunk list is paged.
        let big: Vec<u8> = (0..400_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(&src, &big).unwrap();
        s.put(&path("docs/big.bin"), &src, meta).await.unwrap();
        s.symlink(&path("link"), b"docs/a.txt").await.unwrap();
        s.write_state("intents", b"some intents").await.unwrap();
        s.remove(&path("docs/a.txt")).await.unwrap();
        s.write_state("state.1", b"second state").await.unwrap();
        drop(s);

        let fdir = mount.join(format::folder_dir(folder));
        let write = |target: &str, name: &str, bytes: &[u8]| {
            let d = corpus_dir(target);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(name), bytes).unwrap();
        };
        write(
            "stick_file",
            "STICK",
            &std::fs::read(fdir.join("STICK")).unwrap(),
        );
        let keys = std::fs::read(fdir.join("keys.0.age")).unwrap();
        let record = entry::decrypt_key_file(&key, &keys).unwrap();
        write("key_record", "keys.0", &record);
        let secret = Secret::decode(&record).unwrap();
        for slot in ["state.0", "state.1"] {
            let Ok(file) = std::fs::read(fdir.join(format!("{slot}.age"))) else {
                continue;
            };
            write("root", &format!("{slot}.age"), &file);
            write(
                "root",
                slot,
                &secret.decrypt(&file, format::MAX_ROOT).unwrap(),
            );
        }
        let mut names = Vec::new();
        for e in walk(&fdir) {
            let local = e
                .strip_prefix(&fdir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if let Some(seg) = local.strip_prefix("segments/") {
                let file = std::fs::read(&e).unwrap();
                write("segment", seg, &file);
                let plain = secret.decrypt(&file, format::MAX_SEGMENT).unwrap();
                write("segment", seg.trim_end_matches(".age"), &plain);
            }
            names.push(local);
        }
        names.sort();
        for (i, n) in names.iter().enumerate() {
            write("chunk_name", &format!("name-{i:03}"), n.as_bytes());
        }
    });
}

/// A page of `n` chunks that one file lists `n` times: a chunk list of n² entries from a
/// segment of about 70·n bytes (before the fix, 2000 made a 160 MB list from 140 KB).
fn repeated_page_segment(secret: &Secret, n: u32) -> Vec<u8> {
    let chunks: Vec<ChunkRef> = (0..n).map(chunk).collect();
    let id = *blake3::hash(&postcard::to_stdvec(&chunks).unwrap()).as_bytes();
    let mut d = delta(secret.folder());
    d.pages.push((id, chunks));
    d.nodes.push((
        RelPath::try_from("big").unwrap(),
        node(Content::Paged(vec![id; n as usize])),
    ));
    secret.seal(false, &postcard::to_stdvec(&d).unwrap())
}

/// A base whose next inode number is the largest: the next write's `next_ino` overflowed
/// (a panic in a debug build, inode numbers reused in release).
fn next_ino_segment(secret: &Secret) -> Vec<u8> {
    let mut d = delta(secret.folder());
    d.next_ino = u64::MAX;
    secret.seal(false, &postcard::to_stdvec(&d).unwrap())
}

/// Regression: a page may hold at most `PAGE_MAX` chunks (what a writer makes); before, one
/// large page listed many times made a file's chunk list quadratic in the segment's size.
#[test]
fn regression_a_page_listed_many_times() {
    let secret = real_secret();
    let seg = repeated_page_segment(&secret, 2000);
    let r = bounded(seg.len(), || {
        entry::load_segments(&secret, secret.folder(), &[&seg], false)
    });
    let e = r.expect_err("a page of 2000 chunks is refused");
    assert!(e.contains("chunks"), "{e}");
    // Pages of the largest honest size, listed many times, load (a file of repeated content).
    let seg = repeated_page_segment(&secret, briefcase_stick::catalog::PAGE_MAX as u32);
    let cat = entry::load_segments(&secret, secret.folder(), &[&seg], false).unwrap();
    let big = cat.node(&RelPath::try_from("big").unwrap()).unwrap();
    assert_eq!(cat.chunks_of(&big.content).unwrap().len(), 256 * 256);
}

/// Regression: a catalog's next inode number is at most 2^62, so that writes never overflow it.
#[test]
fn regression_next_ino_overflow() {
    let secret = real_secret();
    let seg = next_ino_segment(&secret);
    let r = entry::load_segments(&secret, secret.folder(), &[&seg], false);
    assert!(r.as_ref().is_err_and(|e| e.contains("inode")), "{r:?}");
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
        repeated_page_segment(&secret, 2000),
    )
    .unwrap();
    std::fs::write(d.join("regression-next-ino"), next_ino_segment(&secret)).unwrap();
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
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
