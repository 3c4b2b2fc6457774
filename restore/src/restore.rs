use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rewind_core::path::{display, from_bytes, relative_components};
use rewind_core::{
    ChunkId, Chunker, ChunkerParams, Extent, ExtentReader, FileKind, FileMeta, RepoError,
    Repository, Timestamp, Version, Xattr,
};
use rewind_fsmeta::{ApplyOptions, apply_meta_at, apply_meta_fd, make_special_at};
use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags};
use serde::Serialize;

/// Fatal restore errors (per-item failures are [`Problem`]s instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// Nothing existed at `path` at that time.
    #[error("{} did not exist at {at} (see `rewind versions`)", display(path))]
    NotFound {
        /// The path asked for.
        path: Vec<u8>,
        /// The time asked for.
        at: String,
    },
    /// `--to` names something that exists and is not an empty directory.
    #[error("{}: destination exists and is not an empty directory", dest.display())]
    DestExists {
        /// The destination.
        dest: PathBuf,
    },
    /// The repository failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The destination could not be prepared.
    #[error("{}: {source}", path.display())]
    Io {
        /// Where.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// A path that could not be restored fully, and why (serialized as
/// `rewind restore --json` lists it: the path as a
/// [`JsonPath`](rewind_core::path::JsonPath)).
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    /// The stored path.
    #[serde(serialize_with = "rewind_core::path::serialize_json_path")]
    pub path: Vec<u8>,
    /// What went wrong.
    pub message: String,
}

/// What a restore did (serialized with the field names of `rewind
/// restore --json`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RestoreReport {
    /// Regular files written or confirmed.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Further names of a hard-linked file, made with `linkat` (not
    /// counted in `files`).
    pub links: u64,
    /// Fifos and devices.
    pub other: u64,
    /// Files whose current content already matched (only metadata applied).
    pub unchanged: u64,
    /// Content bytes fetched from the repository.
    pub bytes_fetched: u64,
    /// Content bytes copied from files already in the destination.
    pub bytes_reused: u64,
    /// Paths removed by `--delete`.
    pub deleted: u64,
    /// Items not restored, or restored without some metadata.
    pub problems: Vec<Problem>,
    /// Things skipped by design (sockets), for information.
    pub notes: Vec<Problem>,
}

impl RestoreReport {
    /// Add what another restore (of a group's side file) did.
    pub(crate) fn absorb(&mut self, o: RestoreReport) {
        self.files += o.files;
        self.dirs += o.dirs;
        self.symlinks += o.symlinks;
        self.links += o.links;
        self.other += o.other;
        self.unchanged += o.unchanged;
        self.bytes_fetched += o.bytes_fetched;
        self.bytes_reused += o.bytes_reused;
        self.deleted += o.deleted;
        self.problems.extend(o.problems);
        self.notes.extend(o.notes);
    }
}

/// How to restore.
#[derive(Default)]
pub struct RestoreOptions<'a> {
    /// Write the tree as this new path instead of in place.
    pub to: Option<PathBuf>,
    /// In place: remove paths that did not exist at the time.
    pub delete: bool,
    /// Chunker bounds of the repository (to recognise local chunks).
    pub chunker: Option<ChunkerParams>,
    /// With `delete`: paths to keep even though absent from the version
    /// (for instance ignored paths, which were never captured).
    pub keep: Option<&'a dyn Fn(&Path) -> bool>,
    /// Called with the bytes of each file written.
    pub progress: Option<&'a dyn Fn(u64)>,
    /// Give files the recorded numeric owner and group ids, instead of the
    /// ids the recorded names have on this system.
    pub numeric_owner: bool,
}

type DirKey = Vec<Vec<u8>>;

/// A file in the destination, where each of its chunks lies, and its chunk
/// ids in order.
/// For a sparse local file the ids are those of its data extents' stream
/// (the form a sparse version is stored in), the extents are given, and the
/// map is empty: stream offsets are not file offsets.
type LocalChunks = (
    File,
    HashMap<ChunkId, (u64, u32)>,
    Vec<ChunkId>,
    Option<Vec<Extent>>,
);

struct Dest<'r> {
    parent: Arc<OwnedFd>,
    root_name: Vec<u8>,
    dirs: HashMap<DirKey, Arc<OwnedFd>>,
    repo: &'r dyn Repository,
    in_place: bool,
    apply: ApplyOptions,
    /// Extended attribute values already fetched (a value repeated on many
    /// files is read from the repository once), and their total size.
    xattr_values: HashMap<ChunkId, Vec<u8>>,
    xattr_bytes: usize,
    report: RestoreReport,
    /// When this restore started: temporary files older than this in a
    /// directory it writes to were left by an interrupted restore.
    started: std::time::SystemTime,
}

/// Bytes of extended attribute values kept between files: enough for the
/// few distinct values a tree usually has (labels, flags), while bounding
/// memory when every file has its own large value.
const XATTR_CACHE_BYTES: usize = 64 << 20;

/// How one entry of the restored tree is written.
#[derive(Clone, Copy)]
enum Role {
    /// On its own.
    Alone,
    /// The first name of a hard-linked inode: written with the content and
    /// metadata of version `source` (the group's newest).
    Primary { source: usize },
    /// A further name of the inode written as entry `primary`.
    Link { primary: usize },
}

