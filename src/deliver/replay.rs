//! `POST /api/bins/<id>/requests/<seq>/replay`: send a capture (or an edited copy) once.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use serde::Deserialize;

use super::{build_request, client, join_target, ssrf};
use crate::capture::Capture;
use crate::error::{json_response, ApiError, Body};
use crate::state::AppState;
use crate::store::Bin;

/// Time allowed for one replay attempt.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(10);
/// Most headers an edited replay may carry.
const MAX_HEADERS: usize = 200;

/// The replay request body; omitted fields keep the captured value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    /// Base URL; the capture's path suffix and query are appended.
    target: String,
    /// Method to use instead of the captured one.
    #[serde(default)]
    method: Option<String>,
    /// Headers replacing the captured ones (ordered `[name, value]` pairs).
    #[serde(default)]
    headers: Option<Vec<(String, String)>>,
    /// Body text replacing the captured body.
    #[serde(default)]
    body: Option<String>,
    /// Base64 body replacing the captured body (binary edits).
    #[serde(default)]
    body_base64: Option<String>,
}

fn bad(field: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_replay", format!("{field}: {why}"))
}

/// Replay `capture` as `json` asks; answers the delivery record and stores it on the capture.
pub async fn handle(
    state: &AppState,
    bin: &Bin,
    capture: &Capture,
    json: &[u8],
) -> Result<Response<Body>, ApiError> {
    let req: ReplayRequest = serde_json::from_slice(json).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::bad_request(
                "invalid_json",
                format!("request body is not valid JSON: {e}"),
            )
        } else {
            ApiError::bad_request("invalid_replay", format!("replay request: {e}"))
        }
    })?;
    let method = match &req.method {
        Some(m) => Method::from_bytes(m.trim().as_bytes())
            .map_err(|_| bad("method", format!("`{m}` is not a valid method")))?,
        None => capture.method().clone(),
    };
    let body = match (&req.body, &req.body_base64) {
        (Some(_), Some(_)) => return Err(bad("body", "give `body` or `body_base64`, not both")),
        (Some(text), None) => Bytes::from(text.clone()),
        (None, Some(b64)) => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| bad("body_base64", format!("not valid base64: {e}")))?,
        ),
        (None, None) => capture.body(),
    };
    if let Some(headers) = &req.headers {
        if headers.len() > MAX_HEADERS {
            return Err(bad("headers", format!("at most {MAX_HEADERS} headers")));
        }
        for (name, value) in headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(bad(
                    "headers",
                    format!("`{name}` is not a valid header name"),
                ));
            }
            if http::HeaderValue::from_str(value).is_err() {
                return Err(bad(
                    "headers",
                    format!("value of `{name}` is not a valid header value"),
                ));
            }
        }
    }
    let uri = join_target(&req.target, capture.path_suffix(), capture.query())
        .map_err(|e| bad("target", e))?;
    // Check up front for a clear 400; the connector checks again on the addresses it connects to.
    let host = uri.host().unwrap_or_default().to_string();
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    if let Ok(addrs) = ssrf::resolve(&host, port).await {
        state
            .deliver
            .policy
            .check_all(&host, &addrs)
            .map_err(refused)?;
    }
    let outbound = match &req.headers {
        Some(h) => {
            let pairs: Vec<(&[u8], &[u8])> = h
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
                .collect();
            build_request(&method, uri, &pairs, body, capture.seq)
        }
        None => {
            let pairs: Vec<(&[u8], &[u8])> = capture.headers().collect();
            build_request(&method, uri, &pairs, body, capture.seq)
        }
    }
    .map_err(|e| bad("headers", e))?;
    let outcome = client::execute(&state.deliver.client, outbound, REPLAY_TIMEOUT).await;
    if let Some(reason) = outcome.refused {
        return Err(refused(ssrf::Refusal(reason)));
    }
    let delivery = outcome.into_delivery(req.target.trim().into(), 1, "replay");
    let body = serde_json::to_vec(&delivery).expect("delivery JSON cannot fail");
    // The capture may have been evicted meanwhile: the caller still gets the record.
    state.record_delivery(bin, capture.seq, delivery);
    Ok(json_response(StatusCode::OK, body.into()))
}

fn refused(r: ssrf::Refusal) -> ApiError {
    ApiError::bad_request("forward_refused", r.0)
}
