//! A fault-injecting HTTP/1.1 proxy on loopback, in front of an object
//! store (issue 20, "a fault-injecting proxy in front of the store").
//!
//! Every request is read whole (its head, then a body framed by
//! `Content-Length` or `Transfer-Encoding: chunked`), then either forwarded
//! to the store over a connection of its own (kept alive as the client's
//! is) or answered with a fault. Every fifth request (by default) gets the
//! next fault of a fixed rotation, so a run of a few dozen requests meets
//! every kind; the counts say what was injected, so a test can check that
//! faults really happened.
//!
//! # Faults
//!
//! - `SlowDown`: `503 Slow Down` with S3's XML error body, not forwarded.
//! - `Internal`: `500 Internal Error` with S3's XML error body, not
//!   forwarded.
//! - `Slow`: forwarded after a pause of a few hundred milliseconds.
//! - `Stall`: forwarded after a pause longer than the client's timeout (the
//!   client gives up and tries again; the store still gets the first try,
//!   late, as from a store that is slow, not down). Only for requests a
//!   client may repeat blindly (no `If-None-Match`, `If-Match`, no POST):
//!   object_store does not retry a conditional write that timed out, since
//!   it cannot know whether it happened. DELETEs are stalled too: the
//!   writer lease is released by a conditional write where the store
//!   honours it, so no DELETE of a killed writer can remove its
//!   successor's lease (docs/decisions.md, "Late requests (issue 20)").
//! - `DropRequest`: the connection is closed once the request is read,
//!   nothing forwarded.
//! - `CutResponse`: forwarded; the store's answer is cut in the middle
//!   (half its body, or half its head when it has no body) and the
//!   connection closed: the store did the work, the client never learns.
//!   Only successes are cut: object_store reads the body of an error
//!   answer (a 412 to a conditional write, a 404) once, without retrying,
//!   so a cut there fails the request whatever rewind does. Nor is the
//!   answer that begins a multipart upload (`POST ?uploads`) cut:
//!   object_store does not retry it, and `rewind watch --once` then exits
//!   0 with the versions still waiting in its journal (an open problem,
//!   docs/decisions.md, "Fault tests against object storage").
//!
//! The proxy runs until dropped; connections in flight end on their own.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    SlowDown,
    Internal,
    Slow,
    Stall,
    DropRequest,
    CutResponse,
}

/// Every kind, in the order of the rotation.
pub const ALL: [Fault; 6] = [
    Fault::SlowDown,
    Fault::DropRequest,
    Fault::Slow,
    Fault::CutResponse,
    Fault::Internal,
    Fault::Stall,
];

/// What the proxy injects and how often.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// One request in this many gets a fault (0: none).
    pub every: u64,
    /// The kinds, taken in turn.
    pub kinds: Vec<Fault>,
    /// The pause of `Slow`.
    pub slow: Duration,
    /// The pause of `Stall`: longer than the client's timeout.
    pub stall: Duration,
    /// At most this many stalls (each costs the client a timeout).
    pub max_stalls: u64,
    /// Only requests whose first line (`METHOD /path?query HTTP/1.1`)
    /// passes this are counted towards a fault (`None`: all).
    pub only: Option<fn(&str) -> bool>,
    /// At most this many faults in all (`None`: no limit).
    pub limit: Option<u64>,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            every: 5,
            kinds: ALL.to_vec(),
            slow: Duration::from_millis(300),
            stall: Duration::from_millis(3500),
            max_stalls: 2,
            only: None,
            limit: None,
        }
    }
}

/// What the proxy saw and did.
#[derive(Debug, Default)]
pub struct Counts {
    /// Requests read from clients.
    pub requests: AtomicU64,
    /// Requests forwarded to the store (faulty or not).
    pub forwarded: AtomicU64,
    /// Multipart uploads begun (`POST ?uploads`) and parts sent
    /// (`PUT ?partNumber=`), as the clients sent them.
    pub multipart: AtomicU64,
    pub parts: AtomicU64,
    /// Requests held by a stall now, or forwarded late and not yet
    /// answered by the store: a test waits for none before it reads what
    /// the store holds.
    pub held: AtomicU64,
    /// Faults injected, by kind (in the order of [`ALL`]).
    injected: [AtomicU64; 6],
}

impl Counts {
    /// Faults of `kind` injected so far.
    pub fn injected(&self, kind: Fault) -> u64 {
        self.injected[index(kind)].load(Ordering::Relaxed)
    }

    /// Faults of every kind injected so far.
    pub fn faults(&self) -> u64 {
        ALL.iter().map(|k| self.injected(*k)).sum()
    }

