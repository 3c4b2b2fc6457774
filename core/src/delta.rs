//! Deltas between versions: each chunk of a new version that the
//! repository lacks may be compressed against the chunk at the same place
//! in the previous version ([`Encoding::Delta`](crate::Encoding::Delta)),
//! so a dump in which 1 % of the rows changed, spread over the whole
//! table, or a large file with a few small edits, stores about the changes
//! instead of every chunk they touch (content-defined chunking alone cannot
//! dedup a change every few kilobytes; docs/decisions.md, "Delta chunks").
//!
//! "The same place" is found by walking both versions in step: a chunk the
//! previous version also has puts the walk back in line; otherwise the new
//! chunk is paired with the previous chunk under its middle, and when the
//! two are about the same length and start about together, they are taken
//! as the same stretch with a few bytes changed, so the walk continues from
//! the end of the previous chunk (cut points survive edits that do not
//! touch them).

use std::collections::HashMap;

use crate::{Bases, ChunkId, ChunkRef, EncodedChunk};

/// A delta this much smaller than its chunk's raw bytes is kept without
/// compressing the chunk on its own to compare (text compresses about 3:1
/// alone; a delta of a chunk with a few changed rows is ~1 %).
const CLEARLY_SMALL: usize = 16;

/// The previous version's chunks, as the walk sees them.
pub struct DeltaWalk {
    /// Start, length and id of each chunk, in order.
    chunks: Vec<(u64, u64, ChunkId)>,
    /// Position of each chunk id in `chunks` (the first, if repeated).
    index: HashMap<ChunkId, usize>,
    /// Where in the previous version the next new chunk is expected to start.
    pos: u64,
}

impl DeltaWalk {
    /// A walk along `previous` (the chunks of the previous version, in
    /// order); `None` when it has none.
    pub fn new(previous: &[ChunkRef]) -> Option<DeltaWalk> {
        if previous.is_empty() {
            return None;
        }
        let mut chunks = Vec::with_capacity(previous.len());
        let mut index = HashMap::with_capacity(previous.len());
        let mut start = 0u64;
        for (i, c) in previous.iter().enumerate() {
            chunks.push((start, c.len as u64, c.id));
            index.entry(c.id).or_insert(i);
            start += c.len as u64;
        }
        Some(DeltaWalk {
            chunks,
            index,
            pos: 0,
        })
    }

    /// Step over the next chunk of the new version (every chunk, in
    /// order); for one the previous version lacks, the previous chunk to
    /// try as its base.
    pub fn next(&mut self, id: &ChunkId, len: u32) -> Option<ChunkId> {
        let len = len as u64;
        if let Some(&i) = self.index.get(id) {
            self.pos = self.chunks[i].0 + len;
            return None;
        }
        let mid = self.pos + len / 2;
        let j = self
            .chunks
            .partition_point(|&(start, _, _)| start <= mid)
            .checked_sub(1)?;
        let (start, plen, pid) = self.chunks[j];
        let aligned = self.pos.abs_diff(start) <= plen / 8 && len.abs_diff(plen) <= plen / 8;
        self.pos = if aligned {
            start + plen
        } else {
            self.pos + len
        };
        Some(pid)
    }
}

