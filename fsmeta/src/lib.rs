//! rewind-fsmeta: the platform layer.
//!
//! Reads everything rewind records about a path (its [`FileMeta`]) from the
//! operating system, and applies a recorded [`FileMeta`] back to a file that
//! restore has just written. This crate and `rewind-watcher` are the only
//! places with per-OS code; both compile no C, so `cargo check --target
//! x86_64-apple-darwin` works on them.
//!
//! Guarantees:
//! - [`read_meta`] never follows a symlink: it describes the link itself and
//!   keeps its target as raw bytes.
//! - [`apply_meta_fd`] and [`apply_meta_at`] work through file descriptors or
//!   a directory descriptor plus a single name, so a symlink planted in the
//!   destination cannot redirect them.
//! - Applying metadata reports every item the destination refused as a
//!   [`MetaIssue`]; nothing is silently dropped.
//!
//! Nothing here keeps state: an interruption leaves at most one file with
//! part of its metadata applied.

mod meta;

pub use meta::{
    ApplyOptions, Extent, FileKind, FileMeta, FileTime, MetaError, MetaIssue, Xattr, apply_meta_at,
    apply_meta_fd, read_meta,
};
