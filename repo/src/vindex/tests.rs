//! The version index on disk answers as the whole index does: a reader
//! over runs and overlay against a reader that loaded every index file,
//! on the same repository, through forgets, prunes, merges and damage.

use std::path::Path;

use rewind_core::forget::ForgetRequest;
use rewind_core::retention::Policy;
use rewind_core::{DEFAULT_CHUNKER, Repository, Timestamp, Version};

use crate::LocalRepo;
use crate::tests::{C, chunk, dir_v, file_v, gone};

const S: i64 = 1_000_000_000;

/// `/r`, `/r/d` and files below them edited in turn, one commit (and so
/// one pack) per change; `/r/d` is deleted and comes back as a file.
fn history(repo: &LocalRepo, from_seq: u64, secs: std::ops::Range<i64>) -> u64 {
    let mut seq = from_seq;
    if seq == 1 {
        repo.commit_versions(vec![dir_v(1, 0, b"/r"), dir_v(2, 0, b"/r/d")])
            .unwrap();
        seq = 3;
    }
    for s in secs {
        let path = match s % 5 {
            0 => format!("/r/d/f{}", s % 3).into_bytes(),
            _ => format!("/r/f{}", s % 7).into_bytes(),
        };
        let v = match s {
            _ if s % 41 == 0 => gone(seq, s * S, b"/r/d"),
            _ if s % 41 == 1 => dir_v(seq, s * S, b"/r/d"),
            _ if s % 13 == 0 => gone(seq, s * S, &path),
            _ => {
                let c = chunk(s as u64 % 50);
                repo.put_chunks(vec![c.clone()]).unwrap();
                file_v(seq, s * S, &path, &[&c])
            }
        };
        repo.commit_versions(vec![v]).unwrap();
        seq += 1;
    }
    seq
}

fn runs_in(dir: &Path) -> usize {
    std::fs::read_dir(super::runs_dir(dir))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".vix"))
                .count()
        })
        .unwrap_or(0)
}

fn deferred(r: &LocalRepo) -> bool {
    r.deferred.load(std::sync::atomic::Ordering::Acquire)
}

fn all_paths(r: &LocalRepo) -> Vec<Vec<u8>> {
    let mut p: Vec<Vec<u8>> = r
        .list_page(C, None, usize::MAX)
        .into_iter()
        .map(|v| v.path)
        .collect();
    p.dedup();
    p.push(b"/nowhere".to_vec());
    p
}

/// Every query of `view` (over runs) answers as `whole` (every index file
/// loaded) does.
fn same_answers(view: &LocalRepo, whole: &LocalRepo, until: i64) {
    assert!(deferred(view), "the reader uses the runs");
    whole.undefer();
    assert!(!deferred(whole));
    for p in all_paths(whole) {
        let a: Vec<Version> = view.versions_of(C, &p).unwrap();
        let b: Vec<Version> = whole.versions_of(C, &p).unwrap();
        assert_eq!(a, b, "versions of {}", String::from_utf8_lossy(&p));
        assert_eq!(view.covers(C, &p).unwrap(), whole.covers(C, &p).unwrap());
    }
    for t in (0..until * 2).step_by(3) {
        // Whole seconds are the moments versions were observed at.
        let at = Timestamp(t * S / 2);
        for base in [&b"/"[..], b"/r", b"/r/d", b"/r/f1"] {
            assert_eq!(
                view.tree_at(C, base, at).unwrap(),
                whole.tree_at(C, base, at).unwrap(),
                "tree of {} at {t} s",
                String::from_utf8_lossy(base)
            );
        }
        assert_eq!(
            view.query_point(C, at).unwrap(),
            whole.query_point(C, at).unwrap()
        );
    }
    assert!(deferred(view), "no query needed the whole index");
}

