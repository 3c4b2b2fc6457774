//! The writer lease (`lease.rs`) against a real S3 server, `s3s-fs`
//! (started as in `tests_s3.rs`; without it these tests say so loudly and
//! pass). `Ignoring` plays a store that ignores conditional writes (as
//! Garage does), so the settle-and-read-back path runs against the same
//! server.

use std::path::Path;
use std::time::{Duration, Instant};

use rewind_core::{ChunkSink, DEFAULT_CHUNKER, EncodedChunk, RepoError, Repository};

use crate::LocalRepo;
use crate::backend::{Leasing, PutIf, Written};
use crate::lease::{Honours, Lease, LeaseSettings, probe};
use crate::s3::S3Store;
use crate::tests::file_v;
use crate::tests_s3::server;

/// A store that ignores `If-None-Match` and `If-Match`: every write is a
/// plain PUT.
struct Ignoring(&'static S3Store);

impl Leasing for Ignoring {
    fn get_tagged(&self, path: &Path) -> std::io::Result<Option<(Vec<u8>, Option<String>)>> {
        self.0.get_tagged(path)
    }
    fn put_if(&self, path: &Path, bytes: Vec<u8>, _: PutIf) -> std::io::Result<Written> {
        self.0.put_if(path, bytes, PutIf::Always)
    }
    fn delete(&self, path: &Path) -> std::io::Result<()> {
        self.0.delete(path)
    }
}

fn ignoring(store: &'static S3Store) -> &'static dyn Leasing {
    Box::leak(Box::new(Ignoring(store)))
}

/// A store whose answer to the first write is lost: the client sends it
/// again (as object_store does when the connection drops before the
/// answer) and hears the answer to the second try.
struct FirstAnswerLost(&'static S3Store, std::sync::atomic::AtomicBool);

impl Leasing for FirstAnswerLost {
    fn get_tagged(&self, path: &Path) -> std::io::Result<Option<(Vec<u8>, Option<String>)>> {
        self.0.get_tagged(path)
    }
    fn put_if(&self, path: &Path, bytes: Vec<u8>, cond: PutIf) -> std::io::Result<Written> {
        if !self.1.swap(true, std::sync::atomic::Ordering::Relaxed) {
            self.0.put_if(path, bytes.clone(), cond.clone())?;
        }
        self.0.put_if(path, bytes, cond)
    }
    fn delete(&self, path: &Path) -> std::io::Result<()> {
        self.0.delete(path)
    }
}

/// A short lease: long enough that a loaded machine's requests (a probe
/// and two or three more) finish well inside it.
fn quick(expiry_ms: u64) -> LeaseSettings {
    LeaseSettings {
        expiry: Duration::from_millis(expiry_ms),
        settle: Duration::from_millis(200),
    }
}

/// The holder text of a refusal (panics on anything else).
fn refusal(r: Result<Lease, RepoError>) -> String {
    match r {
        Err(RepoError::Locked { holder, .. }) => holder,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Wait until `f` holds (at most 20 s).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(20), "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_probe_finds_which_conditions_a_store_honours() {
    let Some(s) = server() else { return };
    let dir = s.path("p");
    let honest = probe(s.store, &dir, "a").unwrap();
    assert_eq!(
        honest,
        Honours {
            create: true,
            update: true
        }
    );
    let ign = probe(ignoring(s.store), &dir, "b").unwrap();
    assert_eq!(
        ign,
        Honours {
            create: false,
            update: false
        }
    );
    // The probe objects are gone.
    assert!(!s.file("p/lock.probe-a").exists());
    assert!(!s.file("p/lock.probe-b").exists());
}

#[test]
fn a_probe_whose_first_answer_is_lost_still_finds_what_the_store_honours() {
    let Some(s) = server() else { return };
    let dir = s.path("l");
    let lost: &'static dyn Leasing = Box::leak(Box::new(FirstAnswerLost(
        s.store,
        std::sync::atomic::AtomicBool::new(false),
    )));
    assert_eq!(
        probe(lost, &dir, "c").unwrap(),
        Honours {
            create: true,
            update: true
        }
    );
    assert!(!s.file("l/lock.probe-c").exists());
}

#[test]
fn a_second_writer_is_refused_naming_the_holder_until_the_first_closes() {
    let Some(s) = server() else { return };
    let root = s.path("home/r");
    let first = LocalRepo::init(&root, DEFAULT_CHUNKER).unwrap();
    assert!(s.file("home/r/lock").is_file());
    match LocalRepo::open_writer(&root) {
        Err(e @ RepoError::Locked { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("pid {}", std::process::id())),
                "{msg}"
            );
            assert!(msg.contains("expires at"), "{msg}");
            assert!(
                msg.contains("s3://") && msg.contains("/home/r/lock"),
                "{msg}"
            );
            assert_eq!(msg.lines().count(), 1, "{msg}");
        }
        other => panic!("{other:?}"),
    }
    // A second init is refused by the lease too, before the config.
    assert!(matches!(
        LocalRepo::init(&root, DEFAULT_CHUNKER),
        Err(RepoError::Locked { .. })
    ));
    // Readers take no lease.
    LocalRepo::open(&root).unwrap();
    drop(first);
    let left: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.file("home/r/lock")).unwrap()).unwrap();
    assert_eq!(left["released"], true, "released on drop: {left}");
    let second = LocalRepo::open_writer(&root).unwrap();
    assert!(second.lease().is_some());
}

