//! Round trips on real filesystems: metadata is set with the system's own
//! tools or calls, read with `read_meta*`, applied to a fresh object and
//! read back. They run as root on Linux (trusted xattrs, chown, mknod);
//! the 64 KiB xattr tests use /dev/shm (tmpfs), because ext4 without the
//! `ea_inode` feature caps a value at one block.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::fs::{Mode, OFlags, openat};

use crate::*;

fn dir_fd(p: &Path) -> OwnedFd {
    File::open(p).unwrap().into()
}

fn issues_text(issues: &[MetaIssue]) -> String {
    issues
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

#[track_caller]
fn assert_no_issues(issues: &[MetaIssue]) {
    assert!(issues.is_empty(), "issues: {}", issues_text(issues));
}

fn run(cmd: &str, args: &[&OsStr]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn getfacl(p: &Path) -> String {
    run(
        "getfacl",
        &[
            OsStr::new("-n"),
            OsStr::new("--omit-header"),
            OsStr::new("-p"),
            p.as_os_str(),
        ],
    )
}

fn full(p: &Path) -> FileMeta {
    let (m, issues) = read_meta_full(p).unwrap();
    assert_no_issues(&issues);
    m
}

fn xattr(name: &[u8], value: &[u8]) -> Xattr {
    Xattr {
        name: name.to_vec(),
        value: value.to_vec(),
    }
}

#[test]
fn reads_file_dir_and_symlink_without_following() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("a");
    fs::write(&f, b"hello").unwrap();
    symlink("does/not/exist", dir.path().join("l")).unwrap();
    let m = full(&f);
    assert_eq!(m.kind, FileKind::File);
    assert_eq!(m.size, 5);
    assert_eq!(m.sparse, None);
    assert_eq!(m.hardlink_group, None);
    assert_eq!(m.flags, None);
    let std_md = fs::symlink_metadata(&f).unwrap();
    assert_eq!((m.dev, m.ino), (std_md.dev(), std_md.ino()));
    // ext4 and tmpfs keep a birth time; statx reports it.
    let born = std_md.created().unwrap();
    let born = born.duration_since(std::time::UNIX_EPOCH).unwrap();
    assert_eq!(
        m.btime,
        Some(FileTime {
            sec: born.as_secs() as i64,
            nsec: born.subsec_nanos()
        })
    );
    assert_eq!(m.user, crate::names::user_name(m.uid));
    if m.uid == 0 {
        assert_eq!(m.user.as_deref(), Some("root"));
    }
    let l = full(&dir.path().join("l"));
    assert_eq!(l.kind, FileKind::Symlink);
    assert_eq!(l.symlink_target.as_deref(), Some(&b"does/not/exist"[..]));
    assert_eq!(full(dir.path()).kind, FileKind::Dir);
    assert!(
        read_meta(&dir.path().join("nope"))
            .unwrap_err()
            .is_not_found()
    );
}

#[test]
fn hard_links_share_a_group_directories_never_do() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    fs::write(&a, b"x").unwrap();
    fs::hard_link(&a, dir.path().join("b")).unwrap();
    fs::create_dir(dir.path().join("sub")).unwrap();
    let ma = full(&a);
    let mb = full(&dir.path().join("b"));
    assert_eq!(ma.nlink, 2);
    assert_eq!(ma.hardlink_group, Some((ma.dev, ma.ino)));
    assert_eq!(mb.hardlink_group, ma.hardlink_group);
    let d = full(dir.path());
    assert!(d.nlink > 1);
    assert_eq!(d.hardlink_group, None);
}

#[test]
fn applies_mode_and_times_through_fd() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("a");
    fs::write(&f, b"x").unwrap();
    let mut m = read_meta(&f).unwrap();
    m.mode = 0o640;
    m.mtime = FileTime {
        sec: 1_000_000_000,
        nsec: 123_456_789,
    };
    let file = File::open(&f).unwrap();
    assert_no_issues(&apply_meta_fd(file.as_fd(), &m, ApplyOptions::default()));
    let back = read_meta(&f).unwrap();
    assert_eq!(back.mode, 0o640);
    assert_eq!(back.mtime, m.mtime);
}

