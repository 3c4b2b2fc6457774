//! Pack files: the immutable containers of chunks and version records.
//!
//! ```text
//! "RWPACK01"                       8 bytes
//! record frame*                    frame = [len u32 LE][crc32 u32 LE][payload]
//!                                  payload = postcard(PackRecord::Chunk | ::Versions)
//! footer frame                     payload = postcard(PackRecord::Footer(table of contents))
//! footer offset                    u64 LE
//! "RWPKEND1"                       8 bytes
//! ```
//!
//! The footer lists every record (offset, frame length, kind, chunk id and
//! sizes, version count), so loading a pack reads the footer and the version
//! records but no chunk data. Without a usable footer the records are still
//! found by scanning frames from the start, which is how a damaged pack is
//! salvaged.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rewind_core::frame::{self, HEADER, MAX_FRAME};
use rewind_core::{ChunkId, ChunkView, EncodedChunk, Encoding, RepoError, Timestamp, Version};

use crate::crypt::Crypt;
use crate::durable::{PACK_STEPS, corrupt, failpoint, io_err};
use crate::pack_index::PackIndex;
use crate::pack_name::PackName;
use crate::record::{
    PackRecord, PackRecordRef, decode_record, encode_record, read_encoded_at, read_exact_at,
    read_frame_at, read_record_at,
};
use crate::store::ReadAt;
use crate::toc::{Footer, TocEntry, TocKind};

/// First bytes of every pack.
pub(crate) const PACK_MAGIC: &[u8; 8] = b"RWPACK01";
/// Last bytes of every sealed pack.
pub(crate) const PACK_END: &[u8; 8] = b"RWPKEND1";
/// Footer offset + end magic.
const TRAILER: u64 = 16;

/// Version records are cut at about this many payload bytes. Any size under
/// `MAX_FRAME` works; 8 MiB keeps each read and decode buffer modest while a
/// typical batch (a few thousand versions of a few hundred bytes) still
/// fits in one record.
pub(crate) const VERSIONS_RECORD_TARGET: usize = 8 << 20;

/// The largest one version may encode to: it must fit one frame with the
/// record's tag and count (a few bytes) beside it.
pub(crate) const MAX_VERSION_BYTES: usize = MAX_FRAME - 64;

/// Read and check the footer of a pack of `len` bytes: magic at both ends,
/// footer frame, and a table of contents whose records tile the space
/// between the start magic and the footer exactly.
pub(crate) fn read_footer(
    c: &Crypt,
    file: &dyn ReadAt,
    path: &Path,
    len: u64,
) -> Result<Footer, RepoError> {
    let min = PACK_MAGIC.len() as u64 + HEADER as u64 + TRAILER;
    if len < min {
        return Err(corrupt(
            path,
            format!("{len} bytes is too short for a pack"),
        ));
    }
    let mut magic = [0u8; 8];
    read_exact_at(file, path, &mut magic, 0)?;
    if &magic != PACK_MAGIC {
        return Err(corrupt(path, "not a pack (bad magic)"));
    }
    let mut trailer = [0u8; TRAILER as usize];
    read_exact_at(file, path, &mut trailer, len - TRAILER)?;
    if &trailer[8..] != PACK_END {
        return Err(corrupt(path, "no end marker (footer missing)"));
    }
    let footer_off = u64::from_le_bytes(trailer[..8].try_into().expect("8 bytes"));
    if footer_off < PACK_MAGIC.len() as u64 || footer_off > len - TRAILER - HEADER as u64 {
        return Err(corrupt(
            path,
            format!("footer offset {footer_off} out of range"),
        ));
    }
    let buf = read_frame_at(file, path, footer_off, len - TRAILER)?;
    if footer_off + buf.len() as u64 != len - TRAILER {
        return Err(corrupt(path, "footer does not end at the trailer"));
    }
    let footer = match decode_record(c, path, &buf[HEADER..]) {
        Ok(PackRecord::Footer(f)) => f,
        Ok(_) => {
            return Err(corrupt(
                path,
                format!("record at offset {footer_off} is not a footer"),
            ));
        }
        Err(r) => return Err(corrupt(path, format!("footer at offset {footer_off}: {r}"))),
    };
    let mut expect = PACK_MAGIC.len() as u64;
    for e in &footer.entries {
        if e.offset != expect || (e.frame_len as usize) < HEADER {
            return Err(corrupt(
                path,
                format!("table of contents: bad entry at offset {}", e.offset),
            ));
        }
        expect += e.frame_len as u64;
    }
    if expect != footer_off {
        return Err(corrupt(
            path,
            "table of contents does not cover the records before the footer",
        ));
    }
    Ok(footer)
}

