//! How the S3 client retries and times out: object_store's retry policy
//! and its client's timeouts, from `REWIND_S3_*` environment variables
//! (docs/config.md, "Repositories on object storage"; docs/decisions.md,
//! "Object storage (issue 20), step 3: retries and timeouts").
//!
//! # Guarantees
//!
//! - Every value is a whole number in a stated range; anything else is an
//!   error in one line that names the variable, before any request.
//! - An unset (or empty) variable takes the default below; `AWS_TIMEOUT`
//!   and `AWS_CONNECT_TIMEOUT`, which object_store reads itself, are left
//!   alone when the matching `REWIND_S3_*` variable is unset.

use std::io;
use std::time::Duration;

/// Retries after the first try, object_store's default: its backoff waits
/// a random time that grows from 100 ms by up to a doubling per retry,
/// capped at 15 s, so ten retries wait at most about a minute (often
/// much less), about what a store's restart takes.
const DEFAULT_RETRIES: u64 = 10;

/// No retry starts later than this after the first try: object_store's
/// default (3 min), below the 5 minutes in which a request's signature
/// expires.
const DEFAULT_RETRY_SECS: u64 = 180;

/// The most one request may take, its body included. object_store's 30 s
/// default cannot carry a whole pack (up to 32 MiB, `PACK_TARGET`) over an
/// uplink slower than 9 Mbit/s, so such a writer would fail every upload
/// forever; 300 s carries one at 1 Mbit/s. The cost: a request to a store
/// that hangs without closing the connection is given up after five
/// minutes instead of half a minute (the writer lease stops writes well
/// before, see `lease.rs`).
const DEFAULT_TIMEOUT_SECS: u64 = 300;

/// Setting up a connection (TCP and TLS): object_store's default.
const DEFAULT_CONNECT_SECS: u64 = 5;

/// A pack larger than this many MiB is uploaded in parts of this size
/// (multipart upload), the last one smaller. A full pack (about 32 MiB,
/// `PACK_TARGET`, and at most a largest chunk more) goes in one PUT: in
/// parts, one after the other, the first pass to `s3s-fs` took 23 % longer
/// and the server twice the CPU, for 2 to 3 more requests a pack
/// (docs/benchmarks.md, "Object storage"); a failed try resends the
/// pack. S3 refuses parts under 5 MiB (except the last), and 5 GiB is its
/// largest.
const DEFAULT_PART_MIB: u64 = 64;

/// The retry and timeout settings of one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ClientSettings {
    /// Retries after the first try (0: none).
    pub(crate) retries: usize,
    /// No retry starts later than this after the first try.
    pub(crate) retry_timeout: Duration,
    /// The most one request may take (`None`: leave object_store's
    /// `AWS_TIMEOUT` or its default).
    pub(crate) timeout: Option<Duration>,
    /// The most a connection may take to set up (`None`: leave
    /// `AWS_CONNECT_TIMEOUT` or object_store's default).
    pub(crate) connect_timeout: Option<Duration>,
    /// Packs larger than this are uploaded in parts of this many bytes.
    pub(crate) part_size: u64,
}

/// `(variable, lowest, highest)` of each setting.
pub(crate) const RETRIES: (&str, u64, u64) = ("REWIND_S3_RETRIES", 0, 100);
pub(crate) const RETRY_SECS: (&str, u64, u64) = ("REWIND_S3_RETRY_SECS", 1, 3600);
pub(crate) const TIMEOUT_SECS: (&str, u64, u64) = ("REWIND_S3_TIMEOUT_SECS", 1, 86_400);
pub(crate) const CONNECT_SECS: (&str, u64, u64) = ("REWIND_S3_CONNECT_TIMEOUT_SECS", 1, 3600);
pub(crate) const PART_MIB: (&str, u64, u64) = ("REWIND_S3_PART_SIZE", 5, 5120);

