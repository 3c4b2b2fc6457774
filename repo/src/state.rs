//! The in-memory indexes: where every chunk is, and every version by client
//! and path, with retention applied. Built from index files (or packs) at
//! open; a pack is added whole, and adding one twice is a no-op.
//!
//! Retention (`DIR/retention`, see `keep`): the index holds only the
//! versions the kept points keep. At load every path is filtered once all
//! packs are in; afterwards each inserted version's predecessors are
//! checked again (a new version ends its predecessor's span). Keeping only
//! shrinks (points are only removed, the line only moves forward), so a
//! span computed from the remaining neighbours is never narrower than the
//! true one where it matters.
//!
//! Copies: the same chunk or version may be in several packs (a repack
//! interrupted before the old pack was deleted, a re-sent batch, a
//! server's copies). The copy used is chosen by the pack, whatever the
//! order packs are read in: a whole chunk before a delta, a pack not
//! condemned before a condemned one, then the pack sealed last, then the
//! greater name. So after a crash in a prune the new pack's copies win,
//! and the old pack is left with nothing in use, for the next prune.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;

use rewind_core::path::is_under;
use rewind_core::retention::{QueryPoint, Scope, live_ends};
use rewind_core::{ChunkId, Encoding, Entry, RepoStats, Timestamp, Version};

use crate::keep::ClientKeep;
use crate::pack_index::{IdxChunk, PackIndex};
use crate::pack_name::PackName;

mod held;
mod history;

pub(crate) use held::{Held, Shape, encode_entry, shape_of};

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
    /// Versions in its records.
    pub versions: u64,
    /// Of those, the ones the index holds with this pack as their copy.
    pub kept_versions: u64,
    /// Bytes of its version records.
    pub version_bytes: u64,
    /// Bytes of its chunk records.
    pub chunk_bytes: u64,
    /// Found unused by a two-phase prune; deleted after a grace time.
    pub condemned: bool,
    /// Deleted by a prune (its slot stays so locations keep their index).
    pub gone: bool,
}

/// Take a version of `path` observed at `at` out of the activity counts
/// (it left the index).
fn untime(times: &mut BTreeMap<Timestamp, u64>, path: &[u8], at: Timestamp) {
    if path.first() != Some(&b'/') {
        return;
    }
    if let Some(n) = times.get_mut(&at) {
        *n -= 1;
        if *n == 0 {
            times.remove(&at);
        }
    }
}

/// The versions of one client.
#[derive(Default)]
pub(crate) struct ClientIndex {
    /// Path → versions sorted by seq.
    paths: BTreeMap<Vec<u8>, Vec<Held>>,
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

/// What is kept of one client, as the index applies it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Keeping {
    pub files: Scope,
    pub series: HashMap<Vec<u8>, Scope>,
    pub pins: BTreeSet<Timestamp>,
}

impl Keeping {
    pub(crate) fn of(ck: &ClientKeep) -> Keeping {
        Keeping {
            files: ck.files.clone(),
            series: ck
                .series
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            pins: ck.pin_points(),
        }
    }

    /// The scope a path belongs to: files for absolute paths, its series
    /// for a dump (`None`: nothing forgotten there yet).
    fn scope(&self, path: &[u8]) -> Option<&Scope> {
        if path.starts_with(b"/") {
            Some(&self.files)
        } else {
            self.series.get(path)
        }
    }

    /// Whether a version of `path` live over `[start, end)` is kept.
    pub(crate) fn keeps(&self, path: &[u8], start: Timestamp, end: Option<Timestamp>) -> bool {
        self.scope(path)
            .is_none_or(|s| s.keeps(start, end, &self.pins))
    }
}

impl ClientIndex {
    /// `base` (normalized) and every path below it, in path order, with
    /// their versions. A sibling sharing the prefix (`/r/ab` next to
    /// `/r/a`) is not below it.
    fn below<'a>(&'a self, base: &'a [u8]) -> impl Iterator<Item = (&'a Vec<u8>, &'a Vec<Held>)> {
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
    /// What retention keeps, per client (absent: everything).
    keep: HashMap<String, Keeping>,
    /// Filter versions as they are inserted (off while a load adds packs
    /// in any order; [`State::filter_all`] runs once at the end).
    filtering: bool,
}

/// Where a slice of a walk over every version ended: the last (client,
/// path) it visited (see [`State::each_version_after`]).
pub(crate) type WalkCursor = (String, Vec<u8>);

