//! Key files: 32 random bytes that open a key slot instead of a password
//! (for servers, scripts, and a copy kept offline).
//!
//! On disk a key file is one line of text, so it can be printed, copied or
//! typed back:
//!
//! ```text
//! rewind-key-file-1 <64 lowercase hex digits>\n
//! ```
//!
//! It is written with `create_new` (never over an existing file), mode
//! 0600 on Unix, and fsynced with its directory before the call returns.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use zeroize::Zeroizing;

use crate::key::KEY_LEN;
use crate::{CryptoError, random};

/// The first word of a key file's line.
const PREFIX: &str = "rewind-key-file-1 ";

/// A key file is under 100 bytes; reading stops past this.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// The secret of a key file. Wiped on drop; `Debug` shows no bytes.
pub struct KeyFileKey(Zeroizing<[u8; KEY_LEN]>);

impl KeyFileKey {
    /// 32 fresh random bytes.
    pub fn generate() -> Result<KeyFileKey, CryptoError> {
        Ok(KeyFileKey(Zeroizing::new(random::bytes::<KEY_LEN>()?)))
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The file's text.
    fn to_text(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::with_capacity(PREFIX.len() + 2 * KEY_LEN + 1));
        s.push_str(PREFIX);
        s.push_str(&Zeroizing::new(hex::encode(&self.0[..])));
        s.push('\n');
        s
    }

    /// Parse a key file's text; `None` unless it is exactly one such line
    /// (trailing whitespace allowed).
    fn from_text(text: &[u8]) -> Option<KeyFileKey> {
        let text = std::str::from_utf8(text).ok()?.trim_end();
        let digits = text.strip_prefix(PREFIX)?;
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        hex::decode_to_slice(digits, &mut key[..]).ok()?;
        Some(KeyFileKey(key))
    }

    /// Write a new key file at `path` (refusing an existing one), durably.
    pub fn write_new(&self, path: &Path) -> Result<(), CryptoError> {
        let io = |source| CryptoError::KeyFileIo {
            path: path.to_path_buf(),
            source,
        };
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(io)?;
        f.write_all(self.to_text().as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)
    }

    /// Read the key file at `path`.
    pub fn read(path: &Path) -> Result<KeyFileKey, CryptoError> {
        let mut text = Zeroizing::new(Vec::new());
        File::open(path)
            .and_then(|f| f.take(MAX_KEY_FILE_BYTES).read_to_end(&mut text))
            .map_err(|source| CryptoError::KeyFileIo {
                path: path.to_path_buf(),
                source,
            })?;
        KeyFileKey::from_text(&text).ok_or_else(|| CryptoError::KeyFileFormat {
            path: path.to_path_buf(),
        })
    }
}

impl fmt::Debug for KeyFileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyFileKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_written_reads_back_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let k = KeyFileKey::generate().unwrap();
        k.write_new(&path).unwrap();
        let back = KeyFileKey::read(&path).unwrap();
        assert_eq!(back.bytes(), k.bytes());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("rewind-key-file-1 "));
        assert_eq!(text.len(), PREFIX.len() + 64 + 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn an_existing_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, b"precious").unwrap();
        let err = KeyFileKey::generate()
            .unwrap()
            .write_new(&path)
            .unwrap_err();
        assert!(matches!(err, CryptoError::KeyFileIo { .. }));
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }

    #[test]
    fn other_files_are_not_key_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let good = format!("{PREFIX}{}", "ab".repeat(32));
        for text in [
            String::new(),
            "hunter2\n".to_string(),
            "ab".repeat(32),
            format!("{PREFIX}{}", "ab".repeat(31)),
            format!("{PREFIX}{}", "zz".repeat(32)),
            format!("{good}\nmore"),
            format!(" {good}"),
        ] {
            std::fs::write(&path, &text).unwrap();
            assert!(
                matches!(
                    KeyFileKey::read(&path),
                    Err(CryptoError::KeyFileFormat { .. })
                ),
                "{text:?}"
            );
        }
        std::fs::write(&path, format!("{good}\r\n")).unwrap();
        assert_eq!(KeyFileKey::read(&path).unwrap().bytes(), &[0xab; 32]);
        assert!(matches!(
            KeyFileKey::read(&dir.path().join("missing")),
            Err(CryptoError::KeyFileIo { .. })
        ));
    }
}
