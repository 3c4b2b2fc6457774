use super::*;
use rewind_core::{ChunkRef, EncodedChunk, Entry};
use rewind_repo::LocalRepo;

struct Fixture {
    _tmp: tempfile::TempDir,
    repo: LocalRepo,
    base: PathBuf,
    seq: u64,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let repo = LocalRepo::init(&base.join("repo"), rewind_core::DEFAULT_CHUNKER).unwrap();
        fs_create(&base.join("src"));
        Fixture {
            _tmp: tmp,
            repo,
            base,
            seq: 0,
        }
    }

    fn meta(&self, kind: FileKind, mode: u32, size: u64) -> FileMeta {
        let mut m = rewind_fsmeta::read_meta(&self.base).unwrap();
        m.kind = kind;
        m.mode = mode;
        m.size = size;
        m.mtime = rewind_fsmeta::FileTime {
            sec: 1_700_000_000,
            nsec: 5,
        };
        m
    }

    fn put(&mut self, rel: &str, at: i64, entry: Entry) {
        self.seq += 1;
        let mut path = rewind_core::path::to_bytes(&self.base.join("src")).to_vec();
        if !rel.is_empty() {
            path.push(b'/');
            path.extend_from_slice(rel.as_bytes());
        }
        self.repo
            .commit_versions(vec![Version {
                client: "c".into(),
                seq: self.seq,
                observed_at: Timestamp(at),
                path,
                entry,
            }])
            .unwrap();
    }

    fn dir(&mut self, rel: &str, at: i64) {
        let meta = self.meta(FileKind::Dir, 0o750, 0);
        self.put(
            rel,
            at,
            Entry::Present {
                meta,
                chunks: vec![],
                xattrs: vec![],
            },
        );
    }

    fn file(&mut self, rel: &str, at: i64, data: &[u8]) {
        self.file_in_pieces(rel, at, data, data.len().max(1));
    }

    /// A file stored as pieces of `piece` bytes, a chunk each.
    fn file_in_pieces(&mut self, rel: &str, at: i64, data: &[u8], piece: usize) {
        let encoded: Vec<EncodedChunk> = data.chunks(piece).map(EncodedChunk::encode).collect();
        let chunks = encoded
            .iter()
            .map(|c| ChunkRef {
                id: c.id,
                len: c.raw_len,
            })
            .collect();
        self.repo.put_chunks(encoded).unwrap();
        let meta = self.meta(FileKind::File, 0o640, data.len() as u64);
        self.put(
            rel,
            at,
            Entry::Present {
                meta,
                chunks,
                xattrs: vec![],
            },
        );
    }

    fn src(&self) -> Vec<u8> {
        rewind_core::path::to_bytes(&self.base.join("src")).to_vec()
    }
}

fn fs_create(p: &Path) {
    std::fs::create_dir_all(p).unwrap();
}

#[test]
fn restores_a_tree_to_a_new_place_with_metadata() {
    let mut f = Fixture::new();
    f.dir("", 10);
    f.dir("d", 10);
    f.file("d/a.txt", 20, b"alpha");
    f.file("b.txt", 30, b"beta");
    let dest = f.base.join("out");
    let opts = RestoreOptions {
        to: Some(dest.clone()),
        ..Default::default()
    };
    let r = restore(&f.repo, "c", &f.src(), Timestamp(25), &opts).unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(std::fs::read(dest.join("d/a.txt")).unwrap(), b"alpha");
    assert!(!dest.join("b.txt").exists(), "b.txt did not exist at 25");
    let m = rewind_fsmeta::read_meta(&dest.join("d/a.txt")).unwrap();
    assert_eq!(m.mode, 0o640);
    assert_eq!(m.mtime.sec, 1_700_000_000);
    let d = rewind_fsmeta::read_meta(&dest.join("d")).unwrap();
    assert_eq!(
        (d.mode, d.mtime.sec),
        (0o750, 1_700_000_000),
        "dir meta after children"
    );
}

#[test]
fn in_place_reuses_matching_content_and_delete_removes_newer_files() {
    let mut f = Fixture::new();
    f.dir("", 10);
    f.file("same.txt", 10, b"unchanged content");
    f.file("edit.txt", 10, b"original");
    let src = f.base.join("src");
    std::fs::write(src.join("same.txt"), b"unchanged content").unwrap();
    std::fs::write(src.join("edit.txt"), b"edited later").unwrap();
    std::fs::write(src.join("new.txt"), b"created later").unwrap();
    std::fs::write(src.join("ignored.tmp"), b"never captured").unwrap();
    let keep = |p: &Path| p.extension().is_some_and(|e| e == "tmp");
    let opts = RestoreOptions {
        delete: true,
        keep: Some(&keep),
        ..Default::default()
    };
    let r = restore(&f.repo, "c", &f.src(), Timestamp(20), &opts).unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.unchanged, 1);
    assert_eq!(std::fs::read(src.join("edit.txt")).unwrap(), b"original");
    assert!(!src.join("new.txt").exists());
    assert!(
        src.join("ignored.tmp").exists(),
        "kept paths survive --delete"
    );
    assert_eq!(r.deleted, 1);
}

