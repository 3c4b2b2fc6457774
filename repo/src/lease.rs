//! The writer lease of a repository on an object store
//! (docs/decisions.md, "Object storage (issue 20), step 2: the writer
//! lease"). A directory has `flock` on `DIR/lock`; a store has no lock that
//! dies with its process, so a writer holds the object `PREFIX/lock` for a
//! limited time and keeps renewing it.
//!
//! The object is JSON: `{"holder":"<32 hex, random per writer>","host":…,
//! "pid":…,"taken":<ns>,"expires":<ns>}` (times in nanoseconds since the
//! Unix epoch, wall clock of the holder), and `"released":true` once its
//! holder let it go (its `expires` is then the moment of release, so a
//! writer that does not know the field sees it expired too).
//!
//! # Guarantees
//!
//! - A lease is taken only when there is none or the one there has
//!   expired: with `If-None-Match: *` where the store honours it, and an
//!   expired one is replaced with `If-Match: <its ETag>` where the store
//!   honours that, so of two writers racing for it exactly one wins.
//! - Whether the store honours the two conditions is found by a probe at
//!   every take (a fresh object put twice if absent, then once with an
//!   ETag that cannot match: both second writes must be refused). Where a
//!   condition is ignored, the writer writes its own lease, waits the
//!   settle period, reads it back and goes on only if its holder id is
//!   still there (safe as long as no other writer takes longer than the
//!   settle period between reading the lease and writing its own).
//! - The lease is renewed every third of its expiry, conditionally on the
//!   ETag of the last renewal (or, where `If-Match` is ignored, after
//!   reading back that it is still ours). A writer whose lease was taken
//!   over fails every later write with [`RepoError::Locked`] naming the
//!   new holder, for good.
//! - A writer whose last successful renewal was sent more than three
//!   quarters of the expiry ago writes nothing more (an I/O error that
//!   says so) until a renewal succeeds, so it stops a quarter of the
//!   expiry before anyone else may take the lease over; clocks of the hosts
//!   involved must agree within that quarter (15 s of the default 60 s).
//! - Dropping the lease stops its renewals and releases it, without ever
//!   touching a successor's lease, even when the request reaches the store
//!   late: where `If-Match` is honoured the object is overwritten, on the
//!   ETag of our last write, with a record marked released (which the next
//!   writer takes at once); elsewhere it is read and, still ours and still
//!   valid, deleted (a DELETE held past our expiry could remove a
//!   successor's lease there; docs/decisions.md, "Late requests (issue
//!   20)").
//!
//! # After a crash
//!
//! The lease object stays until it expires (60 s by default); until then
//! other writers are refused with a message that names its host, pid and
//! expiry; after it, the next writer takes it over. A crashed probe leaves
//! a small `PREFIX/lock.probe-<hex>` object that nothing reads.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rewind_core::{RepoError, Timestamp};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::backend::{Leasing, PutIf, Written};

/// How long a lease lasts without renewal. A writer killed without a
/// chance to delete its lease blocks the next one for at most this long;
/// shorter makes every writer renew more often (one PUT per third of it)
/// and tolerate shorter outages of the store. 60 s is what Consul and
/// etcd clients commonly use for session TTLs; the tests shorten it.
const DEFAULT_EXPIRY: Duration = Duration::from_secs(60);

/// How long a writer on a store that ignores conditional writes waits
/// between writing its lease and reading it back. It must be longer than
/// any other writer's gap between reading the lease and writing its own:
/// two requests to a store on the same network take milliseconds, and
/// object_store's retries of a slow PUT can take longer, so the settle
/// period is a guard against the common case, not a proof (see the
/// module doc).
const DEFAULT_SETTLE: Duration = Duration::from_secs(2);

/// The environment variable that sets the expiry, in whole seconds.
pub(crate) const EXPIRY_VAR: &str = "REWIND_S3_LEASE_SECS";

