//! Retention in the agent: `[retention]` (the policy, how often the agent
//! forgets and prunes, the space rules), and the operations `rewind
//! forget`, `pin` and `unpin` ask for. An operation runs where the
//! repository's writer is: in a running agent (asked over its control
//! socket, `retention JSON`), or in the command itself when no agent runs.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rewind_core::forget::{ForgetRequest, PruneRequest, SERVER_RETENTION};
use rewind_core::retention::Policy;
use rewind_core::{ChunkId, RepoError, Repository, Timestamp, parse_size};
use rewind_dumps::Job;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::paths;
use crate::target::{Access, Target};

/// What `rewind forget`, `pin` and `unpin` ask for.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RetentionOp {
    /// Apply a policy (the configured one unless given).
    Forget {
        /// A policy overriding the configured one.
        policy: Option<String>,
        /// Only say what would be forgotten.
        dry_run: bool,
    },
    /// Pin the point at a time.
    Pin {
        /// The time.
        at: Timestamp,
        /// What to call it.
        label: Option<String>,
    },
    /// Remove a pin.
    Unpin {
        /// The pin's number.
        id: u64,
    },
    /// Reclaim the space of what forget released.
    Prune {
        /// Only say what would be done.
        dry_run: bool,
        /// The repack threshold, a share (the configured one unless given).
        max_unused: Option<f64>,
    },
}

/// How long a prune waits for the captures under way to end before it
/// gives up (and the next one tries again).
const CAPTURES_IDLE_WAIT: Duration = Duration::from_secs(60);

/// Where an operation runs: the repository and the client, and the
/// settings of the agent (or of the config file) asking.
pub struct RetentionCtx {
    /// The repository.
    pub repo: Arc<dyn Repository>,
    /// The client whose history it is.
    pub client: String,
    /// `[retention]`.
    pub settings: RetentionSettings,
    /// The journal whose pending versions a prune keeps (the agent's).
    pub journal: Option<rewind_journal::Journal>,
}

impl RetentionCtx {
    /// Run `op`; its report as JSON (the same whether an agent or the
    /// command ran it).
    pub fn perform(&self, op: &RetentionOp) -> Result<Value> {
        match op {
            RetentionOp::Forget { policy, dry_run } => {
                let policy = match policy {
                    Some(p) => Some(Policy::parse(p)?),
                    None => None,
                };
                let mut req = self.settings.request(policy, Timestamp::now());
                req.dry_run = *dry_run;
                let r = self.repo.forget(&self.client, &req)?;
                Ok(serde_json::to_value(r)?)
            }
            RetentionOp::Pin { at, label } => {
                let p = self.repo.pin(&self.client, *at, label.clone())?;
                Ok(serde_json::to_value(p)?)
            }
            RetentionOp::Unpin { id } => {
                self.repo.unpin(&self.client, *id)?;
                Ok(json!({ "unpinned": id }))
            }
            RetentionOp::Prune {
                dry_run,
                max_unused,
            } => {
                let req = PruneRequest {
                    dry_run: *dry_run,
                    max_unused: Some(max_unused.unwrap_or(self.settings.max_unused)),
                };
                let journal = self.journal.clone();
                let mut pending = move || -> Result<Vec<ChunkId>, RepoError> {
                    let Some(j) = &journal else {
                        return Ok(Vec::new());
                    };
                    if !j.wait_captures_idle(CAPTURES_IDLE_WAIT) {
                        return Err(RepoError::Refused {
                            reason: "captures never paused for a prune; it will try again".into(),
                        });
                    }
                    j.pending_chunks().map_err(|e| RepoError::Refused {
                        reason: format!("cannot read the journal's pending versions: {e}"),
                    })
                };
                let r = self.repo.prune(&req, &mut pending)?;
                Ok(serde_json::to_value(r)?)
            }
        }
    }
}

