//! What every handler shares: errors, JSON responses, paths as ids,
//! times, and the plain-text refusal.
//!
//! Times travel as strings of nanoseconds since the epoch (a JavaScript
//! number cannot hold them exactly); paths as ids, the URL-safe base64 of
//! their bytes, so a name that is not UTF-8 goes and comes back intact.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use rewind_core::path::display;
use rewind_core::{RepoError, Timestamp, Version};
use serde::Serialize;
use serde_json::json;

/// A failed request: its status and one line for the page.
#[derive(Debug)]
pub(crate) struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "application/json")],
            json!({ "error": self.1 }).to_string(),
        )
            .into_response()
    }
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> ApiError {
        let status = if e.is_transient() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        ApiError(status, e.to_string())
    }
}

pub(crate) fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

pub(crate) fn not_found(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, msg.into())
}

pub(crate) type ApiResult = Result<Response, ApiError>;

/// A JSON response.
pub(crate) fn json_response<T: Serialize>(v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(b) => ([(header::CONTENT_TYPE, "application/json")], b).into_response(),
        Err(e) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The id of a path: URL-safe base64 of its bytes.
pub(crate) fn id_of(path: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(path)
}

/// The path an id names.
pub(crate) fn path_of(id: &str) -> Result<Vec<u8>, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(id)
        .map_err(|_| bad("bad path id"))
}

/// A time for the page: nanoseconds as a string.
pub(crate) fn ns(t: i64) -> String {
    t.to_string()
}

/// A moment from the page (nanoseconds); absent or `now`: the latest.
pub(crate) fn parse_at(s: Option<&str>) -> Result<Timestamp, ApiError> {
    match s {
        None | Some("") | Some("now") => Ok(Timestamp::MAX),
        Some(s) => s
            .parse::<i64>()
            .map(Timestamp)
            .map_err(|_| bad(format!("bad time {s:?}"))),
    }
}

/// The last component of a path, for people.
pub(crate) fn base_name(p: &[u8]) -> String {
    let name = p.rsplit(|&c| c == b'/').next().unwrap_or(p);
    display(if name.is_empty() { p } else { name })
}

pub(crate) fn mtime_ns(v: &Version) -> Option<String> {
    v.meta().map(|m| {
        ns(m.mtime
            .sec
            .saturating_mul(1_000_000_000)
            .saturating_add(m.mtime.nsec as i64))
    })
}

/// A refusal: plain text for people and scripts alike.
pub(crate) fn refuse(status: StatusCode, why: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{why}\n"),
    )
        .into_response()
}
