//! The crate's one error type.

use std::path::{Path, PathBuf};

/// Everything that can go wrong when setting up rules or starting a watcher.
///
/// Problems that happen while watching (a directory that cannot be watched,
/// an event queue overflow, a notify error) are not errors of this type:
/// they become [`WatchEvent::Rescan`](crate::WatchEvent::Rescan) or
/// [`WatchEvent::Warning`](crate::WatchEvent::Warning) events, so the caller
/// never loses a change silently.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// A protected root is not an absolute, existing directory.
    #[error("protected root {}: {source}", path.display())]
    Root {
        /// The root as given.
        path: PathBuf,
        /// Why it was refused.
        #[source]
        source: std::io::Error,
    },
    /// An `--exclude` pattern is not valid gitignore syntax.
    #[error("exclude pattern {pattern:?} under {}: {source}", root.display())]
    Exclude {
        /// The pattern as given.
        pattern: String,
        /// The root the pattern was being compiled for.
        root: PathBuf,
        /// The parse error.
        #[source]
        source: ignore::Error,
    },
    /// The OS notification mechanism could not be set up (for example too
    /// many inotify instances: `fs.inotify.max_user_instances`).
    #[error("cannot start watching {}: {source}", path.display())]
    Notify {
        /// The first root, for context.
        path: PathBuf,
        /// The notify error.
        #[source]
        source: notify::Error,
    },
    /// A worker thread could not be spawned.
    #[error("cannot spawn the {name} thread: {source}")]
    Thread {
        /// The thread's name.
        name: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl WatchError {
    /// The path (or, for [`WatchError::Exclude`], the root) this error is about, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            WatchError::Root { path, .. } | WatchError::Notify { path, .. } => Some(path),
            WatchError::Exclude { root, .. } => Some(root),
            WatchError::Thread { .. } => None,
        }
    }

    /// True when retrying later may succeed without a configuration change
    /// (resource exhaustion, a root that may be mounted later).
    pub fn is_transient(&self) -> bool {
        match self {
            WatchError::Root { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            WatchError::Notify { .. } | WatchError::Thread { .. } => true,
            WatchError::Exclude { .. } => false,
        }
    }
}
