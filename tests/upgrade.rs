//! Upgrades (issue 14): the binaries of this build open what earlier
//! releases wrote, or migrate it once, and lose nothing.
//!
//! Each `tests/fixtures/upgrade-COMMIT.tar.xz` was made with the binaries
//! of the release COMMIT (how: `tests/fixtures/README.md`): an embedded
//! repository with its journal, state and config file (a `[watch]` table
//! and a `[[dump]]` job of kind command), and a rewind-server's data
//! directory with an enrolled client whose journal still holds versions the
//! server never got (the agent was killed while the server was down). Its
//! `manifest.json` says what every path was at every recorded moment.
//!
//! Versions record absolute paths, so the fixture is unpacked where it was
//! made, `/tmp/rewind-upgrade`, one test at a time (a lock file beside it
//! serializes test processes as well as threads). The umask is Debian's
//! `022`, as on the machine that wrote it; the binaries set `077` for
//! themselves.
//!
//! What this build migrates: the modes of the repository, the journal, the
//! agent's state and the server's data directory (written `0755`/`0644`
//! under that umask), made `0700`/`0600` once, with one message each. The
//! formats themselves (repository format 3, the journal's keys, the
//! server's files) are read as they are.

#![cfg(target_os = "linux")]

mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine;
use harness::*;
use serde_json::Value;

/// Every release's fixture (see `tests/fixtures/README.md`), by name.
fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let mut all: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("upgrade-") && n.ends_with(".tar.xz")
        })
        .collect();
    all.sort();
    assert!(!all.is_empty(), "no upgrade fixture in {}", dir.display());
    all
}

/// Where the fixture was made, and so where it must be unpacked.
const ROOT: &str = "/tmp/rewind-upgrade";

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_else(|e| panic!("manifest: bad base64 {s:?}: {e}"))
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("manifest: bad hex {s:?}: {e}"))
}

/// The fixture unpacked at [`ROOT`], held under an exclusive lock; removed
/// again when the test passes (left for a look when it fails).
struct Fixture {
    manifest: Value,
    _lock: fs::File,
}

impl Fixture {
    fn unpack(tarball: &Path) -> Fixture {
        eprintln!("fixture {}", tarball.display());
        // Debian's default: what the release that wrote the fixture saw.
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
        // Read-only is enough for flock, and opens a lock file another
        // account made.
        let lock_path = format!("{ROOT}.lock");
        let lock = fs::File::open(&lock_path)
            .or_else(|_| fs::File::create(&lock_path))
            .unwrap();
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
        if Path::new(ROOT).exists() {
            fs::remove_dir_all(ROOT).unwrap();
        }
        let out = Command::new("tar")
            .args(["-C", "/tmp", "--xattrs", "--xattrs-include=*", "--acls"])
            .arg("-xpJf")
            .arg(tarball)
            .output()
            .unwrap();
        assert!(out.status.success(), "tar failed\n{}", show(&out));
        let manifest = serde_json::from_slice(&fs::read(format!("{ROOT}/manifest.json")).unwrap())
            .expect("manifest.json");
        Fixture {
            manifest,
            _lock: lock,
        }
    }

    fn user(&self, name: &str) -> User {
        User {
            base: Path::new(ROOT).join(name),
            manifest: self.manifest["users"][name].clone(),
            stderr: Default::default(),
        }
    }

    /// What `rewind status --json` of the last release said at the end.
    fn old_status(&self, name: &str) -> Value {
        serde_json::from_slice(&fs::read(format!("{ROOT}/{name}-status.json")).unwrap()).unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the unpacked fixture is left in {ROOT}");
        } else {
            let _ = fs::remove_dir_all(ROOT);
        }
    }
}

/// One user of the fixture: HOME and XDG dirs under `base`, the protected
/// folder `base/home/Documents`. Every command's stderr is kept, so that
/// messages said once can be counted over the whole test.
struct User {
    base: PathBuf,
    manifest: Value,
    stderr: std::cell::RefCell<String>,
}

impl User {
    fn docs(&self) -> PathBuf {
        self.base.join("home/Documents")
    }

