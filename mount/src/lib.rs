//! rewind-mount: the read-only FUSE view of any point in time
//! (`rewind mount DIR`).
//!
//! # Layout
//!
//! ```text
//! DIR/latest/…                       every protected path as it is now (and stays current)
//! DIR/at/<time>/…                    the tree at any moment typed: RFC 3339 or a local
//!                                    'YYYY-MM-DD[ HH:MM[:SS[.f]]]' / 'YYYY-MM-DDTHH:MM:SS',
//!                                    resolved on lookup (at/ lists nothing)
//! DIR/days/<YYYY-MM-DD>/<time>/…     the days with changes, each moment with changes that
//!                                    day (to the second, local time) as a directory
//! DIR/versions/<path>/<time>[.ext]   the folders of every path that ever existed (deleted
//!                                    ones too); a file's (or link's) entry is a directory of
//!                                    its versions, each named by when it was observed
//! ```
//!
//! Under a moment the tree is the point-in-time answer (DESIGN.md, "Point
//! in time"): `Repository::tree_at` of `/`. Folders above the protected
//! ones (`/home`, …) are shown as read-only folders of the mounting user.
//! Database dumps are not shown (`rewind dump restore` reads them).
//!
//! # Guarantees
//!
//! - Contents, modes, owners, times, symlink targets and extended
//!   attributes are the stored ones; sparse files read their holes as
//!   zeros. Nothing can be written (`ro`, and every writing call fails).
//! - A file's bytes are fetched when read, a chunk at a time with a
//!   read-ahead of [`READ_AHEAD`], through a cache of at most
//!   `cache_bytes` (plus one chunk).
//! - Memory is bounded whatever is browsed: at most [`MAX_TREES`] trees
//!   (about 600 bytes a path each), the chunk cache, bounded lists of
//!   versions, and the inodes the kernel holds (freed when it forgets
//!   them).
//! - A moment's name (in `days/` and `versions/`) reads back under `at/`
//!   as a moment that shows what it names: names round up.
//! - While an agent captures, new commits appear within `recheck` (a
//!   read-only local repository is refreshed; a server is asked).
//! - [`serve`] unmounts on SIGINT and SIGTERM and returns when something
//!   else unmounts (`fusermount -u`, `umount`).
//!
//! # After an interruption
//!
//! Nothing is written anywhere, so nothing is left half done. A process
//! killed without unmounting leaves a dead mount point ("Transport
//! endpoint is not connected") until `fusermount -u DIR` (or `umount DIR`
//! as root) removes it.

#[cfg(any(target_os = "linux", target_os = "macos"))]
mod content;
#[cfg(any(target_os = "linux", target_os = "macos"))]
mod fs;
#[cfg(any(target_os = "linux", target_os = "macos"))]
mod names;
#[cfg(any(target_os = "linux", target_os = "macos"))]
mod nodes;
#[cfg(any(target_os = "linux", target_os = "macos"))]
mod session;
#[cfg(any(target_os = "linux", target_os = "macos"))]
mod tree;
#[cfg(any(target_os = "linux", target_os = "macos"))]
mod views;

use std::path::PathBuf;
use std::time::Duration;

#[cfg(any(target_os = "linux", target_os = "macos"))]
pub use content::{DEFAULT_CACHE_BYTES, READ_AHEAD};
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub use session::{Mounted, mount, serve};
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub use views::{DEFAULT_RECHECK, MAX_TREES};

/// How to mount.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Chunk bytes kept in memory at most.
    pub cache_bytes: usize,
    /// How often, at most, to look for new commits.
    pub recheck: Duration,
    /// Let other users in (`allow_other`; for a user other than root,
    /// `user_allow_other` must be in /etc/fuse.conf).
    pub allow_other: bool,
    /// Threads serving requests (Linux; one elsewhere).
    pub threads: usize,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            cache_bytes: 64 << 20,
            recheck: Duration::from_secs(1),
            allow_other: false,
            // Enough that a slow fetch does not hold up browsing, few
            // enough for a 2-core laptop.
            threads: 4,
        }
    }
}

/// Why mounting or unmounting failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// The mount itself failed (no /dev/fuse, not permitted, not a
    /// directory, already mounted).
    #[error("cannot mount on {path}: {source}")]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Unmounting failed.
    #[error("cannot unmount {path}: {source}")]
    Unmount {
        /// The mount point.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The mount point is in use (a shell or a program inside it).
    #[error("{path} is busy: leave it (cd out, close what is open there) and unmount again")]
    Busy {
        /// The mount point.
        path: PathBuf,
    },
    /// This platform has no FUSE support in rewind.
    #[error("rewind mount works on Linux, and on macOS with macFUSE; not on this system")]
    Unsupported,
}

impl MountError {
    /// True when trying again later may work (a busy mount point).
    pub fn is_transient(&self) -> bool {
        matches!(self, MountError::Busy { .. })
    }
}

/// Elsewhere: no FUSE.
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub fn serve(
    _repo: std::sync::Arc<dyn rewind_core::Repository>,
    _client: &str,
    _mountpoint: &std::path::Path,
    _opts: &MountOptions,
    _ready: impl FnOnce(),
) -> Result<(), MountError> {
    Err(MountError::Unsupported)
}
