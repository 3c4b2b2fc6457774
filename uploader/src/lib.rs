//! rewind-uploader: the one component that writes captured data to the
//! [`Repository`](rewind_core::Repository).
//!
//! It drains the journal's log, and, as the journal's group-commit hook
//! (the direct path), takes capture's chunks straight into the repository:
//!
//! ```text
//! journal.versions_after(cursor) ─▶ missing_chunks? ─▶ put_chunks (≤ 32 MiB calls)
//!                                 ─▶ commit_versions ─▶ journal.advance_cursor
//! journal group commit ─▶ direct path ─▶ store_durably(chunks)
//!                                      └▶ commit_durably(chunks, versions)  (log drained)
//! ```
//!
//! Guarantees:
//! - The cursor moves only after `commit_versions` returned, that is after
//!   the repository made the batch durable (or, on the direct path, in the
//!   journal commit whose versions the repository committed first).
//! - A version is never committed without its chunks: chunks the repository
//!   lacks are read from the spool first; a version whose chunk is in neither
//!   place is held back, reported, and its path forgotten in the journal so
//!   the next pass captures it again.
//! - Each byte is written once in the steady state: with the direct path
//!   ([`Uploader::start`] given the repository as a `ChunkSink`), chunks go
//!   from capture into the repository at each group commit and, while the
//!   log is drained, the versions with them; nothing is spooled and
//!   uploaded again.
//! - One retry policy for every write to the repository: transient failures
//!   of the upload or of the direct path are retried with exponential
//!   backoff and jitter (200 ms doubling to `max_backoff`); after a failure
//!   the direct path steps aside (the journal spools) until the backoff
//!   says try again, and a success of either ends the pause. A refusal of
//!   the direct path, and its end, are logged once per change of state.
//!   Capture goes on meanwhile.
//!
//! An interrupted upload leaves at most chunks the repository holds but no
//! version refers to yet; the batch is sent again after a restart and the
//! repository ignores versions it already has. An interrupted direct
//! commit leaves the same, or versions the journal has not recorded as
//! sent: their numbers were reserved in the journal, so none is reused,
//! and the next first pass captures those paths again.

mod direct;
mod retry;
mod upload;

pub use upload::{UploadError, UploadOptions, UploadStatus, Uploader, drain_once};