    fn command(&self) -> Command {
        let mut c = Command::new(bin());
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.base.join("home"))
            .env("XDG_CONFIG_HOME", self.base.join("config"))
            .env("XDG_DATA_HOME", self.base.join("data"))
            .env("XDG_STATE_HOME", self.base.join("state"))
            .env("TZ", "UTC")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut c = self.command();
        c.args(args);
        self.output(c)
    }

    fn output(&self, mut c: Command) -> Output {
        let out = c.output().unwrap();
        self.stderr
            .borrow_mut()
            .push_str(&String::from_utf8_lossy(&out.stderr));
        out
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "rewind {args:?}\n{}", show(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    fn moments(&self) -> Vec<Value> {
        self.manifest["moments"].as_array().unwrap().clone()
    }

    /// `rewind restore DOCS --at at --to dest`: exit 0, or as another user
    /// than root exit 3 for owners it could not set (the fixture's files
    /// are root's).
    fn restore(&self, at: &str, dest: &Path) {
        let docs = self.docs();
        let out = self.run(&[
            "restore",
            docs.to_str().unwrap(),
            "--at",
            at,
            "--to",
            dest.to_str().unwrap(),
        ]);
        let owners_only = out.status.code() == Some(3)
            && !is_root()
            && String::from_utf8_lossy(&out.stderr)
                .lines()
                .filter(|l| l.contains(": "))
                .all(|l| l.contains("could not set owner") || l.starts_with("restored"));
        assert!(
            out.status.success() || owners_only,
            "restore at {at}\n{}",
            show(&out)
        );
    }

    /// Every moment of the manifest (without those only the journal held,
    /// unless `pending`): `ls` names what was there, and a restore gives
    /// back content and metadata as recorded.
    fn check_moments(&self, scratch: &Path, round: &str, pending: bool) {
        for m in self.moments() {
            if m["pending"] == true && !pending {
                continue;
            }
            let (label, at) = (m["label"].as_str().unwrap(), m["at"].as_str().unwrap());
            let want = expected_tree(&m["tree"]);
            let docs = self.docs();
            let listed = self.json(&["ls", docs.to_str().unwrap(), "--at", at, "--json"]);
            let listed: BTreeSet<Vec<u8>> = listed["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| relative(&docs, &json_path(&e["path"])))
                .collect();
            let named: BTreeSet<Vec<u8>> = want.keys().cloned().collect();
            assert_eq!(
                lossy(&listed),
                lossy(&named),
                "rewind ls at {label} ({at}) names other paths"
            );
            let dest = scratch.join(format!("{round}-{label}"));
            self.restore(at, &dest);
            compare(
                &format!("{round}: restored at {label} ({at})"),
                &want,
                &describe(&dest),
            );
        }
    }

    /// `(seq, time)` of every version of `path`, oldest first (none for a
    /// path only the journal knows).
    fn versions(&self, path: &Path) -> Vec<(u64, String)> {
        let mut c = self.command();
        c.arg("versions").arg(path).arg("--json");
        let out = self.output(c);
        if !out.status.success() {
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("no versions"),
                "{}",
                show(&out)
            );
            return Vec::new();
        }
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["seq"].as_u64().unwrap(), v["time"].to_string()))
            .collect()
    }

    /// Versions of every path any moment recorded.
    fn all_versions(&self) -> BTreeMap<Vec<u8>, Vec<(u64, String)>> {
        let docs = self.docs();
        let mut paths = BTreeSet::new();
        for m in self.moments() {
            paths.extend(expected_tree(&m["tree"]).into_keys());
        }
        paths
            .into_iter()
            .map(|rel| {
                let p = absolute(&docs, &rel);
                let v = self.versions(&p);
                (rel, v)
            })
            .collect()
    }

    /// `watch --once` with this build, which continues the old journal:
    /// its numbers go on above `old_seq`, and nothing is left waiting.
    fn watch_once_continues(&self, old_seq: u64) {
        let docs = self.docs();
        let out = self.run(&["watch", "--once", docs.to_str().unwrap()]);
        assert!(out.status.success(), "{}", show(&out));
        let status = self.json(&["status", "--json"]);
        let j = &status["journal"];
        assert!(j["durable_seq"].as_u64().unwrap() > old_seq, "{status:#}");
        assert_eq!(j["cursor"], j["durable_seq"], "{status:#}");
        assert_eq!(j["versions_waiting"], 0, "{status:#}");
    }

    /// Another `watch --once` finds nothing to capture: the migrated
    /// journal knows every path as it is.
    fn watch_once_finds_nothing(&self) {
        let docs = self.docs();
        let out = self.run(&["watch", "--once", docs.to_str().unwrap()]);
        assert!(out.status.success(), "{}", show(&out));
        assert_eq!(
            captured(&out),
            0,
            "a second run found changes\n{}",
            show(&out)
        );
    }

    /// A restore as of now gives the protected folder back as it is.
    fn restore_now_matches(&self, env: &Env, dest: &Path, what: &str) {
        self.restore(&env.now(), dest);
        compare(what, &describe(&self.docs()), &describe(dest));
    }

    fn verify_is_clean(&self) {
        let verify = self.ok(&["verify"]);
        assert!(verify.contains("no damage"), "{verify}");
    }

    /// Each of `whats` was said to be made private exactly once over the
    /// whole test.
    fn said_private_once(&self, whats: &[&str]) {
        let log = self.stderr.borrow();
        for what in whats {
            assert_eq!(
                said_private(&log, what),
                1,
                "the {what} was not made private exactly once:\n{log}"
            );
        }
    }
}

