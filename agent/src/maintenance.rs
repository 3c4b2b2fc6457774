//! The agent forgets and prunes by itself: every `[retention] every`
//! (default daily) after the client's last forget, and at once when a
//! space rule trips (`keep_free`, `max_size`; a local repository only — a
//! server applies its own retention). On its own thread at low priority;
//! capture goes on meanwhile (prune never makes it wait more than a
//! moment, see `rewind_repo::prune`).
//!
//! A space rule forgets the oldest kept points first, 1, 2, 4, … at a
//! time, pruning after each round, until the rule holds; when no point is
//! left it moves the start of the whole history forward, halfway to now
//! each round. Pins and the newest state of every file are never removed
//! (the repository's rules). Each removal is logged by the repository and
//! kept for `status`; a rule that cannot be met is said once per check.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use rewind_core::Timestamp;
use serde::Serialize;
use tracing::{info, warn};

use crate::retention::{FreeSpace, RetentionCtx};

/// How often the space rules and the schedule are looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Rounds of a space rule before it gives up until the next check.
const MAX_ROUNDS: usize = 24;

/// What `status` shows of the agent's own retention runs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MaintenanceStatus {
    /// When the last run ended.
    pub last_run: Option<String>,
    /// Why it ran (`schedule`, or the space rule that tripped).
    pub last_reason: Option<String>,
    /// Its error, if it failed.
    pub last_error: Option<String>,
    /// Versions it forgot and bytes its prunes freed.
    pub versions_forgotten: u64,
    /// Bytes its prunes freed.
    pub bytes_freed: u64,
    /// A space rule that holds no longer, now.
    pub space_rule: Option<String>,
}

/// The thread's shared state.
pub(crate) struct Maintenance {
    pub(crate) ctx: Arc<RetentionCtx>,
    /// The local repository's directory (space rules apply there only).
    pub(crate) local: Option<PathBuf>,
    pub(crate) status: Arc<Mutex<MaintenanceStatus>>,
    /// When the agent started: a client never forgotten is first due
    /// `every` after it (not at once, while the first pass runs).
    pub(crate) started: Timestamp,
    /// The client's last forget, read from the repository once and kept
    /// up to date by this thread's runs: asking the repository every
    /// [`CHECK_EVERY`] would plan a whole prune each time (its status
    /// carries the reclaimable bytes), seconds of CPU on a large history.
    pub(crate) last_forget: Mutex<Option<Timestamp>>,
}

impl Maintenance {
    /// One look: run when due or when a space rule trips.
    pub(crate) fn check(&self) {
        let space = self.space_rule();
        self.lock().space_rule = space.clone();
        let due = self.due();
        if space.is_none() && !due {
            return;
        }
        let reason = space.clone().unwrap_or_else(|| "schedule".into());
        let r = self.run(space.is_some());
        // Failed or not, the next scheduled run is `every` from now.
        *self.last_forget.lock().unwrap_or_else(|p| p.into_inner()) = Some(Timestamp::now());
        let mut st = self.lock();
        st.last_run = Some(Timestamp::now().to_string());
        st.last_reason = Some(reason);
        st.last_error = r.as_ref().err().map(|e| format!("{e:#}"));
        if let Err(e) = r {
            warn!("retention: {e:#}");
        }
        st.space_rule = self.space_rule();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MaintenanceStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The schedule says so: `every` since the client's last forget (or,
    /// never forgotten, since the agent started).
    fn due(&self) -> bool {
        let Some(every) = self.ctx.settings.every else {
            return false;
        };
        let mut known = self.last_forget.lock().unwrap_or_else(|p| p.into_inner());
        let last = match *known {
            Some(t) => t,
            None => match self.ctx.repo.retention(&self.ctx.client) {
                Ok(r) => *known.insert(r.last_forget.map_or(self.started, |f| f.at)),
                Err(_) => return false,
            },
        };
        Timestamp::now().0 - last.0 >= every.as_nanos() as i64
    }

    /// Which space rule does not hold now, said in one line.
    fn space_rule(&self) -> Option<String> {
        let dir = self.local.as_deref()?;
        let s = &self.ctx.settings;
        if let Some(max) = s.max_size {
            let size = self.ctx.repo.stats().ok()?.pack_bytes;
            if size > max {
                return Some(format!(
                    "max_size: the repository holds {size} bytes, more than {max}"
                ));
            }
        }
        if let Some(k) = &s.keep_free {
            let (free, total) = free_space(dir)?;
            let want = match k {
                FreeSpace::Share(f) => (total as f64 * f) as u64,
                FreeSpace::Bytes(b) => *b,
            };
            if free < want {
                return Some(format!(
                    "keep_free: {free} bytes free on the repository's filesystem, less than {want}"
                ));
            }
        }
        None
    }

    /// Forget by the policy and prune; then, while a space rule trips
    /// (`space`), forget the oldest points too.
    fn run(&self, space: bool) -> Result<()> {
        let ctx = &self.ctx;
        let req = ctx.settings.request(None, Timestamp::now());
        let f = ctx.repo.forget(&ctx.client, &req)?;
        self.lock().versions_forgotten += f.versions_forgotten;
        self.prune()?;
        if !space {
            return Ok(());
        }
        let mut drop = 1usize;
        for _ in 0..MAX_ROUNDS {
            let Some(reason) = self.space_rule() else {
                return Ok(());
            };
            let mut req = ctx.settings.request(None, Timestamp::now());
            req.space_reason = Some(reason.clone());
            let status = ctx.repo.retention(&ctx.client)?;
            if status.points > 0 {
                req.drop_oldest = drop;
                drop = drop.saturating_mul(2);
            } else {
                let now = Timestamp::now();
                let line = status.thinned_before.unwrap_or(now);
                req.advance_to = Some(Timestamp(line.0 + (now.0 - line.0) / 2));
            }
            let f = ctx.repo.forget(&ctx.client, &req)?;
            info!(
                points = f.space_removed.len(),
                versions = f.versions_forgotten,
                %reason,
                "space rule: forgot the oldest kept points"
            );
            self.lock().versions_forgotten += f.versions_forgotten;
            let p = self.prune()?;
            if f.versions_forgotten == 0 && f.space_removed.is_empty() && p == 0 {
                break;
            }
        }
        if let Some(reason) = self.space_rule() {
            warn!(%reason, "a space rule cannot be met: only pins and the newest state are left");
        }
        Ok(())
    }

    /// Prune with the journal's pending chunks; bytes freed.
    fn prune(&self) -> Result<u64> {
        let op = crate::retention::RetentionOp::Prune {
            dry_run: false,
            max_unused: None,
        };
        let v = self.ctx.perform(&op)?;
        let freed = v["bytes_freed"].as_u64().unwrap_or(0);
        self.lock().bytes_freed += freed;
        Ok(freed)
    }
}

/// Free bytes (for an unprivileged user) and the size of the filesystem
/// holding `dir`.
fn free_space(dir: &Path) -> Option<(u64, u64)> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some((s.f_bavail * s.f_frsize, s.f_blocks * s.f_frsize))
}
