//! Hardening: metrics, panic isolation, rate limits, connection limits, timeouts, security headers, secrets in logs.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{raw_exchange, TestServer};
use http::{Method, StatusCode};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_counters_move() {
    let srv = TestServer::start(&[]).await;
    let before = srv
        .request(Method::GET, "/metrics", None, &[], Bytes::new())
        .await;
    assert_eq!(before.status, StatusCode::OK);
    let before = String::from_utf8(before.body.to_vec()).unwrap();
    for name in [
        "hookrelay_captures_total",
        "hookrelay_capture_bytes_total",
        "hookrelay_evictions_total",
        "hookrelay_viewers",
        "hookrelay_stored_bytes",
        "hookrelay_connections",
    ] {
        assert!(before.contains(name), "{name} missing:\n{before}");
    }
    srv.post_capture("/m", "0123456789").await;
    srv.post_capture("/m", "0123456789").await;
    srv.request(Method::POST, "/nosuchbin0/x", None, &[], "{}")
        .await;
    let after = srv
        .request(Method::GET, "/metrics", None, &[], Bytes::new())
        .await;
    let after = String::from_utf8(after.body.to_vec()).unwrap();
    assert_eq!(
        metric(&after, "hookrelay_captures_total") - metric(&before, "hookrelay_captures_total"),
        2.0
    );
    assert_eq!(
        metric(&after, "hookrelay_capture_bytes_total")
            - metric(&before, "hookrelay_capture_bytes_total"),
        20.0
    );
    assert!(
        after.contains(r#"hookrelay_rejected_total{reason="unknown_bin"} 1"#),
        "{after}"
    );
    assert!(metric(&after, "hookrelay_stored_bytes") > 20.0);
    assert!(metric(&after, "hookrelay_connections") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_connection_does_not_take_the_server_down() {
    let srv = TestServer::start(&[]).await;
    let resp = raw_exchange(
        srv.addr,
        b"GET /__panic HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(
        resp.is_empty(),
        "the panicking connection is dropped without an answer"
    );
    let r = srv.post_capture("/after-panic", "{}").await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after_and_capture_nothing() {
    let srv = TestServer::start(&["--rate-limit-ip", "5", "--bin-create-limit", "2"]).await;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let r = srv.post_capture("/r", "{}").await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers.contains_key("retry-after"));
            assert_eq!(r.json()["error"], "rate_limited");
        }
        statuses.push(r.status);
    }
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert!((5..=10).contains(&ok), "{statuses:?}");
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(srv.captures(&srv.bin_id, &srv.bin_key, 0).await.len(), ok);
    // Bin creation: 2 per minute per IP.
    srv.create_bin("").await;
    srv.create_bin("").await;
    let r = srv
        .request(Method::POST, "/api/bins", None, &[], Bytes::new())
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers.contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuses_the_excess_and_recovers() {
    let srv = TestServer::start(&["--max-connections", "4"]).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(srv.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let req = format!(
        "POST /{} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}",
        srv.bin_id
    );
    let refused = raw_exchange(srv.addr, req.as_bytes(), Duration::from_secs(2)).await;
    assert!(
        refused.is_empty(),
        "the 5th connection is closed without an answer"
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ok = raw_exchange(srv.addr, req.as_bytes(), Duration::from_millis(500)).await;
    assert!(String::from_utf8_lossy(&ok).starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_and_idle_connections_are_closed() {
    let srv = TestServer::start(&["--body-timeout", "2s", "--header-timeout", "2s"]).await;
    // Body at 1 byte per 500 ms: cut off by --body-timeout with 408.
    let mut slow = TcpStream::connect(srv.addr).await.unwrap();
    let head = format!(
        "POST /{} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",
        srv.bin_id
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    for _ in 0..20 {
        if slow.write_all(b"a").await.is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(500), slow.read(&mut buf)).await
        {
            answer.extend_from_slice(&buf[..n]);
            break;
        }
    }
    assert!(started.elapsed() < Duration::from_secs(6));
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // An idle keep-alive connection (after one request) is closed by the server.
    let mut idle = TcpStream::connect(srv.addr).await.unwrap();
    let req = format!(
        "POST /{} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}",
        srv.bin_id
    );
    idle.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let closed = tokio::time::timeout(Duration::from_secs(8), idle.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "idle keep-alive still open: {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_endpoints_carry_security_headers() {
    let srv = TestServer::start(&[]).await;
    for path in ["/".to_string(), format!("/i/{}", srv.bin_id)] {
        let r = srv
            .request(Method::GET, &path, None, &[], Bytes::new())
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        let csp = r.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(r.headers["x-content-type-options"], "nosniff");
        assert_eq!(r.headers["referrer-policy"], "no-referrer");
        let html = String::from_utf8_lossy(&r.body);
        assert!(
            !html.contains("<script>") && !html.contains("style="),
            "no inline script/style in {path}"
        );
    }
    // Inbound responses are sandboxed; the raw body can't render as HTML.
    srv.post_capture("/h", "<html><script>alert(1)</script></html>")
        .await;
    let body = srv
        .api_get(&format!("/api/bins/{}/requests/1/body", srv.bin_id))
        .await;
    assert_eq!(body.headers["content-type"], "application/octet-stream");
    assert!(body.headers["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    assert_eq!(body.headers["content-security-policy"], "sandbox");
    assert_eq!(body.headers["x-content-type-options"], "nosniff");
    // The API sends no CORS headers.
    let api = srv.api_get(&format!("/api/bins/{}", srv.bin_id)).await;
    assert!(!api.headers.contains_key("access-control-allow-origin"));
    // Ids and keys: 26 base32 chars = 130 bits of room, 128 random.
    let (id, key) = srv.create_bin("").await;
    assert_eq!(id.len(), 26);
    assert_eq!(key.len(), 26);
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)));
    // Unknown inspector ids are not confirmed.
    let r = srv
        .request(Method::GET, "/i/nosuchbin0", None, &[], Bytes::new())
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// Run the real binary with trace logging, use the key everywhere, and grep the logs for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--state-dir",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut key = String::new();
    let mut id = String::new();
    while let Some(line) = tokio::time::timeout(Duration::from_secs(10), stdout.next_line())
        .await
        .unwrap()
        .unwrap()
    {
        if let Some((url, k)) = line.split_once("#key=") {
            key = k.trim().to_string();
            id = url.rsplit('/').next().unwrap().to_string();
            break;
        }
    }
    assert_eq!(key.len(), 26, "banner prints the key on stdout");
    let base = format!("http://127.0.0.1:{port}");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<Bytes>>();
    for (method, path, auth) in [
        ("POST", format!("/{id}/x"), true),
        ("GET", format!("/api/bins/{id}/requests"), true),
        ("GET", format!("/api/bins/{id}/requests"), false),
        ("PATCH", format!("/api/bins/{id}"), true),
        ("POST", "/api/bins".to_string(), false),
    ] {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{base}{path}"));
        if auth {
            req = req.header("Authorization", format!("Bearer {key}"));
        }
        let body = if method == "PATCH" {
            r#"{"verify":{"scheme":"github","secret":"topsecretvalue"}}"#
        } else {
            "{}"
        };
        client
            .request(
                req.body(http_body_util::Full::new(Bytes::from(body)))
                    .unwrap(),
            )
            .await
            .unwrap();
    }
    let created = client
        .request(
            http::Request::post(format!("{base}/api/bins"))
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let created = http_body_util::BodyExt::collect(created.into_body())
        .await
        .unwrap()
        .to_bytes();
    let created: serde_json::Value = serde_json::from_slice(&created).unwrap();
    let new_key = created["key"].as_str().unwrap_or_default().to_string();
    tokio::process::Command::new("kill")
        .args(["-INT", &child.id().unwrap().to_string()])
        .status()
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "clean exit on SIGINT: {status:?}");
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();
    assert!(!logs.is_empty(), "trace logging produced output");
    for secret in [key.as_str(), new_key.as_str(), "topsecretvalue"] {
        if !secret.is_empty() {
            assert!(!logs.contains(secret), "a secret leaked into the logs");
        }
    }
}

/// A connection the server closes after a 408 lingers: the sender's writes keep succeeding
/// (drained, not reset) and it then reads the answer and an orderly close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_still_writing_gets_its_408_not_a_reset() {
    let srv = TestServer::start(&["--body-timeout", "1s"]).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let head = format!(
        "POST /{}/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
        srv.bin_id
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // A sender that only reads once it has written everything: one byte per 50 ms for 1.8 s,
    // well past the 1 s body timeout. Without a lingering close the server closes while
    // input still arrives, the kernel answers it with a reset, and the sender's next write
    // fails: many clients then report "connection reset" and never read the 408.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1800) {
        if let Err(e) = s.write_all(b"z").await {
            panic!(
                "write failed {:?} after the start (the server reset the connection): {e}",
                started.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!(
                "reset before the answer was read ({e}); got {:?}",
                String::from_utf8_lossy(&answer)
            ),
            Err(_) => panic!("connection still open 5 s later"),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains(r#""error":"body_timeout""#), "{text}");
}

/// A body answered early (413 here) is drained for a while before the connection closes: a
/// sender still writing gets the JSON answer, its writes keep succeeding, and the close is an
/// orderly FIN, not a reset (closing with unread input makes the kernel send RST, which can
/// destroy the answer in the sender's receive queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_answers_are_followed_by_a_lingering_close() {
    let srv = TestServer::start(&["--max-body", "64KiB"]).await;
    let s = TcpStream::connect(srv.addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let head = format!(
        "POST /{}/big HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        srv.bin_id,
        100 << 20
    );
    wr.write_all(head.as_bytes()).await.unwrap();
    // Keep sending 256 KiB per 100 ms for a second, as an uploader unaware of the answer does.
    let writer = tokio::spawn(async move {
        let chunk = vec![b'z'; 256 * 1024];
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(1) {
            wr.write_all(&chunk).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        std::io::Result::Ok(wr)
    });
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = rd.read(&mut buf).await.expect("answer before any reset");
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer).to_string();
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    let wr = writer
        .await
        .unwrap()
        .expect("writes during the linger are drained, not reset");
    // Then an orderly close (EOF) within the linger time, not a reset.
    let started = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), rd.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(_)) => continue, // the rest of the JSON body
            Ok(Err(e)) => panic!("connection reset instead of closed: {e}"),
            Err(_) => panic!("connection still open 5 s after the answer"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(4));
    drop(wr);
    // The capture records the cut body.
    let caps = srv.captures(&srv.bin_id, &srv.bin_key, 0).await;
    assert_eq!(caps.len(), 1);
    assert_eq!(caps[0]["truncated"], true);
}
