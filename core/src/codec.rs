use serde::{Deserialize, Serialize};

use crate::{ChunkId, ChunkIds};

/// zstd level for chunks. Level 2 stores within 1 % of level 3 on text
/// (real source code, documentation, the benchmark tree's text) at a
/// fifth to a quarter less CPU, and about 3 % more on binaries (see
/// docs/decisions.md, "zstd level 2 for chunks").
pub const ZSTD_LEVEL: i32 = 2;

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
    /// Where [`ChunkView::verify`] decompresses: checking thousands of
    /// chunks allocates (and faults in) one buffer, not one per chunk.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// A decompression context bound to the base decoded last (a copy of
    /// its content beside it): a small-file dictionary is the base of
    /// thousands of chunks, and preparing a context costs more than
    /// decoding one of them. Fields drop in order, the context before the
    /// dictionary it refers to.
    static DELTA_CONTEXT: std::cell::RefCell<Option<DeltaContext>> =
        const { std::cell::RefCell::new(None) };
}

/// Give back the memory of this thread's zstd contexts and scratch buffer
/// (the thread-locals above; see [`crate::release_thread_caches`]). A
/// context in use (never, from where this is called) is left alone.
pub(crate) fn release_thread_caches() {
    let _ = COMPRESSOR.with(|c| c.try_borrow_mut().map(|mut c| c.take()));
    let _ = DECOMPRESSOR.with(|c| c.try_borrow_mut().map(|mut c| c.take()));
    let _ = SCRATCH.with(|c| c.try_borrow_mut().map(|mut c| std::mem::take(&mut *c)));
    let _ = DELTA_CONTEXT.with(|c| c.try_borrow_mut().map(|mut c| c.take()));
}

struct DeltaContext {
    base: Vec<u8>,
    dctx: zstd::zstd_safe::DCtx<'static>,
    ddict: zstd::zstd_safe::DDict<'static>,
}

/// The first bytes of a structured zstd dictionary: content starting with
/// them would be parsed as one, not as raw content (a base starting with
/// them is given as a prefix; a small-file dictionary never starts so).
pub(crate) const ZSTD_DICT_MAGIC: [u8; 4] = 0xEC30_A437u32.to_le_bytes();

/// No chunk is longer: FastCDC's largest maximum (16 MiB).
pub const MAX_CHUNK_LEN: u32 = 16 << 20;

/// How a chunk's stored bytes encode its content.
///
/// Serialized by postcard as one byte for `Raw` (0) and `Zstd` (1), the
/// very bytes of the `compressed: bool` this replaced, so spool segments,
/// pack records and index files written before deltas existed read as
/// they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Encoding {
    /// The content itself.
    Raw,
    /// One zstd frame.
    Zstd,
    /// One zstd frame compressed with the content of chunk `base` as its
    /// prefix (a raw-content dictionary): a delta against a similar chunk,
    /// such as the same stretch of yesterday's dump. Decoding needs the
    /// base's content; a base is never itself a delta.
    Delta {
        /// The chunk whose content the frame refers to.
        base: ChunkId,
    },
}

