//! Named failpoints at the durability steps, for crash and fault tests.
//!
//! Compiled only with the `failpoints` feature (test builds turn it on;
//! release builds do not have it, and then [`hit`] is an empty inline
//! function). Two ways to arm one:
//! - in-process tests: [`arm`] makes the named step fail with an I/O error
//!   on the calling thread;
//! - whole processes (end-to-end tests of the real binary): the environment
//!   variable `REWIND_FAILPOINTS="name=action[@N][,…]"`, where `action` is
//!   `error` (the step fails with an I/O error) or `crash` (the process
//!   aborts on the spot, as a power cut at that step would stop it), and
//!   `@N` acts on the N-th time the step is reached only (default: every
//!   time for `error`, the first time for `crash`).
//!
//! Names: `pack.write`, `pack.fsync`, `pack.rename`, `pack.dir_fsync`,
//! `idx.write`, `idx.fsync`, `idx.rename`, `idx.dir_fsync` (and `config.*`
//! likewise), `journal.spool_sync`, `journal.flush`, `cursor.advance`,
//! `restore.write`, `restore.rename`, `private.tighten`, `retention.write`,
//! `retention.fsync`, `retention.rename`, `retention.dir_fsync`,
//! `prune.repack`, `prune.switch`, `prune.intent`, `prune.delete_pack`,
//! `prune.delete_idx`, `prune.done`.

/// Reach the named step: `Err` when a test armed it to fail; with the
/// `crash` action the process aborts here.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &'static str) -> std::io::Result<()> {
    Ok(())
}

#[cfg(feature = "failpoints")]
pub use armed::{arm, hit};

#[cfg(feature = "failpoints")]
mod armed {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::io;
    use std::sync::{Mutex, OnceLock};

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Action {
        Error,
        Crash,
    }

    struct Spec {
        action: Action,
        /// Act on this hit only (1-based); `None`: every hit.
        nth: Option<u64>,
    }

    thread_local! {
        static ARMED: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
    }

    fn from_env() -> &'static HashMap<String, Spec> {
        static SPECS: OnceLock<HashMap<String, Spec>> = OnceLock::new();
        SPECS.get_or_init(|| {
            let mut out = HashMap::new();
            let Ok(v) = std::env::var("REWIND_FAILPOINTS") else {
                return out;
            };
            for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let Some((name, act)) = item.split_once('=') else {
                    eprintln!("REWIND_FAILPOINTS: ignoring {item:?} (want name=action)");
                    continue;
                };
                let (act, nth) = match act.split_once('@') {
                    Some((a, n)) => (a, n.parse().ok()),
                    None => (act, None),
                };
                let action = match act {
                    "error" => Action::Error,
                    "crash" => Action::Crash,
                    _ => {
                        eprintln!("REWIND_FAILPOINTS: unknown action {act:?} for {name}");
                        continue;
                    }
                };
                let nth = nth.or((action == Action::Crash).then_some(1));
                out.insert(name.to_string(), Spec { action, nth });
            }
            out
        })
    }

    /// Reach the named step (see the module documentation).
    pub fn hit(name: &'static str) -> io::Result<()> {
        if ARMED.with(|a| a.borrow().contains(&name)) {
            return Err(io::Error::other(format!("injected failure at {name}")));
        }
        let specs = from_env();
        let Some(spec) = specs.get(name) else {
            return Ok(());
        };
        static HITS: Mutex<Option<HashMap<&'static str, u64>>> = Mutex::new(None);
        let n = {
            let mut h = HITS.lock().unwrap_or_else(|p| p.into_inner());
            let c = h.get_or_insert_with(HashMap::new).entry(name).or_insert(0);
            *c += 1;
            *c
        };
        if spec.nth.is_some_and(|want| want != n) {
            return Ok(());
        }
        match spec.action {
            Action::Error => Err(io::Error::other(format!("injected failure at {name}"))),
            Action::Crash => {
                eprintln!("failpoint {name}: crashing (hit {n})");
                std::process::abort();
            }
        }
    }

    /// Arm (or disarm) `name` on the calling thread: it fails with an I/O
    /// error until disarmed.
    pub fn arm(name: &'static str, on: bool) {
        ARMED.with(|a| {
            let mut a = a.borrow_mut();
            a.retain(|n| *n != name);
            if on {
                a.push(name);
            }
        });
    }
}
