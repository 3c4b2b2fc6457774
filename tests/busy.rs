//! Point-in-time truth for busy files (issue 16): a file that keeps
//! changing gets versions while it is busy, each labelled with a moment at
//! which its content really was the file's, so a restore at T never returns
//! content from after T and is at most `busy_interval` + 1 s old; a file
//! that cannot be read consistently is shown as busy and never stored torn.
//!
//! Real writers, real time: each test runs its writer for 20 s and then
//! restores at every second inside that window.

mod harness;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use harness::*;

/// How long the writers run.
const RUN: Duration = Duration::from_secs(20);
/// The agent's default busy interval.
const BUSY_INTERVAL: Duration = Duration::from_secs(2);

/// The tests that check the staleness bound measure the agent against a
/// wall clock, so each runs alone: ten agents and ten writers at once on a
/// 2-core CI machine measured the scheduler (a WAL-mode restore 3.6 s
/// behind, once in several runs). The others run beside each other.
static CLOCK: RwLock<()> = RwLock::new(());

/// Held by a test that checks how recent a restore is: it runs alone.
fn timed() -> RwLockWriteGuard<'static, ()> {
    CLOCK.write().unwrap_or_else(|e| e.into_inner())
}

/// Held by the other tests: they run beside each other, never beside a
/// timed one.
fn untimed() -> RwLockReadGuard<'static, ()> {
    CLOCK.read().unwrap_or_else(|e| e.into_inner())
}

fn wall_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// The versions of `f`, and those of them whose time falls strictly inside
/// `(started, ended)` (wall clock, ns): at least `min` of those, or the
/// test fails with the agent's log. Counted once the file's final state
/// (the writer has stopped) restores from the repository: versions reach
/// it in the order they were captured, and each busy one here carries tens
/// of MiB of new chunks, so the last ones made while busy may still be on
/// their way when the writer stops.
fn versions_while_busy(
    env: &Env,
    f: &Path,
    (started, ended): (i64, i64),
    min: usize,
    what: &str,
    log: &Path,
) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let last = fs::read(f).unwrap();
    let dest = env.tmp.path().join("busy-final");
    wait_until("the final state restores from the repository", || {
        let _ = fs::remove_file(&dest);
        env.restore_to(f, &env.now(), &dest).status.success()
            && fs::read(&dest).is_ok_and(|d| d == last)
    });
    let versions = env.versions_json(f);
    let during: Vec<serde_json::Value> = versions
        .iter()
        .filter(|v| {
            let t = jiff::Timestamp::from_str_lossy(v["time"].as_str().unwrap());
            t > started && t < ended
        })
        .cloned()
        .collect();
    assert!(
        during.len() >= min,
        "a busy {what} file on btrfs gets versions while busy: {}\n{}",
        during.len(),
        fs::read_to_string(log).unwrap_or_default()
    );
    (versions, during)
}

fn rfc3339(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(ns as i128)
        .unwrap()
        .to_string()
}

/// The states a file went through: from each moment (wall clock, ns; the
/// start of the write that made it) on it held the given content until the
/// next entry's moment.
type History = Arc<Mutex<Vec<(i64, Vec<u8>)>>>;

/// Check a restore at `t`: the content must be a state the file had at
/// some moment at or before `t`, and that state must have lasted until at
/// least `t - busy_interval - 1 s` (bounded staleness).
fn check_at(env: &Env, file: &Path, history: &[(i64, Vec<u8>)], t: i64, i: usize) {
    let dest = env.tmp.path().join(format!("restore-{i}"));
    let out = env.restore_to(file, &rfc3339(t), &dest);
    assert!(
        out.status.success(),
        "restore at {}\n{}",
        rfc3339(t),
        show(&out)
    );
    let got = fs::read(&dest).unwrap();
    let pos = history
        .iter()
        .position(|(_, c)| *c == got)
        .unwrap_or_else(|| {
            panic!(
                "restore at {}: {} bytes that the file never held",
                rfc3339(t),
                got.len()
            )
        });
    let (from, _) = history[pos];
    let until = history.get(pos + 1).map_or(i64::MAX, |(at, _)| *at);
    assert!(
        from <= t,
        "restore at {} returned a state from {} (the future)",
        rfc3339(t),
        rfc3339(from)
    );
    let oldest_ok = t - (BUSY_INTERVAL + Duration::from_secs(1)).as_nanos() as i64;
    assert!(
        until >= oldest_ok,
        "restore at {} returned a state that ended at {}: more than busy_interval + 1 s old",
        rfc3339(t),
        rfc3339(until)
    );
}

