//! Part 15, run only when named: what the directories past the kernel's
//! inotify watch limit cost (issue 19). `rewind watch` over the ingest tree
//! twice on one repository (after an unmeasured `--once`, so both first
//! passes are no-change rescans):
//!
//! - with the limit lowered to half the tree's directories, so the watcher
//!   protects the rest by a rescan every [`PERIOD`];
//! - with the limit as the machine has it (every directory watched).
//!
//! The difference of the idle CPU of the two is the cost of the rescans.
//!
//! The limit is the real one of the kernel (`inotify_add_watch` fails with
//! `ENOSPC`), not the watcher's test hook, but it is lowered for the agent
//! alone: the agent runs in a user namespace of its own (`unshare --user
//! --map-root-user`) whose `/proc/sys/user/max_inotify_watches` the bench
//! sets before it starts. Lowering `fs.inotify.max_user_watches` instead
//! would lower it for every process of the user on the machine (a CI run, an
//! editor, another agent) for minutes, and their watches would make ours
//! vary; the namespace's limit goes away with the agent, so there is nothing
//! to restore even after a crash (docs/decisions.md "Benchmarking past the
//! inotify limit").

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rewind_core::Repository as _;
use rewind_repo::LocalRepo;

use crate::Config;
use crate::agent::{Setup, Watch};
use crate::datagen::derive_seed;
use crate::report::{Table, bytes, ms, secs};
use crate::run::{Cmd, clock_ticks, proc_cpu_seconds, proc_status_kib};

/// Rescan period given to the agent (`--unwatched-rescan`): 12 times
/// shorter than the default 120 s so a run takes minutes; the cost per
/// period does not depend on the period, only how often it is paid.
pub const PERIOD: Duration = Duration::from_secs(10);

/// Periods in each idle window: enough that one rescan more or less (the
/// window does not start in phase with the agent's timer) moves the mean by
/// at most a sixth.
const PERIODS: u32 = 6;

/// Files written in a watched and in an unwatched directory each; their
/// latency in an unwatched one is spread over the period, so a few samples
/// show the spread, not a percentile.
const SAMPLES: usize = 4;

/// Start of the warning the watcher prints when the kernel refuses a watch.
const LIMIT_WARNING: &str = "inotify watch limit reached";

/// What one agent did while nothing changed.
struct Idle {
    /// The namespace's limit, when lowered.
    limit: Option<u64>,
    /// Inotify watches the agent holds (`/proc/PID/fdinfo`).
    watches: usize,
    window: f64,
    cpu: f64,
    rescans: u64,
    rescan_secs: f64,
    scanned: u64,
    captured: u64,
    rss_avg_kib: f64,
    rss_max_kib: u64,
    hwm_kib: u64,
    /// Change-to-durable latency of new files: (in a watched directory, in
    /// an unwatched one).
    latency: (Vec<f64>, Vec<f64>),
    /// stderr lines of the agent carrying the limit warning.
    warnings: usize,
    /// One of them, for the report.
    warning: Option<String>,
}

/// Run the watchlimit part; returns its Markdown section.
pub fn run(cfg: &Config) -> Result<String> {
    let tree = cfg.tree()?.canonicalize()?;
    let dirs = directories(&tree)?;
    let files = count_files(&tree)?;
    let setup = Setup::fresh(&cfg.rewind, &cfg.work.join("watchlimit"))?;
    eprintln!("rewind-bench: first pass with --once (not measured)");
    setup
        .cmd([
            "watch".as_ref(),
            tree.as_os_str(),
            "--once".as_ref(),
            "--no-ui".as_ref(),
        ])
        .run_quiet()?;
    // Half the directories: the watcher adds watches breadth first, so
    // the deeper half of the tree is left to the rescans.
    let limit = (dirs.len() as u64 / 2).max(1);
    eprintln!("rewind-bench: limit lowered to {limit} watches");
    let low = idle_run(cfg, &setup, &tree, &dirs, Some(limit))?;
    eprintln!("rewind-bench: limit as the machine has it");
    let high = idle_run(cfg, &setup, &tree, &dirs, None)?;
    Ok(render(&tree, dirs.len(), files, &low, &high))
}

