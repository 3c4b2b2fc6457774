//! rewind-core: the shared vocabulary of rewind.
//!
//! Every other crate speaks in these types: [`ChunkId`] (blake3 of a chunk's
//! bytes), [`EncodedChunk`] (a chunk as stored: zstd or raw), [`Version`] (one
//! observed state of one path, or a tombstone), [`Timestamp`] and the
//! point-in-time parser, the content-defined [`Chunker`], the on-disk record
//! [`frame`] format, and the [`Repository`] trait through which the uploader
//! and restore talk to a repository, local or remote, with the questions
//! about history it answers ([`history`]: find, activity).
//!
//! Guarantees:
//! - A [`ChunkId`] is the blake3 hash of the chunk's uncompressed bytes, or
//!   in an encrypted repository its keyed blake3 ([`ChunkIds`]);
//!   [`EncodedChunk::decode`] / [`EncodedChunk::decode_as`] check it, so
//!   damaged data never passes as good.
//! - Every framed record carries its length and a CRC-32; decoding checks
//!   both and bounds the length before allocating.
//! - Nothing here performs I/O except on readers and writers handed in, so
//!   an interruption leaves nothing behind; the one exception is
//!   [`private`], through which every crate creates its directories
//!   (`0700`) and files (`0600`), and whose [`private::write_file`] leaves
//!   the old file or the new one after a crash.
//!
//! With the feature `cli`, what the command lines of both binaries share
//! (`rewind` and `rewind-server`): the one logging set-up ([`logging`]) and
//! the `completions` and `man` subcommands ([`docs`], whose man pages are
//! written as [`readable`] writes: an interrupted `man` leaves whole pages
//! and at worst a stray `.*.tmp` file). Besides, [`one_line`] renders an
//! error for people and [`parse_size`] reads `200GiB`.

mod bases;
mod chunk_ids;
mod chunker;
mod codec;
mod delta;
mod dict;
#[cfg(feature = "cli")]
pub mod docs;
mod extents;
pub mod failpoint;
pub mod forget;
pub mod frame;
pub mod group;
pub mod history;
mod id;
#[cfg(feature = "cli")]
pub mod logging;
mod one_line;
mod overview;
pub mod path;
pub mod private;
pub mod readable;
mod repository;
pub mod retention;
mod size;
mod time;
mod treediff;
mod version;
pub mod wire;

pub use bases::{Bases, bases_of};
pub use chunk_ids::ChunkIds;
pub use chunker::{Chunker, ChunkerParams, DEFAULT_CHUNKER};
pub use codec::{
    ChunkView, CodecError, EncodedChunk, Encoding, MAX_CHUNK_LEN, STREAM_ZSTD_LEVEL, ZSTD_LEVEL,
};
pub use delta::{DeltaWalk, encode_with_hint};
pub use dict::{DICT_CHUNK_MAX, FileEncoder, release_thread_caches};
pub use extents::ExtentReader;
pub use history::{
    ActivityBucket, ActivityQuery, FindHit, FindQuery, FindReply, PathPattern, PatternError,
};
pub use id::{ChunkId, ParseChunkIdError};
pub use one_line::one_line;
pub use overview::Overview;
pub use repository::{
    ChunkSink, DamagedVersion, RepoError, RepoStats, Repository, StoredBase, machine_tree_at,
};
pub use rewind_fsmeta::{Extent, FileKind, FileMeta, FileTime, Xattr};
pub use size::parse_size;
pub use time::{TimeParseError, Timestamp, parse_point_in_time};
pub use treediff::{Change, TreeChange, diff_trees};
pub use version::{ChunkRef, Entry, StreamStatus, Version, XattrRef, change_of, content_changed};
