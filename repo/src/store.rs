//! Where a repository's files live: one interface ([`Store`]), two
//! backends. A repository root is a path; one spelt `s3://BUCKET/PREFIX`
//! is an S3-compatible object store ([`crate::s3`]), any other a local
//! directory ([`LocalDir`]). Every path the crate builds under a root
//! (`ROOT/config`, `ROOT/packs/ab/<name>.pack`, …) names a file in the
//! directory or, below the root's prefix, an object of the bucket; the
//! layout and formats are the same on both.
//!
//! # Guarantees
//!
//! - The local backend does exactly what the crate did before there was an
//!   interface: the same system calls in the same order (temp file, fsync,
//!   rename, directory fsync), with the same named failpoints.
//! - [`Store::put`] and [`Store::publish`] make a whole file visible at
//!   once: a rename in a directory, a single PUT on a store (an object is
//!   never seen half written).
//! - [`Store::put_new`] never replaces an existing file: `create_new` in a
//!   directory, `If-None-Match: *` on a store (refused with an error when
//!   the store says it cannot do it).
//! - Errors are `io::Error`s whose kind says `NotFound` for a missing file
//!   or object, so callers treat both backends alike; no error names a
//!   credential.
//!
//! # After a crash
//!
//! A store keeps what it was told to keep: an interrupted PUT leaves no
//! object. The pack being filled lives in a local staging directory (the
//! root's `tmp/` for a directory, a private directory under the system's
//! temporary directory for a store), deleted when a writer fails; a crash
//! leaves it behind (for a store, in the temporary directory).

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rewind_core::RepoError;

use crate::durable::{Steps, failpoint, io_err};

/// Reading at an offset, from a file or an object.
pub(crate) trait ReadAt: Send + Sync {
    /// Fill `buf` from `offset`; `UnexpectedEof` when the data ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

/// A file or object opened for ranged reads, with its length when opened.
#[derive(Clone)]
pub(crate) struct Blob {
    pub(crate) data: Arc<dyn ReadAt>,
    pub(crate) len: u64,
}

/// What the repository needs from the place it lives. Paths are full paths
/// under a repository root (see the module doc).
pub(crate) trait Store: Send + Sync {
    /// Open `path` for reading from the start.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn Read + Send>>;
    /// Open `path` for reads at offsets.
    fn open_blob(&self, path: &Path) -> io::Result<Blob>;
    /// The length of `path`.
    fn len(&self, path: &Path) -> io::Result<u64>;
    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// The names directly under `dir` (files and directories) with their
    /// paths, in no order; a missing `dir` is empty.
    fn list(&self, dir: &Path) -> io::Result<Vec<(String, PathBuf)>>;
    /// Make `bytes` the whole content of `dest`, durably (temp file in
    /// `tmp_dir`, fsync, rename, directory fsync; one PUT on a store).
    fn put(
        &self,
        tmp_dir: &Path,
        dest: &Path,
        bytes: &[u8],
        steps: &Steps,
    ) -> Result<(), RepoError>;
    /// Create `dest` with `bytes` unless it exists (`Ok(false)` then).
    fn put_new(&self, dest: &Path, bytes: &[u8]) -> Result<bool, RepoError>;
    /// Make the sealed, fsynced temp file `tmp` the file `dest`: a rename
    /// (then a directory fsync), or an upload after which `tmp` is deleted.
    /// `steps` names the failpoints (`pack.rename`, `pack.dir_fsync`).
    fn publish(&self, tmp: &Path, dest: &Path, steps: &Steps) -> Result<(), RepoError>;
    /// Delete `path` (`NotFound` when a directory has no such file; a
    /// store may not tell).
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Make the creations, renames and deletions in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> Result<(), RepoError>;
    /// Make sure files can be created in `dir`.
    fn ensure_dir(&self, dir: &Path) -> Result<(), RepoError>;
    /// The local directory in which the pack being filled is written.
    fn staging(&self, root: &Path) -> io::Result<PathBuf>;
    /// True for a store that has no local directory (no `lock`, `tmp/` or
    /// file modes).
    fn is_remote(&self) -> bool;
}

/// The backend of the repository file `path`.
pub(crate) fn at(path: &Path) -> io::Result<&'static dyn Store> {
    if !is_url(path) {
        return Ok(&LocalDir);
    }
    #[cfg(feature = "s3")]
    return Ok(crate::s3::store_for(path)?);
    #[cfg(not(feature = "s3"))]
    return Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "this build of rewind has no object storage support",
    ));
}

