//! The agent's control socket: `rewind status` in another terminal asks the
//! running agent (which holds the journal open) for its state, and `rewind
//! dump run NAME` asks it to run one of its configured dump jobs.
//!
//! Protocol: one request line (`status`, `dump NAME`, `ui`, or `retention
//! JSON` for forget, prune, pin and unpin), JSON lines back. `ui` answers
//! `{"url": …}`: a one-time login URL of the web UI the agent serves
//! (`rewind ui` prints and opens it).
//!
//! Who may ask: the socket is `0600` in the journal's `0700` directory, and
//! each connection's peer must be the agent's own user (or root); anyone
//! else is refused before a byte is read. A request names an operation and,
//! for a dump, a job of the agent's own config: nothing sent over the
//! socket is ever run as a command (issue 21).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rewind_uploader::Uploader;
use serde_json::{Value, json};

use crate::agent::Agent;
use crate::paths;
use crate::target::Target;

/// The running socket server.
pub struct Control {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl Control {
    /// Stop serving and remove the socket.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Unblock the accept call.
        let _ = UnixStream::connect(&self.path);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Serve status requests on `path`.
pub(crate) fn serve(
    path: &Path,
    agent: Arc<Agent>,
    uploader: Arc<Mutex<Option<Uploader>>>,
    ui: Option<Arc<rewind_ui::Ui>>,
) -> Result<Control> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!(
                "another rewind agent is already running for this repository (socket {})",
                path.display()
            );
        }
        let _ = std::fs::remove_file(path);
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {} private", path.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let handle = std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            // Blocking accept: no wake-ups while nobody asks; `stop`
            // connects once to unblock it.
            while !s2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        if s2.load(Ordering::Relaxed) {
                            break;
                        }
                        let _ = handle(conn, &agent, &uploader, ui.as_deref());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        })?;
    Ok(Control {
        stop,
        handle: Some(handle),
        path: path.to_path_buf(),
    })
}

/// The user id of the process at the other end of `conn`.
fn peer_uid(conn: &UnixStream) -> std::io::Result<u32> {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        getsockopt(conn, PeerCredentials)
            .map(|c| c.uid())
            .map_err(std::io::Error::from)
    }
    #[cfg(not(target_os = "linux"))]
    {
        nix::unistd::getpeereid(conn)
            .map(|(uid, _)| uid.as_raw())
            .map_err(std::io::Error::from)
    }
}

/// Answer a request that may take long (a dump, a forget or prune) on a
/// thread of its own, so `status` and other requests are still answered
/// meanwhile.
fn on_own_thread(
    name: &str,
    conn: UnixStream,
    agent: &Arc<Agent>,
    serve: impl FnOnce(&UnixStream, &Agent) + Send + 'static,
) -> Result<()> {
    let agent = agent.clone();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = conn.set_read_timeout(None);
            serve(&conn, &agent);
        })?;
    Ok(())
}

fn handle(
    conn: UnixStream,
    agent: &Arc<Agent>,
    uploader: &Mutex<Option<Uploader>>,
    ui: Option<&rewind_ui::Ui>,
) -> Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    match peer_uid(&conn) {
        Ok(uid) if uid == me || uid == 0 => {}
        Ok(uid) => {
            tracing::warn!("control socket: refused a connection from user id {uid}");
            let mut w = &conn;
            let refusal = json!({ "error": "refused: not the agent's user" });
            w.write_all(format!("{refusal}\n").as_bytes())?;
            return Ok(());
        }
        Err(e) => bail!("control socket: cannot tell who connected: {e}"),
    }
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    let reply = match line.trim() {
        "status" => status_json(agent, uploader),
        "ui" => match ui {
            Some(u) => json!({ "url": u.login_url() }),
            None => json!({
                "error": "this agent serves no web UI (it is off in its config, [ui] enabled = false, or its address could not be listened on: see the agent's log)"
            }),
        },
        l if l.starts_with("dump ") => {
            let job = l["dump ".len()..].to_string();
            return on_own_thread("dump-request", conn, agent, move |conn, agent| {
                crate::dump_service::serve_run(conn, &agent.dumps, &job)
            });
        }
        l if l.starts_with("retention ") => {
            let req = l["retention ".len()..].to_string();
            return on_own_thread("retention-request", conn, agent, move |conn, agent| {
                // A forget or prune asked for runs at the priority of the
                // agent's own: capture goes first (docs/decisions.md,
                // "Readers follow a forget and a prune").
                crate::priority::background();
                crate::retention::serve(conn, &agent.retention, &req)
            });
        }
        other => json!({ "error": format!("unknown request {other:?}") }),
    };
    let mut w = &conn;
    w.write_all(format!("{reply}\n").as_bytes())?;
    Ok(())
}

