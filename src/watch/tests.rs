//! Real inotify on temp dirs. Timeouts are generous: these tests assert what arrives and what it
//! contains, never that it is fast. "Nothing arrives" is checked over a window and always paired
//! with a positive control, so a dead watcher cannot pass it.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

use super::batch::{minimal, Pending};
use super::*;

/// Longest wait for a hint that must arrive.
const ARRIVES: Duration = Duration::from_secs(20);
/// Window in which a hint that must not arrive is waited for.
const SILENCE: Duration = Duration::from_millis(300);

fn rp(s: &str) -> RelPath {
    RelPath::try_from(s).unwrap()
}

fn tree() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().canonicalize().unwrap();
    (d, root)
}

fn watch(root: &Path, opts: WatchOptions) -> (FolderWatcher, Receiver<Hint>) {
    FolderWatcher::start(root.to_path_buf(), IgnoreRules::load(root), opts).unwrap()
}

/// Receives hints until every path of `want` is covered by one of them; returns them all.
async fn until_covered(rx: &mut Receiver<Hint>, want: &[RelPath]) -> Vec<Hint> {
    let mut got = Vec::new();
    let mut missing: BTreeSet<RelPath> = want.iter().cloned().collect();
    while !missing.is_empty() {
        let h = match timeout(ARRIVES, rx.recv()).await {
            Ok(Some(h)) => h,
            Ok(None) => panic!("watcher stopped; still missing {missing:?}; got {got:?}"),
            Err(_) => panic!("no hint within {ARRIVES:?}; still missing {missing:?}; got {got:?}"),
        };
        missing.retain(|p| !h.covers(p));
        got.push(h);
    }
    got
}

/// Asserts that no hint arrives within [`SILENCE`].
async fn silent(rx: &mut Receiver<Hint>, what: &str) {
    if let Ok(h) = timeout(SILENCE, rx.recv()).await {
        panic!("{what}: expected no hint, got {h:?}");
    }
}

fn paths(hints: &[Hint]) -> BTreeSet<RelPath> {
    hints
        .iter()
        .flat_map(|h| match h {
            Hint::Paths(v) => v.clone(),
            Hint::Rescan => panic!("unexpected Rescan in {hints:?}"),
        })
        .collect()
}

#[tokio::test]
async fn single_write_is_one_hint_with_the_file() {
    let (_d, root) = tree();
    let (_w, mut rx) = watch(&root, WatchOptions::default());
    fs::write(root.join("f"), b"hello").unwrap();
    let h = timeout(ARRIVES, rx.recv()).await.unwrap().unwrap();
    assert_eq!(h, Hint::Paths(vec![rp("f")]));
    silent(&mut rx, "after a single write").await;
}

#[tokio::test]
async fn vim_style_save_leaves_only_the_target() {
    let (_d, root) = tree();
    fs::write(root.join("f"), b"old").unwrap();
    let (_w, mut rx) = watch(&root, WatchOptions::default());
    // What vim does with `backupcopy=no`: probe, rename the original away, write anew, clean up.
    fs::write(root.join("4913"), b"").unwrap();
    fs::remove_file(root.join("4913")).unwrap();
    fs::rename(root.join("f"), root.join("f~")).unwrap();
    fs::write(root.join("f"), b"new").unwrap();
    fs::remove_file(root.join("f~")).unwrap();
    let hints = until_covered(&mut rx, &[rp("f")]).await;
    let all = paths(&hints);
    assert!(all.contains(&rp("f")), "{hints:?}");
    let rules = IgnoreRules::load(&root);
    let surviving: Vec<&RelPath> = all
        .iter()
        .filter(|p| p.under(&root).exists() && !rules.is_ignored(p, false))
        .collect();
    assert_eq!(surviving, [&rp("f")], "{hints:?}");
}

#[tokio::test]
async fn temp_file_renamed_over_target_reports_the_target() {
    let (_d, root) = tree();
    fs::write(root.join("doc.txt"), b"old").unwrap();
    let (_w, mut rx) = watch(&root, WatchOptions::default());
    fs::write(root.join(".doc.txt.XYZ123"), b"new").unwrap();
    fs::rename(root.join(".doc.txt.XYZ123"), root.join("doc.txt")).unwrap();
    let hints = until_covered(&mut rx, &[rp("doc.txt")]).await;
    assert!(paths(&hints).contains(&rp("doc.txt")), "{hints:?}");
}

