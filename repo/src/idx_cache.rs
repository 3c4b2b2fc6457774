//! A local cache of a remote repository's index objects, so that opening
//! an `s3://` repository does not GET every index object each time
//! (docs/decisions.md, "Object storage: index cache and requests (issue
//! 20)"). The cache holds raw bytes; what they mean is `crate::index`'s.
//!
//! ```text
//! CACHE/CACHEDIR.TAG                      marks the folder for backup tools
//! CACHE/<repo id>/index/<32 hex>.idx      one entry per index object
//! CACHE/<repo id>/index/<32 hex>.<n>.rec  a pack's version record at offset n (`pack_cache.rs`)
//! CACHE/<repo id>/index/.tmp-<random>     an entry being written
//! ```
//!
//! `CACHE` is `REWIND_CACHE_DIR`, else `$XDG_CACHE_HOME/rewind`, else
//! `~/.cache/rewind` (`~/Library/Caches/rewind` on macOS);
//! `REWIND_NO_CACHE=1` turns the cache off. An entry is `RWIDXC01`, the
//! object's length (u64 LE), the length (u32 LE) and bytes of what its
//! listing said of its version (ETag and time of last change), the blake3
//! of the content (32 bytes), then the content.
//!
//! # Guarantees
//!
//! - An entry is used only when the length and version recorded in it are
//!   the ones the store's listing gives now, and its content matches the
//!   blake3 recorded beside it; any other entry (damaged, stale, foreign)
//!   is deleted and the object is read from the store. An index object
//!   written again under the same name (a rebuild, a repair) has another
//!   ETag and time, so the store always wins.
//! - Nothing depends on the cache: a failure to read, write or delete an
//!   entry is logged and the store is read instead.
//! - An entry is written to a temporary file and renamed into place, so no
//!   process ever reads half an entry. It is not fsynced: a power cut may
//!   leave a torn entry, which its checksum rejects.
//! - Entries of index objects the store no longer lists are deleted when
//!   the repository is opened.
//!
//! # After a crash
//!
//! At worst a temporary file `.tmp-*`, deleted by a later open once it is
//! an hour old (a younger one may be another process's write under way).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{debug, warn};

use crate::pack_name::PackName;
use crate::store::Listed;

/// The first bytes of every entry.
const MAGIC: &[u8; 8] = b"RWIDXC01";

/// How old a temporary file must be before an open deletes it: far longer
/// than writing one small entry takes, so it is no live process's.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// What `CACHEDIR.TAG` must begin with (<https://bford.info/cachedir/>).
const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by rewind.\n\
# For information about cache directory tags, see https://bford.info/cachedir/\n";

/// The index cache of one repository.
#[derive(Debug)]
pub(crate) struct IndexCache {
    dir: PathBuf,
}

#[cfg(test)]
thread_local! {
    /// The cache folder of this test thread's repositories (tests never
    /// read the environment, so they never touch a real home).
    static TEST_BASE: std::cell::RefCell<Option<PathBuf>> =
        const { std::cell::RefCell::new(None) };
}

/// Use `base` as the cache folder of repositories this thread opens
/// (`None`: no cache, the default in tests).
#[cfg(test)]
pub(crate) fn set_test_base(base: Option<PathBuf>) {
    TEST_BASE.with(|b| *b.borrow_mut() = base);
}

/// The cache folder of every repository, `None` when caching is off.
#[cfg(test)]
fn base() -> Option<PathBuf> {
    TEST_BASE.with(|b| b.borrow().clone())
}

/// The cache folder a command-line option chose for this process
/// (`None` inside: no cache), over the environment.
static CHOSEN: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();

/// Keep the index caches of repositories this process opens under `dir`
/// (`None`: keep none), whatever `REWIND_CACHE_DIR` and `REWIND_NO_CACHE`
/// say: what `--cache-dir` and `--no-cache` set. The first choice stays.
pub fn choose_index_cache(dir: Option<PathBuf>) {
    let _ = CHOSEN.set(dir);
}

