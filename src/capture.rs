//! The capture record: one compact allocation per request, its JSON built lazily once.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use http::{Method, Version};
use serde::ser::{SerializeSeq, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};

use crate::signature::Verdict;

/// A WebSocket text payload (UTF-8 checked once, shared by reference count).
pub type WsText = tokio_tungstenite::tungstenite::Utf8Bytes;

/// Bodies larger than this are sent to WebSocket viewers as `body_omitted`.
pub const WS_BODY_LIMIT: usize = 256 * 1024;
/// Deliveries kept per capture (oldest dropped first).
pub const MAX_DELIVERIES: usize = 50;

/// Lengths of one header's name and value. Headers sit back to back in the capture's data
/// block from `headers_start`, so lengths alone locate them (8 bytes a header, not 16).
#[derive(Clone, Copy, Debug)]
struct Span {
    name_len: u32,
    value_len: u32,
}

/// The `(name, value)` pairs laid out back to back in `data` from `start`.
fn header_pairs<'a>(
    data: &'a [u8],
    start: u32,
    spans: &'a [Span],
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
    let mut at = start as usize;
    spans.iter().map(move |s| {
        let name = &data[at..at + s.name_len as usize];
        at += s.name_len as usize;
        let value = &data[at..at + s.value_len as usize];
        at += s.value_len as usize;
        (name, value)
    })
}

/// Request facts known before the body is read.
#[derive(Clone, Debug)]
pub struct RequestMeta {
    /// Bin id.
    pub bin: Arc<str>,
    /// When the request head arrived.
    pub received_at: SystemTime,
    /// Request method.
    pub method: Method,
    /// HTTP version.
    pub version: Version,
    /// Whether it came over TLS.
    pub tls: bool,
    /// Peer (or first X-Forwarded-For hop with --trust-proxy).
    pub remote_addr: SocketAddr,
    /// Whether headers are in exact arrival order and case.
    pub headers_exact: bool,
    /// The Content-Length the sender declared, if any.
    pub declared_length: Option<u64>,
}

/// A capture being assembled: path, query, headers and body in one growing buffer.
pub struct CaptureBuilder {
    buf: BytesMut,
    path: (u32, u32),
    query: Option<(u32, u32)>,
    headers_start: u32,
    headers: Vec<Span>,
    body_start: u32,
}

impl CaptureBuilder {
    /// Start a capture; `body_hint` sizes the buffer so a declared body needs no regrowth.
    /// `headers` is called twice: once to size the buffer, once to fill it.
    pub fn new<'a, F, I>(path: &str, query: Option<&str>, headers: F, body_hint: usize) -> Self
    where
        F: Fn() -> I,
        I: Iterator<Item = (&'a [u8], &'a [u8])>,
    {
        let (count, head_bytes) = headers().fold((0usize, 0usize), |(n, b), (k, v)| {
            (n + 1, b + k.len() + v.len())
        });
        let total = path.len() + query.map_or(0, str::len) + head_bytes + body_hint;
        let mut buf = BytesMut::with_capacity(total);
        let put = |buf: &mut BytesMut, bytes: &[u8]| {
            let start = buf.len() as u32;
            buf.put_slice(bytes);
            (start, bytes.len() as u32)
        };
        let path = put(&mut buf, path.as_bytes());
        let query = query.map(|q| put(&mut buf, q.as_bytes()));
        let headers_start = buf.len() as u32;
        let mut spans = Vec::with_capacity(count);
        for (name, value) in headers() {
            buf.put_slice(name);
            buf.put_slice(value);
            spans.push(Span {
                name_len: name.len() as u32,
                value_len: value.len() as u32,
            });
        }
        let body_start = buf.len() as u32;
        CaptureBuilder {
            buf,
            path,
            query,
            headers_start,
            headers: spans,
            body_start,
        }
    }

    /// Make room for `n` more body bytes in one step (a declared length).
    pub fn reserve_body(&mut self, n: usize) {
        self.buf.reserve(n);
    }

    /// Append body bytes.
    pub fn push_body(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Body bytes so far.
    pub fn body(&self) -> &[u8] {
        &self.buf[self.body_start as usize..]
    }

    /// Body length so far.
    pub fn body_len(&self) -> usize {
        self.buf.len() - self.body_start as usize
    }

    /// Headers in stored order.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        header_pairs(&self.buf, self.headers_start, &self.headers)
    }

