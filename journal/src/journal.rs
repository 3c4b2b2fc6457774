use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rewind_core::{
    ChunkId, ChunkRef, ChunkSink, EncodedChunk, Entry, FileMeta, Timestamp, Version, XattrRef,
    failpoint, frame,
};
use serde::{Deserialize, Serialize};

/// How often the flusher commits queued versions. 50 ms keeps the
/// change-to-durable latency far under the 1.5 s target while one fsync pair
/// per tick costs well under 1% of a core when idle (it skips empty ticks).
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// The gathering window while a stream of captures goes on (the previous
/// commit carried at least [`BULK_VERSIONS`] versions): each commit seals a
/// pack in the embedded repository and writes a sled batch, so committing
/// a first pass about twice a second instead of twenty times cuts that overhead,
/// while single saves keep the 50 ms window.
const BULK_FLUSH_INTERVAL: Duration = Duration::from_millis(400);

/// Versions in one commit that mark a stream of captures.
const BULK_VERSIONS: usize = 200;

/// A spool segment is sealed once it passes 64 MiB: large enough that a
/// first pass of many GiB makes only tens of files, small enough that a
/// drained segment frees its space soon.
const SEGMENT_TARGET: u64 = 64 << 20;

/// Queued spool bytes that make the flusher commit before its tick, so a
/// first pass does not pile up unacknowledged work.
const EAGER_FLUSH_BYTES: u64 = 32 << 20;

/// Free space the journal's filesystem must keep for a commit to start: at
/// most this, at least an eighth of the filesystem's size. sled cannot
/// recover from a write that fails for lack of space (it stays failed until
/// reopened), so the journal stops writing before that happens; capture
/// waits meanwhile and goes on when space is freed.
const JOURNAL_RESERVE: u64 = 32 << 20;

/// Chunks held in memory for a [`ChunkSink`] before captures wait for the
/// flusher: bounds the agent's memory when capture outruns the disk.
const MAX_DIRECT_BACKLOG: u64 = 64 << 20;

/// Sequence numbers reserved at a time before versions are committed
/// straight to the sink (see [`Journal::skip_reserved`]).
const SEQ_RESERVE: u64 = 100_000;

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// sled failed.
    #[error("journal database {path}: {source}")]
    Db {
        /// The database directory.
        path: PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// A spool file failed.
    #[error("journal spool {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A stored record does not decode.
    #[error("journal record {key}: damaged: {reason}")]
    Corrupt {
        /// Which record.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The journal is closed.
    #[error("journal is closed")]
    Closed,
    /// The journal's filesystem has less free space than a commit needs
    /// (32 MiB, or an eighth of a small filesystem); nothing was written.
    #[error(
        "journal {}: disk full ({} KiB free, {} KiB needed); capture waits until space is freed",
        path.display(), free >> 10, needed >> 10
    )]
    Full {
        /// The journal directory.
        path: PathBuf,
        /// Bytes free.
        free: u64,
        /// Bytes a commit needs free.
        needed: u64,
    },
}

impl JournalError {
    /// True for I/O trouble (full disk, for instance) that may pass.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            JournalError::Io { .. } | JournalError::Db { .. } | JournalError::Full { .. }
        )
    }

    /// True when the journal's own files are damaged (as opposed to the
    /// disk being full or access denied): it cannot be opened as it is and
    /// must be rebuilt from the repository.
    pub fn is_damage(&self) -> bool {
        match self {
            JournalError::Corrupt { .. } => true,
            JournalError::Db { source, .. } => match source {
                // Unsupported: sled's own description of a config file it
                // cannot parse (a damaged `conf`).
                sled::Error::Corruption { .. }
                | sled::Error::ReportableBug(_)
                | sled::Error::Unsupported(_) => true,
                sled::Error::Io(e) => matches!(
                    e.kind(),
                    io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                ),
                _ => false,
            },
            _ => false,
        }
    }
}

type Result<T> = std::result::Result<T, JournalError>;

/// The last-known state of a path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathState {
    /// Its metadata when last captured.
    pub meta: FileMeta,
    /// Its content chunks when last captured.
    pub chunks: Vec<ChunkRef>,
    /// Its extended attributes when last captured (values as chunks).
    pub xattrs: Vec<XattrRef>,
    /// The version that recorded it.
    pub seq: u64,
}

/// Counters for `status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JournalStats {
    /// Client name versions are recorded under.
    pub client: String,
    /// Protected roots.
    pub roots: Vec<PathBuf>,
    /// Highest durable sequence number.
    pub durable_seq: u64,
    /// Highest sequence number the repository holds.
    pub cursor: u64,
    /// Versions captured but not yet in the repository.
    pub versions_waiting: u64,
    /// Bytes of spool files (chunk data waiting, plus not yet reclaimed).
    pub spool_bytes: u64,
    /// Time of the last durable capture.
    pub last_capture: Option<Timestamp>,
    /// Time the repository last confirmed a batch.
    pub last_upload: Option<Timestamp>,
    /// Paths with a last-known state.
    pub known_paths: u64,
    /// The last flush error, if the last flush failed.
    pub last_error: Option<String>,
    /// When the oldest version not yet in the repository was observed
    /// (its age is the upload lag).
    #[serde(default)]
    pub oldest_waiting: Option<Timestamp>,
}

/// [`PathState`] borrowed, for encoding (postcard encodes both alike).
#[derive(Serialize)]
struct PathStateRef<'a> {
    meta: &'a FileMeta,
    chunks: &'a [ChunkRef],
    xattrs: &'a [XattrRef],
    seq: u64,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct ChunkLoc {
    segment: u64,
    offset: u64,
    len: u32,
}

