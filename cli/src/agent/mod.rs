//! The agent behind `rewind watch`: sources → capture → journal → uploader.
//!
//! ```text
//! watcher ──Changed──▶ scheduler ──▶ capture workers ──▶ journal ──▶ uploader ──▶ repository
//!         ──Rescan───▶ scanner thread ─┘ (first pass, overflow, new dirs)
//! control socket ◀── `rewind status` from another terminal
//! ```
//!
//! Each queued path carries what is known about its change
//! ([`capture::Change`]): attribute events only, a scan's difference, or
//! possibly new content; capture reads the content only when it must.
//!
//! Stopping (Ctrl-C, SIGTERM): the watcher stops, queued captures finish,
//! the journal flushes, the uploader drains what is durable, then exit.

pub mod capture;
pub mod control;
pub mod dumps;
pub mod follow;
pub mod scheduler;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use crossbeam_channel::select;
use rewind_core::path::{display as show, to_bytes};
use rewind_core::{Chunker, Repository, Timestamp};
use rewind_journal::Journal;
use rewind_repo::LocalRepo;
use rewind_uploader::{UploadOptions, Uploader};
use rewind_watcher::{IgnoreRules, ScanItem, WatchEvent, WatchOptions, Watcher};
use serde::Serialize;

use crate::paths;
use crate::server::Target;
use capture::{Capturer, Change, LinkMap, Outcome};
use scheduler::Scheduler;

/// How `rewind watch` runs.
pub struct AgentOptions {
    /// Folders to protect.
    pub roots: Vec<PathBuf>,
    /// The repository: a local directory or a server.
    pub target: Target,
    /// `--exclude` globs.
    pub excludes: Vec<String>,
    /// Whether targets of symlinks pointing outside the roots are protected.
    pub follow_symlinks: follow::FollowSymlinks,
    /// Quiet time before a changed path is captured.
    pub quiescence: Duration,
    /// Longest time a busy path goes uncaptured.
    pub max_interval: Duration,
    /// Show a progress bar for the first pass.
    pub progress: bool,
    /// Exit after the first pass has been captured and uploaded.
    pub once: bool,
    /// Upload limit for a server (overrides the enrolled one).
    pub limit_upload: Option<String>,
    /// Dump jobs to run on their schedules (`rewind agent --config`).
    pub dumps: Vec<rewind_dumps::Job>,
}

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
}

/// A per-path problem, kept for `status`.
#[derive(Clone, Serialize)]
pub struct ProblemRecord {
    /// When.
    pub at: String,
    /// What.
    pub message: String,
}

pub(crate) struct Agent {
    pub journal: Journal,
    pub rules: Arc<IgnoreRules>,
    pub chunker: Chunker,
    pub sched: Scheduler,
    pub counters: Counters,
    pub problems: Mutex<Vec<ProblemRecord>>,
    pub first_pass_done: AtomicBool,
    /// Set when stopping: scans stop queueing work.
    pub stopping: AtomicBool,
    pub roots: Vec<PathBuf>,
    /// Whether links out of the roots were followed at start.
    pub follow_symlinks: follow::FollowSymlinks,
    /// The repository's directory, or the server's URL.
    pub repo_path: String,
    pub started: Timestamp,
    pub quiescence: Duration,
    pub max_interval: Duration,
    /// Consecutive captures of a path that raced a writer.
    pub races: Mutex<HashMap<Vec<u8>, u32>>,
    /// Hard-link groups seen by capture.
    pub links: LinkMap,
    /// The journal's last seq before this run: later versions were
    /// captured with the watches in place.
    pub watched_since: u64,
    /// Dump jobs: the schedule and runs asked for over the control socket.
    pub dumps: Arc<dumps::DumpService>,
    /// Encodes new chunks of files: deltas against their previous
    /// versions, a dictionary for small ones (embedded repository only: a
    /// server takes whole chunks).
    pub dict: rewind_core::FileEncoder,
}

