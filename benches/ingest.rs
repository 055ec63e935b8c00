//! `cargo bench --bench ingest [-- --quick] [SCENARIO…]`
//!
//! hookrelay side by side with a bare hyper 1 baseline, in one process and one run, on
//! loopback. Each server runs on its own OS thread with its own `current_thread` tokio
//! runtime; the load generator runs on another thread with its own runtime. With `taskset`
//! and ≥ 2 allowed CPUs, servers are pinned to the first CPU and the load generator to the
//! second. Server CPU is the servers' thread CPU time (`/proc/self/task/<tid>/schedstat`)
//! over the measured window, divided by the requests completed in it.
//!
//! Scenarios (names for the positional filter): `ingest`, `tls`, `live`, `slow`, `memory`,
//! `redis`. `--quick` (or `HOOKRELAY_BENCH_QUICK=1`) shortens everything to a CI smoke run.
//! Figures are medians over interleaved rounds (baseline, hookrelay, baseline, …).

use std::convert::Infallible;
use std::future::Future;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderName, HeaderValue, Method, Request, Response, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use hookrelay::{ServeArgs, Server};

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// Ingest body size (scenarios 1, 2, 4, 5, 6).
const BODY_LEN: usize = 1024;
/// Keep-alive connections of the ingest scenarios.
const CONNS: usize = 64;

// ---------------------------------------------------------------------------------------------
// Plan and environment
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Plan {
    quick: bool,
    rounds: usize,
    warmup: Duration,
    measure: Duration,
    live: Duration,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                rounds: 5,
                warmup: Duration::from_millis(100),
                measure: Duration::from_millis(300),
                live: Duration::from_millis(1500),
            }
        } else {
            Plan {
                quick,
                rounds: 9,
                warmup: Duration::from_millis(300),
                measure: Duration::from_millis(1500),
                live: Duration::from_secs(8),
            }
        }
    }
}

/// CPUs for servers and the load generator (None: not pinned).
#[derive(Clone, Copy, Debug)]
struct Cpus {
    server: Option<usize>,
    load: Option<usize>,
}

fn cpus() -> Cpus {
    static CPUS: OnceLock<Cpus> = OnceLock::new();
    *CPUS.get_or_init(|| {
        let allowed = allowed_cpus();
        let taskset = Command::new("taskset")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if taskset && allowed.len() >= 2 {
            Cpus {
                server: Some(allowed[0]),
                load: Some(allowed[1]),
            }
        } else {
            Cpus {
                server: None,
                load: None,
            }
        }
    })
}

/// `Cpus_allowed_list` of this process, expanded.
fn allowed_cpus() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(list) = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for part in list.trim().split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<usize>().ok()),
        }
    }
    out
}

/// OS thread id of the calling thread.
fn tid() -> u32 {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok())
        .unwrap_or(0)
}

