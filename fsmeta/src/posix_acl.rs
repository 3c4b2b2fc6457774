//! POSIX ACLs as Linux keeps them (the value of `system.posix_acl_access`
//! and `system.posix_acl_default`) and the text form rewind records.
//!
//! The text is exacl's (one entry a line, `allow:FLAGS:KIND:NAME:PERMS`,
//! e.g. `allow::user:alice:read,write` or `allow:default:mask::read`), so
//! repositories written while rewind used exacl on Linux read the same. It
//! is produced and parsed here rather than through exacl because exacl
//! links libacl on Linux, whose development files a fresh Debian machine
//! lacks (docs/decisions.md, "ACLs without libacl"); the kernel's value is
//! a simple record that needs no library.
//!
//! - [`to_text`] of [`decode`] is byte for byte what exacl's `getfacl` and
//!   `to_string` give for the same ACL (checked against `setfacl` in the
//!   tests below).
//! - [`parse`] accepts everything exacl's `from_str` accepts for a POSIX
//!   ACL: the five-, four- and three-field forms, the abbreviations
//!   (`d`, `u`, `g`, `m`, `o`, `rwx`, `r-x`), `#` comments, blank lines.
//! - [`encode`] gives the bytes libacl would write: entries sorted by tag
//!   and id, duplicates dropped, a mask computed when named entries lack
//!   one. Nothing here panics on bad input: every defect is an
//!   `InvalidData`/`InvalidInput` error that names it.

use std::io;

use crate::names;

/// The kind of an ACL entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    User,
    Group,
    Mask,
    Other,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Group => "group",
            Kind::Mask => "mask",
            Kind::Other => "other",
        }
    }

    fn parse(s: &str) -> io::Result<Kind> {
        Ok(match s {
            "user" | "u" => Kind::User,
            "group" | "g" => Kind::Group,
            "mask" | "m" => Kind::Mask,
            "other" | "o" => Kind::Other,
            _ => return Err(bad_text(format!("unknown ACL entry kind {s:?}"))),
        })
    }
}

/// One entry: an empty name on `user`/`group` is the owner (`user::`),
/// otherwise a user or group name, or a number where the id had no name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) kind: Kind,
    pub(crate) name: String,
    /// 4 read, 2 write, 1 execute.
    pub(crate) perms: u16,
    /// An entry of a directory's default ACL.
    pub(crate) default: bool,
}

const READ: u16 = 4;
const WRITE: u16 = 2;
const EXECUTE: u16 = 1;

// The kernel's record: a little-endian u32 version (2), then per entry a
// u16 tag, a u16 permission set and a u32 id, sorted by tag and then id.
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

fn bad_text(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.into())
}

/// The text of `entries`, one line each, each line ending in a newline.
pub(crate) fn to_text(entries: &[Entry]) -> String {
    let mut out = String::with_capacity(32 * entries.len());
    for e in entries {
        out.push_str("allow:");
        if e.default {
            out.push_str("default");
        }
        out.push(':');
        out.push_str(e.kind.word());
        out.push(':');
        out.push_str(&e.name);
        out.push(':');
        let words = [(READ, "read"), (WRITE, "write"), (EXECUTE, "execute")];
        let mut first = true;
        for (bit, word) in words {
            if e.perms & bit != 0 {
                if !first {
                    out.push(',');
                }
                out.push_str(word);
                first = false;
            }
        }
        out.push('\n');
    }
    out
}

/// A permission set: words (`read,write`) or abbreviations (`rw`, `r-x`).
fn parse_perms(s: &str) -> io::Result<u16> {
    let mut perms = 0;
    for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        perms |= match word {
            "read" => READ,
            "write" => WRITE,
            "execute" => EXECUTE,
            _ => {
                let mut p = 0;
                for c in word.chars() {
                    let bit = match c {
                        'r' => READ,
                        'w' => WRITE,
                        'x' => EXECUTE,
                        '-' => 0,
                        _ => return Err(bad_text(format!("unknown ACL permission {word:?}"))),
                    };
                    if p & bit != 0 {
                        return Err(bad_text(format!("unknown ACL permission {word:?}")));
                    }
                    p |= bit;
                }
                p
            }
        };
    }
    Ok(perms)
}

