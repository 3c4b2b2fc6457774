//! Faults between rewind and its object store (issue 20, "Tests"): the
//! real `rewind` binary against a real S3 server (`s3s-fs`, see
//! `harness/s3.rs`), through a proxy that answers 5xx, answers slowly or
//! too late, and drops connections (`harness/fault_proxy.rs`), and with
//! the agent killed (SIGKILL) at random moments while it uploads.
//!
//! What every test checks afterwards, through a clean path to the store:
//! `verify` is clean, the restored trees are byte for byte what was
//! written, every acknowledged version is there, and nothing is stored
//! twice: each sequence number from 1 to the highest appears in exactly one
//! version record of all the packs, and each chunk id in exactly one chunk
//! record (docs/decisions.md, "Fault tests against object storage: what
//! duplicated means"). Where agents are killed the rules are those of
//! [`Expect`]: no number is ever listed for two versions, but a restart
//! after a kill skips numbers, and a killed agent's request that lands
//! late may store a second copy of a version (docs/decisions.md, "Late
//! requests (issue 20)"). Nothing asserts on timing.

mod harness;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harness::fault_proxy::{ALL, Fault, FaultProxy, Schedule};
use harness::s3::{S3, SECRET_KEY, cache_dir};
use harness::{Agent, DEADLINE, Env, describe_tree, noise, show, wait_until};

/// The settings of every command that goes through the proxy:
/// - a request may take 2 s (the proxy's stall is longer, so a stalled
///   request times out and is tried again);
/// - packs over 5 MiB (S3's smallest part) go in parts, so the test's
///   larger files make multipart uploads;
/// - a lease of 2 s, so a killed writer blocks the next for 2 s at most
///   (a writer renews it every 0.7 s and pauses its writes when no
///   renewal got through for 1.5 s: slower, never wrong, on a loaded
///   machine).
const SETTINGS: [(&str, &str); 3] = [
    ("REWIND_S3_TIMEOUT_SECS", "2"),
    ("REWIND_S3_PART_SIZE", "5"),
    ("REWIND_S3_LEASE_SECS", "2"),
];

/// `rewind ARGS` reaching `s3` through `port` (a proxy, or the server's
/// own port), with [`SETTINGS`].
fn command_at(s3: &S3, env: &Env, port: u16, args: &[&str]) -> Command {
    let mut c = env.command();
    s3.reach_at(&mut c, port, SECRET_KEY)
        .env("REWIND_CACHE_DIR", cache_dir(env))
        .envs(SETTINGS)
        .args(args);
    c
}

fn run_at(s3: &S3, env: &Env, port: u16, args: &[&str]) -> Output {
    command_at(s3, env, port, args).output().unwrap()
}

/// Every path under `dir` (itself included).
fn paths_under(dir: &Path, out: &mut BTreeSet<PathBuf>) {
    out.insert(dir.to_path_buf());
    if dir.is_dir() {
        for e in fs::read_dir(dir).unwrap() {
            paths_under(&e.unwrap().path(), out);
        }
    }
}

fn write(p: &Path, bytes: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

/// What the repository holds, as the clean path reads it: every version
/// record of `paths` (their sequence numbers and chunk ids) and what
/// `verify` counted in the packs.
struct Holdings {
    /// Sequence numbers of the versions of `paths` and whose they are,
    /// each as often as it was listed.
    seqs: Vec<(u64, String)>,
    /// Chunk ids those versions refer to.
    chunk_ids: BTreeSet<String>,
    /// Version and chunk records in all the packs (`verify --json`).
    version_records: u64,
    chunk_records: u64,
}

fn holdings(s3: &S3, env: &Env, url: &str, paths: &BTreeSet<PathBuf>, verify: &[&str]) -> Holdings {
    let v = s3.json(env, &[&["verify", "--repo", url], verify].concat());
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["issues"].as_array().map(Vec::len), Some(0), "{v}");
    let mut seqs = Vec::new();
    let mut chunk_ids = BTreeSet::new();
    for p in paths {
        let out = s3.rewind(
            env,
            &["versions", "--repo", url, p.to_str().unwrap(), "--json"],
        );
        if !out.status.success() {
            // A path that lived only between two captures.
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("no versions"),
                "{}",
                show(&out)
            );
            continue;
        }
        let vs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for ver in vs["versions"].as_array().unwrap() {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            seqs.push((ver["seq"].as_u64().unwrap(), name.unwrap_or_default()));
            for c in ver["chunks"].as_array().unwrap() {
                chunk_ids.insert(c.as_str().unwrap().to_string());
            }
        }
    }
    Holdings {
        seqs,
        chunk_ids,
        version_records: v["versions"].as_u64().unwrap(),
        chunk_records: v["chunks"].as_u64().unwrap(),
    }
}

