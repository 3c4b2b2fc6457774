//! Random bytes from the operating system (getrandom(2) on Linux,
//! `getentropy` on macOS), for keys, salts, nonces and slot ids. No
//! user-space generator sits between: nothing here needs more than a few
//! dozen bytes at a time, and the kernel's generator has no state of ours
//! to lose or repeat after a crash or a fork.

use crate::CryptoError;

/// `N` random bytes.
pub(crate) fn bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(CryptoError::Random)?;
    Ok(out)
}
