//! The journal's errors.
//!
//! Every variant keeps the file or record involved; [`JournalError::is_transient`]
//! and [`JournalError::is_damage`] spare callers from matching on sled's own
//! error kinds.

use std::io;
use std::path::{Path, PathBuf};

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// sled failed.
    #[error("journal database {path}: {source}")]
    Db {
        /// The database directory.
        path: PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// A spool file failed.
    #[error("journal spool {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A stored record does not decode.
    #[error("journal record {key}: damaged: {reason}")]
    Corrupt {
        /// Which record.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The journal is closed.
    #[error("journal is closed")]
    Closed,
    /// The journal's filesystem has less free space than a commit needs
    /// (32 MiB, or an eighth of a small filesystem); nothing was written.
    #[error(
        "journal {}: disk full ({} KiB free, {} KiB needed); capture waits until space is freed",
        path.display(), free >> 10, needed >> 10
    )]
    Full {
        /// The journal directory.
        path: PathBuf,
        /// Bytes free.
        free: u64,
        /// Bytes a commit needs free.
        needed: u64,
    },
}

impl JournalError {
    /// True for I/O trouble (full disk, for instance) that may pass.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            JournalError::Io { .. } | JournalError::Db { .. } | JournalError::Full { .. }
        )
    }

    /// True when the journal's own files are damaged (as opposed to the
    /// disk being full or access denied): it cannot be opened as it is and
    /// must be rebuilt from the repository.
    pub fn is_damage(&self) -> bool {
        match self {
            JournalError::Corrupt { .. } => true,
            JournalError::Db { source, .. } => match source {
                // Unsupported: sled's own description of a config file it
                // cannot parse (a damaged `conf`).
                sled::Error::Corruption { .. }
                | sled::Error::ReportableBug(_)
                | sled::Error::Unsupported(_) => true,
                sled::Error::Io(e) => matches!(
                    e.kind(),
                    io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                ),
                _ => false,
            },
            _ => false,
        }
    }

    /// sled failed on the database of the journal in `dir`.
    pub(crate) fn db(dir: &Path, source: sled::Error) -> Self {
        JournalError::Db {
            path: dir.join("db"),
            source,
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, JournalError>;
