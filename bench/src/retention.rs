//! Part 11: retention (issue 17): what forget and prune cost and save on
//! a year of history, against `restic forget --prune` and `borg prune` +
//! `borg compact`, and what a prune does to capture latency.
//!
//! **A. A year of history.** The ingest tree's plan (about 50,000 files in
//! 1,250 folders at scale 1) and ten hot files are committed to an
//! embedded repository through the repository API with synthetic times
//! (`now` minus a year to `now`), in time order, one commit per hour of
//! history that holds any change (the live agent commits within a second
//! and so makes smaller, more numerous packs):
//! - every file of the tree is created in the first month and changed
//!   three more times at random moments; one in thirty is deleted in the
//!   last six months. Each of these versions stores one chunk of 512 B to
//!   4 KiB of new text (not the file's whole content: the tree's 2 GiB
//!   would only add bulk the policy keeps anyway);
//! - the ten hot files change every second during one session a day (a
//!   random start between 08:00 and 14:00 UTC), each version one chunk of
//!   100–400 B of new text: the session length is chosen so that the
//!   history holds `REWIND_BENCH_RETENTION_VERSIONS` versions (default
//!   5,000,000 at scale 1).
//!
//! Then the real binary (`rewind forget`, default policy, then
//! `rewind prune`, each under `/usr/bin/time`, with `/proc/PID/io`'s
//! `write_bytes` read before the wrapping shell exits, which includes its
//! reaped children) on the repository; `--max-unused 0` and `30` on
//! copies of the forgotten repository.
//!
//! **B. Against restic and borg, equivalent histories.** A slice of the
//! ingest tree (the same generator at a smaller scale) plus ten 16 KiB hot
//! files gets `REWIND_BENCH_RETENTION_SNAPSHOTS` days (default 35) of
//! churn: each day the hot files are rewritten, 2 % of the other files get
//! 1 KiB of new text written over a random place, 0.2 % are deleted and as
//! many created. After each day's churn the same files on disk are stored
//! by `restic backup --time DAY 12:00`, `borg create --timestamp
//! DAYT12:00:00` and, for rewind, committed through the repository API
//! with `observed_at` = that same moment: every file that changed since
//! the day before is cut with the repository's chunker and its missing
//! chunks stored (whole chunks, no deltas against the previous version:
//! the agent would store many as deltas, so rewind's repository is if
//! anything larger than the agent's), deletions as tombstones. So the
//! three repositories hold the same N states of the same files at the
//! same times. Then the same policy: `restic forget --keep-daily 7
//! --keep-weekly 4 --prune`, `borg prune --keep-daily 7 --keep-weekly 4`
//! then `borg compact`, `rewind forget --policy 'daily 7d, weekly 28d'`
//! then `rewind prune`. The rules are not identical (restic and borg count
//! snapshots, rewind keeps the state at the end of each day or week by
//! age; borg does not count an archive kept by `daily` towards `weekly`),
//! so the states each one kept are reported beside the costs.
//!
//! **C. Capture latency during a prune.** `rewind watch` on a folder of ten
//! small files, with (a copy of) the forgotten year repository as its
//! repository; the latency part's method (write, poll the repository from
//! the bench process until a newer version is committed): samples while
//! idle, then `rewind prune` (done by the running agent, as the CLI does
//! when one runs) and writes back to back until it returns.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rewind_core::{
    ChunkRef, Chunker, DEFAULT_CHUNKER, EncodedChunk, Entry, FileKind, FileMeta, Repository,
    Timestamp, Version,
};
use rewind_repo::LocalRepo;

use crate::Config;
use crate::agent::{Setup, Watch};
use crate::datagen::{TextGen, derive_seed, generate_tree, plan_tree};
use crate::latency::quantile;
use crate::report::{Table, bytes, ms, secs, verdict};
use crate::run::{Cmd, Measured, du_bytes, fresh_dir, measure, restic};

pub(crate) const CLIENT: &str = "bench";
/// The protected folder the year history is recorded under.
pub(crate) const ROOT: &str = "/home/bench/tree";
pub(crate) const NS: i64 = 1_000_000_000;
const HOUR: i64 = 3600 * NS;
pub(crate) const DAY: i64 = 24 * HOUR;
/// Files that change every second during a session.
const HOT_FILES: usize = 10;
/// Versions of the year history at scale 1 (the issue's "at least 5
/// million").
const YEAR_VERSIONS: f64 = 5_000_000.0;
/// Days of the comparison with restic and borg.
const SNAPSHOTS: usize = 35;
/// Scale of the comparison's tree slice relative to the ingest tree (at
/// scale 1: about 2,000 files, 90 MB), small enough for 35 snapshots by
/// three tools in a few minutes on two shared cores.
const SLICE: f64 = 0.04;
/// The policy of part B for rewind, and restic's and borg's flags.
const CMP_POLICY: &str = "daily 7d, weekly 28d";
const CMP_KEEP: [&str; 4] = ["--keep-daily", "7", "--keep-weekly", "4"];

fn env_usize(name: &str) -> Result<Option<usize>> {
    match std::env::var(name).ok().filter(|v| !v.trim().is_empty()) {
        Some(v) => Ok(Some(v.trim().parse().context(name.to_string())?)),
        None => Ok(None),
    }
}

/// A measured command: its cost, what it wrote to storage, its stdout.
struct Io {
    m: Measured,
    write_bytes: u64,
    stdout: String,
}

