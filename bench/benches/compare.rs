//! `cargo bench -p rewind-bench`: rewind against restic and borg, see the
//! crate documentation of `rewind_bench` for the parts and the environment
//! variables that select them.

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench` (and maybe a filter); parts are chosen
    // by REWIND_BENCH instead.
    rewind_bench::run_from_env()
}
