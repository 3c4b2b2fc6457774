//! Turning one changed path into a version.
//!
//! The path is looked at as it is now (every piece of metadata, through
//! `rewind-fsmeta`), compared with its last-known state, and only what
//! differs is captured:
//!
//! - Content is cut with FastCDC and hashed; only chunks the previous
//!   version did not have and the repository does not hold are compressed
//!   and spooled. Size, mtime, ctime and inode are checked before and after
//!   the read: if the file changed meanwhile the capture is dropped and
//!   retried, so a version never mixes two states.
//! - Extended attribute values are chunks too, so a value repeated on many
//!   files is stored once.
//! - A metadata-only change (chmod, chown, setfacl, setfattr, touch) makes a
//!   version that reuses the previous chunk list without reading the file:
//!   when the watcher saw only attribute events and inode and size are
//!   unchanged ([`Change::Metadata`]; with a moved mtime only when the
//!   previous version was captured while the watches were in place), or
//!   when a scan finds inode, size and mtime unchanged ([`Change::Scan`]).
//! - A sparse file is read extent by extent: holes are neither read nor
//!   stored.
//! - The names of one inode (hard links) are read once: [`LinkMap`] keeps
//!   the chunk list of each multiply-linked inode state, and when one name
//!   gets new content the other known names are captured again.
//! - An item the OS would not let us read (an xattr, an ACL) is reported
//!   through `warn` with its path; the rest is captured.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use rewind_core::path::display;
use rewind_core::{
    ChunkId, ChunkRef, Chunker, EncodedChunk, Entry, ExtentReader, FileKind, FileMeta,
    MAX_CHUNK_LEN, Timestamp, Version, XattrRef,
};
use rewind_journal::{CaptureGuard, Journal, JournalError, PathState};

use crate::chunks::{ChunkLoop, Encode, Whole};
use crate::group;
use crate::links::{LinkMap, same_inode_in_dir};
use rustix::fs::{CWD, Mode, OFlags};

thread_local! {
    /// The chunker's read buffer, one per capture worker.
    static CHUNK_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Give back what this capture worker keeps from one capture to the next
/// (the chunker's buffer, the copy buffer, zstd's contexts): called when
/// it has had nothing to do for [`crate::scheduler::REST_AFTER`], so an
/// idle agent does not hold them; the next capture makes them again.
pub(crate) fn release_thread_buffers() {
    let _ = CHUNK_BUF.with(|b| b.try_borrow_mut().map(|mut b| std::mem::take(&mut *b)));
    copy_buf::release();
    rewind_core::release_thread_caches();
}

/// What the watcher knows about a change, from the weakest claim on the
/// content to the strongest. Two claims about one path merge to the
/// stronger ([`Change::merge`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// Only attribute events were seen (inotify `IN_ATTRIB`): the content
    /// is reused when the inode and size are unchanged.
    Metadata,
    /// A scan found a difference (no events): the content is reused when
    /// inode, size and mtime are unchanged, read again otherwise.
    Scan,
    /// The content may have changed: it is read unless nothing at all
    /// changed (inode, size, mtime and ctime).
    Content,
}

impl Change {
    /// The stronger of two claims.
    pub fn merge(self, other: Change) -> Change {
        self.max(other)
    }
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
        /// The content was not read: the previous chunk list (or that of
        /// another name of the same inode) was reused.
        reused: bool,
        /// Other names of the same inode that now need capturing too (its
        /// content changed and only this name had events).
        also: Vec<Vec<u8>>,
    },
    /// The path is gone (or now ignored): `n` tombstones.
    Deleted(usize),
    /// The file changed while it was read; capture again later.
    Raced,
    /// Not something rewind captures (a socket), or gone and never known.
    Skipped,
}

impl Outcome {
    /// Two outcomes of one capture (the members of a group) as one: a
    /// race wins (the whole capture is taken again), captures add up.
    pub(crate) fn combine(self, other: Outcome) -> Outcome {
        use Outcome::*;
        match (self, other) {
            (Raced, _) | (_, Raced) => Raced,
            (
                Captured {
                    bytes: b1,
                    spooled: s1,
                    reused: r1,
                    also: mut a1,
                },
                Captured {
                    bytes: b2,
                    spooled: s2,
                    reused: r2,
                    also: a2,
                },
            ) => {
                a1.extend(a2);
                Captured {
                    bytes: b1 + b2,
                    spooled: s1 + s2,
                    reused: r1 && r2,
                    also: a1,
                }
            }
            (c @ Captured { .. }, _) | (_, c @ Captured { .. }) => c,
            (Deleted(a), Deleted(b)) => Deleted(a + b),
            (d @ Deleted(_), _) | (_, d @ Deleted(_)) => d,
            (Unchanged, _) | (_, Unchanged) => Unchanged,
            (Skipped, Skipped) => Skipped,
        }
    }
}

/// Content copied out of a busy file, not yet cut and encoded (see
/// [`SNAPSHOT_MAX`]).
pub(crate) struct Pending {
    bytes: Vec<u8>,
    at: Timestamp,
    change: Change,
    meta: FileMeta,
    refs: Vec<XattrRef>,
    values: Vec<Vec<u8>>,
    prev: Option<PathState>,
    source: Source,
    /// Content bytes the state has (its data extents' total when sparse).
    expected: u64,
    issues: Vec<rewind_fsmeta::MetaIssue>,
}

/// Where a busy file's copied-out content is.
enum Source {
    /// In memory (up to [`SNAPSHOT_MAX`]).
    Memory(Vec<u8>),
    /// A reflinked copy, sharing the file's extents (btrfs, XFS), and the
    /// file itself (`live`), open.
    Clone { clone: File, live: File },
}

/// Busy files (and the members of a group) up to this size are copied out
/// of the page cache before they are cut, hashed and compressed (a reflink
/// is made instead for one whose last copy tore, where the filesystem has
/// them), so the window in which a write makes a read torn is the copy
/// alone: for a SQLite WAL of 4 MiB written every
/// 10 ms, about 1 ms instead of 10 or more. 64 MiB bounds the memory a
/// capture worker holds for it.
const SNAPSHOT_MAX: u64 = 64 << 20;

/// Busy files up to this size are copied into memory first even where the
/// filesystem makes reflinks; larger ones, and those whose last copy tore,
/// are reflinked there. On btrfs a reflink of a file under random writes
/// (thousands of extents) costs far more than a copy from the page cache:
/// in the busy bench the clone, the read of the clone (not in the page
/// cache) and freeing it were half of the agent's time, where a copy of 8
/// MiB takes 1 to 2 ms. But a copy of 50 MiB (10 to 15 ms) is torn by most
/// writers that write every 10 to 50 ms, and copying it first put its
/// staleness p99 on btrfs from 2.7 s to 5.4 s (docs/decisions.md,
/// "Busy-file CPU (issue 16)"). 16 MiB: a copy of 3 to 5 ms here.
const MEMORY_FIRST_MAX: u64 = 16 << 20;

/// A version made but not appended yet (the members of a group are
/// appended together), or what happened instead.
pub(crate) enum Prepared {
    Done(Outcome),
    /// Read in snapshot mode; [`Capturer::finish`] makes the version.
    Content(Box<Pending>),
    Version {
        version: Box<Version>,
        outcome: Outcome,
        issues: Vec<rewind_fsmeta::MetaIssue>,
    },
}

