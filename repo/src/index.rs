//! Index files: `DIR/index/<pack name>.idx`, a cache of one pack's contents
//! so that opening a repository reads no chunk data.
//!
//! ```text
//! frame: postcard(IdxHeader { format, pack, pack_len, sealed_at, damage,
//!                             chunks: [(id, offset, frame_len, raw_len, compressed)],
//!                             version_frames, version_count })
//! frame*: postcard(Vec<Version>)      version_frames of them
//! ```
//!
//! Versions get frames of their own so that no frame approaches
//! `MAX_FRAME` whatever the size of the commit the pack holds.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::Path;

use rewind_core::frame::{self, FrameError};
use rewind_core::{ChunkId, RepoError, Timestamp, Version};
use serde::{Deserialize, Serialize};

use crate::durable::{IDX_STEPS, corrupt, io_err, write_durably};
use crate::pack::{PackName, VERSIONS_RECORD_TARGET, split_versions};

/// The format number written into index headers.
const IDX_FORMAT: u32 = 1;

/// Where one chunk of a pack is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IdxChunk {
    pub id: ChunkId,
    pub offset: u64,
    pub frame_len: u32,
    pub raw_len: u32,
    pub compressed: bool,
}

/// Everything the in-memory indexes need from one pack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PackIndex {
    /// The pack.
    pub pack: PackName,
    /// Its length in bytes (a cheap check that the index describes this
    /// very file).
    pub pack_len: u64,
    /// When it was sealed (unknown when salvaged without a footer).
    pub sealed_at: Option<Timestamp>,
    /// Set when the pack was damaged and this index was salvaged from it.
    pub damage: Option<String>,
    /// Its chunks, in file order.
    pub chunks: Vec<IdxChunk>,
    /// Its versions, in file order.
    pub versions: Vec<Version>,
}

#[derive(Serialize, Deserialize)]
struct IdxHeader {
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
pub(crate) fn encode(idx: &PackIndex) -> Result<Vec<u8>, String> {
    let runs = split_versions(&idx.versions, VERSIONS_RECORD_TARGET)
        .map_err(|(i, n)| format!("version {i} encodes to {n} bytes, over the limit"))?;
    let header = IdxHeader {
        format: IDX_FORMAT,
        pack: idx.pack,
        pack_len: idx.pack_len,
        sealed_at: idx.sealed_at,
        damage: idx.damage.clone(),
        chunks: idx.chunks.clone(),
        version_frames: runs.len() as u32,
        version_count: idx.versions.len() as u64,
    };
    let mut out = Vec::new();
    let h = postcard::to_stdvec(&header).map_err(|e| e.to_string())?;
    if h.len() > frame::MAX_FRAME {
        return Err("index header over the frame limit".into());
    }
    frame::encode_into(&mut out, &h);
    for run in runs {
        let p = crate::zrec::encode(run)?;
        frame::encode_into(&mut out, &p);
    }
    Ok(out)
}

/// Write the index of a pack durably into `DIR/index/`.
pub(crate) fn write(dir: &Path, idx: &PackIndex) -> Result<(), RepoError> {
    let dest = idx.pack.idx_path(dir);
    let bytes = encode(idx).map_err(|r| corrupt(&dest, r))?;
    write_durably(&dir.join("tmp"), &dest, &bytes, &IDX_STEPS)
}

/// Read an index file. `Ok(None)` when it does not exist (any more): a
/// concurrent rebuild or prune may remove index files at any moment.
pub(crate) fn read(path: &Path) -> Result<Option<PackIndex>, RepoError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut r = BufReader::new(file);
    let mut offset = 0u64;
    let h =
        next_frame(&mut r, path, &mut offset)?.ok_or_else(|| corrupt(path, "empty index file"))?;
    let header: IdxHeader =
        postcard::from_bytes(&h).map_err(|e| corrupt(path, format!("index header: {e}")))?;
    if header.format != IDX_FORMAT {
        return Err(corrupt(
            path,
            format!("unknown index format {}", header.format),
        ));
    }
    // Bound the reservation by what the frames can hold, not by the header.
    let mut versions = Vec::with_capacity(header.version_count.min(1 << 16) as usize);
    for _ in 0..header.version_frames {
        let p = next_frame(&mut r, path, &mut offset)?
            .ok_or_else(|| corrupt(path, "index ends early"))?;
        let vs: Vec<Version> = crate::zrec::decode(&p)
            .map_err(|e| corrupt(path, format!("index versions at offset {offset}: {e}")))?;
        versions.extend(vs);
    }
    if next_frame(&mut r, path, &mut offset)?.is_some() {
        return Err(corrupt(path, "unexpected data after the index"));
    }
    if versions.len() as u64 != header.version_count {
        return Err(corrupt(
            path,
            "index version count disagrees with its records",
        ));
    }
    Ok(Some(PackIndex {
        pack: header.pack,
        pack_len: header.pack_len,
        sealed_at: header.sealed_at,
        damage: header.damage,
        chunks: header.chunks,
        versions,
    }))
}

/// The next frame of an index file, `None` at a clean end.
fn next_frame(
    r: &mut BufReader<File>,
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
    use rewind_core::Entry;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        std::fs::create_dir_all(dir.path().join("index")).unwrap();
        let idx = PackIndex {
            pack: PackName::random(),
            pack_len: 1234,
            sealed_at: Some(Timestamp(99)),
            damage: None,
            chunks: vec![IdxChunk {
                id: ChunkId::of(b"x"),
                offset: 8,
                frame_len: 60,
                raw_len: 1,
                compressed: false,
            }],
            versions: vec![Version {
                client: "c".into(),
                seq: 1,
                observed_at: Timestamp(5),
                path: b"/a".to_vec(),
                entry: Entry::Deleted,
            }],
        };
        write(dir.path(), &idx).unwrap();
        let path = idx.pack.idx_path(dir.path());
        assert_eq!(read(&path).unwrap().unwrap(), idx);
        assert!(read(&dir.path().join("index/none.idx")).unwrap().is_none());

        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(read(&path), Err(RepoError::Corrupt { .. })));
        std::fs::write(&path, &bytes[..n / 2]).unwrap();
        assert!(matches!(read(&path), Err(RepoError::Corrupt { .. })));
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(read(&path), Err(RepoError::Corrupt { .. })));
    }
}