/// A chunk in its stored form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedChunk {
    /// blake3 of the uncompressed bytes.
    pub id: ChunkId,
    /// Length of the uncompressed bytes.
    pub raw_len: u32,
    /// How `data` encodes the content.
    pub encoding: Encoding,
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
    /// A delta was decoded without the content of its base.
    #[error("chunk {id} is a delta against chunk {base}, whose content is needed to decode it")]
    NeedsBase {
        /// The chunk.
        id: ChunkId,
        /// Its base.
        base: ChunkId,
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
        if let Some(mut c) = compressed
            && c.len() + data.len() / 32 < data.len()
        {
            // zstd sized the buffer for the worst case (a little above the
            // input); chunks wait in the pipeline and the group commit, so
            // the spare room would be held a while (docs/decisions.md
            // "Agent memory (issue 19)").
            c.shrink_to_fit();
            return EncodedChunk {
                id,
                raw_len,
                encoding: Encoding::Zstd,
                data: c,
            };
        }
        EncodedChunk {
            id,
            raw_len,
            encoding: Encoding::Raw,
            data: data.to_vec(),
        }
    }

    /// Compress `data` (whose id is `id`) as a delta against `base`, the
    /// content of chunk `base_id`, at zstd `level`. `None` when zstd fails
    /// or the delta is not below half of `data`'s length (a base that
    /// shares little; the caller stores the chunk on its own).
    pub fn encode_delta(
        id: ChunkId,
        data: &[u8],
        base_id: ChunkId,
        base: &[u8],
        level: i32,
    ) -> Option<EncodedChunk> {
        use zstd::zstd_safe::{CCtx, CParameter};
        let mut cx = CCtx::try_create()?;
        cx.set_parameter(CParameter::CompressionLevel(level)).ok()?;
        // The window must reach back over the whole prefix, or matches
        // far into the base are lost: the smallest power of two holding
        // both (at most 2^25 for two 16 MiB chunks).
        let wlog = delta_window_log(base.len(), data.len());
        cx.set_parameter(CParameter::WindowLog(wlog)).ok()?;
        // Long-distance matching finds the long runs shared with the base
        // anywhere in it; the fast levels' small hash tables alone keep
        // only the end of the base in view (on dump text with 1 % of the
        // rows changed: 2 KB with it, 154 KB without, 167 KB compressed
        // alone; docs/decisions.md "Delta chunks").
        cx.set_parameter(CParameter::EnableLongDistanceMatching(true))
            .ok()?;
        cx.ref_prefix(base).ok()?;
        let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
        cx.compress2(&mut out, data).ok()?;
        out.shrink_to_fit();
        (out.len() < data.len() / 2).then_some(EncodedChunk {
            id,
            raw_len: data.len() as u32,
            encoding: Encoding::Delta { base: base_id },
            data: out,
        })
    }

    /// The same chunk, borrowed.
    pub fn view(&self) -> ChunkView<'_> {
        ChunkView {
            id: self.id,
            raw_len: self.raw_len,
            encoding: self.encoding,
            data: &self.data,
        }
    }

    /// The base this chunk is a delta against, if it is one.
    pub fn base(&self) -> Option<ChunkId> {
        self.view().base()
    }

    /// Decode a delta with `base`, the content of its base chunk (ignored
    /// for a chunk that is not a delta), and check the id.
    pub fn decode_with_base(&self, base: &[u8]) -> Result<Vec<u8>, CodecError> {
        self.view().decode_with_base(base)
    }

    /// [`decode_with_base`](Self::decode_with_base) under `ids`.
    pub fn decode_with_base_as(&self, ids: &ChunkIds, base: &[u8]) -> Result<Vec<u8>, CodecError> {
        self.view().decode_with_base_as(ids, base)
    }

    /// Check that the stored bytes decode to the id ([`ChunkView::verify`]).
    pub fn verify(&self) -> Result<(), CodecError> {
        self.view().verify()
    }

    /// [`verify`](Self::verify) under `ids`.
    pub fn verify_as(&self, ids: &ChunkIds) -> Result<(), CodecError> {
        self.view().verify_as(ids)
    }

    /// Decompress and check the id.
    pub fn decode(&self) -> Result<Vec<u8>, CodecError> {
        self.view().decode()
    }

    /// [`decode`](Self::decode) under `ids`.
    pub fn decode_as(&self, ids: &ChunkIds) -> Result<Vec<u8>, CodecError> {
        self.view().decode_as(ids)
    }

    /// [`decode_as`](Self::decode_as), consuming the chunk: stored raw,
    /// its bytes are the content, checked and handed back without a copy
    /// (a restore of incompressible data copied each chunk once more).
    pub fn into_decoded_as(self, ids: &ChunkIds) -> Result<Vec<u8>, CodecError> {
        match self.encoding {
            Encoding::Raw if self.raw_len <= MAX_CHUNK_LEN => {
                let view = ChunkView {
                    data: &[],
                    ..self.view()
                };
                view.check(ids, self.data)
            }
            _ => self.decode_as(ids),
        }
    }
}

