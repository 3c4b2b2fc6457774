//! The group commit and the flusher thread.
//!
//! Each commit takes what capture queued, in this order of durability:
//! chunks queued for the group-commit hook are made durable through it
//! (or, if it refuses them, written to the spool); spool segments are
//! fsynced; then the versions, their last-known states, the chunk
//! locations and the counters go into sled in one atomic batch, which is
//! flushed; only then does the durable seq move.
//!
//! Invariants kept here:
//! - a version is never durable before the chunk bytes it introduced
//!   (hook first, spool fsync next, sled batch last);
//! - a commit that fails at any step puts everything it took back in
//!   front of the queue and is retried; nothing is acknowledged by it;
//! - the hook may commit versions (no log record, cursor moved past them)
//!   only when no logged version waits before them, and only after their
//!   sequence numbers are durably reserved (`seqs.rs`), so a restart
//!   never reuses one, even where the commit reaches the repository after
//!   the restart;
//! - no commit starts while the journal's filesystem is nearly full: sled
//!   cannot recover from a write that fails for lack of space.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rewind_core::{ChunkId, EncodedChunk, Timestamp, Version, failpoint};

use crate::error::{JournalError, Result};
use crate::hook::HookOutcome;
use crate::keys::{ChunkLoc, get_u64, meta_key, seq_key};
use crate::queue::Inner;
use crate::seqs;
use crate::spool::put_front;
use crate::states;
use crate::sync::lock;

/// How often the flusher commits queued versions. 50 ms keeps the
/// change-to-durable latency far under the 1.5 s target while one fsync pair
/// per tick costs well under 1% of a core when idle (it skips empty ticks).
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// The gathering window while a stream of captures goes on (the previous
/// commit carried at least [`BULK_VERSIONS`] versions): each commit seals a
/// pack in the embedded repository and writes a sled batch, so committing
/// a first pass about twice a second instead of twenty times cuts that overhead,
/// while single saves keep the 50 ms window.
const BULK_FLUSH_INTERVAL: Duration = Duration::from_millis(400);

/// Versions in one commit that mark a stream of captures.
const BULK_VERSIONS: usize = 200;

/// Free space the journal's filesystem must keep for a commit to start: at
/// most this, at least an eighth of the filesystem's size. sled cannot
/// recover from a write that fails for lack of space (it stays failed until
/// reopened), so the journal stops writing before that happens; capture
/// waits meanwhile and goes on when space is freed.
const JOURNAL_RESERVE: u64 = 32 << 20;

/// Refuse to start a commit when the journal's filesystem is (nearly) full
/// (see [`JOURNAL_RESERVE`]).
fn check_space(dir: &std::path::Path) -> Result<()> {
    let Ok(st) = rustix::fs::statvfs(dir) else {
        return Ok(());
    };
    let size = st.f_blocks.saturating_mul(st.f_frsize);
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    let reserve = JOURNAL_RESERVE.min(size / 8);
    if free < reserve {
        return Err(JournalError::Full {
            path: dir.to_path_buf(),
            free,
            needed: reserve,
        });
    }
    Ok(())
}

