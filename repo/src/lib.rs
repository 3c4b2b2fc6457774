//! rewind-repo: the storage engine. A repository in a local directory, or
//! under an `s3://BUCKET/PREFIX` of an S3-compatible object store, that
//! implements [`rewind_core::Repository`]: pack files of compressed chunks
//! and version records, one index file per pack, and in-memory indexes of
//! chunks (by id) and versions (by client and path) for point-in-time
//! queries.
//!
//! Where the files live is a `Store` (`store.rs`): the local directory, or
//! an object store (`s3.rs`) holding the same layout as objects below the
//! prefix, read with ranged GETs and written one whole object per PUT
//! (a large pack in parts, visible only once complete). What opening a
//! repository on a store reads (index objects, version records) is also
//! kept in a local cache (`idx_cache.rs`, `pack_cache.rs`), checked before
//! use and never trusted over the store. Differences on a store are said
//! where they apply below.
//!
//! # Layout
//!
//! ```text
//! DIR/config                        JSON {"format":2,"id":"<32 hex>","chunker":{"min","avg","max"},"created":"<RFC 3339>"}
//! DIR/packs/<2 hex>/<32 hex>.pack   immutable once renamed into place
//! DIR/index/<32 hex>.idx            one per pack, same name; a cache of the pack, rebuildable from it
//! DIR/tmp/                          the pack being filled and files being written; garbage at open
//! DIR/lock                          the writer lock (flock), holding the writer's pid
//! DIR/keys/<8 hex>                  encrypted repositories (format 5): one key slot each
//! DIR/vindex/<32 hex>.vix          plain local repositories: the version index on disk, derived from the packs (`vindex.rs`)
//! ```
//!
//! An encrypted repository (format 5, `"encryption"` in its config) seals
//! every pack record, pack footer, index file and the retention file with
//! XChaCha20-Poly1305 under its master key, and names chunks by blake3
//! keyed with its chunk-id key (`crypt.rs`, `keys.rs`, and
//! docs/decisions.md, "Encryption at rest (issue 20), step 2: wiring").
//! Its config, its lease and the sizes of its files stay readable.
//!
//! On an object store `PREFIX/lock` is instead the writer's lease: a JSON
//! object naming its holder (random id, host, pid) and when it expires,
//! renewed while the writer lives and released when it closes (marked
//! released by a write conditional on its ETag where the store honours
//! that, else deleted), never touching a successor's lease (`lease.rs`).
//!
//! A pack is `RWPACK01`, then records, each a [`rewind_core::frame`]
//! (length, CRC-32, payload) whose payload is a postcard `Chunk { id,
//! raw_len, compressed, data }` or `Versions([Version])`, then a footer
//! frame holding the table of contents (offset, frame length and kind of
//! every record, with chunk id and sizes or version count), then the
//! footer's offset (u64 LE) and `RWPKEND1`. A pack describes itself: the
//! footer makes loading cheap, and without it the records are found by
//! scanning frames from the start. An index file is a frame holding the
//! pack's name and length, seal time and chunk locations, followed by
//! frames of the pack's versions.
//!
//! # Guarantees
//!
//! - A commit is atomic and durable when `commit_versions` returns: its
//!   versions are written into the open pack together with the chunks sent
//!   since the last commit, and the pack is sealed (footer, fsync, re-read
//!   of the footer, rename into `packs/`, fsync of the directory) before
//!   its index is written (temp file, fsync, rename, directory fsync). A
//!   pack becomes visible only by that rename, whole (on an object store:
//!   by one PUT of the whole sealed pack, before its index object).
//! - Re-sending a batch is harmless: versions whose `(client, seq)` is at
//!   or below the client's highest stored seq are dropped, and a batch left
//!   empty is a no-op.
//! - No stored version refers to a chunk the repository does not hold: a
//!   batch naming a chunk neither stored nor sent since the last commit is
//!   refused whole ([`rewind_core::RepoError::DanglingVersion`]).
//! - A chunk is stored only if its content matches its id, once per
//!   repository; reading one checks the frame's CRC and the chunk's blake3,
//!   so damage is reported as [`rewind_core::RepoError::Corrupt`] with the
//!   pack's path and the offset, never returned as data.
//! - One writer at a time (`DIR/lock`, or on an object store the lease
//!   `PREFIX/lock`); any number of readers, in any process, alongside it.
//!   Readers never write and take no lease; they see new commits after
//!   [`LocalRepo::refresh`].
//! - A reader of a plain local repository answers version queries
//!   (`versions_of`, `tree_at`, `covers`, `query_point`) from the version
//!   index on disk, which the writer keeps in the background, plus the
//!   index files of packs it does not cover yet; it loads the whole
//!   in-memory index only when another call needs it, or when a run of
//!   the version index is damaged. The answers are the whole index's.
//! - A writer on an object store whose lease was taken over, or has not
//!   been renewed for three quarters of its expiry, writes nothing more:
//!   every write and every commit fails (a commit whose pack went out
//!   while the lease lapsed is not acknowledged).
//! - A pack writer that fails once is discarded: its temp file is deleted
//!   and the chunks sent since the last commit are forgotten, so after any
//!   error from `put_chunks` or `commit_versions` a client starts again
//!   from `missing_chunks`.
//! - In an encrypted repository no record, index file or retention file
//!   is read unless it opens under the repository's key with the kind and
//!   name it was sealed with: a changed bit is damage
//!   ([`rewind_core::RepoError::Corrupt`], with pack and offset, from
//!   `verify`), never plaintext; opening one needs a password or key file
//!   that opens a key slot ([`rewind_core::RepoError::Keys`] otherwise),
//!   and a plain repository never asks for one.
//! - Nothing read from disk can make this crate panic or allocate without
//!   bound: frames are length-checked against `MAX_FRAME` and the file.
//! - Only the owner can reach what it writes: directories are created
//!   `0700` and files `0600` whatever the umask, and a repository written
//!   before that rule is tightened when it is opened for writing.
//!
//! # Points in time
//!
//! `tree_at(client, path, at)` takes, for `path` and every path below it,
//! the newest version (by seq) observed at or before `at`, drops tombstones,
//! and drops every path whose nearest *recorded* ancestor is not a directory
//! present at `at` (checked all the way up, also above `path`), so files
//! left under a deleted directory never show. Ancestors the repository
//! never recorded (the parents of a protected folder, when `path` lies
//! above it) hide nothing.
//!
//! # After a crash
//!
//! - Before a pack's rename: the pack is a partial file in `DIR/tmp`,
//!   nothing of the batch is visible, and the next writer deletes it. The
//!   client never got an answer, so it sends the batch again.
//! - After the rename, before the index is in place: the pack is complete;
//!   [`LocalRepo::open_writer`] writes its index from the pack, and readers
//!   read the pack's footer instead. The batch is committed; sent again, it
//!   is recognised by seq.
//! - A pack damaged afterwards (truncated, bit rot): opening salvages the
//!   records before the damage (with a warning), [`LocalRepo::verify`]
//!   reports the damage, [`LocalRepo::rebuild_index`] rewrites every index.
//! - An index whose pack is gone is ignored (and logged); one that does not
//!   match its pack's length is replaced from the pack.
//! - On an object store the same holds with the PUT of the whole pack in
//!   place of its rename: before it, no object exists and the staging file
//!   (in the system's temporary directory) is left behind; after it, the
//!   pack object is whole and its index object is written by the next
//!   writer if it is missing.
//! - A writer on an object store killed without closing leaves its lease
//!   object: other writers are refused, naming its host and pid, until it
//!   expires (60 s, `REWIND_S3_LEASE_SECS`), then take it over.