/// The agent's live state: what `rewind status` and the web UI show.
pub(crate) fn status_json(agent: &Agent, uploader: &Mutex<Option<Uploader>>) -> serde_json::Value {
    let journal = agent.journal.stats().ok();
    let upload = uploader
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|u| u.status());
    let problems = agent
        .problems
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    json!({
        "agent": {
            "running": true,
            "pid": std::process::id(),
            "started": agent.started.to_string(),
            "roots": agent.roots.iter().map(|r| r.to_string_lossy().into_owned()).collect::<Vec<_>>(),
            "repository": agent.repository,
            "first_pass_done": agent.first_pass_done.load(Ordering::Relaxed),
            "pending_captures": agent.sched.pending(),
            "counters": &agent.counters,
            "recent_problems": problems,
            "dumps": agent.dumps.status(),
            "health": agent.health.problems(),
            "busy": agent.busy(),
            "retention": retention_json(agent),
        },
        "journal": journal,
        "upload": upload,
    })
}

/// The agent's retention: its settings and its own runs.
fn retention_json(agent: &Agent) -> serde_json::Value {
    let s = &agent.retention.settings;
    let m = agent
        .maintenance
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    json!({
        "policy": s.policy.to_string(),
        "every": s.every.map(|d| format!("{}s", d.as_secs())),
        "max_size": s.max_size,
        "keep_free": match s.keep_free {
            Some(crate::retention::FreeSpace::Share(f)) => Some(format!("{}%", f * 100.0)),
            Some(crate::retention::FreeSpace::Bytes(b)) => Some(b.to_string()),
            None => None,
        },
        "max_unused": s.max_unused,
        "runs": m,
    })
}

/// Ask a running agent for its status; `Ok(None)` when none listens.
pub fn query(path: &Path) -> Result<Option<serde_json::Value>> {
    let Ok(mut conn) = UnixStream::connect(path) else {
        return Ok(None);
    };
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.write_all(b"status\n")?;
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    Ok(Some(
        serde_json::from_str(&line).context("agent sent a malformed status")?,
    ))
}

/// Ask the agent running for `target` for a one-time login URL of its web
/// UI; `Ok(None)` when no agent runs for it.
pub fn ui_url(target: &Target) -> Result<Option<String>> {
    let Some(id) = target.id()? else {
        return Ok(None);
    };
    let sock = paths::socket_path(&paths::journal_dir(&id)?);
    let Ok(mut conn) = UnixStream::connect(&sock) else {
        return Ok(None);
    };
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.write_all(b"ui\n")
        .context("cannot talk to the running agent")?;
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    let v: Value = serde_json::from_str(&line).context("agent sent a malformed reply")?;
    match (v["url"].as_str(), v["error"].as_str()) {
        (Some(u), _) => Ok(Some(u.to_string())),
        (None, Some(e)) => bail!("{e}"),
        (None, None) => {
            bail!("the running agent does not know `ui` (an older version? restart it)")
        }
    }
}

/// Ask the agent running for `target` to run its job `name`, passing its
/// progress on; the run's reports, or `None` when no agent answers.
pub fn run_dump_through_agent(
    target: &Target,
    name: &str,
    progress: &dyn Fn(&str, u64),
) -> Result<Option<Vec<Value>>> {
    let Some(id) = target.id()? else {
        return Ok(None);
    };
    let sock = paths::socket_path(&paths::journal_dir(&id)?);
    let Ok(mut conn) = UnixStream::connect(&sock) else {
        return Ok(None);
    };
    // The agent runs only jobs of its own config, asked for by name.
    let req = serde_json::to_string(name)?;
    conn.write_all(format!("dump {req}\n").as_bytes())
        .context("cannot talk to the running agent")?;
    tracing::info!("running dump {name} through the agent");
    for line in BufReader::new(&conn).lines() {
        let line = line.context("lost the running agent")?;
        let v: Value = serde_json::from_str(&line).context("agent sent a malformed reply")?;
        if let Some(p) = v.get("progress") {
            progress(
                p["path"].as_str().unwrap_or(""),
                p["bytes"].as_u64().unwrap_or(0),
            );
        } else if let Some(d) = v.get("done") {
            return Ok(Some(d.as_array().cloned().unwrap_or_default()));
        } else if let Some(e) = v.get("error") {
            bail!("{}", e.as_str().unwrap_or("the agent failed"));
        }
    }
    bail!("the agent stopped before the dump finished")
}
