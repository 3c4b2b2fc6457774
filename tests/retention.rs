//! Retention with the real binaries: an agent capturing a file edited
//! every 200 ms, a policy in seconds, forget and prune while it captures,
//! pins, and a crash at each step of prune.

mod harness;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::{Env, show};

/// The states written, with the time each write finished.
type Written = Arc<Mutex<Vec<(jiff::Timestamp, String)>>>;

/// Write `state N` into `file` every 200 ms until `stop`.
fn editor(file: &Path, stop: Arc<AtomicBool>, written: Written) -> std::thread::JoinHandle<()> {
    let file = file.to_path_buf();
    std::thread::spawn(move || {
        let mut i = written.lock().unwrap().len();
        while !stop.load(Ordering::Relaxed) {
            let s = format!("state {i}\n");
            fs::write(&file, &s).unwrap();
            written.lock().unwrap().push((jiff::Timestamp::now(), s));
            i += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}

/// `file` restored as it was at `at` (`None`: nothing there then).
fn restored(env: &Env, file: &Path, at: &str, n: usize) -> Option<String> {
    let dest = env.tmp.path().join(format!("out-{n}"));
    // A caller polling with the same `n` restores again over the last try.
    let _ = fs::remove_file(&dest);
    let out = env.restore_to(file, at, &dest);
    if !out.status.success() {
        return None;
    }
    Some(fs::read_to_string(&dest).unwrap())
}

/// The number in `state N`.
fn number(s: &str) -> usize {
    s.trim().strip_prefix("state ").unwrap().parse().unwrap()
}

fn wait_newest(env: &Env, file: &Path) {
    let want = fs::read_to_string(file).unwrap();
    harness::wait_until("the newest state in the repository", || {
        restored(env, file, "now", 99_999).as_deref() == Some(&want)
    });
}

#[test]
fn forget_and_prune_while_the_agent_captures_keep_every_kept_point_and_pins() {
    let env = Env::new();
    let file = env.root.join("f.txt");
    fs::write(&file, "state 0\n").unwrap();
    let cfg = env.write_config(&format!(
        "[watch]\npaths = [{:?}]\nquiescence = \"100ms\"\n\n[retention]\npolicy = \"all 4s, every 2s for 20s, every 10s\"\nevery = \"0s\"\nkeep_free = \"off\"\n",
        env.root.display().to_string()
    ));
    let log = env.tmp.path().join("agent.log");
    let agent = env.spawn_agent(&["agent", "--config", cfg.to_str().unwrap()], &log);
    let stop = Arc::new(AtomicBool::new(false));
    let written: Written = Arc::new(Mutex::new(vec![(
        jiff::Timestamp::now(),
        "state 0\n".into(),
    )]));
    let ed = editor(&file, stop.clone(), written.clone());
    std::thread::sleep(Duration::from_secs(3));
    // A pin in what the policy thins.
    let pinned_at = jiff::Timestamp::now().to_string();
    // The state at that moment once it is durable: a write just before it
    // may still be in the pipeline (quiescence, capture, commit), and a
    // restore 50 ms later gave the one before it. 1.5 s is well inside the
    // policy's `all 4s`, so nothing is thinned yet.
    std::thread::sleep(Duration::from_millis(1500));
    let pinned = restored(&env, &file, &pinned_at, 0).expect("the pinned state");
    let pin = env.json(&["pin", "--at", &pinned_at, "--label", "keep me", "--json"]);
    std::thread::sleep(Duration::from_secs(9));

    // Forget and prune through the agent, while the editor goes on.
    let f = env.json(&["forget", "--json"]);
    assert!(f["versions_forgotten"].as_u64().unwrap() > 0, "{f:#}");
    let p = env.json(&["prune", "--max-unused", "0", "--json"]);
    assert!(p["bytes_freed"].as_u64().unwrap() > 0, "{p:#}");
    assert!(p["packs_deleted"].as_u64().unwrap() > 0, "{p:#}");
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    ed.join().unwrap();
    wait_newest(&env, &file);

    // The newest state is exact; the pin survived with its state.
    let pins = env.json(&["pins", "--json"]);
    assert_eq!(pins["pins"][0]["id"], pin["id"], "{pins:#}");
    assert_eq!(
        restored(&env, &file, &pinned_at, 1).as_deref(),
        Some(pinned.as_str())
    );

    // Every moment restores a state that was written by then; a moment
    // between kept points restores exactly its kept point; time never
    // goes backwards.
    let states = written.lock().unwrap().clone();
    let start = states[0].0;
    let end = states.last().unwrap().0;
    let mut t = start.checked_add(Duration::from_millis(300)).unwrap();
    let mut last = 0;
    let mut seen = false;
    let mut n = 10;
    while t < end {
        let at = t.to_string();
        let out = env.run(&[
            "ls",
            file.parent().unwrap().to_str().unwrap(),
            "--at",
            &at,
            "--json",
        ]);
        if !out.status.success() {
            // Before the oldest kept point nothing is kept: only there.
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("nothing is kept") && !seen,
                "{at}: {}",
                show(&out)
            );
            t = t.checked_add(Duration::from_millis(700)).unwrap();
            continue;
        }
        let ls: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        seen = true;
        let snapped = ls["point"]["snapped"].as_bool() == Some(true);
        let used = ls["point"]["used"].as_str().unwrap_or(&at).to_string();
        let got = restored(&env, &file, &at, n).unwrap_or_else(|| panic!("nothing at {at}"));
        n += 1;
        let k = number(&got);
        let written_at = states
            .iter()
            .find(|(_, s)| *s == got)
            .expect("a written state")
            .0;
        assert!(
            written_at <= t,
            "{got:?} at {at} was written at {written_at}"
        );
        assert!(k >= last, "{at}: state {k} after state {last}");
        last = k;
        if snapped {
            let at_point = restored(&env, &file, &used, n);
            n += 1;
            assert_eq!(
                at_point.as_deref(),
                Some(got.as_str()),
                "{at} snaps to {used}"
            );
        }
        t = t.checked_add(Duration::from_millis(700)).unwrap();
    }
    let out = env.run(&["verify"]);
    assert!(out.status.success(), "{}", show(&out));
    drop(agent);
}

#[test]
fn a_crash_at_each_step_of_prune_is_recovered_by_the_next() {
    for step in [
        "prune.repack",
        "prune.switch",
        "prune.intent",
        "prune.delete_pack",
        "prune.delete_idx",
        "prune.done",
    ] {
        let env = Env::new();
        let file = env.root.join("f.txt");
        fs::write(&file, "state 0\n").unwrap();
        let agent = env.watch(&[]);
        agent.wait_first_pass();
        let stop = Arc::new(AtomicBool::new(false));
        let written: Written = Arc::new(Mutex::new(vec![(
            jiff::Timestamp::now(),
            "state 0\n".into(),
        )]));
        let ed = editor(&file, stop.clone(), written.clone());
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        ed.join().unwrap();
        wait_newest(&env, &file);
        agent.stop();
        env.ok(&["forget", "--policy", "all 1s, every 1s for 2s"]);
        let out = env.run_with_failpoint(&format!("{step}=crash"), &["prune", "--max-unused", "0"]);
        assert!(
            !out.status.success(),
            "{step}: the prune went through\n{}",
            show(&out)
        );
        let v = env.run(&["verify"]);
        assert!(v.status.success(), "{step}: {}", show(&v));
        let want = fs::read_to_string(&file).unwrap();
        assert_eq!(
            restored(&env, &file, "now", 1).as_deref(),
            Some(want.as_str()),
            "{step}"
        );
        let p = env.json(&["prune", "--max-unused", "0", "--json"]);
        let again = env.json(&["prune", "--max-unused", "0", "--json"]);
        assert_eq!(
            again["packs_deleted"].as_u64().unwrap() + again["packs_repacked"].as_u64().unwrap(),
            0,
            "{step}: {p:#} then {again:#}"
        );
        let v = env.run(&["verify"]);
        assert!(v.status.success(), "{step}: {}", show(&v));
        assert_eq!(
            restored(&env, &file, "now", 2).as_deref(),
            Some(want.as_str()),
            "{step}"
        );
    }
}

/// The agent forgets and prunes by itself: on its schedule, and at once
/// when `max_size` trips, oldest kept points first, never a pin, never the
/// newest state.
#[test]
fn the_agent_applies_its_policy_and_max_size_by_itself_oldest_first() {
    let env = Env::new();
    let file = env.root.join("big.bin");
    fs::write(&file, harness::noise(64 << 10, 0)).unwrap();
    let cfg = env.write_config(&format!(
        "[watch]\npaths = [{:?}]\nquiescence = \"100ms\"\n\n[retention]\npolicy = \"all 2s, every 1s\"\nevery = \"3s\"\nmax_size = \"600KiB\"\nkeep_free = \"off\"\n",
        env.root.display().to_string()
    ));
    let log = env.tmp.path().join("agent.log");
    let agent = env.spawn_agent(&["agent", "--config", cfg.to_str().unwrap()], &log);
    // 64 KiB of new noise every 200 ms: past 600 KiB within a second or two.
    let mut pinned = None;
    for i in 1..60u64 {
        fs::write(&file, harness::noise(64 << 10, i)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        if i == 5 {
            std::thread::sleep(Duration::from_millis(300));
            let at = jiff::Timestamp::now().to_string();
            let state = fs::read(&file).unwrap();
            env.ok(&["pin", "--at", &at, "--label", "keep"]);
            pinned = Some((at, state));
        }
    }
    let want = fs::read(&file).unwrap();
    let mut status = serde_json::Value::Null;
    harness::wait_until("the repository back under max_size", || {
        status = env.json(&["status", "--json"]);
        eprintln!(
            "{:?} {}",
            status["repository"]["pack_bytes"], status["retention"]
        );
        status["repository"]["pack_bytes"].as_u64().unwrap() <= 600 << 10
            && !status["retention"]["space_removals"]
                .as_array()
                .is_none_or(|a| a.is_empty())
    });
    let r = &status["retention"];
    assert!(r["last_forget"].is_object(), "{r:#}");
    assert!(r["last_prune"].is_object(), "{r:#}");
    assert_eq!(r["pins"], 1, "{r:#}");
    // Oldest first: every point a space rule removed is older than every
    // point still kept.
    let removed: Vec<jiff::Timestamp> = r["space_removals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["point"].as_str().unwrap().parse().unwrap())
        .collect();
    let status_text = env.ok(&["status"]);
    assert!(status_text.contains("space rule"), "{status_text}");
    let pins = env.json(&["pins", "--json"]);
    let pin_at: jiff::Timestamp = pins["pins"][0]["at"].as_str().unwrap().parse().unwrap();
    if let Some(oldest) = r["oldest_point"].as_str() {
        let oldest: jiff::Timestamp = oldest.parse().unwrap();
        for p in &removed {
            assert!(
                *p < oldest || oldest == pin_at,
                "{p} removed, {oldest} kept: {r:#}"
            );
        }
    }
    // The pin and the newest state restore exactly.
    let (at, state) = pinned.unwrap();
    let dest = env.tmp.path().join("pinned");
    env.restore_to_ok(&file, &at, &dest);
    assert_eq!(fs::read(&dest).unwrap(), state, "the pinned state");
    let dest = env.tmp.path().join("newest");
    harness::wait_until("the newest state restored", || {
        let _ = fs::remove_file(&dest);
        env.restore_to(&file, "now", &dest).status.success() && fs::read(&dest).unwrap() == want
    });
    assert!(
        fs::read_to_string(&log).unwrap().contains("space rule"),
        "the removals are logged"
    );
    drop(agent);
    let out = env.run(&["verify"]);
    assert!(out.status.success(), "{}", show(&out));
}

/// Forget and prune killed with SIGKILL at random moments, round after
/// round, each forget thinning more (so each prune has work): the
/// repository verifies clean, the pinned points and the newest state
/// restore exactly as before, and the next prune completes (with nothing
/// left after it).
#[test]
fn sigkill_at_random_moments_of_forget_and_prune_loses_nothing_kept() {
    let env = Env::new();
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    let mut pinned = Vec::new();
    for i in 0..30u64 {
        fs::write(
            env.root.join(format!("f{}.bin", i % 3)),
            harness::noise(128 << 10, i),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        if i % 7 == 5 {
            // Past the quiescence: this state is the one captured.
            std::thread::sleep(Duration::from_millis(300));
            pinned.push(jiff::Timestamp::now().to_string());
        }
    }
    let last = env.root.join("f2.bin");
    let want = fs::read(&last).unwrap();
    harness::wait_until("the newest state in the repository", || {
        let dest = env.tmp.path().join("newest");
        let _ = fs::remove_file(&dest);
        env.restore_to(&last, "now", &dest).status.success() && fs::read(&dest).unwrap() == want
    });
    agent.stop();
    for at in &pinned {
        env.ok(&["pin", "--at", at]);
    }
    let mut moments = pinned.clone();
    moments.push("now".to_string());
    let trees = |tag: &str| -> Vec<Vec<String>> {
        moments
            .iter()
            .enumerate()
            .map(|(n, at)| {
                let dest = env.tmp.path().join(format!("{tag}-{n}"));
                env.restore_to_ok(&env.root, at, &dest);
                harness::describe_tree(&dest)
            })
            .collect()
    };
    let before = trees("before");
    assert_eq!(before.len(), 5);

    let seed = jiff::Timestamp::now().as_nanosecond() as u64 | 1;
    eprintln!("seed {seed}");
    let mut next = harness::xorshift(seed);
    // Kill within a window sized by how long each command takes here: its
    // dry run (the same start, open and planning, without the writes),
    // three times over, so that kills fall across the whole of the real
    // runs on this machine, fast or loaded, and many land before the run
    // ends (fixed windows of 40 and 80 ms let every run
    // finish first on an idle machine).
    let window = |args: &[&str]| {
        let started = std::time::Instant::now();
        env.ok(args);
        (3 * started.elapsed().as_millis() as u64).max(3)
    };
    let forget_ms = window(&["forget", "--policy", "all 1s, every 1s", "--dry-run"]);
    let prune_ms = window(&["prune", "--max-unused", "0", "--dry-run"]);
    eprintln!("kill windows: forget {forget_ms} ms, prune {prune_ms} ms");
    let mut killed = 0;
    // True when the run was still working when it was killed.
    let mut run_and_kill = |args: &[&str], within_ms: u64| -> bool {
        let mut child = env
            .command()
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(next() % within_ms));
        let running = matches!(child.try_wait(), Ok(None));
        child.kill().unwrap();
        child.wait().unwrap();
        running
    };
    // Eight rounds, and more until four runs were killed while they ran.
    let mut round = 0;
    while round < 8 || (killed < 4 && round < 40) {
        round += 1;
        // Coarser each round: a forget only ever removes points, so each
        // leaves more for the prune after it.
        let policy = format!("all 1s, every {round}s");
        killed += run_and_kill(&["forget", "--policy", &policy], forget_ms) as u32;
        killed += run_and_kill(&["prune", "--max-unused", "0"], prune_ms) as u32;
    }
    assert!(killed >= 4, "{killed} runs were killed while they ran");

    // A prune killed after a new pack's rename and before its index file
    // leaves a whole pack without its index: readers read its footer, and
    // the next writer to open the repository writes the index (the repo
    // crate's "After a crash"). So the next writer's command runs first;
    // `verify` would otherwise report the missing index, as it does for
    // one deleted by hand (tests/faults.rs).
    env.ok(&["forget", "--policy", "all 1s, every 10s"]);
    let v = env.run(&["verify"]);
    assert!(v.status.success(), "{}", show(&v));
    assert_eq!(trees("killed"), before, "after the kills");
    let p = env.json(&["prune", "--max-unused", "0", "--json"]);
    eprintln!("{killed} runs killed while running; the prune after them: {p}");
    let again = env.json(&["prune", "--max-unused", "0", "--json"]);
    assert_eq!(
        again["packs_deleted"].as_u64().unwrap() + again["packs_repacked"].as_u64().unwrap(),
        0,
        "{p:#} then {again:#}"
    );
    let v = env.run(&["verify"]);
    assert!(v.status.success(), "{}", show(&v));
    assert_eq!(trees("pruned"), before, "after the last prunes");
}
