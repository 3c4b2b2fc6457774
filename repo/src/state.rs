//! The in-memory indexes: where every chunk is, and every version by client
//! and path. Built from index files (or packs) at open; a pack is added
//! whole, and adding one twice is a no-op.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;

use rewind_core::path::is_under;
use rewind_core::{ChunkId, Encoding, FileKind, RepoStats, Timestamp, Version};

use crate::pack_index::PackIndex;
use crate::pack_name::PackName;

mod history;

/// Where a stored chunk is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Location {
    /// Index into [`State::packs`].
    pub pack: u32,
    pub offset: u64,
    pub frame_len: u32,
}

/// A pack known to the indexes.
#[derive(Clone, Debug)]
pub(crate) struct PackInfo {
    pub name: PackName,
    pub len: u64,
    pub sealed_at: Option<Timestamp>,
    pub has_versions: bool,
}

/// The versions of one client.
#[derive(Default)]
pub(crate) struct ClientIndex {
    /// Path → versions sorted by seq.
    paths: BTreeMap<Vec<u8>, Vec<Version>>,
    /// How many versions of files (absolute paths; dumps left out) were
    /// observed at each moment: the activity of the whole client without
    /// a walk over every version (about 40 bytes a version, a tenth of the
    /// version itself).
    times: BTreeMap<Timestamp, u64>,
    /// Highest seq stored.
    max_seq: u64,
    /// When the newest pack holding its versions was sealed.
    last_commit: Option<Timestamp>,
}

impl ClientIndex {
    /// `base` (normalized) and every path below it, in path order, with
    /// their versions. A sibling sharing the prefix (`/r/ab` next to
    /// `/r/a`) is not below it.
    fn below<'a>(
        &'a self,
        base: &'a [u8],
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a Vec<Version>)> {
        self.paths
            .range::<[u8], _>((Bound::Included(base), Bound::Unbounded))
            .take_while(move |(p, _)| p.starts_with(base))
            .filter(move |(p, _)| is_under(p, base))
    }
}

/// All in-memory indexes.
#[derive(Default)]
pub(crate) struct State {
    pub packs: Vec<PackInfo>,
    by_name: HashMap<PackName, u32>,
    pub chunks: HashMap<ChunkId, Location>,
    /// The base of every chunk stored as a delta (at its location in
    /// `chunks`).
    pub delta_bases: HashMap<ChunkId, ChunkId>,
    clients: BTreeMap<String, ClientIndex>,
    versions: u64,
}

impl State {
    pub(crate) fn has_pack(&self, name: &PackName) -> bool {
        self.by_name.contains_key(name)
    }

    /// Add a pack's chunks and versions. Chunks already known elsewhere and
    /// versions whose `(client, seq)` is already stored for that path are
    /// skipped (a batch re-sent after a failed commit may exist twice).
    pub(crate) fn add_pack(&mut self, idx: PackIndex) {
        if self.has_pack(&idx.pack) {
            return;
        }
        let n = self.packs.len() as u32;
        self.by_name.insert(idx.pack, n);
        self.packs.push(PackInfo {
            name: idx.pack,
            len: idx.pack_len,
            sealed_at: idx.sealed_at,
            has_versions: !idx.versions.is_empty(),
        });
        for c in idx.chunks {
            if let Entry::Vacant(e) = self.chunks.entry(c.id) {
                e.insert(Location {
                    pack: n,
                    offset: c.offset,
                    frame_len: c.frame_len,
                });
                if let Encoding::Delta { base } = c.encoding {
                    self.delta_bases.insert(c.id, base);
                }
            }
        }
        for v in idx.versions {
            let ci = self.clients.entry(v.client.clone()).or_default();
            ci.last_commit = ci.last_commit.max(idx.sealed_at);
            self.insert_version(v);
        }
    }

    fn insert_version(&mut self, v: Version) {
        let ci = self.clients.entry(v.client.clone()).or_default();
        ci.max_seq = ci.max_seq.max(v.seq);
        // Most paths keep one version or a few: room for exactly one at
        // first, not the four a growing Vec reserves (Version is about 450
        // bytes; on a 52k-file tree the spare room was 70 MiB of the
        // agent's 290 MiB, docs/decisions.md "Agent memory (issue 19)").
        let list = ci
            .paths
            .entry(v.path.clone())
            .or_insert_with(|| Vec::with_capacity(1));
        let at = match list.last() {
            None => 0,
            Some(last) if last.seq < v.seq => list.len(),
            Some(_) => match list.binary_search_by_key(&v.seq, |x| x.seq) {
                Ok(_) => return,
                Err(i) => i,
            },
        };
        if v.path.first() == Some(&b'/') {
            *ci.times.entry(v.observed_at).or_default() += 1;
        }
        list.insert(at, v);
        self.versions += 1;
    }

    /// The highest seq stored for `client`, if any.
    pub(crate) fn max_seq(&self, client: &str) -> Option<u64> {
        self.clients.get(client).map(|c| c.max_seq)
    }

    pub(crate) fn versions_of(&self, client: &str, path: &[u8]) -> Vec<Version> {
        self.clients
            .get(client)
            .and_then(|c| c.paths.get(path))
            .cloned()
            .unwrap_or_default()
    }

