//! Part 12: queries on a long history (issue 19): a repository holding
//! `REWIND_BENCH_HISTORY_VERSIONS` versions (default 10,000,000 at scale
//! 1), made the way the retention part makes its year (synthetic times
//! through the repository API: the ingest tree's ~50,000 files created in
//! the first month and changed three more times, ten hot files changing
//! every second during one session a day), then the real binary asked
//! what a person asks, each under `/usr/bin/time`, three rounds, medians:
//!
//! - `rewind versions --json FILE` of a file of the tree (4 versions): the
//!   cost of opening the repository for a query, and the issue's
//!   "`versions PATH` under 50 ms";
//! - `rewind versions --json HOT` of a hot file (about a tenth of the
//!   history): a query whose answer is large;
//! - `rewind ls --json --at T ROOT` at the middle of the year, and at the
//!   end: the whole ~50,000-file folder at a point in time ("under 1 s").
//!
//! Peak RSS of each shows whether a query's memory follows its answer or
//! the history. With `REWIND_BENCH_HISTORY_BASELINE=/path/to/rewind` the
//! same commands are run with that binary too, in the same rounds, so two
//! builds are compared on one repository in one run. No other tool is
//! measured: restic and borg keep one snapshot per backup, and ten million
//! of them is not a history they are built for.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::Config;
use crate::agent::Setup;
use crate::datagen::plan_tree;
use crate::report::{Table, bytes, ms, verdict};
use crate::retention::{DAY, ROOT, build_year, claim_client, setup_for, utc};
use crate::run::{Measured, du_bytes, fresh_dir, measure};

/// Versions at scale 1 (the "10 million versions").
const VERSIONS: f64 = 10_000_000.0;
/// Rounds of each query.
const ROUNDS: usize = 3;

/// One query: its name, the arguments, and what it answered (lines of
/// JSON output are not parsed: the count is read from the output size).
struct Query {
    name: String,
    args: Vec<String>,
}

/// One binary's rounds of one query.
#[derive(Clone, Default)]
struct Samples {
    walls: Vec<f64>,
    rss_kib: Vec<f64>,
    out_bytes: u64,
}

/// One binary's medians for one query.
struct Row {
    wall: f64,
    rss_kib: u64,
    out_bytes: u64,
}

