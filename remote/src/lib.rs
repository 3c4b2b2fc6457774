//! rewind-remote: the [`Repository`] of a `rewind-server`, over HTTPS.
//!
//! TLS 1.3 with the server's certificate pinned by fingerprint (see
//! [`tls`]); each request carries the client's name and key; bulk bodies
//! are postcard (`rewind_core::wire`). Transient trouble (connection
//! refused, timeouts, 5xx) is retried a few times here and then reported
//! as a transient [`RepoError::Remote`], which the uploader retries with
//! backoff; refusals (401, 400) are reported at once, not retried.

mod ahead;
pub mod throttle;
pub mod tls;

use std::collections::HashSet;
use std::io::Read;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::blocking::{Body, Client};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use rewind_core::wire::{
    self, ChunkProblem, EnrollReply, EnrollRequest, ListQuery, MAX_BODY, POSTCARD, PathQuery,
    ServerInfo, VerifyChunks,
};
use rewind_core::{
    ChunkId, ChunkSink, EncodedChunk, RepoError, RepoStats, Repository, Timestamp, Version,
};
use serde::{Deserialize, Serialize};

pub use throttle::{Limiter, RateSchedule};

/// What a client needs to reach its server; written at enrollment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoteConfig {
    /// `https://host:port`.
    pub url: String,
    /// The client's name on the server.
    pub client: String,
    /// The client's key.
    pub key: String,
    /// The pinned certificate fingerprint (`SHA256:…`).
    pub fingerprint: String,
}

/// The most chunks asked for in one `read` request during restores.
pub const READ_BATCH: usize = 64;

/// Attempts per request for transient failures (the uploader retries
/// further with its own backoff).
const ATTEMPTS: u32 = 3;

/// Check and normalise a server URL: `https://host[:port]`, no path.
pub fn normalize_url(url: &str) -> Result<String, String> {
    let u = reqwest::Url::parse(url.trim())
        .map_err(|e| format!("not a server URL: {url:?} ({e}); use https://HOST:PORT"))?;
    if u.scheme() != "https" {
        return Err(format!("{url}: only https:// servers are supported"));
    }
    if u.host_str().is_none() {
        return Err(format!("{url}: no host"));
    }
    if !(u.path() == "/" || u.path().is_empty()) || u.query().is_some() {
        return Err(format!(
            "{url}: give the server only (https://HOST:PORT), no path"
        ));
    }
    let mut s = u.to_string();
    while s.ends_with('/') {
        s.pop();
    }
    Ok(s)
}

fn remote(url: &str, reason: impl Into<String>, transient: bool) -> RepoError {
    RepoError::Remote {
        url: url.to_string(),
        reason: reason.into(),
        transient,
    }
}

/// A client of one server.
pub struct RemoteRepo {
    conn: Conn,
    /// As a [`ChunkSink`]: chunks the server confirmed durable for us.
    stored: Mutex<HashSet<ChunkId>>,
    /// As a [`ChunkSink`]: when to take chunks again after a slow store.
    /// (After a failure the uploader's backoff decides.)
    slow_until: Mutex<Option<Instant>>,
    /// As a [`ChunkSink`]: chunks on their way before the journal's flush.
    ahead: ahead::Ahead,
}

/// How requests reach the server; shared with the threads that send
/// chunks ahead.
#[derive(Clone)]
pub(crate) struct Conn {
    url: String,
    auth: String,
    http: Client,
    pinned: Arc<tls::Pinned>,
    limiter: Option<Arc<Limiter>>,
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

/// The ids remembered as stored; past this the set starts again (a
/// forgotten id costs a compression and a `missing` question, nothing more).
const SINK_REMEMBERED: usize = 1 << 20;

impl std::fmt::Debug for RemoteRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRepo")
            .field("url", &self.conn.url)
            .finish()
    }
}

