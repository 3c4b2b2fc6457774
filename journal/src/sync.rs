//! Locking that survives a panic elsewhere.
//!
//! Every change to the journal's shared state is made whole under one
//! lock, so a lock whose holder panicked still guards consistent state:
//! a capture thread that dies must not stop the flusher or the uploader.

use std::sync::{Mutex, MutexGuard};

/// Lock `m`, taking over a lock poisoned by a panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
