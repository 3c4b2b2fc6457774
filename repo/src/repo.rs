//! [`LocalRepo`]: the repository in a local directory.

mod deferred;
mod ranged;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use rewind_core::frame::MAX_FRAME;
use rewind_core::path::display;
use rewind_core::{
    ActivityBucket, ActivityQuery, ChunkId, ChunkSink, ChunkView, ChunkerParams, EncodedChunk,
    Encoding, FindQuery, FindReply, PathPattern, RepoError, RepoStats, Repository,
    STREAM_ZSTD_LEVEL, StoredBase, Timestamp, Version,
};
use rewind_crypto::{Argon2Params, MasterKey, SlotId, SlotLabel};
use tracing::{info, warn};

use crate::config::{Config, FORMAT, check_chunker};
use crate::crypt::Crypt;
use crate::durable::{corrupt, io_err};
use crate::idx_cache::IndexCache;
use crate::index;
use crate::keep::KeepFile;
use crate::keys::{Secret, Secrets, SlotInfo};
use crate::layout::{Discover, discover, fill, list_idx, list_packs};
use crate::lease::{Lease, LeaseSettings};
use crate::pack::{self, PackWriter, VERSIONS_RECORD_TARGET, split_versions};
use crate::pack_name::PackName;
use crate::record::{self, PackRecord};
use crate::state::{Keeping, State};
use crate::store::ReadAt;
use crate::store::ensure_dir;
use crate::toc::TocEntry;
use crate::verify::{
    self, Issue, RebuildReport, RepairReport, RewrittenPack, VerifyProgress, VerifyReport,
};

/// The versions of a client a new retention drops: `(path, seq)`.
type Unkept = Vec<(Vec<u8>, u64)>;

/// A pack is sealed once it holds this many bytes. Large enough that a
/// 1 TiB repository has about 32 000 packs (directory listings, open files
/// and object-store requests stay cheap; restic's default is 16 MiB, borg's
/// segments are 500 MiB), small enough that a seal fsyncs a bounded amount
/// and a salvage or a verify of one pack reads a bounded amount. Commits
/// seal earlier, so most packs of a desktop are smaller.
pub(crate) const PACK_TARGET: u64 = 32 << 20;

/// Below this many bytes of chunks in one call, sealing stays on the
/// calling thread (starting threads would cost more than it saves).
const PARALLEL_SEAL_BYTES: usize = 1 << 20;

/// A pack is also sealed at this many records, so that its footer (about
/// 60 bytes a record) and its index header stay far below `MAX_FRAME` even
/// when chunks are tiny.
pub(crate) const MAX_PACK_RECORDS: usize = 200_000;

/// Pack files kept open for reading. macOS's default limit is 256 open
/// files per process, Linux's 1024; 64 leaves the rest of the process room.
const MAX_OPEN_PACKS: usize = 64;

/// [`Repository::parallel_reads`] of a repository on an object store: as
/// many readers as a restore runs writers at most (each of whose reads
/// fetches a few packs at once).
const STORE_PARALLEL_READS: usize = 8;

/// Delta bases kept decoded in memory (at most 16 MiB each).
const BASE_CACHE: usize = 4;

/// Chunks sent for storage may not claim more than this many bytes: it
/// bounds what checking one allocates (a chunk must fit one record anyway).
const MAX_CHUNK_BYTES: usize = MAX_FRAME - 1024;

/// A repository in a local directory: an indexed set of pack files. See the
/// crate documentation for the layout and guarantees.
///
/// Opened with [`LocalRepo::open`] it is a read-only view that sees new
/// commits after [`LocalRepo::refresh`]; opened with [`LocalRepo::init`] or
/// [`LocalRepo::open_writer`] it holds the writer lock until dropped.
pub struct LocalRepo {
    pub(crate) dir: PathBuf,
    config: Config,
    state: RwLock<State>,
    /// A reader opened over the version index on disk: `state` is empty
    /// until something needs it whole (`deferred.rs`).
    pub(crate) deferred: std::sync::atomic::AtomicBool,
    /// What answers version queries while `deferred` is set.
    view: RwLock<Option<crate::vindex::VersionView>>,
    /// A writer's upkeep of the version index on disk (a plain local
    /// repository). Before `writer`, so it stops before the lock goes.
    vindex: Option<crate::vindex::Maintainer>,
    writer: Option<Mutex<Writer>>,
    files: Mutex<HashMap<PackName, Arc<dyn ReadAt>>>,
    /// `DIR/retention` as last read or written; every change to it is
    /// made under this lock (lock order: `maintenance`, this, the writer,
    /// `state`).
    pub(crate) keepfile: Mutex<KeepFile>,
    /// The last retention write failed on a store: read the file again
    /// before the next change (`catch_up_keep`).
    keep_stale: AtomicBool,
    /// One forget or prune at a time.
    pub(crate) maintenance: Mutex<()>,
    /// While a prune runs: every chunk a caller was told is stored, or
    /// that a commit or a delta relies on (see `prune`).
    pub(crate) touched: Mutex<Option<HashSet<ChunkId>>>,
    /// Quick check of `touched.is_some()` for the hot paths.
    pub(crate) pruning: std::sync::atomic::AtomicBool,
    /// Counts forgets, prunes and reloads: what
    /// [`LocalRepo::reclaimable`] found stays true until it moves.
    pub(crate) retention_gen: std::sync::atomic::AtomicU64,
    /// The reclaimable bytes last found, and the generation they were
    /// found at (finding them plans a whole prune).
    pub(crate) reclaimable_memo: Mutex<Option<(u64, u64)>>,
    /// Decode every chunk handed to `put_chunks` and check it against its
    /// id. On by default; an in-process writer whose chunks come straight
    /// from its own CRC-checked spool may turn it off (see
    /// [`LocalRepo::set_check_puts`]).
    check_puts: std::sync::atomic::AtomicBool,
    /// The content of the delta bases read last (a small-file dictionary
    /// is the base of thousands of chunks).
    bases: Mutex<Vec<(ChunkId, Arc<Vec<u8>>)>>,
    /// The local cache of index objects, for a repository on an object
    /// store (`None` for a directory, or when caching is off).
    idx_cache: Option<IndexCache>,
    /// A writer's lease on an object store (`PREFIX/lock`): checked
    /// before every write, released last, when everything else is dropped.
    lease: Option<Lease>,
    /// The keys of an encrypted repository (plain: none).
    pub(crate) crypt: Crypt,
    /// The key slot this handle was opened with (encrypted only).
    slot: Option<SlotId>,
}

/// Where an opening takes an encrypted repository's secret from: asked
/// of a [`Secrets`] only when the config says it is encrypted, or given.
enum Unlock<'a> {
    Ask(&'a dyn Secrets),
    Given(&'a Secret),
}

/// What only the writer has. Lock order: this mutex before `state`.
pub(crate) struct Writer {
    /// `DIR/lock`, locked for as long as this lives (none on an object
    /// store: there the writer holds `LocalRepo::lease`).
    _lock: Option<File>,
    /// The pack being filled in `DIR/tmp`, if any.
    open: Option<PackWriter>,
    /// Seal the open pack at this size ([`PACK_TARGET`]; tests lower it).
    pub(crate) pack_target: u64,
}

impl std::fmt::Debug for LocalRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRepo")
            .field("dir", &self.dir)
            .field("id", &self.config.id)
            .field("writer", &self.writer.is_some())
            .finish()
    }
}

fn invalid_input(path: &Path, msg: String) -> RepoError {
    RepoError::Io {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, msg),
    }
}

