//! The agent as a systemd user service (Linux): the unit's text and the
//! steps of `install` and `uninstall`.
//!
//! The unit is the packaged one (`packaging/systemd/rewind.service`,
//! compiled in), so the two never drift apart; only its `ExecStart` line
//! differs when `install` writes it for a binary that is not
//! `/usr/bin/rewind` or with a config file.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::context::Context;
use super::plan::{FileState, Step, run};

/// The unit's name.
pub(crate) const UNIT_NAME: &str = "rewind.service";

/// The packaged unit, which the written one copies.
const PACKAGED_TEXT: &str = include_str!("../../packaging/systemd/rewind.service");

/// How a unit written by `install` begins (a later install or uninstall
/// knows it as its own).
const MARKER: &str = "# Written by `rewind service install`";

/// Where `install` writes the unit: `$XDG_CONFIG_HOME/systemd/user` (a
/// directory of the user manager's search path, before the packaged one).
pub(crate) fn user_unit(c: &Context) -> PathBuf {
    c.config_home.join("systemd/user").join(UNIT_NAME)
}

/// Whether a unit file at `path` was written by `install`.
pub(crate) fn is_ours(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.starts_with(MARKER))
}

/// The user unit that runs `exe agent [--config FILE]`.
pub(crate) fn unit_text(exe: &Path, config: Option<&Path>) -> Result<String> {
    let mut exec = format!("ExecStart={} agent", quote(exe)?);
    if let Some(config) = config {
        exec.push_str(" --config ");
        exec.push_str(&quote(config)?);
    }
    let mut text = format!(
        "{MARKER} (rewind {}); `rewind service uninstall` removes it.\n",
        env!("CARGO_PKG_VERSION")
    );
    for line in PACKAGED_TEXT.lines() {
        text.push_str(if line.starts_with("ExecStart=") {
            &exec
        } else {
            line
        });
        text.push('\n');
    }
    Ok(text)
}

/// One word of an `ExecStart=` line: `%` and `$` doubled (systemd's
/// specifiers and variables), `\` and `"` escaped, the whole word in double
/// quotes when it holds white space or quotes.
fn quote(p: &Path) -> Result<String> {
    let Some(s) = p.to_str() else {
        bail!("{}: unit files are UTF-8 and this path is not", p.display());
    };
    if s.chars().any(char::is_control) {
        bail!("{s:?}: a control character cannot be written in a unit file");
    }
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    let bare = !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || "\"'\\;".contains(c));
    Ok(if bare { out } else { format!("\"{out}\"") })
}

/// The steps of `rewind service install`: the packaged unit when there is
/// one and no config file is named, else the written one; then reload,
/// enable and start (a running agent whose unit changed is restarted: it
/// stops gracefully and loses nothing); `--linger` keeps the user manager
/// running without a session.
pub(crate) fn install(c: &Context, config: Option<&Path>, linger: bool) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    let unit = user_unit(c);
    let mut changed = false;
    if config.is_none() && c.packaged_unit.exists() {
        steps.push(Step::Note(format!(
            "using the packaged unit {}",
            c.packaged_unit.display()
        )));
        if is_ours(&unit) {
            steps.push(Step::Remove(unit));
            changed = true;
        } else if unit.exists() {
            steps.push(Step::Note(format!(
                "note: {} is used instead of the packaged unit (it comes first)",
                unit.display()
            )));
        }
    } else {
        let text = unit_text(&c.exe, config)?;
        let state = FileState::of(&unit, &text);
        changed = state == FileState::Changed;
        steps.push(Step::Write {
            path: unit,
            text,
            state,
        });
    }
    steps.push(run(&["systemctl", "--user", "daemon-reload"]));
    steps.push(run(&["systemctl", "--user", "enable", "--now", UNIT_NAME]));
    if changed {
        steps.push(run(&["systemctl", "--user", "try-restart", UNIT_NAME]));
    }
    if linger {
        steps.push(run(&["loginctl", "enable-linger", &c.user]));
    }
    Ok(steps)
}

