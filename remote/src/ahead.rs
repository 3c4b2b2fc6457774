//! Chunks sent ahead of the journal's flush.
//!
//! Capture hands each chunk to the sink as it queues it
//! ([`ChunkSink::send_ahead`](rewind_core::ChunkSink::send_ahead)); here
//! they are gathered into requests of [`SINK_REQUEST_BYTES`] and sent by
//! [`SINK_IN_FLIGHT`] threads while capture goes on. The journal's flush
//! then only waits for those requests, asks which of its chunks the
//! server still lacks (normally none) and has the server make them
//! durable. Without this, each flush sent all its chunks itself and the
//! server had nothing to do while the client asked, synced and committed,
//! and capture waited for the flush once its queue was full.
//!
//! Nothing here is acknowledged to the journal: a request that fails is
//! forgotten, and the flush's own question to the server finds the chunks
//! it lost.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::Sender;
use rewind_core::{ChunkId, ChunkView, EncodedChunk, wire};

use crate::client::Conn;

/// Bytes of chunk data per request when chunks go straight from capture
/// to the server, and requests in flight at once (here and in the flush).
pub(crate) const SINK_REQUEST_BYTES: usize = 8 << 20;
pub(crate) const SINK_IN_FLIGHT: usize = 4;

/// Room past [`SINK_REQUEST_BYTES`] kept in each body for the chunk that
/// fills it: twice the largest chunk the default chunker cuts, which
/// leaves room for its encoding's overhead.
const OVERFILL_ROOM: usize = 2 * rewind_core::DEFAULT_CHUNKER.max as usize;

/// Longest wait for one request of the sink.
pub(crate) const SINK_TIMEOUT: Duration = Duration::from_secs(30);

/// A postcard list (`Vec<T>` on the wire) built one item at a time and
/// sent without copying the items again: the item count, known only at
/// the end, goes into room kept for it in front.
pub(crate) struct ListBody {
    buf: Vec<u8>,
    count: usize,
}

/// The longest varint of a `usize` count.
const COUNT_ROOM: usize = 10;

impl Default for ListBody {
    fn default() -> Self {
        ListBody {
            buf: vec![0; COUNT_ROOM],
            count: 0,
        }
    }
}

impl ListBody {
    /// Append one item.
    pub(crate) fn push<T: serde::Serialize>(&mut self, item: &T) {
        postcard::to_io(item, &mut self.buf).expect("wire types always serialize");
        self.count += 1;
    }

    /// Room for `n` more bytes of items, so a growing body is not copied
    /// again and again.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.buf.reserve(n);
    }

    /// Bytes of the items so far.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - COUNT_ROOM
    }

    /// The whole body: the count, then the items.
    pub(crate) fn finish(mut self) -> Bytes {
        let mut varint = [0u8; COUNT_ROOM];
        let mut n = 0;
        let mut v = self.count;
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                varint[n] = byte;
                n += 1;
                break;
            }
            varint[n] = byte | 0x80;
            n += 1;
        }
        let start = COUNT_ROOM - n;
        self.buf[start..COUNT_ROOM].copy_from_slice(&varint[..n]);
        Bytes::from(self.buf).slice(start..)
    }
}

/// One request's worth of chunks.
#[derive(Default)]
struct Batch {
    body: ListBody,
    ids: Vec<ChunkId>,
    /// Its number, in the order batches were handed to the senders.
    ticket: u64,
}

#[derive(Default)]
struct Progress {
    /// Tickets of batches handed to the senders and not finished.
    open: BTreeSet<u64>,
    /// The next ticket.
    next: u64,
    /// A request failed since the last flush: the senders drop what is
    /// queued instead of trying each batch against a server that is gone.
    failing: bool,
}

#[derive(Default)]
struct Shared {
    progress: Mutex<Progress>,
    finished: Condvar,
}

/// The batch being filled, and every chunk handed over since the last
/// flush (the same content queued twice is sent once).
#[derive(Default)]
struct Filling {
    batch: Batch,
    offered: HashSet<ChunkId>,
}

/// The sink's chunks on their way.
#[derive(Default)]
pub(crate) struct Ahead {
    filling: Mutex<Filling>,
    queue: OnceLock<Sender<Batch>>,
    shared: Arc<Shared>,
}

impl Ahead {
    /// Add `c` to the batch being filled; hand the batch to the senders
    /// once it is full.
    pub(crate) fn offer(&self, conn: &Conn, c: &EncodedChunk) {
        let full = {
            let mut f = self.filling.lock().unwrap_or_else(|p| p.into_inner());
            if !f.offered.insert(c.id) {
                return;
            }
            let b = &mut f.batch;
            if b.ids.is_empty() {
                // One request's worth and the chunk that overfills it,
                // whichever comes last: a body that grows is copied
                // whole, into fresh pages.
                b.body
                    .reserve(SINK_REQUEST_BYTES + c.data.len().max(OVERFILL_ROOM) + 64);
            }
            b.body.push(c);
            b.ids.push(c.id);
            (b.body.len() >= SINK_REQUEST_BYTES).then(|| std::mem::take(b))
        };
        if let Some(b) = full {
            self.dispatch(conn, b);
        }
    }

