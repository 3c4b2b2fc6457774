//! The backup server this machine is enrolled with (`rewind enroll`), and
//! which repository a command works on.
//!
//! Enrollment writes the `[server]` table of the config file (URL, client
//! name, pinned fingerprint, optional upload limit) and the client key to a
//! file of its own beside it (mode 0600). Choice of repository: `--repo
//! DIR` → that local repository; `--server URL` → that server (it must be
//! the enrolled one); neither → the enrolled server if there is one, else
//! the embedded local repository.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rewind_core::wire::ServerInfo;
use rewind_remote::{RateSchedule, RemoteConfig, RemoteRepo};
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

/// A repository to work on.
pub enum Target {
    /// An embedded repository in this directory.
    Local(PathBuf),
    /// A rewind-server.
    Server(Box<Remote>),
}

/// An enrolled server, ready to connect to.
#[derive(Clone)]
pub struct Remote {
    /// How to reach it.
    pub cfg: RemoteConfig,
    /// Upload limit.
    pub limit: Option<RateSchedule>,
}

impl Remote {
    /// A client for it (no request made yet).
    pub fn connect(&self) -> Result<RemoteRepo> {
        let mut r = RemoteRepo::new(&self.cfg)?;
        if let Some(l) = &self.limit {
            r.set_upload_limit(l.clone());
        }
        Ok(r)
    }

    /// What the server says about itself, or what it said last time when
    /// it cannot be reached now (so capture can start offline).
    pub fn info(&self, repo: &RemoteRepo) -> Result<ServerInfo> {
        let cache = info_cache(&self.cfg.url)?;
        match repo.info() {
            Ok(i) => {
                let _ = write_private(&cache, &serde_json::to_vec(&i)?);
                Ok(i)
            }
            Err(e) if e.is_transient() => match std::fs::read(&cache)
                .ok()
                .and_then(|b| serde_json::from_slice::<ServerInfo>(&b).ok())
            {
                Some(i) => {
                    tracing::warn!("{e}; working offline with what the server said before");
                    Ok(i)
                }
                None => Err(e.into()),
            },
            Err(e) => Err(e.into()),
        }
    }
}

fn info_cache(url: &str) -> Result<PathBuf> {
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

fn key_file(sec: &ServerSection) -> Result<PathBuf> {
    match &sec.key_file {
        Some(k) => Ok(k.clone()),
        None => Ok(paths::config_file()?.with_file_name("client.key")),
    }
}

/// Write `data` to `path` (owner only, durably), creating its folder.
pub(crate) fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(d) = path.parent() {
        rewind_core::private::create_dir_all(d)
            .with_context(|| format!("cannot create {}", d.display()))?;
    }
    rewind_core::private::write_file(path, data)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Write the `[server]` table, keeping the rest of the file as it is.
fn save_section(sec: &ServerSection) -> Result<()> {
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

/// Which repository a command works on (see the module documentation).
/// `section` is the `[server]` of a config file already read (`--config`);
/// `None` reads the default config file's.
pub fn resolve(
    repo: Option<&Path>,
    server: Option<&str>,
    section: Option<Option<ServerSection>>,
) -> Result<Target> {
    if let Some(r) = repo {
        return Ok(Target::Local(r.to_path_buf()));
    }
    let sec = match section {
        Some(s) => s,
        None => load_section()?,
    };
    let sec = match (server, sec) {
        (None, None) => return Ok(Target::Local(paths::default_repo()?)),
        (None, Some(s)) => s,
        (Some(url), Some(s)) => {
            let want = rewind_remote::normalize_url(url).map_err(anyhow::Error::msg)?;
            let have = rewind_remote::normalize_url(&s.url).map_err(anyhow::Error::msg)?;
            if want != have {
                bail!(
                    "this machine is enrolled with {have}, not {want}: run `rewind enroll {want} --name NAME --token TOKEN` first"
                );
            }
            s
        }
        (Some(url), None) => bail!(
            "this machine is not enrolled with {url}: run `rewind enroll {url} --name NAME --token TOKEN` first"
        ),
    };
    let kf = key_file(&sec)?;
    let key = std::fs::read_to_string(&kf)
        .with_context(|| format!("cannot read the client key {}", kf.display()))?;
    let limit = match &sec.limit_upload {
        Some(l) => Some(RateSchedule::parse(l).map_err(|e| anyhow::anyhow!("limit_upload: {e}"))?),
        None => None,
    };
    Ok(Target::Server(Box::new(Remote {
        cfg: RemoteConfig {
            url: sec.url,
            client: sec.client,
            key: key.trim().to_string(),
            fingerprint: sec.fingerprint,
        },
        limit,
    })))
}

/// `rewind enroll`.
pub fn enroll(a: crate::EnrollArgs) -> Result<i32> {
    let url = rewind_remote::normalize_url(&a.url).map_err(anyhow::Error::msg)?;
    if let Some(l) = &a.limit_upload {
        RateSchedule::parse(l).map_err(|e| anyhow::anyhow!("--limit-upload: {e}"))?;
    }
    let fingerprint = match &a.fingerprint {
        Some(f) => rewind_core::wire::parse_fingerprint(f).with_context(|| {
            format!("not a fingerprint: {f:?} (expected SHA256: and 64 hex digits, as `rewind-server fingerprint` prints)")
        })?,
        None => {
            let seen = rewind_remote::probe_fingerprint(&url)?;
            if !std::io::stdin().is_terminal() {
                bail!(
                    "{url} presents certificate {seen}; not on a terminal, so not trusting it blindly: \
                     check it with `rewind-server fingerprint` on the server, then pass --fingerprint {seen}"
                );
            }
            eprintln!("{url} presents the certificate {seen}");
            eprint!("Is that the fingerprint `rewind-server fingerprint` shows on the server? [y/N] ");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            if !matches!(line.trim(), "y" | "Y" | "yes") {
                bail!("not enrolled: the certificate was not confirmed");
            }
            seen
        }
    };
    let reply = rewind_remote::enroll(&url, &fingerprint, &a.name, &a.token)?;
    let sec = ServerSection {
        url: url.clone(),
        client: a.name.clone(),
        fingerprint: fingerprint.clone(),
        key_file: None,
        limit_upload: a.limit_upload.clone(),
    };
    let kf = key_file(&sec)?;
    write_private(&kf, format!("{}\n", reply.key).as_bytes())?;
    save_section(&sec)?;
    let cache = info_cache(&url)?;
    let _ = write_private(&cache, &serde_json::to_vec(&reply.info)?);
    if a.json.json {
        println!(
            "{}",
            serde_json::json!({
                "url": url,
                "client": a.name,
                "fingerprint": fingerprint,
                "repository": reply.info.repo_id,
                "config": paths::config_file()?.to_string_lossy(),
                "key_file": kf.to_string_lossy(),
            })
        );
    } else {
        println!(
            "enrolled as {} with {url} (certificate {fingerprint}); settings in {}, key in {}",
            a.name,
            paths::config_file()?.display(),
            kf.display()
        );
        println!("protect a folder with: rewind watch ~/Documents");
    }
    Ok(0)
}
