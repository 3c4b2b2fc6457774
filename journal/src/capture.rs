//! The capture side: a [`CaptureGuard`] queues one path's new chunks, then
//! its version, for the next group commit.
//!
//! Invariants kept here:
//! - a capture's chunks are queued before its version, under the same
//!   writer lock the flusher takes them with (see `queue`);
//! - the spool segment that was current when a capture began is kept
//!   until the capture ends (appended or dropped), so chunks it spooled
//!   are never reclaimed before its version can refer to them;
//! - chunks held in memory for the hook stay under
//!   [`MAX_DIRECT_BACKLOG`]: a capture that would pass it waits for the
//!   flusher (which it wakes), so memory stays bounded when capture
//!   outruns the disk;
//! - a version's seq and client are assigned here, in queue order.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rewind_core::{ChunkId, EncodedChunk, Version};

use crate::error::Result;
use crate::queue::{Inner, Writer};
use crate::sync::lock;

/// Queued spool bytes that make the flusher commit before its tick, so a
/// first pass does not pile up unacknowledged work. Also about the size of
/// a first pass's packs: 8 MiB makes packs of about 15 MiB, near restic's
/// 16 (docs/decisions.md, "A first pass's memory").
const EAGER_FLUSH_BYTES: u64 = 8 << 20;

/// Chunks held in memory for the hook before captures wait for the
/// flusher: bounds the agent's memory when capture outruns the disk. 16
/// MiB, with [`EAGER_FLUSH_BYTES`] at 8, took a first pass's peak RSS from
/// 160-186 to 98-106 MiB at the same speed (64 and 32 before).
const MAX_DIRECT_BACKLOG: u64 = 16 << 20;

/// An open capture. Spool its new chunks with [`CaptureGuard::spool`], then
/// [`CaptureGuard::append`] the version; dropping the guard without appending
/// abandons the capture (its spooled chunks become unreferenced garbage that
/// segment reclamation removes).
pub struct CaptureGuard {
    inner: Arc<Inner>,
    start_segment: u64,
    done: bool,
}

/// Start capturing one path.
pub(crate) fn begin(inner: &Arc<Inner>) -> CaptureGuard {
    let start_segment = lock(&inner.writer).spool.begin_capture();
    CaptureGuard {
        inner: inner.clone(),
        start_segment,
        done: false,
    }
}

/// Wait, with `w` held, while `limit` bytes or more of chunks are queued,
/// asking the flusher to commit them now.
fn wait_for_room<'a>(
    inner: &'a Inner,
    mut w: std::sync::MutexGuard<'a, Writer>,
    limit: u64,
) -> std::sync::MutexGuard<'a, Writer> {
    while w.queued_bytes >= limit && !inner.stop.load(Ordering::Relaxed) {
        inner.eager.store(true, Ordering::Relaxed);
        inner.wake_flusher(true);
        w = inner
            .room
            .wait_timeout(w, Duration::from_millis(100))
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    w
}

impl CaptureGuard {
    /// Queue a chunk the repository may not have: for the group-commit
    /// hook while it accepts, into the spool otherwise.
    pub fn spool(&self, chunk: EncodedChunk) -> Result<()> {
        let inner = &self.inner;
        let hook = inner.hook.get().filter(|h| h.accepting());
        // Before the queue's lock: sending ahead copies the chunk.
        if let Some(h) = hook {
            h.send_ahead(&chunk);
        }
        let mut w = lock(&inner.writer);
        if hook.is_some() {
            w = wait_for_room(inner, w, MAX_DIRECT_BACKLOG);
            w.queued_bytes += chunk.data.len() as u64;
            w.direct.push(chunk);
        } else {
            w.spool_chunk(&chunk)?;
        }
        let eager = w.queued_bytes >= EAGER_FLUSH_BYTES;
        drop(w);
        if eager {
            inner.eager.store(true, Ordering::Relaxed);
            inner.wake_flusher(true);
        }
        Ok(())
    }

    /// True when the repository already holds `id` durably (only known
    /// with a group-commit hook; `false` otherwise), so the chunk need not
    /// be queued.
    pub fn is_stored(&self, id: &ChunkId) -> bool {
        self.inner.hook.get().is_some_and(|h| h.has_chunk(id))
    }

    /// Wait while `limit` bytes or more of chunks are queued for the hook,
    /// asking the flusher to commit them now. A source that streams more
    /// than the journal's own backlog bound (16 MiB) in one
    /// capture (a database dump) calls this before each chunk to keep its
    /// memory lower; with no hook accepting (chunks go to the spool on
    /// disk) it returns at once.
    pub fn wait_for_room(&self, limit: u64) {
        let inner = &self.inner;
        if !inner.hook.get().is_some_and(|h| h.accepting()) {
            return;
        }
        drop(wait_for_room(inner, lock(&inner.writer), limit));
    }

    /// Queue the version (its `seq` and `client` are assigned here); it is
    /// acknowledged once [`Journal::durable_seq`](crate::Journal::durable_seq)
    /// reaches the returned seq.
    pub fn append(self, v: Version) -> u64 {
        self.append_all(vec![v])[0]
    }

    /// Queue several versions that are one state on disk (a group: SQLite's
    /// database with its `-wal` or `-journal`): under one lock, so they get
    /// consecutive seqs and the flusher takes all of them into one group
    /// commit, or none.
    pub fn append_all(mut self, vs: Vec<Version>) -> Vec<u64> {
        let inner = &self.inner;
        let mut w = lock(&inner.writer);
        let mut seqs = Vec::with_capacity(vs.len());
        for mut v in vs {
            let seq = w.next_seq;
            w.next_seq += 1;
            v.seq = seq;
            v.client = inner.client.clone();
            w.spool.pin(self.start_segment, seq);
            w.overlay.record(&v);
            w.versions.push(v);
            seqs.push(seq);
        }
        drop(w);
        inner.wake_flusher(false);
        self.done = true;
        self.end();
        seqs
    }

    fn end(&self) {
        lock(&self.inner.writer)
            .spool
            .end_capture(self.start_segment);
    }
}

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        if !self.done {
            self.end();
        }
    }
}
