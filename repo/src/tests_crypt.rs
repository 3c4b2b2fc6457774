//! Encrypted repositories (format 5): round trips, refused secrets, what
//! the files reveal, verify and repair with sealed records, key slots.

use std::fs;
use std::path::Path;

use rewind_core::{ChunkIds, DEFAULT_CHUNKER, EncodedChunk, RepoError, Repository, Timestamp};
use rewind_crypto::{Argon2Params, CryptoError, KeyFileKey, Password};

use crate::LocalRepo;
use crate::keys::{Secret, Secrets};
use crate::tests::{C, dir_v, file_v, packs_of};

fn fast() -> Argon2Params {
    Argon2Params::new(64, 1, 1).unwrap()
}

fn pw(s: &str) -> Secret {
    Secret::Password(Password::new(s.as_bytes().to_vec()))
}

/// Content no one would find by chance in ciphertext.
const SECRET_TEXT: &[u8] = b"the quarterly numbers of Zyxwvut Holdings, do not share ";
const SECRET_NAME: &[u8] = b"/home/u/Zyxwvut-merger-plans.txt";

fn encrypted_with_a_file(dir: &Path) -> (LocalRepo, EncodedChunk) {
    let repo = LocalRepo::init_encrypted(dir, DEFAULT_CHUNKER, &pw("right"), fast()).unwrap();
    let ids = repo.chunk_ids();
    assert!(ids.is_keyed());
    let data = SECRET_TEXT.repeat(50);
    let c = EncodedChunk::encode_with_id(ids.id_of(&data), &data);
    repo.put_chunks(vec![c.clone()]).unwrap();
    repo.commit_versions(vec![
        dir_v(1, 1, b"/home/u"),
        file_v(2, 2, SECRET_NAME, &[&c]),
    ])
    .unwrap();
    (repo, c)
}

/// Open `dir` for writing again, right after this process dropped its
/// writer. The lock is `flock` on `DIR/lock`: a child another test thread
/// is starting at that moment (s3s-fs for the S3 tests) holds a copy of the
/// descriptor until its `exec` closes it, so the lock can outlive the drop
/// by a moment on a loaded machine (seen twice as "Locked … pid file").
fn reopen_writer(dir: &Path) -> LocalRepo {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match LocalRepo::open_writer_with_secret(dir, &pw("right")) {
            Err(RepoError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r.unwrap(),
        }
    }
}

fn every_file(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let b = fs::read(&p).unwrap();
                out.push((p, b));
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn an_encrypted_repository_round_trips_and_its_files_show_no_plaintext() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, c) = encrypted_with_a_file(tmp.path());
    drop(repo);
    let config = fs::read_to_string(tmp.path().join("config")).unwrap();
    assert!(config.contains("\"format\": 5"), "{config}");
    assert!(config.contains("aes256gcm-subkey"), "{config}");
    assert_eq!(fs::read_dir(tmp.path().join("keys")).unwrap().count(), 1);
    for (p, bytes) in every_file(tmp.path()) {
        for needle in [&SECRET_TEXT[..20], &SECRET_NAME[8..], b"Zyxwvut"] {
            assert!(!contains(&bytes, needle), "{} shows plaintext", p.display());
        }
        // Nor the plain blake3 id of the content.
        assert!(!contains(
            &bytes,
            &rewind_core::ChunkId::of(&SECRET_TEXT.repeat(50)).0
        ));
    }
    let r = LocalRepo::open_with_secret(tmp.path(), &pw("right")).unwrap();
    assert!(r.is_encrypted());
    assert_eq!(r.read_chunk(&c.id).unwrap(), SECRET_TEXT.repeat(50));
    let tree = r.tree_at(C, b"/home/u", Timestamp(10)).unwrap();
    assert_eq!(tree.len(), 2);
    assert_eq!(tree[1].path, SECRET_NAME);
    assert!(r.verify(false).unwrap().is_ok());
    // A writer reopens it, and appends.
    drop(r);
    let w = reopen_writer(tmp.path());
    let data = b"more".repeat(400);
    let d = EncodedChunk::encode_with_id(w.chunk_ids().id_of(&data), &data);
    w.put_chunks(vec![d.clone()]).unwrap();
    w.commit_versions(vec![file_v(3, 3, b"/home/u/b", &[&d])])
        .unwrap();
    assert_eq!(w.read_chunk(&d.id).unwrap(), data);
    assert!(w.verify(false).unwrap().is_ok());
}