/// Nothing under `dirs` is open to the group or others any more.
fn all_private(dirs: &[&Path]) {
    for dir in dirs {
        let loose = loose_paths(dir);
        assert!(
            loose.is_empty(),
            "still open to others:\n{}",
            loose.join("\n")
        );
    }
}

/// The newest version of `name` is numbered above `old_seq`.
fn numbering_continued(versions: &BTreeMap<Vec<u8>, Vec<(u64, String)>>, name: &str, old_seq: u64) {
    let v = &versions[name.as_bytes()];
    assert!(
        v.last().unwrap().0 > old_seq,
        "{name}: numbering did not continue: {v:?}"
    );
}

fn said_private(log: &str, what: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(&format!("{what} ")) && l.contains("paths private"))
        .count()
}

fn json_path(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.as_bytes().to_vec(),
        _ => b64(v["base64"].as_str().expect("a path is a string or base64")),
    }
}

fn relative(root: &Path, p: &[u8]) -> Vec<u8> {
    let r = root.as_os_str().as_bytes();
    if p == r {
        return b".".to_vec();
    }
    p.strip_prefix(r)
        .and_then(|rest| rest.strip_prefix(b"/"))
        .unwrap_or_else(|| {
            panic!(
                "{} is not under {}",
                String::from_utf8_lossy(p),
                root.display()
            )
        })
        .to_vec()
}

fn absolute(root: &Path, rel: &[u8]) -> PathBuf {
    if rel == b"." {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(rel))
    }
}

fn lossy(set: &BTreeSet<Vec<u8>>) -> Vec<String> {
    set.iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

/// What a path was: the fields the manifest records, in a form that
/// compares and prints.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: String,
    mode: u32,
    /// Owner and group; compared only when the test runs as root.
    owner: Option<(u32, u32)>,
    mtime_ns: i128,
    /// Content of a regular file.
    content: Option<Vec<u8>>,
    /// Whether a regular file has holes (fewer bytes allocated than its size).
    sparse: bool,
    target: Option<Vec<u8>>,
    xattrs: BTreeMap<String, Vec<u8>>,
    /// The first name (in byte order) of its inode, for the other names.
    hardlink_of: Option<Vec<u8>>,
}

