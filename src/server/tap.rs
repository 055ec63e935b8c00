//! HTTP/1 request-head tap: records each request head exactly as it arrived (header order and
//! name case), which hyper does not expose (see STACK.md, "Header case and order").
//!
//! A [`TapIo`] wraps the connection and watches the bytes hyper reads. A small state machine
//! finds request heads, skips request bodies by hyper's own framing rules (chunked beats
//! Content-Length, no length means no body, strict chunk syntax) and queues each complete head,
//! parsed once with `httparse`. The service takes the first queued head with
//! [`HeadTap::take_matching`], which checks it against the `Request` hyper produced. Anything
//! unexpected turns the tap off for the rest of the connection: the caller then falls back to
//! `HeaderMap` order (`headers_exact: false`). A head is never attributed to another request.
//!
//! Contract for callers: on an HTTP/1 connection, call `take_matching` exactly once for *every*
//! request, in the order hyper hands them to the service (HTTP/1 serves requests in order).

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use http::{HeaderMap, Uri, Version};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest head recorded; matches `http1().max_buf_size(64 KiB)`. hyper then answers 431 to
/// bigger heads, unless one read brought the whole head in (it serves it; we fall back).
const MAX_HEAD: usize = 64 * 1024;
/// A carry buffer that grew past this is freed after use, not kept per idle connection.
const KEEP_BUF: usize = 8 * 1024;
/// Most heads waiting for the service; more means the service is not taking them (or a flood).
const MAX_QUEUE: usize = 32;
/// hyper's default `h1_max_headers`; also bounds the match bitmask (u128).
const MAX_HEADERS: usize = 100;
/// hyper's `CHUNKED_EXTENSIONS_LIMIT` (bytes of chunk extensions per body).
const CHUNK_EXT_LIMIT: u64 = 16 * 1024;
/// hyper's `TRAILER_LIMIT` (bytes of trailer fields per body).
const TRAILER_LIMIT: usize = 16 * 1024;
/// The HTTP/2 connection preface up to its first blank line, which looks like a head.
const H2_PREFACE_HEAD: &[u8] = b"PRI * HTTP/2.0\r\n\r\n";

/// Per-connection shared slot between the IO wrapper and the service.
#[derive(Clone, Default)]
pub struct HeadTap {
    inner: Arc<Mutex<TapState>>,
}

/// A pass-through IO (tokio `AsyncRead` + `AsyncWrite`) that records request heads into its [`HeadTap`].
pub struct TapIo<S> {
    io: S,
    tap: HeadTap,
    // Cached "tap is off" so a dead tap costs no lock per read (off is permanent).
    off: bool,
}

/// The raw bytes of one request head and where each header's name and value sit in it, in
/// arrival order: one allocation, the span table first, then the head.
#[derive(Clone, Debug)]
pub struct RawHead {
    /// `headers` spans of [`SPAN`] bytes (name start, name len, value start, value len: u32
    /// LE, offsets into the head), then the head from the request line through the blank line
    /// (leading empty lines excluded).
    buf: Box<[u8]>,
    headers: u32,
}

/// Bytes of one header's entry in the span table.
const SPAN: usize = 16;

impl RawHead {
    /// Copy `head` with its header spans (`(start, len)` of name and of value, in `head`).
    fn new(head: &[u8], spans: impl ExactSizeIterator<Item = [(u32, u32); 2]>) -> RawHead {
        let headers = spans.len();
        // Exact capacity: the boxed slice below keeps this allocation, the only one.
        let mut buf = Vec::with_capacity(headers * SPAN + head.len());
        for [(ns, nl), (vs, vl)] in spans {
            for w in [ns, nl, vs, vl] {
                buf.extend_from_slice(&w.to_le_bytes());
            }
        }
        buf.extend_from_slice(head);
        RawHead {
            buf: buf.into_boxed_slice(),
            headers: headers as u32,
        }
    }

    /// The span table and the head's bytes.
    #[inline]
    fn table_and_head(&self) -> (&[u8], &[u8]) {
        self.buf.split_at(self.headers as usize * SPAN)
    }

    /// The head's bytes, from the request line through the blank line.
    pub fn bytes(&self) -> &[u8] {
        self.table_and_head().1
    }

    /// How many header lines the head has.
    pub fn len(&self) -> usize {
        self.headers as usize
    }

    /// Whether the head has no header lines.
    pub fn is_empty(&self) -> bool {
        self.headers == 0
    }

    /// Header `i` as `(name, value)` bytes, in original case (values trimmed by httparse, like
    /// hyper's `HeaderValue`).
    #[inline]
    pub fn header(&self, i: usize) -> (&[u8], &[u8]) {
        let (table, head) = self.table_and_head();
        header_at(table, head, i)
    }

    /// The headers as `(name, value)` byte pairs, in arrival order and original case.
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
        let (table, head) = self.table_and_head();
        (0..self.len()).map(move |i| header_at(table, head, i))
    }
}

#[inline]
fn header_at<'a>(table: &[u8], head: &'a [u8], i: usize) -> (&'a [u8], &'a [u8]) {
    let e = &table[i * SPAN..(i + 1) * SPAN];
    let w = |at: usize| u32::from_le_bytes([e[at], e[at + 1], e[at + 2], e[at + 3]]);
    (span(head, (w(0), w(4))), span(head, (w(8), w(12))))
}

#[inline]
fn span(bytes: &[u8], (start, len): (u32, u32)) -> &[u8] {
    &bytes[start as usize..start as usize + len as usize]
}

/// A recorded head plus the request-line facts needed to check it against hyper's `Request`.
struct Queued {
    head: RawHead,
    method: (u32, u32),
    target: (u32, u32),
    /// httparse minor version: 0 = HTTP/1.0, 1 = HTTP/1.1.
    version: u8,
    /// Raw headers hyper leaves out of its `HeaderMap` (bit i = header i): every
    /// Content-Length once Transfer-Encoding is present, else repeated equal ones.
    dropped: u128,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    Start,
    Size,
    SizeLws,
    Ext,
    SizeLf,
    Body,
    BodyCr,
    BodyLf,
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between messages: skipping empty lines, as httparse does before a request line.
    Idle,
    /// Saw `\r` while idle; only `\n` may follow.
    IdleCr,
    /// Accumulating a head until its blank line.
    Head,
    /// Skipping this many more Content-Length body bytes.
    Length(u64),
    /// Inside a chunked body (hyper's `ChunkedState`, mirrored).
    Chunked(Chunk),
    /// Not recording any more on this connection.
    Off,
}

struct TapState {
    state: State,
    /// Partial head carried across reads; allocated on the first split head, then reused
    /// (empty means "no partial head": the fast path parses straight from the read).
    buf: Vec<u8>,
    /// Where the blank-line search in `buf` resumes.
    scan: usize,
    chunk_size: u64,
    ext_bytes: u64,
    trailer_bytes: usize,
    trailer_lines: usize,
    queue: VecDeque<Queued>,
}

impl Default for TapState {
    fn default() -> Self {
        TapState {
            state: State::Idle,
            buf: Vec::new(),
            scan: 0,
            chunk_size: 0,
            ext_bytes: 0,
            trailer_bytes: 0,
            trailer_lines: 0,
            queue: VecDeque::new(),
        }
    }
}

impl HeadTap {
    /// A fresh tap for one connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wrap the connection IO (a tokio AsyncRead + AsyncWrite, e.g. TcpStream or a TLS stream).
    pub fn wrap<S>(&self, io: S) -> TapIo<S> {
        TapIo {
            io,
            tap: self.clone(),
            off: false,
        }
    }

