//! Reading a sparse file's data extents as one stream (holes skipped), the
//! form in which its content is chunked and stored.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use crate::Extent;

/// Reads the data extents of a file one after the other through `pread`,
/// as one stream; the holes between them are neither read nor returned.
/// An extent the file no longer fills ends the stream early (the caller's
/// before/after check sees the change).
pub struct ExtentReader<'f> {
    file: &'f File,
    extents: &'f [Extent],
    /// Index of the current extent and offset within it.
    idx: usize,
    within: u64,
}

impl<'f> ExtentReader<'f> {
    /// A reader of `extents` of `file`, from the first.
    pub fn new(file: &'f File, extents: &'f [Extent]) -> Self {
        ExtentReader {
            file,
            extents,
            idx: 0,
            within: 0,
        }
    }
}

impl Read for ExtentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(e) = self.extents.get(self.idx) {
            if self.within >= e.len {
                self.idx += 1;
                self.within = 0;
                continue;
            }
            let want = ((e.len - self.within) as usize).min(buf.len());
            let n = self
                .file
                .read_at(&mut buf[..want], e.offset + self.within)?;
            if n == 0 {
                self.idx = self.extents.len();
                return Ok(0);
            }
            self.within += n as u64;
            return Ok(n);
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_the_extents() {
        let p = std::env::temp_dir().join(format!("rewind-extents-{}", rand::random::<u64>()));
        let data: Vec<u8> = (0..100u8).collect();
        std::fs::write(&p, &data).unwrap();
        let f = File::open(&p).unwrap();
        let extents = [
            Extent { offset: 10, len: 5 },
            Extent { offset: 50, len: 0 },
            Extent {
                offset: 90,
                len: 10,
            },
        ];
        let mut out = Vec::new();
        ExtentReader::new(&f, &extents)
            .read_to_end(&mut out)
            .unwrap();
        let mut want = data[10..15].to_vec();
        want.extend_from_slice(&data[90..100]);
        std::fs::remove_file(&p).unwrap();
        assert_eq!(out, want);
    }
}
