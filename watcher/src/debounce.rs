//! The debounce policy, as plain data with an injected clock.
//!
//! Guarantees:
//!
//! - a path is reported once it has been quiet for `quiescence`, or once it
//!   has been pending for `busy_interval` while still busy (a rescan: for
//!   `max_interval`); the next event for it then starts a fresh burst;
//! - the time reported with a path is the wall-clock time of the *first*
//!   event of its burst;
//! - a path is reported with `content: false` only when every event of its
//!   burst was about attributes ([`EventClass::Attrib`], possibly with a
//!   close after writing: `touch` opens for writing, sets the times and
//!   closes); any data or name event, or a close after writing with no
//!   attribute event (a write through a shared mapping makes no modify
//!   event), makes it `content: true`;
//! - a pending rescan of a directory absorbs every pending path and rescan
//!   below it (keeping the earliest time seen), and events below it are
//!   covered by it: the rescan is reported after they happened;
//! - more than `collapse_threshold` pending entries in one directory collapse
//!   into one rescan of that directory ([`RescanReason::TooManyChanges`]),
//!   which then waits for the whole directory to be quiet (bounded by
//!   `max_interval`); more than `max_pending` entries in all collapse into
//!   one rescan per root. Memory is bounded accordingly.
//!
//! Nothing here touches the filesystem or the clock, so every rule is tested
//! without threads or sleeps.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::event::{RescanReason, WatchEvent};

/// More pending entries than this in one directory become one rescan of it.
/// Syncthing's aggregator uses a similar per-directory cap; 2000 is where
/// reporting paths one by one (one message and one `lstat` each) starts to
/// cost more than listing the directory once, while ordinary saves and small
/// copies stay precise.
pub(crate) const COLLAPSE_THRESHOLD: usize = 2_000;

/// Pending entries in all before everything collapses into root rescans.
/// Bounds memory during a flood (an untar of millions of files) at roughly
/// 100k × ~200 bytes = 20 MB.
pub(crate) const MAX_PENDING: usize = 100_000;

/// What one event for a path said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventClass {
    /// Data written, or the name created, removed or renamed.
    Content,
    /// Only attributes (mode, owner, times, xattrs, ACLs, link count).
    Attrib,
    /// A file opened for writing was closed.
    CloseWrite,
}

/// The classes of event seen in one burst.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    content: bool,
    attrib: bool,
    close_write: bool,
}

impl Seen {
    fn add(&mut self, class: EventClass) {
        match class {
            EventClass::Content => self.content = true,
            EventClass::Attrib => self.attrib = true,
            EventClass::CloseWrite => self.close_write = true,
        }
    }

    /// Whether the content may have changed (see the module doc).
    fn content(self) -> bool {
        self.content || (self.close_write && !self.attrib)
    }
}

#[derive(Debug, Clone)]
struct Pending {
    /// Monotonic time of the first event of the burst (for `max_interval`).
    first: Instant,
    /// Monotonic time of the last event (for `quiescence`).
    last: Instant,
    /// Wall-clock time of the first event, reported as `observed_at`.
    first_wall: SystemTime,
    /// `Some` for a pending rescan of the subtree.
    rescan: Option<RescanReason>,
    /// What the events of the burst said.
    seen: Seen,
}

/// Pending paths and rescans, keyed by path. A `BTreeMap` because `Path`
/// orders component-wise, so a directory's descendants form one contiguous
/// range right after it.
#[derive(Debug)]
pub(crate) struct Debouncer {
    quiescence: Duration,
    max_interval: Duration,
    /// A busy path is reported at least this often (a rescan, which lists
    /// a directory, only every `max_interval`).
    pub(crate) busy_interval: Duration,
    pub(crate) collapse_threshold: usize,
    pub(crate) max_pending: usize,
    roots: Vec<PathBuf>,
    pending: BTreeMap<PathBuf, Pending>,
    /// Number of pending entries per parent directory.
    per_dir: HashMap<PathBuf, usize>,
}

