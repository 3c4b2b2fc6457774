//! Applying a recorded [`FileMeta`] to an object restore has created.
//!
//! Order, and why:
//! 1. extended attributes (all but `security.capability`);
//! 2. ACLs: access, then a directory's default ACL;
//! 3. ownership — Linux clears setuid/setgid bits and file capabilities on
//!    every change of owner, so the mode and the capability come after it;
//! 4. mode;
//! 5. `security.capability`;
//! 6. times (atime and mtime with nanoseconds; nothing above touches mtime);
//! 7. BSD flags (macOS) last, because `uchg`/`schg` would refuse the time
//!    change (and anything else).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;

use rustix::fs::{AtFlags, Gid, Mode, Timespec, Timestamps, UTIME_OMIT, Uid};

use crate::meta::{ApplyOptions, FileKind, FileMeta, MetaIssue};
use crate::paths::{at_path, fd_path};
use crate::stat::{RawStat, stat_at, stat_fd};
use crate::xattrs::{self, Node};
use crate::{acl, names};

fn timestamps(meta: &FileMeta, opts: ApplyOptions) -> Timestamps {
    let omit = Timespec {
        tv_sec: 0,
        tv_nsec: UTIME_OMIT as _,
    };
    Timestamps {
        last_access: if opts.atime {
            meta.atime.to_timespec()
        } else {
            omit
        },
        last_modification: meta.mtime.to_timespec(),
    }
}

/// The ids to change, given the target's current ones: `None` for an id
/// that is already right. Without `numeric_owner`, a recorded name that
/// exists here wins over the recorded number.
fn owner_change(st: &RawStat, meta: &FileMeta, opts: ApplyOptions) -> (Option<u32>, Option<u32>) {
    let (uid, gid) = if opts.numeric_owner {
        (meta.uid, meta.gid)
    } else {
        (
            meta.user
                .as_deref()
                .and_then(names::uid_of)
                .unwrap_or(meta.uid),
            meta.group
                .as_deref()
                .and_then(names::gid_of)
                .unwrap_or(meta.gid),
        )
    };
    (
        (uid != st.uid).then_some(uid),
        (gid != st.gid).then_some(gid),
    )
}

/// The target's current attribute names (an issue if they cannot be
/// listed; then nothing is removed).
fn current_names(node: &Node<'_>, issues: &mut Vec<MetaIssue>) -> Vec<OsString> {
    node.list().unwrap_or_else(|e| {
        issues.push(MetaIssue::new("xattrs", e));
        Vec::new()
    })
}

/// Apply `meta` to an open file or directory, in the order given in the
/// module doc. Every item the target refuses becomes one [`MetaIssue`]; the
/// remaining items are still applied.
///
/// ACLs (and macOS flags) go through a path naming the descriptor
/// (`/proc/self/fd/N` on Linux, `F_GETPATH` on macOS); everything else
/// through the descriptor itself. The descriptor must not be `O_PATH`.
pub fn apply_meta_fd(fd: BorrowedFd<'_>, meta: &FileMeta, opts: ApplyOptions) -> Vec<MetaIssue> {
    let mut issues = Vec::new();
    let st = match stat_fd(fd) {
        Ok(st) => st,
        Err(e) => {
            issues.push(MetaIssue::new("stat", e));
            return issues;
        }
    };
    let node = Node::Fd(fd);
    let current = current_names(&node, &mut issues);
    xattrs::apply(
        &node,
        &meta.xattrs,
        &current,
        opts.exact_xattrs,
        &mut issues,
    );
    acl::apply(
        || fd_path(fd),
        &node,
        st.kind == FileKind::Dir,
        meta,
        &current,
        &mut issues,
    );
    if opts.owner {
        let (uid, gid) = owner_change(&st, meta, opts);
        if (uid.is_some() || gid.is_some())
            && let Err(e) = rustix::fs::fchown(fd, uid.map(Uid::from_raw), gid.map(Gid::from_raw))
        {
            issues.push(MetaIssue::new("owner", e));
        }
    }
    if let Err(e) = rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode as _)) {
        issues.push(MetaIssue::new("mode", e));
    }
    xattrs::apply_capability(&node, &meta.xattrs, &mut issues);
    if let Err(e) = rustix::fs::futimens(fd, &timestamps(meta, opts)) {
        issues.push(MetaIssue::new("times", e));
    }
    apply_flags(|| fd_path(fd), &st, meta, &mut issues);
    issues
}

