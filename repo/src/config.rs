//! `DIR/config`: the repository's identity and chunker bounds, as JSON.

use std::io::{self, Read};
use std::path::Path;

use rewind_core::frame::MAX_FRAME;
use rewind_core::{ChunkerParams, RepoError, Timestamp};
use rewind_crypto::Aead;
use serde::{Deserialize, Serialize};

use crate::durable::{CONFIG_STEPS, corrupt, io_err};
use crate::store::write_durably;

/// The on-disk format this crate writes. 2: version records are
/// zstd-compressed (format 1 existed only in development builds). 3: chunk
/// records may be deltas against another chunk ([`rewind_core::Encoding`]);
/// nothing else changed, so a writer upgrades a format 2 repository in
/// place (builds that read only format 2 then refuse it, rather than take
/// a delta for damage). 4: versions may be forgotten and packs pruned
/// (`DIR/retention` says what is kept); a writer upgrades in place, and
/// builds that read only format 3 refuse it rather than show forgotten
/// versions whose chunks may be gone.
pub(crate) const FORMAT: u32 = 4;

/// The format of an encrypted repository: 4 with its records, index files
/// and small files sealed, its chunk ids keyed, and its key slots in
/// `DIR/keys/` (docs/decisions.md, "Encryption at rest (issue 20), step
/// 2: wiring"). Plain repositories stay at [`FORMAT`]; builds that read
/// only up to 4 refuse a format 5 repository rather than take sealed
/// records for damage.
pub(crate) const FORMAT_ENCRYPTED: u32 = 5;

/// The newest format this crate reads.
pub(crate) const NEWEST_FORMAT: u32 = FORMAT_ENCRYPTED;

/// The oldest format this crate reads.
pub(crate) const OLDEST_FORMAT: u32 = 2;

/// A config file is a few hundred bytes; anything over this is not one.
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// The contents of `DIR/config`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Config {
    pub format: u32,
    /// 32 random hex digits.
    pub id: String,
    pub chunker: ChunkerParams,
    /// RFC 3339.
    pub created: String,
    /// How the repository is encrypted; absent in a plain repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// The `encryption` field of an encrypted repository's config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Encryption {
    /// The record cipher ([`Aead::name`]): `aes256gcm-subkey` for a new
    /// repository, `xchacha20poly1305` for the first encrypted ones.
    pub aead: String,
    /// The chunk ids: `blake3-keyed`.
    pub chunk_id: String,
    /// The sealing scheme's version: 1.
    pub v: u32,
}

impl Encryption {
    /// What this build writes.
    pub(crate) fn current() -> Encryption {
        Encryption {
            aead: Aead::NEWEST.name().into(),
            chunk_id: "blake3-keyed".into(),
            v: 1,
        }
    }

    /// The record cipher, if this build knows it (every config that
    /// [`Config::read`] accepts names one it knows).
    pub(crate) fn aead(&self) -> Option<Aead> {
        Aead::from_name(&self.aead)
    }

    /// Whether this build reads records sealed so.
    fn is_supported(&self) -> bool {
        self.aead().is_some() && self.chunk_id == "blake3-keyed" && self.v == 1
    }
}

impl Config {
    pub(crate) fn new(chunker: ChunkerParams) -> Config {
        let id: [u8; 16] = rand::random();
        Config {
            format: FORMAT,
            id: hex::encode(id),
            chunker,
            created: Timestamp::now().to_string(),
            encryption: None,
        }
    }

    /// The config of a new encrypted repository.
    pub(crate) fn new_encrypted(chunker: ChunkerParams) -> Config {
        Config {
            format: FORMAT_ENCRYPTED,
            encryption: Some(Encryption::current()),
            ..Config::new(chunker)
        }
    }

    /// The id as the 16 bytes records are sealed with.
    pub(crate) fn repo_id(&self) -> rewind_crypto::RepoId {
        rewind_crypto::RepoId::from_hex(&self.id).unwrap_or(rewind_crypto::RepoId([0; 16]))
    }

    /// Write `DIR/config` durably.
    pub(crate) fn write(&self, dir: &Path) -> Result<(), RepoError> {
        let path = dir.join("config");
        let mut bytes =
            serde_json::to_vec_pretty(self).map_err(|e| corrupt(&path, e.to_string()))?;
        bytes.push(b'\n');
        write_durably(&dir.join("tmp"), &path, &bytes, &CONFIG_STEPS)
    }

    /// Create `DIR/config` unless it exists (`Ok(false)` then): a
    /// put-if-absent, for stores where no lock file keeps two `init`s
    /// apart.
    pub(crate) fn write_new(&self, dir: &Path) -> Result<bool, RepoError> {
        let path = dir.join("config");
        let mut bytes =
            serde_json::to_vec_pretty(self).map_err(|e| corrupt(&path, e.to_string()))?;
        bytes.push(b'\n');
        crate::store::of(&path)?.put_new(&path, &bytes)
    }

    /// Read and check `DIR/config`; `NotFound` when there is none.
    pub(crate) fn read(dir: &Path) -> Result<Config, RepoError> {
        let path = dir.join("config");
        let f = match crate::store::open_read(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(RepoError::NotFound {
                    path: dir.to_path_buf(),
                });
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mut bytes = Vec::new();
        f.take(MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err(&path))?;
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            return Err(corrupt(&path, "too large for a config file"));
        }
        let c: Config = serde_json::from_slice(&bytes)
            .map_err(|e| corrupt(&path, format!("not a config: {e}")))?;
        if !(OLDEST_FORMAT..=NEWEST_FORMAT).contains(&c.format) {
            return Err(corrupt(
                &path,
                format!(
                    "repository format {} is not supported (this build reads {OLDEST_FORMAT} to {NEWEST_FORMAT})",
                    c.format
                ),
            ));
        }
        match (&c.encryption, c.format == FORMAT_ENCRYPTED) {
            (None, false) => {}
            (Some(e), true) if e.is_supported() => {}
            (Some(e), true) => {
                return Err(corrupt(
                    &path,
                    format!(
                        "encryption {}/{} v{} is not supported (this build reads aes256gcm-subkey or xchacha20poly1305, with blake3-keyed v1)",
                        e.aead, e.chunk_id, e.v
                    ),
                ));
            }
            (None, true) => return Err(corrupt(&path, "format 5 without its encryption field")),
            (Some(_), false) => {
                return Err(corrupt(
                    &path,
                    format!("format {} with an encryption field", c.format),
                ));
            }
        }
        if c.id.len() != 32 || !c.id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(corrupt(&path, "id is not 32 hex digits"));
        }
        check_chunker(c.chunker).map_err(|r| corrupt(&path, r))?;
        Ok(c)
    }
}

/// Chunker bounds this repository can store: ordered, non-zero, and a
/// maximum chunk that fits one pack record with room to spare.
pub(crate) fn check_chunker(p: ChunkerParams) -> Result<(), String> {
    if p.min == 0 || p.min > p.avg || p.avg > p.max {
        return Err(format!(
            "chunker bounds must satisfy 0 < min <= avg <= max (got {}/{}/{})",
            p.min, p.avg, p.max
        ));
    }
    if p.max as usize > MAX_FRAME / 2 {
        return Err(format!(
            "chunker max {} is over {} bytes",
            p.max,
            MAX_FRAME / 2
        ));
    }
    Ok(())
}
