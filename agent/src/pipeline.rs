//! The agent behind `rewind watch`: sources → capture → journal → uploader.
//!
//! ```text
//! watcher ──Changed──▶ scheduler ──▶ capture workers ──▶ journal ──▶ uploader ──▶ repository
//!         ──Rescan───▶ scanner thread ─┘ (first pass, overflow, new dirs)
//! control socket ◀── `rewind status`, `rewind ui` from another terminal
//! web UI ◀── the browser `rewind ui` logged in (reads the repository, restores)
//! ```
//!
//! Each queued path carries what is known about its change
//! ([`capture::Change`]): attribute events only, a scan's difference, or
//! possibly new content; capture reads the content only when it must.
//!
//! Stopping (Ctrl-C, SIGTERM): the watcher stops, queued captures finish,
//! the journal flushes, the uploader drains what is durable, then exit.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use crossbeam_channel::select;
use rewind_core::path::to_bytes;
use rewind_core::{Chunker, Timestamp};
use rewind_uploader::Uploader;
use rewind_watcher::{IgnoreRules, WatchEvent, WatchOptions, Watcher};
use serde::{Deserialize, Serialize};

use crate::agent::{Agent, Counters};
use crate::capture::Change;
use crate::group::GroupRules;
use crate::health::{self, Health, HealthSettings};
use crate::links::LinkMap;
use crate::opening::open_for_capture;
use crate::scheduler::Scheduler;
use crate::snapshot::{self, SnapshotSettings};
use crate::target::Target;
use crate::{control, dump_service, follow, paths};

/// How long a backup run (`watch --once`) goes on retrying, at its end, a
/// repository that may be back soon (`UploadOptions::stop_patience`). A
/// minute covers a server's restart and an object store's lease renewal
/// (a third of its 60 s expiry); a longer outage leaves the run
/// incomplete (exit 3) with its versions in the journal.
const ONCE_STOP_PATIENCE: Duration = Duration::from_secs(60);

/// What the agent records beside its journal for other commands (`status`).
#[derive(Serialize, Deserialize, Default)]
pub struct AgentConfig {
    /// Protected roots.
    pub roots: Vec<PathBuf>,
    /// `--exclude` globs.
    pub excludes: Vec<String>,
}

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
    /// A file that keeps changing gets a version at least this often,
    /// whenever it can be read consistently.
    pub busy_interval: Duration,
    /// Period of the rescans of directories the OS would not let us watch
    /// (past the inotify limit; default 120 s).
    pub unwatched_rescan: Duration,
    /// Show a progress bar for the first pass.
    pub progress: bool,
    /// Exit after the first pass has been captured and uploaded.
    pub once: bool,
    /// Upload limit for a server (overrides the enrolled one).
    pub limit_upload: Option<String>,
    /// Dump jobs to run on their schedules (`rewind agent --config`).
    pub dumps: Vec<rewind_dumps::Job>,
    /// How the agent watches its own health and tells the user
    /// (`[notify]`).
    pub health: HealthSettings,
    /// Globs naming groups of files captured as one state (`[watch]
    /// groups`; SQLite's are built in).
    pub groups: Vec<String>,
    /// `[retention]`: the policy, the space rules, how often to apply them.
    pub retention: crate::retention::RetentionSettings,
    /// Where the first pass gets a consistent moment from (`[snapshot]`).
    pub snapshot: SnapshotSettings,
    /// Where the web UI listens (`[ui] listen`); `None`: no web UI.
    pub ui: Option<std::net::SocketAddr>,
}

impl AgentOptions {
    /// Protect `roots` into `target` with every other setting at its
    /// default (as `rewind watch` without options and a config without
    /// those sections do); a progress line when stderr is a terminal.
    pub fn new(roots: Vec<PathBuf>, target: Target) -> AgentOptions {
        AgentOptions {
            roots,
            target,
            excludes: Vec::new(),
            follow_symlinks: Default::default(),
            quiescence: Duration::from_millis(300),
            busy_interval: rewind_watcher::DEFAULT_BUSY_INTERVAL,
            unwatched_rescan: rewind_watcher::DEFAULT_UNWATCHED_RESCAN,
            once: false,
            progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            limit_upload: None,
            dumps: Vec::new(),
            health: Default::default(),
            groups: Vec::new(),
            retention: Default::default(),
            snapshot: Default::default(),
            ui: None,
        }
    }
}

