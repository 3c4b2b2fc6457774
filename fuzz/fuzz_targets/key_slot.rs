//! A key slot file of arbitrary bytes, decoded as a repository reads
//! `keys/`, then opened with a key file and (when its argon2id parameters
//! are small enough to keep the fuzzer fast) a password. A slot that
//! decodes must encode back to the same bytes.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rewind_crypto::{KeyFileKey, KeySlot, Keyring, Password, SlotKind};

fn key_file() -> &'static KeyFileKey {
    static KEY: OnceLock<KeyFileKey> = OnceLock::new();
    KEY.get_or_init(|| KeyFileKey::generate().expect("OS random numbers"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(slot) = KeySlot::decode(data) else {
        return;
    };
    assert_eq!(slot.encode(), data, "a decoded slot encodes to other bytes");
    let small = match slot.kind() {
        SlotKind::Password(p) => p.m_kib() <= 256 && p.t() <= 2,
        SlotKind::KeyFile => true,
    };
    let ring = Keyring::from_slots(vec![slot]);
    let _ = ring.open_with_key_file(key_file());
    if small {
        let _ = ring.open_with_password(&Password::new(b"fuzz".to_vec()));
    }
});
