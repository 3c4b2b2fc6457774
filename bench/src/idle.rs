//! Part 3: the idle cost of `rewind watch` over the big tree once its first
//! pass is done and nothing changes.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::agent::{Setup, Watch, parse_first_pass};
use crate::report::{Table, bytes, secs, verdict};
use crate::run::{
    Cmd, clock_ticks, measure, proc_cpu_seconds, proc_status_kib, proc_thread_switches,
};
use crate::{Config, Session};

/// Run the idle part; returns its Markdown section.
pub fn run(cfg: &Config, session: &mut Session) -> Result<String> {
    let tree = cfg.tree()?;
    let files = crate::datagen::plan_tree(cfg.seed, cfg.scale).1.len();
    let (setup, reused) = match &session.ingested {
        Some(s) => (s.clone(), true),
        None => {
            let s = Setup::fresh(&cfg.rewind, &cfg.work.join("idle"))?;
            eprintln!("rewind-bench: first pass with --once (not measured)");
            s.cmd(["watch".as_ref(), tree.as_os_str(), "--once".as_ref()])
                .run_quiet()?;
            (s, false)
        }
    };
    let ticks = clock_ticks();
    let started = Instant::now();
    let mut watch = Watch::start(&setup, &tree)?;
    let pid = watch.pid();
    let line = watch.wait_for_line("first pass complete", Duration::from_secs(1800))?;
    let pass_wall = started.elapsed().as_secs_f64();
    let pass_cpu = proc_cpu_seconds(pid, ticks)?;
    let (_, captured, _) = parse_first_pass(&line);

    // Let the uploader drain whatever the pass captured.
    setup.wait_drained()?;
    watch.drain_stderr();

    eprintln!("rewind-bench: idle window of {} s", cfg.idle_secs);
    let c0 = proc_cpu_seconds(pid, ticks)?;
    let sw0 = proc_thread_switches(pid)?;
    let t0 = Instant::now();
    let mut rss = Vec::new();
    while t0.elapsed() < Duration::from_secs(cfg.idle_secs) {
        rss.push(proc_status_kib(pid, "VmRSS")?);
        std::thread::sleep(Duration::from_secs(1));
    }
    let window = t0.elapsed().as_secs_f64();
    let c1 = proc_cpu_seconds(pid, ticks)?;
    let sw1 = proc_thread_switches(pid)?;
    let threads = sw1.len();
    // Wake-ups per thread name (threads of one pool, such as sled-io-N,
    // summed), over the window.
    let mut by_name: std::collections::BTreeMap<String, u64> = Default::default();
    for (tid, (name, n1)) in &sw1 {
        let n0 = sw0.get(tid).map(|(_, n)| *n).unwrap_or(0);
        let key = name
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .trim_end_matches('-');
        let key = if key.is_empty() { name.as_str() } else { key };
        *by_name.entry(key.to_string()).or_default() += n1 - n0;
    }
    let total_switches: u64 = by_name.values().sum();
    let hwm = proc_status_kib(pid, "VmHWM")?;
    rss.push(proc_status_kib(pid, "VmRSS")?);

    // Then another program reads every file of the tree (a backup tool, an
    // indexer, `grep -r`): nothing changes, so ideally nothing happens.
    let counter =
        |st: &serde_json::Value, k: &str| st["agent"]["counters"][k].as_u64().unwrap_or(0);
    let st0 = setup.status()?;
    let r0 = proc_cpu_seconds(pid, ticks)?;
    let t_read = Instant::now();
    Cmd::shell(&format!(
        "tar cf - -C '{}' . | cat >/dev/null",
        tree.display().to_string().replace('\'', "'\\''")
    ))
    .run_quiet()?;
    let read_wall = t_read.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(3));
    let read_span = t_read.elapsed().as_secs_f64();
    let r1 = proc_cpu_seconds(pid, ticks)?;
    let st1 = setup.status()?;
    let rescanned = counter(&st1, "scanned") - counter(&st0, "scanned");
    let recaptured = counter(&st1, "captured") - counter(&st0, "captured");
    watch.stop_and_report(Duration::from_secs(120))?;

    let cpu = c1 - c0;
    let pct = 100.0 * cpu / window;
    let avg_rss = rss.iter().sum::<u64>() as f64 / rss.len() as f64;
    let mut tbl = Table::new(&[
        "idle window",
        "CPU used",
        "% of one core",
        "wake-ups/s (context switches)",
        "threads",
        "RSS while idle (avg / max)",
        "VmHWM (peak since start)",
    ]);
    tbl.row(&[
        secs(window),
        format!("{:.3} s", cpu),
        format!("{pct:.3} %"),
        format!("{:.1}", total_switches as f64 / window),
        threads.to_string(),
        format!(
            "{} / {}",
            bytes(avg_rss as u64 * 1024),
            bytes(rss.iter().copied().max().unwrap_or(0) * 1024)
        ),
        bytes(hwm * 1024),
    ]);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "`rewind watch` over the ingest tree ({}), started {}; measured after \"first pass complete\" and an \
         empty journal, from `/proc/PID/stat` (utime+stime) and `/proc/PID/status`.\n",
        tree.display(),
        if reused {
            "again on the repository and journal of the ingest run, so its first pass is a no-change rescan"
        } else {
            "after an unmeasured `rewind watch --once` on a fresh repository, so its first pass is a no-change rescan"
        }
    );
    s.push_str(&tbl.render());
    let _ = writeln!(
        s,
        "\nTarget < 1 % of a core: {} ({pct:.3} %).\n\nThe no-change first pass (start, scan, compare with the \
         journal, watches set up) took {} wall and {} CPU and captured {} versions.",
        verdict(pct < 1.0),
        secs(pass_wall),
        secs(pass_cpu),
        captured
            .map(|c| c.to_string())
            .unwrap_or_else(|| "?".into())
    );
    let mut busy: Vec<(&String, &u64)> = by_name.iter().filter(|(_, n)| **n > 0).collect();
    busy.sort_by(|a, b| b.1.cmp(a.1));
    let _ = writeln!(
        s,
        "\nWake-ups per second by thread while idle: {}.",
        busy.iter()
            .map(|(name, n)| format!("{name} {:.1}", **n as f64 / window))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut rt = Table::new(&[
        "while `tar` reads the whole tree",
        "tar wall",
        "agent CPU (tar + 3 s)",
        "% of one core",
        "agent CPU per 1,000 files read",
        "paths rescanned",
        "versions captured",
    ]);
    rt.row(&[
        "no file changes".to_string(),
        secs(read_wall),
        format!("{:.3} s", r1 - r0),
        format!("{:.2} %", 100.0 * (r1 - r0) / read_span),
        format!("{:.1} ms", 1e6 * (r1 - r0) / files as f64),
        rescanned.to_string(),
        recaptured.to_string(),
    ]);
    let _ = writeln!(
        s,
        "\nThen, still idle as far as changes go, `tar cf - TREE | cat >/dev/null` reads every file \
         (as a backup tool, an indexer or `grep -r` would); paths rescanned and captured come from the \
         agent's counters (`rewind status --json`).\n"
    );
    s.push_str(&rt.render());
    s.push_str(&open_cost(&setup, &tree)?);
    Ok(s)
}

