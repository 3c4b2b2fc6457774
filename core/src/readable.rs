//! Files meant for everyone: man pages, unit files, the launchd plist.
//!
//! Both binaries run under umask 077 (everything rewind stores is private),
//! so what other users and system managers must read is given its mode
//! explicitly: directories `0755`, files `0644`. Files are replaced as
//! [`crate::private::write_file`] replaces them (temporary name,
//! fsync, rename, directory fsync), then opened up.

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// The mode of a readable directory.
pub const DIR_MODE: u32 = 0o755;
/// The mode of a readable file.
pub const FILE_MODE: u32 = 0o644;

/// Create `path` and its missing parents, each `0755` whatever the umask;
/// directories that already exist are left as they are.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    let missing: Vec<&Path> = path.ancestors().take_while(|p| !p.exists()).collect();
    for dir in missing.into_iter().rev() {
        if dir.as_os_str().is_empty() {
            continue;
        }
        match DirBuilder::new().mode(DIR_MODE).create(dir) {
            Ok(()) => fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Replace `path` with `data` durably, readable by everyone (`0644`). The
/// parent directory must exist.
pub fn write_file(path: &Path, data: &[u8]) -> io::Result<()> {
    crate::private::write_file(path, data)?;
    fs::set_permissions(path, Permissions::from_mode(FILE_MODE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn files_and_directories_are_readable_by_everyone_whatever_the_umask() {
        let tmp = tempfile::tempdir().unwrap();
        let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
        let dir = tmp.path().join("a/b");
        create_dir_all(&dir).unwrap();
        write_file(&dir.join("f"), b"x").unwrap();
        rustix::process::umask(old);
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&tmp.path().join("a")), 0o755);
        assert_eq!(mode(&dir), 0o755);
        assert_eq!(mode(&dir.join("f")), 0o644);
        assert_eq!(fs::read(dir.join("f")).unwrap(), b"x");
    }
}
