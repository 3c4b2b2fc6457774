//! `verify` and the reports of `verify` and `rebuild_index`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rewind_core::path::display;
use rewind_core::{ChunkId, Encoding, RepoError, Version};
use serde::Serialize;

use crate::crypt::Crypt;
use crate::index;
use crate::layout::{list_idx, list_packs_meta};
use crate::pack;
use crate::record::{self, PackRecord};
use crate::toc::{TocEntry, TocKind};

/// One problem found in a repository (serialized as `verify --json`
/// lists it, the path as a `JsonPath`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Issue {
    /// The file concerned (the repository directory for problems between
    /// files, such as a version whose chunk is missing).
    #[serde(serialize_with = "rewind_core::path::serialize_json_os_path")]
    pub path: PathBuf,
    /// Offset in that file, when the problem has one.
    pub offset: Option<u64>,
    /// What is wrong, for people.
    pub problem: String,
}

/// What [`LocalRepo::verify`](crate::LocalRepo::verify) found.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Pack files examined.
    pub packs: u64,
    /// Chunk records found in them.
    pub chunks: u64,
    /// Chunk records stored as deltas against another chunk.
    pub delta_chunks: u64,
    /// Chunks decompressed and hashed (0 in a quick verify).
    pub chunks_read: u64,
    /// Versions found in them.
    pub versions: u64,
    /// Of those, versions retention forgot (not checked; a prune removes
    /// them).
    pub versions_forgotten: u64,
    /// Every problem, in the order found.
    pub issues: Vec<Issue>,
    /// Versions whose content cannot be restored (a chunk is missing, or
    /// every copy of it is damaged): restoring them reports a problem,
    /// everything else restores.
    pub damaged_versions: Vec<DamagedVersion>,
}

/// A version whose content is (partly) lost (the type is the
/// vocabulary's: a verify through a server names them too).
pub use rewind_core::DamagedVersion;

/// How far `verify` got: packs and pack bytes done, of the totals.
#[derive(Clone, Copy, Debug, Default)]
pub struct VerifyProgress {
    /// Packs examined so far.
    pub packs_done: u64,
    /// Packs in all.
    pub packs_total: u64,
    /// Bytes of the packs examined so far.
    pub bytes_done: u64,
    /// Bytes of all packs.
    pub bytes_total: u64,
}

impl VerifyReport {
    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.issues.is_empty()
    }
}

/// What [`LocalRepo::rebuild_index`](crate::LocalRepo::rebuild_index) did.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct RebuildReport {
    /// Index files written.
    pub packs: u64,
    /// Chunks indexed.
    pub chunks: u64,
    /// Versions indexed.
    pub versions: u64,
    /// Damaged packs, whose index holds only what could be salvaged.
    pub damaged: Vec<Issue>,
    /// Index files deleted because their pack no longer exists.
    pub orphan_indexes_removed: u64,
}

/// What [`LocalRepo::repair`](crate::LocalRepo::repair) did.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct RepairReport {
    /// The index rebuild that came first.
    pub rebuilt: RebuildReport,
    /// Damaged packs rewritten with their intact records.
    pub rewritten: Vec<RewrittenPack>,
}

/// One damaged pack replaced by a sound one (serialized as `repair
/// --json` lists it, paths as `JsonPath`s).
#[derive(Clone, Debug, Serialize)]
pub struct RewrittenPack {
    /// The damaged pack (deleted).
    #[serde(serialize_with = "rewind_core::path::serialize_json_os_path")]
    pub old: PathBuf,
    /// The new pack, unless nothing was left to keep.
    #[serde(serialize_with = "rewind_core::path::serialize_json_os_path_opt")]
    pub new: Option<PathBuf>,
    /// Intact chunks copied.
    pub chunks_kept: u64,
    /// Versions copied.
    pub versions_kept: u64,
    /// Records that were damaged and are gone.
    pub records_dropped: u64,
}

struct Checker {
    report: VerifyReport,
    /// Chunks of which some copy failed its check.
    bad: HashSet<ChunkId>,
    /// Chunks of which some copy passed (or was not read: quick mode).
    good: HashSet<ChunkId>,
}

impl Checker {
    fn issue(&mut self, path: &Path, offset: Option<u64>, problem: impl Into<String>) {
        self.report.issues.push(Issue {
            path: path.to_path_buf(),
            offset,
            problem: problem.into(),
        });
    }
}

