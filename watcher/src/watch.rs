//! The watching machinery: notify → normalized paths → debouncer → caller.
//!
//! Threads and channels:
//!
//! ```text
//!  notify's thread ──raw (bounded, try_send)──▶ event thread ──(unbounded)──▶ debounce thread ──▶ caller
//!   reads the OS queue      full: overflow flag       watches, ignore rules      50 ms tick
//! ```
//!
//! - notify's handler never blocks: when the raw queue is full it drops the
//!   event and raises a flag that becomes a rescan of every root. Blocking
//!   there would stall notify's loop, which our own `watch()` calls wait on.
//! - Only the event thread calls `watch`/`unwatch`, in event order, so the
//!   watch bookkeeping here and notify's stay in step (see `sync_tree`).
//! - Stopping (or dropping) the [`Watcher`] disconnects a stop channel; the
//!   event thread exits and drops the notify watcher, which closes the
//!   debounce thread's input, and both are joined.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};

use crate::debounce::{Debouncer, EventClass};
use crate::error::WatchError;
use crate::event::{RescanReason, WatchEvent};
use crate::rules::{CACHEDIR_TAG_NAME, IGNORE_FILE_NAME, IgnoreRules};

/// Default quiet time before a path is reported: long enough that an
/// editor's save sequence (write temp, fsync, rename, chmod) lands in one
/// burst, short enough that capture stays within about a second (DESIGN.md).
pub const DEFAULT_QUIESCENCE: Duration = Duration::from_millis(300);

/// Default bound on how long a path that never goes quiet (a log, a
/// database, a download) waits before being reported anyway: the staleness
/// a busy file may reach (issue 16, DESIGN.md "busy_interval").
pub const DEFAULT_BUSY_INTERVAL: Duration = Duration::from_secs(2);

/// Default bound on how long a directory rescan asked for by a storm of
/// changes waits for the directory to go quiet.
pub const DEFAULT_MAX_INTERVAL: Duration = Duration::from_secs(60);

/// Default rescan period for directories we could not watch: about what a
/// scheduled backup tool would offer, at the cost of one directory walk per
/// period for each unwatched subtree.
pub const DEFAULT_UNWATCHED_RESCAN: Duration = Duration::from_secs(120);

/// Debounce tick. A report comes at most this late after its quiescence
/// ends (50 ms against the default 300 ms); the debounce thread only ticks
/// while something is pending, so an idle watcher does not wake at all.
const TICK: Duration = Duration::from_millis(50);

/// Capacity of the queue between notify's reader thread and the event
/// thread. The kernel's own inotify queue holds 16384 events by default
/// (`fs.inotify.max_queued_events`); four times that lets a burst the kernel
/// kept survive while the event thread is busy adding watches for a large
/// new tree. When it is full, events are dropped and become one rescan of
/// every root instead.
const RAW_QUEUE: usize = 65_536;

/// The sending end of the raw queue: at most [`RAW_QUEUE`] events wait, but
/// only those that wait take memory. A bounded crossbeam channel allocates
/// and writes all its slots when made: 65,536 slots of 104 bytes (a [`Raw`]
/// is 96), 6.5 MiB resident for the agent's whole life (docs/decisions.md
/// "Agent memory (issue 19), next step"). This is an unbounded channel,
/// which allocates blocks of slots as events come and frees them as they
/// are read, and a count of the events waiting.
#[derive(Clone)]
struct RawSender {
    tx: Sender<Raw>,
    queued: Arc<AtomicUsize>,
}

/// The receiving end of the raw queue; [`RawReceiver::took_one`] after
/// each event read.
struct RawReceiver {
    rx: Receiver<Raw>,
    queued: Arc<AtomicUsize>,
}

fn raw_queue() -> (RawSender, RawReceiver) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let queued = Arc::new(AtomicUsize::new(0));
    let receiver = RawReceiver {
        rx,
        queued: Arc::clone(&queued),
    };
    (RawSender { tx, queued }, receiver)
}

impl RawSender {
    /// Queue `raw` unless [`RAW_QUEUE`] events wait already.
    fn try_send(&self, raw: Raw) -> Result<(), TrySendError<Raw>> {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= RAW_QUEUE {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(TrySendError::Full(raw));
        }
        self.tx.send(raw).map_err(|e| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            TrySendError::Disconnected(e.into_inner())
        })
    }
}

