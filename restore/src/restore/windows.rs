//! A file's content in windows: the chunks fetched by one request, and,
//! from a repository whose reads wait on a network, several windows of one
//! large file fetched at once and written at their offsets.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use rewind_core::{ChunkId, ChunkRef};

use super::Writer;

/// Windows of one large file fetched at once from a repository whose
/// reads wait on a network
/// ([`rewind_core::Repository::parallel_reads`]).
pub(super) const MAX_WINDOWS_AT_ONCE: usize = 8;

/// The windows of a file fetched several at once hold at most this much:
/// what those windows hold at once, decoded and as fetched, is what a
/// restore of a large file costs in memory (4 windows of 32 MiB took the
/// restore of a 1 GiB file to 570 MiB peak RSS, of 8 MiB to ...).
pub(super) const PARALLEL_WINDOW_BYTES: u64 = 8 << 20;

/// Content fetched per request while restoring a file: a window holds
/// chunks up to this many bytes (at least one chunk) ...
const WINDOW_BYTES: u64 = 32 << 20;
/// ... and at most this many chunks.
const WINDOW_CHUNKS: usize = 256;

/// `chunks` cut into the windows a file is fetched in: each ends before
/// [`WINDOW_BYTES`] of content or [`WINDOW_CHUNKS`] chunks would be
/// passed. A store answers a window with a few ranged GETs of the packs it
/// lies in, so large windows mean few round trips (a 1 GiB file in 8 MiB
/// windows took four times the requests, one after the other).
pub(super) fn windows(chunks: &[ChunkRef]) -> impl Iterator<Item = &[ChunkRef]> {
    windows_of(chunks, WINDOW_BYTES)
}

/// [`windows`] of at most `max_bytes` each, for windows fetched several
/// at once: [`PARALLEL_WINDOW_BYTES`].
pub(super) fn windows_of(chunks: &[ChunkRef], max_bytes: u64) -> impl Iterator<Item = &[ChunkRef]> {
    let mut rest = chunks;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = fitting(rest.iter().take(WINDOW_CHUNKS).map(|c| c.len), max_bytes);
        let (window, after) = rest.split_at(n);
        rest = after;
        Some(window)
    })
}

/// How many of the leading pieces of `lens` (decoded lengths) fit in
/// `max_bytes` together: at least one, if there is one, whatever its
/// length.
pub(super) fn fitting(lens: impl Iterator<Item = u32>, max_bytes: u64) -> usize {
    let mut bytes = 0u64;
    let mut n = 0;
    for len in lens {
        let len = u64::from(len);
        if n > 0 && bytes + len > max_bytes {
            break;
        }
        bytes += len;
        n += 1;
    }
    n
}

impl Writer<'_> {
    /// Write the dense content `wins` (a file's windows, in order) into
    /// the empty `file`, `parallel` windows at once, each at its offset:
    /// a large file from an object store is fetched by several requests
    /// at a time instead of one window after the other. The bytes
    /// written.
    pub(super) fn write_windows_at(
        &self,
        file: &File,
        wins: &[&[ChunkRef]],
        parallel: usize,
    ) -> io::Result<u64> {
        let mut offsets = Vec::with_capacity(wins.len());
        let mut at = 0u64;
        for w in wins {
            offsets.push(at);
            at += w.iter().map(|c| u64::from(c.len)).sum::<u64>();
        }
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let one = |i: usize| -> io::Result<u64> {
            let w = wins[i];
            let ids: Vec<ChunkId> = w.iter().map(|c| c.id).collect();
            let _permit = self.windows.take();
            let data = self.repo.read_chunks(&ids).map_err(io::Error::other)?;
            if data.len() != w.len() {
                return Err(io::Error::other(
                    "the repository returned fewer chunks than asked for",
                ));
            }
            let mut off = offsets[i];
            for (c, d) in w.iter().zip(data) {
                // The offsets come from the recorded lengths: a chunk of
                // another length would misplace everything after it.
                if d.len() as u64 != u64::from(c.len) {
                    return Err(io::Error::other(format!(
                        "chunk {} holds {} bytes where its version says {}",
                        c.id,
                        d.len(),
                        c.len
                    )));
                }
                rewind_core::failpoint::hit("restore.write")?;
                file.write_all_at(&d, off)?;
                off += d.len() as u64;
            }
            Ok(off - offsets[i])
        };
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..parallel.min(wins.len()))
                .map(|_| {
                    s.spawn(|| -> io::Result<u64> {
                        let mut bytes = 0;
                        while !failed.load(Ordering::Relaxed) {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= wins.len() {
                                break;
                            }
                            match one(i) {
                                Ok(n) => bytes += n,
                                Err(e) => {
                                    failed.store(true, Ordering::Relaxed);
                                    return Err(e);
                                }
                            }
                        }
                        Ok(bytes)
                    })
                })
                .collect();
            let mut total = 0;
            let mut first_err = None;
            for w in workers {
                match w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)) {
                    Ok(n) => total += n,
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            match first_err {
                Some(e) => Err(e),
                None => Ok(total),
            }
        })
    }
}

/// Windows under way in one restore, whichever files they belong to: a
/// counting semaphore, so that several large files written at once (each
/// by its writer) share [`MAX_WINDOWS_AT_ONCE`] fetches, and what they
/// hold in memory stays bounded.
pub(super) struct WindowPermits {
    free: Mutex<usize>,
    freed: Condvar,
}

/// A window's right to be fetched, given back when dropped.
pub(super) struct Permit<'p>(&'p WindowPermits);

impl WindowPermits {
    pub(super) fn new(n: usize) -> Self {
        WindowPermits {
            free: Mutex::new(n.max(1)),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, usize> {
        // A count cannot be left half-changed: a panic elsewhere leaves it sound.
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait for a free permit.
    pub(super) fn take(&self) -> Permit<'_> {
        let mut free = self.lock();
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.lock() += 1;
        self.0.freed.notify_one();
    }
}
