//! The state every handler shares, and running repository work off the
//! async workers.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use rewind_core::{ChunkerParams, Repository};

use crate::auth::Auth;
use crate::catalog::{CatalogCache, History};
use crate::common::ApiError;
use crate::jobs::Jobs;
use crate::listing::TreeCache;

/// What the agent hands the UI.
pub struct UiContext {
    /// The repository, local or a server's (through the same trait).
    pub repo: Arc<dyn Repository>,
    /// The client name versions are recorded under.
    pub client: String,
    /// Every version a page at a time (timeline and search).
    pub history: Arc<dyn History>,
    /// The protected folders (the top of the browser).
    pub roots: Vec<PathBuf>,
    /// The repository's chunker bounds (restore reuses local chunks).
    pub chunker: Option<ChunkerParams>,
    /// The agent's live status (the `status` of its control socket).
    pub status: Box<dyn Fn() -> serde_json::Value + Send + Sync>,
}

/// The state every handler shares.
pub(crate) struct Ctx {
    pub repo: Arc<dyn Repository>,
    pub client: String,
    pub roots: Vec<PathBuf>,
    pub chunker: Option<ChunkerParams>,
    pub status: Box<dyn Fn() -> serde_json::Value + Send + Sync>,
    pub catalog: CatalogCache,
    pub auth: Auth,
    /// `Host` header values we answer to.
    pub hosts: Vec<String>,
    /// `Origin` header values state-changing requests may carry.
    pub origins: Vec<String>,
    pub trees: TreeCache,
    pub jobs: Mutex<Jobs>,
}

/// Run repository work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    ctx: &Arc<Ctx>,
    f: impl FnOnce(&Ctx) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || f(&ctx))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}