struct NoSecret;

impl Secrets for NoSecret {
    fn secret(&self) -> Result<Secret, CryptoError> {
        Err(CryptoError::NoPassword)
    }
}

#[test]
fn an_encrypted_repository_refuses_a_wrong_or_missing_secret() {
    let tmp = tempfile::tempdir().unwrap();
    drop(encrypted_with_a_file(tmp.path()));
    let err = LocalRepo::open_with_secret(tmp.path(), &pw("wrong")).unwrap_err();
    assert!(matches!(err, RepoError::Keys { .. }), "{err:?}");
    assert!(err.to_string().contains("wrong password"), "{err}");
    let err = LocalRepo::open_with(tmp.path(), &NoSecret).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "repository {}: is encrypted: no password: set REWIND_PASSWORD or REWIND_PASSWORD_FILE",
            tmp.path().display()
        )
    );
    let err = LocalRepo::open_writer_with_secret(
        tmp.path(),
        &Secret::KeyFile(KeyFileKey::generate().unwrap()),
    )
    .unwrap_err();
    assert!(err.to_string().contains("wrong key file"), "{err}");
    // A plain repository never asks.
    let plain = tmp.path().join("plain");
    drop(LocalRepo::init(&plain, DEFAULT_CHUNKER).unwrap());
    let p = LocalRepo::open_with(&plain, &NoSecret).unwrap();
    assert!(!p.is_encrypted());
    assert!(matches!(p.chunk_ids(), ChunkIds::Plain));
    drop(p);
    drop(LocalRepo::open_writer_with(&plain, &NoSecret).unwrap());
    let config = fs::read_to_string(plain.join("config")).unwrap();
    assert!(config.contains("\"format\": 4"), "{config}");
    assert!(!config.contains("encryption"), "{config}");
    assert!(!plain.join("keys").exists());
}

#[test]
fn a_flipped_byte_in_a_sealed_record_is_reported_with_pack_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, c) = encrypted_with_a_file(tmp.path());
    drop(repo);
    let pack = packs_of(tmp.path())[0].clone();
    let idx = crate::index::read(
        &LocalRepo::open_with_secret(tmp.path(), &pw("right"))
            .unwrap()
            .crypt,
        tmp.path(),
        crate::pack_name::PackName::parse(crate::crypt::pack_label(&pack)).unwrap(),
    )
    .unwrap()
    .unwrap();
    let hit = idx.chunks.iter().find(|x| x.id == c.id).copied().unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    // Inside the ciphertext: the frame CRC is fixed up so only the tag
    // can tell.
    let at = (hit.offset + hit.frame_len as u64 - 30) as usize;
    bytes[at] ^= 0x40;
    let start = hit.offset as usize;
    let payload = &bytes[start + rewind_core::frame::HEADER..start + hit.frame_len as usize];
    let crc = crc32fast::hash(payload);
    bytes[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    fs::write(&pack, &bytes).unwrap();
    let r = LocalRepo::open_with_secret(tmp.path(), &pw("right")).unwrap();
    assert!(r.read_chunk(&c.id).is_err());
    let v = r.verify(false).unwrap();
    assert!(!v.is_ok());
    let issue = v
        .issues
        .iter()
        .find(|i| i.path == pack && i.offset == Some(hit.offset))
        .unwrap_or_else(|| panic!("{v:?}"));
    assert!(issue.problem.contains("does not open"), "{issue:?}");
}

