use serde::{Deserialize, Serialize};

use crate::{ChunkId, FileMeta, Timestamp};

/// One chunk of a file's content, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRef {
    /// The chunk.
    pub id: ChunkId,
    /// Its uncompressed length.
    pub len: u32,
}

/// One extended attribute of a version: its name, and its value stored as
/// a content-addressed chunk, so a value repeated on many files (a SELinux
/// label, a quarantine flag) is stored once per repository.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct XattrRef {
    /// Full attribute name including its namespace (`user.foo`).
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    /// The value, as one chunk (of any length, empty included).
    pub value: ChunkRef,
}

/// What a version says about its path.
// Tombstones are rare next to present entries, so boxing the common case
// to shrink the rare one would cost an allocation per version for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// The path existed with this metadata and (for files) this content.
    Present {
        /// Metadata. Its `xattrs` are empty when stored: the values are
        /// chunks, named in `xattrs` beside it.
        meta: FileMeta,
        /// Content chunks in order; empty for anything but regular files.
        /// For a sparse file (`meta.sparse` is `Some`), the content of its
        /// data extents one after the other; holes are not stored.
        chunks: Vec<ChunkRef>,
        /// Extended attributes, sorted by name, values as chunks.
        xattrs: Vec<XattrRef>,
    },
    /// The path was deleted.
    Deleted,
    /// A stream of bytes that is not a file: the output of a database dump
    /// or another command, stored under a relative virtual path
    /// (`dumps/<job>`), which no file path (always absolute) can equal.
    /// Appended last: postcard encodes the variant's index, so versions
    /// written before this variant existed still decode.
    Stream {
        /// The bytes in order.
        chunks: Vec<ChunkRef>,
        /// How the producing command ended.
        status: StreamStatus,
    },
}

impl Entry {
    /// Every chunk the entry refers to: content chunks, then the values of
    /// its extended attributes.
    pub fn chunk_refs(&self) -> impl Iterator<Item = &ChunkRef> {
        let (chunks, xattrs): (&[ChunkRef], &[XattrRef]) = match self {
            Entry::Present { chunks, xattrs, .. } => (chunks, xattrs),
            Entry::Stream { chunks, .. } => (chunks, &[]),
            Entry::Deleted => (&[], &[]),
        };
        chunks.iter().chain(xattrs.iter().map(|x| &x.value))
    }
}

/// How the command that produced a [`Entry::Stream`] ended. A stream is
/// stored whatever happened, so a failed dump is recorded (and its stderr
/// kept) rather than lost; [`StreamStatus::ok`] tells whether it is usable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamStatus {
    /// What produced the bytes and how they are restored: `postgres`
    /// (plain SQL for psql), `postgres-custom` (pg_restore),
    /// `postgres-globals` (pg_dumpall --globals-only), `mysql`, `command`.
    pub format: String,
    /// The database dumped, when there is one.
    pub database: Option<String>,
    /// When the command started.
    pub started: Timestamp,
    /// When its output ended.
    pub finished: Timestamp,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    /// It was killed because it ran past its timeout.
    pub timed_out: bool,
    /// Something other than the command failed (reading its output,
    /// storing it); the stream is incomplete.
    pub error: Option<String>,
    /// The end of its standard error (bounded, see the dumps crate).
    #[serde(with = "serde_bytes")]
    pub stderr: Vec<u8>,
}

impl StreamStatus {
    /// True when the command exited with status 0 in time and every byte
    /// of its output was stored.
    pub fn ok(&self) -> bool {
        self.exit_code == Some(0)
            && self.signal.is_none()
            && !self.timed_out
            && self.error.is_none()
    }

    /// One line saying how it ended: `ok`, `exit 2`, `killed by signal 9`,
    /// `timed out`, or the error.
    pub fn describe(&self) -> String {
        if let Some(e) = &self.error {
            format!("failed: {e}")
        } else if self.timed_out {
            "timed out".into()
        } else if let Some(s) = self.signal {
            format!("killed by signal {s}")
        } else {
            match self.exit_code {
                Some(0) => "ok".into(),
                Some(c) => format!("exit {c}"),
                None => "unknown".into(),
            }
        }
    }
}