#[test]
fn big_xattrs_round_trip_on_file_dir_and_symlink() {
    let t = tempfile::tempdir_in("/dev/shm").unwrap();
    let big: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    let f = t.path().join("f");
    let d = t.path().join("d");
    let l = t.path().join("l");
    fs::write(&f, b"data").unwrap();
    fs::create_dir(&d).unwrap();
    symlink("f", &l).unwrap();
    xattr::set(&f, "user.big", &big).unwrap();
    xattr::set(&f, "user.a", b"1").unwrap();
    xattr::set(&d, "user.big", &big).unwrap();
    // Linux refuses user.* on symlinks; trusted.* (root) is allowed.
    let e = xattr::set(&l, "user.big", b"x").unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(rustix::io::Errno::PERM.raw_os_error())
    );
    xattr::set(&l, "trusted.big", &big).unwrap();

    let mf = full(&f);
    assert_eq!(
        mf.xattrs,
        vec![xattr(b"user.a", b"1"), xattr(b"user.big", &big)]
    );
    let md = full(&d);
    assert_eq!(md.xattrs, vec![xattr(b"user.big", &big)]);
    let ml = full(&l);
    assert_eq!(ml.xattrs, vec![xattr(b"trusted.big", &big)]);
    // The symlink's own attributes, not its target's.
    assert_eq!(xattr::get(&f, "trusted.big").unwrap(), None);

    let f2 = t.path().join("f2");
    let d2 = t.path().join("d2");
    fs::write(&f2, b"data").unwrap();
    fs::create_dir(&d2).unwrap();
    symlink("f2", t.path().join("l2")).unwrap();
    let opts = ApplyOptions::default();
    assert_no_issues(&apply_meta_fd(File::open(&f2).unwrap().as_fd(), &mf, opts));
    assert_no_issues(&apply_meta_fd(File::open(&d2).unwrap().as_fd(), &md, opts));
    let tfd = dir_fd(t.path());
    assert_no_issues(&apply_meta_at(&tfd, OsStr::new("l2"), &ml, opts));
    assert_eq!(full(&f2).xattrs, mf.xattrs);
    assert_eq!(full(&d2).xattrs, md.xattrs);
    assert_eq!(full(&t.path().join("l2")).xattrs, ml.xattrs);
    assert_eq!(xattr::get(&f2, "trusted.big").unwrap(), None);
    // The symlink seen through its directory gives the same.
    let (at, issues) = read_meta_at(tfd.as_fd(), OsStr::new("l2")).unwrap();
    assert_no_issues(&issues);
    assert_eq!(at.xattrs, ml.xattrs);
    assert_eq!(at.symlink_target.as_deref(), Some(&b"f2"[..]));
}

/// A listing longer than the first buffer (1 KiB) and values just around
/// it are read whole, through a path and through a descriptor.
#[test]
fn long_listings_and_values_around_the_first_buffer() {
    let t = tempfile::tempdir_in("/dev/shm").unwrap();
    let f = t.path().join("f");
    fs::write(&f, b"data").unwrap();
    let mut want = Vec::new();
    for i in 0..60u32 {
        let name = format!("user.a-rather-long-attribute-name-{i:03}");
        let value = vec![b'v'; 1020 + i as usize];
        xattr::set(&f, &name, &value).unwrap();
        want.push(xattr(name.as_bytes(), &value));
    }
    want.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(full(&f).xattrs, want);
    // The stat alone agrees on the state, and reads no attribute.
    let st = crate::read_stat(&f).unwrap();
    assert!(st.same_state(&full(&f)) && st.xattrs.is_empty());
    let f2 = t.path().join("f2");
    fs::write(&f2, b"data").unwrap();
    let m = full(&f);
    assert_no_issues(&apply_meta_fd(
        File::open(&f2).unwrap().as_fd(),
        &m,
        ApplyOptions::default(),
    ));
    assert_eq!(full(&f2).xattrs, want);
}

