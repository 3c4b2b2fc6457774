//! Scenario tests of the history queries (`find`, `activity`) and of a
//! reader taking in a writer's commits through the `Repository` trait.

use rewind_core::history::{ActivityBucket, ActivityQuery, FindQuery};
use rewind_core::{FileKind, RepoError, Repository, Timestamp};

use crate::LocalRepo;
use crate::tests::{C, ODD, chunk, deleted_dir_history as history, file_v};

fn found(repo: &dyn Repository, q: &FindQuery) -> Vec<String> {
    repo.find(C, q)
        .unwrap()
        .hits
        .iter()
        .map(|h| {
            format!(
                "{} {}..{} {}",
                String::from_utf8_lossy(&h.path),
                h.first_seen.0,
                h.last_seen.map_or("now".to_string(), |t| t.0.to_string()),
                if h.exists_now { "exists" } else { "gone" }
            )
        })
        .collect()
}

#[test]
fn find_reports_when_each_path_existed_by_the_point_in_time_rule() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = history(tmp.path());
    let all = FindQuery::new(b"/", "");
    assert_eq!(
        found(&repo, &all),
        vec![
            "/r 10..now exists",
            "/r/a 10..40 gone",
            "/r/ab 10..now exists",
            // A directory until 30, a file from 50: first seen in its first
            // stretch, last seen in its last.
            "/r/d 10..now exists",
            // Gone with their directory, although they have no tombstone.
            "/r/d/sub 10..30 gone",
            "/r/d/sub/y 10..30 gone",
            "/r/d/x 10..30 gone",
            "/r/\u{fffd}odd\nname 10..now exists",
        ]
    );
    let deleted = FindQuery {
        deleted_only: true,
        ..FindQuery::new(b"/r", "")
    };
    assert_eq!(
        found(&repo, &deleted),
        vec![
            "/r/a 10..40 gone",
            "/r/d/sub 10..30 gone",
            "/r/d/sub/y 10..30 gone",
            "/r/d/x 10..30 gone"
        ]
    );
    // A range: what existed between 32 and 45 (the directory's files were
    // gone by then).
    let range = FindQuery {
        since: Some(Timestamp(32)),
        until: Some(Timestamp(45)),
        ..FindQuery::new(b"/r", "")
    };
    assert_eq!(
        found(&repo, &range),
        vec![
            "/r 10..now exists",
            "/r/a 10..40 gone",
            "/r/ab 10..now exists",
            "/r/\u{fffd}odd\nname 10..now exists"
        ]
    );
    // Before /r/d came back as a file, it was a directory.
    let early = FindQuery {
        until: Some(Timestamp(15)),
        ..FindQuery::new(b"/r", "d")
    };
    let hits = repo.find(C, &early).unwrap().hits;
    assert_eq!(hits[0].path, b"/r/d");
    assert_eq!(hits[0].first_seen, Timestamp(10));
    assert_eq!(hits[0].last_seen, Some(Timestamp(30)));
    assert_eq!(hits[0].kind, Some(FileKind::Dir));
    assert!(hits[0].exists_now, "it exists now, as a file");
    // The last version in the range is what a restore brings back.
    let a = FindQuery::new(b"/", "a");
    let hit = &repo.find(C, &a).unwrap().hits[0];
    assert_eq!(
        (hit.path.as_slice(), hit.last_version),
        (&b"/r/a"[..], Timestamp(20))
    );
}

#[test]
fn find_matches_globs_substrings_and_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = history(tmp.path());
    let q = |p: &str| found(&repo, &FindQuery::new(b"/", p));
    assert_eq!(q("a?"), vec!["/r/ab 10..now exists"]);
    assert_eq!(
        q("b"),
        vec!["/r/ab 10..now exists", "/r/d/sub 10..30 gone"],
        "a substring of the name"
    );
    assert!(
        q("r/a").iter().any(|h| h.starts_with("/r/ab")),
        "with a slash, of the path"
    );
    let odd = repo.find(C, &FindQuery::new(b"/", "*odd*")).unwrap();
    assert_eq!(odd.hits[0].path, ODD, "names that are not UTF-8 match");
    assert_eq!(q("d/*/y"), vec!["/r/d/sub/y 10..30 gone"]);
    assert!(q("AB").is_empty());
    let ic = FindQuery {
        ignore_case: true,
        ..FindQuery::new(b"/", "AB")
    };
    assert_eq!(found(&repo, &ic).len(), 1);
    // Below a base only; a sibling sharing its prefix is not below it.
    assert_eq!(found(&repo, &FindQuery::new(b"/r/a", "")).len(), 1);
    let limited = FindQuery {
        limit: 2,
        ..FindQuery::new(b"/", "")
    };
    let r = repo.find(C, &limited).unwrap();
    assert_eq!((r.hits.len(), r.truncated), (2, true));
    assert!(matches!(
        repo.find(C, &FindQuery::new(b"/", "[")),
        Err(RepoError::BadQuery(_))
    ));
    assert!(
        repo.find("nobody", &FindQuery::new(b"/", ""))
            .unwrap()
            .hits
            .is_empty()
    );
}

#[test]
fn activity_counts_versions_in_windows_ending_where_they_show() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = history(tmp.path());
    let q = |path: &[u8], from: i64, to: i64, width: i64| {
        repo.activity(
            C,
            &ActivityQuery {
                path: path.to_vec(),
                from: Timestamp(from),
                to: Timestamp(to),
                width,
            },
        )
        .unwrap()
    };
    let b = |end: i64, changes: u64| ActivityBucket {
        end: Timestamp(end),
        changes,
    };
    assert_eq!(
        q(b"/", 0, 100, 1),
        vec![b(10, 8), b(20, 1), b(30, 1), b(40, 1), b(50, 1)]
    );
    assert_eq!(q(b"/", 11, 100, 25), vec![b(25, 1), b(50, 3)]);
    assert_eq!(q(b"/r/a", 0, 100, 100), vec![b(100, 3)]);
    assert_eq!(q(b"/r/d", 0, 35, 1000), vec![b(1000, 5)]);
    assert!(
        repo.activity(
            C,
            &ActivityQuery {
                path: b"/".to_vec(),
                from: Timestamp(0),
                to: Timestamp(1),
                width: 0
            }
        )
        .is_err()
    );
}

#[test]
fn a_reader_takes_in_new_commits_through_the_trait() {
    let tmp = tempfile::tempdir().unwrap();
    let writer = history(tmp.path());
    let reader: Box<dyn Repository> = Box::new(LocalRepo::open(tmp.path()).unwrap());
    let before = reader.find(C, &FindQuery::new(b"/", "late")).unwrap();
    assert!(before.hits.is_empty());
    let c = chunk(9);
    writer.put_chunks(vec![c.clone()]).unwrap();
    writer
        .commit_versions(vec![file_v(13, 60, b"/r/late", &[&c])])
        .unwrap();
    assert!(
        reader
            .find(C, &FindQuery::new(b"/", "late"))
            .unwrap()
            .hits
            .is_empty()
    );
    reader.refresh().unwrap();
    assert_eq!(
        reader
            .find(C, &FindQuery::new(b"/", "late"))
            .unwrap()
            .hits
            .len(),
        1
    );
    assert_eq!(
        reader.tree_at(C, b"/r/late", Timestamp(60)).unwrap().len(),
        1
    );
}
