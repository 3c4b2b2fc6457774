//! The agent as a launchd agent (macOS): the plist's text and the steps of
//! `install` and `uninstall`. Built and tested on every platform; only the
//! `launchctl` calls they lead to run on macOS.
//!
//! The plist is the template `packaging/macos/org.rewind.agent.plist`
//! (compiled in) with the binary's path, the log folder and the config
//! file filled in.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::context::Context;
use super::plan::{FileState, Step, run};

/// The job's label (and the plist's file name).
pub(crate) const LABEL: &str = "org.rewind.agent";

const TEMPLATE: &str = include_str!("../../packaging/macos/org.rewind.agent.plist");

/// `~/Library/LaunchAgents/org.rewind.agent.plist`.
pub(crate) fn plist_path(c: &Context) -> PathBuf {
    c.home
        .join("Library/LaunchAgents")
        .join(format!("{LABEL}.plist"))
}

/// `~/Library/Logs/rewind`, where the agent logs (`--log-file`) and launchd
/// puts what it prints.
pub(crate) fn log_dir(c: &Context) -> PathBuf {
    c.home.join("Library/Logs/rewind")
}

/// launchd's name for the job in the user's GUI domain.
pub(crate) fn service_target(c: &Context) -> String {
    format!("gui/{}/{LABEL}", c.uid)
}

/// The plist that runs `exe agent [--config FILE] --log-file LOGS/agent.log`.
pub(crate) fn plist_text(exe: &Path, config: Option<&Path>, logs: &Path) -> Result<String> {
    let config_line = "\t\t<!-- @CONFIG@ -->\n";
    assert!(
        TEMPLATE.contains(config_line),
        "the template marks the config"
    );
    let config_args = match config {
        Some(c) => format!(
            "\t\t<string>--config</string>\n\t\t<string>{}</string>\n",
            escape(c)?
        ),
        None => String::new(),
    };
    Ok(TEMPLATE
        .replace(config_line, &config_args)
        .replace("@REWIND@", &escape(exe)?)
        .replace("@LOGS@", &escape(logs)?))
}

/// A path as XML character data.
fn escape(p: &Path) -> Result<String> {
    let Some(s) = p.to_str() else {
        bail!("{}: a plist holds UTF-8 and this path is not", p.display());
    };
    if s.chars().any(char::is_control) {
        bail!("{s:?}: a control character cannot be written in a plist");
    }
    Ok(s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;"))
}

/// The steps of `rewind service install`; `loaded`: launchd runs the job
/// now. An unchanged plist of a loaded job is left alone; a changed one is
/// booted out (the agent stops gracefully on SIGTERM) and bootstrapped again.
pub(crate) fn install(
    c: &Context,
    config: Option<&Path>,
    linger: bool,
    loaded: bool,
) -> Result<Vec<Step>> {
    let path = plist_path(c);
    let text = plist_text(&c.exe, config, &log_dir(c))?;
    let state = FileState::of(&path, &text);
    let mut steps = vec![
        Step::PrivateDir(log_dir(c)),
        Step::Write {
            path: path.clone(),
            text,
            state,
        },
    ];
    if state == FileState::Same && loaded {
        steps.push(Step::Note(format!(
            "already loaded: launchd runs {}",
            service_target(c)
        )));
    } else {
        if loaded {
            steps.push(run(&["launchctl", "bootout", &service_target(c)]));
        }
        let domain = format!("gui/{}", c.uid);
        let plist = path.to_string_lossy();
        steps.push(run(&["launchctl", "bootstrap", &domain, &plist]));
    }
    if linger {
        steps.push(Step::Note(
            "--linger: nothing to do on macOS (a LaunchAgent runs while you are logged in)".into(),
        ));
    }
    Ok(steps)
}

/// The steps of `rewind service uninstall`; `loaded` as for [`install`].
pub(crate) fn uninstall(c: &Context, loaded: bool) -> Vec<Step> {
    let path = plist_path(c);
    let mut steps = Vec::new();
    if loaded {
        steps.push(run(&["launchctl", "bootout", &service_target(c)]));
    }
    if path.exists() {
        steps.push(Step::Remove(path));
    }
    if steps.is_empty() {
        steps.push(Step::Note(format!(
            "not installed ({} does not exist): nothing to do",
            plist_path(c).display()
        )));
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{commands as runs, put};

    #[test]
    fn the_plist_runs_the_agent_with_its_log_file_and_is_not_throttled() {
        let text = plist_text(
            Path::new("/usr/local/bin/rewind"),
            None,
            Path::new("/Users/ada/Library/Logs/rewind"),
        )
        .unwrap();
        let args = "<array>\n\t\t<string>/usr/local/bin/rewind</string>\n\t\t<string>agent</string>\n\
                    \t\t<string>--log-file</string>\n\t\t<string>/Users/ada/Library/Logs/rewind/agent.log</string>\n\t</array>";
        assert!(text.contains(args), "{text}");
        for key in [
            "<key>Label</key>\n\t<string>org.rewind.agent</string>",
            "<key>RunAtLoad</key>\n\t<true/>",
            "<key>SuccessfulExit</key>\n\t\t<false/>",
            "<key>ProcessType</key>\n\t<string>Interactive</string>",
            "<key>LowPriorityIO</key>\n\t<false/>",
            "<key>StandardErrorPath</key>\n\t<string>/Users/ada/Library/Logs/rewind/stderr.log</string>",
        ] {
            assert!(text.contains(key), "{key} missing:\n{text}");
        }
        assert!(!text.contains('@'), "a placeholder is left:\n{text}");
        // Comments hold no "--" (which XML forbids there).
        for comment in text.split("<!--").skip(1) {
            let body = comment.split("-->").next().unwrap();
            assert!(!body.contains("--"), "{body}");
        }
    }

    #[test]
    fn a_config_file_is_two_more_arguments_and_paths_are_escaped() {
        let text = plist_text(
            Path::new("/Applications/R&D <x>/rewind"),
            Some(Path::new("/Users/ada/rewind's.toml")),
            Path::new("/Users/ada/Library/Logs/rewind"),
        )
        .unwrap();
        assert!(text.contains(
            "<string>/Applications/R&amp;D &lt;x&gt;/rewind</string>\n\t\t<string>agent</string>\n\
             \t\t<string>--config</string>\n\t\t<string>/Users/ada/rewind&apos;s.toml</string>\n\
             \t\t<string>--log-file</string>"
        ), "{text}");
    }

    #[test]
    fn install_bootstraps_and_a_changed_plist_of_a_loaded_job_is_booted_out_first() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Context::for_tests(tmp.path());
        let plist = plist_path(&c).display().to_string();
        let first = install(&c, None, false, false).unwrap();
        assert_eq!(
            runs(&first),
            [format!("launchctl bootstrap gui/501 {plist}")]
        );
        put(
            &plist_path(&c),
            &plist_text(&c.exe, None, &log_dir(&c)).unwrap(),
        );
        let again = install(&c, None, false, true).unwrap();
        assert!(runs(&again).is_empty(), "{again:?}");
        let changed = install(&c, Some(Path::new("/etc/r.toml")), false, true).unwrap();
        assert_eq!(
            runs(&changed),
            [
                "launchctl bootout gui/501/org.rewind.agent".to_string(),
                format!("launchctl bootstrap gui/501 {plist}")
            ]
        );
        let gone = uninstall(&c, true);
        assert_eq!(runs(&gone), ["launchctl bootout gui/501/org.rewind.agent"]);
        assert!(gone.contains(&Step::Remove(plist_path(&c))));
    }
}
