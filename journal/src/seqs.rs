//! Sequence numbers across restarts: the reservation made before the
//! hook may commit versions, skipping past the repository's numbers or
//! past the reservation at a start, giving the reservation back at a
//! clean close, and the numbers skipped, which `status` must not count as
//! waiting (docs/decisions.md, "Late requests (issue 20)").
//!
//! Invariants kept here:
//! - every number the hook may be handed is at or below `reserved_seq`,
//!   durably, before it is handed over;
//! - `reserved_seq` is lowered only at a clean close, under the flush
//!   lock, with nothing queued, and only by a process that reserved (or
//!   skipped) the numbers it gives back: every number it handed over
//!   belongs to a version the journal records (in the log or behind the
//!   cursor), so no number above `next_seq - 1` can reach a repository
//!   later. A process that only read the journal (`status` after a crash)
//!   gives back nothing: those numbers may be the crashed one's;
//! - a skip never moves the cursor past a version in the log: with the
//!   log drained the cursor jumps over the skipped numbers, otherwise they
//!   are remembered (`skipped`) until the cursor passes them.

use std::sync::atomic::Ordering;

use crate::error::{JournalError, Result};
use crate::keys::{decode, get_u64, meta_key};
use crate::queue::Inner;
use crate::sync::lock;

/// Sequence numbers reserved at a time before versions are committed
/// through the hook: one sled flush per this many numbers rather than one
/// per commit. A restart after a crash, against a repository whose
/// requests may land late, skips what is left of it (see
/// [`skip_reserved`]): a gap in the numbers, never a reuse. 100,000 keeps
/// the flush rare in a first pass of a large tree (200 and more versions a
/// commit) and costs nothing but unused numbers of a 64-bit counter.
pub(crate) const SEQ_RESERVE: u64 = 100_000;

/// Ranges of numbers no version has (inclusive), above the cursor when
/// they were skipped: a new key, so journals written before it read as
/// none.
const SKIPPED: &str = "skipped";

fn db_err(inner: &Inner) -> impl Fn(sled::Error) -> JournalError + '_ {
    move |source| JournalError::db(&inner.dir, source)
}

/// Make sure sequence numbers up to `last` are durably reserved before
/// versions up to it are committed through the hook.
pub(crate) fn reserve(inner: &Inner, last: u64) -> Result<()> {
    if get_u64(&inner.db, "reserved_seq", &inner.dir)? >= last {
        return Ok(());
    }
    inner
        .db
        .insert(
            meta_key("reserved_seq"),
            &(last + SEQ_RESERVE).to_be_bytes(),
        )
        .and_then(|_| inner.db.flush().map(|_| ()))
        .map_err(db_err(inner))?;
    // What an earlier process reserved lies below `last`, numbers this
    // one has given out.
    inner.reservation_ours.store(true, Ordering::SeqCst);
    Ok(())
}

/// Give back the numbers reserved beyond the last one given out, when
/// nothing is queued: called at a clean close, after the last commit, so
/// the next start skips nothing. Safe because every commit that handed
/// numbers to the hook has ended (the flush lock is held) and each of its
/// versions is recorded with its number, committed or in the log.
pub(crate) fn release(inner: &Inner) -> Result<()> {
    if !inner.reservation_ours.load(Ordering::SeqCst) {
        return Ok(());
    }
    let _serial = lock(&inner.flush_lock);
    let w = lock(&inner.writer);
    if !w.versions.is_empty() || !w.direct.is_empty() {
        // A commit failed: its numbers may still reach the repository.
        return Ok(());
    }
    let last = w.next_seq - 1;
    if get_u64(&inner.db, "reserved_seq", &inner.dir)? <= last {
        return Ok(());
    }
    inner
        .db
        .insert(meta_key("reserved_seq"), &last.to_be_bytes())
        .and_then(|_| inner.db.flush().map(|_| ()))
        .map_err(db_err(inner))
}

/// The ranges of skipped numbers recorded so far.
fn skipped(inner: &Inner) -> Result<Vec<(u64, u64)>> {
    let k = meta_key(SKIPPED);
    match inner.db.get(&k).map_err(db_err(inner))? {
        Some(v) => decode(&k, &v),
        None => Ok(Vec::new()),
    }
}

/// Numbers in `(cursor, durable]` that no version has: what `status`
/// takes off `durable - cursor` to count the versions waiting.
pub(crate) fn skipped_between(inner: &Inner, cursor: u64, durable: u64) -> Result<u64> {
    Ok(skipped(inner)?
        .iter()
        .map(|&(lo, hi)| {
            let (lo, hi) = (lo.max(cursor + 1), hi.min(durable));
            if lo <= hi { hi - lo + 1 } else { 0 }
        })
        .sum())
}

/// Give new versions numbers above `to` (this journal's `next_seq` is at
/// or below it), the numbers from `next_seq` to `to` given to no version.
/// With the log drained (the cursor at the durable seq) the cursor and the
/// durable seq move to `to`, so nothing waits; otherwise the range is
/// remembered for `status` until the uploader's cursor passes it.
/// Before capturing only: nothing may be queued.
pub(crate) fn skip(inner: &Inner, to: u64) -> Result<()> {
    let mut w = lock(&inner.writer);
    if w.next_seq > to {
        return Ok(());
    }
    let from = w.next_seq;
    w.next_seq = to + 1;
    let cursor = get_u64(&inner.db, "cursor", &inner.dir)?;
    let durable = *lock(&inner.durable);
    let drained = cursor >= durable;
    let mut batch = sled::Batch::default();
    batch.insert(meta_key("next_seq"), &(to + 1).to_be_bytes());
    if drained {
        batch.insert(meta_key("cursor"), &to.to_be_bytes());
    } else {
        let mut ranges: Vec<(u64, u64)> = skipped(inner)?
            .into_iter()
            .filter(|&(_, hi)| hi > cursor)
            .collect();
        ranges.push((from, to));
        batch.insert(
            meta_key(SKIPPED),
            postcard::to_stdvec(&ranges).expect("ranges serialize"),
        );
    }
    inner
        .db
        .apply_batch(batch)
        .and_then(|_| inner.db.flush().map(|_| ()))
        .map_err(db_err(inner))?;
    drop(w);
    if drained {
        let mut d = lock(&inner.durable);
        *d = (*d).max(to);
    }
    Ok(())
}

/// Skip every number reserved so far (see `Journal::skip_reserved`):
/// after it, what is reserved above `next_seq - 1` is this process's.
pub(crate) fn skip_reserved(inner: &Inner) -> Result<()> {
    skip(inner, get_u64(&inner.db, "reserved_seq", &inner.dir)?)?;
    inner.reservation_ours.store(true, Ordering::SeqCst);
    Ok(())
}
