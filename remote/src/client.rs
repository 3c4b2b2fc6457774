//! How requests reach the server: the HTTPS client with the pinned
//! certificate ([`crate::tls`]), the client's credentials, retries of
//! transient failures, the size limit on replies, and the one place that
//! turns what went wrong into a [`RepoError::Remote`].

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::blocking::{Body, Client};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use rewind_core::RepoError;
use rewind_core::wire::{self, MAX_BODY, POSTCARD};
use serde::{Deserialize, Serialize};

use crate::throttle::{self, Limiter, RateSchedule};
use crate::tls;

/// Attempts per request for transient failures (the uploader retries
/// further with its own backoff).
const ATTEMPTS: u32 = 3;

/// How long a request keeps asking a server that turns it away because it
/// is busy (429 or 503 with `Retry-After`, before any work: its few
/// credential checks are all taken, or this address is braked). Clients that start together, as an
/// office's do after a power cut, are admitted a few at a time; each waits
/// as long as the server's `Retry-After` says (1 to 10 s), plus a little
/// of its own so they do not all come back at once.
const BUSY_PATIENCE: Duration = Duration::from_secs(90);

/// Why one attempt failed.
enum Failure {
    /// The server turned the request away before doing anything; ask
    /// again after this long.
    Busy(Duration, RepoError),
    /// Anything else.
    Other(RepoError),
}

/// Up to half a second of waiting of this process's own, so clients told
/// the same `Retry-After` spread out.
fn jitter() -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    Duration::from_millis(u64::from((nanos ^ std::process::id()) % 500))
}

pub(crate) fn remote(url: &str, reason: impl Into<String>, transient: bool) -> RepoError {
    RepoError::Remote {
        url: url.to_string(),
        reason: reason.into(),
        transient,
    }
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

pub(crate) fn http_client(
    fingerprint: Option<&str>,
) -> Result<(Client, Arc<tls::Pinned>), RepoError> {
    let (cfg, pinned) = tls::client_config(fingerprint);
    let http = Client::builder()
        .use_preconfigured_tls(cfg)
        .https_only(true)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(300))
        // Under the server's idle timeout (30 s by default): a connection
        // is never reused just as the server closes it.
        .pool_idle_timeout(Duration::from_secs(20))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| remote("", format!("cannot set up HTTPS: {e}"), false))?;
    Ok((http, pinned))
}

impl Conn {
    /// Requests to `url` (normalised), sending `auth`, to the server whose
    /// certificate has `fingerprint`; no request is made yet.
    pub(crate) fn new(url: String, auth: String, fingerprint: &str) -> Result<Conn, RepoError> {
        let (http, pinned) = http_client(Some(fingerprint))?;
        Ok(Conn {
            url,
            auth,
            http,
            pinned,
            limiter: None,
        })
    }

    /// Pace chunk uploads by `schedule`.
    pub(crate) fn set_upload_limit(&mut self, schedule: RateSchedule) {
        self.limiter = Some(Arc::new(Limiter::new(schedule)));
    }

    /// True under an upload limit.
    pub(crate) fn limited(&self) -> bool {
        self.limiter.is_some()
    }

    fn net_error(&self, e: reqwest::Error) -> RepoError {
        net_error(&self.url, &self.pinned, e)
    }

    pub(crate) fn malformed(&self, e: impl std::fmt::Display) -> RepoError {
        remote(&self.url, format!("malformed reply: {e}"), false)
    }

    pub(crate) fn post<T: Serialize>(&self, route: &str, v: &T) -> Result<Vec<u8>, RepoError> {
        self.call(
            reqwest::Method::POST,
            route,
            Some(wire::encode(v).into()),
            None,
        )
    }

    pub(crate) fn decode<T: for<'a> Deserialize<'a>>(&self, b: &[u8]) -> Result<T, RepoError> {
        wire::decode(b).map_err(|e| self.malformed(e))
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
        let started = Instant::now();
        loop {
            // `Bytes`: the body is shared, not copied, between attempts.
            match self.call_once(method.clone(), route, body.clone(), timeout) {
                Ok(v) => return Ok(v),
                Err(Failure::Busy(wait, e)) => {
                    let wait = wait + jitter();
                    if started.elapsed() + wait > BUSY_PATIENCE {
                        return Err(e);
                    }
                    tracing::debug!("{route}: {e}; asking again in {wait:?}");
                    std::thread::sleep(wait);
                }
                Err(Failure::Other(e)) if e.is_transient() && attempt < ATTEMPTS => {
                    tracing::debug!("{route}: {e}; retrying");
                    std::thread::sleep(delay);
                    delay *= 2;
                    attempt += 1;
                }
                Err(Failure::Other(e)) => return Err(e),
            }
        }
    }

    fn call_once(
        &self,
        method: reqwest::Method,
        route: &str,
        body: Option<bytes::Bytes>,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, Failure> {
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
        let resp = req.send().map_err(|e| Failure::Other(self.net_error(e)))?;
        // Busy, not broken: the server says when to come back. A 503
        // without `Retry-After` is a failure of its own (a full disk, a
        // locked repository) and takes the ordinary path.
        let busy = matches!(
            resp.status(),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        )
        .then(|| {
            resp.headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .flatten()
        .map(|secs| Duration::from_secs(secs.clamp(1, 10)));
        match (read_reply(&self.url, resp), busy) {
            (Ok(v), _) => Ok(v),
            (Err(e), Some(wait)) => Err(Failure::Busy(wait, e)),
            (Err(e), None) => Err(Failure::Other(e)),
        }
    }

    /// The server's URL.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }
}

pub(crate) fn read_reply(
    url: &str,
    resp: reqwest::blocking::Response,
) -> Result<Vec<u8>, RepoError> {
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

pub(crate) fn net_error(url: &str, pinned: &tls::Pinned, e: reqwest::Error) -> RepoError {
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