struct Segment {
    /// Highest seq of a version that may refer to chunks of this segment.
    high_water: u64,
    /// Open captures that started while this segment was current.
    inflight: usize,
    bytes: u64,
}

struct Current {
    id: u64,
    file: BufWriter<File>,
    sync: Arc<File>,
    len: u64,
    broken: bool,
}

struct Writer {
    next_seq: u64,
    versions: Vec<Version>,
    /// Pending last-known states (None = deleted), by path, with the seq
    /// that set them; consulted before sled until the flusher applied them.
    overlay: HashMap<Vec<u8>, (u64, Option<PathState>)>,
    chunks: Vec<(ChunkId, ChunkLoc)>,
    /// Chunks for the sink, stored durably by the next flush before the
    /// versions queued with them.
    direct: Vec<EncodedChunk>,
    queued_bytes: u64,
    current: Current,
    /// Segments sealed since the last flush: written but not yet fsynced.
    /// The flusher syncs them before it records where their chunks are,
    /// so sealing never makes a capture wait for the disk.
    unsynced: Vec<(u64, Arc<File>)>,
    segments: BTreeMap<u64, Segment>,
}

struct Inner {
    dir: PathBuf,
    db: sled::Db,
    client: String,
    writer: Mutex<Writer>,
    durable: Mutex<u64>,
    durable_cv: Condvar,
    /// Bumped by [`Journal::wake_waiters`]: a waiter in
    /// [`Journal::wait_durable_beyond`] returns when it changes.
    waiters_woken: AtomicU64,
    wake: Condvar,
    /// Work is queued, and whether the flusher sleeps for want of it.
    wake_lock: Mutex<Wake>,
    /// Enough spool bytes are queued to commit without waiting for the
    /// group to gather.
    eager: AtomicBool,
    stop: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Serializes flushes (the flusher thread and explicit `flush` calls).
    flush_lock: Mutex<()>,
    /// Open spool segments for reading, so the uploader does not open a
    /// file per chunk.
    readers: Mutex<HashMap<u64, Arc<File>>>,
    /// Where chunks go instead of the spool, when set.
    sink: OnceLock<Arc<dyn ChunkSink>>,
    /// Signalled when a flush takes the queued direct chunks.
    room: Condvar,
    /// The sink's last failure was reported (cleared by a success).
    sink_failing: AtomicBool,
    /// The last commit was part of a stream (see [`BULK_FLUSH_INTERVAL`]).
    bulk: AtomicBool,
}

/// The journal. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
    flusher: Arc<Mutex<Option<JoinHandle<()>>>>,
}

fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(rest.len() + 1);
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

fn seq_key(seq: u64) -> Vec<u8> {
    key(b'v', &seq.to_be_bytes())
}

fn meta_key(name: &str) -> Vec<u8> {
    key(b'm', name.as_bytes())
}

fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join("spool").join(format!("{id:016x}.seg"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Journal {
    /// Open (or create) the journal in `dir`, recording versions under
    /// `client` (kept from the first open if the journal already exists).
    pub fn open(dir: &Path, client: &str) -> Result<Journal> {
        let dbdir = dir.join("db");
        let db_err = |source| JournalError::Db {
            path: dbdir.clone(),
            source,
        };
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| JournalError::Io { path, source }
        };
        rewind_core::private::create_dir_all(&dir.join("spool"))
            .map_err(io_err(&dir.join("spool")))?;
        // sled creates its files with the process umask: its directory is
        // made private first, older journals are tightened, and what sled
        // created at open is made private after it (issue 21).
        rewind_core::private::create_dir_all(&dbdir).map_err(io_err(&dbdir))?;
        rewind_core::private::tighten_if_loose(dir, "journal");
        let db = sled::Config::new()
            .path(&dbdir)
            .flush_every_ms(None)
            .cache_capacity(64 << 20)
            .open()
            .map_err(db_err)?;
        rewind_core::private::tighten(&dbdir).map_err(io_err(&dbdir))?;
        let client = match db.get(meta_key("client")).map_err(db_err)? {
            Some(v) => String::from_utf8_lossy(&v).into_owned(),
            None => {
                db.insert(meta_key("client"), client.as_bytes())
                    .map_err(db_err)?;
                db.flush().map_err(db_err)?;
                client.to_string()
            }
        };
        let mut next_seq = get_u64(&db, "next_seq", &dbdir)?.max(1);
        if let Some((k, _)) = db.scan_prefix([b'v']).last().transpose().map_err(db_err)? {
            let seq =
                u64::from_be_bytes(k[1..9].try_into().map_err(|_| JournalError::Corrupt {
                    key: format!("{k:?}"),
                    reason: "bad version key".into(),
                })?);
            next_seq = next_seq.max(seq + 1);
        }
        // Every segment that survived is needed until the cursor passes
        // every version now in the journal.
        let mut segments = BTreeMap::new();
        let mut max_id = 0;
        for e in fs::read_dir(dir.join("spool")).map_err(io_err(&dir.join("spool")))? {
            let e = e.map_err(io_err(&dir.join("spool")))?;
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
                    high_water: next_seq - 1,
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
        let durable = next_seq - 1;
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            db,
            client,
            writer: Mutex::new(Writer {
                next_seq,
                versions: Vec::new(),
                overlay: HashMap::new(),
                chunks: Vec::new(),
                direct: Vec::new(),
                queued_bytes: 0,
                current,
                unsynced: Vec::new(),
                segments,
            }),
            durable: Mutex::new(durable),
            durable_cv: Condvar::new(),
            waiters_woken: AtomicU64::new(0),
            wake: Condvar::new(),
            wake_lock: Mutex::new(Wake::default()),
            eager: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            last_error: Mutex::new(None),
            flush_lock: Mutex::new(()),
            readers: Mutex::new(HashMap::new()),
            sink: OnceLock::new(),
            room: Condvar::new(),
            sink_failing: AtomicBool::new(false),
            bulk: AtomicBool::new(false),
        });
        let j = Journal {
            inner: inner.clone(),
            flusher: Arc::new(Mutex::new(None)),
        };
        // Reclaim what a previous run could not.
        j.reclaim_segments()?;
        let handle = std::thread::Builder::new()
            .name("journal-flush".into())
            .spawn(move || flusher(inner))
            .map_err(io_err(dir))?;
        *lock(&j.flusher) = Some(handle);
        Ok(j)
    }

    /// The client name versions are recorded under.
    pub fn client(&self) -> &str {
        &self.inner.client
    }

    /// Where the journal lives.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Start capturing one path: chunks spooled through the guard stay
    /// reclaimable only after the guard is appended or dropped.
    pub fn begin_capture(&self) -> CaptureGuard {
        let mut w = lock(&self.inner.writer);
        let seg = w.current.id;
        if let Some(s) = w.segments.get_mut(&seg) {
            s.inflight += 1;
        }
        CaptureGuard {
            journal: self.clone(),
            start_segment: seg,
            done: false,
        }
    }

    /// Hand chunks to `sink` instead of the spool from now on: each flush
    /// stores the queued chunks durably in the sink before it records the
    /// versions that refer to them. When the sink fails, that flush falls
    /// back to the spool (and the uploader later moves those chunks), so
    /// capture goes on. Set once; later calls are ignored.
    pub fn set_sink(&self, sink: Arc<dyn ChunkSink>) {
        let _ = self.inner.sink.set(sink);
    }

    /// True when the sink already holds `id` durably, so capture need not
    /// compress or queue it again.
    fn sink_has(&self, id: &ChunkId) -> bool {
        self.inner.sink.get().is_some_and(|s| s.has_chunk(id))
    }

    fn spool(&self, chunk: EncodedChunk) -> Result<()> {
        let inner = &self.inner;
        let sink = inner.sink.get().filter(|s| s.accepting());
        // Before the queue's lock: sending ahead copies the chunk.
        if let Some(s) = sink {
            s.send_ahead(&chunk);
        }
        let mut w = lock(&inner.writer);
        if sink.is_some() {
            while w.queued_bytes >= MAX_DIRECT_BACKLOG && !inner.stop.load(Ordering::Relaxed) {
                inner.eager.store(true, Ordering::Relaxed);
                self.wake_flusher(true);
                w = inner
                    .room
                    .wait_timeout(w, Duration::from_millis(100))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            w.queued_bytes += chunk.data.len() as u64;
            w.direct.push(chunk);
        } else {
            write_to_segment(inner, &mut w, &chunk)?;
        }
        let eager = w.queued_bytes >= EAGER_FLUSH_BYTES;
        drop(w);
        if eager {
            self.inner.eager.store(true, Ordering::Relaxed);
            self.wake_flusher(true);
        }
        Ok(())
    }

    /// Queue `vs` in this order under one lock, so one group commit takes
    /// all of them or none.
    fn append(&self, start_segment: u64, vs: Vec<Version>) -> Vec<u64> {
        let mut w = lock(&self.inner.writer);
        let mut seqs = Vec::with_capacity(vs.len());
        for mut v in vs {
            let seq = w.next_seq;
            w.next_seq += 1;
            v.seq = seq;
            v.client = self.inner.client.clone();
            for (_, s) in w.segments.range_mut(start_segment..) {
                s.high_water = s.high_water.max(seq);
            }
            let state = match &v.entry {
                Entry::Present {
                    meta,
                    chunks,
                    xattrs,
                } => Some(PathState {
                    meta: meta.clone(),
                    chunks: chunks.clone(),
                    xattrs: xattrs.clone(),
                    seq,
                }),
                // A stream (a dump) has no last-known state to compare with.
                Entry::Deleted | Entry::Stream { .. } => None,
            };
            w.overlay.insert(v.path.clone(), (seq, state));
            w.versions.push(v);
            seqs.push(seq);
        }
        drop(w);
        self.wake_flusher(false);
        seqs
    }

    fn end_capture(&self, start_segment: u64) {
        let mut w = lock(&self.inner.writer);
        if let Some(s) = w.segments.get_mut(&start_segment) {
            s.inflight = s.inflight.saturating_sub(1);
        }
    }

    /// Tell the flusher work is queued. It is woken only when it sleeps
    /// for want of work, or when `urgent` (a backlog, or stopping): while
    /// a group gathers, waking it for every append would cost a context
    /// switch per version (docs/decisions.md, "No wake-up per captured
    /// file").
    fn wake_flusher(&self, urgent: bool) {
        let mut w = lock(&self.inner.wake_lock);
        w.pending = true;
        let sleeping = w.idle;
        drop(w);
        if urgent || sleeping {
            self.inner.wake.notify_one();
        }
    }

    /// Commit everything queued now and return the durable seq.
    pub fn flush(&self) -> Result<u64> {
        flush_once(&self.inner)
    }

    /// Highest sequence number that is durable.
    pub fn durable_seq(&self) -> u64 {
        *lock(&self.inner.durable)
    }

    /// Wait until `durable_seq() > seq`, or `timeout`, or a call of
    /// [`wake_waiters`](Self::wake_waiters); returns the durable seq.
    pub fn wait_durable_beyond(&self, seq: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut d = lock(&self.inner.durable);
        let woken = self.inner.waiters_woken.load(Ordering::Relaxed);
        while *d <= seq
            && !self.inner.stop.load(Ordering::Relaxed)
            && self.inner.waiters_woken.load(Ordering::Relaxed) == woken
        {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            d = self
                .inner
                .durable_cv
                .wait_timeout(d, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *d
    }

    /// The last-known state of `path`, including states not yet flushed.
    pub fn last_known(&self, path: &[u8]) -> Result<Option<PathState>> {
        if let Some((_, s)) = lock(&self.inner.writer).overlay.get(path) {
            return Ok(s.clone());
        }
        let k = key(b's', path);
        match self.db_get(&k)? {
            None => Ok(None),
            Some(v) => decode(&k, &v).map(Some),
        }
    }

    /// Every path at or below `base` with a last-known state.
    pub fn known_under(&self, base: &[u8]) -> Result<Vec<(Vec<u8>, PathState)>> {
        let mut out: BTreeMap<Vec<u8>, PathState> = BTreeMap::new();
        for item in self.inner.db.scan_prefix(key(b's', base)) {
            let (k, v) = item.map_err(|source| self.db_err(source))?;
            let path = &k[1..];
            if rewind_core::path::is_under(path, base) {
                out.insert(path.to_vec(), decode(&k, &v)?);
            }
        }
        let w = lock(&self.inner.writer);
        for (p, (_, s)) in &w.overlay {
            if rewind_core::path::is_under(p, base) {
                match s {
                    Some(s) => {
                        out.insert(p.clone(), s.clone());
                    }
                    None => {
                        out.remove(p);
                    }
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Record last-known states taken from the repository (the newest
    /// version of each path), for a journal rebuilt next to an existing
    /// repository: the first pass then captures only what differs from
    /// them instead of everything. Durable when this returns.
    pub fn import_states(&self, states: Vec<(Vec<u8>, PathState)>) -> Result<()> {
        for part in states.chunks(10_000) {
            let mut batch = sled::Batch::default();
            for (path, st) in part {
                batch.insert(key(b's', path), postcard::to_stdvec(st).expect("serialize"));
            }
            self.inner
                .db
                .apply_batch(batch)
                .map_err(|source| self.db_err(source))?;
        }
        self.inner
            .db
            .flush()
            .map_err(|source| self.db_err(source))?;
        Ok(())
    }

    /// Forget the last-known state of `path` (so the next pass captures it
    /// again), for instance when its chunks turned out to be lost.
    pub fn forget(&self, path: &[u8]) -> Result<()> {
        lock(&self.inner.writer).overlay.remove(path);
        self.inner
            .db
            .remove(key(b's', path))
            .map_err(|source| self.db_err(source))?;
        Ok(())
    }

    /// Durable versions with seq in `(after, durable_seq]`, at most `max`.
    pub fn versions_after(&self, after: u64, max: usize) -> Result<Vec<Version>> {
        let durable = self.durable_seq();
        let mut out = Vec::new();
        if after >= durable {
            return Ok(out);
        }
        for item in self.inner.db.range(seq_key(after + 1)..=seq_key(durable)) {
            let (k, v) = item.map_err(|source| self.db_err(source))?;
            let ver: Version = Version::from_bytes(&v).map_err(|e| JournalError::Corrupt {
                key: format!("version {:?}", &k[1..]),
                reason: e.to_string(),
            })?;
            out.push(ver);
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// A spooled chunk, if the spool still has it.
    pub fn read_spooled(&self, id: &ChunkId) -> Result<Option<EncodedChunk>> {
        let k = key(b'c', &id.0);
        let Some(v) = self.db_get(&k)? else {
            return Ok(None);
        };
        let loc: ChunkLoc = decode(&k, &v)?;
        let path = seg_path(&self.inner.dir, loc.segment);
        let cached = lock(&self.inner.readers).get(&loc.segment).cloned();
        let file = match cached {
            Some(f) => f,
            None => match File::open(&path) {
                Ok(f) => {
                    let f = Arc::new(f);
                    lock(&self.inner.readers).insert(loc.segment, f.clone());
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

    /// The repository durably holds every version up to `seq`: move the
    /// cursor, drop those versions from the log and reclaim spool segments.
    pub fn advance_cursor(&self, seq: u64) -> Result<()> {
        let cursor = self.cursor()?;
        if seq <= cursor {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for item in self.inner.db.range(seq_key(cursor + 1)..=seq_key(seq)) {
            let (k, _) = item.map_err(|source| self.db_err(source))?;
            batch.remove(k);
        }
        batch.insert(meta_key("cursor"), &seq.to_be_bytes());
        batch.insert(meta_key("last_upload"), &Timestamp::now().0.to_be_bytes());
        failpoint::hit("cursor.advance").map_err(|source| JournalError::Io {
            path: self.inner.dir.join("db"),
            source,
        })?;
        self.inner
            .db
            .apply_batch(batch)
            .map_err(|source| self.db_err(source))?;
        self.inner
            .db
            .flush()
            .map_err(|source| self.db_err(source))?;
        self.reclaim_segments()
    }

    /// Delete spool segments nothing can refer to any more.
    fn reclaim_segments(&self) -> Result<()> {
        let cursor = self.cursor()?;
        let mut w = lock(&self.inner.writer);
        // Fully drained and idle: seal the current segment too so its
        // space comes back.
        let idle = w.versions.is_empty()
            && w.chunks.is_empty()
            && w.next_seq - 1 <= cursor
            && w.segments.values().all(|s| s.inflight == 0);
        if idle && w.current.len > 0 {
            rotate(&self.inner, &mut w)?;
        }
        let current = w.current.id;
        let mut dead = Vec::new();
        for (&id, s) in &w.segments {
            if id == current || s.inflight > 0 || s.high_water > cursor {
                break;
            }
            dead.push(id);
        }
        for id in &dead {
            w.segments.remove(id);
        }
        drop(w);
        if dead.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for item in self.inner.db.scan_prefix([b'c']) {
            let (k, v) = item.map_err(|source| self.db_err(source))?;
            let loc: ChunkLoc = decode(&k, &v)?;
            if dead.contains(&loc.segment) {
                batch.remove(k);
            }
        }
        self.inner
            .db
            .apply_batch(batch)
            .map_err(|source| self.db_err(source))?;
        self.inner
            .db
            .flush()
            .map_err(|source| self.db_err(source))?;
        for id in dead {
            lock(&self.inner.readers).remove(&id);
            let p = seg_path(&self.inner.dir, id);
            if let Err(source) = fs::remove_file(&p)
                && source.kind() != io::ErrorKind::NotFound
            {
                return Err(JournalError::Io { path: p, source });
            }
        }
        Ok(())
    }

    /// Make sure new versions get sequence numbers above `seq` (the highest
    /// the repository already holds for this client), so a journal that
    /// starts afresh next to an existing repository never reuses a number
    /// the repository would take for a re-sent duplicate. Call before
    /// capturing.
    pub fn skip_to(&self, seq: u64) -> Result<()> {
        let mut w = lock(&self.inner.writer);
        if w.next_seq > seq {
            return Ok(());
        }
        w.next_seq = seq + 1;
        let mut batch = sled::Batch::default();
        batch.insert(meta_key("next_seq"), &(seq + 1).to_be_bytes());
        if self.cursor()? < seq {
            batch.insert(meta_key("cursor"), &seq.to_be_bytes());
        }
        self.inner
            .db
            .apply_batch(batch)
            .and_then(|_| self.inner.db.flush().map(|_| ()))
            .map_err(|source| self.db_err(source))?;
        drop(w);
        let mut d = lock(&self.inner.durable);
        *d = (*d).max(seq);
        Ok(())
    }

    /// After a start that could not ask the repository for its highest
    /// seq: make new versions get numbers above every number this journal
    /// may have committed straight to the sink before a crash (one that
    /// came before the journal recorded them), so none is reused and taken
    /// by the repository for a duplicate. Leaves a gap in the numbers.
    pub fn skip_reserved(&self) -> Result<()> {
        let reserved = get_u64(&self.inner.db, "reserved_seq", &self.inner.dir)?;
        let mut w = lock(&self.inner.writer);
        if w.next_seq > reserved {
            return Ok(());
        }
        w.next_seq = reserved + 1;
        self.inner
            .db
            .insert(meta_key("next_seq"), &(reserved + 1).to_be_bytes())
            .and_then(|_| self.inner.db.flush().map(|_| ()))
            .map_err(|source| self.db_err(source))
    }

    /// Highest seq the repository holds.
    pub fn cursor(&self) -> Result<u64> {
        get_u64(&self.inner.db, "cursor", &self.inner.dir)
    }

    /// Record the protected roots (for `status`).
    pub fn set_roots(&self, roots: &[PathBuf]) -> Result<()> {
        let v: Vec<Vec<u8>> = roots
            .iter()
            .map(|r| rewind_core::path::to_bytes(r).to_vec())
            .collect();
        self.inner
            .db
            .insert(
                meta_key("roots"),
                postcard::to_stdvec(&v).expect("serialize"),
            )
            .map_err(|source| self.db_err(source))?;
        Ok(())
    }

    /// Remember the small-file dictionary chunk this client compresses
    /// with, so the next run goes on with it (made durable by the next
    /// group commit; lost, the next run makes a new one).
    pub fn set_dictionary(&self, id: &ChunkId) -> Result<()> {
        self.inner
            .db
            .insert(meta_key("dictionary"), &id.0)
            .map_err(|source| self.db_err(source))?;
        Ok(())
    }

    /// The dictionary recorded by [`Journal::set_dictionary`].
    pub fn dictionary(&self) -> Result<Option<ChunkId>> {
        Ok(self
            .db_get(&meta_key("dictionary"))?
            .and_then(|v| <[u8; 32]>::try_from(v.as_ref()).ok())
            .map(ChunkId))
    }

    /// Counters for `status`.
    pub fn stats(&self) -> Result<JournalStats> {
        let db = &self.inner.db;
        let ts = |name: &str| -> Result<Option<Timestamp>> {
            Ok(self
                .db_get(&meta_key(name))?
                .and_then(|v| v.as_ref().try_into().ok())
                .map(|b: [u8; 8]| Timestamp(i64::from_be_bytes(b))))
        };
        let roots: Vec<Vec<u8>> = match self.db_get(&meta_key("roots"))? {
            Some(v) => decode(&meta_key("roots"), &v)?,
            None => Vec::new(),
        };
        let durable = self.durable_seq();
        let cursor = self.cursor()?;
        let spool_bytes = lock(&self.inner.writer)
            .segments
            .values()
            .map(|s| s.bytes)
            .sum();
        Ok(JournalStats {
            client: self.inner.client.clone(),
            roots: roots
                .iter()
                .map(|r| rewind_core::path::from_bytes(r))
                .collect(),
            durable_seq: durable,
            cursor,
            versions_waiting: durable.saturating_sub(cursor),
            spool_bytes,
            last_capture: ts("last_capture")?,
            last_upload: ts("last_upload")?,
            known_paths: db.scan_prefix([b's']).count() as u64,
            last_error: lock(&self.inner.last_error).clone(),
            oldest_waiting: if durable > cursor {
                self.versions_after(cursor, 1)?
                    .first()
                    .map(|v| v.observed_at)
            } else {
                None
            },
        })
    }

    /// Make every [`wait_durable_beyond`](Self::wait_durable_beyond) in
    /// progress return now (a thread that is asked to stop should not wait
    /// out its timeout).
    pub fn wake_waiters(&self) {
        // Under the lock the waiters check the count with, so none misses it.
        let _d = lock(&self.inner.durable);
        self.inner.waiters_woken.fetch_add(1, Ordering::Relaxed);
        self.inner.durable_cv.notify_all();
    }

    /// Flush what is queued and stop the flusher thread.
    pub fn close(&self) -> Result<()> {
        let r = self.flush();
        self.inner.stop.store(true, Ordering::Relaxed);
        self.wake_flusher(true);
        self.inner.durable_cv.notify_all();
        if let Some(h) = lock(&self.flusher).take() {
            let _ = h.join();
        }
        r.map(|_| ())
    }

    fn db_get(&self, k: &[u8]) -> Result<Option<sled::IVec>> {
        self.inner.db.get(k).map_err(|source| self.db_err(source))
    }

    fn db_err(&self, source: sled::Error) -> JournalError {
        JournalError::Db {
            path: self.inner.dir.join("db"),
            source,
        }
    }
}

fn get_u64(db: &sled::Db, name: &str, dir: &Path) -> Result<u64> {
    let v = db.get(meta_key(name)).map_err(|source| JournalError::Db {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(match v {
        Some(v) => {
            u64::from_be_bytes(v.as_ref().try_into().map_err(|_| JournalError::Corrupt {
                key: name.to_string(),
                reason: "not 8 bytes".into(),
            })?)
        }
        None => 0,
    })
}

fn decode<T: for<'de> Deserialize<'de>>(k: &[u8], v: &[u8]) -> Result<T> {
    postcard::from_bytes(v).map_err(|e| JournalError::Corrupt {
        key: String::from_utf8_lossy(k).into_owned(),
        reason: e.to_string(),
    })
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

/// Append one chunk to the current spool segment (rotating it when full) and
/// queue its location for the next flush.
fn write_to_segment(inner: &Inner, w: &mut Writer, chunk: &EncodedChunk) -> Result<()> {
    let payload = postcard::to_stdvec(chunk).expect("chunks serialize");
    if w.current.broken || w.current.len >= SEGMENT_TARGET {
        rotate(inner, w)?;
    }
    let offset = w.current.len;
    let id = w.current.id;
    let rec = frame::encode(&payload);
    if let Err(source) = w.current.file.write_all(&rec) {
        w.current.broken = true;
        let path = seg_path(&inner.dir, id);
        return Err(JournalError::Io { path, source });
    }
    w.current.len += rec.len() as u64;
    w.queued_bytes += rec.len() as u64;
    if let Some(s) = w.segments.get_mut(&id) {
        s.bytes += rec.len() as u64;
    }
    w.chunks.push((
        chunk.id,
        ChunkLoc {
            segment: id,
            offset,
            len: rec.len() as u32,
        },
    ));
    Ok(())
}

/// Seal the current segment (write out its buffer; the flusher fsyncs it)
/// and start a new one.
fn rotate(inner: &Inner, w: &mut Writer) -> Result<()> {
    let path = seg_path(&inner.dir, w.current.id);
    if !w.current.broken {
        w.current.file.flush().map_err(|source| JournalError::Io {
            path: path.clone(),
            source,
        })?;
        let sealed = (w.current.id, w.current.sync.clone());
        w.unsynced.push(sealed);
    }
    let next = open_segment(&inner.dir, w.current.id + 1)?;
    let hw = w.next_seq - 1;
    if let Some(s) = w.segments.get_mut(&w.current.id) {
        s.high_water = s.high_water.max(hw);
    }
    w.segments.insert(
        next.id,
        Segment {
            high_water: 0,
            inflight: 0,
            bytes: 0,
        },
    );
    w.current = next;
    Ok(())
}

/// Refuse to start a commit when the journal's filesystem is (nearly) full
/// (see [`JOURNAL_RESERVE`]).
fn check_space(dir: &Path) -> Result<()> {
    let Ok(st) = rustix::fs::statvfs(dir) else {
        return Ok(());
    };
    let size = st.f_blocks.saturating_mul(st.f_frsize);
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    let reserve = JOURNAL_RESERVE.min(size / 8);
    if free < reserve {
        return Err(JournalError::Full {
            path: dir.to_path_buf(),
            free,
            needed: reserve,
        });
    }
    Ok(())
}

/// Put work taken from `queue` back in front of what was queued since.
fn put_front<T>(queue: &mut Vec<T>, mut taken: Vec<T>) {
    taken.append(queue);
    *queue = taken;
}

/// Make sure the journal has durably reserved sequence numbers up to
/// `last` before versions up to it are committed straight to the sink.
fn reserve_seqs(inner: &Inner, last: u64) -> Result<()> {
    if get_u64(&inner.db, "reserved_seq", &inner.dir)? >= last {
        return Ok(());
    }
    inner
        .db
        .insert(
            meta_key("reserved_seq"),
            &(last + SEQ_RESERVE).to_be_bytes(),
        )
        .and_then(|_| inner.db.flush().map(|_| ()))
        .map_err(|source| JournalError::Db {
            path: inner.dir.join("db"),
            source,
        })
}

/// One group commit: spool bytes to disk, then versions, states and chunk
/// locations in one sled batch, then flush.
fn flush_once(inner: &Inner) -> Result<u64> {
    let _serial = lock(&inner.flush_lock);
    check_space(&inner.dir)?;
    // Versions and the chunks queued for the sink are taken together: a
    // capture queues its chunks before its version, so every version taken
    // here has its chunks in this batch or an earlier one.
    let (versions, direct, next_seq) = {
        let mut w = lock(&inner.writer);
        if w.versions.is_empty()
            && w.chunks.is_empty()
            && w.unsynced.is_empty()
            && w.direct.is_empty()
        {
            return Ok(*lock(&inner.durable));
        }
        let direct = std::mem::take(&mut w.direct);
        if !direct.is_empty() {
            w.queued_bytes = 0;
            inner.room.notify_all();
        }
        (std::mem::take(&mut w.versions), direct, w.next_seq)
    };
    inner
        .bulk
        .store(versions.len() >= BULK_VERSIONS, Ordering::Relaxed);
    // Put taken work back at the front of the queue after a failure.
    let requeue = |versions: Vec<Version>, direct: Vec<EncodedChunk>| {
        let mut w = lock(&inner.writer);
        put_front(&mut w.direct, direct);
        put_front(&mut w.versions, versions);
    };
    // With a sink, the versions go straight into the repository as well
    // when no logged version waits before them (the uploader has drained
    // the log): then they need no log record and no upload.
    let mut committed = false;
    // Chunks queued for a sink that refuses them, or that has stopped
    // taking them since they were queued, go to the spool.
    let mut spool_direct = true;
    if let Some(sink) = inner.sink.get().filter(|s| s.accepting()) {
        let log_drained = !versions.is_empty()
            && get_u64(&inner.db, "cursor", &inner.dir).ok() == Some(*lock(&inner.durable))
            && reserve_seqs(inner, next_seq - 1).is_ok();
        // Make the sink's chunks durable first (also those it holds from
        // earlier calls, which capture may have skipped as present).
        let stored = if log_drained {
            sink.commit_durably(&direct, &versions)
        } else {
            sink.store_durably(&direct)
        };
        match stored {
            Ok(()) => {
                committed = log_drained;
                spool_direct = false;
                if inner.sink_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("repository takes chunks again");
                }
            }
            Err(e) => {
                if !inner.sink_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "repository refused chunks ({e}); keeping them in the journal spool \
                         until it takes them"
                    );
                }
            }
        }
    }
    if spool_direct && !direct.is_empty() {
        let mut w = lock(&inner.writer);
        for c in &direct {
            if let Err(e) = write_to_segment(inner, &mut w, c) {
                drop(w);
                requeue(versions, direct);
                return Err(e);
            }
        }
    }
    let (versions, chunks, sync, seg_path_now, sealed) = {
        let mut w = lock(&inner.writer);
        let path = seg_path(&inner.dir, w.current.id);
        if let Err(source) = w.current.file.flush() {
            w.current.broken = true;
            drop(w);
            requeue(versions, Vec::new());
            return Err(JournalError::Io { path, source });
        }
        if w.direct.is_empty() {
            w.queued_bytes = 0;
        }
        (
            versions,
            std::mem::take(&mut w.chunks),
            w.current.sync.clone(),
            path,
            std::mem::take(&mut w.unsynced),
        )
    };
    let restore = |inner: &Inner,
                   versions: Vec<Version>,
                   chunks: Vec<(ChunkId, ChunkLoc)>,
                   sealed: Vec<(u64, Arc<File>)>| {
        let mut w = lock(&inner.writer);
        put_front(&mut w.unsynced, sealed);
        put_front(&mut w.versions, versions);
        put_front(&mut w.chunks, chunks);
    };
    for (id, f) in &sealed {
        if let Err(source) = failpoint::hit("journal.spool_sync").and_then(|()| f.sync_data()) {
            let path = seg_path(&inner.dir, *id);
            restore(inner, versions, chunks, sealed);
            return Err(JournalError::Io { path, source });
        }
    }
    if let Err(source) = failpoint::hit("journal.spool_sync").and_then(|()| sync.sync_data()) {
        restore(inner, versions, chunks, sealed);
        return Err(JournalError::Io {
            path: seg_path_now,
            source,
        });
    }
    let mut batch = sled::Batch::default();
    for (id, loc) in &chunks {
        batch.insert(
            key(b'c', &id.0),
            postcard::to_stdvec(loc).expect("serialize"),
        );
    }
    let mut applied: Vec<(Vec<u8>, u64)> = Vec::with_capacity(versions.len());
    for v in &versions {
        if !committed {
            batch.insert(seq_key(v.seq), v.to_bytes());
        }
        let sk = key(b's', &v.path);
        match &v.entry {
            Entry::Present {
                meta,
                chunks,
                xattrs,
            } => batch.insert(
                sk,
                postcard::to_stdvec(&PathStateRef {
                    meta,
                    chunks,
                    xattrs,
                    seq: v.seq,
                })
                .expect("serialize"),
            ),
            Entry::Deleted | Entry::Stream { .. } => batch.remove(sk),
        }
        applied.push((v.path.clone(), v.seq));
    }
    batch.insert(meta_key("next_seq"), &next_seq.to_be_bytes());
    if !versions.is_empty() {
        let now = Timestamp::now().0.to_be_bytes();
        batch.insert(meta_key("last_capture"), &now);
        if committed {
            // Everything up to next_seq - 1 is in the repository: the log
            // was drained before this batch and this batch is committed.
            batch.insert(meta_key("cursor"), &(next_seq - 1).to_be_bytes());
            batch.insert(meta_key("last_upload"), &now);
        }
    }
    let db_err = |source| JournalError::Db {
        path: inner.dir.join("db"),
        source,
    };
    if let Err(source) = failpoint::hit("journal.flush") {
        restore(inner, versions, chunks, Vec::new());
        return Err(JournalError::Io {
            path: inner.dir.join("db"),
            source,
        });
    }
    let res = inner
        .db
        .apply_batch(batch)
        .and_then(|_| inner.db.flush().map(|_| ()));
    if let Err(e) = res {
        restore(inner, versions, chunks, Vec::new());
        return Err(db_err(e));
    }
    // Versions are taken in seq order under the writer lock, so everything
    // below next_seq is now durable.
    let durable = next_seq - 1;
    {
        let mut w = lock(&inner.writer);
        for (path, seq) in applied {
            if w.overlay.get(&path).map(|(s, _)| *s) == Some(seq) {
                w.overlay.remove(&path);
            }
        }
    }
    let mut d = lock(&inner.durable);
    *d = (*d).max(durable);
    inner.durable_cv.notify_all();
    Ok(*d)
}

/// The flusher's wake-up state, under `Inner::wake_lock`.
#[derive(Default)]
struct Wake {
    /// Work is queued (set by every append).
    pending: bool,
    /// The flusher waits for `pending`; appends must wake it.
    idle: bool,
}

fn flusher(inner: Arc<Inner>) {
    while !inner.stop.load(Ordering::Relaxed) {
        {
            // Sleep until a version or a burst of spool bytes arrives: an
            // idle agent does not wake up for nothing.
            let mut woke = lock(&inner.wake_lock);
            while !woke.pending && !inner.stop.load(Ordering::Relaxed) {
                woke.idle = true;
                woke = inner.wake.wait(woke).unwrap_or_else(|p| p.into_inner());
            }
            woke.idle = false;
            woke.pending = false;
        }
        {
            // Then let the group gather for one interval; only a large
            // spool backlog (or stopping) cuts it short, not every append.
            let window = if inner.bulk.load(Ordering::Relaxed) {
                BULK_FLUSH_INTERVAL
            } else {
                FLUSH_INTERVAL
            };
            let deadline = Instant::now() + window;
            let mut woke = lock(&inner.wake_lock);
            loop {
                if inner.eager.swap(false, Ordering::Relaxed) || inner.stop.load(Ordering::Relaxed)
                {
                    break;
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                woke = inner
                    .wake
                    .wait_timeout(woke, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            // Appends that arrived while gathering are in this group.
            woke.pending = false;
        }
        match flush_once(&inner) {
            Ok(_) => {
                let mut e = lock(&inner.last_error);
                if e.take().is_some() {
                    tracing::warn!("journal writes succeed again");
                }
            }
            Err(e) => {
                let msg = e.to_string();
                let mut last = lock(&inner.last_error);
                if last.as_deref() != Some(msg.as_str()) {
                    tracing::error!("journal commit failed (will retry): {msg}");
                }
                *last = Some(msg);
                drop(last);
                std::thread::sleep(Duration::from_millis(500));
                // Retry without waiting for new work.
                lock(&inner.wake_lock).pending = true;
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.db.flush();
    }
}

/// An open capture. Spool its new chunks with [`CaptureGuard::spool`], then
/// [`CaptureGuard::append`] the version; dropping the guard without appending
/// abandons the capture (its spooled chunks become unreferenced garbage that
/// segment reclamation removes).
pub struct CaptureGuard {
    journal: Journal,
    start_segment: u64,
    done: bool,
}

impl CaptureGuard {
    /// Queue a chunk the repository may not have: into the spool, or for
    /// the sink when one is set.
    pub fn spool(&self, chunk: EncodedChunk) -> Result<()> {
        self.journal.spool(chunk)
    }

    /// True when the repository already holds `id` durably (only known
    /// with a sink; `false` otherwise), so the chunk need not be queued.
    pub fn is_stored(&self, id: &ChunkId) -> bool {
        self.journal.sink_has(id)
    }

    /// Wait while `limit` bytes or more of chunks are queued for the sink,
    /// asking the flusher to store them now. A source that streams more
    /// than the journal's own backlog bound ([`MAX_DIRECT_BACKLOG`]) in one
    /// capture (a database dump) calls this before each chunk to keep its
    /// memory lower; with no sink (chunks go to the spool on disk) it
    /// returns at once.
    pub fn wait_for_room(&self, limit: u64) {
        let j = &self.journal;
        let inner = &j.inner;
        if !inner.sink.get().is_some_and(|s| s.accepting()) {
            return;
        }
        let mut w = lock(&inner.writer);
        while w.queued_bytes >= limit && !inner.stop.load(Ordering::Relaxed) {
            inner.eager.store(true, Ordering::Relaxed);
            j.wake_flusher(true);
            w = inner
                .room
                .wait_timeout(w, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Queue the version (its `seq` and `client` are assigned here); it is
    /// acknowledged once [`Journal::durable_seq`] reaches the returned seq.
    pub fn append(self, v: Version) -> u64 {
        self.append_all(vec![v])[0]
    }

    /// Queue several versions that are one state on disk (a group: SQLite's
    /// database with its `-wal` or `-journal`): they get consecutive seqs
    /// and one group commit makes all of them durable, or none.
    pub fn append_all(mut self, vs: Vec<Version>) -> Vec<u64> {
        let seqs = self.journal.append(self.start_segment, vs);
        self.done = true;
        self.journal.end_capture(self.start_segment);
        seqs
    }
}

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        if !self.done {
            self.journal.end_capture(self.start_segment);
        }
    }
}

#[cfg(test)]
mod tests;
