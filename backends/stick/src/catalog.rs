//! The stick's catalog: its data tree (path → node with chunk list), the chunk-list pages of big
//! files, and the state files the engine stores through `write_meta`, with reference counts of
//! chunks for de-duplication and collection. Persisted as a base plus incremental segments
//! ([`Delta`]); no I/O here.
//!
//! A file of up to [`INLINE_CHUNKS`] chunks lists its chunks in its node. A bigger file's chunk
//! list is cut into *pages* at content-defined boundaries (after a chunk whose hash ends in six
//! zero bits, so ~64 chunks, ~4 MiB of file, per page; at most [`PAGE_MAX`]), each page stored
//! once under the blake3 hash of its encoding, and the node lists page hashes. An edit inside a
//! 200 MiB file then changes one or two pages (~2 KiB each) and the node's page list (~2 KiB),
//! not a list of 3,200 chunks: the idea of bup's hashsplit trees and of Merkle search trees.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use briefcase_mirror::{ChunkRef, ContentHash, EntryKind, FolderId, RelPath};
use serde::{Deserialize, Serialize};

/// Files with at most this many chunks keep their chunk list in the node.
pub const INLINE_CHUNKS: usize = 64;
/// Most chunks in one page.
pub const PAGE_MAX: usize = 256;

/// Largest next inode number a loaded catalog may hold (one write hands out one; 2^62 writes
/// never happen, so a larger one is a damaged or forged catalog).
pub const MAX_INO: u64 = 1 << 62;

/// A page's ID: blake3 of its postcard encoding.
pub type PageId = [u8; 32];

/// What a file's content is made of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Content {
    /// Not a file (or an empty one).
    None,
    /// The chunks, in order.
    Inline(Vec<ChunkRef>),
    /// Pages of chunks, in order.
    Paged(Vec<PageId>),
}

/// One path of the stick's data tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// File, directory or symlink.
    pub kind: EntryKind,
    /// Bytes (files).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, ns since the epoch, as given by the writer.
    pub mtime_ns: i64,
    /// A number unique to this version of the path (reported as its inode).
    pub ino: u64,
    /// Target of a symlink.
    pub target: Option<Vec<u8>>,
    /// Chunks of a file.
    pub content: Content,
}

/// A base or segment of the catalog.
#[derive(Debug, Serialize, Deserialize)]
pub struct Delta {
    /// The folder, checked against the root and `STICK`.
    pub folder: FolderId,
    /// Next inode number to hand out.
    pub next_ino: u64,
    /// Nodes added or replaced.
    pub nodes: Vec<(RelPath, Node)>,
    /// Nodes removed.
    pub gone: Vec<RelPath>,
    /// Pages added.
    pub pages: Vec<(PageId, Vec<ChunkRef>)>,
    /// Pages no longer referenced.
    pub pages_gone: Vec<PageId>,
    /// State files written.
    pub meta: Vec<(String, Vec<u8>)>,
    /// State files removed.
    pub meta_gone: Vec<String>,
}

/// The catalog in memory.
#[derive(Debug)]
pub struct Catalog {
    /// The folder.
    pub folder: FolderId,
    next_ino: u64,
    tree: BTreeMap<RelPath, Node>,
    pages: HashMap<PageId, Vec<ChunkRef>>,
    meta: BTreeMap<String, Vec<u8>>,
    /// Chunk hash → references by nodes (directly or through a page).
    refs: HashMap<[u8; 32], u32>,
    /// Page → references by nodes.
    page_refs: HashMap<PageId, u32>,
    /// Chunks on the medium that nothing references (collected after the next commit).
    orphans: HashSet<[u8; 32]>,
    // Changes since the last commit.
    changed_nodes: BTreeSet<RelPath>,
    new_pages: BTreeSet<PageId>,
    gone_pages: BTreeSet<PageId>,
    changed_meta: BTreeSet<String>,
}

impl Catalog {
    /// An empty catalog of `folder`.
    pub fn new(folder: FolderId) -> Catalog {
        Catalog {
            folder,
            next_ino: 1,
            tree: BTreeMap::new(),
            pages: HashMap::new(),
            meta: BTreeMap::new(),
            refs: HashMap::new(),
            page_refs: HashMap::new(),
            orphans: HashSet::new(),
            changed_nodes: BTreeSet::new(),
            new_pages: BTreeSet::new(),
            gone_pages: BTreeSet::new(),
            changed_meta: BTreeSet::new(),
        }
    }

