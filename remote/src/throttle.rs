//! Upload bandwidth limits, optionally by time of day (UrBackup lets a
//! laptop upload slowly during office hours and at full speed at night).
//!
//! Syntax: rules separated by commas; a rule is `RATE` (the default) or
//! `HH:MM-HH:MM RATE` (local time; a range may wrap past midnight); the
//! first range that holds the current time wins. RATE is a number with an
//! optional unit `B`, `K`/`KB`/`KiB`, `M`/`MB`/`MiB`, `G`/`GB`/`GiB` and an
//! optional `/s`; `0`, `off` or `unlimited` means no limit. Examples:
//! `5MiB/s`; `08:00-18:00 1MiB/s, 20MiB/s`; `22:00-06:00 off, 2MiB/s`.

use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A parsed limit schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct RateSchedule {
    /// `(from minute, to minute, bytes per second)`; 0 means unlimited.
    ranges: Vec<(u32, u32, u64)>,
    /// Outside every range.
    default: u64,
}

fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t).trim();
    if matches!(t, "0" | "off" | "unlimited" | "none") {
        return Ok(0);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("not a rate: {s:?} (try 5MiB/s)"))?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "K" | "k" | "KiB" => 1024.0,
        "KB" | "kB" => 1000.0,
        "M" | "MiB" => 1024.0 * 1024.0,
        "MB" => 1e6,
        "G" | "GiB" => 1024.0 * 1024.0 * 1024.0,
        "GB" => 1e9,
        u => {
            return Err(format!(
                "unknown unit {u:?} in {s:?} (use B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    let r = n * mult;
    if !(1.0..1e13).contains(&r) {
        return Err(format!("rate out of range: {s:?}"));
    }
    Ok(r as u64)
}

fn parse_clock(s: &str) -> Result<u32, String> {
    let (h, m) = s
        .trim()
        .split_once(':')
        .ok_or_else(|| format!("not a time of day: {s:?} (use HH:MM)"))?;
    let h: u32 = h.parse().map_err(|_| format!("bad hour in {s:?}"))?;
    let m: u32 = m.parse().map_err(|_| format!("bad minute in {s:?}"))?;
    if h > 24 || m > 59 || (h == 24 && m > 0) {
        return Err(format!("not a time of day: {s:?}"));
    }
    Ok(h * 60 + m)
}

impl RateSchedule {
    /// Parse the syntax in the module documentation.
    pub fn parse(s: &str) -> Result<RateSchedule, String> {
        let mut ranges = Vec::new();
        let mut default = None;
        for rule in s.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            match rule.split_once(char::is_whitespace) {
                Some((span, rate)) if span.contains('-') && span.contains(':') => {
                    let (a, b) = span.split_once('-').expect("checked");
                    ranges.push((parse_clock(a)?, parse_clock(b)?, parse_rate(rate)?));
                }
                _ => {
                    if default.replace(parse_rate(rule)?).is_some() {
                        return Err(format!("two default rates in {s:?}"));
                    }
                }
            }
        }
        if ranges.is_empty() && default.is_none() {
            return Err("empty rate limit".into());
        }
        Ok(RateSchedule {
            ranges,
            default: default.unwrap_or(0),
        })
    }

    /// Bytes per second at `minute` of the day (0: unlimited).
    pub fn rate_at(&self, minute: u32) -> u64 {
        for &(a, b, r) in &self.ranges {
            let inside = if a <= b {
                minute >= a && minute < b
            } else {
                minute >= a || minute < b
            };
            if inside {
                return r;
            }
        }
        self.default
    }

    /// Bytes per second now, in local time.
    pub fn rate_now(&self) -> u64 {
        let now = jiff::Zoned::now();
        self.rate_at(now.hour() as u32 * 60 + now.minute() as u32)
    }
}

/// A token bucket shared by every upload request of a client.
#[derive(Debug)]
pub struct Limiter {
    schedule: RateSchedule,
    /// `(bytes that may go now, when that was computed)`.
    bucket: Mutex<(f64, Instant)>,
}

impl Limiter {
    /// A limiter following `schedule`.
    pub fn new(schedule: RateSchedule) -> Limiter {
        Limiter {
            schedule,
            bucket: Mutex::new((0.0, Instant::now())),
        }
    }

    /// Wait until `n` more bytes may be sent.
    pub fn take(&self, n: usize) {
        let rate = self.schedule.rate_now();
        if rate == 0 {
            return;
        }
        let rate = rate as f64;
        let wait = {
            let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            // Allow at most a quarter second of burst.
            b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * rate).min(rate / 4.0);
            b.1 = now;
            b.0 -= n as f64;
            if b.0 < 0.0 {
                Duration::from_secs_f64(-b.0 / rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

/// A reader that paces itself through a [`Limiter`], in 64 KiB steps.
pub struct Paced {
    data: bytes::Bytes,
    pos: usize,
    limiter: std::sync::Arc<Limiter>,
}

impl Paced {
    /// Send `data` at the limiter's pace.
    pub fn new(data: bytes::Bytes, limiter: std::sync::Arc<Limiter>) -> Paced {
        Paced {
            data,
            pos: 0,
            limiter,
        }
    }
}

impl Read for Paced {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(64 << 10).min(self.data.len() - self.pos);
        if n == 0 {
            return Ok(0);
        }
        self.limiter.take(n);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_schedules_parse() {
        assert_eq!(parse_rate("5MiB/s").unwrap(), 5 << 20);
        assert_eq!(parse_rate("5 MB").unwrap(), 5_000_000);
        assert_eq!(parse_rate("512K").unwrap(), 512 << 10);
        assert_eq!(parse_rate("off").unwrap(), 0);
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("5 parsecs").is_err());
        let s = RateSchedule::parse("08:00-18:00 1MiB/s, 22:00-06:00 off, 20MiB/s").unwrap();
        assert_eq!(s.rate_at(9 * 60), 1 << 20);
        assert_eq!(s.rate_at(18 * 60), 20 << 20);
        assert_eq!(s.rate_at(23 * 60), 0);
        assert_eq!(s.rate_at(60), 0);
        assert_eq!(s.rate_at(7 * 60), 20 << 20);
        assert!(RateSchedule::parse("").is_err());
        assert!(RateSchedule::parse("1M, 2M").is_err());
        assert!(RateSchedule::parse("25:00-26:00 1M").is_err());
    }

    #[test]
    fn the_limiter_paces_to_its_rate() {
        // 4 MiB at 16 MiB/s takes about a quarter second (less the burst).
        let l = std::sync::Arc::new(Limiter::new(RateSchedule::parse("16MiB/s").unwrap()));
        let start = Instant::now();
        let mut r = Paced::new(vec![0; 4 << 20].into(), l);
        let mut sink = Vec::new();
        r.read_to_end(&mut sink).unwrap();
        assert_eq!(sink.len(), 4 << 20);
        assert!(
            start.elapsed() >= Duration::from_millis(150),
            "{:?}",
            start.elapsed()
        );
    }
}
