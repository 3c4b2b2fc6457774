//! `rewind service …`: its arguments; the work is `rewind_service`'s.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

/// `rewind service …`
#[derive(Subcommand)]
pub(crate) enum ServiceCommand {
    /// Install and start the agent as a service of this user (running it
    /// again is harmless: it says what it did)
    Install {
        /// The agent's config file [default: the agent's default]
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Keep it running without a login session, from boot (Linux:
        /// `loginctl enable-linger USER`)
        #[arg(long)]
        linger: bool,
        /// Show what would be written and run, and do nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Whether the service is installed and enabled, and whether the agent
    /// answers
    Status {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Stop and disable the service and remove what `install` wrote
    Uninstall {
        /// Show what would be removed and run, and do nothing
        #[arg(long)]
        dry_run: bool,
    },
}

/// Run a `rewind service` subcommand.
pub(crate) fn run(cmd: ServiceCommand) -> Result<i32> {
    match cmd {
        ServiceCommand::Install {
            config,
            linger,
            dry_run,
        } => rewind_service::install(config.as_deref(), linger, dry_run)?,
        ServiceCommand::Uninstall { dry_run } => rewind_service::uninstall(dry_run)?,
        ServiceCommand::Status { json } => rewind_service::status(json)?,
    }
    Ok(0)
}