impl RawReceiver {
    /// One event was read off the queue: room for another.
    fn took_one(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Entries in the content-event memo before it is emptied: enough for the
/// files a busy program writes at once, small enough (~1 MB) not to matter.
const MEMO_CAP: usize = 4_096;

/// What `sysctl` value the limit message suggests: the value most
/// distributions and IDEs (VS Code, JetBrains) recommend.
const SUGGESTED_MAX_USER_WATCHES: u64 = 524_288;

/// How to watch.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Protected roots: absolute, canonical directories.
    pub roots: Vec<PathBuf>,
    /// A path is reported after it was quiet this long (default 300 ms).
    pub quiescence: Duration,
    /// A path that never goes quiet is still reported at least this often
    /// (default 2 s), so a busy file gets versions while it stays busy.
    pub busy_interval: Duration,
    /// A directory rescan asked for by many changes at once waits at most
    /// this long for the directory to go quiet (default 60 s): listing a
    /// busy directory every few seconds would cost more than it tells.
    pub max_interval: Duration,
    /// Period of rescans for directories we could not watch (default 120 s).
    pub unwatched_rescan: Duration,
    /// Test hook: behave as if the OS refused watch number N+1 (simulates
    /// the inotify limit). Only meaningful where one watch is kept per
    /// directory (Linux).
    pub max_watches: Option<usize>,
    /// Which paths are not protected.
    pub rules: Arc<IgnoreRules>,
}

impl WatchOptions {
    /// Options with the default timings.
    pub fn new(roots: Vec<PathBuf>, rules: Arc<IgnoreRules>) -> Self {
        WatchOptions {
            roots,
            quiescence: DEFAULT_QUIESCENCE,
            busy_interval: DEFAULT_BUSY_INTERVAL,
            max_interval: DEFAULT_MAX_INTERVAL,
            unwatched_rescan: DEFAULT_UNWATCHED_RESCAN,
            max_watches: None,
            rules,
        }
    }
}

/// A running watcher. Dropping it stops it, like [`Watcher::stop`].
pub struct Watcher {
    stop: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    /// A way into the event thread for tests that need notify errors and
    /// overflows the kernel will not produce on demand.
    #[cfg(test)]
    inject: RawSender,
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher")
            .field("running", &self.stop.is_some())
            .finish_non_exhaustive()
    }
}

/// An event as notify delivered it, with the time it arrived.
type Raw = (notify::Result<Event>, Instant, SystemTime);

/// What the OS is asked to report: everything but opens and read-only
/// closes. Capture opens every file it reads, so with opens in the mask
/// each read costs the kernel an event and this process a wake-up and an
/// event to parse and drop (about 10 % of a first pass's CPU, measured).
fn watch_config() -> notify::Config {
    use notify::event::EventKindMask;
    notify::Config::default().with_event_kinds(
        EventKindMask::CREATE
            | EventKindMask::REMOVE
            | EventKindMask::ALL_MODIFY
            | EventKindMask::ACCESS_CLOSE,
    )
}

/// From the event thread to the debounce thread.
enum Notice {
    Changed(PathBuf, EventClass, Instant, SystemTime),
    Rescan(PathBuf, RescanReason, Instant, SystemTime),
    Warning(String),
    LimitReached(String),
}

impl Watcher {
    /// Start watching; events arrive on the returned channel. Watches are in
    /// place when this returns. The channel is unbounded; the debouncer
    /// keeps at most one pending report per path.
    pub fn start(opts: WatchOptions) -> Result<(Watcher, Receiver<WatchEvent>), WatchError> {
        for root in &opts.roots {
            check_root(root)?;
        }
        let (raw_tx, raw_rx) = raw_queue();
        let overflow = Arc::new(AtomicBool::new(false));
        let handler = {
            let raw_tx = raw_tx.clone();
            let overflow = Arc::clone(&overflow);
            move |res: notify::Result<Event>| {
                if let Ok(event) = &res
                    && is_read_only(event)
                {
                    return;
                }
                match raw_tx.try_send((res, Instant::now(), SystemTime::now())) {
                    Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                    Err(TrySendError::Full(_)) => overflow.store(true, Ordering::Release),
                }
            }
        };
        let first_root = opts.roots.first().cloned().unwrap_or_default();
        let watcher = RecommendedWatcher::new(handler, watch_config()).map_err(|source| {
            WatchError::Notify {
                path: first_root,
                source,
            }
        })?;
        #[cfg(not(test))]
        drop(raw_tx);

        let (notice_tx, notice_rx) = crossbeam_channel::unbounded();
        let (out_tx, out_rx) = crossbeam_channel::unbounded();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);

        let mut event_loop = EventLoop {
            watcher,
            roots: opts.roots.clone(),
            rules: Arc::clone(&opts.rules),
            max_watches: opts.max_watches,
            unwatched_rescan: opts.unwatched_rescan,
            watched: BTreeSet::new(),
            unwatched: BTreeSet::new(),
            limit_warned: false,
            warned: HashSet::new(),
            out: notice_tx,
            closed: false,
            overflow,
            next_periodic: Instant::now() + opts.unwatched_rescan,
            memo: HashMap::new(),
            long: HashMap::new(),
        };
        event_loop.watch_roots();

