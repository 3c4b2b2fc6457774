//! Index files: `DIR/index/<pack name>.idx`, a cache of one pack's table of
//! contents so that opening a repository reads no chunk data.
//!
//! ```text
//! frame: postcard(IdxHeader { format, pack, pack_len, sealed_at, damage,
//!                             chunks: [(id, offset, frame_len, raw_len, compressed)],
//!                             version_records: [(offset, frame_len, count)] })
//! ```
//!
//! The versions themselves are not copied: they stay in the pack's version
//! records (zstd-compressed once), which reading an index loads from the
//! pack by the locations listed here. Format 1 index files, which carried
//! a second compressed copy of the versions, are still read.

use std::io::{self, BufReader};
use std::path::Path;

use rewind_core::frame::{self, FrameError};
use rewind_core::{RepoError, Timestamp, Version};
use rewind_crypto::RecordKind;
use serde::{Deserialize, Serialize};

use crate::crypt::Crypt;
use crate::durable::{IDX_STEPS, corrupt, io_err};
use crate::idx_cache::IndexCache;
use crate::pack_index::{IdxChunk, IdxVersions, PackIndex};
use crate::pack_name::PackName;
use crate::record::{PackRecord, read_record_at};
use crate::store::write_durably;

/// The format number written into index headers.
const IDX_FORMAT: u32 = 2;

#[derive(Serialize, Deserialize)]
struct IdxHeader {
    format: u32,
    pack: PackName,
    pack_len: u64,
    sealed_at: Option<Timestamp>,
    damage: Option<String>,
    chunks: Vec<IdxChunk>,
    version_records: Vec<IdxVersions>,
}

/// The header of a format 1 index, followed by `version_frames` frames of
/// compressed versions.
#[derive(Deserialize)]
struct IdxHeaderV1 {
    format: u32,
    pack: PackName,
    pack_len: u64,
    sealed_at: Option<Timestamp>,
    damage: Option<String>,
    chunks: Vec<IdxChunk>,
    version_frames: u32,
    version_count: u64,
}

/// Encode an index file.
pub(crate) fn encode(c: &Crypt, idx: &PackIndex) -> Result<Vec<u8>, String> {
    let header = IdxHeader {
        format: IDX_FORMAT,
        pack: idx.pack,
        pack_len: idx.pack_len,
        sealed_at: idx.sealed_at,
        damage: idx.damage.clone(),
        chunks: idx.chunks.clone(),
        version_records: idx.version_records.clone(),
    };
    let h = postcard::to_stdvec(&header).map_err(|e| e.to_string())?;
    let h = c.seal_file(RecordKind::Index, &idx.pack.to_hex(), h)?;
    if h.len() > frame::MAX_FRAME {
        return Err("index header over the frame limit".into());
    }
    Ok(frame::encode(&h))
}

/// Write the index of a pack durably into `DIR/index/`.
pub(crate) fn write(c: &Crypt, dir: &Path, idx: &PackIndex) -> Result<(), RepoError> {
    let dest = idx.pack.idx_path(dir);
    let bytes = encode(c, idx).map_err(|r| corrupt(&dest, r))?;
    write_durably(&dir.join("tmp"), &dest, &bytes, &IDX_STEPS)
}

/// Read the index file of pack `name` in repository `dir`, with the
/// versions it locates in the pack. `Ok(None)` when the index file does not
/// exist (any more): a concurrent rebuild or prune may remove index files
/// at any moment.
pub(crate) fn read(c: &Crypt, dir: &Path, name: PackName) -> Result<Option<PackIndex>, RepoError> {
    let Some(mut idx) = read_header(c, dir, name)? else {
        return Ok(None);
    };
    if idx.versions_pending() {
        idx.versions = load_versions(c, dir, idx.pack, idx.pack_len, &idx.version_records, None)?;
    }
    Ok(Some(idx))
}

/// Read the index file of pack `name` without the versions it locates in
/// the pack (what opening a repository reads for every pack before it
/// loads their versions one pack at a time): `versions` is empty while
/// `version_records` lists them ([`PackIndex::versions_pending`]). A
/// format 1 index, which holds its versions, comes with them. `Ok(None)`
/// as for [`read`].
pub(crate) fn read_header(
    c: &Crypt,
    dir: &Path,
    name: PackName,
) -> Result<Option<PackIndex>, RepoError> {
    let path = &name.idx_path(dir);
    let file = match crate::store::open_read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    header_from(c, name, path, file).map(Some)
}

