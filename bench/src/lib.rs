//! rewind-bench: benchmarks of rewind against restic and borg on generated
//! data.
//!
//! Run with `cargo bench -p rewind-bench` (the `compare` bench target calls
//! [`run_from_env`]). Parts and sizes are chosen by environment variables,
//! see [`Config::from_env`]. The parts:
//!
//! - [`ingest`]: first pass over a ~2 GiB, ~50,000-file tree: rewind, restic,
//!   borg, and the `tar` (read) and `b3sum` (hash) limits;
//! - [`latency`]: change-to-durable latency of a running `rewind watch`;
//! - [`idle`]: CPU and memory of `rewind watch` over the big tree when
//!   nothing changes;
//! - [`chunks`]: what FastCDC bounds cost after small edits (in process);
//! - [`metadata`]: what extended attributes and ACLs cost a capture and a
//!   restore, and a large sparse file against restic;
//! - [`server`]: uploads to a `rewind-server` over loopback TLS against the
//!   embedded repository, 20 clients at once, and restores that fetch only
//!   what differs.
//! - [`dumps`]: a PostgreSQL dump streamed through rewind against the bare
//!   dump and against restic and borg reading stdin; dedup of later dumps.
//! - [`busy`]: 20 files that never go quiet (4 KiB to 50 MiB): staleness,
//!   CPU, bytes stored per minute, on ext4 and on a btrfs loop device.
//! - [`mount`]: `ls -R`, `ls -lR` and a full read of the ingest tree's
//!   newest point through `rewind mount`, `restic mount` and `borg mount`.
//! - [`ui`]: the web UI's endpoints on a year of history of the ingest
//!   tree's 50,000 files and a file with 10,000 versions.
//! - [`retention`]: forget and prune on a year of history (5 million
//!   versions), against `restic forget --prune` and `borg prune` +
//!   `compact`, and capture latency while a prune runs.
//! - [`history`]: `versions` and `ls --at` on a history of ten million
//!   versions, time and memory of each query.
//! - [`fleet`]: 100 clients of 10,000 files each against one
//!   `rewind-server` (issue 19): aggregate throughput, the server's peak
//!   memory and CPU, and a verify of its repository after.
//! - [`saves`]: 100 saves a second over 1,000 files for ten minutes
//!   (issue 19): change-to-durable latency of one save a second and the
//!   agent's RSS over the run.
//! - [`s3`]: rewind and restic against the same S3 server (`s3s-fs` on
//!   loopback, issue 20): first pass, incremental after a 1 MiB change in
//!   a 1 GiB file, full and single-file restore, and the HTTP requests of
//!   each, counted by [`proxy`].
//! - [`watchlimit`]: `rewind watch` with the inotify limit lowered to half
//!   the ingest tree's directories (issue 19): the limit warning, watched
//!   and unwatched directories, the idle CPU of the periodic rescans
//!   against the same agent with every directory watched, and the latency
//!   of a change in an unwatched directory.
//! - [`million`]: a million small files in a hundred thousand folders
//!   against restic (issue 19): first pass, a run with nothing changed,
//!   the resident agent idle.
//!
//! Each part prints a Markdown section; at scale 1.0 the sections also
//! replace the generated parts of `docs/benchmarks.md`.

pub mod agent;
pub mod busy;
pub mod chunks;
pub mod datagen;
pub mod dumps;
pub mod fleet;
pub mod floor;
pub mod history;
pub mod idle;
pub mod ingest;
pub mod latency;
pub mod loopfs;
pub mod metadata;
pub mod million;
pub mod mount;
pub mod proxy;
pub mod report;
pub mod retention;
pub mod run;
pub mod s3;
pub mod saves;
pub mod server;
pub mod ui;
pub mod watchlimit;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use report::Section;

/// A part of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// First-pass ingest against restic and borg.
    Ingest,
    /// Change-to-durable latency.
    Latency,
    /// Idle cost of a watching agent.
    Idle,
    /// Chunk size trade-offs.
    Chunks,
    /// Cost of extended attributes and ACLs; sparse files.
    Metadata,
    /// Uploads to and restores from a `rewind-server`.
    Server,
    /// Streaming database dumps against restic and borg on stdin.
    Dumps,
    /// Files that never go quiet: staleness, CPU, bytes stored.
    Busy,
    /// Browsing and reading through FUSE against restic and borg.
    Mount,
    /// The web UI's endpoints on a long history.
    Ui,
    /// Forget and prune on a year of history, against restic and borg.
    Retention,
    /// Queries on a history of ten million versions.
    History,
    /// Many clients of many files against one server.
    Fleet,
    /// A sustained stream of saves: latency and memory over ten minutes.
    Saves,
    /// rewind and restic on an S3 server.
    S3,
    /// Rescans of directories past the inotify watch limit.
    Watchlimit,
    /// A million files against restic: first pass, restart, idle agent.
    Million,
}

