//! End-to-end tests of repositories on S3-compatible object storage
//! (issue 20): the real `rewind` binary against a real S3 server, `s3s-fs`,
//! which each test starts on a free loopback port with a data directory of
//! its own (a bucket is a folder of it).
//!
//! `s3s-fs` is a Rust program from crates.io; scripts/test installs it into
//! `target/s3-server/` (docs/decisions.md, "Object storage (issue 20), step
//! 1"). `REWIND_S3S_FS` names another binary. When it is missing, the
//! tests fail as root (CI) and skip with a loud message otherwise. Nothing
//! asserts on timing.

mod harness;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use harness::s3::{ACCESS_KEY, S3, SECRET_KEY, cache_dir};
use harness::{Env, Server, describe_tree, files_under, free_port, noise, show, wait_until};

/// Every file under `dir`, recursively.
fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn write(p: &Path, bytes: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

#[test]
fn an_s3_repository_takes_a_first_pass_and_restores_every_point() {
    first_pass_and_every_point(false);
}

#[test]
fn an_encrypted_s3_repository_takes_a_first_pass_and_restores_every_point() {
    first_pass_and_every_point(true);
}

/// Init (encrypted, the default, or with `--no-encrypt`), two backups, a
/// restore of each point, verify; encrypted, also: no object shows a
/// file's content or name, and repair after a deleted index object and
/// after a truncated pack object.
fn first_pass_and_every_point(encrypted: bool) {
    let env = Env::new();
    let base = env.tmp.path().canonicalize().unwrap();
    let Some(s3) = S3::start(&base) else { return };
    let url = s3.url("home/laptop");
    let out = if encrypted {
        s3.ok(&env, &["init", "--repo", &url])
    } else {
        s3.ok(&env, &["init", "--repo", &url, "--no-encrypt"])
    };
    assert!(out.contains(&url), "{out}");
    assert_eq!(out.contains("encrypted"), encrypted, "{out}");
    // The objects are where the URL says; nothing local stands in for them.
    assert!(s3.objects("home/laptop/config").is_file());
    assert!(!Path::new("s3:").exists() && !base.join("home/s3:").exists());

    write(&env.root.join("notes/a.txt"), b"first words\n");
    write(&env.root.join("photos/big.bin"), &noise(3 << 20, 7));
    write(&env.root.join("empty"), b"");
    s3.watch_once(&env, &url);
    let first = env.now();
    let packs = files_under(&s3.objects("home/laptop/packs"), "pack");
    let idx = files_under(&s3.objects("home/laptop/index"), "idx");
    assert!(!packs.is_empty(), "no pack objects");
    assert_eq!(packs.len(), idx.len(), "every pack has its index object");

    write(&env.root.join("notes/a.txt"), b"second words\n");
    fs::remove_file(env.root.join("empty")).unwrap();
    s3.watch_once(&env, &url);

    let dest1 = base.join("dest1");
    s3.restore_all(&env, &url, &first, &dest1);
    assert_eq!(
        fs::read(dest1.join("notes/a.txt")).unwrap(),
        b"first words\n"
    );
    assert_eq!(
        fs::read(dest1.join("photos/big.bin")).unwrap(),
        noise(3 << 20, 7)
    );
    assert!(dest1.join("empty").is_file());

    let dest2 = base.join("dest2");
    s3.restore_all(&env, &url, "now", &dest2);
    assert_eq!(describe_tree(&dest2), describe_tree(&env.root));
    assert!(!dest2.join("empty").exists());

    let v: serde_json::Value =
        serde_json::from_str(&s3.ok(&env, &["verify", "--repo", &url, "--json"])).unwrap();
    assert_eq!(v["ok"], true, "{v}");

    // The readers kept the index objects in the cache folder they were
    // given, one entry per index object, and nothing in the home.
    let cached = files_under(&cache_dir(&env), "idx");
    assert_eq!(
        cached.len(),
        files_under(&s3.objects("home/laptop/index"), "idx").len(),
        "{cached:?}"
    );
    assert!(cache_dir(&env).join("CACHEDIR.TAG").is_file());
    assert!(!base.join("home/.cache/rewind").exists());

    let objects = s3.objects("home/laptop");
    let config = fs::read_to_string(objects.join("config")).unwrap();
    assert_eq!(config.contains("\"format\": 5"), encrypted, "{config}");
    if !encrypted {
        return;
    }
    assert_eq!(all_files(&objects.join("keys")).len(), 1);
    for needle in [&b"second words"[..], b"a.txt", b"big.bin", b"notes"] {
        let holding: Vec<PathBuf> = all_files(&objects)
            .into_iter()
            .filter(|p| {
                fs::read(p)
                    .unwrap()
                    .windows(needle.len())
                    .any(|w| w == needle)
            })
            .collect();
        assert!(
            holding.is_empty(),
            "{:?} in {holding:?}",
            String::from_utf8_lossy(needle)
        );
    }

    // Repair after a deleted index object: every point still restores.
    let idx = files_under(&objects.join("index"), "idx");
    fs::remove_file(&idx[0]).unwrap();
    s3.ok(&env, &["repair", "--repo", &url]);
    assert_eq!(files_under(&objects.join("index"), "idx").len(), idx.len());
    let dest3 = base.join("dest3");
    s3.restore_all(&env, &url, &first, &dest3);
    assert_eq!(describe_tree(&dest3), describe_tree(&dest1));

    // Repair after a truncated pack object: the pack of the second pass
    // loses its footer and its versions; what was read before it is kept,
    // verify is clean again afterwards.
    let packs = files_under(&objects.join("packs"), "pack");
    let newest = packs
        .iter()
        .max_by_key(|p| fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    let len = fs::metadata(newest).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(newest)
        .unwrap()
        .set_len(len - 20)
        .unwrap();
    let out = s3.rewind(&env, &["verify", "--repo", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let _ = s3.rewind(&env, &["repair", "--repo", &url]);
    let v: serde_json::Value =
        serde_json::from_str(&s3.ok(&env, &["verify", "--repo", &url, "--json"])).unwrap();
    assert_eq!(v["issues"].as_array().map(Vec::len), Some(0), "{v}");
    let dest4 = base.join("dest4");
    s3.restore_all(&env, &url, &first, &dest4);
    assert_eq!(describe_tree(&dest4), describe_tree(&dest1));

    // Without the password: one clear line.
    let mut c = env.command();
    s3.reach(&mut c, SECRET_KEY)
        .env_remove("REWIND_PASSWORD")
        .env("REWIND_CACHE_DIR", cache_dir(&env));
    let out = c.args(["ls", "--repo", &url]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is encrypted: no password"), "{err}");
}

#[test]
fn cache_dir_and_no_cache_choose_where_index_copies_go_or_that_none_are_kept() {
    let env = Env::new();
    let base = env.tmp.path().canonicalize().unwrap();
    let Some(s3) = S3::start(&base) else { return };
    let url = s3.url("opts");
    s3.ok(&env, &["init", "--repo", &url]);
    write(&env.root.join("a.txt"), b"some words\n");
    s3.watch_once(&env, &url);
    let objects = files_under(&s3.objects("opts/index"), "idx").len();
    assert!(objects > 0);

    // --cache-dir wins over REWIND_CACHE_DIR.
    let _ = fs::remove_dir_all(cache_dir(&env));
    let mine = base.join("mine");
    let m = mine.to_str().unwrap();
    s3.ok(&env, &["verify", "--repo", &url, "--cache-dir", m]);
    assert_eq!(files_under(&mine, "idx").len(), objects);
    assert!(!cache_dir(&env).exists());

    // --no-cache keeps nothing, anywhere.
    fs::remove_dir_all(&mine).unwrap();
    s3.ok(&env, &["verify", "--repo", &url, "--no-cache"]);
    assert!(!cache_dir(&env).exists() && !mine.exists());
}

#[test]
fn a_second_init_on_the_same_prefix_is_refused() {
    let env = Env::new();
    let base = env.tmp.path().canonicalize().unwrap();
    let Some(s3) = S3::start(&base) else { return };
    let url = s3.url("shared");
    s3.ok(&env, &["init", "--repo", &url]);
    let config = fs::read(s3.objects("shared/config")).unwrap();
    let out = s3.rewind(&env, &["init", "--repo", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(fs::read(s3.objects("shared/config")).unwrap(), config);
}

#[test]
fn a_wrong_secret_fails_in_one_line_that_does_not_show_it() {
    let env = Env::new();
    let base = env.tmp.path().canonicalize().unwrap();
    let Some(s3) = S3::start(&base) else { return };
    let url = s3.url("p");
    let wrong = "not-the-secret-93c1f7";
    let out = s3.rewind_with_secret(&env, wrong, &["init", "--repo", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains(wrong) && !err.contains(SECRET_KEY), "{err}");
    assert!(err.contains(&url), "the error names the repository: {err}");
    assert!(!s3.objects("p/config").exists());
}

#[test]
fn an_s3_url_without_credentials_is_a_clear_error() {
    let env = Env::new();
    let out = env.run(&["init", "--repo", "s3://backups/x"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// The writer lease at `lock` was let go of: gone, or (where the store
/// honours If-Match, as s3s-fs does) overwritten with a record marked
/// released, so a late release cannot remove a successor's lease.
fn let_go(lock: &Path) -> bool {
    match fs::read(lock) {
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .is_ok_and(|v| v["released"].as_bool() == Some(true)),
    }
}

/// Nanoseconds since the Unix epoch, as the lease object counts time.
fn unix_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

#[test]
fn a_second_writer_is_refused_while_the_lease_is_held_and_gets_in_once_a_killed_writers_lease_expires()
 {
    let env = Env::new();
    let base = env.tmp.path().canonicalize().unwrap();
    let Some(s3) = S3::start(&base) else { return };
    let url = s3.url("leased");
    s3.ok(&env, &["init", "--repo", &url]);
    let lock = s3.objects("leased/lock");
    assert!(let_go(&lock), "init released its lease");
    write(&env.root.join("a.txt"), b"held\n");
    let root = env.root.to_str().unwrap();

    // A watcher holds the lease (renewed every 3 s of its 8).
    let log = base.join("watch.log");
    let mut cmd = env.command();
    s3.reach(&mut cmd, SECRET_KEY);
    let mut first = cmd
        .env("REWIND_S3_LEASE_SECS", "8")
        .args(["watch", "--repo", &url, root])
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until("the watcher's first pass", || {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("first pass complete")
    });
    assert!(lock.is_file(), "the lease object exists");

    let out = s3.rewind(&env, &["watch", "--repo", &url, root, "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("in use by another writer"), "{err}");
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    assert!(err.contains("expires at"), "{err}");
    assert!(err.contains(&format!("{url}/lock")), "{err}");

    // SIGKILL: the lease stays behind until it expires.
    first.kill().unwrap();
    first.wait().unwrap();
    let lease: serde_json::Value = serde_json::from_slice(&fs::read(&lock).unwrap()).unwrap();
    let expires = lease["expires"]
        .as_i64()
        .expect("the lease says when it expires");
    assert_eq!(lease["pid"].as_u64(), Some(first.id() as u64), "{lease}");
    write(&env.root.join("b.txt"), b"after the kill\n");
    let out = s3.rewind(&env, &["watch", "--repo", &url, root, "--once"]);
    if unix_ns() < expires {
        // Refused while the dead writer's lease lasts.
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("in use by another writer"), "{err}");
        while unix_ns() < expires + 200_000_000 {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        s3.watch_once(&env, &url);
    } else {
        // The machine was slow enough that it had expired already.
        assert!(out.status.success(), "{}", show(&out));
    }
    assert!(let_go(&lock), "the new writer released its lease");
    let dest = base.join("dest");
    s3.restore_all(&env, &url, "now", &dest);
    assert_eq!(describe_tree(&dest), describe_tree(&env.root));
}

#[test]
fn a_server_keeps_its_repository_on_the_store_and_its_own_state_in_its_data_dir() {
    let env = Env::new();
    let base = env.tmp.path().canonicalize().unwrap();
    let Some(s3) = S3::start(&base) else { return };
    let url = s3.url("server/main");
    let data = base.join("srv");
    let vars = s3.server_env(&env);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let srv = Server::start_new_in_env(&data, &["--store", &url], &vars);
    assert!(cache_dir(&env).join("CACHEDIR.TAG").is_file());
    // The repository is on the store; the data directory names it and
    // keeps the certificate and the clients.
    assert!(s3.objects("server/main/config").is_file());
    assert!(!data.join("repo").exists());
    assert_eq!(fs::read_to_string(data.join("store")).unwrap().trim(), url);
    assert!(data.join("tls/cert.pem").is_file() && data.join("clients.json").is_file());
    // While it serves, it holds the repository's lease: a prune by hand
    // is refused and says who holds it.
    assert!(s3.objects("server/main/lock").is_file());
    let out = srv.cmd(&["prune"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("pid {}", srv.pid())), "{err}");

    env.enroll(&srv, "laptop");
    write(&env.root.join("notes/a.txt"), b"on the server's store\n");
    write(&env.root.join("big.bin"), &noise(2 << 20, 3));
    env.ok(&["watch", env.root.to_str().unwrap(), "--once"]);
    assert!(
        !files_under(&s3.objects("server/main/packs"), "pack").is_empty(),
        "the uploads went to the store"
    );
    let dest = base.join("dest");
    env.restore_to_ok(&env.root, "now", &dest);
    assert_eq!(describe_tree(&dest), describe_tree(&env.root));

    let log = srv.log();
    assert!(log.contains("took the writer lease"), "{log}");
    assert!(!log.contains(SECRET_KEY), "{log}");
    // Verify through the server's own command reads the store too.
    drop(srv);
    let out = Command::new(harness::server_bin())
        .arg("--data")
        .arg(&data)
        .args(["verify", "--json"])
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    // No secret in anything it printed or logged.
    let printed = format!(
        "{}{}",
        show(&out),
        fs::read_to_string(data.join("store")).unwrap()
    );
    assert!(!printed.contains(SECRET_KEY), "{printed}");
}

#[test]
fn a_server_store_url_with_credentials_in_it_is_refused_without_repeating_them() {
    let env = Env::new();
    let data = env.tmp.path().join("srv");
    let secret = "hunter2-e8f1";
    let out = Command::new(harness::server_bin())
        .arg("--data")
        .arg(&data)
        .args(["init", "--store", &format!("s3://key:{secret}@bucket/p")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must not hold credentials"), "{err}");
    assert!(!err.contains(secret), "{err}");
    assert!(!data.join("store").exists());
}

/// `rewind init --repo s3://backups/x` against `port` with `vars`.
fn init_against(env: &Env, port: u16, vars: &[(&str, &str)]) -> Output {
    env.command()
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_ALLOW_HTTP", "true")
        .envs(vars.iter().copied())
        .args(["init", "--repo", "s3://backups/x"])
        .output()
        .unwrap()
}

#[test]
fn the_retry_settings_reach_the_client_and_a_bad_one_is_named_in_one_line() {
    let env = Env::new();
    // Nothing listens there: every request fails to connect.
    let port = free_port();
    let out = init_against(
        &env,
        port,
        &[("REWIND_S3_RETRIES", "1"), ("REWIND_S3_RETRY_SECS", "20")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("s3://backups/x"), "{err}");
    assert!(
        err.contains("max_retries: 1,") && err.contains("retry_timeout: 20s"),
        "object_store reports the retry policy it used: {err}"
    );
    assert!(!err.contains(SECRET_KEY), "{err}");

    let out = init_against(&env, port, &[("REWIND_S3_TIMEOUT_SECS", "soon")]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("REWIND_S3_TIMEOUT_SECS=soon"), "{err}");
}
