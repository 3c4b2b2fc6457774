//! Dump jobs: their configuration (`[[dump]]` tables), validated into
//! [`Job`]s, and the commands each one runs.

use std::ffi::OsString;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use rewind_core::Timestamp;
use serde::{Deserialize, Serialize};

use crate::DumpError;

/// What a job dumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `pg_dump` (and `pg_dumpall --globals-only` for `database = "*"`).
    Postgres,
    /// `mysqldump` / `mariadb-dump`.
    Mysql,
    /// Any command; its standard output is stored.
    Command,
}

impl Kind {
    /// Lower-case name, as in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Postgres => "postgres",
            Kind::Mysql => "mysql",
            Kind::Command => "command",
        }
    }
}

/// One `[[dump]]` table of the config file, as written (see docs/config.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Job name: letters, digits, `.`, `_`, `-`; the stream is stored as
    /// `dumps/<name>`.
    pub name: String,
    /// `postgres`, `mysql` or `command`.
    pub kind: Kind,
    /// Database to dump; `*` for every database.
    pub database: Option<String>,
    /// Server host name, or a socket directory (postgres) / socket file
    /// (mysql) when it starts with `/`.
    pub host: Option<String>,
    /// Server port.
    pub port: Option<u16>,
    /// User to connect as.
    pub user: Option<String>,
    /// File whose first line is the password.
    pub password_file: Option<PathBuf>,
    /// Environment variable (of the agent) holding the password.
    pub password_env: Option<String>,
    /// Extra arguments for the dump program, before the database name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// The dump program, when it is not the usual one on `PATH`
    /// (`/usr/lib/postgresql/16/bin/pg_dump`).
    pub program: Option<PathBuf>,
    /// `kind = "command"`: the command and its arguments (no shell; use
    /// `["sh", "-c", "…"]` for a pipeline).
    pub command: Option<Vec<String>>,
    /// `kind = "postgres"`: `plain` (SQL, the default) or `custom`.
    pub format: Option<String>,
    /// When to run: `every 1h`, `every 30m`, or a cron line
    /// (`0 3 * * *`); none: only `rewind dump run`.
    pub schedule: Option<String>,
    /// Kill the dump after this long (`2h`, `30m`); none: no limit.
    pub timeout: Option<String>,
    /// Which runs retention keeps (`last 14, weekly 13w`, the default):
    /// `last N` successful runs, `every I for D` one successful run per
    /// bucket; a failed run never counts as a kept one.
    pub retention: Option<String>,
}

/// When a job runs.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// At a fixed interval after the previous run.
    Every(Duration),
    /// At the times a cron pattern matches, in local time.
    Cron(Box<croner::Cron>),
}

impl Schedule {
    /// Parse `every 1h` or a cron pattern.
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let t = s.trim();
        if let Some(rest) = t.strip_prefix("every ") {
            let d = parse_duration(rest)?;
            if d < Duration::from_secs(1) {
                return Err(format!("schedule {s:?}: interval under one second"));
            }
            return Ok(Schedule::Every(d));
        }
        let hint = "use 'every 1h' or a cron line such as '0 3 * * *'";
        // croner reads an empty list item (`1,,2`, a lone `,`) as a field
        // that matches nothing and then searches up to the year 5000.
        if t.split_whitespace()
            .any(|f| f.split(',').any(str::is_empty))
        {
            return Err(format!("schedule {s:?}: empty item in a list ({hint})"));
        }
        let cron =
            croner::Cron::from_str(t).map_err(|e| format!("schedule {s:?}: {e} ({hint})"))?;
        if cron
            .find_next_occurrence(&chrono::Local::now(), false)
            .is_err()
        {
            return Err(format!("schedule {s:?}: matches no date ({hint})"));
        }
        Ok(Schedule::Cron(Box::new(cron)))
    }

    /// The first time the job is due after a run at `last` (`None`: never
    /// ran), seen at `now`. A job that never ran and has an interval is
    /// due now; one whose interval passed while the agent was stopped is
    /// due now too (once, not once per missed interval).
    pub fn next_after(&self, last: Option<Timestamp>, now: Timestamp) -> Timestamp {
        match self {
            Schedule::Every(d) => match last {
                None => now,
                Some(l) => Timestamp(l.0.saturating_add(d.as_nanos().min(i64::MAX as u128) as i64)),
            },
            Schedule::Cron(c) => {
                let from = last.unwrap_or(now);
                let Some(start) = chrono::DateTime::from_timestamp(
                    from.0.div_euclid(1_000_000_000),
                    from.0.rem_euclid(1_000_000_000) as u32,
                ) else {
                    return Timestamp::MAX;
                };
                match c.find_next_occurrence(&start.with_timezone(&chrono::Local), false) {
                    Ok(t) => Timestamp(
                        t.timestamp()
                            .saturating_mul(1_000_000_000)
                            .saturating_add(t.timestamp_subsec_nanos() as i64),
                    ),
                    Err(_) => Timestamp::MAX,
                }
            }
        }
    }
}

