//! Driving the `rewind` binary: one isolated setup (repository, state
//! directory, home) and a running `rewind watch` whose stderr is followed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::run::{Cmd, fresh_dir};

/// A repository with its own agent state, isolated from every other run.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The `rewind` binary.
    pub bin: PathBuf,
    /// `--repo`.
    pub repo: PathBuf,
    /// `REWIND_STATE_DIR` (the journal lives below).
    pub state: PathBuf,
    /// `HOME`.
    pub home: PathBuf,
}

impl Setup {
    /// Fresh (emptied) directories `BASE/{repo,state,home}`.
    pub fn fresh(bin: &Path, base: &Path) -> Result<Setup> {
        fresh_dir(base)?;
        let s = Setup {
            bin: bin.to_path_buf(),
            repo: base.join("repo"),
            state: base.join("state"),
            home: base.join("home"),
        };
        fresh_dir(&s.state)?;
        fresh_dir(&s.home)?;
        Ok(s)
    }

    /// `rewind --repo REPO ARGS…` with this setup's environment.
    pub fn cmd<I: IntoIterator<Item = S>, S: Into<std::ffi::OsString>>(&self, args: I) -> Cmd {
        Cmd::new(&self.bin)
            .env("REWIND_STATE_DIR", &self.state)
            .env("HOME", &self.home)
            .env("RUST_LOG", "warn")
            .arg("--repo")
            .arg(&self.repo)
            .args(args)
    }

    /// The repository id (`REPO/config`, field `id`).
    pub fn repo_id(&self) -> Result<String> {
        let p = self.repo.join("config");
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&p).with_context(|| p.display().to_string())?)?;
        v["id"]
            .as_str()
            .map(str::to_string)
            .context("no id in repository config")
    }

    /// The journal directory of this repository's agent.
    pub fn journal_dir(&self) -> Result<PathBuf> {
        Ok(self.state.join("journals").join(self.repo_id()?))
    }

    /// The client name versions are recorded under.
    pub fn client(&self) -> Result<String> {
        let p = self.journal_dir()?.join("client");
        Ok(std::fs::read_to_string(&p)
            .with_context(|| p.display().to_string())?
            .trim()
            .to_string())
    }

    /// `rewind status --json`.
    pub fn status(&self) -> Result<serde_json::Value> {
        let out = self.cmd(["status", "--json"]).run_quiet()?;
        Ok(serde_json::from_str(&out)?)
    }

    /// Wait until the running agent's uploader has drained its journal
    /// (15 minutes at most), then 3 s more for the agent to settle.
    pub fn wait_drained(&self) -> Result<()> {
        let t = Instant::now();
        loop {
            let st = self.status()?;
            match st["journal"]["versions_waiting"].as_u64() {
                Some(0) | None => break,
                Some(_) if t.elapsed() > Duration::from_secs(900) => {
                    bail!("the journal never drained")
                }
                Some(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
        std::thread::sleep(Duration::from_secs(3));
        Ok(())
    }
}

/// A running `rewind watch`.
pub struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every stderr line seen so far.
    pub stderr: Vec<String>,
}

impl Watch {
    /// Start `rewind watch TREE` (default settings, no `--once`).
    pub fn start(setup: &Setup, tree: &Path) -> Result<Watch> {
        Watch::start_cmd(&setup.cmd(["watch".as_ref(), tree.as_os_str()]))
    }

    /// [`Watch::start`] with a command made by the caller (extra
    /// environment, say).
    pub fn start_cmd(cmd: &Cmd) -> Result<Watch> {
        let mut child = cmd
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", cmd.display()))?;
        let err = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(l) = line else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Ok(Watch {
            child,
            lines: rx,
            stderr: Vec::new(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait until a stderr line contains `needle`; return that line.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.stderr.push(l.clone());
                    if l.contains(needle) {
                        return Ok(l);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!(
                        "no {needle:?} from rewind watch within {timeout:?}; stderr: {:?}",
                        self.stderr
                    )
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let st = self.child.wait()?;
                    bail!(
                        "rewind watch exited ({st}) before {needle:?}; stderr: {:?}",
                        self.stderr
                    )
                }
            }
        }
    }

    /// Collect stderr lines that arrived since the last look.
    pub fn drain_stderr(&mut self) {
        while let Ok(l) = self.lines.try_recv() {
            self.stderr.push(l);
        }
    }

    /// [`Watch::stop`], saying on stderr (with the agent's own) when the
    /// agent did not exit cleanly: a part's figures still stand.
    pub fn stop_and_report(&mut self, timeout: Duration) -> Result<()> {
        let st = self.stop(timeout)?;
        if !st.success() {
            eprintln!(
                "rewind-bench: rewind watch exited with {st}: {:?}",
                self.stderr
            );
        }
        Ok(())
    }

    /// SIGTERM, then wait (up to `timeout`, SIGKILL after that).
    pub fn stop(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        crate::run::signal(self.pid(), rustix::process::Signal::TERM)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                self.drain_stderr();
                return Ok(st);
            }
            if Instant::now() > deadline {
                self.child.kill()?;
                let st = self.child.wait()?;
                bail!("rewind watch did not stop within {timeout:?} after SIGTERM (killed: {st})");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Parse "first pass complete: N paths scanned, M versions captured, … in S s".
pub fn parse_first_pass(line: &str) -> (Option<u64>, Option<u64>, Option<f64>) {
    let num_before = |key: &str| -> Option<u64> {
        let i = line.find(key)?;
        line[..i].split_whitespace().last()?.parse().ok()
    };
    let secs = line
        .rsplit(" in ")
        .next()
        .and_then(|s| s.trim().trim_end_matches('s').parse().ok());
    (
        num_before(" paths scanned"),
        num_before(" versions captured"),
        secs,
    )
}

/// How the repository names `paths` (files below `dir`): their paths below
/// `dir` resolved, as the agent stores them.
pub fn stored_paths(dir: &Path, paths: &[PathBuf]) -> Result<Vec<Vec<u8>>> {
    use std::os::unix::ffi::OsStrExt;
    let canon = dir.canonicalize()?;
    Ok(paths
        .iter()
        .map(|p| {
            canon
                .join(p.strip_prefix(dir).expect("below dir"))
                .as_os_str()
                .as_bytes()
                .to_vec()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn first_pass_line_parses() {
        let l = "rewind: first pass complete: 51234 paths scanned, 51200 versions captured, 2.1 GiB read in 43.5s";
        assert_eq!(
            super::parse_first_pass(l),
            (Some(51234), Some(51200), Some(43.5))
        );
    }
}