        let mut debouncer = Debouncer::new(opts.quiescence, opts.max_interval, opts.roots.clone());
        debouncer.busy_interval = opts.busy_interval;
        let debounce_thread = spawn("rewind-debounce", move || {
            let _ = run_debouncer(debouncer, notice_rx, out_tx);
        })?;
        // If this spawn fails, `event_loop` is dropped, which disconnects the
        // debounce thread's input and ends it.
        let event_thread = spawn("rewind-watch", move || event_loop.run(raw_rx, stop_rx))?;

        Ok((
            Watcher {
                stop: Some(stop_tx),
                threads: vec![event_thread, debounce_thread],
                #[cfg(test)]
                inject: raw_tx,
            },
            out_rx,
        ))
    }

    /// Stop all threads and watches (Drop does the same).
    pub fn stop(self) {
        drop(self);
    }

    /// Feed an event as if notify had delivered it.
    #[cfg(test)]
    pub(crate) fn inject(&self, res: notify::Result<Event>) {
        self.inject
            .try_send((res, Instant::now(), SystemTime::now()))
            .expect("event thread is running and keeping up");
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        drop(self.stop.take());
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a watcher thread panicked");
            }
        }
    }
}

fn spawn(
    name: &'static str,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, WatchError> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(|source| WatchError::Thread { name, source })
}

fn check_root(root: &Path) -> Result<(), WatchError> {
    let refuse = |kind: io::ErrorKind, msg: &str| WatchError::Root {
        path: root.to_path_buf(),
        source: io::Error::new(kind, msg.to_string()),
    };
    if !root.is_absolute() {
        return Err(refuse(io::ErrorKind::InvalidInput, "not an absolute path"));
    }
    match fs::symlink_metadata(root) {
        Ok(meta) if meta.file_type().is_dir() => Ok(()),
        Ok(_) => Err(refuse(io::ErrorKind::NotADirectory, "not a directory")),
        Err(source) => Err(WatchError::Root {
            path: root.to_path_buf(),
            source,
        }),
    }
}

/// Opens and reads change nothing (and our own capture reads would otherwise
/// feed back as events).
fn is_read_only(event: &Event) -> bool {
    matches!(event.kind, EventKind::Access(kind) if kind != AccessKind::Close(AccessMode::Write))
        && !event.need_rescan()
}

