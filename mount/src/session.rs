//! Mounting, serving and unmounting: the per-OS part (Linux, and macOS
//! where macFUSE is installed; see docs/platforms.md).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fuser::{BackgroundSession, Config, MountOption, SessionACL};
use rewind_core::Repository;

use crate::content::ChunkCache;
use crate::fs::RewindFs;
use crate::views::Views;
use crate::{MountError, MountOptions};

/// A mounted view of a repository, until [`Mounted::unmount`] (or until
/// something else unmounts it: [`Mounted::wait`] returns then).
pub struct Mounted {
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
}

/// Mount the history of `client` in `repo` at `mountpoint` (an existing
/// directory) and serve it from background threads.
pub fn mount(
    repo: Arc<dyn Repository>,
    client: &str,
    mountpoint: &Path,
    opts: &MountOptions,
) -> Result<Mounted, MountError> {
    // The mount's own directories belong to the mounting user.
    let owner = (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    let views = Views::new(repo, client.to_string(), owner, opts.recheck);
    let fs = RewindFs::new(views, ChunkCache::new(opts.cache_bytes));
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("rewind".into()),
        MountOption::Subtype("rewind".into()),
        MountOption::RO,
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if opts.allow_other {
        config.acl = SessionACL::All;
    }
    // Several threads, so one slow fetch (a large tree, chunks from a
    // server) does not stall every other request; fuser runs one on
    // anything but Linux.
    config.n_threads = Some(if cfg!(target_os = "linux") {
        opts.threads.max(1)
    } else {
        1
    });
    let err = |source: io::Error| MountError::Mount {
        path: mountpoint.to_path_buf(),
        source,
    };
    let session = fuser::Session::new(fs, mountpoint, &config)
        .map_err(err)?
        .spawn()
        .map_err(err)?;
    Ok(Mounted {
        session: Some(session),
        mountpoint: mountpoint.to_path_buf(),
    })
}

impl Mounted {
    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// True once something else unmounted it (`fusermount -u`, `umount`).
    pub fn is_gone(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }

    /// Unmount and wait for the serving threads. A busy mount point (a
    /// shell inside it) is refused with [`MountError::Busy`], and stays
    /// mounted.
    pub fn unmount(mut self) -> Result<(), MountError> {
        unmount(&self.mountpoint, false).map_err(|e| self.unmount_error(e))?;
        self.join()
    }

    fn unmount_error(&self, source: io::Error) -> MountError {
        if source.raw_os_error() == Some(libc_ebusy()) {
            MountError::Busy {
                path: self.mountpoint.clone(),
            }
        } else {
            MountError::Unmount {
                path: self.mountpoint.clone(),
                source,
            }
        }
    }

    /// Wait until it is unmounted from outside, then for its threads.
    pub fn wait(mut self) -> Result<(), MountError> {
        while !self.is_gone() {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.join()
    }

    fn join(&mut self) -> Result<(), MountError> {
        match self.session.take() {
            Some(s) => s.join().map_err(|source| MountError::Unmount {
                path: self.mountpoint.clone(),
                source,
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.session.is_some() {
            // Detached, so the process does not hang on a busy mount
            // point; fuser unmounts what is left when the session goes.
            let _ = unmount(&self.mountpoint, true);
        }
    }
}

/// Mount, then serve until SIGINT or SIGTERM (then unmount; a busy mount
/// point is detached and served until the last program leaves it, and a
/// second signal ends at once) or until it is unmounted from outside.
/// `ready` is called once the mount is in place.
pub fn serve(
    repo: Arc<dyn Repository>,
    client: &str,
    mountpoint: &Path,
    opts: &MountOptions,
    ready: impl FnOnce(),
) -> Result<(), MountError> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut ids = Vec::new();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let id =
            signal_hook::flag::register(sig, stop.clone()).map_err(|source| MountError::Mount {
                path: mountpoint.to_path_buf(),
                source,
            })?;
        ids.push(id);
    }
    let result = (|| {
        let mut m = mount(repo, client, mountpoint, opts)?;
        ready();
        let mut detached = false;
        while !m.is_gone() {
            if stop.swap(false, Ordering::Relaxed) {
                if detached {
                    tracing::warn!("second signal: ending now");
                    m.session = None;
                    return Ok(());
                }
                match unmount(&m.mountpoint, false) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc_ebusy()) => {
                        tracing::warn!(
                            "{} is busy (a shell or a program is inside it): detached; it goes \
                             when the last one leaves (Ctrl-C again to end now)",
                            m.mountpoint.display()
                        );
                        unmount(&m.mountpoint, true).map_err(|e| m.unmount_error(e))?;
                        detached = true;
                    }
                    Err(e) => return Err(m.unmount_error(e)),
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        m.join()
    })();
    for id in ids {
        signal_hook::low_level::unregister(id);
    }
    result
}

fn libc_ebusy() -> i32 {
    rustix::io::Errno::BUSY.raw_os_error()
}

/// Unmount `mp`; `lazy` detaches it even while busy.
#[cfg(target_os = "linux")]
fn unmount(mp: &Path, lazy: bool) -> io::Result<()> {
    use rustix::mount::UnmountFlags;
    let flags = if lazy {
        UnmountFlags::DETACH
    } else {
        UnmountFlags::empty()
    };
    match rustix::mount::unmount(mp, flags) {
        Ok(()) => Ok(()),
        // Not root: the setuid helper unmounts what this user mounted.
        Err(rustix::io::Errno::PERM) => fusermount(mp, lazy),
        Err(e) => Err(e.into()),
    }
}

#[cfg(target_os = "linux")]
fn fusermount(mp: &Path, lazy: bool) -> io::Result<()> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no fusermount3 or fusermount");
    for bin in ["fusermount3", "fusermount"] {
        let mut c = std::process::Command::new(bin);
        c.arg("-u");
        if lazy {
            c.arg("-z");
        }
        match c.arg(mp).stderr(std::process::Stdio::piped()).output() {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => {
                let msg = String::from_utf8_lossy(&out.stderr).into_owned();
                let busy = msg.contains("busy");
                last = if busy {
                    io::Error::from_raw_os_error(libc_ebusy())
                } else {
                    io::Error::other(msg.trim().to_string())
                };
                if busy {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// macOS: `umount` (macFUSE lets the mounting user unmount); a busy mount
/// point is forced off, which is the nearest macOS has to a lazy detach.
#[cfg(target_os = "macos")]
fn unmount(mp: &Path, lazy: bool) -> io::Result<()> {
    let mut c = std::process::Command::new("umount");
    if lazy {
        c.arg("-f");
    }
    let out = c.arg(mp).output()?;
    if out.status.success() {
        return Ok(());
    }
    let msg = String::from_utf8_lossy(&out.stderr).into_owned();
    if msg.contains("busy") {
        return Err(io::Error::from_raw_os_error(libc_ebusy()));
    }
    Err(io::Error::other(msg.trim().to_string()))
}
