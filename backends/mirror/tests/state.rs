//! The intent record of `state` (what a sync is about to write), the state store over any
//! mirror's data operations, and the root-less layout of a mirror that commits atomically, on
//! the in-memory backend.
#![allow(clippy::unwrap_used)]

use briefcase_memory::MemoryMirror;
use briefcase_mirror::state::{clear_intents, load_intents, store_intents, INTENTS};
use briefcase_mirror::{
    ContentHash, Entry, EntryKind, FolderId, Mirror, Osn, RelPath, ReplicaId, Stamp, VersionVector,
};
use briefcase_mirror::{MirrorExt, StateStore};

#[tokio::test]
async fn intents_hold_only_for_their_generation() {
    let m = MemoryMirror::new("m");
    m.init(FolderId(7)).await.unwrap();
    assert!(load_intents(&m, 3).await.unwrap().is_empty(), "none yet");
    let mut version = VersionVector::new();
    version.set(ReplicaId(1), Osn(9));
    let e = Entry {
        path: RelPath::try_from("d/f").unwrap(),
        kind: EntryKind::File,
        deleted: false,
        size: 1,
        mode: 0o644,
        mtime_ns: 5,
        hash: Some(ContentHash::of(b"x")),
        symlink_target: None,
        chunks: vec![],
        version,
        stamp: Stamp {
            replica: ReplicaId(1),
            osn: Osn(9),
        },
        inode: 0,
        observed_mtime_ns: 5,
    };
    store_intents(&m, 3, std::slice::from_ref(&e))
        .await
        .unwrap();
    assert_eq!(load_intents(&m, 3).await.unwrap(), vec![e]);
    assert!(
        load_intents(&m, 4).await.unwrap().is_empty(),
        "state stored since"
    );
    clear_intents(&m).await.unwrap();
    assert!(load_intents(&m, 3).await.unwrap().is_empty());
    m.write_state(INTENTS, b"garbage").await.unwrap();
    assert!(load_intents(&m, 3).await.unwrap().is_empty());
}

/// [`StateInTree`], the state store over any mirror's data operations: files written in order
/// and readable, listed without temp files, removed, names that are not plain file names
/// refused; and the engine's whole state round-trips through it.
#[tokio::test]
async fn state_in_tree_keeps_state_files_as_plain_files() {
    use briefcase_mirror::{state, MirrorState, StateInTree};
    let files = MemoryMirror::new("state-dir");
    files.init(FolderId(7)).await.unwrap();
    let st = StateInTree::new(&files);
    assert_eq!(st.read("state.0").await.unwrap(), None);
    st.commit(&[("part.1.ab", b"part"), ("state.0", b"root")], &[])
        .await
        .unwrap();
    assert_eq!(st.read("state.0").await.unwrap().unwrap(), b"root");
    let mut names = st.list().await.unwrap();
    names.sort();
    assert_eq!(names, ["part.1.ab", "state.0"]);
    st.commit(&[], &["part.1.ab", "never.there"]).await.unwrap();
    assert_eq!(st.list().await.unwrap(), ["state.0"]);
    for bad in ["a/b", "..", "", ".briefcase-tmp-1"] {
        assert!(st.read(bad).await.is_err(), "{bad:?} must be refused");
        assert!(
            st.commit(&[(bad, b"x")], &[]).await.is_err(),
            "{bad:?} must be refused"
        );
    }

    // The engine's state, stored and loaded through a mirror whose state store is StateInTree.
    let m = InTree {
        data: MemoryMirror::new("data"),
        state: MemoryMirror::new("data-state"),
    };
    m.init(FolderId(7)).await.unwrap();
    m.state.init(FolderId(7)).await.unwrap();
    let mut s = MirrorState::new(FolderId(7), ReplicaId(2), "m");
    let osn = s.next_osn();
    s.insert_entry(Entry {
        path: RelPath::try_from("f").unwrap(),
        kind: EntryKind::File,
        deleted: false,
        size: 1,
        mode: 0o644,
        mtime_ns: 5,
        hash: Some(ContentHash::of(b"x")),
        symlink_target: None,
        chunks: vec![],
        version: VersionVector::single(ReplicaId(2), osn),
        stamp: Stamp {
            replica: ReplicaId(2),
            osn,
        },
        inode: 0,
        observed_mtime_ns: 5,
    });
    let stored = state::store(&m, &state::Stored::default(), &mut s)
        .await
        .unwrap();
    let loaded = state::load(&m).await.unwrap().unwrap();
    assert_eq!(loaded.stored, stored);
    assert_eq!(loaded.state.entries(), s.entries());
}

/// A mirror whose data is one memory mirror and whose state is the files of another, through
/// [`StateInTree`] (what an SFTP backend would do with a second base path).
#[derive(Debug)]
struct InTree {
    data: MemoryMirror,
    state: MemoryMirror,
}

