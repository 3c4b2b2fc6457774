//! The running agent's shared state and the work its threads do: capture
//! workers take paths from the scheduler and turn them into versions; the
//! scanner compares a tree with the journal's last-known states (first pass,
//! rescans) and queues what differs, deletions included.
//!
//! - A path that changed while it was read is retried after 10 ms,
//!   doubling up to an eighth of `busy_interval` while it has raced for
//!   less than `busy_interval`, then up to `busy_interval`
//!   ([`retry_delay`]); it is captured as soon as one read
//!   sees no change (a version never mixes two states), and shown in
//!   `status` while it goes without a version longer than `busy_interval`.
//! - A journal failure never drops a capture: the path is queued again.
//! - Per-path problems are counted and the last 100 kept for `status`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rewind_core::path::{display as show, to_bytes};
use rewind_core::{Chunker, Timestamp};
use rewind_journal::Journal;
use rewind_watcher::{IgnoreRules, ScanItem};
use serde::Serialize;

use crate::capture::{self, Capturer, Change, Outcome, ScanStamp};
use crate::dump_service::DumpService;
use crate::follow::FollowSymlinks;
use crate::health::Health;
use crate::links::LinkMap;
use crate::scheduler::Scheduler;

/// Counters shared by the agent's threads.
#[derive(Default, Serialize)]
pub struct Counters {
    /// Paths looked at by scans.
    pub scanned: AtomicU64,
    /// Versions queued.
    pub captured: AtomicU64,
    /// Content bytes read.
    pub bytes_read: AtomicU64,
    /// Versions of files captured without reading their content
    /// (metadata-only changes, further names of a hard-linked inode).
    pub reused: AtomicU64,
    /// Compressed bytes spooled.
    pub bytes_spooled: AtomicU64,
    /// Per-path errors.
    pub errors: AtomicU64,
    /// Items captured without some of their metadata (an xattr or ACL that
    /// could not be read).
    pub warnings: AtomicU64,
    /// Subtree rescans done after the first pass (lost events, directories
    /// past the inotify limit).
    pub rescans: AtomicU64,
    /// Wall time spent in those rescans, microseconds.
    pub rescan_micros: AtomicU64,
}

/// A per-path problem, kept for `status`.
#[derive(Clone, Serialize)]
pub struct ProblemRecord {
    /// When.
    pub at: String,
    /// What.
    pub message: String,
}

/// The first retry of a torn read: soon, doubling from here.
const RETRY_FIRST: Duration = Duration::from_millis(10);

/// How long to wait before the `n`th consecutive read of a path that
/// raced its writer, `racing` after the first race: 10 ms, doubling with
/// each race, but at most an eighth of `busy_interval` until the path has
/// raced for `busy_interval`, so a few torn reads in a row (a database
/// written every 10 ms, on a loaded machine) still leave many tries within
/// the staleness bound (`busy_interval` + 1 s); after that, up to
/// `busy_interval`, so a file that is written without pause (a VM image)
/// is not re-read in a tight loop.
fn retry_delay(n: u32, racing: Duration, busy_interval: Duration) -> Duration {
    let doubled = RETRY_FIRST.saturating_mul(1u32 << n.saturating_sub(1).min(16));
    let cap = if racing < busy_interval {
        busy_interval / 8
    } else {
        busy_interval
    };
    doubled.min(cap.max(RETRY_FIRST))
}

/// A file that could not be read consistently for this long is reported
/// once in the log (it shows in `status` from `busy_interval` on).
const BUSY_WARNING: Duration = Duration::from_secs(30);

/// A path whose reads keep racing its writer.
pub(crate) struct Racing {
    attempts: u32,
    since: std::time::Instant,
    since_wall: Timestamp,
    warned: bool,
}

/// A file that has gone without a version because every read raced a
/// writer, as `status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct BusyFile {
    /// The path (lossy for display).
    pub path: String,
    /// The first torn read (RFC 3339).
    pub since: String,
    /// Seconds since then.
    pub without_version_secs: u64,
    /// Reads tried.
    pub attempts: u32,
}

