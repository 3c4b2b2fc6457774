//! `DIR/retention`: what forget decided, per client, and what prune must
//! keep or is about to delete. Small (points and pins, not versions), read
//! at open, rewritten whole and durably on every change.
//!
//! ```text
//! "RWKEEP01" frame(postcard(KeepFile))
//! ```
//!
//! - Per client: the kept points and `thinned_before` of its files and of
//!   each dump series, its pins, and the last forget and space removals
//!   for `status`. Never a list of forgotten versions: the in-memory index
//!   drops, at load and when a version is inserted, every version these
//!   points do not keep.
//! - `bases`: chunks stored by `store_base` (small-file dictionaries),
//!   which no version names and prune keeps all of.
//! - `condemned`: packs a two-phase prune (a server's) found unused, with
//!   the time; deleted by a later prune once the grace time has passed
//!   and they are still unused.
//! - `deleting`: packs a prune is deleting, recorded once their content is
//!   durable elsewhere and before the first file goes; the next writer
//!   finishes the job after a crash.
//! - Written as temp file, fsync, rename, directory fsync, each step a
//!   named failpoint (`retention.write`, `.fsync`, `.rename`,
//!   `.dir_fsync`). A crash leaves the old file or the new one.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::Path;

use rewind_core::forget::{ForgetSummary, Pin, PruneSummary, SpaceRemoval};
use rewind_core::retention::Scope;
use rewind_core::{ChunkId, RepoError, Timestamp, frame};
use rewind_crypto::RecordKind;
use serde::{Deserialize, Serialize};

use crate::backend::{PutIf, Written};
use crate::crypt::Crypt;
use crate::durable::{Steps, corrupt, io_err};
use crate::pack_name::PackName;
use crate::store::write_durably;

const MAGIC: &[u8; 8] = b"RWKEEP01";

/// The durable steps of the retention file.
const KEEP_STEPS: Steps = Steps {
    write: "retention.write",
    fsync: "retention.fsync",
    rename: "retention.rename",
    dir_fsync: "retention.dir_fsync",
};

/// Space removals remembered per client for `status`.
const REMOVALS_KEPT: usize = 100;

/// What is kept of one client.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ClientKeep {
    /// Its files (every absolute path).
    pub files: Scope,
    /// Each dump series (relative paths such as `dumps/<job>`), by path.
    pub series: BTreeMap<Vec<u8>, Scope>,
    pub pins: Vec<Pin>,
    pub next_pin: u64,
    pub last_forget: Option<ForgetSummary>,
    /// The latest removals by space rules, oldest first.
    pub removals: Vec<SpaceRemoval>,
}

impl ClientKeep {
    /// The pinned points.
    pub(crate) fn pin_points(&self) -> BTreeSet<Timestamp> {
        self.pins.iter().map(|p| p.at).collect()
    }

    /// Remember a space removal, keeping the latest few.
    pub(crate) fn log_removal(&mut self, r: SpaceRemoval) {
        self.removals.push(r);
        if self.removals.len() > REMOVALS_KEPT {
            let extra = self.removals.len() - REMOVALS_KEPT;
            self.removals.drain(..extra);
        }
    }
}

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeepFile {
    pub clients: BTreeMap<String, ClientKeep>,
    pub bases: BTreeSet<ChunkId>,
    pub condemned: BTreeMap<PackName, Timestamp>,
    pub last_prune: Option<PruneSummary>,
    /// Packs a prune is deleting: their content is durable in other packs
    /// (or unused), so an index without its pack, or a pack without its
    /// index, is the expected leftover of a crash, and the next writer
    /// finishes the deletion.
    pub deleting: BTreeSet<PackName>,
    /// Which object of an object store this content came from or went
    /// to: not part of the content (never stored, equal to any other).
    #[serde(skip)]
    pub seen: Seen,
}

/// The retention object a writer on an object store last read or wrote,
/// so that its next write replaces only that one (`If-Match`): a write
/// that an earlier writer of the repository sent, and that reached the
/// store after this writer wrote, is refused instead of replacing newer
/// points, pins or prune records (docs/decisions.md, "Retention writes
/// that arrive late").
#[derive(Clone, Debug, Default)]
pub(crate) enum Seen {
    /// Not known (a directory, whose writers cannot be late, or a store
    /// that gave no ETag): written unconditionally.
    #[default]
    Unknown,
    /// There was no object: written only if there still is none.
    Absent,
    /// The object with this ETag.
    Tag(String),
}

impl PartialEq for Seen {
    fn eq(&self, _: &Seen) -> bool {
        true
    }
}

impl Eq for Seen {}