impl LocalRepo {
    /// Whether `put_chunks` decodes and hashes every chunk before storing it
    /// (default on). Turning it off saves a decompression and a hash per
    /// chunk; do it only when the chunks were produced by this process and
    /// come through a checksummed path (the agent's spool).
    pub fn set_check_puts(&self, on: bool) {
        self.check_puts
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many versions `client` has stored.
    pub fn client_versions(&self, client: &str) -> u64 {
        self.read_state().client_versions(client)
    }

    /// The repository's stats as far as they concern `client` alone: its
    /// versions, its highest seq, when its last commit was sealed; chunk
    /// and pack counts zero (a server does not tell one client about the
    /// others, not even when they last committed).
    pub fn client_stats(&self, client: &str) -> RepoStats {
        self.read_state().client_stats(client)
    }

    /// Every version of `client` in path order, a page at a time: the paths
    /// after `after`, each whole, until at least `limit` versions are taken.
    /// An empty page is the end.
    pub fn list_page(&self, client: &str, after: Option<&[u8]>, limit: usize) -> Vec<Version> {
        self.read_state().list_page(client, after, limit)
    }

    /// A chunk as stored (compressed or raw), for sending over the network:
    /// the receiver decodes it and checks it against its id. A delta is
    /// sent decoded and compressed on its own, since the receiver may not
    /// hold its base.
    pub fn read_encoded(&self, id: &ChunkId) -> Result<EncodedChunk, RepoError> {
        let (c, place) = self.locate_encoded(id)?;
        self.sendable(id, c, &place)
    }

    /// Stored chunk `c` (read at `place`) as [`LocalRepo::read_encoded`]
    /// sends it.
    fn sendable(
        &self,
        id: &ChunkId,
        c: EncodedChunk,
        place: &str,
    ) -> Result<EncodedChunk, RepoError> {
        if c.base().is_none() {
            return Ok(c);
        }
        let raw = self.decode_stored(c.view(), place)?;
        Ok(EncodedChunk::encode_with_id_at(
            *id,
            &raw,
            STREAM_ZSTD_LEVEL,
        ))
    }

    /// The content of a stored chunk (a delta decoded with its base),
    /// checked against its id. `place` names where it was read.
    fn decode_stored(&self, c: ChunkView<'_>, place: &str) -> Result<Vec<u8>, RepoError> {
        let raw = match c.base() {
            None => c.decode_as(self.crypt.ids()),
            Some(b) => {
                let base = self
                    .read_base(&b)
                    .map_err(|e| corrupt(&self.dir, format!("{place}: delta of chunk {b}: {e}")))?;
                c.decode_with_base_as(self.crypt.ids(), &base)
            }
        };
        raw.map_err(|e| corrupt(&self.dir, format!("{place}: {e}")))
    }

    /// [`LocalRepo::decode_stored`] of a chunk read into memory of its
    /// own: stored raw, its bytes become the content without a copy.
    fn decode_owned(&self, c: EncodedChunk, place: &str) -> Result<Vec<u8>, RepoError> {
        if c.base().is_some() {
            return self.decode_stored(c.view(), place);
        }
        c.into_decoded_as(self.crypt.ids())
            .map_err(|e| corrupt(&self.dir, format!("{place}: {e}")))
    }

    /// The content of `id` as the base of a delta. A base is stored whole:
    /// a delta against a delta is refused, so every delta decodes in one
    /// step.
    fn read_base(&self, id: &ChunkId) -> Result<Arc<Vec<u8>>, RepoError> {
        {
            let cache = self.bases.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, b)) = cache.iter().find(|(k, _)| k == id) {
                return Ok(b.clone());
            }
        }
        let (c, place) = self.locate_encoded(id)?;
        if c.base().is_some() {
            return Err(corrupt(
                &self.dir,
                format!("{place}: chunk {id} is itself a delta"),
            ));
        }
        let raw = Arc::new(
            c.decode_as(self.crypt.ids())
                .map_err(|e| corrupt(&self.dir, format!("{place}: {e}")))?,
        );
        let mut cache = self.bases.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= BASE_CACHE {
            cache.remove(0);
        }
        cache.push((*id, raw.clone()));
        Ok(raw)
    }

    /// A chunk as stored, and where it was read (for error messages). A
    /// pack a prune deleted meanwhile (in this process or another) is
    /// looked up again once, after a reload for a reader.
    fn locate_encoded(&self, id: &ChunkId) -> Result<(EncodedChunk, String), RepoError> {
        match self.locate_once(id) {
            Err(RepoError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                if self.writer.is_none() {
                    self.reload()?;
                }
                self.locate_once(id)
            }
            r => r,
        }
    }

    fn locate_once(&self, id: &ChunkId) -> Result<(EncodedChunk, String), RepoError> {
        let found = {
            let st = self.read_state();
            st.chunks
                .get(id)
                .map(|l| (*l, &st.packs[l.pack as usize]))
                .map(|(l, p)| (l, p.name, p.len))
        };
        if let Some((loc, name, len)) = found {
            let path = name.pack_path(&self.dir);
            let f = self.pack_file(name, &path, len)?;
            let c =
                record::read_encoded_at(&self.crypt, &*f, &path, loc.offset, loc.frame_len, id)?;
            return Ok((c, format!("{} at offset {}", path.display(), loc.offset)));
        }
        if self.writer.is_some() {
            let w = self.lock_writer()?;
            if let Some(r) = w.open.as_ref().and_then(|p| p.read_pending(id)) {
                return Ok((r?, "the pack being written".into()));
            }
        }
        Err(RepoError::MissingChunk(*id))
    }

    /// Create a repository in `dir` (created if needed) and return it opened
    /// for writing. Fails if `dir/config` exists.
    pub fn init(dir: &Path, chunker: ChunkerParams) -> Result<LocalRepo, RepoError> {
        Self::init_as(dir, chunker, None)
    }

    /// [`LocalRepo::init`] of an encrypted repository (format 5): a new
    /// master key, sealed into a first key slot for `secret` (argon2id
    /// with `params` for a password), stored under `DIR/keys/` before the
    /// config, whose creation is what makes the repository exist.
    pub fn init_encrypted(
        dir: &Path,
        chunker: ChunkerParams,
        secret: &Secret,
        params: Argon2Params,
    ) -> Result<LocalRepo, RepoError> {
        Self::init_as(dir, chunker, Some((secret, params)))
    }

    fn init_as(
        dir: &Path,
        chunker: ChunkerParams,
        encrypt: Option<(&Secret, Argon2Params)>,
    ) -> Result<LocalRepo, RepoError> {
        check_chunker(chunker).map_err(|m| invalid_input(dir, m))?;
        let remote = crate::store::of(dir)?.is_remote();
        let (lock, lease) = take_writer(dir)?;
        let config_path = dir.join("config");
        let exists = || RepoError::Io {
            path: config_path.clone(),
            source: io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a repository already exists here",
            ),
        };
        if crate::store::exists(&config_path).map_err(io_err(&config_path))? {
            return Err(exists());
        }
        for sub in ["packs", "index", "tmp"] {
            ensure_dir(&dir.join(sub))?;
        }
        let (config, crypt, slot) = match encrypt {
            None => (Config::new(chunker), Crypt::plain(), None),
            Some((secret, params)) => {
                let config = Config::new_encrypted(chunker);
                let master =
                    MasterKey::generate().map_err(|e| invalid_input(dir, e.to_string()))?;
                // A stray slot of an init that crashed before its config
                // is harmless: it seals another master key, opens nothing
                // of this repository, and `key remove` deletes it.
                let slot = crate::keys::add_slot(dir, &master, secret, params, slot_label())?;
                (config.clone(), Crypt::new(&master, &config), Some(slot))
            }
        };
        if remote {
            // Besides the lease: where the store honours `If-None-Match`,
            // it lets only one of two racing inits create the config.
            if !config.write_new(dir)? {
                return Err(exists());
            }
        } else {
            config.write(dir)?;
        }
        info!(repo = %dir.display(), id = %config.id, "created repository");
        let mut state = State::default();
        state.set_filtering(true);
        let mut repo = Self::assemble(dir, config, state, KeepFile::default(), Some(lock));
        repo.lease = lease;
        repo.crypt = crypt;
        repo.slot = slot;
        repo.start_upkeep();
        Ok(repo)
    }

    /// The keys of the repository whose config is `config`: none for a
    /// plain one; for an encrypted one, opened with a secret from
    /// `secrets` (asked only then).
    fn unlock(
        dir: &Path,
        config: &Config,
        secrets: &dyn Secrets,
    ) -> Result<(Crypt, Option<SlotId>), RepoError> {
        if config.encryption.is_none() {
            return Ok((Crypt::plain(), None));
        }
        let secret = secrets.secret().map_err(|e| RepoError::Keys {
            path: dir.to_path_buf(),
            reason: format!("is encrypted: {e}"),
        })?;
        Self::unlock_with(dir, config, &secret)
    }

    fn unlock_with(
        dir: &Path,
        config: &Config,
        secret: &Secret,
    ) -> Result<(Crypt, Option<SlotId>), RepoError> {
        if config.encryption.is_none() {
            return Ok((Crypt::plain(), None));
        }
        let opened = crate::keys::open_keys(dir, secret)?;
        Ok((Crypt::new(&opened.master, config), Some(opened.slot)))
    }

    /// Read every pack's index (`repair`: write missing ones) into a state,
    /// with what `keep` keeps.
    pub(crate) fn load_state(
        c: &Crypt,
        dir: &Path,
        repair: bool,
        keep: &KeepFile,
        cache: Option<&IndexCache>,
    ) -> Result<State, RepoError> {
        let how = Discover {
            repair,
            warn_orphans: true,
            cache,
        };
        Self::state_of(c, dir, discover(c, dir, &HashSet::new(), how)?, keep, how)
    }

    /// The indexes of `packs` with what `keep` keeps applied. Packs are
    /// added oldest first (versions then mostly append), each pack's
    /// versions loaded just before it is added (so only one pack's decoded
    /// versions are held besides the state), and every path is filtered
    /// once all are in.
    pub(crate) fn state_of(
        c: &Crypt,
        dir: &Path,
        mut packs: Vec<crate::pack_index::PackIndex>,
        keep: &KeepFile,
        how: Discover<'_>,
    ) -> Result<State, RepoError> {
        let mut state = State::with_keep(
            keep.clients
                .iter()
                .map(|(c, k)| (c.clone(), Keeping::of(k)))
                .collect(),
        );
        packs.sort_by_key(|p| (p.sealed_at, p.pack));
        if let Some(cache) = how.cache {
            crate::index::prefetch_versions(dir, &packs, cache, how.fetches_at_once());
        }
        for idx in packs {
            let Some(idx) = fill(c, dir, idx, how)? else {
                continue;
            };
            let condemned = keep.condemned.contains_key(&idx.pack);
            state.add_pack_marked(idx, condemned);
        }
        state.filter_all();
        Ok(state)
    }

    /// Read the whole repository again (a reader that found a pack gone).
    pub(crate) fn reload(&self) -> Result<(), RepoError> {
        if self.refresh_view()? {
            return Ok(());
        }
        let keep = KeepFile::read(&self.crypt, &self.dir)?;
        let state = Self::load_state(
            &self.crypt,
            &self.dir,
            false,
            &keep,
            self.idx_cache.as_ref(),
        )?;
        *self.write_state() = state;
        *self.keepfile.lock().expect("retention poisoned") = keep;
        self.files.lock().expect("file cache poisoned").clear();
        self.retention_changed();
        Ok(())
    }

    /// A repository handle; a writer when it holds the lock.
    fn assemble(
        dir: &Path,
        config: Config,
        state: State,
        keep: KeepFile,
        lock: Option<Option<File>>,
    ) -> LocalRepo {
        LocalRepo {
            dir: dir.to_path_buf(),
            config,
            state: RwLock::new(state),
            deferred: Default::default(),
            view: RwLock::new(None),
            vindex: None,
            keepfile: Mutex::new(keep),
            keep_stale: AtomicBool::new(false),
            maintenance: Mutex::new(()),
            touched: Mutex::new(None),
            pruning: std::sync::atomic::AtomicBool::new(false),
            retention_gen: Default::default(),
            reclaimable_memo: Mutex::new(None),
            writer: lock.map(|lock| {
                Mutex::new(Writer {
                    _lock: lock,
                    open: None,
                    pack_target: PACK_TARGET,
                })
            }),
            files: Mutex::new(HashMap::new()),
            check_puts: std::sync::atomic::AtomicBool::new(true),
            bases: Mutex::new(Vec::new()),
            idx_cache: None,
            lease: None,
            crypt: Crypt::plain(),
            slot: None,
        }
    }

    /// Whether a repository exists at `dir` (a directory, or an
    /// `s3://BUCKET/PREFIX` URL): whether it holds a config file.
    pub fn exists(dir: &Path) -> Result<bool, RepoError> {
        let config = dir.join("config");
        crate::store::exists(&config).map_err(io_err(&config))
    }

    /// Open `dir` read-only. Any number of readers may coexist with one
    /// writer (in this or another process); packs without an index are
    /// read directly and nothing is written.
    ///
    /// An encrypted repository is opened with the process's secret: a key
    /// file named with [`crate::use_key_file`], else `REWIND_PASSWORD`,
    /// `REWIND_PASSWORD_FILE` or the terminal.
    pub fn open(dir: &Path) -> Result<LocalRepo, RepoError> {
        Self::open_with(dir, crate::keys::default_secrets())
    }

    /// [`LocalRepo::open`] with the secret from `secrets`.
    pub fn open_with(dir: &Path, secrets: &dyn Secrets) -> Result<LocalRepo, RepoError> {
        Self::open_as(dir, Unlock::Ask(secrets), false)
    }

    /// [`LocalRepo::open`] with `secret`.
    pub fn open_with_secret(dir: &Path, secret: &Secret) -> Result<LocalRepo, RepoError> {
        Self::open_as(dir, Unlock::Given(secret), false)
    }

    /// Read the config, open the keys as `unlock` says, and open `dir` as
    /// a reader or a `writer`.
    fn open_as(dir: &Path, unlock: Unlock<'_>, writer: bool) -> Result<LocalRepo, RepoError> {
        let config = Config::read(dir)?;
        let (crypt, slot) = match unlock {
            Unlock::Ask(secrets) => Self::unlock(dir, &config, secrets)?,
            Unlock::Given(secret) => Self::unlock_with(dir, &config, secret)?,
        };
        if writer {
            Self::open_writer_unlocked(dir, config, crypt, slot)
        } else {
            Self::open_unlocked(dir, config, crypt, slot)
        }
    }

    fn open_unlocked(
        dir: &Path,
        config: Config,
        crypt: Crypt,
        slot: Option<SlotId>,
    ) -> Result<LocalRepo, RepoError> {
        let keep = KeepFile::read(&crypt, dir)?;
        let cache = IndexCache::open(dir, &config.id);
        let view = Self::open_view(dir, &crypt, &keep);
        let state = match view {
            Some(_) => State::default(),
            None => Self::load_state(&crypt, dir, false, &keep, cache.as_ref())?,
        };
        let mut repo = Self::assemble(dir, config, state, keep, None);
        repo.deferred = view.is_some().into();
        repo.view = RwLock::new(view);
        repo.idx_cache = cache;
        repo.crypt = crypt;
        repo.slot = slot;
        Ok(repo)
    }

    /// Open `dir` for writing: take `dir/lock` ([`RepoError::Locked`] when
    /// another writer holds it), delete leftovers in `dir/tmp`, and write
    /// the index of every pack that lacks one (salvaging damaged packs).
    ///
    /// An encrypted repository is opened with the process's secret, as
    /// [`LocalRepo::open`] does.
    pub fn open_writer(dir: &Path) -> Result<LocalRepo, RepoError> {
        Self::open_writer_with(dir, crate::keys::default_secrets())
    }

    /// [`LocalRepo::open_writer`] with the secret from `secrets`.
    pub fn open_writer_with(dir: &Path, secrets: &dyn Secrets) -> Result<LocalRepo, RepoError> {
        Self::open_as(dir, Unlock::Ask(secrets), true)
    }

    /// [`LocalRepo::open_writer`] with `secret`.
    pub fn open_writer_with_secret(dir: &Path, secret: &Secret) -> Result<LocalRepo, RepoError> {
        Self::open_as(dir, Unlock::Given(secret), true)
    }

    fn open_writer_unlocked(
        dir: &Path,
        mut config: Config,
        crypt: Crypt,
        slot: Option<SlotId>,
    ) -> Result<LocalRepo, RepoError> {
        for sub in ["packs", "index", "tmp"] {
            ensure_dir(&dir.join(sub))?;
        }
        let (lock, lease) = take_writer(dir)?;
        if lock.is_some() {
            // Written before repositories were created private (issue 21).
            rewind_core::private::tighten_if_loose(dir, "repository");
            clean_tmp(&dir.join("tmp"))?;
        }
        // On a store the pack being filled lives in this process's own
        // staging directory: nothing of another writer's to clean.
        let mut keep = KeepFile::read(&crypt, dir)?;
        crate::deletions::finish_deletions(&crypt, dir, &mut keep, fenced(lease.as_ref()))?;
        let cache = IndexCache::open(dir, &config.id);
        let state = Self::load_state(&crypt, dir, true, &keep, cache.as_ref())?;
        if config.format < FORMAT {
            let from = config.format;
            if from < 4 {
                // Before format 4 no version was ever forgotten, so the
                // chunks no version names are the small-file dictionaries
                // (and leftovers of crashed uploads): kept as bases, all.
                // Recorded before the new number, so a crash in between
                // upgrades again.
                keep.bases.extend(state.unreferenced());
                keep.write(&crypt, dir, fenced(lease.as_ref()))?;
            }
            // Said once: the new number is written durably after what the
            // new format needs, so the next open finds nothing to do.
            config.format = FORMAT;
            config.write(dir)?;
            warn!(
                "repository {}: upgraded from format {from} to {FORMAT} (builds that read only format {from} no longer open it)",
                dir.display()
            );
        }
        let mut repo = Self::assemble(dir, config, state, keep, Some(lock));
        repo.lease = lease;
        repo.idx_cache = cache;
        repo.crypt = crypt;
        repo.slot = slot;
        repo.start_upkeep();
        Ok(repo)
    }

    /// Whether the repository is encrypted (format 5).
    pub fn is_encrypted(&self) -> bool {
        self.crypt.is_sealed()
    }

    /// An encrypted repository's chunk-id key as 64 hex digits (what a
    /// server hands its enrolled clients); `None` for a plain one.
    pub fn chunk_id_key_hex(&self) -> Option<zeroize::Zeroizing<String>> {
        match self.crypt.ids() {
            rewind_core::ChunkIds::Keyed(k) => Some(k.to_hex()),
            rewind_core::ChunkIds::Plain => None,
        }
    }

    /// The key slots of an encrypted repository, the one this handle was
    /// opened with marked (`rewind key list`).
    pub fn key_slots(&self) -> Result<Vec<SlotInfo>, RepoError> {
        self.need_keys()?;
        crate::keys::list_slots(&self.dir, self.slot)
    }

    /// Add a key slot for `new` (`rewind key add`), opening the master key
    /// with `current` (a secret that opens the repository); the new slot's
    /// id.
    pub fn add_key_with(
        &self,
        current: &Secret,
        new: &Secret,
        params: Argon2Params,
    ) -> Result<String, RepoError> {
        self.need_keys()?;
        let opened = crate::keys::open_keys(&self.dir, current)?;
        let id = crate::keys::add_slot(&self.dir, &opened.master, new, params, slot_label())?;
        Ok(id.to_string())
    }

    /// Remove key slot `id` (`rewind key remove`): refused for the last
    /// slot and for the one this handle was opened with.
    pub fn remove_key(&self, id: &str) -> Result<(), RepoError> {
        self.need_keys()?;
        let id: SlotId = id
            .parse()
            .map_err(|e: rewind_crypto::CryptoError| RepoError::Keys {
                path: self.dir.clone(),
                reason: e.to_string(),
            })?;
        crate::keys::remove_slot(&self.dir, id, self.slot)
    }

    fn need_keys(&self) -> Result<(), RepoError> {
        if self.crypt.is_sealed() {
            Ok(())
        } else {
            Err(RepoError::Keys {
                path: self.dir.clone(),
                reason: "is not encrypted: it has no keys".into(),
            })
        }
    }

    /// Whether the repository at `dir` is encrypted, from its config
    /// alone.
    pub fn is_encrypted_at(dir: &Path) -> Result<bool, RepoError> {
        Ok(Config::read(dir)?.encryption.is_some())
    }

    /// The id of the repository at `dir` (32 hex digits), from its config
    /// alone: no key is needed, nothing else is read.
    pub fn read_id(dir: &Path) -> Result<String, RepoError> {
        Ok(Config::read(dir)?.id)
    }

    /// The repository's random id (32 hex digits).
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// The chunker bounds clients must use.
    pub fn chunker(&self) -> ChunkerParams {
        self.config.chunker
    }

    /// The repository directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Load packs that appeared since open (a writer in another process
    /// keeps committing). Never writes.
    pub fn refresh(&self) -> Result<(), RepoError> {
        if self.refresh_view()? {
            return Ok(());
        }
        let keep = KeepFile::read(&self.crypt, &self.dir)?;
        let old = self.keepfile.lock().expect("retention poisoned").clone();
        // A client's retention gone from the file is not something a
        // forget does (keeping only shrinks): read everything again.
        if old.clients.keys().any(|c| !keep.clients.contains_key(c)) {
            return self.reload();
        }
        let known: HashSet<PackName> = self
            .read_state()
            .live_packs()
            .map(|(_, p)| p.name)
            .collect();
        // One listing rather than a HEAD per known pack (on a store, a
        // LIST per `packs/<ab>/` holding any).
        let present = list_packs(&self.dir)?;
        let vanished: Vec<PackName> = known
            .iter()
            .filter(|n| !present.contains_key(n))
            .copied()
            .collect();
        let how = Discover {
            repair: false,
            warn_orphans: false,
            cache: self.idx_cache.as_ref(),
        };
        let mut new = Vec::new();
        for idx in discover(&self.crypt, &self.dir, &known, how)? {
            if let Some(idx) = fill(&self.crypt, &self.dir, idx, how)? {
                new.push(idx);
            }
        }
        self.apply_refreshed(new, vanished, keep);
        Ok(())
    }

    /// Apply what a refresh found: `new` packs, `vanished` ones, and the
    /// retention file as it is now (`keep`).
    fn apply_refreshed(
        &self,
        new: Vec<crate::pack_index::PackIndex>,
        vanished: Vec<PackName>,
        keep: KeepFile,
    ) {
        let old = self.keepfile.lock().expect("retention poisoned").clone();
        // What a forget or prune changed, applied the way the writer
        // applied it, instead of reading every index file again (tens of
        // seconds on a history of millions of versions, during which this
        // reader saw nothing new: docs/decisions.md, "Readers follow a
        // forget and a prune"). The retention file also changes when a
        // delta base is recorded, which changes nothing here.
        let keeping_changed: Vec<(&String, &crate::keep::ClientKeep)> = keep
            .clients
            .iter()
            .filter(|(c, k)| old.clients.get(*c) != Some(*k))
            .collect();
        let gone: Vec<(String, Keeping, Unkept)> = {
            let st = self.read_state();
            keeping_changed
                .iter()
                .map(|(c, k)| {
                    let keeping = Keeping::of(k);
                    let gone = st.unkept(c, &keeping);
                    (c.to_string(), keeping, gone)
                })
                .collect()
        };
        let marks_changed = old.condemned != keep.condemned;
        if new.is_empty() && vanished.is_empty() && gone.is_empty() && !marks_changed {
            *self.keepfile.lock().expect("retention poisoned") = keep;
            return;
        }
        {
            let mut st = self.write_state();
            // New packs first: a repack's copies are in place before the
            // packs they replace leave.
            for idx in new {
                let condemned = keep.condemned.contains_key(&idx.pack);
                st.add_pack_marked(idx, condemned);
            }
            for (client, keeping, gone) in gone {
                st.set_keep(&client, keeping, &gone);
            }
            if marks_changed {
                let names: Vec<PackName> = st.live_packs().map(|(_, p)| p.name).collect();
                for n in names {
                    st.set_condemned(&n, keep.condemned.contains_key(&n));
                }
            }
            if !vanished.is_empty() {
                st.remove_packs(&vanished);
            }
        }
        if !vanished.is_empty() {
            self.files.lock().expect("file cache poisoned").clear();
        }
        *self.keepfile.lock().expect("retention poisoned") = keep;
        self.retention_changed();
    }

    /// Regenerate the index file of every pack from the pack itself (its
    /// footer, or a salvaging scan when that is damaged), delete index files
    /// whose pack is gone, and reload the in-memory indexes. Writers only.
    pub fn rebuild_index(&self) -> Result<RebuildReport, RepoError> {
        let _w = self.lock_writer()?;
        // The version index on disk was made from the index files: it is
        // made again from the new ones.
        self.forget_version_index();
        let mut report = RebuildReport::default();
        let mut loaded = Vec::new();
        let packs = list_packs(&self.dir)?;
        for (name, path) in &packs {
            let idx = match pack::load(&self.crypt, path, *name) {
                Ok(i) => i,
                Err(RepoError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(d) = &idx.damage {
                warn!(pack = %path.display(), "damaged pack: {d}");
                report.damaged.push(Issue {
                    path: path.clone(),
                    offset: None,
                    problem: d.clone(),
                });
            }
            index::write(&self.crypt, &self.dir, &idx)?;
            report.packs += 1;
            report.chunks += idx.chunks.len() as u64;
            report.versions += idx.versions.len() as u64;
            loaded.push(idx);
        }
        let how = Discover {
            repair: false,
            warn_orphans: false,
            cache: None,
        };
        let keep = self.keepfile.lock().expect("retention poisoned");
        let state = Self::state_of(&self.crypt, &self.dir, loaded, &keep, how)?;
        drop(keep);
        for name in list_idx(&self.dir)? {
            if !packs.contains_key(&name) {
                let p = name.idx_path(&self.dir);
                match crate::store::remove(&p) {
                    Ok(()) => report.orphan_indexes_removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(&p)(e)),
                }
            }
        }
        *self.write_state() = state;
        self.files.lock().expect("file cache poisoned").clear();
        Ok(report)
    }

    /// Repair the repository: rebuild every index from its pack, then
    /// rewrite each pack in which a full verify finds damage into a new,
    /// sound pack holding every record that is still intact (chunks whose
    /// content matches their id, version records that decode), and delete
    /// the damaged one. What was destroyed stays lost and is named by the
    /// next [`LocalRepo::verify`] (`damaged_versions`); everything else is
    /// readable and verifies clean. Writers only.
    pub fn repair(&self) -> Result<RepairReport, RepoError> {
        let rebuilt = self.rebuild_index()?;
        let report = self.verify(false)?;
        let damaged: BTreeSet<PathBuf> = report
            .issues
            .iter()
            .filter(|i| i.path.extension().is_some_and(|e| e == "pack"))
            .map(|i| i.path.clone())
            .collect();
        let mut rewritten = Vec::new();
        {
            let mut w = self.lock_writer()?;
            // Whatever is pending goes into a pack of its own first.
            self.seal_open(&mut w)?;
            for path in &damaged {
                rewritten.push(self.rewrite_pack(&mut w, path)?);
            }
        }
        if !rewritten.is_empty() {
            let keep = self.keepfile.lock().expect("retention poisoned").clone();
            *self.write_state() = Self::load_state(
                &self.crypt,
                &self.dir,
                false,
                &keep,
                self.idx_cache.as_ref(),
            )?;
            self.files.lock().expect("file cache poisoned").clear();
        }
        Ok(RepairReport { rebuilt, rewritten })
    }

    /// Copy the intact records of the damaged pack at `path` into a new
    /// pack (sealed and indexed), then delete the old pack and its index.
    fn rewrite_pack(&self, _held: &mut Writer, path: &Path) -> Result<RewrittenPack, RepoError> {
        let blob = crate::store::open_blob(path).map_err(io_err(path))?;
        let (file, len) = (&*blob.data, blob.len);
        let entries: Vec<TocEntry> = match pack::read_footer(&self.crypt, file, path, len) {
            Ok(f) => f.entries,
            Err(_) => pack::scan(&self.crypt, file, path, len, false).entries,
        };
        let mut chunks = Vec::new();
        let mut versions = Vec::new();
        let mut dropped = 0u64;
        for e in &entries {
            match record::read_record_at(&self.crypt, file, path, e.offset, e.frame_len) {
                Ok(PackRecord::Chunk {
                    id,
                    raw_len,
                    encoding,
                    data,
                }) => {
                    let c = EncodedChunk {
                        id,
                        raw_len,
                        encoding,
                        data,
                    };
                    if self.decode_stored(c.view(), "").is_ok() {
                        chunks.push(c);
                    } else {
                        dropped += 1;
                    }
                }
                Ok(PackRecord::Versions(vs)) => versions.extend(vs),
                Ok(PackRecord::Footer(_)) | Err(_) => dropped += 1,
            }
        }
        let mut out = RewrittenPack {
            old: path.to_path_buf(),
            new: None,
            chunks_kept: chunks.len() as u64,
            versions_kept: versions.len() as u64,
            records_dropped: dropped,
        };
        if !chunks.is_empty() || !versions.is_empty() {
            let mut p = PackWriter::create(&self.staging()?, &self.crypt)?;
            for c in &chunks {
                p.add_chunk(c.view())?;
            }
            let runs = split_versions(&versions, VERSIONS_RECORD_TARGET)
                .map_err(|(i, n)| corrupt(path, format!("version {i} encodes to {n} bytes")))?;
            p.add_versions(&runs)?;
            let idx = p.seal(&self.dir)?;
            drop(p);
            index::write(&self.crypt, &self.dir, &idx)?;
            out.new = Some(idx.pack.pack_path(&self.dir));
        }
        // The new pack is durable: only now does the damaged one go. A crash
        // in between leaves both, which is harmless (duplicates are ignored).
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(PackName::parse);
        if let Some(n) = name {
            match crate::store::remove(&n.idx_path(&self.dir)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&n.idx_path(&self.dir))(e)),
            }
        }
        crate::store::remove(path).map_err(io_err(path))?;
        if let Some(parent) = path.parent() {
            crate::store::fsync_dir(parent)?;
        }
        info!(pack = %path.display(), kept = out.chunks_kept, dropped, "rewrote a damaged pack");
        Ok(out)
    }

    /// Check the repository: the structure of every pack, unless `quick`
    /// the content of every chunk (decompress and blake3), that every index
    /// file agrees with its pack, and that every version's chunks exist.
    /// Problems are collected in the report; `Err` only when the repository
    /// cannot be listed at all.
    pub fn verify(&self, quick: bool) -> Result<VerifyReport, RepoError> {
        verify::verify(&self.crypt, &self.dir, quick, &mut |_| {})
    }

    /// [`LocalRepo::verify`], calling `progress` before the first pack and
    /// after each one.
    pub fn verify_with_progress(
        &self,
        quick: bool,
        progress: &mut dyn FnMut(VerifyProgress),
    ) -> Result<VerifyReport, RepoError> {
        verify::verify(&self.crypt, &self.dir, quick, progress)
    }

    pub(crate) fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.undefer();
        self.state
            .read()
            .expect("repository state poisoned by an earlier panic")
    }

    pub(crate) fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.undefer();
        self.state
            .write()
            .expect("repository state poisoned by an earlier panic")
    }

    pub(crate) fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>, RepoError> {
        let m = self.writer.as_ref().ok_or(RepoError::ReadOnly)?;
        let w = m
            .lock()
            .expect("repository writer poisoned by an earlier panic");
        self.fence()?;
        Ok(w)
    }

    /// Whether this writer may still write: on an object store, an error
    /// once its lease was taken over or has lapsed (see `lease.rs`).
    pub(crate) fn fence(&self) -> Result<(), RepoError> {
        match &self.lease {
            Some(l) => l.check(),
            None => Ok(()),
        }
    }

    /// Whether this writer's retention writes replace only the object it
    /// last read or wrote: a store that honours conditional writes
    /// (`keep::Seen`).
    fn keep_fenced(&self) -> bool {
        fenced(self.lease.as_ref())
    }

    /// Make `next` the retention file (`kf`, its lock held), fenced by
    /// the lease and, on a store that honours it, by the object last seen.
    /// After a failed write the object is read again before the next
    /// retention change ([`LocalRepo::catch_up_keep`]): a refusal means a
    /// write an earlier writer sent arrived late, and a lost answer leaves
    /// the object's ETag unknown.
    pub(crate) fn write_keep(
        &self,
        kf: &mut KeepFile,
        mut next: KeepFile,
    ) -> Result<(), RepoError> {
        self.fence()?;
        if let Err(e) = next.write(&self.crypt, &self.dir, self.keep_fenced()) {
            if self.keep_fenced() {
                self.keep_stale.store(true, Ordering::SeqCst);
            }
            return Err(e);
        }
        *kf = next;
        Ok(())
    }

    /// Read the retention file again and apply it, as a reader's
    /// `refresh` applies a forget or prune, when the last write of it
    /// failed on a store: called before each retention change, without its
    /// lock held. Only the retention file: a prune calls this between its
    /// index switch and its deletions, when looking for packs would find
    /// its sources again.
    pub(crate) fn catch_up_keep(&self) -> Result<(), RepoError> {
        if !self.keep_stale.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        match KeepFile::read(&self.crypt, &self.dir) {
            Ok(keep) => {
                self.apply_refreshed(Vec::new(), Vec::new(), keep);
                Ok(())
            }
            Err(e) => {
                self.keep_stale.store(true, Ordering::SeqCst);
                Err(e)
            }
        }
    }

    /// The writer's lease (tests).
    #[cfg(test)]
    pub(crate) fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// The open pack, started if there is none.
    fn open_pack<'w>(&self, w: &'w mut Writer) -> Result<&'w mut PackWriter, RepoError> {
        if w.open.is_none() {
            w.open = Some(PackWriter::create(&self.staging()?, &self.crypt)?);
        }
        Ok(w.open.as_mut().expect("just set"))
    }

    /// Seal the open pack, write its index, then make it visible in memory.
    /// On failure the open pack is dropped (its temp file deleted, its
    /// pending chunks forgotten) so that the next call starts afresh.
    fn seal_open(&self, w: &mut Writer) -> Result<(), RepoError> {
        let Some(mut p) = w.open.take() else {
            return Ok(());
        };
        self.fence()?;
        let idx = p.seal(&self.dir)?;
        drop(p);
        // A failure from here on leaves a sealed pack without an index:
        // the next open_writer indexes it, and a re-sent batch is filtered
        // by seq, or stored again harmlessly.
        self.fence()?;
        index::write(&self.crypt, &self.dir, &idx)?;
        // A lease that lapsed during the uploads: not acknowledged.
        self.fence()?;
        self.write_state().add_pack(idx);
        Ok(())
    }

    /// `put_chunks` on borrowed chunks: the ones the repository lacks are
    /// checked, then written into the open pack (sealed when full).
    fn put_chunk_slice(&self, chunks: &[EncodedChunk]) -> Result<(), RepoError> {
        let views: Vec<ChunkView<'_>> = chunks.iter().map(EncodedChunk::view).collect();
        self.put_chunk_views(&views)
    }

    /// Store chunks whose bytes are borrowed (a server's upload, read in
    /// place from the request body); checked as [`Repository::put_chunks`]
    /// checks them.
    pub fn put_chunk_views(&self, chunks: &[ChunkView<'_>]) -> Result<(), RepoError> {
        self.put_views(chunks, false).map(|_| ())
    }

    /// [`put_chunk_views`](Self::put_chunk_views), but a chunk stored in an
    /// earlier pack is written again (into the open pack, unless that holds
    /// it already): the work is the same whether the repository held the
    /// chunk or not. A server stores a client's first upload of a chunk
    /// this way, so that the time of an upload does not tell one client
    /// whether another stored that content (docs/decisions.md, "No
    /// probing by timing"). Reads use the first copy; the others cost
    /// space only. Returns how many chunks were written.
    pub fn put_chunk_copies(&self, chunks: &[ChunkView<'_>]) -> Result<usize, RepoError> {
        self.put_views(chunks, true)
    }

    fn put_views(&self, chunks: &[ChunkView<'_>], copies: bool) -> Result<usize, RepoError> {
        // Whole chunks first: a delta in the same call may have one of
        // them as its base, which its check reads.
        let (deltas, whole): (Vec<ChunkView<'_>>, Vec<ChunkView<'_>>) =
            chunks.iter().partition(|c| c.base().is_some());
        Ok(self.put_in_order(&whole, copies)? + self.put_in_order(&deltas, copies)?)
    }

    /// [`put_chunk_slice`](Self::put_chunk_slice) for chunks that may be
    /// checked together, before any is written; with `copies`, chunks
    /// stored in sealed packs are written again. Returns how many were
    /// written.
    fn put_in_order(&self, chunks: &[ChunkView<'_>], copies: bool) -> Result<usize, RepoError> {
        if self.writer.is_none() {
            return Err(RepoError::ReadOnly);
        }
        let todo: Vec<ChunkView<'_>> = {
            let st = self.read_state();
            let (have, todo): (Vec<ChunkView<'_>>, Vec<ChunkView<'_>>) = chunks
                .iter()
                .copied()
                .partition(|c| !copies && st.has_usable(&c.id));
            self.touch(have.iter().map(|c| &c.id));
            todo
        };
        // Hashing is the expensive part: done before taking the writer, and
        // for the whole call before writing any of it.
        for c in &todo {
            self.check_chunk(*c)?;
        }
        // Sealing too (an encrypted repository): a chunk's record is sealed
        // under its id, not its pack, so this needs no writer.
        let sealed = self.seal_chunks(&todo)?;
        let mut w = self.lock_writer()?;
        let mut written = 0;
        for (i, c) in todo.into_iter().enumerate() {
            let pending = w.open.as_ref().is_some_and(|p| p.contains(&c.id));
            if pending {
                continue;
            }
            if !copies {
                let st = self.read_state();
                if st.has_usable(&c.id) {
                    self.touch([&c.id]);
                    continue;
                }
            }
            written += 1;
            let target = w.pack_target;
            let p = self.open_pack(&mut w)?;
            let added = match &sealed {
                Some(s) => p.add_sealed_chunk(c, &s[i]),
                None => p.add_chunk(c),
            };
            if let Err(e) = added {
                w.open = None;
                return Err(e);
            }
            let full = w
                .open
                .as_ref()
                .is_some_and(|p| p.len() >= target || p.records() >= MAX_PACK_RECORDS);
            if full {
                self.seal_open(&mut w)?;
            }
        }
        Ok(written)
    }

    /// The sealed records of `chunks` in an encrypted repository (`None` in
    /// a plain one), on as many threads as there are cores once there is
    /// enough to share: sealing a first pass's chunks is about a tenth of
    /// its CPU (docs/decisions.md, "Encryption at rest (issue 20), step 2").
    fn seal_chunks(&self, chunks: &[ChunkView<'_>]) -> Result<Option<Vec<Vec<u8>>>, RepoError> {
        if !self.crypt.is_sealed() {
            return Ok(None);
        }
        let seal = |part: &[ChunkView<'_>]| -> Result<Vec<Vec<u8>>, RepoError> {
            part.iter()
                .map(|c| {
                    pack::seal_chunk(&self.crypt, *c)
                        .map_err(|e| corrupt(&self.dir, format!("encoding chunk {}: {e}", c.id)))
                })
                .collect()
        };
        let bytes: usize = chunks.iter().map(|c| c.data.len()).sum();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        if threads < 2 || bytes < PARALLEL_SEAL_BYTES {
            return seal(chunks).map(Some);
        }
        let per = chunks.len().div_ceil(threads);
        let parts: Vec<Result<Vec<Vec<u8>>, RepoError>> = std::thread::scope(|s| {
            let handles: Vec<_> = chunks
                .chunks(per.max(1))
                .map(|part| s.spawn(move || seal(part)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        let mut out = Vec::with_capacity(chunks.len());
        for p in parts {
            out.extend(p?);
        }
        Ok(Some(out))
    }

    /// Close pack `name` if it is open (a prune deleted it).
    pub(crate) fn forget_file(&self, name: &PackName) {
        self.files.lock().expect("file cache poisoned").remove(name);
    }

    /// Whether this handle holds the writer lock.
    pub(crate) fn is_writer(&self) -> bool {
        self.writer.is_some()
    }

    /// While a prune runs, remember that callers rely on `ids` being
    /// stored. Called with the state lock held (shared or not), so a
    /// prune's switch, which takes it exclusively, sees every touch made
    /// before it.
    pub(crate) fn touch<'a>(&self, ids: impl IntoIterator<Item = &'a ChunkId>) {
        if !self.pruning.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        if let Some(t) = self
            .touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            t.extend(ids.into_iter().copied());
        }
    }

    /// The local directory in which packs are filled (`DIR/tmp` for a
    /// directory).
    pub(crate) fn staging(&self) -> Result<PathBuf, RepoError> {
        crate::store::of(&self.dir)?
            .staging(&self.dir)
            .map_err(io_err(&self.dir))
    }

    /// Pack `name` at `path`, `len` bytes long by the indexes, opened for
    /// reads (kept open for the next read).
    fn pack_file(
        &self,
        name: PackName,
        path: &Path,
        len: u64,
    ) -> Result<Arc<dyn ReadAt>, RepoError> {
        let mut files = self.files.lock().expect("file cache poisoned");
        if let Some(f) = files.get(&name) {
            return Ok(f.clone());
        }
        let f = crate::store::open_blob_len(path, len)
            .map_err(io_err(path))?
            .data;
        if files.len() >= MAX_OPEN_PACKS {
            files.clear();
        }
        files.insert(name, f.clone());
        Ok(f)
    }

    /// Refuse a chunk whose content does not match its id or whose size is
    /// out of bounds.
    fn check_chunk(&self, c: ChunkView<'_>) -> Result<(), RepoError> {
        if c.data.len() > MAX_CHUNK_BYTES || c.raw_len as usize > MAX_CHUNK_BYTES {
            return Err(corrupt(
                &self.dir,
                format!("refused chunk {}: too large ({} bytes)", c.id, c.raw_len),
            ));
        }
        if !self.check_puts.load(std::sync::atomic::Ordering::Relaxed) {
            // Chunks from this process are trusted to match their ids, a
            // delta as much as a whole chunk; but that its base is stored
            // whole is part of what makes a delta readable, and it costs a
            // lookup (decoding every delta of a first pass again was 7 % of
            // its CPU, measured: docs/decisions.md "Delta chunks").
            return match c.base() {
                Some(b) => self.check_base(c, &b),
                None => Ok(()),
            };
        }
        if c.base().is_none() {
            return c
                .verify_as(self.crypt.ids())
                .map_err(|e| corrupt(&self.dir, format!("refused: chunk sent for storage: {e}")));
        }
        self.decode_stored(c, "chunk sent for storage")
            .map_err(|e| corrupt(&self.dir, format!("refused: {e}")))?;
        Ok(())
    }

    /// Refuse delta `c` unless its base `b` is stored whole.
    fn check_base(&self, c: ChunkView<'_>, b: &ChunkId) -> Result<(), RepoError> {
        let known = {
            let st = self.read_state();
            self.touch([b]);
            st.chunks
                .contains_key(b)
                .then(|| st.delta_bases.contains_key(b))
        };
        let refused = match known {
            Some(false) => return Ok(()),
            Some(true) => format!("its base {b} is itself a delta"),
            // Not sealed yet: the open pack may hold it.
            None => match self.locate_encoded(b) {
                Ok((base, _)) if base.base().is_none() => return Ok(()),
                Ok(_) => format!("its base {b} is itself a delta"),
                Err(RepoError::MissingChunk(_)) => format!("its base {b} is not in the repository"),
                Err(e) => return Err(e),
            },
        };
        Err(corrupt(
            &self.dir,
            format!("refused: chunk sent for storage: delta {}: {refused}", c.id),
        ))
    }
}

/// Who a new key slot is for, as `rewind key list` shows it: this host
/// and user (labels only; empty when unknown).
fn slot_label() -> SlotLabel {
    let host = fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let user = std::env::var("USER").unwrap_or_default();
    let cut = |mut s: String| {
        while s.len() > 255 {
            s.pop();
        }
        s
    };
    SlotLabel {
        host: cut(host),
        user: cut(user),
    }
}

/// Whether retention writes under `lease` are conditional on the object
/// last seen: a lease on a store that honours both conditions.
fn fenced(lease: Option<&Lease>) -> bool {
    lease.is_some_and(|l| {
        let h = l.honours();
        h.create && h.update
    })
}

/// What keeps other writers out: `DIR/lock` in a directory, the lease
/// `PREFIX/lock` on an object store.
fn take_writer(dir: &Path) -> Result<(Option<File>, Option<Lease>), RepoError> {
    match crate::store::of(dir)?.leasing() {
        Some(objects) => {
            let settings = LeaseSettings::from_env(dir)?;
            Ok((None, Some(Lease::take(objects, dir, settings)?)))
        }
        None => {
            rewind_core::private::create_dir_all(dir).map_err(io_err(dir))?;
            Ok((Some(take_lock(dir)?), None))
        }
    }
}

/// Take `DIR/lock` and write our pid into it.
fn take_lock(dir: &Path) -> Result<File, RepoError> {
    let path = dir.join("lock");
    let mut f = rewind_core::private::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(&path))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(RepoError::Locked {
                path: dir.to_path_buf(),
                holder: format!("pid file {}", path.display()),
                lock: path,
            });
        }
        Err(TryLockError::Error(e)) => return Err(io_err(&path)(e)),
    }
    f.set_len(0)
        .and_then(|()| writeln!(f, "{}", std::process::id()))
        .map_err(io_err(&path))?;
    Ok(f)
}

/// Delete everything in `DIR/tmp`: with the writer lock held, it can only
/// be what a crashed or failed writer left.
fn clean_tmp(tmp: &Path) -> Result<(), RepoError> {
    let mut n = 0;
    for e in fs::read_dir(tmp).map_err(io_err(tmp))? {
        let e = e.map_err(io_err(tmp))?;
        let p = e.path();
        let r = if e.file_type().map_err(io_err(&p))?.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        match r {
            Ok(()) => n += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&p)(e)),
        }
    }
    if n > 0 {
        info!(count = n, dir = %tmp.display(), "deleted leftovers of an interrupted writer");
    }
    Ok(())
}