/// Serve one `retention JSON` request of the control socket.
pub(crate) fn serve(conn: &UnixStream, ctx: &RetentionCtx, request: &str) {
    let reply = match serde_json::from_str::<RetentionOp>(request) {
        Ok(op) => match ctx.perform(&op) {
            Ok(v) => json!({ "done": v }),
            Err(e) => json!({ "error": crate::dump_service::one_line(&e) }),
        },
        Err(e) => json!({ "error": format!("malformed retention request: {e}") }),
    };
    let mut w = conn;
    let _ = w.write_all(format!("{reply}\n").as_bytes());
}

/// Ask the agent running for `target` to run `op`; `None` when no agent
/// answers (the caller runs it itself).
pub fn through_agent(target: &Target, op: &RetentionOp) -> Result<Option<Value>> {
    let Some(id) = target.id()? else {
        return Ok(None);
    };
    let sock = paths::socket_path(&paths::journal_dir(&id)?);
    let Ok(mut conn) = UnixStream::connect(&sock) else {
        return Ok(None);
    };
    let req = serde_json::to_string(op)?;
    conn.write_all(format!("retention {req}\n").as_bytes())
        .context("cannot talk to the running agent")?;
    let mut line = String::new();
    BufReader::new(&conn)
        .read_line(&mut line)
        .context("lost the running agent")?;
    let v: Value = serde_json::from_str(&line).context("the agent sent a malformed reply")?;
    if let Some(e) = v.get("error") {
        bail!("{}", e.as_str().unwrap_or("the agent failed"));
    }
    Ok(Some(v["done"].clone()))
}

/// Refuse to forget, prune or unpin on a server: its retention is its
/// own (the server refuses these routes too).
pub fn not_on_a_server(target: &Target) -> Result<()> {
    if let Target::Server(_) = target {
        bail!("{SERVER_RETENTION}");
    }
    Ok(())
}

/// Run `op` for a command: through the agent running for `target`, or
/// else in this process on the repository opened for writing, with the
/// `[retention]` settings of the config file `config` (the default one
/// when `None`). Refuses a local repository that does not exist yet.
pub fn perform(target: &Target, op: &RetentionOp, config: Option<&Path>) -> Result<Value> {
    if let Some(v) = through_agent(target, op)? {
        return Ok(v);
    }
    if let Target::Local(dir) = target
        && !dir.join("config").exists()
    {
        bail!(
            "no repository at {} (create one with `rewind init`)",
            dir.display()
        );
    }
    let settings = crate::load(config)?.retention()?;
    let o = target.open(Access::Write { limit_upload: None })?;
    let ctx = RetentionCtx {
        repo: o.repo.clone(),
        client: o.client.clone(),
        settings,
        journal: None,
    };
    ctx.perform(op)
}

/// `[retention]` as written in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// The policy of files (`all 24h, hourly 7d, daily 30d, weekly`).
    pub policy: Option<String>,
    /// How often the agent forgets and prunes by itself (`24h`; `0s`
    /// turns it off).
    pub every: Option<String>,
    /// Forget the oldest kept points while the repository's filesystem
    /// has less than this free (`10%`, or a size such as `20GiB`).
    pub keep_free: Option<String>,
    /// Forget the oldest kept points while the repository is larger
    /// than this (`200GiB`).
    pub max_size: Option<String>,
    /// Prune repacks a pack once more than this share of it is unused
    /// (`10%`).
    pub max_unused: Option<String>,
}

/// How much must stay free on the repository's filesystem.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FreeSpace {
    /// A share of the filesystem (0.1 for `10%`).
    Share(f64),
    /// Bytes.
    Bytes(u64),
}

/// `[retention]` read and checked.
#[derive(Clone, Debug)]
pub struct RetentionSettings {
    /// The policy of files.
    pub policy: Policy,
    /// How often the agent forgets and prunes (`None`: never by itself).
    pub every: Option<Duration>,
    /// The space rules.
    pub keep_free: Option<FreeSpace>,
    /// The space rules.
    pub max_size: Option<u64>,
    /// The repack threshold (a share).
    pub max_unused: f64,
    /// Each dump job's policy, by the prefix of its streams.
    pub series: Vec<(Vec<u8>, Policy)>,
}

/// How often the agent forgets and prunes by itself: daily, like Time
/// Machine's thinning (issue 17); a space rule tripping acts at once.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(24 * 3600);

