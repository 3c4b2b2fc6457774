//! The group-commit hook: how the component that writes the repository
//! takes work from the journal at each group commit, so that capture's
//! chunks (and, once the log is drained, its versions) are written once,
//! straight into the repository, instead of into the spool first.
//!
//! The journal only offers work; whether and when the hook takes it, and
//! how its failures are reported and retried, is the hook's business (the
//! uploader's direct path). The journal's part is what a log must do.
//!
//! Invariants kept here:
//! - capture queues a chunk for the hook (in memory, bounded) only while
//!   [`CommitHook::accepting`] says so, and writes it to the spool
//!   otherwise; a commit is offered to the hook only while it accepts;
//! - chunks the hook does not report durable ([`HookOutcome::Refused`], or
//!   no offer because it stopped accepting) are written to the spool by the
//!   same commit, before any version is acknowledged: a refusal never
//!   loses a chunk and never stops capture;
//! - versions the hook reports committed ([`HookOutcome::Committed`],
//!   honoured only when offered with the log drained) get no log record,
//!   and the cursor moves past them in the commit's sled batch.

use rewind_core::{ChunkId, EncodedChunk, Version};

/// What a [`CommitHook`] made of one group commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookOutcome {
    /// Nothing is durable through the hook: the journal spools the chunks
    /// and logs the versions.
    Refused,
    /// The chunks (and every chunk handed over before) are durable in the
    /// repository; the journal logs the versions as usual.
    Stored,
    /// The chunks and the versions are durable in the repository (only
    /// when offered with the log drained): the journal records the
    /// versions' states but no log record, and moves the cursor past them.
    Committed,
}

/// Takes capture's chunks, and when the log is drained its versions, at
/// each group commit of the journal
/// ([`Journal::set_commit_hook`](crate::Journal::set_commit_hook)).
pub trait CommitHook: Send + Sync {
    /// True while the hook takes chunks: capture queues them in memory for
    /// the next group commit. False: capture writes them to the spool, and
    /// the next commit spools those still queued.
    fn accepting(&self) -> bool;
    /// True when the repository durably holds `id` already (a cheap
    /// in-memory lookup), so capture need not compress or queue it.
    fn has_chunk(&self, id: &ChunkId) -> bool;
    /// Capture queued `chunk` for the next group commit, which still hands
    /// it over: the hook may start moving it now. Nothing is durable or
    /// acknowledged by this call, and it must not wait.
    fn send_ahead(&self, _chunk: &EncodedChunk) {}
    /// One group commit, before the journal records anything of it: make
    /// `chunks` (and those of earlier calls) durable in the repository,
    /// and, when `log_drained` (no logged version waits before these, and
    /// their numbers are reserved), `versions` too if the hook wants.
    /// Called by the journal's flusher, one commit at a time.
    fn group_commit(
        &self,
        chunks: &[EncodedChunk],
        versions: &[Version],
        log_drained: bool,
    ) -> HookOutcome;
}
