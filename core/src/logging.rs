//! The one logging set-up of both binaries (`rewind` and `rewind-server`;
//! feature `cli`).
//!
//! - Logs go to stderr (under systemd, that is the journal), or with a log
//!   file to that file rotated daily (launchd has no journal).
//! - How much: `warn` and up for commands a person runs, `info` for the
//!   service forms (`rewind agent`); each `-v` one level more; `REWIND_LOG`
//!   (an `EnvFilter`) overrides both.
//! - Colours only on a terminal; no timestamps of ours when journald adds
//!   its own (`JOURNAL_STREAM` is set).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use tracing::Level;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// Log files kept: today's and the six before it, a week of history.
pub const LOG_FILES_KEPT: usize = 7;

/// Where logs go and how much.
pub struct Logging<'a> {
    /// How many `-v` were given.
    pub verbose: u8,
    /// The level without `-v`: [`Level::WARN`] for commands, [`Level::INFO`]
    /// for the service forms.
    pub base: Level,
    /// Log to this file, rotated daily, instead of stderr (see [`rotated`]).
    pub file: Option<&'a Path>,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The log file's name is not `STEM.EXT` in UTF-8.
    #[error("--log-file {}: not a file name in UTF-8", .path.display())]
    NotUtf8 {
        /// The log file given.
        path: PathBuf,
    },
    /// The log file's folder could not be created.
    #[error("cannot create the log folder {}", .dir.display())]
    Folder {
        /// The folder.
        dir: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The log file could not be opened.
    #[error("cannot log to {}", .path.display())]
    File {
        /// The log file given.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: tracing_appender::rolling::InitError,
    },
}

/// Install the global subscriber described by `l`.
pub fn init_logging(l: &Logging<'_>) -> Result<(), LogError> {
    // fuser (`rewind mount`) warns about every request it answers with
    // ENOSYS for us and about unmounting what was already unmounted: noise
    // for people; its errors still show.
    let filter = tracing_subscriber::EnvFilter::try_from_env("REWIND_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{},fuser=error", level(l.base, l.verbose)))
    });
    let (writer, ansi) = match l.file {
        Some(path) => (BoxMakeWriter::new(rotated(path)?), false),
        None => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        ),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .with_target(false);
    if l.file.is_none() && std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
    Ok(())
}

/// The filter level `verbose` steps above `base`.
fn level(base: Level, verbose: u8) -> &'static str {
    const LEVELS: [Level; 5] = [
        Level::ERROR,
        Level::WARN,
        Level::INFO,
        Level::DEBUG,
        Level::TRACE,
    ];
    let at = LEVELS.iter().position(|l| *l == base).unwrap_or(1);
    match LEVELS[(at + verbose as usize).min(LEVELS.len() - 1)] {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        _ => "trace",
    }
}

/// A writer for `path` = `DIR/STEM.EXT`: each day (UTC) goes to
/// `DIR/STEM.YYYY-MM-DD.EXT`, `path` itself is a symlink to the current
/// day's file, and the oldest files beyond [`LOG_FILES_KEPT`] are deleted
/// (any regular file in DIR named `STEM.*.EXT` counts as one of them).
/// DIR is created `0700` if missing (logs name the user's files).
pub fn rotated(path: &Path) -> Result<tracing_appender::rolling::RollingFileAppender, LogError> {
    use tracing_appender::rolling::{Builder, Rotation};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().and_then(|n| n.to_str());
    let stem = path.file_stem().and_then(|s| s.to_str());
    let ext = match path.extension() {
        None => Some(""),
        Some(e) => e.to_str(),
    };
    let (Some(name), Some(stem), Some(ext)) = (name, stem, ext) else {
        return Err(LogError::NotUtf8 { path: path.into() });
    };
    crate::private::create_dir_all(dir).map_err(|source| LogError::Folder {
        dir: dir.into(),
        source,
    })?;
    Builder::new()
        .rotation(Rotation::DAILY)
        .filename_prefix(stem)
        .filename_suffix(ext)
        .max_log_files(LOG_FILES_KEPT)
        .latest_symlink(name)
        .build(dir)
        .map_err(|source| LogError::File {
            path: path.into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_v_raises_the_level_one_step_from_the_base() {
        assert_eq!(level(Level::WARN, 0), "warn");
        assert_eq!(level(Level::WARN, 1), "info");
        assert_eq!(level(Level::WARN, 2), "debug");
        assert_eq!(level(Level::INFO, 0), "info");
        assert_eq!(level(Level::INFO, 1), "debug");
        assert_eq!(level(Level::INFO, 9), "trace");
    }

    #[test]
    fn a_log_file_is_a_dated_file_behind_a_symlink_of_the_given_name() {
        use std::io::Write;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("logs/agent.log");
        let mut w = rotated(&path).unwrap();
        w.write_all(b"hello\n").unwrap();
        w.flush().unwrap();
        let target = std::fs::read_link(&path).unwrap();
        let name = target.file_name().unwrap().to_str().unwrap().to_string();
        assert!(
            name.starts_with("agent.")
                && name.ends_with(".log")
                && name.len() == "agent.2026-12-06.log".len(),
            "{name}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello\n");
    }
}
