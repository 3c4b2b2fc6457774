//! A real S3 server for the object storage tests (issue 20): `s3s-fs`,
//! started on a free loopback port with a data directory of the test's
//! own (a bucket is a folder of it), and the environment that reaches it.
//!
//! `s3s-fs` is a Rust program from crates.io; scripts/test installs it into
//! `target/s3-server/` (docs/decisions.md, "Object storage (issue 20), step
//! 1"). `REWIND_S3S_FS` names another binary. When it is missing, the
//! tests fail as root (CI) and skip with a loud message otherwise.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use super::{Env, free_port, is_root, show, wait_until};

/// The access key and secret every test server takes.
pub const ACCESS_KEY: &str = "rewind-test-key";
pub const SECRET_KEY: &str = "rewind-test-secret-6b1d0c";

/// The index cache folder of the test's `rewind` commands.
pub fn cache_dir(env: &Env) -> PathBuf {
    env.tmp.path().join("cache")
}

/// The password of the tests' encrypted repositories.
pub const REPO_PASSWORD: &str = "s3 test password";

/// Where `scripts/test` installs the server.
fn s3s_fs() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("REWIND_S3S_FS") {
        return Some(PathBuf::from(p));
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/s3-server/bin/s3s-fs");
    if local.is_file() {
        return Some(local);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("s3s-fs"))
            .find(|p| p.is_file())
    })
}

/// A running `s3s-fs` with one bucket; killed when dropped.
pub struct S3 {
    child: Child,
    pub port: u16,
    pub data: PathBuf,
    pub bucket: &'static str,
}

impl S3 {
    /// Start a server whose data lives in `dir/s3` (`None`: skipped).
    pub fn start(dir: &Path) -> Option<S3> {
        let Some(bin) = s3s_fs() else {
            if is_root() {
                panic!(
                    "s3s-fs is not installed; scripts/test installs it into target/s3-server (or set REWIND_S3S_FS)"
                );
            }
            eprintln!(
                "\n!!!!!!!! SKIPPED: s3s-fs is not installed and the tests do not run as root; \
                 run scripts/test (it installs it) to run the object storage tests !!!!!!!!\n"
            );
            return None;
        };
        let data = dir.join("s3");
        let bucket = "backups";
        fs::create_dir_all(data.join(bucket)).unwrap();
        let port = free_port();
        let log = fs::File::create(dir.join("s3s-fs.log")).unwrap();
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let s3 = S3 {
            child,
            port,
            data,
            bucket,
        };
        wait_until("s3s-fs to listen", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Some(s3)
    }

    /// `s3://BUCKET/PREFIX`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// `rewind ARGS` with the environment that reaches this server.
    pub fn rewind(&self, env: &Env, args: &[&str]) -> Output {
        self.rewind_with_secret(env, SECRET_KEY, args)
    }

    pub fn rewind_with_secret(&self, env: &Env, secret: &str, args: &[&str]) -> Output {
        let mut c = env.command();
        self.reach(&mut c, secret);
        // The index cache, in the test's own folder (never a real home).
        c.env("REWIND_CACHE_DIR", cache_dir(env));
        c.args(args).output().unwrap()
    }

    /// Give `c` the environment that reaches this server with `secret`.
    pub fn reach<'c>(&self, c: &'c mut Command, secret: &str) -> &'c mut Command {
        self.reach_at(c, self.port, secret)
    }

    /// The same, through whatever listens on `port` (a proxy in front of
    /// this server).
    pub fn reach_at<'c>(&self, c: &'c mut Command, port: u16, secret: &str) -> &'c mut Command {
        c.env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_ALLOW_HTTP", "true")
            // s3:// repositories are encrypted unless `init --no-encrypt`.
            .env("REWIND_PASSWORD", REPO_PASSWORD)
    }

    /// The same, which must exit 0; its stdout.
    pub fn ok(&self, env: &Env, args: &[&str]) -> String {
        let out = self.rewind(env, args);
        assert!(
            out.status.success(),
            "rewind {args:?} failed\n{}",
            show(&out)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `rewind ARGS --json` (must exit 0), parsed.
    pub fn json(&self, env: &Env, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        let s = self.ok(env, &all);
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("bad JSON from {args:?}: {e}\n{s}"))
    }

    /// A first pass (or the next) of the test's folder into `url`.
    pub fn watch_once(&self, env: &Env, url: &str) {
        let root = env.root.to_str().unwrap();
        self.ok(env, &["watch", "--repo", url, root, "--once"]);
    }

    /// The test's folder from `url` as it was `at`, into `dest`.
    pub fn restore_all(&self, env: &Env, url: &str, at: &str, dest: &Path) {
        let root = env.root.to_str().unwrap();
        let dest = dest.to_str().unwrap();
        self.ok(
            env,
            &["restore", root, "--repo", url, "--at", at, "--to", dest],
        );
    }

    /// The environment that reaches this server, for `rewind-server`
    /// (its index cache in the test's folder, as for `rewind`).
    pub fn server_env(&self, env: &Env) -> Vec<(String, String)> {
        vec![
            (
                "REWIND_CACHE_DIR".into(),
                cache_dir(env).to_str().unwrap().into(),
            ),
            (
                "AWS_ENDPOINT_URL".into(),
                format!("http://127.0.0.1:{}", self.port),
            ),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
        ]
    }

    /// The folder that holds the objects under `prefix`.
    pub fn objects(&self, prefix: &str) -> PathBuf {
        self.data.join(self.bucket).join(prefix)
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
