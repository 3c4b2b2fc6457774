//! Opening a repository and the journal beside it for capture: the
//! agent's start, and a dump run with no agent.
//!
//! - A journal whose files are damaged beyond use is moved aside (kept for
//!   inspection) and a new one started, rebuilt from the repository's
//!   newest states, so the first pass captures only what differs.
//! - A fresh journal continues the sequence numbers the repository holds
//!   for this client, so no number is ever used twice.
//! - Against a repository a request may reach after its sender died (an
//!   object store, a server), the journal also starts above every number
//!   it may have handed to a commit before a crash: the repository's
//!   highest number says nothing of a commit still on its way
//!   (docs/decisions.md, "Late requests (issue 20)").

use std::path::PathBuf;

use anyhow::{Context, Result};
use rewind_journal::Journal;

use crate::paths;
use crate::target::{Access, Opened, Target};

/// Open the journal; if its files are damaged beyond use, move them aside
/// (kept for inspection) and start a new one, which the caller rebuilds from
/// the repository plus a rescan.
pub(crate) fn open_journal(jdir: &std::path::Path, client: &str) -> Result<Journal> {
    match Journal::open(jdir, client) {
        Ok(j) => Ok(j),
        Err(e) if e.is_damage() => {
            let aside = jdir.join(format!("damaged-{}", rewind_core::Timestamp::now().0));
            rewind_core::private::create_dir_all(&aside)
                .with_context(|| format!("cannot create {}", aside.display()))?;
            for part in ["db", "spool"] {
                let from = jdir.join(part);
                if from.exists() {
                    std::fs::rename(&from, aside.join(part)).with_context(|| {
                        format!("cannot move the damaged journal {}", from.display())
                    })?;
                }
            }
            eprintln!(
                "rewind: the journal in {} is damaged ({e}); moved it to {} and rebuilding it \
                 from the repository",
                jdir.display(),
                aside.display()
            );
            Ok(Journal::open(jdir, client)?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Open the repository and the journal beside it for capturing: the
/// agent's start, and a dump run with no agent. A fresh journal continues
/// the sequence numbers the repository holds for this client and, for
/// `roots`, starts from the repository's newest states.
pub(crate) fn open_for_capture(
    target: &Target,
    limit_upload: Option<&str>,
    roots: &[PathBuf],
) -> Result<(Opened, Journal)> {
    let opened = target.open(Access::Write { limit_upload })?;
    let repo = opened.repo.clone();
    let jdir = opened.jdir.clone();
    // State written before everything was private (issue 21).
    rewind_core::private::tighten_if_loose(&paths::state_dir()?, "agent state");
    rewind_core::private::create_dir_all(&jdir)
        .with_context(|| format!("cannot create {}", jdir.display()))?;
    let journal = open_journal(&jdir, &opened.client)?;
    let fresh = journal.durable_seq() == 0 && !journal.knows_any_path();
    // Where requests of a killed process may still land (a store or a
    // proxy holding them, a server still working on them), the numbers the
    // repository holds now are not all it will hold: skip the ones this
    // journal may have handed to a commit (none after a clean stop).
    if target.late_requests() {
        journal.skip_reserved()?;
    }
    // A fresh journal beside a repository that already has versions of
    // this client (state dir lost or moved, journal rebuilt) must not reuse
    // their numbers, and starts from the repository's newest states so the
    // first pass captures only what differs.
    let held = match repo.stats() {
        Ok(st) => st
            .max_seq
            .iter()
            .find(|(c, _)| c == journal.client())
            .map_or(0, |(_, s)| *s),
        // Offline with a journal that knows its numbers: go on capturing.
        Err(e) if e.is_transient() && !fresh => {
            eprintln!("rewind: {e}; capturing locally until it is back");
            journal.skip_reserved()?;
            0
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(
                "a new journal needs the repository once, to continue its sequence numbers",
            ));
        }
    };
    journal.skip_to(held)?;
    if fresh && held > 0 {
        let n = import_from_repository(&*repo, &journal, roots, false)?;
        eprintln!("rewind: journal rebuilt from the repository ({n} paths); checking for changes");
    } else if held > 0 && target.late_requests() {
        // Versions of this client that reached the repository without this
        // journal recording them: a commit a killed process sent that
        // landed late, or one whose answer a crash cut off. Known with the
        // repository's state, the first pass records what became of their
        // paths (a deletion, most often) instead of leaving them present
        // for good (docs/decisions.md, "Late commits bring nothing back").
        let n = import_from_repository(&*repo, &journal, roots, true)?;
        if n > 0 {
            eprintln!(
                "rewind: {n} paths the repository holds and this journal never recorded \
                 (a commit that landed after its sender stopped); checking them"
            );
        }
    }
    crate::enrollment::write_private(&jdir.join("client"), journal.client().as_bytes())?;
    Ok((opened, journal))
}

/// Make the repository's newest state of each present path under `roots`
/// the journal's last-known state (with `only_unknown`, only of paths the
/// journal has no state of), so the first pass compares the disk with it.
/// How many paths were imported.
fn import_from_repository(
    repo: &dyn rewind_core::Repository,
    journal: &Journal,
    roots: &[PathBuf],
    only_unknown: bool,
) -> Result<usize> {
    let mut states = Vec::new();
    for root in roots {
        let at = rewind_core::Timestamp::MAX;
        for v in repo.tree_at(journal.client(), rewind_core::path::to_bytes(root), at)? {
            if let rewind_core::Entry::Present {
                meta,
                chunks,
                xattrs,
            } = v.entry
            {
                if only_unknown && journal.last_known(&v.path)?.is_some() {
                    continue;
                }
                let st = rewind_journal::PathState {
                    meta,
                    chunks,
                    xattrs,
                    seq: v.seq,
                };
                states.push((v.path, st));
            }
        }
    }
    let n = states.len();
    if n > 0 {
        journal.import_states(states)?;
    }
    Ok(n)
}
