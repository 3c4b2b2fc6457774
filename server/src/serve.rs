//! `rewind-server serve`: TLS 1.3 (rustls), HTTP/1.1 and HTTP/2 (hyper),
//! caps on connections (in all and per address), timeouts for connections
//! that send nothing, graceful shutdown on SIGTERM/SIGINT.
//!
//! A connection is closed when it has not finished its TLS handshake
//! within [`HANDSHAKE_TIMEOUT`], or has had no request in flight for the
//! idle timeout (HTTP/1: hyper's header-read timeout, which runs from the
//! moment it waits for a request's head, the first one included; HTTP/2
//! and a connection that never says which: a watch of its requests). An
//! HTTP/2 peer that stops answering pings in the middle of a request is
//! dropped too. An address (an IPv6 /64) with `max_connections_per_address`
//! connections open has its next one closed before the handshake.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use axum::body::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rewind_repo::LocalRepo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::api::{self, Peer, Server};
use crate::auth::{Registry, Throttle, address_key};
use crate::data::DataDir;
use crate::metrics::Metrics;
use crate::owners::Owners;
use crate::secrets::Hashers;

/// How `serve` runs.
pub struct ServeOptions {
    /// The data directory.
    pub data: DataDir,
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// Connections served at once; more wait in the listen queue.
    pub max_connections: usize,
    /// Connections one address (an IPv6 /64) may hold open at once; more
    /// are closed at once.
    pub max_connections_per_address: usize,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// How long shutdown waits for requests in flight.
    pub grace: Duration,
    /// How often retention runs (forget by each client's policy, then
    /// prune); `None`: never by itself.
    pub retention_every: Option<Duration>,
    /// A pack sealed this recently is not pruned, and an unused one is
    /// deleted this long after it was condemned ([`rewind_repo::DEFAULT_GRACE`]).
    pub prune_grace: Duration,
    /// Bytes request bodies may hold in memory at once
    /// ([`crate::DEFAULT_BODY_MEMORY`]); more are turned away (503).
    pub max_body_memory: usize,
}

/// Connections one address may hold by default: a client opens one
/// (HTTP/2 carries its four uploads in flight), a few machines behind one
/// NAT a few more; 16 leaves room for a small office while one stranger
/// can take at most 16 of the 256 slots.
pub const DEFAULT_PER_ADDRESS: usize = 16;

/// The default idle timeout: longer than a client keeps an idle
/// connection in its pool (20 s, `rewind-remote`), so the server never
/// closes one the client is about to reuse, and short enough that idle
/// connections cannot hold the slots for long.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(30);

/// A TLS handshake must finish within this (or the idle timeout, if
/// shorter): a real one takes a few milliseconds, a slow link's a second.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 pings: every 20 s while the connection is open, and a peer that
/// has not answered one in 20 s is gone (a laptop that went to sleep in
/// the middle of an upload); its requests are dropped.
const H2_PING_EVERY: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Once an idle connection was told to close, how long it may take to go
/// (or the idle timeout, if shorter). Nothing is in flight on it: HTTP/1
/// closes at once, but HTTP/2 sends GOAWAY and waits for the answer to a
/// ping, which a silent peer never sends (measured: a silent HTTP/2
/// connection held its slot until this ran out).
const CLOSE_WAIT: Duration = Duration::from_secs(5);