#[test]
fn unsafe_stored_paths_are_refused_and_reported() {
    let mut f = Fixture::new();
    f.dir("", 10);
    f.file("ok.txt", 10, b"ok");
    f.dir("..", 10);
    f.file("../evil.txt", 10, b"evil");
    let dest = f.base.join("out");
    let opts = RestoreOptions {
        to: Some(dest.clone()),
        ..Default::default()
    };
    let r = restore(&f.repo, "c", &f.src(), Timestamp(20), &opts).unwrap();
    assert_eq!(std::fs::read(dest.join("ok.txt")).unwrap(), b"ok");
    assert!(!f.base.join("evil.txt").exists());
    assert!(
        r.problems.iter().any(|p| p.message.contains("'..'")),
        "{:?}",
        r.problems
    );
}

#[test]
fn missing_path_and_occupied_destination_are_errors() {
    let mut f = Fixture::new();
    f.dir("", 10);
    f.file("a", 10, b"a");
    let none = restore(
        &f.repo,
        "c",
        &f.src(),
        Timestamp(5),
        &RestoreOptions::default(),
    );
    assert!(matches!(none, Err(RestoreError::NotFound { .. })));
    let dest = f.base.join("busy");
    std::fs::create_dir_all(dest.join("x")).unwrap();
    let opts = RestoreOptions {
        to: Some(dest),
        ..Default::default()
    };
    let busy = restore(&f.repo, "c", &f.src(), Timestamp(20), &opts);
    assert!(matches!(busy, Err(RestoreError::DestExists { .. })));
}

impl Fixture {
    /// A file version with `meta`, content `data` (one chunk, empty for
    /// none) and xattrs `(name, value)` stored as chunks.
    fn file_with(
        &mut self,
        rel: &str,
        at: i64,
        meta: FileMeta,
        data: &[u8],
        xattrs: &[(&str, &[u8])],
    ) {
        let mut put = Vec::new();
        let chunks = if data.is_empty() {
            vec![]
        } else {
            let c = EncodedChunk::encode(data);
            let r = ChunkRef {
                id: c.id,
                len: c.raw_len,
            };
            put.push(c);
            vec![r]
        };
        let mut refs = Vec::new();
        for (name, value) in xattrs {
            let c = EncodedChunk::encode(value);
            refs.push(rewind_core::XattrRef {
                name: name.as_bytes().to_vec(),
                value: ChunkRef {
                    id: c.id,
                    len: c.raw_len,
                },
            });
            put.push(c);
        }
        self.repo.put_chunks(put).unwrap();
        self.put(
            rel,
            at,
            Entry::Present {
                meta,
                chunks,
                xattrs: refs,
            },
        );
    }
}

fn restore_to(f: &Fixture, numeric_owner: bool) -> (PathBuf, RestoreReport) {
    let dest = f.base.join(format!("out-{}", rand::random::<u32>()));
    let opts = RestoreOptions {
        to: Some(dest.clone()),
        numeric_owner,
        ..Default::default()
    };
    let r = restore(&f.repo, "c", &f.src(), Timestamp(100), &opts).unwrap();
    (dest, r)
}

#[test]
fn xattr_values_are_fetched_from_their_chunks() {
    let mut f = Fixture::new();
    f.dir("", 10);
    let m = f.meta(FileKind::File, 0o644, 1);
    f.file_with(
        "a",
        20,
        m.clone(),
        b"a",
        &[("user.one", b"1"), ("user.big", &[7u8; 3000])],
    );
    f.file_with("b", 20, m, b"b", &[("user.one", b"1")]);
    let (dest, r) = restore_to(&f, false);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    let got = rewind_fsmeta::read_meta(&dest.join("a")).unwrap();
    let names: Vec<&[u8]> = got.xattrs.iter().map(|x| x.name.as_slice()).collect();
    assert_eq!(names, [&b"user.big"[..], b"user.one"]);
    assert_eq!(got.xattrs[0].value, vec![7u8; 3000]);
    let b = rewind_fsmeta::read_meta(&dest.join("b")).unwrap();
    assert_eq!(b.xattrs[0].value, b"1");
}

