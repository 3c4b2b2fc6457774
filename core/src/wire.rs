//! The HTTPS protocol between `rewind` (rewind-remote) and `rewind-server`.
//!
//! Every route lives under [`PREFIX`]. Requests other than enrollment carry
//! `Authorization: Bearer NAME:KEY`. Small control bodies are JSON; bulk
//! bodies (chunk ids, chunks, versions, path queries) are postcard, bounded
//! by [`MAX_BODY`] before they are decoded. Errors come back as a 4xx or
//! 5xx status with a one-line plain-text reason.
//!
//! | method, route | body | reply |
//! | --- | --- | --- |
//! | `POST /v1/enroll` | JSON [`EnrollRequest`] | JSON [`EnrollReply`] |
//! | `GET /v1/info` | | JSON [`ServerInfo`] |
//! | `POST /v1/missing` | `Vec<ChunkId>` | `Vec<ChunkId>` |
//! | `POST /v1/chunks` | `Vec<EncodedChunk>` | 204 |
//! | `POST /v1/sync` | (empty) | 204 once every chunk the client sent is durable |
//! | `POST /v1/commit` | `Vec<Version>` | 204, durable |
//! | `POST /v1/versions` | [`PathQuery`] | `Vec<Version>` |
//! | `POST /v1/tree` | [`PathQuery`] (with `at`) | `Vec<Version>` |
//! | `POST /v1/covers` | [`PathQuery`] | `bool` |
//! | `POST /v1/find` | [`crate::FindQuery`] | [`crate::FindReply`] |
//! | `POST /v1/activity` | [`crate::ActivityQuery`] | `Vec<`[`crate::ActivityBucket`]`>` |
//! | `POST /v1/read` | `Vec<ChunkId>` | `Vec<EncodedChunk>` |
//! | `GET /v1/stats` | | JSON [`crate::RepoStats`] |
//! | `POST /v1/list` | [`ListQuery`] | `Vec<Version>` |
//! | `POST /v1/verify` | [`VerifyChunks`] | `Vec<ChunkProblem>` |

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::{ChunkerParams, Timestamp};

/// Every API route starts with this.
pub const PREFIX: &str = "/v1";

/// The largest request or reply body either side accepts (80 MiB: a batch
/// of 64 MiB of chunks plus its framing).
pub const MAX_BODY: usize = 80 << 20;

/// Most chunk ids in one `missing` or `read` request.
pub const MAX_IDS: usize = 100_000;

/// The media type of postcard bodies.
pub const POSTCARD: &str = "application/x-rewind-postcard";

/// What a server tells an enrolled client about itself.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServerInfo {
    /// The repository's id (names the client's journal directory).
    pub repo_id: String,
    /// The repository's chunker bounds (capture must cut the same way).
    pub chunker: ChunkerParams,
    /// The server's version.
    pub version: String,
    /// The client name the credentials belong to.
    pub client: String,
    /// An encrypted repository's chunk-id key (64 hex digits): clients
    /// name chunks with it as the repository does. Absent for a plain
    /// repository (and from servers before encryption). The record key
    /// never leaves the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_id_key: Option<String>,
}

impl std::fmt::Debug for ServerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerInfo")
            .field("repo_id", &self.repo_id)
            .field("chunker", &self.chunker)
            .field("version", &self.version)
            .field("client", &self.client)
            .field("chunk_id_key", &self.chunk_id_key.as_ref().map(|_| ".."))
            .finish()
    }
}

impl ServerInfo {
    /// How the server's repository names chunks (plain when it sent no
    /// key, or one that is not 64 hex digits).
    pub fn chunk_ids(&self) -> crate::ChunkIds {
        match self
            .chunk_id_key
            .as_deref()
            .and_then(rewind_crypto::ChunkIdKey::from_hex)
        {
            Some(k) => crate::ChunkIds::Keyed(std::sync::Arc::new(k)),
            None => crate::ChunkIds::Plain,
        }
    }
}

/// `POST /v1/enroll`: trade a one-time enrollment token for a client key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The name given to `rewind-server client add`.
    pub name: String,
    /// The token it printed.
    pub token: String,
}

/// The reply to an enrollment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnrollReply {
    /// The client's secret key (shown once; the server keeps a hash).
    pub key: String,
    /// The server.
    pub info: ServerInfo,
}

/// A path, and for tree queries a point in time.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PathQuery {
    /// Absolute path, raw bytes.
    #[serde(with = "serde_bytes")]
    pub path: Vec<u8>,
    /// Point in time (tree queries).
    pub at: Option<Timestamp>,
}

