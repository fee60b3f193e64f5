//! The stick's catalog: its data tree (path → node with chunk list), the chunk-list pages of big
//! files, and the engine's state files, with reference counts of chunks for de-duplication and
//! collection. Persisted as a base plus incremental segments ([`Delta`]); no I/O here.
//!
//! A file of up to [`INLINE_CHUNKS`] chunks lists its chunks in its node. A bigger file's chunk
//! list is cut into *pages* at content-defined boundaries (after a chunk whose hash ends in
//! [`PAGE_BITS`] zero bits, so ~16 chunks, ~1 MiB of file, per page; at most [`PAGE_MAX`]), each
//! page stored once under the blake3 hash of its encoding, and the node lists page hashes: the
//! idea of bup's hashsplit trees and of Merkle search trees. An edit re-cuts only the pages it
//! touches ([`Catalog::content_replacing`]), and a segment records a changed list as a *splice*
//! of the list the path (or, after a rename, the path it came from) had at the previous commit
//! ([`ContentRec`]): an edit inside a 200 MiB file then writes its one or two new pages (~1 KiB
//! each) and a splice of a few page IDs, not the node's list of 200 page IDs (format 3; format 2
//! wrote the whole list and pages of ~64 chunks).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use briefcase_mirror::{ChunkRef, ContentHash, EntryKind, FolderId, RelPath};
use serde::{Deserialize, Serialize};

/// Files with at most this many chunks keep their chunk list in the node.
pub const INLINE_CHUNKS: usize = 64;
/// Most chunks in one page.
pub const PAGE_MAX: usize = 256;
/// A page ends after a chunk whose hash ends in this many zero bits (~2^bits chunks a page).
/// Format 2 cut after six bits; its pages are kept as they are until an edit touches them.
pub const PAGE_BITS: u32 = 4;

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

/// A node as a base or segment records it: [`Node`], its content possibly as a splice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRec {
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
    pub content: ContentRec,
}

/// A file's content as recorded. The first three variants are [`Content`]'s, encoded alike (a
/// format 2 segment decodes as a format 3 one); the splices are format 3's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContentRec {
    /// Not a file (or an empty one).
    None,
    /// The chunks, in order.
    Inline(Vec<ChunkRef>),
    /// Pages of chunks, in order.
    Paged(Vec<PageId>),
    /// An [`Content::Inline`] list made from one the catalog held at the previous commit.
    InlineSplice(Splice<ChunkRef>),
    /// A [`Content::Paged`] list made from one the catalog held at the previous commit.
    PagedSplice(Splice<PageId>),
}

/// A list made from the list of the same kind that `from` (`None`: the node's own path) held at
/// the previous commit, its items `at..at + remove` replaced by `insert`. A segment uses each
/// path as a base at most once, and a `from` other than the node's own path is a path the same
/// segment removes or records again (a rename moved it): content is moved, never copied, so a
/// catalog stays linear in its encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Splice<T> {
    /// Whose list: `None` for the node's own path.
    pub from: Option<RelPath>,
    /// First item replaced.
    pub at: u32,
    /// Items replaced.
    pub remove: u32,
    /// Items put in their place.
    pub insert: Vec<T>,
}

impl ContentRec {
    /// Whether this is a splice (format 3 only).
    pub fn is_splice(&self) -> bool {
        matches!(
            self,
            ContentRec::InlineSplice(_) | ContentRec::PagedSplice(_)
        )
    }
}

impl From<&Content> for ContentRec {
    fn from(c: &Content) -> ContentRec {
        match c {
            Content::None => ContentRec::None,
            Content::Inline(v) => ContentRec::Inline(v.clone()),
            Content::Paged(v) => ContentRec::Paged(v.clone()),
        }
    }
}

