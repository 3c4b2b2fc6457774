//! What `rewind status` reports: the repository at a glance
//! ([`rewind_core::Overview`]), the running agent's own account over the
//! control socket, or, with no agent running, the journal's counters read
//! directly; and that report as the `--json` document.

use anyhow::{Context, Result};
use rewind_core::Overview;
use rewind_core::path::JsonPath;
use serde_json::{Value, json};

use crate::control::query;
use crate::paths::socket_path;
use crate::target::Opened;

/// Everything `rewind status` shows.
pub struct Status {
    /// The repository's counters, dump runs and retention.
    pub overview: Overview,
    /// The agent's account (`{"running": false}` when none runs).
    pub agent: Value,
    /// The journal's counters: the agent's, else read from the journal
    /// itself, else null (no journal yet).
    pub journal: Value,
    /// The uploader's state (null unless an agent runs).
    pub upload: Value,
}

impl Status {
    /// Gather the status of the opened target. A server that cannot be
    /// reached does not stop it (the overview says why); a local
    /// repository that cannot be read does.
    pub fn gather(o: &Opened) -> Result<Status> {
        let overview = Overview::gather(o.repo.as_ref(), &o.client, o.local.is_none())?;
        let live = query(&socket_path(&o.jdir))?;
        let upload = live.as_ref().map_or(Value::Null, |v| v["upload"].clone());
        let (agent, journal) = match live {
            Some(v) => (v["agent"].clone(), v["journal"].clone()),
            None if o.jdir.join("db").exists() => {
                let j = rewind_journal::Journal::open(&o.jdir, &o.client)
                    .context("cannot open the journal (is an agent starting?)")?;
                let st = j.stats()?;
                j.close()?;
                (json!({"running": false}), serde_json::to_value(st)?)
            }
            None => (json!({"running": false}), Value::Null),
        };
        Ok(Status {
            overview,
            agent,
            journal,
            upload,
        })
    }

    /// The `rewind status --json` document.
    pub fn to_json(&self, o: &Opened) -> Value {
        let stats = &self.overview.stats;
        let dumps: Vec<_> = self
            .overview
            .dump_runs
            .iter()
            .filter_map(|v| {
                let s = v.stream_status()?;
                Some(json!({
                    "path": JsonPath(&v.path),
                    "time": v.observed_at.to_string(),
                    "ok": s.ok(),
                    "status": s.describe(),
                    "size": v.size(),
                }))
            })
            .collect();
        json!({
            "dumps": dumps,
            "repository": {
                "path": o.local.as_ref().map(|p| p.to_string_lossy()),
                "server": o.local.is_none().then_some(&o.describe),
                "id": o.id,
                "versions": stats.versions,
                "chunks": stats.chunks,
                "packs": stats.packs,
                "pack_bytes": stats.pack_bytes,
                "last_commit": stats.last_commit.map(|t| t.to_string()),
                "error": self.overview.unreachable,
            },
            "client": o.client,
            "retention": self.retention_json(),
            "agent": self.agent,
            "journal": self.journal,
            "upload": self.upload,
        })
    }

    /// The `retention` object of the document: the agent's policy and
    /// runs with what the repository keeps.
    fn retention_json(&self) -> Value {
        let a = &self.agent["retention"];
        let r = self.overview.retention.as_ref();
        json!({
            "policy": a["policy"],
            "every": a["every"],
            "max_size": a["max_size"],
            "keep_free": a["keep_free"],
            "agent_runs": a["runs"],
            "thinned_before": r.and_then(|r| r.thinned_before).map(|t| t.to_string()),
            "points": r.map(|r| r.points),
            "oldest_point": r.and_then(|r| r.oldest_point).map(|t| t.to_string()),
            "pins": r.map(|r| r.pins.len()),
            "reclaimable_bytes": r.and_then(|r| r.reclaimable),
            "last_forget": r.and_then(|r| r.last_forget.as_ref()).map(|f| json!({
                "at": f.at.to_string(),
                "policy": f.policy,
                "versions_forgotten": f.versions_forgotten,
            })),
            "last_prune": r.and_then(|r| r.last_prune.as_ref()).map(|p| json!({
                "at": p.at.map(|t| t.to_string()),
                "millis": p.millis,
                "packs_deleted": p.packs_deleted,
                "packs_repacked": p.packs_repacked,
                "bytes_rewritten": p.bytes_rewritten,
                "bytes_freed": p.bytes_freed,
            })),
            "space_removals": r.map(|r| r.space_removals.iter().map(|s| json!({
                "at": s.at.to_string(),
                "point": s.point.to_string(),
                "reason": s.reason,
            })).collect::<Vec<_>>()),
            "server_policy": r.and_then(|r| r.server_policy.clone()),
        })
    }
}
