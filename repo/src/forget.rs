//! Forget and pins: what retention keeps of a client, decided here,
//! written to `DIR/retention`, then applied to the in-memory index.
//!
//! - A forget computes the new kept points from the versions the index
//!   holds (`retention::Scope::thin`), writes them durably, and only then
//!   drops the versions they no longer keep from the index: a crash
//!   before the write changes nothing, after it the next open drops them.
//! - Which versions go is computed under a shared lock; only the removal
//!   takes the index exclusively, so commits wait a moment at most.
//! - A pin at a time before the whole history pins the kept point it
//!   snaps to, so a pin never brings anything back.

use std::collections::HashSet;

use rewind_core::forget::{
    ForgetReport, ForgetRequest, ForgetSummary, Pin, RetentionStatus, SpaceRemoval,
};
use rewind_core::{ChunkId, RepoError, Timestamp};
use tracing::info;

use crate::keep::ClientKeep;
use crate::repo::LocalRepo;
use crate::state::{Keeping, State};

impl LocalRepo {
    /// [`rewind_core::Repository::forget`].
    pub(crate) fn forget_client(
        &self,
        client: &str,
        req: &ForgetRequest,
    ) -> Result<ForgetReport, RepoError> {
        if !self.is_writer() {
            return Err(RepoError::ReadOnly);
        }
        let _m = self.maintenance.lock().unwrap_or_else(|p| p.into_inner());
        self.catch_up_keep()?;
        let mut kf = self.keepfile.lock().expect("retention poisoned");
        let old = kf.clients.get(client).cloned().unwrap_or_default();
        let now = req.now;
        let (files, series) = self.read_state().timelines(client);
        let mut new = ClientKeep {
            files: old.files.thin(&req.policy, now, &files),
            ..old.clone()
        };
        for (path, runs) in &series {
            let before = old.series.get(path).cloned().unwrap_or_default();
            new.series.insert(
                path.clone(),
                before.thin_series(req.series_policy(path), now, runs),
            );
        }
        let mut space_removed = new.files.drop_oldest(req.drop_oldest);
        if let Some(t) = req.advance_to {
            let t = t.min(now);
            if new.files.thinned_before.is_none_or(|tb| tb < t) {
                new.files.thinned_before = Some(t);
                new.files.points = new.files.points.range(..t).copied().collect();
                space_removed.push(t);
            }
        }
        let keeping = Keeping::of(&new);
        let (gone, versions_before, bytes) = {
            let st = self.read_state();
            let gone = st.unkept(client, &keeping);
            let bytes = reclaimable(&st, client, &gone, &kf.bases);
            (gone, st.client_versions(client), bytes)
        };
        let report = ForgetReport {
            client: client.to_string(),
            dry_run: req.dry_run,
            policy: req.policy.to_string(),
            thinned_before: new.files.thinned_before,
            points_before: old.files.points.len() as u64,
            points_after: new.files.points.len() as u64,
            space_removed: space_removed.clone(),
            versions_before,
            versions_forgotten: gone.len() as u64,
            bytes_reclaimable: bytes,
        };
        if req.dry_run {
            return Ok(report);
        }
        new.last_forget = Some(ForgetSummary {
            at: now,
            policy: req.policy.to_string(),
            versions_forgotten: gone.len() as u64,
        });
        for p in &space_removed {
            let reason = req
                .space_reason
                .clone()
                .unwrap_or_else(|| "space rule".into());
            info!(client, point = %p, %reason, "space rule removed a kept point");
            new.log_removal(SpaceRemoval {
                at: now,
                point: *p,
                reason,
            });
        }
        let mut next = kf.clone();
        next.clients.insert(client.to_string(), new);
        self.write_keep(&mut kf, next)?;
        self.write_state().set_keep(client, keeping, &gone);
        self.retention_changed();
        info!(
            client,
            forgotten = gone.len(),
            policy = %req.policy,
            "forgot versions the policy does not keep"
        );
        Ok(report)
    }