fn tls_config(data: &DataDir) -> Result<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(data.cert())
        .with_context(|| format!("cannot read {}", data.cert().display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: damaged certificate", data.cert().display()))?;
    let key = PrivateKeyDer::from_pem_file(data.key())
        .with_context(|| format!("cannot read the key {}", data.key().display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and key do not fit together")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// The fingerprint clients pin, from the stored certificate.
pub fn fingerprint(data: &DataDir) -> Result<String> {
    let cert = CertificateDer::from_pem_file(data.cert())
        .with_context(|| format!("cannot read {}", data.cert().display()))?;
    Ok(rewind_core::wire::fingerprint(&cert))
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot watch SIGTERM: {e}");
            std::future::pending::<()>().await;
            unreachable!()
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// HTTP/2 frames of up to 256 KiB instead of 16 KiB (fewer frames to
/// decrypt, parse and hand between tasks per byte), and windows of 2 MiB
/// per stream and 8 MiB per connection, enough for a client's four uploads
/// in flight to keep moving while bounding what one connection can make
/// the server buffer (docs/decisions.md, "HTTP/2 settings").
const H2_FRAME: u32 = 256 << 10;
/// Requests one HTTP/2 connection may have in flight at once (hyper's
/// default is 200): a client sends four uploads and a few queries at a
/// time, and each request in flight may hold a body in memory.
const H2_STREAMS: u32 = 16;
const H2_STREAM_WINDOW: u32 = 2 << 20;
const H2_CONN_WINDOW: u32 = 8 << 20;

/// Serve until SIGTERM or SIGINT.
pub fn run(opts: ServeOptions) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("server")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(serve(opts))
}

/// argon2 computations at once. Each holds 19 MiB and ~20 ms of a core;
/// two keep a 2-core server answering while strangers send bad secrets
/// without pause (tests/hostile.rs: a real client's upload within a few
/// hundred ms during floods of 200), and still check ~100 first keys a
/// second for clients reconnecting after a restart (2 / 20 ms). Beyond
/// it: 503 at once, no queue (docs/decisions.md, "A server strangers
/// cannot exhaust").
const ARGON2_SLOTS: usize = 2;

/// Open connections per address key ([`address_key`]); an entry lives as
/// long as its connections, so the map is bounded by `max_connections`.
struct PerAddress {
    open: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
}

/// One connection counted against its address until dropped.
struct AddressTicket {
    of: Arc<PerAddress>,
    key: IpAddr,
}

impl PerAddress {
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<AddressTicket> {
        let key = address_key(ip);
        let mut m = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(AddressTicket {
            of: self.clone(),
            key,
        })
    }
}

impl Drop for AddressTicket {
    fn drop(&mut self) {
        let mut m = self.of.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

/// What a connection is doing: requests in flight, and when the last one
/// started or ended.
struct Activity {
    born: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `born`.
    last: AtomicU64,
}

/// A request in flight, until its response body is sent or dropped.
struct Busy(Arc<Activity>);

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        self.last
            .store(self.born.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn start(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        Busy(self.clone())
    }

    /// Resolves once nothing has been in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.born + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let wait = if self.in_flight.load(Ordering::Relaxed) > 0 {
                idle
            } else {
                match (last + idle).checked_duration_since(Instant::now()) {
                    Some(d) if !d.is_zero() => d,
                    _ => return,
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in flight until it
/// has been sent (or dropped with the connection).
struct Tracked {
    inner: axum::body::Body,
    _busy: Busy,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

async fn serve(opts: ServeOptions) -> Result<()> {
    let data = &opts.data;
    data.check()?;
    data.check_private()?;
    let repo = LocalRepo::open_writer(&data.repo()).map_err(|e| match e {
        rewind_core::RepoError::Locked { holder, .. } => anyhow::anyhow!(
            "{} is in use (another rewind-server serves it?): {holder}",
            data.repo().display()
        ),
        e => e.into(),
    })?;
    // The handler decodes and hashes every chunk before it reaches the
    // repository; checking again there would double the cost.
    repo.set_check_puts(false);
    let admin_hash = std::fs::read_to_string(data.admin())
        .with_context(|| format!("cannot read {}", data.admin().display()))?;
    let tls = TlsAcceptor::from(Arc::new(tls_config(data)?));
    let fp = fingerprint(data)?;
    let hashers = Hashers::new(ARGON2_SLOTS);
    let registry = {
        let mut slot = hashers.try_take().expect("no slot is taken yet");
        Registry::open(data, &mut slot)?
    };
    let server = Arc::new(Server {
        repo,
        registry,
        owners: Owners::new(data.owners()),
        throttle: Throttle::default(),
        metrics: Metrics::default(),
        admin_hash: admin_hash.trim().to_string(),
        admin_ok: Mutex::new(None),
        hashers,
        data: data.clone(),
        bodies: crate::bodies::BodyBudget::new(opts.max_body_memory),
    });
    if let Some(every) = opts.retention_every {
        retention_schedule(server.clone(), every, opts.prune_grace)?;
    }
    let app = api::router(server.clone());
    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    // Scripts and tests read this line to learn the port.
    println!("rewind-server: listening on https://{addr} (certificate {fp})");
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let max = opts.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let per_address = Arc::new(PerAddress {
        open: Mutex::new(HashMap::new()),
        max: opts.max_connections_per_address.max(1),
    });
    let (stopping, stop_rx) = watch::channel(false);
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.context("connection slots closed")?,
            _ = &mut stop => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        server.metrics.connections.fetch_add(1, Ordering::Relaxed);
        let Some(ticket) = per_address.enter(peer.ip()) else {
            server
                .metrics
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!("{peer}: too many connections from this address; closed");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let conn = Conn {
            tls: tls.clone(),
            app: app.clone(),
            server: server.clone(),
            idle: opts.idle_timeout,
            stop: stop_rx.clone(),
        };
        tokio::spawn(async move {
            let _permit = permit;
            let _ticket = ticket;
            conn.serve(tcp, peer).await;
        });
    }
    drop(listener);
    eprintln!("rewind-server: stopping: no new connections, finishing requests in flight");
    let _ = stopping.send(true);
    // Every connection holds a slot until it ends: all slots back means
    // every connection has finished.
    tokio::select! {
        _ = slots.acquire_many(max as u32) => {}
        _ = tokio::time::sleep(opts.grace) => {
            eprintln!("rewind-server: requests still running after {:?}; stopping anyway", opts.grace);
        }
    }
    // Every acknowledged commit is already durable; nothing else to flush.
    eprintln!("rewind-server: stopped");
    Ok(())
}

/// The retention thread's nice value: the agent's for its background
/// work (first pass, retention), so uploads are served first on a busy
/// machine.
const RETENTION_NICE: i32 = 10;

/// Forget and prune every `every`, the first time `every` after the start,
/// on a thread of its own beside the handlers: uploads go on meanwhile
/// (prune holds the writer lock only to switch the index). A run that
/// fails is logged, and the next one tries again. The thread ends with the
/// process; a prune cut short is finished or redone by the next (every
/// step of it is crash-safe).
fn retention_schedule(server: Arc<Server>, every: Duration, grace: Duration) -> Result<()> {
    std::thread::Builder::new()
        .name("retention".into())
        .spawn(move || {
            // Beside the handlers, not ahead of them: the nice value of
            // the agent's background work (Linux keeps one per thread).
            #[cfg(target_os = "linux")]
            if let Err(e) =
                rustix::process::setpriority_process(Some(rustix::thread::gettid()), RETENTION_NICE)
            {
                tracing::debug!("cannot lower the retention thread's priority: {e}");
            }
            loop {
                std::thread::sleep(every);
                crate::retention::run_once(&server.repo, &server.data, grace);
            }
        })
        .context("cannot start the retention thread")?;
    Ok(())
}

/// What one connection's task needs.
struct Conn {
    tls: TlsAcceptor,
    app: axum::Router,
    server: Arc<Server>,
    idle: Duration,
    stop: watch::Receiver<bool>,
}

impl Conn {
    async fn serve(mut self, tcp: tokio::net::TcpStream, peer: SocketAddr) {
        let m = &self.server.metrics;
        let handshake = HANDSHAKE_TIMEOUT.min(self.idle);
        let stream = match tokio::time::timeout(handshake, self.tls.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                m.tls_failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("TLS handshake with {peer} failed: {e}");
                return;
            }
            Err(_) => {
                m.tls_failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("TLS handshake with {peer} timed out");
                return;
            }
        };
        m.connections_open.fetch_add(1, Ordering::Relaxed);
        let activity = Activity::new();
        let (app, s2, act) = (self.app.clone(), self.server.clone(), activity.clone());
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(Peer(peer));
            let (app, s, busy) = (app.clone(), s2.clone(), act.start());
            async move {
                let resp = app.oneshot(req).await;
                resp.map(|r| {
                    let m = &s.metrics;
                    m.requests.fetch_add(1, Ordering::Relaxed);
                    if r.status().is_client_error() {
                        m.client_errors.fetch_add(1, Ordering::Relaxed);
                    } else if r.status().is_server_error() {
                        m.server_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    r.map(|inner| Tracked { inner, _busy: busy })
                })
            }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.idle);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(H2_PING_EVERY)
            .keep_alive_timeout(H2_PING_TIMEOUT)
            .max_concurrent_streams(H2_STREAMS)
            .max_frame_size(H2_FRAME)
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONN_WINDOW);
        let conn = builder.serve_connection(TokioIo::new(stream), svc);
        tokio::pin!(conn);
        let mut closing: Option<Instant> = None;
        let mut stop_seen = *self.stop.borrow();
        if stop_seen {
            conn.as_mut().graceful_shutdown();
        }
        let result = loop {
            let deadline =
                closing.map(|at| tokio::time::Instant::from_std(at + CLOSE_WAIT.min(self.idle)));
            tokio::select! {
                r = conn.as_mut() => break r,
                _ = activity.idle_for(self.idle), if closing.is_none() => {
                    m.connections_idle_closed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("connection from {peer}: idle for {:?}; closing", self.idle);
                    conn.as_mut().graceful_shutdown();
                    closing = Some(Instant::now());
                }
                _ = self.stop.changed(), if !stop_seen => {
                    // Stopping (or the server is gone): no new requests.
                    stop_seen = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)),
                    if deadline.is_some() => {
                    tracing::debug!("connection from {peer}: did not close; dropped");
                    break Ok(());
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!("connection from {peer}: {e}");
        }
        m.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}
