//! Questions about history rather than about one moment: which paths ever
//! matched a name ([`FindQuery`], answered by [`crate::Repository::find`])
//! and when things changed ([`ActivityQuery`], answered by
//! [`crate::Repository::activity`]).
//!
//! Both are answered where the versions are (in process, or on the server
//! for its client), so a search over years of history sends back the hits,
//! never the history. Both follow the point-in-time definition (DESIGN.md,
//! "Point in time"): a path exists at `T` when its newest version observed
//! at or before `T` is not a tombstone and its nearest recorded ancestor is
//! a directory that exists at `T`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{FileKind, Timestamp, Version};

/// The most hits one [`FindQuery`] returns (and the limit when it names
/// none): about 10 MB on the wire at 100 bytes a hit, far under the body
/// limit; a search that matches more is too wide to read anyway.
pub const FIND_LIMIT: u32 = 100_000;

/// The most buckets one [`ActivityQuery`] returns: a day at one-second
/// resolution is 86 400, a year at one minute 525 600.
pub const MAX_BUCKETS: usize = 1_000_000;

/// Which paths to look for: below `base`, matching `pattern`, existing at
/// some moment of `since..=until`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindQuery {
    /// Search below this absolute path (`/` for everything protected), or
    /// below `dumps` for database dumps.
    #[serde(with = "serde_bytes")]
    pub base: Vec<u8>,
    /// A glob, or a substring when it has no glob character (see
    /// [`PathPattern`]). Empty matches every path.
    pub pattern: String,
    /// Match letters regardless of case.
    pub ignore_case: bool,
    /// The range's start (`None`: the beginning).
    pub since: Option<Timestamp>,
    /// The range's end, inclusive (`None`: now and on).
    pub until: Option<Timestamp>,
    /// Only paths that do not exist now.
    pub deleted_only: bool,
    /// Return at most this many hits (0, or more than [`FIND_LIMIT`]:
    /// [`FIND_LIMIT`]).
    pub limit: u32,
}

impl FindQuery {
    /// Every path matching `pattern` below `base`, any time.
    pub fn new(base: &[u8], pattern: &str) -> FindQuery {
        FindQuery {
            base: base.to_vec(),
            pattern: pattern.to_string(),
            ignore_case: false,
            since: None,
            until: None,
            deleted_only: false,
            limit: 0,
        }
    }

    /// The limit in force.
    pub fn effective_limit(&self) -> usize {
        match self.limit {
            0 => FIND_LIMIT as usize,
            n => n.min(FIND_LIMIT) as usize,
        }
    }
}

/// One path found, with when it existed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindHit {
    /// The path (absolute, or `dumps/...`).
    #[serde(with = "serde_bytes")]
    pub path: Vec<u8>,
    /// Its kind in its last version in the range (`None` for a dump).
    pub kind: Option<FileKind>,
    /// Its size in that version.
    pub size: u64,
    /// When it appeared: the start of its first stretch of existence that
    /// reaches into the range (possibly before the range).
    pub first_seen: Timestamp,
    /// When it stopped existing: the end of its last stretch of existence
    /// that reaches into the range (its deletion, or its directory's, was
    /// observed then); `None` when that stretch goes on to now.
    pub last_seen: Option<Timestamp>,
    /// When its last version in the range was observed: restoring at this
    /// moment brings back what it last held in the range.
    pub last_version: Timestamp,
    /// Whether it exists now (it may have come back after the range).
    pub exists_now: bool,
}

/// The answer to a [`FindQuery`]: hits sorted by path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindReply {
    /// What was found.
    pub hits: Vec<FindHit>,
    /// True when the limit cut the list short.
    pub truncated: bool,
}

