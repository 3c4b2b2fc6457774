//! The HTTP server: the listener, the routes, and the guard every request
//! passes before a handler sees it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;

use crate::auth::{self, Auth};
use crate::catalog::CatalogCache;
use crate::common::refuse;
use crate::ctx::{Ctx, UiContext};
use crate::error::UiError;
use crate::jobs::Jobs;
use crate::listing::TreeCache;
use crate::{api, assets, content, restores};

/// The running UI server.
pub struct Ui {
    addr: SocketAddr,
    ctx: Arc<Ctx>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Ui {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ui").field("addr", &self.addr).finish()
    }
}

/// The `Host` values a server bound to `addr` answers to: the address as
/// bound, and `localhost` when it is a loopback address.
fn hosts_for(addr: SocketAddr) -> Vec<String> {
    let port = addr.port();
    let mut v = vec![addr.to_string()];
    if addr.ip().is_loopback() {
        v.push(format!("localhost:{port}"));
    }
    v
}

impl Ui {
    /// Bind `listen` (port 0: a free port) and serve on a thread of its
    /// own until [`Ui::stop`].
    pub fn start(listen: SocketAddr, ctx: UiContext) -> Result<Ui, UiError> {
        let bind_err = |source| UiError::Bind {
            addr: listen,
            source,
        };
        let std_listener = std::net::TcpListener::bind(listen).map_err(bind_err)?;
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        let addr = std_listener.local_addr().map_err(bind_err)?;
        let hosts = hosts_for(addr);
        let origins = hosts.iter().map(|h| format!("http://{h}")).collect();
        let shared = Arc::new(Ctx {
            catalog: CatalogCache::new(ctx.history, ctx.repo.clone(), ctx.client.clone()),
            repo: ctx.repo,
            client: ctx.client,
            roots: ctx.roots,
            chunker: ctx.chunker,
            status: ctx.status,
            auth: Auth::default(),
            hosts,
            origins,
            trees: TreeCache::default(),
            jobs: Mutex::new(Jobs::default()),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            // One worker: requests are few (one person), and the work is
            // on blocking threads; the agent's capture keeps the cores.
            .worker_threads(1)
            .max_blocking_threads(8)
            .thread_name("ui")
            .enable_all()
            .build()
            .map_err(UiError::Runtime)?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app = router(shared.clone());
        let thread = std::thread::Builder::new()
            .name("ui".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!("web UI: cannot listen: {e}");
                            return;
                        }
                    };
                    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                        let _ = stop_rx.await;
                    });
                    if let Err(e) = serve.await {
                        tracing::error!("web UI stopped: {e}");
                    }
                });
                // Requests still running on blocking threads (a download)
                // are not waited for.
                runtime.shutdown_background();
            })
            .map_err(UiError::Runtime)?;
        Ok(Ui {
            addr,
            ctx: shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A URL that logs a browser in, once, within two minutes.
    pub fn login_url(&self) -> String {
        format!(
            "http://{}/auth?token={}",
            self.addr,
            self.ctx.auth.issue_token()
        )
    }

    /// Stop accepting, let requests in flight finish, and return.
    pub fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::script))
        .route("/app.css", get(assets::style))
        .route("/auth", get(log_in))
        .route("/download", get(content::download))
        .route("/api/status", get(api::status))
        .route("/api/timeline", get(api::timeline))
        .route("/api/tree", get(api::tree))
        .route("/api/versions", get(api::versions))
        .route("/api/search", get(api::search))
        .route("/api/text", get(content::text))
        .route("/api/content", get(content::preview))
        .route("/api/diff", get(content::diff))
        .route("/api/ticket", post(content::ticket))
        .route("/api/restore/plan", post(restores::plan))
        .route("/api/restore", post(restores::start))
        .route("/api/restore/{job}", get(restores::progress))
        .layer(middleware::from_fn_with_state(ctx.clone(), guard))
        .with_state(ctx)
}

fn header_str(h: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Every request passes here first:
/// 1. its `Host` must be the address we serve (a DNS-rebinding page
///    reaches us under its own name, and is refused);
/// 2. a browser's `Sec-Fetch-Site` must be `same-origin` (or `none`, a
///    typed or opened URL): another site, or another port of this host
///    (`same-site`), is refused;
/// 3. a request that changes something (not GET or HEAD) must carry our
///    `Origin` and a JSON body (which no HTML form can send);
/// 4. but for `/auth`, it must carry a live session's cookie, and under
///    `/api/` also that session's request key.
async fn guard(State(ctx): State<Arc<Ctx>>, req: Request, next: Next) -> Response {
    let h = req.headers();
    let host = header_str(h, header::HOST);
    if !host.is_some_and(|x| ctx.hosts.iter().any(|a| a.eq_ignore_ascii_case(x))) {
        return refuse(
            StatusCode::FORBIDDEN,
            "refused: this is rewind's local UI, reached under another name (Host header)",
        );
    }
    let path = req.uri().path();
    let is_auth = path == "/auth";
    if let Some(site) = header_str(h, "sec-fetch-site")
        && site != "same-origin"
        && site != "none"
        && !is_auth
    {
        return refuse(StatusCode::FORBIDDEN, "refused: cross-site request");
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let origin = header_str(h, header::ORIGIN);
        if !origin.is_some_and(|o| ctx.origins.iter().any(|a| a.eq_ignore_ascii_case(o))) {
            return refuse(
                StatusCode::FORBIDDEN,
                "refused: cross-site request (Origin missing or not this UI)",
            );
        }
        let json =
            header_str(h, header::CONTENT_TYPE).is_some_and(|t| t.starts_with("application/json"));
        if !json {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "refused: a request body must be JSON",
            );
        }
    }
    if !is_auth {
        let cookie = h
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| auth::cookie_value(c, auth::COOKIE));
        let is_api = path.starts_with("/api/");
        let key = header_str(h, auth::KEY_HEADER);
        let ok = match cookie {
            Some(c) if is_api => key.is_some_and(|k| ctx.auth.check(c, Some(k))),
            Some(c) => ctx.auth.check(c, None),
            None => false,
        };
        if !ok {
            return if is_api {
                refuse(StatusCode::UNAUTHORIZED, "not logged in: run `rewind ui`")
            } else {
                assets::logged_out()
            };
        }
    }
    let mut resp = next.run(req).await;
    let hs = resp.headers_mut();
    for (k, v) in [
        (
            "content-security-policy",
            "default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; \
             form-action 'self'; frame-ancestors 'none'",
        ),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        hs.entry(k).or_insert(HeaderValue::from_static(v));
    }
    resp
}

#[derive(Deserialize)]
struct LogIn {
    #[serde(default)]
    token: String,
}

/// `GET /auth?token=T`: a one-time token from `rewind ui` becomes a
/// session: the cookie (HttpOnly, SameSite=Strict) and, in the fragment
/// of the page it sends the browser to, the request key, which the page
/// keeps in its origin's storage (another port of this host cannot read
/// it, though the browser sends it our cookie).
async fn log_in(State(ctx): State<Arc<Ctx>>, Query(q): Query<LogIn>) -> Response {
    let Some(s) = ctx.auth.log_in(&q.token) else {
        return assets::page(
            StatusCode::FORBIDDEN,
            "This link was used already or has expired. Run <code>rewind ui</code> again for a new one.",
        );
    };
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, format!("/#key={}", s.key))
        .header(
            header::SET_COOKIE,
            format!(
                "{}={}; HttpOnly; SameSite=Strict; Path=/",
                auth::COOKIE,
                s.cookie
            ),
        )
        .body(Body::empty())
        .unwrap_or_else(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "cannot log in"))
}
