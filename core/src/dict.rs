//! A dictionary for small chunks: a file of a few kilobytes compressed on
//! its own finds few repeats inside itself, but shares most of its words
//! with the user's other files. Samples of the first small, compressible
//! chunks captured are joined into one chunk, stored whole as a delta base
//! ([`Repository::store_base`]); later small chunks are compressed with it
//! as a raw-content dictionary and stored as deltas against it
//! ([`Encoding::Delta`](crate::Encoding::Delta)), so reading one costs the
//! dictionary chunk once (repositories cache bases). Measured on the
//! benchmark tree's text: about 10 % less stored for small files
//! (docs/decisions.md, "Small-file dictionary").

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};

use zstd::zstd_safe::{CCtx, CDict, CParameter};

use crate::codec::ZSTD_DICT_MAGIC;
use crate::{Bases, ChunkId, EncodedChunk, Encoding, ZSTD_LEVEL};

/// Chunks up to this size are compressed with the dictionary (larger ones
/// find enough repeats inside themselves).
pub const DICT_CHUNK_MAX: usize = 128 << 10;

/// Bytes of samples in a dictionary: zstd's own dictionaries are ~110 KB.
const DICT_LEN: usize = 112 << 10;

/// Bytes taken from one sample (so a dictionary draws on at least 14
/// files).
const SAMPLE_MAX: usize = 8 << 10;

thread_local! {
    /// One compression context per thread, bound to the dictionary it was
    /// made for.
    static CONTEXT: RefCell<Option<(ChunkId, CCtx<'static>)>> = const { RefCell::new(None) };
}

/// Give back the memory of this thread's zstd contexts and buffers: the
/// small-file dictionary's context here and the codec's (for a thread
/// about to sit idle, such as a capture worker with nothing to do). The
/// next use makes them again.
pub fn release_thread_caches() {
    let _ = CONTEXT.with(|c| c.try_borrow_mut().map(|mut c| c.take()));
    crate::codec::release_thread_caches();
}

/// A dictionary ready for compression.
struct Ready {
    id: ChunkId,
    cdict: CDict<'static>,
}

enum Collect {
    Sampling(Vec<u8>),
    Done,
}

/// Encodes the new chunks of files: as deltas against the previous
/// version's chunks when that pays, small ones with a dictionary that it
/// makes from samples once it has enough. Shared by the capture threads of
/// a run.
pub struct FileEncoder {
    repo: Arc<dyn Bases>,
    collect: Mutex<Collect>,
    /// Set once: the dictionary, or `None` when the repository takes no
    /// deltas (a server) or storing it failed.
    ready: OnceLock<Option<&'static Ready>>,
}

impl FileEncoder {
    /// A collector storing its dictionary into `repo`; `known`, the one
    /// an earlier run made, is used again while `repo` holds it whole.
    pub fn new(repo: Arc<dyn Bases>, known: Option<ChunkId>) -> FileEncoder {
        let d = FileEncoder {
            repo,
            collect: Mutex::new(Collect::Sampling(Vec::with_capacity(DICT_LEN))),
            ready: OnceLock::new(),
        };
        let again = known.and_then(|k| {
            (d.repo.delta_base(&k).ok()? == Some(k)).then_some(())?;
            Ready::prepare(k, &d.repo.read_base(&k).ok()?.raw)
        });
        if let Some(r) = again {
            *d.collect.lock().unwrap_or_else(|p| p.into_inner()) = Collect::Done;
            let _ = d.ready.set(Some(r));
        }
        d
    }

    /// Encode chunk `id` holding `data` of a file: as a delta against
    /// `hint`, the chunk at the same place in the file's previous version
    /// ([`crate::DeltaWalk`]), when that pays; else small ones with the
    /// dictionary once there is one, everything else as
    /// [`EncodedChunk::encode_with_id`].
    pub fn encode(&self, id: ChunkId, data: &[u8], hint: Option<ChunkId>) -> EncodedChunk {
        match hint {
            Some(h) => crate::encode_with_hint(&*self.repo, id, data, h, ZSTD_LEVEL, || {
                self.encode_alone(id, data)
            }),
            None => self.encode_alone(id, data),
        }
    }

    fn encode_alone(&self, id: ChunkId, data: &[u8]) -> EncodedChunk {
        if data.len() > DICT_CHUNK_MAX {
            return EncodedChunk::encode_with_id(id, data);
        }
        match self.ready.get() {
            Some(Some(d)) => d.encode(id, data),
            Some(None) => EncodedChunk::encode_with_id(id, data),
            None => {
                let enc = EncodedChunk::encode_with_id(id, data);
                // Text-like: compresses to under two thirds.
                if enc.encoding == Encoding::Zstd && enc.data.len() * 3 < data.len() * 2 {
                    self.sample(data);
                }
                enc
            }
        }
    }

    /// The dictionary's chunk id, once made.
    pub fn id(&self) -> Option<ChunkId> {
        self.ready.get().copied().flatten().map(|d| d.id)
    }

    fn sample(&self, data: &[u8]) {
        let mut c = self.collect.lock().unwrap_or_else(|p| p.into_inner());
        let Collect::Sampling(buf) = &mut *c else {
            return;
        };
        let take = data.len().min(SAMPLE_MAX).min(DICT_LEN - buf.len());
        buf.extend_from_slice(&data[..take]);
        if buf.len() < DICT_LEN {
            return;
        }
        let mut content = std::mem::take(buf);
        *c = Collect::Done;
        if content.starts_with(&ZSTD_DICT_MAGIC) {
            content.drain(..4);
        }
        let made = self.make(&content);
        let _ = self.ready.set(made);
    }

    /// Store `content` as a whole chunk and prepare it for compression.
    fn make(&self, content: &[u8]) -> Option<&'static Ready> {
        let id = self.repo.chunk_ids().id_of(content);
        let chunk = EncodedChunk::encode_with_id(id, content);
        if let Err(e) = self.repo.store_base(chunk) {
            tracing::debug!("no small-file dictionary: {e}");
            return None;
        }
        tracing::debug!("small-file dictionary {id} ({} bytes)", content.len());
        Ready::prepare(id, content)
    }
}