fn http_client(fingerprint: Option<&str>) -> Result<(Client, Arc<tls::Pinned>), RepoError> {
    let (cfg, pinned) = tls::client_config(fingerprint);
    let http = Client::builder()
        .use_preconfigured_tls(cfg)
        .https_only(true)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(300))
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| remote("", format!("cannot set up HTTPS: {e}"), false))?;
    Ok((http, pinned))
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
        let (http, pinned) = http_client(Some(&fp))?;
        Ok(RemoteRepo {
            conn: Conn {
                url,
                auth: format!("Bearer {}:{}", cfg.client, cfg.key),
                http,
                pinned,
                limiter: None,
            },
            stored: Mutex::new(HashSet::new()),
            slow_until: Mutex::new(None),
            ahead: ahead::Ahead::default(),
        })
    }

    /// Pace chunk uploads by `schedule`.
    pub fn set_upload_limit(&mut self, schedule: RateSchedule) {
        self.conn.limiter = Some(Arc::new(Limiter::new(schedule)));
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.conn.url
    }

    /// Ask the server who it is and who we are.
    pub fn info(&self) -> Result<ServerInfo, RepoError> {
        let b = self.call(reqwest::Method::GET, "/v1/info", None, None)?;
        serde_json::from_slice(&b).map_err(|e| self.malformed(e))
    }

    fn malformed(&self, e: impl std::fmt::Display) -> RepoError {
        remote(&self.conn.url, format!("malformed reply: {e}"), false)
    }

    fn call(
        &self,
        method: reqwest::Method,
        route: &str,
        body: Option<Vec<u8>>,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, RepoError> {
        self.conn
            .call(method, route, body.map(bytes::Bytes::from), timeout)
    }

    fn post<T: Serialize>(&self, route: &str, v: &T) -> Result<Vec<u8>, RepoError> {
        self.call(reqwest::Method::POST, route, Some(wire::encode(v)), None)
    }

    /// [`post`](Self::post) for the sink: capture waits on it, so a server
    /// that stalls is given up on sooner (the journal spools instead).
    fn sink_post<T: Serialize>(&self, route: &str, v: &T) -> Result<Vec<u8>, RepoError> {
        self.call(
            reqwest::Method::POST,
            route,
            Some(wire::encode(v)),
            Some(SINK_TIMEOUT),
        )
    }

    fn decode<T: for<'a> Deserialize<'a>>(&self, b: &[u8]) -> Result<T, RepoError> {
        wire::decode(b).map_err(|e| self.malformed(e))
    }

    /// One page of every version this client has on the server, in path
    /// order: the paths after `after`, each whole, until at least `limit`
    /// versions. An empty page is the end.
    pub fn list_page(&self, after: Option<&[u8]>, limit: u32) -> Result<Vec<Version>, RepoError> {
        let b = self.post(
            "/v1/list",
            &ListQuery {
                after: after.map(<[u8]>::to_vec),
                limit,
            },
        )?;
        self.decode(&b)
    }

    /// Have the server check these chunks of ours on its disk (`quick`:
    /// that they are indexed; otherwise read, decompress and hash each).
    /// Returns the ones that failed.
    pub fn verify_chunks(
        &self,
        quick: bool,
        ids: &[ChunkId],
    ) -> Result<Vec<ChunkProblem>, RepoError> {
        let b = self.post(
            "/v1/verify",
            &VerifyChunks {
                quick,
                ids: ids.to_vec(),
            },
        )?;
        let got: Vec<ChunkProblem> = self.decode(&b)?;
        let asked: std::collections::HashSet<&ChunkId> = ids.iter().collect();
        if got.iter().any(|p| !asked.contains(&p.id)) {
            return Err(self.malformed("the server reported on chunks not asked about"));
        }
        Ok(got)
    }

    /// Several chunks as stored, checked against their ids on decode by the
    /// caller.
    pub fn read_encoded(&self, ids: &[ChunkId]) -> Result<Vec<EncodedChunk>, RepoError> {
        let b = self.post("/v1/read", &ids)?;
        let got: Vec<EncodedChunk> = self.decode(&b)?;
        if got.len() != ids.len() || got.iter().zip(ids).any(|(c, id)| c.id != *id) {
            return Err(self.malformed("the server sent other chunks than asked for"));
        }
        Ok(got)
    }
}

impl Conn {
    fn net_error(&self, e: reqwest::Error) -> RepoError {
        net_error(&self.url, &self.pinned, e)
    }

