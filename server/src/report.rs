//! The reports of `rewind-server verify` and `repair` on the server's
//! repository, and of `rewind verify` and `repair` on an embedded one (the
//! same code, so both binaries print alike): check a repository on this
//! machine, and rebuild its indexes from the packs.
//!
//! - Exit 0 when the repository is whole, [`DAMAGE`] (1) when damage is
//!   found or versions remain that cannot be restored, with the same text
//!   and `--json` output from either binary.
//! - Every problem and every version that cannot be restored is named on
//!   stderr, one line each.
//! - An interrupted `verify` leaves the repository as it was (it opens it
//!   read-only); an interrupted `repair` leaves what the repository
//!   engine's crash rules promise ([`rewind_repo`], "After a crash").

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{Result, bail};
use rewind_core::RepoError;
use rewind_core::path::{JsonPath, display};
use rewind_repo::{DamagedVersion, LocalRepo, VerifyProgress, VerifyReport};
use serde_json::json;

/// Exit code when damage was found (verify) or remains (repair).
pub const DAMAGE: i32 = 1;

/// Check every pack's structure (and with `!quick` every chunk's hash),
/// the index files against the packs, and every version's chunks.
pub fn verify(repo_dir: &Path, quick: bool, json: bool) -> Result<i32> {
    let repo = LocalRepo::open(repo_dir)?;
    let report = run_verify(&repo, quick, json)?;
    if json {
        let out = json!({
            "repo": JsonPath(rewind_core::path::to_bytes(repo_dir)),
            "quick": quick,
            "ok": report.is_ok(),
            "packs": report.packs,
            "chunks": report.chunks,
            "chunks_read": report.chunks_read,
            "delta_chunks": report.delta_chunks,
            "versions": report.versions,
            "issues": report.issues,
            "damaged_versions": report.damaged_versions,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_issues(&report);
        let what = if quick {
            "structure checked"
        } else {
            "every chunk read and hashed"
        };
        if report.is_ok() {
            println!(
                "{}: no damage ({} packs, {} chunks, {} versions; {what})",
                repo_dir.display(),
                report.packs,
                report.chunks,
                report.versions
            );
        } else {
            println!(
                "{}: {} problems found ({} packs, {} chunks, {} versions; {what}); \
                 `rewind repair` rebuilds the indexes and keeps what is intact",
                repo_dir.display(),
                report.issues.len(),
                report.packs,
                report.chunks,
                report.versions
            );
        }
    }
    Ok(if report.is_ok() { 0 } else { DAMAGE })
}

/// Rebuild every index file from its pack, rewrite damaged packs with what
/// is intact, then verify and name the versions whose content is lost. Exit 0 when nothing
/// is lost, 1 when some versions cannot be restored (everything else can).
pub fn repair(repo_dir: &Path, json: bool) -> Result<i32> {
    let repo = match LocalRepo::open_writer(repo_dir) {
        Ok(r) => r,
        Err(RepoError::Locked { holder, .. }) => bail!(
            "{} is in use by another writer (a running `rewind watch`?): stop it, then repair ({holder})",
            repo_dir.display()
        ),
        Err(e) => return Err(e.into()),
    };
    let repaired = repo.repair()?;
    let rebuilt = &repaired.rebuilt;
    let report = run_verify(&repo, false, json)?;
    if json {
        let out = json!({
            "repo": JsonPath(rewind_core::path::to_bytes(repo_dir)),
            "indexes_written": rebuilt.packs,
            "chunks": rebuilt.chunks,
            "versions": rebuilt.versions,
            "orphan_indexes_removed": rebuilt.orphan_indexes_removed,
            "damaged_packs": rebuilt.damaged,
            "rewritten_packs": repaired.rewritten,
            "remaining_issues": report.issues,
            "damaged_versions": report.damaged_versions,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for d in &rebuilt.damaged {
            eprintln!("rewind: damaged pack {}: {}", d.path.display(), d.problem);
        }
        for r in &repaired.rewritten {
            eprintln!(
                "rewind: rewrote {}: kept {} chunks and {} versions, {} damaged records dropped",
                r.old.display(),
                r.chunks_kept,
                r.versions_kept,
                r.records_dropped
            );
        }
        println!(
            "{}: rebuilt {} indexes ({} chunks, {} versions; {} damaged packs salvaged, \
             {} stale indexes removed)",
            repo_dir.display(),
            rebuilt.packs,
            rebuilt.chunks,
            rebuilt.versions,
            rebuilt.damaged.len(),
            rebuilt.orphan_indexes_removed
        );
        print_issues(&report);
        if report.damaged_versions.is_empty() {
            println!("every version can be restored");
        } else {
            println!(
                "{} versions cannot be restored (listed above); every other version can",
                report.damaged_versions.len()
            );
        }
    }
    Ok(if report.damaged_versions.is_empty() {
        0
    } else {
        DAMAGE
    })
}

/// Verify with a progress bar on a terminal.
fn run_verify(repo: &LocalRepo, quick: bool, json: bool) -> Result<VerifyReport> {
    let bar = (!json && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} verifying {bar:30} {bytes}/{total_bytes} ({msg} packs) {eta}",
            )
            .expect("valid template"),
        );
        b
    });
    let mut tick = |p: VerifyProgress| {
        if let Some(b) = &bar {
            b.set_length(p.bytes_total);
            b.set_position(p.bytes_done);
            b.set_message(format!("{}/{}", p.packs_done, p.packs_total));
        }
    };
    let report = repo.verify_with_progress(quick, &mut tick)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(report)
}

fn print_issues(report: &VerifyReport) {
    let mut err = std::io::stderr().lock();
    for i in &report.issues {
        let at = i
            .offset
            .map(|o| format!(" at offset {o}"))
            .unwrap_or_default();
        let _ = writeln!(err, "rewind: {}{at}: {}", i.path.display(), i.problem);
    }
    drop(err);
    print_damaged(&report.damaged_versions);
}

/// Name on stderr, one line each, the versions that cannot be restored
/// and the chunk that spoils each.
pub fn print_damaged(list: &[DamagedVersion]) {
    let mut err = std::io::stderr().lock();
    for d in list {
        let _ = writeln!(
            err,
            "rewind: cannot restore {} as of {} (version {} of client {}): chunk {} is {}",
            display(&d.path),
            d.observed_at,
            d.seq,
            d.client,
            d.chunk,
            d.reason
        );
    }
}
