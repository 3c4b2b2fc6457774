//! `rewind-server`: the backup server (see the rewind-server crate).

fn main() -> std::process::ExitCode {
    rewind_server::main()
}
