//! rewind-dumps: scheduled streaming database dumps, a second source of
//! versions beside the file watcher.
//!
//! A job (`[[dump]]` in the config, see [`JobConfig`]) runs `pg_dump`,
//! `mysqldump` or any command; its standard output goes through the chunker
//! straight into the journal as the content of a version of the virtual
//! path `dumps/<job>` ([`rewind_core::Entry::Stream`]), with the command's
//! exit status and the end of its stderr beside it.
//!
//! Guarantees:
//! - No temporary copy of a dump is written; memory stays bounded by the
//!   chunker's buffer plus the journal's queue for the repository, whatever
//!   the dump's size. When the repository is slower than the dump, reading
//!   stops and the dump program waits (back-pressure through the pipe).
//! - Every run is recorded, the failed ones too (non-zero exit, killed,
//!   timed out, program missing): [`StreamStatus::ok`] tells them apart,
//!   and [`pick_version`] skips failed ones unless asked not to.
//! - Passwords never appear on a command line: postgres gets `PGPASSWORD`
//!   in its environment, mysqldump a generated option file readable by the
//!   user only, removed after the run.
//! - A version is reported only once the journal has made it durable.
//!
//! Interruption: a dump cut short by a crash of the agent leaves no version
//! (its chunks are garbage the journal reclaims); the next scheduled run
//! starts over.

mod delta;
mod job;
mod restore;
mod stream;

use std::ffi::OsString;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use rewind_core::{Chunker, StreamStatus};
use rewind_journal::{Journal, JournalError};

pub use job::{Job, JobConfig, Kind, Schedule, StreamSpec, parse_duration, stream_path};
pub use restore::{pick_version, restore_into, write_stream};
pub use stream::{STDERR_TAIL, StreamReport, last_error_line, run_stream};

/// Errors of the dumps crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DumpError {
    /// A job's configuration is wrong.
    #[error("dump job {job:?}: {reason}")]
    Config {
        /// The job.
        job: String,
        /// What is wrong.
        reason: String,
    },
    /// The journal refused the stream; nothing was stored.
    #[error("journal: {0}")]
    Journal(#[source] JournalError),
    /// The repository failed while reading a stored dump.
    #[error("repository: {0}")]
    Repo(#[source] rewind_core::RepoError),
    /// A helper program (psql, pg_restore, mysql) failed.
    #[error("{what}: {reason}")]
    Tool {
        /// What was being done.
        what: String,
        /// How it failed (its last error line).
        reason: String,
    },
    /// Writing the restored stream failed.
    #[error("writing the dump: {0}")]
    Write(#[source] std::io::Error),
}

/// The databases of a postgres server that can be dumped (templates and
/// databases that refuse connections left out), for a `database = "*"` job.
pub fn list_postgres_databases(job: &Job) -> Result<Vec<String>, DumpError> {
    let mut cmd = postgres_tool(job, "psql")?;
    cmd.args([
        "--no-psqlrc",
        "--tuples-only",
        "--no-align",
        "--command=SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
        "--dbname=postgres",
    ]);
    let out = run_tool(cmd, "listing the databases")?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// A postgres client program (psql, pg_restore, createdb) beside the job's
/// `program`, with the job's connection settings.
pub(crate) fn postgres_tool(job: &Job, name: &str) -> Result<Command, DumpError> {
    let program = match &job.config.program {
        Some(p) => p.with_file_name(name),
        None => name.into(),
    };
    let mut cmd = Command::new(program);
    let c = &job.config;
    cmd.arg("--no-password");
    if let Some(h) = &c.host {
        cmd.arg(format!("--host={h}"));
    }
    if let Some(p) = c.port {
        cmd.arg(format!("--port={p}"));
    }
    if let Some(u) = &c.user {
        cmd.arg(format!("--username={u}"));
    }
    if let Some(pw) = job.password()? {
        cmd.env("PGPASSWORD", pw);
    }
    Ok(cmd)
}

/// Run a helper to completion; its stdout, or its last error line.
pub(crate) fn run_tool(mut cmd: Command, what: &str) -> Result<Vec<u8>, DumpError> {
    let program: OsString = cmd.get_program().to_owned();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| DumpError::Tool {
            what: what.to_string(),
            reason: if e.kind() == std::io::ErrorKind::NotFound {
                format!("{} not found", program.to_string_lossy())
            } else {
                format!("cannot run {}: {e}", program.to_string_lossy())
            },
        })?;
    if !out.status.success() {
        return Err(DumpError::Tool {
            what: what.to_string(),
            reason: last_error_line(&out.stderr).unwrap_or_else(|| out.status.to_string()),
        });
    }
    Ok(out.stdout)
}

/// Run every stream of `job` (one, or for an all-databases postgres job
/// the globals and one per database) into `journal`. `progress` gets the
/// stream's path and its bytes so far. Stops at nothing: each stream is
/// stored, failed or not. `bases`: see [`run_stream`].
pub fn run_job(
    job: &Job,
    journal: &Journal,
    bases: Option<&dyn rewind_core::Repository>,
    chunker: Chunker,
    cancel: &Arc<AtomicBool>,
    progress: &(dyn Fn(&[u8], u64) + Sync),
) -> Result<Vec<StreamReport>, DumpError> {
    let dbs = if job.is_all_postgres() {
        list_postgres_databases(job)?
    } else {
        Vec::new()
    };
    let mut out = Vec::new();
    for spec in job.streams(&dbs)? {
        if cancel.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        tracing::info!(
            "dump {}: running {}",
            String::from_utf8_lossy(&spec.path),
            spec.program.display()
        );
        let p = |n: u64| progress(&spec.path, n);
        out.push(run_stream(&spec, journal, bases, chunker, cancel, &p)?);
    }
    Ok(out)
}

/// Short description of a stored status for listings: `ok` or why not.
pub fn describe(status: &StreamStatus) -> String {
    status.describe()
}
