//! What capture may read of the past: the narrow view of a repository that
//! delta encoding and a dump's previous run need, instead of the whole
//! [`Repository`] (which can also write, list trees and delete).
//!
//! - Reads: which stored chunk a new chunk may be a delta against, that
//!   chunk's content, and the stored versions of one path.
//! - One write: [`Bases::store_base`], a delta base no version refers to
//!   (the small-file dictionary, made once per repository), which must be
//!   durable before the first delta against it is queued; every other byte
//!   reaches the repository through the journal and the uploader.

use std::sync::Arc;

use crate::{ChunkId, ChunkIds, EncodedChunk, RepoError, Repository, StoredBase, Version};

/// The reads capture makes of a repository (see the module doc).
pub trait Bases: Send + Sync {
    /// See [`Repository::delta_base`].
    fn delta_base(&self, id: &ChunkId) -> Result<Option<ChunkId>, RepoError>;
    /// The content of a stored chunk (a delta base), with whether it is
    /// stored uncompressed ([`Repository::read_delta_base`]).
    fn read_base(&self, id: &ChunkId) -> Result<StoredBase, RepoError>;
    /// The stored versions of `path` for `client`, oldest first.
    fn versions_of(&self, client: &str, path: &[u8]) -> Result<Vec<Version>, RepoError>;
    /// See [`Repository::store_base`].
    fn store_base(&self, chunk: EncodedChunk) -> Result<(), RepoError>;
    /// See [`Repository::chunk_ids`].
    fn chunk_ids(&self) -> ChunkIds {
        ChunkIds::Plain
    }
}

/// A repository seen through [`Bases`] only.
struct Narrow(Arc<dyn Repository>);

impl Bases for Narrow {
    fn delta_base(&self, id: &ChunkId) -> Result<Option<ChunkId>, RepoError> {
        self.0.delta_base(id)
    }

    fn read_base(&self, id: &ChunkId) -> Result<StoredBase, RepoError> {
        self.0.read_delta_base(id)
    }

    fn versions_of(&self, client: &str, path: &[u8]) -> Result<Vec<Version>, RepoError> {
        self.0.versions_of(client, path)
    }

    fn store_base(&self, chunk: EncodedChunk) -> Result<(), RepoError> {
        self.0.store_base(chunk)
    }

    fn chunk_ids(&self) -> ChunkIds {
        self.0.chunk_ids()
    }
}

/// `repo` behind the [`Bases`] handle.
pub fn bases_of(repo: Arc<dyn Repository>) -> Arc<dyn Bases> {
    Arc::new(Narrow(repo))
}
