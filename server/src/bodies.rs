//! How much of the server's memory request bodies may hold at once.
//!
//! An authenticated request's body is read whole into memory before its
//! handler runs (up to [`MAX_BODY`], 80 MiB). Without a bound, one client
//! opening many HTTP/2 streams, or many clients at once, could make the
//! server hold any amount. Each body is charged by its `Content-Length`
//! (a body without one, by [`MAX_BODY`]) before a byte of it is read, and
//! the charge is given back when its handler is done.
//!
//! A request that does not fit is turned away at once with 503 and
//! `Retry-After`, never made to wait: a request waiting with its body
//! unread holds HTTP/2 flow-control window that the requests ahead of it on
//! the same connection need to finish (a wait here deadlocked 20 clients
//! once). Clients ask again as `Retry-After` says (`rewind-remote`), so
//! nothing is lost, only delayed. A body larger than the whole budget is
//! charged the whole budget: it runs alone, but it runs.

use std::sync::Arc;

use rewind_core::wire::MAX_BODY;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bodies are charged in units of this many bytes.
const UNIT: usize = 64 << 10;

/// What bodies may hold by default: room for 40 clients' four 8 MiB
/// uploads in flight at once, and about a seventh of a small server's
/// 8 GiB.
pub const DEFAULT_BODY_MEMORY: usize = 1 << 30;

/// The budget of request bodies in memory.
pub struct BodyBudget {
    units: Arc<Semaphore>,
    total: u32,
}

/// A body's charge, given back when dropped.
pub struct Charge(#[allow(dead_code)] OwnedSemaphorePermit);

impl BodyBudget {
    /// A budget of `bytes` (at least one unit).
    pub fn new(bytes: usize) -> BodyBudget {
        let total = bytes.div_ceil(UNIT).clamp(1, u32::MAX as usize) as u32;
        BodyBudget {
            units: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }

    /// Charge a body of `len` bytes (`None`: unknown, so [`MAX_BODY`]), or
    /// `None` when the budget cannot take it now.
    pub fn charge(&self, len: Option<usize>) -> Option<Charge> {
        let bytes = len.unwrap_or(MAX_BODY).min(MAX_BODY);
        let units = (bytes.div_ceil(UNIT) as u32).clamp(1, self.total);
        self.units
            .clone()
            .try_acquire_many_owned(units)
            .ok()
            .map(Charge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_charged_until_dropped_and_refused_beyond_the_budget() {
        let b = BodyBudget::new(20 << 20);
        let first = b.charge(Some(12 << 20)).expect("fits");
        assert!(b.charge(Some(12 << 20)).is_none(), "20 MiB cannot hold 24");
        let small = b.charge(Some(8 << 20)).expect("8 more fit");
        assert!(b.charge(Some(1)).is_none(), "the budget is spent");
        drop(first);
        assert!(b.charge(Some(12 << 20)).is_some(), "given back on drop");
        drop(small);
    }

    #[test]
    fn an_unknown_length_counts_as_the_largest_body_and_a_huge_one_runs_alone() {
        let b = BodyBudget::new(MAX_BODY + (1 << 20));
        let unknown = b.charge(None).expect("fits");
        assert!(b.charge(Some(2 << 20)).is_none(), "80 of 81 MiB are taken");
        drop(unknown);
        // A budget smaller than a body: the body takes all of it.
        let tiny = BodyBudget::new(1 << 20);
        let alone = tiny.charge(Some(50 << 20)).expect("runs alone");
        assert!(tiny.charge(Some(1)).is_none());
        drop(alone);
        assert!(tiny.charge(Some(1)).is_some());
    }
}
