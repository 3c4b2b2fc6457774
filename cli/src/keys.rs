//! `rewind init --encrypt` and `rewind key add|list|remove`: the secrets
//! of an encrypted repository (docs/decisions.md, "Encryption at rest
//! (issue 20), step 2: wiring").

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, Result};
use rewind_crypto::{Env, ProcessEnv, Terminal, read_new_password};
use rewind_repo::{Argon2Params, FromEnvironment, KeyFileKey, LocalRepo, Secret, Secrets};
use serde_json::json;

use crate::KeyCommand;

/// The environment with `REWIND_NEW_PASSWORD` and
/// `REWIND_NEW_PASSWORD_FILE` in place of `REWIND_PASSWORD` and
/// `REWIND_PASSWORD_FILE`: where `key add` reads the password it adds.
struct NewPasswordEnv;

impl Env for NewPasswordEnv {
    fn var_os(&self, name: &str) -> Option<OsString> {
        ProcessEnv.var_os(&name.replace("REWIND_PASSWORD", "REWIND_NEW_PASSWORD"))
    }
}

/// The key file at `path`, made (0600, never over an existing file) when
/// there is none.
fn key_file_at(path: &Path) -> Result<KeyFileKey> {
    if path.exists() {
        return Ok(KeyFileKey::read(path)?);
    }
    let k = KeyFileKey::generate()?;
    k.write_new(path)?;
    eprintln!(
        "rewind: wrote a new key file {}: keep a copy apart from the repository; without it or a password the repository cannot be read",
        path.display()
    );
    Ok(k)
}

/// A new encrypted repository at `dir` (created if needed), its first key
/// slot for the key file `key_file` or a new password.
pub(crate) fn init_encrypted(dir: &Path, key_file: Option<&Path>) -> Result<LocalRepo> {
    let secret = match key_file {
        Some(p) => Secret::KeyFile(key_file_at(p)?),
        None => Secret::Password(read_new_password(&ProcessEnv, &Terminal)?),
    };
    LocalRepo::init_encrypted(
        dir,
        rewind_core::DEFAULT_CHUNKER,
        &secret,
        Argon2Params::DEFAULT,
    )
    .with_context(|| format!("cannot create encrypted repository {}", dir.display()))
}

/// `rewind key …` on the repository at `dir`.
pub(crate) fn key(dir: &Path, key_file: Option<&Path>, cmd: KeyCommand) -> Result<i32> {
    if !LocalRepo::is_encrypted_at(dir)? {
        anyhow::bail!(
            "repository {} is not encrypted: it has no keys (an encrypted one is made with `rewind init --encrypt`)",
            dir.display()
        );
    }
    let current = FromEnvironment {
        key_file: key_file.map(Path::to_path_buf),
        password_file: None,
    }
    .secret()
    .map_err(|e| anyhow::anyhow!("repository {}: {e}", dir.display()))?;
    let repo = LocalRepo::open_with_secret(dir, &current)?;
    match cmd {
        KeyCommand::List(j) => {
            let slots = repo.key_slots()?;
            if j.json {
                println!("{}", serde_json::to_string_pretty(&slots)?);
            } else {
                for s in &slots {
                    let created = rewind_core::Timestamp(s.created.saturating_mul(1_000_000_000));
                    println!(
                        "{}{} {:<8} {} {}@{}",
                        if s.in_use { "*" } else { " " },
                        s.id,
                        s.kind,
                        created,
                        s.user,
                        s.host
                    );
                }
            }
        }
        KeyCommand::Add { new_key_file, json } => {
            let new = match &new_key_file {
                Some(p) => Secret::KeyFile(key_file_at(p)?),
                None => Secret::Password(read_new_password(&NewPasswordEnv, &Terminal)?),
            };
            let id = repo.add_key_with(&current, &new, Argon2Params::DEFAULT)?;
            if json.json {
                println!("{}", json!({ "added": id }));
            } else {
                println!("added key slot {id}");
            }
        }
        KeyCommand::Remove { id, json } => {
            repo.remove_key(&id)?;
            if json.json {
                println!("{}", json!({ "removed": id }));
            } else {
                println!("removed key slot {id}");
            }
        }
    }
    Ok(0)
}
