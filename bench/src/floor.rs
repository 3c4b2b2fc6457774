//! The least a capture or a restore of a tree asks of the filesystem, as a
//! reference for the metadata part: the same system calls rewind cannot
//! avoid, and nothing else (no hashing, no compression, no repository).
//!
//! - capture: per directory `open` and `getdents`; per object `openat`,
//!   `fstat`, the content read (files), and with `xattrs` the listing and
//!   every value (`flistxattr`, `fgetxattr`), the ACLs among them.
//! - restore: per directory `mkdirat`; per file `openat(O_CREAT|O_EXCL)`
//!   and `write`; per object, with `xattrs`, one `fsetxattr` per
//!   attribute (the ACLs as their raw `system.posix_acl_*` values), then
//!   `fchmod` and `futimens`; directories after their children.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use rustix::fs::{Mode, OFlags, Timespec, Timestamps, XattrFlags};

/// What a restore needs of one object.
struct Meta {
    mode: u32,
    times: [(i64, i64); 2],
    xattrs: Vec<(OsString, Vec<u8>)>,
}

/// A directory of the tree, loaded into memory (content included).
pub struct Tree {
    meta: Meta,
    files: Vec<(OsString, Meta, Vec<u8>)>,
    dirs: Vec<(OsString, Tree)>,
}

fn dir_fd(path: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("open {}", path.display()))
}

fn at(dir: BorrowedFd<'_>, name: &OsStr, flags: OFlags) -> Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("openat {}", name.display()))
}

/// The entries of directory `fd`, sorted.
fn names(fd: BorrowedFd<'_>) -> Result<Vec<OsString>> {
    let mut names = Vec::new();
    for e in rustix::fs::Dir::read_from(fd).context("readdir")? {
        let e = e.context("readdir")?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Every attribute of `fd`, names and values (values up to 64 KiB).
fn read_xattrs(fd: BorrowedFd<'_>, buf: &mut Vec<u8>) -> Result<Vec<(OsString, Vec<u8>)>> {
    buf.resize(64 * 1024, 0);
    let n = rustix::fs::flistxattr(fd, &mut buf[..]).context("flistxattr")?;
    let names: Vec<OsString> = buf[..n]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| OsStr::from_bytes(n).to_owned())
        .collect();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let n = rustix::fs::fgetxattr(fd, &name, &mut buf[..]).context("fgetxattr")?;
        out.push((name, buf[..n].to_vec()));
    }
    Ok(out)
}

fn meta_of(fd: BorrowedFd<'_>, buf: &mut Vec<u8>) -> Result<Meta> {
    let st = rustix::fs::fstat(fd).context("fstat")?;
    Ok(Meta {
        mode: st.st_mode & 0o7777,
        times: [
            (st.st_atime, st.st_atime_nsec as i64),
            (st.st_mtime, st.st_mtime_nsec as i64),
        ],
        xattrs: read_xattrs(fd, buf)?,
    })
}

impl Tree {
    /// Load `root` (untimed): a tree of directories and regular files.
    pub fn load(root: &Path) -> Result<Tree> {
        let fd = dir_fd(root)?;
        Tree::load_at(fd, &mut Vec::new()).with_context(|| root.display().to_string())
    }

    fn load_at(fd: OwnedFd, buf: &mut Vec<u8>) -> Result<Tree> {
        let mut tree = Tree {
            meta: meta_of(fd.as_fd(), buf)?,
            files: Vec::new(),
            dirs: Vec::new(),
        };
        for name in names(fd.as_fd())? {
            let child = at(fd.as_fd(), &name, OFlags::RDONLY)?;
            let st = rustix::fs::fstat(&child)?;
            if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory {
                tree.dirs.push((name, Tree::load_at(child, buf)?));
            } else {
                let meta = meta_of(child.as_fd(), buf)?;
                let mut data = Vec::new();
                File::from(child).read_to_end(&mut data)?;
                tree.files.push((name, meta, data));
            }
        }
        Ok(tree)
    }
}

/// Read `root` as a capture must (see the module doc), `xattrs` or not;
/// returns the seconds taken.
pub fn capture(root: &Path, xattrs: bool) -> Result<f64> {
    let t = Instant::now();
    let mut content = Vec::with_capacity(1 << 20);
    let mut buf = Vec::new();
    capture_at(dir_fd(root)?, xattrs, &mut content, &mut buf)
        .with_context(|| root.display().to_string())?;
    Ok(t.elapsed().as_secs_f64())
}

