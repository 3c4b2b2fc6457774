//! rewind-crypto: encryption at rest (issue 20). The keys of an encrypted
//! repository and the operations on them, with no knowledge of where the
//! repository keeps its files: the repository crate stores what this crate
//! encodes and seals what this crate seals.
//!
//! - A **master key** ([`MasterKey`]): a random 32-byte record key and a
//!   separate random 32-byte chunk-id key, made once at `init`.
//! - **Key slots** ([`KeySlot`], [`Keyring`]): the master keys sealed
//!   under a key derived from a password (argon2id, parameters in the slot)
//!   or from a key file ([`KeyFileKey`]); any slot opens the repository;
//!   each slot is one small file whose bytes are documented in `slot.rs`.
//! - **Sealed records** ([`Sealer`]): the repository's cipher ([`Aead`]:
//!   AES-256-GCM under a key per record for new repositories,
//!   XChaCha20-Poly1305 for the first ones) with a random 24-byte nonce
//!   per record, and associated data naming the repository, the record's
//!   kind and its name.
//! - **Keyed chunk ids** ([`ChunkIdKey::chunk_id`]): blake3's keyed hash,
//!   the same 32 bytes as today's ids.
//! - **Passwords** ([`read_password`]): `REWIND_PASSWORD`,
//!   `REWIND_PASSWORD_FILE`, or the terminal.
//!
//! # Guarantees
//!
//! - A sealed record opens only under the key, repository id, kind and
//!   name it was sealed with; any other, and any changed bit, gives
//!   [`CryptoError::Tag`] and no plaintext.
//! - No two records share a nonce: each is 24 bytes from the operating
//!   system's generator, and no state is kept between records. Under
//!   AES-256-GCM every record also has a key of its own, derived from all
//!   24 bytes, so GCM's 96-bit nonce never repeats under one key.
//! - A key slot opens only with its password or key file; a wrong one gives
//!   [`CryptoError::WrongPassword`] or [`CryptoError::WrongKeyFile`].
//! - Every field of a key slot file is authenticated: one changed without
//!   the secret makes the slot unopenable, never opens it to other keys.
//! - Decoding a key slot file or opening a sealed record never panics and
//!   allocates no more than its input's size, whatever the bytes; a slot
//!   cannot ask argon2id for more than 1 GiB.
//! - [`Keyring::remove`] never removes the last slot.
//! - Key material (master keys, derived keys, key files, passwords) is
//!   wiped from memory when dropped, and no `Debug` or error message
//!   shows any of it.
//!
//! # After a crash
//!
//! This crate keeps no state: nothing of it needs recovering. A key file
//! is written with `create_new` and fsynced with its directory before
//! [`KeyFileKey::write_new`] returns; interrupted before that, the file is
//! absent or incomplete, and [`KeyFileKey::read`] refuses an incomplete
//! one. Writing slot files durably, and their order against the config,
//! is the repository's (see docs/decisions.md, "Encryption at rest
//! (issue 20), step 1").

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod aead;
mod chunk_id;
mod error;
mod kdf;
mod key;
mod key_file;
mod keyring;
mod master;
mod password;
mod random;
mod seal;
mod slot;

pub use aead::{Aead, NONCE_LEN, TAG_LEN};
pub use chunk_id::ChunkIdKey;
pub use error::CryptoError;
pub use kdf::{Argon2Params, SALT_LEN};
pub use key::KEY_LEN;
pub use key_file::KeyFileKey;
pub use keyring::{Keyring, Opened};
pub use master::MasterKey;
pub use password::{
    Env, PASSWORD_FILE_VAR, PASSWORD_VAR, Password, ProcessEnv, Prompt, Terminal,
    read_new_password, read_password,
};
pub use seal::{OVERHEAD, RecordKind, RepoId, Sealer};
pub use slot::{KeySlot, MAX_SLOT_FILE, SLOT_MAGIC, SLOT_VERSION, SlotId, SlotKind, SlotLabel};
