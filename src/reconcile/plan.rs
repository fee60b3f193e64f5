//! Planning: for every path that changed on either side since the other last saw it, decide
//! what to do, from the two entries alone. Pure: no I/O, so it is tested exhaustively.
//!
//! The rule is the version-vector rule of Parker et al. (1983) as Coda and Syncthing apply it:
//! equal → nothing; one dominates → copy it to the other side; concurrent → the same content is
//! merged, edit beats delete, anything else is a conflict that keeps both (invariant 5).
//! Wall clocks never decide who wins; the mtime only picks which copy keeps the name.
//!
//! A removal and a creation of the same file content on one side are paired into a rename
//! ([`pair_renames`]), which `apply` does as one move on the other side (falling back to the
//! two steps when it cannot).

use std::collections::HashMap;

use briefcase_mirror::{ContentHash, Entry, EntryKind, RelPath, VectorOrdering, VersionVector};

/// Which side of a sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The local replica.
    Local,
    /// The mirror.
    Remote,
}

/// What to do about one path.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// The local entry is newer: make the mirror match it (write, create, remove).
    Push {
        /// Local entry (may be a tombstone).
        local: Entry,
        /// The mirror's current entry, if any.
        remote: Option<Entry>,
    },
    /// The mirror's entry is newer: make the local replica match it.
    Pull {
        /// Mirror entry (may be a tombstone).
        remote: Entry,
        /// The local current entry, if any.
        local: Option<Entry>,
    },
    /// Concurrent versions: settle on the local side first (new local change), then push.
    Resolve {
        /// Local entry.
        local: Entry,
        /// Mirror entry.
        remote: Entry,
        /// How.
        how: Resolution,
    },
}

impl Step {
    /// The path concerned.
    pub fn path(&self) -> &RelPath {
        match self {
            Step::Push { local, .. } => &local.path,
            Step::Pull { remote, .. } => &remote.path,
            Step::Resolve { local, .. } => &local.path,
        }
    }

    /// Whether the step removes something (a tombstone is applied).
    pub fn is_removal(&self) -> bool {
        match self {
            Step::Push { local, .. } => local.deleted,
            Step::Pull { remote, .. } => remote.deleted,
            Step::Resolve { .. } => false,
        }
    }
}

/// How concurrent versions are settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Same content on both sides: merge the version vectors.
    Merge,
    /// One side deleted, the other edited: the edit wins (invariant 5), no copy needed.
    EditBeatsDelete {
        /// The side that kept the file.
        live: Side,
    },
    /// Different content: `winner` keeps the name, the other is kept as a conflict copy.
    Conflict {
        /// The side whose version keeps the name.
        winner: Side,
    },
}

/// Decides what to do about one path given the local and mirror entries (either may be absent).
/// Returns `None` when nothing needs doing.
pub fn plan_path(local: Option<&Entry>, remote: Option<&Entry>) -> Option<Step> {
    let empty = VersionVector::new();
    let vl = local.map_or(&empty, |e| &e.version);
    let vr = remote.map_or(&empty, |e| &e.version);
    match vl.compare(vr) {
        VectorOrdering::Equal => None,
        VectorOrdering::Greater => {
            let local = local?.clone();
            // A tombstone for a path the mirror never had still travels (so the mirror knows).
            Some(Step::Push {
                local,
                remote: remote.cloned(),
            })
        }
        VectorOrdering::Lesser => Some(Step::Pull {
            remote: remote?.clone(),
            local: local.cloned(),
        }),
        VectorOrdering::Concurrent => {
            let (l, r) = (local?, remote?);
            let how = if l.same_content(r) {
                Resolution::Merge
            } else if l.deleted {
                Resolution::EditBeatsDelete { live: Side::Remote }
            } else if r.deleted {
                Resolution::EditBeatsDelete { live: Side::Local }
            } else {
                Resolution::Conflict {
                    winner: winner(l, r),
                }
            };
            Some(Step::Resolve {
                local: l.clone(),
                remote: r.clone(),
                how,
            })
        }
    }
}

/// Which of two live, different versions keeps the name: a directory over a file or link (its
/// contents stay where they are), else the later mtime, else the higher replica ID — the same
/// answer on every machine, so two replicas settling the same conflict agree.
pub fn winner(l: &Entry, r: &Entry) -> Side {
    let rank = |e: &Entry| (e.kind == EntryKind::Dir, e.mtime_ns, e.stamp.replica);
    if rank(l) >= rank(r) {
        Side::Local
    } else {
        Side::Remote
    }
}