/// Run `cmd` under `/usr/bin/time` through a shell that prints its own
/// `/proc/PID/io` before exiting (a reaped child's I/O is added to its
/// parent's): wall, CPU, peak RSS of the largest process, `write_bytes`
/// (bytes sent towards storage, counted when pages are dirtied) minus
/// `cancelled_write_bytes` (dirty pages of files removed before writeback).
fn measure_io(cmd: &Cmd, log: &Path) -> Result<Io> {
    let out = log.with_extension("out");
    let mut w = Cmd::shell(
        "out=\"$1\"; shift; \"$@\" >\"$out\"; s=$?; \
         grep -E '^(write_bytes|cancelled_write_bytes):' /proc/$$/io >&2; exit $s",
    )
    .arg("sh")
    .arg(&out)
    .arg(&cmd.program)
    .args(cmd.args.iter().cloned());
    w.env = cmd.env.clone();
    let m = measure(&w, log)?;
    let field = |name: &str| -> u64 {
        m.stderr_tail
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let write_bytes = field("write_bytes:").saturating_sub(field("cancelled_write_bytes:"));
    let stdout = fs::read_to_string(&out).unwrap_or_default();
    Ok(Io {
        m,
        write_bytes,
        stdout,
    })
}

fn file_version(seq: u64, path: Vec<u8>, time: i64, chunks: Vec<ChunkRef>) -> Version {
    let size = chunks.iter().map(|c| c.len as u64).sum();
    Version {
        client: CLIENT.into(),
        seq,
        observed_at: Timestamp(time),
        path,
        entry: Entry::Present {
            meta: FileMeta {
                size,
                mtime: rewind_core::FileTime {
                    sec: time.div_euclid(NS),
                    nsec: time.rem_euclid(NS) as u32,
                },
                ..FileMeta::new(FileKind::File, 0o644)
            },
            chunks,
            xattrs: vec![],
        },
    }
}

fn dir_version(seq: u64, path: Vec<u8>, time: i64) -> Version {
    let mut v = file_version(seq, path, time, vec![]);
    if let Entry::Present { meta, .. } = &mut v.entry {
        *meta = FileMeta {
            size: 4096,
            ..FileMeta::new(FileKind::Dir, 0o755)
        };
    }
    v
}

/// Encode on two threads (the machine has two cores).
fn encode_all(contents: &[Vec<u8>]) -> Vec<EncodedChunk> {
    if contents.len() < 256 {
        return contents.iter().map(|c| EncodedChunk::encode(c)).collect();
    }
    let mid = contents.len() / 2;
    let (a, b) = contents.split_at(mid);
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            b.iter()
                .map(|c| EncodedChunk::encode(c))
                .collect::<Vec<_>>()
        });
        let mut out: Vec<EncodedChunk> = a.iter().map(|c| EncodedChunk::encode(c)).collect();
        out.extend(h.join().expect("encoder thread panicked"));
        out
    })
}

/// What one change of the year history is.
#[derive(Clone, Copy)]
enum Change {
    Dir(usize),
    Cold(usize),
    Delete(usize),
    Hot(usize),
}

/// The year history's size and shape.
pub(crate) struct Year {
    pub versions: u64,
    pub hot_versions: u64,
    pub session_secs: i64,
    pub paths: usize,
    pub commits: u64,
    pub build_secs: f64,
    /// Bringing the version index on disk up to date after the last commit.
    pub index_secs: f64,
}

