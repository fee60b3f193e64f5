//! The `memory` backend: [`MemoryMirror`], an in-memory [`Mirror`] for engine tests. It keeps
//! the same contract as a real backend — marker, Offline when "unplugged", symlinks never
//! followed, reserved paths refused, parents must exist — and can pretend to be a weaker medium
//! through its [`Capabilities`] (no symlinks, no rename, no modes, coarse mtimes,
//! case-insensitive names, a size limit), so the engine's handling of each can be tested
//! without a disk. It passes the conformance suite (`tests/conformance.rs`, three lines).
//!
//! It is also the worked example of a backend (docs/writing-a-backend.md): [`KIND`] registers
//! the scheme `memory:NAME`, whose mirrors live in a process-wide store by name
//! ([`MemoryMirror::named`]), so a test and the daemon it runs in the same process reach the
//! same mirror. The `briefcase` crate registers it in debug builds (tests) and with its
//! `memory-backend` feature only: its content is gone when the process ends.
#![deny(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use briefcase_mirror::fixture::Fixture;
use briefcase_mirror::registry::{
    Address, BackendKind, OpenContext, OpenError, OpenedMirror, Plain, Target,
};
use briefcase_mirror::{
    Capabilities, ContentHash, Detail, EntryKind, FileMeta, FolderId, Mirror, MirrorError,
    MirrorResult, Presence, PutItem, PutSource, RelPath, RemoteStat, StateStore, WriteOp,
    WriteResult,
};

/// The `memory` backend in the registry: targets `memory:NAME`, one process-wide mirror per name.
pub static KIND: MemoryKind = MemoryKind;

/// The [`BackendKind`] of the `memory` backend (see [`KIND`]).
#[derive(Debug)]
pub struct MemoryKind;

impl BackendKind for MemoryKind {
    fn scheme(&self) -> &'static str {
        "memory"
    }

    fn syntax(&self) -> &'static str {
        "an in-memory mirror for tests (`memory:NAME`)"
    }

    fn parse(&self, address: &str) -> Result<Address, String> {
        if address.is_empty()
            || !address
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err("give the in-memory mirror a name of letters, digits, `-`, `_` and `.`: memory:NAME".into());
        }
        Ok(Address {
            text: address.to_string(),
            place: None,
        })
    }

    fn open(
        &self,
        target: &Target,
        _ctx: &OpenContext,
    ) -> Result<Box<dyn OpenedMirror>, OpenError> {
        Ok(Plain::boxed(MemoryMirror::named(target.address())))
    }
}

/// The process-wide store of [`MemoryMirror::named`].
fn store() -> MutexGuard<'static, HashMap<String, MemoryMirror>> {
    static STORE: OnceLock<Mutex<HashMap<String, MemoryMirror>>> = OnceLock::new();
    STORE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Clone, Debug)]
enum Data {
    File(Arc<Vec<u8>>),
    Dir,
    Symlink(Vec<u8>),
}

#[derive(Clone, Debug)]
struct Node {
    data: Data,
    mode: u32,
    mtime_ns: i64,
    inode: u64,
}

/// The capabilities of a FAT medium: no symlinks, renames or modes, 2 s mtimes that may shift by
/// an hour, case-insensitive names, a size limit (32 MiB, small for tests), removable.
pub const FAT_LIKE: Capabilities = Capabilities {
    symlinks: false,
    rename: false,
    modes: false,
    mtime_granularity_ns: 2_000_000_000,
    case_insensitive: true,
    max_file_size: Some(32 << 20),
    two_way: true,
    mtime_dst_shift: true,
    maps_names: false,
    removable: true,
    atomic_commit: false,
};

#[derive(Debug, Default)]
struct Mem {
    absent: bool,
    marker: Option<FolderId>,
    meta: BTreeMap<String, Vec<u8>>,
    nodes: BTreeMap<RelPath, Node>,
    next_inode: u64,
}

/// An in-memory mirror. Cheap to clone; clones share the same tree.
#[derive(Clone, Debug)]
pub struct MemoryMirror {
    name: String,
    caps: Capabilities,
    mem: Arc<Mutex<Mem>>,
}