/// The running agent: what its threads share. Built by the pipeline,
/// which owns its lifetime; capture workers, the scanner and the control
/// socket reach it through an `Arc`.
pub(crate) struct Agent {
    pub(crate) journal: Journal,
    pub(crate) rules: Arc<IgnoreRules>,
    pub(crate) chunker: Chunker,
    /// How the repository names chunks.
    pub(crate) ids: rewind_core::ChunkIds,
    pub(crate) sched: Scheduler,
    pub(crate) counters: Counters,
    pub(crate) problems: Mutex<Vec<ProblemRecord>>,
    pub(crate) first_pass_done: AtomicBool,
    /// Set when stopping: scans stop queueing work.
    pub(crate) stopping: AtomicBool,
    pub(crate) roots: Vec<PathBuf>,
    /// Whether links out of the roots were followed at start.
    pub(crate) follow_symlinks: FollowSymlinks,
    /// The repository's directory, or the server's URL.
    pub(crate) repository: String,
    pub(crate) started: Timestamp,
    /// A busy file gets a version at least this often when it can be read
    /// consistently; torn reads are retried within it.
    pub(crate) busy_interval: Duration,
    /// Paths whose last reads raced a writer (cleared by a capture).
    pub(crate) races: Mutex<HashMap<Vec<u8>, Racing>>,
    /// Hard-link groups seen by capture.
    pub(crate) links: LinkMap,
    /// The journal's last seq before this run: later versions were
    /// captured with the watches in place.
    pub(crate) watched_since: u64,
    /// Dump jobs: the schedule and runs asked for over the control socket.
    pub(crate) dumps: Arc<DumpService>,
    /// Forget, prune, pins: asked for over the control socket, and run by
    /// the agent itself.
    pub(crate) retention: Arc<crate::retention::RetentionCtx>,
    /// The agent's own forget and prune runs, for `status`.
    pub(crate) maintenance: Arc<Mutex<crate::maintenance::MaintenanceStatus>>,
    /// Encodes new chunks of files: deltas against their previous
    /// versions, a dictionary for small ones (embedded repository only: a
    /// server takes whole chunks).
    pub(crate) encoder: rewind_core::FileEncoder,
    /// What is wrong now, and telling the user.
    pub(crate) health: Health,
    /// The snapshot the first pass reads from, while it does.
    pub(crate) snapshot: std::sync::RwLock<Option<crate::snapshot::ActiveSnapshot>>,
}

impl Agent {
    /// A path changed while it was read: try again soon (a busy file's
    /// next quiet moment may be milliseconds away), as [`retry_delay`]
    /// says. It is captured as soon as one read sees no change.
    fn retry_raced(&self, path: Vec<u8>, at: Timestamp, change: Change) {
        let (n, since, warn) = {
            let mut r = self.races.lock().unwrap_or_else(|e| e.into_inner());
            let e = r.entry(path.clone()).or_insert_with(|| Racing {
                attempts: 0,
                since: std::time::Instant::now(),
                since_wall: Timestamp::now(),
                warned: false,
            });
            e.attempts = e.attempts.saturating_add(1);
            let warn = !e.warned && e.since.elapsed() >= BUSY_WARNING;
            e.warned |= warn;
            (e.attempts, e.since, warn)
        };
        let delay = retry_delay(n, since.elapsed(), self.busy_interval);
        if warn {
            tracing::warn!(
                "{} changed during every read for {} s ({n} tries): it has no version since; \
                 it is tried again every {:?} (on a filesystem with reflinks, such as btrfs or \
                 XFS, rewind reads a consistent copy instead)",
                show(&path),
                since.elapsed().as_secs(),
                delay
            );
        }
        self.sched.retry_later(path, at, change, delay);
    }

    /// Files that could not be read consistently for longer than
    /// `busy_interval`, for `status`.
    pub(crate) fn busy(&self) -> Vec<BusyFile> {
        let r = self.races.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<BusyFile> = r
            .iter()
            .filter(|(_, e)| e.since.elapsed() > self.busy_interval)
            .map(|(p, e)| BusyFile {
                path: show(p).to_string(),
                since: e.since_wall.to_string(),
                without_version_secs: e.since.elapsed().as_secs(),
                attempts: e.attempts,
            })
            .collect();
        v.sort_by_key(|b| std::cmp::Reverse(b.without_version_secs));
        v
    }

