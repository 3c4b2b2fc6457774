//! Writing a run: records in sorted order are streamed to four temporary
//! files (records, entries, paths, table), which are then joined into one,
//! footed, fsynced and renamed into `DIR/vindex`.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rewind_core::{RepoError, Timestamp};

use super::format::{Footer, MAGIC, PathEntry, Record};
use crate::durable::{corrupt, io_err, local_ensure_dir, local_fsync_dir};
use crate::pack_name::PackName;
use crate::state::Shape;

/// A run being written.
pub(crate) struct RunWriter {
    dir: PathBuf,
    base: PathBuf,
    records: BufWriter<File>,
    entries: BufWriter<File>,
    paths: BufWriter<File>,
    table: BufWriter<File>,
    clients: Vec<String>,
    /// The path being written: its client number, bytes and table entry.
    current: Option<(u32, Vec<u8>, PathEntry)>,
    /// Its records, written when it ends (their tail mins need the last).
    pending: Vec<Record>,
    last_seq: Option<u64>,
    n_records: u64,
    entries_len: u64,
    paths_len: u64,
    n_paths: u64,
}

fn tmp_file(base: &Path, part: &str) -> Result<BufWriter<File>, RepoError> {
    let p = base.with_extension(part);
    let f = rewind_core::private::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&p)
        .map_err(io_err(&p))?;
    Ok(BufWriter::with_capacity(1 << 20, f))
}

impl RunWriter {
    /// Start a run in `DIR/vindex`.
    pub(crate) fn new(dir: &Path) -> Result<RunWriter, RepoError> {
        let rd = super::runs_dir(dir);
        local_ensure_dir(&rd)?;
        let base = rd.join(format!(".tmp-{}", PackName::random()));
        let w = RunWriter {
            dir: dir.to_path_buf(),
            records: tmp_file(&base, "rec")?,
            entries: tmp_file(&base, "ent")?,
            paths: tmp_file(&base, "pth")?,
            table: tmp_file(&base, "tab")?,
            base,
            clients: Vec::new(),
            current: None,
            pending: Vec::new(),
            last_seq: None,
            n_records: 0,
            entries_len: 0,
            paths_len: 0,
            n_paths: 0,
        };
        Ok(w)
    }

