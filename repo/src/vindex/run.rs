//! Reading a run: its footer and table are checked at open; a path is
//! found by a binary search of the table, read a few bytes at a time, and
//! its records and entries are read only when a query asks for them.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rewind_core::{Entry, RepoError, Timestamp};
use tracing::{debug, warn};

use super::format::{Footer, MAGIC, PATH_ENTRY, PathEntry, RECORD, Record, TAIL};
use crate::durable::{corrupt, io_err};
use crate::pack_name::PackName;

/// A path with at most this many records in a run is read whole rather
/// than searched.
const SMALL: u64 = 64;

/// An open run.
#[derive(Debug)]
pub(crate) struct Run {
    pub path: PathBuf,
    file: File,
    pub footer: Footer,
}

impl Run {
    /// Open and check the run at `path`.
    pub(crate) fn open(path: &Path) -> Result<Run, RepoError> {
        let file = File::open(path).map_err(io_err(path))?;
        let len = file.metadata().map_err(io_err(path))?.len();
        let bad = |why: &str| corrupt(path, format!("version index run: {why}"));
        if len < TAIL as u64 {
            return Err(bad("shorter than its tail"));
        }
        let mut tail = [0u8; TAIL];
        file.read_exact_at(&mut tail, len - TAIL as u64)
            .map_err(io_err(path))?;
        if &tail[8..] != MAGIC {
            return Err(bad("no magic at its end (another format, or not a run)"));
        }
        let flen = u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")) as u64;
        let foff = (len - TAIL as u64)
            .checked_sub(flen)
            .ok_or_else(|| bad("footer longer than the file"))?;
        let mut fb = vec![0u8; flen as usize];
        file.read_exact_at(&mut fb, foff).map_err(io_err(path))?;
        if crc32fast::hash(&fb).to_le_bytes() != tail[4..8] {
            return Err(bad("footer does not match its CRC"));
        }
        let footer: Footer =
            postcard::from_bytes(&fb).map_err(|_| bad("footer does not decode"))?;
        let sections_ok = footer.entries_off == footer.records * RECORD as u64
            && footer.entries_off <= footer.paths_off
            && footer.paths_off <= footer.table_off
            && footer.table_off + footer.paths * PATH_ENTRY as u64 == foff
            && footer.footer_off == foff;
        if !sections_ok {
            return Err(bad("sections do not add up"));
        }
        Ok(Run {
            path: path.to_path_buf(),
            file,
            footer,
        })
    }

    fn bad(&self, why: impl std::fmt::Display) -> RepoError {
        corrupt(&self.path, format!("version index run: {why}"))
    }

    fn read(&self, off: u64, len: usize) -> Result<Vec<u8>, RepoError> {
        let mut b = vec![0u8; len];
        self.file
            .read_exact_at(&mut b, off)
            .map_err(io_err(&self.path))?;
        Ok(b)
    }

    fn client_no(&self, client: &str) -> Option<u32> {
        self.footer
            .clients
            .binary_search_by(|c| c.as_str().cmp(client))
            .ok()
            .map(|i| i as u32)
    }

    /// Table entry `i` and its path, checked.
    fn entry(&self, i: u64) -> Result<(PathEntry, Vec<u8>), RepoError> {
        let b = self.read(self.footer.table_off + i * PATH_ENTRY as u64, PATH_ENTRY)?;
        let e = self.bounded(i, &b)?;
        let path = self.read(self.footer.paths_off + e.path_off, e.path_len as usize)?;
        if !PathEntry::matches(&b, &path) {
            return Err(self.bad(format!("table entry {i} does not match its CRC")));
        }
        Ok((e, path))
    }

    /// Table entry `i` decoded from `b`, its bounds checked (its CRC is
    /// checked once its path is read).
    fn bounded(&self, i: u64, b: &[u8]) -> Result<PathEntry, RepoError> {
        let e = PathEntry::decode(b).ok_or_else(|| self.bad("short table entry"))?;
        let in_bounds = e.path_off + e.path_len as u64
            <= self.footer.table_off - self.footer.paths_off
            && e.first + e.count <= self.footer.records;
        if !in_bounds {
            return Err(self.bad(format!("table entry {i} points outside the run")));
        }
        Ok(e)
    }

