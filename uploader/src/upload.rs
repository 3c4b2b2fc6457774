use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rewind_core::{ChunkId, ChunkSink, EncodedChunk, RepoError, Repository, Timestamp, Version};
use rewind_journal::{Journal, JournalError};
use serde::{Deserialize, Serialize};

use crate::direct;
use crate::retry::Retry;

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

    /// True for a repository that is likely back within seconds: a server
    /// that is busy, restarting or unreachable, a request that timed out
    /// (an object store's writer lease waiting for its renewal says
    /// `TimedOut` too). Not a full disk, a refusal or a lost lease: those
    /// wait for someone to act.
    pub fn may_pass_soon(&self) -> bool {
        use std::io::ErrorKind as K;
        match self {
            UploadError::Repo(RepoError::Remote { transient, .. }) => *transient,
            UploadError::Repo(RepoError::Io { source, .. }) => matches!(
                source.kind(),
                K::TimedOut
                    | K::ConnectionRefused
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::NotConnected
                    | K::BrokenPipe
                    | K::Interrupted
            ),
            _ => false,
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
    /// Longest pause between retries (of the upload and of the direct
    /// path alike).
    pub max_backoff: Duration,
    /// `put_chunks` requests sent at once.
    pub in_flight: usize,
    /// After the journal makes something durable, wait this long for more
    /// before sending a batch (fewer, fuller requests to a server).
    pub gather: Duration,
    /// When stopping with versions still waiting: how long to go on
    /// retrying a repository that is briefly away (a server restarting, an
    /// object store that did not answer in time, a writer lease waiting for
    /// its renewal; see [`UploadError::may_pass_soon`]). Zero gives up at
    /// the first failure, as a resident agent's stop does: what is left
    /// waits in the journal for the next start. A backup run
    /// (`watch --once`) waits, so a hiccup at its end does not leave it
    /// incomplete.
    pub stop_patience: Duration,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            max_versions: 2000,
            max_chunk_bytes: 32 << 20,
            max_backoff: Duration::from_secs(60),
            in_flight: 1,
            gather: Duration::ZERO,
            stop_patience: Duration::ZERO,
        }
    }
}

impl UploadOptions {
    /// For a server over the network: 8 MiB requests, four at once, so a
    /// slow round trip does not idle the link, and batches gathered for up
    /// to half a second.
    pub fn remote() -> Self {
        UploadOptions {
            max_chunk_bytes: 8 << 20,
            in_flight: 4,
            gather: Duration::from_millis(500),
            ..Default::default()
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

/// A full batch does not end inside a group: versions captured as one
/// state (a SQLite database with its side files, a deleted tree) share one
/// time and consecutive seqs, and a commit that took only some of them
/// would leave the repository, until the next commit, with a state that
/// never existed. The trailing run of versions with the last one's time
/// waits for the next batch (unless it is the whole batch).
fn keep_groups_whole(versions: &mut Vec<rewind_core::Version>, max: usize) {
    if versions.len() < max {
        return;
    }
    let Some(last) = versions.last().map(|v| v.observed_at) else {
        return;
    };
    let keep = versions
        .iter()
        .rposition(|v| v.observed_at != last)
        .map_or(versions.len(), |i| i + 1);
    versions.truncate(keep);
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
    let mut versions = journal.versions_after(cursor, opts.max_versions)?;
    keep_groups_whole(&mut versions, opts.max_versions);
    let Some(last_seq) = versions.last().map(|v| v.seq) else {
        return Ok(0);
    };
    let mut ids = Vec::new();
    let mut seen = HashSet::new();
    for v in &versions {
        for c in v.chunk_refs() {
            if seen.insert(c.id) {
                ids.push(c.id);
            }
        }
    }
    let missing = repo.missing_chunks(&ids)?;
    let (lost, sent) = send_chunks(journal, repo, opts, missing)?;
    let (good, bad): (Vec<Version>, Vec<Version>) = versions
        .into_iter()
        .partition(|v| v.chunk_refs().all(|c| !lost.contains(&c.id)));
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

/// Send the chunks `missing` from the spool, in groups of about
/// `max_chunk_bytes`, `in_flight` requests at a time. Returns the chunks
/// the spool no longer has, and the bytes sent.
fn send_chunks(
    journal: &Journal,
    repo: &dyn Repository,
    opts: &UploadOptions,
    missing: Vec<ChunkId>,
) -> Result<(HashSet<ChunkId>, u64), UploadError> {
    let mut lost: HashSet<ChunkId> = HashSet::new();
    let mut sent = 0u64;
    let (tx, rx) = crossbeam_channel::bounded::<Vec<EncodedChunk>>(opts.in_flight.max(1));
    let failed: Mutex<Option<RepoError>> = Mutex::new(None);
    let read = std::thread::scope(|scope| -> Result<(), UploadError> {
        for _ in 0..opts.in_flight.max(1) {
            let rx = rx.clone();
            let failed = &failed;
            scope.spawn(move || {
                for group in rx {
                    if failed.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                        continue;
                    }
                    if let Err(e) = repo.put_chunks(group) {
                        failed
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                    }
                }
            });
        }
        drop(rx);
        let mut group = Vec::new();
        let mut group_bytes = 0usize;
        for id in missing {
            if failed.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                break;
            }
            match journal.read_spooled(&id)? {
                Some(c) => {
                    group_bytes += c.data.len();
                    sent += c.data.len() as u64;
                    group.push(c);
                    if group_bytes >= opts.max_chunk_bytes {
                        group_bytes = 0;
                        if tx.send(std::mem::take(&mut group)).is_err() {
                            break;
                        }
                    }
                }
                None => {
                    lost.insert(id);
                }
            }
        }
        if !group.is_empty() {
            let _ = tx.send(group);
        }
        drop(tx);
        Ok(())
    });
    read?;
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e.into());
    }
    Ok((lost, sent))
}