    fn err(&self, part: &str) -> impl FnOnce(std::io::Error) -> RepoError + '_ {
        let p = self.base.with_extension(part);
        move |e| RepoError::Io { path: p, source: e }
    }

    /// Add one version. Calls come in (client, path, seq) order; a second
    /// record of the same version (a copy in another pack) is skipped.
    pub(crate) fn push(
        &mut self,
        client: &str,
        path: &[u8],
        seq: u64,
        observed_at: Timestamp,
        shape: Shape,
        entry: &[u8],
    ) -> Result<(), RepoError> {
        if self.clients.last().map(String::as_str) != Some(client) {
            if self.clients.last().is_some_and(|c| c.as_str() > client) {
                return Err(corrupt(
                    &self.base,
                    "version index run: clients out of order",
                ));
            }
            self.clients.push(client.to_string());
        }
        let c = (self.clients.len() - 1) as u32;
        let same_path =
            matches!(&self.current, Some((cc, p, _)) if *cc == c && p.as_slice() == path);
        if same_path {
            let last = self.last_seq.expect("a path has a record");
            if seq == last {
                return Ok(());
            }
            if seq < last {
                return Err(corrupt(&self.base, "version index run: seqs out of order"));
            }
        } else {
            if let Some((cc, p, _)) = &self.current
                && (*cc, p.as_slice()) > (c, path)
            {
                return Err(corrupt(&self.base, "version index run: paths out of order"));
            }
            self.end_path()?;
            self.paths.write_all(path).map_err(self.err("pth"))?;
            let e = PathEntry {
                client: c,
                path_len: path.len() as u32,
                path_off: self.paths_len,
                first: self.n_records,
                count: 0,
            };
            self.paths_len += path.len() as u64;
            self.current = Some((c, path.to_vec(), e));
        }
        self.pending.push(Record {
            seq,
            observed_at,
            tail_min: observed_at,
            entry_off: self.entries_len,
            entry_len: entry.len() as u32,
            entry_crc: crc32fast::hash(entry),
            shape,
        });
        self.entries.write_all(entry).map_err(self.err("ent"))?;
        self.entries_len += entry.len() as u64;
        self.n_records += 1;
        self.last_seq = Some(seq);
        if let Some((_, _, e)) = &mut self.current {
            e.count += 1;
        }
        Ok(())
    }

    fn end_path(&mut self) -> Result<(), RepoError> {
        let mut min = Timestamp(i64::MAX);
        for r in self.pending.iter_mut().rev() {
            min = min.min(r.observed_at);
            r.tail_min = min;
        }
        for r in std::mem::take(&mut self.pending) {
            self.records
                .write_all(&r.encode())
                .map_err(self.err("rec"))?;
        }
        if let Some((_, path, e)) = self.current.take() {
            self.table
                .write_all(&e.encode(&path))
                .map_err(self.err("tab"))?;
            self.n_paths += 1;
        }
        self.last_seq = None;
        Ok(())
    }

    /// How many records were written.
    pub(crate) fn len(&self) -> u64 {
        self.n_records
    }

    /// Join the parts, naming `packs` as the run's, and put the run in
    /// place durably. Returns its path.
    pub(crate) fn finish(mut self, packs: Vec<PackName>) -> Result<PathBuf, RepoError> {
        self.end_path()?;
        self.join(packs)
    }

    fn join(&mut self, packs: Vec<PackName>) -> Result<PathBuf, RepoError> {
        let main_path = self.base.with_extension("rec");
        self.records.flush().map_err(self.err("rec"))?;
        let main = self.records.get_mut();
        let mut at = self.n_records * super::format::RECORD as u64;
        let entries_off = at;
        for (part, w) in [
            ("ent", &mut self.entries),
            ("pth", &mut self.paths),
            ("tab", &mut self.table),
        ] {
            let p = self.base.with_extension(part);
            w.flush().map_err(io_err(&p))?;
            let f = w.get_mut();
            f.seek(SeekFrom::Start(0)).map_err(io_err(&p))?;
            main.seek(SeekFrom::Start(at)).map_err(io_err(&main_path))?;
            at += std::io::copy(f, main).map_err(io_err(&main_path))?;
        }
        let paths_off = entries_off + self.entries_len;
        let table_off = paths_off + self.paths_len;
        let footer = Footer {
            clients: std::mem::take(&mut self.clients),
            packs,
            records: self.n_records,
            paths: self.n_paths,
            entries_off,
            paths_off,
            table_off,
            footer_off: at,
        };
        let fb = postcard::to_allocvec(&footer).expect("a footer encodes into a growable buffer");
        let mut tail = Vec::with_capacity(fb.len() + super::format::TAIL);
        tail.extend_from_slice(&fb);
        tail.extend_from_slice(&(fb.len() as u32).to_le_bytes());
        tail.extend_from_slice(&crc32fast::hash(&fb).to_le_bytes());
        tail.extend_from_slice(MAGIC);
        main.seek(SeekFrom::Start(at)).map_err(io_err(&main_path))?;
        main.write_all(&tail).map_err(io_err(&main_path))?;
        main.sync_all().map_err(io_err(&main_path))?;
        let rd = super::runs_dir(&self.dir);
        let dest = rd.join(format!("{}.vix", PackName::random()));
        std::fs::rename(&main_path, &dest).map_err(io_err(&dest))?;
        local_fsync_dir(&rd)?;
        Ok(dest)
    }
}

impl Drop for RunWriter {
    /// The parts go whether the run was finished (then the records part
    /// was renamed into place and is not there any more) or not.
    fn drop(&mut self) {
        for part in ["rec", "ent", "pth", "tab"] {
            let _ = std::fs::remove_file(self.base.with_extension(part));
        }
    }
}
