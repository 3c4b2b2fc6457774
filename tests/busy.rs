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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use harness::*;

/// How long the writers run.
const RUN: Duration = Duration::from_secs(20);
/// The agent's default busy interval.
const BUSY_INTERVAL: Duration = Duration::from_secs(2);

fn wall_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
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
    let env = Env::new();
    let f = env.root.join("disk.img");
    let size: u64 = 32 << 20;
    let first: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    fs::write(&f, &first).unwrap();
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    env.wait_versions(&f, 1);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (f, stop) = (f.clone(), stop.clone());
        std::thread::spawn(move || {
            let w = OpenOptions::new().write(true).open(&f).unwrap();
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let block = [0xa5u8; 4096];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // xorshift: a block anywhere in the file, without pause.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                w.write_all_at(&block, (x % (size / 4096)) * 4096).unwrap();
            }
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
    // Nothing torn was stored meanwhile: the only version is the first.
    assert_eq!(env.versions_json(&f).len(), 1);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    // Once quiet it is captured, whole.
    env.wait_versions(&f, 2);
    let dest = env.tmp.path().join("img-now");
    env.restore_to_ok(&f, &env.now(), &dest);
    assert_eq!(fs::read(&dest).unwrap(), fs::read(&f).unwrap());
    agent.stop();
}
