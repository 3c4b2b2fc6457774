//! The agent's configuration file (TOML; every key in docs/config.md).
//!
//! ```toml
//! repo = "/backup/rewind"          # optional; --repo and REWIND_REPO win
//!
//! [watch]
//! paths = ["/home/me/Documents"]
//! exclude = ["*.tmp"]
//! follow_symlinks = "never"       # or "outside-roots"
//! quiescence = "300ms"
//! busy_interval = "2s"
//! unwatched_rescan = "120s"       # past the inotify limit
//!
//! [retention]
//! policy = "all 24h, hourly 7d, daily 30d, weekly"
//! keep_free = "10%"
//! max_size = "200GiB"
//!
//! [ui]
//! listen = "127.0.0.1:0"           # the web UI; `enabled = false` turns it off
//!
//! [[dump]]
//! name = "crm"
//! kind = "postgres"
//! database = "crm"
//! schedule = "every 1h"
//! ```
//!
//! Unknown keys are errors (a typo must not silently disable a job).
//! `[server]` is written by `rewind enroll` (see `enrollment.rs`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rewind_dumps::{Job, JobConfig};
use serde::Deserialize;

use crate::pipeline::AgentOptions;
use crate::target::Target;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Repository directory.
    pub repo: Option<PathBuf>,
    /// A file whose first line is the password of an encrypted `repo`
    /// (relative: to the config file's folder), for an agent that has no
    /// terminal to ask at; `REWIND_PASSWORD[_FILE]` win over it.
    pub password_file: Option<PathBuf>,
    /// A key file that opens an encrypted `repo` (relative: to the config
    /// file's folder); `--key-file`/`REWIND_KEY_FILE` win over it, and it
    /// over `password_file`.
    pub repo_key_file: Option<PathBuf>,
    /// Folders to protect.
    pub watch: Option<WatchConfig>,
    /// Database dump jobs.
    #[serde(default)]
    pub dump: Vec<JobConfig>,
    /// The backup server (written by `rewind enroll`).
    pub server: Option<crate::enrollment::ServerSection>,
    /// How problems are told.
    pub notify: Option<NotifyConfig>,
    /// What history is kept, and when the agent forgets and prunes.
    pub retention: Option<crate::retention::RetentionConfig>,
    /// The local web UI.
    pub ui: Option<UiConfig>,
    /// Where the first pass gets one consistent moment from.
    pub snapshot: Option<SnapshotConfig>,
}

/// `[snapshot]`: a snapshot for the first pass (see `snapshot.rs`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    /// `"auto"` (btrfs where possible, the default), `"off"`, or
    /// `"command"` (with `create` and `remove`).
    pub kind: Option<String>,
    /// Makes a snapshot of `{root}` and prints the path to read it from.
    pub create: Option<Vec<String>>,
    /// Removes it (`{path}`, `{root}`).
    pub remove: Option<Vec<String>>,
}

/// `[ui]`: the local web UI the agent serves (`rewind ui` opens it).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiConfig {
    /// Serve it (default true).
    pub enabled: Option<bool>,
    /// Where to listen (default `127.0.0.1:0`: a free port on loopback).
    pub listen: Option<String>,
}

/// Where the web UI listens unless `[ui] listen` says otherwise: loopback
/// only, on a port the system picks (`rewind ui` asks the agent for it).
pub const DEFAULT_UI_LISTEN: std::net::SocketAddr = std::net::SocketAddr::V4(
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0),
);

/// `[notify]`: how the agent tells the user that protection stopped or
/// degraded (see `health.rs`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Desktop notifications (default true).
    pub desktop: Option<bool>,
    /// A command to run instead, with the summary and the body as its last
    /// two arguments (`["notify-send"]`, a script that sends mail, …).
    pub command: Option<Vec<String>>,
    /// Uploads failing this long is a problem (default `1h`).
    pub upload_stalled_after: Option<String>,
    /// Remind of a problem that lasts this long (default `24h`).
    pub remind_every: Option<String>,
}

/// `[watch]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// Folders to protect.
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// gitignore-style globs to leave out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// `"never"` (default) or `"outside-roots"`.
    #[serde(default)]
    pub follow_symlinks: crate::follow::FollowSymlinks,
    /// Quiet time before capture (`300ms`).
    pub quiescence: Option<String>,
    /// Globs naming groups of files that are one state (`["*/Mail/*.mbox*"]`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Longest time a busy file goes without a version (`2s`); the
    /// earlier name `max_interval` is read too.
    #[serde(alias = "max_interval")]
    pub busy_interval: Option<String>,
    /// Rescan period of directories past the inotify limit (`120s`).
    pub unwatched_rescan: Option<String>,
}

