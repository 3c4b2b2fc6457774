//! Retention: which points in time a repository keeps, and which versions
//! that keeps (docs/decisions.md, "Retention").
//!
//! A [`Policy`] is a list of rules, newest first, each applying up to an
//! *age* (`now - t`): `all 24h, hourly 7d, daily 30d, weekly` keeps every
//! moment of the last 24 hours, then one point per hour up to 7 days old,
//! one per day up to 30 days, one per week forever. Forms: `all D`,
//! `every I for D`, `every I` (no end), the names `hourly`, `daily`,
//! `weekly` (`every 1h`, `1d`, `7d`) and `monthly` (calendar months),
//! each optionally followed by an age; for dump series also `last N`.
//! Durations take `s`, `m`, `h`, `d` and `w` (`every 10s for 1m`).
//!
//! What forgetting keeps, per client and scope ([`Scope`]: the files of a
//! client, or one dump series):
//! - everything at or after `thinned_before = now - D(all)` stays whole;
//! - below it, *kept points*: a bucket of `every I` is aligned to a
//!   multiple of `I` since the Unix epoch in UTC (a calendar month for
//!   `monthly`), so a coarser rule's bucket ends are among a finer one's
//!   (weekly ⊂ daily ⊂ hourly); the point of a bucket is the newest moment
//!   still available in it, which for a bucket that was whole is its end
//!   minus 1 ns (the state just before the next bucket begins);
//! - a version is kept iff it was the live one of its path (from its time
//!   to the next version's time) at a kept point, at a pin, or at any
//!   moment at or after `thinned_before`. So the newest version of every
//!   path, tombstones included, is never removed ("now" counts), and every
//!   kept point restores as the exact state it was.
//! - A later forget only removes points or moves `thinned_before` forward:
//!   points are chosen among the old points and the moments that were
//!   still whole, never below the old `thinned_before`, so nothing that
//!   was forgotten (and perhaps pruned) can come back, even when the
//!   policy is made finer.
//! - A query at `T < thinned_before` snaps to the newest kept point (or
//!   pin) at or before `T` ([`Scope::snap`]).
//!
//! Pure code: no I/O; times come in as arguments, so tests drive it on
//! synthetic timelines.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Timestamp;

const NS: i64 = 1_000_000_000;
const HOUR: i64 = 3600 * NS;
const DAY: i64 = 24 * HOUR;
const WEEK: i64 = 7 * DAY;

/// A length of time in nanoseconds (an age or an interval).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Span(pub i64);

impl Span {
    /// Parse `10s`, `5m`, `24h`, `30d`, `2w` (a whole number and a unit).
    pub fn parse(s: &str) -> Result<Span, PolicyError> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| PolicyError::new(format!("{s:?} has no unit (s, m, h, d or w)")))?;
        let (num, unit) = s.split_at(split);
        let n: i64 = num
            .parse()
            .map_err(|_| PolicyError::new(format!("{s:?} is not a number and a unit")))?;
        let mul = match unit {
            "s" => NS,
            "m" => 60 * NS,
            "h" => HOUR,
            "d" => DAY,
            "w" => WEEK,
            _ => {
                return Err(PolicyError::new(format!(
                    "{s:?}: unknown unit {unit:?} (use s, m, h, d or w)"
                )));
            }
        };
        if n <= 0 {
            return Err(PolicyError::new(format!("{s:?} must be more than zero")));
        }
        n.checked_mul(mul)
            .map(Span)
            .ok_or_else(|| PolicyError::new(format!("{s:?} is too long")))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        // A day is said in hours (`all 24h`), longer spans in days.
        for (unit, len) in [("d", DAY), ("h", HOUR), ("m", 60 * NS)] {
            if n % len == 0 && (len != DAY || n > DAY) {
                return write!(f, "{}{unit}", n / len);
            }
        }
        if n % NS == 0 {
            write!(f, "{}s", n / NS)
        } else {
            write!(f, "{}ns", n)
        }
    }
}

/// The buckets of an `every` rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Interval {
    /// Fixed length, aligned to multiples of it since the Unix epoch (UTC).
    Fixed(Span),
    /// Calendar months in UTC.
    Month,
}

