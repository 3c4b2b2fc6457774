//! Sealing records with the repository's cipher ([`Aead`]).
//!
//! A sealed record is `nonce (24 bytes) ‖ ciphertext ‖ tag (16 bytes)`:
//! 40 bytes more than the plaintext, with either cipher. The nonce is
//! random for every record, so no counter has to survive a crash or be
//! shared between writers (a server and a `repair` may seal at the same
//! time); at 192 bits, random nonces do not repeat in any number of
//! records a repository will see.
//!
//! The associated data binds a record to where it belongs: the
//! repository's id, the record's kind, and a name (a chunk's id, a pack's
//! or a file's name). A record copied into another repository, another
//! kind, or under another name fails its tag like a damaged one:
//!
//! ```text
//! "rewind-seal-1\0" ‖ repository id (16) ‖ kind (1) ‖ name length (u32 LE) ‖ name
//! ```

use std::fmt;

use crate::aead::{Aead, Cipher, NONCE_LEN, TAG_LEN};
use crate::key::KEY_LEN;
use crate::{CryptoError, random};

/// How much longer a sealed record is than its plaintext.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// The domain prefix of every record's associated data; a later scheme
/// gets a new one, so no record sealed under one opens under another.
const DOMAIN: &[u8; 14] = b"rewind-seal-1\0";

/// A repository's id: the 16 random bytes behind the 32 hex digits of
/// `DIR/config`'s `id`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct RepoId(pub [u8; 16]);

impl RepoId {
    /// Parse 32 hex digits (the config's `id`).
    pub fn from_hex(s: &str) -> Option<RepoId> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(RepoId(out))
    }
}

/// What a record is; its byte is part of the associated data and never
/// changes meaning.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
#[repr(u8)]
pub enum RecordKind {
    /// A chunk's stored form in a pack; name: the chunk's id.
    Chunk = 1,
    /// A run of version records in a pack; name: the pack's name.
    Versions = 2,
    /// A pack's table of contents; name: the pack's name.
    PackFooter = 3,
    /// An index file; name: its pack's name.
    Index = 4,
    /// Any other repository file (retention, deletions, ...); name: its
    /// path relative to the repository.
    File = 5,
}

/// Seals and opens the records of one repository. Holds the record key
/// (the AEAD wipes it on drop); `Debug` shows only the repository id.
pub struct Sealer {
    cipher: Cipher,
    aead: Aead,
    repo: RepoId,
}

impl Sealer {
    pub(crate) fn new(key: &[u8; KEY_LEN], aead: Aead, repo: RepoId) -> Sealer {
        Sealer {
            cipher: Cipher::new(aead, key),
            aead,
            repo,
        }
    }

    /// The cipher this sealer seals and opens with.
    pub fn aead(&self) -> Aead {
        self.aead
    }

    /// The repository this sealer's records belong to.
    pub fn repo(&self) -> RepoId {
        self.repo
    }

