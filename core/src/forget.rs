//! What a repository is asked, and answers, about retention: a forget
//! request and its report, pins, and the retention state `status` shows.
//! The rules themselves are in [`crate::retention`].

use serde::{Deserialize, Serialize};

use crate::retention::Policy;
use crate::{ChunkId, Timestamp};

/// Why a client of a server may not forget, prune or unpin: a machine
/// taken over (by ransomware, say) must not be able to delete its own
/// history. The server answers its routes for these with this line, and
/// `rewind` says it before asking.
pub const SERVER_RETENTION: &str =
    "retention on a server is the server's: ask its admin (rewind-server client policy NAME SPEC)";

/// Apply retention to one client's history.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ForgetRequest {
    /// The policy of the client's files.
    pub policy: Policy,
    /// The policy of dump series without one of their own.
    pub series_default: Policy,
    /// Policies of dump series by path prefix (`dumps/<job>`): a series
    /// `dumps/<job>` or `dumps/<job>/<database>` takes the longest match.
    pub series: Vec<(Vec<u8>, Policy)>,
    /// "Now" for the rules' ages.
    pub now: Timestamp,
    /// Only say what would be forgotten.
    pub dry_run: bool,
    /// A space rule: drop this many of the oldest kept points of the
    /// client's files besides what the policy drops (pins stay, and the
    /// newest state, at or after the line, is never touched).
    pub drop_oldest: usize,
    /// A space rule that ran out of points: move the line (the start of
    /// the whole history) forward to this time, at most `now`.
    pub advance_to: Option<Timestamp>,
    /// Why the space rule acts (logged and kept for `status`).
    pub space_reason: Option<String>,
}

impl ForgetRequest {
    /// A plain forget by `policy` at `now`, dump series by their default.
    pub fn new(policy: Policy, now: Timestamp) -> ForgetRequest {
        ForgetRequest {
            policy,
            series_default: Policy::default_series(),
            series: Vec::new(),
            now,
            dry_run: false,
            drop_oldest: 0,
            advance_to: None,
            space_reason: None,
        }
    }

    /// The policy of the dump series at `path`.
    pub fn series_policy(&self, path: &[u8]) -> &Policy {
        self.series
            .iter()
            .filter(|(p, _)| {
                path == p.as_slice() || (path.starts_with(p) && path.get(p.len()) == Some(&b'/'))
            })
            .max_by_key(|(p, _)| p.len())
            .map_or(&self.series_default, |(_, pol)| pol)
    }
}

/// What a forget did (or, dry, would do).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ForgetReport {
    /// The client.
    pub client: String,
    /// Nothing was changed.
    pub dry_run: bool,
    /// The policy applied to files.
    pub policy: String,
    /// The start of the whole history, before and after.
    pub thinned_before: Option<Timestamp>,
    /// Kept points of files, before and after.
    pub points_before: u64,
    /// Kept points of files after.
    pub points_after: u64,
    /// Points removed by the space rule, oldest first.
    pub space_removed: Vec<Timestamp>,
    /// Versions of the client before.
    pub versions_before: u64,
    /// Versions forgotten (files and dumps).
    pub versions_forgotten: u64,
    /// Bytes of chunks that only forgotten versions used: what a prune can
    /// reclaim of this forget (an estimate: packs under the repack
    /// threshold keep theirs until they pass it).
    pub bytes_reclaimable: u64,
}

/// A pinned point: kept by every rule and every space rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// Its number (per client).
    pub id: u64,
    /// The point kept (the time asked, or the kept point it snapped to).
    pub at: Timestamp,
    /// The time asked for.
    pub asked: Timestamp,
    /// What the user called it.
    pub label: Option<String>,
    /// When it was made.
    pub created: Timestamp,
}

/// A point a space rule removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceRemoval {
    /// When.
    pub at: Timestamp,
    /// The point removed (or the new start of the whole history).
    pub point: Timestamp,
    /// Why (which rule tripped).
    pub reason: String,
}

