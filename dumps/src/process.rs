//! Running one dump command: its standard output is handed to the caller
//! (the agent's stream capture reads it); its standard error is kept, the
//! end of it; a timer kills it at its timeout or when asked to stop.
//!
//! ```text
//! child stdout ──pipe──▶ the caller (capture)
//! child stderr ──pipe──▶ tail thread (last STDERR_TAIL bytes)
//! timer thread ──deadline or cancel──▶ kill the child's process group
//! ```
//!
//! - The command runs in its own process group, so a timeout kills a shell
//!   and whatever it started, and a Ctrl-C meant for rewind does not reach
//!   it first.
//! - A command that cannot start is a [`StreamStatus`] with its reason, not
//!   an error: the run is stored as a failed version like any other.

use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rewind_core::{StreamStatus, Timestamp};

use crate::job::StreamSpec;

/// Bytes of a command's standard error kept with its stream: the end of
/// it, where pg_dump and mysqldump print their error. 16 KiB holds tens of
/// lines while a command that prints without end cannot grow a version.
pub const STDERR_TAIL: usize = 16 << 10;

/// A dump command that started.
pub struct Running {
    child: Arc<Mutex<Child>>,
    pid: u32,
    stdout: Option<ChildStdout>,
    tail: JoinHandle<Vec<u8>>,
    watchdog: JoinHandle<()>,
    done: mpsc::Sender<()>,
    timed_out: Arc<AtomicBool>,
    cancelled: Arc<AtomicBool>,
    status: StreamStatus,
}

/// Start `spec` at `started`; setting `cancel` kills it. `Err` is the
/// status of a command that could not be started.
pub fn start(
    spec: &StreamSpec,
    started: Timestamp,
    cancel: &Arc<AtomicBool>,
) -> Result<Running, Box<StreamStatus>> {
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
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let what = spec.program.display();
            status.error = Some(if e.kind() == io::ErrorKind::NotFound {
                format!("{what} not found (install it, or set program = \"/path/to/it\")")
            } else {
                format!("cannot run {what}: {e}")
            });
            status.finished = Timestamp::now();
            return Err(Box::new(status));
        }
    };
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let pid = child.id();
    let tail = std::thread::spawn(move || read_tail(stderr));
    let (done, done_rx) = mpsc::channel::<()>();
    let timed_out = Arc::new(AtomicBool::new(false));
    let cancelled = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (timed_out, cancelled, cancel) = (timed_out.clone(), cancelled.clone(), cancel.clone());
        let deadline = spec.timeout.map(|t| Instant::now() + t);
        std::thread::spawn(move || {
            // Checks the deadline and the cancel flag ten times a second: a
            // stop request or a timeout acts within 0.1 s.
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
    Ok(Running {
        child: Arc::new(Mutex::new(child)),
        pid,
        stdout,
        tail,
        watchdog,
        done,
        timed_out,
        cancelled,
        status,
    })
}

impl Running {
    /// The command's standard output (once).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.stdout.take()
    }

    /// Kill the command and whatever it started.
    pub fn kill(&self) {
        kill_group(self.pid);
    }

    /// Wait for the command and say how it ended. `read_error`: what went
    /// wrong reading its output (the command is killed first).
    pub fn finish(self, read_error: Option<String>) -> StreamStatus {
        let mut status = self.status;
        if let Some(e) = read_error {
            status.error = Some(format!("reading its output: {e}"));
            kill_group(self.pid);
        }
        let st = wait(&self.child);
        drop(self.done);
        let _ = self.watchdog.join();
        status.stderr = self.tail.join().unwrap_or_default();
        match st {
            Ok(st) => {
                status.exit_code = st.code();
                status.signal = st.signal();
            }
            Err(e) => status.error = Some(format!("waiting for it: {e}")),
        }
        status.timed_out = self.timed_out.load(Ordering::SeqCst);
        if self.cancelled.load(Ordering::SeqCst) && status.error.is_none() {
            status.error = Some("stopped: rewind was shutting down".into());
        }
        status.finished = Timestamp::now();
        status
    }

    /// Kill the command and wait for it, when its run is abandoned (nothing
    /// is stored).
    pub fn abandon(self) {
        kill_group(self.pid);
        let _ = wait(&self.child);
    }
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

/// Read all of `r`, keeping the last [`STDERR_TAIL`] bytes.
pub(crate) fn read_tail(r: Option<impl Read>) -> Vec<u8> {
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
