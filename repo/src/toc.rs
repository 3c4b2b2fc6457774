//! A pack's table of contents, as its footer stores it: when the pack was
//! sealed, and the offset, frame length and kind of every record before the
//! footer.
//!
//! In a sound pack the entries tile the bytes between the start magic and
//! the footer exactly, in file order (`pack::read_footer` refuses a footer
//! that does not); a chunk entry carries what an index needs to find and
//! size the chunk without reading it.

use rewind_core::{ChunkId, Encoding, Timestamp};
use serde::{Deserialize, Serialize};

use crate::pack_index::{IdxChunk, IdxVersions};

/// A pack's table of contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Footer {
    /// When the pack was sealed.
    pub sealed_at: Timestamp,
    /// Every record before the footer, in file order.
    pub entries: Vec<TocEntry>,
}

/// Where one record is and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TocEntry {
    /// Offset of the frame in the pack.
    pub offset: u64,
    /// Frame length including its 8-byte header.
    pub frame_len: u32,
    /// What the record holds.
    pub kind: TocKind,
}

/// The kind of a record, with what an index needs to know about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum TocKind {
    /// A chunk.
    Chunk {
        id: ChunkId,
        raw_len: u32,
        encoding: Encoding,
    },
    /// A version record holding `count` versions.
    Versions { count: u32 },
}

impl TocEntry {
    pub(crate) fn idx_chunk(&self) -> Option<IdxChunk> {
        match self.kind {
            TocKind::Chunk {
                id,
                raw_len,
                encoding,
            } => Some(IdxChunk {
                id,
                offset: self.offset,
                frame_len: self.frame_len,
                raw_len,
                encoding,
            }),
            TocKind::Versions { .. } => None,
        }
    }

    pub(crate) fn idx_versions(&self) -> Option<IdxVersions> {
        match self.kind {
            TocKind::Versions { count } => Some(IdxVersions {
                offset: self.offset,
                frame_len: self.frame_len,
                count,
            }),
            TocKind::Chunk { .. } => None,
        }
    }
}
