//! Inodes: what each number the kernel holds stands for.
//!
//! A node's number is a hash of what it is (its view and path), so a
//! directory listing gives each entry the number a lookup gives it, without
//! keeping anything for entries that are only listed. A node is kept from
//! the kernel's first lookup until it forgets it (its lookup count back to
//! zero): the table holds what the kernel holds, whatever was browsed.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use jiff::civil::Date;

use crate::views::Moment;

/// The mount's root.
pub(crate) const ROOT: u64 = 1;
/// `latest/`, which is also the root of the latest view.
pub(crate) const LATEST: u64 = 2;
/// `at/`.
pub(crate) const AT: u64 = 3;
/// `days/`.
pub(crate) const DAYS: u64 = 4;
/// `versions/`, which is also `versions` of `/`.
pub(crate) const VERSIONS: u64 = 5;

/// What a node is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// The mount's root.
    Root,
    /// `at/`.
    AtDir,
    /// `days/`.
    DaysDir,
    /// `days/<date>/`.
    Day(Date),
    /// A path in the tree at a moment: `latest/…`, `at/<time>/…`,
    /// `days/<date>/<time>/…`. `root` is the number of the directory the
    /// view hangs from, so the same moment under two names is two trees of
    /// nodes (a directory must have one parent).
    View {
        root: u64,
        moment: Moment,
        path: Box<[u8]>,
    },
    /// `versions/<path>/` for a folder: its entries, present or deleted.
    Folder(Box<[u8]>),
    /// `versions/<path>/` for anything else: one entry per version.
    VersionsOf(Box<[u8]>),
    /// One version of a path.
    Version { path: Box<[u8]>, seq: u64 },
}

impl Key {
    /// The node's number: fixed for the fixed directories, a hash for the
    /// rest (top bits set, so never one of the fixed ones).
    pub(crate) fn ino(&self) -> u64 {
        match self {
            Key::Root => ROOT,
            Key::AtDir => AT,
            Key::DaysDir => DAYS,
            Key::View { root, path, .. } if *root == LATEST && path.as_ref() == b"/" => LATEST,
            Key::Folder(p) if p.as_ref() == b"/" => VERSIONS,
            k => {
                let mut h = DefaultHasher::new();
                k.hash(&mut h);
                (h.finish() >> 2) | (1 << 62)
            }
        }
    }
}

/// The number of the view root `at/<name>` or `days/<date>/<name>`: one per
/// name under its parent.
pub(crate) fn view_root(parent: u64, name: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    (parent, name).hash(&mut h);
    (h.finish() >> 2) | (1 << 62)
}

struct Node {
    key: Key,
    lookups: u64,
}

/// The nodes the kernel holds.
pub(crate) struct Nodes {
    map: Mutex<HashMap<u64, Node>>,
}

impl Nodes {
    pub(crate) fn new() -> Nodes {
        let mut map = HashMap::new();
        for key in [Key::Root, Key::AtDir, Key::DaysDir] {
            map.insert(key.ino(), Node { key, lookups: 1 });
        }
        map.insert(
            LATEST,
            Node {
                key: Key::View {
                    root: LATEST,
                    moment: Moment::Latest,
                    path: Box::from(&b"/"[..]),
                },
                lookups: 1,
            },
        );
        map.insert(
            VERSIONS,
            Node {
                key: Key::Folder(Box::from(&b"/"[..])),
                lookups: 1,
            },
        );
        Nodes {
            map: Mutex::new(map),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Node>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What `ino` stands for.
    pub(crate) fn get(&self, ino: u64) -> Option<Key> {
        self.lock().get(&ino).map(|n| n.key.clone())
    }

    /// Count one more lookup of `key` under `ino`, which the kernel holds
    /// from now on.
    pub(crate) fn looked_up(&self, ino: u64, key: Key) {
        let mut m = self.lock();
        match m.get_mut(&ino) {
            Some(n) if n.key == key => n.lookups += 1,
            Some(n) => {
                // Two keys hashing alike: about one chance in 2^61 per pair.
                tracing::warn!(ino, "inode number collision; the newer entry wins");
                *n = Node { key, lookups: 1 };
            }
            None => {
                m.insert(ino, Node { key, lookups: 1 });
            }
        }
    }

    /// The kernel forgets `n` lookups of `ino`.
    pub(crate) fn forget(&self, ino: u64, n: u64) {
        if ino <= VERSIONS {
            return;
        }
        let mut m = self.lock();
        if let Some(node) = m.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(n);
            if node.lookups == 0 {
                m.remove(&ino);
            }
        }
    }

    /// How many nodes are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind_core::Timestamp;

    #[test]
    fn numbers_are_stable_and_nodes_go_when_forgotten() {
        let k = Key::View {
            root: 99,
            moment: Moment::At(Timestamp(5)),
            path: Box::from(&b"/a"[..]),
        };
        assert_eq!(k.ino(), k.clone().ino());
        assert!(k.ino() > VERSIONS);
        let nodes = Nodes::new();
        let base = nodes.len();
        nodes.looked_up(k.ino(), k.clone());
        nodes.looked_up(k.ino(), k.clone());
        nodes.forget(k.ino(), 1);
        assert_eq!(nodes.get(k.ino()), Some(k.clone()));
        nodes.forget(k.ino(), 1);
        assert_eq!(nodes.get(k.ino()), None);
        assert_eq!(nodes.len(), base);
        nodes.forget(ROOT, 10);
        assert!(nodes.get(ROOT).is_some(), "fixed nodes stay");
        assert_ne!(view_root(AT, b"x"), view_root(DAYS, b"x"));
    }
}
