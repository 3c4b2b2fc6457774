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

    /// Cut everything `reader` yields into chunks and hand each to `f`, in
    /// order. `buf` is reused between calls (keep one per thread): nothing
    /// is allocated per file or per chunk, which matters when a first pass
    /// meets tens of thousands of small files. Memory stays at
    /// `buf`'s size (four times `max`).
    pub fn for_each<R: Read>(
        &self,
        mut reader: R,
        buf: &mut Vec<u8>,
        mut f: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let p = self.params;
        let cap = 4 * p.max as usize;
        if buf.len() < cap {
            buf.resize(cap, 0);
        }
        let mut filled = 0;
        let mut eof = false;
        loop {
            while !eof && filled < cap {
                match reader.read(&mut buf[filled..cap]) {
                    Ok(0) => eof = true,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if filled == 0 {
                return Ok(());
            }
            // Every chunk FastCDC returns before the end of the buffer ends
            // at a real cut point; the last one is only final at EOF (else
            // it was cut by the buffer's end and is carried over).
            let mut consumed = 0;
            for c in fastcdc::v2020::FastCDC::new(&buf[..filled], p.min, p.avg, p.max) {
                if !eof && c.offset + c.length == filled {
                    break;
                }
                f(&buf[c.offset..c.offset + c.length])?;
                consumed = c.offset + c.length;
            }
            if eof && consumed == filled {
                return Ok(());
            }
            buf.copy_within(consumed..filled, 0);
            filled -= consumed;
        }
    }

    /// Cut everything `reader` yields into chunks, in order (allocating
    /// each chunk; [`Chunker::for_each`] is the fast path).
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

    /// A reader that hands out at most `n` bytes per call, to exercise
    /// buffer refills at odd places.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(self.1).min(out.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn for_each_cuts_exactly_like_the_stream_chunker() {
        let data = random(11 << 20, 3);
        let c = Chunker::default();
        let expected: Vec<Vec<u8>> = c.chunks(&data[..]).collect::<io::Result<_>>().unwrap();
        for step in [usize::MAX, 100_000, 4097] {
            let mut got = Vec::new();
            let mut buf = Vec::new();
            c.for_each(Trickle(&data, step), &mut buf, |ch| {
                got.push(ch.to_vec());
                Ok(())
            })
            .unwrap();
            assert_eq!(got, expected, "read size {step}");
        }
        let mut n = 0;
        c.for_each(&b""[..], &mut Vec::new(), |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn empty_input_has_no_chunks() {
        assert_eq!(Chunker::default().chunks(&b""[..]).count(), 0);
    }
}
