//! Redis store acceptance (DESIGN §9): two instances sharing one Redis, outages, start errors.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::redis::RedisServer;
use common::TestServer;
use http::{Method, StatusCode};
use serde_json::Value;

use common::ws::Ws;

async fn two_instances(redis: &RedisServer) -> (TestServer, TestServer) {
    let a = TestServer::start(&["--store", &redis.url]).await;
    let b = TestServer::start(&["--store", &redis.url]).await;
    (a, b)
}

async fn viewer(srv: &TestServer, bin: &str, key: &str) -> Ws {
    common::ws::connect(srv.addr, bin, Some(key), 0).await
}

use common::ws::next_json;

/// Read capture frames until `n` captures arrived; asserts seq order with no gap or dup.
async fn expect_captures(ws: &mut Ws, n: u64) {
    let mut expected = 1u64;
    while expected <= n {
        let frame = next_json(ws).await;
        match frame["type"].as_str() {
            Some("capture") => {
                assert_eq!(frame["capture"]["seq"], expected, "{frame}");
                expected += 1;
            }
            Some("hello" | "delivery" | "settings") => {}
            other => panic!("unexpected frame {other:?}: {frame}"),
        }
    }
}

async fn health(srv: &TestServer) -> (StatusCode, Value) {
    let r = srv
        .request(Method::GET, "/healthz", None, &[], Bytes::new())
        .await;
    (r.status, r.json())
}

