//! One record of a pack: its postcard encoding inside a
//! [`rewind_core::frame`] (length, CRC-32, payload), and reading one back
//! from a known offset.
//!
//! A record is a chunk in its stored form, a run of versions committed
//! together (zstd-compressed), or the footer (the table of contents, the
//! last record). Every read bounds the frame's length before allocating,
//! checks its CRC, and requires the payload to decode whole; a chunk read
//! is checked to be the record of the id asked for. [`PackRecordRef`]
//! writes what [`PackRecord`] reads, variant for variant.

use std::io;
use std::path::Path;

use rewind_core::frame::{self, HEADER, MAX_FRAME};
use rewind_core::{ChunkId, EncodedChunk, Encoding, RepoError, Version};
use serde::{Deserialize, Serialize};

use crate::crypt::{Crypt, KIND_CHUNK, KIND_FOOTER, KIND_VERSIONS, pack_label};
use crate::durable::corrupt;
use crate::store::ReadAt;
use crate::toc::Footer;

/// One record of a pack, as read back.
#[derive(Debug, Deserialize)]
pub(crate) enum PackRecord {
    /// A chunk in its stored form.
    Chunk {
        id: ChunkId,
        raw_len: u32,
        encoding: Encoding,
        #[serde(with = "bytes")]
        data: Vec<u8>,
    },
    /// Versions committed together (one commit may span several records,
    /// always in one pack), zstd-compressed.
    Versions(#[serde(with = "crate::zrec")] Vec<Version>),
    /// The table of contents; the last record.
    Footer(Footer),
}

/// The same records for writing, borrowing their contents. The variant
/// order must match [`PackRecord`] (postcard encodes the variant index).
#[derive(Serialize)]
pub(crate) enum PackRecordRef<'a> {
    Chunk {
        id: ChunkId,
        raw_len: u32,
        encoding: Encoding,
        #[serde(with = "bytes")]
        data: &'a [u8],
    },
    Versions(#[serde(with = "crate::zrec::slice")] &'a [Version]),
    Footer(&'a Footer),
}

mod bytes {
    //! `Vec<u8>` / `&[u8]` as postcard bytes (length + raw bytes; the same
    //! encoding postcard gives a sequence of u8, decoded without a per-byte
    //! visit).
    use serde::de::{Deserializer, SeqAccess, Visitor};
    use serde::ser::Serializer;

    pub(super) fn serialize<T: AsRef<[u8]> + ?Sized, S: Serializer>(
        b: &T,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b.as_ref())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}

/// Decode a record payload; the whole payload must be consumed.
pub(crate) fn decode_record(c: &Crypt, path: &Path, payload: &[u8]) -> Result<PackRecord, String> {
    let (sealed, plain) = c.open_record(pack_label(path), payload)?;
    let rec = match postcard::take_from_bytes::<PackRecord>(&plain) {
        Ok((rec, [])) => rec,
        Ok((_, rest)) => return Err(format!("{} unexpected bytes after the record", rest.len())),
        Err(e) => return Err(format!("record does not decode: {e}")),
    };
    // What the clear kind byte and id said is what the sealed record holds
    // (they are authenticated, so only a bug could make them differ).
    if let Some((kind, id)) = sealed {
        let agrees = match &rec {
            PackRecord::Chunk { id: got, .. } => kind == KIND_CHUNK && id == Some(*got),
            PackRecord::Versions(_) => kind == KIND_VERSIONS,
            PackRecord::Footer(_) => kind == KIND_FOOTER,
        };
        if !agrees {
            return Err("sealed record disagrees with its kind or id".into());
        }
    }
    Ok(rec)
}

/// The frame payload of `rec` in pack `pack` (sealed in an encrypted
/// repository).
pub(crate) fn encode_record(
    c: &Crypt,
    pack: &str,
    rec: &PackRecordRef<'_>,
) -> Result<Vec<u8>, String> {
    let plain = postcard::to_stdvec(rec).map_err(|e| e.to_string())?;
    let (kind, id) = match rec {
        PackRecordRef::Chunk { id, .. } => (KIND_CHUNK, Some(id)),
        PackRecordRef::Versions(_) => (KIND_VERSIONS, None),
        PackRecordRef::Footer(_) => (KIND_FOOTER, None),
    };
    c.seal_record(kind, id, pack, &plain)
}

/// Read the frame at `offset`, which must end at or before `end`. Returns the
/// whole frame (header included). Lengths are bounded before allocating.
pub(crate) fn read_frame_at(
    file: &dyn ReadAt,
    path: &Path,
    offset: u64,
    end: u64,
) -> Result<Vec<u8>, RepoError> {
    let mut header = [0u8; HEADER];
    if offset.checked_add(HEADER as u64).is_none_or(|e| e > end) {
        return Err(corrupt(
            path,
            format!("truncated record at offset {offset}"),
        ));
    }
    read_exact_at(file, path, &mut header, offset)?;
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as u64;
    if len > MAX_FRAME as u64 {
        return Err(corrupt(
            path,
            format!("record at offset {offset} announces {len} bytes (over the limit)"),
        ));
    }
    let frame_len = HEADER as u64 + len;
    if offset + frame_len > end {
        return Err(corrupt(
            path,
            format!("truncated record at offset {offset}"),
        ));
    }
    let mut buf = vec![0u8; frame_len as usize];
    read_exact_at(file, path, &mut buf, offset)?;
    frame::decode(&buf, offset).map_err(|e| corrupt(path, e.to_string()))?;
    Ok(buf)
}

/// Read the frame of `frame_len` bytes at `offset` (a location from an
/// index) and decode its record.
pub(crate) fn read_record_at(
    c: &Crypt,
    file: &dyn ReadAt,
    path: &Path,
    offset: u64,
    frame_len: u32,
) -> Result<PackRecord, RepoError> {
    let frame_len = frame_len as usize;
    if !(HEADER..=HEADER + MAX_FRAME).contains(&frame_len) {
        return Err(corrupt(
            path,
            format!("index gives record at offset {offset} an impossible length {frame_len}"),
        ));
    }
    let mut buf = vec![0u8; frame_len];
    read_exact_at(file, path, &mut buf, offset)?;
    record_in(c, &buf, path, offset)
}

/// Decode the record of `frame`, the whole frame read from `offset` of
/// `path` (which an index gave as the frame's place and length).
fn record_in(c: &Crypt, frame: &[u8], path: &Path, offset: u64) -> Result<PackRecord, RepoError> {
    let (payload, used) = frame::decode(frame, offset).map_err(|e| corrupt(path, e.to_string()))?;
    if used != frame.len() {
        return Err(corrupt(
            path,
            format!(
                "record at offset {offset} is {used} bytes, the index says {}",
                frame.len()
            ),
        ));
    }
    decode_record(c, path, payload).map_err(|r| corrupt(path, format!("at offset {offset}: {r}")))
}

/// Read the chunk stored at `offset` and check it against `id`.
pub(crate) fn read_chunk_at(
    c: &Crypt,
    file: &dyn ReadAt,
    path: &Path,
    offset: u64,
    frame_len: u32,
    id: &ChunkId,
) -> Result<Vec<u8>, RepoError> {
    read_encoded_at(c, file, path, offset, frame_len, id)?
        .decode_as(c.ids())
        .map_err(|e| corrupt(path, format!("at offset {offset}: {e}")))
}

/// Read the chunk record stored at `offset`, as stored (compressed or
/// raw), checking only that it is the record of `id`.
pub(crate) fn read_encoded_at(
    c: &Crypt,
    file: &dyn ReadAt,
    path: &Path,
    offset: u64,
    frame_len: u32,
    id: &ChunkId,
) -> Result<EncodedChunk, RepoError> {
    chunk_record(
        read_record_at(c, file, path, offset, frame_len)?,
        path,
        offset,
        id,
    )
}

/// [`read_encoded_at`] of a frame already fetched whole (`frame`, read
/// from `offset` of `path`): decoded where it lies, not copied first.
pub(crate) fn read_encoded_in(
    c: &Crypt,
    frame: &[u8],
    path: &Path,
    offset: u64,
    id: &ChunkId,
) -> Result<EncodedChunk, RepoError> {
    if !(HEADER..=HEADER + MAX_FRAME).contains(&frame.len()) {
        return Err(corrupt(
            path,
            format!(
                "index gives record at offset {offset} an impossible length {}",
                frame.len()
            ),
        ));
    }
    chunk_record(record_in(c, frame, path, offset)?, path, offset, id)
}

/// The chunk `id` that `rec`, read at `offset` of `path`, must be.
fn chunk_record(
    rec: PackRecord,
    path: &Path,
    offset: u64,
    id: &ChunkId,
) -> Result<EncodedChunk, RepoError> {
    match rec {
        PackRecord::Chunk {
            id: got,
            raw_len,
            encoding,
            data,
        } => {
            if got != *id {
                return Err(corrupt(
                    path,
                    format!("record at offset {offset} holds chunk {got}, expected {id}"),
                ));
            }
            Ok(EncodedChunk {
                id: got,
                raw_len,
                encoding,
                data,
            })
        }
        _ => Err(corrupt(
            path,
            format!("record at offset {offset} is not a chunk"),
        )),
    }
}

pub(crate) fn read_exact_at(
    file: &dyn ReadAt,
    path: &Path,
    buf: &mut [u8],
    offset: u64,
) -> Result<(), RepoError> {
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            corrupt(path, format!("truncated at offset {offset}"))
        } else {
            RepoError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind_core::Timestamp;

    #[test]
    fn ref_and_owned_records_agree() {
        let data = b"some bytes".to_vec();
        let id = ChunkId::of(&data);
        let bytes = postcard::to_stdvec(&PackRecordRef::Chunk {
            id,
            raw_len: 10,
            encoding: Encoding::Raw,
            data: &data,
        })
        .unwrap();
        match decode_record(&Crypt::plain(), Path::new("p"), &bytes).unwrap() {
            PackRecord::Chunk {
                id: got, data: d, ..
            } => {
                assert_eq!(got, id);
                assert_eq!(d, data);
            }
            other => panic!("{other:?}"),
        }
        let f = Footer {
            sealed_at: Timestamp(5),
            entries: vec![],
        };
        let bytes = postcard::to_stdvec(&PackRecordRef::Footer(&f)).unwrap();
        assert!(
            matches!(decode_record(&Crypt::plain(), Path::new("p"), &bytes).unwrap(), PackRecord::Footer(g) if g == f)
        );
        // Trailing garbage is refused, and so is nonsense.
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_record(&Crypt::plain(), Path::new("p"), &longer).is_err());
        assert!(decode_record(&Crypt::plain(), Path::new("p"), &[9, 9, 9]).is_err());
    }
}
