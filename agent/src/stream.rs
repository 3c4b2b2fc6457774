//! Capturing a dump stream: the output of a job's command (started by
//! `rewind-dumps`) goes through the one chunk loop into the journal as the
//! content of a version of the virtual path `dumps/<job>`, with the
//! command's exit status and the end of its stderr beside it.
//!
//! ```text
//! command stdout ──pipe──▶ chunker (4 MiB buffer) ──▶ chunk loop ──new──▶ encoders ──▶ journal
//! ```
//!
//! - No temporary copy of a dump is written; memory stays bounded by the
//!   chunker's buffer, the encoders' queue and [`STREAM_BACKLOG`], whatever
//!   the dump's size. When the repository is slower than the dump, reading
//!   stops and the dump program waits (back-pressure through the pipe).
//! - Every run is recorded, failed ones too (non-zero exit, killed, timed
//!   out, program missing), and reported only once the journal has made it
//!   durable. Only a journal failure (nothing could be stored) is an error.
//! - New chunks are stored as deltas against the chunk at the same place
//!   in the previous run where the repository takes deltas and that pays.
//!
//! Interruption: a run cut short by a crash leaves no version (its spooled
//! chunks are garbage the journal reclaims); the next run starts over.

use std::collections::HashSet;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use anyhow::Result;
use rewind_core::{Bases, ChunkId, Chunker, DeltaWalk, Entry, StreamStatus, Timestamp, Version};
use rewind_dumps::{Job, StreamSpec};
use rewind_journal::{Journal, JournalError};

use crate::chunks::{ChunkLoop, Encode, StreamEncoder};

/// Encoded bytes a stream may have queued for the repository before it
/// waits for them to be stored (the journal's own bound is 64 MiB, for
/// file captures). With one batch being written while the next one fills,
/// and chunks in the encoders' hands, a dump holds a few times this: 8 MiB
/// keeps the agent's growth for a dump of any size under 64 MiB, and a
/// batch of 8 MiB still costs one pack seal (write + fsync) per 8 MiB
/// (measured, docs/benchmarks.md "Database dumps").
pub const STREAM_BACKLOG: u64 = 8 << 20;

/// Threads compressing a stream's new chunks (at most; one per core).
const MAX_ENCODERS: usize = 4;

/// Chunks cut and hashed but not yet compressed: enough to keep the
/// encoders busy while the reader waits on the pipe, at most 4 MiB.
const ENCODE_QUEUE: usize = 4;

/// What one stream run produced.
#[derive(Clone, Debug)]
pub struct StreamReport {
    /// Virtual path.
    pub path: Vec<u8>,
    /// Sequence number of the stored version.
    pub seq: u64,
    /// Bytes of output.
    pub bytes: u64,
    /// Chunks of output.
    pub chunks: u64,
    /// Chunks not stored before (queued for the repository).
    pub new_chunks: u64,
    /// Their encoded bytes.
    pub new_bytes: u64,
    /// How the command ended.
    pub status: StreamStatus,
}

impl StreamReport {
    /// The stream is complete and the command succeeded.
    pub fn ok(&self) -> bool {
        self.status.ok()
    }

    /// One line for people: what failed and the last line of stderr.
    pub fn failure_line(&self) -> Option<String> {
        if self.ok() {
            return None;
        }
        let mut s = self.status.describe();
        if let Some(l) = rewind_dumps::last_error_line(&self.status.stderr) {
            s.push_str(": ");
            s.push_str(&l);
        }
        Some(s)
    }
}

/// The walk along the newest stored run of `path` for `client` that has
/// output (a successful one if there is any), when the repository takes
/// deltas.
fn previous_run(bases: &dyn Bases, client: &str, path: &[u8]) -> Option<DeltaWalk> {
    let versions = bases.versions_of(client, path).ok()?;
    let with_output = |ok: bool| {
        versions
            .iter()
            .rev()
            .find(|v| v.stream_status().is_some_and(|s| s.ok() || !ok) && !v.chunks().is_empty())
    };
    let v = with_output(true).or_else(|| with_output(false))?;
    bases.delta_base(&v.chunks().first()?.id).ok()??;
    DeltaWalk::new(v.chunks())
}