/// How a capture reads a file's content.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ReadMode {
    /// Cut and hashed as it is read, unless it is being written (see
    /// [`being_written`]): then as `Snapshot`.
    Live,
    /// Copied out first, then cut (see [`SNAPSHOT_MAX`]): the file raced a
    /// read lately, or is a member of a group.
    Snapshot,
    /// A log that its writer only appends to and whose records carry
    /// checksums, so any prefix of it is a state its reader recovers from
    /// as from a power cut (a SQLite write-ahead log while its header stays
    /// the same, which the group capture checks: see
    /// [`crate::group::wal_header`]). Its bytes up to the size stat'ed are
    /// copied out, and appends meanwhile do not make the read torn; any
    /// other change (shorter, another inode) still does. A sparse log, or
    /// one above [`SNAPSHOT_MAX`], is read as `Snapshot`.
    Appending,
}

impl ReadMode {
    /// `Snapshot` for a file that raced a read lately, else `Live`.
    pub(crate) fn hot(hot: bool) -> ReadMode {
        if hot {
            ReadMode::Snapshot
        } else {
            ReadMode::Live
        }
    }
}

/// Whether the file stat'ed as `before` and then as `after` is still the
/// same file, no shorter: what a log read in [`ReadMode::Appending`] must
/// be after the read (its header, checked by the group capture, says
/// whether it was started over).
pub(crate) fn only_appended(before: &FileMeta, after: &FileMeta) -> bool {
    after.kind == FileKind::File
        && after.ino == before.ino
        && after.dev == before.dev
        && after.size >= before.size
}

/// Whether something (anything, a dangling link too) is at `path`.
fn exists(path: &[u8]) -> bool {
    std::fs::symlink_metadata(rewind_core::path::from_bytes(path)).is_ok()
}

/// A per-path failure.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Reading the path failed.
    #[error("{}: {source}", display(path))]
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
    /// Hard-link groups seen so far.
    pub links: &'a LinkMap,
    /// Where per-item problems go (one line each, path included): a
    /// metadata item that could not be read, a value too large to store.
    pub warn: &'a (dyn Fn(String) + Sync),
    /// Where notes go (things skipped by design, such as sockets).
    pub note: &'a (dyn Fn(String) + Sync),
    /// Versions with a higher seq were captured while the watches were in
    /// place, so a content change since then would have had its own event:
    /// only after such a version does an attribute-only event that moved
    /// the mtime (`touch`) keep the content.
    pub watched_since: u64,
    /// Groups of `[watch] groups` (SQLite's are built in).
    pub groups: &'a group::GroupRules,
    /// The snapshot the first pass reads from, while it does.
    pub snapshot: &'a std::sync::RwLock<Option<crate::snapshot::ActiveSnapshot>>,
    /// Asks for a path to be captured again (live, after a capture from a
    /// snapshot whose state it no longer has).
    pub again: &'a (dyn Fn(Vec<u8>) + Sync),
    /// Encodes new chunks with what the repository already holds: deltas
    /// against the file's previous version, a dictionary for small files
    /// ([`rewind_core::FileEncoder`]). `None`: each chunk on its own.
    pub encoder: Option<&'a rewind_core::FileEncoder>,
    /// How the repository names chunks ([`rewind_core::ChunkIds`]).
    pub ids: &'a rewind_core::ChunkIds,
}

fn present(
    path: &[u8],
    at: Timestamp,
    meta: FileMeta,
    chunks: Vec<ChunkRef>,
    xattrs: Vec<XattrRef>,
) -> Version {
    Version {
        client: String::new(),
        seq: 0,
        observed_at: at,
        path: path.to_vec(),
        entry: Entry::Present {
            meta,
            chunks,
            xattrs,
        },
    }
}

/// Same as far as a version is concerned: everything a restore would
/// produce (kind, mode, owner, mtime, size, link target, device, ACLs,
/// flags; xattrs are compared as references beside it). Not atime (every
/// read moves it), not ctime (it cannot be restored) and not the inode's
/// identity, which a rename or copy changes.
fn same_meta(a: &FileMeta, b: &FileMeta) -> bool {
    a.kind == b.kind
        && a.mode == b.mode
        && a.uid == b.uid
        && a.gid == b.gid
        && a.mtime == b.mtime
        && a.size == b.size
        && a.symlink_target == b.symlink_target
        && a.rdev == b.rdev
        && a.acl == b.acl
        && a.default_acl == b.default_acl
        && a.flags == b.flags
}