impl Interval {
    /// The bucket `[start, end)` holding `t`.
    pub fn bucket(self, t: Timestamp) -> (Timestamp, Timestamp) {
        match self {
            Interval::Fixed(Span(len)) => {
                let start = t.0.div_euclid(len).saturating_mul(len);
                (Timestamp(start), Timestamp(start.saturating_add(len)))
            }
            Interval::Month => {
                let d = t.to_jiff().to_zoned(jiff::tz::TimeZone::UTC).date();
                let first = jiff::civil::date(d.year(), d.month(), 1);
                let next = if d.month() == 12 {
                    jiff::civil::date(d.year() + 1, 1, 1)
                } else {
                    jiff::civil::date(d.year(), d.month() + 1, 1)
                };
                let ts = |c: jiff::civil::Date| {
                    c.to_zoned(jiff::tz::TimeZone::UTC)
                        .map(|z| Timestamp::from_jiff(z.timestamp()))
                        .unwrap_or(Timestamp::MAX)
                };
                (ts(first), ts(next))
            }
        }
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Interval::Fixed(s) => write!(f, "{s}"),
            Interval::Month => write!(f, "1 month"),
        }
    }
}

/// One rule of a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rule {
    /// Every moment, up to this age.
    All(Span),
    /// One point per bucket, up to the age `until` (forever when `None`).
    Every {
        /// The buckets.
        interval: Interval,
        /// The age up to which the rule applies.
        until: Option<Span>,
    },
    /// The newest N successful runs (dump series only).
    Last(u32),
}

/// A policy that does not parse or does not make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("retention policy: {reason}")]
pub struct PolicyError {
    reason: String,
}

impl PolicyError {
    fn new(reason: impl Into<String>) -> PolicyError {
        PolicyError {
            reason: reason.into(),
        }
    }
}

/// A retention policy (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The rules, newest first, their ages increasing.
    pub rules: Vec<Rule>,
}

/// The default policy of a client's files: every moment of the last day,
/// hourly for a week, daily for a month, weekly forever (Time Machine's
/// shape, with a whole day instead of its hour: a desktop user notices a
/// mistake within a day).
pub const DEFAULT_POLICY: &str = "all 24h, hourly 7d, daily 30d, weekly";

/// The default policy of a dump job: the last 14 successful runs, and one
/// per week for 3 months (issue 17).
pub const DEFAULT_DUMP_POLICY: &str = "last 14, weekly 13w";

impl Policy {
    /// Parse a policy of a client's files (`last N` refused).
    pub fn parse(s: &str) -> Result<Policy, PolicyError> {
        let p = Self::parse_any(s)?;
        if p.rules.iter().any(|r| matches!(r, Rule::Last(_))) {
            return Err(PolicyError::new(
                "`last N` keeps runs of a dump job; a policy of files keeps points in time",
            ));
        }
        Ok(p)
    }

    /// Parse a policy of a dump series (`last N` allowed, `all` too).
    pub fn parse_series(s: &str) -> Result<Policy, PolicyError> {
        Self::parse_any(s)
    }

    /// The default of a client's files ([`DEFAULT_POLICY`]).
    pub fn default_files() -> Policy {
        Policy::parse(DEFAULT_POLICY).expect("the default policy parses")
    }

    /// The default of a dump series ([`DEFAULT_DUMP_POLICY`]).
    pub fn default_series() -> Policy {
        Policy::parse_series(DEFAULT_DUMP_POLICY).expect("the default dump policy parses")
    }

