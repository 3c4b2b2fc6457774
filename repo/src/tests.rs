//! Scenario tests of [`LocalRepo`]: the trait's contract, readers beside a
//! writer, and crashes simulated by damaging the directory or by failpoints.

use std::fs;
use std::path::{Path, PathBuf};

use rand::{RngCore, SeedableRng};
use rewind_core::{
    ChunkId, ChunkRef, DEFAULT_CHUNKER, EncodedChunk, Encoding, Entry, FileKind, FileMeta,
    RepoError, Repository, Timestamp, Version,
};

use crate::LocalRepo;

pub(crate) const C: &str = "laptop";

pub(crate) fn meta(kind: FileKind, size: u64) -> FileMeta {
    FileMeta {
        uid: 1000,
        gid: 1000,
        size,
        dev: 1,
        ino: 2,
        ..FileMeta::new(kind, 0o644)
    }
}

pub(crate) fn version(seq: u64, t: i64, path: &[u8], entry: Entry) -> Version {
    Version {
        client: C.into(),
        seq,
        observed_at: Timestamp(t),
        path: path.to_vec(),
        entry,
    }
}

pub(crate) fn dir_v(seq: u64, t: i64, path: &[u8]) -> Version {
    version(
        seq,
        t,
        path,
        Entry::Present {
            meta: meta(FileKind::Dir, 0),
            chunks: vec![],
            xattrs: vec![],
        },
    )
}

pub(crate) fn file_v(seq: u64, t: i64, path: &[u8], chunks: &[&EncodedChunk]) -> Version {
    let refs: Vec<ChunkRef> = chunks
        .iter()
        .map(|c| ChunkRef {
            id: c.id,
            len: c.raw_len,
        })
        .collect();
    let size = refs.iter().map(|r| r.len as u64).sum();
    version(
        seq,
        t,
        path,
        Entry::Present {
            meta: meta(FileKind::File, size),
            chunks: refs,
            xattrs: vec![],
        },
    )
}

pub(crate) fn gone(seq: u64, t: i64, path: &[u8]) -> Version {
    version(seq, t, path, Entry::Deleted)
}

pub(crate) fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

pub(crate) fn chunk(seed: u64) -> EncodedChunk {
    EncodedChunk::encode(&random(1000 + seed as usize % 500, seed))
}

pub(crate) fn paths(vs: &[Version]) -> Vec<&[u8]> {
    vs.iter().map(|v| v.path.as_slice()).collect()
}

pub(crate) fn packs_of(dir: &Path) -> Vec<PathBuf> {
    crate::layout::list_packs(dir)
        .unwrap()
        .into_values()
        .collect()
}

/// The index of the first pack (by index file name).
fn read_idx(dir: &Path) -> Result<Option<crate::pack_index::PackIndex>, RepoError> {
    let path = &idx_files(dir)[0];
    let stem = path.file_stem().unwrap().to_str().unwrap();
    crate::index::read(
        &crate::crypt::Crypt::plain(),
        dir,
        crate::pack_name::PackName::parse(stem).unwrap(),
    )
}

pub(crate) fn idx_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir.join("index"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// A repository with one commit: chunks a, b and a file version using them.
fn repo_with_one_commit(dir: &Path) -> (LocalRepo, Vec<EncodedChunk>) {
    let repo = LocalRepo::init(dir, DEFAULT_CHUNKER).unwrap();
    let chunks = vec![
        EncodedChunk::encode(&b"compressible ".repeat(500)),
        chunk(1),
    ];
    repo.put_chunks(chunks.clone()).unwrap();
    repo.commit_versions(vec![
        dir_v(1, 10, b"/r"),
        file_v(2, 10, b"/r/f", &[&chunks[0], &chunks[1]]),
    ])
    .unwrap();
    (repo, chunks)
}

#[test]
fn repo_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<LocalRepo>();
}

#[test]
fn init_open_and_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    assert!(matches!(
        LocalRepo::open(&dir),
        Err(RepoError::NotFound { .. })
    ));
    assert!(matches!(
        LocalRepo::open_writer(&dir),
        Err(RepoError::NotFound { .. })
    ));

    let repo = LocalRepo::init(&dir, DEFAULT_CHUNKER).unwrap();
    assert_eq!(repo.id().len(), 32);
    assert_eq!(repo.chunker(), DEFAULT_CHUNKER);
    assert_eq!(repo.path(), dir);
    for sub in ["packs", "index", "tmp"] {
        assert!(dir.join(sub).is_dir(), "{sub}");
    }
    let pid = fs::read_to_string(dir.join("lock")).unwrap();
    assert_eq!(pid.trim(), std::process::id().to_string());

    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("config")).unwrap()).unwrap();
    assert_eq!(json["format"], 4);
    assert_eq!(json["id"], repo.id());
    assert_eq!(json["chunker"]["avg"], DEFAULT_CHUNKER.avg);
    assert!(
        json["created"]
            .as_str()
            .unwrap()
            .parse::<jiff_like::Rfc3339>()
            .is_ok()
    );

    // A second init: locked while the first lives, refused after.
    assert!(matches!(
        LocalRepo::init(&dir, DEFAULT_CHUNKER),
        Err(RepoError::Locked { .. })
    ));
    let id = repo.id().to_string();
    drop(repo);
    match LocalRepo::init(&dir, DEFAULT_CHUNKER) {
        Err(RepoError::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::AlreadyExists)
        }
        other => panic!("{other:?}"),
    }

    let r = LocalRepo::open(&dir).unwrap();
    assert_eq!(r.id(), id);
    assert_eq!(r.stats().unwrap().versions, 0);
    assert!(matches!(
        r.put_chunks(vec![chunk(1)]),
        Err(RepoError::ReadOnly)
    ));
    assert!(matches!(
        r.commit_versions(vec![]),
        Err(RepoError::ReadOnly)
    ));
    assert!(matches!(r.rebuild_index(), Err(RepoError::ReadOnly)));

    // Damaged or foreign configs are refused, not trusted.
    fs::write(dir.join("config"), b"{\"format\":2}").unwrap();
    assert!(matches!(
        LocalRepo::open(&dir),
        Err(RepoError::Corrupt { .. })
    ));
    fs::write(dir.join("config"), b"\xff\x00garbage").unwrap();
    assert!(matches!(
        LocalRepo::open(&dir),
        Err(RepoError::Corrupt { .. })
    ));
}

