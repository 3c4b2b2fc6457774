//! The HTTP API (routes and bodies in `rewind_core::wire`).
//!
//! Every handler authenticates first, decodes its body within
//! [`MAX_BODY`], and runs repository work on a blocking thread. Bad input
//! gets a 4xx status with a one-line reason; nothing from the network can
//! make a handler panic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rewind_core::wire::{
    self, ChunkProblem, EnrollReply, EnrollRequest, ListQuery, MAX_BODY, MAX_IDS, POSTCARD,
    PathQuery, ServerInfo, VerifyChunks,
};
use rewind_core::{
    ActivityQuery, ChunkId, ChunkView, FindQuery, RepoError, RepoStats, Repository, Version,
};
use rewind_repo::LocalRepo;
use serde::Serialize;

use crate::auth::{Registry, Throttle};
use crate::owners::Owners;
use crate::secrets;

/// Everything the handlers share.
pub struct Server {
    /// The repository.
    pub repo: LocalRepo,
    /// Client registry.
    pub registry: Registry,
    /// Per-client chunk lists.
    pub owners: Owners,
    /// Brake on guessing.
    pub throttle: Throttle,
    /// Counters for /metrics.
    pub metrics: Metrics,
    /// argon2 hash of the admin secret.
    pub admin_hash: String,
}

/// The peer of the connection a request came on.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// Counters, exported at /metrics.
#[derive(Default)]
pub struct Metrics {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Answers with a 4xx status.
    pub client_errors: AtomicU64,
    /// Answers with a 5xx status.
    pub server_errors: AtomicU64,
    /// Failed authentications and enrollments.
    pub auth_failures: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub tls_failures: AtomicU64,
    /// Chunks received.
    pub chunks_received: AtomicU64,
    /// Bytes of chunk data received (as sent: compressed).
    pub chunk_bytes_received: AtomicU64,
    /// Chunks sent to restoring clients.
    pub chunks_sent: AtomicU64,
    /// Versions committed.
    pub versions_committed: AtomicU64,
    /// Commits.
    pub commits: AtomicU64,
    /// Sync requests (chunks made durable ahead of a commit).
    pub syncs: AtomicU64,
    /// Chunks checked for clients' `rewind verify`.
    pub chunks_verified: AtomicU64,
}

impl Metrics {
    fn render(&self, repo: &RepoStats, clients: usize) -> String {
        let mut out = String::new();
        let mut put = |name: &str, kind: &str, help: &str, v: u64| {
            out.push_str(&format!(
                "# HELP rewind_{name} {help}\n# TYPE rewind_{name} {kind}\nrewind_{name} {v}\n"
            ));
        };
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        put(
            "requests_total",
            "counter",
            "Requests answered.",
            c(&self.requests),
        );
        put(
            "client_errors_total",
            "counter",
            "Answers with a 4xx status.",
            c(&self.client_errors),
        );
        put(
            "server_errors_total",
            "counter",
            "Answers with a 5xx status.",
            c(&self.server_errors),
        );
        put(
            "auth_failures_total",
            "counter",
            "Failed authentications and enrollments.",
            c(&self.auth_failures),
        );
        put(
            "connections_total",
            "counter",
            "Connections accepted.",
            c(&self.connections),
        );
        put(
            "connections_open",
            "gauge",
            "Connections open now.",
            c(&self.connections_open),
        );
        put(
            "tls_failures_total",
            "counter",
            "TLS handshakes that failed or timed out.",
            c(&self.tls_failures),
        );
        put(
            "chunks_received_total",
            "counter",
            "Chunks received.",
            c(&self.chunks_received),
        );
        put(
            "chunk_bytes_received_total",
            "counter",
            "Bytes of chunk data received, as sent.",
            c(&self.chunk_bytes_received),
        );
        put(
            "chunks_sent_total",
            "counter",
            "Chunks sent to restoring clients.",
            c(&self.chunks_sent),
        );
        put(
            "versions_committed_total",
            "counter",
            "Versions committed.",
            c(&self.versions_committed),
        );
        put("commits_total", "counter", "Commits.", c(&self.commits));
        put(
            "syncs_total",
            "counter",
            "Requests to make uploaded chunks durable ahead of a commit.",
            c(&self.syncs),
        );
        put(
            "chunks_verified_total",
            "counter",
            "Chunks checked for clients' verify requests.",
            c(&self.chunks_verified),
        );
        put(
            "repository_versions",
            "gauge",
            "Versions stored.",
            repo.versions,
        );
        put(
            "repository_chunks",
            "gauge",
            "Distinct chunks stored.",
            repo.chunks,
        );
        put("repository_packs", "gauge", "Pack files.", repo.packs);
        put(
            "repository_pack_bytes",
            "gauge",
            "Bytes of pack files.",
            repo.pack_bytes,
        );
        put(
            "clients",
            "gauge",
            "Enrolled or pending clients.",
            clients as u64,
        );
        out
    }
}

