//! Files written by the first version of this crate, committed as
//! fixtures: every later build must open them the same way (a repository
//! made today must open after any upgrade). `write_fixtures` made them
//! once; it is ignored so the fixtures never change by themselves. The
//! AES-256-GCM record (the second cipher) was sealed later under the same
//! master keys, by `write_aes_fixture`.

use std::path::{Path, PathBuf};

use rewind_crypto::{
    Aead, Argon2Params, KeyFileKey, KeySlot, Keyring, MasterKey, Password, RecordKind, RepoId,
    SlotKind, SlotLabel,
};

const REPO: RepoId = RepoId([0x11; 16]);
const PASSWORD: &[u8] = b"fixture password";
const NAME: &[u8] = b"fixture";
const PLAINTEXT: &[u8] = b"a sealed record, format 1";
/// The keyed chunk id of `b"rewind"` under the fixtures' master keys.
const CHUNK_ID_OF_REWIND: &str = "b05fcf75c5a9ea6aa9366b0e9637ee5f4b2c88e161232d54003d90cec42080ac";

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn ring() -> Keyring {
    Keyring::from_slots(
        ["password-slot-v1", "key-file-slot-v1"]
            .iter()
            .map(|f| KeySlot::decode(&std::fs::read(dir().join(f)).unwrap()).unwrap())
            .collect(),
    )
}

#[test]
fn format_1_slots_open_with_their_password_and_key_file() {
    let ring = ring();
    assert_eq!(
        ring.slots()[0].kind(),
        SlotKind::Password(Argon2Params::new(64, 1, 1).unwrap())
    );
    assert_eq!(ring.slots()[1].kind(), SlotKind::KeyFile);
    assert_eq!(ring.slots()[0].label().host, "fixture-host");
    let by_password = ring
        .open_with_password(&Password::new(PASSWORD.to_vec()))
        .unwrap();
    let key = KeyFileKey::read(&dir().join("key-file")).unwrap();
    let by_key_file = ring.open_with_key_file(&key).unwrap();
    assert!(by_password.master.same_as(&by_key_file.master));
    assert_eq!(
        hex::encode(by_password.master.chunk_id_key().chunk_id(b"rewind")),
        CHUNK_ID_OF_REWIND
    );
}

#[test]
fn a_format_1_sealed_record_opens_to_its_plaintext() {
    let opened = ring()
        .open_with_password(&Password::new(PASSWORD.to_vec()))
        .unwrap();
    let sealed = std::fs::read(dir().join("sealed-record-v1")).unwrap();
    let sealer = opened.master.sealer(REPO, Aead::XChaCha20Poly1305);
    assert_eq!(
        sealer.open(RecordKind::Chunk, NAME, &sealed).unwrap(),
        PLAINTEXT
    );
    assert!(sealer.open(RecordKind::Versions, NAME, &sealed).is_err());
}

#[test]
fn an_aes_256_gcm_sealed_record_opens_to_its_plaintext() {
    let opened = ring()
        .open_with_password(&Password::new(PASSWORD.to_vec()))
        .unwrap();
    let sealed = std::fs::read(dir().join("sealed-record-aes256gcm-subkey")).unwrap();
    let sealer = opened.master.sealer(REPO, Aead::Aes256GcmSubkey);
    assert_eq!(
        sealer.open(RecordKind::Chunk, NAME, &sealed).unwrap(),
        PLAINTEXT
    );
    assert!(sealer.open(RecordKind::Versions, NAME, &sealed).is_err());
    let other = opened.master.sealer(REPO, Aead::XChaCha20Poly1305);
    assert!(other.open(RecordKind::Chunk, NAME, &sealed).is_err());
}

#[test]
#[ignore = "made the committed AES fixture once; never rerun without a format change"]
fn write_aes_fixture() {
    let opened = ring()
        .open_with_password(&Password::new(PASSWORD.to_vec()))
        .unwrap();
    let sealed = opened
        .master
        .sealer(REPO, Aead::Aes256GcmSubkey)
        .seal(RecordKind::Chunk, NAME, PLAINTEXT)
        .unwrap();
    std::fs::write(dir().join("sealed-record-aes256gcm-subkey"), sealed).unwrap();
}

#[test]
fn format_1_slot_files_encode_back_to_their_bytes() {
    for f in ["password-slot-v1", "key-file-slot-v1"] {
        let bytes = std::fs::read(dir().join(f)).unwrap();
        assert_eq!(KeySlot::decode(&bytes).unwrap().encode(), bytes, "{f}");
    }
}

#[test]
#[ignore = "made the committed fixtures once; never rerun without a format change"]
fn write_fixtures() {
    let master = MasterKey::generate().unwrap();
    let mut ring = Keyring::new();
    let label = SlotLabel {
        host: "fixture-host".into(),
        user: "fixture-user".into(),
    };
    let pw = Password::new(PASSWORD.to_vec());
    let params = Argon2Params::new(64, 1, 1).unwrap();
    ring.add_password(&master, &pw, params, label.clone())
        .unwrap();
    let key = KeyFileKey::generate().unwrap();
    key.write_new(&dir().join("key-file")).unwrap();
    ring.add_key_file(&master, &key, label).unwrap();
    for (slot, f) in ring
        .slots()
        .iter()
        .zip(["password-slot-v1", "key-file-slot-v1"])
    {
        std::fs::write(dir().join(f), slot.encode()).unwrap();
    }
    let sealed = master
        .sealer(REPO, Aead::XChaCha20Poly1305)
        .seal(RecordKind::Chunk, NAME, PLAINTEXT)
        .unwrap();
    std::fs::write(dir().join("sealed-record-v1"), sealed).unwrap();
    println!(
        "chunk id of rewind: {}",
        hex::encode(master.chunk_id_key().chunk_id(b"rewind"))
    );
}