/// Run `spec`, store its output as a version of `spec.path`, and return
/// once the version is durable in the journal (see the module doc).
/// `progress` is called with the bytes read so far; setting `cancel` kills
/// the command (the run is stored as failed).
pub(crate) fn capture_stream(
    spec: &StreamSpec,
    journal: &Journal,
    bases: Option<&dyn Bases>,
    chunker: Chunker,
    ids: &rewind_core::ChunkIds,
    cancel: &Arc<AtomicBool>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<StreamReport, JournalError> {
    let started = Timestamp::now();
    let guard = journal.begin_capture();
    let walk = bases.and_then(|b| previous_run(b, journal.client(), &spec.path));
    let mut cut = ChunkLoop::new(&guard, HashSet::new(), walk, ids);
    let mut new_chunks = 0u64;
    let mut new_bytes = 0u64;
    let status = match rewind_dumps::start(spec, started, cancel) {
        Err(status) => *status,
        Ok(mut running) => {
            let stdout = running.take_stdout();
            let encoder = StreamEncoder { bases };
            // Compression runs beside the reader (which cuts and hashes),
            // so the dump program's pipe keeps draining while chunks are
            // compressed: on two cores this is what keeps the overhead
            // over a bare dump low (docs/benchmarks.md, "Database dumps").
            let workers = std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .clamp(1, MAX_ENCODERS);
            let encoded = AtomicU64::new(0);
            let failed: Mutex<Option<JournalError>> = Mutex::new(None);
            let stop = AtomicBool::new(false);
            let (tx, rx) = mpsc::sync_channel::<(ChunkId, Vec<u8>, Option<ChunkId>)>(ENCODE_QUEUE);
            let rx = Mutex::new(rx);
            let mut buf = Vec::new();
            let read = std::thread::scope(|s| {
                // Owned here, dropped below: the encoders stop once it is.
                let tx = tx;
                for _ in 0..workers {
                    s.spawn(|| {
                        loop {
                            let msg = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                            let Ok((id, data, hint)) = msg else { break };
                            let enc = encoder.encode(id, &data, hint);
                            encoded.fetch_add(enc.data.len() as u64, Ordering::Relaxed);
                            if let Err(e) = guard.spool(enc) {
                                *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                                stop.store(true, Ordering::SeqCst);
                                break;
                            }
                        }
                    });
                }
                let r = match stdout {
                    Some(out) => chunker.for_each(out, &mut buf, |data| {
                        if stop.load(Ordering::SeqCst) {
                            return Err(io::Error::other("journal refused a chunk"));
                        }
                        if let Some(new) = cut.cut(data) {
                            guard.wait_for_room(STREAM_BACKLOG);
                            new_chunks += 1;
                            if tx.send((new.id, data.to_vec(), new.hint)).is_err() {
                                return Err(io::Error::other("journal refused a chunk"));
                            }
                        }
                        progress(cut.bytes());
                        Ok(())
                    }),
                    None => Ok(()),
                };
                drop(tx);
                r
            });
            new_bytes = encoded.load(Ordering::Relaxed);
            if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
                running.abandon();
                return Err(e);
            }
            running.finish(read.err().map(|e| e.to_string()))
        }
    };
    let bytes = cut.bytes();
    let chunks = cut.into_chunks();
    let nchunks = chunks.len() as u64;
    let seq = guard.append(Version {
        client: String::new(),
        seq: 0,
        // The moment the dump's snapshot was taken: `--at T` means "the
        // database as it was at T", and a dump shows the state at its start.
        observed_at: started,
        path: spec.path.clone(),
        entry: Entry::Stream {
            chunks,
            status: status.clone(),
        },
    });
    // Durable before we report it (the journal commits in groups).
    while journal.durable_seq() < seq {
        journal.flush()?;
        if journal.durable_seq() < seq {
            journal.wait_durable_beyond(seq - 1, Duration::from_secs(1));
        }
    }
    Ok(StreamReport {
        path: spec.path.clone(),
        seq,
        bytes,
        chunks: nchunks,
        new_chunks,
        new_bytes,
        status,
    })
}

/// Run every stream of `job` (one, or for an all-databases postgres job
/// the globals and one per database) into `journal`. `progress` gets the
/// stream's path and its bytes so far. Stops at nothing: each stream is
/// stored, failed or not; only a journal failure or a failure to list the
/// databases is an error.
pub(crate) fn capture_job(
    job: &Job,
    journal: &Journal,
    bases: Option<&dyn Bases>,
    chunker: Chunker,
    ids: &rewind_core::ChunkIds,
    cancel: &Arc<AtomicBool>,
    progress: &(dyn Fn(&[u8], u64) + Sync),
) -> Result<Vec<StreamReport>> {
    let dbs = if job.is_all_postgres() {
        rewind_dumps::list_postgres_databases(job)?
    } else {
        Vec::new()
    };
    let mut out = Vec::new();
    for spec in job.streams(&dbs)? {
        if cancel.load(Ordering::SeqCst) {
            break;
        }
        tracing::info!(
            "dump {}: running {}",
            String::from_utf8_lossy(&spec.path),
            spec.program.display()
        );
        let p = |n: u64| progress(&spec.path, n);
        out.push(capture_stream(
            &spec, journal, bases, chunker, ids, cancel, &p,
        )?);
    }
    Ok(out)
}
