use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::forget::{
    ForgetReport, ForgetRequest, PendingChunks, Pin, PruneReport, PruneRequest, RetentionStatus,
};
use crate::history::{ActivityBucket, ActivityQuery, FindQuery, FindReply};
use crate::retention::QueryPoint;
use crate::{ChunkId, ChunkIds, EncodedChunk, Timestamp, Version};

/// A delta base as [`Repository::read_delta_base`] reads it.
#[derive(Debug)]
pub struct StoredBase {
    /// Its decoded, verified bytes.
    pub raw: Vec<u8>,
    /// Stored uncompressed: zstd could not shrink it.
    pub incompressible: bool,
}

/// Errors from a repository, local or remote.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// No repository at this location.
    #[error("no repository at {path} (create one with `rewind init --repo {path}`)")]
    NotFound {
        /// Where one was expected.
        path: PathBuf,
    },
    /// Another process holds the writer lock (or, on an object store,
    /// took this writer's lease over).
    #[error("repository {path} is in use by another writer ({holder})")]
    Locked {
        /// The repository.
        path: PathBuf,
        /// The lock file, or the lease object (`s3://BUCKET/PREFIX/lock`).
        lock: PathBuf,
        /// Who holds it, for people: `pid file DIR/lock`, or the lease
        /// holder's host and pid and when the lease expires.
        holder: String,
    },
    /// An I/O error on a file of the repository.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Stored data is damaged.
    #[error("{path}: damaged: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A chunk was asked for that the repository does not have.
    #[error("chunk {0} is not in the repository")]
    MissingChunk(ChunkId),
    /// A version refers to chunks that were never uploaded.
    #[error("version {seq} of {path} refers to chunk {chunk} which the repository does not have")]
    DanglingVersion {
        /// The version's sequence number.
        seq: u64,
        /// Its path, for people.
        path: String,
        /// The first missing chunk.
        chunk: ChunkId,
    },
    /// The repository was opened read-only.
    #[error("repository opened read-only")]
    ReadOnly,
    /// An encrypted repository could not be opened with the secret given
    /// (none given, a wrong password or key file, no usable key slot), or
    /// a key slot could not be added or removed.
    #[error("repository {}: {reason}", path.display())]
    Keys {
        /// The repository.
        path: PathBuf,
        /// What went wrong, in one line ("is encrypted: set
        /// REWIND_PASSWORD or REWIND_PASSWORD_FILE", "wrong password: ...").
        reason: String,
    },
    /// The repository does not do what was asked (deltas on a server).
    #[error("{0}")]
    Unsupported(&'static str),
    /// The repository refuses what was asked (a pin where nothing is kept,
    /// an unknown pin, a forget a server keeps for itself).
    #[error("{reason}")]
    Refused {
        /// Why, in one line.
        reason: String,
    },
    /// A query that cannot be answered as asked (a bad pattern, too many
    /// windows of activity).
    #[error("{0}")]
    BadQuery(String),
    /// A backup server refused a request or could not be reached.
    #[error("server {url}: {reason}")]
    Remote {
        /// The server.
        url: String,
        /// What went wrong, in one line.
        reason: String,
        /// True for trouble that may pass (network, server busy or
        /// restarting); false for a refusal (bad credentials, bad request).
        transient: bool,
    },
}

impl RepoError {
    /// True when retrying later may succeed (I/O trouble such as a full disk
    /// or a dead server), false for damage and misuse.
    pub fn is_transient(&self) -> bool {
        match self {
            RepoError::Io { .. } | RepoError::Locked { .. } => true,
            RepoError::Remote { transient, .. } => *transient,
            _ => false,
        }
    }
}

/// Counters for `status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RepoStats {
    /// Versions stored.
    pub versions: u64,
    /// Distinct chunks stored.
    pub chunks: u64,
    /// Pack files.
    pub packs: u64,
    /// Bytes of pack files on disk.
    pub pack_bytes: u64,
    /// Time of the last durable commit.
    pub last_commit: Option<Timestamp>,
    /// Highest committed sequence number per client.
    pub max_seq: Vec<(String, u64)>,
}

/// A version whose content is (partly) lost: what `verify` names, on a
/// local repository and through a server alike.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedVersion {
    /// Its client.
    pub client: String,
    /// Its sequence number.
    pub seq: u64,
    /// Its path, raw bytes.
    pub path: Vec<u8>,
    /// When its change was observed.
    pub observed_at: Timestamp,
    /// The first chunk it lacks.
    pub chunk: ChunkId,
    /// `missing` or `damaged`.
    pub reason: &'static str,
}

/// As `verify --json` lists it: the path as a [`JsonPath`](crate::path::JsonPath),
/// the time in RFC 3339, the chunk id in hex.
impl Serialize for DamagedVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(6))?;
        m.serialize_entry("chunk", &self.chunk.to_string())?;
        m.serialize_entry("client", &self.client)?;
        m.serialize_entry("observed_at", &self.observed_at.to_string())?;
        m.serialize_entry("path", &crate::path::JsonPath(&self.path))?;
        m.serialize_entry("reason", self.reason)?;
        m.serialize_entry("seq", &self.seq)?;
        m.end()
    }
}

