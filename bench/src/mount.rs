//! Part 8: browsing and reading a point in time through FUSE: `rewind
//! mount` against `restic mount` and `borg mount` on the ingest tree, in
//! the same run.
//!
//! The tools take turns (one repository on disk at a time: the three
//! together are 4 GB). Each stores the tree in a fresh repository
//! (untimed); then, [`Config::ingest_runs`] rounds: its repository is read
//! once (untimed) so it sits in the page cache, the tool mounts it, and
//! one command is timed on the newest point in time (`latest/` for rewind,
//! `snapshots/latest/` for restic, the archive for borg); then it is
//! unmounted. Three commands, each on a fresh mount (so no cache of the
//! mount or of the kernel helps it):
//!
//! - `ls -R VIEW` (names only: what a listing of a 50k-file point costs),
//! - `ls -lR VIEW` (every entry's attributes, as a file manager asks),
//! - `tar cf - -C VIEW . | cat` (every byte, a full read).
//!
//! Reported: medians of wall time, the CPU of the mounting process during
//! the command, and its peak RSS over the whole mount (`VmHWM`).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::Config;
use crate::agent::Setup;
use crate::datagen;
use crate::report::{Table, bytes, median, secs, verdict};
use crate::run::{
    Cmd, clock_ticks, du_bytes, fresh_dir, measure, proc_cpu_seconds, proc_status_kib, sync,
};

/// How long a mount may take to appear (borg reads its whole archive
/// metadata first).
const MOUNT_WAIT: Duration = Duration::from_secs(600);

/// The issue's target: `ls -R` of a 50,000-file point in under 5 s.
const LS_TARGET_SECS: f64 = 5.0;

/// One tool: how it stores the tree, its mount command and where the tree
/// shows inside it.
struct Tool {
    name: &'static str,
    /// Store the tree in a fresh repository (untimed).
    store: Box<dyn Fn() -> Result<()>>,
    /// The mounting command, given the mount point.
    mount: Box<dyn Fn(&Path) -> Cmd>,
    /// The tree inside the mount point.
    view: Box<dyn Fn(&Path) -> PathBuf>,
    /// The same for the report (`$M` the mount point, `$T` the tree's
    /// path without its leading `/`).
    view_shown: &'static str,
    /// Its repository (warmed before each command).
    repo: PathBuf,
    /// Everything it keeps, deleted when its turn is over.
    dir: PathBuf,
}

/// What one timed command cost.
#[derive(Clone, Default)]
struct Sample {
    wall: f64,
    /// CPU of the mounting process during the command.
    server_cpu: f64,
    /// Seconds from the mount command to the view being there.
    ready: f64,
    /// Peak RSS of the mounting process, KiB.
    peak_kib: u64,
}

/// A mount being served by a child process.
struct Served {
    child: Child,
    mnt: PathBuf,
}

