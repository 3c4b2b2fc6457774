//! Version records are stored zstd-compressed, in packs and in index files:
//! paths share long prefixes and metadata repeats, so a batch of versions
//! shrinks several times (51k versions of the benchmark tree: 7.6 MB raw,
//! about 1.4 MB compressed). Decompression is bounded by the frame limit, so
//! a damaged record cannot make a reader allocate without bound.

use std::io::Read;

use rewind_core::Version;
use rewind_core::frame::MAX_FRAME;
use serde::de::Error as _;
use serde::{Deserializer, Serializer};

/// zstd level for version records: they are small next to chunk data, so a
/// higher level than chunks costs nothing noticeable and saves space.
const LEVEL: i32 = 9;

/// postcard, then zstd.
pub(crate) fn encode(vs: &[Version]) -> Result<Vec<u8>, String> {
    let raw = postcard::to_stdvec(vs).map_err(|e| e.to_string())?;
    zstd::bulk::compress(&raw, LEVEL).map_err(|e| e.to_string())
}

/// The inverse of [`encode`], refusing more than [`MAX_FRAME`] bytes of
/// output.
pub(crate) fn decode(data: &[u8]) -> Result<Vec<Version>, String> {
    let mut raw = Vec::new();
    zstd::stream::read::Decoder::new(data)
        .map_err(|e| e.to_string())?
        .take(MAX_FRAME as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(|e| format!("zstd: {e}"))?;
    if raw.len() > MAX_FRAME {
        return Err("version record decompresses past the frame limit".into());
    }
    postcard::from_bytes(&raw).map_err(|e| e.to_string())
}

/// `#[serde(with = "zrec")]` for a `Vec<Version>` field.
pub(crate) fn serialize<S: Serializer>(vs: &[Version], s: S) -> Result<S::Ok, S::Error> {
    let bytes = encode(vs).map_err(serde::ser::Error::custom)?;
    s.serialize_bytes(&bytes)
}

/// See [`serialize`].
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Version>, D::Error> {
    let bytes = <serde_bytes::ByteBuf as serde::Deserialize>::deserialize(d)?.into_vec();
    decode(&bytes).map_err(D::Error::custom)
}

/// For borrowed slices in the write-side record type.
pub(crate) mod slice {
    use super::*;

    /// Serialize a borrowed slice of versions like [`super::serialize`].
    pub(crate) fn serialize<S: Serializer>(vs: &&[Version], s: S) -> Result<S::Ok, S::Error> {
        super::serialize(vs, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind_core::{Entry, Timestamp};

    #[test]
    fn round_trip_shrinks_and_garbage_is_an_error() {
        let vs: Vec<Version> = (0..500)
            .map(|i| Version {
                client: "host".into(),
                seq: i,
                observed_at: Timestamp(i as i64),
                path: format!("/home/user/Documents/project/src/file{i}.rs").into_bytes(),
                entry: Entry::Deleted,
            })
            .collect();
        let raw = postcard::to_stdvec(&vs).unwrap();
        let z = encode(&vs).unwrap();
        assert!(z.len() * 4 < raw.len(), "{} vs {}", z.len(), raw.len());
        assert_eq!(decode(&z).unwrap(), vs);
        assert!(decode(b"not zstd at all").is_err());
        // A bomb: many zeros compress to little but must not decode past the limit.
        let bomb = zstd::bulk::compress(&vec![0u8; MAX_FRAME + 10], 1).unwrap();
        assert!(decode(&bomb).is_err());
    }
}