impl Repository for LocalRepo {
    fn chunk_ids(&self) -> rewind_core::ChunkIds {
        self.crypt.ids().clone()
    }

    fn missing_chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>, RepoError> {
        let w = match &self.writer {
            Some(_) => Some(self.lock_writer()?),
            None => None,
        };
        let pending = w.as_ref().and_then(|w| w.open.as_ref());
        let st = self.read_state();
        // A chunk only in a condemned pack is missing: sent again, it is
        // written anew (and the condemned copy may go).
        let (missing, held): (Vec<ChunkId>, Vec<ChunkId>) = ids
            .iter()
            .partition(|id| !st.has_usable(id) && !pending.is_some_and(|p| p.contains(id)));
        self.touch(&held);
        Ok(missing)
    }

    fn put_chunks(&self, chunks: Vec<EncodedChunk>) -> Result<(), RepoError> {
        self.put_chunk_slice(&chunks)
    }

    fn commit_versions(&self, versions: Vec<Version>) -> Result<(), RepoError> {
        let mut w = self.lock_writer()?;
        let batch: Vec<Version> = {
            let st = self.read_state();
            let keep: Vec<bool> = {
                let mut seen = HashSet::new();
                versions
                    .iter()
                    .map(|v| {
                        st.max_seq(&v.client).is_none_or(|m| v.seq > m)
                            && seen.insert((v.client.as_str(), v.seq))
                    })
                    .collect()
            };
            let batch: Vec<Version> = versions
                .into_iter()
                .zip(keep)
                .filter_map(|(v, k)| k.then_some(v))
                .collect();
            let pending = w.open.as_ref();
            self.touch(batch.iter().flat_map(|v| v.chunk_refs().map(|c| &c.id)));
            for v in &batch {
                for c in v.chunk_refs() {
                    if !st.chunks.contains_key(&c.id) && !pending.is_some_and(|p| p.contains(&c.id))
                    {
                        return Err(RepoError::DanglingVersion {
                            seq: v.seq,
                            path: display(&v.path),
                            chunk: c.id,
                        });
                    }
                }
            }
            batch
        };
        if batch.is_empty() {
            return Ok(());
        }
        let runs = split_versions(&batch, VERSIONS_RECORD_TARGET).map_err(|(i, n)| {
            corrupt(
                &self.dir,
                format!(
                    "refused version {} of {}: it encodes to {n} bytes, over the record limit",
                    batch[i].seq,
                    display(&batch[i].path)
                ),
            )
        })?;
        if let Err(e) = self.open_pack(&mut w)?.add_versions(&runs) {
            w.open = None;
            return Err(e);
        }
        self.seal_open(&mut w)?;
        if let Some(m) = &self.vindex
            && self.read_state().stats_versions() >= crate::vindex::WORTH_FROM
        {
            m.committed(&self.dir, batch.len() as u64);
        }
        Ok(())
    }

