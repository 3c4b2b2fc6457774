//! One key slot: the master keys sealed under a key derived from a
//! password or a key file, and the file that holds it.
//!
//! # The key slot file, format version 1
//!
//! All integers little-endian; `n = 37 + h + u`.
//!
//! ```text
//! offset  bytes  field
//! 0       8      magic "RWKEYSLT"
//! 8       2      format version (u16) = 1
//! 10      4      slot id (random)
//! 14      8      created (i64, seconds since the Unix epoch)
//! 22      1      kind: 1 = password (argon2id), 2 = key file (blake3 derive_key)
//! 23      4      argon2id memory in KiB (u32; 0 for a key file)
//! 27      4      argon2id passes (u32; 0 for a key file)
//! 31      4      argon2id lanes (u32; 0 for a key file)
//! 35      1      host label length h (0..=255)
//! 36      h      host label, UTF-8
//! 36+h    1      user label length u (0..=255)
//! 37+h    u      user label, UTF-8
//! n       32     salt
//! n+32    24     nonce
//! n+56    80     XChaCha20-Poly1305 of the 64 master-key bytes (record key,
//!                then chunk-id key), tag last; associated data: bytes 0..n+32
//! n+136   4      CRC-32 (IEEE) of bytes 0..n+136
//! ```
//!
//! The file is exactly `n + 140` bytes. Every later version keeps bytes
//! 0..10 (magic, version), so any build tells a newer slot from damage and
//! says so ([`CryptoError::SlotVersion`]). The associated data covers every
//! field before the nonce: a slot whose id, time, kind, parameters, labels
//! or salt were changed does not open, as if the password were wrong; the
//! CRC tells damage from a wrong password without any secret, so `verify`
//! can check slots without opening them.

use std::fmt;
use std::str::FromStr;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::aead::{NONCE_LEN, TAG_LEN};
use crate::kdf::{Argon2Params, SALT_LEN};
use crate::key::KEY_LEN;
use crate::master::{MASTER_LEN, MasterKey};
use crate::{CryptoError, random};

/// The first bytes of every key slot file.
pub const SLOT_MAGIC: &[u8; 8] = b"RWKEYSLT";
/// The format version this build writes and reads.
pub const SLOT_VERSION: u16 = 1;

const KIND_PASSWORD: u8 = 1;
const KIND_KEY_FILE: u8 = 2;
const SEALED_LEN: usize = MASTER_LEN + TAG_LEN;
/// Bytes of a slot file besides its labels.
const FIXED_LEN: usize = 37 + SALT_LEN + NONCE_LEN + SEALED_LEN + 4;
/// The largest slot file (two labels of 255 bytes).
pub const MAX_SLOT_FILE: usize = FIXED_LEN + 2 * 255;

/// A slot's id: 4 random bytes, shown as 8 hex digits (short enough to
/// type in `rewind key remove`; unique within a repository, checked on
/// add).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotId(pub [u8; 4]);

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SlotId({self})")
    }
}

impl FromStr for SlotId {
    type Err = CryptoError;

    fn from_str(s: &str) -> Result<SlotId, CryptoError> {
        let mut out = [0u8; 4];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| CryptoError::NoSuchSlot { id: s.to_string() })?;
        Ok(SlotId(out))
    }
}

/// What opens a slot.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SlotKind {
    /// A password, through argon2id with these parameters.
    Password(Argon2Params),
    /// A key file.
    KeyFile,
}

/// Who a slot is for, as `rewind key list` shows it; free text, at most
/// 255 bytes each.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct SlotLabel {
    /// The host the slot was added on.
    pub host: String,
    /// The user who added it.
    pub user: String,
}

/// One key slot, as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySlot {
    id: SlotId,
    created: i64,
    kind: SlotKind,
    label: SlotLabel,
    salt: [u8; SALT_LEN],
    nonce: [u8; NONCE_LEN],
    sealed: [u8; SEALED_LEN],
}