/// For every entry, how it is written: names recorded with one hard-link
/// group and the same content become one inode (the newest version of the
/// group gives its metadata); names whose content differs (a name captured
/// before the inode changed) are written on their own, so no recorded
/// content is lost.
fn plan_links(tree: &[Version]) -> Vec<Role> {
    let mut roles = vec![Role::Alone; tree.len()];
    let mut groups: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
    for (i, v) in tree.iter().enumerate() {
        if let Some(m) = v.meta()
            && m.kind == FileKind::File
            && let Some(g) = m.hardlink_group
        {
            groups.entry(g).or_default().push(i);
        }
    }
    for members in groups.into_values().filter(|m| m.len() > 1) {
        let source = *members
            .iter()
            .max_by_key(|&&i| (tree[i].observed_at, tree[i].seq))
            .expect("not empty");
        let same_inode = |i: usize| {
            tree[i].chunks() == tree[source].chunks()
                && tree[i].meta().map(|m| &m.sparse) == tree[source].meta().map(|m| &m.sparse)
        };
        let names: Vec<usize> = members.into_iter().filter(|&i| same_inode(i)).collect();
        if let Some((&first, rest)) = names.split_first()
            && !rest.is_empty()
        {
            roles[first] = Role::Primary { source };
            for &i in rest {
                roles[i] = Role::Link { primary: first };
            }
        }
    }
    roles
}

/// The order the restore's main thread takes `tree`'s entries in: the
/// tree's order (a directory before what it holds), except where small
/// files go in batches (`batching`). There the directories and the files
/// too large for a batch come first: a large file is the longest job a
/// writer has, and begun in the middle of the tree it was the restore's
/// tail. Then the entries that are not small files of their own (links,
/// names of one inode, which must follow the first name they link to),
/// in the tree's order; then the small files, in the order their first
/// chunks lie in storage, so that a batch reads one stretch of one pack
/// instead of pieces of several with other files' chunks in between.
fn write_order(
    repo: &dyn Repository,
    tree: &[Version],
    roles: &[Role],
    batching: bool,
) -> Vec<usize> {
    if !batching {
        return (0..tree.len()).collect();
    }
    let alone_file = |i: usize| {
        matches!(roles[i], Role::Alone) && tree[i].meta().is_some_and(|m| m.kind == FileKind::File)
    };
    let early = |i: usize| {
        tree[i].meta().is_some_and(|m| m.kind == FileKind::Dir)
            || (alone_file(i) && tree[i].size() > BATCH_FILE_MAX)
    };
    let (mut order, rest): (Vec<usize>, Vec<usize>) = (0..tree.len()).partition(|&i| early(i));
    let (mut small, others): (Vec<usize>, Vec<usize>) =
        rest.into_iter().partition(|&i| alone_file(i));
    order.extend(others);
    let firsts: Vec<ChunkId> = small
        .iter()
        .filter_map(|&i| tree[i].chunks().first().map(|c| c.id))
        .collect();
    let mut keys = repo.storage_order(&firsts).into_iter();
    let mut keyed: Vec<(Option<(u64, u64)>, usize)> = small
        .drain(..)
        .map(|i| {
            let key = match tree[i].chunks().first() {
                Some(_) => keys.next().flatten(),
                None => None,
            };
            (key, i)
        })
        .collect();
    // Stable: files with no key (empty ones) keep the tree's order.
    keyed.sort_by_key(|&(key, _)| key);
    order.extend(keyed.into_iter().map(|(_, i)| i));
    order
}

/// Writes a stream of data-extent bytes into a sparse file at the extents'
/// offsets, leaving the holes unwritten.
struct ExtentWriter<'f> {
    file: &'f File,
    extents: &'f [Extent],
    idx: usize,
    within: u64,
}

impl ExtentWriter<'_> {
    fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let Some(e) = self.extents.get(self.idx) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "stored content is longer than the file's data extents",
                ));
            };
            if self.within >= e.len {
                self.idx += 1;
                self.within = 0;
                continue;
            }
            let n = ((e.len - self.within) as usize).min(data.len());
            self.file.write_all_at(&data[..n], e.offset + self.within)?;
            self.within += n as u64;
            data = &data[n..];
        }
        Ok(())
    }
}

fn nofollow_dir() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Temporary files of a restore start with this.
const TMP_PREFIX: &[u8] = b".rewind-restore-";

/// Whether `p` names a temporary file of a restore (one cut short leaves
/// them behind), which a later restore's deletions leave alone.
pub fn is_restore_tmp(p: &std::path::Path) -> bool {
    p.file_name().is_some_and(|n| {
        rewind_core::path::to_bytes(std::path::Path::new(n)).starts_with(TMP_PREFIX)
    })
}

fn tmp_name() -> Vec<u8> {
    let mut name = TMP_PREFIX.to_vec();
    name.extend_from_slice(format!("{:016x}", rand::random::<u64>()).as_bytes());
    name
}