/// Runs until the event thread goes away (its sender disconnects) or the
/// caller drops the receiver (a send fails: `None`).
fn run_debouncer(
    mut debouncer: Debouncer,
    input: Receiver<Notice>,
    out: Sender<WatchEvent>,
) -> Option<()> {
    let mut next_tick = Instant::now();
    loop {
        let notice = if debouncer.is_empty() {
            Some(input.recv().ok()?)
        } else {
            match input.recv_deadline(next_tick) {
                Ok(notice) => Some(notice),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        };
        match notice {
            Some(Notice::Changed(path, class, at, wall)) => debouncer.event(path, class, at, wall),
            Some(Notice::Rescan(path, reason, at, wall)) => {
                debouncer.rescan(path, reason, at, wall)
            }
            // Warnings are not debounced.
            Some(Notice::Warning(message)) => out.send(WatchEvent::Warning(message)).ok()?,
            Some(Notice::LimitReached(message)) => {
                out.send(WatchEvent::LimitReached(message)).ok()?
            }
            None => {}
        }
        let now = Instant::now();
        if now >= next_tick {
            for event in debouncer.due(now) {
                out.send(event).ok()?;
            }
            next_tick = now + TICK;
        }
    }
}

/// The event thread's state.
struct EventLoop {
    watcher: RecommendedWatcher,
    roots: Vec<PathBuf>,
    rules: Arc<IgnoreRules>,
    max_watches: Option<usize>,
    unwatched_rescan: Duration,
    /// Directories with a watch of ours (Linux: every non-ignored directory
    /// we could watch; elsewhere: the roots).
    watched: BTreeSet<PathBuf>,
    /// Directories we could not watch; each is rescanned (and a watch is
    /// retried) every `unwatched_rescan`. Nothing below them is watched.
    unwatched: BTreeSet<PathBuf>,
    limit_warned: bool,
    /// Directories (or vanished roots) already warned about.
    warned: HashSet<PathBuf>,
    out: Sender<Notice>,
    /// The caller is gone; stop.
    closed: bool,
    overflow: Arc<AtomicBool>,
    next_periodic: Instant,
    /// Ignore decisions for content events, which come in floods for one
    /// path (every `write()` to a busy file is an event): a hash lookup
    /// instead of an `lstat` and a rules walk each time. Emptied whenever a
    /// name or the rules change, since that can change a decision.
    memo: HashMap<PathBuf, bool>,
    /// Directories whose path is too long for the OS to watch by name,
    /// watched through a short `/proc/self/fd/…` path instead (Linux): the
    /// real path and what reaches it. Event paths are translated back.
    long: HashMap<PathBuf, rewind_fsmeta::Reach>,
}

/// Why a watch could not be added.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
enum AddError {
    /// The directory is gone (it will be reported through its own events).
    Gone,
    /// The OS (or the `max_watches` hook) refuses more watches.
    Limit,
    /// Anything else (permissions, I/O).
    Other(notify::Error),
}

impl EventLoop {
    fn run(mut self, raw: RawReceiver, stop: Receiver<()>) {
        while !self.closed {
            let timeout = self.next_periodic.saturating_duration_since(Instant::now());
            crossbeam_channel::select! {
                recv(raw.rx) -> msg => match msg {
                    Ok((res, at, wall)) => {
                        raw.took_one();
                        self.handle(res, at, wall);
                    }
                    Err(_) => break,
                },
                recv(stop) -> _ => break,
                default(timeout) => {}
            }
            if self.overflow.swap(false, Ordering::AcqRel) {
                tracing::warn!("watch event queue full; rescanning every root");
                self.all_roots_lost(RescanReason::Overflow, Instant::now(), SystemTime::now());
            }
            if Instant::now() >= self.next_periodic {
                self.periodic();
                self.next_periodic = Instant::now() + self.unwatched_rescan;
            }
            for message in self.rules.take_warnings() {
                self.send(Notice::Warning(message));
            }
        }
    }

    fn send(&mut self, notice: Notice) {
        if self.out.send(notice).is_err() {
            self.closed = true;
        }
    }

    fn under_a_root(&self, path: &Path) -> bool {
        self.roots.iter().any(|r| path.starts_with(r))
    }

    fn under_roots(&self, paths: &[PathBuf]) -> Vec<PathBuf> {
        paths
            .iter()
            .filter(|p| self.under_a_root(p))
            .cloned()
            .collect()
    }

    /// Event paths under a directory watched through `/proc/self/fd` as the
    /// real paths.
    fn translate(&self, paths: &mut [PathBuf]) {
        if self.long.is_empty() {
            return;
        }
        for p in paths.iter_mut() {
            if !p.starts_with("/proc/self/fd") {
                continue;
            }
            if let Some(real) = self
                .long
                .iter()
                .find_map(|(real, r)| p.strip_prefix(r.path()).ok().map(|rest| real.join(rest)))
            {
                *p = real;
            }
        }
    }

    /// Drop our watch of `dir` (errors ignored: notify may have dropped it).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn unwatch(&mut self, dir: &Path) {
        match self.long.remove(dir) {
            Some(r) => {
                let _ = self.watcher.unwatch(r.path());
            }
            None => {
                let _ = self.watcher.unwatch(dir);
            }
        }
    }

    fn handle(&mut self, res: notify::Result<Event>, at: Instant, wall: SystemTime) {
        let event = match res {
            Ok(mut event) => {
                self.translate(&mut event.paths);
                event
            }
            Err(mut error) => {
                self.translate(&mut error.paths);
                tracing::warn!("notify error: {error}");
                self.lost(&error.paths, RescanReason::Error, at, wall);
                return;
            }
        };
        if event.need_rescan() {
            self.lost(&event.paths, RescanReason::Overflow, at, wall);
        }
        let paths = self.under_roots(&event.paths);
        match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                for path in paths {
                    self.content_changed(path, EventClass::CloseWrite, at, wall);
                }
            }
            EventKind::Access(_) => {}
            EventKind::Create(kind) => {
                let hint = match kind {
                    notify::event::CreateKind::Folder => Some(true),
                    notify::event::CreateKind::File => Some(false),
                    _ => None,
                };
                for path in paths {
                    self.name_changed(path, hint, at, wall);
                }
            }
            EventKind::Remove(kind) => {
                let hint = match kind {
                    notify::event::RemoveKind::Folder => Some(true),
                    notify::event::RemoveKind::File => Some(false),
                    _ => None,
                };
                for path in paths {
                    self.name_changed(path, hint, at, wall);
                }
            }
            // inotify delivers `From` and `To` separately before `Both`, so on
            // Linux `Both` repeats what was just handled (and would walk a
            // moved tree twice).
            #[cfg(target_os = "linux")]
            EventKind::Modify(ModifyKind::Name(notify::event::RenameMode::Both)) => {}
            EventKind::Modify(ModifyKind::Name(_)) | EventKind::Any | EventKind::Other => {
                for path in paths {
                    self.name_changed(path, None, at, wall);
                }
            }
            EventKind::Modify(ModifyKind::Metadata(_)) => {
                for path in paths {
                    self.content_changed(path, EventClass::Attrib, at, wall);
                }
            }
            EventKind::Modify(_) => {
                for path in paths {
                    self.content_changed(path, EventClass::Content, at, wall);
                }
            }
        }
    }

    /// Data or metadata of `path` changed (as `class` says); its name did
    /// not.
    fn content_changed(&mut self, path: PathBuf, class: EventClass, at: Instant, wall: SystemTime) {
        let ignored = match self.memo.get(&path) {
            Some(&ignored) => ignored,
            None => {
                let is_dir = fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_dir());
                let ignored = self.rules.is_ignored(&path, is_dir);
                if self.memo.len() >= MEMO_CAP {
                    self.memo.clear();
                }
                self.memo.insert(path.clone(), ignored);
                ignored
            }
        };
        if !ignored {
            self.report(path, class, false, at, wall);
        }
    }

    /// `path` appeared, vanished, or was renamed to or from: whatever it is
    /// now, make the watches below it match and report it and its parent.
    ///
    /// Events carry paths, not inodes: a "removed" event can be about an old
    /// directory that a new one has already replaced under the same name
    /// (`mv a b` over an empty `b` reports the old `b` deleted after the new
    /// one arrived). So this never trusts the event's direction: it drops
    /// every watch below `path`, looks at the filesystem, and watches again
    /// what is there now.
    fn name_changed(
        &mut self,
        path: PathBuf,
        dir_hint: Option<bool>,
        at: Instant,
        wall: SystemTime,
    ) {
        self.memo.clear();
        let had_watches = self.forget_tree(&path);
        let meta = fs::symlink_metadata(&path).ok();
        let is_dir_now = meta.as_ref().is_some_and(|m| m.file_type().is_dir());
        let is_dir = match &meta {
            Some(_) => is_dir_now,
            None => dir_hint.unwrap_or(had_watches),
        };
        if is_dir || had_watches {
            self.rules.invalidate(&path);
        }
        if self.roots.contains(&path) && !is_dir_now {
            self.root_lost(&path);
        }
        if self.rules.is_ignored(&path, is_dir) {
            return;
        }
        self.report(path.clone(), EventClass::Content, true, at, wall);
        if is_dir_now {
            self.sync_tree(&path);
            self.send(Notice::Rescan(path, RescanReason::NewDirectory, at, wall));
        }
    }

    /// Report `path` (and, for name changes, its parent, whose mtime changed,
    /// unless the parent is above the root).
    fn report(
        &mut self,
        path: PathBuf,
        class: EventClass,
        with_parent: bool,
        at: Instant,
        wall: SystemTime,
    ) {
        let special = matches!(
            path.file_name().and_then(|n| n.to_str()),
            Some(IGNORE_FILE_NAME | CACHEDIR_TAG_NAME)
        );
        let parent = path
            .parent()
            .filter(|p| self.under_a_root(p))
            .map(Path::to_path_buf);
        self.send(Notice::Changed(path, class, at, wall));
        if let Some(parent) = parent {
            if with_parent {
                self.send(Notice::Changed(
                    parent.clone(),
                    EventClass::Content,
                    at,
                    wall,
                ));
            }
            if special {
                // The rules of this directory changed: paths below it may
                // have become protected or ignored.
                self.memo.clear();
                self.rules.invalidate(&parent);
                self.sync_tree(&parent);
                self.send(Notice::Rescan(parent, RescanReason::RulesChanged, at, wall));
            }
        }
    }

    /// Events below `path` may have been lost.
    fn subtree_lost(&mut self, path: &Path, reason: RescanReason, at: Instant, wall: SystemTime) {
        // A file's subtree is its directory's business.
        let dir = match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_dir() => path.to_path_buf(),
            _ => match path.parent().filter(|p| self.under_a_root(p)) {
                Some(parent) => parent.to_path_buf(),
                None => path.to_path_buf(),
            },
        };
        self.memo.clear();
        self.rules.invalidate(&dir);
        // Lost events may include directory creations, deletions and
        // replacements: drop every watch below and watch what is there now.
        self.forget_tree(&dir);
        self.sync_tree(&dir);
        self.send(Notice::Rescan(dir, reason, at, wall));
    }

    /// Events for `paths` (all roots when none is under a root) were lost.
    fn lost(&mut self, paths: &[PathBuf], reason: RescanReason, at: Instant, wall: SystemTime) {
        let paths = self.under_roots(paths);
        if paths.is_empty() {
            self.all_roots_lost(reason, at, wall);
        }
        for path in paths {
            self.subtree_lost(&path, reason, at, wall);
        }
    }

    fn all_roots_lost(&mut self, reason: RescanReason, at: Instant, wall: SystemTime) {
        for root in self.roots.clone() {
            self.subtree_lost(&root, reason, at, wall);
        }
    }

    /// Every `unwatched_rescan`: try again to watch what we could not, then
    /// ask for a rescan of each unwatched subtree (after the retry, so a
    /// subtree that is now watched has no gap between rescan and watch).
    fn periodic(&mut self) {
        if self.unwatched.is_empty() {
            return;
        }
        self.memo.clear();
        let mut tops: Vec<PathBuf> = Vec::new();
        for dir in &self.unwatched {
            if tops.last().is_none_or(|top| !dir.starts_with(top)) {
                tops.push(dir.clone());
            }
        }
        for dir in &tops {
            self.retry(dir);
        }
        let (at, wall) = (Instant::now(), SystemTime::now());
        for dir in tops {
            self.rules.invalidate(&dir);
            self.send(Notice::Rescan(dir, RescanReason::Unwatched, at, wall));
        }
    }

    /// A root vanished (deleted, moved away, unmounted): keep checking it.
    fn root_lost(&mut self, root: &Path) {
        self.unwatched.insert(root.to_path_buf());
        if self.warned.insert(root.to_path_buf()) {
            let message = format!(
                "protected folder {} disappeared; it is checked every {} and watched again once it is back",
                root.display(),
                human(self.unwatched_rescan),
            );
            self.send(Notice::Warning(message));
        }
    }

    /// Record that `dir` could not be watched, warning once.
    fn mark_unwatched(&mut self, dir: PathBuf, error: AddError) {
        let message = match &error {
            AddError::Gone => return,
            AddError::Limit if self.limit_warned => None,
            AddError::Limit => {
                self.limit_warned = true;
                let message = limit_message(&dir, self.max_watches, self.unwatched_rescan);
                self.send(Notice::LimitReached(message));
                None
            }
            AddError::Other(e) if self.warned.insert(dir.clone()) => Some(format!(
                "cannot watch {}: {e}; it is protected by rescans every {} instead",
                dir.display(),
                human(self.unwatched_rescan)
            )),
            AddError::Other(_) => None,
        };
        tracing::debug!("not watching {}", dir.display());
        self.unwatched.insert(dir);
        if let Some(message) = message {
            self.send(Notice::Warning(message));
        }
    }
}

