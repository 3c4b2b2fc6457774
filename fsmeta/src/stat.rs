//! `lstat` in one shape for every OS: statx on Linux (for the birth time),
//! `fstatat` elsewhere (macOS has `st_birthtime` and `st_flags` in it).

use std::ffi::OsStr;
use std::io;
use std::os::fd::BorrowedFd;

use rustix::fs::{AtFlags, FileType, Stat};

use crate::meta::{FileKind, FileTime};

/// What one `lstat` tells, independent of the OS's struct.
#[derive(Clone, Debug)]
pub(crate) struct RawStat {
    pub kind: FileKind,
    /// Permission bits only (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Allocated 512-byte blocks.
    pub blocks: u64,
    pub atime: FileTime,
    pub mtime: FileTime,
    pub ctime: FileTime,
    pub btime: Option<FileTime>,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub rdev: u64,
    pub flags: Option<u32>,
}

/// `name` in `dir`, never following a final symlink.
#[cfg(target_os = "linux")]
pub(crate) fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<RawStat> {
    statx_or_stat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
}

/// The object an open descriptor refers to.
#[cfg(target_os = "linux")]
pub(crate) fn stat_fd(fd: BorrowedFd<'_>) -> io::Result<RawStat> {
    statx_or_stat(fd, OsStr::new(""), AtFlags::EMPTY_PATH)
}

#[cfg(target_os = "linux")]
fn statx_or_stat(dir: BorrowedFd<'_>, name: &OsStr, flags: AtFlags) -> io::Result<RawStat> {
    use rustix::fs::{StatxFlags, makedev, statx};
    use rustix::io::Errno;

    let x = match statx(
        dir,
        name,
        flags,
        StatxFlags::BASIC_STATS | StatxFlags::BTIME,
    ) {
        Ok(x) => x,
        // Kernels before 4.11, or a seccomp filter that refuses statx.
        Err(Errno::NOSYS | Errno::PERM) => {
            return Ok(from_stat(&rustix::fs::statat(dir, name, flags)?));
        }
        Err(e) => return Err(e.into()),
    };
    let mode = u32::from(x.stx_mode);
    let ts = |t: rustix::fs::StatxTimestamp| FileTime::from_parts(t.tv_sec, i64::from(t.tv_nsec));
    let has_btime = x.stx_mask & StatxFlags::BTIME.bits() != 0;
    Ok(RawStat {
        kind: FileKind::from_file_type(FileType::from_raw_mode(mode)),
        mode: mode & 0o7777,
        uid: x.stx_uid,
        gid: x.stx_gid,
        size: x.stx_size,
        blocks: x.stx_blocks,
        atime: ts(x.stx_atime),
        mtime: ts(x.stx_mtime),
        ctime: ts(x.stx_ctime),
        btime: has_btime.then(|| ts(x.stx_btime)),
        dev: makedev(x.stx_dev_major, x.stx_dev_minor),
        ino: x.stx_ino,
        nlink: u64::from(x.stx_nlink),
        rdev: makedev(x.stx_rdev_major, x.stx_rdev_minor),
        flags: None,
    })
}

/// `name` in `dir`, never following a final symlink.
#[cfg(not(target_os = "linux"))]
pub(crate) fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<RawStat> {
    Ok(from_stat(&rustix::fs::statat(
        dir,
        name,
        AtFlags::SYMLINK_NOFOLLOW,
    )?))
}

/// The object an open descriptor refers to.
#[cfg(not(target_os = "linux"))]
pub(crate) fn stat_fd(fd: BorrowedFd<'_>) -> io::Result<RawStat> {
    Ok(from_stat(&rustix::fs::fstat(fd)?))
}

// The field types of `struct stat` differ between OSes and architectures
// (i64 here, i32 or u16 there), so some of these casts are no-ops on one
// target and needed on another.
#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
fn from_stat(st: &Stat) -> RawStat {
    let mode = st.st_mode as u32;
    #[cfg(target_os = "macos")]
    let (btime, flags) = (
        Some(FileTime::from_parts(
            st.st_birthtime as i64,
            st.st_birthtime_nsec as i64,
        )),
        Some(st.st_flags as u32),
    );
    #[cfg(not(target_os = "macos"))]
    let (btime, flags) = (None, None);
    RawStat {
        kind: FileKind::from_file_type(FileType::from_raw_mode(mode as _)),
        mode: mode & 0o7777,
        uid: st.st_uid as u32,
        gid: st.st_gid as u32,
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: FileTime::from_parts(st.st_atime as i64, st.st_atime_nsec as i64),
        mtime: FileTime::from_parts(st.st_mtime as i64, st.st_mtime_nsec as i64),
        ctime: FileTime::from_parts(st.st_ctime as i64, st.st_ctime_nsec as i64),
        btime,
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
        nlink: st.st_nlink as u64,
        rdev: st.st_rdev as u64,
        flags,
    }
}