/// Part A's history (see the module doc), committed to a new repository
/// at `dir`.
pub(crate) fn build_year(cfg: &Config, dir: &Path, target: u64) -> Result<Year> {
    let t0 = Instant::now();
    let repo = LocalRepo::init(dir, DEFAULT_CHUNKER)?;
    repo.set_check_puts(false);
    let now = Timestamp::now().0;
    let start = now - 365 * DAY;
    let mut rng = StdRng::seed_from_u64(derive_seed(cfg.seed, 0x1700));
    let (dirs, files) = plan_tree(cfg.seed, cfg.scale.min(1.0));
    let mut cold: Vec<(i64, Change)> = Vec::new();
    cold.push((start, Change::Dir(usize::MAX)));
    for i in 0..dirs.len() {
        cold.push((start + 1, Change::Dir(i)));
    }
    for i in 0..files.len() {
        let created = start + 2 + rng.random_range(0..30 * DAY);
        let mut times = vec![created];
        for _ in 0..3 {
            times.push(rng.random_range(created + 1..now - HOUR));
        }
        times.sort_unstable();
        let last = *times.last().expect("four times");
        for t in times {
            cold.push((t, Change::Cold(i)));
        }
        if rng.random_range(0..30) == 0 {
            let t = (now - rng.random_range(HOUR..180 * DAY)).max(last + NS);
            if t < now - NS {
                cold.push((t, Change::Delete(i)));
            }
        }
    }
    cold.sort_by_key(|(t, _)| *t);
    let hot_versions = target.saturating_sub(cold.len() as u64);
    // One session a day in which each hot file changes every second.
    let session_secs = (hot_versions as f64 / (365.0 * HOT_FILES as f64)).ceil() as i64;
    if session_secs > 9 * 3600 {
        bail!("{target} versions need hot sessions of {session_secs} s a day (at most 9 h)");
    }
    let path_of = |c: Change| -> Vec<u8> {
        match c {
            Change::Dir(usize::MAX) => ROOT.as_bytes().to_vec(),
            Change::Dir(i) => format!("{ROOT}/{}", dirs[i].display()).into_bytes(),
            Change::Cold(i) | Change::Delete(i) => {
                format!("{ROOT}/{}", files[i].rel.display()).into_bytes()
            }
            Change::Hot(h) => format!("{ROOT}/hot/state-{h}.json").into_bytes(),
        }
    };
    let mut text = TextGen::new(cfg.seed, derive_seed(cfg.seed, 0x1701));
    let mut seq = 0u64;
    let mut commits = 0u64;
    let mut next_cold = 0;
    let mut batch: Vec<(i64, Change)> = Vec::new();
    let mut commit = |batch: &mut Vec<(i64, Change)>, seq: &mut u64| -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut contents = Vec::new();
        for (t, c) in batch.iter() {
            let n = match c {
                Change::Cold(_) => rng.random_range(512..4096),
                Change::Hot(_) => rng.random_range(100..400),
                _ => continue,
            };
            // A first line that makes every version's content unique.
            let mut b = format!("{} {t}\n", String::from_utf8_lossy(&path_of(*c))).into_bytes();
            text.fill(&mut b, n);
            contents.push(b);
        }
        let chunks = encode_all(&contents);
        let mut refs = chunks.iter().map(|e| ChunkRef {
            id: e.id,
            len: e.raw_len,
        });
        let mut vs = Vec::with_capacity(batch.len());
        for (t, c) in batch.drain(..) {
            *seq += 1;
            vs.push(match c {
                Change::Dir(_) => dir_version(*seq, path_of(c), t),
                Change::Cold(_) | Change::Hot(_) => file_version(
                    *seq,
                    path_of(c),
                    t,
                    vec![refs.next().expect("a chunk each")],
                ),
                Change::Delete(_) => Version {
                    client: CLIENT.into(),
                    seq: *seq,
                    observed_at: Timestamp(t),
                    path: path_of(c),
                    entry: Entry::Deleted,
                },
            });
        }
        repo.put_chunks(chunks)?;
        repo.commit_versions(vs)?;
        commits += 1;
        Ok(())
    };
    let mut srng = StdRng::seed_from_u64(derive_seed(cfg.seed, 0x1702));
    for d in 0..365i64 {
        let day_end = start + (d + 1) * DAY;
        let mut day: Vec<(i64, Change)> = Vec::new();
        while next_cold < cold.len() && cold[next_cold].0 < day_end {
            day.push(cold[next_cold]);
            next_cold += 1;
        }
        let session = start + d * DAY + srng.random_range(8 * HOUR..14 * HOUR);
        for s in 0..session_secs {
            for h in 0..HOT_FILES {
                // The ten files a tenth of a second apart in each second.
                let t = session + s * NS + h as i64 * (NS / HOT_FILES as i64);
                if t < now - NS {
                    day.push((t, Change::Hot(h)));
                }
            }
        }
        day.sort_by_key(|(t, _)| *t);
        for e in day {
            if batch.first().is_some_and(|f| f.0 / HOUR != e.0 / HOUR) {
                commit(&mut batch, &mut seq)?;
            }
            batch.push(e);
        }
        if d % 30 == 29 {
            eprintln!(
                "rewind-bench: year history: day {} of 365, {seq} versions, {:.0} s",
                d + 1,
                t0.elapsed().as_secs_f64()
            );
        }
    }
    while next_cold < cold.len() {
        batch.push(cold[next_cold]);
        next_cold += 1;
    }
    commit(&mut batch, &mut seq)?;
    let build_secs = t0.elapsed().as_secs_f64();
    // What the agent's writer does in the background as it commits; here
    // waited for, so the queries find every pack in the version index.
    let t1 = Instant::now();
    repo.index_versions()?;
    let index_secs = t1.elapsed().as_secs_f64();
    let versions = repo.stats()?.versions;
    drop(repo);
    crate::run::sync()?;
    Ok(Year {
        versions,
        hot_versions: versions.saturating_sub(cold.len() as u64),
        session_secs,
        paths: 1 + dirs.len() + files.len() + HOT_FILES,
        commits,
        build_secs,
        index_secs,
    })
}

/// A setup around an existing repository directory, whose agent state
/// records versions as [`CLIENT`] (the client of the synthetic history).
pub(crate) fn setup_for(cfg: &Config, base: &Path, copy_of: Option<&Path>) -> Result<Setup> {
    let s = Setup::fresh(&cfg.rewind, base)?;
    if let Some(src) = copy_of {
        Cmd::new("cp").arg("-a").arg(src).arg(&s.repo).run_quiet()?;
    }
    Ok(s)
}

pub(crate) fn claim_client(s: &Setup) -> Result<()> {
    let j = s.journal_dir()?;
    fs::create_dir_all(&j)?;
    fs::write(j.join("client"), format!("{CLIENT}\n"))?;
    Ok(())
}

fn json(io: &Io) -> Result<serde_json::Value> {
    serde_json::from_str(&io.stdout).with_context(|| format!("not JSON: {:?}", io.stdout))
}

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

/// One `rewind prune --max-unused P` and what it left.
struct PruneRun {
    max_unused: u32,
    io: Io,
    report: serde_json::Value,
    size_after: u64,
}

fn prune(s: &Setup, max_unused: u32, log: &Path) -> Result<PruneRun> {
    crate::run::sync()?;
    let io = measure_io(
        &s.cmd([
            "prune".to_string(),
            "--json".into(),
            "--max-unused".into(),
            max_unused.to_string(),
        ]),
        log,
    )?;
    let report = json(&io)?;
    Ok(PruneRun {
        max_unused,
        io,
        report,
        size_after: du_bytes(&s.repo)?,
    })
}

