//! [`RelPath`]: a path relative to a replica root that is safe to join to it.
//!
//! Every path that crosses a trust boundary (a mirror's manifest, a stick, a peer's frame) is parsed
//! into a `RelPath` before anything touches the file system, which is how invariant 6 of
//! DESIGN.md ("untrusted input is checked") is kept in one place: a `RelPath` is never empty,
//! never absolute, has no `.`/`..`/empty components, no NUL byte, and stays within the length
//! limits of Linux file systems. Names are bytes, not UTF-8: a non-UTF-8 file name syncs as is.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest accepted relative path, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest accepted single component, in bytes (Linux `NAME_MAX`).
pub const MAX_NAME_BYTES: usize = 255;

/// Why a byte string is not a valid [`RelPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path has no components.
    #[error("the path is empty")]
    Empty,
    /// The path starts with `/`.
    #[error("the path is absolute")]
    Absolute,
    /// A component is `..`, which could climb out of the root.
    #[error("the path has a `..` component")]
    ParentDir,
    /// A component is `.` or empty (`a//b`, trailing `/`): not in normal form.
    #[error("the path has an empty or `.` component")]
    NotNormal,
    /// The path contains a NUL byte.
    #[error("the path contains a NUL byte")]
    Nul,
    /// The path or one of its components is longer than Linux allows.
    #[error("the path is too long ({0} bytes)")]
    TooLong(usize),
}

/// A normalised path relative to a replica root, components separated by `/`.
///
/// Ordering is bytewise, which sorts a directory immediately before its contents
/// (`a` < `a/b` < `a0`), the order in which the engine creates and the reverse of which it removes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(Vec<u8>);

impl RelPath {
    /// Parses and validates `bytes`.
    ///
    /// # Errors
    /// [`PathError`] says which rule the bytes break.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, PathError> {
        let bytes = bytes.into();
        validate(&bytes)?;
        Ok(RelPath(bytes))
    }

    /// Builds a `RelPath` from a path relative to a root, such as a `strip_prefix` result.
    ///
    /// # Errors
    /// As [`RelPath::new`].
    pub fn from_path(path: &Path) -> Result<Self, PathError> {
        Self::new(path.as_os_str().as_bytes().to_vec())
    }

    /// The raw bytes, `/`-separated.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// As an `OsStr`, for joining onto a root.
    pub fn as_os_str(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }

    /// `root/self`. Safe against `..` by construction; symlinks in the parents are the caller's to
    /// check (see [`crate::fsutil::resolve`]).
    pub fn under(&self, root: &Path) -> PathBuf {
        root.join(self.as_os_str())
    }

    /// The components, first to last.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|b| *b == b'/')
    }

    /// The last component.
    pub fn file_name(&self) -> &[u8] {
        match self.0.iter().rposition(|b| *b == b'/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// The parent directory, or `None` for a top-level name.
    pub fn parent(&self) -> Option<RelPath> {
        self.0
            .iter()
            .rposition(|b| *b == b'/')
            .map(|i| RelPath(self.0[..i].to_vec()))
    }

    /// Every proper ancestor, outermost first (`a`, `a/b` for `a/b/c`).
    pub fn ancestors(&self) -> Vec<RelPath> {
        let mut out = Vec::new();
        for (i, b) in self.0.iter().enumerate() {
            if *b == b'/' {
                out.push(RelPath(self.0[..i].to_vec()));
            }
        }
        out
    }

    /// Whether `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        self.0 == other.0
            || (self.0.len() > other.0.len()
                && self.0.starts_with(&other.0)
                && self.0[other.0.len()] == b'/')
    }

    /// `self/name`.
    ///
    /// # Errors
    /// When `name` is not a single valid component or the result is too long.
    pub fn join(&self, name: &[u8]) -> Result<RelPath, PathError> {
        if name.contains(&b'/') {
            return Err(PathError::NotNormal);
        }
        let mut v = self.0.clone();
        v.push(b'/');
        v.extend_from_slice(name);
        RelPath::new(v)
    }

    /// Replaces the prefix `from` (which `self` must start with) by `to`.
    pub fn rebase(&self, from: &RelPath, to: &RelPath) -> Option<RelPath> {
        if !self.starts_with(from) {
            return None;
        }
        let mut v = to.0.clone();
        v.extend_from_slice(&self.0[from.0.len()..]);
        RelPath::new(v).ok()
    }

    /// Whether the path is, or lies inside, the per-root state directory `.briefcase` or is one of
    /// briefcase's own files (`.briefcase-folder`, `.briefcase-tmp-*`), which are never replicated.
    pub fn is_reserved(&self) -> bool {
        let first = self.components().next().unwrap_or_default();
        first == b".briefcase"
            || first == b".briefcase-folder"
            || self.components().any(|c| c.starts_with(b".briefcase-tmp-"))
    }

    /// Lossy UTF-8 rendering for messages.
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

fn validate(bytes: &[u8]) -> Result<(), PathError> {
    if bytes.is_empty() {
        return Err(PathError::Empty);
    }
    if bytes.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong(bytes.len()));
    }
    if bytes[0] == b'/' {
        return Err(PathError::Absolute);
    }
    if bytes.contains(&0) {
        return Err(PathError::Nul);
    }
    for c in bytes.split(|b| *b == b'/') {
        match c {
            b"" | b"." => return Err(PathError::NotNormal),
            b".." => return Err(PathError::ParentDir),
            c if c.len() > MAX_NAME_BYTES => return Err(PathError::TooLong(c.len())),
            _ => {}
        }
    }
    Ok(())
}

