//! A version's content: text and image previews, the side-by-side diff
//! with the version before, and downloads.
//!
//! Content is read through the repository a batch of chunks at a time and
//! sent as it is read (a download of a large file never sits in memory
//! whole). Previews are bounded ([`TEXT_PREVIEW`], [`IMAGE_PREVIEW`],
//! [`DIFF_MAX`]). What the browser may show inline is an image of a known
//! raster type; everything else is sent as an attachment with
//! `nosniff`, so stored HTML or SVG never runs in the UI's origin.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use rewind_core::path::display;
use rewind_core::{FileKind, Version};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::common::{
    ApiError, ApiResult, bad, base_name, json_response, not_found, ns, path_of, refuse,
};
use crate::ctx::{Ctx, blocking};

/// The most text a preview shows: a long log's first MiB is enough to
/// recognise it; the download has the rest.
pub(crate) const TEXT_PREVIEW: usize = 1 << 20;

/// The largest image shown inline (a photo from a phone is under this).
pub(crate) const IMAGE_PREVIEW: u64 = 32 << 20;

/// The largest version diffed: two of these are a few hundred ms of
/// Myers at worst, and the diff also stops by itself after
/// [`DIFF_TIMEOUT`].
pub(crate) const DIFF_MAX: u64 = 2 << 20;

const DIFF_TIMEOUT: Duration = Duration::from_millis(500);

/// Chunks read per repository call while streaming (a remote repository
/// fetches them in one round trip).
const READ_BATCH: usize = 32;

/// The version `seq` of `path`, and the versions before it.
fn find(ctx: &Ctx, path: &[u8], seq: u64) -> Result<(Vec<Version>, usize), ApiError> {
    let vs = ctx.repo.versions_of(&ctx.client, path)?;
    let i = vs
        .iter()
        .position(|v| v.seq == seq)
        .ok_or_else(|| not_found(format!("no version {seq} of {}", display(path))))?;
    Ok((vs, i))
}

fn has_content(v: &Version) -> bool {
    v.stream_status().is_some() || v.meta().is_some_and(|m| m.kind == FileKind::File)
}

/// Send the content of `v` to `out` piece by piece, holes of a sparse
/// file as zeros, until `limit` bytes or `out` says stop (false).
fn stream(
    ctx: &Ctx,
    v: &Version,
    limit: u64,
    out: &mut dyn FnMut(Bytes) -> bool,
) -> Result<(), ApiError> {
    let chunks = v.chunks();
    let extents = v.meta().and_then(|m| m.sparse.clone());
    let total = v.size().min(limit);
    // Position in the file, and where the next data byte of the chunk
    // stream belongs.
    let mut pos = 0u64;
    let mut ext_i = 0usize;
    let mut ext_left = 0u64;
    let zeros = |from: &mut u64, to: u64, out: &mut dyn FnMut(Bytes) -> bool| -> bool {
        while *from < to {
            let n = (to - *from).min(1 << 20);
            if !out(Bytes::from(vec![0u8; n as usize])) {
                return false;
            }
            *from += n;
        }
        true
    };
    for batch in chunks.chunks(READ_BATCH) {
        if pos >= total {
            break;
        }
        let ids: Vec<_> = batch.iter().map(|c| c.id).collect();
        for data in ctx.repo.read_chunks(&ids)? {
            let mut data = Bytes::from(data);
            while !data.is_empty() && pos < total {
                if let Some(ext) = &extents {
                    if ext_left == 0 {
                        let Some(e) = ext.get(ext_i) else {
                            data.clear();
                            break;
                        };
                        if !zeros(&mut pos, e.offset.min(total), out) {
                            return Ok(());
                        }
                        ext_left = e.len;
                        ext_i += 1;
                        continue;
                    }
                    let n = (data.len() as u64).min(ext_left).min(total - pos) as usize;
                    if !out(data.split_to(n)) {
                        return Ok(());
                    }
                    ext_left -= n as u64;
                    pos += n as u64;
                } else {
                    let n = (data.len() as u64).min(total - pos) as usize;
                    if !out(data.split_to(n)) {
                        return Ok(());
                    }
                    pos += n as u64;
                }
            }
        }
    }
    zeros(&mut pos, total, out);
    Ok(())
}

/// The first `limit` bytes of `v`.
fn read_prefix(ctx: &Ctx, v: &Version, limit: u64) -> Result<Vec<u8>, ApiError> {
    let mut buf = Vec::new();
    stream(ctx, v, limit, &mut |b| {
        buf.extend_from_slice(&b);
        true
    })?;
    Ok(buf)
}