impl MemoryMirror {
    /// A present, empty, unmarked mirror with full capabilities; `name` shows in its location
    /// (`memory:NAME`).
    pub fn new(name: &str) -> Self {
        Self::with_capabilities(name, Capabilities::default())
    }

    /// As [`MemoryMirror::new`], behaving like a medium with `caps`.
    pub fn with_capabilities(name: &str, caps: Capabilities) -> Self {
        MemoryMirror {
            name: name.to_string(),
            caps,
            mem: Arc::default(),
        }
    }

    /// This mirror's content (shared, not copied) behaving like a medium with `caps`: a test
    /// of what a backend's new capability does to what an older one wrote.
    pub fn sharing(&self, caps: Capabilities) -> Self {
        MemoryMirror {
            caps,
            ..self.clone()
        }
    }

    /// As [`MemoryMirror::new`], behaving like a FAT stick ([`FAT_LIKE`]).
    pub fn fat_like(name: &str) -> Self {
        Self::with_capabilities(name, FAT_LIKE)
    }

    /// The process-wide mirror called `name` (`memory:NAME`), made with full capabilities at
    /// its first use: every call with the same name shares its content.
    pub fn named(name: &str) -> Self {
        store()
            .entry(name.to_string())
            .or_insert_with(|| MemoryMirror::new(name))
            .clone()
    }

    /// Forgets the process-wide mirror called `name` (the next [`MemoryMirror::named`] starts
    /// empty); clones in use keep their content.
    pub fn forget(name: &str) {
        store().remove(name);
    }

    /// Unplugs (`false`) or plugs back (`true`) the mirror; its content is kept.
    pub fn set_present(&self, present: bool) {
        self.lock().absent = !present;
    }