/// One group commit: spool bytes to disk, then versions, states and chunk
/// locations in one sled batch, then flush.
pub(crate) fn flush_once(inner: &Inner) -> Result<u64> {
    let _serial = lock(&inner.flush_lock);
    check_space(&inner.dir)?;
    // Versions and the chunks queued for the hook are taken together: a
    // capture queues its chunks before its version, so every version taken
    // here has its chunks in this batch or an earlier one.
    let (versions, direct, next_seq) = {
        let mut w = lock(&inner.writer);
        if w.versions.is_empty() && w.spool.is_committed() && w.direct.is_empty() {
            return Ok(*lock(&inner.durable));
        }
        let direct = std::mem::take(&mut w.direct);
        if !direct.is_empty() {
            w.queued_bytes = 0;
            inner.room.notify_all();
        }
        (std::mem::take(&mut w.versions), direct, w.next_seq)
    };
    inner
        .bulk
        .store(versions.len() >= BULK_VERSIONS, Ordering::Relaxed);
    // Put taken work back at the front of the queue after a failure.
    let requeue = |versions: Vec<Version>, direct: Vec<EncodedChunk>| {
        let mut w = lock(&inner.writer);
        put_front(&mut w.direct, direct);
        put_front(&mut w.versions, versions);
    };
    // The hook may commit the versions to the repository as well when no
    // logged version waits before them (the uploader has drained the log):
    // then they need no log record and no upload.
    let mut committed = false;
    // Chunks queued for a hook that refuses them, or that has stopped
    // accepting since they were queued, go to the spool.
    let mut spool_direct = true;
    if let Some(hook) = inner.hook.get().filter(|h| h.accepting()) {
        let log_drained = !versions.is_empty()
            && get_u64(&inner.db, "cursor", &inner.dir).ok() == Some(*lock(&inner.durable))
            && seqs::reserve(inner, next_seq - 1).is_ok();
        match hook.group_commit(&direct, &versions, log_drained) {
            HookOutcome::Refused => {}
            HookOutcome::Stored => spool_direct = false,
            HookOutcome::Committed => {
                // A hook that was not offered the versions committed none.
                committed = log_drained;
                spool_direct = false;
            }
        }
    }
    if spool_direct && !direct.is_empty() {
        let mut w = lock(&inner.writer);
        for c in &direct {
            if let Err(e) = w.spool_chunk(c) {
                drop(w);
                requeue(versions, direct);
                return Err(e);
            }
        }
    }
    let written = {
        let mut w = lock(&inner.writer);
        let written = match w.spool.take_written() {
            Ok(written) => written,
            Err(e) => {
                drop(w);
                requeue(versions, Vec::new());
                return Err(e);
            }
        };
        if w.direct.is_empty() {
            w.queued_bytes = 0;
        }
        written
    };
    let restore = |inner: &Inner,
                   versions: Vec<Version>,
                   chunks: Vec<(ChunkId, ChunkLoc)>,
                   sealed: Vec<(u64, Arc<File>)>| {
        let mut w = lock(&inner.writer);
        w.spool.put_back(chunks, sealed);
        put_front(&mut w.versions, versions);
    };
    if let Err(e) = written.sync(&inner.dir) {
        restore(inner, versions, written.chunks, written.sealed);
        return Err(e);
    }
    let mut batch = sled::Batch::default();
    written.record(&mut batch);
    let mut applied: Vec<(Vec<u8>, u64)> = Vec::with_capacity(versions.len());
    for v in &versions {
        if !committed {
            batch.insert(seq_key(v.seq), v.to_bytes());
        }
        states::put(&mut batch, v);
        applied.push((v.path.clone(), v.seq));
    }
    batch.insert(meta_key("next_seq"), &next_seq.to_be_bytes());
    if !versions.is_empty() {
        let now = Timestamp::now().0.to_be_bytes();
        batch.insert(meta_key("last_capture"), &now);
        if committed {
            // Everything up to next_seq - 1 is in the repository: the log
            // was drained before this batch and this batch is committed.
            batch.insert(meta_key("cursor"), &(next_seq - 1).to_be_bytes());
            batch.insert(meta_key("last_upload"), &now);
        }
    }
    if let Err(source) = failpoint::hit("journal.flush") {
        restore(inner, versions, written.chunks, Vec::new());
        return Err(JournalError::Io {
            path: inner.dir.join("db"),
            source,
        });
    }
    let res = inner
        .db
        .apply_batch(batch)
        .and_then(|_| inner.db.flush().map(|_| ()));
    if let Err(e) = res {
        restore(inner, versions, written.chunks, Vec::new());
        return Err(JournalError::db(&inner.dir, e));
    }
    // Versions are taken in seq order under the writer lock, so everything
    // below next_seq is now durable.
    let durable = next_seq - 1;
    {
        let mut w = lock(&inner.writer);
        for (path, seq) in applied {
            w.overlay.applied(&path, seq);
        }
    }
    let mut d = lock(&inner.durable);
    *d = (*d).max(durable);
    inner.durable_cv.notify_all();
    Ok(*d)
}

/// The flusher thread: sleep until work is queued, let the group gather,
/// commit; after a failure, say so once and retry.
pub(crate) fn flusher(inner: Arc<Inner>) {
    while !inner.stop.load(Ordering::Relaxed) {
        {
            // Sleep until a version or a burst of spool bytes arrives: an
            // idle agent does not wake up for nothing.
            let mut woke = lock(&inner.wake_lock);
            while !woke.pending && !inner.stop.load(Ordering::Relaxed) {
                woke.idle = true;
                woke = inner.wake.wait(woke).unwrap_or_else(|p| p.into_inner());
            }
            woke.idle = false;
            woke.pending = false;
        }
        {
            // Then let the group gather for one interval; only a large
            // spool backlog (or stopping) cuts it short, not every append.
            let window = if inner.bulk.load(Ordering::Relaxed) {
                BULK_FLUSH_INTERVAL
            } else {
                FLUSH_INTERVAL
            };
            let deadline = Instant::now() + window;
            let mut woke = lock(&inner.wake_lock);
            loop {
                if inner.eager.swap(false, Ordering::Relaxed) || inner.stop.load(Ordering::Relaxed)
                {
                    break;
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                woke = inner
                    .wake
                    .wait_timeout(woke, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            // Appends that arrived while gathering are in this group.
            woke.pending = false;
        }
        match flush_once(&inner) {
            Ok(_) => {
                let mut e = lock(&inner.last_error);
                if e.take().is_some() {
                    tracing::warn!("journal writes succeed again");
                }
            }
            Err(e) => {
                let msg = e.to_string();
                let mut last = lock(&inner.last_error);
                if last.as_deref() != Some(msg.as_str()) {
                    tracing::error!("journal commit failed (will retry): {msg}");
                }
                *last = Some(msg);
                drop(last);
                std::thread::sleep(Duration::from_millis(500));
                // Retry without waiting for new work.
                lock(&inner.wake_lock).pending = true;
            }
        }
    }
}
