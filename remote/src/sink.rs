//! The server as a [`ChunkSink`](rewind_core::ChunkSink): capture hands
//! chunks straight to the server while it keeps up (no upload limit,
//! faster than [`SINK_MIN_RATE`]) and the uploader's direct path has no
//! failure to wait out; the journal spools them otherwise, and the uploader
//! moves them later. Here are what the sink remembers (chunks known stored,
//! when to take chunks again after a slow store), the flush (wait for the
//! chunks sent ahead, ask, send, then sync or commit), and the pause after
//! a slow flush. After a failed flush the uploader's one backoff decides
//! (docs/decisions.md, "One owner of repository writes"). `RemoteRepo`'s `ChunkSink`
//! methods hand their work to [`Sink`].

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rewind_core::{ChunkId, EncodedChunk, RepoError, Version, wire};
use serde::Serialize;

use crate::ahead::{Ahead, SINK_IN_FLIGHT, SINK_REQUEST_BYTES, SINK_TIMEOUT};
use crate::client::Conn;

/// A store of at least [`SINK_SLOW_MIN_BYTES`] slower than this (bytes per
/// second) makes the journal spool for [`SINK_SLOW_PAUSE`]: on a slow link
/// capture should run at the local disk's speed, not the network's.
const SINK_MIN_RATE: f64 = 24.0 * 1024.0 * 1024.0;
const SINK_SLOW_MIN_BYTES: usize = 4 << 20;
const SINK_SLOW_PAUSE: Duration = Duration::from_secs(30);

/// Versions per commit request (as the uploader's batches).
const SINK_COMMIT_VERSIONS: usize = 2000;

/// The ids remembered as stored; past this the set starts again (a
/// forgotten id costs a compression and a `missing` question, nothing more).
const SINK_REMEMBERED: usize = 1 << 20;

/// What a `RemoteRepo` keeps as a sink; every request goes through the
/// [`Conn`] it is given.
pub(crate) struct Sink {
    /// Chunks the server confirmed durable for us.
    stored: Mutex<HashSet<ChunkId>>,
    /// When to take chunks again after a slow store. (After a failure the
    /// uploader's backoff decides.)
    slow_until: Mutex<Option<Instant>>,
    /// Chunks on their way before the journal's flush.
    ahead: Ahead,
}

impl Default for Sink {
    fn default() -> Self {
        Sink {
            stored: Mutex::new(HashSet::new()),
            slow_until: Mutex::new(None),
            ahead: Ahead::default(),
        }
    }
}

/// [`Conn::post`] for the sink: capture waits on it, so a server that
/// stalls is given up on sooner (the journal spools instead).
fn post<T: Serialize>(conn: &Conn, route: &str, v: &T) -> Result<Vec<u8>, RepoError> {
    conn.call(
        reqwest::Method::POST,
        route,
        Some(wire::encode(v).into()),
        Some(SINK_TIMEOUT),
    )
}

impl Sink {
    /// [`ChunkSink::accepting`](rewind_core::ChunkSink::accepting).
    pub(crate) fn accepting(&self, conn: &Conn) -> bool {
        if conn.limited() {
            return false;
        }
        let slow = self.slow_until.lock().unwrap_or_else(|p| p.into_inner());
        slow.is_none_or(|until| Instant::now() >= until)
    }

    /// [`ChunkSink::has_chunk`](rewind_core::ChunkSink::has_chunk).
    pub(crate) fn has_chunk(&self, id: &ChunkId) -> bool {
        self.stored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
    }

    /// [`ChunkSink::send_ahead`](rewind_core::ChunkSink::send_ahead).
    pub(crate) fn send_ahead(&self, conn: &Conn, chunk: &EncodedChunk) {
        self.ahead.offer(conn, chunk);
    }

    /// Wait for the chunks on their way ([`Ahead::drain`]).
    pub(crate) fn drain(&self, conn: &Conn) {
        self.ahead.drain(conn);
    }

