//! Part 8: busy files (issue 16). A running `rewind watch` (default
//! settings: `busy_interval` 2 s) protects 20 files that never go quiet,
//! from a few KiB to 50 MiB, each rewritten in 4 KiB blocks at random
//! places every 10–50 ms; once on the work directory's filesystem (ext4
//! here) and once on a btrfs loop device made by the benchmark (reflinks,
//! when run as root with btrfs-progs). Sampled every 250 ms from the bench
//! process: the staleness of each file (now minus the time of its newest
//! version in the repository: how old a restore at this moment would be),
//! the agent's CPU, and the bytes the repository grew by.

use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rewind_core::{Repository, Timestamp};
use rewind_repo::LocalRepo;

use crate::Config;
use crate::agent::{Setup, Watch};
use crate::datagen::{derive_seed, random_bytes};
use crate::latency::quantile;
use crate::loopfs::LoopFs;
use crate::report::{Table, bytes, ms, verdict};
use crate::run::{clock_ticks, fresh_dir, proc_cpu_seconds};

/// File sizes, four files each.
const SIZES: [u64; 5] = [4 << 10, 64 << 10, 1 << 20, 8 << 20, 50 << 20];
/// Files per size.
const PER_SIZE: usize = 4;
/// How often staleness is sampled.
const SAMPLE: Duration = Duration::from_millis(250);

/// Figures of one filesystem.
struct Run {
    fs: String,
    /// Per size: staleness samples, seconds.
    staleness: Vec<Vec<f64>>,
    /// Per size: versions stored during the window.
    versions: Vec<u64>,
    /// Agent CPU, cores.
    cores: f64,
    /// Repository growth per minute.
    bytes_per_min: f64,
    secs: f64,
}

/// Run the part; its Markdown section.
pub fn run(cfg: &Config) -> Result<String> {
    let secs = (60.0 * cfg.scale).max(20.0);
    let base = fresh_dir(&cfg.work.join("busy"))?;
    let mut runs = vec![one(cfg, &base.join("ext4"), "work directory (ext4)", secs)?];
    if let Some(btrfs) = LoopFs::make("btrfs", "2G", &base.join("btrfs.img"), &base.join("btrfs"))?
    {
        let r = one(
            cfg,
            &btrfs.path().join("run"),
            "btrfs loop device (reflinks)",
            secs,
        );
        drop(btrfs);
        runs.push(r?);
    }
    Ok(render(&runs, secs))
}

