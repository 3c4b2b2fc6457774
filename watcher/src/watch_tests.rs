//! Real inotify on temporary directories. Every wait has a generous timeout
//! and nothing asserts on timing.

use super::*;
use std::os::unix::ffi::OsStrExt;

/// Quiescence for tests: short, so runs are quick.
const TEST_QUIESCENCE: Duration = Duration::from_millis(100);
/// Upper bound for any single expected event; only reached on failure.
const WAIT: Duration = Duration::from_secs(10);

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap().join("root");
    fs::create_dir(&root).unwrap();
    Fixture { _tmp: tmp, root }
}

fn options(root: &Path, excludes: &[&str], ignored: &[PathBuf]) -> WatchOptions {
    let excludes: Vec<String> = excludes.iter().map(|s| s.to_string()).collect();
    let rules = IgnoreRules::new(&[root.to_path_buf()], &excludes, ignored).unwrap();
    let mut opts = WatchOptions::new(vec![root.to_path_buf()], Arc::new(rules));
    opts.quiescence = TEST_QUIESCENCE;
    opts
}

fn start(opts: WatchOptions) -> (Watcher, Receiver<WatchEvent>) {
    Watcher::start(opts).expect("watcher starts")
}

/// Collect events until one matches `pred`; panic with what was seen after `WAIT`.
fn wait_for(
    rx: &Receiver<WatchEvent>,
    what: &str,
    pred: impl Fn(&WatchEvent) -> bool,
) -> Vec<WatchEvent> {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        match rx.recv_deadline(deadline) {
            Ok(event) => {
                let done = pred(&event);
                seen.push(event);
                if done {
                    return seen;
                }
            }
            Err(e) => panic!("waiting for {what}: {e}; saw {seen:#?}"),
        }
    }
}

fn changed(path: &Path) -> impl Fn(&WatchEvent) -> bool + '_ {
    move |e| matches!(e, WatchEvent::Changed { path: p, .. } if p == path)
}

fn rescan_of(path: &Path, reason: RescanReason) -> impl Fn(&WatchEvent) -> bool + '_ {
    move |e| matches!(e, WatchEvent::Rescan { path: p, reason: r, .. } if p == path && *r == reason)
}

fn event_path(e: &WatchEvent) -> Option<&Path> {
    match e {
        WatchEvent::Changed { path, .. } | WatchEvent::Rescan { path, .. } => Some(path),
        WatchEvent::Warning(_) | WatchEvent::LimitReached(_) => None,
    }
}

#[test]
fn handles_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<IgnoreRules>();
    send_sync::<WatchOptions>();
    send::<Watcher>();
    send_sync::<WatchEvent>();
}

#[test]
fn create_write_delete_a_file() {
    let fx = fixture();
    let (watcher, rx) = start(options(&fx.root, &[], &[]));
    let file = fx.root.join("notes.txt");

    let before = SystemTime::now();
    fs::write(&file, "one").unwrap();
    let seen = wait_for(&rx, "create", changed(&file));
    let Some(WatchEvent::Changed { observed_at, .. }) = seen.last() else {
        unreachable!()
    };
    assert!(*observed_at >= before && *observed_at <= SystemTime::now());

    fs::write(&file, "two").unwrap();
    wait_for(&rx, "write", changed(&file));

    fs::remove_file(&file).unwrap();
    wait_for(&rx, "delete", changed(&file));
    watcher.stop();
}

#[test]
fn parent_directory_and_odd_names_are_reported() {
    let fx = fixture();
    fs::create_dir(fx.root.join("dir")).unwrap();
    let (_watcher, rx) = start(options(&fx.root, &[], &[]));
    let odd = fx
        .root
        .join("dir")
        .join(std::ffi::OsStr::from_bytes(b"bad\xffname\nwith newline"));
    fs::write(&odd, "x").unwrap();
    let mut seen = wait_for(&rx, "odd name", changed(&odd));
    if !seen.iter().any(changed(&fx.root.join("dir"))) {
        seen.extend(wait_for(&rx, "parent", changed(&fx.root.join("dir"))));
    }
    assert!(
        !seen.iter().any(changed(&fx.root)),
        "the root's own entries did not change: {seen:#?}"
    );
}

