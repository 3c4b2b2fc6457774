//! The spool: chunk bytes waiting for the repository, in append-only
//! segment files (`spool/<id>.seg`, each record a length+CRC frame of one
//! encoded chunk), rather than in sled, which handles megabyte values
//! poorly.
//!
//! Invariants kept here:
//! - a chunk's location is handed to the group commit only with the file
//!   it lies in ([`Written`]), which fsyncs that file before sled records
//!   the location: a location in sled always points at synced bytes, and
//!   bytes past the last fsync are garbage at the end of a segment that
//!   nothing refers to;
//! - after a failed write the segment is not appended to again (the next
//!   chunk starts a new one), so no record follows a torn one;
//! - a segment is deleted only when every version that may refer to its
//!   chunks is behind the cursor (its high water) and no capture that
//!   started while it was current is still open; segments found at open
//!   are kept until the cursor passes every version then in the journal;
//! - a read checks the frame's CRC and that the chunk is the one asked for.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rewind_core::{ChunkId, EncodedChunk, failpoint, frame};

use crate::error::{JournalError, Result};
use crate::keys::{CHUNK, ChunkLoc, chunk_key, decode};
use crate::sync::lock;

/// A spool segment is sealed once it passes 64 MiB: large enough that a
/// first pass of many GiB makes only tens of files, small enough that a
/// drained segment frees its space soon.
const SEGMENT_TARGET: u64 = 64 << 20;

fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join("spool").join(format!("{id:016x}.seg"))
}

struct Segment {
    /// Highest seq of a version that may refer to chunks of this segment.
    high_water: u64,
    /// Open captures that started while this segment was current.
    inflight: usize,
    bytes: u64,
}

/// The segment being written.
struct Current {
    id: u64,
    file: BufWriter<File>,
    sync: Arc<File>,
    len: u64,
    broken: bool,
}

/// The writing side of the spool (kept under the journal's writer lock).
pub(crate) struct Spool {
    /// The journal's directory.
    dir: PathBuf,
    current: Current,
    /// Chunks written since the last commit, and where.
    chunks: Vec<(ChunkId, ChunkLoc)>,
    /// Segments sealed since the last flush: written but not yet fsynced.
    /// The flusher syncs them before it records where their chunks are,
    /// so sealing never makes a capture wait for the disk.
    unsynced: Vec<(u64, Arc<File>)>,
    segments: BTreeMap<u64, Segment>,
}

/// What the group commit takes from the spool: the locations of chunks
/// written since the last commit and the files they lie in.
pub(crate) struct Written {
    pub(crate) chunks: Vec<(ChunkId, ChunkLoc)>,
    pub(crate) sealed: Vec<(u64, Arc<File>)>,
    current: (u64, Arc<File>),
}

