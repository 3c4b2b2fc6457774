//! Part 6: streaming database dumps (issue 5). A throwaway PostgreSQL
//! server with one ~1 GiB (× scale) database:
//!
//! - throughput: `pg_dump > /dev/null`, `pg_dump > file` (+ `sync`),
//!   `rewind dump run`, `pg_dump | restic backup --stdin`,
//!   `pg_dump | borg create … -`, each on a fresh repository;
//! - a second and third dump after changing 1 % of the rows (first the
//!   newest 1 %, then 1 % spread evenly over the table): bytes each tool's
//!   repository grows by;
//! - in process, on the same dumps: new bytes per chunk-size bound, plain
//!   against custom format (`--compress=0`);
//! - memory: rewind's peak RSS on a tiny dump and on a 5 GiB (× scale)
//!   incompressible stream.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rewind_core::{ChunkId, Chunker, ChunkerParams, DEFAULT_CHUNKER};

use crate::Config;
use crate::agent::Setup;
use crate::report::{Table, bytes, secs, verdict};
use crate::run::{Cmd, Measured, du_bytes, fresh_dir, measure, sync};

const KIB: u32 = 1024;

/// A throwaway PostgreSQL cluster (trust authentication, on a free port).
struct Pg {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
}

fn as_postgres(program: &Path) -> Cmd {
    if rustix::process::getuid().is_root() {
        Cmd::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(program)
    } else {
        Cmd::new(program)
    }
}

impl Pg {
    fn start(dir: &Path) -> Result<Pg> {
        let bin = fs::read_dir("/usr/lib/postgresql")
            .context("PostgreSQL is not installed (apt-get install postgresql)")?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .max()
            .context("no /usr/lib/postgresql/*/bin/initdb")?;
        fresh_dir(dir)?;
        if rustix::process::getuid().is_root() {
            Cmd::new("chown").arg("postgres").arg(dir).run_quiet()?;
        }
        let data = dir.join("data");
        as_postgres(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .run_quiet()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        as_postgres(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c shared_buffers=512MB",
                dir.display()
            ))
            .arg("-l")
            .arg(dir.join("log"))
            .args(["-w", "start"])
            .run_quiet()?;
        Ok(Pg { bin, data, port })
    }

    fn psql(&self, db: &str, sql: &str) -> Result<String> {
        Cmd::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .run_quiet()
    }

    /// `pg_dump … bench` as a shell fragment.
    fn dump(&self, extra: &str) -> String {
        format!(
            "{} --no-password -h 127.0.0.1 -p {} -U postgres {extra} bench",
            self.bin.join("pg_dump").display(),
            self.port
        )
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"])
            .run_quiet();
    }
}

/// A throwaway MariaDB server (root over its socket).
struct Maria {
    dir: PathBuf,
    child: std::process::Child,
}

impl Maria {
    fn start(dir: &Path) -> Result<Maria> {
        fresh_dir(dir)?;
        let root = rustix::process::getuid().is_root();
        let mut user = Vec::new();
        if root {
            Cmd::new("chown").arg("mysql:mysql").arg(dir).run_quiet()?;
            user.push("--user=mysql");
        }
        Cmd::new("mariadb-install-db")
            .args(user.iter().copied())
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .args(["--auth-root-authentication-method=socket", "--skip-test-db"])
            .run_quiet()?;
        let child = Cmd::new("mariadbd")
            .arg("--no-defaults")
            .args(user.iter().copied())
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--socket={}", dir.join("sock").display()))
            .args([
                "--skip-networking",
                "--innodb-buffer-pool-size=512M",
                "--skip-log-bin",
            ])
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--log-error={}", dir.join("err.log").display()))
            .command()
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("cannot start mariadbd (apt-get install mariadb-server)")?;
        let m = Maria {
            dir: dir.to_path_buf(),
            child,
        };
        let start = std::time::Instant::now();
        while m.sql("", "SELECT 1").is_err() {
            if start.elapsed().as_secs() > 60 {
                bail!("mariadbd did not start");
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        Ok(m)
    }

    fn client(&self, program: &str) -> Cmd {
        Cmd::new(program)
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.dir.join("sock").display()))
            .args(["-u", "root"])
    }

