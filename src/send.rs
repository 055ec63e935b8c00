//! `hookrelay send`: send one test webhook, the way API platforms' "send test event"
//! buttons do — a sample or custom payload, optionally signed, retried with exponential
//! backoff on connection errors, timeouts, 5xx and 429 — and print what came back.

use std::error::Error as StdError;
use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::signature::{self, Scheme, SignError};

/// Names accepted by `--sample`.
pub const SAMPLES: [&str; 3] = [
    "payment.success",
    "github.push",
    "stripe.payment_intent.succeeded",
];

/// Response bodies are printed up to this many bytes.
const BODY_PRINT_LIMIT: usize = 64 * 1024;

/// A `Retry-After` longer than this is not honoured, so a test send never hangs for long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Send a test webhook (a sample or your own payload, optionally signed) and print the response.
#[derive(clap::Args, Debug, Clone)]
pub struct SendArgs {
    /// URL to send the webhook to (http:// or https://).
    #[arg(value_name = "URL")]
    pub url: String,

    /// Built-in sample payload to send (the default when neither --data nor --data-file is given: payment.success).
    #[arg(long, value_name = "NAME", value_parser = PossibleValuesParser::new(SAMPLES),
          conflicts_with_all = ["data", "data_file"])]
    pub sample: Option<String>,

    /// Request body, sent as-is (normally JSON).
    #[arg(long, value_name = "JSON", conflicts_with = "data_file")]
    pub data: Option<String>,

    /// Read the request body from this file, byte for byte.
    #[arg(long, value_name = "FILE")]
    pub data_file: Option<PathBuf>,

    /// HTTP method.
    #[arg(
        short = 'X',
        long,
        value_name = "METHOD",
        default_value = "POST",
        env = "HOOKRELAY_METHOD"
    )]
    pub method: String,

    /// Extra request header, 'Name: value'; repeatable; replaces a default or sample header of the same name.
    #[arg(short = 'H', long = "header", value_name = "'Name: value'")]
    pub headers: Vec<String>,

    /// Sign the request like this provider does.
    #[arg(long, value_name = "SCHEME", value_parser = scheme_parser(), requires = "secret",
          env = "HOOKRELAY_SIGN")]
    pub sign: Option<Scheme>,

    /// Signing secret for --sign (e.g. whsec_… for stripe and standard).
    #[arg(
        long,
        value_name = "SECRET",
        env = "HOOKRELAY_SECRET",
        hide_env_values = true
    )]
    pub secret: Option<String>,

    /// Header for --sign hmac-sha256 (default X-Signature) or header-secret (default x-rapidapi-webhook-secret).
    #[arg(long, value_name = "NAME", env = "HOOKRELAY_SIGN_HEADER")]
    pub sign_header: Option<String>,

    /// Retries after the first attempt, on connection error, timeout, 5xx or 429 (backoff 1 s, 2 s, 4 s…).
    #[arg(long, value_name = "N", default_value_t = 3, env = "HOOKRELAY_RETRIES")]
    pub retries: u32,

    /// Time limit for one attempt, from connecting to the end of the response (e.g. 10s, 500ms).
    #[arg(long, value_name = "DURATION", default_value = "10s",
          value_parser = humantime::parse_duration, env = "HOOKRELAY_TIMEOUT")]
    pub timeout: Duration,

    /// Extra PEM CA certificate(s) to trust for https:// (e.g. certs/cert.pem of `hookrelay serve`).
    #[arg(long, value_name = "PEM", env = "HOOKRELAY_CA")]
    pub ca: Option<PathBuf>,

    /// First retry delay; later ones double (hidden: lets tests run fast).
    #[arg(long, value_name = "DURATION", default_value = "1s", hide = true,
          value_parser = humantime::parse_duration, env = "HOOKRELAY_RETRY_BASE")]
    pub retry_base: Duration,
}

