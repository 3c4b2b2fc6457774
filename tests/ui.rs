//! The web UI (issue 18), end to end: a real agent on a temporary tree,
//! `rewind ui --no-open`'s URL opened in a real browser (Debian's
//! Chromium, driven over WebDriver by ChromeDriver; docs/decisions.md,
//! "Browser tests over WebDriver from Rust"), and the refusals that keep
//! other sites and other users out, checked with raw HTTP requests that a
//! browser would never let a page send.
//!
//! `scripts/test` installs `chromium` and `chromium-driver`. Without them
//! the browser test says it is skipped, except under CI, where it fails.

mod harness;

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
use fantoccini::{Client, ClientBuilder, Locator};
use harness::*;
use serde_json::{Value, json};

/// The login URL of the agent running for `env`.
fn login_url(env: &Env) -> String {
    let url = env.ok(&["ui", "--no-open"]).trim().to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("/auth?token="),
        "{url}"
    );
    url
}

/// `http://127.0.0.1:PORT` of a login URL.
fn origin_of(url: &str) -> String {
    url[..url.find("/auth").unwrap()].to_string()
}

/// The id the UI gives a path (URL-safe base64 of its bytes).
fn id_of(p: &Path) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rewind_core::path::to_bytes(p))
}

/// A plain HTTP client that follows no redirects (reqwest wants a TLS
/// setup even for plain HTTP; it is never used).
fn http() -> reqwest::blocking::Client {
    let (tls, _) = rewind_remote::tls::client_config(None);
    reqwest::blocking::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Log in with a token: the session cookie and request key.
fn log_in(url: &str) -> (String, String) {
    let r = http().get(url).send().unwrap();
    assert_eq!(r.status(), 303, "login: {:?}", r.text());
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    let cookie = cookie.split(';').next().unwrap().to_string();
    let key = r.headers()["location"]
        .to_str()
        .unwrap()
        .strip_prefix("/#key=")
        .expect("the key in the fragment")
        .to_string();
    (cookie, key)
}

#[test]
fn the_ui_refuses_other_hosts_missing_cookies_cross_site_posts_and_reused_tokens() {
    let env = Env::new();
    let file = env.root.join("kept.txt");
    fs::write(&file, b"original\n").unwrap();
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    env.wait_versions(&file, 1);
    let at = env.now();
    fs::write(&file, b"changed later\n").unwrap();
    env.wait_versions(&file, 2);

    let url = login_url(&env);
    let origin = origin_of(&url);
    let port = origin.rsplit(':').next().unwrap();
    let c = http();

    // DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends
    // its own name as Host; the token is not spent by the refusal.
    let r = c
        .get(&url)
        .header("host", format!("evil.example:{port}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let (cookie, key) = log_in(&url);
    // The one-time token, used again.
    let r = c.get(&url).send().unwrap();
    assert_eq!(r.status(), 403, "a reused token must be refused");
    assert!(r.headers().get("set-cookie").is_none());

    let status = format!("{origin}/api/status");
    let ok = c
        .get(&status)
        .header("cookie", &cookie)
        .header("x-rewind-key", &key)
        .send()
        .unwrap();
    assert_eq!(ok.status(), 200);
    let v: Value = serde_json::from_slice(&ok.bytes().unwrap()).unwrap();
    assert_eq!(v["agent"]["running"], true);
    // No cookie; the cookie without the key (as a browser sends it to
    // another port of this host); a wrong key; the right ones under
    // another Host.
    for (cookie_h, key_h, host, want) in [
        (None, Some(key.as_str()), None, 401),
        (Some(cookie.as_str()), None, None, 401),
        (Some(cookie.as_str()), Some(cookie.as_str()), None, 401),
        (
            Some(cookie.as_str()),
            Some(key.as_str()),
            Some(format!("attacker.example:{port}")),
            403,
        ),
    ] {
        let mut r = c.get(&status);
        if let Some(v) = cookie_h {
            r = r.header("cookie", v);
        }
        if let Some(v) = key_h {
            r = r.header("x-rewind-key", v);
        }
        if let Some(h) = &host {
            r = r.header("host", h);
        }
        assert_eq!(
            r.send().unwrap().status(),
            want,
            "cookie {cookie_h:?} key {key_h:?} host {host:?}"
        );
    }

    // Cross-site restores (CSRF), with a valid session: another site,
    // another port of this host, no Origin at all, a form's body.
    let at_ns = at.parse::<jiff::Timestamp>().unwrap().as_nanosecond();
    let body = json!({ "ids": [id_of(&file)], "at": at_ns.to_string() }).to_string();
    for (origin_h, site, ctype, want) in [
        (
            Some("http://evil.example"),
            Some("cross-site"),
            "application/json",
            403,
        ),
        (
            Some("http://127.0.0.1:1"),
            Some("same-site"),
            "application/json",
            403,
        ),
        (None, None, "application/json", 403),
        (
            Some(origin.as_str()),
            Some("same-origin"),
            "text/plain",
            415,
        ),
    ] {
        let mut r = c
            .post(format!("{origin}/api/restore"))
            .header("cookie", &cookie)
            .header("x-rewind-key", &key)
            .header("content-type", ctype)
            .body(body.clone());
        if let Some(o) = origin_h {
            r = r.header("origin", o);
        }
        if let Some(s) = site {
            r = r.header("sec-fetch-site", s);
        }
        assert_eq!(
            r.send().unwrap().status(),
            want,
            "origin {origin_h:?} site {site:?}"
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        fs::read(&file).unwrap(),
        b"changed later\n",
        "no refused request restored anything"
    );
    // The same request from the UI's own origin goes through.
    let r = c
        .post(format!("{origin}/api/restore"))
        .header("cookie", &cookie)
        .header("x-rewind-key", &key)
        .header("content-type", "application/json")
        .header("origin", &origin)
        .header("sec-fetch-site", "same-origin")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_until("the restore from the UI's origin", || {
        fs::read(&file).unwrap() == b"original\n"
    });
    agent.stop();
}

/// ChromeDriver on a free port, stopped on drop.
struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
    profile_dir: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Chromium and ChromeDriver, or `None` (with a note) when they are not
/// installed; under CI their absence fails the test.
fn driver() -> Option<Driver> {
    let have = |c: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("chromedriver") || !have("chromium") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the browser test: scripts/test installs chromium and chromium-driver"
        );
        eprintln!("skipped: needs chromium and chromedriver (scripts/test installs them)");
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .env("TZ", "UTC")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let profile_dir = profile.path().to_string_lossy().into_owned();
    let d = Driver {
        child,
        port,
        _profile: profile,
        profile_dir,
    };
    wait_until("chromedriver listening", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Some(d)
}

async fn browser(d: &Driver) -> Client {
    // Headless as root on a machine without network: the flags
    // docs/decisions.md lists, and a fresh profile.
    let caps = json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1400,1000",
                format!("--user-data-dir={}", d.profile_dir),
            ],
        }
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", d.port))
        .await
        .expect("a Chromium session through chromedriver")
}

/// Wait until `f` finds something (polling, [`DEADLINE`]).
async fn until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// With `REWIND_UI_SCREENSHOTS=DIR`, a PNG of the page as `DIR/NAME.png`
/// (for looking at the UI, not for asserting on it).
async fn snap(c: &Client, name: &str) {
    if let Some(dir) = std::env::var_os("REWIND_UI_SCREENSHOTS") {
        let png = c.screenshot().await.unwrap();
        fs::write(Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    }
}

async fn text_of(c: &Client, css: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

async fn click(c: &Client, css: &str) {
    let e = until(css, || async { c.find(Locator::Css(css)).await.ok() }).await;
    until(&format!("{css} clickable"), || async {
        e.click().await.ok()
    })
    .await;
}

#[test]
fn a_file_deleted_since_is_found_on_the_timeline_and_restored_through_the_ui() {
    let Some(d) = driver() else { return };
    let env = Env::new();
    let docs = env.root.join("docs");
    fs::create_dir_all(&docs).unwrap();
    let report = docs.join("report.bin");
    let content = noise(300_000, 18);
    fs::write(&report, &content).unwrap();
    fs::write(docs.join("stays.txt"), b"still here\n").unwrap();
    let agent = env.watch(&[]);
    agent.wait_first_pass();
    env.wait_versions(&report, 1);
    let captured: i128 = env.versions_json(&report)[0]["time_ns"]
        .as_i64()
        .unwrap()
        .into();
    // A pin at that moment (through the running agent), for the overview's
    // retention card and the timeline's marks.
    let captured_at = env.versions_json(&report)[0]["time"]
        .as_str()
        .unwrap()
        .to_string();
    env.ok(&["pin", "--at", &captured_at, "--label", "before cleanup"]);
    // Seconds apart, so a click on the timeline lands between the two.
    std::thread::sleep(Duration::from_secs(5));
    fs::remove_file(&report).unwrap();
    env.wait_versions_where(&report, |vs| {
        vs.last().is_some_and(|v| v["deleted"] == true)
    });
    let deleted: i128 = env.versions_json(&report).last().unwrap()["time_ns"]
        .as_i64()
        .unwrap()
        .into();
    let url = login_url(&env);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = browser(&d).await;
        c.goto(&url).await.unwrap();
        // The overview, live.
        let overview = until("the overview", || async {
            text_of(&c, "#overview")
                .await
                .filter(|t| t.contains("Protecting"))
        })
        .await;
        assert!(overview.contains(env.root.to_str().unwrap()), "{overview}");
        assert!(
            overview.contains("Healthy"),
            "protection is healthy: {overview}"
        );
        assert!(
            overview.contains("Retention") && overview.contains("(before cleanup)"),
            "the pin in the retention card: {overview}"
        );
        snap(&c, "overview").await;

        // Search all history: the file is there, deleted, with when it
        // last existed.
        click(&c, "#nav-search").await;
        let q = until("the search box", || async {
            c.find(Locator::Css("#search-q")).await.ok()
        })
        .await;
        q.send_keys("report").await.unwrap();
        click(&c, "#search-go").await;
        let row = format!(
            "#search-results tr[data-path=\"{}\"]",
            report.to_str().unwrap()
        );
        let state = until("the search result", || async {
            text_of(&c, &format!("{row} td.state")).await
        })
        .await;
        assert!(state.starts_with("deleted "), "{state}");
        let last = text_of(&c, &format!("{row} td.last")).await.unwrap();
        assert!(last.starts_with("20"), "the last time it existed: {last}");
        snap(&c, "search").await;

        // The timeline: ten minutes around now, one bar per 10 s; a
        // click between the capture and the deletion.
        click(&c, "#nav-browse").await;
        click(&c, "#zoom button[data-zoom=\"10 min\"]").await;
        let svg = until("the timeline", || async {
            let e = c.find(Locator::Css("#timeline-svg")).await.ok()?;
            let (from, to) = (e.attr("data-from").await.ok()??, e.attr("data-to").await.ok()??);
            (from.parse::<i128>().ok()? <= captured).then_some(())?;
            Some((e, from.parse::<i128>().unwrap(), to.parse::<i128>().unwrap()))
        })
        .await;
        let (e, from, to) = svg;
        until("the pin on the timeline", || async {
            c.find(Locator::Css("#timeline-svg circle.pin")).await.ok()
        })
        .await;
        let title = c
            .execute(
                "return document.querySelector('#timeline-svg circle.pin title').textContent",
                vec![],
            )
            .await
            .unwrap();
        assert!(
            title.as_str().is_some_and(|t| t.contains("before cleanup")),
            "the pin's label on the timeline: {title}"
        );
        let (_, _, width, height) = e.rectangle().await.unwrap();
        let moment = captured + (deleted - captured) / 2;
        let x = (moment - from) as f64 / (to - from) as f64 * width - width / 2.0;
        let mouse = MouseActions::new("mouse".into())
            .then(PointerAction::MoveToElement {
                element: e.clone(),
                duration: None,
                x,
                y: height / 4.0,
            })
            .then(PointerAction::Down {
                button: MOUSE_BUTTON_LEFT,
            })
            .then(PointerAction::Up {
                button: MOUSE_BUTTON_LEFT,
            });
        c.perform_actions(mouse).await.unwrap();
        let at: i128 = until("the moment picked on the timeline", || async {
            let u = c.current_url().await.ok()?;
            let frag = u.fragment()?.to_string();
            let at = frag.split("at=").nth(1)?.split('&').next()?.to_string();
            at.parse().ok()
        })
        .await;
        assert!(
            at > captured && at < deleted,
            "the click picks a moment between the capture ({captured}) and the deletion ({deleted}): {at}"
        );

        // Down the tree as it was then, to the file deleted since.
        let root_row = format!("#tree tr[data-name=\"{}\"] a.name", env.root.to_str().unwrap());
        click(&c, &root_row).await;
        click(&c, "#tree tr[data-name=\"docs\"] a.name").await;
        let size = until("report.bin in the tree at that moment", || async {
            text_of(&c, "#tree tr[data-name=\"report.bin\"] td.num").await
        })
        .await;
        assert_eq!(size, "293.0 KiB");
        snap(&c, "browse").await;
        click(&c, "#tree tr[data-name=\"report.bin\"] input.pick").await;
        click(&c, "#restore-selected").await;
        // In place (the default): the confirmation says what changes.
        click(&c, "#restore-check").await;
        let plan = until("the restore plan", || async {
            text_of(&c, "#restore-plan")
                .await
                .filter(|t| t.contains("overwritten"))
        })
        .await;
        assert!(plan.contains("1 files (293.0 KiB) to restore: 1 created, 0 overwritten"), "{plan}");
        assert!(plan.contains("Nothing is deleted"), "{plan}");
        snap(&c, "plan").await;
        click(&c, "#restore-confirm").await;
        let done = until("the restore's end", || async {
            let e = c.find(Locator::Css("#restore-status")).await.ok()?;
            e.attr("data-state").await.ok()??;
            e.text().await.ok()
        })
        .await;
        assert!(done.starts_with("Restore done: 1 files"), "{done}");
        snap(&c, "restored").await;
        // The file's page: its versions, the preview of the restored one.
        click(&c, "#restore-close").await;
        c.goto(&format!(
            "{}/#/file?id={}",
            origin_of(&url),
            id_of(&docs.join("stays.txt"))
        ))
        .await
        .unwrap();
        let preview = until("the text preview", || async {
            text_of(&c, "#preview pre").await
        })
        .await;
        assert_eq!(preview, "still here");
        snap(&c, "file").await;
        c.close().await.unwrap();
    });
    assert_eq!(
        fs::read(&report).unwrap(),
        content,
        "the restored file is the file as it was"
    );
    agent.stop();
}

/// Protecting to a server, the UI answers from the server, for this
/// client only: its own files are listed and found, another client's
/// folder and names are not, even asked for by path.
#[test]
fn through_a_server_the_ui_shows_this_clients_history_only() {
    let alice = Env::new();
    let bob = Env::new();
    let srv = Server::start_new(&alice.tmp.path().join("srv"));
    alice.enroll(&srv, "alice");
    bob.enroll(&srv, "bob");
    let diary = alice.root.join("alice-diary.txt");
    fs::write(&diary, b"dear diary\n").unwrap();
    fs::write(bob.root.join("bob-notes.txt"), b"bob's\n").unwrap();
    bob.ok(&["watch", bob.root.to_str().unwrap(), "--once"]);
    let agent = alice.watch(&[]);
    agent.wait_first_pass();
    alice.wait_versions(&diary, 1);

    let url = login_url(&alice);
    let origin = origin_of(&url);
    let (cookie, key) = log_in(&url);
    let get = |route: &str| -> (u16, Value) {
        let r = http()
            .get(format!("{origin}{route}"))
            .header("cookie", &cookie)
            .header("x-rewind-key", &key)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let body = r.bytes().unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    };
    let (st, status) = get("/api/status");
    assert_eq!(st, 200);
    assert_eq!(status["client"], "alice", "{status}");
    assert!(
        status["agent"]["repository"]
            .as_str()
            .is_some_and(|r| r.starts_with("https://")),
        "the agent protects to the server: {status}"
    );
    let found = |q: &str| -> Vec<String> {
        let (st, v) = get(&format!("/api/search?q={q}"));
        assert_eq!(st, 200, "{v}");
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(found("diary"), vec!["alice-diary.txt"]);
    assert!(found("notes").is_empty(), "bob's names stay bob's");
    let (st, mine) = get(&format!("/api/tree?id={}", id_of(&alice.root)));
    assert_eq!(st, 200, "{mine}");
    assert!(mine.to_string().contains("alice-diary.txt"), "{mine}");
    let (_, theirs) = get(&format!("/api/tree?id={}", id_of(&bob.root)));
    assert!(
        !theirs.to_string().contains("bob-notes.txt"),
        "bob's folder, asked for by path: {theirs}"
    );
    agent.stop();
}