#[test]
fn a_lease_left_by_a_killed_writer_is_taken_over_once_it_expires() {
    let Some(s) = server() else { return };
    let dir = s.path("k");
    let killed = Lease::take(s.store, &dir, quick(4000)).unwrap();
    killed.abandon();
    let holder = refusal(Lease::take(s.store, &dir, quick(4000)));
    assert!(holder.contains("expires at"), "{holder}");
    std::thread::sleep(Duration::from_millis(4300));
    let next = Lease::take(s.store, &dir, quick(4000)).unwrap();
    next.check().unwrap();
    assert!(next.honours().update);
}

#[test]
fn on_a_store_that_ignores_conditions_the_lease_is_written_settled_and_read_back() {
    let Some(s) = server() else { return };
    let dir = s.path("g");
    let objects = ignoring(s.store);
    let first = Lease::take(objects, &dir, quick(4000)).unwrap();
    assert!(!first.honours().create && !first.honours().update);
    refusal(Lease::take(objects, &dir, quick(4000)));
    first.abandon();
    std::thread::sleep(Duration::from_millis(4300));
    let second = Lease::take(objects, &dir, quick(4000)).unwrap();
    second.check().unwrap();
    drop(second);
    assert!(!s.file("g/lock").exists());

    // Two writers at once: both write, both read back after settling, and
    // only the one whose write landed last goes on.
    let takers: Vec<_> = (0..2)
        .map(|_| {
            let dir = dir.clone();
            // A settle period far above the gap between a writer's read
            // and its write, whatever the machine's load.
            let settings = LeaseSettings {
                settle: Duration::from_millis(1500),
                ..quick(6000)
            };
            std::thread::spawn(move || Lease::take(objects, &dir, settings))
        })
        .collect();
    let results: Vec<Result<Lease, RepoError>> =
        takers.into_iter().map(|t| t.join().unwrap()).collect();
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:?}");
}

#[test]
fn renewals_keep_a_lease_past_its_expiry() {
    let Some(s) = server() else { return };
    let dir = s.path("n");
    let lease = Lease::take(s.store, &dir, quick(3000)).unwrap();
    std::thread::sleep(Duration::from_millis(7000));
    lease.check().unwrap();
    refusal(Lease::take(s.store, &dir, quick(3000)));
}

#[test]
fn a_writer_that_cannot_renew_stops_and_goes_on_after_a_renewal() {
    let Some(s) = server() else { return };
    let dir = s.path("c");
    let lease = Lease::take(s.store, &dir, quick(2000)).unwrap();
    lease.pause(true);
    // Three quarters of the expiry after the last renewal, writes stop,
    // before anyone may take the lease over.
    eventually("the lease lapses", || lease.check().is_err());
    match lease.check() {
        Err(RepoError::Io { path, source }) => {
            assert!(path.ends_with("lock"), "{path:?}");
            assert_eq!(source.kind(), std::io::ErrorKind::TimedOut);
            assert!(source.to_string().contains("lapsed"), "{source}");
        }
        other => panic!("{other:?}"),
    }
    // Nobody took it over: the next renewal (conditional on its ETag)
    // succeeds and writes go on.
    lease.pause(false);
    eventually("a renewal", || lease.check().is_ok());
}

/// A new repository under `name` on the server, its writer, and one
/// version (`/a` at 1000, four chunks) committed.
fn writer_with_a_version(
    s: &crate::tests_s3::Server,
    name: &str,
) -> (std::path::PathBuf, LocalRepo) {
    let root = s.path(name);
    let repo = LocalRepo::init(&root, DEFAULT_CHUNKER).unwrap();
    let chunks: Vec<EncodedChunk> = (0..4u64).map(crate::tests::chunk).collect();
    let v = file_v(1, 1_000, b"/a", &chunks.iter().collect::<Vec<_>>());
    repo.commit_durably(&chunks, &[v]).unwrap();
    (root, repo)
}

