use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rewind_core::{ChunkId, RepoError, Repository, Timestamp, Version};
use rewind_journal::{Journal, JournalError};
use serde::{Deserialize, Serialize};

/// Errors of one upload round.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    /// The repository failed.
    #[error("repository: {0}")]
    Repo(#[from] RepoError),
    /// The journal failed.
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
}

impl UploadError {
    /// True when retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            UploadError::Repo(e) => e.is_transient(),
            UploadError::Journal(e) => e.is_transient(),
        }
    }
}

/// Batch limits.
#[derive(Clone, Debug)]
pub struct UploadOptions {
    /// Versions per commit. 2,000 keeps one commit's version record well
    /// under a megabyte while a first pass of 50k files takes 25 commits.
    pub max_versions: usize,
    /// Bytes of chunk data per `put_chunks` call (32 MiB: one pack).
    pub max_chunk_bytes: usize,
    /// Longest pause between retries.
    pub max_backoff: Duration,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            max_versions: 2000,
            max_chunk_bytes: 32 << 20,
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// What `status` shows about uploading.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UploadStatus {
    /// Last successful commit.
    pub last_commit: Option<Timestamp>,
    /// Versions committed since start.
    pub versions_committed: u64,
    /// Chunk bytes sent since start.
    pub bytes_sent: u64,
    /// The last error, cleared by the next success.
    pub last_error: Option<String>,
}

/// One round: commit the next batch of durable versions. Returns how many
/// versions were committed (0 when there was nothing to do).
pub fn drain_once(
    journal: &Journal,
    repo: &dyn Repository,
    opts: &UploadOptions,
    status: &Mutex<UploadStatus>,
) -> Result<usize, UploadError> {
    let cursor = journal.cursor()?;
    let versions = journal.versions_after(cursor, opts.max_versions)?;
    let Some(last_seq) = versions.last().map(|v| v.seq) else {
        return Ok(0);
    };
    let mut ids = Vec::new();
    let mut seen = HashSet::new();
    for v in &versions {
        for c in v.chunks() {
            if seen.insert(c.id) {
                ids.push(c.id);
            }
        }
    }
    let missing = repo.missing_chunks(&ids)?;
    let mut lost: HashSet<ChunkId> = HashSet::new();
    let mut group = Vec::new();
    let mut group_bytes = 0usize;
    let mut sent = 0u64;
    for id in missing {
        match journal.read_spooled(&id)? {
            Some(c) => {
                group_bytes += c.data.len();
                sent += c.data.len() as u64;
                group.push(c);
                if group_bytes >= opts.max_chunk_bytes {
                    repo.put_chunks(std::mem::take(&mut group))?;
                    group_bytes = 0;
                }
            }
            None => {
                lost.insert(id);
            }
        }
    }
    if !group.is_empty() {
        repo.put_chunks(group)?;
    }
    let (good, bad): (Vec<Version>, Vec<Version>) = versions
        .into_iter()
        .partition(|v| v.chunks().iter().all(|c| !lost.contains(&c.id)));
    for v in &bad {
        tracing::error!(
            "version {} of {} lost chunks before upload; it will be captured again",
            v.seq,
            rewind_core::path::display(&v.path)
        );
        journal.forget(&v.path)?;
    }
    let n = good.len();
    repo.commit_versions(good)?;
    journal.advance_cursor(last_seq)?;
    let mut st = status.lock().unwrap_or_else(|p| p.into_inner());
    st.last_commit = Some(Timestamp::now());
    st.versions_committed += n as u64;
    st.bytes_sent += sent;
    st.last_error = None;
    Ok(n.max(1))
}

/// The upload thread.
pub struct Uploader {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    status: Arc<Mutex<UploadStatus>>,
}

impl Uploader {
    /// Start draining `journal` into `repo` on a thread of its own.
    pub fn start(journal: Journal, repo: Arc<dyn Repository>, opts: UploadOptions) -> Uploader {
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(Mutex::new(UploadStatus::default()));
        let (s2, st2) = (stop.clone(), status.clone());
        let handle = std::thread::Builder::new()
            .name("uploader".into())
            .spawn(move || run(journal, repo, opts, s2, st2))
            .expect("spawn uploader thread");
        Uploader {
            stop,
            handle: Some(handle),
            status,
        }
    }

    /// A snapshot of the status.
    pub fn status(&self) -> UploadStatus {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Finish the current round, upload what is durable now (unless the
    /// repository fails) and stop.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn run(
    journal: Journal,
    repo: Arc<dyn Repository>,
    opts: UploadOptions,
    stop: Arc<AtomicBool>,
    status: Arc<Mutex<UploadStatus>>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        match drain_once(&journal, repo.as_ref(), &opts, &status) {
            Ok(0) => {
                if stopping {
                    return;
                }
                backoff = Duration::from_millis(200);
                let cursor = journal.cursor().unwrap_or(0);
                // Wakes as soon as the journal makes something durable.
                journal.wait_durable_beyond(cursor.max(journal.durable_seq()), Duration::from_millis(250));
            }
            Ok(_) => backoff = Duration::from_millis(200),
            Err(e) => {
                let msg = e.to_string();
                {
                    let mut st = status.lock().unwrap_or_else(|p| p.into_inner());
                    if st.last_error.as_deref() != Some(msg.as_str()) {
                        tracing::warn!("upload failed (will retry): {msg}");
                    }
                    st.last_error = Some(msg);
                }
                if stopping {
                    return;
                }
                // Exponential backoff with jitter, so many clients coming
                // back at once do not retry in lockstep.
                let jitter = rand::random::<f64>() * 0.5 + 0.75;
                std::thread::sleep(backoff.mul_f64(jitter));
                backoff = (backoff * 2).min(opts.max_backoff);
            }
        }
    }
}
