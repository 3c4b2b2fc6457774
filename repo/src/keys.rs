//! `DIR/keys/<8 hex>`: the key slots of an encrypted repository, one small
//! object per slot (docs/decisions.md, "Encryption at rest (issue 20)",
//! steps 1 and 2), and opening the repository's keys with a secret.
//!
//! - A slot is created with put-if-absent and read back and opened with
//!   the secret that made it before its creation is reported (house rule
//!   8); `key remove` is one delete, so two `key add`s never lose each
//!   other's slot.
//! - A slot that does not decode (damaged, truncated, a later format) is
//!   skipped with a warning: it costs only that slot.

use std::path::{Path, PathBuf};

use rewind_core::RepoError;
use rewind_crypto::{
    Argon2Params, CryptoError, Env, KeyFileKey, KeySlot, Keyring, MasterKey, Opened,
    PASSWORD_FILE_VAR, PASSWORD_VAR, Password, ProcessEnv, SlotId, SlotLabel, Terminal,
    read_password,
};
use tracing::warn;

use crate::durable::io_err;

/// A secret that opens a key slot.
pub enum Secret {
    /// A password (argon2id slots).
    Password(Password),
    /// A key file's key (key-file slots).
    KeyFile(KeyFileKey),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Password(_) => f.write_str("Secret::Password(..)"),
            Secret::KeyFile(_) => f.write_str("Secret::KeyFile(..)"),
        }
    }
}

/// Where the secret of an encrypted repository comes from when it is
/// opened: asked only when the repository turns out to be encrypted, so
/// a plain repository never prompts.
pub trait Secrets: Sync {
    /// The secret to try.
    fn secret(&self) -> Result<Secret, CryptoError>;
}

/// The process's secret: a key file when one was named (`--key-file`),
/// else a password from `REWIND_PASSWORD`, `REWIND_PASSWORD_FILE`, the
/// password file a config names (`password_file`), or the terminal
/// ([`rewind_crypto::read_password`]).
#[derive(Clone, Debug, Default)]
pub struct FromEnvironment {
    /// A key file to use instead of a password.
    pub key_file: Option<PathBuf>,
    /// A file whose first line is the password, used when neither
    /// `REWIND_PASSWORD` nor `REWIND_PASSWORD_FILE` is set.
    pub password_file: Option<PathBuf>,
}

impl Secrets for FromEnvironment {
    fn secret(&self) -> Result<Secret, CryptoError> {
        if let Some(p) = &self.key_file {
            return KeyFileKey::read(p).map(Secret::KeyFile);
        }
        let set = |var| ProcessEnv.var_os(var).is_some_and(|v| !v.is_empty());
        match &self.password_file {
            Some(file) if !set(PASSWORD_VAR) && !set(PASSWORD_FILE_VAR) => {
                read_password(&NamedFile(file), &Terminal).map(Secret::Password)
            }
            _ => read_password(&ProcessEnv, &Terminal).map(Secret::Password),
        }
    }
}

/// An environment in which `REWIND_PASSWORD_FILE` names `.0` and nothing
/// else is set: the password file of a config, read as the variable's.
struct NamedFile<'a>(&'a Path);

impl Env for NamedFile<'_> {
    fn var_os(&self, name: &str) -> Option<std::ffi::OsString> {
        (name == PASSWORD_FILE_VAR).then(|| self.0.as_os_str().to_owned())
    }
}

static DEFAULT: std::sync::OnceLock<FromEnvironment> = std::sync::OnceLock::new();

/// Make `key_file` the secret of every repository this process opens
/// without naming one ([`crate::LocalRepo::open`] and the like); the
/// command line calls it once, for `--key-file`. Later calls are ignored.
pub fn use_key_file(key_file: PathBuf) {
    let _ = DEFAULT.set(FromEnvironment {
        key_file: Some(key_file),
        password_file: None,
    });
}

/// Make the file `password_file` the password of every repository this
/// process opens without naming a secret, unless `REWIND_PASSWORD` or
/// `REWIND_PASSWORD_FILE` is set; the agent calls it for its config's
/// `password_file`. Ignored after [`use_key_file`] or a first call.
pub fn use_password_file(password_file: PathBuf) {
    let _ = DEFAULT.set(FromEnvironment {
        key_file: None,
        password_file: Some(password_file),
    });
}

/// The process's default secrets ([`use_key_file`], else a password).
pub(crate) fn default_secrets() -> &'static FromEnvironment {
    DEFAULT.get_or_init(FromEnvironment::default)
}

/// One key slot as `rewind key list` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SlotInfo {
    /// 8 hex digits.
    pub id: String,
    /// `password` or `key-file`.
    pub kind: &'static str,
    /// Seconds since the Unix epoch.
    pub created: i64,
    /// The host it was added on.
    pub host: String,
    /// The user who added it.
    pub user: String,
    /// Whether it is the slot this handle was opened with.
    pub in_use: bool,
}

fn keys_dir(dir: &Path) -> PathBuf {
    dir.join("keys")
}

