//! Reading a stored file's bytes: chunks fetched lazily, as reads reach
//! them, through a cache bounded in bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rewind_core::{ChunkId, ChunkRef, Extent, RepoError, Repository, Version};

/// Chunk bytes kept in memory at most (default): a few seconds of reading
/// at disk speed, and several times a file's working set for programs that
/// read a large file in place (an image viewer, a database browser).
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// On a read that misses, also fetch the chunks that follow, up to this
/// many bytes: a sequential read (a copy) then costs one round trip per
/// 2 MiB instead of one per kernel request (128 KiB), which is what makes
/// reads through a server usable (measured: docs/benchmarks.md, "mount").
pub const READ_AHEAD: u64 = 2 << 20;

/// Decoded chunks, at most `budget` bytes: two generations, the older
/// dropped whole when the newer fills half the budget, so a lookup and an
/// insertion are O(1) and what is read again soon stays.
pub(crate) struct ChunkCache {
    inner: Mutex<Generations>,
    budget: usize,
}

#[derive(Default)]
struct Generations {
    young: HashMap<ChunkId, Arc<Vec<u8>>>,
    young_bytes: usize,
    old: HashMap<ChunkId, Arc<Vec<u8>>>,
}

impl ChunkCache {
    pub(crate) fn new(budget: usize) -> ChunkCache {
        ChunkCache {
            inner: Mutex::new(Generations::default()),
            budget: budget.max(1 << 20),
        }
    }

    fn get(&self, id: &ChunkId) -> Option<Arc<Vec<u8>>> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = g.young.get(id) {
            return Some(c.clone());
        }
        let c = g.old.remove(id)?;
        g.put(*id, c.clone(), self.budget);
        Some(c)
    }

    fn put(&self, id: ChunkId, data: Arc<Vec<u8>>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.put(id, data, self.budget);
    }

    /// Bytes held now.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.young_bytes + g.old.values().map(|c| c.len()).sum::<usize>()
    }
}

impl Generations {
    fn put(&mut self, id: ChunkId, data: Arc<Vec<u8>>, budget: usize) {
        if self.young_bytes + data.len() > budget / 2 {
            self.old = std::mem::take(&mut self.young);
            self.young_bytes = 0;
        }
        self.young_bytes += data.len();
        if let Some(prev) = self.young.insert(id, data) {
            self.young_bytes -= prev.len();
        }
    }
}

/// An open regular file: where each byte of it is.
pub(crate) struct OpenFile {
    chunks: Vec<ChunkRef>,
    /// Offset in the stored data of each chunk.
    starts: Vec<u64>,
    /// Data extents of a sparse file (holes read as zeros).
    extents: Option<Vec<Extent>>,
    size: u64,
}

impl OpenFile {
    pub(crate) fn new(v: &Version) -> OpenFile {
        let chunks = v.chunks().to_vec();
        let mut starts = Vec::with_capacity(chunks.len());
        let mut at = 0u64;
        for c in &chunks {
            starts.push(at);
            at += c.len as u64;
        }
        OpenFile {
            chunks,
            starts,
            extents: v.meta().and_then(|m| m.sparse.clone()),
            size: v.size(),
        }
    }

    /// Up to `len` bytes at `offset` (fewer at the end of the file).
    pub(crate) fn read(
        &self,
        offset: u64,
        len: u32,
        repo: &dyn Repository,
        cache: &ChunkCache,
    ) -> Result<Vec<u8>, RepoError> {
        let end = self.size.min(offset.saturating_add(len as u64));
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        // (position in buf, offset in the stored data, length)
        let mut pieces: Vec<(usize, u64, u64)> = Vec::new();
        match &self.extents {
            None => pieces.push((0, offset, end - offset)),
            Some(extents) => {
                let mut data_at = 0u64;
                for e in extents {
                    let (s, t) = (e.offset.max(offset), (e.offset + e.len).min(end));
                    if s < t {
                        pieces.push(((s - offset) as usize, data_at + (s - e.offset), t - s));
                    }
                    data_at += e.len;
                }
            }
        }
        for (pos, data_off, n) in pieces {
            self.copy(&mut buf[pos..pos + n as usize], data_off, repo, cache)?;
        }
        Ok(buf)
    }