impl KeySlot {
    /// Seal `master` under `kek` into a new slot.
    pub(crate) fn seal(
        master: &MasterKey,
        id: SlotId,
        created: i64,
        kind: SlotKind,
        label: SlotLabel,
        salt: [u8; SALT_LEN],
        kek: &[u8; KEY_LEN],
    ) -> Result<KeySlot, CryptoError> {
        for (field, text) in [("host", &label.host), ("user", &label.user)] {
            if text.len() > 255 {
                return Err(CryptoError::LabelTooLong {
                    field,
                    len: text.len(),
                });
            }
        }
        let mut slot = KeySlot {
            id,
            created,
            kind,
            label,
            salt,
            nonce: random::bytes::<NONCE_LEN>()?,
            sealed: [0; SEALED_LEN],
        };
        let aad = slot.header();
        let mut body = master.to_bytes();
        let tag = XChaCha20Poly1305::new(kek.into())
            .encrypt_in_place_detached(XNonce::from_slice(&slot.nonce), &aad, &mut body[..])
            .map_err(|_| CryptoError::SealFailed { len: MASTER_LEN })?;
        slot.sealed[..MASTER_LEN].copy_from_slice(&body[..]);
        slot.sealed[MASTER_LEN..].copy_from_slice(&tag);
        Ok(slot)
    }

    /// The master keys, if `kek` is this slot's key.
    pub(crate) fn unseal(&self, kek: &[u8; KEY_LEN]) -> Option<MasterKey> {
        let aad = self.header();
        let mut body = Zeroizing::new([0u8; MASTER_LEN]);
        body.copy_from_slice(&self.sealed[..MASTER_LEN]);
        XChaCha20Poly1305::new(kek.into())
            .decrypt_in_place_detached(
                XNonce::from_slice(&self.nonce),
                &aad,
                &mut body[..],
                Tag::from_slice(&self.sealed[MASTER_LEN..]),
            )
            .ok()?;
        MasterKey::from_bytes(&body[..])
    }

    /// The slot's id.
    pub fn id(&self) -> SlotId {
        self.id
    }

    /// When the slot was added, in seconds since the Unix epoch.
    pub fn created(&self) -> i64 {
        self.created
    }

    /// What opens it.
    pub fn kind(&self) -> SlotKind {
        self.kind
    }

    /// Who it is for.
    pub fn label(&self) -> &SlotLabel {
        &self.label
    }

    pub(crate) fn salt(&self) -> &[u8; SALT_LEN] {
        &self.salt
    }

    /// Bytes 0..n+32 of the file: everything before the nonce, which is
    /// also the associated data of the sealed keys.
    fn header(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_SLOT_FILE);
        out.extend_from_slice(SLOT_MAGIC);
        out.extend_from_slice(&SLOT_VERSION.to_le_bytes());
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.created.to_le_bytes());
        let (kind, m, t, p) = match self.kind {
            SlotKind::Password(a) => (KIND_PASSWORD, a.m_kib(), a.t(), a.p()),
            SlotKind::KeyFile => (KIND_KEY_FILE, 0, 0, 0),
        };
        out.push(kind);
        for v in [m, t, p] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for text in [&self.label.host, &self.label.user] {
            // Checked at `seal` and `decode`; the only ways a slot is made.
            let len = u8::try_from(text.len()).unwrap_or(u8::MAX);
            out.push(len);
            out.extend_from_slice(&text.as_bytes()[..usize::from(len)]);
        }
        out.extend_from_slice(&self.salt);
        out
    }

    /// The slot's file (see the module doc).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.header();
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.sealed);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Read a slot file. Any input gives a slot or an error, never a
    /// panic; nothing is allocated beyond the input's size.
    pub fn decode(bytes: &[u8]) -> Result<KeySlot, CryptoError> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(8)? != SLOT_MAGIC {
            return Err(r.bad(0, "not a key slot file (magic)"));
        }
        let version = u16::from_le_bytes(r.array()?);
        if version != SLOT_VERSION {
            return Err(CryptoError::SlotVersion { found: version });
        }
        if bytes.len() > MAX_SLOT_FILE {
            return Err(r.bad(MAX_SLOT_FILE, "longer than any key slot file"));
        }
        let (body, crc) = bytes.split_at(bytes.len().saturating_sub(4).max(10));
        if crc.len() != 4 || crc32fast::hash(body) != u32::from_le_bytes(array4(crc)) {
            return Err(CryptoError::SlotChecksum);
        }
        let mut r = Reader {
            bytes: body,
            at: 10,
        };
        let id = SlotId(r.array()?);
        let created = i64::from_le_bytes(r.array()?);
        let kind_at = r.at;
        let kind = r.take(1)?[0];
        let m = u32::from_le_bytes(r.array()?);
        let t = u32::from_le_bytes(r.array()?);
        let p = u32::from_le_bytes(r.array()?);
        let kind = match kind {
            KIND_PASSWORD => SlotKind::Password(
                Argon2Params::new(m, t, p)
                    .map_err(|_| r.bad(kind_at + 1, "argon2id parameters out of bounds"))?,
            ),
            KIND_KEY_FILE if (m, t, p) == (0, 0, 0) => SlotKind::KeyFile,
            KIND_KEY_FILE => return Err(r.bad(kind_at + 1, "key-file slot with parameters")),
            _ => return Err(r.bad(kind_at, "unknown slot kind")),
        };
        let host = r.label()?;
        let user = r.label()?;
        let salt = r.array()?;
        let nonce = r.array()?;
        let sealed = r.array()?;
        if r.at != body.len() {
            return Err(r.bad(r.at, "bytes after the sealed keys"));
        }
        Ok(KeySlot {
            id,
            created,
            kind,
            label: SlotLabel { host, user },
            salt,
            nonce,
            sealed,
        })
    }
}

