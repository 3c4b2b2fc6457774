//! Access control lists through `exacl`, in its text form (one entry a
//! line, `allow::user:alice:read,write`), which names users and groups and
//! falls back to numbers for ids without a name.
//!
//! - Linux: the POSIX access ACL, recorded only when it has entries beyond
//!   the three the mode bits carry, and the default ACL of a directory. The
//!   kernel keeps them as the `system.posix_acl_*` attributes: the xattr
//!   listing tells whether there is anything to read, and removing an ACL
//!   is removing that attribute.
//! - macOS: the extended NFSv4 ACL (type-checked only). No default ACL.
//!
//! Symlinks have no ACLs; callers do not come here for them. libacl and
//! exacl work on paths and follow the final component, so callers pass a
//! path that names the object itself (see `paths::fd_path`).

use std::ffi::OsString;
use std::io;
use std::path::Path;

use exacl::{AclEntry, AclOption};

use crate::meta::{FileMeta, MetaIssue};
use crate::xattrs::{Listing, Node};

fn to_text(entries: &[AclEntry]) -> io::Result<String> {
    exacl::to_string(entries)
}

#[cfg(target_os = "linux")]
pub(crate) use linux::{apply, read};

#[cfg(target_os = "linux")]
mod linux {
    use std::os::unix::ffi::OsStrExt;

    use exacl::Flag;

    use super::*;
    use crate::xattrs::{ACL_ACCESS, ACL_DEFAULT};

    /// Entries of `text`, for one ACL (access or default) at a time.
    fn parse(text: &str) -> io::Result<Vec<AclEntry>> {
        let mut entries = exacl::from_str(text)?;
        for e in &mut entries {
            e.flags.remove(Flag::DEFAULT);
        }
        Ok(entries)
    }

    /// The access ACL (when extended) and, for a directory, the default ACL
    /// of the object at `path`.
    pub(crate) fn read(
        path: &Path,
        is_dir: bool,
        listing: &Listing,
        issues: &mut Vec<MetaIssue>,
    ) -> (Option<String>, Option<String>) {
        let mut access = None;
        if listing.has(ACL_ACCESS) {
            match exacl::getfacl(path, AclOption::ACCESS_ACL).and_then(|e| {
                // user::, group:: and other:: are the mode bits; anything
                // more (named entries, a mask) makes the ACL extended.
                if e.len() > 3 {
                    to_text(&e).map(Some)
                } else {
                    Ok(None)
                }
            }) {
                Ok(a) => access = a,
                Err(e) => issues.push(MetaIssue::new("acl", e)),
            }
        }
        let mut default = None;
        if is_dir && listing.has(ACL_DEFAULT) {
            match exacl::getfacl(path, AclOption::DEFAULT_ACL).and_then(|e| {
                if e.is_empty() {
                    Ok(None)
                } else {
                    to_text(&e).map(Some)
                }
            }) {
                Ok(d) => default = d,
                Err(e) => issues.push(MetaIssue::new("default acl", e)),
            }
        }
        (access, default)
    }

    /// Make the target's ACLs those of `meta`: set the recorded ones, and
    /// remove ones the target has (inherited from a default ACL, say) that
    /// the record does not. `path` names the target (followed); `node`
    /// reaches its attributes; `current` lists them.
    pub(crate) fn apply(
        path: &Path,
        node: &Node<'_>,
        is_dir: bool,
        meta: &FileMeta,
        current: &[OsString],
        issues: &mut Vec<MetaIssue>,
    ) {
        let has = |name: &[u8]| current.iter().any(|n| n.as_bytes() == name);
        let access = match &meta.acl {
            Some(text) => {
                parse(text).and_then(|e| exacl::setfacl(&[path], &e, AclOption::ACCESS_ACL))
            }
            None if has(ACL_ACCESS) => node.remove(std::ffi::OsStr::from_bytes(ACL_ACCESS)),
            None => Ok(()),
        };
        if let Err(e) = access {
            issues.push(MetaIssue::new("acl", e));
        }
        let default = match &meta.default_acl {
            Some(_) if !is_dir => Err(io::Error::other("the target is not a directory")),
            Some(text) => {
                parse(text).and_then(|e| exacl::setfacl(&[path], &e, AclOption::DEFAULT_ACL))
            }
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
    use super::*;

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
        path: &Path,
        _node: &Node<'_>,
        _is_dir: bool,
        meta: &FileMeta,
        _current: &[OsString],
        issues: &mut Vec<MetaIssue>,
    ) {
        if let Some(text) = &meta.acl
            && let Err(e) =
                exacl::from_str(text).and_then(|e| exacl::setfacl(&[path], &e, AclOption::empty()))
        {
            issues.push(MetaIssue::new("acl", e));
        }
    }
}
