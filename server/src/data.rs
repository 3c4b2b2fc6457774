//! The server's data directory: the repository, the TLS certificate, the
//! admin secret's hash, the client registry and each client's chunk list.
//!
//! ```text
//! DATA/repo/            the repository (same format as an embedded one), unless:
//! DATA/store            the repository's URL (`s3://BUCKET/PREFIX`) when it lives
//!                       on an object store (`init --store`); one line, no credentials
//! DATA/tls/cert.pem     self-signed certificate (clients pin its fingerprint)
//! DATA/tls/key.pem      its private key (mode 0600)
//! DATA/admin.hash       argon2 hash of the admin secret (guards /metrics)
//! DATA/clients.json     the client registry: names, argon2 hashes of tokens and keys
//! DATA/clients.lock     serialises changes to the registry between processes
//! DATA/owners/NAME.ids  the chunk ids each client has uploaded (32 bytes each)
//! ```

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rewind_core::{Timestamp, private};
use serde::{Deserialize, Serialize};

use crate::secrets;

/// Paths inside a data directory.
#[derive(Clone, Debug)]
pub struct DataDir {
    root: PathBuf,
    /// What `DATA/store` says: the repository's URL, none (the repository
    /// is `DATA/repo`), or why it cannot be read (reported by `check`).
    store: Result<Option<PathBuf>, String>,
}