impl Debouncer {
    pub(crate) fn new(quiescence: Duration, max_interval: Duration, roots: Vec<PathBuf>) -> Self {
        Debouncer {
            quiescence,
            max_interval,
            busy_interval: max_interval,
            collapse_threshold: COLLAPSE_THRESHOLD,
            max_pending: MAX_PENDING,
            roots,
            pending: BTreeMap::new(),
            per_dir: HashMap::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// `path` had an event of `class` at `now` (wall-clock `wall`).
    pub(crate) fn event(
        &mut self,
        path: PathBuf,
        class: EventClass,
        now: Instant,
        wall: SystemTime,
    ) {
        if let Some(cover) = self.covering_rescan(&path) {
            let entry = self.pending.get_mut(&cover).expect("covering entry exists");
            if entry.rescan == Some(RescanReason::TooManyChanges) {
                // The directory is being flooded: wait for all of it to settle.
                entry.last = now;
            }
            return;
        }
        if let Some(entry) = self.pending.get_mut(&path) {
            entry.last = now;
            entry.seen.add(class);
            return;
        }
        let mut seen = Seen::default();
        seen.add(class);
        self.insert(
            path,
            Pending {
                first: now,
                last: now,
                first_wall: wall,
                rescan: None,
                seen,
            },
        );
        if self.pending.len() > self.max_pending {
            self.collapse_roots(now, wall);
        }
    }

    /// The subtree at `path` must be rescanned.
    pub(crate) fn rescan(
        &mut self,
        path: PathBuf,
        reason: RescanReason,
        now: Instant,
        wall: SystemTime,
    ) {
        if let Some(cover) = self.covering_rescan(&path) {
            if cover == path {
                // Asked again: wait for the requests to settle too.
                self.pending
                    .get_mut(&cover)
                    .expect("covering entry exists")
                    .last = now;
            }
            return;
        }
        self.insert_rescan(path, reason, now, wall);
    }

    /// Remove and return everything that is due at `now`, in path order.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<WatchEvent> {
        let keys: Vec<PathBuf> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                let bound = match p.rescan {
                    None => self.busy_interval,
                    Some(_) => self.max_interval,
                };
                now.saturating_duration_since(p.last) >= self.quiescence
                    || now.saturating_duration_since(p.first) >= bound
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        for path in keys {
            let entry = self.remove(&path).expect("key was just listed");
            out.push(match entry.rescan {
                None => WatchEvent::Changed {
                    path,
                    observed_at: entry.first_wall,
                    content: entry.seen.content(),
                },
                Some(reason) => WatchEvent::Rescan {
                    path,
                    observed_at: entry.first_wall,
                    reason,
                },
            });
        }
        out
    }

    /// The nearest pending rescan at or above `path`.
    fn covering_rescan(&self, path: &Path) -> Option<PathBuf> {
        path.ancestors()
            .find(|a| self.pending.get(*a).is_some_and(|p| p.rescan.is_some()))
            .map(Path::to_path_buf)
    }

    /// Replace `dir` and everything pending below it by one rescan of `dir`.
    fn insert_rescan(
        &mut self,
        dir: PathBuf,
        reason: RescanReason,
        now: Instant,
        wall: SystemTime,
    ) {
        let mut merged = Pending {
            first: now,
            last: now,
            first_wall: wall,
            rescan: Some(reason),
            seen: Seen::default(),
        };
        let below: Vec<PathBuf> = self
            .pending
            .range::<Path, _>((Bound::Included(dir.as_path()), Bound::Unbounded))
            .take_while(|(p, _)| p.starts_with(&dir))
            .map(|(p, _)| p.clone())
            .collect();
        for path in below {
            let old = self.remove(&path).expect("key was just listed");
            merged.first = merged.first.min(old.first);
            merged.first_wall = merged.first_wall.min(old.first_wall);
        }
        self.insert(dir, merged);
    }

    fn insert(&mut self, path: PathBuf, entry: Pending) {
        let (now, wall) = (entry.last, entry.first_wall);
        let parent = path.parent().map(Path::to_path_buf);
        self.pending.insert(path, entry);
        if let Some(parent) = parent {
            let count = self.per_dir.entry(parent.clone()).or_insert(0);
            *count += 1;
            if *count > self.collapse_threshold {
                self.insert_rescan(parent, RescanReason::TooManyChanges, now, wall);
            }
        }
    }

    fn remove(&mut self, path: &Path) -> Option<Pending> {
        let entry = self.pending.remove(path)?;
        if let Some(parent) = path.parent()
            && let Some(count) = self.per_dir.get_mut(parent)
        {
            *count -= 1;
            if *count == 0 {
                self.per_dir.remove(parent);
            }
        }
        Some(entry)
    }

    fn collapse_roots(&mut self, now: Instant, wall: SystemTime) {
        for root in self.roots.clone() {
            let any_below = self
                .pending
                .range::<Path, _>((Bound::Included(root.as_path()), Bound::Unbounded))
                .next()
                .is_some_and(|(p, _)| p.starts_with(&root));
            if any_below {
                self.insert_rescan(root, RescanReason::TooManyChanges, now, wall);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Duration = Duration::from_millis(300);
    const MAX: Duration = Duration::from_secs(60);

    struct Clock {
        start: Instant,
        wall0: SystemTime,
    }

    impl Clock {
        fn new() -> Self {
            Clock {
                start: Instant::now(),
                wall0: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            }
        }
        fn at(&self, ms: u64) -> (Instant, SystemTime) {
            let d = Duration::from_millis(ms);
            (self.start + d, self.wall0 + d)
        }
        fn inst(&self, ms: u64) -> Instant {
            self.at(ms).0
        }
        fn wall(&self, ms: u64) -> SystemTime {
            self.at(ms).1
        }
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    fn deb() -> Debouncer {
        Debouncer::new(Q, MAX, vec![p("/r")])
    }

    fn ev(d: &mut Debouncer, c: &Clock, path: &str, ms: u64) {
        let (i, w) = c.at(ms);
        d.event(p(path), EventClass::Content, i, w);
    }

    fn ev_class(d: &mut Debouncer, c: &Clock, path: &str, class: EventClass, ms: u64) {
        let (i, w) = c.at(ms);
        d.event(p(path), class, i, w);
    }

    fn changed(path: &str, wall: SystemTime) -> WatchEvent {
        WatchEvent::Changed {
            path: p(path),
            observed_at: wall,
            content: true,
        }
    }

    fn rescan(path: &str, wall: SystemTime, reason: RescanReason) -> WatchEvent {
        WatchEvent::Rescan {
            path: p(path),
            observed_at: wall,
            reason,
        }
    }

    #[test]
    fn quiet_path_is_due_after_quiescence_with_first_time() {
        let c = Clock::new();
        let mut d = deb();
        ev(&mut d, &c, "/r/a", 0);
        ev(&mut d, &c, "/r/a", 100);
        ev(&mut d, &c, "/r/a", 200);
        assert!(d.due(c.inst(250)).is_empty());
        assert!(d.due(c.inst(499)).is_empty(), "quiet only 299 ms");
        assert_eq!(d.due(c.inst(500)), vec![changed("/r/a", c.wall(0))]);
        assert!(d.is_empty());
        assert!(d.due(c.inst(10_000)).is_empty(), "reported once");
    }

    #[test]
    fn paths_are_independent() {
        let c = Clock::new();
        let mut d = deb();
        ev(&mut d, &c, "/r/a", 0);
        ev(&mut d, &c, "/r/b", 200);
        assert_eq!(d.due(c.inst(300)), vec![changed("/r/a", c.wall(0))]);
        assert_eq!(d.due(c.inst(500)), vec![changed("/r/b", c.wall(200))]);
    }

    #[test]
    fn busy_path_is_due_at_max_interval_then_starts_fresh() {
        let c = Clock::new();
        let mut d = Debouncer::new(Q, Duration::from_secs(1), vec![p("/r")]);
        let mut reported = Vec::new();
        for ms in (0..2_500).step_by(100) {
            ev(&mut d, &c, "/r/vm.img", ms);
            reported.extend(d.due(c.inst(ms)));
        }
        assert_eq!(
            reported,
            vec![
                changed("/r/vm.img", c.wall(0)),
                changed("/r/vm.img", c.wall(1_100)),
            ]
        );
        reported.extend(d.due(c.inst(2_400 + 300)));
        assert_eq!(reported.last(), Some(&changed("/r/vm.img", c.wall(2_200))));
    }

    #[test]
    fn a_busy_path_is_due_every_busy_interval_a_busy_directory_every_max_interval() {
        let c = Clock::new();
        let mut d = Debouncer::new(Q, Duration::from_secs(60), vec![p("/r")]);
        d.busy_interval = Duration::from_secs(2);
        d.collapse_threshold = 2;
        let mut reported = Vec::new();
        for ms in (0..5_000).step_by(100) {
            ev(&mut d, &c, "/r/log.txt", ms);
            // Three busy names in one directory collapse into its rescan.
            for name in ["a", "b", "c"] {
                ev(&mut d, &c, &format!("/r/d/{name}"), ms);
            }
            reported.extend(d.due(c.inst(ms)));
        }
        let log: Vec<_> = reported
            .iter()
            .filter(|e| matches!(e, WatchEvent::Changed { path, .. } if path == &p("/r/log.txt")))
            .collect();
        assert_eq!(log.len(), 2, "{reported:?}");
        assert!(
            !reported
                .iter()
                .any(|e| matches!(e, WatchEvent::Rescan { .. })),
            "the collapsed directory waits for max_interval: {reported:?}"
        );
    }

    #[test]
    fn rescan_absorbs_pending_paths_below_and_keeps_earliest_time() {
        let c = Clock::new();
        let mut d = deb();
        ev(&mut d, &c, "/r/d/x", 0);
        ev(&mut d, &c, "/r/d/sub/y", 50);
        ev(&mut d, &c, "/r/other", 60);
        let (i, w) = c.at(100);
        d.rescan(p("/r/d"), RescanReason::NewDirectory, i, w);
        // An event below a pending rescan is covered by it.
        ev(&mut d, &c, "/r/d/z", 200);
        // A rescan below a pending rescan is covered too.
        let (i, w) = c.at(250);
        d.rescan(p("/r/d/sub"), RescanReason::Overflow, i, w);
        let out = d.due(c.inst(400));
        assert_eq!(
            out,
            vec![
                rescan("/r/d", c.wall(0), RescanReason::NewDirectory),
                changed("/r/other", c.wall(60)),
            ]
        );
        assert!(d.is_empty());
    }

    #[test]
    fn repeated_rescan_requests_extend_quiet_time() {
        let c = Clock::new();
        let mut d = deb();
        for ms in [0, 200, 400] {
            let (i, w) = c.at(ms);
            d.rescan(p("/r"), RescanReason::Overflow, i, w);
        }
        assert!(d.due(c.inst(600)).is_empty());
        assert_eq!(
            d.due(c.inst(700)),
            vec![rescan("/r", c.wall(0), RescanReason::Overflow)]
        );
    }

    #[test]
    fn many_changes_in_one_dir_collapse_and_wait_for_the_dir_to_settle() {
        let c = Clock::new();
        let mut d = deb();
        d.collapse_threshold = 3;
        ev(&mut d, &c, "/r/big/1", 0);
        ev(&mut d, &c, "/r/big/2", 10);
        ev(&mut d, &c, "/r/big/3", 20);
        ev(&mut d, &c, "/r/small", 25);
        ev(&mut d, &c, "/r/big/4", 30);
        // Later events below the collapsed dir keep it pending.
        ev(&mut d, &c, "/r/big/5", 250);
        ev(&mut d, &c, "/r/big/deep/6", 500);
        assert_eq!(d.due(c.inst(700)), vec![changed("/r/small", c.wall(25))]);
        assert_eq!(
            d.due(c.inst(800)),
            vec![rescan("/r/big", c.wall(0), RescanReason::TooManyChanges)]
        );
        assert!(d.is_empty());
        // After it was reported, the directory starts fresh.
        ev(&mut d, &c, "/r/big/7", 900);
        assert_eq!(d.due(c.inst(1_200)), vec![changed("/r/big/7", c.wall(900))]);
    }

    #[test]
    fn collapsed_dir_still_reported_at_max_interval() {
        let c = Clock::new();
        let mut d = Debouncer::new(Q, Duration::from_secs(1), vec![p("/r")]);
        d.collapse_threshold = 2;
        let mut out = Vec::new();
        for (n, ms) in (0..1_500).step_by(50).enumerate() {
            ev(&mut d, &c, &format!("/r/flood/{n}"), ms);
            out.extend(d.due(c.inst(ms)));
        }
        assert_eq!(
            out.first(),
            Some(&rescan("/r/flood", c.wall(0), RescanReason::TooManyChanges))
        );
    }

    #[test]
    fn flood_everywhere_collapses_into_root_rescans() {
        let c = Clock::new();
        let mut d = Debouncer::new(Q, MAX, vec![p("/r"), p("/s")]);
        d.max_pending = 10;
        for n in 0..11u64 {
            ev(&mut d, &c, &format!("/r/d{n}/f"), n);
        }
        ev(&mut d, &c, "/r/late", 100);
        assert_eq!(
            d.due(c.inst(1_000)),
            vec![rescan("/r", c.wall(0), RescanReason::TooManyChanges)]
        );
    }

    #[test]
    fn attribute_only_bursts_are_reported_without_content() {
        let c = Clock::new();
        let mut d = deb();
        let meta_only = |path: &str, wall| WatchEvent::Changed {
            path: p(path),
            observed_at: wall,
            content: false,
        };
        // chmod, setfattr: attributes only.
        ev_class(&mut d, &c, "/r/chmod", EventClass::Attrib, 0);
        ev_class(&mut d, &c, "/r/chmod", EventClass::Attrib, 10);
        // touch: opened for writing, times set, closed.
        ev_class(&mut d, &c, "/r/touch", EventClass::Attrib, 0);
        ev_class(&mut d, &c, "/r/touch", EventClass::CloseWrite, 1);
        // A write then a chmod: content.
        ev_class(&mut d, &c, "/r/write", EventClass::Content, 0);
        ev_class(&mut d, &c, "/r/write", EventClass::Attrib, 5);
        // A close after writing through a mapping, no other event: content.
        ev_class(&mut d, &c, "/r/mmap", EventClass::CloseWrite, 0);
        assert_eq!(
            d.due(c.inst(400)),
            vec![
                meta_only("/r/chmod", c.wall(0)),
                changed("/r/mmap", c.wall(0)),
                meta_only("/r/touch", c.wall(0)),
                changed("/r/write", c.wall(0)),
            ]
        );
        // The next burst starts fresh.
        ev_class(&mut d, &c, "/r/write", EventClass::Attrib, 500);
        assert_eq!(d.due(c.inst(900)), vec![meta_only("/r/write", c.wall(500))]);
    }
}