/// The steps of `rewind service uninstall`: stop and disable, remove the
/// written unit, reload. Lingering is left on (other services may need it).
pub(crate) fn uninstall(c: &Context) -> Vec<Step> {
    let unit = user_unit(c);
    let written = unit.exists();
    let packaged = c.packaged_unit.exists();
    if !written && !packaged {
        return vec![Step::Note(format!(
            "not installed ({} does not exist): nothing to do",
            unit.display()
        ))];
    }
    let mut steps = vec![run(&["systemctl", "--user", "disable", "--now", UNIT_NAME])];
    if written {
        steps.push(Step::Remove(unit));
        steps.push(run(&["systemctl", "--user", "daemon-reload"]));
    }
    if packaged {
        steps.push(Step::Note(format!(
            "{} stays: it belongs to the rewind package",
            c.packaged_unit.display()
        )));
    }
    if Path::new("/var/lib/systemd/linger").join(&c.user).exists() {
        steps.push(Step::Note(format!(
            "lingering stays on for {0}; `loginctl disable-linger {0}` turns it off",
            c.user
        )));
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{commands as words, put};

    #[test]
    fn the_packaged_unit_has_exactly_one_exec_start_running_usr_bin_rewind_agent() {
        let lines: Vec<&str> = PACKAGED_TEXT
            .lines()
            .filter(|l| l.starts_with("ExecStart="))
            .collect();
        assert_eq!(lines, ["ExecStart=/usr/bin/rewind agent"]);
    }

    #[test]
    fn the_written_unit_is_the_packaged_one_with_this_binary_and_config() {
        let text = unit_text(
            Path::new("/opt/rewind/bin/rewind"),
            Some(Path::new("/home/ada/rewind.toml")),
        )
        .unwrap();
        assert!(text.starts_with(MARKER));
        assert!(
            text.contains(
                "\nExecStart=/opt/rewind/bin/rewind agent --config /home/ada/rewind.toml\n"
            ),
            "{text}"
        );
        assert!(!text.contains("/usr/bin/rewind agent"));
        for kept in [
            "Restart=on-failure",
            "KillMode=mixed",
            "TimeoutStopSec=",
            "WantedBy=default.target",
        ] {
            assert!(text.contains(kept), "{kept} missing:\n{text}");
        }
        assert!(!text.contains("\nNice=") && !text.contains("\nIOSchedulingClass="));
    }

    #[test]
    fn paths_with_spaces_percent_dollar_and_quotes_are_escaped_for_systemd() {
        let q = |s: &str| quote(Path::new(s)).unwrap();
        assert_eq!(q("/usr/bin/rewind"), "/usr/bin/rewind");
        assert_eq!(q("/home/a b/rewind"), "\"/home/a b/rewind\"");
        assert_eq!(q("/x/100%/$HOME"), "/x/100%%/$$HOME");
        assert_eq!(q("/x/\"q\"\\"), "\"/x/\\\"q\\\"\\\\\"");
        assert!(quote(Path::new("/x/a\nb")).is_err());
    }

    #[test]
    fn a_first_install_writes_the_unit_reloads_and_enables_it_now() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Context::for_tests(tmp.path());
        let steps = install(&c, None, false).unwrap();
        assert!(
            matches!(&steps[0], Step::Write { path, state: FileState::New, .. } if *path == user_unit(&c))
        );
        assert_eq!(
            words(&steps),
            [
                "systemctl --user daemon-reload",
                "systemctl --user enable --now rewind.service"
            ]
        );
    }

    #[test]
    fn a_changed_unit_restarts_a_running_agent_and_linger_asks_loginctl() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Context::for_tests(tmp.path());
        let unit = user_unit(&c);
        put(&unit, &unit_text(&c.exe, None).unwrap());
        let same = install(&c, None, false).unwrap();
        assert!(matches!(
            &same[0],
            Step::Write {
                state: FileState::Same,
                ..
            }
        ));
        assert_eq!(words(&same).len(), 2);
        let changed = install(&c, Some(Path::new("/etc/rewind.toml")), true).unwrap();
        assert!(matches!(
            &changed[0],
            Step::Write {
                state: FileState::Changed,
                ..
            }
        ));
        assert_eq!(
            words(&changed)[2..],
            [
                "systemctl --user try-restart rewind.service",
                "loginctl enable-linger ada"
            ]
        );
    }

    #[test]
    fn with_the_package_installed_the_packaged_unit_is_used_and_an_old_written_one_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Context::for_tests(tmp.path());
        put(&c.packaged_unit, PACKAGED_TEXT);
        let unit = user_unit(&c);
        put(&unit, &unit_text(&c.exe, None).unwrap());
        let steps = install(&c, None, false).unwrap();
        assert!(matches!(&steps[0], Step::Note(n) if n.contains("packaged unit")));
        assert_eq!(steps[1], Step::Remove(unit.clone()));
        assert!(words(&steps).contains(&"systemctl --user try-restart rewind.service".into()));
        // A config file needs a unit of its own, even with the package.
        let steps = install(&c, Some(Path::new("/etc/rewind.toml")), false).unwrap();
        assert!(matches!(&steps[0], Step::Write { path, .. } if *path == unit));
    }

    #[test]
    fn uninstall_disables_removes_and_reloads_and_does_nothing_when_not_installed() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Context::for_tests(tmp.path());
        let nothing = uninstall(&c);
        assert!(matches!(&nothing[..], [Step::Note(n)] if n.contains("nothing to do")));
        let unit = user_unit(&c);
        put(&unit, "x");
        let steps = uninstall(&c);
        assert_eq!(
            words(&steps),
            [
                "systemctl --user disable --now rewind.service",
                "systemctl --user daemon-reload"
            ]
        );
        assert!(steps.contains(&Step::Remove(unit)));
    }
}
