//! Foundation acceptance: exact capture, ring buffer, limits, custom responses, bad input, restart, TLS, timeouts.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use common::{raw_exchange, TestServer, PAYMENT_SUCCESS};
use http::{Method, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn headers_of(capture: &Value) -> Vec<(String, String)> {
    capture["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_success_round_trips_exactly() {
    let srv = TestServer::start(&[]).await;
    let req = format!(
        "POST /{}/stripe/events?a=1&b=two HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Dup: first\r\nx-MIXED-Case: v\r\nX-dup: second\r\nAuthorization: Bearer sender-token\r\nContent-Length: {}\r\n\r\n{}",
        srv.bin_id,
        PAYMENT_SUCCESS.len(),
        PAYMENT_SUCCESS
    );
    let resp = raw_exchange(srv.addr, req.as_bytes(), Duration::from_millis(500)).await;
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("x-hookrelay-seq: 1"),
        "{text}"
    );
    assert!(text
        .to_ascii_lowercase()
        .contains("content-security-policy: sandbox"));
    assert!(text
        .to_ascii_lowercase()
        .contains("access-control-allow-origin: *"));
    assert!(text.ends_with("{}"), "{text}");

    let captures = srv.captures(&srv.bin_id, &srv.bin_key, 0).await;
    assert_eq!(captures.len(), 1);
    let c = &captures[0];
    assert_eq!(c["seq"], 1);
    assert_eq!(c["method"], "POST");
    assert_eq!(c["path"], format!("/{}/stripe/events", srv.bin_id));
    assert_eq!(c["query"], "a=1&b=two");
    assert_eq!(c["http_version"], "HTTP/1.1");
    assert_eq!(c["scheme"], "http");
    assert_eq!(c["body"], PAYMENT_SUCCESS);
    assert_eq!(c["body_encoding"], "utf8");
    assert_eq!(c["body_size"], PAYMENT_SUCCESS.len());
    assert_eq!(c["declared_length"], PAYMENT_SUCCESS.len());
    assert_eq!(c["truncated"], false);
    assert_eq!(c["signature"], Value::Null);
    assert_eq!(c["response"]["status"], 200);
    assert_eq!(c["headers_exact"], true, "{c}");
    let expected = vec![
        ("Host", "127.0.0.1"),
        ("Content-Type", "application/json"),
        ("X-Dup", "first"),
        ("x-MIXED-Case", "v"),
        ("X-dup", "second"),
        ("Authorization", "Bearer sender-token"),
    ];
    let mut expected: Vec<(String, String)> = expected
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    expected.push(("Content-Length".into(), PAYMENT_SUCCESS.len().to_string()));
    assert_eq!(headers_of(c), expected);

    // The single-capture endpoint returns the same record.
    let one = srv
        .api_get(&format!("/api/bins/{}/requests/1", srv.bin_id))
        .await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(&one.json(), c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_body_round_trips_via_base64_and_body_endpoint() {
    let srv = TestServer::start(&[]).await;
    let mut png = vec![
        0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d,
    ];
    png.extend((0..=255u8).cycle().take(3000));
    png.extend([0xff, 0xfe, 0x00, 0x80]);
    let r = srv
        .request(
            Method::PUT,
            &format!("/{}/upload.png", srv.bin_id),
            None,
            &[("Content-Type", "image/png")],
            png.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let c = &srv.captures(&srv.bin_id, &srv.bin_key, 0).await[0];
    assert_eq!(c["body_encoding"], "base64");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(c["body"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, png);
    let body = srv
        .api_get(&format!("/api/bins/{}/requests/1/body", srv.bin_id))
        .await;
    assert_eq!(body.status, StatusCode::OK);
    assert_eq!(body.headers["content-type"], "application/octet-stream");
    assert!(body.headers["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    assert_eq!(body.body.as_ref(), png.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_keeps_newest_500_and_seq_survives_clear() {
    let srv = TestServer::start(&[]).await;
    for i in 0..600 {
        let r = srv.post_capture("/n", format!("{{\"i\":{i}}}")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers["x-hookrelay-seq"], (i + 1).to_string().as_str());
    }
    let all = srv.captures(&srv.bin_id, &srv.bin_key, 0).await;
    let seqs: Vec<u64> = all.iter().map(|c| c["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (101..=600).collect::<Vec<_>>());
    let since = srv.captures(&srv.bin_id, &srv.bin_key, 550).await;
    assert_eq!(since.len(), 50);
    assert_eq!(since[0]["seq"], 551);
    // q filters by body text.
    let found = srv
        .api_get(&format!("/api/bins/{}/requests?q=%22i%22:599", srv.bin_id))
        .await
        .json();
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["seq"], 600);
    let limited = srv
        .api_get(&format!("/api/bins/{}/requests?limit=10", srv.bin_id))
        .await
        .json();
    assert_eq!(limited.as_array().unwrap().len(), 10);

    let cleared = srv
        .request(
            Method::DELETE,
            &format!("/api/bins/{}/requests", srv.bin_id),
            Some(&srv.bin_key),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(cleared.status, StatusCode::OK);
    assert!(srv.captures(&srv.bin_id, &srv.bin_key, 0).await.is_empty());
    let r = srv.post_capture("", "{}").await;
    assert_eq!(r.headers["x-hookrelay-seq"], "601");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_bodies_get_413_and_a_truncated_capture() {
    let srv = TestServer::start(&[]).await;
    let max = 10 * 1024 * 1024;
    // Declared length over the limit: answered at once, body not read.
    let head = format!(
        "POST /{}/big HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        srv.bin_id,
        max + 1
    );
    let resp = raw_exchange(srv.addr, head.as_bytes(), Duration::from_secs(2)).await;
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    let c = srv.captures(&srv.bin_id, &srv.bin_key, 0).await;
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["truncated"], true);
    assert_eq!(c[0]["body_size"], 0);
    assert_eq!(c[0]["declared_length"], max + 1);
    assert_eq!(c[0]["response"]["status"], 413);

    // Chunked: the first --max-body bytes are stored.
    let mut stream = TcpStream::connect(srv.addr).await.unwrap();
    let head = format!(
        "POST /{}/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        srv.bin_id
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'a'; 1024 * 1024];
    let mut status = Vec::new();
    for _ in 0..11 {
        let mut piece = format!("{:x}\r\n", chunk.len()).into_bytes();
        piece.extend_from_slice(&chunk);
        piece.extend_from_slice(b"\r\n");
        if stream.write_all(&piece).await.is_err() {
            break; // server answered and closed
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut status)).await;
    let text = String::from_utf8_lossy(&status);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    let c = srv.captures(&srv.bin_id, &srv.bin_key, 1).await;
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["truncated"], true);
    assert_eq!(c[0]["body_size"], max);
    assert_eq!(c[0]["declared_length"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_response_is_served_with_its_delay() {
    let srv = TestServer::start(&[]).await;
    let patch = r#"{"response":{"status":202,"headers":[["X-One","1"],["Content-Type","text/plain"]],"body":"accepted","delay_ms":300}}"#;
    let r = srv
        .request(
            Method::PATCH,
            &format!("/api/bins/{}", srv.bin_id),
            Some(&srv.bin_key),
            &[],
            patch,
        )
        .await;
    r.expect_status(StatusCode::OK);
    assert_eq!(r.json()["settings"]["response"]["status"], 202);
    let started = Instant::now();
    let r = srv.post_capture("/x", "{}").await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.headers["x-one"], "1");
    assert_eq!(r.headers["content-type"], "text/plain");
    assert_eq!(r.headers["content-security-policy"], "sandbox");
    assert_eq!(r.body.as_ref(), b"accepted");
    let c = srv.captures(&srv.bin_id, &srv.bin_key, 0).await;
    assert_eq!(c[0]["response"]["status"], 202);

    // OPTIONS preflight: captured and answered 204 with the requested method and headers.
    let r = srv
        .request(
            Method::OPTIONS,
            &format!("/{}/x", srv.bin_id),
            None,
            &[
                ("Origin", "https://app.example"),
                ("Access-Control-Request-Method", "PUT"),
                ("Access-Control-Request-Headers", "x-custom"),
            ],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.headers["access-control-allow-methods"], "PUT");
    assert_eq!(r.headers["access-control-allow-headers"], "x-custom");
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    assert_eq!(srv.captures(&srv.bin_id, &srv.bin_key, 0).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_4xx_json_and_leaves_captures_alone() {
    let srv = TestServer::start(&[]).await;
    srv.post_capture("/keep", PAYMENT_SUCCESS).await;
    let bin = format!("/api/bins/{}", srv.bin_id);
    // (method, path, key, body, expected status, expected error code)
    type Case<'a> = (
        Method,
        String,
        Option<&'a str>,
        &'a str,
        StatusCode,
        &'a str,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            Method::GET,
            format!("{bin}/requests"),
            Some("wrong-key-wrong-key-wrong"),
            "",
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            Method::GET,
            format!("{bin}/requests"),
            None,
            "",
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            Method::GET,
            "/api/bins/nosuchbin/requests".into(),
            Some(&srv.bin_key),
            "",
            StatusCode::NOT_FOUND,
            "unknown_bin",
        ),
        (
            Method::PATCH,
            bin.clone(),
            Some(&srv.bin_key),
            "{not json",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            Method::PATCH,
            bin.clone(),
            Some(&srv.bin_key),
            r#"{"capacity":10001}"#,
            StatusCode::BAD_REQUEST,
            "invalid_settings",
        ),
        (
            Method::PATCH,
            bin.clone(),
            Some(&srv.bin_key),
            r#"{"capacity":"big"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_settings",
        ),
        (
            Method::PATCH,
            bin.clone(),
            Some(&srv.bin_key),
            r#"{"colour":"red"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_settings",
        ),
        (
            Method::PATCH,
            bin.clone(),
            Some(&srv.bin_key),
            r#"{"response":{"headers":[["Set-Cookie","a=b"]]}}"#,
            StatusCode::BAD_REQUEST,
            "invalid_settings",
        ),
        (
            Method::PATCH,
            bin.clone(),
            Some(&srv.bin_key),
            r#"{"response":{"delay_ms":30001}}"#,
            StatusCode::BAD_REQUEST,
            "invalid_settings",
        ),
        (
            Method::GET,
            format!("{bin}/requests/abc"),
            Some(&srv.bin_key),
            "",
            StatusCode::BAD_REQUEST,
            "invalid_seq",
        ),
        (
            Method::GET,
            format!("{bin}/requests/999"),
            Some(&srv.bin_key),
            "",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::GET,
            format!("{bin}/requests?limit=0"),
            Some(&srv.bin_key),
            "",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            Method::POST,
            "/api/bins".into(),
            None,
            "[1,2]",
            StatusCode::BAD_REQUEST,
            "invalid_settings",
        ),
    ];
    for (method, path, key, body, status, code) in cases {
        let r = srv
            .request(method.clone(), &path, key, &[], body.to_string())
            .await;
        assert_eq!(
            r.status,
            status,
            "{method} {path} {body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let v = r.json();
        assert_eq!(v["error"], code, "{method} {path} {body}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Message names the offending header.
    let r = srv
        .request(
            Method::PATCH,
            &bin,
            Some(&srv.bin_key),
            &[],
            r#"{"response":{"headers":[["Strict-Transport-Security","x"]]}}"#,
        )
        .await;
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("Strict-Transport-Security"));
    // Foreign Origin on a state-changing request.
    let r = srv
        .request(
            Method::DELETE,
            &format!("{bin}/requests"),
            Some(&srv.bin_key),
            &[("Origin", "https://evil.example")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["error"], "foreign_origin");
    // Unknown bin on the inbound side: 404 JSON, nothing captured.
    let r = srv
        .request(Method::POST, "/unknownbin123/x", None, &[], "{}")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"], "unknown_bin");

    let c = srv.captures(&srv.bin_id, &srv.bin_key, 0).await;
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["body"], PAYMENT_SUCCESS);
    let settings = srv.api_get(&bin).await.json();
    assert_eq!(settings["settings"]["capacity"], 500);
    assert_eq!(settings["settings"]["response"], Value::Null);

    // Bad ready-bin flags are refused at startup.
    for bad in [
        vec!["--bin-id", "api", "--bin-key", "0123456789012345678901"],
        vec!["--bin-id", "Bad_Id", "--bin-key", "0123456789012345678901"],
        vec!["--bin-id", "good-id", "--bin-key", "short"],
        vec!["--bin-id", "good-id"],
    ] {
        assert!(hookrelay::ServeArgs::from_args(&bad).is_err(), "{bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_key_and_bin_lifecycle() {
    let srv = TestServer::start(&[]).await;
    let (id, key) = srv.create_bin(r#"{"capacity":3}"#).await;
    assert_eq!(id.len(), 26);
    let r = srv
        .request(
            Method::POST,
            &format!("/api/bins/{id}/rotate-key"),
            Some(&key),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let new_key = r.json()["key"].as_str().unwrap().to_string();
    assert_ne!(new_key, key);
    let old = srv
        .request(
            Method::GET,
            &format!("/api/bins/{id}"),
            Some(&key),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    let ok = srv
        .request(
            Method::GET,
            &format!("/api/bins/{id}"),
            Some(&new_key),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(ok.json()["settings"]["capacity"], 3);
    let del = srv
        .request(
            Method::DELETE,
            &format!("/api/bins/{id}"),
            Some(&new_key),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(del.status, StatusCode::OK);
    let gone = srv
        .request(Method::POST, &format!("/{id}"), None, &[], "{}")
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bin_flood_does_not_evict_another_bin() {
    let srv = TestServer::start(&["--max-bin-bytes", "256KiB"]).await;
    let (quiet, quiet_key) = srv.create_bin("").await;
    for i in 0..5 {
        srv.request(
            Method::POST,
            &format!("/{quiet}"),
            None,
            &[],
            format!("quiet {i}"),
        )
        .await;
    }
    let big = vec![b'x'; 32 * 1024];
    for _ in 0..50 {
        srv.post_capture("/flood", big.clone()).await;
    }
    let flooded = srv.captures(&srv.bin_id, &srv.bin_key, 0).await;
    assert!(
        flooded.len() < 10,
        "flooded bin keeps at most 256 KiB: {}",
        flooded.len()
    );
    assert_eq!(flooded.last().unwrap()["seq"], 50);
    let kept = srv.captures(&quiet, &quiet_key, 0).await;
    assert_eq!(kept.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_memory_limit_evicts_from_the_largest_bin() {
    let srv = TestServer::start(&["--max-memory", "1MiB"]).await;
    let (small, small_key) = srv.create_bin("").await;
    for i in 0..3 {
        srv.request(
            Method::POST,
            &format!("/{small}"),
            None,
            &[],
            format!("small {i}"),
        )
        .await;
    }
    for _ in 0..40 {
        srv.post_capture("/big", vec![b'y'; 64 * 1024]).await;
    }
    assert!(srv.state.store.total_bytes() <= 1024 * 1024);
    assert_eq!(srv.captures(&small, &small_key, 0).await.len(), 3);
    assert!(srv.captures(&srv.bin_id, &srv.bin_key, 0).await.len() < 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_the_ready_bin_url() {
    let srv = TestServer::start(&[]).await;
    let (id, key) = (srv.bin_id.clone(), srv.bin_key.clone());
    let dir = srv.stop().await;
    let again = TestServer::start_in(dir, &[]).await;
    assert_eq!(again.bin_id, id);
    assert_eq!(again.bin_key, key);
    let r = again.post_capture("", "{}").await;
    assert_eq!(r.status, StatusCode::OK);
    // Chosen id and key win over the saved ones.
    let chosen = TestServer::start(&[
        "--bin-id",
        "my-bin",
        "--bin-key",
        "abcdefghijklmnopqrstuvwxyz",
    ])
    .await;
    assert_eq!(chosen.bin_id, "my-bin");
    assert_eq!(chosen.post_capture("", "{}").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_sender_is_cut_off_while_others_are_served() {
    let srv = TestServer::start(&["--header-timeout", "2s"]).await;
    let mut slow = TcpStream::connect(srv.addr).await.unwrap();
    let head = format!("POST /{} HTTP/1.1\r\nHost: x\r\nX-Slow: ", srv.bin_id);
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for b in head.bytes().chain(std::iter::repeat(b'a')) {
            if slow.write_all(&[b]).await.is_err() {
                return started.elapsed();
            }
            let mut buf = [0u8; 256];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(1000), slow.read(&mut buf)).await
            {
                if n == 0 || !buf[..n].is_empty() {
                    return started.elapsed();
                }
            }
            if started.elapsed() > Duration::from_secs(20) {
                break;
            }
        }
        Duration::from_secs(999)
    });
    for _ in 0..5 {
        let r = srv.post_capture("/fast", "{}").await;
        assert_eq!(r.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cut_after = trickle.await.unwrap();
    assert!(
        cut_after < Duration::from_secs(6),
        "slow sender was not cut: {cut_after:?}"
    );
    assert_eq!(srv.captures(&srv.bin_id, &srv.bin_key, 0).await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let srv = TestServer::start(&[]).await;
    srv.request(
        Method::PATCH,
        &format!("/api/bins/{}", srv.bin_id),
        Some(&srv.bin_key),
        &[],
        r#"{"response":{"delay_ms":20000}}"#,
    )
    .await;
    let addr = srv.addr;
    let id = srv.bin_id.clone();
    let in_flight = tokio::spawn(async move {
        let req = format!("POST /{id} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}");
        raw_exchange(addr, req.as_bytes(), Duration::from_secs(15)).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    srv.stop().await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let resp = in_flight.await.unwrap();
    let text = String::from_utf8_lossy(&resp);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "in-flight request answered at shutdown: {text}"
    );
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_never_used_bins_expire_but_the_ready_bin_stays() {
    let srv = TestServer::start(&[]).await;
    if srv.redis.is_some() {
        // White-box purge of the memory store; with Redis, expiry is Redis's key TTL
        // (tests/redis.rs: bins_expire_by_redis_ttl_but_the_ready_bin_stays).
        return;
    }
    let (unused, unused_key) = srv.create_bin("").await;
    let (used, used_key) = srv.create_bin("").await;
    srv.request(Method::POST, &format!("/{used}"), None, &[], "{}")
        .await;
    let day = Duration::from_secs(86_400);
    // Never-used bins go first (their TTL is 1 h in production; zero here).
    let removed = srv.state.store.purge_expired(day, Duration::ZERO);
    assert_eq!(removed, 1);
    let gone = srv
        .request(
            Method::GET,
            &format!("/api/bins/{unused}"),
            Some(&unused_key),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(srv.captures(&used, &used_key, 0).await.len(), 1);
    // Idle TTL passes: the used bin goes, the ready (pinned) bin stays.
    let removed = srv
        .state
        .store
        .purge_expired(Duration::ZERO, Duration::ZERO);
    assert_eq!(removed, 1);
    let r = srv.post_capture("", "{}").await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_method_and_nested_path_is_captured() {
    let srv = TestServer::start(&[]).await;
    for (i, m) in ["GET", "HEAD", "PUT", "PATCH", "DELETE", "PURGE"]
        .iter()
        .enumerate()
    {
        let method = Method::from_bytes(m.as_bytes()).unwrap();
        let r = srv
            .request(
                method,
                &format!("/{}/a/b/{i}?x=%20y", srv.bin_id),
                None,
                &[],
                Bytes::new(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{m}");
        if *m == "HEAD" {
            assert!(r.body.is_empty());
        }
    }
    let c = srv.captures(&srv.bin_id, &srv.bin_key, 0).await;
    let methods: Vec<&str> = c.iter().map(|c| c["method"].as_str().unwrap()).collect();
    assert_eq!(methods, ["GET", "HEAD", "PUT", "PATCH", "DELETE", "PURGE"]);
    assert_eq!(c[5]["path"], format!("/{}/a/b/5", srv.bin_id));
    assert_eq!(c[5]["query"], "x=%20y");
    // Reserved first segments are never bins.
    let r = srv.request(Method::POST, "/healthz", None, &[], "{}").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let h = srv
        .request(Method::GET, "/healthz", None, &[], Bytes::new())
        .await
        .json();
    assert_eq!(h["status"], "ok");
    assert!(h["uptime_s"].is_u64() && h["version"].is_string() && h["store"].is_string());
}
