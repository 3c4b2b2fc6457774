//! Test harness: temporary environments, the agent as a child process,
//! polling helpers and tree descriptions for comparisons.

#![allow(dead_code)]

pub mod fault_proxy;
pub mod s3;

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rewind_core::{ChunkRef, EncodedChunk, Entry, Repository, Timestamp, Version};

/// How long a wait may take before the test fails: long enough for a
/// loaded 2-core CI machine, never part of an assertion about speed.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rewind")
}

/// Poll `f` until it is true or the deadline passes.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for: {what}");
}

pub fn show(out: &Output) -> String {
    format!(
        "exit: {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Files under `dir` (recursively) whose extension is `ext`, sorted.
pub fn files_under(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p, ext));
        } else if p.extension().is_some_and(|x| x == ext) {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Damage a repository: flip one bit inside the stored copy of `needle`
/// (content stored raw, so it appears verbatim in some pack under
/// `repo/packs`). The pack is rewritten in place (same inode), as a disk
/// error would leave it.
pub fn flip_stored_byte(repo: &Path, needle: &[u8]) {
    let (pack, at) = files_under(&repo.join("packs"), "pack")
        .iter()
        .find_map(|p| {
            let b = fs::read(p).unwrap();
            b.windows(needle.len())
                .position(|w| w == needle)
                .map(|i| (p.clone(), i))
        })
        .expect("the bytes are stored raw in some pack");
    let mut bytes = fs::read(&pack).unwrap();
    bytes[at + needle.len() / 2] ^= 0x40;
    fs::write(&pack, &bytes).unwrap();
}

/// Bytes that do not compress, so they are stored as they are.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut next = xorshift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (0..n).map(|_| next() as u8).collect()
}

/// A xorshift64 generator from `seed` (0 is taken as 1): the tests' random
/// moments and bytes, repeatable from a seed they print.
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// One isolated user: HOME, XDG dirs, a protected folder `root`.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    _watchdog: Watchdog,
}

/// How long one test may run before the whole test binary is aborted with
/// the test's name: a hang fails the suite instead of stalling CI.
pub const TEST_LIMIT: Duration = Duration::from_secs(15 * 60);