/// Minimal RFC 3339 shape check without another dependency.
mod jiff_like {
    pub struct Rfc3339;
    impl std::str::FromStr for Rfc3339 {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            let b = s.as_bytes();
            let ok = b.len() >= 20
                && b[4] == b'-'
                && b[7] == b'-'
                && b[10] == b'T'
                && b[13] == b':'
                && s.ends_with('Z');
            if ok { Ok(Rfc3339) } else { Err(()) }
        }
    }
}

#[test]
fn put_commit_read_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, chunks) = repo_with_one_commit(tmp.path());
    for c in &chunks {
        assert_eq!(repo.read_chunk(&c.id).unwrap(), c.decode().unwrap());
    }
    assert!(chunks[0].encoding == Encoding::Zstd && chunks[1].encoding == Encoding::Raw);
    let other = chunk(99);
    assert_eq!(
        repo.missing_chunks(&[chunks[0].id, other.id, chunks[1].id])
            .unwrap(),
        vec![other.id]
    );
    assert!(matches!(
        repo.read_chunk(&other.id),
        Err(RepoError::MissingChunk(id)) if id == other.id
    ));
    let s = repo.stats().unwrap();
    assert_eq!((s.versions, s.chunks, s.packs), (2, 2, 1));
    assert_eq!(s.max_seq, vec![(C.to_string(), 2)]);
    assert!(s.last_commit.is_some());
    assert_eq!(
        s.pack_bytes,
        fs::metadata(&packs_of(tmp.path())[0]).unwrap().len()
    );
    assert_eq!(idx_files(tmp.path()).len(), 1);
    assert_eq!(fs::read_dir(tmp.path().join("tmp")).unwrap().count(), 0);

    // Chunks sent twice are stored once.
    repo.put_chunks(chunks.clone()).unwrap();
    repo.commit_versions(vec![file_v(3, 20, b"/r/g", &[&chunks[1]])])
        .unwrap();
    assert_eq!(repo.stats().unwrap().chunks, 2);
    drop(repo);

    // Everything is there for a reader in a fresh process.
    let r = LocalRepo::open(tmp.path()).unwrap();
    for c in &chunks {
        assert_eq!(r.read_chunk(&c.id).unwrap(), c.decode().unwrap());
    }
    assert_eq!(r.versions_of(C, b"/r/f").unwrap().len(), 1);
    assert_eq!(r.stats().unwrap().versions, 3);
    assert!(r.verify(false).unwrap().is_ok());
}

#[test]
fn pending_chunks_count_as_present_and_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    let c = chunk(5);
    repo.put_chunks(vec![c.clone()]).unwrap();
    assert!(repo.missing_chunks(&[c.id]).unwrap().is_empty());
    assert_eq!(repo.read_chunk(&c.id).unwrap(), c.decode().unwrap());
    assert!(packs_of(tmp.path()).is_empty(), "nothing sealed yet");
    // Dropping the writer before a commit forgets them, as promised.
    drop(repo);
    assert_eq!(fs::read_dir(tmp.path().join("tmp")).unwrap().count(), 0);
    let repo = LocalRepo::open_writer(tmp.path()).unwrap();
    assert_eq!(repo.missing_chunks(&[c.id]).unwrap(), vec![c.id]);
}

#[test]
fn chunk_not_matching_its_id_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    let good = chunk(1);
    let mut bad = chunk(2);
    bad.data[10] ^= 1;
    assert!(matches!(
        repo.put_chunks(vec![good.clone(), bad.clone()]),
        Err(RepoError::Corrupt { .. })
    ));
    // Refused whole: not even the good one is pending.
    assert_eq!(repo.missing_chunks(&[good.id, bad.id]).unwrap().len(), 2);
    let mut liar = chunk(3);
    liar.raw_len = u32::MAX;
    assert!(repo.put_chunks(vec![liar]).is_err());
}

#[test]
fn commit_refuses_dangling_version() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    let sent = chunk(1);
    let never = chunk(2);
    repo.put_chunks(vec![sent.clone()]).unwrap();
    let err = repo
        .commit_versions(vec![
            file_v(1, 10, b"/ok", &[&sent]),
            file_v(2, 10, b"/bad", &[&sent, &never]),
        ])
        .unwrap_err();
    match err {
        RepoError::DanglingVersion { seq, path, chunk } => {
            assert_eq!((seq, path.as_str(), chunk), (2, "/bad", never.id));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(repo.stats().unwrap().versions, 0, "refused whole");
    assert!(packs_of(tmp.path()).is_empty());
    // The pending chunk survives the refusal; a corrected batch goes in.
    repo.commit_versions(vec![file_v(1, 10, b"/ok", &[&sent])])
        .unwrap();
    assert_eq!(repo.stats().unwrap().versions, 1);
    assert_eq!(repo.read_chunk(&sent.id).unwrap(), sent.decode().unwrap());
}

#[test]
fn resent_batch_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    let batch: Vec<Version> = (1..=3).map(|s| gone(s, s as i64, b"/x")).collect();
    repo.commit_versions(batch.clone()).unwrap();
    repo.commit_versions(batch.clone()).unwrap();
    let s = repo.stats().unwrap();
    assert_eq!(
        (s.versions, s.packs),
        (3, 1),
        "no new pack for a re-sent batch"
    );
    // Overlapping batch: only seq 4 and 5 are new; duplicates inside a
    // batch count once.
    let mut more: Vec<Version> = (2..=5).map(|s| gone(s, s as i64, b"/x")).collect();
    more.push(gone(5, 5, b"/x"));
    repo.commit_versions(more).unwrap();
    let seqs: Vec<u64> = repo
        .versions_of(C, b"/x")
        .unwrap()
        .iter()
        .map(|v| v.seq)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    // Another client's seqs are its own.
    let mut v = gone(1, 1, b"/x");
    v.client = "desktop".into();
    repo.commit_versions(vec![v]).unwrap();
    assert_eq!(repo.versions_of("desktop", b"/x").unwrap().len(), 1);
    assert!(repo.commit_versions(vec![]).is_ok());
}

