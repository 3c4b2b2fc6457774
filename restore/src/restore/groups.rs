//! Groups at restore (DESIGN.md, "Group"): a SQLite database comes back
//! with its `-wal` and `-journal` as they were at the same moment, and a
//! side file that did not exist then is removed, so the restored files are
//! what a power cut at that moment would have left. `-shm`, SQLite's
//! shared-memory index, is removed beside a restored group in place: SQLite
//! rebuilds it from the WAL, while a stale one would describe another WAL.
//!
//! - A file is a group when a side file is in the restored state, or when
//!   the repository holds versions of one (it existed at other times).
//! - Only regular files the restore itself names are removed, through the
//!   directory's descriptor, never following a link.

use std::os::fd::OwnedFd;

use rewind_core::group::{SQLITE_SHM, SQLITE_SIDE_FILES, group_key};

use super::*;

/// Remove the regular file `name` in `dir`; whether there was one.
fn remove_regular(dir: &OwnedFd, name: &[u8]) -> io::Result<bool> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
            Ok(true)
        }
        Ok(_) => Ok(false),
        Err(e) if e == rustix::io::Errno::NOENT => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// `path` with `suffix` added to its last component.
fn with_suffix(path: &Path, suffix: &[u8]) -> PathBuf {
    let mut s = path.as_os_str().as_bytes().to_vec();
    s.extend_from_slice(suffix);
    PathBuf::from(OsStr::from_bytes(&s))
}

/// After the single file `path` was restored (as `name` in `dir`, or to
/// `opts.to`): its side files as they were at `at`.
#[allow(clippy::too_many_arguments)]
pub(super) fn restore_sides_of_file(
    repo: &dyn Repository,
    client: &str,
    path: &[u8],
    at: Timestamp,
    opts: &RestoreOptions<'_>,
    dir: &OwnedFd,
    name: &[u8],
    report: &mut RestoreReport,
) -> Result<(), RestoreError> {
    if group_key(path) != path {
        return Ok(());
    }
    let in_place = opts.to.is_none();
    let mut group = false;
    for side in SQLITE_SIDE_FILES {
        let sp = [path, side].concat();
        let tree = repo.tree_at(client, &sp, at)?;
        if tree
            .first()
            .is_some_and(|v| v.path == sp && v.meta().is_some())
        {
            group = true;
            let sub = RestoreOptions {
                to: opts.to.as_deref().map(|t| with_suffix(t, side)),
                delete: false,
                chunker: opts.chunker,
                keep: None,
                progress: opts.progress,
                numeric_owner: opts.numeric_owner,
            };
            let r = restore(repo, client, &sp, at, &sub)?;
            report.absorb(r);
        } else if !repo.versions_of(client, &sp)?.is_empty() {
            group = true;
            if in_place {
                remove_side(dir, &[name, side].concat(), &sp, report);
            }
        }
    }
    if group && in_place {
        remove_side(
            dir,
            &[name, SQLITE_SHM].concat(),
            &[path, SQLITE_SHM].concat(),
            report,
        );
    }
    Ok(())
}

/// Remove a side file that did not exist at the moment restored, counting
/// it as deleted or reporting why it could not be.
fn remove_side(dir: &OwnedFd, name: &[u8], stored: &[u8], report: &mut RestoreReport) {
    match remove_regular(dir, name) {
        Ok(true) => report.deleted += 1,
        Ok(false) => {}
        Err(e) => report.problems.push(Problem {
            path: stored.to_vec(),
            message: format!("could not remove it (it did not exist at that moment): {e}"),
        }),
    }
}

impl Dest<'_> {
    /// In place, after a tree was restored: remove the side files of its
    /// databases that did not exist at the moment restored (and `-shm`
    /// beside a group), which are in the destination now.
    pub(super) fn clear_stale_sides(
        &mut self,
        client: &str,
        tree: &[Version],
        root: &[u8],
    ) -> Result<(), RestoreError> {
        let present: HashSet<&[u8]> = tree
            .iter()
            .filter(|v| v.meta().is_some())
            .map(|v| v.path.as_slice())
            .collect();
        for v in tree {
            if v.meta().map(|m| m.kind) != Some(FileKind::File) || group_key(&v.path) != v.path {
                continue;
            }
            let Ok(comps) = relative_components(&v.path, root) else {
                continue;
            };
            let Some((name, up)) = comps.split_last() else {
                continue;
            };
            let up: DirKey = up.iter().map(|c| c.to_vec()).collect();
            let Ok(dir) = self.dir(&up) else { continue };
            let mut group = false;
            for side in SQLITE_SIDE_FILES {
                let sp = [v.path.as_slice(), side].concat();
                if present.contains(sp.as_slice()) {
                    group = true;
                    continue;
                }
                let side_name = [*name, side].concat();
                let there =
                    rustix::fs::statat(&*dir, side_name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
                        .is_ok_and(|st| {
                            FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                        });
                if there && !self.repo.versions_of(client, &sp)?.is_empty() {
                    group = true;
                    remove_side(&dir, &side_name, &sp, &mut self.report);
                }
            }
            if group {
                let shm = [*name, SQLITE_SHM].concat();
                let stored = [v.path.as_slice(), SQLITE_SHM].concat();
                remove_side(&dir, &shm, &stored, &mut self.report);
            }
        }
        Ok(())
    }
}
