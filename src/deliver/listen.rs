//! `hookrelay listen`: relay a bin to a target on the user's machine over the WebSocket stream.
//!
//! Resumption: after each delivery the last handled seq and the bin's epoch are saved per
//! (server, bin, target) in the state dir (temp file + rename), and every (re)connection asks
//! for `since=<last>`. A stop signal lets the delivery in flight finish, is saved, then the
//! socket is closed with 1000: a clean stop is exactly-once, a crash at-least-once (targets
//! de-duplicate by `X-Hookrelay-Seq`). There is no SSRF guard here: the target is the user's own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use super::client::{self, Connector, HttpClient, Stream};
use super::{build_request, join_target};
use crate::config::ListenArgs;

/// Time allowed for one delivery to the target.
const TARGET_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed to connect and finish the WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// First reconnect delay (doubles per failure).
const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest reconnect delay.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Largest frame accepted from the server (captures over 256 KiB come without their body).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Largest `delivery_report` sent (the server accepts client messages up to 256 KiB).
const MAX_REPORT: usize = 200 * 1024;
/// Largest body fetched through `/body` (the server's --max-body is far below).
const MAX_FETCHED_BODY: usize = 256 * 1024 * 1024;

type Ws = WebSocketStream<Stream>;

/// Where to connect, resolved from the arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// `http(s)://host[:port]`, no trailing slash.
    pub server: String,
    /// Bin id.
    pub bin: String,
    /// Bin key.
    pub key: String,
}

impl Source {
    /// From `<inspector-url#key=…>` or `--server/--bin/--key`.
    pub fn from_args(args: &ListenArgs) -> Result<Source, String> {
        if let Some(url) = &args.url {
            return parse_inspector_url(url);
        }
        match (&args.server, &args.bin, &args.key) {
            (Some(server), Some(bin), Some(key)) => {
                let uri: Uri = server
                    .trim()
                    .parse()
                    .map_err(|_| format!("--server `{server}` is not a URL"))?;
                let base = base_of(&uri)
                    .ok_or_else(|| format!("--server `{server}` must be an http(s):// URL"))?;
                Ok(Source {
                    server: base,
                    bin: bin.clone(),
                    key: key.clone(),
                })
            }
            _ => Err("give an inspector URL with #key=…, or --server, --bin and --key".into()),
        }
    }

    fn ws_url(&self, since: u64) -> String {
        let ws = if let Some(rest) = self.server.strip_prefix("https://") {
            format!("wss://{rest}")
        } else {
            format!("ws://{}", self.server.trim_start_matches("http://"))
        };
        format!("{ws}/api/bins/{}/ws?since={since}", self.bin)
    }
}

fn base_of(uri: &Uri) -> Option<String> {
    let scheme = uri.scheme_str().filter(|s| *s == "http" || *s == "https")?;
    Some(format!("{scheme}://{}", uri.authority()?))
}

/// `https://host/i/<id>#key=<key>` → server, id, key.
pub fn parse_inspector_url(url: &str) -> Result<Source, String> {
    let (base, fragment) = url
        .trim()
        .split_once('#')
        .ok_or_else(|| "the inspector URL has no #key=… fragment".to_string())?;
    let key = fragment
        .split('&')
        .find_map(|p| p.strip_prefix("key="))
        .filter(|k| !k.is_empty())
        .ok_or_else(|| "the inspector URL has no #key=… fragment".to_string())?;
    let uri: Uri = base.parse().map_err(|_| format!("`{base}` is not a URL"))?;
    let server = base_of(&uri).ok_or_else(|| format!("`{base}` must be an http(s):// URL"))?;
    let bin = uri
        .path()
        .strip_prefix("/i/")
        .map(|b| b.trim_end_matches('/'))
        .filter(|b| !b.is_empty() && !b.contains('/'))
        .ok_or_else(|| format!("`{base}` is not an inspector URL (…/i/<id>)"))?;
    Ok(Source {
        server,
        bin: bin.to_string(),
        key: key.to_string(),
    })
}

/// What is saved after each delivery.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Saved {
    server: String,
    bin: String,
    target: String,
    epoch: u64,
    seq: u64,
}

