//! Access control lists, in exacl's text form (one entry a line,
//! `allow::user:alice:read,write`), which names users and groups and falls
//! back to numbers for ids without a name.
//!
//! - Linux: the POSIX access ACL, recorded only when it has entries beyond
//!   the three the mode bits carry, and the default ACL of a directory. The
//!   kernel keeps them as the `system.posix_acl_*` attributes, and this
//!   module reads and writes those values itself (through the same calls as
//!   every other attribute, on the open file when there is one), with the
//!   codec in `posix_acl`; removing an ACL is removing the attribute. No
//!   C library is linked for this (docs/decisions.md, "ACLs without libacl").
//! - macOS: the extended NFSv4 ACL through `exacl::getfacl`/`setfacl`
//!   (type-checked only). No default ACL. exacl works on paths and follows
//!   the final component, so callers pass a path that names the object
//!   itself (see `paths::fd_path`).
//!
//! Symlinks have no ACLs; callers do not come here for them.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use crate::meta::{FileMeta, MetaIssue};
use crate::xattrs::{Listing, Node};

#[cfg(target_os = "linux")]
pub(crate) use linux::{apply, read};

#[cfg(target_os = "linux")]
mod linux {
    use std::os::unix::ffi::OsStrExt;

    use super::*;
    use crate::posix_acl::{decode, encode, parse, to_text};
    use crate::xattrs::{ACL_ACCESS, ACL_DEFAULT};

    /// The access ACL (when extended) and, for a directory, the default ACL,
    /// from the raw values the attribute listing read.
    pub(crate) fn read(
        _path: &Path,
        is_dir: bool,
        listing: &Listing,
        issues: &mut Vec<MetaIssue>,
    ) -> (Option<String>, Option<String>) {
        let mut access = None;
        if let Some(raw) = &listing.acl_access {
            // user::, group:: and other:: are the mode bits; anything more
            // (named entries, a mask) makes the ACL extended.
            match decode(raw, false).map(|e| (e.len() > 3).then(|| to_text(&e))) {
                Ok(a) => access = a,
                Err(e) => issues.push(MetaIssue::new("acl", e)),
            }
        }
        let mut default = None;
        if let (true, Some(raw)) = (is_dir, &listing.acl_default) {
            match decode(raw, true).map(|e| (!e.is_empty()).then(|| to_text(&e))) {
                Ok(d) => default = d,
                Err(e) => issues.push(MetaIssue::new("default acl", e)),
            }
        }
        (access, default)
    }

    /// Make the target's ACLs those of `meta`: set the recorded ones, and
    /// remove ones the target has (inherited from a default ACL, say) that
    /// the record does not. `node` reaches the target's attributes;
    /// `current` lists them.
    pub(crate) fn apply(
        _path: impl FnOnce() -> io::Result<PathBuf>,
        node: &Node<'_>,
        is_dir: bool,
        meta: &FileMeta,
        current: &[OsString],
        issues: &mut Vec<MetaIssue>,
    ) {
        let has = |name: &[u8]| current.iter().any(|n| n.as_bytes() == name);
        let set = |name: &[u8], text: &str| {
            let value = parse(text).and_then(|e| encode(&e))?;
            node.set(std::ffi::OsStr::from_bytes(name), &value)
        };
        let access = match &meta.acl {
            Some(text) => set(ACL_ACCESS, text),
            None if has(ACL_ACCESS) => node.remove(std::ffi::OsStr::from_bytes(ACL_ACCESS)),
            None => Ok(()),
        };
        if let Err(e) = access {
            issues.push(MetaIssue::new("acl", e));
        }
        let default = match &meta.default_acl {
            Some(_) if !is_dir => Err(io::Error::other("the target is not a directory")),
            Some(text) => set(ACL_DEFAULT, text),
            None if is_dir && has(ACL_DEFAULT) => {
                node.remove(std::ffi::OsStr::from_bytes(ACL_DEFAULT))
            }
            None => Ok(()),
        };
        if let Err(e) = default {
            issues.push(MetaIssue::new("default acl", e));
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) use other::{apply, read};

#[cfg(not(target_os = "linux"))]
mod other {
    use exacl::AclOption;

    use super::*;

    fn to_text(entries: &[exacl::AclEntry]) -> io::Result<String> {
        exacl::to_string(entries)
    }

    /// The extended ACL of the object at `path`.
    pub(crate) fn read(
        path: &Path,
        _is_dir: bool,
        _listing: &Listing,
        issues: &mut Vec<MetaIssue>,
    ) -> (Option<String>, Option<String>) {
        match exacl::getfacl(path, AclOption::empty()).and_then(|e| {
            if e.is_empty() {
                Ok(None)
            } else {
                to_text(&e).map(Some)
            }
        }) {
            Ok(a) => (a, None),
            Err(e) => {
                issues.push(MetaIssue::new("acl", e));
                (None, None)
            }
        }
    }

    /// Set the recorded extended ACL. A target without a recorded ACL is
    /// left as it is.
    pub(crate) fn apply(
        path: impl FnOnce() -> io::Result<PathBuf>,
        _node: &Node<'_>,
        _is_dir: bool,
        meta: &FileMeta,
        _current: &[OsString],
        issues: &mut Vec<MetaIssue>,
    ) {
        if let Some(text) = &meta.acl
            && let Err(e) = path().and_then(|path| {
                exacl::from_str(text).and_then(|e| exacl::setfacl(&[path], &e, AclOption::empty()))
            })
        {
            issues.push(MetaIssue::new("acl", e));
        }
    }
}