    fn versions_of(&self, client: &str, path: &[u8]) -> Result<Vec<Version>, RepoError> {
        if let Some(r) = self.with_view(|v| v.versions_of(client, path)) {
            return Ok(r);
        }
        Ok(self.read_state().versions_of(client, path))
    }

    fn tree_at(&self, client: &str, path: &[u8], at: Timestamp) -> Result<Vec<Version>, RepoError> {
        if let Some(r) = self.with_view(|v| v.tree_at(client, path, at)) {
            return Ok(r);
        }
        Ok(self.read_state().tree_at(client, path, at))
    }

    fn query_point(
        &self,
        client: &str,
        at: Timestamp,
    ) -> Result<rewind_core::retention::QueryPoint, RepoError> {
        if let Some(r) = self.with_view(|v| Ok(v.query_point(client, at))) {
            return Ok(r);
        }
        Ok(self.read_state().query_point(client, at))
    }

    fn forget(
        &self,
        client: &str,
        req: &rewind_core::forget::ForgetRequest,
    ) -> Result<rewind_core::forget::ForgetReport, RepoError> {
        self.forget_client(client, req)
    }

    fn pin(
        &self,
        client: &str,
        at: Timestamp,
        label: Option<String>,
    ) -> Result<rewind_core::forget::Pin, RepoError> {
        self.pin_point(client, at, label)
    }

