//! Turning one changed path into a version.
//!
//! The path is looked at as it is now (lstat), compared with its last-known
//! state, and only what differs is captured. File content is cut with
//! FastCDC, hashed, and only chunks the previous version did not have are
//! compressed and spooled. Size, mtime, ctime and inode are checked before
//! and after the read: if the file changed meanwhile the capture is dropped
//! and retried, so a version never mixes two states.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::Path;

use rewind_core::{
    ChunkId, ChunkRef, Chunker, EncodedChunk, Entry, FileKind, FileMeta, Timestamp, Version,
};
use rewind_journal::{Journal, JournalError, PathState};
use rustix::fs::{CWD, Mode, OFlags};

thread_local! {
    /// The chunker's read buffer, one per capture worker.
    static CHUNK_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What a capture did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Same as the last-known state.
    Unchanged,
    /// A new version was queued; `bytes` of content were read.
    Captured {
        /// Content bytes read.
        bytes: u64,
        /// Bytes of new (compressed) chunk data spooled.
        spooled: u64,
    },
    /// The path is gone (or now ignored): `n` tombstones.
    Deleted(usize),
    /// The file changed while it was read; capture again later.
    Raced,
    /// Not something rewind captures (a socket), or gone and never known.
    Skipped,
}

/// A per-path failure.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Reading the path failed.
    #[error("{}: {source}", rewind_core::path::display(path))]
    Read {
        /// The path.
        path: Vec<u8>,
        /// The error.
        source: io::Error,
    },
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Everything a capture needs.
pub struct Capturer<'a> {
    /// The journal.
    pub journal: &'a Journal,
    /// The chunker (bounds from the repository).
    pub chunker: Chunker,
    /// Ignore rules.
    pub rules: &'a rewind_watcher::IgnoreRules,
}

fn present(path: &[u8], at: Timestamp, meta: FileMeta, chunks: Vec<ChunkRef>) -> Version {
    Version {
        client: String::new(),
        seq: 0,
        observed_at: at,
        path: path.to_vec(),
        entry: Entry::Present { meta, chunks },
    }
}

/// Same as far as a version is concerned (ignoring atime and the inode's
/// identity, which a rename or copy changes without changing anything a
/// restore would produce).
fn same_meta(a: &FileMeta, b: &FileMeta) -> bool {
    a.kind == b.kind
        && a.mode == b.mode
        && a.uid == b.uid
        && a.gid == b.gid
        && a.mtime == b.mtime
        && a.size == b.size
        && a.symlink_target == b.symlink_target
        && a.rdev == b.rdev
}