fn one(cfg: &Config, base: &Path, fs_name: &str, secs: f64) -> Result<Run> {
    let base = fresh_dir(base)?;
    let dir = base.join("protected");
    fs::create_dir_all(&dir)?;
    let mut files: Vec<(PathBuf, u64)> = Vec::new();
    for (s, size) in SIZES.iter().enumerate() {
        for i in 0..PER_SIZE {
            let p = dir.join(format!("busy-{s}-{i}.bin"));
            fs::write(
                &p,
                random_bytes(derive_seed(cfg.seed, (s * 10 + i) as u64), *size as usize),
            )
            .with_context(|| p.display().to_string())?;
            files.push((p, *size));
        }
    }
    let setup = Setup::fresh(&cfg.rewind, &base.join("rewind"))?;
    let mut watch = Watch::start(&setup, &dir)?;
    watch.wait_for_line("first pass complete", Duration::from_secs(300))?;
    let repo = LocalRepo::open(&setup.repo)?;
    let client = setup.client()?;
    let canon = dir.canonicalize()?;
    let keys: Vec<Vec<u8>> = files
        .iter()
        .map(|(p, _)| {
            canon
                .join(p.file_name().expect("a file"))
                .as_os_str()
                .as_bytes()
                .to_vec()
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    // One writer per file: random 4 KiB blocks, every 10–50 ms.
    let writers: Vec<_> = files
        .iter()
        .enumerate()
        .map(|(n, (p, size))| {
            let (p, size, stop) = (p.clone(), *size, stop.clone());
            let seed = derive_seed(cfg.seed, 1000 + n as u64);
            std::thread::spawn(move || -> Result<()> {
                let mut rng = StdRng::seed_from_u64(seed);
                let f = OpenOptions::new().write(true).open(&p)?;
                let mut block = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    rng.fill(&mut block[..]);
                    let at = rng.random_range(0..size / 4096) * 4096;
                    f.write_all_at(&block, at)?;
                    std::thread::sleep(Duration::from_millis(rng.random_range(10..=50)));
                }
                Ok(())
            })
        })
        .collect();
    let ticks = clock_ticks();
    let before_versions: Vec<u64> = keys
        .iter()
        .map(|k| Ok(repo.versions_of(&client, k)?.len() as u64))
        .collect::<Result<_>>()?;
    let bytes0 = repo.stats()?.pack_bytes;
    let cpu0 = proc_cpu_seconds(watch.pid(), ticks)?;
    let t0 = Instant::now();
    let mut staleness: Vec<Vec<f64>> = vec![Vec::new(); SIZES.len()];
    // Let the writers make every file busy before sampling.
    std::thread::sleep(Duration::from_secs(3));
    while t0.elapsed().as_secs_f64() < secs {
        repo.refresh()?;
        let now = Timestamp::now();
        for (i, k) in keys.iter().enumerate() {
            if let Some(v) = repo.versions_of(&client, k)?.last() {
                staleness[i / PER_SIZE].push((now.0 - v.observed_at.0) as f64 / 1e9);
            }
        }
        std::thread::sleep(SAMPLE);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = proc_cpu_seconds(watch.pid(), ticks)?;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer thread")?;
    }
    repo.refresh()?;
    let bytes1 = repo.stats()?.pack_bytes;
    let mut versions = vec![0u64; SIZES.len()];
    for (i, k) in keys.iter().enumerate() {
        versions[i / PER_SIZE] += repo.versions_of(&client, k)?.len() as u64 - before_versions[i];
    }
    let _ = watch.stop(Duration::from_secs(120))?;
    for s in &mut staleness {
        s.sort_by(f64::total_cmp);
    }
    Ok(Run {
        fs: fs_name.to_string(),
        staleness,
        versions,
        cores: (cpu1 - cpu0) / elapsed,
        bytes_per_min: (bytes1.saturating_sub(bytes0)) as f64 * 60.0 / elapsed,
        secs: elapsed,
    })
}

fn render(runs: &[Run], secs: f64) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "`rewind watch` (release build, default settings: `--busy-interval 2s`) protects 20 files that never \
         go quiet: four each of {}, each rewritten in 4 KiB blocks at random places every 10–50 ms by its own \
         writer thread. For {secs:.0} s the bench samples every {} ms, for each file, the staleness: now minus \
         the time of its newest version in the repository (`LocalRepo::refresh` + `versions_of`), i.e. how old \
         a restore at that moment would be. CPU is the agent's (utime + stime from `/proc`).\n",
        SIZES
            .iter()
            .map(|b| bytes(*b))
            .collect::<Vec<_>>()
            .join(", "),
        SAMPLE.as_millis()
    );
    let mut t = Table::new(&[
        "filesystem",
        "file size",
        "staleness p50",
        "p99",
        "max",
        "versions / file / min",
    ]);
    for r in runs {
        for (i, size) in SIZES.iter().enumerate() {
            let st = &r.staleness[i];
            t.row(&[
                r.fs.clone(),
                bytes(*size),
                ms(quantile(st, 0.5)),
                ms(quantile(st, 0.99)),
                ms(quantile(st, 1.0)),
                format!(
                    "{:.1}",
                    r.versions[i] as f64 / PER_SIZE as f64 * 60.0 / r.secs
                ),
            ]);
        }
    }
    s.push_str(&t.render());
    let mut t = Table::new(&["filesystem", "agent CPU (cores)", "stored per minute"]);
    for r in runs {
        t.row(&[
            r.fs.clone(),
            format!("{:.3}", r.cores),
            bytes(r.bytes_per_min as u64),
        ]);
    }
    s.push('\n');
    s.push_str(&t.render());
    let p99 = |r: &Run, upto: u64| {
        SIZES
            .iter()
            .enumerate()
            .filter(|(_, sz)| **sz <= upto)
            .map(|(i, _)| quantile(&r.staleness[i], 0.99))
            .fold(0.0f64, f64::max)
    };
    let ext4 = &runs[0];
    let _ = writeln!(
        s,
        "\nTargets: staleness p99 ≤ 3 s for busy files up to 1 MiB on ext4: {} (worst p99 {}); ",
        verdict(p99(ext4, 1 << 20) <= 3.0),
        ms(p99(ext4, 1 << 20))
    );
    match runs.get(1) {
        Some(b) => {
            let _ = writeln!(
                s,
                "up to 50 MiB on a filesystem with reflinks: {} (worst p99 {}); ",
                verdict(p99(b, 50 << 20) <= 3.0),
                ms(p99(b, 50 << 20))
            );
        }
        None => s.push_str("up to 50 MiB with reflinks: not measured (no btrfs run); "),
    }
    let worst_cpu = runs.iter().map(|r| r.cores).fold(0.0f64, f64::max);
    let _ = writeln!(
        s,
        "under a quarter of a core for the 20 files together: {} (worst {:.3} cores). Files larger than the \
         gap between their writes that no filesystem here lets rewind copy consistently (ext4 has no reflinks) \
         show their staleness above and are reported as busy by `rewind status`; they are not counted as met.",
        verdict(worst_cpu < 0.25),
        worst_cpu
    );
    s
}