/// The environment variable that sets the settle period, in milliseconds.
pub(crate) const SETTLE_VAR: &str = "REWIND_S3_LEASE_SETTLE_MS";

/// Tries to take a lease that keeps changing hands before giving up.
const ATTEMPTS: usize = 3;

/// How long a lease lasts and how a writer takes it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LeaseSettings {
    /// How long a lease lasts without renewal.
    pub(crate) expiry: Duration,
    /// The wait between writing a lease and reading it back on a store
    /// that ignores conditional writes.
    pub(crate) settle: Duration,
}

impl LeaseSettings {
    /// The defaults, changed by [`EXPIRY_VAR`] and [`SETTLE_VAR`]; an
    /// unreadable value is an error naming the variable.
    pub(crate) fn from_env(repo: &Path) -> Result<LeaseSettings, RepoError> {
        let mut s = LeaseSettings::defaults();
        if let Some(v) = var(EXPIRY_VAR) {
            match v.trim().parse::<u64>() {
                Ok(n) if (1..=86_400).contains(&n) => s.expiry = Duration::from_secs(n),
                _ => {
                    return Err(bad_setting(
                        repo,
                        format!("{EXPIRY_VAR}={v}: not a whole number of seconds from 1 to 86400"),
                    ));
                }
            }
        }
        if let Some(v) = var(SETTLE_VAR) {
            match v.trim().parse::<u64>() {
                Ok(n) if n <= 600_000 => s.settle = Duration::from_millis(n),
                _ => {
                    return Err(bad_setting(
                        repo,
                        format!(
                            "{SETTLE_VAR}={v}: not a whole number of milliseconds from 0 to 600000"
                        ),
                    ));
                }
            }
        }
        Ok(s)
    }

    fn defaults() -> LeaseSettings {
        if cfg!(test) {
            // The crate's unit tests cannot set the environment safely
            // (they run in parallel threads); a short lease lets them see
            // renewals and takeovers in seconds, long enough that a loaded
            // machine still renews in time.
            LeaseSettings {
                expiry: Duration::from_secs(6),
                settle: Duration::from_millis(300),
            }
        } else {
            LeaseSettings {
                expiry: DEFAULT_EXPIRY,
                settle: DEFAULT_SETTLE,
            }
        }
    }

    /// How long after sending a renewal the holder may still write.
    fn validity(&self) -> Duration {
        self.expiry * 3 / 4
    }

    /// The time between renewals.
    fn interval(&self) -> Duration {
        self.expiry / 3
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn bad_setting(repo: &Path, msg: String) -> RepoError {
    RepoError::Io {
        path: repo.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, msg),
    }
}

/// The content of the lease object.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    holder: String,
    host: String,
    pid: u32,
    taken: Timestamp,
    expires: Timestamp,
    /// Let go by its holder: free to take at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    released: bool,
}

impl Record {
    fn bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a lease record serializes")
    }

    fn parse(lock: &Path, bytes: &[u8]) -> Result<Record, RepoError> {
        serde_json::from_slice(bytes).map_err(|e| RepoError::Corrupt {
            path: lock.to_path_buf(),
            reason: format!(
                "not a writer lease ({e}); delete it if no writer of this repository is running"
            ),
        })
    }

    /// This record renewed at `now`.
    fn renewed(&self, now: Timestamp, expiry: Duration) -> Record {
        let ns = i64::try_from(expiry.as_nanos()).unwrap_or(i64::MAX);
        Record {
            expires: Timestamp(now.0.saturating_add(ns)),
            ..self.clone()
        }
    }

    /// This record let go of at `now`.
    fn released(&self, now: Timestamp) -> Record {
        Record {
            expires: now,
            released: true,
            ..self.clone()
        }
    }

    fn expired(&self, now: Timestamp) -> bool {
        self.released || now > self.expires
    }

    /// For people: who holds it, since when, until when.
    fn describe(&self, lock: &Path) -> String {
        if self.released {
            return format!(
                "lease {} released by host {}, pid {} at {}",
                lock.display(),
                self.host,
                self.pid,
                self.expires
            );
        }
        format!(
            "lease {} held by host {}, pid {} since {}; it expires at {} unless renewed",
            lock.display(),
            self.host,
            self.pid,
            self.taken,
            self.expires
        )
    }
}