/// Pin the calling thread (`taskset -p` on its tid: no new dependency).
fn pin(cpu: Option<usize>) {
    if let Some(cpu) = cpu {
        let _ = Command::new("taskset")
            .args(["-pc", &cpu.to_string(), &tid().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// CPU time of one thread of this process, in ns.
fn thread_cpu_ns(tid: u32) -> u64 {
    task_cpu_ns(&format!("/proc/self/task/{tid}"))
}

/// CPU time of a task directory (`/proc/<pid>/task/<tid>`): schedstat (ns), else stat (ticks).
fn task_cpu_ns(dir: &str) -> u64 {
    if let Ok(s) = std::fs::read_to_string(format!("{dir}/schedstat")) {
        if let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse().ok()) {
            return ns;
        }
    }
    let stat = std::fs::read_to_string(format!("{dir}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state is field 3; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks * 10_000_000 // USER_HZ = 100
}

/// CPU time of every thread of another process, in ns.
fn process_cpu_ns(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .map(|e| task_cpu_ns(&e.path().display().to_string()))
        .sum()
}

/// VmRSS of this process in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn current_thread_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

// ---------------------------------------------------------------------------------------------
// Servers: each on its own pinned thread with its own runtime
// ---------------------------------------------------------------------------------------------

/// A server running on its own OS thread(s); `cpu_ns` sums their CPU time.
struct ServerThread {
    tids: Arc<Mutex<Vec<u32>>>,
    stop: Option<oneshot::Sender<()>>,
}

impl ServerThread {
    fn spawn<F, Fut>(name: &str, body: F) -> ServerThread
    where
        F: FnOnce(oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let tids = Arc::new(Mutex::new(Vec::new()));
        let (stop, stop_rx) = oneshot::channel();
        let registered = tids.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let cpu = cpus().server;
                pin(cpu);
                registered.lock().unwrap().push(tid());
                let blocking = registered.clone();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .on_thread_start(move || {
                        pin(cpu);
                        blocking.lock().unwrap().push(tid());
                    })
                    .build()
                    .expect("server runtime");
                rt.block_on(body(stop_rx));
                rt.shutdown_timeout(Duration::from_millis(100));
            })
            .expect("server thread");
        ServerThread {
            tids,
            stop: Some(stop),
        }
    }

    fn cpu_fn(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let tids = self.tids.clone();
        move || tids.lock().unwrap().iter().map(|t| thread_cpu_ns(*t)).sum()
    }

    fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The bare hyper 1 baseline: auto::Builder, reads the whole body, answers `200 {}`.
struct Baseline {
    thread: ServerThread,
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
}

fn start_baseline(tls: Option<TlsAcceptor>) -> Baseline {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = ServerThread::spawn("bench-baseline", move |stop| async move {
        let plain = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let secure = match tls {
            Some(acceptor) => Some((
                TcpListener::bind("127.0.0.1:0").await.expect("bind"),
                acceptor,
            )),
            None => None,
        };
        let _ = tx.send((
            plain.local_addr().unwrap(),
            secure.as_ref().map(|(l, _)| l.local_addr().unwrap()),
        ));
        let builder = auto::Builder::new(TokioExecutor::new());
        tokio::pin!(stop);
        loop {
            let (stream, acceptor) = tokio::select! {
                Ok((s, _)) = plain.accept() => (s, None),
                Ok((s, _)) = async { match &secure { Some((l, _)) => l.accept().await, None => std::future::pending().await } } =>
                    (s, secure.as_ref().map(|(_, a)| a.clone())),
                _ = &mut stop => break,
            };
            let _ = stream.set_nodelay(true);
            let builder = builder.clone();
            tokio::spawn(async move {
                let service = service_fn(baseline_service);
                match acceptor {
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(stream).await {
                            let _ = builder.serve_connection(TokioIo::new(s), service).await;
                        }
                    }
                }
            });
        }
    });
    let (addr, tls_addr) = rx.recv().expect("baseline started");
    Baseline {
        thread,
        addr,
        tls_addr,
    }
}

async fn baseline_service(
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let _ = req.into_body().collect().await;
    let mut resp = Response::new(Full::new(Bytes::from_static(b"{}")));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// hookrelay in-process (`Server::new` + `run`) on its own thread and runtime.
struct Hookrelay {
    thread: ServerThread,
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    bin_id: String,
    state: hookrelay::state::AppState,
    _dir: tempfile::TempDir,
}

fn start_hookrelay(name: &str, extra: &[String]) -> Result<Hookrelay, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut args: Vec<String> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--state-dir".into(),
        dir.path().display().to_string(),
    ];
    args.extend(extra.iter().cloned());
    let cfg = ServeArgs::from_args(&args).map_err(|e| e.to_string())?;
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = ServerThread::spawn(name, move |stop| async move {
        let listener = match TcpListener::bind(cfg.listen).await {
            Ok(l) => l,
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        };
        let tls_listener = match cfg.tls_listen {
            Some(a) => Some(TcpListener::bind(a).await.expect("bind tls")),
            None => None,
        };
        match Server::new(cfg, listener, tls_listener).await {
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
            }
            Ok(server) => {
                let ready = server.ready_bin().clone();
                let _ = tx.send(Ok((
                    server.local_addr(),
                    server.tls_addr(),
                    ready.id,
                    server.state(),
                )));
                let _ = server
                    .run(async {
                        let _ = stop.await;
                    })
                    .await;
            }
        }
    });
    let (addr, tls_addr, bin_id, state) = rx.recv().map_err(|e| e.to_string())??;
    Ok(Hookrelay {
        thread,
        addr,
        tls_addr,
        bin_id,
        state,
        _dir: dir,
    })
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// One request in both forms: raw HTTP/1.1 bytes and parts for the h2 client.
struct Req {
    raw: Bytes,
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    /// Σ(name + value) of the headers as sent on HTTP/1.1.
    header_bytes: usize,
}

/// A 1 KiB JSON webhook body (exactly `len` bytes).
fn json_body(len: usize, tag: &str) -> Bytes {
    let head = format!(
        "{{\"id\":\"evt_1NxQ2c2eZvKYlo2C{tag}\",\"type\":\"payment_intent.succeeded\",\"created\":1758613403,\"livemode\":false,\"data\":{{\"object\":{{\"id\":\"pi_3NxQ2c2eZvKYlo2C\",\"amount\":73805,\"currency\":\"usd\",\"status\":\"succeeded\",\"metadata\":{{\"order_id\":\"1312312\"}},\"description\":\""
    );
    let tail = "\"}}}";
    let pad = len.saturating_sub(head.len() + tail.len());
    let mut s = head;
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str(tail);
    Bytes::from(s)
}

/// Scenario 1's request: POST with 8 headers (Host and Content-Length included).
fn ingest_req(host: &str, path: &str, body: Bytes) -> Req {
    let headers: Vec<(&str, String)> = vec![
        ("Host", host.to_string()),
        (
            "User-Agent",
            "Stripe/1.0 (+https://stripe.com/docs/webhooks)".into(),
        ),
        ("Content-Type", "application/json; charset=utf-8".into()),
        ("Accept", "*/*; q=0.5, application/xml".into()),
        (
            "X-Request-Id",
            "3f2c9c1e-8d4b-4c52-9a57-0d2f7c1b9e44".into(),
        ),
        (
            "Stripe-Signature",
            "t=1758613403,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"
                .into(),
        ),
        ("X-Event-Type", "payment_intent.succeeded".into()),
        ("Content-Length", body.len().to_string()),
    ];
    build_req(path, &headers, body)
}

/// Scenario 5's request: ~10 headers, GitHub-style.
fn memory_req(host: &str, path: &str, body: Bytes) -> Req {
    let headers: Vec<(&str, String)> = vec![
        ("Host", host.to_string()),
        ("User-Agent", "GitHub-Hookshot/5a3f9c1".into()),
        ("Content-Type", "application/json".into()),
        ("Accept", "*/*".into()),
        ("X-GitHub-Event", "push".into()),
        (
            "X-GitHub-Delivery",
            "72d3162e-cc78-11e3-81ab-4c9367dc0958".into(),
        ),
        ("X-GitHub-Hook-ID", "292430182".into()),
        (
            "X-Hub-Signature-256",
            "sha256=d57c68ca6f92289e6987922ff26938930f6e66a2d161ef06abdf1859230aa23c".into(),
        ),
        ("Accept-Encoding", "gzip, deflate".into()),
        ("Content-Length", body.len().to_string()),
    ];
    build_req(path, &headers, body)
}

fn build_req(path: &str, headers: &[(&str, String)], body: Bytes) -> Req {
    let mut raw = format!("POST {path} HTTP/1.1\r\n");
    let mut header_bytes = 0;
    let mut h2 = Vec::new();
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
        header_bytes += k.len() + v.len();
        if !k.eq_ignore_ascii_case("host") {
            h2.push((
                HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            ));
        }
    }
    raw.push_str("\r\n");
    let mut bytes = raw.into_bytes();
    bytes.extend_from_slice(&body);
    Req {
        raw: Bytes::from(bytes),
        uri: format!("https://localhost{path}").parse().unwrap(),
        headers: h2,
        body,
        header_bytes,
    }
}

/// A blocking one-shot HTTP/1.1 request (control plane: create bins, PATCH settings, metrics).
fn http_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> Result<(u16, String), String> {
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| e.to_string())?;
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&out) {
        Ok(httparse::Status::Complete(n)) => Ok((
            resp.code.unwrap_or(0),
            String::from_utf8_lossy(&out[n..]).into_owned(),
        )),
        _ => Err("bad response".into()),
    }
}

/// `POST /api/bins` → (id, key).
fn create_bin(addr: SocketAddr) -> Result<(String, String), String> {
    let (status, body) = http_call(addr, "POST", "/api/bins", None, "")?;
    if status != 200 && status != 201 {
        return Err(format!("POST /api/bins: {status} {body}"));
    }
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    Ok((
        v["id"].as_str().unwrap_or_default().to_string(),
        v["key"].as_str().unwrap_or_default().to_string(),
    ))
}

// ---------------------------------------------------------------------------------------------
// Load generator
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct ConnStats {
    count: u64,
    non2xx: u64,
    errors: u64,
    lat_ns: Vec<u32>,
}

impl ConnStats {
    fn record(&mut self, status: u16, dt: Duration) {
        self.count += 1;
        if !(200..300).contains(&status) {
            self.non2xx += 1;
        }
        self.lat_ns
            .push(u32::try_from(dt.as_nanos()).unwrap_or(u32::MAX));
    }
    fn merge(&mut self, other: ConnStats) {
        self.count += other.count;
        self.non2xx += other.non2xx;
        self.errors += other.errors;
        self.lat_ns.extend(other.lat_ns);
    }
}