    fn sql(&self, db: &str, sql: &str) -> Result<String> {
        let mut c = self.client("mariadb").args(["-N", "-B", "-e", sql]);
        if !db.is_empty() {
            c = c.arg(db);
        }
        c.run_quiet()
    }
}

impl Drop for Maria {
    fn drop(&mut self) {
        let _ = self.client("mariadb-admin").arg("shutdown").run_quiet();
        let _ = self.child.wait();
    }
}

/// mysqldump with and without `--skip-extended-insert`: new bytes after
/// the same two changes, default chunk bounds.
fn mysql_part(cfg: &Config, base: &Path) -> Result<String> {
    let m = Maria::start(&base.join("maria"))?;
    let rows = ((2_000_000.0 * cfg.scale) as u64).max(10_000);
    m.sql("", "CREATE DATABASE bench")?;
    m.sql(
        "bench",
        &format!(
            "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer INT, created DATETIME, status VARCHAR(16),              amount DECIMAL(12,2), note VARCHAR(80)) ENGINE=InnoDB;
             INSERT INTO orders SELECT seq, seq % 100000, '2020-01-01' + INTERVAL seq * 7 SECOND,              ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'returned'), (seq % 100000) / 100.0,              CONCAT(MD5(seq), MD5(seq * 7)) FROM seq_1_to_{rows};"
        ),
    )?;
    let files = fresh_dir(&base.join("maria-files"))?;
    let variants = [
        ("default (extended INSERTs)", "--single-transaction"),
        (
            "`--skip-extended-insert` (rewind's default)",
            "--single-transaction --skip-extended-insert",
        ),
    ];
    let dump = |opts: &str, out: &Path| -> Result<()> {
        let c = m.client("mariadb-dump");
        Cmd::shell(&format!("{} {opts} bench > {}", c.display(), out.display()))
            .run_quiet()
            .map(|_| ())
    };
    let f = |v: usize, round: usize| files.join(format!("v{v}-{round}.sql"));
    for (v, (_, opts)) in variants.iter().enumerate() {
        dump(opts, &f(v, 1))?;
    }
    let changes = [
        format!(
            "UPDATE orders SET status = 'changed', amount = amount + 1 WHERE id > {}",
            rows - rows / 100
        ),
        "UPDATE orders SET status = 'changed2', amount = amount + 2 WHERE id % 100 = 50"
            .to_string(),
        // Rows in the middle that grow: every later multi-row INSERT of
        // the table is split at a different row.
        format!(
            "UPDATE orders SET note = CONCAT(note, '+') WHERE id > {} AND id <= {}",
            rows / 2,
            rows / 2 + rows / 100
        ),
    ];
    for (i, sql) in changes.iter().enumerate() {
        m.sql("bench", sql)?;
        for (v, (_, opts)) in variants.iter().enumerate() {
            dump(opts, &f(v, i + 2))?;
        }
    }
    let mut t = Table::new(&[
        "mysqldump",
        "dump size",
        "new after newest 1 %",
        "new after spread 1 %",
        "new after middle 1 % grow",
    ]);
    for (v, (name, _)) in variants.iter().enumerate() {
        let (a, _) = new_bytes(DEFAULT_CHUNKER, &f(v, 1), &f(v, 2))?;
        let (b, _) = new_bytes(DEFAULT_CHUNKER, &f(v, 2), &f(v, 3))?;
        let (c, _) = new_bytes(DEFAULT_CHUNKER, &f(v, 3), &f(v, 4))?;
        let size = fs::metadata(f(v, 4))?.len();
        t.row(&[
            name.to_string(),
            bytes(size),
            format!("{} ({})", bytes(a), pct(a, size)),
            format!("{} ({})", bytes(b), pct(b, size)),
            format!("{} ({})", bytes(c), pct(c, size)),
        ]);
    }
    let _ = fs::remove_dir_all(&files);
    Ok(format!(
        "MariaDB {} (`mariadb-dump`), one InnoDB table of {rows} rows, the same two changes and a third (1 % of the rows in the middle of the table grow by one byte), default chunk bounds \
         (uncompressed bytes of chunks the previous dump does not have):\n\n{}",
        m.sql("", "SELECT VERSION()")?.trim(),
        t.render()
    ))
}

