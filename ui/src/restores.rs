//! Restores from the UI: a plan that says what a restore would create and
//! overwrite (the confirmation), then a job that runs
//! `rewind_restore::restore` for each chosen path on a thread of its own,
//! with its progress for the page to poll.
//!
//! A restore never deletes here: what exists now and did not then is left
//! alone (the CLI's `--delete` is not offered), and the plan says so.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use bytes::Bytes;
use rewind_core::path::{display, from_bytes, to_bytes};
use rewind_core::{FileKind, Timestamp, Version};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::common::{ApiError, ApiResult, bad, json_response, not_found, parse_at, path_of};
use crate::ctx::{Ctx, blocking};
use crate::jobs::{Job, JobState};

/// Overwritten paths listed by name in a plan; the rest are counted.
const LIST_OVERWRITES: usize = 100;

/// Finished jobs remembered for the page to read their end.
const KEEP_JOBS: usize = 16;

#[derive(Deserialize)]
struct Request {
    ids: Vec<String>,
    at: String,
    /// A folder to restore into; absent: in place.
    to: Option<String>,
}

/// One chosen path, where it goes, and its tree at the moment.
struct Item {
    path: Vec<u8>,
    dest: PathBuf,
    tree: Vec<Version>,
}

fn parse(body: &[u8]) -> Result<(Request, Timestamp, Option<PathBuf>), ApiError> {
    let r: Request = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    if r.ids.is_empty() {
        return Err(bad("nothing chosen to restore"));
    }
    let at = parse_at(Some(&r.at))?;
    let to = match r.to.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(t) if Path::new(t).is_absolute() => Some(PathBuf::from(t)),
        Some(t) => return Err(bad(format!("{t}: give the folder as an absolute path"))),
    };
    Ok((r, at, to))
}

fn items(ctx: &Ctx, r: &Request, at: Timestamp, to: Option<&Path>) -> Result<Vec<Item>, ApiError> {
    let mut out: Vec<Item> = Vec::new();
    for id in &r.ids {
        let path = path_of(id)?;
        let tree = ctx.repo.tree_at(&ctx.client, &path, at)?;
        if tree.first().map(|v| v.path.as_slice()) != Some(path.as_slice()) {
            return Err(not_found(format!(
                "{} did not exist at that moment",
                display(&path)
            )));
        }
        let dest = match to {
            None => from_bytes(&path),
            Some(dir) => {
                let name = path.rsplit(|&c| c == b'/').next().unwrap_or(&path);
                dir.join(from_bytes(name))
            }
        };
        // Restoring elsewhere writes a new path (rewind-restore's rule):
        // it must not exist yet, or be an empty folder.
        if to.is_some()
            && let Ok(m) = std::fs::symlink_metadata(&dest)
            && !(m.is_dir() && std::fs::read_dir(&dest).is_ok_and(|mut d| d.next().is_none()))
        {
            return Err(bad(format!(
                "{} exists already: choose another folder, or restore in place",
                dest.display()
            )));
        }
        if let Some(o) = out.iter().find(|o| o.dest == dest) {
            return Err(bad(format!(
                "{} and {} would both be restored as {}",
                display(&o.path),
                display(&path),
                dest.display()
            )));
        }
        out.push(Item { path, dest, tree });
    }
    Ok(out)
}

/// Where a version of the tree under `item.path` lands.
fn dest_of(item: &Item, v: &Version) -> PathBuf {
    let rel = &v.path[item.path.len()..];
    let rel = rel.strip_prefix(b"/").unwrap_or(rel);
    if rel.is_empty() {
        item.dest.clone()
    } else {
        item.dest.join(from_bytes(rel))
    }
}

fn same_file(v: &Version, m: &std::fs::Metadata) -> bool {
    let Some(vm) = v.meta() else { return false };
    vm.kind == FileKind::File
        && m.file_type().is_file()
        && m.len() == v.size()
        && m.mtime() == vm.mtime.sec
        && m.mtime_nsec() == vm.mtime.nsec as i64
}

/// What restoring `item` would do on disk now.
fn plan_item(item: &Item) -> Value {
    let (mut files, mut dirs, mut bytes, mut create, mut unchanged, mut overwrite) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut listed = Vec::new();
    for v in &item.tree {
        let Some(m) = v.meta() else { continue };
        if m.kind == FileKind::Dir {
            dirs += 1;
        } else {
            files += 1;
            bytes += v.size();
        }
        let d = dest_of(item, v);
        match std::fs::symlink_metadata(&d) {
            Err(_) => create += 1,
            Ok(now) if now.is_dir() && m.kind == FileKind::Dir => {}
            Ok(now) if same_file(v, &now) => unchanged += 1,
            Ok(now) => {
                overwrite += 1;
                if listed.len() < LIST_OVERWRITES {
                    listed.push(json!({
                        "path": d.to_string_lossy(),
                        "now_size": now.len(),
                        "now_mtime": (now.mtime() as i128 * 1_000_000_000 + now.mtime_nsec() as i128).to_string(),
                        "size": v.size(),
                        "kind": v.kind_name(),
                    }));
                }
            }
        }
    }
    json!({
        "path": display(&item.path),
        "dest": item.dest.to_string_lossy(),
        "files": files,
        "dirs": dirs,
        "bytes": bytes,
        "create": create,
        "unchanged": unchanged,
        "overwrite": overwrite,
        "overwritten": listed,
    })
}

