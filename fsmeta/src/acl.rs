//! Access control lists through `exacl`, in its text form (one entry a
//! line, `allow::user:alice:read,write`), which names users and groups and
//! falls back to numbers for ids without a name.
//!
//! - Linux: the POSIX access ACL, recorded only when it has entries beyond
//!   the three the mode bits carry, and the default ACL of a directory. The
//!   kernel keeps them as the `system.posix_acl_*` attributes, and this
//!   module reads and writes those values itself (through the same calls as
//!   every other attribute, on the open file when there is one), in exacl's
//!   entry type and text form; removing an ACL is removing the attribute.
//! - macOS: the extended NFSv4 ACL through `exacl::getfacl`/`setfacl`
//!   (type-checked only). No default ACL. exacl works on paths and follows
//!   the final component, so callers pass a path that names the object
//!   itself (see `paths::fd_path`).
//!
//! Symlinks have no ACLs; callers do not come here for them.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use exacl::AclEntry;

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

    use exacl::{AclEntryKind, Flag, Perm};

    use super::*;
    use crate::names;
    use crate::xattrs::{ACL_ACCESS, ACL_DEFAULT};

    // Linux keeps a POSIX ACL as the value of `system.posix_acl_*`: a
    // little-endian u32 version (2), then per entry a u16 tag, a u16
    // permission set (4 read, 2 write, 1 execute) and a u32 id, sorted by
    // tag and then id. Reading and writing that value directly costs one
    // system call, where libacl adds a stat and exacl a user database
    // lookup per named entry; names come from the `names` cache instead.
    const VERSION: u32 = 2;
    const USER_OBJ: u16 = 0x01;
    const USER: u16 = 0x02;
    const GROUP_OBJ: u16 = 0x04;
    const GROUP: u16 = 0x08;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    const NO_ID: u32 = u32::MAX;

    fn invalid(what: impl Into<String>) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, what.into())
    }

    /// The entries of a raw ACL value, in exacl's form (so that the text is
    /// the one `exacl::getfacl` gives: names where the id has one, else the
    /// number; `default` flags on a default ACL's entries).
    pub(crate) fn decode(raw: &[u8], default: bool) -> io::Result<Vec<AclEntry>> {
        let (head, body) = raw
            .split_first_chunk::<4>()
            .ok_or_else(|| invalid("ACL value shorter than its header"))?;
        if u32::from_le_bytes(*head) != VERSION || body.len() % 8 != 0 {
            return Err(invalid(format!(
                "ACL value of {} bytes is not a version 2 POSIX ACL",
                raw.len()
            )));
        }
        let flags = if default {
            Flag::DEFAULT
        } else {
            Flag::empty()
        };
        body.chunks_exact(8)
            .map(|e| {
                let tag = u16::from_le_bytes([e[0], e[1]]);
                let perm = u16::from_le_bytes([e[2], e[3]]);
                let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
                let (kind, name) = match tag {
                    USER_OBJ => (AclEntryKind::User, String::new()),
                    USER => (
                        AclEntryKind::User,
                        names::user_name(id).unwrap_or_else(|| id.to_string()),
                    ),
                    GROUP_OBJ => (AclEntryKind::Group, String::new()),
                    GROUP => (
                        AclEntryKind::Group,
                        names::group_name(id).unwrap_or_else(|| id.to_string()),
                    ),
                    MASK => (AclEntryKind::Mask, String::new()),
                    OTHER => (AclEntryKind::Other, String::new()),
                    t => return Err(invalid(format!("unknown ACL entry tag {t:#x}"))),
                };
                Ok(AclEntry {
                    kind,
                    name,
                    perms: Perm::from_bits_truncate(u32::from(perm & 7)),
                    flags,
                    allow: true,
                })
            })
            .collect()
    }

    /// The raw value for `entries` (as [`decode`] gives them, or parsed from
    /// the text). Names are looked up in the `names` cache, a number stands
    /// for itself; a missing mask is computed as setfacl does.
    pub(crate) fn encode(entries: &[AclEntry]) -> io::Result<Vec<u8>> {
        let mut raw: Vec<(u16, u32, u16)> = Vec::with_capacity(entries.len() + 1);
        for e in entries {
            if !e.allow {
                return Err(invalid("a POSIX ACL has no deny entries"));
            }
            let perm = (e.perms.bits() & 7) as u16;
            let (tag, id) = match (e.kind, e.name.as_str()) {
                (AclEntryKind::User, "") => (USER_OBJ, NO_ID),
                (AclEntryKind::User, n) => (USER, id_of(n, names::uid_of, "user")?),
                (AclEntryKind::Group, "") => (GROUP_OBJ, NO_ID),
                (AclEntryKind::Group, n) => (GROUP, id_of(n, names::gid_of, "group")?),
                (AclEntryKind::Mask, _) => (MASK, NO_ID),
                (AclEntryKind::Other, _) => (OTHER, NO_ID),
                (k, _) => return Err(invalid(format!("ACL entry of kind {k} on Linux"))),
            };
            raw.push((tag, id, perm));
        }
        raw.sort_unstable();
        raw.dedup_by_key(|(t, id, _)| (*t, *id));
        for need in [USER_OBJ, GROUP_OBJ, OTHER] {
            if !raw.iter().any(|(t, _, _)| *t == need) {
                return Err(invalid("an ACL needs user::, group:: and other:: entries"));
            }
        }
        let named = raw.iter().any(|(t, _, _)| *t == USER || *t == GROUP);
        if named && !raw.iter().any(|(t, _, _)| *t == MASK) {
            let mask = raw
                .iter()
                .filter(|(t, _, _)| matches!(*t, USER | GROUP | GROUP_OBJ))
                .fold(0, |m, (_, _, p)| m | p);
            raw.push((MASK, NO_ID, mask));
            raw.sort_unstable();
        }
        let mut out = Vec::with_capacity(4 + 8 * raw.len());
        out.extend_from_slice(&VERSION.to_le_bytes());
        for (tag, id, perm) in raw {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&perm.to_le_bytes());
            out.extend_from_slice(&id.to_le_bytes());
        }
        Ok(out)
    }

    /// A user or group id from its name here, or from a number.
    fn id_of(name: &str, lookup: fn(&str) -> Option<u32>, what: &str) -> io::Result<u32> {
        lookup(name)
            .or_else(|| name.parse().ok())
            .ok_or_else(|| invalid(format!("unknown {what} name: {name:?}")))
    }

    /// Entries of `text`, for one ACL (access or default) at a time.
    fn parse(text: &str) -> io::Result<Vec<AclEntry>> {
        exacl::from_str(text)
    }

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
            match decode(raw, false).and_then(|e| {
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
        if let (true, Some(raw)) = (is_dir, &listing.acl_default) {
            match decode(raw, true).and_then(|e| {
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::unix::ffi::OsStrExt;

    use exacl::AclOption;

    use super::linux::{decode, encode};
    use crate::xattrs::{ACL_ACCESS, ACL_DEFAULT, Node};

    fn raw(node: &Node<'_>, name: &[u8]) -> Vec<u8> {
        node.get(std::ffi::OsStr::from_bytes(name))
            .unwrap()
            .expect("the ACL is set")
    }

    /// What libacl writes and exacl reads, entry for entry: the text from
    /// the raw value is exacl's text, and encoding that text gives libacl's
    /// bytes back.
    #[test]
    fn raw_values_match_libacl_and_exacl() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let d = tmp.path().join("d");
        std::fs::create_dir(&d).unwrap();
        // A named user with a name (root), one without (a number), a named
        // group, and the mask libacl computes.
        let access = exacl::from_str(
            "allow::user::read,write\nallow::user:root:read\nallow::user:4000000:read,write\n\
             allow::group::read\nallow::group:root:read,execute\nallow::other::\n",
        )
        .unwrap();
        exacl::setfacl(&[&f, &d], &access, AclOption::ACCESS_ACL).unwrap();
        exacl::setfacl(&[&d], &access, AclOption::DEFAULT_ACL).unwrap();
        for (path, name, opt, default) in [
            (&f, ACL_ACCESS, AclOption::ACCESS_ACL, false),
            (&d, ACL_ACCESS, AclOption::ACCESS_ACL, false),
            (&d, ACL_DEFAULT, AclOption::DEFAULT_ACL, true),
        ] {
            let bytes = raw(&Node::Path(path), name);
            let ours = decode(&bytes, default).unwrap();
            let theirs = exacl::getfacl(path, opt).unwrap();
            assert_eq!(
                exacl::to_string(&ours).unwrap(),
                exacl::to_string(&theirs).unwrap(),
                "{path:?} {default}"
            );
            assert!(exacl::to_string(&ours).unwrap().contains("user:4000000:"));
            assert_eq!(encode(&ours).unwrap(), bytes, "{path:?} {default}");
        }
    }

    #[test]
    fn bad_values_and_entries_are_errors_not_panics() {
        for bad in [&b""[..], b"\x02\0\0", b"\x01\0\0\0", b"\x02\0\0\0\x01\0"] {
            assert!(decode(bad, false).is_err(), "{bad:?}");
        }
        let unknown_tag = [2, 0, 0, 0, 0x40, 0, 7, 0, 0, 0, 0, 0];
        assert!(decode(&unknown_tag, false).is_err());
        let no_other = exacl::from_str("allow::user::read\nallow::group::read\n").unwrap();
        assert!(encode(&no_other).is_err());
        let no_such = exacl::from_str(
            "allow::user::read\nallow::user:rewind-no-such-user:read\nallow::group::read\nallow::other::\n",
        )
        .unwrap();
        let e = encode(&no_such).unwrap_err().to_string();
        assert!(e.contains("rewind-no-such-user"), "{e}");
        // A named entry without a mask gets one, as setfacl gives it.
        let no_mask = exacl::from_str(
            "allow::user::read\nallow::user:0:read,write\nallow::group::read\nallow::other::\n",
        )
        .unwrap();
        let v = encode(&no_mask).unwrap();
        let back = decode(&v, false).unwrap();
        assert!(
            back.iter()
                .any(|e| e.kind == exacl::AclEntryKind::Mask && e.perms.bits() & 7 == 6),
            "{back:?}"
        );
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) use other::{apply, read};

#[cfg(not(target_os = "linux"))]
mod other {
    use exacl::AclOption;

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
