//! Hard links seen by capture: the names of one inode are read once.
//! [`LinkMap`] keeps the chunk list of each multiply-linked inode state;
//! when one name gets new content the other known names are captured
//! again, and an event that names a new hard link finds the old names in
//! its directory ([`same_inode_in_dir`]).

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;

use rewind_core::{ChunkRef, Extent, FileMeta, FileTime};
use rustix::fs::{CWD, Mode, OFlags};

/// Inode states with more than one name, shared by the capture workers.
/// Bounded: past [`LINK_MAP_CAP`] inodes it starts again empty, which only
/// costs a second read of an inode's content.
#[derive(Default)]
pub struct LinkMap {
    inner: Mutex<HashMap<(u64, u64), LinkState>>,
}

/// Inodes remembered in a [`LinkMap`]. An entry is about 200 bytes plus its
/// chunk list; 200,000 multiply-linked files (a large hard-linked backup
/// tree) stay well under 100 MB.
const LINK_MAP_CAP: usize = 200_000;

struct LinkState {
    size: u64,
    mtime: FileTime,
    ctime: FileTime,
    sparse: Option<Vec<Extent>>,
    chunks: Vec<ChunkRef>,
    /// Names seen for this inode.
    paths: Vec<Vec<u8>>,
}

impl LinkMap {
    pub(crate) fn lookup(
        &self,
        meta: &FileMeta,
        path: &[u8],
    ) -> Option<(Vec<ChunkRef>, Option<Vec<Extent>>)> {
        let key = meta.hardlink_group?;
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let st = m.get_mut(&key)?;
        if st.size != meta.size || st.mtime != meta.mtime || st.ctime != meta.ctime {
            return None;
        }
        if !st.paths.iter().any(|p| p == path) {
            st.paths.push(path.to_vec());
        }
        Some((st.chunks.clone(), st.sparse.clone()))
    }

    /// Record the state just captured for `path`; returns the other known
    /// names to capture again because the inode changed (content or
    /// metadata: they are one object, and only this name had events), and
    /// how many names are known.
    pub(crate) fn record(
        &self,
        meta: &FileMeta,
        path: &[u8],
        chunks: &[ChunkRef],
    ) -> (Vec<Vec<u8>>, usize) {
        let Some(key) = meta.hardlink_group else {
            return (Vec::new(), 1);
        };
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= LINK_MAP_CAP && !m.contains_key(&key) {
            m.clear();
        }
        let st = m.entry(key).or_insert_with(|| LinkState {
            size: meta.size,
            mtime: meta.mtime,
            ctime: meta.ctime,
            sparse: None,
            chunks: chunks.to_vec(),
            paths: Vec::new(),
        });
        let changed = st.chunks != chunks || st.sparse != meta.sparse || st.ctime != meta.ctime;
        st.size = meta.size;
        st.mtime = meta.mtime;
        st.ctime = meta.ctime;
        st.sparse = meta.sparse.clone();
        st.chunks = chunks.to_vec();
        if !st.paths.iter().any(|p| p == path) {
            st.paths.push(path.to_vec());
        }
        let also = if changed {
            st.paths.iter().filter(|p| *p != path).cloned().collect()
        } else {
            Vec::new()
        };
        (also, st.paths.len())
    }
}

/// Other names of inode `ino` in the directory of `path` (`readdir` gives
/// inode numbers, so nothing is `lstat`ed). Used when an event names a
/// new hard link: the old name had no event of its own.
pub(crate) fn same_inode_in_dir(path: &Path, ino: u64) -> Vec<Vec<u8>> {
    let (Some(dir), Some(own)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let Ok(fd) = rustix::fs::openat(
        CWD,
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return Vec::new();
    };
    let Ok(entries) = rustix::fs::Dir::read_from(&fd) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_bytes();
        if e.ino() == ino && name != own.as_bytes() && name != b"." && name != b".." {
            let p = dir.join(std::ffi::OsStr::from_bytes(name));
            out.push(rewind_core::path::to_bytes(&p).to_vec());
        }
    }
    out
}