impl Ready {
    /// Dictionary `id` holding `content`, prepared for compression. One
    /// per run of the agent, kept for the rest of the process: contexts of
    /// every capture thread refer to it.
    fn prepare(id: ChunkId, content: &[u8]) -> Option<&'static Ready> {
        let cdict = CDict::try_create(content, ZSTD_LEVEL)?;
        Some(Box::leak(Box::new(Ready { id, cdict })))
    }

    fn encode(&'static self, id: ChunkId, data: &[u8]) -> EncodedChunk {
        let out = CONTEXT.with(|c| {
            let mut c = c.borrow_mut();
            if c.as_ref().is_none_or(|(d, _)| *d != self.id) {
                let mut cx = CCtx::try_create()?;
                cx.set_parameter(CParameter::CompressionLevel(ZSTD_LEVEL))
                    .ok()?;
                cx.ref_cdict(&self.cdict).ok()?;
                *c = Some((self.id, cx));
            }
            let (_, cx) = c.as_mut()?;
            let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
            cx.compress2(&mut out, data).ok()?;
            // Worst-case room returned: the chunk waits in the pipeline
            // (see `EncodedChunk::encode_with_id_at`).
            out.shrink_to_fit();
            Some(out)
        });
        match out {
            Some(out) if out.len() + data.len() / 32 < data.len() => EncodedChunk {
                id,
                raw_len: data.len() as u32,
                encoding: Encoding::Delta { base: self.id },
                data: out,
            },
            _ => EncodedChunk::encode_with_id(id, data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small documents sharing a vocabulary, in an order of their own (a
    /// document repeats few of its own phrases, as real ones do).
    fn doc(seed: usize) -> Vec<u8> {
        let words = [
            "backup", "restore", "journal", "version", "chunk", "server", "client", "folder",
            "protect", "moment", "delta", "window", "pack", "index", "verify", "repair", "capture",
            "quiet", "rename", "symlink", "owner", "group", "sparse", "extent", "schedule", "dump",
            "stream", "upload", "durable", "commit", "cursor", "spool",
        ];
        let mut x = (seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut s = String::new();
        for i in 0..600 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s.push_str(words[(x >> 59) as usize]);
            s.push(if i % 12 == 11 { '\n' } else { ' ' });
        }
        s.into_bytes()
    }

    #[test]
    fn deltas_against_the_dictionary_decode_with_its_content() {
        let content: Vec<u8> = (0..40).flat_map(doc).take(DICT_LEN).collect();
        let d = Ready::prepare(ChunkId::of(&content), &content).unwrap();
        let data = doc(1000);
        let id = ChunkId::of(&data);
        let enc = d.encode(id, &data);
        let alone = EncodedChunk::encode_with_id(id, &data);
        assert_eq!(enc.base(), Some(d.id));
        assert!(
            enc.data.len() < alone.data.len(),
            "{} vs {}",
            enc.data.len(),
            alone.data.len()
        );
        // Read back as any delta is: the base's content as a prefix.
        assert_eq!(enc.decode_with_base(&content).unwrap(), data);
    }
}