/// This machine's name, for people reading a lease.
fn host() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .chain(var("HOSTNAME"))
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "(unknown host)".into())
}

/// Which conditions of a write the store honours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Honours {
    /// `If-None-Match: *`.
    pub(crate) create: bool,
    /// `If-Match: <ETag>`.
    pub(crate) update: bool,
}

/// Find out which conditions the store at `repo` honours, with a fresh
/// object `repo/lock.probe-<tag>` (deleted afterwards).
pub(crate) fn probe(objects: &dyn Leasing, repo: &Path, tag: &str) -> io::Result<Honours> {
    let p = repo.join(format!("lock.probe-{tag}"));
    let found = (|| -> io::Result<Honours> {
        // Refused here means only that our own write landed and its answer
        // was lost: object_store sends a request again when the connection
        // drops before the answer, and the name is fresh and random, so
        // nobody else writes it (found by tests/s3_faults.rs, whose proxy
        // cuts answers).
        objects.put_if(&p, b"1".to_vec(), PutIf::Absent)?;
        let create = objects.put_if(&p, b"2".to_vec(), PutIf::Absent)? == Written::Refused;
        let never = PutIf::Matches(format!("\"{}\"", "0".repeat(32)));
        let update = objects.put_if(&p, b"3".to_vec(), never)? == Written::Refused;
        Ok(Honours { create, update })
    })();
    let gone = objects.delete(&p);
    let found = found.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
    if let Err(e) = gone {
        warn!(object = %p.display(), "could not delete the lease probe: {e}");
    }
    Ok(found)
}

/// What the renewals found.
struct Held {
    /// The ETag of our last write of the lease, when the store gave one.
    etag: Option<String>,
    /// Writes stop at this moment unless a renewal succeeds.
    valid_until: Instant,
    /// When the last renewal succeeded.
    renewed: Timestamp,
    /// Set when another writer took the lease over (who, for people).
    lost: Option<String>,
}

/// What a lease and its renewal thread share.
struct Shared {
    objects: &'static dyn Leasing,
    repo: PathBuf,
    lock: PathBuf,
    me: Record,
    settings: LeaseSettings,
    honours: Honours,
    held: Mutex<Held>,
    /// Tests: renewals are skipped (a writer cut off from the store).
    paused: AtomicBool,
    /// Tests: dropped without deleting the object (a killed writer).
    abandoned: AtomicBool,
}

/// A writer's lease on `PREFIX/lock`, renewed by a thread of its own
/// until dropped.
pub(crate) struct Lease {
    shared: Arc<Shared>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("lock", &self.shared.lock)
            .field("holder", &self.shared.me.holder)
            .finish()
    }
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> RepoError + '_ {
    move |source| RepoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn locked(repo: &Path, lock: &Path, holder: String) -> RepoError {
    RepoError::Locked {
        path: repo.to_path_buf(),
        lock: lock.to_path_buf(),
        holder,
    }
}