    /// Freeze into the immutable record (compacting a chunked body's slack).
    pub fn finish(self, meta: RequestMeta, extra: CaptureExtra, seq: u64) -> Capture {
        let data = if self.buf.capacity() > self.buf.len() + self.buf.len() / 8 + 64 {
            Bytes::copy_from_slice(&self.buf)
        } else {
            self.buf.freeze()
        };
        Capture {
            meta,
            seq,
            data,
            path: self.path,
            query: self.query,
            headers_start: self.headers_start,
            headers: self.headers.into_boxed_slice(),
            body_start: self.body_start,
            truncated: extra.truncated,
            signature: extra.signature.map(Box::new),
            response_status: extra.response_status,
            deliveries: Mutex::new(Deliveries::default()),
            ws_frame: OnceLock::new(),
        }
    }
}

/// Facts decided after the body was read.
#[derive(Clone, Debug, Default)]
pub struct CaptureExtra {
    /// Body cut at --max-body.
    pub truncated: bool,
    /// Signature verdict when the bin verifies.
    pub signature: Option<Verdict>,
    /// Status answered to the sender.
    pub response_status: u16,
}

fn slice(buf: &[u8], (start, len): (u32, u32)) -> &[u8] {
    &buf[start as usize..(start + len) as usize]
}

/// One delivery attempt (replay, forward or a `listen` client's report).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// Target URL (shared: a dead forward target records one `queue_full` per capture).
    pub target: Arc<str>,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// When the attempt started (RFC 3339 in JSON).
    pub at: Timestamp,
    /// Response status, if a response arrived.
    #[serde(default)]
    pub status: Option<u16>,
    /// How long the attempt took.
    #[serde(default)]
    pub duration_ms: f64,
    /// What went wrong (connect error, timeout, queue_full, …). `Cow`: the common
    /// errors are fixed strings, and a dead target records one per capture.
    #[serde(default)]
    pub error: Option<Cow<'static, str>>,
    /// Response headers (truncated).
    #[serde(default)]
    pub response_headers: Vec<(String, String)>,
    /// Response body (truncated to 64 KiB).
    #[serde(default)]
    pub response_body: Option<String>,
    /// `forward`, `replay` or `listen`.
    pub via: Cow<'static, str>,
}

impl Delivery {
    /// Approximate bytes held, for the memory budget.
    pub fn cost(&self) -> usize {
        std::mem::size_of::<Delivery>()
            + self.target.len()
            + self.error.as_ref().map_or(0, |e| e.len())
            + self
                .response_headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 48)
                .sum::<usize>()
            + self.response_body.as_ref().map_or(0, String::len)
            + self.via.len()
    }
}

/// A point in time, written as RFC 3339 with nanoseconds (see [`rfc3339`]) only when
/// serialized: a dead forward target stamps one `queue_full` record per capture, and
/// formatting each (plus its `String`) was a tenth of that path's cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    /// The current time.
    pub fn now() -> Timestamp {
        Timestamp(SystemTime::now())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&rfc3339(self.0))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    /// RFC 3339 in UTC (`Z`, or no zone), with or without fractional seconds, from 1970 on.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&text)
            .map(Timestamp)
            .map_err(|e| serde::de::Error::custom(format_args!("not an RFC 3339 UTC time: {e}")))
    }
}

/// Cap the sizes of a delivery record that came from a client (`delivery_report`).
pub fn bound_delivery(d: &mut Delivery) {
    fn cut(s: &mut String, max: usize) {
        if s.len() > max {
            let mut end = max;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
        }
    }
    if d.target.len() > 2048 {
        let mut target = d.target.to_string();
        cut(&mut target, 2048);
        d.target = target.into();
    }
    if d.via.len() > 16 {
        cut(d.via.to_mut(), 16);
    }
    if let Some(e) = d.error.as_mut().filter(|e| e.len() > 1024) {
        cut(e.to_mut(), 1024);
    }
    if let Some(b) = &mut d.response_body {
        cut(b, 64 * 1024);
    }
    d.response_headers.truncate(100);
    for (k, v) in &mut d.response_headers {
        cut(k, 256);
        cut(v, 4096);
    }
}

/// A capture's delivery records, each with the bin event number it was announced under.
#[derive(Default)]
struct Deliveries {
    list: Vec<(u64, Arc<Delivery>)>,
    /// Sum of their `Delivery::cost`.
    cost: usize,
}

