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
//!   once: a rename in a directory, a single PUT or a completed multipart
//!   upload on a store (an object is never seen half written).
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
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rewind_core::RepoError;

pub(crate) use crate::backend::{Blob, Listed, ReadAt, Store};
use crate::durable::{Steps, failpoint, io_err};

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

/// [`Store::open_blob_len`] of the backend of `path`.
pub(crate) fn open_blob_len(path: &Path, len: u64) -> io::Result<Blob> {
    at(path)?.open_blob_len(path, len)
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

/// [`Store::list_meta`] of the backend of `dir`.
pub(crate) fn list_meta(dir: &Path) -> io::Result<Vec<Listed>> {
    at(dir)?.list_meta(dir)
}

/// [`Store::list_nested`] of the backend of `dir`.
pub(crate) fn list_nested(
    dir: &Path,
    keep_sub: &dyn Fn(&str) -> bool,
) -> io::Result<Vec<(String, Listed)>> {
    at(dir)?.list_nested(dir, keep_sub)
}

/// [`Store::remove`] of the backend of `path`.
pub(crate) fn remove(path: &Path) -> io::Result<()> {
    at(path)?.remove(path)
}

/// The backend of `path`, its error as the crate's.
pub(crate) fn of(path: &Path) -> Result<&'static dyn Store, RepoError> {
    at(path).map_err(io_err(path))
}

/// Make renames, creations and deletions in `dir` durable (an fsync of a
/// local directory; nothing on an object store, whose writes are durable
/// when acknowledged).
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), RepoError> {
    of(dir)?.sync_dir(dir)
}

/// Make sure files can be created in `dir` (see [`crate::durable::local_ensure_dir`]).
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), RepoError> {
    of(dir)?.ensure_dir(dir)
}

/// Make `bytes` the whole content of `dest`, durably, in the repository's
/// store ([`Store::put`]).
pub(crate) fn write_durably(
    tmp_dir: &Path,
    dest: &Path,
    bytes: &[u8],
    steps: &Steps,
) -> Result<(), RepoError> {
    of(dest)?.put(tmp_dir, dest, bytes, steps)
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
