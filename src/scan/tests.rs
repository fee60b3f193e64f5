use super::*;
use std::fs;

fn entry_from(o: &Observed) -> Entry {
    use briefcase_mirror::{Osn, ReplicaId, Stamp, VersionVector};
    Entry {
        path: o.path.clone(),
        kind: o.kind,
        deleted: false,
        size: o.size,
        mode: o.mode,
        mtime_ns: o.mtime_ns,
        hash: o.hash,
        symlink_target: o.symlink_target.clone(),
        chunks: o.chunks.clone(),
        version: VersionVector::new(),
        stamp: Stamp {
            replica: ReplicaId(1),
            osn: Osn(1),
        },
        inode: o.inode,
        observed_mtime_ns: o.mtime_ns,
    }
}

fn known_after(root: &Path) -> Vec<Known> {
    scan(root, None, &[], &IgnoreRules::defaults())
        .unwrap()
        .into_iter()
        .filter_map(|c| match c {
            Change::Upsert(o) => Some(Known::from(&entry_from(&o))),
            Change::Remove(_) => None,
        })
        .collect()
}

#[test]
fn unchanged_tree_yields_nothing_and_edits_are_found() {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir(d.path().join("sub")).unwrap();
    fs::write(d.path().join("sub/a"), b"hello").unwrap();
    fs::write(d.path().join("b"), b"world").unwrap();
    std::os::unix::fs::symlink("sub/a", d.path().join("link")).unwrap();
    fs::write(d.path().join("b.swp"), b"x").unwrap();
    let known = known_after(d.path());
    let paths: Vec<String> = known.iter().map(|e| e.path.display()).collect();
    assert_eq!(paths, ["b", "link", "sub", "sub/a"]);
    assert!(scan(d.path(), None, &known, &IgnoreRules::defaults())
        .unwrap()
        .is_empty());

    fs::write(d.path().join("sub/a"), b"hello, changed").unwrap();
    fs::remove_file(d.path().join("b")).unwrap();
    let ch = scan(d.path(), None, &known, &IgnoreRules::defaults()).unwrap();
    assert_eq!(ch.len(), 2, "{ch:?}");
    assert!(
        matches!(&ch[0], Change::Upsert(o) if o.path.display() == "sub/a" && o.hash == Some(ContentHash::of(b"hello, changed")))
    );
    assert!(matches!(&ch[1], Change::Remove(p) if p.display() == "b"));
}

#[test]
fn scoped_scan_sees_only_the_subtree() {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("x/y")).unwrap();
    fs::write(d.path().join("x/y/f"), b"1").unwrap();
    fs::write(d.path().join("other"), b"2").unwrap();
    let scope = RelPath::try_from("x").unwrap();
    let ch = scan(d.path(), Some(&scope), &[], &IgnoreRules::defaults()).unwrap();
    let paths: Vec<String> = ch.iter().map(|c| c.path().display()).collect();
    assert_eq!(paths, ["x", "x/y", "x/y/f"]);
}

#[test]
fn chunks_cover_the_file_and_are_stable_under_local_edits() {
    let mut data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let (h1, c1) = hash_reader(&data[..]).unwrap();
    assert_eq!(c1.iter().map(|c| c.len as usize).sum::<usize>(), data.len());
    assert_eq!(h1, ContentHash::of(&data));
    data[1_500_000] ^= 1;
    let (_, c2) = hash_reader(&data[..]).unwrap();
    let same = c1
        .iter()
        .filter(|a| c2.iter().any(|b| b.hash == a.hash))
        .count();
    assert!(
        same + 3 >= c1.len(),
        "a one-byte edit changed {} of {} chunks",
        c1.len() - same,
        c1.len()
    );
}

#[test]
fn missing_root_is_an_error_not_a_deletion() {
    let d = tempfile::tempdir().unwrap();
    let gone = d.path().join("gone");
    assert!(matches!(
        scan(&gone, None, &[], &IgnoreRules::defaults()),
        Err(ScanError::RootMissing(_))
    ));
}

#[test]
fn whole_tree_walk_names_leftover_temp_files_and_skips_them() {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("a/.briefcase-tmp-dir/inner")).unwrap();
    fs::write(d.path().join("a/.briefcase-tmp-1"), b"half").unwrap();
    fs::write(d.path().join(".briefcase-tmp-2"), b"").unwrap();
    fs::write(d.path().join("a/.briefcase-tmp-dir/inner/x"), b"").unwrap();
    fs::write(d.path().join("a/kept"), b"data").unwrap();
    // briefcase's own files are reserved, not leftovers.
    fs::write(d.path().join(".briefcase-folder"), b"marker").unwrap();
    let w = scan_tree(d.path(), &[], &IgnoreRules::defaults()).unwrap();
    let mut left: Vec<String> = w.leftovers.iter().map(RelPath::display).collect();
    left.sort();
    assert_eq!(
        left,
        [
            ".briefcase-tmp-2",
            "a/.briefcase-tmp-1",
            "a/.briefcase-tmp-dir"
        ]
    );
    let paths: Vec<String> = w.changes.iter().map(|c| c.path().display()).collect();
    assert_eq!(paths, ["a", "a/kept"]);
}

/// A file that fits in one chunk is hashed without FastCDC: the same hash and chunk list.
#[test]
fn small_files_hash_as_fastcdc_would() {
    let d = tempfile::tempdir().unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let min = CHUNK_MIN as usize;
    for len in [0, 1, 100, 4096, min - 1, min, min + 1, 3 * min] {
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let p = d.path().join(format!("f{len}"));
        fs::write(&p, &data).unwrap();
        assert_eq!(
            hash_file(&p).unwrap(),
            hash_reader(&data[..]).unwrap(),
            "{len} bytes"
        );
    }
}
