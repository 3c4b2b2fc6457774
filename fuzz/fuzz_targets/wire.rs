//! Request and reply bodies of the server protocol (`rewind_core::wire`),
//! as the server decodes requests and the client decodes replies: chunk
//! ids, chunks as stored (then their decompression and id check),
//! versions, path queries, list and verify requests and verify replies,
//! and the JSON bodies of enrollment and info.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_core::wire::{
    self, ChunkProblem, EnrollReply, EnrollRequest, ListQuery, PathQuery, ServerInfo, VerifyChunks,
};
use rewind_core::{ChunkId, EncodedChunk, RepoStats, Version};

fuzz_target!(|data: &[u8]| {
    let _ = wire::decode::<Vec<ChunkId>>(data);
    if let Ok(chunks) = wire::decode::<Vec<EncodedChunk>>(data) {
        for c in chunks {
            let _ = c.decode();
        }
    }
    if let Ok(vs) = wire::decode::<Vec<Version>>(data) {
        for v in vs {
            let _ = v.chunk_refs().count();
            let _ = v.size();
        }
    }
    let _ = wire::decode::<PathQuery>(data);
    let _ = wire::decode::<bool>(data);
    let _ = wire::decode::<ListQuery>(data);
    let _ = wire::decode::<VerifyChunks>(data);
    let _ = wire::decode::<Vec<ChunkProblem>>(data);
    let _ = serde_json::from_slice::<EnrollRequest>(data);
    let _ = serde_json::from_slice::<EnrollReply>(data);
    let _ = serde_json::from_slice::<ServerInfo>(data);
    let _ = serde_json::from_slice::<RepoStats>(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = wire::parse_fingerprint(s);
    }
});