#[test]
fn versions_of_is_oldest_first_by_seq() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    repo.commit_versions(vec![
        gone(3, 30, b"/p"),
        dir_v(1, 10, b"/p"),
        gone(2, 20, b"/q"),
        dir_v(2, 20, b"/p"),
    ])
    .unwrap();
    let check = |r: &LocalRepo| {
        let seqs: Vec<u64> = r
            .versions_of(C, b"/p")
            .unwrap()
            .iter()
            .map(|v| v.seq)
            .collect();
        assert_eq!(seqs, vec![1, 3], "seq 2 was taken by /q first in the batch");
        assert!(r.versions_of(C, b"/nothing").unwrap().is_empty());
        assert!(r.versions_of("nobody", b"/p").unwrap().is_empty());
    };
    check(&repo);
    drop(repo);
    check(&LocalRepo::open(tmp.path()).unwrap());
}

#[test]
fn list_page_walks_every_version_path_by_path() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    repo.commit_versions(vec![
        dir_v(1, 10, b"/a"),
        dir_v(2, 20, b"/a"),
        gone(3, 30, b"/b"),
        dir_v(4, 40, b"/c"),
    ])
    .unwrap();
    let page = |after: Option<&[u8]>, n| -> Vec<u64> {
        repo.list_page(C, after, n).iter().map(|v| v.seq).collect()
    };
    assert_eq!(page(None, 1), vec![1, 2], "a path is never split");
    assert_eq!(page(Some(b"/a"), 1), vec![3]);
    assert_eq!(page(Some(b"/b"), 10), vec![4]);
    assert!(page(Some(b"/c"), 10).is_empty());
    assert_eq!(page(None, 100), vec![1, 2, 3, 4]);
    assert!(repo.list_page("nobody", None, 10).is_empty());
}

/// A name no filesystem API would hand over as a string.
pub(crate) const ODD: &[u8] = b"/r/\xffodd\nname";

/// A history with a deleted directory: /r/a edited at 20 and deleted at
/// 40; /r/d (with x, sub/y) deleted at 30 without tombstones for its
/// children, back as a file at 50; /r/ab and [`ODD`] unchanged.
pub(crate) fn deleted_dir_history(dir: &Path) -> LocalRepo {
    let repo = LocalRepo::init(dir, DEFAULT_CHUNKER).unwrap();
    let (c1, c2) = (chunk(1), chunk(2));
    repo.put_chunks(vec![c1.clone(), c2.clone()]).unwrap();
    repo.commit_versions(vec![
        dir_v(1, 10, b"/r"),
        file_v(2, 10, b"/r/a", &[&c1]),
        dir_v(3, 10, b"/r/d"),
        file_v(4, 10, b"/r/d/x", &[&c1]),
        dir_v(5, 10, b"/r/d/sub"),
        file_v(6, 10, b"/r/d/sub/y", &[&c2]),
        file_v(7, 10, b"/r/ab", &[&c2]),
        file_v(8, 10, ODD, &[&c2]),
    ])
    .unwrap();
    repo.commit_versions(vec![file_v(9, 20, b"/r/a", &[&c2])])
        .unwrap();
    // The directory is deleted; its children get no tombstones of their own.
    repo.commit_versions(vec![gone(10, 30, b"/r/d")]).unwrap();
    repo.commit_versions(vec![gone(11, 40, b"/r/a")]).unwrap();
    // /r/d comes back as a file: the leftovers below it must stay hidden.
    repo.commit_versions(vec![file_v(12, 50, b"/r/d", &[&c1])])
        .unwrap();
    repo
}

#[test]
fn tree_at_follows_time_tombstones_and_deleted_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = deleted_dir_history(tmp.path());
    let odd = ODD;
    let at = |path: &[u8], t: i64| repo.tree_at(C, path, Timestamp(t)).unwrap();
    assert!(at(b"/r", 5).is_empty());
    let t10 = at(b"/r", 10);
    let all: Vec<&[u8]> = vec![
        b"/r",
        b"/r/a",
        b"/r/ab",
        b"/r/d",
        b"/r/d/sub",
        b"/r/d/sub/y",
        b"/r/d/x",
        odd,
    ];
    assert_eq!(paths(&t10), all);
    assert_eq!(t10[1].seq, 2);
    let t25 = at(b"/r", 25);
    assert_eq!(t25.iter().find(|v| v.path == b"/r/a").unwrap().seq, 9);
    let after_rmdir: Vec<&[u8]> = vec![b"/r", b"/r/a", b"/r/ab", odd];
    assert_eq!(paths(&at(b"/r", 35)), after_rmdir);
    let after_rm: Vec<&[u8]> = vec![b"/r", b"/r/ab", odd];
    assert_eq!(paths(&at(b"/r", 45)), after_rm);
    let back_as_file: Vec<&[u8]> = vec![b"/r", b"/r/ab", b"/r/d", odd];
    assert_eq!(paths(&at(b"/r", 55)), back_as_file);
    assert_eq!(paths(&at(b"/r", i64::MAX)), back_as_file);

    // Sub-trees: the base itself is the first entry; siblings sharing a
    // prefix (/r/ab) are not below /r/a.
    assert_eq!(paths(&at(b"/r/a", 10)), vec![&b"/r/a"[..]]);
    assert_eq!(paths(&at(b"/r/a/", 10)), vec![&b"/r/a"[..]]);
    assert_eq!(
        paths(&at(b"/r/d", 10)),
        vec![&b"/r/d"[..], b"/r/d/sub", b"/r/d/sub/y", b"/r/d/x"]
    );
    assert!(
        at(b"/r/d", 35).is_empty(),
        "a deleted base hides its leftovers"
    );
    assert!(at(b"/r/d/sub", 35).is_empty(), "so does a deleted ancestor");
    // Above the protected root nothing was recorded, which hides nothing.
    assert_eq!(paths(&at(b"/", 10)), all);
    assert!(
        repo.tree_at("nobody", b"/", Timestamp(10))
            .unwrap()
            .is_empty()
    );

    assert!(repo.covers(C, b"/r").unwrap());
    assert!(repo.covers(C, b"/r/d/sub/new/deeper").unwrap());
    assert!(!repo.covers(C, b"/").unwrap());
    assert!(!repo.covers(C, b"/elsewhere").unwrap());
    assert!(!repo.covers("nobody", b"/r").unwrap());
}