/// The cache folder of every repository, `None` when caching is off.
#[cfg(not(test))]
fn base() -> Option<PathBuf> {
    if let Some(chosen) = CHOSEN.get() {
        return chosen.clone();
    }
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    base_from(&var)
}

/// [`base`] from the variables `var` gives.
fn base_from(var: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    if var("REWIND_NO_CACHE").is_some_and(|v| v != "0") {
        return None;
    }
    if let Some(d) = var("REWIND_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    let home = var("HOME").map(PathBuf::from).filter(|h| h.is_absolute());
    if cfg!(target_os = "macos") {
        return home.map(|h| h.join("Library/Caches/rewind"));
    }
    // The XDG spec: a relative value is invalid and ignored.
    match var("XDG_CACHE_HOME").map(PathBuf::from) {
        Some(x) if x.is_absolute() => Some(x.join("rewind")),
        _ => home.map(|h| h.join(".cache/rewind")),
    }
}

impl IndexCache {
    /// The cache of the repository `id` at `root`: `None` for a local
    /// directory (its index files are local already), when caching is off,
    /// when the id is not a plain hex id (it comes from the store), or
    /// when the folder cannot be made (said once, then the store is read).
    pub(crate) fn open(root: &Path, id: &str) -> Option<IndexCache> {
        if !crate::store::is_url(root) {
            return None;
        }
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let base = base()?;
        let dir = base.join(id).join("index");
        if let Err(e) = rewind_core::private::create_dir_all(&dir) {
            warn!(cache = %dir.display(), error = %e, "cannot use the index cache; reading every index from the store");
            return None;
        }
        let tag = base.join("CACHEDIR.TAG");
        if !tag.exists() {
            let _ = rewind_core::private::write_file(&tag, CACHEDIR_TAG.as_bytes());
        }
        Some(IndexCache { dir })
    }

    fn entry(&self, name: PackName) -> PathBuf {
        self.dir.join(format!("{}.idx", name.to_hex()))
    }

    /// The folder of this repository's entries.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cached content of the index object of `name`, if the entry is
    /// whole and was made from the object `listed` describes; any other
    /// entry is deleted.
    pub(crate) fn get(&self, name: PackName, listed: &Listed) -> Option<Vec<u8>> {
        read_entry(&self.entry(name), listed.len?, listed.version.as_deref()?)
    }

    /// Keep `content`, just read from the object `listed` describes, for
    /// the next open. Not kept when the listing said nothing of the object
    /// or its length differs (it changed between the listing and the read).
    pub(crate) fn put(&self, name: PackName, listed: &Listed, content: &[u8]) {
        let (Some(len), Some(version)) = (listed.len, listed.version.as_deref()) else {
            return;
        };
        if len == content.len() as u64 {
            write_entry(&self.dir, &self.entry(name), version, content);
        }
    }

    /// Delete the entry of `name`, if any.
    pub(crate) fn forget(&self, name: PackName) {
        let path = self.entry(name);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                debug!(entry = %path.display(), error = %e, "could not delete a cache entry")
            }
            _ => {}
        }
    }

    /// Delete every entry whose index object is not in `listed` (the whole
    /// listing of `index/`), and temporary files older than an hour.
    pub(crate) fn retain(&self, listed: &BTreeMap<PackName, Listed>) {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.flatten() {
            let file = e.file_name();
            let file = file.to_string_lossy();
            let path = e.path();
            let drop = if file.starts_with(".tmp-") {
                e.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STALE_TMP)
            } else {
                // `<pack>.idx`, and `<pack>.<offset>.rec` (`pack_cache.rs`).
                let stem = file
                    .strip_suffix(".idx")
                    .or_else(|| file.strip_suffix(".rec").and_then(|f| f.split('.').next()));
                match stem.and_then(PackName::parse) {
                    Some(name) => !listed.contains_key(&name),
                    None => false,
                }
            };
            if drop {
                debug!(entry = %path.display(), "deleting a cache entry the store no longer lists");
                let _ = fs::remove_file(&path);
            }
        }
    }
}

