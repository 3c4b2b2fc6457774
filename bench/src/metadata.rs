//! Part 5: what full metadata (extended attributes and POSIX ACLs) costs a
//! capture and a restore, and how rewind and restic handle a large sparse
//! file.
//!
//! (a) Two copies of the same tree of small text files: A plain; B with two
//! `user.*` extended attributes (one 32-byte value shared by every file, one
//! 100-byte value unique to each) and an access ACL with a named user entry
//! on every file and directory, and a default ACL on every directory. Each
//! is captured (`rewind watch TREE --once`) and restored (`rewind restore
//! TREE --at now --to DEST`) in a fresh repository, [`Config::ingest_runs`]
//! rounds, medians. The restored B tree is checked on a sample.
//!
//! (b) One sparse file (a few MiB of data in a 100 GiB hole) captured and
//! restored by rewind and by restic.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::Config;
use crate::agent::Setup;
use crate::datagen::{TextGen, derive_seed, random_bytes};
use crate::report::{Table, bytes, median, secs, verdict};
use crate::run::{Cmd, Measured, fresh_dir, measure, sync};

/// Version of the generated trees (bump when their content changes).
const TREE_VERSION: u32 = 1;
/// Files per directory.
const FILES_PER_DIR: usize = 100;
/// Name of the extended attribute shared by every file.
const XATTR_COMMON: &str = "user.bench.common";
/// Name of the extended attribute unique to each file.
const XATTR_UNIQUE: &str = "user.bench.unique";
/// The user named in the ACLs.
const ACL_USER: &str = "nobody";
/// Files of the restored B tree checked.
const SAMPLE: usize = 20;
/// Data in the sparse file: this many extents of 1 MiB.
const SPARSE_EXTENTS: u64 = 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Apparent size of the sparse file at scale 1.
const SPARSE_SIZE: u64 = 100 * GIB;
/// Apparent size of restic's sparse file at scale 1: restic 0.14's restore
/// writes holes out as zeros (`restore --sparse` came in 0.15), so 100 GiB
/// would not fit on the disk, and would take far longer than this part may.
const RESTIC_SPARSE_SIZE: u64 = 10 * GIB;
/// Cap of each restic command of the sparse test, seconds.
const RESTIC_CAP_SECS: u64 = 180;

/// Number of directories of the tree.
fn dir_count(cfg: &Config) -> usize {
    ((500.0 * cfg.scale).round() as usize).max(5)
}

fn dir_name(d: usize) -> String {
    format!("d{d:04}")
}

fn file_name(f: usize) -> String {
    format!("f{f:03}.txt")
}

/// The 32-byte value shared by every file.
fn common_value(seed: u64) -> Vec<u8> {
    random_bytes(derive_seed(seed, 5000), 32)
}

/// The 100-byte value of object `index` (files: `d * 100 + f`; directories
/// `1_000_000 + d`; the root `2_000_000`).
fn unique_value(seed: u64, index: u64) -> Vec<u8> {
    random_bytes(derive_seed(derive_seed(seed, 5001), index), 100)
}

/// Extended attribute names of the POSIX ACLs (the kernel's own values,
/// set and read without libacl).
const ACL_ACCESS: &str = "system.posix_acl_access";
const ACL_DEFAULT: &str = "system.posix_acl_default";

/// The ACL of every file or directory, in rewind's text form.
fn acl(is_dir: bool) -> String {
    let (own, other) = if is_dir { ("rwx", "rx") } else { ("rw", "r") };
    format!("u::{own}\ng::{other}\no::{other}\nu:{ACL_USER}:{other}\nm::{other}\n")
}

/// Give `path` the full metadata of object `index`.
fn decorate(path: &Path, is_dir: bool, seed: u64, index: u64) -> Result<()> {
    xattr::set(path, XATTR_COMMON, &common_value(seed))
        .with_context(|| format!("setxattr {}", path.display()))?;
    xattr::set(path, XATTR_UNIQUE, &unique_value(seed, index))
        .with_context(|| format!("setxattr {}", path.display()))?;
    let value = rewind_fsmeta::posix_acl_value(&acl(is_dir))?;
    xattr::set(path, ACL_ACCESS, &value).with_context(|| format!("setfacl {}", path.display()))?;
    if is_dir {
        xattr::set(path, ACL_DEFAULT, &value)
            .with_context(|| format!("setfacl -d {}", path.display()))?;
    }
    Ok(())
}