impl Part {
    /// All parts, in the order they run.
    pub const ALL: [Part; 17] = [
        Part::Ingest,
        Part::Latency,
        Part::Idle,
        Part::Chunks,
        Part::Metadata,
        Part::Server,
        Part::Dumps,
        Part::Busy,
        Part::Mount,
        Part::Ui,
        Part::Retention,
        Part::History,
        Part::Fleet,
        Part::Saves,
        Part::S3,
        Part::Watchlimit,
        Part::Million,
    ];

    /// Its name in `REWIND_BENCH`.
    pub fn name(self) -> &'static str {
        match self {
            Part::Ingest => "ingest",
            Part::Latency => "latency",
            Part::Idle => "idle",
            Part::Chunks => "chunks",
            Part::Metadata => "metadata",
            Part::Server => "server",
            Part::Dumps => "dumps",
            Part::Busy => "busy",
            Part::Mount => "mount",
            Part::Ui => "ui",
            Part::Retention => "retention",
            Part::History => "history",
            Part::Fleet => "fleet",
            Part::Saves => "saves",
            Part::S3 => "s3",
            Part::Watchlimit => "watchlimit",
            Part::Million => "million",
        }
    }
}

/// What to run and where.
#[derive(Clone, Debug)]
pub struct Config {
    /// Parts to run.
    pub parts: Vec<Part>,
    /// Size factor: 1.0 is the full benchmark, 0.01 a smoke run.
    pub scale: f64,
    /// Seed of all generated data.
    pub seed: u64,
    /// Work directory (generated trees are cached here between runs).
    pub work: PathBuf,
    /// The `rewind` binary (a private copy, `WORK/bin/rewind`, of the one
    /// built or given).
    pub rewind: PathBuf,
    /// Where to write the results, if anywhere.
    pub docs: Option<PathBuf>,
    /// Number of writes of the latency part.
    pub latency_writes: usize,
    /// Length of the idle measurement, seconds.
    pub idle_secs: u64,
    /// Rounds of the ingest, metadata, server and mount commands (medians are
    /// reported).
    pub ingest_runs: usize,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_path_buf()
}

