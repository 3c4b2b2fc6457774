//! `rewind-server` against strangers and hostile clients (issue 21): the
//! real server on 127.0.0.1, attacked from other loopback addresses (on
//! Linux all of 127.0.0.0/8 is this machine, and each address is another
//! peer to the server), while a real client goes on working.
//!
//! Nothing here asserts a speed: timings are compared with each other,
//! and the mechanism behind them is checked through the server's counters.
//! The one absolute bound, a real client served within 2 s during a flood,
//! is the issue's, and is a liveness check (before issue 21 the answer
//! never came in 25 s).

mod harness;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use harness::{DEADLINE, Env, Server, metric, noise, raw_client_from, remote_of, show};
use rewind_core::{ChunkSink, EncodedChunk, Repository};

fn chunk(seed: u64) -> EncodedChunk {
    EncodedChunk::encode(&noise(64 << 10, seed))
}

/// A peer of its own: 127.0.`a`.`b`.
fn addr(a: u8, b: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, a, b))
}

/// The server's resident memory now and at its peak, in MiB.
fn memory(srv: &Server) -> (u64, u64) {
    let s = fs::read_to_string(format!("/proc/{}/status", srv.pid())).unwrap();
    let kb = |key: &str| -> u64 {
        s.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap()
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap()
    };
    (kb("VmRSS:") >> 10, kb("VmHWM:") >> 10)
}

type Request = reqwest::blocking::RequestBuilder;

/// Send `n` requests at once, spread over `clients`, and meanwhile run
/// `during`; the outcomes (status codes, or "error") counted.
fn flood<T>(
    clients: &[reqwest::blocking::Client],
    n: usize,
    make: impl Fn(&reqwest::blocking::Client, usize) -> Request + Sync,
    during: impl FnOnce() -> T,
) -> (BTreeMap<String, usize>, T) {
    let start = Barrier::new(n + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (start, make) = (&start, &make);
                let c = &clients[i % clients.len()];
                scope.spawn(move || {
                    let req = make(c, i);
                    start.wait();
                    match req.send() {
                        Ok(r) => r.status().as_u16().to_string(),
                        Err(e) => {
                            // What a transport error is, once, for the log.
                            static SAID: std::sync::Once = std::sync::Once::new();
                            SAID.call_once(|| eprintln!("  (a request failed: {e:?})"));
                            "error".to_string()
                        }
                    }
                })
            })
            .collect();
        start.wait();
        std::thread::sleep(Duration::from_millis(20));
        let out = during();
        let mut seen = BTreeMap::new();
        for h in handles {
            *seen.entry(h.join().unwrap()).or_insert(0) += 1;
        }
        (seen, out)
    })
}

