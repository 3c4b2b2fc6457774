//! The capture work queue: one entry per path, never two workers on the
//! same path at once (so versions of one path keep their order), a path
//! changed again while being captured is queued again afterwards, and
//! captures that raced a writer are retried after a delay. Each entry
//! carries what is known about its change ([`Change`]); two claims about
//! one path merge to the stronger.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rewind_core::Timestamp;

use crate::capture::Change;

/// When a change was first observed, and what is known about it.
type Claim = (Timestamp, Change);

fn merge(a: Claim, b: Claim) -> Claim {
    (a.0.min(b.0), a.1.merge(b.1))
}

/// Queue slots kept when the queue runs empty: room for an ordinary burst
/// of saves without growing again.
const SMALL_QUEUE: usize = 256;

/// How long a worker waits with nothing to do before [`Scheduler::next_or_rest`]
/// lets it give back what it keeps between captures: longer than a few
/// busy intervals (2 s by default), so a busy file's captures keep their
/// buffers, and short enough that an idle agent holds none of them.
pub(crate) const REST_AFTER: Duration = Duration::from_secs(10);

#[derive(Default)]
struct State {
    queue: VecDeque<Vec<u8>>,
    /// Queued paths and the time their change was first observed.
    queued: HashMap<Vec<u8>, Claim>,
    /// Paths being captured, and the observation time of a change that
    /// arrived meanwhile.
    running: HashMap<Vec<u8>, Option<Claim>>,
    delayed: Vec<(Instant, Vec<u8>, Claim)>,
    stop: bool,
    /// The first pass is over: its workers take no more work.
    first_pass_over: bool,
}

impl State {
    fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.running.is_empty() && self.delayed.is_empty()
    }
}

/// See the module doc.
#[derive(Default)]
pub struct Scheduler {
    /// Which paths are queued together as one group.
    pub(crate) groups: crate::group::GroupRules,
    state: Mutex<State>,
    /// Work arrived (workers wait on it).
    cv: Condvar,
    /// The queue went idle or stopped (`wait_idle` waits on it): a
    /// condition of its own, so a finished capture does not wake the
    /// waiter once per file.
    idle_cv: Condvar,
}

