//! Retention on a server (issue 17) with the real binaries: the server's
//! policy per client, applied by the admin and by `serve` itself; clients
//! that may pin but not forget, prune or unpin; chunks two clients share.

mod harness;

use std::fs;
use std::path::Path;
use std::time::Duration;

use harness::{Env, Server, noise, raw_client, remote_of, show, wait_until};
use rewind_core::Repository;
use rewind_core::forget::{ForgetRequest, PruneRequest};
use rewind_core::retention::Policy;

/// The line a refused client sees.
const REFUSAL: &str = "retention on a server is the server's";

fn write(p: &Path, data: &[u8]) {
    fs::write(p, data).unwrap();
}

/// Upload what changed under `env.root`, once.
fn once(env: &Env) {
    env.ok(&["watch", env.root.to_str().unwrap(), "--once"]);
}

/// `file` of `env` as restored at `at`.
fn restored(env: &Env, file: &Path, at: &str) -> Vec<u8> {
    let dest = env
        .tmp
        .path()
        .join(format!("out-{}", jiff::Timestamp::now().as_nanosecond()));
    env.restore_to_ok(file, at, &dest);
    fs::read(&dest).unwrap()
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", show(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {}", show(out)))
}

fn report_of<'a>(reports: &'a serde_json::Value, client: &str) -> &'a serde_json::Value {
    reports
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["client"] == client)
        .unwrap_or_else(|| panic!("no report for {client}: {reports:#}"))
}