fn capture_at(fd: OwnedFd, xattrs: bool, content: &mut Vec<u8>, buf: &mut Vec<u8>) -> Result<()> {
    rustix::fs::fstat(&fd)?;
    if xattrs {
        read_xattrs(fd.as_fd(), buf)?;
    }
    for name in names(fd.as_fd())? {
        let child = at(fd.as_fd(), &name, OFlags::RDONLY)?;
        let st = rustix::fs::fstat(&child)?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory {
            capture_at(child, xattrs, content, buf)?;
        } else {
            if xattrs {
                read_xattrs(child.as_fd(), buf)?;
            }
            content.clear();
            File::from(child).read_to_end(content)?;
        }
    }
    Ok(())
}

fn apply(fd: BorrowedFd<'_>, m: &Meta) -> Result<()> {
    for (name, value) in &m.xattrs {
        rustix::fs::fsetxattr(fd, name, value, XattrFlags::empty())
            .with_context(|| format!("fsetxattr {}", name.display()))?;
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(m.mode)).context("fchmod")?;
    let ts = |(s, ns): (i64, i64)| Timespec {
        tv_sec: s,
        tv_nsec: ns,
    };
    let times = Timestamps {
        last_access: ts(m.times[0]),
        last_modification: ts(m.times[1]),
    };
    rustix::fs::futimens(fd, &times).context("futimens")?;
    Ok(())
}

/// Write `tree` to the new directory `dest` as a restore must (see the
/// module doc); returns the seconds taken.
pub fn restore(tree: &Tree, dest: &Path) -> Result<f64> {
    let t = Instant::now();
    rustix::fs::mkdir(dest, Mode::from_raw_mode(0o700))
        .with_context(|| format!("mkdir {}", dest.display()))?;
    restore_at(tree, dir_fd(dest)?).with_context(|| dest.display().to_string())?;
    Ok(t.elapsed().as_secs_f64())
}

fn restore_at(tree: &Tree, fd: OwnedFd) -> Result<()> {
    for (name, meta, data) in &tree.files {
        let f = at(
            fd.as_fd(),
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
        )?;
        let mut f = File::from(f);
        f.write_all(data)?;
        apply(f.as_fd(), meta)?;
    }
    for (name, sub) in &tree.dirs {
        rustix::fs::mkdirat(&fd, name, Mode::from_raw_mode(0o700))
            .with_context(|| format!("mkdirat {}", name.display()))?;
        let child = at(fd.as_fd(), name, OFlags::RDONLY | OFlags::DIRECTORY)?;
        restore_at(sub, child)?;
    }
    apply(fd.as_fd(), &tree.meta)
}

#[cfg(test)]
mod tests {
    use rustix::fs::AtFlags;

    use super::*;

    fn lstat(p: &Path) -> rustix::fs::Stat {
        rustix::fs::statat(rustix::fs::CWD, p, AtFlags::SYMLINK_NOFOLLOW).unwrap()
    }

    #[test]
    fn a_floor_restore_is_a_copy() {
        let d = std::env::temp_dir().join(format!("rewind-bench-floor-{}", std::process::id()));
        let src = d.join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("a"), b"alpha").unwrap();
        std::fs::write(src.join("sub/b"), b"beta").unwrap();
        xattr::set(src.join("sub/b"), "user.k", b"value").unwrap();
        xattr::set(src.join("sub"), "user.d", b"dir").unwrap();
        std::fs::set_permissions(
            src.join("a"),
            std::os::unix::fs::PermissionsExt::from_mode(0o640),
        )
        .unwrap();
        assert!(capture(&src, true).unwrap() >= 0.0);
        let tree = Tree::load(&src).unwrap();
        let dest = d.join("dest");
        restore(&tree, &dest).unwrap();
        assert_eq!(std::fs::read(dest.join("sub/b")).unwrap(), b"beta");
        assert_eq!(
            xattr::get(dest.join("sub/b"), "user.k").unwrap().as_deref(),
            Some(&b"value"[..])
        );
        assert_eq!(
            xattr::get(dest.join("sub"), "user.d").unwrap().as_deref(),
            Some(&b"dir"[..])
        );
        let (s, r) = (lstat(&src.join("a")), lstat(&dest.join("a")));
        assert_eq!(r.st_mode, s.st_mode);
        assert_eq!((r.st_mtime, r.st_mtime_nsec), (s.st_mtime, s.st_mtime_nsec));
        let (s, r) = (lstat(&src.join("sub")), lstat(&dest.join("sub")));
        assert_eq!((r.st_mtime, r.st_mtime_nsec), (s.st_mtime, s.st_mtime_nsec));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