/// `--sign` values: the scheme names, listed in help and in the error for an unknown one.
fn scheme_parser() -> impl TypedValueParser<Value = Scheme> {
    // Every possible value is a scheme name, so parse cannot fail after clap's check.
    PossibleValuesParser::new(Scheme::ALL.map(|s| s.as_str()))
        .map(|name| Scheme::parse(&name).expect("possible values are scheme names"))
}

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The URL cannot be parsed or is not http/https.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The method is not a valid HTTP method token.
    #[error("invalid method {0:?}")]
    InvalidMethod(String),
    /// A `-H` argument is not `Name: value` with a valid name and value.
    #[error("invalid header {0:?}: expected 'Name: value'")]
    InvalidHeader(String),
    /// `--sample` named no known sample.
    #[error("unknown sample {0:?}; available: payment.success, github.push, stripe.payment_intent.succeeded")]
    UnknownSample(String),
    /// `--data-file` could not be read.
    #[error("cannot read {path}: {source}")]
    DataFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// `--ca` could not be read or parsed.
    #[error("cannot load CA certificates from {path}: {reason}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// The parse or I/O error.
        reason: String,
    },
    /// `--sign` was given without `--secret`.
    #[error("--sign needs --secret")]
    MissingSecret,
    /// The request could not be signed.
    #[error("cannot sign: {0}")]
    Sign(#[from] SignError),
    /// The operating system's random source failed.
    #[error("no randomness available: {0}")]
    Random(getrandom::Error),
    /// The TLS client could not be configured.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    /// Every attempt failed without a response (connection error or timeout).
    #[error("gave up after {attempts} attempt(s): {cause}")]
    Failed {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        cause: String,
    },
    /// The final response was not 2xx.
    #[error("target answered {status} after {attempts} attempt(s)")]
    Status {
        /// The final status.
        status: StatusCode,
        /// Attempts made.
        attempts: u32,
    },
    /// Writing the report to stdout failed.
    #[error("cannot write output: {0}")]
    Output(#[from] io::Error),
}

/// Sends the webhook described by `args` and prints the exchange to stdout; `Err` when
/// the final attempt failed or answered non-2xx.
pub async fn run(args: SendArgs) -> Result<(), SendError> {
    run_with_output(args, &mut io::stdout()).await
}

/// `run`, printing to `out` (tests capture it).
async fn run_with_output<W: Write + Send>(args: SendArgs, out: &mut W) -> Result<(), SendError> {
    let uri = parse_url(&args.url)?;
    let method = Method::from_bytes(args.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| SendError::InvalidMethod(args.method.clone()))?;
    let user_headers = args
        .headers
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let signing = match (&args.sign, &args.secret) {
        (None, _) => None,
        (Some(scheme), Some(secret)) => Some((*scheme, secret.as_str())),
        (Some(_), None) => return Err(SendError::MissingSecret),
    };
    let payload = load_payload(&args).await?;
    // One id for all attempts, as real senders keep the message id across retries.
    let msg_id = format!("msg_{}", random_alnum(27)?);
    let client = build_client(&args)?;

    writeln!(
        out,
        "> {method} {uri} ({} bytes, {}{})",
        payload.body.len(),
        payload.label,
        signing.map_or(String::new(), |(s, _)| format!(", signed: {s}"))
    )?;

    let attempts = args.retries.saturating_add(1);
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        // Re-signed per attempt with a fresh timestamp, so a late retry is not stale.
        let headers = build_headers(&payload, signing, &args, &msg_id, &user_headers)?;
        let mut req = Request::new(Full::new(payload.body.clone()));
        *req.method_mut() = method.clone();
        *req.uri_mut() = uri.clone();
        *req.headers_mut() = headers;

        let attempt_start = Instant::now();
        let result = match tokio::time::timeout(args.timeout, exchange(&client, req)).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "timed out after {}",
                humantime::format_duration(args.timeout)
            )),
        };
        let elapsed = attempt_start.elapsed();
        let last = attempt == attempts;
        let label = format!("attempt {attempt}/{attempts}");
        let (what, retry_after) = match result {
            Ok(resp) if last || !retryable(resp.status) => {
                print_response(out, &resp)?;
                writeln!(
                    out,
                    "{} in {} ({label}, total {})",
                    status_text(resp.status),
                    fmt_duration(elapsed),
                    fmt_duration(started.elapsed())
                )?;
                return if resp.status.is_success() {
                    Ok(())
                } else {
                    Err(SendError::Status {
                        status: resp.status,
                        attempts: attempt,
                    })
                };
            }
            Ok(resp) => (
                format!("{} in {}", status_text(resp.status), fmt_duration(elapsed)),
                retry_after(&resp.headers),
            ),
            Err(cause) if last => {
                writeln!(out, "{label}: {cause}")?;
                return Err(SendError::Failed {
                    attempts: attempt,
                    cause,
                });
            }
            Err(cause) => (cause, None),
        };
        let delay = backoff(args.retry_base, attempt)?.max(retry_after.unwrap_or_default());
        writeln!(out, "{label}: {what}; retrying in {}", fmt_duration(delay))?;
        tokio::time::sleep(delay).await;
    }
}

