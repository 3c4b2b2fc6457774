//! The priority of the agent's background work (the first pass, its
//! forgets and prunes): below interactive work and below capture.

/// The nice value of background threads: well below interactive
/// work, above `nice 19` batch jobs. On Linux, I/O priority follows the nice
/// value under the BFQ and CFQ schedulers unless set on its own (best
/// effort 6 for nice 10), so this lowers both (docs/decisions.md,
/// "Background first pass").
const FIRST_PASS_NICE: i32 = 10;

/// Lower the calling thread to [`FIRST_PASS_NICE`]. Linux keeps a nice
/// value per thread; elsewhere this does nothing (macOS: not done yet, see
/// docs/platforms.md). Threads this one starts would inherit it, so the
/// pipeline starts its normal-priority workers from the main thread.
pub(crate) fn background() {
    #[cfg(target_os = "linux")]
    if let Err(e) =
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), FIRST_PASS_NICE)
    {
        tracing::debug!("cannot lower a background thread's priority: {e}");
    }
}