    /// Applies a decoded base or segment (loading: nothing is noted as changed).
    ///
    /// # Errors
    /// When it refers to a page it does not carry and the catalog lacks.
    pub fn apply(&mut self, d: Delta) -> Result<(), String> {
        if d.folder != self.folder {
            return Err(format!("it belongs to folder {}", d.folder));
        }
        self.next_ino = self.next_ino.max(d.next_ino);
        for (id, chunks) in d.pages {
            self.pages.insert(id, chunks);
        }
        for p in d.gone {
            self.tree.remove(&p);
        }
        for (p, n) in d.nodes {
            self.tree.insert(p, n);
        }
        for id in d.pages_gone {
            self.pages.remove(&id);
        }
        for (k, v) in d.meta {
            self.meta.insert(k, v);
        }
        for k in d.meta_gone {
            self.meta.remove(&k);
        }
        Ok(())
    }

    /// Recounts references after loading; fails when a node refers to a missing page.
    ///
    /// # Errors
    /// The path whose page is missing.
    pub fn finish_load(&mut self) -> Result<(), String> {
        // What a writer never makes, refused so that a catalog stays linear in its encoding: a
        // page of more than `PAGE_MAX` chunks listed many times made a chunk list quadratic in
        // the segment's size (`tests/fuzz.rs`, `regression_a_page_listed_many_times`), and an
        // inode counter near the top overflowed at the next write (`regression_next_ino_overflow`).
        if let Some((id, c)) = self.pages.iter().find(|(_, c)| c.len() > PAGE_MAX) {
            return Err(format!(
                "a chunk list page ({}) holds {} chunks, more than {PAGE_MAX}",
                hex(&id[..8]),
                c.len()
            ));
        }
        if self.next_ino > MAX_INO {
            return Err(format!(
                "its next inode number {} is beyond {MAX_INO}",
                self.next_ino
            ));
        }
        self.refs.clear();
        self.page_refs.clear();
        let mut missing = None;
        let nodes: Vec<Content> = self.tree.values().map(|n| n.content.clone()).collect();
        for c in &nodes {
            if let Content::Paged(ids) = c {
                if let Some(id) = ids.iter().find(|id| !self.pages.contains_key(*id)) {
                    missing = Some(*id);
                }
            }
            self.add_refs(c);
        }
        // Pages nothing refers to (a crash between commits) are dropped.
        let live: HashSet<PageId> = self.page_refs.keys().copied().collect();
        self.pages.retain(|id, _| live.contains(id));
        self.clear_changes();
        match missing {
            Some(id) => Err(format!("a chunk list page ({}) is missing", hex(&id[..8]))),
            None => Ok(()),
        }
    }

    /// The node at `path`.
    pub fn node(&self, path: &RelPath) -> Option<&Node> {
        self.tree.get(path)
    }

    /// The whole tree, parents before children.
    pub fn tree(&self) -> &BTreeMap<RelPath, Node> {
        &self.tree
    }