fn expected_tree(tree: &Value) -> BTreeMap<Vec<u8>, Entry> {
    tree.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let kind = e["kind"].as_str().unwrap().to_string();
            let (content, sparse) = if kind == "file" {
                let size = e["size"].as_u64().unwrap() as usize;
                let mut data = vec![0u8; size];
                for x in e["extents"].as_array().unwrap() {
                    let off = x[0].as_u64().unwrap() as usize;
                    let bytes = b64(x[1].as_str().unwrap());
                    let end = (off + bytes.len()).min(size);
                    data[off..end].copy_from_slice(&bytes[..end - off]);
                }
                (Some(data), e["allocated"].as_u64().unwrap() < size as u64)
            } else {
                (None, false)
            };
            let entry = Entry {
                mode: e["mode"].as_u64().unwrap() as u32,
                owner: is_root().then(|| {
                    (
                        e["uid"].as_u64().unwrap() as u32,
                        e["gid"].as_u64().unwrap() as u32,
                    )
                }),
                mtime_ns: e["mtime_ns"].as_i64().unwrap() as i128,
                content,
                sparse,
                target: e["target_hex"].as_str().map(unhex),
                xattrs: e["xattrs"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), b64(v.as_str().unwrap())))
                    .collect(),
                hardlink_of: e["hardlink_of_hex"].as_str().map(unhex),
                kind,
            };
            (unhex(e["path_hex"].as_str().unwrap()), entry)
        })
        .collect()
}

/// The tree under `root` as the manifest describes one.
fn describe(root: &Path) -> BTreeMap<Vec<u8>, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<Vec<u8>>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).unwrap();
        let rel = relative(root, p.as_os_str().as_bytes());
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            if md.nlink() > 1 {
                inodes
                    .entry((md.dev(), md.ino()))
                    .or_default()
                    .push(rel.clone());
            }
            "file"
        } else {
            panic!("{}: unexpected kind {ft:?}", p.display())
        };
        let xattrs = if ft.is_symlink() {
            BTreeMap::new()
        } else {
            xattr::list(&p)
                .unwrap()
                .map(|n| {
                    let v = xattr::get(&p, &n).unwrap().unwrap_or_default();
                    (n.to_string_lossy().into_owned(), v)
                })
                .collect()
        };
        out.insert(
            rel,
            Entry {
                kind: kind.to_string(),
                mode: md.mode() & 0o7777,
                owner: is_root().then(|| (md.uid(), md.gid())),
                mtime_ns: md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
                content: ft.is_file().then(|| fs::read(&p).unwrap()),
                sparse: ft.is_file() && md.blocks() * 512 < md.size(),
                target: ft
                    .is_symlink()
                    .then(|| fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec()),
                xattrs,
                hardlink_of: None,
            },
        );
    }
    for mut names in inodes.into_values() {
        names.sort();
        for other in &names[1..] {
            out.get_mut(other).unwrap().hardlink_of = Some(names[0].clone());
        }
    }
    out
}

fn compare(what: &str, want: &BTreeMap<Vec<u8>, Entry>, got: &BTreeMap<Vec<u8>, Entry>) {
    let mut lines = Vec::new();
    for (k, w) in want {
        let name = String::from_utf8_lossy(k);
        match got.get(k) {
            None => lines.push(format!("  {name}: missing")),
            Some(g) if g != w => lines.push(format!("  {name}:\n    want {w:?}\n    got  {g:?}")),
            Some(_) => {}
        }
    }
    for k in got.keys().filter(|k| !want.contains_key(*k)) {
        lines.push(format!("  {}: not expected", String::from_utf8_lossy(k)));
    }
    assert!(lines.is_empty(), "{what}:\n{}", lines.join("\n"));
}

/// The last capture of a `--once` run: "N versions captured".
fn captured(out: &Output) -> u64 {
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("first pass complete"))
        .unwrap_or_else(|| panic!("no first pass line\n{}", show(out)));
    line.split(", ")
        .find_map(|p| p.strip_suffix(" versions captured"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read {line:?}"))
}

/// Versions the repository held before the upgrade are all still there,
/// unchanged, each once; every version added since is numbered above
/// `old_cursor` (the journal's pending versions, then new captures).
fn old_versions_kept(
    before: &BTreeMap<Vec<u8>, Vec<(u64, String)>>,
    after: &BTreeMap<Vec<u8>, Vec<(u64, String)>>,
    old_cursor: u64,
) {
    for (path, old) in before {
        let name = String::from_utf8_lossy(path);
        let new = &after[path];
        assert_eq!(
            &new[..old.len()],
            &old[..],
            "{name}: the versions from before the upgrade changed"
        );
        for (seq, _) in &new[old.len()..] {
            assert!(
                *seq > old_cursor,
                "{name}: version {seq} was uploaded again (the cursor was at {old_cursor})"
            );
        }
        let seqs: BTreeSet<u64> = new.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            seqs.len(),
            new.len(),
            "{name}: a version is stored twice: {new:?}"
        );
    }
}

