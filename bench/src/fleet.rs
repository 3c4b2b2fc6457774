//! Part 13: a fleet of clients against one `rewind-server` (issue 19).
//!
//! Issue 19's scale target: 100 clients of 10,000 files each against one
//! server; the server's peak memory and the aggregate throughput, with the
//! server's caps (16 streams per HTTP/2 connection, `--max-body-memory`)
//! at their defaults, so that the run also shows what they cost.
//!
//! - [`clients`] clients (own home, config, state and key each), each with
//!   a tree of [`files`] (10,000 at scale 1) small text files of its own (1–8 KiB,
//!   log-uniform, a seed per client: nothing dedups across clients),
//!   enrolled with one server on 127.0.0.1 first (not timed);
//! - then every client's `rewind watch TREE --once`, at most [`wave`] at
//!   once (all of them by default): a client starts as soon as a slot is
//!   free; wall time is first start to last exit;
//! - the server's RSS (`VmRSS`) and the machine's `MemAvailable` sampled
//!   every [`SAMPLE_EVERY`]; the server's peak is `VmHWM`, its CPU is
//!   counted from just before the first client starts;
//! - a client that fails (any exit but 0) fails the part, as does a first
//!   pass that captured fewer versions than its tree has files, a server
//!   that committed fewer versions than the clients captured, or a
//!   `rewind-server verify` (every chunk read and hashed) that finds damage;
//! - then the server started again on the same data with no client: its
//!   RSS is what the open repository alone costs, to tell it apart from
//!   what the clients' requests cost.
//!
//! Generated trees are kept in `WORK/fleet-trees` between runs (1 million
//! files take minutes to write); the server's data and the clients' state
//! are made afresh each run and deleted after it; the logs of the server
//! and of every client stay in `WORK/fleet-logs` until the next run.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::Config;
use crate::agent::parse_first_pass;
use crate::datagen::{TextGen, derive_seed};
use crate::report::{Table, bytes, median, secs, spread_secs};
use crate::run::{
    Cmd, Measured, clock_ticks, du_bytes, fresh_dir, measure, proc_cpu_seconds, proc_status_kib,
    sync,
};
use crate::server::{Client, Server, first_pass, load, metric, server_bin, warm};

/// Clients of the issue's target.
const CLIENTS: usize = 100;
/// Files per client of the issue's target.
const FILES: usize = 10_000;
/// Smallest and largest generated file: small text files, a few KiB on
/// average (log-uniform, mean 3.4 KiB), so that 100 clients' trees are
/// ~3.3 GiB and fit beside the other benchmarks on this disk (~30 GB free).
const FILE_MIN: u64 = 1024;
const FILE_MAX: u64 = 8 * 1024;
/// Files per directory of a generated tree (a hundred directories for the
/// issue's 10,000 files, like a small home directory).
const FILES_PER_DIR: usize = 100;
/// Bumped whenever the fleet trees' generator changes, so cached trees of
/// an older one are not reused.
const FLEET_GENERATOR_VERSION: u32 = 1;
/// How often the server's RSS and the machine's available memory are
/// sampled (the issue asks for 100–200 ms).
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// How long the reopened server idles before its RSS is read (it opened
/// the repository before it listened; a few seconds let startup settle).
const REOPEN_SETTLE: Duration = Duration::from_secs(3);

fn env_usize(name: &str, default: usize) -> Result<usize> {
    match crate::env(name) {
        Some(s) => {
            let n: usize = s.parse().with_context(|| name.to_string())?;
            if n == 0 {
                bail!("{name} must be at least 1");
            }
            Ok(n)
        }
        None => Ok(default),
    }
}

/// Clients: `REWIND_BENCH_FLEET_CLIENTS`, default [`CLIENTS`] (not scaled:
/// the issue's number is the point of the part).
pub fn clients() -> Result<usize> {
    env_usize("REWIND_BENCH_FLEET_CLIENTS", CLIENTS)
}

