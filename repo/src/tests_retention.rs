//! Retention on a real repository: forget, pins, what a reopen and a
//! reader see, crashes at the retention file's steps.

use std::collections::BTreeMap;

use rewind_core::forget::ForgetRequest;
use rewind_core::retention::Policy;
use rewind_core::{DEFAULT_CHUNKER, EncodedChunk, Repository, Timestamp, Version};

use crate::LocalRepo;
use crate::tests::{C, chunk, dir_v, file_v, gone, tree};

const S: i64 = 1_000_000_000;

/// `/r` and files `/r/f0`..`/r/f{n}` edited in turn, one change a second
/// for `secs` seconds (a deletion and re-creation now and then), each
/// commit its own pack.
fn history(repo: &LocalRepo, n: u64, secs: i64) -> Vec<EncodedChunk> {
    let mut seq = 1;
    repo.commit_versions(vec![dir_v(seq, 0, b"/r")]).unwrap();
    let mut chunks = Vec::new();
    for s in 1..secs {
        seq += 1;
        let path = format!("/r/f{}", s as u64 % n).into_bytes();
        let v = if s % 17 == 0 {
            gone(seq, s * S, &path)
        } else {
            let c = chunk(s as u64);
            repo.put_chunks(vec![c.clone()]).unwrap();
            chunks.push(c.clone());
            file_v(seq, s * S, &path, &[&c])
        };
        repo.commit_versions(vec![v]).unwrap();
    }
    chunks
}

fn request(policy: &str, now: i64) -> ForgetRequest {
    ForgetRequest::new(Policy::parse(policy).unwrap(), Timestamp(now * S))
}

#[test]
fn forget_keeps_every_kept_point_exactly_and_snaps_between() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    history(&repo, 5, 600);
    // Before: the tree at every second, for comparison.
    let before: BTreeMap<i64, Vec<(Vec<u8>, u64)>> = (0..620)
        .map(|s| (s, tree(&repo, Timestamp(s * S + S / 2))))
        .collect();
    let total = repo.stats().unwrap().versions;

    let dry = repo
        .forget(
            C,
            &ForgetRequest {
                dry_run: true,
                ..request("all 60s, every 10s for 5m, every 1m", 600)
            },
        )
        .unwrap();
    assert!(
        dry.versions_forgotten > 0 && dry.bytes_reclaimable > 0,
        "{dry:?}"
    );
    assert_eq!(
        repo.stats().unwrap().versions,
        total,
        "a dry run changes nothing"
    );

    let rep = repo
        .forget(C, &request("all 60s, every 10s for 5m, every 1m", 600))
        .unwrap();
    assert_eq!(rep.versions_forgotten, dry.versions_forgotten);
    assert_eq!(
        repo.stats().unwrap().versions,
        total - rep.versions_forgotten
    );
    let tb = rep.thinned_before.unwrap();
    assert_eq!(tb, Timestamp(540 * S));

    let check = |repo: &LocalRepo| {
        let st = repo.retention(C).unwrap();
        let pts: Vec<Timestamp> = {
            let kf = repo.keepfile.lock().unwrap();
            kf.clients[C].files.points.iter().copied().collect()
        };
        assert_eq!(st.points as usize, pts.len());
        assert!(!pts.is_empty());
        // Every kept point restores as the tree was then.
        for p in &pts {
            let secs = p.0.div_euclid(S);
            assert_eq!(&tree(repo, *p), &before[&secs], "at kept point {p}");
        }
        // Whole from the line on.
        for s in 540..600 {
            assert_eq!(tree(repo, Timestamp(s * S + S / 2)), before[&s], "at {s}s");
        }
        // Between points: the state of the point it snaps to, said so.
        for s in (0..540).step_by(7) {
            let at = Timestamp(s * S + S / 2);
            let qp = repo.query_point(C, at).unwrap();
            match qp.used {
                Some(u) => {
                    assert!(u <= at && qp.snapped());
                    assert_eq!(
                        tree(repo, at),
                        before[&u.0.div_euclid(S)],
                        "{s}s snaps to {u}"
                    );
                }
                None => assert!(tree(repo, at).is_empty()),
            }
        }
        // The newest version of every path is there, tombstones too.
        for f in 0..5 {
            let p = format!("/r/f{f}").into_bytes();
            let vs = repo.versions_of(C, &p).unwrap();
            let last_before = before[&619].iter().find(|(q, _)| *q == p).map(|(_, s)| *s);
            if let Some(s) = last_before {
                assert!(vs.iter().any(|v| v.seq == s));
            }
            assert!(vs.last().unwrap().seq >= last_before.unwrap_or(0));
        }
    };
    check(&repo);
    drop(repo);
    // After a reopen, and for a reader, the same.
    let r = LocalRepo::open(tmp.path()).unwrap();
    check(&r);
    assert_eq!(r.stats().unwrap().versions, total - rep.versions_forgotten);
    let v = r.verify(false).unwrap();
    assert!(v.is_ok(), "{:?}", v.issues);
    assert_eq!(v.versions_forgotten, rep.versions_forgotten);
    let w = LocalRepo::open_writer(tmp.path()).unwrap();
    check(&w);
}

#[test]
fn a_finer_policy_later_brings_nothing_back() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    history(&repo, 3, 300);
    repo.forget(C, &request("all 30s, every 1m", 300)).unwrap();
    let after = repo.stats().unwrap().versions;
    let r = repo.forget(C, &request("all 10m, every 1s", 301)).unwrap();
    assert_eq!(r.versions_forgotten, 0);
    assert_eq!(repo.stats().unwrap().versions, after);
    let kf = repo.keepfile.lock().unwrap().clone();
    assert_eq!(
        kf.clients[C].files.thinned_before,
        Some(Timestamp(270 * S)),
        "the line never moves back"
    );
}