impl Capturer<'_> {
    /// Capture `path` (absolute); `change` says what the watcher knows
    /// about it. A path that names a group (a SQLite database whose `-wal`
    /// or `-journal` exists or was known; see [`crate::group`]) captures
    /// the whole group as one state.
    ///
    /// A version's time is a moment at which its content and metadata are
    /// proven to have been the path's: the moment of the stat that the
    /// stat after the read matched (for a file that was being written, the
    /// moment after its write was given time to finish), never the moment
    /// its change was first observed, which for a file that stays busy can
    /// be long before the content that is read (issue 16). So a restore
    /// never returns content from after the moment asked for.
    ///
    /// `hot`: the file raced a writer lately; it is read in snapshot mode
    /// (see [`SNAPSHOT_MAX`]).
    pub fn capture(&self, path: &Path, change: Change, hot: bool) -> Result<Outcome, CaptureError> {
        let bytes = rewind_core::path::to_bytes(path);
        if let Some((dir, glob)) = self.groups.configured(bytes) {
            let known = self.journal.known_under(dir)?.into_iter().map(|(p, _)| p);
            let members = group::configured_members(dir, glob, known);
            return self.capture_group(&members, change, false);
        }
        if let Some(members) = group::sqlite_group(bytes, |p| -> Result<bool, CaptureError> {
            Ok(exists(p) || self.journal.last_known(p)?.is_some())
        })? {
            return self.capture_group(&members, change, true);
        }
        if group::is_rebuilt_side_file(bytes) {
            // SQLite's shared-memory index: rebuilt from the WAL when the
            // database opens, never part of a consistent state.
            let at = Timestamp::now();
            return self.tombstone(bytes, at);
        }
        self.capture_alone(path, change, hot)
    }

    /// Capture one path, not as part of a group.
    pub(crate) fn capture_alone(
        &self,
        path: &Path,
        change: Change,
        hot: bool,
    ) -> Result<Outcome, CaptureError> {
        let guard = self.journal.begin_capture();
        let prepared = self.prepare(&guard, path, change, hot)?;
        match self.complete(&guard, prepared)? {
            Prepared::Version {
                version,
                outcome,
                issues,
            } => {
                guard.append(*version);
                self.report(rewind_core::path::to_bytes(path), issues);
                Ok(outcome)
            }
            Prepared::Done(o) => Ok(o),
            Prepared::Content(_) => unreachable!("complete() finishes content"),
        }
    }

    /// Metadata items that could not be read, one warning each.
    pub(crate) fn report(&self, bytes: &[u8], issues: Vec<rewind_fsmeta::MetaIssue>) {
        for i in issues {
            (self.warn)(format!("{}: could not read {}", display(bytes), i));
        }
    }

    /// Look at `path` and prepare its new version (not appended yet), with
    /// new chunks queued under `guard`; a deletion is appended at once.
    fn prepare(
        &self,
        guard: &CaptureGuard,
        path: &Path,
        change: Change,
        hot: bool,
    ) -> Result<Prepared, CaptureError> {
        if let Some(p) = self.prepare_from_snapshot(guard, path, change, hot)? {
            return Ok(p);
        }
        self.prepare_at(guard, path, path, change, ReadMode::hot(hot), None)
            .map(|p| p.expect("a live read is never missing from a snapshot"))
    }

    /// During a first pass that reads from a snapshot (see `snapshot`):
    /// `path` as the snapshot holds it, with the snapshot's moment, unless
    /// it was captured live since or the snapshot lacks it (`None`: read
    /// live). A path whose live state differs from the snapshot's is asked
    /// for again, so its live state follows at once.
    fn prepare_from_snapshot(
        &self,
        guard: &CaptureGuard,
        path: &Path,
        change: Change,
        hot: bool,
    ) -> Result<Option<Prepared>, CaptureError> {
        let snap = self
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some((s, read)) = snap.and_then(|s| s.read_path(path).map(|r| (s, r))) else {
            return Ok(None);
        };
        let bytes = rewind_core::path::to_bytes(path);
        if self
            .journal
            .last_known(bytes)?
            .is_some_and(|p| p.seq >= s.from_seq)
        {
            return Ok(None);
        }
        let Some(prepared) = self.prepare_at(
            guard,
            &read,
            path,
            change,
            ReadMode::hot(hot),
            Some(s.taken_at),
        )?
        else {
            return Ok(None);
        };
        let same = match (
            rewind_fsmeta::read_stat(&read),
            rewind_fsmeta::read_stat(path),
        ) {
            (Ok(a), Ok(b)) => {
                a.kind == b.kind && a.size == b.size && a.mtime == b.mtime && a.mode == b.mode
            }
            _ => false,
        };
        if !same {
            (self.again)(bytes.to_vec());
        }
        Ok(Some(match prepared {
            // Other names of an inode are found in the snapshot's folder;
            // the first pass meets them anyway.
            Prepared::Version {
                version,
                outcome:
                    Outcome::Captured {
                        bytes,
                        spooled,
                        reused,
                        ..
                    },
                issues,
            } => Prepared::Version {
                version,
                outcome: Outcome::Captured {
                    bytes,
                    spooled,
                    reused,
                    also: Vec::new(),
                },
                issues,
            },
            other => other,
        }))
    }

    /// Prepare the version of `record` (the path versions are stored
    /// under) read from `io` (the same path, or its copy in a snapshot, the
    /// version then carrying `at`). `None`: a snapshot lacks it.
    pub(crate) fn prepare_at(
        &self,
        guard: &CaptureGuard,
        io: &Path,
        record: &Path,
        change: Change,
        mode: ReadMode,
        at: Option<Timestamp>,
    ) -> Result<Option<Prepared>, CaptureError> {
        let path = io;
        let from_snapshot = at.is_some();
        let bytes = rewind_core::path::to_bytes(record);
        let at = at.unwrap_or_else(Timestamp::now);
        let (mut meta, issues) = match rewind_fsmeta::read_meta_full(path) {
            Ok(m) => m,
            Err(e) if from_snapshot && (e.is_not_found() || e.io().raw_os_error() == Some(20)) => {
                return Ok(None);
            }
            Err(e) if e.is_not_found() || e.io().raw_os_error() == Some(20) => {
                return self.tombstone(bytes, at).map(|o| Some(Prepared::Done(o)));
            }
            Err(e) => {
                return Err(CaptureError::Read {
                    path: bytes.to_vec(),
                    source: io::Error::new(e.io().kind(), e.io().to_string()),
                });
            }
        };
        if self.rules.is_ignored(record, meta.kind == FileKind::Dir) {
            return self.tombstone(bytes, at).map(|o| Some(Prepared::Done(o)));
        }
        if meta.kind == FileKind::Socket {
            (self.note)(format!("{}: a socket, not captured", display(bytes)));
            // What was at this path before is gone.
            return self.tombstone(bytes, at).map(|o| Some(Prepared::Done(o)));
        }
        let prev = self.journal.last_known(bytes)?;
        let values = std::mem::take(&mut meta.xattrs);
        let mut refs = Vec::with_capacity(values.len());
        let mut kept = Vec::with_capacity(values.len());
        for x in values {
            if x.value.len() > MAX_CHUNK_LEN as usize {
                (self.warn)(format!(
                    "{}: extended attribute {} not captured: its {} bytes exceed the largest storable value",
                    display(bytes),
                    display(&x.name),
                    x.value.len()
                ));
                continue;
            }
            refs.push(XattrRef {
                name: x.name,
                value: ChunkRef {
                    id: self.ids.id_of(&x.value),
                    len: x.value.len() as u32,
                },
            });
            kept.push(x.value);
        }
        let prepared = match meta.kind {
            FileKind::File => self.capture_file(
                guard,
                mode,
                path,
                bytes,
                at,
                change,
                meta,
                (refs, kept),
                prev,
            )?,
            _ => {
                if prev
                    .as_ref()
                    .is_some_and(|p| same_meta(&p.meta, &meta) && p.xattrs == refs)
                {
                    return Ok(Some(Prepared::Done(Outcome::Unchanged)));
                }
                let spooled = self.spool_xattrs(guard, prev.as_ref(), &refs, &kept)?;
                Prepared::Version {
                    version: Box::new(present(bytes, at, meta, Vec::new(), refs)),
                    outcome: Outcome::Captured {
                        bytes: 0,
                        spooled,
                        reused: false,
                        also: Vec::new(),
                    },
                    issues: Vec::new(),
                }
            }
        };
        Ok(Some(match prepared {
            Prepared::Version {
                version, outcome, ..
            } => Prepared::Version {
                version,
                outcome,
                issues,
            },
            Prepared::Content(mut p) => {
                p.issues = issues;
                Prepared::Content(p)
            }
            done => done,
        }))
    }

    /// Queue the xattr values the previous version did not have and the
    /// repository does not hold.
    fn spool_xattrs(
        &self,
        g: &CaptureGuard,
        prev: Option<&PathState>,
        refs: &[XattrRef],
        values: &[Vec<u8>],
    ) -> Result<u64, CaptureError> {
        let mut spooled = 0;
        let mut seen = HashSet::new();
        for (r, v) in refs.iter().zip(values) {
            let id = r.value.id;
            if prev.is_some_and(|p| p.xattrs.iter().any(|x| x.value.id == id))
                || !seen.insert(id)
                || g.is_stored(&id)
            {
                continue;
            }
            let enc = EncodedChunk::encode_with_id(id, v);
            spooled += enc.data.len() as u64;
            g.spool(enc)?;
        }
        Ok(spooled)
    }

    #[allow(clippy::too_many_arguments)]
    fn capture_file(
        &self,
        guard: &CaptureGuard,
        mode: ReadMode,
        path: &Path,
        bytes: &[u8],
        at: Timestamp,
        change: Change,
        mut meta: FileMeta,
        (refs, values): (Vec<XattrRef>, Vec<Vec<u8>>),
        prev: Option<PathState>,
    ) -> Result<Prepared, CaptureError> {
        let prev_file = prev.as_ref().filter(|p| p.meta.kind == FileKind::File);
        if let Some(p) = prev_file
            && p.meta.same_state(&meta)
            && same_meta(&p.meta, &meta)
            && p.xattrs == refs
        {
            return Ok(Prepared::Done(Outcome::Unchanged));
        }
        // Metadata only: the content is taken over without reading it.
        let reuse = prev_file.filter(|p| {
            p.meta.ino == meta.ino
                && p.meta.dev == meta.dev
                && p.meta.size == meta.size
                && match change {
                    Change::Metadata => {
                        p.meta.mtime == meta.mtime
                            // A name outside the watched folders may have
                            // written a hard-linked inode without an event.
                            || (p.seq > self.watched_since && meta.nlink == 1)
                    }
                    Change::Scan => p.meta.mtime == meta.mtime,
                    Change::Content => p.meta.same_state(&meta),
                }
        });
        let shared = match reuse {
            Some(p) => Some((p.chunks.clone(), p.meta.sparse.clone())),
            None if meta.nlink > 1 => self.links.lookup(&meta, bytes),
            None => None,
        };
        if let Some((chunks, sparse)) = shared {
            meta.sparse = sparse;
            let spooled = self.spool_xattrs(guard, prev.as_ref(), &refs, &values)?;
            let also = self.other_names(path, bytes, change, &meta, &chunks);
            return Ok(Prepared::Version {
                version: Box::new(present(bytes, at, meta, chunks, refs)),
                outcome: Outcome::Captured {
                    bytes: 0,
                    spooled,
                    reused: true,
                    also,
                },
                issues: Vec::new(),
            });
        }

        let read_err = |source: io::Error| CaptureError::Read {
            path: bytes.to_vec(),
            source,
        };
        // A write() sets mtime when it starts, before its bytes are in the
        // file: one that began just before our stat may still be copying,
        // and the stat after the read would not see it. Writes that started
        // within the last WRITE_GUARD get that long to finish; then the
        // state must still be the same.
        //
        // Not for a log that is only appended to (`ReadMode::Appending`):
        // what a write in progress leaves is a torn tail, which the log's
        // own checksums tell from a whole record.
        let appending =
            mode == ReadMode::Appending && meta.sparse.is_none() && meta.size <= SNAPSHOT_MAX;
        let hot = mode != ReadMode::Live;
        let mut at = at;
        if let Some(wait) = write_guard_wait(&meta).filter(|_| !appending) {
            std::thread::sleep(wait);
            // From here on the state is proven: the write had its time.
            at = Timestamp::now();
            match rewind_fsmeta::read_stat(path) {
                Ok(again) if again.same_state(&meta) => {}
                Ok(_) => return Ok(Prepared::Done(Outcome::Raced)),
                Err(e) if e.is_not_found() => return Ok(Prepared::Done(Outcome::Raced)),
                Err(e) => {
                    return Err(read_err(io::Error::new(e.io().kind(), e.io().to_string())));
                }
            }
        }
        // O_NOFOLLOW: if the path was swapped for a symlink since lstat,
        // fail instead of reading what it points to.
        // Past PATH_MAX through a descriptor of the directory.
        let reach = rewind_fsmeta::reach(path).map_err(read_err)?;
        let fd = rustix::fs::openat(
            CWD,
            reach.path(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        )
        .map_err(|e| read_err(e.into()))?;
        let file = File::from(fd);
        let st = rustix::fs::fstat(&file).map_err(|e| read_err(e.into()))?;
        if st.st_ino as u64 != meta.ino {
            return Ok(Prepared::Done(Outcome::Raced));
        }
        // The extents of the file as opened (the map read with the metadata
        // may already be stale).
        if meta.sparse.is_some() {
            meta.sparse = rewind_fsmeta::data_extents(&file).map_err(read_err)?;
        }
        let expected = match &meta.sparse {
            Some(ext) => ext.iter().map(|e| e.len).sum(),
            None => meta.size,
        };
        // A busy file (one that raced a read lately, or was written within
        // ACTIVE_WRITES) is copied out first, so the window in which a
        // write makes the read torn is the copy alone, not the hashing and
        // compression too.
        //
        // Which copy: from the page cache into memory first, up to
        // MEMORY_FIRST_MAX, wherever the file is; a reflink, where the
        // filesystem has them, for a larger file or one whose last read
        // tore (`hot`); else memory up to SNAPSHOT_MAX.
        let copy = if appending {
            // The bytes the log had when stat'ed, whatever is appended
            // while they are copied.
            let mut data = copy_buf::take(expected as usize);
            match (&file).take(expected).read_to_end(&mut data) {
                Ok(_) if data.len() as u64 == expected => Some(Source::Memory(data)),
                Ok(_) => {
                    // Shorter than stat'ed: cut back, not appended to.
                    copy_buf::give_back(data);
                    return Ok(Prepared::Done(Outcome::Raced));
                }
                Err(e) => {
                    copy_buf::give_back(data);
                    return Err(read_err(e));
                }
            }
        } else if hot || being_written(&meta) {
            let dir = path.parent().unwrap_or(Path::new("/"));
            let memory_first = !hot && expected <= MEMORY_FIRST_MAX;
            let clone = if memory_first {
                None
            } else {
                rewind_fsmeta::reflink_copy(&file, dir).map_err(read_err)?
            };
            match clone {
                Some(clone) => Some(Source::Clone {
                    clone,
                    live: file.try_clone().map_err(read_err)?,
                }),
                None if expected <= SNAPSHOT_MAX => {
                    let mut data = copy_buf::take(expected as usize);
                    let copied = match &meta.sparse {
                        Some(extents) => {
                            Watched::new(ExtentReader::new(&file, extents), &file, &meta)
                                .read_to_end(&mut data)
                                .map(|_| true)
                        }
                        None => copy_watched(&file, &meta, &mut data),
                    };
                    match copied {
                        Ok(true) if data.len() as u64 == expected => {}
                        Err(e) if !Torn::is(&e) => {
                            copy_buf::give_back(data);
                            return Err(read_err(e));
                        }
                        // Torn, or another size than stat'ed.
                        _ => {
                            copy_buf::give_back(data);
                            return Ok(Prepared::Done(Outcome::Raced));
                        }
                    }
                    Some(Source::Memory(data))
                }
                None => None,
            }
        } else {
            None
        };
        if let Some(source) = copy {
            let after = match rewind_fsmeta::read_stat(path) {
                Ok(m) => m,
                Err(e) if e.is_not_found() => return Ok(Prepared::Done(Outcome::Raced)),
                Err(e) => return Err(read_err(io::Error::new(e.io().kind(), e.io().to_string()))),
            };
            let kept = if appending {
                only_appended(&meta, &after)
            } else {
                after.same_state(&meta)
            };
            if !kept {
                return Ok(Prepared::Done(Outcome::Raced));
            }
            return Ok(Prepared::Content(Box::new(Pending {
                bytes: bytes.to_vec(),
                at,
                change,
                meta,
                refs,
                values,
                prev,
                source,
                expected,
                issues: Vec::new(),
            })));
        }
        // Read live: a write seen midway ends the read at once (see
        // `Watched`) instead of after the whole file was hashed and its
        // new chunks encoded and queued for nothing.
        let cut = match &meta.sparse {
            Some(extents) => self.cut_and_spool(
                guard,
                Watched::new(ExtentReader::new(&file, extents), &file, &meta),
                prev_file,
                bytes,
            )?,
            None => {
                self.cut_and_spool(guard, Watched::new(&file, &file, &meta), prev_file, bytes)?
            }
        };
        let Some((chunks, read, mut spooled)) = cut else {
            return Ok(Prepared::Done(Outcome::Raced));
        };
        // The stat alone: a change of xattrs or ACLs moves ctime too.
        let after = match rewind_fsmeta::read_stat(path) {
            Ok(m) => m,
            Err(e) if e.is_not_found() => return Ok(Prepared::Done(Outcome::Raced)),
            Err(e) => return Err(read_err(io::Error::new(e.io().kind(), e.io().to_string()))),
        };
        if !after.same_state(&meta) || read != expected {
            return Ok(Prepared::Done(Outcome::Raced));
        }
        spooled += self.spool_xattrs(guard, prev.as_ref(), &refs, &values)?;
        let also = self.other_names(path, bytes, change, &meta, &chunks);
        // Even when only ctime or the inode moved, record the new state so
        // rescans stop noticing it.
        Ok(Prepared::Version {
            version: Box::new(present(bytes, at, meta, chunks, refs)),
            outcome: Outcome::Captured {
                bytes: read,
                spooled,
                reused: false,
                also,
            },
            issues: Vec::new(),
        })
    }

    /// Cut `reader` into chunks and queue the new ones under `guard`
    /// (against `prev`, the previous version of the file): the chunk list,
    /// the bytes read, the bytes queued; `None` when the reader saw the
    /// file change midway ([`Torn`]).
    fn cut_and_spool(
        &self,
        guard: &CaptureGuard,
        reader: impl io::Read,
        prev: Option<&PathState>,
        bytes: &[u8],
    ) -> Result<Option<(Vec<ChunkRef>, u64, u64)>, CaptureError> {
        let prev_ids: HashSet<ChunkId> = prev
            .map(|p| p.chunks.iter().map(|c| c.id).collect())
            .unwrap_or_default();
        // New chunks of a changed file are tried as deltas against the
        // chunks at the same place in its previous version.
        let walk = match (self.encoder, prev) {
            (Some(_), Some(p)) => rewind_core::DeltaWalk::new(&p.chunks),
            _ => None,
        };
        let encoder: &dyn Encode = match self.encoder {
            Some(d) => d,
            None => &Whole,
        };
        let mut cut = ChunkLoop::new(guard, prev_ids, walk, self.ids);
        let mut spooled = 0u64;
        let mut spool_err = None;
        let cut_all = CHUNK_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            self.chunker.for_each(reader, &mut buf, |data: &[u8]| {
                if let Some(new) = cut.cut(data) {
                    let enc = encoder.encode(new.id, data, new.hint);
                    spooled += enc.data.len() as u64;
                    if let Err(e) = guard.spool(enc) {
                        spool_err = Some(e);
                        return Err(io::Error::other("spool failed"));
                    }
                }
                Ok(())
            })
        });
        match cut_all {
            Ok(()) => {}
            Err(_) if spool_err.is_some() => {
                return Err(CaptureError::Journal(spool_err.take().expect("checked")));
            }
            Err(e) if Torn::is(&e) => return Ok(None),
            Err(e) => {
                return Err(CaptureError::Read {
                    path: bytes.to_vec(),
                    source: e,
                });
            }
        }
        let read = cut.bytes();
        Ok(Some((cut.into_chunks(), read, spooled)))
    }

    /// The version of content copied out by a capture in snapshot mode.
    fn finish(&self, guard: &CaptureGuard, mut p: Pending) -> Result<Prepared, CaptureError> {
        // The file's own pages are in the page cache, the clone's are not
        // (every read of the clone goes to the disk, checksums verified):
        // a copy of the file that no write touched (its stat never left
        // the state the clone was proven to hold) is the clone's content
        // for a fraction of the cost; a torn one leaves the clone to read.
        // On btrfs the read of the clones of the bench's 50 MiB files was
        // a sixth of the agent's time (docs/decisions.md, "Busy-file CPU
        // (issue 16)").
        let quiet = match &p.source {
            Source::Clone { live, .. } if p.meta.sparse.is_none() && p.expected <= SNAPSHOT_MAX => {
                let mut data = copy_buf::take(p.expected as usize);
                match copy_watched(live, &p.meta, &mut data) {
                    Ok(true) if data.len() as u64 == p.expected => Some(data),
                    _ => {
                        copy_buf::give_back(data);
                        None
                    }
                }
            }
            _ => None,
        };
        if let Some(data) = quiet {
            p.source = Source::Memory(data);
        }
        let prev_file = p.prev.as_ref().filter(|x| x.meta.kind == FileKind::File);
        let cut = match &p.source {
            Source::Memory(data) => {
                self.cut_and_spool(guard, data.as_slice(), prev_file, &p.bytes)?
            }
            Source::Clone { clone: f, .. } => match &p.meta.sparse {
                Some(extents) => {
                    self.cut_and_spool(guard, ExtentReader::new(f, extents), prev_file, &p.bytes)?
                }
                None => self.cut_and_spool(guard, f, prev_file, &p.bytes)?,
            },
        };
        // A copy never changes under its reader.
        let (chunks, read, mut spooled) = cut.expect("only a watched reader tears");
        if let Source::Memory(data) = p.source {
            copy_buf::give_back(data);
        }
        if read != p.expected {
            // The copy holds another state than the one stat'ed (a size
            // changed between them): taken again.
            return Ok(Prepared::Done(Outcome::Raced));
        }
        spooled += self.spool_xattrs(guard, p.prev.as_ref(), &p.refs, &p.values)?;
        let path = rewind_core::path::from_bytes(&p.bytes);
        let also = self.other_names(&path, &p.bytes, p.change, &p.meta, &chunks);
        Ok(Prepared::Version {
            version: Box::new(present(&p.bytes, p.at, p.meta, chunks, p.refs)),
            outcome: Outcome::Captured {
                bytes: read,
                spooled,
                reused: false,
                also,
            },
            issues: p.issues,
        })
    }

    /// Content read in snapshot mode, made into its version.
    pub(crate) fn complete(
        &self,
        guard: &CaptureGuard,
        p: Prepared,
    ) -> Result<Prepared, CaptureError> {
        match p {
            Prepared::Content(pending) => self.finish(guard, *pending),
            other => Ok(other),
        }
    }

    /// For a file with several names: record this state in the link map,
    /// and return the other names that need capturing again (see
    /// [`LinkMap`]). When an event (not a scan, which meets every name)
    /// names an inode with names the map does not know, the directory is
    /// searched for them: `ln a b` has events for `b` only.
    fn other_names(
        &self,
        path: &Path,
        bytes: &[u8],
        change: Change,
        meta: &FileMeta,
        chunks: &[ChunkRef],
    ) -> Vec<Vec<u8>> {
        if meta.nlink < 2 {
            return Vec::new();
        }
        let (mut also, known) = self.links.record(meta, bytes, chunks);
        if change != Change::Scan && (known as u64) < meta.nlink {
            for p in same_inode_in_dir(path, meta.ino) {
                if !also.contains(&p) {
                    also.push(p);
                }
            }
        }
        also
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

/// How long a write that started just before a capture's first stat is
/// given to finish before the file is read (see `capture_file`). The kernel
/// moves mtime when a write() starts and copies its bytes after; into the
/// page cache that copy runs at gigabytes a second, so a write() of several
/// MiB is done within this. It is short because it also bounds how often a
/// busy file can be read at all: a file written every 10 ms (a database)
/// would never be read if every read first waited longer than that
/// (measured with the SQLite tests of `tests/busy.rs`: 20 ms let no version
/// through). A single larger write() still in progress can go unnoticed,
/// as with every tool that compares stats around a read.
const WRITE_GUARD: std::time::Duration = std::time::Duration::from_millis(2);

/// How long to wait before reading a file last modified at `meta.mtime`:
/// `None` when that is at least [`WRITE_GUARD`] ago (or in the future,
/// where the clock says nothing useful).
fn write_guard_wait(meta: &FileMeta) -> Option<std::time::Duration> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    let mtime = std::time::Duration::new(u64::try_from(meta.mtime.sec).ok()?, meta.mtime.nsec);
    let age = now.checked_sub(mtime)?;
    WRITE_GUARD.checked_sub(age).filter(|w| !w.is_zero())
}