#[tokio::test]
async fn mkdir_p_then_touch_is_covered_and_new_dirs_are_watched() {
    let (_d, root) = tree();
    let (w, mut rx) = watch(&root, WatchOptions::default());
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::write(root.join("a/b/c/x"), b"").unwrap();
    until_covered(&mut rx, &[rp("a/b/c/x")]).await;
    // The new directories are watched now: a later change deep inside is reported by itself.
    let mut waited = Duration::ZERO;
    while w.watched_dirs() < 4 && waited < ARRIVES {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    assert_eq!(w.watched_dirs(), 4);
    fs::write(root.join("a/b/c/y"), b"").unwrap();
    until_covered(&mut rx, &[rp("a/b/c/y")]).await;
}

#[tokio::test]
async fn renamed_directory_is_watched_under_its_new_name() {
    let (_d, root) = tree();
    fs::create_dir_all(root.join("a/sub")).unwrap();
    let (_w, mut rx) = watch(&root, WatchOptions::default());
    fs::rename(root.join("a"), root.join("b")).unwrap();
    let hints = until_covered(&mut rx, &[rp("a"), rp("b")]).await;
    assert!(paths(&hints).contains(&rp("b")), "{hints:?}");
    fs::write(root.join("b/sub/y"), b"").unwrap();
    let hints = until_covered(&mut rx, &[rp("b/sub/y")]).await;
    assert!(
        !paths(&hints).iter().any(|p| p.starts_with(&rp("a"))),
        "stale path after the rename: {hints:?}"
    );
}

#[tokio::test]
async fn burst_of_2000_creates_is_a_few_hints() {
    let (_d, root) = tree();
    fs::create_dir(root.join("burst")).unwrap();
    // A longer quiet window than the default keeps a scheduler hiccup on a loaded test machine
    // from splitting the burst; what is tested is the coalescing, not the default's value.
    let opts = WatchOptions {
        quiet: Duration::from_millis(200),
        ..WatchOptions::default()
    };
    let (_w, mut rx) = watch(&root, opts);
    let want: Vec<RelPath> = (0..2000).map(|i| rp(&format!("burst/f{i:04}"))).collect();
    let r = root.clone();
    tokio::task::spawn_blocking(move || {
        for i in 0..2000 {
            fs::write(r.join(format!("burst/f{i:04}")), b"x").unwrap();
        }
    })
    .await
    .unwrap();
    let hints = until_covered(&mut rx, &want).await;
    assert!(hints.len() <= 10, "{} hints", hints.len());
}

#[tokio::test]
async fn a_busy_consumer_gets_merged_hints_and_loses_nothing() {
    let (_d, root) = tree();
    let (_w, mut rx) = watch(&root, WatchOptions::default());
    // More separate batches than the hint queue holds, while nobody reads.
    let n = HINT_QUEUE * 2 + 3;
    let want: Vec<RelPath> = (0..n).map(|i| rp(&format!("f{i}"))).collect();
    for i in 0..n {
        fs::write(root.join(format!("f{i}")), b"x").unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let hints = until_covered(&mut rx, &want).await;
    assert!(hints.len() <= HINT_QUEUE + 1, "{} hints", hints.len());
}

#[tokio::test]
async fn reading_files_produces_no_hint() {
    let (_d, root) = tree();
    fs::create_dir(root.join("d")).unwrap();
    fs::write(root.join("d/f"), b"content").unwrap();
    let (_w, mut rx) = watch(&root, WatchOptions::default());
    for _ in 0..5 {
        assert_eq!(fs::read(root.join("d/f")).unwrap(), b"content");
        let _ = fs::read_dir(root.join("d")).unwrap().count();
    }
    silent(&mut rx, "after reads").await;
    fs::write(root.join("control"), b"").unwrap();
    until_covered(&mut rx, &[rp("control")]).await;
}

#[tokio::test]
async fn ignored_and_reserved_paths_produce_no_hint() {
    let (_d, root) = tree();
    fs::create_dir(root.join(".briefcase")).unwrap();
    fs::write(root.join(".briefcaseignore"), "build/\n").unwrap();
    let (w, mut rx) = watch(&root, WatchOptions::default());
    assert_eq!(w.watched_dirs(), 1, ".briefcase must not be watched");
    fs::write(root.join("x.swp"), b"swap").unwrap();
    fs::write(root.join("notes~"), b"backup").unwrap();
    fs::write(root.join(".briefcase/state.0"), b"state").unwrap();
    fs::write(root.join(".briefcase-tmp-123"), b"tmp").unwrap();
    fs::create_dir(root.join("build")).unwrap();
    fs::write(root.join("build/out.o"), b"obj").unwrap();
    silent(&mut rx, "after ignored writes").await;
    assert_eq!(w.watched_dirs(), 1, "ignored build/ must not be watched");
    fs::write(root.join("control"), b"").unwrap();
    let hints = until_covered(&mut rx, &[rp("control")]).await;
    assert_eq!(paths(&hints), BTreeSet::from([rp("control")]));
}

#[tokio::test]
async fn git_batch_waits_for_the_lock() {
    let (_d, root) = tree();
    fs::create_dir_all(root.join(".git/refs/heads")).unwrap();
    fs::write(root.join(".git/HEAD"), b"ref: refs/heads/main\n").unwrap();
    let (_w, mut rx) = watch(&root, WatchOptions::default());
    fs::write(root.join(".git/index.lock"), b"").unwrap();
    fs::write(root.join(".git/index"), b"new index").unwrap();
    silent(&mut rx, "while .git/index.lock exists").await;
    fs::remove_file(root.join(".git/index.lock")).unwrap();
    let hints = until_covered(&mut rx, &[rp(".git/index")]).await;
    assert!(paths(&hints).contains(&rp(".git/index")), "{hints:?}");
}

#[tokio::test]
async fn git_ref_lock_holds_too_and_a_stale_lock_is_not_waited_for_forever() {
    let (_d, root) = tree();
    fs::create_dir_all(root.join(".git/refs/heads")).unwrap();
    let opts = WatchOptions {
        git_lock_wait: Duration::from_millis(500),
        ..WatchOptions::default()
    };
    let (_w, mut rx) = watch(&root, opts);
    fs::write(root.join(".git/refs/heads/main.lock"), b"").unwrap();
    fs::write(root.join(".git/refs/heads/other"), b"x").unwrap();
    silent(&mut rx, "while refs/heads/main.lock exists").await;
    // The lock never goes away: the batch is released after git_lock_wait anyway.
    until_covered(&mut rx, &[rp(".git/refs/heads/other")]).await;
}

#[tokio::test]
async fn short_budget_polls_the_rest_and_still_reports() {
    let (_d, root) = tree();
    for d in ["a/b", "c/d"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    let opts = WatchOptions {
        max_watches: Some(2),
        poll_interval: Duration::from_millis(200),
        ..WatchOptions::default()
    };
    let (w, mut rx) = watch(&root, opts);
    // Breadth first: the root and `a` are watched, `a/b` and `c` are polled.
    assert_eq!(w.watched_dirs(), 2);
    assert_eq!(w.polled_subtrees(), 2);
    fs::write(root.join("c/d/x"), b"").unwrap();
    until_covered(&mut rx, &[rp("c/d/x")]).await;
    fs::write(root.join("a/y"), b"").unwrap();
    until_covered(&mut rx, &[rp("a/y")]).await;
}

#[tokio::test]
async fn directories_created_beyond_the_budget_are_polled() {
    let (_d, root) = tree();
    let opts = WatchOptions {
        max_watches: Some(2),
        poll_interval: Duration::from_millis(200),
        ..WatchOptions::default()
    };
    let (w, mut rx) = watch(&root, opts);
    assert_eq!((w.watched_dirs(), w.polled_subtrees()), (1, 0));
    fs::create_dir(root.join("a")).unwrap();
    until_covered(&mut rx, &[rp("a")]).await;
    fs::create_dir(root.join("b")).unwrap();
    until_covered(&mut rx, &[rp("b")]).await;
    assert_eq!((w.watched_dirs(), w.polled_subtrees()), (2, 1));
    fs::write(root.join("b/x"), b"").unwrap();
    until_covered(&mut rx, &[rp("b/x")]).await;
    // Removing the polled directory forgets it.
    fs::remove_dir_all(root.join("b")).unwrap();
    until_covered(&mut rx, &[rp("b")]).await;
    let mut waited = Duration::ZERO;
    while w.polled_subtrees() != 0 && waited < ARRIVES {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    assert_eq!(w.polled_subtrees(), 0);
}

#[tokio::test]
async fn zero_budget_still_syncs_by_full_rescans() {
    let (_d, root) = tree();
    let opts = WatchOptions {
        max_watches: Some(0),
        poll_interval: Duration::from_millis(200),
        ..WatchOptions::default()
    };
    let (w, mut rx) = watch(&root, opts);
    assert_eq!(w.watched_dirs(), 0);
    assert_eq!(w.polled_subtrees(), 1);
    let h = timeout(ARRIVES, rx.recv()).await.unwrap().unwrap();
    assert_eq!(h, Hint::Rescan);
}

#[tokio::test]
async fn root_through_a_symlink_maps_paths() {
    let (_d, base) = tree();
    fs::create_dir(base.join("real")).unwrap();
    std::os::unix::fs::symlink(base.join("real"), base.join("link")).unwrap();
    let (w, mut rx) = watch(&base.join("link"), WatchOptions::default());
    assert_eq!(w.root(), base.join("real"));
    fs::write(base.join("link/f"), b"").unwrap();
    until_covered(&mut rx, &[rp("f")]).await;
}

#[tokio::test]
async fn root_deleted_then_back_is_rescanned_and_watched_again() {
    let (_d, base) = tree();
    let root = base.join("folder");
    fs::create_dir_all(root.join("sub")).unwrap();
    let opts = WatchOptions {
        poll_interval: Duration::from_millis(200),
        ..WatchOptions::default()
    };
    let (w, mut rx) = watch(&root, opts);
    fs::remove_dir_all(&root).unwrap();
    // The removal of `sub` may be reported first; the root's loss must follow as a Rescan.
    loop {
        let h = timeout(ARRIVES, rx.recv()).await.unwrap().unwrap();
        if h == Hint::Rescan {
            break;
        }
    }
    fs::create_dir_all(root.join("sub")).unwrap();
    let mut waited = Duration::ZERO;
    while w.watched_dirs() != 2 && waited < ARRIVES {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    assert_eq!((w.watched_dirs(), w.polled_subtrees()), (2, 0));
    // Let the full rescans of the outage pass; then changes are reported as paths again.
    while let Ok(Some(h)) = timeout(Duration::from_millis(500), rx.recv()).await {
        assert_eq!(h, Hint::Rescan);
    }
    fs::write(root.join("sub/f"), b"").unwrap();
    let h = timeout(ARRIVES, rx.recv()).await.unwrap().unwrap();
    assert_eq!(h, Hint::Paths(vec![rp("sub/f")]));
}

#[tokio::test]
async fn dropping_the_watcher_ends_the_hints() {
    let (_d, root) = tree();
    let (w, mut rx) = watch(&root, WatchOptions::default());
    drop(w);
    loop {
        match timeout(ARRIVES, rx.recv()).await {
            Ok(None) => break,
            Ok(Some(_)) => continue,
            Err(_) => panic!("hints did not end after the watcher was dropped"),
        }
    }
}

#[test]
fn missing_root_is_a_clear_error() {
    let (_d, root) = tree();
    let gone = root.join("not-there");
    let err = FolderWatcher::start(
        gone.clone(),
        IgnoreRules::defaults(),
        WatchOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, WatchError::RootMissing { .. }));
    assert!(err.to_string().contains(&gone.display().to_string()));
}

#[test]
fn minimal_scopes_table() {
    for (input, want) in [
        (vec!["a", "a/b", "a/b/c"], vec!["a"]),
        (vec!["a/b", "a-b", "a"], vec!["a", "a-b"]),
        (vec!["x/y", "x/z", "x/y"], vec!["x/y", "x/z"]),
        (vec!["ab", "a/b"], vec!["a/b", "ab"]),
    ] {
        let got = minimal(input.iter().map(|s| rp(s)).collect());
        let want: Vec<RelPath> = want.iter().map(|s| rp(s)).collect();
        assert_eq!(got, want, "{input:?}");
    }
}

#[test]
fn hint_covers_table() {
    let h = Hint::Paths(vec![rp("a"), rp("b/c")]);
    for (p, want) in [
        ("a", true),
        ("a/x", true),
        ("ab", false),
        ("b", false),
        ("b/c/d", true),
    ] {
        assert_eq!(h.covers(&rp(p)), want, "{p}");
    }
    assert!(Hint::Rescan.covers(&rp("anything")));
}

#[test]
fn pending_rescan_wins_over_paths() {
    let (_d, root) = tree();
    let now = std::time::Instant::now();
    let mut p = Pending::default();
    p.add(rp("f"), Some(false), now);
    p.add_rescan(now);
    assert_eq!(
        p.to_hint(&root, &IgnoreRules::defaults()),
        Some(Hint::Rescan)
    );
}