/// What a scan from the start found.
pub(crate) struct Scan {
    /// Every record that decoded, in order.
    pub entries: Vec<TocEntry>,
    /// The versions of those records.
    pub versions: Vec<Version>,
    /// The footer, when the scan reached a decodable one.
    pub footer: Option<Footer>,
    /// Where and why the scan stopped early, if it did.
    pub damage: Option<(u64, String)>,
    /// With `check_chunks`: offsets and reasons of chunk records whose
    /// content does not match their id (they stay in `entries`).
    pub bad_chunks: Vec<(u64, String)>,
    /// Records that failed their checksum or did not decode but whose
    /// length field let the scan step over them to a sound record: their
    /// content is lost, the records after them are not.
    pub skipped: Vec<(u64, String)>,
}

/// The offset just past the frame at `off` going by its length field alone,
/// if that is inside the file and the frame after it (if any) is sound:
/// how a scan steps over one damaged record without trusting garbage.
fn step_over(file: &dyn ReadAt, path: &Path, off: u64, len: u64) -> Option<u64> {
    let mut header = [0u8; HEADER];
    file.read_exact_at(&mut header, off).ok()?;
    let n = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as u64;
    if n > MAX_FRAME as u64 {
        return None;
    }
    let next = off.checked_add(HEADER as u64 + n)?;
    if next > len {
        return None;
    }
    if next == len {
        return Some(next);
    }
    read_frame_at(file, path, next, len).ok().map(|_| next)
}

/// Walk the records of a pack of `len` bytes from the start, stopping at the
/// footer or at the first record that does not decode. With `check_chunks`
/// every chunk is decompressed and hashed.
pub(crate) fn scan(
    c: &Crypt,
    file: &dyn ReadAt,
    path: &Path,
    len: u64,
    check_chunks: bool,
) -> Scan {
    let mut s = Scan {
        entries: Vec::new(),
        versions: Vec::new(),
        footer: None,
        damage: None,
        bad_chunks: Vec::new(),
        skipped: Vec::new(),
    };
    let mut magic = [0u8; 8];
    if len < 8 || file.read_exact_at(&mut magic, 0).is_err() || &magic != PACK_MAGIC {
        s.damage = Some((0, "not a pack (bad or missing magic)".into()));
        return s;
    }
    let mut off = PACK_MAGIC.len() as u64;
    loop {
        if off >= len {
            s.damage = Some((off, "ends without a footer".into()));
            return s;
        }
        let rec = read_frame_at(file, path, off, len).and_then(|buf| {
            let frame_len = buf.len() as u32;
            decode_record(c, path, &buf[HEADER..])
                .map(|r| (r, frame_len))
                .map_err(|r| corrupt(path, format!("record at offset {off}: {r}")))
        });
        let (rec, frame_len) = match rec {
            Ok(r) => r,
            Err(e) => match step_over(file, path, off, len) {
                Some(next) => {
                    s.skipped.push((off, e.to_string()));
                    off = next;
                    continue;
                }
                None => {
                    s.damage = Some((off, e.to_string()));
                    return s;
                }
            },
        };
        let kind = match rec {
            PackRecord::Chunk {
                id,
                raw_len,
                encoding,
                data,
            } => {
                // A delta's content is checked by `verify`, which can
                // reach its base in another pack.
                if check_chunks && !matches!(encoding, Encoding::Delta { .. }) {
                    let ch = EncodedChunk {
                        id,
                        raw_len,
                        encoding,
                        data,
                    };
                    if let Err(e) = ch.verify_as(c.ids()) {
                        s.bad_chunks.push((off, e.to_string()));
                    }
                }
                TocKind::Chunk {
                    id,
                    raw_len,
                    encoding,
                }
            }
            PackRecord::Versions(vs) => {
                let count = vs.len() as u32;
                s.versions.extend(vs);
                TocKind::Versions { count }
            }
            PackRecord::Footer(f) => {
                s.footer = Some(f);
                return s;
            }
        };
        s.entries.push(TocEntry {
            offset: off,
            frame_len,
            kind,
        });
        off += frame_len as u64;
    }
}