    /// Send the batch being filled, and wait until every batch handed over
    /// so far has been sent (or has failed).
    pub(crate) fn drain(&self, conn: &Conn) {
        let rest = {
            let mut f = self.filling.lock().unwrap_or_else(|p| p.into_inner());
            // What the flush finds missing it sends itself; from here on a
            // chunk may be handed over again.
            f.offered.clear();
            std::mem::take(&mut f.batch)
        };
        if !rest.ids.is_empty() {
            self.dispatch(conn, rest);
        }
        let mut p = self
            .shared
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Batches handed over after this point belong to the next flush.
        let upto = p.next;
        while p.open.first().is_some_and(|t| *t < upto) {
            p = self
                .shared
                .finished
                .wait(p)
                .unwrap_or_else(|p| p.into_inner());
        }
        p.failing = false;
    }

    fn dispatch(&self, conn: &Conn, mut b: Batch) {
        {
            let mut p = self
                .shared
                .progress
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            b.ticket = p.next;
            p.next += 1;
            p.open.insert(b.ticket);
        }
        let queue = self.queue.get_or_init(|| start_senders(conn, &self.shared));
        if let Err(e) = queue.send(b) {
            // No sender thread could be started: the flush sends these
            // chunks itself.
            finish(&self.shared, e.into_inner().ticket, false);
        }
    }
}

fn start_senders(conn: &Conn, shared: &Arc<Shared>) -> Sender<Batch> {
    let (tx, rx) = crossbeam_channel::unbounded::<Batch>();
    for i in 0..SINK_IN_FLIGHT {
        let (conn, shared, rx) = (conn.clone(), shared.clone(), rx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("send-ahead-{i}"))
            .spawn(move || {
                for b in rx {
                    let skip = shared
                        .progress
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .failing;
                    // A panic must still finish the ticket, or the flush
                    // would wait for it forever.
                    let ok = !skip
                        && std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            send(&conn, b.body, &b.ids)
                        }))
                        .unwrap_or(false);
                    finish(&shared, b.ticket, !skip && !ok);
                }
            });
        if let Err(e) = spawned {
            // Fewer senders only means less sent ahead; the flush sends
            // the rest.
            tracing::warn!("cannot start a thread to send chunks ahead: {e}");
        }
    }
    tx
}

fn finish(shared: &Shared, ticket: u64, failed: bool) {
    let mut p = shared.progress.lock().unwrap_or_else(|p| p.into_inner());
    p.open.remove(&ticket);
    p.failing |= failed;
    shared.finished.notify_all();
}

/// Ask which of `ids` the server lacks, then send those. True when the
/// server took them.
fn send(conn: &Conn, body: ListBody, ids: &[ChunkId]) -> bool {
    let post = |route: &str, body: Bytes| {
        conn.call(reqwest::Method::POST, route, Some(body), Some(SINK_TIMEOUT))
    };
    let missing: Vec<ChunkId> =
        match post("/v1/missing", Bytes::from(wire::encode(&ids))).and_then(|b| conn.decode(&b)) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!("sending chunks ahead: {e}");
                return false;
            }
        };
    if missing.is_empty() {
        return true;
    }
    let body = body.finish();
    let body = if missing.len() == ids.len() {
        body
    } else {
        // Some are there already (the same content captured twice): send
        // only the others.
        let want: HashSet<ChunkId> = missing.into_iter().collect();
        let Ok(all) = wire::decode::<Vec<ChunkView<'_>>>(&body) else {
            return false;
        };
        let mut some = ListBody::default();
        for c in all.iter().filter(|c| want.contains(&c.id)) {
            some.push(&c.to_chunk());
        }
        some.finish()
    };
    match post("/v1/chunks", body) {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!("sending chunks ahead: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_body_reads_as_the_list() {
        for n in [0usize, 1, 2, 127, 128, 300] {
            let chunks: Vec<EncodedChunk> = (0..n)
                .map(|i| EncodedChunk::encode(format!("chunk {i}").repeat(i % 7 + 1).as_bytes()))
                .collect();
            let mut body = ListBody::default();
            for c in &chunks {
                body.push(c);
            }
            let bytes = body.finish();
            assert_eq!(
                bytes.as_ref(),
                wire::encode(&chunks).as_slice(),
                "{n} chunks"
            );
            let back: Vec<EncodedChunk> = wire::decode(&bytes).unwrap();
            assert_eq!(back, chunks);
        }
    }
}
