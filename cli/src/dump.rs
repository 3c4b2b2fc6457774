//! `rewind dump list|run|versions|restore`.
//!
//! `run` goes through a running agent when there is one (it holds the
//! journal; the job runs in the agent and progress comes back over the
//! control socket as JSON lines), and runs in this process otherwise
//! (open the repository and journal as `watch --once` does, dump, commit,
//! upload, exit). `versions` and `restore` read the repository, which
//! works while an agent runs.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rewind_core::path::{JsonPath, display};
use rewind_core::{Chunker, Timestamp, Version};
use rewind_dumps::{Job, StreamReport};
use rewind_repo::LocalRepo;
use rewind_uploader::Uploader;
use serde_json::{Value, json};

use crate::agent::dumps::DumpService;
use crate::commands::{open, parse_at};
use crate::config::Loaded;
use crate::server::Target;
use crate::{DumpCommand, paths};

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

/// A report as JSON (the agent sends these over the socket).
fn report_json(r: &StreamReport) -> Value {
    json!({
        "path": JsonPath(&r.path),
        "seq": r.seq,
        "ok": r.ok(),
        "status": r.status.describe(),
        "error": r.failure_line(),
        "exit_code": r.status.exit_code,
        "signal": r.status.signal,
        "timed_out": r.status.timed_out,
        "bytes": r.bytes,
        "chunks": r.chunks,
        "new_chunks": r.new_chunks,
        "new_bytes": r.new_bytes,
        "started": r.status.started.to_string(),
        "seconds": (r.status.finished.0 - r.status.started.0) as f64 / 1e9,
    })
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

/// Agent side of `rewind dump run`: the request names a job of the
/// agent's own config (its name as a JSON string; nothing else is run),
/// replies are JSON lines: progress, then `{"done": [...]}` or
/// `{"error": "..."}`.
pub(crate) fn serve_run(conn: &UnixStream, service: &DumpService, request: &str) {
    let mut w = conn;
    let job = serde_json::from_str::<String>(request)
        .map_err(|e| anyhow::anyhow!("bad dump request (a job name in JSON): {e}"))
        .and_then(|name| {
            service.job(&name).cloned().ok_or_else(|| {
                anyhow::anyhow!(
                    "the running agent has no dump job {name:?} (it reads its config when it \
                     starts: restart it after editing the config)"
                )
            })
        });
    let reply = match job {
        Err(e) => json!({"error": e.to_string()}),
        Ok(job) => {
            let last = std::sync::Mutex::new(Instant::now());
            let progress = |path: &[u8], bytes: u64| {
                let mut l = last.lock().unwrap_or_else(|p| p.into_inner());
                // A line four times a second is plenty for a progress bar.
                if l.elapsed() >= Duration::from_millis(250) {
                    *l = Instant::now();
                    let line = json!({"progress": {"path": JsonPath(path), "bytes": bytes}});
                    let _ = (&*conn).write_all(format!("{line}\n").as_bytes());
                }
            };
            match service.run(&job, &progress) {
                Ok(reports) => json!({"done": reports.iter().map(report_json).collect::<Vec<_>>()}),
                Err(e) => json!({"error": crate::one_line(&e)}),
            }
        }
    };
    let _ = w.write_all(format!("{reply}\n").as_bytes());
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
    let reports = match run_through_agent(target, job, &progress)? {
        Some(r) => r,
        None => run_in_process(target, job, &progress)?,
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

/// Ask a running agent to run the job; `None` when no agent answers.
fn run_through_agent(
    target: &Target,
    job: &Job,
    progress: &Progress,
) -> Result<Option<Vec<Value>>> {
    let id = match target {
        Target::Local(dir) => match LocalRepo::open(dir) {
            Ok(r) => r.id().to_string(),
            Err(_) => return Ok(None),
        },
        Target::Server(remote) => remote.info(&remote.connect()?)?.repo_id,
    };
    let sock = paths::socket_path(&paths::journal_dir(&id)?);
    let Ok(mut conn) = UnixStream::connect(&sock) else {
        return Ok(None);
    };
    // The agent runs only jobs of its own config, asked for by name.
    let req = serde_json::to_string(job.name())?;
    conn.write_all(format!("dump {req}\n").as_bytes())
        .context("cannot talk to the running agent")?;
    tracing::info!("running dump {} through the agent", job.name());
    for line in BufReader::new(&conn).lines() {
        let line = line.context("lost the running agent")?;
        let v: Value = serde_json::from_str(&line).context("agent sent a malformed reply")?;
        if let Some(p) = v.get("progress") {
            progress.update(
                p["path"].as_str().unwrap_or(""),
                p["bytes"].as_u64().unwrap_or(0),
            );
        } else if let Some(d) = v.get("done") {
            return Ok(Some(d.as_array().cloned().unwrap_or_default()));
        } else if let Some(e) = v.get("error") {
            bail!("{}", e.as_str().unwrap_or("the agent failed"));
        }
    }
    bail!("the agent stopped before the dump finished")
}

/// No agent: open the repository and journal here, dump, commit, upload.
fn run_in_process(target: &Target, job: &Job, progress: &Progress) -> Result<Vec<Value>> {
    let (opened, journal, _jdir) = crate::agent::open_for_capture(target, None, &[])?;
    let chunker = Chunker::new(opened.chunker);
    let uploader = Uploader::start(
        journal.clone(),
        opened.repo.clone(),
        opened.sink.clone(),
        opened.upload.clone(),
    );
    let cancel = Arc::new(AtomicBool::new(false));
    // Ctrl-C kills the dump, which is then stored as a failed run.
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, cancel.clone());
    let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, cancel.clone());
    let res = rewind_dumps::run_job(
        job,
        &journal,
        Some(opened.repo.as_ref()),
        chunker,
        &cancel,
        &|p, n| progress.update(&display(p), n),
    );
    let flushed = journal.flush();
    uploader.stop();
    journal.close()?;
    flushed?;
    Ok(res?.iter().map(report_json).collect())
}

/// The stored paths of `name`: `dumps/NAME` or, for an all-databases job
/// (or a name with a `/`), every stream under it.
fn stream_paths(o: &crate::commands::Opened, name: &str) -> Result<Vec<Vec<u8>>> {
    let base = format!("dumps/{name}").into_bytes();
    let tree = o.repo.tree_at(&o.client, &base, Timestamp::MAX)?;
    let mut paths: Vec<Vec<u8>> = tree
        .into_iter()
        .filter(|v| v.stream_status().is_some())
        .map(|v| v.path)
        .collect();
    if paths.is_empty() && !o.repo.versions_of(&o.client, &base)?.is_empty() {
        paths.push(base);
    }
    paths.sort();
    paths.dedup();
    Ok(paths)
}

fn status_text(v: &Version) -> String {
    match v.stream_status() {
        Some(s) if s.ok() => "ok".into(),
        Some(s) => {
            let mut t = s.describe();
            if let Some(l) = rewind_dumps::last_error_line(&s.stderr) {
                t.push_str(": ");
                t.push_str(&l);
            }
            t
        }
        None => "not a dump".into(),
    }
}

fn version_json(v: &Version) -> Value {
    let s = v.stream_status();
    json!({
        "path": JsonPath(&v.path),
        "seq": v.seq,
        "time": v.observed_at.to_string(),
        "time_ns": v.observed_at.0,
        "size": v.size(),
        "ok": s.is_some_and(|s| s.ok()),
        "status": s.map(|s| s.describe()),
        "exit_code": s.and_then(|s| s.exit_code),
        "signal": s.and_then(|s| s.signal),
        "timed_out": s.map(|s| s.timed_out),
        "error": s.and_then(|s| s.error.clone()),
        "format": s.map(|s| s.format.clone()),
        "database": s.and_then(|s| s.database.clone()),
        "finished": s.map(|s| s.finished.to_string()),
        "stderr": s.map(|s| String::from_utf8_lossy(&s.stderr).into_owned()),
    })
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
            Some(o) => {
                let mut newest: Option<Version> = None;
                for p in stream_paths(o, j.name())? {
                    for v in o.repo.versions_of(&o.client, &p)? {
                        if newest
                            .as_ref()
                            .is_none_or(|n| v.observed_at > n.observed_at)
                        {
                            newest = Some(v);
                        }
                    }
                }
                newest
            }
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
                    "last": last.as_ref().map(version_json),
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
            last.as_ref().map(status_text).unwrap_or_default(),
        )?;
    }
    Ok(0)
}