/// A directory's first version can be proven later than its children's
/// (another capture thread, or a wait for a recent write to finish): at a
/// child's moment the directory is not yet recorded, which hides nothing;
/// once recorded, it answers for its children again.
#[test]
fn a_directory_recorded_after_its_child_does_not_hide_it() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    let c = chunk(3);
    repo.put_chunks(vec![c.clone()]).unwrap();
    repo.commit_versions(vec![
        file_v(1, 10, b"/r/s/f", &[&c]),
        dir_v(2, 12, b"/r/s"),
        dir_v(3, 15, b"/r"),
    ])
    .unwrap();
    let at = |path: &[u8], t: i64| -> Vec<Vec<u8>> {
        paths(&repo.tree_at(C, path, Timestamp(t)).unwrap())
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect()
    };
    assert_eq!(at(b"/r/s/f", 10), vec![b"/r/s/f".to_vec()]);
    assert_eq!(at(b"/r", 10), vec![b"/r/s/f".to_vec()]);
    assert_eq!(at(b"/r", 13), vec![b"/r/s".to_vec(), b"/r/s/f".to_vec()]);
    assert_eq!(
        at(b"/r", 15),
        vec![b"/r".to_vec(), b"/r/s".to_vec(), b"/r/s/f".to_vec()]
    );
    assert!(at(b"/r", 9).is_empty());
    // A tombstone still hides what lies below.
    repo.commit_versions(vec![gone(4, 20, b"/r/s")]).unwrap();
    assert!(at(b"/r/s/f", 20).is_empty());
    assert_eq!(at(b"/r/s/f", 19), vec![b"/r/s/f".to_vec()]);
}

#[test]
fn reader_sees_writer_commits_after_refresh() {
    let tmp = tempfile::tempdir().unwrap();
    let writer = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    let reader = LocalRepo::open(tmp.path()).unwrap();
    let c = chunk(7);
    writer.put_chunks(vec![c.clone()]).unwrap();
    writer
        .commit_versions(vec![file_v(1, 10, b"/f", &[&c])])
        .unwrap();
    assert!(reader.versions_of(C, b"/f").unwrap().is_empty());
    assert!(matches!(
        reader.read_chunk(&c.id),
        Err(RepoError::MissingChunk(_))
    ));
    reader.refresh().unwrap();
    assert_eq!(reader.versions_of(C, b"/f").unwrap().len(), 1);
    assert_eq!(reader.read_chunk(&c.id).unwrap(), c.decode().unwrap());
    reader.refresh().unwrap();
    assert_eq!(
        reader.stats().unwrap().versions,
        1,
        "refresh twice adds nothing"
    );

    // A pack whose index is not written yet (the writer is between its two
    // renames) is read from the pack itself, and nothing is written.
    let before = idx_files(tmp.path());
    writer.commit_versions(vec![gone(2, 20, b"/f")]).unwrap();
    let newest = idx_files(tmp.path())
        .into_iter()
        .find(|p| !before.contains(p))
        .unwrap();
    let n_idx = idx_files(tmp.path()).len();
    fs::remove_file(&newest).unwrap();
    reader.refresh().unwrap();
    assert_eq!(reader.versions_of(C, b"/f").unwrap().len(), 2);
    assert_eq!(
        idx_files(tmp.path()).len(),
        n_idx - 1,
        "readers never write"
    );
}

#[test]
fn readers_and_writer_in_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = std::sync::Arc::new(LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap());
    let w = repo.clone();
    let writer = std::thread::spawn(move || {
        for i in 0..20u64 {
            let c = chunk(100 + i);
            w.put_chunks(vec![c.clone()]).unwrap();
            w.commit_versions(vec![file_v(i + 1, i as i64, b"/f", &[&c])])
                .unwrap();
        }
    });
    let reader = LocalRepo::open(tmp.path()).unwrap();
    while !writer.is_finished() {
        reader.refresh().unwrap();
        for v in reader.tree_at(C, b"/", Timestamp::MAX).unwrap() {
            for c in v.chunks() {
                reader.read_chunk(&c.id).unwrap();
            }
        }
        let _ = repo.stats().unwrap();
    }
    writer.join().unwrap();
    reader.refresh().unwrap();
    assert_eq!(reader.versions_of(C, b"/f").unwrap().len(), 20);
}

#[test]
fn second_writer_is_locked_out() {
    let tmp = tempfile::tempdir().unwrap();
    let first = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    match LocalRepo::open_writer(tmp.path()) {
        Err(RepoError::Locked { path, lock, .. }) => {
            assert_eq!(path, tmp.path());
            assert_eq!(lock, tmp.path().join("lock"));
        }
        other => panic!("{other:?}"),
    }
    // Readers are welcome meanwhile.
    LocalRepo::open(tmp.path()).unwrap();
    drop(first);
    LocalRepo::open_writer(tmp.path()).unwrap();
}

#[test]
fn crash_a_pack_without_index_is_indexed_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, chunks) = repo_with_one_commit(tmp.path());
    drop(repo);
    for p in idx_files(tmp.path()) {
        fs::remove_file(p).unwrap();
    }
    // A reader copes without writing.
    let r = LocalRepo::open(tmp.path()).unwrap();
    assert_eq!(r.stats().unwrap().versions, 2);
    assert!(idx_files(tmp.path()).is_empty());
    drop(r);

    let w = LocalRepo::open_writer(tmp.path()).unwrap();
    assert_eq!(idx_files(tmp.path()).len(), 1);
    assert_eq!(w.stats().unwrap().versions, 2);
    for c in &chunks {
        assert_eq!(w.read_chunk(&c.id).unwrap(), c.decode().unwrap());
    }
    assert!(w.verify(false).unwrap().is_ok());

    // An index whose pack is gone is ignored (verify names it).
    drop(w);
    let pack = &packs_of(tmp.path())[0];
    let moved = tmp.path().join("elsewhere.pack");
    fs::rename(pack, &moved).unwrap();
    let w = LocalRepo::open_writer(tmp.path()).unwrap();
    assert_eq!(w.stats().unwrap().versions, 0);
    let report = w.verify(true).unwrap();
    assert_eq!(report.issues.len(), 1);
    assert!(report.issues[0].problem.contains("without its pack"));
    let rebuilt = w.rebuild_index().unwrap();
    assert_eq!(rebuilt.orphan_indexes_removed, 1);
    assert!(idx_files(tmp.path()).is_empty());
}

