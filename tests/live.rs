//! WebSocket stream acceptance (DESIGN §7): ordering, resume, stalled viewers, auth and limits.

mod common;

use std::time::Duration;

use common::TestServer;
use futures_util::{SinkExt, StreamExt};
use http::{Method, StatusCode};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

type Client = common::ws::Ws;

async fn connect(srv: &TestServer, bin: &str, key: Option<&str>, since: u64) -> Client {
    common::ws::connect(srv.addr, bin, key, since).await
}

use common::ws::next_json;

async fn close_code(ws: &mut Client) -> u16 {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code.into(),
            Some(Ok(Message::Close(None))) | None => return 1005,
            Some(Ok(Message::Text(t))) => panic!("unexpected frame before close: {t}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("error instead of close: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_joining_mid_stream_gets_every_seq_once_in_order() {
    let srv = TestServer::start(&["--bin-capacity", "2000"]).await;
    let poster = {
        let base = srv.base_url.clone();
        let id = srv.bin_id.clone();
        tokio::spawn(async move {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<http_body_util::Full<bytes::Bytes>>();
            for i in 0..1000 {
                let req = http::Request::post(format!("{base}/{id}/e"))
                    .body(http_body_util::Full::new(bytes::Bytes::from(format!(
                        "{{\"i\":{i}}}"
                    ))))
                    .unwrap();
                let resp = client.request(req).await.unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
            }
        })
    };
    // Join once some captures exist, asking for everything after seq 100.
    while srv.state.store.get(&srv.bin_id).unwrap().info().last_seq < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut ws = connect(&srv, &srv.bin_id, Some(&srv.bin_key), 100).await;
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["bin"], srv.bin_id.as_str());
    assert!(hello["epoch"].as_u64().is_some());
    let mut expected = 101;
    while expected <= 1000 {
        let frame = next_json(&mut ws).await;
        assert_eq!(frame["type"], "capture", "{frame}");
        assert_eq!(frame["capture"]["seq"], expected, "gap or duplicate");
        assert_eq!(
            frame["capture"]["body"],
            format!("{{\"i\":{}}}", expected - 1)
        );
        expected += 1;
    }
    poster.await.unwrap();
    // Reconnect with since = last seen: nothing old is repeated, new ones arrive.
    drop(ws);
    let mut ws = connect(&srv, &srv.bin_id, Some(&srv.bin_key), 1000).await;
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["last_seq"], 1000);
    srv.post_capture("/after", "{}").await;
    let frame = next_json(&mut ws).await;
    assert_eq!(frame["capture"]["seq"], 1001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_viewer_never_blocks_ingest_and_is_told_evicted() {
    let srv = TestServer::start(&["--bin-capacity", "50"]).await;
    let mut stalled = connect(&srv, &srv.bin_id, Some(&srv.bin_key), 0).await;
    let hello = next_json(&mut stalled).await;
    assert_eq!(hello["type"], "hello");
    let mut live = connect(&srv, &srv.bin_id, Some(&srv.bin_key), 0).await;
    next_json(&mut live).await;
    // 5000 × 8 KiB = 40 MiB: far more than socket buffers hold, so the stalled viewer must lag.
    let body = vec![b'z'; 8 * 1024];
    let live_reader = tokio::spawn(async move {
        let mut last = 0u64;
        let mut evicted_seen = false;
        while last < 5000 {
            let f = next_json(&mut live).await;
            match f["type"].as_str().unwrap() {
                "capture" => {
                    let seq = f["capture"]["seq"].as_u64().unwrap();
                    assert!(seq > last, "order");
                    last = seq;
                }
                "evicted" => {
                    evicted_seen = true;
                    last = f["up_to_seq"].as_u64().unwrap();
                }
                other => panic!("unexpected {other}"),
            }
        }
        evicted_seen
    });
    for _ in 0..5000 {
        let r = srv.post_capture("/bulk", body.clone()).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let bin = srv.state.store.get(&srv.bin_id).unwrap();
    assert_eq!(bin.info().last_seq, 5000);
    // 50 captures of 8 KiB, plus the viewer frames kept for them (≈ 8.5 KiB each).
    assert!(
        srv.state.store.total_bytes() < 50 * 20 * 1024,
        "ring stays bounded"
    );
    let _ = live_reader.await.unwrap();
    // Now the stalled viewer reads: it gets what was buffered, then `evicted`, then the rest.
    let mut last = 0u64;
    let mut evicted = false;
    while last < 5000 {
        let f = next_json(&mut stalled).await;
        match f["type"].as_str().unwrap() {
            "capture" => {
                let seq = f["capture"]["seq"].as_u64().unwrap();
                assert_eq!(seq, last + 1, "no gap without an evicted event");
                last = seq;
            }
            "evicted" => {
                let up_to = f["up_to_seq"].as_u64().unwrap();
                assert!(up_to > last);
                evicted = true;
                last = up_to;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(evicted, "a viewer that fell behind the ring is told so");
    // Reconnect from the last seq: resumes exactly.
    drop(stalled);
    let mut again = connect(&srv, &srv.bin_id, Some(&srv.bin_key), 5000).await;
    next_json(&mut again).await;
    srv.post_capture("/next", "{}").await;
    assert_eq!(next_json(&mut again).await["capture"]["seq"], 5001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_by_message_timeout_bad_key_and_viewer_limit() {
    let srv = TestServer::start(&["--max-viewers", "2"]).await;
    srv.post_capture("/one", "{}").await;
    // First-message auth (what browsers do).
    let mut ws = connect(&srv, &srv.bin_id, None, 0).await;
    ws.send(Message::text(format!(
        r#"{{"type":"auth","key":"{}"}}"#,
        srv.bin_key
    )))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    assert_eq!(next_json(&mut ws).await["capture"]["seq"], 1);
    ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "pong");
    // Bad key by message and by header → 4401, nothing sent before.
    let mut bad = connect(&srv, &srv.bin_id, None, 0).await;
    bad.send(Message::text(r#"{"type":"auth","key":"nope"}"#))
        .await
        .unwrap();
    assert_eq!(close_code(&mut bad).await, 4401);
    let mut bad = connect(&srv, &srv.bin_id, Some("wrong-key-wrong-key-wrong"), 0).await;
    assert_eq!(close_code(&mut bad).await, 4401);
    // Silence → 4408 after 5 s.
    let mut silent = connect(&srv, &srv.bin_id, None, 0).await;
    assert_eq!(close_code(&mut silent).await, 4408);
    // Third viewer over --max-viewers 2 → 4429; unauthenticated ones took no slot.
    let mut second = connect(&srv, &srv.bin_id, Some(&srv.bin_key), 0).await;
    assert_eq!(next_json(&mut second).await["type"], "hello");
    let mut third = connect(&srv, &srv.bin_id, Some(&srv.bin_key), 0).await;
    assert_eq!(close_code(&mut third).await, 4429);
    drop(second);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = connect(&srv, &srv.bin_id, Some(&srv.bin_key), 0).await;
    assert_eq!(next_json(&mut fourth).await["type"], "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cleared_settings_and_delivery_reports_stream_in_order() {
    let srv = TestServer::start(&[]).await;
    let mut ws = connect(&srv, &srv.bin_id, Some(&srv.bin_key), 0).await;
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    srv.post_capture("/a", "{}").await;
    assert_eq!(next_json(&mut ws).await["capture"]["seq"], 1);
    // A relay client's report is stored and fanned out.
    let report = r#"{"type":"delivery_report","seq":1,"delivery":{"target":"http://localhost:3000/a","attempt":1,"at":"2026-11-23T00:00:00Z","status":200,"duration_ms":1.5,"via":"listen"}}"#;
    ws.send(Message::text(report)).await.unwrap();
    let d = next_json(&mut ws).await;
    assert_eq!(d["type"], "delivery");
    assert_eq!(d["seq"], 1);
    assert_eq!(d["delivery"]["status"], 200);
    let stored = srv
        .api_get(&format!("/api/bins/{}/requests/1", srv.bin_id))
        .await
        .json();
    assert_eq!(stored["deliveries"][0]["via"], "listen");
    // Its time is kept as a time: written back in the server's RFC 3339 form.
    assert_eq!(
        stored["deliveries"][0]["at"],
        "2026-11-23T00:00:00.000000000Z"
    );
    // A malformed message gets an error frame, the session stays up.
    ws.send(Message::text("{nope")).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "error");
    // So does a report whose `at` is not an RFC 3339 UTC time; nothing is stored.
    let bad_at = report.replace("2026-11-23T00:00:00Z", "yesterday");
    ws.send(Message::text(bad_at)).await.unwrap();
    let e = next_json(&mut ws).await;
    assert_eq!(e["error"], "bad_message", "{e}");
    assert!(e["message"].as_str().unwrap().contains("RFC 3339"), "{e}");
    let stored = srv
        .api_get(&format!("/api/bins/{}/requests/1", srv.bin_id))
        .await
        .json();
    assert_eq!(stored["deliveries"].as_array().unwrap().len(), 1);

    srv.request(
        Method::DELETE,
        &format!("/api/bins/{}/requests", srv.bin_id),
        Some(&srv.bin_key),
        &[],
        "",
    )
    .await;
    assert_eq!(next_json(&mut ws).await["type"], "cleared");
    srv.request(
        Method::PATCH,
        &format!("/api/bins/{}", srv.bin_id),
        Some(&srv.bin_key),
        &[],
        r#"{"capacity":7}"#,
    )
    .await;
    let s = next_json(&mut ws).await;
    assert_eq!(s["type"], "settings");
    assert_eq!(s["settings"]["capacity"], 7);
    srv.post_capture("/b", "{}").await;
    assert_eq!(next_json(&mut ws).await["capture"]["seq"], 2);
    // A viewer that joins later gets the capture with its stored deliveries, no stale events.
    srv.post_capture("/c", "{}").await;
    let mut late = connect(&srv, &srv.bin_id, Some(&srv.bin_key), 0).await;
    let hello = next_json(&mut late).await;
    assert_eq!(hello["first_seq"], 2);
    assert_eq!(hello["last_seq"], 3);
    assert_eq!(next_json(&mut late).await["capture"]["seq"], 2);
    assert_eq!(next_json(&mut late).await["capture"]["seq"], 3);

    // Big bodies are omitted from the stream.
    srv.post_capture("/big", vec![b'q'; 300 * 1024]).await;
    let big = next_json(&mut late).await;
    assert_eq!(big["capture"]["body_omitted"], true);
    assert_eq!(big["capture"]["body"], Value::Null);
    assert_eq!(big["capture"]["body_size"], 300 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_viewers_with_1001() {
    let srv = TestServer::start(&[]).await;
    let mut ws = connect(&srv, &srv.bin_id, Some(&srv.bin_key), 0).await;
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    let stopper = tokio::spawn(srv.stop());
    assert_eq!(close_code(&mut ws).await, 1001);
    stopper.await.unwrap();
}

/// The frame a viewer is sent for a capture is built once, kept, and charged to the memory
/// budget (it is larger than the capture for binary bodies: base64), so viewing a bin can't
/// take memory past --max-memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_frames_are_charged_to_the_memory_budget() {
    const CAPTURES: usize = 20;
    // Binary 100 KiB bodies: each frame carries ≈ 133 KiB of base64.
    let body: Vec<u8> = (0..100 * 1024u32).map(|i| (i * 7 + 3) as u8).collect();
    for (max_memory, evicts) in [("64MiB", false), ("3MiB", true)] {
        let srv = TestServer::start(&["--max-memory", max_memory]).await;
        for _ in 0..CAPTURES {
            let r = srv.post_capture("/bin", body.clone()).await;
            assert_eq!(r.status, StatusCode::OK);
        }
        let before = srv.state.store.total_bytes();
        let mut ws = connect(&srv, &srv.bin_id, Some(&srv.bin_key), 0).await;
        let mut frame_bytes = 0usize;
        let mut last = 0;
        while last < CAPTURES as u64 {
            let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("frames in time")
                .unwrap()
                .unwrap();
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            match v["type"].as_str() {
                Some("capture") => {
                    frame_bytes += text.len();
                    last = v["capture"]["seq"].as_u64().unwrap();
                }
                Some("evicted") => last = last.max(v["up_to_seq"].as_u64().unwrap()),
                _ => {}
            }
        }
        let after = srv.state.store.total_bytes();
        if evicts {
            // Frames pushed the store past 3 MiB: it evicted back under the limit.
            assert!(after <= 3 << 20, "store holds {after} bytes");
            let metrics = srv
                .request(Method::GET, "/metrics", None, &[], bytes::Bytes::new())
                .await;
            let text = String::from_utf8_lossy(&metrics.body).to_string();
            let evictions: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix("hookrelay_evictions_total "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap();
            assert!(evictions > 0.0, "viewing evicted to stay within budget");
        } else {
            // Exactly the frames sent were added: each kept once, charged once.
            assert!(frame_bytes > CAPTURES * 130 * 1024);
            assert_eq!(after - before, frame_bytes, "frame bytes charged exactly");
            // A second viewer shares the kept frames: nothing more is charged.
            let mut again = connect(&srv, &srv.bin_id, Some(&srv.bin_key), 0).await;
            let mut seen = 0;
            while seen < CAPTURES {
                if next_json(&mut again).await["type"] == "capture" {
                    seen += 1;
                }
            }
            assert_eq!(srv.state.store.total_bytes(), after);
        }
    }
}

/// A client message over the 256 KiB limit is answered with close 1009, not a dropped socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_client_message_gets_close_1009() {
    let srv = TestServer::start(&[]).await;
    let mut ws = connect(&srv, &srv.bin_id, Some(&srv.bin_key), 0).await;
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(300 * 1024));
    ws.send(Message::text(big)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, 1009);
    // The server is fine: a new viewer still connects and gets its hello.
    let mut again = connect(&srv, &srv.bin_id, Some(&srv.bin_key), 0).await;
    assert_eq!(next_json(&mut again).await["type"], "hello");
}