    fn pins(&self, client: &str) -> Result<Vec<rewind_core::forget::Pin>, RepoError> {
        Ok(self
            .keepfile
            .lock()
            .expect("retention poisoned")
            .clients
            .get(client)
            .map(|c| c.pins.clone())
            .unwrap_or_default())
    }

    fn unpin(&self, client: &str, id: u64) -> Result<(), RepoError> {
        self.unpin_point(client, id)
    }

    fn retention(&self, client: &str) -> Result<rewind_core::forget::RetentionStatus, RepoError> {
        let mut r = self.retention_status(client);
        r.reclaimable = Some(self.reclaimable());
        Ok(r)
    }

    fn prune(
        &self,
        req: &rewind_core::forget::PruneRequest,
        pending: &mut rewind_core::forget::PendingChunks<'_>,
    ) -> Result<rewind_core::forget::PruneReport, RepoError> {
        self.prune_request(req, pending)
    }

    fn covers(&self, client: &str, path: &[u8]) -> Result<bool, RepoError> {
        if let Some(r) = self.with_view(|v| v.covers(client, path)) {
            return Ok(r);
        }
        Ok(self.read_state().covers(client, path))
    }

    fn find(&self, client: &str, q: &FindQuery) -> Result<FindReply, RepoError> {
        let pattern = PathPattern::new(&q.pattern, q.ignore_case)
            .map_err(|e| RepoError::BadQuery(e.to_string()))?;
        Ok(self.read_state().find(client, q, &pattern))
    }