/// A config file read and checked.
pub struct Loaded {
    /// Where it came from (`None`: the default file does not exist).
    pub path: Option<PathBuf>,
    /// Its contents.
    pub config: Config,
    /// Its dump jobs, validated.
    pub jobs: Vec<Job>,
}

impl Loaded {
    /// Make the config's secret for an encrypted repository
    /// (`repo_key_file`, else `password_file`) the process's default,
    /// unless the command line or the environment named one already.
    pub fn use_repo_secret(&self) {
        if let Some(k) = &self.config.repo_key_file {
            rewind_repo::use_key_file(self.beside(k));
        }
        if let Some(p) = &self.config.password_file {
            rewind_repo::use_password_file(self.beside(p));
        }
    }

    /// Whether the config names a secret for an encrypted repository.
    pub fn names_repo_secret(&self) -> bool {
        self.config.repo_key_file.is_some() || self.config.password_file.is_some()
    }

    /// The repository the agent would open, when it is encrypted and the
    /// config names no secret for it: an agent started by a service has
    /// no terminal to ask at and no `REWIND_PASSWORD`, so it would fail at
    /// every start. `None` also when that cannot be told (no repository
    /// yet, a store that does not answer): the agent says so itself.
    pub fn encrypted_repo_without_secret(&self) -> Option<PathBuf> {
        if self.names_repo_secret() {
            return None;
        }
        let repo = match &self.config.repo {
            Some(r) => r.clone(),
            // Uploading to a server: the server holds the keys.
            None if self.config.server.is_some() => return None,
            None => crate::paths::default_repo().ok()?,
        };
        rewind_repo::LocalRepo::is_encrypted_at(&repo)
            .ok()
            .filter(|e| *e)
            .map(|_| repo)
    }

    /// `p` taken relative to the config file's folder.
    fn beside(&self, p: &Path) -> PathBuf {
        match self.path.as_deref().and_then(Path::parent) {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        }
    }

