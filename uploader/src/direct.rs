//! The direct path: capture's chunks go straight into the repository at
//! each group commit of the journal, and, when the log is drained, the
//! versions are committed there too, so in the steady state each byte is
//! written (and fsynced) once, with no spool record and no upload.
//!
//! ```text
//! capture ─▶ journal queue ─▶ group commit ─▶ DirectPath::group_commit
//!                                               ├ log drained: commit_durably(chunks, versions)
//!                                               └ otherwise:   store_durably(chunks)
//! ```
//!
//! Invariants kept here:
//! - the direct path and the uploader's draining of the log follow one
//!   retry policy ([`Retry`]): after a failure of either, the direct path
//!   does not accept work (the journal spools) until the pause has passed;
//!   a success of either brings it back;
//! - a refusal is reported once, and the return once, per change of state;
//! - while the repository accepts, its own judgement of whether it keeps
//!   up ([`ChunkSink::accepting`]: a slow link, an upload limit) decides
//!   too.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rewind_core::{ChunkId, ChunkSink, EncodedChunk, Version};
use rewind_journal::{CommitHook, HookOutcome, Journal};

use crate::retry::Retry;

pub(crate) struct DirectPath {
    sink: Arc<dyn ChunkSink>,
    retry: Arc<Retry>,
    /// The last group commit was refused (and that was said).
    refused: AtomicBool,
}

/// Make `sink` the journal's group-commit hook, under `retry`.
pub(crate) fn install(journal: &Journal, sink: Arc<dyn ChunkSink>, retry: Arc<Retry>) {
    journal.set_commit_hook(Arc::new(DirectPath {
        sink,
        retry,
        refused: AtomicBool::new(false),
    }));
}

impl CommitHook for DirectPath {
    fn accepting(&self) -> bool {
        self.retry.paused_for().is_none() && self.sink.accepting()
    }

    fn has_chunk(&self, id: &ChunkId) -> bool {
        self.sink.has_chunk(id)
    }

    fn send_ahead(&self, chunk: &EncodedChunk) {
        self.sink.send_ahead(chunk);
    }

    fn group_commit(
        &self,
        chunks: &[EncodedChunk],
        versions: &[Version],
        log_drained: bool,
    ) -> HookOutcome {
        // Make the sink's chunks durable first (also those it holds from
        // earlier calls, which capture may have skipped as present).
        let stored = if log_drained {
            self.sink.commit_durably(chunks, versions)
        } else {
            self.sink.store_durably(chunks)
        };
        match stored {
            Ok(()) => {
                self.retry.succeeded();
                if self.refused.swap(false, Ordering::Relaxed) {
                    tracing::info!("repository takes chunks again");
                }
                if log_drained {
                    HookOutcome::Committed
                } else {
                    HookOutcome::Stored
                }
            }
            Err(e) => {
                self.retry.repository_failed();
                if !self.refused.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "repository refused chunks ({e}); keeping them in the journal spool \
                         until it takes them"
                    );
                }
                HookOutcome::Refused
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind_core::RepoError;
    use std::time::Duration;

    /// A repository that takes chunks or fails, as told.
    #[derive(Default)]
    struct Flaky {
        fail: AtomicBool,
    }

    impl ChunkSink for Flaky {
        fn has_chunk(&self, _id: &ChunkId) -> bool {
            false
        }
        fn store_durably(&self, _chunks: &[EncodedChunk]) -> Result<(), RepoError> {
            if self.fail.load(Ordering::Relaxed) {
                return Err(RepoError::Io {
                    path: "pack".into(),
                    source: std::io::Error::other("no space"),
                });
            }
            Ok(())
        }
        fn commit_durably(
            &self,
            chunks: &[EncodedChunk],
            _versions: &[Version],
        ) -> Result<(), RepoError> {
            self.store_durably(chunks)
        }
    }

    fn direct(sink: Arc<Flaky>) -> (DirectPath, Arc<Retry>) {
        let retry = Arc::new(Retry::new(Duration::from_secs(60)));
        let d = DirectPath {
            sink,
            retry: retry.clone(),
            refused: AtomicBool::new(false),
        };
        (d, retry)
    }

    #[test]
    fn after_a_refusal_the_direct_path_steps_aside_until_the_backoff_ends() {
        let sink = Arc::new(Flaky::default());
        let (d, retry) = direct(sink.clone());
        assert!(d.accepting());
        assert_eq!(d.group_commit(&[], &[], true), HookOutcome::Committed);
        sink.fail.store(true, Ordering::Relaxed);
        assert_eq!(d.group_commit(&[], &[], false), HookOutcome::Refused);
        assert!(!d.accepting(), "the journal spools meanwhile");
        let left = retry.paused_for().expect("paused");
        std::thread::sleep(left + Duration::from_millis(10));
        assert!(d.accepting(), "the backoff says try again");
        sink.fail.store(false, Ordering::Relaxed);
        assert_eq!(d.group_commit(&[], &[], false), HookOutcome::Stored);
        assert!(!d.refused.load(Ordering::Relaxed));
        assert_eq!(retry.paused_for(), None);
    }

    #[test]
    fn a_failed_upload_makes_the_direct_path_step_aside_too_and_a_success_brings_it_back() {
        let (d, retry) = direct(Arc::new(Flaky::default()));
        retry.repository_failed();
        assert!(!d.accepting());
        retry.succeeded();
        assert!(d.accepting());
        retry.journal_failed();
        assert!(
            d.accepting(),
            "the journal's trouble is not the repository's"
        );
    }
}
