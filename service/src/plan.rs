//! What `rewind service` does, as data: the steps of an install or an
//! uninstall, built first (by `systemd` and `launchd`, on any platform, so
//! tests on Linux cover both) and then carried out or, with `--dry-run`,
//! only shown. Every step carried out prints one line saying what it did.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// How a file to write compares with what is there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileState {
    /// No file yet.
    New,
    /// A file with other content.
    Changed,
    /// The same content: nothing to write.
    Same,
}

impl FileState {
    /// Compare `text` with the file at `path`.
    pub fn of(path: &Path, text: &str) -> FileState {
        match std::fs::read(path) {
            Ok(old) if old == text.as_bytes() => FileState::Same,
            Ok(_) => FileState::Changed,
            Err(_) => FileState::New,
        }
    }
}

/// One step of an install or uninstall.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Say something that is not an action (which unit is used, a hint).
    Note(String),
    /// A private directory (for logs) that must exist.
    PrivateDir(PathBuf),
    /// Write `text` to `path`, readable by everyone (`0644`); `state` was
    /// found when the plan was made.
    Write {
        /// The file.
        path: PathBuf,
        /// Its content.
        text: String,
        /// How it compares with the file there now.
        state: FileState,
    },
    /// Remove a file.
    Remove(PathBuf),
    /// Run a command (program and arguments); failing ends the plan.
    Run(Vec<String>),
}

/// `Step::Run` from words.
pub(crate) fn run(argv: &[&str]) -> Step {
    Step::Run(argv.iter().map(|s| s.to_string()).collect())
}

/// Carry out `steps` in order, one line each on stdout; with `dry_run`,
/// print what would be written and run instead. The first failure ends it
/// with an error that says what failed and where.
pub(crate) fn execute(steps: &[Step], dry_run: bool) -> Result<()> {
    for step in steps {
        match step {
            Step::Note(s) => println!("{s}"),
            Step::PrivateDir(d) if dry_run => {
                if !d.is_dir() {
                    println!("would create {}", d.display());
                }
            }
            Step::PrivateDir(d) => {
                if !d.is_dir() {
                    rewind_core::private::create_dir_all(d)
                        .with_context(|| format!("cannot create {}", d.display()))?;
                    println!("created {}", d.display());
                }
            }
            Step::Write { path, state, .. } if *state == FileState::Same => {
                println!("already installed: {} is up to date", path.display());
            }
            Step::Write { path, text, state } if dry_run => {
                let what = if *state == FileState::New {
                    "write"
                } else {
                    "replace"
                };
                println!("would {what} {}:", path.display());
                for line in text.lines() {
                    println!("    {line}");
                }
            }
            Step::Write { path, text, state } => {
                if let Some(dir) = path.parent() {
                    rewind_core::readable::create_dir_all(dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                }
                rewind_core::readable::write_file(path, text.as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                let what = if *state == FileState::New {
                    "wrote"
                } else {
                    "updated"
                };
                println!("{what} {}", path.display());
            }
            Step::Remove(p) if dry_run => println!("would remove {}", p.display()),
            Step::Remove(p) => {
                std::fs::remove_file(p)
                    .with_context(|| format!("cannot remove {}", p.display()))?;
                println!("removed {}", p.display());
            }
            Step::Run(argv) if dry_run => println!("would run: {}", argv.join(" ")),
            Step::Run(argv) => {
                command(argv)?;
                println!("ran: {}", argv.join(" "));
            }
        }
    }
    Ok(())
}

/// Run `argv`; an error naming the command and its complaint unless it
/// exits 0.
pub(crate) fn command(argv: &[String]) -> Result<String> {
    let (program, args) = argv.split_first().expect("a command has a program");
    let out = match Command::new(program).args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("`{}`: {program} not found on PATH", argv.join(" "))
        }
        Err(e) => return Err(e).with_context(|| format!("cannot run `{}`", argv.join(" "))),
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let said = err.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
        bail!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            out.status,
            said.trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The commands among `steps`, one line each (for tests).
#[cfg(test)]
pub(crate) fn commands(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Run(argv) => Some(argv.join(" ")),
            _ => None,
        })
        .collect()
}

/// Put `text` at `path`, its folder made first (for tests).
#[cfg(test)]
pub(crate) fn put(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}
