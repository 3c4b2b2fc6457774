//! Where rewind keeps things by default, per platform.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

fn home() -> Result<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .context("HOME is not set: pass --repo DIR")
}

fn xdg(var: &str, fallback: &str) -> Result<PathBuf> {
    match std::env::var_os(var).filter(|v| !v.is_empty()) {
        Some(v) => Ok(PathBuf::from(v)),
        None => Ok(home()?.join(fallback)),
    }
}

/// Default repository: `$XDG_DATA_HOME/rewind/repo` (macOS:
/// `~/Library/Application Support/rewind/repo`).
pub fn default_repo() -> Result<PathBuf> {
    if cfg!(target_os = "macos") {
        Ok(home()?.join("Library/Application Support/rewind/repo"))
    } else {
        Ok(xdg("XDG_DATA_HOME", ".local/share")?.join("rewind/repo"))
    }
}

/// Agent state (journals, control sockets): `$REWIND_STATE_DIR`, else
/// `$XDG_STATE_HOME/rewind` (macOS: `~/Library/Application Support/rewind/state`).
pub fn state_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("REWIND_STATE_DIR").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    if cfg!(target_os = "macos") {
        Ok(home()?.join("Library/Application Support/rewind/state"))
    } else {
        Ok(xdg("XDG_STATE_HOME", ".local/state")?.join("rewind"))
    }
}

/// The configuration file: `$REWIND_CONFIG`, else
/// `$XDG_CONFIG_HOME/rewind/config.toml` (macOS:
/// `~/Library/Application Support/rewind/config.toml`).
pub fn config_file() -> Result<PathBuf> {
    if let Some(f) = std::env::var_os("REWIND_CONFIG").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(f));
    }
    if cfg!(target_os = "macos") {
        Ok(home()?.join("Library/Application Support/rewind/config.toml"))
    } else {
        Ok(xdg("XDG_CONFIG_HOME", ".config")?.join("rewind/config.toml"))
    }
}

/// The journal of the agent that protects into the repository with `repo_id`.
pub fn journal_dir(repo_id: &str) -> Result<PathBuf> {
    Ok(state_dir()?.join("journals").join(repo_id))
}

/// The control socket of a running agent.
pub fn socket_path(journal_dir: &Path) -> PathBuf {
    journal_dir.join("agent.sock")
}

/// The client name this machine records versions under: the one stored
/// beside the journal if an agent ran before, else the host name.
pub fn client_name(journal_dir: &Path) -> String {
    if let Ok(s) = std::fs::read_to_string(journal_dir.join("client"))
        && !s.trim().is_empty()
    {
        return s.trim().to_string();
    }
    let uname = rustix::system::uname();
    let n = uname.nodename().to_string_lossy().into_owned();
    if n.is_empty() { "localhost".into() } else { n }
}
