//! rewind-remote: the [`Repository`] of a `rewind-server`, over HTTPS.
//!
//! TLS 1.3 with the server's certificate pinned by fingerprint (see
//! [`tls`]); each request carries the client's name and key; bulk bodies
//! are postcard (`rewind_core::wire`). Transient trouble (connection
//! refused, timeouts, 5xx) is retried a few times here and then reported
//! as a transient [`RepoError::Remote`], which the uploader retries with
//! backoff; refusals (401, 400) are reported at once, not retried.

mod ahead;
mod client;
mod enroll;
pub mod throttle;
pub mod tls;

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rewind_core::wire::{self, ChunkProblem, ListQuery, PathQuery, ServerInfo, VerifyChunks};
use rewind_core::{
    ChunkId, ChunkSink, EncodedChunk, RepoError, RepoStats, Repository, Timestamp, Version,
};
use serde::Serialize;

use crate::client::{Conn, remote};
pub use enroll::{RemoteConfig, enroll, normalize_url, probe_fingerprint};
pub use throttle::{Limiter, RateSchedule};

/// The most chunks asked for in one `read` request during restores.
pub const READ_BATCH: usize = 64;

/// A client of one server.
pub struct RemoteRepo {
    conn: Conn,
    /// As a [`ChunkSink`]: chunks the server confirmed durable for us.
    stored: Mutex<HashSet<ChunkId>>,
    /// As a [`ChunkSink`]: when to take chunks again after a failure or a
    /// slow store, and the next pause.
    pause: Mutex<(Option<Instant>, Duration)>,
    /// As a [`ChunkSink`]: chunks on their way before the journal's flush.
    ahead: ahead::Ahead,
}

/// Bytes of chunk data per request when chunks go straight from capture
/// to the server, and requests in flight at once.
const SINK_REQUEST_BYTES: usize = 8 << 20;
const SINK_IN_FLIGHT: usize = 4;

/// A store of at least [`SINK_SLOW_MIN_BYTES`] slower than this (bytes per
/// second) makes the journal spool for [`SINK_SLOW_PAUSE`]: on a slow link
/// capture should run at the local disk's speed, not the network's.
const SINK_MIN_RATE: f64 = 24.0 * 1024.0 * 1024.0;
const SINK_SLOW_MIN_BYTES: usize = 4 << 20;
const SINK_SLOW_PAUSE: Duration = Duration::from_secs(30);

/// Longest wait for one request of the sink.
const SINK_TIMEOUT: Duration = Duration::from_secs(30);

/// Versions per commit request (as the uploader's batches).
const SINK_COMMIT_VERSIONS: usize = 2000;

/// Pauses after failures: doubling from the first to the longest.
const SINK_FIRST_PAUSE: Duration = Duration::from_secs(1);
const SINK_LONGEST_PAUSE: Duration = Duration::from_secs(60);

/// The ids remembered as stored; past this the set starts again (a
/// forgotten id costs a compression and a `missing` question, nothing more).
const SINK_REMEMBERED: usize = 1 << 20;

impl std::fmt::Debug for RemoteRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRepo")
            .field("url", &self.conn.url())
            .finish()
    }
}

impl RemoteRepo {
    /// A client for `cfg`; no request is made yet (the agent starts, and
    /// captures, while the server is unreachable).
    pub fn new(cfg: &RemoteConfig) -> Result<RemoteRepo, RepoError> {
        let url = normalize_url(&cfg.url).map_err(|m| remote(&cfg.url, m, false))?;
        let fp = wire::parse_fingerprint(&cfg.fingerprint).ok_or_else(|| {
            remote(
                &url,
                format!("bad pinned fingerprint {:?}", cfg.fingerprint),
                false,
            )
        })?;
        Ok(RemoteRepo {
            conn: Conn::new(url, format!("Bearer {}:{}", cfg.client, cfg.key), &fp)?,
            stored: Mutex::new(HashSet::new()),
            pause: Mutex::new((None, SINK_FIRST_PAUSE)),
            ahead: ahead::Ahead::default(),
        })
    }

    /// Pace chunk uploads by `schedule`.
    pub fn set_upload_limit(&mut self, schedule: RateSchedule) {
        self.conn.set_upload_limit(schedule);
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        self.conn.url()
    }

    /// Ask the server who it is and who we are.
    pub fn info(&self) -> Result<ServerInfo, RepoError> {
        let b = self
            .conn
            .call(reqwest::Method::GET, "/v1/info", None, None)?;
        serde_json::from_slice(&b).map_err(|e| self.conn.malformed(e))
    }