/// Run `write` every `period` for [`RUN`], recording each state after it
/// is written; returns the history and the moment the writer started.
fn run_writer(
    file: &Path,
    period: Duration,
    mut write: impl FnMut(&Path, usize) -> Vec<u8>,
) -> (Vec<(i64, Vec<u8>)>, i64) {
    let history: History = Arc::new(Mutex::new(Vec::new()));
    let started = wall_ns();
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < RUN {
        // The state begins somewhere during the write: its moment is taken
        // before the write starts, so "at or before T" is judged against
        // the earliest moment it could have existed.
        let before = wall_ns();
        let content = write(file, n);
        history.lock().unwrap().push((before, content));
        n += 1;
        std::thread::sleep(period);
    }
    let h = history.lock().unwrap().clone();
    (h, started)
}

/// Wait until the newest version of `file` holds what it holds now.
fn wait_final(env: &Env, file: &Path) {
    let size = fs::metadata(file).unwrap().len();
    env.wait_versions_where(file, |vs| vs.last().is_some_and(|v| v["size"] == size));
}

#[test]
fn an_appended_log_restores_as_a_recent_prefix_at_every_second() {
    let _clock = timed();
    let env = Env::new();
    let log = env.root.join("app.log");
    fs::write(&log, b"").unwrap();
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    let mut content = Vec::new();
    let (mut history, started) = run_writer(&log, Duration::from_millis(20), |f, n| {
        let line = format!("{n:06} the application did something at step {n}\n");
        let mut w = OpenOptions::new().append(true).open(f).unwrap();
        w.write_all(line.as_bytes()).unwrap();
        content.extend_from_slice(line.as_bytes());
        content.clone()
    });
    history.insert(0, (started - 1, Vec::new()));
    wait_final(&env, &log);
    let versions = env.versions_json(&log);
    assert!(
        versions.len() >= 8,
        "a busy log gets a version about every {BUSY_INTERVAL:?}: {} versions in {RUN:?}",
        versions.len()
    );
    for s in 1..RUN.as_secs() as i64 {
        check_at(
            &env,
            &log,
            &history,
            started + s * 1_000_000_000,
            s as usize,
        );
    }
    agent.stop();
}

#[test]
fn a_file_rewritten_in_place_restores_a_recent_whole_state_at_every_second() {
    let _clock = timed();
    let env = Env::new();
    let f = env.root.join("state.bin");
    let state = |n: usize| -> Vec<u8> {
        // 64 KiB, every byte telling which rewrite it belongs to.
        let mut v = Vec::with_capacity(64 << 10);
        while v.len() < 64 << 10 {
            v.extend_from_slice(format!("rewrite {n:08};").as_bytes());
        }
        v.truncate(64 << 10);
        v
    };
    fs::write(&f, state(0)).unwrap();
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    let (mut history, started) = run_writer(&f, Duration::from_millis(50), |f, n| {
        let s = state(n + 1);
        // In place, not a new file: the same inode, overwritten.
        let w = OpenOptions::new().write(true).open(f).unwrap();
        w.write_all_at(&s, 0).unwrap();
        s
    });
    history.insert(0, (started - 1, state(0)));
    wait_final(&env, &f);
    let versions = env.versions_json(&f);
    assert!(versions.len() >= 8, "{} versions", versions.len());
    for s in 1..RUN.as_secs() as i64 {
        check_at(&env, &f, &history, started + s * 1_000_000_000, s as usize);
    }
    agent.stop();
}