    /// One line for a test's output.
    pub fn summary(&self) -> String {
        let kinds: Vec<String> = ALL
            .iter()
            .map(|k| format!("{k:?} {}", self.injected(*k)))
            .collect();
        format!(
            "{} requests ({} forwarded; {} multipart uploads, {} parts), {} faults: {}",
            self.requests.load(Ordering::Relaxed),
            self.forwarded.load(Ordering::Relaxed),
            self.multipart.load(Ordering::Relaxed),
            self.parts.load(Ordering::Relaxed),
            self.faults(),
            kinds.join(", ")
        )
    }
}

fn index(kind: Fault) -> usize {
    ALL.iter().position(|k| *k == kind).unwrap()
}

/// The proxy's state shared by its threads.
struct Shared {
    upstream: u16,
    schedule: Schedule,
    counts: Arc<Counts>,
    /// Faults are injected only while this is set.
    enabled: AtomicBool,
    /// Requests since the last fault, and the next kind's place.
    since: AtomicU64,
    next: AtomicU64,
    stalls: AtomicU64,
    stop: AtomicBool,
}

/// A running proxy; stops accepting when dropped.
pub struct FaultProxy {
    pub port: u16,
    pub counts: Arc<Counts>,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// A proxy on a free loopback port in front of `127.0.0.1:upstream`.
    pub fn start(upstream: u16, schedule: Schedule) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let counts = Arc::new(Counts::default());
        let shared = Arc::new(Shared {
            upstream,
            schedule,
            counts: counts.clone(),
            enabled: AtomicBool::new(true),
            since: AtomicU64::new(0),
            next: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                thread::spawn(move || {
                    let _ = serve(&s, conn);
                });
            }
        });
        FaultProxy {
            port,
            counts,
            shared,
        }
    }

    /// Inject faults (`true`, the start) or forward everything.
    pub fn set_faults(&self, on: bool) {
        self.shared.enabled.store(on, Ordering::Relaxed);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One request or response head: its first line and headers, as read.
struct Head {
    raw: Vec<u8>,
    first: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.header(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }
}

/// Read a head up to its blank line; `None` at a clean end of stream.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut raw = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 {
            if raw.is_empty() {
                return Ok(None);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        raw.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Some(Head {
        raw,
        first,
        headers,
    }))
}

