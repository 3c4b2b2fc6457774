//! Deltas between runs of a stream: each chunk of a new dump that the
//! repository lacks is compressed against the chunk at the same place in
//! the previous run (`Encoding::Delta`), so a dump in which 1 % of the rows
//! changed, spread over the whole table, stores about 1 % anew instead of
//! nearly all of it (content-defined chunking alone cannot dedup a change
//! every few kilobytes; docs/decisions.md, "Delta chunks").
//!
//! "The same place" is found by walking both runs in step: a chunk the
//! previous run also has puts the walk back in line; otherwise the new
//! chunk is paired with the previous chunk under its middle, and when the
//! two are about the same length and start about together, they are taken
//! as the same stretch of the table with a few rows changed, so the walk
//! continues from the end of the previous chunk (cut points survive edits
//! that do not touch them).

use std::collections::HashMap;

use rewind_core::{ChunkId, EncodedChunk, Repository, STREAM_ZSTD_LEVEL};

/// A delta this much smaller than its chunk's raw bytes is kept without
/// compressing the chunk on its own to compare (dump text compresses about
/// 3:1 alone; a delta of a chunk with a few changed rows is ~1 %).
const CLEARLY_SMALL: usize = 16;

/// The previous run of a stream, as the walk sees it.
pub(crate) struct Previous {
    /// Start, length and id of each chunk, in stream order.
    chunks: Vec<(u64, u64, ChunkId)>,
    /// Position of each chunk id in `chunks` (the first, if repeated).
    index: HashMap<ChunkId, usize>,
    /// Where in the previous run the next new chunk is expected to start.
    pos: u64,
}

impl Previous {
    /// The newest stored run of `path` for `client` that has output (a
    /// successful one if there is any), when `repo` takes deltas.
    pub(crate) fn load(repo: &dyn Repository, client: &str, path: &[u8]) -> Option<Previous> {
        let versions = repo.versions_of(client, path).ok()?;
        let with_output = |ok: bool| {
            versions.iter().rev().find(|v| {
                v.stream_status().is_some_and(|s| s.ok() || !ok) && !v.chunks().is_empty()
            })
        };
        let v = with_output(true).or_else(|| with_output(false))?;
        let first = v.chunks().first()?;
        repo.delta_base(&first.id).ok()??;
        let mut chunks = Vec::with_capacity(v.chunks().len());
        let mut index = HashMap::with_capacity(v.chunks().len());
        let mut start = 0u64;
        for (i, c) in v.chunks().iter().enumerate() {
            chunks.push((start, c.len as u64, c.id));
            index.entry(c.id).or_insert(i);
            start += c.len as u64;
        }
        Some(Previous {
            chunks,
            index,
            pos: 0,
        })
    }

    /// Step over the next chunk of the new run (every chunk, in order);
    /// for one the previous run lacks, the previous chunk to try as its
    /// base.
    pub(crate) fn next(&mut self, id: &ChunkId, len: u32) -> Option<ChunkId> {
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

/// Encode a new chunk of a stream: as a delta against `hint` (or the
/// whole chunk `hint` is itself a delta of) when that pays, else on its
/// own. A base that cannot be read only costs the delta.
pub(crate) fn encode(
    repo: Option<&dyn Repository>,
    id: ChunkId,
    data: &[u8],
    hint: Option<ChunkId>,
) -> EncodedChunk {
    let delta = repo.zip(hint).and_then(|(repo, hint)| {
        let base = repo.delta_base(&hint).ok()??;
        let raw = match repo.read_chunk(&base) {
            Ok(raw) => raw,
            Err(e) => {
                tracing::debug!("no delta against chunk {base}: {e}");
                return None;
            }
        };
        EncodedChunk::encode_delta(id, data, base, &raw, STREAM_ZSTD_LEVEL)
    });
    match delta {
        Some(d) if d.data.len() < data.len() / CLEARLY_SMALL => d,
        Some(d) => {
            let whole = EncodedChunk::encode_with_id_at(id, data, STREAM_ZSTD_LEVEL);
            // A delta costs a second read when restored: it must save a
            // quarter to be kept.
            if d.data.len() < whole.data.len() / 4 * 3 {
                d
            } else {
                whole
            }
        }
        None => EncodedChunk::encode_with_id_at(id, data, STREAM_ZSTD_LEVEL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prev(lens: &[u64]) -> Previous {
        let mut chunks = Vec::new();
        let mut index = HashMap::new();
        let mut start = 0;
        for (i, &l) in lens.iter().enumerate() {
            let id = ChunkId::of(&(i as u64).to_le_bytes());
            chunks.push((start, l, id));
            index.insert(id, i);
            start += l;
        }
        Previous {
            chunks,
            index,
            pos: 0,
        }
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
}