fn versions(target: &Target, loaded: &Loaded, name: &str, json_out: bool) -> Result<i32> {
    let o = open(target)?;
    let paths = stream_paths(&o, name)?;
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
    let mut all = Vec::new();
    for p in &paths {
        all.extend(o.repo.versions_of(&o.client, p)?);
    }
    all.sort_by_key(|v| (v.observed_at, v.seq));
    let mut out = std::io::stdout().lock();
    if json_out {
        let list: Vec<_> = all.iter().map(version_json).collect();
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
            status_text(v),
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
    let path = format!("dumps/{name}").into_bytes();
    let all = o.repo.versions_of(&o.client, &path)?;
    if all.is_empty() {
        let under = stream_paths(&o, name)?;
        if !under.is_empty() {
            bail!(
                "{name:?} holds several dumps; name one: {}",
                under
                    .iter()
                    .map(|p| display(&p["dumps/".len()..]))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        bail!("no stored dumps of {name:?}");
    }
    let Some(v) = rewind_dumps::pick_version(&all, at, include_failed) else {
        let failed = all
            .iter()
            .filter(|v| v.observed_at <= at && !v.stream_status().is_some_and(|s| s.ok()))
            .count();
        bail!(
            "no successful dump of {name:?} at or before {}{}",
            at.to_local_string(),
            if failed > 0 && !include_failed {
                format!(" ({failed} failed ones; --include-failed takes them)")
            } else {
                String::new()
            }
        );
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
            let n = rewind_dumps::write_stream(o.repo.as_ref(), v, &mut out)?;
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
            let n = rewind_dumps::restore_into(job, o.repo.as_ref(), v, db)?;
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
