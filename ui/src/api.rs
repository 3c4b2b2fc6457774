//! The JSON endpoints of the overview, the timeline, the browser and the
//! search.

use std::sync::Arc;

use axum::extract::{Query, State};
use rewind_core::path::display;
use rewind_core::{Timestamp, change_of};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::common::{
    ApiResult, bad, base_name, id_of, json_response, mtime_ns, not_found, ns, parse_at, path_of,
};
use crate::ctx::{Ctx, blocking};
use crate::listing::listing;

/// `GET /api/status`: the agent's live status (as `rewind status --json`
/// shows it) with the repository's counters and the dumps' last runs.
pub(crate) async fn status(State(ctx): State<Arc<Ctx>>) -> ApiResult {
    let v = blocking(&ctx, |ctx| {
        let mut live = (ctx.status)();
        let o = rewind_core::Overview::gather(ctx.repo.as_ref(), &ctx.client, true)?;
        let dumps: Vec<Value> = o
            .dump_runs
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
            .collect();
        live["repository"] = json!({
            "versions": o.stats.versions,
            "chunks": o.stats.chunks,
            "packs": o.stats.packs,
            "pack_bytes": o.stats.pack_bytes,
            "last_commit": o.stats.last_commit.map(|t| ns(t.0)),
            "error": o.unreachable,
        });
        live["kept"] = o.retention.as_ref().map_or(Value::Null, kept_json);
        live["client"] = json!(ctx.client);
        live["dump_runs"] = json!(dumps);
        live["now"] = json!(ns(Timestamp::now().0));
        Ok(live)
    })
    .await?;
    Ok(json_response(&v))
}

/// What the repository keeps of this client's history (retention): times
/// as nanosecond strings, like every time the page gets.
fn kept_json(r: &rewind_core::forget::RetentionStatus) -> Value {
    json!({
        "thinned_before": r.thinned_before.map(|t| ns(t.0)),
        "points": r.points,
        "oldest_point": r.oldest_point.map(|t| ns(t.0)),
        "pins": r.pins.iter().map(pin_json).collect::<Vec<_>>(),
        "reclaimable": r.reclaimable,
        "last_forget": r.last_forget.as_ref().map(|f| json!({
            "at": ns(f.at.0),
            "versions_forgotten": f.versions_forgotten,
        })),
        "last_prune": r.last_prune.as_ref().map(|p| json!({
            "at": p.at.map(|t| ns(t.0)),
            "bytes_freed": p.bytes_freed,
            "packs_deleted": p.packs_deleted,
            "packs_repacked": p.packs_repacked,
        })),
        "space_removals": r.space_removals.len(),
        "server_policy": r.server_policy,
    })
}

fn pin_json(p: &rewind_core::forget::Pin) -> Value {
    json!({ "id": p.id, "at": ns(p.at.0), "label": p.label })
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
/// `buckets` equal spans of `[from, to)`, and the dump runs and pins in it.
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
        let pins: Vec<Value> = ctx
            .repo
            .pins(&ctx.client)?
            .iter()
            .filter(|p| p.at.0 >= from && p.at.0 < to)
            .map(pin_json)
            .collect();
        Ok(json!({
            "from": ns(from),
            "to": ns(to),
            "counts": counts,
            "pins": pins,
            "first": first.map(ns),
            "last": last.map(ns),
            "total": cat.times.len(),
            "dumps": dumps,
        }))
    })
    .await?;
    Ok(json_response(&v))
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
                let l = Arc::new(listing(
                    ctx.repo.as_ref(),
                    &ctx.client,
                    &ctx.roots,
                    &base,
                    at,
                )?);
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
                    "kind": v.kind_name(),
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