#[async_trait::async_trait]
impl briefcase_mirror::StateStore for InTree {
    async fn read_state(&self, name: &str) -> briefcase_mirror::MirrorResult<Option<Vec<u8>>> {
        briefcase_mirror::StateInTree::new(&self.state)
            .read(name)
            .await
    }
    async fn commit_state(
        &self,
        write: &[(&str, &[u8])],
        remove: &[&str],
    ) -> briefcase_mirror::MirrorResult<()> {
        briefcase_mirror::StateInTree::new(&self.state)
            .commit(write, remove)
            .await
    }
    async fn list_state(&self) -> briefcase_mirror::MirrorResult<Vec<String>> {
        briefcase_mirror::StateInTree::new(&self.state).list().await
    }
    async fn create_state_exclusive(
        &self,
        name: &str,
        _bytes: &[u8],
    ) -> briefcase_mirror::MirrorResult<bool> {
        Err(briefcase_mirror::MirrorError::Unsupported {
            location: self.location(),
            what: format!("creating {name} exclusively"),
        })
    }
}

#[async_trait::async_trait]
impl Mirror for InTree {
    fn location(&self) -> String {
        self.data.location()
    }
    fn capabilities(&self) -> briefcase_mirror::Capabilities {
        self.data.capabilities()
    }
    async fn probe(&self) -> briefcase_mirror::MirrorResult<briefcase_mirror::Presence> {
        self.data.probe().await
    }
    async fn init(&self, folder: FolderId) -> briefcase_mirror::MirrorResult<()> {
        self.data.init(folder).await
    }
    async fn walk(
        &self,
        under: Option<&RelPath>,
        detail: briefcase_mirror::Detail,
    ) -> briefcase_mirror::MirrorResult<Vec<briefcase_mirror::RemoteStat>> {
        self.data.walk(under, detail).await
    }
    async fn stat(
        &self,
        path: &RelPath,
    ) -> briefcase_mirror::MirrorResult<Option<briefcase_mirror::RemoteStat>> {
        self.data.stat(path).await
    }
    async fn get(
        &self,
        path: &RelPath,
        dest: &std::path::Path,
    ) -> briefcase_mirror::MirrorResult<briefcase_mirror::RemoteStat> {
        self.data.get(path, dest).await
    }
    async fn write(
        &self,
        ops: Vec<briefcase_mirror::WriteOp>,
    ) -> Vec<briefcase_mirror::WriteResult> {
        self.data.write(ops).await
    }
    async fn sweep(&self) -> briefcase_mirror::MirrorResult<usize> {
        self.data.sweep().await
    }
}

/// A mirror with `atomic_commit` (the stick) reads the root slots and intents an older
/// briefcase left; its first store replaces them all with a base in one commit; from then on
/// its state is parts only, loaded in generation order, and an unchanged one is recognised
/// without reading them.
#[tokio::test]
async fn an_atomic_mirror_replaces_root_slots_with_parts() {
    use briefcase_mirror::{state, Capabilities, MirrorState};
    let old = MemoryMirror::new("m");
    old.init(FolderId(7)).await.unwrap();
    let mut s = MirrorState::new(FolderId(7), ReplicaId(3), "m");
    let mut stored = state::store(&old, &state::Stored::default(), &mut s)
        .await
        .unwrap();
    for i in 0..3u64 {
        s.next_osn();
        s.insert_entry(Entry {
            path: RelPath::try_from(format!("f{i}").as_str()).unwrap(),
            kind: EntryKind::Dir,
            deleted: false,
            size: 0,
            mode: 0o755,
            mtime_ns: 1,
            hash: None,
            symlink_target: None,
            chunks: vec![],
            version: VersionVector::single(ReplicaId(3), s.osn),
            stamp: Stamp {
                replica: ReplicaId(3),
                osn: s.osn,
            },
            inode: 0,
            observed_mtime_ns: 1,
        });
        store_intents(&old, stored.generation, &[]).await.unwrap();
        stored = state::store(&old, &stored, &mut s).await.unwrap();
    }
    let listed = |names: Vec<String>| {
        let mut n = names;
        n.sort();
        n
    };
    assert!(
        old.list_state().await.unwrap().len() > 3,
        "slots, parts, intents"
    );

    let m = old.sharing(Capabilities {
        atomic_commit: true,
        ..Capabilities::default()
    });
    let l = state::load(&m).await.unwrap().unwrap();
    assert_eq!(
        (&l.stored, &l.state),
        (&stored, &s),
        "the old layout is read"
    );
    assert!(load_intents(&m, l.stored.generation)
        .await
        .unwrap()
        .is_empty());
    s.next_osn();
    let base = state::store(&m, &l.stored, &mut s).await.unwrap();
    assert_eq!(base.root.parts.len(), 1, "a base");
    assert_eq!(
        listed(m.list_state().await.unwrap()),
        vec![base.root.parts[0].name.clone()],
        "slots, older parts and intents are gone with the same commit"
    );
    s.next_osn();
    store_intents(&m, base.generation, &[]).await.unwrap();
    let seg = state::store(&m, &base, &mut s).await.unwrap();
    assert_eq!(seg.root.parts.len(), 2, "a segment");
    assert_eq!(
        m.list_state().await.unwrap().len(),
        2,
        "no intents, no root"
    );
    let l = state::load(&m).await.unwrap().unwrap();
    assert_eq!((&l.stored, &l.state), (&seg, &s));
    assert!(matches!(
        state::load_unless(&m, Some((seg.generation, seg.checksum)))
            .await
            .unwrap(),
        state::Reload::Unchanged
    ));
    assert!(matches!(
        state::load_unless(&m, Some((base.generation, base.checksum)))
            .await
            .unwrap(),
        state::Reload::Loaded(_)
    ));
}
