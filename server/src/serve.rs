//! `rewind-server serve`: TLS 1.3 (rustls), HTTP/1.1 and HTTP/2 (hyper),
//! a cap on concurrent connections, graceful shutdown on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use rewind_repo::LocalRepo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::api::{self, Peer, Server};
use crate::auth::{Registry, Throttle};
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
    /// How long shutdown waits for requests in flight.
    pub grace: Duration,
}

/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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

async fn serve(opts: ServeOptions) -> Result<()> {
    let data = &opts.data;
    data.check()?;
    data.check_private()?;
    let repo = LocalRepo::open_writer(&data.repo()).map_err(|e| match e {
        rewind_core::RepoError::Locked { .. } => anyhow::anyhow!(
            "{} is in use (another rewind-server serves it?)",
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
    });
    let app = api::router(server.clone());
    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    // Scripts and tests read this line to learn the port.
    println!("rewind-server: listening on https://{addr} (certificate {fp})");
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
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
        let _ = tcp.set_nodelay(true);
        let (tls, app, server) = (tls.clone(), app.clone(), server.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let m = &server.metrics;
            m.connections.fetch_add(1, Ordering::Relaxed);
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
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
            let s2 = server.clone();
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(Peer(peer));
                let (app, s) = (app.clone(), s2.clone());
                async move {
                    let resp = app.oneshot(req).await;
                    if let Ok(r) = &resp {
                        let m = &s.metrics;
                        m.requests.fetch_add(1, Ordering::Relaxed);
                        if r.status().is_client_error() {
                            m.client_errors.fetch_add(1, Ordering::Relaxed);
                        } else if r.status().is_server_error() {
                            m.server_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    resp
                }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http2()
                .max_frame_size(H2_FRAME)
                .initial_stream_window_size(H2_STREAM_WINDOW)
                .initial_connection_window_size(H2_CONN_WINDOW);
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!("connection from {peer}: {e}");
            }
            server
                .metrics
                .connections_open
                .fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(listener);
    eprintln!("rewind-server: stopping: no new connections, finishing requests in flight");
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(opts.grace) => {
            eprintln!("rewind-server: requests still running after {:?}; stopping anyway", opts.grace);
        }
    }
    // Every acknowledged commit is already durable; nothing else to flush.
    eprintln!("rewind-server: stopped");
    Ok(())
}
