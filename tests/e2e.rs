//! End-to-end tests: the real `rewind` binary on temporary directories.
//!
//! Every test gets its own HOME, XDG dirs, repository and protected folder,
//! and its own agent process. Waits poll with a generous deadline; nothing
//! asserts on timing. On failure the helpers print the command, its stdout
//! and stderr, and the agent's log.

mod harness;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use harness::{Env, wait_until};

fn write(p: &Path, data: &[u8]) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(p, data).unwrap();
}

#[test]
fn edits_restore_at_every_point_in_between() {
    let env = Env::new();
    let f = env.root.join("notes.txt");
    write(&f, b"first draft\n");
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    env.wait_versions(&f, 1);
    let mut points = vec![(env.now(), b"first draft\n".to_vec(), 0o644)];
    let edits: [(&[u8], u32); 4] = [
        (b"second draft, longer\n", 0o644),
        (b"third\n", 0o600),
        (b"", 0o600),
        (b"fourth draft after truncation\n", 0o755),
    ];
    for (i, (content, mode)) in edits.iter().enumerate() {
        std::thread::sleep(Duration::from_millis(20));
        fs::write(&f, content).unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(*mode)).unwrap();
        env.wait_versions_where(&f, |vs| {
            vs.last()
                .is_some_and(|v| v["mode"] == *mode && v["size"] == content.len())
                && vs.len() >= i + 2
        });
        points.push((env.now(), content.to_vec(), *mode));
    }
    for (i, (at, content, mode)) in points.iter().enumerate() {
        let dest = env.tmp.path().join(format!("restore-{i}"));
        env.ok(&[
            "restore",
            f.to_str().unwrap(),
            "--at",
            at,
            "--to",
            dest.to_str().unwrap(),
        ]);
        assert_eq!(&fs::read(&dest).unwrap(), content, "content at point {i}");
        let m = fs::metadata(&dest).unwrap().permissions().mode() & 0o7777;
        assert_eq!(m, *mode, "mode at point {i}");
    }
    // And in place: back to the second state.
    env.ok(&["restore", f.to_str().unwrap(), "--at", &points[1].0]);
    assert_eq!(fs::read(&f).unwrap(), points[1].1);
    drop(agent);
}

