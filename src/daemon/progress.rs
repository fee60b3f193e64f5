//! Live progress of a sync, without hooks in the engine: [`Counting`] wraps any [`Mirror`] (as
//! rclone's `crypt` wraps a remote) and counts what goes through it — files and bytes sent and
//! received, paths removed — into shared [`Counters`] that `status` reads while the sync runs.
//!
//! Every method of the trait is delegated, the optional ones included, so the wrapped backend's
//! own implementations (batched writes, scoped listings, …) are the ones that run. A method added
//! to [`Mirror`] must be delegated here too.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use briefcase_mirror::{
    Capabilities, Detail, FolderId, Mirror, MirrorResult, Presence, RelPath, RemoteStat,
    StateStore, WriteOp, WriteResult,
};

/// Counts of one sync in progress (reset when the next one starts).
#[derive(Debug, Default)]
pub struct Counters {
    files_sent: AtomicU64,
    bytes_sent: AtomicU64,
    files_received: AtomicU64,
    bytes_received: AtomicU64,
    removed: AtomicU64,
    /// Calls that touch the mirror's data or state beyond looking at its root.
    ops: AtomicU64,
    /// Calls that change the mirror (data or state).
    writes: AtomicU64,
}

/// A snapshot of [`Counters`], as `status` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Files written to the mirror.
    pub files_sent: u64,
    /// Their bytes.
    pub bytes_sent: u64,
    /// Files read from the mirror (fetched to land here, or read to check them).
    pub files_received: u64,
    /// Their bytes.
    pub bytes_received: u64,
    /// Paths removed on the mirror.
    pub removed: u64,
}

impl Counters {
    /// Zeroes every count (a new sync starts).
    pub fn reset(&self) {
        for c in [
            &self.files_sent,
            &self.bytes_sent,
            &self.files_received,
            &self.bytes_received,
            &self.removed,
            &self.ops,
            &self.writes,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// The counts now.
    pub fn snapshot(&self) -> Counts {
        Counts {
            files_sent: self.files_sent.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            files_received: self.files_received.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            removed: self.removed.load(Ordering::Relaxed),
        }
    }

    /// Calls since the last reset that went beyond probing the root: non-zero once a sync has
    /// really started working on the mirror.
    pub fn operations(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    /// Calls since the last reset that changed the mirror: a sync that vanished with none
    /// left nothing to finish.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    fn op(&self) {
        self.ops.fetch_add(1, Ordering::Relaxed);
    }

    fn write(&self) {
        self.op();
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    fn sent(&self, st: &RemoteStat) {
        self.files_sent.fetch_add(1, Ordering::Relaxed);
        self.bytes_sent.fetch_add(st.size, Ordering::Relaxed);
    }

    fn received(&self, bytes: u64) {
        self.files_received.fetch_add(1, Ordering::Relaxed);
        self.bytes_received.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} file(s) sent ({} bytes), {} received ({} bytes), {} removed there",
            self.files_sent,
            self.bytes_sent,
            self.files_received,
            self.bytes_received,
            self.removed
        )
    }
}

/// A mirror that counts what passes through it into shared [`Counters`].
#[derive(Debug)]
pub struct Counting {
    inner: Box<dyn Mirror>,
    counters: std::sync::Arc<Counters>,
}

impl Counting {
    /// Wraps `inner`, counting into `counters`.
    pub fn new(inner: Box<dyn Mirror>, counters: std::sync::Arc<Counters>) -> Counting {
        Counting { inner, counters }
    }

    /// The shared counters.
    pub fn counters(&self) -> &std::sync::Arc<Counters> {
        &self.counters
    }
}

#[async_trait::async_trait]
impl StateStore for Counting {
    async fn read_state(&self, name: &str) -> MirrorResult<Option<Vec<u8>>> {
        self.counters.op();
        self.inner.read_state(name).await
    }