/// Whether a flags field says "default".
fn parse_flags(s: &str) -> io::Result<bool> {
    let mut default = false;
    for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match word {
            "default" | "d" => default = true,
            _ => return Err(bad_text(format!("unknown ACL flag {word:?}"))),
        }
    }
    Ok(default)
}

/// The entries of `text` (one ACL, access or default, at a time).
pub(crate) fn parse(text: &str) -> io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.splitn(5, ':').map(str::trim).collect();
        let (allow, flags, kind, name, perms) = match fields[..] {
            [a, f, k, n, p] => (a, f, k, n, p),
            [f, k, n, p] => ("allow", f, k, n, p),
            [k, n, p] => ("allow", "", k, n, p),
            _ => return Err(bad_text(format!("ACL entry {line:?} has too few fields"))),
        };
        match allow {
            "allow" => {}
            "deny" => return Err(bad_text("a POSIX ACL has no deny entries")),
            a => return Err(bad_text(format!("unknown ACL entry type {a:?}"))),
        }
        out.push(Entry {
            default: parse_flags(flags)?,
            kind: Kind::parse(kind)?,
            name: name.to_owned(),
            perms: parse_perms(perms)?,
        });
    }
    Ok(out)
}

/// The entries of a raw ACL value: names where the id has one here, else
/// the number; `default` marks a default ACL's entries.
pub(crate) fn decode(raw: &[u8], default: bool) -> io::Result<Vec<Entry>> {
    let (head, body) = raw
        .split_first_chunk::<4>()
        .ok_or_else(|| invalid("ACL value shorter than its header"))?;
    if u32::from_le_bytes(*head) != VERSION || body.len() % 8 != 0 {
        return Err(invalid(format!(
            "ACL value of {} bytes is not a version 2 POSIX ACL",
            raw.len()
        )));
    }
    body.chunks_exact(8)
        .map(|e| {
            let tag = u16::from_le_bytes([e[0], e[1]]);
            let perms = u16::from_le_bytes([e[2], e[3]]) & 7;
            let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            let (kind, name) = match tag {
                USER_OBJ => (Kind::User, String::new()),
                USER => (
                    Kind::User,
                    names::user_name(id).unwrap_or_else(|| id.to_string()),
                ),
                GROUP_OBJ => (Kind::Group, String::new()),
                GROUP => (
                    Kind::Group,
                    names::group_name(id).unwrap_or_else(|| id.to_string()),
                ),
                MASK => (Kind::Mask, String::new()),
                OTHER => (Kind::Other, String::new()),
                t => return Err(invalid(format!("unknown ACL entry tag {t:#x}"))),
            };
            Ok(Entry {
                kind,
                name,
                perms,
                default,
            })
        })
        .collect()
}

/// A user or group id from its name here, or from a number.
fn id_of(name: &str, lookup: fn(&str) -> Option<u32>, what: &str) -> io::Result<u32> {
    lookup(name)
        .or_else(|| name.parse().ok())
        .ok_or_else(|| invalid(format!("unknown {what} name: {name:?}")))
}