#[test]
fn floods_of_strangers_leave_memory_bounded_and_a_real_client_served() {
    let env = Env::new();
    let srv = Server::start_new(&env.tmp.path().join("srv"));
    env.enroll(&srv, "laptop");
    // A pending client too: its name exists, its token is unknown to the
    // attacker.
    srv.add_client("pending");
    let real = remote_of(&env);
    real.stats().unwrap();
    let url = |r: &str| format!("{}{r}", srv.url);
    // Eight strangers, each on its own address.
    let strangers: Vec<_> = (0..8)
        .map(|i| raw_client_from(&srv, Some(addr(0, 10 + i))))
        .collect();
    let secret = |i: usize| hex_of(&noise(32, i as u64 + 7));
    let enroll_body = |i: usize| {
        let name = match i % 3 {
            0 => "laptop".to_string(),
            1 => "pending".to_string(),
            _ => format!("ghost{i}"),
        };
        serde_json::to_vec(&serde_json::json!({ "name": name, "token": secret(i) })).unwrap()
    };
    let mib = 1 << 20;
    type Make<'a> = Box<dyn Fn(&reqwest::blocking::Client, usize) -> Request + Sync + 'a>;
    let kinds: Vec<(&str, Make)> = vec![
        (
            "/metrics with wrong secrets",
            Box::new(|c, i| c.get(url("/metrics")).bearer_auth(secret(i))),
        ),
        (
            "/v1/enroll with wrong tokens",
            Box::new(|c, i| {
                c.post(url("/v1/enroll"))
                    .header("Content-Type", "application/json")
                    .body(enroll_body(i))
            }),
        ),
        (
            "/v1/enroll with 1 MiB bodies",
            Box::new(|c, _| c.post(url("/v1/enroll")).body(vec![b'{'; mib])),
        ),
        (
            "/v1/enroll with 1 MiB bodies of no stated length",
            Box::new(|c, _| {
                c.post(url("/v1/enroll")).body(reqwest::blocking::Body::new(
                    std::io::repeat(b'{').take(mib as u64),
                ))
            }),
        ),
        (
            "/v1/info naming an enrolled client with a wrong key",
            Box::new(|c, i| {
                c.get(url("/v1/info"))
                    .bearer_auth(format!("laptop:{}", secret(i)))
            }),
        ),
        (
            "/v1/chunks naming an enrolled client with a wrong key, 1 MiB bodies",
            Box::new(|c, i| {
                c.post(url("/v1/chunks"))
                    .bearer_auth(format!("laptop:{}", secret(i)))
                    .body(vec![0u8; mib])
            }),
        ),
    ];
    let mut report = Vec::new();
    let mut seed = 1_000;
    for (what, make) in &kinds {
        let (seen, took) = flood(&strangers, 200, make, || {
            // The real client uploads a chunk (ask, send, sync) meanwhile.
            seed += 1;
            let t = Instant::now();
            real.store_durably(&[chunk(seed)]).unwrap();
            t.elapsed()
        });
        let (rss, hwm) = memory(&srv);
        eprintln!(
            "{what}: {seen:?}; server RSS {rss} MiB, peak {hwm} MiB; real client's upload {took:?}"
        );
        for (status, n) in &seen {
            assert!(
                matches!(
                    status.as_str(),
                    "401" | "408" | "413" | "429" | "503" | "error"
                ),
                "{what}: {n} answers {status}: {seen:?}\n{}",
                srv.log()
            );
        }
        assert!(
            took < Duration::from_secs(2),
            "{what}: the real client waited {took:?}"
        );
        report.push((what, seen, rss, hwm, took));
    }
    let (_, hwm) = memory(&srv);
    assert!(hwm < 200, "the server's memory peaked at {hwm} MiB");
    // The floods were turned away before argon2: refused for the brake or
    // for want of a slot, never queued.
    let refused = metric(&srv, "rewind_throttled_total") + metric(&srv, "rewind_argon2_busy_total");
    let argon2 = metric(&srv, "rewind_argon2_total");
    eprintln!("refused before argon2: {refused}; argon2 runs in all: {argon2}");
    assert!(
        refused > 0 && argon2 < 5 * 200,
        "{refused} refused, {argon2} argon2"
    );
    assert!(!srv.log().contains("panicked"), "{}", srv.log());
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A TCP connection from `from` to `to`.
fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    let (IpAddr::V4(f), SocketAddr::V4(t)) = (from, to) else {
        panic!("IPv4 only")
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(std::net::SocketAddrV4::new(f, 0)),
    )
    .unwrap();
    connect(fd.as_raw_fd(), &SockaddrIn::from(t)).unwrap();
    TcpStream::from(fd)
}

/// What a silent peer does after connecting.
#[derive(Clone, Copy, Debug)]
enum Silence {
    /// Nothing at all: not even a TLS handshake.
    Tcp,
    /// A TLS handshake, then nothing.
    Tls,
    /// A TLS handshake and half an HTTP/1.1 request head.
    HalfHead,
    /// A TLS handshake, the HTTP/2 preface and settings, then no request.
    H2NoRequest,
}

