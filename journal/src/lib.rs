//! rewind-journal: the durable local log between capture and upload.
//!
//! It holds, in one sled tree with key prefixes:
//! - `v` + seq: captured versions not yet in the repository, in order;
//! - `s` + path: the last-known state of every protected path (metadata and
//!   chunk list), which the first pass and rescans compare against;
//! - `c` + chunk id: where a spooled chunk lives in the spool segment files;
//! - `m` + name: the upload cursor, the next sequence number, the client name,
//!   the protected roots and timestamps for `status`.
//!
//! Chunk bytes live in append-only spool segment files (`spool/*.seg`, each
//! record a length+CRC frame) rather than in sled, which handles megabyte
//! values poorly.
//!
//! Guarantees:
//! - Group commit: [`CaptureGuard::append`] queues a version; a flusher thread
//!   writes queued spool bytes, fsyncs the segment, then applies the versions,
//!   states and chunk locations in one atomic sled batch and flushes it. A
//!   version is *captured* (acknowledged) only when [`Journal::durable_seq`]
//!   has reached its seq; sled's background flushing is off, so nothing
//!   reaches disk out of this order.
//! - A version is never durable before the chunk bytes it introduced
//!   (in the repository through the hook, or in the spool).
//! - Group-commit hook: with a [`CommitHook`] set (the uploader's direct
//!   path), capture queues chunks in memory for it while it accepts (at
//!   most 16 MiB, then captures wait for the flusher), and each commit
//!   offers them to it first, with the versions when the log is drained
//!   (the cursor equals the durable seq). What the hook refuses goes to
//!   the spool in the same commit, so a refusal loses nothing and never
//!   stops capture. Whether the hook accepts, and how its failures are
//!   reported and retried, is not the journal's business.
//! - The uploader reads only durable versions, and the cursor advances only
//!   when the caller says the repository holds a batch durably, or in the
//!   commit whose versions the hook committed with the log drained (they
//!   get no log record).
//! - A version's seq is durably reserved before the hook may commit it,
//!   and [`Journal::skip_reserved`] starts above every reserved number;
//!   [`Journal::close`] gives back what was reserved beyond the last
//!   number given out, so only a start after a crash skips numbers.
//! - Numbers skipped are never counted as versions waiting.
//! - A spool segment is deleted only when every version that may refer to
//!   its chunks is behind the cursor and no capture that started while it
//!   was being written is still running.
//! - Only the owner can reach it: its directories are `0700` and the files
//!   it writes `0600` whatever the umask (sled's own files are tightened
//!   after open; the binaries also run with umask `077`), and a journal
//!   written before that rule is tightened when opened.
//!
//! After a crash: versions queued but not flushed are lost (they were never
//! acknowledged; their paths differ from the last-known state, so the next
//! first pass captures them again); spool bytes past the last fsync are
//! garbage at the end of a segment and are never referenced; all segments
//! present at open are kept until the cursor passes every version then in
//! the journal. A crash between the hook's commit to the repository and
//! the sled batch leaves versions the repository holds and the journal
//! does not know it sent: the next start continues above the repository's
//! numbers ([`Journal::skip_to`]), or above the reserved ones when the
//! repository cannot be asked or a request may reach it after the crash
//! (an object store, a server), and the first pass captures those paths
//! again (harmless duplicates, never a loss).
//!
//! The modules, each stating the invariants it keeps, from the bottom up:
//! `error`; `keys` (the sled key layout and small records); `states`
//! (last-known path states and the overlay of queued ones); `spool`
//! (segment files: writing, rotation, reclamation, reading); `hook` (the
//! [`CommitHook`] trait); `queue` (what capture and the flusher share);
//! `seqs` (sequence numbers across restarts: reserved, skipped, given
//! back); `capture` ([`CaptureGuard`]); `flush` (the group commit and the flusher
//! thread); `journal` (the [`Journal`] handle). None imports one above it.

mod capture;
mod error;
mod flush;
mod hook;
mod journal;
mod keys;
mod queue;
mod seqs;
mod spool;
mod states;
mod sync;

pub use capture::CaptureGuard;
pub use error::JournalError;
pub use hook::{CommitHook, HookOutcome};
pub use journal::{Journal, JournalStats, UploadLag};
pub use states::PathState;
