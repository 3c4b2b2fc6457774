//! Reads of a pack's version records kept beside the index cache
//! (`idx_cache.rs`), so that opening an `s3://` repository again sends no
//! ranged GET per pack for its versions (docs/decisions.md, "Object
//! storage: index cache and requests (issue 20)").
//!
//! A pack is never written again under its name: it is uploaded whole
//! once (a retry uploads the same bytes) and a repair writes a new pack
//! under a new name. So the bytes at an offset of a pack of a given length
//! are the same for as long as the pack is listed; an entry
//! `<pack>.<offset>.rec` records the pack's length and the range, and the
//! blake3 of the bytes, and is used only when all three agree. What is
//! kept are the raw bytes of the object: what they mean (frames, records)
//! is checked by the reader every time, as for bytes from the store.
//!
//! # Guarantees
//!
//! - The bytes returned are the ones the store returned for the same
//!   range of the same pack name and length, or the store's own.
//! - Entries go when their pack's index object is no longer listed
//!   (`IndexCache::retain`); a failure to read or write one is logged and
//!   the store read instead.
//! - `verify` and chunk reads never go through this cache: damage in the
//!   store is found where it is.

use std::io;
use std::sync::Arc;

use crate::backend::ReadAt;
use crate::idx_cache::{IndexCache, read_entry, write_entry};
use crate::pack_name::PackName;

/// Pack `name`, `len` bytes long, read through the cache of `cache`.
struct CachedPack {
    dir: std::path::PathBuf,
    name: PackName,
    len: u64,
    inner: Arc<dyn ReadAt>,
}

/// `inner`, the pack `name` of `len` bytes, with its reads kept in
/// `cache` (the store's own reader when there is no cache).
pub(crate) fn reader(
    cache: Option<&IndexCache>,
    name: PackName,
    len: u64,
    inner: Arc<dyn ReadAt>,
) -> Arc<dyn ReadAt> {
    match cache {
        Some(c) => Arc::new(CachedPack {
            dir: c.dir().to_path_buf(),
            name,
            len,
            inner,
        }),
        None => inner,
    }
}

impl ReadAt for CachedPack {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let entry = entry_path(&self.dir, self.name, offset);
        // The range and the pack's length: what makes these bytes these.
        let version = format!("pack of {} bytes, {} at {offset}", self.len, buf.len());
        if let Some(b) = read_entry(&entry, buf.len() as u64, &version) {
            buf.copy_from_slice(&b);
            return Ok(());
        }
        self.inner.read_exact_at(buf, offset)?;
        write_entry(&self.dir, &entry, &version, buf);
        Ok(())
    }
}

/// The entry of the bytes at `offset` of pack `name`, in folder `dir`.
fn entry_path(dir: &std::path::Path, name: PackName, offset: u64) -> std::path::PathBuf {
    dir.join(format!("{}.{offset}.rec", name.to_hex()))
}

/// Whether `cache` has an entry for the bytes at `offset` of pack `name`
/// (whether it is sound is for the read to find).
pub(crate) fn has_entry(cache: &IndexCache, name: PackName, offset: u64) -> bool {
    entry_path(cache.dir(), name, offset).exists()
}