#[test]
fn a_file_under_constant_random_writes_is_shown_busy_and_never_stored_torn() {
    let _clock = untimed();
    let env = Env::new();
    let f = env.root.join("disk.img");
    let size: u64 = 32 << 20;
    let first: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    fs::write(&f, &first).unwrap();
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    env.wait_versions(&f, 1);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let blocks = size / 4096;
    // Blocks only ever change from the first pattern to 0xa5, so the
    // states the file had are exactly "the first m distinct blocks the
    // writer hit are 0xa5"; the writer keeps that order.
    let writer = {
        let (f, stop) = (f.clone(), stop.clone());
        std::thread::spawn(move || {
            let w = OpenOptions::new().write(true).open(&f).unwrap();
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let block = [0xa5u8; 4096];
            let mut seen = vec![false; blocks as usize];
            let mut order = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // xorshift: a block anywhere in the file, without pause.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let b = x % blocks;
                if !seen[b as usize] {
                    seen[b as usize] = true;
                    order.push(b);
                }
                w.write_all_at(&block, b * 4096).unwrap();
            }
            order
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let busy = loop {
        let st = env.json(&["status", "--json"]);
        let busy = st["agent"]["busy"].as_array().cloned().unwrap_or_default();
        if let Some(b) = busy.iter().find(|b| b["path"].as_str() == f.to_str()) {
            break b.clone();
        }
        assert!(Instant::now() < deadline, "never shown busy: {st}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(busy["attempts"].as_u64().unwrap() >= 2, "{busy}");
    assert!(
        env.ok(&["status"]).contains("busy "),
        "the text status says it too"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let order = writer.join().unwrap();
    // Once quiet its final state is captured, whole: by a capture after
    // the writer stopped or, on a loaded machine, by one that read the file
    // between the writer's last write and its stop (its version's time is
    // then before the stop, and no later version comes: nothing changed).
    let last = fs::read(&f).unwrap();
    let dest = env.tmp.path().join("img-now");
    wait_until("the final state restores whole", || {
        let _ = fs::remove_file(&dest);
        env.restore_to(&f, &env.now(), &dest).status.success()
            && fs::read(&dest).is_ok_and(|d| d == last)
    });
    let versions = env.versions_json(&f);
    // Nothing torn was stored meanwhile: every version (on a loaded
    // machine the writer may pause long enough for a copy to succeed) is a
    // state the file had.
    for (i, v) in versions.iter().enumerate() {
        let dest = env.tmp.path().join(format!("img-{i}"));
        env.restore_to_ok(&f, v["time"].as_str().unwrap(), &dest);
        let got = fs::read(&dest).unwrap();
        let hit: std::collections::BTreeSet<u64> = (0..blocks)
            .filter(|b| {
                let blk = &got[(*b * 4096) as usize..((*b + 1) * 4096) as usize];
                if blk.iter().all(|x| *x == 0xa5) {
                    return true;
                }
                assert!(
                    blk == &first[(*b * 4096) as usize..((*b + 1) * 4096) as usize],
                    "version {i}: block {b} is neither before nor after a write (torn inside it)"
                );
                false
            })
            .collect();
        let prefix: std::collections::BTreeSet<u64> = order[..hit.len().min(order.len())]
            .iter()
            .copied()
            .collect();
        assert_eq!(
            hit,
            prefix,
            "version {i} holds {} written blocks that were never the written ones at once",
            hit.len()
        );
    }
    agent.stop();
}

/// A real SQLite writer (Python's sqlite3 module, the system's SQLite):
/// 100 accounts of 1000 each, and every 10 ms a transaction that moves
/// money between two of them and records its number; it logs each
/// transaction's number and the moments just before `BEGIN` and just after
/// `COMMIT` (wall clock, ns).
const BANK: &str = r#"
import random, sqlite3, sys, time
db, mode, seconds, log = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
con = sqlite3.connect(db, isolation_level=None)
con.execute(f"PRAGMA journal_mode={mode}")
con.execute("CREATE TABLE IF NOT EXISTS accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
con.execute("CREATE TABLE IF NOT EXISTS transfers(n INTEGER PRIMARY KEY, amount INTEGER NOT NULL)")
if con.execute("SELECT count(*) FROM accounts").fetchone()[0] == 0:
    con.executemany("INSERT INTO accounts VALUES(?, 1000)", [(i,) for i in range(100)])
if seconds == 0:
    sys.exit(0)
end = time.time() + seconds
n = 0
with open(log, "w") as f:
    while time.time() < end:
        n += 1
        a, b = random.sample(range(100), 2)
        amount = random.randint(1, 50)
        before = time.time_ns()
        con.execute("BEGIN IMMEDIATE")
        con.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", (amount, a))
        con.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", (amount, b))
        con.execute("INSERT INTO transfers VALUES(?, ?)", (n, amount))
        con.execute("COMMIT")
        f.write(f"{n} {before} {time.time_ns()}\n")
        f.flush()
        time.sleep(0.01)
"#;

/// What a restored bank says: `integrity_check`, the total of the
/// balances, and the transfer numbers it holds.
const AUDIT: &str = r#"
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
ok = con.execute("PRAGMA integrity_check").fetchone()[0]
total = con.execute("SELECT sum(balance) FROM accounts").fetchone()[0]
ns = [r[0] for r in con.execute("SELECT n FROM transfers ORDER BY n")]
print(ok, total, len(ns), ns[-1] if ns else 0)
"#;

fn python(args: &[&str]) -> std::process::Output {
    std::process::Command::new("python3")
        .args(args)
        .output()
        .expect("python3 runs (scripts/test installs it)")
}

fn bank_keeps_its_books(mode: &str) {
    let env = Env::new();
    let db = env.root.join("bank.sqlite");
    let db_s = db.to_str().unwrap();
    let out = python(&["-c", BANK, db_s, mode, "0", "/dev/null"]);
    assert!(out.status.success(), "{}", show(&out));
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    env.wait_versions(&db, 1);
    let log = env.tmp.path().join("bank.log");
    let started = wall_ns();
    let out = python(&[
        "-c",
        BANK,
        db_s,
        mode,
        &RUN.as_secs().to_string(),
        log.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", show(&out));
    // (n, before BEGIN, after COMMIT)
    let tx: Vec<(u64, i64, i64)> = fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    assert!(tx.len() > 500, "the writer ran: {} transactions", tx.len());
    // Let the last state be captured.
    std::thread::sleep(Duration::from_secs(3));
    let stale = (BUSY_INTERVAL + Duration::from_secs(1)).as_nanos() as i64;
    for s in 1..RUN.as_secs() as i64 {
        let t = started + s * 1_000_000_000;
        let dest = env.tmp.path().join(format!("bank-{s}.sqlite"));
        let out = env.restore_to(&db, &rfc3339(t), &dest);
        assert!(
            out.status.success(),
            "restore at {}\n{}",
            rfc3339(t),
            show(&out)
        );
        let out = python(&["-c", AUDIT, dest.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "restored at {}: {}",
            rfc3339(t),
            show(&out)
        );
        let said = String::from_utf8_lossy(&out.stdout);
        let f: Vec<&str> = said.split_whitespace().collect();
        assert_eq!(f[0], "ok", "integrity at {}: {said}", rfc3339(t));
        assert_eq!(
            f[1],
            "100000",
            "money created or lost at {}: {said}",
            rfc3339(t)
        );
        let (count, last): (u64, u64) = (f[2].parse().unwrap(), f[3].parse().unwrap());
        assert_eq!(
            count,
            last,
            "transfers 1..={last} without a gap at {}",
            rfc3339(t)
        );
        if last > 0 {
            let began = tx[last as usize - 1].1;
            assert!(
                began <= t,
                "restore at {} holds transfer {last}, begun at {} (the future)",
                rfc3339(t),
                rfc3339(began)
            );
        }
        let due = tx.iter().filter(|(_, _, done)| *done <= t - stale).count() as u64;
        assert!(
            last >= due,
            "restore at {} holds {last} transfers; {due} were committed more than \
             busy_interval + 1 s before",
            rfc3339(t)
        );
    }
    agent.stop();
}

#[test]
fn a_sqlite_database_in_wal_mode_restores_consistent_and_recent_at_every_second() {
    let _clock = timed();
    bank_keeps_its_books("WAL");
}

#[test]
fn a_sqlite_database_with_a_rollback_journal_restores_consistent_and_recent_at_every_second() {
    let _clock = timed();
    bank_keeps_its_books("DELETE");
}

/// On btrfs a busy file is copied by reflink in an instant, so even one of
/// 40 MiB under writes without pause gets versions while it stays busy, and
/// every one of them is a state the file really had.
#[test]
fn on_btrfs_a_large_file_under_constant_writes_gets_consistent_versions() {
    let _clock = untimed();
    let env = Env::new();
    let mnt = env.tmp.path().canonicalize().unwrap().join("btrfs");
    let Some(_fs) = LoopFs::make("btrfs", &env.tmp.path().join("btrfs.img"), "512M", &mnt) else {
        return;
    };
    const MIB: usize = 1 << 20;
    const BLOCKS: usize = 40;
    let f = mnt.join("vm.img");
    fs::write(&f, vec![0u8; BLOCKS * MIB]).unwrap();
    let log = env.tmp.path().join("agent-btrfs.log");
    let agent = env.spawn_agent(
        &["watch", mnt.to_str().unwrap(), "--quiescence", "100ms"],
        &log,
    );
    env.wait_versions(&f, 1);
    // Generation g writes block after block (1 MiB each) of byte g, 2 ms
    // apart, far below the 100 ms of quiet a capture waits for, so the file
    // is never quiet: every state is "the first k blocks are g, the rest
    // g - 1". (Without the gaps the writer took a whole core, and with the
    // suite's other tests beside it on CI's two the agent made 2 versions
    // in 12 s instead of one every 2 s.)
    let started = wall_ns();
    let run = Duration::from_secs(16);
    {
        let w = OpenOptions::new().write(true).open(&f).unwrap();
        let t = Instant::now();
        let mut g: u8 = 0;
        while t.elapsed() < run {
            g = g.wrapping_add(1).max(1);
            let block = vec![g; MIB];
            for k in 0..BLOCKS {
                w.write_all_at(&block, (k * MIB) as u64).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    let ended = wall_ns();
    let (_, during) = versions_while_busy(&env, &f, (started, ended), 3, "40 MiB", &log);
    for (i, v) in during.iter().enumerate() {
        let dest = env.tmp.path().join(format!("vm-{i}"));
        env.restore_to_ok(&f, v["time"].as_str().unwrap(), &dest);
        let got = fs::read(&dest).unwrap();
        assert_eq!(got.len(), BLOCKS * MIB);
        let g = got[0];
        let k = got.iter().position(|b| *b != g).unwrap_or(got.len());
        let prev = g.wrapping_sub(1).max(if g == 1 { 0 } else { 1 });
        assert!(
            k % MIB == 0 && got[k..].iter().all(|b| *b == prev || (g == 1 && *b == 255)),
            "version {i} at {} is torn: {k} bytes of {g}, then not all {prev}",
            v["time"]
        );
    }
    drop(agent);
}

/// On btrfs a busy file above the size copied into memory first is
/// reflinked, and then read from the page cache when a copy of the file
/// itself sees no write (the clone's own reads go to the disk): every
/// version, whichever copy it was read from, restores byte for byte to a
/// state the file had.
#[test]
fn on_btrfs_a_reflinked_busy_file_restores_states_it_had_whichever_copy_was_read() {
    let _clock = untimed();
    let env = Env::new();
    let mnt = env.tmp.path().canonicalize().unwrap().join("btrfs-live");
    let Some(_fs) = LoopFs::make("btrfs", &env.tmp.path().join("live.img"), "512M", &mnt) else {
        return;
    };
    const BLOCK: usize = 4096;
    let size = 24 << 20;
    let blocks = size / BLOCK;
    let first: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let f = mnt.join("mail.box");
    fs::write(&f, &first).unwrap();
    let log = env.tmp.path().join("agent-btrfs-live.log");
    let agent = env.spawn_agent(&["watch", mnt.to_str().unwrap()], &log);
    env.wait_versions(&f, 1);
    // Write j puts 0xa5 over block (j * 977) mod blocks (all distinct for
    // the writes made here), one every 150 ms: the states the file had are
    // exactly "the first k blocks of that order are 0xa5".
    let started = wall_ns();
    let order: Vec<usize> = (0..60).map(|j| (j * 977) % blocks).collect();
    {
        let w = OpenOptions::new().write(true).open(&f).unwrap();
        for b in &order {
            w.write_all_at(&[0xa5u8; BLOCK], (b * BLOCK) as u64)
                .unwrap();
            std::thread::sleep(Duration::from_millis(150));
        }
    }
    let ended = wall_ns();
    let (versions, _) = versions_while_busy(&env, &f, (started, ended), 2, "24 MiB", &log);
    for (i, v) in versions.iter().enumerate() {
        let dest = env.tmp.path().join(format!("box-{i}"));
        env.restore_to_ok(&f, v["time"].as_str().unwrap(), &dest);
        let got = fs::read(&dest).unwrap();
        assert_eq!(got.len(), size);
        let k = order
            .iter()
            .take_while(|b| got[*b * BLOCK..(*b + 1) * BLOCK].iter().all(|x| *x == 0xa5))
            .count();
        let mut want = first.clone();
        for b in &order[..k] {
            want[b * BLOCK..(b + 1) * BLOCK].fill(0xa5);
        }
        assert!(
            got == want,
            "version {i} at {} is not a state the file had (the first {k} writes, then others or torn)",
            v["time"]
        );
    }
    drop(agent);
}

/// A small helper for comparing the `time` strings `versions --json` gives.
trait Lossy {
    fn from_str_lossy(s: &str) -> i64;
}

impl Lossy for jiff::Timestamp {
    fn from_str_lossy(s: &str) -> i64 {
        s.parse::<jiff::Timestamp>().unwrap().as_nanosecond() as i64
    }
}

/// Two files an application keeps as one state, named as a group in the
/// config: captured together (their versions carry one moment) and,
/// restored at any moment, as they were at one moment.
#[test]
fn files_named_as_one_group_in_the_config_restore_as_one_state() {
    let _clock = untimed();
    let env = Env::new();
    let mail = env.root.join("mail");
    fs::create_dir(&mail).unwrap();
    let mbox = mail.join("inbox.mbox");
    let idx = mail.join("inbox.idx");
    fs::write(&mbox, b"").unwrap();
    fs::write(&idx, b"0").unwrap();
    let (agent, _log) = agent_with(
        &env,
        &env.root,
        "[watch]\npaths = [\"{root}\"]\nquiescence = \"100ms\"\ngroups = [\"**/mail/inbox.*\"]\n",
    );
    env.wait_versions(&idx, 1);
    // Each message is appended to the mailbox, then the index records the
    // mailbox's length: in every real state the index lags the mailbox by
    // at most one message, and is never ahead of it.
    let msg = b"From: someone\nSubject: hello\n\nA message of some length.\n\n";
    let started = wall_ns();
    let t = Instant::now();
    let mut len = 0usize;
    while t.elapsed() < Duration::from_secs(10) {
        OpenOptions::new()
            .append(true)
            .open(&mbox)
            .unwrap()
            .write_all(msg)
            .unwrap();
        len += msg.len();
        let i = OpenOptions::new().write(true).open(&idx).unwrap();
        i.write_all_at(len.to_string().as_bytes(), 0).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(3));
    // Captured together: every version of one carries the moment of a
    // version of the other.
    let times = |p: &Path| -> std::collections::BTreeSet<String> {
        env.versions_json(p)
            .iter()
            .skip(1)
            .map(|v| v["time"].as_str().unwrap().to_string())
            .collect()
    };
    let (tm, ti) = (times(&mbox), times(&idx));
    assert!(tm.len() >= 3, "versions while busy: {tm:?}");
    assert_eq!(tm, ti, "the group's members were captured apart");
    for s in 1..10i64 {
        let at = rfc3339(started + s * 1_000_000_000);
        let dest = env.tmp.path().join(format!("mail-{s}"));
        env.restore_to_ok(&mail, &at, &dest);
        let m = fs::read(dest.join("inbox.mbox")).unwrap().len();
        let i: usize = String::from_utf8(fs::read(dest.join("inbox.idx")).unwrap())
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            i <= m && m - i <= msg.len(),
            "at {at}: the index says {i} bytes, the mailbox has {m}: never one state"
        );
    }
    drop(agent);
}

/// Start `rewind agent` with `config` (TOML text, `{root}` replaced by the
/// protected folder), once its first pass is complete; the agent and its
/// log.
fn agent_with(env: &Env, root: &Path, config: &str) -> (Daemon, std::path::PathBuf) {
    let cfg = env.write_config(&config.replace("{root}", &root.display().to_string()));
    let log = env.tmp.path().join(format!("agent-{}.log", wall_ns()));
    let d = env.spawn_agent(&["agent", "--config", cfg.to_str().unwrap()], &log);
    (d, log)
}

/// The user's snapshot command (here a copy, changing a file live right
/// after it): the first pass reads from it, every version it made carries
/// the snapshot's one moment, the file changed since is captured again
/// live, and the snapshot is removed.
#[test]
fn the_first_pass_reads_from_the_users_snapshot_at_one_moment() {
    let _clock = untimed();
    let env = Env::new();
    for i in 0..20 {
        fs::write(env.root.join(format!("f{i}.txt")), format!("before {i}")).unwrap();
    }
    let snap = env.tmp.path().canonicalize().unwrap().join("snap");
    let config = format!(
        "[watch]\npaths = [\"{{root}}\"]\nquiescence = \"100ms\"\n\n\
         [snapshot]\nkind = \"command\"\n\
         create = [\"sh\", \"-c\", \"cp -a \\\"$0\\\" {s} && echo after > \\\"$0\\\"/f0.txt && echo {s}\", \"{{root}}\"]\n\
         remove = [\"rm\", \"-rf\", \"{{path}}\"]\n",
        s = snap.display()
    );
    let (agent, log) = agent_with(&env, &env.root, &config);
    let said = fs::read_to_string(&log).unwrap();
    assert!(said.contains("first pass reads from a snapshot"), "{said}");
    env.wait_versions(&env.root.join("f0.txt"), 2);
    let first: std::collections::BTreeSet<String> = (0..20)
        .map(|i| {
            env.versions_json(&env.root.join(format!("f{i}.txt")))[0]["time"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(first.len(), 1, "one moment for the first pass: {first:?}");
    let f0 = env.versions_json(&env.root.join("f0.txt"));
    assert_eq!(f0[0]["size"], "before 0".len(), "{f0:?}");
    assert_eq!(
        f0[1]["size"],
        "after\n".len(),
        "the live state follows: {f0:?}"
    );
    wait_until("the snapshot is removed", || !snap.exists());
    drop(agent);
}

/// On btrfs the first pass reads from a read-only subvolume snapshot,
/// removed afterwards.
#[test]
fn on_btrfs_the_first_pass_reads_from_a_subvolume_snapshot() {
    let _clock = untimed();
    let env = Env::new();
    let mnt = env.tmp.path().canonicalize().unwrap().join("btrfs-snap");
    let Some(_fs) = LoopFs::make("btrfs", &env.tmp.path().join("snap.img"), "512M", &mnt) else {
        return;
    };
    let root = mnt.join("docs");
    fs::create_dir(&root).unwrap();
    for i in 0..20 {
        fs::write(root.join(format!("f{i}.txt")), format!("file {i}")).unwrap();
    }
    let (agent, log) = agent_with(&env, &root, "[watch]\npaths = [\"{root}\"]\n");
    let said = fs::read_to_string(&log).unwrap();
    assert!(said.contains("first pass reads from a snapshot"), "{said}");
    let times: std::collections::BTreeSet<String> = (0..20)
        .map(|i| {
            env.versions_json(&root.join(format!("f{i}.txt")))[0]["time"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(times.len(), 1, "one moment for the first pass: {times:?}");
    let left: Vec<_> = fs::read_dir(mnt.join(".rewind-snapshots"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "snapshots left: {left:?}");
    drop(agent);
}
