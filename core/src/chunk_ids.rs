//! How a repository names its chunks: plain blake3 of the content (every
//! repository before encryption, and plain ones since), or blake3 keyed
//! with the repository's chunk-id key (an encrypted repository: a stored id
//! says nothing about the content to whoever lacks the key). Everything
//! that cuts or checks chunks for a repository asks it for its scheme
//! ([`crate::Repository::chunk_ids`]) and names chunks with it.

use std::fmt;
use std::sync::Arc;

use rewind_crypto::ChunkIdKey;

use crate::ChunkId;

/// A repository's chunk naming (see the module doc). Cheap to clone.
#[derive(Clone, Default)]
pub enum ChunkIds {
    /// `blake3(content)`.
    #[default]
    Plain,
    /// `blake3::keyed_hash(key, content)`.
    Keyed(Arc<ChunkIdKey>),
}

impl ChunkIds {
    /// The id of a chunk with content `data`.
    pub fn id_of(&self, data: &[u8]) -> ChunkId {
        match self {
            ChunkIds::Plain => ChunkId::of(data),
            ChunkIds::Keyed(k) => ChunkId(k.chunk_id(data)),
        }
    }

    /// Whether ids are keyed.
    pub fn is_keyed(&self) -> bool {
        matches!(self, ChunkIds::Keyed(_))
    }
}

impl fmt::Debug for ChunkIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkIds::Plain => f.write_str("ChunkIds::Plain"),
            ChunkIds::Keyed(_) => f.write_str("ChunkIds::Keyed(..)"),
        }
    }
}
