//! The page and its assets, compiled into the binary (plain HTML, CSS and
//! JavaScript: nothing to build, no Node toolchain).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/app.css");

pub(crate) async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

pub(crate) async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

pub(crate) async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

/// A small page with one message (`html` is trusted markup of ours).
pub(crate) fn page(status: StatusCode, html: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!(
            "<!doctype html><meta charset=utf-8><title>rewind</title>\
             <link rel=stylesheet href=/app.css><main class=message><h1>rewind</h1><p>{html}</p></main>"
        ),
    )
        .into_response()
}

/// What a browser without a session sees.
pub(crate) fn logged_out() -> Response {
    page(
        StatusCode::UNAUTHORIZED,
        "Not logged in. Run <code>rewind ui</code> to open the UI with a fresh link.",
    )
}
