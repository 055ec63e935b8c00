//! Exports of captured requests (DESIGN §6): copy-as-cURL, HAR 1.2, NDJSON and an
//! OpenAPI 3.1 `webhooks` document inferred from the bodies.
//!
//! Each format is a pure function of captures in [`curl`], [`har`] and [`openapi`]; this
//! file holds the HTTP glue the API calls, so the formats stay testable without a server.

pub mod curl;
pub mod har;
pub mod openapi;

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, Uri};
use http_body_util::Full;

use crate::api::form_pairs;
use crate::capture::Capture;
use crate::deliver::{excluded_header, SEQ_HEADER};
use crate::error::{ApiError, Body};
use crate::state::AppState;
use crate::store::Bin;

/// Whether a captured header is left out when a capture is reproduced: the replay rules
/// (hop-by-hop, `Host`, `Expect`, `Content-Length`), except that a captured `X-Hookrelay-Seq`
/// is kept, because an export adds no fresh one of its own.
pub fn is_unreplayable_header(name: &[u8]) -> bool {
    excluded_header(name) && !name.eq_ignore_ascii_case(SEQ_HEADER.as_bytes())
}

/// `GET …/requests/<seq>/curl[?target=URL]`: a shell command reproducing the capture.
pub fn curl_response(
    state: &AppState,
    tls: bool,
    headers: &HeaderMap,
    uri: &Uri,
    bin: &Bin,
    capture: &Capture,
) -> Result<Response<Body>, ApiError> {
    let target = form_pairs(uri.query().unwrap_or(""))
        .into_iter()
        .find(|(k, _)| k == "target")
        .map(|(_, v)| v);
    let base = match target {
        Some(t) => t,
        None => format!("{}/{}", base_url(state, tls, headers, uri), bin.id),
    };
    let command = curl::command(capture, &base)
        .map_err(|why| ApiError::bad_request("invalid_target", format!("target: {why}")))?;
    let mut resp = Response::new(Full::new(Bytes::from(command)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}

/// `GET …/export.har`: every buffered capture as a HAR 1.2 download.
pub fn har_response(
    state: &AppState,
    tls: bool,
    headers: &HeaderMap,
    uri: &Uri,
    bin: &Bin,
) -> Response<Body> {
    let base = base_url(state, tls, headers, uri);
    let doc = har::document(&all_captures(bin), &base);
    let body = serde_json::to_vec(&doc).expect("HAR JSON serialization cannot fail");
    download(body, "application/json", &format!("{}.har", bin.id))
}

/// `GET …/export.ndjson`: one capture record (DESIGN §5) per line.
pub fn ndjson_response(bin: &Bin) -> Response<Body> {
    download(
        ndjson(&all_captures(bin)),
        "application/x-ndjson",
        &format!("{}.ndjson", bin.id),
    )
}

/// `GET …/openapi.json`: an OpenAPI 3.1 document with one webhook per event type seen.
pub fn openapi_response(bin: &Bin) -> Response<Body> {
    let doc = openapi::document(&bin.id, &all_captures(bin));
    let body = serde_json::to_vec(&doc).expect("OpenAPI JSON serialization cannot fail");
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Captures as NDJSON: `Capture::to_json` per line (that JSON never contains a raw newline).
pub fn ndjson(captures: &[Arc<Capture>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(captures.iter().map(|c| c.body_size() * 2 + 512).sum());
    for c in captures {
        out.extend_from_slice(&c.to_json());
        out.push(b'\n');
    }
    out
}

/// The whole ring: it is bounded by the bin's capacity and byte budget, so it fits in memory.
fn all_captures(bin: &Bin) -> Vec<Arc<Capture>> {
    bin.list(0, usize::MAX, None)
}

/// Public base URL as seen by this API client (same rule as bin creation's `inbound_url`).
fn base_url(state: &AppState, tls: bool, headers: &HeaderMap, uri: &Uri) -> String {
    state.base_url(crate::state::request_host(headers, uri), tls)
}

fn download(body: Vec<u8>, content_type: &'static str, filename: &str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
            .expect("bin ids are header-safe"),
    );
    resp
}

/// Test helpers shared by the format modules' unit tests.
#[cfg(test)]
pub(crate) mod testutil {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use http::{Method, Version};

    use crate::capture::{Capture, CaptureBuilder, CaptureExtra, RequestMeta};

    /// A hand-built capture in bin `bin1`.
    pub fn capture(
        method: &str,
        path_suffix: &str,
        query: Option<&str>,
        headers: &[(&[u8], &[u8])],
        body: &[u8],
        seq: u64,
    ) -> Arc<Capture> {
        let path = format!("/bin1{path_suffix}");
        // As ingest does: only a sent Content-Length counts as declared.
        let declared_length = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(b"content-length"))
            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok());
        let mut b = CaptureBuilder::new(
            &path,
            query,
            || headers.iter().map(|(k, v)| (*k, *v)),
            body.len(),
        );
        b.push_body(body);
        let meta = RequestMeta {
            bin: "bin1".into(),
            received_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_758_613_403_123),
            method: Method::from_bytes(method.as_bytes()).unwrap(),
            version: Version::HTTP_11,
            tls: false,
            remote_addr: SocketAddr::from(([127, 0, 0, 1], 40000)),
            headers_exact: true,
            declared_length,
        };
        let extra = CaptureExtra {
            truncated: false,
            signature: None,
            response_status: 200,
        };
        Arc::new(b.finish(meta, extra, seq))
    }

    /// The payment.success example body (as in tests/common).
    pub const PAYMENT: &str = r#"{"event":"payment.success","orderId":"1312312","amount":738.05,"currency":"USD","timestamp":"1758613403"}"#;

    /// A JSON POST capture.
    pub fn json_post(body: &str, seq: u64) -> Arc<Capture> {
        capture(
            "POST",
            "",
            None,
            &[(b"Content-Type", b"application/json")],
            body.as_bytes(),
            seq,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreplayable_headers() {
        for name in [
            "Host",
            "content-length",
            "Expect",
            "Connection",
            "TE",
            "Proxy-Authorization",
            "proxy-connection",
            "Transfer-Encoding",
            "Upgrade",
            "Keep-Alive",
        ] {
            assert!(is_unreplayable_header(name.as_bytes()), "{name}");
        }
        for name in [
            "Content-Type",
            "X-Proxy",
            "Accept",
            "Tea",
            "X-Hookrelay-Seq",
        ] {
            assert!(!is_unreplayable_header(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn ndjson_one_record_per_line() {
        let caps = vec![
            testutil::json_post("{\"a\":\n1}", 1),
            testutil::json_post("x", 2),
        ];
        let out = ndjson(&caps);
        let text = std::str::from_utf8(&out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        for (i, line) in lines.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["seq"], i as u64 + 1);
        }
        assert!(text.ends_with('\n'));
    }
}