/// Aborts the process if the test owning it is still running after
/// [`TEST_LIMIT`]; dropping it (the test ended) disarms it.
struct Watchdog(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Watchdog {
    fn arm() -> Watchdog {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        let test = std::thread::current()
            .name()
            .unwrap_or("unnamed test")
            .to_string();
        std::thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < TEST_LIMIT {
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            eprintln!("test `{test}` still running after {TEST_LIMIT:?}: aborting (a hang)");
            std::process::abort();
        });
        Watchdog(done)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        // Canonical, as the agent stores it (on macOS /tmp is a symlink).
        let base = tmp.path().canonicalize().unwrap();
        let root = base.join("root");
        fs::create_dir_all(&root).unwrap();
        for d in ["home", "data", "state", "config"] {
            fs::create_dir_all(base.join(d)).unwrap();
        }
        Env {
            tmp,
            root,
            _watchdog: Watchdog::arm(),
        }
    }

    pub fn command(&self) -> Command {
        let base = self.tmp.path().canonicalize().unwrap();
        let mut c = Command::new(bin());
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", base.join("home"))
            .env("XDG_DATA_HOME", base.join("data"))
            .env("XDG_STATE_HOME", base.join("state"))
            .env("XDG_CONFIG_HOME", base.join("config"))
            .env("TZ", "UTC")
            .stdin(Stdio::null());
        c
    }

    /// Run as `nobody` when the tests run as root (root reads any file);
    /// as the current user otherwise. The environment's files are handed
    /// to that user first.
    pub fn run_unprivileged(&self, args: &[&str]) -> Output {
        if !is_root() {
            return self.run(args);
        }
        let base = self.tmp.path().canonicalize().unwrap();
        // The way down to the temp dir must be passable for nobody.
        let mut p = base.clone();
        while let Some(parent) = p.parent() {
            let m = fs::metadata(parent).unwrap().mode();
            if m & 0o001 == 0 {
                panic!("{} is not traversable by other users", parent.display());
            }
            p = parent.to_path_buf();
        }
        Command::new("chmod")
            .arg("755")
            .arg(&base)
            .status()
            .unwrap();
        for d in ["home", "data", "state", "config", "root"] {
            let st = Command::new("chown")
                .args(["-R", "nobody"])
                .arg(base.join(d))
                .status()
                .unwrap();
            assert!(st.success());
        }
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(bin());
        let envs: Vec<(std::ffi::OsString, std::ffi::OsString)> = self
            .command()
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_os_string(), v?.to_os_string())))
            .collect();
        c.env_clear().envs(envs).args(args).stdin(Stdio::null());
        c.output().unwrap()
    }

    /// The config file under this environment's `XDG_CONFIG_HOME`.
    pub fn config_file(&self) -> PathBuf {
        self.tmp
            .path()
            .canonicalize()
            .unwrap()
            .join("config/rewind/config.toml")
    }

    /// Write the config file; its path.
    pub fn write_config(&self, text: &str) -> PathBuf {
        let p = self.config_file();
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p
    }

    /// `rewind ARGS` in the background, stderr to `log`, once its first
    /// pass is complete; SIGINT and wait when the value is dropped.
    pub fn spawn_agent(&self, args: &[&str], log: &Path) -> Daemon {
        let child = self
            .command()
            .args(args)
            .stdout(Stdio::null())
            .stderr(fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let d = Daemon(child);
        wait_until("the first pass", || {
            fs::read_to_string(log)
                .unwrap_or_default()
                .contains("first pass complete")
        });
        d
    }

    /// `rewind ARGS` with `REWIND_FAILPOINTS` set to `spec` (crash
    /// tests: the process dies at the named step).
    pub fn run_with_failpoint(&self, spec: &str, args: &[&str]) -> Output {
        self.command()
            .env("REWIND_FAILPOINTS", spec)
            .args(args)
            .output()
            .unwrap()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// Run and require exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "rewind {args:?} failed\n{}",
            show(&out)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `rewind restore PATH --at AT --to DEST`.
    pub fn restore_to(&self, path: &Path, at: &str, dest: &Path) -> Output {
        self.run(&[
            "restore",
            path.to_str().unwrap(),
            "--at",
            at,
            "--to",
            dest.to_str().unwrap(),
        ])
    }

    /// The same, which must succeed.
    pub fn restore_to_ok(&self, path: &Path, at: &str, dest: &Path) {
        let out = self.restore_to(path, at, dest);
        assert!(
            out.status.success(),
            "restore to {} failed\n{}",
            dest.display(),
            show(&out)
        );
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let s = self.ok(args);
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("bad JSON from {args:?}: {e}\n{s}"))
    }

    /// RFC 3339 now, a little after everything done so far.
    pub fn now(&self) -> String {
        std::thread::sleep(Duration::from_millis(5));
        let t = jiff::Timestamp::now().to_string();
        std::thread::sleep(Duration::from_millis(5));
        t
    }

    /// Versions of `p`; empty when there are none.
    pub fn versions_json(&self, p: &Path) -> Vec<serde_json::Value> {
        let out = self.run(&["versions", p.to_str().unwrap(), "--json"]);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            // Before the first upload the repository does not know the
            // protected folder yet.
            assert!(
                err.contains("no versions") || err.contains("not inside any protected folder"),
                "{}",
                show(&out)
            );
            return Vec::new();
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["versions"].as_array().unwrap().clone()
    }

    pub fn wait_versions(&self, p: &Path, n: usize) {
        self.wait_versions_where(p, |vs| vs.len() >= n)
    }

    pub fn wait_versions_where(&self, p: &Path, mut f: impl FnMut(&[serde_json::Value]) -> bool) {
        let start = Instant::now();
        loop {
            let vs = self.versions_json(p);
            if f(&vs) {
                return;
            }
            if start.elapsed() > DEADLINE {
                panic!("timed out waiting on versions of {}: {vs:#?}", p.display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Start `rewind watch root` with a short quiescence.
    pub fn watch(&self, extra: &[&str]) -> Agent {
        self.watch_with(extra)
    }

    pub fn watch_with(&self, extra: &[&str]) -> Agent {
        let log = self.tmp.path().join(format!("agent-{}.log", rand_suffix()));
        let mut c = self.command();
        c.arg("watch")
            .arg(&self.root)
            .args(["--quiescence", "100ms"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap());
        let child = c.spawn().unwrap();
        Agent {
            child: Some(child),
            log,
        }
    }

    /// Write versions straight into the repository (as a damaged or
    /// hostile repository would hold them), with a directory version for
    /// every path between the root and each file.
    pub fn inject_versions(&self, files: &[(PathBuf, &[u8])]) {
        let base = self.tmp.path().canonicalize().unwrap();
        let repo_dir = base.join("data/rewind/repo");
        let repo = rewind_repo::LocalRepo::open_writer(&repo_dir).unwrap();
        let client = fs::read_to_string(
            base.join("state/rewind/journals")
                .join(repo.id())
                .join("client"),
        )
        .unwrap();
        let root_meta = rewind_fsmeta::read_meta(&self.root).unwrap();
        let file_meta = {
            let p = self.root.join(".meta-template");
            fs::write(&p, b"").unwrap();
            let m = rewind_fsmeta::read_meta(&p).unwrap();
            fs::remove_file(&p).unwrap();
            m
        };
        let mut seq = 1_000_000;
        let mut versions = Vec::new();
        let mut chunks = Vec::new();
        let root_b = rewind_core::path::to_bytes(&self.root).to_vec();
        for (path, data) in files {
            let b = rewind_core::path::to_bytes(path).to_vec();
            let rest = &b[root_b.len() + 1..];
            let parts: Vec<&[u8]> = rest.split(|&c| c == b'/').collect();
            let mut cur = root_b.clone();
            for part in &parts[..parts.len() - 1] {
                cur.push(b'/');
                cur.extend_from_slice(part);
                seq += 1;
                versions.push(Version {
                    client: client.clone(),
                    seq,
                    observed_at: Timestamp::now(),
                    path: cur.clone(),
                    entry: Entry::Present {
                        meta: root_meta.clone(),
                        chunks: vec![],
                        xattrs: vec![],
                    },
                });
            }
            let c = EncodedChunk::encode(data);
            seq += 1;
            versions.push(Version {
                client: client.clone(),
                seq,
                observed_at: Timestamp::now(),
                path: b,
                entry: Entry::Present {
                    meta: rewind_core::FileMeta {
                        size: data.len() as u64,
                        ..file_meta.clone()
                    },
                    chunks: vec![ChunkRef {
                        id: c.id,
                        len: c.raw_len,
                    }],
                    xattrs: vec![],
                },
            });
            chunks.push(c);
        }
        repo.put_chunks(chunks).unwrap();
        repo.commit_versions(versions).unwrap();
    }
}

pub fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn rand_suffix() -> u64 {
    use std::time::SystemTime;
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A background `rewind` process (see [`Env::spawn_agent`]): SIGINT and
/// wait on drop.
pub struct Daemon(pub Child);

impl Daemon {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// A running `rewind watch`; stopped with SIGINT on drop.
pub struct Agent {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Agent {
    /// Start `c` (a `rewind watch` or `agent` command made by the caller),
    /// its stderr to `log`.
    pub fn spawn(c: &mut Command, log: PathBuf) -> Agent {
        let child = c
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent {
            child: Some(child),
            log,
        }
    }

    /// Its exit status, once it has exited by itself (it is then
    /// forgotten: nothing is left to stop).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let st = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(st)
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent is running").id()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_first_pass(&self) {
        let start = Instant::now();
        while !self.log().contains("first pass complete") {
            if start.elapsed() > DEADLINE {
                panic!("agent never finished its first pass; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGINT and wait: the agent finishes captures and uploads first.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            // A stopped agent (see `signal`) must run to see the SIGINT.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let start = Instant::now();
            loop {
                if let Ok(Some(st)) = c.try_wait() {
                    assert!(
                        st.success() || std::thread::panicking(),
                        "agent exited with {st}; log:\n{}",
                        self.log()
                    );
                    return;
                }
                if start.elapsed() > DEADLINE {
                    let _ = c.kill();
                    panic!("agent did not stop; log:\n{}", self.log());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Sends `sig` (a name such as `STOP` or `CONT`) to the agent.
    pub fn signal(&self, sig: &str) {
        let c = self.child.as_ref().expect("agent is running");
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &c.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill -{sig} failed");
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent log {}\n{}", self.log.display(), self.log());
        }
        self.stop_inner();
    }
}

/// One line per entry below `root` (sorted): name, kind, mode, size, mtime
/// in ns, content hash or link target. The root's own line uses ".".
pub fn describe_tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    describe(root, root, &mut out);
    out.sort();
    out
}

fn describe(root: &Path, p: &Path, out: &mut Vec<String>) {
    let md = fs::symlink_metadata(p).unwrap();
    let rel = p.strip_prefix(root).unwrap();
    let name = if rel.as_os_str().is_empty() {
        ".".into()
    } else {
        rel.display().to_string()
    };
    let mtime = format!("{}.{:09}", md.mtime(), md.mtime_nsec());
    if md.file_type().is_symlink() {
        out.push(format!(
            "{name} symlink {} {mtime}",
            fs::read_link(p).unwrap().display()
        ));
    } else if md.is_dir() {
        out.push(format!("{name} dir {:o} {mtime}", md.mode() & 0o7777));
        for e in fs::read_dir(p).unwrap() {
            describe(root, &e.unwrap().path(), out);
        }
    } else {
        let mut data = Vec::new();
        fs::File::open(p).unwrap().read_to_end(&mut data).unwrap();
        out.push(format!(
            "{name} file {:o} {} {mtime} {}",
            md.mode() & 0o7777,
            md.size(),
            blake3::hash(&data).to_hex()
        ));
    }
}

/// Every path under `root` (itself included) with a group or other bit.
pub fn loose_paths(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).unwrap();
        if md.file_type().is_symlink() {
            continue;
        }
        if md.mode() & 0o077 != 0 {
            out.push(format!("{:o} {}", md.mode() & 0o7777, p.display()));
        }
        if md.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

pub fn server_bin() -> &'static str {
    env!("CARGO_BIN_EXE_rewind-server")
}

/// A free TCP port on loopback (bound, then released for the caller).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real `rewind-server` process on 127.0.0.1 and a port of its own,
/// which keeps its port across restarts.
pub struct Server {
    pub data: PathBuf,
    pub port: u16,
    pub url: String,
    pub admin: String,
    /// The address it listens on.
    pub host: String,
    /// A command the server runs under (e.g. `ip netns exec NS`).
    pub prefix: Vec<String>,
    /// Options given to `serve` besides `--listen`.
    pub serve_args: Vec<String>,
    /// Environment variables every `rewind-server` command of it gets
    /// (an object store's endpoint and credentials).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
}

impl Server {
    /// `rewind-server init` in `data`, then serve on loopback.
    pub fn start_new(data: &Path) -> Server {
        Server::start_new_with(data, "127.0.0.1", &[])
    }

    /// `rewind-server init` in `data`, then `serve` on loopback with
    /// `serve_args` besides `--listen`.
    pub fn start_new_serving(data: &Path, serve_args: &[&str]) -> Server {
        let mut s = Server::init(data, "127.0.0.1", &[]);
        s.serve_args = serve_args.iter().map(|a| a.to_string()).collect();
        s.start();
        s
    }

    /// `rewind-server init` in `data`, then serve on `host` under `prefix`.
    pub fn start_new_with(data: &Path, host: &str, prefix: &[&str]) -> Server {
        let mut s = Server::init(data, host, prefix);
        s.start();
        s
    }

    /// `rewind-server init INIT_ARGS` in `data` with `env`, then serve on
    /// loopback; every later command of it gets `env` too.
    pub fn start_new_in_env(data: &Path, init_args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut s = Server::init_in_env(data, "127.0.0.1", &[], init_args, env);
        s.start();
        s
    }

    /// `rewind-server init` in `data`; not serving yet.
    fn init(data: &Path, host: &str, prefix: &[&str]) -> Server {
        Server::init_in_env(data, host, prefix, &[], &[])
    }

    fn init_in_env(
        data: &Path,
        host: &str,
        prefix: &[&str],
        init_args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let out = Command::new(server_bin())
            .args(["--data", data.to_str().unwrap(), "init"])
            .args(init_args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success(), "init failed\n{}", show(&out));
        let text = String::from_utf8(out.stdout).unwrap();
        let admin = text
            .lines()
            .find_map(|l| {
                l.split_once("shown once, stored hashed): ")
                    .map(|(_, s)| s.trim())
            })
            .expect("init prints the admin secret")
            .to_string();
        let mut s = Server::serve(data, host, prefix, admin);
        s.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        s
    }

    /// Serve a data directory made earlier (by an older release, say) on
    /// loopback and a port of its own; its admin secret is not known.
    pub fn start_existing(data: &Path) -> Server {
        let mut s = Server::serve(data, "127.0.0.1", &[], String::new());
        s.start();
        s
    }

    /// A server for `data` on `host` under `prefix`; not serving yet.
    fn serve(data: &Path, host: &str, prefix: &[&str], admin: String) -> Server {
        let port = free_port();
        Server {
            data: data.to_path_buf(),
            port,
            url: format!("https://{host}:{port}"),
            admin,
            host: host.to_string(),
            prefix: prefix.iter().map(|s| s.to_string()).collect(),
            serve_args: Vec::new(),
            env: Vec::new(),
            child: None,
            log: data.with_extension(format!("log-{}", rand_suffix())),
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Output {
        Command::new(server_bin())
            .arg("--data")
            .arg(&self.data)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap()
    }

    /// `client add NAME`: its enrollment token.
    pub fn add_client(&self, name: &str) -> String {
        let out = self.cmd(&["client", "add", name]);
        assert!(out.status.success(), "{}", show(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub fn fingerprint(&self) -> String {
        let out = self.cmd(&["fingerprint"]);
        assert!(out.status.success(), "{}", show(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Serve (again) on the same port; returns once it listens.
    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// [`Server::start`] with extra environment variables (failpoints).
    pub fn start_with_env(&mut self, vars: &[(&str, &str)]) {
        assert!(self.child.is_none(), "already running");
        // Counted before the spawn: a quick server may print its line
        // before this function looks again.
        let before = self.log().matches("listening on").count();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(server_bin());
                c
            }
            None => Command::new(server_bin()),
        };
        let child = cmd
            .arg("--data")
            .arg(&self.data)
            .args(["serve", "--listen", &format!("{}:{}", self.host, self.port)])
            .args(&self.serve_args)
            .env("REWIND_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let start = Instant::now();
        while self.log().matches("listening on").count() == before {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!("server exited with {st}; log:\n{}", self.log());
            }
            assert!(
                start.elapsed() < DEADLINE,
                "server never listened; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM; the server must exit 0 after finishing what is in flight.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let start = Instant::now();
            let st = loop {
                if let Some(st) = c.try_wait().unwrap() {
                    break st;
                }
                if start.elapsed() > DEADLINE {
                    let _ = c.kill();
                    panic!("server did not stop on SIGTERM; log:\n{}", self.log());
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            assert!(
                st.success() || std::thread::panicking(),
                "server exited with {st}; log:\n{}",
                self.log()
            );
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- server log\n{}", self.log());
        }
        self.kill();
    }
}

impl Env {
    /// `rewind enroll` with `server` as `name`.
    pub fn enroll(&self, server: &Server, name: &str) {
        self.enroll_at(server, &server.url, name)
    }

    /// The same, reaching the server at `url` (through a proxy, say).
    pub fn enroll_at(&self, server: &Server, url: &str, name: &str) {
        let token = server.add_client(name);
        self.ok(&[
            "enroll",
            url,
            "--name",
            name,
            "--token",
            &token,
            "--fingerprint",
            &server.fingerprint(),
        ]);
    }
}

/// A raw HTTPS client pinned to the server, for requests `rewind` never
/// sends.
pub fn raw_client(srv: &Server) -> reqwest::blocking::Client {
    raw_client_from(srv, None)
}

/// [`raw_client`] connecting from the local address `from` (any of
/// 127.0.0.0/8 on Linux: another machine, as far as the server can tell).
pub fn raw_client_from(srv: &Server, from: Option<std::net::IpAddr>) -> reqwest::blocking::Client {
    let (cfg, _) = rewind_remote::tls::client_config(Some(&srv.fingerprint()));
    reqwest::blocking::Client::builder()
        .use_preconfigured_tls(cfg)
        .local_address(from)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// One counter of the server's /metrics.
pub fn metric(srv: &Server, name: &str) -> u64 {
    let text = raw_client(srv)
        .get(format!("{}/metrics", srv.url))
        .header("Authorization", format!("Bearer {}", srv.admin))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .unwrap()
}

/// The remote repository as `env`'s enrollment sees it.
pub fn remote_of(env: &Env) -> rewind_remote::RemoteRepo {
    let cfg = fs::read_to_string(env.tmp.path().join("config/rewind/config.toml")).unwrap();
    let t: toml::Table = toml::from_str(&cfg).unwrap();
    let s = &t["server"];
    let key = fs::read_to_string(env.tmp.path().join("config/rewind/client.key")).unwrap();
    rewind_remote::RemoteRepo::new(&rewind_remote::RemoteConfig {
        url: s["url"].as_str().unwrap().into(),
        client: s["client"].as_str().unwrap().into(),
        key: key.trim().into(),
        fingerprint: s["fingerprint"].as_str().unwrap().into(),
    })
    .unwrap()
}

/// A small tmpfs mounted over `dir` for the life of the value (root only).
pub struct SmallFs {
    dir: PathBuf,
}

impl SmallFs {
    pub fn mount(dir: &Path, size: &str) -> SmallFs {
        fs::create_dir_all(dir).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        SmallFs {
            dir: dir.to_path_buf(),
        }
    }

    pub fn resize(&self, size: &str) {
        let st = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

/// A filesystem made in an image file and loop-mounted over `dir` for the
/// life of the value (root only): btrfs or XFS, for reflinks.
pub struct LoopFs {
    dir: PathBuf,
}

impl LoopFs {
    /// `mkfs.KIND` (btrfs, xfs) on a sparse `image` of `size`, mounted at
    /// `dir`; `None` (with a note) when the tools are missing or this is
    /// not root.
    pub fn make(kind: &str, image: &Path, size: &str, dir: &Path) -> Option<LoopFs> {
        let mkfs = format!("mkfs.{kind}");
        let have = Command::new("sh")
            .args(["-c", &format!("command -v {mkfs}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !is_root() || !have {
            eprintln!(
                "skipped: needs root and {mkfs} (scripts/test installs btrfs-progs, xfsprogs)"
            );
            return None;
        }
        let st = Command::new("truncate")
            .args(["-s", size])
            .arg(image)
            .status()
            .unwrap();
        assert!(st.success());
        let out = Command::new(&mkfs).arg("-q").arg(image).output().unwrap();
        assert!(out.status.success(), "{mkfs}: {}", show(&out));
        fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-o", "loop"])
            .arg(image)
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount {kind}: {}", show(&out));
        Some(LoopFs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// The highest sequence number the running agent has acknowledged.
pub fn acknowledged(env: &Env) -> Option<u64> {
    acknowledged_in(&env.run(&["status", "--json"]))
}

/// The highest sequence number acknowledged by a running agent, from the
/// output of `rewind status --json` (`None` when no agent runs).
pub fn acknowledged_in(out: &Output) -> Option<u64> {
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    if v["agent"]["running"] != true {
        return None;
    }
    v["journal"]["durable_seq"].as_u64()
}

/// The crash loop of issue 6: a writer changes files without pause while
/// the agent is started and killed with SIGKILL `iterations` times at
/// random moments; then a last clean run catches up and drains. Returns
/// the highest sequence number acknowledged before a kill, and the kills.
pub fn crash_loop(env: &Env, iterations: u64) -> (u64, u64) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    for j in 0..12 {
        fs::write(env.root.join(format!("f{j}.txt")), b"start\n").unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (root, stop) = (env.root.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let j = i % 12;
                let body = format!("round {i} of file {j}\n").repeat(1 + (i % 300) as usize);
                fs::write(root.join(format!("f{j}.txt")), body).unwrap();
                if i.is_multiple_of(25) {
                    // Renames and deletes too.
                    let d = root.join(format!("dir{}", i % 3));
                    let _ = fs::remove_dir_all(&d);
                    fs::create_dir_all(&d).unwrap();
                    fs::write(d.join("x"), format!("{i}")).unwrap();
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(7));
            }
        })
    };
    let mut next = xorshift(0x2545_F491_4F6C_DD1D);
    let mut acked = 0u64;
    let mut kills = 0u64;
    for _ in 0..iterations {
        let agent = env.watch(&[]);
        std::thread::sleep(Duration::from_millis(80 + next() % 500));
        if let Some(q) = acknowledged(env) {
            acked = acked.max(q);
        }
        std::thread::sleep(Duration::from_millis(next() % 40));
        agent.kill();
        kills += 1;
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    // A last, clean run catches up with the final tree and drains.
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    std::thread::sleep(Duration::from_millis(600));
    agent.stop();
    (acked, kills)
}