/// How many versions were observed in windows of `width` nanoseconds,
/// below `path`, between `from` and `to` (inclusive).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityQuery {
    /// Count versions of this path and below (`/`: every protected file,
    /// dumps left out; `dumps`: the dumps).
    #[serde(with = "serde_bytes")]
    pub path: Vec<u8>,
    /// The first moment counted.
    pub from: Timestamp,
    /// The last moment counted.
    pub to: Timestamp,
    /// Window width in nanoseconds (at least 1).
    pub width: i64,
}

/// The versions observed in one window `(end - width, end]`, `end` a
/// multiple of the width: looking at the tree at `end` shows every one of
/// them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityBucket {
    /// The window's end.
    pub end: Timestamp,
    /// Versions (changes, deletions included) observed in it.
    pub changes: u64,
}

/// The end of the window of `width` that holds `t`: the first multiple of
/// `width` at or after `t`.
pub fn bucket_end(t: Timestamp, width: i64) -> Timestamp {
    let w = width.max(1);
    let floor = t.0.div_euclid(w).saturating_mul(w);
    if floor == t.0 {
        t
    } else {
        Timestamp(floor.saturating_add(w))
    }
}

/// Count `times` (sorted) into windows (see [`ActivityBucket`]); `Err` when
/// there would be more than [`MAX_BUCKETS`].
pub fn buckets(
    times: impl IntoIterator<Item = (Timestamp, u64)>,
    width: i64,
) -> Result<Vec<ActivityBucket>, String> {
    let mut out: Vec<ActivityBucket> = Vec::new();
    for (t, n) in times {
        let end = bucket_end(t, width);
        match out.last_mut() {
            Some(b) if b.end == end => b.changes += n,
            _ => {
                if out.len() == MAX_BUCKETS {
                    return Err(format!(
                        "more than {MAX_BUCKETS} windows of activity: ask for a shorter range or wider windows"
                    ));
                }
                out.push(ActivityBucket { end, changes: n })
            }
        }
    }
    Ok(out)
}

/// A stretch of time `[start, end)`; `end` is [`Timestamp::MAX`] while it
/// lasts.
pub type Interval = (Timestamp, Timestamp);

/// When a path existed by its own versions (sorted by seq, as a repository
/// holds them): the stretches in which the version in force (the newest by
/// seq observed at or before the moment) is present, or with `dirs_only`,
/// is a directory. Ancestors are not considered here (see
/// [`intersect`]).
pub fn presence<V: Stamped>(versions: &[V], dirs_only: bool) -> Vec<Interval> {
    let mut order: Vec<usize> = (0..versions.len()).collect();
    order.sort_by_key(|&i| versions[i].observed_at());
    let mut out = Vec::new();
    let mut cur: Option<usize> = None;
    let mut open: Option<Timestamp> = None;
    let mut k = 0;
    while k < order.len() {
        let t = versions[order[k]].observed_at();
        while k < order.len() && versions[order[k]].observed_at() == t {
            let i = order[k];
            if cur.is_none_or(|c| versions[i].seq() > versions[c].seq()) {
                cur = Some(i);
            }
            k += 1;
        }
        let v = &versions[cur.expect("set above")];
        let present = if dirs_only { v.is_dir() } else { v.present() };
        match (present, open) {
            (true, None) => open = Some(t),
            (false, Some(s)) => {
                out.push((s, t));
                open = None;
            }
            _ => {}
        }
    }
    if let Some(s) = open {
        out.push((s, Timestamp::MAX));
    }
    out
}

