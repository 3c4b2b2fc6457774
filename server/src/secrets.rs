//! Secrets: making them, storing them hashed, checking them.
//!
//! Enrollment tokens, client keys and the admin secret are 256-bit random
//! values shown once; only their argon2id hashes are stored. Checking a
//! secret against its hash, and comparing two digests, take the same time
//! whatever the bytes; a damaged hash never matches. One argon2 runs at a
//! time in the process.

use std::sync::Mutex;

use anyhow::{Result, anyhow};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// A fresh secret: 32 random bytes as hex.
pub fn new_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The argon2id hash of a secret, as a PHC string.
pub fn hash_secret(secret: &str) -> Result<String> {
    let _one = ARGON2_GATE.lock().unwrap_or_else(|e| e.into_inner());
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| anyhow!("argon2 salt: {e}"))?;
    Ok(Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map_err(|e| anyhow!("argon2: {e}"))?
        .to_string())
}

/// One argon2 computation at a time: each takes 19 MiB and ~20 ms, and
/// many clients reconnecting at once (a server restart) would otherwise
/// take memory the allocator keeps (measured: 19 MiB per concurrent first
/// authentication, docs/benchmarks.md).
static ARGON2_GATE: Mutex<()> = Mutex::new(());

/// True when `secret` matches the stored hash (argon2 compares in
/// constant time). A damaged hash never matches.
pub fn verify_secret(secret: &str, hash: &str) -> bool {
    let _one = ARGON2_GATE.lock().unwrap_or_else(|e| e.into_inner());
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(secret.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Constant-time equality of two digests.
pub(crate) fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_their_secret() {
        let s = new_secret();
        assert_eq!(s.len(), 64);
        let h = hash_secret(&s).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_secret(&s, &h));
        assert!(!verify_secret(&new_secret(), &h));
        assert!(!verify_secret(&s, "not a hash"));
    }
}
