//! The outbound HTTP client: hyper-util's pooled legacy `Client` over a connector that resolves
//! names itself, applies the SSRF policy to every resolved address, and speaks TLS with rustls.
//!
//! The legacy client never follows redirects, which is what we want: a 3xx is just recorded.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::ssrf::{self, Policy};
use crate::capture::{Delivery, Timestamp};

/// Response bytes kept for the delivery record; reading stops there.
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;
/// Response headers kept for the delivery record.
const MAX_RESPONSE_HEADERS: usize = 100;
/// Time allowed for one TCP connect (the per-attempt timeout bounds it further).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The pooled client used for every outbound delivery.
pub type HttpClient = Client<Connector, Full<Bytes>>;

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The SSRF policy refused an address.
    #[error("forward_refused: {0}")]
    Refused(#[from] ssrf::Refusal),
    /// The URL has no usable host or scheme.
    #[error("invalid target: {0}")]
    Invalid(String),
    /// Name resolution failed.
    #[error("dns: {0}")]
    Dns(io::Error),
    /// TCP connect failed.
    #[error("connect: {0}")]
    Io(io::Error),
    /// TLS handshake failed.
    #[error("tls: {0}")]
    Tls(io::Error),
}

/// A plain or TLS connection.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// Connects to http/https URLs; with a policy, only to addresses it allows.
#[derive(Clone)]
pub struct Connector {
    policy: Option<Arc<Policy>>,
    tls: TlsConnector,
}

impl Connector {
    /// A connector; `policy: None` means no SSRF limit (the `listen` client).
    pub fn new(policy: Option<Arc<Policy>>, tls: Arc<ClientConfig>) -> Connector {
        Connector {
            policy,
            tls: TlsConnector::from(tls),
        }
    }

    /// Resolve, check every address, connect to the first allowed one that answers.
    pub async fn connect(&self, uri: &Uri) -> Result<Stream, ConnectError> {
        let https = match uri.scheme_str() {
            Some("https") | Some("wss") => true,
            Some("http") | Some("ws") => false,
            other => {
                return Err(ConnectError::Invalid(format!(
                    "unsupported scheme {}",
                    other.unwrap_or("(none)")
                )))
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| ConnectError::Invalid("no host".into()))?;
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let addrs = ssrf::resolve(host, port).await.map_err(ConnectError::Dns)?;
        if let Some(policy) = &self.policy {
            // Checked here, on the addresses we are about to connect to: no rebinding window.
            policy.check_all(host, &addrs)?;
        }
        let mut last = None;
        let mut tcp = None;
        for addr in &addrs {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    tcp = Some(s);
                    break;
                }
                Ok(Err(e)) => last = Some(e),
                Err(_) => last = Some(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
            }
        }
        let tcp = tcp.ok_or_else(|| {
            ConnectError::Io(last.unwrap_or_else(|| io::Error::other("no address to connect to")))
        })?;
        let _ = tcp.set_nodelay(true);
        if !https {
            return Ok(Stream::Plain(tcp));
        }
        let name = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(name.to_string())
            .map_err(|e| ConnectError::Invalid(format!("TLS server name {name}: {e}")))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(ConnectError::Tls)?;
        Ok(Stream::Tls(Box::new(tls)))
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let me = self.clone();
        Box::pin(async move { me.connect(&uri).await.map(TokioIo::new) })
    }
}

/// Build the pooled client. Header names go out Title-Cased: hyper keeps the original case
/// only through a private extension (`HeaderCaseMap` is `pub(crate)`), so we can't replay it.
pub fn build_client(connector: Connector) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(4)
        .http1_title_case_headers(true)
        .http1_max_buf_size(256 * 1024)
        .build(connector)
}