/// [`read_header`] of the index file `path` whose content `file` reads
/// (from the store, or from the local index cache).
pub(crate) fn header_from(
    c: &Crypt,
    name: PackName,
    path: &Path,
    file: Box<dyn std::io::Read + Send>,
) -> Result<PackIndex, RepoError> {
    let mut r = BufReader::new(file);
    let mut offset = 0u64;
    let h =
        next_frame(&mut r, path, &mut offset)?.ok_or_else(|| corrupt(path, "empty index file"))?;
    let h = c
        .open_file(RecordKind::Index, &name.to_hex(), &h)
        .map_err(|e| corrupt(path, format!("index header: {e}")))?;
    let format: u32 = postcard::take_from_bytes(&h)
        .map(|(f, _)| f)
        .map_err(|e| corrupt(path, format!("index header: {e}")))?;
    let idx = match format {
        1 => read_v1(&h, &mut r, path, &mut offset)?,
        IDX_FORMAT => {
            let header: IdxHeader = postcard::from_bytes(&h)
                .map_err(|e| corrupt(path, format!("index header: {e}")))?;
            PackIndex {
                pack: header.pack,
                pack_len: header.pack_len,
                sealed_at: header.sealed_at,
                damage: header.damage,
                chunks: header.chunks,
                version_records: header.version_records,
                versions: Vec::new(),
            }
        }
        n => return Err(corrupt(path, format!("unknown index format {n}"))),
    };
    if next_frame(&mut r, path, &mut offset)?.is_some() {
        return Err(corrupt(path, "unexpected data after the index"));
    }
    Ok(idx)
}

/// The versions of a pack of `pack_len` bytes, from the records an index
/// lists (read through `cache` when there is one: `crate::pack_cache`).
pub(crate) fn load_versions(
    c: &Crypt,
    dir: &Path,
    name: PackName,
    pack_len: u64,
    records: &[IdxVersions],
    cache: Option<&IndexCache>,
) -> Result<Vec<Version>, RepoError> {
    let mut versions = Vec::new();
    if records.is_empty() {
        return Ok(versions);
    }
    let (path, blob) = versions_reader(dir, name, pack_len, cache)?;
    for loc in records {
        match read_record_at(c, &*blob, &path, loc.offset, loc.frame_len)? {
            PackRecord::Versions(vs) if vs.len() == loc.count as usize => versions.extend(vs),
            _ => {
                return Err(corrupt(
                    &path,
                    format!(
                        "record at offset {} is not the version record its index lists",
                        loc.offset
                    ),
                ));
            }
        }
    }
    Ok(versions)
}

/// Pack `name` of `pack_len` bytes, for reading its version records
/// (through `cache` when there is one), and its path.
fn versions_reader(
    dir: &Path,
    name: PackName,
    pack_len: u64,
    cache: Option<&IndexCache>,
) -> Result<
    (
        std::path::PathBuf,
        std::sync::Arc<dyn crate::backend::ReadAt>,
    ),
    RepoError,
> {
    let path = name.pack_path(dir);
    let blob = crate::store::open_blob_len(&path, pack_len).map_err(io_err(&path))?;
    let blob = crate::pack_cache::reader(cache, name, pack_len, blob.data);
    Ok((path, blob))
}

/// Bring the version records of `packs` whose versions are still to be
/// loaded into `cache`, several packs at once (`at_once`), so that
/// [`load_versions`] then reads them from the cache instead of one ranged
/// GET after the other. Only a warming: what fails here is left for
/// [`load_versions`] to meet and report.
pub(crate) fn prefetch_versions(
    dir: &Path,
    packs: &[PackIndex],
    cache: &IndexCache,
    at_once: usize,
) {
    // Records already in the cache are not read twice (here and by the
    // load), which a warm open would otherwise do for every pack.
    let pending: Vec<&PackIndex> = packs
        .iter()
        .filter(|p| p.versions_pending())
        .filter(|p| {
            p.version_records
                .iter()
                .any(|l| !crate::pack_cache::has_entry(cache, p.pack, l.offset))
        })
        .collect();
    let warmed = crate::par::try_map(&pending, at_once, |p| {
        let (path, blob) = versions_reader(dir, p.pack, p.pack_len, Some(cache))?;
        // A length no frame can have is for `load_versions` to report.
        for loc in p
            .version_records
            .iter()
            .filter(|l| (l.frame_len as usize) <= frame::HEADER + frame::MAX_FRAME)
        {
            let mut buf = vec![0u8; loc.frame_len as usize];
            crate::record::read_exact_at(&*blob, &path, &mut buf, loc.offset)?;
        }
        Ok::<(), RepoError>(())
    });
    if let Err(e) = warmed {
        tracing::debug!(error = %e, "fetching version records ahead");
    }
}

/// A format 1 index: the versions follow the header in frames of their own
/// (and the pack's version records are not located).
fn read_v1(
    h: &[u8],
    r: &mut BufReader<Box<dyn std::io::Read + Send>>,
    path: &Path,
    offset: &mut u64,
) -> Result<PackIndex, RepoError> {
    let header: IdxHeaderV1 =
        postcard::from_bytes(h).map_err(|e| corrupt(path, format!("index header: {e}")))?;
    debug_assert_eq!(header.format, 1);
    // Bound the reservation by what the frames can hold, not by the header.
    let mut versions = Vec::with_capacity(header.version_count.min(1 << 16) as usize);
    for _ in 0..header.version_frames {
        let p = next_frame(r, path, offset)?.ok_or_else(|| corrupt(path, "index ends early"))?;
        let vs: Vec<Version> = crate::zrec::decode(&p)
            .map_err(|e| corrupt(path, format!("index versions at offset {offset}: {e}")))?;
        versions.extend(vs);
    }
    if versions.len() as u64 != header.version_count {
        return Err(corrupt(
            path,
            "index version count disagrees with its records",
        ));
    }
    Ok(PackIndex {
        pack: header.pack,
        pack_len: header.pack_len,
        sealed_at: header.sealed_at,
        damage: header.damage,
        chunks: header.chunks,
        version_records: Vec::new(),
        versions,
    })
}

