//! `rewind-server`: the backup server's binary. Its command line is the
//! `rewind-server` crate's ([`rewind_server::cli`]); it is built in this
//! package, beside `rewind`, so that the end-to-end tests run both.

fn main() -> std::process::ExitCode {
    rewind_server::cli::main()
}