/// How long after its last write a file still counts as being written
/// ([`being_written`]): a file that a writer touched this recently will
/// most likely be written again while a live read of it hashes, chunks and
/// encodes (a busy file of the issue 16 bench, written every 10–50 ms, is
/// captured at most a few ms after a write; a file captured after the 300
/// ms of quiet the watcher waits for is older than this only when quiet
/// for a second). Measured with `REWIND_BENCH=busy`: without it every
/// busy capture of a file of 1 MiB or more began with a live read that
/// tore, was thrown away and then taken again from a copy
/// (docs/decisions.md, "Busy-file CPU (issue 16)").
const ACTIVE_WRITES: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether the file (last modified at `meta.mtime`) is being written now:
/// its content is then copied out before it is cut, the way a file that
/// raced a read is (see [`SNAPSHOT_MAX`]). A clock that says nothing
/// useful (an mtime in the future) counts as not written.
fn being_written(meta: &FileMeta) -> bool {
    let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) else {
        return false;
    };
    let (Ok(sec), nsec) = (u64::try_from(meta.mtime.sec), meta.mtime.nsec) else {
        return false;
    };
    now.checked_sub(std::time::Duration::new(sec, nsec))
        .is_some_and(|age| age < ACTIVE_WRITES)
}

/// How many bytes a live read of a file takes between two looks at its
/// stat ([`Watched`]): a look (`fstat`) costs under a microsecond, a MiB
/// of reading, chunking and hashing about a millisecond, so a read that a
/// write makes torn stops within a MiB of it, for almost nothing.
const CHECK_EVERY: usize = 1 << 20;