    /// Take the next recorded head if it matches this request; None = not exact (and the tap is now off).
    pub fn take_matching(&self, parts: &http::request::Parts) -> Option<RawHead> {
        let mut st = self.lock();
        let Some(q) = st.queue.pop_front() else {
            // hyper produced a request the tap did not record: out of step from here on.
            st.turn_off();
            return None;
        };
        if q.matches(parts) {
            Some(q.head)
        } else {
            st.turn_off();
            st.queue.clear();
            None
        }
    }

    /// Disable for the rest of the connection (e.g. the connection turned out to be HTTP/2).
    pub fn disable(&self) {
        let mut st = self.lock();
        st.turn_off();
        st.queue.clear();
    }

    fn lock(&self) -> MutexGuard<'_, TapState> {
        // A panic elsewhere can't leave the state unsound for our purposes; keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn is_off(&self) -> bool {
        self.lock().state == State::Off
    }

    #[cfg(test)]
    fn queued(&self) -> usize {
        self.lock().queue.len()
    }
}

impl fmt::Debug for HeadTap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("HeadTap")
            .field("state", &st.state)
            .field("queued", &st.queue.len())
            .finish()
    }
}

impl TapState {
    fn turn_off(&mut self) {
        self.state = State::Off;
        self.buf = Vec::new();
    }

    /// Feed newly read bytes; body bytes are only counted.
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let used = match self.state {
                State::Off => return,
                State::Idle => match data[0] {
                    b'\n' => 1,
                    b'\r' => {
                        self.state = State::IdleCr;
                        1
                    }
                    _ => {
                        self.state = State::Head;
                        self.scan = 0;
                        0
                    }
                },
                State::IdleCr => {
                    if data[0] != b'\n' {
                        // httparse rejects a bare CR before the request line; so will hyper.
                        self.turn_off();
                        return;
                    }
                    self.state = State::Idle;
                    1
                }
                State::Head => self.feed_head(data),
                State::Length(rem) => {
                    let n = rem.min(data.len() as u64);
                    self.state = if n == rem {
                        State::Idle
                    } else {
                        State::Length(rem - n)
                    };
                    n as usize
                }
                State::Chunked(c) => self.feed_chunked(c, data),
            };
            data = &data[used..];
        }
    }

    /// Consume head bytes; returns how many bytes of `data` belong to the head (or were dropped).
    fn feed_head(&mut self, data: &[u8]) -> usize {
        if self.buf.is_empty() {
            // Common case: the whole head is in this read. httparse finds its end while parsing
            // (stopping at the same blank line as `find_head_end`), so no separate scan or copy.
            if let Some(n) = self.parse_head(data, false) {
                return n;
            }
            if data.len() >= MAX_HEAD {
                self.turn_off();
                return data.len();
            }
            // Split head: carry it; the blank-line search starts once, here, and then resumes.
            self.buf.extend_from_slice(data);
            self.scan = 0;
            return data.len();
        }
        let old = self.buf.len();
        let take = data.len().min(MAX_HEAD - old);
        self.buf.extend_from_slice(&data[..take]);
        match find_head_end(&self.buf, self.scan) {
            Ok(end) => {
                // The search resumes at an undecided '\n', so the end always lies past `old`.
                let buf = std::mem::take(&mut self.buf);
                if self.parse_head(&buf[..end], true).is_none() {
                    self.turn_off();
                }
                if self.state != State::Off && buf.capacity() <= KEEP_BUF {
                    self.buf = buf;
                    self.buf.clear();
                }
                end - old
            }
            Err(resume) => {
                self.scan = resume;
                if self.buf.len() >= MAX_HEAD {
                    self.turn_off();
                }
                take
            }
        }
    }

    /// Parse the head at the start of `data` once with httparse, queue it and pick the body
    /// framing hyper will use. `Some(n)`: `n` bytes consumed (the head, or all when the tap
    /// turned off). `None`: incomplete. With `whole`, `data` must be exactly one head.
    fn parse_head(&mut self, data: &[u8], whole: bool) -> Option<usize> {
        // The h2 preface's first line ends in a blank line: never take it for a head.
        if data.starts_with(H2_PREFACE_HEAD) {
            self.turn_off();
            return Some(data.len());
        }
        // Uninit slots: zeroing 100 headers would cost more than parsing a typical head.
        let mut slots = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let n = match req.parse_with_uninit_headers(data, &mut slots) {
            Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD && (!whole || n == data.len()) => n,
            Ok(httparse::Status::Partial) if !whole => return None,
            // Invalid (incl. obs-fold: hyper rejects it too), too many headers, oversize, or a
            // blank line httparse places differently from our scan.
            _ => {
                self.turn_off();
                return Some(data.len());
            }
        };
        self.record(&data[..n], &req);
        Some(n)
    }

    /// Queue a parsed head and switch to the body framing hyper will use.
    fn record(&mut self, head: &[u8], req: &httparse::Request<'_, '_>) {
        let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version)
        else {
            return self.turn_off();
        };

        // hyper's rules (proto/h1/role.rs, Server::parse): the last Transfer-Encoding decides;
        // once one is seen Content-Length is ignored; differing or invalid lengths are errors.
        let mut te = false;
        let mut chunked = false;
        let mut len: Option<u64> = None;
        let mut upgrade = method == "CONNECT";
        let mut cl_bits: u128 = 0;
        let mut first_cl: u128 = 0;
        for (i, h) in req.headers.iter().enumerate() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"transfer-encoding") {
                if version == 0 {
                    return self.turn_off();
                }
                te = true;
                chunked = is_chunked(h.value);
            } else if name.eq_ignore_ascii_case(b"content-length") {
                cl_bits |= 1 << i;
                if te {
                    continue;
                }
                match parse_digits(h.value) {
                    Some(n) if len.is_none_or(|p| p == n) => {
                        if len.is_none() {
                            first_cl = 1 << i;
                        }
                        len = Some(n);
                    }
                    _ => return self.turn_off(),
                }
            } else if name.eq_ignore_ascii_case(b"upgrade") {
                upgrade = true;
            }
        }
        if te && !chunked {
            return self.turn_off();
        }
        let dropped = if te { cl_bits } else { cl_bits & !first_cl };
        if self.queue.len() >= MAX_QUEUE {
            return self.turn_off();
        }

        let base = head.as_ptr() as usize;
        let at = |s: &[u8]| ((s.as_ptr() as usize - base) as u32, s.len() as u32);
        let spans = req
            .headers
            .iter()
            .map(|h| [at(h.name.as_bytes()), at(h.value)]);
        self.queue.push_back(Queued {
            method: at(method.as_bytes()),
            target: at(target.as_bytes()),
            version,
            dropped,
            head: RawHead::new(head, spans),
        });

        self.state = if upgrade {
            // What follows belongs to another protocol (or hyper may refuse the upgrade):
            // stop after handing over this head.
            State::Off
        } else if chunked {
            self.ext_bytes = 0;
            self.trailer_bytes = 0;
            self.trailer_lines = 0;
            State::Chunked(Chunk::Start)
        } else {
            match len {
                Some(n) if n > 0 => State::Length(n),
                _ => State::Idle,
            }
        };
    }

    /// Walk a chunked body exactly like hyper's `ChunkedState::step`; chunk data is only counted.
    fn feed_chunked(&mut self, mut c: Chunk, data: &[u8]) -> usize {
        let mut i = 0;
        while i < data.len() {
            if c == Chunk::Body {
                let n = self.chunk_size.min((data.len() - i) as u64);
                self.chunk_size -= n;
                i += n as usize;
                if self.chunk_size == 0 {
                    c = Chunk::BodyCr;
                }
                continue;
            }
            let b = data[i];
            i += 1;
            let next = match (c, b) {
                (Chunk::Start, _) => hex(b).map(|d| {
                    self.chunk_size = d;
                    Chunk::Size
                }),
                (Chunk::Size, _) if hex(b).is_some() => self
                    .chunk_size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(hex(b).unwrap_or(0)))
                    .map(|s| {
                        self.chunk_size = s;
                        Chunk::Size
                    }),
                (Chunk::Size | Chunk::SizeLws, b'\t' | b' ') => Some(Chunk::SizeLws),
                (Chunk::Size | Chunk::SizeLws, b';') => Some(Chunk::Ext),
                (Chunk::Size | Chunk::SizeLws | Chunk::Ext, b'\r') => Some(Chunk::SizeLf),
                (Chunk::Ext, b'\n') => None,
                (Chunk::Ext, _) => {
                    self.ext_bytes += 1;
                    (self.ext_bytes < CHUNK_EXT_LIMIT).then_some(Chunk::Ext)
                }
                (Chunk::SizeLf, b'\n') if self.chunk_size == 0 => Some(Chunk::EndCr),
                (Chunk::SizeLf, b'\n') => Some(Chunk::Body),
                (Chunk::BodyCr, b'\r') => Some(Chunk::BodyLf),
                (Chunk::BodyLf, b'\n') => Some(Chunk::Start),
                (Chunk::EndCr, b'\r') => Some(Chunk::EndLf),
                (Chunk::EndCr | Chunk::Trailer, _) => {
                    // Trailer field bytes (a bare LF is just content here, as in hyper).
                    self.trailer_bytes += 1;
                    (self.trailer_bytes < TRAILER_LIMIT).then_some(if b == b'\r' {
                        Chunk::TrailerLf
                    } else {
                        Chunk::Trailer
                    })
                }
                (Chunk::TrailerLf, b'\n') => {
                    self.trailer_lines += 1;
                    self.trailer_bytes += 1;
                    (self.trailer_lines <= MAX_HEADERS && self.trailer_bytes < TRAILER_LIMIT)
                        .then_some(Chunk::EndCr)
                }
                (Chunk::EndLf, b'\n') => {
                    self.state = State::Idle;
                    return i;
                }
                _ => None,
            };
            match next {
                Some(n) => c = n,
                None => {
                    self.turn_off();
                    return data.len();
                }
            }
        }
        self.state = State::Chunked(c);
        i
    }
}

