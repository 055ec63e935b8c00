//! REST API under `/api` (DESIGN §6). Every route but bin creation needs the bin key.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::error::{json_response, ApiError, Body};
use crate::export;
use crate::ids;
use crate::server::router::method_not_allowed;
use crate::server::ConnInfo;
use crate::settings::Settings;
use crate::state::AppState;
use crate::store::{Bin, CreateError};

/// Largest JSON body the API accepts.
const MAX_API_BODY: usize = 1024 * 1024;
/// Largest `limit` for listing captures.
const MAX_LIST: usize = 1000;

/// Route an `/api/…` request.
pub async fn handle(state: &AppState, conn: &ConnInfo, req: Request<Incoming>) -> Response<Body> {
    match route(state, conn, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn route(
    state: &AppState,
    conn: &ConnInfo,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(2).collect();
    let method = req.method().clone();
    if method != Method::GET && method != Method::HEAD {
        check_origin(req.headers(), req.uri())?;
    }
    match (method.clone(), segments.as_slice()) {
        (Method::POST, ["bins"]) => create_bin(state, conn, req).await,
        (_, ["bins"]) => Ok(method_not_allowed()),
        (Method::GET, ["bins", id, "ws"]) => {
            // Browsers can't set headers on a WebSocket: auth may come as the first message.
            let bin = state
                .store
                .lookup_fresh(id)
                .await?
                .ok_or_else(ApiError::unknown_bin)?;
            Ok(crate::live::upgrade(state, bin, req))
        }
        (_, ["bins", id, rest @ ..]) => {
            // With Redis, the mirror is first brought up to date (other instances' captures).
            let bin = state
                .store
                .lookup_fresh(id)
                .await?
                .ok_or_else(ApiError::unknown_bin)?;
            authorize(&bin, req.headers())?;
            state.store.touch(&bin);
            bin_route(state, conn, bin, method, rest, req).await
        }
        _ => Err(ApiError::not_found("no such API endpoint")),
    }
}

async fn bin_route(
    state: &AppState,
    conn: &ConnInfo,
    bin: Arc<Bin>,
    method: Method,
    rest: &[&str],
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    match (method, rest) {
        (Method::GET, []) => Ok(json(StatusCode::OK, &bin_json(&bin))),
        (Method::PATCH, []) => {
            let body = read_json_body(req).await?;
            let settings = bin.settings().merge_patch(&body)?;
            state.store.set_settings(&bin, settings).await?;
            Ok(json(StatusCode::OK, &bin_json(&bin)))
        }
        (Method::DELETE, []) => {
            state.store.remove(&bin.id).await?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "deleted": &*bin.id }),
            ))
        }
        (Method::POST, ["rotate-key"]) => {
            let key = state.store.rotate_key(&bin).await?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "id": &*bin.id, "key": key }),
            ))
        }
        (Method::GET, ["requests"]) => list(&bin, req.uri().query()),
        (Method::DELETE, ["requests"]) => {
            state.store.clear(&bin).await?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "cleared": true }),
            ))
        }
        (Method::GET, ["requests", seq]) => {
            let capture = bin.get(parse_seq(seq)?).ok_or_else(no_capture)?;
            Ok(json_response(StatusCode::OK, capture.to_json().into()))
        }
        (Method::POST, ["requests", seq, "replay"]) => {
            let capture = bin.get(parse_seq(seq)?).ok_or_else(no_capture)?;
            let body = read_json_body(req).await?;
            crate::deliver::replay::handle(state, &bin, &capture, &body).await
        }
        (Method::GET, ["requests", seq, "body"]) => {
            let capture = bin.get(parse_seq(seq)?).ok_or_else(no_capture)?;
            let mut resp = Response::new(Full::new(capture.body()));
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            let disposition = format!("attachment; filename=\"{}-{}.bin\"", bin.id, capture.seq);
            h.insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition).expect("ids are header-safe"),
            );
            Ok(resp)
        }
        (Method::GET, ["requests", seq, "curl"]) => {
            let capture = bin.get(parse_seq(seq)?).ok_or_else(no_capture)?;
            export::curl_response(state, conn.tls, req.headers(), req.uri(), &bin, &capture)
        }
        (Method::GET, ["export.har"]) => Ok(export::har_response(
            state,
            conn.tls,
            req.headers(),
            req.uri(),
            &bin,
        )),
        (Method::GET, ["export.ndjson"]) => Ok(export::ndjson_response(&bin)),
        (Method::GET, ["openapi.json"]) => Ok(export::openapi_response(&bin)),
        (_, ["requests", _, "curl"] | ["export.har" | "export.ndjson" | "openapi.json"]) => {
            Ok(method_not_allowed())
        }
        (
            _,
            []
            | ["rotate-key"]
            | ["requests"]
            | ["requests", _]
            | ["requests", _, "body"]
            | ["requests", _, "replay"],
        ) => Ok(method_not_allowed()),
        _ => Err(ApiError::not_found("no such API endpoint")),
    }
}

