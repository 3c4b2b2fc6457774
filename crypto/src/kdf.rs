//! Key-encryption keys: what a key slot seals the master keys under.
//!
//! - From a password: argon2id (RFC 9106) with the slot's own parameters
//!   and 32-byte random salt, so parameters can be raised for new slots
//!   while old slots keep opening.
//! - From a key file: `blake3::derive_key` of the file's 32 random bytes
//!   and the slot's salt. The file is already full-entropy, so a slow
//!   function would buy nothing; the salt makes the same file give a
//!   different key in every slot and repository.

use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

use crate::CryptoError;
use crate::key::KEY_LEN;
use crate::key_file::KeyFileKey;

/// Bytes of a slot's salt.
pub const SALT_LEN: usize = 32;

/// The context string of key-file derivation (blake3's rule: a hardcoded,
/// globally unique string, never changed).
const KEY_FILE_CONTEXT: &str = "rewind 2026-12-06 key slot from a key file";

/// argon2id cost parameters, as stored in a password slot.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Argon2Params {
    m_kib: u32,
    t: u32,
    p: u32,
}

impl Argon2Params {
    /// What new password slots get: 64 MiB, 3 passes, 1 lane, the second
    /// recommended option of RFC 9106 (section 4) with one lane, since the
    /// argon2 crate computes lanes one after another (more lanes would only
    /// cost time, not the attacker). About 0.2 s here (a test build,
    /// whose dependencies are optimised, on a shared 2-core machine:
    /// `a_slot_with_the_default_parameters_opens`); opening pays it once
    /// per password slot tried.
    pub const DEFAULT: Argon2Params = Argon2Params {
        m_kib: 64 * 1024,
        t: 3,
        p: 1,
    };

    /// The most memory a slot may ask for, 1 GiB: a damaged or hostile
    /// slot file must not make `open` allocate without bound.
    pub const MAX_M_KIB: u32 = 1024 * 1024;
    /// The most passes a slot may ask for (256: minutes, not days).
    pub const MAX_T: u32 = 256;
    /// The most lanes a slot may ask for.
    pub const MAX_P: u32 = 16;

    /// Parameters of one's choosing, within the bounds above and
    /// argon2's own (m at least 8 KiB per lane, t and p at least 1).
    /// Tests use small ones (`Argon2Params::new(64, 1, 1)`); a command
    /// that offers them should warn below [`Argon2Params::DEFAULT`].
    pub fn new(m_kib: u32, t: u32, p: u32) -> Result<Argon2Params, CryptoError> {
        let bad = |reason| CryptoError::KdfParams {
            m_kib,
            t,
            p,
            reason,
        };
        if p == 0 || p > Self::MAX_P {
            return Err(bad("lanes out of 1..=16"));
        }
        if t == 0 || t > Self::MAX_T {
            return Err(bad("passes out of 1..=256"));
        }
        if m_kib < 8 * p || m_kib > Self::MAX_M_KIB {
            return Err(bad("memory out of 8 KiB per lane ..= 1 GiB"));
        }
        Ok(Argon2Params { m_kib, t, p })
    }

    /// Memory in KiB.
    pub fn m_kib(&self) -> u32 {
        self.m_kib
    }

    /// Passes.
    pub fn t(&self) -> u32 {
        self.t
    }

    /// Lanes.
    pub fn p(&self) -> u32 {
        self.p
    }
}

/// argon2id of `password` and `salt`.
pub(crate) fn from_password(
    password: &[u8],
    salt: &[u8; SALT_LEN],
    params: Argon2Params,
) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
    let p = Params::new(params.m_kib, params.t, params.p, Some(KEY_LEN))
        .map_err(|e| CryptoError::Kdf(e.to_string()))?;
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, p)
        .hash_password_into(password, salt, &mut out[..])
        .map_err(|e| CryptoError::Kdf(e.to_string()))?;
    Ok(out)
}

/// `blake3::derive_key` of the key file's bytes and `salt`.
pub(crate) fn from_key_file(key: &KeyFileKey, salt: &[u8; SALT_LEN]) -> Zeroizing<[u8; KEY_LEN]> {
    let mut material = Zeroizing::new([0u8; KEY_LEN + SALT_LEN]);
    material[..KEY_LEN].copy_from_slice(key.bytes());
    material[KEY_LEN..].copy_from_slice(salt);
    Zeroizing::new(blake3::derive_key(KEY_FILE_CONTEXT, &material[..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_out_of_bounds_are_refused() {
        assert!(Argon2Params::new(64, 1, 1).is_ok());
        assert!(Argon2Params::new(8, 1, 1).is_ok());
        assert!(Argon2Params::new(7, 1, 1).is_err());
        assert!(Argon2Params::new(15, 1, 2).is_err());
        assert!(Argon2Params::new(64, 0, 1).is_err());
        assert!(Argon2Params::new(64, 257, 1).is_err());
        assert!(Argon2Params::new(64, 1, 0).is_err());
        assert!(Argon2Params::new(1024, 1, 17).is_err());
        assert!(Argon2Params::new(Argon2Params::MAX_M_KIB + 1, 1, 1).is_err());
        let d = Argon2Params::DEFAULT;
        assert_eq!(Argon2Params::new(d.m_kib(), d.t(), d.p()).unwrap(), d);
    }

    #[test]
    fn password_keys_depend_on_password_salt_and_parameters() {
        let small = Argon2Params::new(64, 1, 1).unwrap();
        let k = |pw: &[u8], salt: u8, params| *from_password(pw, &[salt; 32], params).unwrap();
        let base = k(b"pw", 1, small);
        assert_eq!(base, k(b"pw", 1, small));
        assert_ne!(base, k(b"pW", 1, small));
        assert_ne!(base, k(b"pw", 2, small));
        assert_ne!(base, k(b"pw", 1, Argon2Params::new(64, 2, 1).unwrap()));
    }

    #[test]
    fn the_password_key_is_argon2id_version_0x13() {
        // The same bytes as the crate's PHC-string path for `argon2id`,
        // `v=19`: a change of algorithm or version here would make every
        // existing password slot unreadable, and fails this test.
        use argon2::PasswordHasher;
        let params = Argon2Params::new(64, 2, 1).unwrap();
        let salt = [5u8; 32];
        let ours = from_password(b"password", &salt, params).unwrap();
        let p = Params::new(64, 2, 1, Some(32)).unwrap();
        let salt_b64 = argon2::password_hash::SaltString::encode_b64(&salt).unwrap();
        let phc = Argon2::new(Algorithm::Argon2id, Version::V0x13, p)
            .hash_password(b"password", &salt_b64)
            .unwrap();
        assert_eq!(phc.algorithm.as_str(), "argon2id");
        assert_eq!(phc.hash.unwrap().as_bytes(), &ours[..]);
    }
}