/// A connection that goes silent after `how`; `None` when the server
/// closed it before the TLS handshake finished.
fn silent(srv: &Server, from: IpAddr, how: Silence) -> Option<TcpStream> {
    let to: SocketAddr = format!("127.0.0.1:{}", srv.port).parse().unwrap();
    let mut tcp = connect_from(from, to);
    if let Silence::Tcp = how {
        return Some(tcp);
    }
    let (mut cfg, _) = rewind_remote::tls::client_config(Some(&srv.fingerprint()));
    cfg.alpn_protocols = match how {
        Silence::H2NoRequest => vec![b"h2".to_vec()],
        _ => vec![b"http/1.1".to_vec()],
    };
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    tcp.set_read_timeout(Some(DEADLINE)).unwrap();
    while tls.is_handshaking() {
        if tls.complete_io(&mut tcp).is_err() {
            return None;
        }
    }
    let said: &[u8] = match how {
        Silence::HalfHead => b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
        Silence::H2NoRequest => {
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        }
        _ => b"",
    };
    if !said.is_empty() {
        tls.writer().write_all(said).unwrap();
        while tls.wants_write() {
            tls.write_tls(&mut tcp).unwrap();
        }
    }
    // The TLS state goes; the socket stays open and says no more.
    Some(tcp)
}

/// How long after `since` the server closed `tcp` (whatever it sent
/// first), or a panic after the deadline.
fn closed_after(mut tcp: TcpStream, since: Instant) -> Duration {
    tcp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return since.elapsed(),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return since.elapsed(),
        }
        assert!(
            since.elapsed() < DEADLINE,
            "a silent connection is still open"
        );
    }
}

#[test]
fn silent_connections_are_dropped_and_a_real_client_gets_in() {
    let env = Env::new();
    // Four connections in all, so four silent ones hold every slot.
    let srv = Server::start_new_serving(
        &env.tmp.path().join("srv"),
        &["--max-connections", "4", "--idle-timeout", "2"],
    );
    env.enroll(&srv, "laptop");
    for (i, how) in [
        Silence::Tcp,
        Silence::Tls,
        Silence::HalfHead,
        Silence::H2NoRequest,
    ]
    .into_iter()
    .enumerate()
    {
        // A new client each time: its pooled connection from the round
        // before has been closed as idle.
        let real = remote_of(&env);
        let since = Instant::now();
        let held: Vec<TcpStream> = (0..4)
            .map(|j| silent(&srv, addr(1, (10 * i + j) as u8 + 1), how).expect("handshake"))
            .collect();
        let t = Instant::now();
        real.stats().unwrap();
        let waited = t.elapsed();
        let closed: Vec<Duration> = held.into_iter().map(|c| closed_after(c, since)).collect();
        eprintln!(
            "{how:?}: 4 silent connections held all 4 slots; closed after {closed:?}; \
             the real client waited {waited:?}"
        );
    }
    let idle = metric(&srv, "rewind_connections_idle_closed_total");
    let handshakes = metric(&srv, "rewind_tls_failures_total");
    eprintln!("closed as idle: {idle}; TLS handshakes that failed or timed out: {handshakes}");
    // TCP only: 4 handshake timeouts; TLS then nothing, and an HTTP/2
    // connection without requests: 8 idle closures (plus the real
    // client's own idle connections); half a head: hyper's header timeout.
    assert!(handshakes >= 4, "{handshakes}");
    assert!(idle >= 8, "{idle}");
}

#[test]
fn one_address_cannot_take_every_connection() {
    let env = Env::new();
    let srv = Server::start_new_serving(
        &env.tmp.path().join("srv"),
        &[
            "--max-connections",
            "8",
            "--max-connections-per-address",
            "3",
            "--idle-timeout",
            "600",
        ],
    );
    env.enroll(&srv, "laptop");
    let stranger = addr(2, 1);
    let held: Vec<TcpStream> = (0..3)
        .map(|_| silent(&srv, stranger, Silence::Tls).expect("within its limit"))
        .collect();
    // The fourth from that address is closed before the handshake ends,
    // long before any timeout (600 s idle, 10 s handshake).
    let t = Instant::now();
    assert!(silent(&srv, stranger, Silence::Tls).is_none());
    eprintln!(
        "a fourth connection from one address: closed after {:?}",
        t.elapsed()
    );
    assert_eq!(metric(&srv, "rewind_connections_refused_total"), 1);
    // Another address, and the real client, get in.
    assert!(silent(&srv, addr(2, 2), Silence::Tls).is_some());
    remote_of(&env).stats().unwrap();
    drop(held);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median and 90th percentile, in milliseconds.
fn spread(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.9))
}

