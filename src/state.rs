//! Shared server state: a cheap `Clone` handle over `Arc<Shared>`.

use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use tokio::sync::{watch, Semaphore};

use crate::config::ServeArgs;
use crate::store::Store;

/// Everything request handlers share.
pub struct Shared {
    /// Parsed configuration.
    pub cfg: ServeArgs,
    /// Bins and captures.
    pub store: Store,
    /// Bytes of request bodies being received (permits = bytes), sized to --max-memory.
    pub body_budget: Arc<Semaphore>,
    /// Flips to true when shutdown starts (delayed responses end, WebSockets close 1001).
    pub shutdown: watch::Receiver<bool>,
    /// When the server started.
    pub started: Instant,
    /// Bin creations per IP in the current minute.
    pub create_limiter: WindowLimiter<IpAddr>,
    /// Inbound requests per IP per second (`--rate-limit-ip`).
    pub ip_limiter: Option<WindowLimiter<IpAddr>>,
    /// Inbound requests per bin per second (`--rate-limit-bin`).
    pub bin_limiter: Option<WindowLimiter<Arc<str>>>,
    /// Prometheus counters.
    pub metrics: crate::metrics::Metrics,
    /// Our own listening addresses (never forward targets).
    pub own_addrs: Vec<SocketAddr>,
    /// Outbound client, SSRF policy and forward queues.
    pub deliver: crate::deliver::Deliverer,
}

/// Handle to the shared state.
#[derive(Clone)]
pub struct AppState(pub Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The host a client addressed: `Host` (HTTP/1) or the URI authority (`:authority`, HTTP/2).
pub fn request_host<'a>(headers: &'a http::HeaderMap, uri: &'a http::Uri) -> Option<&'a str> {
    headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
}

impl AppState {
    /// Store a delivery attempt on its capture, stream it, and count it by outcome.
    pub fn record_delivery(
        &self,
        bin: &crate::store::Bin,
        seq: u64,
        delivery: crate::capture::Delivery,
    ) -> bool {
        let outcome = match (delivery.status, delivery.error.as_deref()) {
            (_, Some("queue_full")) => "queue_full",
            (Some(s), _) if (200..300).contains(&s) => "ok",
            (Some(_), _) => "http_error",
            (None, _) => "error",
        };
        self.metrics.delivery(outcome);
        self.store.add_delivery(bin, seq, delivery)
    }

    /// Base URL for links: --public-url, else the request's Host, else the listen address.
    pub fn base_url(&self, host: Option<&str>, tls: bool) -> String {
        if let Some(url) = &self.cfg.public_url {
            return url.trim_end_matches('/').to_string();
        }
        let scheme = if tls { "https" } else { "http" };
        match host {
            Some(h) if !h.is_empty() => format!("{scheme}://{h}"),
            _ => format!("{scheme}://{}", self.cfg.listen),
        }
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM: how `serve` and `listen` are told to stop cleanly.
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Resolves once shutdown has started.
pub async fn stopping(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, so callers' futures stay `Send`.
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Most distinct keys a window limiter tracks; beyond it, new keys are refused (bounded memory).
const LIMITER_KEYS: usize = 100_000;

/// A fixed-window counter per key (e.g. bin creations per IP per minute).
pub struct WindowLimiter<K: Hash + Eq> {
    window_s: u64,
    limit: u32,
    started: Instant,
    counts: DashMap<K, (u64, u32)>,
}

impl<K: Hash + Eq + Clone> WindowLimiter<K> {
    /// `limit` events per `window_s` seconds per key.
    pub fn new(limit: u32, window_s: u64) -> Self {
        WindowLimiter {
            window_s,
            limit,
            started: Instant::now(),
            counts: DashMap::new(),
        }
    }

    /// Count one event; Err(seconds until the window resets) when over the limit.
    pub fn check(&self, key: &K) -> Result<(), u64> {
        let now = self.started.elapsed().as_secs();
        let window = now / self.window_s;
        let retry = self.window_s - now % self.window_s;
        if self.counts.len() >= LIMITER_KEYS && !self.counts.contains_key(key) {
            self.purge();
            if self.counts.len() >= LIMITER_KEYS {
                return Err(retry);
            }
        }
        let mut entry = self.counts.entry(key.clone()).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        if entry.1 >= self.limit {
            return Err(retry);
        }
        entry.1 += 1;
        Ok(())
    }

    /// Forget keys from past windows.
    pub fn purge(&self) {
        let window = self.started.elapsed().as_secs() / self.window_s;
        self.counts.retain(|_, (w, _)| *w == window);
    }
}
