//! End-to-end tests of `rewind mount` (issue 18): the real binary serving a
//! real FUSE mount, compared with what the tree was at each moment.
//!
//! They need /dev/fuse and the right to mount (root, or fusermount); they
//! are skipped, with the reason printed, where either is missing.

mod harness;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::{DEADLINE, Env, wait_until};

fn write(p: &Path, data: &[u8]) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(p, data).unwrap();
}

/// Why FUSE tests cannot run here, if they cannot.
fn no_fuse() -> Option<&'static str> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing");
    }
    let helper = ["fusermount3", "fusermount"].iter().any(|b| {
        Command::new(b)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !harness::is_root() && !helper {
        return Some("not root and no fusermount helper");
    }
    None
}

macro_rules! need_fuse {
    () => {
        if let Some(why) = no_fuse() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

fn is_mounted(dir: &Path) -> bool {
    let dir = dir.to_str().unwrap();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(dir))
}

/// A running `rewind mount`; interrupted (and unmounted) on drop.
struct Mount {
    child: Option<Child>,
    dir: PathBuf,
    log: PathBuf,
}

impl Mount {
    fn start(env: &Env, dir: &Path) -> Mount {
        fs::create_dir_all(dir).unwrap();
        let log = env.tmp.path().join(format!(
            "mount-{}.log",
            dir.file_name().unwrap().to_string_lossy()
        ));
        let child = env
            .command()
            .arg("mount")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut m = Mount {
            child: Some(child),
            dir: dir.to_path_buf(),
            log,
        };
        let start = Instant::now();
        while !dir.join("latest").is_dir() {
            if let Some(st) = m.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("rewind mount exited with {st}:\n{}", m.log());
            }
            assert!(start.elapsed() < DEADLINE, "never mounted:\n{}", m.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait for the process to end by itself; it must exit 0.
    fn wait_exit(&mut self) {
        let mut c = self.child.take().expect("running");
        let start = Instant::now();
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                assert!(
                    st.success(),
                    "rewind mount exited with {st}:\n{}",
                    self.log()
                );
                return;
            }
            if start.elapsed() > DEADLINE {
                let _ = c.kill();
                panic!("rewind mount did not end:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: &str) {
        let c = self.child.as_ref().expect("running");
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &c.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- mount log\n{}", self.log());
        }
        if self.child.is_some() {
            self.signal("INT");
            let mut c = self.child.take().unwrap();
            let start = Instant::now();
            while c.try_wait().unwrap().is_none() && start.elapsed() < DEADLINE {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if is_mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// One line per entry below `root` (sorted): kind, mode, size, mtime,
/// content hash or link target, and extended attributes.
fn describe(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn walk(root: &Path, p: &Path, out: &mut Vec<String>) {
    let md = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let rel = p.strip_prefix(root).unwrap();
    let name = if rel.as_os_str().is_empty() {
        ".".to_string()
    } else {
        rel.display().to_string()
    };
    let mtime = format!("{}.{:09}", md.mtime(), md.mtime_nsec());
    let mut xattrs: Vec<String> = Vec::new();
    if !md.file_type().is_symlink() {
        let (m, _) = rewind_fsmeta::read_meta_full(p).unwrap();
        for x in m.xattrs {
            xattrs.push(format!(
                "{}={}",
                String::from_utf8_lossy(&x.name),
                String::from_utf8_lossy(&x.value)
            ));
        }
    }
    let xattrs = xattrs.join(",");
    if md.file_type().is_symlink() {
        out.push(format!(
            "{name} symlink -> {} {mtime}",
            fs::read_link(p).unwrap().display()
        ));
    } else if md.is_dir() {
        out.push(format!(
            "{name} dir {:o} {mtime} [{xattrs}]",
            md.mode() & 0o7777
        ));
        for e in fs::read_dir(p).unwrap() {
            walk(root, &e.unwrap().path(), out);
        }
    } else {
        let data = fs::read(p).unwrap();
        out.push(format!(
            "{name} file {:o} {} {mtime} {} [{xattrs}]",
            md.mode() & 0o7777,
            md.size(),
            blake3::hash(&data).to_hex()
        ));
    }
}

/// `p` as seen inside a view of the mount (`view` is e.g. `mnt/latest`).
fn inside(view: &Path, p: &Path) -> PathBuf {
    view.join(p.strip_prefix("/").unwrap())
}

/// Capture the tree as it is, wait a little over a second (so the moments
/// named after this capture's changes are all before the returned time,
/// and the next changes' after it), and return that time with what the
/// tree looks like.
fn capture(env: &Env) -> (String, Vec<String>) {
    env.ok(&["watch", env.root.to_str().unwrap(), "--once"]);
    let snap = describe(&env.root);
    std::thread::sleep(Duration::from_millis(1100));
    (env.now(), snap)
}

/// Set an extended attribute with `setfattr` (Debian's `attr`).
fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let st = Command::new("setfattr")
        .args(["-n", name, "-v"])
        .arg(format!("0x{}", hex(value)))
        .arg(p)
        .status()
        .expect("setfattr (apt-get install -y attr)");
    assert!(st.success(), "setfattr {name} on {}", p.display());
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn big(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

#[test]
fn at_days_latest_and_versions_show_the_tree_as_it_was() {
    need_fuse!();
    let env = Env::new();
    let r = env.root.clone();
    // State 0: text, a 1.5 MB file of several chunks, a sparse file, an
    // executable, a symlink, an xattr, nested folders, an empty file.
    write(&r.join("notes.txt"), b"first draft\n");
    write(&r.join("data/big.bin"), &big(1_500_000, 1));
    {
        let f = fs::File::create(r.join("data/sparse.img")).unwrap();
        f.set_len(3 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"data in the middle", 1 << 20).unwrap();
    }
    write(&r.join("bin/run.sh"), b"#!/bin/sh\necho hi\n");
    fs::set_permissions(r.join("bin/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("../notes.txt", r.join("bin/notes-link")).unwrap();
    set_xattr(&r.join("notes.txt"), "user.comment", b"keep me");
    write(&r.join("docs/deep/er/empty"), b"");
    write(&r.join("docs/plan.md"), b"# plan\n");
    let (t0, s0) = capture(&env);

    // State 1: edits, a chmod, an xattr changed, a file deleted, a folder
    // renamed, a link retargeted, a file added.
    write(
        &r.join("notes.txt"),
        b"second draft, longer than the first\n",
    );
    fs::set_permissions(r.join("notes.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    set_xattr(&r.join("notes.txt"), "user.comment", b"changed");
    write(&r.join("data/big.bin"), &big(1_600_000, 2));
    fs::remove_file(r.join("docs/plan.md")).unwrap();
    fs::rename(r.join("docs/deep"), r.join("docs/shallow")).unwrap();
    fs::remove_file(r.join("bin/notes-link")).unwrap();
    std::os::unix::fs::symlink("run.sh", r.join("bin/notes-link")).unwrap();
    write(&r.join("added.txt"), b"new in state 1");
    let (t1, s1) = capture(&env);

    // State 2: the whole data folder goes, notes once more.
    fs::remove_dir_all(r.join("data")).unwrap();
    write(&r.join("notes.txt"), b"third\n");
    let (t2, s2) = capture(&env);
    assert_ne!(s0, s1);
    assert_ne!(s1, s2);
    assert!(
        s0.iter().any(|l| l.contains("[user.comment=keep me]")),
        "the comparison covers xattrs: {s0:#?}"
    );

    let mnt = env.tmp.path().join("mnt");
    let mut m = Mount::start(&env, &mnt);

    // at/<time>: several moments, typed in several forms.
    for (t, snap) in [(&t0, &s0), (&t1, &s1), (&t2, &s2)] {
        assert_eq!(
            &describe(&inside(&mnt.join("at").join(t), &r)),
            snap,
            "at/{t}"
        );
    }
    // A local time without a zone (the tests run in UTC), to the second:
    // the state of the last capture before it.
    let t1_local = jiff::Timestamp::from_second(t1.parse::<jiff::Timestamp>().unwrap().as_second())
        .unwrap()
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string();
    assert_eq!(describe(&inside(&mnt.join("at").join(&t1_local), &r)), s1);
    assert!(
        fs::read_dir(mnt.join("at")).unwrap().next().is_none(),
        "at/ lists nothing"
    );
    assert!(!mnt.join("at/10 minutes ago").exists(), "no relative forms");

    // latest/ is now, and agrees with `diff -r` against the real tree.
    assert_eq!(describe(&inside(&mnt.join("latest"), &r)), s2);
    let out = Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(inside(&mnt.join("latest"), &r))
        .arg(&r)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", harness::show(&out));

    // days/: today, and its moments; the last moment up to each capture's
    // time shows that capture's tree.
    let today = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    let days: Vec<String> = fs::read_dir(mnt.join("days"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(days.contains(&today), "{days:?}");
    let mut moments: Vec<String> = fs::read_dir(mnt.join("days").join(&today))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    moments.sort();
    for (t, snap) in [(&t0, &s0), (&t1, &s1), (&t2, &s2)] {
        let t = t.parse::<jiff::Timestamp>().unwrap();
        let last = moments
            .iter()
            .rfind(|name| {
                let at: jiff::civil::DateTime = name.parse().unwrap();
                at.to_zoned(jiff::tz::TimeZone::UTC).unwrap().timestamp() <= t
            })
            .unwrap_or_else(|| panic!("no moment before {t}: {moments:?}"));
        let view = mnt.join("days").join(&today).join(last);
        assert_eq!(&describe(&inside(&view, &r)), snap, "days/{today}/{last}");
    }

    // versions/: each version of notes.txt, named by time with the
    // extension; deleted paths are there too.
    let vdir = inside(&mnt.join("versions"), &r.join("notes.txt"));
    let mut names: Vec<String> = fs::read_dir(&vdir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(names.iter().all(|n| n.ends_with(".txt")), "{names:?}");
    let contents: Vec<Vec<u8>> = names
        .iter()
        .map(|n| fs::read(vdir.join(n)).unwrap())
        .collect();
    let mut distinct = contents.clone();
    distinct.dedup();
    assert_eq!(
        distinct,
        vec![
            b"first draft\n".to_vec(),
            b"second draft, longer than the first\n".to_vec(),
            b"third\n".to_vec()
        ],
        "{names:?}"
    );
    let deleted = inside(&mnt.join("versions"), &r.join("docs/plan.md"));
    let plan: Vec<PathBuf> = fs::read_dir(&deleted)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(plan.len(), 1, "{plan:?}");
    assert_eq!(fs::read(&plan[0]).unwrap(), b"# plan\n");
    let root_v: Vec<String> = fs::read_dir(inside(&mnt.join("versions"), &r))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        root_v.contains(&"data".to_string()),
        "a deleted folder: {root_v:?}"
    );
    let big_versions = fs::read_dir(inside(&mnt.join("versions"), &r.join("data/big.bin")))
        .unwrap()
        .count();
    assert_eq!(big_versions, 2);

    // Read-only.
    let e = fs::write(inside(&mnt.join("latest"), &r.join("notes.txt")), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(30), "EROFS: {e}");

    // Ctrl-C unmounts cleanly.
    m.signal("INT");
    m.wait_exit();
    assert!(!is_mounted(&mnt), "still mounted after SIGINT");
    assert!(m.log().contains("unmounted"), "{}", m.log());
}

#[test]
fn latest_follows_the_agent_while_it_captures_and_an_outside_unmount_ends_the_mount() {
    need_fuse!();
    let env = Env::new();
    write(&env.root.join("before.txt"), b"before");
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    env.wait_versions(&env.root.join("before.txt"), 1);
    let mnt = env.tmp.path().join("mnt");
    let mut m = Mount::start(&env, &mnt);
    let view = inside(&mnt.join("latest"), &env.root);
    assert_eq!(fs::read(view.join("before.txt")).unwrap(), b"before");
    write(&env.root.join("during.txt"), b"written while mounted");
    wait_until("the new file to show in latest/", || {
        fs::read(view.join("during.txt")).is_ok_and(|d| d == b"written while mounted")
    });
    fs::remove_file(env.root.join("before.txt")).unwrap();
    wait_until("the deletion to show in latest/", || {
        !view.join("before.txt").exists()
    });
    drop(agent);

    // `umount` (fusermount -u for a user) from outside: the mount ends by
    // itself, exit 0.
    let st = if harness::is_root() {
        Command::new("umount").arg(&mnt).status().unwrap()
    } else {
        Command::new("fusermount")
            .arg("-u")
            .arg(&mnt)
            .status()
            .unwrap()
    };
    assert!(st.success());
    m.wait_exit();
    assert!(!is_mounted(&mnt));

    // SIGTERM while a shell sits inside: detached, and gone once it leaves.
    let mut m = Mount::start(&env, &mnt);
    let mut inside_shell = Command::new("sh")
        .arg("-c")
        .arg("sleep 2")
        .current_dir(mnt.join("latest"))
        .spawn()
        .unwrap();
    m.signal("TERM");
    inside_shell.wait().unwrap();
    m.wait_exit();
    assert!(!is_mounted(&mnt));
    assert!(m.log().contains("busy"), "{}", m.log());
}
