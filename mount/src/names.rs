//! Names of moments, days and versions in the mounted tree, and reading a
//! moment typed under `at/`.
//!
//! Every name that stands for a moment is one that `at/` (and `rewind ls
//! --at`) reads back as a moment at or after what it names, so the tree
//! shown under it holds that change: a change is named by the first whole
//! second (in `days/`) or millisecond (in `versions/`) at or after it.

use jiff::Zoned;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use rewind_core::{Timestamp, parse_point_in_time};

const SECOND: i64 = 1_000_000_000;
const MILLI: i64 = 1_000_000;

/// The moment named by `name` under `at/`: RFC 3339 (`2026-11-26T10:15:30Z`),
/// or a local date and time (`2026-11-26T10:15:30`, `2026-11-26 10:15`,
/// `2026-11-26`) as `--at` reads them. Relative forms (`10 minutes ago`,
/// `yesterday`) are refused: a directory's meaning must not drift while it
/// is open.
pub(crate) fn parse_moment(name: &str, now: &Zoned) -> Option<Timestamp> {
    let b = name.as_bytes();
    if b.len() < 10 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return None;
    }
    // `2026-11-26T10:15:30` without a zone: a local time, as typed.
    let local = match name.get(10..11) {
        Some("T" | "t") if !has_zone(&name[11..]) => format!("{} {}", &name[..10], &name[11..]),
        _ => name.to_string(),
    };
    parse_point_in_time(&local, now).ok()
}

/// Whether the time part of an RFC 3339 string names its zone.
fn has_zone(time: &str) -> bool {
    time.ends_with(['Z', 'z']) || time.contains(['+', '-'])
}

/// `t` rounded up to a multiple of `unit` nanoseconds.
pub(crate) fn ceil(t: Timestamp, unit: i64) -> Timestamp {
    rewind_core::history::bucket_end(t, unit)
}

/// The name of a moment with changes in `days/<date>/`: the local time of
/// `t` to the second (`t` is a whole second).
pub(crate) fn moment_name(t: Timestamp, tz: &TimeZone) -> String {
    local(t, tz).strftime("%Y-%m-%dT%H:%M:%S").to_string()
}

/// The name of a version observed at `t` in `versions/<path>/`: the first
/// local millisecond at or after it, with the file's extension (so the
/// entry opens with the program its name suggests): `2026-11-26T10:15:30.124.txt`.
pub(crate) fn version_name(t: Timestamp, tz: &TimeZone, file_name: &[u8]) -> Vec<u8> {
    let z = local(ceil(t, MILLI), tz);
    let mut name = z.strftime("%Y-%m-%dT%H:%M:%S%.3f").to_string().into_bytes();
    name.extend_from_slice(extension(file_name));
    name
}

/// `.ext` of a file name (at most 16 bytes, not the whole name), or
/// nothing.
pub(crate) fn extension(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&b| b == b'.') {
        Some(i) if i > 0 && name.len() - i <= 16 && name.len() - i > 1 => &name[i..],
        _ => &[],
    }
}

/// A date under `days/` (`2026-11-26`).
pub(crate) fn parse_day(name: &str) -> Option<Date> {
    if name.len() != 10 {
        return None;
    }
    name.parse().ok()
}

/// The name of a date under `days/`.
pub(crate) fn day_name(d: Date) -> String {
    d.strftime("%Y-%m-%d").to_string()
}

/// The changes whose moment name falls on `day`: those observed in
/// `(midnight - 1 s, next midnight - 1 s]` (their names round up to a
/// second of that day), as an inclusive range.
pub(crate) fn day_range(day: Date, tz: &TimeZone) -> Option<(Timestamp, Timestamp)> {
    let start = day.to_zoned(tz.clone()).ok()?.timestamp();
    let end = day.tomorrow().ok()?.to_zoned(tz.clone()).ok()?.timestamp();
    let start = Timestamp::from_jiff(start);
    let end = Timestamp::from_jiff(end);
    Some((Timestamp(start.0 - SECOND + 1), Timestamp(end.0 - SECOND)))
}

/// The local dates that have moments, from activity windows ending at
/// `ends` (each a multiple of `width`, which divides a day and every
/// local midnight's distance from the epoch: 15 minutes does).
pub(crate) fn days_of(ends: &[Timestamp], tz: &TimeZone) -> Vec<Date> {
    let mut out: Vec<Date> = Vec::new();
    for &e in ends {
        // Changes in (e - width, e) name a second before e; one in the last
        // second names e itself, which may be a midnight.
        for t in [Timestamp(e.0 - 1), e] {
            let d = local(t, tz).date();
            if t == e && local(t, tz).time() != jiff::civil::Time::midnight() {
                continue;
            }
            if !out.contains(&d) {
                out.push(d);
            }
        }
    }
    out.sort();
    out
}