impl Spool {
    /// Open the spool of the journal in `dir`. Every segment that survived
    /// is needed until the cursor passes `high_water` (every version now
    /// in the journal); writing goes on in a new segment.
    pub(crate) fn open(dir: &Path, high_water: u64) -> Result<Spool> {
        let spool_dir = dir.join("spool");
        let io_err = |source| JournalError::Io {
            path: spool_dir.clone(),
            source,
        };
        let mut segments = BTreeMap::new();
        let mut max_id = 0;
        for e in fs::read_dir(&spool_dir).map_err(io_err)? {
            let e = e.map_err(io_err)?;
            let name = e.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| u64::from_str_radix(n, 16).ok())
            else {
                continue;
            };
            let bytes = e.metadata().map(|m| m.len()).unwrap_or(0);
            max_id = max_id.max(id);
            segments.insert(
                id,
                Segment {
                    high_water,
                    inflight: 0,
                    bytes,
                },
            );
        }
        let current = open_segment(dir, max_id + 1)?;
        segments.insert(
            current.id,
            Segment {
                high_water: 0,
                inflight: 0,
                bytes: 0,
            },
        );
        Ok(Spool {
            dir: dir.to_path_buf(),
            current,
            chunks: Vec::new(),
            unsynced: Vec::new(),
            segments,
        })
    }

    /// A capture starts: the current segment is kept while it is open.
    /// Returns the segment to name when it ends.
    pub(crate) fn begin_capture(&mut self) -> u64 {
        let seg = self.current.id;
        if let Some(s) = self.segments.get_mut(&seg) {
            s.inflight += 1;
        }
        seg
    }

    /// Captures open now.
    pub(crate) fn inflight(&self) -> usize {
        self.segments.values().map(|s| s.inflight).sum()
    }

    /// The capture that began in segment `start` ended.
    pub(crate) fn end_capture(&mut self, start: u64) {
        if let Some(s) = self.segments.get_mut(&start) {
            s.inflight = s.inflight.saturating_sub(1);
        }
    }

    /// Version `seq` may refer to chunks written since segment `start`
    /// was current.
    pub(crate) fn pin(&mut self, start: u64, seq: u64) {
        for (_, s) in self.segments.range_mut(start..) {
            s.high_water = s.high_water.max(seq);
        }
    }

    /// Append one chunk to the current segment (rotating it when full) and
    /// keep its location for the next commit; `high_water` is the highest
    /// seq given out so far. Returns the bytes written.
    pub(crate) fn write(&mut self, chunk: &EncodedChunk, high_water: u64) -> Result<u64> {
        let payload = postcard::to_stdvec(chunk).expect("chunks serialize");
        if self.current.broken || self.current.len >= SEGMENT_TARGET {
            self.rotate(high_water)?;
        }
        let offset = self.current.len;
        let id = self.current.id;
        let rec = frame::encode(&payload);
        if let Err(source) = self.current.file.write_all(&rec) {
            self.current.broken = true;
            let path = seg_path(&self.dir, id);
            return Err(JournalError::Io { path, source });
        }
        self.current.len += rec.len() as u64;
        if let Some(s) = self.segments.get_mut(&id) {
            s.bytes += rec.len() as u64;
        }
        self.chunks.push((
            chunk.id,
            ChunkLoc {
                segment: id,
                offset,
                len: rec.len() as u32,
            },
        ));
        Ok(rec.len() as u64)
    }

    /// Seal the current segment (write out its buffer; the flusher fsyncs
    /// it) and start a new one.
    fn rotate(&mut self, high_water: u64) -> Result<()> {
        let path = seg_path(&self.dir, self.current.id);
        if !self.current.broken {
            self.current
                .file
                .flush()
                .map_err(|source| JournalError::Io {
                    path: path.clone(),
                    source,
                })?;
            let sealed = (self.current.id, self.current.sync.clone());
            self.unsynced.push(sealed);
        }
        let next = open_segment(&self.dir, self.current.id + 1)?;
        if let Some(s) = self.segments.get_mut(&self.current.id) {
            s.high_water = s.high_water.max(high_water);
        }
        self.segments.insert(
            next.id,
            Segment {
                high_water: 0,
                inflight: 0,
                bytes: 0,
            },
        );
        self.current = next;
        Ok(())
    }

    /// True when no chunk written waits for a commit.
    pub(crate) fn is_committed(&self) -> bool {
        self.chunks.is_empty() && self.unsynced.is_empty()
    }

    /// Write out the current segment's buffer and take what the next
    /// commit records. After a failed write-out the segment is broken
    /// (nothing is taken).
    pub(crate) fn take_written(&mut self) -> Result<Written> {
        let path = seg_path(&self.dir, self.current.id);
        if let Err(source) = self.current.file.flush() {
            self.current.broken = true;
            return Err(JournalError::Io { path, source });
        }
        Ok(Written {
            chunks: std::mem::take(&mut self.chunks),
            sealed: std::mem::take(&mut self.unsynced),
            current: (self.current.id, self.current.sync.clone()),
        })
    }

    /// Give back, in front of what was written since, what a failed
    /// commit took.
    pub(crate) fn put_back(
        &mut self,
        chunks: Vec<(ChunkId, ChunkLoc)>,
        sealed: Vec<(u64, Arc<File>)>,
    ) {
        put_front(&mut self.unsynced, sealed);
        put_front(&mut self.chunks, chunks);
    }

    /// Take the segments nothing can refer to any more once the cursor is
    /// at `cursor`. `drained`: no version is queued and every seq given
    /// out is behind the cursor; then, with no capture open, the current
    /// segment is sealed too so its space comes back (`high_water` is the
    /// highest seq given out).
    pub(crate) fn take_dead(
        &mut self,
        cursor: u64,
        drained: bool,
        high_water: u64,
    ) -> Result<Vec<u64>> {
        let idle =
            drained && self.chunks.is_empty() && self.segments.values().all(|s| s.inflight == 0);
        if idle && self.current.len > 0 {
            self.rotate(high_water)?;
        }
        let current = self.current.id;
        let mut dead = Vec::new();
        for (&id, s) in &self.segments {
            if id == current || s.inflight > 0 || s.high_water > cursor {
                break;
            }
            dead.push(id);
        }
        for id in &dead {
            self.segments.remove(id);
        }
        Ok(dead)
    }

    /// Bytes of spool files (chunk data waiting, plus not yet reclaimed).
    pub(crate) fn bytes(&self) -> u64 {
        self.segments.values().map(|s| s.bytes).sum()
    }
}

