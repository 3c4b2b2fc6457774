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
            Entry::Deleted => None,
        }
    }

    /// Content chunks (empty for tombstones and non-files).
    pub fn chunks(&self) -> &[ChunkRef] {
        match &self.entry {
            Entry::Present { chunks, .. } => chunks,
            Entry::Deleted => &[],
        }
    }

    /// Extended attributes (empty for tombstones).
    pub fn xattrs(&self) -> &[XattrRef] {
        match &self.entry {
            Entry::Present { xattrs, .. } => xattrs,
            Entry::Deleted => &[],
        }
    }

    /// Every chunk the version refers to: content chunks, then the values
    /// of its extended attributes. A repository must hold all of them before
    /// it takes the version.
    pub fn chunk_refs(&self) -> impl Iterator<Item = &ChunkRef> {
        self.chunks()
            .iter()
            .chain(self.xattrs().iter().map(|x| &x.value))
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
