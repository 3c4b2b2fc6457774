//! What the repository knows of one pack: where each of its chunks and
//! version records is, and its versions. A pack's writer and its loader
//! produce a [`PackIndex`]; an index file stores one; the in-memory indexes
//! are built from them.
//!
//! Locations are offsets of whole frames in the pack, listed in file order;
//! `versions` are the versions of the listed version records, in the same
//! order. `pack_len` ties the description to one length of the pack file,
//! so an index that disagrees with its pack is noticed.

use rewind_core::{ChunkId, Encoding, Timestamp, Version};
use serde::{Deserialize, Serialize};

use crate::pack_name::PackName;

/// Where one chunk of a pack is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IdxChunk {
    pub id: ChunkId,
    pub offset: u64,
    pub frame_len: u32,
    pub raw_len: u32,
    pub encoding: Encoding,
}

/// Where one version record of a pack is, and how many versions it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IdxVersions {
    pub offset: u64,
    pub frame_len: u32,
    pub count: u32,
}

/// Everything the in-memory indexes need from one pack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PackIndex {
    /// The pack.
    pub pack: PackName,
    /// Its length in bytes (a cheap check that the index describes this
    /// very file).
    pub pack_len: u64,
    /// When it was sealed (unknown when salvaged without a footer).
    pub sealed_at: Option<Timestamp>,
    /// Set when the pack was damaged and this index was salvaged from it.
    pub damage: Option<String>,
    /// Its chunks, in file order.
    pub chunks: Vec<IdxChunk>,
    /// Where its version records are, in file order.
    pub version_records: Vec<IdxVersions>,
    /// Its versions, in file order.
    pub versions: Vec<Version>,
}

impl PackIndex {
    /// True when the versions its records locate are not loaded yet (an
    /// index file read without them: `crate::index::read_header`).
    pub fn versions_pending(&self) -> bool {
        self.versions.is_empty() && self.version_records.iter().any(|r| r.count > 0)
    }
}