#[test]
fn trusted_binary_and_non_utf8_xattrs_on_ext4_and_exact_mode() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("f");
    fs::write(&f, b"x").unwrap();
    // Over the old 1 KB limit, within one ext4 block.
    let mid: Vec<u8> = (0..3000u32).map(|i| (i % 256) as u8).collect();
    xattr::set(&f, "trusted.t", b"\x00\xff\x00").unwrap();
    xattr::set(&f, OsStr::from_bytes(b"user.caf\xe9"), &mid).unwrap();
    let m = full(&f);
    assert_eq!(
        m.xattrs,
        vec![
            xattr(b"trusted.t", b"\x00\xff\x00"),
            xattr(b"user.caf\xe9", &mid),
        ]
    );

    let g = t.path().join("g");
    fs::write(&g, b"x").unwrap();
    xattr::set(&g, "user.extra", b"keep me").unwrap();
    let gf = File::open(&g).unwrap();
    assert_no_issues(&apply_meta_fd(gf.as_fd(), &m, ApplyOptions::default()));
    let back = full(&g);
    assert_eq!(back.xattrs.len(), 3);
    assert!(back.xattrs.contains(&xattr(b"user.extra", b"keep me")));
    let exact = ApplyOptions {
        exact_xattrs: true,
        ..ApplyOptions::default()
    };
    assert_no_issues(&apply_meta_fd(gf.as_fd(), &m, exact));
    assert_eq!(full(&g).xattrs, m.xattrs);
}

#[test]
fn access_and_default_acls_round_trip_and_inherited_ones_are_removed() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    run(
        "setfacl",
        &[
            OsStr::new("-m"),
            OsStr::new("u:daemon:rwx,g:daemon:r-x"),
            src.as_os_str(),
        ],
    );
    run(
        "setfacl",
        &[
            OsStr::new("-d"),
            OsStr::new("-m"),
            OsStr::new("u:daemon:r-x"),
            src.as_os_str(),
        ],
    );
    let m = full(&src);
    let acl = m.acl.clone().unwrap();
    assert!(acl.contains("user:daemon:read,write,execute"), "{acl}");
    assert!(acl.contains("group:daemon:read,execute"), "{acl}");
    let dacl = m.default_acl.clone().unwrap();
    assert!(dacl.contains("default"), "{dacl}");
    assert!(dacl.contains("user:daemon:read,execute"), "{dacl}");
    // The ACL attributes are not also recorded as xattrs.
    assert!(m.xattrs.is_empty(), "{:?}", m.xattrs);

    let dst = t.path().join("dst");
    fs::create_dir(&dst).unwrap();
    assert_eq!(getfacl(&dst).lines().count(), 4, "{}", getfacl(&dst));
    let dfd = dir_fd(&dst);
    assert_no_issues(&apply_meta_fd(dfd.as_fd(), &m, ApplyOptions::default()));
    let want = getfacl(&src);
    assert!(want.contains("user:1:rwx"), "{want}");
    assert!(want.contains("default:user:1:r-x"), "{want}");
    assert_eq!(getfacl(&dst), want);
    assert_eq!(full(&dst).acl, m.acl);
    assert_eq!(full(&dst).default_acl, m.default_acl);

    // A plain file has no extended ACL...
    let plain = t.path().join("plain");
    fs::write(&plain, b"x").unwrap();
    let pm = full(&plain);
    assert_eq!((pm.acl.as_deref(), pm.default_acl.as_deref()), (None, None));
    // ...and a file created under the default ACL inherits one, which
    // applying the plain file's metadata takes away again.
    let inherited = dst.join("child");
    fs::write(&inherited, b"x").unwrap();
    assert!(full(&inherited).acl.is_some());
    let cf = File::open(&inherited).unwrap();
    assert_no_issues(&apply_meta_fd(cf.as_fd(), &pm, ApplyOptions::default()));
    assert_eq!(full(&inherited).acl, None);
    assert!(!getfacl(&inherited).contains("user:1"));
    // Removing the default ACL of a directory the same way.
    let mut no_default = m.clone();
    no_default.default_acl = None;
    assert_no_issues(&apply_meta_fd(
        dfd.as_fd(),
        &no_default,
        ApplyOptions::default(),
    ));
    assert_eq!(full(&dst).default_acl, None);
    assert_eq!(full(&dst).acl, m.acl);
}

