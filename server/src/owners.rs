//! Which chunks each client has uploaded.
//!
//! Chunks are stored once per repository, whoever sent them, but a client
//! is only ever told about its own: `missing` answers "missing" for a chunk
//! another client uploaded (so nobody can probe whether someone else holds
//! some content), `read` refuses it, and a commit may only refer to chunks
//! the committing client sent. Each client's list is an append-only file of
//! 32-byte ids, synced before any commit that relies on it; a torn last id
//! after a crash is ignored (the client is asked for that chunk again).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use rewind_core::{ChunkId, RepoError};

/// Every client's list, loaded on first use.
pub struct Owners {
    dir: PathBuf,
    clients: Mutex<HashMap<String, Arc<ClientChunks>>>,
}

/// One client's chunks.
pub struct ClientChunks {
    path: PathBuf,
    set: RwLock<HashSet<ChunkId>>,
    file: Mutex<File>,
}

fn io_err(path: &std::path::Path) -> impl Fn(std::io::Error) -> RepoError + '_ {
    move |source| RepoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Owners {
    /// The lists kept in `dir`.
    pub fn new(dir: PathBuf) -> Owners {
        Owners {
            dir,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The list of `client` (a checked name).
    pub fn of(&self, client: &str) -> Result<Arc<ClientChunks>, RepoError> {
        let mut m = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = m.get(client) {
            return Ok(c.clone());
        }
        rewind_core::private::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let path = self.dir.join(format!("{client}.ids"));
        let mut file = rewind_core::private::options()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_err(&path))?;
        let whole = bytes.len() / 32 * 32;
        if whole != bytes.len() {
            tracing::warn!(
                "{}: ignoring a torn id at the end (a crash while it was written)",
                path.display()
            );
            file.set_len(whole as u64).map_err(io_err(&path))?;
        }
        let set: HashSet<ChunkId> = bytes[..whole]
            .chunks_exact(32)
            .map(|b| ChunkId(b.try_into().expect("32 bytes")))
            .collect();
        let c = Arc::new(ClientChunks {
            path,
            set: RwLock::new(set),
            file: Mutex::new(file),
        });
        m.insert(client.to_string(), c.clone());
        Ok(c)
    }
}

impl ClientChunks {
    /// True when the client uploaded `id`.
    pub fn has(&self, id: &ChunkId) -> bool {
        self.set
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    /// The ids of `ids` the client did not upload.
    pub fn not_owned(&self, ids: &[ChunkId]) -> Vec<ChunkId> {
        let s = self.set.read().unwrap_or_else(|e| e.into_inner());
        ids.iter().filter(|id| !s.contains(id)).copied().collect()
    }

    /// How many chunks the client uploaded.
    pub fn len(&self) -> usize {
        self.set.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Record that the client uploaded `ids` (not yet synced).
    pub fn add(&self, ids: impl IntoIterator<Item = ChunkId>) -> Result<(), RepoError> {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let mut set = self.set.write().unwrap_or_else(|e| e.into_inner());
        let mut buf = Vec::new();
        for id in ids {
            if set.insert(id) {
                buf.extend_from_slice(&id.0);
            }
        }
        if !buf.is_empty() {
            file.write_all(&buf).map_err(io_err(&self.path))?;
        }
        Ok(())
    }

    /// Make every recorded id durable.
    pub fn sync(&self) -> Result<(), RepoError> {
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.sync_data().map_err(io_err(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_persist_and_survive_a_torn_tail() {
        let t = tempfile::tempdir().unwrap();
        let a = ChunkId::of(b"a");
        let b = ChunkId::of(b"b");
        {
            let o = Owners::new(t.path().to_path_buf());
            let c = o.of("laptop").unwrap();
            c.add([a, a, b]).unwrap();
            c.sync().unwrap();
            assert_eq!(c.len(), 2);
            assert!(o.of("other").unwrap().not_owned(&[a]) == vec![a]);
        }
        let p = t.path().join("laptop.ids");
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 64);
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&[7; 5]).unwrap();
        let o = Owners::new(t.path().to_path_buf());
        let c = o.of("laptop").unwrap();
        assert!(c.has(&a) && c.has(&b));
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 64);
    }
}
