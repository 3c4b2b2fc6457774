//! `rewind`: continuous file protection with point-in-time restore.
//!
//! This crate is thin: argument parsing, output and exit codes; the agent
//! (watcher, capture, journal, uploader) is the rewind-agent library. Exit
//! codes: 0 complete, 1 failed, 3 partial (some items skipped; each is
//! reported on stderr).

mod allocator;
mod args;
mod commands;
mod diff;
mod dump_commands;
mod enroll;
mod find;
mod keys;
mod mount;
mod retention;
mod service;
mod status;
mod verify_remote;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand};
use rewind_agent::one_line;
use rewind_core::logging::{Logging, init_logging};

/// Continuous file protection: every change to a protected folder is
/// captured within about a second; any file or folder can be restored as it
/// was at any past moment.
#[derive(Parser)]
#[command(name = "rewind", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Global {
    /// Repository directory [default: $XDG_DATA_HOME/rewind/repo]
    #[arg(
        long,
        global = true,
        env = "REWIND_REPO",
        value_name = "DIR",
        conflicts_with = "server"
    )]
    repo: Option<PathBuf>,
    /// Work with this backup server (the one enrolled with `rewind enroll`)
    /// instead of a local repository [default: the enrolled server, if any]
    #[arg(long, global = true, env = "REWIND_SERVER", value_name = "URL")]
    server: Option<String>,
    /// More log output, one level per -v (warn, then info, debug; the
    /// agent starts at info)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Keep copies of an s3:// repository's index objects here, so that
    /// opening it again reads none [default: $REWIND_CACHE_DIR, else
    /// $XDG_CACHE_HOME/rewind]
    #[arg(long, global = true, value_name = "DIR", conflicts_with = "no_cache")]
    cache_dir: Option<PathBuf>,
    /// Keep no copies of an s3:// repository's index objects (as
    /// REWIND_NO_CACHE=1)
    #[arg(long, global = true)]
    no_cache: bool,
    /// Open an encrypted repository with this key file instead of a
    /// password (REWIND_PASSWORD, REWIND_PASSWORD_FILE or a prompt); with
    /// `init --encrypt`, the key file to seal the first key slot for
    /// (created when it does not exist)
    #[arg(long, global = true, env = "REWIND_KEY_FILE", value_name = "FILE")]
    key_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Create a repository; `--encrypt` (the default for s3://
    /// repositories) seals everything in it under a password or key file
    Init(InitArgs),
    /// Manage the passwords and key files of an encrypted repository
    Key(KeyArgs),
    /// Enroll this machine with a backup server (rewind-server)
    Enroll(EnrollArgs),
    /// Protect folders: capture every change, in the foreground, until Ctrl-C
    Watch(WatchArgs),
    /// Run from the config file: protect its [watch] folders and run its
    /// scheduled [[dump]] jobs, until Ctrl-C / SIGTERM (the daemon form;
    /// logs at info)
    Agent(AgentArgs),
    /// Run the agent as a service of this user: systemd user unit on
    /// Linux, launchd agent on macOS (`install`, `status`, `uninstall`)
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// Database dumps: `list`, `run NAME`, `versions NAME`, `restore NAME`
    Dump(DumpArgs),
    /// Show the agent, journal and repository state
    Status(JsonArg),
    /// Open the running agent's local web UI: prints a one-time login URL
    /// (good for two minutes) and opens it in a browser
    Ui(UiArgs),
    /// List every version of a path, oldest first
    Versions {
        /// File or folder
        path: PathBuf,
        #[command(flatten)]
        json: JsonArg,
    },
    /// List the tree under a path as it was at a point in time (no path:
    /// every protected folder and every database dump)
    Ls {
        /// File or folder; `dumps` or `dumps/NAME` for database dumps
        path: Option<PathBuf>,
        /// Point in time: now, RFC 3339, 'YYYY-MM-DD HH:MM[:SS]', '10 minutes ago', 'yesterday 17:00'
        #[arg(long, default_value = "now")]
        at: String,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Restore a file or folder as it was at a point in time
    Restore(RestoreArgs),
    /// Find paths by name across all history, deleted ones included: each
    /// with when it was first and last seen and whether it exists now
    Find(FindArgs),
    /// What changed between two points in time: added, removed, changed
    /// (content, or metadata only), renamed
    Diff {
        /// The earlier point in time (now, RFC 3339, 'YYYY-MM-DD HH:MM[:SS]', '10 minutes ago', …)
        t1: String,
        /// The later point in time
        t2: String,
        /// File or folder [default: every protected folder and every dump]
        path: Option<PathBuf>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Show the history as files, read-only: latest/, at/<time>/, days/,
    /// versions/ (in the foreground, until Ctrl-C or `fusermount -u DIR`)
    Mount {
        /// An existing, empty directory
        dir: PathBuf,
        /// Let other users in (for users other than root, needs
        /// user_allow_other in /etc/fuse.conf)
        #[arg(long)]
        allow_other: bool,
    },
    /// Check the repository: every pack, chunk, index file and version; on
    /// an enrolled machine, this client's versions and chunks on the server
    /// (exit 0 when clean, 1 when damage is found)
    Verify {
        /// Check structure only (no chunk is decompressed and hashed; on a
        /// server, only that each chunk is indexed)
        #[arg(long)]
        quick: bool,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Rebuild the indexes from the packs, salvage damaged packs, and list
    /// the versions whose content is lost (exit 1 if there are any)
    Repair(JsonArg),
    /// Apply the retention policy now: forget the versions no kept point,
    /// pin or the whole recent history needs (through the agent when one
    /// runs)
    Forget(ForgetArgs),
    /// Reclaim the space of what forget released: delete packs nothing
    /// needs, repack packs mostly unused (while the agent captures)
    Prune(PruneArgs),
    /// Pin a point in time: no retention rule or space rule removes it
    Pin {
        /// Point in time: now, RFC 3339, 'YYYY-MM-DD HH:MM[:SS]', '10 minutes ago', 'yesterday 17:00'
        #[arg(long, default_value = "now")]
        at: String,
        /// What to call it
        #[arg(long)]
        label: Option<String>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// List the pinned points
    Pins(JsonArg),
    /// Remove a pin (what only it kept goes at the next forget)
    Unpin {
        /// The pin's number (see `rewind pins`)
        id: u64,
        #[command(flatten)]
        json: JsonArg,
    },
    #[command(flatten)]
    Docs(rewind_core::docs::DocsCommand),
}

#[derive(Args)]
struct InitArgs {
    /// Encrypt the repository: every record, index and file sealed with
    /// XChaCha20-Poly1305, chunk ids keyed. The key is sealed under a
    /// password (REWIND_PASSWORD, REWIND_PASSWORD_FILE, or typed twice at
    /// the terminal) or, with --key-file, a key file. The default for
    /// s3:// repositories
    #[arg(long, conflicts_with = "no_encrypt")]
    encrypt: bool,
    /// Do not encrypt an s3:// repository
    #[arg(long)]
    no_encrypt: bool,
}

#[derive(Args)]
struct KeyArgs {
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Add a password (REWIND_NEW_PASSWORD, REWIND_NEW_PASSWORD_FILE, or
    /// typed twice at the terminal) or, with --new-key-file, a key file
    /// (created when it does not exist); the repository is opened with
    /// the current password or --key-file
    Add {
        /// Add this key file instead of a password
        #[arg(long, value_name = "FILE")]
        new_key_file: Option<PathBuf>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// List the key slots: id, kind, created, host and user; the one this
    /// command opened the repository with is marked
    List(JsonArg),
    /// Remove a key slot (refused for the last one and for the one this
    /// command opened the repository with)
    Remove {
        /// The slot's id (8 hex digits, see `rewind key list`)
        id: String,
        #[command(flatten)]
        json: JsonArg,
    },
}

#[derive(Args)]
struct AgentArgs {
    /// Config file [default: $XDG_CONFIG_HOME/rewind/config.toml]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log to FILE instead of stderr, a file a day (agent.log links to
    /// today's agent.YYYY-MM-DD.log), a week kept; for launchd (under
    /// systemd, stderr goes to the journal)
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
}

#[derive(Args)]
struct DumpArgs {
    /// Config file [default: $XDG_CONFIG_HOME/rewind/config.toml]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: DumpCommand,
}

#[derive(Subcommand)]
enum DumpCommand {
    /// The dump jobs of the config, with their last run
    List(JsonArg),
    /// Run a job now, in the foreground (through the agent when one runs);
    /// exit 1 if the dump failed (it is stored as a failed version)
    Run {
        /// Job name
        name: String,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Every stored run of a job, oldest first, failed ones included
    Versions {
        /// Job name (or NAME/DATABASE for a job with database = "*")
        name: String,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Write a dump as it was at a point in time to stdout (for `| psql`,
    /// `| mysql`), or load it into a new database with --into
    Restore {
        /// Job name (or NAME/DATABASE for a job with database = "*")
        name: String,
        /// Point in time: now, RFC 3339, 'YYYY-MM-DD HH:MM[:SS]', '10 minutes ago', 'yesterday 17:00'
        #[arg(long, default_value = "now")]
        at: String,
        /// Create this database on the job's server and load the dump into it
        #[arg(long, value_name = "DATABASE")]
        into: Option<String>,
        /// Also consider failed runs (their stream may be incomplete)
        #[arg(long)]
        include_failed: bool,
    },
}

#[derive(Args)]
struct PruneArgs {
    /// Only say what would be done
    #[arg(long)]
    dry_run: bool,
    /// Repack a pack once more than this share of it is unused, in percent
    /// [default: the config's [retention] max_unused, 10]
    #[arg(long, value_name = "PERCENT")]
    max_unused: Option<f64>,
    /// Config file [default: $XDG_CONFIG_HOME/rewind/config.toml]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    json: JsonArg,
}

#[derive(clap::Args)]
struct ForgetArgs {
    /// The policy, instead of the config's [retention] policy (e.g. 'all
    /// 24h, hourly 7d, daily 30d, weekly' or 'every 10s for 1m')
    #[arg(long, value_name = "SPEC")]
    policy: Option<String>,
    /// Only say what would be forgotten
    #[arg(long)]
    dry_run: bool,
    /// Config file [default: $XDG_CONFIG_HOME/rewind/config.toml]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    json: JsonArg,
}

#[derive(Args)]
struct JsonArg {
    /// Machine-readable output
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct EnrollArgs {
    /// The server, https://HOST:PORT
    url: String,
    /// This machine's client name (as given to `rewind-server client add`)
    #[arg(long)]
    name: String,
    /// The one-time enrollment token `rewind-server client add` printed
    /// (visible to other users in the process list and kept in shell
    /// history: prefer stdin or --token-file) [default: read from stdin]
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// Read the enrollment token from this file (its first line)
    #[arg(long, value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,
    /// The server certificate's fingerprint (`rewind-server fingerprint`);
    /// without it, rewind shows the fingerprint and asks
    #[arg(long, value_name = "SHA256:…")]
    fingerprint: Option<String>,
    /// Upload bandwidth limit to store with the enrollment, e.g. 5MiB/s or
    /// '08:00-18:00 1MiB/s, 20MiB/s'
    #[arg(long, value_name = "RATE")]
    limit_upload: Option<String>,
    #[command(flatten)]
    json: JsonArg,
}

#[derive(Args)]
struct WatchArgs {
    /// Folders to protect
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Leave out paths matching this gitignore-style glob (repeatable)
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Symlinks are stored as links; with outside-roots the target of a
    /// link that points outside the protected folders is protected too
    #[arg(long, default_value = "never", value_name = "WHEN",
          value_parser = clap::builder::PossibleValuesParser::new(rewind_agent::FollowSymlinks::NAMES)
              .map(|s| s.parse::<rewind_agent::FollowSymlinks>().expect("one of NAMES")))]
    follow_symlinks: rewind_agent::FollowSymlinks,
    /// Capture a path once it has been quiet this long (e.g. 300ms, 1s)
    #[arg(long, default_value = "300ms", value_parser = parse_duration)]
    quiescence: Duration,
    /// Capture a file that keeps changing (a log, a database) at least this
    /// often, whenever it can be read consistently
    #[arg(long, default_value = "2s", value_parser = parse_duration, alias = "max-interval")]
    busy_interval: Duration,
    /// Rescan folders past the kernel's inotify watch limit this often
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    unwatched_rescan: Duration,
    /// Capture everything once, upload it and exit (a backup run instead of
    /// continuous protection); exit code 3 if some paths were skipped or
    /// some versions could not be stored (a repository that does not answer
    /// at the end is retried for up to a minute first)
    #[arg(long)]
    once: bool,
    /// Upload bandwidth limit when protecting to a server, e.g. 5MiB/s or
    /// '08:00-18:00 1MiB/s, 20MiB/s' (overrides the enrolled setting)
    #[arg(long, value_name = "RATE")]
    limit_upload: Option<String>,
    /// Serve the web UI on this address (`rewind ui` opens it)
    #[arg(long, value_name = "ADDR", default_value_t = rewind_agent::DEFAULT_UI_LISTEN)]
    ui_listen: std::net::SocketAddr,
    /// Serve no web UI
    #[arg(long, conflicts_with = "ui_listen")]
    no_ui: bool,
}

#[derive(Args)]
struct UiArgs {
    /// Print the URL only; start no browser
    #[arg(long)]
    no_open: bool,
}

#[derive(Args)]
struct FindArgs {
    /// A glob (`*.txt`, `docs/**/*.md`) or, without glob characters, a
    /// substring; matched against the name, or the whole path when it
    /// holds a `/`
    pattern: String,
    /// Search below this folder [default: everything protected, and dumps]
    path: Option<PathBuf>,
    /// Only paths that do not exist now
    #[arg(long)]
    deleted: bool,
    /// Only paths that existed at or after this point in time
    #[arg(long, value_name = "T")]
    since: Option<String>,
    /// Only paths that existed at or before this point in time
    #[arg(long, value_name = "T")]
    until: Option<String>,
    /// Match regardless of case
    #[arg(short, long)]
    ignore_case: bool,
    #[command(flatten)]
    json: JsonArg,
}

#[derive(Args)]
struct RestoreArgs {
    /// File or folder to restore
    path: PathBuf,
    /// Point in time: now, RFC 3339, 'YYYY-MM-DD HH:MM[:SS]', '10 minutes ago', 'yesterday 17:00'
    #[arg(long)]
    at: String,
    /// Write it here (must not exist, or be an empty directory) instead of in place
    #[arg(long, value_name = "DEST")]
    to: Option<PathBuf>,
    /// In place: also remove files created after that time
    #[arg(long, conflicts_with = "to")]
    delete: bool,
    /// Give files the recorded numeric user and group ids, instead of the
    /// ids their recorded names have on this system
    #[arg(long)]
    numeric_owner: bool,
    #[command(flatten)]
    json: JsonArg,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (try 300ms, 2s, 1m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit in {s:?} (use ms, s, m, h)")),
    };
    if !(0.0..=1e9).contains(&secs) {
        return Err(format!("duration out of range: {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.global.no_cache {
        rewind_repo::choose_index_cache(None);
    } else if let Some(dir) = &cli.global.cache_dir {
        rewind_repo::choose_index_cache(Some(dir.clone()));
    }
    // What rewind writes for itself is created 0700/0600 explicitly; the
    // umask covers files that libraries create (sled's). A restore writes
    // the user's own files, with their recorded modes, under the user's
    // umask (docs/decisions.md, "Private by default").
    if !matches!(cli.command, Command::Restore(_)) {
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    }
    // Only a process that stays: a backup run (`watch --once`) exits when
    // done and keeps jemalloc's defaults, which fault fewer pages in.
    let resident = match &cli.command {
        Command::Agent(_) => true,
        Command::Watch(w) => !w.once,
        _ => false,
    };
    if resident {
        allocator::without_thread_caches();
        allocator::for_resident_process();
    }
    // The agent is the service form: its info lines (one per problem or
    // state change, never one per captured file) belong in its log.
    let (base, file) = match &cli.command {
        Command::Agent(a) => (tracing::Level::INFO, a.log_file.as_deref()),
        _ => (tracing::Level::WARN, None),
    };
    let logging = Logging {
        verbose: cli.global.verbose,
        base,
        file,
    };
    if let Err(e) = init_logging(&logging) {
        eprintln!("rewind: {}", rewind_core::one_line(&e));
        return ExitCode::from(1);
    }
    if let Some(k) = &cli.global.key_file {
        rewind_repo::use_key_file(k.clone());
    }
    let result = commands::run(cli);
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("rewind: {}", one_line(&e));
            ExitCode::from(1)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
