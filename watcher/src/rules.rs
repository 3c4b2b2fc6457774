//! Which paths under the protected roots are not protected.
//!
//! Sources of rules, from weakest to strongest:
//!
//! 1. [`DEFAULT_IGNORES`] (editor swap, backup and lock files);
//! 2. `--exclude` patterns, read like lines of a `.gitignore` at the top of
//!    every root, after the defaults (so `!*.swp` there re-includes swap files);
//! 3. `.rewindignore` files, gitignore syntax, in any directory under a root;
//!    a deeper file overrides a shallower one, `!` re-includes;
//! 4. hard rules nothing re-includes: `ignored_paths` with everything below
//!    them, and directories tagged with a valid `CACHEDIR.TAG` (the directory
//!    and its contents).
//!
//! As in git, a path below an ignored directory is ignored whatever its own
//! patterns say. A `.rewindignore` file itself is user data: patterns never
//! match it (only an ignored ancestor can hide it).
//!
//! Parsed `.rewindignore` files and `CACHEDIR.TAG` checks are cached per
//! directory behind a mutex; [`IgnoreRules::invalidate`] forgets a directory
//! (and everything cached below it) when its files change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::error::WatchError;

/// Name of the per-directory ignore file (gitignore syntax).
pub const IGNORE_FILE_NAME: &str = ".rewindignore";

/// Name of the cache directory tag file (<https://bford.info/cachedir/>).
pub const CACHEDIR_TAG_NAME: &str = "CACHEDIR.TAG";

/// A `CACHEDIR.TAG` counts only when its content starts with this signature
/// (as the specification says), so a stray file of that name hides nothing.
const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// Files that editors create beside the file being edited and delete again
/// moments later; capturing them only adds noise and churn. Gitignore syntax,
/// applied under every root before `--exclude` and `.rewindignore` (which may
/// re-include any of them with `!`).
pub const DEFAULT_IGNORES: &[&str] = &[
    // vim swap files (.x.swp, then .swo, .swx when the first is taken)
    "*.swp",
    "*.swo",
    "*.swx",
    // backup copies of emacs, gedit, nano, vim with 'backup'
    "*~",
    // emacs lock files (symlinks named .#file)
    ".#*",
    // emacs auto-save files #file#; the backslash keeps the leading # from
    // being read as a gitignore comment
    "\\#*#",
    // the probe file vim writes to test whether a directory is writable
    "4913",
    // kate swap files
    "*.kate-swp",
    // GIO/GTK atomic-save temporaries (gedit, nautilus)
    ".goutputstream-*",
    // LibreOffice lock files (.~lock.report.odt#)
    ".~lock.*#",
];

/// Parsed directories kept in the cache before it is emptied. Each entry costs
/// a path and a small struct (~150 bytes), so this bounds the cache at roughly
/// 15 MB; emptying it only costs two failed `open`s per directory on the next
/// lookups, which is small next to the walk that fills it.
const DIR_CACHE_CAP: usize = 100_000;

/// Distinct warnings remembered for de-duplication; a bound so a tree full of
/// broken `.rewindignore` files cannot grow memory without limit.
const WARNINGS_CAP: usize = 1_000;

/// Decides which paths under the protected roots are ignored.
///
/// `Send + Sync`; lookups take a short internal lock on the per-directory cache.
pub struct IgnoreRules {
    /// Sorted longest path first, so the first root containing a path is its
    /// innermost root.
    roots: Vec<RootRules>,
    ignored_paths: Vec<PathBuf>,
    cache: Mutex<BTreeMap<PathBuf, Arc<DirRules>>>,
    /// The rule chain of each directory whose entries were checked with
    /// [`IgnoreRules::is_ignored`] (`None`: the directory is ignored), so a
    /// capture does not walk its ancestors again for every file.
    chains: Mutex<HashMap<PathBuf, Option<Chain>>>,
    warnings: Mutex<Warnings>,
}

struct RootRules {
    root: PathBuf,
    /// Defaults then `--exclude` lines, rooted at `root`.
    base: Gitignore,
}

#[derive(Default)]
struct Warnings {
    pending: Vec<String>,
    seen: HashSet<String>,
}

/// What one directory contributes: its `.rewindignore` and its cache tag.
#[derive(Default)]
pub(crate) struct DirRules {
    file: Option<Gitignore>,
    cache_tag: bool,
}

