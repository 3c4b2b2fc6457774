//! `rewind diff T1 T2 [PATH]`: what changed between two moments, through
//! the point-in-time definition (the tree at each moment, compared:
//! [`rewind_restore::diff_between`]).

use std::io::Write;
use std::path::Path;

use anyhow::{Result, bail};
use rewind_agent::Target;
use rewind_core::path::{JsonPath, display};
use rewind_core::{Change, TreeChange, Version};
use serde_json::json;

use crate::args::{open, parse_at};

pub(crate) fn diff(t: &Target, t1: &str, t2: &str, path: Option<&Path>, json: bool) -> Result<i32> {
    let (a, b) = (parse_at(t1)?, parse_at(t2)?);
    let o = open(t)?;
    let base = match path {
        Some(p) => o.stored_path(p)?,
        None => b"/".to_vec(),
    };
    let Some(changes) = rewind_restore::diff_between(o.repo.as_ref(), &o.client, &base, a, b)?
    else {
        bail!(
            "{} existed at neither {} nor {}",
            display(&base),
            a.to_local_string(),
            b.to_local_string()
        );
    };
    let count = |c: Change| changes.iter().filter(|x| x.change == c).count();
    let mut out = std::io::stdout().lock();
    if json {
        let list: Vec<_> = changes.iter().map(change_json).collect();
        serde_json::to_writer_pretty(
            &mut out,
            &json!({
                "path": JsonPath(&base),
                "from": a.to_string(),
                "to": b.to_string(),
                "changes": list,
                "summary": {
                    "added": count(Change::Added),
                    "removed": count(Change::Removed),
                    "changed": count(Change::Content),
                    "metadata": count(Change::Metadata),
                    "renamed": count(Change::Renamed),
                },
            }),
        )?;
        writeln!(out)?;
        return Ok(0);
    }
    for c in &changes {
        let (mark, what) = match c.change {
            Change::Added => ('+', size_of(c.new.as_ref())),
            Change::Removed => ('-', size_of(c.old.as_ref())),
            Change::Content => (
                'M',
                format!("{} -> {}", size_of(c.old.as_ref()), size_of(c.new.as_ref())),
            ),
            Change::Metadata => ('U', c.fields.join(", ")),
            Change::Renamed => ('R', size_of(c.new.as_ref())),
        };
        let mut line = format!("{mark}  {:<8}  {what:<24}  ", c.change.as_str());
        if let Some(f) = &c.from {
            line.push_str(&display(f));
            line.push_str(" -> ");
        }
        line.push_str(&display(&c.path));
        writeln!(out, "{}", line.trim_end())?;
    }
    out.flush()?;
    eprintln!(
        "{} to {}: {} added, {} removed, {} changed, {} metadata only, {} renamed",
        a.to_local_string(),
        b.to_local_string(),
        count(Change::Added),
        count(Change::Removed),
        count(Change::Content),
        count(Change::Metadata),
        count(Change::Renamed),
    );
    Ok(0)
}

fn size_of(v: Option<&Version>) -> String {
    match v {
        Some(v)
            if v.meta()
                .is_some_and(|m| m.kind == rewind_core::FileKind::Dir) =>
        {
            "dir".into()
        }
        Some(v) => indicatif::HumanBytes(v.size()).to_string(),
        None => String::new(),
    }
}

fn change_json(c: &TreeChange) -> serde_json::Value {
    json!({
        "change": c.change.as_str(),
        "path": JsonPath(&c.path),
        "from": c.from.as_ref().map(|f| JsonPath(f)),
        "kind": c.new.as_ref().or(c.old.as_ref()).map(Version::kind_name),
        "old_size": c.old.as_ref().map(Version::size),
        "new_size": c.new.as_ref().map(Version::size),
        "fields": c.fields,
        "old_seq": c.old.as_ref().map(|v| v.seq),
        "new_seq": c.new.as_ref().map(|v| v.seq),
        "old_time": c.old.as_ref().map(|v| v.observed_at.to_string()),
        "new_time": c.new.as_ref().map(|v| v.observed_at.to_string()),
    })
}
