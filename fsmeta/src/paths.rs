//! Reaching an object without following symlinks and without path-length
//! limits: directory descriptors walked one component at a time, and the
//! path forms the path-only APIs (xattr `l*` calls, libacl) need.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{CWD, Mode, OFlags, openat};

/// Paths of this many bytes or more are refused by path-based system calls
/// (`PATH_MAX`, counting the terminating NUL: 4096 on Linux, 1024 on
/// macOS). From this length on, [`read_meta`](crate::read_meta) walks the
/// path one directory at a time.
#[cfg(target_os = "linux")]
pub(crate) const LONG_PATH: usize = 4096;
/// See the Linux value.
#[cfg(not(target_os = "linux"))]
pub(crate) const LONG_PATH: usize = 1024;

#[cfg(target_os = "linux")]
fn dir_flags() -> OFlags {
    // O_PATH: no read permission needed, nothing opened but the name.
    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

#[cfg(not(target_os = "linux"))]
fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Open directory `path` of any length by walking it one component at a
/// time with `openat(O_DIRECTORY|O_NOFOLLOW)` (`O_PATH` on Linux): no
/// component is followed if it is a symlink, intermediate ones included
/// (that fails with `ENOTDIR` or `ELOOP`). `..` is taken as the parent of
/// what was opened so far. The result serves as the `dir` of the `*_at`
/// functions; on Linux it cannot be read from.
pub fn open_dir_nofollow_long(path: &Path) -> io::Result<OwnedFd> {
    let mut cur: OwnedFd = if path.has_root() {
        openat(CWD, "/", dir_flags(), Mode::empty())?
    } else {
        openat(CWD, ".", dir_flags(), Mode::empty())?
    };
    for comp in path.components() {
        let name: &OsStr = match comp {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => continue,
            Component::ParentDir => OsStr::new(".."),
            Component::Normal(n) => n,
        };
        cur = openat(&cur, name, dir_flags(), Mode::empty())?;
    }
    Ok(cur)
}

/// A path that path-based calls (`std::fs`) accept for an object whatever
/// the length of its real path (see [`reach`]); it holds the descriptor the
/// short path goes through, so keep it while the path is used.
#[derive(Debug)]
pub struct Reach {
    _dir: Option<OwnedFd>,
    path: PathBuf,
}

impl Reach {
    /// The path to hand to `std::fs`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `path` itself when it is shorter than `PATH_MAX`. A longer one (on
/// Linux) becomes `/proc/self/fd/<dir>/<name>` through a descriptor of its
/// directory opened with [`open_dir_nofollow_long`] (no symlink followed
/// on the way); elsewhere it stays as it is and calls on it fail as before.
pub fn reach(path: &Path) -> io::Result<Reach> {
    if path.as_os_str().len() < LONG_PATH || !cfg!(target_os = "linux") {
        return Ok(Reach {
            _dir: None,
            path: path.to_path_buf(),
        });
    }
    let (parent, name) = match path.file_name() {
        Some(name) => (path.parent().unwrap_or(Path::new("/")), name),
        None => return reach_dir(path),
    };
    let dir = open_dir_nofollow_long(parent)?;
    let path = fd_path(dir.as_fd())?.join(name);
    Ok(Reach {
        _dir: Some(dir),
        path,
    })
}

/// [`reach`] for a directory whose entries are then reached by joining
/// their names (one descriptor for all of them): `/proc/self/fd/<dir>` on
/// Linux when the path of an entry (up to 255 more bytes) could be too long.
pub fn reach_dir(path: &Path) -> io::Result<Reach> {
    if path.as_os_str().len() + 256 < LONG_PATH || !cfg!(target_os = "linux") {
        return Ok(Reach {
            _dir: None,
            path: path.to_path_buf(),
        });
    }
    let dir = open_dir_nofollow_long(path)?;
    let path = fd_path(dir.as_fd())?;
    Ok(Reach {
        _dir: Some(dir),
        path,
    })
}

/// A path naming `name` inside `dir`, for path-only calls that do not
/// follow their final component (xattr `l*` calls). On Linux it goes
/// through `/proc/self/fd/<dir>/<name>`, so its length does not depend on
/// where `dir` is; on macOS it is the directory's current path joined with
/// `name`.
pub(crate) fn at_path(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<PathBuf> {
    if dir.as_raw_fd() == CWD.as_raw_fd() {
        return Ok(PathBuf::from(name));
    }
    Ok(fd_path(dir)?.join(name))
}

/// A path naming the object `fd` refers to, for path-only calls that follow
/// their final component (libacl).
#[cfg(target_os = "linux")]
pub(crate) fn fd_path(fd: BorrowedFd<'_>) -> io::Result<PathBuf> {
    Ok(PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())))
}

/// A path naming the object `fd` refers to, for path-only calls that follow
/// their final component (exacl, `chflags`).
#[cfg(not(target_os = "linux"))]
pub(crate) fn fd_path(fd: BorrowedFd<'_>) -> io::Result<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let p = rustix::fs::getpath(fd)?;
    Ok(PathBuf::from(std::ffi::OsString::from_vec(p.into_bytes())))
}

/// Where an object to read is: a path short enough for path-based calls,
/// or a name in an open directory.
#[derive(Clone, Copy)]
pub(crate) enum Loc<'a> {
    Path(&'a Path),
    At(BorrowedFd<'a>, &'a OsStr),
}

impl<'a> Loc<'a> {
    /// The `(dirfd, name)` pair for `*at` calls.
    pub(crate) fn at(&self) -> (BorrowedFd<'a>, &'a OsStr) {
        match *self {
            Loc::Path(p) => (CWD.as_fd(), p.as_os_str()),
            Loc::At(dir, name) => (dir, name),
        }
    }

    /// A path for the `l*` calls.
    pub(crate) fn path(&self) -> io::Result<PathBuf> {
        match *self {
            Loc::Path(p) => Ok(p.to_path_buf()),
            Loc::At(dir, name) => at_path(dir, name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_plain_dirs_and_refuses_a_symlinked_component() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        std::os::unix::fs::symlink("a", t.path().join("s")).unwrap();
        let fd = open_dir_nofollow_long(&t.path().join("a/./b/..")).unwrap();
        let st = rustix::fs::fstat(&fd).unwrap();
        let want = std::fs::metadata(t.path().join("a")).unwrap();
        assert_eq!(st.st_ino, std::os::unix::fs::MetadataExt::ino(&want));
        let err = open_dir_nofollow_long(&t.path().join("s/b")).unwrap_err();
        let code = err.raw_os_error();
        assert!(
            code == Some(rustix::io::Errno::NOTDIR.raw_os_error())
                || code == Some(rustix::io::Errno::LOOP.raw_os_error()),
            "{err}"
        );
    }
}