/// An [`EncodedChunk`] whose stored bytes are borrowed: the same wire
/// form, read in place from a request body (a server checks and stores
/// uploaded chunks without copying each one out of the body first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct ChunkView<'a> {
    /// blake3 of the uncompressed bytes.
    pub id: ChunkId,
    /// Length of the uncompressed bytes.
    pub raw_len: u32,
    /// How `data` encodes the content.
    pub encoding: Encoding,
    /// The stored bytes.
    #[serde(borrow)]
    pub data: &'a [u8],
}

impl ChunkView<'_> {
    /// An owned copy.
    pub fn to_chunk(&self) -> EncodedChunk {
        EncodedChunk {
            id: self.id,
            raw_len: self.raw_len,
            encoding: self.encoding,
            data: self.data.to_vec(),
        }
    }

    /// The base this chunk is a delta against, if it is one.
    pub fn base(&self) -> Option<ChunkId> {
        match self.encoding {
            Encoding::Delta { base } => Some(base),
            _ => None,
        }
    }

    /// Decode a delta with `base`, the content of its base chunk (ignored
    /// for a chunk that is not a delta), and check the id.
    pub fn decode_with_base(&self, base: &[u8]) -> Result<Vec<u8>, CodecError> {
        self.decode_with_base_as(&ChunkIds::Plain, base)
    }

    /// [`decode_with_base`](Self::decode_with_base), checking the id under
    /// `ids` (a repository's naming of chunks).
    pub fn decode_with_base_as(&self, ids: &ChunkIds, base: &[u8]) -> Result<Vec<u8>, CodecError> {
        let Encoding::Delta { .. } = self.encoding else {
            return self.decode_as(ids);
        };
        if self.raw_len > MAX_CHUNK_LEN || base.len() > MAX_CHUNK_LEN as usize {
            return Err(CodecError::Mismatch { id: self.id });
        }
        use zstd::zstd_safe::{DCtx, DDict, DParameter};
        let zerr = |code: usize| CodecError::Decompress {
            id: self.id,
            source: std::io::Error::other(zstd::zstd_safe::get_error_name(code)),
        };
        let window = DParameter::WindowLogMax(delta_window_log(base.len(), self.raw_len as usize));
        let mut raw = Vec::with_capacity(self.raw_len as usize);
        if base.starts_with(&ZSTD_DICT_MAGIC) {
            let mut dx = DCtx::try_create().ok_or_else(|| zerr(0))?;
            dx.set_parameter(window).map_err(zerr)?;
            dx.ref_prefix(base).map_err(zerr)?;
            dx.decompress(&mut raw, self.data).map_err(zerr)?;
            return self.check(ids, raw);
        }
        // A raw-content dictionary decodes as the same bytes given as a
        // prefix would.
        DELTA_CONTEXT.with(|c| {
            let mut c = c.borrow_mut();
            if c.as_ref().is_none_or(|d| d.base != base) {
                *c = None;
                let ddict = DDict::try_create(base).ok_or_else(|| zerr(0))?;
                let mut dctx = DCtx::try_create().ok_or_else(|| zerr(0))?;
                dctx.ref_ddict(&ddict).map_err(zerr)?;
                *c = Some(DeltaContext {
                    base: base.to_vec(),
                    dctx,
                    ddict,
                });
            }
            let d = c.as_mut().expect("just set");
            let _ = &d.ddict;
            d.dctx.set_parameter(window).map_err(zerr)?;
            d.dctx.decompress(&mut raw, self.data).map_err(zerr)
        })?;
        self.check(ids, raw)
    }

    fn check(&self, ids: &ChunkIds, raw: Vec<u8>) -> Result<Vec<u8>, CodecError> {
        self.check_content(ids, &raw)?;
        Ok(raw)
    }

    /// `raw` has this chunk's length and hashes to its id under `ids`.
    fn check_content(&self, ids: &ChunkIds, raw: &[u8]) -> Result<(), CodecError> {
        if raw.len() != self.raw_len as usize || ids.id_of(raw) != self.id {
            return Err(CodecError::Mismatch { id: self.id });
        }
        Ok(())
    }

    /// Run `f` with the thread's decompressor; its error names this chunk.
    fn with_decompressor<T>(
        &self,
        f: impl FnOnce(&mut zstd::bulk::Decompressor<'static>) -> std::io::Result<T>,
    ) -> Result<T, CodecError> {
        DECOMPRESSOR
            .with(|d| {
                let mut d = d.borrow_mut();
                if d.is_none() {
                    *d = Some(zstd::bulk::Decompressor::new()?);
                }
                f(d.as_mut().expect("just set"))
            })
            .map_err(|source| CodecError::Decompress {
                id: self.id,
                source,
            })
    }

    /// Check that the stored bytes decode to the id, without keeping the
    /// content: a raw chunk is hashed where it lies, a compressed one is
    /// decompressed into a buffer the thread reuses. A delta needs its
    /// base ([`decode_with_base`](Self::decode_with_base)).
    pub fn verify(&self) -> Result<(), CodecError> {
        self.verify_as(&ChunkIds::Plain)
    }

    /// [`verify`](Self::verify), checking the id under `ids`.
    pub fn verify_as(&self, ids: &ChunkIds) -> Result<(), CodecError> {
        if self.raw_len > MAX_CHUNK_LEN {
            return Err(CodecError::Mismatch { id: self.id });
        }
        match self.encoding {
            Encoding::Delta { base } => Err(CodecError::NeedsBase { id: self.id, base }),
            Encoding::Raw => self.check_content(ids, self.data),
            Encoding::Zstd => SCRATCH.with(|buf| {
                let mut buf = buf.borrow_mut();
                buf.clear();
                buf.reserve(self.raw_len as usize);
                let r = self
                    .with_decompressor(|d| d.decompress_to_buffer(self.data, &mut *buf))
                    .and_then(|_| self.check_content(ids, &buf));
                // Keep a buffer for the usual chunk sizes, not the largest.
                if buf.capacity() > 4 << 20 {
                    *buf = Vec::new();
                }
                r
            }),
        }
    }

    /// Decompress and check the id.
    pub fn decode(&self) -> Result<Vec<u8>, CodecError> {
        self.decode_as(&ChunkIds::Plain)
    }

    /// [`decode`](Self::decode), checking the id under `ids`.
    pub fn decode_as(&self, ids: &ChunkIds) -> Result<Vec<u8>, CodecError> {
        // A damaged length must not make us allocate gigabytes.
        if self.raw_len > MAX_CHUNK_LEN {
            return Err(CodecError::Mismatch { id: self.id });
        }
        let raw = match self.encoding {
            Encoding::Delta { base } => return Err(CodecError::NeedsBase { id: self.id, base }),
            Encoding::Raw => self.data.to_vec(),
            Encoding::Zstd => {
                self.with_decompressor(|d| d.decompress(self.data, self.raw_len as usize))?
            }
        };
        self.check(ids, raw)
    }
}