/// Retried like a real webhook sender: overload and server errors may pass.
fn retryable(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

/// `base * 2^(attempt-1)` plus up to 25 % jitter, so many senders don't retry in lockstep.
fn backoff(base: Duration, attempt: u32) -> Result<Duration, SendError> {
    let exp = base.saturating_mul(1 << attempt.saturating_sub(1).min(16));
    let [r] = random_bytes::<1>()?;
    Ok(exp + exp.mul_f64(f64::from(r) / 255.0 / 4.0))
}

/// A `Retry-After` in seconds (the usual form for 429/503), capped.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// `http://` or `https://` with a host; anything else is refused before connecting.
fn parse_url(url: &str) -> Result<Uri, SendError> {
    let invalid = |reason| SendError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let uri: Uri = url.parse().map_err(|_| invalid("not a valid URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(invalid("only http:// and https:// are supported")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    Ok(uri)
}

/// `Name: value` from `-H`.
fn parse_header(raw: &str) -> Result<(HeaderName, HeaderValue), SendError> {
    let invalid = || SendError::InvalidHeader(raw.to_owned());
    let (name, value) = raw.split_once(':').ok_or_else(invalid)?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| invalid())?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| invalid())?;
    Ok((name, value))
}

/// The body to send and the headers that belong to it.
struct Payload {
    /// Request body, exactly as it will be signed and sent.
    body: Bytes,
    /// Headers a real sender of this sample adds (e.g. `X-GitHub-Event`).
    headers: Vec<(&'static str, String)>,
    /// Where the body came from, for the first output line.
    label: String,
}

/// Resolves `--sample` / `--data` / `--data-file`; no payload flag means `payment.success`.
async fn load_payload(args: &SendArgs) -> Result<Payload, SendError> {
    if let Some(data) = &args.data {
        return Ok(Payload {
            body: Bytes::from(data.clone()),
            headers: Vec::new(),
            label: "--data".to_owned(),
        });
    }
    if let Some(path) = &args.data_file {
        let body = tokio::fs::read(path)
            .await
            .map_err(|source| SendError::DataFile {
                path: path.clone(),
                source,
            })?;
        return Ok(Payload {
            body: Bytes::from(body),
            headers: Vec::new(),
            label: path.display().to_string(),
        });
    }
    sample(args.sample.as_deref().unwrap_or(SAMPLES[0]), unix_now())
}

/// A built-in sample payload, fresh ids and timestamps each call.
fn sample(name: &str, now: i64) -> Result<Payload, SendError> {
    let (body, headers) = match name {
        "payment.success" => (
            // Written out rather than serialized: the field order is part of the sample.
            format!(
                r#"{{"event":"payment.success","orderId":"1312312","amount":738.05,"currency":"USD","timestamp":"{now}"}}"#
            ),
            Vec::new(),
        ),
        "github.push" => github_push()?,
        "stripe.payment_intent.succeeded" => stripe_payment_intent_succeeded(now)?,
        other => return Err(SendError::UnknownSample(other.to_owned())),
    };
    Ok(Payload {
        body: Bytes::from(body),
        headers,
        label: format!("sample {name}"),
    })
}

/// Headers and sample body type shared by the two generated samples.
type SampleParts = (String, Vec<(&'static str, String)>);

/// A trimmed-down but realistic GitHub `push` event.
fn github_push() -> Result<SampleParts, SendError> {
    let before = hex::encode(random_bytes::<20>()?);
    let after = hex::encode(random_bytes::<20>()?);
    let tree = hex::encode(random_bytes::<20>()?);
    let repo = "https://github.com/octocat/hello-world";
    let person = serde_json::json!({
        "name": "The Octocat", "email": "octocat@github.com", "username": "octocat"
    });
    let commit = serde_json::json!({
        "id": after, "tree_id": tree, "distinct": true,
        "message": "Retry webhook deliveries with backoff",
        "timestamp": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        "url": format!("{repo}/commit/{after}"),
        "author": person, "committer": person,
        "added": [], "removed": [], "modified": ["src/send.rs"]
    });
    let body = serde_json::json!({
        "ref": "refs/heads/main", "before": before, "after": after,
        "created": false, "deleted": false, "forced": false, "base_ref": null,
        "compare": format!("{repo}/compare/{}...{}", &before[..12], &after[..12]),
        "commits": [commit], "head_commit": commit,
        "repository": {
            "id": 1296269, "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5",
            "name": "hello-world", "full_name": "octocat/hello-world", "private": false,
            "owner": {"login": "octocat", "id": 583231, "type": "User"},
            "html_url": repo, "default_branch": "main"
        },
        "pusher": {"name": "octocat", "email": "octocat@github.com"},
        "sender": {"login": "octocat", "id": 583231, "type": "User"}
    });
    let headers = vec![
        ("User-Agent", "GitHub-Hookshot/hookrelay".to_owned()),
        ("X-GitHub-Event", "push".to_owned()),
        ("X-GitHub-Delivery", uuid_v4()?),
        ("X-GitHub-Hook-ID", "420133742".to_owned()),
    ];
    Ok((body.to_string(), headers))
}

/// A realistic Stripe `payment_intent.succeeded` event (pretty-printed, as Stripe sends it).
fn stripe_payment_intent_succeeded(now: i64) -> Result<SampleParts, SendError> {
    let pi = format!("pi_3{}", random_alnum(23)?);
    let body = serde_json::json!({
        "id": format!("evt_3{}", random_alnum(23)?),
        "object": "event",
        "api_version": "2024-06-20",
        "created": now,
        "data": {"object": {
            "id": pi, "object": "payment_intent",
            "amount": 73805, "amount_capturable": 0, "amount_received": 73805,
            "capture_method": "automatic_async", "confirmation_method": "automatic",
            "created": now, "currency": "usd", "customer": null,
            "description": "Order 1312312",
            "latest_charge": format!("ch_3{}", random_alnum(23)?),
            "livemode": false, "metadata": {"order_id": "1312312"},
            "payment_method": format!("pm_1{}", random_alnum(23)?),
            "payment_method_types": ["card"], "status": "succeeded"
        }},
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": format!("req_{}", random_alnum(14)?), "idempotency_key": uuid_v4()?},
        "type": "payment_intent.succeeded"
    });
    let body = serde_json::to_string_pretty(&body).expect("a JSON value always serializes");
    let headers = vec![(
        "User-Agent",
        "Stripe/1.0 (+https://stripe.com/docs/webhooks)".to_owned(),
    )];
    Ok((body, headers))
}

/// Headers of one attempt, in order: defaults, sample, signature, then `-H` (which
/// replace any earlier header of the same name).
fn build_headers(
    payload: &Payload,
    signing: Option<(Scheme, &str)>,
    args: &SendArgs,
    msg_id: &str,
    user: &[(HeaderName, HeaderValue)],
) -> Result<HeaderMap, SendError> {
    let mut map = HeaderMap::new();
    map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    map.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("hookrelay/", env!("CARGO_PKG_VERSION"))),
    );
    let mut generated: Vec<(String, String)> = payload
        .headers
        .iter()
        .map(|(n, v)| ((*n).to_owned(), v.clone()))
        .collect();
    if let Some((scheme, secret)) = signing {
        let header = args.sign_header.as_deref();
        let signed = signature::sign(scheme, secret, header, &payload.body, unix_now(), msg_id)?;
        generated.extend(signed);
    }
    for (name, value) in generated {
        // `sign` validated names and values; sample headers are constants.
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| SendError::Sign(SignError::InvalidHeaderName(name.clone())))?;
        let value = HeaderValue::from_str(&value)
            .map_err(|_| SendError::Sign(SignError::InvalidHeaderValue("generated header")))?;
        map.insert(name, value);
    }
    for (name, _) in user {
        map.remove(name);
    }
    for (name, value) in user {
        map.append(name.clone(), value.clone());
    }
    Ok(map)
}

/// What an attempt got back.
struct Response {
    /// Protocol version of the response.
    version: http::Version,
    /// Response status.
    status: StatusCode,
    /// Response headers.
    headers: HeaderMap,
    /// Up to `BODY_PRINT_LIMIT` bytes of the body.
    body: Vec<u8>,
    /// Whether the body went on past the limit.
    truncated: bool,
}

/// One request/response; the body is read only up to the print limit.
async fn exchange(client: &HttpClient, req: Request<Full<Bytes>>) -> Result<Response, String> {
    let resp = client.request(req).await.map_err(|e| error_chain(&e))?;
    let (parts, mut body) = resp.into_parts();
    let mut buf = Vec::new();
    let mut truncated = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading response body: {}", error_chain(&e)))?;
        if let Ok(data) = frame.into_data() {
            let room = BODY_PRINT_LIMIT - buf.len();
            buf.extend_from_slice(&data[..data.len().min(room)]);
            if data.len() > room {
                // Stop reading: a huge or endless body must not stall the sender.
                truncated = true;
                break;
            }
        }
    }
    Ok(Response {
        version: parts.version,
        status: parts.status,
        headers: parts.headers,
        body: buf,
        truncated,
    })
}

