//! Listing the files of a repository directory, and finding what the
//! in-memory indexes do not know yet.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use rewind_core::RepoError;
use tracing::{debug, info, warn};

use crate::crypt::Crypt;
use crate::durable::io_err;
use crate::index;
use crate::pack;
use crate::pack_index::PackIndex;
use crate::pack_name::PackName;

/// The names in `dir`; a missing directory is empty.
fn entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, RepoError> {
    crate::store::list(dir).map_err(io_err(dir))
}

/// Every `packs/<2 hex>/<32 hex>.pack`, by name.
pub(crate) fn list_packs(dir: &Path) -> Result<BTreeMap<PackName, PathBuf>, RepoError> {
    let mut out = BTreeMap::new();
    for (sub, subpath) in entries(&dir.join("packs"))? {
        if sub.len() != 2 || !sub.bytes().all(|b| b.is_ascii_hexdigit()) {
            debug!(path = %subpath.display(), "ignoring a foreign entry in packs/");
            continue;
        }
        for (file, path) in entries(&subpath)? {
            match file.strip_suffix(".pack").and_then(PackName::parse) {
                Some(name) if name.to_hex().starts_with(&sub) => {
                    out.insert(name, path);
                }
                _ => debug!(path = %path.display(), "ignoring a foreign file in packs/"),
            }
        }
    }
    Ok(out)
}

/// Every `index/<32 hex>.idx`, by pack name.
pub(crate) fn list_idx(dir: &Path) -> Result<BTreeSet<PackName>, RepoError> {
    let mut out = BTreeSet::new();
    for (file, path) in entries(&dir.join("index"))? {
        match file.strip_suffix(".idx").and_then(PackName::parse) {
            Some(name) => {
                out.insert(name);
            }
            None => debug!(path = %path.display(), "ignoring a foreign file in index/"),
        }
    }
    Ok(out)
}

/// How [`discover`] treats what it finds.
#[derive(Clone, Copy)]
pub(crate) struct Discover {
    /// Write the index of a pack that has none (or a bad one): writers only.
    pub repair: bool,
    /// Log index files whose pack is missing (at open, not on every refresh).
    pub warn_orphans: bool,
}

/// The contents of every pack on disk not in `known`: from its index file
/// when that is sound and matches the pack's length, else from the pack
/// itself (footer, or a salvaging scan). What comes from an index file
/// comes without its versions ([`PackIndex::versions_pending`]): [`fill`]
/// loads them, one pack at a time, so that opening a repository never
/// holds every pack's decoded versions at once. Files that vanish while we
/// look are skipped: a concurrent writer only ever adds files by rename,
/// and a pack or index that disappears was removed on purpose.
pub(crate) fn discover(
    c: &Crypt,
    dir: &Path,
    known: &HashSet<PackName>,
    how: Discover,
) -> Result<Vec<PackIndex>, RepoError> {
    // Index files first: a pack renamed into place after this listing is
    // then merely "a pack without an index", which is handled.
    let idx_names = list_idx(dir)?;
    let packs = list_packs(dir)?;
    if how.warn_orphans {
        for n in idx_names.iter().filter(|n| !packs.contains_key(n)) {
            warn!(index = %n.idx_path(dir).display(), "index file without its pack; ignored");
        }
    }
    let mut out = Vec::new();
    for (name, path) in packs {
        if known.contains(&name) {
            continue;
        }
        let pack_len = match crate::store::len(&path) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mut from_idx = None;
        if idx_names.contains(&name) {
            let idx_path = name.idx_path(dir);
            match index::read_header(c, dir, name) {
                Ok(Some(i)) if i.pack == name && i.pack_len == pack_len => from_idx = Some(i),
                Ok(Some(_)) => warn!(
                    index = %idx_path.display(),
                    "index does not describe its pack (name or length differ); reading the pack"
                ),
                Ok(None) => {}
                Err(e) => warn!(error = %e, "unreadable index; reading the pack instead"),
            }
        }
        let idx = match from_idx {
            Some(i) => i,
            None => match from_pack(c, dir, &path, name, how)? {
                Some(i) => i,
                None => continue,
            },
        };
        out.push(idx);
    }
    Ok(out)
}

/// `idx` with its versions: loaded from its pack's version records when
/// [`discover`] left them pending, else as it is. A record that does not
/// read as its index says makes the index unsound: the pack itself is read
/// instead (and, for a writer, its index written again). `None` when the
/// pack is gone meanwhile (removed on purpose).
pub(crate) fn fill(
    c: &Crypt,
    dir: &Path,
    mut idx: PackIndex,
    how: Discover,
) -> Result<Option<PackIndex>, RepoError> {
    if !idx.versions_pending() {
        return Ok(Some(idx));
    }
    match index::load_versions(c, dir, idx.pack, &idx.version_records) {
        Ok(vs) => {
            idx.versions = vs;
            Ok(Some(idx))
        }
        Err(RepoError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => {
            warn!(error = %e, "index does not match its pack's version records; reading the pack instead");
            let path = idx.pack.pack_path(dir);
            from_pack(c, dir, &path, idx.pack, how)
        }
    }
}

/// The contents of pack `name` at `path` read from the pack itself
/// (salvaging a damaged one); its index file written when `how.repair`.
/// `None` when the pack is gone.
fn from_pack(
    c: &Crypt,
    dir: &Path,
    path: &Path,
    name: PackName,
    how: Discover,
) -> Result<Option<PackIndex>, RepoError> {
    let i = match pack::load(c, path, name) {
        Ok(i) => i,
        Err(RepoError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    if let Some(d) = &i.damage {
        warn!(pack = %path.display(), "damaged pack: {d}");
    }
    if how.repair {
        index::write(c, dir, &i)?;
        info!(pack = %path.display(), "wrote the missing index of a pack");
    }
    Ok(Some(i))
}
