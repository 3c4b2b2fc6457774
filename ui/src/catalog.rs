//! The catalog: every path the client ever had, with when it first and
//! last existed, and the time of every version, for the timeline and the
//! search. Built by reading all versions a page at a time through
//! [`History`], and built again when the repository has committed more
//! (checked at most every [`RECHECK`]).
//!
//! Search (`find`) is a small function over this catalog: when the
//! repository grows a query of its own for `rewind find`, `find` can ask
//! it instead and the catalog keeps only the timeline's counts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rewind_core::{RepoError, Repository, Version};

/// Every version of one client, a page at a time. Both repositories
/// (`rewind_repo::LocalRepo::list_page`, `rewind_remote::RemoteRepo::list_page`,
/// which a server answers with the asking client's versions only) have
/// it; the agent hands one in.
pub trait History: Send + Sync {
    /// The versions of the paths after `after` (path order, each path
    /// whole, oldest first), until at least `limit` are taken; an empty
    /// page is the end.
    fn list_page(&self, after: Option<&[u8]>, limit: usize) -> Result<Vec<Version>, RepoError>;
}

/// Versions asked for per page: a page of this many is a few MiB, and
/// a 100k-version repository takes a handful of round trips to a server.
const PAGE: usize = 20_000;

/// How often a request may look whether the repository changed (one
/// `stats` call; a server round trip when remote). A capture reaches the
/// repository within about a second; two more are fine for the timeline.
pub(crate) const RECHECK: Duration = Duration::from_secs(2);

/// What the catalog knows of one path.
#[derive(Clone, Debug)]
pub(crate) struct PathInfo {
    pub path: Vec<u8>,
    /// Time of its first version (ns).
    pub first: i64,
    /// Time of its newest version that was not a deletion (ns).
    pub last_present: Option<i64>,
    /// When it stopped existing: its newest version is a deletion, or a
    /// folder above it was deleted after its last version (ns).
    pub deleted_at: Option<i64>,
    /// Its number of versions.
    pub versions: u32,
    /// Kind of its newest present version (`file`, `dir`, `dump`, …).
    pub kind: &'static str,
    /// Size of its newest present version.
    pub size: u64,
}

/// One run of a dump job, for the timeline's marks.
#[derive(Clone, Debug)]
pub(crate) struct DumpRun {
    pub path: Vec<u8>,
    pub time: i64,
    pub ok: bool,
    pub status: String,
    pub size: u64,
}

/// A built catalog.
pub(crate) struct Catalog {
    /// Sorted by path.
    pub paths: Vec<PathInfo>,
    /// The time of every version, sorted (ns).
    pub times: Vec<i64>,
    /// Every dump run, by time.
    pub dumps: Vec<DumpRun>,
}