    /// The job called `name`, or a line listing the jobs there are.
    pub fn job(&self, name: &str) -> Result<&Job> {
        if let Some(j) = self.jobs.iter().find(|j| j.name() == name) {
            return Ok(j);
        }
        let known: Vec<&str> = self.jobs.iter().map(|j| j.name()).collect();
        match &self.path {
            None => bail!(
                "no dump job {name:?}: no config file (pass --config FILE or create {})",
                default_path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| "$XDG_CONFIG_HOME/rewind/config.toml".into())
            ),
            Some(p) if known.is_empty() => {
                bail!("no dump job {name:?}: {} has no [[dump]] jobs", p.display())
            }
            Some(p) => bail!(
                "no dump job {name:?} in {} (jobs: {})",
                p.display(),
                known.join(", ")
            ),
        }
    }

    /// `[watch] quiescence` / `busy_interval` / `unwatched_rescan`, or the
    /// defaults.
    pub fn watch_timing(&self) -> Result<(Duration, Duration, Duration)> {
        let w = self.config.watch.as_ref();
        let parse = |v: Option<&String>, key: &str, default: Duration| -> Result<Duration> {
            match v {
                None => Ok(default),
                Some(s) => rewind_dumps::parse_duration(s)
                    .map_err(|e| anyhow::anyhow!("{}: [watch] {key}: {e}", self.display_path())),
            }
        };
        Ok((
            parse(
                w.and_then(|w| w.quiescence.as_ref()),
                "quiescence",
                Duration::from_millis(300),
            )?,
            parse(
                w.and_then(|w| w.busy_interval.as_ref()),
                "busy_interval",
                rewind_watcher::DEFAULT_BUSY_INTERVAL,
            )?,
            parse(
                w.and_then(|w| w.unwatched_rescan.as_ref()),
                "unwatched_rescan",
                rewind_watcher::DEFAULT_UNWATCHED_RESCAN,
            )?,
        ))
    }

    /// How `rewind agent` runs with this config: `[watch]`, the dump
    /// jobs, `[notify]`, `[retention]`, `[snapshot]` and `[ui]`, into the
    /// target `target` resolves (asked only once the config is known to
    /// have something to do).
    pub fn agent_options(&self, target: impl FnOnce() -> Result<Target>) -> Result<AgentOptions> {
        let (quiescence, busy_interval, unwatched_rescan) = self.watch_timing()?;
        let w = self.config.watch.as_ref();
        let roots = w.map(|w| w.paths.clone()).unwrap_or_default();
        if roots.is_empty() && self.jobs.is_empty() {
            bail!(
                "{}: nothing to do (no [watch] paths and no [[dump]] jobs)",
                self.path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "no config file".into())
            );
        }
        let target = target()?;
        Ok(AgentOptions {
            excludes: w.map(|w| w.exclude.clone()).unwrap_or_default(),
            follow_symlinks: w.map(|w| w.follow_symlinks).unwrap_or_default(),
            quiescence,
            busy_interval,
            unwatched_rescan,
            dumps: self.jobs.clone(),
            health: self.health()?,
            groups: w.map(|w| w.groups.clone()).unwrap_or_default(),
            retention: self.retention()?,
            snapshot: self.snapshot()?,
            ui: self.ui()?,
            ..AgentOptions::new(roots, target)
        })
    }

    /// `[notify]`, or the defaults.
    pub fn health(&self) -> Result<crate::health::HealthSettings> {
        let mut h = crate::health::HealthSettings::default();
        let Some(n) = &self.config.notify else {
            return Ok(h);
        };
        let parse = |v: &String, key: &str| -> Result<Duration> {
            rewind_dumps::parse_duration(v)
                .map_err(|e| anyhow::anyhow!("{}: [notify] {key}: {e}", self.display_path()))
        };
        if let Some(d) = n.desktop {
            h.desktop = d;
        }
        if let Some(c) = &n.command {
            if c.is_empty() {
                bail!("{}: [notify] command is empty", self.display_path());
            }
            h.command = Some(c.clone());
        }
        if let Some(v) = &n.upload_stalled_after {
            h.upload_stalled_after = parse(v, "upload_stalled_after")?;
        }
        if let Some(v) = &n.remind_every {
            h.remind_every = parse(v, "remind_every")?;
        }
        Ok(h)
    }

    /// `[retention]` with the dump jobs' own policies, or the defaults.
    pub fn retention(&self) -> Result<crate::retention::RetentionSettings> {
        crate::retention::RetentionSettings::from_config(self.config.retention.as_ref(), &self.jobs)
            .map_err(|e| anyhow::anyhow!("{}: [retention] {e}", self.display_path()))
    }

    /// `[ui]`: where the web UI listens, or `None` when it is off.
    pub fn ui(&self) -> Result<Option<std::net::SocketAddr>> {
        let Some(u) = &self.config.ui else {
            return Ok(Some(DEFAULT_UI_LISTEN));
        };
        if u.enabled == Some(false) {
            return Ok(None);
        }
        match &u.listen {
            None => Ok(Some(DEFAULT_UI_LISTEN)),
            Some(l) => l.parse().map(Some).map_err(|_| {
                anyhow::anyhow!(
                    "{}: [ui] listen: {l:?} is not an address and port (like \"127.0.0.1:8765\")",
                    self.display_path()
                )
            }),
        }
    }

    /// `[snapshot]`, or the default (`auto`).
    pub fn snapshot(&self) -> Result<crate::snapshot::SnapshotSettings> {
        use crate::snapshot::SnapshotSettings;
        let Some(s) = &self.config.snapshot else {
            return Ok(SnapshotSettings::Auto);
        };
        match (s.kind.as_deref().unwrap_or("auto"), &s.create, &s.remove) {
            ("auto", None, None) => Ok(SnapshotSettings::Auto),
            ("off", None, None) => Ok(SnapshotSettings::Off),
            ("command", Some(c), Some(r)) if !c.is_empty() && !r.is_empty() => {
                Ok(SnapshotSettings::Command {
                    create: c.clone(),
                    remove: r.clone(),
                })
            }
            ("command", _, _) => bail!(
                "{}: [snapshot] kind = \"command\" needs create = [...] and remove = [...]",
                self.display_path()
            ),
            ("auto" | "off", _, _) => bail!(
                "{}: [snapshot] create and remove are for kind = \"command\"",
                self.display_path()
            ),
            (k, _, _) => bail!(
                "{}: [snapshot] kind = {k:?}: expected \"auto\", \"off\" or \"command\"",
                self.display_path()
            ),
        }
    }

    fn display_path(&self) -> String {
        self.path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(no config file)".into())
    }
}