/// A reader of an open file that looks at the file's stat every
/// [`CHECK_EVERY`] bytes and fails with [`Torn`] once it is no longer the
/// state read before (size, mtime, ctime): the read is then torn whatever
/// follows, so its remaining bytes are not worth reading. Never a
/// substitute for the stat after the read, which alone proves a state (a
/// write in the last stretch is seen only there).
struct Watched<'a, R> {
    inner: R,
    file: &'a File,
    meta: &'a FileMeta,
    unchecked: usize,
}

impl<'a, R> Watched<'a, R> {
    fn new(inner: R, file: &'a File, meta: &'a FileMeta) -> Watched<'a, R> {
        Watched {
            inner,
            file,
            meta,
            unchecked: 0,
        }
    }
}

impl<R: Read> Read for Watched<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.unchecked >= CHECK_EVERY {
            self.unchecked = 0;
            if !still(self.file, self.meta)? {
                return Err(io::Error::other(Torn));
            }
        }
        // One read never runs far past a look.
        let room = CHECK_EVERY - self.unchecked.min(CHECK_EVERY - 1);
        let n = buf.len().min(room);
        let got = self.inner.read(&mut buf[..n])?;
        self.unchecked += got;
        Ok(got)
    }
}

/// Copy the dense file `file` (stat'ed as `meta`) to the end of `data`,
/// a [`CHECK_EVERY`] at a time, looking at its stat between two: `false`
/// as soon as it is no longer the state stat'ed (the copy is torn). Read
/// straight into `data`'s spare room (`File` fills it without zeroing it
/// first, which a wrapping reader such as [`Watched`] cannot do: that
/// zeroing was 4 % of the agent's time in the busy bench).
fn copy_watched(file: &File, meta: &FileMeta, data: &mut Vec<u8>) -> io::Result<bool> {
    loop {
        let n = file.take(CHECK_EVERY as u64).read_to_end(data)?;
        if n == 0 {
            return Ok(true);
        }
        if !still(file, meta)? {
            return Ok(false);
        }
    }
}