#[test]
fn atomic_save_reports_the_target() {
    let fx = fixture();
    let target = fx.root.join("x");
    fs::write(&target, "old").unwrap();
    let (_watcher, rx) = start(options(&fx.root, &[], &[]));
    let temp = fx.root.join(".x.tmp");
    fs::write(&temp, "new").unwrap();
    fs::rename(&temp, &target).unwrap();
    wait_for(&rx, "renamed-over target", changed(&target));
}

#[test]
fn files_written_into_a_new_directory_right_away_are_found() {
    let fx = fixture();
    let (_watcher, rx) = start(options(&fx.root, &[], &[]));
    let dir = fx.root.join("d");
    let deep = dir.join("e/g");
    fs::create_dir_all(&deep).unwrap();
    fs::write(dir.join("f"), "x").unwrap();
    fs::write(deep.join("f"), "x").unwrap();

    let seen = wait_for(&rx, "file or new-directory rescan", |e| {
        changed(&dir.join("f"))(e) || rescan_of(&dir, RescanReason::NewDirectory)(e)
    });
    if !seen.iter().any(rescan_of(&dir, RescanReason::NewDirectory)) {
        wait_for(&rx, "deep file or rescan", |e| {
            changed(&deep.join("f"))(e)
                || matches!(e, WatchEvent::Rescan { path, reason: RescanReason::NewDirectory, .. }
                    if deep.starts_with(path))
        });
    }

    // Watches now cover the whole new subtree.
    let later = deep.join("later");
    fs::write(&later, "y").unwrap();
    wait_for(&rx, "write deep in the new tree", changed(&later));
}

#[test]
fn after_a_directory_rename_events_use_the_new_name() {
    let fx = fixture();
    let a = fx.root.join("a");
    let b = fx.root.join("b");
    fs::create_dir_all(a.join("sub")).unwrap();
    fs::write(a.join("sub/f0"), "x").unwrap();
    let (_watcher, rx) = start(options(&fx.root, &[], &[]));

    fs::rename(&a, &b).unwrap();
    let mut seen = wait_for(
        &rx,
        "rescan of the new name",
        rescan_of(&b, RescanReason::NewDirectory),
    );
    if !seen.iter().any(changed(&a)) {
        seen = wait_for(&rx, "old name", changed(&a));
    }
    drop(seen);

    let inside = b.join("sub/f");
    fs::write(&inside, "y").unwrap();
    let seen = wait_for(&rx, "write under the new name", changed(&inside));
    assert!(
        !seen
            .iter()
            .filter_map(event_path)
            .any(|p| p.starts_with(&a)),
        "paths under the old name after the rename: {seen:#?}"
    );
}

#[test]
fn a_directory_renamed_over_an_empty_one_stays_watched() {
    let fx = fixture();
    let a = fx.root.join("a");
    let b = fx.root.join("b");
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    let (_watcher, rx) = start(options(&fx.root, &[], &[]));

    fs::rename(&a, &b).unwrap();
    wait_for(
        &rx,
        "rescan of b",
        rescan_of(&b, RescanReason::NewDirectory),
    );
    // A late "b deleted" (the replaced inode) may re-add the watch and
    // rescan b again; either way the write is found.
    for name in ["f1", "f2"] {
        let file = b.join(name);
        fs::write(&file, "x").unwrap();
        wait_for(&rx, "write in b", |e| {
            changed(&file)(e) || rescan_of(&b, RescanReason::NewDirectory)(e)
        });
    }
}

#[test]
fn directories_moved_in_and_out() {
    let fx = fixture();
    let outside = fx.root.parent().unwrap().join("outside");
    fs::create_dir_all(outside.join("incoming/deep")).unwrap();
    fs::write(outside.join("incoming/deep/old"), "x").unwrap();
    fs::create_dir_all(fx.root.join("leaving/sub")).unwrap();
    let (_watcher, rx) = start(options(&fx.root, &[], &[]));

    let incoming = fx.root.join("incoming");
    fs::rename(outside.join("incoming"), &incoming).unwrap();
    wait_for(
        &rx,
        "moved-in rescan",
        rescan_of(&incoming, RescanReason::NewDirectory),
    );
    let new = incoming.join("deep/new");
    fs::write(&new, "y").unwrap();
    wait_for(&rx, "write in moved-in tree", changed(&new));

    let leaving = fx.root.join("leaving");
    fs::rename(&leaving, outside.join("leaving")).unwrap();
    wait_for(&rx, "moved-out dir", changed(&leaving));
    fs::write(outside.join("leaving/sub/after"), "z").unwrap();
    let sentinel = fx.root.join("sentinel");
    fs::write(&sentinel, "s").unwrap();
    let seen = wait_for(&rx, "sentinel", changed(&sentinel));
    assert!(
        !seen
            .iter()
            .filter_map(event_path)
            .any(|p| p.starts_with(&leaving)),
        "{seen:#?}"
    );
}

