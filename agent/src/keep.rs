//! What a restore must never touch: paths the agent does not protect
//! (the excludes recorded in `agent.json`, the state directory, a local
//! repository), so that `rewind restore --delete` leaves them where they
//! are.

use std::path::{Path, PathBuf};

use anyhow::Result;
use rewind_watcher::IgnoreRules;

use crate::paths::state_dir;
use crate::pipeline::AgentConfig;
use crate::target::Opened;

/// The rules of the protected root that holds `target` (or of `target`
/// itself, outside every recorded root): excludes the agent recorded in
/// its `agent.json` beside the journal, and never the state directory or
/// a local repository.
pub fn restore_keep_rules(o: &Opened, target: &Path) -> Result<IgnoreRules> {
    let cfg: AgentConfig = std::fs::read(o.jdir.join("agent.json"))
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or_default();
    let root: PathBuf = cfg
        .roots
        .iter()
        .find(|root| target.starts_with(root))
        .cloned()
        .unwrap_or_else(|| target.to_path_buf());
    let mut never = vec![state_dir()?];
    never.extend(o.local.clone());
    Ok(IgnoreRules::new(
        std::slice::from_ref(&root),
        &cfg.excludes,
        &never,
    )?)
}
