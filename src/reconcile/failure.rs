//! Per-path failures of a sync ([`PathFailure`]): a step that failed for one path while the
//! others went ahead, redone at the next sync. Each says which path, on which side, what kind of
//! failure (for a caller to decide on: wait for a full disk to be cleared, retry once a mirror
//! is back, ask a person about a refusal) and the message users read.
//!
//! The kinds come from the errors in one place each: [`FailureKind::of_mirror`] for a
//! [`MirrorError`], [`FailureKind::of_io`] for a local [`io::Error`].

use std::fmt;
use std::io;

use briefcase_mirror::{MirrorError, RelPath};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::plan::Side;

/// What kind of failure, for a caller to decide on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The mirror or the medium could not be reached (offline, timed out, connection lost).
    Offline,
    /// The path, or a directory on the way to it, is not there.
    NotFound,
    /// A directory to remove or replace still holds entries.
    NotEmpty,
    /// Something is in the way: the name is taken (every conflict copy name, too).
    Exists,
    /// The disk or the quota is full.
    NoSpace,
    /// Not allowed: permissions, a read-only file system, a mirror this machine holds no key for.
    Permission,
    /// The medium cannot hold the item (too big for it, a name it cannot store, an operation it
    /// lacks).
    Refused,
    /// Refused for safety: the path is invalid, or writing it would follow a symlink or leave
    /// the root (invariant 6).
    Unsafe,
    /// What was to be copied changed during the sync (it no longer matches what was recorded).
    Changed,
    /// Anything else; also every failure read back from a report's JSON (see [`PathFailure`]).
    Other,
}

impl FailureKind {
    /// The kind of a mirror error. Every variant is named: a new variant of [`MirrorError`] gets
    /// its kind here.
    pub fn of_mirror(e: &MirrorError) -> FailureKind {
        match e {
            MirrorError::Offline { .. } => FailureKind::Offline,
            MirrorError::NotFound { .. } => FailureKind::NotFound,
            MirrorError::InvalidPath { .. } | MirrorError::Unsafe { .. } => FailureKind::Unsafe,
            MirrorError::Refused { .. } | MirrorError::Unsupported { .. } => FailureKind::Refused,
            MirrorError::Locked { .. } => FailureKind::Permission,
            MirrorError::SourceChanged { .. } => FailureKind::Changed,
            // Stops the whole sync (never one path's failure); named for completeness.
            MirrorError::Corrupt { .. } => FailureKind::Other,
            MirrorError::Io { source, .. } => FailureKind::of_io(source),
        }
    }

    /// The kind of an I/O error, by its [`io::ErrorKind`] or, where the standard library has no
    /// kind for it, its OS error number.
    pub fn of_io(e: &io::Error) -> FailureKind {
        use io::ErrorKind as K;
        match (e.kind(), e.raw_os_error()) {
            (K::NotFound, _) => FailureKind::NotFound,
            (K::DirectoryNotEmpty, _) | (_, Some(libc::ENOTEMPTY)) => FailureKind::NotEmpty,
            (K::AlreadyExists, _) => FailureKind::Exists,
            (K::StorageFull, _) | (_, Some(libc::ENOSPC | libc::EDQUOT)) => FailureKind::NoSpace,
            (K::PermissionDenied | K::ReadOnlyFilesystem, _)
            | (_, Some(libc::EACCES | libc::EPERM | libc::EROFS)) => FailureKind::Permission,
            (
                K::TimedOut
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::BrokenPipe
                | K::NotConnected,
                _,
            )
            | (_, Some(libc::ENOTCONN)) => FailureKind::Offline,
            _ => FailureKind::Other,
        }
    }
}

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
