//! Prune: reclaim the space of what forget left unused, while commits go
//! on.
//!
//! - The live set is every chunk a kept version names (content and xattr
//!   values), every chunk stored as a base (`store_base`), the chunks the
//!   caller says something still waits to commit with (the journal's
//!   pending versions), and the delta bases of all of these.
//! - While a prune runs, every chunk a caller is told is stored (`missing`,
//!   `has_chunk`, a skipped put), that a delta is checked against, or that a
//!   commit names, is recorded ("touched"). A pack is deleted only under
//!   the writer lock and the index's exclusive lock, after checking that no
//!   chunk it still serves was touched: a capture that relied on a chunk
//!   keeps it, and the next prune looks again.
//! - A pack with nothing live is deleted; a pack whose unused share is above
//!   the threshold is repacked: its live chunks and kept versions are copied
//!   into a new pack, which is sealed and indexed as every pack is, the
//!   index switched to it (the writer lock is held only for the switch,
//!   never across the copying), then the old pack is deleted, its pack file
//!   before its index file.
//! - A repacked pack's footer carries the seal time of the newest pack it
//!   was made from plus 1 ns: its copies rank above its sources' (see
//!   `state`), and the last-commit times `status` shows stay those of the
//!   commits.
//! - Two-phase (a server, which cannot see its clients' journals): packs
//!   sealed within the grace time are left alone; a pack found unused is
//!   condemned (durably, with the time) and deleted by a later prune once
//!   the grace time has passed and it is still unused; a chunk only in
//!   condemned packs is missing to `missing_chunks` (so clients send it
//!   again, which writes a new copy), and a condemned pack in use again is
//!   revived.
//!
//! After a crash (each step a named failpoint: `prune.repack` once a new
//! pack is durable, `prune.switch` after the index switched, `prune.intent`
//! once the deletions are recorded, `prune.delete_pack` and
//! `prune.delete_idx` before each file goes, `prune.done` before the
//! record is cleared; the new pack's own steps are `pack.*` and `idx.*`):
//! a new pack and its sources both exist, their copies rank so that the
//! sources are left with nothing in use, and the next prune deletes them;
//! deletions already recorded are finished by the next writer's open.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rewind_core::forget::{PendingChunks, PruneReport, PruneRequest, PruneSummary};
use rewind_core::{ChunkId, RepoError, Timestamp, Version};
use tracing::{debug, info};

use crate::deletions::remove;
use crate::durable::{failpoint, io_err};
use crate::index;
use crate::keep::KeepFile;
use crate::pack::{self, PackWriter, VERSIONS_RECORD_TARGET, split_versions};
use crate::pack_index::PackIndex;
use crate::pack_name::PackName;
use crate::record;
use crate::repo::{LocalRepo, PACK_TARGET};
use crate::store::fsync_dir;

/// The repack threshold when none is given: a pack is rewritten once more
/// than this share of it is unused. Measured on a year of simulated
/// desktop history (docs/decisions.md, "Retention", the repack threshold:
/// 5 M versions, docs/benchmarks.md "Retention"): 10 % reclaims
/// nearly all the space 0 % does while rewriting a small part of the bytes.
pub const DEFAULT_MAX_UNUSED: f64 = 0.10;

/// The grace time of a server's two-phase prune: a client may rely on a
/// chunk it was told is stored for this long before its version commits
/// (an upload backlog drained by the uploader), and a condemned pack is
/// deleted this long after it was found unused.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// What a prune is asked to do.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Only say what would be done.
    pub dry_run: bool,
    /// Repack a pack once more than this share of it is unused.
    pub max_unused: f64,
    /// Two-phase deletion with this grace time (a server).
    pub grace: Option<Duration>,
    /// "Now", for grace times.
    pub now: Timestamp,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            max_unused: DEFAULT_MAX_UNUSED,
            grace: None,
            now: Timestamp::now(),
        }
    }
}

