//! The writer's upkeep of the runs: new runs for the packs no run names,
//! and merges of runs of about the same size, on a thread of its own so a
//! commit never waits for it.
//!
//! Sizes go in levels of factors of four ([`level`]); when four runs share
//! a level they are merged into one of the next, so each version is
//! rewritten about once per level (a history of ten million versions: five
//! levels above the first) and a reader searches at most three runs a
//! level.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rewind_core::RepoError;
use tracing::{debug, info, warn};

use super::format::Record;
use super::run::{Run, open_all, usable_runs};
use super::write::RunWriter;
use crate::crypt::Crypt;
use crate::layout::{Discover, discover, fill, list_packs_meta};
use crate::pack_name::PackName;
use crate::state::{encode_entry, shape_of};

/// Versions committed since the last upkeep before the next starts.
pub(crate) const RUN_MIN: u64 = 10_000;
/// The most versions a run made from packs holds (they are sorted in
/// memory, about 150 bytes each).
const RUN_MAX: u64 = 250_000;
/// Runs of one level merged at once.
pub(super) const FAN_IN: usize = 4;

/// The level of a run of `n` versions: 0 below `4 × RUN_MIN`, then one
/// more per factor of four.
fn level(n: u64) -> u32 {
    (n / RUN_MIN).max(1).ilog(4)
}

/// The writer's upkeep thread: at most one at a time, stopped and joined
/// when the writer goes.
#[derive(Debug, Default)]
pub(crate) struct Maintainer {
    cancel: Arc<AtomicBool>,
    handle: Mutex<Option<JoinHandle<()>>>,
    since: AtomicU64,
}

impl Maintainer {
    /// Count `n` committed versions; start an upkeep once enough came.
    pub(crate) fn committed(&self, dir: &Path, n: u64) {
        if self.since.fetch_add(n, Ordering::Relaxed) + n >= RUN_MIN {
            self.start(dir);
        }
    }

    /// Start an upkeep unless one is under way.
    pub(crate) fn start(&self, dir: &Path) {
        let mut h = self.handle.lock().expect("vindex upkeep poisoned");
        if h.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        if let Some(t) = h.take() {
            let _ = t.join();
        }
        self.since.store(0, Ordering::Relaxed);
        let dir = dir.to_path_buf();
        let cancel = self.cancel.clone();
        let spawned = std::thread::Builder::new()
            .name("rewind-vindex".into())
            .spawn(move || {
                if let Err(e) = maintain(&dir, &cancel, false) {
                    warn!(error = %e, repo = %dir.display(), "version index upkeep failed; queries read the index files instead");
                }
            });
        match spawned {
            Ok(t) => *h = Some(t),
            Err(e) => warn!(error = %e, "cannot start the version index upkeep"),
        }
    }

    /// Wait for the upkeep under way, if any.
    pub(crate) fn wait(&self) {
        let t = self.handle.lock().expect("vindex upkeep poisoned").take();
        if let Some(t) = t {
            let _ = t.join();
        }
    }
}

impl Drop for Maintainer {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.wait();
    }
}

fn cancelled(cancel: &AtomicBool) -> Result<(), RepoError> {
    if cancel.load(Ordering::Relaxed) {
        return Err(RepoError::Io {
            path: PathBuf::new(),
            source: std::io::Error::new(std::io::ErrorKind::Interrupted, "writer closing"),
        });
    }
    Ok(())
}

/// One upkeep of `dir`'s runs (a plain local repository; the caller is its
/// writer): delete temporary files and runs no reader uses, write runs for
/// the packs no run names (when at least [`RUN_MIN`] versions wait, or
/// any do and `all` is set), then merge.
pub(crate) fn maintain(dir: &Path, cancel: &AtomicBool, all: bool) -> Result<(), RepoError> {
    let rd = super::runs_dir(dir);
    if let Ok(entries) = std::fs::read_dir(&rd) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let runs = open_all(dir)?;
    // Runs that do not open (damaged, or of another format) are derived
    // data: written again from the packs below.
    if let Ok(entries) = std::fs::read_dir(&rd) {
        for e in entries.flatten() {
            let p = e.path();
            let vix = p.extension().is_some_and(|x| x == "vix");
            if vix && !runs.iter().any(|r| r.path == p) {
                warn!(run = %p.display(), "deleting a version index run that does not open");
                let _ = std::fs::remove_file(&p);
            }
        }
    }
    let present = list_packs_meta(dir)?;
    let (_, covered, unused) = usable_runs(runs, &present);
    for r in unused {
        debug!(run = %r.path.display(), "deleting a version index run no reader uses");
        let _ = std::fs::remove_file(&r.path);
    }
    index_new_packs(dir, &covered, cancel, all)?;
    merge_levels(dir, cancel)
}

