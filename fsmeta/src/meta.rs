use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, Timespec, Timestamps, UTIME_OMIT};
use serde::{Deserialize, Serialize};

/// The kind of a filesystem object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed).
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A Unix socket: recorded as seen, never recreated.
    Socket,
}

impl FileKind {
    /// A short lowercase name for output.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Dir => "dir",
            FileKind::Symlink => "symlink",
            FileKind::Fifo => "fifo",
            FileKind::CharDevice => "chardev",
            FileKind::BlockDevice => "blockdev",
            FileKind::Socket => "socket",
        }
    }
}

/// A point in time as the filesystem stores it: seconds and nanoseconds since
/// the Unix epoch. Seconds may be negative.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct FileTime {
    /// Seconds since 1970-01-01T00:00:00Z.
    pub sec: i64,
    /// Nanoseconds within the second, `0..1_000_000_000`.
    pub nsec: u32,
}

impl FileTime {
    fn from_parts(sec: i64, nsec: i64) -> Self {
        FileTime {
            sec,
            nsec: nsec.clamp(0, 999_999_999) as u32,
        }
    }

    fn to_timespec(self) -> Timespec {
        Timespec {
            tv_sec: self.sec,
            tv_nsec: self.nsec as _,
        }
    }
}

/// One extended attribute: name and value as raw bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    /// Full attribute name including its namespace (`user.foo`).
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    /// The value, of any size.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// A data extent of a sparse file: `len` bytes of data at `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    /// Byte offset of the extent.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Everything needed to recreate a path except its content bytes.
///
/// Fields not yet filled by [`read_meta`] stay at their empty value; the
/// format keeps room for them so repositories written now stay readable when
/// they are filled (xattrs, ACLs, owner names, hard-link groups, sparse maps,
/// BSD flags).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// What the object is.
    pub kind: FileKind,
    /// Permission bits including setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Owner name, where known.
    pub user: Option<String>,
    /// Group name, where known.
    pub group: Option<String>,
    /// Size in bytes as `lstat` reports it.
    pub size: u64,
    /// Last modification.
    pub mtime: FileTime,
    /// Last access.
    pub atime: FileTime,
    /// Last status change (recorded, cannot be restored).
    pub ctime: FileTime,
    /// Creation time, where the OS has it.
    pub btime: Option<FileTime>,
    /// Device of the filesystem holding the object.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Number of hard links.
    pub nlink: u64,
    /// Device number for character and block devices.
    pub rdev: u64,
    /// Target of a symlink, raw bytes, never followed.
    #[serde(with = "serde_bytes")]
    pub symlink_target: Option<Vec<u8>>,
    /// Extended attributes.
    pub xattrs: Vec<Xattr>,
    /// POSIX access ACL (Linux) or NFSv4 ACL (macOS), in text form.
    pub acl: Option<String>,
    /// POSIX default ACL of a directory, in text form.
    pub default_acl: Option<String>,
    /// Hard-link group: `(dev, ino)` of the shared inode when `nlink > 1`.
    pub hardlink_group: Option<(u64, u64)>,
    /// Data extents of a sparse file; `None` when the file has no holes.
    pub sparse: Option<Vec<Extent>>,
    /// BSD file flags (macOS `chflags`).
    pub flags: Option<u32>,
}

impl FileMeta {
    /// A meta of `kind` with mode `mode` and every other field empty or
    /// zero (for synthesised entries and tests).
    pub fn new(kind: FileKind, mode: u32) -> FileMeta {
        FileMeta {
            kind,
            mode,
            uid: 0,
            gid: 0,
            user: None,
            group: None,
            size: 0,
            mtime: FileTime::default(),
            atime: FileTime::default(),
            ctime: FileTime::default(),
            btime: None,
            dev: 0,
            ino: 0,
            nlink: 1,
            rdev: 0,
            symlink_target: None,
            xattrs: Vec::new(),
            acl: None,
            default_acl: None,
            hardlink_group: None,
            sparse: None,
            flags: None,
        }
    }

    /// True when two metas describe the same content state for change
    /// detection: same inode, size, mtime and ctime.
    pub fn same_state(&self, other: &FileMeta) -> bool {
        self.ino == other.ino
            && self.dev == other.dev
            && self.size == other.size
            && self.mtime == other.mtime
            && self.ctime == other.ctime
            && self.kind == other.kind
    }
}

/// Errors reading metadata.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    /// The OS refused or failed a call on `path`.
    #[error("{path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
}

impl MetaError {
    /// True when the path no longer exists.
    pub fn is_not_found(&self) -> bool {
        match self {
            MetaError::Io { source, .. } => source.kind() == io::ErrorKind::NotFound,
        }
    }

    /// The underlying I/O error.
    pub fn io(&self) -> &io::Error {
        match self {
            MetaError::Io { source, .. } => source,
        }
    }
}