    /// [`Conn::post`] for the sink: capture waits on it, so a server
    /// that stalls is given up on sooner (the journal spools instead).
    fn sink_post<T: Serialize>(&self, route: &str, v: &T) -> Result<Vec<u8>, RepoError> {
        self.conn.call(
            reqwest::Method::POST,
            route,
            Some(wire::encode(v).into()),
            Some(SINK_TIMEOUT),
        )
    }

    /// One page of every version this client has on the server, in path
    /// order: the paths after `after`, each whole, until at least `limit`
    /// versions. An empty page is the end.
    pub fn list_page(&self, after: Option<&[u8]>, limit: u32) -> Result<Vec<Version>, RepoError> {
        let b = self.conn.post(
            "/v1/list",
            &ListQuery {
                after: after.map(<[u8]>::to_vec),
                limit,
            },
        )?;
        self.conn.decode(&b)
    }

    /// Have the server check these chunks of ours on its disk (`quick`:
    /// that they are indexed; otherwise read, decompress and hash each).
    /// Returns the ones that failed.
    pub fn verify_chunks(
        &self,
        quick: bool,
        ids: &[ChunkId],
    ) -> Result<Vec<ChunkProblem>, RepoError> {
        let b = self.conn.post(
            "/v1/verify",
            &VerifyChunks {
                quick,
                ids: ids.to_vec(),
            },
        )?;
        let got: Vec<ChunkProblem> = self.conn.decode(&b)?;
        let asked: std::collections::HashSet<&ChunkId> = ids.iter().collect();
        if got.iter().any(|p| !asked.contains(&p.id)) {
            return Err(self
                .conn
                .malformed("the server reported on chunks not asked about"));
        }
        Ok(got)
    }

    /// Several chunks as stored, checked against their ids on decode by the
    /// caller.
    pub fn read_encoded(&self, ids: &[ChunkId]) -> Result<Vec<EncodedChunk>, RepoError> {
        let b = self.conn.post("/v1/read", &ids)?;
        let got: Vec<EncodedChunk> = self.conn.decode(&b)?;
        if got.len() != ids.len() || got.iter().zip(ids).any(|(c, id)| c.id != *id) {
            return Err(self
                .conn
                .malformed("the server sent other chunks than asked for"));
        }
        Ok(got)
    }
}

impl Repository for RemoteRepo {
    fn missing_chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>, RepoError> {
        // Chunks on their way count as there: the uploader asks this about
        // chunks the journal spooled after the sink stepped aside, some of
        // which capture had already handed to the senders.
        self.ahead.drain(&self.conn);
        let mut out = Vec::new();
        for part in ids.chunks(wire::MAX_IDS) {
            let b = self.conn.post("/v1/missing", &part)?;
            out.extend(self.conn.decode::<Vec<ChunkId>>(&b)?);
        }
        Ok(out)
    }

    fn put_chunks(&self, chunks: Vec<EncodedChunk>) -> Result<(), RepoError> {
        // Keep each request well under the body limit.
        let mut start = 0;
        while start < chunks.len() {
            let mut end = start;
            let mut size = 0;
            while end < chunks.len() && (end == start || size + chunks[end].data.len() < 48 << 20) {
                size += chunks[end].data.len() + 64;
                end += 1;
            }
            self.conn.post("/v1/chunks", &&chunks[start..end])?;
            start = end;
        }
        Ok(())
    }

    fn commit_versions(&self, versions: Vec<Version>) -> Result<(), RepoError> {
        self.conn.post("/v1/commit", &versions).map(|_| ())
    }

    fn versions_of(&self, _client: &str, path: &[u8]) -> Result<Vec<Version>, RepoError> {
        let b = self.conn.post(
            "/v1/versions",
            &PathQuery {
                path: path.to_vec(),
                at: None,
            },
        )?;
        self.conn.decode(&b)
    }

    fn tree_at(
        &self,
        _client: &str,
        path: &[u8],
        at: Timestamp,
    ) -> Result<Vec<Version>, RepoError> {
        let b = self.conn.post(
            "/v1/tree",
            &PathQuery {
                path: path.to_vec(),
                at: Some(at),
            },
        )?;
        self.conn.decode(&b)
    }

    fn covers(&self, _client: &str, path: &[u8]) -> Result<bool, RepoError> {
        let b = self.conn.post(
            "/v1/covers",
            &PathQuery {
                path: path.to_vec(),
                at: None,
            },
        )?;
        self.conn.decode(&b)
    }

    fn read_chunk(&self, id: &ChunkId) -> Result<Vec<u8>, RepoError> {
        let c = self.read_encoded(std::slice::from_ref(id))?;
        c[0].decode().map_err(|e| {
            remote(
                self.conn.url(),
                format!("damaged chunk from the server: {e}"),
                false,
            )
        })
    }

