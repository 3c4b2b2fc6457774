//! The name of a pack and of its index file: 16 random bytes, spelt as 32
//! lowercase hex digits.
//!
//! A name parses back only from exactly that spelling (no uppercase, no
//! other length), and the paths of a pack (`DIR/packs/<2 hex>/<32 hex>.pack`)
//! and of its index (`DIR/index/<32 hex>.idx`) follow from the name alone.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The random name of a pack (and of its index file).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct PackName(pub [u8; 16]);

impl PackName {
    pub(crate) fn random() -> PackName {
        PackName(rand::random())
    }

    pub(crate) fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// Parse 32 lowercase hex digits.
    pub(crate) fn parse(s: &str) -> Option<PackName> {
        if s.len() != 32 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(PackName(out))
    }

    /// `DIR/packs/<2 hex>/<32 hex>.pack`
    pub(crate) fn pack_path(self, dir: &Path) -> PathBuf {
        let h = self.to_hex();
        dir.join("packs").join(&h[..2]).join(format!("{h}.pack"))
    }

    /// `DIR/index/<32 hex>.idx`
    pub(crate) fn idx_path(self, dir: &Path) -> PathBuf {
        dir.join("index").join(format!("{}.idx", self.to_hex()))
    }
}

impl fmt::Display for PackName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PackName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PackName({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_parse() {
        let n = PackName::random();
        assert_eq!(PackName::parse(&n.to_hex()), Some(n));
        assert_eq!(PackName::parse("zz"), None);
        assert_eq!(PackName::parse(&n.to_hex().to_uppercase()), None);
    }
}