#[test]
fn setuid_setgid_and_capability_survive_the_change_of_owner() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("f");
    fs::write(&f, b"#!/bin/sh\n").unwrap();
    // VFS_CAP_REVISION_2 with the effective bit; permitted CAP_NET_BIND_SERVICE.
    let mut cap = Vec::new();
    for w in [0x0200_0001u32, 1 << 10, 0, 0, 0] {
        cap.extend_from_slice(&w.to_le_bytes());
    }
    let mut m = read_meta(&f).unwrap();
    assert_eq!((m.uid, m.gid), (0, 0), "these tests run as root");
    m.uid = 4321;
    m.gid = 4322;
    m.user = None;
    m.group = None;
    m.mode = 0o6755;
    m.xattrs = vec![xattr(b"security.capability", &cap)];
    let file = File::open(&f).unwrap();
    assert_no_issues(&apply_meta_fd(file.as_fd(), &m, ApplyOptions::default()));
    let back = full(&f);
    assert_eq!((back.uid, back.gid), (4321, 4322));
    assert_eq!(back.mode, 0o6755);
    assert_eq!(back.xattrs, m.xattrs);
}

#[test]
fn owner_by_name_by_number_and_not_at_all() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("f");
    fs::write(&f, b"x").unwrap();
    let file = File::open(&f).unwrap();
    let mut m = read_meta(&f).unwrap();
    m.uid = 4242;
    m.gid = 4243;
    m.user = Some("daemon".into());
    m.group = Some("daemon".into());
    let daemon = (
        crate::names::uid_of("daemon").unwrap(),
        crate::names::gid_of("daemon").unwrap(),
    );
    assert_ne!(daemon, (4242, 4243));

    assert_no_issues(&apply_meta_fd(file.as_fd(), &m, ApplyOptions::default()));
    let back = full(&f);
    assert_eq!((back.uid, back.gid), daemon);
    assert_eq!(back.user.as_deref(), Some("daemon"));

    let numeric = ApplyOptions {
        numeric_owner: true,
        ..ApplyOptions::default()
    };
    assert_no_issues(&apply_meta_fd(file.as_fd(), &m, numeric));
    assert_eq!((full(&f).uid, full(&f).gid), (4242, 4243));

    m.user = Some("rewind-no-such-user".into());
    m.uid = 4244;
    assert_no_issues(&apply_meta_fd(file.as_fd(), &m, ApplyOptions::default()));
    assert_eq!((full(&f).uid, full(&f).gid), (4244, daemon.1));

    let no_owner = ApplyOptions {
        owner: false,
        ..ApplyOptions::default()
    };
    m.uid = 1;
    m.user = None;
    assert_no_issues(&apply_meta_fd(file.as_fd(), &m, no_owner));
    assert_eq!(full(&f).uid, 4244);

    // A symlink gets its own owner; its target keeps its own.
    symlink("f", t.path().join("l")).unwrap();
    let mut lm = read_meta(&t.path().join("l")).unwrap();
    lm.uid = 777;
    lm.gid = 778;
    lm.user = None;
    lm.group = None;
    let tfd = dir_fd(t.path());
    assert_no_issues(&apply_meta_at(&tfd, OsStr::new("l"), &lm, numeric));
    let lb = full(&t.path().join("l"));
    assert_eq!((lb.uid, lb.gid), (777, 778));
    assert_eq!(full(&f).uid, 4244);
}