/// The content of the entry at `path` if it is whole and was made from
/// `len` bytes of the object whose version was `version`; any other entry
/// is deleted.
pub(crate) fn read_entry(path: &Path, len: u64, version: &str) -> Option<Vec<u8>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            debug!(entry = %path.display(), error = %e, "unreadable cache entry");
            return None;
        }
    };
    match decode(&bytes, len, version) {
        Ok(content) => Some(content.to_vec()),
        Err(why) => {
            debug!(entry = %path.display(), why, "dropping a cache entry");
            if let Err(e) = fs::remove_file(path) {
                debug!(entry = %path.display(), error = %e, "could not delete a cache entry");
            }
            None
        }
    }
}

/// Make `content` (of an object whose version was `version`) the entry at
/// `dest` in folder `dir`: a temporary file renamed into place, no fsync.
/// Failures are logged, never returned: nothing depends on the cache.
pub(crate) fn write_entry(dir: &Path, dest: &Path, version: &str, content: &[u8]) {
    if version.len() > u32::MAX as usize {
        return;
    }
    let mut e = Vec::with_capacity(content.len() + version.len() + 60);
    e.extend_from_slice(MAGIC);
    e.extend_from_slice(&(content.len() as u64).to_le_bytes());
    e.extend_from_slice(&(version.len() as u32).to_le_bytes());
    e.extend_from_slice(version.as_bytes());
    e.extend_from_slice(blake3::hash(content).as_bytes());
    e.extend_from_slice(content);
    let r: [u8; 8] = rand::random();
    let tmp = dir.join(format!(".tmp-{}", hex::encode(r)));
    let done = rewind_core::private::options()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&e))
        .and_then(|()| fs::rename(&tmp, dest));
    if let Err(e) = done {
        let _ = fs::remove_file(&tmp);
        debug!(entry = %dest.display(), error = %e, "could not write a cache entry");
    }
}

/// The content of entry `bytes`, checked against itself and against the
/// object's `len` and `version`.
fn decode<'a>(
    bytes: &'a [u8],
    want_len: u64,
    want_version: &str,
) -> Result<&'a [u8], &'static str> {
    let rest = bytes.strip_prefix(MAGIC).ok_or("not an entry")?;
    let (len, rest) = split(rest, 8)?;
    let len = u64::from_le_bytes(len.try_into().map_err(|_| "short")?);
    let (vlen, rest) = split(rest, 4)?;
    let vlen = u32::from_le_bytes(vlen.try_into().map_err(|_| "short")?) as usize;
    let (version, rest) = split(rest, vlen)?;
    let (sum, content) = split(rest, 32)?;
    if content.len() as u64 != len {
        return Err("truncated or overlong");
    }
    if blake3::hash(content).as_bytes() != sum {
        return Err("damaged (checksum)");
    }
    if want_len != len || want_version.as_bytes() != version {
        return Err("stale (the object changed)");
    }
    Ok(content)
}