/// Linux: one non-recursive inotify watch per directory, added by our own
/// walk, so the limit, new directories and renames are under our control.
#[cfg(target_os = "linux")]
impl EventLoop {
    fn watch_roots(&mut self) {
        for root in self.roots.clone() {
            self.sync_tree(&root);
        }
    }

    fn add_watch(&mut self, dir: &Path) -> Result<(), AddError> {
        if self
            .max_watches
            .is_some_and(|max| self.watched.len() >= max)
        {
            return Err(AddError::Limit);
        }
        // A path too long to name in a system call is watched through a
        // descriptor of its parent.
        let reach = match rewind_fsmeta::reach(dir) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(AddError::Gone),
            Err(e) => return Err(AddError::Other(notify::Error::io(e))),
        };
        match self
            .watcher
            .watch(reach.path(), RecursiveMode::NonRecursive)
        {
            Ok(()) => {
                self.watched_now(dir.to_path_buf(), reach);
                Ok(())
            }
            Err(e) => Err(add_error(e)),
        }
    }

    /// Drop our watches at and below `path`; true if there were any.
    ///
    /// notify has usually dropped them already (it does on delete and
    /// move-from), so errors are expected and ignored. It cannot have
    /// re-added one since: only this thread adds, in event order.
    fn forget_tree(&mut self, path: &Path) -> bool {
        let watched = take_subtree(&mut self.watched, path);
        let unwatched = take_subtree(&mut self.unwatched, path);
        for dir in &watched {
            self.unwatch(dir);
        }
        !watched.is_empty() || !unwatched.is_empty()
    }

    /// Make the watches at and below `top` match the filesystem: watch every
    /// non-ignored directory that is not watched yet (watch first, then list
    /// it, so a subdirectory created meanwhile is either listed or reported),
    /// and forget the ones that are gone or now ignored. The walk goes a
    /// level at a time, and the watches of a level are added in one request
    /// to notify's thread ([`EventLoop::watch_level`]).
    fn sync_tree(&mut self, top: &Path) {
        let before: Vec<PathBuf> = subtree(&self.watched, top)
            .chain(subtree(&self.unwatched, top))
            .cloned()
            .collect();
        let mut seen: HashSet<PathBuf> = HashSet::new();
        let top_ok = rewind_fsmeta::reach(top)
            .and_then(|r| fs::symlink_metadata(r.path()))
            .is_ok_and(|m| m.file_type().is_dir())
            && !self.rules.is_ignored(top, true);
        let mut level = if top_ok {
            vec![top.to_path_buf()]
        } else {
            Vec::new()
        };
        while !level.is_empty() {
            let mut next = Vec::new();
            for dir in self.watch_level(level, &mut seen) {
                seen.insert(dir.clone());
                let entries =
                    match rewind_fsmeta::reach_dir(&dir).and_then(|r| fs::read_dir(r.path())) {
                        Ok(entries) => entries,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => {
                            self.mark_unwatched(dir, AddError::Other(notify::Error::io(e)));
                            continue;
                        }
                    };
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        let path = dir.join(entry.file_name());
                        if !self.rules.is_ignored(&path, true) {
                            next.push(path);
                        }
                    }
                }
            }
            level = next;
        }
        for dir in before {
            if !seen.contains(&dir) {
                if self.watched.remove(&dir) {
                    self.unwatch(&dir);
                }
                self.unwatched.remove(&dir);
            }
        }
    }

    /// Watch each of `dirs` not watched yet; the ones now watched (or
    /// watched before), to be listed. Gone ones are left out; the ones that
    /// cannot be watched are marked unwatched and `seen` (their rescans
    /// cover their subtrees).
    ///
    /// The watches go to notify's thread in one batch (`update_paths`): a
    /// request each cost a round trip between threads, about 8 s of a 22 s
    /// restart over the 100,000 folders of a million-file tree
    /// (docs/decisions.md, "A million files"). A batch stops at its first
    /// failure; the rest are then watched one at a time, except after the
    /// watch limit, which the rest would meet too.
    fn watch_level(&mut self, dirs: Vec<PathBuf>, seen: &mut HashSet<PathBuf>) -> Vec<PathBuf> {
        let mut ready = Vec::with_capacity(dirs.len());
        // Each directory with what reaches it (a descriptor for a path too
        // long to name, held until its watch is added).
        let mut wanted: Vec<(PathBuf, rewind_fsmeta::Reach)> = Vec::new();
        for dir in dirs {
            if self.watched.contains(&dir) {
                ready.push(dir);
                continue;
            }
            let room = self
                .max_watches
                .is_none_or(|max| self.watched.len() + wanted.len() < max);
            if !room {
                seen.insert(dir.clone());
                self.mark_unwatched(dir, AddError::Limit);
                continue;
            }
            match rewind_fsmeta::reach(&dir) {
                Ok(r) => wanted.push((dir, r)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    seen.insert(dir.clone());
                    self.mark_unwatched(dir, AddError::Other(notify::Error::io(e)));
                }
            }
        }
        if wanted.is_empty() {
            return ready;
        }
        let ops = wanted
            .iter()
            .map(|(_, r)| notify::PathOp::watch_non_recursive(r.path()))
            .collect();
        let result = self.watcher.update_paths(ops);
        let mut batch = wanted.into_iter();
        let error = match result {
            Ok(()) => {
                for (dir, reach) in batch {
                    self.watched_now(dir.clone(), reach);
                    ready.push(dir);
                }
                return ready;
            }
            Err(e) => e,
        };
        // Where it stopped, when known: those before it are watched, it
        // failed, and the rest were not tried.
        if error.origin.is_some() {
            let applied = batch.len().saturating_sub(1 + error.remaining.len());
            for (dir, reach) in batch.by_ref().take(applied) {
                self.watched_now(dir.clone(), reach);
                ready.push(dir);
            }
            if let Some((dir, _)) = batch.next() {
                match add_error(error.source) {
                    AddError::Gone => {}
                    AddError::Limit => {
                        // The rest would meet the limit too.
                        for dir in std::iter::once(dir).chain(batch.map(|(d, _)| d)) {
                            seen.insert(dir.clone());
                            self.mark_unwatched(dir, AddError::Limit);
                        }
                        return ready;
                    }
                    other => {
                        seen.insert(dir.clone());
                        self.mark_unwatched(dir, other);
                    }
                }
            }
        }
        // The rest one at a time (a failure is rare, and a batch sent again
        // after each of many, say a tree deleted while it is walked, would
        // cost the square of their number; watching a folder twice, when
        // it is not known how far the batch went, is harmless).
        for (dir, _) in batch {
            match self.add_watch(&dir) {
                Ok(()) => ready.push(dir),
                Err(AddError::Gone) => {}
                Err(e) => {
                    seen.insert(dir.clone());
                    self.mark_unwatched(dir, e);
                }
            }
        }
        ready
    }

    /// Record a watch just added for `dir` through `reach`.
    fn watched_now(&mut self, dir: PathBuf, reach: rewind_fsmeta::Reach) {
        if reach.path() != dir {
            self.long.insert(dir.clone(), reach);
        }
        self.unwatched.remove(&dir);
        self.watched.insert(dir);
    }

    fn retry(&mut self, dir: &Path) {
        self.unwatched.remove(dir);
        self.sync_tree(dir);
        if self.roots.iter().any(|r| r == dir) && !self.watched.contains(dir) {
            self.unwatched.insert(dir.to_path_buf());
        }
    }
}