/// What a run may leave in the repository besides exactly one record of
/// each version and chunk, numbered 1, 2, 3 and on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Nothing else: no agent was killed.
    Exact,
    /// Agents were killed. Chunk records no version uses (an agent killed
    /// between uploading chunks and committing their versions leaves them,
    /// see the uploader's crate doc, and `verify` does not tell them from
    /// chunks stored twice), and gaps in the numbers (a restart after a
    /// kill skips the numbers the dead agent may have sent).
    Killed,
    /// Agents were killed while the store held their requests: also
    /// second copies of versions (a dead agent's pack that lands after
    /// its successor sent the same versions again; readers list each once,
    /// so the listing below still catches a number given to two versions).
    KilledLate,
}

impl Holdings {
    /// No number given to two versions (each listed once), nothing
    /// duplicated and no number skipped beyond what `expect` allows. The
    /// highest sequence number.
    fn check_once_each(&self, expect: Expect) -> u64 {
        let distinct: BTreeSet<u64> = self.seqs.iter().map(|(s, _)| *s).collect();
        let twice: Vec<&(u64, String)> = self
            .seqs
            .iter()
            .filter(|(s, _)| self.seqs.iter().filter(|(t, _)| t == s).count() > 1)
            .collect();
        assert!(twice.is_empty(), "sequence numbers listed twice: {twice:?}");
        let max = distinct.last().copied().unwrap_or(0);
        let n = distinct.len() as u64;
        if expect == Expect::Exact {
            assert_eq!(
                distinct,
                (1..=max).collect::<BTreeSet<u64>>(),
                "every number from 1 to {max}"
            );
        }
        if expect == Expect::KilledLate {
            assert!(
                self.version_records >= n,
                "the packs hold {} version records for {n} versions: some lost",
                self.version_records
            );
        } else {
            assert_eq!(
                self.version_records, n,
                "the packs hold {} version records for {n} versions: some stored twice",
                self.version_records
            );
        }
        let used = self.chunk_ids.len() as u64;
        if expect != Expect::Exact {
            assert!(self.chunk_records >= used, "verify is clean: none missing");
        } else {
            assert_eq!(
                self.chunk_records, used,
                "the packs hold {} chunk records for {used} chunks the versions use",
                self.chunk_records,
            );
        }
        max
    }
}

