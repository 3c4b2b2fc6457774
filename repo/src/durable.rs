//! Durable file steps: write a temp file, fsync it, rename it into place,
//! fsync the directory. Every step is a named failpoint that tests can make
//! fail (see [`failpoint`]).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rewind_core::RepoError;

/// An I/O error on `path`.
pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RepoError + '_ {
    move |source| RepoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Damage in `path`.
pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> RepoError {
    RepoError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Fail with an injected error when the named step is armed (tests only; a
/// no-op in normal builds). Names: `pack.write`, `pack.fsync`, `pack.rename`,
/// `pack.dir_fsync`, `idx.write`, `idx.fsync`, `idx.rename`, `idx.dir_fsync`,
/// `config.*` likewise.
pub(crate) fn failpoint(name: &'static str) -> io::Result<()> {
    rewind_core::failpoint::hit(name)
}

/// fsync a directory so that renames and creations in it are durable.
pub(crate) fn local_fsync_dir(dir: &Path) -> Result<(), RepoError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_err(dir))
}

/// Create `dir` if missing; when created, fsync its parent so the new entry
/// survives a crash.
pub(crate) fn local_ensure_dir(dir: &Path) -> Result<(), RepoError> {
    match rewind_core::private::create_dir(dir) {
        Ok(()) => {
            if let Some(parent) = dir.parent() {
                local_fsync_dir(parent)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(RepoError::Io {
            path: dir.to_path_buf(),
            source: e,
        }),
    }
}

/// Failpoint names for one kind of file.
pub(crate) struct Steps {
    pub write: &'static str,
    pub fsync: &'static str,
    pub rename: &'static str,
    pub dir_fsync: &'static str,
}

/// The steps of an index file.
pub(crate) const IDX_STEPS: Steps = Steps {
    write: "idx.write",
    fsync: "idx.fsync",
    rename: "idx.rename",
    dir_fsync: "idx.dir_fsync",
};

/// The steps of a pack (its temp file is written by the pack writer).
pub(crate) const PACK_STEPS: Steps = Steps {
    write: "pack.write",
    fsync: "pack.fsync",
    rename: "pack.rename",
    dir_fsync: "pack.dir_fsync",
};

/// The steps of the config file.
pub(crate) const CONFIG_STEPS: Steps = Steps {
    write: "config.write",
    fsync: "config.fsync",
    rename: "config.rename",
    dir_fsync: "config.dir_fsync",
};

/// A fresh random name for a file in `tmp_dir`.
pub(crate) fn temp_path(tmp_dir: &Path, suffix: &str) -> PathBuf {
    let r: [u8; 16] = rand::random();
    tmp_dir.join(format!("{}{suffix}", hex::encode(r)))
}

/// Write `bytes` to the local file `dest` durably: temp file in `tmp_dir`,
/// fsync, rename, fsync of `dest`'s directory. On failure the temp file is
/// removed (best effort; a crash leaves it for the next writer's open to
/// delete).
pub(crate) fn write_file_durably(
    tmp_dir: &Path,
    dest: &Path,
    bytes: &[u8],
    steps: &Steps,
) -> Result<(), RepoError> {
    let tmp = temp_path(tmp_dir, ".tmp");
    let result = (|| {
        let mut f = rewind_core::private::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        failpoint(steps.write)
            .and_then(|()| f.write_all(bytes))
            .map_err(io_err(&tmp))?;
        failpoint(steps.fsync)
            .and_then(|()| f.sync_all())
            .map_err(io_err(&tmp))?;
        drop(f);
        failpoint(steps.rename)
            .and_then(|()| fs::rename(&tmp, dest))
            .map_err(io_err(dest))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    let parent = dest.parent().unwrap_or(Path::new("."));
    failpoint(steps.dir_fsync).map_err(io_err(parent))?;
    local_fsync_dir(parent)
}