    fn lock(&self) -> MutexGuard<'_, Mem> {
        self.mem.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn online(&self) -> MirrorResult<MutexGuard<'_, Mem>> {
        let m = self.lock();
        if m.absent || m.marker.is_none() {
            return Err(MirrorError::Offline {
                location: self.location(),
                reason: "its folder marker is missing (the in-memory mirror is unplugged or not initialised)".into(),
            });
        }
        Ok(m)
    }

    fn unsafe_(&self, path: &RelPath, reason: &str) -> MirrorError {
        MirrorError::Unsafe {
            location: self.location(),
            path: path.display(),
            reason: reason.into(),
        }
    }

    fn not_found(&self, path: &RelPath) -> MirrorError {
        MirrorError::NotFound {
            location: self.location(),
            path: path.display(),
        }
    }

    fn io(
        &self,
        op: &'static str,
        path: &RelPath,
        kind: std::io::ErrorKind,
        what: &str,
    ) -> MirrorError {
        MirrorError::Io {
            location: self.location(),
            op,
            path: path.display(),
            source: std::io::Error::new(kind, what.to_string()),
        }
    }

    /// Checks the ancestors like `fsutil::resolve`: a symlink or file among them is Unsafe; a
    /// missing one ends the check. Returns whether the parent exists.
    fn resolve(&self, m: &Mem, path: &RelPath) -> MirrorResult<bool> {
        if path.is_reserved() {
            return Err(self.unsafe_(path, "it is briefcase's own state or temp file, not data"));
        }
        for anc in path.ancestors() {
            match m.nodes.get(&anc).map(|n| &n.data) {
                Some(Data::Dir) => {}
                Some(_) => {
                    return Err(self.unsafe_(
                        path,
                        &format!("its parent {anc} is a symlink or not a directory"),
                    ))
                }
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    fn need_parent(&self, m: &Mem, path: &RelPath) -> MirrorResult<()> {
        if self.resolve(m, path)? {
            Ok(())
        } else {
            Err(self.not_found(&path.parent().unwrap_or_else(|| path.clone())))
        }
    }

    fn fold(p: &RelPath) -> String {
        p.display().to_lowercase()
    }

    /// Refuses a name differing only in case from a sibling on a case-insensitive "medium".
    fn check_case(&self, m: &Mem, path: &RelPath, allow: Option<&RelPath>) -> MirrorResult<()> {
        if !self.caps.case_insensitive {
            return Ok(());
        }
        let folded = Self::fold(path);
        let clash = m.nodes.keys().find(|k| {
            k.parent() == path.parent()
                && *k != path
                && Some(*k) != allow
                && Self::fold(k) == folded
        });
        match clash {
            Some(k) => Err(MirrorError::Refused {
                location: self.location(),
                path: path.display(),
                reason: format!(
                    "it differs only in case from the existing `{}`; rename one of them",
                    k.display()
                ),
            }),
            None => Ok(()),
        }
    }

    fn stored_mtime(&self, mtime_ns: i64) -> i64 {
        let g = i64::try_from(self.caps.mtime_granularity_ns.max(1)).unwrap_or(i64::MAX);
        mtime_ns.div_euclid(g) * g
    }

    fn stored_mode(&self, mode: u32, kind: EntryKind) -> u32 {
        match (self.caps.modes, kind) {
            (_, EntryKind::Symlink) => 0o777,
            (true, _) => mode & 0o7777,
            (false, EntryKind::Dir) => 0o755,
            (false, _) => 0o644,
        }
    }

    fn new_node(&self, m: &mut Mem, data: Data, meta: FileMeta) -> Node {
        m.next_inode += 1;
        let kind = kind_of(&data);
        Node {
            data,
            mode: self.stored_mode(meta.mode, kind),
            mtime_ns: self.stored_mtime(meta.mtime_ns),
            inode: m.next_inode,
        }
    }
}

fn kind_of(d: &Data) -> EntryKind {
    match d {
        Data::File(_) => EntryKind::File,
        Data::Dir => EntryKind::Dir,
        Data::Symlink(_) => EntryKind::Symlink,
    }
}

fn stat(path: &RelPath, n: &Node) -> RemoteStat {
    RemoteStat {
        path: path.clone(),
        kind: kind_of(&n.data),
        size: match &n.data {
            Data::File(b) => b.len() as u64,
            _ => 0,
        },
        mode: n.mode,
        mtime_ns: n.mtime_ns,
        inode: n.inode,
        symlink_target: match &n.data {
            Data::Symlink(t) => Some(t.clone()),
            _ => None,
        },
    }
}

fn meta_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

#[async_trait::async_trait]
impl Mirror for MemoryMirror {
    fn location(&self) -> String {
        format!("memory:{}", self.name)
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    async fn probe(&self) -> MirrorResult<Presence> {
        let m = self.lock();
        Ok(match (m.absent, m.marker) {
            (true, _) => Presence::Absent,
            (false, Some(id)) => Presence::Marked(id),
            (false, None) if m.nodes.is_empty() => Presence::Empty,
            (false, None) => Presence::Unmarked,
        })
    }

    async fn init(&self, folder: FolderId) -> MirrorResult<()> {
        let mut m = self.lock();
        if let Some(existing) = m.marker.filter(|e| *e != folder) {
            return Err(MirrorError::Refused {
                location: self.location(),
                path: "(folder marker)".into(),
                reason: format!("already a mirror of folder {existing}"),
            });
        }
        m.absent = false;
        m.marker = Some(folder);
        Ok(())
    }

    async fn stat(&self, path: &RelPath) -> MirrorResult<Option<RemoteStat>> {
        let m = self.online()?;
        self.resolve(&m, path)?;
        Ok(m.nodes.get(path).map(|n| stat(path, n)))
    }

    async fn get(&self, path: &RelPath, dest: &Path) -> MirrorResult<RemoteStat> {
        let (bytes, st) = {
            let m = self.online()?;
            self.resolve(&m, path)?;
            let n = m.nodes.get(path).ok_or_else(|| self.not_found(path))?;
            match &n.data {
                Data::File(b) => (b.clone(), stat(path, n)),
                _ => {
                    return Err(self.io(
                        "read",
                        path,
                        std::io::ErrorKind::InvalidInput,
                        "not a regular file",
                    ))
                }
            }
        };
        let dest = dest.to_path_buf();
        tokio::task::spawn_blocking(move || std::fs::write(&dest, &*bytes).map_err(|e| (dest, e)))
            .await
            .map_err(|e| self.io("read", path, std::io::ErrorKind::Other, &e.to_string()))?
            .map_err(|(dest, e)| MirrorError::Io {
                location: self.location(),
                op: "create local copy",
                path: dest.display().to_string(),
                source: e,
            })?;
        Ok(st)
    }

    async fn walk(&self, under: Option<&RelPath>, detail: Detail) -> MirrorResult<Vec<RemoteStat>> {
        let m = self.online()?;
        if let Some(dir) = under {
            self.resolve(&m, dir)?;
        }
        Ok(m.nodes
            .iter()
            .filter(|(p, _)| under.is_none_or(|d| *p != d && p.starts_with(d)))
            .filter(|(_, n)| detail == Detail::Stats || matches!(n.data, Data::File(_)))
            .map(|(p, n)| match detail {
                Detail::Stats => stat(p, n),
                Detail::FileNames => RemoteStat {
                    path: p.clone(),
                    kind: EntryKind::File,
                    size: 0,
                    mode: 0,
                    mtime_ns: 0,
                    inode: 0,
                    symlink_target: None,
                },
            })
            .collect())
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Vec<WriteResult> {
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            out.push(match op {
                WriteOp::Put(it) => self.put(it).await.map(Some),
                WriteOp::Mkdir { path, meta } => self.mkdir(&path, meta).map(Some),
                WriteOp::Symlink { path, target } => self.symlink(&path, &target).map(Some),
                WriteOp::Rename { from, to } => self.rename(&from, &to).map(Some),
                WriteOp::Remove(path) => self.remove(&path).map(|()| None),
                WriteOp::SetMeta { path, meta } => self.set_meta(&path, meta).map(Some),
            });
        }
        out
    }

    async fn sweep(&self) -> MirrorResult<usize> {
        drop(self.online()?);
        Ok(0)
    }
}

#[async_trait::async_trait]
impl StateStore for MemoryMirror {
    async fn read_state(&self, name: &str) -> MirrorResult<Option<Vec<u8>>> {
        if !meta_name_ok(name) {
            return Err(MirrorError::Unsafe {
                location: self.location(),
                path: name.into(),
                reason: "bad state file name".into(),
            });
        }
        Ok(self.online()?.meta.get(name).cloned())
    }

    async fn commit_state(&self, write: &[(&str, &[u8])], remove: &[&str]) -> MirrorResult<()> {
        for name in write.iter().map(|(n, _)| *n).chain(remove.iter().copied()) {
            if !meta_name_ok(name) {
                return Err(MirrorError::Unsafe {
                    location: self.location(),
                    path: name.into(),
                    reason: "bad state file name".into(),
                });
            }
        }
        let mut m = self.online()?;
        for (name, bytes) in write {
            m.meta.insert((*name).to_string(), bytes.to_vec());
        }
        for name in remove {
            m.meta.remove(*name);
        }
        Ok(())
    }

    async fn list_state(&self) -> MirrorResult<Vec<String>> {
        Ok(self.online()?.meta.keys().cloned().collect())
    }

    async fn create_state_exclusive(&self, name: &str, bytes: &[u8]) -> MirrorResult<bool> {
        if !meta_name_ok(name) {
            return Err(MirrorError::Unsafe {
                location: self.location(),
                path: name.into(),
                reason: "bad state file name".into(),
            });
        }
        let mut m = self.online()?;
        if m.meta.contains_key(name) {
            return Ok(false);
        }
        m.meta.insert(name.to_string(), bytes.to_vec());
        Ok(true)
    }
}

/// The data operations [`Mirror::write`] applies, one at a time.
impl MemoryMirror {
    /// The content of a put: the bytes, or the local file (refused over the size limit without
    /// reading it; [`MirrorError::SourceChanged`] when it does not hash to `expect`).
    async fn read_source(&self, it: &PutItem) -> MirrorResult<Vec<u8>> {
        let path = &it.path;
        let too_big = |len: u64| MirrorError::Refused {
            location: self.location(),
            path: path.display(),
            reason: format!(
                "it is {len} bytes and this medium holds at most {} bytes",
                self.caps.max_file_size.unwrap_or(0)
            ),
        };
        let source = match &it.source {
            PutSource::Bytes(b) | PutSource::Blob(b) => {
                if self
                    .caps
                    .max_file_size
                    .is_some_and(|max| b.len() as u64 > max)
                {
                    return Err(too_big(b.len() as u64));
                }
                return Ok(b.clone());
            }
            PutSource::File(f) => f.clone(),
        };
        let max = self.caps.max_file_size;
        let src = source.clone();
        let read = tokio::task::spawn_blocking(move || {
            let len = std::fs::metadata(&src)?.len();
            match max {
                // Refused below without reading the whole source.
                Some(max) if len > max => Ok(Err(len)),
                _ => std::fs::read(&src).map(Ok),
            }
        })
        .await
        .map_err(|e| self.io("write", path, std::io::ErrorKind::Other, &e.to_string()))?
        .map_err(|e| MirrorError::Io {
            location: self.location(),
            op: "open local source",
            path: source.display().to_string(),
            source: e,
        })?;
        let bytes = read.map_err(too_big)?;
        if it
            .expect
            .is_some_and(|want| ContentHash(*blake3::hash(&bytes).as_bytes()) != want)
        {
            return Err(MirrorError::SourceChanged {
                location: self.location(),
                path: path.to_string(),
            });
        }
        Ok(bytes)
    }

    async fn put(&self, it: PutItem) -> MirrorResult<RemoteStat> {
        let (path, meta) = (&it.path, it.meta);
        {
            let m = self.online()?;
            self.need_parent(&m, path)?;
        }
        let bytes = self.read_source(&it).await?;
        let mut m = self.online()?;
        self.need_parent(&m, path)?;
        self.check_case(&m, path, None)?;
        if matches!(m.nodes.get(path).map(|n| &n.data), Some(Data::Dir)) {
            return Err(self.io(
                "write",
                path,
                std::io::ErrorKind::IsADirectory,
                "a directory is in the way",
            ));
        }
        let node = self.new_node(&mut m, Data::File(Arc::new(bytes)), meta);
        let st = stat(path, &node);
        m.nodes.insert(path.clone(), node);
        Ok(st)
    }

    fn mkdir(&self, path: &RelPath, meta: FileMeta) -> MirrorResult<RemoteStat> {
        let mut m = self.online()?;
        self.need_parent(&m, path)?;
        self.check_case(&m, path, None)?;
        let (mode, mtime) = (
            self.stored_mode(meta.mode, EntryKind::Dir),
            self.stored_mtime(meta.mtime_ns),
        );
        match m.nodes.get_mut(path) {
            Some(n) if matches!(n.data, Data::Dir) => {
                n.mode = mode;
                n.mtime_ns = mtime;
                Ok(stat(path, n))
            }
            Some(_) => Err(self.io(
                "mkdir",
                path,
                std::io::ErrorKind::AlreadyExists,
                "a file is in the way",
            )),
            None => {
                let node = self.new_node(&mut m, Data::Dir, meta);
                let st = stat(path, &node);
                m.nodes.insert(path.clone(), node);
                Ok(st)
            }
        }
    }

    fn symlink(&self, path: &RelPath, target: &[u8]) -> MirrorResult<RemoteStat> {
        if !self.caps.symlinks {
            return Err(MirrorError::Unsupported {
                location: self.location(),
                what: format!("symlinks ({path})"),
            });
        }
        let mut m = self.online()?;
        self.need_parent(&m, path)?;
        self.check_case(&m, path, None)?;
        if matches!(m.nodes.get(path).map(|n| &n.data), Some(Data::Dir)) {
            return Err(self.io(
                "symlink",
                path,
                std::io::ErrorKind::IsADirectory,
                "a directory is in the way",
            ));
        }
        let node = self.new_node(
            &mut m,
            Data::Symlink(target.to_vec()),
            FileMeta {
                mode: 0o777,
                mtime_ns: 0,
            },
        );
        let st = stat(path, &node);
        m.nodes.insert(path.clone(), node);
        Ok(st)
    }

    fn rename(&self, from: &RelPath, to: &RelPath) -> MirrorResult<RemoteStat> {
        if !self.caps.rename {
            return Err(MirrorError::Unsupported {
                location: self.location(),
                what: format!("rename ({from})"),
            });
        }
        let mut m = self.online()?;
        self.resolve(&m, from)?;
        self.need_parent(&m, to)?;
        self.check_case(&m, to, Some(from))?;
        let node = m
            .nodes
            .get(from)
            .cloned()
            .ok_or_else(|| self.not_found(from))?;
        if to.starts_with(from) && to != from {
            return Err(self.io(
                "rename",
                to,
                std::io::ErrorKind::InvalidInput,
                "cannot move a directory into itself",
            ));
        }
        match (m.nodes.get(to).map(|n| &n.data), &node.data) {
            (Some(Data::Dir), Data::Dir)
                if m.nodes.keys().any(|k| k.starts_with(to) && k != to) =>
            {
                return Err(self.io(
                    "rename",
                    to,
                    std::io::ErrorKind::DirectoryNotEmpty,
                    "destination directory is not empty",
                ))
            }
            (Some(Data::Dir), Data::File(_) | Data::Symlink(_)) => {
                return Err(self.io(
                    "rename",
                    to,
                    std::io::ErrorKind::IsADirectory,
                    "a directory is in the way",
                ))
            }
            (Some(Data::File(_) | Data::Symlink(_)), Data::Dir) => {
                return Err(self.io(
                    "rename",
                    to,
                    std::io::ErrorKind::NotADirectory,
                    "a file is in the way",
                ))
            }
            _ => {}
        }
        let moved: Vec<RelPath> = m
            .nodes
            .keys()
            .filter(|k| k.starts_with(from))
            .cloned()
            .collect();
        m.nodes.remove(to);
        for old in moved {
            if let (Some(n), Some(new)) = (m.nodes.remove(&old), old.rebase(from, to)) {
                m.nodes.insert(new, n);
            }
        }
        m.nodes
            .get(to)
            .map(|n| stat(to, n))
            .ok_or_else(|| self.not_found(to))
    }

    fn remove(&self, path: &RelPath) -> MirrorResult<()> {
        let mut m = self.online()?;
        if !self.resolve(&m, path)? {
            return Ok(());
        }
        if m.nodes.keys().any(|k| k.starts_with(path) && k != path) {
            return Err(self.io(
                "remove",
                path,
                std::io::ErrorKind::DirectoryNotEmpty,
                "directory not empty",
            ));
        }
        m.nodes.remove(path);
        Ok(())
    }

    fn set_meta(&self, path: &RelPath, meta: FileMeta) -> MirrorResult<RemoteStat> {
        let mut m = self.online()?;
        self.resolve(&m, path)?;
        let mtime = self.stored_mtime(meta.mtime_ns);
        let n = m.nodes.get_mut(path).ok_or_else(|| self.not_found(path))?;
        let kind = kind_of(&n.data);
        n.mode = self.stored_mode(meta.mode, kind);
        n.mtime_ns = mtime;
        Ok(stat(path, n))
    }
}

/// A memory mirror is its own conformance fixture: vanishing unplugs it.
impl Fixture for MemoryMirror {
    fn mirror(&self) -> &dyn Mirror {
        self
    }

    fn set_root_present(&self, present: bool) -> std::io::Result<()> {
        self.set_present(present);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use briefcase_mirror::registry::Registry;

    #[tokio::test]
    async fn named_mirrors_are_shared_through_the_registry() {
        static REG: Registry = Registry::new(&[&KIND]);
        let t = REG.parse("memory:shared-1").unwrap();
        assert_eq!(t.url(), "memory:shared-1");
        assert!(t.place().is_none());
        let a = t.open(&OpenContext::default()).unwrap().into_mirror();
        a.init(FolderId(9)).await.unwrap();
        let b = REG
            .parse("memory:shared-1")
            .unwrap()
            .open(&OpenContext::default())
            .unwrap();
        assert_eq!(
            b.mirror().probe().await.unwrap(),
            Presence::Marked(FolderId(9))
        );
        assert_eq!(b.pin().await.unwrap(), None, "nothing to pin");
        MemoryMirror::forget("shared-1");
        assert_eq!(
            MemoryMirror::named("shared-1").probe().await.unwrap(),
            Presence::Empty
        );
        for bad in ["memory:", "memory:a/b", "memory:a b"] {
            assert!(REG.parse(bad).is_err(), "{bad}");
        }
    }
}
