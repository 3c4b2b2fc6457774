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
//!
//! Other applications keep one state in several files too (a mailbox and
//! its index, a game's save and its checksum). A glob of `[watch] groups`
//! names such a group: the files of one directory that match the same
//! glob are captured together, as above, and a restore of the folder
//! brings them back as they were at one moment. Their scheduler key is
//! the directory and the glob's number joined by a NUL byte, which no path
//! holds ([`GroupRules::key_of`]).

use std::borrow::Cow;
use std::os::unix::ffi::OsStrExt;

use globset::GlobMatcher;
use rewind_core::group::{SQLITE_SHM, SQLITE_SIDE_FILES, group_key};

/// The groups of `[watch] groups`, besides SQLite's own.
#[derive(Default)]
pub struct GroupRules {
    globs: Vec<(String, GlobMatcher)>,
}

impl GroupRules {
    /// Rules from the config's globs (matched against whole paths; `*`
    /// crosses no `/`); the first bad one is the error.
    pub fn new(globs: &[String]) -> Result<GroupRules, String> {
        let mut out = Vec::with_capacity(globs.len());
        for g in globs {
            let m = globset::GlobBuilder::new(g)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("[watch] groups: {g:?}: {e}"))?
                .compile_matcher();
            out.push((g.clone(), m));
        }
        Ok(GroupRules { globs: out })
    }

    /// The scheduler key of `path`: a configured group's key, a SQLite
    /// side file's database, or the path itself.
    pub(crate) fn key_of<'a>(&self, path: &'a [u8]) -> Cow<'a, [u8]> {
        if !self.globs.is_empty() {
            let p = std::path::Path::new(std::ffi::OsStr::from_bytes(path));
            if let (Some(i), Some(dir)) = (
                self.globs.iter().position(|(_, m)| m.is_match(p)),
                p.parent(),
            ) {
                let mut key = dir.as_os_str().as_bytes().to_vec();
                key.push(0);
                key.extend_from_slice(i.to_string().as_bytes());
                return Cow::Owned(key);
            }
        }
        Cow::Borrowed(group_key(path))
    }

    /// The directory and matcher of a configured group's key; `None` for a
    /// path.
    pub(crate) fn configured<'k>(&self, key: &'k [u8]) -> Option<(&'k [u8], &GlobMatcher)> {
        let nul = key.iter().position(|b| *b == 0)?;
        let i: usize = std::str::from_utf8(&key[nul + 1..]).ok()?.parse().ok()?;
        Some((&key[..nul], &self.globs.get(i)?.1))
    }
}

/// The members of a configured group: the files of `dir` that `glob`
/// matches now, and those the journal knows there (a member deleted since
/// gets its tombstone with the group).
pub(crate) fn configured_members(
    dir: &[u8],
    glob: &GlobMatcher,
    known: impl IntoIterator<Item = Vec<u8>>,
) -> Vec<Vec<u8>> {
    let mut members: Vec<Vec<u8>> = Vec::new();
    let d = std::path::Path::new(std::ffi::OsStr::from_bytes(dir));
    if let Ok(entries) = std::fs::read_dir(d) {
        for e in entries.flatten() {
            let p = e.path();
            if glob.is_match(&p) {
                members.push(p.as_os_str().as_bytes().to_vec());
            }
        }
    }
    for k in known {
        let kp = std::path::Path::new(std::ffi::OsStr::from_bytes(&k));
        if kp.parent() == Some(d) && glob.is_match(kp) && !members.contains(&k) {
            members.push(k);
        }
    }
    members.sort();
    members
}

/// The scheduler key of a SQLite side file: its database.
pub(crate) fn key_of(path: &[u8]) -> &[u8] {
    group_key(path)
}

