//! The FUSE file system (fuser's `Filesystem`): kernel requests answered
//! from [`Views`], [`Nodes`] and the chunk cache. Read-only: the mount is
//! `ro`, and nothing here writes.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use rewind_core::{FileKind, FileTime, Version};

use crate::content::{ChunkCache, OpenFile};
use crate::names;
use crate::nodes::{self, Key, Nodes};
use crate::tree::{join, name_of};
use crate::views::{Failed, Moment, Views};

/// How long the kernel may keep a name or an attribute without asking
/// again: short, because `latest/` changes while the agent captures; a
/// second is what `ls -R` and a copy need (each name is asked for once).
const TTL: Duration = Duration::from_secs(1);

/// One entry of a directory listing.
struct Listed {
    ino: u64,
    kind: FileType,
    name: Vec<u8>,
}

/// The file system.
pub(crate) struct RewindFs {
    pub(crate) views: Views,
    pub(crate) nodes: Nodes,
    pub(crate) cache: ChunkCache,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    dirs: Mutex<HashMap<u64, Arc<Vec<Listed>>>>,
    next_fh: AtomicU64,
    /// The times of the mount's own directories.
    started: SystemTime,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn eio(e: Failed) -> Errno {
    tracing::warn!("{}", e.0);
    Errno::EIO
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Socket => FileType::Socket,
    }
}

fn system_time(t: FileTime) -> SystemTime {
    let d = Duration::new(t.sec.unsigned_abs(), t.nsec.min(999_999_999));
    if t.sec >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + Duration::new(0, t.nsec)
    }
}

/// The attributes of a stored version, as stored.
fn version_attr(ino: u64, v: &Version) -> FileAttr {
    let m = v.meta().expect("only present versions are shown");
    let size = match m.kind {
        FileKind::File => v.size(),
        FileKind::Symlink => m.symlink_target.as_ref().map_or(0, |t| t.len() as u64),
        _ => m.size,
    };
    let allocated = match &m.sparse {
        Some(extents) => extents.iter().map(|e| e.len).sum(),
        None => size,
    };
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: allocated.div_ceil(512),
        atime: system_time(m.atime),
        mtime: system_time(m.mtime),
        ctime: system_time(m.ctime),
        crtime: system_time(m.btime.unwrap_or(m.mtime)),
        kind: file_type(m.kind),
        perm: (m.mode & 0o7777) as u16,
        // Directories: 1, "not counted", so that no tool skips
        // subdirectories by their link count.
        nlink: if m.kind == FileKind::Dir {
            1
        } else {
            m.nlink.clamp(1, u32::MAX as u64) as u32
        },
        uid: m.uid,
        gid: m.gid,
        rdev: m.rdev as u32,
        blksize: 4096,
        flags: m.flags.unwrap_or(0),
    }
}

impl RewindFs {
    pub(crate) fn new(views: Views, cache: ChunkCache) -> RewindFs {
        RewindFs {
            views,
            nodes: Nodes::new(),
            cache,
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            started: SystemTime::now(),
        }
    }