/// A rustls client config (ring provider): webpki roots plus the certificates in `ca`,
/// or — only when asked explicitly — no certificate check at all.
pub fn tls_config(ca: Option<&Path>, insecure: bool) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = ca {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("{}: no certificate found", path.display()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `--insecure`: accepts any server certificate (signatures are still checked for form).
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The result of one attempt.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// When the attempt started.
    pub at: SystemTime,
    /// Response status, if one arrived.
    pub status: Option<u16>,
    /// Wall time of the attempt.
    pub duration_ms: f64,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// The SSRF refusal, when the connector refused the target.
    pub refused: Option<String>,
    /// Response headers (bounded).
    pub response_headers: Vec<(String, String)>,
    /// Response body (first 64 KiB, lossy UTF-8).
    pub response_body: Option<String>,
}

impl Outcome {
    /// Whether forward should try again (connect error, timeout, 5xx, 429; never a refusal).
    pub fn retryable(&self) -> bool {
        if self.refused.is_some() {
            return false;
        }
        match self.status {
            Some(s) => s >= 500 || s == 429,
            None => self.error.is_some(),
        }
    }

    /// A 2xx arrived and the body was read without error.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// The delivery record of this attempt.
    pub fn into_delivery(self, target: Arc<str>, attempt: u32, via: &'static str) -> Delivery {
        Delivery {
            target,
            attempt,
            at: Timestamp(self.at),
            status: self.status,
            duration_ms: (self.duration_ms * 10.0).round() / 10.0,
            error: self.error.map(Into::into),
            response_headers: self.response_headers,
            response_body: self.response_body,
            via: via.into(),
        }
    }
}

/// Send one request with a whole-attempt timeout (connect, head and bounded body read).
pub async fn execute(client: &HttpClient, req: Request<Full<Bytes>>, timeout: Duration) -> Outcome {
    let at = SystemTime::now();
    let start = Instant::now();
    let mut outcome = Outcome {
        at,
        status: None,
        duration_ms: 0.0,
        error: None,
        refused: None,
        response_headers: Vec::new(),
        response_body: None,
    };
    let attempt = async {
        let resp = match client.request(req).await {
            Ok(r) => r,
            Err(e) => {
                outcome.refused = refusal_in(&e);
                outcome.error = Some(describe(&e));
                return;
            }
        };
        let (parts, mut body) = resp.into_parts();
        outcome.status = Some(parts.status.as_u16());
        outcome.response_headers = parts
            .headers
            .iter()
            .take(MAX_RESPONSE_HEADERS)
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut buf = BytesMut::new();
        while buf.len() < MAX_RESPONSE_BODY {
            match body.frame().await {
                None => break,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let take = data.len().min(MAX_RESPONSE_BODY - buf.len());
                        buf.extend_from_slice(&data[..take]);
                    }
                }
                Some(Err(e)) => {
                    outcome.error = Some(format!("reading response body: {}", describe(&e)));
                    break;
                }
            }
        }
        // Dropping the rest of a long body closes that connection rather than draining it.
        outcome.response_body = Some(lossy_bounded(&buf));
    };
    if tokio::time::timeout(timeout, attempt).await.is_err() {
        outcome.error = Some(format!("timeout after {} ms", timeout.as_millis()));
    }
    outcome.duration_ms = start.elapsed().as_secs_f64() * 1000.0;
    outcome
}

fn lossy_bounded(bytes: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    if text.len() > MAX_RESPONSE_BODY {
        let mut end = MAX_RESPONSE_BODY;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The SSRF refusal inside an error chain, if that is what failed.
pub fn refusal_in(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(ConnectError::Refused(r)) = e.downcast_ref::<ConnectError>() {
            return Some(r.0.clone());
        }
        cur = e.source();
    }
    None
}

/// One line naming the innermost useful cause (hyper's top-level messages are generic).
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut parts: Vec<String> = Vec::new();
    while let Some(e) = cur {
        if let Some(c) = e.downcast_ref::<ConnectError>() {
            parts.push(c.to_string());
            break;
        }
        parts.push(e.to_string());
        cur = e.source();
    }
    parts.dedup();
    parts.join(": ")
}
