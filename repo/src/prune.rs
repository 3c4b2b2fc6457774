//! Prune: reclaim the space of what forget left unused.

use std::fs;
use std::io;
use std::path::Path;

use rewind_core::RepoError;
use tracing::info;

use crate::durable::{fsync_dir, io_err};
use crate::keep::KeepFile;
use crate::pack_name::PackName;

/// Delete pack `name` and then its index (each may be gone already).
pub(crate) fn delete_pack_files(dir: &Path, name: PackName) -> Result<(), RepoError> {
    for path in [name.pack_path(dir), name.idx_path(dir)] {
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
    }
    Ok(())
}

/// Finish the deletions an interrupted prune recorded (at a writer's
/// open): their content is durable elsewhere, or was unused.
pub(crate) fn finish_deletions(dir: &Path, keep: &mut KeepFile) -> Result<(), RepoError> {
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
    next.write(dir)?;
    *keep = next;
    info!(packs = n, "finished the deletions of an interrupted prune");
    Ok(())
}