    /// The first table position whose (client, path) is not below
    /// `(client, path)`.
    fn lower_bound(&self, client: u32, path: &[u8]) -> Result<u64, RepoError> {
        let (mut lo, mut hi) = (0u64, self.footer.paths);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (e, p) = self.entry(mid)?;
            if e.client < client || (e.client == client && p.as_slice() < path) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Where the records of `client`'s `path` are, if the run has any.
    pub(crate) fn find(&self, client: &str, path: &[u8]) -> Result<Option<PathEntry>, RepoError> {
        let Some(c) = self.client_no(client) else {
            return Ok(None);
        };
        let i = self.lower_bound(c, path)?;
        if i == self.footer.paths {
            return Ok(None);
        }
        let (e, p) = self.entry(i)?;
        Ok((e.client == c && p == path).then_some(e))
    }

    /// Every path of `client` that starts with `prefix` (bytes), in order,
    /// with where its records are.
    pub(crate) fn with_prefix(
        &self,
        client: &str,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, PathEntry)>, RepoError> {
        let Some(c) = self.client_no(client) else {
            return Ok(Vec::new());
        };
        let mut i = self.lower_bound(c, prefix)?;
        let mut out = Vec::new();
        // The table is read in slices, not an entry at a time.
        const SLICE: u64 = 4096;
        while i < self.footer.paths {
            let n = SLICE.min(self.footer.paths - i);
            let b = self.read(
                self.footer.table_off + i * PATH_ENTRY as u64,
                (n as usize) * PATH_ENTRY,
            )?;
            let slice = b
                .chunks_exact(PATH_ENTRY)
                .enumerate()
                .map(|(k, eb)| Ok((self.bounded(i + k as u64, eb)?, eb)))
                .collect::<Result<Vec<(PathEntry, &[u8])>, RepoError>>()?;
            // The paths of a slice lie back to back: one read for them all.
            let (first, last) = (slice[0].0, slice[slice.len() - 1].0);
            let start = first.path_off;
            let end = last.path_off + last.path_len as u64;
            let contiguous = slice
                .windows(2)
                .all(|w| w[0].0.path_off + w[0].0.path_len as u64 == w[1].0.path_off);
            if !contiguous || end < start {
                return Err(self.bad("paths of the table are not in order"));
            }
            let bytes = self.read(self.footer.paths_off + start, (end - start) as usize)?;
            for (k, (e, eb)) in slice.into_iter().enumerate() {
                let at = (e.path_off - start) as usize;
                let p = &bytes[at..at + e.path_len as usize];
                if !PathEntry::matches(eb, p) {
                    return Err(self.bad(format!(
                        "table entry {} does not match its CRC",
                        i + k as u64
                    )));
                }
                if e.client != c || !p.starts_with(prefix) {
                    return Ok(out);
                }
                out.push((p.to_vec(), e));
            }
            i += n;
        }
        Ok(out)
    }

    /// The records of a table entry, in seq order.
    pub(crate) fn records(&self, e: &PathEntry) -> Result<Vec<Record>, RepoError> {
        let b = self.read(e.first * RECORD as u64, e.count as usize * RECORD)?;
        let entries_len = self.footer.paths_off - self.footer.entries_off;
        b.chunks_exact(RECORD)
            .map(|r| {
                let r =
                    Record::decode(r).ok_or_else(|| self.bad("a record does not match its CRC"))?;
                if r.entry_off + r.entry_len as u64 > entries_len {
                    return Err(self.bad("a record's entry lies outside the run"));
                }
                Ok(r)
            })
            .collect()
    }

    /// Record `i` of a table entry.
    pub(crate) fn record(&self, e: &PathEntry, i: u64) -> Result<Record, RepoError> {
        let one = PathEntry {
            first: e.first + i,
            count: 1,
            ..*e
        };
        Ok(self.records(&one)?[0])
    }

    /// The first position among a table entry's records where `before`
    /// stops holding (it must hold for a prefix of them), reading only the
    /// records a binary search visits.
    fn partition_point(
        &self,
        e: &PathEntry,
        before: impl Fn(&Record) -> bool,
    ) -> Result<u64, RepoError> {
        let (mut lo, mut hi) = (0u64, e.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if before(&self.record(e, mid)?) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// The position of the last record of a table entry observed at or
    /// before `at` (the largest whose tail min is at or before it).
    pub(crate) fn last_by(&self, e: &PathEntry, at: Timestamp) -> Result<Option<u64>, RepoError> {
        if e.count <= SMALL {
            let recs = self.records(e)?;
            return Ok(recs
                .iter()
                .rposition(|r| r.observed_at <= at)
                .map(|i| i as u64));
        }
        Ok(self
            .partition_point(e, |r| r.tail_min <= at)?
            .checked_sub(1))
    }

    /// The earliest observation among the records of a table entry whose
    /// seq is above `seq`.
    pub(crate) fn end_after(
        &self,
        e: &PathEntry,
        seq: u64,
    ) -> Result<Option<Timestamp>, RepoError> {
        if e.count <= SMALL {
            let recs = self.records(e)?;
            return Ok(recs
                .iter()
                .filter(|r| r.seq > seq)
                .map(|r| r.observed_at)
                .min());
        }
        let lo = self.partition_point(e, |r| r.seq <= seq)?;
        if lo == e.count {
            return Ok(None);
        }
        Ok(Some(self.record(e, lo)?.tail_min))
    }

    /// The encoded entry of a record, checked against its CRC.
    pub(crate) fn entry_bytes(&self, r: &Record) -> Result<Vec<u8>, RepoError> {
        let b = self.read(self.footer.entries_off + r.entry_off, r.entry_len as usize)?;
        if crc32fast::hash(&b) != r.entry_crc {
            return Err(self.bad(format!("entry of seq {} does not match its CRC", r.seq)));
        }
        Ok(b)
    }

    /// The encoded entry of a record, checked to decode.
    pub(crate) fn checked_entry(&self, r: &Record) -> Result<Vec<u8>, RepoError> {
        let b = self.entry_bytes(r)?;
        postcard::from_bytes::<Entry>(&b)
            .map_err(|_| self.bad(format!("entry of seq {} does not decode", r.seq)))?;
        Ok(b)
    }

    pub(crate) fn packs(&self) -> &[PackName] {
        &self.footer.packs
    }

    pub(crate) fn versions(&self) -> u64 {
        self.footer.records
    }
}

/// Every run in `DIR/vindex` that opens and checks (others are logged and
/// left for the writer), newest name order irrelevant.
pub(crate) fn open_all(dir: &Path) -> Result<Vec<Run>, RepoError> {
    let rd = super::runs_dir(dir);
    let entries = match std::fs::read_dir(&rd) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&rd)(e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(io_err(&rd))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name
            .strip_suffix(".vix")
            .and_then(PackName::parse)
            .is_none()
        {
            continue;
        }
        match Run::open(&e.path()) {
            Ok(r) => out.push(r),
            Err(RepoError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => warn!(error = %err, "version index run not used"),
        }
    }
    Ok(out)
}

/// Of `runs`, the ones a reader uses: each names only packs in `present`,
/// and no two name the same pack (the larger run wins: a merge's inputs
/// left beside it by a crash are passed over). Returns them and the packs
/// they cover; the rest of `runs` are returned as unused.
pub(crate) fn usable_runs(
    mut runs: Vec<Run>,
    present: &BTreeMap<PackName, crate::store::Listed>,
) -> (Vec<Run>, HashSet<PackName>, Vec<Run>) {
    runs.sort_by(|a, b| b.versions().cmp(&a.versions()).then(a.path.cmp(&b.path)));
    let mut covered = HashSet::new();
    let (mut used, mut unused) = (Vec::new(), Vec::new());
    for r in runs {
        let whole = r.packs().iter().all(|p| present.contains_key(p));
        let disjoint = r.packs().iter().all(|p| !covered.contains(p));
        if whole && disjoint {
            covered.extend(r.packs().iter().copied());
            used.push(r);
        } else {
            debug!(run = %r.path.display(), whole, disjoint, "version index run not used");
            unused.push(r);
        }
    }
    (used, covered, unused)
}