/// An error answer: a status and a one-line reason.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", self.1),
        )
            .into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> ApiError {
        let status = match &e {
            RepoError::DanglingVersion { .. } | RepoError::BadQuery(_) => StatusCode::BAD_REQUEST,
            RepoError::MissingChunk(_) => StatusCode::NOT_FOUND,
            RepoError::Io { .. } | RepoError::Locked { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!("{e}");
        }
        ApiError(status, e.to_string())
    }
}

type Shared = Arc<Server>;
type ApiResult = Result<Response, ApiError>;

/// The routes.
pub fn router(s: Shared) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/enroll", post(enroll))
        .route("/v1/info", get(info))
        .route("/v1/missing", post(missing))
        .route("/v1/chunks", post(chunks))
        .route("/v1/sync", post(sync))
        .route("/v1/commit", post(commit))
        .route("/v1/versions", post(versions))
        .route("/v1/tree", post(tree))
        .route("/v1/covers", post(covers))
        .route("/v1/find", post(find))
        .route("/v1/activity", post(activity))
        .route("/v1/read", post(read))
        .route("/v1/stats", get(stats))
        .route("/v1/list", post(list))
        .route("/v1/verify", post(verify))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(s)
}

/// Run repository work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!("request handler failed: {e}");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
    })?
}

fn postcard<T: Serialize>(v: &T) -> Response {
    ([(header::CONTENT_TYPE, POSTCARD)], wire::encode(v)).into_response()
}

fn json<T: Serialize>(v: &T) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(v).unwrap_or_default(),
    )
        .into_response()
}

fn body<'a, T: serde::Deserialize<'a>>(b: &'a [u8]) -> Result<T, ApiError> {
    wire::decode(b).map_err(|e| bad(format!("malformed request body: {e}")))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// The authenticated client of a request, or 401 (after the address's
/// current delay, which grows with each failure).
async fn client(s: &Shared, headers: &HeaderMap, peer: Peer) -> Result<String, ApiError> {
    let ip = peer.0.ip();
    let delay = s.throttle.delay(ip);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let cred = bearer(headers).unwrap_or("").to_string();
    let s2 = s.clone();
    let who = blocking(move || Ok(s2.registry.authenticate(&cred))).await?;
    match who {
        Some(name) => {
            if !delay.is_zero() {
                s.throttle.succeeded(ip);
            }
            Ok(name)
        }
        None => {
            s.throttle.failed(ip);
            s.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
            Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "unknown client or wrong key (was this client removed? enroll again)".into(),
            ))
        }
    }
}

/// An authenticated API request: the server, the client and the body, as
/// the handlers of authenticated routes take them.
struct Call {
    s: Shared,
    /// The authenticated client.
    client: String,
    body: Bytes,
}

impl FromRequest<Shared> for Call {
    type Rejection = Response;