/// Text, when `b` is (the start of) UTF-8 text without NUL bytes.
fn as_text(b: &[u8], truncated: bool) -> Option<&str> {
    if b[..b.len().min(8192)].contains(&0) {
        return None;
    }
    match std::str::from_utf8(b) {
        Ok(s) => Some(s),
        // Cut inside a character by the preview's limit.
        Err(e) if truncated && e.error_len().is_none() => {
            std::str::from_utf8(&b[..e.valid_up_to()]).ok()
        }
        Err(_) => None,
    }
}

#[derive(Deserialize)]
pub(crate) struct VersionQ {
    id: String,
    seq: u64,
}

/// `GET /api/text?id&seq`: the start of a version as text, or word that
/// it is not text.
pub(crate) async fn text(State(ctx): State<Arc<Ctx>>, Query(q): Query<VersionQ>) -> ApiResult {
    let path = path_of(&q.id)?;
    let v = blocking(&ctx, move |ctx| {
        let (vs, i) = find(ctx, &path, q.seq)?;
        let v = &vs[i];
        if !has_content(v) {
            return Ok(json!({ "text": null, "binary": false, "size": 0, "kind": v.kind_name() }));
        }
        let b = read_prefix(ctx, v, TEXT_PREVIEW as u64)?;
        let truncated = v.size() > b.len() as u64;
        Ok(match as_text(&b, truncated) {
            Some(s) => {
                json!({ "text": s, "binary": false, "truncated": truncated, "size": v.size() })
            }
            None => json!({ "text": null, "binary": true, "size": v.size() }),
        })
    })
    .await?;
    Ok(json_response(&v))
}

/// The image type a name says, for the inline preview; `None`: not shown
/// inline.
fn image_type(name: &[u8]) -> Option<&'static str> {
    let ext = name.rsplit(|&c| c == b'.').next()?.to_ascii_lowercase();
    Some(match ext.as_slice() {
        b"png" => "image/png",
        b"jpg" | b"jpeg" => "image/jpeg",
        b"gif" => "image/gif",
        b"webp" => "image/webp",
        b"bmp" => "image/bmp",
        b"ico" => "image/x-icon",
        b"avif" => "image/avif",
        _ => return None,
    })
}

/// A body fed from a blocking reader through a bounded channel.
struct ChannelBody(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|r| r.map(http_body::Frame::data)))
    }
}

/// A response streaming version `seq` of `path`; `inline_image`: only an
/// image, shown inline.
async fn send_version(ctx: Arc<Ctx>, path: Vec<u8>, seq: u64, inline_image: bool) -> ApiResult {
    let (v, _) = {
        let p = path.clone();
        blocking(&ctx, move |ctx| {
            let (mut vs, i) = find(ctx, &p, seq)?;
            Ok((vs.swap_remove(i), ()))
        })
        .await?
    };
    if !has_content(&v) {
        return Err(bad(
            "this version has no content (a folder, a link or a deletion)",
        ));
    }
    let name = base_name(&path);
    let ctype = if inline_image {
        let Some(t) = image_type(name.as_bytes()) else {
            return Err(bad("not an image"));
        };
        if v.size() > IMAGE_PREVIEW {
            return Err(bad("too large to preview"));
        }
        t
    } else {
        "application/octet-stream"
    };
    let size = v.size();
    // Two batches in flight: the network and the repository overlap.
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let c = ctx.clone();
    tokio::task::spawn_blocking(move || {
        let r = stream(&c, &v, u64::MAX, &mut |b| tx.blocking_send(Ok(b)).is_ok());
        if let Err(e) = r {
            let _ = tx.blocking_send(Err(std::io::Error::other(e.1)));
        }
    });
    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, ctype)
        .header(header::CONTENT_LENGTH, size);
    if inline_image {
        resp = resp.header("content-security-policy", "default-src 'none'; sandbox");
    } else {
        let ascii: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let encoded: String = name
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        resp = resp.header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"),
        );
    }
    resp.body(Body::new(ChannelBody(rx)))
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// `GET /api/content?id&seq`: an image version, for the preview (fetched
/// by the page with its key).
pub(crate) async fn preview(State(ctx): State<Arc<Ctx>>, Query(q): Query<VersionQ>) -> ApiResult {
    let path = path_of(&q.id)?;
    send_version(ctx, path, q.seq, true).await
}

#[derive(Deserialize)]
pub(crate) struct TicketQ {
    id: String,
    seq: u64,
}

/// `POST /api/ticket {id, seq}`: a one-time link that downloads a
/// version (a link cannot carry the request key).
pub(crate) async fn ticket(State(ctx): State<Arc<Ctx>>, body: Bytes) -> ApiResult {
    let q: TicketQ = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
    let path = path_of(&q.id)?;
    let t = ctx.auth.issue_ticket(path, q.seq);
    Ok(json_response(&json!({ "url": format!("/download?t={t}") })))
}

