//! What a sync killed mid-write leaves on a stick (chunk files no catalog refers to, temp files)
//! is removed at the next full sync; the chunks the catalog uses are kept.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use briefcase_mirror::MirrorExt;
use briefcase_mirror::{FileMeta, FolderId, Mirror, RelPath};
use briefcase_stick::{MachineKey, Recipient, Recipients, StickMirror, Unlock};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strays_of_a_dead_sync_are_swept_and_live_chunks_kept() {
    let d = tempfile::tempdir().unwrap();
    let mount = d.path().join("usb");
    std::fs::create_dir(&mount).unwrap();
    let key = MachineKey::generate();
    let open = |create: bool| {
        StickMirror::new(
            mount.clone(),
            Some(FolderId(9)),
            Unlock {
                machine: Some(key.clone()),
                passphrase: None,
            },
            create.then(|| Recipients {
                machines: vec![Recipient {
                    key: key.recipient(),
                    label: "t".into(),
                }],
                passphrase: None,
            }),
        )
    };
    let s = open(true);
    s.init(FolderId(9)).await.unwrap();
    let src = d.path().join("src");
    std::fs::write(&src, vec![7u8; 300_000]).unwrap();
    let meta = FileMeta {
        mode: 0o644,
        mtime_ns: 1,
    };
    s.put(&RelPath::try_from("f").unwrap(), &src, meta)
        .await
        .unwrap();
    s.write_state("state.0", b"commit").await.unwrap();
    let folder = mount.join("briefcase").join(FolderId(9).to_string());
    let chunk_files = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(dir.join("chunks")).unwrap().flatten() {
            for f in std::fs::read_dir(e.path()).unwrap().flatten() {
                v.push(f.path());
            }
        }
        v
    };
    let live = chunk_files(&folder);
    assert!(!live.is_empty());
    // A dead sync's leftovers.
    std::fs::create_dir_all(folder.join("chunks/ee")).unwrap();
    let stray = folder.join("chunks/ee/ee00000000000000000000000000000000");
    std::fs::write(&stray, b"never committed").unwrap();
    let temp = folder.join(".briefcase-tmp-123-state.0.age");
    std::fs::write(&temp, b"half a root").unwrap();
    drop(s);

    let s = open(false);
    let removed = s.sweep().await.unwrap();
    assert_eq!(removed, 2, "the stray chunk and the temp file");
    assert!(!stray.exists() && !temp.exists());
    for c in &live {
        assert!(c.exists(), "live chunk {} kept", c.display());
    }
    let out = d.path().join("out");
    s.get(&RelPath::try_from("f").unwrap(), &out).await.unwrap();
    assert_eq!(std::fs::read(out).unwrap(), vec![7u8; 300_000]);
    assert_eq!(s.sweep().await.unwrap(), 0, "once per opening");
}