#[test]
fn repair_works_with_the_key_after_a_lost_index_and_a_truncated_pack() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, c) = encrypted_with_a_file(tmp.path());
    let data = b"second pack ".repeat(300);
    let d = EncodedChunk::encode_with_id(repo.chunk_ids().id_of(&data), &data);
    repo.put_chunks(vec![d.clone()]).unwrap();
    repo.commit_versions(vec![file_v(3, 3, b"/home/u/second", &[&d])])
        .unwrap();
    drop(repo);
    for f in fs::read_dir(tmp.path().join("index")).unwrap() {
        fs::remove_file(f.unwrap().path()).unwrap();
    }
    let w = reopen_writer(tmp.path());
    assert_eq!(w.read_chunk(&c.id).unwrap(), SECRET_TEXT.repeat(50));
    let report = w.repair().unwrap();
    assert_eq!(report.rebuilt.packs, 2);
    assert!(w.verify(false).unwrap().is_ok());
    drop(w);
    // Truncate the pack holding the second file: its footer and version
    // record go, its chunk survives the salvaging scan.
    let pack = packs_of(tmp.path())
        .into_iter()
        .find(|p| {
            let b = fs::read(p).unwrap();
            contains(&b, &d.id.0)
        })
        .unwrap();
    let len = fs::metadata(&pack).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(&pack).unwrap();
    f.set_len(len - 30).unwrap();
    drop(f);
    let w = reopen_writer(tmp.path());
    assert!(!w.verify(false).unwrap().is_ok());
    let report = w.repair().unwrap();
    assert_eq!(report.rewritten.len(), 1, "{report:?}");
    assert!(w.verify(false).unwrap().is_ok());
    assert_eq!(w.read_chunk(&c.id).unwrap(), SECRET_TEXT.repeat(50));
    assert_eq!(w.read_chunk(&d.id).unwrap(), data);
}

#[test]
fn key_slots_are_added_listed_and_removed_but_never_the_one_in_use() {
    let tmp = tempfile::tempdir().unwrap();
    drop(encrypted_with_a_file(tmp.path()));
    let r = LocalRepo::open_with_secret(tmp.path(), &pw("right")).unwrap();
    let first = r.key_slots().unwrap();
    assert_eq!(first.len(), 1);
    assert!(first[0].in_use);
    assert_eq!(first[0].kind, "password");
    let key = KeyFileKey::generate().unwrap();
    let added = r
        .add_key_with(&pw("right"), &Secret::KeyFile(key), fast())
        .unwrap();
    assert!(r.add_key_with(&pw("wrong"), &pw("x"), fast()).is_err());
    let second = r.add_key_with(&pw("right"), &pw("other"), fast()).unwrap();
    assert_eq!(r.key_slots().unwrap().len(), 3);
    let err = r.remove_key(&first[0].id).unwrap_err();
    assert!(
        err.to_string().contains("opened the repository with"),
        "{err}"
    );
    r.remove_key(&added).unwrap();
    drop(r);
    // Opened with the other password, the first one can go; the one in
    // use (now the last) cannot.
    let r = LocalRepo::open_with_secret(tmp.path(), &pw("other")).unwrap();
    r.remove_key(&first[0].id).unwrap();
    assert!(LocalRepo::open_with_secret(tmp.path(), &pw("right")).is_err());
    let err = r.remove_key(&second).unwrap_err();
    assert!(
        err.to_string().contains("opened the repository with"),
        "{err}"
    );
    drop(r);
    let r = LocalRepo::open_with_secret(tmp.path(), &pw("other")).unwrap();
    assert_eq!(r.key_slots().unwrap().len(), 1);
    assert!(
        r.read_chunk(&r.read_state().chunks.keys().next().copied().unwrap())
            .is_ok()
    );
}

#[test]
fn a_large_batch_is_sealed_on_several_threads_and_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let repo =
        LocalRepo::init_encrypted(tmp.path(), DEFAULT_CHUNKER, &pw("right"), fast()).unwrap();
    let ids = repo.chunk_ids();
    // 40 chunks of 64 KiB: above the size at which sealing is shared out.
    let chunks: Vec<EncodedChunk> = (0..40u8)
        .map(|i| {
            let data: Vec<u8> = (0..65536u32)
                .map(|j| (j.wrapping_mul(2_654_435_761) >> 13) as u8 ^ i)
                .collect();
            EncodedChunk::encode_with_id(ids.id_of(&data), &data)
        })
        .collect();
    repo.put_chunks(chunks.clone()).unwrap();
    let refs: Vec<&EncodedChunk> = chunks.iter().collect();
    repo.commit_versions(vec![dir_v(1, 1, b"/d"), file_v(2, 2, b"/d/big", &refs)])
        .unwrap();
    drop(repo);
    let repo = LocalRepo::open_with_secret(tmp.path(), &pw("right")).unwrap();
    for c in &chunks {
        assert_eq!(repo.read_encoded(&c.id).unwrap().data, c.data);
    }
    let v = repo.verify(false).unwrap();
    assert!(v.issues.is_empty(), "{:?}", v.issues);
}