#[test]
fn an_index_that_misplaces_its_version_records_is_replaced_by_the_pack() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, chunks) = repo_with_one_commit(tmp.path());
    drop(repo);
    // The header reads well and matches the pack's length, but its version
    // record points at the first chunk: only loading the versions (one
    // pack at a time, after every header was read) finds that out.
    let mut idx = read_idx(tmp.path()).unwrap().unwrap();
    assert_eq!(idx.versions.len(), 2);
    idx.version_records[0].offset = idx.chunks[0].offset;
    idx.version_records[0].frame_len = idx.chunks[0].frame_len;
    let bad = crate::index::encode(&crate::crypt::Crypt::plain(), &idx).unwrap();
    let path = idx_files(tmp.path())[0].clone();
    fs::write(&path, &bad).unwrap();

    let r = LocalRepo::open(tmp.path()).unwrap();
    assert_eq!(r.stats().unwrap().versions, 2);
    assert_eq!(fs::read(&path).unwrap(), bad, "a reader writes nothing");
    drop(r);
    let w = LocalRepo::open_writer(tmp.path()).unwrap();
    assert_ne!(fs::read(&path).unwrap(), bad, "the writer wrote it again");
    assert_eq!(w.versions_of(C, b"/r/f").unwrap().len(), 1);
    for c in &chunks {
        assert_eq!(w.read_chunk(&c.id).unwrap(), c.decode().unwrap());
    }
    assert!(w.verify(true).unwrap().is_ok());
}

/// A pack with many small records, so that cuts land where we want them.
fn repo_with_big_pack(dir: &Path) -> Vec<EncodedChunk> {
    let repo = LocalRepo::init(dir, DEFAULT_CHUNKER).unwrap();
    let chunks: Vec<EncodedChunk> = (0..20).map(chunk).collect();
    repo.put_chunks(chunks.clone()).unwrap();
    let refs: Vec<&EncodedChunk> = chunks.iter().collect();
    repo.commit_versions(vec![file_v(1, 10, b"/big", &refs)])
        .unwrap();
    chunks
}

#[test]
fn crash_b_truncated_pack_is_salvaged() {
    let tmp = tempfile::tempdir().unwrap();
    let chunks = repo_with_big_pack(tmp.path());
    let pack = packs_of(tmp.path())[0].clone();
    let len = fs::metadata(&pack).unwrap().len();
    // Cut the trailer and part of the footer: every record survives.
    fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(len - 300)
        .unwrap();
    let w = LocalRepo::open_writer(tmp.path()).unwrap();
    assert_eq!(w.stats().unwrap().versions, 1);
    for c in &chunks {
        assert_eq!(w.read_chunk(&c.id).unwrap(), c.decode().unwrap());
    }
    let report = w.verify(false).unwrap();
    assert!(!report.is_ok());
    assert!(report.issues.iter().all(|i| i.path == pack), "{report:?}");
    assert!(
        report
            .issues
            .iter()
            .any(|i| i.problem.contains("end marker"))
    );
    let rebuilt = w.rebuild_index().unwrap();
    assert_eq!(rebuilt.damaged.len(), 1);
    assert_eq!(rebuilt.chunks, 20);
    drop(w);

    // Cut into the records, in the middle of the last chunk: it and the
    // version record after it are lost, the chunks before them are kept.
    let idx = read_idx(tmp.path()).unwrap().unwrap();
    let last = idx.chunks.last().unwrap();
    let cut = last.offset + last.frame_len as u64 / 2;
    fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let w = LocalRepo::open_writer(tmp.path()).unwrap();
    let s = w.stats().unwrap();
    assert_eq!(s.versions, 0, "the version record was at the end");
    assert_eq!(s.chunks, 19);
    let kept = chunks
        .iter()
        .filter(|c| w.read_chunk(&c.id).is_ok())
        .count();
    assert_eq!(kept, 19);
    assert_eq!(w.missing_chunks(&[last.id]).unwrap(), vec![last.id]);
    assert_eq!(w.missing_chunks(&[chunks[0].id]).unwrap(), vec![]);
    // The salvaged index records the damage and matches the pack.
    let idx = read_idx(tmp.path()).unwrap().unwrap();
    assert!(idx.damage.is_some());
    assert_eq!(idx.pack_len, cut);
}

#[test]
fn crash_c_tmp_garbage_is_removed_by_the_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, _) = repo_with_one_commit(tmp.path());
    drop(repo);
    let t = tmp.path().join("tmp");
    fs::write(
        t.join("0123456789abcdef0123456789abcdef.pack.tmp"),
        random(5000, 1),
    )
    .unwrap();
    fs::write(t.join("whatever.tmp"), b"half an index").unwrap();
    fs::create_dir(t.join("a-dir")).unwrap();
    fs::write(t.join("a-dir/x"), b"x").unwrap();
    LocalRepo::open(tmp.path()).unwrap();
    assert_eq!(
        fs::read_dir(&t).unwrap().count(),
        3,
        "readers leave tmp alone"
    );
    let w = LocalRepo::open_writer(tmp.path()).unwrap();
    assert_eq!(fs::read_dir(&t).unwrap().count(), 0);
    assert_eq!(w.stats().unwrap().versions, 2);
}