/// Latency samples (seconds) of writes to `paths`, until `until` says
/// stop; `gap` start to start. Lost writes (not durable in 20 s) counted.
struct Sampler {
    repo: LocalRepo,
    client: String,
    paths: Vec<PathBuf>,
    keys: Vec<Vec<u8>>,
    last: Vec<u64>,
    text: TextGen,
    i: usize,
    /// (latency, longest refresh + query of the repository within it) of
    /// each sample of the last `sample` call: whether a slow sample waited
    /// for the agent or for the reader.
    slow: Vec<(f64, f64)>,
}

impl Sampler {
    fn newest(&self, k: usize) -> Result<u64> {
        Ok(self
            .repo
            .versions_of(&self.client, &self.keys[k])?
            .last()
            .map_or(0, |v| v.seq))
    }

    fn sample(
        &mut self,
        gap: Duration,
        mut until: impl FnMut(usize) -> Result<bool>,
    ) -> Result<(Vec<f64>, usize)> {
        let mut lat = Vec::new();
        self.slow.clear();
        let mut lost = 0;
        let mut taken = 0;
        while !until(taken)? {
            let k = self.i % self.paths.len();
            self.i += 1;
            taken += 1;
            let mut content = format!("write {} of the retention benchmark\n", self.i).into_bytes();
            self.text.fill(&mut content, 3000);
            let t0 = Instant::now();
            fs::write(&self.paths[k], &content)?;
            let mut reading = 0f64;
            loop {
                let r = Instant::now();
                self.repo.refresh()?;
                let seq = self.newest(k)?;
                reading = reading.max(r.elapsed().as_secs_f64());
                if seq > self.last[k] {
                    self.last[k] = seq;
                    let l = t0.elapsed().as_secs_f64();
                    lat.push(l);
                    self.slow.push((l, reading));
                    break;
                }
                if t0.elapsed() > Duration::from_secs(20) {
                    lost += 1;
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            if let Some(left) = gap.checked_sub(t0.elapsed()) {
                std::thread::sleep(left);
            }
        }
        lat.sort_by(f64::total_cmp);
        Ok((lat, lost))
    }
}

/// Part C; returns its Markdown.
fn latency_during_prune(cfg: &Config, s: &Setup, base: &Path) -> Result<String> {
    let dir = base.join("protected");
    fs::create_dir_all(&dir)?;
    let mut text = TextGen::new(cfg.seed, derive_seed(cfg.seed, 0x1710));
    let paths: Vec<PathBuf> = (0..10).map(|i| dir.join(format!("note-{i}.txt"))).collect();
    for p in &paths {
        fs::write(p, text.bytes(3000))?;
    }
    claim_client(s)?;
    let t = Instant::now();
    // The prune's lock holds are logged at debug: kept with the result.
    let mut watch = Watch::start_cmd(
        &s.cmd(["watch".as_ref(), dir.as_os_str()])
            .env("REWIND_LOG", "info,rewind_repo::prune=debug"),
    )?;
    watch.wait_for_line("first pass complete", Duration::from_secs(1200))?;
    let started = t.elapsed().as_secs_f64();
    let canon = dir.canonicalize()?;
    let keys: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| {
            canon
                .join(p.file_name().expect("a name"))
                .as_os_str()
                .as_bytes()
                .to_vec()
        })
        .collect();
    let repo = LocalRepo::open(&s.repo)?;
    let mut sm = Sampler {
        repo,
        client: CLIENT.into(),
        paths,
        keys,
        last: vec![0; 10],
        text,
        i: 0,
        slow: Vec::new(),
    };
    // Wait for the first pass to be committed.
    let t = Instant::now();
    for k in 0..10 {
        loop {
            sm.repo.refresh()?;
            let seq = sm.newest(k)?;
            if seq > 0 {
                sm.last[k] = seq;
                break;
            }
            if t.elapsed() > Duration::from_secs(120) {
                bail!("the first pass never reached the repository");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let idle_n = ((60.0 * cfg.scale.min(1.0)) as usize).max(20);
    let (idle, idle_lost) = sm.sample(Duration::from_millis(500), |i| Ok(i >= idle_n))?;
    let agent_rss = crate::run::proc_status_kib(watch.pid(), "VmRSS").unwrap_or(0);
    // The prune, through the agent (the CLI asks the running agent).
    let cmd = s.cmd(["prune", "--json"]);
    let out = base.join("prune-through-agent.out");
    let t = Instant::now();
    let mut child = cmd
        .command()
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out)?)
        .stderr(fs::File::create(base.join("prune-through-agent.err"))?)
        .spawn()?;
    let mut status = None;
    let (busy, busy_lost) = sm.sample(Duration::from_millis(100), |_| {
        if status.is_none() {
            status = child.try_wait()?;
        }
        Ok(status.is_some())
    })?;
    let mut slowest = std::mem::take(&mut sm.slow);
    slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
    slowest.truncate(3);
    let prune_secs = t.elapsed().as_secs_f64();
    let st = match status {
        Some(st) => st,
        None => child.wait()?,
    };
    if !st.success() {
        bail!(
            "rewind prune through the agent failed ({st}): {}",
            fs::read_to_string(base.join("prune-through-agent.err")).unwrap_or_default()
        );
    }
    let report: serde_json::Value = serde_json::from_str(&fs::read_to_string(&out)?)?;
    let hwm = crate::run::proc_status_kib(watch.pid(), "VmHWM").unwrap_or(0);
    let wst = watch.stop(Duration::from_secs(60))?;
    if !wst.success() {
        eprintln!("rewind-bench: rewind watch exited with {wst}");
    }
    // Beside the work directory, which is removed at the end.
    let log = cfg.work.join("retention-agent-during-prune.log");
    fs::write(&log, watch.stderr.join("\n") + "\n")?;
    let p99_idle = quantile(&idle, 0.99);
    let p99_busy = quantile(&busy, 0.99);
    let mut o = String::new();
    writeln!(
        o,
        "`rewind watch` on a folder of 10 files of 3 KB, its repository a copy of the forgotten \
         year repository (the agent opened it and finished its first pass in {}; RSS {} when \
         idle, VmHWM {} at the end). Idle: {idle_n} writes 0.5 s apart (start to start). \
         During the prune (`rewind prune --json`, done by the agent, {} until the command \
         returned; the agent's report: {} ms, {} packs deleted, {} repacked): writes 0.1 s \
         apart until it returned.\n",
        secs(started),
        mib(agent_rss),
        mib(hwm),
        secs(prune_secs),
        n(&report, "millis"),
        n(&report, "packs_deleted"),
        n(&report, "packs_repacked"),
    )?;
    let mut t = Table::new(&["when", "samples", "p50", "p99", "max", "lost (> 20 s)"]);
    for (label, v, lost) in [
        ("idle", &idle, idle_lost),
        ("during `rewind prune`", &busy, busy_lost),
    ] {
        t.row(&[
            label.to_string(),
            v.len().to_string(),
            ms(quantile(v, 0.5)),
            ms(quantile(v, 0.99)),
            ms(quantile(v, 1.0)),
            lost.to_string(),
        ]);
    }
    o.push_str(&t.render());
    let slow: Vec<String> = slowest
        .iter()
        .map(|(l, r)| format!("{} ({} of it the reader's longest refresh)", ms(*l), ms(*r)))
        .collect();
    writeln!(
        o,
        "\nSlowest samples during the prune: {}. The agent's log: `{}`.",
        slow.join(", "),
        log.display()
    )?;
    writeln!(
        o,
        "\nTarget p99 during a prune ≤ 2× idle: {} ({} against {}; {:.2}×){}.",
        verdict(p99_busy <= 2.0 * p99_idle && busy_lost == 0 && busy.len() >= 5),
        ms(p99_busy),
        ms(p99_idle),
        p99_busy / p99_idle,
        if busy.len() < 20 {
            format!(
                "; only {} samples fell within the prune, so its p99 is nearly its maximum",
                busy.len()
            )
        } else {
            String::new()
        }
    )?;
    Ok(o)
}

/// The files below `root`, relative, sorted.
fn walk(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root)?.to_path_buf());
            }
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) fn utc(t: i64, fmt: &str) -> Result<String> {
    let ts = jiff::Timestamp::from_nanosecond(t as i128)?;
    Ok(ts.strftime(fmt).to_string())
}

