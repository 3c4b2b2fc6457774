//! A sealed record of arbitrary bytes, opened as the repository will open
//! a pack's records and index files; then the same bytes sealed and opened
//! again, which must give them back. Both ciphers: the first byte's top
//! bit chooses.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rewind_crypto::{Aead, MasterKey, RecordKind, RepoId, Sealer};

fn sealers() -> &'static [Sealer; 2] {
    static SEALERS: OnceLock<[Sealer; 2]> = OnceLock::new();
    SEALERS.get_or_init(|| {
        let master = MasterKey::generate().expect("OS random numbers");
        [Aead::XChaCha20Poly1305, Aead::Aes256GcmSubkey]
            .map(|a| master.sealer(RepoId([0x42; 16]), a))
    })
}

const KINDS: [RecordKind; 5] = [
    RecordKind::Chunk,
    RecordKind::Versions,
    RecordKind::PackFooter,
    RecordKind::Index,
    RecordKind::File,
];

fuzz_target!(|data: &[u8]| {
    // First byte: the kind; second: the name's length; then the name and
    // the record.
    let kind = KINDS[usize::from(data.first().copied().unwrap_or(0)) % KINDS.len()];
    let name_len = usize::from(data.get(1).copied().unwrap_or(0));
    let rest = data.get(2..).unwrap_or_default();
    let (name, record) = rest.split_at(name_len.min(rest.len()));
    let s = &sealers()[usize::from(data.first().copied().unwrap_or(0) >> 7)];
    let _ = s.open(kind, name, record);
    let _ = s.open(kind, name, data);
    let sealed = s.seal(kind, name, record).expect("sealing");
    assert_eq!(s.open(kind, name, &sealed).expect("opening"), record);
});
