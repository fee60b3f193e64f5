//! [`MirrorError`]: what can go wrong talking to a mirror, always naming the mirror (its location)
//! and the path, and telling a transient failure (retry later, keep all sync state) from a
//! permanent one (a person must act). Modelled on rclone's `fs/fserrors`.

use std::io;

use crate::path::PathError;

/// Result of a mirror operation.
pub type MirrorResult<T> = Result<T, MirrorError>;

/// An error from a backend, carrying the mirror's location (e.g. `dir:/mnt/nas/work`).
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The mirror's root or its folder marker is missing: the disk is not mounted, the stick not
    /// inserted, the share empty. Nothing may be deleted because of it (invariant 4).
    #[error("mirror {location} is offline: {reason}")]
    Offline {
        /// The mirror.
        location: String,
        /// What was missing, in words a user understands, with what to check.
        reason: String,
    },
    /// The path does not exist on the mirror.
    #[error("{path} not found on mirror {location}")]
    NotFound {
        /// The mirror.
        location: String,
        /// The missing path.
        path: String,
    },
    /// A path from the mirror (or for it) breaks the rules of [`crate::RelPath`].
    #[error("mirror {location} has an invalid path {path:?}: {source}; it was refused and nothing was written")]
    InvalidPath {
        /// The mirror.
        location: String,
        /// The offending path, lossily rendered.
        path: String,
        /// Which rule it breaks.
        source: PathError,
    },
    /// Writing the path would follow a symlink or leave the root.
    #[error("refused {path} on mirror {location}: {reason}")]
    Unsafe {
        /// The mirror.
        location: String,
        /// The path.
        path: String,
        /// Why (e.g. "parent `a` is a symlink").
        reason: String,
    },
    /// The mirror's state is damaged or not ours (bad checksum, wrong folder, undecodable).
    #[error("mirror {location}: {what} is damaged or foreign: {reason}")]
    Corrupt {
        /// The mirror.
        location: String,
        /// Which file or item.
        what: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The medium cannot hold the item (FAT's 4 GiB limit, a case-only collision, a full disk).
    #[error("mirror {location} cannot store {path}: {reason}")]
    Refused {
        /// The mirror.
        location: String,
        /// The path.
        path: String,
        /// Why, and what to do.
        reason: String,
    },
    /// The mirror is encrypted and this machine holds no key that opens it.
    #[error("mirror {location} cannot be opened: {reason}")]
    Locked {
        /// The mirror.
        location: String,
        /// Who can open it, and how to add this machine.
        reason: String,
    },
    /// The backend lacks the operation; see its [`crate::Capabilities`].
    #[error("mirror {location} does not support {what}")]
    Unsupported {
        /// The mirror.
        location: String,
        /// The operation.
        what: String,
    },
    /// The local file being sent changed while it was read (its content no longer hashes to
    /// [`crate::PutItem::expect`]); nothing was stored for it. Not transient: the caller journals
    /// the new content and sends that.
    #[error("{path} changed while it was being sent to mirror {location}; nothing was replaced there, it is sent again with its new content")]
    SourceChanged {
        /// The mirror.
        location: String,
        /// The path on the mirror.
        path: String,
    },
    /// An I/O error on the mirror.
    #[error("mirror {location}: {op} {path}: {source}")]
    Io {
        /// The mirror.
        location: String,
        /// The operation (`read`, `write`, `rename`, …).
        op: &'static str,
        /// The path.
        path: String,
        /// The cause.
        source: io::Error,
    },
}

impl MirrorError {
    /// The same error again, for each item of a batch that one failure stopped: the same
    /// variant, location, path and reason, so every item is judged as the failure would be
    /// (offline stays transient, a refusal stays a refusal). I/O errors keep their OS error
    /// number (or kind) and text.
    pub fn duplicate(&self) -> MirrorError {
        fn io_again(e: &io::Error) -> io::Error {
            match e.raw_os_error() {
                Some(code) => io::Error::from_raw_os_error(code),
                None => io::Error::new(e.kind(), e.to_string()),
            }
        }
        match self {
            MirrorError::Offline { location, reason } => MirrorError::Offline {
                location: location.clone(),
                reason: reason.clone(),
            },
            MirrorError::NotFound { location, path } => MirrorError::NotFound {
                location: location.clone(),
                path: path.clone(),
            },
            MirrorError::InvalidPath {
                location,
                path,
                source,
            } => MirrorError::InvalidPath {
                location: location.clone(),
                path: path.clone(),
                source: source.clone(),
            },
            MirrorError::Unsafe {
                location,
                path,
                reason,
            } => MirrorError::Unsafe {
                location: location.clone(),
                path: path.clone(),
                reason: reason.clone(),
            },
            MirrorError::Corrupt {
                location,
                what,
                reason,
            } => MirrorError::Corrupt {
                location: location.clone(),
                what: what.clone(),
                reason: reason.clone(),
            },
            MirrorError::Refused {
                location,
                path,
                reason,
            } => MirrorError::Refused {
                location: location.clone(),
                path: path.clone(),
                reason: reason.clone(),
            },
            MirrorError::Locked { location, reason } => MirrorError::Locked {
                location: location.clone(),
                reason: reason.clone(),
            },
            MirrorError::Unsupported { location, what } => MirrorError::Unsupported {
                location: location.clone(),
                what: what.clone(),
            },
            MirrorError::SourceChanged { location, path } => MirrorError::SourceChanged {
                location: location.clone(),
                path: path.clone(),
            },
            MirrorError::Io {
                location,
                op,
                path,
                source,
            } => MirrorError::Io {
                location: location.clone(),
                op,
                path: path.clone(),
                source: io_again(source),
            },
        }
    }

    /// [`MirrorError::duplicate`] naming `path` where this error names none (a failure that
    /// stopped a whole batch before any item was tried: each item's result says which it was).
    pub fn duplicate_for(&self, path: &str) -> MirrorError {
        let mut e = self.duplicate();
        if let MirrorError::Io { path: p, .. } = &mut e {
            if p.is_empty() {
                *p = path.to_string();
            }
        }
        e
    }

    /// What kind of failure this is, for a caller to decide on ([`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::of(self)
    }

    /// Whether retrying later may succeed without anyone acting (timeouts, lost connections,
    /// a mirror going offline). A transient error never discards sync state (invariant 7).
    pub fn is_transient(&self) -> bool {
        match self {
            MirrorError::Offline { .. } => true,
            MirrorError::Io { source, .. } => {
                matches!(
                    source.kind(),
                    io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::BrokenPipe
                        | io::ErrorKind::NotConnected
                        | io::ErrorKind::WouldBlock
                ) || source.raw_os_error() == Some(libc_enotconn())
            }
            _ => false,
        }
    }

    /// Whether this is a [`crate::Mirror::remove`] of a directory that still holds entries
    /// (`ENOTEMPTY`, or `EEXIST` which POSIX allows for it): the caller decides what the
    /// directory's unseen contents mean (the engine keeps it: edit beats delete).
    pub fn is_dir_not_empty(&self) -> bool {
        match self {
            // EEXIST is also what POSIX allows rmdir(2) to answer for a directory with entries.
            MirrorError::Io { source, .. } => {
                self.kind() == ErrorKind::NotEmpty || source.raw_os_error() == Some(libc::EEXIST)
            }
            _ => false,
        }
    }

    /// Builds an [`MirrorError::Io`], or [`MirrorError::NotFound`] when the cause is `ENOENT`.
    pub fn io(
        location: &str,
        op: &'static str,
        path: impl std::fmt::Display,
        source: io::Error,
    ) -> Self {
        if source.kind() == io::ErrorKind::NotFound {
            MirrorError::NotFound {
                location: location.to_string(),
                path: path.to_string(),
            }
        } else {
            MirrorError::Io {
                location: location.to_string(),
                op,
                path: path.to_string(),
                source,
            }
        }
    }
}