    fn activity(&self, client: &str, q: &ActivityQuery) -> Result<Vec<ActivityBucket>, RepoError> {
        self.read_state()
            .activity(client, q)
            .map_err(RepoError::BadQuery)
    }

    fn refresh(&self) -> Result<(), RepoError> {
        LocalRepo::refresh(self)
    }

    fn read_chunk(&self, id: &ChunkId) -> Result<Vec<u8>, RepoError> {
        let (c, place) = self.locate_encoded(id)?;
        self.decode_owned(c, &place)
    }

    fn read_delta_base(&self, id: &ChunkId) -> Result<StoredBase, RepoError> {
        let (c, place) = self.locate_encoded(id)?;
        let incompressible = c.encoding == Encoding::Raw;
        Ok(StoredBase {
            raw: self.decode_owned(c, &place)?,
            incompressible,
        })
    }

    fn read_chunks(&self, ids: &[ChunkId]) -> Result<Vec<Vec<u8>>, RepoError> {
        // On a store: few ranged GETs, in parallel. Anything that goes
        // wrong there is read again one chunk at a time, which reports it
        // (or, for a reader that finds a pack gone, reloads first).
        match self.read_chunks_ranged(ids) {
            Some(Ok(chunks)) => Ok(chunks),
            _ => ids.iter().map(|id| self.read_chunk(id)).collect(),
        }
    }