    async fn commit_state(&self, write: &[(&str, &[u8])], remove: &[&str]) -> MirrorResult<()> {
        self.counters.write();
        self.inner.commit_state(write, remove).await
    }

    async fn list_state(&self) -> MirrorResult<Vec<String>> {
        self.counters.op();
        self.inner.list_state().await
    }

    async fn create_state_exclusive(&self, name: &str, bytes: &[u8]) -> MirrorResult<bool> {
        // The lease: not a write of the sync's (an unplugged mirror that was only leased was
        // not being written).
        self.counters.op();
        self.inner.create_state_exclusive(name, bytes).await
    }
}

#[async_trait::async_trait]
impl Mirror for Counting {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn marker_location(&self) -> Option<String> {
        self.inner.marker_location()
    }

    async fn probe(&self) -> MirrorResult<Presence> {
        self.inner.probe().await
    }

    async fn init(&self, folder: FolderId) -> MirrorResult<()> {
        self.counters.write();
        self.inner.init(folder).await
    }

    async fn walk(&self, under: Option<&RelPath>, detail: Detail) -> MirrorResult<Vec<RemoteStat>> {
        self.counters.op();
        self.inner.walk(under, detail).await
    }

    async fn stat(&self, path: &RelPath) -> MirrorResult<Option<RemoteStat>> {
        self.counters.op();
        self.inner.stat(path).await
    }

    async fn get(&self, path: &RelPath, dest: &Path) -> MirrorResult<RemoteStat> {
        self.counters.op();
        let st = self.inner.get(path, dest).await?;
        self.counters.received(st.size);
        Ok(st)
    }

    async fn read_bytes(&self, path: &RelPath, limit: u64) -> MirrorResult<Vec<u8>> {
        self.counters.op();
        let bytes = self.inner.read_bytes(path, limit).await?;
        self.counters.received(bytes.len() as u64);
        Ok(bytes)
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Vec<WriteResult> {
        self.counters.write();
        let kinds: Vec<(bool, bool)> = ops
            .iter()
            .map(|op| {
                (
                    matches!(op, WriteOp::Put(_)),
                    matches!(op, WriteOp::Remove(_)),
                )
            })
            .collect();
        let out = self.inner.write(ops).await;
        for ((put, remove), r) in kinds.into_iter().zip(&out) {
            match r {
                Ok(Some(st)) if put => self.counters.sent(st),
                Ok(_) if remove => {
                    self.counters.removed.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        out
    }

    async fn sweep(&self) -> MirrorResult<usize> {
        self.counters.op();
        self.inner.sweep().await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use briefcase_memory::MemoryMirror;
    use briefcase_mirror::{FileMeta, MirrorExt};
    use std::sync::Arc;

    #[tokio::test]
    async fn counts_what_passes_through() {
        let counters = Arc::new(Counters::default());
        let m = Counting::new(Box::new(MemoryMirror::new("m")), Arc::clone(&counters));
        m.init(FolderId(7)).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, b"12345").unwrap();
        let p = RelPath::try_from("a").unwrap();
        let meta = FileMeta {
            mode: 0o644,
            mtime_ns: 1,
        };
        m.put(&p, &src, meta).await.unwrap();
        m.get(&p, &dir.path().join("back")).await.unwrap();
        m.remove(&p).await.unwrap();
        let c = counters.snapshot();
        assert_eq!(
            (
                c.files_sent,
                c.bytes_sent,
                c.files_received,
                c.bytes_received,
                c.removed
            ),
            (1, 5, 1, 5, 1)
        );
        assert!(counters.operations() > 0);
        assert_eq!(counters.writes(), 3, "init, put, remove");
        m.stat(&p).await.unwrap();
        assert_eq!(counters.writes(), 3, "a stat is no write");
        counters.reset();
        assert_eq!(counters.snapshot(), Counts::default());
        assert_eq!((counters.operations(), counters.writes()), (0, 0));
    }
}