impl DataDir {
    /// The data directory at `root`.
    pub fn new(root: &Path) -> DataDir {
        let file = root.join("store");
        let store = match fs::read_to_string(&file) {
            Ok(s) => match s.trim() {
                url if rewind_repo::is_url(Path::new(url)) => Ok(Some(PathBuf::from(url))),
                _ => Err(format!(
                    "{}: not an object store URL (s3://BUCKET/PREFIX)",
                    file.display()
                )),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", file.display())),
        };
        DataDir {
            root: root.to_path_buf(),
            store,
        }
    }

    /// The repository: `DATA/repo`, or the URL in `DATA/store`.
    pub fn repo(&self) -> PathBuf {
        match &self.store {
            Ok(Some(url)) => url.clone(),
            _ => self.root.join("repo"),
        }
    }

    /// The file that names the repository's object store.
    fn store_file(&self) -> PathBuf {
        self.root.join("store")
    }

    /// The key file of an encrypted repository (`init --encrypt`): 0600,
    /// beside the TLS key; the server opens its repository with it.
    pub fn repo_key(&self) -> PathBuf {
        self.root.join("repo.key")
    }

    /// The certificate.
    pub fn cert(&self) -> PathBuf {
        self.root.join("tls/cert.pem")
    }

    /// The certificate's key.
    pub fn key(&self) -> PathBuf {
        self.root.join("tls/key.pem")
    }

    /// The admin secret's hash.
    pub fn admin(&self) -> PathBuf {
        self.root.join("admin.hash")
    }

    /// The client registry.
    pub fn clients(&self) -> PathBuf {
        self.root.join("clients.json")
    }

    /// Per-client chunk lists.
    pub fn owners(&self) -> PathBuf {
        self.root.join("owners")
    }

    /// Refuse to serve from a directory that other accounts can write to
    /// (they could replace the certificate, the registry or packs), and
    /// make one written before everything was private (issue 21) private.
    pub fn check_private(&self) -> Result<()> {
        let md = fs::metadata(&self.root)
            .with_context(|| format!("cannot read {}", self.root.display()))?;
        let mode = md.permissions().mode();
        if mode & 0o022 != 0 {
            bail!(
                "{}: other accounts can write to it (mode {:o}); refusing to serve from it \
                 (chmod 700 {} to fix)",
                self.root.display(),
                mode & 0o7777,
                self.root.display()
            );
        }
        private::tighten_if_loose(&self.root, "server data");
        Ok(())
    }

    /// Fail with a clear message unless `init` made this directory.
    pub fn check(&self) -> Result<()> {
        if let Err(e) = &self.store {
            bail!("{e}");
        }
        if !self.clients().exists() || !rewind_repo::LocalRepo::exists(&self.repo())? {
            bail!(
                "{} is not a rewind-server data directory (create one with `rewind-server init --data {}`)",
                self.root.display(),
                self.root.display()
            );
        }
        Ok(())
    }
}

/// What `init` made.
pub struct Created {
    /// Repository id.
    pub repo_id: String,
    /// The certificate's fingerprint.
    pub fingerprint: String,
    /// The admin secret (shown once).
    pub admin_secret: String,
}

/// Create a data directory: repository (in it, or at `store`, an
/// `s3://BUCKET/PREFIX` URL), certificate for `names`, admin secret, empty
/// registry.
pub fn init(dir: &DataDir, names: &[String], store: Option<&str>) -> Result<Created> {
    init_with(dir, names, store, false)
}

/// [`init`], with an encrypted repository when `encrypt`: its key is
/// sealed for a new key file, `DATA/repo.key` (0600; reused when an
/// earlier init stopped after writing it), with which the server opens the
/// repository (docs/decisions.md, "Encryption at rest (issue 20), step 2").
pub fn init_with(
    dir: &DataDir,
    names: &[String],
    store: Option<&str>,
    encrypt: bool,
) -> Result<Created> {
    if dir.clients().exists() || dir.store_file().exists() || dir.root.join("repo/config").exists()
    {
        bail!("{} already holds a rewind-server", dir.root.display());
    }
    let store = store.map(check_store_url).transpose()?;
    private::create_dir_all(&dir.root.join("tls"))
        .with_context(|| format!("cannot create {}", dir.root.display()))?;
    private::create_dir_all(&dir.owners())
        .with_context(|| format!("cannot create {}", dir.owners().display()))?;
    let repo_dir = store.clone().unwrap_or_else(|| dir.root.join("repo"));
    let repo = if encrypt {
        let kf = dir.repo_key();
        let key = if kf.exists() {
            rewind_repo::KeyFileKey::read(&kf)?
        } else {
            let k = rewind_repo::KeyFileKey::generate()?;
            k.write_new(&kf)?;
            k
        };
        rewind_repo::LocalRepo::init_encrypted(
            &repo_dir,
            rewind_core::DEFAULT_CHUNKER,
            &rewind_repo::Secret::KeyFile(key),
            rewind_repo::Argon2Params::DEFAULT,
        )?
    } else {
        rewind_repo::LocalRepo::init(&repo_dir, rewind_core::DEFAULT_CHUNKER)?
    };
    if let Some(url) = &store {
        // Written after the repository exists, before the registry: a
        // data directory without `clients.json` is not one yet, so an
        // init that stops here is run again (and then finds the
        // repository on the store: `already exists`, named).
        let line = format!("{}\n", url.display());
        write_private(&dir.store_file(), line.as_bytes())?;
    }

    let cert = rcgen::generate_simple_self_signed(names.to_vec())
        .context("cannot generate the TLS certificate")?;
    write_private(&dir.key(), cert.key_pair.serialize_pem().as_bytes())?;
    write_private(&dir.cert(), cert.cert.pem().as_bytes())?;
    let fingerprint = rewind_core::wire::fingerprint(cert.cert.der());

    let admin_secret = secrets::new_secret();
    write_private(
        &dir.admin(),
        secrets::hash_secret(&admin_secret)?.as_bytes(),
    )?;
    save_clients(dir, &Clients::default())?;
    Ok(Created {
        repo_id: repo.id().to_string(),
        fingerprint,
        admin_secret,
    })
}

/// `url` as a repository root: `s3://BUCKET/PREFIX` without credentials
/// in it (they come from the environment: `AWS_ACCESS_KEY_ID`, …). The
/// error never repeats a URL that may hold a secret.
fn check_store_url(url: &str) -> Result<PathBuf> {
    let rest = url.strip_prefix("s3://").unwrap_or("");
    let bucket = rest.split('/').next().unwrap_or("");
    if bucket.contains('@') || bucket.contains(':') {
        bail!(
            "--store: the URL must not hold credentials (write s3://BUCKET/PREFIX; \
             they come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        );
    }
    let prefix = rest
        .split_once('/')
        .map_or("", |(_, p)| p)
        .trim_matches('/');
    if bucket.is_empty() || prefix.is_empty() || url.contains(char::is_whitespace) {
        bail!("--store {url}: not an object store URL (write s3://BUCKET/PREFIX)");
    }
    Ok(PathBuf::from(format!("s3://{bucket}/{prefix}")))
}

/// Write a file only its owner can read, durably.
fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    private::write_file(path, data).with_context(|| format!("cannot write {}", path.display()))
}

/// The client registry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clients {
    /// Every client ever added; removed ones stay, marked, so their name
    /// is not handed to someone else by mistake.
    pub clients: Vec<ClientRecord>,
    /// The retention policy of clients without one of their own
    /// (`rewind-server policy SPEC`; absent: [`DEFAULT_POLICY`](rewind_core::retention::DEFAULT_POLICY)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_policy: Option<String>,
}

