//! Part `s3` (issue 20): rewind and restic against the same S3 server,
//! `s3s-fs` on loopback, in the same run: the first pass of the ingest
//! tree with a 1 GiB file added, an incremental backup after a 1 MiB
//! change in the middle of that file, a full restore and the restore of
//! one file of a few MiB; wall, CPU, peak RSS, and the HTTP requests of
//! each (counted by [`crate::proxy`], which stands between the tools and
//! the server).
//!
//! - Both tools encrypt (rewind's default on `s3://`; restic always), and
//!   both keep their local caches (rewind's index copies, restic's cache)
//!   from the backup to the restores, as a user's machine would.
//! - Rounds are interleaved: each round runs every operation for both
//!   tools, in fresh repositories, the order of the two tools alternating
//!   from round to round; medians over [`Config::ingest_runs`] rounds.
//! - `s3s-fs` must be a release build (a debug one is slow enough to be
//!   what is measured): `REWIND_BENCH_S3S_FS` names it.
//! - The tree is a hard-linked copy of the ingest tree (no second copy of
//!   its bytes on the disk) plus the file that changes, which is a file
//!   of its own, so the cached ingest tree is never written.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::agent::Setup;
use crate::datagen::{self, Kind, PlannedFile};
use crate::loopfs::LoopFs;
use crate::proxy::{Counts, Proxy};
use crate::report::{Table, bytes, median, secs, verdict};
use crate::run::{
    Cmd, Measured, clock_ticks, du_bytes, fresh_dir, measure, proc_cpu_seconds, sync,
};
use crate::server::{load, warm};
use crate::{Config, env};

/// Credentials of the benchmark's server (loopback only).
const ACCESS_KEY: &str = "rewind-bench";
const SECRET_KEY: &str = "rewind-bench-secret";
/// The bucket (a folder of the server's data directory).
const BUCKET: &str = "bench";
/// rewind's repository password (restic's is the bench's, `bench`).
const PASSWORD: &str = "rewind-bench s3 password";
/// The issue's target: restic's wall time over rewind's, first pass and
/// full restore.
const TARGET: f64 = 1.5;
/// The size of the change of the incremental backup (issue 20: 1 MiB).
const CHANGE: u64 = 1 << 20;
/// The name of the added file, at the top of the tree.
const BIG: &str = "s3-big.img";
/// How long the server may take to listen.
const START_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Tool {
    Rewind,
    Restic,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Rewind => "rewind",
            Tool::Restic => "restic",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    First,
    Incremental,
    Restore,
    RestoreOne,
}

impl Op {
    const ALL: [Op; 4] = [Op::First, Op::Incremental, Op::Restore, Op::RestoreOne];

    fn name(self) -> &'static str {
        match self {
            Op::First => "first pass",
            Op::Incremental => "incremental (1 MiB changed in the 1 GiB file)",
            Op::Restore => "full restore",
            Op::RestoreOne => "single-file restore",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Op::First => "first",
            Op::Incremental => "incr",
            Op::Restore => "restore",
            Op::RestoreOne => "restore-one",
        }
    }

    /// The issue's target applies to it.
    fn targeted(self) -> bool {
        matches!(self, Op::First | Op::Restore)
    }
}

/// One timed run.
struct Sample {
    m: Measured,
    /// What the proxy saw during it.
    counts: Counts,
    /// CPU seconds `s3s-fs` spent during it.
    server_cpu: f64,
    /// 1-minute load average before it.
    load: String,
}

/// A running `s3s-fs`, killed when dropped.
struct S3sFs {
    child: Child,
    port: u16,
}