impl Capturer<'_> {
    /// Capture `path` (absolute), whose change was first observed at `at`.
    pub fn capture(&self, path: &Path, at: Timestamp) -> Result<Outcome, CaptureError> {
        let bytes = rewind_core::path::to_bytes(path);
        let meta = match rewind_fsmeta::read_meta(path) {
            Ok(m) => m,
            Err(e) if e.is_not_found() || e.io().raw_os_error() == Some(20) => {
                return self.tombstone(bytes, at);
            }
            Err(e) => {
                return Err(CaptureError::Read {
                    path: bytes.to_vec(),
                    source: io::Error::new(e.io().kind(), e.io().to_string()),
                });
            }
        };
        if self.rules.is_ignored(path, meta.kind == FileKind::Dir) {
            return self.tombstone(bytes, at);
        }
        let prev = self.journal.last_known(bytes)?;
        match meta.kind {
            FileKind::Socket => Ok(Outcome::Skipped),
            FileKind::File => self.capture_file(path, bytes, at, meta, prev),
            _ => {
                if prev.as_ref().is_some_and(|p| same_meta(&p.meta, &meta)) {
                    return Ok(Outcome::Unchanged);
                }
                let g = self.journal.begin_capture();
                g.append(present(bytes, at, meta, Vec::new()));
                Ok(Outcome::Captured {
                    bytes: 0,
                    spooled: 0,
                })
            }
        }
    }

    fn capture_file(
        &self,
        path: &Path,
        bytes: &[u8],
        at: Timestamp,
        meta: FileMeta,
        prev: Option<PathState>,
    ) -> Result<Outcome, CaptureError> {
        if let Some(p) = &prev
            && p.meta.kind == FileKind::File
            && p.meta.same_state(&meta)
            && p.meta.mode == meta.mode
        {
            return Ok(Outcome::Unchanged);
        }
        let read_err = |source: io::Error| CaptureError::Read {
            path: bytes.to_vec(),
            source,
        };
        // O_NOFOLLOW: if the path was swapped for a symlink since lstat,
        // fail instead of reading what it points to.
        let fd = rustix::fs::openat(
            CWD,
            path,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        )
        .map_err(|e| read_err(e.into()))?;
        let file = File::from(fd);
        let st = rustix::fs::fstat(&file).map_err(|e| read_err(e.into()))?;
        if st.st_ino as u64 != meta.ino {
            return Ok(Outcome::Raced);
        }
        let prev_ids: HashSet<ChunkId> = prev
            .as_ref()
            .map(|p| p.chunks.iter().map(|c| c.id).collect())
            .unwrap_or_default();
        let guard = self.journal.begin_capture();
        let mut seen = HashSet::new();
        let mut chunks = Vec::new();
        let mut read = 0u64;
        let mut spooled = 0u64;
        let mut spool_err = None;
        CHUNK_BUF
            .with(|buf| {
                let mut buf = buf.borrow_mut();
                self.chunker.for_each(&file, &mut buf, |data| {
                    let id = ChunkId::of(data);
                    read += data.len() as u64;
                    chunks.push(ChunkRef {
                        id,
                        len: data.len() as u32,
                    });
                    if !prev_ids.contains(&id) && seen.insert(id) && !guard.is_stored(&id) {
                        let enc = EncodedChunk::encode_with_id(id, data);
                        spooled += enc.data.len() as u64;
                        if let Err(e) = guard.spool(enc) {
                            spool_err = Some(e);
                            return Err(io::Error::other("spool failed"));
                        }
                    }
                    Ok(())
                })
            })
            .map_err(|e| match spool_err.take() {
                Some(j) => CaptureError::Journal(j),
                None => read_err(e),
            })?;
        let after = match rewind_fsmeta::read_meta(path) {
            Ok(m) => m,
            Err(e) if e.is_not_found() => return Ok(Outcome::Raced),
            Err(e) => return Err(read_err(io::Error::new(e.io().kind(), e.io().to_string()))),
        };
        if !after.same_state(&meta) || read != meta.size {
            return Ok(Outcome::Raced);
        }
        // Even when only ctime or the inode moved, record the new state so
        // rescans stop noticing it.
        guard.append(present(bytes, at, meta, chunks));
        Ok(Outcome::Captured {
            bytes: read,
            spooled,
        })
    }

    /// `path` is gone: a tombstone for it and everything known below it.
    fn tombstone(&self, bytes: &[u8], at: Timestamp) -> Result<Outcome, CaptureError> {
        let known = self.journal.known_under(bytes)?;
        let n = known.len();
        // Children first, so a reader never sees a child outlive its parent.
        for (p, _) in known.into_iter().rev() {
            let g = self.journal.begin_capture();
            g.append(Version {
                client: String::new(),
                seq: 0,
                observed_at: at,
                path: p,
                entry: Entry::Deleted,
            });
        }
        Ok(if n == 0 {
            Outcome::Skipped
        } else {
            Outcome::Deleted(n)
        })
    }
}

/// Whether a scanned entry differs from its last-known state.
pub fn differs(prev: Option<&PathState>, md: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(p) = prev else { return true };
    let m = &p.meta;
    let kind_same = match m.kind {
        FileKind::File => md.is_file(),
        FileKind::Dir => md.is_dir(),
        FileKind::Symlink => md.file_type().is_symlink(),
        _ => !(md.is_file() || md.is_dir() || md.file_type().is_symlink()),
    };
    !kind_same
        || m.ino != md.ino()
        || m.size != md.size()
        || m.mtime.sec != md.mtime()
        || m.mtime.nsec as i64 != md.mtime_nsec()
        || m.ctime.sec != md.ctime()
        || m.ctime.nsec as i64 != md.ctime_nsec()
        || m.mode != md.mode() & 0o7777
}