/// Every directory of the tree with its inode number.
fn directories(tree: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    let mut stack = vec![tree.to_path_buf()];
    while let Some(d) = stack.pop() {
        let m = fs::symlink_metadata(&d).with_context(|| d.display().to_string())?;
        out.push((d.clone(), m.ino()));
        for e in fs::read_dir(&d).with_context(|| d.display().to_string())? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(out)
}

fn count_files(tree: &Path) -> Result<u64> {
    let mut n = 0;
    let mut stack = vec![tree.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// The inode numbers an inotify instance of `pid` watches (`ino:` of the
/// `inotify wd:` lines of `/proc/PID/fdinfo/*`).
fn inotify_watches(pid: u32) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for e in fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let Ok(s) = fs::read_to_string(e?.path()) else {
            continue;
        };
        for line in s.lines().filter(|l| l.starts_with("inotify wd:")) {
            let ino = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("ino:"))
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .with_context(|| format!("no inode in {line:?}"))?;
            out.push(ino);
        }
    }
    Ok(out)
}

/// `rewind watch TREE` in a user namespace of its own whose inotify limit
/// is `limit` (none: the namespace inherits the machine's).
fn start(setup: &Setup, tree: &Path, limit: Option<u64>) -> Result<Watch> {
    let inner = setup.cmd([
        "watch".as_ref(),
        tree.as_os_str(),
        "--unwatched-rescan".as_ref(),
        format!("{}s", PERIOD.as_secs()).as_ref(),
        "--no-ui".as_ref(),
    ]);
    // `exec` twice (unshare, then sh), so the pid is the agent's.
    let script = "if [ -n \"$REWIND_BENCH_WATCHES\" ]; then \
                  echo \"$REWIND_BENCH_WATCHES\" > /proc/sys/user/max_inotify_watches || exit 97; fi; \
                  echo \"rewind-bench: max_inotify_watches $(cat /proc/sys/user/max_inotify_watches)\" >&2; \
                  exec \"$@\"";
    let mut cmd = Cmd::new("unshare")
        .args(["--user", "--map-root-user", "sh", "-c", script, "sh"])
        .arg(&inner.program)
        .args(inner.args.iter().cloned());
    for (k, v) in &inner.env {
        cmd = cmd.env(k, v);
    }
    cmd = cmd.env(
        "REWIND_BENCH_WATCHES",
        limit.map(|l| l.to_string()).unwrap_or_default(),
    );
    Watch::start_cmd(&cmd)
}

