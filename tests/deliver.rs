//! Replay, forward and the SSRF guard against real local target servers (no mocks).

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{raw_exchange, TestServer, PAYMENT_SUCCESS};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as a target saw it on the wire.
#[derive(Clone, Debug)]
struct WireRequest {
    method: String,
    target: String,
    /// Header names exactly as sent (case included), in wire order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A raw-socket HTTP/1.1 target that records heads byte-exact and answers `200 ok`, then closes.
async fn raw_target() -> (SocketAddr, Arc<Mutex<Vec<WireRequest>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let (head_len, req) = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let mut headers = [httparse::EMPTY_HEADER; 64];
                    let mut parsed = httparse::Request::new(&mut headers);
                    if let Ok(httparse::Status::Complete(len)) = parsed.parse(&buf) {
                        let req = WireRequest {
                            method: parsed.method.unwrap().to_string(),
                            target: parsed.path.unwrap().to_string(),
                            headers: parsed
                                .headers
                                .iter()
                                .map(|h| {
                                    (
                                        h.name.to_string(),
                                        String::from_utf8_lossy(h.value).into_owned(),
                                    )
                                })
                                .collect(),
                            body: Vec::new(),
                        };
                        break (len, req);
                    }
                };
                let mut req = req;
                let length: usize = req
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |(_, v)| v.parse().unwrap());
                while buf.len() < head_len + length {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                req.body = buf[head_len..].to_vec();
                log.lock().unwrap().push(req);
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Target: raw\r\nConnection: close\r\n\r\nok")
                    .await;
            });
        }
    });
    (addr, seen)
}

/// What a hyper target saw: seq header and status answered.
type Log = Arc<Mutex<Vec<(u64, u16)>>>;