fn no_capture() -> ApiError {
    ApiError::not_found(
        "no capture with this seq in the buffer (evicted, cleared or not yet received)",
    )
}

fn parse_seq(text: &str) -> Result<u64, ApiError> {
    text.parse::<u64>().ok().filter(|s| *s > 0).ok_or_else(|| {
        ApiError::bad_request("invalid_seq", format!("`{text}` is not a capture seq"))
    })
}

fn list(bin: &Bin, query: Option<&str>) -> Result<Response<Body>, ApiError> {
    let mut since = 0u64;
    let mut limit = 100usize;
    let mut q: Option<String> = None;
    for (key, value) in form_pairs(query.unwrap_or("")) {
        match key.as_str() {
            "since" => {
                since = value.parse().map_err(|_| {
                    ApiError::bad_request("invalid_query", "since: must be a non-negative integer")
                })?
            }
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_LIST).contains(l))
                    .ok_or_else(|| {
                        ApiError::bad_request("invalid_query", "limit: must be between 1 and 1000")
                    })?
            }
            "q" if !value.is_empty() => q = Some(value),
            _ => {}
        }
    }
    let captures = bin.list(since, limit, q.as_deref());
    let mut out = Vec::with_capacity(captures.len() * 1024 + 2);
    out.push(b'[');
    for (i, c) in captures.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&c.to_json());
    }
    out.push(b']');
    Ok(json_response(StatusCode::OK, out.into()))
}

/// Decode `a=1&b=x%20y` pairs (form encoding: `+` is a space).
pub fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn create_bin(
    state: &AppState,
    conn: &ConnInfo,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let client_ip = crate::ingest::client_addr(state, conn.remote, req.headers()).ip();
    if let Err(retry) = state.create_limiter.check(&client_ip) {
        let mut resp = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many bins created from this address; try again later",
        )
        .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry));
        return Ok(resp);
    }
    let host = crate::state::request_host(req.headers(), req.uri()).map(str::to_string);
    let body = read_json_body(req).await?;
    let settings = Settings::from_create_json(&body, state.cfg.bin_capacity)?;
    let id = ids::random_token();
    let key = ids::random_token();
    let bin = state
        .store
        .create(&id, ids::hash_key(&key), settings, false)
        .await
        .map_err(|e| match e {
            CreateError::Full | CreateError::Unavailable(_) => ApiError::unavailable(e.to_string()),
            CreateError::Exists => ApiError::new(StatusCode::CONFLICT, "exists", e.to_string()),
        })?;
    let base = state.base_url(host.as_deref(), conn.tls);
    let mut body = bin_json(&bin);
    body["key"] = key.clone().into();
    body["inbound_url"] = format!("{base}/{id}").into();
    body["inspector_url"] = format!("{base}/i/{id}#key={key}").into();
    Ok(json(StatusCode::CREATED, &body))
}

fn bin_json(bin: &Bin) -> serde_json::Value {
    serde_json::json!({
        "id": &*bin.id,
        "epoch": bin.epoch,
        "settings": bin.settings().public_json(),
    })
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    json_response(status, Bytes::from(value.to_string()))
}

async fn read_json_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let body = Limited::new(req.into_body(), MAX_API_BODY);
    body.collect().await.map(|c| c.to_bytes()).map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "API request bodies are limited to 1 MiB",
        )
    })
}

/// `Authorization: Bearer <key>`, compared in constant time against the stored hash.
pub fn authorize(bin: &Bin, headers: &HeaderMap) -> Result<(), ApiError> {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match key {
        Some(key) if bin.authorize(key) => Ok(()),
        _ => Err(ApiError::unauthorized()),
    }
}

/// Browsers send `Origin` on cross-site writes: refuse any that isn't this server.
fn check_origin(headers: &HeaderMap, uri: &http::Uri) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(()); // non-browser client
    };
    // HTTP/2 requests (browsers over TLS) carry `:authority` instead of a Host header.
    let host = crate::state::request_host(headers, uri);
    let origin = origin.to_str().unwrap_or("null");
    let same = host.is_some_and(|host| {
        origin == format!("http://{host}") || origin == format!("https://{host}")
    });
    if same {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "foreign_origin",
            format!("cross-origin API writes are refused (Origin: {origin})"),
        ))
    }
}
