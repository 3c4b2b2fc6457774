//! rewind as a service (issue 14): the agent tells the person at the desk
//! when protection stops or degrades, and when it works again; `rewind
//! status` says the same.

mod harness;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use harness::*;

/// A config that protects `folder` and tells problems through a command
/// that appends `SUMMARY|BODY` lines to `told` (the fake notifier).
fn config_with_recorder(env: &Env, folder: &Path, told: &Path) -> PathBuf {
    let p = env
        .tmp
        .path()
        .canonicalize()
        .unwrap()
        .join("config/rewind/config.toml");
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    let text = format!(
        "[watch]\npaths = [{folder:?}]\nquiescence = \"100ms\"\n\n\
         [notify]\ncommand = [\"sh\", \"-c\", \"printf '%s|%s\\\\n' \\\"$0\\\" \\\"$1\\\" >> {told}\"]\n",
        folder = folder.display().to_string(),
        told = told.display(),
    );
    fs::write(&p, text).unwrap();
    p
}

fn told(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

#[test]
fn a_vanished_folder_is_told_once_shown_in_status_and_its_return_is_told() {
    let env = Env::new();
    let folder = env.root.join("documents");
    fs::create_dir(&folder).unwrap();
    fs::write(folder.join("a.txt"), b"a").unwrap();
    let log = env.tmp.path().join("told.log");
    let cfg = config_with_recorder(&env, &folder, &log);
    let agent_log = env.tmp.path().join("agent.log");
    let _agent = Daemon(
        env.command()
            .args(["agent", "--config", cfg.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(fs::File::create(&agent_log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_until("the first pass", || {
        fs::read_to_string(&agent_log)
            .unwrap_or_default()
            .contains("first pass complete")
    });
    let st = env.json(&["status", "--json"]);
    assert_eq!(st["agent"]["health"], serde_json::json!([]), "{st}");
    assert!(env.ok(&["status"]).contains("health       ok"));

    // The folder goes away (an unmounted disk, a deleted project).
    fs::rename(&folder, env.root.join("elsewhere")).unwrap();
    wait_until("the user is told", || !told(&log).is_empty());
    let lines = told(&log);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("needs attention") && lines[0].contains("has vanished"),
        "{lines:?}"
    );
    let st = env.json(&["status", "--json"]);
    let health = st["agent"]["health"].as_array().unwrap();
    assert_eq!(health.len(), 1, "{st}");
    assert!(health[0]["message"].as_str().unwrap().contains("documents"));
    assert!(env.ok(&["status"]).contains("ATTENTION"));

    // Still gone a while later: not told again (at most once an hour).
    std::thread::sleep(std::time::Duration::from_secs(7));
    assert_eq!(told(&log).len(), 1, "{:?}", told(&log));

    // Back: one message that it works again, and status is clear.
    fs::rename(env.root.join("elsewhere"), &folder).unwrap();
    wait_until("the recovery is told", || told(&log).len() == 2);
    assert!(told(&log)[1].contains("works again"), "{:?}", told(&log));
    wait_until("status clears", || {
        env.json(&["status", "--json"])["agent"]["health"] == serde_json::json!([])
    });
}

/// The nice value of each of `pid`'s threads, by thread name.
fn thread_nice(pid: u32) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for t in fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let (Ok(comm), Ok(stat)) = (
            fs::read_to_string(t.join("comm")),
            fs::read_to_string(t.join("stat")),
        ) else {
            continue;
        };
        // Fields after the command name (which may hold spaces): the 19th
        // field of the line is the nice value.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let nice: i64 = rest.split(' ').nth(16).unwrap().parse().unwrap();
        out.push((comm.trim().to_string(), nice));
    }
    out.sort();
    out
}

#[test]
fn the_first_pass_runs_at_low_priority_and_later_changes_at_normal() {
    let env = Env::new();
    for i in 0..200 {
        fs::write(env.root.join(format!("f{i}.txt")), format!("file {i}")).unwrap();
    }
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    let pid = agent.pid();
    wait_until("the first pass's workers end", || {
        !thread_nice(pid)
            .iter()
            .any(|(n, _)| n.starts_with("first-pass"))
    });
    let threads = thread_nice(pid);
    let capture: Vec<_> = threads
        .iter()
        .filter(|(n, _)| n.starts_with("capture-"))
        .collect();
    assert!(!capture.is_empty(), "{threads:?}");
    assert!(capture.iter().all(|(_, nice)| *nice == 0), "{threads:?}");
    let scanner: Vec<_> = threads.iter().filter(|(n, _)| n == "scanner").collect();
    assert_eq!(scanner.len(), 1, "{threads:?}");
    assert_eq!(
        scanner[0].1, 10,
        "rescans stay in the background: {threads:?}"
    );
    // A change after the first pass is captured by the normal workers.
    fs::write(env.root.join("f1.txt"), b"changed").unwrap();
    env.wait_versions(&env.root.join("f1.txt"), 2);
    agent.stop();
}