/// Files per client: `REWIND_BENCH_FLEET_FILES`, default [`FILES`] × the
/// scale (at least 100).
pub fn files(scale: f64) -> Result<usize> {
    env_usize(
        "REWIND_BENCH_FLEET_FILES",
        ((FILES as f64 * scale).round() as usize).max(100),
    )
}

/// Clients running at once: `REWIND_BENCH_FLEET_WAVE`, default all of them.
pub fn wave(clients: usize) -> Result<usize> {
    Ok(env_usize("REWIND_BENCH_FLEET_WAVE", clients)?.min(clients))
}

/// `MemAvailable` of `/proc/meminfo`, bytes.
fn mem_available() -> Option<u64> {
    let s = fs::read_to_string("/proc/meminfo").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|k| k * 1024)
}

/// One client's tree: `files` text files of [`FILE_MIN`]–[`FILE_MAX`] in
/// directories of [`FILES_PER_DIR`], all from `seed`. Returns the bytes.
fn write_tree(root: &Path, seed: u64, files: usize) -> Result<u64> {
    let mut rng = StdRng::seed_from_u64(derive_seed(seed, u64::MAX));
    let text = TextGen::new(seed, derive_seed(seed, u64::MAX - 1));
    let (lo, hi) = ((FILE_MIN as f64).ln(), (FILE_MAX as f64).ln());
    let mut total = 0;
    let mut buf = Vec::new();
    for i in 0..files {
        let dir = root.join(format!("d{:03}", i / FILES_PER_DIR));
        if i % FILES_PER_DIR == 0 {
            fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
        }
        let size = rng.random_range(lo..hi).exp().round() as usize;
        buf.clear();
        text.reseed(derive_seed(seed, i as u64))
            .fill(&mut buf, size);
        let path = dir.join(format!("f{i:05}.txt"));
        fs::write(&path, &buf).with_context(|| path.display().to_string())?;
        total += size as u64;
    }
    Ok(total)
}

/// The trees of `n` clients of `files` files each, generated if missing
/// (two threads); their roots and total bytes.
fn trees(cfg: &Config, n: usize, files: usize) -> Result<(Vec<PathBuf>, u64)> {
    let dir = cfg.work.join("fleet-trees");
    fs::create_dir_all(&dir)?;
    let roots: Vec<PathBuf> = (0..n)
        .map(|i| {
            dir.join(format!(
                "v{FLEET_GENERATOR_VERSION}-f{files}-seed{}-c{i:03}",
                cfg.seed
            ))
        })
        .collect();
    let sizes = Mutex::new(vec![0u64; n]);
    let next = AtomicUsize::new(0);
    let t = Instant::now();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(root) = roots.get(i) else {
                            return Ok(());
                        };
                        let done = root.with_extension("complete");
                        let size = match fs::read_to_string(&done) {
                            Ok(s) if root.is_dir() => s.trim().parse()?,
                            _ => {
                                if root.exists() {
                                    fs::remove_dir_all(root)?;
                                }
                                let seed = derive_seed(cfg.seed, 19_000 + i as u64);
                                let size = write_tree(root, seed, files)?;
                                fs::write(&done, format!("{size}\n"))?;
                                size
                            }
                        };
                        sizes.lock().expect("sizes")[i] = size;
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("generator thread panicked"))
            .collect::<Result<Vec<()>>>()
    })?;
    let total = sizes.into_inner().expect("sizes").iter().sum();
    eprintln!(
        "rewind-bench: {n} fleet trees of {files} files, {} in all, ready in {:.1} s",
        bytes(total),
        t.elapsed().as_secs_f64()
    );
    Ok((roots, total))
}

/// What `rewind-server verify --json` found.
struct Verified {
    wall: f64,
    ok: bool,
    packs: u64,
    chunks: u64,
    versions: u64,
    issues: usize,
}

