//! Data extents of sparse files, found with `SEEK_DATA`/`SEEK_HOLE`: the
//! cost is two `lseek` calls per extent, whatever the file's size.

use std::fs::File;
use std::io;

use rustix::fs::{FileType, SeekFrom, fstat, seek};
use rustix::io::Errno;

use crate::meta::Extent;

/// The data extents of `file`, in offset order, when it is a regular file
/// with holes; `None` for a dense file, a non-regular file, or a filesystem
/// that cannot report holes.
///
/// A file counts as possibly sparse when fewer bytes are allocated than its
/// size (`st_blocks * 512 < st_size`); only then is it scanned. A scan that
/// finds one extent covering the whole file also gives `None`. An extent
/// may start or end anywhere the filesystem says; the last one ends at the
/// file's size at most. A fully unallocated file gives `Some(vec![])`.
///
/// The file offset of `file` is put back where it was, so a reader can call
/// this on the descriptor it is about to read from.
pub fn data_extents(file: &File) -> io::Result<Option<Vec<Extent>>> {
    let st = fstat(file)?;
    if FileType::from_raw_mode(st.st_mode as _) != FileType::RegularFile {
        return Ok(None);
    }
    let size = st.st_size as u64;
    let allocated = (st.st_blocks as u64).saturating_mul(512);
    if allocated >= size {
        return Ok(None);
    }
    let saved = seek(file, SeekFrom::Current(0))?;
    let scanned = scan(file, size);
    seek(file, SeekFrom::Start(saved))?;
    scanned
}

fn scan(file: &File, size: u64) -> io::Result<Option<Vec<Extent>>> {
    let mut extents = Vec::new();
    let mut pos = 0;
    while pos < size {
        let start = match seek(file, SeekFrom::Data(pos)) {
            Ok(s) => s,
            // No data at or after `pos` (the rest is a hole, or the file
            // shrank meanwhile).
            Err(Errno::NXIO) => break,
            // The filesystem cannot say: treat the file as dense.
            Err(Errno::INVAL | Errno::NOTSUP) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if start >= size {
            break;
        }
        let end = match seek(file, SeekFrom::Hole(start)) {
            Ok(e) => e.min(size),
            Err(Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        if end <= start {
            break;
        }
        extents.push(Extent {
            offset: start,
            len: end - start,
        });
        pos = end;
    }
    if let [only] = extents.as_slice()
        && only.offset == 0
        && only.len == size
    {
        return Ok(None);
    }
    Ok(Some(extents))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};
    use std::time::{Duration, Instant};

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn write_at(f: &mut File, off: u64, len: usize) {
        f.seek(io::SeekFrom::Start(off)).unwrap();
        f.write_all(&vec![0xab; len]).unwrap();
    }

    #[test]
    fn one_gib_hole_between_two_small_regions() {
        let t = tempfile::tempdir().unwrap();
        let mut f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(t.path().join("sparse"))
            .unwrap();
        write_at(&mut f, 0, 4096);
        write_at(&mut f, GIB + 4096, 8192);
        f.set_len(2 * GIB).unwrap();
        f.sync_all().unwrap();
        f.seek(io::SeekFrom::Start(100)).unwrap();

        let t0 = Instant::now();
        let ext = data_extents(&f).unwrap();
        let took = t0.elapsed();
        assert_eq!(
            ext,
            Some(vec![
                Extent {
                    offset: 0,
                    len: 4096
                },
                Extent {
                    offset: GIB + 4096,
                    len: 8192
                },
            ])
        );
        assert!(took < Duration::from_millis(500), "took {took:?}");
        // The offset is where the caller left it.
        let mut b = [0u8; 1];
        f.read_exact(&mut b).unwrap();
        assert_eq!(f.stream_position().unwrap(), 101);
    }

    #[test]
    fn hundred_gib_file_with_ten_mib_of_data_in_milliseconds() {
        let t = tempfile::tempdir().unwrap();
        let mut f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(t.path().join("big"))
            .unwrap();
        f.set_len(100 * GIB).unwrap();
        for i in 0..10 {
            write_at(&mut f, i * 10 * GIB + 3 * MIB, MIB as usize);
        }
        f.sync_all().unwrap();
        let t0 = Instant::now();
        let ext = data_extents(&f).unwrap().unwrap();
        let took = t0.elapsed();
        assert_eq!(ext.len(), 10, "{ext:?}");
        assert_eq!(ext.iter().map(|e| e.len).sum::<u64>(), 10 * MIB);
        assert_eq!(ext[9].offset, 90 * GIB + 3 * MIB);
        assert!(took < Duration::from_millis(200), "took {took:?}");
    }

    #[test]
    fn dense_file_and_all_hole_file() {
        let t = tempfile::tempdir().unwrap();
        let dense = t.path().join("dense");
        std::fs::write(&dense, vec![1u8; 100_000]).unwrap();
        assert_eq!(data_extents(&File::open(&dense).unwrap()).unwrap(), None);
        let hole = File::create(t.path().join("hole")).unwrap();
        hole.set_len(10 * MIB).unwrap();
        assert_eq!(data_extents(&hole).unwrap(), Some(vec![]));
        let dir = File::open(t.path()).unwrap();
        assert_eq!(data_extents(&dir).unwrap(), None);
    }
}
