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
    ChunkId, Chunker, ChunkerParams, FileKind, FileMeta, RepoError, Repository, Timestamp, Version,
};
use rewind_fsmeta::{ApplyOptions, apply_meta_at, apply_meta_fd};
use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags};

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

/// A path that could not be restored fully, and why.
#[derive(Clone, Debug)]
pub struct Problem {
    /// The stored path.
    pub path: Vec<u8>,
    /// What went wrong.
    pub message: String,
}

/// What a restore did.
#[derive(Clone, Debug, Default)]
pub struct RestoreReport {
    /// Regular files written or confirmed.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
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
}

type DirKey = Vec<Vec<u8>>;

/// A file in the destination, where each of its chunks lies, and its chunk
/// ids in order.
type LocalChunks = (File, HashMap<ChunkId, (u64, u32)>, Vec<ChunkId>);

struct Dest<'r> {
    parent: Arc<OwnedFd>,
    root_name: Vec<u8>,
    dirs: HashMap<DirKey, Arc<OwnedFd>>,
    repo: &'r dyn Repository,
    chunker: Chunker,
    in_place: bool,
    report: RestoreReport,
}

fn nofollow_dir() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

fn tmp_name() -> Vec<u8> {
    format!(".rewind-restore-{:016x}", rand::random::<u64>()).into_bytes()
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
        self.dirs.insert(comps.to_vec(), fd.clone());
        Ok(fd)
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

    fn restore_entry(&mut self, comps: &[Vec<u8>], v: &Version, meta: &FileMeta) -> io::Result<()> {
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
                self.write_file(
                    &dirfd,
                    &name,
                    v,
                    meta,
                    existing == Some(FileType::RegularFile),
                )?;
                self.report.files += 1;
            }
            FileKind::Symlink => {
                if existing == Some(FileType::Directory) {
                    return Err(io::Error::other("a directory is in the way of a symlink"));
                }
                let target = meta.symlink_target.clone().unwrap_or_default();
                let tmp = tmp_name();
                rustix::fs::symlinkat(target.as_slice(), &*dirfd, tmp.as_slice())?;
                self.commit_tmp(&dirfd, &tmp, &name)?;
                let issues = apply_meta_at(
                    &*dirfd,
                    OsStr::from_bytes(&name),
                    meta,
                    ApplyOptions::default(),
                );
                self.meta_issues(&v.path, issues);
                self.report.symlinks += 1;
            }
            FileKind::Fifo | FileKind::CharDevice | FileKind::BlockDevice => {
                if existing == Some(FileType::Directory) {
                    return Err(io::Error::other("a directory is in the way"));
                }
                let ft = match meta.kind {
                    FileKind::Fifo => FileType::Fifo,
                    FileKind::CharDevice => FileType::CharacterDevice,
                    _ => FileType::BlockDevice,
                };
                let tmp = tmp_name();
                rustix::fs::mknodat(
                    &*dirfd,
                    tmp.as_slice(),
                    ft,
                    Mode::from_raw_mode(0o600),
                    meta.rdev as _,
                )
                .map_err(|e| {
                    io::Error::other(format!("cannot create {}: {e}", meta.kind.as_str()))
                })?;
                self.commit_tmp(&dirfd, &tmp, &name)?;
                let issues = apply_meta_at(
                    &*dirfd,
                    OsStr::from_bytes(&name),
                    meta,
                    ApplyOptions::default(),
                );
                self.meta_issues(&v.path, issues);
                if let Err(e) = rustix::fs::chmodat(
                    &*dirfd,
                    name.as_slice(),
                    Mode::from_raw_mode(meta.mode as _),
                    AtFlags::empty(),
                ) {
                    self.problem(&v.path, format!("could not set mode: {e}"));
                }
                self.report.other += 1;
            }
            FileKind::Socket => {
                self.report.notes.push(Problem {
                    path: v.path.clone(),
                    message: "sockets are not restored".into(),
                });
            }
        }
        Ok(())
    }

    fn commit_tmp(&mut self, dirfd: &OwnedFd, tmp: &[u8], name: &[u8]) -> io::Result<()> {
        if let Err(e) = rustix::fs::renameat(dirfd, tmp, dirfd, name) {
            let _ = rustix::fs::unlinkat(dirfd, tmp, AtFlags::empty());
            return Err(e.into());
        }
        Ok(())
    }

    /// Chunks of the file now at `name`, if it is a regular file: id →
    /// (offset, len), plus the file itself and the ordered ids.
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
        self.chunker
            .for_each(&file, &mut buf, |chunk| {
                let id = ChunkId::of(chunk);
                map.entry(id).or_insert((off, chunk.len() as u32));
                order.push(id);
                off += chunk.len() as u64;
                Ok(())
            })
            .ok()?;
        Some((file, map, order))
    }

    fn write_file(
        &mut self,
        dirfd: &OwnedFd,
        name: &[u8],
        v: &Version,
        meta: &FileMeta,
        existing_file: bool,
    ) -> io::Result<()> {
        let local = if self.in_place && existing_file {
            self.local_chunks(dirfd, name)
        } else {
            None
        };
        let wanted: Vec<ChunkId> = v.chunks().iter().map(|c| c.id).collect();
        if let Some((file, _, order)) = &local
            && *order == wanted
        {
            // Content already right: metadata only.
            let issues = apply_meta_fd(file.as_fd(), meta, ApplyOptions::default());
            self.meta_issues(&v.path, issues);
            self.report.unchanged += 1;
            self.report.bytes_reused += v.size();
            return Ok(());
        }
        let tmp = tmp_name();
        let fd = rustix::fs::openat(
            dirfd,
            tmp.as_slice(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let mut out = io::BufWriter::with_capacity(1 << 20, File::from(fd));
        let result = (|| -> io::Result<()> {
            let mut buf = Vec::new();
            for c in v.chunks() {
                let reused = local.as_ref().and_then(|(f, map, _)| {
                    let &(off, len) = map.get(&c.id)?;
                    buf.resize(len as usize, 0);
                    f.read_exact_at(&mut buf, off).ok()?;
                    (ChunkId::of(&buf) == c.id).then_some(())
                });
                if reused.is_some() {
                    out.write_all(&buf)?;
                    self.report.bytes_reused += c.len as u64;
                } else {
                    let data = self.repo.read_chunk(&c.id).map_err(io::Error::other)?;
                    out.write_all(&data)?;
                    self.report.bytes_fetched += data.len() as u64;
                }
            }
            let file = out.into_inner().map_err(|e| e.into_error())?;
            if self.in_place {
                // The user's file is about to be replaced: the new content
                // must be on disk before the rename makes it visible.
                file.sync_all()?;
            }
            let issues = apply_meta_fd(file.as_fd(), meta, ApplyOptions::default());
            self.meta_issues(&v.path, issues);
            Ok(())
        })();
        if let Err(e) = result {
            let _ = rustix::fs::unlinkat(dirfd, tmp.as_slice(), AtFlags::empty());
            return Err(e);
        }
        self.commit_tmp(dirfd, &tmp, name)
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
        chunker: Chunker::new(opts.chunker.unwrap_or(rewind_core::DEFAULT_CHUNKER)),
        in_place: opts.to.is_none(),
        report: RestoreReport::default(),
    };
    let mut wanted: HashSet<DirKey> = HashSet::new();
    let mut dirs: Vec<(DirKey, Version)> = Vec::new();
    let mut broken_dirs: Vec<DirKey> = Vec::new();
    for v in &tree {
        let comps: DirKey = match relative_components(&v.path, path) {
            Ok(c) => c.into_iter().map(|c| c.to_vec()).collect(),
            Err(e) => {
                d.problem(&v.path, e.to_string());
                continue;
            }
        };
        if broken_dirs.iter().any(|b| comps.starts_with(b)) {
            d.problem(&v.path, "not restored: its directory could not be restored");
            continue;
        }
        let Some(meta) = v.meta() else { continue };
        match d.restore_entry(&comps, v, meta) {
            Ok(()) => {
                if let Some(p) = opts.progress {
                    p(v.size());
                }
                if meta.kind == FileKind::Dir {
                    dirs.push((comps.clone(), v.clone()));
                }
                wanted.insert(comps);
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
                if meta.kind == FileKind::Dir {
                    broken_dirs.push(comps);
                }
            }
        }
    }
    if opts.delete && opts.to.is_none() && root_is_dir {
        let base = from_bytes(path);
        if let Err(e) = d.delete_extra(&[], &base, &wanted, opts.keep) {
            d.problem(path, format!("--delete stopped: {e}"));
        }
    }
    // Directory metadata last, deepest first, so writing children does not
    // change a directory's restored mtime.
    dirs.sort_by_key(|(c, _)| std::cmp::Reverse(c.len()));
    for (comps, v) in dirs {
        let meta = v.meta().expect("present").clone();
        match d.dir(&comps) {
            Ok(fd) => {
                let issues = apply_meta_fd(borrow(&fd), &meta, ApplyOptions::default());
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

#[cfg(test)]
mod tests;
