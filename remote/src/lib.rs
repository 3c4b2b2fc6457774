//! rewind-remote: a `rewind-server` seen from a client, over HTTPS.
//! [`RemoteRepo`] is the server's repository for this client: a
//! [`Repository`](rewind_core::Repository) for the uploader, restore and
//! the point-in-time queries, and a [`ChunkSink`](rewind_core::ChunkSink)
//! that takes chunks straight from capture while the server keeps up.
//! Enrollment ([`probe_fingerprint`], [`enroll`]) gets the client key and
//! the certificate fingerprint that [`RemoteConfig`] keeps. Each request
//! carries the client's name and key; enrollment and the `info` and
//! `stats` replies are JSON, every other body postcard
//! (`rewind_core::wire`).
//!
//! # Parts
//!
//! ```text
//! tls.rs         the server's certificate checked against the pinned fingerprint
//! throttle.rs    upload limits by time of day; request bodies paced to them
//! client.rs      Conn: how requests reach the server (retries, replies, errors)
//! enroll.rs      RemoteConfig, the URL check, trust on first use, enrollment
//! ahead.rs       chunks sent ahead of the journal's flush, by four threads
//! sink.rs        the flush, what the sink remembers, its pauses
//! repository.rs  RemoteRepo: its Repository impl, and its ChunkSink impl over sink.rs
//! verify.rs      RemoteRepo::verify_client: this client's chunks checked on the server
//! ```
//!
//! Each file imports only files above it in this list.
//!
//! # Guarantees
//!
//! - Requests go over TLS 1.3 only, to `https://HOST[:PORT]` only
//!   ([`normalize_url`] refuses anything else).
//! - The server's certificate is checked against the pinned SHA-256
//!   fingerprint, and the handshake signature against that certificate,
//!   before any request is sent: neither the enrollment token nor the
//!   client key ever reaches a server that presents another certificate.
//! - A server that presents another certificate than the pinned one is
//!   refused at once, not retried, with a non-transient
//!   [`RepoError::Remote`](rewind_core::RepoError::Remote) that names both
//!   fingerprints ("the server's certificate changed").
//! - [`probe_fingerprint`] sends nothing but a TLS handshake, and [`enroll`]
//!   sends its token in one request, sent again only when the server
//!   turned it away before looking at the token (429 or 503: up to 4
//!   tries, as far apart as its `Retry-After` says, 1 to 10 s).
//! - [`RemoteRepo::new`] makes no request, so a client starts, and
//!   captures, while its server is unreachable.
//! - A request of a `RemoteRepo` that the server turns away as busy (503
//!   or 429 with `Retry-After`: its credential checks are all taken, or
//!   this address is braked) is asked again as its `Retry-After` says (1 to 10 s, plus up
//!   to 0.5 s of the client's own) for up to 90 s, so clients that start
//!   together are all admitted. One that fails otherwise transiently
//!   (cannot connect, times out, is cut off, or gets another 5xx or 408) is
//!   tried 3 times in all, 250 ms and then 500 ms apart. Either is then
//!   returned as a transient `RepoError::Remote`, which the uploader
//!   retries with its own backoff;
//!   a refusal (401, 400 or any other 4xx) or a malformed reply is returned
//!   at once as a non-transient one.
//! - No reply is read past `wire::MAX_BODY` (80 MiB); a longer one is a
//!   non-transient error.
//! - Bulk requests are cut: `missing_chunks` and the flush ask about at
//!   most `wire::MAX_IDS` ids per request, `read_chunks` asks for at most
//!   [`READ_BATCH`] chunks per request, and `put_chunks` sends less than
//!   48 MiB of chunk data per request unless the request holds one chunk.
//! - A `read` reply with other chunks than asked, or a `verify` reply about
//!   chunks not asked about, is refused as malformed; `read_chunk` and
//!   `read_chunks` return a chunk's bytes only when they hash to its id.
//! - Under an upload limit ([`RemoteRepo::set_upload_limit`]) the bodies of
//!   `/v1/chunks` requests are paced to the schedule's rate, and the sink
//!   takes no chunks (`accepting()` is false).
//!
//! As a sink:
//!
//! - `send_ahead` returns without waiting for the network and acknowledges
//!   nothing: `has_chunk` is true only for chunks given to a flush
//!   (`store_durably`, `commit_durably`) that returned `Ok` (at most 2^20
//!   ids are remembered; past that the memory starts again empty).
//! - A chunk queued twice before a flush is sent ahead once, and a flush
//!   sends each chunk the server lacks once, however often it was queued.
//! - A flush hands the senders the body being filled and waits until every
//!   body handed over before it has been sent, has failed or was dropped;
//!   then it asks the server which of its chunks it lacks, sends those
//!   (requests of about 8 MiB, 4 at once), and has the server sync
//!   (`/v1/sync`) or commit the versions (2,000 per `/v1/commit`). It
//!   returns `Ok` only after the server has answered all of these, so a
//!   chunk lost on the way is sent by the flush itself.
//! - A flush given no chunks by `store_durably` sends no request.
//! - After a body sent ahead fails, the bodies queued behind it are dropped
//!   unsent until the next flush; a sender that panics still finishes its
//!   body, so a flush never waits forever.
//! - `missing_chunks` first waits for the bodies on their way, so the
//!   uploader is not told that a chunk is missing while it travels.
//! - `accepting()` is false for 30 s after a flush of 4 MiB or more of
//!   chunks that ran slower than 24 MiB/s, and while an upload limit is
//!   set. After a failed flush it stays true: the uploader's direct path
//!   steps aside under the uploader's one backoff.
//! - Each attempt of a sink request (the flush's and the senders') gives up
//!   after 30 s; other requests after 300 s, and connecting after 10 s.
//!
//! # After an interruption or a crash
//!
//! On the client:
//!
//! - A `RemoteRepo` keeps nothing on disk. What it holds in memory (chunks
//!   known stored, the pause, bodies being filled or on their way) is lost
//!   with the process, and that costs a `missing` question and chunks sent
//!   again, nothing more: nothing was acknowledged on its strength.
//! - A request that is cut off (timeout, dropped connection, killed
//!   process) may or may not have reached the server; its caller got an
//!   error or no answer, never `Ok`, and sends again: chunks are asked
//!   about before they are sent, and a commit is idempotent on the server
//!   by client and seq.
//! - Dropping a `RemoteRepo` drops the body being filled; the sender
//!   threads work through the bodies already queued, then end, and nothing
//!   waits for them.
//! - An enrollment whose reply was lost may have used up its one-time
//!   token on the server, while this crate has written nothing.
//!
//! On the server:
//!
//! - Chunks it took from this client are not durable for this client
//!   until its next `/v1/sync` or `/v1/commit`: a server crash before then
//!   may lose them (or its record that this client sent them), its
//!   `missing` then answers them missing, and the next flush or upload
//!   sends them again.
//! - A commit is atomic and makes the chunks it refers to durable first,
//!   so a commit cut off leaves the whole batch or none of it, and a batch
//!   sent again after a lost answer is recognised by seq and dropped.

mod ahead;
mod client;
mod enroll;
mod repository;
mod sink;
pub mod throttle;
pub mod tls;
mod verify;

pub use enroll::{RemoteConfig, enroll, normalize_url, probe_fingerprint};
pub use repository::{READ_BATCH, RemoteRepo};
pub use throttle::{Limiter, RateSchedule};
pub use verify::ClientVerifyReport;