/// Apply `meta` to `name` inside directory `dir` without following `name`
/// if it is a symlink, in the order given in the module doc: for objects
/// that are not opened (symlinks, fifos, devices). Every item the target
/// refuses becomes one [`MetaIssue`].
///
/// For a symlink: its own xattrs (Linux allows only `trusted.*` and
/// `security.*` there; `user.*` is refused with `EPERM` and reported), its
/// own owner and times; no ACL, no mode, no flags. Extended attributes go
/// through `/proc/self/fd/<dir>/<name>` on Linux (the `l*` calls); ACLs
/// through the same path, only when `name` is not a symlink.
pub fn apply_meta_at<Fd: AsFd>(
    dir: Fd,
    name: &OsStr,
    meta: &FileMeta,
    opts: ApplyOptions,
) -> Vec<MetaIssue> {
    let dir = dir.as_fd();
    let mut issues = Vec::new();
    let st = match stat_at(dir, name) {
        Ok(st) => st,
        Err(e) => {
            issues.push(MetaIssue::new("stat", e));
            return issues;
        }
    };
    let is_link = st.kind == FileKind::Symlink;
    let path = match at_path(dir, name) {
        Ok(p) => Some(p),
        Err(e) => {
            issues.push(MetaIssue::new("xattrs", e));
            None
        }
    };
    let node = path.as_deref().map(Node::Path);

    if let (Some(node), Some(path)) = (&node, &path) {
        let current = current_names(node, &mut issues);
        xattrs::apply(node, &meta.xattrs, &current, opts.exact_xattrs, &mut issues);
        if !is_link {
            acl::apply(
                || Ok(path.clone()),
                node,
                st.kind == FileKind::Dir,
                meta,
                &current,
                &mut issues,
            );
        }
    }
    if opts.owner {
        let (uid, gid) = owner_change(&st, meta, opts);
        if (uid.is_some() || gid.is_some())
            && let Err(e) = rustix::fs::chownat(
                dir,
                name,
                uid.map(Uid::from_raw),
                gid.map(Gid::from_raw),
                AtFlags::SYMLINK_NOFOLLOW,
            )
        {
            issues.push(MetaIssue::new("owner", e));
        }
    }
    if !is_link && let Err(e) = chmod_nofollow(dir, name, meta.mode) {
        issues.push(MetaIssue::new("mode", e));
    }
    if let Some(node) = &node {
        xattrs::apply_capability(node, &meta.xattrs, &mut issues);
    }
    if let Err(e) = rustix::fs::utimensat(
        dir,
        name,
        &timestamps(meta, opts),
        AtFlags::SYMLINK_NOFOLLOW,
    ) {
        issues.push(MetaIssue::new("times", e));
    }
    if !is_link {
        apply_flags(|| at_path(dir, name), &st, meta, &mut issues);
    }
    issues
}