/// Status line, headers, blank line, body (lossy UTF-8), like `curl -i`.
fn print_response<W: Write>(out: &mut W, resp: &Response) -> io::Result<()> {
    writeln!(out, "{:?} {}", resp.version, status_text(resp.status))?;
    for (name, value) in &resp.headers {
        writeln!(out, "{name}: {}", String::from_utf8_lossy(value.as_bytes()))?;
    }
    writeln!(out)?;
    if !resp.body.is_empty() {
        let text = String::from_utf8_lossy(&resp.body);
        write!(out, "{text}")?;
        if !text.ends_with('\n') {
            writeln!(out)?;
        }
    }
    if resp.truncated {
        writeln!(out, "[body truncated at {BODY_PRINT_LIMIT} bytes]")?;
    }
    Ok(())
}

/// `200 OK`, or just the code for statuses without a reason phrase.
fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// Milliseconds with one decimal under 10 s, seconds with two above.
fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// An error and its sources, `outer: inner: root`, since hyper's top-level text is vague.
fn error_chain(err: &dyn StdError) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Current unix time in seconds.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `N` bytes from the OS CSPRNG.
fn random_bytes<const N: usize>() -> Result<[u8; N], SendError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(SendError::Random)?;
    Ok(buf)
}

/// `len` random `[0-9A-Za-z]` characters, the shape of Stripe and Svix ids.
fn random_alnum(len: usize) -> Result<String, SendError> {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut buf = vec![0u8; len];
    getrandom::fill(&mut buf).map_err(SendError::Random)?;
    // The modulo bias is irrelevant for test-event ids.
    Ok(buf
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect())
}

/// A random (version 4) UUID, as GitHub uses for `X-GitHub-Delivery`.
fn uuid_v4() -> Result<String, SendError> {
    let mut b = random_bytes::<16>()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

/// The pooled client, plain or TLS by URL scheme.
type HttpClient = Client<Connector, Full<Bytes>>;

/// Builds the client: `HttpConnector` for TCP, rustls (ring, webpki roots) for https.
fn build_client(args: &SendArgs) -> Result<HttpClient, SendError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false); // https URIs reach this connector; TLS is layered on top.
    http.set_nodelay(true);
    http.set_connect_timeout(Some(args.timeout));
    let tls = tls_connector(args.ca.as_deref())?;
    Ok(Client::builder(TokioExecutor::new()).build(Connector { http, tls }))
}

