//! Dump jobs inside the agent: the schedule, runs asked for through the
//! control socket (`rewind dump run NAME` while the agent holds the
//! journal), and a run with no agent ([`run_dump_once`]).
//!
//! Scheduled jobs run one after another on one thread, so two dumps never
//! compete for the database server or the disk; a job never runs twice at
//! once (a manual run of a job that is running is refused).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use rewind_core::path::JsonPath;
use rewind_core::{Bases, Chunker, Timestamp};
use rewind_dumps::Job;
use rewind_journal::Journal;
use rewind_uploader::Uploader;
use serde::Serialize;
use serde_json::{Value, json};

use crate::opening::open_for_capture;
use crate::stream::{StreamReport, capture_job};
use crate::target::Target;

/// How often the schedule is looked at: a job is at most this late.
const TICK: Duration = Duration::from_millis(250);

/// The last run of a job, for `status`.
#[derive(Clone, Serialize)]
pub struct LastRun {
    /// When it started.
    pub started: String,
    /// Every stream succeeded.
    pub ok: bool,
    /// `ok`, or the first failure.
    pub message: String,
    /// Bytes dumped.
    pub bytes: u64,
}

pub(crate) struct DumpService {
    journal: Journal,
    chunker: Chunker,
    /// What runs read of the past: a job's previous run.
    bases: Arc<dyn Bases>,
    jobs: Vec<Job>,
    running: Mutex<HashSet<String>>,
    /// Runs in progress (scheduled or asked for); shutdown waits for 0.
    active: Mutex<usize>,
    idle: Condvar,
    /// Set at shutdown: running dumps are killed (and stored as failed).
    pub cancel: Arc<AtomicBool>,
    /// Start of each job's last run (schedule) and its outcome (status).
    last: Mutex<HashMap<String, (Timestamp, Option<LastRun>)>>,
}

impl DumpService {
    pub fn new(journal: Journal, chunker: Chunker, bases: Arc<dyn Bases>, jobs: Vec<Job>) -> Self {
        DumpService {
            journal,
            chunker,
            bases,
            jobs,
            running: Mutex::new(HashSet::new()),
            active: Mutex::new(0),
            idle: Condvar::new(),
            cancel: Arc::new(AtomicBool::new(false)),
            last: Mutex::new(HashMap::new()),
        }
    }

