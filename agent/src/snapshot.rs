//! One consistent moment for the first pass: where a snapshot of the
//! protected folders can be taken (a btrfs subvolume snapshot, or the
//! user's own command for LVM, ZFS, …, as UrBackup's snapshot scripts do),
//! the first pass reads from it, so a large tree that is being written to
//! while it is read is captured as it was at one moment.
//!
//! - Every version the first pass reads from the snapshot carries the
//!   snapshot's moment (a state proven at that moment: the snapshot is
//!   read-only).
//! - The snapshot only supplies what the first pass would otherwise read
//!   live: a path captured live since the snapshot was taken is read live
//!   again (never an older state after a newer one), a path the snapshot
//!   lacks is read live, and a path whose live state differs from the
//!   snapshot's is captured again live right after.
//! - Changes while the first pass runs are captured live as always.
//! - The snapshot is removed when the first pass ends (or the agent
//!   stops); one that cannot be taken or removed is one log line, and the
//!   first pass reads live.
//!
//! After a crash: a btrfs snapshot is left under `SUBVOLUME/.rewind-snapshots/`
//! (never protected: the folder is ignored); the next start removes what it
//! finds there.

use std::path::{Path, PathBuf};
use std::process::Command;

use rewind_core::Timestamp;

/// How the first pass gets its snapshot (`[snapshot]` in the config).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SnapshotSettings {
    /// A read-only btrfs snapshot of the subvolume holding each protected
    /// folder, when it is on btrfs and `btrfs` may make one; else none.
    #[default]
    Auto,
    /// No snapshot: the first pass reads live.
    Off,
    /// The user's commands: `create` (with `{root}`) prints the path to
    /// read the root from; `remove` (with `{path}` and `{root}`) removes it.
    Command {
        /// Makes the snapshot; its last line of output is the path.
        create: Vec<String>,
        /// Removes it.
        remove: Vec<String>,
    },
}

/// Where the first pass reads one protected folder from.
#[derive(Clone, Debug)]
pub(crate) struct Mapping {
    /// The protected folder.
    pub(crate) root: PathBuf,
    /// The same folder inside the snapshot.
    pub(crate) read: PathBuf,
    /// How to remove the snapshot.
    remove: Remove,
}

#[derive(Clone, Debug)]
enum Remove {
    Btrfs(PathBuf),
    Command(Vec<String>),
}

/// The snapshot the first pass reads from.
#[derive(Clone, Debug)]
pub(crate) struct ActiveSnapshot {
    pub(crate) maps: Vec<Mapping>,
    /// When it was taken: the time of what is read from it.
    pub(crate) taken_at: Timestamp,
    /// The journal's next sequence number when it was taken: a path whose
    /// last version is at least this was captured live since.
    pub(crate) from_seq: u64,
}

impl ActiveSnapshot {
    /// Where to read `path` from, if it lies in a snapshotted folder.
    pub(crate) fn read_path(&self, path: &Path) -> Option<PathBuf> {
        self.maps.iter().find_map(|m| {
            let rel = path.strip_prefix(&m.root).ok()?;
            Some(if rel.as_os_str().is_empty() {
                m.read.clone()
            } else {
                m.read.join(rel)
            })
        })
    }

    /// Remove the snapshots, saying so when one cannot be.
    pub(crate) fn remove(&self) {
        for m in &self.maps {
            let r = match &m.remove {
                Remove::Btrfs(dest) => run(&[
                    "btrfs".into(),
                    "subvolume".into(),
                    "delete".into(),
                    dest.to_string_lossy().into_owned(),
                ]),
                Remove::Command(c) => run(&fill(c, &m.root, Some(&m.read))),
            };
            if let Err(e) = r {
                tracing::warn!("cannot remove the snapshot of {}: {e}", m.root.display());
            }
        }
    }
}

/// The folder under which btrfs snapshots of `subvolume` are made (and
/// which is never protected).
pub(crate) fn snapshot_dir(subvolume: &Path) -> PathBuf {
    subvolume.join(".rewind-snapshots")
}

/// The btrfs subvolume holding `root`: the nearest directory at or above
/// it, on the same filesystem, whose inode is 256 (every subvolume's root).
/// `None` when `root` is not on btrfs.
pub(crate) fn btrfs_subvolume(root: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;
    let fs = rustix::fs::statfs(root).ok()?;
    if fs.f_type as i64 != BTRFS_SUPER_MAGIC {
        return None;
    }
    let dev = std::fs::metadata(root).ok()?.dev();
    let mut p = Some(root);
    while let Some(d) = p {
        let md = std::fs::metadata(d).ok()?;
        if md.dev() != dev {
            return None;
        }
        if md.ino() == 256 {
            return Some(d.to_path_buf());
        }
        p = d.parent();
    }
    None
}

/// Snapshots left by an agent that did not stop cleanly.
pub(crate) fn remove_leftovers(subvolume: &Path) {
    let Ok(entries) = std::fs::read_dir(snapshot_dir(subvolume)) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        match run(&[
            "btrfs".into(),
            "subvolume".into(),
            "delete".into(),
            p.to_string_lossy().into_owned(),
        ]) {
            Ok(()) => tracing::info!("removed a snapshot left by an earlier run: {}", p.display()),
            Err(e) => tracing::warn!("cannot remove the old snapshot {}: {e}", p.display()),
        }
    }
}

