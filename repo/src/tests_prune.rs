//! Prune on a real repository: what it frees, that every kept point still
//! restores exactly, the chunks pending versions rely on, and a crash at
//! each of its steps.

use std::collections::BTreeMap;

use rewind_core::forget::{ForgetRequest, PruneRequest};
use rewind_core::retention::Policy;
use rewind_core::{ChunkId, DEFAULT_CHUNKER, Repository, Timestamp};

use crate::LocalRepo;
use crate::tests::{C, chunk, dir_v, file_v, gone, tree};

const S: i64 = 1_000_000_000;

/// `/r` and files `/r/f0`..`/r/f{n}` edited in turn, one change a second
/// for `secs` seconds, committed `batch` seconds to a pack (so packs end
/// up partly forgotten).
fn history(repo: &LocalRepo, n: u64, secs: i64, batch: usize) {
    let mut seq = 1;
    repo.commit_versions(vec![dir_v(seq, 0, b"/r")]).unwrap();
    let mut vs = Vec::new();
    let mut cs = Vec::new();
    for s in 1..secs {
        seq += 1;
        let path = format!("/r/f{}", s as u64 % n).into_bytes();
        if s % 17 == 0 {
            vs.push(gone(seq, s * S, &path));
        } else {
            let c = chunk(s as u64);
            vs.push(file_v(seq, s * S, &path, &[&c]));
            cs.push(c);
        }
        if vs.len() >= batch {
            repo.put_chunks(std::mem::take(&mut cs)).unwrap();
            repo.commit_versions(std::mem::take(&mut vs)).unwrap();
        }
    }
    repo.put_chunks(cs).unwrap();
    repo.commit_versions(vs).unwrap();
}

/// The trees at every second, and every chunk of each readable.
fn trees(repo: &LocalRepo, secs: i64) -> BTreeMap<i64, Vec<(Vec<u8>, u64)>> {
    (0..secs + 5)
        .map(|s| (s, tree(repo, Timestamp(s * S + S / 2))))
        .collect()
}

fn forgotten(secs: i64, batch: usize) -> (tempfile::TempDir, LocalRepo) {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    history(&repo, 5, secs, batch);
    let req = ForgetRequest::new(
        Policy::parse("all 30s, every 20s for 3m, every 1m").unwrap(),
        Timestamp(secs * S),
    );
    let r = repo.forget(C, &req).unwrap();
    assert!(r.versions_forgotten > 0);
    (tmp, repo)
}

fn prune(
    repo: &LocalRepo,
    dry_run: bool,
) -> Result<rewind_core::forget::PruneReport, rewind_core::RepoError> {
    repo.prune(
        &PruneRequest {
            dry_run,
            max_unused: None,
        },
        &mut || Ok(Vec::new()),
    )
}

#[test]
fn prune_frees_space_and_every_kept_point_restores_exactly() {
    let (tmp, repo) = forgotten(400, 20);
    let before = trees(&repo, 400);
    let size = repo.stats().unwrap().pack_bytes;
    let dry = prune(&repo, true).unwrap();
    assert!(dry.packs_deleted + dry.packs_repacked > 0, "{dry:?}");
    assert_eq!(
        repo.stats().unwrap().pack_bytes,
        size,
        "a dry run changes nothing"
    );
    let r = prune(&repo, false).unwrap();
    assert!(r.packs_repacked > 0 && r.bytes_freed > 0, "{r:?}");
    let after = repo.stats().unwrap().pack_bytes;
    assert!(after < size, "{after} < {size}");
    assert_eq!(trees(&repo, 400), before);
    assert!(repo.verify(false).unwrap().is_ok());
    // Again: nothing left to do; a reopened repository sees the same.
    let again = prune(&repo, false).unwrap();
    assert_eq!(again.packs_deleted + again.packs_repacked, 0, "{again:?}");
    drop(repo);
    let repo = LocalRepo::open_writer(tmp.path()).unwrap();
    assert_eq!(trees(&repo, 400), before);
    assert!(repo.verify(false).unwrap().is_ok());
    assert!(repo.retention(C).unwrap().last_prune.is_some());
}

#[test]
fn chunks_pending_versions_rely_on_stay() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    history(&repo, 3, 50, 1);
    let (a, b) = (chunk(9001), chunk(9002));
    repo.put_chunks(vec![a.clone()]).unwrap();
    repo.put_chunks(vec![b.clone()]).unwrap();
    let ids: Vec<ChunkId> = vec![a.id];
    repo.prune(&PruneRequest::default(), &mut || Ok(ids.clone()))
        .unwrap();
    assert!(repo.read_chunk(&a.id).is_ok(), "pending: kept");
    // Its version commits after the prune, and restores; the next prune
    // frees what nothing names.
    repo.commit_versions(vec![file_v(1000, 60 * S, b"/r/new", &[&a])])
        .unwrap();
    prune(&repo, false).unwrap();
    assert!(repo.read_chunk(&a.id).is_ok(), "committed: kept");
    assert!(repo.read_chunk(&b.id).is_err(), "named by nothing: freed");
    assert!(repo.verify(false).unwrap().is_ok());
}

