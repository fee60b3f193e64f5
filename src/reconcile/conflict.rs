//! Conflict copy names: `NAME.conflict-REPLICA-YYYYMMDD-HHMMSS.EXT` (DESIGN.md), where REPLICA
//! is the name of the replica whose version lost and the time is that version's mtime in UTC.
//! Both are properties of the losing version, so every machine that settles the same conflict
//! picks the same name, and the same losing content is kept once, not once per sync.

use briefcase_mirror::RelPath;

/// Marker inside every conflict copy name; `briefcase conflicts` looks for it.
pub const CONFLICT_TAG: &str = ".conflict-";

/// The conflict copy path for `path` whose losing version was written by `replica` at
/// `mtime_ns` (ns since the epoch).
pub fn conflict_name(path: &RelPath, replica: &str, mtime_ns: i64) -> RelPath {
    conflict_name_tagged(path, replica, mtime_ns, None)
}

/// Like [`conflict_name`], with `-TAG` after the time: `NAME.conflict-REPLICA-YYYYMMDD-HHMMSS-TAG.EXT`.
/// Used when the plain name is already taken by different content (two losing versions from
/// one replica within the same second, which FAT's 2 s mtimes and `cp -p` make common); TAG is
/// lowercase hex from the losing content's hash, so every machine still picks the same name.
/// [`original_of`] accepts both shapes.
pub fn conflict_name_tagged(
    path: &RelPath,
    replica: &str,
    mtime_ns: i64,
    tag: Option<&str>,
) -> RelPath {
    let name = path.file_name();
    let (stem, ext) = match name.iter().rposition(|b| *b == b'.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, &b""[..]),
    };
    let t = time::OffsetDateTime::from_unix_timestamp(mtime_ns.div_euclid(1_000_000_000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let stamp = format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let replica: String = replica
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    let mut new_name = stem.to_vec();
    new_name.extend_from_slice(format!("{CONFLICT_TAG}{replica}-{stamp}").as_bytes());
    if let Some(tag) = tag {
        new_name.push(b'-');
        new_name.extend_from_slice(tag.as_bytes());
    }
    new_name.extend_from_slice(ext);
    // Keep within NAME_MAX by shortening the stem.
    while new_name.len() > briefcase_mirror::path::MAX_NAME_BYTES && !new_name.is_empty() {
        new_name.remove(0);
    }
    let full = match path.parent() {
        Some(p) => p.join(&new_name),
        None => RelPath::new(new_name.clone()),
    };
    full.unwrap_or_else(|_| path.clone())
}

/// Whether a path is a conflict copy, and of which original name.
pub fn is_conflict_copy(path: &RelPath) -> bool {
    let name = path.file_name();
    name.windows(CONFLICT_TAG.len())
        .any(|w| w == CONFLICT_TAG.as_bytes())
}

/// The original path of a conflict copy (`a/report.conflict-x-20260101-000000.txt` →
/// `a/report.txt`), if the name has the expected shape.
pub fn original_of(copy: &RelPath) -> Option<RelPath> {
    let name = copy.file_name();
    let i = name
        .windows(CONFLICT_TAG.len())
        .position(|w| w == CONFLICT_TAG.as_bytes())?;
    let rest = &name[i + CONFLICT_TAG.len()..];
    // REPLICA-YYYYMMDD-HHMMSS then optional .EXT
    let dash_time = rest.windows(16).position(|w| {
        w[0] == b'-'
            && w[1..9].iter().all(u8::is_ascii_digit)
            && w[9] == b'-'
            && w[10..16].iter().all(u8::is_ascii_digit)
    })?;
    let mut ext = &rest[dash_time + 16..];
    // Optional `-TAG` (lowercase hex) from `conflict_name_tagged`; the original's extension, if
    // any, starts with a dot.
    if let Some(tail) = ext.strip_prefix(b"-") {
        let n = tail
            .iter()
            .take_while(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(*b))
            .count();
        if n >= 4 && (n == tail.len() || tail[n] == b'.') {
            ext = &tail[n..];
        }
    }
    let mut orig = name[..i].to_vec();
    orig.extend_from_slice(ext);
    match copy.parent() {
        Some(p) => p.join(&orig).ok(),
        None => RelPath::new(orig).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_table() {
        let t = 1_700_000_000_000_000_000; // 2023-11-14 22:13:20 UTC
        for (path, want) in [
            ("report.txt", "report.conflict-home-20231114-221320.txt"),
            (
                "a/b/archive.tar.gz",
                "a/b/archive.tar.conflict-home-20231114-221320.gz",
            ),
            (".bashrc", ".bashrc.conflict-home-20231114-221320"),
            ("Makefile", "Makefile.conflict-home-20231114-221320"),
        ] {
            let p = RelPath::try_from(path).unwrap();
            let c = conflict_name(&p, "home", t);
            assert_eq!(c.display(), want);
            assert!(is_conflict_copy(&c));
            assert_eq!(original_of(&c), Some(p.clone()), "{want}");
            let tagged = conflict_name_tagged(&p, "home", t, Some("0a1b2c3d"));
            assert!(is_conflict_copy(&tagged));
            assert_eq!(original_of(&tagged), Some(p), "{}", tagged.display());
        }
        let p = RelPath::try_from("notes.txt").unwrap();
        assert_eq!(
            conflict_name_tagged(&p, "home", t, Some("0a1b2c3d")).display(),
            "notes.conflict-home-20231114-221320-0a1b2c3d.txt"
        );
    }

    #[test]
    fn replica_names_are_sanitised() {
        let p = RelPath::try_from("x.txt").unwrap();
        assert_eq!(
            conflict_name(&p, "my/laptop.local", 0).display(),
            "x.conflict-my_laptop_local-19700101-000000.txt"
        );
    }
}
