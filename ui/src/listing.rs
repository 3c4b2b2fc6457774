//! A folder as it was at a moment: its direct entries, with what lies
//! deeper folded into each subfolder's size and count, and the few
//! listings made lately (paging asks for the same one again).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rewind_core::path::display;
use rewind_core::{FileKind, Repository, Timestamp, Version};
use serde::Serialize;

use crate::common::{ApiError, id_of, mtime_ns, ns};

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
        kind: v.kind_name(),
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
    pub exists: bool,
    pub rows: Vec<Row>,
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
    pub(crate) fn get(&self, path: &[u8], at: i64) -> Option<Arc<Listing>> {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        c.retain(|e| e.2.elapsed() < TREE_TTL);
        c.iter()
            .find(|e| e.0 == path && e.1 == at)
            .map(|e| e.3.clone())
    }

    pub(crate) fn put(&self, path: Vec<u8>, at: i64, l: Arc<Listing>) {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if c.len() >= TREE_KEEP {
            c.remove(0);
        }
        c.push((path, at, Instant::now(), l));
    }
}

/// The entries directly under `base` at `at`, with the sizes and counts of
/// what lies deeper folded into each subfolder.
pub(crate) fn listing(
    repo: &dyn Repository,
    client: &str,
    roots: &[PathBuf],
    base: &[u8],
    at: Timestamp,
) -> Result<Listing, ApiError> {
    if base.is_empty() {
        return top(repo, client, roots, at);
    }
    let tree = repo.tree_at(client, base, at)?;
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
fn top(
    repo: &dyn Repository,
    client: &str,
    roots: &[PathBuf],
    at: Timestamp,
) -> Result<Listing, ApiError> {
    let mut rows = Vec::new();
    for r in roots {
        let b = rewind_core::path::to_bytes(r);
        let vs = repo.versions_of(client, b)?;
        if let Some(v) = vs.iter().rev().find(|v| v.observed_at <= at)
            && !v.is_tombstone()
        {
            rows.push(row(display(b), v));
        }
    }
    let dumps = repo.tree_at(client, b"dumps", at)?;
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