/// Plans all candidate paths, in the order of [`order`].
pub fn plan(items: Vec<(RelPath, Option<Entry>, Option<Entry>)>) -> Vec<Step> {
    let mut steps: Vec<Step> = items
        .iter()
        .filter_map(|(_, l, r)| plan_path(l.as_ref(), r.as_ref()))
        .collect();
    order(&mut steps);
    steps
}

/// Puts steps in the order they are applied in: removals first, deepest first (a directory
/// after what it holds), then everything else parents first.
pub fn order(steps: &mut [Step]) {
    steps.sort_by(|a, b| match (a.is_removal(), b.is_removal()) {
        (true, true) => b.path().cmp(a.path()),
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        (false, false) => a.path().cmp(b.path()),
    });
}

/// A file removed at one path and created at another with the same content on one side, to be
/// done on the other side as one rename (no data copied) instead of a removal and a copy. This
/// also covers renames whose event pair the watcher missed.
#[derive(Clone, Debug, PartialEq)]
pub struct Rename {
    /// Where the rename is done: [`Side::Remote`] moves the mirror's file (it was renamed here),
    /// [`Side::Local`] moves the file here (it was renamed on the mirror's side).
    pub side: Side,
    /// The removed path as the side that renamed it has it (a tombstone).
    pub from: Entry,
    /// What `side` holds at the removed path: a live file with the content.
    pub from_current: Entry,
    /// The new path as the side that renamed it has it: a live file with the content.
    pub to: Entry,
    /// What `side` holds at the new path: nothing, or a tombstone.
    pub to_current: Option<Entry>,
}

impl Rename {
    /// The two steps the rename stands for, in the planner's terms (the removal first): what is
    /// done instead when the rename cannot be (a side changed, the medium refused it).
    pub fn into_steps(self) -> [Step; 2] {
        match self.side {
            Side::Remote => [
                Step::Push {
                    local: self.from,
                    remote: Some(self.from_current),
                },
                Step::Push {
                    local: self.to,
                    remote: self.to_current,
                },
            ],
            Side::Local => [
                Step::Pull {
                    remote: self.from,
                    local: Some(self.from_current),
                },
                Step::Pull {
                    remote: self.to,
                    local: self.to_current,
                },
            ],
        }
    }
}

