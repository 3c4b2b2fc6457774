//! Keyed chunk ids: `blake3::keyed_hash(chunk-id key, content)`. The same
//! 32 bytes as today's `rewind_core::ChunkId` (`blake3::hash(content)`),
//! so the index, packs and wire types keep their shape; but without the
//! key, a stored id says nothing about the content (no one can test
//! whether a repository holds a known file by hashing it).

use std::fmt;

use zeroize::Zeroizing;

use crate::key::KEY_LEN;

/// The key that names chunks. Wiped on drop; `Debug` shows no bytes.
pub struct ChunkIdKey(Zeroizing<[u8; KEY_LEN]>);

impl ChunkIdKey {
    pub(crate) fn new(key: &[u8; KEY_LEN]) -> ChunkIdKey {
        ChunkIdKey(Zeroizing::new(*key))
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The id of a chunk with this content: 32 bytes, to be wrapped as
    /// `rewind_core::ChunkId(..)` (this crate stays below core, so it
    /// does not name the type).
    pub fn chunk_id(&self, data: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.0, data).as_bytes()
    }

    /// A second copy of this key, for a second owner (the repository
    /// keeps one, the capture that names chunks for it another). Still
    /// wiped on drop; deliberately a method rather than `Clone`, so that
    /// every copy of key material is visible where it is made.
    pub fn duplicate(&self) -> ChunkIdKey {
        ChunkIdKey::new(&self.0)
    }

    /// The key as 64 hex digits, to hand to a party that must name chunks
    /// like the repository (a server's enrolled clients, over their pinned
    /// TLS channel); wiped when dropped.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(&self.0[..]))
    }

    /// A key received as [`ChunkIdKey::to_hex`] gave it; `None` unless
    /// 64 hex digits.
    pub fn from_hex(s: &str) -> Option<ChunkIdKey> {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        hex::decode_to_slice(s, &mut k[..]).ok()?;
        Some(ChunkIdKey::new(&k))
    }

    /// A streaming hasher that ends in the same id as
    /// [`ChunkIdKey::chunk_id`] of everything fed to it.
    pub fn hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.0)
    }
}

impl fmt::Debug for ChunkIdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChunkIdKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_ids_differ_from_plain_blake3_and_between_keys() {
        let a = ChunkIdKey::new(&[1; 32]);
        let b = ChunkIdKey::new(&[2; 32]);
        let data = b"the same content";
        let plain = *blake3::hash(data).as_bytes();
        assert_ne!(a.chunk_id(data), plain);
        assert_ne!(a.chunk_id(data), b.chunk_id(data));
        assert_eq!(a.chunk_id(data), a.chunk_id(data));
        assert_ne!(a.chunk_id(data), a.chunk_id(b"other content"));
    }

    #[test]
    fn a_key_survives_hex_and_a_duplicate_and_bad_hex_is_refused() {
        let k = ChunkIdKey::new(&[9; 32]);
        let back = ChunkIdKey::from_hex(&k.to_hex()).unwrap();
        assert_eq!(back.chunk_id(b"x"), k.chunk_id(b"x"));
        assert_eq!(k.duplicate().chunk_id(b"x"), k.chunk_id(b"x"));
        assert!(ChunkIdKey::from_hex("09").is_none());
        assert!(ChunkIdKey::from_hex(&"zz".repeat(32)).is_none());
    }

    #[test]
    fn the_streaming_hasher_gives_the_same_id() {
        let k = ChunkIdKey::new(&[7; 32]);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut h = k.hasher();
        for piece in data.chunks(4096) {
            h.update(piece);
        }
        assert_eq!(*h.finalize().as_bytes(), k.chunk_id(&data));
    }
}