impl Written {
    /// fsync every file the taken chunks lie in.
    pub(crate) fn sync(&self, dir: &Path) -> Result<()> {
        for (id, f) in self.sealed.iter().chain([&self.current]) {
            if let Err(source) = failpoint::hit("journal.spool_sync").and_then(|()| f.sync_data()) {
                let path = seg_path(dir, *id);
                return Err(JournalError::Io { path, source });
            }
        }
        Ok(())
    }

    /// Record in `batch` where the taken chunks are.
    pub(crate) fn record(&self, batch: &mut sled::Batch) {
        for (id, loc) in &self.chunks {
            batch.insert(chunk_key(id), postcard::to_stdvec(loc).expect("serialize"));
        }
    }
}

/// Put work taken from `queue` back in front of what was queued since.
pub(crate) fn put_front<T>(queue: &mut Vec<T>, mut taken: Vec<T>) {
    taken.append(queue);
    *queue = taken;
}

fn open_segment(dir: &Path, id: u64) -> Result<Current> {
    let path = seg_path(dir, id);
    let file = rewind_core::private::options()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|source| JournalError::Io {
            path: path.clone(),
            source,
        })?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let sync = Arc::new(file.try_clone().map_err(|source| JournalError::Io {
        path: path.clone(),
        source,
    })?);
    Ok(Current {
        id,
        file: BufWriter::with_capacity(1 << 20, file),
        sync,
        len,
        broken: false,
    })
}

/// The reading side of the spool: segments open for reading, so the
/// uploader does not open a file per chunk.
#[derive(Default)]
pub(crate) struct Readers(Mutex<HashMap<u64, Arc<File>>>);

impl Readers {
    /// A spooled chunk, if the spool still has it.
    pub(crate) fn read(
        &self,
        db: &sled::Db,
        dir: &Path,
        id: &ChunkId,
    ) -> Result<Option<EncodedChunk>> {
        let k = chunk_key(id);
        let Some(v) = db.get(&k).map_err(|e| JournalError::db(dir, e))? else {
            return Ok(None);
        };
        let loc: ChunkLoc = decode(&k, &v)?;
        let path = seg_path(dir, loc.segment);
        let cached = lock(&self.0).get(&loc.segment).cloned();
        let file = match cached {
            Some(f) => f,
            None => match File::open(&path) {
                Ok(f) => {
                    let f = Arc::new(f);
                    lock(&self.0).insert(loc.segment, f.clone());
                    f
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(source) => return Err(JournalError::Io { path, source }),
            },
        };
        let mut buf = vec![0u8; loc.len as usize];
        file.read_exact_at(&mut buf, loc.offset)
            .map_err(|source| JournalError::Io {
                path: path.clone(),
                source,
            })?;
        let corrupt = |reason: String| JournalError::Corrupt {
            key: format!("{} at {}", path.display(), loc.offset),
            reason,
        };
        let (payload, _) = frame::decode(&buf, loc.offset).map_err(|e| corrupt(e.to_string()))?;
        let chunk: EncodedChunk =
            postcard::from_bytes(payload).map_err(|e| corrupt(e.to_string()))?;
        if chunk.id != *id {
            return Err(corrupt(format!("holds chunk {} instead of {id}", chunk.id)));
        }
        Ok(Some(chunk))
    }

    /// Forget the locations of the chunks in segments `dead` (taken by
    /// [`Spool::take_dead`]), durably, then delete their files.
    pub(crate) fn delete(&self, db: &sled::Db, dir: &Path, dead: Vec<u64>) -> Result<()> {
        if dead.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for item in db.scan_prefix([CHUNK]) {
            let (k, v) = item.map_err(|e| JournalError::db(dir, e))?;
            let loc: ChunkLoc = decode(&k, &v)?;
            if dead.contains(&loc.segment) {
                batch.remove(k);
            }
        }
        db.apply_batch(batch)
            .map_err(|e| JournalError::db(dir, e))?;
        db.flush().map_err(|e| JournalError::db(dir, e))?;
        for id in dead {
            lock(&self.0).remove(&id);
            let p = seg_path(dir, id);
            if let Err(source) = fs::remove_file(&p)
                && source.kind() != io::ErrorKind::NotFound
            {
                return Err(JournalError::Io { path: p, source });
            }
        }
        Ok(())
    }
}