impl Catalog {
    /// Build from every version, read through `h`.
    pub(crate) fn build(h: &dyn History) -> Result<Catalog, RepoError> {
        let mut paths = Vec::new();
        let mut times = Vec::new();
        let mut dumps = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = h.list_page(after.as_deref(), PAGE)?;
            let Some(last) = page.last() else { break };
            after = Some(last.path.clone());
            let mut i = 0;
            while i < page.len() {
                let p = &page[i].path;
                let mut j = i;
                while j < page.len() && &page[j].path == p {
                    j += 1;
                }
                paths.push(Self::path_info(&page[i..j], &mut times, &mut dumps));
                i = j;
            }
        }
        paths.sort_by(|a: &PathInfo, b| a.path.cmp(&b.path));
        times.sort_unstable();
        dumps.sort_by_key(|d: &DumpRun| d.time);
        inherit_deletions(&mut paths);
        Ok(Catalog {
            paths,
            times,
            dumps,
        })
    }

    fn path_info(vs: &[Version], times: &mut Vec<i64>, dumps: &mut Vec<DumpRun>) -> PathInfo {
        let mut info = PathInfo {
            path: vs[0].path.clone(),
            first: vs[0].observed_at.0,
            last_present: None,
            deleted_at: None,
            versions: vs.len() as u32,
            kind: "deleted",
            size: 0,
        };
        for v in vs {
            times.push(v.observed_at.0);
            if let Some(st) = v.stream_status() {
                dumps.push(DumpRun {
                    path: v.path.clone(),
                    time: v.observed_at.0,
                    ok: st.ok(),
                    status: st.describe(),
                    size: v.size(),
                });
            }
            info.first = info.first.min(v.observed_at.0);
        }
        // Versions come oldest first (by seq).
        if let Some(v) = vs.iter().rev().find(|v| !v.is_tombstone()) {
            info.last_present = Some(v.observed_at.0);
            info.kind = v.kind_name();
            info.size = v.size();
        }
        if let Some(v) = vs.last()
            && v.is_tombstone()
        {
            info.deleted_at = Some(v.observed_at.0);
        }
        info
    }

    /// The number of versions with a time in `[from, to)`.
    pub(crate) fn count(&self, from: i64, to: i64) -> usize {
        let a = self.times.partition_point(|&t| t < from);
        let b = self.times.partition_point(|&t| t < to);
        b.saturating_sub(a)
    }

    /// Paths whose name (or, when `pattern` has a `/`, whole path) matches
    /// `pattern`: a glob when it has `*`, `?`, `[` or `{`, else a
    /// substring, case-insensitive. At most `limit`, with the number found.
    pub(crate) fn find(
        &self,
        pattern: &str,
        limit: usize,
    ) -> Result<(Vec<&PathInfo>, usize), globset::Error> {
        let whole = pattern.contains('/');
        let is_glob = pattern.contains(['*', '?', '[', '{']);
        let glob = if is_glob {
            Some(
                globset::GlobBuilder::new(pattern)
                    .case_insensitive(true)
                    .literal_separator(false)
                    .build()?
                    .compile_matcher(),
            )
        } else {
            None
        };
        let needle = pattern.to_lowercase();
        let mut out = Vec::new();
        let mut total = 0;
        for p in &self.paths {
            let hay: &[u8] = if whole {
                &p.path
            } else {
                p.path.rsplit(|&c| c == b'/').next().unwrap_or(&p.path)
            };
            let hit = match &glob {
                Some(g) => g.is_match(rewind_core::path::from_bytes(hay)),
                None => String::from_utf8_lossy(hay)
                    .to_lowercase()
                    .contains(&needle),
            };
            if hit {
                total += 1;
                if out.len() < limit {
                    out.push(p);
                }
            }
        }
        Ok((out, total))
    }
}

/// A path whose folder was deleted after the path's last version stopped
/// existing then, though its own newest version is not a deletion.
fn inherit_deletions(paths: &mut [PathInfo]) {
    let index: HashMap<Vec<u8>, usize> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| (p.path.clone(), i))
        .collect();
    // Parents sort before their children (a prefix sorts first), so a
    // parent's inherited deletion is final when its children are visited.
    for i in 0..paths.len() {
        if paths[i].deleted_at.is_some() {
            continue;
        }
        let last = paths[i].last_present.unwrap_or(paths[i].first);
        let mut p = paths[i].path.as_slice();
        while let Some(cut) = p.iter().rposition(|&c| c == b'/') {
            p = &p[..cut.max(1)];
            if let Some(&j) = index.get(p)
                && let Some(d) = paths[j].deleted_at
                && d >= last
            {
                paths[i].deleted_at = Some(d);
                break;
            }
            if p == b"/" {
                break;
            }
        }
    }
}

/// The catalog kept up to date.
pub(crate) struct CatalogCache {
    history: Arc<dyn History>,
    repo: Arc<dyn Repository>,
    client: String,
    current: RwLock<Option<(Arc<Catalog>, Generation)>>,
    checked: Mutex<Option<Instant>>,
    building: Mutex<()>,
}

/// What tells that the repository changed: its version count, our
/// highest seq and its last commit.
type Generation = (u64, u64, Option<i64>);

impl CatalogCache {
    pub(crate) fn new(
        history: Arc<dyn History>,
        repo: Arc<dyn Repository>,
        client: String,
    ) -> CatalogCache {
        CatalogCache {
            history,
            repo,
            client,
            current: RwLock::new(None),
            checked: Mutex::new(None),
            building: Mutex::new(()),
        }
    }

    fn generation(&self) -> Result<Generation, RepoError> {
        let s = self.repo.stats()?;
        let seq = s
            .max_seq
            .iter()
            .find(|(c, _)| *c == self.client)
            .map_or(0, |(_, n)| *n);
        Ok((s.versions, seq, s.last_commit.map(|t| t.0)))
    }

