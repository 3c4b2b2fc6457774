//! The memory allocator of `rewind`: jemalloc, and how a resident
//! process gives freed memory back (docs/decisions.md "Agent memory
//! (issue 19)").
//!
//! With glibc's malloc, the agent watching a 52k-file tree held about as
//! much freed memory in its arenas as live memory after its first pass
//! (RSS 210 MiB for 107 MiB live; `malloc_trim` would need `unsafe`, which
//! the workspace forbids). jemalloc hands freed pages back to the system on
//! its own; mimalloc, tried too, kept growing while idle.
//!
//! Its build-time setting (`.cargo/config.toml`, for every command): no
//! oversize arena. A resident process also runs without per-thread caches,
//! which idle threads kept for good ([`without_thread_caches`];
//! docs/decisions.md "Agent memory (issue 19), next step").

use std::ffi::OsString;

use tikv_jemalloc_ctl::{Access, AsName};

/// The environment variable jemalloc reads its run-time settings from (the
/// `_rjem_` prefix of tikv-jemalloc-sys's symbols, upper-cased).
const CONF_VAR: &str = "_RJEM_MALLOC_CONF";

/// What a resident process runs with: no per-thread caches.
const RESIDENT_CONF: &str = "tcache:false";

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long freed pages stay in the process before they are returned: a
/// second, not jemalloc's default of ten, so an agent back to idle after a
/// burst is small again at once. Ten seconds was tried (docs/decisions.md
/// "jemalloc and bursts"): fewer page faults in a first pass through a
/// server, but the busy-file test on btrfs got fewer versions while busy
/// in three of seven runs, for a reason not found; one second it is.
const DIRTY_DECAY_MS: isize = 1000;

/// Settings for `agent` and `watch` without `--once` (a backup run exits
/// when done, so it keeps jemalloc's defaults: its pages stay for the next
/// request body instead of being faulted in again), called before any
/// other thread starts:
/// a background thread purges freed pages even while the agent allocates
/// nothing (jemalloc otherwise purges only inside its own calls), after
/// [`DIRTY_DECAY_MS`]. Failing to set either only leaves more memory
/// resident.
pub(crate) fn for_resident_process() {
    // Arena 0 exists already; the others are made as threads first allocate.
    let _ = b"arena.0.dirty_decay_ms\0".name().write(DIRTY_DECAY_MS);
    let _ = b"arenas.dirty_decay_ms\0".name().write(DIRTY_DECAY_MS);
    // Pages past their decay are unmapped at once, not first marked
    // MADV_FREE ("muzzy"): those would count in RSS until the kernel runs
    // short of memory.
    let _ = b"arena.0.muzzy_decay_ms\0".name().write(0isize);
    let _ = b"arenas.muzzy_decay_ms\0".name().write(0isize);
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
}

/// Make a resident process (`agent`, `watch` without `--once`) run without
/// jemalloc's per-thread caches: each thread keeps freed small objects in a
/// cache that only its own next allocations trim, so the agent's threads
/// that go idle (capture workers, the uploader, the flusher, sled's) keep
/// theirs, and the pages under them, for good. jemalloc reads that setting
/// once, before `main`, from [`CONF_VAR`]; so this executes the same binary
/// again with the same arguments and that variable set (same pid: a
/// service manager sees no change), before any thread starts. Every other
/// command keeps the caches: without them a first pass to an S3 store took
/// about a fifth more CPU, a restore from one about a tenth more
/// (docs/decisions.md "Thread caches only where they pay").
///
/// Does nothing when the variable is already set (by this or by the user),
/// and carries on with the caches if the executable cannot be run again.
#[cfg(unix)]
pub(crate) fn without_thread_caches() {
    use std::os::unix::process::CommandExt;
    let Some(conf) = resident_conf(std::env::var_os(CONF_VAR)) else {
        return;
    };
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    // Returns only if it failed: then this process goes on as it is.
    let _ = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(CONF_VAR, conf)
        .exec();
}

#[cfg(not(unix))]
pub(crate) fn without_thread_caches() {}

/// The settings to start again with, given what [`CONF_VAR`] holds now:
/// none when it is set (whoever set it decided).
fn resident_conf(now: Option<OsString>) -> Option<OsString> {
    match now {
        Some(_) => None,
        None => Some(RESIDENT_CONF.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether this process's threads keep caches (jemalloc's `opt.tcache`).
    fn thread_caches() -> Option<bool> {
        b"opt.tcache\0".name().read().ok()
    }

    #[test]
    fn a_resident_process_starts_again_without_caches_once() {
        assert_eq!(resident_conf(None), Some(OsString::from("tcache:false")));
        // Set by the first start, or by the user: left alone, no loop.
        assert_eq!(resident_conf(Some("tcache:false".into())), None);
        assert_eq!(resident_conf(Some("narenas:1".into())), None);
    }

    #[test]
    fn this_test_process_keeps_thread_caches() {
        // The build-time settings leave them on (only the agent turns
        // them off, at start).
        if std::env::var_os(CONF_VAR).is_none() {
            assert_eq!(thread_caches(), Some(true));
        }
    }
}