/// Run the agent until Ctrl-C / SIGTERM (or, with `once`, until its first
/// pass is captured and uploaded). The exit code: 0 complete, 3 when some
/// paths or metadata items could not be captured (`once` only).
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
    let (opened, journal) = open_for_capture(&opts.target, opts.limit_upload.as_deref(), &roots)?;
    let jdir = opened.jdir.clone();
    let repo = opened.repo.clone();
    // What capture reads of the past (delta bases, a dump's previous run).
    let bases = rewind_core::bases_of(repo.clone());
    // Where the repository and the agent's state live (never protected).
    let state_dir = paths::state_dir()?;
    let mut ignored = vec![state_dir.canonicalize().unwrap_or(state_dir)];
    ignored.extend(opened.local.clone());
    // Snapshots of a btrfs subvolume are made inside it: never protected,
    // and those an earlier run left behind are removed.
    if opts.snapshot == SnapshotSettings::Auto {
        for r in &roots {
            if let Some(sub) = snapshot::btrfs_subvolume(r) {
                snapshot::remove_leftovers(&sub);
                ignored.push(snapshot::snapshot_dir(&sub));
            }
        }
    }
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
    let cfg = AgentConfig {
        roots: roots.clone(),
        excludes: opts.excludes.clone(),
    };
    crate::enrollment::write_private(&jdir.join("agent.json"), &serde_json::to_vec_pretty(&cfg)?)?;
    let chunker = Chunker::new(opened.chunker);
    // With the sink the uploader takes chunks straight from capture, so each
    // byte is written once (docs/decisions.md, "One owner of repository writes").
    let mut upload = opened.upload.clone();
    if opts.once {
        // A backup run rides out a repository that is away for moments at
        // its end (found by tests/s3_faults.rs: an object store's writer
        // lease lapsed while its renewal was stalled, and the run's last
        // commit gave up at once).
        upload.stop_patience = ONCE_STOP_PATIENCE;
    }
    let uploader = Uploader::start(journal.clone(), repo.clone(), opened.sink.clone(), upload);

    // An agent may run dump jobs only, with no folder to watch.
    let (watcher, events) = if roots.is_empty() {
        (None, crossbeam_channel::never())
    } else {
        let mut wopts = WatchOptions::new(roots.clone(), rules.clone());
        wopts.quiescence = opts.quiescence;
        wopts.busy_interval = opts.busy_interval;
        wopts.unwatched_rescan = opts.unwatched_rescan;
        let (w, e) = Watcher::start(wopts)?;
        (Some(w), e)
    };
    let dump_service = Arc::new(dump_service::DumpService::new(
        journal.clone(),
        chunker,
        bases.clone(),
        opts.dumps.clone(),
    ));

    let agent = Arc::new(Agent {
        journal: journal.clone(),
        rules,
        chunker,
        ids: repo.chunk_ids(),
        sched: Scheduler::with_groups(GroupRules::new(&opts.groups).map_err(anyhow::Error::msg)?),
        counters: Counters::default(),
        problems: Mutex::new(Vec::new()),
        first_pass_done: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
        roots: roots.clone(),
        follow_symlinks: opts.follow_symlinks,
        repository: opened.describe.clone(),
        started: Timestamp::now(),
        busy_interval: opts.busy_interval,
        races: Mutex::new(HashMap::new()),
        links: LinkMap::default(),
        watched_since: journal.durable_seq(),
        dumps: dump_service.clone(),
        retention: Arc::new(crate::retention::RetentionCtx {
            repo: repo.clone(),
            client: journal.client().to_string(),
            settings: opts.retention.clone(),
            journal: Some(journal.clone()),
        }),
        maintenance: Default::default(),
        encoder: rewind_core::FileEncoder::new(bases.clone(), journal.dictionary().unwrap_or(None)),
        health: Health::new(opts.health.notifier(), opts.health.remind_every),
        snapshot: std::sync::RwLock::new(None),
    });
    let uploader = Arc::new(Mutex::new(Some(uploader)));
    let (health_stop, health_stopped) = crossbeam_channel::bounded::<()>(0);
    let health_thread = {
        let (a, u) = (agent.clone(), uploader.clone());
        let stalled_after = opts.health.upload_stalled_after;
        std::thread::Builder::new()
            .name("health".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    health_stopped.recv_timeout(health::CHECK_EVERY)
                {
                    check_health(&a, &u, stalled_after);
                }
            })?
    };
    // Forget and prune by themselves (a local repository; a server keeps
    // its own retention), at low priority.
    let (maint_stop, maint_stopped) = crossbeam_channel::bounded::<()>(0);
    let maint_thread = if opened.local.is_some() && !opts.once {
        let m = crate::maintenance::Maintenance {
            ctx: agent.retention.clone(),
            local: opened.local.clone(),
            status: agent.maintenance.clone(),
            started: Timestamp::now(),
            last_forget: Default::default(),
        };
        Some(
            std::thread::Builder::new()
                .name("retention".into())
                .spawn(move || {
                    crate::priority::background();
                    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                        maint_stopped.recv_timeout(crate::maintenance::CHECK_EVERY)
                    {
                        m.check();
                    }
                })?,
        )
    } else {
        None
    };
    let ui = match opts.ui {
        None => None,
        Some(listen) => {
            let (a, u) = (agent.clone(), uploader.clone());
            let ctx = rewind_ui::UiContext {
                repo: repo.clone(),
                client: opened.client.clone(),
                history: opened.history.clone(),
                roots: roots.clone(),
                chunker: Some(opened.chunker),
                status: Box::new(move || control::status_json(&a, &u)),
            };
            match rewind_ui::Ui::start(listen, ctx) {
                Ok(ui) => {
                    eprintln!(
                        "rewind: web UI on http://{} (`rewind ui` opens it)",
                        ui.addr()
                    );
                    Some(Arc::new(ui))
                }
                // Protection matters more than the UI: go on without it.
                Err(e) => {
                    agent.problem(e.to_string());
                    eprintln!("rewind: {e}; going on without the web UI");
                    None
                }
            }
        }
    };
    let control = control::serve(
        &paths::socket_path(&jdir),
        agent.clone(),
        uploader.clone(),
        ui.clone(),
    )?;

    // Two capture workers per core would only contend for the disk; one
    // per core keeps hashing and compression on both cores.
    let nworkers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2);
    // A continuous agent does its first pass in the background: at low CPU
    // and I/O priority, with workers that end when it is done; then workers
    // at normal priority capture changes within a second. A `--once` run
    // is the whole job and keeps normal priority.
    let background_first_pass = !opts.once;
    let spawn_workers = |first_pass_only: bool| -> Result<Vec<std::thread::JoinHandle<()>>> {
        let mut v = Vec::new();
        for i in 0..nworkers {
            let a = agent.clone();
            let name = if first_pass_only {
                format!("first-pass-{i}")
            } else {
                format!("capture-{i}")
            };
            v.push(std::thread::Builder::new().name(name).spawn(move || {
                if first_pass_only {
                    crate::priority::background();
                }
                a.worker(first_pass_only)
            })?);
        }
        Ok(v)
    };
    let mut workers = spawn_workers(background_first_pass)?;

    let (rescan_tx, rescan_rx) = crossbeam_channel::unbounded::<(PathBuf, Timestamp)>();
    // Wakes the loop below when the first pass ends (`--once` exits then).
    let (pass_tx, mut pass_done) = crossbeam_channel::bounded::<()>(1);
    let scanner = {
        let a = agent.clone();
        let roots = roots.clone();
        let progress = opts.progress;
        let snap = opts.snapshot.clone();
        let once = opts.once;
        std::thread::Builder::new()
            .name("scanner".into())
            .spawn(move || {
                if background_first_pass {
                    crate::priority::background();
                }
                first_pass(&a, &roots, progress, &snap);
                let _ = pass_tx.send(());
                drop(pass_tx);
                // A resident agent whose first pass wrote states: see
                // `Journal::settle_states` (a `--once` run exits instead).
                if !once && a.counters.captured.load(Ordering::Relaxed) > 0 {
                    a.journal.settle_states();
                }
                for (p, at) in rescan_rx {
                    let t = Instant::now();
                    a.rescan(&p, at);
                    let c = &a.counters;
                    c.rescans.fetch_add(1, Ordering::Relaxed);
                    let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                    c.rescan_micros.fetch_add(us, Ordering::Relaxed);
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
                // Health tells it (log, desktop, `status`) on its next
                // check; logging it here too printed it twice (issue 19).
                // A backup run may end before that check: it says so now.
                Ok(WatchEvent::LimitReached(w)) if opts.once => eprintln!("rewind: {w}"),
                Ok(WatchEvent::LimitReached(w)) => agent.health.watch_limit_reached(&w),
                Err(_) => {
                    agent.problem("the file watcher stopped".into());
                    break;
                }
            },
            recv(pass_done) -> _ => {
                pass_done = crossbeam_channel::never();
                if background_first_pass && agent.first_pass_done.load(Ordering::Relaxed) {
                    workers.extend(spawn_workers(false)?);
                    agent.sched.end_first_pass();
                }
            }
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
    if let Some(d) = agent.encoder.id() {
        journal.set_dictionary(&d)?;
    }
    journal.flush()?;
    if let Some(u) = uploader.lock().unwrap_or_else(|e| e.into_inner()).take() {
        u.stop();
    }
    control.stop();
    if let Some(ui) = ui {
        // The control thread has let go of its handle; a request still
        // holding one only delays the UI's end to its own drop.
        if let Ok(ui) = Arc::try_unwrap(ui) {
            ui.stop();
        }
    }
    drop(health_stop);
    let _ = health_thread.join();
    drop(maint_stop);
    if let Some(t) = maint_thread {
        let _ = t.join();
    }
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
    // A backup run (`--once`) whose versions did not all reach the
    // repository is not complete, though nothing is lost: a scheduled run
    // must not look like a finished backup (found by tests/s3_faults.rs,
    // an upload the store's errors stopped).
    if opts.once && st.versions_waiting > 0 {
        eprintln!("rewind: the run is incomplete: not everything reached the repository");
        return Ok(3);
    }
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

/// One look at the agent's health (see `health`).
fn check_health(agent: &Agent, uploader: &Mutex<Option<Uploader>>, stalled_after: Duration) {
    let lag = agent.journal.upload_lag();
    let upload = uploader
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|u| u.status());
    let journal_error = match &lag {
        Ok(l) => l.last_error.clone(),
        Err(e) => Some(e.to_string()),
    };
    let now = Timestamp::now();
    let oldest_waiting_age = lag
        .as_ref()
        .ok()
        .and_then(|s| s.oldest_waiting)
        .map(|t| Duration::from_nanos(now.0.saturating_sub(t.0).max(0) as u64));
    let upload_error = upload.as_ref().and_then(|u| u.last_error.clone());
    let facts = health::Facts {
        journal_error: journal_error.as_deref(),
        upload_error: upload_error.as_deref(),
        oldest_waiting_age,
        upload_stalled_after: stalled_after,
        repository: &agent.repository,
        roots: &agent.roots,
    };
    let found = agent.health.findings(&facts);
    agent.health.update(Instant::now(), now, found);
}

fn first_pass(agent: &Agent, roots: &[PathBuf], progress: bool, snap: &SnapshotSettings) {
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
        // One consistent moment for the whole first pass where a snapshot
        // can be taken (see `snapshot`).
        let taken = snapshot::take(roots, snap, agent.journal.next_seq());
        *agent.snapshot.write().unwrap_or_else(|e| e.into_inner()) = taken.clone();
        let at = Timestamp::now();
        for r in roots {
            agent.rescan(r, at);
        }
        let complete = agent.sched.wait_idle(Duration::from_secs(365 * 86400));
        *agent.snapshot.write().unwrap_or_else(|e| e.into_inner()) = None;
        if let Some(t) = taken {
            t.remove();
        }
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