    fn parse_any(s: &str) -> Result<Policy, PolicyError> {
        let mut rules = Vec::new();
        for item in s.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(PolicyError::new(format!("{s:?}: an empty rule")));
            }
            rules.push(parse_rule(item)?);
        }
        let p = Policy { rules };
        p.check()?;
        Ok(p)
    }

    /// Refuse rules out of order: `all` first, `last` anywhere, ages
    /// strictly increasing, only the last rule without an end.
    fn check(&self) -> Result<(), PolicyError> {
        let mut age = Span(0);
        let mut open = false;
        for (i, r) in self.rules.iter().enumerate() {
            let until = match *r {
                Rule::Last(0) => return Err(PolicyError::new("`last 0` keeps nothing")),
                Rule::Last(_) => continue,
                Rule::All(d) => {
                    if i > 0 && self.rules[..i].iter().any(|r| !matches!(r, Rule::Last(_))) {
                        return Err(PolicyError::new("`all` can only be the first rule"));
                    }
                    Some(d)
                }
                Rule::Every { until, .. } => until,
            };
            if open {
                return Err(PolicyError::new(
                    "only the last rule may apply forever (give the others an age: `hourly 7d`)",
                ));
            }
            match until {
                Some(u) if u <= age => {
                    return Err(PolicyError::new(format!(
                        "rule {} ends at age {u}, not after the rule before it ({age}); \
                         list rules newest first with increasing ages",
                        i + 1
                    )));
                }
                Some(u) => age = u,
                None => open = true,
            }
            if let Rule::Every {
                interval: Interval::Fixed(iv),
                until: Some(u),
            } = *r
                && iv > u
            {
                return Err(PolicyError::new(format!(
                    "rule {}: an interval of {iv} is longer than its age {u}",
                    i + 1
                )));
            }
        }
        Ok(())
    }

    /// The `all` window, if the policy has one.
    pub fn all_window(&self) -> Option<Span> {
        self.rules.iter().find_map(|r| match r {
            Rule::All(d) => Some(*d),
            _ => None,
        })
    }

    /// `last N`, if the policy has it.
    pub fn last(&self) -> Option<u32> {
        self.rules.iter().find_map(|r| match r {
            Rule::Last(n) => Some(*n),
            _ => None,
        })
    }

    /// The `every` rules with the age range `[from, until)` each covers.
    fn windows(&self) -> Vec<(Interval, Span, Option<Span>)> {
        let mut out = Vec::new();
        let mut from = self.all_window().unwrap_or(Span(0));
        for r in &self.rules {
            if let Rule::Every { interval, until } = *r {
                out.push((interval, from, until));
                if let Some(u) = until {
                    from = u;
                }
            }
        }
        out
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match r {
                Rule::All(d) => write!(f, "all {d}")?,
                Rule::Last(n) => write!(f, "last {n}")?,
                Rule::Every { interval, until } => {
                    let name = match interval {
                        Interval::Fixed(Span(HOUR)) => Some("hourly"),
                        Interval::Fixed(Span(DAY)) => Some("daily"),
                        Interval::Fixed(Span(WEEK)) => Some("weekly"),
                        Interval::Month => Some("monthly"),
                        Interval::Fixed(_) => None,
                    };
                    match (name, until) {
                        (Some(n), Some(u)) => write!(f, "{n} {u}")?,
                        (Some(n), None) => f.write_str(n)?,
                        (None, Some(u)) => write!(f, "every {interval} for {u}")?,
                        (None, None) => write!(f, "every {interval}")?,
                    }
                }
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for Policy {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Policy, PolicyError> {
        Policy::parse(s)
    }
}

fn parse_rule(item: &str) -> Result<Rule, PolicyError> {
    let words: Vec<&str> = item.split_whitespace().collect();
    let bad = || {
        PolicyError::new(format!(
            "cannot read rule {item:?}: use `all D`, `every I for D`, `every I`, \
             `hourly|daily|weekly|monthly [D]` or `last N` (D and I like 10s, 5m, 24h, 30d, 2w)"
        ))
    };
    let named = |interval: Interval, rest: &[&str]| -> Result<Rule, PolicyError> {
        match rest {
            [] => Ok(Rule::Every {
                interval,
                until: None,
            }),
            [d] | ["for", d] => Ok(Rule::Every {
                interval,
                until: Some(Span::parse(d)?),
            }),
            _ => Err(bad()),
        }
    };
    match words.as_slice() {
        ["all", d] => Ok(Rule::All(Span::parse(d)?)),
        ["last", n] => n.parse().map(Rule::Last).map_err(|_| bad()),
        ["every", i, rest @ ..] => match rest {
            [] => named(Interval::Fixed(Span::parse(i)?), &[]),
            ["for", d] => named(Interval::Fixed(Span::parse(i)?), &[d]),
            _ => Err(bad()),
        },
        ["hourly", rest @ ..] => named(Interval::Fixed(Span(HOUR)), rest),
        ["daily", rest @ ..] => named(Interval::Fixed(Span(DAY)), rest),
        ["weekly", rest @ ..] => named(Interval::Fixed(Span(WEEK)), rest),
        ["monthly", rest @ ..] => named(Interval::Month, rest),
        _ => Err(bad()),
    }
}

/// What is kept of one scope (a client's files, or one dump series):
/// everything at or after `thinned_before`, and below it the state at
/// each kept point. `thinned_before: None` means nothing was ever
/// forgotten.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// Everything at or after this moment is kept whole.
    pub thinned_before: Option<Timestamp>,
    /// Kept points, all before `thinned_before`.
    pub points: BTreeSet<Timestamp>,
}

/// Which point a query at some time uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryPoint {
    /// The time asked for.
    pub asked: Timestamp,
    /// The time whose state is answered: `asked` itself where the history
    /// is whole, else the newest kept point at or before it; `None` when
    /// nothing kept is that old.
    pub used: Option<Timestamp>,
    /// Where the history stops being whole (`None`: never thinned).
    pub thinned_before: Option<Timestamp>,
}

