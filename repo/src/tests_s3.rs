//! The S3 backend against a real S3-compatible server, `s3s-fs`, started
//! per test on a free loopback port with a temporary data directory.
//! `scripts/test` installs it into `target/s3-server/` (or set
//! `REWIND_S3S_FS`); without it these tests say so loudly and pass, since
//! the crate's own tests must run anywhere (the end-to-end tests in
//! `tests/s3.rs` require the server as root, in CI).

use std::fs;
use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rewind_core::{ChunkSink, DEFAULT_CHUNKER, EncodedChunk, Repository};

use crate::LocalRepo;
use crate::durable::CONFIG_STEPS;
use crate::s3::S3Store;
use crate::store::Store;
use crate::tests::{C, file_v};

const KEY: &str = "unit-key";
const SECRET: &str = "unit-secret";

pub(crate) struct Server {
    child: Child,
    data: tempfile::TempDir,
    /// `s3://BUCKET`
    pub(crate) root: String,
    pub(crate) store: &'static S3Store,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("REWIND_S3S_FS") {
        return Some(PathBuf::from(p));
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/s3-server/bin/s3s-fs");
    p.is_file().then_some(p)
}

/// A fresh server with one bucket, its client registered for `s3://BUCKET`.
pub(crate) fn server() -> Option<Server> {
    let Some(bin) = binary() else {
        eprintln!(
            "\n!!!!!!!! SKIPPED: s3s-fs is not installed (scripts/test installs it into target/s3-server) !!!!!!!!\n"
        );
        return None;
    };
    let data = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // A bucket name per server: clients are registered by bucket.
    let bucket = format!("unit{port}");
    fs::create_dir(data.path().join(&bucket)).unwrap();
    let child = Command::new(&bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", KEY, "--secret-key", SECRET])
        .arg(data.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "s3s-fs did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let endpoint = format!("http://127.0.0.1:{port}");
    let store = S3Store::register(S3Store::for_test(&endpoint, &bucket, KEY, SECRET).unwrap());
    Some(Server {
        child,
        data,
        root: format!("s3://{bucket}"),
        store,
    })
}

impl Server {
    pub(crate) fn path(&self, key: &str) -> PathBuf {
        PathBuf::from(format!("{}/{key}", self.root))
    }

    /// The file `s3s-fs` keeps object `key` in.
    pub(crate) fn file(&self, key: &str) -> PathBuf {
        let bucket = self.root.strip_prefix("s3://").unwrap();
        self.data.path().join(bucket).join(key)
    }
}

#[test]
fn put_new_creates_once_and_never_replaces() {
    let Some(s) = server() else { return };
    let p = s.path("r/config");
    assert!(s.store.put_new(&p, b"first").unwrap());
    assert!(!s.store.put_new(&p, b"second").unwrap());
    assert_eq!(fs::read(s.file("r/config")).unwrap(), b"first");
}

#[test]
fn objects_read_whole_and_by_range_and_missing_ones_are_not_found() {
    let Some(s) = server() else { return };
    let p = s.path("r/index/abc.idx");
    let body: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    s.store
        .put(Path::new("/nonexistent"), &p, &body, &CONFIG_STEPS)
        .unwrap();
    let mut all = Vec::new();
    s.store
        .open_read(&p)
        .unwrap()
        .read_to_end(&mut all)
        .unwrap();
    assert_eq!(all, body);
    let blob = s.store.open_blob(&p).unwrap();
    assert_eq!(blob.len, body.len() as u64);
    let mut buf = [0u8; 300];
    blob.data.read_exact_at(&mut buf, 70_000).unwrap();
    assert_eq!(&buf[..], &body[70_000..70_300]);
    let missing = s.path("r/index/none.idx");
    assert_eq!(
        s.store.len(&missing).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    assert_eq!(
        s.store.open_read(&missing).err().unwrap().kind(),
        io::ErrorKind::NotFound
    );
    assert!(!s.store.exists(&missing).unwrap());
    assert!(s.store.exists(&p).unwrap());
    s.store.remove(&p).unwrap();
    assert!(!s.store.exists(&p).unwrap());
}

#[test]
fn list_names_what_is_directly_under_a_prefix() {
    let Some(s) = server() else { return };
    for k in [
        "r/packs/ab/1.pack",
        "r/packs/ab/2.pack",
        "r/packs/cd/3.pack",
        "r/config",
    ] {
        s.store
            .put(Path::new("/nonexistent"), &s.path(k), b"x", &CONFIG_STEPS)
            .unwrap();
    }
    let mut top: Vec<String> = s
        .store
        .list(&s.path("r/packs"))
        .unwrap()
        .into_iter()
        .map(|(n, p)| {
            assert_eq!(p, s.path("r/packs").join(&n));
            n
        })
        .collect();
    top.sort();
    assert_eq!(top, ["ab", "cd"]);
    let mut ab: Vec<String> = s
        .store
        .list(&s.path("r/packs/ab"))
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    ab.sort();
    assert_eq!(ab, ["1.pack", "2.pack"]);
    assert!(s.store.list(&s.path("r/index")).unwrap().is_empty());
}

#[test]
fn a_repository_on_the_store_commits_reopens_verifies_and_repairs() {
    let Some(s) = server() else { return };
    let root = s.path("home/repo");
    let repo = LocalRepo::init(&root, DEFAULT_CHUNKER).unwrap();
    let chunks: Vec<EncodedChunk> = (0..20u8)
        .map(|i| EncodedChunk::encode(&[i; 5000]))
        .collect();
    let v = file_v(1, 1_000, b"/a", &chunks.iter().collect::<Vec<_>>());
    repo.commit_durably(&chunks, &[v]).unwrap();
    // The pack is whole in the bucket, then its index; no staging left.
    let packs = crate::store::list(&root.join("index")).unwrap();
    assert_eq!(packs.len(), 1);
    assert!(
        fs::read_dir(repo.staging().unwrap())
            .unwrap()
            .next()
            .is_none()
    );
    drop(repo);

    let reader = LocalRepo::open(&root).unwrap();
    assert_eq!(reader.versions_of(C, b"/a").unwrap().len(), 1);
    for c in &chunks {
        assert_eq!(reader.read_chunk(&c.id).unwrap(), c.decode().unwrap());
    }
    let report = reader.verify(false).unwrap();
    assert!(report.issues.is_empty(), "{report:?}");

    // A lost index object: the reader reads the pack's footer instead, a
    // writer writes the index again.
    let (name, idx) = packs.into_iter().next().unwrap();
    s.store.remove(&idx).unwrap();
    let reader = LocalRepo::open(&root).unwrap();
    assert_eq!(reader.versions_of(C, b"/a").unwrap().len(), 1);
    let writer = LocalRepo::open_writer(&root).unwrap();
    assert!(s.store.exists(&root.join("index").join(&name)).unwrap());
    let rebuilt = writer.rebuild_index().unwrap();
    assert_eq!(rebuilt.packs, 1);
    assert_eq!(writer.versions_of(C, b"/a").unwrap().len(), 1);
}

/// A repository under `s3://BUCKET/repo` with one commit of 20 chunks.
fn committed(s: &Server) -> (PathBuf, LocalRepo, Vec<EncodedChunk>) {
    let root = s.path("repo");
    let repo = LocalRepo::init(&root, DEFAULT_CHUNKER).unwrap();
    let chunks: Vec<EncodedChunk> = (0..20u64).map(crate::tests::chunk).collect();
    let v = file_v(1, 1_000, b"/a", &chunks.iter().collect::<Vec<_>>());
    repo.commit_durably(&chunks, &[v]).unwrap();
    (root, repo, chunks)
}

#[test]
fn a_failed_pack_upload_leaves_nothing_and_a_failed_index_upload_commits_on_reopen() {
    let Some(s) = server() else { return };
    let root = s.path("repo");
    let repo = LocalRepo::init(&root, DEFAULT_CHUNKER).unwrap();
    let c = crate::tests::chunk(1);
    let batch = vec![file_v(1, 1, b"/f", &[&c])];

    // The pack's upload fails: no object, no staging file, start over.
    repo.put_chunks(vec![c.clone()]).unwrap();
    rewind_core::failpoint::arm("pack.rename", true);
    let err = repo.commit_versions(batch.clone()).unwrap_err();
    rewind_core::failpoint::arm("pack.rename", false);
    assert!(err.is_transient(), "{err}");
    assert!(crate::tests::packs_of(&root).is_empty());
    assert!(
        fs::read_dir(repo.staging().unwrap())
            .unwrap()
            .next()
            .is_none()
    );
    assert_eq!(repo.missing_chunks(&[c.id]).unwrap(), vec![c.id]);

    // The pack is up, its index upload fails: the pack is whole and a
    // reader finds the commit from its footer; a writer writes the index.
    repo.put_chunks(vec![c.clone()]).unwrap();
    rewind_core::failpoint::arm("idx.write", true);
    assert!(repo.commit_versions(batch.clone()).is_err());
    rewind_core::failpoint::arm("idx.write", false);
    assert_eq!(crate::tests::packs_of(&root).len(), 1);
    assert!(crate::store::list(&root.join("index")).unwrap().is_empty());
    drop(repo);
    let reader = LocalRepo::open(&root).unwrap();
    assert_eq!(reader.stats().unwrap().versions, 1);
    assert_eq!(reader.read_chunk(&c.id).unwrap(), c.decode().unwrap());
    let writer = LocalRepo::open_writer(&root).unwrap();
    assert_eq!(crate::store::list(&root.join("index")).unwrap().len(), 1);
    // The client never heard back and sends the batch again: harmless.
    writer.put_chunks(vec![c.clone()]).unwrap();
    writer.commit_versions(batch).unwrap();
    let st = writer.stats().unwrap();
    assert_eq!((st.versions, st.packs, st.chunks), (1, 1, 1));
}

#[test]
fn repair_rewrites_a_truncated_pack_object() {
    let Some(s) = server() else { return };
    let (root, repo, chunks) = committed(&s);
    drop(repo);
    let pack = crate::tests::packs_of(&root).pop().unwrap();
    let key = pack
        .to_str()
        .unwrap()
        .strip_prefix(&format!("{}/", s.root))
        .unwrap();
    let file = s.file(key);
    let len = fs::metadata(&file).unwrap().len();
    // Cut the trailer and part of the footer: every record survives.
    fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len - 300)
        .unwrap();

    let w = LocalRepo::open_writer(&root).unwrap();
    let before = w.verify(false).unwrap();
    assert!(!before.is_ok());
    assert!(before.issues.iter().all(|i| i.path == pack), "{before:?}");
    let report = w.repair().unwrap();
    assert_eq!(report.rewritten.len(), 1);
    assert_eq!(report.rewritten[0].chunks_kept, 20);
    assert!(
        !s.store.exists(&pack).unwrap(),
        "the damaged pack object is gone"
    );
    let after = w.verify(false).unwrap();
    assert!(after.is_ok(), "{after:?}");
    drop(w);
    let r = LocalRepo::open(&root).unwrap();
    assert_eq!(r.stats().unwrap().versions, 1);
    for c in &chunks {
        assert_eq!(r.read_chunk(&c.id).unwrap(), c.decode().unwrap());
    }
}

/// A repository under `s3://BUCKET/repo` with `packs` commits of 5 chunks
/// each (a pack each), closed.
fn with_packs(s: &Server, packs: u64) -> (PathBuf, Vec<EncodedChunk>) {
    let root = s.path("repo");
    let repo = LocalRepo::init(&root, DEFAULT_CHUNKER).unwrap();
    let mut all = Vec::new();
    for p in 0..packs {
        let chunks: Vec<EncodedChunk> = (p * 5..p * 5 + 5).map(crate::tests::chunk).collect();
        let v = file_v(
            p + 1,
            1_000 + p as i64,
            b"/a",
            &chunks.iter().collect::<Vec<_>>(),
        );
        repo.commit_durably(&chunks, &[v]).unwrap();
        all.extend(chunks);
    }
    drop(repo);
    (root, all)
}

#[test]
fn opening_takes_pack_sizes_from_the_listing_and_sends_no_head() {
    let Some(s) = server() else { return };
    let (root, chunks) = with_packs(&s, 4);
    let before = s.store.requests.now();
    let r = LocalRepo::open(&root).unwrap();
    let open = s.store.requests.now().since(before);
    eprintln!("open of 4 packs: {open:?}");
    assert_eq!(r.stats().unwrap().versions, 4);
    assert_eq!(open.head, 0, "{open:?}");
    // config, retention, and the 4 index objects; a LIST of index/, and
    // one of all of packs/ (not one per packs/<ab>/).
    assert_eq!(open.get, 2 + 4, "{open:?}");
    assert_eq!(open.list, 2, "{open:?}");
    let before = s.store.requests.now();
    for c in &chunks {
        assert_eq!(r.read_chunk(&c.id).unwrap(), c.decode().unwrap());
    }
    let reads = s.store.requests.now().since(before);
    eprintln!("reads of 20 chunks: {reads:?}");
    assert_eq!(reads.head, 0, "{reads:?}");
    assert_eq!(reads.range, 20, "{reads:?}");
}

/// Count the requests `f` sends to `s`.
fn counted<T>(s: &Server, f: impl FnOnce() -> T) -> (T, crate::s3::Counts) {
    let before = s.store.requests.now();
    let t = f();
    (t, s.store.requests.now().since(before))
}

#[test]
fn a_second_open_reads_no_index_object_and_the_cache_never_wins_over_the_store() {
    let Some(s) = server() else { return };
    let (root, chunks) = with_packs(&s, 3);
    let cache = tempfile::tempdir().unwrap();
    crate::idx_cache::set_test_base(Some(cache.path().to_path_buf()));
    let open = || {
        let r = LocalRepo::open(&root).unwrap();
        assert_eq!(r.stats().unwrap().versions, r.stats().unwrap().packs);
        r
    };

    // First open: config, retention and 3 index objects; each kept.
    let (r, first) = counted(&s, open);
    eprintln!("first open of 3 packs: {first:?}");
    assert_eq!(first.get, 2 + 3, "{first:?}");
    let entries = cache.path().join(r.id()).join("index");
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    // An index entry and a version record entry per pack.
    assert_eq!(names(&entries).len(), 6, "{:?}", names(&entries));
    assert!(cache.path().join("CACHEDIR.TAG").is_file());
    drop(r);

    // Second open: no index object and no version record is read.
    let (r, second) = counted(&s, open);
    eprintln!("second open of 3 packs: {second:?}");
    assert_eq!((second.get, second.range), (2, 0), "{second:?}");
    assert_eq!(r.stats().unwrap().versions, 3);
    for c in &chunks {
        assert_eq!(r.read_chunk(&c.id).unwrap(), c.decode().unwrap());
    }
    drop(r);

    // A damaged entry is found, dropped and read again from the store.
    let of_kind = |k: &str| -> Vec<String> {
        names(&entries)
            .into_iter()
            .filter(|n| n.ends_with(k))
            .collect()
    };
    let victim = entries.join(&of_kind(".idx")[0]);
    let mut bytes = fs::read(&victim).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x40;
    fs::write(&victim, &bytes).unwrap();
    let (r, third) = counted(&s, open);
    assert_eq!(third.get, 2 + 1, "{third:?}");
    assert_eq!(r.stats().unwrap().versions, 3);
    assert_ne!(
        fs::read(&victim).unwrap(),
        bytes,
        "the entry was written again"
    );
    drop(r);

    // The same for a version record's entry: one ranged GET.
    let victim = entries.join(&of_kind(".rec")[0]);
    let mut bytes = fs::read(&victim).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x40;
    fs::write(&victim, &bytes).unwrap();
    let (r, rec) = counted(&s, open);
    assert_eq!((rec.get, rec.range), (2, 1), "{rec:?}");
    assert_eq!(r.stats().unwrap().versions, 3);
    assert_ne!(
        fs::read(&victim).unwrap(),
        bytes,
        "the entry was written again"
    );
    drop(r);

    // An entry sound by its checksum, for the listed object, whose
    // content does not read as an index (another build's format, say):
    // the reader drops it and reads the store's.
    let id = LocalRepo::open(&root).unwrap().id().to_string();
    let (name, listed) = crate::layout::list_idx_meta(&root)
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    let c = crate::idx_cache::IndexCache::open(&root, &id).unwrap();
    c.put(name, &listed, &vec![7u8; listed.len.unwrap() as usize]);
    assert!(c.get(name, &listed).is_some());
    let (r, junk) = counted(&s, open);
    assert_eq!(junk.get, 2 + 1, "{junk:?}");
    assert_eq!(r.stats().unwrap().versions, 3);
    assert_ne!(c.get(name, &listed).unwrap()[0], 7);
    drop(r);

    // An index object deleted from the store: its entry goes at the next
    // open (and the pack is read from its footer).
    let idx_objects = crate::store::list(&root.join("index")).unwrap();
    let (gone_name, gone_path) = &idx_objects[0];
    s.store.remove(gone_path).unwrap();
    let (r, fourth) = counted(&s, open);
    assert_eq!(fourth.get, 2, "{fourth:?}");
    assert_eq!(r.stats().unwrap().versions, 3);
    assert_eq!(names(&entries).len(), 4, "{:?}", names(&entries));
    let stem = gone_name.strip_suffix(".idx").unwrap();
    assert!(!names(&entries).iter().any(|n| n.starts_with(stem)));

    // A writer writes the lost index again; readers and the cache follow.
    drop(r);
    drop(LocalRepo::open_writer(&root).unwrap());
    let r = open();
    assert_eq!(r.stats().unwrap().versions, 3);
    assert_eq!(names(&entries).len(), 6);
    let (_, again) = counted(&s, open);
    assert_eq!(again.get, 2, "{again:?}");
    crate::idx_cache::set_test_base(None);
}

/// Files `s3s-fs` keeps for multipart uploads under way (parts and upload
/// records, in its data folder's top).
fn uploads_under_way(s: &Server) -> Vec<String> {
    fs::read_dir(s.data.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".upload"))
        .collect()
}

#[test]
fn a_multipart_upload_whose_completion_answer_is_lost_is_not_sent_again() {
    let Some(s) = server() else { return };
    s.store
        .part_size
        .store(5 << 20, std::sync::atomic::Ordering::Relaxed);
    let root = s.path("repo");
    let repo = LocalRepo::init(&root, DEFAULT_CHUNKER).unwrap();
    let chunks: Vec<EncodedChunk> = (0..7u64)
        .map(|i| EncodedChunk::encode(&crate::tests::random(1 << 20, 300 + i)))
        .collect();
    let batch = vec![file_v(1, 1, b"/big", &chunks.iter().collect::<Vec<_>>())];
    repo.put_chunks(chunks.clone()).unwrap();
    // The store completes the upload; its answer never arrives.
    rewind_core::failpoint::arm("s3.complete", true);
    let (r, sent) = counted(&s, || repo.commit_versions(batch.clone()));
    rewind_core::failpoint::arm("s3.complete", false);
    r.unwrap();
    assert_eq!(
        (sent.multipart, sent.part, sent.abort),
        (1, 2, 0),
        "{sent:?}"
    );
    assert_eq!(crate::tests::packs_of(&root).len(), 1);
    drop(repo);
    let r = LocalRepo::open(&root).unwrap();
    assert!(r.verify(false).unwrap().is_ok());
    assert_eq!(r.stats().unwrap().versions, 1);
}

#[test]
fn a_pack_larger_than_a_part_goes_in_parts_and_a_failed_upload_leaves_no_parts() {
    let Some(s) = server() else { return };
    s.store
        .part_size
        .store(5 << 20, std::sync::atomic::Ordering::Relaxed);
    let root = s.path("repo");
    let repo = LocalRepo::init(&root, DEFAULT_CHUNKER).unwrap();
    // 12 MiB that do not compress: one pack of three parts (5, 5, 2 MiB).
    let chunks: Vec<EncodedChunk> = (0..12u64)
        .map(|i| EncodedChunk::encode(&crate::tests::random(1 << 20, 100 + i)))
        .collect();
    let batch = vec![file_v(1, 1, b"/big", &chunks.iter().collect::<Vec<_>>())];

    // A part fails: the upload is aborted, the store keeps no part and no
    // pack, and the commit is an error the client retries.
    repo.put_chunks(chunks.clone()).unwrap();
    rewind_core::failpoint::arm("s3.part", true);
    let (err, failed) = counted(&s, || repo.commit_versions(batch.clone()).unwrap_err());
    rewind_core::failpoint::arm("s3.part", false);
    eprintln!("failed upload: {failed:?}");
    assert!(err.is_transient(), "{err}");
    assert_eq!(
        (failed.multipart, failed.part, failed.abort),
        (1, 1, 1),
        "{failed:?}"
    );
    assert!(
        uploads_under_way(&s).is_empty(),
        "{:?}",
        uploads_under_way(&s)
    );
    assert!(crate::tests::packs_of(&root).is_empty());

    // Sent again: three parts, one pack, whole.
    repo.put_chunks(chunks.clone()).unwrap();
    let ((), sent) = counted(&s, || repo.commit_versions(batch.clone()).unwrap());
    eprintln!("upload in parts: {sent:?}");
    assert_eq!(
        (sent.multipart, sent.part, sent.abort),
        (1, 3, 0),
        "{sent:?}"
    );
    assert!(uploads_under_way(&s).is_empty());
    drop(repo);
    let r = LocalRepo::open(&root).unwrap();
    assert!(r.verify(false).unwrap().is_ok());
    for c in &chunks {
        assert_eq!(r.read_chunk(&c.id).unwrap(), c.decode().unwrap());
    }
    // A small pack is still one PUT.
    drop(r);
    let w = LocalRepo::open_writer(&root).unwrap();
    let c = crate::tests::chunk(1);
    let ((), small) = counted(&s, || {
        w.commit_durably(std::slice::from_ref(&c), &[file_v(2, 2, b"/small", &[&c])])
            .unwrap()
    });
    assert_eq!(small.multipart, 0, "{small:?}");
}

#[test]
fn many_chunks_are_read_with_one_ranged_get_per_pack() {
    let Some(s) = server() else { return };
    let (root, chunks) = with_packs(&s, 3);
    let r = LocalRepo::open(&root).unwrap();
    let ids: Vec<rewind_core::ChunkId> = chunks.iter().map(|c| c.id).collect();
    let (got, reads) = counted(&s, || r.read_chunks(&ids).unwrap());
    eprintln!("read_chunks of 15 chunks in 3 packs: {reads:?}");
    assert_eq!(got.len(), chunks.len());
    for (g, c) in got.iter().zip(&chunks) {
        assert_eq!(*g, c.decode().unwrap());
    }
    assert_eq!((reads.range, reads.head), (3, 0), "{reads:?}");
    // As sent to a client of a server: the same, as stored.
    let (sent, reads) = counted(&s, || r.read_encoded_many(&ids).unwrap());
    assert_eq!((reads.range, reads.head), (3, 0), "{reads:?}");
    for (c, id) in sent.iter().zip(&ids) {
        assert_eq!(*c, r.read_encoded(id).unwrap());
    }
    // Out of order, repeated, and from one pack: still right.
    let mixed = [ids[7], ids[0], ids[7], ids[14], ids[3]];
    let got = r.read_chunks(&mixed).unwrap();
    for (g, id) in got.iter().zip(&mixed) {
        assert_eq!(*g, r.read_chunk(id).unwrap());
    }
    // A damaged chunk in the store is reported, as a single read does.
    drop(r);
    let pack = crate::tests::packs_of(&root).pop().unwrap();
    let key = pack
        .to_str()
        .unwrap()
        .strip_prefix(&format!("{}/", s.root))
        .unwrap()
        .to_string();
    let mut bytes = fs::read(s.file(&key)).unwrap();
    bytes[100] ^= 0xff;
    fs::write(s.file(&key), &bytes).unwrap();
    let r = LocalRepo::open(&root).unwrap();
    assert!(matches!(
        r.read_chunks(&ids),
        Err(rewind_core::RepoError::Corrupt { .. })
    ));
}

/// A full verify of a store reads each pack whole with one request, not
/// each chunk record with a ranged GET of its own.
#[test]
fn a_full_verify_reads_each_pack_whole() {
    let Some(s) = server() else { return };
    let (root, chunks) = with_packs(&s, 3);
    let r = LocalRepo::open(&root).unwrap();
    let (report, sent) = counted(&s, || r.verify(false).unwrap());
    eprintln!("full verify of 3 packs, {} chunks: {sent:?}", chunks.len());
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.chunks_read as usize, chunks.len());
    // Per pack: the whole pack, and its version records read for the
    // index check.
    assert!(sent.range <= 2 * 3, "{sent:?}");
    assert_eq!(sent.head, 0, "lengths come from the listing: {sent:?}");
}