impl Dest<'_> {
    /// The directory that holds the entry at `comps` (root: the parent).
    fn holder(&mut self, comps: &[Vec<u8>]) -> io::Result<(Arc<OwnedFd>, Vec<u8>)> {
        match comps.split_last() {
            None => Ok((self.parent.clone(), self.root_name.clone())),
            Some((last, dir)) => Ok((self.dir(dir)?, last.clone())),
        }
    }

    /// An open descriptor of the directory at `comps`, reached only through
    /// directories (never a symlink).
    fn dir(&mut self, comps: &[Vec<u8>]) -> io::Result<Arc<OwnedFd>> {
        if let Some(fd) = self.dirs.get(comps) {
            return Ok(fd.clone());
        }
        let fd = match comps.split_last() {
            None => rustix::fs::openat(
                &*self.parent,
                self.root_name.as_slice(),
                nofollow_dir(),
                Mode::empty(),
            )?,
            Some((last, up)) => {
                let parent = self.dir(up)?;
                rustix::fs::openat(&*parent, last.as_slice(), nofollow_dir(), Mode::empty())?
            }
        };
        if self.dirs.len() > 512 {
            // Bound open descriptors on wide trees.
            self.dirs.clear();
        }
        let fd = Arc::new(fd);
        if self.in_place && !self.dirs.contains_key(comps) {
            self.remove_leftovers(&fd);
        }
        self.dirs.insert(comps.to_vec(), fd.clone());
        Ok(fd)
    }

    /// Delete the temporary files an interrupted restore left in `dir`
    /// (named like ours, regular files, older than this restore). A failure
    /// here only leaves them for the next time.
    fn remove_leftovers(&self, dir: &OwnedFd) {
        let Ok(mut entries) = rustix::fs::Dir::read_from(dir) else {
            return;
        };
        let started = self
            .started
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        while let Some(Ok(e)) = entries.next() {
            let name = e.file_name().to_bytes();
            if !name.starts_with(TMP_PREFIX) {
                continue;
            }
            let Ok(st) = rustix::fs::statat(dir, e.file_name(), AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            let regular = rustix::fs::FileType::from_raw_mode(st.st_mode)
                == rustix::fs::FileType::RegularFile;
            let mtime = std::time::Duration::new(
                st.st_mtime.max(0) as u64,
                (st.st_mtime_nsec as u32).min(999_999_999),
            );
            if regular && mtime < started {
                let _ = rustix::fs::unlinkat(dir, e.file_name(), AtFlags::empty());
            }
        }
    }

    fn problem(&mut self, path: &[u8], message: impl Into<String>) {
        self.report.problems.push(Problem {
            path: path.to_vec(),
            message: message.into(),
        });
    }

    fn meta_issues(&mut self, path: &[u8], issues: Vec<rewind_fsmeta::MetaIssue>) {
        for i in issues {
            self.problem(path, format!("could not set {}: {}", i.item, i.error));
        }
    }

    /// The metadata of `v` with its extended attribute values fetched; a
    /// value that cannot be read is reported for `path` and left out.
    fn full_meta(&mut self, path: &[u8], v: &Version) -> FileMeta {
        let mut meta = v.meta().expect("present").clone();
        for x in v.xattrs() {
            let value = match self.xattr_values.get(&x.value.id) {
                Some(val) => val.clone(),
                None => match self.repo.read_chunk(&x.value.id) {
                    Ok(val) => {
                        if self.xattr_bytes + val.len() > XATTR_CACHE_BYTES {
                            self.xattr_values.clear();
                            self.xattr_bytes = 0;
                        }
                        self.xattr_bytes += val.len();
                        self.xattr_values.insert(x.value.id, val.clone());
                        val
                    }
                    Err(e) => {
                        self.problem(
                            path,
                            format!("could not set extended attribute {}: {e}", display(&x.name)),
                        );
                        continue;
                    }
                },
            };
            meta.xattrs.push(Xattr {
                name: x.name.clone(),
                value,
            });
        }
        meta
    }

    /// Make the entry at `comps` another name of the file at `primary`.
    fn link_entry(&mut self, comps: &[Vec<u8>], primary: &[Vec<u8>]) -> io::Result<()> {
        let (pdir, pname) = self.holder(primary)?;
        let (dirfd, name) = self.holder(comps)?;
        match rustix::fs::statat(&*dirfd, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                return Err(io::Error::other("a directory is in the way of a file"));
            }
            Ok(_) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
        let tmp = tmp_name();
        rustix::fs::linkat(
            &*pdir,
            pname.as_slice(),
            &*dirfd,
            tmp.as_slice(),
            AtFlags::empty(),
        )?;
        commit_tmp(&dirfd, &tmp, &name)?;
        // A rename onto another name of the same inode does nothing and
        // leaves the temporary name behind.
        let _ = rustix::fs::unlinkat(&*dirfd, tmp.as_slice(), AtFlags::empty());
        self.report.links += 1;
        Ok(())
    }

    /// Restore the entry at `comps` (stored path `path`) with the content
    /// and metadata of `v`; a regular file is returned as a job for a
    /// [`Writer`] instead (it is counted once written).
    fn restore_entry(
        &mut self,
        comps: &[Vec<u8>],
        path: &[u8],
        v: &Version,
    ) -> io::Result<Option<FileJob>> {
        // A directory's metadata is applied after its children.
        let meta = match v.meta() {
            Some(m) if m.kind == FileKind::Dir => m.clone(),
            _ => self.full_meta(path, v),
        };
        let (dirfd, name) = self.holder(comps)?;
        let existing = match rustix::fs::statat(&*dirfd, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
        {
            Ok(st) => Some(FileType::from_raw_mode(st.st_mode)),
            Err(rustix::io::Errno::NOENT) => None,
            Err(e) => return Err(e.into()),
        };
        match meta.kind {
            FileKind::Dir => {
                match existing {
                    Some(FileType::Directory) => {}
                    None => {
                        rustix::fs::mkdirat(&*dirfd, name.as_slice(), Mode::from_raw_mode(0o700))?
                    }
                    Some(_) => {
                        return Err(io::Error::other(
                            "a non-directory is in the way of a directory",
                        ));
                    }
                }
                self.report.dirs += 1;
            }
            FileKind::File => {
                if existing == Some(FileType::Directory) {
                    return Err(io::Error::other("a directory is in the way of a file"));
                }
                return Ok(Some(FileJob {
                    dirfd,
                    name,
                    meta,
                    existing_file: existing == Some(FileType::RegularFile),
                }));
            }
            FileKind::Symlink => {
                if existing == Some(FileType::Directory) {
                    return Err(io::Error::other("a directory is in the way of a symlink"));
                }
                let target = meta.symlink_target.clone().unwrap_or_default();
                let tmp = tmp_name();
                rustix::fs::symlinkat(target.as_slice(), &*dirfd, tmp.as_slice())?;
                commit_tmp(&dirfd, &tmp, &name)?;
                let issues = apply_meta_at(&*dirfd, OsStr::from_bytes(&name), &meta, self.apply);
                self.meta_issues(path, issues);
                self.report.symlinks += 1;
            }
            FileKind::Fifo | FileKind::CharDevice | FileKind::BlockDevice => {
                if existing == Some(FileType::Directory) {
                    return Err(io::Error::other("a directory is in the way"));
                }
                let tmp = tmp_name();
                make_special_at(&*dirfd, OsStr::from_bytes(&tmp), &meta).map_err(|e| {
                    let why = if meta.kind != FileKind::Fifo
                        && e.kind() == io::ErrorKind::PermissionDenied
                    {
                        " (devices are recreated only when running as root)"
                    } else {
                        ""
                    };
                    io::Error::new(
                        e.kind(),
                        format!("cannot create {}: {e}{why}", meta.kind.as_str()),
                    )
                })?;
                commit_tmp(&dirfd, &tmp, &name)?;
                let issues = apply_meta_at(&*dirfd, OsStr::from_bytes(&name), &meta, self.apply);
                self.meta_issues(path, issues);
                self.report.other += 1;
            }
            FileKind::Socket => {
                self.report.notes.push(Problem {
                    path: path.to_vec(),
                    message: "sockets are not restored".into(),
                });
            }
        }
        Ok(None)
    }

    /// Count a file a [`Writer`] wrote.
    fn written(&mut self, path: &[u8], w: Written) {
        self.report.files += 1;
        if w.unchanged {
            self.report.unchanged += 1;
        }
        self.report.bytes_reused += w.bytes_reused;
        self.report.bytes_fetched += w.bytes_fetched;
        self.meta_issues(path, w.issues);
    }

    /// Remove what is under the directory at `comps` but not in `wanted`.
    fn delete_extra(
        &mut self,
        comps: &[Vec<u8>],
        base: &Path,
        wanted: &HashSet<DirKey>,
        keep: Option<&dyn Fn(&Path) -> bool>,
    ) -> io::Result<bool> {
        let dirfd = self.dir(comps)?;
        let mut names = Vec::new();
        for e in rustix::fs::Dir::read_from(&*dirfd)? {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push((n.to_vec(), e.file_type()));
            }
        }
        let mut all_gone = true;
        for (name, ft) in names {
            let mut c = comps.to_vec();
            c.push(name.clone());
            let mut p = base.to_path_buf();
            for part in &c {
                p.push(OsStr::from_bytes(part));
            }
            if keep.is_some_and(|k| k(&p)) {
                all_gone = false;
                continue;
            }
            if wanted.contains(&c) {
                all_gone = false;
                if ft == FileType::Directory {
                    self.delete_extra(&c, base, wanted, keep)?;
                }
                continue;
            }
            let removed = if ft == FileType::Directory {
                self.delete_extra(&c, base, wanted, keep)?
                    && rustix::fs::unlinkat(&*dirfd, name.as_slice(), AtFlags::REMOVEDIR).is_ok()
            } else {
                rustix::fs::unlinkat(&*dirfd, name.as_slice(), AtFlags::empty()).is_ok()
            };
            if removed {
                self.report.deleted += 1;
            } else {
                all_gone = false;
            }
            self.dirs.remove(&c);
        }
        Ok(all_gone)
    }
}