/// A hyper HTTP/1.1 target; `answer(seq, nth_attempt_for_seq)` picks the status.
async fn hyper_target(answer: fn(u64, usize) -> u16) -> (SocketAddr, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let log = log2.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let log = log.clone();
                    async move {
                        let seq: u64 = req.headers()["x-hookrelay-seq"]
                            .to_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        let _ = req.into_body().collect().await;
                        let status = {
                            let mut log = log.lock().unwrap();
                            let nth = log.iter().filter(|(s, _)| *s == seq).count();
                            let status = answer(seq, nth);
                            log.push((seq, status));
                            status
                        };
                        let mut resp = Response::new(Full::new(Bytes::from_static(b"{}")));
                        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    (addr, log)
}

async fn post_json(server: &TestServer, path: &str, body: Value) -> common::Reply {
    server
        .request(
            Method::POST,
            path,
            Some(&server.bin_key),
            &[("Content-Type", "application/json")],
            body.to_string(),
        )
        .await
}

/// Capture the payment.success example with mixed-case and duplicate headers and a query.
async fn capture_payment(server: &TestServer) -> u64 {
    let raw = format!(
        "POST /{}/stripe/events?a=1&b=two%20x HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nX-Signature: ab12\r\nX-Dup: one\r\nx-OTHER: 1\r\nX-Dup: two\r\nUser-Agent: Stripe/1.0\r\nExpect: 100-continue-not\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: secret\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{}",
        server.bin_id,
        server.addr,
        PAYMENT_SUCCESS.len(),
        PAYMENT_SUCCESS
    );
    let reply = raw_exchange(server.addr, raw.as_bytes(), Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let seq_line = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("x-hookrelay-seq:"))
        .unwrap();
    seq_line.split(':').nth(1).unwrap().trim().parse().unwrap()
}

fn lower(headers: &[(String, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect()
}

/// HeaderMap order: names in first-seen order, each name's values together.
fn grouped(headers: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut names: Vec<String> = Vec::new();
    for (k, _) in &headers {
        if !names.contains(k) {
            names.push(k.clone());
        }
    }
    names
        .iter()
        .flat_map(|n| headers.iter().filter(move |(k, _)| k == n).cloned())
        .collect()
}

#[tokio::test]
async fn replay_reaches_target_byte_exact_and_edits_change_only_what_was_edited() {
    let server = TestServer::start(&[]).await;
    let (target, seen) = raw_target().await;
    let seq = capture_payment(&server).await;
    let path = format!("/api/bins/{}/requests/{seq}/replay", server.bin_id);

    let r = post_json(
        &server,
        &path,
        json!({ "target": format!("http://{target}/hook") }),
    )
    .await;
    r.expect_status(StatusCode::OK);
    let d = r.json();
    assert_eq!(d["status"], 200);
    assert_eq!(d["via"], "replay");
    assert_eq!(d["response_body"], "ok");
    assert_eq!(d["error"], Value::Null);
    assert!(d["response_headers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h[0] == "x-target"));

    let got = seen.lock().unwrap().pop().unwrap();
    assert_eq!(got.method, "POST");
    assert_eq!(got.target, "/hook/stripe/events?a=1&b=two%20x");
    assert_eq!(got.body, PAYMENT_SUCCESS.as_bytes());
    let sent: Vec<(String, String)> = got
        .headers
        .iter()
        .filter(|(k, _)| {
            !k.eq_ignore_ascii_case("host") && !k.eq_ignore_ascii_case("content-length")
        })
        .cloned()
        .collect();
    let expected_captured = [
        ("content-type", "application/json"),
        ("x-signature", "ab12"),
        ("x-dup", "one"),
        ("x-other", "1"),
        ("x-dup", "two"),
        ("user-agent", "Stripe/1.0"),
    ];
    let mut expected: Vec<(String, String)> = grouped(
        expected_captured
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    expected.push(("x-hookrelay-seq".into(), seq.to_string()));
    assert_eq!(lower(&sent), expected, "wire headers: {:?}", got.headers);
    // Names go out Title-Cased (hyper can't replay the original case; see deliver/client.rs).
    assert!(
        got.headers.iter().any(|(k, _)| k == "X-Other"),
        "{:?}",
        got.headers
    );
    let length = got
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .unwrap();
    assert_eq!(length.1, PAYMENT_SUCCESS.len().to_string());
    let host = got
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .unwrap();
    assert_eq!(host.1, target.to_string());

    // Edit only the body: method, path, query and headers stay as captured.
    let r = post_json(
        &server,
        &path,
        json!({ "target": format!("http://{target}/hook"), "body": "changed" }),
    )
    .await;
    r.expect_status(StatusCode::OK);
    let edited = seen.lock().unwrap().pop().unwrap();
    assert_eq!(edited.method, "POST");
    assert_eq!(edited.target, got.target);
    assert_eq!(edited.body, b"changed");
    let strip = |h: &[(String, String)]| -> Vec<(String, String)> {
        lower(h)
            .into_iter()
            .filter(|(k, _)| k != "content-length")
            .collect()
    };
    assert_eq!(strip(&edited.headers), strip(&got.headers));

    // Edit method and headers (binary body via base64): body and path stay.
    let r = post_json(
        &server,
        &path,
        json!({ "target": format!("http://{target}"), "method": "PUT",
                "headers": [["X-Edited", "yes"], ["content-type", "text/plain"]] }),
    )
    .await;
    r.expect_status(StatusCode::OK);
    let edited = seen.lock().unwrap().pop().unwrap();
    assert_eq!(edited.method, "PUT");
    assert_eq!(edited.target, "/stripe/events?a=1&b=two%20x");
    assert_eq!(edited.body, PAYMENT_SUCCESS.as_bytes());
    let names: Vec<String> = lower(&edited.headers).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        names,
        [
            "x-edited",
            "content-type",
            "x-hookrelay-seq",
            "host",
            "content-length"
        ]
    );
    let r = post_json(
        &server,
        &path,
        json!({ "target": format!("http://{target}"), "body_base64": "AP8=" }),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(seen.lock().unwrap().pop().unwrap().body, [0u8, 255]);

    // Every replay is a delivery on the capture record.
    let record = server
        .api_get(&format!("/api/bins/{}/requests/{seq}", server.bin_id))
        .await
        .json();
    let deliveries = record["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 4);
    assert!(deliveries
        .iter()
        .all(|d| d["via"] == "replay" && d["status"] == 200));
}

#[tokio::test]
async fn replay_to_a_dead_port_records_an_error() {
    let server = TestServer::start(&[]).await;
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let seq = server.post_capture("/x", PAYMENT_SUCCESS).await.headers["x-hookrelay-seq"]
        .to_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    let path = format!("/api/bins/{}/requests/{seq}/replay", server.bin_id);
    let r = post_json(
        &server,
        &path,
        json!({ "target": format!("http://{dead}/") }),
    )
    .await;
    r.expect_status(StatusCode::OK);
    let d = r.json();
    assert_eq!(d["status"], Value::Null);
    let error = d["error"].as_str().unwrap();
    assert!(error.contains("connect"), "{error}");
    let record = server
        .api_get(&format!("/api/bins/{}/requests/{seq}", server.bin_id))
        .await
        .json();
    assert_eq!(record["deliveries"][0]["error"], error);
}

#[tokio::test]
async fn replay_validation_and_ssrf_refusals_are_400_and_send_nothing() {
    let server = TestServer::start(&[]).await;
    let seq = server.post_capture("/x", PAYMENT_SUCCESS).await.headers["x-hookrelay-seq"]
        .to_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    let path = format!("/api/bins/{}/requests/{seq}/replay", server.bin_id);
    let own_port = server.addr.port();
    let cases = [
        (
            json!({ "target": "http://10.0.0.1/" }),
            "forward_refused",
            "10.0.0.1 is private",
        ),
        (
            json!({ "target": "http://169.254.169.254/" }),
            "forward_refused",
            "169.254.169.254 is link-local; not allowed by --forward-allow",
        ),
        (
            json!({ "target": "http://[::ffff:169.254.169.254]/" }),
            "forward_refused",
            "169.254.169.254 is link-local",
        ),
        (
            json!({ "target": "http://0.0.0.0:1/" }),
            "forward_refused",
            "unspecified",
        ),
        (
            json!({ "target": "http://[::]:1/" }),
            "forward_refused",
            "unspecified",
        ),
        (
            json!({ "target": format!("http://127.0.0.1:{own_port}/") }),
            "forward_refused",
            "own listener",
        ),
        (
            json!({ "target": format!("http://localhost:{own_port}/") }),
            "forward_refused",
            "own listener",
        ),
        (
            json!({ "target": "http://100.64.0.1/" }),
            "forward_refused",
            "CGNAT",
        ),
        (
            json!({ "target": "ftp://127.0.0.1/" }),
            "invalid_replay",
            "target:",
        ),
        (json!({ "target": "nope" }), "invalid_replay", "target:"),
        (
            json!({ "target": "http://127.0.0.1:1/", "bogus": 1 }),
            "invalid_replay",
            "unknown field `bogus`",
        ),
        (
            json!({ "target": "http://127.0.0.1:1/", "method": "BAD METHOD" }),
            "invalid_replay",
            "method:",
        ),
        (
            json!({ "target": "http://127.0.0.1:1/", "headers": [["bad name", "x"]] }),
            "invalid_replay",
            "headers:",
        ),
        (
            json!({ "target": "http://127.0.0.1:1/", "body": "a", "body_base64": "YQ==" }),
            "invalid_replay",
            "body:",
        ),
        (
            json!({ "method": "GET" }),
            "invalid_replay",
            "missing field `target`",
        ),
    ];
    for (body, code, needle) in cases {
        let r = post_json(&server, &path, body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let e = r.json();
        assert_eq!(e["error"], code, "{body}: {e}");
        assert!(
            e["message"].as_str().unwrap().contains(needle),
            "{body}: {e}"
        );
    }
    let r = server
        .request(Method::POST, &path, Some(&server.bin_key), &[], "{not json")
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "invalid_json");
    // Refused targets never reached the connector: no delivery was recorded.
    let record = server
        .api_get(&format!("/api/bins/{}/requests/{seq}", server.bin_id))
        .await
        .json();
    assert_eq!(
        record["deliveries"].as_array().unwrap().len(),
        0,
        "{record}"
    );
    // Nothing got into the server's own listener either: still exactly one capture.
    assert_eq!(
        server
            .captures(&server.bin_id, &server.bin_key, 0)
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn non_loopback_listener_refuses_loopback_until_allowed() {
    // Policy only (the listener address decides the default); the server itself stays on loopback.
    let cfg = hookrelay::ServeArgs::from_args(["--listen", "0.0.0.0:8080"]).unwrap();
    let own: Vec<SocketAddr> = vec!["0.0.0.0:8080".parse().unwrap()];
    let d = hookrelay::deliver::Deliverer::new(&cfg, &own).unwrap();
    let addrs = hookrelay::deliver::ssrf::resolve("localhost", 3000)
        .await
        .unwrap();
    let e = d.policy.check_all("localhost", &addrs).unwrap_err();
    assert!(
        e.0.contains("is loopback; not allowed by --forward-allow"),
        "{}",
        e.0
    );
    let cfg = hookrelay::ServeArgs::from_args([
        "--listen",
        "0.0.0.0:8080",
        "--forward-allow",
        "loopback",
    ])
    .unwrap();
    let d = hookrelay::deliver::Deliverer::new(&cfg, &own).unwrap();
    assert!(d.policy.check_all("localhost", &addrs).is_ok());
    let own_port = hookrelay::deliver::ssrf::resolve("localhost", 8080)
        .await
        .unwrap();
    assert!(d.policy.check_all("localhost", &own_port).is_err());
    assert!(
        hookrelay::ServeArgs::from_args(["--forward-allow", "bad host!"])
            .map(|c| hookrelay::deliver::Deliverer::new(&c, &[]).is_err())
            .unwrap()
    );
}

fn fail_every_tenth(seq: u64, nth: usize) -> u16 {
    if seq.is_multiple_of(10) && nth < 2 {
        500
    } else {
        200
    }
}

#[tokio::test]
async fn forward_delivers_all_in_order_with_retries() {
    let server = TestServer::start(&["--forward-backoff", "20ms"]).await;
    let (target, log) = hyper_target(fail_every_tenth).await;
    let settings = json!({ "forward": [{ "url": format!("http://{target}/in"), "retries": 3, "timeout_ms": 5000 }] });
    let (bin, key) = server.create_bin(&settings.to_string()).await;
    let server = Arc::new(server);
    let started = Instant::now();
    // Eight concurrent senders: enqueues arrive out of order, deliveries must not.
    let mut tasks = Vec::new();
    for t in 0..8 {
        let server = server.clone();
        let bin = bin.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let r = server
                    .request(
                        Method::POST,
                        &format!("/{bin}/e/{t}/{i}"),
                        None,
                        &[],
                        PAYMENT_SUCCESS,
                    )
                    .await;
                assert_eq!(r.status, StatusCode::OK);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let ingest = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| *s == 200)
            .count();
        if ok >= 200 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all = log.lock().unwrap().clone();
    let ok: Vec<u64> = all
        .iter()
        .filter(|(_, s)| *s == 200)
        .map(|(q, _)| *q)
        .collect();
    assert_eq!(
        ok,
        (1..=200).collect::<Vec<u64>>(),
        "successes exactly once, in seq order"
    );
    // Attempts arrive in seq order too (a retried seq is finished before the next starts).
    let attempts: Vec<u64> = all.iter().map(|(q, _)| *q).collect();
    assert!(attempts.windows(2).all(|w| w[0] <= w[1]), "{attempts:?}");
    assert_eq!(all.len(), 200 + 20 * 2);
    println!(
        "ingest of 200 captures: {ingest:?}; all forwarded after {:?}",
        started.elapsed()
    );

    // Each capture shows its attempt history (the last record lands just after the response).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let captures = server.captures(&bin, &key, 0).await;
    assert_eq!(captures.len(), 200);
    for c in &captures {
        let seq = c["seq"].as_u64().unwrap();
        let d = c["deliveries"].as_array().unwrap();
        let statuses: Vec<u64> = d.iter().map(|d| d["status"].as_u64().unwrap()).collect();
        let attempts: Vec<u64> = d.iter().map(|d| d["attempt"].as_u64().unwrap()).collect();
        if seq.is_multiple_of(10) {
            assert_eq!(statuses, [500, 500, 200], "seq {seq}");
            assert_eq!(attempts, [1, 2, 3], "seq {seq}");
        } else {
            assert_eq!(statuses, [200], "seq {seq}");
        }
        assert!(d
            .iter()
            .all(|d| d["via"] == "forward" && d["target"] == format!("http://{target}/in")));
    }
}

#[tokio::test]
async fn stalled_target_never_slows_ingest_and_queue_stays_bounded() {
    let server = TestServer::start(&["--forward-queue", "5"]).await;
    // Accepts TCP and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let held2 = held.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            held2.lock().unwrap().push(s);
        }
    });
    let settings = json!({ "forward": [{ "url": format!("http://{target}/"), "retries": 0, "timeout_ms": 60000 }] });
    let (bin, key) = server.create_bin(&settings.to_string()).await;
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..300 {
        let t = Instant::now();
        let r = server
            .request(Method::POST, &format!("/{bin}"), None, &[], PAYMENT_SUCCESS)
            .await;
        assert_eq!(r.status, StatusCode::OK);
        slowest = slowest.max(t.elapsed());
    }
    println!(
        "300 captures with a stalled forward target: {:?} total, slowest {slowest:?}",
        started.elapsed()
    );
    let fw = &server.state.deliver.forwards;
    assert!(
        fw.queued(&bin) <= 5,
        "queue bound holds: {}",
        fw.queued(&bin)
    );
    assert_eq!(fw.workers(&bin), 1);
    let captures = server.captures(&bin, &key, 0).await;
    let full = captures
        .iter()
        .filter(|c| {
            c["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["error"] == "queue_full")
        })
        .count();
    // One in flight, at most five queued, the rest recorded as queue_full.
    assert!(full >= 300 - 1 - 5, "queue_full records: {full}");
    assert!(
        held.lock().unwrap().len() <= 1,
        "one connection, one request in flight"
    );

    // Removing the target stops its worker promptly.
    let r = server
        .request(
            Method::PATCH,
            &format!("/api/bins/{bin}"),
            Some(&key),
            &[],
            r#"{"forward":[]}"#,
        )
        .await;
    r.expect_status(StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(3);
    while fw.workers(&bin) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        fw.workers(&bin),
        0,
        "worker stopped after its target was removed"
    );

    // Deleting a bin stops its workers too.
    let r = server
        .request(
            Method::PATCH,
            &format!("/api/bins/{bin}"),
            Some(&key),
            &[],
            settings.to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    server
        .request(Method::POST, &format!("/{bin}"), None, &[], "x")
        .await;
    assert_eq!(fw.workers(&bin), 1);
    let r = server
        .request(
            Method::DELETE,
            &format!("/api/bins/{bin}"),
            Some(&key),
            &[],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(3);
    while fw.workers(&bin) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        fw.workers(&bin),
        0,
        "worker stopped after its bin was deleted"
    );
}