#[test]
fn new_versions_end_their_predecessors_spans() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    history(&repo, 2, 100);
    repo.forget(C, &request("every 1h", 100)).unwrap();
    let n = repo.stats().unwrap().versions;
    // A late upload (a journal offline for a while) of a version observed
    // at 99 s, below the line: its predecessor no longer is the newest and
    // was live at no kept point, so it leaves.
    let c = chunk(9999);
    repo.put_chunks(vec![c.clone()]).unwrap();
    let last_f0 = repo.versions_of(C, b"/r/f0").unwrap().pop().unwrap();
    repo.commit_versions(vec![file_v(1000, 99 * S, b"/r/f0", &[&c])])
        .unwrap();
    let now = repo.versions_of(C, b"/r/f0").unwrap();
    assert_eq!(now.last().unwrap().seq, 1000);
    assert!(now.iter().all(|v| v.seq != last_f0.seq), "{now:?}");
    assert_eq!(repo.stats().unwrap().versions, n);
}

#[test]
fn pins_survive_every_rule_and_snap_when_thinned() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    history(&repo, 4, 400);
    let at = Timestamp(123 * S + S / 2);
    let want = tree(&repo, at);
    let p = repo.pin(C, at, Some("before the upgrade".into())).unwrap();
    assert_eq!(p.at, at);
    repo.forget(C, &request("all 10s", 400)).unwrap();
    assert_eq!(tree(&repo, at), want, "the pinned point restores");
    // A pin before the line snaps to the point it would be answered with.
    let p2 = repo.pin(C, Timestamp(200 * S), None).unwrap();
    assert_eq!(p2.at, at, "snapped to the only kept point before it");
    // Nothing kept that old: refused.
    assert!(matches!(
        repo.pin(C, Timestamp(5 * S), None),
        Err(rewind_core::RepoError::Refused { .. })
    ));
    assert_eq!(repo.pins(C).unwrap().len(), 2);
    drop(repo);
    let repo = LocalRepo::open_writer(tmp.path()).unwrap();
    assert_eq!(tree(&repo, at), want);
    repo.unpin(C, p.id).unwrap();
    repo.unpin(C, p2.id).unwrap();
    assert!(repo.unpin(C, 77).is_err());
    repo.forget(C, &request("all 10s", 401)).unwrap();
    assert!(
        tree(&repo, at).is_empty(),
        "unpinned, the next forget lets it go"
    );
}

#[test]
fn dump_series_keep_their_runs_by_their_own_policy() {
    use rewind_core::{ChunkRef, Entry, StreamStatus};
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    let c = chunk(1);
    repo.put_chunks(vec![c.clone()]).unwrap();
    let run = |seq: u64, day: i64, ok: bool| Version {
        client: C.into(),
        seq,
        observed_at: Timestamp(day * 86400 * S),
        path: b"dumps/db".to_vec(),
        entry: Entry::Stream {
            chunks: vec![ChunkRef {
                id: c.id,
                len: c.raw_len,
            }],
            status: StreamStatus {
                format: "command".into(),
                database: None,
                started: Timestamp(0),
                finished: Timestamp(0),
                exit_code: Some(if ok { 0 } else { 1 }),
                signal: None,
                timed_out: false,
                error: None,
                stderr: vec![],
            },
        },
    };
    let runs: Vec<Version> = (1..=40).map(|d| run(d as u64, d, d % 4 != 0)).collect();
    repo.commit_versions(runs).unwrap();
    let mut req = request("all 24h", 41 * 86400);
    req.series = vec![(
        b"dumps/db".to_vec(),
        Policy::parse_series("last 5").unwrap(),
    )];
    repo.forget(C, &req).unwrap();
    let left: Vec<i64> = repo
        .versions_of(C, b"dumps/db")
        .unwrap()
        .iter()
        .map(|v| v.observed_at.0 / 86400 / S)
        .collect();
    // The newest five successes (day 40 failed: it stays as the newest).
    assert_eq!(left, vec![34, 35, 37, 38, 39, 40]);
}

#[test]
fn a_crash_at_each_step_of_the_retention_file_changes_nothing() {
    for step in [
        "retention.write",
        "retention.fsync",
        "retention.rename",
        "retention.dir_fsync",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
        history(&repo, 3, 200);
        let n = repo.stats().unwrap().versions;
        rewind_core::failpoint::arm(step, true);
        let r = repo.forget(C, &request("all 10s", 200));
        rewind_core::failpoint::arm(step, false);
        assert!(r.is_err(), "{step}");
        assert_eq!(repo.stats().unwrap().versions, n, "{step}: nothing applied");
        drop(repo);
        let again = LocalRepo::open_writer(tmp.path()).unwrap();
        let after = again.stats().unwrap().versions;
        // Before the rename the old file stands; after it (the directory
        // fsync failed) the new one may: either all or nothing.
        if step == "retention.dir_fsync" {
            assert!(after <= n);
        } else {
            assert_eq!(after, n, "{step}");
        }
        assert!(again.verify(true).unwrap().is_ok());
    }
}

#[test]
fn a_format_3_repository_keeps_its_dictionaries_as_bases() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    let dict = chunk(42);
    repo.store_base(dict.clone()).unwrap();
    history(&repo, 2, 20);
    drop(repo);
    // As an older build left it: no retention file, format 3.
    std::fs::remove_file(tmp.path().join("retention")).unwrap();
    let cfg = tmp.path().join("config");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"format\": 4", "\"format\": 3");
    std::fs::write(&cfg, text).unwrap();
    let w = LocalRepo::open_writer(tmp.path()).unwrap();
    assert!(w.keepfile.lock().unwrap().bases.contains(&dict.id));
}