/// New bytes (uncompressed) in `b` that `a` does not hold, for `p`.
fn new_bytes(p: ChunkerParams, a: &Path, b: &Path) -> Result<(u64, u64)> {
    let c = Chunker::new(p);
    let mut known = HashSet::new();
    let mut buf = Vec::new();
    c.for_each(fs::File::open(a)?, &mut buf, |d| {
        known.insert(ChunkId::of(d));
        Ok(())
    })?;
    let (mut new, mut n) = (0u64, 0u64);
    c.for_each(fs::File::open(b)?, &mut buf, |d| {
        n += 1;
        if known.insert(ChunkId::of(d)) {
            new += d.len() as u64;
        }
        Ok(())
    })?;
    Ok((new, n))
}

fn pct(part: u64, whole: u64) -> String {
    format!("{:.2} %", 100.0 * part as f64 / whole.max(1) as f64)
}

struct Tool {
    name: &'static str,
    /// Repository directory (for `du`).
    repo: PathBuf,
    /// The command for run `i` (1-based).
    cmd: Box<dyn Fn(usize) -> Cmd>,
}

/// Run the part; returns its Markdown section.
pub fn run(cfg: &Config) -> Result<String> {
    let base = fresh_dir(&cfg.work.join("dumps"))?;
    let pg = Pg::start(&base.join("pg"))?;
    // ~135 bytes a row in the plain dump: 8 M rows make ~1 GiB.
    let rows = ((8_000_000.0 * cfg.scale) as u64).max(10_000);
    eprintln!("rewind-bench: dumps: generating {rows} rows");
    pg.psql("postgres", "CREATE DATABASE bench")?;
    pg.psql(
        "bench",
        &format!(
            "CREATE TABLE orders (id bigint PRIMARY KEY, customer int, created timestamptz, \
             status text, amount numeric(12,2), note text);
             INSERT INTO orders SELECT g, g % 100000, timestamptz '2020-01-01 00:00:00+00' + g * interval '7 seconds', \
             (ARRAY['new','paid','shipped','returned'])[1 + g % 4], (g % 100000) / 100.0, \
             md5(g::text) || md5((g * 7)::text) FROM generate_series(1, {rows}) g;"
        ),
    )?;
    pg.psql("bench", "VACUUM ANALYZE orders")?;
    sync()?;

    let files = fresh_dir(&base.join("files"))?;
    let logs = fresh_dir(&base.join("logs"))?;
    let plain = |i: usize| files.join(format!("plain-{i}.sql"));
    let custom = |i: usize| files.join(format!("custom-{i}.dump"));

    // rewind: a config with the job, a fresh repository.
    let rw = Setup::fresh(&cfg.rewind, &base.join("rewind"))?;
    let conf = base.join("rewind/config.toml");
    fs::write(
        &conf,
        format!(
            "[[dump]]\nname = \"bench\"\nkind = \"postgres\"\ndatabase = \"bench\"\nhost = \"127.0.0.1\"\n\
             port = {}\nuser = \"postgres\"\nprogram = \"{}\"\n\
             [[dump]]\nname = \"stream\"\nkind = \"command\"\ncommand = [\"head\", \"-c\", \"{}\", \"/dev/urandom\"]\n\
             [[dump]]\nname = \"tiny\"\nkind = \"command\"\ncommand = [\"echo\", \"tiny\"]\n",
            pg.port,
            pg.bin.join("pg_dump").display(),
            ((5u64 << 30) as f64 * cfg.scale) as u64
        ),
    )?;
    let restic_repo = base.join("restic/repo");
    let restic_cache = base.join("restic/cache");
    let restic_env = move |c: Cmd| {
        c.env("RESTIC_PASSWORD", "bench")
            .env("RESTIC_CACHE_DIR", &restic_cache)
    };
    restic_env(Cmd::new("restic").arg("-r").arg(&restic_repo).arg("init")).run_quiet()?;
    let borg_repo = base.join("borg/repo");
    fs::create_dir_all(base.join("borg"))?;
    let borg_base = base.join("borg/base");
    let borg_env = move |c: Cmd| {
        c.env("BORG_BASE_DIR", &borg_base)
            .env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes")
    };
    borg_env(
        Cmd::new("borg")
            .args(["init", "-e", "none"])
            .arg(&borg_repo),
    )
    .run_quiet()?;

    let dump = pg.dump("");
    let tools: Vec<Tool> = vec![
        Tool {
            name: "rewind",
            repo: rw.repo.clone(),
            cmd: Box::new({
                let rw = rw.clone();
                let conf = conf.clone();
                move |_| rw.cmd(["dump", "run", "bench", "--config"]).arg(&conf)
            }),
        },
        Tool {
            name: "restic",
            repo: restic_repo.clone(),
            cmd: Box::new({
                let dump = dump.clone();
                let repo = restic_repo.clone();
                let env = restic_env.clone();
                move |_| {
                    env(Cmd::shell(&format!(
                        "{dump} | restic -q -r {} backup --stdin --stdin-filename bench.sql",
                        repo.display()
                    )))
                }
            }),
        },
        Tool {
            name: "borg",
            repo: borg_repo.clone(),
            cmd: Box::new({
                let dump = dump.clone();
                let repo = borg_repo.clone();
                let env = borg_env.clone();
                move |i| {
                    env(Cmd::shell(&format!(
                        "{dump} | borg create {}::dump-{i} -",
                        repo.display()
                    )))
                }
            }),
        },
    ];

    // Round 1: throughput.
    let mut walls: Vec<(String, Measured, Cmd)> = Vec::new();
    let devnull = Cmd::shell(&format!("{dump} > /dev/null"));
    walls.push((
        "`pg_dump > /dev/null`".into(),
        measure(&devnull, &logs.join("devnull.log"))?,
        devnull,
    ));
    let tofile = Cmd::shell(&format!("{dump} > {p} && sync {p}", p = plain(1).display()));
    walls.push((
        "`pg_dump > file` + `sync file`".into(),
        measure(&tofile, &logs.join("file.log"))?,
        tofile,
    ));
    let dump_size = fs::metadata(plain(1))?.len();
    let mut sizes: Vec<Vec<u64>> = vec![Vec::new(); tools.len()];
    for (t, s) in tools.iter().zip(sizes.iter_mut()) {
        sync()?;
        let c = (t.cmd)(1);
        let m = measure(&c, &logs.join(format!("{}-1.log", t.name)))?;
        s.push(du_bytes(&t.repo)?);
        walls.push((format!("{} (first dump)", t.name), m, c));
    }
    Cmd::shell(&format!(
        "{} > {}",
        pg.dump("--format=custom --compress=0"),
        custom(1).display()
    ))
    .run_quiet()?;
    let after_first = rewind_core::Timestamp::now().to_string();
    let mut later_walls: Vec<Vec<f64>> = vec![Vec::new(); tools.len()];

    // Round 2: the newest 1 % of rows change. Round 3: 1 % spread evenly.
    let changes = [
        (
            "newest 1 % of rows updated",
            format!(
                "UPDATE orders SET status = 'changed', amount = amount + 1 WHERE id > {}",
                rows - rows / 100
            ),
        ),
        (
            "1 % of rows updated, spread evenly (every 100th)",
            "UPDATE orders SET status = 'changed2', amount = amount + 2 WHERE id % 100 = 50"
                .to_string(),
        ),
    ];
    for (i, (_, sql)) in changes.iter().enumerate() {
        let round = i + 2;
        pg.psql("bench", sql)?;
        pg.psql("bench", "VACUUM orders")?;
        Cmd::shell(&format!("{dump} > {}", plain(round).display())).run_quiet()?;
        Cmd::shell(&format!(
            "{} > {}",
            pg.dump("--format=custom --compress=0"),
            custom(round).display()
        ))
        .run_quiet()?;
        for ((t, s), w) in tools
            .iter()
            .zip(sizes.iter_mut())
            .zip(later_walls.iter_mut())
        {
            let c = (t.cmd)(round);
            w.push(measure(&c, &logs.join(format!("{}-{round}.log", t.name)))?.wall);
            s.push(du_bytes(&t.repo)?);
        }
    }
    // Restores: the first dump (whole chunks) and the last (mostly deltas).
    let restore_first = rw
        .cmd(["dump", "restore", "bench", "--at", &after_first, "--config"])
        .arg(&conf);
    let m_restore_first = measure(&restore_first, &logs.join("restore-1.log"))?;
    let restore_last = rw.cmd(["dump", "restore", "bench", "--config"]).arg(&conf);
    let m_restore_last = measure(&restore_last, &logs.join("restore-3.log"))?;

    // Memory: a tiny dump, then a large incompressible stream.
    let tiny = rw.cmd(["dump", "run", "tiny", "--config"]).arg(&conf);
    let m_tiny = measure(&tiny, &logs.join("tiny.log"))?;
    let big = rw.cmd(["dump", "run", "stream", "--config"]).arg(&conf);
    let m_big = measure(&big, &logs.join("stream.log"))?;
    let big_bytes = ((5u64 << 30) as f64 * cfg.scale) as u64;

    // In process: chunk bounds and formats.
    let bounds = [
        ChunkerParams {
            min: 16 * KIB,
            avg: 64 * KIB,
            max: 256 * KIB,
        },
        ChunkerParams {
            min: 32 * KIB,
            avg: 128 * KIB,
            max: 512 * KIB,
        },
        DEFAULT_CHUNKER,
        ChunkerParams {
            min: 256 * KIB,
            avg: 1024 * KIB,
            max: 4096 * KIB,
        },
    ];
    let mut chunk_table = Table::new(&[
        "format, bounds (min/avg/max)",
        "dump size",
        "new after newest 1 %",
        "new after spread 1 %",
    ]);
    for (fmt, f) in [
        ("plain", &plain as &dyn Fn(usize) -> PathBuf),
        ("custom --compress=0", &custom),
    ] {
        for p in bounds {
            let (a, _) = new_bytes(p, &f(1), &f(2))?;
            let (b, _) = new_bytes(p, &f(2), &f(3))?;
            let size = fs::metadata(f(3))?.len();
            let label = format!(
                "{fmt}, {}K/{}K/{}K{}",
                p.min / KIB,
                p.avg / KIB,
                p.max / KIB,
                if p == DEFAULT_CHUNKER {
                    " (default)"
                } else {
                    ""
                }
            );
            chunk_table.row(&[
                label,
                bytes(size),
                format!("{} ({})", bytes(a), pct(a, size)),
                format!("{} ({})", bytes(b), pct(b, size)),
            ]);
        }
    }

    // Report.
    let mut s = String::new();
    let _ = writeln!(
        s,
        "A PostgreSQL {} database (one table, {rows} rows; plain dump {}), on a throwaway server on this machine. \
         Each tool dumps into a fresh repository (rewind: `rewind dump run`, in process, local repository; \
         restic 0.14 and borg 1.2.4 read `pg_dump`'s output on stdin; borg unencrypted with its default lz4, \
         restic with its default compression). One run each: the numbers move by several percent between runs \
         on this shared 2-core machine.\n",
        pg.psql("postgres", "SHOW server_version")?.trim(),
        bytes(dump_size)
    );
    let bare = walls[1].1.wall;
    let mut t = Table::new(&[
        "command",
        "wall",
        "MB/s (plain dump)",
        "CPU",
        "peak RSS",
        "vs `pg_dump > file`",
    ]);
    for (name, m, _) in &walls {
        t.row(&[
            name.clone(),
            secs(m.wall),
            format!("{:.0}", dump_size as f64 / m.wall / 1e6),
            secs(m.cpu()),
            bytes(m.max_rss_kib * 1024),
            format!("{:+.1} %", 100.0 * (m.wall / bare - 1.0)),
        ]);
    }
    s.push_str(&t.render());
    let rewind_wall = walls
        .iter()
        .find(|w| w.0.starts_with("rewind"))
        .map(|w| w.1.wall)
        .unwrap_or(0.0);
    let overhead = rewind_wall / bare - 1.0;
    let _ = writeln!(
        s,
        "\nTarget: rewind's overhead over the bare dump (to a file, synced) < 15 %: {} ({:+.1} %; over `pg_dump > /dev/null`: {:+.1} %)\n",
        verdict(overhead < 0.15),
        100.0 * overhead,
        100.0 * (rewind_wall / walls[0].1.wall - 1.0)
    );
    let mut g = Table::new(&[
        "tool",
        "repository after dump 1",
        "added by dump 2 (newest 1 %)",
        "added by dump 3 (spread 1 %)",
        "wall of dumps 2, 3",
    ]);
    let mut worst_rewind = (0u64, 0u64);
    for ((tl, sz), w) in tools.iter().zip(&sizes).zip(&later_walls) {
        let (a, b) = (sz[1].saturating_sub(sz[0]), sz[2].saturating_sub(sz[1]));
        if tl.name == "rewind" {
            worst_rewind = (a, b);
        }
        g.row(&[
            tl.name.to_string(),
            bytes(sz[0]),
            format!("{} ({} of the dump)", bytes(a), pct(a, dump_size)),
            format!("{} ({} of the dump)", bytes(b), pct(b, dump_size)),
            w.iter().map(|&x| secs(x)).collect::<Vec<_>>().join(", "),
        ]);
    }
    s.push_str(&g.render());
    let _ = writeln!(
        s,
        "\nTarget: bytes added by a second dump after changing 1 % of the rows < 5 % of the dump: \
         newest 1 %: {}; spread 1 %: {}\n",
        verdict((worst_rewind.0 as f64) < 0.05 * dump_size as f64),
        verdict((worst_rewind.1 as f64) < 0.05 * dump_size as f64),
    );
    let _ = writeln!(
        s,
        "rewind stores the new chunks of dumps 2 and 3 as deltas against the chunk at the same \
         place in the dump before (docs/decisions.md, \"Delta chunks\"). Restore to /dev/null \
         (`rewind dump restore bench`): dump 1 (whole chunks) {}, dump 3 (deltas, each read \
         with its base) {}.\n",
        secs(m_restore_first.wall),
        secs(m_restore_last.wall),
    );
    let _ = writeln!(
        s,
        "Chunk bounds and dump format (in process, the same dumps; uncompressed bytes of chunks the previous dump does not have):\n"
    );
    s.push_str(&chunk_table.render());
    match mysql_part(cfg, &base) {
        Ok(t) => {
            s.push('\n');
            s.push_str(&t);
        }
        Err(e) => {
            let _ = writeln!(s, "\nMariaDB comparison not run: {e}");
        }
    }
    let growth = m_big.max_rss_kib.saturating_sub(m_tiny.max_rss_kib) * 1024;
    let _ = writeln!(
        s,
        "\nMemory: `rewind dump run` peak RSS {} for a tiny dump, {} for a {} incompressible stream \
         (`head -c N /dev/urandom`, {:.0} MB/s): growth {}. Target < 64 MiB: {}\n",
        bytes(m_tiny.max_rss_kib * 1024),
        bytes(m_big.max_rss_kib * 1024),
        bytes(big_bytes),
        big_bytes as f64 / m_big.wall / 1e6,
        bytes(growth),
        verdict(growth < 64 << 20)
    );
    let _ = writeln!(s, "Commands:\n\n```sh");
    for (_, _, c) in &walls {
        let _ = writeln!(
            s,
            "{}",
            c.display().replace(&cfg.work.display().to_string(), "$W")
        );
    }
    let _ = writeln!(
        s,
        "{}",
        big.display().replace(&cfg.work.display().to_string(), "$W")
    );
    let _ = writeln!(s, "```");
    if growth >= 64 << 20 && cfg.scale >= 1.0 {
        eprintln!("rewind-bench: dumps: memory target not met");
    }
    drop(pg);
    // Dumps, repositories and the database take gigabytes (the 5 GiB
    // stream among them); keep the logs only.
    let _ = fs::remove_dir_all(&files);
    for d in ["rewind", "restic", "borg", "pg", "maria"] {
        let _ = fs::remove_dir_all(base.join(d));
    }
    if !base.exists() {
        bail!("work dir vanished");
    }
    Ok(s)
}