/// Find the end of a head (just past its blank line) searching from `from`.
/// `Err(resume)` = not yet; resume at `resume` (an undecided `\n`, or the end) after more bytes.
/// Like httparse, a line ends in `\n` or `\r\n`, so the blank line is `\n\n` or `\n\r\n`.
fn find_head_end(buf: &[u8], from: usize) -> Result<usize, usize> {
    let mut i = from;
    while let Some(p) = find_nl(&buf[i..]) {
        let j = i + p;
        match buf.get(j + 1) {
            None => return Err(j),
            Some(b'\n') => return Ok(j + 2),
            Some(b'\r') => match buf.get(j + 2) {
                None => return Err(j),
                // `\n\r` + anything but `\n` is an httparse error wherever it sits: end the
                // head here so the parse fails now rather than after more bytes.
                Some(_) => return Ok(j + 3),
            },
            Some(_) => i = j + 1,
        }
    }
    Err(buf.len())
}

/// Position of the first `\n`, eight bytes at a time (no unsafe, no extra crate).
fn find_nl(s: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const NL: u64 = LO * b'\n' as u64;
    let mut words = s.chunks_exact(8);
    let mut at = 0;
    for w in &mut words {
        let x = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) ^ NL;
        // Lowest set bit marks the first zero byte (borrows only cause false hits above it).
        let hit = x.wrapping_sub(LO) & !x & HI;
        if hit != 0 {
            return Some(at + (hit.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|p| at + p)
}

fn hex(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

/// hyper's `from_digits`: plain decimal, no sign, no spaces, no list, no overflow.
fn parse_digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| match b {
        b'0'..=b'9' => acc.checked_mul(10)?.checked_add(u64::from(b - b'0')),
        _ => None,
    })
}

/// hyper's `is_chunked_`: the value is visible ASCII and its last comma item is `chunked`.
fn is_chunked(v: &[u8]) -> bool {
    if !v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
        return false;
    }
    let last = v.rsplit(|&b| b == b',').next().unwrap_or(v);
    trim_ows(last).eq_ignore_ascii_case(b"chunked")
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

impl Queued {
    fn matches(&self, parts: &http::request::Parts) -> bool {
        let bytes = self.head.bytes();
        let version_ok = match parts.version {
            Version::HTTP_10 => self.version == 0,
            Version::HTTP_11 => self.version == 1,
            _ => false,
        };
        version_ok
            && parts.method.as_str().as_bytes() == span(bytes, self.method)
            && target_matches(&parts.uri, span(bytes, self.target))
            && self.headers_match(&parts.headers)
    }

    /// The raw headers (less those hyper drops) and the map are the same multiset, with each
    /// name's values in the same order (a `HeaderMap` keeps per-name order but groups by name).
    fn headers_match(&self, map: &HeaderMap) -> bool {
        let raw = &self.head;
        let n = raw.len();
        if n > 128 || map.len() != n - self.dropped.count_ones() as usize {
            return false;
        }
        // Headers hyper dropped count as already matched.
        let mut used: u128 = self.dropped;
        let mut group: Option<&http::HeaderName> = None;
        let mut cursor = 0;
        for (name, value) in map.iter() {
            // A name's values all come with the same key reference: no byte comparison.
            if !group.is_some_and(|g| std::ptr::eq(g, name)) {
                // New name: its first raw occurrence can't precede the first unused header.
                group = Some(name);
                cursor = used.trailing_ones() as usize;
            }
            let want = name.as_str().as_bytes();
            loop {
                if cursor >= n {
                    return false;
                }
                let i = cursor;
                cursor += 1;
                if used & (1u128 << i) != 0 {
                    continue;
                }
                let (raw_name, raw_value) = raw.header(i);
                if !eq_lowercase(raw_name, want) {
                    continue;
                }
                if raw_value != value.as_bytes() {
                    return false;
                }
                used |= 1u128 << i;
                break;
            }
        }
        true
    }
}

/// `raw` equals the lowercase name `lower` ignoring ASCII case, eight bytes at a time
/// (per-byte folding was the hottest part of `take_matching`).
fn eq_lowercase(raw: &[u8], lower: &[u8]) -> bool {
    if raw.len() != lower.len() {
        return false;
    }
    let mut a = raw.chunks_exact(8);
    let mut b = lower.chunks_exact(8);
    for (x, y) in (&mut a).zip(&mut b) {
        if !eq_lowercase_word(word(x), word(y)) {
            return false;
        }
    }
    eq_lowercase_word(word(a.remainder()), word(b.remainder()))
}

/// Up to eight bytes as a little-endian word, zero-padded.
fn word(s: &[u8]) -> u64 {
    // Built in a register: a padded stack copy cost a memcpy call and a store-forward stall.
    s.iter().rev().fold(0, |w, &b| (w << 8) | u64::from(b))
}

fn eq_lowercase_word(x: u64, y: u64) -> bool {
    const HI: u64 = 0x8080_8080_8080_8080;
    // Only ASCII (always so for tokens) keeps the adds below from carrying across bytes.
    if x & HI != 0 {
        return false;
    }
    // Bit 7 set in bytes 'A'..='Z': b + 0x3f >= 0x80 and b + 0x25 < 0x80.
    let upper = x.wrapping_add(0x3f3f_3f3f_3f3f_3f3f) & !x.wrapping_add(0x2525_2525_2525_2525) & HI;
    x | (upper >> 2) == y
}

/// Does hyper's parsed `Uri` come from exactly this request-target?
fn target_matches(uri: &Uri, raw: &[u8]) -> bool {
    let pq = uri.path_and_query().map_or("", |p| p.as_str()).as_bytes();
    match (uri.scheme(), uri.authority()) {
        // origin-form and `*`
        (None, None) => pq == raw,
        // authority-form (CONNECT)
        (None, Some(a)) => pq.is_empty() && a.as_str().as_bytes() == raw,
        // absolute-form: the scheme may be case-normalised, the rest is kept verbatim
        (Some(s), Some(a)) => {
            let s = s.as_str().as_bytes();
            let a = a.as_str().as_bytes();
            let end = s.len() + 3 + a.len();
            raw.len() >= end
                && raw[..s.len()].eq_ignore_ascii_case(s)
                && &raw[s.len()..s.len() + 3] == b"://"
                && &raw[s.len() + 3..end] == a
                // `http://host` parses with path "/".
                && (&raw[end..] == pq || (raw.len() == end && pq == b"/"))
        }
        (Some(_), None) => false,
    }
}

impl<S> TapIo<S> {
    /// The wrapped IO (e.g. to read the peer address or the negotiated ALPN protocol).
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The wrapped IO, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Unwrap the IO; the tap stops seeing bytes.
    pub fn into_inner(self) -> S {
        self.io
    }
}

impl<S: fmt::Debug> fmt::Debug for TapIo<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TapIo")
            .field("io", &self.io)
            .field("off", &self.off)
            .finish()
    }
}

