//! [`Tree`]: the state of every protected path at one moment (one answer
//! of `Repository::tree_at` for `/`), indexed by directory for lookups and
//! listings.

use rewind_core::{Entry, FileKind, FileMeta, FileTime, Timestamp, Version};

/// The tree at one moment: versions sorted by path, with the directories
/// above the protected folders (never recorded: `/`, `/home`, …) made up as
/// read-only directories of the mounting user.
pub(crate) struct Tree {
    /// Sorted by path; the first is `/`.
    entries: Vec<Version>,
    /// For each entry, its children's indexes in name order (empty for
    /// anything but directories).
    children: Vec<Box<[u32]>>,
}

impl Tree {
    /// Index `versions` (as `tree_at` returns them: sorted by path, every
    /// one absolute). Made-up directories carry `shown_at` as their times
    /// and `owner` as their owner.
    pub(crate) fn new(mut versions: Vec<Version>, shown_at: Timestamp, owner: (u32, u32)) -> Tree {
        versions.retain(|v| v.path.first() == Some(&b'/'));
        let mut made_up: Vec<Vec<u8>> = Vec::new();
        {
            let known = |p: &[u8], made: &[Vec<u8>]| {
                versions
                    .binary_search_by(|v| v.path.as_slice().cmp(p))
                    .is_ok()
                    || made.iter().any(|m| m == p)
            };
            let mut last: Vec<u8> = Vec::new();
            for v in &versions {
                let mut p = parent(&v.path);
                while let Some(a) = p {
                    if a == last.as_slice() || known(a, &made_up) {
                        break;
                    }
                    made_up.push(a.to_vec());
                    p = parent(a);
                }
                if let Some(a) = parent(&v.path) {
                    last = a.to_vec();
                }
            }
            if !known(b"/", &made_up) {
                made_up.push(b"/".to_vec());
            }
        }
        let ft = FileTime {
            sec: shown_at.0.div_euclid(1_000_000_000),
            nsec: shown_at.0.rem_euclid(1_000_000_000) as u32,
        };
        for path in made_up {
            versions.push(Version {
                client: String::new(),
                seq: 0,
                observed_at: shown_at,
                path,
                entry: Entry::Present {
                    meta: FileMeta {
                        uid: owner.0,
                        gid: owner.1,
                        mtime: ft,
                        atime: ft,
                        ctime: ft,
                        nlink: 1,
                        ..FileMeta::new(FileKind::Dir, 0o555)
                    },
                    chunks: Vec::new(),
                    xattrs: Vec::new(),
                },
            });
        }
        versions.sort_by(|a, b| a.path.cmp(&b.path));
        versions.dedup_by(|a, b| a.path == b.path);
        let mut children: Vec<Vec<u32>> = vec![Vec::new(); versions.len()];
        for (i, v) in versions.iter().enumerate() {
            if let Some(p) = parent(&v.path)
                && let Ok(k) = versions.binary_search_by(|x| x.path.as_slice().cmp(p))
            {
                children[k].push(i as u32);
            }
        }
        Tree {
            entries: versions,
            children: children.into_iter().map(Vec::into_boxed_slice).collect(),
        }
    }

    /// The entry at `path`.
    pub(crate) fn get(&self, path: &[u8]) -> Option<&Version> {
        self.index(path).map(|i| &self.entries[i])
    }

    fn index(&self, path: &[u8]) -> Option<usize> {
        self.entries
            .binary_search_by(|v| v.path.as_slice().cmp(path))
            .ok()
    }

    /// The entries directly inside the directory `path`, in name order
    /// (`None` when `path` is not a directory of this tree).
    pub(crate) fn children(&self, path: &[u8]) -> Option<impl Iterator<Item = &Version>> {
        let i = self.index(path)?;
        let v = &self.entries[i];
        if v.meta().map(|m| m.kind) != Some(FileKind::Dir) {
            return None;
        }
        Some(self.children[i].iter().map(|&k| &self.entries[k as usize]))
    }

    /// How many entries it holds (made-up directories included).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The parent of an absolute path; `None` for `/`.
pub(crate) fn parent(p: &[u8]) -> Option<&[u8]> {
    if p == b"/" || p.is_empty() {
        return None;
    }
    match p.iter().rposition(|&b| b == b'/')? {
        0 => Some(b"/"),
        i => Some(&p[..i]),
    }
}

/// `dir/name` (`/name` below `/`).
pub(crate) fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    p.extend_from_slice(dir);
    if !dir.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// The last component of a path.
pub(crate) fn name_of(p: &[u8]) -> &[u8] {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => &p[i + 1..],
        None => p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(path: &str, kind: FileKind) -> Version {
        Version {
            client: "c".into(),
            seq: 1,
            observed_at: Timestamp(1),
            path: path.as_bytes().to_vec(),
            entry: Entry::Present {
                meta: FileMeta::new(kind, 0o644),
                chunks: vec![],
                xattrs: vec![],
            },
        }
    }

    #[test]
    fn parents_above_the_protected_folders_are_made_up() {
        let t = Tree::new(
            vec![
                v("/home/u/docs", FileKind::Dir),
                v("/home/u/docs/a", FileKind::File),
                v("/home/u/docs/a.txt", FileKind::File),
                v("/home/u/docs/a/b", FileKind::File),
                v("/srv", FileKind::Dir),
                v("dumps/db", FileKind::File),
            ],
            Timestamp(5),
            (7, 8),
        );
        let names = |p: &str| -> Vec<String> {
            t.children(p.as_bytes())
                .map(|c| {
                    c.map(|v| String::from_utf8_lossy(name_of(&v.path)).into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(names("/"), vec!["home", "srv"]);
        assert_eq!(names("/home"), vec!["u"]);
        assert_eq!(names("/home/u/docs"), vec!["a", "a.txt"]);
        assert!(
            t.children(b"/home/u/docs/a").is_none(),
            "a file has no children"
        );
        let home = t.get(b"/home").unwrap().meta().unwrap();
        assert_eq!((home.mode, home.uid, home.gid), (0o555, 7, 8));
        assert!(t.get(b"dumps/db").is_none(), "dumps are not files");
        assert_eq!(t.len(), 8);
        assert_eq!(join(b"/", b"x"), b"/x");
        assert_eq!(join(b"/a", b"x"), b"/a/x");
        assert_eq!(parent(b"/a"), Some(&b"/"[..]));
    }
}