impl Lease {
    /// Take the lease of the repository at `repo` ([`RepoError::Locked`]
    /// naming the holder when another writer's lease has not expired).
    pub(crate) fn take(
        objects: &'static dyn Leasing,
        repo: &Path,
        settings: LeaseSettings,
    ) -> Result<Lease, RepoError> {
        let lock = repo.join("lock");
        let err = io_at(&lock);
        let holder = hex::encode(rand::random::<[u8; 16]>());
        let honours = probe(objects, repo, &holder).map_err(io_at(repo))?;
        if !honours.create || !honours.update {
            warn!(
                repo = %repo.display(),
                if_none_match = honours.create,
                if_match = honours.update,
                "the object store ignores conditional writes: the writer lease is taken by writing, waiting {:?} and reading back",
                settings.settle
            );
        }
        let taken = Timestamp::now();
        let me = Record {
            holder,
            host: host(),
            pid: std::process::id(),
            taken,
            expires: taken,
            released: false,
        };
        let mut seen = None;
        for _ in 0..ATTEMPTS {
            let sent = Instant::now();
            let mine = me.renewed(Timestamp::now(), settings.expiry);
            if honours.create {
                match objects
                    .put_if(&lock, mine.bytes(), PutIf::Absent)
                    .map_err(&err)?
                {
                    Written::Yes(tag) => {
                        return Ok(Self::start(objects, repo, me, settings, honours, tag, sent));
                    }
                    Written::Refused => {}
                }
            }
            let there = objects.get_tagged(&lock).map_err(&err)?;
            let tag = match there {
                // Released in between: try again.
                None if honours.create => continue,
                None => None,
                Some((bytes, tag)) => {
                    let theirs = Record::parse(&lock, &bytes)?;
                    if theirs.holder == me.holder {
                        // Our own write, answered as refused after a retry.
                        return Ok(Self::start(objects, repo, me, settings, honours, tag, sent));
                    }
                    if !theirs.expired(Timestamp::now()) {
                        return Err(locked(repo, &lock, theirs.describe(&lock)));
                    }
                    if theirs.released {
                        info!(repo = %repo.display(), "taking the writer lease ({})", theirs.describe(&lock));
                    } else {
                        info!(
                            repo = %repo.display(),
                            "taking over an expired writer lease ({})",
                            theirs.describe(&lock)
                        );
                    }
                    seen = Some(theirs);
                    tag
                }
            };
            if honours.update
                && let Some(tag) = tag
            {
                // Validity counts from the write that takes it, not from
                // the first try: the read before it may have been slow (a
                // store that held it past the client's timeout), and
                // `expires` must stay a quarter beyond the validity.
                let sent = Instant::now();
                let mine = me.renewed(Timestamp::now(), settings.expiry);
                match objects
                    .put_if(&lock, mine.bytes(), PutIf::Matches(tag))
                    .map_err(&err)?
                {
                    Written::Yes(tag) => {
                        return Ok(Self::start(objects, repo, me, settings, honours, tag, sent));
                    }
                    // Renewed or taken by someone else meanwhile.
                    Written::Refused => continue,
                }
            }
            return Self::claim(objects, repo, me, settings, honours);
        }
        let why = match seen {
            Some(r) => format!(
                "{}; it changed hands while this writer tried to take it",
                r.describe(&lock)
            ),
            None => format!(
                "lease {} changed hands {ATTEMPTS} times while this writer tried to take it",
                lock.display()
            ),
        };
        Err(locked(repo, &lock, why))
    }

    /// On a store that ignores a condition: write the lease, wait the
    /// settle period, and go on only if it is still ours.
    fn claim(
        objects: &'static dyn Leasing,
        repo: &Path,
        me: Record,
        settings: LeaseSettings,
        honours: Honours,
    ) -> Result<Lease, RepoError> {
        let lock = repo.join("lock");
        let err = io_at(&lock);
        let sent = Instant::now();
        let mine = me.renewed(Timestamp::now(), settings.expiry);
        objects
            .put_if(&lock, mine.bytes(), PutIf::Always)
            .map_err(&err)?;
        std::thread::sleep(settings.settle);
        match objects.get_tagged(&lock).map_err(&err)? {
            Some((bytes, tag)) => {
                let there = Record::parse(&lock, &bytes)?;
                if there.holder == me.holder {
                    Ok(Self::start(objects, repo, me, settings, honours, tag, sent))
                } else {
                    Err(locked(repo, &lock, there.describe(&lock)))
                }
            }
            None => Err(locked(
                repo,
                &lock,
                format!(
                    "lease {} was deleted by another writer while this one took it",
                    lock.display()
                ),
            )),
        }
    }

