//! Part 17, run only when named: a million files in a hundred thousand
//! folders (issue 19's scale targets), rewind against restic in the same
//! run, on the same tree:
//!
//! - the first pass (`rewind watch --once`, `restic backup`): wall time and
//!   peak RSS;
//! - a run with nothing changed (the agent's restart: `rewind watch
//!   --once` again, which must re-read no content; restic's second
//!   backup);
//! - the resident agent (`rewind watch`) idle after its start-up pass:
//!   RSS and CPU over the idle window.
//!
//! The tree is small text files (200 B–2 KiB, 10 to a folder, folders
//! `dNNN/dNNNN`), generated once and kept in the work directory.
//! `REWIND_BENCH_MILLION_FILES` makes it smaller for a trial run.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::Config;
use crate::agent::{Setup, Watch, parse_first_pass};
use crate::datagen::{TextGen, derive_seed};
use crate::report::{Table, bytes, secs, verdict};
use crate::run::{Cmd, Measured, clock_ticks, measure, proc_cpu_seconds, proc_status_kib};

/// Files in each folder.
const PER_DIR: usize = 10;
/// Sub-folders in each top folder.
const SUBDIRS: usize = 1000;

/// Bumped when the generated tree changes.
const TREE_VERSION: u32 = 1;

/// The number of files: 1,000,000 unless `REWIND_BENCH_MILLION_FILES`.
fn files_wanted() -> Result<usize> {
    match std::env::var("REWIND_BENCH_MILLION_FILES") {
        Ok(s) if !s.trim().is_empty() => s
            .trim()
            .parse()
            .context("REWIND_BENCH_MILLION_FILES: a number of files"),
        _ => Ok(1_000_000),
    }
}

/// The tree of `files` files below `WORK/million/tree-N`, generated once
/// (a marker beside it says it is whole).
fn tree(cfg: &Config, files: usize) -> Result<PathBuf> {
    let base = cfg.work.join("million");
    let root = base.join(format!("tree-{files}"));
    let marker = base.join(format!("tree-{files}.v{TREE_VERSION}.s{}", cfg.seed));
    if marker.exists() {
        return Ok(root);
    }
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| root.display().to_string())?;
    }
    eprintln!("rewind-bench: million: generating {files} files");
    let t = Instant::now();
    let dirs = files.div_ceil(PER_DIR);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let vocab = TextGen::new(cfg.seed, 0);
    std::thread::scope(|s| -> Result<()> {
        let mut handles = Vec::new();
        for w in 0..threads {
            let root = &root;
            let vocab = vocab.clone();
            handles.push(s.spawn(move || -> Result<()> {
                let mut buf = Vec::new();
                for d in (w..dirs).step_by(threads) {
                    let dir = root
                        .join(format!("d{:03}", d / SUBDIRS))
                        .join(format!("d{:04}", d % SUBDIRS));
                    fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
                    let seed = derive_seed(cfg.seed, d as u64);
                    let mut rng = StdRng::seed_from_u64(seed);
                    let mut text = vocab.reseed(seed);
                    for f in 0..PER_DIR.min(files - d * PER_DIR) {
                        buf.clear();
                        text.fill(&mut buf, rng.random_range(200..=2048));
                        let p = dir.join(format!("f{f}.txt"));
                        fs::write(&p, &buf).with_context(|| p.display().to_string())?;
                    }
                }
                Ok(())
            }));
        }
        for h in handles {
            h.join().expect("generator thread")?;
        }
        Ok(())
    })?;
    fs::write(&marker, b"")?;
    eprintln!(
        "rewind-bench: million: generated in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    Ok(root)
}

/// "N paths scanned, M versions captured … in S s" from a `--once` run's
/// stderr.
fn pass_line(m: &Measured) -> (Option<u64>, Option<u64>) {
    m.stderr_tail
        .lines()
        .rev()
        .find(|l| l.contains("first pass complete"))
        .map(|l| {
            let (scanned, captured, _) = parse_first_pass(l);
            (scanned, captured)
        })
        .unwrap_or((None, None))
}

fn mib(kib: u64) -> String {
    bytes(kib * 1024)
}

