//! Restoring in pack order, from a repository whose reads wait on a
//! network (docs/decisions.md, "Restoring in pack order (issue 20)").
//!
//! The files of a restore to a new place are not fetched file by file:
//! every chunk they need is listed once, with each place it goes (a file
//! and an offset; a deduplicated chunk has several), the chunks are sorted
//! in the order they lie in storage and cut into spans of one pack, and a
//! few threads fetch a span each (one ranged GET where the span's chunks
//! lie together) and write every chunk of it at all its places (`pwrite`).
//! A file is made final when its last piece is written.
//!
//! - Each stored chunk is fetched and decoded once, however many files or
//!   places in a file hold it.
//! - A file is written under a temporary name and renamed to its own only
//!   once every piece of it was written; a file one of whose chunks could
//!   not be read or written is reported, its temporary name removed.
//! - If a span's fetch fails, its chunks are read one by one, so a damaged
//!   chunk fails the files that hold it, not the span's other files.
//! - Memory is bounded by the spans under way: [`SPANS_AT_ONCE`] of about
//!   [`SPAN_BYTES`] each (as fetched and as decoded; a chunk larger than
//!   a span is a span of its own).
//! - After an interruption, the files not yet complete are left under
//!   temporary names (as a file-by-file restore leaves the ones it was
//!   writing), never half-written under their own.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// Decoded bytes of one span: one ranged GET (where its chunks lie
/// together), and about what a thread holds at once, as fetched and as
/// decoded. Small spans, many at once: `s3s-fs` answers each GET as one
/// stream of 4 KiB reads, so throughput comes from GETs under way, not
/// from their size (by hand, 2026-12-07, load 4-8: 4 MiB x 16 at once
/// restored the benchmark's tree in 3.31 s median, 250 MiB peak RSS;
/// 8 MiB x 12, 3.34 s and 335 MiB; 16 MiB x 4, 4.2-6.1 s).
/// docs/decisions.md, "Restoring in pack order (issue 20)".
const SPAN_BYTES: u64 = 4 << 20;

/// Spans fetched and written at once (see [`SPAN_BYTES`]).
const SPANS_AT_ONCE: usize = 16;

/// Files kept open between spans (a file whose chunks lie in several
/// spans); past this, a file is closed after each span and opened again
/// by its temporary name.
const MAX_OPEN_FILES: usize = 256;

/// A file written in pack order.
struct PlannedFile {
    /// Its entry in the tree, and where it goes.
    entry: usize,
    comps: DirKey,
    job: FileJob,
    /// Its temporary name in `job.dirfd`.
    tmp: Vec<u8>,
    state: Mutex<FileState>,
    /// Held while pieces are written: threads writing spans of one file
    /// wait here instead of spinning in the kernel on the inode's lock,
    /// which serialises buffered writes to one file anyway (a large file
    /// lies in consecutive spans, written by many threads at once:
    /// `rwsem_spin_on_owner` was 3-5 % of the restore's CPU in `perf`).
    writing: Mutex<()>,
}

/// How far a file is.
#[derive(Default)]
struct FileState {
    /// Open while its pieces are being written.
    file: Option<Arc<File>>,
    /// Its temporary name exists.
    created: bool,
    /// Pieces not yet written (or failed).
    left: usize,
    /// Bytes written.
    bytes: u64,
    /// The first thing that went wrong: the file is not made final.
    error: Option<io::Error>,
}

/// A chunk to fetch and every place it goes.
struct PlannedChunk {
    id: ChunkId,
    /// Its decoded length, as its versions record it.
    len: u32,
    /// Where it lies in storage (pack, offset).
    key: (u64, u64),
    /// (file, offset) for each place.
    places: Vec<(usize, u64)>,
}

/// Files to write in pack order, and the chunks they need in storage order.
pub(super) struct PackPlan {
    files: Vec<PlannedFile>,
    chunks: Vec<PlannedChunk>,
    open: AtomicUsize,
}

/// A file handed to the plan: (entry, source entry, components, job).
pub(super) type Planned = (usize, usize, DirKey, FileJob);