    /// The state of `base` and everything below it at `at`; see
    /// `Repository::tree_at` and the crate doc for the parent rule.
    pub(crate) fn tree_at(&self, client: &str, base: &[u8], at: Timestamp) -> Vec<Version> {
        let Some(ci) = self.clients.get(client) else {
            return Vec::new();
        };
        let base = normalize(base);
        let mut out = Vec::new();
        if !ancestors_present(ci, base, at) {
            return out;
        }
        // Paths kept so far that are directories at `at`. Keys sort by bytes,
        // so a parent (a prefix) is always visited before its children.
        let mut dirs: HashSet<&[u8]> = HashSet::new();
        for (p, vs) in ci.below(base) {
            let Some(v) = vs.iter().rev().find(|v| v.observed_at <= at) else {
                continue;
            };
            if v.is_tombstone() {
                continue;
            }
            if p.as_slice() != base && !parent_present(ci, &dirs, p, base) {
                continue;
            }
            if v.meta().is_some_and(|m| m.kind == FileKind::Dir) {
                dirs.insert(p);
            }
            out.push(v.clone());
        }
        out
    }

    /// True when a version exists for `path` or one of its ancestors.
    pub(crate) fn covers(&self, client: &str, path: &[u8]) -> bool {
        let Some(ci) = self.clients.get(client) else {
            return false;
        };
        let mut p = Some(normalize(path));
        while let Some(q) = p {
            if ci.paths.contains_key(q) {
                return true;
            }
            p = parent(q);
        }
        false
    }

    /// Every version of `client`, path by path (each path whole, oldest
    /// first), starting after path `after`, until at least `limit` are taken.
    pub(crate) fn list_page(
        &self,
        client: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Vec<Version> {
        let Some(ci) = self.clients.get(client) else {
            return Vec::new();
        };
        let start = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for (_, vs) in ci.paths.range::<[u8], _>((start, Bound::Unbounded)) {
            if out.len() >= limit.max(1) {
                break;
            }
            out.extend(vs.iter().cloned());
        }
        out
    }

    /// How many versions `client` has stored.
    pub(crate) fn client_versions(&self, client: &str) -> u64 {
        self.clients
            .get(client)
            .map_or(0, |i| i.paths.values().map(|v| v.len() as u64).sum())
    }

    /// [`State::stats`] of one client: its versions, highest seq and last
    /// commit; no chunk or pack figures (they are the repository's).
    pub(crate) fn client_stats(&self, client: &str) -> RepoStats {
        let ci = self.clients.get(client);
        RepoStats {
            versions: self.client_versions(client),
            chunks: 0,
            packs: 0,
            pack_bytes: 0,
            last_commit: ci.and_then(|c| c.last_commit),
            max_seq: ci
                .map(|c| (client.to_string(), c.max_seq))
                .into_iter()
                .collect(),
        }
    }

    pub(crate) fn stats(&self) -> RepoStats {
        RepoStats {
            versions: self.versions,
            chunks: self.chunks.len() as u64,
            packs: self.packs.len() as u64,
            pack_bytes: self.packs.iter().map(|p| p.len).sum(),
            last_commit: self
                .packs
                .iter()
                .filter(|p| p.has_versions)
                .filter_map(|p| p.sealed_at)
                .max(),
            max_seq: self
                .clients
                .iter()
                .map(|(c, i)| (c.clone(), i.max_seq))
                .collect(),
        }
    }
}

/// Strip trailing slashes (but keep `/`).
fn normalize(p: &[u8]) -> &[u8] {
    let mut p = p;
    while p.len() > 1 && p.ends_with(b"/") {
        p = &p[..p.len() - 1];
    }
    p
}

/// The parent of an absolute path; `None` for `/` and for relative names.
fn parent(p: &[u8]) -> Option<&[u8]> {
    if p == b"/" {
        return None;
    }
    match p.iter().rposition(|&b| b == b'/')? {
        0 => Some(b"/"),
        i => Some(&p[..i]),
    }
}

/// Whether `p`'s nearest recorded ancestor within `base` is a directory kept
/// at the query time. Ancestors the repository never recorded (for example
/// the parents of a protected root when `base` lies above it) say nothing
/// and are passed over.
fn parent_present(ci: &ClientIndex, dirs: &HashSet<&[u8]>, p: &[u8], base: &[u8]) -> bool {
    let mut q = parent(p);
    while let Some(a) = q {
        if !is_under(a, base) {
            return true;
        }
        if ci.paths.contains_key(a) {
            return dirs.contains(a);
        }
        q = parent(a);
    }
    true
}

/// The version of `path` in force at `at`, unless it is a tombstone.
fn present_at<'a>(ci: &'a ClientIndex, path: &[u8], at: Timestamp) -> Option<&'a Version> {
    let v = ci
        .paths
        .get(path)?
        .iter()
        .rev()
        .find(|v| v.observed_at <= at)?;
    (!v.is_tombstone()).then_some(v)
}

/// Whether every recorded ancestor of `base` is a directory present at
/// `at`: below a deleted directory nothing exists, whatever was recorded
/// there before its deletion.
fn ancestors_present(ci: &ClientIndex, base: &[u8], at: Timestamp) -> bool {
    let mut q = parent(base);
    while let Some(a) = q {
        if ci.paths.contains_key(a) {
            let is_dir = present_at(ci, a, at)
                .and_then(Version::meta)
                .is_some_and(|m| m.kind == FileKind::Dir);
            if !is_dir {
                return false;
            }
        }
        q = parent(a);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents() {
        assert_eq!(parent(b"/a/b"), Some(&b"/a"[..]));
        assert_eq!(parent(b"/a"), Some(&b"/"[..]));
        assert_eq!(parent(b"/"), None);
        assert_eq!(parent(b"rel"), None);
        assert_eq!(normalize(b"/a//"), b"/a");
        assert_eq!(normalize(b"/"), b"/");
    }
}