#[test]
fn a_flood_of_files_is_fully_covered() {
    let fx = fixture();
    let dir = fx.root.join("flood");
    fs::create_dir(&dir).unwrap();
    let (_watcher, rx) = start(options(&fx.root, &[], &[]));
    let files: Vec<PathBuf> = (0..5_000).map(|n| dir.join(format!("f{n}"))).collect();
    for file in &files {
        fs::write(file, "x").unwrap();
    }
    let mut uncovered: BTreeSet<PathBuf> = files.into_iter().collect();
    let deadline = Instant::now() + WAIT;
    while !uncovered.is_empty() {
        match rx.recv_deadline(deadline) {
            Ok(WatchEvent::Changed { path, .. }) => {
                uncovered.remove(&path);
            }
            Ok(WatchEvent::Rescan { path, .. }) => {
                uncovered.retain(|f| !f.starts_with(&path));
            }
            Ok(WatchEvent::Warning(w) | WatchEvent::LimitReached(w)) => {
                panic!("unexpected warning {w}")
            }
            Err(e) => panic!("{e}: {} files never reported", uncovered.len()),
        }
    }
}

/// The folders of a tree are watched a level at a time, each level in one
/// batch: every folder at every depth, an ignored one's subtree left out,
/// reports a file written into it.
#[test]
fn every_folder_of_an_existing_tree_is_watched() {
    let fx = fixture();
    let mut dirs = Vec::new();
    for a in 0..4 {
        for b in 0..3 {
            for c in 0..2 {
                let d = fx.root.join(format!("a{a}/b{b}/c{c}"));
                fs::create_dir_all(&d).unwrap();
                dirs.push(d);
            }
            dirs.push(fx.root.join(format!("a{a}/b{b}")));
        }
        dirs.push(fx.root.join(format!("a{a}")));
    }
    fs::create_dir_all(fx.root.join("skip/below")).unwrap();
    let (_watcher, rx) = start(options(&fx.root, &["skip"], &[]));
    let mut uncovered: BTreeSet<PathBuf> = BTreeSet::new();
    for d in &dirs {
        let f = d.join("new.txt");
        fs::write(&f, "x").unwrap();
        uncovered.insert(f);
    }
    fs::write(fx.root.join("skip/below/new.txt"), "x").unwrap();
    let deadline = Instant::now() + WAIT;
    while !uncovered.is_empty() {
        match rx.recv_deadline(deadline) {
            Ok(WatchEvent::Changed { path, .. }) => {
                assert!(!path.starts_with(fx.root.join("skip")), "{path:?}");
                uncovered.remove(&path);
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => panic!("{e}: never reported: {uncovered:?}"),
        }
    }
}

#[test]
fn ignored_paths_are_not_reported() {
    let fx = fixture();
    let state = fx.root.join("state");
    fs::create_dir_all(fx.root.join("target")).unwrap();
    fs::create_dir_all(&state).unwrap();
    fs::create_dir_all(fx.root.join("cache")).unwrap();
    fs::write(
        fx.root.join("cache/CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n",
    )
    .unwrap();
    fs::write(fx.root.join(".rewindignore"), "*.log\n").unwrap();
    fs::create_dir(fx.root.join("sub")).unwrap();
    let (_watcher, rx) = start(options(
        &fx.root,
        &["target/"],
        std::slice::from_ref(&state),
    ));

    let ignored = [
        fx.root.join("x.swp"),
        fx.root.join("target/out.o"),
        fx.root.join("state/journal"),
        fx.root.join("cache/blob"),
        fx.root.join("app.log"),
        fx.root.join("sub/target/late.o"),
    ];
    fs::create_dir_all(fx.root.join("sub/target")).unwrap();
    for path in &ignored {
        fs::write(path, "x").unwrap();
    }
    let sentinel = fx.root.join("sub/sentinel");
    fs::write(&sentinel, "s").unwrap();
    let seen = wait_for(&rx, "sentinel", changed(&sentinel));
    for path in &ignored {
        assert!(
            !seen.iter().filter_map(event_path).any(|p| p == path),
            "{} reported: {seen:#?}",
            path.display()
        );
    }
    assert!(
        !seen
            .iter()
            .filter_map(event_path)
            .any(|p| p.starts_with(fx.root.join("sub/target"))),
        "{seen:#?}"
    );
}

#[test]
fn changing_a_rewindignore_rescans_and_applies_the_new_rules() {
    let fx = fixture();
    fs::write(fx.root.join(".rewindignore"), "*.log\nlogs/\n").unwrap();
    fs::create_dir(fx.root.join("logs")).unwrap();
    let (_watcher, rx) = start(options(&fx.root, &[], &[]));

    fs::write(fx.root.join(".rewindignore"), "").unwrap();
    wait_for(
        &rx,
        "rules rescan",
        rescan_of(&fx.root, RescanReason::RulesChanged),
    );

    let log = fx.root.join("app.log");
    fs::write(&log, "x").unwrap();
    wait_for(&rx, "un-ignored file", changed(&log));
    // The directory that was ignored is now watched.
    let inside = fx.root.join("logs/today");
    fs::write(&inside, "x").unwrap();
    wait_for(&rx, "file in un-ignored dir", changed(&inside));
}

#[test]
fn the_limit_message_names_a_user_namespace_limit_lower_than_the_sysctl() {
    assert_eq!(
        os_limit(Some(8192), Some(8192)),
        "fs.inotify.max_user_watches=8192"
    );
    assert_eq!(
        os_limit(Some(192_540), Some(125)),
        "user.max_inotify_watches=125 in this user namespace, fs.inotify.max_user_watches=192540"
    );
    assert_eq!(os_limit(None, None), "fs.inotify.max_user_watches=?");
}

#[test]
#[cfg(target_os = "linux")]
fn watch_limit_warns_once_and_rescans_unwatched_dirs() {
    let fx = fixture();
    let subdirs: Vec<PathBuf> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| fx.root.join(n))
        .collect();
    for dir in &subdirs {
        fs::create_dir(dir).unwrap();
    }
    let mut opts = options(&fx.root, &[], &[]);
    opts.max_watches = Some(2);
    opts.unwatched_rescan = Duration::from_millis(300);
    let (_watcher, rx) = start(opts);

    let deadline = Instant::now() + WAIT;
    let mut warnings = Vec::new();
    let mut unwatched = Vec::new();
    // Three directories are unwatched; wait for at least two rounds.
    while unwatched.len() < 6 {
        match rx.recv_deadline(deadline) {
            // The limit comes as its own event, so the agent can tell the user.
            Ok(WatchEvent::LimitReached(w)) => warnings.push(w),
            Ok(WatchEvent::Warning(w)) => panic!("the limit came as a plain warning: {w}"),
            Ok(WatchEvent::Rescan {
                path,
                reason: RescanReason::Unwatched,
                ..
            }) => unwatched.push(path),
            Ok(_) => {}
            Err(e) => panic!("{e}: warnings {warnings:?}, unwatched {unwatched:?}"),
        }
    }
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("inotify watch limit reached")
            && warnings[0].contains("sudo sysctl fs.inotify.max_user_watches=524288"),
        "{}",
        warnings[0]
    );
    let distinct: BTreeSet<&PathBuf> = unwatched.iter().collect();
    assert_eq!(distinct.len(), 3, "{unwatched:?}");
    assert!(
        distinct.iter().all(|p| subdirs.contains(p)),
        "{unwatched:?}"
    );
}