/// rustls client config with the webpki roots plus `--ca`, offering h2 and http/1.1.
fn tls_connector(ca: Option<&Path>) -> Result<TlsConnector, SendError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca {
        let ca_err = |reason: String| SendError::Ca {
            path: path.to_owned(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| ca_err(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ca_err(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_err("no certificate found".to_owned()));
        }
        for cert in certs {
            roots.add(cert)?;
        }
    }
    // An explicit provider, so nothing depends on a process-wide default being installed.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Connects TCP with `HttpConnector`, then does the TLS handshake for `https://`.
#[derive(Clone)]
struct Connector {
    /// Resolves and connects.
    http: HttpConnector,
    /// Wraps the TCP stream for https.
    tls: TlsConnector,
}

/// Errors a connection attempt may end with.
type BoxError = Box<dyn StdError + Send + Sync>;

impl tower_service::Service<Uri> for Connector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let mut http = self.http.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            let https = uri.scheme_str() == Some("https");
            // IPv6 literals come bracketed in URIs; ServerName wants the bare address.
            let host = uri.host().unwrap_or_default();
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let tcp = http.call(uri).await?;
            if !https {
                return Ok(Stream::Plain(tcp));
            }
            let name = ServerName::try_from(host)?;
            let stream = tls.connect(name, tcp.into_inner()).await?;
            Ok(Stream::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

/// A plain or TLS connection, as the pooled client sees it.
enum Stream {
    /// `http://`.
    Plain(TokioIo<TcpStream>),
    /// `https://`, boxed because rustls' connection state is large.
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Stream::Plain(s) => s.connected(),
            Stream::Tls(s) => {
                let (tcp, tls) = s.inner().get_ref();
                // Tells the pool to speak HTTP/2 when the server chose it via ALPN.
                if tls.alpn_protocol() == Some(b"h2") {
                    tcp.connected().negotiated_h2()
                } else {
                    tcp.connected()
                }
            }
        }
    }
}

/// Forwards a method to whichever stream is inside (both are `Unpin`).
macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self.get_mut() {
            Stream::Plain($s) => $call,
            Stream::Tls($s) => $call,
        }
    };
}

