//! A pack file of arbitrary bytes (without an index file, so it is read
//! through its footer or salvaged by a scan).
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::tempdir_in(scratch()).expect("tempdir");
    common::init(tmp.path());
    let pack = common::pack_path(tmp.path());
    std::fs::create_dir_all(pack.parent().unwrap()).unwrap();
    std::fs::write(&pack, data).unwrap();
    common::exercise(tmp.path());
});

fn scratch() -> &'static str {
    if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    }
}
