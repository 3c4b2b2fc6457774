//! Listing the files of a repository directory, and finding what the
//! in-memory indexes do not know yet.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use rewind_core::RepoError;
use tracing::{debug, info, warn};

use crate::crypt::Crypt;
use crate::durable::io_err;
use crate::idx_cache::IndexCache;
use crate::index;
use crate::pack;
use crate::pack_index::PackIndex;
use crate::pack_name::PackName;
use crate::store::Listed;

/// The names in `dir` with what the listing told of them; a missing
/// directory is empty.
fn entries(dir: &Path) -> Result<Vec<Listed>, RepoError> {
    crate::store::list_meta(dir).map_err(io_err(dir))
}

/// Every `packs/<2 hex>/<32 hex>.pack`, by name.
pub(crate) fn list_packs(dir: &Path) -> Result<BTreeMap<PackName, PathBuf>, RepoError> {
    Ok(list_packs_meta(dir)?
        .into_iter()
        .map(|(n, l)| (n, l.path))
        .collect())
}

/// Every `packs/<2 hex>/<32 hex>.pack`, by name, with its length when the
/// listing carries it (an object store's does: no HEAD per pack).
pub(crate) fn list_packs_meta(dir: &Path) -> Result<BTreeMap<PackName, Listed>, RepoError> {
    let packs = dir.join("packs");
    let two_hex = |sub: &str| {
        let ours = sub.len() == 2 && sub.bytes().all(|b| b.is_ascii_hexdigit());
        if !ours {
            debug!(path = %packs.join(sub).display(), "ignoring a foreign entry in packs/");
        }
        ours
    };
    let mut out = BTreeMap::new();
    for (sub, file) in crate::store::list_nested(&packs, &two_hex).map_err(io_err(&packs))? {
        match file.name.strip_suffix(".pack").and_then(PackName::parse) {
            Some(name) if name.to_hex().starts_with(&sub) => {
                out.insert(name, file);
            }
            _ => debug!(path = %file.path.display(), "ignoring a foreign file in packs/"),
        }
    }
    Ok(out)
}

/// Every `index/<32 hex>.idx`, by pack name.
pub(crate) fn list_idx(dir: &Path) -> Result<BTreeSet<PackName>, RepoError> {
    Ok(list_idx_meta(dir)?.into_keys().collect())
}

/// Every `index/<32 hex>.idx`, by pack name, with what the listing told
/// of it.
pub(crate) fn list_idx_meta(dir: &Path) -> Result<BTreeMap<PackName, Listed>, RepoError> {
    let mut out = BTreeMap::new();
    for file in entries(&dir.join("index"))? {
        match file.name.strip_suffix(".idx").and_then(PackName::parse) {
            Some(name) => {
                out.insert(name, file);
            }
            None => debug!(path = %file.path.display(), "ignoring a foreign file in index/"),
        }
    }
    Ok(out)
}

/// How [`discover`] treats what it finds.
#[derive(Clone, Copy)]
pub(crate) struct Discover<'a> {
    /// Write the index of a pack that has none (or a bad one): writers only.
    pub repair: bool,
    /// Log index files whose pack is missing (at open, not on every refresh).
    pub warn_orphans: bool,
    /// The local cache of index objects (a repository on an object store).
    pub cache: Option<&'a IndexCache>,
}

/// Requests for index objects and version records sent at once while
/// opening a repository on an object store whose cache lacks them: one
/// after the other, a cold open of 66 packs took 3 s on a loopback
/// `s3s-fs` (docs/decisions.md, "Opening a repository on an object store
/// with a cold cache").
const FETCHES_AT_ONCE: usize = 8;

