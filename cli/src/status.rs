//! `rewind status` as text: the repository, retention, the agent, the
//! journal, dump runs and health, from [`rewind_agent::Status`].

use anyhow::Result;
use rewind_agent::{Status, Target};
use rewind_core::Timestamp;
use rewind_core::path::display;

use crate::args::open;

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

pub(crate) fn status(t: &Target, json: bool) -> Result<i32> {
    let o = open(t)?;
    let s = Status::gather(&o)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s.to_json(&o))?);
        return Ok(0);
    }
    let (stats, unreachable) = (&s.overview.stats, &s.overview.unreachable);
    let (agent_v, journal_v, upload_v) = (&s.agent, &s.journal, &s.upload);
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
    } else if let Some(e) = unreachable {
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
    if let Some(r) = &s.overview.retention {
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
    for v in &s.overview.dump_runs {
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
