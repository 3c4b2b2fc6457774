//! Reading a [`FileMeta`] from the OS.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, openat};

use crate::meta::{FileKind, FileMeta, MetaError, MetaIssue};
use crate::paths::{LONG_PATH, Loc, open_dir_nofollow_long};
use crate::stat::{RawStat, stat_at, stat_fd};
use crate::xattrs::{self, Node};
use crate::{acl, names, sparse};

/// Read the metadata of `path` without following a final symlink, dropping
/// the per-item issues [`read_meta_full`] would report (an xattr or ACL
/// that could not be read is simply absent). New code should prefer
/// [`read_meta_full`].
pub fn read_meta(path: &Path) -> Result<FileMeta, MetaError> {
    read_meta_full(path).map(|(meta, _)| meta)
}

/// Read everything the OS has about `path`, never following a final
/// symlink, and report the items that could not be read.
///
/// Fails only when the object itself cannot be looked at (gone, no search
/// permission on a parent, …). An extended attribute, ACL or sparse map that
/// cannot be read is left out of the [`FileMeta`] and reported as a
/// [`MetaIssue`].
///
/// A path of `PATH_MAX` bytes or more (4096 on Linux, 1024 on macOS) is opened one
/// directory at a time with [`open_dir_nofollow_long`], which follows no
/// symlink at all, intermediate components included.
pub fn read_meta_full(path: &Path) -> Result<(FileMeta, Vec<MetaIssue>), MetaError> {
    let err = |source| MetaError::Io {
        path: path.to_path_buf(),
        source,
    };
    if path.as_os_str().len() < LONG_PATH {
        return read_loc(Loc::Path(path)).map_err(err);
    }
    let (parent, name) = match path.file_name() {
        Some(name) => (path.parent().unwrap_or(Path::new("")), name),
        // Ends in `..` (or is a root): open it whole and look at ".".
        None => (path, OsStr::new(".")),
    };
    let dir = open_dir_nofollow_long(parent).map_err(err)?;
    read_loc(Loc::At(std::os::fd::AsFd::as_fd(&dir), name)).map_err(err)
}

/// Only what `stat` says about `path` (kind, mode, owner ids, size, times,
/// inode), never following a final symlink: enough for
/// [`FileMeta::same_state`], one system call. Extended attributes, ACLs,
/// names, the symlink target and the sparse map are left empty.
pub fn read_stat(path: &Path) -> Result<FileMeta, MetaError> {
    let err = |source| MetaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let st = if path.as_os_str().len() < LONG_PATH {
        let (dir, name) = Loc::Path(path).at();
        stat_at(dir, name).map_err(err)?
    } else {
        let (parent, name) = match path.file_name() {
            Some(name) => (path.parent().unwrap_or(Path::new("")), name),
            None => (path, OsStr::new(".")),
        };
        let dir = open_dir_nofollow_long(parent).map_err(err)?;
        stat_at(std::os::fd::AsFd::as_fd(&dir), name).map_err(err)?
    };
    Ok(from_stat(&st))
}

/// Read everything the OS has about `name` inside directory `dir`, never
/// following `name` if it is a symlink; `name` is one path component.
/// Errors and issues as for [`read_meta_full`]; the error's path is `name`.
///
/// On Linux extended attributes and ACLs are reached through
/// `/proc/self/fd/<dir>/<name>`, so `/proc` must be mounted.
pub fn read_meta_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
) -> Result<(FileMeta, Vec<MetaIssue>), MetaError> {
    read_loc(Loc::At(dir, name)).map_err(|source| MetaError::Io {
        path: PathBuf::from(name),
        source,
    })
}

fn read_loc(loc: Loc<'_>) -> io::Result<(FileMeta, Vec<MetaIssue>)> {
    let (dir, name) = loc.at();
    let st = stat_at(dir, name)?;
    let kind = st.kind;
    let symlink_target = if kind == FileKind::Symlink {
        Some(rustix::fs::readlinkat(dir, name, Vec::new())?.into_bytes())
    } else {
        None
    };

    let mut issues = Vec::new();
    let (xattrs, acl, default_acl) = match loc.path() {
        Ok(path) => {
            let listing = xattrs::read(&Node::Path(&path), &mut issues);
            let (acl, default_acl) = if kind == FileKind::Symlink {
                (None, None)
            } else {
                acl::read(&path, kind == FileKind::Dir, &listing, &mut issues)
            };
            (listing.xattrs, acl, default_acl)
        }
        Err(e) => {
            issues.push(MetaIssue::new("xattrs", e));
            (Vec::new(), None, None)
        }
    };

    let sparse = if kind == FileKind::File && st.blocks.saturating_mul(512) < st.size {
        match sparse_map(dir, name, &st) {
            Ok(s) => s,
            Err(e) => {
                issues.push(MetaIssue::new("sparse", e));
                None
            }
        }
    } else {
        None
    };

    let meta = FileMeta {
        user: names::user_name(st.uid),
        group: names::group_name(st.gid),
        symlink_target,
        xattrs,
        acl,
        default_acl,
        sparse,
        ..from_stat(&st)
    };
    Ok((meta, issues))
}

/// The fields of a [`FileMeta`] that `stat` gives.
fn from_stat(st: &RawStat) -> FileMeta {
    let kind = st.kind;
    FileMeta {
        kind,
        mode: st.mode,
        uid: st.uid,
        gid: st.gid,
        user: None,
        group: None,
        size: st.size,
        mtime: st.mtime,
        atime: st.atime,
        ctime: st.ctime,
        btime: st.btime,
        dev: st.dev,
        ino: st.ino,
        nlink: st.nlink,
        rdev: match kind {
            FileKind::CharDevice | FileKind::BlockDevice => st.rdev,
            _ => 0,
        },
        symlink_target: None,
        xattrs: Vec::new(),
        acl: None,
        default_acl: None,
        hardlink_group: (kind != FileKind::Dir && st.nlink > 1).then_some((st.dev, st.ino)),
        sparse: None,
        flags: st.flags,
    }
}

/// Open the regular file `name` without following it, without blocking and
/// without reading, and map its data extents, if it is still the object
/// `st` describes.
fn sparse_map(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    st: &RawStat,
) -> io::Result<Option<Vec<crate::Extent>>> {
    let fd = openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let file = File::from(fd);
    let now = stat_fd(std::os::fd::AsFd::as_fd(&file))?;
    if now.ino != st.ino || now.dev != st.dev {
        // Replaced since the stat: the next scan will see the new file.
        return Ok(None);
    }
    sparse::data_extents(&file)
}
