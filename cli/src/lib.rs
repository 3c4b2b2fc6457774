//! rewind_cli: what the `rewind` and `rewind-server` binaries share, so that
//! both print and log alike: the reports of `verify` and `repair` (the same
//! code behind `rewind verify` and `rewind-server verify`), the logging
//! set-up, the one-line rendering of an error, and the `completions` and
//! `man` subcommands with the readable files they write.
//!
//! # Guarantees
//!
//! - `verify` and `repair` exit 0 when the repository is whole and
//!   [`DAMAGE`] (1) when damage is found or versions remain that cannot be
//!   restored, with the same text and `--json` output from either binary.
//! - Every problem and every version that cannot be restored is named on
//!   stderr, one line each.
//! - Logs go to stderr, or to a file rotated daily that keeps a week:
//!   `warn` and up by default (`info` for `rewind agent`), one level more
//!   per `-v`, and `REWIND_LOG` (an `EnvFilter`) overrides the count.
//! - The man pages, unit files and launchd plist that rewind writes are
//!   readable by everyone (`0644`, directories `0755`) although both
//!   binaries run under umask 077.
//! - An error prints as one line, its causes joined with `: `, leaving out
//!   a cause the message already contains.
//!
//! # After an interruption
//!
//! An interrupted `man` leaves whole pages and at worst a stray `.*.tmp`
//! file (each page is replaced as `rewind_core::private::write_file`
//! does). An interrupted `verify` leaves the repository as it was (it opens
//! it read-only), and an interrupted `repair` leaves what the repository
//! engine's crash rules promise ([`rewind_repo`], "After a crash").

mod check;
mod docs;
mod logging;

pub use check::{DAMAGE, print_damaged, repair, verify};
pub use docs::{DocsCommand, completions, man_pages, run as run_docs};
pub use logging::{LOG_FILES_KEPT, Logging, init_logging, rotated};

/// The error and its causes on one line (the agent renders the errors it
/// sends over its control socket the same way).
pub use rewind_agent::one_line;
