//! rewind as a service (issue 14): the agent tells the person at the desk
//! when protection stops or degrades, and when it works again; `rewind
//! status` says the same.

mod harness;

use std::fs;
use std::path::{Path, PathBuf};

use harness::*;

/// A config that protects `folder` and tells problems through a command
/// that appends `SUMMARY|BODY` lines to `told` (the fake notifier).
fn config_with_recorder(env: &Env, folder: &Path, told: &Path) -> PathBuf {
    let text = format!(
        "[watch]\npaths = [{folder:?}]\nquiescence = \"100ms\"\n\n\
         [notify]\ncommand = [\"sh\", \"-c\", \"printf '%s|%s\\\\n' \\\"$0\\\" \\\"$1\\\" >> {told}\"]\n",
        folder = folder.display().to_string(),
        told = told.display(),
    );
    env.write_config(&text)
}

fn told(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
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
    let _agent = agent_after_first_pass(&env, &cfg, &[], &agent_log);
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

// ---- rewind service install|status|uninstall, completions, man pages ----
//
// PID 1 is not systemd on the machines these tests run on, so no user
// manager can be started: a fake `systemctl` and `loginctl` first on PATH
// record what rewind asks of them (docs/platforms.md).

/// Fake `systemctl` and `loginctl` that append their name and arguments to
/// a file, one call a line, and exit 0 (or as `fail` says).
struct FakeManager {
    bin: PathBuf,
    calls: PathBuf,
}

impl FakeManager {
    fn new(env: &Env) -> FakeManager {
        FakeManager::with_systemctl(env, "exit 0")
    }

    /// `systemctl` ends with `tail` (shell) after recording its call.
    fn with_systemctl(env: &Env, tail: &str) -> FakeManager {
        use std::os::unix::fs::PermissionsExt;
        let bin = env.tmp.path().join("fake-bin");
        fs::create_dir_all(&bin).unwrap();
        let calls = env.tmp.path().join("calls.log");
        for (name, end) in [("systemctl", tail), ("loginctl", "exit 0")] {
            let p = bin.join(name);
            fs::write(
                &p,
                format!(
                    "#!/bin/sh\necho \"{name} $*\" >> '{}'\n{end}\n",
                    calls.display()
                ),
            )
            .unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        FakeManager { bin, calls }
    }

    /// The calls recorded since the last `take`.
    fn take(&self) -> Vec<String> {
        let calls = told(&self.calls);
        let _ = fs::remove_file(&self.calls);
        calls
    }

    fn service(&self, env: &Env, args: &[&str]) -> std::process::Output {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        env.command()
            .env("PATH", path)
            .arg("service")
            .args(args)
            .output()
            .unwrap()
    }

    /// `rewind service ARGS`, which must succeed; its stdout.
    fn ok(&self, env: &Env, args: &[&str]) -> String {
        let out = self.service(env, args);
        assert!(
            out.status.success(),
            "rewind service {args:?} failed\n{}",
            show(&out)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// Where the packaged unit lies when the Debian package is installed; with
/// it, `install` without `--config` uses it instead of writing one.
const PACKAGED_UNIT: &str = "/usr/lib/systemd/user/rewind.service";

/// What `install` asks of systemd, exactly.
const ENABLE: [&str; 2] = [
    "systemctl --user daemon-reload",
    "systemctl --user enable --now rewind.service",
];

fn base(env: &Env) -> PathBuf {
    env.tmp.path().canonicalize().unwrap()
}

fn user_unit(env: &Env) -> PathBuf {
    base(env).join("config/systemd/user/rewind.service")
}

/// A config that protects the environment's root folder.
fn plain_config(env: &Env) -> PathBuf {
    let p = base(env).join("config/rewind/config.toml");
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(
        &p,
        format!(
            "[watch]\npaths = [{:?}]\nquiescence = \"100ms\"\n",
            env.root.display().to_string()
        ),
    )
    .unwrap();
    p
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(p).unwrap().mode() & 0o7777
}

/// `systemd-analyze verify` accepts `unit` in system and in user mode and
/// says nothing about it (an unknown key is only a warning, so silence is
/// checked too).
fn assert_systemd_accepts(unit: &Path) {
    let runtime = tempfile::tempdir().unwrap();
    for user in [false, true] {
        let mut c = std::process::Command::new("systemd-analyze");
        if user {
            // The user manager's runtime directory, which no session made.
            c.arg("--user").env("XDG_RUNTIME_DIR", runtime.path());
        }
        let out = c
            .args(["verify", "--man=no"])
            .arg(unit)
            .output()
            .expect("systemd-analyze (Debian package systemd; scripts/test installs it)");
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "systemd-analyze{} verify {}\n{}",
            if user { " --user" } else { "" },
            unit.display(),
            show(&out)
        );
    }
}

/// `rewind agent --config CFG ARGS…` with its stderr in `stderr`, once
/// its first pass is done; stopped (SIGINT) when dropped.
fn agent_after_first_pass(env: &Env, cfg: &Path, args: &[&str], stderr: &Path) -> Daemon {
    let mut all = vec!["agent", "--config", cfg.to_str().unwrap()];
    all.extend_from_slice(args);
    env.spawn_agent(&all, stderr)
}

#[test]
fn service_install_writes_the_unit_and_enables_it_and_twice_is_harmless() {
    let env = Env::new();
    let fake = FakeManager::new(&env);
    let cfg = plain_config(&env);
    let out = fake.ok(&env, &["install", "--config", cfg.to_str().unwrap()]);
    let unit = user_unit(&env);
    assert!(out.contains(&format!("wrote {}", unit.display())), "{out}");
    let text = fs::read_to_string(&unit).unwrap();
    let exe = fs::canonicalize(bin()).unwrap();
    let exec: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("ExecStart="))
        .collect();
    assert_eq!(
        exec,
        [format!(
            "ExecStart={} agent --config {}",
            exe.display(),
            cfg.display()
        )]
    );
    assert_eq!(mode(&unit), 0o644, "readable by the user manager");
    assert_eq!(fake.take(), ENABLE);
    assert_systemd_accepts(&unit);

    // Again: the unit is left as it is, and enabling again is harmless.
    let again = fake.ok(&env, &["install", "--config", cfg.to_str().unwrap()]);
    assert!(again.contains("already installed"), "{again}");
    assert_eq!(fs::read_to_string(&unit).unwrap(), text);
    assert_eq!(fake.take(), ENABLE);
    // Every action said what it did: one line each.
    assert_eq!(again.lines().count(), 3, "{again}");
}

#[test]
fn service_install_without_a_config_needs_the_default_one_and_uses_the_packaged_unit_or_its_own() {
    let env = Env::new();
    let fake = FakeManager::new(&env);
    let out = fake.service(&env, &["install"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing for the agent to protect"), "{err}");
    assert!(fake.take().is_empty());
    plain_config(&env); // the default config file
    let out = fake.ok(&env, &["install"]);
    if Path::new(PACKAGED_UNIT).exists() {
        assert!(out.contains(PACKAGED_UNIT), "{out}");
        assert!(!user_unit(&env).exists());
    } else {
        let text = fs::read_to_string(user_unit(&env)).unwrap();
        let exe = fs::canonicalize(bin()).unwrap();
        assert!(
            text.contains(&format!("\nExecStart={} agent\n", exe.display())),
            "{text}"
        );
    }
    assert_eq!(fake.take(), ENABLE);
}

/// An agent started by a service has no terminal and no `REWIND_PASSWORD`:
/// `install` refuses an encrypted repository whose config names no
/// secret, and with `password_file` in the config the agent, started with
/// no password in its environment, opens the repository and captures.
#[test]
fn service_install_needs_a_password_file_for_an_encrypted_repository_and_the_agent_uses_it() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let fake = FakeManager::new(&env);
    let repo = base(&env).join("repo");
    let r = repo.to_str().unwrap();
    let init = env
        .command()
        .env("REWIND_PASSWORD", "service secret")
        .args(["--repo", r, "init", "--encrypt"])
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", show(&init));
    let cfg = plain_config(&env);
    let watch = fs::read_to_string(&cfg).unwrap();
    fs::write(&cfg, format!("repo = {r:?}\n{watch}")).unwrap();

    let out = fake.service(&env, &["install", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("the repository {r} is encrypted")),
        "{err}"
    );
    assert!(err.contains("password_file"), "{err}");
    assert!(fake.take().is_empty(), "nothing enabled");

    // The password beside the config, named relative to it.
    let pw = cfg.with_file_name("repo-password");
    fs::write(&pw, "service secret\n").unwrap();
    fs::set_permissions(&pw, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(
        &cfg,
        format!("repo = {r:?}\npassword_file = \"repo-password\"\n{watch}"),
    )
    .unwrap();
    fake.ok(&env, &["install", "--config", cfg.to_str().unwrap()]);
    assert_eq!(fake.take(), ENABLE);

    // The agent as the unit starts it: no password in its environment.
    let stderr = env.tmp.path().join("agent.log");
    let agent = agent_after_first_pass(&env, &cfg, &[], &stderr);
    fs::write(env.root.join("sealed.txt"), "captured by the service\n").unwrap();
    wait_until("sealed.txt captured", || {
        let out = env
            .command()
            .env("REWIND_PASSWORD", "service secret")
            .args(["--repo", r, "ls", env.root.to_str().unwrap()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("sealed.txt")
    });
    drop(agent);
}

#[test]
fn service_install_with_linger_asks_loginctl_to_keep_the_user_manager() {
    let env = Env::new();
    let fake = FakeManager::new(&env);
    let cfg = plain_config(&env);
    fake.ok(
        &env,
        &["install", "--config", cfg.to_str().unwrap(), "--linger"],
    );
    let me = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    let me = String::from_utf8(me.stdout).unwrap().trim().to_string();
    assert_eq!(
        fake.take(),
        [
            ENABLE[0].to_string(),
            ENABLE[1].to_string(),
            format!("loginctl enable-linger {me}"),
        ]
    );
}

#[test]
fn service_uninstall_disables_the_service_and_removes_the_unit() {
    let env = Env::new();
    let fake = FakeManager::new(&env);
    let cfg = plain_config(&env);
    fake.ok(&env, &["install", "--config", cfg.to_str().unwrap()]);
    fake.take();
    let out = fake.ok(&env, &["uninstall"]);
    assert!(!user_unit(&env).exists());
    assert!(
        out.contains(&format!("removed {}", user_unit(&env).display())),
        "{out}"
    );
    assert_eq!(
        fake.take(),
        [
            "systemctl --user disable --now rewind.service",
            "systemctl --user daemon-reload"
        ]
    );
    if !Path::new(PACKAGED_UNIT).exists() {
        let out = fake.ok(&env, &["uninstall"]);
        assert!(out.contains("nothing to do"), "{out}");
        assert!(fake.take().is_empty());
    }
}

#[test]
fn service_dry_run_shows_what_it_would_do_and_changes_nothing() {
    let env = Env::new();
    let fake = FakeManager::new(&env);
    let cfg = plain_config(&env);
    let out = fake.ok(
        &env,
        &[
            "install",
            "--config",
            cfg.to_str().unwrap(),
            "--linger",
            "--dry-run",
        ],
    );
    for said in [
        format!("would write {}:", user_unit(&env).display()),
        "    ExecStart=".to_string(),
        "would run: systemctl --user daemon-reload".to_string(),
        "would run: systemctl --user enable --now rewind.service".to_string(),
        "would run: loginctl enable-linger".to_string(),
    ] {
        assert!(out.contains(&said), "{said:?} missing:\n{out}");
    }
    assert!(!user_unit(&env).exists());
    assert!(!base(&env).join("config/systemd").exists());
    assert!(fake.take().is_empty());

    fake.ok(&env, &["install", "--config", cfg.to_str().unwrap()]);
    fake.take();
    let out = fake.ok(&env, &["uninstall", "--dry-run"]);
    assert!(
        out.contains("would run: systemctl --user disable --now rewind.service"),
        "{out}"
    );
    assert!(user_unit(&env).exists());
    assert!(fake.take().is_empty());
}

#[test]
fn a_failing_systemctl_fails_the_install_with_one_line_saying_what_and_where() {
    let env = Env::new();
    let fake = FakeManager::with_systemctl(
        &env,
        "echo 'Failed to connect to bus: No medium found' >&2; exit 1",
    );
    let cfg = plain_config(&env);
    let out = fake.service(&env, &["install", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("systemctl --user daemon-reload") && err.contains("Failed to connect to bus"),
        "{err}"
    );
}

#[test]
fn service_status_shows_the_unit_and_the_agent_that_answers() {
    let env = Env::new();
    let fake = FakeManager::new(&env);
    let cfg = plain_config(&env);
    let st: serde_json::Value =
        serde_json::from_str(&fake.ok(&env, &["status", "--json"])).unwrap();
    assert_eq!(st["agents"], serde_json::json!([]), "{st}");
    fake.ok(&env, &["install", "--config", cfg.to_str().unwrap()]);

    let agent = agent_after_first_pass(&env, &cfg, &[], &env.tmp.path().join("agent.log"));
    let st: serde_json::Value =
        serde_json::from_str(&fake.ok(&env, &["status", "--json"])).unwrap();
    assert_eq!(st["manager"], "systemd");
    assert_eq!(st["installed"], true);
    assert_eq!(st["file"], user_unit(&env).to_str().unwrap());
    let agents = st["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 1, "{st}");
    assert_eq!(agents[0]["answers"], true);
    assert_eq!(agents[0]["pid"], agent.0.id());
    let text = fake.ok(&env, &["status"]);
    assert!(text.contains("agent        answers (pid"), "{text}");
}

#[test]
fn the_agent_logs_to_a_daily_file_at_info_and_never_one_line_per_captured_file() {
    let env = Env::new();
    let cfg = plain_config(&env);
    let logs = base(&env).join("logs");
    let run_agent = |extra: &[&str], files: &[&str]| -> String {
        let log = logs.join("agent.log");
        let stderr = env.tmp.path().join("stderr.log");
        let mut args = vec!["--log-file", log.to_str().unwrap()];
        args.extend_from_slice(extra);
        let agent = agent_after_first_pass(&env, &cfg, &args, &stderr);
        for f in files {
            fs::write(env.root.join(f), f.as_bytes()).unwrap();
        }
        for f in files {
            env.wait_versions(&env.root.join(f), 1);
        }
        drop(agent);
        // The file is a link to the day's file, private like all logs.
        let day = fs::read_link(&log).unwrap();
        let name = day.file_name().unwrap().to_str().unwrap().to_string();
        assert!(
            name.starts_with("agent.20") && name.ends_with(".log"),
            "{name}"
        );
        assert_eq!(mode(&logs.join(&name)), 0o600);
        let stderr = fs::read_to_string(&stderr).unwrap();
        assert!(!stderr.contains("capturing"), "{stderr}");
        fs::read_to_string(&log).unwrap()
    };
    let info = run_agent(&[], &["quiet-one.txt", "quiet-two.txt"]);
    assert!(
        !info.contains("quiet-"),
        "a line per captured file at info:\n{info}"
    );
    let debug = run_agent(&["-v"], &["loud.txt"]);
    assert!(
        debug.contains("capturing") && debug.contains("loud.txt"),
        "{debug}"
    );
}

#[test]
fn completions_and_man_pages_come_from_both_binaries_readable_by_everyone() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let script = env.ok(&["completions", shell]);
        assert!(
            script.contains("service") && script.contains("restore"),
            "{shell}"
        );
    }
    let man = base(&env).join("share/man/man1");
    let out = env.ok(&["man", man.to_str().unwrap()]);
    assert!(out.starts_with("wrote "), "{out}");
    for page in [
        "rewind.1",
        "rewind-watch.1",
        "rewind-dump-run.1",
        "rewind-service-install.1",
        "rewind-completions.1",
    ] {
        let p = man.join(page);
        let text = fs::read_to_string(&p).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH "), "{page}");
        assert_eq!(mode(&p), 0o644, "{page}");
    }
    assert!(!man.join("rewind-help.1").exists());
    for d in [
        base(&env).join("share"),
        base(&env).join("share/man"),
        man.clone(),
    ] {
        assert_eq!(mode(&d), 0o755, "{}", d.display());
    }
    let out = std::process::Command::new(server_bin())
        .args(["man", man.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    for page in [
        "rewind-server.1",
        "rewind-server-serve.1",
        "rewind-server-client-add.1",
    ] {
        assert_eq!(mode(&man.join(page)), 0o644, "{page}");
    }
    let out = std::process::Command::new(server_bin())
        .args(["completions", "zsh"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("#compdef rewind-server"));
}