/// `listen-<hash>.json` in the state dir, one per (server, bin, target).
fn state_path(dir: &Path, source: &Source, target: &str) -> PathBuf {
    let mut h = Sha256::new();
    for part in [&source.server, &source.bin, target] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let hash = hex::encode(&h.finalize()[..12]);
    dir.join(format!("listen-{hash}.json"))
}

fn load(path: &Path) -> Option<Saved> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// Temp file + rename: a crash leaves the old or the new state, never a torn file.
fn save(path: &Path, saved: &Saved) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec(saved).expect("state JSON"))?;
    std::fs::rename(&tmp, path)
}

/// Where the relay stands.
struct Position {
    /// Last handled seq; `None` on a first run (start from "now").
    seq: Option<u64>,
    /// The bin incarnation `seq` belongs to; `None` when unknown or overridden.
    epoch: Option<u64>,
}

/// The parts of a capture frame the relay uses.
#[derive(Deserialize)]
struct CaptureJson {
    seq: u64,
    method: String,
    path: String,
    #[serde(default)]
    query: Option<String>,
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_encoding: Option<String>,
    #[serde(default)]
    body_omitted: bool,
}

#[derive(Deserialize)]
struct Hello {
    epoch: u64,
    first_seq: u64,
    last_seq: u64,
}

/// How a connection ended.
enum End {
    /// Stop signal: closed cleanly.
    Stopped,
    /// Reconnect now (the start position changed).
    Reconnect,
    /// Lost; reconnect after a backoff.
    Lost(String),
}

struct Relay {
    source: Source,
    target: String,
    print: bool,
    http: HttpClient,
    connector: Connector,
    state_file: PathBuf,
    pos: Position,
    stop: watch::Receiver<bool>,
}

/// Run `hookrelay listen` until a stop signal (Ok) or a fatal error (Err: one-line cause).
pub async fn run(args: ListenArgs) -> Result<(), String> {
    let source = Source::from_args(&args)?;
    let target = args.to.trim().to_string();
    join_target(&target, "", None).map_err(|e| format!("--to: {e}"))?;
    let tls = client::tls_config(args.ca.as_deref(), args.insecure)?;
    let connector = Connector::new(None, tls);
    let dir = crate::config::default_state_dir(args.state_dir.as_deref());
    let state_file = state_path(&dir, &source, &target);
    let pos = match (args.all, args.since, load(&state_file)) {
        (true, _, _) => Position {
            seq: Some(0),
            epoch: None,
        },
        (_, Some(since), _) => Position {
            seq: Some(since),
            epoch: None,
        },
        (_, None, Some(saved)) => Position {
            seq: Some(saved.seq),
            epoch: Some(saved.epoch),
        },
        (_, None, None) => Position {
            seq: None,
            epoch: None,
        },
    };
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        crate::state::stop_signal().await;
        let _ = stop_tx.send(true);
        // A second signal means "now": skip the graceful part.
        crate::state::stop_signal().await;
        std::process::exit(130);
    });
    let mut relay = Relay {
        http: client::build_client(connector.clone()),
        source,
        target,
        print: args.print,
        connector,
        state_file,
        pos,
        stop,
    };
    relay.run().await
}

