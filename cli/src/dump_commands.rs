//! `rewind dump list|run|versions|restore`.
//!
//! `run` goes through a running agent when there is one (it holds the
//! journal; the job runs in the agent and progress comes back over the
//! control socket as JSON lines), and runs in this process otherwise
//! (open the repository and journal as `watch --once` does, dump, commit,
//! upload, exit). `versions` and `restore` read the repository, which
//! works while an agent runs.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use rewind_agent::{Loaded, Target};
use rewind_core::path::display;
use rewind_dumps::{Job, Pick};
use serde_json::{Value, json};

use crate::DumpCommand;
use crate::args::{open, parse_at};

pub fn run(target: &Target, loaded: Loaded, cmd: DumpCommand) -> Result<i32> {
    match cmd {
        DumpCommand::List(j) => list(target, &loaded, j.json),
        DumpCommand::Run { name, json } => {
            let job = loaded.job(&name)?;
            run_now(target, job, json.json)
        }
        DumpCommand::Versions { name, json } => versions(target, &loaded, &name, json.json),
        DumpCommand::Restore {
            name,
            at,
            into,
            include_failed,
        } => restore(target, &loaded, &name, &at, into.as_deref(), include_failed),
    }
}

/// Exit code for a run: 0 all streams ok, 1 none (or the only one)
/// failed, 3 some failed.
fn exit_code(reports: &[Value]) -> i32 {
    let failed = reports.iter().filter(|r| r["ok"] != json!(true)).count();
    if failed == 0 {
        0
    } else if failed == reports.len() {
        1
    } else {
        3
    }
}

/// A progress line on stderr when it is a terminal.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
}

impl Progress {
    fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Progress {
            bar,
            started: Instant::now(),
        }
    }

    fn update(&self, path: &str, bytes: u64) {
        if let Some(b) = &self.bar {
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            b.set_message(format!(
                "{path}: {} ({}/s)",
                indicatif::HumanBytes(bytes),
                indicatif::HumanBytes((bytes as f64 / secs) as u64)
            ));
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn run_now(target: &Target, job: &Job, json_out: bool) -> Result<i32> {
    let progress = Progress::new();
    let through_agent =
        rewind_agent::run_dump_through_agent(target, job.name(), &|p, n| progress.update(p, n))?;
    let reports = match through_agent {
        Some(r) => r,
        None => rewind_agent::run_dump_once(target, job, &|p, n| progress.update(&display(p), n))?
            .iter()
            .map(rewind_agent::report_json)
            .collect(),
    };
    progress.finish();
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"job": job.name(), "streams": reports}))?
        );
    } else {
        for r in &reports {
            let path = r["path"].as_str().unwrap_or("?");
            if r["ok"] == json!(true) {
                eprintln!(
                    "rewind: dump {path}: {} in {:.1}s, {} new ({} chunks of {})",
                    indicatif::HumanBytes(r["bytes"].as_u64().unwrap_or(0)),
                    r["seconds"].as_f64().unwrap_or(0.0),
                    indicatif::HumanBytes(r["new_bytes"].as_u64().unwrap_or(0)),
                    r["new_chunks"],
                    r["chunks"],
                );
            } else {
                eprintln!(
                    "rewind: dump {path} failed: {} (stored as failed version {})",
                    r["error"].as_str().unwrap_or("?"),
                    r["seq"]
                );
            }
        }
    }
    Ok(exit_code(&reports))
}

