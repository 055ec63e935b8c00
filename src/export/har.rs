//! HAR 1.2 export (<http://www.softwareishard.com/blog/har-12-spec/>) of a bin's buffer,
//! so captures open in browser devtools, Insomnia, Postman or any HAR viewer.
//!
//! The server answers webhooks itself and records only the response status, so response
//! headers and content are empty and say so in a `comment`; timings are zero because the
//! capture is taken at one instant. hookrelay-specific facts sit under `_hookrelay`
//! (HAR allows custom fields that start with `_`).

use std::sync::Arc;

use base64::Engine;
use http::{StatusCode, Version};
use serde_json::{json, Value};

use crate::api::form_pairs;
use crate::capture::{lossy, version_str, Capture};

/// The HAR document for `captures`; `base` (`scheme://host`) stands in for a missing `Host`.
pub fn document(captures: &[Arc<Capture>], base: &str) -> Value {
    let entries: Vec<Value> = captures.iter().map(|c| entry(c, base)).collect();
    json!({
        "log": {
            "version": "1.2",
            "creator": { "name": "hookrelay", "version": env!("CARGO_PKG_VERSION") },
            "entries": entries,
        }
    })
}

fn entry(c: &Capture, base: &str) -> Value {
    let meta = c.meta();
    let version = version_str(meta.version);
    let status = c.response_status();
    let mut entry = json!({
        "startedDateTime": humantime::format_rfc3339_millis(meta.received_at).to_string(),
        "time": 0,
        "request": {
            "method": c.method().as_str(),
            "url": url(c, base),
            "httpVersion": version,
            "cookies": cookies(c),
            "headers": c.headers()
                .map(|(k, v)| json!({ "name": lossy(k), "value": lossy(v) }))
                .collect::<Vec<_>>(),
            "queryString": form_pairs(c.query().unwrap_or(""))
                .into_iter()
                .map(|(name, value)| json!({ "name": name, "value": value }))
                .collect::<Vec<_>>(),
            "headersSize": headers_size(c),
            "bodySize": c.body_size(),
        },
        "response": {
            "status": status,
            "statusText": StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or(""),
            "httpVersion": version,
            "cookies": [],
            "headers": [],
            "content": { "size": 0, "mimeType": "", "comment": "response body not recorded" },
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": -1,
            "comment": "only the status answered to the sender is recorded",
        },
        "cache": {},
        "timings": { "send": 0, "wait": 0, "receive": 0 },
        "_hookrelay": {
            "bin": c.bin(),
            "seq": c.seq,
            "remote_addr": meta.remote_addr.to_string(),
            "headers_exact": meta.headers_exact,
            "truncated": c.truncated(),
            "signature": c.signature(),
        },
    });
    // HAR has `postData` only for requests that carried a body.
    if let Some(post) = post_data(c) {
        entry["request"]["postData"] = post;
    }
    entry
}

/// Absolute URL as the sender addressed it: its `Host` header, else the server's base URL.
fn url(c: &Capture, base: &str) -> String {
    let origin = match c.header("host") {
        Some(host) if !host.is_empty() => {
            let scheme = if c.meta().tls { "https" } else { "http" };
            format!("{scheme}://{}", lossy(host))
        }
        _ => base.trim_end_matches('/').to_string(),
    };
    match c.query() {
        Some(q) => format!("{origin}{}?{q}", c.path()),
        None => format!("{origin}{}", c.path()),
    }
}