    fn store_base(&self, chunk: EncodedChunk) -> Result<(), RepoError> {
        if self.config.format < 3 {
            return Err(RepoError::Unsupported(
                "a format 2 repository takes no deltas (open it for writing to upgrade it)",
            ));
        }
        if chunk.base().is_some() {
            return Err(corrupt(
                &self.dir,
                format!("refused chunk {}: a delta cannot be a base", chunk.id),
            ));
        }
        // Recorded before it is stored: prune keeps every base, and an id
        // recorded for a chunk that never arrived costs nothing.
        self.record_base(chunk.id)?;
        self.store_durably(&[chunk])
    }

    fn delta_base(&self, id: &ChunkId) -> Result<Option<ChunkId>, RepoError> {
        let st = self.read_state();
        if self.config.format < 3 || !st.has_usable(id) {
            return Ok(None);
        }
        let base = st.delta_bases.get(id).copied().unwrap_or(*id);
        self.touch([id, &base]);
        Ok(Some(base))
    }

    fn stats(&self) -> Result<RepoStats, RepoError> {
        Ok(self.read_state().stats())
    }

    fn storage_order(&self, ids: &[ChunkId]) -> Vec<Option<(u64, u64)>> {
        let st = self.read_state();
        ids.iter()
            .map(|id| st.chunks.get(id).map(|l| (u64::from(l.pack), l.offset)))
            .collect()
    }