fn repo_config(dir: &Path) -> Value {
    serde_json::from_slice(&fs::read(dir.join("config")).unwrap()).unwrap()
}

#[test]
fn what_earlier_releases_wrote_on_a_desktop_opens_with_this_build() {
    for f in fixtures() {
        desktop(&f);
    }
}

/// The local user: an embedded repository, its journal and state, a config.
fn desktop(tarball: &Path) {
    let fx = Fixture::unpack(tarball);
    let env = Env::new();
    let scratch = env.tmp.path().canonicalize().unwrap();
    let u = fx.user("local");
    let docs = u.docs();
    let repo = u.base.join("data/rewind/repo");
    let state = u.base.join("state/rewind");
    let old = fx.old_status("local");
    let old_seq = old["journal"]["durable_seq"].as_u64().unwrap();
    let old_cursor = old["journal"]["cursor"].as_u64().unwrap();
    assert_eq!(old_cursor, old_seq, "{old:#}");

    // Reading: every moment, the dumps, verify, the config, status.
    u.check_moments(&scratch, "before", true);
    u.verify_is_clean();
    let jobs = u.ok(&["dump", "list"]);
    assert!(
        jobs.contains("notes") && jobs.contains("command") && jobs.contains("every 1h"),
        "the config's [[dump]] job is not listed:\n{jobs}"
    );
    let dumps = u.manifest["dumps"].as_array().unwrap();
    assert_eq!(dumps.len(), 2);
    for d in dumps {
        let at = d["at"].as_str().unwrap();
        let out = u.run(&["dump", "restore", "notes", "--at", at]);
        assert!(out.status.success(), "{}", show(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&b64(d["content_b64"].as_str().unwrap())),
            "dump run before {at}"
        );
    }
    let status = u.json(&["status", "--json"]);
    assert_eq!(status["client"], old["client"], "{status:#}");
    assert_eq!(status["journal"]["durable_seq"], old_seq, "{status:#}");
    assert_eq!(status["journal"]["cursor"], old_cursor);
    assert_eq!(status["journal"]["roots"], old["journal"]["roots"]);
    let config = repo_config(&repo);
    let before = u.all_versions();

    // Capture continues from the old journal, after a first attempt that
    // crashed in the middle of making the repository private: the next
    // open finishes that migration.
    fs::write(
        docs.join("notes.txt"),
        b"first line\nsecond line\nafter the upgrade\n",
    )
    .unwrap();
    fs::write(docs.join("upgrade.txt"), b"new since the upgrade\n").unwrap();
    let mut c = u.command();
    c.args(["watch", "--once", docs.to_str().unwrap()])
        .env("REWIND_FAILPOINTS", "private.tighten=crash@3");
    let out = u.output(c);
    assert_eq!(
        out.status.code(),
        None,
        "the failpoint did not stop it\n{}",
        show(&out)
    );
    assert!(
        loose_paths(&repo)
            .iter()
            .any(|l| l.ends_with(repo.to_str().unwrap())),
        "an interrupted migration left the repository looking done"
    );
    u.watch_once_continues(old_seq);
    let after = u.all_versions();
    old_versions_kept(&before, &after, old_cursor);
    numbering_continued(&after, "notes.txt", old_seq);
    assert!(!u.versions(&docs.join("upgrade.txt")).is_empty());
    u.restore_now_matches(
        &env,
        &scratch.join("after-now"),
        "restored now, after the upgrade",
    );
    // Format 4 (retention, issue 17) is the one migration so far: the
    // writer records the chunks no version names as bases, then writes the
    // new number; nothing else of the config changes.
    let mut now = repo_config(&repo);
    let mut was = config.clone();
    assert!(
        now["format"].as_u64() >= was["format"].as_u64() && now["format"] == 4,
        "format {} after {}",
        now["format"],
        was["format"]
    );
    now["format"] = Value::Null;
    was["format"] = Value::Null;
    assert_eq!(
        now, was,
        "the repository config was rewritten beyond its format (a format change needs a migration and a new fixture)"
    );

    // The modes were migrated, once, and the migrated state opens again
    // with nothing left to do.
    all_private(&[&repo, &state]);
    u.watch_once_finds_nothing();
    u.check_moments(&scratch, "after", true);
    u.verify_is_clean();
    u.said_private_once(&["repository", "journal", "agent state"]);
}