/// The stretches in both `a` and `b` (each sorted and disjoint).
pub fn intersect(a: &[Interval], b: &[Interval]) -> Vec<Interval> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let s = a[i].0.max(b[j].0);
        let e = a[i].1.min(b[j].1);
        if s < e {
            out.push((s, e));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// The version in force at `at` (newest by seq observed at or before it).
pub fn in_force<V: Stamped>(versions: &[V], at: Timestamp) -> Option<&V> {
    versions
        .iter()
        .filter(|v| v.observed_at() <= at)
        .max_by_key(|v| v.seq())
}

/// What [`presence`] and [`in_force`] need of a version: its order, its
/// time, and what it says about its path. A repository's index may hold
/// versions in a compact form of its own.
pub trait Stamped {
    /// The version's seq.
    fn seq(&self) -> u64;
    /// When it was observed.
    fn observed_at(&self) -> Timestamp;
    /// False for a tombstone.
    fn present(&self) -> bool;
    /// True for a directory.
    fn is_dir(&self) -> bool;
}

impl Stamped for Version {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn observed_at(&self) -> Timestamp {
        self.observed_at
    }
    fn present(&self) -> bool {
        !self.is_tombstone()
    }
    fn is_dir(&self) -> bool {
        self.meta().is_some_and(|m| m.kind == FileKind::Dir)
    }
}

/// A `rewind find` pattern, compiled.
///
/// - With a glob character (`*`, `?`, `[`, `{`) it is a glob, otherwise a
///   substring.
/// - Without a `/` it is matched against the last component (the name);
///   with one, against the whole path, a glob not starting with `/` being
///   anchored anywhere (`docs/*.txt` is `**/docs/*.txt`).
/// - In a glob `*` and `?` never match `/`; `**` does.
#[derive(Clone, Debug)]
pub struct PathPattern {
    how: How,
    whole_path: bool,
    ignore_case: bool,
}

#[derive(Clone, Debug)]
enum How {
    Glob(globset::GlobMatcher),
    Substring(Vec<u8>),
}

/// A pattern that is not a valid glob.
#[derive(Debug, thiserror::Error)]
#[error("bad pattern {pattern:?}: {reason}")]
pub struct PatternError {
    /// The pattern as given.
    pub pattern: String,
    /// What is wrong.
    pub reason: String,
}

const GLOB_CHARS: &[char] = &['*', '?', '[', ']', '{', '}'];

impl PathPattern {
    /// Compile `pattern` (see the type's documentation).
    pub fn new(pattern: &str, ignore_case: bool) -> Result<PathPattern, PatternError> {
        let whole_path = pattern.contains('/');
        let how = if pattern.contains(GLOB_CHARS) {
            let full = if whole_path && !pattern.starts_with('/') && !pattern.starts_with("**") {
                format!("**/{pattern}")
            } else {
                pattern.to_string()
            };
            let glob = globset::GlobBuilder::new(&full)
                .literal_separator(true)
                .backslash_escape(true)
                .case_insensitive(ignore_case)
                .build()
                .map_err(|e| PatternError {
                    pattern: pattern.to_string(),
                    reason: e.kind().to_string(),
                })?;
            How::Glob(glob.compile_matcher())
        } else if ignore_case {
            How::Substring(fold(pattern.as_bytes()))
        } else {
            How::Substring(pattern.as_bytes().to_vec())
        };
        Ok(PathPattern {
            how,
            whole_path,
            ignore_case,
        })
    }

    /// True when the pattern is a glob, false for a substring.
    pub fn is_glob(&self) -> bool {
        matches!(self.how, How::Glob(_))
    }

    /// Whether `path` (absolute, raw bytes) matches.
    pub fn is_match(&self, path: &[u8]) -> bool {
        let subject = if self.whole_path {
            path
        } else {
            match path.iter().rposition(|&b| b == b'/') {
                Some(i) => &path[i + 1..],
                None => path,
            }
        };
        match &self.how {
            How::Glob(g) => g.is_match(Path::new(OsStr::from_bytes(subject))),
            How::Substring(needle) if self.ignore_case => contains(&fold(subject), needle),
            How::Substring(needle) => contains(subject, needle),
        }
    }
}

/// Lower case for matching: Unicode-aware for UTF-8, ASCII otherwise.
fn fold(b: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_lowercase().into_bytes(),
        Err(_) => b.to_ascii_lowercase(),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Entry, FileMeta};

    fn v(seq: u64, t: i64, kind: Option<FileKind>) -> Version {
        Version {
            client: "c".into(),
            seq,
            observed_at: Timestamp(t),
            path: b"/p".to_vec(),
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

    const MAX: Timestamp = Timestamp::MAX;

    #[test]
    fn presence_follows_the_version_in_force() {
        let f = Some(FileKind::File);
        let vs = [v(1, 10, f), v(2, 20, f), v(3, 30, None), v(4, 40, f)];
        assert_eq!(
            presence(&vs, false),
            vec![(Timestamp(10), Timestamp(30)), (Timestamp(40), MAX)]
        );
        assert!(presence(&vs, true).is_empty(), "never a directory");
        // Seq decides between versions of one moment.
        let vs = [v(1, 10, f), v(2, 10, None)];
        assert!(presence(&vs, false).is_empty());
    }

    #[test]
    fn intersections() {
        let a = [(Timestamp(0), Timestamp(10)), (Timestamp(20), MAX)];
        let b = [(Timestamp(5), Timestamp(25))];
        assert_eq!(
            intersect(&a, &b),
            vec![
                (Timestamp(5), Timestamp(10)),
                (Timestamp(20), Timestamp(25))
            ]
        );
        assert!(intersect(&a, &[]).is_empty());
    }

    #[test]
    fn windows_end_at_the_first_multiple_at_or_after() {
        assert_eq!(bucket_end(Timestamp(10), 10), Timestamp(10));
        assert_eq!(bucket_end(Timestamp(11), 10), Timestamp(20));
        assert_eq!(bucket_end(Timestamp(-5), 10), Timestamp(0));
        let b = buckets(
            [(Timestamp(1), 1), (Timestamp(10), 2), (Timestamp(11), 1)],
            10,
        )
        .unwrap();
        assert_eq!(
            b,
            vec![
                ActivityBucket {
                    end: Timestamp(10),
                    changes: 3
                },
                ActivityBucket {
                    end: Timestamp(20),
                    changes: 1
                }
            ]
        );
    }

    #[test]
    fn patterns_are_globs_or_substrings_on_names_or_paths() {
        let m = |p: &str, ic: bool, path: &str| {
            PathPattern::new(p, ic).unwrap().is_match(path.as_bytes())
        };
        assert!(m("*.txt", false, "/h/docs/a.txt"));
        assert!(!m("*.txt", false, "/h/a.txt/b.rs"));
        assert!(m("report", false, "/h/docs/old-report.pdf"));
        assert!(
            !m("report", false, "/h/report/x.pdf"),
            "names only without a slash"
        );
        assert!(
            m("report/", false, "/h/report/x.pdf"),
            "a slash matches the whole path"
        );
        assert!(m("docs/*.txt", false, "/h/docs/a.txt"));
        assert!(!m("docs/*.txt", false, "/h/docs/sub/a.txt"));
        assert!(m("docs/**/*.txt", false, "/h/docs/sub/a.txt"));
        assert!(m("/h/*/a.txt", false, "/h/docs/a.txt"));
        assert!(m("README", true, "/h/readme.md"));
        assert!(!m("README", false, "/h/readme.md"));
        assert!(m("*.MD", true, "/h/readme.md"));
        assert!(m("ÉTÉ", true, "/h/été.txt"));
        assert!(m("", false, "/anything"));
        assert!(m("\\*", false, "/h/*"), "an escaped star is literal");
        assert!(!m("\\*", false, "/h/x"));
        assert!(PathPattern::new("[", false).is_err());
        assert!(PathPattern::new("*.txt", false).unwrap().is_glob());
        assert!(!PathPattern::new("txt", false).unwrap().is_glob());
        // Names that are not UTF-8 still match.
        assert!(
            PathPattern::new("*.bin", false)
                .unwrap()
                .is_match(b"/h/\xff.bin")
        );
        assert!(PathPattern::new("\u{fffd}", false).is_ok());
    }
}
