//! rewind-restore: the tree under a path as it was at a point in time, written
//! back to disk.
//!
//! Guarantees:
//! - Every write goes through a directory descriptor and a single checked
//!   name (`openat`, `mkdirat`, `symlinkat`, `renameat` with `O_NOFOLLOW`), so
//!   a symlink found or planted in the destination is never followed and
//!   nothing is written outside the destination.
//! - Stored paths with `..`, `.`, empty components or NUL are refused (and
//!   reported), never joined.
//! - Files are written under a temporary name, flushed, given their metadata
//!   and renamed into place: an interrupted in-place restore never leaves a
//!   half-written file where the user's file was.
//! - Local data is reused: a file whose current content already has the
//!   version's chunks is not rewritten, and chunks present in the current
//!   file are copied from it instead of read from the repository.
//! - Metadata comes after content, in fsmeta's order (xattrs and ACLs,
//!   owner, mode, capability, times); directory metadata is applied
//!   deepest first, after the directory's children. Owners map by name
//!   unless [`RestoreOptions::numeric_owner`].
//! - Extended attribute values are read from their chunks, each distinct
//!   value once.
//! - Names recorded as one inode (same hard-link group and content) become
//!   one inode again (`linkat`); a name whose partners are not restored is
//!   an ordinary file.
//! - Sparse files are written extent by extent at their offsets; holes stay
//!   holes.
//! - Fifos and devices are recreated (devices need root); sockets are noted,
//!   never created.
//! - From an object store, a restore to a new place fetches each stored
//!   chunk once (per plan of up to 20,000 files), in the order chunks lie
//!   in the packs, and writes it at every place it goes; a file is renamed
//!   into place only after its last piece is written.
//! - Per-item failures are collected in [`RestoreReport::problems`]; the
//!   restore goes on with the other items.
//!
//! An interruption leaves complete files (restored or original) and possibly
//! temporary files named `.rewind-restore-*` that the next restore ignores.
//!
//! The questions `rewind find` and `rewind diff` ask of the past are here
//! too ([`find_under`], [`diff_between`]); they only read.

mod browse;
mod restore;

pub use browse::{EVERYWHERE, diff_between, find_under};

pub use restore::{Problem, RestoreError, RestoreOptions, RestoreReport, is_restore_tmp, restore};