impl Config {
    /// Read the configuration from the environment:
    ///
    /// | variable | default | meaning |
    /// | --- | --- | --- |
    /// | `REWIND_BENCH` | `ingest,latency,idle,chunks,metadata,server,dumps,busy,mount,ui,retention,history,fleet,saves` | parts to run (`s3` and `watchlimit` when named, or with `all`) |
    /// | `REWIND_BENCH_S3_RESTORE_TO` | `ext4` | where the s3 part restores to: `ext4`, a loop device it makes (root only; else the work directory), or `work`, the work directory |
    /// | `REWIND_BENCH_RETENTION_VERSIONS` | 5,000,000 × scale | versions of the retention part's year |
    /// | `REWIND_BENCH_RETENTION_SNAPSHOTS` | 35 | days of the retention part's comparison with restic and borg |
    /// | `REWIND_BENCH_RETENTION_SWEEP` | 1 | `0`: the retention part skips `--max-unused 0` and `30` |
    /// | `REWIND_BENCH_HISTORY_VERSIONS` | 10,000,000 × scale | versions of the history part's repository |
    /// | `REWIND_BENCH_HISTORY_BASELINE` | none | a second `rewind` binary the history part also runs |
    /// | `REWIND_BENCH_FLEET_CLIENTS` | 100 | clients of the fleet part |
    /// | `REWIND_BENCH_FLEET_FILES` | 10,000 × scale (at least 100) | files of each fleet client |
    /// | `REWIND_BENCH_FLEET_WAVE` | all clients | fleet clients running at once |
    /// | `REWIND_BENCH_S3S_FS` | none (the s3 part fails without it) | a release build of `s3s-fs`, the S3 server of the s3 part |
    /// | `REWIND_BENCH_S3_BIG_MIB` | 1024 | size of the file the s3 part adds to the tree and changes 1 MiB of |
    /// | `REWIND_BENCH_SCALE` | `1.0` | size factor (files, bytes, writes, seconds) |
    /// | `REWIND_BENCH_SEED` | `42` | seed of the generated data |
    /// | `REWIND_BENCH_DIR` | `/tmp/rewind-bench` | work directory |
    /// | `REWIND_BIN` | built: `cargo build --release -p rewind` | the rewind binary |
    /// | `REWIND_SERVER_BIN` | `rewind-server` beside the rewind binary | the server binary (parts `server`, `fleet`) |
    /// | `REWIND_BENCH_DOCS` | `1` at scale 1.0, else `0` | refresh `docs/benchmarks.md` |
    /// | `REWIND_BENCH_LATENCY_N` | 200 (× scale, at least 20) | latency samples |
    /// | `REWIND_BENCH_IDLE_SECS` | 60 (× scale, at least 5) | idle window |
    /// | `REWIND_BENCH_RUNS` | 3 (1 below scale 0.5) | rounds of the ingest, metadata, server, mount and s3 commands |
    pub fn from_env() -> Result<Config> {
        let parts = match env("REWIND_BENCH") {
            // s3 needs a server built by hand (REWIND_BENCH_S3S_FS), and
            // watchlimit user namespaces (`unshare --user`), which not
            // every machine allows, and million a tree of a million files
            // and about an hour: they run when named, or with `all`.
            None => Part::ALL
                .iter()
                .copied()
                .filter(|p| !matches!(p, Part::S3 | Part::Watchlimit | Part::Million))
                .collect(),
            Some(s) if s == "all" => Part::ALL.to_vec(),
            Some(s) => {
                let mut v = Vec::new();
                for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    match Part::ALL.iter().find(|p| p.name() == name) {
                        Some(p) => v.push(*p),
                        None => bail!(
                            "REWIND_BENCH: unknown part {name:?} (ingest, latency, idle, chunks, metadata, server, dumps, busy, mount, ui, retention, history, fleet, saves, s3, watchlimit, million, all)"
                        ),
                    }
                }
                // Run in the canonical order whatever the order given.
                Part::ALL
                    .iter()
                    .copied()
                    .filter(|p| v.contains(p))
                    .collect()
            }
        };
        let scale: f64 = match env("REWIND_BENCH_SCALE") {
            Some(s) => s.parse().context("REWIND_BENCH_SCALE")?,
            None => 1.0,
        };
        if !(scale > 0.0 && scale <= 4.0) {
            bail!("REWIND_BENCH_SCALE must be in (0, 4]");
        }
        let seed = match env("REWIND_BENCH_SEED") {
            Some(s) => s.parse().context("REWIND_BENCH_SEED")?,
            None => 42,
        };
        let work = env("REWIND_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp/rewind-bench"));
        let rewind = match env("REWIND_BIN") {
            Some(p) => PathBuf::from(p),
            None => build_rewind()?,
        };
        if !rewind.is_file() {
            bail!("no rewind binary at {}", rewind.display());
        }
        // Run a private copy: target/ is shared, and a rebuild during the
        // run must not swap the binary between parts.
        let bin_dir = work.join("bin");
        std::fs::create_dir_all(&bin_dir)?;
        let snapshot = bin_dir.join("rewind");
        let same = match (rewind.canonicalize(), snapshot.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if !same {
            let _ = std::fs::remove_file(&snapshot);
            std::fs::copy(&rewind, &snapshot).with_context(|| {
                format!("cannot copy {} to {}", rewind.display(), snapshot.display())
            })?;
        }
        let rewind = snapshot;
        let write_docs = match env("REWIND_BENCH_DOCS").as_deref() {
            Some("1") | Some("yes") | Some("true") => true,
            Some(_) => false,
            None => scale == 1.0,
        };
        let latency_writes = match env("REWIND_BENCH_LATENCY_N") {
            Some(s) => s.parse().context("REWIND_BENCH_LATENCY_N")?,
            None => ((200.0 * scale.min(1.0)).round() as usize).max(20),
        };
        let idle_secs = match env("REWIND_BENCH_IDLE_SECS") {
            Some(s) => s.parse().context("REWIND_BENCH_IDLE_SECS")?,
            None => ((60.0 * scale.min(1.0)).round() as u64).max(5),
        };
        let ingest_runs = match env("REWIND_BENCH_RUNS") {
            Some(s) => s.parse::<usize>().context("REWIND_BENCH_RUNS")?.max(1),
            None if scale >= 0.5 => 3,
            None => 1,
        };
        Ok(Config {
            ingest_runs,
            parts,
            scale,
            seed,
            work,
            rewind,
            docs: write_docs.then(|| workspace_root().join("docs/benchmarks.md")),
            latency_writes,
            idle_secs,
        })
    }

    /// The cached ingest tree of this scale and seed, generated if missing.
    pub fn tree(&self) -> Result<PathBuf> {
        let name = format!(
            "tree-v{}-s{}-seed{}",
            datagen::GENERATOR_VERSION,
            self.scale,
            self.seed
        );
        let root = self.work.join(&name);
        let done = self.work.join(format!("{name}.complete"));
        if done.exists() && root.is_dir() {
            return Ok(root);
        }
        if root.exists() {
            std::fs::remove_dir_all(&root)?;
        }
        eprintln!(
            "rewind-bench: generating {} (scale {}, seed {})",
            root.display(),
            self.scale,
            self.seed
        );
        let t = Instant::now();
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let s = datagen::generate_tree(&root, self.seed, self.scale, threads)?;
        run::sync()?;
        eprintln!(
            "rewind-bench: generated {} files, {} dirs, {} in {:.1}s",
            s.files,
            s.dirs,
            report::bytes(s.bytes),
            t.elapsed().as_secs_f64()
        );
        std::fs::write(&done, format!("{s:?}\n"))?;
        Ok(root)
    }
}

