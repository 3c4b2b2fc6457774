//! The subcommands other than the agent itself.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use rewind_core::path::{JsonPath, display, to_bytes};
use rewind_core::{FileKind, Timestamp, Version, change_of, content_changed};
use rewind_repo::LocalRepo;
use serde_json::json;

use rewind_agent::{AgentConfig, AgentOptions, Target};

use crate::args::{kind_of, open, parse_at, stored_path};
use crate::{Cli, Command};

pub fn run(cli: Cli) -> Result<i32> {
    // Commands that read the config file take its `repo` and `[server]`
    // unless --repo, --server or their environment variables say otherwise.
    let config_path = match &cli.command {
        Command::Agent(a) => Some(a.config.clone()),
        Command::Dump(d) => Some(d.config.clone()),
        _ => None,
    };
    let loaded = match &config_path {
        Some(p) => Some(rewind_agent::load(p.as_deref())?),
        None => None,
    };
    let repo_arg = cli
        .global
        .repo
        .clone()
        .or_else(|| loaded.as_ref().and_then(|l| l.config.repo.clone()));
    let section = loaded.as_ref().map(|l| l.config.server.clone());
    let target = || {
        rewind_agent::resolve(
            repo_arg.as_deref(),
            cli.global.server.as_deref(),
            section.clone(),
        )
    };
    match cli.command {
        Command::Docs(d) => {
            use clap::CommandFactory;
            rewind_cli::run_docs(d, crate::Cli::command())
        }
        Command::Service(s) => crate::service::run(s),
        Command::Init => {
            let repo_dir = match &cli.global.repo {
                Some(r) => r.clone(),
                None => rewind_agent::paths::default_repo()?,
            };
            if repo_dir.join("config").exists() {
                bail!("a repository already exists at {}", repo_dir.display());
            }
            rewind_core::private::create_dir_all(&repo_dir)
                .with_context(|| format!("cannot create {}", repo_dir.display()))?;
            let r = LocalRepo::init(&repo_dir, rewind_core::DEFAULT_CHUNKER)?;
            println!("created repository {} (id {})", repo_dir.display(), r.id());
            Ok(0)
        }
        Command::Enroll(a) => crate::enroll::enroll(a),
        Command::Watch(w) => {
            let opts = AgentOptions {
                roots: w.paths,
                target: target()?,
                excludes: w.exclude,
                follow_symlinks: w.follow_symlinks,
                quiescence: w.quiescence,
                busy_interval: w.busy_interval,
                once: w.once,
                progress: std::io::stderr().is_terminal(),
                limit_upload: w.limit_upload,
                dumps: Vec::new(),
                health: Default::default(),
                groups: Vec::new(),
                retention: Default::default(),
                snapshot: Default::default(),
                ui: (!w.no_ui).then_some(w.ui_listen),
            };
            rewind_agent::run(opts)
        }
        Command::Agent(_) => {
            let loaded = loaded.expect("loaded above");
            let (quiescence, busy_interval) = loaded.watch_timing()?;
            let w = loaded.config.watch.as_ref();
            let roots = w.map(|w| w.paths.clone()).unwrap_or_default();
            if roots.is_empty() && loaded.jobs.is_empty() {
                bail!(
                    "{}: nothing to do (no [watch] paths and no [[dump]] jobs)",
                    loaded
                        .path
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "no config file".into())
                );
            }
            let opts = AgentOptions {
                roots,
                target: target()?,
                excludes: w.map(|w| w.exclude.clone()).unwrap_or_default(),
                follow_symlinks: w.map(|w| w.follow_symlinks).unwrap_or_default(),
                quiescence,
                busy_interval,
                once: false,
                progress: std::io::stderr().is_terminal(),
                limit_upload: None,
                dumps: loaded.jobs.clone(),
                health: loaded.health()?,
                groups: w.map(|w| w.groups.clone()).unwrap_or_default(),
                retention: loaded.retention()?,
                snapshot: loaded.snapshot()?,
                ui: loaded.ui()?,
            };
            rewind_agent::run(opts)
        }
        Command::Dump(d) => {
            crate::dump_commands::run(&target()?, loaded.expect("loaded above"), d.command)
        }
        Command::Status(j) => status(&target()?, j.json),
        Command::Ui(u) => ui(&target()?, u.no_open),
        Command::Versions { path, json } => versions(&target()?, &path, json.json),
        Command::Ls { path, at, json } => ls(&target()?, path.as_deref(), &at, json.json),
        Command::Restore(r) => restore(&target()?, r),
        Command::Find(f) => crate::find::find(
            &target()?,
            crate::find::FindOptions {
                pattern: &f.pattern,
                path: f.path.as_deref(),
                deleted: f.deleted,
                since: f.since.as_deref(),
                until: f.until.as_deref(),
                ignore_case: f.ignore_case,
                json: f.json.json,
            },
        ),
        Command::Mount { dir, allow_other } => crate::mount::mount(&target()?, &dir, allow_other),
        Command::Diff { t1, t2, path, json } => {
            crate::diff::diff(&target()?, &t1, &t2, path.as_deref(), json.json)
        }
        Command::Verify { quick, json } => match target()? {
            Target::Local(dir) => rewind_cli::verify(&dir, quick, json.json),
            Target::Server(r) => crate::verify_remote::verify(&r.connect()?, quick, json.json),
        },
        Command::Repair(j) => rewind_cli::repair(&local_only(target()?, "repair")?, j.json),
        Command::Forget(f) => {
            crate::retention::forget(&target()?, f.policy, f.dry_run, f.json.json, f.config)
        }
        Command::Pin { at, label, json } => {
            crate::retention::pin(&target()?, &at, label, json.json)
        }
        Command::Pins(j) => crate::retention::pins(&target()?, j.json),
        Command::Prune(p) => {
            crate::retention::prune(&target()?, p.dry_run, p.max_unused, p.json.json, p.config)
        }
        Command::Unpin { id, json } => crate::retention::unpin(&target()?, id, json.json),
    }
}