/// The rules that apply to the entries of one directory: the root's base
/// rules plus the `.rewindignore` of every directory from the root down to it.
/// Built once per directory by the scanner, so checking an entry costs no
/// ancestor walk.
#[derive(Clone)]
pub(crate) struct Chain {
    /// Index into `IgnoreRules::roots`; `None` for a directory outside every
    /// root, where only `ignored_paths` apply.
    root: Option<usize>,
    dirs: Vec<Arc<DirRules>>,
}

impl fmt::Debug for IgnoreRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IgnoreRules")
            .field(
                "roots",
                &self.roots.iter().map(|r| &r.root).collect::<Vec<_>>(),
            )
            .field("ignored_paths", &self.ignored_paths)
            .field("cached_dirs", &lock(&self.cache).len())
            .finish_non_exhaustive()
    }
}

impl IgnoreRules {
    /// `roots`: protected roots; `excludes`: gitignore-syntax globs from
    /// `--exclude` (they apply anywhere under the roots, like lines of a
    /// top-level `.gitignore`; an absolute pattern that lies under a root is
    /// taken relative to that root); `ignored_paths`: absolute paths ignored
    /// with everything under them (the repository and the agent's state dir
    /// when they lie inside a root).
    pub fn new(
        roots: &[PathBuf],
        excludes: &[String],
        ignored_paths: &[PathBuf],
    ) -> Result<IgnoreRules, WatchError> {
        Self::with_only(roots, excludes, ignored_paths, &[])
    }

    /// [`new`](Self::new), where each root listed in `only` protects
    /// nothing but the named entries directly inside it (a directory
    /// outside the protected folders that holds files some symlink points
    /// to, with `follow_symlinks = "outside-roots"`).
    pub fn with_only(
        roots: &[PathBuf],
        excludes: &[String],
        ignored_paths: &[PathBuf],
        only: &[(PathBuf, Vec<String>)],
    ) -> Result<IgnoreRules, WatchError> {
        let mut compiled = Vec::with_capacity(roots.len());
        for root in roots {
            let mut builder = GitignoreBuilder::new(root);
            for line in DEFAULT_IGNORES {
                builder
                    .add_line(None, line)
                    .expect("DEFAULT_IGNORES are valid gitignore lines");
            }
            if let Some((_, names)) = only.iter().find(|(r, _)| r == root) {
                builder
                    .add_line(None, "/*")
                    .expect("a valid gitignore line");
                for name in names {
                    let line = format!("!/{}", escape_glob(name));
                    builder
                        .add_line(None, &line)
                        .map_err(|source| WatchError::Exclude {
                            pattern: line.clone(),
                            root: root.clone(),
                            source,
                        })?;
                }
            }
            for pattern in excludes {
                let line = exclude_for_root(pattern, root);
                builder
                    .add_line(None, &line)
                    .map_err(|source| WatchError::Exclude {
                        pattern: pattern.clone(),
                        root: root.clone(),
                        source,
                    })?;
            }
            let base = builder.build().map_err(|source| WatchError::Exclude {
                pattern: excludes.join(" "),
                root: root.clone(),
                source,
            })?;
            compiled.push(RootRules {
                root: normalize(root),
                base,
            });
        }
        compiled.sort_by_key(|r| std::cmp::Reverse(r.root.components().count()));
        Ok(IgnoreRules {
            roots: compiled,
            ignored_paths: ignored_paths.iter().map(|p| normalize(p)).collect(),
            cache: Mutex::new(BTreeMap::new()),
            chains: Mutex::new(HashMap::new()),
            warnings: Mutex::new(Warnings::default()),
        })
    }

    /// True when `path` (absolute) or one of its ancestors below its root is
    /// ignored. `is_dir` says whether `path` itself is a directory (patterns
    /// ending in `/` match directories only). A root itself is never ignored
    /// unless it lies under an `ignored_paths` entry; a path outside every
    /// root is ignored only by `ignored_paths`.
    pub fn is_ignored(&self, path: &Path, is_dir: bool) -> bool {
        if self.under_ignored_path(path) {
            return true;
        }
        let Some(index) = self.root_index(path) else {
            return false;
        };
        let root = &self.roots[index].root;
        if path == root {
            return false;
        }
        let Some(parent) = path.parent() else {
            return false;
        };
        let cached = lock(&self.chains).get(parent).cloned();
        let chain = match cached {
            Some(c) => c,
            None => {
                let c = self.chain_for_dir(parent);
                let mut chains = lock(&self.chains);
                if chains.len() >= DIR_CACHE_CAP {
                    chains.clear();
                }
                chains.insert(parent.to_path_buf(), c.clone());
                c
            }
        };
        match chain {
            None => true,
            Some(chain) => self.child_ignored(&chain, path, is_dir),
        }
    }

