//! rewind-fsmeta: the platform layer.
//!
//! Reads everything rewind records about a path (its [`FileMeta`]: kind,
//! mode, owner ids and names, times with nanoseconds and the birth time,
//! extended attributes, ACLs, hard-link group, sparse map, BSD flags) from
//! the operating system, and applies a recorded [`FileMeta`] back to an
//! object restore has just created. This crate and `rewind-watcher` are the
//! only places with per-OS code, all of it behind `cfg(target_os = …)`
//! with one interface; both compile no C, so `cargo check --target
//! x86_64-apple-darwin` works on them. Nothing here links a C library on
//! Linux: POSIX ACLs are the kernel's attribute values, coded here, so a
//! fresh machine without libacl's development files builds it (exacl, which
//! links libacl, is used on macOS only).
//!
//! Guarantees:
//! - Reading never follows a final symlink: a symlink is described
//!   itself, its target kept as raw bytes, its own xattrs and times read.
//! - Reading reports what it could not read: [`read_meta_full`] and
//!   [`read_meta_at`] return the [`FileMeta`] plus one [`MetaIssue`] per
//!   unreadable item (an xattr, an ACL, the sparse map); only a failure to
//!   look at the object at all is a [`MetaError`]. [`read_meta`] is the
//!   same without the issues, for callers that only need the stat fields.
//! - Extended attributes of any size and namespace the process can list
//!   are read, sorted by name; the POSIX ACL attributes are the ACL fields
//!   instead. One that vanishes between list and read is skipped.
//! - Paths longer than `PATH_MAX` work: [`read_meta`] walks them one
//!   directory at a time ([`open_dir_nofollow_long`]); [`read_meta_at`],
//!   [`apply_meta_at`] and [`make_special_at`] take a directory descriptor
//!   and one name.
//! - [`apply_meta_fd`] and [`apply_meta_at`] work through file descriptors
//!   or a directory descriptor plus a single name, so a symlink planted in
//!   the destination cannot redirect them. They apply xattrs, ACLs, owner,
//!   mode, capability, times, flags in that order (see their docs for why)
//!   and report every item the destination refused as a [`MetaIssue`];
//!   nothing is silently dropped.
//! - [`data_extents`] maps a sparse file with two `lseek` calls per data
//!   extent, whatever the file's size.
//!
//! The only state is a process-wide cache of user and group names. An
//! interruption leaves at most one object with part of its metadata
//! applied (in the order above).

#![forbid(unsafe_code)]

mod acl;
mod apply;
mod clone;
mod meta;
mod names;
mod paths;
#[cfg(target_os = "linux")]
mod posix_acl;
mod read;
mod sparse;
mod stat;
mod xattrs;

#[cfg(all(test, target_os = "linux"))]
mod tests;

pub use apply::{apply_meta_at, apply_meta_fd, make_special_at};
pub use clone::reflink_copy;
pub use meta::{ApplyOptions, Extent, FileKind, FileMeta, FileTime, MetaError, MetaIssue, Xattr};
pub use paths::{Reach, open_dir_nofollow_long, reach, reach_dir};
#[cfg(target_os = "linux")]
pub use posix_acl::{posix_acl_text, posix_acl_value};
pub use read::{read_meta, read_meta_at, read_meta_full, read_stat};
pub use sparse::data_extents;