thread_local! {
    static LAST_REJECTED: std::cell::RefCell<Option<(String, PathError)>> = const { std::cell::RefCell::new(None) };
}

fn remember_rejected(bytes: &[u8], e: &PathError) {
    LAST_REJECTED
        .with(|l| *l.borrow_mut() = Some((String::from_utf8_lossy(bytes).into_owned(), e.clone())));
}

/// The path most recently refused while deserialising on this thread, and why. Decoders whose
/// error type drops serde's message (postcard) use it to name the offending path (invariant 6).
pub fn take_last_rejected() -> Option<(String, PathError)> {
    LAST_REJECTED.with(|l| l.borrow_mut().take())
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl TryFrom<&str> for RelPath {
    type Error = PathError;
    fn try_from(s: &str) -> Result<Self, PathError> {
        RelPath::new(s.as_bytes().to_vec())
    }
}

impl Serialize for RelPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RelPath;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a relative path as bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<RelPath, E> {
                RelPath::new(v.to_vec()).map_err(|e| {
                    remember_rejected(v, &e);
                    E::custom(format!("bad path {:?}: {e}", String::from_utf8_lossy(v)))
                })
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<RelPath, E> {
                self.visit_bytes(&v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RelPath, A::Error> {
                let mut v = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    if v.len() > MAX_PATH_BYTES {
                        return Err(serde::de::Error::custom("path too long"));
                    }
                    v.push(b);
                }
                self.visit_byte_buf(v)
            }
        }
        d.deserialize_bytes(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! path_cases {
        ($($input:expr => $ok:expr),* $(,)?) => {
            $( assert_eq!(RelPath::new($input.as_bytes().to_vec()).is_ok(), $ok, "{:?}", $input); )*
        };
    }

    #[test]
    fn validation_table() {
        path_cases! {
            "a" => true,
            "a/b/c.txt" => true,
            "héllo wörld" => true,
            ".git/index" => true,
            "..a" => true,
            "" => false,
            "/etc/passwd" => false,
            "../x" => false,
            "a/../../x" => false,
            "a/./b" => false,
            "a//b" => false,
            "a/" => false,
            "a\0b" => false,
        }
    }

    #[test]
    fn non_utf8_is_accepted() {
        assert!(RelPath::new(vec![b'a', 0xff, b'b']).is_ok());
    }

    #[test]
    fn ordering_puts_parent_before_children() {
        let mut v: Vec<RelPath> = ["a0", "a/b", "a"]
            .iter()
            .map(|s| RelPath::try_from(*s).unwrap())
            .collect();
        v.sort();
        assert_eq!(
            v.iter().map(|p| p.display()).collect::<Vec<_>>(),
            ["a", "a/b", "a0"]
        );
    }

    #[test]
    fn reserved_names() {
        for (p, r) in [
            (".briefcase/state.0", true),
            (".briefcase-folder", true),
            ("x/.briefcase-tmp-1", true),
            ("briefcase", false),
        ] {
            assert_eq!(RelPath::try_from(p).unwrap().is_reserved(), r, "{p}");
        }
    }

    #[test]
    fn deserialize_refuses_escape() {
        let bytes = postcard::to_stdvec(&b"../../etc/passwd".to_vec()).unwrap();
        assert!(postcard::from_bytes::<RelPath>(&bytes).is_err());
    }
}