    /// [`rewind_core::Repository::pin`].
    pub(crate) fn pin_point(
        &self,
        client: &str,
        at: Timestamp,
        label: Option<String>,
    ) -> Result<Pin, RepoError> {
        if !self.is_writer() {
            return Err(RepoError::ReadOnly);
        }
        let now = Timestamp::now();
        if at > now {
            return Err(RepoError::Refused {
                reason: format!("cannot pin {at}: it has not happened yet"),
            });
        }
        self.catch_up_keep()?;
        let mut kf = self.keepfile.lock().expect("retention poisoned");
        let qp = self.read_state().query_point(client, at);
        let Some(used) = qp.used else {
            return Err(RepoError::Refused {
                reason: format!(
                    "nothing is kept from {at} or before (the history is thinned before {})",
                    qp.thinned_before.map_or("?".into(), |t| t.to_string())
                ),
            });
        };
        let mut next = kf.clone();
        let ck = next.clients.entry(client.to_string()).or_default();
        ck.next_pin += 1;
        let pin = Pin {
            id: ck.next_pin,
            at: used,
            asked: at,
            label,
            created: now,
        };
        ck.pins.push(pin.clone());
        let points = ck.pin_points();
        self.write_keep(&mut kf, next)?;
        self.write_state().set_pins(client, points);
        info!(client, id = pin.id, at = %pin.at, "pinned a point");
        Ok(pin)
    }

    /// [`rewind_core::Repository::unpin`].
    pub(crate) fn unpin_point(&self, client: &str, id: u64) -> Result<(), RepoError> {
        if !self.is_writer() {
            return Err(RepoError::ReadOnly);
        }
        self.catch_up_keep()?;
        let mut kf = self.keepfile.lock().expect("retention poisoned");
        let mut next = kf.clone();
        let ck = next.clients.entry(client.to_string()).or_default();
        let before = ck.pins.len();
        ck.pins.retain(|p| p.id != id);
        if ck.pins.len() == before {
            return Err(RepoError::Refused {
                reason: format!("no pin {id} (see `rewind pins`)"),
            });
        }
        let points = ck.pin_points();
        self.write_keep(&mut kf, next)?;
        self.write_state().set_pins(client, points);
        info!(client, id, "removed a pin");
        Ok(())
    }

    /// [`rewind_core::Repository::retention`].
    pub(crate) fn retention_status(&self, client: &str) -> RetentionStatus {
        let kf = self.keepfile.lock().expect("retention poisoned");
        let ck = kf.clients.get(client).cloned().unwrap_or_default();
        let oldest = ck
            .files
            .points
            .first()
            .copied()
            .into_iter()
            .chain(ck.pins.iter().map(|p| p.at))
            .min();
        RetentionStatus {
            thinned_before: ck.files.thinned_before,
            points: ck.files.points.len() as u64,
            oldest_point: oldest,
            pins: ck.pins,
            last_forget: ck.last_forget,
            space_removals: ck.removals,
            last_prune: kf.last_prune.clone(),
            server_policy: None,
            reclaimable: None,
        }
    }

    /// Record `id` as a delta base that prune keeps (`store_base`).
    pub(crate) fn record_base(&self, id: ChunkId) -> Result<(), RepoError> {
        self.catch_up_keep()?;
        let mut kf = self.keepfile.lock().expect("retention poisoned");
        if kf.bases.contains(&id) {
            return Ok(());
        }
        let mut next = kf.clone();
        next.bases.insert(id);
        self.write_keep(&mut kf, next)?;
        Ok(())
    }
}

/// Bytes of the chunks that only `gone` (versions of `client`) name: what
/// a prune could reclaim once they are forgotten.
fn reclaimable(
    st: &State,
    client: &str,
    gone: &[(Vec<u8>, u64)],
    bases: &std::collections::BTreeSet<ChunkId>,
) -> u64 {
    if gone.is_empty() {
        return 0;
    }
    let gone: HashSet<(&[u8], u64)> = gone.iter().map(|(p, s)| (p.as_slice(), *s)).collect();
    let mut live: HashSet<ChunkId> = bases.iter().copied().collect();
    let mut only: HashSet<ChunkId> = HashSet::new();
    st.each_version(|c, path, seq, entry| {
        let refs = entry.chunk_refs().map(|c| c.id);
        if c == client && gone.contains(&(path, seq)) {
            only.extend(refs);
        } else {
            live.extend(refs);
        }
    });
    let bases_of_live: Vec<ChunkId> = live
        .iter()
        .filter_map(|id| st.delta_bases.get(id).copied())
        .collect();
    live.extend(bases_of_live);
    only.iter()
        .filter(|id| !live.contains(id))
        .filter_map(|id| st.chunks.get(id))
        .map(|l| l.frame_len as u64)
        .sum()
}