/// Two distributions of the same work: their medians within `factor` of
/// each other. Before issue 21 the pairs below differed 7 and 15 times.
fn alike(what: &str, a: (&str, Vec<f64>), b: (&str, Vec<f64>), factor: f64) {
    let (ma, pa) = spread(a.1);
    let (mb, pb) = spread(b.1);
    eprintln!(
        "{what}: {}: median {ma:.2} ms, p90 {pa:.2} ms; {}: median {mb:.2} ms, p90 {pb:.2} ms",
        a.0, b.0
    );
    assert!(
        ma < mb * factor && mb < ma * factor,
        "{what}: medians {ma:.2} and {mb:.2} ms"
    );
}

const TRIALS: u64 = 200;

/// A server with two enrolled clients, alice and bob.
fn alice_and_bob() -> (Env, Env, Server) {
    let a = Env::new();
    let b = Env::new();
    let srv = Server::start_new(&a.tmp.path().join("srv"));
    a.enroll(&srv, "alice");
    b.enroll(&srv, "bob");
    (a, b, srv)
}

#[test]
fn a_chunk_another_client_stored_costs_what_a_new_one_costs() {
    let (a, b, srv) = alice_and_bob();
    let (alice, bob) = (remote_of(&a), remote_of(&b));
    // Warm up the connections and the keys.
    for s in 0..5 {
        bob.store_durably(&[chunk(1_000_000 + s)]).unwrap();
    }
    let written = metric(&srv, "rewind_chunks_written_total");
    let timed = |c: &EncodedChunk| {
        let t = Instant::now();
        bob.store_durably(std::slice::from_ref(c)).unwrap();
        ms(t.elapsed())
    };
    let (mut theirs, mut new) = (Vec::new(), Vec::new());
    for i in 0..TRIALS {
        let (known, fresh) = (chunk(2 * i), chunk(2 * i + 1));
        alice.store_durably(std::slice::from_ref(&known)).unwrap();
        // Bob uploads as a client does (ask which are missing, send, sync):
        // content Alice stored, and content nobody has, in turn.
        if i % 2 == 0 {
            theirs.push(timed(&known));
            new.push(timed(&fresh));
        } else {
            new.push(timed(&fresh));
            theirs.push(timed(&known));
        }
    }
    alike(
        "bob's upload and sync of a 64 KiB chunk",
        ("stored by alice", theirs),
        ("stored by nobody", new),
        2.0,
    );
    // The mechanism: every chunk Bob had not uploaded was written, Alice's
    // as much as the new ones.
    assert_eq!(
        metric(&srv, "rewind_chunks_written_total") - written,
        3 * TRIALS
    );
    // And Bob is told nothing else: Alice's chunks were "missing" to him
    // until he sent them himself.
    assert!(bob.missing_chunks(&[chunk(1).id]).unwrap().is_empty());
    assert_eq!(
        bob.missing_chunks(&[chunk(10 * TRIALS).id]).unwrap().len(),
        1
    );
}

#[test]
fn a_wrong_key_for_an_enrolled_name_costs_what_an_unknown_name_costs() {
    let env = Env::new();
    let srv = Server::start_new(&env.tmp.path().join("srv"));
    env.enroll(&srv, "laptop");
    // The real client's key is checked and remembered: the worst case,
    // where a wrong key could be told apart from the right one cheaply.
    remote_of(&env).stats().unwrap();
    let argon2 = metric(&srv, "rewind_argon2_total");
    let (mut enrolled, mut unknown) = (Vec::new(), Vec::new());
    let mut peer = 0u32;
    let mut try_as = |name: &str| {
        // A peer of its own for each attempt, as a guesser with many
        // addresses has: the brake does not hold any of them back.
        peer += 1;
        let c = raw_client_from(
            &srv,
            Some(addr(10 + (peer / 200) as u8, (peer % 200) as u8 + 1)),
        );
        c.get(format!("{}/healthz", srv.url)).send().unwrap();
        let t = Instant::now();
        let r = c
            .get(format!("{}/v1/info", srv.url))
            .bearer_auth(format!("{name}:{}", hex_of(&noise(32, peer as u64))))
            .send()
            .unwrap();
        let took = ms(t.elapsed());
        assert_eq!(r.status().as_u16(), 401, "{name}");
        took
    };
    for i in 0..TRIALS {
        let ghost = format!("ghost-{i}");
        if i % 2 == 0 {
            enrolled.push(try_as("laptop"));
            unknown.push(try_as(&ghost));
        } else {
            unknown.push(try_as(&ghost));
            enrolled.push(try_as("laptop"));
        }
    }
    alike(
        "a refused /v1/info",
        ("enrolled name, wrong key", enrolled),
        ("unknown name", unknown),
        2.0,
    );
    // The mechanism: one argon2 for every refusal, whatever the name.
    assert_eq!(metric(&srv, "rewind_argon2_total") - argon2, 2 * TRIALS);
}