/// A dump series: its path, and its runs (time, succeeded) in seq order.
pub(crate) type Series = (Vec<u8>, Vec<(Timestamp, bool)>);

/// How a copy ranks against another of the same chunk (greater wins).
fn rank(p: &PackInfo, delta: bool) -> (bool, bool, Option<Timestamp>, PackName) {
    (!delta, !p.condemned, p.sealed_at, p.name)
}

impl State {
    /// An empty index that filters by `keep` from the start.
    pub(crate) fn with_keep(keep: HashMap<String, Keeping>) -> State {
        State {
            keep,
            ..State::default()
        }
    }

    pub(crate) fn has_pack(&self, name: &PackName) -> bool {
        self.by_name.contains_key(name)
    }

    /// The pack slot of `name`, if it is known (and not deleted).
    pub(crate) fn pack_slot(&self, name: &PackName) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// Start or stop filtering on insert (see the field).
    pub(crate) fn set_filtering(&mut self, on: bool) {
        self.filtering = on;
    }

    /// Add a pack's chunks and versions. Copies already known elsewhere
    /// are ranked (see the module doc); versions whose `(client, seq)` is
    /// already stored for that path are copies.
    pub(crate) fn add_pack(&mut self, idx: PackIndex) {
        self.add_pack_marked(idx, false)
    }

    /// [`State::add_pack`] for a pack that may be condemned.
    pub(crate) fn add_pack_marked(&mut self, idx: PackIndex, condemned: bool) {
        let Some(n) = self.begin_pack(&idx, condemned) else {
            return;
        };
        self.add_pack_chunks(n, &idx.chunks);
        self.add_pack_versions(n, idx.versions, idx.sealed_at);
    }

    /// The first part of [`State::add_pack_marked`]: the pack's slot,
    /// with none of its chunks and versions yet (`None` when the index
    /// has the pack). A prune adds its new pack in parts, letting go of
    /// the index's lock in between ([`State::add_pack_chunks`],
    /// [`State::add_pack_versions`]): its chunks and versions are copies
    /// of ones the index holds, so every moment in between is a valid
    /// index.
    pub(crate) fn begin_pack(&mut self, idx: &PackIndex, condemned: bool) -> Option<u32> {
        if self.has_pack(&idx.pack) {
            return None;
        }
        let n = self.packs.len() as u32;
        self.by_name.insert(idx.pack, n);
        self.packs.push(PackInfo {
            name: idx.pack,
            len: idx.pack_len,
            sealed_at: idx.sealed_at,
            has_versions: !idx.versions.is_empty(),
            versions: idx.versions.len() as u64,
            kept_versions: 0,
            version_bytes: idx.version_records.iter().map(|r| r.frame_len as u64).sum(),
            chunk_bytes: idx.chunks.iter().map(|c| c.frame_len as u64).sum(),
            condemned,
            gone: false,
        });
        Some(n)
    }

    /// Chunks of the pack in slot `n` (see [`State::begin_pack`]): each
    /// takes the place of the copy in use where it ranks higher.
    pub(crate) fn add_pack_chunks(&mut self, n: u32, chunks: &[IdxChunk]) {
        for c in chunks {
            let delta = matches!(c.encoding, Encoding::Delta { .. });
            let replace = match self.chunks.get(&c.id) {
                None => true,
                Some(old) => {
                    let old_delta = self.delta_bases.contains_key(&c.id);
                    rank(&self.packs[n as usize], delta)
                        > rank(&self.packs[old.pack as usize], old_delta)
                }
            };
            if replace {
                self.chunks.insert(
                    c.id,
                    Location {
                        pack: n,
                        offset: c.offset,
                        frame_len: c.frame_len,
                    },
                );
                match c.encoding {
                    Encoding::Delta { base } => {
                        self.delta_bases.insert(c.id, base);
                    }
                    _ => {
                        self.delta_bases.remove(&c.id);
                    }
                }
            }
        }
    }

    /// Versions of the pack in slot `n`, sealed at `sealed_at` (see
    /// [`State::begin_pack`]).
    pub(crate) fn add_pack_versions(
        &mut self,
        n: u32,
        versions: Vec<Version>,
        sealed_at: Option<Timestamp>,
    ) {
        for v in versions {
            let ci = self.clients.entry(v.client.clone()).or_default();
            ci.last_commit = ci.last_commit.max(sealed_at);
            self.insert_version(v, n);
        }
    }

