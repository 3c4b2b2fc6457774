//! rewind-agent: the daemon. It wires the sources (the file watcher and
//! scheduled database dumps) to capture, the journal and the uploader:
//!
//! ```text
//! watcher ──Changed──▶ scheduler ──▶ capture workers ─┐
//!         ──Rescan───▶ scanner (first pass, rescans) ─┤
//! dump jobs ──stdout──▶ stream capture ───────────────┴──▶ journal ──▶ uploader ──▶ repository
//! control socket ◀── `rewind status`, `rewind dump run NAME`, `rewind ui` from another terminal
//! web UI (rewind-ui, 127.0.0.1) ◀── a browser logged in through `rewind ui`
//! ```
//!
//! Files and dump streams go through one chunk loop (`capture::chunks`):
//! cut, hash, skip what the previous version or the repository already
//! has, encode (as a delta against the previous version's chunk where that
//! pays), queue for the journal. Capture reads the past only through the
//! narrow [`rewind_core::Bases`] handle (delta bases, a dump's previous
//! run), never the whole repository, and never writes to it: the uploader
//! is the one writer.
//!
//! Guarantees:
//! - A version is acknowledged (counted as captured) only once the journal
//!   has made it durable; a dump run is reported only then.
//! - A version never mixes two states of a file: the stat before and after
//!   the read must agree, else the capture is retried.
//! - The first pass and every rescan compare with the journal's last-known
//!   states, so a restart re-reads only what differs, and a journal that
//!   is lost or damaged is rebuilt from the repository's newest states.
//! - The control socket answers only the agent's own user (or root), and
//!   runs only operations it names: a dump runs only a job of the agent's
//!   own config, never a command line sent over the socket.
//! - The web UI listens on loopback only unless `[ui] listen` names
//!   another address, and lets in only a browser that `rewind ui` (asked
//!   by the agent's own user, over the control socket) logged in.
//! - Everything written under the state directory is owner-only
//!   (`rewind_core::private`).
//!
//! After a crash (SIGKILL, power loss): captures queued but not yet durable
//! are lost unacknowledged, and found again by the next start's first pass
//! (their paths differ from the last-known state); a dump cut short leaves
//! no version and runs again at its next schedule; the socket file is
//! removed and bound again at the next start.

#![forbid(unsafe_code)]

mod agent;
mod capture;
mod capture_group;
mod chunks;
mod config;
mod control;
mod dump_service;
mod enrollment;
mod follow;
mod group;
mod health;
mod keep;
mod links;
mod maintenance;
mod opening;
pub mod paths;
mod pipeline;
mod priority;
pub mod retention;
mod scheduler;
mod snapshot;
mod status;
mod stream;
mod target;

pub use agent::{BusyFile, Counters, ProblemRecord};
pub use config::{
    Config, DEFAULT_UI_LISTEN, Loaded, UiConfig, WatchConfig, default_path, load, parse,
};
pub use control::{query, run_dump_through_agent, ui_url};
pub use dump_service::{LastRun, one_line, report_json, run_dump_once};
pub use enrollment::{ServerSection, load_section, save_enrollment, write_private};
pub use follow::FollowSymlinks;
pub use health::{ActiveProblem, HealthSettings, Notifier};
pub use keep::restore_keep_rules;
pub use pipeline::{AgentConfig, AgentOptions, run};
pub use snapshot::SnapshotSettings;
pub use status::Status;
pub use stream::{STREAM_BACKLOG, StreamReport};
pub use target::{Access, Opened, Remote, Target, resolve};
