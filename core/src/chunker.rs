use std::io::{self, Read};

use serde::{Deserialize, Serialize};

/// FastCDC size bounds, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// No chunk is smaller, except the last one of a file.
    pub min: u32,
    /// The average the cut-point mask aims for.
    pub avg: u32,
    /// No chunk is larger.
    pub max: u32,
}

/// The default bounds: 64 KiB / 256 KiB / 1 MiB. Chosen by measurement (see
/// docs/decisions.md, "Chunk size"): smaller averages store less after a small
/// edit of a large file but the index grows as 1/avg; at 256 KiB a 1-byte
/// edit in a 1 GiB file stores about 0.3 MiB, and the in-memory index of a
/// 1 TiB repository stays near 200 MiB.
pub const DEFAULT_CHUNKER: ChunkerParams = ChunkerParams {
    min: 64 * 1024,
    avg: 256 * 1024,
    max: 1024 * 1024,
};

/// A content-defined chunker with fixed bounds.
#[derive(Clone, Copy, Debug)]
pub struct Chunker {
    params: ChunkerParams,
}

impl Default for Chunker {
    fn default() -> Self {
        Chunker::new(DEFAULT_CHUNKER)
    }
}

impl Chunker {
    /// A chunker with the given bounds.
    pub fn new(params: ChunkerParams) -> Chunker {
        Chunker { params }
    }

    /// The bounds in use.
    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Cut everything `reader` yields into chunks, in order. Memory is
    /// bounded by a few times `max`, whatever the stream's length.
    pub fn chunks<R: Read>(&self, reader: R) -> impl Iterator<Item = io::Result<Vec<u8>>> {
        let p = self.params;
        fastcdc::v2020::StreamCDC::new(reader, p.min, p.avg, p.max).map(|r| match r {
            Ok(c) => Ok(c.data),
            Err(fastcdc::v2020::Error::IoError(e)) => Err(e),
            Err(e) => Err(io::Error::other(e.to_string())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0u8; n];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
        v
    }

    #[test]
    fn chunks_cover_input_within_bounds() {
        let data = random(8 << 20, 1);
        let c = Chunker::default();
        let chunks: Vec<Vec<u8>> = c.chunks(&data[..]).collect::<io::Result<_>>().unwrap();
        assert_eq!(chunks.concat(), data);
        let n = chunks.len();
        for (i, ch) in chunks.iter().enumerate() {
            assert!(ch.len() <= DEFAULT_CHUNKER.max as usize);
            if i + 1 < n {
                assert!(ch.len() >= DEFAULT_CHUNKER.min as usize);
            }
        }
    }

    #[test]
    fn small_edit_changes_few_chunks() {
        let mut data = random(16 << 20, 2);
        let c = Chunker::default();
        let before: std::collections::HashSet<_> = c
            .chunks(&data[..])
            .map(|ch| crate::ChunkId::of(&ch.unwrap()))
            .collect();
        data.splice(5_000_000..5_000_000, b"inserted bytes".iter().copied());
        let after: Vec<_> = c
            .chunks(&data[..])
            .map(|ch| crate::ChunkId::of(&ch.unwrap()))
            .collect();
        let new = after.iter().filter(|id| !before.contains(id)).count();
        assert!(new <= 3, "{new} new chunks after a small insert");
    }

    #[test]
    fn empty_input_has_no_chunks() {
        assert_eq!(Chunker::default().chunks(&b""[..]).count(), 0);
    }
}