impl Scheduler {
    /// A scheduler that queues the members of `groups` as one.
    pub fn with_groups(groups: crate::group::GroupRules) -> Scheduler {
        Scheduler {
            groups,
            ..Scheduler::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A change of `path` first observed at `at`. A member of a group is
    /// queued as its group (`GroupRules::key_of`): one capture takes the
    /// whole group.
    pub fn submit(&self, path: Vec<u8>, at: Timestamp, change: Change) {
        let path = match self.groups.key_of(&path) {
            std::borrow::Cow::Borrowed(k) if k.len() == path.len() => path,
            k => k.into_owned(),
        };
        let at = (at, change);
        let mut s = self.lock();
        if s.stop {
            return;
        }
        if let Some(again) = s.running.get_mut(&path) {
            *again = Some(again.map_or(at, |a| merge(a, at)));
            return;
        }
        if let Some(t) = s.queued.get_mut(&path) {
            *t = merge(*t, at);
            return;
        }
        s.queued.insert(path.clone(), at);
        s.queue.push_back(path);
        drop(s);
        self.cv.notify_one();
    }

    /// Capture `path` again after `delay`, keeping its observation time.
    pub fn retry_later(&self, path: Vec<u8>, at: Timestamp, change: Change, delay: Duration) {
        let at = (at, change);
        let mut s = self.lock();
        s.delayed.push((Instant::now() + delay, path, at));
    }

    /// [`Scheduler::next_or_rest`], doing nothing at rest.
    #[cfg(test)]
    pub fn next(&self, first_pass_only: bool) -> Option<(Vec<u8>, Timestamp, Change)> {
        self.next_or_rest(first_pass_only, REST_AFTER, &mut || {})
    }

    /// The next path to capture; `None` once stopped, or for a worker of
    /// the first pass (`first_pass_only`) once [`Scheduler::end_first_pass`]
    /// was called. After waiting `rest_after` with nothing to do, it calls
    /// `rest` once (with the lock released) and waits on.
    pub fn next_or_rest(
        &self,
        first_pass_only: bool,
        rest_after: Duration,
        rest: &mut dyn FnMut(),
    ) -> Option<(Vec<u8>, Timestamp, Change)> {
        let mut s = self.lock();
        let mut empty_since: Option<Instant> = None;
        let mut rested = false;
        loop {
            if s.stop || (first_pass_only && s.first_pass_over) {
                return None;
            }
            let now = Instant::now();
            let mut i = 0;
            while i < s.delayed.len() {
                if s.delayed[i].0 <= now {
                    let (_, p, t) = s.delayed.swap_remove(i);
                    if let Some(again) = s.running.get_mut(&p) {
                        *again = Some(again.map_or(t, |a| merge(a, t)));
                    } else if let Some(q) = s.queued.get_mut(&p) {
                        *q = merge(*q, t);
                    } else {
                        s.queued.insert(p.clone(), t);
                        s.queue.push_back(p);
                    }
                } else {
                    i += 1;
                }
            }
            while let Some(p) = s.queue.pop_front() {
                if s.running.contains_key(&p) {
                    // Changed again while running: wait for that capture.
                    let t = s.queued.remove(&p).expect("queued");
                    let again = s.running.get_mut(&p).expect("running");
                    *again = Some(again.map_or(t, |a| merge(a, t)));
                    continue;
                }
                let (t, change) = s.queued.remove(&p).expect("queued");
                s.running.insert(p.clone(), None);
                return Some((p, t, change));
            }
            // The queue is empty: a first pass or a rescan grew it to the
            // size of the tree, and the room would stay (1.7 MiB after 20k
            // files, docs/decisions.md "Agent memory (issue 19)"). Emptying
            // a large map is rare, so giving it back costs little.
            s.queue.shrink_to(SMALL_QUEUE);
            s.queued.shrink_to(SMALL_QUEUE);
            let idle = now.saturating_duration_since(*empty_since.get_or_insert(now));
            if !rested && idle >= rest_after {
                rested = true;
                drop(s);
                rest();
                s = self.lock();
                continue;
            }
            // Sleep until work arrives, the next delayed entry is due, or
            // it is time to rest.
            let mut wait = s
                .delayed
                .iter()
                .map(|d| d.0.saturating_duration_since(now))
                .min()
                .unwrap_or(Duration::from_millis(500));
            if !rested {
                wait = wait.min(rest_after - idle);
            }
            s = self
                .cv
                .wait_timeout(s, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The capture of `path` finished.
    pub fn done(&self, path: &[u8]) {
        let mut s = self.lock();
        if let Some(Some(again)) = s.running.remove(path) {
            s.queued.insert(path.to_vec(), again);
            s.queue.push_back(path.to_vec());
            drop(s);
            self.cv.notify_one();
        } else if s.is_idle() {
            drop(s);
            self.idle_cv.notify_all();
        }
    }

    /// Nothing queued, running or delayed.
    #[cfg(test)]
    pub fn is_idle(&self) -> bool {
        self.lock().is_idle()
    }

    /// Paths queued or running.
    pub fn pending(&self) -> usize {
        let s = self.lock();
        s.queued.len() + s.running.len() + s.delayed.len()
    }

    /// Wait until idle (true), or until `timeout` passes or the scheduler
    /// is stopped (false).
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        loop {
            if s.is_idle() {
                return true;
            }
            if s.stop {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = self
                .idle_cv
                .wait_timeout(s, (deadline - now).min(Duration::from_millis(100)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The first pass is over: its workers return from `next` (those
    /// waiting at once), later work goes to the other workers.
    pub fn end_first_pass(&self) {
        self.lock().first_pass_over = true;
        self.cv.notify_all();
    }

    /// Stop handing out work; workers return from `next`.
    pub fn stop(&self) {
        self.lock().stop = true;
        self.cv.notify_all();
        self.idle_cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_per_path_and_requeue() {
        let s = Scheduler::default();
        s.submit(b"/a".to_vec(), Timestamp(5), Change::Metadata);
        s.submit(b"/a".to_vec(), Timestamp(3), Change::Scan);
        s.submit(b"/b".to_vec(), Timestamp(9), Change::Content);
        let (p, t, c) = s.next(false).unwrap();
        assert_eq!(
            (p.as_slice(), t, c),
            (&b"/a"[..], Timestamp(3), Change::Scan)
        );
        s.submit(b"/a".to_vec(), Timestamp(7), Change::Metadata);
        let (p, _, _) = s.next(false).unwrap();
        assert_eq!(p, b"/b");
        s.done(b"/b");
        s.done(b"/a");
        let (p, t, c) = s.next(false).unwrap();
        assert_eq!(
            (p.as_slice(), t, c),
            (&b"/a"[..], Timestamp(7), Change::Metadata)
        );
        s.done(b"/a");
        assert!(s.is_idle());
    }

    #[test]
    fn a_worker_rests_once_after_waiting_and_then_takes_work() {
        let s = std::sync::Arc::new(Scheduler::default());
        let rested = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let started = Instant::now();
        let worker = {
            let (s, rested) = (s.clone(), rested.clone());
            std::thread::spawn(move || {
                let mut at = None;
                let got = s.next_or_rest(false, Duration::from_millis(100), &mut || {
                    at = Some(started.elapsed());
                    rested.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                });
                (got, at)
            })
        };
        // Work that is only due later does not count as work yet.
        s.retry_later(
            b"/later".to_vec(),
            Timestamp(1),
            Change::Content,
            Duration::from_millis(400),
        );
        let (got, at) = worker.join().unwrap();
        assert_eq!(got.unwrap().0, b"/later");
        let at = at.expect("rested");
        assert!(at >= Duration::from_millis(100), "{at:?}");
        assert!(started.elapsed() >= Duration::from_millis(400));
        assert_eq!(rested.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Work waiting already: no rest.
        s.done(b"/later");
        s.submit(b"/now".to_vec(), Timestamp(2), Change::Content);
        let mut called = false;
        let got = s.next_or_rest(false, Duration::ZERO, &mut || called = true);
        assert_eq!(got.unwrap().0, b"/now");
        assert!(!called);
    }

    #[test]
    fn delayed_retry_comes_back() {
        let s = Scheduler::default();
        s.retry_later(
            b"/x".to_vec(),
            Timestamp(1),
            Change::Content,
            Duration::from_millis(20),
        );
        assert!(!s.is_idle());
        let (p, t, c) = s.next(false).unwrap();
        assert_eq!(
            (p.as_slice(), t, c),
            (&b"/x"[..], Timestamp(1), Change::Content)
        );
    }

    #[test]
    fn first_pass_workers_end_and_the_others_take_the_rest() {
        let s = std::sync::Arc::new(Scheduler::default());
        s.submit(b"/a".to_vec(), Timestamp(1), Change::Scan);
        let (p, _, _) = s.next(true).unwrap();
        s.done(&p);
        // One first-pass worker waits for work when the pass ends.
        let waiting = {
            let s = s.clone();
            std::thread::spawn(move || s.next(true))
        };
        std::thread::sleep(Duration::from_millis(50));
        s.end_first_pass();
        assert!(waiting.join().unwrap().is_none());
        s.submit(b"/b".to_vec(), Timestamp(2), Change::Content);
        assert!(s.next(true).is_none());
        assert_eq!(s.next(false).unwrap().0, b"/b");
    }
}