/// Check the repository in `dir`; see `LocalRepo::verify`.
pub(crate) fn verify(
    c: &Crypt,
    dir: &Path,
    quick: bool,
    progress: &mut dyn FnMut(VerifyProgress),
) -> Result<VerifyReport, RepoError> {
    let mut ck = Checker {
        report: VerifyReport::default(),
        bad: HashSet::new(),
        good: HashSet::new(),
    };
    // A store's listing carries each pack's length: no HEAD per pack.
    let listed = list_packs_meta(dir)?;
    let packs: std::collections::BTreeMap<_, PathBuf> =
        listed.iter().map(|(n, l)| (*n, l.path.clone())).collect();
    let listed_len = |name| listed.get(name).and_then(|l: &crate::store::Listed| l.len);
    let mut prog = VerifyProgress {
        packs_total: packs.len() as u64,
        bytes_total: packs
            .iter()
            .filter_map(|(n, p)| listed_len(n).or_else(|| crate::store::len(p).ok()))
            .sum(),
        ..VerifyProgress::default()
    };
    progress(prog);
    let keep = match crate::keep::KeepFile::read(c, dir) {
        Ok(k) => k,
        Err(e) => {
            ck.issue(&dir.join("retention"), None, e.to_string());
            crate::keep::KeepFile::default()
        }
    };
    let idx_names = list_idx(dir)?;
    // A pack a prune was deleting may have lost its pack or its index
    // file first: the expected leftover of a crash, finished by the next
    // writer.
    for n in idx_names
        .iter()
        .filter(|n| !packs.contains_key(n) && !keep.deleting.contains(n))
    {
        ck.issue(&n.idx_path(dir), None, "index file without its pack");
    }
    let mut chunk_lens: HashMap<ChunkId, u32> = HashMap::new();
    let mut versions: Vec<Version> = Vec::new();
    // Whole chunks that read back sound, where they are: the bases of the
    // deltas, which are checked once every pack has been read.
    let mut whole: HashMap<ChunkId, (PathBuf, TocEntry)> = HashMap::new();
    let mut deltas: Vec<(PathBuf, TocEntry)> = Vec::new();
    for (name, path) in &packs {
        ck.report.packs += 1;
        prog.packs_done += 1;
        let opened = match listed_len(name) {
            Some(n) => crate::store::open_blob_len(path, n),
            None => crate::store::open_blob(path),
        };
        prog.bytes_done += opened.as_ref().map(|b| b.len).unwrap_or(0);
        progress(prog);
        let blob = match opened {
            Ok(b) => b,
            Err(e) => {
                ck.issue(path, None, format!("cannot open: {e}"));
                continue;
            }
        };
        let len = blob.len;
        let data = whole_if_remote(&blob, path, quick);
        let (entries, pack_versions, bad_offsets) =
            check_pack(c, &mut ck, &*data, path, len, quick);
        for e in &entries {
            if let TocKind::Chunk {
                id,
                raw_len,
                encoding,
            } = e.kind
            {
                ck.report.chunks += 1;
                if matches!(encoding, Encoding::Delta { .. }) {
                    ck.report.delta_chunks += 1;
                }
                chunk_lens.entry(id).or_insert(raw_len);
                if bad_offsets.contains(&e.offset) {
                    ck.bad.insert(id);
                } else if matches!(encoding, Encoding::Delta { .. }) && !quick {
                    deltas.push((path.clone(), *e));
                } else {
                    ck.good.insert(id);
                    if !matches!(encoding, Encoding::Delta { .. }) {
                        whole.entry(id).or_insert_with(|| (path.clone(), *e));
                    }
                }
            }
        }
        ck.report.versions += pack_versions.len() as u64;

        let idx_path = name.idx_path(dir);
        match index::read(c, dir, *name) {
            Ok(None) if keep.deleting.contains(name) => {}
            Ok(None) => ck.issue(&idx_path, None, "pack has no index file"),
            Err(e) => ck.issue(&idx_path, None, e.to_string()),
            Ok(Some(i)) => {
                if i.pack != *name || i.pack_len != len {
                    ck.issue(
                        &idx_path,
                        None,
                        format!(
                            "index describes pack {} of {} bytes; the pack has {len}",
                            i.pack, i.pack_len
                        ),
                    );
                }
                let expect: Vec<_> = entries.iter().filter_map(TocEntry::idx_chunk).collect();
                if i.chunks != expect {
                    ck.issue(&idx_path, None, "index chunk list disagrees with the pack");
                }
                if i.versions != pack_versions {
                    ck.issue(&idx_path, None, "index versions disagree with the pack");
                }
            }
        }
        versions.extend(pack_versions);
    }
    // Only what retention keeps is checked for its chunks; forgotten
    // versions may still sit in packs a prune has not rewritten.
    let found = versions.len();
    let versions = crate::state::kept_only(versions, &keep);
    ck.report.versions_forgotten = (found - versions.len()) as u64;
    let mut needed: HashSet<ChunkId> = keep.bases.iter().copied().collect();
    for v in &versions {
        needed.extend(v.chunk_refs().map(|c| c.id));
    }
    let mut bases = HashMap::new();
    for (path, e) in &deltas {
        let TocKind::Chunk {
            id,
            encoding: Encoding::Delta { base },
            raw_len,
        } = e.kind
        else {
            continue;
        };
        // A delta no kept version needs may have lost its base to a
        // prune: it is garbage the next repack drops, not damage.
        if !whole.contains_key(&base) && !needed.contains(&id) {
            continue;
        }
        match check_delta(c, path, e, id, base, whole.get(&base), &mut bases) {
            Ok(n) if n == raw_len as usize => {
                ck.report.chunks_read += 1;
                ck.good.insert(id);
            }
            Ok(_) => {
                ck.bad.insert(id);
                ck.issue(
                    path,
                    Some(e.offset),
                    "chunk length disagrees with the table of contents",
                );
            }
            Err(why) => {
                ck.bad.insert(id);
                ck.issue(path, Some(e.offset), why);
            }
        }
    }
    for v in &versions {
        let lost = v.chunk_refs().find_map(|c| {
            if !chunk_lens.contains_key(&c.id) {
                Some((c.id, "missing"))
            } else if ck.bad.contains(&c.id) && !ck.good.contains(&c.id) {
                Some((c.id, "damaged"))
            } else {
                None
            }
        });
        if let Some((chunk, reason)) = lost {
            ck.report.damaged_versions.push(DamagedVersion {
                client: v.client.clone(),
                seq: v.seq,
                path: v.path.clone(),
                observed_at: v.observed_at,
                chunk,
                reason,
            });
        }
        for c in v.chunk_refs() {
            match chunk_lens.get(&c.id) {
                None => ck.issue(
                    dir,
                    None,
                    format!(
                        "version {} of {} (client {}) refers to chunk {} which no pack holds",
                        v.seq,
                        display(&v.path),
                        v.client,
                        c.id
                    ),
                ),
                Some(&n) if n != c.len => ck.issue(
                    dir,
                    None,
                    format!(
                        "version {} of {} (client {}) gives chunk {} length {}, the pack {n}",
                        v.seq,
                        display(&v.path),
                        v.client,
                        c.id,
                        c.len
                    ),
                ),
                Some(_) => {}
            }
        }
    }
    Ok(ck.report)
}