impl S3sFs {
    fn start(bin: &Path, data: &Path, log: &Path) -> Result<S3sFs> {
        // A free port: bind one, let it go, hand it over.
        let port = TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
        let log = fs::File::create(log)?;
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(data)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let s = S3sFs { child, port };
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if t.elapsed() > START_DEADLINE {
                bail!("s3s-fs did not listen on port {port} within {START_DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(s)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn cpu(&self) -> f64 {
        proc_cpu_seconds(self.child.id(), clock_ticks()).unwrap_or(f64::NAN)
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `s3s-fs` binary: `REWIND_BENCH_S3S_FS`, which must be given.
pub(crate) fn s3s_fs_bin() -> Result<PathBuf> {
    let help = "set REWIND_BENCH_S3S_FS to a release build of s3s-fs \
                (cargo install s3s-fs@0.14.1 --features binary --locked --root DIR; \
                then DIR/bin/s3s-fs); the debug build of target/s3-server is too slow to measure against";
    let Some(p) = env("REWIND_BENCH_S3S_FS") else {
        bail!("the s3 part needs an s3s-fs server: {help}");
    };
    let p = PathBuf::from(p);
    if !p.is_file() {
        bail!("REWIND_BENCH_S3S_FS={}: no such file; {help}", p.display());
    }
    Ok(p)
}

/// Files and the sum of their sizes below `dir`.
fn files_and_bytes(dir: &Path) -> Result<(u64, u64)> {
    let (mut n, mut b) = (0, 0);
    for e in fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            let (n2, b2) = files_and_bytes(&e.path())?;
            n += n2;
            b += b2;
        } else if t.is_file() {
            n += 1;
            b += e.metadata()?.len();
        }
    }
    Ok((n, b))
}

/// Byte-for-byte equality of two files (`cmp`).
fn same_file(a: &Path, b: &Path) -> Result<()> {
    Cmd::new("cmp")
        .arg(a)
        .arg(b)
        .run_quiet()
        .map(|_| ())
        .with_context(|| format!("{} differs from {}", b.display(), a.display()))
}

/// The file of a few MiB that the single-file restore fetches: the one of
/// the plan closest to 4 MiB.
fn pick_one(files: &[PlannedFile]) -> Result<&PlannedFile> {
    files
        .iter()
        .filter(|f| matches!(f.kind, Kind::Text | Kind::Random))
        .min_by_key(|f| f.size.abs_diff(4 << 20))
        .context("the tree has no file to restore on its own")
}

/// Overwrite `CHANGE` bytes in the middle of `path` with bytes of `seed`;
/// returns where, and the bytes that were there (to put back: a copy of
/// the whole file would take another GiB of a shared disk).
fn change_middle(path: &Path, seed: u64) -> Result<(u64, Vec<u8>)> {
    let f = fs::OpenOptions::new().read(true).write(true).open(path)?;
    let len = f.metadata()?.len();
    let at = (len / 2).saturating_sub(CHANGE / 2);
    let mut old = vec![0; CHANGE.min(len) as usize];
    f.read_exact_at(&mut old, at)?;
    f.write_all_at(&datagen::random_bytes(seed, old.len()), at)?;
    f.sync_all()?;
    Ok((at, old))
}

/// Put back what [`change_middle`] overwrote.
fn put_back(path: &Path, (at, old): &(u64, Vec<u8>)) -> Result<()> {
    let f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all_at(old, *at)?;
    f.sync_all()?;
    Ok(())
}

/// Everything a round needs to run commands against the server.
struct Bench<'a> {
    cfg: &'a Config,
    server: &'a S3sFs,
    proxy: &'a Proxy,
    tree: &'a Path,
    logs: PathBuf,
    samples: BTreeMap<(Tool, Op), Vec<Sample>>,
    cmds: BTreeMap<(Tool, Op), Cmd>,
}

impl Bench<'_> {
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy.port())
    }

    /// `rewind --repo s3://BUCKET/PREFIX ARGS…` through the proxy.
    fn rewind(&self, setup: &Setup, cache: &Path, args: &[&std::ffi::OsStr]) -> Cmd {
        setup
            .cmd(args.iter().copied())
            .env("AWS_ENDPOINT_URL", self.endpoint())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_ALLOW_HTTP", "true")
            .env("REWIND_PASSWORD", PASSWORD)
            .env("REWIND_CACHE_DIR", cache)
    }

    /// `restic -r s3:http://127.0.0.1:PORT/BUCKET/PREFIX ARGS…` through
    /// the proxy.
    fn restic(&self, prefix: &str, cache: &Path, args: &[&str]) -> Cmd {
        crate::run::restic_at(
            cache,
            format!("s3:{}/{BUCKET}/{prefix}", self.endpoint()),
            args,
        )
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    }

    /// Time `cmd`: sync, warm the tree when it is read, run, sync.
    fn timed(&mut self, tool: Tool, op: Op, cmd: Cmd, reads_tree: bool) -> Result<()> {
        sync()?;
        if reads_tree {
            warm(&[self.tree])?;
        }
        let round = self.samples.get(&(tool, op)).map_or(0, Vec::len) + 1;
        eprintln!(
            "rewind-bench: {} {} (run {round}): {}",
            tool.name(),
            op.name(),
            cmd.display()
        );
        let load = load();
        let (before, cpu) = (self.proxy.counts(), self.server.cpu());
        let log = self
            .logs
            .join(format!("{}-{}-{round}.log", tool.name(), op.short()));
        let m = measure(&cmd, &log)?;
        let counts = self.proxy.counts().since(&before);
        let server_cpu = self.server.cpu() - cpu;
        sync()?;
        eprintln!(
            "rewind-bench:   {:.1} s wall, {:.1} s CPU, {} peak RSS; {} requests ({}); s3s-fs {:.1} s CPU",
            m.wall,
            m.cpu(),
            bytes(m.max_rss_kib * 1024),
            counts.total(),
            counts.describe(),
            server_cpu
        );
        self.samples.entry((tool, op)).or_default().push(Sample {
            m,
            counts,
            server_cpu,
            load,
        });
        self.cmds.insert((tool, op), cmd);
        Ok(())
    }

    fn runs(&self, tool: Tool, op: Op) -> &[Sample] {
        self.samples.get(&(tool, op)).map_or(&[], Vec::as_slice)
    }

    fn median(&self, tool: Tool, op: Op, f: impl Fn(&Sample) -> f64) -> f64 {
        median(&self.runs(tool, op).iter().map(f).collect::<Vec<_>>())
    }

    fn wall(&self, tool: Tool, op: Op) -> f64 {
        self.median(tool, op, |s| s.m.wall)
    }

    fn requests(&self, tool: Tool, op: Op) -> f64 {
        self.median(tool, op, |s| s.counts.total() as f64)
    }
}