impl PackPlan {
    /// The plan for `files` (dense, not empty, to a new place); the files
    /// some of whose chunks the repository cannot place in storage are
    /// given back, to be written file by file (which reports what is
    /// wrong with them).
    pub(super) fn new(
        repo: &dyn Repository,
        tree: &[Version],
        files: Vec<Planned>,
    ) -> (PackPlan, Vec<Planned>) {
        let mut ids: Vec<ChunkId> = Vec::new();
        let mut index: HashMap<ChunkId, usize> = HashMap::new();
        for (_, source, _, _) in &files {
            for c in tree[*source].chunks() {
                index.entry(c.id).or_insert_with(|| {
                    ids.push(c.id);
                    ids.len() - 1
                });
            }
        }
        let keys = repo.storage_order(&ids);
        let mut chunks: Vec<Option<PlannedChunk>> = ids
            .iter()
            .zip(keys)
            .map(|(&id, key)| {
                key.map(|key| PlannedChunk {
                    id,
                    len: 0,
                    key,
                    places: Vec::new(),
                })
            })
            .collect();
        let mut planned = Vec::new();
        let mut rest = Vec::new();
        for (entry, source, comps, job) in files {
            let refs = tree[source].chunks();
            if refs.iter().any(|c| chunks[index[&c.id]].is_none()) {
                rest.push((entry, source, comps, job));
                continue;
            }
            let f = planned.len();
            let mut off = 0u64;
            for c in refs {
                let pc = chunks[index[&c.id]].as_mut().expect("checked above");
                pc.len = c.len;
                pc.places.push((f, off));
                off += u64::from(c.len);
            }
            planned.push(PlannedFile {
                entry,
                comps,
                job,
                tmp: tmp_name(),
                state: Mutex::new(FileState {
                    left: refs.len(),
                    ..FileState::default()
                }),
                writing: Mutex::new(()),
            });
        }
        let mut chunks: Vec<PlannedChunk> = chunks
            .into_iter()
            .flatten()
            .filter(|c| !c.places.is_empty())
            .collect();
        chunks.sort_by_key(|c| c.key);
        (
            PackPlan {
                files: planned,
                chunks,
                open: AtomicUsize::new(0),
            },
            rest,
        )
    }

    /// Whether there is nothing to write.
    pub(super) fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The chunks cut into spans: one pack each, at most [`SPAN_BYTES`]
    /// decoded (at least one chunk).
    fn spans(&self) -> Vec<&[PlannedChunk]> {
        let mut spans = Vec::new();
        let mut rest = &self.chunks[..];
        while !rest.is_empty() {
            let pack = rest[0].key.0;
            let same_pack = rest.iter().take_while(|c| c.key.0 == pack);
            let n = super::windows::fitting(same_pack.map(|c| c.len), SPAN_BYTES);
            let (span, after) = rest.split_at(n);
            spans.push(span);
            rest = after;
        }
        spans
    }

