//! `rewind find`: paths that matched a pattern at some moment of a range,
//! deleted ones included, answered by the repository's `find` query (on a
//! server, only the hits travel) under each base ([`rewind_restore::find_under`]).

use std::io::Write;
use std::path::Path;

use anyhow::{Result, bail};
use rewind_agent::Target;
use rewind_core::path::{JsonPath, display};
use rewind_core::{FindQuery, FindReply, PathPattern};
use serde_json::json;

use crate::args::{open, parse_at};

/// What `rewind find` was asked.
pub(crate) struct FindOptions<'a> {
    pub pattern: &'a str,
    pub path: Option<&'a Path>,
    pub deleted: bool,
    pub since: Option<&'a str>,
    pub until: Option<&'a str>,
    pub ignore_case: bool,
    pub json: bool,
}

pub(crate) fn find(t: &Target, a: FindOptions<'_>) -> Result<i32> {
    // Refused here with the pattern's own message, before any request.
    PathPattern::new(a.pattern, a.ignore_case)?;
    let since = a.since.map(parse_at).transpose()?;
    let until = a.until.map(parse_at).transpose()?;
    if let (Some(s), Some(u)) = (since, until)
        && s > u
    {
        bail!("--since is after --until");
    }
    let o = open(t)?;
    let stored;
    let bases: &[&[u8]] = match a.path {
        Some(p) => {
            stored = o.stored_path(p)?;
            &[&stored]
        }
        None => &rewind_restore::EVERYWHERE,
    };
    let query = FindQuery {
        base: Vec::new(),
        pattern: a.pattern.to_string(),
        ignore_case: a.ignore_case,
        since,
        until,
        deleted_only: a.deleted,
        limit: 0,
    };
    let FindReply { hits, truncated } =
        rewind_restore::find_under(o.repo.as_ref(), &o.client, bases, &query)?;
    if truncated {
        eprintln!(
            "rewind: more paths match than one answer holds ({}); showing the first ones: narrow the pattern or the path",
            rewind_core::history::FIND_LIMIT
        );
    }
    let mut out = std::io::stdout().lock();
    if a.json {
        let list: Vec<_> = hits
            .iter()
            .map(|h| {
                json!({
                    "path": JsonPath(&h.path),
                    "kind": h.kind.map_or("dump", |k| k.as_str()),
                    "size": h.size,
                    "first_seen": h.first_seen.to_string(),
                    "last_seen": h.last_seen.map(|t| t.to_string()),
                    "last_version": h.last_version.to_string(),
                    "exists_now": h.exists_now,
                })
            })
            .collect();
        serde_json::to_writer_pretty(
            &mut out,
            &json!({
                "pattern": a.pattern,
                "since": since.map(|t| t.to_string()),
                "until": until.map(|t| t.to_string()),
                "truncated": truncated,
                "paths": list,
            }),
        )?;
        writeln!(out)?;
        return Ok(0);
    }
    if hits.is_empty() {
        eprintln!("rewind: no path matches");
        return Ok(0);
    }
    writeln!(
        out,
        "{:<23}  {:<23}  {:<7}  {:>10}  PATH",
        "FIRST SEEN", "LAST SEEN", "NOW", "SIZE"
    )?;
    for h in &hits {
        writeln!(
            out,
            "{:<23}  {:<23}  {:<7}  {:>10}  {}",
            h.first_seen.to_local_string(),
            h.last_seen
                .map_or_else(|| "now".to_string(), |t| t.to_local_string()),
            if h.exists_now { "exists" } else { "deleted" },
            match h.kind {
                Some(rewind_core::FileKind::Dir) => "dir".to_string(),
                _ => indicatif::HumanBytes(h.size).to_string(),
            },
            display(&h.path)
        )?;
    }
    Ok(0)
}