/// Repository sizes of one tool, bytes: after the first pass, after the
/// incremental backup.
#[derive(Default)]
struct Stored {
    first: Vec<u64>,
    incremental: Vec<u64>,
}

/// Run the S3 part; returns its Markdown section.
pub fn run(cfg: &Config) -> Result<String> {
    let s3s = s3s_fs_bin()?;
    let big_mib: u64 = match env("REWIND_BENCH_S3_BIG_MIB") {
        Some(s) => s.parse().context("REWIND_BENCH_S3_BIG_MIB")?,
        None => 1024,
    };
    ensure!(big_mib >= 2, "REWIND_BENCH_S3_BIG_MIB must be at least 2");
    let source = cfg.tree()?;
    let (dirs, files) = datagen::plan_tree(cfg.seed, cfg.scale);
    let sum = datagen::summarize(&dirs, &files);
    let one = pick_one(&files)?;
    let base = fresh_dir(&cfg.work.join("s3"))?;
    let logs = fresh_dir(&base.join("logs"))?;

    // The tree: hard links to the ingest tree, and the file that changes.
    let tree = base.join("tree");
    Cmd::new("cp")
        .arg("-al")
        .arg(&source)
        .arg(&tree)
        .run_quiet()?;
    let big = PlannedFile {
        rel: PathBuf::from(BIG),
        kind: Kind::Mixed,
        size: big_mib << 20,
        seed: datagen::derive_seed(cfg.seed, 0x5333),
    };
    datagen::write_extra(&tree, cfg.seed, &big)?;
    let tree_bytes = sum.bytes + big.size;

    let store = fresh_dir(&base.join("store"))?;
    fs::create_dir_all(store.join(BUCKET))?;
    let server = S3sFs::start(&s3s, &store, &logs.join("s3s-fs.log"))?;
    let proxy = Proxy::start(server.addr())?;
    let mut b = Bench {
        cfg,
        server: &server,
        proxy: &proxy,
        tree: &tree,
        logs: logs.clone(),
        samples: BTreeMap::new(),
        cmds: BTreeMap::new(),
    };
    let mut stored: BTreeMap<Tool, Stored> = BTreeMap::new();
    let tree_os = tree.as_os_str();
    let one_path = tree.join(&one.rel);
    // Restores go to an ext4 made here with its defaults, a journal
    // included, as on a desktop: the work directory's filesystem may be
    // an ext4 without a journal (this VM's is), where every file created
    // scans past the inodes deleted in the last minute or more
    // (`recently_deleted`), and the benchmark deletes each restore's five
    // thousand files seconds before the next: a quarter of rewind's
    // restore CPU was that scan (docs/benchmarks.md).
    let restore_fs = match env("REWIND_BENCH_S3_RESTORE_TO").as_deref() {
        None | Some("ext4") => LoopFs::make(
            "ext4",
            "4G",
            &base.join("restore-ext4.img"),
            &base.join("restore-ext4"),
        )?,
        Some("work") => None,
        Some(other) => bail!("REWIND_BENCH_S3_RESTORE_TO={other:?}: `ext4` or `work`"),
    };
    let restore_base = restore_fs
        .as_ref()
        .map_or(base.clone(), |f| f.path().to_path_buf());

    for round in 0..cfg.ingest_runs {
        // The tools take turns going first.
        let order = if round % 2 == 0 {
            [Tool::Rewind, Tool::Restic]
        } else {
            [Tool::Restic, Tool::Rewind]
        };
        let rw_prefix = format!("rewind-{round}");
        let rs_prefix = format!("restic-{round}");
        let rw_cache = base.join(format!("rewind-cache-{round}"));
        let rs_cache = base.join(format!("restic-cache-{round}"));
        let setup = Setup {
            bin: cfg.rewind.clone(),
            repo: PathBuf::from(format!("s3://{BUCKET}/{rw_prefix}")),
            state: fresh_dir(&base.join(format!("rewind-state-{round}")))?,
            home: fresh_dir(&base.join(format!("rewind-home-{round}")))?,
        };
        // Untimed: repositories made.
        b.rewind(&setup, &rw_cache, &["init".as_ref()])
            .run_quiet()?;
        b.restic(&rs_prefix, &rs_cache, &["init"]).run_quiet()?;

        // The backup command of each tool, the same for both passes.
        let backup = |b: &Bench<'_>, tool: Tool| match tool {
            Tool::Rewind => b.rewind(
                &setup,
                &rw_cache,
                &["watch".as_ref(), tree_os, "--once".as_ref()],
            ),
            Tool::Restic => b.restic(&rs_prefix, &rs_cache, &["backup"]).arg(&tree),
        };
        for tool in order {
            let cmd = backup(&b, tool);
            b.timed(tool, Op::First, cmd, true)?;
        }
        let size = |prefix: &str| du_bytes(&store.join(BUCKET).join(prefix));
        stored
            .entry(Tool::Rewind)
            .or_default()
            .first
            .push(size(&rw_prefix)?);
        stored
            .entry(Tool::Restic)
            .or_default()
            .first
            .push(size(&rs_prefix)?);

        let changed = change_middle(
            &tree.join(BIG),
            datagen::derive_seed(cfg.seed, 0x5334 + round as u64),
        )?;
        for tool in order {
            let cmd = backup(&b, tool);
            b.timed(tool, Op::Incremental, cmd, true)?;
        }
        stored
            .entry(Tool::Rewind)
            .or_default()
            .incremental
            .push(size(&rw_prefix)?);
        stored
            .entry(Tool::Restic)
            .or_default()
            .incremental
            .push(size(&rs_prefix)?);

        // Full restores, each checked (file count, bytes, the changed
        // file byte for byte) and removed before the next.
        let want = files_and_bytes(&tree)?;
        for tool in order {
            let dest = restore_base.join("restored");
            if dest.exists() {
                fs::remove_dir_all(&dest)?;
            }
            let (cmd, root) = match tool {
                Tool::Rewind => (
                    b.rewind(
                        &setup,
                        &rw_cache,
                        &[
                            "restore".as_ref(),
                            tree_os,
                            "--at".as_ref(),
                            "now".as_ref(),
                            "--to".as_ref(),
                            dest.as_os_str(),
                        ],
                    ),
                    dest.clone(),
                ),
                Tool::Restic => (
                    b.restic(&rs_prefix, &rs_cache, &["restore", "latest", "--target"])
                        .arg(&dest),
                    // restic restores the absolute path below the target.
                    dest.join(tree.strip_prefix("/").unwrap_or(&tree)),
                ),
            };
            b.timed(tool, Op::Restore, cmd, false)?;
            let got = files_and_bytes(&root)?;
            ensure!(
                got == want,
                "{}'s restore has {} files of {} bytes, the tree {} of {}",
                tool.name(),
                got.0,
                got.1,
                want.0,
                want.1
            );
            same_file(&tree.join(BIG), &root.join(BIG))?;
            fs::remove_dir_all(&dest)?;
        }

        for tool in order {
            let dest = restore_base.join("restored-one");
            if dest.exists() {
                fs::remove_dir_all(&dest)?;
            }
            let (cmd, file) = match tool {
                Tool::Rewind => {
                    fs::create_dir_all(&dest)?;
                    let to = dest.join("file");
                    (
                        b.rewind(
                            &setup,
                            &rw_cache,
                            &[
                                "restore".as_ref(),
                                one_path.as_os_str(),
                                "--at".as_ref(),
                                "now".as_ref(),
                                "--to".as_ref(),
                                to.as_os_str(),
                            ],
                        ),
                        to,
                    )
                }
                Tool::Restic => (
                    b.restic(&rs_prefix, &rs_cache, &["restore", "latest", "--target"])
                        .arg(&dest)
                        .arg("--include")
                        .arg(&one_path),
                    dest.join(one_path.strip_prefix("/").unwrap_or(&one_path)),
                ),
            };
            b.timed(tool, Op::RestoreOne, cmd, false)?;
            same_file(&one_path, &file)?;
            fs::remove_dir_all(&dest)?;
        }

        // The 1 GiB file as it was, for the next round's first pass.
        put_back(&tree.join(BIG), &changed)?;
        for prefix in [&rw_prefix, &rs_prefix] {
            fs::remove_dir_all(store.join(BUCKET).join(prefix))?;
        }
        for d in [&rw_cache, &rs_cache, &setup.state, &setup.home] {
            let _ = fs::remove_dir_all(d);
        }
        eprintln!(
            "rewind-bench: round {} of {} done",
            round + 1,
            cfg.ingest_runs
        );
    }
    let restore_to = match &restore_fs {
        Some(_) => {
            "an ext4 on a loop device made by the benchmark (`mkfs.ext4` defaults: with a journal)"
        }
        None => "the work directory",
    };
    let out = report(&b, &stored, &sum, tree_bytes, one, big_mib, restore_to);
    drop(b);
    drop(proxy);
    drop(server);
    drop(restore_fs);
    fs::remove_dir_all(&base)?;
    out
}