/// `$XDG_CONFIG_HOME/rewind/config.toml` (macOS:
/// `~/Library/Application Support/rewind/config.toml`).
pub fn default_path() -> Result<PathBuf> {
    crate::paths::config_file()
}

/// Read `path`, or the default file when `None` (a missing default file is
/// an empty config; a missing named one is an error).
pub fn load(path: Option<&Path>) -> Result<Loaded> {
    let (path, explicit) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (default_path()?, false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(Loaded {
                path: None,
                config: Config::default(),
                jobs: Vec::new(),
            });
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let config = parse(&text, &path)?;
    let mut jobs = Vec::new();
    for c in &config.dump {
        if jobs.iter().any(|j: &Job| j.name() == c.name) {
            bail!(
                "{}: two [[dump]] jobs are named {:?}",
                path.display(),
                c.name
            );
        }
        jobs.push(Job::new(c.clone()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?);
    }
    Ok(Loaded {
        path: Some(path),
        config,
        jobs,
    })
}

/// Parse the text of a config file; errors are one line with the file,
/// line and column.
pub fn parse(text: &str, path: &Path) -> Result<Config> {
    toml::from_str(text).map_err(|e| {
        let at = e
            .span()
            .map(|s| {
                let before = &text[..s.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!(":{line}:{col}")
            })
            .unwrap_or_default();
        anyhow::anyhow!(
            "{}{at}: {}",
            path.display(),
            e.message().trim().replace('\n', " ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_example_parses() {
        let c = parse(
            r#"
repo = "/tmp/r"
[watch]
paths = ["/a", "/b"]
exclude = ["*.tmp"]
quiescence = "100ms"

[[dump]]
name = "crm"
kind = "postgres"
database = "crm"
host = "127.0.0.1"
port = 5432
user = "backup"
password_file = "/etc/rewind/pw"
args = ["--no-owner"]
schedule = "0 3 * * *"
timeout = "2h"

[[dump]]
name = "etc"
kind = "command"
command = ["tar", "-C", "/etc", "-cf", "-", "."]
"#,
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.dump.len(), 2);
        assert_eq!(c.watch.unwrap().paths.len(), 2);
    }

    fn loaded(text: &str) -> Loaded {
        Loaded {
            path: Some("c.toml".into()),
            config: parse(text, Path::new("c.toml")).unwrap(),
            jobs: Vec::new(),
        }
    }

    #[test]
    fn the_ui_listens_on_loopback_unless_told_otherwise() {
        assert_eq!(loaded("").ui().unwrap(), Some(DEFAULT_UI_LISTEN));
        assert_eq!(
            loaded("[ui]\nlisten = \"127.0.0.1:8765\"\n").ui().unwrap(),
            Some("127.0.0.1:8765".parse().unwrap())
        );
        assert_eq!(loaded("[ui]\nenabled = false\n").ui().unwrap(), None);
        let e = loaded("[ui]\nlisten = \"localhost\"\n").ui().unwrap_err();
        assert!(e.to_string().starts_with("c.toml: [ui] listen:"), "{e}");
    }

    #[test]
    fn the_rescan_period_of_unwatched_folders_is_a_watch_key() {
        let (_, _, d) = loaded("").watch_timing().unwrap();
        assert_eq!(d, rewind_watcher::DEFAULT_UNWATCHED_RESCAN);
        let (_, _, d) = loaded("[watch]\nunwatched_rescan = \"10s\"\n")
            .watch_timing()
            .unwrap();
        assert_eq!(d, Duration::from_secs(10));
        let e = loaded("[watch]\nunwatched_rescan = \"often\"\n")
            .watch_timing()
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("c.toml: [watch] unwatched_rescan:"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse(
            "[[dump]]\nname = \"x\"\nkind = \"command\"\ncomand = [\"true\"]\n",
            Path::new("/etc/c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("/etc/c.toml:4:1: unknown field `comand`"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        let e = parse(
            "[[dump]]\nname = \"x\"\nkind = \"oracle\"\n",
            Path::new("c"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("c:3:"), "{e}");
    }
}