/// Check that `path` has the full metadata of object `index`.
fn check(path: &Path, is_dir: bool, seed: u64, index: u64) -> Result<()> {
    let common = xattr::get(path, XATTR_COMMON)?;
    if common.as_deref() != Some(&common_value(seed)[..]) {
        bail!("{}: {XATTR_COMMON} is {common:?}", path.display());
    }
    let unique = xattr::get(path, XATTR_UNIQUE)?;
    if unique.as_deref() != Some(&unique_value(seed, index)[..]) {
        bail!("{}: {XATTR_UNIQUE} is {unique:?}", path.display());
    }
    let named = |name: &str, default: bool| -> Result<bool> {
        let Some(raw) = xattr::get(path, name)? else {
            return Ok(false);
        };
        let text = rewind_fsmeta::posix_acl_text(&raw, default)?;
        Ok(text.lines().any(|l| {
            let f: Vec<&str> = l.split(':').collect();
            f.len() == 5
                && f[2] == "user"
                && (f[3] == ACL_USER || f[3] == "65534")
                && f[4].contains("read")
        }))
    };
    let access = named(ACL_ACCESS, false)?;
    if !access {
        bail!("{}: access ACL lacks u:{ACL_USER}", path.display());
    }
    if is_dir && !named(ACL_DEFAULT, true)? {
        bail!("{}: default ACL lacks u:{ACL_USER}", path.display());
    }
    Ok(())
}

/// The two cached trees (plain, full metadata), generated if missing.
fn trees(cfg: &Config) -> Result<(PathBuf, PathBuf, u64, u64)> {
    let name = format!("metadata-v{TREE_VERSION}-s{}-seed{}", cfg.scale, cfg.seed);
    let root = cfg.work.join(&name);
    let done = cfg.work.join(format!("{name}.complete"));
    let (a, b) = (root.join("plain"), root.join("full"));
    let dirs = dir_count(cfg);
    if done.exists() && a.is_dir() && b.is_dir() {
        let text = fs::read_to_string(&done)?;
        let total = text.trim().parse().unwrap_or(0);
        return Ok((a, b, (dirs * FILES_PER_DIR) as u64, total));
    }
    fresh_dir(&root)?;
    eprintln!(
        "rewind-bench: generating {} ({} files twice)",
        root.display(),
        dirs * FILES_PER_DIR
    );
    let t = Instant::now();
    let text = TextGen::new(cfg.seed, 0);
    let mut total = 0u64;
    for d in 0..dirs {
        let (da, db) = (a.join(dir_name(d)), b.join(dir_name(d)));
        fs::create_dir_all(&da)?;
        fs::create_dir_all(&db)?;
        for f in 0..FILES_PER_DIR {
            let index = (d * FILES_PER_DIR + f) as u64;
            let mut g = text.reseed(derive_seed(cfg.seed, 6000 + index));
            let size = 1024 + (derive_seed(cfg.seed, 7000 + index) % (3 * 1024 + 1)) as usize;
            let data = g.bytes(size);
            total += data.len() as u64;
            fs::write(da.join(file_name(f)), &data)?;
            let pb = db.join(file_name(f));
            fs::write(&pb, &data)?;
            decorate(&pb, false, cfg.seed, index)?;
        }
        decorate(&db, true, cfg.seed, 1_000_000 + d as u64)?;
    }
    decorate(&b, true, cfg.seed, 2_000_000)?;
    sync()?;
    eprintln!(
        "rewind-bench: generated 2 × {} files, {} each, in {:.1} s",
        dirs * FILES_PER_DIR,
        bytes(total),
        t.elapsed().as_secs_f64()
    );
    fs::write(&done, format!("{total}\n"))?;
    Ok((a, b, (dirs * FILES_PER_DIR) as u64, total))
}

/// Runs of one command.
#[derive(Default)]
struct Runs {
    cmd: Option<Cmd>,
    runs: Vec<Measured>,
}

