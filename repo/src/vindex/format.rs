//! The bytes of a run.
//!
//! ```text
//! records   48 bytes each, sorted by (client, path, seq):
//!           seq u64 | observed_at i64 | tail min i64 | entry offset u64 | entry length u32 |
//!           entry CRC u32 | shape u8 | 3 zero bytes | CRC u32 of the 44 bytes before it
//! entries   the postcard encoding of each record's `Entry`, back to back
//! paths     every path's bytes, back to back
//! table     40 bytes per path, sorted by (client, path):
//!           client u32 | path length u32 | path offset u64 | first record u64 | records u64 |
//!           CRC u32 of the 32 bytes before it and the path's bytes | 4 zero bytes
//! footer    postcard `Footer`
//! tail      footer length u32 | CRC u32 of the footer | `RWVIX003`
//! ```
//!
//! The *tail min* of a record is the earliest `observed_at` of it and the
//! records after it of the same path in the run: it never decreases along
//! a path, so the last record observed at or before a moment is found by a
//! binary search, and the end of a version's span (the earliest later
//! observation, `live_ends`) is read, not computed from the whole path.
//!
//! All integers are little-endian; offsets are from the start of the
//! section they point into. Every piece carries its own CRC-32, checked
//! when it is read: a query reads a few table entries, a path's records
//! and one entry, so opening a run and answering a query costs what the
//! query reads, not the size of the run.

use serde::{Deserialize, Serialize};

use rewind_core::Timestamp;

use crate::pack_name::PackName;
use crate::state::Shape;

pub(crate) const MAGIC: &[u8; 8] = b"RWVIX003";
pub(crate) const RECORD: usize = 48;
pub(crate) const PATH_ENTRY: usize = 40;
/// The footer's length and CRC, and the magic.
pub(crate) const TAIL: usize = 16;

/// One version in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub seq: u64,
    pub observed_at: Timestamp,
    /// See the module doc.
    pub tail_min: Timestamp,
    pub entry_off: u64,
    pub entry_len: u32,
    /// CRC-32 of the encoded entry.
    pub entry_crc: u32,
    pub shape: Shape,
}

impl Record {
    pub(crate) fn encode(&self) -> [u8; RECORD] {
        let mut b = [0u8; RECORD];
        b[0..8].copy_from_slice(&self.seq.to_le_bytes());
        b[8..16].copy_from_slice(&self.observed_at.0.to_le_bytes());
        b[16..24].copy_from_slice(&self.tail_min.0.to_le_bytes());
        b[24..32].copy_from_slice(&self.entry_off.to_le_bytes());
        b[32..36].copy_from_slice(&self.entry_len.to_le_bytes());
        b[36..40].copy_from_slice(&self.entry_crc.to_le_bytes());
        b[40] = shape_byte(self.shape);
        let crc = crc32fast::hash(&b[..44]);
        b[44..48].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// `None` for a record whose CRC or shape byte is wrong.
    pub(crate) fn decode(b: &[u8]) -> Option<Record> {
        let b: &[u8; RECORD] = b.try_into().ok()?;
        if crc32fast::hash(&b[..44]).to_le_bytes() != b[44..48] {
            return None;
        }
        Some(Record {
            seq: u64::from_le_bytes(b[0..8].try_into().ok()?),
            observed_at: Timestamp(i64::from_le_bytes(b[8..16].try_into().ok()?)),
            tail_min: Timestamp(i64::from_le_bytes(b[16..24].try_into().ok()?)),
            entry_off: u64::from_le_bytes(b[24..32].try_into().ok()?),
            entry_len: u32::from_le_bytes(b[32..36].try_into().ok()?),
            entry_crc: u32::from_le_bytes(b[36..40].try_into().ok()?),
            shape: shape_of(b[40])?,
        })
    }
}

/// One path of a run and where its records are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PathEntry {
    pub client: u32,
    pub path_len: u32,
    pub path_off: u64,
    pub first: u64,
    pub count: u64,
}

impl PathEntry {
    /// The entry's bytes, with a CRC over them and `path`.
    pub(crate) fn encode(&self, path: &[u8]) -> [u8; PATH_ENTRY] {
        let mut b = [0u8; PATH_ENTRY];
        b[0..4].copy_from_slice(&self.client.to_le_bytes());
        b[4..8].copy_from_slice(&self.path_len.to_le_bytes());
        b[8..16].copy_from_slice(&self.path_off.to_le_bytes());
        b[16..24].copy_from_slice(&self.first.to_le_bytes());
        b[24..32].copy_from_slice(&self.count.to_le_bytes());
        let crc = Self::crc(&b[..32], path);
        b[32..36].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn crc(fields: &[u8], path: &[u8]) -> u32 {
        let mut h = crc32fast::Hasher::new();
        h.update(fields);
        h.update(path);
        h.finalize()
    }

    /// Whether entry bytes `b` carry the CRC of their fields and `path`.
    pub(crate) fn matches(b: &[u8], path: &[u8]) -> bool {
        b.len() == PATH_ENTRY && Self::crc(&b[..32], path).to_le_bytes() == b[32..36]
    }

    /// The fields (their CRC is checked against the path by
    /// [`PathEntry::matches`], once the path is read).
    pub(crate) fn decode(b: &[u8]) -> Option<PathEntry> {
        let b: &[u8; PATH_ENTRY] = b.try_into().ok()?;
        Some(PathEntry {
            client: u32::from_le_bytes(b[0..4].try_into().ok()?),
            path_len: u32::from_le_bytes(b[4..8].try_into().ok()?),
            path_off: u64::from_le_bytes(b[8..16].try_into().ok()?),
            first: u64::from_le_bytes(b[16..24].try_into().ok()?),
            count: u64::from_le_bytes(b[24..32].try_into().ok()?),
        })
    }
}

/// What a run says about itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Footer {
    /// Clients by the number the table uses, in name order.
    pub clients: Vec<String>,
    /// The packs whose versions it holds, all of them.
    pub packs: Vec<PackName>,
    pub records: u64,
    pub paths: u64,
    pub entries_off: u64,
    pub paths_off: u64,
    pub table_off: u64,
    pub footer_off: u64,
}

fn shape_byte(s: Shape) -> u8 {
    match s {
        Shape::Gone => 0,
        Shape::Dir => 1,
        Shape::Other => 2,
        Shape::StreamOk => 3,
        Shape::StreamFailed => 4,
    }
}

fn shape_of(b: u8) -> Option<Shape> {
    Some(match b {
        0 => Shape::Gone,
        1 => Shape::Dir,
        2 => Shape::Other,
        3 => Shape::StreamOk,
        4 => Shape::StreamFailed,
        _ => return None,
    })
}
