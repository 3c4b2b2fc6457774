//! What changed between two trees (two answers of
//! [`crate::Repository::tree_at`]): added, removed, content changed,
//! metadata changed, renamed.
//!
//! - Content is the chunk list (with the sparse map, the symlink target and
//!   the kind, as [`crate::content_changed`] has it); metadata is mode,
//!   owner, mtime, extended attributes, ACLs, flags, link count and the
//!   inode (a file replaced by a copy). Access times are left out: reading
//!   a file is no change. When two different versions differ in nothing
//!   else, a differing ctime is reported.
//! - A removed file and an added one with the same non-empty content are a
//!   rename (when several could pair, one with the same name is taken
//!   first). A removed directory whose every entry reappears, with the same
//!   kind and content at the same place, under one added directory is a
//!   rename of the directory, reported as one change.

use std::collections::HashMap;

use crate::{ChunkRef, FileKind, Version, content_changed};

/// The kind of one change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Change {
    /// In the second tree only.
    Added,
    /// In the first tree only.
    Removed,
    /// In both; the content (or the kind) differs.
    Content,
    /// In both, same content; metadata differs.
    Metadata,
    /// Moved: the same content under another path.
    Renamed,
}

impl Change {
    /// A lowercase word for output.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Content => "changed",
            Change::Metadata => "metadata",
            Change::Renamed => "renamed",
        }
    }
}

/// One changed path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeChange {
    /// What happened.
    pub change: Change,
    /// The path in the second tree (in the first for a removal).
    pub path: Vec<u8>,
    /// For a rename, the path in the first tree.
    pub from: Option<Vec<u8>>,
    /// The version in the first tree.
    pub old: Option<Version>,
    /// The version in the second tree.
    pub new: Option<Version>,
    /// The metadata that differs (`mode`, `owner`, `mtime`, `xattrs`,
    /// `acl`, `flags`, `links`, `inode`, or `ctime` alone).
    pub fields: Vec<&'static str>,
}

/// What differs between `old` and `new` (each sorted by path, as
/// `tree_at` returns them), sorted by path.
pub fn diff_trees(old: &[Version], new: &[Version]) -> Vec<TreeChange> {
    let mut out = Vec::new();
    let mut removed: Vec<&Version> = Vec::new();
    let mut added: Vec<&Version> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        let ord = match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) => a.path.cmp(&b.path),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match ord {
            std::cmp::Ordering::Less => {
                removed.push(&old[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                added.push(&new[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (a, b) = (&old[i], &new[j]);
                if let Some(c) = compare(a, b) {
                    out.push(c);
                }
                i += 1;
                j += 1;
            }
        }
    }
    let dir_renames = directory_renames(&removed, &added, old, new);
    let inside = |p: &[u8], dirs: &[(&[u8], &[u8])], first: bool| {
        dirs.iter().any(|(f, t)| {
            let d = if first { f } else { t };
            crate::path::is_under(p, d)
        })
    };
    let removed: Vec<&Version> = removed
        .into_iter()
        .filter(|v| !inside(&v.path, &dir_renames, true))
        .collect();
    let added: Vec<&Version> = added
        .into_iter()
        .filter(|v| !inside(&v.path, &dir_renames, false))
        .collect();
    for (f, t) in &dir_renames {
        let a = old
            .iter()
            .find(|v| v.path == *f)
            .expect("a removed directory");
        let b = new
            .iter()
            .find(|v| v.path == *t)
            .expect("an added directory");
        out.push(TreeChange {
            change: Change::Renamed,
            path: t.to_vec(),
            from: Some(f.to_vec()),
            old: Some(a.clone()),
            new: Some(b.clone()),
            fields: meta_fields(a, b),
        });
    }
    // Files by content: what was removed, waiting for its new place.
    let mut by_content: HashMap<ContentKey<'_>, Vec<usize>> = HashMap::new();
    for (k, v) in removed.iter().enumerate() {
        if let Some(key) = content_key(v) {
            by_content.entry(key).or_default().push(k);
        }
    }
    let mut paired = vec![false; removed.len()];
    for b in added {
        let found = content_key(b).and_then(|key| {
            let cands = by_content.get_mut(&key)?;
            let pos = cands
                .iter()
                .position(|&k| name(&removed[k].path) == name(&b.path))
                .unwrap_or(0);
            (!cands.is_empty()).then(|| cands.remove(pos))
        });
        match found {
            Some(k) => {
                paired[k] = true;
                let a = removed[k];
                out.push(TreeChange {
                    change: Change::Renamed,
                    path: b.path.clone(),
                    from: Some(a.path.clone()),
                    old: Some(a.clone()),
                    new: Some(b.clone()),
                    fields: meta_fields(a, b),
                });
            }
            None => out.push(TreeChange {
                change: Change::Added,
                path: b.path.clone(),
                from: None,
                old: None,
                new: Some(b.clone()),
                fields: Vec::new(),
            }),
        }
    }
    for (k, a) in removed.iter().enumerate() {
        if !paired[k] {
            out.push(TreeChange {
                change: Change::Removed,
                path: a.path.clone(),
                from: None,
                old: Some((*a).clone()),
                new: None,
                fields: Vec::new(),
            });
        }
    }
    out.sort_by(|x, y| {
        x.path
            .cmp(&y.path)
            .then(x.change.as_str().cmp(y.change.as_str()))
    });
    out
}

/// The change between two versions of one path, if any.
fn compare(a: &Version, b: &Version) -> Option<TreeChange> {
    if a.seq == b.seq && a.client == b.client {
        return None;
    }
    let change = if content_changed(Some(a), b) {
        Change::Content
    } else {
        Change::Metadata
    };
    let fields = meta_fields(a, b);
    if change == Change::Metadata && fields.is_empty() {
        return None;
    }
    Some(TreeChange {
        change,
        path: b.path.clone(),
        from: None,
        old: Some(a.clone()),
        new: Some(b.clone()),
        fields,
    })
}

/// The metadata fields that differ (see [`TreeChange::fields`]).
fn meta_fields(a: &Version, b: &Version) -> Vec<&'static str> {
    let mut out = Vec::new();
    let (Some(m), Some(n)) = (a.meta(), b.meta()) else {
        return out;
    };
    if m.mode != n.mode {
        out.push("mode");
    }
    if (m.uid, m.gid, &m.user, &m.group) != (n.uid, n.gid, &n.user, &n.group) {
        out.push("owner");
    }
    if m.mtime != n.mtime {
        out.push("mtime");
    }
    if a.xattrs() != b.xattrs() {
        out.push("xattrs");
    }
    if (&m.acl, &m.default_acl) != (&n.acl, &n.default_acl) {
        out.push("acl");
    }
    if m.flags != n.flags {
        out.push("flags");
    }
    if m.kind != FileKind::Dir && m.nlink != n.nlink {
        out.push("links");
    }
    if a.path == b.path && (m.dev, m.ino) != (n.dev, n.ino) {
        out.push("inode");
    }
    if out.is_empty() && m.ctime != n.ctime {
        out.push("ctime");
    }
    out
}

/// What makes two files the same content for rename detection: kind,
/// chunks, sparse map. Empty files and everything but regular files have
/// none (any empty file would pair with any other).
#[derive(PartialEq, Eq, Hash)]
struct ContentKey<'a> {
    chunks: &'a [ChunkRef],
    sparse: Option<Vec<(u64, u64)>>,
    size: u64,
}

