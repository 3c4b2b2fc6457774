//! What capture and the flusher share: the queue of work for the next
//! group commit, the durable seq, and the wake-ups between them.
//!
//! Invariants kept here:
//! - sequence numbers are given out under the writer lock in the order
//!   versions are queued, so `versions` is always in seq order and a
//!   commit that takes the queue makes everything below `next_seq`
//!   durable;
//! - a capture queues its chunks (for the hook, or in the spool) before
//!   its version, so taking versions and chunks under one lock gives every
//!   version taken its chunks in the same commit or an earlier one;
//! - work a failed commit took is put back in front of what was queued
//!   since, so order survives a retry;
//! - `durable` only grows, and only after sled has flushed the batch that
//!   makes it true;
//! - locks are taken in the order `flush_lock`, `writer`, `durable`;
//!   `wake_lock` and the spool's readers are never held with another.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use rewind_core::{EncodedChunk, Version};

use crate::error::Result;
use crate::hook::CommitHook;
use crate::spool::{Readers, Spool};
use crate::states::Overlay;
use crate::sync::lock;

/// Work queued for the next group commit (under `Inner::writer`).
pub(crate) struct Writer {
    pub(crate) next_seq: u64,
    pub(crate) versions: Vec<Version>,
    /// Pending last-known states, consulted before sled until the flusher
    /// applied them.
    pub(crate) overlay: Overlay,
    /// Chunks for the hook, made durable by the next flush (through the
    /// hook, or else in the spool) before the versions queued with them.
    pub(crate) direct: Vec<EncodedChunk>,
    /// Bytes queued since the last commit (for the hook, or spooled).
    pub(crate) queued_bytes: u64,
    pub(crate) spool: Spool,
}

/// The flusher's wake-up state, under `Inner::wake_lock`.
#[derive(Default)]
pub(crate) struct Wake {
    /// Work is queued (set by every append).
    pub(crate) pending: bool,
    /// The flusher waits for `pending`; appends must wake it.
    pub(crate) idle: bool,
}

pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) db: sled::Db,
    pub(crate) client: String,
    pub(crate) writer: Mutex<Writer>,
    pub(crate) durable: Mutex<u64>,
    pub(crate) durable_cv: Condvar,
    /// Bumped by `Journal::wake_waiters`: a waiter in
    /// `Journal::wait_durable_beyond` returns when it changes.
    pub(crate) waiters_woken: AtomicU64,
    pub(crate) wake: Condvar,
    /// Work is queued, and whether the flusher sleeps for want of it.
    pub(crate) wake_lock: Mutex<Wake>,
    /// Enough spool bytes are queued to commit without waiting for the
    /// group to gather.
    pub(crate) eager: AtomicBool,
    pub(crate) stop: AtomicBool,
    pub(crate) last_error: Mutex<Option<String>>,
    /// Serializes flushes (the flusher thread and explicit `flush` calls).
    pub(crate) flush_lock: Mutex<()>,
    /// Open spool segments for reading.
    pub(crate) readers: Readers,
    /// Where chunks go instead of the spool while it accepts, when set.
    pub(crate) hook: OnceLock<Arc<dyn CommitHook>>,
    /// Signalled when a flush takes the queued direct chunks.
    pub(crate) room: Condvar,
    /// The last commit was part of a stream (see `flush::BULK_FLUSH_INTERVAL`).
    pub(crate) bulk: AtomicBool,
    /// Every number reserved above `next_seq - 1` was reserved by this
    /// process (or skipped by it), so a clean close may give them back;
    /// false while they may be a crashed process's (see `seqs.rs`).
    pub(crate) reservation_ours: AtomicBool,
}

impl Writer {
    /// Write `chunk` into the spool now (its location is recorded by the
    /// next commit).
    pub(crate) fn spool_chunk(&mut self, chunk: &EncodedChunk) -> Result<()> {
        let high_water = self.next_seq - 1;
        self.queued_bytes += self.spool.write(chunk, high_water)?;
        Ok(())
    }
}

impl Inner {
    /// A journal's shared state around an open database and spool, with
    /// `next_seq` the next number to give out.
    pub(crate) fn new(
        dir: PathBuf,
        db: sled::Db,
        client: String,
        next_seq: u64,
        spool: Spool,
    ) -> Inner {
        Inner {
            dir,
            db,
            client,
            writer: Mutex::new(Writer {
                next_seq,
                versions: Vec::new(),
                overlay: Overlay::default(),
                direct: Vec::new(),
                queued_bytes: 0,
                spool,
            }),
            durable: Mutex::new(next_seq - 1),
            durable_cv: Condvar::new(),
            waiters_woken: AtomicU64::new(0),
            wake: Condvar::new(),
            wake_lock: Mutex::new(Wake::default()),
            eager: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            last_error: Mutex::new(None),
            flush_lock: Mutex::new(()),
            readers: Readers::default(),
            hook: OnceLock::new(),
            room: Condvar::new(),
            bulk: AtomicBool::new(false),
            reservation_ours: AtomicBool::new(false),
        }
    }

    /// Tell the flusher work is queued. It is woken only when it sleeps
    /// for want of work, or when `urgent` (a backlog, or stopping): while
    /// a group gathers, waking it for every append would cost a context
    /// switch per version (docs/decisions.md, "No wake-up per captured
    /// file").
    pub(crate) fn wake_flusher(&self, urgent: bool) {
        let mut w = lock(&self.wake_lock);
        w.pending = true;
        let sleeping = w.idle;
        drop(w);
        if urgent || sleeping {
            self.wake.notify_one();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.db.flush();
    }
}