impl QueryPoint {
    /// A query on a history that was never thinned.
    pub fn exact(at: Timestamp) -> QueryPoint {
        QueryPoint {
            asked: at,
            used: Some(at),
            thinned_before: None,
        }
    }

    /// True when the answer is for another time than the one asked.
    pub fn snapped(&self) -> bool {
        self.used != Some(self.asked)
    }
}

impl Scope {
    /// True when a version live over `[start, end)` (`end: None` for the
    /// newest) is kept: live at or after `thinned_before`, or at one of
    /// `points` or `pins`.
    pub fn keeps(
        &self,
        start: Timestamp,
        end: Option<Timestamp>,
        pins: &BTreeSet<Timestamp>,
    ) -> bool {
        let Some(tb) = self.thinned_before else {
            return true;
        };
        let Some(end) = end else {
            return true;
        };
        if end > tb {
            return true;
        }
        if end <= start {
            return false;
        }
        let hit = |s: &BTreeSet<Timestamp>| s.range(start..end).next().is_some();
        hit(&self.points) || hit(pins)
    }

    /// The point a query at `at` uses (see [`QueryPoint`]).
    pub fn snap(&self, at: Timestamp, pins: &BTreeSet<Timestamp>) -> QueryPoint {
        let used = match self.thinned_before {
            Some(tb) if at < tb => {
                let a = self.points.range(..=at).next_back().copied();
                let b = pins.range(..=at).next_back().copied();
                a.max(b)
            }
            _ => Some(at),
        };
        QueryPoint {
            asked: at,
            used,
            thinned_before: self.thinned_before,
        }
    }

    /// The scope `policy` leaves at `now` of this one, for a client's
    /// files. `changes` are the times of versions (any order, duplicates
    /// allowed); only those at or after the current `thinned_before` count
    /// (below it only the kept points remain). A point is only ever chosen
    /// among the current points and the moments that are still whole, and
    /// only where some version or point lies in its bucket (a bucket with
    /// no change holds the state of an earlier point).
    pub fn thin(&self, policy: &Policy, now: Timestamp, changes: &[Timestamp]) -> Scope {
        let all = policy.all_window().unwrap_or(Span(0));
        let wanted = Timestamp(now.0.saturating_sub(all.0));
        let old_tb = self.thinned_before;
        let tb = old_tb.map_or(wanted, |o| o.max(wanted));
        let mut events: Vec<Timestamp> = changes
            .iter()
            .copied()
            .filter(|t| old_tb.is_none_or(|o| *t >= o) && *t < tb)
            .chain(self.points.iter().copied())
            .collect();
        events.sort_unstable();
        events.dedup();
        // `all D` keeps every moment still available younger than D:
        // points below the line that are that young (the window was made
        // longer) stay.
        let mut points: BTreeSet<Timestamp> = self.points.range(wanted..).copied().collect();
        for (interval, from, until) in policy.windows() {
            // Ages [from, until) are the times (now - until, now - from].
            let newest = Timestamp(now.0.saturating_sub(from.0));
            let oldest = until.map(|u| Timestamp(now.0.saturating_sub(u.0)));
            let mut last_bucket = None;
            for &e in &events {
                let (start, end) = interval.bucket(e);
                if last_bucket == Some(start) {
                    continue;
                }
                last_bucket = Some(start);
                let Some(p) = self.newest_in(start, end, tb) else {
                    continue;
                };
                if p <= newest && oldest.is_none_or(|o| p > o) {
                    points.insert(p);
                }
            }
        }
        Scope {
            thinned_before: Some(tb),
            points,
        }
    }

