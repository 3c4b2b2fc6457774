//! The version index on disk: immutable sorted *runs* of version records,
//! so that a query opens the repository without reading and decoding every
//! version of the history (docs/decisions.md, "The version index on disk
//! (issue 19)").
//!
//! ```text
//! DIR/vindex/<32 hex>.vix        one run: the versions of a set of packs
//! DIR/vindex/.tmp-<32 hex>*      a run being written (garbage after a crash)
//! ```
//!
//! A run holds every version record of the packs it names (copies
//! included, as the packs hold them), sorted by client, path and seq, with
//! fixed-size records a query can search and read by offset
//! (`run.rs`, `format.rs`). It is derived data: everything in it is in the
//! packs, and a run is used only while every pack it names is still in the
//! repository. Versions of packs no run names are read from their index
//! files as before (the *overlay*), and retention is applied when a query
//! reads, exactly as when the whole index is loaded (`view.rs`).
//!
//! The writer keeps the runs, once the repository holds
//! [`WORTH_FROM`] versions: after commits, packs no run names are
//! written into new runs in the background, and runs of about the same
//! size are merged four at a time, so a history of N versions has about
//! three runs per factor of four (`maintain.rs`).
//!
//! # Guarantees
//!
//! - A run is written to a temporary name, fsynced and renamed into place:
//!   readers see whole runs or none. Inputs of a merge are deleted only
//!   after the merged run is in place, so readers choose runs that name
//!   disjoint sets of packs, the larger first.
//! - A run naming a pack that is gone (pruned) is not used; its other
//!   packs are read from their index files until the writer replaces it.
//! - Anything wrong with a run (a short file, a bad footer or checksum, a
//!   record that does not decode) makes the query read the whole index
//!   from the index files instead, as before the runs existed.
//! - Only plain repositories in a local directory have runs: the runs
//!   hold paths and metadata in the clear, and an encrypted repository
//!   keeps those sealed (see the decisions for what remains to do).
//!
//! # After a crash
//!
//! At worst a temporary file, deleted by the writer's next maintenance, or
//! the inputs of a merge beside the merged run, which readers skip and
//! the writer deletes.

mod format;
mod maintain;
mod run;
mod view;
mod write;

#[cfg(test)]
mod tests;

pub(crate) use maintain::{Maintainer, maintain};
#[cfg(test)]
pub(crate) use run::Run;
pub(crate) use view::VersionView;

use std::path::{Path, PathBuf};

/// The writer keeps runs once the repository holds this many versions:
/// below it, reading every index file takes well under a second (51,000
/// versions: 0.2 s), and runs would only add to the repository's size.
pub(crate) const WORTH_FROM: u64 = 100_000;

/// `DIR/vindex`.
pub(crate) fn runs_dir(dir: &Path) -> PathBuf {
    dir.join("vindex")
}

/// Delete every run of `dir` (best effort: a run left behind names
/// packs a reader checks, and the next upkeep deletes what it cannot use).
pub(crate) fn forget_runs(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(runs_dir(dir)) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Whether a repository keeps runs: plain, in a local directory.
pub(crate) fn applies(dir: &Path, crypt: &crate::crypt::Crypt) -> bool {
    !crate::store::is_url(dir) && !crypt.is_sealed()
}
