//! `rewind verify` against an enrolled server, as text or JSON: what
//! [`rewind_remote::RemoteRepo::verify_client`] found in this client's
//! data.

use std::io::{IsTerminal, Write};

use anyhow::Result;
use rewind_server::{DAMAGE, print_damaged};
use serde_json::json;

/// `rewind verify` against an enrolled server: every chunk this client's
/// versions use, checked on the server (see
/// [`rewind_remote::RemoteRepo::verify_client`]).
pub fn verify(remote: &rewind_remote::RemoteRepo, quick: bool, json: bool) -> Result<i32> {
    let url = remote.url().to_string();
    let bar = (!json && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} verifying on the server {bar:30} {bytes}/{total_bytes} {eta}",
            )
            .expect("valid template"),
        );
        b
    });
    let r = remote.verify_client(quick, &mut |done, total| {
        if let Some(b) = &bar {
            b.set_length(total);
            b.set_position(done);
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let damaged = &r.damaged_versions;
    let ok = r.problems.is_empty();
    if json {
        let out = json!({
            "server": url,
            "quick": quick,
            "ok": ok,
            "chunks": r.chunks,
            "chunks_read": if quick { 0 } else { r.chunks },
            "versions": r.versions,
            "issues": r.problems.iter().map(|p| json!({
                "chunk": p.id.to_string(),
                "reason": p.reason,
                "problem": p.detail,
            })).collect::<Vec<_>>(),
            "damaged_versions": damaged,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let mut err = std::io::stderr().lock();
        for p in &r.problems {
            let _ = writeln!(
                err,
                "rewind: chunk {} on {url} is {}: {}",
                p.id, p.reason, p.detail
            );
        }
        drop(err);
        print_damaged(damaged);
        let what = if quick {
            "each chunk's presence checked"
        } else {
            "every chunk read and hashed on the server"
        };
        if ok {
            println!(
                "{url}: no damage in this client's data ({} chunks, {} versions; {what})",
                r.chunks, r.versions
            );
        } else {
            println!(
                "{url}: {} chunks missing or damaged, {} versions cannot be restored \
                 ({} chunks, {} versions; {what}); the server's administrator can run \
                 `rewind-server verify` and `rewind-server repair`",
                r.problems.len(),
                damaged.len(),
                r.chunks,
                r.versions
            );
        }
    }
    Ok(if ok { 0 } else { DAMAGE })
}
