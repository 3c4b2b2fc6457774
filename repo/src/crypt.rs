//! Sealing in an encrypted repository (format 5): what the records of
//! packs, the index files and the small files become, and how they are
//! opened again. A plain repository's [`Crypt`] passes bytes through
//! unchanged, so every reader and writer takes one and works on both.
//!
//! A sealed pack record's frame payload is
//!
//! ```text
//! kind (1 byte: 1 chunk, 2 versions, 3 footer)
//! chunk id (32 bytes, chunks only)
//! sealed postcard record (nonce 24, ciphertext, tag 16)
//! ```
//!
//! The kind and the (keyed) id stay in clear, so a scan of a pack without
//! footer opens every record with its associated data: a chunk is sealed
//! under its id, versions and footers under the pack's name (the file name
//! up to its first `.`, also for the pack being written in `tmp/`). Index
//! files are sealed whole under their pack's name, small files (`retention`)
//! under their name in the repository. See docs/decisions.md, "Encryption
//! at rest (issue 20), step 2: wiring".

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use rewind_core::frame;
use rewind_core::{ChunkId, ChunkIds};
use rewind_crypto::{Aead, MasterKey, NONCE_LEN, OVERHEAD, RecordKind, RepoId, Sealer};

use crate::config::Config;

/// The keys of an encrypted repository, or none (plain). Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Crypt(Option<Arc<Keys>>);

struct Keys {
    sealer: Sealer,
    ids: ChunkIds,
}

/// What a sealed record's clear prefix says: its kind byte, and its id
/// for a chunk.
pub(crate) type SealedAs = (u8, Option<ChunkId>);

/// The chunk naming of a plain repository.
static PLAIN: ChunkIds = ChunkIds::Plain;

/// A record's kind byte in clear before its sealed bytes.
pub(crate) const KIND_CHUNK: u8 = RecordKind::Chunk as u8;
pub(crate) const KIND_VERSIONS: u8 = RecordKind::Versions as u8;
pub(crate) const KIND_FOOTER: u8 = RecordKind::PackFooter as u8;

impl Crypt {
    /// A plain repository's: nothing sealed, plain chunk ids.
    pub(crate) fn plain() -> Crypt {
        Crypt(None)
    }

    /// An encrypted repository's, from its master key and the config's
    /// id and cipher (a plain config gives a plain one).
    pub(crate) fn new(master: &MasterKey, config: &Config) -> Crypt {
        match &config.encryption {
            // `Config::read` refuses a cipher this build does not know, so
            // the fallback is never taken; it seals rather than go plain.
            Some(e) => Crypt::with(master, config.repo_id(), e.aead().unwrap_or(Aead::NEWEST)),
            None => Crypt::plain(),
        }
    }

    /// An encrypted repository's, from its master key, id and cipher.
    pub(crate) fn with(master: &MasterKey, repo: RepoId, aead: Aead) -> Crypt {
        Crypt(Some(Arc::new(Keys {
            sealer: master.sealer(repo, aead),
            ids: ChunkIds::Keyed(Arc::new(master.chunk_id_key().duplicate())),
        })))
    }

    /// Whether records are sealed.
    pub(crate) fn is_sealed(&self) -> bool {
        self.0.is_some()
    }

    /// How chunks are named.
    pub(crate) fn ids(&self) -> &ChunkIds {
        self.0.as_ref().map_or(&PLAIN, |k| &k.ids)
    }

    /// The frame payload of a pack record whose postcard bytes are
    /// `plain`: unchanged in a plain repository; sealed (see the module
    /// doc) in an encrypted one. `chunk` is the chunk's id for a chunk
    /// record, `pack` the pack's name.
    pub(crate) fn seal_record(
        &self,
        kind: u8,
        chunk: Option<&ChunkId>,
        pack: &str,
        plain: &[u8],
    ) -> Result<Vec<u8>, String> {
        let Some(k) = &self.0 else {
            return Ok(plain.to_vec());
        };
        let (rk, name) = record_kind(kind, chunk.map(|c| &c.0[..]), pack)?;
        let sealed = k.sealer.seal(rk, name, plain).map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(1 + 32 + sealed.len());
        out.push(kind);
        if let Some(c) = chunk {
            out.extend_from_slice(&c.0);
        }
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The whole frame of a chunk's record sealed, built in one buffer:
    /// frame header, kind, `id`, nonce, then the postcard bytes `encode`
    /// appends (about `size` of them), sealed in place, and the tag. The
    /// same bytes as [`Crypt::seal_record`] in a frame, without copying the
    /// chunk's data four times (the hot path of an encrypted first pass).
    pub(crate) fn seal_chunk_frame(
        &self,
        id: &ChunkId,
        size: usize,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), String>,
    ) -> Result<Vec<u8>, String> {
        let Some(k) = &self.0 else {
            return Err("a plain repository seals nothing".into());
        };
        let mut buf = Vec::with_capacity(frame::HEADER + 1 + 32 + OVERHEAD + size + 16);
        let start = frame::begin(&mut buf);
        buf.push(KIND_CHUNK);
        buf.extend_from_slice(&id.0);
        let at = buf.len();
        buf.extend_from_slice(&[0; NONCE_LEN]);
        encode(&mut buf)?;
        k.sealer
            .seal_in_place(RecordKind::Chunk, &id.0, &mut buf, at)
            .map_err(|e| e.to_string())?;
        let payload = buf.len() - start - frame::HEADER;
        if payload > frame::MAX_FRAME {
            return Err(format!("sealed record of {payload} bytes is too large"));
        }
        frame::finish(&mut buf, start);
        Ok(buf)
    }

