//! Restores started from the UI, by number, for the page to poll.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// A restore running or done.
pub(crate) struct Job {
    pub bytes_done: AtomicU64,
    pub bytes_total: u64,
    pub state: Mutex<JobState>,
}

#[derive(Default)]
pub(crate) struct JobState {
    pub running: bool,
    pub current: String,
    pub results: Vec<Value>,
    pub error: Option<String>,
}

/// The jobs by number.
#[derive(Default)]
pub(crate) struct Jobs {
    pub next: u64,
    pub jobs: HashMap<u64, Arc<Job>>,
}
