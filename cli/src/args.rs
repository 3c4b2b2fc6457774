//! What the commands' arguments turn into: the repository opened for
//! queries and restores, a point in time typed by a person (a path as the
//! repository stores it is [`Opened::stored_path`]).

use anyhow::Result;
use rewind_agent::{Access, Opened, Target};
use rewind_core::{Timestamp, parse_point_in_time};

/// Open the target for queries and restores.
pub(crate) fn open(t: &Target) -> Result<Opened> {
    t.open(Access::Read)
}

/// A point in time as `--at` takes it (RFC 3339, local date and time, or
/// relative forms), in the local time zone.
pub(crate) fn parse_at(s: &str) -> Result<Timestamp> {
    Ok(parse_point_in_time(s, &jiff::Zoned::now())?)
}