/// Set the mode of `name` in `dir` without following a symlink that may
/// have been put in its place (issue 21). Linux has no `fchmodat` that
/// refuses links before 6.6, so the object is opened `O_PATH|O_NOFOLLOW`
/// and changed through its descriptor's `/proc/self/fd` entry, which names
/// that inode and no other.
#[cfg(target_os = "linux")]
fn chmod_nofollow(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;

    use rustix::fs::{FileType, OFlags};
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
        return Err(io::Error::other(
            "a symlink stands where the restored object was made; its mode is not set",
        ));
    }
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rustix::fs::chmodat(
        rustix::fs::CWD,
        path.as_str(),
        Mode::from_raw_mode(mode as _),
        AtFlags::empty(),
    )?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn chmod_nofollow(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    rustix::fs::chmodat(
        dir,
        name,
        Mode::from_raw_mode(mode as _),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

/// Set the recorded BSD flags when they differ from the target's.
#[cfg(target_os = "macos")]
fn apply_flags(
    path: impl FnOnce() -> io::Result<PathBuf>,
    st: &RawStat,
    meta: &FileMeta,
    issues: &mut Vec<MetaIssue>,
) {
    use nix::sys::stat::FileFlag;
    let Some(want) = meta.flags else { return };
    if st.flags == Some(want) {
        return;
    }
    let set = |p: PathBuf| -> io::Result<()> {
        nix::unistd::chflags(p.as_path(), FileFlag::from_bits_retain(want as _))
            .map_err(io::Error::from)
    };
    if let Err(e) = path().and_then(set) {
        issues.push(MetaIssue::new("flags", e));
    }
}

/// This OS has no BSD flags: recorded non-zero flags are reported.
#[cfg(not(target_os = "macos"))]
fn apply_flags(
    _path: impl FnOnce() -> io::Result<PathBuf>,
    _st: &RawStat,
    meta: &FileMeta,
    issues: &mut Vec<MetaIssue>,
) {
    if let Some(f) = meta.flags
        && f != 0
    {
        issues.push(MetaIssue::new(
            "flags",
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("BSD file flags {f:#x} cannot be set on this system"),
            ),
        ));
    }
}

/// Create the fifo or device `name` in `dir` as recorded in `meta` (kind
/// and, for devices, `rdev`), with mode `0o600`: permissions, owner and the
/// rest come from [`apply_meta_at`] afterwards, so the node is never more
/// open than recorded. Creating devices needs privileges. Other kinds fail
/// with `InvalidInput`.
pub fn make_special_at<Fd: AsFd>(dir: Fd, name: &OsStr, meta: &FileMeta) -> io::Result<()> {
    let kind = meta.kind;
    if !matches!(
        kind,
        FileKind::Fifo | FileKind::CharDevice | FileKind::BlockDevice
    ) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot create a {} as a special file", kind.as_str()),
        ));
    }
    make_special(dir.as_fd(), name, kind, meta.rdev)
}

#[cfg(target_os = "linux")]
fn make_special(dir: BorrowedFd<'_>, name: &OsStr, kind: FileKind, rdev: u64) -> io::Result<()> {
    use rustix::fs::FileType;
    let (ft, dev) = match kind {
        FileKind::Fifo => (FileType::Fifo, 0),
        FileKind::CharDevice => (FileType::CharacterDevice, rdev),
        _ => (FileType::BlockDevice, rdev),
    };
    rustix::fs::mknodat(dir, name, ft, Mode::from_raw_mode(0o600), dev)?;
    Ok(())
}

/// macOS has no `mknodat`/`mkfifoat`: the directory's path is used.
#[cfg(not(target_os = "linux"))]
fn make_special(dir: BorrowedFd<'_>, name: &OsStr, kind: FileKind, rdev: u64) -> io::Result<()> {
    use nix::sys::stat::{Mode as NixMode, SFlag, mknod};
    let path = at_path(dir, name)?;
    let mode = NixMode::S_IRUSR | NixMode::S_IWUSR;
    let res = match kind {
        FileKind::Fifo => nix::unistd::mkfifo(&path, mode),
        FileKind::CharDevice => mknod(&path, SFlag::S_IFCHR, mode, rdev as _),
        _ => mknod(&path, SFlag::S_IFBLK, mode, rdev as _),
    };
    res.map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::FileTime;

    fn st(uid: u32, gid: u32) -> RawStat {
        RawStat {
            kind: FileKind::File,
            mode: 0o644,
            uid,
            gid,
            size: 0,
            blocks: 0,
            atime: FileTime::default(),
            mtime: FileTime::default(),
            ctime: FileTime::default(),
            btime: None,
            dev: 0,
            ino: 0,
            nlink: 1,
            rdev: 0,
            flags: None,
        }
    }

    #[test]
    fn owner_change_skips_ids_that_are_already_right() {
        let mut m = FileMeta::new(FileKind::File, 0o644);
        m.uid = 1000;
        m.gid = 1000;
        let o = ApplyOptions::default();
        assert_eq!(owner_change(&st(1000, 1000), &m, o), (None, None));
        assert_eq!(owner_change(&st(1000, 5), &m, o), (None, Some(1000)));
        // A known name wins over the recorded number, unless numeric.
        m.user = Some("root".into());
        m.group = Some("rewind-no-such-group".into());
        assert_eq!(owner_change(&st(0, 1000), &m, o), (None, None));
        let numeric = ApplyOptions {
            numeric_owner: true,
            ..o
        };
        assert_eq!(owner_change(&st(0, 1000), &m, numeric), (Some(1000), None));
    }
}
