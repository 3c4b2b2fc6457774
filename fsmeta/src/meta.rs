//! The data types: what rewind records about a path, and what applying it
//! back reports.

use std::fmt;
use std::io;
use std::path::PathBuf;

use rustix::fs::{FileType, Timespec};
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
    pub(crate) fn from_file_type(ft: FileType) -> FileKind {
        match ft {
            FileType::RegularFile => FileKind::File,
            FileType::Directory => FileKind::Dir,
            FileType::Symlink => FileKind::Symlink,
            FileType::Fifo => FileKind::Fifo,
            FileType::CharacterDevice => FileKind::CharDevice,
            FileType::BlockDevice => FileKind::BlockDevice,
            _ => FileKind::Socket,
        }
    }

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

    /// The kind and permission bits of `mode` as `ls -l` shows them
    /// (`drwxr-x---`).
    pub fn ls_mode(self, mode: u32) -> String {
        let mut s = String::from(match self {
            FileKind::Dir => 'd',
            FileKind::Symlink => 'l',
            FileKind::Fifo => 'p',
            FileKind::CharDevice => 'c',
            FileKind::BlockDevice => 'b',
            FileKind::Socket => 's',
            FileKind::File => '-',
        });
        for (i, c) in "rwxrwxrwx".chars().enumerate() {
            s.push(if mode & (0o400 >> i) != 0 { c } else { '-' });
        }
        s
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
    pub(crate) fn from_parts(sec: i64, nsec: i64) -> Self {
        FileTime {
            sec,
            nsec: nsec.clamp(0, 999_999_999) as u32,
        }
    }

    pub(crate) fn to_timespec(self) -> Timespec {
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
/// [`read_meta_full`](crate::read_meta_full) fills every field the OS has;
/// fields the OS does not have stay empty (`None`, empty vector, zero).
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
    /// Extended attributes, sorted by name. On Linux the two POSIX ACL
    /// attributes (`system.posix_acl_access`, `system.posix_acl_default`)
    /// are not here: they are [`acl`](Self::acl) and
    /// [`default_acl`](Self::default_acl).
    pub xattrs: Vec<Xattr>,
    /// Extended access ACL in `exacl`'s text form, one entry a line
    /// (`allow::user:alice:read,write`): the POSIX access ACL on Linux, only
    /// when it has entries beyond the mode bits; the NFSv4 ACL on macOS.
    /// Users and groups are named, or numbered where the id had no name.
    pub acl: Option<String>,
    /// POSIX default ACL of a directory (Linux), in the same text form.
    pub default_acl: Option<String>,
    /// Hard-link group: `(dev, ino)` of the shared inode when `nlink > 1`
    /// (never for directories).
    pub hardlink_group: Option<(u64, u64)>,
    /// Data extents of a sparse regular file, in offset order; `None` when
    /// the file has no holes (see [`data_extents`](crate::data_extents)).
    pub sparse: Option<Vec<Extent>>,
    /// BSD file flags (macOS `st_flags`, set with `chflags`); `None` on Linux.
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

/// What to apply when restoring metadata. `Default` applies everything,
/// mapping owners by name.
#[derive(Clone, Copy, Debug)]
pub struct ApplyOptions {
    /// Apply the access time as well as the modification time.
    pub atime: bool,
    /// Apply ownership (user and group). Without privileges a change of
    /// owner fails and is reported; a target that already has the wanted ids
    /// is left alone and reports nothing.
    pub owner: bool,
    /// Use the recorded numeric ids as they are. Otherwise a recorded user
    /// (group) name that exists on this system gives the id, and the
    /// recorded number is used only when the name is unknown here.
    pub numeric_owner: bool,
    /// Also remove extended attributes the target has but the recorded
    /// metadata does not (the POSIX ACL attributes are handled by the ACL
    /// step either way).
    pub exact_xattrs: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            atime: true,
            owner: true,
            numeric_owner: false,
            exact_xattrs: false,
        }
    }
}

/// One metadata item that could not be read or applied. Per-item soft
/// error: the rest of the metadata was still handled.
#[derive(Debug)]
pub struct MetaIssue {
    /// Which item: `stat`, `xattrs` (the listing), `xattr NAME` (one
    /// attribute; the name shown lossily), `acl`, `default acl`, `owner`,
    /// `mode`, `flags`, `times`, `sparse`.
    pub item: String,
    /// Why it failed.
    pub error: io::Error,
}

impl MetaIssue {
    pub(crate) fn new(item: impl Into<String>, error: impl Into<io::Error>) -> MetaIssue {
        MetaIssue {
            item: item.into(),
            error: error.into(),
        }
    }
}

impl fmt::Display for MetaIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.item, self.error)
    }
}