/// Init and five backup runs of a changing tree, with small files and
/// files large enough for multipart uploads, all through a proxy that
/// injects a fault into every fifth request (503 SlowDown, 500, a slow
/// answer, an answer later than the client's timeout, a connection closed
/// before forwarding, an answer cut in the middle). Then, straight to the
/// store: verify is clean, each run's point restores byte for byte,
/// nothing is lost or stored twice.
#[test]
fn backups_through_a_faulty_store_complete_and_nothing_is_lost_or_stored_twice() {
    let env = Env::new();
    let base = env.tmp.path().canonicalize().unwrap();
    let Some(s3) = S3::start(&base) else { return };
    let proxy = FaultProxy::start(s3.port, Schedule::default());
    let url = s3.url("faulty");
    let via = |args: &[&str]| {
        let out = run_at(&s3, &env, proxy.port, args);
        assert!(
            out.status.success(),
            "rewind {args:?} through the proxy failed ({})\n{}",
            proxy.counts.summary(),
            show(&out)
        );
    };
    via(&["init", "--repo", &url]);
    let root = env.root.clone();
    let r = root.to_str().unwrap();

    let mut points: Vec<(String, Vec<String>)> = Vec::new();
    let mut paths = BTreeSet::new();
    for round in 0..5u64 {
        match round {
            0 => {
                for i in 0..8 {
                    write(
                        &root.join(format!("notes/n{i}.txt")),
                        format!("note {i}\n").repeat(1 + i * 300).as_bytes(),
                    );
                }
                write(&root.join("big.bin"), &noise(12 << 20, 1));
                write(&root.join("empty"), b"");
            }
            1 => {
                // A changed middle: new chunks beside reused ones.
                let mut big = fs::read(root.join("big.bin")).unwrap();
                big[5 << 20..6 << 20].copy_from_slice(&noise(1 << 20, 2));
                write(&root.join("big.bin"), &big);
                write(&root.join("notes/n1.txt"), b"changed once\n");
                write(&root.join("photos/p.raw"), &noise(7 << 20, 3));
            }
            2 => {
                fs::remove_file(root.join("notes/n2.txt")).unwrap();
                fs::rename(root.join("notes/n3.txt"), root.join("moved.txt")).unwrap();
                write(&root.join("notes/n1.txt"), b"changed twice\n");
            }
            3 => {
                write(&root.join("photos/q.raw"), &noise(6 << 20, 4));
                fs::remove_file(root.join("empty")).unwrap();
            }
            _ => {
                for i in 4..8 {
                    write(
                        &root.join(format!("notes/n{i}.txt")),
                        format!("last {i}\n").as_bytes(),
                    );
                }
            }
        }
        via(&["watch", "--repo", &url, r, "--once"]);
        points.push((env.now(), describe_tree(&root)));
        paths_under(&root, &mut paths);
    }
    let c = &proxy.counts;
    eprintln!("through the proxy: {}", c.summary());
    for kind in ALL {
        assert!(
            c.injected(kind) > 0,
            "no {kind:?} injected: {}",
            c.summary()
        );
    }
    assert!(
        c.multipart.load(Ordering::Relaxed) >= 1,
        "the large files went in parts: {}",
        c.summary()
    );

    // Straight to the store from here on.
    for (i, (at, tree)) in points.iter().enumerate() {
        let dest = base.join(format!("dest{i}"));
        s3.restore_all(&env, &url, at, &dest);
        assert_eq!(&describe_tree(&dest), tree, "the point of run {i}");
    }
    let held = holdings(&s3, &env, &url, &paths, &[]);
    let max = held.check_once_each(Expect::Exact);
    let status = s3.json(&env, &["status", "--repo", &url]);
    assert_eq!(
        status["journal"]["durable_seq"].as_u64(),
        Some(max),
        "{status}"
    );
    assert_eq!(
        status["journal"]["versions_waiting"].as_u64(),
        Some(0),
        "{status}"
    );
}

/// A backup run of two large files through a proxy that cuts the answers
/// of the first two requests `only` picks, after the store did the work:
/// the run completes, and each pack is stored once.
fn every_answer_cut(only: fn(&str) -> bool) {
    let env = Env::new();
    let base = env.tmp.path().canonicalize().unwrap();
    let Some(s3) = S3::start(&base) else { return };
    let proxy = FaultProxy::start(
        s3.port,
        Schedule {
            every: 1,
            kinds: vec![Fault::CutResponse],
            only: Some(only),
            limit: Some(2),
            ..Schedule::default()
        },
    );
    let url = s3.url("cut");
    s3.ok(&env, &["init", "--repo", &url]);
    write(&env.root.join("big.bin"), &noise(12 << 20, 5));
    write(&env.root.join("more.bin"), &noise(7 << 20, 6));
    let r = env.root.to_str().unwrap();
    let out = run_at(
        &s3,
        &env,
        proxy.port,
        &["watch", "--repo", &url, r, "--once"],
    );
    assert!(
        out.status.success(),
        "{}
{}",
        proxy.counts.summary(),
        show(&out)
    );
    eprintln!("through the proxy: {}", proxy.counts.summary());
    assert!(
        proxy.counts.injected(Fault::CutResponse) > 0,
        "{}",
        proxy.counts.summary()
    );
    let dest = base.join("dest");
    s3.restore_all(&env, &url, "now", &dest);
    assert_eq!(describe_tree(&dest), describe_tree(&env.root));
    let mut paths = BTreeSet::new();
    paths_under(&env.root, &mut paths);
    holdings(&s3, &env, &url, &paths, &[]).check_once_each(Expect::Exact);
}

#[test]
fn a_multipart_upload_whose_completion_answer_is_cut_is_stored_once() {
    every_answer_cut(|line| line.starts_with("POST ") && line.contains("uploadId="));
}

