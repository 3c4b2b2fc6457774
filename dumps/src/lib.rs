//! rewind-dumps: scheduled streaming database dumps, a second source of
//! versions beside the file watcher.
//!
//! A job (`[[dump]]` in the config, see [`JobConfig`]) runs `pg_dump`,
//! `mysqldump` or any command ([`start`]); the agent's stream capture reads
//! its standard output through the chunker straight into the journal as
//! the content of a version of the virtual path `dumps/<job>`
//! ([`rewind_core::Entry::Stream`]), with the command's exit status and the
//! end of its stderr ([`Running::finish`]) beside it. This crate also
//! lists a job's stored runs ([`stream_paths`], [`last_run`]) and
//! restores a stored dump ([`write_stream`], [`restore_into`]).
//!
//! Guarantees:
//! - Every run ends in a [`StreamStatus`], the failed ones too (non-zero
//!   exit, killed, timed out, program missing): [`StreamStatus::ok`] tells
//!   them apart, and [`pick_version`] skips failed ones unless asked not to.
//! - A command runs in its own process group; a timeout or a cancel kills
//!   the group within 0.1 s.
//! - Passwords never appear on a command line: postgres gets `PGPASSWORD`
//!   in its environment, mysqldump a generated option file readable by the
//!   user only, removed after the run.
//!
//! Interruption: nothing here writes anything but a dump's option file
//! (removed after the run; a crash may leave it, owner-only, in the
//! temporary folder).

mod job;
mod process;
mod restore;
mod stored;

use std::ffi::OsString;
use std::process::{Command, Stdio};

use rewind_core::StreamStatus;

pub use job::{Job, JobConfig, Kind, Schedule, StreamSpec, parse_duration, stream_path};
pub use process::{Running, STDERR_TAIL, last_error_line, start};
pub use restore::{Pick, pick_run, pick_version, restore_into, write_stream};
pub use stored::{last_run, run_json, run_summary, runs_of, stream_paths};

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

/// Short description of a stored status for listings: `ok` or why not.
pub fn describe(status: &StreamStatus) -> String {
    status.describe()
}
