//! rewind-ui: the local web UI, served by the agent on 127.0.0.1.
//!
//! Pages: an overview (the facts of `rewind status`, live), a timeline of
//! activity (versions per minute, hour or day, dump runs marked) that
//! picks the moment to browse, the tree at that moment, a file's versions
//! with previews, diffs and downloads, restores of several paths at once
//! with a confirmation and progress, and a search of all history, deleted
//! paths included. Everything goes through [`rewind_core::Repository`]
//! (and [`History`] for the catalog), so a machine that protects to a
//! server sees its own data the same way.
//!
//! How a browser gets in:
//! 1. `rewind ui` asks the running agent over its control socket for a
//!    one-time login URL ([`Ui::login_url`]): `http://127.0.0.1:PORT/auth?token=T`,
//!    good once, for two minutes.
//! 2. `GET /auth?token=T` spends the token and starts a session: a cookie
//!    (HttpOnly, SameSite=Strict) and a request key handed to the page in
//!    the URL fragment, which the page keeps in its origin's storage and
//!    sends as `X-Rewind-Key` on every API call.
//! 3. Every request is checked by one guard (`server.rs`) before any
//!    handler runs.
//!
//! Guarantees:
//! - Nothing listens but the address asked for (`127.0.0.1:0` unless
//!   `[ui] listen` says otherwise).
//! - A request whose `Host` is not the address served is refused (DNS
//!   rebinding).
//! - A request without a live session's cookie is refused; an API request
//!   also needs that session's key, so a cookie that a browser sent to
//!   another port of this host (cookies ignore ports) is not enough.
//! - A request that changes something must come from our own origin
//!   (`Origin`, `Sec-Fetch-Site`) with a JSON body; other sites' requests
//!   are refused (CSRF).
//! - Login tokens, session cookies, keys and download tickets are 32
//!   random bytes; only their hashes are kept, compared in constant time;
//!   a login token or a ticket works once.
//! - Stored content is never run in the UI's origin: only raster images
//!   are shown inline (sandboxed); everything else is text in the page or
//!   a download.
//! - The UI writes only through restores the user confirmed, never with
//!   deletions.
//!
//! Stopping: the listener closes and requests in flight finish; a restore
//! under way is cut off where it is, leaving complete files (see
//! `rewind-restore`). No state is kept on disk: sessions end with the
//! agent.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod api;
mod assets;
mod auth;
mod catalog;
mod common;
mod content;
mod ctx;
mod error;
mod jobs;
mod listing;
mod restores;
mod server;

pub use catalog::History;
pub use ctx::UiContext;
pub use error::UiError;
pub use server::Ui;