/// Moment names are seconds: a change is shown by the first whole second at
/// or after it.
pub(crate) const MOMENT_UNIT: i64 = SECOND;

/// The width of the activity windows read to list `days/`: every time
/// zone's midnight is a multiple of 15 minutes from the epoch, so a window
/// never holds changes of more than one local day but at its very end.
pub(crate) const DAY_WINDOW: i64 = 15 * 60 * SECOND;

fn local(t: Timestamp, tz: &TimeZone) -> Zoned {
    t.to_jiff().to_zoned(tz.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Zoned {
        "2026-11-26T12:00:00+01:00[Europe/Paris]".parse().unwrap()
    }

    fn at(s: &str) -> Option<String> {
        parse_moment(s, &now()).map(|t| t.to_string())
    }

    #[test]
    fn moments_typed_under_at() {
        assert_eq!(
            at("2026-11-26T10:15:30Z").as_deref(),
            Some("2026-11-26T10:15:30Z")
        );
        assert_eq!(
            at("2026-11-26T10:15:30").as_deref(),
            Some("2026-11-26T09:15:30Z")
        );
        assert_eq!(
            at("2026-11-26t10:15:30").as_deref(),
            Some("2026-11-26T09:15:30Z")
        );
        assert_eq!(
            at("2026-11-26 10:15").as_deref(),
            Some("2026-11-26T09:15:00Z")
        );
        assert_eq!(
            at("2026-11-26T10:15:30+02:00").as_deref(),
            Some("2026-11-26T08:15:30Z")
        );
        assert_eq!(at("2026-11-26").as_deref(), Some("2026-11-25T23:00:00Z"));
        assert_eq!(
            at("2026-11-26T10:15:30.250").as_deref(),
            Some("2026-11-26T09:15:30.25Z")
        );
        for bad in [
            "now",
            "10 minutes ago",
            "yesterday",
            "09:30",
            "2026-13-01",
            "notes",
            "",
        ] {
            assert_eq!(at(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_read_back_as_moments_that_show_the_change() {
        let tz = now().time_zone().clone();
        let change = Timestamp(1_795_000_000 * SECOND + 400_000_000);
        let m = ceil(change, MOMENT_UNIT);
        let name = moment_name(m, &tz);
        let back = parse_moment(&name, &now()).unwrap();
        assert!(back >= change && back.0 - change.0 < SECOND, "{name}");
        let v = version_name(change, &tz, b"report.txt");
        let v = String::from_utf8(v).unwrap();
        assert!(v.ends_with(".401.txt") || v.ends_with(".400.txt"), "{v}");
        let back = parse_moment(v.trim_end_matches(".txt"), &now()).unwrap();
        assert!(back >= change, "{v}");
        assert_eq!(extension(b"a.tar.gz"), b".gz");
        assert_eq!(extension(b".bashrc"), b"");
        assert_eq!(extension(b"Makefile"), b"");
        assert_eq!(extension(b"x."), b"");
    }

    #[test]
    fn days_and_their_ranges() {
        let tz = TimeZone::get("Europe/Paris").unwrap();
        let d = parse_day("2026-11-26").unwrap();
        assert_eq!(day_name(d), "2026-11-26");
        assert!(parse_day("2026-11-26T10").is_none());
        let (from, to) = day_range(d, &tz).unwrap();
        assert_eq!(
            Timestamp(from.0 + SECOND - 1).to_string(),
            "2026-11-25T23:00:00Z"
        );
        assert_eq!(Timestamp(to.0 + SECOND).to_string(), "2026-11-26T23:00:00Z");
        // A window ending at local midnight names both days; others one.
        let midnight: Timestamp = Timestamp::from_jiff("2026-11-25T23:00:00Z".parse().unwrap());
        assert_eq!(
            days_of(&[midnight], &tz),
            vec![parse_day("2026-11-25").unwrap(), d]
        );
        let noon = Timestamp::from_jiff("2026-11-26T11:00:00Z".parse().unwrap());
        assert_eq!(days_of(&[noon, noon], &tz), vec![d]);
    }
}