fn list(target: &Target, loaded: &Loaded, json_out: bool) -> Result<i32> {
    // The repository may not exist yet (no job ran): list the jobs anyway.
    let opened = match target {
        Target::Local(dir) if !dir.join("config").exists() => None,
        t => Some(open(t)?),
    };
    let mut rows = Vec::new();
    for j in &loaded.jobs {
        let last = match &opened {
            Some(o) => rewind_dumps::last_run(o.repo.as_ref(), &o.client, j.name())?,
            None => None,
        };
        rows.push((j, last));
    }
    let mut out = std::io::stdout().lock();
    if json_out {
        let list: Vec<_> = rows
            .iter()
            .map(|(j, last)| {
                json!({
                    "name": j.name(),
                    "kind": j.config.kind.as_str(),
                    "database": j.config.database,
                    "schedule": j.config.schedule,
                    "timeout": j.config.timeout,
                    "last": last.as_ref().map(rewind_dumps::run_json),
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &json!({"jobs": list}))?;
        writeln!(out)?;
        return Ok(0);
    }
    if rows.is_empty() {
        eprintln!(
            "rewind: no dump jobs{}",
            loaded
                .path
                .as_ref()
                .map(|p| format!(" in {}", p.display()))
                .unwrap_or_else(|| " (no config file)".into())
        );
        return Ok(0);
    }
    writeln!(
        out,
        "{:<16}  {:<8}  {:<16}  {:<14}  {:<23}  LAST",
        "NAME", "KIND", "DATABASE", "SCHEDULE", "LAST RUN"
    )?;
    for (j, last) in rows {
        writeln!(
            out,
            "{:<16}  {:<8}  {:<16}  {:<14}  {:<23}  {}",
            j.name(),
            j.config.kind.as_str(),
            j.config.database.as_deref().unwrap_or("-"),
            j.config.schedule.as_deref().unwrap_or("manual"),
            last.as_ref()
                .map(|v| v.observed_at.to_local_string())
                .unwrap_or_else(|| "never".into()),
            last.as_ref()
                .map(rewind_dumps::run_summary)
                .unwrap_or_default(),
        )?;
    }
    Ok(0)
}

fn versions(target: &Target, loaded: &Loaded, name: &str, json_out: bool) -> Result<i32> {
    let o = open(target)?;
    let paths = rewind_dumps::stream_paths(o.repo.as_ref(), &o.client, name)?;
    if paths.is_empty() {
        let known = loaded.jobs.iter().any(|j| j.name() == name);
        bail!(
            "no stored dumps of {name:?}{}",
            if known {
                " yet (run `rewind dump run` or wait for its schedule)"
            } else {
                ""
            }
        );
    }
    let all = rewind_dumps::runs_of(o.repo.as_ref(), &o.client, &paths)?;
    let mut out = std::io::stdout().lock();
    if json_out {
        let list: Vec<_> = all.iter().map(rewind_dumps::run_json).collect();
        serde_json::to_writer_pretty(&mut out, &json!({"name": name, "versions": list}))?;
        writeln!(out)?;
        return Ok(0);
    }
    let many = paths.len() > 1;
    writeln!(
        out,
        "{:>8}  {:<23}  {:>10}  {}STATUS",
        "SEQ",
        "TIME",
        "SIZE",
        if many { "STREAM                  " } else { "" }
    )?;
    for v in &all {
        writeln!(
            out,
            "{:>8}  {:<23}  {:>10}  {}{}",
            v.seq,
            v.observed_at.to_local_string(),
            indicatif::HumanBytes(v.size()).to_string(),
            if many {
                format!("{:<24}", display(&v.path))
            } else {
                String::new()
            },
            rewind_dumps::run_summary(v),
        )?;
    }
    Ok(0)
}

fn restore(
    target: &Target,
    loaded: &Loaded,
    name: &str,
    at: &str,
    into: Option<&str>,
    include_failed: bool,
) -> Result<i32> {
    let o = open(target)?;
    let at = parse_at(at)?;
    let v = match rewind_dumps::pick_run(o.repo.as_ref(), &o.client, name, at, include_failed)? {
        Pick::Run(v) => *v,
        Pick::NotStored => bail!("no stored dumps of {name:?}"),
        Pick::Several(under) => bail!(
            "{name:?} holds several dumps; name one: {}",
            under
                .iter()
                .map(|p| display(p))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Pick::NoneBefore { failed } => bail!(
            "no successful dump of {name:?} at or before {}{}",
            at.to_local_string(),
            if failed > 0 && !include_failed {
                format!(" ({failed} failed ones; --include-failed takes them)")
            } else {
                String::new()
            }
        ),
    };
    if let Some(s) = v.stream_status()
        && !s.ok()
    {
        eprintln!(
            "rewind: warning: restoring a failed dump ({}); it may be incomplete",
            s.describe()
        );
    }
    match into {
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                bail!(
                    "refusing to write a dump to a terminal: redirect it (> file, | psql) or use --into DATABASE"
                );
            }
            let mut out = stdout.lock();
            let n = rewind_dumps::write_stream(o.repo.as_ref(), &v, &mut out)?;
            eprintln!(
                "rewind: wrote dump {} of {} ({})",
                display(&v.path),
                v.observed_at.to_local_string(),
                indicatif::HumanBytes(n)
            );
        }
        Some(db) => {
            // The connection settings come from the job in the config.
            let job_name = name.split('/').next().unwrap_or(name);
            let job = loaded.job(job_name)?;
            let n = rewind_dumps::restore_into(job, o.repo.as_ref(), &v, db)?;
            eprintln!(
                "rewind: loaded dump {} of {} into database {db} ({})",
                display(&v.path),
                v.observed_at.to_local_string(),
                indicatif::HumanBytes(n)
            );
        }
    }
    Ok(0)
}
