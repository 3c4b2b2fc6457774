//! Dump jobs inside the agent: the schedule, and runs asked for through
//! the control socket (`rewind dump run NAME` while the agent holds the
//! journal).
//!
//! Scheduled jobs run one after another on one thread, so two dumps never
//! compete for the database server or the disk; a job never runs twice at
//! once (a manual run of a job that is running is refused).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use rewind_core::{Chunker, Repository, Timestamp};
use rewind_dumps::{Job, StreamReport};
use rewind_journal::Journal;
use serde::Serialize;

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
    repo: Arc<dyn Repository>,
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
    pub fn new(
        journal: Journal,
        chunker: Chunker,
        repo: Arc<dyn Repository>,
        jobs: Vec<Job>,
    ) -> Self {
        DumpService {
            journal,
            chunker,
            repo,
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
        let res = rewind_dumps::run_job(
            job,
            &self.journal,
            Some(self.repo.as_ref()),
            self.chunker,
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
        Ok(res?)
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
            .repo
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