/// The error of a retention write the store refused because the object
/// changed since this writer read it.
fn changed(path: &Path) -> RepoError {
    io_err(path)(io::Error::other(
        "changed since this writer read it (a write an earlier writer sent arrived late); \
         it is read again: try once more",
    ))
}

/// A retention file is small (points, pins); anything over this is not one.
const MAX_KEEP_BYTES: u64 = 64 << 20;

impl KeepFile {
    /// Read `DIR/retention`; an empty file when there is none.
    /// On an object store the object's ETag comes with it ([`Seen`]).
    pub(crate) fn read(c: &Crypt, dir: &Path) -> Result<KeepFile, RepoError> {
        let path = dir.join("retention");
        if let Some(objects) = crate::store::of(&path)?.leasing() {
            return match objects.get_tagged(&path).map_err(io_err(&path))? {
                None => Ok(KeepFile {
                    seen: Seen::Absent,
                    ..KeepFile::default()
                }),
                Some((bytes, tag)) => {
                    if bytes.len() as u64 > MAX_KEEP_BYTES {
                        return Err(corrupt(&path, "retention file over its size limit"));
                    }
                    let mut k = Self::decode(c, &path, &bytes)?;
                    k.seen = tag.map_or(Seen::Unknown, Seen::Tag);
                    Ok(k)
                }
            };
        }
        let f = match crate::store::open_read(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(KeepFile::default()),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mut bytes = Vec::new();
        f.take(MAX_KEEP_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err(&path))?;
        Self::decode(c, &path, &bytes)
    }

    /// The content of the retention file `path` whose bytes are `bytes`.
    fn decode(c: &Crypt, path: &Path, bytes: &[u8]) -> Result<KeepFile, RepoError> {
        let body = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| corrupt(path, "not a retention file (bad magic)"))?;
        let (payload, used) =
            frame::decode(body, 8).map_err(|e| corrupt(path, format!("retention file: {e}")))?;
        if used != body.len() {
            return Err(corrupt(path, "unexpected data after the retention record"));
        }
        let payload = c
            .open_file(RecordKind::File, "retention", payload)
            .map_err(|e| corrupt(path, format!("retention record: {e}")))?;
        postcard::from_bytes(&payload).map_err(|e| corrupt(path, format!("retention record: {e}")))
    }

    /// Write `DIR/retention` durably. With `fenced` (a writer on a store
    /// that honours conditional writes), only over the object this content
    /// was read from or last written to ([`Seen`]); a refusal is an I/O
    /// error (transient: the caller reads the object again and retries).
    pub(crate) fn write(&mut self, c: &Crypt, dir: &Path, fenced: bool) -> Result<(), RepoError> {
        let path = dir.join("retention");
        let payload = postcard::to_stdvec(&*self).map_err(|e| corrupt(&path, e.to_string()))?;
        let payload = c
            .seal_file(RecordKind::File, "retention", payload)
            .map_err(|e| corrupt(&path, e))?;
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&frame::encode(&payload));
        let objects = crate::store::of(&path)?.leasing();
        let (Some(objects), true) = (objects, fenced) else {
            return write_durably(&dir.join("tmp"), &path, &bytes, &KEEP_STEPS);
        };
        rewind_core::failpoint::hit(KEEP_STEPS.write).map_err(io_err(&path))?;
        let cond = match &self.seen {
            Seen::Unknown => PutIf::Always,
            Seen::Absent => PutIf::Absent,
            Seen::Tag(t) => PutIf::Matches(t.clone()),
        };
        match objects.put_if(&path, bytes, cond).map_err(io_err(&path))? {
            Written::Yes(tag) => {
                self.seen = tag.map_or(Seen::Unknown, Seen::Tag);
                Ok(())
            }
            Written::Refused => Err(changed(&path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("tmp")).unwrap();
        assert_eq!(
            KeepFile::read(&Crypt::plain(), t.path()).unwrap(),
            KeepFile::default()
        );
        let mut k = KeepFile::default();
        let c = k.clients.entry("laptop".into()).or_default();
        c.files.thinned_before = Some(Timestamp(100));
        c.files.points.insert(Timestamp(7));
        c.series.insert(b"dumps/db".to_vec(), Scope::default());
        k.bases.insert(ChunkId::of(b"dict"));
        k.condemned.insert(PackName([3; 16]), Timestamp(5));
        k.write(&Crypt::plain(), t.path(), false).unwrap();
        assert_eq!(KeepFile::read(&Crypt::plain(), t.path()).unwrap(), k);
        let p = t.path().join("retention");
        let mut b = std::fs::read(&p).unwrap();
        let n = b.len();
        b[n - 1] ^= 1;
        std::fs::write(&p, &b).unwrap();
        assert!(matches!(
            KeepFile::read(&Crypt::plain(), t.path()),
            Err(RepoError::Corrupt { .. })
        ));
    }
}
