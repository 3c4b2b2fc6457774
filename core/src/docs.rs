//! `completions SHELL` and `man DIR`: the same two subcommands in `rewind`
//! and `rewind-server`, generated from their clap definitions, so the
//! completions and man pages can never disagree with `--help`.
//!
//! - A completion script goes to stdout whole, or not at all (it is built
//!   in memory first; a closed pipe is not an error).
//! - `man DIR` writes one page per command and subcommand, named as man
//!   expects (`rewind.1`, `rewind-watch.1`, `rewind-dump-run.1`), each
//!   `0644` in directories it creates `0755` (see [`crate::readable`]), and
//!   prints one line saying how many it wrote where.
//!
//! (Feature `cli`.)

use std::io::Write;
use std::path::{Path, PathBuf};

/// What went wrong writing a completion script or man pages: the file or
/// folder, and the cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DocsError {
    /// Stdout could not take the completion script.
    #[error("cannot write the completion script")]
    Completions(#[source] std::io::Error),
    /// The man page folder could not be created.
    #[error("cannot create {}", .0.display())]
    Folder(PathBuf, #[source] std::io::Error),
    /// A man page could not be rendered.
    #[error("cannot render {}", .0.display())]
    Render(PathBuf, #[source] std::io::Error),
    /// A man page could not be written.
    #[error("cannot write {}", .0.display())]
    Write(PathBuf, #[source] std::io::Error),
}

type Result<T> = std::result::Result<T, DocsError>;

/// The subcommands both binaries have for packagers and shells.
#[derive(clap::Subcommand)]
pub enum DocsCommand {
    /// Print a completion script for SHELL to stdout (bash:
    /// /usr/share/bash-completion/completions/NAME, zsh: a _NAME file on
    /// $fpath, fish: ~/.config/fish/completions/NAME.fish)
    Completions {
        /// The shell
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Write a man page for every command and subcommand into DIR (created
    /// if missing), e.g. /usr/local/share/man/man1
    Man {
        /// Where to write the pages
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// Run `what` for the command line `cmd` (the binary's `Cli::command()`).
pub fn run(what: DocsCommand, cmd: clap::Command) -> Result<i32> {
    match what {
        DocsCommand::Completions { shell } => {
            let script = completions(shell, cmd);
            let mut out = std::io::stdout().lock();
            match out.write_all(&script).and_then(|()| out.flush()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(DocsError::Completions(e))
                }
                _ => Ok(0),
            }
        }
        DocsCommand::Man { dir } => {
            let written = man_pages(cmd, &dir)?;
            println!("wrote {} man pages in {}", written.len(), dir.display());
            Ok(0)
        }
    }
}

/// The completion script of `cmd` for `shell`.
pub fn completions(shell: clap_complete::Shell, mut cmd: clap::Command) -> Vec<u8> {
    let name = cmd.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    script
}

/// Write the man pages of `cmd` and all its visible subcommands into
/// `dir`; the files written, the top command's first.
pub fn man_pages(cmd: clap::Command, dir: &Path) -> Result<Vec<PathBuf>> {
    crate::readable::create_dir_all(dir).map_err(|e| DocsError::Folder(dir.into(), e))?;
    // As clap_mangen::generate_to: no `help` subcommand page, and a built
    // command so that subcommands carry their full names ("rewind-watch")
    // and the global options.
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    write_pages(cmd, dir, &mut written)?;
    Ok(written)
}

fn write_pages(cmd: clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page)
        .map_err(|e| DocsError::Render(path.clone(), e))?;
    crate::readable::write_file(&path, &page).map_err(|e| DocsError::Write(path.clone(), e))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub.clone(), dir, written)?;
    }
    Ok(())
}