const fn libc_enotconn() -> i32 {
    107 // ENOTCONN on Linux: a yanked FUSE stick answers with it
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duplicate_is_judged_as_the_original() {
        let errs = [
            MirrorError::Offline {
                location: "dir:/m".into(),
                reason: "gone".into(),
            },
            MirrorError::Refused {
                location: "dir:/m".into(),
                path: "a".into(),
                reason: "too big".into(),
            },
            MirrorError::Corrupt {
                location: "dir:/m".into(),
                what: "state".into(),
                reason: "bad".into(),
            },
            MirrorError::Io {
                location: "dir:/m".into(),
                op: "remove",
                path: "d".into(),
                source: io::Error::from_raw_os_error(39),
            },
            MirrorError::Io {
                location: "dir:/m".into(),
                op: "write",
                path: "f".into(),
                source: io::Error::new(io::ErrorKind::TimedOut, "slow"),
            },
        ];
        for e in &errs {
            let d = e.duplicate();
            assert_eq!(d.to_string(), e.to_string());
            assert_eq!(d.is_transient(), e.is_transient());
            assert_eq!(d.is_dir_not_empty(), e.is_dir_not_empty());
            assert_eq!(std::mem::discriminant(&d), std::mem::discriminant(e), "{e}");
        }
    }
}