    /// Fill `out` from the stored data at `data_off`.
    fn copy(
        &self,
        out: &mut [u8],
        data_off: u64,
        repo: &dyn Repository,
        cache: &ChunkCache,
    ) -> Result<(), RepoError> {
        let first = self
            .starts
            .partition_point(|&s| s <= data_off)
            .saturating_sub(1);
        let last_byte = data_off + out.len() as u64 - 1;
        let last = self
            .starts
            .partition_point(|&s| s <= last_byte)
            .saturating_sub(1);
        let mut have: HashMap<ChunkId, Arc<Vec<u8>>> = HashMap::new();
        let mut missing: Vec<ChunkId> = Vec::new();
        for c in &self.chunks[first..=last] {
            match cache.get(&c.id) {
                Some(d) => {
                    have.insert(c.id, d);
                }
                None if !missing.contains(&c.id) => missing.push(c.id),
                None => {}
            }
        }
        if !missing.is_empty() {
            let mut ahead = 0u64;
            for c in &self.chunks[last + 1..] {
                if ahead >= READ_AHEAD {
                    break;
                }
                if !missing.contains(&c.id) && cache.get(&c.id).is_none() {
                    missing.push(c.id);
                    ahead += c.len as u64;
                }
            }
            for (id, data) in missing.iter().zip(repo.read_chunks(&missing)?) {
                let data = Arc::new(data);
                cache.put(*id, data.clone());
                have.insert(*id, data);
            }
        }
        let mut written = 0usize;
        for k in first..=last {
            let c = &self.chunks[k];
            let data = &have[&c.id];
            if data.len() != c.len as usize {
                return Err(RepoError::Corrupt {
                    path: "chunk".into(),
                    reason: format!(
                        "chunk {} holds {} bytes, its file says {}",
                        c.id,
                        data.len(),
                        c.len
                    ),
                });
            }
            let at = data_off + written as u64;
            let from = (at - self.starts[k]) as usize;
            let n = (data.len() - from).min(out.len() - written);
            out[written..written + n].copy_from_slice(&data[from..from + n]);
            written += n;
            if written == out.len() {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind_core::{DEFAULT_CHUNKER, EncodedChunk, Entry, FileKind, FileMeta, Timestamp};
    use rewind_repo::LocalRepo;

    fn stored(
        repo: &LocalRepo,
        parts: &[&[u8]],
        sparse: Option<Vec<Extent>>,
        size: u64,
    ) -> Version {
        let chunks: Vec<EncodedChunk> = parts.iter().map(|p| EncodedChunk::encode(p)).collect();
        let refs = chunks
            .iter()
            .map(|c| ChunkRef {
                id: c.id,
                len: c.raw_len,
            })
            .collect();
        repo.put_chunks(chunks).unwrap();
        Version {
            client: "c".into(),
            seq: 1,
            observed_at: Timestamp(1),
            path: b"/f".to_vec(),
            entry: Entry::Present {
                meta: FileMeta {
                    size,
                    sparse,
                    ..FileMeta::new(FileKind::File, 0o644)
                },
                chunks: refs,
                xattrs: vec![],
            },
        }
    }

    #[test]
    fn reads_cross_chunks_and_holes_read_as_zeros() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
        let cache = ChunkCache::new(1 << 20);
        let v = stored(&repo, &[b"hello ", b"chunked ", b"world"], None, 19);
        let f = OpenFile::new(&v);
        assert_eq!(
            f.read(0, 100, &repo, &cache).unwrap(),
            b"hello chunked world"
        );
        assert_eq!(f.read(4, 6, &repo, &cache).unwrap(), b"o chun");
        assert_eq!(f.read(18, 10, &repo, &cache).unwrap(), b"d");
        assert!(f.read(19, 10, &repo, &cache).unwrap().is_empty());
        // Sparse: 4 bytes of data at 2, 3 at 10, size 16.
        let extents = vec![Extent { offset: 2, len: 4 }, Extent { offset: 10, len: 3 }];
        let v = stored(&repo, &[b"ab", b"cdefg"], Some(extents), 16);
        let f = OpenFile::new(&v);
        assert_eq!(
            f.read(0, 16, &repo, &cache).unwrap(),
            b"\0\0abcd\0\0\0\0efg\0\0\0"
        );
        assert_eq!(f.read(5, 7, &repo, &cache).unwrap(), b"d\0\0\0\0ef");
    }

    #[test]
    fn the_cache_stays_within_its_budget() {
        let cache = ChunkCache::new(1 << 20);
        for i in 0..100u32 {
            let data = vec![i as u8; 100_000];
            cache.put(ChunkId::of(&data), Arc::new(data));
            assert!(cache.bytes() <= 1 << 20, "{} after {i}", cache.bytes());
        }
        let last = vec![99u8; 100_000];
        assert!(cache.get(&ChunkId::of(&last)).is_some(), "the newest stays");
    }
}
