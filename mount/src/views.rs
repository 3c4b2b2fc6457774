//! [`Views`]: what the mount asks the repository, cached and kept
//! current. Trees of moments (at most [`MAX_TREES`], least recently used
//! first out), version lists, deleted paths below a folder, days and their
//! moments. Everything cached is dropped when the repository's newest
//! sequence number for the client changes (a commit arrived: a version
//! may have been observed at any moment before it), checked at most once
//! per `recheck`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use jiff::civil::Date;
use jiff::tz::TimeZone;
use rewind_core::{ActivityQuery, FileKind, FindQuery, RepoError, Repository, Timestamp, Version};

use crate::names;
use crate::tree::Tree;

/// Trees of moments kept at most. A tree costs about 600 bytes a path (a
/// stored version in memory), so three trees of a 50 000-file folder are
/// about 90 MB; three lets `latest/`, one `at/` moment and a `days/` entry
/// be browsed side by side without refetching.
pub const MAX_TREES: usize = 3;

/// Version lists, deleted-path lists and day listings kept at most (each).
const MAX_LISTS: usize = 256;

/// How often, at most, the repository is asked whether something new was
/// committed (the embedded repository rereads its index directory, a
/// server answers one request).
pub const DEFAULT_RECHECK: Duration = Duration::from_secs(1);

/// Which moment a tree shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Moment {
    /// Now, and on as commits arrive.
    Latest,
    /// A fixed moment.
    At(Timestamp),
}

/// Why a question could not be answered (the kernel gets `EIO`; the
/// reason goes to the log).
#[derive(Clone, Debug)]
pub(crate) struct Failed(pub String);

impl From<RepoError> for Failed {
    fn from(e: RepoError) -> Failed {
        Failed(e.to_string())
    }
}

type Slot = Arc<OnceLock<Result<Arc<Tree>, Failed>>>;

/// Paths that existed below a folder and do not now, sorted, each with its
/// kind in its last version (`None` for a dump).
pub(crate) type Deleted = Arc<[(Vec<u8>, Option<FileKind>)]>;

#[derive(Default)]
struct Cached {
    generation: Option<u64>,
    checked: Option<Instant>,
    /// (moment, tree being fetched or fetched, last use)
    trees: Vec<(Moment, Slot, u64)>,
    tick: u64,
    versions: HashMap<Vec<u8>, Arc<[Version]>>,
    deleted: HashMap<Vec<u8>, Deleted>,
    days: Option<Arc<[Date]>>,
    moments: HashMap<Date, Arc<[Timestamp]>>,
}

/// The repository as the mount sees it.
pub(crate) struct Views {
    repo: Arc<dyn Repository>,
    client: String,
    pub(crate) tz: TimeZone,
    owner: (u32, u32),
    recheck: Duration,
    cached: Mutex<Cached>,
}

impl Views {
    pub(crate) fn new(
        repo: Arc<dyn Repository>,
        client: String,
        owner: (u32, u32),
        recheck: Duration,
    ) -> Views {
        Views {
            repo,
            client,
            tz: TimeZone::system(),
            owner,
            recheck,
            cached: Mutex::new(Cached::default()),
        }
    }

    pub(crate) fn repo(&self) -> &dyn Repository {
        self.repo.as_ref()
    }

    /// The owner of made-up directories (the mounting user).
    pub(crate) fn owner(&self) -> (u32, u32) {
        self.owner
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.cached.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drop everything if the repository moved on since the last look (at
    /// most once per `recheck`).
    fn check(&self) {
        {
            let c = self.lock();
            if c.checked.is_some_and(|t| t.elapsed() < self.recheck) {
                return;
            }
        }
        if let Err(e) = self.repo.refresh() {
            tracing::warn!("cannot look for new commits: {e}");
        }
        let generation = match self.repo.stats() {
            Ok(s) => s
                .max_seq
                .iter()
                .find(|(c, _)| *c == self.client)
                .map_or(0, |(_, n)| *n),
            Err(e) => {
                tracing::warn!("cannot look for new commits: {e}");
                let mut c = self.lock();
                c.checked = Some(Instant::now());
                return;
            }
        };
        let mut c = self.lock();
        if c.generation != Some(generation) {
            let tick = c.tick;
            *c = Cached {
                generation: Some(generation),
                tick,
                ..Cached::default()
            };
        }
        c.checked = Some(Instant::now());
    }

    /// The tree at `m` (fetched once however many ask at the same time).
    pub(crate) fn tree(&self, m: Moment) -> Result<Arc<Tree>, Failed> {
        self.check();
        let slot = {
            let mut c = self.lock();
            c.tick += 1;
            let tick = c.tick;
            if let Some(e) = c.trees.iter_mut().find(|(k, _, _)| *k == m) {
                e.2 = tick;
                e.1.clone()
            } else {
                if c.trees.len() >= MAX_TREES {
                    let (i, _) = c
                        .trees
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, e)| e.2)
                        .expect("full");
                    c.trees.swap_remove(i);
                }
                let s: Slot = Arc::new(OnceLock::new());
                c.trees.push((m, s.clone(), tick));
                s
            }
        };
        let got = slot.get_or_init(|| self.fetch_tree(m)).clone();
        if got.is_err() {
            // Not kept: the next look asks again.
            self.lock().trees.retain(|(_, s, _)| !Arc::ptr_eq(s, &slot));
        }
        got
    }

