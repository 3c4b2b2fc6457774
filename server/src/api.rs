//! The HTTP API (routes and bodies in `rewind_core::wire`).
//!
//! Every handler authenticates first, decodes its body within
//! [`MAX_BODY`], and runs repository work on a blocking thread. Bad input
//! gets a 4xx status with a one-line reason; nothing from the network can
//! make a handler panic.
//!
//! What a request without valid credentials can cost, in order: a look at
//! its `Content-Length` (over [`SMALL_BODY`] on a route before
//! authentication: 413), a look at its address's brake (refused: 429 with
//! `Retry-After`), one of the few argon2 slots (none free: 503 with
//! `Retry-After`, at once), and only then one argon2. An enrollment body is
//! read only after the brake, within [`SMALL_BODY`] and
//! [`SMALL_BODY_TIME`].

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rewind_core::forget::SERVER_RETENTION;
use rewind_core::wire::{
    self, ChunkProblem, EnrollReply, EnrollRequest, ListQuery, MAX_BODY, MAX_IDS, POSTCARD,
    PathQuery, PinRequest, ServerInfo, VerifyChunks,
};
use rewind_core::{
    ActivityQuery, ChunkId, ChunkView, FindQuery, RepoError, RepoStats, Repository, Version,
};
use rewind_repo::LocalRepo;
use serde::Serialize;

use crate::auth::{Enrollment, Registry, Throttle, split_credential};
use crate::metrics::Metrics;
use crate::owners::Owners;
use crate::secrets::{Hashers, Slot, same};

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
    /// blake3 of the admin secret once it passed argon2 (a scraper then
    /// costs no argon2, and is served while strangers flood the slots).
    pub admin_ok: Mutex<Option<[u8; 32]>>,
    /// The argon2 slots.
    pub hashers: Arc<Hashers>,
    /// The data directory (the retention policies are read from it).
    pub data: crate::data::DataDir,
    /// What request bodies may hold of memory at once.
    pub bodies: crate::bodies::BodyBudget,
}

/// The peer of the connection a request came on.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// An error answer: a status, a one-line reason, and for a refusal to
/// come back later, when.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    reason: String,
    retry_after: Option<Duration>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", self.reason),
        )
            .into_response();
        if let Some(d) = self.retry_after {
            // Whole seconds, rounded up (RFC 9110).
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        r
    }
}