    /// Forget the cached `.rewindignore` and `CACHEDIR.TAG` state of `dir`
    /// and of every directory below it (call when one of those files changed,
    /// or when the directory was replaced).
    pub fn invalidate(&self, dir: &Path) {
        let mut cache = lock(&self.cache);
        let doomed: Vec<PathBuf> = cache
            .range::<Path, _>((std::ops::Bound::Included(dir), std::ops::Bound::Unbounded))
            .take_while(|(p, _)| p.starts_with(dir))
            .map(|(p, _)| p.clone())
            .collect();
        for p in doomed {
            cache.remove(&p);
        }
        drop(cache);
        lock(&self.chains).retain(|p, _| !under(p, dir));
    }

    /// Messages about `.rewindignore` files that could not be read or parsed
    /// (each reported once), gathered since the last call. The rules that did
    /// parse are applied; a line that did not is skipped.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut lock(&self.warnings).pending)
    }

    /// The innermost root containing `path`.
    pub(crate) fn root_index(&self, path: &Path) -> Option<usize> {
        self.roots.iter().position(|r| under(path, &r.root))
    }

    fn under_ignored_path(&self, path: &Path) -> bool {
        self.ignored_paths.iter().any(|p| under(path, p))
    }

    /// The chain of rules for the entries of `dir`, or `None` when `dir`
    /// itself (or an ancestor below its root) is ignored.
    pub(crate) fn chain_for_dir(&self, dir: &Path) -> Option<Chain> {
        if self.under_ignored_path(dir) {
            return None;
        }
        let Some(index) = self.root_index(dir) else {
            return Some(Chain {
                root: None,
                dirs: Vec::new(),
            });
        };
        let root = &self.roots[index].root;
        let rel = dir
            .strip_prefix(root)
            .expect("root_index checked the prefix");
        let mut chain = Chain {
            root: Some(index),
            dirs: vec![self.dir_rules(root)],
        };
        let mut current = root.clone();
        for component in rel.components() {
            current.push(component);
            if self.child_ignored(&chain, &current, true) {
                return None;
            }
            chain.dirs.push(self.dir_rules(&current));
        }
        Some(chain)
    }

    /// The chain for the entries of `dir`, a non-ignored child of the
    /// directory `parent` describes.
    pub(crate) fn descend(&self, parent: &Chain, dir: &Path) -> Chain {
        let mut chain = parent.clone();
        if chain.root.is_some() {
            chain.dirs.push(self.dir_rules(dir));
        }
        chain
    }

    /// Whether `path`, an entry of the directory `chain` describes, is ignored.
    pub(crate) fn child_ignored(&self, chain: &Chain, path: &Path, is_dir: bool) -> bool {
        if self.under_ignored_path(path) {
            return true;
        }
        let Some(index) = chain.root else {
            return false;
        };
        if is_dir && self.dir_rules(path).cache_tag {
            return true;
        }
        if !is_dir && path.file_name() == Some(OsStr::new(IGNORE_FILE_NAME)) {
            return false;
        }
        for dir in chain.dirs.iter().rev() {
            if let Some(file) = &dir.file {
                match file.matched(path, is_dir) {
                    Match::Ignore(_) => return true,
                    Match::Whitelist(_) => return false,
                    Match::None => {}
                }
            }
        }
        self.roots[index].base.matched(path, is_dir).is_ignore()
    }

    fn dir_rules(&self, dir: &Path) -> Arc<DirRules> {
        if let Some(rules) = lock(&self.cache).get(dir) {
            return Arc::clone(rules);
        }
        // Load without holding the lock: it reads two files.
        let rules = Arc::new(DirRules {
            file: self.load_ignore_file(dir),
            cache_tag: has_cachedir_tag(dir),
        });
        let mut cache = lock(&self.cache);
        if cache.len() >= DIR_CACHE_CAP {
            cache.clear();
        }
        cache.insert(dir.to_path_buf(), Arc::clone(&rules));
        rules
    }

    fn load_ignore_file(&self, dir: &Path) -> Option<Gitignore> {
        let file = dir.join(IGNORE_FILE_NAME);
        let bytes = match rewind_fsmeta::reach(&file).and_then(|r| fs::read(r.path())) {
            Ok(bytes) => bytes,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return None;
            }
            Err(e) => {
                self.warn(format!(
                    "cannot read {}: {e}; its rules are not applied",
                    file.display()
                ));
                return None;
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        let mut builder = GitignoreBuilder::new(dir);
        for (number, line) in text.lines().enumerate() {
            if let Err(e) = builder.add_line(Some(file.clone()), line) {
                self.warn(format!(
                    "{} line {}: {e}; the line is skipped",
                    file.display(),
                    number + 1
                ));
            }
        }
        match builder.build() {
            Ok(gitignore) => Some(gitignore),
            Err(e) => {
                self.warn(format!(
                    "{}: {e}; its rules are not applied",
                    file.display()
                ));
                None
            }
        }
    }

    fn warn(&self, message: String) {
        tracing::warn!("{message}");
        let mut warnings = lock(&self.warnings);
        if warnings.seen.len() < WARNINGS_CAP && warnings.seen.insert(message.clone()) {
            warnings.pending.push(message);
        }
    }
}