/// What kind of failure a [`MirrorError`] (or a local I/O error) is, for a caller to decide on:
/// wait for a full disk to be cleared, retry once a mirror is back, ask a person about a
/// refusal. A backend whose protocol has no errno (SFTP status codes, FTP replies) gives its
/// I/O errors the matching [`io::ErrorKind`] (`DirectoryNotEmpty`, `AlreadyExists`,
/// `StorageFull`, `PermissionDenied`, …) and the kind follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
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
    /// Anything else (also every failure read back from a sync report's JSON).
    Other,
}

impl ErrorKind {
    /// The kind of a mirror error ([`MirrorError::kind`]).
    pub fn of_mirror(e: &MirrorError) -> ErrorKind {
        e.kind()
    }

    /// [`MirrorError::kind`]. Every variant is named: a new variant of [`MirrorError`] gets its
    /// kind here.
    fn of(e: &MirrorError) -> ErrorKind {
        match e {
            MirrorError::Offline { .. } => ErrorKind::Offline,
            MirrorError::NotFound { .. } => ErrorKind::NotFound,
            MirrorError::InvalidPath { .. } | MirrorError::Unsafe { .. } => ErrorKind::Unsafe,
            MirrorError::Refused { .. } | MirrorError::Unsupported { .. } => ErrorKind::Refused,
            MirrorError::Locked { .. } => ErrorKind::Permission,
            MirrorError::SourceChanged { .. } => ErrorKind::Changed,
            // Stops the whole sync (never one path's failure); named for completeness.
            MirrorError::Corrupt { .. } => ErrorKind::Other,
            MirrorError::Io { source, .. } => ErrorKind::of_io(source),
        }
    }

    /// The kind of an I/O error, by its [`io::ErrorKind`] or, where the standard library has no
    /// kind for it, its OS error number.
    pub fn of_io(e: &io::Error) -> ErrorKind {
        use io::ErrorKind as K;
        match (e.kind(), e.raw_os_error()) {
            (K::NotFound, _) => ErrorKind::NotFound,
            (K::DirectoryNotEmpty, _) | (_, Some(libc::ENOTEMPTY)) => ErrorKind::NotEmpty,
            (K::AlreadyExists, _) => ErrorKind::Exists,
            (K::StorageFull, _) | (_, Some(libc::ENOSPC | libc::EDQUOT)) => ErrorKind::NoSpace,
            (K::PermissionDenied | K::ReadOnlyFilesystem, _)
            | (_, Some(libc::EACCES | libc::EPERM | libc::EROFS)) => ErrorKind::Permission,
            (
                K::TimedOut
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::BrokenPipe
                | K::NotConnected,
                _,
            )
            | (_, Some(libc::ENOTCONN)) => ErrorKind::Offline,
            _ => ErrorKind::Other,
        }
    }
}