    /// The postcard bytes of the pack record whose frame payload is
    /// `payload`, with its kind byte (`None` in a plain repository, whose
    /// payloads are postcard bytes already). A sealed record that does not
    /// open (damaged, from another repository or pack) is an error.
    pub(crate) fn open_record<'a>(
        &self,
        pack: &str,
        payload: &'a [u8],
    ) -> Result<(Option<SealedAs>, Cow<'a, [u8]>), String> {
        let Some(k) = &self.0 else {
            return Ok((None, Cow::Borrowed(payload)));
        };
        let (&kind, rest) = payload
            .split_first()
            .ok_or_else(|| "empty sealed record".to_string())?;
        let (chunk, sealed) = if kind == KIND_CHUNK {
            if rest.len() < 32 {
                return Err("sealed chunk record too short for its id".into());
            }
            let (id, sealed) = rest.split_at(32);
            (Some(ChunkId(id.try_into().expect("32 bytes"))), sealed)
        } else {
            (None, rest)
        };
        let (rk, name) = record_kind(kind, chunk.as_ref().map(|c| &c.0[..]), pack)?;
        let plain = k
            .sealer
            .open(rk, name, sealed)
            .map_err(|e| format!("sealed record does not open: {e}"))?;
        Ok((Some((kind, chunk)), Cow::Owned(plain)))
    }

    /// A whole file's bytes as stored: sealed under `kind` and `name` in an
    /// encrypted repository, unchanged in a plain one.
    pub(crate) fn seal_file(
        &self,
        kind: RecordKind,
        name: &str,
        plain: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        match &self.0 {
            None => Ok(plain),
            Some(k) => k
                .sealer
                .seal(kind, name.as_bytes(), &plain)
                .map_err(|e| e.to_string()),
        }
    }

    /// A whole file's bytes opened again ([`Crypt::seal_file`]).
    pub(crate) fn open_file<'a>(
        &self,
        kind: RecordKind,
        name: &str,
        stored: &'a [u8],
    ) -> Result<Cow<'a, [u8]>, String> {
        match &self.0 {
            None => Ok(Cow::Borrowed(stored)),
            Some(k) => k
                .sealer
                .open(kind, name.as_bytes(), stored)
                .map(Cow::Owned)
                .map_err(|e| format!("sealed file does not open: {e}")),
        }
    }
}

/// The sealing kind and associated name of a record of kind byte `kind`.
fn record_kind<'a>(
    kind: u8,
    chunk: Option<&'a [u8]>,
    pack: &'a str,
) -> Result<(RecordKind, &'a [u8]), String> {
    match (kind, chunk) {
        (KIND_CHUNK, Some(id)) => Ok((RecordKind::Chunk, id)),
        (KIND_VERSIONS, None) => Ok((RecordKind::Versions, pack.as_bytes())),
        (KIND_FOOTER, None) => Ok((RecordKind::PackFooter, pack.as_bytes())),
        (k, _) => Err(format!("unknown sealed record kind {k}")),
    }
}

/// The name a pack's records are sealed under: its file name up to the
/// first `.` (`packs/ab/<name>.pack`, `tmp/<name>.pack.tmp`,
/// `index/<name>.idx`).
pub(crate) fn pack_label(path: &Path) -> &str {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('.').next())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_open_only_in_their_pack_and_as_their_kind() {
        let master = MasterKey::generate().unwrap();
        let c = Crypt::with(&master, RepoId([1; 16]), Aead::NEWEST);
        let id = ChunkId([7; 32]);
        let sealed = c
            .seal_record(KIND_CHUNK, Some(&id), "p1", b"chunk")
            .unwrap();
        assert_eq!(sealed[0], KIND_CHUNK);
        assert_eq!(&sealed[1..33], &id.0);
        let (k, plain) = c.open_record("p2", &sealed).unwrap();
        assert_eq!(k, Some((KIND_CHUNK, Some(id))));
        assert_eq!(&plain[..], b"chunk");
        let v = c.seal_record(KIND_VERSIONS, None, "p1", b"vs").unwrap();
        assert_eq!(&c.open_record("p1", &v).unwrap().1[..], b"vs");
        assert!(c.open_record("p2", &v).is_err());
        let mut as_footer = v.clone();
        as_footer[0] = KIND_FOOTER;
        assert!(c.open_record("p1", &as_footer).is_err());
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(c.open_record("p1", &flipped).is_err());
        assert!(c.open_record("p1", &[]).is_err());
        assert!(c.open_record("p1", &[KIND_CHUNK, 1, 2]).is_err());
        // A plain repository passes bytes through.
        let p = Crypt::plain();
        assert_eq!(
            p.seal_record(KIND_CHUNK, Some(&id), "p", b"x").unwrap(),
            b"x"
        );
        assert_eq!(&p.open_record("p", b"x").unwrap().1[..], b"x");
        assert_eq!(pack_label(Path::new("/r/tmp/abc.pack.tmp")), "abc");
        assert_eq!(pack_label(Path::new("/r/packs/ab/abc.pack")), "abc");
    }
}