    /// The catalog, built again first when the repository changed since
    /// (looked at most every [`RECHECK`]).
    pub(crate) fn get(&self) -> Result<Arc<Catalog>, RepoError> {
        let due = {
            let mut c = self.checked.lock().unwrap_or_else(|e| e.into_inner());
            let due = c.is_none_or(|t| t.elapsed() >= RECHECK);
            if due {
                *c = Some(Instant::now());
            }
            due
        };
        let cur = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some((cat, generation)) = &cur
            && (!due || self.generation().ok().as_ref() == Some(generation))
        {
            return Ok(cat.clone());
        }
        // One build at a time; who waited for it takes its result.
        let _b = self.building.lock().unwrap_or_else(|e| e.into_inner());
        let generation = self.generation()?;
        if let Some((cat, g)) = &*self.current.read().unwrap_or_else(|e| e.into_inner())
            && *g == generation
        {
            return Ok(cat.clone());
        }
        let started = Instant::now();
        let cat = Arc::new(Catalog::build(self.history.as_ref())?);
        tracing::debug!(
            "ui: catalog of {} paths, {} versions built in {:?}",
            cat.paths.len(),
            cat.times.len(),
            started.elapsed()
        );
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some((cat.clone(), generation));
        Ok(cat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind_core::{Entry, FileKind, FileMeta, Timestamp};

    fn v(path: &str, seq: u64, t: i64, kind: Option<FileKind>) -> Version {
        Version {
            client: "c".into(),
            seq,
            observed_at: Timestamp(t),
            path: path.as_bytes().to_vec(),
            entry: match kind {
                Some(k) => Entry::Present {
                    meta: FileMeta::new(k, 0o644),
                    chunks: vec![],
                    xattrs: vec![],
                },
                None => Entry::Deleted,
            },
        }
    }

    struct Fixed(Vec<Version>);

    impl History for Fixed {
        fn list_page(
            &self,
            after: Option<&[u8]>,
            _limit: usize,
        ) -> Result<Vec<Version>, RepoError> {
            // One path per page, to exercise paging.
            let Some(first) = self
                .0
                .iter()
                .find(|v| after.is_none_or(|a| v.path.as_slice() > a))
            else {
                return Ok(vec![]);
            };
            Ok(self
                .0
                .iter()
                .filter(|v| v.path == first.path)
                .cloned()
                .collect())
        }
    }

    fn catalog() -> Catalog {
        Catalog::build(&Fixed(vec![
            v("/r", 1, 10, Some(FileKind::Dir)),
            v("/r/a.txt", 2, 10, Some(FileKind::File)),
            v("/r/a.txt", 5, 40, None),
            v("/r/d", 3, 10, Some(FileKind::Dir)),
            v("/r/d", 7, 60, None),
            v("/r/d/inner.txt", 4, 20, Some(FileKind::File)),
            v("/r/keep.TXT", 6, 50, Some(FileKind::File)),
        ]))
        .unwrap()
    }

    #[test]
    fn counts_cover_half_open_ranges() {
        let c = catalog();
        assert_eq!(c.count(0, 100), 7);
        assert_eq!(c.count(10, 11), 3);
        assert_eq!(c.count(11, 40), 1);
        assert_eq!(c.count(40, 41), 1);
    }

    #[test]
    fn a_file_under_a_deleted_folder_is_deleted_with_it() {
        let c = catalog();
        let inner = c
            .paths
            .iter()
            .find(|p| p.path == b"/r/d/inner.txt")
            .unwrap();
        assert_eq!(inner.deleted_at, Some(60));
        assert_eq!(inner.last_present, Some(20));
        let a = c.paths.iter().find(|p| p.path == b"/r/a.txt").unwrap();
        assert_eq!(
            (a.deleted_at, a.last_present, a.kind),
            (Some(40), Some(10), "file")
        );
        let keep = c.paths.iter().find(|p| p.path == b"/r/keep.TXT").unwrap();
        assert_eq!(keep.deleted_at, None);
    }

    #[test]
    fn find_matches_names_by_substring_or_glob() {
        let c = catalog();
        let names = |pat: &str| -> Vec<String> {
            c.find(pat, 10)
                .unwrap()
                .0
                .iter()
                .map(|p| String::from_utf8_lossy(&p.path).into_owned())
                .collect()
        };
        assert_eq!(names("txt"), ["/r/a.txt", "/r/d/inner.txt", "/r/keep.TXT"]);
        assert_eq!(
            names("*.txt"),
            ["/r/a.txt", "/r/d/inner.txt", "/r/keep.TXT"]
        );
        assert_eq!(names("/r/d/*"), ["/r/d/inner.txt"]);
        assert_eq!(names("inner"), ["/r/d/inner.txt"]);
        assert!(names("r").contains(&"/r".to_string()));
        let (some, total) = c.find("*", 2).unwrap();
        assert_eq!((some.len(), total), (2, 5));
    }
}