impl Relay {
    async fn run(&mut self) -> Result<(), String> {
        let mut backoff = BACKOFF_MIN;
        loop {
            if *self.stop.borrow() {
                return Ok(());
            }
            let since = self.pos.seq.unwrap_or(0);
            let mut stop = self.stop.clone();
            let ws = tokio::select! {
                ws = self.connect(since) => ws,
                _ = stop.changed() => return Ok(()),
            };
            let end = match ws {
                Ok(ws) => self.session(ws, since, &mut backoff).await?,
                Err(f) if f.fatal => return Err(f.message),
                Err(f) => End::Lost(f.message),
            };
            match end {
                End::Stopped => return Ok(()),
                End::Reconnect => continue,
                End::Lost(why) => {
                    println!(
                        "disconnected ({why}); reconnecting in {:.1}s",
                        backoff.as_secs_f64()
                    );
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = self.stop.changed() => return Ok(()),
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    async fn connect(&self, since: u64) -> Result<Ws, ConnectFail> {
        let url = self.source.ws_url(since);
        let attempt = async {
            let uri: Uri = url
                .parse()
                .map_err(|_| ConnectFail::new(true, format!("bad server URL {url}")))?;
            let stream = self
                .connector
                .connect(&uri)
                .await
                .map_err(|e| ConnectFail::new(false, e.to_string()))?;
            let mut request = url
                .as_str()
                .into_client_request()
                .map_err(|e| ConnectFail::new(true, e.to_string()))?;
            let bearer =
                HeaderValue::from_str(&format!("Bearer {}", self.source.key)).map_err(|_| {
                    ConnectFail::new(true, "the key is not a valid header value".into())
                })?;
            request.headers_mut().insert(header::AUTHORIZATION, bearer);
            let config = WebSocketConfig::default()
                .max_message_size(Some(MAX_MESSAGE))
                .max_frame_size(Some(MAX_MESSAGE));
            let (ws, _) =
                tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                    .await
                    .map_err(|e| match e {
                        tungstenite::Error::Http(resp) => {
                            let status = resp.status();
                            // Auth and unknown bins won't fix themselves: stop with the cause.
                            let fatal = matches!(status.as_u16(), 401 | 403 | 404);
                            let body = resp
                                .body()
                                .as_ref()
                                .map(|b| String::from_utf8_lossy(b).into_owned())
                                .unwrap_or_default();
                            ConnectFail::new(
                                fatal,
                                format!("server answered {status}: {}", body.trim()),
                            )
                        }
                        other => ConnectFail::new(false, other.to_string()),
                    })?;
            Ok(ws)
        };
        tokio::time::timeout(CONNECT_TIMEOUT, attempt)
            .await
            .unwrap_or_else(|_| Err(ConnectFail::new(false, "connect timed out".into())))
    }

    async fn session(
        &mut self,
        mut ws: Ws,
        since: u64,
        backoff: &mut Duration,
    ) -> Result<End, String> {
        let mut hello_seen = false;
        loop {
            let msg = tokio::select! {
                biased;
                _ = self.stop.changed() => {
                    self.close(ws).await;
                    return Ok(End::Stopped);
                }
                msg = ws.next() => msg,
            };
            let text = match msg {
                None => return Ok(End::Lost("connection closed".into())),
                Some(Err(e)) => return Ok(End::Lost(e.to_string())),
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    return match code {
                        4401 => Err(format!("the server refused the key (close 4401 {reason})")),
                        4404 => Err(format!("the bin was deleted (close 4404 {reason})")),
                        _ => Ok(End::Lost(
                            format!("closed by server: {code} {reason}")
                                .trim()
                                .to_string(),
                        )),
                    };
                }
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(_)) => continue,
            };
            let value: serde_json::Value = match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(_) => continue,
            };
            match value["type"].as_str().unwrap_or("") {
                "hello" => {
                    let Ok(hello) = serde_json::from_value::<Hello>(value) else {
                        return Ok(End::Lost("malformed hello".into()));
                    };
                    hello_seen = true;
                    *backoff = BACKOFF_MIN;
                    let start = self.on_hello(&hello);
                    if start != since {
                        return Ok(End::Reconnect);
                    }
                    println!(
                        "connected to {} bin {} (epoch {}); relaying captures after seq {start} to {}",
                        self.source.server, self.source.bin, hello.epoch, self.target
                    );
                }
                "capture" if hello_seen => {
                    let Ok(capture) =
                        serde_json::from_value::<CaptureJson>(value["capture"].clone())
                    else {
                        println!("skipping a malformed capture frame");
                        continue;
                    };
                    if self.pos.seq.is_some_and(|s| capture.seq <= s) {
                        continue; // already handled
                    }
                    self.relay(&mut ws, capture).await;
                }
                "evicted" => {
                    let up_to = value["up_to_seq"].as_u64().unwrap_or(0);
                    let from = self.pos.seq.unwrap_or(0) + 1;
                    if up_to >= from {
                        println!(
                            "warning: captures {from}..={up_to} were evicted from the server's buffer before they could be relayed"
                        );
                        self.pos.seq = Some(up_to);
                        self.persist();
                    }
                }
                "cleared" => println!("the bin was cleared"),
                "error" => println!("server: {}", value["message"].as_str().unwrap_or("error")),
                _ => {} // delivery, settings, pong
            }
        }
    }

    /// Decide where to start from this hello; returns the `since` we should be connected with.
    fn on_hello(&mut self, hello: &Hello) -> u64 {
        match (self.pos.epoch, self.pos.seq) {
            (Some(epoch), _) if epoch != hello.epoch => {
                println!(
                    "server restarted (new epoch): resuming from first_seq {}",
                    hello.first_seq
                );
                self.pos.seq = Some(hello.first_seq.saturating_sub(1));
            }
            (_, None) => {
                println!(
                    "first run: relaying captures after seq {} (use --all for the buffer)",
                    hello.last_seq
                );
                self.pos.seq = Some(hello.last_seq);
            }
            _ => {}
        }
        self.pos.epoch = Some(hello.epoch);
        self.persist();
        self.pos.seq.unwrap_or(0)
    }

    fn persist(&self) {
        let (Some(seq), Some(epoch)) = (self.pos.seq, self.pos.epoch) else {
            return;
        };
        let saved = Saved {
            server: self.source.server.clone(),
            bin: self.source.bin.clone(),
            target: self.target.clone(),
            epoch,
            seq,
        };
        if let Err(e) = save(&self.state_file, &saved) {
            eprintln!(
                "warning: could not save the position to {}: {e}",
                self.state_file.display()
            );
        }
    }

    /// Deliver one capture, print it, report it, save the position.
    async fn relay(&mut self, ws: &mut Ws, capture: CaptureJson) {
        let seq = capture.seq;
        let prefix = format!("/{}", self.source.bin);
        let suffix = capture
            .path
            .strip_prefix(&prefix)
            .unwrap_or(&capture.path)
            .to_string();
        let shown = match capture.query.as_deref().filter(|q| !q.is_empty()) {
            Some(q) => format!("{}?{q}", if suffix.is_empty() { "/" } else { &suffix }),
            None => {
                if suffix.is_empty() {
                    "/".into()
                } else {
                    suffix.clone()
                }
            }
        };
        if self.print {
            print_capture(&capture, &shown);
        }
        let delivery = match self.send(&capture, &suffix).await {
            Ok(outcome) => {
                match (&outcome.status, &outcome.error) {
                    (Some(status), None) => println!(
                        "→ {} {shown} {status} {:.1}ms",
                        capture.method, outcome.duration_ms
                    ),
                    (_, Some(e)) => println!(
                        "→ {} {shown} error: {e} ({:.1}ms)",
                        capture.method, outcome.duration_ms
                    ),
                    (None, None) => {}
                }
                outcome.into_delivery(self.target.as_str().into(), 1, "listen")
            }
            Err(e) => {
                println!("→ {} {shown} error: {e}", capture.method);
                crate::capture::Delivery {
                    target: self.target.as_str().into(),
                    attempt: 1,
                    at: crate::capture::Timestamp::now(),
                    status: None,
                    duration_ms: 0.0,
                    error: Some(e.into()),
                    response_headers: Vec::new(),
                    response_body: None,
                    via: "listen".into(),
                }
            }
        };
        let mut delivery = delivery;
        crate::capture::bound_delivery(&mut delivery);
        let mut report =
            serde_json::json!({ "type": "delivery_report", "seq": seq, "delivery": delivery });
        if report.to_string().len() > MAX_REPORT {
            // The server takes client messages up to 256 KiB: keep the report well inside.
            delivery.response_headers.truncate(20);
            delivery.response_body = delivery.response_body.map(|b| cut(b, 16 * 1024));
            report =
                serde_json::json!({ "type": "delivery_report", "seq": seq, "delivery": delivery });
        }
        // A lost report is not a lost delivery: the position is saved either way.
        let _ = ws.send(Message::text(report.to_string())).await;
        self.pos.seq = Some(seq);
        self.persist();
    }

    async fn send(&self, capture: &CaptureJson, suffix: &str) -> Result<client::Outcome, String> {
        let body = if capture.body_omitted {
            self.fetch_body(capture.seq).await?
        } else {
            let text = capture.body.clone().unwrap_or_default();
            if capture.body_encoding.as_deref() == Some("base64") {
                Bytes::from(
                    base64::engine::general_purpose::STANDARD
                        .decode(text.as_bytes())
                        .map_err(|e| format!("capture body is not valid base64: {e}"))?,
                )
            } else {
                Bytes::from(text)
            }
        };
        let method = Method::from_bytes(capture.method.as_bytes())
            .map_err(|_| format!("bad method {}", capture.method))?;
        let uri = join_target(&self.target, suffix, capture.query.as_deref())?;
        let headers: Vec<(&[u8], &[u8])> = capture
            .headers
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        let req = build_request(&method, uri, &headers, body, capture.seq)?;
        Ok(client::execute(&self.http, req, TARGET_TIMEOUT).await)
    }

    /// Bodies over 256 KiB don't ride on the WebSocket: fetch them with the key.
    async fn fetch_body(&self, seq: u64) -> Result<Bytes, String> {
        let url = format!(
            "{}/api/bins/{}/requests/{seq}/body",
            self.source.server, self.source.bin
        );
        let req = Request::get(&url)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.source.key))
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let fetch = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| client::describe(&e))?;
            if !resp.status().is_success() {
                return Err(format!("server answered {}", resp.status()));
            }
            Limited::new(resp.into_body(), MAX_FETCHED_BODY)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .map_err(|e| e.to_string())
        };
        tokio::time::timeout(Duration::from_secs(120), fetch)
            .await
            .map_err(|_| "timed out".to_string())
            .and_then(|r| r)
            .map_err(|e| format!("fetching the body of capture {seq}: {e}"))
    }

    async fn close(&self, mut ws: Ws) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "listen stopped".into(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = ws.close(Some(frame)).await;
            // Read until the server's close reply so the handshake completes.
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
        if let Some(seq) = self.pos.seq {
            println!("stopped; last handled seq {seq} saved");
        }
    }
}

fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

fn print_capture(capture: &CaptureJson, shown: &str) {
    let mut out = format!("#{} {} {shown}\n", capture.seq, capture.method);
    for (k, v) in &capture.headers {
        out.push_str(&format!("  {k}: {v}\n"));
    }
    match (&capture.body, capture.body_omitted) {
        (_, true) => out.push_str("  (body over 256 KiB, fetched for delivery)\n"),
        (Some(b), _) if !b.is_empty() => {
            if capture.body_encoding.as_deref() == Some("base64") {
                out.push_str(&format!("  body (base64): {b}\n"));
            } else {
                out.push_str(&format!("  {b}\n"));
            }
        }
        _ => {}
    }
    print!("{out}");
}

/// A connect failure and whether retrying can help.
struct ConnectFail {
    fatal: bool,
    message: String,
}

impl ConnectFail {
    fn new(fatal: bool, message: String) -> ConnectFail {
        ConnectFail { fatal, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspector_urls_parse() {
        let s = parse_inspector_url("https://hooks.example.com/i/abc123#key=SECRETKEY").unwrap();
        assert_eq!(s.server, "https://hooks.example.com");
        assert_eq!(s.bin, "abc123");
        assert_eq!(s.key, "SECRETKEY");
        assert_eq!(
            s.ws_url(5),
            "wss://hooks.example.com/api/bins/abc123/ws?since=5"
        );
        let s = parse_inspector_url("http://127.0.0.1:8080/i/bin-1/#x=1&key=k").unwrap();
        assert_eq!(s.server, "http://127.0.0.1:8080");
        assert_eq!(s.ws_url(0), "ws://127.0.0.1:8080/api/bins/bin-1/ws?since=0");
        assert!(parse_inspector_url("http://h/i/abc").is_err());
        assert!(parse_inspector_url("http://h/x/abc#key=k").is_err());
        assert!(parse_inspector_url("ftp://h/i/abc#key=k").is_err());
    }

    #[test]
    fn state_is_saved_atomically_per_triple() {
        let dir = tempfile::tempdir().unwrap();
        let a = Source {
            server: "http://h:1".into(),
            bin: "b".into(),
            key: "k".into(),
        };
        let p1 = state_path(dir.path(), &a, "http://localhost:3000/x");
        let p2 = state_path(dir.path(), &a, "http://localhost:3000/y");
        assert_ne!(p1, p2);
        let saved = Saved {
            server: a.server.clone(),
            bin: "b".into(),
            target: "t".into(),
            epoch: 7,
            seq: 42,
        };
        save(&p1, &saved).unwrap();
        assert_eq!(load(&p1), Some(saved));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