#[test]
fn names_of_one_inode_become_one_inode_unless_their_content_differs() {
    let mut f = Fixture::new();
    f.dir("", 10);
    let mut m = f.meta(FileKind::File, 0o640, 4);
    m.nlink = 3;
    m.hardlink_group = Some((1, 99));
    f.file_with("x1", 20, m.clone(), b"same", &[]);
    f.file_with("x2", 21, m.clone(), b"same", &[]);
    // Captured before the inode changed: kept as its own file.
    f.file_with("x3", 19, m.clone(), b"old!", &[]);
    let (dest, r) = restore_to(&f, false);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    use std::os::unix::fs::MetadataExt;
    let md = |n: &str| std::fs::metadata(dest.join(n)).unwrap();
    assert_eq!(md("x1").ino(), md("x2").ino());
    assert_eq!(md("x1").nlink(), 2);
    assert_ne!(md("x3").ino(), md("x1").ino());
    assert_eq!(std::fs::read(dest.join("x3")).unwrap(), b"old!");
    assert_eq!(r.links, 1);
}

#[test]
fn a_sparse_version_is_written_with_holes() {
    let mut f = Fixture::new();
    f.dir("", 10);
    let size = 64u64 << 20;
    let mut m = f.meta(FileKind::File, 0o600, size);
    m.sparse = Some(vec![
        rewind_core::Extent {
            offset: 4096,
            len: 4096,
        },
        rewind_core::Extent {
            offset: 32 << 20,
            len: 8192,
        },
    ]);
    let mut data = vec![1u8; 4096];
    data.extend_from_slice(&[2u8; 8192]);
    f.file_with("s", 20, m, &data, &[]);
    let (dest, r) = restore_to(&f, false);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    let p = dest.join("s");
    let got = std::fs::read(&p).unwrap();
    assert_eq!(got.len() as u64, size);
    assert!(got[..4096].iter().all(|&b| b == 0));
    assert!(got[4096..8192].iter().all(|&b| b == 1));
    assert!(got[(32 << 20)..(32 << 20) + 8192].iter().all(|&b| b == 2));
    assert!(got[(32 << 20) + 8192..].iter().all(|&b| b == 0));
    use std::os::unix::fs::MetadataExt;
    let blocks = std::fs::metadata(&p).unwrap().blocks() * 512;
    assert!(
        blocks < 1 << 20,
        "{blocks} bytes allocated: holes were filled"
    );
}