    async fn from_request(req: Request, s: &Shared) -> Result<Self, Self::Rejection> {
        let peer = req.extensions().get::<Peer>().copied().ok_or_else(|| {
            ApiError(StatusCode::INTERNAL_SERVER_ERROR, "no peer address".into()).into_response()
        })?;
        // Credentials first: nothing of an unauthenticated request's body
        // is read.
        let client = client(s, req.headers(), peer)
            .await
            .map_err(IntoResponse::into_response)?;
        // No cap on uploads in flight here: a request waiting for a slot
        // without reading its body would hold HTTP/2 connection window
        // that the slot holders on the same connection need (measured: a
        // deadlock with 20 clients).
        let body = Bytes::from_request(req, s)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Call {
            s: s.clone(),
            client,
            body,
        })
    }
}

impl Call {
    /// Run `f` with the server, the client's name and the body on a
    /// blocking thread.
    async fn run(
        self,
        f: impl FnOnce(&Server, &str, &[u8]) -> Result<Response, ApiError> + Send + 'static,
    ) -> ApiResult {
        let (s, c, b) = (self.s, self.client, self.body);
        blocking(move || f(&s, &c, &b)).await
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> ApiResult {
    let ip = peer.0.ip();
    let delay = s.throttle.delay(ip);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let secret = bearer(&headers).unwrap_or("").to_string();
    let s2 = s.clone();
    blocking(move || {
        if !secrets::verify_secret(&secret, &s2.admin_hash) {
            s2.throttle.failed(ip);
            s2.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "/metrics needs `Authorization: Bearer ADMIN_SECRET` (printed by init)".into(),
            ));
        }
        let stats = s2.repo.stats()?;
        let text = s2.metrics.render(&stats, s2.registry.active().len());
        Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
    })
    .await
}

async fn enroll(State(s): State<Shared>, Extension(peer): Extension<Peer>, b: Bytes) -> ApiResult {
    let ip = peer.0.ip();
    let delay = s.throttle.delay(ip);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let req: EnrollRequest =
        serde_json::from_slice(&b).map_err(|e| bad(format!("malformed enrollment: {e}")))?;
    let s2 = s.clone();
    let name = req.name.clone();
    let key = blocking(move || {
        s2.registry
            .enroll(&req.name, &req.token)
            .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")))
    })
    .await?;
    let Some(key) = key else {
        s.throttle.failed(ip);
        s.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "enrollment refused: unknown client name, wrong token, or token already used".into(),
        ));
    };
    s.throttle.succeeded(ip);
    tracing::info!("client {name} enrolled from {}", peer.0);
    Ok(json(&EnrollReply {
        key,
        info: server_info(&s, &name),
    }))
}