/// The repack threshold: a pack is rewritten once more than this share of
/// it is unused (docs/decisions.md, "Prune threshold", measured: 10 %
/// rewrites about a fifth of the bytes 0 % does for 96 % of the space).
pub const DEFAULT_MAX_UNUSED: f64 = 0.10;

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            policy: Policy::default_files(),
            every: Some(DEFAULT_EVERY),
            // Off unless asked: the filesystem is shared with everything
            // else, and other programs filling it must not thin the
            // history by surprise (docs/decisions.md, "Space rules").
            keep_free: None,
            max_size: None,
            max_unused: DEFAULT_MAX_UNUSED,
            series: Vec::new(),
        }
    }
}

impl RetentionSettings {
    /// From `[retention]` (absent: the defaults) and the dump jobs.
    pub fn from_config(c: Option<&RetentionConfig>, jobs: &[Job]) -> Result<Self, String> {
        let mut s = RetentionSettings {
            series: jobs
                .iter()
                .map(|j| (j.path(), j.retention.clone()))
                .collect(),
            ..RetentionSettings::default()
        };
        let Some(c) = c else {
            return Ok(s);
        };
        if let Some(p) = &c.policy {
            s.policy = Policy::parse(p).map_err(|e| format!("policy: {e}"))?;
        }
        if let Some(e) = &c.every {
            let d = rewind_dumps::parse_duration(e).map_err(|e| format!("every: {e}"))?;
            s.every = (!d.is_zero()).then_some(d);
        }
        if let Some(k) = &c.keep_free {
            s.keep_free = match k.trim() {
                "0" | "0%" | "off" => None,
                k => Some(if let Some(p) = k.strip_suffix('%') {
                    FreeSpace::Share(parse_share(p).map_err(|e| format!("keep_free: {e}"))?)
                } else {
                    FreeSpace::Bytes(parse_size(k).map_err(|e| format!("keep_free: {e}"))?)
                }),
            };
        }
        if let Some(m) = &c.max_size {
            s.max_size = Some(parse_size(m).map_err(|e| format!("max_size: {e}"))?);
        }
        if let Some(m) = &c.max_unused {
            let p = m.trim().strip_suffix('%').unwrap_or(m.trim());
            s.max_unused = parse_share(p).map_err(|e| format!("max_unused: {e}"))?;
        }
        Ok(s)
    }

    /// The forget request of these settings at `now` (`policy` overriding
    /// the configured one).
    pub fn request(&self, policy: Option<Policy>, now: Timestamp) -> ForgetRequest {
        let mut r = ForgetRequest::new(policy.unwrap_or_else(|| self.policy.clone()), now);
        r.series = self.series.clone();
        r
    }
}

/// `10` (percent) → 0.1.
fn parse_share(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{s}% is not between 0 and 100"));
    }
    Ok(v / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse() {
        let c: RetentionConfig = toml::from_str(
            "policy = \"all 1h, daily\"\nkeep_free = \"15%\"\nmax_size = \"200GiB\"\nevery = \"6h\"\nmax_unused = \"5%\"",
        )
        .unwrap();
        let s = RetentionSettings::from_config(Some(&c), &[]).unwrap();
        assert_eq!(s.policy.to_string(), "all 1h, daily");
        assert_eq!(s.keep_free, Some(FreeSpace::Share(0.15)));
        assert_eq!(s.max_size, Some(200 << 30));
        assert_eq!(s.every, Some(Duration::from_secs(6 * 3600)));
        assert!((s.max_unused - 0.05).abs() < 1e-9);
        let d = RetentionSettings::from_config(None, &[]).unwrap();
        assert_eq!(d.policy.to_string(), rewind_core::retention::DEFAULT_POLICY);
        for bad in [
            "policy = \"weekly, daily\"",
            "max_size = \"lots\"",
            "keep_free = \"120%\"",
        ] {
            let c: RetentionConfig = toml::from_str(bad).unwrap();
            assert!(
                RetentionSettings::from_config(Some(&c), &[]).is_err(),
                "{bad}"
            );
        }
    }
}