#[test]
fn earlier_releases_servers_and_enrolled_clients_work_with_this_build() {
    for f in fixtures() {
        server_and_client(&f);
    }
}

/// The server's data directory and the enrolled user, whose journal holds
/// versions the server has not got.
fn server_and_client(tarball: &Path) {
    let fx = Fixture::unpack(tarball);
    let env = Env::new();
    let scratch = env.tmp.path().canonicalize().unwrap();
    let u = fx.user("remote");
    let docs = u.docs();
    let data = Path::new(ROOT).join("server");
    let old = fx.old_status("remote");
    let old_seq = old["journal"]["durable_seq"].as_u64().unwrap();
    let old_cursor = old["journal"]["cursor"].as_u64().unwrap();
    let waiting = old["journal"]["versions_waiting"].as_u64().unwrap();
    assert!(
        waiting > 0,
        "the fixture's journal holds no pending versions: {old:#}"
    );

    // A server that crashes while making its data private starts over
    // at the next start.
    let crashed = Command::new(server_bin())
        .arg("--data")
        .arg(&data)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("REWIND_FAILPOINTS", "private.tighten=crash@2")
        .output()
        .unwrap();
    assert_eq!(crashed.status.code(), None, "{}", show(&crashed));
    assert!(!loose_paths(&data).is_empty());
    let mut server = Server::start_existing(&data);
    assert_eq!(
        said_private(&server.log(), "server data"),
        1,
        "{}",
        server.log()
    );
    // The server listens on a port of its own: the enrollment's URL is
    // moved there (the certificate is pinned, not the address).
    let config_file = u.base.join("config/rewind/config.toml");
    let port = fx.manifest["server"]["port"].as_u64().unwrap();
    let text = fs::read_to_string(&config_file).unwrap();
    let from = format!("https://127.0.0.1:{port}\"");
    assert!(text.contains(&from), "{text}");
    fs::write(
        &config_file,
        text.replace(&from, &format!("{}\"", server.url)),
    )
    .unwrap();

    let list = server.cmd(&["client", "list"]);
    assert!(list.status.success(), "{}", show(&list));
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("laptop"),
        "{}",
        show(&list)
    );
    let v = server.cmd(&["verify"]);
    assert!(v.status.success(), "{}", show(&v));

    // What was uploaded restores through the new server; the journal still
    // holds what was not.
    let status = u.json(&["status", "--json"]);
    assert_eq!(status["journal"]["durable_seq"], old_seq, "{status:#}");
    assert_eq!(status["journal"]["versions_waiting"], waiting, "{status:#}");
    u.check_moments(&scratch, "before", false);
    let before = u.all_versions();

    // The agent continues: pending versions reach the server, new changes
    // are captured, nothing is sent twice.
    fs::write(docs.join("report.txt"), b"report, after the upgrade\n").unwrap();
    u.watch_once_continues(old_seq);
    let after = u.all_versions();
    old_versions_kept(&before, &after, old_cursor);
    numbering_continued(&after, "report.txt", old_seq);
    // The pending moment restores now: the journal's versions arrived.
    u.check_moments(&scratch, "after", true);
    u.restore_now_matches(
        &env,
        &scratch.join("after-now"),
        "restored now, after the upgrade",
    );
    u.verify_is_clean();

    // Migrated once: a restarted server and a second run have nothing to
    // tighten and nothing to capture.
    all_private(&[&data, &u.base.join("state/rewind")]);
    server.stop();
    server.start();
    u.watch_once_finds_nothing();
    u.restore_now_matches(
        &env,
        &scratch.join("again-now"),
        "restored now, after a restart",
    );
    assert_eq!(
        said_private(&server.log(), "server data"),
        1,
        "{}",
        server.log()
    );
    u.said_private_once(&["journal", "agent state"]);
    server.stop();
}
