//! Extended attributes: every name the process can list, values of any
//! size, through an open file or through a path whose final component is
//! never followed (the `l*` calls), with rustix: one system call per list
//! or value in the common case (a value over 1 KiB costs two more).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use rustix::io::Errno;

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
    Fd(BorrowedFd<'a>),
    /// A path; its final component is never followed.
    Path(&'a Path),
}

/// First guess at the size of a listing or value: most are far smaller,
/// so one call usually does (a larger one costs a size query and a retry).
const FIRST_TRY: usize = 1024;

/// Call `f` with a buffer until it fits: first [`FIRST_TRY`] bytes, then
/// the size `query` reports (which may be stale by the next call when the
/// attribute changes meanwhile, hence the loop).
fn sized(
    mut f: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>,
    mut query: impl FnMut() -> rustix::io::Result<usize>,
) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; FIRST_TRY];
    loop {
        match f(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) => {
                let need = query()?;
                buf.resize(need.max(buf.len() + 1), 0);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

impl Node<'_> {
    pub(crate) fn list(&self) -> io::Result<Vec<OsString>> {
        let raw = match self {
            Node::Fd(fd) => sized(
                |b| rustix::fs::flistxattr(fd, b),
                || rustix::fs::flistxattr_query(fd),
            ),
            Node::Path(p) => sized(
                |b| rustix::fs::llistxattr(*p, b),
                || rustix::fs::llistxattr_query(*p),
            ),
        };
        match raw {
            Ok(raw) => Ok(raw
                .split(|b| *b == 0)
                .filter(|n| !n.is_empty())
                .map(|n| OsString::from_vec(n.to_vec()))
                .collect()),
            // A filesystem without extended attributes has none to list.
            Err(e) if unsupported(&e) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The value of `name`; `None` when it is not there.
    pub(crate) fn get(&self, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
        let got = match self {
            Node::Fd(fd) => sized(
                |b| rustix::fs::fgetxattr(fd, name, b),
                || rustix::fs::fgetxattr_query(fd, name),
            ),
            Node::Path(p) => sized(
                |b| rustix::fs::lgetxattr(*p, name, b),
                || rustix::fs::lgetxattr_query(*p, name),
            ),
        };
        match got {
            Ok(v) => Ok(Some(v)),
            Err(e) if no_attr(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn set(&self, name: &OsStr, value: &[u8]) -> io::Result<()> {
        let flags = rustix::fs::XattrFlags::empty();
        Ok(match self {
            Node::Fd(fd) => rustix::fs::fsetxattr(fd, name, value, flags),
            Node::Path(p) => rustix::fs::lsetxattr(*p, name, value, flags),
        }?)
    }

    pub(crate) fn remove(&self, name: &OsStr) -> io::Result<()> {
        Ok(match self {
            Node::Fd(fd) => rustix::fs::fremovexattr(fd, name),
            Node::Path(p) => rustix::fs::lremovexattr(*p, name),
        }?)
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
    /// The raw value of `system.posix_acl_access` (Linux), when there is one.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub acl_access: Option<Vec<u8>>,
    /// The raw value of `system.posix_acl_default` (Linux).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub acl_default: Option<Vec<u8>>,
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
    let mut listing = Listing {
        xattrs: Vec::with_capacity(names.len()),
        ..Listing::default()
    };
    for name in &names {
        if is_acl_name(name.as_bytes()) {
            // Read raw here (one call), decoded by `acl::read`.
            let (slot, what) = if name.as_bytes() == ACL_ACCESS {
                (&mut listing.acl_access, "acl")
            } else {
                (&mut listing.acl_default, "default acl")
            };
            match node.get(name) {
                Ok(v) => *slot = v,
                Err(e) => issues.push(MetaIssue::new(what, e)),
            }
            continue;
        }
        match node.get(name) {
            Ok(Some(value)) => listing.xattrs.push(Xattr {
                name: name.clone().into_vec(),
                value,
            }),
            Ok(None) => {}
            Err(e) => issues.push(MetaIssue::new(item(name.as_bytes()), e)),
        }
    }
    listing.xattrs.sort_by(|a, b| a.name.cmp(&b.name));
    listing
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
