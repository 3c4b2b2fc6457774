//! `rewind forget`, `prune`, `pin`, `pins`, `unpin`: asked of a running
//! agent (the repository's one writer) when there is one, else done in this
//! process ([`rewind_agent::retention::perform`]); printed here.

use std::path::PathBuf;

use anyhow::{Result, bail};
use rewind_agent::Target;
use rewind_agent::retention::{RetentionOp, not_on_a_server, perform};
use rewind_core::Timestamp;
use rewind_core::forget::{ForgetReport, Pin, PruneReport};
use rewind_core::retention::QueryPoint;
use serde_json::{Value, json};

use crate::args::{open, parse_at};

fn time(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| json!(t.to_string()))
}

/// `rewind forget`.
pub(crate) fn forget(
    target: &Target,
    policy: Option<String>,
    dry_run: bool,
    json_out: bool,
    config: Option<PathBuf>,
) -> Result<i32> {
    not_on_a_server(target)?;
    let v = perform(
        target,
        &RetentionOp::Forget { policy, dry_run },
        config.as_deref(),
    )?;
    let r: ForgetReport = serde_json::from_value(v)?;
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "client": r.client,
                "dry_run": r.dry_run,
                "policy": r.policy,
                "thinned_before": time(r.thinned_before),
                "points_before": r.points_before,
                "points_after": r.points_after,
                "space_removed": r.space_removed.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                "versions_before": r.versions_before,
                "versions_forgotten": r.versions_forgotten,
                "bytes_reclaimable": r.bytes_reclaimable,
            }))?
        );
        return Ok(0);
    }
    let verb = if r.dry_run { "would forget" } else { "forgot" };
    println!(
        "{verb} {} of {} versions of {} (policy {})",
        r.versions_forgotten, r.versions_before, r.client, r.policy
    );
    println!(
        "kept points  {} (before: {}); whole history since {}",
        r.points_after,
        r.points_before,
        r.thinned_before
            .map_or("the start".into(), |t| t.to_local_string())
    );
    println!(
        "reclaimable  about {} by `rewind prune`",
        indicatif::HumanBytes(r.bytes_reclaimable)
    );
    Ok(0)
}

/// `rewind prune`.
pub(crate) fn prune(
    target: &Target,
    dry_run: bool,
    max_unused: Option<f64>,
    json_out: bool,
    config: Option<PathBuf>,
) -> Result<i32> {
    not_on_a_server(target)?;
    if let Some(m) = max_unused
        && !(0.0..=100.0).contains(&m)
    {
        bail!("--max-unused {m}: expected a percentage from 0 to 100");
    }
    let op = RetentionOp::Prune {
        dry_run,
        max_unused: max_unused.map(|m| m / 100.0),
    };
    let v = perform(target, &op, config.as_deref())?;
    let r: PruneReport = serde_json::from_value(v)?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(0);
    }
    let h = indicatif::HumanBytes;
    let (del, rep, free) = if r.dry_run {
        ("would delete", "would repack", "would free")
    } else {
        ("deleted", "repacked", "freed")
    };
    println!(
        "{} packs, {} ({} unused); {del} {} packs, {rep} {}",
        r.packs,
        h(r.pack_bytes),
        h(r.unused_bytes),
        r.packs_deleted,
        r.packs_repacked
    );
    println!(
        "{free} {}, rewrote {}, left {} unused under the threshold",
        h(r.bytes_freed),
        h(r.bytes_rewritten),
        h(r.unused_bytes_left)
    );
    if r.packs_spared > 0 {
        println!(
            "{} packs left for the next prune (a capture relied on them meanwhile)",
            r.packs_spared
        );
    }
    Ok(0)
}

/// `rewind pin`.
pub(crate) fn pin(target: &Target, at: &str, label: Option<String>, json_out: bool) -> Result<i32> {
    let at = parse_at(at)?;
    let v = perform(target, &RetentionOp::Pin { at, label }, None)?;
    let p: Pin = serde_json::from_value(v)?;
    if json_out {
        println!("{}", pin_json(&p));
    } else if p.at != p.asked {
        println!(
            "pinned {}: {} (asked {}, which the history keeps as that point)",
            p.id,
            p.at.to_local_string(),
            p.asked.to_local_string()
        );
    } else {
        println!("pinned {}: {}", p.id, p.at.to_local_string());
    }
    Ok(0)
}

fn pin_json(p: &Pin) -> Value {
    json!({
        "id": p.id,
        "at": p.at.to_string(),
        "asked": p.asked.to_string(),
        "label": p.label,
        "created": p.created.to_string(),
    })
}

/// `rewind pins`.
pub(crate) fn pins(target: &Target, json_out: bool) -> Result<i32> {
    let o = open(target)?;
    let pins = o.repo.pins(&o.client)?;
    if json_out {
        let list: Vec<Value> = pins.iter().map(pin_json).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "pins": list }))?
        );
        return Ok(0);
    }
    if pins.is_empty() {
        println!("no pins (rewind pin --at TIME [--label TEXT])");
    }
    for p in &pins {
        println!(
            "{:>4}  {}  {}",
            p.id,
            p.at.to_local_string(),
            p.label.as_deref().unwrap_or("")
        );
    }
    Ok(0)
}

/// `rewind unpin`.
pub(crate) fn unpin(target: &Target, id: u64, json_out: bool) -> Result<i32> {
    not_on_a_server(target)?;
    perform(target, &RetentionOp::Unpin { id }, None)?;
    if json_out {
        println!("{}", json!({ "unpinned": id }));
    } else {
        println!("removed pin {id}; what only it kept goes at the next forget");
    }
    Ok(0)
}

/// Say which point a query uses when it is not the time asked (stderr),
/// and refuse a time older than everything kept. The JSON of it for
/// `--json` output.
pub(crate) fn point_used(qp: &QueryPoint, quiet: bool) -> Result<Value> {
    let v = json!({
        "asked": qp.asked.to_string(),
        "used": qp.used.map(|t| t.to_string()),
        "thinned_before": qp.thinned_before.map(|t| t.to_string()),
        "snapped": qp.snapped(),
    });
    match qp.used {
        None => bail!(
            "nothing is kept from {} or before: the history is thinned before {} and no kept point is that old",
            qp.asked.to_local_string(),
            qp.thinned_before
                .map_or("?".into(), |t| t.to_local_string())
        ),
        Some(u) if qp.snapped() && !quiet => eprintln!(
            "rewind: {} is before the whole history (kept whole since {}); using the kept point {}",
            qp.asked.to_local_string(),
            qp.thinned_before
                .map_or("?".into(), |t| t.to_local_string()),
            u.to_local_string()
        ),
        _ => {}
    }
    Ok(v)
}
