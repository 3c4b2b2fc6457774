//! Running one dump command and streaming its output into the journal.
//!
//! ```text
//! child stdout ──pipe──▶ chunker (4 MiB buffer) ──▶ hash ──▶ new? encode ──▶ journal (spool or sink)
//! child stderr ──pipe──▶ tail thread (last STDERR_TAIL bytes)
//! timer thread ──deadline──▶ kill the child's process group
//! ```
//!
//! Back-pressure: the journal blocks `spool` while its queue for the
//! repository is full, this thread stops reading, the pipe fills and the
//! dump program blocks in `write` until the repository catches up.

use std::collections::HashSet;
use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rewind_core::{
    ChunkId, ChunkRef, Chunker, Entry, Repository, StreamStatus, Timestamp, Version,
};
use rewind_journal::Journal;

use crate::DumpError;
use crate::delta;
use crate::job::StreamSpec;

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

/// Bytes of a command's standard error kept with its stream: the end of
/// it, where pg_dump and mysqldump print their error. 16 KiB holds tens of
/// lines while a command that prints without end cannot grow a version.
pub const STDERR_TAIL: usize = 16 << 10;

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
        if let Some(l) = last_error_line(&self.status.stderr) {
            s.push_str(": ");
            s.push_str(&l);
        }
        Some(s)
    }
}

/// The most telling line of a dump program's stderr: the last one that
/// says `error` (pg_dump prints a detail line after it), else the last
/// non-empty one.
pub fn last_error_line(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let l = lines
        .iter()
        .rev()
        .find(|l| l.to_ascii_lowercase().contains("error"))
        .or(lines.last())?;
    Some(l.chars().take(400).collect())
}