/// Elsewhere (macOS FSEvents): one recursive watch per root; the OS follows
/// new directories and renames itself.
#[cfg(not(target_os = "linux"))]
impl EventLoop {
    fn watch_roots(&mut self) {
        for root in self.roots.clone() {
            self.retry(&root);
        }
    }

    fn forget_tree(&mut self, path: &Path) -> bool {
        if self.roots.iter().any(|r| r == path) && self.watched.remove(path) {
            let _ = self.watcher.unwatch(path);
            return true;
        }
        false
    }

    /// The OS follows the tree; only a root that lost its watch needs one.
    fn sync_tree(&mut self, top: &Path) {
        if self.roots.iter().any(|r| r == top) {
            self.retry(top);
        }
    }

    fn retry(&mut self, dir: &Path) {
        if !self.roots.iter().any(|r| r == dir) || self.watched.contains(dir) {
            self.unwatched.remove(dir);
            return;
        }
        match self.watcher.watch(dir, RecursiveMode::Recursive) {
            Ok(()) => {
                self.unwatched.remove(dir);
                self.watched.insert(dir.to_path_buf());
            }
            Err(e) => self.mark_unwatched(dir.to_path_buf(), AddError::Other(e)),
        }
    }
}

/// What a failure to add a watch means here.
#[cfg(target_os = "linux")]
fn add_error(e: notify::Error) -> AddError {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => AddError::Limit,
        notify::ErrorKind::PathNotFound => AddError::Gone,
        notify::ErrorKind::Io(io) if io.kind() == io::ErrorKind::NotFound => AddError::Gone,
        _ => AddError::Other(e),
    }
}

