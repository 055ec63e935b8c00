//! Live fan-out: the WebSocket session of one viewer (DESIGN §7).
//!
//! Each viewer reads the bin's ring by its own cursor and is woken by the bin's `Notify`
//! ([`Bin::notified`]), so ingest never waits on viewers and a stalled viewer holds at most
//! one batch: when it falls behind the ring, it is told `evicted` and continues from what is
//! left.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::capture::Delivery;
use crate::error::{ApiError, Body};
use crate::state::AppState;
use crate::store::{Bin, BinEvent, Cursor, Item};

/// Captures read per batch before flushing.
const BATCH: usize = 64;
/// Flush the socket after this many buffered bytes within a batch.
const FLUSH_BYTES: usize = 512 * 1024;
/// Bytes read from a viewer's socket at a time (zero-filled by tungstenite on each read).
const READ_BUFFER: usize = 4 * 1024;
/// Time allowed for the first `auth` message.
const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Server pings this often.
const PING_EVERY: Duration = Duration::from_secs(20);
/// A peer silent (or not reading) this long is dropped.
const SILENCE_LIMIT: Duration = Duration::from_secs(60);

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Answer the upgrade request and run the session in its own task.
pub fn upgrade(state: &AppState, bin: Arc<Bin>, mut req: Request<Incoming>) -> Response<Body> {
    let headers = req.headers();
    let is_ws = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|_| is_ws && version_ok)
    else {
        return ApiError::bad_request(
            "not_websocket",
            "this endpoint needs a WebSocket upgrade (Upgrade: websocket, Sec-WebSocket-Version: 13)",
        )
        .into_response();
    };
    let accept = derive_accept_key(key.as_bytes());
    let header_auth = crate::api::authorize(&bin, req.headers()).is_ok();
    let header_sent = req.headers().contains_key(header::AUTHORIZATION);
    let since = req
        .uri()
        .query()
        .map(crate::api::form_pairs)
        .and_then(|pairs| {
            pairs
                .into_iter()
                .find(|(k, _)| k == "since")
                .and_then(|(_, v)| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let state = state.clone();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                // tungstenite zero-fills `read_buffer_size` bytes on every read attempt, and a
                // session polls its socket once per capture it sends: the 128 KiB default
                // cost ~25 µs per viewer per capture (memset). Client messages are small;
                // bigger frames still reserve their full length.
                let config = WebSocketConfig::default()
                    .read_buffer_size(READ_BUFFER)
                    .max_message_size(Some(256 * 1024))
                    .max_frame_size(Some(256 * 1024))
                    .max_write_buffer_size(8 * 1024 * 1024);
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                let auth = match (header_auth, header_sent) {
                    (true, _) => Auth::Header,
                    (false, true) => Auth::Bad,
                    (false, false) => Auth::Pending,
                };
                session(state, bin, ws, auth, since).await;
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    resp
}

enum Auth {
    Header,
    Bad,
    Pending,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    Auth { key: String },
    Ping,
    DeliveryReport { seq: u64, delivery: Delivery },
}

/// Holds a viewer slot; released on drop, whatever ends the session.
struct ViewerSlot(Arc<Bin>);

impl Drop for ViewerSlot {
    fn drop(&mut self) {
        self.0.viewers.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn close(mut ws: Ws, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(Some(frame))).await;
}

/// The close a read error deserves (RFC 6455 §7.4.1), when the peer can still hear it:
/// 1009 for a message over the 256 KiB limit, 1007 for invalid UTF-8 in a text message, 1002
/// for other protocol violations. None when the connection itself is gone.
fn read_error_close(e: &tokio_tungstenite::tungstenite::Error) -> Option<(u16, &'static str)> {
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Capacity(_) => Some((1009, "message too big (limit 256 KiB)")),
        Error::Utf8(_) => Some((1007, "text message is not valid UTF-8")),
        Error::Protocol(_) => Some((1002, "protocol error")),
        _ => None,
    }
}

async fn session(state: AppState, bin: Arc<Bin>, mut ws: Ws, auth: Auth, since: u64) {
    // Nothing is sent and no slot is taken before the key checks out.
    match auth {
        Auth::Header => {}
        Auth::Bad => return close(ws, 4401, "bad key").await,
        Auth::Pending => match tokio::time::timeout(AUTH_TIMEOUT, ws.next()).await {
            Err(_) => return close(ws, 4408, "auth timeout").await,
            Ok(Some(Ok(Message::Text(text)))) => match serde_json::from_str(&text) {
                Ok(ClientMessage::Auth { key }) if bin.authorize(&key) => {}
                _ => return close(ws, 4401, "bad or missing key").await,
            },
            Ok(_) => return close(ws, 4401, "bad or missing key").await,
        },
    }
    let max = state.cfg.max_viewers;
    if bin.viewers.fetch_add(1, Ordering::Relaxed) >= max {
        bin.viewers.fetch_sub(1, Ordering::Relaxed);
        return close(ws, 4429, "too many viewers for this bin").await;
    }
    let _slot = ViewerSlot(bin.clone());
    let _counted = crate::metrics::GaugeGuard::new(&state.metrics.viewers);
    let info = bin.info();
    let hello = serde_json::json!({
        "type": "hello",
        "bin": &*bin.id,
        "epoch": bin.epoch,
        "first_seq": info.first_seq,
        "last_seq": info.last_seq,
        "settings": bin.settings().public_json(),
    });
    if ws.send(Message::text(hello.to_string())).await.is_err() {
        return;
    }
    let mut cursor = Cursor {
        seq: since,
        event: info.next_event,
    };
    let mut shutdown = state.shutdown.clone();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    let mut items = Vec::with_capacity(BATCH);
    loop {
        // Counted and enabled before the read, so a change made after the read wakes this
        // session. Not counted while it sends: a viewer stalled on its socket costs ingest
        // no wake-up.
        let waiting = bin.waiting();
        let changed = bin.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if state
            .store
            .get(&bin.id)
            .is_none_or(|b| !Arc::ptr_eq(&b, &bin))
        {
            return close(ws, 4404, "bin deleted").await;
        }
        items.clear();
        bin.read(&mut cursor, BATCH, &mut items);
        if !items.is_empty() {
            drop(waiting);
            let sent =
                tokio::time::timeout(SILENCE_LIMIT, send_items(&state, &bin, &mut ws, &items))
                    .await;
            if !matches!(sent, Ok(Ok(()))) {
                tracing::debug!(bin = %bin.id, "viewer not reading; dropped");
                return;
            }
            continue; // more may be waiting: read again before sleeping
        }
        tokio::select! {
            () = &mut changed => {}
            () = crate::state::stopping(&mut shutdown) => return close(ws, 1001, "server shutting down").await,
            _ = ping.tick() => {
                if last_heard.elapsed() > SILENCE_LIMIT {
                    return close(ws, 1001, "peer silent").await;
                }
                if ws.send(Message::Ping(Bytes::new())).await.is_err() {
                    return;
                }
            }
            incoming = ws.next() => {
                last_heard = tokio::time::Instant::now();
                match incoming {
                    None => return,
                    Some(Err(e)) => {
                        if let Some((code, reason)) = read_error_close(&e) {
                            close(ws, code, reason).await;
                        }
                        return;
                    }
                    Some(Ok(Message::Close(_))) => return,
                    Some(Ok(Message::Text(text))) => {
                        if let Some(reply) = handle_client(&state, &bin, &text) {
                            if ws.send(Message::text(reply)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Some(Ok(_)) => {} // pongs, pings (answered by tungstenite), binary: ignored
                }
            }
        }
    }
}

/// Act on a client message; returns a reply frame if one is due.
fn handle_client(state: &AppState, bin: &Bin, text: &str) -> Option<String> {
    match serde_json::from_str::<ClientMessage>(text) {
        Ok(ClientMessage::Ping) => Some(r#"{"type":"pong"}"#.into()),
        Ok(ClientMessage::Auth { .. }) => None,
        Ok(ClientMessage::DeliveryReport { seq, mut delivery }) => {
            delivery.via = "listen".into();
            crate::capture::bound_delivery(&mut delivery);
            if !state.record_delivery(bin, seq, delivery) {
                return Some(error_frame(
                    "unknown_seq",
                    "no capture with this seq in the buffer",
                ));
            }
            None
        }
        Err(e) => Some(error_frame("bad_message", &e.to_string())),
    }
}

fn error_frame(code: &str, message: &str) -> String {
    serde_json::json!({ "type": "error", "error": code, "message": message }).to_string()
}

async fn send_items(
    state: &AppState,
    bin: &Bin,
    ws: &mut Ws,
    items: &[Item],
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let mut buffered = 0usize;
    for item in items {
        let frame: Bytes = match item {
            Item::Capture(capture, deliveries) => {
                let (frame, evicted) = state.store.ws_frame(bin, capture);
                if evicted > 0 {
                    state.metrics.evictions.inc_by(evicted);
                }
                buffered += frame.len();
                ws.feed(Message::Text(frame)).await?;
                for d in deliveries {
                    let f = delivery_frame(capture.seq, d);
                    buffered += f.len();
                    ws.feed(text_frame(f)).await?;
                }
                if buffered >= FLUSH_BYTES {
                    ws.flush().await?;
                    buffered = 0;
                }
                continue;
            }
            Item::Evicted(up_to) => serde_json::json!({ "type": "evicted", "up_to_seq": up_to })
                .to_string()
                .into(),
            Item::Event(BinEvent::Delivery { seq, delivery }) => delivery_frame(*seq, delivery),
            Item::Event(BinEvent::Cleared) => Bytes::from_static(br#"{"type":"cleared"}"#),
            Item::Event(BinEvent::Settings(settings)) => serde_json::json!({
                "type": "settings",
                "settings": settings.public_json(),
            })
            .to_string()
            .into(),
        };
        buffered += frame.len();
        ws.feed(text_frame(frame)).await?;
    }
    ws.flush().await
}

fn delivery_frame(seq: u64, delivery: &Delivery) -> Bytes {
    #[derive(serde::Serialize)]
    struct Frame<'a> {
        r#type: &'static str,
        seq: u64,
        delivery: &'a Delivery,
    }
    serde_json::to_vec(&Frame {
        r#type: "delivery",
        seq,
        delivery,
    })
    .expect("delivery JSON cannot fail")
    .into()
}

fn text_frame(bytes: Bytes) -> Message {
    // Our frames are serde_json output: valid UTF-8, checked without copying.
    Message::Text(Utf8Bytes::try_from(bytes).expect("serde_json writes UTF-8"))
}