#[test]
fn flipped_byte_is_reported_as_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, chunks) = repo_with_one_commit(tmp.path());
    drop(repo);
    let pack = packs_of(tmp.path())[0].clone();
    let idx = read_idx(tmp.path()).unwrap().unwrap();
    let target = idx.chunks.iter().find(|c| c.id == chunks[1].id).unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    bytes[(target.offset + target.frame_len as u64 / 2) as usize] ^= 0x20;
    fs::write(&pack, &bytes).unwrap();

    let r = LocalRepo::open_writer(tmp.path()).unwrap();
    match r.read_chunk(&chunks[1].id) {
        Err(RepoError::Corrupt { path, reason }) => {
            assert_eq!(path, pack);
            assert!(reason.contains(&target.offset.to_string()), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        r.read_chunk(&chunks[0].id).unwrap(),
        chunks[0].decode().unwrap()
    );
    let quick = r.verify(true).unwrap();
    assert!(quick.is_ok(), "a quick verify reads no chunk data");
    let full = r.verify(false).unwrap();
    assert_eq!(full.issues.len(), 1, "{full:?}");
    assert_eq!(full.issues[0].path, pack);
    assert_eq!(full.issues[0].offset, Some(target.offset));
    assert_eq!(full.chunks, 2);
    assert_eq!(full.chunks_read, 1);
    // Exactly the versions that need the damaged chunk are named.
    let needing: Vec<u64> = vec![2];
    let mut named: Vec<u64> = full.damaged_versions.iter().map(|d| d.seq).collect();
    named.sort();
    assert_eq!(named, needing);
    assert!(full.damaged_versions.iter().all(|d| d.reason == "damaged"));
    assert!(quick.damaged_versions.is_empty());
    // Progress is reported for every pack.
    let mut seen = Vec::new();
    r.verify_with_progress(true, &mut |p| seen.push((p.packs_done, p.packs_total)))
        .unwrap();
    assert_eq!(seen.first(), Some(&(0, 1)));
    assert_eq!(seen.last(), Some(&(1, 1)));
}

#[test]
fn verify_reports_index_disagreeing_with_pack() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, _) = repo_with_one_commit(tmp.path());
    let first_idx = idx_files(tmp.path())[0].clone();
    let saved = fs::read(&first_idx).unwrap();
    repo.commit_versions(vec![gone(3, 30, b"/r/f")]).unwrap();
    // Give the second pack the first pack's index, renamed.
    let second = idx_files(tmp.path())
        .into_iter()
        .find(|p| *p != first_idx)
        .unwrap();
    fs::write(&second, &saved).unwrap();
    let report = repo.verify(true).unwrap();
    assert!(!report.is_ok());
    assert!(report.issues.iter().all(|i| i.path == second), "{report:?}");
    // The writer's rebuild puts it right.
    repo.rebuild_index().unwrap();
    assert!(repo.verify(false).unwrap().is_ok());
    assert_eq!(repo.stats().unwrap().versions, 3);
}

#[test]
fn packs_roll_over_at_the_target_size() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    repo.lock_writer().unwrap().pack_target = 8 * 1024;
    let chunks: Vec<EncodedChunk> = (0..40).map(chunk).collect();
    for batch in chunks.chunks(7) {
        repo.put_chunks(batch.to_vec()).unwrap();
    }
    // About 1.2 KiB a chunk: a pack is sealed every seven chunks or so,
    // before any commit, and those chunks are stored for good.
    let sealed = packs_of(tmp.path()).len();
    assert!((4..=6).contains(&sealed), "{sealed} packs");
    assert_eq!(repo.stats().unwrap().packs, sealed as u64);
    for p in packs_of(tmp.path()) {
        let n = fs::metadata(&p).unwrap().len();
        assert!(n < 8 * 1024 + 2000, "{n}");
    }
    let refs: Vec<&EncodedChunk> = chunks.iter().collect();
    repo.commit_versions(vec![file_v(1, 1, b"/f", &refs)])
        .unwrap();
    drop(repo);
    let r = LocalRepo::open(tmp.path()).unwrap();
    assert_eq!(r.stats().unwrap().chunks, 40);
    for c in &chunks {
        assert_eq!(r.read_chunk(&c.id).unwrap(), c.decode().unwrap());
    }
    assert!(r.verify(false).unwrap().is_ok());
}

#[test]
fn failure_before_pack_rename_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    let c = chunk(1);
    repo.put_chunks(vec![c.clone()]).unwrap();
    for fp in ["pack.fsync", "pack.rename"] {
        rewind_core::failpoint::arm(fp, true);
        let err = repo
            .commit_versions(vec![file_v(1, 1, b"/f", &[&c])])
            .unwrap_err();
        rewind_core::failpoint::arm(fp, false);
        assert!(err.is_transient(), "{err}");
        assert!(packs_of(tmp.path()).is_empty());
        assert_eq!(fs::read_dir(tmp.path().join("tmp")).unwrap().count(), 0);
        // The pending chunk went with the failed pack: start over.
        assert_eq!(repo.missing_chunks(&[c.id]).unwrap(), vec![c.id]);
        assert!(matches!(
            repo.commit_versions(vec![file_v(1, 1, b"/f", &[&c])]),
            Err(RepoError::DanglingVersion { .. })
        ));
        repo.put_chunks(vec![c.clone()]).unwrap();
    }
    // The same handle works after the failures.
    repo.commit_versions(vec![file_v(1, 1, b"/f", &[&c])])
        .unwrap();
    drop(repo);
    let r = LocalRepo::open(tmp.path()).unwrap();
    assert_eq!(r.stats().unwrap().versions, 1);
}

#[test]
fn failure_after_pack_rename_commits_on_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    let c = chunk(1);
    let batch = vec![file_v(1, 1, b"/f", &[&c])];
    repo.put_chunks(vec![c.clone()]).unwrap();
    rewind_core::failpoint::arm("idx.rename", true);
    assert!(repo.commit_versions(batch.clone()).is_err());
    rewind_core::failpoint::arm("idx.rename", false);
    assert_eq!(packs_of(tmp.path()).len(), 1);
    assert!(idx_files(tmp.path()).is_empty());
    drop(repo);

    let repo = LocalRepo::open_writer(tmp.path()).unwrap();
    assert_eq!(idx_files(tmp.path()).len(), 1);
    assert_eq!(repo.stats().unwrap().versions, 1);
    // The client never heard back and sends the batch again: harmless.
    repo.put_chunks(vec![c.clone()]).unwrap();
    repo.commit_versions(batch).unwrap();
    let s = repo.stats().unwrap();
    assert_eq!((s.versions, s.packs, s.chunks), (1, 1, 1));
    assert_eq!(repo.read_chunk(&c.id).unwrap(), c.decode().unwrap());
}