/// A regular file to write, prepared by the restore's main thread (which
/// creates directories and fetches metadata in tree order) for a
/// [`Writer`].
struct FileJob {
    /// The directory that holds it.
    dirfd: Arc<OwnedFd>,
    name: Vec<u8>,
    /// Its metadata, xattr values fetched.
    meta: FileMeta,
    /// A regular file is at `name` now (in place, its chunks may be reused).
    existing_file: bool,
}

/// What writing one file did, for the report.
#[derive(Default)]
struct Written {
    unchanged: bool,
    bytes_reused: u64,
    bytes_fetched: u64,
    issues: Vec<rewind_fsmeta::MetaIssue>,
}

/// Writes regular files; shared by the restore's writer threads.
struct Writer<'r> {
    repo: &'r dyn Repository,
    chunker: Chunker,
    /// How the repository names chunks: local copies are found by it.
    ids: rewind_core::ChunkIds,
    in_place: bool,
    apply: ApplyOptions,
    /// Windows of large files fetched at once, over all writers.
    windows: WindowPermits,
}

/// Rename `tmp` to `name` in `dirfd`; on failure remove `tmp`.
fn commit_tmp(dirfd: &OwnedFd, tmp: &[u8], name: &[u8]) -> io::Result<()> {
    let renamed = rewind_core::failpoint::hit("restore.rename")
        .and_then(|()| rustix::fs::renameat(dirfd, tmp, dirfd, name).map_err(io::Error::from));
    if let Err(e) = renamed {
        let _ = rustix::fs::unlinkat(dirfd, tmp, AtFlags::empty());
        return Err(e);
    }
    Ok(())
}

