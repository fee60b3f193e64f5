//! Race-free paths under a root (invariant 6: nothing is written outside the root, no symlink
//! inside it is followed), for roots that others can write: a NAS share, a stick, and the local
//! folder the engine applies pulls to.
//!
//! Checking each ancestor with `lstat` and then handing a path string to a later call is not
//! enough: between the check and the call, an ancestor can be swapped for a symlink
//! (`renameat2(RENAME_EXCHANGE)` makes the swap atomic), and the later call walks the string
//! again and follows it out of the root. So a [`Beneath`] holds the root open, and
//! [`Beneath::resolve`] opens the *parent directory* of a path with `openat2(2)` and
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` (kernels before 5.6: one `openat(O_NOFOLLOW)` per
//! component), and keeps that handle in the returned [`Anchored`]. Its [`Anchored::path`] names
//! the entry *through the held handle* (`/proc/self/fd/N/NAME`): the kernel jumps straight to the
//! directory already opened and walks only the final name, which every caller either does not
//! follow (`lstat`, `O_NOFOLLOW`, `rename`, `unlink`, `lutimes`) or follows only on a handle it
//! opened with `O_NOFOLLOW` ([`chmod_nofollow`]). The same technique runs in runc's and
//! libpathrs's "procfs handles"; the `/proc` path is only valid while the handle is held, so an
//! [`Anchored`] hands out borrowed paths only.
//!
//! A path whose ancestor does not exist yet resolves to an anchor inside a directory that was
//! removed after it was opened: every lookup or creation there fails with `ENOENT`, exactly what
//! the missing ancestor gives, and no one can create anything in it (the kernel refuses entries
//! in a removed directory). Missing directories are created with [`Beneath::create_dir_all`], one
//! `mkdirat` under a held handle at a time.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::path::RelPath;

/// Why a path cannot be used safely under a root.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// An ancestor of the path is a symlink (or not a directory): following it could leave the root.
    #[error("its parent {0} is a symlink or not a directory; refusing to follow it")]
    UnsafeParent(String),
    /// I/O error while opening the root or an ancestor.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A directory held open (`O_PATH`), named through `/proc/self/fd`.
#[derive(Debug)]
struct DirFd {
    fd: OwnedFd,
    /// `/proc/self/fd/N`.
    proc: PathBuf,
}

impl DirFd {
    fn new(fd: OwnedFd) -> DirFd {
        let proc = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        DirFd { fd, proc }
    }
}

/// A root directory held open, under which paths are resolved without following any symlink.
/// Open one per operation or batch (a root that is unmounted and mounted again is a new
/// directory). Directories opened for [`Beneath::resolve`] are shared by the anchors that use
/// them while any of them lives (a batch of files in one directory holds one handle).
#[derive(Debug)]
pub struct Beneath {
    root: Arc<DirFd>,
    root_path: PathBuf,
    dirs: Mutex<HashMap<RelPath, Weak<DirFd>>>,
}

/// An entry under a [`Beneath`] root whose parent directory is held open: [`Anchored::path`]
/// reaches the entry through that handle, never by walking the root's path again. Valid (and
/// must be used) only while the anchor lives: never keep a copy of its path.
#[derive(Debug, Clone)]
pub struct Anchored {
    dir: Arc<DirFd>,
    /// `/proc/self/fd/N/NAME`.
    path: PathBuf,
}

impl Anchored {
    /// The entry, through its held parent directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its parent directory, through the held handle (`/proc/self/fd/N`).
    pub fn parent(&self) -> &Path {
        &self.dir.proc
    }

    /// Whether `other` is in the same held directory (the same handle).
    pub fn same_parent(&self, other: &Anchored) -> bool {
        Arc::ptr_eq(&self.dir, &other.dir)
    }

    /// A handle on the parent directory, for grouping (e.g. one fsync per directory) while the
    /// anchors are alive.
    pub fn parent_handle(&self) -> ParentDir {
        ParentDir(self.dir.clone())
    }

    /// Another entry in the same directory (`name`: one component, no `/`).
    ///
    /// # Errors
    /// `InvalidInput` when `name` is empty, `.`, `..` or holds a `/`.
    pub fn sibling(&self, name: &OsStr) -> io::Result<Anchored> {
        check_name(name.as_bytes())?;
        Ok(Anchored {
            dir: self.dir.clone(),
            path: self.dir.proc.join(name),
        })
    }
}

impl AsRef<Path> for Anchored {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

/// A held parent directory (see [`Anchored::parent_handle`]); equal when it is the same handle.
#[derive(Debug, Clone)]
pub struct ParentDir(Arc<DirFd>);

impl ParentDir {
    /// The directory, through the held handle (`/proc/self/fd/N`).
    pub fn path(&self) -> &Path {
        &self.0.proc
    }
}

impl PartialEq for ParentDir {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for ParentDir {}
impl std::hash::Hash for ParentDir {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.0) as usize).hash(state);
    }
}
impl PartialOrd for ParentDir {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ParentDir {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (Arc::as_ptr(&self.0) as usize).cmp(&(Arc::as_ptr(&other.0) as usize))
    }
}

fn check_name(name: &[u8]) -> io::Result<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a single file name",
        ));
    }
    Ok(())
}

fn dir_flags() -> OFlags {
    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC
}

/// The shared directory that was removed after it was opened: nothing exists or can be made in it.
/// Made once per process (a failure, e.g. a full `/tmp`, is tried again next time).
fn absent_dir() -> io::Result<Arc<DirFd>> {
    static ABSENT: OnceLock<Arc<DirFd>> = OnceLock::new();
    if let Some(d) = ABSENT.get() {
        return Ok(d.clone());
    }
    let dir = tempfile::Builder::new()
        .prefix("briefcase-absent-")
        .tempdir()
        .map_err(|e| io::Error::other(format!("cannot make a temporary directory: {e}")))?;
    let fd = rustix::fs::open(dir.path(), dir_flags(), Mode::empty())?;
    dir.close()?;
    let d = Arc::new(DirFd::new(fd));
    // Another thread may have made one meanwhile: either serves.
    Ok(ABSENT.get_or_init(|| d).clone())
}

impl Beneath {
    /// Opens `root` (its own path may hold symlinks: it comes from this machine's config).
    ///
    /// # Errors
    /// I/O errors opening it (`NotFound` when it is not there); `Unsupported` when `/proc` is not
    /// mounted (the held handles are named through it).
    pub fn open(root: &Path) -> io::Result<Beneath> {
        let fd = rustix::fs::open(root, dir_flags(), Mode::empty())?;
        let root_fd = DirFd::new(fd);
        // Checked once per process: /proc does not come and go.
        static PROC: OnceLock<bool> = OnceLock::new();
        if !*PROC.get_or_init(|| fs::symlink_metadata(&root_fd.proc).is_ok()) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "/proc is not mounted; briefcase needs it to reach files under a root without races",
            ));
        }
        Ok(Beneath {
            root: Arc::new(root_fd),
            root_path: root.to_path_buf(),
            dirs: Mutex::new(HashMap::new()),
        })
    }

    /// The root's path as configured (for messages; never for file operations).
    pub fn root_path(&self) -> &Path {
        &self.root_path
    }

    /// The root directory itself, through the held handle.
    pub fn root(&self) -> &Path {
        &self.root.proc
    }

    /// `rel` with its parent directory held open. The parent is reached from the root without
    /// following any symlink; the final component is not looked at (callers must not follow
    /// it). An ancestor that does not exist gives an anchor where every lookup and creation
    /// fails with `ENOENT`.
    ///
    /// # Errors
    /// [`ResolveError::UnsafeParent`] naming the first ancestor that is a symlink or not a
    /// directory; other I/O errors.
    pub fn resolve(&self, rel: &RelPath) -> Result<Anchored, ResolveError> {
        let dir = match rel.parent() {
            None => Some(self.root.clone()),
            Some(parent) => self.open_dir(&parent)?,
        };
        let dir = match dir {
            Some(d) => d,
            None => absent_dir()?,
        };
        let path = dir.proc.join(OsStr::from_bytes(rel.file_name()));
        Ok(Anchored { dir, path })
    }

    /// The directory `rel` itself held open, as a [`ParentDir`]; `None` when it (or an ancestor)
    /// does not exist.
    ///
    /// # Errors
    /// As [`Beneath::resolve`]; `rel` itself being a symlink or a file is
    /// [`ResolveError::UnsafeParent`].
    pub fn dir(&self, rel: Option<&RelPath>) -> Result<Option<ParentDir>, ResolveError> {
        match rel {
            None => Ok(Some(ParentDir(self.root.clone()))),
            Some(rel) => Ok(self.open_dir(rel)?.map(ParentDir)),
        }
    }

    /// Makes `rel` and its missing ancestors directories (mode `0o777` less the umask, like
    /// `mkdir -p`), each with `mkdirat` under the held handle of its parent; an existing one is
    /// kept. Returns whether anything was made.
    ///
    /// # Errors
    /// [`ResolveError::UnsafeParent`] when `rel` or an ancestor is a symlink or a file; I/O errors.
    pub fn create_dir_all(&self, rel: &RelPath) -> Result<bool, ResolveError> {
        let mut cur = self.root.clone();
        let mut made = false;
        for (comp, here) in prefixes(rel)? {
            match rustix::fs::mkdirat(&cur.fd, OsStr::from_bytes(comp), Mode::from_raw_mode(0o777))
            {
                Ok(()) => made = true,
                Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(io::Error::from(e).into()),
            }
            let Some(fd) = open_child(cur.fd.as_fd(), comp, &here)? else {
                // Removed again at once: whoever did it wins; nothing is made under it.
                return Err(io::Error::from(io::ErrorKind::NotFound).into());
            };
            cur = Arc::new(DirFd::new(fd));
        }
        Ok(made)
    }

    /// Opens directory `rel` beneath the root (shared while held); `None` when missing.
    fn open_dir(&self, rel: &RelPath) -> Result<Option<Arc<DirFd>>, ResolveError> {
        if let Some(d) = self
            .dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(rel)
            .and_then(Weak::upgrade)
        {
            return Ok(Some(d));
        }
        let fd = match openat2_beneath(&self.root.fd, rel) {
            Ok(fd) => fd,
            // Missing, a symlink, a file, a race, or no openat2: walk one component at a time.
            Err(_) => match self.walk(rel)? {
                Some(fd) => fd,
                None => return Ok(None),
            },
        };
        let d = Arc::new(DirFd::new(fd));
        let mut dirs = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
        dirs.retain(|_, w| w.strong_count() > 0);
        dirs.insert(rel.clone(), Arc::downgrade(&d));
        Ok(Some(d))
    }

    /// One `openat(O_NOFOLLOW | O_DIRECTORY)` per component from the root.
    fn walk(&self, rel: &RelPath) -> Result<Option<OwnedFd>, ResolveError> {
        let mut cur: Option<OwnedFd> = None;
        for (comp, here) in prefixes(rel)? {
            let at = match &cur {
                Some(fd) => fd.as_fd(),
                None => self.root.fd.as_fd(),
            };
            match open_child(at, comp, &here)? {
                Some(fd) => cur = Some(fd),
                None => return Ok(None),
            }
        }
        match cur {
            Some(fd) => Ok(Some(fd)),
            None => Ok(Some(
                rustix::fs::openat(&self.root.fd, ".", dir_flags(), Mode::empty())
                    .map_err(io::Error::from)?,
            )),
        }
    }
}

/// Each component of `rel` with the path up to and including it (`a`, `a/b`, …).
fn prefixes(rel: &RelPath) -> Result<Vec<(&[u8], RelPath)>, ResolveError> {
    let mut out: Vec<(&[u8], RelPath)> = Vec::new();
    for comp in rel.components() {
        let here = match out.last() {
            None => RelPath::new(comp.to_vec()),
            Some((_, p)) => p.join(comp),
        }
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        out.push((comp, here));
    }
    Ok(out)
}

/// Opens the directory `name` in `at` without following a symlink: `None` when it is missing,
/// [`ResolveError::UnsafeParent`] naming `here` when it is a symlink or not a directory.
fn open_child(
    at: BorrowedFd<'_>,
    name: &[u8],
    here: &RelPath,
) -> Result<Option<OwnedFd>, ResolveError> {
    match rustix::fs::openat(
        at,
        OsStr::from_bytes(name),
        dir_flags() | OFlags::NOFOLLOW,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => {
            Err(ResolveError::UnsafeParent(here.display()))
        }
        Err(e) => Err(io::Error::from(e).into()),
    }
}

fn openat2_beneath(root: &OwnedFd, rel: &RelPath) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat2(
        root,
        rel.as_os_str(),
        dir_flags(),
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
}

/// Sets the permission bits of `path` without following it when it is a symlink, and without a
/// window in which it could be swapped for one: the entry is opened `O_PATH | O_NOFOLLOW`, and
/// the mode is set on exactly that inode (through its `/proc/self/fd` name: `fchmod` refuses
/// `O_PATH` handles). A symlink is left alone (Linux links have no permission bits).
///
/// # Errors
/// I/O errors.
pub fn chmod_nofollow(path: &Path, mode: u32) -> io::Result<()> {
    let fd = rustix::fs::open(
        path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink {
        return Ok(());
    }
    let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rustix::fs::chmod(proc.as_str(), Mode::from_raw_mode(mode & 0o7777))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn rp(s: &str) -> RelPath {
        RelPath::try_from(s).unwrap()
    }

    #[test]
    fn refuses_a_symlinked_parent_and_names_it() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("evil")).unwrap();
        fs::create_dir(root.path().join("ok")).unwrap();
        std::os::unix::fs::symlink("..", root.path().join("ok/up")).unwrap();
        fs::write(root.path().join("file"), b"x").unwrap();
        let b = Beneath::open(root.path()).unwrap();
        for (rel, bad) in [
            ("evil/passwd", "evil"),
            ("ok/up/x", "ok/up"),
            ("file/x", "file"),
        ] {
            match b.resolve(&rp(rel)) {
                Err(ResolveError::UnsafeParent(p)) => assert_eq!(p, bad, "{rel}"),
                other => panic!("{rel}: {other:?}"),
            }
        }
        let a = b.resolve(&rp("ok/x")).unwrap();
        fs::write(a.path(), b"in").unwrap();
        assert_eq!(fs::read(root.path().join("ok/x")).unwrap(), b"in");
    }

    #[test]
    fn a_missing_ancestor_gives_enoent_for_everything() {
        let root = tempfile::tempdir().unwrap();
        let b = Beneath::open(root.path()).unwrap();
        let a = b.resolve(&rp("missing/deeper/x")).unwrap();
        let enoent = |r: io::Result<()>| assert_eq!(r.unwrap_err().kind(), io::ErrorKind::NotFound);
        enoent(fs::symlink_metadata(a.path()).map(drop));
        enoent(fs::write(a.path(), b"x"));
        enoent(fs::create_dir(a.path()));
        enoent(std::os::unix::fs::symlink("t", a.path()));
        enoent(fs::write(a.parent().join("y"), b"x"));
        // The directory appearing later is seen by a new resolve.
        assert!(b.create_dir_all(&rp("missing/deeper")).unwrap());
        assert!(!b.create_dir_all(&rp("missing/deeper")).unwrap());
        let a = b.resolve(&rp("missing/deeper/x")).unwrap();
        fs::write(a.path(), b"x").unwrap();
        assert!(root.path().join("missing/deeper/x").is_file());
    }

    #[test]
    fn a_parent_swapped_after_resolve_is_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("d")).unwrap();
        let b = Beneath::open(root.path()).unwrap();
        let a = b.resolve(&rp("d/x")).unwrap();
        // The attacker moves the real directory away and plants a symlink in its place.
        fs::rename(root.path().join("d"), root.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("d")).unwrap();
        fs::write(a.path(), b"x").unwrap();
        assert!(
            fs::read_dir(outside.path()).unwrap().next().is_none(),
            "wrote outside"
        );
        assert!(root.path().join("moved/x").is_file());
        assert!(matches!(
            b.create_dir_all(&rp("d/e")),
            Err(ResolveError::UnsafeParent(p)) if p == "d"
        ));
    }

    #[test]
    fn create_dir_all_refuses_a_symlink_on_the_way() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("evil")).unwrap();
        let b = Beneath::open(root.path()).unwrap();
        assert!(matches!(
            b.create_dir_all(&rp("evil/x")),
            Err(ResolveError::UnsafeParent(p)) if p == "evil"
        ));
        assert!(fs::read_dir(outside.path()).unwrap().next().is_none());
    }

    #[test]
    fn anchors_in_one_directory_share_its_handle() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("d")).unwrap();
        let b = Beneath::open(root.path()).unwrap();
        let x = b.resolve(&rp("d/x")).unwrap();
        let y = b.resolve(&rp("d/y")).unwrap();
        assert!(x.same_parent(&y));
        assert_eq!(x.parent_handle(), y.parent_handle());
        assert!(!x.same_parent(&b.resolve(&rp("z")).unwrap()));
    }

    #[test]
    fn chmod_nofollow_leaves_a_symlink_target_alone() {
        let root = tempfile::tempdir().unwrap();
        let outside = root.path().join("outside");
        fs::write(&outside, b"x").unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o600)).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        chmod_nofollow(&link, 0o644).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(&outside).unwrap().mode() & 0o7777, 0o600);
        chmod_nofollow(&outside, 0o640).unwrap();
        assert_eq!(fs::metadata(&outside).unwrap().mode() & 0o7777, 0o640);
        // Works without read permission (O_PATH).
        chmod_nofollow(&outside, 0o000).unwrap();
        chmod_nofollow(&outside, 0o600).unwrap();
        assert_eq!(fs::metadata(&outside).unwrap().mode() & 0o7777, 0o600);
    }
}