impl Runs {
    fn wall(&self) -> f64 {
        median(&self.runs.iter().map(|m| m.wall).collect::<Vec<_>>())
    }
    fn cpu(&self) -> f64 {
        median(&self.runs.iter().map(Measured::cpu).collect::<Vec<_>>())
    }
    fn each(&self) -> String {
        self.runs
            .iter()
            .map(|m| format!("{:.2}", m.wall))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// Read the tree (untimed) so that it is in the page cache.
fn warm(tree: &Path) -> Result<()> {
    Cmd::shell(&format!("tar cf - -C {} . | cat >/dev/null", q(tree))).run_quiet()?;
    Ok(())
}

fn timed(r: &mut Runs, cmd: Cmd, log: &Path) -> Result<Measured> {
    sync()?;
    eprintln!("rewind-bench: {}", cmd.display());
    let m = measure(&cmd, log)?;
    sync()?;
    eprintln!("rewind-bench:   {:.2} s wall, {:.2} s CPU", m.wall, m.cpu());
    r.runs.push(m.clone());
    r.cmd = Some(cmd);
    Ok(m)
}

/// Allocated bytes of a file (`st_blocks × 512`).
fn allocated(p: &Path) -> Result<u64> {
    Ok(fs::metadata(p)
        .with_context(|| p.display().to_string())?
        .blocks()
        * 512)
}

/// Make `dir/big.sparse`: `size` bytes apparent, [`SPARSE_EXTENTS`] random
/// 1 MiB extents spread across it.
fn make_sparse(dir: &Path, size: u64, seed: u64) -> Result<PathBuf> {
    fresh_dir(dir)?;
    let p = dir.join("big.sparse");
    let f = fs::File::create(&p)?;
    f.set_len(size)?;
    let step = size / SPARSE_EXTENTS;
    for i in 0..SPARSE_EXTENTS {
        // 1 MiB-aligned, somewhere in the middle of its tenth.
        let at = (i * step + step / 3) / MIB * MIB;
        f.write_at(&random_bytes(derive_seed(seed, 8000 + i), MIB as usize), at)?;
    }
    f.sync_all()?;
    Ok(p)
}

/// Check that `restored` has the length and the data extents of `orig`.
fn same_sparse(orig: &Path, restored: &Path) -> Result<()> {
    let (a, b) = (fs::File::open(orig)?, fs::File::open(restored)?);
    let (la, lb) = (a.metadata()?.len(), b.metadata()?.len());
    if la != lb {
        bail!("{}: length {lb}, expected {la}", restored.display());
    }
    let step = la / SPARSE_EXTENTS;
    let (mut x, mut y) = (vec![0; MIB as usize], vec![0; MIB as usize]);
    for i in 0..SPARSE_EXTENTS {
        let at = (i * step + step / 3) / MIB * MIB;
        a.read_exact_at(&mut x, at)?;
        b.read_exact_at(&mut y, at)?;
        if x != y {
            bail!("{}: extent {i} differs", restored.display());
        }
    }
    Ok(())
}

/// A restic command with a timeout: `Ok(None)` when it ran out of time.
fn restic_capped(r: &mut Runs, cmd: Cmd, log: &Path) -> Result<Option<Measured>> {
    let capped = Cmd {
        program: "timeout".into(),
        args: [RESTIC_CAP_SECS.to_string().into(), cmd.program.clone()]
            .into_iter()
            .chain(cmd.args.iter().cloned())
            .collect(),
        env: cmd.env.clone(),
    };
    sync()?;
    eprintln!("rewind-bench: {}", capped.display());
    let t = Instant::now();
    match measure(&capped, log) {
        Ok(m) => {
            eprintln!("rewind-bench:   {:.2} s wall", m.wall);
            r.runs.push(m.clone());
            r.cmd = Some(cmd);
            sync()?;
            Ok(Some(m))
        }
        Err(e) if t.elapsed().as_secs() + 1 >= RESTIC_CAP_SECS => {
            eprintln!("rewind-bench:   over {RESTIC_CAP_SECS} s: {e:#}");
            r.cmd = Some(cmd);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Run the metadata part; returns its Markdown section.
pub fn run(cfg: &Config) -> Result<String> {
    let (a, b, files, total) = trees(cfg)?;
    let base = cfg.work.join("metadata");
    if base.join("restored").exists() || base.join("sparse").exists() {
        // Left by an interrupted run (a finished one removes them).
        eprintln!(
            "rewind-bench: removing {} and waiting 5 minutes for ext4 to reuse its inodes",
            base.display()
        );
        fs::remove_dir_all(&base)?;
        sync()?;
        std::thread::sleep(std::time::Duration::from_secs(300));
    }
    let base = fresh_dir(&base)?;
    let logs = fresh_dir(&base.join("logs"))?;

    // (a) Metadata overhead.
    let mut cap = [Runs::default(), Runs::default()];
    let mut res = [Runs::default(), Runs::default()];
    // The same work by standard tools, as the floor this filesystem sets:
    // GNU tar reading every file with its xattrs and ACLs, and `cp -a`
    // writing a copy with them.
    let mut tar = [Runs::default(), Runs::default()];
    let mut cp = [Runs::default(), Runs::default()];
    // And the floor: only the system calls a capture and a restore cannot
    // do without (crate::floor), timed in this process.
    let loaded = [crate::floor::Tree::load(&a)?, crate::floor::Tree::load(&b)?];
    let mut floor_cap = [Vec::new(), Vec::new()];
    let mut floor_res = [Vec::new(), Vec::new()];
    let mut checked = 0;
    for round in 0..cfg.ingest_runs {
        for (i, tree) in [&a, &b].into_iter().enumerate() {
            let tag = ["a", "b"][i];
            let s = Setup::fresh(&cfg.rewind, &base.join(format!("rewind-{tag}")))?;
            warm(tree)?;
            timed(
                &mut cap[i],
                s.cmd(["watch".as_ref(), tree.as_os_str(), "--once".as_ref()]),
                &logs.join(format!("capture-{tag}-{round}.log")),
            )?;
            // Kept until the end of the part: ext4 skips inodes deleted
            // in the last minutes when it allocates new ones
            // (`recently_deleted`), so a restore right after deleting the
            // last one spends ten times the system time.
            let dest = base.join(format!("restored/{tag}-{round}"));
            timed(
                &mut res[i],
                s.cmd([
                    "restore".as_ref(),
                    tree.as_os_str(),
                    "--at".as_ref(),
                    "now".as_ref(),
                    "--to".as_ref(),
                    dest.as_os_str(),
                ]),
                &logs.join(format!("restore-{tag}-{round}.log")),
            )?;
            warm(tree)?;
            sync()?;
            floor_cap[i].push(crate::floor::capture(tree, i == 1)?);
            sync()?;
            let floor_dest = base.join(format!("restored/floor-{tag}-{round}"));
            floor_res[i].push(crate::floor::restore(&loaded[i], &floor_dest)?);
            sync()?;
            eprintln!(
                "rewind-bench:   floor: capture {:.2} s, restore {:.2} s",
                floor_cap[i][round], floor_res[i][round]
            );
            warm(tree)?;
            timed(
                &mut tar[i],
                Cmd::shell(&format!(
                    "tar --xattrs --xattrs-include='*' --acls -cf - -C {} . | cat >/dev/null",
                    q(tree)
                )),
                &logs.join(format!("tar-{tag}-{round}.log")),
            )?;
            let cp_dest = base.join(format!("restored/cp-{tag}-{round}"));
            timed(
                &mut cp[i],
                Cmd::new("cp").arg("-a").arg(tree).arg(&cp_dest),
                &logs.join(format!("cp-{tag}-{round}.log")),
            )?;
            if i == 1 {
                // A sample of files spread over the tree, and their dirs.
                let dirs = dir_count(cfg);
                for k in 0..SAMPLE {
                    let d = (k * 7919 + round) % dirs;
                    let f = (k * 31 + round * 13) % FILES_PER_DIR;
                    let dd = dest.join(dir_name(d));
                    check(
                        &dd.join(file_name(f)),
                        false,
                        cfg.seed,
                        (d * FILES_PER_DIR + f) as u64,
                    )
                    .context("restored tree B lacks its metadata")?;
                    check(&dd, true, cfg.seed, 1_000_000 + d as u64)
                        .context("restored tree B lacks its metadata")?;
                    checked += 1;
                }
            }
        }
        eprintln!(
            "rewind-bench: metadata round {} of {} done",
            round + 1,
            cfg.ingest_runs
        );
    }
    let cap_x = cap[1].wall() / cap[0].wall();
    let res_x = res[1].wall() / res[0].wall();
    let tar_x = tar[1].wall() / tar[0].wall();
    let cp_x = cp[1].wall() / cp[0].wall();
    let fm = |v: &[f64]| median(v);
    let floor_cap_x = fm(&floor_cap[1]) / fm(&floor_cap[0]);
    let floor_res_x = fm(&floor_res[1]) / fm(&floor_res[0]);
    let pct = |x: f64| 100.0 * (x - 1.0);

    // (b) Sparse file.
    let size = ((SPARSE_SIZE as f64 * cfg.scale) as u64).max(GIB);
    let rsize = ((RESTIC_SPARSE_SIZE as f64 * cfg.scale) as u64)
        .max(GIB)
        .min(size);
    let sp = base.join("sparse");
    let src = make_sparse(&sp.join("src"), size, cfg.seed)?;
    let src_dir = sp.join("src");
    let s = Setup::fresh(&cfg.rewind, &sp.join("rewind"))?;
    let mut rw_cap = Runs::default();
    let mut rw_res = Runs::default();
    timed(
        &mut rw_cap,
        s.cmd(["watch".as_ref(), src_dir.as_os_str(), "--once".as_ref()]),
        &logs.join("sparse-rewind-capture.log"),
    )?;
    let rw_dest = sp.join("rewind-restored");
    timed(
        &mut rw_res,
        s.cmd([
            "restore".as_ref(),
            src_dir.as_os_str(),
            "--at".as_ref(),
            "now".as_ref(),
            "--to".as_ref(),
            rw_dest.as_os_str(),
        ]),
        &logs.join("sparse-rewind-restore.log"),
    )?;
    let rw_file = rw_dest.join("big.sparse");
    same_sparse(&src, &rw_file).context("rewind's restored sparse file")?;
    let (src_alloc, rw_alloc) = (allocated(&src)?, allocated(&rw_file)?);
    let rw_repo = crate::run::du_bytes(&s.repo)?;
    fs::remove_dir_all(&rw_dest)?;

    // restic, on its own (smaller) file when the apparent size is capped.
    let rsrc_dir = sp.join("restic-src");
    let rsrc = if rsize == size {
        fs::rename(&src_dir, &rsrc_dir)?;
        rsrc_dir.join("big.sparse")
    } else {
        fs::remove_dir_all(&src_dir)?;
        make_sparse(&rsrc_dir, rsize, cfg.seed)?
    };
    let rsrc_alloc = allocated(&rsrc)?;
    let rdir = fresh_dir(&sp.join("restic"))?;
    let restic = |args: &[&str]| crate::run::restic(&rdir, args);
    restic(&["init"]).run_quiet()?;
    let mut rs_cap = Runs::default();
    let mut rs_res = Runs::default();
    let rs_dest = sp.join("restic-restored");
    let backed = restic_capped(
        &mut rs_cap,
        restic(&["backup"]).arg(&rsrc_dir),
        &logs.join("sparse-restic-backup.log"),
    )?;
    let mut rs_alloc = None;
    if backed.is_some() {
        let restored = restic_capped(
            &mut rs_res,
            restic(&["restore", "latest", "--target"]).arg(&rs_dest),
            &logs.join("sparse-restic-restore.log"),
        )?;
        // restic restores the absolute path below the target.
        let f = rs_dest.join(rsrc.strip_prefix("/").unwrap_or(&rsrc));
        if restored.is_some() {
            same_sparse(&rsrc, &f).context("restic's restored sparse file")?;
        }
        rs_alloc = allocated(&f).ok();
    }
    let rs_repo = crate::run::du_bytes(&rdir.join("repo"))?;
    // The big files go, and the restored trees.
    fs::remove_dir_all(&sp)?;
    fs::remove_dir_all(base.join("restored"))?;

    // Report.
    let mut t = Table::new(&[
        "tree",
        "capture wall (median)",
        "capture CPU",
        "restore wall (median)",
        "restore CPU",
        "capture walls",
        "restore walls",
    ]);
    for (i, name) in ["A: plain", "B: xattrs + ACLs"].into_iter().enumerate() {
        t.row(&[
            name.to_string(),
            secs(cap[i].wall()),
            secs(cap[i].cpu()),
            secs(res[i].wall()),
            secs(res[i].cpu()),
            cap[i].each(),
            res[i].each(),
        ]);
    }
    t.row(&[
        "B / A".to_string(),
        format!("{cap_x:.3} ({:+.1} %)", pct(cap_x)),
        format!("{:.3}", cap[1].cpu() / cap[0].cpu()),
        format!("{res_x:.3} ({:+.1} %)", pct(res_x)),
        format!("{:.3}", res[1].cpu() / res[0].cpu()),
        String::new(),
        String::new(),
    ]);
    let mut r = Table::new(&[
        "standard tool (same trees, same rounds)",
        "A: plain (median)",
        "B: xattrs + ACLs (median)",
        "B / A",
        "A walls",
        "B walls",
    ]);
    let each = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (name, v, x) in [
        (
            "floor of a capture: `openat`, `fstat`, `read` (+ `flistxattr`, `fgetxattr` on B)",
            &floor_cap,
            floor_cap_x,
        ),
        (
            "floor of a restore: `openat`, `write`, `fchmod`, `futimens` (+ `fsetxattr` on B)",
            &floor_res,
            floor_res_x,
        ),
    ] {
        r.row(&[
            name.to_string(),
            secs(fm(&v[0])),
            secs(fm(&v[1])),
            format!("{x:.3} ({:+.1} %)", pct(x)),
            each(&v[0]),
            each(&v[1]),
        ]);
    }
    for (name, runs, x) in [
        ("read: `tar --xattrs --acls` to a pipe", &tar, tar_x),
        ("write: `cp -a` (xattrs and ACLs kept)", &cp, cp_x),
    ] {
        r.row(&[
            name.to_string(),
            secs(runs[0].wall()),
            secs(runs[1].wall()),
            format!("{x:.3} ({:+.1} %)", pct(x)),
            runs[0].each(),
            runs[1].each(),
        ]);
    }
    let over = format!("over {RESTIC_CAP_SECS} s");
    let wall_or = |m: &Option<Measured>| m.as_ref().map(|m| secs(m.wall));
    let mut u = Table::new(&[
        "tool",
        "apparent size",
        "capture / backup wall",
        "restore wall",
        "allocated, original",
        "allocated, restored",
        "repository (`du -sb`)",
    ]);
    u.row(&[
        "rewind".to_string(),
        bytes(size),
        secs(rw_cap.wall()),
        secs(rw_res.wall()),
        bytes(src_alloc),
        bytes(rw_alloc),
        bytes(rw_repo),
    ]);
    u.row(&[
        "restic".to_string(),
        bytes(rsize),
        wall_or(&backed).unwrap_or_else(|| over.clone()),
        if backed.is_none() {
            "—".to_string()
        } else {
            wall_or(&rs_res.runs.last().cloned()).unwrap_or_else(|| over.clone())
        },
        bytes(rsrc_alloc),
        rs_alloc.map(bytes).unwrap_or_else(|| "—".into()),
        bytes(rs_repo),
    ]);

    let mut s = String::new();
    let _ = writeln!(
        s,
        "(a) Two copies of a tree of {files} text files of 1–4 KiB ({} in all) in {} directories of {FILES_PER_DIR}: \
         A plain; B with, on every file and directory, two extended attributes (`{XATTR_COMMON}`, 32 bytes, \
         the same everywhere; `{XATTR_UNIQUE}`, 100 bytes, unique) and an access ACL with a named user entry \
         (`u:{ACL_USER}:r--` or `r-x`, plus mask), and a default ACL on every directory. Each round: for A then B, \
         a fresh repository, the tree read once (untimed, page cache warm), `sync`, capture, `sync`, restore \
         to a new directory (restored trees are deleted only at the end of the part: ext4 skips inodes \
         deleted in the last minutes when allocating new ones, and a restore right after deleting 50,000 \
         files took ten times the system time). Rounds: {}; medians. The restored B tree was checked on {checked} sampled files and \
         their directories (both xattrs with the right values, the named ACL entry, the default ACL): all \
         had them.\n",
        bytes(total),
        dir_count(cfg),
        cfg.ingest_runs,
    );
    s.push_str(&t.render());
    let _ = writeln!(
        s,
        "\nTarget overhead < 25 %: {} (capture {:+.1} %, restore {:+.1} %)\n",
        verdict(pct(cap_x) < 25.0 && pct(res_x) < 25.0),
        pct(cap_x),
        pct(res_x)
    );
    let _ = writeln!(
        s,
        "What the same metadata costs on this filesystem, measured in the same rounds (each right after \
         rewind's runs on that tree, page cache warm; the copies are kept until the end like the restores). \
         The floor rows are the system calls alone, made by this benchmark in one thread from trees it \
         loaded beforehand (`bench/src/floor.rs`): no tool can do a capture or restore of B with less.\n"
    );
    s.push_str(&r.render());
    let _ = writeln!(
        s,
        "\nSeconds B costs more than A: rewind's capture {:+.2} s against the floor's {:+.2} s; \
         rewind's restore {:+.2} s against the floor's {:+.2} s.\n",
        cap[1].wall() - cap[0].wall(),
        fm(&floor_cap[1]) - fm(&floor_cap[0]),
        res[1].wall() - res[0].wall(),
        fm(&floor_res[1]) - fm(&floor_res[0]),
    );
    let _ = writeln!(
        s,
        "(b) One sparse file alone in a directory: {} apparent, {SPARSE_EXTENTS} random extents of 1 MiB \
         spread across it (made with `set_len` and `write_at`), captured and restored once by each tool; \
         restored files checked (length, data extents). Each restic command is capped at {RESTIC_CAP_SECS} s \
         (`timeout`).\n",
        bytes(size)
    );
    if rsize != size {
        let _ = writeln!(
            s,
            "**restic ran on a smaller file ({} apparent, the same {SPARSE_EXTENTS} MiB of data)**: restic 0.14 \
             reads every byte of the holes on backup (restic issue #3903) and writes them out as zeros on \
             restore (`restore --sparse` came in 0.15, restic pull request #3854), so restic would need the full {} of disk \
             to restore the file, and far longer than this part may take. Its times grow about linearly with the \
             apparent size.\n",
            bytes(rsize),
            bytes(size)
        );
    }
    s.push_str(&u.render());
    let w = cfg.work.display().to_string();
    let _ = writeln!(
        s,
        "\nCommands (`$W` = {w}; `$W/bin/rewind` is a copy of `target/release/rewind`; restic with \
         `RESTIC_PASSWORD` set and its repository made by `restic init`, not timed):\n\n```sh"
    );
    let all = [
        &cap[0], &res[0], &cap[1], &res[1], &tar[0], &cp[0], &tar[1], &cp[1], &rw_cap, &rw_res,
        &rs_cap, &rs_res,
    ];
    for r in all {
        if let Some(c) = &r.cmd {
            let _ = writeln!(s, "{}", c.display().replace(&w, "$W"));
        }
    }
    let _ = writeln!(s, "```");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_set_and_checked() {
        let d = std::env::temp_dir().join(format!("rewind-bench-meta-{}", std::process::id()));
        fresh_dir(&d).unwrap();
        let f = d.join("f");
        fs::write(&f, b"x").unwrap();
        decorate(&f, false, 1, 7).unwrap();
        decorate(&d, true, 1, 8).unwrap();
        check(&f, false, 1, 7).unwrap();
        check(&d, true, 1, 8).unwrap();
        assert!(check(&f, false, 1, 9).is_err());
        let plain = d.join("plain");
        fs::write(&plain, b"x").unwrap();
        assert!(check(&plain, false, 1, 7).is_err());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn sparse_files_compare() {
        let d = std::env::temp_dir().join(format!("rewind-bench-sparse-{}", std::process::id()));
        let a = make_sparse(&d.join("a"), 64 * MIB, 1).unwrap();
        let b = make_sparse(&d.join("b"), 64 * MIB, 1).unwrap();
        let c = make_sparse(&d.join("c"), 64 * MIB, 2).unwrap();
        same_sparse(&a, &b).unwrap();
        assert!(same_sparse(&a, &c).is_err());
        assert!(allocated(&a).unwrap() < 32 * MIB);
        fs::remove_dir_all(&d).unwrap();
    }
}