/// One observed state of one path of one client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The client that captured it.
    pub client: String,
    /// Strictly increasing per client.
    pub seq: u64,
    /// When the change was first observed (not capture time, not mtime).
    pub observed_at: Timestamp,
    /// Absolute path, raw bytes.
    #[serde(with = "serde_bytes")]
    pub path: Vec<u8>,
    /// The state.
    pub entry: Entry,
}

impl Version {
    /// Metadata, unless this is a tombstone.
    pub fn meta(&self) -> Option<&FileMeta> {
        match &self.entry {
            Entry::Present { meta, .. } => Some(meta),
            Entry::Deleted | Entry::Stream { .. } => None,
        }
    }

    /// Content chunks (empty for tombstones and non-files).
    pub fn chunks(&self) -> &[ChunkRef] {
        match &self.entry {
            Entry::Present { chunks, .. } | Entry::Stream { chunks, .. } => chunks,
            Entry::Deleted => &[],
        }
    }

    /// Extended attributes (empty for tombstones).
    pub fn xattrs(&self) -> &[XattrRef] {
        match &self.entry {
            Entry::Present { xattrs, .. } => xattrs,
            Entry::Deleted | Entry::Stream { .. } => &[],
        }
    }

    /// Every chunk the version refers to: content chunks, then the values
    /// of its extended attributes. A repository must hold all of them before
    /// it takes the version.
    pub fn chunk_refs(&self) -> impl Iterator<Item = &ChunkRef> {
        self.entry.chunk_refs()
    }

    /// The kind of this version for people: `dump`, `deleted`, or its
    /// file's kind ([`FileKind::as_str`](crate::FileKind::as_str)).
    pub fn kind_name(&self) -> &'static str {
        if self.stream_status().is_some() {
            return "dump";
        }
        self.meta().map_or("deleted", |m| m.kind.as_str())
    }

    /// The status of a stream (a dump), `None` for files and tombstones.
    pub fn stream_status(&self) -> Option<&StreamStatus> {
        match &self.entry {
            Entry::Stream { status, .. } => Some(status),
            _ => None,
        }
    }

    /// True for a deletion.
    pub fn is_tombstone(&self) -> bool {
        matches!(self.entry, Entry::Deleted)
    }

    /// Content size in bytes (sum of chunk lengths for dense files, the
    /// recorded size, holes included, for sparse ones).
    pub fn size(&self) -> u64 {
        match &self.entry {
            Entry::Present { meta, chunks, .. } if meta.kind == crate::FileKind::File => {
                if meta.sparse.is_some() {
                    meta.size
                } else {
                    chunks.iter().map(|c| c.len as u64).sum()
                }
            }
            Entry::Present { meta, .. } => meta.size,
            Entry::Stream { chunks, .. } => chunks.iter().map(|c| c.len as u64).sum(),
            Entry::Deleted => 0,
        }
    }

    /// Encode for storage (postcard).
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("versions always serialize")
    }

    /// Decode from storage.
    pub fn from_bytes(b: &[u8]) -> Result<Version, postcard::Error> {
        postcard::from_bytes(b)
    }
}

/// What `v` changed next to the version before it (`prev`): `deleted`,
/// `created` (first, or after a deletion), `content`, or `metadata`.
pub fn change_of(prev: Option<&Version>, v: &Version) -> &'static str {
    if v.is_tombstone() {
        "deleted"
    } else if prev.is_none_or(|p| p.is_tombstone()) {
        "created"
    } else if content_changed(prev, v) {
        "content"
    } else {
        "metadata"
    }
}

/// True when `new` has different content from `old` (by chunk list, sparse
/// map or symlink target), or a different kind; `old == None` means new
/// content. Metadata-only changes are not content changes.
pub fn content_changed(old: Option<&Version>, new: &Version) -> bool {
    match old {
        None => true,
        Some(o) => {
            o.is_tombstone() != new.is_tombstone()
                || o.meta().map(|m| m.kind) != new.meta().map(|m| m.kind)
                || o.chunks() != new.chunks()
                || o.meta().and_then(|m| m.sparse.as_ref())
                    != new.meta().and_then(|m| m.sparse.as_ref())
                || o.meta().and_then(|m| m.symlink_target.as_ref())
                    != new.meta().and_then(|m| m.symlink_target.as_ref())
        }
    }
}