    fn start(
        objects: &'static dyn Leasing,
        repo: &Path,
        me: Record,
        settings: LeaseSettings,
        honours: Honours,
        etag: Option<String>,
        sent: Instant,
    ) -> Lease {
        let shared = Arc::new(Shared {
            objects,
            repo: repo.to_path_buf(),
            lock: repo.join("lock"),
            me,
            settings,
            honours,
            held: Mutex::new(Held {
                etag,
                valid_until: sent + settings.validity(),
                renewed: Timestamp::now(),
                lost: None,
            }),
            paused: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
        });
        let (stop, rx) = mpsc::channel::<()>();
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("rewind-lease".into())
            .spawn(move || {
                // A message or a dropped sender both mean stop.
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    rx.recv_timeout(s.settings.interval())
                {
                    s.renew();
                }
            });
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                // Without renewals the lease lapses and writes stop: safe.
                warn!(lock = %shared.lock.display(), "cannot start the lease renewal thread: {e}");
                None
            }
        };
        info!(lock = %shared.lock.display(), holder = %shared.me.holder, "took the writer lease");
        Lease {
            shared,
            stop: Some(stop),
            thread,
        }
    }

    /// Whether this writer may still write: an error once the lease was
    /// taken over (for good) or has lapsed (until a renewal succeeds).
    pub(crate) fn check(&self) -> Result<(), RepoError> {
        let s = &self.shared;
        let held = s.held();
        if let Some(who) = &held.lost {
            return Err(locked(&s.repo, &s.lock, who.clone()));
        }
        if Instant::now() >= held.valid_until {
            return Err(RepoError::Io {
                path: s.lock.clone(),
                source: io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "this writer's lease was last renewed at {} and has lapsed (the object store did not answer in time); nothing more is written until a renewal succeeds",
                        held.renewed
                    ),
                ),
            });
        }
        Ok(())
    }

    /// Tests: stop or restart renewals (a writer cut off from the store).
    #[cfg(test)]
    pub(crate) fn pause(&self, on: bool) {
        self.shared.paused.store(on, Ordering::SeqCst);
    }

    /// Tests: stop renewing and leave the object behind (a killed writer).
    #[cfg(test)]
    pub(crate) fn abandon(self) {
        self.shared.abandoned.store(true, Ordering::SeqCst);
    }

    /// Which conditions the store was found to honour.
    pub(crate) fn honours(&self) -> Honours {
        self.shared.honours
    }
}

/// What one renewal found.
enum Renewal {
    Renewed(Option<String>),
    /// Our write landed but was answered as refused (a retried request):
    /// its ETag, to renew from next time.
    Ours(Option<String>),
    Lost(String),
}

impl Shared {
    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn renew(&self) {
        if self.paused.load(Ordering::SeqCst) || self.held().lost.is_some() {
            return;
        }
        let sent = Instant::now();
        let now = Timestamp::now();
        let etag = self.held().etag.clone();
        match self.try_renew(now, etag) {
            Ok(Renewal::Renewed(tag)) => {
                let mut h = self.held();
                h.etag = tag;
                h.valid_until = sent + self.settings.validity();
                h.renewed = now;
            }
            Ok(Renewal::Ours(tag)) => self.held().etag = tag,
            Ok(Renewal::Lost(who)) => {
                warn!(lock = %self.lock.display(), "this writer lost its lease: {who}");
                self.held().lost = Some(who);
            }
            Err(e) => {
                warn!(lock = %self.lock.display(), "could not renew the writer lease: {e}; writes stop when it lapses unless a renewal succeeds");
            }
        }
    }

