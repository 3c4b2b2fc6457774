//! The JSON endpoints of the overview, the timeline, the browser and the
//! search, and what every handler shares: errors, paths as ids, times.
//!
//! Times travel as strings of nanoseconds since the epoch (a JavaScript
//! number cannot hold them exactly); paths as ids, the URL-safe base64 of
//! their bytes, so a name that is not UTF-8 goes and comes back intact.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use rewind_core::path::display;
use rewind_core::{FileKind, RepoError, Timestamp, Version, content_changed};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::catalog::kind_of;
use crate::server::Ctx;

/// A failed request: its status and one line for the page.
#[derive(Debug)]
pub(crate) struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "application/json")],
            json!({ "error": self.1 }).to_string(),
        )
            .into_response()
    }
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> ApiError {
        let status = if e.is_transient() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        ApiError(status, e.to_string())
    }
}

pub(crate) fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

pub(crate) fn not_found(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, msg.into())
}

pub(crate) type ApiResult = Result<Response, ApiError>;

/// A JSON response.
pub(crate) fn json_response<T: Serialize>(v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(b) => ([(header::CONTENT_TYPE, "application/json")], b).into_response(),
        Err(e) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Run repository work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    ctx: &Arc<Ctx>,
    f: impl FnOnce(&Ctx) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || f(&ctx))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

/// The id of a path: URL-safe base64 of its bytes.
pub(crate) fn id_of(path: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(path)
}

/// The path an id names.
pub(crate) fn path_of(id: &str) -> Result<Vec<u8>, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(id)
        .map_err(|_| bad("bad path id"))
}

/// A time for the page: nanoseconds as a string.
pub(crate) fn ns(t: i64) -> String {
    t.to_string()
}

/// A moment from the page (nanoseconds); absent or `now`: the latest.
pub(crate) fn parse_at(s: Option<&str>) -> Result<Timestamp, ApiError> {
    match s {
        None | Some("") | Some("now") => Ok(Timestamp::MAX),
        Some(s) => s
            .parse::<i64>()
            .map(Timestamp)
            .map_err(|_| bad(format!("bad time {s:?}"))),
    }
}

/// The last component of a path, for people.
pub(crate) fn base_name(p: &[u8]) -> String {
    let name = p.rsplit(|&c| c == b'/').next().unwrap_or(p);
    display(if name.is_empty() { p } else { name })
}

fn mtime_ns(v: &Version) -> Option<String> {
    v.meta().map(|m| {
        ns(m.mtime
            .sec
            .saturating_mul(1_000_000_000)
            .saturating_add(m.mtime.nsec as i64))
    })
}

/// `GET /api/status`: the agent's live status (as `rewind status --json`
/// shows it) with the repository's counters and the dumps' last runs.
pub(crate) async fn status(State(ctx): State<Arc<Ctx>>) -> ApiResult {
    let v = blocking(&ctx, |ctx| {
        let mut live = (ctx.status)();
        let (stats, error) = match ctx.repo.stats() {
            Ok(s) => (s, None),
            Err(e) => (Default::default(), Some(e.to_string())),
        };
        let dumps: Vec<Value> = if error.is_none() {
            ctx.repo
                .tree_at(&ctx.client, b"dumps", Timestamp::MAX)?
                .iter()
                .filter_map(|v| {
                    let s = v.stream_status()?;
                    Some(json!({
                        "path": display(&v.path),
                        "time": ns(v.observed_at.0),
                        "ok": s.ok(),
                        "status": s.describe(),
                        "size": v.size(),
                    }))
                })
                .collect()
        } else {
            Vec::new()
        };
        live["repository"] = json!({
            "versions": stats.versions,
            "chunks": stats.chunks,
            "packs": stats.packs,
            "pack_bytes": stats.pack_bytes,
            "last_commit": stats.last_commit.map(|t| ns(t.0)),
            "error": error,
        });
        live["client"] = json!(ctx.client);
        live["dump_runs"] = json!(dumps);
        live["now"] = json!(ns(Timestamp::now().0));
        Ok(live)
    })
    .await?;
    Ok(json_response(&v))
}

#[derive(Deserialize)]
pub(crate) struct TimelineQ {
    from: Option<String>,
    to: Option<String>,
    buckets: Option<usize>,
}

