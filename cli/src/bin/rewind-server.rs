//! `rewind-server`: the backup server (see the rewind-server crate). Its
//! `verify` and `repair` are the same code as `rewind verify` / `repair`.

fn main() -> std::process::ExitCode {
    rewind_server::main(rewind_server::Admin {
        verify: rewind_cli::verify,
        repair: rewind_cli::repair,
    })
}
