//! `GET /`: the live dashboard, one HTML page compiled into the binary (`dashboard.html`, with its
//! script and styles inline: no build step, nothing fetched from elsewhere, so it works with no
//! internet). In the browser it polls `GET /v1/status` every second for the figures and the
//! charts, follows `GET /v1/subscribe/hot-items` for the latest hot-items window, and for a user
//! looked up follows `GET /v1/subscribe?users=U`, fetching the explained list
//! (`/v1/users/U/recommendations?explain=true`) each time it changes. It only reads, so it needs
//! no write token; with a read token (`[serve] read_token`) it is opened as `/#token=SECRET` and
//! sends the token as `access_token` on every request (the fragment never leaves the browser).
//!
//! Elements the page fills carry stable ids and `data-` attributes (`#events-per-s[data-value]`,
//! `#hot-items tr[data-item]`, `#user-list tr[data-item]`), which `tests/dashboard.rs` reads
//! from a headless Chromium.

use axum::http::header;
use axum::response::{Html, IntoResponse};

/// The page.
pub const PAGE: &str = include_str!("dashboard.html");

/// What the page may load: its own inline script and styles, and requests to this server only.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:";

/// `GET /`: the dashboard.
pub async fn page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-cache"), (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY)], Html(PAGE))
}

#[cfg(test)]
mod tests {
    use super::PAGE;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for external in ["src=\"http", "href=\"http", "src='http", "href='http", "@import", "url(http", "//cdn"] {
            assert!(!PAGE.contains(external), "the dashboard refers to something outside it: `{external}`");
        }
    }

    #[test]
    fn the_page_reads_the_routes_it_says() {
        for route in ["/v1/status", "/v1/subscribe/hot-items", "/v1/subscribe?users=", "/recommendations?explain=true"]
        {
            assert!(PAGE.contains(route), "the dashboard uses {route}");
        }
    }
}
