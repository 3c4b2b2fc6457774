//! Part 8: the web UI's endpoints on a long history. The ingest tree's
//! plan (about 50,000 files in 1,250 folders at scale 1) is committed to
//! an embedded repository as a year of history: every file created in the
//! first month and changed three more times at random moments, one file in
//! thirty deleted in the last six months, and one log file with 10,000
//! versions. Versions are injected through the repository API (their
//! content is one stored placeholder chunk: no endpoint measured here
//! reads content). The UI server runs in process on loopback, as the agent
//! runs it, and each endpoint is asked over HTTP like a browser asks: the
//! first request, and the median of the next seven.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rewind_core::{
    ChunkRef, DEFAULT_CHUNKER, EncodedChunk, Entry, FileKind, FileMeta, RepoError, Repository,
    Timestamp, Version,
};
use rewind_repo::LocalRepo;

use crate::Config;
use crate::datagen::{derive_seed, plan_tree};
use crate::report::{Table, bytes, median};

/// The protected folder the history is recorded under.
const ROOT: &str = "/home/bench/tree";
/// The file with the long version list.
const HOT: &str = "/home/bench/tree/hot.log";
const CLIENT: &str = "bench";
const NS: i64 = 1_000_000_000;
const DAY: i64 = 86_400 * NS;
/// Versions of the hot file.
const HOT_VERSIONS: usize = 10_000;
/// Repeats of each request after the first.
const WARM: usize = 7;

struct History(Arc<LocalRepo>);

impl rewind_ui::History for History {
    fn list_page(&self, after: Option<&[u8]>, limit: usize) -> Result<Vec<Version>, RepoError> {
        Ok(self.0.list_page(CLIENT, after, limit))
    }
}

fn version(path: String, time: i64, kind: FileKind, size: u64, chunk: &ChunkRef) -> Version {
    Version {
        client: CLIENT.into(),
        seq: 0,
        observed_at: Timestamp(time),
        path: path.into_bytes(),
        entry: Entry::Present {
            meta: FileMeta {
                size,
                mtime: rewind_core::FileTime {
                    sec: time / NS,
                    nsec: (time % NS) as u32,
                },
                ..FileMeta::new(kind, if kind == FileKind::Dir { 0o755 } else { 0o644 })
            },
            chunks: if kind == FileKind::File {
                vec![ChunkRef {
                    id: chunk.id,
                    len: size.min(u32::MAX as u64) as u32,
                }]
            } else {
                vec![]
            },
            xattrs: vec![],
        },
    }
}

/// The history described in the module doc, committed to a new repository.
fn build(cfg: &Config, dir: &PathBuf) -> Result<(Arc<LocalRepo>, usize, usize, String, i64)> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let repo = LocalRepo::init(dir, DEFAULT_CHUNKER)?;
    let placeholder = EncodedChunk::encode(b"rewind bench: content not stored");
    let chunk = ChunkRef {
        id: placeholder.id,
        len: placeholder.raw_len,
    };
    repo.put_chunks(vec![placeholder])?;
    let now = Timestamp::now().0;
    let start = now - 365 * DAY;
    let mut rng = StdRng::seed_from_u64(derive_seed(cfg.seed, 0x0018));
    let (dirs, files) = plan_tree(cfg.seed, cfg.scale);
    let mut vs = vec![version(ROOT.into(), start, FileKind::Dir, 4096, &chunk)];
    for d in &dirs {
        vs.push(version(
            format!("{ROOT}/{}", d.display()),
            start + 1,
            FileKind::Dir,
            4096,
            &chunk,
        ));
    }
    // Which folder has the most entries of its own (the listing measured).
    let mut per_dir = std::collections::HashMap::<PathBuf, usize>::new();
    for f in &files {
        let p = format!("{ROOT}/{}", f.rel.display());
        *per_dir
            .entry(f.rel.parent().unwrap_or(&f.rel).to_path_buf())
            .or_default() += 1;
        let created = start + 2 + rng.random_range(0..30 * DAY);
        vs.push(version(p.clone(), created, FileKind::File, f.size, &chunk));
        for _ in 0..3 {
            let t = rng.random_range(created + 1..now - NS);
            let grown = f.size + rng.random_range(0..4096);
            vs.push(version(p.clone(), t, FileKind::File, grown, &chunk));
        }
        if rng.random_range(0..30) == 0 {
            vs.push(Version {
                client: CLIENT.into(),
                seq: 0,
                observed_at: Timestamp(now - rng.random_range(NS..180 * DAY)),
                path: p.into_bytes(),
                entry: Entry::Deleted,
            });
        }
    }
    let step = (now - start - NS) / HOT_VERSIONS as i64;
    for i in 0..HOT_VERSIONS {
        vs.push(version(
            HOT.into(),
            start + 3 + i as i64 * step,
            FileKind::File,
            1000 + i as u64 * 40,
            &chunk,
        ));
    }
    // Sequence numbers in time order, as capture assigns them; a deletion
    // drawn before a file's last change comes after it in seq instead.
    vs.sort_by_key(|v| (v.observed_at, v.path.clone()));
    let mut last: std::collections::HashMap<Vec<u8>, i64> = Default::default();
    for (i, v) in vs.iter_mut().enumerate() {
        v.seq = i as u64 + 1;
        let t = last.entry(v.path.clone()).or_insert(v.observed_at.0);
        if v.observed_at.0 < *t {
            v.observed_at = Timestamp(*t);
        }
        *t = v.observed_at.0;
    }
    let n = vs.len();
    let npaths = 2 + dirs.len() + files.len();
    for batch in vs.chunks(50_000) {
        repo.commit_versions(batch.to_vec())?;
    }
    let biggest = per_dir
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(d, _)| format!("{ROOT}/{}", d.display()))
        .unwrap_or_else(|| ROOT.into());
    Ok((Arc::new(repo), n, npaths, biggest, now))
}