/// The next frame of an index file, `None` at a clean end.
fn next_frame(
    r: &mut BufReader<Box<dyn std::io::Read + Send>>,
    path: &Path,
    offset: &mut u64,
) -> Result<Option<Vec<u8>>, RepoError> {
    let got = frame::read(r, *offset).map_err(|e| match e {
        FrameError::Io { source, .. } => io_err(path)(source),
        e => corrupt(path, e.to_string()),
    })?;
    if let Some(p) = &got {
        *offset += (frame::HEADER + p.len()) as u64;
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::PackWriter;
    use rewind_core::{EncodedChunk, Entry};

    fn setup() -> (tempfile::TempDir, PackIndex) {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["tmp", "index", "packs"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let versions: Vec<Version> = (1..=3)
            .map(|seq| Version {
                client: "c".into(),
                seq,
                observed_at: Timestamp(5),
                path: format!("/a/{seq}").into_bytes(),
                entry: Entry::Deleted,
            })
            .collect();
        let mut w = PackWriter::create(&dir.path().join("tmp"), &Crypt::plain()).unwrap();
        w.add_chunk(EncodedChunk::encode(b"x").view()).unwrap();
        w.add_versions(&[&versions[..2], &versions[2..]]).unwrap();
        let idx = w.seal(dir.path()).unwrap();
        assert_eq!(idx.version_records.len(), 2);
        assert_eq!(idx.versions, versions);
        (dir, idx)
    }

    #[test]
    fn round_trip_reads_versions_from_the_pack() {
        let (dir, idx) = setup();
        write(&Crypt::plain(), dir.path(), &idx).unwrap();
        assert_eq!(
            read(&Crypt::plain(), dir.path(), idx.pack)
                .unwrap()
                .unwrap(),
            idx
        );
        assert!(
            read(&Crypt::plain(), dir.path(), PackName::random())
                .unwrap()
                .is_none()
        );
        // The index holds locations, not a second copy of the versions.
        let len = std::fs::metadata(idx.pack.idx_path(dir.path()))
            .unwrap()
            .len();
        assert!(len < 200, "index of {len} bytes");
    }

    #[test]
    fn damage_to_the_index_or_the_located_record_is_reported() {
        let (dir, idx) = setup();
        write(&Crypt::plain(), dir.path(), &idx).unwrap();
        let path = idx.pack.idx_path(dir.path());
        let good = std::fs::read(&path).unwrap();
        let n = good.len();
        let mut bad = good.clone();
        bad[n - 3] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        assert!(matches!(
            read(&Crypt::plain(), dir.path(), idx.pack),
            Err(RepoError::Corrupt { .. })
        ));
        std::fs::write(&path, &good[..n / 2]).unwrap();
        assert!(matches!(
            read(&Crypt::plain(), dir.path(), idx.pack),
            Err(RepoError::Corrupt { .. })
        ));
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(
            read(&Crypt::plain(), dir.path(), idx.pack),
            Err(RepoError::Corrupt { .. })
        ));
        // A located version record that is damaged in the pack.
        std::fs::write(&path, &good).unwrap();
        let pack = idx.pack.pack_path(dir.path());
        let mut bytes = std::fs::read(&pack).unwrap();
        let at = idx.version_records[1].offset as usize + 12;
        bytes[at] ^= 0xff;
        std::fs::write(&pack, &bytes).unwrap();
        assert!(matches!(
            read(&Crypt::plain(), dir.path(), idx.pack),
            Err(RepoError::Corrupt { .. })
        ));
    }

    #[test]
    fn format_1_index_files_are_still_read() {
        #[derive(Serialize)]
        struct V1<'a> {
            format: u32,
            pack: PackName,
            pack_len: u64,
            sealed_at: Option<Timestamp>,
            damage: Option<String>,
            chunks: &'a [IdxChunk],
            version_frames: u32,
            version_count: u64,
        }
        let (dir, idx) = setup();
        let h = postcard::to_stdvec(&V1 {
            format: 1,
            pack: idx.pack,
            pack_len: idx.pack_len,
            sealed_at: idx.sealed_at,
            damage: None,
            chunks: &idx.chunks,
            version_frames: 1,
            version_count: 3,
        })
        .unwrap();
        let mut bytes = frame::encode(&h);
        frame::encode_into(&mut bytes, &crate::zrec::encode(&idx.versions).unwrap());
        std::fs::write(idx.pack.idx_path(dir.path()), &bytes).unwrap();
        let back = read(&Crypt::plain(), dir.path(), idx.pack)
            .unwrap()
            .unwrap();
        assert_eq!(back.versions, idx.versions);
        assert_eq!(back.chunks, idx.chunks);
    }
}
