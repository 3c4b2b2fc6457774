//! The local folders in which a store's writers fill their packs before
//! uploading them: `$TMPDIR/rewind-s3-<pid>-<16 hex>/`, one per process.
//!
//! A process holds an `flock` on the folder's lock file beside it
//! (`rewind-s3-<pid>-<16 hex>.lock`) for as long as it lives (the file
//! stays open in its store), so a folder whose lock can be taken belongs
//! to a process that is gone: the next writer on the machine removes it,
//! with the pack a crash left half filled there (never acknowledged: a
//! pack counts once its upload is), and then the lock file. Folders of
//! builds before this had no lock file and are left alone.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// What every staging folder's name starts with.
const PREFIX: &str = "rewind-s3-";
/// What its lock file's name adds to the folder's.
const LOCK: &str = ".lock";

/// This process's staging folder, locked while it lives.
pub(crate) struct Staging {
    pub(crate) dir: PathBuf,
    _lock: File,
}

impl Staging {
    /// A new staging folder under `tmp`, after removing those of processes
    /// that are gone.
    pub(crate) fn create(tmp: &Path) -> io::Result<Staging> {
        remove_abandoned(tmp);
        let r: [u8; 8] = rand::random();
        let name = format!("{PREFIX}{}-{}", std::process::id(), hex::encode(r));
        // The lock first: a folder never exists without its holder.
        let lock = File::create(tmp.join(format!("{name}{LOCK}")))?;
        lock.try_lock().map_err(io::Error::other)?;
        let dir = tmp.join(name);
        rewind_core::private::create_dir_all(&dir)?;
        Ok(Staging { dir, _lock: lock })
    }
}

/// Remove the staging folders under `tmp` whose process is gone (their
/// lock can be taken), then their lock files. Best effort: what cannot be
/// read or removed stays.
fn remove_abandoned(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let Some(folder) = name.strip_suffix(LOCK).filter(|n| n.starts_with(PREFIX)) else {
            continue;
        };
        let Ok(lock) = File::open(e.path()) else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue;
        }
        let dir = tmp.join(folder);
        match fs::remove_dir_all(&dir) {
            Ok(()) => tracing::debug!(dir = %dir.display(), "removed an abandoned staging folder"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "cannot remove an abandoned staging folder");
                continue;
            }
        }
        let _ = fs::remove_file(e.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_whose_lock_is_free_is_removed_and_a_held_one_stays() {
        let tmp = tempfile::tempdir().unwrap();
        let held = Staging::create(tmp.path()).unwrap();
        // A process that is gone: its folder with a half-filled pack, and
        // its lock file, unlocked.
        let gone = tmp.path().join(format!("{PREFIX}1-00112233aabbccdd"));
        fs::create_dir(&gone).unwrap();
        fs::write(gone.join("half.pack"), b"part of a pack").unwrap();
        let gone_lock = tmp.path().join(format!("{PREFIX}1-00112233aabbccdd{LOCK}"));
        File::create(&gone_lock).unwrap();
        // A folder of an earlier build, without a lock file.
        let legacy = tmp.path().join(format!("{PREFIX}2-0000000000000000"));
        fs::create_dir(&legacy).unwrap();
        let next = Staging::create(tmp.path()).unwrap();
        assert!(!gone.exists(), "the abandoned folder is removed");
        assert!(!gone_lock.exists(), "and its lock file");
        assert!(held.dir.is_dir(), "a live process's folder stays");
        assert_eq!(
            fs::read_dir(&held.dir).unwrap().count(),
            0,
            "it holds only packs"
        );
        assert!(legacy.is_dir(), "a folder without a lock file stays");
        assert!(next.dir.is_dir());
        assert_ne!(next.dir, held.dir);
    }
}