    /// One request, retried on transient failure.
    pub(crate) fn call(
        &self,
        method: reqwest::Method,
        route: &str,
        body: Option<bytes::Bytes>,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, RepoError> {
        let mut delay = Duration::from_millis(250);
        let mut attempt = 1;
        loop {
            // `Bytes`: the body is shared, not copied, between attempts.
            match self.call_once(method.clone(), route, body.clone(), timeout) {
                Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                    tracing::debug!("{route}: {e}; retrying");
                    std::thread::sleep(delay);
                    delay *= 2;
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    fn call_once(
        &self,
        method: reqwest::Method,
        route: &str,
        body: Option<bytes::Bytes>,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, RepoError> {
        let mut req = self
            .http
            .request(method, format!("{}{route}", self.url))
            .header(AUTHORIZATION, &self.auth);
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        if let Some(b) = body {
            req = req.header(CONTENT_TYPE, POSTCARD);
            req = match (&self.limiter, route) {
                (Some(l), "/v1/chunks") => {
                    let len = b.len() as u64;
                    req.body(Body::sized(throttle::Paced::new(b, l.clone()), len))
                }
                _ => req.body(b),
            };
        }
        let resp = req.send().map_err(|e| self.net_error(e))?;
        read_reply(&self.url, resp)
    }

    /// The server's URL.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }
}

fn read_reply(url: &str, resp: reqwest::blocking::Response) -> Result<Vec<u8>, RepoError> {
    let status = resp.status();
    let mut buf = Vec::new();
    resp.take(MAX_BODY as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| remote(url, format!("reading the reply: {e}"), true))?;
    if buf.len() > MAX_BODY {
        return Err(remote(url, "reply over the size limit", false));
    }
    if status.is_success() {
        return Ok(buf);
    }
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().next().unwrap_or("").trim();
    let transient = status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT;
    let reason = match status {
        StatusCode::UNAUTHORIZED => format!("refused: {line}"),
        _ if line.is_empty() => format!("{status}"),
        _ => format!("{status}: {line}"),
    };
    Err(remote(url, reason, transient))
}

fn net_error(url: &str, pinned: &tls::Pinned, e: reqwest::Error) -> RepoError {
    if let (Some(seen), Some(pin)) = (pinned.seen(), pinned.expected())
        && seen != pin
    {
        return remote(
            url,
            format!(
                "the server's certificate changed: it presents {seen}, but {pin} was pinned at enrollment; \
                 if the server was set up again on purpose, enroll again (rewind enroll … --fingerprint {seen})"
            ),
            false,
        );
    }
    // The innermost cause says the most (connection refused, timeout).
    let mut cause = e.to_string();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(s) = src {
        cause = s.to_string();
        src = s.source();
    }
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    remote(url, format!("{what}: {cause}"), true)
}

impl Repository for RemoteRepo {
    fn missing_chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>, RepoError> {
        // Chunks on their way count as there: the uploader asks this about
        // chunks the journal spooled after the sink stepped aside, some of
        // which capture had already handed to the senders.
        self.ahead.drain(&self.conn);
        let mut out = Vec::new();
        for part in ids.chunks(wire::MAX_IDS) {
            let b = self.post("/v1/missing", &part)?;
            out.extend(self.decode::<Vec<ChunkId>>(&b)?);
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
            self.post("/v1/chunks", &&chunks[start..end])?;
            start = end;
        }
        Ok(())
    }

    fn commit_versions(&self, versions: Vec<Version>) -> Result<(), RepoError> {
        self.post("/v1/commit", &versions).map(|_| ())
    }

    fn versions_of(&self, _client: &str, path: &[u8]) -> Result<Vec<Version>, RepoError> {
        let b = self.post(
            "/v1/versions",
            &PathQuery {
                path: path.to_vec(),
                at: None,
            },
        )?;
        self.decode(&b)
    }

    fn tree_at(
        &self,
        _client: &str,
        path: &[u8],
        at: Timestamp,
    ) -> Result<Vec<Version>, RepoError> {
        let b = self.post(
            "/v1/tree",
            &PathQuery {
                path: path.to_vec(),
                at: Some(at),
            },
        )?;
        self.decode(&b)
    }

    fn covers(&self, _client: &str, path: &[u8]) -> Result<bool, RepoError> {
        let b = self.post(
            "/v1/covers",
            &PathQuery {
                path: path.to_vec(),
                at: None,
            },
        )?;
        self.decode(&b)
    }

    fn read_chunk(&self, id: &ChunkId) -> Result<Vec<u8>, RepoError> {
        let c = self.read_encoded(std::slice::from_ref(id))?;
        c[0].decode().map_err(|e| {
            remote(
                &self.conn.url,
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
                        &self.conn.url,
                        format!("damaged chunk from the server: {e}"),
                        false,
                    )
                })?);
            }
        }
        Ok(out)
    }

    fn stats(&self) -> Result<RepoStats, RepoError> {
        let b = self.call(reqwest::Method::GET, "/v1/stats", None, None)?;
        serde_json::from_slice(&b).map_err(|e| self.malformed(e))
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
            missing.extend(self.decode::<Vec<ChunkId>>(&b)?);
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

    /// Time one store as a sink: a store slower than the spool would be
    /// pauses the sink. (A failure is the caller's to retry: the
    /// uploader's direct path steps aside under its own backoff.)
    fn as_sink(
        &self,
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
                    self.conn.url,
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

/// Capture hands chunks straight to the server while it keeps up (no
/// upload limit, faster than [`SINK_MIN_RATE`]) and the uploader's direct
/// path has no failure to wait out; the journal spools them otherwise, and
/// the uploader moves them later.
impl ChunkSink for RemoteRepo {
    fn accepting(&self) -> bool {
        if self.conn.limiter.is_some() {
            return false;
        }
        let slow = self.slow_until.lock().unwrap_or_else(|p| p.into_inner());
        slow.is_none_or(|until| Instant::now() >= until)
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

/// Connect to `url` and return the fingerprint of the certificate it
/// presents (for trust on first use: show it, ask, then pin it).
pub fn probe_fingerprint(url: &str) -> Result<String, RepoError> {
    let url = normalize_url(url).map_err(|m| remote(url, m, false))?;
    let u = reqwest::Url::parse(&url).map_err(|e| remote(&url, e.to_string(), false))?;
    let host = u
        .host_str()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();
    let port = u.port_or_known_default().unwrap_or(443);
    let (cfg, pinned) = tls::client_config(None);
    let name = rustls_pki_types::ServerName::try_from(host.clone())
        .map_err(|e| remote(&url, format!("bad host name: {e}"), false))?;
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name)
        .map_err(|e| remote(&url, format!("TLS: {e}"), false))?;
    let addr = format!(
        "{}:{port}",
        if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        }
    );
    let mut tcp = TcpStream::connect(&addr)
        .map_err(|e| remote(&url, format!("cannot connect: {e}"), true))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .map_err(|e| remote(&url, format!("TLS handshake: {e}"), true))?;
    }
    pinned
        .seen()
        .ok_or_else(|| remote(&url, "the server presented no certificate", false))
}

/// Enroll as `name` with a one-time `token` at the server pinned to
/// `fingerprint`; returns the client's key and the server's description.
pub fn enroll(
    url: &str,
    fingerprint: &str,
    name: &str,
    token: &str,
) -> Result<EnrollReply, RepoError> {
    let url = normalize_url(url).map_err(|m| remote(url, m, false))?;
    let fp = wire::parse_fingerprint(fingerprint).ok_or_else(|| {
        remote(
            &url,
            format!("not a fingerprint: {fingerprint:?} (SHA256: and 64 hex digits)"),
            false,
        )
    })?;
    let (http, pinned) = http_client(Some(&fp))?;
    let body = serde_json::to_vec(&EnrollRequest {
        name: name.to_string(),
        token: token.trim().to_string(),
    })
    .expect("serializable");
    let resp = http
        .post(format!("{url}/v1/enroll"))
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .map_err(|e| net_error(&url, &pinned, e))?;
    let b = read_reply(&url, resp)?;
    serde_json::from_slice(&b).map_err(|e| remote(&url, format!("malformed reply: {e}"), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert_eq!(normalize_url("https://h:8443/").unwrap(), "https://h:8443");
        assert_eq!(
            normalize_url(" https://[::1]:9 ").unwrap(),
            "https://[::1]:9"
        );
        assert!(normalize_url("http://h:1").is_err());
        assert!(normalize_url("https://h:1/api").is_err());
        assert!(normalize_url("h:1").is_err());
    }
}
