//! Routing: a plain match on the first path segment, no framework.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::error::{json_response, ApiError, Body};
use crate::state::AppState;
use crate::{api, ingest, inspector};

use super::tap::RawHead;
use super::ConnInfo;

/// Handle one request from any listener.
pub async fn handle(state: AppState, conn: ConnInfo, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    // Every HTTP/1 request takes its recorded head, in order, so the tap's queue stays in step.
    let raw: Option<RawHead> = if parts.version < http::Version::HTTP_2 {
        conn.tap.take_matching(&parts)
    } else {
        conn.tap.disable();
        None
    };
    let path = parts.uri.path();
    // `CONNECT host:port` (authority-form) has an empty path: no `path[1..]` here.
    let first = path
        .strip_prefix('/')
        .unwrap_or(path)
        .split('/')
        .next()
        .unwrap_or("");
    let mut resp = match first {
        "" if path == "/" => inspector::index(&state, &parts),
        "healthz" => healthz(&state, &parts.method),
        "i" | "static" => {
            // A bin created on another instance is mirrored here before its page is served.
            if let Some(id) = path.strip_prefix("/i/") {
                let _ = state.store.lookup(id.trim_end_matches('/')).await;
            }
            inspector::handle(&state, &parts)
        }
        "favicon.ico" => empty(StatusCode::NO_CONTENT),
        "robots.txt" => text(StatusCode::OK, "User-agent: *\nDisallow: /\n"),
        "api" => api::handle(&state, &conn, Request::from_parts(parts, body)).await,
        "metrics" => metrics(&state, &parts.method),
        #[cfg(feature = "test-hooks")]
        "__panic" => panic!("test-hooks: deliberate panic inside a connection task"),
        id => match state.store.lookup(id).await {
            Ok(Some(bin)) => match rate_limited(&state, &conn, &parts, &bin.id) {
                Some(resp) => resp,
                None => ingest::handle(&state, &conn, bin, parts, body, raw).await,
            },
            Ok(None) => {
                state.metrics.reject("unknown_bin");
                ApiError::unknown_bin().into_response()
            }
            Err(e) => {
                state.metrics.reject("store_unavailable");
                ApiError::from(e).into_response()
            }
        },
    };
    secure(&mut resp);
    resp
}

/// Headers every response carries; pages set their own stricter CSP first.
fn secure(resp: &mut Response<Body>) {
    let headers = resp.headers_mut();
    // Capture answers come with them already (one probe instead of three inserts).
    if !headers.contains_key(header::REFERRER_POLICY) {
        security_headers(headers);
    }
}

/// nosniff, no-referrer, and CSP `sandbox` unless the response set its own CSP.
pub(crate) fn security_headers(headers: &mut http::HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox"),
        );
    }
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// `--rate-limit-ip` / `--rate-limit-bin`: 429 with Retry-After, not captured.
fn rate_limited(
    state: &AppState,
    conn: &ConnInfo,
    parts: &http::request::Parts,
    bin: &std::sync::Arc<str>,
) -> Option<Response<Body>> {
    let ip_over = state.ip_limiter.as_ref().and_then(|l| {
        let ip = crate::ingest::client_addr(state, conn.remote, &parts.headers).ip();
        l.check(&ip).err()
    });
    let over = ip_over.or_else(|| state.bin_limiter.as_ref().and_then(|l| l.check(bin).err()))?;
    state.metrics.reject("rate_limited");
    let mut resp = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "too many requests; slow down",
    )
    .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(over));
    Some(resp)
}

fn metrics(state: &AppState, method: &Method) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed();
    }
    let mut resp = text(
        StatusCode::OK,
        state.metrics.render(state.store.total_bytes()),
    );
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

fn healthz(state: &AppState, method: &Method) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed();
    }
    // Degraded (Redis unreachable) answers 503 so load balancers steer senders elsewhere.
    let healthy = state.store.healthy();
    let body = serde_json::json!({
        "status": if healthy { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
        "store": state.store.backend(),
        "bins": state.store.len(),
        "stored_bytes": state.store.total_bytes(),
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, body.to_string().into())
}

/// 405 as JSON.
pub fn method_not_allowed() -> Response<Body> {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this path",
    )
    .into_response()
}

/// An empty response.
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
