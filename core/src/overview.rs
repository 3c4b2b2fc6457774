//! What a client's repository looks like at a glance: the counters, the
//! newest run of every dump stream and what retention keeps. `rewind
//! status` and the web UI's overview gather it the same way.

use crate::forget::RetentionStatus;
use crate::{RepoError, RepoStats, Repository, Timestamp, Version};

/// A client's repository at a glance.
#[derive(Clone, Debug, Default)]
pub struct Overview {
    /// The repository's counters (zero when it could not be reached).
    pub stats: RepoStats,
    /// Why the repository could not be reached, when it could not: then
    /// `dump_runs` is empty and `retention` is `None`.
    pub unreachable: Option<String>,
    /// The newest run of every dump stream, failed ones included, sorted
    /// by path.
    pub dump_runs: Vec<Version>,
    /// What retention keeps of the client's history, when the repository
    /// could say.
    pub retention: Option<RetentionStatus>,
}

impl Overview {
    /// Gather the overview of `client`. A repository whose counters
    /// cannot be read is an error unless `tolerate_unreachable` (a server
    /// that is down does not hide what the agent and its journal say);
    /// then the overview says why in `unreachable`.
    pub fn gather(
        repo: &dyn Repository,
        client: &str,
        tolerate_unreachable: bool,
    ) -> Result<Overview, RepoError> {
        let stats = match repo.stats() {
            Ok(s) => s,
            Err(e) if tolerate_unreachable => {
                return Ok(Overview {
                    unreachable: Some(e.to_string()),
                    ..Overview::default()
                });
            }
            Err(e) => return Err(e),
        };
        Ok(Overview {
            stats,
            unreachable: None,
            dump_runs: repo.tree_at(client, b"dumps", Timestamp::MAX)?,
            retention: repo.retention(client).ok(),
        })
    }
}
