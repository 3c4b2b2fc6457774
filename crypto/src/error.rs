//! The one error type of the crate.

use std::io;
use std::path::PathBuf;

/// Why a cryptographic step failed. Messages never contain key material
/// or passwords.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The operating system's random number generator failed.
    #[error("the system's random number generator failed: {0}")]
    Random(getrandom::Error),
    /// A sealed record is shorter than a nonce and a tag.
    #[error("sealed record of {len} bytes is shorter than its nonce and tag")]
    SealedTooShort {
        /// Its length.
        len: usize,
    },
    /// A sealed record fails its authentication tag: damaged, tampered
    /// with, sealed under another key, or moved from another place
    /// (repository, kind or name in its associated data).
    #[error(
        "sealed record fails its authentication tag (damaged, tampered with, or not from here)"
    )]
    Tag,
    /// Sealing failed (the plaintext is over the AEAD's limit).
    #[error("sealing failed: plaintext of {len} bytes is too long")]
    SealFailed {
        /// The plaintext's length.
        len: usize,
    },
    /// A key slot file does not have the expected layout.
    #[error("key slot file: {reason} (at byte {offset})")]
    SlotFormat {
        /// Where the problem was found.
        offset: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// A key slot file of a format version this build does not know.
    #[error("key slot file of format version {found}; this build reads version 1")]
    SlotVersion {
        /// The version in the file.
        found: u16,
    },
    /// A key slot file fails its checksum (damaged or truncated).
    #[error("key slot file fails its checksum (damaged or truncated)")]
    SlotChecksum,
    /// No password slot opens with the password given.
    #[error("wrong password: none of the {tried} password key slots opens with it")]
    WrongPassword {
        /// How many password slots were tried.
        tried: usize,
    },
    /// No key-file slot opens with the key file given.
    #[error("wrong key file: none of the {tried} key-file key slots opens with it")]
    WrongKeyFile {
        /// How many key-file slots were tried.
        tried: usize,
    },
    /// Removing this slot would leave the repository with none.
    #[error("key slot {id} is the last one; removing it would make the repository unreadable")]
    LastSlot {
        /// The slot's id.
        id: String,
    },
    /// No slot has this id.
    #[error("no key slot {id}")]
    NoSuchSlot {
        /// The id asked for.
        id: String,
    },
    /// Argon2id parameters out of the accepted range.
    #[error("argon2id parameters m={m_kib} KiB, t={t}, p={p}: {reason}")]
    KdfParams {
        /// Memory in KiB.
        m_kib: u32,
        /// Iterations.
        t: u32,
        /// Lanes.
        p: u32,
        /// Which bound was broken.
        reason: &'static str,
    },
    /// Argon2id itself failed.
    #[error("argon2id failed: {0}")]
    Kdf(String),
    /// A slot label (host or user) is over 255 bytes.
    #[error("key slot label {field} is {len} bytes (at most 255)")]
    LabelTooLong {
        /// `host` or `user`.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// Reading or writing a key file failed.
    #[error("key file {}: {source}", path.display())]
    KeyFileIo {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A file that is not a rewind key file.
    #[error("{} is not a rewind key file (expected one line: rewind-key-file-1 and 64 hex digits)", path.display())]
    KeyFileFormat {
        /// The file.
        path: PathBuf,
    },
    /// No password source is available.
    #[error("no password: set REWIND_PASSWORD or REWIND_PASSWORD_FILE")]
    NoPassword,
    /// Reading `REWIND_PASSWORD_FILE` failed.
    #[error("password file {} (REWIND_PASSWORD_FILE): {source}", path.display())]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The password given is empty.
    #[error("empty password from {from}: an empty password is not accepted")]
    EmptyPassword {
        /// Where it came from.
        from: &'static str,
    },
    /// A new password typed twice did not match.
    #[error("the passwords typed do not match")]
    PasswordsDiffer,
    /// The terminal prompt failed.
    #[error("reading a password at the terminal: {0}")]
    Prompt(io::Error),
}

impl CryptoError {
    /// True when the cause is a secret that does not fit (wrong password
    /// or key file), as opposed to damaged data or a failing system: a
    /// command can ask again.
    pub fn is_wrong_secret(&self) -> bool {
        matches!(
            self,
            CryptoError::WrongPassword { .. } | CryptoError::WrongKeyFile { .. }
        )
    }

    /// True when the cause is damaged or foreign bytes (a sealed record or
    /// a key slot file), the kind of failure `verify` reports.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            CryptoError::SealedTooShort { .. }
                | CryptoError::Tag
                | CryptoError::SlotFormat { .. }
                | CryptoError::SlotChecksum
        )
    }
}
