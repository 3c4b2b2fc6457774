//! Queries over the runs and the overlay (the versions of packs no run
//! names), with retention applied as a full load applies it: a path's
//! versions from every source are merged by seq (copies once), each
//! version's span ends at the earliest later observation (`live_ends`),
//! and what the client's kept points do not keep is left out.
//!
//! `tree_at` puts the one version of each path in force at the moment
//! (and of the base's ancestors) into a small index and asks it, so the
//! rules of which paths exist under which directories are the in-memory
//! index's own, and memory follows the answer.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use rewind_core::path::is_under;
use rewind_core::retention::{QueryPoint, live_ends};
use rewind_core::{RepoError, Timestamp, Version};

use super::format::{PathEntry, Record};
use super::run::{Run, open_all, usable_runs};
use crate::crypt::Crypt;
use crate::keep::KeepFile;
use crate::layout::{Discover, discover_listed, fill, list_packs_meta};
use crate::pack_name::PackName;
use crate::state::{Held, Shape, State, normalize, parent};
use crate::store::Listed;

/// The runs a reader uses, and the versions of the packs they do not
/// name.
pub(crate) struct VersionView {
    dir: PathBuf,
    runs: Vec<Run>,
    /// The files of every run in `DIR/vindex` when the view was opened,
    /// used or not: when they change, the view is opened again.
    run_files: BTreeSet<PathBuf>,
    /// The packs the runs in use name.
    covered: HashSet<PackName>,
    overlay: State,
    keep: HashMap<String, crate::state::Keeping>,
}

impl std::fmt::Debug for VersionView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionView")
            .field("dir", &self.dir)
            .field("runs", &self.runs.len())
            .finish()
    }
}

/// Where a path's versions are: a run's table entry, or the overlay.
#[derive(Clone, Copy)]
enum Source {
    Run(usize, PathEntry),
    Overlay,
}

/// A position in one source's versions of a path, and the record there.
struct Cursor {
    source: Source,
    pos: Option<u64>,
    rec: Option<Record>,
}

/// One version of a path, from a run or from the overlay.
struct Item<'a> {
    seq: u64,
    observed_at: Timestamp,
    shape: Shape,
    from: From<'a>,
}

enum From<'a> {
    Run(usize, Record),
    Overlay(&'a Held),
}

impl VersionView {
    /// The view of `dir` with `keep` applied; `None` when the repository
    /// has no usable run (then the whole index is loaded, as before).
    pub(crate) fn open(
        dir: &Path,
        crypt: &Crypt,
        keep: &KeepFile,
    ) -> Result<Option<VersionView>, RepoError> {
        if !super::applies(dir, crypt) {
            return Ok(None);
        }
        let runs = open_all(dir)?;
        if runs.is_empty() {
            return Ok(None);
        }
        let run_files = runs.iter().map(|r| r.path.clone()).collect();
        let present = list_packs_meta(dir)?;
        let (runs, covered, _) = usable_runs(runs, &present);
        if runs.is_empty() {
            return Ok(None);
        }
        let mut view = VersionView {
            dir: dir.to_path_buf(),
            runs,
            run_files,
            covered,
            overlay: State::default(),
            keep: HashMap::new(),
        };
        view.set_keep(keep);
        view.add_new_packs(crypt, keep, present)?;
        Ok(Some(view))
    }

    fn set_keep(&mut self, keep: &KeepFile) {
        self.keep = keep
            .clients
            .iter()
            .map(|(c, k)| (c.clone(), crate::state::Keeping::of(k)))
            .collect();
    }

    /// Read into the overlay the packs neither the runs nor the overlay
    /// hold yet.
    fn add_new_packs(
        &mut self,
        crypt: &Crypt,
        keep: &KeepFile,
        present: BTreeMap<PackName, Listed>,
    ) -> Result<(), RepoError> {
        let how = Discover {
            repair: false,
            warn_orphans: false,
            cache: None,
        };
        let mut known = self.covered.clone();
        known.extend(self.overlay.live_packs().map(|(_, p)| p.name));
        let new = present.into_iter().filter(|(n, _)| !known.contains(n));
        let mut packs = discover_listed(crypt, &self.dir, new, how)?;
        packs.sort_by_key(|p| (p.sealed_at, p.pack));
        for idx in packs {
            if let Some(idx) = fill(crypt, &self.dir, idx, how)? {
                let condemned = keep.condemned.contains_key(&idx.pack);
                self.overlay.add_pack_marked(idx, condemned);
            }
        }
        Ok(())
    }

