//! rewind-remote: the [`Repository`] of a `rewind-server`, over HTTPS.
//!
//! TLS 1.3 with the server's certificate pinned by fingerprint (see
//! [`tls`]); each request carries the client's name and key; bulk bodies
//! are postcard (`rewind_core::wire`). Transient trouble (connection
//! refused, timeouts, 5xx) is retried a few times here and then reported
//! as a transient [`RepoError::Remote`], which the uploader retries with
//! backoff; refusals (401, 400) are reported at once, not retried.

mod ahead;
mod client;
mod enroll;
mod repository;
mod sink;
pub mod throttle;
pub mod tls;

pub use enroll::{RemoteConfig, enroll, normalize_url, probe_fingerprint};
pub use repository::{READ_BATCH, RemoteRepo};
pub use throttle::{Limiter, RateSchedule};