/// The highest sequence number the running agent has acknowledged (its
/// journal made it durable), as `status` reads it.
fn acknowledged(s3: &S3, env: &Env, url: &str) -> Option<u64> {
    harness::acknowledged_in(&s3.rewind(env, &["status", "--repo", url, "--json"]))
}

/// `rewind watch` on the test's folder into `url` through `port`, once it
/// is past taking the writer lease (a killed writer's lease blocks it
/// until it expires: it is started again until it gets in).
fn start_agent(s3: &S3, env: &Env, port: u16, url: &str, n: u32) -> Agent {
    let root = env.root.to_str().unwrap();
    let start = Instant::now();
    loop {
        let log = env.tmp.path().join(format!("agent-{n}.log"));
        let mut c = command_at(
            s3,
            env,
            port,
            &["watch", "--repo", url, root, "--quiescence", "100ms"],
        );
        let mut agent = Agent::spawn(&mut c, log);
        loop {
            if agent.log().contains("rewind: protecting") {
                return agent;
            }
            if let Some(st) = agent.exited() {
                let log = agent.log();
                assert!(
                    log.contains("in use by another writer"),
                    "the agent exited with {st}:\n{log}"
                );
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the agent never got in:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What the writer thread puts in `f{j}.txt` in its round `i`: the first
/// line names both, so a restored copy shows whether it is whole.
fn small_body(i: u64, j: u64) -> String {
    format!("round {i} of file {j}\n").repeat(1 + (i % 300) as usize)
}

/// What it puts in `big.bin`: the seed, then 6 MiB of noise from it (more
/// than a part: the agent's packs of it go in parts).
fn big_body(seed: u64) -> Vec<u8> {
    let mut b = seed.to_le_bytes().to_vec();
    b.extend(noise(6 << 20, seed));
    b
}

/// Every file of a restored tree is one the writer wrote whole.
fn check_whole(dest: &Path) {
    for e in fs::read_dir(dest).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if p.is_dir() || name == ".big.tmp" {
            continue;
        }
        let bytes = fs::read(&p).unwrap();
        if name == "big.bin" {
            let seed = u64::from_le_bytes(bytes[..8].try_into().unwrap());
            assert!(bytes == big_body(seed), "{} is torn", p.display());
            continue;
        }
        let j: u64 = name
            .strip_prefix('f')
            .and_then(|s| s.strip_suffix(".txt"))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("unexpected {}", p.display()));
        let text = String::from_utf8(bytes).unwrap();
        if text.is_empty() {
            // Captured between the writer's truncation and its write.
            continue;
        }
        let i: u64 = text
            .strip_prefix("round ")
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{} is torn", p.display()));
        assert_eq!(
            text,
            small_body(i, j),
            "{} is not what round {i} wrote",
            p.display()
        );
    }
}

/// The agent is killed with SIGKILL at random moments (in its first pass,
/// mid-capture, mid-upload, multipart uploads included) while files keep
/// changing, and started again each time once the dead writer's lease has
/// expired; straight to the store, or through `proxy`. At the end it
/// drains; then every version acknowledged before a kill is in the
/// repository, each sequence number given to one version (as `expect`
/// says), verify is clean, the tree at each kill restores with every file
/// whole, and the final tree exactly.
fn kill_loop(
    env: &Env,
    s3: &S3,
    proxy: Option<&FaultProxy>,
    url: &str,
    kills: u32,
    expect: Expect,
) {
    let port = proxy.map_or(s3.port, |p| p.port);
    let t0 = Instant::now();
    s3.ok(env, &["init", "--repo", url]);
    let root = env.root.clone();
    for j in 0..12 {
        write(&root.join(format!("f{j}.txt")), small_body(0, j).as_bytes());
    }
    write(&root.join("big.bin"), &big_body(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (root, stop) = (root.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 1u64;
            while !stop.load(Ordering::Relaxed) {
                let j = i % 12;
                fs::write(root.join(format!("f{j}.txt")), small_body(i, j)).unwrap();
                if i.is_multiple_of(60) {
                    // Through a temporary name, so a capture never sees a
                    // half-written file (the test checks restored copies
                    // are whole).
                    let tmp = root.join(".big.tmp");
                    fs::write(&tmp, big_body(i)).unwrap();
                    fs::rename(&tmp, root.join("big.bin")).unwrap();
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(7));
            }
        })
    };
    let mut next = harness::xorshift(0x9E37_79B9_7F4A_7C15);
    let mut acked = 0u64;
    let mut points = Vec::new();
    for n in 0..kills {
        let agent = start_agent(s3, env, port, url, n);
        std::thread::sleep(Duration::from_millis(200 + next() % 1500));
        if let Some(q) = acknowledged(s3, env, url) {
            acked = acked.max(q);
        }
        std::thread::sleep(Duration::from_millis(next() % 40));
        if acked > 0 {
            points.push(env.now());
        }
        agent.kill();
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    // The killed agents' requests the proxy still holds land before the
    // last run opens the repository, which indexes a pack that landed
    // without its index (as after any crash between the two); one landing
    // later would be indexed only by the next writer, and verify would
    // report it.
    if let Some(p) = proxy {
        wait_until("the proxy to hold no request", || {
            p.counts.held.load(Ordering::SeqCst) == 0
        });
    }

    // A last, clean run catches up with the final tree and drains.
    let agent = start_agent(s3, env, port, url, kills);
    agent.wait_first_pass();
    wait_until("the journal to drain", || {
        let out = s3.rewind(env, &["status", "--repo", url, "--json"]);
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
            return false;
        };
        v["journal"]["versions_waiting"].as_u64() == Some(0)
            && v["journal"]["spool_bytes"].as_u64() == Some(0)
    });
    agent.stop();

    let mut paths = BTreeSet::new();
    paths_under(&root, &mut paths);
    // Captured, perhaps, while the writer filled it.
    paths.insert(root.join(".big.tmp"));
    // A full verify reads every record of every pack, one ranged GET
    // each: 30 s for the hundred small packs of a run here. The quick one
    // checks every pack's table and index; the restores below read back
    // and check (by its hash) every chunk of the points they restore.
    let held = holdings(s3, env, url, &paths, &["--quick"]);
    let max = held.check_once_each(expect);
    assert!(
        max >= acked,
        "acknowledged up to {acked}, the repository ends at {max}"
    );
    let base = env.tmp.path().canonicalize().unwrap();
    // The first, a middle and the last kill's points (each restore
    // takes a second or two).
    let n = points.len();
    let some: BTreeSet<usize> = [0, n / 2, n.saturating_sub(1)]
        .into_iter()
        .filter(|k| *k < n)
        .collect();
    for k in some {
        let at = &points[k];
        let dest = base.join(format!("at-kill-{k}"));
        s3.restore_all(env, url, at, &dest);
        check_whole(&dest);
    }
    let dest = base.join("final");
    s3.restore_all(env, url, &env.now(), &dest);
    assert_eq!(describe_tree(&dest), describe_tree(&root));
    eprintln!(
        "kill loop: {kills} kills, {acked} versions acknowledged before them, {max} in the repository, {} chunk records for {} chunks in use ({:?})",
        held.chunk_records,
        held.chunk_ids.len(),
        t0.elapsed()
    );
}

#[test]
fn an_agent_killed_again_and_again_while_it_uploads_loses_nothing_it_acknowledged() {
    let env = Env::new();
    let base = env.tmp.path().canonicalize().unwrap();
    let Some(s3) = S3::start(&base) else { return };
    let url = s3.url("killed");
    kill_loop(&env, &s3, None, &url, 5, Expect::Killed);
}

#[test]
fn an_agent_killed_again_and_again_behind_a_faulty_store_loses_nothing_it_acknowledged() {
    let env = Env::new();
    let base = env.tmp.path().canonicalize().unwrap();
    let Some(s3) = S3::start(&base) else { return };
    // Every kind, the stall too: a request the proxy holds past a killed
    // writer's death lands after the next writer opened the repository
    // (longer than the lease, as from a store or proxy that holds it);
    // stalls are allowed more often than elsewhere so that some overlap
    // a kill.
    let proxy = FaultProxy::start(
        s3.port,
        Schedule {
            every: 8,
            max_stalls: 8,
            ..Schedule::default()
        },
    );
    let url = s3.url("killed-faulty");
    kill_loop(&env, &s3, Some(&proxy), &url, 4, Expect::KilledLate);
    eprintln!("through the proxy: {}", proxy.counts.summary());
    assert!(proxy.counts.faults() > 0, "{}", proxy.counts.summary());
    assert!(
        proxy.counts.injected(Fault::Stall) > 0,
        "{}",
        proxy.counts.summary()
    );
}

/// The case the kill loop meets only by chance, made certain: an agent is
/// killed while the proxy holds the PUT of the pack that commits its
/// first pass (longer than its lease), the folder changes, and the next
/// agent starts before that pack lands. The next agent must give none of
/// the dead one's numbers to its own versions: before the fix it started
/// where the repository's numbers ended (the pack was not there yet), and
/// the numbers of the late pack were listed for two paths each
/// (docs/decisions.md, "Late requests (issue 20)").
#[test]
fn a_killed_agents_commit_that_lands_after_the_next_agent_started_reuses_no_number() {
    let env = Env::new();
    let base = env.tmp.path().canonicalize().unwrap();
    let Some(s3) = S3::start(&base) else { return };
    let proxy = FaultProxy::start(
        s3.port,
        Schedule {
            every: 1,
            kinds: vec![Fault::Stall],
            only: Some(|line| {
                line.starts_with("PUT ")
                    && line.contains("/packs/")
                    && !line.contains("partNumber=")
            }),
            limit: Some(1),
            // Far longer than the lease (2 s) and a start of the next
            // agent, so the pack lands after that start.
            stall: Duration::from_secs(10),
            max_stalls: 1,
            ..Schedule::default()
        },
    );
    let url = s3.url("late");
    s3.ok(&env, &["init", "--repo", &url]);
    let root = env.root.clone();
    let mut paths = BTreeSet::new();
    for j in 0..6 {
        let p = root.join(format!("f{j}.txt"));
        write(&p, small_body(1, j).as_bytes());
        paths.insert(p);
    }
    let agent = start_agent(&s3, &env, proxy.port, &url, 0);
    wait_until("the proxy to hold the first pack", || {
        proxy.counts.held.load(Ordering::SeqCst) > 0
    });
    agent.kill();
    // Other paths for the next agent to number.
    for p in &paths {
        fs::remove_file(p).unwrap();
    }
    for j in 0..6 {
        let p = root.join(format!("g{j}.txt"));
        write(&p, small_body(2, j).as_bytes());
        paths.insert(p);
    }
    let agent = start_agent(&s3, &env, proxy.port, &url, 1);
    assert!(
        proxy.counts.held.load(Ordering::SeqCst) > 0,
        "the held pack landed before the next agent started (a stall of 10 s was too short here): {}",
        proxy.counts.summary()
    );
    agent.wait_first_pass();
    wait_until("the held pack to land", || {
        proxy.counts.held.load(Ordering::SeqCst) == 0
    });
    agent.stop();
    // A writer opened after it indexes the pack that landed without its
    // index, as after any crash between the two.
    let agent = start_agent(&s3, &env, proxy.port, &url, 2);
    agent.wait_first_pass();
    agent.stop();
    assert_eq!(
        proxy.counts.injected(Fault::Stall),
        1,
        "{}",
        proxy.counts.summary()
    );

    let held = holdings(&s3, &env, &url, &paths, &[]);
    let late: Vec<&(u64, String)> = held
        .seqs
        .iter()
        .filter(|(_, n)| n.starts_with('f'))
        .collect();
    assert!(!late.is_empty(), "the held pack landed: {:?}", held.seqs);
    held.check_once_each(Expect::KilledLate);
    // The dead agent's versions of f* landed after the next agent started,
    // and no journal ever recorded them: the agent that opened after they
    // landed learnt them from the repository, found them gone from the
    // folder and recorded their deletion, so a restore of now does not
    // bring them back (docs/decisions.md, "Late commits bring nothing
    // back").
    let dest = base.join("final");
    s3.restore_all(&env, &url, &env.now(), &dest);
    let mut names: Vec<String> = fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let want: Vec<String> = (0..6).map(|j| format!("g{j}.txt")).collect();
    assert_eq!(names, want);
    for j in 0..6 {
        let g = dest.join(format!("g{j}.txt"));
        assert_eq!(
            fs::read(&g).unwrap(),
            fs::read(root.join(format!("g{j}.txt"))).unwrap()
        );
    }
}