    pub(crate) fn problem(&self, message: String) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        self.record_problem(message);
    }

    /// Something was captured without part of its metadata.
    fn warning(&self, message: String) {
        self.counters.warnings.fetch_add(1, Ordering::Relaxed);
        self.record_problem(message);
    }

    fn record_problem(&self, message: String) {
        tracing::warn!("{message}");
        let mut p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        p.push(ProblemRecord {
            at: Timestamp::now().to_string(),
            message,
        });
        // Keep the most recent ones only.
        if p.len() > 100 {
            p.remove(0);
        }
    }

    /// With `outside-roots`, links are followed from the agent's start: a
    /// link made (or re-pointed) out of the protected folders while it runs
    /// is followed from its next start, and the user is told so.
    fn note_new_link(&self, p: &Path) {
        let is_link = std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
        let Some(target) = is_link.then(|| p.canonicalize().ok()).flatten() else {
            return;
        };
        if self.roots.iter().any(|r| target.starts_with(r)) {
            return;
        }
        eprintln!(
            "rewind: note: symlink {} -> {} points outside the protected folders; \
             its target is protected from the agent's next start",
            p.display(),
            target.display()
        );
    }

    /// Capture paths from the scheduler until it stops; a worker of the
    /// first pass (`first_pass_only`) also ends once the first pass is
    /// done, so later changes are captured by workers at normal priority
    /// (see `pipeline::background`).
    pub(crate) fn worker(&self, first_pass_only: bool) {
        let warn = |m: String| self.warning(m);
        let note = |m: String| eprintln!("rewind: note: {m}");
        let again = |p: Vec<u8>| self.sched.submit(p, Timestamp::now(), Change::Content);
        let cap = Capturer {
            journal: &self.journal,
            chunker: self.chunker,
            rules: &self.rules,
            links: &self.links,
            warn: &warn,
            note: &note,
            watched_since: self.watched_since,
            encoder: Some(&self.encoder),
            groups: &self.sched.groups,
            snapshot: &self.snapshot,
            again: &again,
            ids: &self.ids,
        };
        // An idle worker gives back its buffers and zstd contexts
        // (docs/decisions.md, "Idle capture workers keep nothing").
        let mut rest = capture::release_thread_buffers;
        while let Some((path, at, change)) =
            self.sched
                .next_or_rest(first_pass_only, crate::scheduler::REST_AFTER, &mut rest)
        {
            let p = rewind_core::path::from_bytes(&path);
            tracing::debug!("capturing {} ({change:?})", show(&path));
            let hot = self
                .races
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&path);
            match cap.capture(&p, change, hot) {
                Ok(Outcome::Captured {
                    bytes,
                    spooled,
                    reused,
                    also,
                }) => {
                    self.counters.captured.fetch_add(1, Ordering::Relaxed);
                    self.counters.bytes_read.fetch_add(bytes, Ordering::Relaxed);
                    self.counters
                        .bytes_spooled
                        .fetch_add(spooled, Ordering::Relaxed);
                    if reused {
                        self.counters.reused.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::debug!(
                        "captured {}{}",
                        show(&path),
                        if reused { " (content reused)" } else { "" }
                    );
                    // Other names of an inode whose content changed.
                    for other in also {
                        self.sched.submit(other, at, Change::Content);
                    }
                    if self.follow_symlinks == FollowSymlinks::OutsideRoots
                        && self.first_pass_done.load(Ordering::Relaxed)
                    {
                        self.note_new_link(&p);
                    }
                }
                Ok(Outcome::Deleted(n)) => {
                    self.counters
                        .captured
                        .fetch_add(n as u64, Ordering::Relaxed);
                    tracing::debug!("deleted {} ({n} paths)", show(&path));
                }
                Ok(Outcome::Raced) => {
                    tracing::debug!("{} changed while read; again later", show(&path));
                    self.retry_raced(path.clone(), at, change);
                    self.sched.done(&path);
                    continue;
                }
                Ok(Outcome::Unchanged | Outcome::Skipped) => {}
                Err(capture::CaptureError::Journal(e)) => {
                    self.problem(format!(
                        "journal: {e} (capture of {} will be retried)",
                        show(&path)
                    ));
                    self.sched
                        .retry_later(path.clone(), at, change, Duration::from_secs(2));
                }
                Err(e) => self.problem(format!("skipped {e}")),
            }
            if let Ok(mut r) = self.races.lock() {
                r.remove(&path);
            }
            self.sched.done(&path);
        }
    }

    /// Compare everything under `root` with the last-known state and queue
    /// what differs, including deletions.
    pub(crate) fn rescan(&self, root: &Path, at: Timestamp) {
        let base = to_bytes(root).to_vec();
        // What the journal knows under the root, by a digest of the path:
        // enough to tell a change and, after the walk, which known paths
        // it did not meet (read again from the journal one at a time).
        // Holding the paths and their whole states took about 2 KiB a
        // path: 2.3 GiB for a million (docs/decisions.md "A million files
        // (issue 19)").
        let mut known: HashMap<PathDigest, (ScanStamp, bool)> = HashMap::new();
        if let Err(e) = self.journal.for_each_known_under(&base, |p, st| {
            known.insert(PathDigest::of(p), (ScanStamp::of(&st.meta), false));
        }) {
            self.problem(format!("rescan of {}: {e}", root.display()));
            return;
        }
        let mut met = 0usize;
        let mut unreadable: Vec<Vec<u8>> = Vec::new();
        if std::fs::symlink_metadata(root).is_err() {
            self.sched.submit(base.clone(), at, Change::Scan);
            return;
        }
        rewind_watcher::scan(root, &self.rules, |item| match item {
            _ if self.stopping.load(Ordering::Relaxed) => {}
            ScanItem::Entry { path, metadata } => {
                self.counters.scanned.fetch_add(1, Ordering::Relaxed);
                let b = to_bytes(&path);
                let prev = known.get_mut(&PathDigest::of(b)).map(|(stamp, seen)| {
                    met += usize::from(!*seen);
                    *seen = true;
                    &*stamp
                });
                if capture::differs(prev, &metadata) {
                    self.sched.submit(b.to_vec(), at, Change::Scan);
                }
            }
            ScanItem::Error { path, error } => {
                let b = to_bytes(&path).to_vec();
                if error.kind() == std::io::ErrorKind::NotFound {
                    self.sched.submit(b, at, Change::Scan);
                } else {
                    self.problem(format!("cannot read {}: {error}", path.display()));
                    // What is below an unreadable directory is not deleted.
                    if let Some((_, seen)) = known.get_mut(&PathDigest::of(&b)) {
                        met += usize::from(!*seen);
                        *seen = true;
                    }
                    unreadable.push(b);
                }
            }
        });
        if self.stopping.load(Ordering::Relaxed) {
            return;
        }
        // Known when the walk began and not met by it: gone (or moved).
        // Paths the journal learnt during the walk are not in `known`.
        // Read only when there are some (a first pass of new files, or a
        // restart with nothing deleted, has none).
        if met == known.len() {
            return;
        }
        let gone = self.journal.for_each_known_under(&base, |p, _| {
            let unmet = known.get(&PathDigest::of(p)).is_some_and(|(_, seen)| !seen);
            if unmet && !unreadable.iter().any(|u| rewind_core::path::is_under(p, u)) {
                self.sched.submit(p.to_vec(), at, Change::Scan);
            }
        });
        if let Err(e) = gone {
            self.problem(format!("rescan of {}: {e}", root.display()));
        }
    }
}