// `S: Unpin` keeps this free of unsafe pin projection; TcpStream and TLS streams are Unpin.
impl<S: AsyncRead + Unpin> AsyncRead for TapIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.io).poll_read(cx, buf);
        if !this.off {
            if let Poll::Ready(Ok(())) = res {
                let fresh = &buf.filled()[before..];
                if !fresh.is_empty() {
                    let mut st = this.tap.lock();
                    st.feed(fresh);
                    this.off = st.state == State::Off;
                }
            }
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TapIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// xorshift64*: deterministic split points without an extra crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn feed(tap: &HeadTap, data: &[u8]) {
        tap.lock().feed(data);
    }

    /// Drain the queue as "Name: value" lines per head, plus the request line.
    fn drain(tap: &HeadTap) -> Vec<Vec<String>> {
        let mut st = tap.lock();
        let mut out = Vec::new();
        while let Some(q) = st.queue.pop_front() {
            let b = q.head.bytes();
            let mut v = vec![format!(
                "{} {} {}",
                String::from_utf8_lossy(span(b, q.method)),
                String::from_utf8_lossy(span(b, q.target)),
                q.version
            )];
            for (n, val) in q.head.iter() {
                v.push(format!(
                    "{}: {}",
                    String::from_utf8_lossy(n),
                    String::from_utf8_lossy(val)
                ));
            }
            out.push(v);
        }
        out
    }

    fn parts(req: http::request::Builder) -> http::request::Parts {
        req.body(()).unwrap().into_parts().0
    }

    /// A stream exercising every framing path: interleaved duplicates, a Content-Length body with
    /// head-like text, a chunked body with blank lines, extensions and trailers, leading CRLFs.
    fn mixed_stream() -> (Vec<u8>, Vec<Vec<&'static str>>) {
        let mut s = Vec::new();
        s.extend_from_slice(b"POST /a?x=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-b: 2\r\nX-a: 3\r\nContent-Length: 5\r\n\r\nhello");
        s.extend_from_slice(b"PUT /b HTTP/1.1\r\nHost: h\r\nCONTENT-LENGTH: 40\r\n\r\nGET /evil HTTP/1.1\r\nX-Evil: 10\r\n\r\n\r\n\r\n\r\n");
        s.extend_from_slice(
            b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
        );
        s.extend_from_slice(b"1c;name=val;q=\"x y\"\r\nGET /x HTTP/1.1\r\n\r\nAB: c\r\n\r\n\r\n");
        s.extend_from_slice(b"3  \r\n\r\n\r\r\n0;last\r\nX-Trailer: t\r\nX-T2: u\r\n\r\n");
        s.extend_from_slice(
            b"\r\n\n\r\nGET /d HTTP/1.0\r\nhost: h\r\nConnection: keep-alive\r\n\r\n",
        );
        s.extend_from_slice(b"DELETE /e HTTP/1.1\nHost: h\nX-LF: only\n\n");
        s.extend_from_slice(b"GET /f HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
        let want = vec![
            vec![
                "POST /a?x=1 1",
                "Host: h",
                "X-A: 1",
                "x-b: 2",
                "X-a: 3",
                "Content-Length: 5",
            ],
            vec!["PUT /b 1", "Host: h", "CONTENT-LENGTH: 40"],
            vec!["POST /c 1", "Host: h", "Transfer-Encoding: gzip, Chunked"],
            vec!["GET /d 0", "host: h", "Connection: keep-alive"],
            vec!["DELETE /e 1", "Host: h", "X-LF: only"],
            vec!["GET /f 1", "Host: h", "Connection: close"],
        ];
        (s, want)
    }

    #[test]
    fn find_nl_matches_naive() {
        let mut rng = Rng(7);
        for len in 0..80 {
            for _ in 0..20 {
                let v: Vec<u8> = (0..len)
                    .map(|_| {
                        if rng.below(9) == 0 {
                            b'\n'
                        } else {
                            rng.next() as u8 | 0x80
                        }
                    })
                    .collect();
                assert_eq!(find_nl(&v), v.iter().position(|&b| b == b'\n'));
            }
        }
        assert_eq!(find_nl(b"0123456789\n"), Some(10));
        assert_eq!(find_nl(&[0x0b; 20]), None);
    }

    #[test]
    fn eq_lowercase_matches_std() {
        let mut rng = Rng(99);
        let alphabet = b"aAzZ09-_^~`|!#$%&'*+.@[{xX";
        for len in 0..30 {
            for _ in 0..200 {
                let a: Vec<u8> = (0..len)
                    .map(|_| alphabet[rng.below(alphabet.len())])
                    .collect();
                let mut b = a.to_ascii_lowercase();
                if len > 0 && rng.below(2) == 0 {
                    let i = rng.below(len);
                    b[i] = alphabet[rng.below(alphabet.len())].to_ascii_lowercase();
                }
                assert_eq!(
                    eq_lowercase(&a, &b),
                    a.eq_ignore_ascii_case(&b),
                    "{a:?} {b:?}"
                );
            }
        }
        assert!(!eq_lowercase(b"ab", b"abc"));
        assert!(!eq_lowercase(b"\xc1", b"\xe1"));
    }

    #[test]
    fn interleaved_duplicates_keep_order_and_case() {
        let tap = HeadTap::new();
        feed(
            &tap,
            b"GET /p HTTP/1.1\r\nX-A: 1\r\nx-b: 2\r\nX-a: 3\r\n\r\n",
        );
        let head = tap.lock().queue.front().unwrap().head.clone();
        let pairs: Vec<_> = head.iter().collect();
        assert_eq!(
            pairs,
            vec![
                (&b"X-A"[..], &b"1"[..]),
                (&b"x-b"[..], &b"2"[..]),
                (&b"X-a"[..], &b"3"[..])
            ]
        );
        let p = parts(
            Request::get("/p")
                .header("x-a", "1")
                .header("x-b", "2")
                .header("x-a", "3"),
        );
        let got = tap.take_matching(&p).expect("exact");
        assert_eq!(got.bytes(), head.bytes());
        assert!(!tap.is_off());
    }

    #[test]
    fn whole_stream_and_every_split() {
        let (s, want) = mixed_stream();
        let tap = HeadTap::new();
        feed(&tap, &s);
        assert_eq!(drain(&tap), want);
        // Two pieces at every split point.
        for cut in 0..=s.len() {
            let tap = HeadTap::new();
            feed(&tap, &s[..cut]);
            feed(&tap, &s[cut..]);
            assert_eq!(drain(&tap), want, "cut at {cut}");
        }
        // Byte by byte.
        let tap = HeadTap::new();
        for b in &s {
            feed(&tap, std::slice::from_ref(b));
        }
        assert_eq!(drain(&tap), want);
        // Random pieces.
        let mut rng = Rng(0x1234_5678);
        for _ in 0..300 {
            let tap = HeadTap::new();
            let mut i = 0;
            while i < s.len() {
                let n = (1 + rng.below(40)).min(s.len() - i);
                feed(&tap, &s[i..i + n]);
                i += n;
            }
            assert_eq!(drain(&tap), want);
        }
    }

    #[test]
    fn bodies_are_not_read_as_heads() {
        let tap = HeadTap::new();
        feed(
            &tap,
            b"POST / HTTP/1.1\r\nContent-Length: 28\r\n\r\nGET /no HTTP/1.1\r\nA: b\r\n\r\n",
        );
        assert_eq!(tap.lock().state, State::Length(2));
        feed(&tap, b"\r\n");
        assert_eq!(tap.lock().state, State::Idle);
        assert_eq!(tap.queued(), 1);
        // No length, no body: the next bytes are the next head.
        feed(&tap, b"POST /n HTTP/1.1\r\n\r\nGET /m HTTP/1.1\r\n\r\n");
        assert_eq!(tap.queued(), 3);
    }

    #[test]
    fn chunk_syntax_errors_turn_off() {
        for body in [
            &b"x\r\n"[..],            // no size digit
            b"5\r\nhelloX",           // data not followed by CRLF
            b"5\r\nhello\rX",         // CR not followed by LF
            b"5;ext\nhello\r\n",      // LF inside an extension
            b"5 x\r\n",               // junk after size whitespace
            b"5\nhello\r\n",          // size line without CR
            b"0\r\n\r\r",             // bad final LF
            b"0\r\nX: y\rZ",          // trailer CR without LF
            b"10000000000000000\r\n", // size overflows u64
        ] {
            let tap = HeadTap::new();
            feed(
                &tap,
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            );
            feed(&tap, body);
            assert!(tap.is_off(), "{:?}", String::from_utf8_lossy(body));
            assert_eq!(tap.queued(), 1, "heads already framed stay usable");
        }
        // Too many extension bytes in one body.
        let tap = HeadTap::new();
        feed(
            &tap,
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;",
        );
        feed(&tap, &vec![b'a'; CHUNK_EXT_LIMIT as usize]);
        assert!(tap.is_off());
    }

    #[test]
    fn framing_errors_turn_off() {
        for head in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
            b"POST / HTTP/1.1\r\nBad Name: a\r\n\r\n",
            b"POST / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
            b"POST / HTTP/2.0\r\n\r\n",
            b"\r\rGET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\r\n",
        ] {
            let tap = HeadTap::new();
            feed(&tap, head);
            assert!(tap.is_off(), "{:?}", String::from_utf8_lossy(head));
            assert_eq!(tap.queued(), 0);
        }
        // Content-Length after Transfer-Encoding is ignored, before it overridden: chunked wins.
        for head in [
            &b"POST / HTTP/1.1\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n",
        ] {
            let tap = HeadTap::new();
            feed(&tap, head);
            feed(&tap, b"0\r\n\r\nGET / HTTP/1.1\r\n\r\n");
            assert_eq!(tap.queued(), 2);
            assert_eq!(tap.lock().state, State::Idle);
        }
        // Equal duplicate lengths are fine for hyper, so for us.
        let tap = HeadTap::new();
        feed(
            &tap,
            b"POST / HTTP/1.1\r\ncontent-length: 2\r\nContent-Length: 2\r\n\r\nab",
        );
        assert_eq!(tap.lock().state, State::Idle);
    }

    #[test]
    fn upgrade_and_connect_hand_over_then_stop() {
        for head in [
            &b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"[..],
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        ] {
            let tap = HeadTap::new();
            let mut s = head.to_vec();
            s.extend_from_slice(b"GET /after HTTP/1.1\r\n\r\n");
            feed(&tap, &s);
            assert!(tap.is_off());
            assert_eq!(tap.queued(), 1);
        }
        let tap = HeadTap::new();
        feed(
            &tap,
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        );
        let p = parts(
            Request::builder()
                .method("CONNECT")
                .uri("example.com:443")
                .header("host", "example.com:443"),
        );
        assert!(tap.take_matching(&p).is_some());
    }

    #[test]
    fn h2_preface_turns_off() {
        let tap = HeadTap::new();
        feed(
            &tap,
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x12\x04\0\0\0\0\0",
        );
        assert!(tap.is_off());
        assert_eq!(tap.queued(), 0);
        // Split inside the preface.
        let tap = HeadTap::new();
        feed(&tap, b"PRI * HTTP/2.0\r\n\r");
        feed(&tap, b"\nSM\r\n\r\n");
        assert!(tap.is_off());
        assert_eq!(tap.queued(), 0);
    }

    #[test]
    fn oversize_head_turns_off() {
        let mut big = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        big.extend_from_slice(b"\r\n\r\n");
        // In one read, and in many small ones.
        let tap = HeadTap::new();
        feed(&tap, &big);
        assert!(tap.is_off());
        let tap = HeadTap::new();
        for c in big.chunks(1000) {
            feed(&tap, c);
        }
        assert!(tap.is_off());
        assert_eq!(tap.queued(), 0);
        assert_eq!(tap.lock().buf.capacity(), 0, "buffer released");
        // Just under the cap is still recorded.
        let mut ok = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        ok.extend(std::iter::repeat_n(b'a', MAX_HEAD - ok.len() - 4));
        ok.extend_from_slice(b"\r\n\r\n");
        assert_eq!(ok.len(), MAX_HEAD);
        let tap = HeadTap::new();
        for c in ok.chunks(333) {
            feed(&tap, c);
        }
        assert_eq!(tap.queued(), 1);
        assert_eq!(tap.lock().buf.capacity(), 0, "big carry buffer not kept");
        // A small split head keeps its buffer for reuse.
        feed(&tap, b"GET / HTTP/1.1\r\nA:");
        feed(&tap, b" b\r\n\r\n");
        assert_eq!(tap.queued(), 2);
        assert!(tap.lock().buf.capacity() > 0);
    }

    #[test]
    fn queue_deeper_than_32_turns_off() {
        let tap = HeadTap::new();
        for _ in 0..MAX_QUEUE {
            feed(&tap, b"GET / HTTP/1.1\r\n\r\n");
        }
        assert!(!tap.is_off());
        feed(&tap, b"GET / HTTP/1.1\r\n\r\n");
        assert!(tap.is_off());
        assert_eq!(tap.queued(), MAX_QUEUE);
    }

    #[test]
    fn take_matching_checks_everything() {
        let head = b"POST /p?q=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-b: 2\r\nX-a: 3\r\n\r\n";
        let good = || {
            Request::post("/p?q=1")
                .header("host", "h")
                .header("x-a", "1")
                .header("x-b", "2")
                .header("x-a", "3")
        };
        let tap = HeadTap::new();
        feed(&tap, head);
        assert!(tap.take_matching(&parts(good())).is_some());

        let bad = [
            parts(good().method("PUT")),
            parts(good().uri("/p?q=2")),
            parts(good().version(Version::HTTP_10)),
            parts(good().version(Version::HTTP_2)),
            parts(good().header("x-c", "4")),
            parts(
                Request::post("/p?q=1")
                    .header("host", "h")
                    .header("x-a", "3")
                    .header("x-b", "2")
                    .header("x-a", "1"),
            ),
            parts(
                Request::post("/p?q=1")
                    .header("host", "h")
                    .header("x-a", "1")
                    .header("x-b", "2")
                    .header("x-c", "3"),
            ),
        ];
        for p in bad {
            let tap = HeadTap::new();
            feed(&tap, head);
            feed(&tap, head);
            assert!(tap.take_matching(&p).is_none());
            assert!(tap.is_off());
            assert_eq!(tap.queued(), 0);
            assert!(tap.take_matching(&parts(good())).is_none(), "off for good");
        }
        // Nothing queued: not exact.
        let tap = HeadTap::new();
        assert!(tap.take_matching(&parts(good())).is_none());
        assert!(tap.is_off());
    }

    #[test]
    fn skipped_request_is_never_misattributed() {
        // The service must take once per request; if it skips one, the next take sees a
        // different request line and turns the tap off instead of misattributing.
        let tap = HeadTap::new();
        feed(
            &tap,
            b"GET /a HTTP/1.1\r\nX-K: 1\r\n\r\nGET /b HTTP/1.1\r\nx-k: 1\r\n\r\n",
        );
        assert!(tap
            .take_matching(&parts(Request::get("/b").header("x-k", "1")))
            .is_none());
        assert!(tap.is_off());
    }

    #[test]
    fn target_forms() {
        let tap = HeadTap::new();
        feed(
            &tap,
            b"GET http://Example.com:8080/x?y HTTP/1.1\r\n\r\nGET HTTP://e.com HTTP/1.1\r\n\r\nOPTIONS * HTTP/1.1\r\n\r\n",
        );
        for (m, u) in [
            ("GET", "http://Example.com:8080/x?y"),
            ("GET", "HTTP://e.com"),
            ("OPTIONS", "*"),
        ] {
            let p = parts(Request::builder().method(m).uri(u));
            assert!(tap.take_matching(&p).is_some(), "{u}");
        }
    }

    #[test]
    fn disable_clears() {
        let tap = HeadTap::new();
        feed(&tap, b"GET / HTTP/1.1\r\n\r\n");
        tap.disable();
        assert!(tap.is_off());
        assert_eq!(tap.queued(), 0);
        feed(&tap, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(tap.queued(), 0);
    }

    // ---- real hyper connections ----

    /// Caps every read at a size from a list, so the tap sees exactly these split points
    /// however the writer's bytes were coalesced.
    struct SplitIo<S> {
        io: S,
        rng: Option<Rng>,
        max: usize,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for SplitIo<S> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let Some(rng) = this.rng.as_mut() else {
                return Pin::new(&mut this.io).poll_read(cx, buf);
            };
            let want = (1 + rng.below(this.max)).min(buf.remaining());
            let mut small = ReadBuf::new(&mut buf.initialize_unfilled()[..want]);
            let res = Pin::new(&mut this.io).poll_read(cx, &mut small);
            let n = small.filled().len();
            buf.advance(n);
            res
        }
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for SplitIo<S> {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.get_mut().io).poll_write(cx, b)
        }
        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().io).poll_flush(cx)
        }
        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
        }
    }

    #[derive(Clone, Copy)]
    struct Cfg {
        /// `None` = reads as they come; `Some((seed, max))` = reads of 1..=max bytes.
        split: Option<(u64, usize)>,
        ignore_invalid: bool,
    }

    const PLAIN: Cfg = Cfg {
        split: None,
        ignore_invalid: false,
    };

    /// Serve one connection with the auto builder; the service echoes what it learned as
    /// `<<E|...>>` (exact head) or `<<F|...>>` (fallback), with headers and body length.
    async fn serve<S>(io: S, tap: HeadTap, cfg: Cfg, calls: Arc<AtomicUsize>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let split = SplitIo {
            io,
            rng: cfg.split.map(|(seed, _)| Rng(seed)),
            max: cfg.split.map_or(1, |(_, m)| m),
        };
        let io = TokioIo::new(tap.wrap(split));
        let svc_tap = tap.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let tap = svc_tap.clone();
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let (parts, body) = req.into_parts();
                let head = tap.take_matching(&parts);
                // `/skip…` leaves the body unread: hyper then drains (or closes) by itself.
                let body = if parts.uri.path().starts_with("/skip") {
                    drop(body);
                    Bytes::new()
                } else {
                    body.collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default()
                };
                let mut out = String::new();
                match head {
                    Some(h) => {
                        out.push_str("<<E");
                        for (n, v) in h.iter() {
                            out.push_str(&format!(
                                "|{}: {}",
                                String::from_utf8_lossy(n),
                                String::from_utf8_lossy(v)
                            ));
                        }
                    }
                    None => {
                        out.push_str("<<F");
                        for (n, v) in parts.headers.iter() {
                            out.push_str(&format!(
                                "|{}: {}",
                                n,
                                String::from_utf8_lossy(v.as_bytes())
                            ));
                        }
                    }
                }
                out.push_str(&format!(
                    "|{} {} {:?} len={}>>",
                    parts.method,
                    parts.uri,
                    parts.version,
                    body.len()
                ));
                Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(out))))
            }
        });
        let mut b = auto::Builder::new(TokioExecutor::new());
        b.http1()
            .max_buf_size(MAX_HEAD)
            .ignore_invalid_headers(cfg.ignore_invalid);
        let _ = b.serve_connection_with_upgrades(io, svc).await;
    }

    /// Pull the `<<…>>` echoes out of a raw response stream.
    fn echoes(resp: &str) -> Vec<String> {
        resp.split("<<")
            .skip(1)
            .map(|s| s.split(">>").next().unwrap().to_string())
            .collect()
    }

    /// Send `data` in one write on a fresh in-memory connection; read until the server closes.
    async fn exchange(data: &[u8], cfg: Cfg) -> (String, HeadTap, usize) {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let tap = HeadTap::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(serve(server, tap.clone(), cfg, calls.clone()));
        client.write_all(data).await.unwrap();
        let mut resp = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client.read_to_end(&mut resp),
        )
        .await
        .expect("server closes")
        .unwrap();
        task.await.unwrap();
        (
            String::from_utf8_lossy(&resp).into_owned(),
            tap,
            calls.load(Ordering::SeqCst),
        )
    }

    fn expected_mixed() -> Vec<String> {
        vec![
            "E|Host: h|X-A: 1|x-b: 2|X-a: 3|Content-Length: 5|POST /a?x=1 HTTP/1.1 len=5",
            "E|Host: h|CONTENT-LENGTH: 40|PUT /b HTTP/1.1 len=40",
            "E|Host: h|Transfer-Encoding: gzip, Chunked|POST /c HTTP/1.1 len=31",
            "E|host: h|Connection: keep-alive|GET /d HTTP/1.0 len=0",
            "E|Host: h|X-LF: only|DELETE /e HTTP/1.1 len=0",
            "E|Host: h|Connection: close|GET /f HTTP/1.1 len=0",
        ]
        .into_iter()
        .map(String::from)
        .collect()
    }

    #[test]
    fn mixed_stream_expectations_line_up() {
        assert_eq!(mixed_stream().1.len(), expected_mixed().len());
    }

    #[tokio::test]
    async fn hyper_pipelined_in_one_write() {
        let (s, _) = mixed_stream();
        let (resp, _, calls) = exchange(&s, PLAIN).await;
        assert_eq!(echoes(&resp), expected_mixed(), "{resp}");
        assert_eq!(calls, 6);
    }

    #[tokio::test]
    async fn hyper_content_length_dropped_from_map_still_exact() {
        // hyper keeps one of several equal Content-Lengths, and none next to Transfer-Encoding
        // (it then also closes the connection).
        let s = b"POST /a HTTP/1.1\r\nContent-Length: 2\r\nX-M: 1\r\ncontent-length: 2\r\n\r\nab\
                  POST /b HTTP/1.1\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n";
        let (resp, _, _) = exchange(s, PLAIN).await;
        assert_eq!(
            echoes(&resp),
            vec![
                "E|Content-Length: 2|X-M: 1|content-length: 2|POST /a HTTP/1.1 len=2",
                "E|Content-Length: 9|Transfer-Encoding: chunked|POST /b HTTP/1.1 len=2",
            ],
            "{resp}"
        );
    }

    #[tokio::test]
    async fn hyper_unread_bodies_are_still_skipped() {
        let s = b"POST /skip1 HTTP/1.1\r\nContent-Length: 25\r\n\r\nGET /x HTTP/1.1\r\nA: b\r\n\r\n\
                  POST /skip2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n\r\n\r\n\r\n0\r\n\r\n\
                  GET /next HTTP/1.1\r\nX-N: 1\r\nConnection: close\r\n\r\n";
        let (resp, tap, _) = exchange(s, PLAIN).await;
        assert_eq!(
            echoes(&resp),
            vec![
                "E|Content-Length: 25|POST /skip1 HTTP/1.1 len=0",
                "E|Transfer-Encoding: chunked|POST /skip2 HTTP/1.1 len=0",
                "E|X-N: 1|Connection: close|GET /next HTTP/1.1 len=0",
            ],
            "{resp}"
        );
        assert_eq!(tap.queued(), 0);
    }

    #[tokio::test]
    async fn hyper_random_and_bytewise_splits() {
        let (s, _) = mixed_stream();
        for (seed, max) in [(1, 1), (2, 2), (3, 3), (4, 7), (5, 16), (6, 64), (7, 300)] {
            for round in 0..4u64 {
                let cfg = Cfg {
                    split: Some((seed * 1000 + round + 1, max)),
                    ignore_invalid: false,
                };
                let (resp, _, _) = exchange(&s, cfg).await;
                assert_eq!(echoes(&resp), expected_mixed(), "max={max} {resp}");
            }
        }
    }

    /// A random pipelined stream of valid requests and the echo each must produce.
    fn random_stream(rng: &mut Rng) -> (Vec<u8>, Vec<String>) {
        const NAMES: [&str; 7] = [
            "X-A",
            "x-a",
            "X-B",
            "Content-Type",
            "x-Sig",
            "ACCEPT",
            "x-b",
        ];
        const BODY: [&str; 8] = [
            "GET / HTTP/1.1",
            "\r\n",
            "\r\n\r\n",
            "Host: x",
            "0\r\n\r\n",
            ":",
            "abc",
            "\n\n",
        ];
        let mut s = Vec::new();
        let mut want = Vec::new();
        let n = 2 + rng.below(6);
        for i in 0..n {
            if rng.below(4) == 0 {
                s.extend_from_slice([&b"\r\n"[..], b"\n", b"\r\n\r\n"][rng.below(3)]);
            }
            let eol: &str = if rng.below(5) == 0 { "\n" } else { "\r\n" };
            let method = ["GET", "POST", "PUT", "PATCH", "DELETE"][rng.below(5)];
            let target = format!("/r{i}?k={}", rng.next() % 1000);
            let mut headers: Vec<(String, String)> = Vec::new();
            for _ in 0..rng.below(9) {
                let name: String = NAMES[rng.below(NAMES.len())]
                    .chars()
                    .map(|c| {
                        if rng.below(3) == 0 {
                            c.to_ascii_uppercase()
                        } else {
                            c
                        }
                    })
                    .collect();
                let value = format!("v {} {}", rng.next() % 100, "=;,".repeat(rng.below(3)));
                headers.push((name, value.trim_end().to_string()));
            }
            let mut body = Vec::new();
            for _ in 0..rng.below(6) {
                body.extend_from_slice(BODY[rng.below(BODY.len())].as_bytes());
            }
            let chunked = !body.is_empty() && rng.below(2) == 0;
            let pos = rng.below(headers.len() + 1);
            if chunked {
                headers.insert(pos, ("transfer-Encoding".into(), "chunked".into()));
            } else if !body.is_empty() || rng.below(3) == 0 {
                headers.insert(pos, ("Content-length".into(), body.len().to_string()));
            }
            if i == n - 1 {
                headers.push(("Connection".into(), "close".into()));
            }
            s.extend_from_slice(format!("{method} {target} HTTP/1.1{eol}").as_bytes());
            for (k, v) in &headers {
                s.extend_from_slice(
                    format!("{k}:{}{v}{eol}", [" ", "", "  "][rng.below(3)]).as_bytes(),
                );
            }
            s.extend_from_slice(eol.as_bytes());
            if chunked {
                let mut rest = &body[..];
                while !rest.is_empty() {
                    let k = (1 + rng.below(5)).min(rest.len());
                    let ext = if rng.below(3) == 0 { ";a=b;c" } else { "" };
                    s.extend_from_slice(format!("{k:X}{ext}\r\n").as_bytes());
                    s.extend_from_slice(&rest[..k]);
                    s.extend_from_slice(b"\r\n");
                    rest = &rest[k..];
                }
                s.extend_from_slice(if rng.below(2) == 0 {
                    &b"0\r\n\r\n"[..]
                } else {
                    b"0;z\r\nX-T: 1\r\n\r\n"
                });
            } else {
                s.extend_from_slice(&body);
            }
            let mut e = String::from("E");
            for (k, v) in &headers {
                e.push_str(&format!("|{k}: {v}"));
            }
            e.push_str(&format!("|{method} {target} HTTP/1.1 len={}", body.len()));
            want.push(e);
        }
        (s, want)
    }

    #[tokio::test]
    async fn hyper_random_streams_exact_and_never_misattributed() {
        let mut rng = Rng(0xDEAD_BEEF);
        for round in 0..60 {
            let (s, want) = random_stream(&mut rng);
            let max = [1, 3, 17, 100, 4096][round % 5];
            let cfg = Cfg {
                split: Some((rng.next() | 1, max)),
                ignore_invalid: false,
            };
            let (resp, tap, _) = exchange(&s, cfg).await;
            assert_eq!(
                echoes(&resp),
                want,
                "round {round}: {}",
                String::from_utf8_lossy(&s)
            );
            assert_eq!(tap.queued(), 0);
        }
    }

    #[tokio::test]
    async fn hyper_keep_alive_over_tcp() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tap = HeadTap::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let (t2, c2) = (tap.clone(), calls.clone());
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            serve(tcp, t2, PLAIN, c2).await;
        });
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.set_nodelay(true).unwrap();
        for i in 0..5 {
            let req = format!(
                "POST /k{i} HTTP/1.1\r\nHost: h\r\nX-Z: {i}\r\nx-y: a\r\nX-z: b\r\nContent-Length: 2\r\n\r\nhi"
            );
            c.write_all(req.as_bytes()).await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = String::new();
            while !got.contains(">>") {
                let n = c.read(&mut buf).await.unwrap();
                assert!(n > 0);
                got.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            assert_eq!(
                echoes(&got),
                vec![format!(
                    "E|Host: h|X-Z: {i}|x-y: a|X-z: b|Content-Length: 2|POST /k{i} HTTP/1.1 len=2"
                )]
            );
        }
        drop(c);
        server.await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn hyper_expect_100_continue() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let tap = HeadTap::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(serve(server, tap.clone(), PLAIN, calls.clone()));
        client
            .write_all(b"PUT /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 24\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"\r\n\r\n") {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 100 Continue\r\n"), "{got:?}");
        // A body that looks like a head must not be recorded as one.
        client
            .write_all(b"GET /x HTTP/1.1\r\nA: b\r\n\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        task.await.unwrap();
        assert_eq!(
            echoes(&String::from_utf8_lossy(&rest)),
            vec![
                "E|Host: h|Expect: 100-continue|Content-Length: 24|Connection: close|PUT /up HTTP/1.1 len=24"
            ]
        );
        assert_eq!(tap.queued(), 0);
        assert!(!tap.is_off());
    }

    fn oversize_stream() -> Vec<u8> {
        let mut s = b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\n".to_vec();
        s.extend_from_slice(b"GET /big HTTP/1.1\r\nHost: h\r\nX-Big: ");
        s.extend(std::iter::repeat_n(b'a', 70 * 1024));
        s.extend_from_slice(b"\r\n\r\nGET /after HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
        s
    }

    #[tokio::test]
    async fn hyper_oversize_head_gets_431_and_no_attribution() {
        // Socket-sized reads: hyper's buffer hits max_buf_size before the head ends -> 431.
        let cfg = Cfg {
            split: Some((99, 4096)),
            ignore_invalid: false,
        };
        let (resp, tap, calls) = exchange(&oversize_stream(), cfg).await;
        assert_eq!(echoes(&resp), vec!["E|Host: h|GET /ok HTTP/1.1 len=0"]);
        assert!(resp.contains("HTTP/1.1 431"), "{resp}");
        assert_eq!(calls, 1);
        assert!(tap.is_off());
        assert_eq!(tap.queued(), 0);
    }

    #[tokio::test]
    async fn hyper_oversize_head_in_one_read_falls_back() {
        // max_buf_size is not a hard cap: when one read brings the whole >64 KiB head, hyper
        // serves it. The tap has given up on it, so it and everything after fall back.
        let (resp, tap, calls) = exchange(&oversize_stream(), PLAIN).await;
        let e = echoes(&resp);
        assert_eq!(e[0], "E|Host: h|GET /ok HTTP/1.1 len=0");
        if calls == 1 {
            assert!(resp.contains("HTTP/1.1 431"), "{resp}");
        } else {
            assert_eq!(calls, 3);
            assert!(e[1].starts_with("F|host: h|x-big: aaa"), "{}", &e[1][..40]);
            assert!(e[1].ends_with("|GET /big HTTP/1.1 len=0"));
            assert_eq!(
                e[2],
                "F|host: h|connection: close|GET /after HTTP/1.1 len=0"
            );
        }
        assert!(tap.is_off());
    }

    #[tokio::test]
    async fn hyper_h2_prior_knowledge_served_tap_off() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let tap = HeadTap::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(serve(server, tap.clone(), PLAIN, calls.clone()));
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
                .await
                .unwrap();
        let conn_task = tokio::spawn(conn);
        for i in 0..2 {
            let req = Request::post(format!("http://h/two{i}"))
                .header("X-Case", "v")
                .body(Full::new(Bytes::from_static(b"abc")))
                .unwrap();
            let resp = send.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let body = String::from_utf8_lossy(&body).into_owned();
            assert!(body.starts_with("<<F|x-case: v"), "{body}");
            assert!(body.contains("HTTP/2.0 len=3"), "{body}");
        }
        assert!(tap.is_off());
        drop(send);
        let _ = conn_task.await;
        task.await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn hyper_obs_fold_and_bad_bytes_never_misattributed() {
        // hyper answers 400 and closes: only the first request is served, exactly.
        for bad in [
            &b"GET /b HTTP/1.1\r\nX-Fold: a\r\n  b\r\n\r\n"[..],
            b"GET /b HTTP/1.1\r\nBad Name: a\r\n\r\n",
            b"GET /b HTTP/1.1\r\nX: a\x7fb\r\n\r\n",
        ] {
            let mut s = b"GET /a HTTP/1.1\r\nX-Q: 1\r\n\r\n".to_vec();
            s.extend_from_slice(bad);
            s.extend_from_slice(b"GET /c HTTP/1.1\r\n\r\n");
            let (resp, tap, calls) = exchange(&s, PLAIN).await;
            assert_eq!(
                echoes(&resp),
                vec!["E|X-Q: 1|GET /a HTTP/1.1 len=0"],
                "{resp}"
            );
            assert!(resp.contains("HTTP/1.1 400"), "{resp}");
            assert_eq!(calls, 1);
            assert!(tap.is_off());
        }
        // When hyper is told to drop invalid header lines it serves the request, and the tap,
        // which can't parse that head, falls back for it and for the rest of the connection.
        let s = b"GET /a HTTP/1.1\r\nX-Q: 1\r\n\r\nGET /b HTTP/1.1\r\nX-Ok: 1\r\nBad Name: a\r\n\r\nGET /c HTTP/1.1\r\nX-R: 2\r\nConnection: close\r\n\r\n";
        let cfg = Cfg {
            split: None,
            ignore_invalid: true,
        };
        let (resp, _, _) = exchange(s, cfg).await;
        assert_eq!(
            echoes(&resp),
            vec![
                "E|X-Q: 1|GET /a HTTP/1.1 len=0",
                "F|x-ok: 1|GET /b HTTP/1.1 len=0",
                "F|x-r: 2|connection: close|GET /c HTTP/1.1 len=0",
            ],
            "{resp}"
        );
        // obs-text (bytes >= 0x80) in a value is valid for both parsers: exact, bytes intact.
        let s = b"GET /a HTTP/1.1\r\nX-Latin: caf\xe9\r\nConnection: close\r\n\r\n";
        let (resp, _, _) = exchange(s, PLAIN).await;
        assert_eq!(
            echoes(&resp),
            vec!["E|X-Latin: caf\u{fffd}|Connection: close|GET /a HTTP/1.1 len=0"]
        );
    }

    #[tokio::test]
    async fn hyper_refused_upgrade_falls_back_after() {
        let s = b"GET /u HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\nGET /n HTTP/1.1\r\nHost: h\r\nX-N: 1\r\nConnection: close\r\n\r\n";
        let (resp, tap, _) = exchange(s, PLAIN).await;
        let e = echoes(&resp);
        assert_eq!(
            e[0],
            "E|Host: h|Connection: upgrade|Upgrade: foo|GET /u HTTP/1.1 len=0"
        );
        // Whether or not hyper goes on after a refused upgrade, nothing later is exact.
        assert!(e[1..].iter().all(|x| x.starts_with("F|")), "{resp}");
        assert!(tap.is_off());
    }
}