    /// The attributes of one of the mount's own directories.
    fn own_dir(&self, ino: u64) -> FileAttr {
        let (uid, gid) = self.views.owner();
        FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind: FileType::Directory,
            perm: 0o555,
            nlink: 1,
            uid,
            gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// The version a node shows (`None` for the mount's own directories).
    fn version(&self, key: &Key) -> Result<Option<Version>, Errno> {
        match key {
            Key::View { moment, path, .. } => {
                let t = self.views.tree(*moment).map_err(eio)?;
                Ok(Some(t.get(path).ok_or(Errno::ENOENT)?.clone()))
            }
            Key::Version { path, seq } => {
                let vs = self.views.versions(path).map_err(eio)?;
                let v = vs.iter().find(|v| v.seq == *seq).ok_or(Errno::ENOENT)?;
                Ok(Some(v.clone()))
            }
            _ => Ok(None),
        }
    }

    fn attr(&self, ino: u64, key: &Key) -> Result<FileAttr, Errno> {
        Ok(match self.version(key)? {
            Some(v) => version_attr(ino, &v),
            None => self.own_dir(ino),
        })
    }

    fn key_of(&self, ino: INodeNo) -> Result<Key, Errno> {
        self.nodes.get(ino.0).ok_or(Errno::ENOENT)
    }

    /// The node `name` in the directory `parent`.
    fn child(&self, parent_ino: u64, parent: &Key, name: &[u8]) -> Result<Key, Errno> {
        let text = std::str::from_utf8(name).ok();
        match parent {
            Key::Root => match name {
                b"latest" => Ok(Key::View {
                    root: nodes::LATEST,
                    moment: Moment::Latest,
                    path: Box::from(&b"/"[..]),
                }),
                b"at" => Ok(Key::AtDir),
                b"days" => Ok(Key::DaysDir),
                b"versions" => Ok(Key::Folder(Box::from(&b"/"[..]))),
                _ => Err(Errno::ENOENT),
            },
            Key::AtDir | Key::Day(_) => {
                let t = text
                    .and_then(|s| names::parse_moment(s, &jiff::Zoned::now()))
                    .ok_or(Errno::ENOENT)?;
                Ok(Key::View {
                    root: nodes::view_root(parent_ino, name),
                    moment: Moment::At(t),
                    path: Box::from(&b"/"[..]),
                })
            }
            Key::DaysDir => Ok(Key::Day(
                text.and_then(names::parse_day).ok_or(Errno::ENOENT)?,
            )),
            Key::View { root, moment, path } => {
                let t = self.views.tree(*moment).map_err(eio)?;
                if t.children(path).is_none() {
                    return Err(Errno::ENOTDIR);
                }
                let p = join(path, name);
                t.get(&p).ok_or(Errno::ENOENT)?;
                Ok(Key::View {
                    root: *root,
                    moment: *moment,
                    path: p.into(),
                })
            }
            Key::Folder(dir) => self.classify(dir, name),
            Key::VersionsOf(path) => self
                .version_entries(path)?
                .into_iter()
                .find(|(n, _)| n == name)
                .map(|(_, seq)| Key::Version {
                    path: path.clone(),
                    seq,
                })
                .ok_or(Errno::ENOENT),
            Key::Version { .. } => Err(Errno::ENOTDIR),
        }
    }

    /// What `dir/name` is under `versions/`: a folder to walk into (one
    /// that exists now, or existed, or held something that did), or a path
    /// whose versions to list.
    fn classify(&self, dir: &[u8], name: &[u8]) -> Result<Key, Errno> {
        let p = join(dir, name);
        let latest = self.views.tree(Moment::Latest).map_err(eio)?;
        if let Some(v) = latest.get(&p) {
            return Ok(match v.meta().map(|m| m.kind) {
                Some(FileKind::Dir) => Key::Folder(p.into()),
                _ => Key::VersionsOf(p.into()),
            });
        }
        let deleted = self.views.deleted_below(dir).map_err(eio)?;
        let at = deleted.partition_point(|(q, _)| q.as_slice() < p.as_slice());
        match deleted.get(at) {
            Some((q, kind)) if *q == p => Ok(match kind {
                Some(FileKind::Dir) => Key::Folder(p.into()),
                _ => Key::VersionsOf(p.into()),
            }),
            _ if deleted[at..]
                .iter()
                .take_while(|(q, _)| q.starts_with(&p))
                .any(|(q, _)| q.get(p.len()) == Some(&b'/')) =>
            {
                Ok(Key::Folder(p.into()))
            }
            _ => Err(Errno::ENOENT),
        }
    }

    /// The entries of `versions/<path>/`: names and seqs of its present
    /// versions, oldest first; two in one millisecond are told apart by
    /// `~2`, `~3` before the extension.
    fn version_entries(&self, path: &[u8]) -> Result<Vec<(Vec<u8>, u64)>, Errno> {
        let vs = self.views.versions(path).map_err(eio)?;
        let mut out: Vec<(Vec<u8>, u64)> = Vec::new();
        let file = name_of(path);
        let ext = names::extension(file);
        for v in vs.iter().filter(|v| v.meta().is_some()) {
            let mut name = names::version_name(v.observed_at, &self.views.tz, file);
            let stem_len = name.len() - ext.len();
            let mut n = 1;
            while out.iter().any(|(o, _)| *o == name) {
                n += 1;
                let mut again = name[..stem_len].to_vec();
                again.extend_from_slice(format!("~{n}").as_bytes());
                again.extend_from_slice(ext);
                if !out.iter().any(|(o, _)| *o == again) {
                    name = again;
                    break;
                }
            }
            out.push((name, v.seq));
        }
        Ok(out)
    }

    /// The listing of a directory node.
    fn list(&self, ino: u64, key: &Key) -> Result<Vec<Listed>, Errno> {
        let dir = |ino: u64, name: &[u8]| Listed {
            ino,
            kind: FileType::Directory,
            name: name.to_vec(),
        };
        Ok(match key {
            Key::Root => vec![
                dir(nodes::LATEST, b"latest"),
                dir(nodes::AT, b"at"),
                dir(nodes::DAYS, b"days"),
                dir(nodes::VERSIONS, b"versions"),
            ],
            Key::AtDir => Vec::new(),
            Key::DaysDir => {
                let days = self.views.days().map_err(eio)?;
                days.iter()
                    .map(|d| {
                        let k = Key::Day(*d);
                        dir(k.ino(), names::day_name(*d).as_bytes())
                    })
                    .collect()
            }
            Key::Day(d) => {
                let moments = self.views.moments(*d).map_err(eio)?;
                moments
                    .iter()
                    .map(|t| {
                        let name = names::moment_name(*t, &self.views.tz);
                        let k = Key::View {
                            root: nodes::view_root(ino, name.as_bytes()),
                            moment: Moment::At(*t),
                            path: Box::from(&b"/"[..]),
                        };
                        dir(k.ino(), name.as_bytes())
                    })
                    .collect()
            }
            Key::View { root, moment, path } => {
                let t = self.views.tree(*moment).map_err(eio)?;
                let children = t.children(path).ok_or(Errno::ENOTDIR)?;
                children
                    .map(|v| {
                        let k = Key::View {
                            root: *root,
                            moment: *moment,
                            path: v.path.clone().into(),
                        };
                        Listed {
                            ino: k.ino(),
                            kind: file_type(v.meta().map_or(FileKind::File, |m| m.kind)),
                            name: name_of(&v.path).to_vec(),
                        }
                    })
                    .collect()
            }
            Key::Folder(path) => {
                let latest = self.views.tree(Moment::Latest).map_err(eio)?;
                let mut names: Vec<Vec<u8>> = latest
                    .children(path)
                    .into_iter()
                    .flatten()
                    .map(|v| name_of(&v.path).to_vec())
                    .collect();
                let deleted = self.views.deleted_below(path).map_err(eio)?;
                let base_len = if path.as_ref() == b"/" {
                    1
                } else {
                    path.len() + 1
                };
                for (q, _) in deleted.iter() {
                    if let Some(rest) = q.get(base_len..) {
                        let first = rest.split(|&b| b == b'/').next().unwrap_or(rest);
                        if !first.is_empty() && !names.iter().any(|n| n == first) {
                            names.push(first.to_vec());
                        }
                    }
                }
                names.sort();
                let mut out = Vec::with_capacity(names.len());
                for n in names {
                    if let Ok(k) = self.classify(path, &n) {
                        out.push(dir(k.ino(), &n));
                    }
                }
                out
            }
            Key::VersionsOf(path) => {
                let vs = self.views.versions(path).map_err(eio)?;
                self.version_entries(path)?
                    .into_iter()
                    .map(|(name, seq)| {
                        let kind = vs
                            .iter()
                            .find(|v| v.seq == seq)
                            .and_then(|v| v.meta())
                            .map_or(FileKind::File, |m| m.kind);
                        let k = Key::Version {
                            path: path.clone(),
                            seq,
                        };
                        Listed {
                            ino: k.ino(),
                            kind: file_type(kind),
                            name,
                        }
                    })
                    .collect()
            }
            Key::Version { .. } => return Err(Errno::ENOTDIR),
        })
    }

    fn handle(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }
}

impl Filesystem for RewindFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = (|| {
            let pkey = self.key_of(parent)?;
            let key = self.child(parent.0, &pkey, name.as_bytes())?;
            let ino = key.ino();
            let attr = self.attr(ino, &key)?;
            self.nodes.looked_up(ino, key);
            Ok::<_, Errno>(attr)
        })();
        match r {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.nodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.key_of(ino).and_then(|k| self.attr(ino.0, &k)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = self.key_of(ino).and_then(|k| self.version(&k));
        match r {
            Ok(Some(v)) => match v.meta().and_then(|m| m.symlink_target.as_ref()) {
                Some(t) => reply.data(t),
                None => reply.error(Errno::EINVAL),
            },
            Ok(None) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let r = (|| {
            let key = self.key_of(ino)?;
            let v = self.version(&key)?.ok_or(Errno::EISDIR)?;
            match v.meta().map(|m| m.kind) {
                Some(FileKind::File) => {}
                Some(FileKind::Dir) => return Err(Errno::EISDIR),
                _ => return Err(Errno::ENXIO),
            }
            // A past moment does not change: the kernel may keep its pages
            // between opens. `latest/` may, so it is read afresh.
            let keep = match key {
                Key::View {
                    moment: Moment::Latest,
                    ..
                } => FopenFlags::empty(),
                _ => FopenFlags::FOPEN_KEEP_CACHE,
            };
            let fh = self.handle();
            lock(&self.files).insert(fh, Arc::new(OpenFile::new(&v)));
            Ok((fh, keep))
        })();
        match r {
            Ok((fh, flags)) => reply.opened(FileHandle(fh), flags),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(f) = lock(&self.files).get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        match f.read(offset, size, self.views.repo(), &self.cache) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(eio(e.into())),
        }
    }

    // Called at every close; nothing is ever written, so nothing to flush.
    // (fsync is left to the kernel, which answers it itself once told
    // ENOSYS.)
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.files).remove(&fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let r = self.key_of(ino).and_then(|k| self.list(ino.0, &k));
        match r {
            Ok(entries) => {
                let fh = self.handle();
                lock(&self.dirs).insert(fh, Arc::new(entries));
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(entries) = lock(&self.dirs).get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        // Offsets: 1 is ".", 2 "..", 3 + i the i-th entry.
        let mut next = offset;
        while next < 2 {
            let name: &[u8] = if next == 0 { b"." } else { b".." };
            let n = if next == 0 { ino.0 } else { nodes::ROOT };
            next += 1;
            if reply.add(
                INodeNo(n),
                next,
                FileType::Directory,
                OsStr::from_bytes(name),
            ) {
                return reply.ok();
            }
        }
        for (i, e) in entries.iter().enumerate().skip((next - 2) as usize) {
            let off = i as u64 + 3;
            if reply.add(INodeNo(e.ino), off, e.kind, OsStr::from_bytes(&e.name)) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.dirs).remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let r = (|| {
            let v = self.key_of(ino).and_then(|k| self.version(&k))?;
            let x = v
                .as_ref()
                .and_then(|v| v.xattrs().iter().find(|x| x.name == name.as_bytes()))
                .ok_or(Errno::NO_XATTR)?;
            self.views
                .repo()
                .read_chunk(&x.value.id)
                .map_err(|e| eio(e.into()))
        })();
        match r {
            Ok(value) if size == 0 => reply.size(value.len() as u32),
            Ok(value) if value.len() > size as usize => reply.error(Errno::ERANGE),
            Ok(value) => reply.data(&value),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let r = self.key_of(ino).and_then(|k| self.version(&k));
        match r {
            Ok(v) => {
                let mut list = Vec::new();
                for x in v.iter().flat_map(|v| v.xattrs()) {
                    list.extend_from_slice(&x.name);
                    list.push(0);
                }
                if size == 0 {
                    reply.size(list.len() as u32);
                } else if list.len() > size as usize {
                    reply.error(Errno::ERANGE);
                } else {
                    reply.data(&list);
                }
            }
            Err(e) => reply.error(e),
        }
    }
}