    fn read_chunks(&self, ids: &[ChunkId]) -> Result<Vec<Vec<u8>>, RepoError> {
        let mut out = Vec::with_capacity(ids.len());
        for part in ids.chunks(READ_BATCH) {
            for c in self.read_encoded(part)? {
                out.push(c.decode().map_err(|e| {
                    remote(
                        self.conn.url(),
                        format!("damaged chunk from the server: {e}"),
                        false,
                    )
                })?);
            }
        }
        Ok(out)
    }

    fn stats(&self) -> Result<RepoStats, RepoError> {
        let b = self
            .conn
            .call(reqwest::Method::GET, "/v1/stats", None, None)?;
        serde_json::from_slice(&b).map_err(|e| self.conn.malformed(e))
    }
}

impl RemoteRepo {
    /// Send those of `chunks` the server does not hold for us (after those
    /// sent ahead have arrived), several requests at once.
    fn store_now(&self, chunks: &[EncodedChunk]) -> Result<(), RepoError> {
        self.ahead.drain(&self.conn);
        let ids: Vec<ChunkId> = chunks.iter().map(|c| c.id).collect();
        let mut missing = HashSet::new();
        for part in ids.chunks(wire::MAX_IDS) {
            let b = self.sink_post("/v1/missing", &part)?;
            missing.extend(self.conn.decode::<Vec<ChunkId>>(&b)?);
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
                        if let Err(e) = self.sink_post("/v1/chunks", g) {
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

    /// Time one store as a sink: a failure pauses the sink (doubling each
    /// time), and so does a store slower than the spool would be.
    fn as_sink(
        &self,
        chunks: &[EncodedChunk],
        f: impl FnOnce() -> Result<(), RepoError>,
    ) -> Result<(), RepoError> {
        let start = Instant::now();
        let r = f();
        let mut p = self.pause.lock().unwrap_or_else(|p| p.into_inner());
        match &r {
            Ok(()) => {
                let bytes: usize = chunks.iter().map(|c| c.data.len()).sum();
                let secs = start.elapsed().as_secs_f64();
                *p = (None, SINK_FIRST_PAUSE);
                if bytes >= SINK_SLOW_MIN_BYTES && bytes as f64 / secs < SINK_MIN_RATE {
                    tracing::info!(
                        "{}: the server took {:.1} MiB in {secs:.1}s; spooling locally for {}s",
                        self.conn.url(),
                        bytes as f64 / (1 << 20) as f64,
                        SINK_SLOW_PAUSE.as_secs()
                    );
                    p.0 = Some(Instant::now() + SINK_SLOW_PAUSE);
                }
                drop(p);
                self.remember(chunks);
            }
            Err(_) => {
                let wait = p.1;
                *p = (
                    Some(Instant::now() + wait),
                    (wait * 2).min(SINK_LONGEST_PAUSE),
                );
            }
        }
        r
    }
}

/// Capture hands chunks straight to the server while it keeps up (no
/// upload limit, no recent failure, faster than [`SINK_MIN_RATE`]); the
/// journal spools them otherwise, and the uploader moves them later.
impl ChunkSink for RemoteRepo {
    fn accepting(&self) -> bool {
        if self.conn.limited() {
            return false;
        }
        let p = self.pause.lock().unwrap_or_else(|p| p.into_inner());
        p.0.is_none_or(|until| Instant::now() >= until)
    }

    fn has_chunk(&self, id: &ChunkId) -> bool {
        self.stored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
    }

    fn send_ahead(&self, chunk: &EncodedChunk) {
        self.ahead.offer(&self.conn, chunk);
    }

    fn store_durably(&self, chunks: &[EncodedChunk]) -> Result<(), RepoError> {
        // Chunks given earlier were durable when their call returned.
        if chunks.is_empty() {
            return Ok(());
        }
        self.as_sink(chunks, || {
            self.store_now(chunks)?;
            self.sink_post("/v1/sync", &()).map(|_| ())
        })
    }

    fn commit_durably(
        &self,
        chunks: &[EncodedChunk],
        versions: &[Version],
    ) -> Result<(), RepoError> {
        self.as_sink(chunks, || {
            self.store_now(chunks)?;
            // Each commit is atomic and idempotent by seq, so a batch may be
            // split; the server makes the chunks durable before it commits.
            for part in versions.chunks(SINK_COMMIT_VERSIONS) {
                self.sink_post("/v1/commit", &part)?;
            }
            Ok(())
        })
    }
}