/// Whether the open `file` still has the state `meta` was read from
/// (size, mtime, ctime).
fn still(file: &File, meta: &FileMeta) -> io::Result<bool> {
    let st = rustix::fs::fstat(file)?;
    Ok(st.st_size as u64 == meta.size
        && st.st_mtime as i64 == meta.mtime.sec
        && st.st_mtime_nsec.clamp(0, 999_999_999) as u32 == meta.mtime.nsec
        && st.st_ctime as i64 == meta.ctime.sec
        && st.st_ctime_nsec.clamp(0, 999_999_999) as u32 == meta.ctime.nsec)
}

/// The memory a capture worker copies busy files into, kept from one
/// capture to the next: a busy file is copied every `busy_interval`, and
/// memory freshly mapped for each copy cost a page fault per 4 KiB (with
/// the kernel zeroing each page), 17 % of the agent's time in the busy
/// bench on ext4 (the agent's allocator gives freed memory back to the
/// system after a second). One buffer per worker thread, of at most
/// [`SNAPSHOT_MAX`]; one not used for [`copy_buf::KEEP`] is let go at the
/// worker's next copy.
mod copy_buf {
    use std::cell::RefCell;
    use std::time::{Duration, Instant};

    use super::SNAPSHOT_MAX;

    /// How long an unused buffer is kept for the next copy: a few busy
    /// intervals (2 s by default).
    pub(super) const KEEP: Duration = Duration::from_secs(10);

    thread_local! {
        static SPARE: RefCell<Option<(Vec<u8>, Instant)>> = const { RefCell::new(None) };
    }

    /// An empty buffer with room for `len` bytes: this thread's spare one
    /// when it was used lately, else a new one.
    pub(super) fn take(len: usize) -> Vec<u8> {
        let mut v = SPARE
            .with(|s| s.borrow_mut().take())
            .filter(|(_, used)| used.elapsed() < KEEP)
            .map(|(v, _)| v)
            .unwrap_or_default();
        v.clear();
        v.reserve_exact(len);
        v
    }

    /// Drop this thread's spare buffer.
    pub(super) fn release() {
        let _ = SPARE.with(|s| s.try_borrow_mut().map(|mut s| s.take()));
    }

    /// Keep `v` as this thread's spare buffer (the larger of two).
    pub(super) fn give_back(mut v: Vec<u8>) {
        if v.capacity() as u64 > SNAPSHOT_MAX {
            return;
        }
        v.clear();
        SPARE.with(|s| {
            let mut s = s.borrow_mut();
            if s.as_ref()
                .is_none_or(|(old, _)| old.capacity() <= v.capacity())
            {
                *s = Some((v, Instant::now()));
            }
        });
    }
}

/// A live read saw the file change midway ([`Watched`]).
#[derive(Debug)]
struct Torn;

impl std::fmt::Display for Torn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the file changed while it was read")
    }
}

impl std::error::Error for Torn {}

impl Torn {
    fn is(e: &io::Error) -> bool {
        e.get_ref().is_some_and(|r| r.is::<Torn>())
    }
}

/// What a rescan compares of a path's last-known state with what the walk
/// finds ([`differs`]): kind, inode, size, mtime, ctime and mode, 48 bytes
/// instead of the whole state (its chunk list and extended attributes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ScanStamp {
    kind: FileKind,
    ino: u64,
    size: u64,
    mtime: (i64, u32),
    ctime: (i64, u32),
    mode: u32,
}

impl ScanStamp {
    pub(crate) fn of(m: &FileMeta) -> ScanStamp {
        ScanStamp {
            kind: m.kind,
            ino: m.ino,
            size: m.size,
            mtime: (m.mtime.sec, m.mtime.nsec),
            ctime: (m.ctime.sec, m.ctime.nsec),
            mode: m.mode,
        }
    }
}