    /// Paths below `dir` (not `dir`), in order.
    pub fn below<'a>(&'a self, dir: &'a RelPath) -> impl Iterator<Item = (&'a RelPath, &'a Node)> {
        // Everything below `dir` sorts after it and shares its bytes as a prefix (so do
        // siblings like `dir-x`, which sort between: skipped, not stopped at).
        self.tree
            .range(dir.clone()..)
            .take_while(move |(p, _)| p.as_bytes().starts_with(dir.as_bytes()))
            .filter(move |(p, _)| *p != dir && p.starts_with(dir))
    }

    /// A new inode number.
    pub fn next_ino(&mut self) -> u64 {
        let i = self.next_ino;
        self.next_ino = self.next_ino.saturating_add(1);
        i
    }

    /// Inserts or replaces the node at `path`, keeping reference counts.
    pub fn set_node(&mut self, path: RelPath, node: Node) {
        self.add_refs(&node.content);
        if let Some(old) = self.tree.insert(path.clone(), node) {
            self.drop_refs(&old.content);
        }
        self.changed_nodes.insert(path);
    }

    /// Removes the node at `path`; returns it.
    pub fn remove_node(&mut self, path: &RelPath) -> Option<Node> {
        let old = self.tree.remove(path)?;
        self.drop_refs(&old.content);
        self.changed_nodes.insert(path.clone());
        Some(old)
    }

    /// Moves the node at `from` (and, for a directory, everything below) to `to`, replacing
    /// what was at `to`. Content references do not change.
    pub fn rename(&mut self, from: &RelPath, to: &RelPath) {
        let mut moved: Vec<(RelPath, Node)> = Vec::new();
        if let Some(n) = self.tree.remove(from) {
            moved.push((to.clone(), n));
        }
        let below: Vec<RelPath> = self.below(from).map(|(p, _)| p.clone()).collect();
        for p in below {
            if let (Some(n), Some(np)) = (self.tree.remove(&p), p.rebase(from, to)) {
                self.changed_nodes.insert(p);
                moved.push((np, n));
            }
        }
        self.changed_nodes.insert(from.clone());
        for (p, n) in moved {
            if let Some(old) = self.tree.insert(p.clone(), n) {
                self.drop_refs(&old.content);
            }
            self.changed_nodes.insert(p);
        }
    }

    /// Changes mode and mtime of the node at `path`.
    pub fn touch(&mut self, path: &RelPath, mode: u32, mtime_ns: i64) -> Option<&Node> {
        let n = self.tree.get_mut(path)?;
        n.mode = mode;
        n.mtime_ns = mtime_ns;
        self.changed_nodes.insert(path.clone());
        self.tree.get(path)
    }

    /// The chunks of `content`, in order (pages resolved).
    pub fn chunks_of(&self, content: &Content) -> Result<Vec<ChunkRef>, String> {
        match content {
            Content::None => Ok(Vec::new()),
            Content::Inline(c) => Ok(c.clone()),
            Content::Paged(ids) => {
                let mut out = Vec::new();
                for id in ids {
                    let p = self
                        .pages
                        .get(id)
                        .ok_or_else(|| format!("chunk list page {} is missing", hex(&id[..8])))?;
                    out.extend_from_slice(p);
                }
                Ok(out)
            }
        }
    }

    /// Turns a file's chunk list into [`Content`], adding new pages.
    pub fn content_for(&mut self, chunks: Vec<ChunkRef>) -> Content {
        if chunks.is_empty() {
            return Content::None;
        }
        if chunks.len() <= INLINE_CHUNKS {
            return Content::Inline(chunks);
        }
        let mut ids = Vec::new();
        let mut page: Vec<ChunkRef> = Vec::new();
        for c in chunks {
            let boundary = c.hash.0[31] & 0x3f == 0;
            page.push(c);
            if boundary || page.len() >= PAGE_MAX {
                ids.push(self.add_page(std::mem::take(&mut page)));
            }
        }
        if !page.is_empty() {
            ids.push(self.add_page(page));
        }
        Content::Paged(ids)
    }

    fn add_page(&mut self, chunks: Vec<ChunkRef>) -> PageId {
        let id = *blake3::hash(&postcard::to_stdvec(&chunks).unwrap_or_default()).as_bytes();
        if let std::collections::hash_map::Entry::Vacant(v) = self.pages.entry(id) {
            v.insert(chunks);
            self.new_pages.insert(id);
            self.gone_pages.remove(&id);
        }
        id
    }

    /// Whether a chunk with this plaintext hash is on the medium (referenced, or orphaned and
    /// not yet collected).
    pub fn has_chunk(&self, hash: &[u8; 32]) -> bool {
        self.refs.contains_key(hash) || self.orphans.contains(hash)
    }

    /// Notes a chunk written to the medium that nothing references yet (it becomes referenced by
    /// the node about to be set, or is collected).
    pub fn note_written(&mut self, hash: [u8; 32]) {
        if !self.refs.contains_key(&hash) {
            self.orphans.insert(hash);
        }
    }

    /// Chunks that nothing references (to remove after a commit), and forgets them.
    pub fn take_orphans(&mut self) -> Vec<[u8; 32]> {
        let out: Vec<[u8; 32]> = self
            .orphans
            .iter()
            .filter(|h| !self.refs.contains_key(*h))
            .copied()
            .collect();
        self.orphans.clear();
        out
    }

    /// Hashes of every referenced or pending chunk.
    pub fn known_chunks(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.refs.keys().chain(self.orphans.iter())
    }

    /// Number of referenced chunks.
    pub fn chunk_count(&self) -> usize {
        self.refs.len()
    }

    fn add_refs(&mut self, c: &Content) {
        match c {
            Content::None => {}
            Content::Inline(chunks) => {
                for ch in chunks {
                    *self.refs.entry(ch.hash.0).or_insert(0) += 1;
                    self.orphans.remove(&ch.hash.0);
                }
            }
            Content::Paged(ids) => {
                for id in ids {
                    let n = self.page_refs.entry(*id).or_insert(0);
                    *n += 1;
                    if *n == 1 {
                        let chunks = self.pages.get(id).cloned().unwrap_or_default();
                        for ch in chunks {
                            *self.refs.entry(ch.hash.0).or_insert(0) += 1;
                            self.orphans.remove(&ch.hash.0);
                        }
                    }
                }
            }
        }
    }

    fn drop_refs(&mut self, c: &Content) {
        let mut unref = |refs: &mut HashMap<[u8; 32], u32>, h: ContentHash| {
            if let Some(n) = refs.get_mut(&h.0) {
                *n -= 1;
                if *n == 0 {
                    refs.remove(&h.0);
                    self.orphans.insert(h.0);
                }
            }
        };
        match c {
            Content::None => {}
            Content::Inline(chunks) => {
                for ch in chunks {
                    unref(&mut self.refs, ch.hash);
                }
            }
            Content::Paged(ids) => {
                for id in ids {
                    let Some(n) = self.page_refs.get_mut(id) else {
                        continue;
                    };
                    *n -= 1;
                    if *n == 0 {
                        self.page_refs.remove(id);
                        if let Some(chunks) = self.pages.remove(id) {
                            for ch in chunks {
                                unref(&mut self.refs, ch.hash);
                            }
                        }
                        if !self.new_pages.remove(id) {
                            self.gone_pages.insert(*id);
                        }
                    }
                }
            }
        }
    }

    /// A state file.
    pub fn meta(&self, name: &str) -> Option<&Vec<u8>> {
        self.meta.get(name)
    }

    /// Names of the state files.
    pub fn meta_names(&self) -> impl Iterator<Item = &String> {
        self.meta.keys()
    }

    /// Writes a state file.
    pub fn set_meta(&mut self, name: &str, bytes: Vec<u8>) {
        self.meta.insert(name.to_string(), bytes);
        self.changed_meta.insert(name.to_string());
    }

    /// Removes a state file.
    pub fn remove_meta(&mut self, name: &str) {
        if self.meta.remove(name).is_some() {
            self.changed_meta.insert(name.to_string());
        }
    }

    /// Whether anything changed since the last commit.
    pub fn is_dirty(&self) -> bool {
        !(self.changed_nodes.is_empty()
            && self.new_pages.is_empty()
            && self.gone_pages.is_empty()
            && self.changed_meta.is_empty())
    }

    /// The changes since the last commit, as a segment.
    pub fn segment(&self) -> Delta {
        let mut d = Delta {
            folder: self.folder,
            next_ino: self.next_ino,
            nodes: Vec::new(),
            gone: Vec::new(),
            pages: Vec::new(),
            pages_gone: Vec::new(),
            meta: Vec::new(),
            meta_gone: Vec::new(),
        };
        for p in &self.changed_nodes {
            match self.tree.get(p) {
                Some(n) => d.nodes.push((p.clone(), n.clone())),
                None => d.gone.push(p.clone()),
            }
        }
        for id in &self.new_pages {
            if let Some(c) = self.pages.get(id) {
                d.pages.push((*id, c.clone()));
            }
        }
        d.pages_gone = self.gone_pages.iter().copied().collect();
        for k in &self.changed_meta {
            match self.meta.get(k) {
                Some(v) => d.meta.push((k.clone(), v.clone())),
                None => d.meta_gone.push(k.clone()),
            }
        }
        d
    }

    /// Everything, as a base.
    pub fn base(&self) -> Delta {
        Delta {
            folder: self.folder,
            next_ino: self.next_ino,
            nodes: self
                .tree
                .iter()
                .map(|(p, n)| (p.clone(), n.clone()))
                .collect(),
            gone: Vec::new(),
            pages: self.pages.iter().map(|(id, c)| (*id, c.clone())).collect(),
            pages_gone: Vec::new(),
            meta: self
                .meta
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            meta_gone: Vec::new(),
        }
    }

    /// Forgets the changes (they are committed).
    pub fn clear_changes(&mut self) {
        self.changed_nodes.clear();
        self.new_pages.clear();
        self.gone_pages.clear();
        self.changed_meta.clear();
    }
}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn chunk(i: u32) -> ChunkRef {
        ChunkRef {
            hash: ContentHash(*blake3::hash(&i.to_le_bytes()).as_bytes()),
            len: 1000 + i,
        }
    }

    fn file(c: &mut Catalog, chunks: Vec<ChunkRef>) -> Node {
        let content = c.content_for(chunks);
        Node {
            kind: EntryKind::File,
            size: 0,
            mode: 0o644,
            mtime_ns: 0,
            ino: c.next_ino(),
            target: None,
            content,
        }
    }

    fn reload(c: &Catalog, segments: &[Delta]) -> Catalog {
        let mut r = Catalog::new(c.folder);
        let base = c.base();
        let bytes = postcard::to_stdvec(&base).unwrap();
        r.apply(postcard::from_bytes(&bytes).unwrap()).unwrap();
        for s in segments {
            let bytes = postcard::to_stdvec(s).unwrap();
            r.apply(postcard::from_bytes(&bytes).unwrap()).unwrap();
        }
        r.finish_load().unwrap();
        r
    }

    #[test]
    fn big_files_are_paged_and_an_edit_touches_few_pages() {
        let mut c = Catalog::new(FolderId(1));
        let chunks: Vec<ChunkRef> = (0..3200).map(chunk).collect();
        let n = file(&mut c, chunks.clone());
        let Content::Paged(ids) = &n.content else {
            panic!("paged")
        };
        assert!(ids.len() > 20 && ids.len() < 200, "{} pages", ids.len());
        c.set_node(RelPath::try_from("big").unwrap(), n);
        assert_eq!(c.chunk_count(), 3200);
        c.clear_changes();
        let mut edited = chunks.clone();
        edited[1600] = chunk(99_999);
        let n2 = file(&mut c, edited);
        c.set_node(RelPath::try_from("big").unwrap(), n2);
        let seg = c.segment();
        assert!(seg.pages.len() <= 2, "{} new pages", seg.pages.len());
        let bytes = postcard::to_stdvec(&seg).unwrap().len();
        assert!(bytes < 10_000, "segment {bytes} bytes");
        assert_eq!(c.take_orphans(), vec![chunk(1600).hash.0]);
    }

    #[test]
    fn refs_survive_reload_and_shared_chunks_stay() {
        let mut c = Catalog::new(FolderId(1));
        let a = file(&mut c, vec![chunk(1), chunk(2)]);
        let b = file(&mut c, vec![chunk(2), chunk(3)]);
        c.set_node(RelPath::try_from("a").unwrap(), a);
        c.set_node(RelPath::try_from("b").unwrap(), b);
        let mut r = reload(&c, &[]);
        assert_eq!(r.chunk_count(), 3);
        r.remove_node(&RelPath::try_from("a").unwrap());
        let mut orphans = r.take_orphans();
        orphans.sort();
        assert_eq!(orphans, vec![chunk(1).hash.0]);
        assert!(r.has_chunk(&chunk(2).hash.0));
        let seg = r.segment();
        let r2 = reload(&c, &[seg]);
        assert!(r2.node(&RelPath::try_from("a").unwrap()).is_none());
        assert_eq!(r2.chunk_count(), 2);
    }

    #[test]
    fn rename_moves_a_subtree() {
        let mut c = Catalog::new(FolderId(1));
        let d = Node {
            kind: EntryKind::Dir,
            size: 0,
            mode: 0o755,
            mtime_ns: 0,
            ino: 1,
            target: None,
            content: Content::None,
        };
        c.set_node(RelPath::try_from("d").unwrap(), d);
        let f = file(&mut c, vec![chunk(1)]);
        c.set_node(RelPath::try_from("d/f").unwrap(), f);
        c.rename(
            &RelPath::try_from("d").unwrap(),
            &RelPath::try_from("e").unwrap(),
        );
        let paths: Vec<String> = c.tree().keys().map(|p| p.to_string()).collect();
        assert_eq!(paths, ["e", "e/f"]);
        let r = reload(&Catalog::new(FolderId(1)), &[c.segment()]);
        assert_eq!(r.tree().len(), 2);
        assert_eq!(r.chunk_count(), 1);
    }
}