/// How a message's body is framed.
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// The body after `head`, exactly as it came (chunk framing included).
fn read_body(r: &mut impl BufRead, framing: Framing) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    match framing {
        Framing::None => {}
        Framing::Length(n) => {
            r.take(n).read_to_end(&mut body)?;
            if body.len() as u64 != n {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Framing::UntilClose => {
            r.read_to_end(&mut body)?;
        }
        Framing::Chunked => loop {
            let mut line = Vec::new();
            if r.read_until(b'\n', &mut line)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            body.extend_from_slice(&line);
            let size = String::from_utf8_lossy(&line);
            let size = size
                .trim()
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            let n = u64::from_str_radix(&size, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if n == 0 {
                // Trailers, up to the blank line.
                loop {
                    let mut t = Vec::new();
                    if r.read_until(b'\n', &mut t)? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    body.extend_from_slice(&t);
                    if t == b"\r\n" || t == b"\n" {
                        return Ok(body);
                    }
                }
            }
            let mut data = Vec::new();
            r.take(n + 2).read_to_end(&mut data)?;
            if data.len() as u64 != n + 2 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            body.extend_from_slice(&data);
        },
    }
    Ok(body)
}

fn request_framing(h: &Head) -> Framing {
    if h.has_token("Transfer-Encoding", "chunked") {
        Framing::Chunked
    } else if let Some(n) = h.header("Content-Length").and_then(|v| v.parse().ok()) {
        Framing::Length(n)
    } else {
        Framing::None
    }
}

/// The status code of a response head (0 when unreadable).
fn status(resp: &Head) -> u16 {
    resp.first
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn response_framing(req: &Head, resp: &Head) -> Framing {
    let status = status(resp);
    if req.first.starts_with("HEAD ") || status < 200 || status == 204 || status == 304 {
        Framing::None
    } else if resp.has_token("Transfer-Encoding", "chunked") {
        Framing::Chunked
    } else if let Some(n) = resp.header("Content-Length").and_then(|v| v.parse().ok()) {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    }
}

/// An S3 error answer, as the store would send it.
fn error_response(status: &str, code: &str, message: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
    );
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The fault for the request `head`, if any (and count it).
fn choose(s: &Shared, head: &Head) -> Option<Fault> {
    let sch = &s.schedule;
    if !s.enabled.load(Ordering::Relaxed) || sch.every == 0 || sch.kinds.is_empty() {
        return None;
    }
    if sch.only.is_some_and(|f| !f(&head.first))
        || sch
            .limit
            .is_some_and(|n| s.next.load(Ordering::Relaxed) >= n)
    {
        return None;
    }
    if s.since.fetch_add(1, Ordering::Relaxed) + 1 < sch.every {
        return None;
    }
    let n = s.next.load(Ordering::Relaxed);
    let mut kind = sch.kinds[(n % sch.kinds.len() as u64) as usize];
    if kind == Fault::CutResponse
        && head.first.starts_with("POST ")
        && head.first.contains("?uploads")
    {
        // See the module doc: its turn waits for another request.
        return None;
    }
    if kind == Fault::Stall {
        let repeatable = !head.first.starts_with("POST ")
            && head.header("If-None-Match").is_none()
            && head.header("If-Match").is_none();
        if !repeatable {
            // Its turn waits for a request that may be repeated.
            return None;
        }
        if s.stalls.fetch_add(1, Ordering::Relaxed) >= sch.max_stalls {
            kind = Fault::Slow;
        }
    }
    s.since.store(0, Ordering::Relaxed);
    s.next.fetch_add(1, Ordering::Relaxed);
    s.counts.injected[index(kind)].fetch_add(1, Ordering::Relaxed);
    Some(kind)
}

/// Counts a stalled request in [`Counts::held`] until dropped (after the
/// store answered it, or the connection failed).
struct Held<'a>(&'a AtomicU64);

impl<'a> Held<'a> {
    fn new(n: &'a AtomicU64) -> Held<'a> {
        n.fetch_add(1, Ordering::SeqCst);
        Held(n)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serve one client connection until it closes or a fault closes it.
fn serve(s: &Shared, client: TcpStream) -> io::Result<()> {
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    let mut upstream: Option<(BufReader<TcpStream>, TcpStream)> = None;
    loop {
        let Some(req) = read_head(&mut from_client)? else {
            return Ok(());
        };
        let body = read_body(&mut from_client, request_framing(&req))?;
        s.counts.requests.fetch_add(1, Ordering::Relaxed);
        if req.first.starts_with("POST ") && req.first.contains("?uploads") {
            s.counts.multipart.fetch_add(1, Ordering::Relaxed);
        }
        if req.first.starts_with("PUT ") && req.first.contains("partNumber=") {
            s.counts.parts.fetch_add(1, Ordering::Relaxed);
        }
        let fault = choose(s, &req);
        let _held = (fault == Some(Fault::Stall)).then(|| Held::new(&s.counts.held));
        match fault {
            Some(Fault::SlowDown) => {
                to_client.write_all(&error_response(
                    "503 Slow Down",
                    "SlowDown",
                    "Please reduce your request rate.",
                ))?;
                continue;
            }
            Some(Fault::Internal) => {
                to_client.write_all(&error_response(
                    "500 Internal Server Error",
                    "InternalError",
                    "We encountered an internal error. Please try again.",
                ))?;
                continue;
            }
            Some(Fault::DropRequest) => {
                let _ = to_client.shutdown(Shutdown::Both);
                return Ok(());
            }
            Some(Fault::Slow) => thread::sleep(s.schedule.slow),
            Some(Fault::Stall) => thread::sleep(s.schedule.stall),
            Some(Fault::CutResponse) | None => {}
        }
        // Forward, on this connection's upstream connection.
        if upstream.is_none() {
            let up = TcpStream::connect(("127.0.0.1", s.upstream))?;
            upstream = Some((BufReader::new(up.try_clone()?), up));
        }
        let (up_r, up_w) = upstream.as_mut().unwrap();
        up_w.write_all(&req.raw)?;
        up_w.write_all(&body)?;
        s.counts.forwarded.fetch_add(1, Ordering::Relaxed);
        let resp = read_head(up_r)?.ok_or(io::ErrorKind::UnexpectedEof)?;
        let framing = response_framing(&req, &resp);
        let until_close = matches!(framing, Framing::UntilClose);
        let resp_body = read_body(up_r, framing)?;
        if fault == Some(Fault::CutResponse) && !(200..300).contains(&status(&resp)) {
            // Not a success: passed on whole (see the module doc).
            s.counts.injected[index(Fault::CutResponse)].fetch_sub(1, Ordering::Relaxed);
        } else if fault == Some(Fault::CutResponse) {
            if resp_body.is_empty() {
                to_client.write_all(&resp.raw[..resp.raw.len() / 2])?;
            } else {
                to_client.write_all(&resp.raw)?;
                to_client.write_all(&resp_body[..resp_body.len() / 2])?;
            }
            to_client.flush()?;
            let _ = to_client.shutdown(Shutdown::Both);
            return Ok(());
        }
        to_client.write_all(&resp.raw)?;
        to_client.write_all(&resp_body)?;
        to_client.flush()?;
        if until_close || resp.has_token("Connection", "close") {
            upstream = None;
        }
        if until_close || req.has_token("Connection", "close") {
            let _ = to_client.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}