fn idle_run(
    cfg: &Config,
    setup: &Setup,
    tree: &Path,
    dirs: &[(PathBuf, u64)],
    limit: Option<u64>,
) -> Result<Idle> {
    let ticks = clock_ticks();
    let mut watch = start(setup, tree, limit)?;
    let pid = watch.pid();
    watch.wait_for_line("first pass complete", Duration::from_secs(1800))?;
    setup.wait_drained()?;
    let watched = inotify_watches(pid)?;
    let watched_inodes: HashSet<u64> = watched.iter().copied().collect();

    let window_len = PERIOD * PERIODS;
    eprintln!("rewind-bench: idle window of {} s", window_len.as_secs());
    let counter =
        |st: &serde_json::Value, k: &str| st["agent"]["counters"][k].as_u64().unwrap_or(0);
    let st0 = setup.status()?;
    let c0 = proc_cpu_seconds(pid, ticks)?;
    let t0 = Instant::now();
    let mut rss = Vec::new();
    while t0.elapsed() < window_len {
        rss.push(proc_status_kib(pid, "VmRSS")?);
        std::thread::sleep(Duration::from_secs(1));
    }
    let window = t0.elapsed().as_secs_f64();
    let c1 = proc_cpu_seconds(pid, ticks)?;
    let st1 = setup.status()?;
    let hwm_kib = proc_status_kib(pid, "VmHWM")?;

    let latency = latencies(cfg, setup, dirs, &watched_inodes)?;

    watch.stop_and_report(Duration::from_secs(120))?;
    let warned: Vec<&String> = watch
        .stderr
        .iter()
        .filter(|l| l.contains(LIMIT_WARNING))
        .collect();
    Ok(Idle {
        limit,
        watches: watched.len(),
        window,
        cpu: c1 - c0,
        rescans: counter(&st1, "rescans") - counter(&st0, "rescans"),
        rescan_secs: (counter(&st1, "rescan_micros") - counter(&st0, "rescan_micros")) as f64 / 1e6,
        scanned: counter(&st1, "scanned") - counter(&st0, "scanned"),
        captured: counter(&st1, "captured") - counter(&st0, "captured"),
        rss_avg_kib: rss.iter().sum::<u64>() as f64 / rss.len().max(1) as f64,
        rss_max_kib: rss.iter().copied().max().unwrap_or(0),
        hwm_kib,
        latency,
        warnings: warned.len(),
        warning: warned.first().map(|l| l.to_string()),
    })
}

