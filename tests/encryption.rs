//! Encrypted repositories with the real binary: `init --encrypt`, a
//! backup, a restore, what the repository's files show (neither content
//! nor names), refused secrets, and `key add|list|remove`.

mod harness;

use std::fs;
use std::path::Path;
use std::process::Output;

use harness::{Env, show};

/// A word no ciphertext holds by chance.
const WORD: &str = "Zyxwvut";

/// `rewind ARGS` with `vars` set (and nothing else of the caller's).
fn run(env: &Env, vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = env.command();
    for (k, v) in vars {
        c.env(k, v);
    }
    c.args(args).output().unwrap()
}

fn ok(env: &Env, vars: &[(&str, &str)], args: &[&str]) -> String {
    let out = run(env, vars, args);
    assert!(
        out.status.success(),
        "rewind {args:?} failed\n{}",
        show(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails_with(env: &Env, vars: &[(&str, &str)], args: &[&str], needle: &str) {
    let out = run(env, vars, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "rewind {args:?}\n{}",
        show(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(needle),
        "rewind {args:?}: want {needle:?}\n{}",
        show(&out)
    );
}

/// Every byte of every file under `dir` searched for `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if fs::read(&p)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[test]
fn an_encrypted_repository_backs_up_and_restores_and_shows_no_plaintext() {
    let env = Env::new();
    let repo = env.tmp.path().join("repo");
    let r = repo.to_str().unwrap();
    let pw = [("REWIND_PASSWORD", "correct horse")];
    let made = ok(&env, &pw, &["--repo", r, "init", "--encrypt"]);
    assert!(made.contains("encrypted"), "{made}");

    let name = format!("{WORD}-merger-plans.txt");
    let file = env.root.join(&name);
    let text = format!("the quarterly numbers of {WORD} Holdings\n").repeat(2000);
    fs::write(&file, &text).unwrap();
    fs::create_dir(env.root.join("sub")).unwrap();
    fs::write(env.root.join("sub/small"), "a small file\n").unwrap();
    let root = env.root.to_str().unwrap();
    ok(
        &env,
        &pw,
        &["--repo", r, "watch", root, "--once", "--no-ui"],
    );

    let dest = env.tmp.path().join("out");
    ok(
        &env,
        &pw,
        &[
            "--repo",
            r,
            "restore",
            root,
            "--at",
            "now",
            "--to",
            dest.to_str().unwrap(),
        ],
    );
    assert_eq!(fs::read_to_string(dest.join(&name)).unwrap(), text);
    assert_eq!(
        fs::read_to_string(dest.join("sub/small")).unwrap(),
        "a small file\n"
    );

    // Neither the content nor a file name is in any of the repository's
    // files.
    assert_eq!(files_holding(&repo, WORD.as_bytes()), Vec::<String>::new());
    assert_eq!(files_holding(&repo, b"a small file"), Vec::<String>::new());
    assert_eq!(files_holding(&repo, b"merger-plans"), Vec::<String>::new());
    let config = fs::read_to_string(repo.join("config")).unwrap();
    assert!(config.contains("\"format\": 5"), "{config}");
    assert!(config.contains("aes256gcm-subkey"), "{config}");

    let verified = ok(&env, &pw, &["--repo", r, "verify"]);
    assert!(verified.contains("no damage"), "{verified}");

    // Wrong or missing secrets: exit 1 and one clear line.
    fails_with(
        &env,
        &[("REWIND_PASSWORD", "wrong")],
        &["--repo", r, "ls"],
        "wrong password",
    );
    fails_with(
        &env,
        &[],
        &["--repo", r, "ls"],
        "is encrypted: no password: set REWIND_PASSWORD or REWIND_PASSWORD_FILE",
    );
    let pwfile = env.tmp.path().join("pw");
    fs::write(&pwfile, "correct horse\n").unwrap();
    let listed = ok(
        &env,
        &[("REWIND_PASSWORD_FILE", pwfile.to_str().unwrap())],
        &["--repo", r, "ls"],
    );
    assert!(listed.contains(&name), "{listed}");
}

/// The first encrypted repositories were sealed with XChaCha20-Poly1305;
/// `tests/fixtures/encrypted-xchacha-6d93d0b` is one, made by the build of
/// 6d93d0b (`init --encrypt`, then `watch --once` of `/tmp/xfix/src`
/// holding the two files below). This build restores it, verifies it,
/// and appends to it in the same cipher.
#[test]
fn a_repository_sealed_with_xchacha20_poly1305_still_restores_and_takes_new_versions() {
    let env = Env::new();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/encrypted-xchacha-6d93d0b");
    let repo = env.tmp.path().join("repo");
    copy_tree(&fixture, &repo);
    let r = repo.to_str().unwrap();
    let pw = [("REWIND_PASSWORD", "fixture password")];
    let dest = env.tmp.path().join("old");
    let d = dest.to_str().unwrap();
    ok(
        &env,
        &pw,
        &[
            "--repo",
            r,
            "restore",
            "/tmp/xfix/src",
            "--at",
            "now",
            "--to",
            d,
        ],
    );
    assert_eq!(
        fs::read_to_string(dest.join("a.txt")).unwrap(),
        "first file, sealed with XChaCha20-Poly1305\n"
    );
    let c: Vec<u8> = (0..20000u32)
        .map(|i| ((i * 7 + i / 13) % 256) as u8)
        .collect();
    assert!(
        fs::read(dest.join("b/c.bin")).unwrap() == c,
        "b/c.bin differs"
    );

    fs::write(env.root.join("new.txt"), format!("{WORD} appended\n")).unwrap();
    let root = env.root.to_str().unwrap();
    ok(
        &env,
        &pw,
        &["--repo", r, "watch", root, "--once", "--no-ui"],
    );
    let dest = env.tmp.path().join("new");
    let d = dest.to_str().unwrap();
    ok(
        &env,
        &pw,
        &["--repo", r, "restore", root, "--at", "now", "--to", d],
    );
    assert_eq!(
        fs::read_to_string(dest.join("new.txt")).unwrap(),
        format!("{WORD} appended\n")
    );
    assert_eq!(files_holding(&repo, WORD.as_bytes()), Vec::<String>::new());
    let config = fs::read_to_string(repo.join("config")).unwrap();
    assert!(config.contains("xchacha20poly1305"), "{config}");
    let verified = ok(&env, &pw, &["--repo", r, "verify"]);
    assert!(verified.contains("no damage"), "{verified}");
}

/// Copy the files and folders under `from` to `to`, owner-only (a
/// repository's own modes).
fn copy_tree(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(to).unwrap();
    fs::set_permissions(to, fs::Permissions::from_mode(0o700)).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            fs::copy(e.path(), &target).unwrap();
            fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}

#[test]
fn key_add_list_and_remove_manage_passwords_and_key_files() {
    let env = Env::new();
    let repo = env.tmp.path().join("repo");
    let r = repo.to_str().unwrap();
    let pw = [("REWIND_PASSWORD", "first")];
    ok(&env, &pw, &["--repo", r, "init", "--encrypt"]);
    fs::write(env.root.join("f"), "content\n").unwrap();
    ok(
        &env,
        &pw,
        &[
            "--repo",
            r,
            "watch",
            env.root.to_str().unwrap(),
            "--once",
            "--no-ui",
        ],
    );

    let key = env.tmp.path().join("rewind.key");
    let k = key.to_str().unwrap();
    ok(&env, &pw, &["--repo", r, "key", "add", "--new-key-file", k]);
    assert!(
        fs::read_to_string(&key)
            .unwrap()
            .starts_with("rewind-key-file-1 ")
    );
    ok(
        &env,
        &[
            ("REWIND_PASSWORD", "first"),
            ("REWIND_NEW_PASSWORD", "second"),
        ],
        &["--repo", r, "key", "add"],
    );
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&env, &pw, &["--repo", r, "key", "list", "--json"])).unwrap();
    let slots = listed.as_array().unwrap();
    assert_eq!(slots.len(), 3, "{listed}");
    let in_use: Vec<&str> = slots
        .iter()
        .filter(|s| s["in_use"] == true)
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(in_use.len(), 1, "{listed}");
    assert_eq!(
        slots.iter().filter(|s| s["kind"] == "key-file").count(),
        1,
        "{listed}"
    );
    // The slot in use cannot go; opened with the key file, it can.
    fails_with(
        &env,
        &pw,
        &["--repo", r, "key", "remove", in_use[0]],
        "opened the repository with",
    );
    ok(
        &env,
        &[],
        &["--repo", r, "--key-file", k, "key", "remove", in_use[0]],
    );
    fails_with(&env, &pw, &["--repo", r, "ls"], "wrong password");
    for vars in [
        &[("REWIND_PASSWORD", "second")][..],
        &[("REWIND_KEY_FILE", k)][..],
    ] {
        let dest = env.tmp.path().join(format!("out-{}", vars[0].0));
        ok(
            &env,
            vars,
            &[
                "--repo",
                r,
                "restore",
                env.root.to_str().unwrap(),
                "--at",
                "now",
                "--to",
                dest.to_str().unwrap(),
            ],
        );
        assert_eq!(fs::read_to_string(dest.join("f")).unwrap(), "content\n");
    }
    // A plain repository has no keys.
    let plain = env.tmp.path().join("plain");
    let p = plain.to_str().unwrap();
    ok(&env, &[], &["--repo", p, "init"]);
    fails_with(&env, &[], &["--repo", p, "key", "list"], "is not encrypted");
}