    /// Write every file of the plan with `writer`, [`SPANS_AT_ONCE`] spans
    /// at once (fewer if the repository asks for fewer reads), sending
    /// each file's outcome to `done` when it is complete.
    pub(super) fn run(
        &self,
        writer: &Writer<'_>,
        done: &crossbeam_channel::Sender<(usize, DirKey, io::Result<Option<Written>>)>,
    ) {
        let spans = self.spans();
        let next = AtomicUsize::new(0);
        let threads = SPANS_AT_ONCE.min(spans.len()).max(1);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(span) = spans.get(k) else { break };
                        self.write_span(writer, span, done);
                    }
                });
            }
        });
    }

    /// Fetch `span` and write each of its chunks at all its places.
    fn write_span(
        &self,
        writer: &Writer<'_>,
        span: &[PlannedChunk],
        done: &crossbeam_channel::Sender<(usize, DirKey, io::Result<Option<Written>>)>,
    ) {
        let ids: Vec<ChunkId> = span.iter().map(|c| c.id).collect();
        let data: Vec<io::Result<Vec<u8>>> = match writer.repo.read_chunks(&ids) {
            Ok(data) if data.len() == ids.len() => data.into_iter().map(Ok).collect(),
            // One by one: a damaged chunk fails only the files that hold it.
            _ => ids
                .iter()
                .map(|id| writer.repo.read_chunk(id).map_err(io::Error::other))
                .collect(),
        };
        let data: Vec<io::Result<Vec<u8>>> = span
            .iter()
            .zip(data)
            .map(|(c, d)| {
                let d = d?;
                // Places come from the recorded lengths: a chunk of
                // another length would misplace what follows it.
                if d.len() != c.len as usize {
                    return Err(io::Error::other(format!(
                        "chunk {} holds {} bytes where its version says {}",
                        c.id,
                        d.len(),
                        c.len
                    )));
                }
                Ok(d)
            })
            .collect();
        // Each file's pieces in this span, together: (file, offset, chunk).
        let mut pieces: Vec<(usize, u64, usize)> = span
            .iter()
            .enumerate()
            .flat_map(|(k, c)| c.places.iter().map(move |&(f, off)| (f, off, k)))
            .collect();
        pieces.sort_unstable();
        for group in pieces.chunk_by(|a, b| a.0 == b.0) {
            let f = &self.files[group[0].0];
            let opened = self.open_file(f);
            let mut bytes = 0u64;
            let mut error = None;
            match opened {
                Ok(file) => {
                    // Nothing it guards can be left half-changed.
                    let _writing = f.writing.lock().unwrap_or_else(|p| p.into_inner());
                    for &(_, off, k) in group {
                        let r = match &data[k] {
                            Ok(d) => rewind_core::failpoint::hit("restore.write")
                                .and_then(|()| file.write_all_at(d, off))
                                .map(|()| d.len() as u64),
                            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                        };
                        match r {
                            Ok(n) => bytes += n,
                            Err(e) => {
                                error = Some(e);
                                break;
                            }
                        }
                    }
                }
                Err(e) => error = Some(e),
            }
            self.pieces_done(writer, f, group.len(), bytes, error, done);
        }
    }

    /// The open file `f`, created under its temporary name the first time.
    /// An error if the file failed already.
    fn open_file(&self, f: &PlannedFile) -> io::Result<Arc<File>> {
        let mut st = lock(&f.state);
        if let Some(e) = &st.error {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        if let Some(file) = &st.file {
            return Ok(file.clone());
        }
        let mut flags = OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if !st.created {
            flags |= OFlags::CREATE | OFlags::EXCL;
        }
        let fd = rustix::fs::openat(
            &*f.job.dirfd,
            f.tmp.as_slice(),
            flags,
            Mode::from_raw_mode(0o600),
        );
        let file = match fd {
            Ok(fd) => Arc::new(File::from(fd)),
            Err(e) => {
                let e = io::Error::from(e);
                st.error = Some(io::Error::new(e.kind(), e.to_string()));
                return Err(e);
            }
        };
        st.created = true;
        st.file = Some(file.clone());
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(file)
    }

    /// `n` pieces of `f` written (`bytes`), or failed (`error`); when they
    /// were its last, the file is made final (or removed) and its outcome
    /// sent.
    fn pieces_done(
        &self,
        writer: &Writer<'_>,
        f: &PlannedFile,
        n: usize,
        bytes: u64,
        error: Option<io::Error>,
        done: &crossbeam_channel::Sender<(usize, DirKey, io::Result<Option<Written>>)>,
    ) {
        let (file, error, bytes) = {
            let mut st = lock(&f.state);
            st.left -= n;
            st.bytes += bytes;
            if st.error.is_none() {
                st.error = error;
            }
            if st.left > 0 {
                // Pieces in later spans: keep it open unless too many are.
                if self.open.load(Ordering::Relaxed) > MAX_OPEN_FILES && st.file.take().is_some() {
                    self.open.fetch_sub(1, Ordering::Relaxed);
                }
                return;
            }
            let file = st.file.take();
            if file.is_some() {
                self.open.fetch_sub(1, Ordering::Relaxed);
            }
            (file, st.error.take(), st.bytes)
        };
        let dirfd = &*f.job.dirfd;
        let result = match (error, file) {
            (Some(e), _) => Err(e),
            (None, Some(file)) => {
                let mut w = Written {
                    bytes_fetched: bytes,
                    ..Written::default()
                };
                writer
                    .finish_file(&file, &f.job.meta, &mut w)
                    .and_then(|()| {
                        drop(file);
                        commit_tmp(dirfd, &f.tmp, &f.job.name)
                    })
                    .map(|()| w)
            }
            (None, None) => Err(io::Error::other("a file of the plan was never opened")),
        };
        if result.is_err() {
            // Never created, or already renamed: nothing to remove then.
            let _ = rustix::fs::unlinkat(dirfd, f.tmp.as_slice(), AtFlags::empty());
        }
        let _ = done.send((f.entry, f.comps.clone(), result.map(Some)));
    }
}

fn lock(m: &Mutex<FileState>) -> std::sync::MutexGuard<'_, FileState> {
    // A panic while writing leaves the state as sound as it was: counts
    // are changed in one step.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