#[test]
fn owners_map_by_name_unless_numeric() {
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let Some(daemon_uid) = std::process::Command::new("id")
        .args(["-u", "daemon"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse::<u32>().ok())
    else {
        return;
    };
    let mut f = Fixture::new();
    f.dir("", 10);
    let mut m = f.meta(FileKind::File, 0o644, 1);
    m.uid = 4242;
    m.user = Some("daemon".into());
    m.gid = 4343;
    m.group = Some("rewind-no-such-group".into());
    f.file_with("o", 20, m, b"o", &[]);
    use std::os::unix::fs::MetadataExt;
    let (dest, r) = restore_to(&f, false);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    let md = std::fs::metadata(dest.join("o")).unwrap();
    assert_eq!((md.uid(), md.gid()), (daemon_uid, 4343));
    let (dest, _) = restore_to(&f, true);
    let md = std::fs::metadata(dest.join("o")).unwrap();
    assert_eq!((md.uid(), md.gid()), (4242, 4343));
}

#[test]
fn in_place_links_leave_no_temporary_names() {
    use std::os::unix::fs::MetadataExt;
    let mut f = Fixture::new();
    f.dir("", 10);
    let mut m = f.meta(FileKind::File, 0o640, 4);
    m.nlink = 2;
    m.hardlink_group = Some((1, 7));
    f.file_with("y1", 20, m.clone(), b"same", &[]);
    f.file_with("y2", 20, m, b"same", &[]);
    let src = f.base.join("src");
    let check = || {
        let r = restore(
            &f.repo,
            "c",
            &f.src(),
            Timestamp(100),
            &RestoreOptions::default(),
        )
        .unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let names: Vec<_> = std::fs::read_dir(&src)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let (a, b) = (
            std::fs::metadata(src.join("y1")).unwrap(),
            std::fs::metadata(src.join("y2")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino());
        assert_eq!(std::fs::read(src.join("y2")).unwrap(), b"same");
    };
    // Already one inode: renaming the new link onto `y2` does nothing.
    std::fs::write(src.join("y1"), b"same").unwrap();
    std::fs::hard_link(src.join("y1"), src.join("y2")).unwrap();
    check();
    // Two separate files become one inode again.
    std::fs::remove_file(src.join("y2")).unwrap();
    std::fs::write(src.join("y2"), b"diff").unwrap();
    check();
}

#[test]
fn an_unchanged_sparse_file_in_place_is_left_alone() {
    let mut f = Fixture::new();
    f.dir("", 10);
    let size = 1u64 << 30;
    let extents = vec![rewind_core::Extent {
        offset: 1 << 20,
        len: 4096,
    }];
    let mut m = f.meta(FileKind::File, 0o600, size);
    m.sparse = Some(extents);
    f.file_with("s", 20, m, &[9u8; 4096], &[]);
    let p = f.base.join("src/s");
    let file = std::fs::File::create(&p).unwrap();
    file.set_len(size).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[9u8; 4096], 1 << 20).unwrap();
    file.sync_all().unwrap();
    let r = restore(
        &f.repo,
        "c",
        &f.src(),
        Timestamp(100),
        &RestoreOptions::default(),
    )
    .unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!((r.unchanged, r.bytes_fetched), (1, 0));
}

#[test]
fn when_the_first_name_cannot_be_written_the_others_still_share_an_inode() {
    use std::os::unix::fs::MetadataExt;
    let mut f = Fixture::new();
    f.dir("", 10);
    f.dir("a", 10);
    f.dir("b", 10);
    let mut m = f.meta(FileKind::File, 0o640, 4);
    m.nlink = 3;
    m.hardlink_group = Some((1, 5));
    f.file_with("a/x", 20, m.clone(), b"same", &[]);
    f.file_with("b/y", 20, m.clone(), b"same", &[]);
    f.file_with("b/z", 20, m, b"same", &[]);
    // In place, `a` is a symlink now: `a/x` cannot be written.
    let src = f.base.join("src");
    let elsewhere = f.base.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::create_dir_all(src.join("b")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, src.join("a")).unwrap();
    let r = restore(
        &f.repo,
        "c",
        &f.src(),
        Timestamp(100),
        &RestoreOptions::default(),
    )
    .unwrap();
    assert!(
        r.problems.iter().any(|p| p.path.ends_with(b"/a")),
        "{:?}",
        r.problems
    );
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    let (y, z) = (
        std::fs::metadata(src.join("b/y")).unwrap(),
        std::fs::metadata(src.join("b/z")).unwrap(),
    );
    assert_eq!(y.ino(), z.ino());
    assert_eq!(std::fs::read(src.join("b/z")).unwrap(), b"same");
}

#[test]
fn files_written_by_the_writer_threads_are_all_counted_and_right() {
    let mut f = Fixture::new();
    f.dir("", 10);
    let mut total = 0u64;
    for d in 0..4 {
        f.dir(&format!("d{d}"), 10);
        for i in 0..75 {
            let data = format!("file {d}/{i} ").repeat(i + 1);
            total += data.len() as u64;
            f.file(&format!("d{d}/f{i}"), 20, data.as_bytes());
        }
    }
    let dest = f.base.join("out");
    let seen = std::sync::atomic::AtomicU64::new(0);
    let progress = |n: u64| {
        seen.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    };
    let opts = RestoreOptions {
        to: Some(dest.clone()),
        progress: Some(&progress),
        ..Default::default()
    };
    let r = restore(&f.repo, "c", &f.src(), Timestamp(30), &opts).unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!((r.files, r.dirs), (300, 5));
    assert_eq!(r.bytes_fetched, total);
    assert_eq!(seen.into_inner(), total);
    for d in 0..4 {
        for i in 0..75 {
            let want = format!("file {d}/{i} ").repeat(i + 1);
            let p = dest.join(format!("d{d}/f{i}"));
            assert_eq!(
                std::fs::read(&p).unwrap(),
                want.as_bytes(),
                "{}",
                p.display()
            );
            assert_eq!(rewind_fsmeta::read_meta(&p).unwrap().mode, 0o640);
        }
        let dm = rewind_fsmeta::read_meta(&dest.join(format!("d{d}"))).unwrap();
        assert_eq!(
            dm.mtime.sec, 1_700_000_000,
            "directory times after its files"
        );
    }
}

/// The repository of a fixture, counting the requests for chunks a
/// restore sends (each `read_chunk` or `read_chunks` call is one round
/// trip to a server, and one or a few ranged GETs on a store).
struct Counting<'a> {
    repo: &'a LocalRepo,
    requests: std::sync::atomic::AtomicUsize,
    /// What it answers for `parallel_reads` (a network repository: > 1).
    parallel: usize,
    /// Requests from this one on fail, as a store that went away.
    fail_from: Option<usize>,
    /// Answer `storage_order` as the repository does (a store's
    /// repository does; the default answers none).
    pack_order: bool,
    /// A chunk that does not decode: a request that asks for it fails.
    damaged: Option<ChunkId>,
    /// Every chunk asked for, in every request.
    asked: std::sync::Mutex<Vec<ChunkId>>,
}

