//! The intent record of `state` (what a sync is about to write) on the in-memory backend.
#![allow(clippy::unwrap_used)]

use briefcase_memory::MemoryMirror;
use briefcase_mirror::state::{clear_intents, load_intents, store_intents, INTENTS};
use briefcase_mirror::{
    ContentHash, Entry, EntryKind, FolderId, Mirror, Osn, RelPath, ReplicaId, Stamp, VersionVector,
};

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
    m.write_meta(INTENTS, b"garbage").await.unwrap();
    assert!(load_intents(&m, 3).await.unwrap().is_empty());
}