/// Check one pack; returns its records and versions as far as they could be
/// read.
/// Decode the delta `id` at `e` in the pack at `path` with its base, found
/// sound at `base_at`; its length, or why it cannot be read.
fn check_delta(
    cr: &Crypt,
    path: &Path,
    e: &TocEntry,
    id: ChunkId,
    base: ChunkId,
    base_at: Option<&(PathBuf, TocEntry)>,
    bases: &mut HashMap<ChunkId, Vec<u8>>,
) -> Result<usize, String> {
    let Some((bpath, be)) = base_at else {
        return Err(format!(
            "chunk {id} is a delta against chunk {base}, which no pack holds whole and sound"
        ));
    };
    // Thousands of deltas share a small-file dictionary: bases read last
    // are kept.
    if !bases.contains_key(&base) {
        let bfile =
            crate::store::open_blob(bpath).map_err(|e| format!("{}: {e}", bpath.display()))?;
        let raw = record::read_chunk_at(cr, &*bfile.data, bpath, be.offset, be.frame_len, &base)
            .map_err(|e| format!("base of chunk {id}: {e}"))?;
        if bases.len() >= 4 {
            bases.clear();
        }
        bases.insert(base, raw);
    }
    let base_raw = &bases[&base];
    let file = crate::store::open_blob(path).map_err(|e| format!("cannot open: {e}"))?;
    let c = record::read_encoded_at(cr, &*file.data, path, e.offset, e.frame_len, &id)
        .map_err(|e| e.to_string())?;
    c.decode_with_base_as(cr.ids(), base_raw)
        .map(|d| d.len())
        .map_err(|e| e.to_string())
}