#[derive(Clone)]
struct LoadSpec {
    addr: SocketAddr,
    tls: Option<TlsConnector>,
    h2: bool,
    /// TCP connections.
    conns: usize,
    /// Concurrent requests per connection (h2 only; HTTP/1.1 is 1).
    streams: usize,
    req: Arc<Req>,
}

/// One round's figures.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    cpu_us: f64,
    non2xx: u64,
    errors: u64,
}

fn percentile_us(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[i] as f64 / 1000.0
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    H2(SendRequest<Full<Bytes>>),
}

async fn connect(spec: &LoadSpec) -> Vec<Conn> {
    let mut out = Vec::new();
    for _ in 0..spec.conns {
        let tcp = TcpStream::connect(spec.addr).await.expect("connect");
        tcp.set_nodelay(true).unwrap();
        let conn = match &spec.tls {
            None => Conn::Plain(tcp),
            Some(c) => {
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let tls = c.connect(name, tcp).await.expect("tls handshake");
                if spec.h2 {
                    let (send, conn) =
                        hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                            .handshake(TokioIo::new(tls))
                            .await
                            .expect("h2 handshake");
                    tokio::spawn(conn);
                    for _ in 1..spec.streams {
                        out.push(Conn::H2(send.clone()));
                    }
                    Conn::H2(send)
                } else {
                    Conn::Tls(Box::new(tls))
                }
            }
        };
        out.push(conn);
    }
    out
}

async fn drive(conn: Conn, req: Arc<Req>, phase: Arc<AtomicU8>) -> ConnStats {
    match conn {
        Conn::Plain(s) => h1_drive(s, &req.raw, &phase).await,
        Conn::Tls(s) => h1_drive(*s, &req.raw, &phase).await,
        Conn::H2(send) => h2_drive(send, &req, &phase).await,
    }
}

async fn h1_drive<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    raw: &[u8],
    phase: &AtomicU8,
) -> ConnStats {
    let mut st = ConnStats::default();
    let mut buf = vec![0u8; 4096];
    while phase.load(Ordering::Relaxed) != STOP {
        let t0 = Instant::now();
        let status = match exchange(&mut s, raw, &mut buf).await {
            Ok(status) => status,
            Err(_) => {
                st.errors += 1;
                break;
            }
        };
        if phase.load(Ordering::Relaxed) == MEASURE {
            st.record(status, t0.elapsed());
        }
    }
    st
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    raw: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<u16> {
    s.write_all(raw).await?;
    s.flush().await?;
    read_response(s, buf).await
}

/// Read one HTTP/1.1 response (Content-Length framed); returns its status.
async fn read_response<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = s.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
        let parsed = {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&buf[..filled]) {
                Ok(httparse::Status::Complete(head)) => {
                    let len = resp
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                        .unwrap_or(0usize);
                    Some((resp.code.unwrap_or(0), head + len))
                }
                Ok(httparse::Status::Partial) => None,
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            }
        };
        if let Some((status, total)) = parsed {
            if buf.len() < total {
                buf.resize(total, 0);
            }
            while filled < total {
                let n = s.read(&mut buf[filled..total]).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                filled += n;
            }
            return Ok(status);
        }
    }
}

async fn h2_drive(mut send: SendRequest<Full<Bytes>>, req: &Req, phase: &AtomicU8) -> ConnStats {
    let mut st = ConnStats::default();
    while phase.load(Ordering::Relaxed) != STOP {
        let mut r = Request::new(Full::new(req.body.clone()));
        *r.method_mut() = Method::POST;
        *r.uri_mut() = req.uri.clone();
        *r.version_mut() = Version::HTTP_2;
        r.headers_mut().extend(req.headers.iter().cloned());
        let t0 = Instant::now();
        if send.ready().await.is_err() {
            st.errors += 1;
            break;
        }
        let resp = match send.send_request(r).await {
            Ok(resp) => resp,
            Err(_) => {
                st.errors += 1;
                break;
            }
        };
        let status = resp.status().as_u16();
        if resp.into_body().collect().await.is_err() {
            st.errors += 1;
            break;
        }
        if phase.load(Ordering::Relaxed) == MEASURE {
            st.record(status, t0.elapsed());
        }
    }
    st
}

/// Connect, warm up, measure for `plan.measure` while sampling `cpu`, stop.
fn run_load(plan: &Plan, spec: &LoadSpec, cpu: &dyn Fn() -> u64) -> Sample {
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let spec2 = spec.clone();
    let ph = phase.clone();
    let generator = std::thread::Builder::new()
        .name("bench-load".into())
        .spawn(move || {
            pin(cpus().load);
            current_thread_rt().block_on(async move {
                let conns = connect(&spec2).await;
                let _ = ready_tx.send(());
                let tasks: Vec<_> = conns
                    .into_iter()
                    .map(|c| tokio::spawn(drive(c, spec2.req.clone(), ph.clone())))
                    .collect();
                let mut total = ConnStats::default();
                for t in tasks {
                    total.merge(t.await.expect("load task"));
                }
                total
            })
        })
        .expect("load thread");
    ready_rx.recv().expect("load generator connected");
    std::thread::sleep(plan.warmup);
    let c0 = cpu();
    let t0 = Instant::now();
    phase.store(MEASURE, Ordering::Relaxed);
    std::thread::sleep(plan.measure);
    phase.store(STOP, Ordering::Relaxed);
    let c1 = cpu();
    let secs = t0.elapsed().as_secs_f64();
    let mut st = generator.join().expect("load generator");
    st.lat_ns.sort_unstable();
    Sample {
        rps: st.count as f64 / secs,
        p50_us: percentile_us(&st.lat_ns, 0.50),
        p99_us: percentile_us(&st.lat_ns, 0.99),
        p999_us: percentile_us(&st.lat_ns, 0.999),
        cpu_us: (c1 - c0) as f64 / 1000.0 / st.count.max(1) as f64,
        non2xx: st.non2xx,
        errors: st.errors,
    }
}

