//! Extended attributes: every name the process can list, values of any
//! size, through an open file or through a path whose final component is
//! never followed (the `xattr` crate's `l*` calls).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use rustix::io::Errno;
use xattr::FileExt;

use crate::meta::{MetaIssue, Xattr};

/// The POSIX access ACL as Linux stores it; read and applied as
/// [`FileMeta::acl`](crate::FileMeta::acl), never as an xattr.
pub(crate) const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
/// The POSIX default ACL as Linux stores it.
pub(crate) const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";
/// File capabilities. Linux drops this attribute on every change of owner,
/// so apply sets it after ownership.
pub(crate) const CAPABILITY: &[u8] = b"security.capability";

/// Whether `name` is one of the attributes the ACL fields carry.
pub(crate) fn is_acl_name(name: &[u8]) -> bool {
    cfg!(target_os = "linux") && (name == ACL_ACCESS || name == ACL_DEFAULT)
}

/// An object whose attributes are read or written.
pub(crate) enum Node<'a> {
    /// An open file or directory.
    File(&'a File),
    /// A path; its final component is never followed.
    Path(&'a Path),
}

impl Node<'_> {
    pub(crate) fn list(&self) -> io::Result<Vec<OsString>> {
        let names = match self {
            Node::File(f) => f.list_xattr(),
            Node::Path(p) => xattr::list(p),
        };
        match names {
            Ok(names) => Ok(names.collect()),
            // A filesystem without extended attributes has none to list.
            Err(e) if unsupported(&e) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    fn get(&self, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
        match self {
            Node::File(f) => f.get_xattr(name),
            Node::Path(p) => xattr::get(p, name),
        }
    }

    pub(crate) fn set(&self, name: &OsStr, value: &[u8]) -> io::Result<()> {
        match self {
            Node::File(f) => f.set_xattr(name, value),
            Node::Path(p) => xattr::set(p, name, value),
        }
    }

    pub(crate) fn remove(&self, name: &OsStr) -> io::Result<()> {
        match self {
            Node::File(f) => f.remove_xattr(name),
            Node::Path(p) => xattr::remove(p, name),
        }
    }
}

fn unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(Errno::NOTSUP.raw_os_error())
        || e.raw_os_error() == Some(Errno::OPNOTSUPP.raw_os_error())
}

/// The attribute is not there (it vanished since it was listed).
fn no_attr(e: &io::Error) -> bool {
    #[cfg(target_os = "macos")]
    let code = Errno::NOATTR;
    #[cfg(not(target_os = "macos"))]
    let code = Errno::NODATA;
    e.raw_os_error() == Some(code.raw_os_error())
}

/// Label of the issue about one attribute.
pub(crate) fn item(name: &[u8]) -> String {
    format!("xattr {}", String::from_utf8_lossy(name))
}

/// What reading the attributes found.
#[derive(Default)]
pub(crate) struct Listing {
    /// Every readable attribute except the ACL ones, sorted by name.
    pub xattrs: Vec<Xattr>,
    /// Every name listed, the ACL ones included (Linux reads ACL presence
    /// from it).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub names: Vec<OsString>,
}

impl Listing {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn has(&self, name: &[u8]) -> bool {
        self.names.iter().any(|n| n.as_bytes() == name)
    }
}

/// Read every attribute of `node`. An attribute that vanishes between list
/// and get is skipped; one that cannot be read becomes an issue.
pub(crate) fn read(node: &Node<'_>, issues: &mut Vec<MetaIssue>) -> Listing {
    let names = match node.list() {
        Ok(n) => n,
        Err(e) => {
            issues.push(MetaIssue::new("xattrs", e));
            return Listing::default();
        }
    };
    let mut xattrs = Vec::with_capacity(names.len());
    for name in &names {
        if is_acl_name(name.as_bytes()) {
            continue;
        }
        match node.get(name) {
            Ok(Some(value)) => xattrs.push(Xattr {
                name: name.clone().into_vec(),
                value,
            }),
            Ok(None) => {}
            Err(e) => issues.push(MetaIssue::new(item(name.as_bytes()), e)),
        }
    }
    xattrs.sort_by(|a, b| a.name.cmp(&b.name));
    Listing { xattrs, names }
}

/// Set every recorded attribute but the capability (see [`CAPABILITY`]);
/// with `exact`, remove those the target has and the record does not
/// (ACL attributes excepted). `current` is the target's listing.
pub(crate) fn apply(
    node: &Node<'_>,
    want: &[Xattr],
    current: &[OsString],
    exact: bool,
    issues: &mut Vec<MetaIssue>,
) {
    if exact {
        for name in current {
            let n = name.as_bytes();
            if is_acl_name(n) || want.iter().any(|x| x.name == n) {
                continue;
            }
            match node.remove(name) {
                Ok(()) => {}
                Err(e) if no_attr(&e) => {}
                Err(e) => issues.push(MetaIssue::new(item(n), e)),
            }
        }
    }
    for x in want {
        if x.name == CAPABILITY || is_acl_name(&x.name) {
            continue;
        }
        if let Err(e) = node.set(OsStr::from_bytes(&x.name), &x.value) {
            issues.push(MetaIssue::new(item(&x.name), e));
        }
    }
}

/// Set the recorded capability, if any (after ownership and mode).
pub(crate) fn apply_capability(node: &Node<'_>, want: &[Xattr], issues: &mut Vec<MetaIssue>) {
    if let Some(x) = want.iter().find(|x| x.name == CAPABILITY)
        && let Err(e) = node.set(OsStr::from_bytes(&x.name), &x.value)
    {
        issues.push(MetaIssue::new(item(&x.name), e));
    }
}