    fn parallel_reads(&self) -> usize {
        // On an object store every read waits a round trip.
        if crate::store::is_url(&self.dir) {
            STORE_PARALLEL_READS
        } else {
            1
        }
    }
}

/// The agent's journal hands chunks straight to the embedded repository:
/// they are written into the open pack, which is then sealed (fsync, index)
/// before the journal records any version that refers to them.
impl ChunkSink for LocalRepo {
    fn has_chunk(&self, id: &ChunkId) -> bool {
        let st = self.read_state();
        let held = st.has_usable(id);
        if held {
            self.touch([id]);
        }
        held
    }

    fn store_durably(&self, chunks: &[EncodedChunk]) -> Result<(), RepoError> {
        if !chunks.is_empty() {
            self.put_chunk_slice(chunks)?;
        }
        let mut w = self.lock_writer()?;
        self.seal_open(&mut w)
    }

    fn commit_durably(
        &self,
        chunks: &[EncodedChunk],
        versions: &[Version],
    ) -> Result<(), RepoError> {
        if !chunks.is_empty() {
            self.put_chunk_slice(chunks)?;
        }
        // One pack holds the chunks (unless they filled packs of their own)
        // and the versions: the commit seals it. A commit with nothing new
        // (a batch sent again) seals nothing, hence the second seal.
        self.commit_versions(versions.to_vec())?;
        let mut w = self.lock_writer()?;
        self.seal_open(&mut w)
    }
}