/// Packs up to this size are read whole by a full verify of a store.
const WHOLE_PACK_MAX: u64 = 128 << 20;

/// What a full verify reads `blob`'s records from: on a store, the whole
/// pack fetched with one request (a record read on its own is a ranged GET
/// of its own: one per chunk, one after the other); a local file as it is.
/// If the whole read fails, the records are read one by one, and each
/// failure is reported where it is.
fn whole_if_remote(
    blob: &crate::store::Blob,
    path: &Path,
    quick: bool,
) -> std::sync::Arc<dyn crate::store::ReadAt> {
    let remote = crate::store::of(path).is_ok_and(|s| s.is_remote());
    if quick || !remote || blob.len > WHOLE_PACK_MAX {
        return blob.data.clone();
    }
    let mut bytes = vec![0u8; blob.len as usize];
    match blob.data.read_exact_at(&mut bytes, 0) {
        Ok(()) => std::sync::Arc::new(crate::backend::Fetched {
            start: 0,
            bytes: bytes.into(),
        }),
        Err(_) => blob.data.clone(),
    }
}

fn check_pack(
    c: &Crypt,
    ck: &mut Checker,
    file: &dyn crate::store::ReadAt,
    path: &Path,
    len: u64,
    quick: bool,
) -> (Vec<TocEntry>, Vec<Version>, HashSet<u64>) {
    let mut bad = HashSet::new();
    match pack::read_footer(c, file, path, len) {
        Ok(footer) => {
            // With a sound table of contents each record is read on its own,
            // so one damaged record does not hide the ones after it.
            let mut versions = Vec::new();
            for e in &footer.entries {
                match e.kind {
                    TocKind::Chunk {
                        id,
                        raw_len,
                        encoding,
                    } => {
                        // Deltas are decoded once every base has been seen.
                        if quick || matches!(encoding, Encoding::Delta { .. }) {
                            continue;
                        }
                        match record::read_chunk_at(c, file, path, e.offset, e.frame_len, &id) {
                            Ok(data) if data.len() == raw_len as usize => {
                                ck.report.chunks_read += 1
                            }
                            Ok(_) => {
                                bad.insert(e.offset);
                                ck.issue(
                                    path,
                                    Some(e.offset),
                                    "chunk length disagrees with the table of contents",
                                )
                            }
                            Err(err) => {
                                bad.insert(e.offset);
                                ck.issue(path, Some(e.offset), err.to_string())
                            }
                        }
                    }
                    TocKind::Versions { count } => {
                        match record::read_record_at(c, file, path, e.offset, e.frame_len) {
                            Ok(PackRecord::Versions(vs)) if vs.len() == count as usize => {
                                versions.extend(vs)
                            }
                            Ok(_) => ck.issue(
                                path,
                                Some(e.offset),
                                "version record disagrees with the table of contents",
                            ),
                            Err(err) => ck.issue(path, Some(e.offset), err.to_string()),
                        }
                    }
                }
            }
            (footer.entries, versions, bad)
        }
        Err(err) => {
            ck.issue(path, None, err.to_string());
            let s = pack::scan(c, file, path, len, !quick);
            if !quick {
                let chunks = s
                    .entries
                    .iter()
                    .filter(|e| matches!(e.kind, TocKind::Chunk { .. }))
                    .count();
                let deltas = s
                    .entries
                    .iter()
                    .filter(|e| {
                        matches!(
                            e.kind,
                            TocKind::Chunk {
                                encoding: Encoding::Delta { .. },
                                ..
                            }
                        )
                    })
                    .count();
                ck.report.chunks_read += (chunks - deltas - s.bad_chunks.len()) as u64;
            }
            for (off, why) in s.bad_chunks {
                bad.insert(off);
                ck.issue(path, Some(off), why);
            }
            for (off, why) in s.skipped {
                ck.issue(path, Some(off), format!("record lost: {why}"));
            }
            if let Some((off, why)) = s.damage {
                ck.issue(
                    path,
                    Some(off),
                    format!("records from here on are lost: {why}"),
                );
            }
            (s.entries, s.versions, bad)
        }
    }
}