fn cookies(c: &Capture) -> Vec<Value> {
    c.headers()
        .filter(|(k, _)| k.eq_ignore_ascii_case(b"cookie"))
        .flat_map(|(_, v)| {
            lossy(v)
                .split(';')
                .filter_map(|pair| {
                    let (name, value) = pair.trim().split_once('=')?;
                    Some(json!({ "name": name.trim(), "value": value.trim() }))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `postData`, with non-UTF-8 bodies as base64 text and `encoding: "base64"` (as in `content`).
fn post_data(c: &Capture) -> Option<Value> {
    let body = c.body();
    if body.is_empty() {
        return None;
    }
    let mime = c
        .header("content-type")
        .map(|v| lossy(v).into_owned())
        .unwrap_or_default();
    Some(match std::str::from_utf8(&body) {
        Ok(text) => json!({ "mimeType": mime, "params": [], "text": text }),
        Err(_) => json!({
            "mimeType": mime,
            "params": [],
            "text": base64::engine::general_purpose::STANDARD.encode(&body),
            "encoding": "base64",
        }),
    })
}

/// Bytes of the request line and header block, known only when the raw head was recorded.
fn headers_size(c: &Capture) -> i64 {
    let meta = c.meta();
    if !meta.headers_exact || meta.version >= Version::HTTP_2 {
        return -1;
    }
    let target = c.path().len() + c.query().map_or(0, |q| q.len() + 1);
    let line = c.method().as_str().len() + 1 + target + 1 + version_str(meta.version).len() + 2;
    let fields: usize = c.headers().map(|(k, v)| k.len() + 2 + v.len() + 2).sum();
    (line + fields + 2) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::testutil::capture;

    #[test]
    fn entry_has_the_har_fields() {
        let c = capture(
            "POST",
            "/hook",
            Some("a=1&b=x%20y"),
            &[
                (b"Host", b"hooks.test:8080"),
                (b"Content-Type", b"application/json"),
                (b"Cookie", b"sid=abc; theme=dark"),
            ],
            b"{\"a\":1}",
            7,
        );
        let doc = document(&[c], "http://fallback");
        let log = &doc["log"];
        assert_eq!(log["version"], "1.2");
        assert_eq!(log["creator"]["name"], "hookrelay");
        let e = &log["entries"][0];
        assert_eq!(e["startedDateTime"], "2025-09-23T07:43:23.123Z");
        let req = &e["request"];
        assert_eq!(req["method"], "POST");
        assert_eq!(req["url"], "http://hooks.test:8080/bin1/hook?a=1&b=x%20y");
        assert_eq!(req["httpVersion"], "HTTP/1.1");
        assert_eq!(
            req["headers"][2],
            json!({"name": "Cookie", "value": "sid=abc; theme=dark"})
        );
        assert_eq!(req["cookies"][1], json!({"name": "theme", "value": "dark"}));
        assert_eq!(req["queryString"][1], json!({"name": "b", "value": "x y"}));
        assert_eq!(req["postData"]["mimeType"], "application/json");
        assert_eq!(req["postData"]["text"], "{\"a\":1}");
        assert_eq!(req["bodySize"], 7);
        // "POST /bin1/hook?a=1&b=x%20y HTTP/1.1\r\n" + headers + "\r\n"
        let expected = 38 + (4 + 2 + 15 + 2) + (12 + 2 + 16 + 2) + (6 + 2 + 19 + 2) + 2;
        assert_eq!(req["headersSize"], expected);
        let resp = &e["response"];
        assert_eq!(resp["status"], 200);
        assert_eq!(resp["statusText"], "OK");
        for key in [
            "cookies",
            "headers",
            "content",
            "redirectURL",
            "headersSize",
            "bodySize",
        ] {
            assert!(!resp[key].is_null(), "{key}");
        }
        assert!(e["cache"].is_object());
        assert_eq!(e["timings"]["wait"], 0);
        assert_eq!(e["_hookrelay"]["seq"], 7);
    }

    #[test]
    fn binary_body_is_base64_and_missing_host_uses_base() {
        let c = capture("PUT", "", None, &[], b"\x00\xff", 1);
        let e = &document(&[c], "https://pub.example/")["log"]["entries"][0];
        assert_eq!(e["request"]["url"], "https://pub.example/bin1");
        assert_eq!(e["request"]["postData"]["encoding"], "base64");
        assert_eq!(e["request"]["postData"]["text"], "AP8=");
        let empty = capture("GET", "", None, &[], b"", 2);
        let e = &document(&[empty], "http://h")["log"]["entries"][0];
        assert!(e["request"].get("postData").is_none());
    }
}
