//! Browser pages (askama templates) and the embedded static files they load.

use askama::Template;
use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;

use crate::error::{ApiError, Body};
use crate::server::router::method_not_allowed;
use crate::state::AppState;

/// Strict policy for our own pages: no inline script or style, nothing from elsewhere.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

#[derive(rust_embed::RustEmbed)]
#[folder = "web/static/"]
struct Static;

/// The home page.
#[derive(Template)]
#[template(path = "index.html")]
struct IndexPage<'a> {
    version: &'a str,
}

/// The inspector page of one bin.
#[derive(Template)]
#[template(path = "inspector.html")]
struct InspectorPage<'a> {
    version: &'a str,
    bin_id: &'a str,
}

/// `GET /`.
pub fn index(_state: &AppState, parts: &Parts) -> Response<Body> {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return method_not_allowed();
    }
    page(
        IndexPage {
            version: env!("CARGO_PKG_VERSION"),
        }
        .render(),
    )
}

/// `GET /i/<id>` and `GET /static/<file>`.
pub fn handle(state: &AppState, parts: &Parts) -> Response<Body> {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return method_not_allowed();
    }
    let path = parts.uri.path();
    if let Some(id) = path.strip_prefix("/i/") {
        let id = id.trim_end_matches('/');
        // The page is the same for unknown bins' ids only if they exist: don't confirm guesses.
        if state.store.get(id).is_none() {
            return ApiError::unknown_bin().into_response();
        }
        return page(
            InspectorPage {
                version: env!("CARGO_PKG_VERSION"),
                bin_id: id,
            }
            .render(),
        );
    }
    if let Some(name) = path.strip_prefix("/static/") {
        if let Some(file) = Static::get(name) {
            let mut resp = Response::new(Full::new(Bytes::from(file.data.into_owned())));
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(name)),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(PAGE_CSP),
            );
            return resp;
        }
    }
    ApiError::not_found("no such page").into_response()
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn page(rendered: askama::Result<String>) -> Response<Body> {
    let html = match rendered {
        Ok(html) => html,
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "page rendering failed",
            )
            .into_response();
        }
    };
    let mut resp = Response::new(Full::new(Bytes::from(html)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