    /// The newest moment of `[start, end)` below `tb` that is still
    /// available: an existing point, or a moment that is still whole.
    fn newest_in(&self, start: Timestamp, end: Timestamp, tb: Timestamp) -> Option<Timestamp> {
        let top = end.min(tb);
        let whole_from = self.thinned_before.map_or(start, |o| o.max(start));
        let whole =
            (Timestamp(top.0 - 1) >= whole_from && top > start).then(|| Timestamp(top.0 - 1));
        let old = self.points.range(start..top).next_back().copied();
        whole.max(old)
    }

    /// The scope `policy` leaves at `now` of this one, for a series of
    /// runs (a dump job): `runs` are the times of the runs still stored and
    /// whether each succeeded, oldest first. Kept: the newest `last N`
    /// successful runs, the newest successful run of each bucket of each
    /// `every` rule within its ages, every run of the `all` window, and
    /// every run from the newest successful one on (the failures since then
    /// are kept to show what goes wrong, but a failed run never counts as a
    /// kept one). With no successful run, the last N runs are kept.
    pub fn thin_series(
        &self,
        policy: &Policy,
        now: Timestamp,
        runs: &[(Timestamp, bool)],
    ) -> Scope {
        let last = policy.last().unwrap_or(1).max(1) as usize;
        let ok: Vec<Timestamp> = runs.iter().filter(|r| r.1).map(|r| r.0).collect();
        let mut wanted = match ok.last() {
            Some(t) => *t,
            None if runs.len() > last => runs[runs.len() - last].0,
            None => runs.first().map_or(now, |r| r.0),
        };
        if let Some(all) = policy.all_window() {
            wanted = wanted.min(Timestamp(now.0.saturating_sub(all.0)));
        }
        let tb = self.thinned_before.map_or(wanted, |o| o.max(wanted));
        let mut points: BTreeSet<Timestamp> = ok
            .iter()
            .rev()
            .take(last)
            .copied()
            .filter(|t| *t < tb)
            .collect();
        for (interval, from, until) in policy.windows() {
            let newest = Timestamp(now.0.saturating_sub(from.0));
            let oldest = until.map(|u| Timestamp(now.0.saturating_sub(u.0)));
            let mut prev: Option<(Timestamp, Timestamp)> = None;
            for &t in ok.iter().rev() {
                let b = interval.bucket(t);
                if prev.is_some_and(|p| p.0 == b.0) {
                    continue;
                }
                prev = Some(b);
                if t < tb && t <= newest && oldest.is_none_or(|o| t > o) {
                    points.insert(t);
                }
            }
        }
        Scope {
            thinned_before: Some(tb),
            points,
        }
    }

    /// Drop the `n` oldest points (a space rule): the newest state, at or
    /// after `thinned_before`, is never touched.
    pub fn drop_oldest(&mut self, n: usize) -> Vec<Timestamp> {
        let gone: Vec<Timestamp> = self.points.iter().take(n).copied().collect();
        for t in &gone {
            self.points.remove(t);
        }
        gone
    }
}

