//! Which repository a command or the agent works on, and opening it.
//!
//! Choice: `--repo DIR` → that local repository; `--server URL` → that
//! server (it must be the enrolled one); neither → the enrolled server if
//! there is one, else the embedded local repository. Opening is one
//! function for every caller ([`Target::open`]): for reading (the one-shot
//! commands) or for writing (the agent, a dump run), which creates a
//! missing local repository and sets up what the uploader needs. A path a
//! person gives becomes the path the repository stores through
//! [`Opened::stored_path`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rewind_core::path::to_bytes;
use rewind_core::wire::ServerInfo;
use rewind_core::{ChunkSink, ChunkerParams, RepoError, Repository, Timestamp, Version};
use rewind_remote::{RateSchedule, RemoteConfig, RemoteRepo};
use rewind_repo::LocalRepo;
use rewind_uploader::UploadOptions;

use crate::enrollment::{self, ServerSection};
use crate::paths;

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
        match repo.info() {
            Ok(i) => {
                enrollment::cache_info(&self.cfg.url, &i);
                Ok(i)
            }
            Err(e) if e.is_transient() => match enrollment::cached_info(&self.cfg.url) {
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
        None => enrollment::load_section()?,
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
    let kf = enrollment::key_file(&sec)?;
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

/// What a repository is opened for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access<'a> {
    /// Queries and restores (a local repository is opened read-only and
    /// must exist).
    Read,
    /// Capture and upload: a missing local repository is created; a
    /// server's upload limit may be overridden.
    Write {
        /// `--limit-upload`, overriding the enrolled limit.
        limit_upload: Option<&'a str>,
    },
}

/// An opened repository and what is known about it.
pub struct Opened {
    /// The repository.
    pub repo: Arc<dyn Repository>,
    /// Where capture hands chunks directly when writing: the embedded
    /// repository, or the server while it keeps up.
    pub sink: Option<Arc<dyn ChunkSink>>,
    /// Repository id (names the journal directory).
    pub id: String,
    /// The chunker bounds this repository requires.
    pub chunker: ChunkerParams,
    /// The client name versions are recorded under.
    pub client: String,
    /// The journal directory of this repository.
    pub jdir: PathBuf,
    /// A local repository's directory (never captured).
    pub local: Option<PathBuf>,
    /// For `status`: the directory or the URL.
    pub describe: String,
    /// How the uploader drains into it.
    pub upload: UploadOptions,
    /// Every version of this client, a page at a time (the web UI's
    /// timeline and search).
    pub history: Arc<dyn rewind_ui::History>,
}

impl Opened {
    /// The stored form of a user-given path, checked to lie inside something
    /// that was protected. `dumps` and `dumps/NAME` (as typed, relative) name
    /// the virtual paths of database dumps, unless a protected folder holds a
    /// real `dumps` there.
    pub fn stored_path(&self, p: &Path) -> Result<Vec<u8>> {
        // A symlink names itself (its versions, its restore), unless only what
        // it points to is protected (a protected folder given by a link to it).
        let link = rewind_core::path::absolute_nofollow(p)
            .with_context(|| format!("cannot resolve {}", p.display()))?;
        let abs = rewind_core::path::absolute(p)
            .with_context(|| format!("cannot resolve {}", p.display()))?;
        if link != abs && self.repo.covers(&self.client, to_bytes(&link))? {
            return Ok(to_bytes(&link).to_vec());
        }
        let b = to_bytes(&abs).to_vec();
        if !self.repo.covers(&self.client, &b)? {
            let raw = to_bytes(p);
            let mut v = raw.to_vec();
            while v.len() > 1 && v.ends_with(b"/") {
                v.pop();
            }
            if (v == b"dumps" || v.starts_with(b"dumps/"))
                && !self
                    .repo
                    .tree_at(&self.client, &v, Timestamp::MAX)?
                    .is_empty()
            {
                return Ok(v);
            }
            bail!(
                "{} is not inside any protected folder of this repository",
                abs.display()
            );
        }
        Ok(b)
    }
}

/// A local repository's versions of one client.
struct LocalHistory {
    repo: Arc<LocalRepo>,
    client: String,
}

impl rewind_ui::History for LocalHistory {
    fn list_page(&self, after: Option<&[u8]>, limit: usize) -> Result<Vec<Version>, RepoError> {
        Ok(self.repo.list_page(&self.client, after, limit))
    }
}

/// A server's versions of this client (the server answers with the
/// asking client's versions only).
struct RemoteHistory(Arc<RemoteRepo>);

impl rewind_ui::History for RemoteHistory {
    fn list_page(&self, after: Option<&[u8]>, limit: usize) -> Result<Vec<Version>, RepoError> {
        self.0.list_page(after, limit.min(u32::MAX as usize) as u32)
    }
}

impl Target {
    /// Whether a request this process sends may reach the repository after
    /// the process died: an object store's (a store or a proxy may hold a
    /// request; the client's timeout does not stop it), a server's (it
    /// finishes a request whose client went away). A local directory is
    /// written by this process alone, and a killed process writes nothing
    /// more.
    pub fn late_requests(&self) -> bool {
        match self {
            Target::Local(dir) => rewind_repo::is_url(dir),
            Target::Server(_) => true,
        }
    }

    /// Open the repository (see [`Access`]).
    pub fn open(&self, access: Access<'_>) -> Result<Opened> {
        match self {
            Target::Local(dir) => {
                let repo = match access {
                    Access::Read => LocalRepo::open(dir)?,
                    Access::Write { .. } if LocalRepo::exists(dir)? => LocalRepo::open_writer(dir)?,
                    Access::Write { .. } => {
                        // An object store's repository is encrypted by
                        // default, which needs a new password typed twice
                        // or a key file: `rewind init` asks for those, a
                        // backup run does not make one up.
                        if rewind_repo::is_url(dir) {
                            anyhow::bail!(
                                "no repository at {}: create it with `rewind init --repo {}` (encrypted unless --no-encrypt)",
                                dir.display(),
                                dir.display()
                            );
                        }
                        rewind_core::private::create_dir_all(dir).with_context(|| {
                            format!("cannot create repository {}", dir.display())
                        })?;
                        let r = LocalRepo::init(dir, rewind_core::DEFAULT_CHUNKER)?;
                        eprintln!("rewind: created repository {}", dir.display());
                        r
                    }
                };
                if let Access::Write { .. } = access {
                    // Chunks reach the repository from capture in this
                    // process (or from our own CRC-checked spool): decoding
                    // each one again only to re-hash it would cost about a
                    // tenth of the first pass (measured, docs/decisions.md).
                    repo.set_check_puts(false);
                }
                let path = repo
                    .path()
                    .canonicalize()
                    .unwrap_or(repo.path().to_path_buf());
                let jdir = paths::journal_dir(repo.id())?;
                let repo = Arc::new(repo);
                let client = paths::client_name(&jdir);
                Ok(Opened {
                    history: Arc::new(LocalHistory {
                        repo: repo.clone(),
                        client: client.clone(),
                    }),
                    client,
                    jdir,
                    id: repo.id().to_string(),
                    chunker: repo.chunker(),
                    sink: matches!(access, Access::Write { .. })
                        .then(|| repo.clone() as Arc<dyn ChunkSink>),
                    repo,
                    describe: path.to_string_lossy().into_owned(),
                    local: Some(path),
                    upload: UploadOptions::default(),
                })
            }
            Target::Server(remote) => {
                let mut remote = (**remote).clone();
                if let Access::Write {
                    limit_upload: Some(l),
                } = access
                {
                    remote.limit = Some(
                        RateSchedule::parse(l)
                            .map_err(|e| anyhow::anyhow!("--limit-upload: {e}"))?,
                    );
                }
                let mut r = remote.connect()?;
                let info = remote.info(&r)?;
                // An encrypted repository's clients name chunks with its
                // chunk-id key, which the server sends with its info.
                r.set_chunk_ids(info.chunk_ids());
                let r = Arc::new(r);
                Ok(Opened {
                    history: Arc::new(RemoteHistory(r.clone())),
                    jdir: paths::journal_dir(&info.repo_id)?,
                    id: info.repo_id.clone(),
                    chunker: info.chunker,
                    sink: matches!(access, Access::Write { .. })
                        .then(|| r.clone() as Arc<dyn ChunkSink>),
                    repo: r,
                    client: info.client.clone(),
                    local: None,
                    describe: remote.cfg.url.clone(),
                    upload: UploadOptions::remote(),
                })
            }
        }
    }

    /// The repository's id without opening it for work (`None` when a
    /// local one does not exist): where a running agent's socket is.
    pub fn id(&self) -> Result<Option<String>> {
        match self {
            // From the config alone: an encrypted repository's keys are
            // not needed to find its agent.
            Target::Local(dir) => Ok(LocalRepo::read_id(dir).ok()),
            Target::Server(remote) => Ok(Some(remote.info(&remote.connect()?)?.repo_id)),
        }
    }
}