#[test]
fn a_reader_over_runs_and_newer_packs_answers_as_the_whole_index() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    let seq = history(&repo, 1, 1..120);
    repo.index_versions().unwrap();
    assert_eq!(runs_in(tmp.path()), 1);
    // Newer packs no run names: the overlay.
    history(&repo, seq, 120..160);
    let view = LocalRepo::open(tmp.path()).unwrap();
    let whole = LocalRepo::open(tmp.path()).unwrap();
    same_answers(&view, &whole, 170);
    // A restore needs the chunk index: it is loaded then.
    let v = view.versions_of(C, b"/r/f1").unwrap();
    let id = v
        .iter()
        .rev()
        .find_map(|v| v.chunk_refs().next().map(|c| c.id))
        .unwrap();
    assert!(view.read_chunk(&id).is_ok());
    assert!(!deferred(&view));
}

#[test]
fn runs_of_one_size_are_merged_and_answers_stay_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    let mut seq = 1;
    for k in 0..9 {
        seq = history(&repo, seq, k * 20 + 1..k * 20 + 21);
        repo.index_versions().unwrap();
        assert!(
            runs_in(tmp.path()) < super::maintain::FAN_IN,
            "after {k}: merged at four"
        );
    }
    let view = LocalRepo::open(tmp.path()).unwrap();
    same_answers(&view, &LocalRepo::open(tmp.path()).unwrap(), 190);
}

#[test]
fn retention_is_applied_to_what_the_runs_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    let seq = history(&repo, 1, 1..300);
    repo.index_versions().unwrap();
    let req = ForgetRequest::new(
        Policy::parse("all 30s, every 10s for 2m, every 1m").unwrap(),
        Timestamp(300 * S),
    );
    let rep = repo.forget(C, &req).unwrap();
    assert!(rep.versions_forgotten > 0);
    history(&repo, seq, 300..330);
    let view = LocalRepo::open(tmp.path()).unwrap();
    same_answers(&view, &LocalRepo::open(tmp.path()).unwrap(), 340);
    // After a prune the run names deleted packs: it is not used until the
    // writer writes the index again, and nothing is answered differently.
    let req = rewind_core::forget::PruneRequest {
        dry_run: false,
        max_unused: None,
    };
    let rep = repo.prune(&req, &mut || Ok(Vec::new())).unwrap();
    assert!(rep.packs_deleted > 0, "{rep:?}");
    let reader = LocalRepo::open(tmp.path()).unwrap();
    assert!(!deferred(&reader), "a run naming a pruned pack is not used");
    repo.index_versions().unwrap();
    let view = LocalRepo::open(tmp.path()).unwrap();
    same_answers(&view, &LocalRepo::open(tmp.path()).unwrap(), 340);
}

#[test]
fn a_damaged_run_is_passed_over() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    history(&repo, 1, 1..80);
    repo.index_versions().unwrap();
    let run = std::fs::read_dir(super::runs_dir(tmp.path()))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".vix"))
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&run).unwrap();
    // The first record, path and entry are `/r`'s, which every tree reads.
    let want = LocalRepo::open(tmp.path())
        .unwrap()
        .versions_of(C, b"/r/f1")
        .unwrap();
    let footer = super::Run::open(&run).unwrap().footer;
    let whole = LocalRepo::open(tmp.path()).unwrap();
    whole.undefer();
    let tree = whole.tree_at(C, b"/", Timestamp(40 * S)).unwrap();
    let damaged = |at: usize| {
        let mut b = bytes.clone();
        b[at] ^= 0x40;
        std::fs::write(&run, &b).unwrap();
    };
    // A flipped byte in the footer: refused at open.
    damaged(footer.footer_off as usize + 2);
    let r = LocalRepo::open(tmp.path()).unwrap();
    assert!(!deferred(&r));
    assert_eq!(r.versions_of(C, b"/r/f1").unwrap(), want);
    // In a table entry, a path, a record or an entry: found by the query
    // that reads it, which then reads every index file.
    for at in [
        footer.table_off as usize + 3,
        footer.paths_off as usize + 1,
        2,
        footer.entries_off as usize + 1,
    ] {
        damaged(at);
        let r = LocalRepo::open(tmp.path()).unwrap();
        assert!(deferred(&r));
        assert_eq!(
            r.tree_at(C, b"/", Timestamp(40 * S)).unwrap(),
            tree,
            "byte {at}"
        );
        assert!(!deferred(&r), "byte {at}");
    }
    bytes.clear();
    // The writer's next upkeep replaces it.
    drop(r);
    repo.index_versions().unwrap();
}

