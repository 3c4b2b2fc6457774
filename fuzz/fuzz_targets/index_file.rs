//! An index file of arbitrary bytes beside a real pack (one chunk and one
//! version record): the index is trusted only as far as it checks out.
#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rewind_core::{
    ChunkRef, EncodedChunk, Entry, FileKind, FileMeta, Repository, Timestamp, Version,
};
use rewind_repo::LocalRepo;

/// The bytes of a real pack, made once.
fn real_pack() -> &'static [u8] {
    static PACK: OnceLock<Vec<u8>> = OnceLock::new();
    PACK.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let repo = LocalRepo::init(tmp.path(), rewind_core::DEFAULT_CHUNKER).unwrap();
        let c = EncodedChunk::encode(b"hello, fuzzer");
        repo.put_chunks(vec![c.clone()]).unwrap();
        repo.commit_versions(vec![Version {
            client: "c".into(),
            seq: 1,
            observed_at: Timestamp(1),
            path: b"/a".to_vec(),
            entry: Entry::Present {
                meta: FileMeta::new(FileKind::File, 0o644),
                chunks: vec![ChunkRef {
                    id: c.id,
                    len: c.raw_len,
                }],
                xattrs: Vec::new(),
            },
        }])
        .unwrap();
        drop(repo);
        let pack = walk(&tmp.path().join("packs")).expect("a pack");
        std::fs::read(pack).unwrap()
    })
}

fn walk(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    for e in std::fs::read_dir(dir).ok()? {
        let p = e.ok()?.path();
        if p.is_dir() {
            if let Some(f) = walk(&p) {
                return Some(f);
            }
        } else if p.extension().is_some_and(|x| x == "pack") {
            return Some(p);
        }
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    common::init(tmp.path());
    let pack = common::pack_path(tmp.path());
    std::fs::create_dir_all(pack.parent().unwrap()).unwrap();
    std::fs::write(&pack, real_pack()).unwrap();
    std::fs::write(
        tmp.path()
            .join("index")
            .join(format!("{}.idx", common::PACK)),
        data,
    )
    .unwrap();
    common::exercise(tmp.path());
});
