//! Deltas between runs of a stream: each new chunk of a dump is stored
//! against the chunk at the same place in the previous run
//! ([`rewind_core::DeltaWalk`]), so a dump in which 1 % of the rows changed,
//! spread over the whole table, stores about 1 % anew.

use rewind_core::{ChunkId, DeltaWalk, EncodedChunk, Repository, STREAM_ZSTD_LEVEL};

/// The walk along the newest stored run of `path` for `client` that has
/// output (a successful one if there is any), when `repo` takes deltas.
pub(crate) fn previous(repo: &dyn Repository, client: &str, path: &[u8]) -> Option<DeltaWalk> {
    let versions = repo.versions_of(client, path).ok()?;
    let with_output = |ok: bool| {
        versions
            .iter()
            .rev()
            .find(|v| v.stream_status().is_some_and(|s| s.ok() || !ok) && !v.chunks().is_empty())
    };
    let v = with_output(true).or_else(|| with_output(false))?;
    repo.delta_base(&v.chunks().first()?.id).ok()??;
    DeltaWalk::new(v.chunks())
}

/// Encode a new chunk of a stream: as a delta against `hint` when that
/// pays, else on its own.
pub(crate) fn encode(
    repo: Option<&dyn Repository>,
    id: ChunkId,
    data: &[u8],
    hint: Option<ChunkId>,
) -> EncodedChunk {
    let alone = || EncodedChunk::encode_with_id_at(id, data, STREAM_ZSTD_LEVEL);
    match repo.zip(hint) {
        Some((repo, hint)) => {
            rewind_core::encode_with_hint(repo, id, data, hint, STREAM_ZSTD_LEVEL, alone)
        }
        None => alone(),
    }
}
