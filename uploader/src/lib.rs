//! rewind-uploader: drains the journal into a [`Repository`].
//!
//! ```text
//! journal.versions_after(cursor) ─▶ missing_chunks? ─▶ put_chunks (≤ 32 MiB calls)
//!                                 ─▶ commit_versions ─▶ journal.advance_cursor
//! ```
//!
//! Guarantees:
//! - The cursor moves only after `commit_versions` returned, that is after
//!   the repository made the batch durable.
//! - A version is never committed without its chunks: chunks the repository
//!   lacks are read from the spool first; a version whose chunk is in neither
//!   place is held back, reported, and its path forgotten in the journal so
//!   the next pass captures it again.
//! - Transient failures (I/O, a busy or unreachable repository) are retried
//!   with exponential backoff and jitter; capture goes on meanwhile.
//!
//! An interrupted upload leaves at most chunks the repository holds but no
//! version refers to yet; the batch is sent again after a restart and the
//! repository ignores versions it already has.

mod upload;

pub use upload::{UploadError, UploadOptions, UploadStatus, Uploader, drain_once};