/// One client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientRecord {
    /// Its name (versions are stored under it).
    pub name: String,
    /// When it was added.
    pub added: String,
    /// argon2 hash of the latest enrollment token (kept after use, so a
    /// second use can be told apart from a wrong token).
    pub token_hash: Option<String>,
    /// When that token stops working (RFC 3339; absent in registries
    /// written before tokens expired: such a token does not expire).
    #[serde(default)]
    pub token_expires: Option<String>,
    /// When that token was used.
    #[serde(default)]
    pub token_used: Option<String>,
    /// argon2 hash of the client key, once enrolled.
    pub key_hash: Option<String>,
    /// When it enrolled.
    pub enrolled: Option<String>,
    /// When it was removed (its key no longer works).
    pub removed: Option<String>,
    /// Its retention policy (`rewind-server client policy NAME SPEC`;
    /// absent: the server's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The retention policies of its dump jobs, by job name (`client
    /// policy NAME SPEC --dump JOB`; a job not named here: `last 14,
    /// weekly 13w`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub dump_policies: std::collections::BTreeMap<String, String>,
}

impl Clients {
    /// The record of `name`.
    pub fn get(&self, name: &str) -> Option<&ClientRecord> {
        self.clients.iter().find(|c| c.name == name)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut ClientRecord> {
        self.clients.iter_mut().find(|c| c.name == name)
    }
}

/// Client names become file names and appear in URLs and logs.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        bail!(
            "invalid client name {name:?}: use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.' or '-'"
        );
    }
    Ok(())
}

/// Read the registry.
pub fn load_clients(dir: &DataDir) -> Result<Clients> {
    let p = dir.clients();
    let b = fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
    serde_json::from_slice(&b).with_context(|| format!("{}: damaged registry", p.display()))
}

fn save_clients(dir: &DataDir, c: &Clients) -> Result<()> {
    let mut b = serde_json::to_vec_pretty(c)?;
    b.push(b'\n');
    write_private(&dir.clients(), &b)
}

/// Change the registry under an exclusive lock shared with a running
/// server (which enrolls clients) and other admin commands.
pub fn update_clients<T>(dir: &DataDir, f: impl FnOnce(&mut Clients) -> Result<T>) -> Result<T> {
    let lock_path = dir.root.join("clients.lock");
    let lock = private::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    let before = load_clients(dir)?;
    let mut c = before.clone();
    let out = f(&mut c)?;
    // Only a change is written: a running server reloads the registry
    // when the file changes.
    if c != before {
        save_clients(dir, &c)?;
    }
    Ok(out)
}

/// How long an enrollment token works unless `client add --expires` says
/// otherwise: long enough to carry it to the machine the same day, short
/// enough that a token forgotten in a mail or a ticket soon stops working.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(24 * 3600);

