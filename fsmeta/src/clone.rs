//! A consistent copy of a file that is being written, where the filesystem
//! can make one in an instant: a reflink (`FICLONE`) on btrfs and XFS
//! shares the file's extents with a new, nameless file under the inode
//! lock, so the copy holds the file's content as it was between two writes,
//! whatever its size; reading the copy then takes as long as it likes.
//!
//! - Linux: `O_TMPFILE` in the file's own directory (a reflink needs the
//!   same filesystem; a nameless file makes no directory entry, so the
//!   watcher sees nothing), then `FICLONE`. The copy disappears when its
//!   descriptor is closed, or when a crash ends the process.
//! - Filesystems without reflinks (ext4, tmpfs) and directories rewind may
//!   not write in answer `Ok(None)` at once: the caller reads the file
//!   itself. macOS (APFS `clonefile` needs a name): `Ok(None)` for now.

use std::fs::File;
use std::io;
use std::path::Path;

/// A reflinked copy of `file` (which lives in `dir`), or `None` where the
/// filesystem or the directory does not allow one.
#[cfg(target_os = "linux")]
pub fn reflink_copy(file: &File, dir: &Path) -> io::Result<Option<File>> {
    use rustix::fs::{CWD, Mode, OFlags};
    use rustix::io::Errno;

    let tmp = match rustix::fs::openat(
        CWD,
        dir,
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    ) {
        Ok(fd) => fd,
        // No O_TMPFILE here, or no right to write in the directory.
        Err(
            Errno::OPNOTSUPP
            | Errno::ISDIR
            | Errno::INVAL
            | Errno::ACCESS
            | Errno::PERM
            | Errno::ROFS
            | Errno::NOENT,
        ) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    match rustix::fs::ioctl_ficlone(&tmp, file) {
        Ok(()) => Ok(Some(File::from(tmp))),
        // No reflinks on this filesystem (ext4: EOPNOTSUPP; some: EINVAL,
        // EXDEV, ENOTTY).
        Err(Errno::OPNOTSUPP | Errno::INVAL | Errno::XDEV | Errno::NOTTY | Errno::BADF) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Not implemented beyond Linux yet (see the module doc).
#[cfg(not(target_os = "linux"))]
pub fn reflink_copy(_file: &File, _dir: &Path) -> io::Result<Option<File>> {
    Ok(None)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_filesystem_without_reflinks_says_none_and_leaves_no_file() {
        // The temporary folder here is ext4 or tmpfs: no reflinks.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"content").unwrap();
        let f = File::open(&p).unwrap();
        assert!(reflink_copy(&f, dir.path()).unwrap().is_none());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