fn report(
    b: &Bench<'_>,
    stored: &BTreeMap<Tool, Stored>,
    sum: &datagen::TreeSummary,
    tree_bytes: u64,
    one: &PlannedFile,
    big_mib: u64,
    restore_to: &str,
) -> Result<String> {
    const GIB: f64 = (1u64 << 30) as f64;
    let med = |v: &[u64]| median(&v.iter().map(|&x| x as f64).collect::<Vec<_>>());
    let stored_first = |t: Tool| med(&stored[&t].first);
    let stored_incr = |t: Tool| med(&stored[&t].incremental);

    // Wall times side by side, with the target.
    let mut w = Table::new(&[
        "operation",
        "rewind wall",
        "restic wall",
        "restic / rewind",
        "target",
        "verdict",
    ]);
    for op in Op::ALL {
        let (rw, rs) = (b.wall(Tool::Rewind, op), b.wall(Tool::Restic, op));
        let x = rs / rw;
        w.row(&[
            op.name().to_string(),
            secs(rw),
            secs(rs),
            format!("{x:.2}×"),
            if op.targeted() {
                format!("≥ {TARGET}×")
            } else {
                "—".into()
            },
            if op.targeted() {
                verdict(x >= TARGET).to_string()
            } else {
                String::new()
            },
        ]);
    }

    // Costs of each run, medians.
    let mut c = Table::new(&[
        "operation",
        "tool",
        "wall",
        "CPU (user+sys)",
        "peak RSS",
        "s3s-fs CPU",
        "requests",
        "sent / received",
        "requests by kind (last round)",
    ]);
    for op in Op::ALL {
        for tool in [Tool::Rewind, Tool::Restic] {
            let runs = b.runs(tool, op);
            let Some(last) = runs.last() else { continue };
            let max_rss = runs.iter().map(|s| s.m.max_rss_kib).max().unwrap_or(0);
            c.row(&[
                op.name().to_string(),
                tool.name().to_string(),
                secs(b.wall(tool, op)),
                secs(b.median(tool, op, |s| s.m.cpu())),
                bytes(max_rss * 1024),
                secs(b.median(tool, op, |s| s.server_cpu)),
                format!("{:.0}", b.requests(tool, op)),
                format!(
                    "{} / {}",
                    bytes(b.median(tool, op, |s| s.counts.up as f64) as u64),
                    bytes(b.median(tool, op, |s| s.counts.down as f64) as u64)
                ),
                last.counts.describe(),
            ]);
        }
    }

    // Requests per GiB.
    let mut r = Table::new(&["requests (medians)", "rewind", "restic", "restic / rewind"]);
    let per = |name: String, f: &dyn Fn(Tool) -> f64, digits: usize| {
        let (rw, rs) = (f(Tool::Rewind), f(Tool::Restic));
        [
            name,
            format!("{rw:.digits$}"),
            format!("{rs:.digits$}"),
            format!("{:.2}×", rs / rw),
        ]
    };
    r.row(&per(
        "repository after the first pass, GiB".into(),
        &|t| stored_first(t) / GIB,
        2,
    ));
    r.row(&per(
        "repository after the incremental backup, GiB".into(),
        &|t| stored_incr(t) / GIB,
        2,
    ));
    r.row(&per(
        "first pass: requests per GiB stored".into(),
        &|t| b.requests(t, Op::First) / (stored_first(t) / GIB),
        0,
    ));
    r.row(&per(
        format!(
            "first pass: requests per GiB of the tree ({})",
            bytes(tree_bytes)
        ),
        &|t| b.requests(t, Op::First) / (tree_bytes as f64 / GIB),
        0,
    ));
    r.row(&per(
        "incremental backup: requests".into(),
        &|t| b.requests(t, Op::Incremental),
        0,
    ));
    r.row(&per(
        "incremental backup: MiB stored".into(),
        &|t| (stored_incr(t) - stored_first(t)) / (1u64 << 20) as f64,
        1,
    ));
    r.row(&per(
        "full restore: requests per GiB stored".into(),
        &|t| b.requests(t, Op::Restore) / (stored_incr(t) / GIB),
        0,
    ));
    r.row(&per(
        "single-file restore: requests".into(),
        &|t| b.requests(t, Op::RestoreOne),
        0,
    ));

    let mut each = Table::new(&[
        "operation",
        "tool",
        "wall of each run",
        "CPU of each run",
        "load average before",
    ]);
    for op in Op::ALL {
        for tool in [Tool::Rewind, Tool::Restic] {
            let runs = b.runs(tool, op);
            let list = |f: &dyn Fn(&Sample) -> f64| {
                runs.iter()
                    .map(|s| format!("{:.1}", f(s)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            each.row(&[
                op.name().to_string(),
                tool.name().to_string(),
                list(&|s| s.m.wall),
                list(&|s| s.m.cpu()),
                runs.iter()
                    .map(|s| s.load.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            ]);
        }
    }

    let mut s = String::new();
    let _ = writeln!(
        s,
        "Tree: the ingest tree ({} files, {}) and one {} file, `{BIG}` (first half text-like, second \
         half random), {} in all. Server: `s3s-fs` (release build) on 127.0.0.1, its data on the \
         work directory's disk; between each tool and the server, the benchmark's counting proxy \
         (loopback, one thread per connection and direction). rewind: `rewind init` (encrypted, the \
         default on `s3://`), then `rewind watch --once`, object_store's client with rewind's default \
         S3 settings; restic: `restic init` (repository version 2, compression auto), default \
         options (`-o s3.connections=5`). The incremental backup follows a 1 MiB overwrite in the \
         middle of `{BIG}`; the single-file restore fetches `{}` ({}). Before each backup the tree \
         is read once (untimed) to warm the page cache; `sync` after every run. {} rounds, each in \
         fresh repositories with every operation of both tools, which take turns going first; \
         medians. Full restores are checked (file count, bytes, `{BIG}` byte for byte), the single \
         file byte for byte. Restores go to {}.\n",
        sum.files,
        bytes(sum.bytes),
        bytes(big_mib << 20),
        bytes(tree_bytes),
        one.rel.display(),
        bytes(one.size),
        b.cfg.ingest_runs,
        restore_to,
    );
    s.push_str(&w.render());
    s.push('\n');
    s.push_str(&c.render());
    s.push('\n');
    s.push_str(&r.render());
    s.push('\n');
    s.push_str(&each.render());
    let work = b.cfg.work.display().to_string();
    let _ = writeln!(
        s,
        "\nCommands of the last round (`$W` = {work}; `PORT` = the proxy's; the repositories made \
         by `rewind init` and `restic init`, untimed):\n\n```sh"
    );
    for op in Op::ALL {
        for tool in [Tool::Rewind, Tool::Restic] {
            if let Some(cmd) = b.cmds.get(&(tool, op)) {
                let line = cmd
                    .display()
                    .replace(&work, "$W")
                    .replace(&format!("127.0.0.1:{}", b.proxy.port()), "127.0.0.1:PORT");
                let _ = writeln!(s, "{line}");
            }
        }
    }
    let _ = writeln!(s, "```");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_change_is_one_mib_in_the_middle() {
        let d = std::env::temp_dir().join(format!("rewind-bench-s3-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        let p = d.join("f");
        let before = vec![0u8; 4 << 20];
        fs::write(&p, &before).unwrap();
        let changed = change_middle(&p, 1).unwrap();
        let after = fs::read(&p).unwrap();
        put_back(&p, &changed).unwrap();
        assert_eq!(fs::read(&p).unwrap(), before);
        assert_eq!(after.len(), before.len());
        let changed: Vec<usize> = (0..after.len()).filter(|&i| after[i] != 0).collect();
        let (lo, hi) = (changed[0], *changed.last().unwrap());
        assert!(lo >= (3 << 19) && hi < (5 << 19), "{lo}..{hi}");
        assert!(hi - lo > (1 << 20) - 64);
        fs::remove_dir_all(&d).unwrap();
    }
}
