//! Listeners, connection tasks, graceful shutdown.

pub mod linger;
pub mod router;
pub mod tap;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::config::ServeArgs;
use crate::error::Error;
use crate::ids;
use crate::settings::Settings;
use crate::state::{AppState, Shared, WindowLimiter};
use crate::store::{MemoryStore, Store};
use linger::LingerStream;
use tap::HeadTap;

/// Listen backlog asked of the kernel (capped by `net.core.somaxconn`). tokio's default
/// (1024) overflows when thousands of senders connect at once; the overflow ends in SYN
/// cookies, and those that fail are reset before we ever see them.
const LISTEN_BACKLOG: u32 = 4096;

/// Bind a listening socket the way `hookrelay serve` does (address reuse, deep backlog).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// In-flight requests get this long to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Largest request head (hyper answers 431 beyond it).
const MAX_HEAD: usize = 64 * 1024;

/// Per-connection facts handed to every request.
#[derive(Clone)]
pub struct ConnInfo {
    /// Peer address.
    pub remote: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// Raw head recorder for exact header order and case.
    pub tap: HeadTap,
}

/// The id and key of the bin made ready at start.
#[derive(Clone, Debug)]
pub struct ReadyBin {
    /// Bin id.
    pub id: String,
    /// Bin key (secret).
    pub key: String,
}

/// A bound, ready-to-run server.
pub struct Server {
    state: AppState,
    listener: TcpListener,
    tls: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    ready: ReadyBin,
    tls_fingerprint: Option<(String, bool)>,
    shutdown_tx: watch::Sender<bool>,
}

impl Server {
    /// Build the state, the ready bin and TLS around already-bound listeners.
    /// Async because a Redis store is connected (and must answer) before serving.
    pub async fn new(
        cfg: ServeArgs,
        listener: TcpListener,
        tls_listener: Option<TcpListener>,
    ) -> Result<Server, Error> {
        if cfg.store != "memory"
            && !cfg.store.starts_with("redis://")
            && !cfg.store.starts_with("rediss://")
        {
            return Err(Error::Config(format!(
                "unsupported --store `{}` (use `memory` or `redis://host:port/db`)",
                cfg.store
            )));
        }
        let mut own_addrs = vec![listener
            .local_addr()
            .map_err(|e| Error::io("listener address", e))?];
        let tls = match tls_listener {
            Some(l) => {
                own_addrs.push(
                    l.local_addr()
                        .map_err(|e| Error::io("tls listener address", e))?,
                );
                let host = cfg
                    .public_url
                    .as_deref()
                    .and_then(|u| u.parse::<http::Uri>().ok())
                    .and_then(|u| u.host().map(str::to_string));
                let setup = tls::load_or_generate(&cfg.tls_cert, &cfg.tls_key, host.as_deref())?;
                Some((l, setup))
            }
            None => None,
        };
        let ready = ready_bin(&cfg)?;
        let budget = usize::try_from(cfg.max_memory)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        let body_budget = Arc::new(Semaphore::new(budget));
        let mem = MemoryStore::new(cfg.max_bins, cfg.max_bin_bytes, cfg.max_memory)
            .sharing_budget_with(body_budget.clone(), budget);
        let store = if cfg.store == "memory" {
            Store::memory(mem)
        } else {
            Store::redis(&cfg.store, mem, cfg.bin_ttl.as_secs())
                .await
                .map_err(|e| Error::Store(e.to_string()))?
        };
        store
            .ensure_ready(
                &ready.id,
                ids::hash_key(&ready.key),
                Settings::with_capacity(cfg.bin_capacity),
            )
            .await
            .map_err(Error::Store)?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let deliver = crate::deliver::Deliverer::new(&cfg, &own_addrs)?;
        let shared = Shared {
            deliver,
            create_limiter: WindowLimiter::new(cfg.bin_create_limit, 60),
            ip_limiter: cfg.rate_limit_ip.map(|n| WindowLimiter::new(n, 1)),
            bin_limiter: cfg.rate_limit_bin.map(|n| WindowLimiter::new(n, 1)),
            metrics: crate::metrics::Metrics::new(),
            body_budget,
            store,
            shutdown: shutdown_rx,
            started: Instant::now(),
            own_addrs,
            cfg,
        };
        let tls_fingerprint = tls
            .as_ref()
            .map(|(_, s)| (s.fingerprint.clone(), s.generated_fingerprint.is_some()));
        let shared = Arc::new(shared);
        // Redis: forwards are enqueued by whichever instance holds the bin's forward lease,
        // as captures enter its mirror (not at ingest): see store::redis.
        let weak = Arc::downgrade(&shared);
        shared.store.set_forward_hook(Box::new(move |bin, seq| {
            if let Some(shared) = weak.upgrade() {
                let state = AppState(shared);
                crate::deliver::forward::enqueue(&state, bin, seq, &bin.settings());
            }
        }));
        Ok(Server {
            state: AppState(shared),
            listener,
            tls: tls.map(|(l, s)| (l, s.acceptor)),
            ready,
            tls_fingerprint,
            shutdown_tx,
        })
    }