    /// [`ChunkSink::store_durably`](rewind_core::ChunkSink::store_durably).
    pub(crate) fn store_durably(
        &self,
        conn: &Conn,
        chunks: &[EncodedChunk],
    ) -> Result<(), RepoError> {
        // Chunks given earlier were durable when their call returned.
        if chunks.is_empty() {
            return Ok(());
        }
        self.as_sink(conn, chunks, || {
            self.store_now(conn, chunks)?;
            post(conn, "/v1/sync", &()).map(|_| ())
        })
    }

    /// [`ChunkSink::commit_durably`](rewind_core::ChunkSink::commit_durably).
    pub(crate) fn commit_durably(
        &self,
        conn: &Conn,
        chunks: &[EncodedChunk],
        versions: &[Version],
    ) -> Result<(), RepoError> {
        self.as_sink(conn, chunks, || {
            self.store_now(conn, chunks)?;
            // Each commit is atomic and idempotent by seq, so a batch may be
            // split; the server makes the chunks durable before it commits.
            for part in versions.chunks(SINK_COMMIT_VERSIONS) {
                post(conn, "/v1/commit", &part)?;
            }
            Ok(())
        })
    }

    /// Send those of `chunks` the server does not hold for us (after those
    /// sent ahead have arrived), several requests at once.
    fn store_now(&self, conn: &Conn, chunks: &[EncodedChunk]) -> Result<(), RepoError> {
        self.ahead.drain(conn);
        let ids: Vec<ChunkId> = chunks.iter().map(|c| c.id).collect();
        let mut missing = HashSet::new();
        for part in ids.chunks(wire::MAX_IDS) {
            let b = post(conn, "/v1/missing", &part)?;
            missing.extend(conn.decode::<Vec<ChunkId>>(&b)?);
        }
        let mut groups: Vec<Vec<&EncodedChunk>> = vec![Vec::new()];
        let mut size = 0;
        // Each missing chunk once, though two files may have queued it.
        for c in chunks.iter().filter(|c| missing.remove(&c.id)) {
            if size >= SINK_REQUEST_BYTES {
                groups.push(Vec::new());
                size = 0;
            }
            size += c.data.len();
            groups.last_mut().expect("one group").push(c);
        }
        groups.retain(|g| !g.is_empty());
        let next = std::sync::atomic::AtomicUsize::new(0);
        let failed: Mutex<Option<RepoError>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..SINK_IN_FLIGHT.min(groups.len()) {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(g) = groups.get(i) else { return };
                        if let Err(e) = post(conn, "/v1/chunks", g) {
                            failed
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e);
                            return;
                        }
                    }
                });
            }
        });
        if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        Ok(())
    }

    /// Remember `chunks` as durable on the server.
    fn remember(&self, chunks: &[EncodedChunk]) {
        let mut set = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        if set.len() + chunks.len() > SINK_REMEMBERED {
            set.clear();
        }
        set.extend(chunks.iter().map(|c| c.id));
    }

    /// Time one store as a sink: a store slower than the spool would be
    /// pauses the sink. (A failure is the caller's to retry: the uploader's
    /// direct path steps aside under its own backoff.)
    fn as_sink(
        &self,
        conn: &Conn,
        chunks: &[EncodedChunk],
        f: impl FnOnce() -> Result<(), RepoError>,
    ) -> Result<(), RepoError> {
        let start = Instant::now();
        let r = f();
        if r.is_ok() {
            let bytes: usize = chunks.iter().map(|c| c.data.len()).sum();
            let secs = start.elapsed().as_secs_f64();
            let mut slow = self.slow_until.lock().unwrap_or_else(|p| p.into_inner());
            *slow = None;
            if bytes >= SINK_SLOW_MIN_BYTES && bytes as f64 / secs < SINK_MIN_RATE {
                tracing::info!(
                    "{}: the server took {:.1} MiB in {secs:.1}s; spooling locally for {}s",
                    conn.url(),
                    bytes as f64 / (1 << 20) as f64,
                    SINK_SLOW_PAUSE.as_secs()
                );
                *slow = Some(Instant::now() + SINK_SLOW_PAUSE);
            }
            drop(slow);
            self.remember(chunks);
        }
        r
    }
}
