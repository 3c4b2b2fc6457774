//! The record ciphers a repository can be sealed with, named in its
//! config. Both take the same 24-byte random nonce and give a 16-byte tag,
//! so a sealed record's layout does not depend on the cipher.
//!
//! - `xchacha20poly1305`: XChaCha20-Poly1305 under the record key. The
//!   first encrypted repositories were made with it; it stays readable.
//! - `aes256gcm-subkey`: AES-256-GCM under a key of its own for every
//!   record, `blake3_keyed(record key, SUBKEY_DOMAIN ‖ nonce)`, with the
//!   nonce's first 12 bytes as GCM's nonce. A random 96-bit GCM nonce under
//!   one key is safe for about 2³² records only; deriving the key from all
//!   192 random bits makes a repeat as unlikely as XChaCha's, whatever the
//!   number of records. With AES-NI (or ARMv8's AES) it runs four to six
//!   times faster than XChaCha20-Poly1305 here, from 100-byte records to
//!   1 MiB chunks (docs/decisions.md, "AES-256-GCM with a key per record").
//!
//! GCM comes from `ring` (its assembly for AES-NI and carry-less
//! multiplication; the tree already builds it for TLS), XChaCha from
//! RustCrypto's `chacha20poly1305`.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::key::KEY_LEN;

/// Bytes of the random nonce at the start of a sealed record.
pub const NONCE_LEN: usize = 24;
/// Bytes of the authentication tag at the end of a sealed record.
pub const TAG_LEN: usize = 16;

/// What a record's key is derived under in `aes256gcm-subkey`; never
/// changes meaning.
const SUBKEY_DOMAIN: &[u8; 20] = b"rewind-aes-subkey-1\0";

/// Which cipher seals a repository's records.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Aead {
    /// XChaCha20-Poly1305 under the record key.
    XChaCha20Poly1305,
    /// AES-256-GCM under a key per record (see the module doc).
    Aes256GcmSubkey,
}

impl Aead {
    /// What a new repository is sealed with.
    pub const NEWEST: Aead = Aead::Aes256GcmSubkey;

    /// Its name in a repository's config.
    pub fn name(self) -> &'static str {
        match self {
            Aead::XChaCha20Poly1305 => "xchacha20poly1305",
            Aead::Aes256GcmSubkey => "aes256gcm-subkey",
        }
    }

    /// The cipher a config names; `None` for one this build does not know.
    pub fn from_name(name: &str) -> Option<Aead> {
        [Aead::XChaCha20Poly1305, Aead::Aes256GcmSubkey]
            .into_iter()
            .find(|a| a.name() == name)
    }
}

/// A cipher with its key. The key is wiped when dropped (RustCrypto's
/// cipher by its `zeroize` feature, the AES record key by `Zeroizing`;
/// ring's per-record key schedules live on the stack of one call).
pub(crate) enum Cipher {
    XChaCha(XChaCha20Poly1305),
    Aes(Zeroizing<[u8; KEY_LEN]>),
}

/// The cipher refused: too long a record to seal, or a tag that does not
/// match (the caller knows which).
pub(crate) struct Refused;

impl Cipher {
    pub(crate) fn new(aead: Aead, key: &[u8; KEY_LEN]) -> Cipher {
        match aead {
            Aead::XChaCha20Poly1305 => Cipher::XChaCha(XChaCha20Poly1305::new(key.into())),
            Aead::Aes256GcmSubkey => Cipher::Aes(Zeroizing::new(*key)),
        }
    }

    /// Encrypt `body` in place under `nonce` and `aad`; the tag.
    pub(crate) fn seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        body: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Refused> {
        match self {
            Cipher::XChaCha(c) => c
                .encrypt_in_place_detached(XNonce::from_slice(nonce), aad, body)
                .map(Into::into)
                .map_err(|_| Refused),
            Cipher::Aes(key) => {
                let (gcm, n) = record_key(key, nonce)?;
                let tag = gcm
                    .seal_in_place_separate_tag(n, Aad::from(aad), body)
                    .map_err(|_| Refused)?;
                let mut out = [0u8; TAG_LEN];
                out.copy_from_slice(tag.as_ref());
                Ok(out)
            }
        }
    }

    /// Decrypt `body` in place if `tag` is its tag under `nonce` and
    /// `aad`; on `Err`, `body` holds no plaintext the caller may use.
    pub(crate) fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        body: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Refused> {
        match self {
            Cipher::XChaCha(c) => c
                .decrypt_in_place_detached(XNonce::from_slice(nonce), aad, body, tag.into())
                .map_err(|_| Refused),
            Cipher::Aes(key) => {
                let (gcm, n) = record_key(key, nonce)?;
                gcm.open_in_place_separate_tag(n, Aad::from(aad), (*tag).into(), body, 0..)
                    .map(|_| ())
                    .map_err(|_| Refused)
            }
        }
    }
}

/// The AES-256-GCM key and GCM nonce of the record whose nonce is `nonce`.
fn record_key(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
) -> Result<(LessSafeKey, Nonce), Refused> {
    let sub = Zeroizing::new(
        *blake3::Hasher::new_keyed(key)
            .update(SUBKEY_DOMAIN)
            .update(nonce)
            .finalize()
            .as_bytes(),
    );
    let unbound = UnboundKey::new(&AES_256_GCM, &sub[..]).map_err(|_| Refused)?;
    let mut gcm_nonce = [0u8; 12];
    gcm_nonce.copy_from_slice(&nonce[..12]);
    Ok((
        LessSafeKey::new(unbound),
        Nonce::assume_unique_for_key(gcm_nonce),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_none() {
        for a in [Aead::XChaCha20Poly1305, Aead::Aes256GcmSubkey] {
            assert_eq!(Aead::from_name(a.name()), Some(a));
        }
        assert_eq!(Aead::from_name("aes256gcm"), None);
        assert_eq!(Aead::from_name(""), None);
    }

    /// Two records under the same nonce prefix but different nonces get
    /// different keys: their keystreams differ although GCM's 12-byte
    /// nonce is the same.
    #[test]
    fn the_aes_key_depends_on_the_whole_nonce() {
        let c = Cipher::new(Aead::Aes256GcmSubkey, &[5; KEY_LEN]);
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        let n1 = [1u8; NONCE_LEN];
        let mut n2 = n1;
        n2[NONCE_LEN - 1] ^= 1;
        let ta = c.seal(&n1, b"", &mut a).ok().unwrap();
        let tb = c.seal(&n2, b"", &mut b).ok().unwrap();
        assert_ne!(a, b);
        assert_ne!(ta, tb);
        assert!(c.open(&n2, b"", &mut a.clone(), &ta).is_err());
        assert!(c.open(&n1, b"", &mut a, &ta).is_ok());
        assert_eq!(a, [0u8; 64]);
    }

    /// The two ciphers are not interchangeable: a record sealed by one
    /// does not open under the other with the same key.
    #[test]
    fn a_record_opens_only_under_its_own_cipher() {
        let key = [9u8; KEY_LEN];
        let x = Cipher::new(Aead::XChaCha20Poly1305, &key);
        let g = Cipher::new(Aead::Aes256GcmSubkey, &key);
        let n = [3u8; NONCE_LEN];
        let mut body = *b"plaintext";
        let tag = x.seal(&n, b"ad", &mut body).ok().unwrap();
        assert!(g.open(&n, b"ad", &mut body.clone(), &tag).is_err());
        assert!(x.open(&n, b"ad", &mut body, &tag).is_ok());
        assert_eq!(&body, b"plaintext");
    }
}
