//! A job's stored runs: the stream paths under `dumps/NAME`, their
//! versions, the newest run, and a run told as a line or a JSON object
//! (`rewind dump list|versions`).

use rewind_core::path::JsonPath;
use rewind_core::{RepoError, Repository, Timestamp, Version};
use serde_json::{Value, json};

use crate::process::last_error_line;

/// The stored paths of job `name`: `dumps/NAME` or, for an all-databases
/// job (or a name with a `/`), every stream under it; sorted.
pub fn stream_paths(
    repo: &dyn Repository,
    client: &str,
    name: &str,
) -> Result<Vec<Vec<u8>>, RepoError> {
    let base = format!("dumps/{name}").into_bytes();
    let tree = repo.tree_at(client, &base, Timestamp::MAX)?;
    let mut paths: Vec<Vec<u8>> = tree
        .into_iter()
        .filter(|v| v.stream_status().is_some())
        .map(|v| v.path)
        .collect();
    if paths.is_empty() && !repo.versions_of(client, &base)?.is_empty() {
        paths.push(base);
    }
    paths.sort();
    paths.dedup();
    Ok(paths)
}

/// Every run of the streams at `paths`, oldest first.
pub fn runs_of(
    repo: &dyn Repository,
    client: &str,
    paths: &[Vec<u8>],
) -> Result<Vec<Version>, RepoError> {
    let mut all = Vec::new();
    for p in paths {
        all.extend(repo.versions_of(client, p)?);
    }
    all.sort_by_key(|v| (v.observed_at, v.seq));
    Ok(all)
}

/// The newest run of job `name` across its streams, failed ones included.
pub fn last_run(
    repo: &dyn Repository,
    client: &str,
    name: &str,
) -> Result<Option<Version>, RepoError> {
    let mut newest: Option<Version> = None;
    for p in stream_paths(repo, client, name)? {
        for v in repo.versions_of(client, &p)? {
            if newest
                .as_ref()
                .is_none_or(|n| v.observed_at > n.observed_at)
            {
                newest = Some(v);
            }
        }
    }
    Ok(newest)
}

/// How a run ended, in a few words: `ok`, or what failed with the last
/// line of its stderr.
pub fn run_summary(v: &Version) -> String {
    match v.stream_status() {
        Some(s) if s.ok() => "ok".into(),
        Some(s) => {
            let mut t = s.describe();
            if let Some(l) = last_error_line(&s.stderr) {
                t.push_str(": ");
                t.push_str(&l);
            }
            t
        }
        None => "not a dump".into(),
    }
}

/// A run as `rewind dump list --json` and `dump versions --json` show it:
/// its status in full, times as RFC 3339 (and nanoseconds).
pub fn run_json(v: &Version) -> Value {
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
