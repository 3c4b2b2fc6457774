//! Files that are one state on disk, captured and restored together.
//!
//! SQLite keeps a database `X` with a write-ahead log `X-wal` (WAL mode,
//! what browsers, mail and chat clients use) or a rollback journal
//! `X-journal`. Either side file holds part of the database's state: `X`
//! alone, read while the application runs, is a state that never existed
//! (seconds old, or missing its tables). So the three are one group: a
//! change of any member captures all of them under one consistency check
//! and appends their versions together with one time, and a restore brings
//! them back together, removing a member that did not exist at that moment
//! (`rewind-restore`). `X-shm` is SQLite's shared-memory index, rebuilt
//! from the WAL when the database opens: it is never captured, and a
//! restore removes it.
//!
//! - Scheduling: every member of a group is queued under its database's
//!   path ([`key_of`]), so one worker captures the group at a time and its
//!   versions keep their order.
//! - A path is a group when one of its side files exists or is known to
//!   the journal; otherwise it is captured alone, as any file.

use rewind_core::group::{SQLITE_SHM, SQLITE_SIDE_FILES};

use crate::capture::CaptureError;

pub(crate) use rewind_core::group::group_key as key_of;

/// `key` and its side files, when `known` says one of the side files
/// exists or was captured before; `None` for a path that is no group.
pub(crate) fn sqlite_group(
    key: &[u8],
    mut known: impl FnMut(&[u8]) -> Result<bool, CaptureError>,
) -> Result<Option<Vec<Vec<u8>>>, CaptureError> {
    if key_of(key) != key {
        return Ok(None);
    }
    let mut members = vec![key.to_vec()];
    let mut any = false;
    for s in SQLITE_SIDE_FILES {
        let side = [key, s].concat();
        any |= known(&side)?;
        members.push(side);
    }
    Ok(any.then_some(members))
}

/// `X-shm` beside an existing `X-wal`: SQLite's index, not captured.
pub(crate) fn is_rebuilt_side_file(path: &[u8]) -> bool {
    path.strip_suffix(SQLITE_SHM).is_some_and(|base| {
        !base.is_empty()
            && std::fs::symlink_metadata(rewind_core::path::from_bytes(&[base, b"-wal"].concat()))
                .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_is_a_group_when_a_side_file_is_there_or_known() {
        let g = sqlite_group(b"/h/db", |p| Ok(p == b"/h/db-wal")).unwrap();
        assert_eq!(
            g.unwrap(),
            vec![
                b"/h/db".to_vec(),
                b"/h/db-wal".to_vec(),
                b"/h/db-journal".to_vec()
            ]
        );
        assert!(sqlite_group(b"/h/db", |_| Ok(false)).unwrap().is_none());
    }
}
