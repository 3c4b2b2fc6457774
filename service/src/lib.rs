//! rewind_service: `rewind service install|status|uninstall`, the agent as
//! a service of the user who runs it (a systemd user unit on Linux, a
//! launchd agent on macOS), so it protects from login (or boot, with
//! lingering) to shutdown. The unit and plist are the ones `packaging/`
//! ships, compiled in.
//!
//! # Guarantees
//!
//! - Each subcommand is a list of steps made first (`plan`), then carried
//!   out, one line per step; a dry run shows them instead.
//! - Running `install` twice is harmless: an unchanged unit or plist is
//!   left alone and says so; enabling is idempotent.
//! - `install` refuses a config that gives the agent nothing to protect
//!   (it would exit at once and be restarted forever).
//! - The unit and plist texts are plain functions (`systemd`, `launchd`)
//!   compiled and tested on Linux; only the `systemctl` / `launchctl` calls
//!   differ by platform.
//! - Errors are one line saying what failed and where.
//!
//! # After an interruption
//!
//! An interrupted install leaves the unit or plist whole (written as
//! `rewind_core::readable::write_file` writes: temporary name, fsync,
//! rename, then `0644`) and the service enabled or not; running `install`
//! again finishes it.

mod context;
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
mod launchd;
mod plan;
#[cfg_attr(target_os = "macos", allow(dead_code))]
mod systemd;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use context::Context;

/// `rewind service install`: write and enable the user unit (Linux) or
/// LaunchAgent (macOS) that runs `rewind agent [--config FILE]`; with
/// `linger`, from boot (Linux: `loginctl enable-linger`). `dry_run` prints
/// the steps and does nothing.
pub fn install(config: Option<&Path>, linger: bool, dry_run: bool) -> Result<()> {
    let c = Context::current()?;
    let config = config.map(config_file).transpose()?;
    something_to_do(config.as_deref())?;
    plan::execute(&install_steps(&c, config.as_deref(), linger)?, dry_run)
}

/// `rewind service uninstall`: stop and disable the service and remove
/// what `install` wrote.
pub fn uninstall(dry_run: bool) -> Result<()> {
    let c = Context::current()?;
    plan::execute(&uninstall_steps(&c), dry_run)
}

/// `rewind service status`: whether the service is installed and enabled,
/// and whether the agent answers (text, or JSON with `json`).
pub fn status(json: bool) -> Result<()> {
    let c = Context::current()?;
    show_status(&c, json)
}

/// The config file as the service will name it: absolute (a service does
/// not start in the current directory), and existing (the agent refuses a
/// named config file that is missing, and would fail at every start).
fn config_file(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).with_context(|| format!("--config {}", p.display()))?;
    if !abs.is_file() {
        bail!("--config {}: no such file", abs.display());
    }
    Ok(abs)
}

/// Refuse to install an agent that would exit at once ("nothing to do")
/// and be restarted forever: the config must name folders or dump jobs.
fn something_to_do(config: Option<&Path>) -> Result<()> {
    let loaded = rewind_agent::load(config)?;
    let folders = loaded.config.watch.as_ref().map_or(0, |w| w.paths.len());
    if folders == 0 && loaded.jobs.is_empty() {
        let file = match loaded.path {
            Some(p) => p,
            None => rewind_agent::default_path()?,
        };
        bail!(
            "{}: nothing for the agent to protect yet; add the folders first, e.g. \
             [watch] paths = [\"/home/you/Documents\"]",
            file.display()
        );
    }
    if let Some(repo) = loaded.encrypted_repo_without_secret() {
        let file = match &loaded.path {
            Some(p) => p.clone(),
            None => rewind_agent::default_path()?,
        };
        bail!(
            "{}: the repository {} is encrypted, and a service has no terminal to ask for \
             its password; add password_file = \"FILE\" (a 0600 file whose first line is \
             the password) or repo_key_file = \"FILE\" to the config",
            file.display(),
            repo.display()
        );
    }
    Ok(())
}

#[cfg(not(target_os = "macos"))]
fn install_steps(c: &Context, config: Option<&Path>, linger: bool) -> Result<Vec<plan::Step>> {
    systemd::install(c, config, linger)
}

#[cfg(target_os = "macos")]
fn install_steps(c: &Context, config: Option<&Path>, linger: bool) -> Result<Vec<plan::Step>> {
    launchd::install(c, config, linger, launchd_loaded(c))
}

#[cfg(not(target_os = "macos"))]
fn uninstall_steps(c: &Context) -> Vec<plan::Step> {
    systemd::uninstall(c)
}

#[cfg(target_os = "macos")]
fn uninstall_steps(c: &Context) -> Vec<plan::Step> {
    launchd::uninstall(c, launchd_loaded(c))
}

