//! [`RemoteRepo`], the client of one server, and the [`Repository`] it is:
//! each question (missing chunks, versions, trees, finds, activity, chunks
//! to read, stats)
//! is one or more requests through its [`Conn`]; bulk requests are cut to
//! stay under the server's body limit. Its [`ChunkSink`] side is in
//! `sink.rs`.

use rewind_core::forget::{
    ForgetReport, ForgetRequest, PendingChunks, Pin, PruneReport, PruneRequest, RetentionStatus,
};
use rewind_core::wire::{
    self, ChunkProblem, ListQuery, PathQuery, PinRequest, ServerInfo, VerifyChunks,
};
use rewind_core::{
    ActivityBucket, ActivityQuery, ChunkId, ChunkSink, EncodedChunk, FindQuery, FindReply,
    RepoError, RepoStats, Repository, Timestamp, Version,
};

use crate::client::{Conn, remote};
use crate::enroll::{RemoteConfig, normalize_url};
use crate::sink::Sink;
use crate::throttle::RateSchedule;

/// The most chunks asked for in one `read` request during restores.
pub const READ_BATCH: usize = 64;

/// A client of one server.
pub struct RemoteRepo {
    conn: Conn,
    /// What it keeps as a [`ChunkSink`].
    sink: Sink,
    /// How the server's repository names chunks (from its `info`).
    ids: rewind_core::ChunkIds,
}

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
            sink: Sink::default(),
            ids: rewind_core::ChunkIds::Plain,
        })
    }

    /// Name chunks as `ids` says: the server's repository's scheme, from
    /// [`ServerInfo::chunk_ids`] (an encrypted repository's keyed ids).
    pub fn set_chunk_ids(&mut self, ids: rewind_core::ChunkIds) {
        self.ids = ids;
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
    fn chunk_ids(&self) -> rewind_core::ChunkIds {
        self.ids.clone()
    }

    fn missing_chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>, RepoError> {
        // Chunks on their way count as there: the uploader asks this about
        // chunks the journal spooled after the sink stepped aside, some of
        // which capture had already handed to the senders.
        self.sink.drain(&self.conn);
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

    fn find(&self, _client: &str, q: &FindQuery) -> Result<FindReply, RepoError> {
        let b = self.conn.post("/v1/find", q)?;
        self.conn.decode(&b)
    }

    fn activity(&self, _client: &str, q: &ActivityQuery) -> Result<Vec<ActivityBucket>, RepoError> {
        let b = self.conn.post("/v1/activity", q)?;
        self.conn.decode(&b)
    }

    fn read_chunk(&self, id: &ChunkId) -> Result<Vec<u8>, RepoError> {
        let c = self.read_encoded(std::slice::from_ref(id))?;
        c[0].decode_as(&self.ids).map_err(|e| {
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
                out.push(c.decode_as(&self.ids).map_err(|e| {
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

    // Retention on a server is the server's: forget, prune and unpin are
    // asked of it all the same, so that the refusal (and its reason) is
    // the server's, enforced there.
    fn forget(&self, _client: &str, req: &ForgetRequest) -> Result<ForgetReport, RepoError> {
        let b = self.conn.post("/v1/forget", req)?;
        self.conn.decode(&b)
    }

    fn prune(
        &self,
        req: &PruneRequest,
        _pending: &mut PendingChunks<'_>,
    ) -> Result<PruneReport, RepoError> {
        let b = self.conn.post("/v1/prune", req)?;
        self.conn.decode(&b)
    }

    fn unpin(&self, _client: &str, id: u64) -> Result<(), RepoError> {
        self.conn.post("/v1/unpin", &id).map(|_| ())
    }

    fn pin(&self, _client: &str, at: Timestamp, label: Option<String>) -> Result<Pin, RepoError> {
        let b = self.conn.post("/v1/pin", &PinRequest { at, label })?;
        self.conn.decode(&b)
    }

    fn pins(&self, _client: &str) -> Result<Vec<Pin>, RepoError> {
        let b = self
            .conn
            .call(reqwest::Method::GET, "/v1/pins", None, None)?;
        self.conn.decode(&b)
    }

    fn retention(&self, _client: &str) -> Result<RetentionStatus, RepoError> {
        let b = self
            .conn
            .call(reqwest::Method::GET, "/v1/retention", None, None)?;
        self.conn.decode(&b)
    }
}

/// The sink's work is done by `Sink` (`sink.rs`), over this client's
/// connection.
impl ChunkSink for RemoteRepo {
    fn accepting(&self) -> bool {
        self.sink.accepting(&self.conn)
    }

    fn has_chunk(&self, id: &ChunkId) -> bool {
        self.sink.has_chunk(id)
    }

    fn send_ahead(&self, chunk: &EncodedChunk) {
        self.sink.send_ahead(&self.conn, chunk);
    }

    fn store_durably(&self, chunks: &[EncodedChunk]) -> Result<(), RepoError> {
        self.sink.store_durably(&self.conn, chunks)
    }

    fn commit_durably(
        &self,
        chunks: &[EncodedChunk],
        versions: &[Version],
    ) -> Result<(), RepoError> {
        self.sink.commit_durably(&self.conn, chunks, versions)
    }
}
