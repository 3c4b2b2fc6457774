//! Part 1: first-pass ingest of the generated tree by rewind, restic and
//! borg, next to the read (`tar`) and hash (`b3sum`) limits, and by rewind
//! into an encrypted repository (what encryption costs, issue 20).
//!
//! The six commands run in turn, and the whole round is repeated
//! ([`Config::ingest_runs`] times, each tool in a fresh repository), so
//! that a disturbance on the machine hits one run of one tool, not a whole
//! column; the tables report medians.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::agent::{Setup, parse_first_pass};
use crate::datagen;
use crate::report::{Table, bytes, secs, verdict};
use crate::run::{Cmd, Measured, du_bytes, fresh_dir, measure, sync};
use crate::{Config, Session};

/// The runs of one command.
struct Runs {
    name: &'static str,
    cmd: Option<Cmd>,
    runs: Vec<Measured>,
    /// Repository size of the last run.
    repo: Option<u64>,
    /// 1-minute load average before each run.
    loads: Vec<String>,
    /// Share of the tree in the page cache when each run started.
    cached: Vec<f64>,
}

impl Runs {
    fn new(name: &'static str) -> Runs {
        Runs {
            name,
            cmd: None,
            runs: Vec::new(),
            repo: None,
            loads: Vec::new(),
            cached: Vec::new(),
        }
    }

    fn median(&self, f: impl Fn(&Measured) -> f64) -> f64 {
        crate::report::median(&self.runs.iter().map(f).collect::<Vec<_>>())
    }

    fn wall(&self) -> f64 {
        self.median(|m| m.wall)
    }

    fn cpu(&self) -> f64 {
        self.median(Measured::cpu)
    }
}

/// The password of the encrypted rewind runs.
const ENCRYPTED_PASSWORD: &str = "rewind-bench ingest password";

fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Bytes of the files below `tree` that are in the page cache (`fincore`).
fn resident(tree: &Path) -> Result<u64> {
    let out = Cmd::shell(&format!(
        "find {} -type f -print0 | xargs -0 fincore -b -n -o RES",
        q(tree)
    ))
    .run_quiet()?;
    Ok(out
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .sum())
}

/// Read the whole tree (untimed) so that it is in the page cache. This
/// machine may page out file data idle for about a minute (DAMON
/// `pageout`), so "warm once at the start" is not enough.
fn warm(tree: &Path) -> Result<()> {
    Cmd::shell(&format!("tar cf - -C {} . | cat >/dev/null", q(tree))).run_quiet()?;
    Ok(())
}

/// Time `cmd` once into `r`: sync, warm the cache, check what is cached,
/// run, sync; repository size after.
fn timed(
    r: &mut Runs,
    cmd: Cmd,
    repo: Option<&Path>,
    logs: &Path,
    (tree, tree_bytes): (&Path, u64),
) -> Result<Measured> {
    sync()?;
    warm(tree)?;
    r.cached
        .push(resident(tree).unwrap_or(0) as f64 / tree_bytes as f64);
    let round = r.runs.len() + 1;
    eprintln!("rewind-bench: {} (run {round}): {}", r.name, cmd.display());
    let short = r.name.split_whitespace().next().unwrap_or(r.name);
    r.loads.push(load());
    let m = measure(&cmd, &logs.join(format!("{short}-{round}.log")))?;
    sync()?;
    let size = repo.map(du_bytes).transpose()?;
    eprintln!(
        "rewind-bench:   {:.1} s wall, {:.1} s CPU, {} peak RSS{}",
        m.wall,
        m.cpu(),
        bytes(m.max_rss_kib * 1024),
        size.map(|s| format!(", repository {}", bytes(s)))
            .unwrap_or_default()
    );
    r.runs.push(m.clone());
    r.repo = size.or(r.repo);
    r.cmd = Some(cmd);
    Ok(m)
}