impl Served {
    fn start(tool: &Tool, mnt: &Path, log: &Path) -> Result<(Served, f64)> {
        fresh_dir(mnt)?;
        let cmd = (tool.mount)(mnt);
        eprintln!("rewind-bench: {}", cmd.display());
        let start = Instant::now();
        let child = cmd
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(log)?)
            .spawn()
            .with_context(|| format!("cannot run {}", cmd.display()))?;
        let mut s = Served {
            child,
            mnt: mnt.to_path_buf(),
        };
        let view = (tool.view)(mnt);
        while !view.is_dir() {
            if let Some(st) = s.child.try_wait()? {
                bail!(
                    "{} exited with {st}: {}",
                    cmd.display(),
                    fs::read_to_string(log).unwrap_or_default()
                );
            }
            if start.elapsed() > MOUNT_WAIT {
                s.stop()?;
                bail!("{} did not mount within {MOUNT_WAIT:?}", tool.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok((s, start.elapsed().as_secs_f64()))
    }

    /// Unmount (as root: `umount`; else `fusermount -u`) and wait for the
    /// process to end.
    fn stop(mut self) -> Result<()> {
        let st = Cmd::new("umount").arg(&self.mnt).run_quiet();
        if st.is_err() {
            let _ = Cmd::new("fusermount").arg("-u").arg(&self.mnt).run_quiet();
        }
        let start = Instant::now();
        while self.child.try_wait()?.is_none() {
            if start.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("a mount process did not end after its unmount");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// Read `dir` once so its files are in the page cache.
fn warm(dir: &Path) -> Result<()> {
    Cmd::shell(&format!("tar cf - -C {} . | cat >/dev/null", q(dir))).run_quiet()?;
    Ok(())
}

/// The timed commands: a name and a shell script, `{}` standing for the
/// view.
const COMMANDS: [(&str, &str); 3] = [
    ("ls -R", "ls -R {} >/dev/null"),
    ("ls -lR", "ls -lR {} >/dev/null"),
    ("full read (tar)", "tar cf - -C {} . | cat >/dev/null"),
];

/// Run the mount part; returns its Markdown section.
pub fn run(cfg: &Config) -> Result<String> {
    let tree = cfg.tree()?;
    let (dirs, files) = datagen::plan_tree(cfg.seed, cfg.scale);
    let sum = datagen::summarize(&dirs, &files);
    let base = fresh_dir(&cfg.work.join("mount"))?;
    let logs = fresh_dir(&base.join("logs"))?;
    let rel = tree.strip_prefix("/").unwrap_or(&tree).to_path_buf();

    let s = Setup::fresh(&cfg.rewind, &base.join("rewind"))?;
    let rdir = base.join("restic");
    let restic = {
        let rdir = rdir.clone();
        move |args: &[&str]| crate::run::restic(&rdir, args)
    };
    let bdir = base.join("borg");
    let borg = {
        let bdir = bdir.clone();
        move |args: &[&str]| {
            Cmd::new("borg")
                .env("BORG_BASE_DIR", bdir.join("base"))
                .env("BORG_PASSPHRASE", "")
                .env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes")
                .args(args.iter().copied())
        }
    };
    let borg_repo = bdir.join("repo");
    let archive = format!("{}::first", borg_repo.display());
    let tools = {
        let (r1, r2, r3) = (rel.clone(), rel.clone(), rel.clone());
        let (s1, s2) = (s.clone(), s.clone());
        let (t1, t2, t3) = (tree.clone(), tree.clone(), tree.clone());
        let (restic1, restic2) = (restic.clone(), restic.clone());
        let (borg1, borg2) = (borg.clone(), borg.clone());
        let (a1, a2) = (archive.clone(), archive.clone());
        let (rd, bd, br) = (rdir.clone(), bdir.clone(), borg_repo.clone());
        vec![
            Tool {
                name: "rewind mount",
                store: Box::new(move || {
                    s1.cmd(["watch".as_ref(), t1.as_os_str(), "--once".as_ref()])
                        .run_quiet()
                        .map(drop)
                }),
                mount: Box::new(move |m: &Path| s2.cmd(["mount".as_ref(), m.as_os_str()])),
                view: Box::new(move |m: &Path| m.join("latest").join(&r1)),
                view_shown: "$M/latest/$T",
                repo: s.repo.clone(),
                dir: base.join("rewind"),
            },
            Tool {
                name: "restic mount",
                store: Box::new(move || {
                    fresh_dir(&rd)?;
                    restic1(&["init"]).run_quiet()?;
                    restic1(&["backup"]).arg(&t2).run_quiet().map(drop)
                }),
                mount: Box::new(move |m: &Path| restic2(&["mount"]).arg(m)),
                view: Box::new(move |m: &Path| m.join("snapshots/latest").join(&r2)),
                view_shown: "$M/snapshots/latest/$T",
                repo: rdir.join("repo"),
                dir: rdir.clone(),
            },
            Tool {
                name: "borg mount",
                store: Box::new(move || {
                    fresh_dir(&bd)?;
                    borg1(&["init", "-e", "none"]).arg(&br).run_quiet()?;
                    borg1(&["create", "--compression", "zstd,3"])
                        .arg(&a1)
                        .arg(&t3)
                        .run_quiet()
                        .map(drop)
                }),
                mount: Box::new(move |m: &Path| borg2(&["mount", "-f"]).arg(&a2).arg(m)),
                view: Box::new(move |m: &Path| m.join(&r3)),
                view_shown: "$M/$T",
                repo: borg_repo.clone(),
                dir: bdir.clone(),
            },
        ]
    };
    let cmds = COMMANDS;
    let ticks = clock_ticks();
    // samples[tool][command]
    let mut samples: Vec<Vec<Vec<Sample>>> = vec![vec![Vec::new(); cmds.len()]; tools.len()];
    let mut sizes = vec![0u64; tools.len()];
    // One tool after the other, each repository deleted before the next is
    // made: three at once would take 4 GB of a disk other work shares.
    for (ti, tool) in tools.iter().enumerate() {
        eprintln!("rewind-bench: storing the tree for {} (untimed)", tool.name);
        (tool.store)()?;
        sizes[ti] = du_bytes(&tool.repo).unwrap_or(0);
        for round in 0..cfg.ingest_runs {
            for (ci, (cname, script)) in cmds.iter().enumerate() {
                warm(&tool.repo)?;
                sync()?;
                let mnt = base.join("mnt");
                let log = logs.join(format!("{ti}-{ci}-{round}.log"));
                let (served, ready) = Served::start(tool, &mnt, &log)?;
                let pid = served.child.id();
                let view = (tool.view)(&mnt);
                let cmd = Cmd::shell(&script.replace("{}", &q(&view)));
                eprintln!("rewind-bench: {} (run {}): {cname}", tool.name, round + 1);
                let cpu0 = proc_cpu_seconds(pid, ticks).unwrap_or(0.0);
                let m = measure(&cmd, &logs.join(format!("cmd-{ti}-{ci}-{round}.log")));
                let cpu1 = proc_cpu_seconds(pid, ticks).unwrap_or(0.0);
                let peak = proc_status_kib(pid, "VmHWM").unwrap_or(0);
                served.stop()?;
                let m = m?;
                eprintln!(
                    "rewind-bench:   {:.2} s wall, mount process {:.2} s CPU, peak RSS {}",
                    m.wall,
                    cpu1 - cpu0,
                    bytes(peak * 1024)
                );
                samples[ti][ci].push(Sample {
                    wall: m.wall,
                    server_cpu: cpu1 - cpu0,
                    ready,
                    peak_kib: peak,
                });
            }
        }
        fs::remove_dir_all(&tool.dir)
            .with_context(|| format!("cannot remove {}", tool.dir.display()))?;
    }

    // Report.
    let med = |v: &[Sample], f: fn(&Sample) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
    let mut t = Table::new(&[
        "tool",
        "mounted after",
        "`ls -R`",
        "`ls -lR`",
        "full read",
        "MiB/s read",
        "mount process CPU (ls -R / ls -lR / read)",
        "peak RSS (ls -R / ls -lR / read)",
    ]);
    let mb = sum.bytes as f64 / (1024.0 * 1024.0);
    for (ti, tool) in tools.iter().enumerate() {
        let all: Vec<Sample> = samples[ti].iter().flatten().cloned().collect();
        let s = &samples[ti];
        t.row(&[
            format!("`{}`", tool.name),
            secs(med(&all, |x| x.ready)),
            secs(med(&s[0], |x| x.wall)),
            secs(med(&s[1], |x| x.wall)),
            secs(med(&s[2], |x| x.wall)),
            format!("{:.0}", mb / med(&s[2], |x| x.wall)),
            format!(
                "{} / {} / {}",
                secs(med(&s[0], |x| x.server_cpu)),
                secs(med(&s[1], |x| x.server_cpu)),
                secs(med(&s[2], |x| x.server_cpu))
            ),
            (0..3)
                .map(|c| bytes(s[c].iter().map(|x| x.peak_kib).max().unwrap_or(0) * 1024))
                .collect::<Vec<_>>()
                .join(" / "),
        ]);
    }
    let wall = |ti: usize, ci: usize| med(&samples[ti][ci], |x| x.wall);
    let mut r = Table::new(&["measure (medians)", "value", "target", "verdict"]);
    r.row(&[
        "rewind `ls -R` of the point".to_string(),
        secs(wall(0, 0)),
        format!("< {LS_TARGET_SECS:.0} s"),
        verdict(wall(0, 0) < LS_TARGET_SECS).to_string(),
    ]);
    for (ci, (cname, _)) in cmds.iter().enumerate() {
        for (ti, tool) in tools.iter().enumerate().skip(1) {
            r.row(&[
                format!(
                    "{} `{cname}` / rewind",
                    tool.name.split(' ').next().unwrap_or("")
                ),
                format!("{:.2}×", wall(ti, ci) / wall(0, ci)),
                "—".into(),
                String::new(),
            ]);
        }
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "Tree: the ingest tree ({} files in {} directories, {}), stored by each tool in a fresh \
         repository (rewind {}, restic {}, borg {}; `du -sb`). The tools take turns (each \
         repository is deleted before the next is made, to spare the disk); each tool: {} rounds of \
         the three commands, each command on a fresh mount after the repository was read once \
         (untimed, page cache warm) and `sync`: mount, the command on the newest point in time, \
         unmount; medians. \"Mounted after\" is from the mount \
         command to the view being there. The mount process's CPU is read from `/proc/PID/stat` \
         around the command, its peak RSS (`VmHWM`) just before unmounting.\n",
        sum.files,
        sum.dirs,
        bytes(sum.bytes),
        bytes(sizes[0]),
        bytes(sizes[1]),
        bytes(sizes[2]),
        cfg.ingest_runs,
    );
    out.push_str(&t.render());
    out.push('\n');
    out.push_str(&r.render());
    let w = cfg.work.display().to_string();
    let _ = writeln!(
        out,
        "\nCommands (`$W` = {w}; `$W/bin/rewind` is a copy of `target/release/rewind`; `$M` the mount \
         point, `$T` = {}):\n\n```sh",
        rel.display()
    );
    let mnt = base.join("mnt");
    for tool in &tools {
        let _ = writeln!(
            out,
            "{}",
            (tool.mount)(&mnt)
                .display()
                .replace(&mnt.display().to_string(), "$M")
                .replace(&w, "$W")
        );
    }
    for (_, script) in &cmds {
        for tool in &tools {
            let _ = writeln!(out, "{}", script.replace("{}", tool.view_shown));
        }
    }
    let _ = writeln!(out, "```");
    // The repositories are 4 GB together: not kept for later parts.
    let _ = fs::remove_dir_all(&base);
    Ok(out)
}