impl<'a> Counting<'a> {
    fn new(repo: &'a LocalRepo) -> Self {
        Counting {
            repo,
            requests: Default::default(),
            parallel: 1,
            fail_from: None,
            pack_order: false,
            damaged: None,
            asked: Default::default(),
        }
    }

    /// A repository on an object store: 8 reads at once, and its chunks
    /// placed in pack order.
    fn store(repo: &'a LocalRepo) -> Self {
        Counting {
            parallel: 8,
            pack_order: true,
            ..Counting::new(repo)
        }
    }

    /// Count a request for `ids`; an error once it is one that must fail
    /// or it asks for the damaged chunk.
    fn request(&self, ids: &[ChunkId]) -> Result<(), RepoError> {
        self.asked.lock().unwrap().extend_from_slice(ids);
        let n = self
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(bad) = self.damaged.filter(|d| ids.contains(d)) {
            return Err(RepoError::Corrupt {
                path: "store".into(),
                reason: format!("chunk {bad} does not decode"),
            });
        }
        match self.fail_from {
            Some(k) if n >= k => Err(RepoError::Io {
                path: "store".into(),
                source: std::io::Error::other("the store went away"),
            }),
            _ => Ok(()),
        }
    }
}

impl Repository for Counting<'_> {
    fn missing_chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>, RepoError> {
        self.repo.missing_chunks(ids)
    }
    fn put_chunks(&self, chunks: Vec<EncodedChunk>) -> Result<(), RepoError> {
        self.repo.put_chunks(chunks)
    }
    fn commit_versions(&self, versions: Vec<Version>) -> Result<(), RepoError> {
        self.repo.commit_versions(versions)
    }
    fn versions_of(&self, client: &str, path: &[u8]) -> Result<Vec<Version>, RepoError> {
        self.repo.versions_of(client, path)
    }
    fn tree_at(&self, client: &str, path: &[u8], at: Timestamp) -> Result<Vec<Version>, RepoError> {
        self.repo.tree_at(client, path, at)
    }
    fn covers(&self, client: &str, path: &[u8]) -> Result<bool, RepoError> {
        self.repo.covers(client, path)
    }
    fn find(
        &self,
        client: &str,
        q: &rewind_core::FindQuery,
    ) -> Result<rewind_core::FindReply, RepoError> {
        self.repo.find(client, q)
    }
    fn activity(
        &self,
        client: &str,
        q: &rewind_core::ActivityQuery,
    ) -> Result<Vec<rewind_core::ActivityBucket>, RepoError> {
        self.repo.activity(client, q)
    }
    fn read_chunk(&self, id: &ChunkId) -> Result<Vec<u8>, RepoError> {
        self.request(&[*id])?;
        self.repo.read_chunk(id)
    }
    fn read_chunks(&self, ids: &[ChunkId]) -> Result<Vec<Vec<u8>>, RepoError> {
        self.request(ids)?;
        self.repo.read_chunks(ids)
    }
    fn parallel_reads(&self) -> usize {
        self.parallel
    }
    fn storage_order(&self, ids: &[ChunkId]) -> Vec<Option<(u64, u64)>> {
        if self.pack_order {
            self.repo.storage_order(ids)
        } else {
            vec![None; ids.len()]
        }
    }
    fn stats(&self) -> Result<rewind_core::RepoStats, RepoError> {
        self.repo.stats()
    }
}

/// Small files restored to a new place have their chunks fetched in
/// batches (one request for up to 64 files), not one request per file;
/// the content is the same.
#[test]
fn small_files_are_fetched_in_batches_not_one_request_each() {
    let mut f = Fixture::new();
    f.dir("", 10);
    for i in 0..200 {
        f.file(&format!("f{i}"), 20, format!("small file {i}\n").as_bytes());
    }
    // And one large file of several chunks, fetched on its own.
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    f.file("big", 20, &big);
    let counting = Counting::new(&f.repo);
    let dest = f.base.join("out");
    let opts = RestoreOptions {
        to: Some(dest.clone()),
        ..Default::default()
    };
    let r = restore(&counting, "c", &f.src(), Timestamp(30), &opts).unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.files, 201);
    for i in 0..200 {
        assert_eq!(
            std::fs::read(dest.join(format!("f{i}"))).unwrap(),
            format!("small file {i}\n").as_bytes()
        );
    }
    assert!(std::fs::read(dest.join("big")).unwrap() == big);
    let requests = counting.requests.into_inner();
    // 200 small files in batches of at most 64, and the large one.
    assert!(requests <= 8, "{requests} requests for 201 files");
}