/// An absolute `--exclude` pattern naming a path under `root` is rewritten
/// to the equivalent root-anchored pattern (`/home/u/p/target` under root
/// `/home/u/p` becomes `/target`); anything else is used unchanged.
/// `name` as a gitignore pattern that matches exactly that name.
fn escape_glob(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(
            c,
            '\\' | '*' | '?' | '[' | ']' | '!' | '#' | ' ' | '{' | '}'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn exclude_for_root(pattern: &str, root: &Path) -> String {
    let (negation, body) = match pattern.strip_prefix('!') {
        Some(rest) => ("!", rest),
        None => ("", pattern),
    };
    if body.starts_with('/')
        && let Ok(rel) = Path::new(body).strip_prefix(root)
        && let Some(rel) = rel.to_str().filter(|r| !r.is_empty())
    {
        let slash = if body.ends_with('/') { "/" } else { "" };
        return format!("{negation}/{rel}{slash}");
    }
    pattern.to_string()
}

fn has_cachedir_tag(dir: &Path) -> bool {
    let tag = dir.join(CACHEDIR_TAG_NAME);
    let Ok(file) = rewind_fsmeta::reach(&tag).and_then(|r| fs::File::open(r.path())) else {
        return false;
    };
    let mut head = Vec::with_capacity(CACHEDIR_SIGNATURE.len());
    match file
        .take(CACHEDIR_SIGNATURE.len() as u64)
        .read_to_end(&mut head)
    {
        Ok(_) => head == CACHEDIR_SIGNATURE,
        Err(_) => false,
    }
}

/// Both mutexes guard plain caches that are valid after any panic, so a
/// poisoned lock is simply taken over.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `p` rebuilt from its components: no `.`, doubled or trailing `/`.
fn normalize(p: &Path) -> PathBuf {
    p.components().collect()
}

/// `path.starts_with(base)` on the bytes: the paths handled here are
/// absolute and normalized (no `.`, `..`, doubled or trailing `/`), and
/// comparing bytes is several times cheaper than comparing components, which
/// matters when every captured file is checked.
fn under(path: &Path, base: &Path) -> bool {
    let (p, b) = (path.as_os_str().as_bytes(), base.as_os_str().as_bytes());
    if b == b"/" {
        return p.first() == Some(&b'/');
    }
    p.starts_with(b) && (p.len() == b.len() || p[b.len()] == b'/')
}

#[cfg(test)]
mod tests {
    #[test]
    fn byte_prefix_matches_whole_components_only() {
        use super::under;
        use std::path::Path;
        assert!(under(Path::new("/a/b/c"), Path::new("/a/b")));
        assert!(under(Path::new("/a/b"), Path::new("/a/b")));
        assert!(!under(Path::new("/a/bc"), Path::new("/a/b")));
        assert!(!under(Path::new("/a"), Path::new("/a/b")));
        assert!(under(Path::new("/a"), Path::new("/")));
    }

    use super::*;

    fn write(path: &Path, content: &str) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(path, content).unwrap();
    }

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        (dir, root)
    }

    #[test]
    fn a_root_with_only_names_protects_those_entries_alone() {
        let (_tmp, root) = setup();
        let only = vec![(
            root.clone(),
            vec!["notes.txt".to_string(), "odd [1]*?!.txt".to_string()],
        )];
        let rules = IgnoreRules::with_only(std::slice::from_ref(&root), &[], &[], &only).unwrap();
        assert!(!rules.is_ignored(&root, true));
        assert!(!rules.is_ignored(&root.join("notes.txt"), false));
        assert!(!rules.is_ignored(&root.join("odd [1]*?!.txt"), false));
        assert!(rules.is_ignored(&root.join("other.txt"), false));
        assert!(rules.is_ignored(&root.join("odd 1.txt"), false));
        assert!(rules.is_ignored(&root.join("sub"), true));
        assert!(rules.is_ignored(&root.join("sub/notes.txt"), false));
    }

    #[test]
    fn defaults_ignore_editor_files_only() {
        let (_tmp, root) = setup();
        let rules = IgnoreRules::new(std::slice::from_ref(&root), &[], &[]).unwrap();
        for name in [
            ".notes.txt.swp",
            "a.swo",
            "a.swx",
            "report.odt~",
            ".#draft.org",
            "#draft.org#",
            "4913",
            "x.kate-swp",
            ".goutputstream-ABC123",
            ".~lock.report.odt#",
        ] {
            assert!(rules.is_ignored(&root.join(name), false), "{name}");
            assert!(
                rules.is_ignored(&root.join("sub").join(name), false),
                "sub/{name}"
            );
        }
        for name in [
            "notes.txt",
            "a.swap",
            "#draft",
            "49130",
            "report.odt",
            ".x.tmp",
        ] {
            assert!(!rules.is_ignored(&root.join(name), false), "{name}");
        }
        assert!(!rules.is_ignored(&root, true));
        assert!(!rules.is_ignored(&root.join(IGNORE_FILE_NAME), false));
    }

    #[test]
    fn excludes_apply_anywhere_and_anchor_at_root() {
        let (_tmp, root) = setup();
        let excludes = vec![
            "*.o".to_string(),
            "target/".to_string(),
            "/top-only".to_string(),
            format!("{}/abs/dir", root.display()),
            "!keep.swp".to_string(),
        ];
        let rules = IgnoreRules::new(std::slice::from_ref(&root), &excludes, &[]).unwrap();
        assert!(rules.is_ignored(&root.join("a/b/c.o"), false));
        assert!(rules.is_ignored(&root.join("a/target"), true));
        assert!(
            !rules.is_ignored(&root.join("a/target"), false),
            "dir-only pattern"
        );
        assert!(
            rules.is_ignored(&root.join("a/target/x.rs"), false),
            "below an ignored dir"
        );
        assert!(rules.is_ignored(&root.join("top-only"), false));
        assert!(!rules.is_ignored(&root.join("a/top-only"), false));
        assert!(rules.is_ignored(&root.join("abs/dir"), true));
        assert!(rules.is_ignored(&root.join("abs/dir/f"), false));
        assert!(!rules.is_ignored(&root.join("x/abs/dir"), true));
        assert!(
            !rules.is_ignored(&root.join("keep.swp"), false),
            "excludes override defaults"
        );
        assert!(rules.is_ignored(&root.join("other.swp"), false));
    }

    #[test]
    fn bad_exclude_is_an_error_naming_the_pattern() {
        let (_tmp, root) = setup();
        let err =
            IgnoreRules::new(std::slice::from_ref(&root), &["{a,b".to_string()], &[]).unwrap_err();
        match err {
            WatchError::Exclude {
                pattern, root: r, ..
            } => {
                assert_eq!(pattern, "{a,b");
                assert_eq!(r, root);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn rewindignore_nesting_and_whitelist() {
        let (_tmp, root) = setup();
        write(&root.join(IGNORE_FILE_NAME), "*.log\nbuild/\nsecret\n");
        write(&root.join("app/.rewindignore"), "!important.log\n/local\n");
        write(&root.join("app/deep/.rewindignore"), "important.log\n");
        let rules = IgnoreRules::new(std::slice::from_ref(&root), &[], &[]).unwrap();

        assert!(rules.is_ignored(&root.join("x.log"), false));
        assert!(rules.is_ignored(&root.join("app/x.log"), false));
        assert!(!rules.is_ignored(&root.join("app/important.log"), false));
        assert!(!rules.is_ignored(&root.join("app/sub/important.log"), false));
        assert!(rules.is_ignored(&root.join("app/deep/important.log"), false));
        assert!(rules.is_ignored(&root.join("app/local"), false));
        assert!(!rules.is_ignored(&root.join("app/sub/local"), false));
        assert!(!rules.is_ignored(&root.join("local"), false));
        assert!(rules.is_ignored(&root.join("app/build"), true));
        assert!(rules.is_ignored(&root.join("app/build/important.log"), false));
        assert!(rules.is_ignored(&root.join("secret/file"), false));
        assert!(!rules.is_ignored(&root.join("app/.rewindignore"), false));

        // A changed .rewindignore takes effect after invalidate.
        write(&root.join("app/.rewindignore"), "");
        assert!(
            !rules.is_ignored(&root.join("app/important.log"), false),
            "still cached"
        );
        rules.invalidate(&root.join("app"));
        assert!(rules.is_ignored(&root.join("app/important.log"), false));
    }

    #[test]
    fn rewindignore_cannot_hide_itself() {
        let (_tmp, root) = setup();
        write(&root.join(IGNORE_FILE_NAME), ".*\n");
        write(&root.join("hidden/.rewindignore"), "*\n");
        let rules = IgnoreRules::new(std::slice::from_ref(&root), &[], &[]).unwrap();
        assert!(!rules.is_ignored(&root.join(IGNORE_FILE_NAME), false));
        assert!(rules.is_ignored(&root.join(".bashrc"), false));
        assert!(!rules.is_ignored(&root.join("hidden/.rewindignore"), false));
        assert!(rules.is_ignored(&root.join("hidden/x"), false));
    }

    #[test]
    fn malformed_rewindignore_line_is_skipped_and_reported() {
        let (_tmp, root) = setup();
        write(&root.join(IGNORE_FILE_NAME), "{a,b\n*.tmp\n");
        let rules = IgnoreRules::new(std::slice::from_ref(&root), &[], &[]).unwrap();
        assert!(rules.is_ignored(&root.join("x.tmp"), false));
        let warnings = rules.take_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("line 1"), "{warnings:?}");
        assert!(rules.take_warnings().is_empty());
    }

    #[test]
    fn cachedir_tag_needs_the_signature() {
        let (_tmp, root) = setup();
        write(
            &root.join("cache/CACHEDIR.TAG"),
            "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag.\n",
        );
        write(&root.join("cache/blob"), "x");
        write(&root.join("fake/CACHEDIR.TAG"), "Signature: not really\n");
        let rules = IgnoreRules::new(std::slice::from_ref(&root), &[], &[]).unwrap();
        assert!(rules.is_ignored(&root.join("cache"), true));
        assert!(rules.is_ignored(&root.join("cache/blob"), false));
        assert!(rules.is_ignored(&root.join("cache/sub/deeper"), false));
        assert!(!rules.is_ignored(&root.join("fake"), true));
        assert!(!rules.is_ignored(&root.join("fake/CACHEDIR.TAG"), false));
    }

    #[test]
    fn ignored_paths_and_everything_below() {
        let (_tmp, root) = setup();
        let state = root.join(".rewind-state");
        let rules = IgnoreRules::new(
            std::slice::from_ref(&root),
            &[],
            std::slice::from_ref(&state),
        )
        .unwrap();
        assert!(rules.is_ignored(&state, true));
        assert!(rules.is_ignored(&state.join("journal/db"), false));
        assert!(!rules.is_ignored(&root.join(".rewind-state2"), true));
        // No .rewindignore can re-include them.
        write(
            &root.join(IGNORE_FILE_NAME),
            "!.rewind-state\n!.rewind-state/**\n",
        );
        rules.invalidate(&root);
        assert!(rules.is_ignored(&state.join("journal/db"), false));
    }

    #[test]
    fn nested_roots_use_the_innermost() {
        let (_tmp, outer) = setup();
        let inner = outer.join("inner");
        let rules =
            IgnoreRules::new(&[outer.clone(), inner.clone()], &["/x".to_string()], &[]).unwrap();
        assert!(rules.is_ignored(&outer.join("x"), false));
        assert!(rules.is_ignored(&inner.join("x"), false));
        assert!(!rules.is_ignored(&inner, true));
        assert!(
            !rules.is_ignored(Path::new("/elsewhere/x.swp"), false),
            "outside every root"
        );
    }
}
