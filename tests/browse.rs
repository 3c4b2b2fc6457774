//! End-to-end tests of `rewind find` and `rewind diff` (issue 18): the real
//! binary on temporary trees, each state captured with `watch --once`.

mod harness;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use harness::{Env, Server, remote_of, show};
use serde_json::Value;

fn write(p: &Path, data: &[u8]) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(p, data).unwrap();
}

/// Capture the tree as it is now, and return a moment after it.
fn capture(env: &Env) -> String {
    env.ok(&["watch", env.root.to_str().unwrap(), "--once"]);
    env.now()
}

/// `find --json` with these arguments: path → entry.
fn find(env: &Env, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["find"];
    a.extend_from_slice(args);
    a.push("--json");
    let v = env.json(&a);
    v["paths"].as_array().unwrap().clone()
}

fn names(hits: &[Value], root: &Path) -> Vec<String> {
    let r = format!("{}/", root.display());
    hits.iter()
        .map(|h| {
            h["path"]
                .as_str()
                .unwrap()
                .trim_start_matches(&r)
                .to_string()
        })
        .collect()
}

#[test]
fn find_names_deleted_files_with_when_they_were_last_seen() {
    let env = Env::new();
    write(&env.root.join("report-2025.txt"), b"old report");
    write(&env.root.join("notes/ideas.md"), b"ideas");
    write(&env.root.join("notes/todo.txt"), b"todo");
    write(&env.root.join("keep.txt"), b"kept");
    let t1 = capture(&env);
    fs::remove_file(env.root.join("report-2025.txt")).unwrap();
    fs::remove_dir_all(env.root.join("notes")).unwrap();
    let t2 = capture(&env);
    write(&env.root.join("later.txt"), b"came later");
    let t3 = capture(&env);

    // Everything deleted, with the moment it was last seen; a folder's files
    // count as deleted with it.
    let gone = find(&env, &["*", "--deleted"]);
    assert_eq!(
        names(&gone, &env.root),
        vec![
            "notes",
            "notes/ideas.md",
            "notes/todo.txt",
            "report-2025.txt"
        ]
    );
    for h in &gone {
        assert_eq!(h["exists_now"], false, "{h}");
        let last = h["last_seen"]
            .as_str()
            .expect("a deleted path was last seen");
        assert!(
            last > t1.as_str() && last < t2.as_str(),
            "{h} between {t1} and {t2}"
        );
        assert!(h["first_seen"].as_str().unwrap() < t1.as_str(), "{h}");
    }
    // The last version of a deleted file is what a restore brings back.
    let report = &gone[3];
    assert_eq!(report["size"], 10);
    let dest = env.tmp.path().join("back");
    env.restore_to_ok(
        &env.root.join("report-2025.txt"),
        report["last_version"].as_str().unwrap(),
        &dest,
    );
    assert_eq!(fs::read(&dest).unwrap(), b"old report");

    // Globs against substrings: `*.txt` is a glob on names, `txt` a
    // substring, `notes/` (with a slash) a substring of the whole path.
    assert_eq!(
        names(&find(&env, &["*.txt"]), &env.root),
        vec!["keep.txt", "later.txt", "notes/todo.txt", "report-2025.txt"]
    );
    assert_eq!(
        names(&find(&env, &["report"]), &env.root),
        vec!["report-2025.txt"]
    );
    assert_eq!(
        names(&find(&env, &["notes/"]), &env.root),
        vec!["notes/ideas.md", "notes/todo.txt"]
    );
    assert_eq!(
        names(&find(&env, &["notes/*.md"]), &env.root),
        vec!["notes/ideas.md"]
    );
    assert!(find(&env, &["KEEP"]).is_empty());
    assert_eq!(find(&env, &["KEEP", "-i"]).len(), 1);

    // Ranges: before the deletions the folder existed; after them, only
    // what survived or came later.
    assert_eq!(
        names(&find(&env, &["*.txt", "--until", &t1]), &env.root),
        vec!["keep.txt", "notes/todo.txt", "report-2025.txt"]
    );
    assert_eq!(
        names(&find(&env, &["*.txt", "--since", &t2]), &env.root),
        vec!["keep.txt", "later.txt"]
    );
    assert!(find(&env, &["later", "--until", &t2]).is_empty());
    assert_eq!(
        find(&env, &["later", "--since", &t2, "--until", &t3]).len(),
        1
    );
    // Below a folder only.
    assert_eq!(
        names(
            &find(&env, &["*", env.root.join("notes").to_str().unwrap()]),
            &env.root
        ),
        vec!["notes", "notes/ideas.md", "notes/todo.txt"]
    );

    // The text form: one line a path, NOW says deleted or exists.
    let text = env.ok(&["find", "report"]);
    assert!(
        text.lines().next().unwrap().starts_with("FIRST SEEN"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("deleted") && l.ends_with("report-2025.txt")),
        "{text}"
    );
    // A bad glob is refused with a reason.
    let out = env.run(&["find", "[unclosed"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad pattern"),
        "{}",
        show(&out)
    );
}

#[test]
fn find_through_a_server_sees_only_this_clients_paths() {
    let a = Env::new();
    let b = Env::new();
    let srv = Server::start_new(&a.tmp.path().join("srv"));
    a.enroll(&srv, "alice");
    b.enroll(&srv, "bob");
    write(&a.root.join("alice-diary.txt"), b"dear diary");
    write(&b.root.join("bob-notes.txt"), b"bob");
    capture(&a);
    capture(&b);
    fs::remove_file(a.root.join("alice-diary.txt")).unwrap();
    capture(&a);
    let hits = find(&a, &["diary", "--deleted"]);
    assert_eq!(names(&hits, &a.root), vec!["alice-diary.txt"]);
    assert!(
        find(&b, &["diary"]).is_empty(),
        "bob never sees alice's paths"
    );
    assert_eq!(names(&find(&b, &["*.txt"]), &b.root), vec!["bob-notes.txt"]);
    // Asked for alice's folder by name, bob's server answers for bob only.
    let bob = remote_of(&b);
    use rewind_core::Repository;
    let q = rewind_core::FindQuery::new(a.root.to_str().unwrap().as_bytes(), "");
    assert!(bob.find("alice", &q).unwrap().hits.is_empty());
    let act = rewind_core::ActivityQuery {
        path: b"/".to_vec(),
        from: rewind_core::Timestamp(0),
        to: rewind_core::Timestamp::MAX,
        width: 1_000_000_000,
    };
    let mine: u64 = bob
        .activity("alice", &act)
        .unwrap()
        .iter()
        .map(|b| b.changes)
        .sum();
    assert_eq!(mine, 2, "bob's own root and file, nothing of alice's");
}

#[test]
fn diff_names_every_kind_of_change() {
    let env = Env::new();
    let r = &env.root;
    write(&r.join("same.txt"), b"unchanged");
    write(&r.join("edit.txt"), b"short");
    write(&r.join("chmod.sh"), b"#!/bin/sh\n");
    write(&r.join("gone.txt"), b"to be deleted");
    write(&r.join("move-me.bin"), b"content that moves to a new name");
    write(&r.join("olddir/a.txt"), b"a in a directory that is renamed");
    write(&r.join("olddir/sub/b.txt"), b"b, deeper");
    let t1 = capture(&env);
    write(&r.join("edit.txt"), b"a longer content now");
    fs::set_permissions(r.join("chmod.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_file(r.join("gone.txt")).unwrap();
    fs::rename(r.join("move-me.bin"), r.join("moved.bin")).unwrap();
    fs::rename(r.join("olddir"), r.join("newdir")).unwrap();
    write(&r.join("new.txt"), b"brand new");
    let t2 = capture(&env);

    let v = env.json(&["diff", &t1, &t2, r.to_str().unwrap(), "--json"]);
    let rel = |p: &Value| {
        p.as_str()
            .unwrap()
            .trim_start_matches(&format!("{}/", r.display()))
            .to_string()
    };
    let got: Vec<String> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] != "dir" || c["change"] == "renamed")
        .map(|c| match c["from"].as_str() {
            Some(_) => format!(
                "{} {} -> {}",
                c["change"].as_str().unwrap(),
                rel(&c["from"]),
                rel(&c["path"])
            ),
            None => format!("{} {}", c["change"].as_str().unwrap(), rel(&c["path"])),
        })
        .collect();
    assert_eq!(
        got,
        vec![
            "metadata chmod.sh",
            "changed edit.txt",
            "removed gone.txt",
            "renamed move-me.bin -> moved.bin",
            "added new.txt",
            "renamed olddir -> newdir",
        ],
        "{v:#}"
    );
    let by = |p: &str| {
        v["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| rel(&c["path"]) == p)
            .unwrap()
            .clone()
    };
    assert_eq!(by("chmod.sh")["fields"], serde_json::json!(["mode"]));
    assert_eq!(
        (
            by("edit.txt")["old_size"].clone(),
            by("edit.txt")["new_size"].clone()
        ),
        (5.into(), 20.into())
    );
    assert_eq!(by("gone.txt")["old_size"], 13);
    assert_eq!(by("new.txt")["new_size"], 9);
    assert_eq!(v["summary"]["renamed"], 2);

    // The text form, and exit code 0 whatever changed.
    let out = env.run(&["diff", &t1, &t2, r.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "+  added",
        "-  removed",
        "M  changed",
        "U  metadata",
        "R  renamed",
    ] {
        assert!(text.contains(want), "{want:?} missing in:\n{text}");
    }
    assert!(text.contains("move-me.bin -> "), "{text}");
    // Nothing changed between a moment and itself; reversed, additions are
    // removals.
    let same = env.json(&["diff", &t2, &t2, r.to_str().unwrap(), "--json"]);
    assert!(same["changes"].as_array().unwrap().is_empty(), "{same:#}");
    let back = env.json(&["diff", &t2, &t1, r.to_str().unwrap(), "--json"]);
    assert_eq!(back["summary"]["removed"], 1, "{back:#}");
    assert_eq!(back["summary"]["added"], 1, "{back:#}");
}