    /// An index holding only what a query over the version index on disk
    /// puts in ([`State::insert_held`]): one pack slot standing for the
    /// runs, no chunks, no retention (the caller applied it).
    pub(crate) fn for_answer() -> State {
        let mut st = State::default();
        st.packs.push(PackInfo {
            name: PackName([0; 16]),
            len: 0,
            sealed_at: None,
            has_versions: true,
            versions: 0,
            kept_versions: 0,
            version_bytes: 0,
            chunk_bytes: 0,
            condemned: false,
            gone: false,
        });
        st
    }

    /// Add `h` to `client`'s `path` (an index made by
    /// [`State::for_answer`]; versions of a path come in seq order).
    pub(crate) fn insert_held(&mut self, client: &str, path: &[u8], h: Held) {
        let ci = self.clients.entry(client.to_string()).or_default();
        ci.max_seq = ci.max_seq.max(h.seq);
        if path.first() == Some(&b'/') {
            *ci.times.entry(h.observed_at).or_default() += 1;
        }
        let list = ci.paths.entry(path.to_vec()).or_default();
        debug_assert!(list.last().is_none_or(|l| l.seq < h.seq));
        list.push(h);
        self.versions += 1;
    }

    /// The versions of `client`'s paths that start with `prefix` (bytes),
    /// in path order.
    pub(crate) fn held_with_prefix<'a>(
        &'a self,
        client: &str,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a Vec<Held>)> + 'a {
        self.clients.get(client).into_iter().flat_map(move |ci| {
            ci.paths
                .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
                .take_while(move |(p, _)| p.starts_with(prefix))
        })
    }

    /// The versions of `client`'s `path`.
    pub(crate) fn held_of(&self, client: &str, path: &[u8]) -> &[Held] {
        self.clients
            .get(client)
            .and_then(|c| c.paths.get(path))
            .map_or(&[], |l| l.as_slice())
    }

    /// Insert `v` (from pack slot `pack`) into its path's list, or move an
    /// existing copy to `pack` when that ranks higher; then, while
    /// filtering, drop what the new version leaves unkept.
    fn insert_version(&mut self, v: Version, pack: u32) {
        let new_rank = rank(&self.packs[pack as usize], false);
        let packs = &self.packs;
        let ci = self.clients.entry(v.client.clone()).or_default();
        ci.max_seq = ci.max_seq.max(v.seq);
        // Most paths keep one version or a few: room for exactly one at
        // first, not the four a growing Vec reserves (on a 52k-file tree
        // the spare room was 70 MiB of the agent's 290 MiB when the index
        // held whole versions, docs/decisions.md "Agent memory (issue 19)").
        if !ci.paths.contains_key(v.path.as_slice()) {
            ci.paths.insert(v.path.clone(), Vec::with_capacity(1));
        }
        let list = ci.paths.get_mut(v.path.as_slice()).expect("inserted above");
        let at = match list.last() {
            None => 0,
            Some(last) if last.seq < v.seq => list.len(),
            Some(_) => match list.binary_search_by_key(&v.seq, |h| h.seq) {
                Ok(i) => {
                    let old = list[i].pack;
                    if new_rank > rank(&packs[old as usize], false) {
                        list[i].pack = pack;
                        self.packs[old as usize].kept_versions -= 1;
                        self.packs[pack as usize].kept_versions += 1;
                    }
                    return;
                }
                Err(i) => i,
            },
        };
        let appended = at == list.len();
        let monotone = at == 0 || list[at - 1].observed_at <= v.observed_at;
        if v.path.first() == Some(&b'/') {
            *ci.times.entry(v.observed_at).or_default() += 1;
        }
        let Version {
            client,
            seq,
            observed_at,
            path,
            entry,
        } = v;
        list.insert(at, Held::new(seq, observed_at, pack, &entry));
        self.packs[pack as usize].kept_versions += 1;
        self.versions += 1;
        if self.filtering && self.keep.contains_key(&client) {
            if appended && monotone {
                // Only the predecessor's span changed (it ends now).
                self.filter_range(&client, &path, at.saturating_sub(1)..at);
            } else {
                self.filter_range(&client, &path, 0..usize::MAX);
            }
        }
    }

    /// Drop the versions of `path` at positions `range` that retention no
    /// longer keeps (spans from the remaining neighbours).
    fn filter_range(&mut self, client: &str, path: &[u8], range: std::ops::Range<usize>) {
        let Some(keep) = self.keep.get(client) else {
            return;
        };
        let Some(ci) = self.clients.get_mut(client) else {
            return;
        };
        let ClientIndex {
            paths, times: at, ..
        } = ci;
        let Some(list) = paths.get_mut(path) else {
            return;
        };
        let times: Vec<Timestamp> = list.iter().map(|h| h.observed_at).collect();
        let ends = live_ends(&times);
        let mut i = 0;
        let packs = &mut self.packs;
        let mut dropped = 0;
        list.retain(|h| {
            let k = i;
            i += 1;
            if !range.contains(&k) || keep.keeps(path, times[k], ends[k]) {
                return true;
            }
            packs[h.pack as usize].kept_versions -= 1;
            untime(at, path, h.observed_at);
            dropped += 1;
            false
        });
        self.versions -= dropped;
    }

    /// Filter every path of every client (after a load).
    pub(crate) fn filter_all(&mut self) {
        let clients: Vec<String> = self.keep.keys().cloned().collect();
        for c in clients {
            let paths: Vec<Vec<u8>> = self
                .clients
                .get(&c)
                .map(|ci| ci.paths.keys().cloned().collect())
                .unwrap_or_default();
            for p in paths {
                self.filter_range(&c, &p, 0..usize::MAX);
            }
        }
        self.filtering = true;
    }

    /// The versions of `client` that `keep` would drop: `(path, seq)`.
    /// Read-only, so it runs under a shared lock; dropping them later is
    /// still right, since what arrives meanwhile only ends spans sooner.
    pub(crate) fn unkept(&self, client: &str, keep: &Keeping) -> Vec<(Vec<u8>, u64)> {
        let mut out = Vec::new();
        let Some(ci) = self.clients.get(client) else {
            return out;
        };
        for (p, list) in &ci.paths {
            let times: Vec<Timestamp> = list.iter().map(|h| h.observed_at).collect();
            for (k, end) in live_ends(&times).into_iter().enumerate() {
                if !keep.keeps(p, times[k], end) {
                    out.push((p.clone(), list[k].seq));
                }
            }
        }
        out
    }

    /// Make `keep` what is kept of `client`, and drop `gone` (computed by
    /// [`State::unkept`]).
    pub(crate) fn set_keep(&mut self, client: &str, keep: Keeping, gone: &[(Vec<u8>, u64)]) {
        self.keep.insert(client.to_string(), keep);
        let Some(ci) = self.clients.get_mut(client) else {
            return;
        };
        // Each path's list filtered once: removing the versions one at a
        // time moved the rest of the list each time, quadratic in the
        // versions of a path (a forget of 4.8 million versions, 480,000 of
        // them per hot file, was still in `memmove` after 3 minutes and was
        // stopped; 48 s now, most of it the open; docs/benchmarks.md,
        // "Retention").
        let mut by_path: HashMap<&[u8], HashSet<u64>> = HashMap::new();
        for (p, seq) in gone {
            by_path.entry(p.as_slice()).or_default().insert(*seq);
        }
        let packs = &mut self.packs;
        let mut dropped = 0;
        for (p, seqs) in by_path {
            let Some(list) = ci.paths.get_mut(p) else {
                continue;
            };
            let times = &mut ci.times;
            list.retain(|h| {
                if !seqs.contains(&h.seq) {
                    return true;
                }
                untime(times, p, h.observed_at);
                packs[h.pack as usize].kept_versions -= 1;
                dropped += 1;
                false
            });
        }
        self.versions -= dropped;
    }

    /// Replace the pins of `client` (pins only add points at kept points or
    /// in the whole part, and removing one drops nothing until the next
    /// forget).
    pub(crate) fn set_pins(&mut self, client: &str, pins: BTreeSet<Timestamp>) {
        self.keep.entry(client.to_string()).or_default().pins = pins;
    }

    /// Mark pack `name` condemned or not.
    pub(crate) fn set_condemned(&mut self, name: &PackName, on: bool) {
        if let Some(&n) = self.by_name.get(name) {
            self.packs[n as usize].condemned = on;
        }
    }

    /// Forget packs `names` (deleted by a prune): their chunks whose copy
    /// in use is there leave the index (returned); their versions must
    /// have moved to other copies already (any left are dropped, with a
    /// warning). One pass over the chunk map for all of them: a prune's
    /// switch removes hundreds of packs under the writer lock, and a pass
    /// per pack over millions of chunks held captures back for a minute
    /// (docs/benchmarks.md, "Retention", part C). A prune that knows the
    /// packs' chunks removes them in parts instead
    /// ([`State::remove_chunks_of`], [`State::retire_packs`]).
    pub(crate) fn remove_packs(&mut self, names: &[PackName]) -> Vec<ChunkId> {
        let slots: HashSet<u32> = names
            .iter()
            .filter_map(|n| self.by_name.remove(n))
            .collect();
        if slots.is_empty() {
            return Vec::new();
        }
        let mut removed = Vec::new();
        let delta_bases = &mut self.delta_bases;
        self.chunks.retain(|id, loc| {
            if slots.contains(&loc.pack) {
                delta_bases.remove(id);
                removed.push(*id);
                false
            } else {
                true
            }
        });
        self.retire(slots);
        removed
    }

    /// Take out of the index the chunks among `ids` whose copy in use is
    /// in pack slot `n` (a prune removes a pack's chunks in parts before
    /// the pack leaves: [`State::retire_packs`]); returns them. Stops at
    /// the first of them in `spare` (a chunk a caller was told is stored),
    /// returning it as `Err` with what was removed before it.
    pub(crate) fn remove_chunks_of(
        &mut self,
        n: u32,
        ids: &[ChunkId],
        spare: &HashSet<ChunkId>,
    ) -> Result<Vec<ChunkId>, (ChunkId, Vec<ChunkId>)> {
        let mut removed = Vec::new();
        for id in ids {
            if self.chunks.get(id).is_none_or(|l| l.pack != n) {
                continue;
            }
            if spare.contains(id) {
                return Err((*id, removed));
            }
            self.chunks.remove(id);
            self.delta_bases.remove(id);
            removed.push(*id);
        }
        Ok(removed)
    }

    /// Packs `names` leave the index, once their chunks were removed with
    /// [`State::remove_chunks_of`] (any chunk still located there stays
    /// in the map, pointing at a deleted pack: callers must remove them
    /// all first).
    pub(crate) fn retire_packs(&mut self, names: &[PackName]) {
        let slots: HashSet<u32> = names
            .iter()
            .filter_map(|n| self.by_name.remove(n))
            .collect();
        self.retire(slots);
    }

    /// Mark pack `slots` deleted; drop (with a warning) versions still held
    /// only there.
    fn retire(&mut self, slots: HashSet<u32>) {
        let held: HashSet<u32> = slots
            .iter()
            .copied()
            .filter(|n| self.packs[*n as usize].kept_versions > 0)
            .collect();
        if !held.is_empty() {
            let mut stranded = 0;
            for ci in self.clients.values_mut() {
                for (p, list) in ci.paths.iter_mut() {
                    let before = list.len();
                    list.retain(|h| {
                        if held.contains(&h.pack) {
                            untime(&mut ci.times, p, h.observed_at);
                        }
                        !held.contains(&h.pack)
                    });
                    stranded += (before - list.len()) as u64;
                }
            }
            self.versions -= stranded;
            tracing::warn!(
                packs = held.len(),
                stranded,
                "deleted packs still held versions in use"
            );
        }
        for n in slots {
            let p = &mut self.packs[n as usize];
            p.gone = true;
            p.kept_versions = 0;
        }
    }

    /// Chunks no version in the index names (and no delta's base).
    pub(crate) fn unreferenced(&self) -> Vec<ChunkId> {
        let mut named: HashSet<ChunkId> = HashSet::new();
        self.each_version(|_, _, _, e| named.extend(e.chunk_refs().map(|c| c.id)));
        named.extend(self.delta_bases.values().copied());
        self.chunks
            .keys()
            .filter(|id| !named.contains(id))
            .copied()
            .collect()
    }

    /// Every version in the index (kept ones), for a live set: its
    /// client, path, seq and entry.
    pub(crate) fn each_version(&self, mut f: impl FnMut(&str, &[u8], u64, &Entry)) {
        for (c, ci) in &self.clients {
            for (p, list) in &ci.paths {
                for h in list {
                    f(c, p, h.seq, &h.entry());
                }
            }
        }
    }

    /// [`State::each_version`] a slice at a time, so that a long walk can
    /// let go of the index's lock between slices: the versions of whole
    /// paths after `after` in (client, path) order, until at least
    /// `budget` versions were visited. Returns where the next slice starts
    /// (the last path visited), or `None` once every path was.
    pub(crate) fn each_version_after(
        &self,
        after: Option<&WalkCursor>,
        budget: usize,
        mut f: impl FnMut(&str, &[u8], u64, &Entry),
    ) -> Option<WalkCursor> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let first: (Bound<&str>, Bound<&str>) = match after {
            Some((c, _)) => (Included(c.as_str()), Unbounded),
            None => (Unbounded, Unbounded),
        };
        let mut seen = 0;
        for (c, ci) in self.clients.range::<str, _>(first) {
            let from: (Bound<&[u8]>, Bound<&[u8]>) = match after {
                Some((ac, ap)) if ac == c => (Excluded(ap.as_slice()), Unbounded),
                _ => (Unbounded, Unbounded),
            };
            for (p, list) in ci.paths.range::<[u8], _>(from) {
                for h in list {
                    f(c, p, h.seq, &h.entry());
                }
                seen += list.len().max(1);
                if seen >= budget {
                    return Some((c.clone(), p.clone()));
                }
            }
        }
        None
    }

    /// The pack slot whose copy of `(client, seq)` of `path` the index
    /// uses, if the index holds that version.
    pub(crate) fn version_pack(&self, client: &str, path: &[u8], seq: u64) -> Option<u32> {
        let list = self.clients.get(client)?.paths.get(path)?;
        let i = list.binary_search_by_key(&seq, |h| h.seq).ok()?;
        Some(list[i].pack)
    }

    /// Packs in use (not deleted).
    pub(crate) fn live_packs(&self) -> impl Iterator<Item = (u32, &PackInfo)> {
        self.packs
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.gone)
            .map(|(i, p)| (i as u32, p))
    }

    /// True when `id` is stored in a pack that is not condemned.
    pub(crate) fn has_usable(&self, id: &ChunkId) -> bool {
        self.chunks
            .get(id)
            .is_some_and(|l| !self.packs[l.pack as usize].condemned)
    }

    /// The highest seq stored for `client`, if any.
    pub(crate) fn max_seq(&self, client: &str) -> Option<u64> {
        self.clients.get(client).map(|c| c.max_seq)
    }

    pub(crate) fn versions_of(&self, client: &str, path: &[u8]) -> Vec<Version> {
        self.clients
            .get(client)
            .and_then(|c| c.paths.get(path))
            .map(|l| l.iter().map(|h| h.version(client, path)).collect())
            .unwrap_or_default()
    }

    /// The point a query of `client`'s files at `at` uses.
    pub(crate) fn query_point(&self, client: &str, at: Timestamp) -> QueryPoint {
        match self.keep.get(client) {
            Some(k) => k.files.snap(at, &k.pins),
            None => QueryPoint::exact(at),
        }
    }

    /// The state of `base` and everything below it at `at`; see
    /// `Repository::tree_at` and the crate doc for the parent rule. A
    /// query of files before the whole part of the history answers for the
    /// kept point it snaps to (nothing, before the oldest).
    pub(crate) fn tree_at(&self, client: &str, base: &[u8], at: Timestamp) -> Vec<Version> {
        let Some(ci) = self.clients.get(client) else {
            return Vec::new();
        };
        let at = if base.starts_with(b"/") {
            match self.query_point(client, at).used {
                Some(t) => t,
                None => return Vec::new(),
            }
        } else {
            at
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
            let Some(h) = vs.iter().rev().find(|h| h.observed_at <= at) else {
                continue;
            };
            if !h.present() {
                continue;
            }
            if p.as_slice() != base && !parent_present(ci, &dirs, p, base, at) {
                continue;
            }
            if h.is_dir() {
                dirs.insert(p);
            }
            out.push(h.version(client, p));
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
        for (p, vs) in ci.paths.range::<[u8], _>((start, Bound::Unbounded)) {
            if out.len() >= limit.max(1) {
                break;
            }
            out.extend(vs.iter().map(|h| h.version(client, p)));
        }
        out
    }

    /// How many versions the index holds, all clients.
    pub(crate) fn stats_versions(&self) -> u64 {
        self.versions
    }

    /// How many versions `client` has stored.
    pub(crate) fn client_versions(&self, client: &str) -> u64 {
        self.clients
            .get(client)
            .map_or(0, |i| i.paths.values().map(|v| v.len() as u64).sum())
    }

    /// The times of `client`'s versions: all of its files, and per dump
    /// series its runs (time, succeeded), oldest first by seq.
    pub(crate) fn timelines(&self, client: &str) -> (Vec<Timestamp>, Vec<Series>) {
        let mut files = Vec::new();
        let mut series = Vec::new();
        if let Some(ci) = self.clients.get(client) {
            for (p, list) in &ci.paths {
                if p.starts_with(b"/") {
                    files.extend(list.iter().map(|h| h.observed_at));
                } else {
                    let runs = list
                        .iter()
                        .map(|h| (h.observed_at, h.shape == Shape::StreamOk))
                        .collect();
                    series.push((p.clone(), runs));
                }
            }
        }
        (files, series)
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
            packs: self.live_packs().count() as u64,
            pack_bytes: self.live_packs().map(|(_, p)| p.len).sum(),
            last_commit: self
                .live_packs()
                .filter(|(_, p)| p.has_versions)
                .filter_map(|(_, p)| p.sealed_at)
                .max(),
            max_seq: self
                .clients
                .iter()
                .map(|(c, i)| (c.clone(), i.max_seq))
                .collect(),
        }
    }
}