/// Read the metadata of `path` without following a final symlink.
pub fn read_meta(path: &Path) -> Result<FileMeta, MetaError> {
    let err = |source| MetaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let md = fs::symlink_metadata(path).map_err(err)?;
    let ft = md.file_type();
    let kind = if ft.is_file() {
        FileKind::File
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_fifo() {
        FileKind::Fifo
    } else if ft.is_char_device() {
        FileKind::CharDevice
    } else if ft.is_block_device() {
        FileKind::BlockDevice
    } else {
        FileKind::Socket
    };
    let symlink_target = if kind == FileKind::Symlink {
        Some(
            fs::read_link(path)
                .map_err(err)?
                .into_os_string()
                .into_encoded_bytes(),
        )
    } else {
        None
    };
    let nlink = md.nlink();
    Ok(FileMeta {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        user: None,
        group: None,
        size: md.size(),
        mtime: FileTime::from_parts(md.mtime(), md.mtime_nsec()),
        atime: FileTime::from_parts(md.atime(), md.atime_nsec()),
        ctime: FileTime::from_parts(md.ctime(), md.ctime_nsec()),
        btime: md.created().ok().and_then(|t| {
            let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
            Some(FileTime::from_parts(
                d.as_secs() as i64,
                d.subsec_nanos() as i64,
            ))
        }),
        dev: md.dev(),
        ino: md.ino(),
        nlink,
        rdev: md.rdev(),
        symlink_target,
        xattrs: Vec::new(),
        acl: None,
        default_acl: None,
        hardlink_group: (kind == FileKind::File && nlink > 1).then_some((md.dev(), md.ino())),
        sparse: None,
        flags: None,
    })
}

/// What to apply when restoring metadata.
#[derive(Clone, Copy, Debug)]
pub struct ApplyOptions {
    /// Apply the access time as well as the modification time.
    pub atime: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions { atime: true }
    }
}

/// One metadata item that could not be applied.
#[derive(Debug)]
pub struct MetaIssue {
    /// Which item (`mode`, `times`, …).
    pub item: &'static str,
    /// Why it failed.
    pub error: io::Error,
}

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

/// Apply mode and times to an open file or directory. Mode comes before times
/// (changing the mode does not touch mtime, but keeping the order fixed makes
/// later items such as ownership slot in correctly).
pub fn apply_meta_fd(fd: BorrowedFd<'_>, meta: &FileMeta, opts: ApplyOptions) -> Vec<MetaIssue> {
    let mut issues = Vec::new();
    if let Err(e) = rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode as _)) {
        issues.push(MetaIssue {
            item: "mode",
            error: e.into(),
        });
    }
    if let Err(e) = rustix::fs::futimens(fd, &timestamps(meta, opts)) {
        issues.push(MetaIssue {
            item: "times",
            error: e.into(),
        });
    }
    issues
}

/// Apply metadata to `name` inside directory `dir` without following a
/// symlink (used for symlinks themselves, whose mode cannot be changed on
/// Linux).
pub fn apply_meta_at<Fd: AsFd>(
    dir: Fd,
    name: &OsStr,
    meta: &FileMeta,
    opts: ApplyOptions,
) -> Vec<MetaIssue> {
    let mut issues = Vec::new();
    if let Err(e) = rustix::fs::utimensat(
        dir,
        name.as_bytes(),
        &timestamps(meta, opts),
        AtFlags::SYMLINK_NOFOLLOW,
    ) {
        issues.push(MetaIssue {
            item: "times",
            error: e.into(),
        });
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_file_dir_and_symlink_without_following() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a");
        fs::write(&f, b"hello").unwrap();
        std::os::unix::fs::symlink("does/not/exist", dir.path().join("l")).unwrap();
        let m = read_meta(&f).unwrap();
        assert_eq!(m.kind, FileKind::File);
        assert_eq!(m.size, 5);
        let l = read_meta(&dir.path().join("l")).unwrap();
        assert_eq!(l.kind, FileKind::Symlink);
        assert_eq!(l.symlink_target.as_deref(), Some(&b"does/not/exist"[..]));
        assert_eq!(read_meta(dir.path()).unwrap().kind, FileKind::Dir);
        assert!(
            read_meta(&dir.path().join("nope"))
                .unwrap_err()
                .is_not_found()
        );
    }

    #[test]
    fn applies_mode_and_times_through_fd() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a");
        fs::write(&f, b"x").unwrap();
        let mut m = read_meta(&f).unwrap();
        m.mode = 0o640;
        m.mtime = FileTime {
            sec: 1_000_000_000,
            nsec: 123_456_789,
        };
        let file = fs::File::open(&f).unwrap();
        assert!(apply_meta_fd(file.as_fd(), &m, ApplyOptions::default()).is_empty());
        let back = read_meta(&f).unwrap();
        assert_eq!(back.mode, 0o640);
        assert_eq!(back.mtime, m.mtime);
    }
}
