//! The one retry policy for writing to the repository, shared by the
//! uploader's draining of the log and the direct path.
//!
//! Invariants kept here:
//! - after a failed write to the repository, by either, neither writes
//!   again until the pause has passed (the direct path steps aside and the
//!   journal spools meanwhile); a success by either ends the pauses and
//!   starts the next one from the first step;
//! - pauses double from [`FIRST_PAUSE`] up to the longest one configured,
//!   each with ±25% jitter so many clients coming back at once do not
//!   retry in lockstep;
//! - a failure of the journal (not of the repository) paces the uploader
//!   by the same steps but does not make the direct path step aside.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The first pause after a failure: short enough that a passing hiccup
/// (a busy lock, a server restarting) costs little, and it doubles from
/// here for a repository that stays away.
const FIRST_PAUSE: Duration = Duration::from_millis(200);

pub(crate) struct Retry {
    longest: Duration,
    state: Mutex<State>,
    /// No failure since the last success (changed only under `state`):
    /// lets the direct path, asked for every chunk, skip the lock.
    clear: AtomicBool,
}

struct State {
    /// The next pause, before jitter.
    next: Duration,
    /// Writes to the repository wait until then.
    until: Option<Instant>,
}

impl Retry {
    /// Pauses doubling up to `longest`.
    pub(crate) fn new(longest: Duration) -> Retry {
        Retry {
            longest,
            state: Mutex::new(State {
                next: FIRST_PAUSE,
                until: None,
            }),
            clear: AtomicBool::new(true),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A write to the repository failed: writes pause for the returned
    /// time (the next step of the backoff).
    pub(crate) fn repository_failed(&self) -> Duration {
        self.step(true)
    }

    /// Reading or updating the journal failed: the uploader pauses for the
    /// returned time; the repository may still be written.
    pub(crate) fn journal_failed(&self) -> Duration {
        self.step(false)
    }

    fn step(&self, repository: bool) -> Duration {
        let mut s = self.state();
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        let pause = s.next.mul_f64(jitter);
        s.next = (s.next * 2).min(self.longest);
        if repository {
            s.until = Some(Instant::now() + pause);
        }
        self.clear.store(false, Ordering::Relaxed);
        pause
    }

    /// A write to the repository succeeded: the pauses end.
    pub(crate) fn succeeded(&self) {
        if self.clear.load(Ordering::Relaxed) {
            return;
        }
        let mut s = self.state();
        s.next = FIRST_PAUSE;
        s.until = None;
        self.clear.store(true, Ordering::Relaxed);
    }

    /// How much longer writes to the repository pause (`None`: write now).
    pub(crate) fn paused_for(&self) -> Option<Duration> {
        if self.clear.load(Ordering::Relaxed) {
            return None;
        }
        let until = self.state().until?;
        until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_pauses_writes_and_a_success_ends_the_pause() {
        let r = Retry::new(Duration::from_secs(60));
        assert_eq!(r.paused_for(), None);
        let p = r.repository_failed();
        assert!(p >= FIRST_PAUSE.mul_f64(0.75) && p <= FIRST_PAUSE.mul_f64(1.25));
        assert!(r.paused_for().is_some_and(|left| left <= p));
        r.succeeded();
        assert_eq!(r.paused_for(), None);
    }

    #[test]
    fn pauses_double_up_to_the_longest() {
        let r = Retry::new(Duration::from_secs(1));
        let pauses: Vec<Duration> = (0..6).map(|_| r.repository_failed()).collect();
        assert!(pauses[1] >= FIRST_PAUSE * 2 * 3 / 4, "{pauses:?}");
        assert!(
            pauses[5] <= Duration::from_secs(1).mul_f64(1.25),
            "{pauses:?}"
        );
        r.succeeded();
        assert!(r.repository_failed() <= FIRST_PAUSE.mul_f64(1.25));
    }

    #[test]
    fn a_journal_failure_paces_the_uploader_but_leaves_the_repository_writable() {
        let r = Retry::new(Duration::from_secs(60));
        assert!(r.journal_failed() >= FIRST_PAUSE.mul_f64(0.75));
        assert_eq!(r.paused_for(), None);
        assert!(r.repository_failed() >= (FIRST_PAUSE * 2).mul_f64(0.75));
    }

    #[test]
    fn a_pause_ends_by_itself() {
        let r = Retry::new(Duration::from_secs(60));
        let p = r.repository_failed();
        std::thread::sleep(p + Duration::from_millis(10));
        assert_eq!(r.paused_for(), None);
    }
}