/// `POST /v1/list`: every version of the asking client, a page at a time,
/// in path order (each path whole, oldest first).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ListQuery {
    /// Start after this path (`None`: from the first).
    #[serde(with = "serde_bytes")]
    pub after: Option<Vec<u8>>,
    /// Stop once at least this many versions are in the page (a path is
    /// never split, so a page can hold more).
    pub limit: u32,
}

/// `POST /v1/verify`: check chunks the asking client uploaded, on the
/// server's disk.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VerifyChunks {
    /// Only check that each chunk is indexed (no read).
    pub quick: bool,
    /// At most [`MAX_IDS`] chunks.
    pub ids: Vec<crate::ChunkId>,
}

/// `POST /v1/pin`: pin the asking client's files at a point in time.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PinRequest {
    /// The time (snapped to a kept point where the history is thinned).
    pub at: Timestamp,
    /// What the user calls it.
    pub label: Option<String>,
}

/// One chunk that failed a `verify` request (intact chunks are not listed).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkProblem {
    /// The chunk.
    pub id: crate::ChunkId,
    /// `missing` or `damaged`.
    pub reason: String,
    /// What was found, for people.
    pub detail: String,
}

/// The fingerprint of a DER certificate as clients pin it:
/// `SHA256:` and 64 lowercase hex digits.
pub fn fingerprint(der: &[u8]) -> String {
    format!("SHA256:{}", hex::encode(sha2::Sha256::digest(der)))
}

/// Normalise a user-typed fingerprint (`SHA256:` prefix optional, colons and
/// case ignored); `None` when it is not 32 bytes of hex.
pub fn parse_fingerprint(s: &str) -> Option<String> {
    let s = s.trim();
    let body = s
        .strip_prefix("SHA256:")
        .or_else(|| s.strip_prefix("sha256:"))
        .unwrap_or(s);
    let hexdigits: String = body.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(hexdigits.to_ascii_lowercase()).ok()?;
    (bytes.len() == 32).then(|| format!("SHA256:{}", hex::encode(bytes)))
}

/// Encode a postcard body, into a buffer sized once. A body of chunks is
/// megabytes: grown by doubling, it would be copied at each step, and
/// jemalloc (the agent's allocator) moves a large block to fresh pages on
/// every growth, so each copy also faults its pages in. Measuring the size
/// first walks the value without copying a byte.
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let size = postcard::experimental::serialized_size(v).expect("wire types always serialize");
    postcard::to_io(v, Vec::with_capacity(size)).expect("wire types always serialize")
}

/// Decode a postcard body, which must be exactly one value (trailing
/// bytes are refused, so a body is never half understood).
pub fn decode<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Result<T, postcard::Error> {
    let (v, rest) = postcard::take_from_bytes(b)?;
    if !rest.is_empty() {
        return Err(postcard::Error::DeserializeBadEncoding);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_info_carries_the_chunk_id_key_and_debug_hides_it() {
        let hexkey = "ab".repeat(32);
        let info = ServerInfo {
            repo_id: "r".into(),
            chunker: crate::DEFAULT_CHUNKER,
            version: "v".into(),
            client: "c".into(),
            chunk_id_key: Some(hexkey.clone()),
        };
        assert!(info.chunk_ids().is_keyed());
        assert!(!format!("{info:?}").contains(&hexkey));
        let back: ServerInfo =
            serde_json::from_str(&serde_json::to_string(&info).unwrap()).unwrap();
        assert_eq!(back, info);
        // A server before encryption sends no key: plain ids.
        let old =
            r#"{"repo_id":"r","chunker":{"min":1,"avg":2,"max":3},"version":"v","client":"c"}"#;
        let old: ServerInfo = serde_json::from_str(old).unwrap();
        assert!(!old.chunk_ids().is_keyed());
    }

    #[test]
    fn fingerprints_parse_in_the_forms_people_type() {
        let f = fingerprint(b"certificate");
        assert!(f.starts_with("SHA256:") && f.len() == 7 + 64);
        assert_eq!(parse_fingerprint(&f).as_deref(), Some(f.as_str()));
        let bare = f.trim_start_matches("SHA256:").to_ascii_uppercase();
        assert_eq!(parse_fingerprint(&bare).as_deref(), Some(f.as_str()));
        let colons: Vec<String> = bare
            .as_bytes()
            .chunks(2)
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        assert_eq!(
            parse_fingerprint(&colons.join(":")).as_deref(),
            Some(f.as_str())
        );
        assert_eq!(parse_fingerprint("SHA256:abcd"), None);
        let ids = vec![crate::ChunkId::of(b"x")];
        let mut b = encode(&ids);
        assert_eq!(decode::<Vec<crate::ChunkId>>(&b).unwrap(), ids);
        b.push(0);
        assert!(decode::<Vec<crate::ChunkId>>(&b).is_err(), "trailing bytes");
        assert_eq!(parse_fingerprint("not hex at all"), None);
    }
}