#[test]
fn a_writer_whose_lease_was_taken_over_fails_every_write_naming_the_new_holder() {
    let Some(s) = server() else { return };
    let (root, repo) = writer_with_a_version(&s, "t");
    // Someone else's lease replaces ours (a writer that ignored ours).
    let theirs = br#"{"holder":"ffffffffffffffffffffffffffffffff","host":"elsewhere","pid":4242,"taken":0,"expires":9000000000000000000}"#;
    let lock = root.join("lock");
    s.store
        .put_if(&lock, theirs.to_vec(), PutIf::Always)
        .unwrap();
    eventually("the renewal finds it lost", || {
        repo.lease().unwrap().check().is_err()
    });
    let more: Vec<EncodedChunk> = (10..12u64).map(crate::tests::chunk).collect();
    let v2 = file_v(2, 2_000, b"/b", &more.iter().collect::<Vec<_>>());
    match repo.commit_durably(&more, &[v2]) {
        Err(e @ RepoError::Locked { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("elsewhere") && msg.contains("4242"), "{msg}");
            assert!(msg.contains("taken over"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        repo.missing_chunks(&[more[0].id]),
        Err(RepoError::Locked { .. })
    ));
    // Closing leaves the other writer's lease alone.
    drop(repo);
    assert_eq!(std::fs::read(s.file("t/lock")).unwrap(), theirs);
}

/// A store in front of which writes wait, once `held` is set, until
/// `open` is: requests sent before something happens that reach the store
/// after it (a proxy or a slow store holding them).
struct Gate {
    inner: &'static dyn Leasing,
    held: std::sync::atomic::AtomicBool,
    open: std::sync::atomic::AtomicBool,
}

impl Gate {
    fn wait(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        while self.held.load(SeqCst) && !self.open.load(SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Leasing for Gate {
    fn get_tagged(&self, path: &Path) -> std::io::Result<Option<(Vec<u8>, Option<String>)>> {
        self.inner.get_tagged(path)
    }
    fn put_if(&self, path: &Path, bytes: Vec<u8>, cond: PutIf) -> std::io::Result<Written> {
        self.wait();
        self.inner.put_if(path, bytes, cond)
    }
    fn delete(&self, path: &Path) -> std::io::Result<()> {
        self.wait();
        self.inner.delete(path)
    }
}

#[test]
fn a_release_that_reaches_the_store_after_a_takeover_leaves_the_successors_lease_alone() {
    use std::sync::atomic::Ordering::SeqCst;
    let Some(s) = server() else { return };
    let dir = s.path("late");
    let gate: &'static Gate = Box::leak(Box::new(Gate {
        inner: s.store,
        held: false.into(),
        open: false.into(),
    }));
    let gone = Lease::take(gate, &dir, quick(2000)).unwrap();
    // Its release is sent while the lease is still its own, and held.
    gone.pause(true);
    gate.held.store(true, SeqCst);
    let releasing = std::thread::spawn(move || drop(gone));
    std::thread::sleep(Duration::from_millis(2300));
    let next = Lease::take(s.store, &dir, quick(4000)).unwrap();
    // It lands after the takeover.
    gate.open.store(true, SeqCst);
    releasing.join().unwrap();
    let there: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.file("late/lock")).unwrap()).unwrap();
    assert!(there.get("released").is_none(), "{there}");
    // Its renewals (conditional on its own ETag) still go through.
    std::thread::sleep(Duration::from_millis(3000));
    next.check().unwrap();
    refusal(Lease::take(s.store, &dir, quick(4000)));
    drop(next);
    // Released by its holder: taken at once.
    Lease::take(s.store, &dir, quick(4000)).unwrap();
}

#[test]
fn on_a_store_that_ignores_conditions_a_lapsed_lease_is_not_deleted() {
    let Some(s) = server() else { return };
    let dir = s.path("late-g");
    let objects = ignoring(s.store);
    let gone = Lease::take(objects, &dir, quick(2000)).unwrap();
    gone.pause(true);
    std::thread::sleep(Duration::from_millis(2300));
    let next = Lease::take(objects, &dir, quick(4000)).unwrap();
    drop(gone);
    assert!(
        s.file("late-g/lock").exists(),
        "the successor's lease stays"
    );
    next.check().unwrap();
}

#[test]
fn a_retention_write_that_arrives_late_replaces_nothing_newer() {
    use crate::keep::KeepFile;
    use rewind_core::{ChunkId, Timestamp};
    let Some(s) = server() else { return };
    let (root, repo) = writer_with_a_version(&s, "keep");
    let c = crate::tests::C;

    // An earlier writer's write of the retention file, made from what it
    // read then, that reaches the store only after this writer wrote.
    let mut late = KeepFile::read(&repo.crypt, &root).unwrap();
    late.bases.insert(ChunkId::of(b"late"));
    let pin = repo
        .pin_point(c, Timestamp(1_000), Some("mine".into()))
        .unwrap();
    let e = late.write(&repo.crypt, &root, true).unwrap_err();
    assert!(e.to_string().contains("changed since"), "{e}");
    let there = KeepFile::read(&repo.crypt, &root).unwrap();
    assert_eq!(there.clients[c].pins.len(), 1);
    assert!(!there.bases.contains(&ChunkId::of(b"late")));

    // One that reaches it before this writer's next change (made from the
    // object as it is then): that change is refused rather than written
    // over it, and the next try is made on top of it.
    let mut early = KeepFile::read(&repo.crypt, &root).unwrap();
    early.bases.insert(ChunkId::of(b"early"));
    early.write(&repo.crypt, &root, true).unwrap();
    let e = repo.unpin_point(c, pin.id).unwrap_err();
    assert!(
        e.is_transient() && e.to_string().contains("changed since"),
        "{e}"
    );
    repo.unpin_point(c, pin.id).unwrap();
    let there = KeepFile::read(&repo.crypt, &root).unwrap();
    assert!(there.bases.contains(&ChunkId::of(b"early")));
    assert!(there.clients[c].pins.is_empty());
}
