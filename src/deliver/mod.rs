//! Delivery (DESIGN §8): replay, auto-forward and the `listen` relay client.
//!
//! - [`ssrf`]: which addresses server-side deliveries may reach.
//! - [`client`]: the pooled outbound client, its connector and TLS, one attempt → [`client::Outcome`].
//! - [`replay`]: `POST /api/bins/<id>/requests/<seq>/replay`.
//! - [`forward`]: per-(bin, target) ordered queues with retries.
//! - [`listen`]: `hookrelay listen`, a WebSocket client relaying a bin to a local target.

pub mod client;
pub mod forward;
pub mod listen;
pub mod replay;
pub mod ssrf;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::Full;

use crate::config::ServeArgs;
use crate::error::Error;

/// Header added to every delivery so targets can de-duplicate.
pub const SEQ_HEADER: &str = "x-hookrelay-seq";

/// Server-side delivery machinery, shared in the app state.
pub struct Deliverer {
    /// Pooled outbound client behind the SSRF-checking connector.
    pub client: client::HttpClient,
    /// The SSRF policy (also applied inside `client`'s connector).
    pub policy: Arc<ssrf::Policy>,
    /// Auto-forward queues and workers.
    pub forwards: forward::Forwarder,
}

impl Deliverer {
    /// Build from the serve flags and our own listener addresses.
    pub fn new(cfg: &ServeArgs, own: &[SocketAddr]) -> Result<Deliverer, Error> {
        let policy = Arc::new(ssrf::Policy::new(&cfg.forward_allow, cfg.listen, own)?);
        let tls = client::tls_config(None, false).map_err(Error::Tls)?;
        let connector = client::Connector::new(Some(policy.clone()), tls);
        Ok(Deliverer {
            client: client::build_client(connector),
            policy,
            forwards: forward::Forwarder::new(cfg.forward_queue, cfg.forward_backoff),
        })
    }
}

/// Whether a captured header is not copied to a delivery: hop-by-hop headers, `Host`,
/// `Expect`, `Content-Length` (recomputed) and our own seq header (set fresh).
pub fn excluded_header(name: &[u8]) -> bool {
    const EXCLUDED: &[&str] = &[
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "upgrade",
        "host",
        "expect",
        "content-length",
        SEQ_HEADER,
    ];
    EXCLUDED
        .iter()
        .any(|e| name.eq_ignore_ascii_case(e.as_bytes()))
        || (name.len() >= 6 && name[..6].eq_ignore_ascii_case(b"proxy-"))
}

/// The target URL for a capture: target path + path suffix, target query + capture query.
pub fn join_target(target: &str, suffix: &str, query: Option<&str>) -> Result<Uri, String> {
    let uri: Uri = target
        .trim()
        .parse()
        .map_err(|_| format!("`{target}` is not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!("`{target}` must be an absolute http(s) URL"));
    }
    let mut path = uri.path().to_string();
    if !suffix.is_empty() {
        path = format!("{}{}", path.trim_end_matches('/'), suffix);
    }
    let queries: Vec<&str> = [uri.query(), query]
        .into_iter()
        .flatten()
        .filter(|q| !q.is_empty())
        .collect();
    let path_and_query = if queries.is_empty() {
        path
    } else {
        format!("{path}?{}", queries.join("&"))
    };
    let mut parts = uri.into_parts();
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|_| format!("`{target}` plus the captured path is not a valid URL"))?,
    );
    Uri::from_parts(parts).map_err(|e| format!("`{target}`: {e}"))
}

/// Build an outbound request: headers in the given order minus [`excluded_header`] (and any
/// header `Connection` nominates), plus `X-Hookrelay-Seq`.
pub fn build_request(
    method: &Method,
    uri: Uri,
    headers: &[(&[u8], &[u8])],
    body: Bytes,
    seq: u64,
) -> Result<Request<Full<Bytes>>, String> {
    // Headers named in `Connection` are hop-by-hop too (RFC 9110 §7.6.1).
    let nominated: Vec<Vec<u8>> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, v)| {
            v.split(|b| *b == b',')
                .map(|t| t.trim_ascii().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut req = Request::builder()
        .method(method.clone())
        .uri(uri)
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let map = req.headers_mut();
    for &(name, value) in headers {
        if excluded_header(name) || nominated.iter().any(|n| name.eq_ignore_ascii_case(n)) {
            continue;
        }
        let n = HeaderName::from_bytes(name).map_err(|_| {
            format!(
                "`{}` is not a valid header name",
                String::from_utf8_lossy(name)
            )
        })?;
        let v = HeaderValue::from_bytes(value).map_err(|_| {
            format!(
                "value of `{}` is not a valid header value",
                String::from_utf8_lossy(name)
            )
        })?;
        map.append(n, v);
    }
    map.insert(HeaderName::from_static(SEQ_HEADER), HeaderValue::from(seq));
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_join_path_and_query() {
        let j = |t, s, q| join_target(t, s, q).unwrap().to_string();
        assert_eq!(j("http://h:3000", "", None), "http://h:3000/");
        assert_eq!(j("http://h:3000/hook", "", None), "http://h:3000/hook");
        assert_eq!(
            j("http://h:3000/hook/", "/a/b", Some("x=1")),
            "http://h:3000/hook/a/b?x=1"
        );
        assert_eq!(
            j("http://h/p?k=v", "/s", Some("x=1")),
            "http://h/p/s?k=v&x=1"
        );
        assert!(join_target("ftp://h/", "", None).is_err());
        assert!(join_target("/relative", "", None).is_err());
        assert!(join_target("not a url", "", None).is_err());
    }

    #[test]
    fn excluded_headers() {
        for h in [
            "Connection",
            "KEEP-ALIVE",
            "Transfer-Encoding",
            "TE",
            "Upgrade",
            "Proxy-Authorization",
            "Host",
            "Expect",
            "Content-Length",
            "X-Hookrelay-Seq",
        ] {
            assert!(excluded_header(h.as_bytes()), "{h}");
        }
        for h in ["Content-Type", "X-Proxy", "Tex"] {
            assert!(!excluded_header(h.as_bytes()), "{h}");
        }
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b"Connection", b"keep-alive, X-Drop"),
            (b"X-Drop", b"1"),
            (b"X-Keep", b"2"),
        ];
        let req = build_request(
            &Method::POST,
            "http://h/".parse().unwrap(),
            &headers,
            Bytes::new(),
            7,
        )
        .unwrap();
        assert!(req.headers().get("x-drop").is_none());
        assert_eq!(req.headers()["x-keep"], "2");
        assert_eq!(req.headers()[SEQ_HEADER], "7");
    }
}