/// Commit the files in `changed` (cut with the repository's chunker) and
/// tombstones for `deleted`, all observed at `t`.
fn commit_state(
    repo: &LocalRepo,
    tree: &Path,
    changed: &[PathBuf],
    deleted: &[PathBuf],
    t: i64,
    seq: &mut u64,
) -> Result<()> {
    let chunker = Chunker::new(DEFAULT_CHUNKER);
    let mut buf = Vec::new();
    let mut vs = Vec::new();
    let mut pending: HashMap<rewind_core::ChunkId, EncodedChunk> = HashMap::new();
    for rel in changed {
        let p = tree.join(rel);
        let mut refs = Vec::new();
        let mut raw = Vec::new();
        chunker.for_each(fs::File::open(&p)?, &mut buf, |c| {
            refs.push(ChunkRef {
                id: rewind_core::ChunkId::of(c),
                len: c.len() as u32,
            });
            raw.push(c.to_vec());
            Ok(())
        })?;
        let ids: Vec<_> = refs.iter().map(|r| r.id).collect();
        let missing: std::collections::HashSet<_> =
            repo.missing_chunks(&ids)?.into_iter().collect();
        for (r, c) in refs.iter().zip(raw) {
            if missing.contains(&r.id) && !pending.contains_key(&r.id) {
                pending.insert(r.id, EncodedChunk::encode_with_id(r.id, &c));
            }
        }
        *seq += 1;
        vs.push(file_version(
            *seq,
            p.as_os_str().as_bytes().to_vec(),
            t,
            refs,
        ));
    }
    for rel in deleted {
        *seq += 1;
        vs.push(Version {
            client: CLIENT.into(),
            seq: *seq,
            observed_at: Timestamp(t),
            path: tree.join(rel).as_os_str().as_bytes().to_vec(),
            entry: Entry::Deleted,
        });
    }
    repo.put_chunks(pending.into_values().collect())?;
    repo.commit_versions(vs)?;
    Ok(())
}

