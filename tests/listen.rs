//! `hookrelay listen` end to end: the real binary, an in-process server, a real target server.

mod common;

use std::convert::Infallible;
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::TestServer;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// (seq header, method, path and query, body) of every request the target got.
type Seen = Arc<Mutex<Vec<(u64, String, String, Bytes)>>>;

/// A target that takes ~15 ms per request, so a stop lands mid-stream.
async fn slow_target() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let log = log.clone();
                    async move {
                        let seq: u64 = req.headers()["x-hookrelay-seq"]
                            .to_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        let method = req.method().to_string();
                        let target = req.uri().to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        tokio::time::sleep(Duration::from_millis(15)).await;
                        log.lock().unwrap().push((seq, method, target, body));
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A running `hookrelay listen` with its stdout collected line by line.
struct Listen {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Listen {
    fn start(args: &[String]) -> Listen {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
            .arg("listen")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("listen starts");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                eprintln!("[listen] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        Listen { child, lines }
    }

    async fn wait_line(&self, needle: &str, from: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(i) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .skip(from)
                .position(|l| l.contains(needle))
            {
                return from + i;
            }
            assert!(
                Instant::now() < deadline,
                "no `{needle}` line: {:?}",
                self.lines.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM and wait for a clean exit (status 0).
    async fn terminate(mut self) -> Vec<String> {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "listen did not stop after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(status.success(), "exit status {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let lines = self.lines.lock().unwrap().clone();
        lines
    }
}

impl Drop for Listen {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

async fn wait_count(seen: &Seen, n: usize, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while seen.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "target got {} of {n}",
            seen.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `hookrelay listen` arguments for the server's ready bin, relaying to `to`.
fn listen_args(server: &TestServer, to: &str, state_dir: &std::path::Path) -> Vec<String> {
    [
        "--server",
        &server.base_url,
        "--bin",
        &server.bin_id,
        "--key",
        &server.bin_key,
        "--to",
        to,
        "--state-dir",
        &state_dir.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn post_many(server: &TestServer, range: std::ops::RangeInclusive<u64>) {
    for i in range {
        let r = server
            .request(
                Method::POST,
                &format!("/{}/e/{i}?n={i}", server.bin_id),
                None,
                &[],
                format!("{{\"i\":{i}}}"),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_resumes_exactly_once_across_sigterm_and_detects_a_new_epoch() {
    let server = TestServer::start(&[]).await;
    let (target, seen) = slow_target().await;
    let listen_dir = tempfile::tempdir().unwrap();
    let args = listen_args(&server, &format!("http://{target}/hook"), listen_dir.path());

    // First run ever: starts from "now".
    server.post_capture("/before", "old").await;
    let listen = Listen::start(&args);
    listen
        .wait_line("first run: relaying captures after seq 1", 0)
        .await;
    post_many(&server, 2..=101).await;
    wait_count(&seen, 50, 30).await;
    let lines = listen.terminate().await;
    let delivered_before_stop = seen.lock().unwrap().len();
    assert!(
        delivered_before_stop < 100,
        "stop landed mid-stream ({delivered_before_stop})"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("→ POST /e/2?n=2 200 ") && l.ends_with("ms")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("stopped; last handled seq")),
        "{lines:?}"
    );

    post_many(&server, 102..=151).await;
    let listen = Listen::start(&args);
    wait_count(&seen, 150, 30).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    {
        let seen = seen.lock().unwrap();
        let seqs: Vec<u64> = seen.iter().map(|s| s.0).collect();
        assert_eq!(
            seqs,
            (2..=151).collect::<Vec<u64>>(),
            "all 150 exactly once, in order"
        );
        for (seq, method, uri, body) in seen.iter() {
            let i = seq;
            assert_eq!(method, "POST");
            assert_eq!(uri, &format!("/hook/e/{i}?n={i}"));
            assert_eq!(body, &Bytes::from(format!("{{\"i\":{i}}}")));
        }
    }
    // The capture records show the listen deliveries (reported back over the socket).
    let captures = server.captures(&server.bin_id, &server.bin_key, 1).await;
    assert_eq!(captures.len(), 150);
    for c in &captures {
        let d: Vec<&serde_json::Value> = c["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["via"] == "listen")
            .collect();
        assert_eq!(d.len(), 1, "seq {}: {:?}", c["seq"], c["deliveries"]);
        assert_eq!(d[0]["status"], 200);
        assert_eq!(d[0]["target"], format!("http://{target}/hook"));
    }

    // Server restart on the same address and state dir: same bin, new epoch, no captures.
    let addr = server.addr;
    let bin = server.bin_id.clone();
    let dir = server.stop().await;
    let mark = listen.lines.lock().unwrap().len();
    let (ready, _stop) = start_on(dir.path(), addr).await;
    assert_eq!(ready.id, bin);
    listen
        .wait_line(
            "server restarted (new epoch): resuming from first_seq 0",
            mark,
        )
        .await;
    let raw = format!("POST /{bin}/after-restart HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 3\r\nConnection: close\r\n\r\nnew");
    let reply = common::raw_exchange(addr, raw.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    wait_count(&seen, 151, 20).await;
    let last = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        (last.0, last.2.as_str()),
        (1, "/hook/after-restart"),
        "seq 1 of the new epoch relayed"
    );
    listen.terminate().await;
}

/// Restart on a fixed address (the listen client reconnects to the same URL). `TestServer`
/// always binds port 0, so this starts the server by hand; dropping the sender stops it.
async fn start_on(
    dir: &std::path::Path,
    addr: SocketAddr,
) -> (
    hookrelay::server::ReadyBin,
    tokio::sync::oneshot::Sender<()>,
) {
    let cfg = hookrelay::ServeArgs::from_args([
        "--listen",
        &addr.to_string(),
        "--state-dir",
        &dir.display().to_string(),
    ])
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let listener = loop {
        // The port was ours a moment ago; retry briefly if the OS still holds it.
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) => assert!(Instant::now() < deadline, "rebinding {addr}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let server = hookrelay::Server::new(cfg, listener, None).await.unwrap();
    let ready = server.ready_bin().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    (ready, tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_over_wss_needs_an_explicit_trust_choice() {
    let certs = tempfile::tempdir().unwrap();
    let cert = certs.path().join("cert.pem").display().to_string();
    let key = certs.path().join("key.pem").display().to_string();
    let server = TestServer::start(&[
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ])
    .await;
    let (target, seen) = slow_target().await;
    let tls = server.tls_addr.unwrap();
    let inspector = format!(
        "https://127.0.0.1:{}/i/{}#key={}",
        tls.port(),
        server.bin_id,
        server.bin_key
    );
    let base = |dir: &tempfile::TempDir| -> Vec<String> {
        vec![
            inspector.clone(),
            "--to".into(),
            format!("http://{target}/"),
            "--state-dir".into(),
            dir.path().display().to_string(),
        ]
    };

    // The self-signed dev certificate is refused without --ca or --insecure.
    let dir = tempfile::tempdir().unwrap();
    let listen = Listen::start(&base(&dir));
    listen.wait_line("disconnected (tls:", 0).await;
    listen.terminate().await;

    for trust in [
        vec!["--ca".to_string(), cert.clone()],
        vec!["--insecure".to_string()],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut args = base(&dir);
        args.extend(trust);
        let listen = Listen::start(&args);
        listen.wait_line("connected to https://127.0.0.1", 0).await;
        let before = seen.lock().unwrap().len();
        server.post_capture("/tls", "{}").await;
        wait_count(&seen, before + 1, 20).await;
        listen.terminate().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_relays_large_and_binary_bodies_exactly() {
    let server = TestServer::start(&[]).await;
    let (target, seen) = slow_target().await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = listen_args(&server, &format!("http://{target}/t"), dir.path());
    args.push("--print".into());
    let listen = Listen::start(&args);
    listen.wait_line("connected to", 0).await;
    // Over 256 KiB: sent as body_omitted and fetched from /body. Not UTF-8: base64 on the wire.
    let large: Vec<u8> = (0..300 * 1024).map(|i| (i % 251) as u8).collect();
    let binary: Vec<u8> = vec![0, 159, 146, 150, 255, 10, 13];
    server
        .request(
            Method::PUT,
            &format!("/{}/big", server.bin_id),
            None,
            &[],
            large.clone(),
        )
        .await;
    server
        .request(
            Method::POST,
            &format!("/{}/bin", server.bin_id),
            None,
            &[],
            binary.clone(),
        )
        .await;
    wait_count(&seen, 2, 20).await;
    let got = seen.lock().unwrap().clone();
    assert_eq!((got[0].1.as_str(), got[0].2.as_str()), ("PUT", "/t/big"));
    assert_eq!(got[0].3, Bytes::from(large));
    assert_eq!(got[1].3, Bytes::from(binary));
    let lines = listen.terminate().await;
    assert!(
        lines.iter().any(|l| l.starts_with("#1 PUT /big")),
        "--print shows captures: {lines:?}"
    );
}