/// What opening the repository costs once the agent is gone: a CLI query,
/// and the in-memory index of a read-only `LocalRepo::open`.
fn open_cost(setup: &Setup, tree: &std::path::Path) -> Result<String> {
    let file = tree.join("big-1.img");
    let log = setup.home.join("versions.log");
    let q = measure(
        &setup.cmd(["versions".as_ref(), file.as_os_str(), "--json".as_ref()]),
        &log,
    )?;
    let st = measure(&setup.cmd(["status", "--json"]), &log)?;
    let rss0 = proc_status_kib(std::process::id(), "VmRSS")?;
    let t = Instant::now();
    let repo = rewind_repo::LocalRepo::open(&setup.repo)?;
    let open_s = t.elapsed().as_secs_f64();
    let rss1 = proc_status_kib(std::process::id(), "VmRSS")?;
    let stats = rewind_core::Repository::stats(&repo)?;
    drop(repo);
    let mut t = Table::new(&["after the agent stopped", "wall", "peak RSS / RSS added"]);
    t.row(&[
        "`rewind versions FILE --json`".to_string(),
        secs(q.wall),
        bytes(q.max_rss_kib * 1024),
    ]);
    t.row(&[
        "`rewind status --json`".to_string(),
        secs(st.wall),
        bytes(st.max_rss_kib * 1024),
    ]);
    t.row(&[
        "`LocalRepo::open` in process".to_string(),
        secs(open_s),
        bytes(rss1.saturating_sub(rss0) * 1024),
    ]);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nOpening the repository ({} versions, {} chunks, {} packs), as every query does:\n",
        stats.versions, stats.chunks, stats.packs
    );
    s.push_str(&t.render());
    Ok(s)
}
