//! `follow_symlinks = "outside-roots"`: a symlink inside the protected
//! folders whose target lies outside all of them gets its target protected
//! too (UrBackup's setting). The link itself is still captured as a link;
//! the target is captured under its own path, as if it were one more
//! protected folder, and is watched like one. A target that is a file is
//! protected alone: its directory becomes a root that protects only the
//! names links point to.
//!
//! Links are looked for when the agent starts (also inside followed
//! targets, so chains are followed); a link made while the agent runs is
//! followed from its next start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rewind_watcher::{IgnoreRules, ScanItem, scan};

/// Whether symlinks are followed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FollowSymlinks {
    /// Store symlinks as links, never what they point to.
    #[default]
    Never,
    /// Also protect the target of a link that points outside the protected
    /// folders.
    OutsideRoots,
}

impl FollowSymlinks {
    /// The words the command line and the config file take.
    pub const NAMES: [&'static str; 2] = ["never", "outside-roots"];
}

impl std::str::FromStr for FollowSymlinks {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "never" => Ok(FollowSymlinks::Never),
            "outside-roots" => Ok(FollowSymlinks::OutsideRoots),
            _ => Err(format!("{s:?}: expected never or outside-roots")),
        }
    }
}

/// At most this many targets are followed (a link farm must not turn the
/// agent into a whole-disk backup by surprise).
pub const MAX_FOLLOWED: usize = 256;

/// What following found.
#[derive(Debug, Default)]
pub struct Followed {
    /// Directories to protect as roots.
    pub dirs: Vec<PathBuf>,
    /// Directories that hold followed files, with the names to protect.
    pub files: BTreeMap<PathBuf, Vec<String>>,
    /// One line per link that was not followed, and why.
    pub notes: Vec<String>,
}

impl Followed {
    /// Every extra root: followed directories, then directories of files.
    pub fn roots(&self) -> Vec<PathBuf> {
        self.dirs.iter().chain(self.files.keys()).cloned().collect()
    }

    /// For [`IgnoreRules::with_only`].
    pub fn only(&self) -> Vec<(PathBuf, Vec<String>)> {
        self.files
            .iter()
            .map(|(d, n)| (d.clone(), n.clone()))
            .collect()
    }

    fn count(&self) -> usize {
        self.dirs.len() + self.files.values().map(Vec::len).sum::<usize>()
    }

    fn covers(&self, roots: &[PathBuf], p: &Path) -> bool {
        roots.iter().chain(&self.dirs).any(|r| p.starts_with(r))
    }
}

/// Find the targets to follow under `roots` (canonical directories).
/// `rules` are the roots' ignore rules; `ignored` the paths never protected
/// (the repository, the agent's state).
pub fn find(roots: &[PathBuf], rules: &IgnoreRules, ignored: &[PathBuf]) -> Followed {
    let mut out = Followed::default();
    let mut todo: Vec<PathBuf> = roots.to_vec();
    while let Some(dir) = todo.pop() {
        let mut links = Vec::new();
        scan(&dir, rules, |item| {
            if let ScanItem::Entry { path, metadata } = item
                && metadata.file_type().is_symlink()
            {
                links.push(path);
            }
        });
        for link in links {
            // A dangling link points at nothing to protect.
            let Ok(target) = link.canonicalize() else {
                continue;
            };
            if out.covers(roots, &target)
                || out
                    .files
                    .get(target.parent().unwrap_or(&target))
                    .is_some_and(|n| n.iter().any(|n| Some(n.as_str()) == file_name(&target)))
            {
                continue;
            }
            let note = |why: &str| {
                format!(
                    "{} -> {}: not followed ({why})",
                    link.display(),
                    target.display()
                )
            };
            if ignored
                .iter()
                .any(|i| target.starts_with(i) || i.starts_with(&target))
            {
                out.notes
                    .push(note("the repository or rewind's own state is there"));
                continue;
            }
            if roots.iter().any(|r| r.starts_with(&target)) {
                out.notes.push(note("it contains a protected folder"));
                continue;
            }
            if out.count() >= MAX_FOLLOWED {
                out.notes.push(note(&format!(
                    "more than {MAX_FOLLOWED} targets; protect it as a folder of its own"
                )));
                continue;
            }
            if target.is_dir() {
                // A directory followed now covers files followed inside it.
                out.files.retain(|d, _| !d.starts_with(&target));
                out.dirs.retain(|d| !d.starts_with(&target));
                out.dirs.push(target.clone());
                todo.push(target);
            } else {
                let (Some(parent), Some(name)) = (target.parent(), file_name(&target)) else {
                    out.notes.push(note("its name is not UTF-8"));
                    continue;
                };
                if roots.iter().chain(&out.dirs).any(|r| r.starts_with(parent)) {
                    out.notes
                        .push(note("its folder contains a protected or followed folder"));
                    continue;
                }
                out.files
                    .entry(parent.to_path_buf())
                    .or_default()
                    .push(name.to_string());
            }
        }
    }
    out
}

/// The file name as UTF-8 (ignore rules are text; a name that is not
/// UTF-8 is not followed).
fn file_name(p: &Path) -> Option<&str> {
    p.file_name().and_then(|n| n.to_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_out_of_the_roots_are_followed_once_and_chains_too() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().canonicalize().unwrap();
        let root = base.join("root");
        let outside = base.join("outside");
        let far = base.join("far");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(outside.join("deep")).unwrap();
        std::fs::create_dir_all(&far).unwrap();
        std::fs::write(far.join("notes.txt"), b"n").unwrap();
        std::fs::write(root.join("sub/in.txt"), b"i").unwrap();
        // Out to a directory, twice (and once into it): followed once.
        symlink(&outside, root.join("out")).unwrap();
        symlink(&outside, root.join("sub/again")).unwrap();
        symlink(outside.join("deep"), root.join("deeper")).unwrap();
        // Inside the root: never followed.
        symlink(root.join("sub/in.txt"), root.join("inner")).unwrap();
        // Dangling: nothing to follow.
        symlink(base.join("gone"), root.join("dangling")).unwrap();
        // Up to an ancestor of the root: refused.
        symlink(&base, root.join("up")).unwrap();
        // A chain: from the followed directory on to a file elsewhere.
        symlink(far.join("notes.txt"), outside.join("deep/notes")).unwrap();
        let roots = vec![root.clone()];
        let rules = IgnoreRules::new(&roots, &[], &[]).unwrap();
        let f = find(&roots, &rules, &[]);
        assert_eq!(f.dirs, vec![outside.clone()]);
        assert_eq!(
            f.files.get(&far).map(Vec::as_slice),
            Some(&["notes.txt".to_string()][..])
        );
        assert_eq!(f.roots(), vec![outside, far]);
        assert_eq!(f.notes.len(), 1, "{:?}", f.notes);
        assert!(
            f.notes[0].contains("contains a protected folder"),
            "{:?}",
            f.notes
        );
    }
}