/// Of `versions` (from packs, copies allowed), the ones `keep` keeps, each
/// once: what the index of a repository holding them would hold.
pub(crate) fn kept_only(mut versions: Vec<Version>, keep: &crate::keep::KeepFile) -> Vec<Version> {
    versions.sort_by(|a, b| (&a.client, &a.path, a.seq).cmp(&(&b.client, &b.path, b.seq)));
    versions.dedup_by(|a, b| a.client == b.client && a.path == b.path && a.seq == b.seq);
    let mut out = Vec::with_capacity(versions.len());
    let mut rest = versions.as_slice();
    while let Some(first) = rest.first() {
        let n = rest
            .iter()
            .take_while(|v| v.client == first.client && v.path == first.path)
            .count();
        let (group, tail) = rest.split_at(n);
        rest = tail;
        let Some(ck) = keep.clients.get(&first.client) else {
            out.extend_from_slice(group);
            continue;
        };
        let keeping = Keeping::of(ck);
        let times: Vec<Timestamp> = group.iter().map(|v| v.observed_at).collect();
        for (v, end) in group.iter().zip(live_ends(&times)) {
            if keeping.keeps(&v.path, v.observed_at, end) {
                out.push(v.clone());
            }
        }
    }
    out
}

/// Strip trailing slashes (but keep `/`).
pub(crate) fn normalize(p: &[u8]) -> &[u8] {
    let mut p = p;
    while p.len() > 1 && p.ends_with(b"/") {
        p = &p[..p.len() - 1];
    }
    p
}