/// Write new files in a watched directory and in an unwatched one (if
/// any), alternately, and time each until its version is in the
/// repository.
fn latencies(
    cfg: &Config,
    setup: &Setup,
    dirs: &[(PathBuf, u64)],
    watched: &HashSet<u64>,
) -> Result<(Vec<f64>, Vec<f64>)> {
    // The deepest of each kind: a new file there is as far from a watch as
    // the tree allows.
    let pick = |want: bool| {
        dirs.iter()
            .filter(|(_, ino)| watched.contains(ino) == want)
            .max_by_key(|(p, _)| (p.components().count(), p.as_os_str().len()))
            .map(|(p, _)| p.clone())
    };
    let targets = [pick(true), pick(false)];
    let repo = LocalRepo::open(&setup.repo)?;
    let client = setup.client()?;
    let mut rng = StdRng::seed_from_u64(derive_seed(cfg.seed, 15));
    let mut out = (Vec::new(), Vec::new());
    let give_up = PERIOD * 3 + Duration::from_secs(30);
    for i in 0..SAMPLES {
        for (k, dir) in targets.iter().enumerate() {
            let Some(dir) = dir else { continue };
            let path = dir.join(format!("watchlimit-probe-{}-{i}.txt", rng.random::<u32>()));
            let key = path.as_os_str().as_bytes().to_vec();
            let t0 = Instant::now();
            fs::write(&path, format!("probe {i}\n")).with_context(|| path.display().to_string())?;
            loop {
                repo.refresh()?;
                if !repo.versions_of(&client, &key)?.is_empty() {
                    break;
                }
                if t0.elapsed() > give_up {
                    bail!(
                        "{} was not captured within {give_up:?} (the rescan missed it?)",
                        path.display()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let lat = t0.elapsed().as_secs_f64();
            if k == 0 { &mut out.0 } else { &mut out.1 }.push(lat);
            fs::remove_file(&path)?;
            // A random phase against the agent's timer.
            std::thread::sleep(Duration::from_secs_f64(rng.random_range(0.5..2.5)));
        }
    }
    Ok(out)
}

fn spread(v: &[f64]) -> String {
    if v.is_empty() {
        return "–".into();
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    format!(
        "{} / {} / {}",
        ms(s[0]),
        ms(s[s.len() / 2]),
        ms(s[s.len() - 1])
    )
}

fn render(tree: &Path, dirs: usize, files: u64, low: &Idle, high: &Idle) -> String {
    let periods = |r: &Idle| r.window / PERIOD.as_secs_f64();
    let per_period = |r: &Idle| r.cpu / periods(r);
    let mut t = Table::new(&[
        "inotify limit",
        "directories watched / not",
        "limit warnings",
        "rescans (subtrees) per period",
        "paths rescanned per period",
        "rescan wall per period",
        "agent CPU per period",
        "% of one core",
        "RSS idle (avg / max)",
        "VmHWM",
    ]);
    for r in [low, high] {
        let unwatched_dirs = dirs.saturating_sub(r.watches);
        t.row(&[
            match r.limit {
                Some(l) => format!("{l} (lowered)"),
                None => "the machine's (raised)".into(),
            },
            format!("{} / {unwatched_dirs}", r.watches),
            r.warnings.to_string(),
            format!("{:.1}", r.rescans as f64 / periods(r)),
            format!("{:.0}", r.scanned as f64 / periods(r)),
            secs(r.rescan_secs / periods(r)),
            format!("{:.3} s", per_period(r)),
            format!("{:.2} %", 100.0 * r.cpu / r.window),
            format!(
                "{} / {}",
                bytes(r.rss_avg_kib as u64 * 1024),
                bytes(r.rss_max_kib * 1024)
            ),
            bytes(r.hwm_kib * 1024),
        ]);
    }
    let extra = per_period(low) - per_period(high);
    let unwatched_dirs = dirs.saturating_sub(low.watches).max(1) as f64;
    let rescanned = (low.scanned as f64 / periods(low)).max(1.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "`rewind watch --unwatched-rescan {}s` over the ingest tree ({}: {dirs} directories, {files} files), \
         twice on one repository after an unmeasured `--once`: first with the inotify limit lowered to half \
         the directories (a user namespace of the agent's own, `/proc/sys/user/max_inotify_watches`, so no \
         other process on the machine is limited), then with the machine's limit. Each idle window is {} \
         periods ({} s) with nothing changing; CPU is utime+stime from `/proc/PID/stat`, watches are the \
         `inotify wd:` lines of `/proc/PID/fdinfo`, rescans and their wall time the agent's counters \
         (`rewind status --json`).\n",
        PERIOD.as_secs(),
        tree.display(),
        PERIODS,
        (PERIOD * PERIODS).as_secs(),
    );
    s.push_str(&t.render());
    let _ = writeln!(
        s,
        "\nCost of the rescans: {:.3} s of CPU per period, {:.1} ms per 1,000 paths rescanned, \
         {:.1} ms per 1,000 unwatched directories; at the default period (120 s) that is {:.3} % of one core. \
         Versions captured during the idle windows (should be 0): {} lowered, {} raised.",
        extra,
        1e3 * extra / (rescanned / 1000.0),
        1e3 * extra / (unwatched_dirs / 1000.0),
        100.0 * extra.max(0.0) / 120.0,
        low.captured,
        high.captured,
    );
    let _ = writeln!(
        s,
        "\nThe warning, once per agent ({} line(s) on stderr): `{}`",
        low.warnings,
        low.warning.as_deref().unwrap_or("(none)")
    );
    let mut lt = Table::new(&["a new file in", "samples", "latency min / median / max"]);
    lt.row(&[
        "a watched directory (limit lowered)".to_string(),
        low.latency.0.len().to_string(),
        spread(&low.latency.0),
    ]);
    lt.row(&[
        "an unwatched directory (limit lowered)".to_string(),
        low.latency.1.len().to_string(),
        spread(&low.latency.1),
    ]);
    lt.row(&[
        "the deepest directory, every directory watched".to_string(),
        high.latency.0.len().to_string(),
        spread(&high.latency.0),
    ]);
    let _ = writeln!(
        s,
        "\nChange to durable (written until the version is visible in the repository), {SAMPLES} files each, \
         in the deepest watched and the deepest unwatched directory, 0.5–2.5 s apart; in an unwatched \
         directory it is bounded by the period ({} s) plus the rescan:\n",
        PERIOD.as_secs()
    );
    s.push_str(&lt.render());
    s
}
