//! A counting HTTP/1.1 forwarding proxy: every byte a client sends goes
//! to the upstream server unchanged and every byte of the answer comes
//! back unchanged; on the way, the requests are counted by kind.
//!
//! The S3 part puts it between each tool and `s3s-fs` to count the
//! requests each tool makes (docs/decisions.md, "Counting S3 requests in
//! the benchmark"). Requests are counted, not answers, so no response is
//! parsed: the answer stream is copied as bytes. That is what keeps the
//! proxy correct for keep-alive, pipelining and `Expect: 100-continue`.
//!
//! - Each request is counted once, when its head has been read, before it
//!   is forwarded: once a client has its answer, its request is counted.
//! - Request bodies are framed by `Content-Length` or chunked encoding
//!   (trailers included), so the next request on the connection is found.
//! - Headers pass unchanged (the `Host` a client signed with included), so
//!   signed requests stay valid.
//! - One thread per direction per connection; the proxy stops accepting
//!   when dropped (connections under way finish on their own).

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

/// What the proxy has seen so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests by kind (see [`kind`]).
    pub requests: BTreeMap<String, u64>,
    /// Bytes from the clients to the server.
    pub up: u64,
    /// Bytes from the server to the clients.
    pub down: u64,
}

impl Counts {
    /// All requests.
    pub fn total(&self) -> u64 {
        self.requests.values().sum()
    }

    /// What was seen after `before` (an earlier snapshot of the same
    /// proxy).
    pub fn since(&self, before: &Counts) -> Counts {
        Counts {
            requests: self
                .requests
                .iter()
                .map(|(k, v)| (k.clone(), v - before.requests.get(k).copied().unwrap_or(0)))
                .filter(|(_, v)| *v > 0)
                .collect(),
            up: self.up - before.up,
            down: self.down - before.down,
        }
    }

    /// `12 PUT, 3 GET` (largest first).
    pub fn describe(&self) -> String {
        let mut v: Vec<(&String, &u64)> = self.requests.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        if v.is_empty() {
            return "none".into();
        }
        v.iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<BTreeMap<String, u64>>,
    up: AtomicU64,
    down: AtomicU64,
    stop: AtomicBool,
}

/// A running proxy on a loopback port.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listen on a free loopback port and forward every connection to
    /// `upstream`.
    pub fn start(upstream: SocketAddr) -> Result<Proxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).context("proxy: cannot listen")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::Builder::new()
            .name("s3-proxy".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = conn else { continue };
                    let s = s.clone();
                    let _ = std::thread::Builder::new()
                        .name("s3-proxy-conn".into())
                        .spawn(move || {
                            if let Err(e) = connection(client, upstream, &s) {
                                eprintln!("rewind-bench: proxy connection: {e}");
                            }
                        });
                }
            })?;
        Ok(Proxy { addr, shared })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// What was counted so far.
    pub fn counts(&self) -> Counts {
        Counts {
            requests: self
                .shared
                .requests
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            up: self.shared.up.load(Ordering::SeqCst),
            down: self.shared.down.load(Ordering::SeqCst),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accepting thread so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// The kind a request is counted under: the method, with S3's multipart
/// and listing requests told apart (`PUT part`, `POST multipart` for the
/// start and the completion of an upload, `GET list`), and `range` for a
/// GET with a `Range` header.
pub fn kind(method: &str, target: &str, ranged: bool) -> String {
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let has = |k: &str| {
        query
            .split('&')
            .any(|p| p == k || p.starts_with(&format!("{k}=")))
    };
    match method {
        "PUT" if has("partNumber") => "PUT part".into(),
        "POST" if has("uploads") || has("uploadId") => "POST multipart".into(),
        "DELETE" if has("uploadId") => "DELETE multipart".into(),
        "GET" if has("list-type") || has("prefix") || has("delimiter") => "GET list".into(),
        "GET" if ranged => "GET range".into(),
        m => m.to_string(),
    }
}

/// Copy `n` bytes from `r` to `w`.
fn copy_n(r: &mut impl Read, w: &mut impl Write, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.take(n), w)?;
    if copied != n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("body ended after {copied} of {n} bytes"),
        ));
    }
    Ok(())
}

/// Read one line (ending in `\n`) into `line`; false at the end of the
/// stream before any byte.
fn line(r: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<bool> {
    line.clear();
    let n = r.read_until(b'\n', line)?;
    if n > 0 && !line.ends_with(b"\n") {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "a line ended early",
        ));
    }
    Ok(n > 0)
}