#[test]
fn overflow_and_errors_become_rescans() {
    let fx = fixture();
    fs::create_dir(fx.root.join("dir")).unwrap();
    fs::write(fx.root.join("dir/file"), "x").unwrap();
    let (watcher, rx) = start(options(&fx.root, &[], &[]));

    watcher.inject(Ok(
        Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan)
    ));
    wait_for(
        &rx,
        "overflow rescan",
        rescan_of(&fx.root, RescanReason::Overflow),
    );

    watcher.inject(Err(notify::Error::generic("boom")));
    wait_for(
        &rx,
        "error rescan",
        rescan_of(&fx.root, RescanReason::Error),
    );

    watcher.inject(Err(
        notify::Error::generic("boom").add_path(fx.root.join("dir/file"))
    ));
    wait_for(
        &rx,
        "error rescan of the file's directory",
        rescan_of(&fx.root.join("dir"), RescanReason::Error),
    );
}

#[test]
#[cfg(target_os = "linux")]
fn a_vanished_root_is_watched_again_when_it_returns() {
    let fx = fixture();
    let mut opts = options(&fx.root, &[], &[]);
    opts.unwatched_rescan = Duration::from_millis(200);
    let (_watcher, rx) = start(opts);

    fs::remove_dir(&fx.root).unwrap();
    let seen = wait_for(&rx, "warning", |e| matches!(e, WatchEvent::Warning(_)));
    assert!(
        matches!(seen.last(), Some(WatchEvent::Warning(w)) if w.contains("disappeared")),
        "{seen:#?}"
    );
    fs::create_dir(&fx.root).unwrap();
    wait_for(
        &rx,
        "rescan of the returned root",
        rescan_of(&fx.root, RescanReason::Unwatched),
    );
    let file = fx.root.join("back");
    fs::write(&file, "x").unwrap();
    wait_for(&rx, "write in the returned root", changed(&file));
}