/// `b` cut after `n` bytes.
fn split(b: &[u8], n: usize) -> Result<(&[u8], &[u8]), &'static str> {
    if b.len() < n {
        return Err("short");
    }
    Ok(b.split_at(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn env(vars: &[(&str, &str)]) -> Option<PathBuf> {
        let vars: Vec<(String, OsString)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        base_from(&move |k: &str| {
            vars.iter()
                .find(|(n, v)| n == k && !v.is_empty())
                .map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn the_cache_folder_follows_the_environment() {
        let home = [("HOME", "/home/u")];
        let xdg = if cfg!(target_os = "macos") {
            "/home/u/Library/Caches/rewind"
        } else {
            "/home/u/.cache/rewind"
        };
        assert_eq!(env(&home), Some(PathBuf::from(xdg)));
        if !cfg!(target_os = "macos") {
            let x = [("HOME", "/home/u"), ("XDG_CACHE_HOME", "/c")];
            assert_eq!(env(&x), Some(PathBuf::from("/c/rewind")));
            let rel = [("HOME", "/home/u"), ("XDG_CACHE_HOME", "c")];
            assert_eq!(env(&rel), Some(PathBuf::from(xdg)));
        }
        let d = [("HOME", "/home/u"), ("REWIND_CACHE_DIR", "/d")];
        assert_eq!(env(&d), Some(PathBuf::from("/d")));
        let off = [("REWIND_CACHE_DIR", "/d"), ("REWIND_NO_CACHE", "1")];
        assert_eq!(env(&off), None);
        let on = [("REWIND_CACHE_DIR", "/d"), ("REWIND_NO_CACHE", "0")];
        assert_eq!(env(&on), Some(PathBuf::from("/d")));
        assert_eq!(env(&[]), None);
    }

    fn listed(content: &[u8], version: &str) -> Listed {
        Listed {
            name: "x.idx".into(),
            path: PathBuf::from("s3://b/r/index/x.idx"),
            len: Some(content.len() as u64),
            version: Some(version.into()),
        }
    }

    #[test]
    fn entries_are_used_only_whole_and_for_the_listed_object() {
        let base = tempfile::tempdir().unwrap();
        set_test_base(Some(base.path().to_path_buf()));
        let c = IndexCache::open(Path::new("s3://b/r"), "00ff").unwrap();
        set_test_base(None);
        assert!(base.path().join("CACHEDIR.TAG").is_file());
        let (n, l) = (PackName::random(), listed(b"content", "e1 5"));
        assert_eq!(c.get(n, &l), None);
        c.put(n, &l, b"content");
        assert_eq!(c.get(n, &l).as_deref(), Some(&b"content"[..]));
        // Written again under the same name: stale, deleted.
        assert_eq!(c.get(n, &listed(b"content", "e2 6")), None);
        assert!(!c.entry(n).exists());
        // Damaged: deleted.
        c.put(n, &l, b"content");
        let mut bytes = fs::read(c.entry(n)).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(c.entry(n), &bytes).unwrap();
        assert_eq!(c.get(n, &l), None);
        assert!(!c.entry(n).exists());
        // A length that disagrees with the listing is not kept.
        c.put(n, &l, b"other!!!");
        assert!(!c.entry(n).exists());
        // Not listed any more: deleted at the next open.
        c.put(n, &l, b"content");
        let kept = PackName::random();
        c.put(kept, &l, b"content");
        let rec = |p: PackName| c.dir.join(format!("{}.8.rec", p.to_hex()));
        write_entry(&c.dir, &rec(n), "v", b"r");
        write_entry(&c.dir, &rec(kept), "v", b"r");
        assert_eq!(read_entry(&rec(kept), 1, "v").as_deref(), Some(&b"r"[..]));
        let old_tmp = c.dir.join(".tmp-0");
        fs::write(&old_tmp, b"x").unwrap();
        let f = fs::File::options().write(true).open(&old_tmp).unwrap();
        f.set_modified(std::time::SystemTime::now() - 2 * STALE_TMP)
            .unwrap();
        let new_tmp = c.dir.join(".tmp-1");
        fs::write(&new_tmp, b"x").unwrap();
        c.retain(&BTreeMap::from([(kept, l.clone())]));
        assert!(!c.entry(n).exists());
        assert!(c.entry(kept).exists());
        assert!(!rec(n).exists() && rec(kept).exists());
        assert!(!old_tmp.exists());
        assert!(new_tmp.exists());
        // No cache for a directory, or for an id that is not plain hex.
        set_test_base(Some(base.path().to_path_buf()));
        assert!(IndexCache::open(base.path(), "00ff").is_none());
        assert!(IndexCache::open(Path::new("s3://b/r"), "../x").is_none());
        set_test_base(None);
    }
}
