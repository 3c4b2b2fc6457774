//! rewind_cli: what the `rewind` and `rewind-server` binaries share, so that
//! both print and log alike: the reports of `verify` and `repair` (the same
//! code behind `rewind verify` and `rewind-server verify`), the logging
//! set-up, and the one-line rendering of an error.
//!
//! # Guarantees
//!
//! - `verify` and `repair` exit 0 when the repository is whole and
//!   [`DAMAGE`] (1) when damage is found or versions remain that cannot be
//!   restored, with the same text and `--json` output from either binary.
//! - Every problem and every version that cannot be restored is named on
//!   stderr, one line each.
//! - Logs go to stderr: `warn` and up by default, `info` with `-v`, `debug`
//!   with `-vv`, and `REWIND_LOG` (an `EnvFilter`) overrides the count.
//! - An error prints as one line, its causes joined with `: `, leaving out
//!   a cause the message already contains.
//!
//! # After an interruption
//!
//! Nothing here writes for itself: an interrupted `verify` leaves the
//! repository as it was (it opens it read-only), and an interrupted
//! `repair` leaves what the repository engine's crash rules promise
//! ([`rewind_repo`], "After a crash").

mod check;

pub use check::{DAMAGE, damaged_json, print_damaged, repair, verify};

/// Send logs to stderr: `warn` and up, `info` with one `-v`, `debug` with
/// more, unless `REWIND_LOG` holds a filter (`tracing_subscriber`'s
/// `EnvFilter` syntax).
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("REWIND_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// The error and its causes on one line (the agent renders the errors it
/// sends over its control socket the same way).
pub use rewind_agent::one_line;