impl Writer<'_> {
    /// Chunks of the file now at `name`, if it is a regular file: id →
    /// (offset, len), plus the file itself, the ordered ids and, for a
    /// sparse file, its extents (only they are read).
    fn local_chunks(&self, dirfd: &OwnedFd, name: &[u8]) -> Option<LocalChunks> {
        let fd = rustix::fs::openat(
            dirfd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let file = File::from(fd);
        let mut map = HashMap::new();
        let mut order = Vec::new();
        let mut off = 0u64;
        let mut buf = Vec::new();
        if let Some(extents) = rewind_fsmeta::data_extents(&file).ok()? {
            self.chunker
                .for_each(ExtentReader::new(&file, &extents), &mut buf, |chunk| {
                    order.push(self.ids.id_of(chunk));
                    Ok(())
                })
                .ok()?;
            return Some((file, HashMap::new(), order, Some(extents)));
        }
        self.chunker
            .for_each(&file, &mut buf, |chunk| {
                let id = self.ids.id_of(chunk);
                map.entry(id).or_insert((off, chunk.len() as u32));
                order.push(id);
                off += chunk.len() as u64;
                Ok(())
            })
            .ok()?;
        Some((file, map, order, None))
    }

    /// Write `job`'s file with the content of `v`: to a temporary name,
    /// then renamed over the entry (in place, chunks the file already
    /// holds are copied instead of fetched).
    fn write_file(&self, job: &FileJob, v: &Version) -> io::Result<Written> {
        self.write_file_from(job, v, &HashMap::new())
    }

    /// Write the small files of `batch` (entry, source, components, job),
    /// their chunks fetched together first: one request for the batch
    /// instead of one per file, which a store answers with a few ranged
    /// GETs where the files lie together in packs. If that fetch fails,
    /// each file fetches its own, so a damaged chunk is reported for its
    /// file only. The outcome of each entry, in order.
    fn write_batch(
        &self,
        batch: &[(usize, usize, DirKey, FileJob)],
        tree: &[Version],
    ) -> Vec<io::Result<Written>> {
        let mut ids: Vec<ChunkId> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (_, source, _, _) in batch {
            for c in tree[*source].chunks() {
                if seen.insert(c.id) {
                    ids.push(c.id);
                }
            }
        }
        let ahead: HashMap<ChunkId, Vec<u8>> = match self.repo.read_chunks(&ids) {
            Ok(data) if data.len() == ids.len() => ids.into_iter().zip(data).collect(),
            _ => HashMap::new(),
        };
        batch
            .iter()
            .map(|(_, source, _, job)| self.write_file_from(job, &tree[*source], &ahead))
            .collect()
    }

    /// [`Writer::write_file`], taking chunks found in `ahead` from there.
    fn write_file_from(
        &self,
        job: &FileJob,
        v: &Version,
        ahead: &HashMap<ChunkId, Vec<u8>>,
    ) -> io::Result<Written> {
        let FileJob {
            dirfd,
            name,
            meta,
            existing_file,
        } = job;
        let mut done = Written::default();
        let local = if self.in_place && *existing_file {
            self.local_chunks(dirfd, name)
        } else {
            None
        };
        let wanted: Vec<ChunkId> = v.chunks().iter().map(|c| c.id).collect();
        if let Some((file, _, order, extents)) = &local
            && *order == wanted
            && *extents == meta.sparse
        {
            // Content already right: metadata only.
            done.issues = apply_meta_fd(file.as_fd(), meta, self.apply);
            done.unchanged = true;
            done.bytes_reused = v.size();
            return Ok(done);
        }
        let tmp = tmp_name();
        let fd = rustix::fs::openat(
            dirfd,
            tmp.as_slice(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let file = File::from(fd);
        let result = (|| -> io::Result<()> {
            if local.is_none() && ahead.is_empty() && meta.sparse.is_none() {
                let parallel = self.repo.parallel_reads().min(MAX_WINDOWS_AT_ONCE);
                let wins: Vec<_> = windows_of(v.chunks(), PARALLEL_WINDOW_BYTES).collect();
                if parallel > 1 && wins.len() > 1 {
                    done.bytes_fetched = self.write_windows_at(&file, &wins, parallel)?;
                    return self.finish_file(&file, meta, &mut done);
                }
            }
            // Dense files through a buffer; sparse ones extent by extent at
            // their offsets, the holes left unwritten.
            let mut dense = None;
            let mut sparse = None;
            match &meta.sparse {
                // A buffer no larger than the file: a small file's 1 MiB
                // buffer was an allocation (and page faults) per file.
                None => {
                    let cap =
                        usize::try_from(meta.size).map_or(1 << 20, |n| n.clamp(4096, 1 << 20));
                    dense = Some(io::BufWriter::with_capacity(cap, &file))
                }
                Some(extents) => {
                    sparse = Some(ExtentWriter {
                        file: &file,
                        extents,
                        idx: 0,
                        within: 0,
                    })
                }
            }
            // A window of chunks at a time: chunks fetched ahead and local
            // copies first, then the rest from the repository in one
            // request (a server answers a window in one round trip instead
            // of one per chunk).
            for window in windows(v.chunks()) {
                // Chunks fetched ahead are written from where they are.
                let ready: Vec<Option<(Cow<'_, [u8]>, bool)>> = window
                    .iter()
                    .map(|c| {
                        if let Some(d) = ahead.get(&c.id) {
                            return Some((Cow::Borrowed(d.as_slice()), true));
                        }
                        let (f, map, _, _) = local.as_ref()?;
                        let &(off, len) = map.get(&c.id)?;
                        let mut buf = vec![0; len as usize];
                        f.read_exact_at(&mut buf, off).ok()?;
                        (self.ids.id_of(&buf) == c.id).then_some((Cow::Owned(buf), false))
                    })
                    .collect();
                let wanted: Vec<ChunkId> = window
                    .iter()
                    .zip(&ready)
                    .filter(|(_, d)| d.is_none())
                    .map(|(c, _)| c.id)
                    .collect();
                let mut fetched = if wanted.is_empty() {
                    Vec::new()
                } else {
                    self.repo.read_chunks(&wanted).map_err(io::Error::other)?
                }
                .into_iter();
                for (c, d) in window.iter().zip(ready) {
                    let data = match d {
                        Some((d, true)) => {
                            done.bytes_fetched += d.len() as u64;
                            d
                        }
                        Some((d, false)) => {
                            done.bytes_reused += c.len as u64;
                            d
                        }
                        None => {
                            let b = fetched.next().ok_or_else(|| {
                                io::Error::other(
                                    "the repository returned fewer chunks than asked for",
                                )
                            })?;
                            done.bytes_fetched += b.len() as u64;
                            Cow::Owned(b)
                        }
                    };
                    rewind_core::failpoint::hit("restore.write")?;
                    match (&mut dense, &mut sparse) {
                        (Some(w), _) => w.write_all(&data)?,
                        (_, Some(w)) => w.write_all(&data)?,
                        _ => unreachable!("one writer is set"),
                    }
                }
            }
            if let Some(w) = dense {
                w.into_inner().map_err(|e| e.into_error())?;
            }
            if meta.sparse.is_some() {
                // The holes: up to the recorded size, nothing written.
                file.set_len(meta.size)?;
            }
            self.finish_file(&file, meta, &mut done)
        })();
        if let Err(e) = result {
            let _ = rustix::fs::unlinkat(dirfd, tmp.as_slice(), AtFlags::empty());
            return Err(e);
        }
        commit_tmp(dirfd, &tmp, name)?;
        Ok(done)
    }

    /// The written content of a new file made final: on disk first where
    /// it replaces the user's file, then its metadata.
    fn finish_file(&self, file: &File, meta: &FileMeta, done: &mut Written) -> io::Result<()> {
        if self.in_place {
            // The user's file is about to be replaced: the new content
            // must be on disk before the rename makes it visible.
            file.sync_all()?;
        }
        done.issues = apply_meta_fd(file.as_fd(), meta, self.apply);
        Ok(())
    }
}

/// What the main thread keeps of the entries it settled.
#[derive(Default)]
struct Tally {
    /// Entries restored (kept by `--delete`).
    wanted: HashSet<DirKey>,
    /// Directories restored, for their metadata at the end.
    dirs: Vec<(DirKey, Version)>,
    /// Directories that could not be restored: nothing below is tried.
    broken_dirs: Vec<DirKey>,
}

/// Threads writing regular files at most (fewer on fewer cores).
const MAX_WRITERS: usize = 8;

/// Files written by one writer with their chunks fetched together
/// (entry, source entry, components, job): small files, at most
/// [`BATCH_FILES`] of them and about [`BATCH_BYTES`].
type Batch = Vec<(usize, usize, DirKey, FileJob)>;

/// A file up to this size may share a batch: a few chunks at most.
const BATCH_FILE_MAX: u64 = 1 << 20;
/// Files in one batch (one fetch of their chunks).
const BATCH_FILES: usize = 64;
/// Bytes of content in one batch, about: what a writer holds at once.
const BATCH_BYTES: u64 = 8 << 20;

/// Files planned in pack order at most, before they are written and the
/// walk goes on: a plan holds each file's metadata and the places of its
/// chunks, so a tree of millions of files is written in plans of this
/// many (files next to each other in the walk lie together in storage,
/// see `write_order`). The benchmark's tree, 5,004 files, is one plan.
const PLAN_FILES: usize = 20_000;
/// Directories the files of one plan may be in: a planned file holds its
/// directory open until it is written (the restore keeps 512 open
/// otherwise), and a process may have 1,024.
const PLAN_DIRS: usize = 256;

/// Restore `path` (a stored absolute path) as it was at `at`.
pub fn restore(
    repo: &dyn Repository,
    client: &str,
    path: &[u8],
    at: Timestamp,
    opts: &RestoreOptions<'_>,
) -> Result<RestoreReport, RestoreError> {
    let tree = repo.tree_at(client, path, at)?;
    if tree.first().map(|v| v.path.as_slice()) != Some(path) {
        return Err(RestoreError::NotFound {
            path: path.to_vec(),
            at: at.to_local_string(),
        });
    }
    let dest = opts.to.clone().unwrap_or_else(|| from_bytes(path));
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source: io::Error| RestoreError::Io { path: p, source }
    };
    let root_is_dir = tree[0].meta().map(|m| m.kind) == Some(FileKind::Dir);
    if opts.to.is_some() {
        match std::fs::symlink_metadata(&dest) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Ok(m) if m.is_dir() && root_is_dir => {
                let empty = std::fs::read_dir(&dest)
                    .map_err(io_err(&dest))?
                    .next()
                    .is_none();
                if !empty {
                    return Err(RestoreError::DestExists { dest });
                }
            }
            Ok(_) => return Err(RestoreError::DestExists { dest }),
            Err(e) => return Err(io_err(&dest)(e)),
        }
    }
    let (parent, root_name) = match (dest.parent(), dest.file_name()) {
        (Some(p), Some(n)) => (
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            },
            n.as_bytes().to_vec(),
        ),
        _ => {
            return Err(RestoreError::Io {
                path: dest.clone(),
                source: io::Error::other("cannot restore onto a filesystem root"),
            });
        }
    };
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let parent_fd = rustix::fs::openat(
        CWD,
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err(parent)(e.into()))?;
    let mut d = Dest {
        parent: Arc::new(parent_fd),
        root_name,
        dirs: HashMap::new(),
        repo,
        in_place: opts.to.is_none(),
        apply: ApplyOptions {
            numeric_owner: opts.numeric_owner,
            // In place, attributes the file has now but did not have then
            // go; a new file has none to remove.
            exact_xattrs: opts.to.is_none(),
            ..ApplyOptions::default()
        },
        xattr_values: HashMap::new(),
        xattr_bytes: 0,
        report: RestoreReport::default(),
        started: std::time::SystemTime::now(),
    };
    if d.in_place {
        let parent = d.parent.clone();
        d.remove_leftovers(&parent);
    }
    let writer = Writer {
        repo,
        chunker: Chunker::new(opts.chunker.unwrap_or(rewind_core::DEFAULT_CHUNKER)),
        ids: repo.chunk_ids(),
        in_place: d.in_place,
        apply: d.apply,
        windows: WindowPermits::new(MAX_WINDOWS_AT_ONCE),
    };
    let roles = plan_links(&tree);
    // Where each hard-link primary was written.
    let mut primaries: HashMap<usize, DirKey> = HashMap::new();
    let mut t = Tally::default();
    // The outcome of the entry `i` at `comps`: counted, or reported.
    let settle = |d: &mut Dest<'_>,
                  t: &mut Tally,
                  i: usize,
                  comps: DirKey,
                  result: io::Result<Option<Written>>| {
        let v = &tree[i];
        let is_dir = v.meta().is_some_and(|m| m.kind == FileKind::Dir);
        match result {
            Ok(written) => {
                if let Some(w) = written {
                    d.written(&v.path, w);
                }
                if let Some(p) = opts.progress {
                    p(v.size());
                }
                if is_dir {
                    t.dirs.push((comps.clone(), v.clone()));
                }
                t.wanted.insert(comps);
            }
            Err(e) => {
                let msg = if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
                    || e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error())
                {
                    format!("refusing to follow a symlink in the destination ({e})")
                } else {
                    e.to_string()
                };
                d.problem(&v.path, msg);
                if is_dir {
                    t.broken_dirs.push(comps);
                }
            }
        }
    };
    // Regular files are written by a few threads while this one walks the
    // tree in order (directories, links, metadata lookups): file content
    // and metadata are per-inode work the kernel does in parallel.
    // From an object store, more: each writer mostly waits for answers.
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(repo.parallel_reads())
        .clamp(1, MAX_WRITERS);
    // Small files go to them in batches whose chunks are fetched together
    // (`Writer::write_batch`); in place, a file's own chunks may be on
    // disk already, so files go one by one.
    let batching = !d.in_place;
    // From a repository whose reads wait on a network, the dense files of
    // a restore to a new place are written in pack order instead
    // (`packs.rs`): each stored chunk fetched once, a span of a pack at a
    // time, and written wherever it goes.
    let pack_order = batching && repo.parallel_reads() > 1;
    let mut planned: Vec<packs::Planned> = Vec::new();
    std::thread::scope(|scope| {
        let (job_tx, job_rx) = crossbeam_channel::bounded::<Batch>(threads * 4);
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        for _ in 0..threads {
            let (job_rx, done_tx) = (job_rx.clone(), done_tx.clone());
            let (writer, tree) = (&writer, &tree);
            scope.spawn(move || {
                for batch in job_rx {
                    let results = match &batch[..] {
                        [(_, source, _, job)] => vec![writer.write_file(job, &tree[*source])],
                        _ => writer.write_batch(&batch, tree),
                    };
                    for ((i, _, comps, _), r) in batch.into_iter().zip(results) {
                        if done_tx.send((i, comps, r.map(Some))).is_err() {
                            return;
                        }
                    }
                }
            });
        }
        let pack_done = done_tx.clone();
        drop((job_rx, done_tx));
        let mut pending: Batch = Vec::new();
        let mut pending_bytes = 0u64;
        // Hand `batch` to the writers; if they are all gone (they stop
        // only when this side stops sending), write it here.
        let send = |batch: Batch, d: &mut Dest<'_>, t: &mut Tally| {
            if batch.is_empty() {
                return;
            }
            if let Err(e) = job_tx.send(batch) {
                for (i, source, comps, job) in e.into_inner() {
                    let r = writer.write_file(&job, &tree[source]).map(Some);
                    settle(d, t, i, comps, r);
                }
            }
        };
        // Write the files planned so far in pack order (here, with the
        // plan's own threads); those it cannot place go to the writers.
        let write_planned = |planned: Vec<packs::Planned>, d: &mut Dest<'_>, t: &mut Tally| {
            let (plan, rest) = packs::PackPlan::new(repo, &tree, planned);
            for job in rest {
                send(vec![job], d, t);
            }
            if !plan.is_empty() {
                plan.run(&writer, &pack_done);
            }
        };
        // The directories the planned files are in (each held open).
        let mut planned_dirs: HashSet<usize> = HashSet::new();
        for i in write_order(repo, &tree, &roles, batching) {
            let v = &tree[i];
            for (i, comps, r) in done_rx.try_iter() {
                settle(&mut d, &mut t, i, comps, r);
            }
            let comps: DirKey = match relative_components(&v.path, path) {
                Ok(c) => c.into_iter().map(|c| c.to_vec()).collect(),
                Err(e) => {
                    d.problem(&v.path, e.to_string());
                    continue;
                }
            };
            if t.broken_dirs.iter().any(|b| comps.starts_with(b)) {
                d.problem(&v.path, "not restored: its directory could not be restored");
                continue;
            }
            if v.meta().is_none() {
                continue;
            }
            // A file alone goes to the writers; the first name of a hard
            // link group is written here, before its other names link to it.
            let (source, queue) = match roles[i] {
                Role::Alone => (i, true),
                Role::Primary { source } => (source, false),
                Role::Link { primary } => match primaries.get(&primary).cloned() {
                    Some(p) => {
                        let r = d.link_entry(&comps, &p).map(|()| None);
                        settle(&mut d, &mut t, i, comps, r);
                        continue;
                    }
                    // The first name could not be written: this one is
                    // written instead, and the group's later names link to it.
                    None => (i, false),
                },
            };
            let r = match d.restore_entry(&comps, &v.path, &tree[source]) {
                Ok(Some(job)) if queue => {
                    let size = tree[source].size();
                    if pack_order && job.meta.sparse.is_none() && !tree[source].chunks().is_empty()
                    {
                        planned_dirs.insert(Arc::as_ptr(&job.dirfd) as usize);
                        planned.push((i, source, comps, job));
                        if planned.len() >= PLAN_FILES || planned_dirs.len() >= PLAN_DIRS {
                            planned_dirs.clear();
                            write_planned(std::mem::take(&mut planned), &mut d, &mut t);
                        }
                    } else if batching && size <= BATCH_FILE_MAX {
                        pending.push((i, source, comps, job));
                        pending_bytes += size;
                        if pending.len() >= BATCH_FILES || pending_bytes >= BATCH_BYTES {
                            send(std::mem::take(&mut pending), &mut d, &mut t);
                            pending_bytes = 0;
                        }
                    } else {
                        send(vec![(i, source, comps, job)], &mut d, &mut t);
                    }
                    continue;
                }
                Ok(Some(job)) => writer.write_file(&job, &tree[source]).map(Some),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            };
            if r.is_ok() {
                match roles[i] {
                    Role::Primary { .. } => {
                        primaries.insert(i, comps.clone());
                    }
                    Role::Link { primary } => {
                        primaries.insert(primary, comps.clone());
                    }
                    Role::Alone => {}
                }
            }
            settle(&mut d, &mut t, i, comps, r);
        }
        send(pending, &mut d, &mut t);
        write_planned(std::mem::take(&mut planned), &mut d, &mut t);
        drop(pack_done);
        drop(job_tx);
        for (i, comps, r) in done_rx {
            settle(&mut d, &mut t, i, comps, r);
        }
    });
    if opts.delete && opts.to.is_none() && root_is_dir {
        let base = from_bytes(path);
        if let Err(e) = d.delete_extra(&[], &base, &t.wanted, opts.keep) {
            d.problem(path, format!("--delete stopped: {e}"));
        }
    }
    // A SQLite database comes back with its side files as they were.
    if root_is_dir {
        if d.in_place {
            d.clear_stale_sides(client, &tree, path)?;
        }
    } else if tree[0].meta().map(|m| m.kind) == Some(FileKind::File) {
        let parent = d.parent.clone();
        let name = d.root_name.clone();
        groups::restore_sides_of_file(repo, client, path, at, opts, &parent, &name, &mut d.report)?;
    }
    // Directory metadata last, deepest first, so writing children does not
    // change a directory's restored mtime.
    t.dirs.sort_by_key(|(c, _)| std::cmp::Reverse(c.len()));
    for (comps, v) in t.dirs {
        let meta = d.full_meta(&v.path, &v);
        match d.dir(&comps) {
            Ok(fd) => {
                let issues = apply_meta_fd(borrow(&fd), &meta, d.apply);
                d.meta_issues(&v.path, issues);
            }
            Err(e) => d.problem(&v.path, format!("could not set directory metadata: {e}")),
        }
    }
    Ok(d.report)
}

fn borrow(fd: &Arc<OwnedFd>) -> BorrowedFd<'_> {
    fd.as_fd()
}

mod groups;
mod packs;
mod windows;
use windows::{MAX_WINDOWS_AT_ONCE, PARALLEL_WINDOW_BYTES, WindowPermits, windows, windows_of};

#[cfg(test)]
mod tests;