/// A stored capture. Everything but `deliveries` is immutable after insertion.
pub struct Capture {
    meta: RequestMeta,
    /// Per-bin sequence number, from 1, never reused.
    pub seq: u64,
    data: Bytes,
    path: (u32, u32),
    query: Option<(u32, u32)>,
    headers_start: u32,
    headers: Box<[Span]>,
    body_start: u32,
    truncated: bool,
    /// Boxed: most bins don't verify, and the verdict is 32 bytes per capture.
    signature: Option<Box<Verdict>>,
    response_status: u16,
    /// Deliveries with the bin event number they were announced under (see live.rs).
    deliveries: Mutex<Deliveries>,
    /// Kept as validated UTF-8: every viewer's text message shares it without re-checking.
    ws_frame: OnceLock<WsText>,
}

impl Capture {
    /// Bin id.
    pub fn bin(&self) -> &str {
        &self.meta.bin
    }
    /// Request metadata.
    pub fn meta(&self) -> &RequestMeta {
        &self.meta
    }
    /// Request method.
    pub fn method(&self) -> &Method {
        &self.meta.method
    }
    /// Path as received (percent-encoded), including the `/<id>` prefix.
    pub fn path(&self) -> &str {
        std::str::from_utf8(slice(&self.data, self.path)).unwrap_or("")
    }
    /// Path after `/<id>` (starts with `/` or is empty).
    pub fn path_suffix(&self) -> &str {
        let path = self.path();
        path.get(1 + self.meta.bin.len()..).unwrap_or("")
    }
    /// Query string without `?`, if the request had one.
    pub fn query(&self) -> Option<&str> {
        self.query
            .map(|q| std::str::from_utf8(slice(&self.data, q)).unwrap_or(""))
    }
    /// Headers in stored order (arrival order when `headers_exact`).
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        header_pairs(&self.data, self.headers_start, &self.headers)
    }
    /// First header value with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers()
            .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }
    /// Raw body bytes (shares the capture's allocation).
    pub fn body(&self) -> Bytes {
        self.data.slice(self.body_start as usize..)
    }
    /// Body length stored.
    pub fn body_size(&self) -> usize {
        self.data.len() - self.body_start as usize
    }
    /// Whether the body was cut at --max-body.
    pub fn truncated(&self) -> bool {
        self.truncated
    }
    /// Signature verdict.
    pub fn signature(&self) -> Option<&Verdict> {
        self.signature.as_deref()
    }
    /// Status answered to the sender.
    pub fn response_status(&self) -> u16 {
        self.response_status
    }
    /// Bytes this capture holds, for the memory budget.
    pub fn cost(&self) -> usize {
        std::mem::size_of::<Capture>()
            + self.data.len()
            + self.headers.len() * std::mem::size_of::<Span>()
            + self.ws_frame.get().map_or(0, |f| f.len())
    }

    /// Attach a delivery, announced under bin event number `event_no`; returns the bytes added.
    pub fn push_delivery(&self, event_no: u64, delivery: Arc<Delivery>) -> isize {
        let mut held = self.deliveries.lock().unwrap_or_else(|e| e.into_inner());
        let mut delta = delivery.cost() as isize;
        held.list.push((event_no, delivery));
        if held.list.len() > MAX_DELIVERIES {
            let (_, old) = held.list.remove(0);
            delta -= old.cost() as isize;
        }
        held.cost = held.cost.saturating_add_signed(delta);
        delta
    }
    /// Deliveries announced before event number `before` (all with `u64::MAX`).
    pub fn deliveries_before(&self, before: u64) -> Vec<Arc<Delivery>> {
        let held = self.deliveries.lock().unwrap_or_else(|e| e.into_inner());
        held.list
            .iter()
            .filter(|(no, _)| *no < before)
            .map(|(_, d)| d.clone())
            .collect()
    }
    /// Bytes held by deliveries (kept as a sum: eviction asks for it, and reading each
    /// record would touch memory long out of cache).
    pub fn deliveries_cost(&self) -> usize {
        self.deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cost
    }

    /// Serialize the full record (REST), deliveries included.
    pub fn to_json(&self) -> Vec<u8> {
        let deliveries = self.deliveries_before(u64::MAX);
        let mut out = Vec::with_capacity(self.data.len() * 2 + 512);
        let view = CaptureView {
            capture: self,
            omit_body: false,
            deliveries: Some(&deliveries),
        };
        serde_json::to_writer(&mut out, &view).expect("capture JSON serialization cannot fail");
        out
    }

    /// Serialize the `{"type":"capture","capture":{…}}` WebSocket frame (uncached).
    pub fn build_ws_frame(&self) -> WsText {
        #[derive(Serialize)]
        struct Frame<'a> {
            r#type: &'static str,
            capture: CaptureView<'a>,
        }
        let frame = Frame {
            r#type: "capture",
            capture: CaptureView {
                capture: self,
                omit_body: self.body_size() > WS_BODY_LIMIT,
                deliveries: None,
            },
        };
        let json = serde_json::to_vec(&frame).expect("capture JSON cannot fail");
        WsText::try_from(Bytes::from(json)).expect("serde_json writes UTF-8")
    }

    /// The cached frame, once the store has kept one (see `MemoryStore::ws_frame`).
    pub fn cached_ws_frame(&self) -> Option<WsText> {
        self.ws_frame.get().cloned()
    }

    /// Keep `frame` as this capture's cached frame; false if one is already kept. The
    /// store calls this under the bin's ring lock, where it also charges the frame's bytes.
    pub(crate) fn keep_ws_frame(&self, frame: WsText) -> bool {
        self.ws_frame.set(frame).is_ok()
    }

    /// Whether any header, method, path or body contains `needle` (ASCII case-insensitive).
    pub fn matches(&self, needle: &str) -> bool {
        let needle = needle.as_bytes();
        contains_ci(self.meta.method.as_str().as_bytes(), needle)
            || contains_ci(slice(&self.data, self.path), needle)
            || self
                .query()
                .is_some_and(|q| contains_ci(q.as_bytes(), needle))
            || self
                .headers()
                .any(|(k, v)| contains_ci(k, needle) || contains_ci(v, needle))
            || contains_ci(&self.data[self.body_start as usize..], needle)
    }
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Text of a possibly non-UTF-8 header byte string.
pub fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// `HTTP/1.1`-style name of a version.
pub fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}