impl NodeRec {
    /// `n` with its content in full.
    pub fn full(n: &Node) -> NodeRec {
        NodeRec {
            kind: n.kind,
            size: n.size,
            mode: n.mode,
            mtime_ns: n.mtime_ns,
            ino: n.ino,
            target: n.target.clone(),
            content: ContentRec::from(&n.content),
        }
    }
}

/// A base or segment of the catalog (formats 1 to 3 share this encoding; splices are format
/// 3's).
#[derive(Debug, Serialize, Deserialize)]
pub struct Delta {
    /// The folder, checked against the root and `STICK`.
    pub folder: FolderId,
    /// Next inode number to hand out.
    pub next_ino: u64,
    /// Nodes added or replaced.
    pub nodes: Vec<(RelPath, NodeRec)>,
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

impl Delta {
    /// Whether a node is recorded as a splice (which only format 3 writes).
    pub fn has_splices(&self) -> bool {
        self.nodes.iter().any(|(_, n)| n.content.is_splice())
    }
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
    /// The content each changed path had at the last commit (`None`: no node, or not a
    /// file's), noted before its first change since: what the next segment splices.
    before: HashMap<RelPath, Option<Content>>,
    /// For a path a rename filled since the last commit, the path its content had then.
    origin: HashMap<RelPath, RelPath>,
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
            before: HashMap::new(),
            origin: HashMap::new(),
        }
    }

    /// Applies a decoded base or segment (loading: nothing is noted as changed). Splices are
    /// made from the catalog as it was before this segment.
    ///
    /// # Errors
    /// Another folder's; a splice whose base is missing, of another kind or out of range, a
    /// path used twice as a base, or a `from` the segment neither removes nor records again
    /// (see [`Splice`]). A page it refers to but does not carry is found by
    /// [`Catalog::finish_load`].
    pub fn apply(&mut self, d: Delta) -> Result<(), String> {
        if d.folder != self.folder {
            return Err(format!("it belongs to folder {}", d.folder));
        }
        let touched: HashSet<&RelPath> = d
            .gone
            .iter()
            .chain(d.nodes.iter().map(|(p, _)| p))
            .collect();
        let mut used: HashSet<&RelPath> = HashSet::new();
        let mut nodes = Vec::with_capacity(d.nodes.len());
        for (p, rec) in &d.nodes {
            let content = match &rec.content {
                ContentRec::None => Content::None,
                ContentRec::Inline(c) => Content::Inline(c.clone()),
                ContentRec::Paged(c) => Content::Paged(c.clone()),
                ContentRec::InlineSplice(sp) => {
                    let base = self.splice_base(p, sp, &touched, &mut used)?;
                    let Content::Inline(list) = base else {
                        return Err(format!(
                            "{p}: a splice of a chunk list whose base is not one"
                        ));
                    };
                    Content::Inline(spliced(p, list, sp)?)
                }
                ContentRec::PagedSplice(sp) => {
                    let base = self.splice_base(p, sp, &touched, &mut used)?;
                    let Content::Paged(list) = base else {
                        return Err(format!(
                            "{p}: a splice of a page list whose base is not one"
                        ));
                    };
                    Content::Paged(spliced(p, list, sp)?)
                }
            };
            nodes.push((
                p.clone(),
                Node {
                    kind: rec.kind,
                    size: rec.size,
                    mode: rec.mode,
                    mtime_ns: rec.mtime_ns,
                    ino: rec.ino,
                    target: rec.target.clone(),
                    content,
                },
            ));
        }
        self.next_ino = self.next_ino.max(d.next_ino);
        for (id, chunks) in d.pages {
            self.pages.insert(id, chunks);
        }
        for p in d.gone {
            self.tree.remove(&p);
        }
        for (p, n) in nodes {
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

    /// The content a splice of node `p` starts from: `sp.from`'s (or `p`'s) in the catalog as
    /// it is before the segment is applied, each path at most once, a `from` only where the
    /// segment moves it away.
    fn splice_base<'a, T>(
        &self,
        p: &'a RelPath,
        sp: &'a Splice<T>,
        touched: &HashSet<&RelPath>,
        used: &mut HashSet<&'a RelPath>,
    ) -> Result<&Content, String> {
        let from = sp.from.as_ref().unwrap_or(p);
        if sp.from.is_some() && !touched.contains(from) {
            return Err(format!(
                "{p}: a splice from {from}, which the segment keeps (a copy)"
            ));
        }
        if !used.insert(from) {
            return Err(format!("{p}: {from} is the base of two splices"));
        }
        self.tree
            .get(from)
            .map(|n| &n.content)
            .ok_or_else(|| format!("{p}: a splice from {from}, which the catalog does not hold"))
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

    /// Notes what `path` held at the last commit, before its first change since.
    fn note_before(&mut self, path: &RelPath) {
        if !self.before.contains_key(path) {
            let c = self.tree.get(path).map(|n| n.content.clone());
            self.before.insert(path.clone(), c);
        }
    }

    /// Inserts or replaces the node at `path`, keeping reference counts.
    pub fn set_node(&mut self, path: RelPath, node: Node) {
        self.note_before(&path);
        self.add_refs(&node.content);
        if let Some(old) = self.tree.insert(path.clone(), node) {
            self.drop_refs(&old.content);
        }
        self.changed_nodes.insert(path);
    }

    /// Removes the node at `path`; returns it.
    pub fn remove_node(&mut self, path: &RelPath) -> Option<Node> {
        self.note_before(path);
        let old = self.tree.remove(path)?;
        self.drop_refs(&old.content);
        self.changed_nodes.insert(path.clone());
        Some(old)
    }

    /// Moves the node at `from` (and, for a directory, everything below) to `to`, replacing
    /// what was at `to`. Content references do not change.
    pub fn rename(&mut self, from: &RelPath, to: &RelPath) {
        let mut pairs: Vec<(RelPath, RelPath)> = Vec::new();
        if self.tree.contains_key(from) {
            pairs.push((from.clone(), to.clone()));
        }
        for p in self.below(from).map(|(p, _)| p.clone()).collect::<Vec<_>>() {
            if let Some(np) = p.rebase(from, to) {
                pairs.push((p, np));
            }
        }
        // What every path involved held at the last commit, and where each moved content came
        // from then, before anything moves.
        for (p, np) in &pairs {
            self.note_before(p);
            self.note_before(np);
        }
        self.note_before(from);
        let mut moved: Vec<(RelPath, Node, RelPath)> = Vec::new();
        for (p, np) in pairs {
            if let Some(n) = self.tree.remove(&p) {
                let origin = self.origin.remove(&p).unwrap_or_else(|| p.clone());
                self.changed_nodes.insert(p);
                moved.push((np, n, origin));
            }
        }
        self.changed_nodes.insert(from.clone());
        for (p, n, origin) in moved {
            if let Some(old) = self.tree.insert(p.clone(), n) {
                self.drop_refs(&old.content);
            }
            self.origin.insert(p.clone(), origin);
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
        Content::Paged(self.cut_pages(&chunks))
    }

    /// [`Catalog::content_for`] for new content of the file at `path`: the pages of its present
    /// list that the new list starts or ends with are kept, and only the chunks between are cut
    /// into new pages, so an edit adds a page or two however the file was paged before.
    pub fn content_replacing(&mut self, path: &RelPath, chunks: Vec<ChunkRef>) -> Content {
        if chunks.len() <= INLINE_CHUNKS {
            return self.content_for(chunks);
        }
        let old_ids = match self.tree.get(path).map(|n| &n.content) {
            Some(Content::Paged(ids)) => ids.clone(),
            _ => return self.content_for(chunks),
        };
        let Some(old) = old_ids
            .iter()
            .map(|id| self.pages.get(id))
            .collect::<Option<Vec<&Vec<ChunkRef>>>>()
        else {
            return self.content_for(chunks);
        };
        let (mut i, mut start) = (0, 0);
        while let Some(page) = old.get(i) {
            match chunks.get(start..start + page.len()) {
                Some(c) if c == page.as_slice() => {
                    start += page.len();
                    i += 1;
                }
                _ => break,
            }
        }
        let (mut j, mut end) = (old.len(), chunks.len());
        while j > i {
            let page = old[j - 1];
            match end.checked_sub(page.len()).filter(|b| *b >= start) {
                Some(b) if chunks[b..end] == page[..] => {
                    end = b;
                    j -= 1;
                }
                _ => break,
            }
        }
        let mut ids = old_ids[..i].to_vec();
        ids.extend(self.cut_pages(&chunks[start..end]));
        ids.extend_from_slice(&old_ids[j..]);
        Content::Paged(ids)
    }

    /// Cuts `chunks` into pages (after a chunk whose hash ends in [`PAGE_BITS`] zero bits, at
    /// most [`PAGE_MAX`] a page, the last one where the list ends), adding them.
    fn cut_pages(&mut self, chunks: &[ChunkRef]) -> Vec<PageId> {
        let mask = (1u8 << PAGE_BITS) - 1;
        let mut ids = Vec::new();
        let mut page: Vec<ChunkRef> = Vec::new();
        for c in chunks {
            page.push(*c);
            if c.hash.0[31] & mask == 0 || page.len() >= PAGE_MAX {
                ids.push(self.add_page(std::mem::take(&mut page)));
            }
        }
        if !page.is_empty() {
            ids.push(self.add_page(page));
        }
        ids
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

    /// The changes since the last commit, as a segment: a changed file's list as a splice of
    /// what its path (or the path a rename took it from) held at the last commit.
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
        let mut used: HashSet<&RelPath> = HashSet::new();
        for p in &self.changed_nodes {
            let Some(n) = self.tree.get(p) else {
                d.gone.push(p.clone());
                continue;
            };
            let mut rec = NodeRec::full(n);
            let from = self.origin.get(p).unwrap_or(p);
            // Not noted: the path's content did not change since the commit.
            let base = match self.before.get(from) {
                Some(b) => b.as_ref(),
                None => Some(&n.content),
            };
            let from_rec = (from != p).then(|| from.clone());
            match (base, &n.content) {
                (Some(Content::Inline(b)), Content::Inline(c)) if used.insert(from) => {
                    rec.content = ContentRec::InlineSplice(splice_between(from_rec, b, c));
                }
                (Some(Content::Paged(b)), Content::Paged(c)) if used.insert(from) => {
                    rec.content = ContentRec::PagedSplice(splice_between(from_rec, b, c));
                }
                _ => {}
            }
            d.nodes.push((p.clone(), rec));
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
                .map(|(p, n)| (p.clone(), NodeRec::full(n)))
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
        self.before.clear();
        self.origin.clear();
    }
}

/// The splice that makes `new` from `old`: the items between their common start and end.
fn splice_between<T: Clone + PartialEq>(from: Option<RelPath>, old: &[T], new: &[T]) -> Splice<T> {
    let head = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let tail = old[head..]
        .iter()
        .rev()
        .zip(new[head..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    Splice {
        from,
        at: head as u32,
        remove: (old.len() - head - tail) as u32,
        insert: new[head..new.len() - tail].to_vec(),
    }
}

/// `base` with the splice `sp` of node `p` applied.
fn spliced<T: Clone>(p: &RelPath, base: &[T], sp: &Splice<T>) -> Result<Vec<T>, String> {
    let at = sp.at as usize;
    let end = at
        .checked_add(sp.remove as usize)
        .filter(|e| *e <= base.len())
        .ok_or_else(|| {
            format!(
                "{p}: a splice of items {at}..+{} of a list of {}",
                sp.remove,
                base.len()
            )
        })?;
    let mut out = Vec::with_capacity(base.len() - (end - at) + sp.insert.len());
    out.extend_from_slice(&base[..at]);
    out.extend_from_slice(&sp.insert);
    out.extend_from_slice(&base[end..]);
    Ok(out)
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

    /// What a reader sees of a catalog: every node with its chunks, the state files, the
    /// number of referenced chunks.
    type View = (
        Vec<(String, Node, Vec<ChunkRef>)>,
        Vec<(String, Vec<u8>)>,
        usize,
    );

    fn view(c: &Catalog) -> View {
        let nodes = c
            .tree()
            .iter()
            .map(|(p, n)| (p.to_string(), n.clone(), c.chunks_of(&n.content).unwrap()))
            .collect();
        let meta = c
            .meta_names()
            .map(|k| (k.clone(), c.meta(k).unwrap().clone()))
            .collect();
        (nodes, meta, c.chunk_count())
    }

    /// Commits `c` into `log` (its changes as a segment, through postcard) and checks that the
    /// log reloads to what `c` holds.
    fn commit(c: &mut Catalog, log: &mut Vec<Vec<u8>>) -> usize {
        let bytes = postcard::to_stdvec(&c.segment()).unwrap();
        c.clear_changes();
        log.push(bytes.clone());
        let mut r = Catalog::new(c.folder);
        for part in log.iter() {
            r.apply(postcard::from_bytes(part).unwrap()).unwrap();
        }
        r.finish_load().unwrap();
        assert_eq!(view(&r), view(c), "the log reloads to the catalog");
        bytes.len()
    }

    fn p(s: &str) -> RelPath {
        RelPath::try_from(s).unwrap()
    }

    fn big(c: &mut Catalog, path: &str, chunks: Vec<ChunkRef>) -> Node {
        let content = c.content_replacing(&p(path), chunks);
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

    #[test]
    fn big_files_are_paged_and_an_edit_writes_a_splice_and_a_page_or_two() {
        let mut c = Catalog::new(FolderId(1));
        let mut log = Vec::new();
        let chunks: Vec<ChunkRef> = (0..3200).map(chunk).collect();
        let n = big(&mut c, "big", chunks.clone());
        let Content::Paged(ids) = &n.content else {
            panic!("paged")
        };
        assert!(ids.len() > 100 && ids.len() < 400, "{} pages", ids.len());
        c.set_node(p("big"), n);
        assert_eq!(c.chunk_count(), 3200);
        commit(&mut c, &mut log);
        for (round, at) in [1600usize, 17, 3199, 1601].into_iter().enumerate() {
            let mut edited = c.chunks_of(&c.node(&p("big")).unwrap().content).unwrap();
            edited[at] = chunk(100_000 + round as u32);
            let n = big(&mut c, "big", edited);
            c.set_node(p("big"), n);
            let seg = c.segment();
            assert!(seg.pages.len() <= 3, "{} new pages", seg.pages.len());
            let ContentRec::PagedSplice(sp) = &seg.nodes[0].1.content else {
                panic!("a splice: {:?}", seg.nodes[0].1.content)
            };
            assert!(
                sp.from.is_none() && sp.insert.len() <= 3 && sp.remove <= 3,
                "{sp:?}"
            );
            let bytes = commit(&mut c, &mut log);
            assert!(bytes < 3_000, "segment {bytes} bytes");
        }
        // Growing at the end and cutting the head keep the pages between.
        let mut grown = c.chunks_of(&c.node(&p("big")).unwrap().content).unwrap();
        grown.extend((0..40).map(|i| chunk(200_000 + i)));
        grown.drain(..30);
        let n = big(&mut c, "big", grown);
        c.set_node(p("big"), n);
        assert!(c.segment().pages.len() <= 8);
        commit(&mut c, &mut log);
        assert_eq!(
            c.take_orphans().len(),
            4 + 30,
            "the replaced and cut chunks"
        );
    }

    /// A rename records the moved content as a splice of where it was (no list is written
    /// again), also with an edit on top; the path moved away may get new content at once.
    #[test]
    fn a_rename_moves_lists_without_writing_them() {
        let mut c = Catalog::new(FolderId(1));
        let mut log = Vec::new();
        let list: Vec<ChunkRef> = (0..1000).map(chunk).collect();
        for name in ["a", "b"] {
            let n = big(&mut c, name, list.clone());
            c.set_node(p(name), n);
        }
        let small = file(&mut c, (0..10).map(chunk).collect());
        c.set_node(p("s"), small);
        commit(&mut c, &mut log);
        c.rename(&p("a"), &p("a2"));
        c.rename(&p("s"), &p("s2"));
        let bytes = commit(&mut c, &mut log);
        assert!(bytes < 300, "two renames: {bytes} bytes");
        // Moved and edited; the old path filled again; moved back and forth.
        c.rename(&p("a2"), &p("a3"));
        let mut edited = list.clone();
        edited[500] = chunk(5_000);
        let n = big(&mut c, "a3", edited);
        c.set_node(p("a3"), n);
        let n = big(&mut c, "a2", (2000..2100).map(chunk).collect());
        c.set_node(p("a2"), n);
        c.rename(&p("b"), &p("b2"));
        c.rename(&p("b2"), &p("b"));
        c.touch(&p("s2"), 0o600, 5);
        commit(&mut c, &mut log);
        // Replaced by a rename, then removed.
        c.rename(&p("a3"), &p("b"));
        c.remove_node(&p("a2"));
        commit(&mut c, &mut log);
    }

    /// A segment's splices are refused when they could copy content (a base the segment keeps,
    /// or one base for two splices: a catalog quadratic in its encoding) or do not fit.
    #[test]
    fn hostile_splices_are_refused() {
        let mut c = Catalog::new(FolderId(1));
        let n = big(&mut c, "a", (0..1000).map(chunk).collect());
        c.set_node(p("a"), n);
        let small = file(&mut c, (0..3).map(chunk).collect());
        c.set_node(p("s"), small);
        let base = postcard::to_stdvec(&c.base()).unwrap();
        let load = |d: Delta| {
            let mut r = Catalog::new(FolderId(1));
            r.apply(postcard::from_bytes(&base).unwrap()).unwrap();
            r.apply(d).and_then(|()| r.finish_load())
        };
        let rec = |content| NodeRec {
            kind: EntryKind::File,
            size: 0,
            mode: 0o644,
            mtime_ns: 0,
            ino: 9,
            target: None,
            content,
        };
        let splice = |from: Option<&str>, at, remove| Splice::<PageId> {
            from: from.map(p),
            at,
            remove,
            insert: Vec::new(),
        };
        let seg = |nodes: Vec<(&str, NodeRec)>, gone: Vec<&str>| Delta {
            nodes: nodes.into_iter().map(|(k, v)| (p(k), v)).collect(),
            gone: gone.into_iter().map(p).collect(),
            ..c.segment()
        };
        let ok = seg(
            vec![("b", rec(ContentRec::PagedSplice(splice(Some("a"), 0, 0))))],
            vec!["a"],
        );
        assert!(load(ok).is_ok(), "a rename");
        for (why, d) in [
            (
                "copy",
                seg(
                    vec![("b", rec(ContentRec::PagedSplice(splice(Some("a"), 0, 0))))],
                    vec![],
                ),
            ),
            (
                "twice",
                seg(
                    vec![
                        ("b", rec(ContentRec::PagedSplice(splice(Some("a"), 0, 0)))),
                        ("a", rec(ContentRec::PagedSplice(splice(None, 0, 0)))),
                    ],
                    vec![],
                ),
            ),
            (
                "range",
                seg(
                    vec![("a", rec(ContentRec::PagedSplice(splice(None, 2, u32::MAX))))],
                    vec![],
                ),
            ),
            (
                "missing",
                seg(
                    vec![("x", rec(ContentRec::PagedSplice(splice(None, 0, 0))))],
                    vec![],
                ),
            ),
            (
                "kind",
                seg(
                    vec![("s", rec(ContentRec::PagedSplice(splice(None, 0, 0))))],
                    vec![],
                ),
            ),
        ] {
            assert!(load(d).is_err(), "{why}");
        }
    }

    /// A long pseudo-random history of writes, edits, renames (of files and directories),
    /// touches and removals, committed every few steps: the log always reloads to the catalog.
    #[test]
    fn a_random_history_reloads_exactly() {
        let mut c = Catalog::new(FolderId(1));
        let mut log = vec![postcard::to_stdvec(&c.base()).unwrap()];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let names = ["a", "b", "c", "d", "d/e", "d/f", "g", "g/h"];
        for step in 0..600u32 {
            let name = names[rnd(names.len() as u64) as usize];
            let path = p(name);
            let parent_ok = path
                .parent()
                .is_none_or(|d| c.node(&d).is_some_and(|n| n.kind == EntryKind::Dir));
            match rnd(6) {
                0 | 1 if parent_ok && !["d", "g"].contains(&name) => {
                    let old = c
                        .node(&path)
                        .map(|n| c.chunks_of(&n.content).unwrap())
                        .unwrap_or_default();
                    let mut list = if old.is_empty() || rnd(4) == 0 {
                        let len = [0, 5, 70, 300, 900][rnd(5) as usize];
                        (0..len).map(|i| chunk(step * 1000 + i)).collect()
                    } else {
                        old
                    };
                    if !list.is_empty() {
                        let at = rnd(list.len() as u64) as usize;
                        list[at] = chunk(1_000_000 + step);
                    }
                    let n = big(&mut c, name, list);
                    c.set_node(path, n);
                }
                2 if parent_ok && ["d", "g"].contains(&name) && c.node(&path).is_none() => {
                    c.set_node(
                        path,
                        Node {
                            kind: EntryKind::Dir,
                            size: 0,
                            mode: 0o755,
                            mtime_ns: 0,
                            ino: 1,
                            target: None,
                            content: Content::None,
                        },
                    );
                }
                3 => {
                    let to = p(names[rnd(names.len() as u64) as usize]);
                    let fits = to.parent().is_none_or(|d| {
                        d != path && c.node(&d).is_some_and(|n| n.kind == EntryKind::Dir)
                    });
                    if c.node(&path).is_some() && !to.starts_with(&path) && fits {
                        if c.node(&to).is_some_and(|n| n.kind == EntryKind::Dir) {
                            continue;
                        }
                        c.rename(&path, &to);
                    }
                }
                4 => {
                    c.touch(&path, 0o600, i64::from(step));
                }
                _ => {
                    if c.below(&path).next().is_none() {
                        c.remove_node(&path);
                    }
                }
            }
            if rnd(4) == 0 {
                commit(&mut c, &mut log);
            }
        }
        commit(&mut c, &mut log);
        // The history went through every kind of record.
        let (mut moved, mut own, mut full) = (0, 0, 0);
        for part in &log {
            let d: Delta = postcard::from_bytes(part).unwrap();
            for (_, n) in d.nodes {
                match n.content {
                    ContentRec::InlineSplice(Splice { from, .. })
                    | ContentRec::PagedSplice(Splice { from, .. }) => {
                        if from.is_some() {
                            moved += 1;
                        } else {
                            own += 1;
                        }
                    }
                    ContentRec::Inline(_) | ContentRec::Paged(_) => full += 1,
                    ContentRec::None => {}
                }
            }
        }
        assert!(moved > 5 && own > 20 && full > 20, "{moved} {own} {full}");
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