/// For each of `times` (one path's versions in seq order), the end of the
/// span during which it is the path's live version: the earliest time of
/// any later version (`None` for the last). A point-in-time query at `T`
/// answers the newest version by seq whose time is at or before `T`, so a
/// version is live over `[time, end)`.
pub fn live_ends(times: &[Timestamp]) -> Vec<Option<Timestamp>> {
    let mut out = vec![None; times.len()];
    let mut min: Option<Timestamp> = None;
    for i in (0..times.len()).rev() {
        out[i] = min;
        min = Some(min.map_or(times[i], |m| m.min(times[i])));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp(secs * NS)
    }

    #[test]
    fn parses_the_default_and_general_forms() {
        let p = Policy::parse(DEFAULT_POLICY).unwrap();
        assert_eq!(p.to_string(), DEFAULT_POLICY);
        assert_eq!(p.all_window(), Some(Span(DAY)));
        let p = Policy::parse("every 10s for 1m, every 1m for 10m, every 5m").unwrap();
        assert_eq!(
            p.to_string(),
            "every 10s for 1m, every 1m for 10m, every 5m"
        );
        let p = Policy::parse("all 30s,  every 10s for 2m").unwrap();
        assert_eq!(p.rules.len(), 2);
        assert_eq!(Policy::parse("monthly").unwrap().to_string(), "monthly");
        assert_eq!(
            Policy::parse("daily for 2w").unwrap().to_string(),
            "daily 14d"
        );
        let s = Policy::parse_series(DEFAULT_DUMP_POLICY).unwrap();
        assert_eq!(s.last(), Some(14));
    }

    #[test]
    fn refuses_nonsense() {
        for bad in [
            "",
            "all",
            "all 0s",
            "all 24",
            "every",
            "every 1h for",
            "hourly 7d, all 24h",
            "daily 30d, hourly 7d",
            "weekly, daily 30d",
            "every 1d for 1h",
            "yearly",
            "all 24h,",
            "last 3",
            "every 3x",
        ] {
            assert!(Policy::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Policy::parse_series("last 0").is_err());
        assert!(Policy::parse_series("last 3, weekly 13w").is_ok());
    }

    #[test]
    fn buckets_nest_weekly_in_daily_in_hourly() {
        let h = Interval::Fixed(Span(HOUR));
        let d = Interval::Fixed(Span(DAY));
        let w = Interval::Fixed(Span(WEEK));
        for s in [0i64, 12345, 86400 * 9 + 7, 1_790_000_000] {
            let (_, we) = w.bucket(t(s));
            let (_, de) = d.bucket(Timestamp(we.0 - 1));
            let (_, he) = h.bucket(Timestamp(we.0 - 1));
            assert_eq!((we, we), (de, he));
        }
        let (a, b) = Interval::Month.bucket(
            "2026-02-14T10:00:00Z"
                .parse::<jiff::Timestamp>()
                .map(Timestamp::from_jiff)
                .unwrap(),
        );
        assert_eq!(a.to_string(), "2026-02-01T00:00:00Z");
        assert_eq!(b.to_string(), "2026-03-01T00:00:00Z");
        assert_eq!(Interval::Fixed(Span(10 * NS)).bucket(t(-5)), (t(-10), t(0)));
    }

    /// Versions of one path every `step` seconds from `from` to `to`.
    fn timeline(from: i64, to: i64, step: i64) -> Vec<Timestamp> {
        (0..)
            .map(|i| t(from + i * step))
            .take_while(|x| *x < t(to))
            .collect()
    }

    fn kept(scope: &Scope, times: &[Timestamp]) -> Vec<Timestamp> {
        let ends = live_ends(times);
        times
            .iter()
            .zip(ends)
            .filter(|(s, e)| scope.keeps(**s, *e, &BTreeSet::new()))
            .map(|(s, _)| *s)
            .collect()
    }

    #[test]
    fn every_10s_for_1m_keeps_bucket_ends() {
        // A change each second for 5 minutes; at now = 300 s the policy
        // keeps all of the last 30 s, one point per 10 s up to 1 min, one
        // per minute up to 3 min, nothing older.
        let p = Policy::parse("all 30s, every 10s for 1m, every 1m for 3m").unwrap();
        let times = timeline(0, 300, 1);
        let s = Scope::default().thin(&p, t(300), &times);
        assert_eq!(s.thinned_before, Some(t(270)));
        let pts: Vec<i64> = s.points.iter().map(|p| p.0).collect();
        let want: Vec<i64> = [249, 259, 269]
            .iter()
            .map(|x| (x + 1) * NS - 1)
            .chain([179, 239].iter().map(|x| (x + 1) * NS - 1))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(pts, want, "{:?}", s.points);
        // Kept versions: the one live at each point, and everything from
        // 270 s on.
        let k = kept(&s, &times);
        let want: Vec<Timestamp> = [179, 239, 249, 259, 269]
            .iter()
            .map(|x| t(*x))
            .chain(timeline(270, 300, 1))
            .collect();
        assert_eq!(k, want);
        // Queries: whole at 270 s and after; 265 s snaps to 259.999…;
        // before the oldest point nothing.
        assert!(!s.snap(t(280), &BTreeSet::new()).snapped());
        assert_eq!(
            s.snap(t(265), &BTreeSet::new()).used,
            Some(Timestamp(260 * NS - 1))
        );
        assert_eq!(s.snap(t(100), &BTreeSet::new()).used, None);
    }

    #[test]
    fn thinning_again_only_removes_and_never_adds_below_the_old_line() {
        let p = Policy::parse("all 20s, every 10s for 1m, every 30s for 5m").unwrap();
        let times = timeline(0, 1000, 1);
        let mut s = Scope::default();
        let mut prev_tb = None;
        for now in (100..1000).step_by(7) {
            let visible: Vec<Timestamp> =
                kept(&s, &times[..times.partition_point(|x| *x < t(now))]);
            let n = s.thin(&p, t(now), &visible);
            // Monotone: the line moves forward, and every point below the
            // old line was a point before.
            assert!(n.thinned_before >= prev_tb);
            if let Some(old) = s.thinned_before {
                for q in n.points.range(..old) {
                    assert!(s.points.contains(q), "{q:?} added below {old:?} at {now}");
                }
            }
            prev_tb = n.thinned_before;
            s = n;
        }
        // A finer policy later cannot bring back what is gone.
        let finer = Policy::parse("all 20s, every 1s").unwrap();
        let f = s.thin(&finer, t(1000), &times);
        for q in f.points.range(..s.thinned_before.unwrap()) {
            assert!(s.points.contains(q));
        }
    }

    #[test]
    fn the_newest_version_of_every_path_is_kept_tombstones_too() {
        let p = Policy::parse("every 1h").unwrap();
        let s = Scope::default().thin(&p, t(10 * 86400), &[t(5), t(10), t(20)]);
        // Two versions early, the last (say a deletion) at 20 s: the last
        // is live forever, so kept; the others lie in the first bucket,
        // whose end sees only the last.
        let k = kept(&s, &[t(5), t(10), t(20)]);
        assert_eq!(k, vec![t(20)]);
        let s2 = Scope::default().thin(&p, t(10 * 86400), &[t(5)]);
        assert_eq!(kept(&s2, &[t(5)]), vec![t(5)]);
    }

    #[test]
    fn pins_keep_their_point_and_snap() {
        let p = Policy::parse("all 10s").unwrap();
        let times = timeline(0, 100, 1);
        let s = Scope::default().thin(&p, t(100), &times);
        assert!(s.points.is_empty());
        let pins: BTreeSet<Timestamp> = [Timestamp(42 * NS + 500)].into();
        let ends = live_ends(&times);
        let k: Vec<i64> = times
            .iter()
            .zip(&ends)
            .filter(|(a, e)| s.keeps(**a, **e, &pins))
            .map(|(a, _)| a.0 / NS)
            .collect();
        assert_eq!(k[0], 42);
        assert_eq!(k.len(), 1 + 10);
        assert_eq!(s.snap(t(50), &pins).used, Some(Timestamp(42 * NS + 500)));
    }

    #[test]
    fn default_policy_over_a_year_keeps_a_few_hundred_points() {
        let p = Policy::default_files();
        // A change every 10 minutes for a year.
        let year = 365 * 86400;
        let times = timeline(1_700_000_000, 1_700_000_000 + year, 600);
        let now = t(1_700_000_000 + year);
        let s = Scope::default().thin(&p, now, &times);
        let n = s.points.len();
        // 6 days of hours (144), 23 days (23), about 48 weeks.
        assert!((200..=230).contains(&n), "{n} points");
        let k = kept(&s, &times);
        // Every kept point holds exactly one of this path's versions.
        assert!(k.len() <= n + 24 * 6 + 1, "{}", k.len());
    }

    #[test]
    fn series_keep_the_last_successes_and_weekly_ones() {
        let p = Policy::parse_series("last 3, weekly 4w").unwrap();
        // A run a day for 60 days; every 5th fails; the last two fail.
        let runs: Vec<(Timestamp, bool)> = (0..60)
            .map(|d| (t(d * 86400 + 3600), d % 5 != 0 && d < 58))
            .collect();
        let now = t(60 * 86400);
        let s = Scope::default().thin_series(&p, now, &runs);
        // The line is at the newest success (day 57): days 57, 58, 59 stay.
        assert_eq!(s.thinned_before, Some(t(57 * 86400 + 3600)));
        let times: Vec<Timestamp> = runs.iter().map(|r| r.0).collect();
        let k: Vec<i64> = kept(&s, &times).iter().map(|x| x.0 / 86400 / NS).collect();
        // Last 3 successes: 54, 56, 57 (55 failed); weekly within 4 weeks:
        // the newest success of each week bucket.
        assert!(k.ends_with(&[54, 56, 57, 58, 59]), "{k:?}");
        assert!(!k.contains(&55), "a failed run is never a kept one: {k:?}");
        assert!(k.iter().all(|d| *d >= 60 - 29), "{k:?}");
        assert!(k.len() <= 3 + 5 + 2, "{k:?}");
        // No success at all: the last 3 runs.
        let bad: Vec<(Timestamp, bool)> = (0..10).map(|d| (t(d * 86400), false)).collect();
        let s = Scope::default().thin_series(&p, t(11 * 86400), &bad);
        let times: Vec<Timestamp> = bad.iter().map(|r| r.0).collect();
        assert_eq!(kept(&s, &times).len(), 3);
    }

    #[test]
    fn live_ends_follow_the_query_rule() {
        assert_eq!(
            live_ends(&[t(1), t(5), t(3)]),
            vec![Some(t(3)), Some(t(3)), None]
        );
        assert_eq!(live_ends(&[]), Vec::<Option<Timestamp>>::new());
    }

    #[test]
    fn space_rule_drops_the_oldest_points() {
        let mut s = Scope {
            thinned_before: Some(t(100)),
            points: [t(1), t(2), t(3)].into(),
        };
        assert_eq!(s.drop_oldest(2), vec![t(1), t(2)]);
        assert_eq!(s.points.len(), 1);
    }

    /// Many paths changing at random times, thinned again and again as
    /// time passes: at every kept point, and at every moment at or after
    /// the line, the kept versions give exactly the state the whole
    /// history gives; any other query answers the state of the point it
    /// snaps to. No answer mixes states that never existed together.
    #[test]
    fn every_kept_point_restores_exactly_on_random_timelines() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        let p = Policy::parse("all 1m, every 10s for 5m, every 1m for 30m, every 5m").unwrap();
        let paths: Vec<Vec<Timestamp>> = (0..40)
            .map(|i| {
                let mut v: Vec<Timestamp> = (0..rng.random_range(1..200))
                    .map(|_| Timestamp(rng.random_range(0..7200 * NS)))
                    .collect();
                if i % 3 == 0 {
                    v.sort();
                }
                v
            })
            .collect();
        let state = |vs: &[(usize, usize)], at: Timestamp| -> Vec<(usize, usize)> {
            // The newest by seq (index) at or before `at`, per path.
            let mut out = Vec::new();
            for (pi, times) in paths.iter().enumerate() {
                let best = times
                    .iter()
                    .enumerate()
                    .filter(|(i, t)| **t <= at && vs.contains(&(pi, *i)))
                    .map(|(i, _)| i)
                    .next_back();
                if let Some(i) = best {
                    out.push((pi, i));
                }
            }
            out
        };
        let all: Vec<(usize, usize)> = paths
            .iter()
            .enumerate()
            .flat_map(|(pi, ts)| (0..ts.len()).map(move |i| (pi, i)))
            .collect();
        let mut scope = Scope::default();
        let mut live = all.clone();
        for now in (600..7200).step_by(450) {
            let now = t(now);
            let changes: Vec<Timestamp> = live.iter().map(|(pi, i)| paths[*pi][*i]).collect();
            scope = scope.thin(&p, now, &changes);
            let none = BTreeSet::new();
            // As the repository does: each path's remaining versions,
            // their spans from the remaining neighbours only.
            let mut next = Vec::new();
            for (pi, ts) in paths.iter().enumerate() {
                let idx: Vec<usize> = (0..ts.len()).filter(|i| live.contains(&(pi, *i))).collect();
                let times: Vec<Timestamp> = idx.iter().map(|i| ts[*i]).collect();
                for (k, end) in live_ends(&times).into_iter().enumerate() {
                    if scope.keeps(times[k], end, &none) {
                        next.push((pi, idx[k]));
                    }
                }
            }
            live = next;
            let tb = scope.thinned_before.unwrap();
            for &pt in scope.points.iter().chain([tb, Timestamp(now.0 - 1)].iter()) {
                assert_eq!(state(&live, pt), state(&all, pt), "at {pt:?}, now {now:?}");
            }
            for _ in 0..50 {
                let q = Timestamp(rng.random_range(0..now.0));
                let used = scope.snap(q, &none).used;
                match used {
                    Some(u) => assert_eq!(state(&live, u), state(&all, u)),
                    None => assert!(q < tb),
                }
            }
        }
    }
}
