//! A reader opened over the version index on disk (`crate::vindex`):
//! version queries (`versions_of`, `tree_at`, `covers`, `query_point`) are
//! answered from the runs and the overlay, and the whole in-memory index
//! is loaded only when something else needs it (a restore's chunk
//! locations, `find`, statistics), or when a run turns out damaged.

use std::sync::atomic::Ordering;

use rewind_core::RepoError;
use tracing::warn;

use super::LocalRepo;
use crate::crypt::Crypt;
use crate::keep::KeepFile;
use crate::vindex::VersionView;

impl LocalRepo {
    /// The view of `dir` over its runs, if it has usable ones; a view that
    /// cannot be opened is logged, and the index is loaded instead.
    pub(super) fn open_view(
        dir: &std::path::Path,
        crypt: &Crypt,
        keep: &KeepFile,
    ) -> Option<VersionView> {
        match VersionView::open(dir, crypt, keep) {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "version index on disk not used; reading every index file");
                None
            }
        }
    }

    /// Answer from the view while the index is deferred: `None` when it
    /// is not (or no longer) deferred, or when the view failed (then the
    /// index is loaded whole and the caller asks it).
    pub(super) fn with_view<T>(
        &self,
        f: impl FnOnce(&VersionView) -> Result<T, RepoError>,
    ) -> Option<T> {
        if !self.deferred.load(Ordering::Acquire) {
            return None;
        }
        let failed = {
            let view = self.view.read().expect("version view poisoned");
            match view.as_ref().map(f) {
                Some(Ok(t)) => return Some(t),
                Some(Err(e)) => {
                    warn!(error = %e, "version index on disk failed a query; reading every index file");
                    true
                }
                None => false,
            }
        };
        if failed {
            self.undefer();
        }
        None
    }

    /// Load the whole index if it was deferred.
    pub(crate) fn undefer(&self) {
        if !self.deferred.load(Ordering::Acquire) {
            return;
        }
        let mut view = self.view.write().expect("version view poisoned");
        if !self.deferred.load(Ordering::Acquire) {
            return;
        }
        let keep = self.keepfile.lock().expect("retention poisoned").clone();
        // On failure the index stays deferred and empty: the error is the
        // same one a plain open would have met, and the next call tries
        // again.
        match Self::load_state(
            &self.crypt,
            &self.dir,
            false,
            &keep,
            self.idx_cache.as_ref(),
        ) {
            Ok(st) => {
                *self
                    .state
                    .write()
                    .expect("repository state poisoned by an earlier panic") = st;
                *view = None;
                self.deferred.store(false, Ordering::Release);
            }
            Err(e) => warn!(error = %e, "cannot load the repository's index"),
        }
    }

    /// A deferred reader's refresh: open the view again over what the
    /// repository holds now. `false` when the index is not deferred (the
    /// caller refreshes it as usual).
    pub(super) fn refresh_view(&self) -> Result<bool, RepoError> {
        if !self.deferred.load(Ordering::Acquire) {
            return Ok(false);
        }
        let keep = KeepFile::read(&self.crypt, &self.dir)?;
        let mut view = self.view.write().expect("version view poisoned");
        if !self.deferred.load(Ordering::Acquire) {
            return Ok(false);
        }
        *self.keepfile.lock().expect("retention poisoned") = keep.clone();
        // Most refreshes only find new packs: they join the overlay.
        if let Some(v) = view.as_mut() {
            match v.refresh(&self.crypt, &keep) {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                Err(e) => {
                    warn!(error = %e, "version index on disk: refresh failed; opening it again")
                }
            }
        }
        let fresh = Self::open_view(&self.dir, &self.crypt, &keep);
        match fresh {
            Some(v) => {
                *view = Some(v);
                Ok(true)
            }
            None => {
                drop(view);
                self.undefer();
                Ok(true)
            }
        }
    }

    /// A writer of a plain local repository keeps the version index on
    /// disk: start its upkeep (it catches up with what came since the
    /// last writer).
    /// Below [`crate::vindex::WORTH_FROM`] versions (and with no runs yet)
    /// it waits for the repository to grow: loading such an index whole
    /// takes a fraction of a second.
    pub(super) fn start_upkeep(&mut self) {
        if crate::vindex::applies(&self.dir, &self.crypt) {
            let m = crate::vindex::Maintainer::default();
            let has_runs = std::fs::read_dir(crate::vindex::runs_dir(&self.dir))
                .is_ok_and(|mut d| d.next().is_some());
            if has_runs || self.read_state().stats_versions() >= crate::vindex::WORTH_FROM {
                m.start(&self.dir);
            }
            self.vindex = Some(m);
        }
    }

    /// Delete the version index on disk (a writer about to rewrite the
    /// index files), after stopping its upkeep; the next upkeep writes it
    /// again from the packs.
    pub(super) fn forget_version_index(&self) {
        if let Some(m) = &self.vindex {
            m.wait();
            crate::vindex::forget_runs(&self.dir);
        }
    }

    /// Bring the version index on disk up to date with every pack, and
    /// wait for it (a writer of a plain local repository; others: no-op).
    /// The writer keeps it up to date in the background anyway; this is
    /// for a caller that is about to hand the repository to readers (the
    /// benchmarks, tests).
    pub fn index_versions(&self) -> Result<(), RepoError> {
        let Some(m) = &self.vindex else {
            return Ok(());
        };
        m.wait();
        crate::vindex::maintain(&self.dir, &std::sync::atomic::AtomicBool::new(false), true)
    }
}