/// Part B; returns its Markdown.
fn against_restic_and_borg(cfg: &Config, base: &Path) -> Result<String> {
    let base = fresh_dir(base)?;
    let tree = base.join("tree");
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let slice = SLICE * cfg.scale.min(1.0);
    generate_tree(&tree, cfg.seed, slice, threads)?;
    let mut text = TextGen::new(cfg.seed, derive_seed(cfg.seed, 0x1720));
    fs::create_dir_all(tree.join("hot"))?;
    for h in 0..HOT_FILES {
        fs::write(
            tree.join(format!("hot/state-{h}.txt")),
            text.bytes(16 << 10),
        )?;
    }
    let tree = tree.canonicalize()?;
    let mut live = walk(&tree)?;
    let nfiles = live.len();
    let tree_bytes = du_bytes(&tree)?;
    let snapshots = env_usize("REWIND_BENCH_RETENTION_SNAPSHOTS")?.unwrap_or(SNAPSHOTS);

    // The three repositories.
    let rdir = base.join("restic");
    let bdir = base.join("borg");
    fs::create_dir_all(&rdir)?;
    fs::create_dir_all(&bdir)?;
    restic(&rdir, &["init"]).env("TZ", "UTC").run_quiet()?;
    let borg = |args: &[&str]| -> Cmd {
        Cmd::new("borg")
            .env("BORG_BASE_DIR", bdir.join("base"))
            .env("BORG_PASSPHRASE", "")
            .env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes")
            .env("TZ", "UTC")
            .args(args.iter().copied())
    };
    let brepo = bdir.join("repo");
    let brepo_s = brepo.to_string_lossy().into_owned();
    borg(&["init", "-e", "none", &brepo_s]).run_quiet()?;
    let ws = setup_for(cfg, &base.join("rewind"), None)?;
    let repo = LocalRepo::init(&ws.repo, DEFAULT_CHUNKER)?;
    repo.set_check_puts(false);
    claim_client(&ws)?;

    let mut rng = StdRng::seed_from_u64(derive_seed(cfg.seed, 0x1721));
    let today = Timestamp::now().0.div_euclid(DAY) * DAY;
    let mut seq = 0;
    let (mut t_restic, mut t_borg, mut t_rewind) = (0.0, 0.0, 0.0);
    let mut created = 0usize;
    let mut changed_total = 0usize;
    for i in 0..snapshots {
        let t = today - (snapshots - 1 - i) as i64 * DAY + 12 * HOUR;
        let (changed, deleted) = if i == 0 {
            (live.clone(), Vec::new())
        } else {
            let mut changed = Vec::new();
            for h in 0..HOT_FILES {
                let rel = PathBuf::from(format!("hot/state-{h}.txt"));
                fs::write(tree.join(&rel), text.bytes(16 << 10))?;
                changed.push(rel);
            }
            let k = (nfiles / 50).max(1);
            for _ in 0..k {
                let rel = live[rng.random_range(0..live.len())].clone();
                if rel.starts_with("hot") || changed.contains(&rel) {
                    continue;
                }
                let p = tree.join(&rel);
                let mut b = fs::read(&p)?;
                let at = rng.random_range(0..=b.len());
                let new = text.bytes(1024);
                let end = (at + 1024).min(b.len());
                b.splice(at..end, new);
                fs::write(&p, b)?;
                changed.push(rel);
            }
            let mut deleted = Vec::new();
            for _ in 0..(nfiles / 500).max(1) {
                let j = rng.random_range(0..live.len());
                if live[j].starts_with("hot") || changed.contains(&live[j]) {
                    continue;
                }
                let rel = live.swap_remove(j);
                fs::remove_file(tree.join(&rel))?;
                deleted.push(rel);
            }
            for _ in 0..(nfiles / 500).max(1) {
                created += 1;
                let rel = PathBuf::from(format!("hot/new-{created}.txt"));
                let sz = rng.random_range(4096..65536);
                fs::write(tree.join(&rel), text.bytes(sz))?;
                live.push(rel.clone());
                changed.push(rel);
            }
            (changed, deleted)
        };
        changed_total += changed.len();
        let stamp = utc(t, "%Y-%m-%d %H:%M:%S")?;
        let x = Instant::now();
        restic(
            &rdir,
            &["backup", "--quiet", "--host", "bench", "--time", &stamp],
        )
        .env("TZ", "UTC")
        .arg(&tree)
        .run_quiet()?;
        t_restic += x.elapsed().as_secs_f64();
        let x = Instant::now();
        let archive = format!("{brepo_s}::day-{i:03}");
        let bstamp = utc(t, "%Y-%m-%dT%H:%M:%S")?;
        borg(&["create", "--timestamp", &bstamp, &archive])
            .arg(&tree)
            .run_quiet()?;
        t_borg += x.elapsed().as_secs_f64();
        let x = Instant::now();
        commit_state(&repo, &tree, &changed, &deleted, t, &mut seq)?;
        t_rewind += x.elapsed().as_secs_f64();
    }
    drop(repo);
    crate::run::sync()?;
    let before = [
        du_bytes(&rdir.join("repo"))?,
        du_bytes(&brepo)?,
        du_bytes(&ws.repo)?,
    ];
    let logs = base.join("logs");
    fs::create_dir_all(&logs)?;

    // restic: one command.
    let mut rargs = vec!["forget"];
    rargs.extend(CMP_KEEP);
    rargs.push("--prune");
    let r = measure_io(
        &restic(&rdir, &rargs).env("TZ", "UTC"),
        &logs.join("restic"),
    )?;
    let r_kept = serde_json::from_str::<serde_json::Value>(
        &restic(&rdir, &["snapshots", "--json"]).run_quiet()?,
    )?
    .as_array()
    .map_or(0, Vec::len);
    // borg: prune, then compact.
    let mut bargs = vec!["prune"];
    bargs.extend(CMP_KEEP);
    bargs.push(&brepo_s);
    let b1 = measure_io(&borg(&bargs), &logs.join("borg-prune"))?;
    let b2 = measure_io(&borg(&["compact", &brepo_s]), &logs.join("borg-compact"))?;
    let b_kept = borg(&["list", "--short", &brepo_s])
        .run_quiet()?
        .lines()
        .count();
    // rewind: forget by the policy, then prune.
    let w1 = measure_io(
        &ws.cmd(["forget", "--json", "--policy", CMP_POLICY]),
        &logs.join("rewind-forget"),
    )?;
    let f = json(&w1)?;
    let w2 = measure_io(&ws.cmd(["prune", "--json"]), &logs.join("rewind-prune"))?;
    let p = json(&w2)?;
    let after = [
        du_bytes(&rdir.join("repo"))?,
        du_bytes(&brepo)?,
        du_bytes(&ws.repo)?,
    ];

    let mut o = String::new();
    writeln!(
        o,
        "History: {snapshots} days (one state a day at 12:00 UTC) of a {nfiles}-file, {} slice \
         of the ingest tree (scale {slice}) plus 10 hot files; {changed_total} file versions in \
         all. Storing them took restic {}, borg {}, rewind (API, in process) {} (not compared: \
         see the ingest part). Policy: restic and borg `{}`, rewind `{CMP_POLICY}`.\n",
        bytes(tree_bytes),
        secs(t_restic),
        secs(t_borg),
        secs(t_rewind),
        CMP_KEEP.join(" "),
    )?;
    let mut t = Table::new(&[
        "tool",
        "command",
        "wall",
        "CPU",
        "peak RSS",
        "written (`write_bytes`)",
        "repository before → after",
        "states kept",
    ]);
    let row = |t: &mut Table, tool: &str, cmd: &str, io: &Io, sz: &str, kept: &str| {
        t.row(&[
            tool.to_string(),
            cmd.to_string(),
            secs(io.m.wall),
            secs(io.m.cpu()),
            mib(io.m.max_rss_kib),
            bytes(io.write_bytes),
            sz.to_string(),
            kept.to_string(),
        ])
    };
    let sz = |i: usize| format!("{} → {}", bytes(before[i]), bytes(after[i]));
    row(
        &mut t,
        "restic",
        "`forget --prune`",
        &r,
        &sz(0),
        &format!("{r_kept} of {snapshots}"),
    );
    row(&mut t, "borg", "`prune`", &b1, "", "");
    row(
        &mut t,
        "borg",
        "`compact`",
        &b2,
        &sz(1),
        &format!("{b_kept} of {snapshots}"),
    );
    row(&mut t, "rewind", "`forget`", &w1, "", "");
    row(
        &mut t,
        "rewind",
        "`prune`",
        &w2,
        &sz(2),
        &format!(
            "{} points (+ the whole history after {})",
            n(&f, "points_after"),
            f["thinned_before"].as_str().unwrap_or("none")
        ),
    );
    o.push_str(&t.render());
    let rw_wall = w1.m.wall + w2.m.wall;
    let rw_rss = w1.m.max_rss_kib.max(w2.m.max_rss_kib);
    let b_wall = b1.m.wall + b2.m.wall;
    let must = n(&p, "bytes_rewritten");
    let written = w1.write_bytes + w2.write_bytes;
    writeln!(
        o,
        "\nrewind forgot {} of {} versions; its prune deleted {} packs, repacked {} ({} of live \
         data copied, {} freed, {} left unused under the threshold).\n",
        n(&f, "versions_forgotten"),
        n(&f, "versions_before"),
        n(&p, "packs_deleted"),
        n(&p, "packs_repacked"),
        bytes(must),
        bytes(n(&p, "bytes_freed")),
        bytes(n(&p, "unused_bytes_left")),
    )?;
    writeln!(
        o,
        "- forget + prune ≥ 3× faster than restic's `forget --prune`: {} ({} against {}: {:.2}×; \
         borg's prune + compact {}).",
        verdict(r.m.wall >= 3.0 * rw_wall),
        secs(rw_wall),
        secs(r.m.wall),
        r.m.wall / rw_wall,
        secs(b_wall),
    )?;
    writeln!(
        o,
        "- peak memory below restic's: {} ({} against {}; borg {}).",
        verdict(rw_rss < r.m.max_rss_kib),
        mib(rw_rss),
        mib(r.m.max_rss_kib),
        mib(b1.m.max_rss_kib.max(b2.m.max_rss_kib)),
    )?;
    writeln!(
        o,
        "- bytes written within 2× of the live bytes the repack had to move: {} ({} written, \
         {} moved){}.",
        verdict(must > 0 && written <= 2 * must || must == 0 && written < (1 << 20)),
        bytes(written),
        bytes(must),
        if must == 0 {
            " (nothing had to be moved: every pack was either deleted whole or kept)"
        } else {
            ""
        },
    )?;
    Ok(o)
}

