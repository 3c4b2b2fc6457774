//! Work on a repository on an object store, a few requests at once: each
//! request there waits a round trip, so a list of them done one after the
//! other costs the list's length in round trips (docs/decisions.md,
//! "Opening a repository on an object store with a cold cache").

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// `f` of each of `items`, in order, on at most `threads` threads that
/// take the next item as they finish one. After an error no item is
/// started; the error of the lowest item that failed is returned.
pub(crate) fn try_map<T: Sync, R: Send, E: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E> {
    if threads <= 1 || items.len() <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let work = || {
        let mut mine = Vec::new();
        while !failed.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else { break };
            let r = f(item);
            if r.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            mine.push((i, r));
        }
        mine
    };
    let mut done: Vec<(usize, Result<R, E>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.min(items.len()))
            .map(|_| s.spawn(work))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_in_the_order_of_the_items() {
        let items: Vec<u32> = (0..100).collect();
        let got: Result<Vec<u32>, ()> = try_map(&items, 8, |&i| {
            std::thread::sleep(std::time::Duration::from_micros(u64::from(100 - i)));
            Ok(i * 2)
        });
        assert_eq!(got.unwrap(), (0..100).map(|i| i * 2).collect::<Vec<_>>());
    }

    #[test]
    fn an_error_stops_the_work_and_is_returned() {
        let items: Vec<u32> = (0..1000).collect();
        let started = AtomicUsize::new(0);
        let got = try_map(&items, 4, |&i| {
            started.fetch_add(1, Ordering::Relaxed);
            if i == 10 {
                Err(format!("item {i}"))
            } else {
                Ok(i)
            }
        });
        assert_eq!(got.unwrap_err(), "item 10");
        assert!(started.load(Ordering::Relaxed) < 1000);
    }

    #[test]
    fn one_thread_works_in_order_on_the_caller() {
        let items = [1, 2, 3];
        let got: Result<Vec<i32>, ()> = try_map(&items, 1, |&i| Ok(-i));
        assert_eq!(got.unwrap(), vec![-1, -2, -3]);
    }
}
