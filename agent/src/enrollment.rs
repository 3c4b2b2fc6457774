//! What enrollment with a backup server leaves on this machine, and how it
//! is read back: the `[server]` table of the config file (URL, client name,
//! pinned fingerprint, optional upload limit), the client key in a file of
//! its own beside it, and the server's last known description (so capture
//! can start while the server is unreachable).
//!
//! Every file here is written owner-only and durably
//! ([`rewind_core::private`]); the rest of the config file is kept as it is.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rewind_core::wire::ServerInfo;
use serde::{Deserialize, Serialize};

use crate::paths;

/// The `[server]` table of the config file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// `https://host:port`.
    pub url: String,
    /// This machine's client name on the server.
    pub client: String,
    /// The server certificate's pinned fingerprint.
    pub fingerprint: String,
    /// The file holding the client key (default: `client.key` beside the
    /// config file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Upload bandwidth limit, e.g. `5MiB/s` or `08:00-18:00 1MiB/s, 20MiB/s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_upload: Option<String>,
}

/// Where the server's last known description is kept.
pub(crate) fn info_cache(url: &str) -> Result<PathBuf> {
    let name: String = url
        .trim_start_matches("https://")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    Ok(paths::state_dir()?
        .join("servers")
        .join(format!("{name}.json")))
}

fn read_config_text(file: &Path) -> Result<String> {
    match std::fs::read_to_string(file) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
    }
}

/// The `[server]` table, if the config file has one.
pub fn load_section() -> Result<Option<ServerSection>> {
    let file = paths::config_file()?;
    let text = read_config_text(&file)?;
    if text.is_empty() {
        return Ok(None);
    }
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{}: not valid TOML", file.display()))?;
    match table.get("server") {
        None => Ok(None),
        Some(v) => {
            Ok(Some(v.clone().try_into().with_context(|| {
                format!("{}: [server]", file.display())
            })?))
        }
    }
}

pub(crate) fn key_file(sec: &ServerSection) -> Result<PathBuf> {
    match &sec.key_file {
        Some(k) => Ok(k.clone()),
        None => Ok(paths::config_file()?.with_file_name("client.key")),
    }
}

/// Write `data` to `path` (owner only, durably), creating its folder.
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(d) = path.parent() {
        rewind_core::private::create_dir_all(d)
            .with_context(|| format!("cannot create {}", d.display()))?;
    }
    rewind_core::private::write_file(path, data)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Write the `[server]` table, keeping the rest of the file as it is.
pub(crate) fn save_section(sec: &ServerSection) -> Result<()> {
    let file = paths::config_file()?;
    let text = read_config_text(&file)?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("{}: not valid TOML", file.display()))?;
    let mut table = toml_edit::Table::new();
    table.insert("url", toml_edit::value(&sec.url));
    table.insert("client", toml_edit::value(&sec.client));
    table.insert("fingerprint", toml_edit::value(&sec.fingerprint));
    if let Some(k) = &sec.key_file {
        table.insert("key_file", toml_edit::value(k.to_string_lossy().as_ref()));
    }
    if let Some(l) = &sec.limit_upload {
        table.insert("limit_upload", toml_edit::value(l));
    }
    doc["server"] = toml_edit::Item::Table(table);
    write_private(&file, doc.to_string().as_bytes())
}

/// Record an enrollment: the key file, the `[server]` table and the
/// server's description. Returns the key file's path.
pub fn save_enrollment(sec: &ServerSection, key: &str, info: &ServerInfo) -> Result<PathBuf> {
    let kf = key_file(sec)?;
    write_private(&kf, format!("{key}\n").as_bytes())?;
    save_section(sec)?;
    let cache = info_cache(&sec.url)?;
    let _ = write_private(&cache, &serde_json::to_vec(info)?);
    Ok(kf)
}

/// The server's description as it was last seen, if any.
pub(crate) fn cached_info(url: &str) -> Option<ServerInfo> {
    let cache = info_cache(url).ok()?;
    std::fs::read(&cache)
        .ok()
        .and_then(|b| serde_json::from_slice::<ServerInfo>(&b).ok())
}

/// Remember the server's description.
pub(crate) fn cache_info(url: &str, info: &ServerInfo) {
    if let Ok(cache) = info_cache(url)
        && let Ok(b) = serde_json::to_vec(info)
    {
        let _ = write_private(&cache, &b);
    }
}
