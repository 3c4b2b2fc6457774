use serde::{Deserialize, Serialize};

use crate::ChunkId;

/// zstd level for chunks. Level 3 is zstd's default: on the benchmark tree it
/// compresses text within a few percent of level 9 at several times the
/// speed (see docs/decisions.md).
pub const ZSTD_LEVEL: i32 = 3;

/// The zstd level of database dumps and other streams: level 1 compresses
/// dump text (SQL with hex and numbers) about twice as fast as level 3 for
/// a few percent more bytes, so one core keeps up with pg_dump (measured,
/// docs/decisions.md "Database dumps").
pub const STREAM_ZSTD_LEVEL: i32 = 1;

thread_local! {
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// No chunk is longer: FastCDC's largest maximum (16 MiB).
pub const MAX_CHUNK_LEN: u32 = 16 << 20;

/// A chunk in its stored form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedChunk {
    /// blake3 of the uncompressed bytes.
    pub id: ChunkId,
    /// Length of the uncompressed bytes.
    pub raw_len: u32,
    /// True when `data` is zstd-compressed, false when stored raw.
    pub compressed: bool,
    /// The stored bytes.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// A stored chunk that does not decode to its id.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// zstd refused the stored bytes.
    #[error("chunk {id}: zstd: {source}")]
    Decompress {
        /// The chunk.
        id: ChunkId,
        /// zstd's error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes decode but do not hash to the id, or have the wrong length.
    #[error("chunk {id}: content does not match its id (damaged)")]
    Mismatch {
        /// The chunk.
        id: ChunkId,
    },
}

impl EncodedChunk {
    /// Hash and compress `data`; keep it raw when compression saves less
    /// than 1/32 (such data is random or already compressed, and decoding
    /// raw is free).
    pub fn encode(data: &[u8]) -> EncodedChunk {
        let id = ChunkId::of(data);
        Self::encode_with_id(id, data)
    }

    /// Compress `data` whose id is already known.
    pub fn encode_with_id(id: ChunkId, data: &[u8]) -> EncodedChunk {
        Self::encode_with_id_at(id, data, ZSTD_LEVEL)
    }

    /// [`encode_with_id`](Self::encode_with_id) at another zstd level
    /// (decoding is the same whatever the level): database dumps use
    /// [`STREAM_ZSTD_LEVEL`] to keep up with the dump program.
    pub fn encode_with_id_at(id: ChunkId, data: &[u8], level: i32) -> EncodedChunk {
        let raw_len = data.len() as u32;
        // One compression context per thread: creating one per chunk costs
        // more than compressing a small file. It is reset when a call asks
        // for another level (rare: each thread uses one level).
        let compressed = COMPRESSOR.with(|c| {
            let mut c = c.borrow_mut();
            if c.as_ref().is_none_or(|(l, _)| *l != level) {
                *c = Some((level, zstd::bulk::Compressor::new(level).ok()?));
            }
            c.as_mut().and_then(|(_, z)| z.compress(data).ok())
        });
        if let Some(c) = compressed
            && c.len() + data.len() / 32 < data.len()
        {
            return EncodedChunk {
                id,
                raw_len,
                compressed: true,
                data: c,
            };
        }
        EncodedChunk {
            id,
            raw_len,
            compressed: false,
            data: data.to_vec(),
        }
    }

    /// Decompress and check the id.
    pub fn decode(&self) -> Result<Vec<u8>, CodecError> {
        // A damaged length must not make us allocate gigabytes.
        if self.raw_len > MAX_CHUNK_LEN {
            return Err(CodecError::Mismatch { id: self.id });
        }
        let raw = if self.compressed {
            DECOMPRESSOR
                .with(|d| {
                    let mut d = d.borrow_mut();
                    if d.is_none() {
                        *d = Some(zstd::bulk::Decompressor::new()?);
                    }
                    d.as_mut()
                        .expect("just set")
                        .decompress(&self.data, self.raw_len as usize)
                })
                .map_err(|source| CodecError::Decompress {
                    id: self.id,
                    source,
                })?
        } else {
            self.data.clone()
        };
        if raw.len() != self.raw_len as usize || ChunkId::of(&raw) != self.id {
            return Err(CodecError::Mismatch { id: self.id });
        }
        Ok(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    #[test]
    fn compressible_is_compressed_and_round_trips() {
        let data = b"hello world ".repeat(1000);
        let c = EncodedChunk::encode(&data);
        assert!(c.compressed);
        assert!(c.data.len() < data.len() / 10);
        assert_eq!(c.decode().unwrap(), data);
    }

    #[test]
    fn random_is_stored_raw() {
        let mut data = vec![0u8; 100_000];
        rand::rng().fill_bytes(&mut data);
        let c = EncodedChunk::encode(&data);
        assert!(!c.compressed);
        assert_eq!(c.decode().unwrap(), data);
    }

    #[test]
    fn damage_is_detected() {
        let data = b"some content here".repeat(50);
        let mut c = EncodedChunk::encode(&data);
        let n = c.data.len();
        c.data[n / 2] ^= 0x40;
        assert!(c.decode().is_err());
        let mut raw = EncodedChunk::encode(b"x");
        raw.data[0] = b'y';
        assert!(matches!(raw.decode(), Err(CodecError::Mismatch { .. })));
    }
}