/// `POST /api/restore/plan {ids, at, to}`: what the restore would create,
/// overwrite and leave as it is, for the confirmation.
pub(crate) async fn plan(State(ctx): State<Arc<Ctx>>, body: Bytes) -> ApiResult {
    let v = blocking(&ctx, move |ctx| {
        let (r, at, to) = parse(&body)?;
        let items = items(ctx, &r, at, to.as_deref())?;
        let plans: Vec<Value> = items.iter().map(plan_item).collect();
        let sum = |k: &str| {
            plans
                .iter()
                .map(|p| p[k].as_u64().unwrap_or(0))
                .sum::<u64>()
        };
        Ok(json!({
            "items": plans,
            "to": to.map(|t| t.to_string_lossy().into_owned()),
            "files": sum("files"),
            "bytes": sum("bytes"),
            "create": sum("create"),
            "overwrite": sum("overwrite"),
            "unchanged": sum("unchanged"),
        }))
    })
    .await?;
    Ok(json_response(&v))
}

/// `POST /api/restore {ids, at, to}`: start restoring; the job's number.
pub(crate) async fn start(State(ctx): State<Arc<Ctx>>, body: Bytes) -> ApiResult {
    let c = ctx.clone();
    let (items, at, to) = blocking(&ctx, move |ctx| {
        let (r, at, to) = parse(&body)?;
        Ok((items(ctx, &r, at, to.as_deref())?, at, to))
    })
    .await?;
    if let Some(dir) = &to {
        rewind_core::private::create_dir_all(dir)
            .map_err(|e| bad(format!("cannot create {}: {e}", dir.display())))?;
    }
    let job = Arc::new(Job {
        bytes_done: AtomicU64::new(0),
        bytes_total: items.iter().flat_map(|i| &i.tree).map(|v| v.size()).sum(),
        state: Mutex::new(JobState {
            running: true,
            ..Default::default()
        }),
    });
    let n = {
        let mut jobs = c.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.next += 1;
        let n = jobs.next;
        if jobs.jobs.len() >= KEEP_JOBS
            && let Some(&old) = jobs.jobs.keys().min()
        {
            jobs.jobs.remove(&old);
        }
        jobs.jobs.insert(n, job.clone());
        n
    };
    let spawned = std::thread::Builder::new()
        .name("ui-restore".into())
        .spawn(move || run(&c, &job, items, at, to.is_some()));
    if let Err(e) = spawned {
        return Err(bad(format!("cannot start the restore: {e}")));
    }
    Ok(json_response(&json!({ "job": n })))
}

fn run(ctx: &Ctx, job: &Job, items: Vec<Item>, at: Timestamp, elsewhere: bool) {
    let state = || job.state.lock().unwrap_or_else(|e| e.into_inner());
    for item in items {
        state().current = display(&item.path);
        let progress = |n: u64| {
            job.bytes_done.fetch_add(n, Ordering::Relaxed);
        };
        let opts = rewind_restore::RestoreOptions {
            to: elsewhere.then(|| item.dest.clone()),
            delete: false,
            chunker: ctx.chunker,
            keep: None,
            progress: Some(&progress),
            numeric_owner: false,
        };
        let what = display(&item.path);
        tracing::info!(
            "web UI: restoring {what} as of {} to {}",
            at.to_local_string(),
            item.dest.display()
        );
        match rewind_restore::restore(ctx.repo.as_ref(), &ctx.client, &item.path, at, &opts) {
            Ok(r) => state().results.push(json!({
                "path": display(&item.path),
                "dest": display(to_bytes(&item.dest)),
                "files": r.files,
                "dirs": r.dirs,
                "unchanged": r.unchanged,
                "bytes_fetched": r.bytes_fetched,
                "bytes_reused": r.bytes_reused,
                "problems": r.problems.iter().map(|p| json!({"path": display(&p.path), "message": p.message})).collect::<Vec<_>>(),
            })),
            Err(e) => {
                let mut st = state();
                st.error = Some(format!("{}: {e}", display(&item.path)));
                break;
            }
        }
    }
    let mut st = state();
    st.running = false;
    st.current.clear();
}

/// `GET /api/restore/{job}`: a restore's progress, and its results once
/// done.
pub(crate) async fn progress(State(ctx): State<Arc<Ctx>>, UrlPath(n): UrlPath<u64>) -> ApiResult {
    let job = ctx
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .jobs
        .get(&n)
        .cloned()
        .ok_or_else(|| not_found(format!("no restore {n}")))?;
    let st = job.state.lock().unwrap_or_else(|e| e.into_inner());
    let problems: usize = st
        .results
        .iter()
        .map(|r| r["problems"].as_array().map_or(0, Vec::len))
        .sum();
    let v = json!({
        "job": n,
        "state": if st.running { "running" } else if st.error.is_some() { "failed" } else if problems > 0 { "partial" } else { "done" },
        "bytes_done": job.bytes_done.load(Ordering::Relaxed),
        "bytes_total": job.bytes_total,
        "current": st.current,
        "results": st.results,
        "error": st.error,
    });
    Ok(json_response(&v))
}
