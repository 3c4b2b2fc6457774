//! The history queries over the in-memory version index: `find` (which
//! paths matched, and when they existed) and `activity` (how many versions
//! were observed when). See `rewind_core::history` for the definitions.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use rewind_core::Timestamp;
use rewind_core::history::{
    self, ActivityBucket, ActivityQuery, FindHit, FindQuery, FindReply, Interval, PathPattern,
};

use super::{ClientIndex, State, normalize, parent};

impl State {
    /// The paths below `q.base` that match `pattern` and existed at some
    /// moment of the range, in path order (see `Repository::find`).
    pub(crate) fn find(&self, client: &str, q: &FindQuery, pattern: &PathPattern) -> FindReply {
        let Some(ci) = self.clients.get(client) else {
            return FindReply::default();
        };
        let base = normalize(&q.base);
        let since = q.since.unwrap_or(Timestamp(i64::MIN));
        let until = q.until.unwrap_or(Timestamp::MAX);
        let limit = q.effective_limit();
        let mut dirs = DirPresence::new(ci);
        let mut out = FindReply::default();
        for (p, vs) in ci.below(base) {
            if !pattern.is_match(p) {
                continue;
            }
            let own = history::presence(vs, false);
            let alive = match nearest_recorded_ancestor(ci, p) {
                Some(a) => history::intersect(&own, &dirs.of(a)),
                None => own,
            };
            let Some(last) = alive
                .iter()
                .rev()
                .find(|(s, e)| *s <= until && *e > since)
                .copied()
            else {
                continue;
            };
            let exists_now = alive.last().is_some_and(|iv| iv.1 == Timestamp::MAX);
            if q.deleted_only && exists_now {
                continue;
            }
            let first = alive
                .iter()
                .find(|(s, e)| *s <= until && *e > since)
                .copied()
                .expect("`last` is one");
            // The last moment of the range at which it existed; the
            // version in force then is present (its stretch says so).
            let moment = until.min(Timestamp(last.1.0.saturating_sub(1)));
            let Some(h) = history::in_force(vs, moment) else {
                continue;
            };
            let v = h.version(client, p);
            if out.hits.len() == limit {
                out.truncated = true;
                break;
            }
            out.hits.push(FindHit {
                path: p.clone(),
                kind: v.meta().map(|m| m.kind),
                size: v.size(),
                first_seen: first.0,
                last_seen: (last.1 != Timestamp::MAX).then_some(last.1),
                last_version: v.observed_at,
                exists_now,
            });
        }
        out
    }

    /// Versions below `q.path` observed in `q.from..=q.to`, counted in
    /// windows of `q.width` (see `Repository::activity`).
    pub(crate) fn activity(
        &self,
        client: &str,
        q: &ActivityQuery,
    ) -> Result<Vec<ActivityBucket>, String> {
        if q.width < 1 {
            return Err(format!("activity windows of {} ns", q.width));
        }
        let Some(ci) = self.clients.get(client) else {
            return Ok(Vec::new());
        };
        if q.from > q.to {
            return Ok(Vec::new());
        }
        let path = normalize(&q.path);
        if path == b"/" {
            let times = ci.times.range(q.from..=q.to).map(|(t, n)| (*t, *n));
            return history::buckets(times, q.width);
        }
        let mut times: BTreeMap<Timestamp, u64> = BTreeMap::new();
        for (_, vs) in ci.below(path) {
            for h in vs {
                if (q.from..=q.to).contains(&h.observed_at) {
                    *times.entry(h.observed_at).or_default() += 1;
                }
            }
        }
        history::buckets(times, q.width)
    }
}

/// The nearest ancestor of `p` that has versions.
fn nearest_recorded_ancestor<'a>(ci: &ClientIndex, p: &'a [u8]) -> Option<&'a [u8]> {
    let mut q = parent(p);
    while let Some(a) = q {
        if ci.paths.contains_key(a) {
            return Some(a);
        }
        q = parent(a);
    }
    None
}

/// When each recorded directory existed as a directory, its own recorded
/// ancestors considered, computed once per directory of a query.
struct DirPresence<'a> {
    ci: &'a ClientIndex,
    memo: HashMap<Vec<u8>, Rc<Vec<Interval>>>,
}

impl<'a> DirPresence<'a> {
    fn new(ci: &'a ClientIndex) -> Self {
        DirPresence {
            ci,
            memo: HashMap::new(),
        }
    }

    /// `dir` must have versions.
    fn of(&mut self, dir: &[u8]) -> Rc<Vec<Interval>> {
        if let Some(iv) = self.memo.get(dir) {
            return iv.clone();
        }
        let own = self
            .ci
            .paths
            .get(dir)
            .map(|vs| history::presence(vs, true))
            .unwrap_or_default();
        let alive = match nearest_recorded_ancestor(self.ci, dir) {
            Some(a) => history::intersect(&own, &self.of(a)),
            None => own,
        };
        let alive = Rc::new(alive);
        self.memo.insert(dir.to_vec(), alive.clone());
        alive
    }
}