/// A request to stop the upload thread. Setting it wakes the thread's
/// pauses (a gather, a backoff) and its wait on the journal at once, so a
/// stopping agent does not wait them out.
#[derive(Default)]
struct Stop {
    set: Mutex<bool>,
    cv: Condvar,
}

impl Stop {
    fn request(&self, journal: &Journal) {
        *self.set.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_all();
        journal.wake_waiters();
    }

    fn requested(&self) -> bool {
        *self.set.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sleep for `d` unless a stop is requested first; true when one is.
    fn pause(&self, d: Duration) -> bool {
        let set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        *self
            .cv
            .wait_timeout_while(set, d, |set| !*set)
            .unwrap_or_else(|p| p.into_inner())
            .0
    }
}

/// The upload thread.
pub struct Uploader {
    stop: Arc<Stop>,
    journal: Journal,
    handle: Option<JoinHandle<()>>,
    status: Arc<Mutex<UploadStatus>>,
}

impl Uploader {
    /// Start draining `journal` into `repo` on a thread of its own.
    ///
    /// With `direct` (the same repository, as a [`ChunkSink`]) the
    /// uploader also takes the direct path: it becomes the journal's
    /// group-commit hook, so capture's chunks go straight into the
    /// repository at each group commit, and the versions too while the log
    /// is drained (docs/decisions.md, "One owner of repository writes").
    /// Both follow one retry policy. A journal takes one hook: give
    /// `direct` to one uploader per journal; the hook stays with the
    /// journal after [`Uploader::stop`], for its last commits.
    pub fn start(
        journal: Journal,
        repo: Arc<dyn Repository>,
        direct: Option<Arc<dyn ChunkSink>>,
        opts: UploadOptions,
    ) -> Uploader {
        let stop = Arc::new(Stop::default());
        let status = Arc::new(Mutex::new(UploadStatus::default()));
        let retry = Arc::new(Retry::new(opts.max_backoff));
        if let Some(sink) = direct {
            direct::install(&journal, sink, retry.clone());
        }
        let (j2, s2, st2) = (journal.clone(), stop.clone(), status.clone());
        let handle = std::thread::Builder::new()
            .name("uploader".into())
            .spawn(move || run(j2, repo, opts, retry, s2, st2))
            .expect("spawn uploader thread");
        Uploader {
            stop,
            journal,
            handle: Some(handle),
            status,
        }
    }