/// Run the ingest part; returns its Markdown section.
pub fn run(cfg: &Config, session: &mut Session) -> Result<String> {
    let tree = cfg.tree()?;
    let (dirs, files) = datagen::plan_tree(cfg.seed, cfg.scale);
    let sum = datagen::summarize(&dirs, &files);
    let base = fresh_dir(&cfg.work.join("ingest"))?;
    let logs = fresh_dir(&base.join("logs"))?;

    // fincore counts whole pages.
    let paged: u64 = files.iter().map(|f| f.size.div_ceil(4096) * 4096).sum();
    let tb = (tree.as_path(), paged);

    let mut tar = Runs::new("tar (read limit)");
    let mut b3 = Runs::new("b3sum (hash limit)");
    let mut rw = Runs::new("rewind watch --once");
    let mut re = Runs::new("rewind watch --once (encrypted)");
    let mut rs = Runs::new("restic backup");
    let mut bg = Runs::new("borg create");
    let mut setup = None;
    let mut first_pass = String::new();
    for round in 0..cfg.ingest_runs {
        timed(
            &mut tar,
            Cmd::shell(&format!("tar cf - -C {} . | cat >/dev/null", q(&tree))),
            None,
            &logs,
            tb,
        )?;
        timed(
            &mut b3,
            Cmd::shell(&format!(
                "find {} -type f -print0 | xargs -0 -n 2000 -P 2 b3sum >/dev/null",
                q(&tree)
            )),
            None,
            &logs,
            tb,
        )?;

        // rewind, in a fresh repository and state directory each round;
        // the last one stays for the idle part.
        let s = Setup::fresh(&cfg.rewind, &base.join("rewind"))?;
        let m = timed(
            &mut rw,
            s.cmd(["watch".as_ref(), tree.as_os_str(), "--once".as_ref()]),
            Some(&s.repo),
            &logs,
            tb,
        )?;
        first_pass = m
            .stderr_tail
            .lines()
            .find(|l| l.contains("first pass complete"))
            .unwrap_or("")
            .to_string();
        setup = Some(s);

        // The same into an encrypted repository (issue 20): what sealing
        // records and keyed chunk ids cost. One password derivation
        // (argon2id, default parameters) is part of the command's time.
        let e = Setup::fresh(&cfg.rewind, &base.join("rewind-encrypted"))?;
        e.cmd(["init", "--encrypt"])
            .env("REWIND_PASSWORD", ENCRYPTED_PASSWORD)
            .run_quiet()?;
        timed(
            &mut re,
            e.cmd(["watch".as_ref(), tree.as_os_str(), "--once".as_ref()])
                .env("REWIND_PASSWORD", ENCRYPTED_PASSWORD),
            Some(&e.repo),
            &logs,
            tb,
        )?;

        let rdir = fresh_dir(&base.join("restic"))?;
        let restic = |args: &[&str]| crate::run::restic(&rdir, args);
        restic(&["init"]).run_quiet()?;
        timed(
            &mut rs,
            restic(&["backup"]).arg(&tree),
            Some(&rdir.join("repo")),
            &logs,
            tb,
        )?;

        let bdir = fresh_dir(&base.join("borg"))?;
        let borg = |args: &[&str]| {
            Cmd::new("borg")
                .env("BORG_BASE_DIR", bdir.join("base"))
                .env("BORG_PASSPHRASE", "")
                .env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes")
                .args(args.iter().copied())
        };
        borg(&["init", "-e", "none"])
            .arg(bdir.join("repo"))
            .run_quiet()?;
        timed(
            &mut bg,
            borg(&["create", "--compression", "zstd,3"])
                .arg(format!("{}::first", bdir.join("repo").display()))
                .arg(&tree),
            Some(&bdir.join("repo")),
            &logs,
            tb,
        )?;
        eprintln!(
            "rewind-bench: round {} of {} done",
            round + 1,
            cfg.ingest_runs
        );
    }
    let setup = setup.expect("at least one run");
    let journal_bytes = du_bytes(&setup.state)?;
    let status = setup.status()?;
    let rw_versions = status["repository"]["versions"].as_u64().unwrap_or(0);
    let rw_chunks = status["repository"]["chunks"].as_u64().unwrap_or(0);
    let rw_packs = status["repository"]["packs"].as_u64().unwrap_or(0);
    let rw_index = du_bytes(&setup.repo.join("index")).unwrap_or(0);
    let borg_index: u64 = std::fs::read_dir(base.join("borg/repo"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("index."))
        .filter_map(|e| e.metadata().ok().map(|m| m.len()))
        .sum();

    // Report.
    let all = [&tar, &b3, &rw, &re, &rs, &bg];
    let mb = sum.bytes as f64 / (1024.0 * 1024.0);
    let mut t = Table::new(&[
        "run",
        "wall (median)",
        "MiB/s",
        "user",
        "sys",
        "CPU (user+sys)",
        "peak RSS",
        "repository (`du -sb`)",
    ]);
    for r in all {
        let max_rss = r.runs.iter().map(|m| m.max_rss_kib).max().unwrap_or(0);
        t.row(&[
            format!("`{}`", r.name),
            secs(r.wall()),
            format!("{:.0}", mb / r.wall()),
            secs(r.median(|m| m.user)),
            secs(r.median(|m| m.sys)),
            secs(r.cpu()),
            bytes(max_rss * 1024),
            r.repo.map(bytes).unwrap_or_else(|| "—".into()),
        ]);
    }
    let rw_repo = rw.repo.unwrap_or(0) as f64;
    let bg_repo = bg.repo.unwrap_or(0) as f64;
    let rs_repo = rs.repo.unwrap_or(0) as f64;
    let mut r = Table::new(&["ratio (medians)", "value", "target", "verdict"]);
    let restic_x = rs.wall() / rw.wall();
    let borg_x = bg.wall() / rw.wall();
    let size_x = rw_repo / bg_repo;
    let info = |r: &mut Table, name: &str, v: String| {
        r.row(&[name.to_string(), v, "—".into(), "".into()]);
    };
    r.row(&[
        "restic wall / rewind wall".to_string(),
        format!("{restic_x:.2}×"),
        "≥ 2×".into(),
        verdict(restic_x >= 2.0).into(),
    ]);
    r.row(&[
        "borg wall / rewind wall".to_string(),
        format!("{borg_x:.2}×"),
        "> 1×".into(),
        verdict(borg_x > 1.0).into(),
    ]);
    let enc_x = re.wall() / rw.wall() - 1.0;
    r.row(&[
        "encrypted rewind wall / plain rewind wall − 1".to_string(),
        format!(
            "{:+.1} % (CPU {:+.1} %)",
            enc_x * 100.0,
            (re.cpu() / rw.cpu() - 1.0) * 100.0
        ),
        "< 10 %".into(),
        verdict(enc_x < 0.10).into(),
    ]);
    r.row(&[
        "rewind repository / borg repository".to_string(),
        format!("{size_x:.3}"),
        "≤ 1".into(),
        verdict(size_x <= 1.0).into(),
    ]);
    info(
        &mut r,
        "rewind repository / restic repository",
        format!("{:.3}", rw_repo / rs_repo),
    );
    info(
        &mut r,
        "restic CPU / rewind CPU",
        format!("{:.2}×", rs.cpu() / rw.cpu()),
    );
    info(
        &mut r,
        "borg CPU / rewind CPU",
        format!("{:.2}×", bg.cpu() / rw.cpu()),
    );
    info(
        &mut r,
        "rewind wall / tar wall (read limit)",
        format!("{:.2}×", rw.wall() / tar.wall()),
    );
    info(
        &mut r,
        "rewind wall / b3sum wall (hash limit)",
        format!("{:.2}×", rw.wall() / b3.wall()),
    );
    info(
        &mut r,
        "rewind CPU / b3sum CPU",
        format!("{:.2}×", rw.cpu() / b3.cpu()),
    );

    let mut each = Table::new(&[
        "run",
        "wall of each run",
        "CPU of each run",
        "tree cached at start",
        "load average before",
    ]);
    for r in all {
        let list = |f: &dyn Fn(&Measured) -> f64| {
            r.runs
                .iter()
                .map(|m| format!("{:.1}", f(m)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        each.row(&[
            format!("`{}`", r.name),
            list(&|m| m.wall),
            list(&|m| m.cpu()),
            r.cached
                .iter()
                .map(|c| format!("{:.0} %", 100.0 * c))
                .collect::<Vec<_>>()
                .join(", "),
            r.loads.join(", "),
        ]);
    }

    let mut s = String::new();
    let _ = writeln!(
        s,
        "Tree: {} files in {} directories, {} in all: {} text-like files ({}), {} random files ({}), \
         {} exact copies of other files ({}), and one {} file (first half text-like, second half random). \
         Before each timed run: `sync`, then the tree is read once with `tar` (untimed) so that the \
         page cache is warm (the share of the tree cached is checked with `fincore`); `sync` after each \
         run. {} rounds of the six commands in turn; medians. The encrypted repository is made by \
         `rewind init --encrypt` (untimed) with `REWIND_PASSWORD` set; its run includes opening the \
         key (one argon2id, 64 MiB).\n",
        sum.files,
        sum.dirs,
        bytes(sum.bytes),
        sum.text.0,
        bytes(sum.text.1),
        sum.random.0,
        bytes(sum.random.1),
        sum.copies.0,
        bytes(sum.copies.1),
        bytes(sum.big),
        cfg.ingest_runs,
    );
    s.push_str(&t.render());
    s.push('\n');
    s.push_str(&r.render());
    s.push('\n');
    s.push_str(&each.render());
    let _ = writeln!(
        s,
        "\nrewind: {rw_versions} versions, {rw_chunks} chunks in {rw_packs} packs; index files {} \
         (borg's index {}); its journal (`REWIND_STATE_DIR`, left on the client after the upload) takes {}. \
         Last run: `{}`\n",
        bytes(rw_index),
        bytes(borg_index),
        bytes(journal_bytes),
        first_pass.trim_start_matches("rewind: ")
    );
    if let (Some(_), _, Some(fp)) = parse_first_pass(&first_pass)
        && let Some(last) = rw.runs.last()
    {
        let _ = writeln!(
            s,
            "In that run the first pass (scan, capture, journal) took {fp:.1} s of {:.1} s; the rest is \
             draining the journal into the repository and shutdown.\n",
            last.wall
        );
    }
    let w = cfg.work.display().to_string();
    let _ = writeln!(
        s,
        "Commands (`$W` = {w}; restic with `RESTIC_PASSWORD` set and the repository made by `restic init`, \
         borg's by `borg init -e none`, neither timed; `$W/bin/rewind` is a copy of `target/release/rewind`):\n\n```sh"
    );
    for r in all {
        if let Some(c) = &r.cmd {
            let _ = writeln!(s, "{}", c.display().replace(&w, "$W"));
        }
    }
    let _ = writeln!(s, "```");
    session.ingested = Some(setup);
    Ok(s)
}
