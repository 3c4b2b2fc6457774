//! The scanner used for the first pass and for rescans.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::rules::IgnoreRules;

/// One item of a [`scan`].
#[derive(Debug)]
pub enum ScanItem {
    /// A path that exists and is not ignored, with its `lstat` metadata
    /// (symlinks are reported as symlinks, never followed).
    Entry {
        /// Absolute path.
        path: PathBuf,
        /// `lstat` of `path`.
        metadata: fs::Metadata,
    },
    /// A path that could not be read: an unreadable directory (its contents
    /// are unknown, not gone), or an entry that vanished during the walk.
    Error {
        /// The directory or entry concerned.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
}

/// Walk `root` (inclusive: the first item is `root` itself), skipping ignored
/// paths and never following symlinks or crossing into ignored dirs.
/// Unreadable dirs/vanished paths yield [`ScanItem::Error`] and the walk goes
/// on. A directory is always visited before anything inside it; entries of
/// one directory come in byte order of their names. An ignored `root` yields
/// nothing.
pub fn scan(root: &Path, rules: &IgnoreRules, mut visit: impl FnMut(ScanItem)) {
    let metadata = match rewind_fsmeta::reach(root).and_then(|r| fs::symlink_metadata(r.path())) {
        Ok(metadata) => metadata,
        Err(error) => {
            visit(ScanItem::Error {
                path: root.to_path_buf(),
                error,
            });
            return;
        }
    };
    let is_dir = metadata.file_type().is_dir();
    if rules.is_ignored(root, is_dir) {
        return;
    }
    let chain = if is_dir {
        rules.chain_for_dir(root)
    } else {
        None
    };
    visit(ScanItem::Entry {
        path: root.to_path_buf(),
        metadata,
    });
    let Some(chain) = chain else {
        return;
    };

    // Depth-first with an explicit stack: no recursion limit on deep trees.
    let mut stack = vec![(root.to_path_buf(), chain)];
    while let Some((dir, chain)) = stack.pop() {
        // Past PATH_MAX, through a descriptor of the directory.
        let reach = match rewind_fsmeta::reach_dir(&dir) {
            Ok(r) => r,
            Err(error) => {
                visit(ScanItem::Error { path: dir, error });
                continue;
            }
        };
        let read = match fs::read_dir(reach.path()) {
            Ok(read) => read,
            Err(error) => {
                visit(ScanItem::Error { path: dir, error });
                continue;
            }
        };
        let mut names = Vec::new();
        for entry in read {
            match entry {
                Ok(entry) => names.push(entry.file_name()),
                Err(error) => {
                    // A failing readdir tends to keep failing; report once
                    // and keep what was listed.
                    visit(ScanItem::Error {
                        path: dir.clone(),
                        error,
                    });
                    break;
                }
            }
        }
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let metadata = fs::symlink_metadata(reach.path().join(&name));
            let path = dir.join(name);
            let metadata = match metadata {
                Ok(metadata) => metadata,
                Err(error) => {
                    visit(ScanItem::Error { path, error });
                    continue;
                }
            };
            let is_dir = metadata.file_type().is_dir();
            if rules.child_ignored(&chain, &path, is_dir) {
                continue;
            }
            if is_dir {
                subdirs.push(path.clone());
            }
            visit(ScanItem::Entry { path, metadata });
        }
        for sub in subdirs.into_iter().rev() {
            let sub_chain = rules.descend(&chain, &sub);
            stack.push((sub, sub_chain));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn running_as_root() -> bool {
        fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
            .unwrap_or(false)
    }

    fn collect(root: &Path, rules: &IgnoreRules) -> (Vec<PathBuf>, Vec<PathBuf>) {
        let mut entries = Vec::new();
        let mut errors = Vec::new();
        scan(root, rules, |item| match item {
            ScanItem::Entry { path, .. } => entries.push(path),
            ScanItem::Error { path, .. } => errors.push(path),
        });
        (entries, errors)
    }

    #[test]
    fn scan_skips_ignored_never_follows_symlinks_and_reports_unreadable_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        fs::write(elsewhere.path().join("outside.txt"), "x").unwrap();
        for dir in ["sub/target", "cache", "locked", "state/db", "sub/deeper"] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        for file in [
            "a.txt",
            "b.swp",
            "d.log",
            "sub/c.txt",
            "sub/deeper/e.txt",
            "sub/target/x",
            "cache/blob",
            "locked/inside",
            "state/db/journal",
        ] {
            fs::write(root.join(file), file).unwrap();
        }
        fs::write(root.join(".rewindignore"), "*.log\n").unwrap();
        fs::write(
            root.join("cache/CACHEDIR.TAG"),
            "Signature: 8a477f597d28d172789f06886806bc55\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(root.join("sub"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), root.join("out")).unwrap();
        fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();

        let rules = IgnoreRules::new(
            std::slice::from_ref(&root),
            &["target/".to_string()],
            &[root.join("state")],
        )
        .unwrap();
        let (entries, errors) = collect(&root, &rules);
        fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o755)).unwrap();

        let rel: Vec<String> = entries
            .iter()
            .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
            .collect();
        let mut expected = vec![
            "",
            ".rewindignore",
            "a.txt",
            "link",
            "locked",
            "out",
            "sub",
            "sub/c.txt",
            "sub/deeper",
            "sub/deeper/e.txt",
        ];
        if running_as_root() {
            // root reads a mode-000 directory anyway.
            expected.insert(7, "locked/inside");
            assert!(errors.is_empty(), "{errors:?}");
        } else {
            assert_eq!(errors, vec![root.join("locked")]);
        }
        assert_eq!(rel, expected);
        let link_meta = fs::symlink_metadata(root.join("link")).unwrap();
        assert!(link_meta.file_type().is_symlink());
    }

    #[test]
    fn scan_of_a_subtree_a_file_a_missing_path_and_an_ignored_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/f"), "x").unwrap();
        fs::create_dir_all(root.join("skip/inner")).unwrap();
        let rules =
            IgnoreRules::new(std::slice::from_ref(&root), &["skip".to_string()], &[]).unwrap();

        let (entries, errors) = collect(&root.join("a"), &rules);
        assert_eq!(
            entries,
            vec![root.join("a"), root.join("a/b"), root.join("a/b/f")]
        );
        assert!(errors.is_empty());

        let (entries, _) = collect(&root.join("a/b/f"), &rules);
        assert_eq!(entries, vec![root.join("a/b/f")]);

        let (entries, errors) = collect(&root.join("gone"), &rules);
        assert!(entries.is_empty());
        assert_eq!(errors, vec![root.join("gone")]);

        let (entries, errors) = collect(&root.join("skip/inner"), &rules);
        assert!(entries.is_empty() && errors.is_empty());
    }
}
