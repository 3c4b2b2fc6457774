//! `rewind enroll`: trust a server's certificate (shown and confirmed at a
//! terminal, or given with --fingerprint), trade the one-time token (from
//! stdin, a file, or --token) for a key, and record the enrollment
//! (`rewind_agent::save_enrollment`).

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, Result, bail};
use rewind_agent::ServerSection;
use rewind_remote::RateSchedule;

/// The enrollment token: `--token`, else the first line of
/// `--token-file`, else the first line of stdin (asked for at a terminal).
fn token(a: &crate::EnrollArgs) -> Result<String> {
    let line = |text: &str| text.lines().next().unwrap_or("").trim().to_string();
    let t = match (&a.token, &a.token_file) {
        (Some(t), _) => t.trim().to_string(),
        (None, Some(f)) => line(
            &std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the token from {}", f.display()))?,
        ),
        (None, None) => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprint!(
                    "enrollment token (from `rewind-server client add {}`): ",
                    a.name
                );
            }
            let mut l = String::new();
            stdin.lock().read_line(&mut l)?;
            line(&l)
        }
    };
    if t.is_empty() {
        bail!(
            "no enrollment token: give it on stdin (`rewind enroll … < FILE`), \
             with --token-file FILE, or with --token"
        );
    }
    Ok(t)
}

/// `rewind enroll`.
pub fn enroll(a: crate::EnrollArgs) -> Result<i32> {
    let url = rewind_remote::normalize_url(&a.url).map_err(anyhow::Error::msg)?;
    if let Some(l) = &a.limit_upload {
        RateSchedule::parse(l).map_err(|e| anyhow::anyhow!("--limit-upload: {e}"))?;
    }
    // Read before anything is asked at the terminal (the fingerprint), so
    // a token piped in is not taken for the answer.
    let token = token(&a)?;
    let fingerprint = match &a.fingerprint {
        Some(f) => rewind_core::wire::parse_fingerprint(f).with_context(|| {
            format!("not a fingerprint: {f:?} (expected SHA256: and 64 hex digits, as `rewind-server fingerprint` prints)")
        })?,
        None => {
            let seen = rewind_remote::probe_fingerprint(&url)?;
            if !std::io::stdin().is_terminal() {
                bail!(
                    "{url} presents certificate {seen}; not on a terminal, so not trusting it blindly: \
                     check it with `rewind-server fingerprint` on the server, then pass --fingerprint {seen}"
                );
            }
            eprintln!("{url} presents the certificate {seen}");
            eprint!("Is that the fingerprint `rewind-server fingerprint` shows on the server? [y/N] ");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            if !matches!(line.trim(), "y" | "Y" | "yes") {
                bail!("not enrolled: the certificate was not confirmed");
            }
            seen
        }
    };
    let reply = rewind_remote::enroll(&url, &fingerprint, &a.name, &token)?;
    let sec = ServerSection {
        url: url.clone(),
        client: a.name.clone(),
        fingerprint: fingerprint.clone(),
        key_file: None,
        limit_upload: a.limit_upload.clone(),
    };
    let kf = rewind_agent::save_enrollment(&sec, &reply.key, &reply.info)?;
    if a.json.json {
        println!(
            "{}",
            serde_json::json!({
                "url": url,
                "client": a.name,
                "fingerprint": fingerprint,
                "repository": reply.info.repo_id,
                "config": rewind_agent::paths::config_file()?.to_string_lossy(),
                "key_file": kf.to_string_lossy(),
            })
        );
    } else {
        println!(
            "enrolled as {} with {url} (certificate {fingerprint}); settings in {}, key in {}",
            a.name,
            rewind_agent::paths::config_file()?.display(),
            kf.display()
        );
        println!("protect a folder with: rewind watch ~/Documents");
    }
    Ok(0)
}