/// The parent of an absolute path; `None` for `/` and for relative names.
pub(crate) fn parent(p: &[u8]) -> Option<&[u8]> {
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
fn parent_present(
    ci: &ClientIndex,
    dirs: &HashSet<&[u8]>,
    p: &[u8],
    base: &[u8],
    at: Timestamp,
) -> bool {
    let mut q = parent(p);
    while let Some(a) = q {
        if !is_under(a, base) {
            return true;
        }
        if recorded_by(ci, a, at) {
            return dirs.contains(a);
        }
        q = parent(a);
    }
    true
}

/// Whether `path` has a version at or before `at`. A directory whose first
/// version is proven later than a child's (captured on another thread, or
/// after waiting out a recent write) is not yet recorded at the child's
/// moment: the child's version proves the directory existed then, so it
/// neither hides the child nor answers for it.
fn recorded_by(ci: &ClientIndex, path: &[u8], at: Timestamp) -> bool {
    ci.paths
        .get(path)
        .is_some_and(|l| l.iter().any(|h| h.observed_at <= at))
}

/// The version of `path` in force at `at`, unless it is a tombstone.
fn present_at<'a>(ci: &'a ClientIndex, path: &[u8], at: Timestamp) -> Option<&'a Held> {
    let h = ci
        .paths
        .get(path)?
        .iter()
        .rev()
        .find(|h| h.observed_at <= at)?;
    h.present().then_some(h)
}

