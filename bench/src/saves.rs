//! Part 16: a sustained stream of saves (issue 19: "100 saves per second
//! spread over 1,000 files for 10 minutes: change → durable p99 ≤ 1 s,
//! with RSS flat over the run").
//!
//! `rewind watch` (default settings) protects a folder of [`FILES`] files
//! in [`DIRS`] folders. The bench saves one of them every 10 ms for the
//! run's length (10 minutes at scale 1, never under one): half the saves
//! write in place, half as editors do (a temporary file renamed over the
//! old one). Once a second, one save is a *probe*: its file is left alone
//! until a version newer than any before the save is visible to a reader
//! of the repository (`LocalRepo::refresh` + `versions_of`, polled every
//! [`POLL`]), and the time from the save's start to then is its latency.
//! The agent's RSS and CPU are sampled every [`SAMPLE`].

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rewind_core::Repository as _;
use rewind_repo::LocalRepo;

use crate::Config;
use crate::agent::{Setup, Watch};
use crate::datagen::{TextGen, derive_seed};
use crate::latency::quantile;
use crate::report::{Table, ms, verdict};
use crate::run::{clock_ticks, fresh_dir, proc_cpu_seconds, proc_status_kib};

/// Files saved in turn.
const FILES: usize = 1000;
/// Folders they are spread over.
const DIRS: usize = 20;
/// Time between saves (100 a second).
const GAP: Duration = Duration::from_millis(10);
/// The run's length at scale 1.
const LENGTH: Duration = Duration::from_secs(600);
/// How often the reader looks for a probe's version.
const POLL: Duration = Duration::from_millis(50);
/// How often RSS and CPU are sampled.
const SAMPLE: Duration = Duration::from_secs(5);
/// A probe not durable after this long counts as lost.
const GIVE_UP: Duration = Duration::from_secs(30);

/// A save whose version the reader waits for.
struct Probe {
    file: usize,
    key: Vec<u8>,
    before: u64,
    start: Instant,
}

fn newest_seq(repo: &LocalRepo, client: &str, key: &[u8]) -> Result<u64> {
    Ok(repo.versions_of(client, key)?.last().map_or(0, |v| v.seq))
}

/// Save `content` to `path`, in place or by a rename over it.
fn save(path: &Path, content: &[u8], by_rename: bool) -> Result<()> {
    if by_rename {
        let tmp = path.with_extension("tmp~");
        fs::write(&tmp, content).with_context(|| tmp.display().to_string())?;
        fs::rename(&tmp, path).with_context(|| path.display().to_string())?;
    } else {
        fs::write(path, content).with_context(|| path.display().to_string())?;
    }
    Ok(())
}

