//! A repository `config` file of arbitrary bytes.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    common::init(tmp.path());
    std::fs::write(tmp.path().join("config"), data).unwrap();
    common::exercise(tmp.path());
    let _ = rewind_repo::LocalRepo::open_writer(tmp.path());
});