    fn fetch_tree(&self, m: Moment) -> Result<Arc<Tree>, Failed> {
        let (at, shown) = match m {
            Moment::Latest => (Timestamp::MAX, Timestamp::now()),
            Moment::At(t) => (t, t),
        };
        let versions = self.repo.tree_at(&self.client, b"/", at)?;
        Ok(Arc::new(Tree::new(versions, shown, self.owner)))
    }

    /// Every version of `path`, oldest first.
    pub(crate) fn versions(&self, path: &[u8]) -> Result<Arc<[Version]>, Failed> {
        self.check();
        if let Some(v) = self.lock().versions.get(path) {
            return Ok(v.clone());
        }
        let v: Arc<[Version]> = self.repo.versions_of(&self.client, path)?.into();
        let mut c = self.lock();
        if c.versions.len() >= MAX_LISTS {
            c.versions.clear();
        }
        c.versions.insert(path.to_vec(), v.clone());
        Ok(v)
    }

    /// The paths below `dir` that existed once and do not now.
    pub(crate) fn deleted_below(&self, dir: &[u8]) -> Result<Deleted, Failed> {
        self.check();
        if let Some(v) = self.lock().deleted.get(dir) {
            return Ok(v.clone());
        }
        let q = FindQuery {
            deleted_only: true,
            ..FindQuery::new(dir, "")
        };
        let r = self.repo.find(&self.client, &q)?;
        if r.truncated {
            tracing::warn!(
                "more paths were deleted below {} than one answer holds: versions/ lists the first ones",
                rewind_core::path::display(dir)
            );
        }
        let v: Deleted = r.hits.into_iter().map(|h| (h.path, h.kind)).collect();
        let mut c = self.lock();
        if c.deleted.len() >= MAX_LISTS {
            c.deleted.clear();
        }
        c.deleted.insert(dir.to_vec(), v.clone());
        Ok(v)
    }

    /// The local dates on which something changed.
    pub(crate) fn days(&self) -> Result<Arc<[Date]>, Failed> {
        self.check();
        if let Some(d) = self.lock().days.clone() {
            return Ok(d);
        }
        let ends: Vec<Timestamp> = self
            .activity(Timestamp(i64::MIN), Timestamp::MAX, names::DAY_WINDOW)?
            .into_iter()
            .collect();
        let d: Arc<[Date]> = names::days_of(&ends, &self.tz).into();
        self.lock().days = Some(d.clone());
        Ok(d)
    }

    /// The moments (whole seconds) with changes named on `day`.
    pub(crate) fn moments(&self, day: Date) -> Result<Arc<[Timestamp]>, Failed> {
        self.check();
        if let Some(m) = self.lock().moments.get(&day) {
            return Ok(m.clone());
        }
        let Some((from, to)) = names::day_range(day, &self.tz) else {
            return Ok(Arc::from(Vec::new()));
        };
        let m: Arc<[Timestamp]> = self.activity(from, to, names::MOMENT_UNIT)?.into();
        let mut c = self.lock();
        if c.moments.len() >= MAX_LISTS {
            c.moments.clear();
        }
        c.moments.insert(day, m.clone());
        Ok(m)
    }

    fn activity(
        &self,
        from: Timestamp,
        to: Timestamp,
        width: i64,
    ) -> Result<Vec<Timestamp>, Failed> {
        let q = ActivityQuery {
            path: b"/".to_vec(),
            from,
            to,
            width,
        };
        Ok(self
            .repo
            .activity(&self.client, &q)?
            .into_iter()
            .map(|b| b.end)
            .collect())
    }

    /// How many trees are held and how many entries they hold (for tests
    /// and the benchmark's memory figure).
    #[cfg(test)]
    pub(crate) fn held(&self) -> (usize, usize) {
        let c = self.lock();
        let entries = c
            .trees
            .iter()
            .filter_map(|(_, s, _)| s.get())
            .filter_map(|r| r.as_ref().ok())
            .map(|t| t.len())
            .sum();
        (c.trees.len(), entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind_core::{DEFAULT_CHUNKER, Entry, FileKind, FileMeta};
    use rewind_repo::LocalRepo;

    fn dir(seq: u64, t: i64, p: &str) -> Version {
        Version {
            client: "c".into(),
            seq,
            observed_at: Timestamp(t),
            path: p.as_bytes().to_vec(),
            entry: Entry::Present {
                meta: FileMeta::new(FileKind::Dir, 0o755),
                chunks: vec![],
                xattrs: vec![],
            },
        }
    }

    #[test]
    fn trees_are_bounded_and_dropped_when_a_commit_arrives() {
        let tmp = tempfile::tempdir().unwrap();
        let writer = LocalRepo::init(tmp.path(), DEFAULT_CHUNKER).unwrap();
        writer.commit_versions(vec![dir(1, 10, "/r")]).unwrap();
        let reader: Arc<dyn Repository> = Arc::new(LocalRepo::open(tmp.path()).unwrap());
        let views = Views::new(reader, "c".into(), (0, 0), Duration::ZERO);
        for t in 0..10 {
            views.tree(Moment::At(Timestamp(t * 10))).unwrap();
            assert!(views.held().0 <= MAX_TREES);
        }
        let latest = views.tree(Moment::Latest).unwrap();
        assert!(latest.get(b"/r/new").is_none());
        writer.commit_versions(vec![dir(2, 20, "/r/new")]).unwrap();
        let latest = views.tree(Moment::Latest).unwrap();
        assert!(
            latest.get(b"/r/new").is_some(),
            "a reader sees the new commit"
        );
        assert_eq!(views.held().0, 1, "older trees were dropped");
    }
}
