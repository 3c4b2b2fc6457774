//! The one chunk loop of capture: every chunk cut from a file or from a
//! dump stream passes through [`ChunkLoop::cut`], which records it in the
//! version's chunk list and says whether it must be encoded and queued for
//! the journal; [`Encode`] turns such a chunk into its stored form.
//!
//! - Every chunk is recorded, in order, with its length; the bytes seen are
//!   counted.
//! - A chunk is queued at most once per capture, and never when the
//!   previous version has it or the repository is known to hold it.
//! - A new chunk comes with the chunk at the same place in the previous
//!   version (or the previous run of a stream) as a delta hint, when there
//!   is a walk to take it from.

use std::collections::HashSet;

use rewind_core::{
    Bases, ChunkId, ChunkIds, ChunkRef, DeltaWalk, EncodedChunk, FileEncoder, STREAM_ZSTD_LEVEL,
};
use rewind_journal::CaptureGuard;

/// A chunk that must be stored: its id and the chunk it may be a delta of.
pub(crate) struct NewChunk {
    pub(crate) id: ChunkId,
    pub(crate) hint: Option<ChunkId>,
}

/// The chunks of one capture (see the module doc).
pub(crate) struct ChunkLoop<'g> {
    guard: &'g CaptureGuard,
    /// Chunks the previous version has: stored, or on their way.
    previous: HashSet<ChunkId>,
    seen: HashSet<ChunkId>,
    walk: Option<DeltaWalk>,
    chunks: Vec<ChunkRef>,
    bytes: u64,
    /// How the repository names chunks.
    ids: ChunkIds,
}

impl<'g> ChunkLoop<'g> {
    /// A loop for one capture under `guard`; `previous` are the chunk ids
    /// of the version before, `walk` follows its chunk list for hints;
    /// chunks are named as `ids` says (the repository's scheme).
    pub(crate) fn new(
        guard: &'g CaptureGuard,
        previous: HashSet<ChunkId>,
        walk: Option<DeltaWalk>,
        ids: &ChunkIds,
    ) -> ChunkLoop<'g> {
        ChunkLoop {
            guard,
            previous,
            seen: HashSet::new(),
            walk,
            chunks: Vec::new(),
            bytes: 0,
            ids: ids.clone(),
        }
    }

    /// Record the next chunk, `data`; `Some` when it must be stored.
    pub(crate) fn cut(&mut self, data: &[u8]) -> Option<NewChunk> {
        let id = self.ids.id_of(data);
        let len = data.len() as u32;
        self.bytes += u64::from(len);
        self.chunks.push(ChunkRef { id, len });
        let hint = self.walk.as_mut().and_then(|w| w.next(&id, len));
        let new =
            !self.previous.contains(&id) && self.seen.insert(id) && !self.guard.is_stored(&id);
        new.then_some(NewChunk { id, hint })
    }

    /// Bytes cut so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The chunk list, in order.
    pub(crate) fn into_chunks(self) -> Vec<ChunkRef> {
        self.chunks
    }
}

/// How a new chunk is stored.
pub(crate) trait Encode: Sync {
    /// The stored form of chunk `id` (`data`), possibly a delta of `hint`.
    fn encode(&self, id: ChunkId, data: &[u8], hint: Option<ChunkId>) -> EncodedChunk;
}

/// Files into a repository that takes deltas: against the previous
/// version's chunk, small ones with the dictionary.
impl Encode for FileEncoder {
    fn encode(&self, id: ChunkId, data: &[u8], hint: Option<ChunkId>) -> EncodedChunk {
        FileEncoder::encode(self, id, data, hint)
    }
}

/// Files into a repository that takes whole chunks only (a server).
pub(crate) struct Whole;

impl Encode for Whole {
    fn encode(&self, id: ChunkId, data: &[u8], _hint: Option<ChunkId>) -> EncodedChunk {
        EncodedChunk::encode_with_id(id, data)
    }
}

/// Dump streams: their own compression level, as deltas against the
/// previous run where the repository takes deltas and that pays.
pub(crate) struct StreamEncoder<'a> {
    pub(crate) bases: Option<&'a dyn Bases>,
}

impl Encode for StreamEncoder<'_> {
    fn encode(&self, id: ChunkId, data: &[u8], hint: Option<ChunkId>) -> EncodedChunk {
        let alone = || EncodedChunk::encode_with_id_at(id, data, STREAM_ZSTD_LEVEL);
        match self.bases.zip(hint) {
            Some((bases, hint)) => {
                rewind_core::encode_with_hint(bases, id, data, hint, STREAM_ZSTD_LEVEL, alone)
            }
            None => alone(),
        }
    }
}
