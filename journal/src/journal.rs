//! The [`Journal`] handle: opening and closing, what the uploader reads
//! and moves (durable versions, spooled chunks, the cursor), sequence
//! numbers across restarts, and the counters for `status`.
//!
//! Invariants kept here:
//! - the cursor only moves forward, and only when the caller says the
//!   repository holds every version up to it durably; those versions leave
//!   the log in the same sled batch;
//! - the uploader is given only durable versions, in seq order;
//! - a new journal never gives out a seq the repository may already hold
//!   for this client, or may receive later from a request sent before a
//!   crash ([`Journal::skip_to`], [`Journal::skip_reserved`]);
//! - [`Journal::close`] commits what is queued before the flusher stops.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rewind_core::{ChunkId, EncodedChunk, Timestamp, Version, failpoint};
use serde::{Deserialize, Serialize};

use crate::capture::{self, CaptureGuard};
use crate::error::{JournalError, Result};
use crate::flush::{flush_once, flusher};
use crate::hook::CommitHook;
use crate::keys::{VERSION, decode, get_u64, meta_key, seq_key, seq_of, state_key};
use crate::queue::Inner;
use crate::seqs;
use crate::spool::Spool;
use crate::states::{self, PathState};
use crate::sync::lock;

/// The journal's side of the agent's health ([`Journal::upload_lag`]).
#[derive(Clone, Debug, Default)]
pub struct UploadLag {
    /// The last flush error, if the last flush failed.
    pub last_error: Option<String>,
    /// When the oldest version not yet in the repository was observed.
    pub oldest_waiting: Option<Timestamp>,
}

/// Counters for `status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JournalStats {
    /// Client name versions are recorded under.
    pub client: String,
    /// Protected roots.
    pub roots: Vec<PathBuf>,
    /// Highest durable sequence number.
    pub durable_seq: u64,
    /// Highest sequence number the repository holds.
    pub cursor: u64,
    /// Versions captured but not yet in the repository.
    pub versions_waiting: u64,
    /// Bytes of spool files (chunk data waiting, plus not yet reclaimed).
    pub spool_bytes: u64,
    /// Time of the last durable capture.
    pub last_capture: Option<Timestamp>,
    /// Time the repository last confirmed a batch.
    pub last_upload: Option<Timestamp>,
    /// The last flush error, if the last flush failed.
    pub last_error: Option<String>,
    /// When the oldest version not yet in the repository was observed
    /// (its age is the upload lag).
    #[serde(default)]
    pub oldest_waiting: Option<Timestamp>,
}

