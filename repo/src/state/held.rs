//! One version as the index holds it. What queries sort, search and filter
//! by (seq, time, pack, and whether the version is a tombstone, a directory
//! or a failed dump) is kept in the open; the rest of the entry (metadata,
//! chunk list, extended attributes) is kept postcard-encoded and decoded
//! only for the versions a query returns. The client and the path are the
//! keys of the maps the version sits in, so they are not repeated per
//! version.
//!
//! A whole `Version` in memory took about 450 bytes (two strings, a chunk
//! list and metadata, each its own allocation); this is 40 bytes plus the
//! encoded entry (docs/decisions.md, "The version index in memory").

use rewind_core::history::Stamped;
use rewind_core::{Entry, FileKind, Timestamp, Version};

/// What a version says about its path, for the queries that do not need
/// the rest of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A tombstone.
    Gone,
    /// A directory.
    Dir,
    /// Any other present path.
    Other,
    /// A dump run that succeeded.
    StreamOk,
    /// A dump run that failed (kept, never restored as good).
    StreamFailed,
}

/// One version of a path, and the pack whose copy of it the index uses.
#[derive(Debug)]
pub(crate) struct Held {
    pub seq: u64,
    pub observed_at: Timestamp,
    pub pack: u32,
    pub shape: Shape,
    /// The postcard encoding of the version's [`Entry`].
    entry: Box<[u8]>,
}

/// The shape of `entry`.
pub(crate) fn shape_of(entry: &Entry) -> Shape {
    match entry {
        Entry::Deleted => Shape::Gone,
        Entry::Present { meta, .. } if meta.kind == FileKind::Dir => Shape::Dir,
        Entry::Present { .. } => Shape::Other,
        Entry::Stream { status, .. } if status.ok() => Shape::StreamOk,
        Entry::Stream { .. } => Shape::StreamFailed,
    }
}

/// The postcard encoding of `entry`, as the index and the runs on disk
/// keep it.
pub(crate) fn encode_entry(entry: &Entry) -> Vec<u8> {
    // Encoding an in-memory value into a Vec has no failure mode of its
    // own (postcard fails only for writers that run out of room).
    postcard::to_allocvec(entry).expect("an entry encodes into a growable buffer")
}

impl Held {
    pub(crate) fn new(seq: u64, observed_at: Timestamp, pack: u32, entry: &Entry) -> Held {
        Held {
            seq,
            observed_at,
            pack,
            shape: shape_of(entry),
            entry: encode_entry(entry).into_boxed_slice(),
        }
    }

    /// A version whose entry is already encoded; `entry` must decode as an
    /// [`Entry`] of shape `shape` (the caller checked it).
    pub(crate) fn from_encoded(
        seq: u64,
        observed_at: Timestamp,
        pack: u32,
        shape: Shape,
        entry: Box<[u8]>,
    ) -> Held {
        Held {
            seq,
            observed_at,
            pack,
            shape,
            entry,
        }
    }

    /// The encoded entry.
    pub(crate) fn encoded(&self) -> &[u8] {
        &self.entry
    }

    /// The entry, decoded.
    pub(crate) fn entry(&self) -> Entry {
        // The bytes were encoded from an `Entry` by `new`, in this process.
        postcard::from_bytes(&self.entry).expect("the index encoded this entry itself")
    }

    /// The whole version, for `client`'s `path`.
    pub(crate) fn version(&self, client: &str, path: &[u8]) -> Version {
        Version {
            client: client.to_string(),
            seq: self.seq,
            observed_at: self.observed_at,
            path: path.to_vec(),
            entry: self.entry(),
        }
    }

    pub(crate) fn present(&self) -> bool {
        self.shape != Shape::Gone
    }

    pub(crate) fn is_dir(&self) -> bool {
        self.shape == Shape::Dir
    }
}

impl Stamped for Held {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn observed_at(&self) -> Timestamp {
        self.observed_at
    }
    fn present(&self) -> bool {
        Held::present(self)
    }
    fn is_dir(&self) -> bool {
        Held::is_dir(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind_core::{ChunkId, ChunkRef};

    #[test]
    fn a_held_version_gives_back_the_version_it_was_made_from() {
        let meta = crate::tests::meta(FileKind::File, 5);
        let v = Version {
            client: "c".into(),
            seq: 7,
            observed_at: Timestamp(42),
            path: b"/r/f".to_vec(),
            entry: Entry::Present {
                meta,
                chunks: vec![ChunkRef {
                    id: ChunkId::of(b"hello"),
                    len: 5,
                }],
                xattrs: Vec::new(),
            },
        };
        let h = Held::new(v.seq, v.observed_at, 3, &v.entry);
        assert_eq!(h.version("c", b"/r/f"), v);
        assert_eq!((h.shape, h.pack), (Shape::Other, 3));
        let gone = Held::new(8, Timestamp(43), 3, &Entry::Deleted);
        assert!(!gone.present() && !gone.is_dir());
    }
}
