//! Private by default (issue 21): nothing rewind or rewind-server writes
//! lets another local account in, whatever the umask; the agent's control
//! socket answers only its own user and runs nothing it is sent.

mod harness;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use harness::*;

/// Debian's default umask, the loose one: what rewind writes must not
/// depend on it being stricter.
fn loose_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
}

/// Paths under `dirs` that the `nobody` account can read or list (root
/// only; empty otherwise).
fn readable_by_nobody(dirs: &[PathBuf]) -> String {
    if !is_root() {
        return String::new();
    }
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg("find")
        .args(dirs)
        .args(["-readable", "-print"])
        .output()
        .unwrap();
    // find exits 1 on the directories it may not enter: those are the point.
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Open the way down to the environment for other accounts, as a home
/// folder under Debian's defaults (0755) would be.
fn open_the_way(env: &Env) -> PathBuf {
    let base = env.tmp.path().canonicalize().unwrap();
    for d in [
        base.clone(),
        base.join("data"),
        base.join("state"),
        base.join("config"),
    ] {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    base
}

#[test]
fn a_protected_private_file_leaves_nothing_other_accounts_can_read() {
    loose_umask();
    let env = Env::new();
    let base = open_the_way(&env);
    let secret = env.root.join("secret.txt");
    fs::write(&secret, b"the neighbour must not read this").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    env.ok(&["watch", "--once", env.root.to_str().unwrap()]);
    let ours = [base.join("data/rewind"), base.join("state/rewind")];
    for d in &ours {
        assert!(d.exists(), "{} was not created", d.display());
        let loose = loose_paths(d);
        assert!(
            loose.is_empty(),
            "readable by others:\n{}",
            loose.join("\n")
        );
    }
    let seen = readable_by_nobody(&ours);
    assert!(seen.is_empty(), "nobody can read:\n{seen}");
    if is_root() {
        let out = Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(bin())
            .env("HOME", base.join("home"))
            .env("XDG_DATA_HOME", base.join("data"))
            .env("XDG_STATE_HOME", base.join("state"))
            .args(["ls", env.root.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "nobody listed the repository\n{}",
            show(&out)
        );
    }
}

#[test]
fn a_repository_written_readable_by_others_is_made_private_once() {
    loose_umask();
    let env = Env::new();
    let base = open_the_way(&env);
    fs::write(env.root.join("a.txt"), b"a").unwrap();
    env.ok(&["watch", "--once", env.root.to_str().unwrap()]);
    // As a release before this rule left it.
    let repo = base.join("data/rewind/repo");
    let st = Command::new("chmod")
        .args(["-R", "go+rX"])
        .arg(&repo)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(!loose_paths(&repo).is_empty());
    let out = env.run(&["watch", "--once", env.root.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("made") && said.contains("private"),
        "{}",
        show(&out)
    );
    assert!(loose_paths(&repo).is_empty(), "{:?}", loose_paths(&repo));
    let again = env.run(&["watch", "--once", env.root.to_str().unwrap()]);
    assert!(
        !String::from_utf8_lossy(&again.stderr).contains("private"),
        "said twice\n{}",
        show(&again)
    );
}

#[test]
fn the_server_writes_nothing_others_can_read_and_refuses_a_writable_data_dir() {
    loose_umask();
    let env = Env::new();
    let base = open_the_way(&env);
    let data = base.join("server");
    let mut server = Server::start_new(&data);
    env.enroll(&server, "laptop");
    fs::write(env.root.join("s.txt"), b"server side secret").unwrap();
    env.ok(&["watch", "--once", env.root.to_str().unwrap()]);
    server.stop();
    let loose: Vec<String> = [
        data.clone(),
        base.join("state/rewind"),
        base.join("config/rewind"),
    ]
    .iter()
    .flat_map(|d| loose_paths(d))
    .collect();
    assert!(
        loose.is_empty(),
        "readable by others:\n{}",
        loose.join("\n")
    );
    let seen = readable_by_nobody(std::slice::from_ref(&data));
    assert!(seen.is_empty(), "nobody can read:\n{seen}");
    fs::set_permissions(&data, fs::Permissions::from_mode(0o770)).unwrap();
    let out = Command::new(server_bin())
        .arg("--data")
        .arg(&data)
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("other accounts can write"),
        "{}",
        show(&out)
    );
}

/// One request line to the agent's socket, as `uid` when root (through
/// setpriv and Python's socket module), the reply line.
fn ask_socket(sock: &Path, request: &str, as_nobody: bool) -> String {
    let script = "import socket,sys\n\
                  s=socket.socket(socket.AF_UNIX)\n\
                  s.connect(sys.argv[1])\n\
                  try: s.sendall(sys.argv[2].encode()+b'\\n')\n\
                  except BrokenPipeError: pass\n\
                  print(s.makefile().readline().strip())\n";
    // The system's Python: one under root's home is closed to nobody.
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let mut c = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--",
            python,
        ]);
        c
    } else {
        Command::new(python)
    };
    let out = c
        .args(["-c", script])
        .arg(sock)
        .arg(request)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_control_socket_runs_no_command_line_and_answers_only_its_user() {
    loose_umask();
    let env = Env::new();
    let base = open_the_way(&env);
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    let journals = base.join("state/rewind/journals");
    let jdir = fs::read_dir(&journals)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let sock = jdir.join("agent.sock");
    assert_eq!(fs::metadata(&jdir).unwrap().mode() & 0o777, 0o700);
    assert_eq!(fs::metadata(&sock).unwrap().mode() & 0o777, 0o600);

    // A job smuggled in as a command line is not run.
    let marker = base.join("pwned");
    let job = serde_json::json!({
        "name": "x", "kind": "command",
        "command": ["sh", "-c", format!("touch {}", marker.display())],
    });
    let reply = ask_socket(&sock, &format!("dump {job}"), false);
    assert!(reply.contains("error"), "{reply}");
    let reply = ask_socket(&sock, "dump \"x\"", false);
    assert!(reply.contains("no dump job"), "{reply}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!marker.exists(), "the socket ran a command it was sent");
    assert!(ask_socket(&sock, "status", false).contains("\"running\":true"));

    // Another account is refused even when it can reach the socket.
    if is_root() {
        for d in [base.join("state/rewind"), journals.clone(), jdir.clone()] {
            fs::set_permissions(&d, fs::Permissions::from_mode(0o711)).unwrap();
        }
        fs::set_permissions(&sock, fs::Permissions::from_mode(0o666)).unwrap();
        let reply = ask_socket(&sock, "status", true);
        assert!(reply.contains("refused"), "{reply}");
        assert!(!reply.contains("running"), "{reply}");
    }
    agent.stop();
}
