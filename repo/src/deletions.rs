//! Deleting pack files: one pack (its file, then its index), and finishing
//! the deletions an interrupted prune recorded in `DIR/retention`.
//!
//! A pack is deleted only once nothing the index uses lies in it, and its
//! file goes before its index file; deletions a prune recorded and could
//! not finish are finished by the next writer's open.

use std::io;
use std::path::Path;

use rewind_core::RepoError;
use tracing::warn;

use crate::crypt::Crypt;
use crate::durable::io_err;
use crate::keep::KeepFile;
use crate::pack_name::PackName;
use crate::store::fsync_dir;

/// Remove `p`; one already gone is fine.
pub(crate) fn remove(p: &Path) -> Result<(), RepoError> {
    match crate::store::remove(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(p)(e)),
    }
}

/// Delete pack `name` and then its index (each may be gone already).
pub(crate) fn delete_pack_files(dir: &Path, name: PackName) -> Result<(), RepoError> {
    remove(&name.pack_path(dir))?;
    remove(&name.idx_path(dir))
}

/// Finish the deletions an interrupted prune recorded (at a writer's
/// open): their content is durable elsewhere, or was unused.
pub(crate) fn finish_deletions(
    c: &Crypt,
    dir: &Path,
    keep: &mut KeepFile,
    fenced: bool,
) -> Result<(), RepoError> {
    if keep.deleting.is_empty() {
        return Ok(());
    }
    let n = keep.deleting.len();
    for name in &keep.deleting {
        delete_pack_files(dir, *name)?;
    }
    fsync_dir(&dir.join("index"))?;
    let mut next = keep.clone();
    next.deleting.clear();
    next.write(c, dir, fenced)?;
    *keep = next;
    warn!(packs = n, "finished the deletions of an interrupted prune");
    Ok(())
}