/// Whether `root` names an object store rather than a directory.
pub fn is_url(root: &Path) -> bool {
    root.as_os_str().as_bytes().starts_with(b"s3://")
}

/// [`Store::open_read`] of the backend of `path`.
pub(crate) fn open_read(path: &Path) -> io::Result<Box<dyn Read + Send>> {
    at(path)?.open_read(path)
}

/// [`Store::open_blob`] of the backend of `path`.
pub(crate) fn open_blob(path: &Path) -> io::Result<Blob> {
    at(path)?.open_blob(path)
}

/// [`Store::len`] of the backend of `path`.
pub(crate) fn len(path: &Path) -> io::Result<u64> {
    at(path)?.len(path)
}

/// [`Store::exists`] of the backend of `path`.
pub(crate) fn exists(path: &Path) -> io::Result<bool> {
    at(path)?.exists(path)
}

/// [`Store::list`] of the backend of `dir`.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    at(dir)?.list(dir)
}

/// [`Store::remove`] of the backend of `path`.
pub(crate) fn remove(path: &Path) -> io::Result<()> {
    at(path)?.remove(path)
}

/// The backend of `path`, its error as the crate's.
pub(crate) fn of(path: &Path) -> Result<&'static dyn Store, RepoError> {
    at(path).map_err(io_err(path))
}

/// The local directory: today's format, durability and speed.
pub(crate) struct LocalDir;

impl Store for LocalDir {
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(File::open(path)?))
    }

    fn open_blob(&self, path: &Path) -> io::Result<Blob> {
        let f = File::open(path)?;
        let len = f.metadata()?.len();
        Ok(Blob {
            data: Arc::new(f),
            len,
        })
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e?;
            match e.file_name().into_string() {
                Ok(name) => out.push((name, e.path())),
                Err(other) => {
                    tracing::debug!(dir = %dir.display(), name = ?other, "ignoring a foreign file")
                }
            }
        }
        Ok(out)
    }

    fn put(
        &self,
        tmp_dir: &Path,
        dest: &Path,
        bytes: &[u8],
        steps: &Steps,
    ) -> Result<(), RepoError> {
        crate::durable::write_file_durably(tmp_dir, dest, bytes, steps)
    }

    fn put_new(&self, dest: &Path, bytes: &[u8]) -> Result<bool, RepoError> {
        use std::io::Write;
        let mut f = match rewind_core::private::options()
            .write(true)
            .create_new(true)
            .open(dest)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io_err(dest)(e)),
        };
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(io_err(dest))?;
        let parent = dest.parent().unwrap_or(Path::new("."));
        crate::durable::local_fsync_dir(parent)?;
        Ok(true)
    }

    fn publish(&self, tmp: &Path, dest: &Path, steps: &Steps) -> Result<(), RepoError> {
        let subdir = dest.parent().unwrap_or(Path::new("."));
        crate::durable::local_ensure_dir(subdir)?;
        failpoint(steps.rename)
            .and_then(|()| fs::rename(tmp, dest))
            .map_err(io_err(dest))?;
        failpoint(steps.dir_fsync).map_err(io_err(subdir))?;
        crate::durable::local_fsync_dir(subdir)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> Result<(), RepoError> {
        crate::durable::local_fsync_dir(dir)
    }

    fn ensure_dir(&self, dir: &Path) -> Result<(), RepoError> {
        crate::durable::local_ensure_dir(dir)
    }

    fn staging(&self, root: &Path) -> io::Result<PathBuf> {
        Ok(root.join("tmp"))
    }

    fn is_remote(&self) -> bool {
        false
    }
}