fn keys_err(dir: &Path, reason: impl Into<String>) -> RepoError {
    RepoError::Keys {
        path: dir.to_path_buf(),
        reason: reason.into(),
    }
}

/// The slots stored under `DIR/keys/`, damaged ones left out (warned).
pub(crate) fn read_keyring(dir: &Path) -> Result<Keyring, RepoError> {
    let kd = keys_dir(dir);
    let mut slots = Vec::new();
    for (name, path) in crate::store::list(&kd).map_err(io_err(&kd))? {
        if name.len() != 8 || name.parse::<SlotId>().is_err() {
            continue;
        }
        let mut bytes = Vec::new();
        use std::io::Read;
        let r = crate::store::open_read(&path).and_then(|f| {
            f.take(rewind_crypto::MAX_SLOT_FILE as u64 + 1)
                .read_to_end(&mut bytes)
        });
        if let Err(e) = r {
            return Err(io_err(&path)(e));
        }
        match KeySlot::decode(&bytes) {
            Ok(s) if s.id().to_string() == name => slots.push(s),
            Ok(_) => warn!(slot = %path.display(), "key slot under another slot's name; skipped"),
            Err(e) => warn!(slot = %path.display(), "key slot skipped: {e}"),
        }
    }
    slots.sort_by_key(|s| (s.created(), s.id().0));
    Ok(Keyring::from_slots(slots))
}

/// Open the master key of the repository in `dir` with `secret`.
pub(crate) fn open_keys(dir: &Path, secret: &Secret) -> Result<Opened, RepoError> {
    let ring = read_keyring(dir)?;
    if ring.slots().is_empty() {
        return Err(keys_err(
            dir,
            "is encrypted but has no readable key slot in keys/",
        ));
    }
    let r = match secret {
        Secret::Password(p) => ring.open_with_password(p),
        Secret::KeyFile(k) => ring.open_with_key_file(k),
    };
    r.map_err(|e| keys_err(dir, e.to_string()))
}

/// Seal `master` into a new slot for `secret` and store it under
/// `DIR/keys/`, then read it back and open it with `secret`.
pub(crate) fn add_slot(
    dir: &Path,
    master: &MasterKey,
    secret: &Secret,
    params: Argon2Params,
    label: SlotLabel,
) -> Result<SlotId, RepoError> {
    let mut ring = read_keyring(dir)?;
    let slot = match secret {
        Secret::Password(p) => ring.add_password(master, p, params, label),
        Secret::KeyFile(k) => ring.add_key_file(master, k, label),
    }
    .map_err(|e| keys_err(dir, e.to_string()))?
    .clone();
    let kd = keys_dir(dir);
    crate::store::ensure_dir(&kd)?;
    let path = kd.join(slot.id().to_string());
    if !crate::store::of(&path)?.put_new(&path, &slot.encode())? {
        return Err(keys_err(
            dir,
            format!("key slot {} exists already; try again", slot.id()),
        ));
    }
    // Read back what was stored, and open it with the secret.
    let back = read_keyring(dir)?;
    let ok = back.get(slot.id()).is_some_and(|s| {
        let one = Keyring::from_slots(vec![s.clone()]);
        let opened = match secret {
            Secret::Password(p) => one.open_with_password(p),
            Secret::KeyFile(k) => one.open_with_key_file(k),
        };
        opened.is_ok_and(|o| o.master.same_as(master))
    });
    if !ok {
        return Err(keys_err(
            dir,
            format!(
                "key slot {} does not read back as written: {}",
                slot.id(),
                path.display()
            ),
        ));
    }
    Ok(slot.id())
}

/// Remove slot `id`, unless it is the last one or `in_use`.
pub(crate) fn remove_slot(dir: &Path, id: SlotId, in_use: Option<SlotId>) -> Result<(), RepoError> {
    if in_use == Some(id) {
        return Err(keys_err(
            dir,
            format!(
                "key slot {id} is the one this command opened the repository with; open it with another password or key file to remove it"
            ),
        ));
    }
    let mut ring = read_keyring(dir)?;
    ring.remove(id).map_err(|e| keys_err(dir, e.to_string()))?;
    let path = keys_dir(dir).join(id.to_string());
    crate::store::remove(&path).map_err(io_err(&path))?;
    crate::store::fsync_dir(&keys_dir(dir))
}

/// The slots, for `rewind key list`.
pub(crate) fn list_slots(dir: &Path, in_use: Option<SlotId>) -> Result<Vec<SlotInfo>, RepoError> {
    Ok(read_keyring(dir)?
        .slots()
        .iter()
        .map(|s| SlotInfo {
            id: s.id().to_string(),
            kind: match s.kind() {
                rewind_crypto::SlotKind::Password(_) => "password",
                rewind_crypto::SlotKind::KeyFile => "key-file",
            },
            created: s.created(),
            host: s.label().host.clone(),
            user: s.label().user.clone(),
            in_use: Some(s.id()) == in_use,
        })
        .collect())
}