/// `rewind enroll` with the token on stdin.
fn enroll_stdin(env: &Env, srv: &Server, name: &str, token: &str) -> std::process::Output {
    let mut child = env
        .command()
        .args(["enroll", &srv.url, "--name", name, "--fingerprint"])
        .arg(srv.fingerprint())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{token}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// An enrollment refused with exit 1 and `says` on stderr.
fn refused(out: &std::process::Output, says: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", show(out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(says),
        "{}",
        show(out)
    );
}

#[test]
fn expired_and_used_tokens_are_refused_with_their_reason() {
    let env = Env::new();
    let srv = Server::start_new(&env.tmp.path().join("srv"));
    // The token once, on stdout only.
    let out = srv.cmd(&["client", "add", "laptop", "--expires", "1s"]);
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let token = stdout.trim().to_string();
    assert_eq!(stdout, format!("{token}\n"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains(&token)
            && stderr.contains("rewind enroll")
            && !stderr.contains("--token "),
        "{}",
        show(&out)
    );
    std::thread::sleep(Duration::from_millis(1500));
    let list: serde_json::Value =
        serde_json::from_slice(&srv.cmd(&["client", "list", "--json"]).stdout).unwrap();
    assert_eq!(list[0]["state"], "expired", "{list:#}");

    // Expired: refused, saying so; and nothing is written.
    let registry = srv.data.join("clients.json");
    let stamp = || {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(&registry).unwrap();
        (m.ino(), m.mtime_nsec())
    };
    let before = stamp();
    refused(&enroll_stdin(&env, &srv, "laptop", &token), "expired");
    refused(
        &enroll_stdin(&env, &srv, "laptop", "0123"),
        "unknown client name or wrong token",
    );
    assert_eq!(stamp(), before, "failed enrollments rewrote the registry");

    // A new token, from a file, works once.
    let token = srv.add_client("laptop");
    let file = env.tmp.path().join("token");
    fs::write(&file, format!("{token}\n")).unwrap();
    env.ok(&[
        "enroll",
        &srv.url,
        "--name",
        "laptop",
        "--token-file",
        file.to_str().unwrap(),
        "--fingerprint",
        &srv.fingerprint(),
    ]);
    refused(&enroll_stdin(&env, &srv, "laptop", &token), "already used");
    // No token at all: said so.
    refused(
        &enroll_stdin(&env, &srv, "laptop", ""),
        "no enrollment token",
    );
    remote_of(&env).stats().unwrap();
}

#[test]
fn stats_tell_a_client_only_its_own_figures() {
    let (a, b, _srv) = alice_and_bob();
    fs::write(a.root.join("f"), b"alice's").unwrap();
    a.ok(&["watch", a.root.to_str().unwrap(), "--once"]);
    let mine = remote_of(&a).stats().unwrap();
    let theirs = remote_of(&b).stats().unwrap();
    assert!(mine.last_commit.is_some() && mine.versions == 2, "{mine:?}");
    assert_eq!(
        (theirs.versions, theirs.chunks, theirs.last_commit),
        (0, 0, None),
        "bob learns nothing of alice's commit: {theirs:?}"
    );
    assert!(theirs.max_seq.is_empty());
}