/// From a repository whose reads wait on a network, a large file's
/// windows are fetched several at once and written at their offsets: the
/// file comes back byte for byte, the other files too. A window that
/// cannot be fetched leaves neither the file nor a temporary name.
#[test]
fn a_large_file_from_a_network_repository_is_fetched_several_windows_at_once() {
    let mut f = Fixture::new();
    f.dir("", 10);
    let big: Vec<u8> = (0..30_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    f.file_in_pieces("big", 20, &big, 1 << 20);
    f.file("small", 20, b"a small file\n");
    let mut counting = Counting::new(&f.repo);
    counting.parallel = 8;
    let dest = f.base.join("out");
    let opts = RestoreOptions {
        to: Some(dest.clone()),
        ..Default::default()
    };
    let r = restore(&counting, "c", &f.src(), Timestamp(30), &opts).unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.files, 2);
    assert!(std::fs::read(dest.join("big")).unwrap() == big);
    assert_eq!(
        std::fs::read(dest.join("small")).unwrap(),
        b"a small file\n"
    );
    // 30 MB in windows of at most 8 MiB: at least 4 requests, one each.
    let requests = counting.requests.into_inner();
    assert!((4..=8).contains(&requests), "{requests} requests");

    // The store goes away after the first two requests (the small file's
    // may be one of them, or come after and fail too).
    let mut failing = Counting::new(&f.repo);
    failing.parallel = 8;
    failing.fail_from = Some(2);
    let dest = f.base.join("out2");
    let opts = RestoreOptions {
        to: Some(dest.clone()),
        ..Default::default()
    };
    let r = restore(&failing, "c", &f.src(), Timestamp(30), &opts).unwrap();
    let big_path = [f.src(), b"/big".to_vec()].concat();
    let failed: Vec<&[u8]> = r.problems.iter().map(|p| p.path.as_slice()).collect();
    assert!(failed.contains(&big_path.as_slice()), "{:?}", r.problems);
    assert!(
        r.problems.iter().all(|p| p.message.contains("went away")),
        "{:?}",
        r.problems
    );
    let left: Vec<_> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "small")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Restoring to a new place, directories and large files are handed out
/// first, then small files in the order their chunks lie in the packs
/// (here the reverse of their names: stored last to first).
#[test]
fn small_files_are_written_in_storage_order_after_directories_and_large_files() {
    let mut f = Fixture::new();
    f.dir("", 10);
    f.dir("d", 10);
    for i in (0..5).rev() {
        f.file(
            &format!("d/f{i}"),
            20,
            format!("small file {i}\n").as_bytes(),
        );
    }
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    f.file_in_pieces("z-big", 20, &big, 1 << 20);
    let tree = f.repo.tree_at("c", &f.src(), Timestamp(30)).unwrap();
    let roles = plan_links(&tree);
    let name = |i: usize| {
        let p = &tree[i].path;
        String::from_utf8_lossy(&p[f.src().len()..]).into_owned()
    };
    let order: Vec<String> = write_order(&f.repo, &tree, &roles, true)
        .into_iter()
        .map(name)
        .collect();
    assert_eq!(
        order,
        [
            "", "/d", "/z-big", "/d/f4", "/d/f3", "/d/f2", "/d/f1", "/d/f0"
        ]
    );
    // In place, the tree's order.
    let order: Vec<String> = write_order(&f.repo, &tree, &roles, false)
        .into_iter()
        .map(name)
        .collect();
    assert_eq!(
        order,
        [
            "", "/d", "/d/f0", "/d/f1", "/d/f2", "/d/f3", "/d/f4", "/z-big"
        ]
    );
}

#[test]
fn a_file_is_fetched_in_windows_of_at_most_32_mib_or_256_chunks() {
    let refs = |lens: &[u32]| -> Vec<ChunkRef> {
        lens.iter()
            .enumerate()
            .map(|(i, &len)| ChunkRef {
                id: ChunkId::of(&i.to_le_bytes()),
                len,
            })
            .collect()
    };
    let sizes = |chunks: &[ChunkRef]| -> Vec<usize> { windows(chunks).map(<[_]>::len).collect() };
    assert_eq!(sizes(&refs(&[1 << 20; 100])), [32, 32, 32, 4]);
    assert_eq!(sizes(&refs(&[16 << 20; 5])), [2, 2, 1]);
    assert_eq!(sizes(&refs(&[100; 300])), [256, 44]);
    // A chunk larger than a window goes alone.
    assert_eq!(sizes(&refs(&[1, 40 << 20, 1])), [1, 1, 1]);
    assert!(sizes(&[]).is_empty());
    // Every chunk once, in order.
    let all = refs(&[300_000; 500]);
    let back: Vec<ChunkRef> = windows(&all).flatten().cloned().collect();
    assert_eq!(back, all);
}