/// Run the part; returns its Markdown section.
pub fn run(cfg: &Config) -> Result<String> {
    let base = fresh_dir(&cfg.work.join("saves"))?;
    let dir = base.join("protected");
    let mut text = TextGen::new(cfg.seed, derive_seed(cfg.seed, 0x5a5e));
    let paths: Vec<PathBuf> = (0..FILES)
        .map(|i| {
            dir.join(format!("d{:02}", i % DIRS))
                .join(format!("doc-{i:04}.txt"))
        })
        .collect();
    for p in &paths {
        fs::create_dir_all(p.parent().expect("in a folder"))?;
        fs::write(p, text.bytes(4000))?;
    }
    let length = LENGTH.mul_f64(cfg.scale).max(Duration::from_secs(60));
    let setup = Setup::fresh(&cfg.rewind, &base.join("rewind"))?;
    let mut watch = Watch::start(&setup, &dir)?;
    watch.wait_for_line("first pass complete", Duration::from_secs(120))?;
    setup.wait_drained()?;
    let client = setup.client()?;
    let keys = crate::agent::stored_paths(&dir, &paths)?;
    let pid = watch.pid();
    let ticks = clock_ticks();

    // The reader: takes probes, answers (file, latency or None when lost).
    let (probe_tx, probe_rx) = mpsc::channel::<Probe>();
    let (done_tx, done_rx) = mpsc::channel::<(usize, Option<f64>)>();
    let repo_dir = setup.repo.clone();
    let reader_client = client.clone();
    let reader = std::thread::spawn(move || -> Result<()> {
        let repo = LocalRepo::open(&repo_dir)?;
        let mut waiting: Vec<Probe> = Vec::new();
        let mut closed = false;
        loop {
            loop {
                match probe_rx.try_recv() {
                    Ok(p) => waiting.push(p),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            if closed && waiting.is_empty() {
                return Ok(());
            }
            repo.refresh()?;
            let mut still = Vec::new();
            for p in waiting.drain(..) {
                if newest_seq(&repo, &reader_client, &p.key)? > p.before {
                    let _ = done_tx.send((p.file, Some(p.start.elapsed().as_secs_f64())));
                } else if p.start.elapsed() > GIVE_UP {
                    let _ = done_tx.send((p.file, None));
                } else {
                    still.push(p);
                }
            }
            waiting = still;
            std::thread::sleep(POLL);
        }
    });

    let probe_repo = LocalRepo::open(&setup.repo)?;
    let mut rng = StdRng::seed_from_u64(derive_seed(cfg.seed, 0x5a5f));
    let mut busy: HashMap<usize, ()> = HashMap::new();
    let mut lat = Vec::new();
    let mut lost = 0usize;
    let mut rss_mib: Vec<(f64, f64)> = Vec::new();
    let cpu0 = proc_cpu_seconds(pid, ticks)?;
    let t0 = Instant::now();
    let mut saves = 0u64;
    let mut next_probe = t0;
    let mut next_sample = t0;
    eprintln!(
        "rewind-bench: {} saves a second over {FILES} files for {} s",
        1000 / GAP.as_millis(),
        length.as_secs()
    );
    while t0.elapsed() < length {
        let now = Instant::now();
        if now >= next_sample {
            let kib = proc_status_kib(pid, "VmRSS")?;
            rss_mib.push((t0.elapsed().as_secs_f64(), kib as f64 / 1024.0));
            next_sample += SAMPLE;
        }
        for (f, l) in done_rx.try_iter() {
            busy.remove(&f);
            match l {
                Some(l) => lat.push(l),
                None => lost += 1,
            }
        }
        let probe = now >= next_probe;
        let file = loop {
            let f = rng.random_range(0..FILES);
            if !busy.contains_key(&f) {
                break f;
            }
        };
        let mut content = format!("save {saves} of the saves benchmark\n").into_bytes();
        let n = rng.random_range(2000..8000);
        text.fill(&mut content, n);
        if probe {
            // What the repository holds before the save: a version after
            // it is newer than this.
            probe_repo.refresh()?;
            let before = newest_seq(&probe_repo, &client, &keys[file])?;
            let start = Instant::now();
            save(&paths[file], &content, saves % 2 == 1)?;
            busy.insert(file, ());
            probe_tx
                .send(Probe {
                    file,
                    key: keys[file].clone(),
                    before,
                    start,
                })
                .context("the reader thread stopped")?;
            next_probe += Duration::from_secs(1);
        } else {
            save(&paths[file], &content, saves % 2 == 1)?;
        }
        saves += 1;
        let target = t0 + GAP * saves as u32;
        if let Some(left) = target.checked_duration_since(Instant::now()) {
            std::thread::sleep(left);
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = proc_cpu_seconds(pid, ticks)? - cpu0;
    drop(probe_tx);
    match reader.join() {
        Ok(r) => r?,
        Err(_) => bail!("the reader thread panicked"),
    }
    for (_, l) in done_rx.try_iter() {
        match l {
            Some(l) => lat.push(l),
            None => lost += 1,
        }
    }
    setup.wait_drained()?;
    let hwm = proc_status_kib(pid, "VmHWM")? as f64 / 1024.0;
    let versions = probe_repo.stats().map(|s| s.versions).unwrap_or(0);
    watch.stop_and_report(Duration::from_secs(60))?;

    lat.sort_by(f64::total_cmp);
    let p99 = quantile(&lat, 0.99);
    let minute = |from: f64, to: f64| {
        let w: Vec<f64> = rss_mib
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, r)| *r)
            .collect();
        w.iter().sum::<f64>() / w.len().max(1) as f64
    };
    // The first minute holds the agent's start; the second is the base.
    let first = if wall >= 180.0 {
        minute(60.0, 120.0)
    } else {
        minute(0.0, 60.0)
    };
    let last = minute(wall - 60.0, wall + 1.0);
    let max = rss_mib.iter().map(|(_, r)| *r).fold(0.0, f64::max);
    let growth = last - first;
    let flat = growth <= (first * 0.1).max(10.0);

    let mut s = String::new();
    let _ = writeln!(
        s,
        "`rewind watch` (release build, default settings) on a folder of {FILES} files of 2–8 KB in {DIRS} \
         folders; one save every {} ms ({:.0} a second) for {:.0} s, half of them in place and half \
         as an editor saves (a temporary file renamed over the old one), {saves} saves in all. Once a second a save is a \
         probe: its latency is the save's start to the moment a newer version of the file is visible to a reader \
         of the repository (`refresh` + `versions_of`, every {} ms). RSS of the agent every {} s.\n",
        GAP.as_millis(),
        saves as f64 / wall,
        wall,
        POLL.as_millis(),
        SAMPLE.as_secs()
    );
    let mut t = Table::new(&["probes", "p50", "p90", "p99", "max", "lost (> 30 s)"]);
    t.row(&[
        lat.len().to_string(),
        ms(quantile(&lat, 0.5)),
        ms(quantile(&lat, 0.9)),
        ms(p99),
        ms(quantile(&lat, 1.0)),
        lost.to_string(),
    ]);
    s.push_str(&t.render());
    let mut t = Table::new(&[
        "RSS, second minute",
        "RSS, last minute",
        "RSS max",
        "VmHWM",
        "agent CPU",
        "versions in the repository",
    ]);
    t.row(&[
        format!("{first:.1} MiB"),
        format!("{last:.1} MiB"),
        format!("{max:.1} MiB"),
        format!("{hwm:.1} MiB"),
        format!("{cpu:.1} s ({:.0} % of a core)", cpu / wall * 100.0),
        versions.to_string(),
    ]);
    s.push('\n');
    s.push_str(&t.render());
    let _ = writeln!(
        s,
        "\nRSS over the run (MiB, every {} s): {}\n",
        SAMPLE.as_secs() * 6,
        rss_mib
            .iter()
            .step_by(6)
            .map(|(_, r)| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        s,
        "Targets (issue 19): change → durable p99 ≤ 1 s: {} ({}); RSS flat over the run (last minute within \
         10 % or 10 MiB of the second): {} ({:+.1} MiB).",
        verdict(p99 <= 1.0 && lost == 0),
        ms(p99),
        verdict(flat),
        growth
    );
    Ok(s)
}