/// `300ms`, `30s`, `5m`, `2h`, `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (try 30s, 5m, 2h)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" | "sec" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("unknown unit in {s:?} (use ms, s, m, h, d)")),
    };
    if !(0.0..=1e10).contains(&secs) {
        return Err(format!("duration out of range: {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A validated job.
#[derive(Clone, Debug)]
pub struct Job {
    /// Its configuration.
    pub config: JobConfig,
    /// Parsed `schedule`.
    pub schedule: Option<Schedule>,
    /// Parsed `timeout`.
    pub timeout: Option<Duration>,
    /// Parsed `retention` (the default when not given).
    pub retention: rewind_core::retention::Policy,
}

impl Job {
    /// Check a `[[dump]]` table: every problem is one line naming the job
    /// and the key.
    pub fn new(config: JobConfig) -> Result<Job, DumpError> {
        let bad = |reason: String| DumpError::Config {
            job: config.name.clone(),
            reason,
        };
        let n = &config.name;
        if n.is_empty()
            || n.len() > 100
            || n.starts_with('.')
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(bad(
                "name: use letters, digits, '.', '_' and '-' (not first), at most 100".into(),
            ));
        }
        if config.password_file.is_some() && config.password_env.is_some() {
            return Err(bad("set password_file or password_env, not both".into()));
        }
        match config.kind {
            Kind::Postgres | Kind::Mysql => {
                if config.database.as_deref().is_none_or(str::is_empty) {
                    return Err(bad(format!(
                        "kind = \"{}\" needs database = \"NAME\" (or \"*\" for all)",
                        config.kind.as_str()
                    )));
                }
                if config.command.is_some() {
                    return Err(bad("command is only for kind = \"command\"".into()));
                }
            }
            Kind::Command => {
                if config.command.as_ref().is_none_or(|c| c.is_empty()) {
                    return Err(bad(
                        "kind = \"command\" needs command = [\"program\", \"arg\", …]".into(),
                    ));
                }
            }
        }
        if let Some(f) = &config.format
            && !(config.kind == Kind::Postgres && matches!(f.as_str(), "plain" | "custom"))
        {
            return Err(bad(format!(
                "format {f:?}: only kind = \"postgres\" has a format, \"plain\" or \"custom\""
            )));
        }
        let schedule = match &config.schedule {
            Some(s) => Some(Schedule::parse(s).map_err(bad)?),
            None => None,
        };
        let timeout = match &config.timeout {
            Some(t) => Some(parse_duration(t).map_err(|e| bad(format!("timeout: {e}")))?),
            None => None,
        };
        let retention = match &config.retention {
            Some(r) => rewind_core::retention::Policy::parse_series(r)
                .map_err(|e| bad(format!("retention: {e}")))?,
            None => rewind_core::retention::Policy::default_series(),
        };
        Ok(Job {
            config,
            schedule,
            timeout,
            retention,
        })
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// True for `kind = "postgres"` with `database = "*"`: one stream per
    /// database plus the globals, under `dumps/<name>/`.
    pub fn is_all_postgres(&self) -> bool {
        self.config.kind == Kind::Postgres && self.config.database.as_deref() == Some("*")
    }

    /// The virtual path of the job's stream, or of the folder of its
    /// streams for an all-databases postgres job.
    pub fn path(&self) -> Vec<u8> {
        stream_path(self.name(), None)
    }

    /// The password, read now from its file or environment variable.
    pub(crate) fn password(&self) -> Result<Option<String>, DumpError> {
        let bad = |reason: String| DumpError::Config {
            job: self.config.name.clone(),
            reason,
        };
        if let Some(f) = &self.config.password_file {
            let s = std::fs::read_to_string(f)
                .map_err(|e| bad(format!("password_file {}: {e}", f.display())))?;
            return Ok(Some(s.lines().next().unwrap_or("").to_string()));
        }
        if let Some(v) = &self.config.password_env {
            return match std::env::var(v) {
                Ok(p) => Ok(Some(p)),
                Err(_) => Err(bad(format!("password_env: ${v} is not set"))),
            };
        }
        Ok(None)
    }

    /// The program for this job's kind.
    pub(crate) fn program(&self, default: &str) -> PathBuf {
        self.config
            .program
            .clone()
            .unwrap_or_else(|| PathBuf::from(default))
    }
}

/// `dumps/<job>` or `dumps/<job>/<part>` (a database of an all-databases
/// job, `/` and `%` in it percent-encoded so it stays one component).
pub fn stream_path(job: &str, part: Option<&str>) -> Vec<u8> {
    let mut p = format!("dumps/{job}");
    if let Some(part) = part {
        p.push('/');
        for c in part.chars() {
            match c {
                '/' => p.push_str("%2F"),
                '%' => p.push_str("%25"),
                '\0' => p.push_str("%00"),
                c => p.push(c),
            }
        }
    }
    p.into_bytes()
}

/// Variables added to a command's environment.
type Env = Vec<(OsString, OsString)>;

/// A command to run for one stream, with what to record about it.
pub struct StreamSpec {
    /// Virtual path of the stream.
    pub path: Vec<u8>,
    /// [`rewind_core::StreamStatus::format`].
    pub format: String,
    /// The database, if any.
    pub database: Option<String>,
    /// Program to run.
    pub program: PathBuf,
    /// Its arguments (never a password).
    pub args: Vec<OsString>,
    /// Variables added to its environment (the postgres password).
    pub env: Env,
    /// Kill it after this long.
    pub timeout: Option<Duration>,
    /// Keeps a generated mysql defaults file alive while the command runs.
    pub(crate) _defaults: Option<tempfile::NamedTempFile>,
}

impl Job {
    /// The connection arguments and environment for postgres tools.
    fn pg_conn(&self) -> Result<(Vec<OsString>, Env), DumpError> {
        let c = &self.config;
        let mut args: Vec<OsString> = vec!["--no-password".into()];
        if let Some(h) = &c.host {
            args.push(format!("--host={h}").into());
        }
        if let Some(p) = c.port {
            args.push(format!("--port={p}").into());
        }
        if let Some(u) = &c.user {
            args.push(format!("--username={u}").into());
        }
        let mut env = Vec::new();
        if let Some(pw) = self.password()? {
            // In the child's environment, never on its command line (which
            // every user of the machine can read in /proc).
            env.push(("PGPASSWORD".into(), pw.into()));
        }
        Ok((args, env))
    }

    /// The streams of this job. For an all-databases postgres job,
    /// `databases` lists them (see [`crate::list_postgres_databases`]).
    pub fn streams(&self, databases: &[String]) -> Result<Vec<StreamSpec>, DumpError> {
        let c = &self.config;
        let mut out = Vec::new();
        match c.kind {
            Kind::Postgres => {
                let (conn, env) = self.pg_conn()?;
                let custom = c.format.as_deref() == Some("custom");
                let dump = |db: &str, path: Vec<u8>| {
                    let mut args = conn.clone();
                    if custom {
                        // Uncompressed: the repository compresses chunks,
                        // and a compressed archive would not dedup between
                        // runs (docs/decisions.md, "Database dumps").
                        args.push("--format=custom".into());
                        args.push("--compress=0".into());
                    } else {
                        args.push("--format=plain".into());
                    }
                    args.extend(c.args.iter().map(OsString::from));
                    // `--dbname=` keeps a database named like an option
                    // from being read as one.
                    args.push(format!("--dbname={}", conninfo_dbname(db)).into());
                    StreamSpec {
                        path,
                        format: if custom {
                            "postgres-custom".into()
                        } else {
                            "postgres".into()
                        },
                        database: Some(db.to_string()),
                        program: self.program("pg_dump"),
                        args,
                        env: env.clone(),
                        timeout: self.timeout,
                        _defaults: None,
                    }
                };
                if self.is_all_postgres() {
                    let mut args = conn.clone();
                    args.push("--globals-only".into());
                    let program = match &c.program {
                        Some(p) => p.with_file_name("pg_dumpall"),
                        None => PathBuf::from("pg_dumpall"),
                    };
                    out.push(StreamSpec {
                        path: stream_path(self.name(), Some(".globals")),
                        format: "postgres-globals".into(),
                        database: None,
                        program,
                        args,
                        env: env.clone(),
                        timeout: self.timeout,
                        _defaults: None,
                    });
                    for db in databases {
                        out.push(dump(db, stream_path(self.name(), Some(db))));
                    }
                } else {
                    let db = c.database.clone().unwrap_or_default();
                    out.push(dump(&db, self.path()));
                }
            }
            Kind::Mysql => {
                let defaults = self.mysql_defaults()?;
                let mut args: Vec<OsString> = Vec::new();
                let mut f = OsString::from("--defaults-extra-file=");
                f.push(defaults.path());
                // Must come first: mysqldump reads option files before
                // anything else on its command line.
                args.push(f);
                // A consistent snapshot of InnoDB tables without locking
                // them; MyISAM tables are not covered (docs/decisions.md).
                args.push("--single-transaction".into());
                // One INSERT per row: a changed row changes one line, not
                // the split of every following multi-row INSERT, so two
                // dumps dedup (measured, docs/decisions.md).
                args.push("--skip-extended-insert".into());
                args.push("--routines".into());
                args.push("--triggers".into());
                args.push("--hex-blob".into());
                args.extend(c.args.iter().map(OsString::from));
                let db = c.database.clone().unwrap_or_default();
                if db == "*" {
                    args.push("--all-databases".into());
                } else {
                    // The name alone (not `--databases NAME`): no CREATE
                    // DATABASE / USE in the dump, so it loads into any
                    // database (`restore --into`).
                    args.push(db.clone().into());
                }
                let program = match &c.program {
                    Some(p) => p.clone(),
                    None => find_on_path(&["mysqldump", "mariadb-dump"])
                        .unwrap_or_else(|| PathBuf::from("mysqldump")),
                };
                out.push(StreamSpec {
                    path: self.path(),
                    format: "mysql".into(),
                    database: Some(db),
                    program,
                    args,
                    env: Vec::new(),
                    timeout: self.timeout,
                    _defaults: Some(defaults),
                });
            }
            Kind::Command => {
                let cmd = c.command.clone().unwrap_or_default();
                let mut it = cmd.into_iter();
                let program = PathBuf::from(it.next().unwrap_or_default());
                let mut args: Vec<OsString> = it.map(OsString::from).collect();
                args.extend(c.args.iter().map(OsString::from));
                let mut env = Vec::new();
                if let Some(pw) = self.password()? {
                    env.push(("REWIND_DUMP_PASSWORD".into(), pw.into()));
                }
                out.push(StreamSpec {
                    path: self.path(),
                    format: "command".into(),
                    database: c.database.clone(),
                    program,
                    args,
                    env,
                    timeout: self.timeout,
                    _defaults: None,
                });
            }
        }
        Ok(out)
    }

    /// A `[client]` option file with the connection settings, readable
    /// by this user only, removed when dropped.
    pub(crate) fn mysql_defaults(&self) -> Result<tempfile::NamedTempFile, DumpError> {
        use std::io::Write;
        let c = &self.config;
        let mut s = String::from("[client]\n");
        let quote = |v: &str| {
            format!(
                "\"{}\"",
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            )
        };
        if let Some(h) = &c.host {
            if h.starts_with('/') {
                s.push_str(&format!("socket={}\n", quote(h)));
            } else {
                s.push_str(&format!("host={}\n", quote(h)));
            }
        }
        if let Some(p) = c.port {
            s.push_str(&format!("port={p}\n"));
        }
        if let Some(u) = &c.user {
            s.push_str(&format!("user={}\n", quote(u)));
        }
        if let Some(pw) = self.password()? {
            s.push_str(&format!("password={}\n", quote(&pw)));
        }
        let io = |e: std::io::Error| DumpError::Config {
            job: c.name.clone(),
            reason: format!("cannot write a mysql option file: {e}"),
        };
        // NamedTempFile is created 0600.
        let mut f = tempfile::Builder::new()
            .prefix("rewind-mysql-")
            .suffix(".cnf")
            .tempfile()
            .map_err(io)?;
        f.write_all(s.as_bytes()).map_err(io)?;
        f.flush().map_err(io)?;
        Ok(f)
    }
}

/// A database name as a libpq connection string.
fn conninfo_dbname(db: &str) -> String {
    format!("dbname='{}'", db.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The first of `names` found on `PATH`.
pub(crate) fn find_on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for n in names {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(toml_text: &str) -> Result<Job, DumpError> {
        let c: JobConfig = toml::from_str(toml_text).map_err(|e| DumpError::Config {
            job: "?".into(),
            reason: e.to_string(),
        })?;
        Job::new(c)
    }

    #[test]
    fn parses_and_validates() {
        let j = job(
            "name = \"crm\"\nkind = \"postgres\"\ndatabase = \"crm\"\nschedule = \"every 1h\"\ntimeout = \"2h\"",
        )
        .unwrap();
        assert!(matches!(j.schedule, Some(Schedule::Every(d)) if d == Duration::from_secs(3600)));
        assert_eq!(j.timeout, Some(Duration::from_secs(7200)));
        assert_eq!(j.path(), b"dumps/crm");
        assert!(job("name = \"a/b\"\nkind = \"command\"\ncommand = [\"true\"]").is_err());
        assert!(job("name = \"x\"\nkind = \"postgres\"").is_err());
        assert!(job("name = \"x\"\nkind = \"command\"").is_err());
        assert!(job("name = \"x\"\nkind = \"command\"\ncommand = [\"true\"]\nbogus = 1").is_err());
        assert!(
            job("name = \"x\"\nkind = \"command\"\ncommand = [\"true\"]\nschedule = \"nope\"")
                .is_err()
        );
        assert!(
            job("name = \"x\"\nkind = \"mysql\"\ndatabase = \"d\"\nformat = \"custom\"").is_err()
        );
    }

    #[test]
    fn password_never_on_the_command_line() {
        let j = job(
            "name = \"p\"\nkind = \"postgres\"\ndatabase = \"d\"\npassword_env = \"REWIND_TEST_PW_1\"",
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pf = dir.path().join("pw");
        std::fs::write(&pf, "s3cret\nignored\n").unwrap();
        let j2 = job(&format!(
            "name = \"p\"\nkind = \"postgres\"\ndatabase = \"d\"\npassword_file = {:?}",
            pf
        ))
        .unwrap();
        let s = j2.streams(&[]).unwrap();
        assert!(
            !s[0]
                .args
                .iter()
                .any(|a| a.to_string_lossy().contains("s3cret"))
        );
        assert_eq!(s[0].env, vec![("PGPASSWORD".into(), "s3cret".into())]);
        assert!(j.password().is_err(), "unset variable is an error");
        let m = job(&format!(
            "name = \"m\"\nkind = \"mysql\"\ndatabase = \"d\"\npassword_file = {:?}",
            pf
        ))
        .unwrap();
        let s = m.streams(&[]).unwrap();
        assert!(
            !s[0]
                .args
                .iter()
                .any(|a| a.to_string_lossy().contains("s3cret"))
        );
        let cnf = s[0]._defaults.as_ref().unwrap().path();
        assert!(
            std::fs::read_to_string(cnf)
                .unwrap()
                .contains("password=\"s3cret\"")
        );
    }

    #[test]
    fn all_databases_paths() {
        let j = job("name = \"pg\"\nkind = \"postgres\"\ndatabase = \"*\"").unwrap();
        let s = j.streams(&["a".into(), "b/c".into()]).unwrap();
        let paths: Vec<_> = s
            .iter()
            .map(|s| String::from_utf8(s.path.clone()).unwrap())
            .collect();
        assert_eq!(paths, ["dumps/pg/.globals", "dumps/pg/a", "dumps/pg/b%2Fc"]);
    }

    #[test]
    fn schedules() {
        let now = Timestamp(1_800_000_000_000_000_000);
        let e = Schedule::parse("every 10s").unwrap();
        assert_eq!(e.next_after(None, now), now);
        assert_eq!(
            e.next_after(Some(now), now),
            Timestamp(now.0 + 10_000_000_000)
        );
        let c = Schedule::parse("*/5 * * * *").unwrap();
        let n = c.next_after(Some(now), now);
        assert!(n > now && n.0 - now.0 <= 300_000_000_000, "{n:?}");
        assert!(Schedule::parse("every 0s").is_err());
    }

    #[test]
    fn cron_lines_that_match_nothing_are_refused_quickly() {
        // Found by the config fuzz target: croner read an empty list item
        // as a field that matches nothing and searched for ever.
        for bad in [
            ", * * * *",
            "* , * * *",
            "1,,2 * * * *",
            "* * * * ,",
            "0 0 31 2 *",
        ] {
            let (tx, rx) = std::sync::mpsc::channel();
            let line = bad.to_string();
            std::thread::spawn(move || {
                let r = Schedule::parse(&line).map(|s| s.next_after(None, Timestamp(0)));
                let _ = tx.send(r.is_err());
            });
            let refused = rx
                .recv_timeout(std::time::Duration::from_secs(5))
                .unwrap_or_else(|_| panic!("{bad:?}: still searching after 5 s"));
            assert!(refused, "{bad:?} accepted");
        }
    }
}