    /// Follow what the repository holds now, as `LocalRepo::refresh` does:
    /// new packs join the overlay, pruned ones leave it, and retention is
    /// the file's now. `false` when the runs changed (new ones, merged,
    /// or one names a pack that is gone): then the caller opens a new view.
    pub(crate) fn refresh(&mut self, crypt: &Crypt, keep: &KeepFile) -> Result<bool, RepoError> {
        let files: BTreeSet<PathBuf> = match std::fs::read_dir(super::runs_dir(&self.dir)) {
            Ok(d) => d
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".vix"))
                .map(|e| e.path())
                .collect(),
            Err(_) => BTreeSet::new(),
        };
        if files != self.run_files {
            return Ok(false);
        }
        let present = list_packs_meta(&self.dir)?;
        if self.covered.iter().any(|p| !present.contains_key(p)) {
            return Ok(false);
        }
        let vanished: Vec<PackName> = self
            .overlay
            .live_packs()
            .map(|(_, p)| p.name)
            .filter(|n| !present.contains_key(n))
            .collect();
        self.add_new_packs(crypt, keep, present)?;
        if !vanished.is_empty() {
            self.overlay.remove_packs(&vanished);
        }
        self.set_keep(keep);
        Ok(true)
    }

    /// The versions of `path` from the runs at `places` and the overlay,
    /// in seq order, each once.
    fn merged(
        &self,
        client: &str,
        path: &[u8],
        places: &[(usize, PathEntry)],
    ) -> Result<Vec<Item<'_>>, RepoError> {
        let mut items = Vec::new();
        for (ri, e) in places {
            for r in self.runs[*ri].records(e)? {
                items.push(Item {
                    seq: r.seq,
                    observed_at: r.observed_at,
                    shape: r.shape,
                    from: From::Run(*ri, r),
                });
            }
        }
        for h in self.overlay.held_of(client, path) {
            items.push(Item {
                seq: h.seq,
                observed_at: h.observed_at,
                shape: h.shape,
                from: From::Overlay(h),
            });
        }
        if places.len() + usize::from(!self.overlay.held_of(client, path).is_empty()) > 1 {
            items.sort_by_key(|i| i.seq);
            items.dedup_by_key(|i| i.seq);
        }
        Ok(items)
    }

    /// Which of `items` (one path's, in seq order) retention keeps.
    fn kept(&self, client: &str, path: &[u8], items: &[Item<'_>]) -> Vec<bool> {
        let Some(keep) = self.keep.get(client) else {
            return vec![true; items.len()];
        };
        let times: Vec<Timestamp> = items.iter().map(|i| i.observed_at).collect();
        live_ends(&times)
            .into_iter()
            .enumerate()
            .map(|(k, end)| keep.keeps(path, times[k], end))
            .collect()
    }

    fn encoded(&self, item: &Item<'_>) -> Result<Box<[u8]>, RepoError> {
        match &item.from {
            // Checked here, so that what the answer index holds decodes.
            From::Run(ri, r) => Ok(self.runs[*ri].checked_entry(r)?.into_boxed_slice()),
            From::Overlay(h) => Ok(h.encoded().into()),
        }
    }

    /// Where `client`'s `path` is in each run.
    fn places(&self, client: &str, path: &[u8]) -> Result<Vec<(usize, PathEntry)>, RepoError> {
        let mut out = Vec::new();
        for (ri, run) in self.runs.iter().enumerate() {
            if let Some(e) = run.find(client, path)? {
                out.push((ri, e));
            }
        }
        Ok(out)
    }

    /// See `Repository::versions_of`.
    pub(crate) fn versions_of(&self, client: &str, path: &[u8]) -> Result<Vec<Version>, RepoError> {
        let places = self.places(client, path)?;
        let items = self.merged(client, path, &places)?;
        let kept = self.kept(client, path, &items);
        let mut out = Vec::new();
        for (item, k) in items.iter().zip(kept) {
            if !k {
                continue;
            }
            let h = Held::from_encoded(
                item.seq,
                item.observed_at,
                0,
                item.shape,
                self.encoded(item)?,
            );
            out.push(h.version(client, path));
        }
        Ok(out)
    }

    /// The version of `path` in force at `at` (tombstones included) among
    /// those retention keeps: the one of highest seq observed at or before
    /// `at` whose span retention keeps, found from each source's last
    /// record at or before `at` (a binary search in a run) and stepping
    /// back only past what retention dropped.
    fn in_force(
        &self,
        client: &str,
        path: &[u8],
        places: &[(usize, PathEntry)],
        at: Timestamp,
    ) -> Result<Option<Held>, RepoError> {
        let mem = self.overlay.held_of(client, path);
        let mut cursors: Vec<Cursor> = Vec::with_capacity(places.len() + 1);
        for (ri, e) in places {
            let run = &self.runs[*ri];
            let pos = run.last_by(e, at)?;
            let rec = pos.map(|p| run.record(e, p)).transpose()?;
            cursors.push(Cursor {
                source: Source::Run(*ri, *e),
                pos,
                rec,
            });
        }
        let mpos = mem.iter().rposition(|h| h.observed_at <= at);
        cursors.push(Cursor {
            source: Source::Overlay,
            pos: mpos.map(|p| p as u64),
            rec: None,
        });
        let keep = self.keep.get(client);
        loop {
            // The candidate: the highest seq under any cursor.
            let seq_of = |c: &Cursor| -> Option<u64> {
                match c.source {
                    Source::Run(..) => c.rec.map(|r| r.seq),
                    Source::Overlay => c.pos.map(|p| mem[p as usize].seq),
                }
            };
            let Some(best) = cursors.iter().filter_map(seq_of).max() else {
                return Ok(None);
            };
            let at_best = cursors
                .iter()
                .position(|c| seq_of(c) == Some(best))
                .expect("one cursor has it");
            let (observed, shape) = match cursors[at_best].source {
                Source::Run(..) => {
                    let r = cursors[at_best].rec.expect("a record under it");
                    (r.observed_at, r.shape)
                }
                Source::Overlay => {
                    let h = &mem[cursors[at_best].pos.expect("a version under it") as usize];
                    (h.observed_at, h.shape)
                }
            };
            let kept = match keep {
                None => true,
                Some(k) => {
                    let mut end: Option<Timestamp> = None;
                    for c in &cursors {
                        let e = match c.source {
                            Source::Run(ri, e) => self.runs[ri].end_after(&e, best)?,
                            Source::Overlay => mem
                                .iter()
                                .filter(|h| h.seq > best)
                                .map(|h| h.observed_at)
                                .min(),
                        };
                        end = match (end, e) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                    }
                    k.keeps(path, observed, end)
                }
            };
            if kept {
                let entry = match cursors[at_best].source {
                    Source::Run(ri, _) => {
                        let r = cursors[at_best].rec.expect("a record under it");
                        self.runs[ri].checked_entry(&r)?.into_boxed_slice()
                    }
                    Source::Overlay => mem[cursors[at_best].pos.expect("under it") as usize]
                        .encoded()
                        .into(),
                };
                return Ok(Some(Held::from_encoded(best, observed, 0, shape, entry)));
            }
            // Dropped by retention: every copy of it steps back to the
            // previous version observed at or before `at`.
            for c in cursors.iter_mut() {
                if seq_of(c) != Some(best) {
                    continue;
                }
                self.step_back(c, mem, at)?;
            }
        }
    }

    /// Move `c` to the previous record of its source observed at or
    /// before `at`.
    fn step_back(&self, c: &mut Cursor, mem: &[Held], at: Timestamp) -> Result<(), RepoError> {
        let mut pos = c.pos;
        loop {
            pos = match pos {
                Some(p) if p > 0 => Some(p - 1),
                _ => None,
            };
            let Some(p) = pos else {
                c.pos = None;
                c.rec = None;
                return Ok(());
            };
            match c.source {
                Source::Run(ri, e) => {
                    let r = self.runs[ri].record(&e, p)?;
                    if r.observed_at <= at {
                        c.pos = Some(p);
                        c.rec = Some(r);
                        return Ok(());
                    }
                }
                Source::Overlay => {
                    if mem[p as usize].observed_at <= at {
                        c.pos = Some(p);
                        return Ok(());
                    }
                }
            }
        }
    }

    /// See `Repository::query_point`.
    pub(crate) fn query_point(&self, client: &str, at: Timestamp) -> QueryPoint {
        match self.keep.get(client) {
            Some(k) => k.files.snap(at, &k.pins),
            None => QueryPoint::exact(at),
        }
    }

    /// See `Repository::tree_at`.
    pub(crate) fn tree_at(
        &self,
        client: &str,
        base: &[u8],
        at: Timestamp,
    ) -> Result<Vec<Version>, RepoError> {
        let at = if base.starts_with(b"/") {
            match self.query_point(client, at).used {
                Some(t) => t,
                None => return Ok(Vec::new()),
            }
        } else {
            at
        };
        let base = normalize(base);
        // Every path below the base, with where each run holds it.
        let mut paths: BTreeMap<Vec<u8>, Vec<(usize, PathEntry)>> = BTreeMap::new();
        for (ri, run) in self.runs.iter().enumerate() {
            for (p, e) in run.with_prefix(client, base)? {
                if is_under(&p, base) {
                    paths.entry(p).or_default().push((ri, e));
                }
            }
        }
        for (p, _) in self.overlay.held_with_prefix(client, base) {
            if is_under(p, base) {
                paths.entry(p.clone()).or_default();
            }
        }
        let mut answer = State::for_answer();
        let mut ancestors = HashSet::new();
        let mut a = parent(base);
        while let Some(p) = a {
            ancestors.insert(p.to_vec());
            a = parent(p);
        }
        for p in ancestors {
            let places = self.places(client, &p)?;
            if let Some(h) = self.in_force(client, &p, &places, at)? {
                answer.insert_held(client, &p, h);
            }
        }
        for (p, places) in paths {
            if let Some(h) = self.in_force(client, &p, &places, at)? {
                answer.insert_held(client, &p, h);
            }
        }
        Ok(answer.tree_at(client, base, at))
    }

    /// See `Repository::covers`.
    pub(crate) fn covers(&self, client: &str, path: &[u8]) -> Result<bool, RepoError> {
        let mut p = Some(normalize(path));
        while let Some(q) = p {
            if !self.overlay.held_of(client, q).is_empty() || !self.places(client, q)?.is_empty() {
                return Ok(true);
            }
            p = parent(q);
        }
        Ok(false)
    }
}