/// Run the part; returns its Markdown section.
pub fn run(cfg: &Config) -> Result<String> {
    let files = files_wanted()?;
    let root = tree(cfg, files)?;
    let base = cfg.work.join("million");
    let log = |name: &str| base.join(format!("{name}.log"));
    // The same page cache for both: every file read once before either.
    Cmd::shell(&format!(
        "tar cf - -C {} . | cat > /dev/null",
        root.display()
    ))
    .run_quiet()?;

    let rdir = base.join("restic");
    crate::run::fresh_dir(&rdir)?;
    let restic = |args: &[&str]| crate::run::restic(&rdir, args);
    restic(&["init"]).run_quiet()?;
    eprintln!("rewind-bench: million: restic backup (first)");
    let r1 = measure(&restic(&["backup"]).arg(&root), &log("restic-1"))?;
    eprintln!("rewind-bench: million: restic backup (nothing changed)");
    let r2 = measure(&restic(&["backup"]).arg(&root), &log("restic-2"))?;

    let setup = Setup::fresh(&cfg.rewind, &base.join("rewind"))?;
    let once = || setup.cmd(["watch".as_ref(), root.as_os_str(), "--once".as_ref()]);
    eprintln!("rewind-bench: million: rewind watch --once (first)");
    let w1 = measure(&once(), &log("rewind-1"))?;
    eprintln!("rewind-bench: million: rewind watch --once (nothing changed)");
    let w2 = measure(&once(), &log("rewind-2"))?;
    let (_, w1_captured) = pass_line(&w1);
    let (w2_scanned, w2_captured) = pass_line(&w2);

    eprintln!("rewind-bench: million: rewind watch, idle");
    let ticks = clock_ticks();
    let started = Instant::now();
    let mut watch = Watch::start(&setup, &root)?;
    let pid = watch.pid();
    watch.wait_for_line("first pass complete", Duration::from_secs(3600))?;
    let start_wall = started.elapsed().as_secs_f64();
    setup.wait_drained()?;
    let window = Duration::from_secs(cfg.idle_secs.clamp(10, 60));
    let cpu0 = proc_cpu_seconds(pid, ticks)?;
    let t0 = Instant::now();
    let mut rss = Vec::new();
    while t0.elapsed() < window {
        std::thread::sleep(Duration::from_secs(1));
        rss.push(proc_status_kib(pid, "VmRSS")?);
        watch.drain_stderr();
    }
    let idle_cpu = (proc_cpu_seconds(pid, ticks)? - cpu0) / t0.elapsed().as_secs_f64();
    let idle_rss = rss.iter().copied().max().unwrap_or(0);
    let idle_hwm = proc_status_kib(pid, "VmHWM")?;
    watch.stop_and_report(Duration::from_secs(60))?;

    let dirs = files.div_ceil(PER_DIR);
    let mut s = String::new();
    writeln!(
        s,
        "A generated tree of {files} small text files (200 B–2 KiB) in {dirs} folders \
         ({} top folders of up to {SUBDIRS}); every file read once before the runs, so both \
         tools start from the same page cache. `rewind watch TREE --once` and `restic \
         backup TREE` into fresh local repositories; then each again with nothing changed \
         (rewind's is its restart: the journal knows every file); then `rewind watch TREE` \
         until its start-up pass is done and its journal drained, and {} s idle.\n",
        dirs.div_ceil(SUBDIRS),
        window.as_secs()
    )?;
    let mut t = Table::new(&[
        "run",
        "rewind wall",
        "restic wall",
        "ratio",
        "rewind peak RSS",
        "restic peak RSS",
    ]);
    for (name, w, r) in [("first pass", &w1, &r1), ("nothing changed", &w2, &r2)] {
        t.row(&[
            name.to_string(),
            secs(w.wall),
            secs(r.wall),
            format!("{:.2}×", r.wall / w.wall),
            mib(w.max_rss_kib),
            mib(r.max_rss_kib),
        ]);
    }
    s.push_str(&t.render());
    writeln!(
        s,
        "\nrewind's first pass captured {} versions; the run with nothing changed captured {} \
         of {} paths scanned (0: no content read again). The resident agent: start-up pass {}, then idle RSS (max of 1 s samples) {}, \
         VmHWM {}, CPU {:.3} % of a core.\n",
        w1_captured.map_or("?".into(), |n| n.to_string()),
        w2_captured.map_or("?".into(), |n| n.to_string()),
        w2_scanned.map_or("?".into(), |n| n.to_string()),
        secs(start_wall),
        mib(idle_rss),
        mib(idle_hwm),
        idle_cpu * 100.0
    )?;
    let first_fast = r1.wall >= 2.0 * w1.wall;
    let first_small = w1.max_rss_kib < r1.max_rss_kib;
    let restart = w2.wall < r2.wall && w2_captured == Some(0);
    let idle_small = idle_rss < 250 * 1024;
    let idle_quiet = idle_cpu < 0.002;
    writeln!(
        s,
        "Targets: first pass at least 2× faster than restic's: {} ({:.2}×); first-pass \
         peak RSS below restic's: {} ({} against {}); restart with nothing changed faster \
         than restic's no-change backup, re-reading nothing: {} ({} against {}, {} \
         captured); idle agent under 250 MiB: {} ({}); idle under 0.2 % of a core: {} \
         ({:.3} %).",
        verdict(first_fast),
        r1.wall / w1.wall,
        verdict(first_small),
        mib(w1.max_rss_kib),
        mib(r1.max_rss_kib),
        verdict(restart),
        secs(w2.wall),
        secs(r2.wall),
        w2_captured.map_or("?".into(), |n| n.to_string()),
        verdict(idle_small),
        mib(idle_rss),
        verdict(idle_quiet),
        idle_cpu * 100.0
    )?;
    Ok(s)
}