/// True when the RFC 3339 time `at` has passed (or cannot be read: a
/// damaged expiry fails closed).
pub fn is_past(at: &str) -> bool {
    match at.parse::<jiff::Timestamp>() {
        Ok(t) => t <= jiff::Timestamp::now(),
        Err(e) => {
            tracing::error!(
                "unreadable token expiry {at:?} in the registry ({e}): treated as expired"
            );
            true
        }
    }
}

/// `client add`: a new client with a fresh one-time token that works for
/// `expires`. Returns the token and when it expires (RFC 3339).
pub fn add_client(
    dir: &DataDir,
    name: &str,
    reuse: bool,
    expires: Duration,
) -> Result<(String, String)> {
    check_name(name)?;
    let until = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::try_from(expires)?)
        .map_err(|e| anyhow::anyhow!("--expires: {e}"))?
        .to_string();
    let token = secrets::new_secret();
    let hash = secrets::hash_secret(&token)?;
    update_clients(dir, |c| {
        let now = Timestamp::now().to_string();
        let new_token = |r: &mut ClientRecord| {
            r.token_hash = Some(hash.clone());
            r.token_expires = Some(until.clone());
            r.token_used = None;
        };
        match c.get_mut(name) {
            Some(r) if r.removed.is_some() && reuse => {
                new_token(r);
                r.key_hash = None;
                r.enrolled = None;
                r.removed = None;
                r.added = now;
            }
            Some(r) if r.removed.is_some() => bail!(
                "client {name} was removed and its versions are still stored; \
                 `client add {name} --reuse` gives them to the new enrollment"
            ),
            Some(r) if r.enrolled.is_none() => {
                // A lost or expired token: replace it.
                new_token(r);
            }
            Some(_) => bail!(
                "client {name} exists and is enrolled (remove it first to enroll a new machine under that name)"
            ),
            None => c.clients.push(ClientRecord {
                name: name.to_string(),
                added: now,
                token_hash: Some(hash.clone()),
                token_expires: Some(until.clone()),
                token_used: None,
                key_hash: None,
                enrolled: None,
                removed: None,
                policy: None,
                dump_policies: Default::default(),
            }),
        }
        Ok(())
    })?;
    Ok((token, until))
}

/// `client remove`: the key and any pending token stop working at once;
/// stored versions stay.
pub fn remove_client(dir: &DataDir, name: &str) -> Result<()> {
    update_clients(dir, |c| {
        let Some(r) = c.get_mut(name).filter(|r| r.removed.is_none()) else {
            bail!("no client named {name}");
        };
        r.token_hash = None;
        r.key_hash = None;
        r.removed = Some(Timestamp::now().to_string());
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["laptop", "web-1", "a.b_c"] {
            check_name(good).unwrap();
        }
        for bad in ["", ".hidden", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn add_remove_and_reuse() {
        let t = tempfile::tempdir().unwrap();
        let d = DataDir::new(t.path());
        let created = init(&d, &["localhost".into()], None).unwrap();
        assert!(created.fingerprint.starts_with("SHA256:"));
        d.check().unwrap();
        assert!(init(&d, &["localhost".into()], None).is_err());
        let (tok, until) = add_client(&d, "laptop", false, DEFAULT_EXPIRY).unwrap();
        assert!(!is_past(&until));
        let c = load_clients(&d).unwrap();
        let r = c.get("laptop").unwrap();
        assert!(secrets::verify_secret(
            &tok,
            r.token_hash.as_deref().unwrap()
        ));
        assert!(!fs::read_to_string(d.clients()).unwrap().contains(&tok));
        remove_client(&d, "laptop").unwrap();
        assert!(remove_client(&d, "laptop").is_err());
        let e = add_client(&d, "laptop", false, DEFAULT_EXPIRY)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--reuse"), "{e}");
        add_client(&d, "laptop", true, DEFAULT_EXPIRY).unwrap();
        // A change that changes nothing writes nothing.
        let before = fs::metadata(d.clients()).unwrap();
        update_clients(&d, |_| Ok(())).unwrap();
        let after = fs::metadata(d.clients()).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(before.ino(), after.ino());
    }
}
