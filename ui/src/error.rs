//! The crate's error.

use std::net::SocketAddr;

/// What can stop the UI from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UiError {
    /// The address cannot be listened on (in use, not ours).
    #[error("web UI: cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server's threads cannot be started.
    #[error("web UI: cannot start its threads: {0}")]
    Runtime(#[source] std::io::Error),
}