/// The entries of `set` at and below `top`, in order (contiguous, because
/// `Path` orders component-wise).
#[cfg(target_os = "linux")]
fn subtree<'a>(set: &'a BTreeSet<PathBuf>, top: &'a Path) -> impl Iterator<Item = &'a PathBuf> {
    set.range::<Path, _>((std::ops::Bound::Included(top), std::ops::Bound::Unbounded))
        .take_while(move |p| p.starts_with(top))
}

#[cfg(target_os = "linux")]
fn take_subtree(set: &mut BTreeSet<PathBuf>, top: &Path) -> Vec<PathBuf> {
    let doomed: Vec<PathBuf> = subtree(set, top).cloned().collect();
    for p in &doomed {
        set.remove(p);
    }
    doomed
}

fn limit_message(dir: &Path, hook: Option<usize>, period: Duration) -> String {
    let limit = match hook {
        Some(n) => format!("fs.inotify.max_user_watches={n} (test limit)"),
        None => {
            let read = |p: &str| {
                fs::read_to_string(p)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
            };
            os_limit(
                read("/proc/sys/fs/inotify/max_user_watches"),
                read("/proc/sys/user/max_inotify_watches"),
            )
        }
    };
    format!(
        "inotify watch limit reached ({limit}): {} and others are \
         protected by rescans every {}; raise it with \
         `sudo sysctl fs.inotify.max_user_watches={SUGGESTED_MAX_USER_WATCHES}`",
        dir.display(),
        human(period),
    )
}

/// The limit the kernel applied, from `fs.inotify.max_user_watches` and
/// `user.max_inotify_watches`. They are the same number, except inside a
/// user namespace (a container) with a limit of its own: the sysctl then
/// shows the host's, and naming only it would send the user to raise a
/// limit that was not the one reached.
fn os_limit(fs_value: Option<u64>, user_value: Option<u64>) -> String {
    match (fs_value, user_value) {
        (Some(f), Some(u)) if u < f => format!(
            "user.max_inotify_watches={u} in this user namespace, fs.inotify.max_user_watches={f}"
        ),
        (Some(f), _) => format!("fs.inotify.max_user_watches={f}"),
        (None, Some(u)) => format!("user.max_inotify_watches={u}"),
        (None, None) => "fs.inotify.max_user_watches=?".to_string(),
    }
}

/// `120 s`, `1.5 s`, `200 ms`.
fn human(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        let s = d.as_secs_f64();
        if s.fract() == 0.0 {
            format!("{s:.0} s")
        } else {
            format!("{s:.1} s")
        }
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
