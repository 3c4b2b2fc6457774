//! Part 2: change-to-durable latency. A running `rewind watch` (default
//! settings) protects a small folder; the bench writes a file and polls the
//! repository in process until a newer version of that path is committed.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rewind_core::{Repository, Timestamp};
use rewind_repo::LocalRepo;

use crate::Config;
use crate::agent::{Setup, Watch};
use crate::datagen::{TextGen, derive_seed};
use crate::report::{Table, ms, verdict};
use crate::run::fresh_dir;

/// Files written in turn.
const FILES: usize = 10;
/// Poll period of the repository.
const POLL: Duration = Duration::from_millis(5);
/// A write not durable after this long counts as lost.
const GIVE_UP: Duration = Duration::from_secs(20);

/// The `q`-quantile (0..=1) of sorted samples, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn newest_seq(
    repo: &LocalRepo,
    client: &str,
    path: &[u8],
) -> Result<Option<(u64, Timestamp, u64)>> {
    let vs = repo.versions_of(client, path)?;
    Ok(vs.last().map(|v| (v.seq, v.observed_at, v.size())))
}

/// Run the latency part; returns its Markdown section.
pub fn run(cfg: &Config) -> Result<String> {
    let base = fresh_dir(&cfg.work.join("latency"))?;
    let dir = base.join("protected");
    fs::create_dir_all(dir.join("sub"))?;
    let mut text = TextGen::new(cfg.seed, derive_seed(cfg.seed, 1));
    let paths: Vec<PathBuf> = (0..FILES)
        .map(|i| {
            if i % 2 == 0 {
                dir.join(format!("note-{i}.txt"))
            } else {
                dir.join("sub").join(format!("note-{i}.txt"))
            }
        })
        .collect();
    for p in &paths {
        fs::write(p, text.bytes(3000))?;
    }
    let setup = Setup::fresh(&cfg.rewind, &base.join("rewind"))?;
    let mut watch = Watch::start(&setup, &dir)?;
    watch.wait_for_line("first pass complete", Duration::from_secs(120))?;
    let repo = LocalRepo::open(&setup.repo)?;
    let client = setup.client()?;
    let keys = crate::agent::stored_paths(&dir, &paths)?;

    // Wait for the first pass to reach the repository.
    let mut last = [0u64; FILES];
    let t = Instant::now();
    for (k, key) in keys.iter().enumerate() {
        loop {
            repo.refresh()?;
            if let Some((seq, _, _)) = newest_seq(&repo, &client, key)? {
                last[k] = seq;
                break;
            }
            if t.elapsed() > Duration::from_secs(60) {
                bail!(
                    "the first pass of {} never reached the repository",
                    dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let initial_versions: usize = keys
        .iter()
        .map(|k| repo.versions_of(&client, k).map(|v| v.len()))
        .sum::<Result<usize, _>>()?;

    eprintln!(
        "rewind-bench: {} writes, ~0.5-1 s apart",
        cfg.latency_writes
    );
    let mut rng = StdRng::seed_from_u64(derive_seed(cfg.seed, 2));
    let mut lat = Vec::new();
    let mut seen_delay = Vec::new();
    let mut lost = 0usize;
    let mut wrong_size = 0usize;
    for i in 0..cfg.latency_writes {
        let k = i % FILES;
        let mut content = format!("write {i} of the latency benchmark\n").into_bytes();
        let n = rng.random_range(2000..6000);
        text.fill(&mut content, n);
        let t0 = Instant::now();
        let w0 = SystemTime::now();
        fs::write(&paths[k], &content).with_context(|| paths[k].display().to_string())?;
        loop {
            repo.refresh()?;
            if let Some((seq, observed, size)) = newest_seq(&repo, &client, &keys[k])?
                && seq > last[k]
            {
                lat.push(t0.elapsed().as_secs_f64());
                last[k] = seq;
                let seen = observed.0 as f64 / 1e9 - Timestamp::from_system(w0).0 as f64 / 1e9;
                seen_delay.push(seen);
                if size != content.len() as u64 {
                    wrong_size += 1;
                }
                break;
            }
            if t0.elapsed() > GIVE_UP {
                lost += 1;
                break;
            }
            std::thread::sleep(POLL);
        }
        let gap = Duration::from_secs_f64(rng.random_range(0.5..1.0));
        if let Some(left) = gap.checked_sub(t0.elapsed()) {
            std::thread::sleep(left);
        }
    }
    // Let stragglers land, then count versions per write.
    std::thread::sleep(Duration::from_secs(2));
    repo.refresh()?;
    let final_versions: usize = keys
        .iter()
        .map(|k| repo.versions_of(&client, k).map(|v| v.len()))
        .sum::<Result<usize, _>>()?;
    let packs = repo.stats()?.packs;
    watch.stop_and_report(Duration::from_secs(60))?;

    lat.sort_by(f64::total_cmp);
    seen_delay.sort_by(f64::total_cmp);
    let p99 = quantile(&lat, 0.99);
    let mut t = Table::new(&[
        "samples",
        "min",
        "p50",
        "p90",
        "p99",
        "max",
        "mean",
        "lost (> 20 s)",
    ]);
    let mean = lat.iter().sum::<f64>() / lat.len().max(1) as f64;
    t.row(&[
        lat.len().to_string(),
        ms(quantile(&lat, 0.0)),
        ms(quantile(&lat, 0.5)),
        ms(quantile(&lat, 0.9)),
        ms(p99),
        ms(quantile(&lat, 1.0)),
        ms(mean),
        lost.to_string(),
    ]);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "`rewind watch` (release build, default `--quiescence 300ms`, `--max-interval 60s`) on a folder of \
         {FILES} files; {} writes of 2–6 KB of new text, rotating over the {FILES} files, {}–{} ms apart \
         (start to start; the next write waits for the previous one to be found). Latency = the write's start \
         to the moment a version with a higher `seq` is visible in the repository (`LocalRepo::refresh` + \
         `versions_of`, polled every {} ms from the bench process).\n",
        cfg.latency_writes,
        500,
        1000,
        POLL.as_millis()
    );
    s.push_str(&t.render());
    let _ = writeln!(
        s,
        "\nTarget p99 ≤ 1.5 s: {} (p99 = {}).\n",
        verdict(p99 <= 1.5 && lost == 0),
        ms(p99)
    );
    let extra = final_versions as i64 - initial_versions as i64 - cfg.latency_writes as i64;
    let _ = writeln!(
        s,
        "Also: `observed_at` − write start: p50 {}, max {} (the watcher stamps the first event, as designed); \
         versions whose size differed from what was written: {wrong_size}; versions beyond one per write: {extra}; \
         packs in the repository afterwards: {packs} (one small pack per commit).",
        ms(quantile(&seen_delay, 0.5)),
        ms(quantile(&seen_delay, 1.0)),
    );
    Ok(s)
}