/// One HTTP/1.1 GET: status, body length, seconds.
fn get(addr: SocketAddr, path: &str, headers: &str) -> Result<(u16, usize, f64, String)> {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let secs = t.elapsed().as_secs_f64();
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    Ok((status, buf.len() - end - 4, secs, head))
}

fn id(path: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(path.as_bytes())
}

/// Run part 8.
pub fn run(cfg: &Config) -> Result<String> {
    let dir = cfg.work.join("ui-repo");
    let t = Instant::now();
    let (repo, nversions, paths, biggest, now) = build(cfg, &dir)?;
    let built = t.elapsed().as_secs_f64();
    let ctx = rewind_ui::UiContext {
        repo: repo.clone() as Arc<dyn Repository>,
        client: CLIENT.into(),
        history: Arc::new(History(repo.clone())),
        roots: vec![PathBuf::from(ROOT)],
        chunker: None,
        status: Box::new(|| serde_json::json!({ "agent": { "running": true } })),
    };
    let ui = rewind_ui::Ui::start("127.0.0.1:0".parse()?, ctx)?;
    let addr = ui.addr();
    let login = ui.login_url();
    let (status, _, _, head) = get(addr, &login[login.find("/auth").unwrap()..], "")?;
    if status != 303 {
        bail!("login refused: {status}");
    }
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .context("no cookie")?
        .to_string();
    let key = head
        .lines()
        .find_map(|l| l.strip_prefix("location: /#key="))
        .context("no key")?
        .to_string();
    let auth = format!("Cookie: {cookie}\r\nX-Rewind-Key: {key}\r\n");

    let past = now - 180 * DAY;
    let root = id(ROOT);
    let big = id(&biggest);
    let hot = id(HOT);
    let mut table = Table::new(&[
        "request",
        "what it answers",
        "first",
        "median of next 7",
        "response",
    ]);
    let mut worst: f64 = 0.0;
    let mut measure = |label: &str, what: &str, path: &dyn Fn(usize) -> String| -> Result<()> {
        let mut times = Vec::new();
        let mut size = 0;
        for i in 0..=WARM {
            let (status, n, secs, _) = get(addr, &path(i), &auth)?;
            if status != 200 {
                bail!("{label}: status {status}");
            }
            size = n;
            times.push(secs);
        }
        let warm = median(&times[1..]);
        worst = worst.max(times[0]).max(warm);
        table.row(&[
            format!("`{label}`"),
            what.to_string(),
            format!("{:.1} ms", times[0] * 1000.0),
            format!("{:.1} ms", warm * 1000.0),
            bytes(size as u64),
        ]);
        Ok(())
    };
    measure("GET /", "the page", &|_| "/".into())?;
    measure("GET /app.js", "its script", &|_| "/app.js".into())?;
    measure(
        "timeline, a year",
        "365 daily bars; the first request builds the catalog (every version read once)",
        &|_| {
            format!(
                "/api/timeline?from={}&to={now}&buckets=365",
                now - 365 * DAY
            )
        },
    )?;
    measure("timeline, a day", "144 bars of 10 minutes", &|_| {
        format!("/api/timeline?from={}&to={now}&buckets=144", now - DAY)
    })?;
    measure(
        "tree, root, now",
        "the 50k-file folder's top at a new moment each time (no cache)",
        &|i| format!("/api/tree?id={root}&at={}", now + i as i64),
    )?;
    measure(
        "tree, root, 6 months ago",
        "the same, half a year back",
        &|i| format!("/api/tree?id={root}&at={}", past + i as i64),
    )?;
    measure(
        "tree, largest folder",
        "the folder with the most entries of its own, first page",
        &|i| format!("/api/tree?id={big}&at={}", past + i as i64),
    )?;
    measure(
        "tree, page 2",
        "the next page of a listing just made (cached)",
        &|_| format!("/api/tree?id={big}&at={past}&offset=500"),
    )?;
    measure(
        "versions, 10,000",
        "the first page (200, newest first) of the file with 10,000 versions",
        &|_| format!("/api/versions?id={hot}"),
    )?;
    measure("versions, last page", "its oldest 200", &|_| {
        format!("/api/versions?id={hot}&offset=9800")
    })?;
    measure("versions, all at once", "all 10,000 in one answer", &|_| {
        format!("/api/versions?id={hot}&limit=5000")
    })?;
    measure(
        "search `*.txt`",
        "a glob over every path ever seen (first 500 of the matches)",
        &|_| "/api/search?q=*.txt".into(),
    )?;
    measure("search `0042`", "a substring of names", &|_| {
        "/api/search?q=0042".into()
    })?;
    measure("status", "the overview's poll (every 2 s)", &|_| {
        "/api/status".into()
    })?;
    ui.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let mut out = String::new();
    writeln!(
        out,
        "History: {nversions} versions of {paths} paths over a year in an embedded repository \
         (committed in {built:.1} s), the 10,000-version file `{HOT}`, the largest folder \
         `{biggest}`. Times are whole HTTP requests on loopback (connect, answer, read), \
         measured from another thread of the same process.\n"
    )?;
    writeln!(out, "{}", table.render())?;
    writeln!(
        out,
        "Slowest request: {:.0} ms (target: under 300 ms).",
        worst * 1000.0
    )?;
    Ok(out)
}