#[test]
fn a_clients_policy_thins_its_history_only_and_chunks_another_client_needs_stay() {
    let alice = Env::new();
    let bob = Env::new();
    let mut srv =
        Server::start_new_serving(&alice.tmp.path().join("srv"), &["--retention-every", "0s"]);
    alice.enroll(&srv, "alice");
    bob.enroll(&srv, "bob");
    // The same content on both machines, then Alice's own twice over.
    let shared = noise(300 << 10, 1);
    let (a_file, b_file) = (alice.root.join("data.bin"), bob.root.join("data.bin"));
    let b_note = bob.root.join("note.txt");
    write(&a_file, &shared);
    write(&b_file, &shared);
    write(&b_note, b"bob 0");
    once(&alice);
    once(&bob);
    let bob_t0 = bob.now();
    let mut alice_states = vec![shared.clone()];
    for seed in [2, 3] {
        let s = noise(300 << 10, seed);
        write(&a_file, &s);
        once(&alice);
        alice_states.push(s);
    }
    write(&b_note, b"bob 1");
    once(&bob);
    let a_versions = alice.versions_json(&a_file);
    assert_eq!(a_versions.len(), 3);
    // The chunks of Alice's middle state, which only she ever had.
    let middle: Vec<rewind_core::ChunkId> = a_versions[1]["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().parse().unwrap())
        .collect();
    assert!(!middle.is_empty());
    let bob_before = (bob.versions_json(&b_file), bob.versions_json(&b_note));
    assert_eq!(bob_before.1.len(), 2);

    let out = srv.cmd(&["client", "policy", "alice", "all 1s"]);
    assert!(out.status.success(), "{}", show(&out));
    let list = json_of(&srv.cmd(&["client", "list", "--json"]));
    let row = |n: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(row("alice")["policy"], "all 1s", "{list:#}");
    assert_eq!(row("alice")["policy_is_default"], false, "{list:#}");
    assert_eq!(
        row("bob")["policy"],
        rewind_core::retention::DEFAULT_POLICY,
        "{list:#}"
    );
    assert_eq!(row("bob")["policy_is_default"], true, "{list:#}");
    let text = String::from_utf8(srv.cmd(&["client", "list"]).stdout).unwrap();
    assert!(text.contains("all 1s"), "{text}");
    // A policy that does not parse changes nothing, in one line.
    let out = srv.cmd(&["client", "policy", "alice", "weekly, daily"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);

    // While it serves, the server keeps its repository to itself.
    let out = srv.cmd(&["forget"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use by a running rewind-server"),
        "{}",
        show(&out)
    );
    std::thread::sleep(Duration::from_millis(1500));
    srv.stop();

    let dry = json_of(&srv.cmd(&["forget", "--dry-run", "--json"]));
    assert!(
        report_of(&dry, "alice")["versions_forgotten"]
            .as_u64()
            .unwrap()
            >= 2,
        "{dry:#}"
    );
    let f = json_of(&srv.cmd(&["forget", "--json"]));
    assert!(
        report_of(&f, "alice")["versions_forgotten"]
            .as_u64()
            .unwrap()
            >= 2,
        "{f:#}"
    );
    assert_eq!(report_of(&f, "bob")["versions_forgotten"], 0, "{f:#}");
    let only = json_of(&srv.cmd(&["forget", "--client", "bob", "--json"]));
    assert_eq!(only.as_array().unwrap().len(), 1, "{only:#}");
    // Two phases: what is unused is condemned, then deleted once the
    // grace time (none here) has passed.
    let p1 = json_of(&srv.cmd(&["prune", "--grace", "0s", "--json"]));
    assert!(p1["packs_condemned"].as_u64().unwrap() > 0, "{p1:#}");
    let p2 = json_of(&srv.cmd(&["prune", "--grace", "0s", "--json"]));
    assert!(
        p2["bytes_freed"].as_u64().unwrap() > 0,
        "{p1:#} then {p2:#}"
    );
    let v = srv.cmd(&["verify"]);
    assert!(v.status.success(), "{}", show(&v));

    srv.start();
    // Alice: her newest state only, exact.
    assert_eq!(alice.versions_json(&a_file).len(), 1);
    assert_eq!(restored(&alice, &a_file, "now"), alice_states[2]);
    // Bob: untouched, and the content he shared with Alice byte-identical.
    assert_eq!(
        (bob.versions_json(&b_file), bob.versions_json(&b_note)),
        bob_before
    );
    assert_eq!(restored(&bob, &b_file, "now"), shared);
    assert_eq!(restored(&bob, &b_note, &bob_t0), b"bob 0");

    // Content pruned from the server is asked for again, never taken as
    // present (though Alice's list of her chunks still names it): she
    // goes back to a state whose chunks are gone.
    let mut asked = remote_of(&alice).missing_chunks(&middle).unwrap();
    asked.sort();
    let mut want = middle.clone();
    want.sort();
    assert_eq!(asked, want, "pruned chunks are missing to their owner");
    write(&a_file, &alice_states[1]);
    once(&alice);
    assert_eq!(restored(&alice, &a_file, "now"), alice_states[1]);
    let out = alice.run(&["verify"]);
    assert!(out.status.success(), "{}", show(&out));
    srv.stop();
    let v = srv.cmd(&["verify"]);
    assert!(v.status.success(), "{}", show(&v));
}

#[test]
fn a_client_may_pin_but_not_forget_prune_or_unpin_and_its_pins_outlive_the_servers_forget() {
    let env = Env::new();
    let mut srv = Server::start_new_serving(
        &env.tmp.path().join("srv"),
        &["--retention-every", "1s", "--prune-grace", "2s"],
    );
    env.enroll(&srv, "laptop");
    let file = env.root.join("f.bin");
    let mut states = Vec::new();
    for seed in 0..4 {
        let s = noise(64 << 10, 100 + seed);
        write(&file, &s);
        once(&env);
        states.push((env.now(), s));
    }
    let pinned_at = states[1].0.clone();
    let pin = env.json(&["pin", "--at", &pinned_at, "--label", "before", "--json"]);
    let pins = env.json(&["pins", "--json"]);
    assert_eq!(pins["pins"][0]["id"], pin["id"], "{pins:#}");
    assert_eq!(pins["pins"][0]["label"], "before", "{pins:#}");

    // The command refuses, in one line.
    let id = pin["id"].to_string();
    for args in [vec!["forget"], vec!["prune"], vec!["unpin", &id]] {
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(REFUSAL), "{args:?}: {}", show(&out));
        assert_eq!(err.lines().count(), 1, "{args:?}: {}", show(&out));
    }
    // And so does the server, whatever a client sends.
    let remote = remote_of(&env);
    let now = rewind_core::Timestamp::now();
    let e = remote
        .forget(
            "laptop",
            &ForgetRequest::new(Policy::parse("all 1s").unwrap(), now),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("403") && e.contains(REFUSAL), "{e}");
    let e = remote
        .prune(&PruneRequest::default(), &mut || Ok(Vec::new()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("403") && e.contains(REFUSAL), "{e}");
    let e = remote.unpin("laptop", 1).unwrap_err().to_string();
    assert!(e.contains("403") && e.contains(REFUSAL), "{e}");
    let key = fs::read_to_string(env.tmp.path().join("config/rewind/client.key")).unwrap();
    for route in ["/v1/forget", "/v1/prune", "/v1/unpin"] {
        let resp = raw_client(&srv)
            .post(format!("{}{route}", srv.url))
            .header("Authorization", format!("Bearer laptop:{}", key.trim()))
            .body(Vec::new())
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 403, "{route}");
        assert!(resp.text().unwrap().contains(REFUSAL), "{route}");
    }
    assert_eq!(remote.pins("laptop").unwrap().len(), 1);
    assert_eq!(env.versions_json(&file).len(), 4);

    // The server thins by its own policy, by itself, while the client
    // goes on uploading: every upload is kept whole.
    let out = srv.cmd(&["client", "policy", "laptop", "all 1s"]);
    assert!(out.status.success(), "{}", show(&out));
    let mut last = states[3].1.clone();
    for seed in 4..10 {
        last = noise(64 << 10, 100 + seed);
        write(&file, &last);
        once(&env);
        assert_eq!(restored(&env, &file, "now"), last, "upload {seed}");
    }
    wait_until("the server's own forget and prune", || {
        srv.log().contains("retention: forgot versions") && srv.log().contains("pruned")
    });
    // Two left: the pinned state and the newest.
    std::thread::sleep(Duration::from_millis(1500));
    wait_until("the history thinned to the pin and the newest", || {
        env.versions_json(&file).len() == 2
    });
    assert_eq!(restored(&env, &file, &pinned_at), states[1].1);
    assert_eq!(restored(&env, &file, "now"), last);
    let pins = env.json(&["pins", "--json"]);
    assert_eq!(pins["pins"][0]["id"], pin["id"], "{pins:#}");
    // `status` shows the server's policy.
    let st = env.json(&["status", "--json"]);
    assert!(st.to_string().contains("all 1s"), "{st:#}");
    let out = env.run(&["verify"]);
    assert!(out.status.success(), "{}", show(&out));
    srv.stop();
    let v = srv.cmd(&["verify"]);
    assert!(v.status.success(), "{}", show(&v));
}

/// A dump job's runs on a server are thinned by the policy the server's
/// admin gave that job (not the one in the client's configuration), and a
/// failed run never counts as a kept one.
#[test]
fn a_dump_jobs_runs_are_thinned_by_its_server_policy_and_a_failed_run_never_counts() {
    let env = Env::new();
    let mut srv =
        Server::start_new_serving(&env.tmp.path().join("srv"), &["--retention-every", "0s"]);
    env.enroll(&srv, "laptop");
    let said = env.tmp.path().join("said");
    let fail = env.tmp.path().join("fail");
    let cfg_path = env.config_file();
    let mut cfg = fs::read_to_string(&cfg_path).unwrap();
    // The client's own setting would keep one run: the server ignores it.
    cfg.push_str(&format!(
        "\n[[dump]]\nname = \"db\"\nkind = \"command\"\nretention = \"last 1\"\n\
         command = [\"sh\", \"-c\", \"cat {}; test ! -e {}\"]\n",
        said.display(),
        fail.display()
    ));
    fs::write(&cfg_path, cfg).unwrap();
    // Runs 0 to 4: ok, ok, failed, ok, failed.
    let oks = [true, true, false, true, false];
    for (n, ok) in oks.iter().enumerate() {
        write(&said, format!("run {n}\n").as_bytes());
        if *ok {
            let _ = fs::remove_file(&fail);
        } else {
            write(&fail, b"");
        }
        let out = env.run(&["dump", "run", "db", "--json"]);
        assert_eq!(out.status.success(), *ok, "run {n}: {}", show(&out));
    }
    let runs = |env: &Env| -> Vec<(u64, bool)> {
        let vs = env.json(&["dump", "versions", "db", "--json"]);
        vs["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["seq"].as_u64().unwrap(), v["ok"].as_bool().unwrap()))
            .collect()
    };
    let all = runs(&env);
    assert_eq!(all.iter().map(|r| r.1).collect::<Vec<_>>(), oks, "{all:?}");

    let out = srv.cmd(&["client", "policy", "laptop", "last 2", "--dump", "db"]);
    assert!(out.status.success(), "{}", show(&out));
    let list = json_of(&srv.cmd(&["client", "list", "--json"]));
    assert_eq!(list[0]["dump_policies"]["db"], "last 2", "{list:#}");
    srv.stop();
    let f = json_of(&srv.cmd(&["forget", "--client", "laptop", "--json"]));
    assert_eq!(report_of(&f, "laptop")["versions_forgotten"], 2, "{f:#}");
    srv.start();
    // The last two successful runs (1 and 3) and the failure after the
    // newest success (4); run 2 failed, so it is not one of the two, and
    // run 0 is older than both.
    let left = runs(&env);
    assert_eq!(left, vec![all[1], all[3], all[4]], "{all:?}");
    let out = env.ok(&["dump", "restore", "db", "--at", "now"]);
    assert_eq!(out, "run 3\n");
}

/// A chunk the server told a client is stored does not disappear before
/// the version that needs it commits, though the server prunes meanwhile:
/// the unused pack is only condemned (its chunk "missing" from then on),
/// the commit naming the chunk is taken, and the next prune revives it.
#[test]
fn a_chunk_told_stored_outlives_the_servers_prune_until_its_version_commits() {
    let env = Env::new();
    let srv = Server::start_new_serving(
        &env.tmp.path().join("srv"),
        &["--retention-every", "1s", "--prune-grace", "5s"],
    );
    env.enroll(&srv, "laptop");
    let file = env.root.join("f.bin");
    let old = noise(200 << 10, 7);
    write(&file, &old);
    once(&env);
    write(&file, &noise(200 << 10, 8));
    once(&env);
    let remote = remote_of(&env);
    let path = file.to_str().unwrap().as_bytes();
    let v1 = remote.versions_of("laptop", path).unwrap().remove(0);
    let ids: Vec<rewind_core::ChunkId> = v1.chunk_refs().map(|c| c.id).collect();
    // Told stored, as an uploader about to commit a version would be.
    assert!(remote.missing_chunks(&ids).unwrap().is_empty());

    // The server forgets the old state and, once its pack is past the
    // grace time, condemns it: its chunks are missing from then on.
    let out = srv.cmd(&["client", "policy", "laptop", "all 1s"]);
    assert!(out.status.success(), "{}", show(&out));
    wait_until("the old content's pack condemned", || {
        remote.missing_chunks(&ids).unwrap().len() == ids.len()
    });
    // The commit that relied on the chunks is taken, and restores whole.
    let mut v = v1.clone();
    v.seq = 1_000_000;
    v.observed_at = rewind_core::Timestamp::now();
    remote.commit_versions(vec![v]).unwrap();
    assert_eq!(restored(&env, &file, "now"), old);
    // The next prune revives the pack instead of deleting it.
    wait_until("the condemned pack revived", || {
        remote.missing_chunks(&ids).unwrap().is_empty()
    });
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(restored(&env, &file, "now"), old);
    let out = env.run(&["verify"]);
    assert!(out.status.success(), "{}", show(&out));
}