/// The zstd window of a delta: a power of two holding base and content.
fn delta_window_log(base: usize, data: usize) -> u32 {
    let need = (base + data).max(1 << 10);
    need.next_power_of_two().trailing_zeros().clamp(10, 27)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_keyed_chunk_checks_only_under_its_key() {
        let master = rewind_crypto::MasterKey::generate().unwrap();
        let ids = ChunkIds::Keyed(Arc::new(master.chunk_id_key().duplicate()));
        let data = b"keyed content ".repeat(200);
        let id = ids.id_of(&data);
        assert_ne!(id, ChunkId::of(&data));
        let c = EncodedChunk::encode_with_id(id, &data);
        assert_eq!(c.decode_as(&ids).unwrap(), data);
        c.verify_as(&ids).unwrap();
        // Under the plain scheme (or another key) the id does not match.
        assert!(c.decode().is_err());
        assert!(c.verify().is_err());
        let other = rewind_crypto::MasterKey::generate().unwrap();
        let others = ChunkIds::Keyed(Arc::new(other.chunk_id_key().duplicate()));
        assert!(c.decode_as(&others).is_err());
        assert_eq!(ChunkIds::Plain.id_of(&data), ChunkId::of(&data));
        assert_eq!(format!("{ids:?}"), "ChunkIds::Keyed(..)");
    }

    #[test]
    fn a_thread_that_gave_back_its_contexts_makes_them_again() {
        let data = b"compressible text ".repeat(4000);
        let first = EncodedChunk::encode(&data);
        assert_eq!(first.decode().unwrap(), data);
        assert!(COMPRESSOR.with(|c| c.borrow().is_some()));
        release_thread_caches();
        assert!(COMPRESSOR.with(|c| c.borrow().is_none()));
        assert!(DECOMPRESSOR.with(|c| c.borrow().is_none()));
        assert_eq!(SCRATCH.with(|c| c.borrow().capacity()), 0);
        let again = EncodedChunk::encode(&data);
        assert_eq!(again, first);
        assert_eq!(again.decode().unwrap(), data);
    }

    use rand::RngCore;

    #[test]
    fn a_view_reads_the_wire_form_of_chunks_in_place() {
        let chunks = vec![
            EncodedChunk::encode(&b"text ".repeat(1000)),
            EncodedChunk::encode(b"x"),
        ];
        let wire = postcard::to_allocvec(&chunks).unwrap();
        let views: Vec<ChunkView<'_>> = postcard::from_bytes(&wire).unwrap();
        assert_eq!(views.len(), 2);
        for (v, c) in views.iter().zip(&chunks) {
            assert_eq!(*v, c.view());
            assert_eq!(v.to_chunk(), *c);
            // Borrowed from the wire bytes, not copied out of them.
            assert!(wire.as_ptr_range().contains(&v.data.as_ptr()));
            v.verify().unwrap();
        }
        assert_eq!(views[0].encoding, Encoding::Zstd);
    }

    #[test]
    fn compressible_is_compressed_and_round_trips() {
        let data = b"hello world ".repeat(1000);
        let c = EncodedChunk::encode(&data);
        assert_eq!(c.encoding, Encoding::Zstd);
        assert!(c.data.len() < data.len() / 10);
        assert_eq!(c.decode().unwrap(), data);
        c.verify().unwrap();
    }

    #[test]
    fn random_is_stored_raw() {
        let mut data = vec![0u8; 100_000];
        rand::rng().fill_bytes(&mut data);
        let c = EncodedChunk::encode(&data);
        assert_eq!(c.encoding, Encoding::Raw);
        assert_eq!(c.decode().unwrap(), data);
        c.verify().unwrap();
    }

    #[test]
    fn a_raw_chunk_decoded_by_value_keeps_its_buffer_and_is_checked() {
        let mut data = vec![0u8; 100_000];
        rand::rng().fill_bytes(&mut data);
        let c = EncodedChunk::encode(&data);
        assert_eq!(c.encoding, Encoding::Raw);
        let owned = c.clone();
        let at = owned.data.as_ptr();
        let raw = owned.into_decoded_as(&ChunkIds::Plain).unwrap();
        assert_eq!(raw, data);
        assert_eq!(raw.as_ptr(), at, "the stored bytes, not a copy");
        let mut bad = c;
        bad.data[7] ^= 1;
        assert!(bad.into_decoded_as(&ChunkIds::Plain).is_err());
        // Compressed: as decode_as.
        let z = EncodedChunk::encode(&b"zz ".repeat(1000));
        assert_eq!(
            z.clone().into_decoded_as(&ChunkIds::Plain).unwrap(),
            z.decode().unwrap()
        );
    }

    #[test]
    fn damage_is_detected() {
        let data = b"some content here".repeat(50);
        let mut c = EncodedChunk::encode(&data);
        let n = c.data.len();
        c.data[n / 2] ^= 0x40;
        assert!(c.decode().is_err());
        assert!(c.verify().is_err());
        let mut raw = EncodedChunk::encode(b"x");
        raw.data[0] = b'y';
        assert!(matches!(raw.decode(), Err(CodecError::Mismatch { .. })));
        assert!(matches!(raw.verify(), Err(CodecError::Mismatch { .. })));
        // A length that does not match what the frame decodes to.
        let mut short = EncodedChunk::encode(&data);
        short.raw_len -= 1;
        assert!(short.verify().is_err());
        short.raw_len += 2;
        assert!(matches!(short.verify(), Err(CodecError::Mismatch { .. })));
    }

    /// Dump-like text: numbered rows of words and numbers.
    fn rows(n: usize, seed: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            let v = (i as u64).wrapping_mul(2654435761).wrapping_add(seed) % 100_000;
            out.extend_from_slice(
                format!("{i}\tcustomer {v}\torder {}\t{v}.25\n", i * 7).as_bytes(),
            );
        }
        out
    }

    #[test]
    fn a_delta_against_a_similar_chunk_is_small_and_round_trips() {
        let base = rows(20_000, 1);
        // Every 100th row changed, as when 1 % of a table is updated.
        let mut data = Vec::new();
        for (i, line) in base.split_inclusive(|&b| b == b'\n').enumerate() {
            if i % 100 == 0 {
                data.extend_from_slice(format!("{i}\tchanged row\n").as_bytes());
            } else {
                data.extend_from_slice(line);
            }
        }
        let (bid, id) = (ChunkId::of(&base), ChunkId::of(&data));
        let whole = EncodedChunk::encode_with_id(id, &data);
        let d = EncodedChunk::encode_delta(id, &data, bid, &base, STREAM_ZSTD_LEVEL).unwrap();
        assert_eq!(d.encoding, Encoding::Delta { base: bid });
        assert_eq!(d.base(), Some(bid));
        assert!(
            d.data.len() * 20 < whole.data.len(),
            "delta {} bytes, whole {} bytes",
            d.data.len(),
            whole.data.len()
        );
        assert_eq!(d.decode_with_base(&base).unwrap(), data);
        // Without its base, or with another chunk's content, it does not decode.
        assert!(matches!(d.decode(), Err(CodecError::NeedsBase { .. })));
        assert!(d.decode_with_base(&rows(20_000, 2)).is_err());
        // A chunk that is not a delta ignores the base.
        assert_eq!(whole.decode_with_base(&base).unwrap(), data);
    }

    #[test]
    fn an_unrelated_base_gives_no_delta() {
        let mut data = vec![0u8; 200_000];
        rand::rng().fill_bytes(&mut data);
        let base = rows(5_000, 3);
        let d = EncodedChunk::encode_delta(ChunkId::of(&data), &data, ChunkId::of(&base), &base, 1);
        assert!(d.is_none());
    }

    #[test]
    fn chunks_encoded_before_deltas_existed_still_decode() {
        // The layout written before `Encoding` replaced `compressed: bool`.
        #[derive(Serialize)]
        struct Old {
            id: ChunkId,
            raw_len: u32,
            compressed: bool,
            #[serde(with = "serde_bytes")]
            data: Vec<u8>,
        }
        for data in [b"hello world ".repeat(100), b"x".to_vec()] {
            let new = EncodedChunk::encode(&data);
            let old = Old {
                id: new.id,
                raw_len: new.raw_len,
                compressed: new.encoding == Encoding::Zstd,
                data: new.data.clone(),
            };
            let bytes = postcard::to_stdvec(&old).unwrap();
            assert_eq!(bytes, postcard::to_stdvec(&new).unwrap());
            let back: EncodedChunk = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back.decode().unwrap(), data);
        }
    }
}