/// RFC 3339 UTC timestamp with nanoseconds.
pub fn rfc3339(t: SystemTime) -> String {
    /// "2026-11-23T10:15:30" (no zone): the length of every formatted second up to year 9999.
    const SECOND_LEN: usize = 19;
    /// 9999-12-31T23:59:59.
    const LAST_SECOND: u64 = 253_402_300_799;
    thread_local! {
        // The formatted second of the last call: humantime's formatter cost ~740 instructions
        // a call, and a dead forward target stamps one `queue_full` record per capture, mostly
        // within the same second.
        static SECOND: std::cell::Cell<(u64, [u8; SECOND_LEN])> =
            const { std::cell::Cell::new((u64::MAX, [0; SECOND_LEN])) };
    }
    // A clock before 1970 reads as the epoch, one past 9999 as its last second (humantime
    // panics outside those years).
    let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (secs, nanos) = (since.as_secs().min(LAST_SECOND), since.subsec_nanos());
    let second = match SECOND.get() {
        (cached_secs, cached) if cached_secs == secs => cached,
        _ => {
            let whole = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            let formatted = humantime::format_rfc3339_seconds(whole).to_string();
            let fresh: [u8; SECOND_LEN] = formatted.as_bytes()[..SECOND_LEN]
                .try_into()
                .expect("a slice of SECOND_LEN bytes");
            SECOND.set((secs, fresh));
            fresh
        }
    };
    let mut text = [0u8; SECOND_LEN + 11];
    text[..SECOND_LEN].copy_from_slice(&second);
    text[SECOND_LEN] = b'.';
    let mut n = nanos;
    for d in text[SECOND_LEN + 1..SECOND_LEN + 10].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    text[SECOND_LEN + 10] = b'Z';
    String::from_utf8(text.to_vec()).expect("ASCII")
}

struct HeaderList<'a>(&'a Capture);

impl Serialize for HeaderList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.headers.len()))?;
        for (k, v) in self.0.headers() {
            seq.serialize_element(&(lossy(k), lossy(v)))?;
        }
        seq.end()
    }
}

struct ResponseView(u16);

impl Serialize for ResponseView {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("response", 1)?;
        st.serialize_field("status", &self.0)?;
        st.end()
    }
}

/// The JSON shape of DESIGN §5, serialized from borrowed data.
struct CaptureView<'a> {
    capture: &'a Capture,
    omit_body: bool,
    deliveries: Option<&'a [Arc<Delivery>]>,
}

