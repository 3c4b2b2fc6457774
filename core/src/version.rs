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

/// What a version says about its path.
// Tombstones are rare next to present entries, so boxing the common case
// to shrink the rare one would cost an allocation per version for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// The path existed with this metadata and (for files) this content.
    Present {
        /// Metadata.
        meta: FileMeta,
        /// Content chunks in order; empty for anything but regular files.
        chunks: Vec<ChunkRef>,
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

    /// True for a deletion.
    pub fn is_tombstone(&self) -> bool {
        matches!(self.entry, Entry::Deleted)
    }

    /// Content size in bytes (sum of chunk lengths for files).
    pub fn size(&self) -> u64 {
        match &self.entry {
            Entry::Present { meta, chunks } if meta.kind == crate::FileKind::File => {
                chunks.iter().map(|c| c.len as u64).sum()
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

/// True when `new` has different content from `old` (by chunk list), or a
/// different kind; `old == None` means new content.
pub fn content_changed(old: Option<&Version>, new: &Version) -> bool {
    match old {
        None => true,
        Some(o) => {
            o.is_tombstone() != new.is_tombstone()
                || o.meta().map(|m| m.kind) != new.meta().map(|m| m.kind)
                || o.chunks() != new.chunks()
                || o.meta().and_then(|m| m.symlink_target.as_ref())
                    != new.meta().and_then(|m| m.symlink_target.as_ref())
        }
    }
}