fn err(status: StatusCode, reason: impl Into<String>) -> ApiError {
    ApiError {
        status,
        reason: reason.into(),
        retry_after: None,
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    err(StatusCode::BAD_REQUEST, msg)
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
        err(status, e.to_string())
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
        .route("/v1/pin", post(pin))
        .route("/v1/pins", get(pins))
        .route("/v1/retention", get(retention))
        // Retention on a server is the server's: these are answered, with
        // a refusal, so that a client asking learns why.
        .route("/v1/forget", post(refused))
        .route("/v1/prune", post(refused))
        .route("/v1/unpin", post(refused))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(s)
}

/// Run repository work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!("request handler failed: {e}");
        err(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
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

/// Routes before authentication (`/healthz`, `/metrics`, `/v1/enroll`)
/// take bodies of at most this (an enrollment is about 150 bytes of JSON);
/// a larger `Content-Length` is refused before anything else is done.
pub const SMALL_BODY: usize = 4 << 10;

/// How long an enrollment body may take to arrive.
pub const SMALL_BODY_TIME: Duration = Duration::from_secs(10);

/// How soon a request refused for want of an argon2 slot should try
/// again: a slot frees within an argon2 (~20 ms here), so a second is
/// plenty, and the client's own retries (250 ms, 500 ms) come sooner.
const BUSY_RETRY: Duration = Duration::from_secs(1);

/// Refuse a body over [`SMALL_BODY`] by its `Content-Length`, before
/// anything is read or hashed.
fn small_body(headers: &HeaderMap) -> Result<(), ApiError> {
    let len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match len {
        Some(n) if n > SMALL_BODY as u64 => Err(err(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a body of {n} bytes before authentication (the limit is {SMALL_BODY})"),
        )),
        _ => Ok(()),
    }
}

/// Read a body of at most [`SMALL_BODY`] within [`SMALL_BODY_TIME`]
/// (for bodies without a `Content-Length`, or one that lies): reading
/// stops at the first byte over.
async fn read_small(mut body: axum::body::Body) -> Result<Bytes, ApiError> {
    use hyper::body::Body as _;
    let read = async {
        let mut buf = Vec::new();
        while let Some(frame) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
        {
            let frame = frame.map_err(|e| bad(format!("cannot read the body: {e}")))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > SMALL_BODY {
                    return Err(err(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("a body over {SMALL_BODY} bytes before authentication"),
                    ));
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(Bytes::from(buf))
    };
    tokio::time::timeout(SMALL_BODY_TIME, read)
        .await
        .unwrap_or_else(|_| {
            Err(err(
                StatusCode::REQUEST_TIMEOUT,
                format!("the body took longer than {SMALL_BODY_TIME:?}"),
            ))
        })
}

/// 429 while `ip` is braked after failures: checked before any work.
fn not_braked(s: &Server, ip: std::net::IpAddr) -> Result<(), ApiError> {
    match s.throttle.refused_for(ip) {
        None => Ok(()),
        Some(wait) => {
            s.metrics.throttled.fetch_add(1, Ordering::Relaxed);
            Err(ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                reason: "too many failed attempts from this address; try again later".into(),
                retry_after: Some(wait),
            })
        }
    }
}

/// An argon2 slot, or 503 at once.
fn slot(s: &Server) -> Result<Slot, ApiError> {
    s.hashers.try_take().ok_or_else(|| {
        s.metrics.argon2_busy.fetch_add(1, Ordering::Relaxed);
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason: "the server is busy checking credentials; try again".into(),
            retry_after: Some(BUSY_RETRY),
        }
    })
}

/// A failed attempt: the address is braked, the failure counted.
fn failed(s: &Server, ip: std::net::IpAddr, status: StatusCode, reason: String) -> ApiError {
    s.throttle.failed(ip);
    s.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
    err(status, reason)
}

const WRONG_KEY: &str = "unknown client or wrong key (was this client removed? enroll again)";

/// The authenticated client of a request. A key checked before costs a
/// blake3 and nothing else; any other credential is checked with one
/// argon2, the same for every name ([`Registry::authenticate`]), after the
/// brake and only in a free slot.
async fn client(s: &Shared, headers: &HeaderMap, peer: Peer) -> Result<String, ApiError> {
    let ip = peer.0.ip();
    let cred = bearer(headers).unwrap_or("");
    // A credential that cannot name any client (no colon, or a name no
    // client can have) is refused without argon2: its shape, not a name,
    // is what it reveals.
    let Some((name, key)) =
        split_credential(cred).filter(|(n, _)| crate::data::check_name(n).is_ok())
    else {
        not_braked(s, ip)?;
        return Err(failed(s, ip, StatusCode::UNAUTHORIZED, WRONG_KEY.into()));
    };
    if s.registry.cached(name, key) {
        return Ok(name.to_string());
    }
    not_braked(s, ip)?;
    let mut slot = slot(s)?;
    let (s2, n, k) = (s.clone(), name.to_string(), key.to_string());
    if blocking(move || Ok(s2.registry.authenticate(&mut slot, &n, &k))).await? {
        s.throttle.succeeded(ip);
        Ok(name.to_string())
    } else {
        Err(failed(s, ip, StatusCode::UNAUTHORIZED, WRONG_KEY.into()))
    }
}

/// An authenticated API request: the server, the client and the body, as
/// the handlers of authenticated routes take them.
struct Call {
    s: Shared,
    /// The authenticated client.
    client: String,
    body: Bytes,
    /// The body's share of the memory budget, given back when the handler
    /// is done with it.
    _charge: crate::bodies::Charge,
}

impl FromRequest<Shared> for Call {
    type Rejection = Response;

    async fn from_request(req: Request, s: &Shared) -> Result<Self, Self::Rejection> {
        let peer = req.extensions().get::<Peer>().copied().ok_or_else(|| {
            err(StatusCode::INTERNAL_SERVER_ERROR, "no peer address").into_response()
        })?;
        // Credentials first: nothing of an unauthenticated request's body
        // is read.
        let client = client(s, req.headers(), peer)
            .await
            .map_err(IntoResponse::into_response)?;
        // Memory for the body, or 503 at once: a request waiting here
        // with its body unread would hold HTTP/2 connection window that
        // the requests ahead of it on the same connection need (measured:
        // a deadlock with 20 clients). See `bodies.rs`.
        let len = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let charge = s.bodies.charge(len).ok_or_else(|| {
            s.metrics.bodies_busy.fetch_add(1, Ordering::Relaxed);
            ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                reason: "the server holds as many uploads in memory as it may \
                         (serve --max-body-memory); try again"
                    .into(),
                retry_after: Some(BUSY_RETRY),
            }
            .into_response()
        })?;
        let body = Bytes::from_request(req, s)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Call {
            s: s.clone(),
            client,
            body,
            _charge: charge,
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
        let (s, c, b, charge) = (self.s, self.client, self.body, self._charge);
        blocking(move || {
            let r = f(&s, &c, &b);
            drop((b, charge));
            r
        })
        .await
    }
}

async fn healthz(headers: HeaderMap) -> ApiResult {
    small_body(&headers)?;
    Ok("ok\n".into_response())
}

async fn metrics(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> ApiResult {
    small_body(&headers)?;
    let ip = peer.0.ip();
    let secret = bearer(&headers).unwrap_or("").to_string();
    let digest = *blake3::hash(secret.as_bytes()).as_bytes();
    let known = s
        .admin_ok
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_some_and(|d| same(&d, &digest));
    if !known {
        not_braked(&s, ip)?;
        let mut slot = slot(&s)?;
        let s2 = s.clone();
        if !blocking(move || Ok(slot.verify(&secret, &s2.admin_hash))).await? {
            return Err(failed(
                &s,
                ip,
                StatusCode::UNAUTHORIZED,
                "/metrics needs `Authorization: Bearer ADMIN_SECRET` (printed by init)".into(),
            ));
        }
        *s.admin_ok.lock().unwrap_or_else(|e| e.into_inner()) = Some(digest);
        s.throttle.succeeded(ip);
    }
    let s2 = s.clone();
    blocking(move || {
        let stats = s2.repo.stats()?;
        let text = s2
            .metrics
            .render(&stats, s2.registry.active().len(), s2.hashers.runs());
        Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
    })
    .await
}

async fn enroll(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    req: Request,
) -> ApiResult {
    small_body(req.headers())?;
    let ip = peer.0.ip();
    not_braked(&s, ip)?;
    let b = read_small(req.into_body()).await?;
    let req: EnrollRequest =
        serde_json::from_slice(&b).map_err(|e| bad(format!("malformed enrollment: {e}")))?;
    let mut slot = slot(&s)?;
    let s2 = s.clone();
    let name = req.name.clone();
    let outcome = blocking(move || {
        s2.registry
            .enroll(&mut slot, &req.name, &req.token)
            .map_err(|e| err(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")))
    })
    .await?;
    let again =
        format!("ask the server's administrator for a new one (rewind-server client add {name})");
    let refused = |reason: String| Err(failed(&s, ip, StatusCode::UNAUTHORIZED, reason));
    let key = match outcome {
        Enrollment::Key(key) => key,
        Enrollment::Refused => {
            return refused("enrollment refused: unknown client name or wrong token".into());
        }
        Enrollment::Used(at) => {
            return refused(format!(
                "enrollment refused: this token was already used (at {at}); {again}"
            ));
        }
        Enrollment::Expired(at) => {
            return refused(format!(
                "enrollment refused: this token expired at {at}; {again}"
            ));
        }
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
        chunk_id_key: s.repo.chunk_id_key_hex().map(|k| k.to_string()),
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
            ch.verify_as(&s.repo.chunk_ids())
                .map_err(|e| bad(format!("refused: {e}")))?;
        }
        let n = chunks.len() as u64;
        let bytes: u64 = chunks.iter().map(|c| c.data.len() as u64).sum();
        let ids: Vec<ChunkId> = chunks.iter().map(|c| c.id).collect();
        let own = s.owners.of(c)?;
        // What gets written depends on this client's own list only: a
        // chunk it has not uploaded before is written (into the open pack,
        // sealed by its next sync or commit) whether or not another client
        // stored it, so neither this request nor the sync after it takes
        // less time for content someone else holds (docs/decisions.md, "No
        // probing by timing"). A chunk it did upload is written again only
        // if a crash lost it.
        let owned: Vec<ChunkId> = ids.iter().filter(|id| own.has(id)).copied().collect();
        let lost: std::collections::HashSet<ChunkId> =
            s.repo.missing_chunks(&owned)?.into_iter().collect();
        let todo: Vec<ChunkView<'_>> = chunks
            .into_iter()
            .filter(|ch| !own.has(&ch.id) || lost.contains(&ch.id))
            .collect();
        if !todo.is_empty() {
            let written = s.repo.put_chunk_copies(&todo)?;
            s.metrics
                .chunks_written
                .fetch_add(written as u64, Ordering::Relaxed);
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

/// Chunks read together for a `read` request: a restore's window
/// (`RESTORE_WINDOW` in rewind-restore), at most 32 MiB with the largest
/// chunks.
const READ_GROUP: usize = 32;

async fn read(call: Call) -> ApiResult {
    call.run(|s, c, b| {
        let ids = ids(b)?;
        let own = s.owners.of(c)?;
        // Another client's chunk is as absent as one nobody has.
        if let Some(id) = ids.iter().find(|id| !own.has(id)) {
            return Err(RepoError::MissingChunk(*id).into());
        }
        let mut out = Vec::with_capacity(ids.len());
        let mut size = 0usize;
        // A group at a time, each read with few requests on an object
        // store; the size is checked between groups, so a request for too
        // much stops after at most one group more than fits.
        for group in ids.chunks(READ_GROUP) {
            for ch in s.repo.read_encoded_many(group)? {
                size += ch.data.len();
                if size > MAX_BODY - (1 << 20) {
                    return Err(bad(
                        "the chunks asked for exceed the reply size limit; ask for fewer",
                    ));
                }
                out.push(ch);
            }
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
                match s
                    .repo
                    .read_encoded(&id)
                    .map(|ch| ch.verify_as(&s.repo.chunk_ids()))
                {
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
        // Only what concerns this client: not even when another client
        // last committed.
        let mine = RepoStats {
            chunks: s.owners.of(c)?.len() as u64,
            ..s.repo.client_stats(c)
        };
        Ok(json(&mine))
    })
    .await
}

/// Most pins one client may hold on a server: pins keep history from
/// every rule, and a client (even one taken over) may add them, so their
/// number is bounded; a person pins a handful of moments.
pub const MAX_PINS: usize = 100;

/// Longest pin label, in bytes.
const MAX_LABEL: usize = 200;

/// A client pins a moment of its own history: allowed, as it deletes
/// nothing.
async fn pin(call: Call) -> ApiResult {
    call.run(|s, c, b| {
        let q: PinRequest = body(b)?;
        if q.label.as_ref().is_some_and(|l| l.len() > MAX_LABEL) {
            return Err(bad(format!("a pin label over {MAX_LABEL} bytes")));
        }
        if s.repo.pins(c)?.len() >= MAX_PINS {
            return Err(err(
                StatusCode::CONFLICT,
                format!("this client has {MAX_PINS} pins, the most a server keeps for one client; ask its admin"),
            ));
        }
        match s.repo.pin(c, q.at, q.label) {
            Ok(p) => Ok(postcard(&p)),
            Err(RepoError::Refused { reason }) => Err(bad(reason)),
            Err(e) => Err(e.into()),
        }
    })
    .await
}

async fn pins(call: Call) -> ApiResult {
    call.run(|s, c, _| Ok(postcard(&s.repo.pins(c)?))).await
}

/// The asking client's retention, with the policy the server applies to it.
async fn retention(call: Call) -> ApiResult {
    call.run(|s, c, _| {
        let mut r = s.repo.retention(c)?;
        // Repository-wide figures are not a client's business.
        r.last_prune = None;
        r.reclaimable = None;
        let policy = crate::retention::policy_for(&s.data, c).map_err(|e| {
            tracing::error!("{e:#}");
            err(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}"))
        })?;
        r.server_policy = Some(policy.to_string());
        Ok(postcard(&r))
    })
    .await
}

/// Forget, prune and unpin: never a client's to ask (see
/// [`SERVER_RETENTION`]). Refused after authentication, so a stranger
/// learns nothing more than from any other route.
async fn refused(call: Call) -> ApiResult {
    tracing::warn!(
        "client {} asked to forget, prune or unpin: refused",
        call.client
    );
    Err(err(StatusCode::FORBIDDEN, SERVER_RETENTION))
}