/// At most this many bars: more than a screen has pixels for.
const MAX_BUCKETS: usize = 2000;

/// `GET /api/timeline?from&to&buckets`: the number of versions in each of
/// `buckets` equal spans of `[from, to)`, and the dump runs in it.
pub(crate) async fn timeline(State(ctx): State<Arc<Ctx>>, Query(q): Query<TimelineQ>) -> ApiResult {
    let v = blocking(&ctx, move |ctx| {
        let cat = ctx.catalog.get()?;
        let now = Timestamp::now().0;
        let first = cat.times.first().copied();
        let last = cat.times.last().copied();
        let to = match q.to.as_deref() {
            Some(s) => parse_at(Some(s))?.0.min(now.max(last.unwrap_or(now)) + 1),
            None => now,
        };
        let from = match q.from.as_deref() {
            Some(s) => parse_at(Some(s))?.0,
            None => first.unwrap_or(now - 3_600_000_000_000),
        };
        if from >= to {
            return Err(bad("the timeline's start is not before its end"));
        }
        let n = q.buckets.unwrap_or(100).clamp(1, MAX_BUCKETS);
        let span = (to - from) as i128;
        let edge = |i: usize| from + (span * i as i128 / n as i128) as i64;
        let counts: Vec<usize> = (0..n).map(|i| cat.count(edge(i), edge(i + 1))).collect();
        let dumps: Vec<Value> = cat
            .dumps
            .iter()
            .filter(|d| d.time >= from && d.time < to)
            .take(1000)
            .map(|d| {
                json!({
                    "time": ns(d.time),
                    "path": display(&d.path),
                    "name": base_name(&d.path),
                    "ok": d.ok,
                    "status": d.status,
                    "size": d.size,
                })
            })
            .collect();
        Ok(json!({
            "from": ns(from),
            "to": ns(to),
            "counts": counts,
            "first": first.map(ns),
            "last": last.map(ns),
            "total": cat.times.len(),
            "dumps": dumps,
        }))
    })
    .await?;
    Ok(json_response(&v))
}

/// One entry of a folder listing.
#[derive(Clone, Serialize)]
pub(crate) struct Row {
    name: String,
    id: String,
    kind: &'static str,
    /// A file's size; a folder's: the bytes of everything below it.
    size: u64,
    mtime: Option<String>,
    /// When this version was captured.
    time: String,
    seq: u64,
    /// A folder's number of entries below it (all depths).
    entries: u64,
    link: Option<String>,
    status: Option<String>,
    ok: Option<bool>,
}

fn row(name: String, v: &Version) -> Row {
    Row {
        name,
        id: id_of(&v.path),
        kind: kind_of(v),
        size: v.size(),
        mtime: mtime_ns(v),
        time: ns(v.observed_at.0),
        seq: v.seq,
        entries: 0,
        link: v
            .meta()
            .and_then(|m| m.symlink_target.as_ref())
            .map(|t| display(t)),
        status: v.stream_status().map(|s| s.describe()),
        ok: v.stream_status().map(|s| s.ok()),
    }
}

/// A folder at a moment, its entries sorted (folders first).
pub(crate) struct Listing {
    exists: bool,
    rows: Vec<Row>,
}

/// Listings computed lately: paging through a large folder asks for the
/// same moment again and again. Entries are trusted for [`TREE_TTL`], so
/// a listing of "now" shows captures within seconds.
#[derive(Default)]
pub(crate) struct TreeCache(Mutex<Vec<Cached>>);

/// A listing of a path at a moment, and when it was made.
type Cached = (Vec<u8>, i64, Instant, Arc<Listing>);

const TREE_TTL: Duration = Duration::from_secs(5);
/// Listings kept: a few folders open at once.
const TREE_KEEP: usize = 4;

impl TreeCache {
    fn get(&self, path: &[u8], at: i64) -> Option<Arc<Listing>> {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        c.retain(|e| e.2.elapsed() < TREE_TTL);
        c.iter()
            .find(|e| e.0 == path && e.1 == at)
            .map(|e| e.3.clone())
    }

