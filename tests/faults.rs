//! Damage to the repository: `verify` finds it, `repair` keeps everything
//! that is intact, and restore still brings back every undamaged file (the
//! damaged ones are reported, exit code 3).

mod harness;

use std::fs;
use std::path::PathBuf;

use harness::{Env, SmallFs, files_under, noise, show};

fn repo_dir(env: &Env) -> PathBuf {
    env.tmp
        .path()
        .canonicalize()
        .unwrap()
        .join("data/rewind/repo")
}

#[test]
fn verify_finds_and_repair_survives_pack_and_index_damage() {
    let env = Env::new();
    let text = b"a file that stays intact\n".repeat(40);
    let big = noise(200_000, 7);
    fs::write(env.root.join("a.txt"), &text).unwrap();
    fs::write(env.root.join("big.bin"), &big).unwrap();
    fs::create_dir(env.root.join("d")).unwrap();
    fs::write(env.root.join("d/c.txt"), b"another one\n").unwrap();
    env.ok(&["watch", env.root.to_str().unwrap(), "--once"]);
    let at = env.now();
    let repo = repo_dir(&env);

    let clean = env.json(&["verify", "--json"]);
    assert_eq!(clean["ok"], true, "{clean}");
    assert!(clean["chunks_read"].as_u64().unwrap() >= 3, "{clean}");

    // 1. A missing index file: found, and rebuilt by repair.
    let idx = files_under(&repo.join("index"), "idx");
    assert!(!idx.is_empty());
    fs::remove_file(&idx[0]).unwrap();
    let out = env.run(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pack has no index file"),
        "{}",
        show(&out)
    );
    let fixed = env.json(&["repair", "--json"]);
    assert!(
        fixed["damaged_versions"].as_array().unwrap().is_empty(),
        "{fixed}"
    );
    assert_eq!(env.json(&["verify", "--json"])["ok"], true);

    // 2. A pack cut short (its footer and trailer gone): found; repair
    // salvages every record by scanning, so nothing is lost.
    let packs = files_under(&repo.join("packs"), "pack");
    let largest = packs
        .iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap()
        .clone();
    let len = fs::metadata(&largest).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&largest)
        .unwrap()
        .set_len(len - 20)
        .unwrap();
    let out = env.run(&["verify", "--quick"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let fixed = env.json(&["repair", "--json"]);
    assert_eq!(
        fixed["damaged_packs"].as_array().unwrap().len(),
        1,
        "{fixed}"
    );
    assert_eq!(
        fixed["rewritten_packs"].as_array().unwrap().len(),
        1,
        "{fixed}"
    );
    assert_eq!(fixed["rewritten_packs"][0]["records_dropped"], 0, "{fixed}");
    assert!(
        fixed["damaged_versions"].as_array().unwrap().is_empty(),
        "{fixed}"
    );
    assert_eq!(
        env.json(&["verify", "--json"])["ok"],
        true,
        "the pack was rewritten whole"
    );
    let dest = env.tmp.path().join("after-cut");
    env.restore_to_ok(&env.root, &at, &dest);
    assert_eq!(fs::read(dest.join("big.bin")).unwrap(), big);
    assert_eq!(fs::read(dest.join("a.txt")).unwrap(), text);

    // 3. A flipped byte inside big.bin's stored bytes: that content is
    // lost. verify names the version, repair keeps the rest, and a restore
    // brings back every other file and reports the damaged one (exit 3).
    harness::flip_stored_byte(&repo, &big[100_000..100_064]);
    let quick = env.run(&["verify", "--quick"]);
    assert_eq!(
        quick.status.code(),
        Some(0),
        "quick checks structure only\n{}",
        show(&quick)
    );
    let out = env.run(&["verify", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let damaged = v["damaged_versions"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{v}");
    assert!(
        damaged[0]["path"].as_str().unwrap().ends_with("/big.bin"),
        "{v}"
    );
    assert_eq!(damaged[0]["reason"], "damaged");
    let out = env.run(&["repair"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot restore"),
        "{}",
        show(&out)
    );
    // After the repair only the loss itself remains: the damaged chunk
    // record is gone, every other record verifies.
    let after: serde_json::Value =
        serde_json::from_slice(&env.run(&["verify", "--json"]).stdout).unwrap();
    assert_eq!(
        after["damaged_versions"].as_array().unwrap().len(),
        1,
        "{after}"
    );
    assert_eq!(after["damaged_versions"][0]["reason"], "missing", "{after}");
    assert!(
        after["issues"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["problem"]
                .as_str()
                .unwrap()
                .contains("which no pack holds")),
        "{after}"
    );
    let dest = env.tmp.path().join("after-flip");
    let out = env.restore_to(&env.root, &at, &dest);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("big.bin"),
        "{}",
        show(&out)
    );
    assert_eq!(fs::read(dest.join("a.txt")).unwrap(), text);
    assert_eq!(fs::read(dest.join("d/c.txt")).unwrap(), b"another one\n");
    assert!(
        !dest.join("big.bin").exists() || fs::read(dest.join("big.bin")).unwrap() != big,
        "damaged content is never written as if it were good"
    );
    assert!(
        !dest.join("big.bin").exists(),
        "no half-written file is left"
    );
}

#[test]
fn repair_refuses_while_the_agent_writes() {
    let env = Env::new();
    fs::write(env.root.join("a.txt"), b"x").unwrap();
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    let out = env.run(&["repair"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stop it, then repair"),
        "{}",
        show(&out)
    );
    // verify reads alongside the running agent.
    assert_eq!(env.json(&["verify", "--json"])["ok"], true);
    agent.stop();
}

/// The agent is killed with SIGKILL at random moments (during its first
/// pass, mid-capture, mid-commit) while files keep changing. After every
/// restart, every version it had acknowledged before the kill reaches the
/// repository, no sequence number is used twice or skipped, verify stays
/// clean, and the final tree restores exactly.
/// `REWIND_CRASH_ITERATIONS` sets the number of kills (default 50).
#[test]
fn crash_loop_keeps_every_acknowledged_version() {
    let iterations: u64 = std::env::var("REWIND_CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let env = Env::new();
    let (acked, kills) = harness::crash_loop(&env, iterations);
    let repo = rewind_repo::LocalRepo::open(&repo_dir(&env)).unwrap();
    let stats = rewind_core::Repository::stats(&repo).unwrap();
    assert_eq!(stats.max_seq.len(), 1, "{stats:?}");
    let max = stats.max_seq[0].1;
    assert!(
        max >= acked,
        "acknowledged up to {acked}, the repository ends at {max}"
    );
    assert_eq!(
        stats.versions, max,
        "every sequence number from 1 to {max} once: none lost, none reused"
    );
    assert!(acked > 0 && kills == iterations);
    let v = env.json(&["verify", "--json"]);
    assert_eq!(v["ok"], true, "{v}");
    let dest = env.tmp.path().join("final");
    env.restore_to_ok(&env.root, &env.now(), &dest);
    assert_eq!(
        harness::describe_tree(&dest),
        harness::describe_tree(&env.root)
    );
    eprintln!(
        "crash loop: {kills} kills, {acked} versions acknowledged before them, {max} in the repository"
    );
}

/// A journal damaged beyond use is moved aside and rebuilt from the
/// repository plus a rescan: nothing in the repository is captured again,
/// what changed meanwhile is, and sequence numbers go on.
#[test]
fn damaged_journal_is_rebuilt_from_the_repository() {
    let env = Env::new();
    let root = env.root.to_str().unwrap().to_string();
    fs::write(env.root.join("kept.txt"), b"unchanged").unwrap();
    fs::write(env.root.join("edited.txt"), b"one").unwrap();
    env.ok(&["watch", &root, "--once"]);
    let before = env.versions_json(&env.root.join("edited.txt"));
    assert_eq!(before.len(), 1);

    let state = env
        .tmp
        .path()
        .canonicalize()
        .unwrap()
        .join("state/rewind/journals");
    let jdir = fs::read_dir(&state)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    fs::write(jdir.join("db/conf"), noise(100, 3)).unwrap();
    fs::write(jdir.join("db/db"), noise(100_000, 4)).unwrap();
    fs::write(env.root.join("edited.txt"), b"two").unwrap();
    fs::write(env.root.join("new.txt"), b"new").unwrap();

    let out = env.run(&["watch", &root, "--once"]);
    assert!(out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is damaged"), "{}", show(&out));
    assert!(
        err.contains("rebuilt from the repository"),
        "{}",
        show(&out)
    );
    assert_eq!(
        env.versions_json(&env.root.join("kept.txt")).len(),
        1,
        "not captured again"
    );
    let after = env.versions_json(&env.root.join("edited.txt"));
    assert_eq!(after.len(), 2);
    assert!(after[1]["seq"].as_u64() > before[0]["seq"].as_u64());
    assert_eq!(env.versions_json(&env.root.join("new.txt")).len(), 1);
    assert!(
        fs::read_dir(&jdir).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("damaged-")),
        "the damaged journal is kept aside for inspection"
    );
}

fn status_json(env: &Env) -> serde_json::Value {
    env.json(&["status", "--json"])
}

/// A backup run (`watch --once`) whose repository's disk is full exits 3:
/// what it captured waits in the journal, and the next run, with space
/// again, stores it and exits 0.
#[test]
fn a_backup_run_that_could_not_store_everything_exits_3_and_the_next_one_finishes() {
    if !harness::is_root() {
        eprintln!("skipped: mounting a small filesystem needs root (CI runs as root)");
        return;
    }
    let env = Env::new();
    let base = env.tmp.path().canonicalize().unwrap();
    let small = SmallFs::mount(&base.join("data"), "3m");
    let big = noise(8 << 20, 12);
    fs::write(env.root.join("big.bin"), &big).unwrap();
    let root = env.root.to_str().unwrap();
    let out = env.run(&["watch", root, "--once"]);
    assert_eq!(out.status.code(), Some(3), "{}", harness::show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wait in the journal"), "{err}");
    assert!(err.contains("the run is incomplete"), "{err}");
    assert!(
        status_json(&env)["journal"]["versions_waiting"]
            .as_u64()
            .unwrap_or(0)
            > 0
    );
    small.resize("64m");
    let out = env.run(&["watch", root, "--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", harness::show(&out));
    let dest = base.join("restored");
    env.restore_to_ok(&env.root, &env.now(), &dest);
    assert!(fs::read(dest.join("big.bin")).unwrap() == big);
}

/// The repository's disk fills up: capture goes on into the journal (the
/// agent says so once), nothing acknowledged is lost, and everything
/// reaches the repository by itself once there is space again.
#[test]
fn repository_disk_full_then_freed() {
    if !harness::is_root() {
        eprintln!("skipped: mounting a small filesystem needs root (CI runs as root)");
        return;
    }
    let env = Env::new();
    let base = env.tmp.path().canonicalize().unwrap();
    let small = SmallFs::mount(&base.join("data"), "3m");
    fs::write(env.root.join("a.txt"), b"before").unwrap();
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    let big = noise(8 << 20, 11);
    fs::write(env.root.join("big.bin"), &big).unwrap();
    // Acknowledged while the repository is full: the version waits in the
    // journal with the chunks the repository refused in its spool. (Under
    // load the first group commits of the file may still have fitted into
    // the repository, so not all 8 MiB need be in the spool.)
    harness::wait_until("the journal to acknowledge big.bin", || {
        let s = status_json(&env);
        s["journal"]["versions_waiting"].as_u64().unwrap_or(0) > 0
            && s["journal"]["spool_bytes"].as_u64().unwrap_or(0) >= 1 << 20
    });
    assert!(agent.log().contains("refused chunks"), "{}", agent.log());
    assert!(env.versions_json(&env.root.join("big.bin")).is_empty());
    // Capture goes on meanwhile.
    fs::write(env.root.join("b.txt"), b"during").unwrap();
    harness::wait_until("b.txt to be acknowledged too", || {
        status_json(&env)["journal"]["versions_waiting"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    });
    small.resize("64m");
    env.wait_versions(&env.root.join("big.bin"), 1);
    env.wait_versions(&env.root.join("b.txt"), 1);
    agent.stop();
    let dest = base.join("restored");
    env.restore_to_ok(&env.root, &env.now(), &dest);
    assert_eq!(fs::read(dest.join("big.bin")).unwrap(), big);
    assert_eq!(fs::read(dest.join("b.txt")).unwrap(), b"during");
    assert_eq!(env.json(&["verify", "--json"])["ok"], true);
    drop(small);
}

/// The journal's disk fills up: captures wait (nothing is acknowledged
/// that is not durable), the agent says why, and they go on by themselves
/// once space is freed.
#[test]
fn journal_disk_full_then_freed() {
    if !harness::is_root() {
        eprintln!("skipped: mounting a small filesystem needs root (CI runs as root)");
        return;
    }
    let env = Env::new();
    let base = env.tmp.path().canonicalize().unwrap();
    let small = SmallFs::mount(&base.join("state"), "8m");
    fs::write(env.root.join("a.txt"), b"before").unwrap();
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    harness::wait_until("the first pass to be acknowledged", || {
        status_json(&env)["journal"]["durable_seq"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    });
    let acked_before = status_json(&env)["journal"]["durable_seq"]
        .as_u64()
        .unwrap();
    // Fill the journal's filesystem to the last byte.
    let filler = base.join("state/filler");
    {
        use std::io::Write;
        let mut f = fs::File::create(&filler).unwrap();
        let block = vec![0x5au8; 64 << 10];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    for i in 0..50 {
        fs::write(
            env.root.join(format!("n{i}.txt")),
            format!("new file {i}\n").repeat(200),
        )
        .unwrap();
    }
    harness::wait_until("the agent to report the full journal", || {
        agent.log().contains("journal commit failed")
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    // Nothing is acknowledged while the journal cannot record it (the
    // repository may already hold some of those versions: it is written
    // first, and a commit sent again is ignored).
    assert_eq!(
        status_json(&env)["journal"]["durable_seq"]
            .as_u64()
            .unwrap(),
        acked_before
    );
    fs::remove_file(&filler).unwrap();
    for i in 0..50 {
        env.wait_versions(&env.root.join(format!("n{i}.txt")), 1);
    }
    assert!(
        agent.log().contains("journal writes succeed again"),
        "{}",
        agent.log()
    );
    agent.stop();
    assert_eq!(env.json(&["verify", "--json"])["ok"], true);
    drop(small);
}

/// A burst of changes overflows the kernel's event queue (lowered to 64
/// events for the agent's inotify instance): every change is still
/// captured, through the rescan the overflow triggers.
#[test]
fn overflow_burst_is_caught_by_a_rescan() {
    if !harness::is_root() {
        eprintln!("skipped: lowering fs.inotify.max_queued_events needs root (CI runs as root)");
        return;
    }
    struct Knob(String);
    impl Drop for Knob {
        fn drop(&mut self) {
            let _ = fs::write("/proc/sys/fs/inotify/max_queued_events", &self.0);
        }
    }
    let env = Env::new();
    let (dirs, files) = (20, 100);
    // Half the directories exist (and are watched) before the burst, so
    // the writes into them are events the queue must hold; the other half
    // are new, found through their creation.
    for d in 0..dirs / 2 {
        fs::create_dir(env.root.join(format!("d{d}"))).unwrap();
    }
    let knob = "/proc/sys/fs/inotify/max_queued_events";
    let saved = Knob(fs::read_to_string(knob).unwrap());
    fs::write(knob, "64").unwrap();
    // The limit is taken when the agent's inotify instance is created.
    let agent = env.watch(&["-v"]);
    agent.wait_first_pass();
    drop(saved);
    // The agent is stopped during the burst (as a busy or descheduled
    // agent would be), so its queue overflows for sure: a running agent
    // on a fast machine can read as fast as one writer writes.
    agent.signal("STOP");
    for d in 0..dirs {
        let dir = env.root.join(format!("d{d}"));
        if !dir.exists() {
            fs::create_dir(&dir).unwrap();
        }
        for f in 0..files {
            fs::write(dir.join(format!("f{f}.txt")), format!("{d}/{f}\n")).unwrap();
        }
    }
    agent.signal("CONT");
    harness::wait_until("every file of the burst to be captured", || {
        let out = env.run(&["ls", env.root.to_str().unwrap(), "--json"]);
        if !out.status.success() {
            return false;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let n = v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["path"].as_str().is_some_and(|p| p.ends_with(".txt")))
            .count();
        n == dirs * files
    });
    assert!(
        agent.log().contains("queue overflow"),
        "the burst did overflow the queue:\n{}",
        agent.log()
    );
    agent.stop();
}

/// The process dies at each named durability step in turn (as a power cut
/// there would stop it); the next run recovers: everything is captured,
/// verify is clean, the tree restores exactly.
#[test]
fn a_crash_at_each_durability_step_is_recovered() {
    let steps = [
        ("pack.write", 2),
        ("pack.fsync", 1),
        ("pack.rename", 1),
        ("pack.dir_fsync", 1),
        ("idx.write", 1),
        ("idx.fsync", 1),
        ("idx.rename", 1),
        ("idx.dir_fsync", 1),
        ("journal.flush", 1),
        ("journal.spool_sync", 1),
        ("pack.write", 30),
    ];
    for (step, nth) in steps {
        let env = Env::new();
        let root = env.root.to_str().unwrap().to_string();
        for i in 0..30 {
            let body = format!("file {i}\n").repeat(1 + i * 40);
            fs::write(env.root.join(format!("f{i}.txt")), body).unwrap();
        }
        fs::write(env.root.join("big.bin"), noise(3 << 20, 5)).unwrap();
        let spec = format!("{step}=crash@{nth}");
        let out = env.run_with_failpoint(&spec, &["watch", &root, "--once"]);
        assert!(
            !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("crashing"),
            "{spec} was not reached\n{}",
            show(&out)
        );
        let out = env.run(&["watch", &root, "--once"]);
        assert!(out.status.success(), "after {spec}\n{}", show(&out));
        let v = env.json(&["verify", "--json"]);
        assert_eq!(v["ok"], true, "after {spec}: {v}");
        let dest = env.tmp.path().join("restored");
        env.restore_to_ok(&env.root, &env.now(), &dest);
        assert_eq!(
            harness::describe_tree(&dest),
            harness::describe_tree(&env.root),
            "after {spec}"
        );
    }
}

/// An in-place restore that dies while writing or just before renaming
/// leaves the user's file as it was (never half-written), and the next
/// restore completes.
#[test]
fn a_crash_during_an_in_place_restore_leaves_the_file_whole() {
    for step in ["restore.write", "restore.rename"] {
        let env = Env::new();
        let root = env.root.to_str().unwrap().to_string();
        let f = env.root.join("doc.txt");
        let old = b"the version to bring back\n".repeat(5000);
        fs::write(&f, &old).unwrap();
        env.ok(&["watch", &root, "--once"]);
        let then = env.now();
        let current = b"what the file holds now\n".repeat(7000);
        fs::write(&f, &current).unwrap();
        env.ok(&["watch", &root, "--once"]);

        let path = f.to_str().unwrap();
        let out =
            env.run_with_failpoint(&format!("{step}=crash"), &["restore", path, "--at", &then]);
        assert!(!out.status.success(), "{step}\n{}", show(&out));
        assert_eq!(fs::read(&f).unwrap(), current, "after a crash at {step}");
        env.ok(&["restore", path, "--at", &then]);
        assert_eq!(fs::read(&f).unwrap(), old);
        let names: Vec<String> = fs::read_dir(&env.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec!["doc.txt".to_string()],
            "no temporary file is left"
        );
    }
}