fn median_of(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn run_query(s: &Setup, bin: &Path, q: &Query, log: &Path) -> Result<(Measured, u64)> {
    let mut cmd = s.cmd(q.args.iter().cloned());
    cmd.program = bin.as_os_str().to_owned();
    // The answer goes to a file, so its size can be reported; /usr/bin/time
    // measures the shell and its child (the peak is the child's).
    let out = log.with_extension("out");
    let mut w = crate::run::Cmd::shell("out=\"$1\"; shift; exec \"$@\" >\"$out\"")
        .arg("sh")
        .arg(&out)
        .arg(&cmd.program)
        .args(cmd.args.iter().cloned());
    w.env = cmd.env.clone();
    let m = measure(&w, log)?;
    let n = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    Ok((m, n))
}

/// Run the part; returns its Markdown section.
pub fn run(cfg: &Config) -> Result<String> {
    let base = fresh_dir(&cfg.work.join("history"))?;
    let target = match std::env::var("REWIND_BENCH_HISTORY_VERSIONS")
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        Some(v) => v.trim().parse().context("REWIND_BENCH_HISTORY_VERSIONS")?,
        None => ((VERSIONS * cfg.scale).round() as u64).max(50_000),
    };
    let baseline: Option<PathBuf> = std::env::var_os("REWIND_BENCH_HISTORY_BASELINE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let s = setup_for(cfg, &base.join("h"), None)?;
    eprintln!("rewind-bench: committing a history of {target} versions");
    let y = build_year(cfg, &s.repo, target)?;
    claim_client(&s)?;
    let size = du_bytes(&s.repo)?;
    let (_, files) = plan_tree(cfg.seed, cfg.scale.min(1.0));
    let cold = format!("{ROOT}/{}", files[files.len() / 2].rel.display());
    let hot = format!("{ROOT}/hot/state-0.json");
    let now = jiff::Timestamp::now().as_nanosecond() as i64;
    let mid = utc(now - 182 * DAY, "%Y-%m-%dT%H:%M:%SZ")?;
    let queries = [
        Query {
            name: format!("`versions` of a file of the tree (`{}`)", short(&cold)),
            args: vec!["versions".into(), "--json".into(), cold.clone()],
        },
        Query {
            name: "`versions` of a hot file".into(),
            args: vec!["versions".into(), "--json".into(), hot],
        },
        Query {
            name: "`ls --at` the middle of the year, the whole tree".into(),
            args: vec![
                "ls".into(),
                "--json".into(),
                "--at".into(),
                mid,
                ROOT.into(),
            ],
        },
        Query {
            name: "`ls` now, the whole tree".into(),
            args: vec!["ls".into(), "--json".into(), ROOT.into()],
        },
    ];
    let mut bins = vec![("this build".to_string(), cfg.rewind.clone())];
    if let Some(b) = &baseline {
        bins.push((format!("baseline (`{}`)", b.display()), b.clone()));
    }
    let logs = base.join("logs");
    std::fs::create_dir_all(&logs)?;
    // raw[bin][query]
    let mut raw: Vec<Vec<Samples>> = vec![vec![Samples::default(); queries.len()]; bins.len()];
    crate::run::sync()?;
    for round in 0..ROUNDS {
        for (qi, q) in queries.iter().enumerate() {
            // Interleaved: each query by each binary in the same minute.
            for (bi, (_, bin)) in bins.iter().enumerate() {
                eprintln!(
                    "rewind-bench: history round {round}: {} ({})",
                    q.name, bins[bi].0
                );
                let (m, out) = run_query(&s, bin, q, &logs.join(format!("q{qi}-b{bi}-r{round}")))?;
                let r = &mut raw[bi][qi];
                r.walls.push(m.wall);
                r.rss_kib.push(m.max_rss_kib as f64);
                r.out_bytes = out;
            }
        }
    }
    let rows: Vec<Vec<Row>> = raw
        .into_iter()
        .map(|qs| {
            qs.into_iter()
                .map(|r| Row {
                    wall: median_of(r.walls),
                    rss_kib: median_of(r.rss_kib) as u64,
                    out_bytes: r.out_bytes,
                })
                .collect()
        })
        .collect();

    let mut o = String::new();
    writeln!(
        o,
        "A repository of {} versions of {} paths ({} of them of the 10 hot files; {} commits), \
         {} on disk (the version index on disk included), committed through the repository API \
         in {:.0} s; the writer's version index on disk was up to date {:.1} s after the last \
         commit (it is kept in the background as commits come). Each query is the real \
         binary under `/usr/bin/time` (medians of {ROUNDS} rounds; the wall time includes \
         opening the repository).\n",
        y.versions,
        y.paths,
        y.hot_versions,
        y.commits,
        bytes(size),
        y.build_secs,
        y.index_secs
    )?;
    let mut t = Table::new(&["query", "binary", "wall", "peak RSS", "answer (JSON)"]);
    for (qi, q) in queries.iter().enumerate() {
        for (bi, (name, _)) in bins.iter().enumerate() {
            let r = &rows[bi][qi];
            t.row(&[
                q.name.clone(),
                name.clone(),
                ms(r.wall),
                format!("{:.0} MiB", r.rss_kib as f64 / 1024.0),
                bytes(r.out_bytes),
            ]);
        }
    }
    o.push_str(&t.render());
    let this = &rows[0];
    writeln!(
        o,
        "\nTargets (issue 19, this build): `versions PATH` under 50 ms: {} ({}); opening the \
         repository for a query under 1 s: {} ({}, the first query); `ls --at T` of the \
         50k-file folder under 1 s: {} ({}); memory of a query bounded by what it returns, \
         not by the history: {} (peak {:.0} MiB for a 4-version answer over {} versions).",
        verdict(this[0].wall < 0.05),
        ms(this[0].wall),
        verdict(this[0].wall < 1.0),
        ms(this[0].wall),
        verdict(this[2].wall < 1.0),
        ms(this[2].wall),
        verdict(this[0].rss_kib < 64 * 1024),
        this[0].rss_kib as f64 / 1024.0,
        y.versions,
    )?;
    std::fs::remove_dir_all(&base)?;
    Ok(o)
}

/// The last two components of a path, for a table cell.
fn short(p: &str) -> String {
    let parts: Vec<&str> = p.rsplitn(3, '/').collect();
    if parts.len() == 3 {
        format!("…/{}/{}", parts[1], parts[0])
    } else {
        p.to_string()
    }
}