/// The tree at `at` under `base` as `ls` and `diff` show it: for the root
/// `/`, the whole machine, the protected files and the dump streams
/// (`dumps/...`) together, sorted by path.
pub fn machine_tree_at(
    repo: &dyn Repository,
    client: &str,
    base: &[u8],
    at: Timestamp,
) -> Result<Vec<Version>, RepoError> {
    let mut v = repo.tree_at(client, base, at)?;
    if base == b"/" {
        v.extend(repo.tree_at(client, b"dumps", at)?);
        v.sort_by(|x, y| x.path.cmp(&y.path));
    }
    Ok(v)
}

/// What the uploader and restore need from a repository. Implemented in
/// process by `rewind-repo` and over HTTPS by `rewind-remote`.
///
/// Protocol for writers: ask [`missing_chunks`](Repository::missing_chunks),
/// send them with [`put_chunks`](Repository::put_chunks) (possibly in several
/// calls), then [`commit_versions`](Repository::commit_versions). Chunks become
/// durable no later than the commit that follows them; a commit is durable
/// when it returns, is atomic, refuses versions whose chunks are missing, and
/// ignores versions whose `(client, seq)` it already holds, so re-sending a
/// batch after a crash is harmless.
pub trait Repository: Send + Sync {
    /// Which of `ids` the repository does not have.
    fn missing_chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>, RepoError>;
    /// Store chunks (their ids are checked against their content).
    fn put_chunks(&self, chunks: Vec<EncodedChunk>) -> Result<(), RepoError>;
    /// Durably and atomically commit versions.
    fn commit_versions(&self, versions: Vec<Version>) -> Result<(), RepoError>;
    /// Every version of exactly `path` for `client`, oldest first.
    fn versions_of(&self, client: &str, path: &[u8]) -> Result<Vec<Version>, RepoError>;
    /// The newest version at or before `at` of `path` and of every path below
    /// it, tombstones left out, sorted by path.
    fn tree_at(&self, client: &str, path: &[u8], at: Timestamp) -> Result<Vec<Version>, RepoError>;
    /// True when some version of `path` or of one of its ancestors exists
    /// (that is, `path` lies inside something that was protected).
    fn covers(&self, client: &str, path: &[u8]) -> Result<bool, RepoError>;
    /// The paths that match `q` (see [`FindQuery`]) with when each existed,
    /// by the point-in-time definition, sorted by path. Answered where the
    /// versions are: only the hits travel.
    fn find(&self, client: &str, q: &FindQuery) -> Result<FindReply, RepoError>;
    /// How many versions were observed below `q.path` in each window of
    /// `q.width` (see [`ActivityQuery`]); windows without any are left
    /// out.
    fn activity(&self, client: &str, q: &ActivityQuery) -> Result<Vec<ActivityBucket>, RepoError>;
    /// Take in what other writers committed since this handle was opened
    /// (a local repository opened read-only while an agent captures). A
    /// server's answers are always current: nothing to do (the default).
    fn refresh(&self) -> Result<(), RepoError> {
        Ok(())
    }
    /// The decoded, verified bytes of a chunk.
    fn read_chunk(&self, id: &ChunkId) -> Result<Vec<u8>, RepoError>;
    /// [`Repository::read_chunk`] of a delta base, with what its storage
    /// says about its content: whether it is stored uncompressed because
    /// zstd could not shrink it (`false` where that is unknown, the
    /// default).
    fn read_delta_base(&self, id: &ChunkId) -> Result<StoredBase, RepoError> {
        Ok(StoredBase {
            raw: self.read_chunk(id)?,
            incompressible: false,
        })
    }
    /// The decoded, verified bytes of several chunks, in order (a remote
    /// repository fetches them in one round trip).
    fn read_chunks(&self, ids: &[ChunkId]) -> Result<Vec<Vec<u8>>, RepoError> {
        ids.iter().map(|id| self.read_chunk(id)).collect()
    }
    /// How many reads a caller should keep under way at once to hide this
    /// repository's latency: 1 for a local disk (reads cost CPU and disk,
    /// not waiting), more for one across a network, whose every request
    /// waits a round trip (a restore runs this many writers at least).
    fn parallel_reads(&self) -> usize {
        1
    }
    /// For each of `ids`, a key that sorts chunks in the order they lie
    /// in storage (pack, then offset), or `None` where that is unknown or
    /// means nothing (the default): reading in that order reads each pack
    /// front to back, with few requests and no gaps read twice.
    fn storage_order(&self, ids: &[ChunkId]) -> Vec<Option<(u64, u64)>> {
        vec![None; ids.len()]
    }
    /// Counters.
    fn stats(&self) -> Result<RepoStats, RepoError>;
    /// How this repository names chunks: everything that cuts chunks for
    /// it names them so ([`ChunkIds`]). Plain unless the repository is
    /// encrypted (the default).
    fn chunk_ids(&self) -> ChunkIds {
        ChunkIds::Plain
    }
    /// The chunk that a new chunk resembling stored chunk `id` may be
    /// stored as a delta against ([`crate::Encoding::Delta`]): `id` itself
    /// when it is stored whole, its base when it is a delta (so a delta is
    /// always one step from whole content). `None` when `id` is not stored
    /// or the repository takes no deltas (the default).
    fn delta_base(&self, _id: &ChunkId) -> Result<Option<ChunkId>, RepoError> {
        Ok(None)
    }
    /// Store `chunk` (whole, not a delta) durably now, to serve as the base
    /// of deltas that follow (a small-file dictionary, which no version
    /// refers to). Repositories that take no deltas refuse (the default).
    fn store_base(&self, chunk: EncodedChunk) -> Result<(), RepoError> {
        let _ = chunk;
        Err(RepoError::Unsupported(
            "this repository takes no delta bases",
        ))
    }

