//! Per-path failures of a sync ([`PathFailure`]): a step that failed for one path while the
//! others went ahead, redone at the next sync. Each says which path, on which side, what kind of
//! failure (for a caller to decide on: wait for a full disk to be cleared, retry once a mirror
//! is back, ask a person about a refusal) and the message users read.
//!
//! The kinds come from the errors in one place each: [`MirrorError::kind`] for a mirror's
//! error, [`ErrorKind::of_io`] for a local [`std::io::Error`] (both in the contract crate).

use std::fmt;
#[cfg(test)]
use std::io;

#[cfg(test)]
use briefcase_mirror::MirrorError;
use briefcase_mirror::{ErrorKind, RelPath};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::plan::Side;

/// What kind of failure, for a caller to decide on: the contract's [`ErrorKind`], which every
/// backend's errors map to ([`MirrorError::kind`]); local I/O errors map with
/// [`ErrorKind::of_io`].
pub type FailureKind = ErrorKind;

/// A step that failed for one path only; the rest of the sync went ahead, and the path is tried
/// again at the next sync. Its [`Display`](fmt::Display) is the message users read.
///
/// In JSON (`briefcase sync --json`, and the daemon's control socket, protocol 1) a failure is
/// its message alone, as it always was; read back from there it has neither path nor side, and
/// its kind is [`FailureKind::Other`]. The engine's callers in this process get all of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathFailure {
    /// The path of the step that failed (the message may name the path that stood in its way,
    /// such as a parent directory). `None` only when read back from JSON.
    pub path: Option<RelPath>,
    /// Where it failed: [`Side::Local`] on this machine, [`Side::Remote`] on the mirror. `None`
    /// only when read back from JSON.
    pub side: Option<Side>,
    /// What kind of failure.
    pub kind: FailureKind,
    /// What happened, to which path on which mirror or folder, and what to do.
    pub message: String,
}

impl PathFailure {
    /// A failure of the step at `path` on `side`.
    pub fn new(path: RelPath, side: Side, kind: FailureKind, message: String) -> PathFailure {
        PathFailure {
            path: Some(path),
            side: Some(side),
            kind,
            message,
        }
    }
}

impl fmt::Display for PathFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Serialize for PathFailure {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.message)
    }
}

impl<'de> Deserialize<'de> for PathFailure {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(PathFailure {
            path: None,
            side: None,
            kind: FailureKind::Other,
            message: String::deserialize(d)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_mirror_errors() {
        let io = |e: io::Error| MirrorError::Io {
            location: "dir:/m".into(),
            op: "write",
            path: "a".into(),
            source: e,
        };
        #[rustfmt::skip]
        let cases: Vec<(MirrorError, FailureKind)> = vec![
            (MirrorError::Offline { location: "dir:/m".into(), reason: "gone".into() }, FailureKind::Offline),
            (MirrorError::NotFound { location: "dir:/m".into(), path: "a".into() }, FailureKind::NotFound),
            (MirrorError::InvalidPath { location: "dir:/m".into(), path: "..".into(), source: briefcase_mirror::PathError::ParentDir }, FailureKind::Unsafe),
            (MirrorError::Unsafe { location: "dir:/m".into(), path: "a".into(), reason: "symlink".into() }, FailureKind::Unsafe),
            (MirrorError::Corrupt { location: "dir:/m".into(), what: "state".into(), reason: "bad".into() }, FailureKind::Other),
            (MirrorError::Refused { location: "dir:/m".into(), path: "a".into(), reason: "4 GiB".into() }, FailureKind::Refused),
            (MirrorError::Locked { location: "dir:/m".into(), reason: "no key".into() }, FailureKind::Permission),
            (MirrorError::Unsupported { location: "dir:/m".into(), what: "rename".into() }, FailureKind::Refused),
            (MirrorError::SourceChanged { location: "dir:/m".into(), path: "a".into() }, FailureKind::Changed),
            (io(io::Error::from_raw_os_error(libc::ENOSPC)), FailureKind::NoSpace),
            (io(io::Error::from_raw_os_error(libc::ENOTEMPTY)), FailureKind::NotEmpty),
            (io(io::Error::new(io::ErrorKind::TimedOut, "slow")), FailureKind::Offline),
            (io(io::Error::other("odd")), FailureKind::Other),
        ];
        for (e, want) in cases {
            assert_eq!(FailureKind::of_mirror(&e), want, "{e}");
        }
    }

    #[test]
    fn kinds_of_io_errors() {
        use io::ErrorKind as K;
        #[rustfmt::skip]
        let cases: Vec<(io::Error, FailureKind)> = vec![
            (io::Error::from_raw_os_error(libc::ENOENT), FailureKind::NotFound),
            (io::Error::from(K::NotFound), FailureKind::NotFound),
            (io::Error::from_raw_os_error(libc::ENOTEMPTY), FailureKind::NotEmpty),
            (io::Error::from(K::DirectoryNotEmpty), FailureKind::NotEmpty),
            (io::Error::from_raw_os_error(libc::EEXIST), FailureKind::Exists),
            (io::Error::from_raw_os_error(libc::ENOSPC), FailureKind::NoSpace),
            (io::Error::from_raw_os_error(libc::EDQUOT), FailureKind::NoSpace),
            (io::Error::from(K::StorageFull), FailureKind::NoSpace),
            (io::Error::from_raw_os_error(libc::EACCES), FailureKind::Permission),
            (io::Error::from_raw_os_error(libc::EPERM), FailureKind::Permission),
            (io::Error::from_raw_os_error(libc::EROFS), FailureKind::Permission),
            (io::Error::from(K::PermissionDenied), FailureKind::Permission),
            (io::Error::from_raw_os_error(libc::ENOTCONN), FailureKind::Offline),
            (io::Error::from(K::TimedOut), FailureKind::Offline),
            (io::Error::from_raw_os_error(libc::EIO), FailureKind::Other),
            (io::Error::other("odd"), FailureKind::Other),
        ];
        for (e, want) in cases {
            assert_eq!(FailureKind::of_io(&e), want, "{e}");
        }
    }

    /// In JSON a failure is its message, as before `PathFailure` (protocol 1, `sync --json`).
    #[test]
    fn json_is_the_message() {
        let f = PathFailure::new(
            RelPath::try_from("d/f").unwrap(),
            Side::Local,
            FailureKind::NoSpace,
            "folder /w: write d/f: No space left on device (os error 28)".into(),
        );
        assert_eq!(f.to_string(), f.message);
        let json = serde_json::to_string(&vec![f.clone()]).unwrap();
        assert_eq!(
            json,
            r#"["folder /w: write d/f: No space left on device (os error 28)"]"#
        );
        let back: Vec<PathFailure> = serde_json::from_str(&json).unwrap();
        assert_eq!(back[0].message, f.message);
        assert_eq!(back[0].kind, FailureKind::Other);
        assert_eq!((back[0].path.as_ref(), back[0].side), (None, None));
    }
}
