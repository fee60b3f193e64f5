//! Planning: for every path that changed on either side since the other last saw it, decide
//! what to do, from the two entries alone. Pure: no I/O, so it is tested exhaustively.
//!
//! The rule is the version-vector rule of Parker et al. (1983) as Coda and Syncthing apply it:
//! equal → nothing; one dominates → copy it to the other side; concurrent → the same content is
//! merged, edit beats delete, anything else is a conflict that keeps both (invariant 5).
//! Wall clocks never decide who wins; the mtime only picks which copy keeps the name.

use briefcase_mirror::{Entry, EntryKind, RelPath, VectorOrdering, VersionVector};

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

/// Plans all candidate paths; removals are ordered deepest first, everything else parents first.
pub fn plan(items: Vec<(RelPath, Option<Entry>, Option<Entry>)>) -> Vec<Step> {
    let mut steps: Vec<Step> = items
        .iter()
        .filter_map(|(_, l, r)| plan_path(l.as_ref(), r.as_ref()))
        .collect();
    steps.sort_by(|a, b| match (a.is_removal(), b.is_removal()) {
        (true, true) => b.path().cmp(a.path()),
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        (false, false) => a.path().cmp(b.path()),
    });
    steps
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
}