/// Build the rewind binary (`cargo build --release -p rewind`) and return
/// its path. Quick when it is up to date.
pub fn build_rewind() -> Result<PathBuf> {
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("rewind-bench: cargo build --release -p rewind (set REWIND_BIN to skip)");
    let st = std::process::Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--release", "-p", "rewind"])
        .status()
        .context("cannot run cargo")?;
    if !st.success() {
        bail!("cargo build --release -p rewind failed ({st})");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("release/rewind"))
}

/// Results shared between parts of one run (idle reuses ingest's rewind
/// repository, so its first pass is a no-change rescan).
#[derive(Default)]
pub struct Session {
    /// The rewind setup of the ingest part, once its first pass is done.
    pub ingested: Option<agent::Setup>,
}

/// Run the configured parts, print each section, and refresh the document
/// when configured to.
pub fn run_all(cfg: &Config) -> Result<()> {
    std::fs::create_dir_all(&cfg.work)?;
    if cfg.parts.contains(&Part::S3) {
        // Before hours of other parts, not after.
        s3::s3s_fs_bin()?;
    }
    let started = Instant::now();
    let mut session = Session::default();
    let mut sections = Vec::new();
    let machine = report::machine(&cfg.work, &cfg.rewind);
    println!("## Machine\n\n{machine}");
    sections.push(Section {
        name: "machine",
        body: format!(
            "Last refreshed {} (scale {}).\n\n{machine}",
            report::now_string(),
            cfg.scale
        ),
    });
    for part in &cfg.parts {
        eprintln!("rewind-bench: === {} ===", part.name());
        // Other work on the machine skews everything: say how busy it was.
        let load = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().map(str::to_string))
            .unwrap_or_else(|| "?".into());
        let t = Instant::now();
        let body = match part {
            Part::Ingest => ingest::run(cfg, &mut session)?,
            Part::Latency => latency::run(cfg)?,
            Part::Idle => idle::run(cfg, &mut session)?,
            Part::Chunks => chunks::run(cfg)?,
            Part::Metadata => metadata::run(cfg)?,
            Part::Server => server::run(cfg)?,
            Part::Dumps => dumps::run(cfg)?,
            Part::Busy => busy::run(cfg)?,
            Part::Mount => mount::run(cfg)?,
            Part::Ui => ui::run(cfg)?,
            Part::Retention => retention::run(cfg)?,
            Part::History => history::run(cfg)?,
            Part::Fleet => fleet::run(cfg)?,
            Part::Saves => saves::run(cfg)?,
            Part::S3 => s3::run(cfg)?,
            Part::Watchlimit => watchlimit::run(cfg)?,
            Part::Million => million::run(cfg)?,
        };
        let body = format!(
            "Measured {} at scale {} (seed {}); this part took {:.0} s; 1-minute load average \
             before it: {load}.\n\n{body}",
            report::now_string(),
            cfg.scale,
            cfg.seed,
            t.elapsed().as_secs_f64()
        );
        println!("{body}");
        sections.push(Section {
            name: part.name(),
            body,
        });
        if let Some(doc) = &cfg.docs {
            // After each part, so a later failure keeps what was measured.
            report::update_doc(doc, &sections)?;
        }
    }
    if let Some(doc) = &cfg.docs {
        eprintln!("rewind-bench: refreshed {}", doc.display());
    }
    eprintln!(
        "rewind-bench: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Entry point of the `compare` bench.
pub fn run_from_env() -> Result<()> {
    let cfg = Config::from_env()?;
    eprintln!(
        "rewind-bench: parts {:?}, scale {}, work dir {}, rewind {}",
        cfg.parts.iter().map(|p| p.name()).collect::<Vec<_>>(),
        cfg.scale,
        cfg.work.display(),
        cfg.rewind.display()
    );
    run_all(&cfg)
}