/// A path as a rescan remembers it: 128 bits of its BLAKE3 hash (the
/// plain chunk id of its bytes; two paths of one tree sharing it is beyond
/// any real chance).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct PathDigest(u128);

impl PathDigest {
    fn of(path: &[u8]) -> PathDigest {
        let h = rewind_core::ChunkId::of(path);
        let mut b = [0u8; 16];
        b.copy_from_slice(&h.0[..16]);
        PathDigest(u128::from_le_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_reads_are_retried_often_within_the_staleness_bound_then_rarely() {
        let busy = Duration::from_secs(2);
        let ms = Duration::from_millis;
        // Soon at first, doubling.
        assert_eq!(retry_delay(1, ms(0), busy), ms(10));
        assert_eq!(retry_delay(2, ms(10), busy), ms(20));
        assert_eq!(retry_delay(5, ms(150), busy), ms(160));
        // Seven races in a row used to mean a wait of 640 ms, then 1.28 s
        // and 2 s: past the bound of busy_interval + 1 s. While racing for
        // less than busy_interval the wait stays at an eighth of it.
        let mut waited = Duration::ZERO;
        for n in 1..=20 {
            let d = retry_delay(n, waited, busy);
            if waited < busy {
                assert!(d <= ms(250), "race {n} after {waited:?}: {d:?}");
            }
            waited += d;
        }
        // A file written without pause backs off to busy_interval.
        assert_eq!(retry_delay(30, Duration::from_secs(5), busy), busy);
        // A tiny busy_interval never makes a retry sooner than 10 ms.
        assert_eq!(retry_delay(9, ms(1), ms(16)), ms(10));
    }
}
