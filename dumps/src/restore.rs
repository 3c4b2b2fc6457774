//! Getting a stored dump back: the run in force at a moment (and why there
//! is none), its bytes to a writer (for `| psql`), or loaded into a new
//! database.

use std::io::{self, Write};
use std::process::{Command, Stdio};

use rewind_core::{RepoError, Repository, Timestamp, Version};

use crate::job::{Job, find_on_path};
use crate::process::{last_error_line, read_tail};
use crate::{DumpError, postgres_tool, run_tool};

/// The newest version at or before `at` among `versions` (oldest first,
/// as the repository lists them), skipping failed runs unless
/// `include_failed`; tombstones and file versions never match.
pub fn pick_version(versions: &[Version], at: Timestamp, include_failed: bool) -> Option<&Version> {
    versions.iter().rev().find(|v| {
        v.observed_at <= at && v.stream_status().is_some_and(|s| include_failed || s.ok())
    })
}

/// What [`pick_run`] found for a job at a moment.
#[derive(Debug)]
pub enum Pick {
    /// The run to restore.
    Run(Box<Version>),
    /// Nothing is stored under the name.
    NotStored,
    /// The name holds several streams (an all-databases job): these, one
    /// of which must be named (`dumps/` left off).
    Several(Vec<Vec<u8>>),
    /// No run at or before the moment, or only failed ones (how many).
    NoneBefore {
        /// Failed runs at or before the moment (left out unless asked for).
        failed: usize,
    },
}

/// The run of the job or stream `name` (`dumps/NAME`) to restore as of
/// `at`: the newest at or before it, failed ones only with
/// `include_failed` ([`pick_version`]).
pub fn pick_run(
    repo: &dyn Repository,
    client: &str,
    name: &str,
    at: Timestamp,
    include_failed: bool,
) -> Result<Pick, RepoError> {
    let path = format!("dumps/{name}").into_bytes();
    let all = repo.versions_of(client, &path)?;
    if all.is_empty() {
        let under = crate::stream_paths(repo, client, name)?;
        if under.is_empty() {
            return Ok(Pick::NotStored);
        }
        let names = under.iter().map(|p| p["dumps/".len()..].to_vec()).collect();
        return Ok(Pick::Several(names));
    }
    Ok(match pick_version(&all, at, include_failed) {
        Some(v) => Pick::Run(Box::new(v.clone())),
        None => Pick::NoneBefore {
            failed: all
                .iter()
                .filter(|v| v.observed_at <= at && !v.stream_status().is_some_and(|s| s.ok()))
                .count(),
        },
    })
}

/// Write the bytes of stream version `v` to `out`, chunk by chunk (each
/// verified against its id by the repository); returns the bytes written.
pub fn write_stream(
    repo: &dyn Repository,
    v: &Version,
    out: &mut dyn Write,
) -> Result<u64, DumpError> {
    let mut n = 0u64;
    for c in v.chunks() {
        let data = repo.read_chunk(&c.id).map_err(DumpError::Repo)?;
        out.write_all(&data).map_err(DumpError::Write)?;
        n += data.len() as u64;
    }
    out.flush().map_err(DumpError::Write)?;
    Ok(n)
}

/// Create `database` on the job's server and load stream version `v`
/// into it. Refuses a database that already exists (the server says so).
pub fn restore_into(
    job: &Job,
    repo: &dyn Repository,
    v: &Version,
    database: &str,
) -> Result<u64, DumpError> {
    let status = v.stream_status().ok_or_else(|| DumpError::Tool {
        what: "restore".into(),
        reason: "not a dump".into(),
    })?;
    let refuse = |why: &str| DumpError::Tool {
        what: format!("restore into {database}"),
        reason: why.to_string(),
    };
    let loader = match status.format.as_str() {
        "postgres" | "postgres-custom" => {
            let mut create = postgres_tool(job, "psql")?;
            create.args([
                "--no-psqlrc",
                "--quiet",
                "--set=ON_ERROR_STOP=1",
                "--dbname=postgres",
            ]);
            create.arg(format!(
                "--command=CREATE DATABASE \"{}\"",
                database.replace('"', "\"\"")
            ));
            run_tool(create, &format!("creating database {database}"))?;
            if status.format == "postgres" {
                let mut c = postgres_tool(job, "psql")?;
                c.args(["--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1"]);
                c.arg(format!("--dbname={}", conninfo(database)));
                c
            } else {
                let mut c = postgres_tool(job, "pg_restore")?;
                c.args(["--exit-on-error"]);
                c.arg(format!("--dbname={}", conninfo(database)));
                c
            }
        }
        "mysql" => {
            if status.database.as_deref() == Some("*") {
                return Err(refuse(
                    "a dump of every database cannot go into one; pipe it to mysql instead",
                ));
            }
            let defaults = job.mysql_defaults()?;
            let program = find_on_path(&["mysql", "mariadb"])
                .unwrap_or_else(|| std::path::PathBuf::from("mysql"));
            let mut f = std::ffi::OsString::from("--defaults-extra-file=");
            f.push(defaults.path());
            let mut create = Command::new(&program);
            create.arg(&f).arg(format!(
                "--execute=CREATE DATABASE `{}`",
                database.replace('`', "``")
            ));
            run_tool(create, &format!("creating database {database}"))?;
            let mut c = Command::new(&program);
            c.arg(&f).arg(format!("--database={database}"));
            return load(c, repo, v, database, Some(defaults));
        }
        "postgres-globals" => {
            return Err(refuse(
                "the globals are not a database; pipe them to psql (rewind dump restore NAME/.globals | psql)",
            ));
        }
        _ => {
            return Err(refuse(
                "only postgres and mysql dumps load into a database; write this one to stdout",
            ));
        }
    };
    load(loader, repo, v, database, None)
}

/// Feed the stream to `cmd`'s stdin; its error line if it fails.
fn load(
    mut cmd: Command,
    repo: &dyn Repository,
    v: &Version,
    database: &str,
    _defaults: Option<tempfile::NamedTempFile>,
) -> Result<u64, DumpError> {
    let what = format!("loading into {database}");
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| DumpError::Tool {
            what: what.clone(),
            reason: if e.kind() == io::ErrorKind::NotFound {
                format!("{program} not found")
            } else {
                format!("cannot run {program}: {e}")
            },
        })?;
    let stderr = child.stderr.take();
    let tail = std::thread::spawn(move || read_tail(stderr));
    let mut stdin = child.stdin.take().expect("piped");
    let written = write_stream(repo, v, &mut stdin);
    drop(stdin);
    let st = child.wait().map_err(DumpError::Write)?;
    let err = tail.join().unwrap_or_default();
    if !st.success() {
        return Err(DumpError::Tool {
            what,
            reason: last_error_line(&err).unwrap_or_else(|| st.to_string()),
        });
    }
    written
}

fn conninfo(db: &str) -> String {
    format!("dbname='{}'", db.replace('\\', "\\\\").replace('\'', "\\'"))
}