/// Content that compresses poorly, different for each `seed`.
fn noise(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| {
            (i.wrapping_add(seed.wrapping_mul(7919))
                .wrapping_mul(2654435761)
                >> 13) as u8
        })
        .collect()
}

/// Temporary names a restore left anywhere below `dir`.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(leftovers(&p));
        } else if is_restore_tmp(&p) {
            out.push(p);
        }
    }
    out
}

/// The fixture of the pack-order tests: small files (some with the same
/// content, one chunk shared by several files), a large file of 40 pieces
/// of 1 MiB stored in 4 packs, one of its pieces twice, a file made of
/// other files' chunks (from several packs), an empty file and two names
/// of one inode. Each `put_chunks` is a pack of its own. The content of
/// each file by name.
fn pack_order_fixture(f: &mut Fixture) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    f.dir("", 10);
    f.dir("d", 10);
    for i in 0..150 {
        // Every tenth file holds what file 0 holds: one chunk, 15 places.
        let data = if i % 10 == 0 {
            b"shared content\n".to_vec()
        } else {
            format!("small file {i}\n").into_bytes()
        };
        let name = format!("d/f{i:03}");
        f.file(&name, 20, &data);
        files.push((name, data));
    }
    let piece = 1 << 20;
    let mut big = Vec::new();
    for p in 0..4 {
        // A pack of 10 pieces each.
        let part = noise(10 * piece, p);
        f.file_in_pieces(&format!("part{p}"), 15, &part, piece);
        big.extend_from_slice(&part);
    }
    // Piece 3 again at the end: one chunk, two places in one file.
    let again = big[3 * piece..4 * piece].to_vec();
    big.extend_from_slice(&again);
    f.file_in_pieces("big", 20, &big, piece);
    files.push(("big".into(), big));
    // Three small files' chunks, from three packs, as one file.
    let joined = [
        b"small file 1\n".as_slice(),
        b"small file 2\n",
        b"small file 3\n",
    ]
    .concat();
    f.file_in_pieces("joined", 20, &joined, 13);
    files.push(("joined".into(), joined));
    f.file("empty", 20, b"");
    let mut m = f.meta(FileKind::File, 0o640, 5);
    m.nlink = 2;
    m.hardlink_group = Some((1, 77));
    f.file_with("l1", 20, m.clone(), b"link\n", &[]);
    f.file_with("l2", 20, m, b"link\n", &[]);
    files.push(("l1".into(), b"link\n".to_vec()));
    files.push(("l2".into(), b"link\n".to_vec()));
    files
}

/// Restore the fixture's folder as it was at 30 through `repo` to a new
/// place, `name` in the fixture's base; that place and the report.
fn restore_to_new_place(repo: &Counting<'_>, f: &Fixture, name: &str) -> (PathBuf, RestoreReport) {
    let dest = f.base.join(name);
    let opts = RestoreOptions {
        to: Some(dest.clone()),
        ..Default::default()
    };
    let r = restore(repo, "c", &f.src(), Timestamp(30), &opts).unwrap();
    (dest, r)
}

/// From a repository on an object store, a restore to a new place goes in
/// pack order: every chunk is asked for once, however many files and
/// places hold it, in few requests, and every file comes back whole with
/// its metadata and no temporary name left. (File by file, the shared
/// chunk was fetched by each batch that held one of its files.)
#[test]
fn a_restore_from_a_store_fetches_each_chunk_once_in_pack_order() {
    let mut f = Fixture::new();
    let files = pack_order_fixture(&mut f);
    let counting = Counting::store(&f.repo);
    let (dest, r) = restore_to_new_place(&counting, &f, "out");
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    // 150 small files, big, joined, empty, the 4 parts, and l1 (l2 is a link).
    assert_eq!((r.files, r.links), (158, 1));
    for (name, data) in &files {
        assert!(
            std::fs::read(dest.join(name)).unwrap() == *data,
            "{name} differs"
        );
    }
    assert_eq!(std::fs::read(dest.join("empty")).unwrap(), b"");
    let m = rewind_fsmeta::read_meta(&dest.join("big")).unwrap();
    assert_eq!((m.mode, m.mtime.sec), (0o640, 1_700_000_000));
    use std::os::unix::fs::MetadataExt;
    let ino = |n: &str| std::fs::metadata(dest.join(n)).unwrap().ino();
    assert_eq!(ino("l1"), ino("l2"));
    assert!(leftovers(&dest).is_empty(), "{:?}", leftovers(&dest));
    let asked = counting.asked.into_inner().unwrap();
    let distinct: HashSet<ChunkId> = asked.iter().copied().collect();
    assert_eq!(asked.len(), distinct.len(), "a chunk was asked for twice");
    // One request a pack, but three for each 10 MiB part (spans of at
    // most 4 MiB), and the hard-linked file's own.
    let ids: Vec<ChunkId> = distinct.into_iter().collect();
    let packs: HashSet<u64> = f
        .repo
        .storage_order(&ids)
        .into_iter()
        .map(|k| k.unwrap().0)
        .collect();
    let requests = counting.requests.into_inner();
    assert!(
        requests <= packs.len() + 4 * 2 + 1,
        "{requests} requests for {} packs",
        packs.len()
    );
}

