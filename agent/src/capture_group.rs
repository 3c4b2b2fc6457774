//! Capturing a group (see `group`): files that are one state on disk,
//! read together under one consistency check and appended together.

use std::io;

use rewind_core::{Entry, FileKind, FileMeta, Timestamp, Version};

use crate::capture::{CaptureError, Capturer, Change, Outcome, Prepared, ReadMode, only_appended};
use crate::group::{WalHeader, wal_header};

impl Capturer<'_> {
    /// Capture the members of a group (see [`crate::group`]) as one state:
    /// every member is copied out (snapshot mode), then every member's stat
    /// must still be what it was before any was read (an absent one still
    /// absent), and only then are they cut and encoded, and the versions of
    /// those that changed appended together, with one time, in one group
    /// commit. A restore at any moment then gets every member as it was at
    /// one moment: what a power cut would have left.
    ///
    /// `sqlite`: the group is a SQLite database with its side files. Its
    /// write-ahead log may then grow while it is read, as long as its
    /// header is the same before and after (see [`wal_header`]): the log
    /// copied is one SQLite recovers from exactly as from a power cut at
    /// some moment of the read, to the last transaction whole in it. A
    /// database committing every 10 ms appends to its log most of the
    /// time, and a capture that waited for no append at all raced it again
    /// and again on a loaded machine (issue 16's bank test, a version 3 s
    /// late).
    pub(crate) fn capture_group(
        &self,
        members: &[Vec<u8>],
        change: Change,
        sqlite: bool,
    ) -> Result<Outcome, CaptureError> {
        let guard = self.journal.begin_capture();
        let mut before: Vec<Option<FileMeta>> = Vec::with_capacity(members.len());
        // Per member: the header of a write-ahead log read in `Appending`.
        let mut headers: Vec<Option<WalHeader>> = Vec::with_capacity(members.len());
        let mut prepared = Vec::new();
        let mut tombstones = Vec::new();
        for m in members {
            let p = rewind_core::path::from_bytes(m);
            let stat = match rewind_fsmeta::read_stat(&p) {
                Ok(st) if st.kind == FileKind::File => Some(st),
                Ok(_) => {
                    // Not a regular file: no SQLite state; each on its own.
                    drop(guard);
                    return self.capture_each(members, change);
                }
                Err(e) if e.is_not_found() => None,
                Err(e) => {
                    return Err(CaptureError::Read {
                        path: m.clone(),
                        source: io::Error::new(e.io().kind(), e.io().to_string()),
                    });
                }
            };
            if stat.is_none() {
                // Gone (SQLite deletes its rollback journal to commit): the
                // tombstone belongs to the group's state, in its batch.
                if self.journal.last_known(m)?.is_some() {
                    tombstones.push(m.clone());
                }
                before.push(None);
                headers.push(None);
                continue;
            }
            let header = if sqlite && m.ends_with(b"-wal") {
                wal_header(&p)
            } else {
                None
            };
            let mode = match header {
                Some(_) => ReadMode::Appending,
                None => ReadMode::Snapshot,
            };
            headers.push(header);
            // A group is read live: its consistency check looks at the
            // live members.
            let live = self.prepare_at(&guard, &p, &p, change, mode, None)?;
            match live.expect("a live read is never missing from a snapshot") {
                Prepared::Done(Outcome::Raced) => return Ok(Outcome::Raced),
                Prepared::Done(_) => {}
                other => prepared.push((m.clone(), other)),
            }
            before.push(stat);
        }
        let at = Timestamp::now();
        for ((m, b), header) in members.iter().zip(&before).zip(&headers) {
            let p = rewind_core::path::from_bytes(m);
            let same = match (b, rewind_fsmeta::read_stat(&p)) {
                (Some(b), Ok(now)) if header.is_some() => {
                    only_appended(b, &now) && wal_header(&p) == *header
                }
                (Some(b), Ok(now)) => now.same_state(b),
                (None, Err(e)) => e.is_not_found(),
                _ => false,
            };
            if !same {
                return Ok(Outcome::Raced);
            }
        }
        let mut total = Outcome::Unchanged;
        let mut versions = Vec::new();
        let mut reports = Vec::new();
        for (m, p) in prepared {
            match self.complete(&guard, p)? {
                Prepared::Version {
                    version,
                    outcome,
                    issues,
                } => {
                    versions.push(*version);
                    reports.push((m, issues));
                    total = total.combine(outcome);
                }
                Prepared::Done(Outcome::Raced) => return Ok(Outcome::Raced),
                _ => {}
            }
        }
        for m in tombstones {
            versions.push(Version {
                client: String::new(),
                seq: 0,
                observed_at: at,
                path: m,
                entry: Entry::Deleted,
            });
            total = total.combine(Outcome::Deleted(1));
        }
        if versions.is_empty() {
            return Ok(total);
        }
        for v in &mut versions {
            v.observed_at = at;
        }
        guard.append_all(versions);
        for (m, issues) in reports {
            self.report(&m, issues);
        }
        Ok(total)
    }

    /// Members of what looked like a group, captured one by one.
    fn capture_each(&self, members: &[Vec<u8>], change: Change) -> Result<Outcome, CaptureError> {
        let mut total = Outcome::Unchanged;
        for m in members {
            let p = rewind_core::path::from_bytes(m);
            total = total.combine(self.capture_alone(&p, change, false)?);
        }
        Ok(total)
    }
}