impl ClientSettings {
    /// The settings from variables looked up with `var` (the process
    /// environment in use; a map in tests).
    pub(crate) fn from_vars(var: impl Fn(&str) -> Option<String>) -> io::Result<ClientSettings> {
        let get = |(name, lo, hi): (&str, u64, u64)| -> io::Result<Option<u64>> {
            let Some(v) = var(name).filter(|v| !v.trim().is_empty()) else {
                return Ok(None);
            };
            match v.trim().parse::<u64>() {
                Ok(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{name}={v}: not a whole number from {lo} to {hi}"),
                )),
            }
        };
        let set = |k: &str| var(k).is_some_and(|v| !v.trim().is_empty());
        let secs = Duration::from_secs;
        let retries = get(RETRIES)?.unwrap_or(DEFAULT_RETRIES);
        let retry_timeout = get(RETRY_SECS)?.unwrap_or(DEFAULT_RETRY_SECS);
        let timeout = match get(TIMEOUT_SECS)? {
            Some(n) => Some(secs(n)),
            None if set("AWS_TIMEOUT") => None,
            None => Some(secs(DEFAULT_TIMEOUT_SECS)),
        };
        let connect_timeout = match get(CONNECT_SECS)? {
            Some(n) => Some(secs(n)),
            None if set("AWS_CONNECT_TIMEOUT") => None,
            None => Some(secs(DEFAULT_CONNECT_SECS)),
        };
        let part_size = get(PART_MIB)?.unwrap_or(DEFAULT_PART_MIB) << 20;
        Ok(ClientSettings {
            retries: usize::try_from(retries).unwrap_or(usize::MAX),
            retry_timeout: secs(retry_timeout),
            timeout,
            connect_timeout,
            part_size,
        })
    }

    /// The settings from the process environment.
    pub(crate) fn from_env() -> io::Result<ClientSettings> {
        Self::from_vars(|k| std::env::var(k).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(vars: &[(&str, &str)]) -> io::Result<ClientSettings> {
        ClientSettings::from_vars(|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn unset_variables_give_the_defaults() {
        let s = of(&[]).unwrap();
        assert_eq!(s.retries, 10);
        assert_eq!(s.retry_timeout, Duration::from_secs(180));
        assert_eq!(s.timeout, Some(Duration::from_secs(300)));
        assert_eq!(s.connect_timeout, Some(Duration::from_secs(5)));
        assert_eq!(s.part_size, 64 << 20);
        assert_eq!(of(&[("REWIND_S3_RETRIES", " ")]).unwrap(), s);
    }

    #[test]
    fn each_variable_sets_its_value() {
        let s = of(&[
            ("REWIND_S3_RETRIES", "0"),
            ("REWIND_S3_RETRY_SECS", "20"),
            ("REWIND_S3_TIMEOUT_SECS", "45"),
            ("REWIND_S3_CONNECT_TIMEOUT_SECS", "2"),
            ("REWIND_S3_PART_SIZE", "5"),
        ])
        .unwrap();
        assert_eq!(s.part_size, 5 << 20);
        assert_eq!(s.retries, 0);
        assert_eq!(s.retry_timeout, Duration::from_secs(20));
        assert_eq!(s.timeout, Some(Duration::from_secs(45)));
        assert_eq!(s.connect_timeout, Some(Duration::from_secs(2)));
    }

    #[test]
    fn object_stores_own_timeout_variables_are_left_alone_unless_ours_are_set() {
        let s = of(&[("AWS_TIMEOUT", "10s"), ("AWS_CONNECT_TIMEOUT", "1s")]).unwrap();
        assert_eq!((s.timeout, s.connect_timeout), (None, None));
        let s = of(&[("AWS_TIMEOUT", "10s"), ("REWIND_S3_TIMEOUT_SECS", "7")]).unwrap();
        assert_eq!(s.timeout, Some(Duration::from_secs(7)));
    }

    #[test]
    fn a_bad_value_is_one_line_naming_the_variable() {
        for (k, v) in [
            ("REWIND_S3_RETRIES", "many"),
            ("REWIND_S3_RETRIES", "101"),
            ("REWIND_S3_RETRY_SECS", "0"),
            ("REWIND_S3_TIMEOUT_SECS", "-3"),
            ("REWIND_S3_CONNECT_TIMEOUT_SECS", "1.5"),
            ("REWIND_S3_PART_SIZE", "4"),
        ] {
            let e = of(&[(k, v)]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            let msg = e.to_string();
            assert!(msg.starts_with(&format!("{k}={v}:")), "{msg}");
            assert_eq!(msg.lines().count(), 1, "{msg}");
        }
    }
}