/// In pack order, a chunk that cannot be read fails the files that hold
/// it (reported, neither under their name nor as a temporary file), and
/// every other file is restored, those of the same span included.
#[test]
fn a_damaged_chunk_in_pack_order_fails_only_the_files_that_hold_it() {
    let mut f = Fixture::new();
    let files = pack_order_fixture(&mut f);
    let mut counting = Counting::store(&f.repo);
    // The shared chunk: 15 small files hold it.
    counting.damaged = Some(ChunkId::of(b"shared content\n"));
    let (dest, r) = restore_to_new_place(&counting, &f, "out");
    let failed: HashSet<Vec<u8>> = r.problems.iter().map(|p| p.path.clone()).collect();
    let expect: HashSet<Vec<u8>> = (0..150)
        .step_by(10)
        .map(|i| [f.src(), format!("/d/f{i:03}").into_bytes()].concat())
        .collect();
    assert_eq!(failed, expect, "{:?}", r.problems);
    assert!(
        r.problems
            .iter()
            .all(|p| p.message.contains("does not decode")),
        "{:?}",
        r.problems
    );
    for (name, data) in &files {
        let got = std::fs::read(dest.join(name));
        if failed.contains(&[f.src(), b"/".to_vec(), name.as_bytes().to_vec()].concat()) {
            assert!(got.is_err(), "{name} exists");
        } else {
            assert!(got.unwrap() == *data, "{name} differs");
        }
    }
    assert!(leftovers(&dest).is_empty(), "{:?}", leftovers(&dest));

    // The store goes away after a few requests: what could not be
    // fetched is reported, nothing is left half-written.
    let mut failing = Counting::store(&f.repo);
    failing.fail_from = Some(3);
    let (dest, r) = restore_to_new_place(&failing, &f, "out2");
    assert!(!r.problems.is_empty());
    for (name, data) in &files {
        if let Ok(got) = std::fs::read(dest.join(name)) {
            assert!(got == *data, "{name} is not whole");
        }
    }
    assert!(leftovers(&dest).is_empty(), "{:?}", leftovers(&dest));
}

/// Files in more directories than one plan may hold open are written in
/// several plans, one after the other: all of them, whole, and a chunk
/// two plans need is fetched by each (never more than once by one).
#[test]
fn files_in_many_directories_are_written_in_several_plans() {
    let mut f = Fixture::new();
    f.dir("", 10);
    let n = PLAN_DIRS + 44;
    for k in 0..n {
        f.dir(&format!("d{k:03}"), 10);
        f.file(&format!("d{k:03}/a"), 20, format!("file {k}\n").as_bytes());
        f.file(&format!("d{k:03}/same"), 20, b"in every directory\n");
    }
    let counting = Counting::store(&f.repo);
    let (dest, r) = restore_to_new_place(&counting, &f, "out");
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.files, 2 * n as u64);
    for k in 0..n {
        let d = dest.join(format!("d{k:03}"));
        assert_eq!(
            std::fs::read(d.join("a")).unwrap(),
            format!("file {k}\n").as_bytes()
        );
        assert_eq!(
            std::fs::read(d.join("same")).unwrap(),
            b"in every directory\n"
        );
    }
    assert!(leftovers(&dest).is_empty(), "{:?}", leftovers(&dest));
    let asked = counting.asked.into_inner().unwrap();
    let same = ChunkId::of(b"in every directory\n");
    let times = asked.iter().filter(|&&c| c == same).count();
    assert!(
        (1..=3).contains(&times),
        "the shared chunk asked for {times} times"
    );
}
