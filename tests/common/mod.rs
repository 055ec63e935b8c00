//! Shared helpers for integration tests: start the real server on 127.0.0.1:0, talk to it with real clients.
#![allow(dead_code)]

pub mod redis;
pub mod ws;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use hookrelay::{ServeArgs, Server};

/// A running in-process server.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// Plain listener address.
    pub addr: SocketAddr,
    /// TLS listener address (with `--tls-listen`).
    pub tls_addr: Option<SocketAddr>,
    /// The ready bin.
    pub bin_id: String,
    /// The ready bin's key.
    pub bin_key: String,
    /// Server state, for white-box checks.
    pub state: hookrelay::state::AppState,
    /// Keeps the state dir alive.
    pub state_dir: tempfile::TempDir,
    /// The private redis-server when the suite runs against Redis (`HOOKRELAY_TEST_STORE=redis`).
    pub redis: Option<redis::RedisServer>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), hookrelay::Error>>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A response read whole.
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body bytes.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// Assert the status, showing the body when it is another.
    #[track_caller]
    pub fn expect_status(&self, status: StatusCode) -> &Self {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        self
    }
}

impl TestServer {
    /// Start with extra `serve` flags; `--listen 127.0.0.1:0` and a temp state dir are added.
    pub async fn start(extra: &[&str]) -> TestServer {
        let state_dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(state_dir, extra).await
    }

    /// Start with a given state dir (restart tests).
    pub async fn start_in(state_dir: tempfile::TempDir, extra: &[&str]) -> TestServer {
        let mut args: Vec<String> = vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--state-dir".into(),
            state_dir.path().display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        // The whole suite runs against either store: HOOKRELAY_TEST_STORE=redis gives each
        // server its own redis-server (unless the test chose a --store itself).
        let mut redis = None;
        if std::env::var("HOOKRELAY_TEST_STORE").as_deref() == Ok("redis")
            && !extra.contains(&"--store")
        {
            redis = redis::RedisServer::start().await;
            if let Some(r) = &redis {
                args.extend(["--store".to_string(), r.url.clone()]);
            }
        }
        let cfg = ServeArgs::from_args(&args).expect("valid test flags");
        // Bound like `hookrelay serve` binds (deep listen backlog): the load tests open
        // connections by the thousand, which tokio's default backlog drops.
        let listener = hookrelay::server::bind(cfg.listen).expect("bind");
        let tls_listener = cfg
            .tls_listen
            .map(|a| hookrelay::server::bind(a).expect("bind tls"));
        let server = Server::new(cfg, listener, tls_listener)
            .await
            .expect("server starts");
        let addr = server.local_addr();
        let tls_addr = server.tls_addr();
        let ready = server.ready_bin().clone();
        let state = server.state();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        TestServer {
            base_url: format!("http://{addr}"),
            addr,
            tls_addr,
            bin_id: ready.id,
            bin_key: ready.key,
            state,
            state_dir,
            redis,
            shutdown: Some(tx),
            task: Some(task),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Signal shutdown and wait for `run` to return (panics after 15 s).
    pub async fn stop(mut self) -> tempfile::TempDir {
        let _ = self.shutdown.take().map(|tx| tx.send(()));
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("server stops in time")
            .expect("server task")
            .expect("server run ok");
        std::mem::replace(&mut self.state_dir, tempfile::tempdir().unwrap())
    }

    /// Send a request with optional bearer key.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base_url));
        if let Some(k) = key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .client
            .request(req.body(Full::new(body.into())).unwrap())
            .await
            .expect("request sent");
        let (parts, body) = resp.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.expect("body").to_bytes(),
        }
    }

    /// POST to the ready bin (path appended after `/<id>`).
    pub async fn post_capture(&self, suffix: &str, body: impl Into<Bytes>) -> Reply {
        let path = format!("/{}{suffix}", self.bin_id);
        self.request(
            Method::POST,
            &path,
            None,
            &[("Content-Type", "application/json")],
            body,
        )
        .await
    }

    /// GET an API path with the ready bin's key.
    pub async fn api_get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, Some(&self.bin_key), &[], Bytes::new())
            .await
    }

    /// Captures of a bin via the API.
    pub async fn captures(&self, bin: &str, key: &str, since: u64) -> Vec<serde_json::Value> {
        let r = self
            .request(
                Method::GET,
                &format!("/api/bins/{bin}/requests?since={since}&limit=1000"),
                Some(key),
                &[],
                Bytes::new(),
            )
            .await;
        r.expect_status(StatusCode::OK);
        r.json().as_array().expect("array").clone()
    }

    /// Create a bin; returns (id, key).
    pub async fn create_bin(&self, settings: &str) -> (String, String) {
        let r = self
            .request(Method::POST, "/api/bins", None, &[], settings.to_string())
            .await;
        r.expect_status(StatusCode::CREATED);
        let v = r.json();
        (
            v["id"].as_str().unwrap().to_string(),
            v["key"].as_str().unwrap().to_string(),
        )
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Write raw bytes on a fresh TCP connection and read until the peer closes or `wait` passes.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    out
}

/// The payment.success example body.
pub const PAYMENT_SUCCESS: &str = r#"{"event":"payment.success","orderId":"1312312","amount":738.05,"currency":"USD","timestamp":"1758613403"}"#;
