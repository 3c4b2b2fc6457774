//! End-to-end tests of database dumps (issue 5): the real `rewind` binary
//! against real PostgreSQL and MariaDB servers, each test starting its own
//! throwaway instance on a free port in a temporary directory.
//!
//! The servers come from Debian's packages (scripts/test installs them).
//! When they are missing, the tests fail as root (CI) and skip with a loud
//! message otherwise. Nothing asserts on timing.

mod harness;

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::{DEADLINE, Env, files_under, is_root, show, wait_until};
use serde_json::Value;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn unavailable(what: &str) -> bool {
    if is_root() {
        panic!(
            "{what} is not installed; scripts/test installs it (apt-get install postgresql mariadb-server mariadb-client)"
        );
    }
    eprintln!(
        "\n!!!!!!!! SKIPPED: {what} is not installed and the tests do not run as root; \
         run scripts/test as root (it installs it) to run the database dump tests !!!!!!!!\n"
    );
    true
}

/// Run `cmd` (as `user` when root), require success, return stdout.
fn sh(user: Option<&str>, program: &Path, args: &[&str]) -> String {
    let mut c = match user {
        Some(u) if is_root() => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(program);
            c
        }
        _ => Command::new(program),
    };
    let out = c.args(args).stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?} failed\n{}",
        program.display(),
        show(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

// ---------------------------------------------------------------- postgres

struct Pg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

const PG_PASSWORD: &str = "pg-secret-pw";

impl Pg {
    /// A fresh cluster: password (scram) authentication over TCP for the
    /// superuser `postgres`, trust on its private socket.
    fn start() -> Option<Pg> {
        let bin = fs::read_dir("/usr/lib/postgresql").ok().and_then(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .max()
        });
        let Some(bin) = bin else {
            unavailable("PostgreSQL (/usr/lib/postgresql/*/bin/initdb)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let user = if is_root() { Some("postgres") } else { None };
        if is_root() {
            Command::new("chown")
                .args(["postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
        }
        let pwfile = dir.path().join("pw");
        fs::write(&pwfile, format!("{PG_PASSWORD}\n")).unwrap();
        if is_root() {
            Command::new("chown")
                .arg("postgres")
                .arg(&pwfile)
                .status()
                .unwrap();
        }
        let data = dir.path().join("data");
        sh(
            user,
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                &format!("--pwfile={}", pwfile.display()),
            ],
        );
        let port = free_port();
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            dir.path().display()
        );
        sh(
            user,
            &bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                dir.path().join("log").to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        Some(Pg { dir, bin, port })
    }

    /// psql over the private socket (no password needed).
    fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", self.dir.path().to_str().unwrap()])
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-c", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql}\n{}", show(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// A psql session left running with `sql` (for holding locks).
    fn psql_bg(&self, db: &str, sql: &str) -> Child {
        Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-At"])
            .args(["-h", self.dir.path().to_str().unwrap()])
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-c", sql])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// A checksum of every table of `db`.
    fn checksum(&self, db: &str) -> String {
        self.psql(
            db,
            "SELECT (SELECT count(*) || ':' || md5(string_agg(c::text, ',' ORDER BY id)) FROM customers c) \
             || '/' || (SELECT count(*) || ':' || md5(string_agg(o::text, ',' ORDER BY id)) FROM orders o)",
        )
    }

    /// A `[[dump]]` table for `db` over TCP with the password in a file.
    fn job(&self, env: &Env, name: &str, db: &str, extra: &str) -> String {
        let pwfile = env.tmp.path().join(format!("pw-{name}"));
        fs::write(&pwfile, format!("{PG_PASSWORD}\n")).unwrap();
        format!(
            "[[dump]]\nname = \"{name}\"\nkind = \"postgres\"\ndatabase = \"{db}\"\nhost = \"127.0.0.1\"\n\
             port = {}\nuser = \"postgres\"\npassword_file = \"{}\"\nprogram = \"{}\"\n{extra}\n",
            self.port,
            pwfile.display(),
            self.bin.join("pg_dump").display()
        )
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let user = if is_root() { Some("postgres") } else { None };
        let mut c = match user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(self.bin.join("pg_ctl"));
                c
            }
            None => Command::new(self.bin.join("pg_ctl")),
        };
        let _ = c
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn write_config(env: &Env, text: &str) -> PathBuf {
    env.write_config(text)
}

fn dump_versions(env: &Env, name: &str) -> Vec<Value> {
    let v = env.json(&["dump", "versions", name, "--json"]);
    v["versions"].as_array().unwrap().clone()
}

/// Run `rewind dump run NAME` expecting failure: exit 1 and exactly one
/// line on stderr, which is returned.
fn run_fails(env: &Env, name: &str) -> String {
    let out = env.run(&["dump", "run", name]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    // The first command of a test also says it created the repository.
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("rewind: created repository"))
        .collect();
    assert_eq!(lines.len(), 1, "one line\n{}", show(&out));
    err
}

fn pg_seed(pg: &Pg, db: &str) {
    pg.psql("postgres", &format!("CREATE DATABASE {db}"));
    pg.psql(
        db,
        "CREATE TABLE customers (id int PRIMARY KEY, name text, email text, credit numeric);
         CREATE TABLE orders (id int PRIMARY KEY, customer int REFERENCES customers, total numeric, note text);
         INSERT INTO customers SELECT g, 'customer ' || g, 'c' || g || '@example.com', g * 1.5 FROM generate_series(1, 5000) g;
         INSERT INTO orders SELECT g, 1 + g % 5000, g % 997, repeat('x', g % 50) FROM generate_series(1, 20000) g;",
    );
}

#[test]
fn postgres_dump_change_dump_restore_each_point() {
    let Some(pg) = Pg::start() else { return };
    let env = Env::new();
    pg_seed(&pg, "shop");
    write_config(&env, &pg.job(&env, "shop", "shop", ""));

    env.ok(&["dump", "run", "shop"]);
    let sum1 = pg.checksum("shop");
    let t1 = env.now();

    pg.psql(
        "shop",
        "UPDATE customers SET credit = credit + 1 WHERE id % 50 = 0;
         DELETE FROM orders WHERE id % 100 = 7;
         INSERT INTO orders SELECT g, 1, 1, 'new' FROM generate_series(20001, 20100) g;",
    );
    let sum2 = pg.checksum("shop");
    assert_ne!(sum1, sum2);
    let run = env.json(&["dump", "run", "shop", "--json"]);
    let s = &run["streams"][0];
    assert_eq!(s["ok"], true, "{run}");
    assert!(s["bytes"].as_u64().unwrap() > 500_000, "{run}");
    let t2 = env.now();

    let vs = dump_versions(&env, "shop");
    assert_eq!(vs.len(), 2, "{vs:?}");
    assert!(
        vs.iter()
            .all(|v| v["ok"] == true && v["format"] == "postgres")
    );

    // Each point in time into a fresh database.
    env.ok(&["dump", "restore", "shop", "--at", &t1, "--into", "shop_t1"]);
    assert_eq!(pg.checksum("shop_t1"), sum1);
    env.ok(&["dump", "restore", "shop", "--at", &t2, "--into", "shop_t2"]);
    assert_eq!(pg.checksum("shop_t2"), sum2);
    // A database that exists is refused, in one line.
    let out = env.run(&["dump", "restore", "shop", "--into", "shop_t2"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{}",
        show(&out)
    );

    // To stdout, for `| psql`.
    let out = env.run(&["dump", "restore", "shop", "--at", &t1]);
    assert!(out.status.success(), "{}", show(&out));
    pg.psql("postgres", "CREATE DATABASE shop_pipe");
    let mut psql = Command::new(pg.bin.join("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .args(["-h", pg.dir.path().to_str().unwrap()])
        .args([
            "-p",
            &pg.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "shop_pipe",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    psql.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    assert!(psql.wait().unwrap().success());
    assert_eq!(pg.checksum("shop_pipe"), sum1);

    // Dumps are part of a point in time: `rewind ls` shows them.
    let ls = env.json(&["ls", "--json", "--at", &t1]);
    let entries = ls["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["path"] == "dumps/shop" && e["kind"] == "dump"),
        "{ls}"
    );
    let ls = env.ok(&["ls", "dumps"]);
    assert!(ls.contains("dumps/shop"), "{ls}");
}

#[test]
fn postgres_all_databases_and_globals() {
    let Some(pg) = Pg::start() else { return };
    let env = Env::new();
    pg_seed(&pg, "alpha");
    pg_seed(&pg, "beta");
    pg.psql("postgres", "CREATE ROLE reporting LOGIN");
    write_config(&env, &pg.job(&env, "all", "*", ""));
    env.ok(&["dump", "run", "all"]);
    let vs = dump_versions(&env, "all");
    let paths: Vec<&str> = vs.iter().map(|v| v["path"].as_str().unwrap()).collect();
    for p in [
        "dumps/all/.globals",
        "dumps/all/alpha",
        "dumps/all/beta",
        "dumps/all/postgres",
    ] {
        assert!(paths.contains(&p), "{paths:?}");
    }
    let out = env.run(&["dump", "restore", "all/.globals"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("CREATE ROLE reporting"));
    env.ok(&["dump", "restore", "all/beta", "--into", "beta2"]);
    assert_eq!(pg.checksum("beta2"), pg.checksum("beta"));
}

#[test]
fn postgres_failures_are_stored_and_reported_in_one_line() {
    let Some(pg) = Pg::start() else { return };
    let env = Env::new();
    pg_seed(&pg, "shop");
    let wrong = env.tmp.path().join("wrong-pw");
    fs::write(&wrong, "not-the-password\n").unwrap();
    let mut cfg = pg.job(&env, "shop", "shop", "");
    cfg.push_str(&format!(
        "[[dump]]\nname = \"wrongpw\"\nkind = \"postgres\"\ndatabase = \"shop\"\nhost = \"127.0.0.1\"\n\
         port = {}\nuser = \"postgres\"\npassword_file = \"{}\"\n",
        pg.port,
        wrong.display()
    ));
    cfg.push_str(&pg.job(&env, "nodb", "no_such_db", ""));
    cfg.push_str(&pg.job(&env, "slow", "shop", "timeout = \"1s\""));
    cfg.push_str(&pg.job(&env, "victim", "shop", ""));
    cfg.push_str(
        "[[dump]]\nname = \"nobin\"\nkind = \"postgres\"\ndatabase = \"shop\"\nprogram = \"/nonexistent/bin/pg_dump\"\n",
    );
    write_config(&env, &cfg);

    // A good run first, to restore after the failures.
    env.ok(&["dump", "run", "shop"]);
    let good = pg.checksum("shop");

    let e = run_fails(&env, "wrongpw");
    assert!(e.contains("password authentication failed"), "{e}");
    let e = run_fails(&env, "nodb");
    assert!(e.contains("\"no_such_db\" does not exist"), "{e}");
    let e = run_fails(&env, "nobin");
    assert!(e.contains("/nonexistent/bin/pg_dump not found"), "{e}");

    // A table locked by another session: pg_dump waits for it.
    let mut locker = pg.psql_bg(
        "shop",
        "BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600);",
    );
    wait_until("the lock is held", || {
        pg.psql(
            "shop",
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             WHERE c.relname = 'orders' AND l.mode = 'AccessExclusiveLock' AND l.granted",
        ) == "1"
    });
    let e = run_fails(&env, "slow");
    assert!(e.contains("timed out"), "{e}");

    // Killed mid-run by someone else.
    let run = env
        .command()
        .args(["dump", "run", "victim"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rewind_pid = run.id();
    let mut dump_pid = None;
    wait_until("pg_dump runs", || {
        dump_pid = children_of(rewind_pid)
            .into_iter()
            .find(|p| comm(*p).as_deref() == Some("pg_dump"));
        dump_pid.is_some()
    });
    Command::new("kill")
        .args(["-KILL", &dump_pid.unwrap().to_string()])
        .status()
        .unwrap();
    let out = run.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("killed by signal 9"), "{err}");
    let _ = locker.kill();
    let _ = locker.wait();

    for (job, check) in [
        ("wrongpw", "exit_code"),
        ("nodb", "exit_code"),
        ("nobin", "error"),
        ("slow", "timed_out"),
        ("victim", "signal"),
    ] {
        let vs = dump_versions(&env, job);
        assert_eq!(vs.len(), 1, "{job}: {vs:?}");
        let v = &vs[0];
        assert_eq!(v["ok"], false, "{job}: {v}");
        match check {
            "exit_code" => assert_eq!(v["exit_code"], 1, "{job}: {v}"),
            "error" => assert!(v["error"].as_str().unwrap().contains("not found"), "{v}"),
            "timed_out" => assert_eq!(v["timed_out"], true, "{v}"),
            _ => assert_eq!(v["signal"], 9, "{v}"),
        }
    }
    let v = &dump_versions(&env, "wrongpw")[0];
    assert!(
        v["stderr"]
            .as_str()
            .unwrap()
            .contains("password authentication failed")
    );

    // `--at` skips failed runs unless asked.
    let out = env.run(&["dump", "restore", "victim"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--include-failed"),
        "{}",
        show(&out)
    );
    let out = env.run(&["dump", "restore", "victim", "--include-failed"]);
    assert!(out.status.success(), "{}", show(&out));
    // The good run of `shop` still restores.
    env.ok(&["dump", "restore", "shop", "--into", "shop_back"]);
    assert_eq!(pg.checksum("shop_back"), good);
    // And `status` shows the failures.
    let st = env.ok(&["status"]);
    assert!(
        st.contains("dumps/wrongpw") && st.contains("password authentication failed"),
        "{st}"
    );
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // Fields after the command name (which may hold spaces).
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

fn comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

// ------------------------------------------------------------------ mariadb

struct Maria {
    dir: tempfile::TempDir,
    port: u16,
    server: Child,
}

const MY_PASSWORD: &str = "my-secret-pw";

fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for n in names {
        for d in std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin")]) {
            if d.join(n).is_file() {
                return Some(d.join(n));
            }
        }
    }
    None
}

impl Maria {
    fn start() -> Option<Maria> {
        let (Some(install), Some(server), Some(_client)) = (
            which(&["mariadb-install-db", "mysql_install_db"]),
            which(&["mariadbd", "mysqld"]),
            which(&["mariadb", "mysql"]),
        ) else {
            unavailable("MariaDB (mariadb-server, mariadb-client)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut user_args: Vec<String> = Vec::new();
        if is_root() {
            Command::new("chown")
                .args(["mysql:mysql"])
                .arg(dir.path())
                .status()
                .unwrap();
            user_args.push("--user=mysql".into());
        }
        let out = Command::new(&install)
            .args(&user_args)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=socket", "--skip-test-db"])
            .output()
            .unwrap();
        assert!(out.status.success(), "mariadb-install-db\n{}", show(&out));
        let port = free_port();
        let sock = dir.path().join("sock");
        let server = Command::new(&server)
            .arg("--no-defaults")
            .args(&user_args)
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", sock.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!(
                "--log-error={}",
                dir.path().join("err.log").display()
            ))
            .args(["--innodb-flush-log-at-trx-commit=0", "--skip-log-bin"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let m = Maria { dir, port, server };
        let start = Instant::now();
        while m.try_sql("", "SELECT 1").is_err() {
            assert!(
                start.elapsed() < DEADLINE,
                "mariadbd did not start: {}",
                fs::read_to_string(m.dir.path().join("err.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        m.sql(
            "",
            &format!(
                "CREATE USER 'backup'@'127.0.0.1' IDENTIFIED BY '{MY_PASSWORD}';
                 GRANT ALL ON *.* TO 'backup'@'127.0.0.1';"
            ),
        );
        Some(m)
    }

    fn try_sql(&self, db: &str, sql: &str) -> Result<String, String> {
        let client = which(&["mariadb", "mysql"]).unwrap();
        let mut c = Command::new(client);
        c.arg("--no-defaults")
            .arg(format!(
                "--socket={}",
                self.dir.path().join("sock").display()
            ))
            .args(["-u", "root", "-N", "-B", "-e", sql]);
        if !db.is_empty() {
            c.arg(db);
        }
        let out = c.output().unwrap();
        if out.status.success() {
            Ok(String::from_utf8(out.stdout).unwrap().trim().to_string())
        } else {
            Err(show(&out))
        }
    }

    fn sql(&self, db: &str, sql: &str) -> String {
        self.try_sql(db, sql)
            .unwrap_or_else(|e| panic!("{sql}\n{e}"))
    }

    fn checksum(&self, db: &str) -> String {
        self.sql(
            db,
            "SELECT CONCAT((SELECT CONCAT(COUNT(*), ':', SUM(CRC32(CONCAT_WS('|', id, name, email, credit)))) FROM customers), \
             '/', (SELECT CONCAT(COUNT(*), ':', SUM(CRC32(CONCAT_WS('|', id, customer, total, note)))) FROM orders))",
        )
    }

    fn job(&self, env: &Env, name: &str, db: &str, password: &str) -> String {
        let pwfile = env.tmp.path().join(format!("mypw-{name}"));
        fs::write(&pwfile, format!("{password}\n")).unwrap();
        format!(
            "[[dump]]\nname = \"{name}\"\nkind = \"mysql\"\ndatabase = \"{db}\"\nhost = \"127.0.0.1\"\n\
             port = {}\nuser = \"backup\"\npassword_file = \"{}\"\n",
            self.port,
            pwfile.display()
        )
    }
}

impl Drop for Maria {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn my_seed(m: &Maria, db: &str) {
    m.sql("", &format!("CREATE DATABASE {db}"));
    let mut sql = String::from(
        "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(100), email VARCHAR(100), credit DECIMAL(12,2)) ENGINE=InnoDB;
         CREATE TABLE orders (id INT PRIMARY KEY, customer INT, total DECIMAL(12,2), note VARCHAR(100)) ENGINE=InnoDB;
         INSERT INTO customers SELECT seq, CONCAT('customer ', seq), CONCAT('c', seq, '@example.com'), seq * 1.5
           FROM seq_1_to_3000;",
    );
    sql.push_str(
        "INSERT INTO orders SELECT seq, 1 + seq % 3000, seq % 997, REPEAT('x', seq % 50) FROM seq_1_to_9000;",
    );
    m.sql(db, &sql);
}

#[test]
fn mariadb_dump_change_dump_restore_each_point() {
    let Some(m) = Maria::start() else { return };
    let env = Env::new();
    my_seed(&m, "shop");
    let mut cfg = m.job(&env, "shop", "shop", MY_PASSWORD);
    cfg.push_str(&m.job(&env, "wrongpw", "shop", "nope"));
    cfg.push_str(&m.job(&env, "nodb", "no_such_db", MY_PASSWORD));
    write_config(&env, &cfg);

    env.ok(&["dump", "run", "shop"]);
    let sum1 = m.checksum("shop");
    let t1 = env.now();
    m.sql(
        "shop",
        "UPDATE customers SET credit = credit + 1 WHERE id % 50 = 0;
         DELETE FROM orders WHERE id % 100 = 7;
         INSERT INTO orders VALUES (9001, 1, 1, 'new'), (9002, 2, 2, 'newer');",
    );
    let sum2 = m.checksum("shop");
    assert_ne!(sum1, sum2);
    env.ok(&["dump", "run", "shop"]);
    let t2 = env.now();
    let vs = dump_versions(&env, "shop");
    assert_eq!(vs.len(), 2, "{vs:?}");
    assert!(
        vs.iter().all(|v| v["ok"] == true && v["format"] == "mysql"),
        "{vs:?}"
    );

    env.ok(&["dump", "restore", "shop", "--at", &t1, "--into", "shop_t1"]);
    assert_eq!(m.checksum("shop_t1"), sum1);
    env.ok(&["dump", "restore", "shop", "--at", &t2, "--into", "shop_t2"]);
    assert_eq!(m.checksum("shop_t2"), sum2);

    let e = run_fails(&env, "wrongpw");
    assert!(e.contains("Access denied"), "{e}");
    let e = run_fails(&env, "nodb");
    assert!(e.contains("no_such_db"), "{e}");
    // Neither failure hides the good dump.
    env.ok(&["dump", "restore", "shop", "--into", "shop_t3"]);
    assert_eq!(m.checksum("shop_t3"), sum2);
}

// ------------------------------------------------------------------ commands

#[test]
fn command_jobs_fail_visibly_and_run_on_schedule() {
    let env = Env::new();
    let mark = env.tmp.path().join("ran");
    let cfg = write_config(
        &env,
        &format!(
            "[[dump]]\nname = \"broken\"\nkind = \"command\"\n\
             command = [\"sh\", \"-c\", \"echo partial output; echo 'tar: something went wrong' >&2; exit 2\"]\n\
             [[dump]]\nname = \"tick\"\nkind = \"command\"\n\
             command = [\"sh\", \"-c\", \"date +%s%N; echo x >> {}\"]\nschedule = \"every 1s\"\n\
             [[dump]]\nname = \"hang\"\nkind = \"command\"\n\
             command = [\"sh\", \"-c\", \"echo start; sleep 600 & wait\"]\ntimeout = \"1s\"\n",
            mark.display()
        ),
    );
    let e = run_fails(&env, "broken");
    assert!(e.contains("exit 2: tar: something went wrong"), "{e}");
    let v = &dump_versions(&env, "broken")[0];
    assert_eq!(v["exit_code"], 2);
    assert_eq!(v["size"], "partial output\n".len());
    // A timeout kills the whole process group (the shell's child too,
    // which holds the pipe open).
    let e = run_fails(&env, "hang");
    assert!(e.contains("timed out"), "{e}");
    let out = env.run(&["dump", "restore", "broken", "--include-failed"]);
    assert_eq!(out.stdout, b"partial output\n", "{}", show(&out));

    // The agent runs `tick` on its schedule.
    let log = env.tmp.path().join("agent.log");
    let mut agent = env
        .command()
        .args(["agent", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until("three scheduled runs", || {
        let out = env.run(&["dump", "versions", "tick", "--json"]);
        out.status.success()
            && serde_json::from_slice::<Value>(&out.stdout).unwrap()["versions"]
                .as_array()
                .unwrap()
                .len()
                >= 3
    });
    // While the agent holds the journal, `dump run` goes through it.
    let out = env.run(&["dump", "run", "broken", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["streams"][0]["exit_code"], 2, "{r}");
    let st = env.json(&["status", "--json"]);
    assert!(
        st["agent"]["dumps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["name"] == "tick" && j["last_run"]["ok"] == true),
        "{st}"
    );
    Command::new("kill")
        .args(["-INT", &agent.id().to_string()])
        .status()
        .unwrap();
    let st = agent.wait().unwrap();
    assert!(st.success(), "{}", fs::read_to_string(&log).unwrap());
    let vs = dump_versions(&env, "tick");
    assert!(vs.iter().all(|v| v["ok"] == true), "{vs:?}");
    let runs = fs::read_to_string(&mark).unwrap().lines().count();
    assert!(runs >= 3, "{runs}");
}

#[test]
fn bad_config_is_one_line_with_file_and_line() {
    let env = Env::new();
    let cfg = write_config(
        &env,
        "[[dump]]\nname = \"x\"\nkind = \"command\"\ncommand = [\"true\"]\nshedule = \"every 1h\"\n",
    );
    let out = env.run(&["dump", "list"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("{}:5:1", cfg.display())) && err.contains("shedule"),
        "{err}"
    );
    let out = env.run(&[
        "dump",
        "run",
        "nope",
        "--config",
        "/nonexistent/rewind.toml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/rewind.toml"));
}

/// Bytes of every pack file of the embedded repository.
fn pack_bytes(env: &Env) -> u64 {
    files_under(&env.tmp.path().join("data"), "pack")
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

fn table(rows: usize, changed_every: Option<usize>) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..rows {
        match changed_every {
            Some(n) if i % n == 0 => out.extend_from_slice(format!("{i}\tupdated\t0\n").as_bytes()),
            _ => out.extend_from_slice(
                format!(
                    "{i}\tcustomer {}\t{}.{:02}\n",
                    i * 7919 % 100_003,
                    i % 9973,
                    i % 97
                )
                .as_bytes(),
            ),
        }
    }
    out
}

/// One row in 100 changed, spread over the whole output: every chunk holds
/// a changed row, so dedup alone stores the whole dump again; deltas
/// against the previous run store about the changes.
#[test]
fn a_dump_with_changes_everywhere_is_stored_as_deltas() {
    let env = Env::new();
    let data = env.tmp.path().join("table.tsv");
    fs::write(&data, table(300_000, None)).unwrap();
    write_config(
        &env,
        &format!(
            "[[dump]]\nname = \"t\"\nkind = \"command\"\ncommand = [\"cat\", \"{}\"]\n",
            data.display()
        ),
    );
    env.ok(&["dump", "run", "t"]);
    let t1 = env.now();
    let first = pack_bytes(&env);
    let v1 = fs::read(&data).unwrap();
    let v2 = table(300_000, Some(100));
    assert!(v1.len() > 8 << 20, "{}", v1.len());
    fs::write(&data, &v2).unwrap();
    env.ok(&["dump", "run", "t"]);
    let t2 = env.now();
    let added = pack_bytes(&env) - first;
    assert!(
        added * 100 < v2.len() as u64 * 3,
        "the second run added {added} bytes for a {} byte dump (first run: {first})",
        v2.len()
    );
    // A third run against a third state: deltas stay one step from whole.
    let v3 = table(300_000, Some(50));
    fs::write(&data, &v3).unwrap();
    env.ok(&["dump", "run", "t"]);
    let t3 = env.now();

    for (t, want) in [(&t1, &v1), (&t2, &v2), (&t3, &v3)] {
        let out = env.run(&["dump", "restore", "t", "--at", t]);
        assert!(out.status.success(), "{}", show(&out));
        assert!(out.stdout == *want, "restore at {t} differs");
    }
    let v = env.json(&["verify", "--json"]);
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["chunks_read"].as_u64().unwrap() > 0, "{v}");
}