#[test]
fn a_reader_refreshes_over_new_runs_and_packs() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    let seq = history(&repo, 1, 1..50);
    repo.index_versions().unwrap();
    let view = LocalRepo::open(tmp.path()).unwrap();
    let before = view.versions_of(C, b"/r/f1").unwrap();
    history(&repo, seq, 50..90);
    assert_eq!(view.versions_of(C, b"/r/f1").unwrap(), before);
    view.refresh().unwrap();
    assert!(deferred(&view));
    assert_eq!(
        view.versions_of(C, b"/r/f1").unwrap(),
        repo.versions_of(C, b"/r/f1").unwrap()
    );
    // New runs (the overlay's packs now in one): the view opens again.
    let seq = history(&repo, seq + 40, 90..120);
    repo.index_versions().unwrap();
    view.refresh().unwrap();
    same_answers(&view, &LocalRepo::open(tmp.path()).unwrap(), 130);
    // A forget: retention as the file says now.
    let req = ForgetRequest::new(
        Policy::parse("all 30s, every 20s").unwrap(),
        Timestamp(130 * S),
    );
    repo.forget(C, &req).unwrap();
    history(&repo, seq, 130..140);
    view.refresh().unwrap();
    same_answers(&view, &LocalRepo::open(tmp.path()).unwrap(), 150);
}

#[test]
fn a_long_path_is_searched_and_answers_as_the_whole_index() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    repo.commit_versions(vec![dir_v(1, 0, b"/r")]).unwrap();
    // 400 versions of one path, a few observed earlier than the one
    // before them (a clock stepped back), a tombstone now and then; the
    // first half in one run, the rest in another and in the overlay.
    for (seq, s) in (2..).zip(1..400i64) {
        let t = if s % 37 == 0 { (s - 20) * S } else { s * S };
        let v = if s % 29 == 0 {
            gone(seq, t, b"/r/hot")
        } else {
            let c = chunk(s as u64 % 20);
            repo.put_chunks(vec![c.clone()]).unwrap();
            file_v(seq, t, b"/r/hot", &[&c])
        };
        repo.commit_versions(vec![v]).unwrap();
        if s == 200 || s == 350 {
            repo.index_versions().unwrap();
        }
    }
    let check = |until: i64| {
        let view = LocalRepo::open(tmp.path()).unwrap();
        let whole = LocalRepo::open(tmp.path()).unwrap();
        whole.undefer();
        assert!(deferred(&view));
        assert_eq!(
            view.versions_of(C, b"/r/hot").unwrap(),
            whole.versions_of(C, b"/r/hot").unwrap()
        );
        for t in 0..until * 2 {
            let at = Timestamp(t * S / 2);
            assert_eq!(
                view.tree_at(C, b"/r", at).unwrap(),
                whole.tree_at(C, b"/r", at).unwrap(),
                "at {} s",
                t as f64 / 2.0
            );
        }
        assert!(deferred(&view));
    };
    check(410);
    let req = ForgetRequest::new(
        Policy::parse("all 40s, every 5s for 2m, every 30s").unwrap(),
        Timestamp(400 * S),
    );
    assert!(repo.forget(C, &req).unwrap().versions_forgotten > 0);
    check(410);
}

#[test]
fn rebuilding_the_index_files_writes_the_runs_again() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
    history(&repo, 1, 1..60);
    repo.index_versions().unwrap();
    assert_eq!(runs_in(tmp.path()), 1);
    repo.rebuild_index().unwrap();
    assert_eq!(runs_in(tmp.path()), 0, "made from the old index files");
    assert!(!deferred(&LocalRepo::open(tmp.path()).unwrap()));
    repo.index_versions().unwrap();
    let view = LocalRepo::open(tmp.path()).unwrap();
    same_answers(&view, &LocalRepo::open(tmp.path()).unwrap(), 70);
}