    /// The configured job called `name`.
    pub fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.name() == name)
    }

    /// Run `job` now; refused while the same job runs.
    pub fn run(
        &self,
        job: &Job,
        progress: &(dyn Fn(&[u8], u64) + Sync),
    ) -> Result<Vec<StreamReport>> {
        if self.cancel.load(Ordering::SeqCst) {
            bail!("the agent is stopping");
        }
        if !self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job.name().to_string())
        {
            bail!("dump job {:?} is running already", job.name());
        }
        *self.active.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        let started = Timestamp::now();
        let res = capture_job(
            job,
            &self.journal,
            Some(self.bases.as_ref()),
            self.chunker,
            &self.bases.chunk_ids(),
            &self.cancel,
            progress,
        );
        let summary = match &res {
            Ok(reports) => {
                let failed = reports.iter().find_map(|r| {
                    r.failure_line()
                        .map(|l| format!("{}: {l}", rewind_core::path::display(&r.path)))
                });
                Some(LastRun {
                    started: started.to_string(),
                    ok: failed.is_none(),
                    message: failed.clone().unwrap_or_else(|| "ok".into()),
                    bytes: reports.iter().map(|r| r.bytes).sum(),
                })
            }
            Err(e) => Some(LastRun {
                started: started.to_string(),
                ok: false,
                message: e.to_string(),
                bytes: 0,
            }),
        };
        if let Some(s) = &summary
            && !s.ok
        {
            tracing::warn!("dump {}: {}", job.name(), s.message);
        }
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job.name().to_string(), (started, summary));
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(job.name());
        let mut a = self.active.lock().unwrap_or_else(|p| p.into_inner());
        *a -= 1;
        self.idle.notify_all();
        res
    }

    /// The start of the job's last run: remembered, else the newest
    /// version in the repository (so a restart keeps the rhythm).
    fn last_start(&self, job: &Job) -> Option<Timestamp> {
        if let Some((t, _)) = self
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(job.name())
        {
            return Some(*t);
        }
        let path = if job.is_all_postgres() {
            rewind_dumps::stream_path(job.name(), Some(".globals"))
        } else {
            job.path()
        };
        let t = self
            .bases
            .versions_of(self.journal.client(), &path)
            .ok()?
            .last()
            .map(|v| v.observed_at)?;
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job.name().to_string(), (t, None));
        Some(t)
    }

    /// Run scheduled jobs as they come due, until `stop`.
    pub fn schedule_loop(&self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) && !self.cancel.load(Ordering::SeqCst) {
            let now = Timestamp::now();
            for job in &self.jobs {
                let Some(s) = &job.schedule else { continue };
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if s.next_after(self.last_start(job), now) <= now {
                    tracing::info!("dump {}: scheduled run", job.name());
                    let _ = self.run(job, &|_, _| {});
                }
            }
            std::thread::sleep(TICK);
        }
    }

    /// Kill running dumps and wait (at most `timeout`) for their failed
    /// versions to be stored.
    pub fn shutdown(&self, timeout: Duration) {
        self.cancel.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + timeout;
        let mut a = self.active.lock().unwrap_or_else(|p| p.into_inner());
        while *a > 0 && Instant::now() < deadline {
            a = self
                .idle
                .wait_timeout(a, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Jobs and their last runs, for `status`.
    pub fn status(&self) -> serde_json::Value {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let jobs: Vec<_> = self
            .jobs
            .iter()
            .map(|j| {
                serde_json::json!({
                    "name": j.name(),
                    "kind": j.config.kind.as_str(),
                    "schedule": j.config.schedule,
                    "running": running.contains(j.name()),
                    "last_run": last.get(j.name()).and_then(|(_, r)| r.clone()),
                })
            })
            .collect();
        serde_json::Value::Array(jobs)
    }
}

/// A report as JSON (the agent sends these over the socket).
pub fn report_json(r: &StreamReport) -> Value {
    json!({
        "path": JsonPath(&r.path),
        "seq": r.seq,
        "ok": r.ok(),
        "status": r.status.describe(),
        "error": r.failure_line(),
        "exit_code": r.status.exit_code,
        "signal": r.status.signal,
        "timed_out": r.status.timed_out,
        "bytes": r.bytes,
        "chunks": r.chunks,
        "new_chunks": r.new_chunks,
        "new_bytes": r.new_bytes,
        "started": r.status.started.to_string(),
        "seconds": (r.status.finished.0 - r.status.started.0) as f64 / 1e9,
    })
}

/// Agent side of `rewind dump run`: the request names a job of the
/// agent's own config (its name as a JSON string; nothing else is run),
/// replies are JSON lines: progress, then `{"done": [...]}` or
/// `{"error": "..."}`.
pub(crate) fn serve_run(conn: &UnixStream, service: &DumpService, request: &str) {
    let mut w = conn;
    let job = serde_json::from_str::<String>(request)
        .map_err(|e| anyhow::anyhow!("bad dump request (a job name in JSON): {e}"))
        .and_then(|name| {
            service.job(&name).cloned().ok_or_else(|| {
                anyhow::anyhow!(
                    "the running agent has no dump job {name:?} (it reads its config when it \
                     starts: restart it after editing the config)"
                )
            })
        });
    let reply = match job {
        Err(e) => json!({"error": e.to_string()}),
        Ok(job) => {
            let last = std::sync::Mutex::new(Instant::now());
            let progress = |path: &[u8], bytes: u64| {
                let mut l = last.lock().unwrap_or_else(|p| p.into_inner());
                // A line four times a second is plenty for a progress bar.
                if l.elapsed() >= Duration::from_millis(250) {
                    *l = Instant::now();
                    let line = json!({"progress": {"path": JsonPath(path), "bytes": bytes}});
                    let _ = (&*conn).write_all(format!("{line}\n").as_bytes());
                }
            };
            match service.run(&job, &progress) {
                Ok(reports) => json!({"done": reports.iter().map(report_json).collect::<Vec<_>>()}),
                Err(e) => json!({"error": one_line(&e)}),
            }
        }
    };
    let _ = w.write_all(format!("{reply}\n").as_bytes());
}

/// A job run once with no agent (`rewind dump run` when none runs): open
/// the repository and the journal here, dump, commit, upload, close. Ctrl-C
/// or SIGTERM kills the dump, which is then stored as a failed run.
pub fn run_dump_once(
    target: &Target,
    job: &Job,
    progress: &(dyn Fn(&[u8], u64) + Sync),
) -> Result<Vec<StreamReport>> {
    let (opened, journal) = open_for_capture(target, None, &[])?;
    let chunker = Chunker::new(opened.chunker);
    let uploader = Uploader::start(
        journal.clone(),
        opened.repo.clone(),
        opened.sink.clone(),
        opened.upload.clone(),
    );
    let cancel = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, cancel.clone());
    let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, cancel.clone());
    let bases = rewind_core::bases_of(opened.repo.clone());
    let res = capture_job(
        job,
        &journal,
        Some(bases.as_ref()),
        chunker,
        &bases.chunk_ids(),
        &cancel,
        progress,
    );
    let flushed = journal.flush();
    uploader.stop();
    journal.close()?;
    flushed?;
    res
}

/// An error and its causes on one line, without repeating a cause the
/// message already contains ([`rewind_core::one_line`]).
pub fn one_line(e: &anyhow::Error) -> String {
    rewind_core::one_line(e.as_ref())
}
