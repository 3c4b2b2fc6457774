//! The sled key layout and the small records stored under it.
//!
//! One tree, one byte of prefix per kind of record:
//! - `v` + seq: a captured version not yet in the repository
//!   ([`Version::to_bytes`](rewind_core::Version::to_bytes)); the seq is
//!   big-endian, so versions sort in seq order;
//! - `s` + path: the last-known state of a path (see `states`);
//! - `c` + chunk id: where a spooled chunk lives ([`ChunkLoc`]);
//! - `m` + name: counters and settings (`client`, `next_seq`,
//!   `reserved_seq`, `cursor`, `last_capture`, `last_upload`, `roots`,
//!   `dictionary`, `skipped`); numbers are 8 bytes big-endian.
//!
//! Invariants kept here:
//! - keys of one kind share their prefix and no other key has it, so a
//!   prefix scan sees exactly one kind;
//! - these encodings are the on-disk format of every journal written so
//!   far: a change needs a new key name, never a new meaning for an old one.

use rewind_core::ChunkId;
use serde::{Deserialize, Serialize};

use crate::error::{JournalError, Result};

/// Prefix of version records.
pub(crate) const VERSION: u8 = b'v';
/// Prefix of last-known state records.
pub(crate) const STATE: u8 = b's';
/// Prefix of chunk location records.
pub(crate) const CHUNK: u8 = b'c';

/// Where a spooled chunk lives: a frame in a spool segment file.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct ChunkLoc {
    pub(crate) segment: u64,
    pub(crate) offset: u64,
    pub(crate) len: u32,
}

fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(rest.len() + 1);
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

pub(crate) fn seq_key(seq: u64) -> Vec<u8> {
    key(VERSION, &seq.to_be_bytes())
}

/// The seq a version key names.
pub(crate) fn seq_of(k: &[u8]) -> Result<u64> {
    let b = k
        .get(1..9)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .ok_or_else(|| JournalError::Corrupt {
            key: format!("{k:?}"),
            reason: "bad version key".into(),
        })?;
    Ok(u64::from_be_bytes(b))
}

pub(crate) fn state_key(path: &[u8]) -> Vec<u8> {
    key(STATE, path)
}

pub(crate) fn chunk_key(id: &ChunkId) -> Vec<u8> {
    key(CHUNK, &id.0)
}

pub(crate) fn meta_key(name: &str) -> Vec<u8> {
    key(b'm', name.as_bytes())
}

/// The counter `name` (0 when never set).
pub(crate) fn get_u64(db: &sled::Db, name: &str, dir: &std::path::Path) -> Result<u64> {
    let v = db.get(meta_key(name)).map_err(|source| JournalError::Db {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(match v {
        Some(v) => {
            u64::from_be_bytes(v.as_ref().try_into().map_err(|_| JournalError::Corrupt {
                key: name.to_string(),
                reason: "not 8 bytes".into(),
            })?)
        }
        None => 0,
    })
}

/// Decode the postcard record `v` stored under `k`.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(k: &[u8], v: &[u8]) -> Result<T> {
    postcard::from_bytes(v).map_err(|e| JournalError::Corrupt {
        key: String::from_utf8_lossy(k).into_owned(),
        reason: e.to_string(),
    })
}
