//! `cargo bench -p rewind-bench`: rewind against restic and borg, see the
//! crate documentation of `rewind_bench` for the parts and the environment
//! variables that select them.

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this
    // target too, without it, and must not start a half-hour benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("rewind-bench: not under `cargo bench`; nothing to do");
        return Ok(());
    }
    // Parts are chosen by REWIND_BENCH (a name filter is ignored).
    rewind_bench::run_from_env()
}