/// The raw value for `entries` (as [`decode`] gives them, or parsed from
/// the text). Names are looked up in the `names` cache, a number stands
/// for itself; a missing mask is computed as setfacl does.
pub(crate) fn encode(entries: &[Entry]) -> io::Result<Vec<u8>> {
    let mut raw: Vec<(u16, u32, u16)> = Vec::with_capacity(entries.len() + 1);
    for e in entries {
        let (tag, id) = match (e.kind, e.name.as_str()) {
            (Kind::User, "") => (USER_OBJ, NO_ID),
            (Kind::User, n) => (USER, id_of(n, names::uid_of, "user")?),
            (Kind::Group, "") => (GROUP_OBJ, NO_ID),
            (Kind::Group, n) => (GROUP, id_of(n, names::gid_of, "group")?),
            (Kind::Mask, _) => (MASK, NO_ID),
            (Kind::Other, _) => (OTHER, NO_ID),
        };
        raw.push((tag, id, e.perms & 7));
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

/// The kernel's value (for `system.posix_acl_access` or
/// `system.posix_acl_default`) of an ACL given in rewind's text form.
/// For tools and benchmarks that set ACLs without libacl.
pub fn posix_acl_value(text: &str) -> io::Result<Vec<u8>> {
    encode(&parse(text)?)
}

/// The text form of a kernel ACL value (`default`: the value came from
/// `system.posix_acl_default`).
pub fn posix_acl_text(raw: &[u8], default: bool) -> io::Result<String> {
    decode(raw, default).map(|e| to_text(&e))
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::process::Command;

    use super::*;
    use crate::xattrs::{ACL_ACCESS, ACL_DEFAULT, Node};

    fn raw(node: &Node<'_>, name: &[u8]) -> Vec<u8> {
        node.get(OsStr::from_bytes(name))
            .unwrap()
            .expect("the ACL is set")
    }

    fn setfacl(args: &[&str], path: &std::path::Path) {
        let st = Command::new("setfacl")
            .args(args)
            .arg(path)
            .status()
            .expect("setfacl (Debian package acl) runs");
        assert!(st.success(), "setfacl {args:?} {path:?}");
    }

    /// What libacl's `setfacl` writes, entry for entry: the text from the
    /// raw value is exacl's text (the form older repositories hold), and
    /// encoding that text gives libacl's bytes back.
    #[test]
    fn raw_values_match_setfacl_and_exacls_text() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let d = tmp.path().join("d");
        std::fs::create_dir(&d).unwrap();
        // A named user with a name (root), one without (a number), a named
        // group, and the mask libacl computes.
        let spec = "u::rw,u:root:r,u:4000000:rw,g::r,g:root:rx,o::-";
        setfacl(&["-m", spec], &f);
        setfacl(&["-m", spec], &d);
        setfacl(&["-d", "-m", spec], &d);
        let access = "allow::user::read,write\nallow::user:root:read\n\
                      allow::user:4000000:read,write\nallow::group::read\n\
                      allow::group:root:read,execute\nallow::mask::read,write,execute\n\
                      allow::other::\n";
        let default = access.replace("allow::", "allow:default:");
        for (path, name, is_default, want) in [
            (&f, ACL_ACCESS, false, access.to_owned()),
            (&d, ACL_ACCESS, false, access.to_owned()),
            (&d, ACL_DEFAULT, true, default),
        ] {
            let bytes = raw(&Node::Path(path), name);
            let text = posix_acl_text(&bytes, is_default).unwrap();
            assert_eq!(text, want, "{path:?} {is_default}");
            assert_eq!(posix_acl_value(&text).unwrap(), bytes, "{path:?}");
        }
    }

    #[test]
    fn exacls_other_forms_parse_to_the_same_entries() {
        let long = parse("allow::user::read,write\nallow:default:group:0:read\n").unwrap();
        let short = parse("  u::rw  # the owner\n\nd:g:0:r--\n").unwrap();
        assert_eq!(long, short);
        assert_eq!(
            parse("::user::rwx").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            to_text(&parse("o::x,w,r").unwrap()),
            "allow::other::read,write,execute\n"
        );
    }

    #[test]
    fn bad_values_and_entries_are_errors_not_panics() {
        for bad in [&b""[..], b"\x02\0\0", b"\x01\0\0\0", b"\x02\0\0\0\x01\0"] {
            assert!(decode(bad, false).is_err(), "{bad:?}");
        }
        let unknown_tag = [2, 0, 0, 0, 0x40, 0, 7, 0, 0, 0, 0, 0];
        assert!(decode(&unknown_tag, false).is_err());
        for bad in [
            "deny::user::read",
            "allow::everyone::read",
            "allow::user::readish",
            "allow:inherited:user::read",
            "user:read",
            "allow::user::rr",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(posix_acl_value("allow::user::read\nallow::group::read\n").is_err());
        let e = posix_acl_value(
            "allow::user::read\nallow::user:rewind-no-such-user:read\nallow::group::read\nallow::other::\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("rewind-no-such-user"), "{e}");
        // A named entry without a mask gets one, as setfacl gives it.
        let v = posix_acl_value(
            "allow::user::read\nallow::user:0:read,write\nallow::group::read\nallow::other::\n",
        )
        .unwrap();
        let back = decode(&v, false).unwrap();
        assert!(
            back.iter().any(|e| e.kind == Kind::Mask && e.perms == 6),
            "{back:?}"
        );
    }
}
