//! `rewind verify` against a server: this client's versions and the
//! chunks they use, checked on the server's disk, a batch at a time.

use std::collections::HashMap;

use rewind_core::wire::ChunkProblem;
use rewind_core::{ChunkId, DamagedVersion, RepoError};

use crate::repository::RemoteRepo;

/// Versions asked for per `list` request.
const LIST_PAGE: u32 = 20_000;
/// Chunk bytes (uncompressed) the server checks per request in a full
/// verify: a few tenths of a second of its work, so progress moves.
const VERIFY_BYTES: u64 = 64 << 20;
/// Chunk ids per request.
const VERIFY_IDS: usize = 20_000;

/// What the server found in this client's data.
#[derive(Clone, Debug, Default)]
pub struct ClientVerifyReport {
    /// Versions of this client.
    pub versions: usize,
    /// Distinct chunks they use.
    pub chunks: usize,
    /// The chunks missing or damaged, sorted by id.
    pub problems: Vec<ChunkProblem>,
    /// The versions that cannot be restored, each with the first chunk
    /// that spoils it.
    pub damaged_versions: Vec<DamagedVersion>,
}

impl RemoteRepo {
    /// List every version of this client, then have the server check each
    /// chunk they use once (indexed, and unless `quick` read, decompressed
    /// and hashed on its disk). `progress` gets the chunk bytes checked so
    /// far and their total after each request. Only this client's data is
    /// checked; `rewind-server verify` checks the whole repository.
    pub fn verify_client(
        &self,
        quick: bool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ClientVerifyReport, RepoError> {
        let mut versions = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.list_page(after.as_deref(), LIST_PAGE)?;
            let Some(last) = page.last() else { break };
            after = Some(last.path.clone());
            versions.extend(page);
        }
        // Each chunk once, however many versions use it.
        let mut sizes: HashMap<ChunkId, u64> = HashMap::new();
        for v in &versions {
            for r in v.chunk_refs() {
                sizes.insert(r.id, u64::from(r.len));
            }
        }
        let mut ids: Vec<ChunkId> = sizes.keys().copied().collect();
        ids.sort_unstable();
        let total: u64 = sizes.values().sum();
        let mut problems: HashMap<ChunkId, ChunkProblem> = HashMap::new();
        let (mut start, mut done) = (0, 0);
        while start < ids.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < ids.len() && end - start < VERIFY_IDS && (quick || bytes < VERIFY_BYTES) {
                bytes += sizes[&ids[end]];
                end += 1;
            }
            for p in self.verify_chunks(quick, &ids[start..end])? {
                problems.insert(p.id, p);
            }
            done += bytes;
            progress(done, total);
            start = end;
        }
        let damaged_versions = versions
            .iter()
            .filter_map(|v| {
                let p = v.chunk_refs().find_map(|r| problems.get(&r.id))?;
                Some(DamagedVersion {
                    client: v.client.clone(),
                    seq: v.seq,
                    path: v.path.clone(),
                    observed_at: v.observed_at,
                    chunk: p.id,
                    reason: if p.reason == "missing" {
                        "missing"
                    } else {
                        "damaged"
                    },
                })
            })
            .collect();
        let mut problems: Vec<ChunkProblem> = problems.into_values().collect();
        problems.sort_unstable_by_key(|p| p.id);
        Ok(ClientVerifyReport {
            versions: versions.len(),
            chunks: ids.len(),
            problems,
            damaged_versions,
        })
    }
}