fn verify(srv_bin: &Path, data: &Path) -> Result<(Verified, Cmd)> {
    let cmd = Cmd::new(srv_bin)
        .arg("--data")
        .arg(data)
        .args(["verify", "--json"]);
    eprintln!("rewind-bench: {}", cmd.display());
    let t = Instant::now();
    // Not `run_quiet`: verify exits 1 when it finds damage, and its report
    // is what says which.
    let out = cmd
        .command()
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", cmd.display()))?;
    let wall = t.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "verify printed {text:?} ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let verified = Verified {
        wall,
        ok: v["ok"].as_bool().unwrap_or(false) && out.status.success(),
        packs: n("packs"),
        chunks: n("chunks"),
        versions: n("versions"),
        issues: v["issues"].as_array().map_or(0, Vec::len),
    };
    if !verified.ok {
        bail!(
            "rewind-server verify found {} problems ({}): {}",
            verified.issues,
            out.status,
            v["issues"]
        );
    }
    eprintln!("rewind-bench:   {wall:.1} s, no damage");
    Ok((verified, cmd))
}

/// Run the fleet part; returns its Markdown section.
pub fn run(cfg: &Config) -> Result<String> {
    let n = clients()?;
    let files = files(cfg.scale)?;
    let wave = wave(n)?;
    let srv_bin = server_bin(cfg)?;
    let (trees, tree_bytes) = trees(cfg, n, files)?;
    let base = fresh_dir(&cfg.work.join("fleet"))?;
    let logs = fresh_dir(&cfg.work.join("fleet-logs"))?;
    let data = base.join("server");

    // Every client connects from 127.0.0.1, as machines behind one NAT
    // would: the per-address limit (16 by default) and the global cap
    // (256) are raised to two connections per running client. The caps
    // on memory (streams per connection, body memory) stay at their
    // defaults: they are what this part is about.
    let conns = (2 * wave).max(16);
    let server = Server::start_with(
        &srv_bin,
        &data,
        &logs.join("server.log"),
        &[
            ("--max-connections-per-address", conns.to_string()),
            ("--max-connections", conns.max(256).to_string()),
        ],
    )?;
    let t = Instant::now();
    let mut clients = Vec::new();
    for i in 0..n {
        let c = Client::fresh(&cfg.rewind, &base.join(format!("client-{i:03}")))?;
        c.enroll(&server, &format!("host-{i:03}"))?;
        clients.push(c);
    }
    eprintln!(
        "rewind-bench: {n} clients enrolled in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    sync()?;
    warm(&trees.iter().map(PathBuf::as_path).collect::<Vec<_>>())?;
    let load_before = load();
    let pid = server.pid();
    let ticks = clock_ticks();
    let cpu_before = proc_cpu_seconds(pid, ticks)?;
    let mem_before = mem_available().unwrap_or(0);
    eprintln!("rewind-bench: {n} clients uploading, at most {wave} at once");
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Measured>>>> = Mutex::new((0..n).map(|_| None).collect());
    let start = Instant::now();
    let (rss, mem_low) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..wave)
            .map(|_| {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return;
                        }
                        let log = logs.join(format!("client-{i:03}.log"));
                        let r = measure(&clients[i].watch_once(&trees[i]), &log);
                        if let Err(e) = &r {
                            eprintln!("rewind-bench:   client {i} failed: {e:#}");
                        }
                        results.lock().expect("results")[i] = Some(r);
                    }
                })
            })
            .collect();
        let mut rss = Vec::new();
        let mut mem_low = u64::MAX;
        while !workers.iter().all(|w| w.is_finished()) {
            if let Ok(k) = proc_status_kib(pid, "VmRSS") {
                rss.push(k * 1024);
            }
            if let Some(m) = mem_available() {
                mem_low = mem_low.min(m);
            }
            std::thread::sleep(SAMPLE_EVERY);
        }
        for w in workers {
            w.join().expect("client thread panicked");
        }
        (rss, mem_low)
    });
    let wall = start.elapsed().as_secs_f64();
    let results = results.into_inner().expect("results");
    sync()?;
    let server_cpu = proc_cpu_seconds(pid, ticks)? - cpu_before;
    let (_, server_hwm) = server.cost()?;
    let server_rss_end = proc_status_kib(pid, "VmRSS")? * 1024;
    let metrics = server.metrics()?;
    let (fingerprint, admin) = (server.fingerprint.clone(), server.admin.clone());
    server.stop()?;

    // Failures first: a fleet run that lost a client measured nothing.
    let mut measured = Vec::new();
    let mut failed = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Some(Ok(m)) => measured.push(m),
            Some(Err(e)) => failed.push(format!("client {i}: {e:#}")),
            None => failed.push(format!("client {i}: never ran")),
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {n} clients failed (logs in {}):\n{}",
            failed.len(),
            logs.display(),
            failed.join("\n")
        );
    }
    let mut captured = 0;
    for (i, m) in measured.iter().enumerate() {
        let c = parse_first_pass(&first_pass(m)).1.unwrap_or(0);
        if c < files as u64 {
            bail!(
                "client {i} captured {c} versions of its {files} files: {:?}",
                first_pass(m)
            );
        }
        captured += c;
    }
    let committed = metric(&metrics, "rewind_versions_committed_total");
    if committed < captured {
        bail!("the clients captured {captured} versions, the server committed {committed}");
    }
    let repo = du_bytes(&data.join("repo"))?;
    let (verified, verify_cmd) = verify(&srv_bin, &data)?;
    // What the open repository alone costs: the same data served afresh,
    // no client connected (the server opens the repository before it
    // listens), RSS after REOPEN_SETTLE.
    let again = Server::serve(
        &srv_bin,
        &data,
        &logs.join("server-reopened.log"),
        &[],
        fingerprint,
        admin,
    )?;
    std::thread::sleep(REOPEN_SETTLE);
    let reopened_rss = proc_status_kib(again.pid(), "VmRSS")? * 1024;
    again.stop()?;
    eprintln!(
        "rewind-bench:   the same data served afresh, no client: RSS {}",
        bytes(reopened_rss)
    );

    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let total_files = (n * files) as f64;
    let walls: Vec<f64> = measured.iter().map(|m| m.wall).collect();
    let client_cpu: f64 = measured.iter().map(Measured::cpu).sum();
    let client_rss = measured
        .iter()
        .map(|m| m.max_rss_kib * 1024)
        .max()
        .unwrap_or(0);
    let rss_median = median(&rss.iter().map(|&b| b as f64).collect::<Vec<_>>()) as u64;
    eprintln!(
        "rewind-bench:   {wall:.1} s for all, {:.0} files/s, {:.1} MiB/s; server {server_cpu:.1} s \
         CPU, peak RSS {}",
        total_files / wall,
        mib(tree_bytes) / wall,
        bytes(server_hwm)
    );

    let w = cfg.work.display().to_string();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{n} clients, one server: each client (own home, config, state and key) has a tree of \
         its own, {files} text files of 1–8 KiB (log-uniform) in directories of \
         {FILES_PER_DIR}, a seed per client ({} files, {} in all: every client uploads its own \
         bytes, nothing is shared between clients), enrolled first (not timed); the trees read \
         once (page cache warm); then every client's `rewind watch TREE --once`, at most {wave} \
         at once. The server runs with its default caps (16 streams per HTTP/2 connection, \
         `--max-body-memory` 1 GiB) and `--max-connections-per-address {conns}` (every client \
         connects from 127.0.0.1). The server's RSS and the machine's `MemAvailable` were \
         sampled every {} ms; the server's peak is `VmHWM`. Load average before: {load_before}; \
         `MemAvailable` before: {}.\n",
        n * files,
        bytes(tree_bytes),
        SAMPLE_EVERY.as_millis(),
        bytes(mem_before),
    );
    let mut t = Table::new(&["measure", "value"]);
    t.row(&["wall, first start to last exit".to_string(), secs(wall)]);
    t.row(&[
        "aggregate throughput".to_string(),
        format!(
            "{:.0} files/s, {:.1} MiB/s of source data",
            total_files / wall,
            mib(tree_bytes) / wall
        ),
    ]);
    t.row(&[
        "client walls (min / median / max)".to_string(),
        spread_secs(&walls),
    ]);
    t.row(&["client failures".to_string(), "0".to_string()]);
    t.row(&["server CPU (during the run)".to_string(), secs(server_cpu)]);
    t.row(&["clients' CPU (sum)".to_string(), secs(client_cpu)]);
    t.row(&["server peak RSS (`VmHWM`)".to_string(), bytes(server_hwm)]);
    t.row(&[
        "server RSS, median of samples / at the end".to_string(),
        format!("{} / {}", bytes(rss_median), bytes(server_rss_end)),
    ]);
    t.row(&[
        "the same data served afresh, no client: RSS".to_string(),
        bytes(reopened_rss),
    ]);
    t.row(&["largest client peak RSS".to_string(), bytes(client_rss)]);
    t.row(&[
        "lowest `MemAvailable` during the run".to_string(),
        bytes(if mem_low == u64::MAX { 0 } else { mem_low }),
    ]);
    t.row(&[
        "versions captured (sum) / committed by the server".to_string(),
        format!("{captured} / {committed}"),
    ]);
    t.row(&[
        "chunk data received (compressed) / requests".to_string(),
        format!(
            "{} / {}",
            bytes(metric(&metrics, "rewind_chunk_bytes_received_total")),
            metric(&metrics, "rewind_requests_total")
        ),
    ]);
    t.row(&[
        "uploads turned away for body memory (503, asked again)".to_string(),
        metric(&metrics, "rewind_bodies_busy_total").to_string(),
    ]);
    t.row(&[
        "5xx answers (all) / of them, argon2 slots busy (503, asked again)".to_string(),
        format!(
            "{} / {}",
            metric(&metrics, "rewind_server_errors_total"),
            metric(&metrics, "rewind_argon2_busy_total")
        ),
    ]);
    t.row(&[
        "connections refused / requests throttled".to_string(),
        format!(
            "{} / {}",
            metric(&metrics, "rewind_connections_refused_total"),
            metric(&metrics, "rewind_throttled_total")
        ),
    ]);
    t.row(&["server repository (`du -sb`)".to_string(), bytes(repo)]);
    t.row(&[
        "`rewind-server verify` (every chunk read and hashed)".to_string(),
        format!(
            "no damage: {} packs, {} chunks, {} versions, in {}",
            verified.packs,
            verified.chunks,
            verified.versions,
            secs(verified.wall)
        ),
    ]);
    s.push_str(&t.render());
    let _ = writeln!(
        s,
        "\nCommands (`$W` = {w}; `$W/bin/rewind` and `$W/bin/rewind-server` are copies of the \
         binaries given; the server made by `rewind-server --data DIR init` and served with \
         `rewind-server --data DIR serve --listen 127.0.0.1:0 --max-connections-per-address \
         {conns} --max-connections {}`, stopped with SIGTERM before `verify`; each client \
         enrolled with `rewind enroll URL --name NAME --token TOKEN --fingerprint SHA256:…`; \
         client 0's command, the others alike):\n\n```sh",
        conns.max(256)
    );
    let _ = writeln!(
        s,
        "{}",
        clients[0].watch_once(&trees[0]).display().replace(&w, "$W")
    );
    let _ = writeln!(s, "{}", verify_cmd.display().replace(&w, "$W"));
    let _ = writeln!(s, "```");

    // The server's data and the clients' state are as large as the trees;
    // the trees (and the logs, in `WORK/fleet-logs`) stay for the next run.
    fs::remove_dir_all(&base).with_context(|| format!("cannot remove {}", base.display()))?;
    Ok(s)
}