/// `key` and its side files, when `known` says one of the side files
/// exists or was captured before; `None` for a path that is no group.
pub(crate) fn sqlite_group<E>(
    key: &[u8],
    mut known: impl FnMut(&[u8]) -> Result<bool, E>,
) -> Result<Option<Vec<Vec<u8>>>, E> {
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

/// The first 32 bytes of a SQLite write-ahead log: magic number, format,
/// page size, checkpoint sequence, two salts and their checksum.
pub(crate) type WalHeader = [u8; 32];

/// The header of the write-ahead log at `path`, when it is one (SQLite's
/// magic number and format version); `None` for anything else, an empty
/// log included.
///
/// Why the header is enough to tell that a log was only appended to while
/// it was read (SQLite's "WAL file format"): every frame carries the
/// header's salts and a checksum chained from the header through every
/// frame before it, and recovery keeps the frames up to the last commit
/// frame of that valid chain. SQLite writes frames after the last commit
/// in order; it rewrites one in place only within the transaction not yet
/// committed (whose frames are then checksummed again at commit), and it
/// starts the log over from its first frame only after writing a new
/// header with new salts (salt-1 counts up, so a header never comes back).
/// So while the header stays the same, a copy of the log's first N bytes,
/// however its end was being written, holds a valid chain up to some
/// commit the log really had during the copy, and what follows fails the
/// chain: SQLite opens it as the database was at that commit.
pub(crate) fn wal_header(path: &std::path::Path) -> Option<WalHeader> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .ok()?;
    let mut h = [0u8; 32];
    std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::from(fd), &mut h, 0).ok()?;
    let word = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    // Magic (the low bit says the checksums' byte order), format 3007000.
    (matches!(word(0), 0x377f_0682 | 0x377f_0683) && word(4) == 3_007_000).then_some(h)
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
        let g = sqlite_group::<()>(b"/h/db", |p| Ok(p == b"/h/db-wal")).unwrap();
        assert_eq!(
            g.unwrap(),
            vec![
                b"/h/db".to_vec(),
                b"/h/db-wal".to_vec(),
                b"/h/db-journal".to_vec()
            ]
        );
        assert!(
            sqlite_group::<()>(b"/h/db", |_| Ok(false))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn configured_groups_key_by_directory_and_glob() {
        let g = GroupRules::new(&["**/mail/inbox.*".to_string(), "*.kdbx".to_string()]).unwrap();
        let a = g.key_of(b"/h/mail/inbox.mbox").into_owned();
        let b = g.key_of(b"/h/mail/inbox.idx").into_owned();
        assert_eq!(a, b, "one key for the group's members");
        assert_eq!(a, b"/h/mail\x000");
        let (dir, _) = g.configured(&a).unwrap();
        assert_eq!(dir, b"/h/mail");
        // Another directory is another group; other files are themselves.
        assert_ne!(g.key_of(b"/x/mail/inbox.mbox").into_owned(), a);
        assert_eq!(&*g.key_of(b"/h/mail/notes.txt"), b"/h/mail/notes.txt");
        assert_eq!(&*g.key_of(b"/h/db-wal"), b"/h/db");
        assert!(g.configured(b"/h/mail/notes.txt").is_none());
        assert!(GroupRules::new(&["[".to_string()]).is_err());
    }

    #[test]
    fn only_a_sqlite_write_ahead_log_has_a_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("db-wal");
        let mut h = vec![0x37, 0x7f, 0x06, 0x83];
        h.extend_from_slice(&3_007_000u32.to_be_bytes());
        h.extend([5u8; 24]);
        std::fs::write(&p, [h.as_slice(), &[1u8; 100]].concat()).unwrap();
        assert_eq!(wal_header(&p).map(|x| x.to_vec()), Some(h.clone()));
        // Another format version, another magic, too short, empty, absent.
        let mut other = h.clone();
        other[7] ^= 1;
        std::fs::write(&p, &other).unwrap();
        assert_eq!(wal_header(&p), None);
        other = h.clone();
        other[3] = 0x84;
        std::fs::write(&p, &other).unwrap();
        assert_eq!(wal_header(&p), None);
        std::fs::write(&p, &h[..31]).unwrap();
        assert_eq!(wal_header(&p), None);
        std::fs::write(&p, b"").unwrap();
        assert_eq!(wal_header(&p), None);
        assert_eq!(wal_header(&dir.path().join("none")), None);
        // A link is not followed.
        let real = dir.path().join("real");
        std::fs::write(&real, &h).unwrap();
        let link = dir.path().join("link-wal");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(wal_header(&link), None);
    }
}
