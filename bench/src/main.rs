//! `rewind-bench`: the benchmark harness as a program.
//!
//! - `rewind-bench` (no arguments): run the benchmarks configured by the
//!   environment, exactly as `cargo bench -p rewind-bench` does;
//! - `rewind-bench gen DIR [SCALE [SEED]]`: write the ingest tree to DIR
//!   (which must not exist), to try other tools on the same data.

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => rewind_bench::run_from_env(),
        Some("gen") => {
            let dir = args
                .get(1)
                .context("usage: rewind-bench gen DIR [SCALE [SEED]]")?;
            let scale: f64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1.0);
            let seed: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(42);
            if std::path::Path::new(dir).exists() {
                bail!("{dir} exists");
            }
            let threads = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2);
            let s = rewind_bench::datagen::generate_tree(dir.as_ref(), seed, scale, threads)?;
            println!("{s:#?}");
            Ok(())
        }
        Some(other) => {
            bail!("unknown command {other:?}; usage: rewind-bench [gen DIR [SCALE [SEED]]]")
        }
    }
}
