//! What the watcher tells its caller.

use std::path::PathBuf;
use std::time::SystemTime;

/// One notice from the watcher. The caller is expected to `lstat` what it is
/// told about and compare with its own last-known state: the watcher says
/// *where* to look, not *what* happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// `path` had events and has now been quiet for `quiescence` (or hit
    /// `max_interval`). It may have been created, modified, deleted, or
    /// renamed to or from; for a directory that vanished, everything that
    /// was below it vanished with it.
    Changed {
        /// The path, absolute, under one of the roots.
        path: PathBuf,
        /// Wall-clock time of the first event of this burst for this path.
        observed_at: SystemTime,
        /// False when every event of the burst was about attributes only
        /// (mode, owner, times, xattrs, ACLs): the content is then the same
        /// as before if the inode and size are. True whenever the data may
        /// have changed.
        content: bool,
    },
    /// Everything under `path` (inclusive) must be compared with the
    /// last-known state, because events under it may have been lost or were
    /// never delivered (see [`RescanReason`]).
    Rescan {
        /// The subtree to compare, absolute.
        path: PathBuf,
        /// Wall-clock time the need for the rescan (or the earliest change it
        /// absorbed) was first seen.
        observed_at: SystemTime,
        /// Why.
        reason: RescanReason,
    },
    /// A one-time message for the user (for example a `.rewindignore` that
    /// could not be parsed, or a protected folder that disappeared).
    Warning(String),
    /// The kernel's limit on watches was reached: directories beyond it are
    /// protected by periodic rescans instead, and the message says how to
    /// raise the limit. Sent once per watcher; protection is degraded (the
    /// agent tells the user) until the agent restarts with a higher limit.
    LimitReached(String),
}

/// Why a [`WatchEvent::Rescan`] was emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RescanReason {
    /// The OS or notify reported lost events (queue overflow, `Flag::Rescan`),
    /// or the watcher's own queue was full.
    Overflow,
    /// notify reported an error; events for the path may have been lost.
    Error,
    /// A directory was created or moved in; watches now cover it, and the
    /// rescan finds what was written into it before they existed.
    NewDirectory,
    /// The directory could not be watched (inotify limit, permissions); it is
    /// rescanned every `unwatched_rescan` instead.
    Unwatched,
    /// So many paths under the directory changed at once that one rescan is
    /// cheaper than reporting them one by one.
    TooManyChanges,
    /// A `.rewindignore` or `CACHEDIR.TAG` in the directory changed: paths
    /// below it may have become protected (or unprotected).
    RulesChanged,
}