#[test]
fn a_crash_at_each_step_of_prune_leaves_a_clean_repository_the_next_prune_finishes() {
    for step in [
        "pack.fsync",
        "idx.rename",
        "prune.repack",
        "prune.switch",
        "prune.intent",
        "prune.delete_pack",
        "prune.delete_idx",
        "prune.done",
    ] {
        let (tmp, repo) = forgotten(300, 20);
        let before = trees(&repo, 300);
        let size = repo.stats().unwrap().pack_bytes;
        rewind_core::failpoint::arm(step, true);
        let r = prune(&repo, false);
        rewind_core::failpoint::arm(step, false);
        assert!(r.is_err(), "{step}: {r:?}");
        drop(repo);
        let repo = LocalRepo::open_writer(tmp.path()).unwrap();
        let v = repo.verify(false).unwrap();
        assert!(v.is_ok(), "{step}: {v:?}");
        assert_eq!(trees(&repo, 300), before, "{step}");
        prune(&repo, false).unwrap();
        assert_eq!(trees(&repo, 300), before, "{step}");
        assert!(repo.verify(false).unwrap().is_ok(), "{step}");
        let after = repo.stats().unwrap().pack_bytes;
        assert!(after < size, "{step}: {after} < {size}");
        let again = prune(&repo, false).unwrap();
        assert_eq!(
            again.packs_deleted + again.packs_repacked,
            0,
            "{step}: {again:?}"
        );
    }
}

#[test]
fn reclaimable_bytes_are_found_again_after_each_forget_and_prune() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    history(&repo, 5, 300, 20);
    let reclaimable = |repo: &LocalRepo| repo.retention(C).unwrap().reclaimable.unwrap();
    assert_eq!(reclaimable(&repo), 0, "nothing forgotten yet");
    let generation = repo
        .retention_gen
        .load(std::sync::atomic::Ordering::Acquire);
    assert_eq!(reclaimable(&repo), 0);
    assert_eq!(
        repo.reclaimable_memo.lock().unwrap().map(|(g, _)| g),
        Some(generation),
        "the second look is the remembered answer"
    );
    let req = ForgetRequest::new(
        Policy::parse("all 30s, every 1m").unwrap(),
        Timestamp(300 * S),
    );
    assert!(repo.forget(C, &req).unwrap().versions_forgotten > 0);
    let found = reclaimable(&repo);
    assert!(found > 0, "a forget makes the answer be found again");
    let r = prune(&repo, false).unwrap();
    assert!(r.bytes_freed > 0, "{r:?}");
    assert!(
        reclaimable(&repo) < found,
        "a prune makes the answer be found again"
    );
}

type Trees = BTreeMap<i64, Vec<(Vec<u8>, u64)>>;

/// What a reader answers, from its own in-memory index.
fn answers(r: &LocalRepo, secs: i64) -> (Trees, u64, u64) {
    let s = r.stats().unwrap();
    (trees(r, secs), s.versions, s.chunks)
}

#[test]
fn a_reader_follows_a_forget_a_recorded_base_and_a_prune_as_a_fresh_open_sees_them() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    history(&repo, 5, 300, 20);
    let reader = LocalRepo::open(tmp.path()).unwrap();
    let check = |step: &str| {
        reader.refresh().unwrap();
        let fresh = LocalRepo::open(tmp.path()).unwrap();
        assert_eq!(
            answers(&reader, 300),
            answers(&fresh, 300),
            "after {step}, the refreshed reader differs from a fresh open"
        );
    };
    check("the history");
    let req = ForgetRequest::new(
        Policy::parse("all 30s, every 20s for 3m, every 1m").unwrap(),
        Timestamp(300 * S),
    );
    assert!(repo.forget(C, &req).unwrap().versions_forgotten > 0);
    check("a forget");
    let base = chunk(10_000);
    repo.store_base(base).unwrap();
    check("a recorded delta base");
    repo.pin(C, Timestamp(100 * S), None).unwrap();
    check("a pin");
    let r = prune(&repo, false).unwrap();
    assert!(r.packs_deleted + r.packs_repacked > 0, "{r:?}");
    check("a prune");
    // Still following new commits.
    let c = chunk(20_000);
    repo.put_chunks(vec![c.clone()]).unwrap();
    repo.commit_versions(vec![file_v(10_000, 301 * S, b"/r/new", &[&c])])
        .unwrap();
    check("a commit after the prune");
}
