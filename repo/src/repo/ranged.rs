//! Reading many chunks of a repository on an object store at once: the
//! frames wanted from each pack are fetched with few ranged GETs, in
//! parallel (the backend's `ReadAt::read_ranges`), instead of one GET
//! after the other per chunk (docs/decisions.md, "Object storage: index
//! cache and requests (issue 20)").
//!
//! Every frame is then read and checked exactly as a single read checks
//! it (`record::read_encoded_at`: the frame's CRC and the chunk's id), and
//! its content by the caller as for a single read (`decode_stored`).

use std::collections::BTreeMap;
use std::ops::Range;

use rewind_core::{ChunkId, EncodedChunk, RepoError, frame};

use super::LocalRepo;
use crate::durable::io_err;
use crate::pack_name::PackName;
use crate::record;

/// Packs read at once by one call of [`LocalRepo::read_encoded_many`] or
/// `read_chunks`, each with its own ranged GETs (object_store runs up to 10
/// of those per pack).
const PACKS_AT_ONCE: usize = 4;

impl LocalRepo {
    /// [`LocalRepo::read_encoded`] of each of `ids`, in order: on an
    /// object store the frames of each pack are fetched with few ranged
    /// GETs, in parallel; anything that goes wrong there is read again one
    /// chunk at a time, which reports it (or, for a reader that finds a
    /// pack gone, reloads first).
    pub fn read_encoded_many(&self, ids: &[ChunkId]) -> Result<Vec<EncodedChunk>, RepoError> {
        let read = |c: EncodedChunk, place: String| Ok((c, place));
        if let Some(Ok(found)) = self.locate_many(ids, read) {
            let sent: Result<Vec<EncodedChunk>, RepoError> = found
                .into_iter()
                .zip(ids)
                .map(|((c, place), id)| self.sendable(id, c, &place))
                .collect();
            if let Ok(sent) = sent {
                return Ok(sent);
            }
        }
        ids.iter().map(|id| self.read_encoded(id)).collect()
    }

    /// The decoded content of each of `ids`, in order, read as
    /// [`LocalRepo::read_encoded_many`] reads them. `None` where that
    /// is not worth it (see [`LocalRepo::locate_many`]). Each chunk is
    /// decoded as soon as its frame is read, so what was fetched and
    /// decrypted for it is not held until the last one is read.
    pub(super) fn read_chunks_ranged(
        &self,
        ids: &[ChunkId],
    ) -> Option<Result<Vec<Vec<u8>>, RepoError>> {
        self.locate_many(ids, |c, place| self.decode_owned(c, &place))
    }

    /// `read(chunk, place)` of each of `ids` as stored, with where it was
    /// read, in order, read with ranged GETs grouped by pack. `None` when
    /// this is not worth it or not possible here (a local directory, a
    /// single chunk, a chunk the indexes do not place in a pack): the
    /// caller reads one by one.
    fn locate_many<T: Send>(
        &self,
        ids: &[ChunkId],
        read: impl Fn(EncodedChunk, String) -> Result<T, RepoError> + Sync,
    ) -> Option<Result<Vec<T>, RepoError>> {
        if ids.len() < 2 || !crate::store::is_url(&self.dir) {
            return None;
        }
        let found: Vec<(crate::state::Location, PackName, u64)> = {
            let st = self.read_state();
            ids.iter()
                .map(|id| {
                    let l = st.chunks.get(id)?;
                    let p = &st.packs[l.pack as usize];
                    Some((*l, p.name, p.len))
                })
                .collect::<Option<_>>()?
        };
        // A length no frame can have is the single read's to report.
        if found
            .iter()
            .any(|(l, ..)| l.frame_len as usize > frame::HEADER + frame::MAX_FRAME)
        {
            return None;
        }
        let mut by_pack: BTreeMap<PackName, (u64, Vec<usize>)> = BTreeMap::new();
        for (i, (_, name, len)) in found.iter().enumerate() {
            by_pack.entry(*name).or_insert((*len, Vec::new())).1.push(i);
        }
        let by_pack: Vec<(PackName, (u64, Vec<usize>))> = by_pack.into_iter().collect();
        // One pack's frames: fetched with its ranged GETs, each checked.
        let read_pack = |(name, (len, wanted)): &(PackName, (u64, Vec<usize>))| {
            let path = name.pack_path(&self.dir);
            let f = self.pack_file(*name, &path, *len)?;
            let ranges: Vec<Range<u64>> = wanted
                .iter()
                .map(|&i| found[i].0.offset..found[i].0.offset + found[i].0.frame_len as u64)
                .collect();
            let got = f.read_ranges(&ranges).map_err(io_err(&path))?;
            wanted
                .iter()
                .zip(got)
                .map(|(&i, bytes)| {
                    let l = found[i].0;
                    let c = record::read_encoded_in(&self.crypt, &bytes, &path, l.offset, &ids[i])?;
                    let place = format!("{} at offset {}", path.display(), l.offset);
                    Ok((i, read(c, place)?))
                })
                .collect::<Result<Vec<_>, RepoError>>()
        };
        // Packs are fetched a few at once: a window of a large file spans
        // several packs, and one pack after the other cost a round trip
        // each (docs/decisions.md, "Restoring from object storage").
        let results = match crate::par::try_map(&by_pack, PACKS_AT_ONCE, read_pack) {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        let mut out: Vec<Option<T>> = std::iter::repeat_with(|| None).take(ids.len()).collect();
        for (i, t) in results.into_iter().flatten() {
            out[i] = Some(t);
        }
        Some(Ok(out.into_iter().flatten().collect()))
    }
}