impl Agent {
    /// A path changed while it was read: try again after the quiescence
    /// delay, doubling with each consecutive race up to `max_interval`, so a
    /// file that is written without pause (a VM image) is not re-read in a
    /// tight loop. It is captured as soon as one read sees no change.
    fn retry_raced(&self, path: Vec<u8>, at: Timestamp, change: Change) {
        let n = {
            let mut r = self.races.lock().unwrap_or_else(|e| e.into_inner());
            let n = r.entry(path.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let delay = self
            .quiescence
            .saturating_mul(1u32 << (n - 1).min(16))
            .min(self.max_interval.max(self.quiescence));
        if n == 5 {
            tracing::warn!(
                "{} keeps changing while it is read; retrying every {:?} until a read sees no change",
                show(&path),
                delay
            );
        }
        self.sched.retry_later(path, at, change, delay);
    }

    fn problem(&self, message: String) {
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

    fn worker(&self) {
        let warn = |m: String| self.warning(m);
        let note = |m: String| eprintln!("rewind: note: {m}");
        let cap = Capturer {
            journal: &self.journal,
            chunker: self.chunker,
            rules: &self.rules,
            links: &self.links,
            warn: &warn,
            note: &note,
            watched_since: self.watched_since,
            dict: Some(&self.dict),
        };
        while let Some((path, at, change)) = self.sched.next() {
            let p = rewind_core::path::from_bytes(&path);
            tracing::debug!("capturing {} ({change:?})", show(&path));
            match cap.capture(&p, at, change) {
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
                    if self.follow_symlinks == follow::FollowSymlinks::OutsideRoots
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
    fn rescan(&self, root: &Path, at: Timestamp) {
        let base = to_bytes(root).to_vec();
        let known: HashMap<Vec<u8>, rewind_journal::PathState> =
            match self.journal.known_under(&base) {
                Ok(k) => k.into_iter().collect(),
                Err(e) => {
                    self.problem(format!("rescan of {}: {e}", root.display()));
                    return;
                }
            };
        let mut seen: HashSet<Vec<u8>> = HashSet::with_capacity(known.len());
        let mut unreadable: Vec<Vec<u8>> = Vec::new();
        if std::fs::symlink_metadata(root).is_err() {
            self.sched.submit(base.clone(), at, Change::Scan);
            return;
        }
        rewind_watcher::scan(root, &self.rules, |item| match item {
            _ if self.stopping.load(Ordering::Relaxed) => {}
            ScanItem::Entry { path, metadata } => {
                self.counters.scanned.fetch_add(1, Ordering::Relaxed);
                let b = to_bytes(&path).to_vec();
                if capture::differs(known.get(&b), &metadata) {
                    self.sched.submit(b.clone(), at, Change::Scan);
                }
                seen.insert(b);
            }
            ScanItem::Error { path, error } => {
                let b = to_bytes(&path).to_vec();
                if error.kind() == std::io::ErrorKind::NotFound {
                    self.sched.submit(b, at, Change::Scan);
                } else {
                    self.problem(format!("cannot read {}: {error}", path.display()));
                    // What is below an unreadable directory is not deleted.
                    seen.insert(b.clone());
                    unreadable.push(b);
                }
            }
        });
        if self.stopping.load(Ordering::Relaxed) {
            return;
        }
        for p in known.keys() {
            if !seen.contains(p) && !unreadable.iter().any(|u| rewind_core::path::is_under(p, u)) {
                self.sched.submit(p.clone(), at, Change::Scan);
            }
        }
    }
}

/// Run the agent until Ctrl-C / SIGTERM.
/// Open the journal; if its files are damaged beyond use, move them aside
/// (kept for inspection) and start a new one, which the caller rebuilds from
/// the repository plus a rescan.
pub(crate) fn open_journal(jdir: &std::path::Path, client: &str) -> Result<Journal> {
    match Journal::open(jdir, client) {
        Ok(j) => Ok(j),
        Err(e) if e.is_damage() => {
            let aside = jdir.join(format!("damaged-{}", rewind_core::Timestamp::now().0));
            rewind_core::private::create_dir_all(&aside)
                .with_context(|| format!("cannot create {}", aside.display()))?;
            for part in ["db", "spool"] {
                let from = jdir.join(part);
                if from.exists() {
                    std::fs::rename(&from, aside.join(part)).with_context(|| {
                        format!("cannot move the damaged journal {}", from.display())
                    })?;
                }
            }
            eprintln!(
                "rewind: the journal in {} is damaged ({e}); moved it to {} and rebuilding it \
                 from the repository",
                jdir.display(),
                aside.display()
            );
            Ok(Journal::open(jdir, client)?)
        }
        Err(e) => Err(e.into()),
    }
}

/// The repository the agent protects into.
pub(crate) struct OpenedTarget {
    pub(crate) repo: Arc<dyn Repository>,
    /// Where capture hands chunks directly: the embedded repository, or
    /// the server while it keeps up.
    pub(crate) sink: Option<Arc<dyn rewind_core::ChunkSink>>,
    /// Repository id (names the journal directory).
    id: String,
    pub(crate) chunker: rewind_core::ChunkerParams,
    /// The client name a server knows this machine by.
    client: Option<String>,
    /// A local repository's directory (never captured).
    local_path: Option<PathBuf>,
    /// For `status`: the directory or the URL.
    describe: String,
    pub(crate) upload: UploadOptions,
}

fn open_target(target: &Target, limit_upload: Option<&str>) -> Result<OpenedTarget> {
    match target {
        Target::Local(dir) => {
            let repo = if dir.join("config").exists() {
                LocalRepo::open_writer(dir)?
            } else {
                rewind_core::private::create_dir_all(dir)
                    .with_context(|| format!("cannot create repository {}", dir.display()))?;
                let r = LocalRepo::init(dir, rewind_core::DEFAULT_CHUNKER)?;
                eprintln!("rewind: created repository {}", dir.display());
                r
            };
            // Chunks reach the repository from capture in this process (or
            // from our own CRC-checked spool): decoding each one again only
            // to re-hash it would cost about a tenth of the first pass
            // (measured, docs/decisions.md).
            repo.set_check_puts(false);
            let path = dir.canonicalize().unwrap_or(dir.clone());
            let repo = Arc::new(repo);
            Ok(OpenedTarget {
                id: repo.id().to_string(),
                chunker: repo.chunker(),
                repo: repo.clone(),
                sink: Some(repo),
                client: None,
                describe: path.to_string_lossy().into_owned(),
                local_path: Some(path),
                upload: UploadOptions::default(),
            })
        }
        Target::Server(remote) => {
            let mut remote = (**remote).clone();
            if let Some(l) = limit_upload {
                remote.limit = Some(
                    rewind_remote::RateSchedule::parse(l)
                        .map_err(|e| anyhow::anyhow!("--limit-upload: {e}"))?,
                );
            }
            let r = remote.connect()?;
            let info = remote.info(&r)?;
            let r = Arc::new(r);
            Ok(OpenedTarget {
                id: info.repo_id.clone(),
                chunker: info.chunker,
                repo: r.clone(),
                sink: Some(r),
                client: Some(info.client.clone()),
                local_path: None,
                describe: remote.cfg.url.clone(),
                upload: UploadOptions::remote(),
            })
        }
    }
}

/// Open the repository and the journal beside it for capturing: the
/// agent's start, and a dump run with no agent. A fresh journal continues
/// the sequence numbers the repository holds for this client and, for
/// `roots`, starts from the repository's newest states.
pub(crate) fn open_for_capture(
    target: &Target,
    limit_upload: Option<&str>,
    roots: &[PathBuf],
) -> Result<(OpenedTarget, Journal, PathBuf)> {
    let opened = open_target(target, limit_upload)?;
    let repo = opened.repo.clone();
    let jdir = paths::journal_dir(&opened.id)?;
    // State written before everything was private (issue 21).
    rewind_core::private::tighten_if_loose(&paths::state_dir()?, "agent state");
    rewind_core::private::create_dir_all(&jdir)
        .with_context(|| format!("cannot create {}", jdir.display()))?;
    let client = opened
        .client
        .clone()
        .unwrap_or_else(|| paths::client_name(&jdir));
    let journal = open_journal(&jdir, &client)?;
    let fresh = journal.durable_seq() == 0 && journal.stats()?.known_paths == 0;
    // A fresh journal beside a repository that already has versions of
    // this client (state dir lost or moved, journal rebuilt) must not reuse
    // their numbers, and starts from the repository's newest states so the
    // first pass captures only what differs.
    let held = match repo.stats() {
        Ok(st) => st
            .max_seq
            .iter()
            .find(|(c, _)| c == journal.client())
            .map_or(0, |(_, s)| *s),
        // Offline with a journal that knows its numbers: go on capturing.
        Err(e) if e.is_transient() && !fresh => {
            eprintln!("rewind: {e}; capturing locally until it is back");
            journal.skip_reserved()?;
            0
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(
                "a new journal needs the repository once, to continue its sequence numbers",
            ));
        }
    };
    journal.skip_to(held)?;
    if fresh && held > 0 {
        let mut states = Vec::new();
        for root in roots {
            let at = rewind_core::Timestamp::MAX;
            for v in repo.tree_at(journal.client(), rewind_core::path::to_bytes(root), at)? {
                if let rewind_core::Entry::Present {
                    meta,
                    chunks,
                    xattrs,
                } = v.entry
                {
                    let st = rewind_journal::PathState {
                        meta,
                        chunks,
                        xattrs,
                        seq: v.seq,
                    };
                    states.push((v.path, st));
                }
            }
        }
        let n = states.len();
        journal.import_states(states)?;
        eprintln!("rewind: journal rebuilt from the repository ({n} paths); checking for changes");
    }
    crate::server::write_private(&jdir.join("client"), journal.client().as_bytes())?;
    Ok((opened, journal, jdir))
}

pub fn run(opts: AgentOptions) -> Result<i32> {
    let mut roots = Vec::new();
    for r in &opts.roots {
        let c = r
            .canonicalize()
            .with_context(|| format!("cannot protect {}", r.display()))?;
        if !c.is_dir() {
            bail!("cannot protect {}: not a directory", r.display());
        }
        roots.push(c);
    }
    let (opened, journal, jdir) =
        open_for_capture(&opts.target, opts.limit_upload.as_deref(), &roots)?;
    let repo = opened.repo.clone();
    // Where the repository and the agent's state live (never protected).
    let state_dir = paths::state_dir()?;
    let mut ignored = vec![state_dir.canonicalize().unwrap_or(state_dir)];
    ignored.extend(opened.local_path.clone());
    let mut rules = IgnoreRules::new(&roots, &opts.excludes, &ignored)?;
    if opts.follow_symlinks == follow::FollowSymlinks::OutsideRoots {
        let found = follow::find(&roots, &rules, &ignored);
        for n in &found.notes {
            eprintln!("rewind: symlink {n}");
        }
        let extra = found.roots();
        if !extra.is_empty() {
            for r in &extra {
                eprintln!(
                    "rewind: following symlinks out of the protected folders: protecting {}",
                    r.display()
                );
            }
            roots.extend(extra);
            rules = IgnoreRules::with_only(&roots, &opts.excludes, &ignored, &found.only())?;
        }
    }
    let rules = Arc::new(rules);
    journal.set_roots(&roots)?;
    let cfg = crate::commands::AgentConfig {
        roots: roots.clone(),
        excludes: opts.excludes.clone(),
    };
    crate::server::write_private(&jdir.join("agent.json"), &serde_json::to_vec_pretty(&cfg)?)?;
    let chunker = Chunker::new(opened.chunker);
    // With the sink the uploader takes chunks straight from capture, so each
    // byte is written once (docs/decisions.md, "One owner of repository writes").
    let uploader = Uploader::start(
        journal.clone(),
        repo.clone(),
        opened.sink.clone(),
        opened.upload.clone(),
    );

    // An agent may run dump jobs only, with no folder to watch.
    let (watcher, events) = if roots.is_empty() {
        (None, crossbeam_channel::never())
    } else {
        let mut wopts = WatchOptions::new(roots.clone(), rules.clone());
        wopts.quiescence = opts.quiescence;
        wopts.max_interval = opts.max_interval;
        let (w, e) = Watcher::start(wopts)?;
        (Some(w), e)
    };
    let dump_service = Arc::new(dumps::DumpService::new(
        journal.clone(),
        chunker,
        repo.clone(),
        opts.dumps.clone(),
    ));

    let agent = Arc::new(Agent {
        journal: journal.clone(),
        rules,
        chunker,
        sched: Scheduler::default(),
        counters: Counters::default(),
        problems: Mutex::new(Vec::new()),
        first_pass_done: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
        roots: roots.clone(),
        follow_symlinks: opts.follow_symlinks,
        repo_path: opened.describe.clone(),
        started: Timestamp::now(),
        quiescence: opts.quiescence,
        max_interval: opts.max_interval,
        races: Mutex::new(HashMap::new()),
        links: LinkMap::default(),
        watched_since: journal.durable_seq(),
        dumps: dump_service.clone(),
        dict: rewind_core::FileEncoder::new(repo.clone(), journal.dictionary().unwrap_or(None)),
    });
    let uploader = Arc::new(Mutex::new(Some(uploader)));
    let control = control::serve(&paths::socket_path(&jdir), agent.clone(), uploader.clone())?;

    // Two capture workers per core would only contend for the disk; one
    // per core keeps hashing and compression on both cores.
    let nworkers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2);
    let mut workers = Vec::new();
    for i in 0..nworkers {
        let a = agent.clone();
        workers.push(
            std::thread::Builder::new()
                .name(format!("capture-{i}"))
                .spawn(move || a.worker())?,
        );
    }

    let (rescan_tx, rescan_rx) = crossbeam_channel::unbounded::<(PathBuf, Timestamp)>();
    // Wakes the loop below when the first pass ends (`--once` exits then).
    let (pass_tx, mut pass_done) = crossbeam_channel::bounded::<()>(1);
    let scanner = {
        let a = agent.clone();
        let roots = roots.clone();
        let progress = opts.progress;
        std::thread::Builder::new()
            .name("scanner".into())
            .spawn(move || {
                first_pass(&a, &roots, progress);
                let _ = pass_tx.send(());
                drop(pass_tx);
                for (p, at) in rescan_rx {
                    a.rescan(&p, at);
                }
            })?
    };

    for r in &roots {
        eprintln!("rewind: protecting {}", r.display());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let dump_thread = if opts.dumps.iter().any(|j| j.schedule.is_some()) {
        for j in &opts.dumps {
            if let Some(s) = &j.config.schedule {
                eprintln!("rewind: dump job {} runs {s}", j.name());
            }
        }
        let d = dump_service.clone();
        let stop = stop.clone();
        Some(
            std::thread::Builder::new()
                .name("dumps".into())
                .spawn(move || d.schedule_loop(&stop))?,
        )
    } else {
        None
    };
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    while !stop.load(Ordering::Relaxed) {
        if opts.once && agent.first_pass_done.load(Ordering::Relaxed) {
            break;
        }
        select! {
            recv(events) -> ev => match ev {
                Ok(WatchEvent::Changed { path, observed_at, content }) => {
                    let change = if content { Change::Content } else { Change::Metadata };
                    agent.sched.submit(to_bytes(&path).to_vec(), Timestamp::from_system(observed_at), change);
                }
                Ok(WatchEvent::Rescan { path, observed_at, reason }) => {
                    if reason == rewind_watcher::RescanReason::Overflow {
                        tracing::info!("events were lost (queue overflow); rescanning {}", path.display());
                    } else {
                        tracing::debug!("rescan of {} ({reason:?})", path.display());
                    }
                    let _ = rescan_tx.send((path, Timestamp::from_system(observed_at)));
                }
                Ok(WatchEvent::Warning(w)) => agent.problem(w),
                Err(_) => {
                    agent.problem("the file watcher stopped".into());
                    break;
                }
            },
            recv(pass_done) -> _ => pass_done = crossbeam_channel::never(),
            default(Duration::from_millis(200)) => {}
        }
    }
    if !opts.once {
        eprintln!("rewind: stopping (finishing captures and uploads)");
    }
    if let Some(w) = watcher {
        w.stop();
    }
    // Running dumps are killed and stored as failed runs.
    dump_service.shutdown(Duration::from_secs(30));
    if let Some(t) = dump_thread {
        let _ = t.join();
    }
    drop(rescan_tx);
    agent.stopping.store(true, Ordering::Relaxed);
    // Captures already queued get a little time to finish; whatever is
    // left is found again by the next start's first pass.
    agent.sched.wait_idle(Duration::from_secs(10));
    agent.sched.stop();
    let _ = scanner.join();
    for w in workers {
        let _ = w.join();
    }
    if let Some(d) = agent.dict.id() {
        journal.set_dictionary(&d)?;
    }
    journal.flush()?;
    if let Some(u) = uploader.lock().unwrap_or_else(|e| e.into_inner()).take() {
        u.stop();
    }
    control.stop();
    journal.close()?;
    let st = journal.stats()?;
    if st.versions_waiting > 0 {
        eprintln!(
            "rewind: {} versions wait in the journal and will be uploaded on the next start",
            st.versions_waiting
        );
    }
    let errors = agent.counters.errors.load(Ordering::Relaxed);
    let warnings = agent.counters.warnings.load(Ordering::Relaxed);
    if opts.once && errors > 0 {
        eprintln!("rewind: {errors} paths could not be captured (see above)");
        return Ok(3);
    }
    if opts.once && warnings > 0 {
        eprintln!("rewind: {warnings} metadata items could not be captured (see above)");
        return Ok(3);
    }
    Ok(0)
}

fn first_pass(agent: &Agent, roots: &[PathBuf], progress: bool) {
    let started = Instant::now();
    let bar = progress.then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(Duration::from_millis(120));
        b
    });
    let done = AtomicBool::new(false);
    let _complete = std::thread::scope(|s| {
        if let Some(b) = &bar {
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    let c = &agent.counters;
                    b.set_message(format!(
                        "first pass: {} scanned, {} captured, {} read",
                        c.scanned.load(Ordering::Relaxed),
                        c.captured.load(Ordering::Relaxed),
                        indicatif::HumanBytes(c.bytes_read.load(Ordering::Relaxed)),
                    ));
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        let at = Timestamp::now();
        for r in roots {
            agent.rescan(r, at);
        }
        let complete = agent.sched.wait_idle(Duration::from_secs(365 * 86400));
        let _ = agent.journal.flush();
        done.store(true, Ordering::Relaxed);
        complete
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if agent.stopping.load(Ordering::Relaxed) {
        eprintln!("rewind: first pass interrupted; the next start goes on from here");
        return;
    }
    agent.first_pass_done.store(true, Ordering::Relaxed);
    let c = &agent.counters;
    eprintln!(
        "rewind: first pass complete: {} paths scanned, {} versions captured, {} read in {:.1}s",
        c.scanned.load(Ordering::Relaxed),
        c.captured.load(Ordering::Relaxed),
        indicatif::HumanBytes(c.bytes_read.load(Ordering::Relaxed)),
        started.elapsed().as_secs_f64()
    );
}
