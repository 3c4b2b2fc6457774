//! Directories and files that only their owner can reach.
//!
//! What rewind stores (repositories, journals and their spool, agent state,
//! the server's data) holds the content of files that may be private, so it
//! is as private as the most private of them: directories `0700`, files
//! `0600`, whatever the process umask (a umask only removes bits, so these
//! modes survive any umask). Every crate creates its directories and files
//! through here.
//!
//! - [`create_dir_all`] and [`create_dir`] make directories `0700`;
//!   directories that already exist are left as they are.
//! - [`options`] opens files created `0600`.
//! - [`write_file`] replaces a small file durably: a fresh temporary name in
//!   the same directory, opened with `O_EXCL` (never someone else's file or
//!   link), written, fsynced, renamed over the target, then the directory
//!   fsynced. A crash leaves the old file or the new one, never a mix (and
//!   at worst a stray `.*.tmp` file).
//! - [`tighten`] removes group and other bits from a tree rewind wrote
//!   before it created everything private; [`tighten_if_loose`] does it
//!   only when the tree's root shows such bits, and says so once. The root
//!   is changed last, so a tightening cut short is done again next time.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Mode of every directory rewind creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file rewind creates.
pub const FILE_MODE: u32 = 0o600;
/// The bits that let other accounts in.
const OTHERS: u32 = 0o077;

/// Whether a mode gives nothing to the group or to others.
pub fn is_private(mode: u32) -> bool {
    mode & OTHERS == 0
}

/// Create `path` and any missing parents, each `0700`.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Create the directory `path` (its parent must exist), `0700`.
pub fn create_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new().mode(DIR_MODE).create(path)
}

/// Options that create a file `0600` (add `write`, `create_new`, …).
pub fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Replace `path` with `data` durably (see the module doc). The parent
/// directory must exist.
pub fn write_file(path: &Path, data: &[u8]) -> io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = name.as_deref().unwrap_or("file");
    let (tmp, mut f) = loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        match options().write(true).create_new(true).open(&tmp) {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    let written = f
        .write_all(data)
        .and_then(|()| f.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir).and_then(|d| d.sync_all())
}

/// Remove group and other bits from `root` and everything under it (never
/// following a symlink); the number of paths changed. `root` is changed
/// last: [`tighten_if_loose`] looks only at it, so a walk interrupted by a
/// crash or an error is walked again at the next open instead of leaving
/// the rest open for good. Failpoint `private.tighten` before each change.
pub fn tighten(root: &Path) -> io::Result<u64> {
    let mut changed = 0;
    let mut root_mode = None;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = match fs::symlink_metadata(&p) {
            Ok(md) => md,
            // Gone meanwhile (a temporary file): nothing to tighten.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if md.file_type().is_symlink() {
            continue;
        }
        let mode = md.permissions().mode() & 0o7777;
        if !is_private(mode) {
            if p == root {
                root_mode = Some(mode);
            } else {
                restrict(&p, mode)?;
                changed += 1;
            }
        }
        if md.is_dir() {
            for e in fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    if let Some(mode) = root_mode {
        restrict(root, mode)?;
        changed += 1;
    }
    Ok(changed)
}

fn restrict(p: &Path, mode: u32) -> io::Result<()> {
    crate::failpoint::hit("private.tighten")?;
    fs::set_permissions(p, fs::Permissions::from_mode(mode & !OTHERS))
}

/// [`tighten`] `root` when its own mode lets others in (a tree written
/// before rewind made everything private), logging what was done; a
/// filesystem that keeps no modes (FAT, some network shares) is left as it
/// is, with one warning. `what` names the tree in the message.
pub fn tighten_if_loose(root: &Path, what: &str) {
    let Ok(md) = fs::symlink_metadata(root) else {
        return;
    };
    if is_private(md.permissions().mode()) {
        return;
    }
    match tighten(root) {
        Ok(n) => tracing::warn!(
            "{what} {}: made {n} paths private (they were readable by other accounts)",
            root.display()
        ),
        Err(e) => tracing::warn!(
            "{what} {}: cannot make it private ({e}); other accounts may read it",
            root.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn what_is_created_here_is_private_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path();
        let d = tmp.join("a/b/c");
        create_dir_all(&d).unwrap();
        for p in [tmp.join("a"), tmp.join("a/b"), d.clone()] {
            assert_eq!(mode(&p), 0o700, "{p:?}");
        }
        let f = d.join("f");
        options().write(true).create(true).open(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        write_file(&d.join("g"), b"hello").unwrap();
        assert_eq!(mode(&d.join("g")), 0o600);
        assert_eq!(fs::read(d.join("g")).unwrap(), b"hello");
        // Replacing keeps it private and leaves no temporary file behind.
        write_file(&d.join("g"), b"again").unwrap();
        assert_eq!(fs::read(d.join("g")).unwrap(), b"again");
        let names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn tighten_removes_group_and_other_bits_and_leaves_links_alone() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path();
        let root = tmp.join("repo");
        fs::create_dir_all(root.join("packs")).unwrap();
        fs::write(root.join("packs/p"), b"x").unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(root.join("packs"), fs::Permissions::from_mode(0o775)).unwrap();
        fs::set_permissions(root.join("packs/p"), fs::Permissions::from_mode(0o644)).unwrap();
        let outside = tmp.join("outside");
        fs::write(&outside, b"y").unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        assert_eq!(tighten(&root).unwrap(), 3);
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("packs")), 0o700);
        assert_eq!(mode(&root.join("packs/p")), 0o600);
        assert_eq!(mode(&outside), 0o644, "a link's target is not ours");
        assert_eq!(tighten(&root).unwrap(), 0);
        tighten_if_loose(&root, "repository");
    }
}