/// One pack as the plan sees it.
#[derive(Clone, Debug)]
struct PackUse {
    name: PackName,
    len: u64,
    sealed_at: Option<Timestamp>,
    live_bytes: u64,
    kept_versions: u64,
    versions: u64,
}

impl PackUse {
    fn unused(&self) -> bool {
        self.live_bytes == 0 && self.kept_versions == 0
    }
    fn unused_bytes(&self) -> u64 {
        self.len.saturating_sub(self.live_bytes)
    }
}

/// What the plan decided.
#[derive(Default)]
struct Plan {
    delete: Vec<PackUse>,
    repack: Vec<PackUse>,
    condemn: Vec<PackUse>,
    revive: Vec<PackName>,
}

/// The prune's epoch of touched chunks; ends when dropped.
struct Epoch<'a>(&'a LocalRepo);

impl<'a> Epoch<'a> {
    fn begin(repo: &'a LocalRepo) -> Epoch<'a> {
        *repo.touched.lock().unwrap_or_else(|p| p.into_inner()) = Some(HashSet::new());
        repo.pruning
            .store(true, std::sync::atomic::Ordering::Release);
        Epoch(repo)
    }
}

impl Drop for Epoch<'_> {
    fn drop(&mut self) {
        self.0
            .pruning
            .store(false, std::sync::atomic::Ordering::Release);
        *self.0.touched.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

impl PruneOptions {
    /// The options of `req` (a local prune: no grace time).
    pub fn of(req: &PruneRequest) -> Result<PruneOptions, RepoError> {
        let max_unused = req.max_unused.unwrap_or(DEFAULT_MAX_UNUSED);
        if !(0.0..=1.0).contains(&max_unused) {
            return Err(RepoError::Refused {
                reason: format!("--max-unused {}%: expected 0 to 100", max_unused * 100.0),
            });
        }
        Ok(PruneOptions {
            dry_run: req.dry_run,
            max_unused,
            ..PruneOptions::default()
        })
    }
}

fn crash_point(name: &'static str, dir: &Path) -> Result<(), RepoError> {
    failpoint(name).map_err(io_err(dir))
}

/// Versions walked (or chunks looked up) under one hold of the index's
/// shared lock while a prune finds the live set; chunks added or removed
/// under one hold of its exclusive lock while a prune switches. A few
/// milliseconds of work each on this VM (docs/decisions.md, "Prune holds
/// the index for moments").
const WALK_SLICE: usize = 20_000;

impl LocalRepo {
    /// [`Repository::prune`](rewind_core::Repository::prune): the request
    /// made into options, then [`LocalRepo::prune_with`].
    pub(crate) fn prune_request(
        &self,
        req: &PruneRequest,
        pending: &mut PendingChunks<'_>,
    ) -> Result<PruneReport, RepoError> {
        self.prune_with(&PruneOptions::of(req)?, pending)
    }

    /// Reclaim space (see the module documentation). `pending` is called
    /// once the prune records touched chunks, and gives the chunks that
    /// versions not yet committed rely on (the journal's): it must include
    /// every capture that began before it was called. Writers only; one
    /// prune or forget at a time.
    pub fn prune_with(
        &self,
        opts: &PruneOptions,
        pending: &mut PendingChunks<'_>,
    ) -> Result<PruneReport, RepoError> {
        if !self.is_writer() {
            return Err(RepoError::ReadOnly);
        }
        let started = Instant::now();
        let _m = self.maintenance.lock().unwrap_or_else(|p| p.into_inner());
        let _epoch = Epoch::begin(self);
        // Whatever this prune does, or fails halfway through, what was
        // reclaimable is looked at again afterwards (and during: a plan
        // made now may see a half-done switch).
        self.retention_changed();
        let _after = RetentionChanged(self);
        let extra = pending()?;
        let mut report = PruneReport {
            dry_run: opts.dry_run,
            pending_chunks: extra.len() as u64,
            ..PruneReport::default()
        };
        let (plan, live) = self.plan(opts, extra, &mut report);
        if opts.dry_run {
            report.millis = started.elapsed().as_millis() as u64;
            return Ok(report);
        }
        let now = opts.now;
        if opts.grace.is_some() && (!plan.condemn.is_empty() || !plan.revive.is_empty()) {
            self.update_keep(|k| {
                for p in &plan.condemn {
                    k.condemned.insert(p.name, now);
                }
                for n in &plan.revive {
                    k.condemned.remove(n);
                }
            })?;
            let mut st = self.write_state();
            for p in &plan.condemn {
                st.set_condemned(&p.name, true);
            }
            for n in &plan.revive {
                st.set_condemned(n, false);
            }
            report.packs_condemned += plan.condemn.len() as u64;
            report.packs_revived += plan.revive.len() as u64;
        }
        // Repack in batches of about one pack of output.
        let mut batch: Vec<PackUse> = Vec::new();
        let mut size = 0;
        for p in plan.repack {
            size += p.live_bytes;
            batch.push(p);
            if size >= PACK_TARGET {
                self.repack(std::mem::take(&mut batch), &live, opts, &mut report)?;
                size = 0;
            }
        }
        if !batch.is_empty() {
            self.repack(batch, &live, opts, &mut report)?;
        }
        if !plan.delete.is_empty() {
            let names: Vec<PackName> = plan.delete.iter().map(|p| p.name).collect();
            // Their chunks, read before the switch takes the locks (a pack
            // whose index cannot be read is left to the full pass).
            let mut listed = HashMap::new();
            for n in &names {
                if let Ok(Some(idx)) = index::read_header(&self.crypt, &self.dir, *n) {
                    listed.insert(*n, idx.chunks.into_iter().map(|c| c.id).collect());
                }
            }
            let gone = self.switch(&names, None, listed, true, &mut report)?;
            report.packs_deleted += gone.len() as u64;
            report.bytes_freed += plan
                .delete
                .iter()
                .filter(|p| gone.contains(&p.name))
                .map(|p| p.len)
                .sum::<u64>();
            report.versions_dropped += plan
                .delete
                .iter()
                .filter(|p| gone.contains(&p.name))
                .map(|p| p.versions)
                .sum::<u64>();
        }
        crash_point("prune.done", &self.dir)?;
        report.millis = started.elapsed().as_millis() as u64;
        let summary = PruneSummary {
            at: Some(Timestamp::now()),
            millis: report.millis,
            packs_deleted: report.packs_deleted,
            packs_repacked: report.packs_repacked,
            bytes_rewritten: report.bytes_rewritten,
            bytes_freed: report.bytes_freed,
            packs_condemned: report.packs_condemned,
        };
        self.update_keep(|k| {
            k.deleting.clear();
            k.last_prune = Some(summary);
        })?;
        info!(
            deleted = report.packs_deleted,
            repacked = report.packs_repacked,
            condemned = report.packs_condemned,
            freed = report.bytes_freed,
            rewritten = report.bytes_rewritten,
            millis = report.millis,
            "pruned"
        );
        Ok(report)
    }

    /// Bytes of packs nothing kept uses (for `status` and the web UI),
    /// as of the last forget, prune or reload. Finding them plans a whole
    /// prune, seconds on a history of millions of versions, so the answer
    /// is kept until one of those runs again; commits in between can only
    /// make a few of those bytes live again (a chunk stored anew that an
    /// unused pack also holds), never add to them.
    pub(crate) fn reclaimable(&self) -> u64 {
        let generation = self.retention_gen.load(Ordering::Acquire);
        let memo = |m: &Mutex<Option<(u64, u64)>>| *m.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((g, bytes)) = memo(&self.reclaimable_memo)
            && g == generation
        {
            return bytes;
        }
        let mut r = PruneReport::default();
        let opts = PruneOptions {
            dry_run: true,
            ..PruneOptions::default()
        };
        let _ = self.plan(&opts, Vec::new(), &mut r);
        // Found at `generation`: a forget or prune meanwhile moved it on,
        // and the next call looks again.
        *self
            .reclaimable_memo
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((generation, r.unused_bytes));
        r.unused_bytes
    }

    /// A forget, prune or reload happened: what [`Self::reclaimable`]
    /// found is out of date.
    pub(crate) fn retention_changed(&self) {
        self.retention_gen.fetch_add(1, Ordering::AcqRel);
    }

    /// The live set and what to do with each pack (under a shared lock).
    fn plan(
        &self,
        opts: &PruneOptions,
        extra: Vec<ChunkId>,
        report: &mut PruneReport,
    ) -> (Plan, HashSet<ChunkId>) {
        let keep = self.keepfile.lock().expect("retention poisoned").clone();
        let mut live: HashSet<ChunkId> = extra.into_iter().collect();
        live.extend(keep.bases.iter().copied());
        // The walk over every kept version takes seconds on a long
        // history: it lets go of the index between slices, so commits go
        // on. What a commit adds meanwhile names only chunks it touched
        // (spared by the switch); what retention drops meanwhile only
        // makes this live set larger than it need be.
        let walk = Instant::now();
        let mut longest = Duration::ZERO;
        let mut cursor = None;
        loop {
            let t = Instant::now();
            let st = self.read_state();
            cursor = st.each_version_after(cursor.as_ref(), WALK_SLICE, |_, _, _, e| {
                live.extend(e.chunk_refs().map(|c| c.id))
            });
            drop(st);
            longest = longest.max(t.elapsed());
            if cursor.is_none() {
                break;
            }
        }
        // The delta bases of the live chunks, then the bytes each pack
        // serves of them, a slice at a time as well.
        let ids: Vec<ChunkId> = live.iter().copied().collect();
        for part in ids.chunks(WALK_SLICE) {
            let st = self.read_state();
            let bases: Vec<ChunkId> = part
                .iter()
                .filter_map(|id| st.delta_bases.get(id).copied())
                .collect();
            drop(st);
            live.extend(bases);
        }
        report.live_chunks = live.len() as u64;
        let ids: Vec<ChunkId> = live.iter().copied().collect();
        let mut used: HashMap<u32, u64> = HashMap::new();
        for part in ids.chunks(WALK_SLICE) {
            let st = self.read_state();
            for id in part {
                if let Some(loc) = st.chunks.get(id) {
                    *used.entry(loc.pack).or_default() += loc.frame_len as u64;
                }
            }
        }
        drop(ids);
        let held = Instant::now();
        let st = self.read_state();
        let young = opts
            .grace
            .map(|g| Timestamp(opts.now.0.saturating_sub(g.as_nanos() as i64)));
        let mut plan = Plan::default();
        for (slot, p) in st.live_packs() {
            // Unused: chunk records not live here (forgotten, or a copy
            // the index does not use) and the forgotten share of the
            // version records; headers and footers count as used.
            let kept_version_bytes = (p.version_bytes * p.kept_versions)
                .checked_div(p.versions)
                .unwrap_or(0);
            let live_chunks = used.get(&slot).copied().unwrap_or(0);
            let unused = p.chunk_bytes.saturating_sub(live_chunks)
                + p.version_bytes.saturating_sub(kept_version_bytes);
            let u = PackUse {
                name: p.name,
                len: p.len,
                sealed_at: p.sealed_at,
                live_bytes: if live_chunks == 0 && p.kept_versions == 0 {
                    0
                } else {
                    p.len.saturating_sub(unused)
                },
                kept_versions: p.kept_versions,
                versions: p.versions,
            };
            report.packs += 1;
            report.pack_bytes += u.len;
            report.unused_bytes += u.unused_bytes();
            if let Some(young) = young {
                if p.condemned {
                    if !u.unused() {
                        plan.revive.push(u.name);
                    } else if keep.condemned.get(&u.name).is_some_and(|at| *at <= young) {
                        plan.delete.push(u);
                    } else {
                        report.unused_bytes_left += u.unused_bytes();
                    }
                    continue;
                }
                // A client may rely on what it sent lately, unseen.
                if u.sealed_at.is_none_or(|s| s > young) {
                    report.unused_bytes_left += u.unused_bytes();
                    continue;
                }
            }
            if u.unused() {
                if young.is_some() {
                    plan.condemn.push(u);
                } else {
                    plan.delete.push(u);
                }
            } else if u.unused_bytes() as f64 > opts.max_unused * u.len as f64 {
                plan.repack.push(u);
            } else {
                report.unused_bytes_left += u.unused_bytes();
            }
        }
        if opts.dry_run {
            report.packs_deleted = plan.delete.len() as u64;
            report.packs_repacked = plan.repack.len() as u64;
            report.packs_condemned = plan.condemn.len() as u64;
            report.packs_revived = plan.revive.len() as u64;
            report.bytes_freed = plan.delete.iter().map(|p| p.len).sum::<u64>()
                + plan.repack.iter().map(|p| p.unused_bytes()).sum::<u64>();
            report.bytes_rewritten = plan.repack.iter().map(|p| p.live_bytes).sum();
        }
        drop(st);
        debug!(
            live = live.len(),
            walk_millis = walk.elapsed().as_millis() as u64,
            longest_slice_millis = longest.as_millis() as u64,
            held_millis = held.elapsed().as_millis() as u64,
            "prune planned"
        );
        (plan, live)
    }

    /// Copy what `sources` still hold in use into a new pack, switch the
    /// index to it, then delete (or, two-phase, condemn) the sources.
    fn repack(
        &self,
        sources: Vec<PackUse>,
        live: &HashSet<ChunkId>,
        opts: &PruneOptions,
        report: &mut PruneReport,
    ) -> Result<(), RepoError> {
        let mut w = PackWriter::create(&self.staging()?, &self.crypt)?;
        let mut versions: Vec<Version> = Vec::new();
        let mut newest = Timestamp(0);
        let mut dropped = 0u64;
        let mut listed = HashMap::new();
        for src in &sources {
            newest = newest.max(src.sealed_at.unwrap_or(Timestamp(0)));
            let path = src.name.pack_path(&self.dir);
            let idx = pack::load(&self.crypt, &path, src.name)?;
            let blob = crate::store::open_blob(&path).map_err(io_err(&path))?;
            let file = &*blob.data;
            let InUse {
                chunks,
                versions: vs,
                here,
            } = self.in_use(&idx, live);
            listed.insert(src.name, here);
            for c in chunks {
                let ch = record::read_encoded_at(&self.crypt, file, &path, c.0, c.1, &c.2)?;
                w.add_chunk(ch.view())?;
            }
            dropped += (idx.versions.len() - vs.len()) as u64;
            versions.extend(vs);
        }
        let runs = split_versions(&versions, VERSIONS_RECORD_TARGET).map_err(|(i, n)| {
            crate::durable::corrupt(&self.dir, format!("version {i} encodes to {n} bytes"))
        })?;
        w.add_versions(&runs)?;
        let sealed = Timestamp(newest.0.saturating_add(1));
        let idx = if w.records() > 0 {
            let idx = w.seal_as(&self.dir, sealed)?;
            index::write(&self.crypt, &self.dir, &idx)?;
            report.packs_written += 1;
            report.bytes_rewritten += idx.pack_len;
            Some(idx)
        } else {
            None
        };
        drop(w);
        crash_point("prune.repack", &self.dir)?;
        let names: Vec<PackName> = sources.iter().map(|p| p.name).collect();
        let delete = opts.grace.is_none();
        let gone = self.switch(&names, idx, listed, delete, report)?;
        for p in sources.iter().filter(|p| gone.contains(&p.name)) {
            report.packs_repacked += 1;
            if delete {
                report.bytes_freed += p.len;
            } else {
                report.packs_condemned += 1;
            }
        }
        report.versions_dropped += dropped;
        Ok(())
    }

    /// The chunks of pack `idx` whose copy in use is there and that are
    /// live — (offset, frame length, id) in file order —, its versions
    /// whose copy in use is there, and every chunk whose copy in use is
    /// there (what the switch takes out of the index: a copy can move to
    /// another pack meanwhile, never into this one).
    fn in_use(&self, idx: &PackIndex, live: &HashSet<ChunkId>) -> InUse {
        let st = self.read_state();
        let Some(slot) = st.pack_slot(&idx.pack) else {
            return InUse::default();
        };
        let mut here = Vec::new();
        let chunks = idx
            .chunks
            .iter()
            .filter(|c| {
                let Some(l) = st.chunks.get(&c.id).filter(|l| l.pack == slot) else {
                    return false;
                };
                here.push(c.id);
                l.offset == c.offset && live.contains(&c.id)
            })
            .map(|c| (c.offset, c.frame_len, c.id))
            .collect();
        let versions = idx
            .versions
            .iter()
            .filter(|v| st.version_pack(&v.client, &v.path, v.seq) == Some(slot))
            .cloned()
            .collect();
        InUse {
            chunks,
            versions,
            here,
        }
    }

    /// Update `DIR/retention` durably.
    pub(crate) fn update_keep(&self, f: impl FnOnce(&mut KeepFile)) -> Result<(), RepoError> {
        self.catch_up_keep()?;
        let mut kf = self.keepfile.lock().expect("retention poisoned");
        let mut next = kf.clone();
        f(&mut next);
        self.write_keep(&mut kf, next)
    }

    /// Under the writer lock and the index's exclusive lock: add `new` to
    /// the index, then take `sources` out of it, except those still serving
    /// a chunk that was touched during this prune; then (with `delete`)
    /// record and delete them, pack file first, or (two-phase) condemn
    /// them. `listed` holds the chunks of the sources it knows (every
    /// chunk whose copy in use is there), so that taking them out looks
    /// at those alone. Returns the packs that left the index.
    fn switch(
        &self,
        sources: &[PackName],
        new: Option<PackIndex>,
        mut listed: HashMap<PackName, Vec<ChunkId>>,
        delete: bool,
        report: &mut PruneReport,
    ) -> Result<Vec<PackName>, RepoError> {
        let started = Instant::now();
        let mut longest = Duration::ZERO;
        let mut timed = |t: Instant| longest = longest.max(t.elapsed());
        // The new pack first, in slices: its chunks and versions are copies
        // of ones the index holds, so every state in between is valid, and
        // from here on the sources serve only what no one kept.
        if let Some(idx) = new {
            let t = Instant::now();
            let slot = self.write_state().begin_pack(&idx, false);
            timed(t);
            if let Some(n) = slot {
                let PackIndex {
                    chunks,
                    mut versions,
                    sealed_at,
                    ..
                } = idx;
                for part in chunks.chunks(WALK_SLICE) {
                    let t = Instant::now();
                    self.write_state().add_pack_chunks(n, part);
                    timed(t);
                }
                while !versions.is_empty() {
                    let rest = versions.split_off(versions.len().min(WALK_SLICE));
                    let part = std::mem::replace(&mut versions, rest);
                    let t = Instant::now();
                    self.write_state().add_pack_versions(n, part, sealed_at);
                    timed(t);
                }
            }
        }
        // Then the sources' chunks leave the index, in slices, each under
        // the exclusive lock against the touched set: a source serving a
        // chunk someone was told is stored is spared (what it lost from the
        // index meanwhile was unused, and is sent again if needed). Only
        // when every source's chunks are known; else one pass below.
        let mut spared_early: HashSet<PackName> = HashSet::new();
        let mut removed = Vec::new();
        let in_parts = delete && sources.iter().all(|s| listed.contains_key(s));
        if in_parts {
            let none = HashSet::new();
            for s in sources {
                let ids = listed.remove(s).unwrap_or_default();
                for part in ids.chunks(WALK_SLICE) {
                    let t = Instant::now();
                    let mut st = self.write_state();
                    let Some(slot) = st.pack_slot(s) else {
                        break;
                    };
                    if st.packs[slot as usize].kept_versions > 0 {
                        spared_early.insert(*s);
                        break;
                    }
                    let touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
                    let r = st.remove_chunks_of(slot, part, touched.as_ref().unwrap_or(&none));
                    drop(touched);
                    drop(st);
                    timed(t);
                    match r {
                        Ok(r) => removed.extend(r),
                        Err((_, r)) => {
                            removed.extend(r);
                            spared_early.insert(*s);
                            break;
                        }
                    }
                }
            }
        }
        let mut gone = Vec::new();
        {
            let _w = self.lock_writer()?;
            let t = Instant::now();
            let mut st = self.write_state();
            let spared: HashSet<u32> = {
                let t = self.touched.lock().unwrap_or_else(|p| p.into_inner());
                t.iter()
                    .flatten()
                    .filter_map(|id| st.chunks.get(id).map(|l| l.pack))
                    .collect()
            };
            for s in sources {
                let Some(slot) = st.pack_slot(s) else {
                    continue;
                };
                if spared_early.contains(s)
                    || spared.contains(&slot)
                    || st.packs[slot as usize].kept_versions > 0
                {
                    report.packs_spared += 1;
                    continue;
                }
                if !delete {
                    st.set_condemned(s, true);
                }
                gone.push(*s);
            }
            if delete {
                if in_parts {
                    st.retire_packs(&gone);
                } else {
                    removed.extend(st.remove_packs(&gone));
                }
                report.removed_chunks.extend(std::mem::take(&mut removed));
            }
            drop(st);
            timed(t);
        }
        debug!(
            sources = sources.len(),
            gone = gone.len(),
            millis = started.elapsed().as_millis() as u64,
            longest_hold_millis = longest.as_millis() as u64,
            "prune switched the index"
        );
        crash_point("prune.switch", &self.dir)?;
        if gone.is_empty() {
            return Ok(gone);
        }
        if !delete {
            let now = Timestamp::now();
            self.update_keep(|k| {
                for n in &gone {
                    k.condemned.insert(*n, now);
                }
            })?;
            return Ok(gone);
        }
        self.update_keep(|k| {
            k.deleting.extend(gone.iter().copied());
            for n in &gone {
                k.condemned.remove(n);
            }
        })?;
        crash_point("prune.intent", &self.dir)?;
        let mut subdirs = HashSet::new();
        for n in &gone {
            crash_point("prune.delete_pack", &self.dir)?;
            self.fence()?;
            let p = n.pack_path(&self.dir);
            remove(&p)?;
            self.forget_file(n);
            if let Some(d) = p.parent() {
                subdirs.insert(d.to_path_buf());
            }
            crash_point("prune.delete_idx", &self.dir)?;
            remove(&n.idx_path(&self.dir))?;
        }
        for d in subdirs {
            fsync_dir(&d)?;
        }
        fsync_dir(&self.dir.join("index"))?;
        Ok(gone)
    }
}

/// What of one source pack a repack copies, and what it serves (see
/// `LocalRepo::in_use`).
#[derive(Default)]
struct InUse {
    /// Live chunks whose copy in use is there: (offset, frame length, id)
    /// in file order.
    chunks: Vec<(u64, u32, ChunkId)>,
    /// Versions whose copy in use is there.
    versions: Vec<Version>,
    /// Every chunk whose copy in use is there.
    here: Vec<ChunkId>,
}

/// Marks the retention state changed when dropped (the end of a prune,
/// however it ends).
struct RetentionChanged<'a>(&'a LocalRepo);

impl Drop for RetentionChanged<'_> {
    fn drop(&mut self) {
        self.0.retention_changed();
    }
}