    /// The plain listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.state.own_addrs[0]
    }

    /// The TLS listener's address, if any.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|_| self.state.own_addrs[1])
    }

    /// The ready bin.
    pub fn ready_bin(&self) -> &ReadyBin {
        &self.ready
    }

    /// Shared state (tests and embedding).
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// The start banner printed to stdout (contains the key: never log it).
    pub fn banner(&self) -> String {
        let base = match &self.state.cfg.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.local_addr()),
        };
        let mut out = format!(
            "hookrelay {} listening on http://{}",
            env!("CARGO_PKG_VERSION"),
            self.local_addr()
        );
        if let Some(addr) = self.tls_addr() {
            out.push_str(&format!("  (tls: https://{addr})"));
        }
        out.push('\n');
        if let Some((fp, generated)) = &self.tls_fingerprint {
            let what = if *generated {
                "generated self-signed certificate"
            } else {
                "certificate"
            };
            out.push_str(&format!("  {what} SHA-256 {fp}\n"));
        }
        out.push_str(&format!("  send webhooks to  {base}/{}\n", self.ready.id));
        out.push_str(&format!(
            "  inspect at        {base}/i/{}#key={}\n",
            self.ready.id, self.ready.key
        ));
        out
    }

    /// Serve until `shutdown` resolves, then drain in-flight requests (≤ 10 s).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let Server {
            state,
            listener,
            tls,
            shutdown_tx,
            ..
        } = self;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(state.cfg.header_timeout)
            .max_buf_size(MAX_HEAD)
            // A sender that shuts down its write side after the request (`nc -N`, some
            // HTTP/1.0 clients) still gets its answer, and its capture: without this hyper
            // drops the in-flight request on read EOF (EOF on an idle connection still closes).
            .half_close(true)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(32)
            .max_header_list_size(MAX_HEAD as u32)
            .keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(20));
        let graceful = GracefulShutdown::new();
        let connections = Arc::new(Semaphore::new(state.cfg.max_connections));
        let linger_slots = Arc::new(Semaphore::new(linger::LINGER_SLOTS));
        let purge = tokio::spawn(purge_loop(state.clone()));
        let (tls_listener, acceptor) = match tls {
            Some((l, a)) => (Some(l), Some(a)),
            None => (None, None),
        };
        tokio::pin!(shutdown);
        loop {
            let (stream, remote, is_tls) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((s, a)) => (s, a, false),
                    Err(e) => { accept_error(e).await; continue; }
                },
                accepted = accept_opt(tls_listener.as_ref()) => match accepted {
                    Ok((s, a)) => (s, a, true),
                    Err(e) => { accept_error(e).await; continue; }
                },
                () = &mut shutdown => break,
            };
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                tracing::debug!(%remote, "connection refused: --max-connections reached");
                state.metrics.reject("max_connections");
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let stream = LingerStream::new(stream, linger_slots.clone());
            let state = state.clone();
            let builder = builder.clone();
            let watcher = graceful.watcher();
            let acceptor = acceptor.clone().filter(|_| is_tls);
            tokio::spawn(async move {
                let _permit = permit;
                let _open = crate::metrics::GaugeGuard::new(&state.metrics.connections);
                let tap = HeadTap::new();
                match acceptor {
                    None => {
                        let conn = ConnInfo {
                            remote,
                            tls: false,
                            tap: tap.clone(),
                        };
                        serve(builder, watcher, state, conn, tap.wrap(stream)).await;
                    }
                    Some(acceptor) => {
                        let timeout = state.cfg.header_timeout;
                        let tls_stream =
                            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::debug!(%remote, error = %e, "tls handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%remote, "tls handshake timed out");
                                    return;
                                }
                            };
                        if tls_stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                            tap.disable();
                        }
                        let conn = ConnInfo {
                            remote,
                            tls: true,
                            tap: tap.clone(),
                        };
                        serve(builder, watcher, state, conn, tap.wrap(tls_stream)).await;
                    }
                }
            });
        }
        drop(listener);
        drop(tls_listener);
        let _ = shutdown_tx.send(true);
        purge.abort();
        state.store.close();
        tokio::select! {
            () = graceful.shutdown() => tracing::debug!("all connections closed"),
            () = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("shutdown grace period over; closing remaining connections"),
        }
        Ok(())
    }
}

async fn accept_opt(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Accept errors (EMFILE and the like) are transient: log and back off briefly.
async fn accept_error(e: std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

async fn serve<I>(
    builder: auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    state: AppState,
    conn: ConnInfo,
    io: I,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let remote = conn.remote;
    let service = service_fn(move |req| {
        let state = state.clone();
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(router::handle(state, conn, req).await) }
    });
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(%remote, error = %e, "connection ended with an error");
    }
}

/// Expire idle bins and old limiter windows once a minute.
async fn purge_loop(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        let removed = state
            .store
            .purge_expired(state.cfg.bin_ttl, Duration::from_secs(3600));
        if removed > 0 {
            tracing::info!(removed, "expired idle bins");
        }
        state.create_limiter.purge();
        state.deliver.forwards.purge();
        if let Some(l) = &state.ip_limiter {
            l.purge();
        }
        if let Some(l) = &state.bin_limiter {
            l.purge();
        }
    }
}

/// The ready bin: the flags, else the saved one, else a new one saved for next time.
fn ready_bin(cfg: &ServeArgs) -> Result<ReadyBin, Error> {
    if let (Some(id), Some(key)) = (&cfg.bin_id, &cfg.bin_key) {
        return Ok(ReadyBin {
            id: id.clone(),
            key: key.clone(),
        });
    }
    let dir = cfg.state_dir();
    let path = dir.join("ready-bin.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        #[derive(serde::Deserialize)]
        struct Saved {
            id: String,
            key: String,
        }
        match serde_json::from_str::<Saved>(&text) {
            Ok(s)
                if ids::validate_bin_id(&s.id).is_ok() && ids::validate_bin_key(&s.key).is_ok() =>
            {
                return Ok(ReadyBin {
                    id: s.id,
                    key: s.key,
                })
            }
            _ => tracing::warn!(path = %path.display(), "ignoring an unreadable saved bin"),
        }
    }
    let ready = ReadyBin {
        id: ids::random_token(),
        key: ids::random_token(),
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
    let json = serde_json::json!({ "id": ready.id, "key": ready.key }).to_string();
    tls::write_private(&path, json.as_bytes())?;
    Ok(ready)
}
