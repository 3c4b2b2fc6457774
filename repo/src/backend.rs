//! The interface of a repository's storage ([`Store`]) and what reads go
//! through ([`ReadAt`], [`Blob`]); the backends are `crate::store`'s
//! `LocalDir` and `crate::s3`'s store, chosen by `crate::store::at`.

use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use rewind_core::RepoError;

use crate::durable::Steps;

/// Reading at an offset, from a file or an object.
pub(crate) trait ReadAt: Send + Sync {
    /// Fill `buf` from `offset`; `UnexpectedEof` when the data ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// The bytes of each of `ranges`, in order (an object store fetches
    /// them with few requests, in parallel, and hands out slices of what
    /// it fetched, not copies; a file reads them one by one).
    fn read_ranges(&self, ranges: &[Range<u64>]) -> io::Result<Vec<Bytes>> {
        ranges
            .iter()
            .map(|r| {
                let n = usize::try_from(r.end.saturating_sub(r.start))
                    .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
                let mut buf = vec![0u8; n];
                self.read_exact_at(&mut buf, r.start)?;
                Ok(Bytes::from(buf))
            })
            .collect()
    }
}

/// Bytes read from offset `start` of a file or object, read again at
/// their offsets there.
pub(crate) struct Fetched {
    pub(crate) start: u64,
    pub(crate) bytes: Bytes,
}

impl ReadAt for Fetched {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let eof = || io::Error::from(io::ErrorKind::UnexpectedEof);
        let from = offset
            .checked_sub(self.start)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(eof)?;
        let src = from
            .checked_add(buf.len())
            .and_then(|end| self.bytes.get(from..end))
            .ok_or_else(eof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
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

/// One name found under a directory or prefix, with what the listing
/// itself told of it (an object store's LIST carries every object's size,
/// ETag and time of last change; a directory's listing carries nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Listed {
    /// The name, without the directory.
    pub name: String,
    /// The full path.
    pub path: PathBuf,
    /// Its length in bytes, when the listing said.
    pub len: Option<u64>,
    /// What changes whenever the object is written again (its ETag and
    /// time of last change), when the listing said.
    pub version: Option<String>,
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
    /// [`Store::list`] with what the listing tells of each name (a store
    /// overrides this: its LIST carries sizes, so no HEAD per object).
    fn list_meta(&self, dir: &Path) -> io::Result<Vec<Listed>> {
        Ok(self
            .list(dir)?
            .into_iter()
            .map(|(name, path)| Listed {
                name,
                path,
                len: None,
                version: None,
            })
            .collect())
    }
    /// The files in the subdirectories of `dir` whose names `keep_sub`
    /// accepts (`dir/<sub>/<name>`), each with its subdirectory's name, in
    /// no order; a missing `dir` is empty. A directory lists each
    /// subdirectory; a store lists the whole prefix at once (a page per
    /// thousand objects) instead of once per subdirectory.
    fn list_nested(
        &self,
        dir: &Path,
        keep_sub: &dyn Fn(&str) -> bool,
    ) -> io::Result<Vec<(String, Listed)>> {
        let mut out = Vec::new();
        for sub in self.list_meta(dir)? {
            if keep_sub(&sub.name) {
                for file in self.list_meta(&sub.path)? {
                    out.push((sub.name.clone(), file));
                }
            }
        }
        Ok(out)
    }
    /// [`Store::open_blob`] of a file whose length the caller knows (from a
    /// listing or an index): a store then sends no HEAD. Reads past the
    /// real end fail as they would on a file.
    fn open_blob_len(&self, path: &Path, _len: u64) -> io::Result<Blob> {
        self.open_blob(path)
    }
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
    /// The conditional reads and writes a writer lease is made of, on a
    /// store that has no `flock` (`None`: a local directory, locked by
    /// `DIR/lock`).
    fn leasing(&'static self) -> Option<&'static dyn Leasing> {
        None
    }
}

/// When a conditional write may replace what is there. (Built without the
/// `s3` feature, as the fuzz targets are, only the local store's refusal
/// is used.)
#[derive(Clone, Debug)]
#[cfg_attr(not(feature = "s3"), allow(dead_code))]
pub(crate) enum PutIf {
    /// Always (a plain PUT).
    Always,
    /// Only when no object exists (`If-None-Match: *`).
    Absent,
    /// Only when the object's ETag is this one (`If-Match`).
    Matches(String),
}

/// What a conditional write did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "s3"), allow(dead_code))]
pub(crate) enum Written {
    /// Written; the new object's ETag when the store gave one.
    Yes(Option<String>),
    /// The store refused it: the condition did not hold.
    Refused,
}

/// What a writer lease (`crate::lease`) needs from an object store:
/// whole-object reads that return the object's ETag, writes conditional
/// on it, and deletes. A store may ignore the conditions (some
/// self-hosted ones do); the lease finds out by a probe.
pub(crate) trait Leasing: Send + Sync {
    /// The content of `path` and its ETag; `None` when there is no object.
    fn get_tagged(&self, path: &Path) -> io::Result<Option<(Vec<u8>, Option<String>)>>;
    /// Write `bytes` to `path` when `cond` holds.
    fn put_if(&self, path: &Path, bytes: Vec<u8>, cond: PutIf) -> io::Result<Written>;
    /// Delete `path` (no error when it is missing).
    fn delete(&self, path: &Path) -> io::Result<()>;
}