impl Serialize for CaptureView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.capture;
        let m = &c.meta;
        let mut st = s.serialize_struct("capture", 20)?;
        st.serialize_field("bin", &*m.bin)?;
        st.serialize_field("seq", &c.seq)?;
        st.serialize_field("received_at", &rfc3339(m.received_at))?;
        st.serialize_field("method", m.method.as_str())?;
        st.serialize_field("path", c.path())?;
        st.serialize_field("query", &c.query())?;
        st.serialize_field("http_version", version_str(m.version))?;
        st.serialize_field("scheme", if m.tls { "https" } else { "http" })?;
        st.serialize_field("remote_addr", &m.remote_addr.to_string())?;
        st.serialize_field("headers", &HeaderList(c))?;
        let body = &c.data[c.body_start as usize..];
        let utf8 = std::str::from_utf8(body).ok();
        let encoding = if utf8.is_some() { "utf8" } else { "base64" };
        if self.omit_body {
            st.serialize_field("body", &None::<&str>)?;
            st.serialize_field("body_omitted", &true)?;
        } else {
            let text: Cow<str> = match utf8 {
                Some(text) => Cow::Borrowed(text),
                None => Cow::Owned(base64::engine::general_purpose::STANDARD.encode(body)),
            };
            st.serialize_field("body", &text)?;
        }
        st.serialize_field("body_encoding", encoding)?;
        st.serialize_field("body_size", &c.body_size())?;
        st.serialize_field("truncated", &c.truncated)?;
        st.serialize_field("headers_exact", &m.headers_exact)?;
        st.serialize_field("declared_length", &m.declared_length)?;
        st.serialize_field("signature", &c.signature)?;
        st.serialize_field("response", &ResponseView(c.response_status))?;
        match self.deliveries {
            Some(list) => st.serialize_field("deliveries", list)?,
            None => st.serialize_field("deliveries", &[] as &[Delivery])?,
        }
        st.end()
    }
}

/// Version byte of [`CaptureBuilder::encode`]'s format (bump on any layout change).
const ENCODING_VERSION: u8 = 1;

impl CaptureBuilder {
    /// The compact, seq-less encoding a shared store keeps (the seq is the stream entry id):
    /// length-prefixed fields, body last, so decoding is one pass and one allocation.
    pub fn encode(&self, meta: &RequestMeta, extra: &CaptureExtra) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.buf.len() + 8 * self.headers.len() + 128);
        out.push(ENCODING_VERSION);
        let at = meta
            .received_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        out.extend_from_slice(&at.as_secs().to_be_bytes());
        out.extend_from_slice(&at.subsec_nanos().to_be_bytes());
        put_field(&mut out, meta.method.as_str().as_bytes());
        out.push(match meta.version {
            Version::HTTP_09 => 0,
            Version::HTTP_10 => 1,
            Version::HTTP_2 => 3,
            Version::HTTP_3 => 4,
            _ => 2,
        });
        out.push(
            u8::from(meta.tls) | u8::from(meta.headers_exact) << 1 | u8::from(extra.truncated) << 2,
        );
        put_field(&mut out, meta.remote_addr.to_string().as_bytes());
        match meta.declared_length {
            Some(n) => {
                out.push(1);
                out.extend_from_slice(&n.to_be_bytes());
            }
            None => out.push(0),
        }
        out.extend_from_slice(&extra.response_status.to_be_bytes());
        match &extra.signature {
            Some(v) => {
                out.push(1 | u8::from(v.valid) << 1);
                let scheme = serde_json::to_string(&v.scheme).expect("scheme serializes");
                put_field(&mut out, scheme.as_bytes());
                put_field(&mut out, v.detail.as_bytes());
            }
            None => out.push(0),
        }
        put_field(&mut out, slice(&self.buf, self.path));
        match self.query {
            Some(q) => {
                out.push(1);
                put_field(&mut out, slice(&self.buf, q));
            }
            None => out.push(0),
        }
        out.extend_from_slice(&(self.headers.len() as u32).to_be_bytes());
        for (name, value) in self.headers() {
            put_field(&mut out, name);
            put_field(&mut out, value);
        }
        out.extend_from_slice(self.body());
        out
    }
}