    /// Seal `plaintext` as a record of `kind` named `name`.
    pub fn seal(
        &self,
        kind: RecordKind,
        name: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let aad = associated_data(self.repo, kind, name);
        let nonce = random::bytes::<NONCE_LEN>()?;
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .seal(&nonce, &aad, &mut out[NONCE_LEN..])
            .map_err(|_| CryptoError::SealFailed {
                len: plaintext.len(),
            })?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// [`Sealer::seal`] in place: `buf[at..at + NONCE_LEN]` is room for
    /// the nonce and `buf[at + NONCE_LEN..]` the plaintext, which becomes
    /// the ciphertext; the tag is appended. `buf[at..]` then holds exactly
    /// what `seal` returns, with no copy of the plaintext (a caller builds
    /// a whole frame around it).
    pub fn seal_in_place(
        &self,
        kind: RecordKind,
        name: &[u8],
        buf: &mut Vec<u8>,
        at: usize,
    ) -> Result<(), CryptoError> {
        let body = at + NONCE_LEN;
        if buf.len() < body {
            return Err(CryptoError::SealFailed { len: 0 });
        }
        let aad = associated_data(self.repo, kind, name);
        let nonce = random::bytes::<NONCE_LEN>()?;
        buf[at..body].copy_from_slice(&nonce);
        let len = buf.len() - body;
        let tag = self
            .cipher
            .seal(&nonce, &aad, &mut buf[body..])
            .map_err(|_| CryptoError::SealFailed { len })?;
        buf.extend_from_slice(&tag);
        Ok(())
    }

    /// Open a record sealed by [`Sealer::seal`] with the same kind and
    /// name. Any damage, another key, repository, kind or name gives
    /// [`CryptoError::Tag`]; nothing unauthenticated is returned.
    pub fn open(
        &self,
        kind: RecordKind,
        name: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < OVERHEAD {
            return Err(CryptoError::SealedTooShort { len: sealed.len() });
        }
        let aad = associated_data(self.repo, kind, name);
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let (Ok(nonce), Ok(tag)) = (nonce.try_into(), tag.try_into()) else {
            return Err(CryptoError::SealedTooShort { len: sealed.len() });
        };
        let mut out = body.to_vec();
        self.cipher
            .open(nonce, &aad, &mut out, tag)
            .map_err(|_| CryptoError::Tag)?;
        Ok(out)
    }
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Sealer({}, {})",
            hex::encode(self.repo.0),
            self.aead.name()
        )
    }
}

