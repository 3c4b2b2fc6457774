//! `rewind mount DIR`: the history as files (the rewind-mount crate), in
//! the foreground until Ctrl-C or an unmount.

use std::path::Path;

use anyhow::{Context, Result, bail};
use rewind_agent::Target;

use crate::args::open;

pub(crate) fn mount(t: &Target, dir: &Path, allow_other: bool) -> Result<i32> {
    let dir = rewind_core::path::absolute(dir)
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    if !dir.is_dir() {
        bail!("{} is not a directory (create it first)", dir.display());
    }
    let o = open(t)?;
    let opts = rewind_mount::MountOptions {
        allow_other,
        ..Default::default()
    };
    let shown = dir.display().to_string();
    rewind_mount::serve(o.repo.clone(), &o.client, &dir, &opts, || {
        eprintln!(
            "rewind: {} mounted at {shown}: latest/, at/<time>/, days/, versions/ \
             (Ctrl-C or `fusermount -u {shown}` to unmount)",
            o.describe
        );
    })
    .map_err(|e| match e {
        rewind_mount::MountError::Mount { .. } if !Path::new("/dev/fuse").exists() => {
            anyhow::Error::new(e)
                .context("/dev/fuse is missing (load the fuse module: modprobe fuse)")
        }
        e => e.into(),
    })?;
    eprintln!("rewind: unmounted {shown}");
    Ok(0)
}