impl Capture {
    /// Rebuild a capture of bin `bin` from [`CaptureBuilder::encode`] output; `None` if malformed.
    pub fn decode(bin: Arc<str>, seq: u64, bytes: &[u8]) -> Option<Capture> {
        let mut r = Reader(bytes);
        if r.u8()? != ENCODING_VERSION {
            return None;
        }
        let secs = r.u64()?;
        let nanos = u32::from_be_bytes(r.take(4)?.try_into().ok()?);
        let received_at = SystemTime::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
        let method = Method::from_bytes(r.field()?).ok()?;
        let version = match r.u8()? {
            0 => Version::HTTP_09,
            1 => Version::HTTP_10,
            3 => Version::HTTP_2,
            4 => Version::HTTP_3,
            _ => Version::HTTP_11,
        };
        let flags = r.u8()?;
        let remote_addr = std::str::from_utf8(r.field()?).ok()?.parse().ok()?;
        let declared_length = match r.u8()? {
            0 => None,
            _ => Some(r.u64()?),
        };
        let response_status = u16::from_be_bytes(r.take(2)?.try_into().ok()?);
        let sig = r.u8()?;
        let signature = if sig & 1 == 1 {
            let scheme = serde_json::from_slice(r.field()?).ok()?;
            let detail = String::from_utf8_lossy(r.field()?).into_owned();
            Some(Verdict {
                scheme,
                valid: sig & 2 == 2,
                detail,
            })
        } else {
            None
        };
        let path = std::str::from_utf8(r.field()?).ok()?;
        let query = match r.u8()? {
            0 => None,
            _ => Some(std::str::from_utf8(r.field()?).ok()?),
        };
        let count = r.u32()? as usize;
        let mut headers = Vec::with_capacity(count.min(4096));
        for _ in 0..count {
            headers.push((r.field()?, r.field()?));
        }
        let body = r.0;
        let mut builder = CaptureBuilder::new(path, query, || headers.iter().copied(), body.len());
        builder.push_body(body);
        let meta = RequestMeta {
            bin,
            received_at,
            method,
            version,
            tls: flags & 1 == 1,
            remote_addr,
            headers_exact: flags & 2 == 2,
            declared_length,
        };
        let extra = CaptureExtra {
            truncated: flags & 4 == 4,
            signature,
            response_status,
        };
        Some(builder.finish(meta, extra, seq))
    }
}

fn put_field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A bounds-checked cursor over an encoded capture.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn field(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod encoding_tests {
    use super::*;

    #[test]
    fn encode_decode_round_trips_the_json() {
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b"Content-Type", b"application/json"),
            (b"X-Dup", b"a"),
            (b"x-dup", b"\xffb"),
        ];
        let mut builder =
            CaptureBuilder::new("/bin1/p", Some("a=1"), || headers.iter().copied(), 4);
        builder.push_body(b"\x00\x01{}");
        let meta = RequestMeta {
            bin: "bin1".into(),
            received_at: SystemTime::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123),
            method: Method::from_bytes(b"PURGE").unwrap(),
            version: Version::HTTP_11,
            tls: true,
            remote_addr: "[::1]:443".parse().unwrap(),
            headers_exact: true,
            declared_length: Some(4),
        };
        let extra = CaptureExtra {
            truncated: true,
            signature: Some(Verdict {
                scheme: crate::signature::Scheme::Github,
                valid: false,
                detail: "nope".into(),
            }),
            response_status: 413,
        };
        let encoded = builder.encode(&meta, &extra);
        let original = builder.finish(meta, extra, 7);
        let decoded = Capture::decode("bin1".into(), 7, &encoded).expect("decodes");
        assert_eq!(original.to_json(), decoded.to_json());
        assert!(Capture::decode("bin1".into(), 7, &encoded[..20]).is_none());
    }
}

#[cfg(test)]
mod time_tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rfc3339_matches_humantime() {
        let mut times = vec![
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::new(1_795_000_000, 0),
            UNIX_EPOCH + Duration::new(1_795_000_000, 999_999_999),
            UNIX_EPOCH + Duration::new(1_795_000_001, 1),
            UNIX_EPOCH + Duration::new(4_102_444_799, 123_456_789), // 2099-12-31T23:59:59
            SystemTime::now(),
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // The same second twice, then a jump: exercises the cache both ways.
            let secs = x % 4_000_000_000;
            times.push(UNIX_EPOCH + Duration::new(secs, (x >> 32) as u32 % 1_000_000_000));
            times.push(UNIX_EPOCH + Duration::new(secs, (x >> 8) as u32 % 1_000_000_000));
        }
        for t in times {
            assert_eq!(
                rfc3339(t),
                humantime::format_rfc3339_nanos(t).to_string(),
                "{t:?}"
            );
        }
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(1)),
            "1970-01-01T00:00:00.000000000Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::new(300_000_000_000, 5)),
            "9999-12-31T23:59:59.000000005Z"
        );
    }
}