#[test]
fn failed_write_poisons_only_the_open_pack() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    let (a, b) = (chunk(1), chunk(2));
    repo.put_chunks(vec![a.clone()]).unwrap();
    rewind_core::failpoint::arm("pack.write", true);
    assert!(repo.put_chunks(vec![b.clone()]).is_err());
    rewind_core::failpoint::arm("pack.write", false);
    assert_eq!(repo.missing_chunks(&[a.id, b.id]).unwrap().len(), 2);
    repo.put_chunks(vec![a.clone(), b.clone()]).unwrap();
    repo.commit_versions(vec![file_v(1, 1, b"/f", &[&a, &b])])
        .unwrap();
    assert!(repo.verify(false).unwrap().is_ok());
}

#[test]
fn duplicate_packs_from_a_retried_commit_load_once() {
    // A commit whose index write failed leaves its pack; if the same handle
    // is used to retry, the batch is stored again in a second pack. Both
    // load without duplicating versions.
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    let c = chunk(1);
    let batch = vec![file_v(1, 1, b"/f", &[&c]), gone(2, 2, b"/g")];
    repo.put_chunks(vec![c.clone()]).unwrap();
    rewind_core::failpoint::arm("idx.write", true);
    assert!(repo.commit_versions(batch.clone()).is_err());
    rewind_core::failpoint::arm("idx.write", false);
    repo.put_chunks(vec![c.clone()]).unwrap();
    repo.commit_versions(batch).unwrap();
    drop(repo);
    let w = LocalRepo::open_writer(tmp.path()).unwrap();
    let s = w.stats().unwrap();
    assert_eq!((s.packs, s.versions, s.chunks), (2, 2, 1));
    assert_eq!(w.versions_of(C, b"/f").unwrap().len(), 1);
    assert!(w.verify(false).unwrap().is_ok());
}

#[test]
fn scan_steps_over_a_damaged_record_and_repair_rewrites_the_pack() {
    let tmp = tempfile::tempdir().unwrap();
    let chunks = repo_with_big_pack(tmp.path());
    let pack = packs_of(tmp.path())[0].clone();
    let idx = read_idx(tmp.path()).unwrap().unwrap();
    // No footer, and the fifth chunk's payload damaged.
    let len = fs::metadata(&pack).unwrap().len();
    let mut bytes = fs::read(&pack).unwrap();
    bytes.truncate(len as usize - 20);
    let hit = idx.chunks[4];
    bytes[(hit.offset + hit.frame_len as u64 - 3) as usize] ^= 0x01;
    fs::write(&pack, &bytes).unwrap();
    for f in idx_files(tmp.path()) {
        fs::remove_file(f).unwrap();
    }

    let w = LocalRepo::open_writer(tmp.path()).unwrap();
    let s = w.stats().unwrap();
    assert_eq!(s.chunks, 19, "only the damaged record is lost");
    assert_eq!(s.versions, 1, "the version record after it survives");
    let report = w.repair().unwrap();
    assert_eq!(report.rewritten.len(), 1);
    assert_eq!(report.rewritten[0].chunks_kept, 19);
    assert_eq!(report.rewritten[0].versions_kept, 1);
    assert!(!pack.exists(), "the damaged pack is gone");
    let v = w.verify(false).unwrap();
    assert_eq!(v.damaged_versions.len(), 1, "{v:?}");
    assert_eq!(v.damaged_versions[0].chunk, hit.id);
    assert!(
        v.issues
            .iter()
            .all(|i| i.problem.contains("which no pack holds")),
        "{v:?}"
    );
    for c in chunks.iter().filter(|c| c.id != hit.id) {
        assert_eq!(w.read_chunk(&c.id).unwrap(), c.decode().unwrap());
    }
    drop(w);
    let r = LocalRepo::open(tmp.path()).unwrap();
    assert_eq!(r.stats().unwrap().chunks, 19);
}

/// Text rows, and the same rows with every `every`th one changed.
fn rows_and_edit(n: usize, every: usize) -> (Vec<u8>, Vec<u8>) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..n {
        let row = format!("{i}\tcustomer {}\t{}.50\n", i * 31 % 977, i * 7);
        a.extend_from_slice(row.as_bytes());
        if i % every == 0 {
            b.extend_from_slice(format!("{i}\tchanged\n").as_bytes());
        } else {
            b.extend_from_slice(row.as_bytes());
        }
    }
    (a, b)
}