fn server_info(s: &Server, client: &str) -> ServerInfo {
    ServerInfo {
        repo_id: s.repo.id().to_string(),
        chunker: s.repo.chunker(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        client: client.to_string(),
    }
}

async fn info(call: Call) -> ApiResult {
    call.run(|s, c, _| Ok(json(&server_info(s, c)))).await
}

fn ids(b: &[u8]) -> Result<Vec<ChunkId>, ApiError> {
    let ids: Vec<ChunkId> = body(b)?;
    if ids.len() > MAX_IDS {
        return Err(bad(format!(
            "{} chunk ids in one request (the limit is {MAX_IDS})",
            ids.len()
        )));
    }
    Ok(ids)
}

async fn missing(call: Call) -> ApiResult {
    call.run(|s, c, b| {
        let ids = ids(b)?;
        let own = s.owners.of(c)?;
        // Missing for this client: never uploaded by it, or (after a crash
        // that lost an unsynced chunk) not in the repository any more.
        let mut out = own.not_owned(&ids);
        let owned: Vec<ChunkId> = {
            let not: std::collections::HashSet<&ChunkId> = out.iter().collect();
            ids.iter().filter(|i| !not.contains(i)).copied().collect()
        };
        out.extend(s.repo.missing_chunks(&owned)?);
        Ok(postcard(&out))
    })
    .await
}

async fn chunks(call: Call) -> ApiResult {
    call.run(|s, c, b| {
        // Read in place: each chunk's bytes stay in the request body.
        let chunks: Vec<ChunkView<'_>> = body(b)?;
        // Each chunk is decoded and hashed before it is stored: bytes that
        // do not match their id are refused, and nothing of the request is
        // kept.
        // Deltas ([`rewind_core::Encoding::Delta`]) are refused: checking
        // one means reading its base, which must be one of this client's
        // chunks, and clients send whole chunks to a server.
        for ch in &chunks {
            if let Some(base) = ch.base() {
                return Err(bad(format!(
                    "refused: chunk {} is a delta against chunk {base}; this server takes whole chunks only",
                    ch.id
                )));
            }
            ch.verify().map_err(|e| bad(format!("refused: {e}")))?;
        }
        let n = chunks.len() as u64;
        let bytes: u64 = chunks.iter().map(|c| c.data.len() as u64).sum();
        let ids: Vec<ChunkId> = chunks.iter().map(|c| c.id).collect();
        let own = s.owners.of(c)?;
        let new = s.repo.missing_chunks(&ids)?;
        let new: std::collections::HashSet<ChunkId> = new.into_iter().collect();
        let fresh: Vec<ChunkView<'_>> = chunks.into_iter().filter(|c| new.contains(&c.id)).collect();
        if !fresh.is_empty() {
            s.repo.put_chunk_views(&fresh)?;
        }
        own.add(ids)?;
        s.metrics.chunks_received.fetch_add(n, Ordering::Relaxed);
        s.metrics
            .chunk_bytes_received
            .fetch_add(bytes, Ordering::Relaxed);
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

/// Make every chunk this client uploaded so far durable (its list of
/// chunks, and the open pack sealed): a client that hands chunks straight
/// from capture calls this before it records versions that refer to them.
async fn sync(call: Call) -> ApiResult {
    call.run(|s, c, _| {
        s.owners.of(c)?.sync()?;
        rewind_core::ChunkSink::store_durably(&s.repo, &[])?;
        s.metrics.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

async fn commit(call: Call) -> ApiResult {
    call.run(|s, c, b| {
        let versions: Vec<Version> = body(b)?;
        let own = s.owners.of(c)?;
        for v in &versions {
            if v.client != c {
                return Err(bad(format!(
                    "version {} names client {:?}, but these credentials are {c:?}",
                    v.seq, v.client
                )));
            }
            if let Some(r) = v.chunk_refs().find(|r| !own.has(&r.id)) {
                return Err(bad(format!(
                    "version {} of {} refers to chunk {} which this client has not uploaded",
                    v.seq,
                    rewind_core::path::display(&v.path),
                    r.id
                )));
            }
        }
        let n = versions.len() as u64;
        own.sync()?;
        s.repo.commit_versions(versions)?;
        s.metrics.commits.fetch_add(1, Ordering::Relaxed);
        s.metrics.versions_committed.fetch_add(n, Ordering::Relaxed);
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

async fn versions(call: Call) -> ApiResult {
    call.run(|s, c, b| {
        let q: PathQuery = body(b)?;
        Ok(postcard(&s.repo.versions_of(c, &q.path)?))
    })
    .await
}

async fn tree(call: Call) -> ApiResult {
    call.run(|s, c, b| {
        let q: PathQuery = body(b)?;
        let at =
            q.at.ok_or_else(|| bad("a tree query needs a point in time"))?;
        Ok(postcard(&s.repo.tree_at(c, &q.path, at)?))
    })
    .await
}

async fn covers(call: Call) -> ApiResult {
    call.run(|s, c, b| {
        let q: PathQuery = body(b)?;
        Ok(postcard(&s.repo.covers(c, &q.path)?))
    })
    .await
}

/// The asking client's paths that match, with when each existed: the
/// search runs here, over the client's own versions only, and only the hits
/// go back.
async fn find(call: Call) -> ApiResult {
    call.run(|s, c, b| {
        let q: FindQuery = body(b)?;
        Ok(postcard(&s.repo.find(c, &q)?))
    })
    .await
}

/// The asking client's versions counted in windows of time.
async fn activity(call: Call) -> ApiResult {
    call.run(|s, c, b| {
        let q: ActivityQuery = body(b)?;
        Ok(postcard(&s.repo.activity(c, &q)?))
    })
    .await
}

async fn read(call: Call) -> ApiResult {
    call.run(|s, c, b| {
        let ids = ids(b)?;
        let own = s.owners.of(c)?;
        let mut out = Vec::with_capacity(ids.len());
        let mut size = 0usize;
        for id in &ids {
            // Another client's chunk is as absent as one nobody has.
            if !own.has(id) {
                return Err(RepoError::MissingChunk(*id).into());
            }
            let ch = s.repo.read_encoded(id)?;
            size += ch.data.len();
            if size > MAX_BODY - (1 << 20) {
                return Err(bad(
                    "the chunks asked for exceed the reply size limit; ask for fewer",
                ));
            }
            out.push(ch);
        }
        s.metrics
            .chunks_sent
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(postcard(&out))
    })
    .await
}

/// Most versions in one `list` page.
const MAX_PAGE: u32 = 50_000;

async fn list(call: Call) -> ApiResult {
    call.run(|s, c, b| {
        let q: ListQuery = body(b)?;
        let limit = q.limit.clamp(1, MAX_PAGE) as usize;
        Ok(postcard(&s.repo.list_page(c, q.after.as_deref(), limit)))
    })
    .await
}

/// Check the asking client's chunks on disk: each must be one it uploaded,
/// be indexed, and (unless quick) read back, decompress and hash to its id.
async fn verify(call: Call) -> ApiResult {
    call.run(|s, c, b| {
        let q: VerifyChunks = body(b)?;
        if q.ids.len() > MAX_IDS {
            return Err(bad(format!(
                "{} chunk ids in one request (the limit is {MAX_IDS})",
                q.ids.len()
            )));
        }
        s.metrics
            .chunks_verified
            .fetch_add(q.ids.len() as u64, Ordering::Relaxed);
        let own = s.owners.of(c)?;
        let problem = |id: ChunkId, reason: &str, detail: String| ChunkProblem {
            id,
            reason: reason.into(),
            detail,
        };
        let mut out = Vec::new();
        let mut owned = Vec::with_capacity(q.ids.len());
        for id in q.ids {
            if own.has(&id) {
                owned.push(id);
            } else {
                out.push(problem(id, "missing", "not uploaded by this client".into()));
            }
        }
        if q.quick {
            for id in s.repo.missing_chunks(&owned)? {
                out.push(problem(
                    id,
                    "missing",
                    "not in the repository's index".into(),
                ));
            }
        } else {
            for id in owned {
                match s.repo.read_encoded(&id).map(|ch| ch.verify()) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => out.push(problem(id, "damaged", e.to_string())),
                    Err(RepoError::MissingChunk(_)) => {
                        out.push(problem(id, "missing", "not in the repository".into()))
                    }
                    Err(e) => out.push(problem(id, "damaged", e.to_string())),
                }
            }
        }
        Ok(postcard(&out))
    })
    .await
}

async fn stats(call: Call) -> ApiResult {
    call.run(|s, c, _| {
        let all = s.repo.stats()?;
        let own = s.owners.of(c)?;
        // Only what concerns this client.
        let mine = RepoStats {
            versions: s.repo.client_versions(c),
            chunks: own.len() as u64,
            packs: 0,
            pack_bytes: 0,
            last_commit: all.last_commit,
            max_seq: all.max_seq.into_iter().filter(|(n, _)| n == c).collect(),
        };
        Ok(json(&mine))
    })
    .await
}
