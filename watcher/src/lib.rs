//! File-change source for rewind: turns OS notifications into quiet,
//! debounced "look at this path" events, applies the ignore rules, and walks
//! trees for the first pass and for rescans.
//!
//! The caller `lstat`s each reported path and compares it with its journal,
//! so the watcher says *where* to look, never *what* happened: it does not
//! classify creates, writes and deletes, it only has to name every path that
//! may differ.
//!
//! Guarantees:
//!
//! - **No silent loss.** A change under a root is reported as
//!   [`WatchEvent::Changed`] for its path, or covered by a
//!   [`WatchEvent::Rescan`] of a directory above it: after a queue overflow or
//!   notify error, after a directory was created or moved in (emitted once
//!   watches cover it, so files written before that are found), after a
//!   `.rewindignore` or `CACHEDIR.TAG` changed, when changes pile up under
//!   one directory, and periodically for directories that could not be
//!   watched (with one [`WatchEvent::Warning`] explaining why).
//! - **Both names of a rename** are reported, and the parent directory of a
//!   created, deleted or renamed path. After `mv a b`, later events inside
//!   `b` are reported under `b`.
//! - **Quiet before reporting.** A path is reported once it has been quiet
//!   for [`WatchOptions::quiescence`], or at least every
//!   [`WatchOptions::max_interval`] while it stays busy; `observed_at` is the
//!   wall-clock time of the first event of the burst.
//! - **Ignored paths are never reported** and never watched; the scanner
//!   never follows symlinks nor enters ignored directories.
//! - **The OS queue is drained on its own thread** and never blocks on us;
//!   debouncing runs on another thread with its state as plain data.
//!
//! Linux uses one inotify watch per non-ignored directory, added by our own
//! walk (so the watch limit, new directories and renamed directories are
//! handled here, not inside notify); macOS uses one recursive FSEvents watch
//! per root. The API is the same.
//!
//! Known limits: a path whose name changes above a root (the root's parent
//! renamed) is not followed; removing the `CACHEDIR.TAG` of an ignored cache
//! directory is noticed only at the next rescan covering it, since ignored
//! directories are not watched.
//!
//! A crash or [`Watcher::stop`] leaves nothing behind: the watcher keeps no
//! state on disk, and the OS drops its watches with the process. Whatever was
//! pending is the caller's to recover with its first-pass [`scan`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod debounce;
mod error;
mod event;
mod rules;
mod scan;
mod watch;

pub use crate::error::WatchError;
pub use crate::event::{RescanReason, WatchEvent};
pub use crate::rules::{CACHEDIR_TAG_NAME, DEFAULT_IGNORES, IGNORE_FILE_NAME, IgnoreRules};
pub use crate::scan::{ScanItem, scan};
pub use crate::watch::{
    DEFAULT_BUSY_INTERVAL, DEFAULT_MAX_INTERVAL, DEFAULT_QUIESCENCE, DEFAULT_UNWATCHED_RESCAN,
    WatchOptions, Watcher,
};