fn local_only(t: Target, what: &str) -> Result<PathBuf> {
    match t {
        Target::Local(d) => Ok(d),
        Target::Server(r) => bail!(
            "`rewind {what}` works on a local repository; for the server's ({}), run \
             `rewind-server {what} --data DIR` on the server",
            r.cfg.url
        ),
    }
}

fn versions(t: &Target, path: &Path, json: bool) -> Result<i32> {
    let o = open(t)?;
    let b = stored_path(&o, path)?;
    let vs = o.repo.versions_of(&o.client, &b)?;
    if vs.is_empty() {
        bail!("no versions of {}", display(&b));
    }
    let mut prev: Option<&Version> = None;
    let mut rows = Vec::new();
    for v in &vs {
        rows.push((v, change_of(prev, v), content_changed(prev, v)));
        prev = Some(v);
    }
    let mut out = std::io::stdout().lock();
    if json {
        let list: Vec<_> = rows
            .iter()
            .map(|(v, change, cc)| {
                json!({
                    "seq": v.seq,
                    "time": v.observed_at.to_string(),
                    "time_ns": v.observed_at.0,
                    "kind": kind_of(v),
                    "size": v.size(),
                    "change": change,
                    "content_changed": cc,
                    "deleted": v.is_tombstone(),
                    "mode": v.meta().map(|m| m.mode),
                    "mtime_ns": v.meta().map(|m| m.mtime.sec as i128 * 1_000_000_000 + m.mtime.nsec as i128),
                    "uid": v.meta().map(|m| m.uid),
                    "gid": v.meta().map(|m| m.gid),
                    "xattrs": v.xattrs().iter().map(|x| JsonPath(&x.name)).collect::<Vec<_>>(),
                    "chunks": v.chunks().iter().map(|c| c.id.to_string()).collect::<Vec<_>>(),
                    "dump_status": v.stream_status().map(|s| s.describe()),
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &json!({"path": JsonPath(&b), "versions": list}))?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{:>8}  {:<23}  {:<7}  {:>10}  CHANGE",
            "SEQ", "TIME", "KIND", "SIZE"
        )?;
        for (v, change, _) in rows {
            writeln!(
                out,
                "{:>8}  {:<23}  {:<7}  {:>10}  {}",
                v.seq,
                v.observed_at.to_local_string(),
                kind_of(v),
                if v.is_tombstone() {
                    "-".to_string()
                } else {
                    indicatif::HumanBytes(v.size()).to_string()
                },
                change
            )?;
        }
    }
    Ok(0)
}

fn mode_string(kind: FileKind, mode: u32) -> String {
    let k = match kind {
        FileKind::Dir => 'd',
        FileKind::Symlink => 'l',
        FileKind::Fifo => 'p',
        FileKind::CharDevice => 'c',
        FileKind::BlockDevice => 'b',
        FileKind::Socket => 's',
        FileKind::File => '-',
    };
    let mut s = String::from(k);
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        s.push(if mode & (0o400 >> i) != 0 { c } else { '-' });
    }
    s
}

fn ls(t: &Target, path: Option<&Path>, at: &str, json: bool) -> Result<i32> {
    let o = open(t)?;
    let at = parse_at(at)?;
    let b = match path {
        Some(p) => stored_path(&o, p)?,
        None => b"/".to_vec(),
    };
    // Files older than the whole history answer for a kept point: say
    // which (dumps keep their runs by their own rules, and never snap).
    let point = if b.starts_with(b"/") {
        crate::retention::point_used(&o.repo.query_point(&o.client, at)?, json)?
    } else {
        serde_json::Value::Null
    };
    let mut tree = o.repo.tree_at(&o.client, &b, at)?;
    // The whole machine at a point in time: files and dumps together.
    if b == b"/" {
        tree.extend(o.repo.tree_at(&o.client, b"dumps", at)?);
    }
    if tree.is_empty() {
        bail!("{} did not exist at {}", display(&b), at.to_local_string());
    }
    let mut out = std::io::stdout().lock();
    if json {
        let list: Vec<_> = tree
            .iter()
            .map(|v| {
                if let Some(st) = v.stream_status() {
                    return json!({
                        "path": JsonPath(&v.path),
                        "kind": "dump",
                        "size": v.size(),
                        "status": st.describe(),
                        "ok": st.ok(),
                        "seq": v.seq,
                        "version_time": v.observed_at.to_string(),
                    });
                }
                let Some(m) = v.meta() else {
                    return json!({"path": JsonPath(&v.path), "kind": "unknown"});
                };
                json!({
                    "path": JsonPath(&v.path),
                    "kind": m.kind.as_str(),
                    "size": v.size(),
                    "mode": m.mode,
                    "mtime": Timestamp(m.mtime.sec.saturating_mul(1_000_000_000).saturating_add(m.mtime.nsec as i64)).to_string(),
                    "symlink_target": m.symlink_target.as_ref().map(|t| JsonPath(t)),
                    "seq": v.seq,
                    "version_time": v.observed_at.to_string(),
                })
            })
            .collect();
        serde_json::to_writer_pretty(
            &mut out,
            &json!({"at": at.to_string(), "point": point, "entries": list}),
        )?;
        writeln!(out)?;
    } else {
        for v in &tree {
            if let Some(st) = v.stream_status() {
                writeln!(
                    out,
                    "dump        {:>10}  {}  {}  ({})",
                    indicatif::HumanBytes(v.size()).to_string(),
                    &v.observed_at.to_local_string()[..16],
                    display(&v.path),
                    st.describe()
                )?;
                continue;
            }
            let Some(m) = v.meta() else { continue };
            let mtime = Timestamp(m.mtime.sec.saturating_mul(1_000_000_000)).to_local_string();
            let mut line = format!(
                "{}  {:>10}  {}  {}",
                mode_string(m.kind, m.mode),
                indicatif::HumanBytes(v.size()).to_string(),
                &mtime[..16],
                display(&v.path)
            );
            if let Some(t) = &m.symlink_target {
                line.push_str(" -> ");
                line.push_str(&display(t));
            }
            writeln!(out, "{line}")?;
        }
    }
    Ok(0)
}

fn restore(t: &Target, r: crate::RestoreArgs) -> Result<i32> {
    let o = open(t)?;
    let at = parse_at(&r.at)?;
    let b = stored_path(&o, &r.path)?;
    let point = if b.starts_with(b"/") {
        crate::retention::point_used(&o.repo.query_point(&o.client, at)?, false)?
    } else {
        serde_json::Value::Null
    };
    let to = match &r.to {
        Some(t) => Some(
            rewind_core::path::absolute(t)
                .with_context(|| format!("cannot resolve {}", t.display()))?,
        ),
        None => None,
    };
    let cfg: AgentConfig = std::fs::read(o.jdir.join("agent.json"))
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or_default();
    let target = rewind_core::path::from_bytes(&b);
    let root = cfg
        .roots
        .iter()
        .find(|root| target.starts_with(root))
        .cloned()
        .unwrap_or(target.clone());
    let mut never = vec![rewind_agent::paths::state_dir()?];
    never.extend(o.local.clone());
    let rules =
        rewind_watcher::IgnoreRules::new(std::slice::from_ref(&root), &cfg.excludes, &never)?;
    let keep = |p: &Path| rules.is_ignored(p, p.is_dir()) || is_restore_tmp(p);
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(std::time::Duration::from_millis(120));
        b
    });
    let done = AtomicU64::new(0);
    let progress = |n: u64| {
        let total = done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(b) = &bar {
            b.set_message(format!("restoring: {}", indicatif::HumanBytes(total)));
        }
    };
    let opts = rewind_restore::RestoreOptions {
        to: to.clone(),
        delete: r.delete,
        chunker: Some(o.chunker),
        keep: Some(&keep),
        progress: Some(&progress),
        numeric_owner: r.numeric_owner,
    };
    let report = rewind_restore::restore(o.repo.as_ref(), &o.client, &b, at, &opts)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    for p in &report.problems {
        eprintln!("rewind: {}: {}", display(&p.path), p.message);
    }
    for n in &report.notes {
        eprintln!("rewind: note: {}: {}", display(&n.path), n.message);
    }
    let dest = to.unwrap_or(target);
    if r.json.json {
        println!(
            "{}",
            json!({
                "path": JsonPath(&b),
                "at": at.to_string(),
                "point": point,
                "dest": JsonPath(to_bytes(&dest)),
                "files": report.files,
                "dirs": report.dirs,
                "symlinks": report.symlinks,
                "links": report.links,
                "other": report.other,
                "unchanged": report.unchanged,
                "bytes_fetched": report.bytes_fetched,
                "bytes_reused": report.bytes_reused,
                "deleted": report.deleted,
                "problems": report.problems.iter().map(|p| json!({"path": JsonPath(&p.path), "message": p.message})).collect::<Vec<_>>(),
                "notes": report.notes.iter().map(|p| json!({"path": JsonPath(&p.path), "message": p.message})).collect::<Vec<_>>(),
            })
        );
    } else {
        eprintln!(
            "restored {} as of {} to {}: {} files ({} unchanged), {} dirs, {} symlinks, {} hard links, {} other; {} fetched, {} reused{}{}",
            display(&b),
            at.to_local_string(),
            display(to_bytes(&dest)),
            report.files,
            report.unchanged,
            report.dirs,
            report.symlinks,
            report.links,
            report.other,
            indicatif::HumanBytes(report.bytes_fetched),
            indicatif::HumanBytes(report.bytes_reused),
            if report.deleted > 0 {
                format!(", {} removed", report.deleted)
            } else {
                String::new()
            },
            if report.problems.is_empty() {
                String::new()
            } else {
                format!("; {} problems", report.problems.len())
            },
        );
    }
    Ok(if report.problems.is_empty() { 0 } else { 3 })
}