#[test]
fn atomic_save_keeps_the_file_not_the_temp() {
    let env = Env::new();
    let f = env.root.join("doc.md");
    write(&f, b"v1");
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    env.wait_versions(&f, 1);
    // The editor's way: write a temp file beside it, rename over it.
    let tmp = env.root.join(".doc.md.tmp-4711");
    write(&tmp, b"v2 saved atomically");
    fs::rename(&tmp, &f).unwrap();
    env.wait_versions_where(&f, |vs| vs.last().is_some_and(|v| v["size"] == 19));
    let dest = env.tmp.path().join("out");
    env.ok(&[
        "restore",
        f.to_str().unwrap(),
        "--at",
        "now",
        "--to",
        dest.to_str().unwrap(),
    ]);
    assert_eq!(fs::read(&dest).unwrap(), b"v2 saved atomically");
    let ls = env.json(&["ls", env.root.to_str().unwrap(), "--json"]);
    let names: Vec<String> = ls["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert!(!names.iter().any(|n| n.contains("tmp-4711")), "{names:?}");
    let vs = env.versions_json(&tmp);
    assert!(
        vs.iter().all(|v| v["deleted"] == true),
        "temp kept as a live version: {vs:?}"
    );
    drop(agent);
}

#[test]
fn directory_rename_moves_the_tree() {
    let env = Env::new();
    let d = env.root.join("project");
    write(&d.join("a.rs"), b"fn a() {}");
    write(&d.join("src/b.rs"), b"fn b() {}");
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    env.wait_versions(&d.join("src/b.rs"), 1);
    let before = env.now();
    let e = env.root.join("renamed");
    fs::rename(&d, &e).unwrap();
    env.wait_versions(&e.join("src/b.rs"), 1);
    // A write inside the renamed directory is seen under its new name.
    write(&e.join("src/c.rs"), b"fn c() {}");
    env.wait_versions(&e.join("src/c.rs"), 1);
    env.wait_versions_where(&d.join("src/b.rs"), |vs| {
        vs.last().is_some_and(|v| v["deleted"] == true)
    });
    let ls = env.json(&["ls", env.root.to_str().unwrap(), "--json"]);
    let paths: Vec<String> = ls["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert!(paths.iter().all(|p| !p.contains("/project")), "{paths:?}");
    assert!(
        paths.iter().any(|p| p.ends_with("renamed/src/c.rs")),
        "{paths:?}"
    );
    // The old name restores as it was before the rename.
    let dest = env.tmp.path().join("old");
    env.ok(&[
        "restore",
        d.to_str().unwrap(),
        "--at",
        &before,
        "--to",
        dest.to_str().unwrap(),
    ]);
    assert_eq!(fs::read(dest.join("src/b.rs")).unwrap(), b"fn b() {}");
    assert_eq!(fs::read(dest.join("a.rs")).unwrap(), b"fn a() {}");
    drop(agent);
}

#[test]
fn delete_then_restore_in_place() {
    let env = Env::new();
    let f = env.root.join("keep/precious.txt");
    write(&f, b"do not lose me");
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    env.wait_versions(&f, 1);
    let before = env.now();
    fs::remove_dir_all(env.root.join("keep")).unwrap();
    env.wait_versions_where(&f, |vs| vs.last().is_some_and(|v| v["deleted"] == true));
    assert!(!f.exists());
    env.ok(&[
        "restore",
        env.root.join("keep").to_str().unwrap(),
        "--at",
        &before,
    ]);
    assert_eq!(fs::read(&f).unwrap(), b"do not lose me");
    drop(agent);
}

#[test]
fn a_file_rewritten_while_read_never_mixes_states() {
    let env = Env::new();
    let f = env.root.join("busy.bin");
    let size = 8 << 20;
    write(&f, &vec![0u8; size]);
    let agent = env.watch_with(&["--busy-interval", "1s"]);
    agent.wait_first_pass();
    env.wait_versions(&f, 1);
    // Rewrite in place, without truncating, in eight pieces with a new
    // byte value each time: a version may hold a rewrite in progress, cut
    // between two pieces, never inside one.
    for k in 1..=12u8 {
        let mut file = fs::OpenOptions::new().write(true).open(&f).unwrap();
        for _ in 0..8 {
            std::io::Write::write_all(&mut file, &vec![k; size / 8]).unwrap();
            std::thread::sleep(Duration::from_millis(15));
        }
    }
    env.wait_versions_where(&f, |vs| vs.len() >= 2);
    let vs = env.versions_json(&f);
    wait_until("final state captured", || {
        let dest = env.tmp.path().join("final-check");
        let _ = fs::remove_file(&dest);
        env.run(&[
            "restore",
            f.to_str().unwrap(),
            "--at",
            "now",
            "--to",
            dest.to_str().unwrap(),
        ]);
        fs::read(&dest)
            .map(|d| d.iter().all(|&b| b == 12))
            .unwrap_or(false)
    });
    for (i, v) in vs.iter().enumerate() {
        let at = v["time"].as_str().unwrap();
        let dest = env.tmp.path().join(format!("v{i}"));
        env.ok(&[
            "restore",
            f.to_str().unwrap(),
            "--at",
            at,
            "--to",
            dest.to_str().unwrap(),
        ]);
        let data = fs::read(&dest).unwrap();
        assert_eq!(data.len(), size);
        // Between two write() calls the file really was "the first j
        // pieces of rewrite k, the rest of rewrite k - 1" (a busy file is
        // captured while it stays busy, issue 16); anything else, a piece
        // cut inside one write, is torn.
        let first = data[0];
        let j = data.iter().position(|&b| b != first).unwrap_or(size);
        assert!(
            j % (size / 8) == 0 && data[j..].iter().all(|&b| b.wrapping_add(1) == first),
            "version {i} mixes two states: {j} bytes of {first}, then {:?}",
            data.get(j)
        );
    }
    drop(agent);
}

#[test]
fn restart_captures_only_what_changed_while_stopped() {
    let env = Env::new();
    for i in 0..50 {
        write(
            &env.root.join(format!("f{i}.txt")),
            format!("file {i}").as_bytes(),
        );
    }
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    env.wait_versions(&env.root.join("f49.txt"), 1);
    agent.stop();
    let before = env.json(&["status", "--json"])["repository"]["versions"]
        .as_u64()
        .unwrap();
    write(&env.root.join("f1.txt"), b"changed while stopped");
    fs::remove_file(env.root.join("f2.txt")).unwrap();
    write(&env.root.join("new.txt"), b"new while stopped");
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    env.wait_versions(&env.root.join("new.txt"), 1);
    env.wait_versions(&env.root.join("f1.txt"), 2);
    env.wait_versions_where(&env.root.join("f2.txt"), |vs| {
        vs.last().is_some_and(|v| v["deleted"] == true)
    });
    let log = agent.log();
    agent.stop();
    let after = env.json(&["status", "--json"])["repository"]["versions"]
        .as_u64()
        .unwrap();
    // f1, f2 (tombstone), new.txt, and the root directory whose mtime changed.
    assert_eq!(
        after - before,
        4,
        "only the changed paths were captured again"
    );
    assert_eq!(env.versions_json(&env.root.join("f3.txt")).len(), 1);
    assert!(log.contains("first pass complete"));
}

#[test]
fn ignore_rules_keep_things_out() {
    let env = Env::new();
    write(
        &env.root.join(".rewindignore"),
        b"*.log\nbuild/\n!important.log\n",
    );
    write(&env.root.join("app.log"), b"noise");
    write(&env.root.join("important.log"), b"keep");
    write(&env.root.join("build/out.o"), b"obj");
    write(&env.root.join("notes.bak"), b"excluded by flag");
    write(
        &env.root.join("cache/CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55\n",
    );
    write(&env.root.join("cache/blob"), b"cached");
    write(&env.root.join(".notes.txt.swp"), b"vim swap");
    write(&env.root.join("notes.txt"), b"real");
    let agent = env.watch(&["--exclude", "*.bak"]);
    agent.wait_first_pass();
    env.wait_versions(&env.root.join("notes.txt"), 1);
    write(&env.root.join("later.log"), b"ignored later too");
    write(&env.root.join("later.txt"), b"kept");
    env.wait_versions(&env.root.join("later.txt"), 1);
    for ignored in [
        "app.log",
        "build/out.o",
        "notes.bak",
        "cache/blob",
        ".notes.txt.swp",
        "later.log",
    ] {
        let vs = env.versions_json(&env.root.join(ignored));
        assert!(vs.is_empty(), "{ignored} was captured: {vs:?}");
    }
    env.wait_versions(&env.root.join("important.log"), 1);
    env.wait_versions(&env.root.join(".rewindignore"), 1);
    drop(agent);
}

#[test]
fn first_pass_of_ten_thousand_files() {
    let env = Env::new();
    for d in 0..100 {
        for f in 0..100 {
            write(
                &env.root.join(format!("d{d:03}/f{f:03}.txt")),
                format!("dir {d} file {f}\n").as_bytes(),
            );
        }
    }
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    wait_until("all 10,000 files in the repository", || {
        env.json(&["ls", env.root.to_str().unwrap(), "--json"])["entries"]
            .as_array()
            .unwrap()
            .len()
            == 10_000 + 100 + 1
    });
    let dest = env.tmp.path().join("all");
    env.ok(&[
        "restore",
        env.root.to_str().unwrap(),
        "--at",
        "now",
        "--to",
        dest.to_str().unwrap(),
    ]);
    assert_eq!(
        fs::read(dest.join("d042/f017.txt")).unwrap(),
        b"dir 42 file 17\n"
    );
    drop(agent);
}

#[test]
fn two_restores_of_one_time_are_identical() {
    let env = Env::new();
    write(&env.root.join("a/b/c.txt"), b"deep");
    write(&env.root.join("top.txt"), b"top");
    std::os::unix::fs::symlink("a/b/c.txt", env.root.join("link")).unwrap();
    fs::create_dir_all(env.root.join("empty")).unwrap();
    fs::set_permissions(env.root.join("top.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    env.wait_versions(&env.root.join("link"), 1);
    env.wait_versions(&env.root.join("empty"), 1);
    let at = env.now();
    let d1 = env.tmp.path().join("r1");
    let d2 = env.tmp.path().join("r2");
    env.ok(&[
        "restore",
        env.root.to_str().unwrap(),
        "--at",
        &at,
        "--to",
        d1.to_str().unwrap(),
    ]);
    env.ok(&[
        "restore",
        env.root.to_str().unwrap(),
        "--at",
        &at,
        "--to",
        d2.to_str().unwrap(),
    ]);
    let t1 = harness::describe_tree(&d1);
    let t2 = harness::describe_tree(&d2);
    assert_eq!(t1, t2);
    assert!(
        t1.iter().any(|l| l.starts_with("link symlink a/b/c.txt")),
        "{t1:#?}"
    );
    assert!(t1.iter().any(|l| l.starts_with("empty dir")), "{t1:#?}");
    // And identical to the original, modes and mtimes included.
    let orig = harness::describe_tree(&env.root);
    assert_eq!(t1, orig);
    drop(agent);
}

#[test]
fn restore_refuses_to_escape_the_destination() {
    let env = Env::new();
    write(&env.root.join("ok.txt"), b"fine");
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    env.wait_versions(&env.root.join("ok.txt"), 1);
    agent.stop();
    // A damaged or hostile repository holds paths that climb out.
    env.inject_versions(&[
        (env.root.join("../escaped.txt"), b"evil".as_slice()),
        (env.root.join("sub/../../escaped2.txt"), b"evil".as_slice()),
    ]);
    let dest = env.tmp.path().join("dest");
    let out = env.run(&[
        "restore",
        env.root.to_str().unwrap(),
        "--at",
        "now",
        "--to",
        dest.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", harness::show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("'..'"),
        "{}",
        harness::show(&out)
    );
    assert_eq!(fs::read(dest.join("ok.txt")).unwrap(), b"fine");
    assert!(!env.tmp.path().join("escaped.txt").exists());
    assert!(!env.tmp.path().join("escaped2.txt").exists());
    assert!(!env.root.parent().unwrap().join("escaped.txt").exists());
}

#[test]
fn restore_does_not_follow_a_symlink_planted_in_place() {
    let env = Env::new();
    write(&env.root.join("dir/file.txt"), b"mine");
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    env.wait_versions(&env.root.join("dir/file.txt"), 1);
    let at = env.now();
    agent.stop();
    // Someone replaces the directory with a symlink to a place outside.
    let outside = env.tmp.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::remove_dir_all(env.root.join("dir")).unwrap();
    std::os::unix::fs::symlink(&outside, env.root.join("dir")).unwrap();
    let out = env.run(&["restore", env.root.to_str().unwrap(), "--at", &at]);
    assert_eq!(out.status.code(), Some(3), "{}", harness::show(&out));
    assert!(
        !outside.join("file.txt").exists(),
        "restore wrote through a symlink"
    );
}

#[test]
fn clear_errors_for_bad_input() {
    let env = Env::new();
    let missing = env.tmp.path().join("no-repo");
    let out = env.run(&["--repo", missing.to_str().unwrap(), "versions", "/x"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no repository at"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    write(&env.root.join("a.txt"), b"a");
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    env.wait_versions(&env.root.join("a.txt"), 1);
    let out = env.run(&[
        "ls",
        env.root.to_str().unwrap(),
        "--at",
        "the day after tomorrow-ish",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read time"));
    let out = env.run(&["versions", "/etc/hostname"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not inside any protected folder"));
    let out = env.run(&[
        "restore",
        env.root.join("a.txt").to_str().unwrap(),
        "--at",
        "2001-01-01 00:00",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did not exist"));
    let dest = env.tmp.path().join("occupied");
    write(&dest.join("x"), b"x");
    let out = env.run(&[
        "restore",
        env.root.to_str().unwrap(),
        "--at",
        "now",
        "--to",
        dest.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an empty directory"));
    drop(agent);
}

#[test]
fn status_works_while_the_agent_runs() {
    let env = Env::new();
    write(&env.root.join("a.txt"), b"a");
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    env.wait_versions(&env.root.join("a.txt"), 1);
    let st = env.json(&["status", "--json"]);
    assert_eq!(st["agent"]["running"], true, "{st}");
    assert_eq!(st["agent"]["first_pass_done"], true, "{st}");
    assert!(st["journal"]["last_capture"].is_i64(), "{st}");
    let text = env.ok(&["status"]);
    assert!(text.contains("running"), "{text}");
    agent.stop();
    let st = env.json(&["status", "--json"]);
    assert_eq!(st["agent"]["running"], false, "{st}");
    assert_eq!(st["journal"]["versions_waiting"], 0, "{st}");
}

#[test]
fn new_directory_with_files_written_at_once_is_complete() {
    let env = Env::new();
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    // Files land in the new directory before any watch on it can exist.
    let d = env.root.join("fresh/deeper");
    fs::create_dir_all(&d).unwrap();
    for i in 0..30 {
        fs::write(d.join(format!("{i}.txt")), format!("{i}")).unwrap();
    }
    for i in 0..30 {
        env.wait_versions(&d.join(format!("{i}.txt")), 1);
    }
    drop(agent);
}

#[test]
fn kill_9_loses_nothing_that_was_acknowledged() {
    let env = Env::new();
    for i in 0..2000 {
        write(
            &env.root.join(format!("d{}/f{i}.txt", i % 20)),
            format!("file {i}\n").repeat(i % 50 + 1).as_bytes(),
        );
    }
    // Killed in the middle of its first pass.
    let agent = env.watch(&[]);
    std::thread::sleep(Duration::from_millis(300));
    agent.kill();
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    env.wait_versions(&env.root.join("d19/f1999.txt"), 1);
    write(&env.root.join("acked.txt"), b"acknowledged");
    env.wait_versions(&env.root.join("acked.txt"), 1);
    let acked_at = env.now();
    agent.kill();
    // Changed while the agent was dead.
    write(&env.root.join("while-dead.txt"), b"written while dead");
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    env.wait_versions(&env.root.join("while-dead.txt"), 1);
    assert_eq!(
        env.versions_json(&env.root.join("acked.txt")).len(),
        1,
        "no duplicates"
    );
    let dest = env.tmp.path().join("after-kill");
    env.ok(&[
        "restore",
        env.root.to_str().unwrap(),
        "--at",
        "now",
        "--to",
        dest.to_str().unwrap(),
    ]);
    agent.stop();
    assert_eq!(
        harness::describe_tree(&dest),
        harness::describe_tree(&env.root)
    );
    let before = env.tmp.path().join("at-ack");
    env.ok(&[
        "restore",
        env.root.to_str().unwrap(),
        "--at",
        &acked_at,
        "--to",
        before.to_str().unwrap(),
    ]);
    assert_eq!(fs::read(before.join("acked.txt")).unwrap(), b"acknowledged");
    assert!(!before.join("while-dead.txt").exists());
}

#[test]
fn unreadable_file_is_reported_and_the_rest_goes_on() {
    let env = Env::new();
    write(&env.root.join("fine.txt"), b"readable");
    let secret = env.root.join("secret.txt");
    write(&secret, b"no access");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads anything: run the agent as an unprivileged user then.
    let out = env.run_unprivileged(&["watch", "--once", env.root.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", harness::show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("secret.txt") && err.contains("ermission denied"),
        "{err}"
    );
    assert_eq!(env.versions_json(&env.root.join("fine.txt")).len(), 1);
}

#[test]
fn a_lost_journal_does_not_make_the_repository_drop_new_versions() {
    let env = Env::new();
    write(&env.root.join("a.txt"), b"one");
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    env.wait_versions(&env.root.join("a.txt"), 1);
    agent.stop();
    // The state directory is wiped (new machine, cleaned home, …).
    let state = env.tmp.path().canonicalize().unwrap().join("state");
    fs::remove_dir_all(&state).unwrap();
    fs::create_dir_all(&state).unwrap();
    write(&env.root.join("a.txt"), b"two, after the journal was lost");
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    env.wait_versions_where(&env.root.join("a.txt"), |vs| {
        vs.last().is_some_and(|v| v["size"] == 31)
    });
    drop(agent);
}

#[test]
fn a_file_that_never_goes_quiet_is_still_captured() {
    let env = Env::new();
    let f = env.root.join("mailbox");
    write(&f, b"");
    let agent = env.watch_with(&["--max-interval", "1s"]);
    agent.wait_first_pass();
    env.wait_versions(&f, 1);
    // A line every 30 ms: never quiet for the 100 ms quiescence delay.
    let mut file = fs::OpenOptions::new().append(true).open(&f).unwrap();
    let start = std::time::Instant::now();
    let mut captured_while_busy = 0;
    while start.elapsed() < Duration::from_secs(20) {
        std::io::Write::write_all(&mut file, b"another line\n").unwrap();
        std::thread::sleep(Duration::from_millis(30));
        if start.elapsed().as_millis() % 500 < 30 {
            captured_while_busy = env.versions_json(&f).len() - 1;
            if captured_while_busy >= 2 {
                break;
            }
        }
    }
    assert!(
        captured_while_busy >= 2,
        "only {captured_while_busy} versions while the file stayed busy"
    );
    drop(agent);
}

#[test]
fn a_directory_swapped_for_a_symlink_mid_restore_writes_nothing_outside() {
    let env = Env::new();
    for d in 0..4 {
        for i in 0..400 {
            write(
                &env.root.join(format!("d{d}/sub/f{i}")),
                format!("file {d}/{i}").as_bytes(),
            );
        }
    }
    let out = env.run(&["watch", env.root.to_str().unwrap(), "--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", harness::show(&out));
    let base = env.tmp.path().canonicalize().unwrap();
    let dest = base.join("dest");
    let outside = base.join("outside");
    fs::create_dir_all(&outside).unwrap();
    // stderr goes to a file: every refused write is a line, and a pipe
    // nobody reads until the end would fill and stall the restore.
    let err_path = base.join("restore.err");
    let mut child = env
        .command()
        .args(["restore", env.root.to_str().unwrap(), "--at", "now", "--to"])
        .arg(&dest)
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    // While it runs: every directory restore has made is moved aside
    // (inside the destination) and replaced by a symlink to `outside`.
    let mut swaps = 0;
    let status = loop {
        for d in 0..4 {
            for rel in [format!("d{d}"), format!("d{d}/sub")] {
                let p = dest.join(&rel);
                if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir())
                    && fs::rename(&p, dest.join(format!("moved-{swaps}"))).is_ok()
                {
                    std::os::unix::fs::symlink(&outside, &p).unwrap();
                    swaps += 1;
                }
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > harness::DEADLINE {
            let _ = child.kill();
            panic!(
                "restore did not finish; stderr:\n{}",
                fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
    };
    let err = fs::read_to_string(&err_path).unwrap();
    let escaped: Vec<_> = fs::read_dir(&outside).unwrap().collect();
    assert!(
        escaped.is_empty(),
        "restore wrote outside the destination: {escaped:?}\n{err}"
    );
    eprintln!(
        "{swaps} directories swapped; restore: {status}\n{}",
        err.lines().take(5).collect::<Vec<_>>().join("\n")
    );
    assert!(swaps > 0, "the restore finished before any swap");
    // What could not be written is reported.
    assert!(
        status.code() == Some(0) || status.code() == Some(3),
        "{status}\n{err}"
    );
}

/// Small documents drawn from one vocabulary, as a folder of notes or
/// source files is.
fn note(i: usize) -> Vec<u8> {
    const WORDS: [&str; 24] = [
        "meeting", "budget", "quarter", "customer", "review", "draft", "schedule", "project",
        "invoice", "summary", "follow", "update", "deadline", "report", "team", "plan", "design",
        "release", "notes", "agenda", "action", "owner", "status", "risk",
    ];
    let mut s = format!("# note {i}\n");
    let mut x = i as u64 * 2_654_435_761 + 1;
    for w in 0..900 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
        s.push(if w % 11 == 10 { '\n' } else { ' ' });
    }
    s.into_bytes()
}

/// The small files of a first pass are compressed with a dictionary made
/// from the first of them, stored as deltas against it: they restore
/// exactly, verify reads each with the dictionary, and later edits of a
/// file are stored the same way.
#[test]
fn small_files_share_a_dictionary_and_restore_exactly() {
    let env = Env::new();
    for i in 0..400 {
        write(&env.root.join(format!("notes/{}/n{i}.md", i % 7)), &note(i));
    }
    env.ok(&["watch", env.root.to_str().unwrap(), "--once"]);
    let v = env.json(&["verify", "--json"]);
    assert_eq!(v["ok"], true, "{v}");
    let deltas = v["delta_chunks"].as_u64().unwrap();
    assert!(
        deltas > 300,
        "most notes are deltas against the dictionary: {v}"
    );
    assert_eq!(v["chunks_read"], v["chunks"], "{v}");

    write(&env.root.join("notes/3/n3.md"), &note(10_000));
    env.ok(&["watch", env.root.to_str().unwrap(), "--once"]);
    let v = env.json(&["verify", "--json"]);
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["delta_chunks"].as_u64().unwrap() > deltas, "{v}");

    let dest = env.tmp.path().join("back");
    env.restore_to_ok(&env.root, "now", &dest);
    assert_eq!(
        harness::describe_tree(&dest),
        harness::describe_tree(&env.root)
    );
}

/// A large file with a few small edits: each edited chunk is stored as a
/// delta against the chunk it replaces, so the new version costs about the
/// edits, not the chunks around them; both versions restore exactly.
#[test]
fn small_edits_of_a_large_file_are_stored_as_deltas() {
    let env = Env::new();
    let big = env.root.join("disk.img");
    let mut data = vec![0u8; 6 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    write(&big, &data);
    env.ok(&["watch", env.root.to_str().unwrap(), "--once"]);
    let t1 = env.now();
    let packs = |env: &Env| -> u64 {
        harness::files_under(&env.tmp.path().join("data"), "pack")
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum()
    };
    let before = packs(&env);
    let mut edited = data.clone();
    for k in 1..6 {
        let at = k * (1 << 20) + 12_345;
        edited[at..at + 16].copy_from_slice(b"sixteen new byte");
    }
    write(&big, &edited);
    env.ok(&["watch", env.root.to_str().unwrap(), "--once"]);
    let added = packs(&env) - before;
    // Without deltas each edit stores a whole chunk of random bytes
    // (about 300 KiB on average).
    assert!(added < 64 << 10, "the edits added {added} bytes");
    let v = env.json(&["verify", "--json"]);
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["delta_chunks"].as_u64().unwrap() >= 5, "{v}");

    let back = env.tmp.path().join("then");
    env.restore_to_ok(&big, &t1, &back);
    assert!(
        fs::read(&back).unwrap() == data,
        "the first version differs"
    );
    let now = env.tmp.path().join("now");
    env.restore_to_ok(&big, "now", &now);
    assert!(
        fs::read(&now).unwrap() == edited,
        "the edited version differs"
    );
}

/// Issue 19: past the kernel's inotify limit the agent says so once and
/// protects the folders it could not watch by rescans. The limit is the
/// kernel's own, lowered for the agent alone in a user namespace of its own
/// (skipped where user namespaces are not allowed).
#[cfg(target_os = "linux")]
#[test]
fn past_the_inotify_limit_the_agent_warns_once_and_rescans() {
    let env = Env::new();
    let leaves = ["a/a1", "b/b1", "c/c1", "d/d1"];
    for l in leaves {
        write(&env.root.join(l).join("old.txt"), b"old\n");
    }
    // 9 directories, 3 watches: the rest are protected by rescans.
    let set_limit = "echo 3 > /proc/sys/user/max_inotify_watches && exec \"$@\"";
    let usable = std::process::Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "sh",
            "-c",
            set_limit,
            "sh",
            "true",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !usable {
        eprintln!("skipped: no user namespace with its own inotify limit here");
        return;
    }
    let inner = env.command();
    let mut c = std::process::Command::new("unshare");
    c.env_clear();
    for (k, v) in inner.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c.args(["--user", "--map-root-user", "sh", "-c", set_limit, "sh"])
        .arg(harness::bin())
        .arg("watch")
        .arg(&env.root)
        .args([
            "--quiescence",
            "100ms",
            "--unwatched-rescan",
            "1s",
            "--no-ui",
        ])
        .stdin(std::process::Stdio::null());
    let log = env.tmp.path().join("agent.log");
    let agent = harness::Agent::spawn(&mut c, log);
    agent.wait_first_pass();
    for l in leaves {
        let p = env.root.join(l).join("new.txt");
        write(&p, l.as_bytes());
        env.wait_versions(&p, 1);
    }
    let told = || agent.log().matches("inotify watch limit reached").count();
    wait_until("the limit told", || told() > 0);
    // The health check runs every 5 s: long enough for a second telling.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(told(), 1, "log:\n{}", agent.log());
    agent.stop();
}
