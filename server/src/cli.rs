//! The `rewind-server` binary's command line: it parses arguments, prints
//! and sets the exit code; everything it does is the rest of this crate.
//! `verify` / `repair` print the same reports as `rewind verify` /
//! `rewind repair` ([`crate::verify`], [`crate::repair`]). The binary
//! itself is built in the `rewind` package beside `rewind` (so the
//! end-to-end tests find both) and only calls [`main`]. Exit codes: 0
//! success, 1 failure, 2 bad usage.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::{ClientRecord, DataDir, ServeOptions};
use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};
use serde_json::json;

/// rewind's backup server.
#[derive(Parser)]
#[command(
    name = "rewind-server",
    version,
    about = "rewind's backup server: HTTPS API over the repository, client enrollment and auth",
    long_about = None
)]
struct Cli {
    /// The server's data directory (repository, certificate, clients)
    #[arg(long, global = true, env = "REWIND_SERVER_DATA", value_name = "DIR")]
    data: Option<PathBuf>,
    /// More log output (-v: info, -vv: debug)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the data directory: repository, TLS certificate, admin secret
    Init {
        /// Host names and addresses to put in the certificate (repeatable;
        /// clients pin the fingerprint, so this is informational)
        #[arg(long = "name", value_name = "HOST")]
        names: Vec<String>,
        /// Keep the repository on an S3-compatible object store instead of
        /// in the data directory (s3://BUCKET/PREFIX; endpoint, region and
        /// credentials from AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,
        /// AWS_SECRET_ACCESS_KEY); every later command reads it from DATA/store
        #[arg(long, value_name = "URL")]
        store: Option<String>,
        /// Encrypt the repository (every record sealed, chunk ids keyed);
        /// its key is sealed for a new key file, DATA/repo.key (0600), with
        /// which the server opens it. Keep a copy of that file apart from
        /// the server. Enrolled clients receive the chunk-id key, never the
        /// record key
        #[arg(long)]
        encrypt: bool,
    },
    /// Serve clients over HTTPS until SIGTERM or Ctrl-C
    Serve {
        /// Address and port to listen on (port 0 picks a free one)
        #[arg(long, default_value = "0.0.0.0:8443", value_name = "ADDR:PORT")]
        listen: SocketAddr,
        /// Connections served at once; more wait until one closes
        #[arg(long, default_value_t = 256, value_name = "N")]
        max_connections: usize,
        /// Connections one address (an IPv6 /64) may hold open at once;
        /// more are closed at once
        #[arg(long, default_value_t = crate::DEFAULT_PER_ADDRESS, value_name = "N")]
        max_connections_per_address: usize,
        /// Close a connection that has had no request in flight this long
        /// (also the most a TLS handshake or a request's head may take)
        #[arg(long, default_value_t = crate::DEFAULT_IDLE.as_secs(), value_name = "SECONDS")]
        idle_timeout: u64,
        /// How long shutdown waits for requests in flight
        #[arg(long, default_value = "30", value_name = "SECONDS")]
        grace: u64,
        /// How often to forget by each client's policy and prune: 24h,
        /// 30m, 10s (0s: never by itself)
        #[arg(long, default_value = "24h", value_name = "DURATION",
              value_parser = rewind_dumps::parse_duration)]
        retention_every: Duration,
        /// Packs sealed this recently are not pruned, and an unused pack
        /// is deleted this long after it was found unused: longer than a
        /// client's uploads may wait before their versions commit
        #[arg(long, default_value = "1h", value_name = "DURATION",
              value_parser = rewind_dumps::parse_duration)]
        prune_grace: Duration,
        /// Memory request bodies may hold at once (512MiB, 2GiB, …); an
        /// upload beyond it is turned away and its client asks again
        #[arg(long, default_value = "1GiB", value_name = "SIZE",
              value_parser = rewind_core::parse_size)]
        max_body_memory: u64,
    },
    /// Show the retention policy of clients without one of their own, or
    /// set it (`default`: the built-in one)
    Policy {
        /// A policy such as "all 24h, hourly 7d, daily 30d, weekly"
        spec: Option<String>,
    },
    /// Apply each client's retention policy now (the server does it by
    /// itself every --retention-every); stop the server first
    Forget {
        /// Only this client
        #[arg(long, value_name = "NAME")]
        client: Option<String>,
        /// Only say what would be forgotten
        #[arg(long)]
        dry_run: bool,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Reclaim the space of what forget released, keeping every chunk
    /// any client still needs; stop the server first
    Prune {
        /// Only say what would be done
        #[arg(long)]
        dry_run: bool,
        /// Packs sealed this recently are left alone, and a pack found
        /// unused is deleted by a prune this long later
        #[arg(long, default_value = "1h", value_name = "DURATION",
              value_parser = rewind_dumps::parse_duration)]
        grace: Duration,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Print the certificate fingerprint clients pin
    Fingerprint,
    /// Check the repository: every pack, chunk, index file and version
    /// (exit 0 when clean, 1 when damage is found); works while serving
    Verify {
        /// Check structure only (no chunk is decompressed and hashed)
        #[arg(long)]
        quick: bool,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the indexes from the packs, salvage damaged packs, and list
    /// the versions whose content is lost (exit 1 if there are any); stop
    /// the server first
    Repair {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Manage clients
    #[command(subcommand)]
    Client(ClientCommand),
    #[command(flatten)]
    Docs(rewind_core::docs::DocsCommand),
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Add a client and print its one-time enrollment token (on stdout,
    /// once); run again for a new token while the client is not enrolled
    Add {
        /// The client's name (letters, digits, '.', '_', '-')
        name: String,
        /// Reuse the name of a removed client, and with it its stored versions
        #[arg(long)]
        reuse: bool,
        /// How long the token works: 30m, 24h, 7d
        #[arg(long, default_value = "24h", value_name = "DURATION",
              value_parser = parse_expiry)]
        expires: Duration,
    },
    /// List clients
    List {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Revoke a client's key at once (its versions stay stored)
    Remove {
        /// The client's name
        name: String,
    },
    /// Set a client's retention policy (`default`: the server's), or with
    /// --dump that of one of its dump jobs (`default`: "last 14, weekly 13w")
    Policy {
        /// The client's name
        name: String,
        /// A policy such as "all 24h, hourly 7d, daily 30d, weekly" (a dump
        /// job's: "last 14, weekly 13w")
        spec: String,
        /// The policy of this dump job of the client's, not of its files
        #[arg(long, value_name = "JOB")]
        dump: Option<String>,
    },
}

/// `--expires`: a duration as config files write them, more than zero.
fn parse_expiry(s: &str) -> Result<Duration, String> {
    match rewind_dumps::parse_duration(s)? {
        d if d.is_zero() => Err("a token that expires at once cannot be used".into()),
        d => Ok(d),
    }
}

/// Parse the arguments, run the command, print, and say the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Everything the server writes is private (issue 21); the umask covers
    // files that libraries create.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let logging = rewind_core::logging::Logging {
        verbose: cli.verbose,
        base: tracing::Level::WARN,
        file: None,
    };
    if let Err(e) = rewind_core::logging::init_logging(&logging) {
        eprintln!("rewind-server: {}", rewind_core::one_line(&e));
        return ExitCode::from(1);
    }
    match run(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("rewind-server: {}", rewind_core::one_line(e.as_ref()));
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<i32> {
    if let Command::Docs(d) = cli.command {
        return Ok(rewind_core::docs::run(d, Cli::command())?);
    }
    let Some(root) = cli.data else {
        anyhow::bail!("say where the data lives: --data DIR (or REWIND_SERVER_DATA)");
    };
    let dir = DataDir::new(&root);
    // An encrypted repository is opened with the key file in the data
    // directory, by every command.
    if dir.repo_key().exists() {
        rewind_repo::use_key_file(dir.repo_key());
    }
    match cli.command {
        Command::Init {
            mut names,
            store,
            encrypt,
        } => {
            if names.is_empty() {
                let host = rustix::system::uname()
                    .nodename()
                    .to_string_lossy()
                    .into_owned();
                names = vec![host, "localhost".into(), "127.0.0.1".into(), "::1".into()];
            }
            let c = crate::init_with(&dir, &names, store.as_deref(), encrypt)?;
            println!("created rewind-server data in {}", root.display());
            if store.is_some() {
                let repo = DataDir::new(&root).repo();
                println!("repository:              {}", repo.display());
            }
            println!("repository id:           {}", c.repo_id);
            println!("certificate fingerprint: {}", c.fingerprint);
            println!(
                "admin secret (for /metrics; shown once, stored hashed): {}",
                c.admin_secret
            );
            println!(
                "next: rewind-server client add NAME --data {}, then rewind-server serve --data {}",
                root.display(),
                root.display()
            );
            Ok(0)
        }
        Command::Serve {
            listen,
            max_connections,
            max_connections_per_address,
            idle_timeout,
            grace,
            retention_every,
            prune_grace,
            max_body_memory,
        } => crate::serve(ServeOptions {
            data: dir,
            listen,
            max_connections,
            max_connections_per_address,
            idle_timeout: Duration::from_secs(idle_timeout.max(1)),
            grace: Duration::from_secs(grace),
            retention_every: (!retention_every.is_zero()).then_some(retention_every),
            prune_grace,
            max_body_memory: usize::try_from(max_body_memory).unwrap_or(usize::MAX),
        })
        .map(|()| 0),
        Command::Policy { spec } => {
            dir.check()?;
            match spec {
                Some(spec) => {
                    let p = crate::set_default_policy(&dir, &spec)?;
                    println!("default policy: {p}");
                }
                None => println!("{}", crate::default_policy(&dir)?),
            }
            Ok(0)
        }
        Command::Forget {
            client,
            dry_run,
            json,
        } => {
            let repo = crate::open_for_admin(&dir)?;
            let reports = crate::forget(&repo, &dir, client.as_deref(), dry_run)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
                return Ok(0);
            }
            let verb = if dry_run { "would forget" } else { "forgot" };
            for r in &reports {
                println!(
                    "{}: {verb} {} of {} versions (policy {}), {} kept points",
                    r.client, r.versions_forgotten, r.versions_before, r.policy, r.points_after
                );
            }
            Ok(0)
        }
        Command::Prune {
            dry_run,
            grace,
            json,
        } => {
            let repo = crate::open_for_admin(&dir)?;
            let r = crate::prune(&repo, dry_run, grace)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(0);
            }
            let h = indicatif::HumanBytes;
            let would = if dry_run { "would " } else { "" };
            println!(
                "{} packs, {} ({} unused); {would}delete {}, repack {}, condemn {} (deleted after the grace time), revive {}; {would}free {}",
                r.packs,
                h(r.pack_bytes),
                h(r.unused_bytes),
                r.packs_deleted,
                r.packs_repacked,
                r.packs_condemned,
                r.packs_revived,
                h(r.bytes_freed)
            );
            Ok(0)
        }
        Command::Verify { quick, json } => {
            dir.check()?;
            crate::report::verify(&dir.repo(), quick, json)
        }
        Command::Repair { json } => {
            dir.check()?;
            crate::report::repair(&dir.repo(), json)
        }
        Command::Fingerprint => {
            dir.check()?;
            println!("{}", crate::fingerprint(&dir)?);
            Ok(0)
        }
        Command::Client(ClientCommand::Add {
            name,
            reuse,
            expires,
        }) => {
            dir.check()?;
            let (token, until) = crate::add_client(&dir, &name, reuse, expires)?;
            let fp = crate::fingerprint(&dir)?;
            // The token once, on stdout only (a script captures it there);
            // the instructions on stderr do not repeat it, so it lands in
            // no log of stderr and in no command line.
            println!("{token}");
            eprintln!(
                "one-time enrollment token for {name} (above; works once, until {until}). \
                 On that machine run\n  \
                 rewind enroll https://SERVER:PORT --name {name} --fingerprint {fp}\n\
                 and paste the token when asked (or --token-file FILE)"
            );
            Ok(0)
        }
        Command::Client(ClientCommand::List { json }) => {
            dir.check()?;
            let c = crate::load_clients(&dir)?;
            let default = crate::default_policy(&dir)?;
            let policy = |r: &ClientRecord| r.policy.clone().unwrap_or_else(|| default.clone());
            let state = |r: &ClientRecord| {
                if r.removed.is_some() {
                    "removed"
                } else if r.enrolled.is_some() {
                    "enrolled"
                } else if r.token_expires.as_deref().is_some_and(crate::is_past) {
                    "expired"
                } else {
                    "pending"
                }
            };
            if json {
                let rows: Vec<_> = c
                    .clients
                    .iter()
                    .map(|r| {
                        json!({
                            "name": r.name,
                            "state": state(r),
                            "added": r.added,
                            "token_expires": r.token_expires,
                            "enrolled": r.enrolled,
                            "removed": r.removed,
                            "policy": policy(r),
                            "policy_is_default": r.policy.is_none(),
                            "dump_policies": r.dump_policies,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if c.clients.is_empty() {
                println!("no clients (add one with `rewind-server client add NAME`)");
            } else {
                println!("{:<24} {:<9} {:<32} POLICY", "NAME", "STATE", "SINCE");
                for r in &c.clients {
                    let since = r
                        .removed
                        .as_ref()
                        .or(r.enrolled.as_ref())
                        .unwrap_or(&r.added);
                    let mut p = match &r.policy {
                        Some(p) => p.clone(),
                        None => format!("{} (default)", policy(r)),
                    };
                    for (job, spec) in &r.dump_policies {
                        p.push_str(&format!("; dump {job}: {spec}"));
                    }
                    println!("{:<24} {:<9} {:<32} {p}", r.name, state(r), since);
                }
            }
            Ok(0)
        }
        Command::Docs(_) => unreachable!("handled above"),
        Command::Client(ClientCommand::Policy { name, spec, dump }) => {
            dir.check()?;
            match dump {
                Some(job) => {
                    let p = crate::set_dump_policy(&dir, &name, &job, &spec)?;
                    println!("{name}: dump {job}: policy {p}");
                }
                None => {
                    let p = crate::set_client_policy(&dir, &name, &spec)?;
                    println!("{name}: policy {p}");
                }
            }
            Ok(0)
        }
        Command::Client(ClientCommand::Remove { name }) => {
            dir.check()?;
            crate::remove_client(&dir, &name)?;
            println!("removed client {name}: its key no longer works; its versions stay stored");
            Ok(0)
        }
    }
}