async fn post(srv: &TestServer, bin: &str, body: String) -> (StatusCode, Option<u64>) {
    let r = srv
        .request(
            Method::POST,
            &format!("/{bin}/hook"),
            None,
            &[("Content-Type", "application/json")],
            body,
        )
        .await;
    let seq = r
        .headers
        .get("x-hookrelay-seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (r.status, seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bin_made_on_a_takes_captures_on_b_and_a_viewer_sees_them_in_order() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_instances(&redis).await;
    let (bin, key) = a.create_bin("").await;
    let mut ws = viewer(&a, &bin, &key).await;
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["type"], "hello");
    for i in 0..40 {
        let target = if i % 4 == 0 { &a } else { &b };
        let (status, seq) = post(target, &bin, format!(r#"{{"n":{i}}}"#)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(seq, Some(i + 1));
    }
    expect_captures(&mut ws, 40).await;
    // Both instances answer REST reads with every capture, whoever ingested it.
    for srv in [&a, &b] {
        let list = srv.captures(&bin, &key, 0).await;
        let seqs: Vec<u64> = list.iter().map(|c| c["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
        assert_eq!(list[7]["body"], r#"{"n":7}"#);
    }
    // Settings, clear and delete made on B reach A.
    let r = b
        .request(
            Method::PATCH,
            &format!("/api/bins/{bin}"),
            Some(&key),
            &[],
            r#"{"response":{"status":202}}"#,
        )
        .await;
    r.expect_status(StatusCode::OK);
    let frame = next_json(&mut ws).await;
    assert_eq!(frame["type"], "settings", "{frame}");
    assert_eq!(post(&a, &bin, "{}".into()).await.0, StatusCode::ACCEPTED);
    let r = b
        .request(
            Method::DELETE,
            &format!("/api/bins/{bin}"),
            Some(&key),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = a
            .request(Method::POST, &format!("/{bin}"), None, &[], Bytes::new())
            .await;
        if r.status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(Instant::now() < deadline, "deleted bin still accepts on A");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_captures_across_two_instances_get_distinct_seqs() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_instances(&redis).await;
    let (bin, key) = a.create_bin(r#"{"capacity":2000}"#).await;
    let mut ws = viewer(&a, &bin, &key).await;
    let a = Arc::new(a);
    let b = Arc::new(b);
    let seqs = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for worker in 0..20u64 {
        let (a, b, seqs, bin) = (a.clone(), b.clone(), seqs.clone(), bin.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..50u64 {
                let srv = if (worker + i) % 2 == 0 { &a } else { &b };
                let (status, seq) = post(srv, &bin, format!(r#"{{"w":{worker},"i":{i}}}"#)).await;
                assert_eq!(status, StatusCode::OK);
                seqs.lock().unwrap().push(seq.expect("seq header"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got: BTreeSet<u64> = seqs.lock().unwrap().iter().copied().collect();
    assert_eq!(got.len(), 1000, "duplicate seqs handed out");
    assert_eq!(got, (1..=1000).collect::<BTreeSet<_>>());
    // The viewer on A saw all of them, B's included, in seq order without gaps or dups.
    expect_captures(&mut ws, 1000).await;
    assert_eq!(b.captures(&bin, &key, 0).await.len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_answers_503_loses_no_acknowledged_capture_and_recovers() {
    let Some(mut redis) = RedisServer::start_persistent().await else {
        return;
    };
    let (a, b) = two_instances(&redis).await;
    let (bin, key) = a.create_bin(r#"{"capacity":5000}"#).await;
    assert_eq!(health(&a).await.1["status"], "ok");
    assert_eq!(health(&a).await.1["store"], "redis");

    let acked = Arc::new(Mutex::new(Vec::<(u64, String)>::new()));
    let unavailable = Arc::new(Mutex::new(0u32));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let a = Arc::new(a);
    let b = Arc::new(b);
    let mut senders = Vec::new();
    for worker in 0..2u64 {
        let (srv, acked, unavailable, stop, bin) = (
            if worker == 0 { a.clone() } else { b.clone() },
            acked.clone(),
            unavailable.clone(),
            stop.clone(),
            bin.clone(),
        );
        senders.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = format!(r#"{{"w":{worker},"i":{i}}}"#);
                let (status, seq) = post(&srv, &bin, body.clone()).await;
                match status {
                    StatusCode::OK => acked.lock().unwrap().push((seq.unwrap(), body)),
                    StatusCode::SERVICE_UNAVAILABLE => *unavailable.lock().unwrap() += 1,
                    other => panic!("unexpected status {other}"),
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.kill();
    let before_outage = acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = health(&a).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["store"], "redis");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.restart().await;
    // Recovers by itself: healthy again and accepting captures on both instances.
    let deadline = Instant::now() + Duration::from_secs(15);
    while health(&a).await.1["status"] != "ok" || health(&b).await.1["status"] != "ok" {
        assert!(
            Instant::now() < deadline,
            "no recovery after Redis returned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered_at = acked.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(10);
    while acked.lock().unwrap().len() < recovered_at + 20 {
        assert!(Instant::now() < deadline, "ingest did not resume");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    assert!(*unavailable.lock().unwrap() > 0, "no 503 during the outage");
    assert!(before_outage > 0);
    // Every 2xx-acknowledged capture is there, with its body, on both instances.
    let acked = acked.lock().unwrap().clone();
    for srv in [&a, &b] {
        let mut stored = std::collections::HashMap::new();
        let mut since = 0;
        loop {
            let page = srv.captures(&bin, &key, since).await;
            let Some(last) = page.last() else { break };
            since = last["seq"].as_u64().unwrap();
            for c in &page {
                stored.insert(
                    c["seq"].as_u64().unwrap(),
                    c["body"].as_str().unwrap().to_string(),
                );
            }
        }
        for (seq, body) in &acked {
            assert_eq!(
                stored.get(seq),
                Some(body),
                "acknowledged capture {seq} lost"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_go_out_once_per_capture_with_two_instances() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_instances(&redis).await;
    // A target that counts the seqs it receives.
    let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_addr = target.local_addr().unwrap();
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = target.accept().await else {
                return;
            };
            let seen = seen2.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            if let Some(seq) = req
                                .headers()
                                .get("x-hookrelay-seq")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse().ok())
                            {
                                seen.lock().unwrap().push(seq);
                            }
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(Bytes::from_static(b"ok")),
                            ))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let settings = format!(r#"{{"forward":[{{"url":"http://{target_addr}/in"}}]}}"#);
    let (bin, _key) = a.create_bin(&settings).await;
    for i in 0..30u64 {
        let srv = if i % 2 == 0 { &a } else { &b };
        assert_eq!(post(srv, &bin, format!("{i}")).await.0, StatusCode::OK);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while seen.lock().unwrap().len() < 30 {
        assert!(
            Instant::now() < deadline,
            "forwards missing: {:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // time for any duplicate to show
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        (1..=30).collect::<Vec<_>>(),
        "each capture once, in seq order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bins_expire_by_redis_ttl_but_the_ready_bin_stays() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let srv = TestServer::start(&["--store", &redis.url, "--bin-ttl", "1s"]).await;
    let (unused, unused_key) = srv.create_bin("").await;
    let (used, _) = srv.create_bin("").await;
    assert_eq!(post(&srv, &used, "{}".into()).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let r = srv
        .request(
            Method::GET,
            &format!("/api/bins/{unused}"),
            Some(&unused_key),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        post(&srv, &used, "{}".into()).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(srv.post_capture("", "{}").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_at_start_is_a_clear_error() {
    if !common::redis::available() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().display().to_string();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        &dir_arg,
        "--store",
        &url,
    ];
    let cfg = hookrelay::ServeArgs::from_args(args).unwrap();
    let listener = tokio::net::TcpListener::bind(cfg.listen).await.unwrap();
    match hookrelay::Server::new(cfg, listener, None).await {
        Err(hookrelay::Error::Store(why)) => assert!(why.contains(&url), "{why}"),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("started without Redis"),
    }
    // The binary exits 1 with a one-line cause.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .arg("serve")
        .args(args)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.trim_end().lines().last().unwrap_or("");
    assert!(last.starts_with("hookrelay: store:"), "{stderr}");
    assert!(out.stdout.is_empty(), "no banner without a store");
}
