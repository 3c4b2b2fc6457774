use std::fmt;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Zoned};
use serde::{Deserialize, Serialize};

/// A wall-clock instant: nanoseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Timestamp {
        Timestamp::from_jiff(jiff::Timestamp::now())
    }

    /// The latest representable time (used for "now" in queries).
    pub const MAX: Timestamp = Timestamp(i64::MAX);

    /// From a jiff timestamp (saturating).
    pub fn from_jiff(t: jiff::Timestamp) -> Timestamp {
        Timestamp(t.as_nanosecond().clamp(i64::MIN as i128, i64::MAX as i128) as i64)
    }

    /// As a jiff timestamp.
    pub fn to_jiff(self) -> jiff::Timestamp {
        jiff::Timestamp::from_nanosecond(self.0 as i128).unwrap_or(jiff::Timestamp::MAX)
    }

    /// As `std::time::SystemTime`.
    pub fn to_system(self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(self.0.max(0) as u64)
    }

    /// From `std::time::SystemTime`.
    pub fn from_system(t: std::time::SystemTime) -> Timestamp {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Timestamp(d.as_nanos().min(i64::MAX as u128) as i64),
            Err(e) => Timestamp(-(e.duration().as_nanos().min(i64::MAX as u128) as i64)),
        }
    }

    /// Local time for people, to the millisecond: `2026-11-26 10:15:30.123`.
    pub fn to_local_string(self) -> String {
        let z = self.to_jiff().to_zoned(TimeZone::system());
        z.strftime("%Y-%m-%d %H:%M:%S%.3f").to_string()
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with nanoseconds where present.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_jiff())
    }
}

/// An `--at` value that is none of the accepted forms.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot read time {input:?}: use 'now', RFC 3339 (2026-11-26T10:15:30Z), \
     'YYYY-MM-DD HH:MM[:SS]' (local), '10 minutes ago' or 'yesterday 17:00'"
)]
pub struct TimeParseError {
    input: String,
}

/// Parse a point in time relative to `now` (whose time zone is the local
/// one). Accepted: `now`; RFC 3339; `YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS[.f]]`
/// and `HH:MM[:SS]` in local time; `N UNIT ago` with UNIT one of s, sec,
/// second, m, min, minute, h, hour, d, day, w, week (plural or not; `10m ago`
/// too); `today HH:MM`, `yesterday`, `yesterday HH:MM`.
pub fn parse_point_in_time(input: &str, now: &Zoned) -> Result<Timestamp, TimeParseError> {
    let err = || TimeParseError {
        input: input.to_string(),
    };
    let s = input.trim().to_ascii_lowercase();
    if s.is_empty() {
        return Err(err());
    }
    if s == "now" {
        return Ok(Timestamp::from_jiff(now.timestamp()));
    }
    if let Ok(t) = input.trim().parse::<jiff::Timestamp>() {
        return Ok(Timestamp::from_jiff(t));
    }
    let tz = now.time_zone().clone();
    let local = |dt: DateTime| -> Result<Timestamp, TimeParseError> {
        let z = dt.to_zoned(tz.clone()).map_err(|_| err())?;
        Ok(Timestamp::from_jiff(z.timestamp()))
    };
    if let Ok(dt) = s.parse::<DateTime>() {
        return local(dt);
    }
    if let Ok(d) = s.parse::<Date>() {
        return local(d.to_datetime(Time::midnight()));
    }
    if let Some(rest) = s.strip_suffix(" ago") {
        let d = parse_duration(rest.trim()).ok_or_else(err)?;
        let t = now.timestamp().checked_sub(d).map_err(|_| err())?;
        return Ok(Timestamp::from_jiff(t));
    }
    let (day, rest) = if let Some(r) = s.strip_prefix("yesterday") {
        (now.date().yesterday().map_err(|_| err())?, r.trim())
    } else if let Some(r) = s.strip_prefix("today") {
        (now.date(), r.trim())
    } else {
        (now.date(), s.as_str())
    };
    if rest.is_empty() {
        // "yesterday" alone: this time of day, one day back (as GNU date).
        return local(day.to_datetime(now.time()));
    }
    let time: Time = rest.parse().map_err(|_| err())?;
    local(day.to_datetime(time))
}

fn parse_duration(s: &str) -> Option<SignedDuration> {
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.trim().parse().ok()?;
    let secs = match unit.trim().trim_end_matches('s') {
        "" | "sec" | "second" => 1.0,
        "m" | "min" | "minute" => 60.0,
        "h" | "hr" | "hour" => 3600.0,
        "d" | "day" => 86400.0,
        "w" | "wk" | "week" => 7.0 * 86400.0,
        _ => return None,
    };
    let total = n * secs;
    if !(0.0..=1e12).contains(&total) {
        return None;
    }
    Some(SignedDuration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Zoned {
        "2026-11-26T12:00:00+01:00[Europe/Paris]".parse().unwrap()
    }

    fn at(s: &str) -> String {
        parse_point_in_time(s, &now()).unwrap().to_string()
    }

    #[test]
    fn absolute_forms() {
        assert_eq!(at("now"), "2026-11-26T11:00:00Z");
        assert_eq!(at("2026-11-26T10:15:30.5Z"), "2026-11-26T10:15:30.5Z");
        assert_eq!(at("2026-11-26 10:15"), "2026-11-26T09:15:00Z");
        assert_eq!(at("2026-11-26 10:15:30"), "2026-11-26T09:15:30Z");
        assert_eq!(at("2026-11-25"), "2026-11-24T23:00:00Z");
        assert_eq!(at("09:30"), "2026-11-26T08:30:00Z");
    }

    #[test]
    fn relative_forms() {
        assert_eq!(at("10 minutes ago"), "2026-11-26T10:50:00Z");
        assert_eq!(at("10m ago"), "2026-11-26T10:50:00Z");
        assert_eq!(at("1 hour ago"), "2026-11-26T10:00:00Z");
        assert_eq!(at("2 days ago"), "2026-11-24T11:00:00Z");
        assert_eq!(at("yesterday 17:00"), "2026-11-25T16:00:00Z");
        assert_eq!(at("yesterday"), "2026-11-25T11:00:00Z");
        assert_eq!(at("today 08:00"), "2026-11-26T07:00:00Z");
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "soon",
            "10 parsecs ago",
            "2026-13-01",
            "yesterday 25:00",
            "-5 min ago",
        ] {
            assert!(parse_point_in_time(bad, &now()).is_err(), "{bad}");
        }
    }
}
