//! The last-known state of every protected path: what the first pass and
//! rescans compare the file system against.
//!
//! Invariants kept here:
//! - a state is recorded by the same group commit (sled batch) as the
//!   version that set it, so after a crash the states and the versions
//!   agree; a path whose version was lost has its older state and is
//!   captured again;
//! - until that commit, the state waits in the [`Overlay`], which every
//!   reader consults before sled, so capture sees its own queued versions;
//!   an overlay entry is dropped only once sled holds that same version's
//!   state (a newer queued version of the path keeps its entry);
//! - deletions and streams (dumps) record no state: a path without one is
//!   captured as new.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rewind_core::{ChunkRef, Entry, FileMeta, Version, XattrRef};
use serde::{Deserialize, Serialize};

use crate::error::{JournalError, Result};
use crate::keys::{STATE, decode, state_key};

/// The last-known state of a path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathState {
    /// Its metadata when last captured.
    pub meta: FileMeta,
    /// Its content chunks when last captured.
    pub chunks: Vec<ChunkRef>,
    /// Its extended attributes when last captured (values as chunks).
    pub xattrs: Vec<XattrRef>,
    /// The version that recorded it.
    pub seq: u64,
}

/// [`PathState`] borrowed, for encoding (postcard encodes both alike).
#[derive(Serialize)]
struct PathStateRef<'a> {
    meta: &'a FileMeta,
    chunks: &'a [ChunkRef],
    xattrs: &'a [XattrRef],
    seq: u64,
}

/// States of queued versions not yet in sled (None = deleted), by path,
/// with the seq that set them.
#[derive(Default)]
pub(crate) struct Overlay(HashMap<Vec<u8>, (u64, Option<PathState>)>);

impl Overlay {
    /// Version `v` (its seq assigned) is queued: its state is the path's
    /// last-known one from now on.
    pub(crate) fn record(&mut self, v: &Version) {
        let state = match &v.entry {
            Entry::Present {
                meta,
                chunks,
                xattrs,
            } => Some(PathState {
                meta: meta.clone(),
                chunks: chunks.clone(),
                xattrs: xattrs.clone(),
                seq: v.seq,
            }),
            // A stream (a dump) has no last-known state to compare with.
            Entry::Deleted | Entry::Stream { .. } => None,
        };
        self.0.insert(v.path.clone(), (v.seq, state));
    }

    /// The queued state of `path`: `Some(None)` when it is queued as gone.
    pub(crate) fn get(&self, path: &[u8]) -> Option<&Option<PathState>> {
        self.0.get(path).map(|(_, s)| s)
    }

    /// sled now holds the state version `seq` set for `path`.
    pub(crate) fn applied(&mut self, path: &[u8], seq: u64) {
        if self.0.get(path).map(|(s, _)| *s) == Some(seq) {
            self.0.remove(path);
            self.give_back_room();
        }
    }

    pub(crate) fn forget(&mut self, path: &[u8]) {
        self.0.remove(path);
        self.give_back_room();
    }

    /// A first pass queues a state for every file of the tree; once they
    /// are in sled the map is nearly empty, but a `HashMap` keeps its
    /// largest size (6.5 MiB after 20k files, docs/decisions.md "Agent
    /// memory (issue 19)"). Halving when under a quarter full keeps the cost
    /// amortized: each shrink follows at least as many removals as it moves.
    fn give_back_room(&mut self) {
        /// Below this many slots the spare room is not worth a rehash.
        const SMALL: usize = 1024;
        let cap = self.0.capacity();
        if cap > SMALL && self.0.len() < cap / 4 {
            self.0.shrink_to(cap / 2);
        }
    }

    /// The queued states at or below `base` (`None`: deleted), in path
    /// order.
    pub(crate) fn under(&self, base: &[u8]) -> BTreeMap<Vec<u8>, Option<PathState>> {
        self.0
            .iter()
            .filter(|(p, _)| rewind_core::path::is_under(p, base))
            .map(|(p, (_, s))| (p.clone(), s.clone()))
            .collect()
    }
}

/// Record in `batch` the state version `v` sets (or its absence).
pub(crate) fn put(batch: &mut sled::Batch, v: &Version) {
    let sk = state_key(&v.path);
    match &v.entry {
        Entry::Present {
            meta,
            chunks,
            xattrs,
        } => batch.insert(
            sk,
            postcard::to_stdvec(&PathStateRef {
                meta,
                chunks,
                xattrs,
                seq: v.seq,
            })
            .expect("serialize"),
        ),
        Entry::Deleted | Entry::Stream { .. } => batch.remove(sk),
    }
}

/// The state sled holds for `path`.
pub(crate) fn read(db: &sled::Db, dir: &Path, path: &[u8]) -> Result<Option<PathState>> {
    let k = state_key(path);
    match db.get(&k).map_err(|e| JournalError::db(dir, e))? {
        None => Ok(None),
        Some(v) => decode(&k, &v).map(Some),
    }
}

/// Visit the state of every path at or below `base`, in path order: sled's
/// states with `queued` (the overlay's at or below `base`, `None` =
/// deleted) laid over them. Only one decoded state is held at a time
/// besides `queued`, so a rescan of a million paths does not hold a
/// million states (docs/decisions.md "A million files (issue 19)").
pub(crate) fn for_each_under(
    db: &sled::Db,
    dir: &Path,
    base: &[u8],
    queued: BTreeMap<Vec<u8>, Option<PathState>>,
    mut f: impl FnMut(&[u8], &PathState),
) -> Result<()> {
    let mut queued = queued.into_iter().peekable();
    for item in db.scan_prefix(state_key(base)) {
        let (k, v) = item.map_err(|e| JournalError::db(dir, e))?;
        let path = &k[1..];
        if !rewind_core::path::is_under(path, base) {
            continue;
        }
        // Queued paths before this one.
        while let Some((q, _)) = queued.peek() {
            if q.as_slice() >= path {
                break;
            }
            if let Some((q, Some(st))) = queued.next() {
                f(&q, &st);
            }
        }
        match queued.peek() {
            Some((q, _)) if q.as_slice() == path => {
                if let Some((q, Some(st))) = queued.next() {
                    f(&q, &st);
                }
            }
            _ => f(path, &decode(&k, &v)?),
        }
    }
    for (q, st) in queued {
        if let Some(st) = st {
            f(&q, &st);
        }
    }
    Ok(())
}

/// Record states taken from elsewhere (the repository), durably.
pub(crate) fn import(db: &sled::Db, dir: &Path, states: Vec<(Vec<u8>, PathState)>) -> Result<()> {
    for part in states.chunks(10_000) {
        let mut batch = sled::Batch::default();
        for (path, st) in part {
            batch.insert(state_key(path), postcard::to_stdvec(st).expect("serialize"));
        }
        db.apply_batch(batch)
            .map_err(|e| JournalError::db(dir, e))?;
    }
    db.flush().map_err(|e| JournalError::db(dir, e))?;
    Ok(())
}

/// Read every state once, decoding none (see [`crate::Journal::settle_states`]).
pub(crate) fn read_all(db: &sled::Db) {
    for item in db.scan_prefix([STATE]) {
        if item.is_err() {
            return;
        }
    }
}

/// Whether any path has a state in sled (one key read: counting them all
/// took 1.6 s on a million paths).
pub(crate) fn any(db: &sled::Db) -> bool {
    db.scan_prefix([STATE]).next().is_some()
}
