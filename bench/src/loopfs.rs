//! A filesystem made by the benchmark on a loop device: a sparse image
//! under the work directory, made with `mkfs.*` and mounted, unmounted when
//! dropped. Only for root, with the filesystem's tools installed; parts
//! that use one say so in their report and run without it otherwise.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::run::Cmd;

/// A mounted loop filesystem (unmounted when dropped).
pub struct LoopFs {
    mnt: PathBuf,
}

impl LoopFs {
    /// `kind` (`ext4`, `btrfs`) of `size` (as `truncate -s` takes it) in
    /// `img`, mounted at `mnt`. `Ok(None)`, with the reason on stderr, when
    /// this process is not root, `mkfs.KIND` is missing, or making or
    /// mounting it fails: the caller runs on the work directory instead.
    pub fn make(kind: &str, size: &str, img: &Path, mnt: &Path) -> Result<Option<LoopFs>> {
        let mkfs = format!("mkfs.{kind}");
        if !rustix::process::geteuid().is_root() {
            eprintln!("rewind-bench: no {kind} loop device (needs root)");
            return Ok(None);
        }
        if Cmd::shell(&format!("command -v {mkfs}"))
            .run_quiet()
            .is_err()
        {
            eprintln!("rewind-bench: no {kind} loop device ({mkfs} is not installed)");
            return Ok(None);
        }
        fs::create_dir_all(mnt)?;
        let _ = fs::remove_file(img);
        Cmd::new("truncate")
            .args(["-s", size])
            .arg(img)
            .run_quiet()?;
        // -F: mkfs.ext4 asks before it formats a regular file.
        let force = if kind == "ext4" { "-F" } else { "-f" };
        let made = Cmd::new(&mkfs)
            .args(["-q", force])
            .arg(img)
            .run_quiet()
            .and_then(|_| {
                Cmd::new("mount")
                    .args(["-o", "loop"])
                    .arg(img)
                    .arg(mnt)
                    .run_quiet()
            });
        if let Err(e) = made {
            // A container without loop devices, for one.
            eprintln!("rewind-bench: no {kind} loop device: {e:#}");
            let _ = fs::remove_file(img);
            return Ok(None);
        }
        Ok(Some(LoopFs {
            mnt: mnt.to_path_buf(),
        }))
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mnt
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Cmd::new("umount").arg(&self.mnt).run_quiet();
    }
}
