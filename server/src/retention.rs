//! Retention on a server is the server's: a policy per client (`client
//! policy NAME SPEC`) over a server default (`policy SPEC`), and one per
//! dump job of a client (`client policy NAME SPEC --dump JOB`; the jobs'
//! own `retention` is the client's configuration, which the server does
//! not take for deleting), all kept in
//! the registry (`clients.json`, replaced by rename), applied by the
//! server: by `serve` on its schedule, or by the admin's `forget` and
//! `prune` while it is stopped. Clients may pin, never forget, prune or
//! unpin (`api.rs` refuses those routes).
//!
//! Prune on the shared repository is two-phase ([`rewind_repo`]'s
//! `PruneOptions::grace`): the server cannot see its clients' journals, so
//! a pack sealed within the grace time is left alone, and an unused pack
//! is condemned first (its chunks are "missing" at once, so a client sends
//! them again) and deleted by a later prune once the grace time has passed
//! and it is still unused. A chunk is live while any client's kept version
//! names it, so content two clients share stays while either needs it.
//! The owners lists (`owners.rs`) are not rewritten: an id whose chunk is
//! gone is "missing" to `missing` (the repository is asked about every
//! owned id) and written again by `chunks`, never reported present.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use rewind_core::forget::{ForgetReport, ForgetRequest, PruneReport};
use rewind_core::retention::Policy;
use rewind_core::{RepoError, Repository, Timestamp};
use rewind_repo::{LocalRepo, PruneOptions};

use crate::data::{DataDir, check_name, load_clients, update_clients};

/// How often `serve` forgets and prunes by itself unless told: daily, as
/// the agent does for a local repository (issue 17).
pub const DEFAULT_EVERY: Duration = Duration::from_secs(24 * 3600);

/// The policy `client` is kept by: its own, else the server's default,
/// else [`rewind_core::retention::DEFAULT_POLICY`].
pub fn policy_for(dir: &DataDir, client: &str) -> Result<Policy> {
    let c = load_clients(dir)?;
    let own = c.get(client).and_then(|r| r.policy.clone());
    let spec = own.or(c.default_policy);
    match spec {
        Some(s) => Policy::parse(&s)
            .with_context(|| format!("{}: the policy of {client}", dir.clients().display())),
        None => Ok(Policy::default_files()),
    }
}

/// A policy as given on the command line (`default`: none of its own).
fn parse_spec(spec: &str) -> Result<Option<String>> {
    if spec.trim() == "default" {
        return Ok(None);
    }
    let p = Policy::parse(spec).map_err(|e| anyhow::anyhow!("policy {spec:?}: {e}"))?;
    Ok(Some(p.to_string()))
}

/// `client policy NAME SPEC`: the policy of one client (`default`: the
/// server's). Returns the policy now in force for it.
pub fn set_client_policy(dir: &DataDir, name: &str, spec: &str) -> Result<String> {
    check_name(name)?;
    let policy = parse_spec(spec)?;
    update_clients(dir, |c| {
        let Some(r) = c.clients.iter_mut().find(|r| r.name == name) else {
            bail!("no client named {name}");
        };
        r.policy = policy;
        Ok(())
    })?;
    Ok(policy_for(dir, name)?.to_string())
}

/// `client policy NAME SPEC --dump JOB`: the policy of one of a client's
/// dump jobs (`default`: `last 14, weekly 13w`). Returns the policy now in
/// force for that job.
pub fn set_dump_policy(dir: &DataDir, name: &str, job: &str, spec: &str) -> Result<String> {
    check_name(name)?;
    let ok = !job.is_empty()
        && job.len() <= 100
        && !job.starts_with('.')
        && job
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        bail!("invalid dump job name {job:?}: use letters, digits, '.', '_' and '-' (not first)");
    }
    let policy = if spec.trim() == "default" {
        None
    } else {
        let p = Policy::parse_series(spec).map_err(|e| anyhow::anyhow!("policy {spec:?}: {e}"))?;
        Some(p.to_string())
    };
    update_clients(dir, |c| {
        let Some(r) = c.clients.iter_mut().find(|r| r.name == name) else {
            bail!("no client named {name}");
        };
        match &policy {
            Some(p) => r.dump_policies.insert(job.to_string(), p.clone()),
            None => r.dump_policies.remove(job),
        };
        Ok(())
    })?;
    Ok(policy.unwrap_or_else(|| Policy::default_series().to_string()))
}

/// The policies of `client`'s dump jobs the admin set, by stream prefix.
fn series_for(dir: &DataDir, client: &str) -> Result<Vec<(Vec<u8>, Policy)>> {
    let c = load_clients(dir)?;
    let Some(r) = c.get(client) else {
        return Ok(Vec::new());
    };
    r.dump_policies
        .iter()
        .map(|(job, spec)| {
            let p = Policy::parse_series(spec).with_context(|| {
                format!(
                    "{}: the policy of {client}'s dump {job}",
                    dir.clients().display()
                )
            })?;
            // A job's streams are `dumps/<job>` and below
            // (`rewind_dumps::stream_path`); a checked name needs no escaping.
            Ok((format!("dumps/{job}").into_bytes(), p))
        })
        .collect()
}

/// `policy SPEC`: the server's default (`default`: the built-in one).
/// Returns the default now in force.
pub fn set_default_policy(dir: &DataDir, spec: &str) -> Result<String> {
    let policy = parse_spec(spec)?;
    update_clients(dir, |c| {
        c.default_policy = policy;
        Ok(())
    })?;
    default_policy(dir)
}