/// The journal. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
    flusher: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Journal {
    /// Open (or create) the journal in `dir`, recording versions under
    /// `client` (kept from the first open if the journal already exists).
    pub fn open(dir: &Path, client: &str) -> Result<Journal> {
        let dbdir = dir.join("db");
        let db_err = |source| JournalError::Db {
            path: dbdir.clone(),
            source,
        };
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| JournalError::Io { path, source }
        };
        rewind_core::private::create_dir_all(&dir.join("spool"))
            .map_err(io_err(&dir.join("spool")))?;
        // sled creates its files with the process umask: its directory is
        // made private first, older journals are tightened, and what sled
        // created at open is made private after it (issue 21).
        rewind_core::private::create_dir_all(&dbdir).map_err(io_err(&dbdir))?;
        rewind_core::private::tighten_if_loose(dir, "journal");
        let db = sled::Config::new()
            .path(&dbdir)
            .flush_every_ms(None)
            .cache_capacity(64 << 20)
            .open()
            .map_err(db_err)?;
        rewind_core::private::tighten(&dbdir).map_err(io_err(&dbdir))?;
        let client = match db.get(meta_key("client")).map_err(db_err)? {
            Some(v) => String::from_utf8_lossy(&v).into_owned(),
            None => {
                db.insert(meta_key("client"), client.as_bytes())
                    .map_err(db_err)?;
                db.flush().map_err(db_err)?;
                client.to_string()
            }
        };
        let mut next_seq = get_u64(&db, "next_seq", &dbdir)?.max(1);
        if let Some((k, _)) = db
            .scan_prefix([VERSION])
            .last()
            .transpose()
            .map_err(db_err)?
        {
            next_seq = next_seq.max(seq_of(&k)? + 1);
        }
        // Every segment that survived is needed until the cursor passes
        // every version now in the journal.
        let spool = Spool::open(dir, next_seq - 1)?;
        let inner = Arc::new(Inner::new(dir.to_path_buf(), db, client, next_seq, spool));
        let j = Journal {
            inner: inner.clone(),
            flusher: Arc::new(Mutex::new(None)),
        };
        // Reclaim what a previous run could not.
        j.reclaim_segments()?;
        let handle = std::thread::Builder::new()
            .name("journal-flush".into())
            .spawn(move || flusher(inner))
            .map_err(io_err(dir))?;
        *lock(&j.flusher) = Some(handle);
        Ok(j)
    }

    /// The client name versions are recorded under.
    pub fn client(&self) -> &str {
        &self.inner.client
    }

    /// Where the journal lives.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Start capturing one path: chunks spooled through the guard stay
    /// reclaimable only after the guard is appended or dropped.
    pub fn begin_capture(&self) -> CaptureGuard {
        capture::begin(&self.inner)
    }

    /// Offer every group commit to `hook` from now on: while it accepts,
    /// capture queues chunks for it instead of spooling them, and each
    /// commit hands them over (with the versions, when the log is drained)
    /// before it records the versions that refer to them. What the hook
    /// refuses goes to the spool in the same commit, so capture goes on.
    /// Set once; later calls are ignored.
    pub fn set_commit_hook(&self, hook: Arc<dyn CommitHook>) {
        let _ = self.inner.hook.set(hook);
    }

    /// Commit everything queued now and return the durable seq.
    pub fn flush(&self) -> Result<u64> {
        flush_once(&self.inner)
    }

    /// The sequence number the next version will get: every version
    /// appended from now on has at least this.
    pub fn next_seq(&self) -> u64 {
        lock(&self.inner.writer).next_seq
    }

    /// Read every last-known state once, decoding none. After many new
    /// states were written (a first pass), this lets the process give back
    /// most of the memory their writing left in sled: an agent after a
    /// first pass of 20,000 new files settled at 5.3 KiB a file without it,
    /// 1.7–2.3 KiB with it (`tests/scale.rs`; how sled holds that memory
    /// was not traced). One walk of the states: about 1.6 s at a million
    /// paths.
    pub fn settle_states(&self) {
        states::read_all(&self.inner.db);
    }

    /// Whether the journal holds the last-known state of any path.
    pub fn knows_any_path(&self) -> bool {
        states::any(&self.inner.db)
    }

    /// Highest sequence number that is durable.
    pub fn durable_seq(&self) -> u64 {
        *lock(&self.inner.durable)
    }

    /// Wait until `durable_seq() > seq`, or `timeout`, or a call of
    /// [`wake_waiters`](Self::wake_waiters); returns the durable seq.
    pub fn wait_durable_beyond(&self, seq: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut d = lock(&self.inner.durable);
        let woken = self.inner.waiters_woken.load(Ordering::Relaxed);
        while *d <= seq
            && !self.inner.stop.load(Ordering::Relaxed)
            && self.inner.waiters_woken.load(Ordering::Relaxed) == woken
        {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            d = self
                .inner
                .durable_cv
                .wait_timeout(d, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *d
    }

    /// The last-known state of `path`, including states not yet flushed.
    pub fn last_known(&self, path: &[u8]) -> Result<Option<PathState>> {
        if let Some(s) = lock(&self.inner.writer).overlay.get(path) {
            return Ok(s.clone());
        }
        states::read(&self.inner.db, &self.inner.dir, path)
    }

    /// Every path at or below `base` with a last-known state.
    pub fn known_under(&self, base: &[u8]) -> Result<Vec<(Vec<u8>, PathState)>> {
        let mut out = Vec::new();
        self.for_each_known_under(base, |p, st| out.push((p.to_vec(), st.clone())))?;
        Ok(out)
    }

    /// [`Journal::known_under`] one path at a time, in path order, without
    /// holding them all: `f` sees each path at or below `base` with its
    /// last-known state. States queued while this runs may or may not be
    /// seen.
    pub fn for_each_known_under(
        &self,
        base: &[u8],
        f: impl FnMut(&[u8], &PathState),
    ) -> Result<()> {
        let queued = lock(&self.inner.writer).overlay.under(base);
        states::for_each_under(&self.inner.db, &self.inner.dir, base, queued, f)
    }

    /// Record last-known states taken from the repository (the newest
    /// version of each path), for a journal rebuilt next to an existing
    /// repository: the first pass then captures only what differs from
    /// them instead of everything. Durable when this returns.
    pub fn import_states(&self, states: Vec<(Vec<u8>, PathState)>) -> Result<()> {
        states::import(&self.inner.db, &self.inner.dir, states)
    }

    /// Forget the last-known state of `path` (so the next pass captures it
    /// again), for instance when its chunks turned out to be lost.
    pub fn forget(&self, path: &[u8]) -> Result<()> {
        lock(&self.inner.writer).overlay.forget(path);
        self.inner
            .db
            .remove(state_key(path))
            .map_err(|source| self.db_err(source))?;
        Ok(())
    }

    /// Wait until no capture is open (each one that began before this call
    /// has appended its versions or was abandoned), at most `timeout`:
    /// false when captures never paused that long. A prune asks this so
    /// that every chunk a capture relied on is named by a queued version.
    pub fn wait_captures_idle(&self, timeout: Duration) -> bool {
        let until = std::time::Instant::now() + timeout;
        loop {
            if lock(&self.inner.writer).spool.inflight() == 0 {
                return true;
            }
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The chunks the versions not yet in the repository name: those
    /// queued are committed first, then the log from the cursor on is read.
    pub fn pending_chunks(&self) -> Result<Vec<ChunkId>> {
        self.flush()?;
        let mut out = Vec::new();
        let mut after = self.cursor()?;
        loop {
            let vs = self.versions_after(after, 4096)?;
            let Some(last) = vs.last() else {
                return Ok(out);
            };
            after = last.seq;
            for v in &vs {
                out.extend(v.chunk_refs().map(|c| c.id));
            }
        }
    }

    /// Durable versions with seq in `(after, durable_seq]`, at most `max`.
    pub fn versions_after(&self, after: u64, max: usize) -> Result<Vec<Version>> {
        let durable = self.durable_seq();
        let mut out = Vec::new();
        if after >= durable {
            return Ok(out);
        }
        for item in self.inner.db.range(seq_key(after + 1)..=seq_key(durable)) {
            let (k, v) = item.map_err(|source| self.db_err(source))?;
            let ver: Version = Version::from_bytes(&v).map_err(|e| JournalError::Corrupt {
                key: format!("version {:?}", &k[1..]),
                reason: e.to_string(),
            })?;
            out.push(ver);
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// A spooled chunk, if the spool still has it.
    pub fn read_spooled(&self, id: &ChunkId) -> Result<Option<EncodedChunk>> {
        self.inner.readers.read(&self.inner.db, &self.inner.dir, id)
    }

    /// The repository durably holds every version up to `seq`: move the
    /// cursor, drop those versions from the log and reclaim spool segments.
    pub fn advance_cursor(&self, seq: u64) -> Result<()> {
        let cursor = self.cursor()?;
        if seq <= cursor {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for item in self.inner.db.range(seq_key(cursor + 1)..=seq_key(seq)) {
            let (k, _) = item.map_err(|source| self.db_err(source))?;
            batch.remove(k);
        }
        batch.insert(meta_key("cursor"), &seq.to_be_bytes());
        batch.insert(meta_key("last_upload"), &Timestamp::now().0.to_be_bytes());
        failpoint::hit("cursor.advance").map_err(|source| JournalError::Io {
            path: self.inner.dir.join("db"),
            source,
        })?;
        self.inner
            .db
            .apply_batch(batch)
            .map_err(|source| self.db_err(source))?;
        self.inner
            .db
            .flush()
            .map_err(|source| self.db_err(source))?;
        self.reclaim_segments()
    }

    /// Delete spool segments nothing can refer to any more.
    fn reclaim_segments(&self) -> Result<()> {
        let cursor = self.cursor()?;
        let dead = {
            let mut w = lock(&self.inner.writer);
            let high_water = w.next_seq - 1;
            // Fully drained and idle: the current segment is sealed too
            // so its space comes back.
            let drained = w.versions.is_empty() && high_water <= cursor;
            w.spool.take_dead(cursor, drained, high_water)?
        };
        self.inner
            .readers
            .delete(&self.inner.db, &self.inner.dir, dead)
    }

    /// Make sure new versions get sequence numbers above `seq` (the highest
    /// the repository already holds for this client), so a journal that
    /// starts afresh next to an existing repository never reuses a number
    /// the repository would take for a re-sent duplicate. Call before
    /// capturing.
    pub fn skip_to(&self, seq: u64) -> Result<()> {
        let mut w = lock(&self.inner.writer);
        if w.next_seq > seq {
            return Ok(());
        }
        w.next_seq = seq + 1;
        let mut batch = sled::Batch::default();
        batch.insert(meta_key("next_seq"), &(seq + 1).to_be_bytes());
        if self.cursor()? < seq {
            batch.insert(meta_key("cursor"), &seq.to_be_bytes());
        }
        self.inner
            .db
            .apply_batch(batch)
            .and_then(|_| self.inner.db.flush().map(|_| ()))
            .map_err(|source| self.db_err(source))?;
        drop(w);
        let mut d = lock(&self.inner.durable);
        *d = (*d).max(seq);
        Ok(())
    }

    /// Make new versions get numbers above every number this journal may
    /// have handed to the commit hook (the reservation), so none is reused
    /// whatever reaches the repository later. Call before capturing, when
    /// the repository could not be asked for its highest seq, and at every
    /// start against a repository a request may reach after its sender
    /// died (an object store, a server): there the numbers the repository
    /// holds now say nothing of a commit still on its way. After a clean
    /// close nothing is skipped ([`Journal::close`] gives the reservation
    /// back); after a crash the numbers up to the reservation stay unused,
    /// a gap that `status` does not count as waiting.
    pub fn skip_reserved(&self) -> Result<()> {
        seqs::skip_reserved(&self.inner)
    }

    /// Highest seq the repository holds.
    pub fn cursor(&self) -> Result<u64> {
        get_u64(&self.inner.db, "cursor", &self.inner.dir)
    }

    /// Record the protected roots (for `status`).
    pub fn set_roots(&self, roots: &[PathBuf]) -> Result<()> {
        let v: Vec<Vec<u8>> = roots
            .iter()
            .map(|r| rewind_core::path::to_bytes(r).to_vec())
            .collect();
        self.inner
            .db
            .insert(
                meta_key("roots"),
                postcard::to_stdvec(&v).expect("serialize"),
            )
            .map_err(|source| self.db_err(source))?;
        Ok(())
    }

    /// Remember the small-file dictionary chunk this client compresses
    /// with, so the next run goes on with it (made durable by the next
    /// group commit; lost, the next run makes a new one).
    pub fn set_dictionary(&self, id: &ChunkId) -> Result<()> {
        self.inner
            .db
            .insert(meta_key("dictionary"), &id.0)
            .map_err(|source| self.db_err(source))?;
        Ok(())
    }

    /// The dictionary recorded by [`Journal::set_dictionary`].
    pub fn dictionary(&self) -> Result<Option<ChunkId>> {
        Ok(self
            .db_get(&meta_key("dictionary"))?
            .and_then(|v| <[u8; 32]>::try_from(v.as_ref()).ok())
            .map(ChunkId))
    }

    /// What the agent's health check reads every few seconds: the last
    /// flush error, and when the oldest version not yet in the repository
    /// was observed. One key read (the cursor), and one more while
    /// versions wait: [`Journal::stats`] reads five, which at a million
    /// paths miss sled's cache (docs/decisions.md "A million files").
    pub fn upload_lag(&self) -> Result<UploadLag> {
        let durable = self.durable_seq();
        let cursor = self.cursor()?;
        Ok(UploadLag {
            last_error: lock(&self.inner.last_error).clone(),
            oldest_waiting: self.oldest_after(cursor, durable)?,
        })
    }

    /// When the first version after `cursor` was observed, if any is
    /// durable.
    fn oldest_after(&self, cursor: u64, durable: u64) -> Result<Option<Timestamp>> {
        Ok(if durable > cursor {
            self.versions_after(cursor, 1)?
                .first()
                .map(|v| v.observed_at)
        } else {
            None
        })
    }

    /// Counters for `status`.
    pub fn stats(&self) -> Result<JournalStats> {
        let ts = |name: &str| -> Result<Option<Timestamp>> {
            Ok(self
                .db_get(&meta_key(name))?
                .and_then(|v| v.as_ref().try_into().ok())
                .map(|b: [u8; 8]| Timestamp(i64::from_be_bytes(b))))
        };
        let roots: Vec<Vec<u8>> = match self.db_get(&meta_key("roots"))? {
            Some(v) => decode(&meta_key("roots"), &v)?,
            None => Vec::new(),
        };
        let durable = self.durable_seq();
        let cursor = self.cursor()?;
        let spool_bytes = lock(&self.inner.writer).spool.bytes();
        Ok(JournalStats {
            client: self.inner.client.clone(),
            roots: roots
                .iter()
                .map(|r| rewind_core::path::from_bytes(r))
                .collect(),
            durable_seq: durable,
            cursor,
            versions_waiting: durable
                .saturating_sub(cursor)
                .saturating_sub(seqs::skipped_between(&self.inner, cursor, durable)?),
            spool_bytes,
            last_capture: ts("last_capture")?,
            last_upload: ts("last_upload")?,
            last_error: lock(&self.inner.last_error).clone(),
            oldest_waiting: self.oldest_after(cursor, durable)?,
        })
    }

    /// Make every [`wait_durable_beyond`](Self::wait_durable_beyond) in
    /// progress return now (a thread that is asked to stop should not wait
    /// out its timeout).
    pub fn wake_waiters(&self) {
        // Under the lock the waiters check the count with, so none misses it.
        let _d = lock(&self.inner.durable);
        self.inner.waiters_woken.fetch_add(1, Ordering::Relaxed);
        self.inner.durable_cv.notify_all();
    }

    /// Flush what is queued and stop the flusher thread; with everything
    /// committed, give back the sequence numbers this process reserved
    /// beyond the last one given out, so the next start skips none.
    pub fn close(&self) -> Result<()> {
        let r = self.flush();
        self.inner.stop.store(true, Ordering::Relaxed);
        self.inner.wake_flusher(true);
        self.inner.durable_cv.notify_all();
        if let Some(h) = lock(&self.flusher).take() {
            let _ = h.join();
        }
        r?;
        seqs::release(&self.inner)
    }

    fn db_get(&self, k: &[u8]) -> Result<Option<sled::IVec>> {
        self.inner.db.get(k).map_err(|source| self.db_err(source))
    }

    fn db_err(&self, source: sled::Error) -> JournalError {
        JournalError::db(&self.inner.dir, source)
    }
}

#[cfg(test)]
mod tests;