/// Take snapshots of `roots` as `settings` say, at `from_seq`; `None`
/// when there is none to read from (then the first pass reads live).
pub(crate) fn take(
    roots: &[PathBuf],
    settings: &SnapshotSettings,
    from_seq: u64,
) -> Option<ActiveSnapshot> {
    if roots.is_empty() || *settings == SnapshotSettings::Off {
        return None;
    }
    let taken_at = Timestamp::now();
    let mut maps = Vec::new();
    for root in roots {
        let m = match settings {
            SnapshotSettings::Off => None,
            SnapshotSettings::Auto => btrfs_snapshot(root),
            SnapshotSettings::Command { create, remove } => command_snapshot(root, create, remove),
        };
        match m {
            Some(m) => maps.push(m),
            None => {
                // All or nothing: one moment for every folder.
                let taken = ActiveSnapshot {
                    maps,
                    taken_at,
                    from_seq,
                };
                taken.remove();
                return None;
            }
        }
    }
    tracing::info!(
        "first pass reads from a snapshot taken at {}",
        taken_at.to_local_string()
    );
    Some(ActiveSnapshot {
        maps,
        taken_at,
        from_seq,
    })
}

fn btrfs_snapshot(root: &Path) -> Option<Mapping> {
    let subvol = btrfs_subvolume(root)?;
    let dir = snapshot_dir(&subvol);
    if let Err(e) = rewind_core::private::create_dir_all(&dir) {
        tracing::info!(
            "no snapshot of {}: cannot create {}: {e}",
            root.display(),
            dir.display()
        );
        return None;
    }
    let dest = dir.join(format!("{}-{}", std::process::id(), Timestamp::now().0));
    let made = run(&[
        "btrfs".into(),
        "subvolume".into(),
        "snapshot".into(),
        "-r".into(),
        subvol.to_string_lossy().into_owned(),
        dest.to_string_lossy().into_owned(),
    ]);
    if let Err(e) = made {
        tracing::info!(
            "no snapshot of {}: {e}; the first pass reads live",
            root.display()
        );
        return None;
    }
    let rel = root.strip_prefix(&subvol).ok()?;
    Some(Mapping {
        root: root.to_path_buf(),
        read: dest.join(rel),
        remove: Remove::Btrfs(dest),
    })
}

fn command_snapshot(root: &Path, create: &[String], remove: &[String]) -> Option<Mapping> {
    let args = fill(create, root, None);
    let (program, rest) = args.split_first()?;
    let out = match Command::new(program).args(rest).output() {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(
                "[snapshot] create: cannot run {program}: {e}; the first pass reads live"
            );
            return None;
        }
    };
    if !out.status.success() {
        tracing::warn!(
            "[snapshot] create for {} failed ({}): {}; the first pass reads live",
            root.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    let said = String::from_utf8_lossy(&out.stdout);
    let read = PathBuf::from(said.lines().rev().find(|l| !l.trim().is_empty())?.trim());
    if !read.is_dir() {
        tracing::warn!(
            "[snapshot] create printed {}, which is no folder; the first pass reads live",
            read.display()
        );
        return None;
    }
    Some(Mapping {
        root: root.to_path_buf(),
        read,
        remove: Remove::Command(remove.to_vec()),
    })
}

/// `args` with `{root}` and `{path}` replaced.
fn fill(args: &[String], root: &Path, path: Option<&Path>) -> Vec<String> {
    args.iter()
        .map(|a| {
            let a = a.replace("{root}", &root.to_string_lossy());
            match path {
                Some(p) => a.replace("{path}", &p.to_string_lossy()),
                None => a,
            }
        })
        .collect()
}

/// Run a command, its failure as one line.
fn run(args: &[String]) -> Result<(), String> {
    let (program, rest) = args.split_first().ok_or("empty command")?;
    let out = Command::new(program)
        .args(rest)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_into_the_snapshot_and_others_do_not() {
        let s = ActiveSnapshot {
            maps: vec![Mapping {
                root: PathBuf::from("/home/me/docs"),
                read: PathBuf::from("/snap/me/docs"),
                remove: Remove::Command(Vec::new()),
            }],
            taken_at: Timestamp(1),
            from_seq: 1,
        };
        assert_eq!(
            s.read_path(Path::new("/home/me/docs/a/b.txt")),
            Some(PathBuf::from("/snap/me/docs/a/b.txt"))
        );
        assert_eq!(
            s.read_path(Path::new("/home/me/docs")),
            Some(PathBuf::from("/snap/me/docs"))
        );
        assert_eq!(s.read_path(Path::new("/home/me/docsx/a")), None);
        assert_eq!(
            fill(
                &["mk".into(), "{root}".into(), "{path}".into()],
                Path::new("/r"),
                Some(Path::new("/p"))
            ),
            ["mk", "/r", "/p"]
        );
    }

    #[test]
    fn a_folder_not_on_btrfs_has_no_subvolume() {
        let d = tempfile::tempdir().unwrap();
        // The temporary folder here is ext4 or tmpfs.
        assert!(btrfs_subvolume(d.path()).is_none());
    }
}