/// Run `spec`, store its output as a version of `spec.path`, and return
/// once the version is durable in the journal. A failing command is
/// stored too, as a failed version; only a journal failure (nothing could
/// be stored) is an error. `progress` is called with the bytes read so far;
/// setting `cancel` kills the command (the run is stored as failed).
/// With `bases`, the repository the journal drains into, new chunks are
/// stored as deltas against the previous run's where that pays (a
/// repository that takes no deltas answers so, and nothing changes).
pub fn run_stream(
    spec: &StreamSpec,
    journal: &Journal,
    bases: Option<&dyn Repository>,
    chunker: Chunker,
    cancel: &Arc<AtomicBool>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<StreamReport, DumpError> {
    let started = Timestamp::now();
    let mut status = StreamStatus {
        format: spec.format.clone(),
        database: spec.database.clone(),
        started,
        finished: started,
        exit_code: None,
        signal: None,
        timed_out: false,
        error: None,
        stderr: Vec::new(),
    };
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills a shell and whatever
        // it started, and a Ctrl-C meant for us does not reach it first.
        .process_group(0);
    let guard = journal.begin_capture();
    let mut chunks: Vec<ChunkRef> = Vec::new();
    let (mut bytes, mut new_chunks, mut new_bytes) = (0u64, 0u64, 0u64);
    match cmd.spawn() {
        Err(e) => {
            let what = spec.program.display();
            status.error = Some(if e.kind() == io::ErrorKind::NotFound {
                format!("{what} not found (install it, or set program = \"/path/to/it\")")
            } else {
                format!("cannot run {what}: {e}")
            });
        }
        Ok(mut child) => {
            let stdout = child.stdout.take();
            let stderr = child.stderr.take();
            let pid = child.id();
            let child = Arc::new(Mutex::new(child));
            let tail = std::thread::spawn(move || read_tail(stderr));
            let (done_tx, done_rx) = mpsc::channel::<()>();
            let timed_out = Arc::new(AtomicBool::new(false));
            let cancelled = Arc::new(AtomicBool::new(false));
            let watchdog = {
                let (timed_out, cancelled, cancel) =
                    (timed_out.clone(), cancelled.clone(), cancel.clone());
                let deadline = spec.timeout.map(|t| Instant::now() + t);
                std::thread::spawn(move || {
                    // Checks the deadline and the cancel flag ten times a
                    // second: a stop request or a timeout acts within 0.1 s.
                    while let Err(mpsc::RecvTimeoutError::Timeout) =
                        done_rx.recv_timeout(Duration::from_millis(100))
                    {
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            timed_out.store(true, Ordering::SeqCst);
                            kill_group(pid);
                            return;
                        }
                        if cancel.load(Ordering::SeqCst) {
                            cancelled.store(true, Ordering::SeqCst);
                            kill_group(pid);
                            return;
                        }
                    }
                })
            };
            let mut seen: HashSet<ChunkId> = HashSet::new();
            let mut previous = bases.and_then(|r| delta::previous(r, journal.client(), &spec.path));
            let mut buf = Vec::new();
            // Compression runs beside the reader (which cuts and hashes),
            // so the dump program's pipe keeps draining while chunks are
            // compressed: on two cores this is what keeps the overhead
            // over a bare dump low (docs/benchmarks.md, "Database dumps").
            let workers = std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .clamp(1, MAX_ENCODERS);
            let encoded = AtomicU64::new(0);
            let failed: Mutex<Option<rewind_journal::JournalError>> = Mutex::new(None);
            let stop = AtomicBool::new(false);
            let (tx, rx) = mpsc::sync_channel::<(ChunkId, Vec<u8>, Option<ChunkId>)>(ENCODE_QUEUE);
            let rx = Mutex::new(rx);
            let read = std::thread::scope(|s| {
                // Owned here, dropped below: the encoders stop once it is.
                let tx = tx;
                for _ in 0..workers {
                    s.spawn(|| {
                        loop {
                            let msg = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                            let Ok((id, data, hint)) = msg else { break };
                            let enc = delta::encode(bases, id, &data, hint);
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
                        let id = ChunkId::of(data);
                        bytes += data.len() as u64;
                        chunks.push(ChunkRef {
                            id,
                            len: data.len() as u32,
                        });
                        let hint = previous
                            .as_mut()
                            .and_then(|p| p.next(&id, data.len() as u32));
                        if seen.insert(id) && !guard.is_stored(&id) {
                            guard.wait_for_room(STREAM_BACKLOG);
                            new_chunks += 1;
                            if tx.send((id, data.to_vec(), hint)).is_err() {
                                return Err(io::Error::other("journal refused a chunk"));
                            }
                        }
                        progress(bytes);
                        Ok(())
                    }),
                    None => Ok(()),
                };
                drop(tx);
                r
            });
            new_bytes = encoded.load(Ordering::Relaxed);
            let spool_err = failed.into_inner().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = spool_err {
                kill_group(pid);
                let _ = wait(&child);
                return Err(DumpError::Journal(e));
            }
            if let Err(e) = read {
                status.error = Some(format!("reading its output: {e}"));
                kill_group(pid);
            }
            let st = wait(&child);
            drop(done_tx);
            let _ = watchdog.join();
            status.stderr = tail.join().unwrap_or_default();
            match st {
                Ok(st) => {
                    status.exit_code = st.code();
                    status.signal = st.signal();
                }
                Err(e) => status.error = Some(format!("waiting for it: {e}")),
            }
            status.timed_out = timed_out.load(Ordering::SeqCst);
            if cancelled.load(Ordering::SeqCst) && status.error.is_none() {
                status.error = Some("stopped: rewind was shutting down".into());
            }
        }
    }
    status.finished = Timestamp::now();
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
    loop {
        if journal.durable_seq() >= seq {
            break;
        }
        journal.flush().map_err(DumpError::Journal)?;
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

/// Wait for the child without holding its lock across a blocking wait, so
/// the timer can still kill it.
fn wait(child: &Mutex<Child>) -> io::Result<std::process::ExitStatus> {
    let started = Instant::now();
    loop {
        {
            let mut c = child.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(st) = c.try_wait()? {
                return Ok(st);
            }
        }
        // Its output ended: it exits within moments; poll gently.
        let pause = if started.elapsed() < Duration::from_secs(1) {
            Duration::from_millis(5)
        } else {
            Duration::from_millis(100)
        };
        std::thread::sleep(pause);
    }
}

fn kill_group(pid: u32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process_group(p, rustix::process::Signal::KILL);
    }
}

/// [`read_tail`] for the restore side.
pub(crate) fn read_tail_pub(r: Option<impl Read>) -> Vec<u8> {
    read_tail(r)
}

/// Read all of `r`, keeping the last [`STDERR_TAIL`] bytes.
fn read_tail(r: Option<impl Read>) -> Vec<u8> {
    let Some(mut r) = r else {
        return Vec::new();
    };
    let mut keep: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                keep.extend_from_slice(&buf[..n]);
                if keep.len() > 2 * STDERR_TAIL {
                    keep.drain(..keep.len() - STDERR_TAIL);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if keep.len() > STDERR_TAIL {
        keep.drain(..keep.len() - STDERR_TAIL);
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_is_bounded() {
        let data = vec![b'x'; 100_000];
        let t = read_tail(Some(&data[..]));
        assert_eq!(t.len(), STDERR_TAIL);
    }

    #[test]
    fn error_line() {
        let e = b"pg_dump: error: connection to server failed: FATAL:  password authentication failed for user \"u\"\n\n";
        assert_eq!(
            last_error_line(e).unwrap(),
            "pg_dump: error: connection to server failed: FATAL:  password authentication failed for user \"u\""
        );
        assert_eq!(last_error_line(b"a\nb\n").unwrap(), "b");
        assert_eq!(last_error_line(b""), None);
    }
}
