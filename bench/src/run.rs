//! Running external programs under `/usr/bin/time` and reading their cost.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// A command line with its environment.
#[derive(Clone, Debug)]
pub struct Cmd {
    /// Program (a path or a name looked up in `PATH`).
    pub program: OsString,
    /// Arguments.
    pub args: Vec<OsString>,
    /// Extra environment variables.
    pub env: Vec<(OsString, OsString)>,
}

impl Cmd {
    /// `program` with no arguments.
    pub fn new(program: impl Into<OsString>) -> Cmd {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// `sh -c SCRIPT`.
    pub fn shell(script: &str) -> Cmd {
        Cmd::new("sh").arg("-c").arg(script)
    }

    /// Add an argument.
    pub fn arg(mut self, a: impl Into<OsString>) -> Cmd {
        self.args.push(a.into());
        self
    }

    /// Add arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, a: I) -> Cmd {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    /// Set an environment variable.
    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Cmd {
        self.env.push((k.into(), v.into()));
        self
    }

    /// A `std::process::Command` for it.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// The command line, shell-quoted enough for people to copy.
    pub fn display(&self) -> String {
        let mut parts: Vec<String> = self
            .env
            .iter()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), quote(&v.to_string_lossy())))
            .collect();
        parts.push(quote(&self.program.to_string_lossy()));
        parts.extend(self.args.iter().map(|a| quote(&a.to_string_lossy())));
        parts.join(" ")
    }

    /// Run to completion without measuring; fail on a non-zero exit.
    pub fn run_quiet(&self) -> Result<String> {
        let out = self
            .command()
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", self.display()))?;
        if !out.status.success() {
            bail!(
                "{} failed ({}): {}",
                self.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The cost of one run.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    /// Wall-clock seconds.
    pub wall: f64,
    /// User CPU seconds (the process and its waited-for children).
    pub user: f64,
    /// System CPU seconds.
    pub sys: f64,
    /// Peak resident set size in KiB (largest single process).
    pub max_rss_kib: u64,
    /// Standard error, last 4 KiB.
    pub stderr_tail: String,
}

impl Measured {
    /// User plus system seconds.
    pub fn cpu(&self) -> f64 {
        self.user + self.sys
    }
}

/// Run `cmd` under `/usr/bin/time`, stdout discarded, stderr kept in
/// `log`; fail on a non-zero exit.
pub fn measure(cmd: &Cmd, log: &Path) -> Result<Measured> {
    let tfile = log.with_extension("time");
    let mut c = Command::new("/usr/bin/time");
    c.arg("-f").arg("%e %U %S %M %x").arg("-o").arg(&tfile);
    c.arg(&cmd.program).args(&cmd.args);
    for (k, v) in &cmd.env {
        c.env(k, v);
    }
    let err = fs::File::create(log).with_context(|| log.display().to_string())?;
    let start = Instant::now();
    let status = c
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .status()
        .context("cannot run /usr/bin/time (apt-get install time)")?;
    let wall = start.elapsed().as_secs_f64();
    let stderr = fs::read_to_string(log).unwrap_or_default();
    let tail = stderr[stderr.len().saturating_sub(4096)..].to_string();
    let t = fs::read_to_string(&tfile).with_context(|| tfile.display().to_string())?;
    // `time` prefixes "Command exited with non-zero status N" on failure.
    let last = t.lines().last().unwrap_or("");
    let f: Vec<&str> = last.split_whitespace().collect();
    if !status.success() || f.len() < 5 || f[4] != "0" {
        bail!("{} failed ({status}):\n{tail}", cmd.display());
    }
    Ok(Measured {
        wall,
        user: f[1].parse()?,
        sys: f[2].parse()?,
        max_rss_kib: f[3].parse()?,
        stderr_tail: tail,
    })
}

/// `du -sb PATH`: apparent size in bytes of everything below `path`.
pub fn du_bytes(path: &Path) -> Result<u64> {
    let out = Cmd::new("du").arg("-sb").arg(path).run_quiet()?;
    out.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("du -sb {}: unexpected output {out:?}", path.display()))
}

/// Flush dirty pages so one run's writeback does not slow the next.
pub fn sync() -> Result<()> {
    Cmd::new("sync").run_quiet().map(|_| ())
}

/// Remove `dir` if present and create it empty.
pub fn fresh_dir(dir: &Path) -> Result<PathBuf> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir.to_path_buf())
}

/// utime + stime of a live process, in seconds (from `/proc/PID/stat`).
pub fn proc_cpu_seconds(pid: u32, ticks_per_sec: f64) -> Result<f64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; fields resume after ')'.
    let rest = &s[s.rfind(')').context("bad /proc/PID/stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, utime is field 14, stime field 15.
    let utime: f64 = f[11].parse()?;
    let stime: f64 = f[12].parse()?;
    Ok((utime + stime) / ticks_per_sec)
}

/// A `kB` field (VmRSS, VmHWM, ...) of `/proc/PID/status`, in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> Result<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status"))?;
    for line in s.lines() {
        if let Some(v) = line.strip_prefix(field).and_then(|r| r.strip_prefix(':')) {
            return Ok(v.trim().trim_end_matches("kB").trim().parse()?);
        }
    }
    bail!("no {field} in /proc/{pid}/status")
}

/// Context switches (voluntary and not: a count of wake-ups) of each
/// thread of a process, by thread id, with the thread's name.
pub fn proc_thread_switches(pid: u32) -> Result<BTreeMap<u32, (String, u64)>> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(format!("/proc/{pid}/task"))? {
        let e = e?;
        let Some(tid) = e.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let (Ok(s), Ok(name)) = (
            fs::read_to_string(e.path().join("status")),
            fs::read_to_string(e.path().join("comm")),
        ) else {
            continue;
        };
        let mut switches = 0;
        for line in s.lines() {
            if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                switches += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
        out.insert(tid, (name.trim().to_string(), switches));
    }
    Ok(out)
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux).
pub fn clock_ticks() -> f64 {
    Cmd::new("getconf")
        .arg("CLK_TCK")
        .run_quiet()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Send `signal` to `pid`.
pub fn signal(pid: u32, signal: rustix::process::Signal) -> Result<()> {
    let p = rustix::process::Pid::from_raw(pid as i32).context("bad pid")?;
    rustix::process::kill_process(p, signal)?;
    Ok(())
}

/// `restic -r DIR/repo ARGS…` with the bench password and its cache in
/// `DIR/cache`.
pub fn restic(dir: &std::path::Path, args: &[&str]) -> Cmd {
    restic_at(&dir.join("cache"), dir.join("repo"), args)
}

/// `restic -r REPO ARGS…` (a directory or a URL such as
/// `s3:http://HOST:PORT/BUCKET/PREFIX`) with the bench password and its
/// cache in `cache`.
pub fn restic_at(cache: &std::path::Path, repo: impl Into<OsString>, args: &[&str]) -> Cmd {
    Cmd::new("restic")
        .env("RESTIC_PASSWORD", "bench")
        .env("RESTIC_CACHE_DIR", cache)
        .arg("-r")
        .arg(repo)
        .args(args.iter().copied())
}
