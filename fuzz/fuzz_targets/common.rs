//! A repository directory with one pack of fuzzed bytes, opened and checked
//! the ways a reader and `verify` do.
#![allow(dead_code)]

use std::path::Path;

use rewind_core::{Repository, Timestamp};
use rewind_repo::LocalRepo;

/// 32 hex digits: the name every fuzzed pack gets.
pub const PACK: &str = "00112233445566778899aabbccddeeff";

/// Make `dir` a repository with a valid config and no packs.
pub fn init(dir: &Path) {
    drop(LocalRepo::init(dir, rewind_core::DEFAULT_CHUNKER).expect("init"));
}

pub fn pack_path(dir: &Path) -> std::path::PathBuf {
    dir.join("packs")
        .join(&PACK[..2])
        .join(format!("{PACK}.pack"))
}

/// Open read-only, list everything, read every chunk, then verify. Errors
/// are fine; panics and unbounded allocations are what the fuzzer finds.
pub fn exercise(dir: &Path) {
    if let Ok(repo) = LocalRepo::open(dir) {
        let _ = repo.stats();
        for client in ["", "c", "host"] {
            if let Ok(vs) = repo.tree_at(client, b"/", Timestamp(i64::MAX)) {
                for v in vs {
                    for c in v.chunks() {
                        let _ = repo.read_chunk(&c.id);
                    }
                }
            }
        }
        let _ = repo.verify(false);
    }
}