    fn put(&self, path: Vec<u8>, at: i64, l: Arc<Listing>) {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if c.len() >= TREE_KEEP {
            c.remove(0);
        }
        c.push((path, at, Instant::now(), l));
    }
}

/// The entries directly under `base` at `at`, with the sizes and counts of
/// what lies deeper folded into each subfolder.
fn listing(ctx: &Ctx, base: &[u8], at: Timestamp) -> Result<Listing, ApiError> {
    if base.is_empty() {
        return top(ctx, at);
    }
    let tree = ctx.repo.tree_at(&ctx.client, base, at)?;
    let virtual_dir = base == b"dumps";
    let exists = virtual_dir || tree.first().is_some_and(|v| v.path == base);
    if !exists {
        return Ok(Listing {
            exists: false,
            rows: Vec::new(),
        });
    }
    let prefix_len = if base == b"/" { 1 } else { base.len() + 1 };
    let mut rows: Vec<Row> = Vec::new();
    let mut by_name: HashMap<&[u8], usize> = HashMap::new();
    for v in &tree {
        if v.path.len() <= prefix_len || v.path == base {
            continue;
        }
        let rel = &v.path[prefix_len..];
        match rel.iter().position(|&c| c == b'/') {
            None => {
                by_name.insert(rel, rows.len());
                rows.push(row(display(rel), v));
            }
            Some(cut) => {
                if let Some(&i) = by_name.get(&rel[..cut]) {
                    rows[i].entries += 1;
                    if v.meta().is_none_or(|m| m.kind != FileKind::Dir) {
                        rows[i].size += v.size();
                    }
                }
            }
        }
    }
    rows.sort_by(|a, b| {
        (a.kind != "dir")
            .cmp(&(b.kind != "dir"))
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok(Listing { exists, rows })
}

/// The top: the protected folders as they were at `at`, and the dumps.
fn top(ctx: &Ctx, at: Timestamp) -> Result<Listing, ApiError> {
    let mut rows = Vec::new();
    for r in &ctx.roots {
        let b = rewind_core::path::to_bytes(r);
        let vs = ctx.repo.versions_of(&ctx.client, b)?;
        if let Some(v) = vs.iter().rev().find(|v| v.observed_at <= at)
            && !v.is_tombstone()
        {
            rows.push(row(display(b), v));
        }
    }
    let dumps = ctx.repo.tree_at(&ctx.client, b"dumps", at)?;
    if !dumps.is_empty() {
        rows.push(Row {
            name: "dumps".into(),
            id: id_of(b"dumps"),
            kind: "dir",
            size: dumps.iter().map(|v| v.size()).sum(),
            mtime: None,
            time: ns(dumps.iter().map(|v| v.observed_at.0).max().unwrap_or(0)),
            seq: 0,
            entries: dumps.len() as u64,
            link: None,
            status: None,
            ok: None,
        });
    }
    Ok(Listing { exists: true, rows })
}

#[derive(Deserialize)]
pub(crate) struct TreeQ {
    #[serde(default)]
    id: String,
    at: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

/// Entries per page of a folder: a screen and a half; the page asks for
/// more as it scrolls.
const TREE_PAGE: usize = 500;

/// `GET /api/tree?id&at&offset&limit`: a folder as it was at `at` (no id:
/// the protected folders and the dumps), a page of its entries.
pub(crate) async fn tree(State(ctx): State<Arc<Ctx>>, Query(q): Query<TreeQ>) -> ApiResult {
    let base = path_of(&q.id)?;
    let at = parse_at(q.at.as_deref())?;
    let v = blocking(&ctx, move |ctx| {
        let l = match ctx.trees.get(&base, at.0) {
            Some(l) => l,
            None => {
                let l = Arc::new(listing(ctx, &base, at)?);
                ctx.trees.put(base.clone(), at.0, l.clone());
                l
            }
        };
        let offset = q.offset.unwrap_or(0).min(l.rows.len());
        let limit = q.limit.unwrap_or(TREE_PAGE).clamp(1, 5000);
        let end = (offset + limit).min(l.rows.len());
        let parent = if base.is_empty() {
            None
        } else if ctx
            .roots
            .iter()
            .any(|r| rewind_core::path::to_bytes(r) == base)
            || base == b"dumps"
        {
            Some(String::new())
        } else {
            let cut = base.iter().rposition(|&c| c == b'/').unwrap_or(0);
            Some(id_of(&base[..cut.max(1)]))
        };
        Ok(json!({
            "id": q.id,
            "path": display(&base),
            "at": q.at,
            "exists": l.exists,
            "parent": parent,
            "total": l.rows.len(),
            "offset": offset,
            "entries": &l.rows[offset..end],
        }))
    })
    .await?;
    Ok(json_response(&v))
}

/// What a version changed, next to the one before it.
pub(crate) fn change_of(prev: Option<&Version>, v: &Version) -> &'static str {
    if v.is_tombstone() {
        "deleted"
    } else if prev.is_none_or(|p| p.is_tombstone()) {
        "created"
    } else if content_changed(prev, v) {
        "content"
    } else {
        "metadata"
    }
}

#[derive(Deserialize)]
pub(crate) struct VersionsQ {
    id: String,
    offset: Option<usize>,
    limit: Option<usize>,
}

/// Versions per page of a file's list.
const VERSIONS_PAGE: usize = 200;

/// `GET /api/versions?id&offset&limit`: a page of a path's versions,
/// newest first, each with what it changed.
pub(crate) async fn versions(State(ctx): State<Arc<Ctx>>, Query(q): Query<VersionsQ>) -> ApiResult {
    let path = path_of(&q.id)?;
    let v = blocking(&ctx, move |ctx| {
        let vs = ctx.repo.versions_of(&ctx.client, &path)?;
        if vs.is_empty() {
            return Err(not_found(format!("no versions of {}", display(&path))));
        }
        let total = vs.len();
        let offset = q.offset.unwrap_or(0).min(total);
        let limit = q.limit.unwrap_or(VERSIONS_PAGE).clamp(1, 5000);
        // Newest first: position k of the page is index total-1-k.
        let rows: Vec<Value> = (offset..(offset + limit).min(total))
            .map(|k| {
                let i = total - 1 - k;
                let v = &vs[i];
                let prev = i.checked_sub(1).map(|j| &vs[j]);
                json!({
                    "seq": v.seq,
                    "time": ns(v.observed_at.0),
                    "size": v.size(),
                    "kind": kind_of(v),
                    "change": change_of(prev, v),
                    "mode": v.meta().map(|m| m.mode),
                    "mtime": mtime_ns(v),
                    "status": v.stream_status().map(|s| s.describe()),
                    "ok": v.stream_status().map(|s| s.ok()),
                })
            })
            .collect();
        let newest = &vs[total - 1];
        Ok(json!({
            "id": q.id,
            "path": display(&path),
            "name": base_name(&path),
            "total": total,
            "offset": offset,
            "deleted": newest.is_tombstone(),
            "versions": rows,
        }))
    })
    .await?;
    Ok(json_response(&v))
}

#[derive(Deserialize)]
pub(crate) struct SearchQ {
    q: String,
    limit: Option<usize>,
}

/// `GET /api/search?q&limit`: paths whose name matches, across all
/// history, deleted ones included, with when each last existed.
pub(crate) async fn search(State(ctx): State<Arc<Ctx>>, Query(q): Query<SearchQ>) -> ApiResult {
    let pattern = q.q.trim().to_string();
    if pattern.is_empty() {
        return Err(bad("nothing to search for"));
    }
    let v = blocking(&ctx, move |ctx| {
        let cat = ctx.catalog.get()?;
        let limit = q.limit.unwrap_or(500).clamp(1, 5000);
        let (found, total) = cat
            .find(&pattern, limit)
            .map_err(|e| bad(format!("bad pattern: {e}")))?;
        let results: Vec<Value> = found
            .iter()
            .map(|p| {
                json!({
                    "path": display(&p.path),
                    "id": id_of(&p.path),
                    "name": base_name(&p.path),
                    "kind": p.kind,
                    "size": p.size,
                    "versions": p.versions,
                    "first": ns(p.first),
                    "last_present": p.last_present.map(ns),
                    "deleted_at": p.deleted_at.map(ns),
                    "exists": p.deleted_at.is_none(),
                })
            })
            .collect();
        Ok(json!({ "total": total, "results": results }))
    })
    .await?;
    Ok(json_response(&v))
}