    /// The point a query at `at` for `client`'s files uses: `at` itself
    /// where the history is whole, else the newest kept point at or before
    /// it ([`crate::retention`]). [`tree_at`](Repository::tree_at) answers
    /// for that point already; this says which it was.
    fn query_point(&self, client: &str, at: Timestamp) -> Result<QueryPoint, RepoError> {
        let _ = client;
        Ok(QueryPoint::exact(at))
    }

    /// Apply retention to `client`'s history (see [`ForgetRequest`]), or
    /// with `dry_run` say what it would forget. Forgotten versions leave
    /// every query at once; their space comes back with a prune.
    fn forget(&self, client: &str, req: &ForgetRequest) -> Result<ForgetReport, RepoError> {
        let _ = (client, req);
        Err(RepoError::Unsupported("this repository does not forget"))
    }

    /// Pin the state of `client`'s files at `at` (snapped to a kept point
    /// where the history is thinned): no rule removes it.
    fn pin(&self, client: &str, at: Timestamp, label: Option<String>) -> Result<Pin, RepoError> {
        let _ = (client, at, label);
        Err(RepoError::Unsupported("this repository has no pins"))
    }

    /// The pins of `client`, oldest first.
    fn pins(&self, client: &str) -> Result<Vec<Pin>, RepoError> {
        let _ = client;
        Ok(Vec::new())
    }

    /// Remove pin `id` of `client`; what only it kept goes at the next
    /// forget.
    fn unpin(&self, client: &str, id: u64) -> Result<(), RepoError> {
        let _ = (client, id);
        Err(RepoError::Unsupported("this repository has no pins"))
    }

    /// Reclaim the space of what forget released (see [`PruneRequest`]);
    /// `pending` gives the chunks versions not yet committed rely on.
    /// Commits go on meanwhile. Writers only.
    fn prune(
        &self,
        req: &PruneRequest,
        pending: &mut PendingChunks<'_>,
    ) -> Result<PruneReport, RepoError> {
        let _ = (req, pending);
        Err(RepoError::Unsupported("this repository does not prune"))
    }

    /// Retention as `status` shows it for `client`.
    fn retention(&self, client: &str) -> Result<RetentionStatus, RepoError> {
        let _ = client;
        Ok(RetentionStatus::default())
    }
}

/// A store that takes chunks straight from capture and makes them durable
/// by itself, before any version refers to them: the embedded repository,
/// and a server while it keeps up. The uploader's direct path (the
/// journal's group-commit hook) hands capture's chunks to it at each group
/// commit instead of the journal writing them into its spool first, so
/// each byte is written (and fsynced) once.
pub trait ChunkSink: Send + Sync {
    /// False while the store should not be given chunks (a server that
    /// falls behind, for a while, or one under an upload limit): the
    /// journal spools them instead, and the uploader moves them later.
    /// After a failed store the direct path steps aside by itself, under
    /// the uploader's backoff.
    fn accepting(&self) -> bool {
        true
    }
    /// True when the store durably holds `id` already (a cheap in-memory
    /// lookup; `false` only costs a compression that turns out unneeded).
    fn has_chunk(&self, id: &ChunkId) -> bool;
    /// Capture queued `chunk` for the next
    /// [`store_durably`](ChunkSink::store_durably) or
    /// [`commit_durably`](ChunkSink::commit_durably), which still gets it:
    /// a store reached over a network may start sending it now, so the
    /// bytes travel while capture goes on. Nothing is durable or
    /// acknowledged by this call, and it must not wait for the network.
    fn send_ahead(&self, _chunk: &EncodedChunk) {}
    /// Store `chunks` and make them, and every chunk stored before, durable
    /// before returning.
    fn store_durably(&self, chunks: &[EncodedChunk]) -> Result<(), RepoError>;
    /// [`store_durably`](ChunkSink::store_durably), then commit `versions`
    /// as [`Repository::commit_versions`] does (durable, atomic, idempotent
    /// by client and seq), so they need no upload later.
    fn commit_durably(
        &self,
        chunks: &[EncodedChunk],
        versions: &[Version],
    ) -> Result<(), RepoError>;
}