impl hyper::rt::Read for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl hyper::rt::Write for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Real sockets: a small hyper server on 127.0.0.1:0 records what arrives and
    //! answers from a script.

    use super::*;
    use crate::signature::VerifyConfig;
    use clap::{CommandFactory, Parser};
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::server::conn::auto;
    use std::sync::Mutex;
    use tokio::net::TcpListener;

    /// `SendArgs` as a top-level parser, as `hookrelay send` flattens it.
    #[derive(Parser)]
    struct Cli {
        /// The arguments under test.
        #[command(flatten)]
        args: SendArgs,
    }

    fn parse(argv: &[&str]) -> Result<SendArgs, clap::Error> {
        let argv = ["send"].iter().chain(argv).chain(&["--retry-base", "10ms"]);
        Cli::try_parse_from(argv).map(|cli| cli.args)
    }

    fn args(argv: &[&str]) -> SendArgs {
        parse(argv).unwrap()
    }

    /// One scripted answer.
    #[derive(Clone)]
    struct Reply {
        /// Status code to answer with.
        status: u16,
        /// Wait before answering (for timeout tests).
        delay: Duration,
        /// Response body.
        body: Bytes,
    }

    fn reply(status: u16) -> Reply {
        Reply {
            status,
            delay: Duration::ZERO,
            body: Bytes::from_static(b"{\"ok\":true}"),
        }
    }

    /// A request as the target saw it.
    struct Seen {
        /// Request method.
        method: Method,
        /// Protocol version (HTTP/2 over TLS with ALPN).
        version: http::Version,
        /// Path and query.
        uri: Uri,
        /// Request headers.
        headers: HeaderMap,
        /// Request body.
        body: Bytes,
    }

    /// A running target server.
    struct Target {
        /// Where to send.
        url: String,
        /// Every request received, in order.
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl Target {
        fn count(&self) -> usize {
            self.seen.lock().unwrap().len()
        }

        /// The n-th request's headers, verified with `signature::verify` at the real clock.
        fn verify(
            &self,
            n: usize,
            scheme: Scheme,
            secret: &str,
            header: Option<&str>,
        ) -> signature::Verdict {
            let seen = self.seen.lock().unwrap();
            let req = &seen[n];
            let headers: Vec<(&[u8], &[u8])> = req
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes()))
                .collect();
            let cfg = VerifyConfig {
                scheme,
                secret,
                header,
                tolerance_s: 300,
            };
            signature::verify(&cfg, &headers, &req.body, unix_now())
        }
    }

    /// Starts a target that answers request n with `script[n]` (the last entry repeats).
    async fn target(script: Vec<Reply>, tls: Option<Arc<rustls::ServerConfig>>) -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(script);
        let state = seen.clone();
        let scheme = if tls.is_some() {
            "https://localhost"
        } else {
            "http://127.0.0.1"
        };
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (seen, script, tls) = (state.clone(), script.clone(), tls.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<Incoming>| {
                        let (seen, script) = (seen.clone(), script.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await?.to_bytes();
                            let n = {
                                let mut seen = seen.lock().unwrap();
                                seen.push(Seen {
                                    method: parts.method,
                                    version: parts.version,
                                    uri: parts.uri,
                                    headers: parts.headers,
                                    body,
                                });
                                seen.len() - 1
                            };
                            let r = script[n.min(script.len() - 1)].clone();
                            tokio::time::sleep(r.delay).await;
                            let mut resp = http::Response::new(Full::new(r.body));
                            *resp.status_mut() = StatusCode::from_u16(r.status).unwrap();
                            resp.headers_mut()
                                .insert("x-target", HeaderValue::from_static("yes"));
                            Ok::<_, hyper::Error>(resp)
                        }
                    });
                    let server = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = server.serve_connection(TokioIo::new(tcp), svc).await;
                        }
                        Some(cfg) => {
                            if let Ok(s) = tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await {
                                let _ = server.serve_connection(TokioIo::new(s), svc).await;
                            }
                        }
                    }
                });
            }
        });
        Target {
            url: format!("{scheme}:{port}/hook/path?x=1"),
            seen,
        }
    }

    async fn send(argv: &[&str]) -> (Result<(), SendError>, String) {
        let mut out = Vec::new();
        let result = run_with_output(args(argv), &mut out).await;
        (result, String::from_utf8(out).unwrap())
    }

    #[tokio::test]
    async fn default_sample_is_payment_success_with_json_headers() {
        let t = target(vec![reply(200)], None).await;
        let (result, out) = send(&[&t.url]).await;
        result.unwrap();
        let seen = t.seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        let req = &seen[0];
        assert_eq!(req.method, Method::POST);
        assert_eq!(req.uri.to_string(), "/hook/path?x=1");
        assert_eq!(req.headers[CONTENT_TYPE], "application/json");
        assert!(req.headers[USER_AGENT]
            .to_str()
            .unwrap()
            .starts_with("hookrelay/"));
        let body = std::str::from_utf8(&req.body).unwrap();
        let prefix = r#"{"event":"payment.success","orderId":"1312312","amount":738.05,"currency":"USD","timestamp":""#;
        assert!(body.starts_with(prefix), "{body}");
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        let ts: i64 = json["timestamp"].as_str().unwrap().parse().unwrap();
        assert!((unix_now() - ts).abs() < 60);
        assert_eq!(json["amount"], 738.05);
        // Status line, response headers, body and timing are printed.
        assert!(out.contains("HTTP/1.1 200 OK\n"), "{out}");
        assert!(out.contains("x-target: yes\n"), "{out}");
        assert!(out.contains("{\"ok\":true}\n"), "{out}");
        assert!(out.contains("200 OK in "), "{out}");
        assert!(out.contains("(attempt 1/4, total "), "{out}");
    }

    #[tokio::test]
    async fn github_push_sample_sends_event_headers() {
        let t = target(vec![reply(200)], None).await;
        send(&[&t.url, "--sample", "github.push"]).await.0.unwrap();
        let seen = t.seen.lock().unwrap();
        let req = &seen[0];
        assert_eq!(req.headers["x-github-event"], "push");
        let delivery = req.headers["x-github-delivery"].to_str().unwrap();
        let groups: Vec<usize> = delivery.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{delivery}");
        assert!(delivery.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        let json: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(json["ref"], "refs/heads/main");
        assert_eq!(json["head_commit"]["id"], json["after"]);
        assert_eq!(json["repository"]["full_name"], "octocat/hello-world");
    }

    #[tokio::test]
    async fn stripe_sample_is_a_payment_intent_event() {
        let t = target(vec![reply(200)], None).await;
        send(&[&t.url, "--sample", "stripe.payment_intent.succeeded"])
            .await
            .0
            .unwrap();
        let seen = t.seen.lock().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
        assert_eq!(json["type"], "payment_intent.succeeded");
        assert_eq!(json["object"], "event");
        assert!(json["id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(json["data"]["object"]["object"], "payment_intent");
        assert_eq!(json["data"]["object"]["status"], "succeeded");
        assert!((unix_now() - json["created"].as_i64().unwrap()).abs() < 60);
    }

    #[tokio::test]
    async fn signed_sends_verify_for_every_scheme() {
        let standard = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        for scheme in Scheme::ALL {
            let secret = if scheme == Scheme::Standard {
                standard
            } else {
                "s3cret"
            };
            for header in [None, Some("X-Custom-Sig")] {
                let custom = matches!(scheme, Scheme::HmacSha256 | Scheme::HeaderSecret);
                if header.is_some() && !custom {
                    continue;
                }
                let t = target(vec![reply(200)], None).await;
                let mut argv = vec![
                    t.url.as_str(),
                    "--sign",
                    scheme.as_str(),
                    "--secret",
                    secret,
                ];
                argv.extend(header.iter().flat_map(|h| ["--sign-header", h]));
                let (result, out) = send(&argv).await;
                result.unwrap();
                assert!(out.contains(&format!("signed: {scheme}")), "{out}");
                let verdict = t.verify(0, scheme, secret, header);
                assert!(verdict.valid, "{scheme} {header:?}: {verdict:?}");
                // And a different secret must not verify it.
                let wrong = t.verify(0, scheme, "whsec_b3RoZXIgc2VjcmV0", header);
                assert!(!wrong.valid, "{scheme}");
            }
        }
    }

    #[tokio::test]
    async fn retries_500_twice_then_succeeds_on_the_third_attempt() {
        let t = target(vec![reply(500), reply(500), reply(200)], None).await;
        let (result, out) = send(&[&t.url, "--sign", "stripe", "--secret", "whsec_x"]).await;
        result.unwrap();
        assert_eq!(t.count(), 3);
        assert!(
            out.contains("attempt 1/4: 500 Internal Server Error in "),
            "{out}"
        );
        assert!(
            out.contains("attempt 2/4: 500 Internal Server Error in "),
            "{out}"
        );
        assert_eq!(out.matches("retrying in").count(), 2, "{out}");
        assert!(out.contains("200 OK in "), "{out}");
        assert!(out.contains("(attempt 3/4"), "{out}");
        // Every attempt is signed afresh and verifies.
        for n in 0..3 {
            assert!(t.verify(n, Scheme::Stripe, "whsec_x", None).valid);
        }
    }

    #[tokio::test]
    async fn gives_up_after_retries_and_reports_final_status() {
        let t = target(vec![reply(503)], None).await;
        let (result, out) = send(&[&t.url, "--retries", "2"]).await;
        match result {
            Err(SendError::Status { status, attempts }) => {
                assert_eq!((status.as_u16(), attempts), (503, 3));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(t.count(), 3);
        assert!(out.contains("HTTP/1.1 503 Service Unavailable"), "{out}");
    }

    #[tokio::test]
    async fn retries_429_but_not_other_4xx() {
        let t = target(vec![reply(429), reply(200)], None).await;
        send(&[&t.url]).await.0.unwrap();
        assert_eq!(t.count(), 2);

        let t = target(vec![reply(404)], None).await;
        let (result, _) = send(&[&t.url]).await;
        assert!(
            matches!(result, Err(SendError::Status { attempts: 1, .. })),
            "{result:?}"
        );
        assert_eq!(t.count(), 1);
    }

    #[tokio::test]
    async fn connection_refused_is_retried_then_fails() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = format!("http://127.0.0.1:{port}/");
        let (result, out) = send(&[&url, "--retries", "2"]).await;
        match result {
            Err(SendError::Failed { attempts, cause }) => {
                assert_eq!(attempts, 3);
                assert!(cause.to_lowercase().contains("refused"), "{cause}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(out.matches("retrying in").count(), 2, "{out}");
        assert!(out.contains("attempt 3/3: "), "{out}");
    }

    #[tokio::test]
    async fn slow_target_times_out_and_is_retried() {
        let slow = Reply {
            delay: Duration::from_secs(5),
            ..reply(200)
        };
        let t = target(vec![slow], None).await;
        let started = Instant::now();
        let (result, out) = send(&[&t.url, "--timeout", "200ms", "--retries", "1"]).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        match result {
            Err(SendError::Failed { attempts: 2, cause }) => {
                assert!(cause.contains("timed out after 200ms"), "{cause}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(t.count(), 2);
        assert!(
            out.contains("attempt 1/2: timed out after 200ms; retrying in"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn custom_data_method_and_headers() {
        let t = target(vec![reply(201)], None).await;
        let argv = [
            t.url.as_str(),
            "--data",
            "hello",
            "-X",
            "put",
            "-H",
            "Content-Type: text/plain",
            "-H",
            "X-A: 1",
            "--header",
            "x-a:2",
        ];
        send(&argv).await.0.unwrap();
        let seen = t.seen.lock().unwrap();
        let req = &seen[0];
        assert_eq!(req.method, Method::PUT);
        assert_eq!(&req.body[..], b"hello");
        let ct: Vec<_> = req.headers.get_all(CONTENT_TYPE).iter().collect();
        assert_eq!(ct, ["text/plain"]);
        let xa: Vec<_> = req.headers.get_all("x-a").iter().collect();
        assert_eq!(xa, ["1", "2"]);
    }

    #[tokio::test]
    async fn data_file_is_sent_byte_for_byte() {
        let path =
            std::env::temp_dir().join(format!("hookrelay-send-{}.bin", random_alnum(12).unwrap()));
        let bytes: Vec<u8> = (0..=255u8).chain(b"\r\n\0end".iter().copied()).collect();
        std::fs::write(&path, &bytes).unwrap();
        let t = target(vec![reply(200)], None).await;
        let (result, _) = send(&[&t.url, "--data-file", path.to_str().unwrap()]).await;
        std::fs::remove_file(&path).unwrap();
        result.unwrap();
        assert_eq!(&t.seen.lock().unwrap()[0].body[..], &bytes[..]);

        let (result, _) = send(&[&t.url, "--data-file", "/nonexistent/hookrelay"]).await;
        assert!(
            matches!(result, Err(SendError::DataFile { .. })),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn long_response_body_is_truncated() {
        let big = Reply {
            body: Bytes::from(vec![b'a'; 200 * 1024]),
            ..reply(200)
        };
        let t = target(vec![big], None).await;
        let (result, out) = send(&[&t.url]).await;
        result.unwrap();
        assert!(
            out.contains("[body truncated at 65536 bytes]"),
            "{}",
            out.len()
        );
        assert!(out.len() < BODY_PRINT_LIMIT + 2048);
        assert!(out.matches('a').count() >= BODY_PRINT_LIMIT);
    }

    #[tokio::test]
    async fn bad_inputs_fail_before_sending() {
        for (argv, check) in [
            (vec!["ftp://x/"], "only http:// and https://"),
            (vec!["not a url"], "not a valid URL"),
            (
                vec!["http://127.0.0.1:1/", "-H", "NoColon"],
                "invalid header",
            ),
            (vec!["http://127.0.0.1:1/", "-X", "B@D"], "invalid method"),
            (
                vec![
                    "http://127.0.0.1:1/",
                    "--sign",
                    "standard",
                    "--secret",
                    "whsec_!!",
                ],
                "invalid standard secret",
            ),
        ] {
            let (result, out) = send(&argv).await;
            let err = result.unwrap_err().to_string();
            assert!(err.contains(check), "{err}");
            assert!(!err.contains("whsec_!!"), "secret leaked: {err}");
            assert!(!out.contains("attempt"), "{out}");
        }
    }

    #[tokio::test]
    async fn run_prints_to_stdout() {
        let t = target(vec![reply(200)], None).await;
        run(args(&[&t.url])).await.unwrap();
        assert_eq!(t.count(), 1);
    }

    /// A self-signed cert for localhost, as PEM path for `--ca` and a server config.
    fn tls_fixture() -> (PathBuf, Arc<rustls::ServerConfig>) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let path =
            std::env::temp_dir().join(format!("hookrelay-ca-{}.pem", random_alnum(12).unwrap()));
        std::fs::write(&path, ck.cert.pem()).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .unwrap();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        (path, Arc::new(cfg))
    }

    #[tokio::test]
    async fn https_with_ca_uses_h2_and_unknown_ca_fails() {
        let (ca, cfg) = tls_fixture();
        let t = target(vec![reply(200)], Some(cfg)).await;
        let (result, out) = send(&[
            &t.url,
            "--ca",
            ca.to_str().unwrap(),
            "--sign",
            "github",
            "--secret",
            "s",
        ])
        .await;
        result.unwrap();
        assert!(out.contains("HTTP/2.0 200 OK"), "{out}");
        assert_eq!(t.seen.lock().unwrap()[0].version, http::Version::HTTP_2);
        assert!(t.verify(0, Scheme::Github, "s", None).valid);

        // Without --ca the self-signed certificate is not trusted.
        let (result, _) = send(&[&t.url, "--retries", "0"]).await;
        std::fs::remove_file(&ca).unwrap();
        match result {
            Err(SendError::Failed { attempts: 1, cause }) => {
                assert!(cause.to_lowercase().contains("certificate"), "{cause}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(t.count(), 1);
    }

    #[test]
    fn cli_defaults_and_errors() {
        let a = args(&["http://x/"]);
        assert_eq!(a.method, "POST");
        assert_eq!(a.retries, 3);
        assert_eq!(a.timeout, Duration::from_secs(10));
        assert_eq!(a.sample, None);
        assert_eq!(a.sign, None);

        let a = args(&[
            "http://x/",
            "--sign",
            "hmac-sha256",
            "--secret",
            "k",
            "--timeout",
            "500ms",
        ]);
        assert_eq!(a.sign, Some(Scheme::HmacSha256));
        assert_eq!(a.timeout, Duration::from_millis(500));

        let err = parse(&["http://x/", "--sample", "nope"])
            .unwrap_err()
            .to_string();
        for name in SAMPLES {
            assert!(err.contains(name), "{err}");
        }
        let err = parse(&["http://x/", "--sign", "nope", "--secret", "s"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("hmac-sha256") && err.contains("header-secret"),
            "{err}"
        );
        let err = parse(&["http://x/", "--sign", "github"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let err = parse(&["http://x/", "--sample", "github.push", "--data", "{}"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);

        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("stripe.payment_intent.succeeded"), "{help}");
        assert!(help.contains("HOOKRELAY_RETRIES"), "{help}");
        assert!(!help.contains("retry-base"), "{help}");
    }

    #[test]
    fn backoff_doubles_with_bounded_jitter() {
        let base = Duration::from_secs(1);
        for (attempt, secs) in [(1, 1), (2, 2), (3, 4), (4, 8)] {
            let d = backoff(base, attempt).unwrap();
            let min = Duration::from_secs(secs);
            assert!(d >= min && d <= min.mul_f64(1.25), "{attempt}: {d:?}");
        }
        // Huge attempt counts saturate instead of overflowing.
        assert!(backoff(base, u32::MAX).is_ok());
    }
}
