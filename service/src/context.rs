//! Where things are for the user who runs `rewind service`: read from the
//! process once, then handed to the plans as plain data (tests make their
//! own).

use std::path::PathBuf;

use anyhow::{Context as _, Result};

/// Where the Debian package installs the agent's user unit.
pub(crate) const PACKAGED_UNIT: &str = "/usr/lib/systemd/user/rewind.service";

/// Where things are for the user who runs `rewind service`.
pub(crate) struct Context {
    /// `$HOME`.
    pub home: PathBuf,
    /// `$XDG_CONFIG_HOME`, else `~/.config`.
    pub config_home: PathBuf,
    /// The absolute path of the running rewind binary.
    pub exe: PathBuf,
    /// The user's id (launchd's `gui/UID` domain).
    pub uid: u32,
    /// The user's name (`loginctl enable-linger NAME`).
    pub user: String,
    /// Where the Debian package puts the user unit.
    pub packaged_unit: PathBuf,
}

impl Context {
    /// The context of the running process.
    pub fn current() -> Result<Context> {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .context("HOME is not set")?;
        let config_home = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| home.join(".config"));
        let exe = std::env::current_exe().context("cannot find the running rewind binary")?;
        let uid = rustix::process::getuid().as_raw();
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
            .or_else(|| std::env::var("USER").ok())
            .with_context(|| format!("no user name for uid {uid}"))?;
        Ok(Context {
            home,
            config_home,
            exe,
            uid,
            user,
            packaged_unit: PathBuf::from(PACKAGED_UNIT),
        })
    }
}

#[cfg(test)]
impl Context {
    /// A user `ada` (uid 501) whose home, config and packaged unit lie
    /// under `root`.
    pub fn for_tests(root: &std::path::Path) -> Context {
        Context {
            home: root.join("home"),
            config_home: root.join("config"),
            exe: PathBuf::from("/opt/rewind/bin/rewind"),
            uid: 501,
            user: "ada".into(),
            packaged_unit: root.join("packaged/rewind.service"),
        }
    }
}