    fn try_renew(&self, now: Timestamp, etag: Option<String>) -> Result<Renewal, RepoError> {
        let err = io_at(&self.lock);
        let mine = self.me.renewed(now, self.settings.expiry);
        if self.honours.update
            && let Some(tag) = etag
        {
            if let Written::Yes(t) = self
                .objects
                .put_if(&self.lock, mine.bytes(), PutIf::Matches(tag))
                .map_err(&err)?
            {
                return Ok(Renewal::Renewed(t));
            }
            return match self.objects.get_tagged(&self.lock).map_err(&err)? {
                Some((bytes, tag)) => {
                    let there = Record::parse(&self.lock, &bytes)?;
                    if there.holder == self.me.holder {
                        Ok(Renewal::Ours(tag))
                    } else {
                        Ok(Renewal::Lost(self.taken_over(&there)))
                    }
                }
                None => Ok(Renewal::Lost(self.deleted())),
            };
        }
        // No ETag to renew from, or a store that ignores `If-Match`: read
        // that it is still ours, then write.
        match self.objects.get_tagged(&self.lock).map_err(&err)? {
            Some((bytes, tag)) => {
                let there = Record::parse(&self.lock, &bytes)?;
                if there.holder != self.me.holder {
                    return Ok(Renewal::Lost(self.taken_over(&there)));
                }
                let cond = match tag {
                    Some(t) if self.honours.update => PutIf::Matches(t),
                    _ => PutIf::Always,
                };
                match self
                    .objects
                    .put_if(&self.lock, mine.bytes(), cond)
                    .map_err(&err)?
                {
                    Written::Yes(t) => Ok(Renewal::Renewed(t)),
                    // Changed between the read and the write: the next
                    // renewal reads it again.
                    Written::Refused => Ok(Renewal::Ours(None)),
                }
            }
            None => Ok(Renewal::Lost(self.deleted())),
        }
    }

    fn taken_over(&self, by: &Record) -> String {
        format!(
            "this writer's lease was taken over ({}); it writes nothing more",
            by.describe(&self.lock)
        )
    }

    fn deleted(&self) -> String {
        format!(
            "this writer's lease {} was deleted by someone else; it writes nothing more",
            self.lock.display()
        )
    }

    /// Let the lease go, never touching a successor's (see the module
    /// doc): overwritten with a released record on the ETag of our last
    /// write where `If-Match` is honoured, else read and deleted if still
    /// ours and valid.
    fn release(&self) {
        let (lost, etag, valid) = {
            let h = self.held();
            (
                h.lost.is_some(),
                h.etag.clone(),
                Instant::now() < h.valid_until,
            )
        };
        if lost {
            return;
        }
        let err = io_at(&self.lock);
        let r = (|| -> Result<&str, RepoError> {
            if self.honours.update
                && let Some(tag) = etag
            {
                // Conditional, so a copy of this request that reaches the
                // store after a successor took the lease is refused.
                let gone = self.me.released(Timestamp::now());
                return Ok(
                    match self
                        .objects
                        .put_if(&self.lock, gone.bytes(), PutIf::Matches(tag))
                        .map_err(&err)?
                    {
                        Written::Yes(_) => "released the writer lease",
                        Written::Refused => {
                            "left the writer lease alone: it changed since this writer's last renewal"
                        }
                    },
                );
            }
            // No condition to send it on: a DELETE only while the lease is
            // valid, so it can land late only if held longer than the
            // rest of our validity plus the quarter of the expiry before a
            // successor may take over.
            if !valid {
                return Ok("left the writer lease to expire: it lapsed before release");
            }
            match self.objects.get_tagged(&self.lock).map_err(&err)? {
                Some((bytes, _)) if Record::parse(&self.lock, &bytes)?.holder == self.me.holder => {
                    self.objects.delete(&self.lock).map_err(&err)?;
                    Ok("released the writer lease")
                }
                _ => Ok("left the writer lease alone: it is not ours any more"),
            }
        })();
        match r {
            Ok(what) => info!(lock = %self.lock.display(), "{what}"),
            Err(e) => {
                warn!("could not release the writer lease (it expires by itself): {e}")
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if !self.shared.abandoned.load(Ordering::SeqCst) {
            self.shared.release();
        }
    }
}
