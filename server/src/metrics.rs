//! The server's counters, exported at `/metrics` in Prometheus' text
//! format.

use std::sync::atomic::{AtomicU64, Ordering};

use rewind_core::RepoStats;

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
    /// Connections closed at once: their address had as many open as it
    /// may.
    pub connections_refused: AtomicU64,
    /// Connections closed for sending nothing (no handshake, no request)
    /// for the idle timeout.
    pub connections_idle_closed: AtomicU64,
    /// Requests refused because their address was braked (429).
    pub throttled: AtomicU64,
    /// Requests refused because every argon2 slot was busy (503).
    pub argon2_busy: AtomicU64,
    /// Requests refused because request bodies held all the memory they
    /// may (503).
    pub bodies_busy: AtomicU64,
    /// Chunks written into packs (a client's first upload of a chunk,
    /// whoever else stored it).
    pub chunks_written: AtomicU64,
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
    pub fn render(&self, repo: &RepoStats, clients: usize, argon2: u64) -> String {
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
            "connections_refused_total",
            "counter",
            "Connections closed at once: their address had as many open as it may.",
            c(&self.connections_refused),
        );
        put(
            "connections_idle_closed_total",
            "counter",
            "Connections closed for sending nothing for the idle timeout.",
            c(&self.connections_idle_closed),
        );
        put(
            "throttled_total",
            "counter",
            "Requests refused (429) while their address was braked after failures.",
            c(&self.throttled),
        );
        put(
            "argon2_busy_total",
            "counter",
            "Requests refused (503) because every argon2 slot was busy.",
            c(&self.argon2_busy),
        );
        put(
            "bodies_busy_total",
            "counter",
            "Requests refused (503) because request bodies held all the memory they may.",
            c(&self.bodies_busy),
        );
        put(
            "argon2_total",
            "counter",
            "argon2 computations (secrets checked or hashed).",
            argon2,
        );
        put(
            "chunks_written_total",
            "counter",
            "Chunks written into packs.",
            c(&self.chunks_written),
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