/// Run part 11.
pub fn run(cfg: &Config) -> Result<String> {
    let base = fresh_dir(&cfg.work.join("retention"))?;
    let target = match env_usize("REWIND_BENCH_RETENTION_VERSIONS")? {
        Some(n) => n as u64,
        None => ((YEAR_VERSIONS * cfg.scale).round() as u64).max(50_000),
    };
    let mut o = String::new();

    // A. The year.
    let ys = setup_for(cfg, &base.join("year"), None)?;
    eprintln!("rewind-bench: committing a year of history ({target} versions)");
    let y = build_year(cfg, &ys.repo, target)?;
    claim_client(&ys)?;
    let size0 = du_bytes(&ys.repo)?;
    let logs = base.join("logs");
    fs::create_dir_all(&logs)?;
    let fg = measure_io(&ys.cmd(["forget", "--json"]), &logs.join("year-forget"))?;
    let f = json(&fg)?;
    // Copies of the forgotten repository for the other thresholds and C.
    // One copy at a time: at scale 1 each is 2 GiB.
    let sl = setup_for(cfg, &base.join("year-live"), Some(&ys.repo))?;
    let mut sweep = Vec::new();
    if env_usize("REWIND_BENCH_RETENTION_SWEEP")? != Some(0) {
        for m in [0, 30] {
            let s = setup_for(cfg, &base.join(format!("year-{m}")), Some(&ys.repo))?;
            claim_client(&s)?;
            sweep.push(prune(&s, m, &logs.join(format!("year-prune-{m}")))?);
            fs::remove_dir_all(base.join(format!("year-{m}")))?;
        }
    }
    let p10 = prune(&ys, 10, &logs.join("year-prune-10"))?;

    writeln!(
        o,
        "### A. A year of history\n\n{} versions of {} paths ({} of them of the 10 hot files, \
         which change every second for {} s a day; {} commits) committed through the \
         repository API in {}. `rewind forget` (default policy `{}`) then `rewind prune` \
         (the real binary, no agent running).\n",
        y.versions,
        y.paths,
        y.hot_versions,
        y.session_secs,
        y.commits,
        secs(y.build_secs),
        rewind_core::retention::DEFAULT_POLICY,
    )?;
    let mut t = Table::new(&[
        "step",
        "wall",
        "CPU",
        "peak RSS",
        "written",
        "repository after",
    ]);
    t.row(&[
        format!(
            "`forget` ({} of {} versions forgotten, {} kept points)",
            n(&f, "versions_forgotten"),
            n(&f, "versions_before"),
            n(&f, "points_after")
        ),
        secs(fg.m.wall),
        secs(fg.m.cpu()),
        mib(fg.m.max_rss_kib),
        bytes(fg.write_bytes),
        format!("{} (forget deletes no file)", bytes(size0)),
    ]);
    t.row(&[
        "`prune` (default `--max-unused 10`)".to_string(),
        secs(p10.io.m.wall),
        secs(p10.io.m.cpu()),
        mib(p10.io.m.max_rss_kib),
        bytes(p10.io.write_bytes),
        format!(
            "{} ({:.1} % of before)",
            bytes(p10.size_after),
            100.0 * p10.size_after as f64 / size0 as f64
        ),
    ]);
    o.push_str(&t.render());

    writeln!(
        o,
        "\n#### The repack threshold\n\nThe same forgotten repository (copies), pruned with \
         each value of `--max-unused`:\n"
    )?;
    let mut t = Table::new(&[
        "`--max-unused`",
        "wall",
        "peak RSS",
        "packs deleted / repacked",
        "live bytes copied",
        "written (`write_bytes`)",
        "unused left",
        "repository after",
    ]);
    sweep.insert(sweep.len().min(1), p10);
    for p in &sweep {
        t.row(&[
            format!("{} %", p.max_unused),
            secs(p.io.m.wall),
            mib(p.io.m.max_rss_kib),
            format!(
                "{} / {}",
                n(&p.report, "packs_deleted"),
                n(&p.report, "packs_repacked")
            ),
            bytes(n(&p.report, "bytes_rewritten")),
            bytes(p.io.write_bytes),
            bytes(n(&p.report, "unused_bytes_left")),
            bytes(p.size_after),
        ]);
    }
    o.push_str(&t.render());
    let p10 = sweep
        .iter()
        .find(|p| p.max_unused == 10)
        .expect("the default prune");
    let must = sweep
        .iter()
        .find(|p| p.max_unused == 0)
        .map(|p| n(&p.report, "bytes_rewritten"));
    match must {
        Some(must) => writeln!(
            o,
            "\nBytes that must be moved to reclaim everything forget released: the live bytes \
             of every pack that lost anything, which is what `--max-unused 0` copies ({}). The \
             default prune wrote {} ({:.2}× that): target within 2×: {}.\n",
            bytes(must),
            bytes(p10.io.write_bytes),
            p10.io.write_bytes as f64 / must.max(1) as f64,
            verdict(p10.io.write_bytes <= 2 * must.max(1)),
        )?,
        None => writeln!(
            o,
            "\nThe 0 % and 30 % prunes were skipped (`REWIND_BENCH_RETENTION_SWEEP=0`), so the \
             bytes a full reclaim must move were not measured in this run.\n"
        )?,
    }

    // C. Latency while the agent prunes.
    eprintln!("rewind-bench: capture latency during a prune");
    let c = latency_during_prune(cfg, &sl, &base.join("year-live"))?;
    fs::remove_dir_all(base.join("year-live"))?;
    fs::remove_dir_all(base.join("year"))?;

    // B. Against restic and borg.
    eprintln!("rewind-bench: restic and borg, one state a day");
    let b = against_restic_and_borg(cfg, &base.join("cmp"))?;
    writeln!(o, "### B. Against restic and borg\n\n{b}")?;
    writeln!(o, "### C. Capture latency during a prune\n\n{c}")?;
    let _ = fs::remove_dir_all(&base);
    Ok(o)
}