/// `n` requests on each of one keep-alive connection per entry of `reqs`, which that
/// connection sends (a fixed amount of work: profiling, filling the memory scenario).
fn fixed_load(addr: SocketAddr, reqs: Vec<Arc<Req>>, n: usize) {
    std::thread::Builder::new()
        .name("bench-load".into())
        .spawn(move || {
            pin(cpus().load);
            current_thread_rt().block_on(async move {
                let tasks: Vec<_> = reqs
                    .into_iter()
                    .map(|req| {
                        tokio::spawn(async move {
                            let mut s = TcpStream::connect(addr).await.unwrap();
                            s.set_nodelay(true).unwrap();
                            let mut buf = vec![0u8; 4096];
                            for _ in 0..n {
                                exchange(&mut s, &req.raw, &mut buf).await.unwrap();
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            })
        })
        .unwrap()
        .join()
        .unwrap();
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Medians over rounds of each figure.
fn summarize(samples: &[Sample]) -> Sample {
    let m = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
    Sample {
        rps: m(|s| s.rps),
        p50_us: m(|s| s.p50_us),
        p99_us: m(|s| s.p99_us),
        p999_us: m(|s| s.p999_us),
        cpu_us: m(|s| s.cpu_us),
        non2xx: samples.iter().map(|s| s.non2xx).sum(),
        errors: samples.iter().map(|s| s.errors).sum(),
    }
}

/// A named load against a server, with its CPU probe.
struct Contender<'a> {
    name: &'a str,
    spec: LoadSpec,
    cpu: &'a dyn Fn() -> u64,
}

/// Interleaved rounds: A, B, A, B… (the first contender is the reference).
fn interleave(
    plan: &Plan,
    label: &str,
    contenders: &[Contender<'_>],
) -> (Vec<Sample>, Vec<Paired>) {
    let mut per: Vec<Vec<Sample>> = vec![Vec::new(); contenders.len()];
    for round in 0..plan.rounds {
        for (i, c) in contenders.iter().enumerate() {
            let s = run_load(plan, &c.spec, c.cpu);
            eprintln!(
                "  [{label}] round {}/{} {:<22} {:>9.0} req/s  p50 {:>7.0} µs  p99 {:>7.0} µs  cpu {:>6.2} µs/req{}",
                round + 1,
                plan.rounds,
                c.name,
                s.rps,
                s.p50_us,
                s.p99_us,
                s.cpu_us,
                if s.non2xx + s.errors > 0 {
                    format!("  ({} non-2xx, {} errors)", s.non2xx, s.errors)
                } else {
                    String::new()
                }
            );
            per[i].push(s);
        }
    }
    let medians = per.iter().map(|s| summarize(s)).collect();
    let paired = per
        .iter()
        .map(|b| {
            let a = &per[0];
            let r =
                |f: fn(&Sample) -> f64| median(a.iter().zip(b).map(|(a, b)| f(b) / f(a)).collect());
            Paired {
                rps: r(|s| s.rps),
                p50: r(|s| s.p50_us),
                p99: r(|s| s.p99_us),
                p999: r(|s| s.p999_us),
                cpu: r(|s| s.cpu_us),
                cpu_delta: median(a.iter().zip(b).map(|(a, b)| b.cpu_us - a.cpu_us).collect()),
            }
        })
        .collect();
    (medians, paired)
}

/// Medians over rounds of per-round ratios to the reference contender (same round, adjacent
/// in time: slow drift of the shared machine cancels out).
#[derive(Clone, Copy, Debug)]
struct Paired {
    rps: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    cpu: f64,
    cpu_delta: f64,
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Report {
    table: Vec<String>,
    targets: Vec<String>,
    notes: Vec<String>,
}

impl Report {
    fn header(&mut self) {
        self.table.push(
            "| scenario | server | req/s | p50 µs | p99 µs | p99.9 µs | server CPU µs/req |".into(),
        );
        self.table.push("|---|---|---:|---:|---:|---:|---:|".into());
    }

    fn row(&mut self, scenario: &str, server: &str, s: &Sample) {
        let errs = if s.non2xx + s.errors > 0 {
            format!(" ({} non-2xx, {} errors)", s.non2xx, s.errors)
        } else {
            String::new()
        };
        self.table.push(format!(
            "| {scenario} | {server}{errs} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} |",
            s.rps, s.p50_us, s.p99_us, s.p999_us, s.cpu_us
        ));
    }

    fn ratio(&mut self, scenario: &str, what: &str, p: &Paired) {
        self.table.push(format!(
            "| {scenario} | {what} | **{:.3}** | {:.2}× | {:.2}× | {:.2}× | {:+.2} ({:.2}×) |",
            p.rps, p.p50, p.p99, p.p999, p.cpu_delta, p.cpu
        ));
    }

    fn target(&mut self, ok: bool, text: String) {
        self.targets
            .push(format!("- [{}] {text}", if ok { "met" } else { "MISSED" }));
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

fn plain_spec(addr: SocketAddr, req: Arc<Req>) -> LoadSpec {
    LoadSpec {
        addr,
        tls: None,
        h2: false,
        conns: CONNS,
        streams: 1,
        req,
    }
}

/// Scenario 1: HTTP/1.1 ingest vs baseline.
fn scenario_ingest(plan: &Plan, rep: &mut Report, base: &Baseline, hr: &Hookrelay) {
    eprintln!("scenario 1: ingest, HTTP/1.1, {CONNS} connections, 1 KiB JSON, 8 headers");
    let body = json_body(BODY_LEN, "s1");
    let path = format!("/{}/events", hr.bin_id);
    let base_cpu = base.thread.cpu_fn();
    let hr_cpu = hr.thread.cpu_fn();
    let res = interleave(
        plan,
        "ingest",
        &[
            Contender {
                name: "baseline",
                spec: plain_spec(
                    base.addr,
                    Arc::new(ingest_req(&base.addr.to_string(), &path, body.clone())),
                ),
                cpu: &base_cpu,
            },
            Contender {
                name: "hookrelay",
                spec: plain_spec(
                    hr.addr,
                    Arc::new(ingest_req(&hr.addr.to_string(), &path, body)),
                ),
                cpu: &hr_cpu,
            },
        ],
    );
    let ((b, h), r) = ((&res.0[0], &res.0[1]), &res.1[1]);
    let s = "1 ingest h1";
    rep.row(s, "baseline (bare hyper)", b);
    rep.row(s, "hookrelay", h);
    rep.ratio(s, "hookrelay / baseline", r);
    rep.target(
        r.rps >= 0.90,
        format!("1: throughput ≥ 90 % of baseline — {:.1} %", 100.0 * r.rps),
    );
    rep.target(
        r.cpu_delta <= 2.0,
        format!(
            "1: server CPU ≤ +2 µs/req — {:+.2} µs (medians {:.2} vs {:.2})",
            r.cpu_delta, h.cpu_us, b.cpu_us
        ),
    );
    rep.target(
        r.p99 <= 1.5,
        format!(
            "1: p99 ≤ 1.5× baseline — {:.2}× (medians {:.0} vs {:.0} µs)",
            r.p99, h.p99_us, b.p99_us
        ),
    );
}

/// Scenario 2: ingest over TLS, HTTP/1.1 and h2, vs the baseline with the same rustls config.
fn scenario_tls(plan: &Plan, rep: &mut Report) {
    eprintln!("scenario 2: ingest over TLS (HTTP/1.1 and h2)");
    let dir = tempfile::tempdir().expect("temp dir");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    write_cert(&cert_path, &key_path);
    // Exactly hookrelay's rustls server config, from the same files.
    let setup =
        hookrelay::server::tls::load_or_generate(&cert_path, &key_path, None).expect("tls config");
    let base = start_baseline(Some(setup.acceptor));
    let hr = match start_hookrelay(
        "bench-hr-tls",
        &[
            "--tls-listen".into(),
            "127.0.0.1:0".into(),
            "--tls-cert".into(),
            cert_path.display().to_string(),
            "--tls-key".into(),
            key_path.display().to_string(),
        ],
    ) {
        Ok(hr) => hr,
        Err(e) => {
            rep.notes
                .push(format!("2: skipped: hookrelay with TLS did not start: {e}"));
            return;
        }
    };
    let pem = std::fs::read(&cert_path).unwrap();
    let body = json_body(BODY_LEN, "s2");
    let path = format!("/{}/events", hr.bin_id);
    let base_cpu = base.thread.cpu_fn();
    let hr_cpu = hr.thread.cpu_fn();
    // HOOKRELAY_BENCH_TLS=h1|h2 runs one of the two (e.g. under `perf record`).
    let only = std::env::var("HOOKRELAY_BENCH_TLS").ok();
    for (proto, h2) in [("h1", false), ("h2", true)] {
        if only.as_deref().is_some_and(|o| o != proto) {
            continue;
        }
        let connector = tls_connector(&pem, if h2 { b"h2" } else { b"http/1.1" });
        let spec = |addr: SocketAddr| LoadSpec {
            addr,
            tls: Some(connector.clone()),
            h2,
            conns: if h2 { 16 } else { CONNS },
            streams: if h2 { 4 } else { 1 },
            req: Arc::new(ingest_req("localhost", &path, body.clone())),
        };
        let res = interleave(
            plan,
            &format!("tls {proto}"),
            &[
                Contender {
                    name: "baseline tls",
                    spec: spec(base.tls_addr.unwrap()),
                    cpu: &base_cpu,
                },
                Contender {
                    name: "hookrelay tls",
                    spec: spec(hr.tls_addr.unwrap()),
                    cpu: &hr_cpu,
                },
            ],
        );
        let ((b, h), r) = ((&res.0[0], &res.0[1]), &res.1[1]);
        let s = if h2 {
            "2 ingest TLS h2 (16 conns × 4 streams)"
        } else {
            "2 ingest TLS h1"
        };
        rep.row(s, "baseline (bare hyper, same rustls config)", b);
        rep.row(s, "hookrelay", h);
        rep.ratio(s, "hookrelay / baseline", r);
        rep.target(
            r.rps >= 0.90,
            format!(
                "2: TLS {proto} throughput ≥ 90 % of TLS baseline — {:.1} %",
                100.0 * r.rps
            ),
        );
    }
}

fn write_cert(cert: &Path, key: &Path) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    std::fs::write(cert, ck.cert.pem()).unwrap();
    std::fs::write(key, ck.signing_key.serialize_pem()).unwrap();
}

fn tls_connector(cert_pem: &[u8], alpn: &[u8]) -> TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(cfg))
}

#[derive(Default)]
struct ViewerStats {
    lat_ns: Vec<u32>,
    frames: u64,
    gaps: u64,
    evicted: u64,
}

/// Scenario 3: 100 WebSocket viewers on one bin at 1,000 captures/s.
fn scenario_live(plan: &Plan, rep: &mut Report, hr: &Hookrelay) {
    const VIEWERS: usize = 100;
    const RATE: u64 = 1000;
    eprintln!("scenario 3: live fan-out, {VIEWERS} WebSocket viewers, {RATE} captures/s");
    let (id, key) = match create_bin(hr.addr) {
        Ok(b) => b,
        Err(e) => {
            rep.notes.push(format!("3: skipped: {e}"));
            return;
        }
    };
    let addr = hr.addr;
    let total = (plan.live.as_millis() as u64) * RATE / 1000;
    let warm = total / 10;
    let cpu = hr.thread.cpu_fn();
    let handle = std::thread::Builder::new()
        .name("bench-live".into())
        .spawn(move || {
            pin(cpus().load);
            current_thread_rt().block_on(async move {
                let stop_path = format!("/{id}/stop\"");
                let mut viewers = Vec::new();
                for _ in 0..VIEWERS {
                    let mut req = format!("ws://{addr}/api/bins/{id}/ws")
                        .into_client_request()
                        .unwrap();
                    req.headers_mut().insert(
                        "authorization",
                        HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
                    );
                    let tcp = TcpStream::connect(addr).await.expect("connect");
                    tcp.set_nodelay(true).unwrap();
                    // tungstenite zero-fills `read_buffer_size` per read: keep it small.
                    let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
                    let (mut ws, _) =
                        tokio_tungstenite::client_async_with_config(req, tcp, Some(config))
                            .await
                            .expect("websocket");
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) if t.as_str().contains("\"hello\"") => {}
                        other => panic!("expected hello, got {other:?}"),
                    }
                    let stop_path = stop_path.clone();
                    viewers.push(tokio::spawn(async move {
                        let mut st = ViewerStats::default();
                        let mut last = 0u64;
                        while let Some(msg) = ws.next().await {
                            let Ok(Message::Text(t)) = msg else {
                                if matches!(msg, Ok(Message::Close(_)) | Err(_)) {
                                    break;
                                }
                                continue;
                            };
                            let now = SystemTime::now();
                            let s = t.as_str();
                            if !s.starts_with("{\"type\":\"capture\"") {
                                if s.contains("\"evicted\"") {
                                    st.evicted += 1;
                                }
                                continue;
                            }
                            st.frames += 1;
                            let seq = field(s, "\"seq\":")
                                .and_then(|v| {
                                    v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
                                })
                                .unwrap_or(0u64);
                            if last != 0 && seq != last + 1 {
                                st.gaps += 1;
                            }
                            last = seq;
                            if field(s, "\"path\":\"").is_some_and(|p| p.starts_with(&stop_path)) {
                                break;
                            }
                            if seq > warm {
                                if let Some(at) = field(s, "\"received_at\":\"")
                                    .and_then(|v| v.split('"').next())
                                    .and_then(|v| humantime::parse_rfc3339(v).ok())
                                {
                                    let dt = now.duration_since(at).unwrap_or_default();
                                    st.lat_ns
                                        .push(u32::try_from(dt.as_nanos()).unwrap_or(u32::MAX));
                                }
                            }
                        }
                        st
                    }));
                }
                // The sender: one keep-alive connection, paced at RATE.
                let body = json_body(BODY_LEN, "s3");
                let req = ingest_req(&addr.to_string(), &format!("/{id}/events"), body.clone());
                let stop = ingest_req(&addr.to_string(), &format!("/{id}/stop"), body);
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.set_nodelay(true).unwrap();
                let mut buf = vec![0u8; 4096];
                let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
                let mut c0 = 0;
                let mut t0 = Instant::now();
                let mut sent = 0u64;
                for i in 0..total {
                    tick.tick().await;
                    if i == warm {
                        c0 = cpu();
                        t0 = Instant::now();
                    }
                    if exchange(&mut s, &req.raw, &mut buf).await.is_ok() {
                        sent += 1;
                    }
                }
                let c1 = cpu();
                let secs = t0.elapsed().as_secs_f64();
                let _ = exchange(&mut s, &stop.raw, &mut buf).await;
                let mut all = ViewerStats::default();
                for v in viewers {
                    if let Ok(Ok(st)) = tokio::time::timeout(Duration::from_secs(10), v).await {
                        all.frames += st.frames;
                        all.gaps += st.gaps;
                        all.evicted += st.evicted;
                        all.lat_ns.extend(st.lat_ns);
                    }
                }
                let measured = total - warm;
                (
                    all,
                    sent,
                    measured as f64 / secs,
                    (c1 - c0) as f64 / 1000.0 / measured as f64,
                )
            })
        })
        .expect("live thread");
    let (mut st, sent, rate, cpu_us) = handle.join().expect("live scenario");
    st.lat_ns.sort_unstable();
    let p50 = percentile_us(&st.lat_ns, 0.5);
    let p99 = percentile_us(&st.lat_ns, 0.99);
    let p999 = percentile_us(&st.lat_ns, 0.999);
    rep.table.push(format!(
        "| 3 live fan-out ({VIEWERS} viewers) | hookrelay, capture → viewer | {rate:.0} captures/s | {p50:.0} | {p99:.0} | {p999:.0} | {cpu_us:.1} per capture |"
    ));
    rep.notes.push(format!(
        "3: {sent} captures sent (+1 stop), {} capture frames received by {VIEWERS} viewers (expected {}), {} gaps, {} evicted notices; latency from `received_at` to receipt over {} samples",
        st.frames,
        (sent + 1) * VIEWERS as u64,
        st.gaps,
        st.evicted,
        st.lat_ns.len()
    ));
    rep.target(
        p99 < 2000.0,
        format!(
            "3: capture → viewer p99 < 2 ms at 1,000 captures/s — p50 {p50:.0} µs, p99 {p99:.0} µs"
        ),
    );
}

fn field<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    s.find(key).map(|i| &s[i + key.len()..])
}

/// A WebSocket viewer that authenticates and then never reads (tiny receive buffer).
fn stalled_viewer(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    id: &str,
    key: &str,
) -> Result<std::net::TcpStream, String> {
    let tcp = rt
        .block_on(async {
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.set_recv_buffer_size(4096)?;
            sock.connect(addr).await
        })
        .map_err(|e| e.to_string())?;
    let mut s = tcp.into_std().map_err(|e| e.to_string())?;
    s.set_nonblocking(false).map_err(|e| e.to_string())?;
    let req = format!(
        "GET /api/bins/{id}/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {key}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).map_err(|e| e.to_string())?;
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(String::from_utf8_lossy(&head).into_owned());
    }
    Ok(s)
}

/// A bin with 10 viewers that never read and a forward target that never answers.
struct SlowBin {
    id: String,
    key: String,
    stalled: Vec<std::net::TcpStream>,
    black_hole: std::net::TcpListener,
    /// Whether the forward target was accepted (else: stalled viewers only).
    forward: bool,
}

impl SlowBin {
    /// Set it up on `hr`; problems short of failure go to `notes`.
    fn new(hr: &Hookrelay, notes: &mut Vec<String>) -> Result<SlowBin, String> {
        let (id, key) = create_bin(hr.addr)?;
        let rt = current_thread_rt();
        let mut stalled = Vec::new();
        for _ in 0..10 {
            match stalled_viewer(&rt, hr.addr, &id, &key) {
                Ok(s) => stalled.push(s),
                Err(e) => {
                    notes.push(format!("4: a stalled viewer failed to connect: {e}"));
                    break;
                }
            }
        }
        // A target that accepts TCP connections (backlog) and never answers.
        let black_hole = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let patch = format!(
            r#"{{"forward":[{{"url":"http://{}/hook"}}]}}"#,
            black_hole.local_addr().unwrap()
        );
        let forward = match http_call(
            hr.addr,
            "PATCH",
            &format!("/api/bins/{id}"),
            Some(&key),
            &patch,
        ) {
            Ok((200, _)) => true,
            Ok((status, body)) => {
                notes.push(format!(
                    "4: forward not available (PATCH answered {status}: {}); stalled viewers only",
                    body.trim()
                ));
                false
            }
            Err(e) => {
                notes.push(format!(
                    "4: forward PATCH failed: {e}; stalled viewers only"
                ));
                false
            }
        };
        Ok(SlowBin {
            id,
            key,
            stalled,
            black_hole,
            forward,
        })
    }

    /// Delete the bin (its forward worker and viewer sessions end), then drop the sockets.
    fn delete(self, hr: &Hookrelay) {
        let _ = http_call(
            hr.addr,
            "DELETE",
            &format!("/api/bins/{}", self.id),
            Some(&self.key),
            "",
        );
        drop(self.stalled);
        drop(self.black_hole);
    }
}

/// Scenario 4: scenario 1 on a bin with 10 stalled viewers and a forward target that never answers.
fn scenario_slow(plan: &Plan, rep: &mut Report, hr: &Hookrelay) {
    eprintln!(
        "scenario 4: slow consumers (10 stalled viewers + a forward target that never answers)"
    );
    let slow = match SlowBin::new(hr, &mut rep.notes) {
        Ok(b) => b,
        Err(e) => {
            rep.notes.push(format!("4: skipped: {e}"));
            return;
        }
    };
    let (id, forward) = (slow.id.clone(), slow.forward);
    let rss0 = rss_bytes();
    let body = json_body(BODY_LEN, "s4");
    let plain_path = format!("/{}/events", hr.bin_id);
    let slow_path = format!("/{id}/events");
    let cpu = hr.thread.cpu_fn();
    let host = hr.addr.to_string();
    let res = interleave(
        plan,
        "slow",
        &[
            Contender {
                name: "plain bin",
                spec: plain_spec(
                    hr.addr,
                    Arc::new(ingest_req(&host, &plain_path, body.clone())),
                ),
                cpu: &cpu,
            },
            Contender {
                name: "slow-consumer bin",
                spec: plain_spec(hr.addr, Arc::new(ingest_req(&host, &slow_path, body))),
                cpu: &cpu,
            },
        ],
    );
    let rss1 = rss_bytes();
    let viewers_left = hr
        .state
        .store
        .get(&id)
        .map_or(0, |b| b.viewers.load(Ordering::Relaxed));
    let deliveries = http_call(hr.addr, "GET", "/metrics", None, "")
        .map(|(_, m)| {
            m.lines()
                .filter(|l| l.contains("deliver") && !l.starts_with('#'))
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let ((p, s), r) = ((&res.0[0], &res.0[1]), &res.1[1]);
    let what = if forward {
        "4 slow consumers (10 stalled viewers + black-hole forward)"
    } else {
        "4 slow consumers (10 stalled viewers; no forward)"
    };
    rep.row(what, "hookrelay, plain bin (scenario 1 config)", p);
    rep.row(what, "hookrelay, slow-consumer bin", s);
    rep.ratio(what, "slow / plain", r);
    rep.notes.push(format!(
        "4: process RSS {:.1} MiB before, {:.1} MiB after ({:+.1} MiB); stalled viewers still connected: {viewers_left}/{}; forward: {}; delivery metrics: {}",
        rss0 as f64 / 1048576.0,
        rss1 as f64 / 1048576.0,
        (rss1 as f64 - rss0 as f64) / 1048576.0,
        slow.stalled.len(),
        if forward { "on (target never answers)" } else { "off" },
        if deliveries.is_empty() { "n/a".into() } else { deliveries }
    ));
    rep.target(
        r.rps >= 0.95,
        format!(
            "4: slow-consumer throughput ≥ 95 % of scenario 1's — {:.1} %{}",
            100.0 * r.rps,
            if forward {
                ""
            } else {
                " (stalled viewers only: forward not available)"
            }
        ),
    );
    slow.delete(hr);
}

/// Scenario 5, in a fresh child process (clean allocator state): parent side.
fn scenario_memory(plan: &Plan, rep: &mut Report) {
    eprintln!("scenario 5: memory per capture (20 bins × 500 captures), in a child process");
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe)
        .env("HOOKRELAY_BENCH_CHILD", "memory")
        .env("HOOKRELAY_BENCH_QUICK", if plan.quick { "1" } else { "0" })
        .stderr(Stdio::inherit())
        .output();
    let text = match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => {
            rep.notes.push(format!("5: skipped: child failed: {e}"));
            return;
        }
    };
    let Some(line) = text.lines().find_map(|l| l.strip_prefix("MEMORY ")) else {
        rep.notes
            .push(format!("5: skipped: child said {}", text.trim()));
        return;
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let (rss0, rss1, captures, payload, accounted) = (v[0], v[1], v[2], v[3], v[4]);
    let per = (rss1 - rss0) / captures;
    let budget = 1.25 * payload + 256.0;
    rep.table.push(format!(
        "| 5 memory (20 bins × 500) | hookrelay | RSS {:.1} → {:.1} MiB | | | | {per:.0} B/capture ({:.2}× payload {payload:.0} B) |",
        rss0 / 1048576.0,
        rss1 / 1048576.0,
        per / payload
    ));
    rep.notes.push(format!(
        "5: {captures:.0} captures; RSS delta / capture {per:.0} B; payload (body + header bytes) {payload:.0} B; target ≤ {budget:.0} B; hookrelay's own accounting {accounted:.0} B/capture"
    ));
    rep.target(
        per <= budget,
        format!("5: memory ≤ 1.25 × payload + 256 B = {budget:.0} B per capture — {per:.0} B"),
    );
}

/// Scenario 5, child side: prints `MEMORY rss0 rss1 captures payload accounted_per_capture`.
fn child_memory() {
    const BINS: usize = 20;
    const PER_BIN: usize = 500;
    let hr = start_hookrelay(
        "bench-hr-mem",
        &["--bin-create-limit".into(), "1000".into()],
    )
    .expect("hookrelay starts");
    let mut bins = vec![hr.bin_id.clone()];
    for _ in 1..BINS {
        bins.push(create_bin(hr.addr).expect("create bin").0);
    }
    let host = hr.addr.to_string();
    let body = json_body(BODY_LEN, "s5");
    let payload = memory_req(&host, &format!("/{}/push", bins[0]), body.clone());
    let payload_bytes = BODY_LEN + payload.header_bytes;
    let fill = |paths: Vec<String>, n: usize| {
        let reqs: Vec<Arc<Req>> = paths
            .iter()
            .map(|p| Arc::new(memory_req(&host, p, body.clone())))
            .collect();
        fixed_load(hr.addr, reqs, n);
    };
    // Warm up connection and allocator paths with requests that are not captured (unknown bins).
    fill(
        (0..BINS)
            .map(|i| format!("/no-such-bin-{i}/push"))
            .collect(),
        PER_BIN / 2,
    );
    std::thread::sleep(Duration::from_millis(300));
    let rss0 = rss_bytes();
    let acc0 = hr.state.store.total_bytes();
    fill(bins.iter().map(|b| format!("/{b}/push")).collect(), PER_BIN);
    std::thread::sleep(Duration::from_millis(300));
    let rss1 = rss_bytes();
    let acc1 = hr.state.store.total_bytes();
    let captures: u64 = bins
        .iter()
        .filter_map(|b| hr.state.store.get(b))
        .map(|b| {
            let i = b.info();
            if i.last_seq == 0 {
                0
            } else {
                i.last_seq - i.first_seq + 1
            }
        })
        .sum();
    println!(
        "MEMORY {rss0} {rss1} {captures} {payload_bytes} {}",
        (acc1 - acc0) as f64 / captures.max(1) as f64
    );
}

/// Scenario 6: Redis store ingest beside memory's, when the tree supports it.
fn scenario_redis(plan: &Plan, rep: &mut Report, hr_mem: &Hookrelay) {
    eprintln!("scenario 6: Redis store ingest");
    let installed = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        rep.notes
            .push("6: skipped: redis-server is not installed".into());
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis = Command::new("taskset");
    match cpus().server {
        Some(cpu) => redis.args(["-c", &cpu.to_string(), "redis-server"]),
        None => redis.args(["-c", "0-1023", "redis-server"]),
    };
    let child = redis
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            rep.notes
                .push(format!("6: skipped: redis-server did not start: {e}"));
            return;
        }
    };
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let result = if up {
        start_hookrelay(
            "bench-hr-redis",
            &["--store".into(), format!("redis://127.0.0.1:{port}/0")],
        )
    } else {
        Err("redis-server did not listen".into())
    };
    match result {
        Err(e) => rep.notes.push(format!(
            "6: skipped: hookrelay --store redis:// did not start: {e}"
        )),
        Ok(hr) => {
            let pid = child.id();
            let hr_cpu = hr.thread.cpu_fn();
            let redis_cpu = move || hr_cpu() + process_cpu_ns(pid);
            let mem_cpu = hr_mem.thread.cpu_fn();
            let body = json_body(BODY_LEN, "s6");
            let res = interleave(
                plan,
                "redis",
                &[
                    Contender {
                        name: "memory store",
                        spec: plain_spec(
                            hr_mem.addr,
                            Arc::new(ingest_req(
                                &hr_mem.addr.to_string(),
                                &format!("/{}/events", hr_mem.bin_id),
                                body.clone(),
                            )),
                        ),
                        cpu: &mem_cpu,
                    },
                    Contender {
                        name: "redis store",
                        spec: plain_spec(
                            hr.addr,
                            Arc::new(ingest_req(
                                &hr.addr.to_string(),
                                &format!("/{}/events", hr.bin_id),
                                body,
                            )),
                        ),
                        cpu: &redis_cpu,
                    },
                ],
            );
            let s = "6 ingest h1, store";
            rep.row(s, "hookrelay, memory store", &res.0[0]);
            rep.row(
                s,
                "hookrelay, redis store (CPU incl. redis-server)",
                &res.0[1],
            );
            rep.ratio(s, "redis / memory", &res.1[1]);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------------------------------------

fn main() {
    // As `hookrelay`'s own main does, before any thread starts (baseline and hookrelay alike).
    hookrelay::alloc::use_one_malloc_arena();
    hookrelay::server::tls::install_provider();
    if std::env::var("HOOKRELAY_BENCH_CHILD").as_deref() == Ok("memory") {
        child_memory();
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick")
        || std::env::var("HOOKRELAY_BENCH_QUICK").is_ok_and(|v| v == "1");
    let only: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let want = |name: &str| only.is_empty() || only.contains(&name);
    let plan = Plan::new(quick);
    let started = Instant::now();
    let c = cpus();
    eprintln!(
        "hookrelay bench ({} mode): {} rounds × ({:?} warm-up + {:?} measured) per contender; {}",
        if quick { "quick" } else { "full" },
        plan.rounds,
        plan.warmup,
        plan.measure,
        match (c.server, c.load) {
            (Some(s), Some(l)) => format!("servers pinned to CPU {s}, load generator to CPU {l}"),
            _ => "not pinned (no taskset or < 2 CPUs)".into(),
        }
    );

    let mut rep = Report::default();
    rep.header();
    let base = start_baseline(None);
    let hr = start_hookrelay(
        "bench-hookrelay",
        &[
            "--max-viewers".into(),
            "128".into(),
            "--bin-create-limit".into(),
            "1000".into(),
        ],
    )
    .expect("hookrelay starts");
    // `profile-baseline` / `profile-hookrelay` / `profile-slow`: one long scenario-1 load
    // against one server (`profile-slow`: on scenario 4's bin), for `perf record` or
    // `valgrind --tool=callgrind` (not part of the table).
    for (name, target) in [
        ("profile-baseline", base.addr),
        ("profile-hookrelay", hr.addr),
        ("profile-slow", hr.addr),
    ] {
        if only.contains(&name) {
            let slow = (name == "profile-slow")
                .then(|| SlowBin::new(&hr, &mut rep.notes).expect("slow bin"));
            let cpu: Box<dyn Fn() -> u64> = if name == "profile-baseline" {
                Box::new(base.thread.cpu_fn())
            } else {
                Box::new(hr.thread.cpu_fn())
            };
            let path = format!("/{}/events", slow.as_ref().map_or(&hr.bin_id, |b| &b.id));
            let req = ingest_req(&target.to_string(), &path, json_body(BODY_LEN, "p"));
            let long = Plan {
                measure: Duration::from_secs(if quick { 3 } else { 10 }),
                ..plan
            };
            match std::env::var("HOOKRELAY_BENCH_PROFILE_N")
                .ok()
                .and_then(|n| n.parse::<usize>().ok())
            {
                // A fixed number of requests per connection, after a pause to attach
                // `perf stat -t <tid>` (instructions per request are steadier than time here).
                Some(n) => {
                    let tids = if name == "profile-baseline" {
                        base.thread.tids.lock().unwrap().clone()
                    } else {
                        hr.thread.tids.lock().unwrap().clone()
                    };
                    eprintln!("{name}: server tids {tids:?}; starting in 3 s");
                    std::thread::sleep(Duration::from_secs(3));
                    let t0 = Instant::now();
                    let req = Arc::new(req);
                    fixed_load(target, std::iter::repeat_n(req, CONNS).collect(), n);
                    println!(
                        "{name}: {} requests in {:.2} s",
                        CONNS * n,
                        t0.elapsed().as_secs_f64()
                    );
                }
                None => {
                    let s = run_load(&long, &plain_spec(target, Arc::new(req)), &*cpu);
                    println!("{name}: {s:?}");
                }
            }
            if let Some(slow) = slow {
                slow.delete(&hr);
            }
        }
    }
    if want("ingest") {
        scenario_ingest(&plan, &mut rep, &base, &hr);
    }
    if want("tls") {
        scenario_tls(&plan, &mut rep);
    }
    if want("live") {
        scenario_live(&plan, &mut rep, &hr);
    }
    if want("slow") {
        scenario_slow(&plan, &mut rep, &hr);
    }
    if want("memory") {
        scenario_memory(&plan, &mut rep);
    }
    if want("redis") {
        scenario_redis(&plan, &mut rep, &hr);
    }

    println!();
    println!(
        "hookrelay vs bare hyper — medians of {} interleaved rounds ({} measured each); CPUs: {}",
        plan.rounds,
        humantime::format_duration(plan.measure),
        match (c.server, c.load) {
            (Some(s), Some(l)) => format!("servers on {s}, load generator on {l}"),
            _ => "unpinned".into(),
        }
    );
    println!();
    for l in &rep.table {
        println!("{l}");
    }
    println!();
    println!("Targets:");
    for l in &rep.targets {
        println!("{l}");
    }
    if !rep.notes.is_empty() {
        println!();
        println!("Notes:");
        for l in &rep.notes {
            println!("- {l}");
        }
    }
    println!();
    println!("(bench took {:.0} s)", started.elapsed().as_secs_f64());
    // Servers are torn down with the process (draining idle keep-alive connections is not measured).
    drop(hr);
    drop(base);
    std::process::exit(0);
}