/// The server's default policy, as text.
pub fn default_policy(dir: &DataDir) -> Result<String> {
    let c = load_clients(dir)?;
    Ok(match c.default_policy {
        Some(p) => Policy::parse(&p)
            .with_context(|| format!("{}: the default policy", dir.clients().display()))?
            .to_string(),
        None => Policy::default_files().to_string(),
    })
}

/// The repository opened for `forget` or `prune` by the admin: refused
/// with one line while `serve` holds it.
pub fn open_for_admin(dir: &DataDir) -> Result<LocalRepo> {
    dir.check()?;
    LocalRepo::open_writer(&dir.repo()).map_err(|e| match e {
        RepoError::Locked { holder, .. } => anyhow::anyhow!(
            "{} is in use by a running rewind-server, which forgets and prunes by itself \
             (serve --retention-every); stop it to run this by hand ({holder})",
            dir.repo().display()
        ),
        e => e.into(),
    })
}

/// Apply each client's policy (only `only`'s when given), or with
/// `dry_run` say what would be forgotten. Every client in the registry,
/// removed ones too (their versions stay stored, and so under a policy).
pub fn forget(
    repo: &LocalRepo,
    dir: &DataDir,
    only: Option<&str>,
    dry_run: bool,
) -> Result<Vec<ForgetReport>> {
    let clients = load_clients(dir)?;
    if let Some(name) = only
        && clients.get(name).is_none()
    {
        bail!("no client named {name}");
    }
    let now = Timestamp::now();
    let mut out = Vec::new();
    for r in &clients.clients {
        if only.is_some_and(|n| n != r.name) {
            continue;
        }
        let mut req = ForgetRequest::new(policy_for(dir, &r.name)?, now);
        req.series = series_for(dir, &r.name)?;
        req.dry_run = dry_run;
        out.push(repo.forget(&r.name, &req)?);
    }
    Ok(out)
}

/// Two-phase prune of the shared repository with grace time `grace` (see
/// the module documentation).
pub fn prune(repo: &LocalRepo, dry_run: bool, grace: Duration) -> Result<PruneReport> {
    let opts = PruneOptions {
        dry_run,
        grace: Some(grace),
        ..PruneOptions::default()
    };
    // No journal to ask: what clients hold back is covered by the grace
    // time, what they are told during the prune by its touch marks.
    Ok(repo.prune_with(&opts, &mut || Ok(Vec::new()))?)
}

/// One scheduled run: forget every client by its policy, then prune.
/// Errors are logged; the next run tries again.
pub(crate) fn run_once(repo: &LocalRepo, dir: &DataDir, grace: Duration) {
    match forget(repo, dir, None, false) {
        Ok(reports) => {
            for r in reports.iter().filter(|r| r.versions_forgotten > 0) {
                tracing::info!(
                    client = %r.client,
                    policy = %r.policy,
                    forgotten = r.versions_forgotten,
                    "retention: forgot versions"
                );
            }
        }
        Err(e) => {
            tracing::error!("retention: forget failed: {e:#}");
            return;
        }
    }
    if let Err(e) = prune(repo, false, grace) {
        tracing::error!("retention: prune failed: {e:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DEFAULT_EXPIRY, add_client, init};

    #[test]
    fn policies_are_stored_per_client_over_a_default() {
        let t = tempfile::tempdir().unwrap();
        let d = DataDir::new(t.path());
        init(&d, &["localhost".into()], None).unwrap();
        add_client(&d, "laptop", false, DEFAULT_EXPIRY).unwrap();
        add_client(&d, "desk", false, DEFAULT_EXPIRY).unwrap();
        let builtin = rewind_core::retention::DEFAULT_POLICY;
        assert_eq!(policy_for(&d, "laptop").unwrap().to_string(), builtin);
        assert_eq!(
            set_client_policy(&d, "laptop", "all 1h, daily 7d").unwrap(),
            "all 1h, daily 7d"
        );
        assert_eq!(set_default_policy(&d, "all 2h").unwrap(), "all 2h");
        assert_eq!(policy_for(&d, "desk").unwrap().to_string(), "all 2h");
        assert_eq!(
            policy_for(&d, "laptop").unwrap().to_string(),
            "all 1h, daily 7d"
        );
        assert_eq!(
            set_client_policy(&d, "laptop", "default").unwrap(),
            "all 2h"
        );
        assert_eq!(set_default_policy(&d, "default").unwrap(), builtin);
        assert!(set_client_policy(&d, "nobody", "all 1h").is_err());
        assert_eq!(
            set_dump_policy(&d, "laptop", "db", "last 3").unwrap(),
            "last 3"
        );
        assert_eq!(
            series_for(&d, "laptop").unwrap(),
            vec![(
                b"dumps/db".to_vec(),
                Policy::parse_series("last 3").unwrap()
            )]
        );
        assert!(set_dump_policy(&d, "laptop", "a/b", "last 3").is_err());
        assert_eq!(
            set_dump_policy(&d, "laptop", "db", "default").unwrap(),
            Policy::default_series().to_string()
        );
        assert!(series_for(&d, "laptop").unwrap().is_empty());
        assert!(set_client_policy(&d, "laptop", "weekly, daily").is_err());
        // A refused change leaves the registry as it was.
        assert_eq!(policy_for(&d, "laptop").unwrap().to_string(), builtin);
    }
}