#[test]
fn atime_and_mtime_with_nanoseconds_on_file_and_dir() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("f");
    let d = t.path().join("d");
    fs::write(&f, b"x").unwrap();
    fs::create_dir(&d).unwrap();
    let atime = FileTime {
        sec: 1_200_000_000,
        nsec: 987_654_321,
    };
    let mtime = FileTime {
        sec: 1_100_000_000,
        nsec: 123_456_789,
    };
    for p in [&f, &d] {
        let mut m = read_meta(p).unwrap();
        m.atime = atime;
        m.mtime = mtime;
        let fd = File::open(p).unwrap();
        assert_no_issues(&apply_meta_fd(fd.as_fd(), &m, ApplyOptions::default()));
        let back = full(p);
        assert_eq!((back.atime, back.mtime), (atime, mtime), "{p:?}");
        // Without atime, only mtime moves.
        m.mtime.nsec = 1;
        m.atime.sec = 5;
        let no_atime = ApplyOptions {
            atime: false,
            ..ApplyOptions::default()
        };
        assert_no_issues(&apply_meta_fd(fd.as_fd(), &m, no_atime));
        let back = full(p);
        assert_eq!(back.atime, atime);
        assert_eq!(back.mtime.nsec, 1);
    }
}

#[test]
fn a_symlink_gets_its_own_times_and_xattrs_not_its_targets() {
    let t = tempfile::tempdir().unwrap();
    let target = t.path().join("target");
    fs::write(&target, b"x").unwrap();
    symlink("target", t.path().join("l")).unwrap();
    let before = full(&target);
    let mut m = read_meta(&t.path().join("l")).unwrap();
    m.mtime = FileTime {
        sec: 900_000_000,
        nsec: 42,
    };
    m.atime = FileTime {
        sec: 900_000_001,
        nsec: 43,
    };
    m.xattrs = vec![xattr(b"trusted.link", b"mine")];
    let tfd = dir_fd(t.path());
    assert_no_issues(&apply_meta_at(
        &tfd,
        OsStr::new("l"),
        &m,
        ApplyOptions::default(),
    ));
    let l = full(&t.path().join("l"));
    assert_eq!((l.mtime, l.atime), (m.mtime, m.atime));
    assert_eq!(l.xattrs, m.xattrs);
    let after = full(&target);
    assert_eq!((after.mtime, after.atime), (before.mtime, before.atime));
    assert!(after.xattrs.is_empty());
}