/// Whether launchd has the job loaded in the user's GUI domain.
#[cfg(target_os = "macos")]
fn launchd_loaded(c: &Context) -> bool {
    std::process::Command::new("launchctl")
        .args(["print", &launchd::service_target(c)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What the service manager says about the service.
struct Manager {
    /// `systemd` or `launchd`.
    name: &'static str,
    /// The unit or plist in use, and who put it there.
    file: Option<(PathBuf, &'static str)>,
    /// Enabled (systemd's `is-enabled`; launchd: loaded or not).
    enabled: std::result::Result<String, String>,
    /// Running (systemd's `is-active`; not asked of launchd).
    active: Option<std::result::Result<String, String>>,
}

#[cfg(not(target_os = "macos"))]
fn manager(c: &Context) -> Manager {
    let written = systemd::user_unit(c);
    let file = if written.exists() {
        let who = if systemd::is_ours(&written) {
            "written by rewind service install"
        } else {
            "not written by rewind"
        };
        Some((written, who))
    } else if c.packaged_unit.exists() {
        Some((c.packaged_unit.clone(), "packaged"))
    } else {
        None
    };
    let ask = |what: &str| answer(&["systemctl", "--user", what, systemd::UNIT_NAME]);
    Manager {
        name: "systemd",
        file,
        enabled: ask("is-enabled"),
        active: Some(ask("is-active")),
    }
}

#[cfg(target_os = "macos")]
fn manager(c: &Context) -> Manager {
    let plist = launchd::plist_path(c);
    Manager {
        name: "launchd",
        file: plist.exists().then_some((plist, "LaunchAgent")),
        enabled: Ok(if launchd_loaded(c) {
            "loaded"
        } else {
            "not loaded"
        }
        .into()),
        active: None,
    }
}

/// What a query command prints (`enabled`, `inactive`, …), whatever its
/// exit code; its complaint when it prints nothing.
#[cfg_attr(target_os = "macos", allow(dead_code))]
fn answer(argv: &[&str]) -> std::result::Result<String, String> {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let out = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|e| format!("{}: {e}", argv[0]))?;
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !said.is_empty() {
        return Ok(said);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    match err.lines().rfind(|l| !l.trim().is_empty()) {
        Some(said) => Err(format!("`{}`: {}", argv.join(" "), said.trim())),
        None => Err(format!(
            "`{}` said nothing ({})",
            argv.join(" "),
            out.status
        )),
    }
}

/// Every agent of this user that answers on its control socket (one per
/// repository it protects into), or the error of one that did not answer.
fn agents() -> Vec<(PathBuf, Result<serde_json::Value>)> {
    let Ok(dir) = rewind_agent::paths::state_dir() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir.join("journals")) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for e in entries.flatten() {
        let socket = rewind_agent::paths::socket_path(&e.path());
        if !socket.exists() {
            continue;
        }
        match rewind_agent::query(&socket) {
            Ok(Some(v)) => found.push((socket, Ok(v))),
            Ok(None) => {} // left by an agent that is gone
            Err(e) => found.push((socket, Err(e))),
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

fn show_status(c: &Context, json: bool) -> Result<()> {
    let m = manager(c);
    let agents = agents();
    if json {
        let agents_v: Vec<_> = agents
            .iter()
            .map(|(socket, r)| match r {
                Ok(v) => json!({
                    "socket": socket,
                    "answers": true,
                    "pid": v["agent"]["pid"],
                    "first_pass_done": v["agent"]["first_pass_done"],
                }),
                Err(e) => json!({
                    "socket": socket,
                    "answers": false,
                    "error": rewind_agent::one_line(e),
                }),
            })
            .collect();
        let either = |r: &std::result::Result<String, String>| match r {
            Ok(s) => json!({ "state": s }),
            Err(e) => json!({ "state": null, "error": e }),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "manager": m.name,
                "installed": m.file.is_some(),
                "file": m.file.as_ref().map(|f| &f.0),
                "enabled": either(&m.enabled),
                "active": m.active.as_ref().map(either),
                "agents": agents_v,
            }))?
        );
        return Ok(());
    }
    let show = |r: &std::result::Result<String, String>| match r {
        Ok(s) => s.clone(),
        Err(e) => format!("unknown ({e})"),
    };
    match &m.file {
        Some((path, who)) => println!("service      {} ({who})", path.display()),
        None => println!("service      not installed (`rewind service install` sets it up)"),
    }
    println!("enabled      {}", show(&m.enabled));
    if let Some(active) = &m.active {
        println!("active       {}", show(active));
    }
    if agents.is_empty() {
        println!("agent        not answering (no agent runs for this user)");
    }
    for (socket, r) in &agents {
        match r {
            Ok(v) => println!(
                "agent        answers (pid {}), first pass {}",
                v["agent"]["pid"],
                if v["agent"]["first_pass_done"].as_bool() == Some(true) {
                    "done"
                } else {
                    "in progress"
                }
            ),
            Err(e) => println!(
                "agent        not answering on {}: {}",
                socket.display(),
                rewind_agent::one_line(e)
            ),
        }
    }
    Ok(())
}
