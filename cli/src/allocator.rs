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
//! Its build-time settings (`.cargo/config.toml`, for every command): no
//! oversize arena, and no per-thread caches, which idle threads kept for
//! good (docs/decisions.md "Agent memory (issue 19), next step").

use tikv_jemalloc_ctl::{Access, AsName};

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