/// Takes out of `steps` the removals and creations that are renames ([`Rename`]); returns them,
/// in the order of their creations, and the steps left, in their order.
///
/// A pair is a removal and a creation of the same direction (both pushes or both pulls) where:
/// - both are plain files (a directory's files pair one by one; directories and symlinks are
///   made and removed as such);
/// - the side doing the rename holds a live file at the removed path, and nothing live at the
///   new path;
/// - the content hash the side doing the rename holds at the removed path is the new file's;
/// - on the mirror, only when it can rename (`mirror_renames`: its `Capabilities::rename`); a
///   local file system always can.
///
/// Each removal pairs at most once and each creation at most once. A content removed at several
/// paths pairs only the removal that comes last in `steps` (with [`order`], the smallest path);
/// created at several paths, only the first creation is a rename, the others are copies.
pub fn pair_renames(steps: Vec<Step>, mirror_renames: bool) -> (Vec<Rename>, Vec<Step>) {
    // Content hash -> index of a removal whose other side still has that file; a later removal
    // of the same content takes the place of an earlier one.
    let mut on_mirror: HashMap<ContentHash, usize> = HashMap::new();
    let mut here: HashMap<ContentHash, usize> = HashMap::new();
    let live_file = |e: &Entry| !e.deleted && e.kind == EntryKind::File;
    for (i, s) in steps.iter().enumerate() {
        match s {
            Step::Push {
                local,
                remote: Some(r),
            } if local.deleted && live_file(r) => {
                if let Some(h) = r.hash {
                    on_mirror.insert(h, i);
                }
            }
            Step::Pull {
                remote,
                local: Some(l),
            } if remote.deleted && live_file(l) => {
                if let Some(h) = l.hash {
                    here.insert(h, i);
                }
            }
            _ => {}
        }
    }
    if on_mirror.is_empty() && here.is_empty() {
        return (Vec::new(), steps);
    }
    // (side, removal, creation)
    let mut pairs = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let free = |e: &Option<Entry>| e.as_ref().is_none_or(|e| e.deleted);
        let (side, removals, new) = match s {
            Step::Push { local, remote } if mirror_renames && live_file(local) && free(remote) => {
                (Side::Remote, &mut on_mirror, local)
            }
            Step::Pull { remote, local } if live_file(remote) && free(local) => {
                (Side::Local, &mut here, remote)
            }
            _ => continue,
        };
        if let Some(j) = new.hash.and_then(|h| removals.remove(&h)) {
            pairs.push((side, j, i));
        }
    }
    let mut slots: Vec<Option<Step>> = steps.into_iter().map(Some).collect();
    let mut renames = Vec::with_capacity(pairs.len());
    for (side, j, i) in pairs {
        match (side, slots[j].take(), slots[i].take()) {
            (
                Side::Remote,
                Some(Step::Push {
                    local: from,
                    remote: Some(from_current),
                }),
                Some(Step::Push {
                    local: to,
                    remote: to_current,
                }),
            )
            | (
                Side::Local,
                Some(Step::Pull {
                    remote: from,
                    local: Some(from_current),
                }),
                Some(Step::Pull {
                    remote: to,
                    local: to_current,
                }),
            ) => renames.push(Rename {
                side,
                from,
                from_current,
                to,
                to_current,
            }),
            // Unreachable: the indices were taken from steps of exactly these shapes.
            (_, a, b) => {
                slots[j] = a;
                slots[i] = b;
            }
        }
    }
    (renames, slots.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use briefcase_mirror::{ContentHash, Osn, ReplicaId, Stamp};

    const A: ReplicaId = ReplicaId(1);
    const B: ReplicaId = ReplicaId(2);

    fn e(content: Option<&str>, vv: &[(ReplicaId, u64)], mtime: i64) -> Entry {
        let mut version = VersionVector::new();
        for (r, o) in vv {
            version.set(*r, Osn(*o));
        }
        let last = vv.last().copied().unwrap_or((A, 1));
        Entry {
            path: RelPath::try_from("f").unwrap(),
            kind: EntryKind::File,
            deleted: content.is_none(),
            size: content.map_or(0, |c| c.len() as u64),
            mode: 0o644,
            mtime_ns: mtime,
            hash: content.map(|c| ContentHash::of(c.as_bytes())),
            symlink_target: None,
            chunks: vec![],
            version,
            stamp: Stamp {
                replica: last.0,
                osn: Osn(last.1),
            },
            inode: 0,
            observed_mtime_ns: mtime,
        }
    }

    fn kind(s: &Option<Step>) -> String {
        match s {
            None => "nothing".into(),
            Some(Step::Push { .. }) => "push".into(),
            Some(Step::Pull { .. }) => "pull".into(),
            Some(Step::Resolve { how, .. }) => format!("{how:?}"),
        }
    }

    #[test]
    fn decision_table() {
        let cases: Vec<(Option<Entry>, Option<Entry>, &str)> = vec![
            (None, None, "nothing"),
            (Some(e(Some("x"), &[(A, 1)], 0)), None, "push"),
            (None, Some(e(Some("x"), &[(B, 1)], 0)), "pull"),
            (
                Some(e(Some("x"), &[(A, 1)], 0)),
                Some(e(Some("x"), &[(A, 1)], 0)),
                "nothing",
            ),
            (
                Some(e(Some("y"), &[(A, 2)], 0)),
                Some(e(Some("x"), &[(A, 1)], 0)),
                "push",
            ),
            (
                Some(e(Some("x"), &[(A, 1)], 0)),
                Some(e(Some("y"), &[(A, 1), (B, 1)], 0)),
                "pull",
            ),
            (
                Some(e(None, &[(A, 2)], 0)),
                Some(e(Some("x"), &[(A, 1)], 0)),
                "push",
            ),
            (
                Some(e(Some("x"), &[(A, 1)], 0)),
                Some(e(Some("x"), &[(B, 1)], 0)),
                "Merge",
            ),
            (
                Some(e(None, &[(A, 1)], 0)),
                Some(e(None, &[(B, 1)], 0)),
                "Merge",
            ),
            (
                Some(e(None, &[(A, 2)], 0)),
                Some(e(Some("y"), &[(A, 1), (B, 1)], 0)),
                "EditBeatsDelete { live: Remote }",
            ),
            (
                Some(e(Some("y"), &[(A, 2)], 0)),
                Some(e(None, &[(A, 1), (B, 1)], 0)),
                "EditBeatsDelete { live: Local }",
            ),
            (
                Some(e(Some("l"), &[(A, 2)], 5)),
                Some(e(Some("r"), &[(A, 1), (B, 1)], 9)),
                "Conflict { winner: Remote }",
            ),
            (
                Some(e(Some("l"), &[(A, 2)], 9)),
                Some(e(Some("r"), &[(A, 1), (B, 1)], 5)),
                "Conflict { winner: Local }",
            ),
        ];
        for (i, (l, r, want)) in cases.into_iter().enumerate() {
            assert_eq!(kind(&plan_path(l.as_ref(), r.as_ref())), want, "case {i}");
        }
    }

    #[test]
    fn winner_is_symmetric() {
        let l = e(Some("l"), &[(A, 2)], 7);
        let mut r = e(Some("r"), &[(B, 1)], 7);
        r.stamp.replica = B;
        assert_eq!(winner(&l, &r), Side::Remote);
        assert_eq!(winner(&r, &l), Side::Local);
    }

    #[test]
    fn removals_first_and_deepest_first() {
        let mk = |p: &str, deleted: bool| {
            let mut x = e(if deleted { None } else { Some("x") }, &[(A, 2)], 0);
            x.path = RelPath::try_from(p).unwrap();
            (x.path.clone(), Some(x), None)
        };
        let steps = plan(vec![
            mk("d", true),
            mk("d/f", true),
            mk("n", false),
            mk("n/g", false),
        ]);
        let order: Vec<String> = steps.iter().map(|s| s.path().display()).collect();
        assert_eq!(order, ["d/f", "d", "n", "n/g"]);
    }

    /// A step of a [`rename_table`] row, in a few characters: `>` a push (its rename would be on
    /// the mirror), `<` a pull (here); then `-` a removal or `+` a creation; then the path (a
    /// trailing `/`: a directory, a leading `@`: a symlink); then `=C`, the file's content (of a
    /// removal: what the side doing the rename holds there; of a creation: the new file's);
    /// then, for a creation, `~C` when the side doing the rename holds a live file `C` there.
    fn step(spec: &str) -> Step {
        let (dir, rest) = spec.split_at(1);
        let (op, rest) = rest.split_at(1);
        let (rest, current) = match rest.split_once('~') {
            Some((r, c)) => (r, Some(c)),
            None => (rest, None),
        };
        let (path, content) = match rest.split_once('=') {
            Some((p, c)) => (p, Some(c)),
            None => (rest, None),
        };
        let live = |p: &str, c: Option<&str>| {
            let mut x = e(Some(c.unwrap_or("")), &[(A, 2)], 0);
            if let Some(t) = p.strip_prefix('@') {
                x.path = RelPath::try_from(t).unwrap();
                x.kind = EntryKind::Symlink;
                x.hash = None;
                x.symlink_target = Some(b"t".to_vec());
            } else if let Some(d) = p.strip_suffix('/') {
                x.path = RelPath::try_from(d).unwrap();
                x.kind = EntryKind::Dir;
                x.hash = None;
            } else {
                x.path = RelPath::try_from(p).unwrap();
            }
            x
        };
        let gone = |p: &str| {
            let mut x = live(p, None);
            x.deleted = true;
            x.hash = None;
            x
        };
        let (new, current) = match op {
            "+" => (live(path, content), current.map(|c| live(path, Some(c)))),
            "-" => (gone(path), Some(live(path, content))),
            _ => panic!("bad op in {spec}"),
        };
        match dir {
            ">" => Step::Push {
                local: new,
                remote: current,
            },
            "<" => Step::Pull {
                remote: new,
                local: current,
            },
            _ => panic!("bad direction in {spec}"),
        }
    }

    /// A step as a [`step`] spec, without contents (enough to tell the rows' steps apart).
    fn spec(s: &Step) -> String {
        let (dir, e) = match s {
            Step::Push { local, .. } => ('>', local),
            Step::Pull { remote, .. } => ('<', remote),
            Step::Resolve { .. } => panic!("no resolutions in the rename table"),
        };
        let at = match e.kind {
            EntryKind::Dir => format!("{}/", e.path),
            EntryKind::Symlink => format!("@{}", e.path),
            EntryKind::File => e.path.display(),
        };
        format!("{dir}{}{at}", if e.deleted { '-' } else { '+' })
    }

    /// One line a case: the steps (as [`step`] specs, in any order: they are put in the
    /// planner's [`order`]), whether the mirror can rename, the renames expected (`mirror A -> B`
    /// or `here A -> B`) and the steps left (as [`spec`]s, in order).
    #[test]
    fn rename_table() {
        /// Steps, whether the mirror can rename, renames expected, steps left.
        type Case = (
            &'static [&'static str],
            bool,
            &'static [&'static str],
            &'static [&'static str],
        );
        #[rustfmt::skip]
        let cases: &[Case] = &[
            // A simple rename, on either side.
            (&[">-a=x", ">+b=x"], true, &["mirror a -> b"], &[]),
            (&["<-a=x", "<+b=x"], true, &["here a -> b"], &[]),
            // Across directories: the new directory is made as such, the file moved.
            (&[">-d1/a=x", ">+d2/", ">+d2/b=x"], true, &["mirror d1/a -> d2/b"], &[">+d2/"]),
            (&["<-d1/a=x", "<+d2/", "<+d2/b=x"], true, &["here d1/a -> d2/b"], &["<+d2/"]),
            // Two files with the same content renamed: one pair (the last removal in order, the
            // smallest path, with the first creation); the other is a copy and a removal.
            (&[">-a=x", ">-b=x", ">+c=x", ">+d=x"], true, &["mirror a -> c"], &[">-b", ">+d"]),
            (&["<-a=x", "<-b=x", "<+c=x", "<+d=x"], true, &["here a -> c"], &["<-b", "<+d"]),
            // A removed file whose content appears twice: the first creation is the rename.
            (&[">-a=x", ">+b=x", ">+c=x"], true, &["mirror a -> b"], &[">+c"]),
            (&["<-a=x", "<+c=x", "<+b=x"], true, &["here a -> b"], &["<+c"]),
            // A renamed directory: the directories are made and removed, their files moved.
            (&[">-d/", ">-d/f=x", ">+e/", ">+e/f=x"], true, &["mirror d/f -> e/f"], &[">-d/", ">+e/"]),
            (&["<-d/", "<-d/f=x", "<+e/", "<+e/f=x"], true, &["here d/f -> e/f"], &["<-d/", "<+e/"]),
            // A medium that cannot rename: copied and removed; here a rename all the same.
            (&[">-a=x", ">+b=x"], false, &[], &[">-a", ">+b"]),
            (&["<-a=x", "<+b=x"], false, &["here a -> b"], &[]),
            // A creation whose content matches no removal; a removal whose matches no creation.
            (&[">-a=x", ">+b=y"], true, &[], &[">-a", ">+b"]),
            (&["<-a=x", "<+b=y"], true, &[], &["<-a", "<+b"]),
            // Paired by what the side doing the rename holds at the removed path.
            (&[">-a=y", ">+b=y"], true, &["mirror a -> b"], &[]),
            // A live file at the new path is replaced by a copy, not renamed over.
            (&[">-a=x", ">+b=x~z"], true, &[], &[">-a", ">+b"]),
            (&["<-a=x", "<+b=x~z"], true, &[], &["<-a", "<+b"]),
            // A removal on one side and a creation on the other are no rename.
            (&[">-a=x", "<+b=x"], true, &[], &[">-a", "<+b"]),
            // Symlinks and directories never pair.
            (&[">-@a", ">+@b"], true, &[], &[">-@a", ">+@b"]),
            (&[">-d/", ">+e/"], true, &[], &[">-d/", ">+e/"]),
            // Renames on both sides in one plan.
            (&[">-a=x", ">+b=x", "<-c=y", "<+d=y"], true, &["mirror a -> b", "here c -> d"], &[]),
        ];
        for (i, (specs, mirror_renames, want_renames, want_rest)) in cases.iter().enumerate() {
            let mut steps: Vec<Step> = specs.iter().map(|s| step(s)).collect();
            order(&mut steps);
            let (renames, rest) = pair_renames(steps.clone(), *mirror_renames);
            let got: Vec<String> = renames
                .iter()
                .map(|r| {
                    let side = if r.side == Side::Remote {
                        "mirror"
                    } else {
                        "here"
                    };
                    format!("{side} {} -> {}", r.from.path, r.to.path)
                })
                .collect();
            assert_eq!(got, *want_renames, "case {i}: renames of {specs:?}");
            let left: Vec<String> = rest.iter().map(spec).collect();
            assert_eq!(left, *want_rest, "case {i}: steps left of {specs:?}");
            // Nothing is lost: a rename undone is the two steps it stands for.
            let mut back = rest;
            back.extend(renames.into_iter().flat_map(Rename::into_steps));
            order(&mut back);
            assert_eq!(back, steps, "case {i}: into_steps of {specs:?}");
        }
    }
}