fn content_key(v: &Version) -> Option<ContentKey<'_>> {
    let m = v.meta()?;
    if m.kind != FileKind::File || v.chunks().is_empty() {
        return None;
    }
    Some(ContentKey {
        chunks: v.chunks(),
        sparse: m
            .sparse
            .as_ref()
            .map(|x| x.iter().map(|e| (e.offset, e.len)).collect()),
        size: v.size(),
    })
}

fn name(p: &[u8]) -> &[u8] {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => &p[i + 1..],
        None => p,
    }
}

/// Removed directories whose whole tree reappears under one added
/// directory: `(from, to)`, outermost first, nested ones left out.
fn directory_renames<'a>(
    removed: &[&'a Version],
    added: &[&'a Version],
    old: &'a [Version],
    new: &'a [Version],
) -> Vec<(&'a [u8], &'a [u8])> {
    let is_dir = |v: &Version| v.meta().is_some_and(|m| m.kind == FileKind::Dir);
    let added_dirs: Vec<&Version> = added.iter().copied().filter(|v| is_dir(v)).collect();
    let mut out: Vec<(&[u8], &[u8])> = Vec::new();
    for r in removed.iter().copied().filter(|v| is_dir(v)) {
        if out.iter().any(|(f, _)| crate::path::is_under(&r.path, f)) {
            continue;
        }
        let under_old = subtree(old, &r.path);
        if under_old.len() < 2 {
            // An empty directory has nothing to recognise it by.
            continue;
        }
        for a in &added_dirs {
            if out.iter().any(|(_, t)| crate::path::is_under(&a.path, t)) {
                continue;
            }
            let under_new = subtree(new, &a.path);
            if under_new.len() != under_old.len() {
                continue;
            }
            let same = under_old.iter().zip(under_new).all(|(x, y)| {
                x.path[r.path.len()..] == y.path[a.path.len()..]
                    && x.meta().map(|m| m.kind) == y.meta().map(|m| m.kind)
                    && !content_changed(Some(*x), y)
            });
            if same {
                out.push((&r.path, &a.path));
                break;
            }
        }
    }
    out
}

/// `dir` and everything below it in a sorted tree, in order. Not a slice:
/// a sibling such as `dir.txt` or `dir-old` sorts between `dir` and
/// `dir/…` (`.` and `-` sort before `/`).
fn subtree<'a>(tree: &'a [Version], dir: &[u8]) -> Vec<&'a Version> {
    let start = tree.partition_point(|v| v.path.as_slice() < dir);
    tree[start..]
        .iter()
        .take_while(|v| v.path.starts_with(dir))
        .filter(|v| crate::path::is_under(&v.path, dir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChunkId, Entry, FileMeta, Timestamp};

    fn file(seq: u64, path: &str, content: &[u8], mode: u32) -> Version {
        let chunks = if content.is_empty() {
            vec![]
        } else {
            vec![ChunkRef {
                id: ChunkId::of(content),
                len: content.len() as u32,
            }]
        };
        Version {
            client: "c".into(),
            seq,
            observed_at: Timestamp(seq as i64),
            path: path.as_bytes().to_vec(),
            entry: Entry::Present {
                meta: FileMeta {
                    size: content.len() as u64,
                    ..FileMeta::new(FileKind::File, mode)
                },
                chunks,
                xattrs: vec![],
            },
        }
    }

    fn dir(seq: u64, path: &str) -> Version {
        Version {
            client: "c".into(),
            seq,
            observed_at: Timestamp(seq as i64),
            path: path.as_bytes().to_vec(),
            entry: Entry::Present {
                meta: FileMeta::new(FileKind::Dir, 0o755),
                chunks: vec![],
                xattrs: vec![],
            },
        }
    }

    fn summary(ch: &[TreeChange]) -> Vec<String> {
        ch.iter()
            .map(|c| match &c.from {
                Some(f) => format!(
                    "{} {} -> {}",
                    c.change.as_str(),
                    String::from_utf8_lossy(f),
                    String::from_utf8_lossy(&c.path)
                ),
                None => format!("{} {}", c.change.as_str(), String::from_utf8_lossy(&c.path)),
            })
            .collect()
    }

    fn sorted(mut v: Vec<Version>) -> Vec<Version> {
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v
    }

    #[test]
    fn every_kind_of_change() {
        let old = sorted(vec![
            dir(1, "/r"),
            file(2, "/r/same", b"same", 0o644),
            file(3, "/r/edit", b"one", 0o644),
            file(4, "/r/chmod", b"mode", 0o644),
            file(5, "/r/gone", b"gone", 0o644),
            file(6, "/r/moved", b"moving content", 0o644),
        ]);
        let mut chmod = file(14, "/r/chmod", b"mode", 0o600);
        chmod.seq = 14;
        let new = sorted(vec![
            dir(1, "/r"),
            file(2, "/r/same", b"same", 0o644),
            file(13, "/r/edit", b"two", 0o644),
            chmod,
            file(16, "/r/sub-moved", b"moving content", 0o644),
            file(17, "/r/new", b"new", 0o644),
        ]);
        let ch = diff_trees(&old, &new);
        assert_eq!(
            summary(&ch),
            vec![
                "metadata /r/chmod",
                "changed /r/edit",
                "removed /r/gone",
                "added /r/new",
                "renamed /r/moved -> /r/sub-moved",
            ]
        );
        let chmod = ch.iter().find(|c| c.path == b"/r/chmod").unwrap();
        assert_eq!(chmod.fields, vec!["mode"]);
    }

    #[test]
    fn a_moved_directory_is_one_rename() {
        let old = sorted(vec![
            dir(1, "/r"),
            dir(2, "/r/a"),
            file(3, "/r/a/x", b"x content", 0o644),
            file(4, "/r/a/empty", b"", 0o644),
            dir(5, "/r/a/sub"),
            file(6, "/r/a/sub/y", b"y content", 0o644),
        ]);
        let new = sorted(vec![
            dir(1, "/r"),
            dir(12, "/r/b"),
            file(13, "/r/b/x", b"x content", 0o644),
            file(14, "/r/b/empty", b"", 0o644),
            dir(15, "/r/b/sub"),
            file(16, "/r/b/sub/y", b"y content", 0o644),
        ]);
        assert_eq!(
            summary(&diff_trees(&old, &new)),
            vec!["renamed /r/a -> /r/b"]
        );
    }

    #[test]
    fn empty_files_are_never_paired() {
        let old = sorted(vec![dir(1, "/r"), file(2, "/r/e1", b"", 0o644)]);
        let new = sorted(vec![dir(1, "/r"), file(3, "/r/e2", b"", 0o644)]);
        assert_eq!(
            summary(&diff_trees(&old, &new)),
            vec!["removed /r/e1", "added /r/e2"]
        );
    }

    #[test]
    fn the_same_version_is_no_change_and_a_sibling_with_a_dot_stays_out_of_a_subtree() {
        let t = sorted(vec![
            dir(1, "/r"),
            dir(2, "/r/a"),
            file(3, "/r/a.txt", b"sibling", 0o644),
            file(4, "/r/a/x", b"x", 0o644),
        ]);
        assert!(diff_trees(&t, &t).is_empty());
        let under: Vec<&[u8]> = subtree(&t, b"/r/a")
            .iter()
            .map(|v| v.path.as_slice())
            .collect();
        assert_eq!(under, vec![&b"/r/a"[..], b"/r/a/x"]);
    }
}