    /// A snapshot of the status.
    pub fn status(&self) -> UploadStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Finish the current round, upload what is durable now (unless the
    /// repository fails) and stop.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.request(&self.journal);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        self.halt();
    }
}

fn run(
    journal: Journal,
    repo: Arc<dyn Repository>,
    opts: UploadOptions,
    retry: Arc<Retry>,
    stop: Arc<Stop>,
    status: Arc<Mutex<UploadStatus>>,
) {
    // Set when a stop is first seen: until then a stopping uploader
    // retries a repository that may be back soon.
    let mut patience: Option<Instant> = None;
    let mut told_patience = false;
    loop {
        let stopping = stop.requested();
        if stopping && patience.is_none() {
            patience = Some(Instant::now() + opts.stop_patience);
        }
        // After a failed write, here or on the direct path, wait until the
        // backoff says try again (a stop cuts the wait short).
        if !stopping && let Some(left) = retry.paused_for() {
            stop.pause(left);
            continue;
        }
        // Read before the round: whatever becomes durable after this
        // point wakes the wait below, even when the round saw nothing to do
        // (versions the direct path made durable and then failed to commit
        // are the uploader's; a wait that started from the durable seq read
        // after the round missed them, and an idle agent kept them in its
        // journal for good: tests/s3_faults.rs, a lapsed writer lease).
        let durable_before = journal.durable_seq();
        match drain_once(&journal, repo.as_ref(), &opts, &status) {
            Ok(0) => {
                if stopping {
                    return;
                }
                // Wakes as soon as the journal makes something durable, or
                // a stop is asked for. Nothing is read from the journal
                // meanwhile: at a million paths each look at the cursor
                // and the log cost sled's cache misses, 0.3 % of a core
                // at four a second (docs/decisions.md "A million files").
                let before = durable_before;
                loop {
                    if journal.wait_durable_beyond(before, Duration::from_millis(250)) > before {
                        if !opts.gather.is_zero() {
                            stop.pause(opts.gather);
                        }
                        break;
                    }
                    if stop.requested() {
                        break;
                    }
                }
            }
            Ok(_) => retry.succeeded(),
            Err(e) => {
                let msg = e.to_string();
                {
                    let mut st = status.lock().unwrap_or_else(|p| p.into_inner());
                    if st.last_error.as_deref() != Some(msg.as_str()) {
                        tracing::warn!("upload failed (will retry): {msg}");
                    }
                    st.last_error = Some(msg);
                }
                let pause = match e {
                    UploadError::Repo(_) => retry.repository_failed(),
                    UploadError::Journal(_) => retry.journal_failed(),
                };
                if stopping {
                    // A stop ends the pauses; only a repository that may
                    // be back soon is waited for, within the patience.
                    let patient =
                        e.may_pass_soon() && patience.is_some_and(|until| Instant::now() < until);
                    if !patient {
                        return;
                    }
                    if !told_patience {
                        told_patience = true;
                        tracing::info!(
                            "stopping: the repository is not taking writes yet; trying again for up to {} s",
                            opts.stop_patience.as_secs()
                        );
                    }
                    let left = patience
                        .map(|until| until.saturating_duration_since(Instant::now()))
                        .unwrap_or_default();
                    std::thread::sleep(pause.min(left));
                    continue;
                }
                stop.pause(pause);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind_core::{ChunkRef, EncodedChunk, Entry, FileKind};
    use rewind_repo::LocalRepo;

    fn meta() -> rewind_core::FileMeta {
        rewind_core::FileMeta::new(FileKind::File, 0o644)
    }

    fn capture(j: &Journal, path: &str, data: &[u8]) -> (u64, EncodedChunk) {
        let c = EncodedChunk::encode(data);
        let g = j.begin_capture();
        g.spool(c.clone()).unwrap();
        let seq = g.append(Version {
            client: String::new(),
            seq: 0,
            observed_at: Timestamp::now(),
            path: path.as_bytes().to_vec(),
            entry: Entry::Present {
                meta: meta(),
                chunks: vec![ChunkRef {
                    id: c.id,
                    len: c.raw_len,
                }],
                xattrs: Vec::new(),
            },
        });
        (seq, c)
    }

    fn setup() -> (tempfile::TempDir, Journal, LocalRepo) {
        let tmp = tempfile::tempdir().unwrap();
        let j = Journal::open(&tmp.path().join("journal"), "me").unwrap();
        let r = LocalRepo::init(&tmp.path().join("repo"), rewind_core::DEFAULT_CHUNKER).unwrap();
        (tmp, j, r)
    }

    #[test]
    fn drains_durable_versions_and_advances_the_cursor() {
        let (_t, j, r) = setup();
        capture(&j, "/r/a", b"aaa");
        let (s2, c2) = capture(&j, "/r/b", b"bbb");
        j.flush().unwrap();
        let st = Mutex::new(UploadStatus::default());
        let opts = UploadOptions::default();
        assert!(drain_once(&j, &r, &opts, &st).unwrap() > 0);
        assert_eq!(j.cursor().unwrap(), s2);
        assert_eq!(r.versions_of("me", b"/r/b").unwrap().len(), 1);
        assert_eq!(r.read_chunk(&c2.id).unwrap(), b"bbb");
        assert_eq!(drain_once(&j, &r, &opts, &st).unwrap(), 0);
        assert_eq!(st.lock().unwrap().versions_committed, 2);
    }

    #[test]
    fn a_stop_ends_the_gather_pause_and_still_uploads() {
        let (_t, j, r) = setup();
        let r = Arc::new(r);
        // A gather far longer than the test may take: the stop must cut it.
        let opts = UploadOptions {
            gather: Duration::from_secs(120),
            ..Default::default()
        };
        let u = Uploader::start(j.clone(), r.clone(), None, opts);
        std::thread::sleep(Duration::from_millis(100));
        capture(&j, "/r/a", b"gathered");
        j.flush().unwrap();
        // Let the thread see the flush and start its pause.
        std::thread::sleep(Duration::from_millis(400));
        let t = std::time::Instant::now();
        u.stop();
        assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
        assert_eq!(r.versions_of("me", b"/r/a").unwrap().len(), 1);
    }

    /// A repository whose commits time out `failures` times first, as an
    /// object store's writer lease does while its renewal is held up.
    struct Away {
        repo: LocalRepo,
        failures: std::sync::atomic::AtomicUsize,
    }

    impl Repository for Away {
        fn missing_chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>, RepoError> {
            self.repo.missing_chunks(ids)
        }
        fn put_chunks(&self, chunks: Vec<EncodedChunk>) -> Result<(), RepoError> {
            self.repo.put_chunks(chunks)
        }
        fn commit_versions(&self, versions: Vec<Version>) -> Result<(), RepoError> {
            use std::sync::atomic::Ordering;
            let left = self.failures.load(Ordering::SeqCst);
            if left > 0 {
                self.failures.store(left - 1, Ordering::SeqCst);
                return Err(RepoError::Io {
                    path: "lock".into(),
                    source: std::io::Error::new(std::io::ErrorKind::TimedOut, "lease lapsed"),
                });
            }
            self.repo.commit_versions(versions)
        }
        fn versions_of(&self, client: &str, path: &[u8]) -> Result<Vec<Version>, RepoError> {
            self.repo.versions_of(client, path)
        }
        fn tree_at(&self, c: &str, p: &[u8], at: Timestamp) -> Result<Vec<Version>, RepoError> {
            self.repo.tree_at(c, p, at)
        }
        fn covers(&self, client: &str, path: &[u8]) -> Result<bool, RepoError> {
            self.repo.covers(client, path)
        }
        fn find(
            &self,
            c: &str,
            q: &rewind_core::FindQuery,
        ) -> Result<rewind_core::FindReply, RepoError> {
            self.repo.find(c, q)
        }
        fn activity(
            &self,
            c: &str,
            q: &rewind_core::ActivityQuery,
        ) -> Result<Vec<rewind_core::ActivityBucket>, RepoError> {
            self.repo.activity(c, q)
        }
        fn read_chunk(&self, id: &ChunkId) -> Result<Vec<u8>, RepoError> {
            self.repo.read_chunk(id)
        }
        fn stats(&self) -> Result<rewind_core::RepoStats, RepoError> {
            self.repo.stats()
        }
    }

    /// Captures one version, stops an uploader with `patience` at once and
    /// says whether the version reached a repository that times out
    /// `failures` times first.
    fn stopped_with(patience: Duration, failures: usize) -> bool {
        let (_t, j, r) = setup();
        let r = Arc::new(Away {
            repo: r,
            failures: failures.into(),
        });
        let opts = UploadOptions {
            stop_patience: patience,
            ..Default::default()
        };
        capture(&j, "/r/a", b"at the end of a run");
        j.flush().unwrap();
        Uploader::start(j.clone(), r.clone(), None, opts).stop();
        !r.versions_of("me", b"/r/a").unwrap().is_empty()
    }

    #[test]
    fn a_stopping_uploader_waits_within_its_patience_for_a_repository_that_comes_back() {
        // Three timeouts cost pauses of about 0.2 + 0.4 + 0.8 s.
        assert!(stopped_with(Duration::from_secs(60), 3));
        // Without patience (a resident agent's stop) it leaves the version
        // in the journal for the next start.
        assert!(!stopped_with(Duration::ZERO, 3));
        // A repository that stays away is given up on when patience ends.
        let t = Instant::now();
        assert!(!stopped_with(Duration::from_secs(1), usize::MAX));
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    }

    #[test]
    fn only_a_repository_that_may_be_back_soon_is_waited_for() {
        let io = |kind| {
            UploadError::Repo(RepoError::Io {
                path: "p".into(),
                source: std::io::Error::new(kind, "x"),
            })
        };
        assert!(io(std::io::ErrorKind::TimedOut).may_pass_soon());
        assert!(io(std::io::ErrorKind::ConnectionRefused).may_pass_soon());
        assert!(!io(std::io::ErrorKind::StorageFull).may_pass_soon());
        assert!(!io(std::io::ErrorKind::PermissionDenied).may_pass_soon());
        let remote = |transient| {
            UploadError::Repo(RepoError::Remote {
                url: "https://s".into(),
                reason: "r".into(),
                transient,
            })
        };
        assert!(remote(true).may_pass_soon());
        assert!(!remote(false).may_pass_soon());
    }

    #[test]
    fn many_requests_in_flight_send_every_chunk_once() {
        let (_t, j, r) = setup();
        let mut ids = Vec::new();
        for i in 0..40 {
            let (_, c) = capture(
                &j,
                &format!("/r/{i}"),
                format!("content {i}").repeat(50).as_bytes(),
            );
            ids.push(c.id);
        }
        j.flush().unwrap();
        let st = Mutex::new(UploadStatus::default());
        let opts = UploadOptions {
            max_chunk_bytes: 100,
            in_flight: 3,
            ..Default::default()
        };
        assert!(drain_once(&j, &r, &opts, &st).unwrap() > 0);
        assert!(r.missing_chunks(&ids).unwrap().is_empty());
        assert_eq!(r.stats().unwrap().versions, 40);
        assert_eq!(j.cursor().unwrap(), 40);
    }

    #[test]
    fn small_batches_and_resend_after_a_lost_cursor_are_harmless() {
        let (_t, j, r) = setup();
        for i in 0..5 {
            capture(&j, &format!("/r/{i}"), format!("data {i}").as_bytes());
        }
        j.flush().unwrap();
        let st = Mutex::new(UploadStatus::default());
        let opts = UploadOptions {
            max_versions: 2,
            ..Default::default()
        };
        // The repository has the first batch but the cursor never moved
        // (a crash between commit and cursor advance).
        let first = j.versions_after(0, 2).unwrap();
        let chunks: Vec<_> = first
            .iter()
            .map(|v| j.read_spooled(&v.chunks()[0].id).unwrap().unwrap())
            .collect();
        r.put_chunks(chunks).unwrap();
        r.commit_versions(first).unwrap();
        while drain_once(&j, &r, &opts, &st).unwrap() > 0 {}
        assert_eq!(j.cursor().unwrap(), 5);
        assert_eq!(r.stats().unwrap().versions, 5, "nothing duplicated");
    }

    #[test]
    fn a_version_whose_chunk_is_lost_is_held_back() {
        let (_t, j, r) = setup();
        let (s1, _) = capture(&j, "/r/ok", b"fine");
        j.flush().unwrap();
        // A version whose chunk was never spooled (a damaged journal).
        let g = j.begin_capture();
        let ghost = EncodedChunk::encode(b"never spooled");
        g.append(Version {
            client: String::new(),
            seq: 0,
            observed_at: Timestamp::now(),
            path: b"/r/ghost".to_vec(),
            entry: Entry::Present {
                meta: meta(),
                chunks: vec![ChunkRef {
                    id: ghost.id,
                    len: ghost.raw_len,
                }],
                xattrs: Vec::new(),
            },
        });
        j.flush().unwrap();
        let st = Mutex::new(UploadStatus::default());
        drain_once(&j, &r, &UploadOptions::default(), &st).unwrap();
        assert_eq!(r.versions_of("me", b"/r/ok").unwrap().len(), 1);
        assert!(r.versions_of("me", b"/r/ghost").unwrap().is_empty());
        assert!(
            j.last_known(b"/r/ghost").unwrap().is_none(),
            "forgotten, so captured again"
        );
        assert!(j.cursor().unwrap() > s1);
    }

    #[test]
    fn with_a_sink_versions_commit_directly_and_fall_back_to_the_log_when_the_repository_fails() {
        let (t, j, r) = setup();
        let r = Arc::new(r);
        direct::install(
            &j,
            r.clone(),
            Arc::new(Retry::new(UploadOptions::default().max_backoff)),
        );
        // Direct: the chunk is in the repository before the version is
        // acknowledged, and never in the spool.
        let (s1, c1) = capture(&j, "/r/a", b"direct bytes");
        assert_eq!(j.wait_durable_beyond(s1 - 1, Duration::from_secs(10)), s1);
        assert_eq!(r.read_chunk(&c1.id).unwrap(), b"direct bytes");
        assert!(j.read_spooled(&c1.id).unwrap().is_none());
        // With the log drained, the version itself was committed by the
        // journal's flush: nothing is left to upload.
        assert_eq!(r.versions_of("me", b"/r/a").unwrap().len(), 1);
        assert_eq!(j.cursor().unwrap(), s1);
        assert!(j.versions_after(0, 10).unwrap().is_empty());
        {
            let g = j.begin_capture();
            assert!(g.is_stored(&c1.id));
        }
        // The repository cannot write packs (its tmp directory is now a
        // file): the chunk goes to the spool instead, and capture goes on.
        let tmp = t.path().join("repo/tmp");
        std::fs::remove_dir(&tmp).unwrap();
        std::fs::write(&tmp, b"in the way").unwrap();
        let (s2, c2) = capture(&j, "/r/b", b"spooled bytes");
        assert_eq!(j.wait_durable_beyond(s2 - 1, Duration::from_secs(10)), s2);
        assert!(matches!(
            r.read_chunk(&c2.id),
            Err(RepoError::MissingChunk(_))
        ));
        assert_eq!(j.read_spooled(&c2.id).unwrap().unwrap(), c2);
        assert!(r.versions_of("me", b"/r/b").unwrap().is_empty());
        assert_eq!(
            j.cursor().unwrap(),
            s1,
            "the fallback version waits in the log"
        );
        // Once the repository works again the uploader moves it.
        std::fs::remove_file(&tmp).unwrap();
        std::fs::create_dir(&tmp).unwrap();
        let st = Mutex::new(UploadStatus::default());
        while drain_once(&j, r.as_ref(), &UploadOptions::default(), &st).unwrap() > 0 {}
        assert_eq!(j.cursor().unwrap(), s2);
        assert_eq!(r.read_chunk(&c2.id).unwrap(), b"spooled bytes");
        assert_eq!(r.versions_of("me", b"/r/a").unwrap().len(), 1);
        assert_eq!(r.versions_of("me", b"/r/b").unwrap().len(), 1);
        let reopened = LocalRepo::open(&t.path().join("repo")).unwrap();
        assert_eq!(reopened.read_chunk(&c1.id).unwrap(), b"direct bytes");
    }

    #[test]
    fn a_failed_cursor_advance_resends_harmlessly() {
        let (_t, j, r) = setup();
        for i in 0..4 {
            capture(&j, &format!("/r/{i}"), format!("data {i}").as_bytes());
        }
        j.flush().unwrap();
        let st = Mutex::new(UploadStatus::default());
        let opts = UploadOptions::default();
        // The repository commits, then recording that in the journal fails.
        rewind_core::failpoint::arm("cursor.advance", true);
        assert!(drain_once(&j, &r, &opts, &st).is_err());
        rewind_core::failpoint::arm("cursor.advance", false);
        assert_eq!(j.cursor().unwrap(), 0);
        assert_eq!(r.stats().unwrap().versions, 4);
        // The next round sends the same batch again: nothing is duplicated.
        while drain_once(&j, &r, &opts, &st).unwrap() > 0 {}
        assert_eq!(j.cursor().unwrap(), 4);
        assert_eq!(r.stats().unwrap().versions, 4);
    }

    #[test]
    fn a_full_batch_does_not_end_inside_a_group() {
        let v = |seq: u64, t: i64| rewind_core::Version {
            client: "c".into(),
            seq,
            observed_at: rewind_core::Timestamp(t),
            path: format!("/p{seq}").into_bytes(),
            entry: rewind_core::Entry::Deleted,
        };
        let mut full = vec![v(1, 10), v(2, 20), v(3, 30), v(4, 30)];
        keep_groups_whole(&mut full, 4);
        assert_eq!(full.iter().map(|v| v.seq).collect::<Vec<_>>(), [1, 2]);
        let mut short = vec![v(1, 10), v(2, 30), v(3, 30)];
        keep_groups_whole(&mut short, 4);
        assert_eq!(
            short.len(),
            3,
            "a batch that is not full is the journal's end"
        );
        let mut one_group = vec![v(1, 30), v(2, 30)];
        keep_groups_whole(&mut one_group, 2);
        assert_eq!(one_group.len(), 2, "a group as large as a batch goes whole");
    }
}
