//! Files that are one state on disk (DESIGN.md, "Group"): SQLite's
//! database `X` with its write-ahead log `X-wal` or rollback journal
//! `X-journal`. Capture takes them under one consistency check and restore
//! brings them back together; `X-shm` (SQLite's shared-memory index, which
//! it rebuilds from the WAL) belongs to neither.

/// Side files that hold part of a SQLite database's state.
pub const SQLITE_SIDE_FILES: [&[u8]; 2] = [b"-wal", b"-journal"];

/// SQLite's shared-memory index beside a WAL: never kept, removed when a
/// group is restored in place.
pub const SQLITE_SHM: &[u8] = b"-shm";

/// The database a SQLite side file belongs to: `X` for `X-wal` and
/// `X-journal`; the path itself otherwise. A name that is only the suffix
/// is no side file.
pub fn group_key(path: &[u8]) -> &[u8] {
    for s in SQLITE_SIDE_FILES {
        if let Some(base) = path.strip_suffix(s)
            && !base.is_empty()
            && !base.ends_with(b"/")
        {
            return base;
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_files_belong_to_their_database() {
        assert_eq!(group_key(b"/h/places.sqlite-wal"), b"/h/places.sqlite");
        assert_eq!(group_key(b"/h/History-journal"), b"/h/History");
        assert_eq!(group_key(b"/h/places.sqlite"), b"/h/places.sqlite");
        assert_eq!(group_key(b"/h/x-shm"), b"/h/x-shm");
        assert_eq!(group_key(b"/h/-wal"), b"/h/-wal");
        assert_eq!(group_key(b"-wal"), b"-wal");
    }
}
