//! `GET /dashboard`: one page watching the limiter live. Its HTML, CSS and JavaScript are in
//! `src/service/dashboard/` and compiled into the binary: no CDN, no external fonts, so it
//! works offline. The page itself is open; what it reads (the admin API, the events) asks for
//! the admin token when one is set.

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

/// Everything the page loads comes from this service.
const POLICY: &str = "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "no-cache"),
            (CONTENT_SECURITY_POLICY, POLICY),
        ],
        body,
    )
        .into_response()
}

/// The dashboard.
#[utoipa::path(
    get,
    path = "/dashboard",
    responses((status = 200, description = "The dashboard page", content_type = "text/html")),
    tag = "dashboard"
)]
pub(crate) async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

/// Its script.
pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// Its style sheet.
pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}
