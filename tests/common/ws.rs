//! WebSocket client helpers (tokio-tungstenite) for stream tests.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client WebSocket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Open `/api/bins/<bin>/ws?since=…` on `addr`, with a Bearer header when `key` is given.
pub async fn connect(addr: std::net::SocketAddr, bin: &str, key: Option<&str>, since: u64) -> Ws {
    let url = format!("ws://{addr}/api/bins/{bin}/ws?since={since}");
    let mut req = url.into_client_request().unwrap();
    if let Some(k) = key {
        req.headers_mut()
            .insert("Authorization", format!("Bearer {k}").parse().unwrap());
    }
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("ws connects");
    ws
}

/// The next JSON text frame (panics on close or after 10 s).
pub async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("frame within 10 s")
            .expect("stream open")
            .expect("frame ok");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => continue,
        }
    }
}