/// Whether a scanned entry differs from its last-known state.
pub(crate) fn differs(prev: Option<&ScanStamp>, md: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(m) = prev else { return true };
    let kind_same = match m.kind {
        FileKind::File => md.is_file(),
        FileKind::Dir => md.is_dir(),
        FileKind::Symlink => md.file_type().is_symlink(),
        _ => !(md.is_file() || md.is_dir() || md.file_type().is_symlink()),
    };
    !kind_same
        || m.ino != md.ino()
        || m.size != md.size()
        || m.mtime.0 != md.mtime()
        || m.mtime.1 as i64 != md.mtime_nsec()
        || m.ctime.0 != md.ctime()
        || m.ctime.1 as i64 != md.ctime_nsec()
        || m.mode != md.mode() & 0o7777
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_written_in_the_last_moments_waits_for_its_write_to_finish() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let at = |d: std::time::Duration| {
            let mut m = FileMeta::new(FileKind::File, 0o644);
            m.mtime = rewind_core::FileTime {
                sec: d.as_secs() as i64,
                nsec: d.subsec_nanos(),
            };
            m
        };
        let w = write_guard_wait(&at(now)).expect("just written: wait");
        assert!(w <= WRITE_GUARD && w > WRITE_GUARD / 2, "{w:?}");
        assert_eq!(
            write_guard_wait(&at(now - std::time::Duration::from_secs(1))),
            None
        );
        let future = now + std::time::Duration::from_secs(3600);
        assert_eq!(
            write_guard_wait(&at(future)),
            None,
            "a clock ahead says nothing"
        );
    }
    use std::os::unix::fs::FileExt;

    struct Fx {
        _tmp: tempfile::TempDir,
        root: std::path::PathBuf,
        journal: Journal,
        rules: rewind_watcher::IgnoreRules,
        links: LinkMap,
        groups: group::GroupRules,
        snapshot: std::sync::RwLock<Option<crate::snapshot::ActiveSnapshot>>,
    }

    fn fx() -> Fx {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let root = base.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let journal = Journal::open(&base.join("journal"), "test").unwrap();
        let rules =
            rewind_watcher::IgnoreRules::new(std::slice::from_ref(&root), &[], &[]).unwrap();
        Fx {
            _tmp: tmp,
            root,
            journal,
            rules,
            links: LinkMap::default(),
            groups: group::GroupRules::default(),
            snapshot: std::sync::RwLock::new(None),
        }
    }

    fn capture(fx: &Fx, p: &Path, change: Change) -> Outcome {
        capture_since(fx, p, change, 0)
    }

    fn capture_since(fx: &Fx, p: &Path, change: Change, watched_since: u64) -> Outcome {
        let ignore = |_m: String| {};
        let ignore_path = |_p: Vec<u8>| {};
        let warn = |m: String| panic!("unexpected warning: {m}");
        Capturer {
            journal: &fx.journal,
            chunker: Chunker::default(),
            ids: &rewind_core::ChunkIds::Plain,
            rules: &fx.rules,
            links: &fx.links,
            warn: &warn,
            note: &ignore,
            watched_since,
            encoder: None,
            groups: &fx.groups,
            snapshot: &fx.snapshot,
            again: &ignore_path,
        }
        .capture(p, change, false)
        .unwrap()
    }

    fn read_bytes(o: &Outcome) -> (u64, bool) {
        match o {
            Outcome::Captured { bytes, reused, .. } => (*bytes, *reused),
            other => panic!("not captured: {other:?}"),
        }
    }

    fn state(fx: &Fx, p: &Path) -> PathState {
        fx.journal
            .last_known(rewind_core::path::to_bytes(p))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn metadata_only_changes_reuse_the_chunks() {
        use std::os::unix::fs::PermissionsExt;
        let fx = fx();
        let p = fx.root.join("f");
        std::fs::write(&p, vec![7u8; 300_000]).unwrap();
        assert_eq!(
            read_bytes(&capture(&fx, &p, Change::Scan)),
            (300_000, false)
        );
        let first = state(&fx, &p);
        assert_eq!(capture(&fx, &p, Change::Content), Outcome::Unchanged);

        // chmod with an attribute-only event.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_bytes(&capture(&fx, &p, Change::Metadata)), (0, true));
        assert_eq!(state(&fx, &p).chunks, first.chunks);
        assert_eq!(state(&fx, &p).meta.mode, 0o600);

        // An xattr, found by a scan (ctime moved, mtime did not).
        let st = std::process::Command::new("setfattr")
            .args(["-n", "user.k", "-v", "v"])
            .arg(&p)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(read_bytes(&capture(&fx, &p, Change::Scan)), (0, true));
        let s = state(&fx, &p);
        assert_eq!(s.xattrs.len(), 1);
        assert_eq!(s.xattrs[0].name, b"user.k");
        assert_eq!(s.xattrs[0].value.id, ChunkId::of(b"v"));

        // touch: both times moved, attribute events only. Trusted after a
        // version captured with the watches in place...
        let touch = |secs| {
            let t = std::fs::FileTimes::new()
                .set_accessed(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
                .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
            File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_times(t)
                .unwrap();
        };
        touch(1_000_000);
        assert_eq!(read_bytes(&capture(&fx, &p, Change::Metadata)), (0, true));
        // ... but not after one from before the watcher started.
        touch(2_000_000);
        let seq = state(&fx, &p).seq;
        assert_eq!(
            read_bytes(&capture_since(&fx, &p, Change::Metadata, seq)),
            (300_000, false)
        );

        // The mtime moved and a scan cannot tell why: read again.
        let t = std::fs::FileTimes::new().set_modified(std::time::SystemTime::UNIX_EPOCH);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_times(t)
            .unwrap();
        assert_eq!(
            read_bytes(&capture(&fx, &p, Change::Scan)),
            (300_000, false)
        );
    }

    #[test]
    fn a_sparse_file_is_read_extent_by_extent() {
        let fx = fx();
        let p = fx.root.join("sparse");
        let f = File::create(&p).unwrap();
        f.set_len(1 << 30).unwrap();
        f.write_all_at(&[1u8; 8192], 4096).unwrap();
        f.write_all_at(&[2u8; 4096], 512 << 20).unwrap();
        f.sync_all().unwrap();
        assert_eq!(read_bytes(&capture(&fx, &p, Change::Scan)), (12_288, false));
        let s = state(&fx, &p);
        assert_eq!(s.chunks.iter().map(|c| c.len as u64).sum::<u64>(), 12_288);
        assert_eq!(s.meta.size, 1 << 30);
        assert_eq!(s.meta.sparse.as_ref().map(|e| e.len()), Some(2));
    }

    #[test]
    fn the_second_name_of_an_inode_is_not_read() {
        let fx = fx();
        let a = fx.root.join("a");
        std::fs::write(&a, vec![3u8; 100_000]).unwrap();
        std::fs::hard_link(&a, fx.root.join("b")).unwrap();
        assert_eq!(
            read_bytes(&capture(&fx, &a, Change::Scan)),
            (100_000, false)
        );
        assert_eq!(
            read_bytes(&capture(&fx, &fx.root.join("b"), Change::Scan)),
            (0, true)
        );
        assert_eq!(state(&fx, &a).chunks, state(&fx, &fx.root.join("b")).chunks);
        // New content through `a`: `b` is named for capture again.
        std::fs::write(&a, vec![4u8; 100_000]).unwrap();
        match capture(&fx, &a, Change::Content) {
            Outcome::Captured { also, .. } => {
                assert_eq!(
                    also,
                    vec![rewind_core::path::to_bytes(&fx.root.join("b")).to_vec()]
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_file_written_within_the_last_second_counts_as_being_written() {
        let at = |d: std::time::Duration| {
            let mut m = FileMeta::new(FileKind::File, 0o644);
            m.mtime = rewind_core::FileTime {
                sec: d.as_secs() as i64,
                nsec: d.subsec_nanos(),
            };
            m
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        assert!(being_written(&at(now)));
        assert!(being_written(&at(now - ACTIVE_WRITES / 2)));
        assert!(!being_written(&at(now - ACTIVE_WRITES * 2)));
        assert!(
            !being_written(&at(now + std::time::Duration::from_secs(3600))),
            "a clock ahead says nothing"
        );
    }

    #[test]
    fn a_live_read_stops_within_a_mib_of_a_write_and_a_quiet_one_reads_all() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let len = 8 * CHECK_EVERY;
        std::fs::write(&p, vec![1u8; len]).unwrap();
        let f = File::open(&p).unwrap();
        let meta = rewind_fsmeta::read_stat(&p).unwrap();

        // Unchanged: every byte, with no read running past a look.
        let mut all = Vec::new();
        Watched::new(&f, &f, &meta).read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), len);

        // A write after the first MiB (its mtime set apart from the one
        // read, so a coarse clock cannot hide it): the read fails torn at
        // the next look, long before the end.
        let (f, mut read) = (File::open(&p).unwrap(), 0usize);
        let mut w = Watched::new(&f, &f, &meta);
        let mut buf = vec![0u8; 4 * CHECK_EVERY];
        read += w.read(&mut buf).unwrap();
        assert_eq!(read, CHECK_EVERY, "one read never runs past a look");
        let wf = File::options().write(true).open(&p).unwrap();
        wf.write_all_at(&[2u8; 4096], (6 * CHECK_EVERY) as u64)
            .unwrap();
        wf.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
            .unwrap();
        let err = loop {
            match w.read(&mut buf) {
                Ok(0) => panic!("read to the end of a file written meanwhile"),
                Ok(n) => read += n,
                Err(e) => break e,
            }
        };
        assert!(Torn::is(&err), "{err}");
        assert_eq!(
            read, CHECK_EVERY,
            "stopped at the first look after the write"
        );
    }

    #[test]
    fn a_copy_stops_at_the_first_look_after_its_file_moved_on() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let content: Vec<u8> = (0..5 * CHECK_EVERY).map(|i| (i % 253) as u8).collect();
        std::fs::write(&p, &content).unwrap();
        let f = File::open(&p).unwrap();
        let meta = rewind_fsmeta::read_stat(&p).unwrap();
        let mut data = copy_buf::take(content.len());
        assert!(copy_watched(&f, &meta, &mut data).unwrap());
        assert!(data == content, "a quiet file is copied whole");

        // The state stat'ed before the copy is not the file's any more (a
        // write came between): the copy ends after its first MiB.
        let mut old = meta.clone();
        old.mtime.sec -= 1;
        let f = File::open(&p).unwrap();
        copy_buf::give_back(data);
        let mut data = copy_buf::take(content.len());
        assert!(data.capacity() >= content.len() && data.is_empty());
        assert!(!copy_watched(&f, &old, &mut data).unwrap());
        assert_eq!(data.len(), CHECK_EVERY);
    }

    #[test]
    fn a_file_being_written_is_captured_from_its_copy_as_it_was() {
        let fx = fx();
        let p = fx.root.join("busy.db");
        let content: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        std::fs::write(&p, &content).unwrap();
        // Written just now: copied into memory first (no reflinks here),
        // then cut from the copy.
        assert!(being_written(&rewind_fsmeta::read_stat(&p).unwrap()));
        assert_eq!(
            read_bytes(&capture(&fx, &p, Change::Content)),
            (content.len() as u64, false)
        );
        let want: Vec<ChunkRef> = Chunker::default()
            .chunks(&content[..])
            .map(|c| {
                let c = c.unwrap();
                ChunkRef {
                    id: ChunkId::of(&c),
                    len: c.len() as u32,
                }
            })
            .collect();
        assert_eq!(state(&fx, &p).chunks, want);
    }

    #[test]
    fn change_claims_merge_to_the_stronger() {
        assert_eq!(Change::Metadata.merge(Change::Content), Change::Content);
        assert_eq!(Change::Scan.merge(Change::Metadata), Change::Scan);
        assert_eq!(Change::Metadata.merge(Change::Metadata), Change::Metadata);
    }

    /// A SQLite write-ahead log's first 32 bytes: magic, format 3007000,
    /// then page size, checkpoint sequence, salts and checksum (any here).
    fn wal_header_bytes() -> Vec<u8> {
        let mut h = vec![0x37, 0x7f, 0x06, 0x82];
        h.extend_from_slice(&3_007_000u32.to_be_bytes());
        h.extend((8u8..32).map(|b| b.wrapping_mul(37)));
        h
    }

    /// The byte at offset `i` of the log the test's writer grows.
    fn log_byte(i: usize) -> u8 {
        (i as u64).wrapping_mul(2_654_435_761).to_le_bytes()[3]
    }

    #[test]
    fn a_write_ahead_log_appended_to_while_read_is_captured_as_the_prefix_it_had() {
        use std::io::Write;
        use std::sync::atomic::{AtomicBool, Ordering};
        let fx = fx();
        let db = fx.root.join("bank.sqlite");
        let wal = fx.root.join("bank.sqlite-wal");
        std::fs::write(&db, vec![1u8; 8192]).unwrap();
        let mut start = wal_header_bytes();
        start.extend((32..300_000).map(log_byte));
        std::fs::write(&wal, &start).unwrap();
        // A writer that appends without pause: a read that waited for a
        // moment without a write would race it every time.
        let stop = AtomicBool::new(false);
        let writing = AtomicBool::new(false);
        let captured = std::thread::scope(|s| {
            s.spawn(|| {
                let mut f = std::fs::OpenOptions::new().append(true).open(&wal).unwrap();
                let mut at = start.len();
                while !stop.load(Ordering::Relaxed) && at < 64 << 20 {
                    let piece: Vec<u8> = (at..at + 100).map(log_byte).collect();
                    f.write_all(&piece).unwrap();
                    at += piece.len();
                    writing.store(true, Ordering::Relaxed);
                }
            });
            while !writing.load(Ordering::Relaxed) {
                std::thread::yield_now();
            }
            let mut tries = 0;
            let got = loop {
                tries += 1;
                match capture(&fx, &db, Change::Content) {
                    Outcome::Raced if tries < 20 => continue,
                    other => break other,
                }
            };
            stop.store(true, Ordering::Relaxed);
            got
        });
        assert!(
            matches!(captured, Outcome::Captured { .. }),
            "a log only appended to is captured while it grows: {captured:?}"
        );
        // The version is the log's first `size` bytes, as they were written.
        let v = state(&fx, &wal);
        let whole = std::fs::read(&wal).unwrap();
        assert!(v.meta.size >= start.len() as u64 && v.meta.size <= whole.len() as u64);
        let mut ids = Vec::new();
        Chunker::default()
            .for_each(&whole[..v.meta.size as usize], &mut Vec::new(), |c| {
                ids.push(rewind_core::ChunkIds::Plain.id_of(c));
                Ok(())
            })
            .unwrap();
        assert_eq!(v.chunks.iter().map(|c| c.id).collect::<Vec<_>>(), ids);
        assert_eq!(state(&fx, &db).meta.size, 8192);
    }
}