#[test]
fn fifo_and_devices_are_created_then_given_their_metadata() {
    let t = tempfile::tempdir().unwrap();
    let tfd = dir_fd(t.path());
    let mut fifo = FileMeta::new(FileKind::Fifo, 0o640);
    fifo.mtime = FileTime {
        sec: 1_500_000_000,
        nsec: 5,
    };
    make_special_at(&tfd, OsStr::new("p"), &fifo).unwrap();
    assert_no_issues(&apply_meta_at(
        &tfd,
        OsStr::new("p"),
        &fifo,
        ApplyOptions::default(),
    ));
    let back = full(&t.path().join("p"));
    assert_eq!(back.kind, FileKind::Fifo);
    assert_eq!(back.mode, 0o640);
    assert_eq!(back.mtime, fifo.mtime);

    let mut null = FileMeta::new(FileKind::CharDevice, 0o666);
    null.rdev = rustix::fs::makedev(1, 3);
    make_special_at(&tfd, OsStr::new("null"), &null).unwrap();
    assert_no_issues(&apply_meta_at(
        &tfd,
        OsStr::new("null"),
        &null,
        ApplyOptions::default(),
    ));
    let back = full(&t.path().join("null"));
    assert_eq!(back.kind, FileKind::CharDevice);
    assert_eq!(back.rdev, fs::metadata("/dev/null").unwrap().rdev());
    assert_eq!(back.mode, 0o666);

    let e =
        make_special_at(&tfd, OsStr::new("f"), &FileMeta::new(FileKind::File, 0o644)).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn read_meta_maps_sparse_files() {
    use std::io::{Seek, SeekFrom, Write};
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("s");
    let mut f = File::create(&p).unwrap();
    f.write_all(&[1u8; 4096]).unwrap();
    f.seek(SeekFrom::Start(1 << 30)).unwrap();
    f.write_all(&[2u8; 4096]).unwrap();
    f.set_len(3 << 30).unwrap();
    f.sync_all().unwrap();
    let m = full(&p);
    assert_eq!(
        m.sparse,
        Some(vec![
            Extent {
                offset: 0,
                len: 4096
            },
            Extent {
                offset: 1 << 30,
                len: 4096
            }
        ])
    );
    assert_eq!(m.size, 3 << 30);
}

/// Nested directories of 200-byte names, `depth` deep, built with `*at`
/// calls (the path soon exceeds what path-based calls accept).
fn deep_dirs(base: &Path, depth: usize) -> (PathBuf, OwnedFd) {
    let mut path = base.to_path_buf();
    let mut fd: OwnedFd = dir_fd(base);
    for i in 0..depth {
        let name = format!("{i:03}{}", "x".repeat(197));
        rustix::fs::mkdirat(&fd, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
        fd = openat(
            &fd,
            name.as_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        path.push(&name);
    }
    (path, fd)
}

#[test]
fn paths_longer_than_path_max_are_read() {
    let t = tempfile::tempdir().unwrap();
    let (deep, dfd) = deep_dirs(t.path(), 25);
    let leaf = openat(
        &dfd,
        "leaf",
        OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let leaf = File::from(leaf);
    rustix::io::write(&leaf, b"hello").unwrap();
    xattr::FileExt::set_xattr(&leaf, "user.deep", b"down here").unwrap();
    let path = deep.join("leaf");
    assert!(path.as_os_str().len() > 5000, "{}", path.as_os_str().len());
    assert!(fs::symlink_metadata(&path).is_err(), "too long for lstat");

    let m = full(&path);
    assert_eq!(m.kind, FileKind::File);
    assert_eq!(m.size, 5);
    assert_eq!(m.mode, 0o600);
    assert_eq!(m.xattrs, vec![xattr(b"user.deep", b"down here")]);
    assert_eq!(full(&deep).kind, FileKind::Dir);
    assert_eq!(full(&deep.join("..")).ino, {
        let parent = deep.parent().unwrap();
        read_meta(parent).unwrap().ino
    });

    // Through the directory descriptor too, and applying back.
    let (at, issues) = read_meta_at(dfd.as_fd(), OsStr::new("leaf")).unwrap();
    assert_no_issues(&issues);
    assert_eq!((at.ino, at.xattrs.clone()), (m.ino, m.xattrs.clone()));
    let mut changed = at.clone();
    changed.mtime = FileTime { sec: 7, nsec: 8 };
    changed.xattrs.push(xattr(b"user.more", b"1"));
    assert_no_issues(&apply_meta_at(
        &dfd,
        OsStr::new("leaf"),
        &changed,
        ApplyOptions::default(),
    ));
    let back = full(&path);
    assert_eq!(back.mtime, changed.mtime);
    assert_eq!(back.xattrs, changed.xattrs);
}

#[test]
fn non_utf8_names_are_read_and_applied() {
    let t = tempfile::tempdir().unwrap();
    let name = OsStr::from_bytes(b"caf\xe9\nname");
    let p = t.path().join(name);
    fs::write(&p, b"x").unwrap();
    let mut m = full(&p);
    assert_eq!(m.kind, FileKind::File);
    m.mtime = FileTime {
        sec: 1_234_567_890,
        nsec: 999,
    };
    m.mode = 0o604;
    let tfd = dir_fd(t.path());
    assert_no_issues(&apply_meta_at(&tfd, name, &m, ApplyOptions::default()));
    let back = full(&p);
    assert_eq!((back.mtime, back.mode), (m.mtime, 0o604));
    let (at, _) = read_meta_at(tfd.as_fd(), name).unwrap();
    assert_eq!(at.ino, m.ino);
}
