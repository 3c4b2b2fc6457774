//! An encrypted repository (format 5) holding arbitrary bytes as a pack
//! file or, when the first byte is odd, as a pack's index file: the sealed
//! decoders (clear kind byte and id, then the tag) on inputs the fuzzer
//! controls, read through the footer, the salvaging scan and `verify`.
//! A fuzzer cannot forge a tag, so what it reaches is everything before
//! and around the opening; the plain decoders after it are the
//! `pack_file` and `index_file` targets'.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use rewind_repo::{Argon2Params, LocalRepo, Password, Secret};

fn secret() -> Secret {
    Secret::Password(Password::new(b"fuzz".to_vec()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&how, bytes)) = data.split_first() else {
        return;
    };
    let tmp = tempfile::tempdir_in(scratch()).expect("tempdir");
    let fast = Argon2Params::new(64, 1, 1).expect("params");
    drop(
        LocalRepo::init_encrypted(tmp.path(), rewind_core::DEFAULT_CHUNKER, &secret(), fast)
            .expect("init"),
    );
    let pack = common::pack_path(tmp.path());
    std::fs::create_dir_all(pack.parent().unwrap()).unwrap();
    if how % 2 == 1 {
        // A pack that exists, and an index of fuzzed bytes beside it.
        std::fs::write(&pack, b"RWPACK01").unwrap();
        let idx = tmp
            .path()
            .join("index")
            .join(format!("{}.idx", common::PACK));
        std::fs::write(idx, bytes).unwrap();
    } else {
        std::fs::write(&pack, bytes).unwrap();
    }
    if let Ok(repo) = LocalRepo::open_with_secret(tmp.path(), &secret()) {
        let _ = rewind_core::Repository::stats(&repo);
        let _ = repo.verify(false);
    }
});

fn scratch() -> &'static str {
    if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    }
}