/// Runs for the packs not in `covered`, oldest first, at most
/// [`RUN_MAX`] versions each.
fn index_new_packs(
    dir: &Path,
    covered: &HashSet<PackName>,
    cancel: &AtomicBool,
    all: bool,
) -> Result<(), RepoError> {
    let crypt = Crypt::plain();
    let how = Discover {
        repair: false,
        warn_orphans: false,
        cache: None,
    };
    let mut packs = discover(&crypt, dir, covered, how)?;
    let waiting: u64 = packs
        .iter()
        .flat_map(|p| &p.version_records)
        .map(|r| r.count as u64)
        .sum::<u64>()
        + packs.iter().map(|p| p.versions.len() as u64).sum::<u64>();
    if packs.is_empty() || (!all && waiting < RUN_MIN) {
        return Ok(());
    }
    packs.sort_by_key(|p| (p.sealed_at, p.pack));
    // (client, path, seq, time, shape, entry)
    type Row = (
        String,
        Vec<u8>,
        u64,
        rewind_core::Timestamp,
        crate::state::Shape,
        Vec<u8>,
    );
    let mut rows: Vec<Row> = Vec::new();
    let mut names = Vec::new();
    let flush = |rows: &mut Vec<Row>, names: &mut Vec<PackName>| -> Result<(), RepoError> {
        rows.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
        let mut w = RunWriter::new(dir)?;
        for (c, p, seq, t, shape, e) in rows.iter() {
            w.push(c, p, *seq, *t, *shape, e)?;
        }
        let n = w.len();
        let at = w.finish(std::mem::take(names))?;
        debug!(run = %at.display(), versions = n, "version index run written");
        rows.clear();
        Ok(())
    };
    for idx in packs {
        cancelled(cancel)?;
        let name = idx.pack;
        let Some(idx) = fill(&crypt, dir, idx, how)? else {
            continue;
        };
        for v in idx.versions {
            let shape = shape_of(&v.entry);
            let e = encode_entry(&v.entry);
            rows.push((v.client, v.path, v.seq, v.observed_at, shape, e));
        }
        names.push(name);
        if rows.len() as u64 >= RUN_MAX {
            flush(&mut rows, &mut names)?;
        }
    }
    if !names.is_empty() {
        flush(&mut rows, &mut names)?;
    }
    Ok(())
}

/// Merge runs four at a time while four share a level.
fn merge_levels(dir: &Path, cancel: &AtomicBool) -> Result<(), RepoError> {
    loop {
        cancelled(cancel)?;
        let present = list_packs_meta(dir)?;
        let (mut runs, _, _) = usable_runs(open_all(dir)?, &present);
        runs.sort_by_key(|r| r.versions());
        let mut group: Option<Vec<Run>> = None;
        let mut i = 0;
        while i < runs.len() {
            let l = level(runs[i].versions());
            let same = runs[i..]
                .iter()
                .take_while(|r| level(r.versions()) == l)
                .count();
            if same >= FAN_IN {
                group = Some(runs.drain(i..i + FAN_IN).collect());
                break;
            }
            i += same;
        }
        let Some(group) = group else {
            return Ok(());
        };
        let merged = merge(dir, &group, cancel)?;
        info!(
            run = %merged.display(),
            versions = group.iter().map(Run::versions).sum::<u64>(),
            "version index runs merged"
        );
        for r in group {
            let _ = std::fs::remove_file(&r.path);
        }
    }
}

/// Write one run holding everything `runs` hold.
fn merge(dir: &Path, runs: &[Run], cancel: &AtomicBool) -> Result<PathBuf, RepoError> {
    // Every (client, path) of every run, with where each run has it.
    let mut keys: std::collections::BTreeMap<(String, Vec<u8>), Vec<usize>> = Default::default();
    let mut places = Vec::new();
    for (ri, run) in runs.iter().enumerate() {
        for c in &run.footer.clients {
            for (p, e) in run.with_prefix(c, b"")? {
                keys.entry((c.clone(), p)).or_default().push(places.len());
                places.push((ri, e));
            }
        }
    }
    let mut w = RunWriter::new(dir)?;
    for (n, ((client, path), at)) in keys.into_iter().enumerate() {
        if n % 4096 == 0 {
            cancelled(cancel)?;
        }
        let mut recs: Vec<(usize, Record)> = Vec::new();
        for k in at {
            let (ri, e) = &places[k];
            recs.extend(runs[*ri].records(e)?.into_iter().map(|r| (*ri, r)));
        }
        recs.sort_by_key(|(_, r)| r.seq);
        for (ri, r) in recs {
            let e = runs[ri].entry_bytes(&r)?;
            w.push(&client, &path, r.seq, r.observed_at, r.shape, &e)?;
        }
    }
    let packs: Vec<PackName> = runs
        .iter()
        .flat_map(|r| r.packs().iter().copied())
        .collect();
    w.finish(packs)
}