/// Everything an index needs from the pack at `path`: from its footer and
/// version records when they are sound, else salvaged by a scan (the good
/// records before the damage; `damage` says what was lost).
pub(crate) fn load(c: &Crypt, path: &Path, name: PackName) -> Result<PackIndex, RepoError> {
    let blob = crate::store::open_blob(path).map_err(io_err(path))?;
    let (file, len) = (&*blob.data, blob.len);
    match read_footer(c, file, path, len) {
        Ok(footer) => {
            let mut versions = Vec::new();
            let mut version_records = Vec::new();
            let mut damage = None;
            for e in &footer.entries {
                if let TocKind::Versions { count } = e.kind {
                    match read_record_at(c, file, path, e.offset, e.frame_len) {
                        Ok(PackRecord::Versions(vs)) if vs.len() == count as usize => {
                            versions.extend(vs);
                            version_records.extend(e.idx_versions());
                        }
                        Ok(_) => {
                            damage = Some(format!(
                                "version record at offset {} disagrees with the footer; its versions are lost",
                                e.offset
                            ))
                        }
                        Err(err) => {
                            damage = Some(format!("{err}; the versions of that record are lost"))
                        }
                    }
                }
            }
            Ok(PackIndex {
                pack: name,
                pack_len: len,
                sealed_at: Some(footer.sealed_at),
                damage,
                chunks: footer
                    .entries
                    .iter()
                    .filter_map(TocEntry::idx_chunk)
                    .collect(),
                version_records,
                versions,
            })
        }
        Err(RepoError::Io { path, source }) => Err(RepoError::Io { path, source }),
        Err(footer_err) => {
            let s = scan(c, file, path, len, false);
            let mut lost = match &s.damage {
                Some((off, why)) => format!("; records from offset {off} on are lost: {why}"),
                None => String::new(),
            };
            for (off, why) in &s.skipped {
                lost.push_str(&format!("; the record at offset {off} is lost: {why}"));
            }
            Ok(PackIndex {
                pack: name,
                pack_len: len,
                sealed_at: s.footer.as_ref().map(|f| f.sealed_at),
                damage: Some(format!(
                    "{footer_err}; salvaged {} records by scanning{lost}",
                    s.entries.len()
                )),
                chunks: s.entries.iter().filter_map(TocEntry::idx_chunk).collect(),
                version_records: s
                    .entries
                    .iter()
                    .filter_map(TocEntry::idx_versions)
                    .collect(),
                versions: s.versions,
            })
        }
    }
}

/// Cut `versions` into runs that each encode to at most `target` bytes
/// (a single larger version gets a run of its own). Errors name the first
/// version over [`MAX_VERSION_BYTES`].
pub(crate) fn split_versions(
    versions: &[Version],
    target: usize,
) -> Result<Vec<&[Version]>, (usize, usize)> {
    let mut runs = Vec::new();
    let mut start = 0;
    let mut size = 0;
    for (i, v) in versions.iter().enumerate() {
        let n = postcard::experimental::serialized_size(v).unwrap_or(usize::MAX);
        if n > MAX_VERSION_BYTES {
            return Err((i, n));
        }
        if i > start && size + n > target {
            runs.push(&versions[start..i]);
            start = i;
            size = 0;
        }
        size += n;
    }
    if start < versions.len() {
        runs.push(&versions[start..]);
    }
    Ok(runs)
}

/// A pack being written in `DIR/tmp`. Dropping it unsealed removes the temp
/// file (the chunks in it were never promised durable). After its first
/// error every call fails.
pub(crate) struct PackWriter {
    name: PackName,
    tmp: PathBuf,
    file: File,
    len: u64,
    entries: Vec<TocEntry>,
    pending: HashMap<ChunkId, usize>,
    versions: Vec<Version>,
    failed: bool,
    sealed: bool,
    /// Reused encoding buffer: a record is serialized straight after its
    /// frame header and written from here.
    scratch: Vec<u8>,
    /// How records are sealed (not at all in a plain repository).
    crypt: Crypt,
}