/// Forward one client connection: the answers in a thread of their own,
/// the requests here, counted.
fn connection(client: TcpStream, upstream: SocketAddr, shared: &Arc<Shared>) -> io::Result<()> {
    let server = TcpStream::connect(upstream)?;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut from_server, mut to_client) = (server.try_clone()?, client.try_clone()?);
    let s = shared.clone();
    let answers = std::thread::Builder::new()
        .name("s3-proxy-down".into())
        .spawn(move || {
            // Counted as it passes: the client may exit (and the counts be
            // read) before the server closes.
            let mut buf = vec![0u8; 256 << 10];
            loop {
                let n = match from_server.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if to_client.write_all(&buf[..n]).is_err() {
                    break;
                }
                s.down.fetch_add(n as u64, Ordering::SeqCst);
            }
            let _ = to_client.shutdown(Shutdown::Write);
        })?;
    let r = requests(BufReader::with_capacity(256 << 10, client), &server, shared);
    let _ = server.shutdown(Shutdown::Write);
    let _ = answers.join();
    r
}

/// Forward requests from `client` to `server` until the client closes.
fn requests(mut client: impl BufRead, mut server: &TcpStream, shared: &Shared) -> io::Result<()> {
    let mut buf = Vec::new();
    loop {
        // The head: request line and headers, up to an empty line.
        let mut head = Vec::new();
        if !line(&mut client, &mut buf)? {
            return Ok(());
        }
        let request_line = String::from_utf8_lossy(&buf).trim().to_string();
        head.extend_from_slice(&buf);
        let (mut length, mut chunked, mut ranged) = (0u64, false, false);
        loop {
            if !line(&mut client, &mut buf)? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the stream ended in a request head",
                ));
            }
            head.extend_from_slice(&buf);
            let h = String::from_utf8_lossy(&buf);
            let h = h.trim();
            if h.is_empty() {
                break;
            }
            if let Some((name, value)) = h.split_once(':') {
                let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
                match name.as_str() {
                    "content-length" => {
                        length = value.parse().map_err(|_| {
                            io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length")
                        })?
                    }
                    "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                    "range" => ranged = true,
                    _ => {}
                }
            }
        }
        let mut parts = request_line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or("?"), parts.next().unwrap_or(""));
        *shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind(method, target, ranged))
            .or_default() += 1;
        let mut up = head.len() as u64;
        server.write_all(&head)?;
        if chunked {
            // size line, data, CRLF; a zero size, then trailers up to an
            // empty line.
            loop {
                if !line(&mut client, &mut buf)? {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the stream ended in a chunked body",
                    ));
                }
                server.write_all(&buf)?;
                up += buf.len() as u64;
                let size = String::from_utf8_lossy(&buf);
                let size = size.trim().split(';').next().unwrap_or("").trim();
                let size = u64::from_str_radix(size, 16)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
                if size == 0 {
                    loop {
                        if !line(&mut client, &mut buf)? {
                            break;
                        }
                        server.write_all(&buf)?;
                        up += buf.len() as u64;
                        if buf == b"\r\n" || buf == b"\n" {
                            break;
                        }
                    }
                    break;
                }
                copy_n(&mut client, &mut server, size + 2)?;
                up += size + 2;
            }
        } else {
            copy_n(&mut client, &mut server, length)?;
            up += length;
        }
        shared.up.fetch_add(up, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_kind() {
        assert_eq!(
            kind("PUT", "/b/k?partNumber=2&uploadId=x", false),
            "PUT part"
        );
        assert_eq!(kind("POST", "/b/k?uploads", false), "POST multipart");
        assert_eq!(kind("POST", "/b/k?uploadId=x", false), "POST multipart");
        assert_eq!(kind("GET", "/b?list-type=2&prefix=p/", false), "GET list");
        assert_eq!(kind("GET", "/b/k", true), "GET range");
        assert_eq!(kind("GET", "/b/k", false), "GET");
        assert_eq!(kind("HEAD", "/b/k", false), "HEAD");
    }

    #[test]
    fn pipelined_requests_with_both_framings_pass_unchanged_and_are_counted() {
        let upstream = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let up_addr = upstream.local_addr().unwrap();
        let received = std::thread::spawn(move || {
            let (mut s, _) = upstream.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
            got
        });
        let proxy = Proxy::start(up_addr).unwrap();
        let sent: Vec<u8> = [
            &b"PUT /b/one HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"[..],
            b"PUT /b/two?partNumber=1&uploadId=u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
              3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nx-trailer: t\r\n\r\n",
            b"GET /b/three HTTP/1.1\r\nrange: bytes=0-1\r\n\r\n",
            b"GET /b?list-type=2 HTTP/1.1\r\n\r\n",
        ]
        .concat();
        let mut c = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        c.write_all(&sent).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        c.read_to_end(&mut answer).unwrap();
        assert_eq!(received.join().unwrap(), sent);
        assert!(answer.ends_with(b"ok"));
        let counts = proxy.counts();
        assert_eq!(counts.total(), 4, "{counts:?}");
        assert_eq!(counts.requests["PUT"], 1);
        assert_eq!(counts.requests["PUT part"], 1);
        assert_eq!(counts.requests["GET range"], 1);
        assert_eq!(counts.requests["GET list"], 1);
        assert_eq!(counts.up, sent.len() as u64);
        let none = Counts::default();
        assert_eq!(counts.since(&counts).total(), 0);
        assert_eq!(counts.since(&none), counts);
    }
}
