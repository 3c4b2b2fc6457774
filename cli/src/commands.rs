//! The subcommands other than the agent itself.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use rewind_core::path::{JsonPath, display, to_bytes};
use rewind_core::{Timestamp, Version, change_of, content_changed};
use rewind_repo::LocalRepo;
use serde_json::json;

use rewind_agent::{AgentOptions, Target};

use crate::args::{open, parse_at};
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
    if let Some(l) = &loaded {
        l.use_repo_secret();
    }
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
            Ok(rewind_core::docs::run(d, crate::Cli::command())?)
        }
        Command::Service(s) => crate::service::run(s),
        Command::Init(a) => {
            let repo_dir = match &cli.global.repo {
                Some(r) => r.clone(),
                None => rewind_agent::paths::default_repo()?,
            };
            let encrypt = a.encrypt || (rewind_repo::is_url(&repo_dir) && !a.no_encrypt);
            if LocalRepo::exists(&repo_dir)? {
                bail!("a repository already exists at {}", repo_dir.display());
            }
            if !rewind_repo::is_url(&repo_dir) {
                rewind_core::private::create_dir_all(&repo_dir)
                    .with_context(|| format!("cannot create {}", repo_dir.display()))?;
            }
            let r = if encrypt {
                crate::keys::init_encrypted(&repo_dir, cli.global.key_file.as_deref())?
            } else {
                LocalRepo::init(&repo_dir, rewind_core::DEFAULT_CHUNKER)?
            };
            let how = if encrypt { ", encrypted" } else { "" };
            println!(
                "created repository {} (id {}{how})",
                repo_dir.display(),
                r.id()
            );
            Ok(0)
        }
        Command::Enroll(a) => crate::enroll::enroll(a),
        Command::Watch(w) => rewind_agent::run(AgentOptions {
            excludes: w.exclude,
            follow_symlinks: w.follow_symlinks,
            quiescence: w.quiescence,
            busy_interval: w.busy_interval,
            unwatched_rescan: w.unwatched_rescan,
            once: w.once,
            limit_upload: w.limit_upload,
            ui: (!w.no_ui).then_some(w.ui_listen),
            ..AgentOptions::new(w.paths, target()?)
        }),
        Command::Agent(_) => {
            rewind_agent::run(loaded.expect("loaded above").agent_options(target)?)
        }
        Command::Dump(d) => {
            crate::dump_commands::run(&target()?, loaded.expect("loaded above"), d.command)
        }
        Command::Status(j) => crate::status::status(&target()?, j.json),
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
            Target::Local(dir) => rewind_server::verify(&dir, quick, json.json),
            Target::Server(r) => crate::verify_remote::verify(&r.connect()?, quick, json.json),
        },
        Command::Key(k) => crate::keys::key(
            &local_only(target()?, "key")?,
            cli.global.key_file.as_deref(),
            k.command,
        ),
        Command::Repair(j) => rewind_server::repair(&local_only(target()?, "repair")?, j.json),
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
    let b = o.stored_path(path)?;
    let vs = o.repo.versions_of(&o.client, &b)?;
    if vs.is_empty() {
        bail!("no versions of {}", display(&b));
    }
    let out = std::io::stdout().lock();
    // Written version by version: a hot file's hundreds of thousands of
    // versions never exist as one JSON document in memory.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    if json {
        write!(out, "{{\n  \"path\": ")?;
        serde_json::to_writer(&mut out, &JsonPath(&b))?;
        write!(out, ",\n  \"versions\": [")?;
    } else {
        writeln!(
            out,
            "{:>8}  {:<23}  {:<7}  {:>10}  CHANGE",
            "SEQ", "TIME", "KIND", "SIZE"
        )?;
    }
    let mut prev: Option<&Version> = None;
    for (i, v) in vs.iter().enumerate() {
        let change = change_of(prev, v);
        if json {
            let row = json!({
                "seq": v.seq,
                "time": v.observed_at.to_string(),
                "time_ns": v.observed_at.0,
                "kind": v.kind_name(),
                "size": v.size(),
                "change": change,
                "content_changed": content_changed(prev, v),
                "deleted": v.is_tombstone(),
                "mode": v.meta().map(|m| m.mode),
                "mtime_ns": v.meta().map(|m| m.mtime.sec as i128 * 1_000_000_000 + m.mtime.nsec as i128),
                "uid": v.meta().map(|m| m.uid),
                "gid": v.meta().map(|m| m.gid),
                "xattrs": v.xattrs().iter().map(|x| JsonPath(&x.name)).collect::<Vec<_>>(),
                "chunks": v.chunks().iter().map(|c| c.id.to_string()).collect::<Vec<_>>(),
                "dump_status": v.stream_status().map(|s| s.describe()),
            });
            write!(out, "{}\n    ", if i == 0 { "" } else { "," })?;
            serde_json::to_writer(&mut out, &row)?;
        } else {
            writeln!(
                out,
                "{:>8}  {:<23}  {:<7}  {:>10}  {}",
                v.seq,
                v.observed_at.to_local_string(),
                v.kind_name(),
                if v.is_tombstone() {
                    "-".to_string()
                } else {
                    indicatif::HumanBytes(v.size()).to_string()
                },
                change
            )?;
        }
        prev = Some(v);
    }
    if json {
        writeln!(out, "\n  ]\n}}")?;
    }
    out.flush()?;
    Ok(0)
}

fn ls(t: &Target, path: Option<&Path>, at: &str, json: bool) -> Result<i32> {
    let o = open(t)?;
    let at = parse_at(at)?;
    let b = match path {
        Some(p) => o.stored_path(p)?,
        None => b"/".to_vec(),
    };
    // Files older than the whole history answer for a kept point: say
    // which (dumps keep their runs by their own rules, and never snap).
    let point = if b.starts_with(b"/") {
        crate::retention::point_used(&o.repo.query_point(&o.client, at)?, json)?
    } else {
        serde_json::Value::Null
    };
    let tree = rewind_core::machine_tree_at(o.repo.as_ref(), &o.client, &b, at)?;
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
                m.kind.ls_mode(m.mode),
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
    let b = o.stored_path(&r.path)?;
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
    let target = rewind_core::path::from_bytes(&b);
    let rules = rewind_agent::restore_keep_rules(&o, &target)?;
    let keep = |p: &Path| rules.is_ignored(p, p.is_dir()) || rewind_restore::is_restore_tmp(p);
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
        // The report's counts and problems, with what was restored where.
        let mut v = serde_json::to_value(&report)?;
        v["path"] = json!(JsonPath(&b));
        v["at"] = json!(at.to_string());
        v["point"] = point;
        v["dest"] = json!(JsonPath(to_bytes(&dest)));
        println!("{v}");
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
