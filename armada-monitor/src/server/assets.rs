//! The dashboard's files, compiled into the binary: no Node step to run it.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;

/// What the dashboard may load: its own files, and images and frames it builds from fetched
/// attachments.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' blob: data:; \
    connect-src 'self' ws: wss:; frame-src 'self' blob: about:; style-src 'self' 'unsafe-inline'; \
    object-src 'none'; base-uri 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse + Clone {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

pub(super) fn routes() -> Router<AppState> {
    let index = asset(
        "text/html; charset=utf-8",
        include_str!("../../assets/index.html"),
    );
    let script = asset(
        "text/javascript; charset=utf-8",
        include_str!("../../assets/app.js"),
    );
    let style = asset(
        "text/css; charset=utf-8",
        include_str!("../../assets/app.css"),
    );
    Router::new()
        .route("/", get(move || async move { index }))
        .route("/assets/app.js", get(move || async move { script }))
        .route("/assets/app.css", get(move || async move { style }))
}