/// The last forget of a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetSummary {
    /// When it ran.
    pub at: Timestamp,
    /// The policy applied.
    pub policy: String,
    /// Versions it forgot.
    pub versions_forgotten: u64,
}

/// What the last prune of a repository did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneSummary {
    /// When it finished.
    pub at: Option<Timestamp>,
    /// How long it took, in milliseconds.
    pub millis: u64,
    /// Packs deleted (nothing in them was needed).
    pub packs_deleted: u64,
    /// Packs rewritten with what they still held.
    pub packs_repacked: u64,
    /// Bytes copied into new packs.
    pub bytes_rewritten: u64,
    /// Bytes of pack files freed.
    pub bytes_freed: u64,
    /// Packs condemned (a server deletes them after a grace time).
    pub packs_condemned: u64,
}

/// Retention as `status` shows it, for one client.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RetentionStatus {
    /// Everything from here on is whole (`None`: nothing forgotten yet).
    pub thinned_before: Option<Timestamp>,
    /// Kept points of files below it.
    pub points: u64,
    /// The oldest kept point or pin.
    pub oldest_point: Option<Timestamp>,
    /// The pins.
    pub pins: Vec<Pin>,
    /// The last forget.
    pub last_forget: Option<ForgetSummary>,
    /// The latest removals by space rules, oldest first.
    pub space_removals: Vec<SpaceRemoval>,
    /// The last prune of the repository (a local one).
    pub last_prune: Option<PruneSummary>,
    /// The policy a server applies to this client, when it says.
    pub server_policy: Option<String>,
    /// Bytes of packs no kept version, base or pending capture uses: what
    /// `prune --max-unused 0` would reclaim (a local repository), as found
    /// after the last forget, prune or reload of the repository.
    #[serde(default)]
    pub reclaimable: Option<u64>,
}

/// Reclaim the space of what forget released (`rewind prune`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PruneRequest {
    /// Only say what would be done.
    pub dry_run: bool,
    /// Repack a pack once more than this share of it (0 to 1) is unused
    /// (`None`: the repository's default).
    pub max_unused: Option<f64>,
}

/// What a prune did (or, dry, would do).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PruneReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Packs before.
    pub packs: u64,
    /// Bytes of packs before.
    pub pack_bytes: u64,
    /// Chunks in the live set.
    pub live_chunks: u64,
    /// Chunks the journal (or the caller) still needs.
    pub pending_chunks: u64,
    /// Bytes no live chunk or kept version uses, before.
    pub unused_bytes: u64,
    /// Packs deleted whole (nothing in them was needed).
    pub packs_deleted: u64,
    /// Packs rewritten with what they still held, then deleted.
    pub packs_repacked: u64,
    /// New packs written.
    pub packs_written: u64,
    /// Packs condemned (two-phase).
    pub packs_condemned: u64,
    /// Condemned packs in use again.
    pub packs_revived: u64,
    /// Packs left alone because a chunk of theirs was relied on meanwhile.
    pub packs_spared: u64,
    /// Bytes of pack files deleted.
    pub bytes_freed: u64,
    /// Bytes of the new packs.
    pub bytes_rewritten: u64,
    /// Unused bytes left in packs under the threshold.
    pub unused_bytes_left: u64,
    /// Forgotten version records dropped from disk.
    pub versions_dropped: u64,
    /// Milliseconds it took.
    pub millis: u64,
    /// Chunks that left the repository (a server drops them from its
    /// clients' lists).
    #[serde(skip)]
    pub removed_chunks: Vec<ChunkId>,
}

/// What a prune asks its caller, once it records the chunks callers rely
/// on: the chunks of versions not yet committed (a journal's pending
/// versions), including those of every capture that began before the call.
pub type PendingChunks<'a> = dyn FnMut() -> Result<Vec<ChunkId>, crate::RepoError> + 'a;