fn is_restore_tmp(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(".rewind-restore-"))
}

/// `rewind ui`: a one-time login URL from the running agent, printed and
/// (unless `no_open`) opened in the desktop's browser.
fn ui(t: &Target, no_open: bool) -> Result<i32> {
    let Some(url) = rewind_agent::ui_url(t)? else {
        bail!(
            "no rewind agent is running for this repository; the web UI is part of the agent: \
             start it (`rewind service install`, `rewind agent` or `rewind watch DIR`)"
        );
    };
    println!("{url}");
    if no_open {
        eprintln!("rewind: the link works once, within two minutes");
        return Ok(0);
    }
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let started = std::process::Command::new(opener)
        .arg(&url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = started {
        eprintln!("rewind: cannot start {opener} ({e}); open the link above in a browser");
    }
    Ok(0)
}

/// The retention lines of `status`.
fn status_retention(r: &rewind_core::forget::RetentionStatus, agent: &serde_json::Value) {
    let h = indicatif::HumanBytes;
    let policy = agent["policy"]
        .as_str()
        .map(String::from)
        .or_else(|| r.server_policy.clone());
    let every = agent["every"]
        .as_str()
        .map_or(String::new(), |e| format!(", applied every {e}"));
    println!(
        "retention    policy {}{every}; whole history since {}, {} kept points before it (oldest {}), {} pins",
        policy.as_deref().unwrap_or("(the agent's; not running)"),
        r.thinned_before
            .map_or("the start".into(), |t| t.to_local_string()),
        r.points,
        r.oldest_point
            .map_or("none".into(), |t| t.to_local_string()),
        r.pins.len(),
    );
    if let Some(b) = r.reclaimable {
        let last = r
            .last_prune
            .as_ref()
            .and_then(|p| p.at)
            .map_or("never".into(), |t| {
                format!(
                    "{} (freed {})",
                    t.to_local_string(),
                    h(r.last_prune.as_ref().map_or(0, |p| p.bytes_freed))
                )
            });
        println!(
            "             {} reclaimable by `rewind prune`; last prune {last}",
            h(b)
        );
    }
    if let Some(f) = &r.last_forget {
        println!(
            "             last forget {} ({} versions)",
            f.at.to_local_string(),
            f.versions_forgotten
        );
    }
    for s in r.space_removals.iter().rev().take(3) {
        println!(
            "             space rule at {}: removed the point {} ({})",
            s.at.to_local_string(),
            s.point.to_local_string(),
            s.reason
        );
    }
    if let Some(rule) = agent["runs"]["space_rule"].as_str() {
        println!("             space rule not met: {rule}");
    }
    if let Some(e) = agent["runs"]["last_error"].as_str() {
        println!("             last retention run failed: {e}");
    }
}

fn status(t: &Target, json: bool) -> Result<i32> {
    let o = open(t)?;
    // A server that cannot be reached does not stop `status` from showing
    // the agent and what waits in the journal.
    let (stats, unreachable) = match o.repo.stats() {
        Ok(s) => (s, None),
        Err(e) if o.local.is_none() => (Default::default(), Some(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    let live = rewind_agent::query(&rewind_agent::paths::socket_path(&o.jdir))?;
    let upload_v = live
        .as_ref()
        .map_or(serde_json::Value::Null, |v| v["upload"].clone());
    let (agent_v, journal_v) = match live {
        Some(v) => (v["agent"].clone(), v["journal"].clone()),
        None if o.jdir.join("db").exists() => {
            let j = rewind_journal::Journal::open(&o.jdir, &o.client)
                .context("cannot open the journal (is an agent starting?)")?;
            let st = j.stats()?;
            j.close()?;
            (json!({"running": false}), serde_json::to_value(st)?)
        }
        None => (json!({"running": false}), serde_json::Value::Null),
    };
    // The newest run of every dump stream, failed ones included.
    let dumps: Vec<Version> = if unreachable.is_some() {
        Vec::new()
    } else {
        o.repo.tree_at(&o.client, b"dumps", Timestamp::MAX)?
    };
    let retention = if unreachable.is_some() {
        None
    } else {
        o.repo.retention(&o.client).ok()
    };
    let retention_v = json!({
        "policy": agent_v["retention"]["policy"],
        "every": agent_v["retention"]["every"],
        "max_size": agent_v["retention"]["max_size"],
        "keep_free": agent_v["retention"]["keep_free"],
        "agent_runs": agent_v["retention"]["runs"],
        "thinned_before": retention.as_ref().and_then(|r| r.thinned_before).map(|t| t.to_string()),
        "points": retention.as_ref().map(|r| r.points),
        "oldest_point": retention.as_ref().and_then(|r| r.oldest_point).map(|t| t.to_string()),
        "pins": retention.as_ref().map(|r| r.pins.len()),
        "reclaimable_bytes": retention.as_ref().and_then(|r| r.reclaimable),
        "last_forget": retention.as_ref().and_then(|r| r.last_forget.as_ref()).map(|f| json!({
            "at": f.at.to_string(),
            "policy": f.policy,
            "versions_forgotten": f.versions_forgotten,
        })),
        "last_prune": retention.as_ref().and_then(|r| r.last_prune.as_ref()).map(|p| json!({
            "at": p.at.map(|t| t.to_string()),
            "millis": p.millis,
            "packs_deleted": p.packs_deleted,
            "packs_repacked": p.packs_repacked,
            "bytes_rewritten": p.bytes_rewritten,
            "bytes_freed": p.bytes_freed,
        })),
        "space_removals": retention.as_ref().map(|r| r.space_removals.iter().map(|s| json!({
            "at": s.at.to_string(),
            "point": s.point.to_string(),
            "reason": s.reason,
        })).collect::<Vec<_>>()),
        "server_policy": retention.as_ref().and_then(|r| r.server_policy.clone()),
    });
    if json {
        let dumps_v: Vec<_> = dumps
            .iter()
            .filter_map(|v| {
                let s = v.stream_status()?;
                Some(json!({
                    "path": JsonPath(&v.path),
                    "time": v.observed_at.to_string(),
                    "ok": s.ok(),
                    "status": s.describe(),
                    "size": v.size(),
                }))
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "dumps": dumps_v,
                "repository": {
                    "path": o.local.as_ref().map(|p| p.to_string_lossy()),
                    "server": o.local.is_none().then_some(&o.describe),
                    "id": o.id,
                    "versions": stats.versions,
                    "chunks": stats.chunks,
                    "packs": stats.packs,
                    "pack_bytes": stats.pack_bytes,
                    "last_commit": stats.last_commit.map(|t| t.to_string()),
                    "error": unreachable,
                },
                "client": o.client,
                "retention": retention_v,
                "agent": agent_v,
                "journal": journal_v,
                "upload": upload_v,
            }))?
        );
        return Ok(0);
    }
    let last_commit = stats
        .last_commit
        .map(|t| t.to_local_string())
        .unwrap_or_else(|| "never".into());
    if o.local.is_some() {
        println!("repository   {} (id {})", o.describe, o.id);
        println!(
            "             {} versions, {} chunks, {} in {} packs; last commit {last_commit}",
            stats.versions,
            stats.chunks,
            indicatif::HumanBytes(stats.pack_bytes),
            stats.packs,
        );
    } else if let Some(e) = &unreachable {
        println!(
            "server       {} (repository {}), client {}",
            o.describe, o.id, o.client
        );
        println!("             unreachable: {e}");
    } else {
        println!(
            "server       {} (repository {}), client {}",
            o.describe, o.id, o.client
        );
        println!(
            "             {} versions, {} chunks of this client; last commit {last_commit}",
            stats.versions, stats.chunks,
        );
    }
    if let Some(r) = &retention {
        status_retention(r, &agent_v["retention"]);
    }
    if agent_v["running"].as_bool() == Some(true) {
        println!(
            "agent        running (pid {}), first pass {}",
            agent_v["pid"],
            if agent_v["first_pass_done"].as_bool() == Some(true) {
                "done"
            } else {
                "in progress"
            }
        );
        let c = &agent_v["counters"];
        println!(
            "captured     {} versions ({} without reading content), {} read; {} errors, {} metadata warnings",
            c["captured"],
            c["reused"],
            indicatif::HumanBytes(c["bytes_read"].as_u64().unwrap_or(0)),
            c["errors"],
            c["warnings"],
        );
    } else {
        println!("agent        not running");
    }
    if let Some(roots) = journal_v["roots"].as_array() {
        for r in roots {
            println!("protecting   {}", r.as_str().unwrap_or("?"));
        }
    }
    if !journal_v.is_null() {
        let ts = |k: &str| {
            journal_v[k]
                .as_i64()
                .map(|n| Timestamp(n).to_local_string())
                .unwrap_or_else(|| "never".into())
        };
        println!(
            "journal      {} versions waiting, {} spooled; last capture {}, last upload {}",
            journal_v["versions_waiting"],
            indicatif::HumanBytes(journal_v["spool_bytes"].as_u64().unwrap_or(0)),
            ts("last_capture"),
            ts("last_upload"),
        );
        if let Some(oldest) = journal_v["oldest_waiting"].as_i64() {
            let lag = Timestamp::now().0.saturating_sub(oldest).max(0) as u64;
            println!(
                "upload lag   {} (the oldest version not yet uploaded)",
                indicatif::HumanDuration(std::time::Duration::from_nanos(lag))
            );
        }
        if let Some(e) = journal_v["last_error"].as_str() {
            println!("last error   {e}");
        }
        if let Some(e) = upload_v["last_error"].as_str() {
            println!("upload error {e} (retrying)");
        }
    }
    for v in &dumps {
        if let Some(s) = v.stream_status() {
            let mut st = s.describe();
            if !s.ok()
                && let Some(l) = rewind_dumps::last_error_line(&s.stderr)
            {
                st.push_str(": ");
                st.push_str(&l);
            }
            println!(
                "dump         {} last run {}: {st}",
                display(&v.path),
                v.observed_at.to_local_string()
            );
        }
    }
    if let Some(p) = agent_v["recent_problems"].as_array().and_then(|a| a.last()) {
        println!("last problem {}", p["message"].as_str().unwrap_or(""));
    }
    for b in agent_v["busy"].as_array().cloned().unwrap_or_default() {
        println!(
            "busy         {}: changed during every read for {} s ({} tries), no version since",
            b["path"].as_str().unwrap_or("?"),
            b["without_version_secs"],
            b["attempts"]
        );
    }
    // What makes protection stop or degrade, as the agent told the user.
    let health = agent_v["health"].as_array().cloned().unwrap_or_default();
    if agent_v.is_object() && health.is_empty() {
        println!("health       ok");
    }
    for p in &health {
        println!(
            "ATTENTION    {} (since {})",
            p["message"].as_str().unwrap_or(""),
            p["since"].as_str().unwrap_or("?")
        );
    }
    Ok(0)
}
