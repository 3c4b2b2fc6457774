//! The point-in-time questions behind `rewind find` and `rewind diff`,
//! asked of any [`Repository`] (an embedded one, or a server, to which only
//! the questions and the answers travel).
//!
//! - A find without a path looks under everything a client stored: its
//!   protected folders (`/`) and its database dumps (`dumps`), in that
//!   order ([`EVERYWHERE`]).
//! - A diff compares the trees at two moments as the point-in-time
//!   definition gives them ([`machine_tree_at`], [`diff_trees`]).
//! - Nothing here writes.

use rewind_core::{
    FindQuery, FindReply, RepoError, Repository, Timestamp, TreeChange, diff_trees, machine_tree_at,
};

/// Where a find looks when no path is given: the protected folders, then
/// the database dumps.
pub const EVERYWHERE: [&[u8]; 2] = [b"/", b"dumps"];

/// `query` asked under each of `bases` in turn (in place of its own
/// `base`): the hits in that order, truncated when any answer was cut at
/// the repository's limit.
pub fn find_under(
    repo: &dyn Repository,
    client: &str,
    bases: &[&[u8]],
    query: &FindQuery,
) -> Result<FindReply, RepoError> {
    let mut all = FindReply::default();
    for base in bases {
        let q = FindQuery {
            base: base.to_vec(),
            ..query.clone()
        };
        let r = repo.find(client, &q)?;
        all.truncated |= r.truncated;
        all.hits.extend(r.hits);
    }
    Ok(all)
}

/// What changed under `base` from moment `a` to moment `b`; `None` when
/// `base` existed at neither.
pub fn diff_between(
    repo: &dyn Repository,
    client: &str,
    base: &[u8],
    a: Timestamp,
    b: Timestamp,
) -> Result<Option<Vec<TreeChange>>, RepoError> {
    let old = machine_tree_at(repo, client, base, a)?;
    let new = machine_tree_at(repo, client, base, b)?;
    if old.is_empty() && new.is_empty() {
        return Ok(None);
    }
    Ok(Some(diff_trees(&old, &new)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind_core::{Change, Entry, FileKind, Version};
    use rewind_repo::LocalRepo;

    /// A repository holding `/p/a.txt` from 10, `/p/b.txt` from 20 and
    /// `/p/a.txt` deleted at 30, all of client `c`.
    fn repo() -> (tempfile::TempDir, LocalRepo) {
        let tmp = tempfile::tempdir().unwrap();
        let repo = LocalRepo::init(&tmp.path().join("repo"), rewind_core::DEFAULT_CHUNKER).unwrap();
        let mut meta = rewind_fsmeta::read_meta(tmp.path()).unwrap();
        meta.kind = FileKind::File;
        meta.size = 0;
        let present = || Entry::Present {
            meta: meta.clone(),
            chunks: vec![],
            xattrs: vec![],
        };
        let v = |seq, at, path: &str, entry| Version {
            client: "c".into(),
            seq,
            observed_at: Timestamp(at),
            path: path.as_bytes().to_vec(),
            entry,
        };
        repo.commit_versions(vec![
            v(1, 10, "/p/a.txt", present()),
            v(2, 20, "/p/b.txt", present()),
            v(3, 30, "/p/a.txt", Entry::Deleted),
        ])
        .unwrap();
        (tmp, repo)
    }

    #[test]
    fn a_diff_names_what_came_and_went_and_nothing_when_the_path_never_existed() {
        let (_tmp, repo) = repo();
        let changes = diff_between(&repo, "c", b"/p", Timestamp(15), Timestamp(35))
            .unwrap()
            .unwrap();
        let seen: Vec<_> = changes.iter().map(|c| (c.change, c.path.clone())).collect();
        assert_eq!(
            seen,
            vec![
                (Change::Removed, b"/p/a.txt".to_vec()),
                (Change::Added, b"/p/b.txt".to_vec()),
            ]
        );
        assert!(
            diff_between(&repo, "c", b"/p", Timestamp(1), Timestamp(5))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_find_everywhere_asks_under_each_base_and_keeps_their_hits() {
        let (_tmp, repo) = repo();
        let r = find_under(&repo, "c", &EVERYWHERE, &FindQuery::new(b"", ".txt")).unwrap();
        let paths: Vec<_> = r.hits.iter().map(|h| h.path.clone()).collect();
        assert_eq!(paths, vec![b"/p/a.txt".to_vec(), b"/p/b.txt".to_vec()]);
        assert!(!r.truncated);
        let deleted = FindQuery {
            deleted_only: true,
            ..FindQuery::new(b"", ".txt")
        };
        let r = find_under(&repo, "c", &EVERYWHERE, &deleted).unwrap();
        assert_eq!(r.hits.len(), 1);
        assert!(!r.hits[0].exists_now);
    }
}