#[test]
fn deltas_are_stored_read_verified_and_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    let (a, b) = rows_and_edit(8_000, 100);
    let whole = EncodedChunk::encode(&a);
    repo.put_chunks(vec![whole.clone()]).unwrap();
    repo.commit_versions(vec![file_v(1, 1, b"/d/dump", &[&whole])])
        .unwrap();
    assert_eq!(repo.delta_base(&whole.id).unwrap(), Some(whole.id));
    let delta = EncodedChunk::encode_delta(ChunkId::of(&b), &b, whole.id, &a, 1).unwrap();
    assert!(delta.data.len() * 20 < whole.data.len());
    repo.put_chunks(vec![delta.clone()]).unwrap();
    repo.commit_versions(vec![file_v(2, 2, b"/d/dump", &[&delta])])
        .unwrap();
    assert_eq!(repo.read_chunk(&delta.id).unwrap(), b);
    // The base of a delta is its own base: deltas stay one step deep.
    assert_eq!(repo.delta_base(&delta.id).unwrap(), Some(whole.id));
    // Sent over the network whole, since the receiver may lack the base.
    let sent = repo.read_encoded(&delta.id).unwrap();
    assert_eq!(sent.base(), None);
    assert_eq!(sent.decode().unwrap(), b);

    // A delta against a delta, or against a chunk not stored, is refused.
    let (_, c) = rows_and_edit(8_000, 90);
    let chained = EncodedChunk::encode_delta(ChunkId::of(&c), &c, delta.id, &b, 1).unwrap();
    let e = repo.put_chunks(vec![chained.clone()]).unwrap_err();
    assert!(e.to_string().contains("is itself a delta"), "{e}");
    let orphan = EncodedChunk::encode_delta(ChunkId::of(&c), &c, ChunkId::of(b"x"), &a, 1);
    let orphan = orphan.unwrap();
    let e = repo.put_chunks(vec![orphan.clone()]).unwrap_err();
    assert!(e.to_string().contains("not in the repository"), "{e}");
    // The same without decoding (the agent's chunks): the base is looked up.
    repo.set_check_puts(false);
    let e = repo.put_chunks(vec![chained.clone()]).unwrap_err();
    assert!(e.to_string().contains("is itself a delta"), "{e}");
    let e = repo.put_chunks(vec![orphan]).unwrap_err();
    assert!(e.to_string().contains("not in the repository"), "{e}");
    repo.set_check_puts(true);

    let v = repo.verify(false).unwrap();
    assert!(v.is_ok(), "{v:?}");
    assert_eq!((v.chunks, v.chunks_read), (2, 2));
    drop(repo);
    // Read back from the index files, and from the packs alone.
    let r = LocalRepo::open(tmp.path()).unwrap();
    assert_eq!(r.delta_base(&delta.id).unwrap(), Some(whole.id));
    assert_eq!(r.read_chunk(&delta.id).unwrap(), b);
    drop(r);
    for f in idx_files(tmp.path()) {
        fs::remove_file(f).unwrap();
    }
    let w = LocalRepo::open_writer(tmp.path()).unwrap();
    assert_eq!(w.read_chunk(&delta.id).unwrap(), b);
    assert!(w.verify(false).unwrap().is_ok());

    // Damage to the base is damage to every delta of it: verify names
    // both versions, and repair keeps neither chunk.
    let base_pack = packs_of(tmp.path())
        .into_iter()
        .find(|p| fs::read(p).unwrap().len() as u64 > whole.data.len() as u64)
        .unwrap();
    drop(w);
    let mut bytes = fs::read(&base_pack).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x10;
    fs::write(&base_pack, &bytes).unwrap();
    let w = LocalRepo::open_writer(tmp.path()).unwrap();
    let e = w.read_chunk(&delta.id).unwrap_err();
    assert!(e.to_string().contains("delta of chunk"), "{e}");
    let v = w.verify(false).unwrap();
    let mut named: Vec<u64> = v.damaged_versions.iter().map(|d| d.seq).collect();
    named.sort();
    assert_eq!(named, vec![1, 2], "{v:?}");
    assert!(
        v.issues
            .iter()
            .any(|i| i.problem.contains("no pack holds whole and sound")),
        "{v:?}"
    );
    w.repair().unwrap();
    let s = w.stats().unwrap();
    assert_eq!(
        s.chunks, 0,
        "neither the damaged base nor its delta is kept"
    );
}

#[test]
fn a_format_2_repository_is_upgraded_by_its_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, chunks) = repo_with_one_commit(tmp.path());
    drop(repo);
    let cfg = tmp.path().join("config");
    let text = fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"format\": 4", "\"format\": 2");
    fs::write(&cfg, text).unwrap();
    let r = LocalRepo::open(tmp.path()).unwrap();
    assert!(r.stats().unwrap().versions > 0);
    let any_chunk = chunks[0].id;
    assert_eq!(
        r.delta_base(&any_chunk).unwrap(),
        None,
        "no deltas into format 2"
    );
    drop(r);
    let w = LocalRepo::open_writer(tmp.path()).unwrap();
    assert_eq!(w.delta_base(&any_chunk).unwrap(), Some(any_chunk));
    let json: serde_json::Value = serde_json::from_slice(&fs::read(&cfg).unwrap()).unwrap();
    assert_eq!(json["format"], 4);
}

#[test]
fn copies_of_stored_chunks_are_written_again_and_read_once() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    let (a, b) = (chunk(1), chunk(2));
    repo.put_chunks(vec![a.clone()]).unwrap();
    repo.commit_versions(vec![file_v(1, 10, b"/r/a", &[&a])])
        .unwrap();
    let bytes = repo.stats().unwrap().pack_bytes;
    // `a` is stored, `b` is not: both are written, and written alike.
    assert_eq!(repo.put_chunk_copies(&[a.view(), b.view()]).unwrap(), 2);
    // Within the open pack a chunk is not written twice.
    assert_eq!(repo.put_chunk_copies(&[a.view()]).unwrap(), 0);
    rewind_core::ChunkSink::store_durably(&repo, &[]).unwrap();
    let s = repo.stats().unwrap();
    assert_eq!(
        (s.chunks, s.packs),
        (2, 2),
        "distinct chunks are counted once"
    );
    assert!(s.pack_bytes > bytes + a.data.len() as u64);
    drop(repo);
    let repo = LocalRepo::open_writer(tmp.path()).unwrap();
    assert_eq!(repo.read_chunk(&a.id).unwrap(), a.decode().unwrap());
    let report = repo.verify(false).unwrap();
    assert!(report.issues.is_empty(), "{:?}", report.issues);
    assert_eq!(report.chunks, 3, "the copy is a record of its own");
}

#[test]
fn client_stats_are_the_clients_own() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    repo.commit_versions(vec![dir_v(1, 10, b"/r")]).unwrap();
    let mut other = dir_v(7, 10, b"/o");
    other.client = "desk".into();
    repo.commit_versions(vec![other]).unwrap();
    let mine = repo.client_stats(C);
    let theirs = repo.client_stats("desk");
    assert_eq!((mine.versions, mine.chunks, mine.packs), (1, 0, 0));
    assert_eq!(mine.max_seq, vec![(C.to_string(), 1)]);
    assert_eq!(theirs.max_seq, vec![("desk".to_string(), 7)]);
    assert!(mine.last_commit.unwrap() <= theirs.last_commit.unwrap());
    assert_eq!(
        repo.stats().unwrap().last_commit,
        theirs.last_commit,
        "the newest commit is desk's"
    );
    assert_eq!(repo.client_stats("nobody").last_commit, None);
}

/// The tree below `/r` at `at`, as (path, seq) pairs.
pub(crate) fn tree(repo: &impl Repository, at: Timestamp) -> Vec<(Vec<u8>, u64)> {
    repo.tree_at(C, b"/r", at)
        .unwrap()
        .into_iter()
        .map(|v: Version| (v.path, v.seq))
        .collect()
}
