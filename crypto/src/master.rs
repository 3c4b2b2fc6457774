//! The repository's master keys: one to seal records, one to name chunks.
//! Both are random, made once at `init`, and reach the disk only sealed
//! inside key slots.

use std::fmt;

use zeroize::Zeroizing;

use crate::aead::Aead;
use crate::chunk_id::ChunkIdKey;
use crate::key::KEY_LEN;
use crate::seal::{RepoId, Sealer};
use crate::{CryptoError, random};

/// The length of the two keys as stored inside a key slot (the record key,
/// then the chunk-id key).
pub(crate) const MASTER_LEN: usize = 2 * KEY_LEN;

/// The repository's master keys. Wiped from memory when dropped; its
/// `Debug` shows no key bytes; it has no `Clone`, so one copy exists per
/// opening.
pub struct MasterKey {
    record: Zeroizing<[u8; KEY_LEN]>,
    chunk_id: ChunkIdKey,
}

impl MasterKey {
    /// Two fresh random keys from the operating system's generator.
    pub fn generate() -> Result<MasterKey, CryptoError> {
        let record = Zeroizing::new(random::bytes::<KEY_LEN>()?);
        let chunk_id = Zeroizing::new(random::bytes::<KEY_LEN>()?);
        Ok(MasterKey::from_parts(&record, &chunk_id))
    }

    fn from_parts(record: &[u8; KEY_LEN], chunk_id: &[u8; KEY_LEN]) -> MasterKey {
        MasterKey {
            record: Zeroizing::new(*record),
            chunk_id: ChunkIdKey::new(chunk_id),
        }
    }

    /// The sealer of records of the repository `repo`, whose config names
    /// `aead`.
    pub fn sealer(&self, repo: RepoId, aead: Aead) -> Sealer {
        Sealer::new(&self.record, aead, repo)
    }

    /// The key that names chunks.
    pub fn chunk_id_key(&self) -> &ChunkIdKey {
        &self.chunk_id
    }

    /// The 64 bytes a key slot seals.
    pub(crate) fn to_bytes(&self) -> Zeroizing<[u8; MASTER_LEN]> {
        let mut out = Zeroizing::new([0u8; MASTER_LEN]);
        out[..KEY_LEN].copy_from_slice(&self.record[..]);
        out[KEY_LEN..].copy_from_slice(self.chunk_id.bytes());
        out
    }

    /// The inverse of [`MasterKey::to_bytes`]; `None` unless `bytes` is
    /// exactly [`MASTER_LEN`] long.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<MasterKey> {
        if bytes.len() != MASTER_LEN {
            return None;
        }
        let mut record = Zeroizing::new([0u8; KEY_LEN]);
        let mut chunk_id = Zeroizing::new([0u8; KEY_LEN]);
        record.copy_from_slice(&bytes[..KEY_LEN]);
        chunk_id.copy_from_slice(&bytes[KEY_LEN..]);
        Some(MasterKey::from_parts(&record, &chunk_id))
    }

    /// Whether two openings gave the same keys (for tests and for a
    /// `key add` that checks the slot it wrote), compared in constant
    /// time.
    pub fn same_as(&self, other: &MasterKey) -> bool {
        let (a, b) = (self.to_bytes(), other.to_bytes());
        a.iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_master_keys_differ_and_their_bytes_round_trip() {
        let a = MasterKey::generate().unwrap();
        let b = MasterKey::generate().unwrap();
        assert!(!a.same_as(&b));
        let back = MasterKey::from_bytes(&a.to_bytes()[..]).unwrap();
        assert!(back.same_as(&a));
        assert!(MasterKey::from_bytes(&[0u8; MASTER_LEN - 1]).is_none());
        assert_ne!(a.to_bytes()[..KEY_LEN], a.to_bytes()[KEY_LEN..]);
    }

    #[test]
    fn debug_shows_no_key_bytes() {
        let k = MasterKey::generate().unwrap();
        let shown = format!("{k:?} {:?}", k.chunk_id_key());
        let bytes = k.to_bytes();
        assert!(!shown.contains(&hex::encode(&bytes[..4])));
        assert!(!shown.contains(&hex::encode(&bytes[KEY_LEN..KEY_LEN + 4])));
        assert_eq!(shown, "MasterKey(..) ChunkIdKey(..)");
    }
}