#[test]
fn stop_ends_the_event_stream() {
    let fx = fixture();
    let (watcher, rx) = start(options(&fx.root, &[], &[]));
    watcher.stop();
    loop {
        match rx.recv_timeout(WAIT) {
            Ok(_) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => panic!("channel still open after stop"),
        }
    }
}

#[test]
fn start_refuses_bad_roots() {
    let fx = fixture();
    let file = fx.root.join("file");
    fs::write(&file, "x").unwrap();
    for bad in [PathBuf::from("relative"), file, fx.root.join("missing")] {
        let rules = Arc::new(IgnoreRules::new(&[], &[], &[]).unwrap());
        let err = Watcher::start(WatchOptions::new(vec![bad.clone()], rules)).unwrap_err();
        assert!(
            matches!(&err, WatchError::Root { path, .. } if *path == bad),
            "{err:?}"
        );
    }
}

#[test]
fn attribute_changes_are_reported_without_content() {
    use std::os::unix::fs::PermissionsExt;
    let fx = fixture();
    let file = fx.root.join("f");
    fs::write(&file, "data").unwrap();
    let (_watcher, rx) = start(options(&fx.root, &[], &[]));
    let content_of = |seen: &[WatchEvent]| match seen.last() {
        Some(WatchEvent::Changed { content, .. }) => *content,
        other => panic!("{other:?}"),
    };
    // chmod: one attribute event.
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(!content_of(&wait_for(&rx, "chmod", changed(&file))));
    // touch: open for writing, set both times, close.
    let f = fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.set_times(
        fs::FileTimes::new()
            .set_accessed(SystemTime::now())
            .set_modified(SystemTime::now()),
    )
    .unwrap();
    drop(f);
    assert!(!content_of(&wait_for(&rx, "touch", changed(&file))));
    // A write, even followed by a chmod in the same burst.
    fs::write(&file, "more data").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    assert!(content_of(&wait_for(&rx, "write", changed(&file))));
}

#[test]
fn the_raw_queue_holds_at_most_its_bound_and_makes_room_as_events_are_read() {
    let (tx, rx) = raw_queue();
    let raw = || (Ok(Event::default()), Instant::now(), SystemTime::now());
    for _ in 0..RAW_QUEUE {
        tx.try_send(raw()).expect("room below the bound");
    }
    assert!(matches!(tx.try_send(raw()), Err(TrySendError::Full(_))));
    let (res, _, _) = rx.rx.try_recv().expect("an event waits");
    assert!(res.is_ok());
    rx.took_one();
    tx.try_send(raw()).expect("room for one after one was read");
    assert!(matches!(tx.try_send(raw()), Err(TrySendError::Full(_))));

    // With the event thread gone, an event is refused as such and takes no
    // room.
    let (tx, rx) = raw_queue();
    drop(rx);
    for _ in 0..2 {
        assert!(matches!(
            tx.try_send(raw()),
            Err(TrySendError::Disconnected(_))
        ));
    }
    assert_eq!(tx.queued.load(Ordering::Acquire), 0);
}