/// See the module doc for the layout.
fn associated_data(repo: RepoId, kind: RecordKind, name: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(DOMAIN.len() + 16 + 1 + 4 + name.len());
    aad.extend_from_slice(DOMAIN);
    aad.extend_from_slice(&repo.0);
    aad.push(kind as u8);
    // A name longer than 4 GiB is no name this crate is given; saturating
    // keeps the function total, and the name's bytes follow in full.
    aad.extend_from_slice(&u32::try_from(name.len()).unwrap_or(u32::MAX).to_le_bytes());
    aad.extend_from_slice(name);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_in_place_opens_as_a_sealed_record() {
        let master = crate::MasterKey::generate().unwrap();
        let s = master.sealer(RepoId([3; 16]), Aead::NEWEST);
        let mut buf = b"head".to_vec();
        buf.extend_from_slice(&[0; NONCE_LEN]);
        buf.extend_from_slice(b"some plaintext");
        s.seal_in_place(RecordKind::Chunk, b"id", &mut buf, 4)
            .unwrap();
        assert_eq!(&buf[..4], b"head");
        assert_eq!(buf.len(), 4 + OVERHEAD + 14);
        assert_eq!(
            s.open(RecordKind::Chunk, b"id", &buf[4..]).unwrap(),
            b"some plaintext"
        );
        assert!(s.open(RecordKind::Chunk, b"other", &buf[4..]).is_err());
        let mut short = vec![0; 10];
        assert!(
            s.seal_in_place(RecordKind::Chunk, b"id", &mut short, 0)
                .is_err()
        );
    }

    const REPO: RepoId = RepoId([9; 16]);

    /// Both ciphers: every property below holds for each.
    const AEADS: [Aead; 2] = [Aead::XChaCha20Poly1305, Aead::Aes256GcmSubkey];

    fn sealer(key: u8, repo: RepoId) -> Sealer {
        Sealer::new(&[key; KEY_LEN], Aead::NEWEST, repo)
    }

    fn sealers(key: u8, repo: RepoId) -> impl Iterator<Item = Sealer> {
        AEADS
            .into_iter()
            .map(move |a| Sealer::new(&[key; KEY_LEN], a, repo))
    }

    #[test]
    fn a_sealed_record_opens_to_its_plaintext() {
        for s in sealers(1, REPO) {
            a_sealed_record_opens_with(&s);
        }
    }

    fn a_sealed_record_opens_with(s: &Sealer) {
        for len in [0usize, 1, 63, 64, 65, 4096, 1 << 20] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let sealed = s.seal(RecordKind::Chunk, b"id", &plain).unwrap();
            assert_eq!(sealed.len(), len + OVERHEAD);
            if len >= 64 {
                assert!(!sealed.windows(32).any(|w| w == &plain[..32]));
            }
            assert_eq!(s.open(RecordKind::Chunk, b"id", &sealed).unwrap(), plain);
        }
    }

    #[test]
    fn sealing_twice_gives_different_bytes() {
        let s = sealer(1, REPO);
        let a = s.seal(RecordKind::File, b"retention", b"same").unwrap();
        let b = s.seal(RecordKind::File, b"retention", b"same").unwrap();
        assert_ne!(a, b);
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
    }

    #[test]
    fn every_flipped_bit_fails_the_tag() {
        for s in sealers(1, REPO) {
            every_flipped_bit_fails_with(&s);
        }
    }

    fn every_flipped_bit_fails_with(s: &Sealer) {
        let sealed = s
            .seal(RecordKind::Versions, b"pack", b"some versions")
            .unwrap();
        for byte in 0..sealed.len() {
            for bit in 0..8 {
                let mut bad = sealed.clone();
                bad[byte] ^= 1 << bit;
                assert!(matches!(
                    s.open(RecordKind::Versions, b"pack", &bad),
                    Err(CryptoError::Tag)
                ));
            }
        }
    }

    #[test]
    fn another_repository_kind_name_key_or_cipher_fails_the_tag() {
        let tag_err = |r: Result<Vec<u8>, CryptoError>| matches!(r, Err(CryptoError::Tag));
        for aead in AEADS {
            let with = |key: u8, repo| Sealer::new(&[key; KEY_LEN], aead, repo);
            let s = with(1, REPO);
            let sealed = s.seal(RecordKind::Chunk, b"abc", b"content").unwrap();
            assert!(tag_err(with(1, RepoId([8; 16])).open(
                RecordKind::Chunk,
                b"abc",
                &sealed
            )));
            assert!(tag_err(s.open(RecordKind::PackFooter, b"abc", &sealed)));
            assert!(tag_err(s.open(RecordKind::Chunk, b"abd", &sealed)));
            assert!(tag_err(s.open(RecordKind::Chunk, b"ab", &sealed)));
            assert!(tag_err(with(2, REPO).open(
                RecordKind::Chunk,
                b"abc",
                &sealed
            )));
            for other in AEADS.into_iter().filter(|o| *o != aead) {
                let o = Sealer::new(&[1; KEY_LEN], other, REPO);
                assert!(tag_err(o.open(RecordKind::Chunk, b"abc", &sealed)));
            }
        }
    }

    #[test]
    fn truncated_records_are_errors() {
        for s in sealers(1, REPO) {
            truncated_records_are_errors_with(&s);
        }
    }

    fn truncated_records_are_errors_with(s: &Sealer) {
        let sealed = s.seal(RecordKind::Chunk, b"", b"content").unwrap();
        for len in 0..sealed.len() {
            let r = s.open(RecordKind::Chunk, b"", &sealed[..len]);
            if len < OVERHEAD {
                assert!(matches!(r, Err(CryptoError::SealedTooShort { .. })));
            } else {
                assert!(matches!(r, Err(CryptoError::Tag)));
            }
        }
    }

    #[test]
    fn repo_ids_parse_from_the_config_hex() {
        let id = RepoId::from_hex("00112233445566778899aabbccddeeff").unwrap();
        assert_eq!(id.0[0], 0x00);
        assert_eq!(id.0[15], 0xff);
        assert!(RepoId::from_hex("0011").is_none());
        assert!(RepoId::from_hex("zz112233445566778899aabbccddeeff").is_none());
    }

    #[test]
    fn debug_shows_the_repository_not_the_key() {
        assert_eq!(
            format!("{:?}", sealer(0xab, REPO)),
            "Sealer(09090909090909090909090909090909, aes256gcm-subkey)"
        );
    }
}
