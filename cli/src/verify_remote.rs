//! `rewind verify` against an enrolled server: this client's versions and
//! the chunks they use, checked on the server's disk.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};

use anyhow::Result;
use rewind_cli::{DAMAGE, damaged_json, print_damaged};
use rewind_core::ChunkId;
use rewind_repo::DamagedVersion;
use serde_json::json;

/// Versions asked for per `list` request.
const LIST_PAGE: u32 = 20_000;
/// Chunk bytes (uncompressed) the server checks per request in a full
/// verify: a few tenths of a second of its work, so progress moves.
const VERIFY_BYTES: u64 = 64 << 20;
/// Chunk ids per request.
const VERIFY_IDS: usize = 20_000;

/// `rewind verify` against an enrolled server: list every version of this
/// client, then have the server check each chunk they use (indexed, and
/// unless `quick` read, decompressed and hashed on its disk). Only this
/// client's data is checked; `rewind-server verify` checks the whole
/// repository on the server.
pub fn verify(remote: &rewind_remote::RemoteRepo, quick: bool, json: bool) -> Result<i32> {
    let url = remote.url().to_string();
    let mut versions = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = remote.list_page(after.as_deref(), LIST_PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.path.clone());
        versions.extend(page);
    }
    // Each chunk once, however many versions use it.
    let mut sizes: HashMap<ChunkId, u64> = HashMap::new();
    for v in &versions {
        for r in v.chunk_refs() {
            sizes.insert(r.id, u64::from(r.len));
        }
    }
    let mut ids: Vec<ChunkId> = sizes.keys().copied().collect();
    ids.sort_unstable();
    let total: u64 = sizes.values().sum();
    let bar = (!json && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} verifying on the server {bar:30} {bytes}/{total_bytes} {eta}",
            )
            .expect("valid template"),
        );
        b
    });
    let mut problems: HashMap<ChunkId, (String, String)> = HashMap::new();
    let mut start = 0;
    while start < ids.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < ids.len() && end - start < VERIFY_IDS && (quick || bytes < VERIFY_BYTES) {
            bytes += sizes[&ids[end]];
            end += 1;
        }
        for p in remote.verify_chunks(quick, &ids[start..end])? {
            problems.insert(p.id, (p.reason, p.detail));
        }
        if let Some(b) = &bar {
            b.inc(bytes);
        }
        start = end;
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let damaged: Vec<DamagedVersion> = versions
        .iter()
        .filter_map(|v| {
            let (id, (reason, _)) = v.chunk_refs().find_map(|r| problems.get_key_value(&r.id))?;
            Some(DamagedVersion {
                client: v.client.clone(),
                seq: v.seq,
                path: v.path.clone(),
                observed_at: v.observed_at,
                chunk: *id,
                reason: if reason == "missing" {
                    "missing"
                } else {
                    "damaged"
                },
            })
        })
        .collect();
    let mut bad: Vec<(&ChunkId, &(String, String))> = problems.iter().collect();
    bad.sort_unstable_by_key(|(id, _)| **id);
    let ok = problems.is_empty();
    if json {
        let out = json!({
            "server": url,
            "quick": quick,
            "ok": ok,
            "chunks": ids.len(),
            "chunks_read": if quick { 0 } else { ids.len() },
            "versions": versions.len(),
            "issues": bad.iter().map(|(id, (reason, detail))| json!({
                "chunk": id.to_string(),
                "reason": reason,
                "problem": detail,
            })).collect::<Vec<_>>(),
            "damaged_versions": damaged_json(&damaged),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let mut err = std::io::stderr().lock();
        for (id, (reason, detail)) in &bad {
            let _ = writeln!(err, "rewind: chunk {id} on {url} is {reason}: {detail}");
        }
        drop(err);
        print_damaged(&damaged);
        let what = if quick {
            "each chunk's presence checked"
        } else {
            "every chunk read and hashed on the server"
        };
        if ok {
            println!(
                "{url}: no damage in this client's data ({} chunks, {} versions; {what})",
                ids.len(),
                versions.len()
            );
        } else {
            println!(
                "{url}: {} chunks missing or damaged, {} versions cannot be restored \
                 ({} chunks, {} versions; {what}); the server's administrator can run \
                 `rewind-server verify` and `rewind-server repair`",
                bad.len(),
                damaged.len(),
                ids.len(),
                versions.len()
            );
        }
    }
    Ok(if ok { 0 } else { DAMAGE })
}