#[derive(Deserialize)]
pub(crate) struct DownloadQ {
    #[serde(default)]
    t: String,
}

/// `GET /download?t=TICKET`: the version a ticket names, as an attachment.
pub(crate) async fn download(State(ctx): State<Arc<Ctx>>, Query(q): Query<DownloadQ>) -> Response {
    let Some((path, seq)) = ctx.auth.redeem_ticket(&q.t) else {
        return refuse(
            StatusCode::FORBIDDEN,
            "this download link was used already or has expired",
        );
    };
    match send_version(ctx, path, seq, false).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// `GET /api/diff?id&seq`: version `seq` beside the version with content
/// before it, line by line: hunks of rows, each row a left line, a right
/// line or both, with their numbers.
pub(crate) async fn diff(State(ctx): State<Arc<Ctx>>, Query(q): Query<VersionQ>) -> ApiResult {
    let path = path_of(&q.id)?;
    let v = blocking(&ctx, move |ctx| {
        let (vs, i) = find(ctx, &path, q.seq)?;
        let new = &vs[i];
        let Some(old) = vs[..i].iter().rev().find(|v| has_content(v)) else {
            return Ok(json!({ "previous": null }));
        };
        let head = json!({ "seq": old.seq, "time": ns(old.observed_at.0) });
        if !has_content(new) {
            return Ok(
                json!({ "previous": head, "rows": null, "why": "this version has no content" }),
            );
        }
        if old.size() > DIFF_MAX || new.size() > DIFF_MAX {
            return Ok(
                json!({ "previous": head, "rows": null, "why": "too large to compare here" }),
            );
        }
        let (a, b) = (
            read_prefix(ctx, old, DIFF_MAX)?,
            read_prefix(ctx, new, DIFF_MAX)?,
        );
        let (Some(a), Some(b)) = (as_text(&a, false), as_text(&b, false)) else {
            return Ok(json!({ "previous": head, "rows": null, "why": "not text" }));
        };
        Ok(json!({ "previous": head, "hunks": hunks(a, b) }))
    })
    .await?;
    Ok(json_response(&v))
}

/// The hunks of a line diff of `a` and `b` with three lines of context.
fn hunks(a: &str, b: &str) -> Vec<Vec<Value>> {
    use similar::DiffTag;
    let d = similar::TextDiff::configure()
        .timeout(DIFF_TIMEOUT)
        .diff_lines(a, b);
    let line = |s: Option<&str>| s.map(|s| s.trim_end_matches(['\n', '\r']).to_string());
    let mut out = Vec::new();
    for group in d.grouped_ops(3) {
        let mut rows = Vec::new();
        for op in group {
            let (tag, old, new) = op.as_tag_tuple();
            let n = old.len().max(new.len());
            for k in 0..n {
                let l = (k < old.len()).then(|| old.start + k);
                let r = (k < new.len()).then(|| new.start + k);
                let t = match (tag, l, r) {
                    (DiffTag::Equal, ..) => "eq",
                    (_, Some(_), Some(_)) => "chg",
                    (_, Some(_), None) => "del",
                    _ => "ins",
                };
                rows.push(json!({
                    "t": t,
                    "ln": l.map(|i| i + 1),
                    "l": line(l.and_then(|i| d.old_slice(i))),
                    "rn": r.map(|i| i + 1),
                    "r": line(r.and_then(|i| d.new_slice(i))),
                }));
            }
        }
        out.push(rows);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_line_pairs_left_and_right() {
        let h = hunks("a\nb\nc\n", "a\nB\nc\nd\n");
        assert_eq!(h.len(), 1);
        let tags: Vec<&str> = h[0].iter().map(|r| r["t"].as_str().unwrap()).collect();
        assert_eq!(tags, ["eq", "chg", "eq", "ins"]);
        assert_eq!(h[0][1]["l"], "b");
        assert_eq!(h[0][1]["r"], "B");
        assert_eq!(h[0][3]["rn"], 4);
        assert!(h[0][3]["ln"].is_null());
    }

    #[test]
    fn text_is_told_from_binary() {
        assert_eq!(as_text(b"hello\n", false), Some("hello\n"));
        assert_eq!(as_text(b"a\0b", false), None);
        assert_eq!(as_text(&[0xff, 0xfe], false), None);
        // "é" cut in half by the preview's limit.
        assert_eq!(as_text(&[b'a', 0xc3], true), Some("a"));
    }

    #[test]
    fn only_raster_images_are_shown_inline() {
        assert_eq!(image_type(b"a.PNG"), Some("image/png"));
        assert_eq!(image_type(b"a.svg"), None);
        assert_eq!(image_type(b"a.html"), None);
    }
}