mod backend;
mod config;
mod crypt;
mod deletions;
mod durable;
mod forget;
mod idx_cache;
mod index;
mod keep;
mod keys;
mod layout;
mod lease;
mod pack;
mod pack_cache;
mod pack_index;
mod pack_name;
mod par;
mod prune;
mod record;
mod repo;
#[cfg(feature = "s3")]
mod s3;
#[cfg(feature = "s3")]
mod s3_config;
#[cfg(feature = "s3")]
mod staging;
mod state;
mod store;
mod toc;
mod verify;
mod vindex;
mod zrec;

#[cfg(test)]
mod history_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_crypt;
#[cfg(all(test, feature = "s3"))]
mod tests_lease;
#[cfg(test)]
mod tests_prune;
#[cfg(test)]
mod tests_retention;
#[cfg(all(test, feature = "s3"))]
mod tests_s3;

pub use idx_cache::choose_index_cache;
pub use keys::{FromEnvironment, Secret, Secrets, SlotInfo, use_key_file, use_password_file};
pub use prune::{DEFAULT_GRACE, DEFAULT_MAX_UNUSED, PruneOptions};
pub use repo::LocalRepo;
pub use rewind_core::forget::PruneReport;
pub use rewind_crypto::{Argon2Params, KeyFileKey, Password};
pub use store::is_url;
pub use verify::{
    DamagedVersion, Issue, RebuildReport, RepairReport, RewrittenPack, VerifyProgress, VerifyReport,
};
