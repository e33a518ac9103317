//! The web UI: static files (a page, its ES modules, a style sheet) compiled into the binary (no CDN, works offline), served without a token
//! (they hold no data; the page asks for a token and sends it with every API call it makes).
//!
//! For UI development, `SLUICE_UI_DIR=<dir>` serves the files from that directory instead, read at each
//! request, so a change shows on reload without rebuilding the JobManager.
use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// Every file of the UI: its name under `/ui/`, its media type and its embedded content.
const ASSETS: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", include_str!("ui/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("ui/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_str!("ui/api.js")),
    ("dom.js", "text/javascript; charset=utf-8", include_str!("ui/dom.js")),
    ("format.js", "text/javascript; charset=utf-8", include_str!("ui/format.js")),
    ("status.js", "text/javascript; charset=utf-8", include_str!("ui/status.js")),
    ("overview.js", "text/javascript; charset=utf-8", include_str!("ui/overview.js")),
    ("taskmanagers.js", "text/javascript; charset=utf-8", include_str!("ui/taskmanagers.js")),
    ("job.js", "text/javascript; charset=utf-8", include_str!("ui/job.js")),
    ("graph.js", "text/javascript; charset=utf-8", include_str!("ui/graph.js")),
    ("vertices.js", "text/javascript; charset=utf-8", include_str!("ui/vertices.js")),
    ("checkpoints.js", "text/javascript; charset=utf-8", include_str!("ui/checkpoints.js")),
    ("timeline.js", "text/javascript; charset=utf-8", include_str!("ui/timeline.js")),
    ("style.css", "text/css; charset=utf-8", include_str!("ui/style.css")),
];

/// The environment variable naming a directory to serve the UI's files from (development only).
const UI_DIR_ENV: &str = "SLUICE_UI_DIR";

/// `GET /`: the page.
pub(super) async fn index() -> Response {
    asset("index.html").await
}

/// `GET /ui/{file}`: a module or the style sheet of the page.
pub(super) async fn file(Path(name): Path<String>) -> Response {
    asset(&name).await
}

async fn asset(name: &str) -> Response {
    let Some(&(name, media_type, embedded)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return ApiError::new(StatusCode::NOT_FOUND, format!("no UI file {name}")).into_response();
    };
    let body = match std::env::var_os(UI_DIR_ENV) {
        Some(dir) => match tokio::fs::read_to_string(std::path::Path::new(&dir).join(name)).await {
            Ok(text) => text,
            Err(e) => {
                return ApiError::internal(format!("{UI_DIR_ENV}: cannot read {name}: {e}")).into_response();
            }
        },
        None => embedded.to_string(),
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    // The page runs only its own scripts and talks only to this server.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