/// Encode chunk `id` (`data`) as a delta against `hint` (or against the
/// whole chunk `hint` is itself a delta of) when that pays against
/// `alone`, the chunk's encoding on its own (computed only when needed).
/// A base that cannot be read only costs the delta.
///
/// `alone` is not computed either when the base is stored uncompressed
/// (zstd could not shrink it): a delta is made only of a chunk sharing at
/// least half its bytes with its base, so the chunk would not shrink alone
/// either, and any delta (under half its length) beats it. On a busy file
/// of incompressible data compressing every changed chunk alone to compare
/// was a seventh of the agent's time (docs/decisions.md "Busy-file CPU
/// (issue 16)").
pub fn encode_with_hint(
    repo: &dyn Bases,
    id: ChunkId,
    data: &[u8],
    hint: ChunkId,
    level: i32,
    alone: impl FnOnce() -> EncodedChunk,
) -> EncodedChunk {
    let delta = (|| {
        let base = repo.delta_base(&hint).ok()??;
        let stored = match repo.read_base(&base) {
            Ok(stored) => stored,
            Err(e) => {
                tracing::debug!("no delta against chunk {base}: {e}");
                return None;
            }
        };
        let d = EncodedChunk::encode_delta(id, data, base, &stored.raw, level)?;
        Some((d, stored.incompressible))
    })();
    match delta {
        Some((d, true)) => d,
        Some((d, false)) if d.data.len() < data.len() / CLEARLY_SMALL => d,
        Some((d, false)) => {
            let whole = alone();
            // A delta costs a second read when restored: it must save a
            // quarter to be kept.
            if d.data.len() < whole.data.len() / 4 * 3 {
                d
            } else {
                whole
            }
        }
        None => alone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prev(lens: &[u64]) -> DeltaWalk {
        let refs: Vec<ChunkRef> = lens
            .iter()
            .enumerate()
            .map(|(i, &l)| ChunkRef {
                id: id(i),
                len: l as u32,
            })
            .collect();
        DeltaWalk::new(&refs).unwrap()
    }

    fn id(i: usize) -> ChunkId {
        ChunkId::of(&(i as u64).to_le_bytes())
    }

    fn new_id(i: usize) -> ChunkId {
        ChunkId::of(format!("new {i}").as_bytes())
    }

    #[test]
    fn edited_chunks_pair_with_the_chunks_they_replace() {
        // Every chunk changed a little, some grew, some shrank: each still
        // pairs with its counterpart, however far the drift adds up.
        let lens: Vec<u64> = (0..400).map(|i| 200_000 + (i * 7919 % 100_000)).collect();
        let mut p = prev(&lens);
        for (i, &l) in lens.iter().enumerate() {
            let grown = if i % 2 == 0 { l + 900 } else { l - 700 };
            assert_eq!(p.next(&new_id(i), grown as u32), Some(id(i)), "chunk {i}");
        }
    }

    #[test]
    fn a_shared_chunk_realigns_and_a_merged_pair_skips_ahead() {
        let mut p = prev(&[100_000; 10]);
        assert_eq!(p.next(&new_id(0), 100_000), Some(id(0)));
        // Chunks 1 and 2 became one chunk of twice the length.
        assert_eq!(p.next(&new_id(1), 200_000), Some(id(2)));
        assert_eq!(p.next(&new_id(2), 100_000), Some(id(3)));
        // An inserted stretch, then chunk 6 unchanged: back in line.
        assert_eq!(p.next(&new_id(3), 50_000), Some(id(4)));
        assert_eq!(p.next(&id(6), 100_000), None);
        assert_eq!(p.next(&new_id(4), 100_000), Some(id(7)));
        // Past the end of the previous run, the last chunk is tried.
        for i in 5..9 {
            p.next(&new_id(i), 100_000);
        }
        assert_eq!(p.next(&new_id(9), 100_000), Some(id(9)));
    }

    /// One stored whole chunk, as [`Bases`] shows it.
    struct OneBase {
        id: ChunkId,
        stored: crate::StoredBase,
    }

    impl Bases for OneBase {
        fn delta_base(&self, id: &ChunkId) -> Result<Option<ChunkId>, crate::RepoError> {
            Ok((*id == self.id).then_some(self.id))
        }
        fn read_base(&self, _: &ChunkId) -> Result<crate::StoredBase, crate::RepoError> {
            Ok(crate::StoredBase {
                raw: self.stored.raw.clone(),
                incompressible: self.stored.incompressible,
            })
        }
        fn versions_of(&self, _: &str, _: &[u8]) -> Result<Vec<crate::Version>, crate::RepoError> {
            Ok(Vec::new())
        }
        fn store_base(&self, _: EncodedChunk) -> Result<(), crate::RepoError> {
            Ok(())
        }
    }

    impl OneBase {
        /// `base`, stored compressed or not.
        fn new(base: &[u8], incompressible: bool) -> OneBase {
            OneBase {
                id: ChunkId::of(base),
                stored: crate::StoredBase {
                    raw: base.to_vec(),
                    incompressible,
                },
            }
        }
    }

    /// `base` (1 MiB) with 24 of its 4 KiB blocks overwritten by noise:
    /// a delta above a sixteenth of the chunk.
    fn edited(base: &[u8]) -> Vec<u8> {
        let mut data = base.to_vec();
        for k in 0..24 {
            let at = k * 10 * 4096;
            data[at..at + 4096].copy_from_slice(&noise(k as u64 + 7, 4096));
        }
        data
    }

    fn noise(seed: u64, n: usize) -> Vec<u8> {
        // xorshift64*, the high byte.
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect()
    }

    #[test]
    fn a_delta_against_an_incompressible_base_is_kept_without_compressing_the_chunk_alone() {
        let base = noise(1, 1 << 20);
        let data = edited(&base);
        let repo = OneBase::new(&base, true);
        let id = ChunkId::of(&data);
        let c = encode_with_hint(&repo, id, &data, repo.id, 1, || {
            panic!("compressed alone to compare")
        });
        assert_eq!(c.base(), Some(repo.id));
        assert!(
            c.data.len() > data.len() / CLEARLY_SMALL,
            "{}",
            c.data.len()
        );
        assert_eq!(c.decode_with_base(&base).unwrap(), data);
    }

    #[test]
    fn a_delta_against_a_compressible_base_is_weighed_against_the_chunk_alone() {
        // Text-like: compresses well alone; the blocks of noise make the
        // delta too large to keep without comparing.
        let base: Vec<u8> = (0..1usize << 20)
            .map(|i| b"abcdefgh\n"[(i * 7 + i / 9) % 9])
            .collect();
        let data = edited(&base);
        let repo = OneBase::new(&base, false);
        let id = ChunkId::of(&data);
        let asked = std::cell::Cell::new(false);
        let c = encode_with_hint(&repo, id, &data, repo.id, 1, || {
            asked.set(true);
            EncodedChunk::encode_with_id(id, &data)
        });
        assert!(asked.get(), "the chunk alone was compared");
        assert_eq!(c.decode_with_base(&base).unwrap(), data);
    }
}