impl fmt::Debug for KeySlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySlot")
            .field("id", &self.id)
            .field("created", &self.created)
            .field("kind", &self.kind)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

fn array4(b: &[u8]) -> [u8; 4] {
    let mut out = [0u8; 4];
    out.copy_from_slice(&b[..4]);
    out
}

/// A cursor over a slot file that reports where it ran out.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn bad(&self, offset: usize, reason: &'static str) -> CryptoError {
        CryptoError::SlotFormat { offset, reason }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CryptoError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(CryptoError::SlotFormat {
                offset: self.at,
                reason: "truncated",
            })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CryptoError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn label(&mut self) -> Result<String, CryptoError> {
        let at = self.at;
        let len = self.take(1)?[0];
        let text = self.take(usize::from(len))?;
        String::from_utf8(text.to_vec()).map_err(|_| self.bad(at + 1, "label is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(kind: SlotKind, label: SlotLabel) -> (MasterKey, KeySlot) {
        let master = MasterKey::generate().unwrap();
        let s = KeySlot::seal(
            &master,
            SlotId([1, 2, 3, 4]),
            1_765_000_000,
            kind,
            label,
            [7; SALT_LEN],
            &[3; KEY_LEN],
        )
        .unwrap();
        (master, s)
    }

    fn labelled() -> SlotLabel {
        SlotLabel {
            host: "laptop".into(),
            user: "ann".into(),
        }
    }

    #[test]
    fn a_slot_file_decodes_to_the_same_slot_and_opens() {
        for kind in [
            SlotKind::KeyFile,
            SlotKind::Password(Argon2Params::new(64, 1, 1).unwrap()),
        ] {
            let (master, s) = slot(kind, labelled());
            let bytes = s.encode();
            assert_eq!(bytes.len(), FIXED_LEN + 6 + 3);
            assert_eq!(&bytes[..8], SLOT_MAGIC);
            let back = KeySlot::decode(&bytes).unwrap();
            assert_eq!(back, s);
            assert_eq!(back.encode(), bytes);
            assert!(back.unseal(&[3; KEY_LEN]).unwrap().same_as(&master));
            assert!(back.unseal(&[4; KEY_LEN]).is_none());
        }
    }

    #[test]
    fn the_documented_offsets_hold() {
        let (_, s) = slot(
            SlotKind::Password(Argon2Params::new(64, 2, 1).unwrap()),
            SlotLabel::default(),
        );
        let b = s.encode();
        assert_eq!(b.len(), FIXED_LEN);
        assert_eq!(&b[8..10], &[1, 0]);
        assert_eq!(&b[10..14], &[1, 2, 3, 4]);
        assert_eq!(&b[14..22], &1_765_000_000i64.to_le_bytes());
        assert_eq!(b[22], KIND_PASSWORD);
        assert_eq!(&b[23..27], &64u32.to_le_bytes());
        assert_eq!(&b[27..31], &2u32.to_le_bytes());
        assert_eq!(&b[31..35], &1u32.to_le_bytes());
        assert_eq!((b[35], b[36]), (0, 0));
        assert_eq!(&b[37..69], &[7; SALT_LEN]);
        let n = b.len() - 4;
        assert_eq!(&b[n..], &crc32fast::hash(&b[..n]).to_le_bytes());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let (_, s) = slot(SlotKind::KeyFile, labelled());
        let bytes = s.encode();
        for len in 0..bytes.len() {
            assert!(KeySlot::decode(&bytes[..len]).is_err(), "{len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(KeySlot::decode(&longer).is_err());
    }

    #[test]
    fn a_flipped_bit_is_a_checksum_error() {
        let (_, s) = slot(SlotKind::KeyFile, labelled());
        let bytes = s.encode();
        for byte in 10..bytes.len() {
            let mut bad = bytes.clone();
            bad[byte] ^= 0x10;
            assert!(
                matches!(KeySlot::decode(&bad), Err(CryptoError::SlotChecksum)),
                "{byte}"
            );
        }
    }

    #[test]
    fn a_changed_field_with_a_fixed_checksum_does_not_open() {
        let (_, s) = slot(SlotKind::KeyFile, labelled());
        let bytes = s.encode();
        let n = bytes.len() - 4;
        // The id, the time, a label and the salt: each changed, the CRC
        // recomputed as an attacker would.
        for byte in [10, 14, 36, 37 + 6 + 5] {
            let mut bad = bytes[..n].to_vec();
            bad[byte] ^= 1;
            let crc = crc32fast::hash(&bad);
            bad.extend_from_slice(&crc.to_le_bytes());
            let decoded = KeySlot::decode(&bad).unwrap();
            assert!(decoded.unseal(&[3; KEY_LEN]).is_none(), "{byte}");
        }
    }

    #[test]
    fn garbage_newer_versions_and_bad_fields_are_errors() {
        assert!(matches!(
            KeySlot::decode(b"not a slot at all, just text"),
            Err(CryptoError::SlotFormat { offset: 0, .. })
        ));
        let (_, s) = slot(SlotKind::KeyFile, labelled());
        let mut newer = s.encode();
        newer[8] = 2;
        assert!(matches!(
            KeySlot::decode(&newer),
            Err(CryptoError::SlotVersion { found: 2 })
        ));
        let refix = |mut b: Vec<u8>| {
            let n = b.len() - 4;
            let crc = crc32fast::hash(&b[..n]);
            b[n..].copy_from_slice(&crc.to_le_bytes());
            b
        };
        let mut kind = s.encode();
        kind[22] = 9;
        assert!(matches!(
            KeySlot::decode(&refix(kind)),
            Err(CryptoError::SlotFormat { offset: 22, .. })
        ));
        let mut params = s.encode();
        params[23] = 1;
        assert!(KeySlot::decode(&refix(params)).is_err());
        let mut label = s.encode();
        label[36] = 0xff;
        assert!(matches!(
            KeySlot::decode(&refix(label)),
            Err(CryptoError::SlotFormat { .. })
        ));
        let mut huge = s.encode();
        huge.resize(MAX_SLOT_FILE + 1, 0);
        assert!(KeySlot::decode(&huge).is_err());
    }

    #[test]
    fn long_labels_are_refused_and_debug_shows_no_secret() {
        let master = MasterKey::generate().unwrap();
        let long = SlotLabel {
            host: "h".repeat(256),
            user: String::new(),
        };
        let r = KeySlot::seal(
            &master,
            SlotId([0; 4]),
            0,
            SlotKind::KeyFile,
            long,
            [0; 32],
            &[0; 32],
        );
        assert!(matches!(
            r,
            Err(CryptoError::LabelTooLong { field: "host", .. })
        ));
        let (_, s) = slot(SlotKind::KeyFile, labelled());
        let shown = format!("{s:?}");
        assert!(shown.contains("01020304"));
        assert!(!shown.contains("sealed") && !shown.contains("salt"));
    }

    #[test]
    fn slot_ids_parse_and_show_as_eight_hex_digits() {
        let id: SlotId = "0a0b0c0d".parse().unwrap();
        assert_eq!(id, SlotId([10, 11, 12, 13]));
        assert_eq!(id.to_string(), "0a0b0c0d");
        assert!("0a0b0c".parse::<SlotId>().is_err());
    }
}