impl Discover<'_> {
    /// How many packs' objects to read at once: several on an object
    /// store (which has a cache), one at a time from a directory.
    pub(crate) fn fetches_at_once(&self) -> usize {
        if self.cache.is_some() {
            FETCHES_AT_ONCE
        } else {
            1
        }
    }
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
    how: Discover<'_>,
) -> Result<Vec<PackIndex>, RepoError> {
    // Index files first: a pack renamed into place after this listing is
    // then merely "a pack without an index", which is handled.
    let idx_names = list_idx_meta(dir)?;
    let packs = list_packs_meta(dir)?;
    if let Some(c) = how.cache {
        c.retain(&idx_names);
    }
    if how.warn_orphans {
        for n in idx_names.keys().filter(|n| !packs.contains_key(n)) {
            warn!(index = %n.idx_path(dir).display(), "index file without its pack; ignored");
        }
    }
    let new: Vec<(PackName, Listed)> = packs
        .into_iter()
        .filter(|(name, _)| !known.contains(name))
        .collect();
    // On an object store each index object not in the cache is a round
    // trip: several are fetched at once.
    let found = crate::par::try_map(&new, how.fetches_at_once(), |(name, listed)| {
        let header = || match idx_names.get(name) {
            Some(l) => read_header(c, dir, *name, l, how.cache),
            None => Ok(None),
        };
        one_pack(c, dir, *name, listed.clone(), header, how)
    })?;
    Ok(found.into_iter().flatten().collect())
}

/// [`discover`] of the packs `packs` already listed, in a local directory
/// without a cache: each index file is read if it is there (no listing of
/// `index/`, which a reader over the version index on disk does not need
/// for the few packs it reads).
pub(crate) fn discover_listed(
    c: &Crypt,
    dir: &Path,
    packs: impl IntoIterator<Item = (PackName, Listed)>,
    how: Discover<'_>,
) -> Result<Vec<PackIndex>, RepoError> {
    let mut out = Vec::new();
    for (name, listed) in packs {
        let header = || index::read_header(c, dir, name);
        if let Some(i) = one_pack(c, dir, name, listed, header, how)? {
            out.push(i);
        }
    }
    Ok(out)
}

/// The contents of pack `name` (listed as `listed`): from its index
/// header (`header`) when that is sound and matches the pack's length,
/// else from the pack itself. `None` when the pack vanished meanwhile.
fn one_pack(
    c: &Crypt,
    dir: &Path,
    name: PackName,
    listed: Listed,
    header: impl FnOnce() -> Result<Option<PackIndex>, RepoError>,
    how: Discover<'_>,
) -> Result<Option<PackIndex>, RepoError> {
    let path = listed.path;
    let pack_len = match listed.len.map_or_else(|| crate::store::len(&path), Ok) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let mut from_idx = None;
    let idx_path = name.idx_path(dir);
    match header() {
        Ok(Some(i)) if i.pack == name && i.pack_len == pack_len => from_idx = Some(i),
        Ok(Some(_)) => warn!(
            index = %idx_path.display(),
            "index does not describe its pack (name or length differ); reading the pack"
        ),
        Ok(None) => {}
        Err(e) => warn!(error = %e, "unreadable index; reading the pack instead"),
    }
    match from_idx {
        Some(i) => Ok(Some(i)),
        None => from_pack(c, dir, &path, name, how),
    }
}

/// The index object of pack `name` without its versions
/// ([`index::read_header`]): from the local cache when it holds the object
/// `listed` describes and that reads, else from the store (and then kept
/// in the cache). A cached copy that does not read is dropped: the store's
/// object is the truth.
fn read_header(
    c: &Crypt,
    dir: &Path,
    name: PackName,
    listed: &Listed,
    cache: Option<&IndexCache>,
) -> Result<Option<PackIndex>, RepoError> {
    let Some(cache) = cache else {
        return index::read_header(c, dir, name);
    };
    let path = name.idx_path(dir);
    if let Some(bytes) = cache.get(name, listed) {
        match index::header_from(c, name, &path, Box::new(io::Cursor::new(bytes))) {
            Ok(i) => return Ok(Some(i)),
            Err(e) => {
                warn!(error = %e, "a cached index does not read; reading the store's");
                cache.forget(name);
            }
        }
    }
    let mut bytes = Vec::new();
    match crate::store::open_read(&path).and_then(|mut r| r.read_to_end(&mut bytes)) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    }
    let idx = index::header_from(c, name, &path, Box::new(io::Cursor::new(bytes.clone())))?;
    cache.put(name, listed, &bytes);
    Ok(Some(idx))
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
    how: Discover<'_>,
) -> Result<Option<PackIndex>, RepoError> {
    if !idx.versions_pending() {
        return Ok(Some(idx));
    }
    match index::load_versions(
        c,
        dir,
        idx.pack,
        idx.pack_len,
        &idx.version_records,
        how.cache,
    ) {
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
    how: Discover<'_>,
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