/// The whole frame of chunk `c`'s record in an encrypted repository. A
/// chunk's record is sealed under the chunk's id, not under its pack's
/// name, so it can be sealed before the pack it goes into is known.
pub(crate) fn seal_chunk(crypt: &Crypt, c: ChunkView<'_>) -> Result<Vec<u8>, String> {
    let rec = PackRecordRef::Chunk {
        id: c.id,
        raw_len: c.raw_len,
        encoding: c.encoding,
        data: c.data,
    };
    crypt.seal_chunk_frame(&c.id, c.data.len() + 64, |buf| {
        postcard::to_io(&rec, buf)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}

impl PackWriter {
    /// Start a pack in `tmp_dir`.
    pub(crate) fn create(tmp_dir: &Path, crypt: &Crypt) -> Result<PackWriter, RepoError> {
        let name = PackName::random();
        let tmp = tmp_dir.join(format!("{name}.pack.tmp"));
        let file = rewind_core::private::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        let mut w = PackWriter {
            name,
            tmp,
            file,
            len: 0,
            entries: Vec::new(),
            pending: HashMap::new(),
            versions: Vec::new(),
            failed: false,
            sealed: false,
            scratch: Vec::new(),
            crypt: crypt.clone(),
        };
        w.write(PACK_MAGIC)?;
        Ok(w)
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Records written so far.
    pub(crate) fn records(&self) -> usize {
        self.entries.len()
    }

    /// True when `id` was added to this pack.
    pub(crate) fn contains(&self, id: &ChunkId) -> bool {
        self.pending.contains_key(id)
    }

    fn check(&self) -> Result<(), RepoError> {
        if self.failed || self.sealed {
            return Err(RepoError::Io {
                path: self.tmp.clone(),
                source: io::Error::other("pack writer is unusable after an earlier error"),
            });
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), RepoError> {
        self.check()?;
        let r = failpoint("pack.write").and_then(|()| self.file.write_all(bytes));
        if let Err(e) = r {
            self.failed = true;
            return Err(RepoError::Io {
                path: self.tmp.clone(),
                source: e,
            });
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn append(&mut self, payload: &[u8], kind: TocKind) -> Result<(), RepoError> {
        self.append_frame(&frame::encode(payload), kind)
    }

    /// Write one whole frame and list it in the table of contents.
    fn append_frame(&mut self, framed: &[u8], kind: TocKind) -> Result<(), RepoError> {
        let offset = self.len;
        self.write(framed)?;
        self.entries.push(TocEntry {
            offset,
            frame_len: framed.len() as u32,
            kind,
        });
        Ok(())
    }

    /// Append a chunk (its content was checked by the caller). A chunk too
    /// large for one record is refused without harming the writer.
    pub(crate) fn add_chunk(&mut self, c: ChunkView<'_>) -> Result<(), RepoError> {
        self.check()?;
        if c.data.len() > MAX_FRAME - 64 {
            return Err(corrupt(
                &self.tmp,
                format!(
                    "chunk {} is too large to store ({} bytes)",
                    c.id,
                    c.data.len()
                ),
            ));
        }
        if self.crypt.is_sealed() {
            let framed = seal_chunk(&self.crypt, c)
                .map_err(|e| corrupt(&self.tmp, format!("encoding chunk {}: {e}", c.id)))?;
            return self.add_sealed_chunk(c, &framed);
        }
        let rec = PackRecordRef::Chunk {
            id: c.id,
            raw_len: c.raw_len,
            encoding: c.encoding,
            data: c.data,
        };
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let start = frame::begin(&mut buf);
        let encoded = postcard::to_io(&rec, &mut buf)
            .map(|_| ())
            .map_err(|e| corrupt(&self.tmp, format!("encoding chunk {}: {e}", c.id)));
        let r = encoded.and_then(|()| {
            frame::finish(&mut buf, start);
            self.append_frame(
                &buf,
                TocKind::Chunk {
                    id: c.id,
                    raw_len: c.raw_len,
                    encoding: c.encoding,
                },
            )
        });
        self.scratch = buf;
        r?;
        self.pending.insert(c.id, self.entries.len() - 1);
        Ok(())
    }

    /// Append chunk `c` of an encrypted repository whose record was sealed
    /// beforehand ([`seal_chunk`]: `framed`, its whole frame), so that the
    /// sealing need not happen under the repository's writer lock.
    pub(crate) fn add_sealed_chunk(
        &mut self,
        c: ChunkView<'_>,
        framed: &[u8],
    ) -> Result<(), RepoError> {
        self.check()?;
        if framed.len() > HEADER + MAX_FRAME {
            return Err(corrupt(
                &self.tmp,
                format!(
                    "chunk {} is too large to store ({} bytes)",
                    c.id,
                    framed.len()
                ),
            ));
        }
        self.append_frame(
            framed,
            TocKind::Chunk {
                id: c.id,
                raw_len: c.raw_len,
                encoding: c.encoding,
            },
        )?;
        self.pending.insert(c.id, self.entries.len() - 1);
        Ok(())
    }

    /// Append versions as one or more records (sizes checked by the caller
    /// with [`split_versions`]).
    pub(crate) fn add_versions(&mut self, runs: &[&[Version]]) -> Result<(), RepoError> {
        for run in runs {
            self.check()?;
            let payload = encode_record(
                &self.crypt,
                &self.name.to_hex(),
                &PackRecordRef::Versions(run),
            )
            .map_err(|e| corrupt(&self.tmp, format!("encoding versions: {e}")))?;
            self.append(
                &payload,
                TocKind::Versions {
                    count: run.len() as u32,
                },
            )?;
            self.versions.extend_from_slice(run);
        }
        Ok(())
    }

    /// Read back a chunk added to this (unsealed) pack.
    pub(crate) fn read_pending(&self, id: &ChunkId) -> Option<Result<EncodedChunk, RepoError>> {
        let e = self.entries[*self.pending.get(id)?];
        Some(read_encoded_at(
            &self.crypt,
            &self.file,
            &self.tmp,
            e.offset,
            e.frame_len,
            id,
        ))
    }

    /// Finish the pack: footer, trailer, fsync, re-read and compare the
    /// footer, rename into `DIR/packs/<2 hex>/`, fsync that directory.
    /// Returns what its index must hold.
    pub(crate) fn seal(&mut self, dir: &Path) -> Result<PackIndex, RepoError> {
        self.seal_as(dir, Timestamp::now())
    }

    /// [`PackWriter::seal`] with `sealed_at` as the footer's seal time (a
    /// repacked pack takes its content's time: see `prune`).
    pub(crate) fn seal_as(
        &mut self,
        dir: &Path,
        sealed_at: Timestamp,
    ) -> Result<PackIndex, RepoError> {
        self.check()?;
        let r = self.seal_inner(dir, sealed_at);
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    fn seal_inner(&mut self, dir: &Path, sealed_at: Timestamp) -> Result<PackIndex, RepoError> {
        let footer = Footer {
            sealed_at,
            entries: self.entries.clone(),
        };
        let payload = encode_record(
            &self.crypt,
            &self.name.to_hex(),
            &PackRecordRef::Footer(&footer),
        )
        .map_err(|e| corrupt(&self.tmp, format!("encoding footer: {e}")))?;
        if payload.len() > MAX_FRAME {
            return Err(corrupt(&self.tmp, "footer over the frame limit"));
        }
        let footer_off = self.len;
        let mut tail = frame::encode(&payload);
        tail.extend_from_slice(&footer_off.to_le_bytes());
        tail.extend_from_slice(PACK_END);
        self.write(&tail)?;
        failpoint("pack.fsync")
            .and_then(|()| self.file.sync_all())
            .map_err(io_err(&self.tmp))?;
        // Cheap check of what reached the file: the footer reads back equal.
        let back = read_footer(&self.crypt, &self.file, &self.tmp, self.len)?;
        if back != footer {
            return Err(corrupt(
                &self.tmp,
                "footer read back differs from the one written",
            ));
        }
        let dest = self.name.pack_path(dir);
        crate::store::of(&dest)?.publish(&self.tmp, &dest, &PACK_STEPS)?;
        self.sealed = true;
        Ok(PackIndex {
            pack: self.name,
            pack_len: self.len,
            sealed_at: Some(footer.sealed_at),
            damage: None,
            chunks: self
                .entries
                .iter()
                .filter_map(TocEntry::idx_chunk)
                .collect(),
            version_records: self
                .entries
                .iter()
                .filter_map(TocEntry::idx_versions)
                .collect(),
            versions: std::mem::take(&mut self.versions),
        })
    }
}

impl Drop for PackWriter {
    fn drop(&mut self) {
        if !self.sealed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::read_chunk_at;

    #[test]
    fn writer_round_trip_and_scan() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("tmp")).unwrap();
        fs::create_dir_all(dir.path().join("packs")).unwrap();
        let mut w = PackWriter::create(&dir.path().join("tmp"), &Crypt::plain()).unwrap();
        let chunks: Vec<EncodedChunk> = (0..5)
            .map(|i| EncodedChunk::encode(format!("chunk {i} ").repeat(100).as_bytes()))
            .collect();
        for c in &chunks {
            w.add_chunk(c.view()).unwrap();
        }
        assert_eq!(
            w.read_pending(&chunks[2].id)
                .unwrap()
                .unwrap()
                .decode()
                .unwrap(),
            chunks[2].decode().unwrap()
        );
        let idx = w.seal(dir.path()).unwrap();
        assert!(
            w.add_chunk(chunks[0].view()).is_err(),
            "sealed writer refuses"
        );
        let path = idx.pack.pack_path(dir.path());
        assert_eq!(fs::metadata(&path).unwrap().len(), idx.pack_len);
        let loaded = load(&Crypt::plain(), &path, idx.pack).unwrap();
        assert_eq!(loaded.chunks, idx.chunks);
        assert!(loaded.damage.is_none());
        let f = File::open(&path).unwrap();
        let s = scan(&Crypt::plain(), &f, &path, idx.pack_len, true);
        assert!(s.damage.is_none() && s.footer.is_some() && s.bad_chunks.is_empty());
        assert_eq!(s.entries.len(), 5);
        for c in &idx.chunks {
            let got =
                read_chunk_at(&Crypt::plain(), &f, &path, c.offset, c.frame_len, &c.id).unwrap();
            assert_eq!(ChunkId::of(&got), c.id);
        }
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let w = PackWriter::create(dir.path(), &Crypt::plain()).unwrap();
        drop(w);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn garbage_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pack");
        let mut seed = 1u64;
        for n in [0usize, 7, 8, 30, 100, 4000] {
            for round in 0..20 {
                let mut bytes: Vec<u8> = (0..n)
                    .map(|_| {
                        seed = seed
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (seed >> 33) as u8
                    })
                    .collect();
                if round % 2 == 0 && n >= 8 {
                    bytes[..8].copy_from_slice(PACK_MAGIC);
                }
                if round % 4 == 0 && n >= 24 {
                    bytes[n - 8..].copy_from_slice(PACK_END);
                }
                fs::write(&path, &bytes).unwrap();
                let _ = load(&Crypt::plain(), &path, PackName([0; 16]));
                let f = File::open(&path).unwrap();
                let _ = scan(&Crypt::plain(), &f, &path, n as u64, true);
            }
        }
    }

    #[test]
    fn split_versions_respects_target() {
        use rewind_core::Entry;
        let vs: Vec<Version> = (0..100)
            .map(|i| Version {
                client: "c".into(),
                seq: i,
                observed_at: Timestamp(i as i64),
                path: vec![b'a'; 100],
                entry: Entry::Deleted,
            })
            .collect();
        let runs = split_versions(&vs, 1000).unwrap();
        assert!(runs.len() > 1);
        assert_eq!(runs.iter().map(|r| r.len()).sum::<usize>(), 100);
        for r in &runs {
            assert!(postcard::experimental::serialized_size(r).unwrap() <= 1100);
        }
        assert!(split_versions(&[], 10).unwrap().is_empty());
    }
}