/// Whether every recorded ancestor of `base` is a directory present at
/// `at`: below a deleted directory nothing exists, whatever was recorded
/// there before its deletion.
fn ancestors_present(ci: &ClientIndex, base: &[u8], at: Timestamp) -> bool {
    let mut q = parent(base);
    while let Some(a) = q {
        if recorded_by(ci, a, at) {
            let is_dir = present_at(ci, a, at).is_some_and(Held::is_dir);
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

    #[test]
    fn a_walk_in_slices_visits_every_version_once_in_order() {
        use crate::tests::{chunk, file_v};
        let c = chunk(1);
        let mut versions = Vec::new();
        let mut seq = 0;
        for client in ["b-client", "a-client"] {
            for (path, n) in [(&b"/x"[..], 3), (b"/a/long", 7), (b"/a", 1), (b"/z/q", 2)] {
                for _ in 0..n {
                    seq += 1;
                    let mut v = file_v(seq, seq as i64, path, &[&c]);
                    v.client = client.to_string();
                    versions.push(v);
                }
            }
        }
        let mut st = State::default();
        st.add_pack(PackIndex {
            pack: PackName::random(),
            pack_len: 1,
            sealed_at: Some(Timestamp(1)),
            damage: None,
            chunks: Vec::new(),
            version_records: Vec::new(),
            versions,
        });
        let mut all = Vec::new();
        st.each_version(|c, p, s, _| all.push((c.to_string(), p.to_vec(), s)));
        assert_eq!(all.len(), 26);
        for budget in [1, 2, 5, 7, 26, 100] {
            let mut sliced = Vec::new();
            let mut cursor = None;
            let mut slices = 0;
            loop {
                slices += 1;
                cursor = st.each_version_after(cursor.as_ref(), budget, |c, p, s, _| {
                    sliced.push((c.to_string(), p.to_vec(), s))
                });
                if cursor.is_none() {
                    break;
                }
            }
            assert_eq!(sliced, all, "budget {budget}");
            assert!(
                slices <= 26 / budget + 9,
                "budget {budget}: {slices} slices"
            );
        }
    }
    #[test]
    fn removing_a_packs_chunks_in_parts_leaves_what_a_full_pass_leaves() {
        use crate::tests::chunk;
        let ids: Vec<ChunkId> = (0..6).map(|i| chunk(i).id).collect();
        let pack = |n: i64, with: &[usize]| PackIndex {
            pack: PackName::random(),
            pack_len: 1,
            sealed_at: Some(Timestamp(n)),
            damage: None,
            chunks: with
                .iter()
                .map(|&i| IdxChunk {
                    id: ids[i],
                    offset: i as u64 * 10,
                    frame_len: 10,
                    raw_len: 10,
                    encoding: Encoding::Zstd,
                })
                .collect(),
            version_records: Vec::new(),
            versions: Vec::new(),
        };
        // Pack b holds newer copies of 2 and 3: those stay where they are
        // used when a is removed; 0 and 1 leave; c is untouched.
        let (a, b, c) = (pack(1, &[0, 1, 2, 3]), pack(2, &[2, 3, 4]), pack(3, &[5]));
        let listed_ids: Vec<ChunkId> = a.chunks.iter().map(|c| c.id).collect();
        let mut full = State::default();
        let mut listed = State::default();
        for st in [&mut full, &mut listed] {
            st.add_pack(a.clone());
            st.add_pack(b.clone());
            st.add_pack(c.clone());
        }
        let mut gone_full = full.remove_packs(&[a.pack]);
        let none = HashSet::new();
        let mut gone_listed = Vec::new();
        for part in listed_ids.chunks(1) {
            gone_listed.extend(listed.remove_chunks_of(0, part, &none).unwrap());
        }
        listed.retire_packs(&[a.pack]);
        gone_full.sort();
        gone_listed.sort();
        let mut expect = vec![ids[0], ids[1]];
        expect.sort();
        assert_eq!(gone_full, expect);
        assert_eq!(gone_listed, expect);
        let mut left_full: Vec<_> = full.chunks.iter().map(|(k, v)| (*k, v.pack)).collect();
        let mut left_listed: Vec<_> = listed.chunks.iter().map(|(k, v)| (*k, v.pack)).collect();
        left_full.sort();
        left_listed.sort();
        assert_eq!(left_full, left_listed);
        // A chunk someone was told is stored stops the removal there.
        let mut spared = State::default();
        spared.add_pack(a.clone());
        let spare: HashSet<ChunkId> = [ids[1]].into();
        let (at, before) = spared.remove_chunks_of(0, &listed_ids, &spare).unwrap_err();
        assert_eq!((at, before), (ids[1], vec![ids[0]]));
        assert!(spared.chunks.contains_key(&ids[1]) && spared.has_pack(&a.pack));
        assert!(!listed.has_pack(&a.pack) && listed.packs[0].gone);
    }
}
