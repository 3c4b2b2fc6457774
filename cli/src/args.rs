//! What the commands' arguments turn into: the repository opened for
//! queries and restores, a point in time typed by a person, a path as the
//! repository stores it.

use std::path::Path;

use anyhow::{Context, Result, bail};
use rewind_agent::{Access, Opened, Target};
use rewind_core::path::to_bytes;
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

/// The stored form of a user-given path, checked to lie inside something
/// that was protected. `dumps` and `dumps/NAME` (as typed, relative) name
/// the virtual paths of database dumps, unless a protected folder holds a
/// real `dumps` there.
pub(crate) fn stored_path(o: &Opened, p: &Path) -> Result<Vec<u8>> {
    // A symlink names itself (its versions, its restore), unless only what
    // it points to is protected (a protected folder given by a link to it).
    let link = rewind_core::path::absolute_nofollow(p)
        .with_context(|| format!("cannot resolve {}", p.display()))?;
    let abs = rewind_core::path::absolute(p)
        .with_context(|| format!("cannot resolve {}", p.display()))?;
    if link != abs && o.repo.covers(&o.client, to_bytes(&link))? {
        return Ok(to_bytes(&link).to_vec());
    }
    let b = to_bytes(&abs).to_vec();
    if !o.repo.covers(&o.client, &b)? {
        let raw = to_bytes(p);
        let mut v = raw.to_vec();
        while v.len() > 1 && v.ends_with(b"/") {
            v.pop();
        }
        if (v == b"dumps" || v.starts_with(b"dumps/"))
            && !o.repo.tree_at(&o.client, &v, Timestamp::MAX)?.is_empty()
        {
            return Ok(v);
        }
        bail!(
            "{} is not inside any protected folder of this repository",
            abs.display()
        );
    }
    Ok(b)
}
