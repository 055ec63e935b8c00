//! Fuzz and property tests (issue 9, "malformed input"): random and mutated input thrown at
//! the raw TCP listener, the exact-header tap, the settings merge patch (pure and over REST),
//! WebSocket sessions, the signature verifiers and the HAR / cURL / OpenAPI exporters.
//!
//! Many cases go to pure functions (proptest); fewer, reusing one server, to the live socket.
//! Server-side generators are a seeded PRNG: set `HOOKRELAY_FUZZ_SEED` to explore other
//! seeds (each test prints the seed it used). Every server test also counts panics on the
//! server's runtime threads: a panic caught by tokio would otherwise go unnoticed.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use common::TestServer;
use futures_util::{SinkExt, StreamExt};
use hookrelay::capture::{Capture, CaptureBuilder, CaptureExtra, RequestMeta};
use hookrelay::export::{curl, har, ndjson, openapi};
use hookrelay::server::tap::HeadTap;
use hookrelay::settings::Settings;
use hookrelay::signature::{self, Scheme, VerifyConfig};
use http::{HeaderName, HeaderValue, Method, StatusCode, Version};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as PropConfig, RngAlgorithm, TestRng, TestRunner};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------------------------------------
// Shared helpers: PRNG, panic counter, proptest config
// ---------------------------------------------------------------------------------------------

/// splitmix64: deterministic, fast, no extra crate.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    /// True with probability `num/den`.
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next() % den < num
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn from(&mut self, alphabet: &[u8], n: usize) -> Vec<u8> {
        (0..n).map(|_| self.pick(alphabet)).collect()
    }
}

/// The base seed: `HOOKRELAY_FUZZ_SEED` or a fixed default (printed, for reproduction).
fn base_seed(test: &str) -> u64 {
    let seed = std::env::var("HOOKRELAY_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_2026);
    println!("{test}: HOOKRELAY_FUZZ_SEED={seed}");
    seed
}

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Count panics on tokio runtime threads (where the in-process server's connection tasks
/// run); the default hook still prints them. Test threads (assertions) are not counted.
fn count_server_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // "tokio-rt-worker" / "tokio-runtime-worker", depending on the tokio version.
            if std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("tokio-"))
            {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

fn assert_no_server_panics(what: &str) {
    let n = PANICS.load(Ordering::SeqCst);
    assert_eq!(n, 0, "{what}: {n} panic(s) on server threads (see stderr)");
}

fn prop_config(cases: u32) -> PropConfig {
    PropConfig {
        cases,
        // Failures print the minimal input; no regression files written into the tree.
        failure_persistence: None,
        ..PropConfig::default()
    }
}

/// A proptest runner seeded from the base seed (deterministic in CI, explorable locally).
fn runner(test: &str, cases: u32) -> TestRunner {
    let seed = base_seed(test);
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        let word = seed.rotate_left(i as u32 * 16) ^ test.len() as u64;
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    TestRunner::new_with_rng(
        prop_config(cases),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

fn show(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(600)];
    format!(
        "{:?}{}",
        String::from_utf8_lossy(cut),
        if bytes.len() > 600 { " …" } else { "" }
    )
}

// ---------------------------------------------------------------------------------------------
// HTTP/1 request generation (valid requests with known expectations, then abuse of them)
// ---------------------------------------------------------------------------------------------

const TCHAR: &[u8] =
    b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const PCHAR: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@";
const NAME_WORDS: &[&str] = &[
    "X",
    "Foo",
    "bar",
    "Webhook",
    "Signature",
    "ID",
    "Event",
    "type",
    "Request",
    "Trace",
    "a",
];
/// Names whose semantics change framing or the connection: never random in "valid" requests.
const SPECIAL: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "expect",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
];

/// A well-formed request and what its capture must hold.
#[derive(Clone, Debug)]
struct GenReq {
    method: String,
    /// Request target (origin-form).
    target: String,
    /// 0 = HTTP/1.0, 1 = HTTP/1.1.
    version: u8,
    /// Every header line in wire order, framing headers included.
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    wire: Vec<u8>,
}

impl GenReq {
    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
    fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }
    /// What hyper would hand the service (for the tap's `take_matching`).
    fn parts(&self) -> http::request::Parts {
        let mut b = http::Request::builder()
            .method(Method::from_bytes(self.method.as_bytes()).unwrap())
            .uri(self.target.as_str())
            .version(if self.version == 0 {
                Version::HTTP_10
            } else {
                Version::HTTP_11
            });
        for (n, v) in &self.headers {
            b = b.header(
                HeaderName::from_bytes(n).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        b.body(()).unwrap().into_parts().0
    }
}

fn gen_name(rng: &mut Rng) -> Vec<u8> {
    loop {
        let name: Vec<u8> = if rng.chance(1, 4) {
            let n = 1 + rng.below(20);
            rng.from(TCHAR, n)
        } else {
            let words: Vec<&str> = (0..1 + rng.below(3))
                .map(|_| rng.pick(NAME_WORDS))
                .collect();
            let joined = words.join("-");
            joined
                .bytes()
                .map(|b| {
                    if rng.chance(1, 5) {
                        b.to_ascii_uppercase()
                    } else {
                        b
                    }
                })
                .collect()
        };
        let lower = String::from_utf8_lossy(&name).to_ascii_lowercase();
        if !SPECIAL.contains(&lower.as_str()) && !lower.starts_with("access-control-request") {
            return name;
        }
    }
}

/// A header value hyper keeps byte for byte: visible ASCII and obs-text, inner spaces/tabs,
/// no leading or trailing whitespace (httparse trims it).
fn gen_value(rng: &mut Rng) -> Vec<u8> {
    let n = rng.below(40);
    let mut v: Vec<u8> = (0..n)
        .map(|_| match rng.below(10) {
            0 => 0x80 + rng.below(0x80) as u8,
            1 => rng.pick(b" \t"),
            _ => 0x21 + rng.below(0x7e - 0x21 + 1) as u8,
        })
        .collect();
    while v.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
        v.remove(0);
    }
    while v.last().is_some_and(|b| *b == b' ' || *b == b'\t') {
        v.pop();
    }
    v
}

fn gen_target(rng: &mut Rng, bin: &str) -> String {
    let mut t = format!("/{bin}");
    for _ in 0..rng.below(4) {
        t.push('/');
        for _ in 0..rng.below(12) {
            if rng.chance(1, 10) {
                t.push_str(rng.pick(&["%2F", "%E2%82%AC", "%00", "%ff", "%20"]));
            } else {
                t.push(rng.pick(PCHAR) as char);
            }
        }
    }
    if rng.chance(1, 2) {
        t.push('?');
        for _ in 0..rng.below(24) {
            t.push(rng.pick(b"abcXYZ019=&+%2F/?:@-._~!$'()*,;") as char);
        }
    }
    t
}

fn gen_body(rng: &mut Rng) -> Vec<u8> {
    match rng.below(5) {
        0 => Vec::new(),
        1 => {
            let n = rng.below(3000);
            rng.bytes(n)
        }
        2 => {
            // Body text that looks like a request head: the tap must not take it for one.
            b"GET /evil HTTP/1.1\r\nHost: x\r\n\r\n0\r\n\r\n".repeat(1 + rng.below(3))
        }
        _ => {
            let n = rng.below(600);
            rng.from(b"{}[]\":,abc 0123\n\r", n)
        }
    }
}

/// A valid request to `bin`: random method, target, headers (interleaved duplicates and
/// arbitrary case), Content-Length or chunked framing (extensions, trailers).
fn gen_request(rng: &mut Rng, bin: &str, allow_http10: bool) -> GenReq {
    let method = rng
        .pick(&[
            "POST", "POST", "POST", "PUT", "PATCH", "GET", "DELETE", "OPTIONS", "PURGE", "X-CUSTOM",
        ])
        .to_string();
    let target = gen_target(rng, bin);
    let version = if allow_http10 && rng.chance(1, 8) {
        0
    } else {
        1
    };
    let body = gen_body(rng);
    let chunked = version == 1 && rng.chance(1, 3);
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut names: Vec<Vec<u8>> = Vec::new();
    for _ in 0..rng.below(12) {
        // Reuse an earlier name sometimes, in another case: interleaved duplicates.
        let name = if !names.is_empty() && rng.chance(1, 4) {
            let n = names[rng.below(names.len())].clone();
            n.iter()
                .map(|b| {
                    if rng.chance(1, 2) {
                        b.to_ascii_uppercase()
                    } else {
                        b.to_ascii_lowercase()
                    }
                })
                .collect()
        } else {
            gen_name(rng)
        };
        names.push(name.clone());
        headers.push((name, gen_value(rng)));
    }
    let host = (
        rng.pick(&[&b"Host"[..], b"host", b"HOST"]).to_vec(),
        b"fuzz.example".to_vec(),
    );
    headers.insert(rng.below(headers.len() + 1), host);
    let framing = if chunked {
        (
            rng.pick(&[&b"Transfer-Encoding"[..], b"transfer-encoding"])
                .to_vec(),
            rng.pick(&[&b"chunked"[..], b"Chunked", b"gzip, chunked"])
                .to_vec(),
        )
    } else {
        (
            rng.pick(&[&b"Content-Length"[..], b"content-length", b"CONTENT-LENGTH"])
                .to_vec(),
            body.len().to_string().into_bytes(),
        )
    };
    if chunked || !body.is_empty() || rng.chance(1, 2) {
        headers.insert(rng.below(headers.len() + 1), framing);
    }
    let has_framing = headers.iter().any(|(n, _)| {
        n.eq_ignore_ascii_case(b"content-length") || n.eq_ignore_ascii_case(b"transfer-encoding")
    });
    // No framing header means no body.
    let body = if has_framing { body } else { Vec::new() };

    let nl: &[u8] = if rng.chance(1, 20) { b"\n" } else { b"\r\n" };
    let mut wire = Vec::new();
    wire.extend_from_slice(method.as_bytes());
    wire.push(b' ');
    wire.extend_from_slice(target.as_bytes());
    wire.extend_from_slice(if version == 0 {
        b" HTTP/1.0"
    } else {
        b" HTTP/1.1"
    });
    wire.extend_from_slice(nl);
    for (n, v) in &headers {
        wire.extend_from_slice(n);
        wire.push(b':');
        if !v.is_empty() || rng.chance(1, 2) {
            wire.extend_from_slice(rng.pick(&[&b" "[..], b"", b"\t", b"  "]));
        }
        wire.extend_from_slice(v);
        if rng.chance(1, 10) {
            wire.push(b' '); // trailing whitespace: trimmed by httparse and by the tap alike
        }
        wire.extend_from_slice(nl);
    }
    wire.extend_from_slice(nl);
    if chunked {
        let mut rest = &body[..];
        while !rest.is_empty() {
            let n = (1 + rng.below(700)).min(rest.len());
            let size = if rng.chance(1, 2) {
                format!("{n:x}")
            } else {
                format!("{n:X}")
            };
            wire.extend_from_slice(size.as_bytes());
            if rng.chance(1, 5) {
                wire.extend_from_slice(b";ext=\"a b\";x");
            }
            wire.extend_from_slice(b"\r\n");
            wire.extend_from_slice(&rest[..n]);
            wire.extend_from_slice(b"\r\n");
            rest = &rest[n..];
        }
        wire.extend_from_slice(b"0");
        if rng.chance(1, 5) {
            wire.extend_from_slice(b";last");
        }
        wire.extend_from_slice(b"\r\n");
        if rng.chance(1, 4) {
            wire.extend_from_slice(b"X-Trailer: t\r\nx-checksum: abc\r\n");
        }
        wire.extend_from_slice(b"\r\n");
    } else {
        wire.extend_from_slice(&body);
    }
    GenReq {
        method,
        target,
        version,
        headers,
        body,
        wire,
    }
}

/// Random edits of a byte string: bit flips, byte changes, inserts, deletes, duplicated or
/// swapped ranges, and splices of framing-relevant text.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
    const SPLICES: &[&[u8]] = &[
        b"\r\n",
        b"\n",
        b"\r",
        b"\r\n\r\n",
        b"\0",
        b"Transfer-Encoding: chunked\r\n",
        b"Content-Length: 5\r\n",
        b"Content-Length: 99999999999999999999999\r\n",
        b"Content-Length: -1\r\n",
        b"Content-Length: 1, 2\r\n",
        b"Transfer-Encoding: gzip\r\n",
        b"Expect: 100-continue\r\n",
        b"Connection: close\r\n",
        b"Upgrade: websocket\r\n",
        b" HTTP/1.1",
        b"HTTP/2.0",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"ffffffffffffffffffff\r\n",
        b"\xff\xfe\x80",
        b" \t ",
        b":",
    ];
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let extra = rng.bytes(n);
                data.splice(i..i, extra);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let j = (i + 1 + rng.below(16)).min(len);
                data.drain(i..j);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let j = (i + 1 + rng.below(64)).min(len);
                let piece = data[i..j].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, piece);
            }
            5 => {
                let i = rng.below(len + 1);
                data.splice(i..i, rng.pick(SPLICES).iter().copied());
            }
            _ if len > 1 => {
                let i = rng.below(len);
                let j = rng.below(len);
                data.swap(i, j);
            }
            _ => data.push(rng.next() as u8),
        }
    }
}

/// One abusive input (the `kind` is for the statistics printed at the end).
fn gen_abuse(rng: &mut Rng, bin: &str) -> (&'static str, Vec<u8>) {
    match rng.below(9) {
        0 => ("random bytes", {
            let n = rng.below(1500);
            rng.bytes(n)
        }),
        1 => ("broken request line", {
            let lines: &[&[u8]] = &[
                b"GET\r\n\r\n",
                b"GET /\r\n\r\n",
                b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
                b"GET  /  HTTP/1.1\r\n\r\n",
                b" GET / HTTP/1.1\r\n\r\n",
                b"GET / HTTP/1.1 extra\r\n\r\n",
                b"G\x00T / HTTP/1.1\r\n\r\n",
                b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
                b"CONNECT x:1 HTTP/1.1\r\nHost: x\r\n\r\n",
                b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET / HTTP/1.1\rHost: x\r\r\n",
                b"\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n",
                b"GET /\t/ HTTP/1.1\r\n\r\n",
                b"HTTP/1.1 200 OK\r\n\r\n",
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
            ];
            let mut v = rng.pick(lines).to_vec();
            if rng.chance(1, 2) {
                mutate(rng, &mut v);
            }
            v
        }),
        2 => ("huge or many headers", {
            let mut v = format!("POST /{bin}/big HTTP/1.1\r\nHost: x\r\n").into_bytes();
            match rng.below(4) {
                0 => {
                    // Over the 64 KiB head limit: hyper answers 431.
                    v.extend_from_slice(b"X-Big: ");
                    v.extend(std::iter::repeat_n(b'a', 65_000 + rng.below(20_000)));
                    v.extend_from_slice(b"\r\n");
                }
                1 => {
                    for i in 0..(90 + rng.below(40)) {
                        v.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
                    }
                }
                2 => {
                    let name = {
                        let n = 2000 + rng.below(9000);
                        rng.from(TCHAR, n)
                    };
                    v.extend_from_slice(&name);
                    v.extend_from_slice(b": x\r\n");
                }
                _ => {
                    for _ in 0..(20 + rng.below(30)) {
                        v.extend_from_slice(b"X-Dup: ");
                        let val = {
                            let n = 500 + rng.below(1000);
                            rng.from(b"abc ", n)
                        };
                        v.extend_from_slice(&val);
                        v.extend_from_slice(b"x\r\n");
                    }
                }
            }
            v.extend_from_slice(b"Content-Length: 2\r\n\r\n{}");
            v
        }),
        3 => ("invalid UTF-8 and control bytes", {
            let mut r = gen_request(rng, bin, false).wire;
            let head_end = r
                .windows(2)
                .position(|w| w == b"\n\r" || w == b"\n\n")
                .unwrap_or(r.len());
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(head_end.max(1));
                let b = if rng.chance(1, 2) {
                    rng.below(0x20) as u8
                } else {
                    0x80 + rng.below(0x80) as u8
                };
                if i < r.len() {
                    r[i] = b;
                }
            }
            r
        }),
        4 => ("chunked abuse", {
            let mut v = format!(
                "POST /{bin}/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            .into_bytes();
            let bodies: &[&[u8]] = &[
                b"zz\r\nab\r\n0\r\n\r\n",
                b"-1\r\nab\r\n0\r\n\r\n",
                b"ffffffffffffffffffffff\r\nab\r\n0\r\n\r\n",
                b"7fffffffffffffff\r\nabc",
                b"fffffff\r\nabc",
                b"3\r\nabcdef\r\n0\r\n\r\n",
                b"3\r\nabc0\r\n\r\n",
                b"3abc\r\n0\r\n\r\n",
                b"3\nabc\n0\n\n",
                b"3 ; ext\r\nabc\r\n0\r\n\r\n",
                b"0\r\nTrailer: x\r\nTrailer2: y\r\n\r\n",
                b"0\r\nbad trailer\r\n\r\n",
                b"0\r\n\r",
                b"2\r\nab\r\n",
                b"1;a=\x01\r\na\r\n0\r\n\r\n",
                b"\r\n\r\n",
            ];
            v.extend_from_slice(rng.pick(bodies));
            if rng.chance(1, 4) {
                // Chunk extensions or trailers past hyper's 16 KiB limits.
                let long = {
                    let n = 17_000 + rng.below(2000);
                    rng.from(b"abc=;", n)
                };
                if rng.chance(1, 2) {
                    v.extend_from_slice(b"1;");
                    v.extend_from_slice(&long);
                    v.extend_from_slice(b"\r\na\r\n0\r\n\r\n");
                } else {
                    v.extend_from_slice(b"0\r\nX-T: ");
                    v.extend_from_slice(&long);
                    v.extend_from_slice(b"\r\n\r\n");
                }
            }
            if rng.chance(1, 3) {
                mutate(rng, &mut v);
            }
            v
        }),
        5 => ("conflicting framing", {
            let heads: &[&str] = &[
                "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
                "Content-Length: 3\r\nContent-Length: 4\r\n",
                "Content-Length: 3\r\nContent-Length: 3\r\n",
                "Transfer-Encoding: gzip\r\n",
                "Transfer-Encoding: chunked, gzip\r\n",
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "Content-Length: +3\r\n",
                "Content-Length: 3 \r\n",
                "Content-Length: 99999999999\r\n",
                "Expect: 100-continue\r\nContent-Length: 3\r\n",
                "Expect: 100-continue\r\nContent-Length: 999999999\r\n",
            ];
            let version = if rng.chance(1, 4) { "1.0" } else { "1.1" };
            let mut v = format!(
                "POST /{bin}/framing HTTP/{version}\r\nHost: x\r\n{}\r\n3\r\nabc\r\n0\r\n\r\n",
                rng.pick(heads)
            )
            .into_bytes();
            if rng.chance(1, 3) {
                mutate(rng, &mut v);
            }
            v
        }),
        6 => ("pipelined garbage", {
            let mut v = Vec::new();
            for _ in 0..2 + rng.below(4) {
                if rng.chance(1, 2) {
                    v.extend_from_slice(&gen_request(rng, bin, false).wire);
                } else {
                    let n = rng.below(200);
                    v.extend_from_slice(&rng.bytes(n));
                }
            }
            v
        }),
        _ => ("mutated valid request", {
            let mut v = gen_request(rng, bin, true).wire;
            if rng.chance(1, 3) {
                v.extend_from_slice(&gen_request(rng, bin, false).wire);
            }
            mutate(rng, &mut v);
            v
        }),
    }
}

/// Cut `data` into up to `max` pieces at random points.
fn split(rng: &mut Rng, data: &[u8], max: usize) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = (0..rng.below(max))
        .map(|_| rng.below(data.len() + 1))
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut at = 0;
    for c in cuts {
        out.push(data[at..c].to_vec());
        at = c;
    }
    out.push(data[at..].to_vec());
    out.retain(|p| !p.is_empty());
    out
}

// ---------------------------------------------------------------------------------------------
// HTTP/1 response parsing (the server's answers must be well-formed)
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// Parse every response in `buf`. HEAD answers carry a Content-Length but no body, so a
/// declared body is skipped only if what follows is another response (or nothing).
fn parse_answers(mut buf: &[u8]) -> Result<Vec<Answer>, String> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let mut slots = [httparse::EMPTY_HEADER; 128];
        let mut resp = httparse::Response::new(&mut slots);
        let n = match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Err(format!("truncated head: {}", show(buf))),
            Err(e) => return Err(format!("bad response head ({e}): {}", show(buf))),
        };
        let status = resp.code.ok_or("no status")?;
        if !(100..=599).contains(&status) {
            return Err(format!("status {status} out of range"));
        }
        if resp.version.is_none() {
            return Err("no version".into());
        }
        let headers: Vec<(String, Vec<u8>)> = resp
            .headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_vec()))
            .collect();
        let rest = &buf[n..];
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let is_next = |b: &[u8]| b.is_empty() || b.starts_with(b"HTTP/");
        let (body, used) = if (100..200).contains(&status) || status == 204 || status == 304 {
            (Vec::new(), 0)
        } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case(b"chunked")) {
            let (body, used) = dechunk(rest)?;
            (body, used)
        } else if let Some(cl) = get("content-length") {
            let len: usize = std::str::from_utf8(&cl)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad content-length {}", show(&cl)))?;
            if rest.len() >= len && is_next(&rest[len..]) {
                (rest[..len].to_vec(), len)
            } else if is_next(rest) {
                (Vec::new(), 0) // a HEAD answer
            } else {
                return Err(format!(
                    "body shorter than content-length {len}: {}",
                    show(rest)
                ));
            }
        } else {
            (rest.to_vec(), rest.len()) // close-delimited
        };
        out.push(Answer {
            status,
            headers,
            body,
        });
        buf = &rest[used..];
    }
    Ok(out)
}

/// The HTTP/2 client preface: the server speaks h2c to it (prior knowledge).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// HTTP/2 answers must be whole frames of known types, starting with SETTINGS.
fn check_h2_frames(mut buf: &[u8]) -> Result<usize, String> {
    let mut frames = 0;
    while !buf.is_empty() {
        if buf.len() < 9 {
            return Err(format!("truncated h2 frame header: {}", show(buf)));
        }
        let len = (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
        let kind = buf[3];
        if kind > 9 || (frames == 0 && kind != 4) || buf.len() < 9 + len {
            return Err(format!(
                "bad h2 frame (type {kind}, len {len}): {}",
                show(buf)
            ));
        }
        buf = &buf[9 + len..];
        frames += 1;
    }
    Ok(frames)
}

fn dechunk(mut buf: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let start = buf.len();
    let mut body = Vec::new();
    loop {
        let line_end = buf
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size = usize::from_str_radix(
            std::str::from_utf8(&buf[..line_end]).map_err(|_| "chunk size not text")?,
            16,
        )
        .map_err(|_| "bad chunk size")?;
        buf = &buf[line_end + 2..];
        if size == 0 {
            if !buf.starts_with(b"\r\n") {
                return Err("no final CRLF".into());
            }
            buf = &buf[2..];
            return Ok((body, start - buf.len()));
        }
        if buf.len() < size + 2 || &buf[size..size + 2] != b"\r\n" {
            return Err("truncated chunk".into());
        }
        body.extend_from_slice(&buf[..size]);
        buf = &buf[size + 2..];
    }
}

/// Write `pieces` on a fresh connection (random split points exercise the tap), half-close,
/// and read until the server closes. Returns the bytes read and whether it timed out.
async fn exchange(addr: SocketAddr, pieces: &[Vec<u8>], wait: Duration) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.set_nodelay(true);
    for p in pieces {
        if s.write_all(p).await.is_err() {
            break; // the server already answered and closed (e.g. 431)
        }
        tokio::task::yield_now().await;
    }
    let _ = s.shutdown().await;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (out, true),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, false),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// A normal request on a fresh connection must still be answered 200 with a seq.
async fn assert_serving(addr: SocketAddr, bin: &str, round: usize) -> u64 {
    let body = format!("{{\"round\":{round}}}");
    let req = format!(
        "POST /{bin}/alive HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (out, timed_out) = exchange(addr, &[req.into_bytes()], Duration::from_secs(10)).await;
    assert!(!timed_out, "liveness request timed out after round {round}");
    let answers = parse_answers(&out).unwrap_or_else(|e| panic!("round {round}: {e}"));
    assert_eq!(answers.len(), 1, "round {round}: {}", show(&out));
    assert_eq!(answers[0].status, 200, "round {round}: {}", show(&out));
    assert_eq!(answers[0].body, b"{}", "round {round}");
    seq_of(&answers[0]).expect("seq on a 200")
}

fn seq_of(a: &Answer) -> Option<u64> {
    a.header("x-hookrelay-seq")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------------------------------------
// 1. Raw TCP against the live server
// ---------------------------------------------------------------------------------------------

/// One connection's input: its kind, the valid requests in it (if any), the write pieces.
type Input = (&'static str, Vec<GenReq>, Vec<Vec<u8>>);

/// Known captures posted first and re-read at the end, byte for byte.
struct Known {
    seq: u64,
    json: Bytes,
    body: Bytes,
}

async fn post_known(srv: &TestServer, bin: &str, key: &str) -> Vec<Known> {
    let bodies: Vec<Vec<u8>> = vec![
        common::PAYMENT_SUCCESS.as_bytes().to_vec(),
        (0..=255u8).collect(),
        b"line1\r\nline2\n\0\x7f".to_vec(),
        Vec::new(),
        "caf\u{e9} \u{1F600}".as_bytes().to_vec(),
    ];
    let mut known = Vec::new();
    for (i, body) in bodies.into_iter().enumerate() {
        let req = [
            format!(
                "PUT /{bin}/known/{i}?a=1&b=%20 HTTP/1.1\r\nHost: k\r\nX-Mixed-CASE: v{i}\r\nx-dup: 1\r\nX-Other: \u{e9}\r\nX-DUP: 2\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes(),
            body.clone(),
        ]
        .concat();
        let (out, _) = exchange(srv.addr, &[req], Duration::from_secs(5)).await;
        let answers = parse_answers(&out).unwrap();
        assert_eq!(answers[0].status, 200);
        let seq = seq_of(&answers[0]).unwrap();
        let json = get_ok(srv, &format!("/api/bins/{bin}/requests/{seq}"), key).await;
        let raw = get_ok(srv, &format!("/api/bins/{bin}/requests/{seq}/body"), key).await;
        assert_eq!(raw, body, "known body {i}");
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["headers_exact"], true, "{v}");
        known.push(Known {
            seq,
            json,
            body: raw,
        });
    }
    known
}

/// GET an API path with a key; must answer 200.
async fn get_ok(srv: &TestServer, path: &str, key: &str) -> Bytes {
    let r = srv
        .request(Method::GET, path, Some(key), &[], Bytes::new())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{path}: {}", show(&r.body));
    r.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_tcp_fuzz_never_breaks_the_server_or_stored_captures() {
    count_server_panics();
    let started = Instant::now();
    let seed = base_seed("raw_tcp_fuzz");
    let srv = TestServer::start(&["--header-timeout", "3s", "--body-timeout", "3s"]).await;
    let (known_bin, known_key) = srv.create_bin(r#"{"capacity":100}"#).await;
    let (fuzz_bin, fuzz_key) = srv.create_bin(r#"{"capacity":10000}"#).await;
    let known = post_known(&srv, &known_bin, &known_key).await;

    const ROUNDS: usize = 40;
    const PER_ROUND: usize = 60;
    const CONCURRENCY: usize = 12;
    let mut rng = Rng::new(seed);
    let mut stats: BTreeMap<&'static str, (usize, usize)> = BTreeMap::new();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut answered_seqs: HashSet<u64> = HashSet::new();
    let mut expected: HashMap<u64, GenReq> = HashMap::new();
    let mut inputs = 0usize;
    let mut timeouts = 0usize;
    let mut unanswered = 0usize;
    for round in 0..ROUNDS {
        // Build the round's inputs first (the PRNG stays on this task).
        let mut batch: Vec<Input> = Vec::new();
        for _ in 0..PER_ROUND {
            if rng.chance(1, 4) {
                // Valid requests (1–4 pipelined): their captures are checked byte for byte.
                let n = if rng.chance(1, 2) {
                    1
                } else {
                    1 + rng.below(4)
                };
                let reqs: Vec<GenReq> = (0..n)
                    .map(|_| gen_request(&mut rng, &fuzz_bin, n == 1))
                    .collect();
                let wire: Vec<u8> = reqs.iter().flat_map(|r| r.wire.clone()).collect();
                let pieces = split(&mut rng, &wire, 6);
                batch.push(("valid (pipelined)", reqs, pieces));
            } else {
                let (kind, data) = gen_abuse(&mut rng, &fuzz_bin);
                let pieces = split(&mut rng, &data, 4);
                batch.push((kind, Vec::new(), pieces));
            }
        }
        let addr = srv.addr;
        let results: Vec<_> =
            futures_util::stream::iter(batch.into_iter().map(|(kind, reqs, pieces)| async move {
                let (out, timed_out) = exchange(addr, &pieces, Duration::from_secs(8)).await;
                (kind, reqs, pieces, out, timed_out)
            }))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (kind, reqs, pieces, out, timed_out) in results {
            inputs += 1;
            let entry = stats.entry(kind).or_default();
            entry.0 += 1;
            if timed_out {
                timeouts += 1;
                entry.1 += 1;
            }
            let input = pieces.concat();
            if out.is_empty() {
                unanswered += 1;
            }
            if input.starts_with(H2_PREFACE) {
                if let Err(e) = check_h2_frames(&out) {
                    panic!("malformed h2 answer: {e}\ninput: {}", show(&input));
                }
                *statuses.entry(0).or_default() += 1; // 0 = an HTTP/2 exchange
                continue;
            }
            let answers = parse_answers(&out).unwrap_or_else(|e| {
                panic!(
                    "malformed answer ({kind}): {e}\ninput: {}\noutput: {}",
                    show(&input),
                    show(&out)
                )
            });
            for a in &answers {
                *statuses.entry(a.status).or_default() += 1;
                assert!(
                    a.status != 500,
                    "500 for input {}\n{}",
                    show(&input),
                    show(&out)
                );
                if let Some(seq) = seq_of(a) {
                    assert!(
                        answered_seqs.insert(seq),
                        "seq {seq} answered twice (input {})",
                        show(&input)
                    );
                    assert_eq!(
                        a.header("content-security-policy"),
                        Some(&b"sandbox"[..]),
                        "inbound answers carry CSP sandbox"
                    );
                }
            }
            if !reqs.is_empty() {
                assert_eq!(
                    answers.len(),
                    reqs.len(),
                    "one answer per valid request\ninput: {}\noutput: {}",
                    show(&input),
                    show(&out)
                );
                for (req, a) in reqs.into_iter().zip(&answers) {
                    assert!(
                        (200..300).contains(&a.status),
                        "valid request answered {}: {}",
                        a.status,
                        show(&req.wire)
                    );
                    let seq = seq_of(a).expect("2xx carries X-Hookrelay-Seq");
                    expected.insert(seq, req);
                }
            }
        }
        let seq = assert_serving(srv.addr, &fuzz_bin, round).await;
        answered_seqs.insert(seq);
    }

    // Every answered seq exists; valid requests were captured exactly.
    let bin = srv
        .state
        .store
        .lookup(&fuzz_bin)
        .await
        .unwrap()
        .expect("fuzz bin");
    for seq in &answered_seqs {
        assert!(
            bin.get(*seq).is_some(),
            "seq {seq} was answered but is not stored"
        );
    }
    let last = bin.info().last_seq;
    assert!(answered_seqs.iter().all(|s| *s <= last));
    for (seq, req) in &expected {
        let c = bin.get(*seq).unwrap();
        let wire = show(&req.wire);
        assert_eq!(c.method().as_str(), req.method, "{wire}");
        assert_eq!(c.path(), req.path(), "{wire}");
        assert_eq!(c.query(), req.query(), "{wire}");
        assert_eq!(&c.body()[..], &req.body[..], "body of {wire}");
        assert!(c.meta().headers_exact, "headers_exact for {wire}");
        let got: Vec<(Vec<u8>, Vec<u8>)> =
            c.headers().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
        assert_eq!(got, req.headers, "headers of {wire}");
    }

    // Captures stored before the fuzzing are intact, byte for byte.
    for k in &known {
        let json = get_ok(
            &srv,
            &format!("/api/bins/{known_bin}/requests/{}", k.seq),
            &known_key,
        )
        .await;
        let body = get_ok(
            &srv,
            &format!("/api/bins/{known_bin}/requests/{}/body", k.seq),
            &known_key,
        )
        .await;
        assert_eq!(json, k.json, "capture {} changed", k.seq);
        assert_eq!(body, k.body, "body of capture {} changed", k.seq);
    }
    let list = srv.captures(&known_bin, &known_key, 0).await;
    assert_eq!(list.len(), known.len(), "no capture lost or added");
    let _ = fuzz_key;
    assert_no_server_panics("raw TCP fuzz");
    println!(
        "raw TCP fuzz: {inputs} connections ({} valid requests checked byte for byte, {} seqs answered), \
         {unanswered} closed without an answer, {timeouts} waited for the server's timeouts, {:.1} s",
        expected.len(),
        answered_seqs.len(),
        started.elapsed().as_secs_f64()
    );
    println!("  by kind (count, timeouts): {stats:?}");
    println!("  statuses (0 = HTTP/2 exchange): {statuses:?}");
}

/// Regression: hyper's default drops the in-flight request when the client shuts down its
/// write side (EOF) — `printf … | nc -N` lost its webhook, unanswered and uncaptured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_followed_by_a_half_close_is_answered_and_captured() {
    count_server_panics();
    let srv = TestServer::start(&[]).await;
    let (bin, key) = srv.create_bin("").await;
    for (i, len) in [0usize, 10, 100_000, 1 << 20].into_iter().enumerate() {
        let req = [
            format!("POST /{bin}/hc HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n")
                .into_bytes(),
            vec![b'a'; len],
        ]
        .concat();
        let (out, timed_out) = exchange(srv.addr, &[req], Duration::from_secs(5)).await;
        assert!(!timed_out);
        let answers = parse_answers(&out).unwrap();
        assert_eq!(answers.len(), 1, "body of {len} bytes: {}", show(&out));
        assert_eq!(answers[0].status, 200);
        assert_eq!(seq_of(&answers[0]), Some(i as u64 + 1));
        let list = srv.captures(&bin, &key, 0).await;
        assert_eq!(list.len(), i + 1);
        assert_eq!(list[i]["body_size"], len);
    }
    assert_no_server_panics("half close");
}

/// Regression: an authority-form target (`CONNECT host:port`) has an empty path, and the
/// router's `path[1..]` panicked inside the connection task (no answer at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_asterisk_form_targets_are_answered() {
    count_server_panics();
    let srv = TestServer::start(&[]).await;
    for (req, want) in [
        (
            &b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"[..],
            404,
        ),
        (b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"GET http://x HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    ] {
        let (out, _) = exchange(srv.addr, &[req.to_vec()], Duration::from_secs(5)).await;
        let answers = parse_answers(&out).unwrap();
        assert_eq!(answers.len(), 1, "{}: {}", show(req), show(&out));
        assert_eq!(answers[0].status, want, "{}", show(req));
    }
    assert_no_server_panics("CONNECT");
}

// ---------------------------------------------------------------------------------------------
// 2. The tap state machine: arbitrary byte streams split at random points
// ---------------------------------------------------------------------------------------------

/// Hands out `data` in pieces of the given sizes (then whatever the buffer takes).
struct Pieces {
    data: Vec<u8>,
    sizes: Vec<usize>,
    pos: usize,
    next: usize,
}

impl AsyncRead for Pieces {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let want = this.sizes.get(this.next).copied().unwrap_or(usize::MAX);
        this.next += 1;
        let n = want
            .max(1)
            .min(this.data.len() - this.pos)
            .min(buf.remaining());
        buf.put_slice(&this.data[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// Read everything through a `TapIo` (as hyper would, with a partly filled buffer at times)
/// and return the bytes seen by the reader.
fn read_through_tap(tap: &HeadTap, data: &[u8], sizes: Vec<usize>, prefill: usize) -> Vec<u8> {
    let mut io = tap.wrap(Pieces {
        data: data.to_vec(),
        sizes,
        pos: 0,
        next: 0,
    });
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    let mut storage = vec![0u8; 8192 + prefill];
    loop {
        let mut rb = ReadBuf::new(&mut storage);
        rb.put_slice(&vec![b'#'; prefill]);
        match Pin::new(&mut io).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let fresh = &rb.filled()[prefill..];
                if fresh.is_empty() {
                    return out;
                }
                out.extend_from_slice(fresh);
            }
            other => panic!("unexpected poll result {other:?}"),
        }
    }
}

type Taken = Vec<Option<Vec<(Vec<u8>, Vec<u8>)>>>;

fn take_all(tap: &HeadTap, reqs: &[GenReq]) -> Taken {
    reqs.iter()
        .map(|r| {
            tap.take_matching(&r.parts())
                .map(|h| h.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect())
        })
        .collect()
}

#[test]
fn tap_state_machine_is_exact_on_valid_streams_and_split_invariant_on_mutated_ones() {
    let started = Instant::now();
    let seed = base_seed("tap");
    let mut rng = Rng::new(seed ^ 0x7A9);
    const CASES: usize = 3000;
    let mut exact = 0usize;
    for case in 0..CASES {
        let reqs: Vec<GenReq> = (0..1 + rng.below(5))
            .map(|_| gen_request(&mut rng, "tapbin", false))
            .collect();
        let mut data: Vec<u8> = reqs.iter().flat_map(|r| r.wire.clone()).collect();
        let mutated = case % 2 == 1;
        if mutated {
            mutate(&mut rng, &mut data);
            if rng.chance(1, 4) {
                let extra = gen_abuse(&mut rng, "tapbin").1;
                data.extend_from_slice(&extra);
            }
        }
        let sizes: Vec<usize> = (0..rng.below(40))
            .map(|_| {
                if rng.chance(1, 3) {
                    1
                } else {
                    1 + rng.below(300)
                }
            })
            .collect();
        let prefill = if rng.chance(1, 3) { rng.below(64) } else { 0 };

        let whole = HeadTap::new();
        let seen = read_through_tap(&whole, &data, Vec::new(), 0);
        assert_eq!(seen, data, "TapIo passes bytes through unchanged");
        let split_tap = HeadTap::new();
        let seen = read_through_tap(&split_tap, &data, sizes.clone(), prefill);
        assert_eq!(seen, data, "TapIo passes bytes through unchanged (split)");

        let a = take_all(&whole, &reqs);
        let b = take_all(&split_tap, &reqs);
        assert_eq!(
            a,
            b,
            "split points changed what the tap recorded\nstream: {}\nsizes: {sizes:?}",
            show(&data)
        );
        if !mutated {
            for (r, got) in reqs.iter().zip(&a) {
                assert_eq!(
                    got.as_ref(),
                    Some(&r.headers),
                    "valid head not recorded exactly: {}",
                    show(&r.wire)
                );
            }
            exact += reqs.len();
        }
    }
    println!(
        "tap: {CASES} streams ({exact} valid heads matched exactly), {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Settings: random JSON to the merge patch (pure) and to PATCH /api/bins/<id>
// ---------------------------------------------------------------------------------------------

const FIELDS: &[&str] = &[
    "capacity",
    "response",
    "status",
    "headers",
    "body",
    "delay_ms",
    "forward",
    "url",
    "retries",
    "timeout_ms",
    "verify",
    "scheme",
    "secret",
    "secret_set",
    "header",
    "tolerance_s",
    "reject_invalid",
];

// Strategies are boxed: the unboxed nested types make debug-build stack frames large
// enough to overflow a test thread's 2 MiB stack while generating.
fn arb_leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u64..700).prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        ".{0,24}".prop_map(Value::String),
        prop_oneof![
            Just("stripe"),
            Just("github"),
            Just("standard"),
            Just("hmac-sha256"),
            Just("header-secret"),
            Just("GITHUB"),
            Just("http://127.0.0.1:9/x"),
            Just("ftp://x"),
            Just("Set-Cookie"),
            Just("X-Ok"),
            Just("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ]
    .boxed()
}

fn arb_json() -> BoxedStrategy<Value> {
    let key = prop_oneof![
        3 => proptest::sample::select(FIELDS).prop_map(str::to_string),
        1 => ".{0,12}",
    ];
    arb_leaf()
        .prop_recursive(5, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
        .boxed()
}

/// Objects shaped like settings, with in-range and out-of-range values.
fn arb_settings_like() -> BoxedStrategy<Value> {
    let header_pair = (
        prop_oneof![
            Just("X-Ok".to_string()),
            Just("Set-Cookie".to_string()),
            Just("content-security-policy-report-only".to_string()),
            Just("Proxy-Foo".to_string()),
            "[ -~]{0,12}",
        ],
        "[ -~\u{80}-\u{2ff}\n]{0,16}",
    )
        .prop_map(|(n, v)| Value::Array(vec![n.into(), v.into()]))
        .boxed();
    let response = (
        prop::option::of(prop_oneof![(0u64..700).prop_map(Value::from), arb_leaf()]),
        prop::option::of(prop_oneof![
            prop::collection::vec(header_pair, 0..4).prop_map(Value::Array),
            arb_leaf()
        ]),
        prop::option::of(prop_oneof![".{0,40}".prop_map(Value::String), arb_leaf()]),
        prop::option::of(prop_oneof![
            (0u64..40_000).prop_map(Value::from),
            arb_leaf()
        ]),
    )
        .prop_map(|(s, h, b, d)| {
            let mut m = serde_json::Map::new();
            for (k, v) in [("status", s), ("headers", h), ("body", b), ("delay_ms", d)] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            Value::Object(m)
        })
        .boxed();
    let target = (
        prop_oneof![
            Just("http://127.0.0.1:9/hook".to_string()),
            Just("https://example.com".to_string()),
            Just("not a url".to_string()),
            ".{0,20}"
        ],
        prop::option::of(0u64..15),
        prop::option::of(0u64..70_000),
    )
        .prop_map(|(u, r, t)| {
            let mut m = serde_json::Map::new();
            m.insert("url".into(), u.into());
            if let Some(r) = r {
                m.insert("retries".into(), r.into());
            }
            if let Some(t) = t {
                m.insert("timeout_ms".into(), t.into());
            }
            Value::Object(m)
        })
        .boxed();
    let verify = (
        prop_oneof![
            proptest::sample::select(Scheme::ALL.to_vec())
                .prop_map(|s| Value::String(s.as_str().into())),
            arb_leaf()
        ],
        prop::option::of(prop_oneof![".{0,30}".prop_map(Value::String), arb_leaf()]),
        prop::option::of(arb_leaf()),
        prop::option::of(prop_oneof![
            (0u64..700_000).prop_map(Value::from),
            arb_leaf()
        ]),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(scheme, secret, header, tol, reject)| {
            let mut m = serde_json::Map::new();
            m.insert("scheme".into(), scheme);
            for (k, v) in [("secret", secret), ("header", header), ("tolerance_s", tol)] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            if let Some(r) = reject {
                m.insert("reject_invalid".into(), r.into());
            }
            Value::Object(m)
        })
        .boxed();
    (
        prop::option::of(prop_oneof![
            (0u64..12_000).prop_map(Value::from),
            arb_leaf()
        ]),
        prop::option::of(prop_oneof![response, Just(Value::Null)]),
        prop::option::of(prop_oneof![
            prop::collection::vec(target, 0..7).prop_map(Value::Array),
            arb_leaf()
        ]),
        prop::option::of(prop_oneof![verify, Just(Value::Null)]),
        prop::option::of((".{1,8}", arb_leaf())),
    )
        .prop_map(|(c, r, f, v, unknown)| {
            let mut m = serde_json::Map::new();
            for (k, val) in [
                ("capacity", c),
                ("response", r),
                ("forward", f),
                ("verify", v),
            ] {
                if let Some(val) = val {
                    m.insert(k.into(), val);
                }
            }
            if let Some((k, val)) = unknown {
                m.insert(k, val);
            }
            Value::Object(m)
        })
        .boxed()
}

/// Patch bodies: JSON values, settings-shaped objects, broken and pathological text.
fn arb_patch_body() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        3 => arb_settings_like().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        2 => arb_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => (arb_settings_like(), any::<prop::sample::Index>()).prop_map(|(v, i)| {
            let text = serde_json::to_vec(&v).unwrap();
            text[..i.index(text.len() + 1)].to_vec()
        }),
        1 => (1usize..3000, any::<bool>()).prop_map(|(depth, obj)| if obj {
            format!("{}1{}", "{\"capacity\":".repeat(depth), "}".repeat(depth)).into_bytes()
        } else {
            format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
        }),
        1 => prop_oneof![
            Just(b"{\"capacity\":1e999}".to_vec()),
            Just(b"{\"capacity\":123456789012345678901234567890}".to_vec()),
            Just(b"{\"capacity\":-0}".to_vec()),
            Just(b"{\"capacity\":5.0}".to_vec()),
            Just(b"{\"capacity\":500,\"capacity\":501}".to_vec()),
            Just(b"{\"response\":{\"status\":200,\"body\":\"\\ud800\"}}".to_vec()),
            Just(b"\xef\xbb\xbf{}".to_vec()),
            Just(b"{} {}".to_vec()),
            Just(b"null".to_vec()),
            Just(b"".to_vec()),
        ],
    ]
    .boxed()
}

/// A bin's settings with a secret set, to check it never shows.
fn base_settings() -> Settings {
    Settings::with_capacity(500)
        .merge_patch(br#"{"verify":{"scheme":"github","secret":"TOPSECRET-do-not-show"}}"#)
        .unwrap()
}

#[test]
fn settings_merge_patch_accepts_or_names_the_problem() {
    let started = Instant::now();
    let base = base_settings();
    let mut runner = runner("settings merge patch", 5000);
    let ok = AtomicUsize::new(0);
    runner
        .run(&arb_patch_body(), |body| {
            match base.merge_patch(&body) {
                Ok(s) => {
                    ok.fetch_add(1, Ordering::Relaxed);
                    prop_assert!(s.validate().is_ok());
                    let public = s.public_json();
                    let text = public.to_string();
                    prop_assert!(
                        !text.contains("TOPSECRET"),
                        "secret shown: {text} (patch {})",
                        show(&body)
                    );
                    if let Some(v) = public.get("verify").filter(|v| v.is_object()) {
                        prop_assert_eq!(&v["secret"], &Value::Null);
                    }
                    // The stored form round-trips through a merge patch onto defaults.
                    let again = Settings::with_capacity(1)
                        .merge_patch(&serde_json::to_vec(&s).unwrap())
                        .unwrap();
                    prop_assert_eq!(again, s);
                }
                Err(e) => {
                    prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
                    prop_assert!(
                        matches!(e.code, "invalid_json" | "invalid_settings"),
                        "{}",
                        e.code
                    );
                    prop_assert!(!e.message.is_empty());
                }
            }
            Ok(())
        })
        .unwrap();
    println!(
        "settings merge patch: 5000 cases ({} accepted), {:.1} s",
        ok.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_patch_over_rest_is_200_or_400_and_400_changes_nothing() {
    count_server_panics();
    let started = Instant::now();
    let srv = TestServer::start(&[]).await;
    let (bin, key) = srv
        .create_bin(r#"{"verify":{"scheme":"github","secret":"TOPSECRET-do-not-show"}}"#)
        .await;
    let path = format!("/api/bins/{bin}");
    let mut runner = runner("settings PATCH", 1);
    let strategy = arb_patch_body();
    let read =
        |b: Bytes| -> Value { serde_json::from_slice::<Value>(&b).unwrap()["settings"].clone() };
    let mut current = read(get_ok(&srv, &path, &key).await);
    const CASES: usize = 400;
    let (mut ok, mut bad) = (0, 0);
    for _ in 0..CASES {
        let body = strategy.new_tree(&mut runner).unwrap().current();
        let r = srv
            .request(Method::PATCH, &path, Some(&key), &[], body.clone())
            .await;
        let v: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| {
            panic!(
                "PATCH {} → {} non-JSON ({e}): {}",
                show(&body),
                r.status,
                show(&r.body)
            )
        });
        assert!(
            !r.body.windows(9).any(|w| w == b"TOPSECRET"),
            "secret echoed"
        );
        match r.status {
            StatusCode::OK => {
                ok += 1;
                current = v["settings"].clone();
                assert!(current.is_object());
            }
            StatusCode::BAD_REQUEST => {
                bad += 1;
                assert!(v["error"].is_string(), "{v}");
                assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
            }
            other => panic!("PATCH {} answered {other}: {v}", show(&body)),
        }
        let now = read(get_ok(&srv, &path, &key).await);
        assert_eq!(now, current, "settings after PATCH {}", show(&body));
    }
    assert!(
        ok > 20 && bad > 20,
        "both outcomes exercised: {ok} ok, {bad} bad"
    );
    assert_no_server_panics("settings PATCH fuzz");
    println!(
        "settings PATCH over REST: {CASES} requests ({ok} × 200, {bad} × 400), {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// 4. WebSocket client messages
// ---------------------------------------------------------------------------------------------

/// Random client messages: protocol-shaped JSON, random JSON, random text and binary.
fn gen_ws_message(rng: &mut Rng, last_seq: u64) -> Message {
    let delivery = |rng: &mut Rng| {
        // Fields past `bound_delivery`'s caps, the whole message under the 256 KiB limit.
        let long = "é".repeat(rng.below(3000));
        serde_json::json!({
            "target": if rng.chance(1, 3) { long.clone() } else { "http://x/".into() },
            "attempt": rng.next() as u32,
            "at": if rng.chance(1, 2) { long.clone() } else { "2026-01-01T00:00:00Z".into() },
            "status": rng.below(700),
            "duration_ms": rng.below(100_000) as f64 / 7.0,
            "error": if rng.chance(1, 2) { Value::Null } else { Value::String(long.clone()) },
            "response_headers": (0..rng.below(150)).map(|i| serde_json::json!([format!("h{i}"), "v".repeat(i % 5000)])).collect::<Vec<_>>(),
            "response_body": if rng.chance(1, 4) { "x".repeat(70_000) } else { "ok".into() },
            "via": if rng.chance(1, 2) { "forward".to_string() } else { long },
        })
    };
    match rng.below(8) {
        0 => Message::text(r#"{"type":"ping"}"#),
        1 => {
            let seq = match rng.below(4) {
                0 => 0,
                1 => u64::MAX,
                _ => 1 + rng.below(last_seq as usize + 2) as u64,
            };
            Message::text(
                serde_json::json!({"type":"delivery_report","seq":seq,"delivery":delivery(rng)})
                    .to_string(),
            )
        }
        2 => {
            let mut d = delivery(rng);
            d.as_object_mut()
                .unwrap()
                .insert("unknown".into(), Value::Bool(true));
            let types = ["delivery_report", "auth", "capture", "", "PING", "hello"];
            let t = rng.pick(&types);
            Message::text(
                serde_json::json!({"type": t, "seq": "1", "delivery": d, "key": 5}).to_string(),
            )
        }
        3 => {
            let mut runner = TestRunner::new_with_rng(
                prop_config(1),
                TestRng::from_seed(RngAlgorithm::ChaCha, &rng.bytes(32)),
            );
            Message::text(
                arb_json()
                    .new_tree(&mut runner)
                    .unwrap()
                    .current()
                    .to_string(),
            )
        }
        4 => {
            let n = rng.below(2000);
            Message::text(String::from_utf8_lossy(&rng.bytes(n)).into_owned())
        }
        5 => {
            let n = rng.below(4000);
            Message::binary(rng.bytes(n))
        }
        6 => {
            let n = rng.below(125);
            Message::Ping(Bytes::from(rng.bytes(n)))
        }
        _ => {
            let n = rng.below(125);
            Message::Pong(Bytes::from(rng.bytes(n)))
        }
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn ws_connect(srv: &TestServer, bin: &str, key: Option<&str>) -> Ws {
    let mut req = format!("ws://{}/api/bins/{bin}/ws", srv.addr)
        .into_client_request()
        .unwrap();
    if let Some(k) = key {
        req.headers_mut()
            .insert("Authorization", format!("Bearer {k}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(req).await.expect("ws").0
}

/// Read frames until a `pong` arrives: every text frame must be JSON with a `type`.
/// Returns false if the session ended (close frame or EOF) instead.
async fn until_pong(ws: &mut Ws, what: &str) -> bool {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap_or_else(|_| panic!("{what}: no pong and no close within 10 s"));
        match msg {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return false,
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t)
                    .unwrap_or_else(|e| panic!("{what}: server frame not JSON ({e}): {t}"));
                let ty = v["type"].as_str().unwrap_or_else(|| panic!("{what}: {v}"));
                if ty == "pong" {
                    return true;
                }
                if ty == "error" {
                    assert!(v["error"].is_string() && v["message"].is_string(), "{v}");
                }
            }
            Some(Ok(Message::Binary(_))) => panic!("{what}: server sent a binary frame"),
            Some(Ok(_)) => {}
        }
    }
}

/// A raw WebSocket frame with arbitrary header bits, length encoding and payload.
fn raw_ws_frame(rng: &mut Rng) -> Vec<u8> {
    let fin = rng.chance(3, 4);
    let rsv = if rng.chance(1, 8) {
        rng.below(8) as u8
    } else {
        0
    };
    let opcode = if rng.chance(1, 6) {
        rng.below(16) as u8
    } else {
        rng.pick(&[0u8, 1, 2, 8, 9, 10])
    };
    let masked = rng.chance(7, 8);
    let payload: Vec<u8> = match rng.below(4) {
        0 => b"\xff\xfe invalid utf-8 \xc3".to_vec(),
        1 => br#"{"type":"ping"}"#.to_vec(),
        2 => b"\x03\xe8bye".to_vec(),
        _ => {
            let n = rng.below(300);
            rng.bytes(n)
        }
    };
    let mut f = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
    let mask_bit = u8::from(masked) << 7;
    let declared = if rng.chance(1, 10) {
        // Lie about the length (short or absurdly long).
        rng.next() >> rng.below(64)
    } else {
        payload.len() as u64
    };
    match rng.below(3) {
        _ if declared < 126 && rng.chance(2, 3) => f.push(mask_bit | declared as u8),
        0 | 1 if declared <= u16::MAX as u64 => {
            f.push(mask_bit | 126);
            f.extend_from_slice(&(declared as u16).to_be_bytes());
        }
        _ => {
            f.push(mask_bit | 127);
            f.extend_from_slice(&declared.to_be_bytes());
        }
    }
    let key = [rng.next() as u8, 1, 2, 3];
    if masked {
        f.extend_from_slice(&key);
    }
    f.extend(
        payload
            .iter()
            .enumerate()
            .map(|(i, b)| if masked { b ^ key[i % 4] } else { *b }),
    );
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_client_messages_never_break_the_session_machinery() {
    count_server_panics();
    let started = Instant::now();
    let seed = base_seed("websocket");
    let mut rng = Rng::new(seed ^ 0x3E5);
    let srv = TestServer::start(&[]).await;
    let (bin, key) = srv.create_bin("").await;
    for i in 0..3 {
        let r = srv
            .request(
                Method::POST,
                &format!("/{bin}/ws-seed/{i}"),
                None,
                &[],
                format!("{{\"i\":{i}}}"),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let last_seq = 3;

    // (a) Authenticated sessions: random messages, then a ping must still be answered.
    let (mut messages, mut sessions, mut ended) = (0usize, 0usize, 0usize);
    const SESSIONS: usize = 16;
    const PER_SESSION: usize = 40;
    for s in 0..SESSIONS {
        let mut ws = ws_connect(&srv, &bin, Some(&key)).await;
        sessions += 1;
        let mut alive = true;
        for _ in 0..PER_SESSION {
            let msg = gen_ws_message(&mut rng, last_seq);
            messages += 1;
            if ws.send(msg).await.is_err() {
                alive = false;
                break;
            }
        }
        if alive {
            let _ = ws.send(Message::text(r#"{"type":"ping"}"#)).await;
            alive = until_pong(&mut ws, &format!("session {s}")).await;
        }
        if !alive {
            ended += 1;
        }
        let _ = ws.close(None).await;
    }
    // A message over the 256 KiB limit ends that session (not the server).
    let mut ws = ws_connect(&srv, &bin, Some(&key)).await;
    let _ = ws.send(Message::text("x".repeat(300 * 1024))).await;
    let big_ended = !until_pong_or_end(&mut ws).await;
    messages += 1;

    // (b) Before auth: any first message but a valid auth closes with 4401.
    const AUTH_CASES: usize = 40;
    for i in 0..AUTH_CASES {
        let mut ws = ws_connect(&srv, &bin, None).await;
        let msg = match i % 4 {
            0 => Message::text(format!(r#"{{"type":"auth","key":"{}x"}}"#, &key[..10])),
            1 => Message::text(r#"{"type":"auth"}"#),
            _ => gen_ws_message(&mut rng, last_seq),
        };
        messages += 1;
        let _ = ws.send(msg).await;
        let code = loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("answer before the 5 s auth timeout + slack")
            {
                Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => break 1005,
                Some(Ok(Message::Text(t))) => panic!("text sent before auth: {t}"),
                Some(Ok(_)) => continue,
            }
        };
        assert!(
            code == 4401 || code == 1005,
            "pre-auth message {i} closed with {code}"
        );
    }

    // (c) Raw frames after a header-authenticated handshake: bad opcodes, RSV bits, unmasked
    // frames, invalid UTF-8, lying lengths. The server may close; it must not fall over.
    const RAW_SESSIONS: usize = 60;
    let mut raw_frames = 0usize;
    for _ in 0..RAW_SESSIONS {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        let hs = format!(
            "GET /api/bins/{bin}/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Authorization: Bearer {key}\r\n\r\n"
        );
        s.write_all(hs.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut b).await.unwrap(), 1, "handshake answer");
            head.push(b[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"), "{}", show(&head));
        let mut data = Vec::new();
        for _ in 0..1 + rng.below(6) {
            data.extend_from_slice(&raw_ws_frame(&mut rng));
            raw_frames += 1;
        }
        for piece in split(&mut rng, &data, 4) {
            if s.write_all(&piece).await.is_err() {
                break;
            }
        }
        let mut sink = vec![0u8; 64 * 1024];
        let _ = tokio::time::timeout(Duration::from_millis(50), async {
            while let Ok(n) = s.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
    messages += raw_frames;

    // The server still serves captures and viewers, and counts no stray viewers.
    let mut ws = ws_connect(&srv, &bin, Some(&key)).await;
    ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    assert!(until_pong(&mut ws, "final session").await);
    drop(ws);
    let r = srv.post_capture("/after-ws-fuzz", "{}").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_no_server_panics("websocket fuzz");
    println!(
        "websocket: {messages} client messages/frames over {} sessions ({ended} sessions ended by \
         the server, oversize message ended its session: {big_ended}), {:.1} s",
        sessions + AUTH_CASES + RAW_SESSIONS + 2,
        started.elapsed().as_secs_f64()
    );
}

/// Like `until_pong`, but first sends a ping and tolerates an abrupt end.
async fn until_pong_or_end(ws: &mut Ws) -> bool {
    if ws.send(Message::text(r#"{"type":"ping"}"#)).await.is_err() {
        return false;
    }
    until_pong(ws, "oversize").await
}

// ---------------------------------------------------------------------------------------------
// 5. Signature verifiers
// ---------------------------------------------------------------------------------------------

fn arb_sig_value() -> BoxedStrategy<Vec<u8>> {
    let hex = "[0-9a-fA-F]{0,70}";
    let b64 = "[A-Za-z0-9+/=]{0,50}";
    let ts = prop_oneof![
        Just("1758613403".to_string()),
        "[0-9]{0,25}",
        "-?[0-9]{1,20}",
        ".{0,8}"
    ];
    prop_oneof![
        (ts.clone(), prop::collection::vec(hex, 0..4)).prop_map(|(t, v)| {
            let mut s = format!("t={t}");
            for v in v {
                s.push_str(&format!(",v1={v}"));
            }
            s.into_bytes()
        }),
        hex.prop_map(|h| format!("sha256={h}").into_bytes()),
        prop::collection::vec(b64, 0..4).prop_map(|v| v
            .iter()
            .map(|s| format!("v1,{s}"))
            .collect::<Vec<_>>()
            .join(" ")
            .into_bytes()),
        hex.prop_map(|h| format!("v0={h}").into_bytes()),
        ts.prop_map(String::into_bytes),
        b64.prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..120),
        "[ ,=;]{0,10}".prop_map(String::into_bytes),
    ]
    .boxed()
}

fn arb_sig_headers() -> BoxedStrategy<Vec<(Vec<u8>, Vec<u8>)>> {
    let name = prop_oneof![
        proptest::sample::select(vec![
            "Stripe-Signature",
            "X-Hub-Signature-256",
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
            "svix-id",
            "svix-timestamp",
            "svix-signature",
            "X-Slack-Signature",
            "X-Slack-Request-Timestamp",
            "X-Shopify-Hmac-Sha256",
            "X-Signature",
            "x-rapidapi-webhook-secret",
            "X-Custom",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..20),
    ];
    prop::collection::vec((name, arb_sig_value()), 0..8).boxed()
}

#[test]
fn signature_verifiers_take_any_headers_without_panicking() {
    let started = Instant::now();
    let strategy = (
        proptest::sample::select(Scheme::ALL.to_vec()),
        prop_oneof![
            Just("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string()),
            "whsec_[A-Za-z0-9+/=]{0,40}",
            ".{0,40}",
            Just(String::new()),
        ],
        prop::option::of(prop_oneof![
            Just("X-Custom".to_string()),
            Just("x-signature".to_string()),
            ".{0,12}"
        ]),
        arb_sig_headers(),
        prop::collection::vec(any::<u8>(), 0..400),
        prop_oneof![0i64..4_000_000_000, any::<i64>()],
        prop_oneof![0u64..1000, any::<u64>()],
    );
    let mut runner = runner("signature verify", 6000);
    runner
        .run(
            &strategy,
            |(scheme, secret, header, headers, body, now, tolerance_s)| {
                let refs: Vec<(&[u8], &[u8])> = headers
                    .iter()
                    .map(|(k, v)| (k.as_slice(), v.as_slice()))
                    .collect();
                let cfg = VerifyConfig {
                    scheme,
                    secret: &secret,
                    header: header.as_deref(),
                    tolerance_s,
                };
                let v = signature::verify(&cfg, &refs, &body, now);
                prop_assert_eq!(v.scheme, scheme);
                prop_assert!(!v.detail.is_empty());
                let echoed = headers.iter().any(|(_, val)| {
                    val.windows(secret.len().max(1))
                        .any(|w| w == secret.as_bytes())
                });
                if secret.len() >= 8 && !echoed {
                    prop_assert!(
                        !v.detail.contains(&secret),
                        "detail shows the secret: {}",
                        v.detail
                    );
                }
                // Whatever a sender signs verifies, with extra headers after it. (A
                // header-secret with surrounding whitespace can't survive HTTP's trimming of
                // header values: left out, reported.)
                let untransmittable = scheme == Scheme::HeaderSecret && secret.trim() != secret;
                if untransmittable {
                    return Ok(());
                }
                if let Ok(signed) = signature::sign(
                    scheme,
                    &secret,
                    header.as_deref(),
                    &body,
                    now.clamp(0, 4_000_000_000),
                    "msg_fuzz",
                ) {
                    let mut all: Vec<(&[u8], &[u8])> = signed
                        .iter()
                        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
                        .collect();
                    all.extend(refs.iter().copied());
                    let cfg = VerifyConfig {
                        tolerance_s: 300,
                        ..cfg
                    };
                    let v = signature::verify(&cfg, &all, &body, now.clamp(0, 4_000_000_000));
                    prop_assert!(
                        v.valid,
                        "{:?} signed but did not verify: {}",
                        scheme,
                        v.detail
                    );
                }
                Ok(())
            },
        )
        .unwrap();
    println!(
        "signature verify: 6000 cases, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Exporters fed with arbitrary captures
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct CapSpec {
    method: String,
    suffix: String,
    query: Option<String>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    version: u8,
    truncated: bool,
    declared: Option<u64>,
}

const EXPORT_BIN: &str = "exportbin";

fn arb_method() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(vec![
            "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT",
            "PROPFIND", "X-CUSTOM"
        ])
        .prop_map(str::to_string),
        "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}",
    ]
}

fn arb_capture() -> BoxedStrategy<CapSpec> {
    let uri_safe = "[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,30}";
    let suffix = prop_oneof![
        3 => uri_safe.prop_map(|s| format!("/{s}")),
        1 => Just(String::new()),
        1 => ".{0,20}",
    ];
    let query = prop::option::of(prop_oneof![
        3 => "[A-Za-z0-9._~!$&'()*+,;=:@%/?-]{0,30}",
        1 => ".{0,20}",
    ]);
    let header_name = prop_oneof![
        3 => "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,20}".prop_map(String::into_bytes),
        1 => proptest::sample::select(vec![
            "Host", "Content-Type", "content-length", "User-Agent", "Accept", "Expect",
            "Transfer-Encoding", "Cookie", "X-GitHub-Event", "X-Hookrelay-Seq", "Connection",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>().prop_filter("no NUL", |b| *b != 0), 1..16),
    ];
    let header_value = prop_oneof![
        3 => "[ -~]{0,40}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>().prop_filter("no NUL", |b| *b != 0), 0..40),
        1 => proptest::sample::select(vec![
            "application/json", "application/x-www-form-urlencoded", "text/plain; charset=utf-8",
            "it's $(id) `x` \"q\"", "a=b; c=d", "",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ];
    let body = prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..300),
        2 => arb_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => (arb_json(), proptest::sample::select(vec!["type", "event", "action"])).prop_map(|(v, k)| {
            serde_json::to_vec(&serde_json::json!({ k: "evt.one", "data": v })).unwrap()
        }),
        1 => ".{0,80}".prop_map(String::into_bytes),
        1 => (1usize..140).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d)).into_bytes()),
        1 => Just(b"@/etc/passwd".to_vec()),
        1 => Just(b"a=1&b=%20&c".to_vec()),
    ];
    (
        arb_method(),
        suffix,
        query,
        prop::collection::vec((header_name, header_value), 0..10),
        body,
        0u8..3,
        prop::bool::weighted(0.1),
        prop::option::of(0u64..1000),
    )
        .prop_map(
            |(method, suffix, query, headers, body, version, truncated, declared)| CapSpec {
                method,
                suffix,
                query,
                headers,
                body,
                version,
                truncated,
                declared,
            },
        )
        .boxed()
}

fn build_capture(spec: &CapSpec, seq: u64) -> Arc<Capture> {
    let path = format!("/{EXPORT_BIN}{}", spec.suffix);
    let mut b = CaptureBuilder::new(
        &path,
        spec.query.as_deref(),
        || {
            spec.headers
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice()))
        },
        spec.body.len(),
    );
    b.push_body(&spec.body);
    let meta = RequestMeta {
        bin: EXPORT_BIN.into(),
        received_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_758_613_403_123),
        method: Method::from_bytes(spec.method.as_bytes()).unwrap(),
        version: [Version::HTTP_10, Version::HTTP_11, Version::HTTP_2][spec.version as usize],
        tls: spec.version == 2,
        remote_addr: SocketAddr::from(([127, 0, 0, 1], 40000)),
        headers_exact: spec.version < 2,
        declared_length: spec.declared,
    };
    let extra = CaptureExtra {
        truncated: spec.truncated,
        signature: None,
        response_status: 200,
    };
    Arc::new(b.finish(meta, extra, seq))
}

/// Whether `b` is one JSON value, checked without recursion (serde_json refuses nesting
/// past 128 levels, which a schema inferred from a deeply nested body can exceed).
fn json_valid(b: &[u8]) -> bool {
    #[derive(PartialEq)]
    enum Ctx {
        Arr,
        Obj,
    }
    let mut stack: Vec<Ctx> = Vec::new();
    let mut i = 0;
    let ws = |i: &mut usize| {
        while *i < b.len() && b" \t\r\n".contains(&b[*i]) {
            *i += 1;
        }
    };
    // Parse one scalar or open a container; returns false on a syntax error.
    let mut expect_value = true;
    loop {
        ws(&mut i);
        if expect_value {
            match b.get(i) {
                Some(b'[') => {
                    i += 1;
                    ws(&mut i);
                    if b.get(i) == Some(&b']') {
                        i += 1;
                        expect_value = false;
                    } else {
                        stack.push(Ctx::Arr);
                    }
                    continue;
                }
                Some(b'{') => {
                    i += 1;
                    ws(&mut i);
                    if b.get(i) == Some(&b'}') {
                        i += 1;
                        expect_value = false;
                        continue;
                    }
                    stack.push(Ctx::Obj);
                    if !json_string(b, &mut i) {
                        return false;
                    }
                    ws(&mut i);
                    if b.get(i) != Some(&b':') {
                        return false;
                    }
                    i += 1;
                    continue;
                }
                Some(b'"') => {
                    if !json_string(b, &mut i) {
                        return false;
                    }
                }
                Some(_) => {
                    let start = i;
                    while i < b.len() && !b",]} \t\r\n".contains(&b[i]) {
                        i += 1;
                    }
                    if serde_json::from_slice::<Value>(&b[start..i]).is_err() {
                        return false;
                    }
                }
                None => return false,
            }
            expect_value = false;
            continue;
        }
        match (stack.last(), b.get(i)) {
            (None, None) => return true,
            (None, Some(_)) => return false,
            (Some(Ctx::Arr), Some(b',')) => {
                i += 1;
                expect_value = true;
            }
            (Some(Ctx::Arr), Some(b']')) | (Some(Ctx::Obj), Some(b'}')) => {
                i += 1;
                stack.pop();
            }
            (Some(Ctx::Obj), Some(b',')) => {
                i += 1;
                ws(&mut i);
                if !json_string(b, &mut i) {
                    return false;
                }
                ws(&mut i);
                if b.get(i) != Some(&b':') {
                    return false;
                }
                i += 1;
                expect_value = true;
            }
            _ => return false,
        }
    }
}

/// A JSON string at `b[*i]`, validated by serde_json; advances past it.
fn json_string(b: &[u8], i: &mut usize) -> bool {
    if b.get(*i) != Some(&b'"') {
        return false;
    }
    let mut j = *i + 1;
    while j < b.len() && b[j] != b'"' {
        j += if b[j] == b'\\' { 2 } else { 1 };
    }
    if j >= b.len() || serde_json::from_slice::<String>(&b[*i..=j]).is_err() {
        return false;
    }
    *i = j + 1;
    true
}

/// A cURL command, its argv as tokenized, and the base64 text piped into it (if any).
type ShSample = (String, Vec<Vec<u8>>, Option<Vec<u8>>);

/// One shell word or operator of the command, after quote removal.
#[derive(Debug, PartialEq)]
enum Tok {
    Word(Vec<u8>),
    Pipe,
}

/// A strict tokenizer for the POSIX `sh` subset the cURL export may use: `'…'`,
/// `"$(printf '\ooo…')"`, `\'`, plain safe characters, `|`, `\`-newline continuations; a
/// leading `#` comment line. Anything else (an unbalanced quote, `$`, a backtick, `;`, a
/// stray `"`…) is an error: the text would not be shell-safe.
fn sh_tokens(cmd: &str) -> Result<Vec<Tok>, String> {
    let b = cmd.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let mut word: Option<Vec<u8>> = None;
    let end_word = |word: &mut Option<Vec<u8>>, out: &mut Vec<Tok>| {
        if let Some(w) = word.take() {
            out.push(Tok::Word(w));
        }
    };
    while i < b.len() {
        match b[i] {
            b'#' if word.is_none() && (i == 0 || b[i - 1] == b'\n') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b' ' | b'\n' => {
                end_word(&mut word, &mut out);
                i += 1;
            }
            b'\\' if b.get(i + 1) == Some(&b'\n') => {
                end_word(&mut word, &mut out);
                i += 2;
            }
            b'\\' if b.get(i + 1) == Some(&b'\'') => {
                word.get_or_insert_with(Vec::new).push(b'\'');
                i += 2;
            }
            b'|' => {
                end_word(&mut word, &mut out);
                out.push(Tok::Pipe);
                i += 1;
            }
            b'\'' => {
                let close = b[i + 1..]
                    .iter()
                    .position(|c| *c == b'\'')
                    .ok_or("unbalanced single quote")?;
                word.get_or_insert_with(Vec::new)
                    .extend_from_slice(&b[i + 1..i + 1 + close]);
                i += close + 2;
            }
            b'"' => {
                const OPEN: &[u8] = b"\"$(printf '";
                const CLOSE: &[u8] = b"')\"";
                if !b[i..].starts_with(OPEN) {
                    return Err(format!("unexpected double quote at {i}"));
                }
                i += OPEN.len();
                let w = word.get_or_insert_with(Vec::new);
                while b[i..].starts_with(b"\\") {
                    let oct = std::str::from_utf8(&b[i + 1..i + 4]).map_err(|e| e.to_string())?;
                    w.push(u8::from_str_radix(oct, 8).map_err(|_| format!("bad octal {oct}"))?);
                    i += 4;
                }
                if !b[i..].starts_with(CLOSE) {
                    return Err(format!("unterminated printf escape at {i}"));
                }
                i += CLOSE.len();
            }
            c if c.is_ascii_alphanumeric() || b"-_./:@%+=,".contains(&c) => {
                word.get_or_insert_with(Vec::new).push(c);
                i += 1;
            }
            c => return Err(format!("unquoted {:?} at {i}", c as char)),
        }
    }
    end_word(&mut word, &mut out);
    Ok(out)
}

/// argv of the last command in the pipeline, and the base64 text piped in (if any).
fn curl_argv(tokens: Vec<Tok>) -> (Vec<Vec<u8>>, Option<Vec<u8>>) {
    let mut cmds: Vec<Vec<Vec<u8>>> = vec![Vec::new()];
    for t in tokens {
        match t {
            Tok::Pipe => cmds.push(Vec::new()),
            Tok::Word(w) => cmds.last_mut().unwrap().push(w),
        }
    }
    let stdin = (cmds.len() == 3).then(|| {
        assert_eq!(cmds[0][..2], [b"printf".to_vec(), b"%s".to_vec()]);
        assert_eq!(cmds[1], [b"base64".to_vec(), b"-d".to_vec()]);
        cmds[0][2].clone()
    });
    assert!(cmds.len() == 1 || cmds.len() == 3, "pipeline shape");
    (cmds.pop().unwrap(), stdin)
}

/// Run commands through a real `sh` with `curl` defined as a function that prints each
/// argument (and stdin) in hex: the ground truth for the tokenizer above.
fn sh_argv(commands: &[(String, bool)]) -> Vec<(Vec<Vec<u8>>, Vec<u8>)> {
    let mut script = String::from(
        "hexarg() { printf '%s' \"$1\" | od -An -v -tx1 | tr -d ' \\n'; echo; }\n\
         curl() { echo BEGIN; for a in \"$@\"; do hexarg \"$a\"; done; echo STDIN; od -An -v -tx1 | tr -d ' \\n'; echo; echo END; }\n",
    );
    for (c, piped) in commands {
        script.push_str(c);
        // A piped body is curl's stdin; otherwise stdin is empty.
        script.push_str(if *piped { "\n" } else { " </dev/null\n" });
    }
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut result = Vec::new();
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        assert_eq!(l, "BEGIN");
        let mut args = Vec::new();
        let mut stdin = Vec::new();
        for l in lines.by_ref() {
            if l == "STDIN" {
                break;
            }
            args.push(hex::decode(l).unwrap());
        }
        for l in lines.by_ref() {
            if l == "END" {
                break;
            }
            stdin = hex::decode(l).unwrap();
        }
        result.push((args, stdin));
    }
    result
}

#[test]
fn exporters_take_arbitrary_captures() {
    let started = Instant::now();
    let base = format!("http://127.0.0.1:8080/{EXPORT_BIN}");
    let mut runner = runner("exporters", 1500);
    let captures_seen = AtomicUsize::new(0);
    let curl_ok = AtomicUsize::new(0);
    let deep_docs = AtomicUsize::new(0);
    let sh_samples: std::sync::Mutex<Vec<ShSample>> = Default::default();
    runner
        .run(&prop::collection::vec(arb_capture(), 1..6), |specs| {
            let caps: Vec<Arc<Capture>> = specs
                .iter()
                .enumerate()
                .map(|(i, s)| build_capture(s, i as u64 + 1))
                .collect();
            captures_seen.fetch_add(caps.len(), Ordering::Relaxed);

            // HAR: valid JSON, one entry per capture.
            let doc = har::document(&caps, &base);
            let text = serde_json::to_vec(&doc).unwrap();
            prop_assert!(json_valid(&text), "HAR not JSON: {}", show(&text));
            prop_assert_eq!(
                doc["log"]["entries"].as_array().map(Vec::len),
                Some(caps.len())
            );

            // OpenAPI: valid JSON, 3.1, webhooks an object.
            let doc = openapi::document(EXPORT_BIN, &caps);
            let text = serde_json::to_vec(&doc).unwrap();
            prop_assert!(json_valid(&text), "OpenAPI not JSON: {}", show(&text));
            if serde_json::from_slice::<Value>(&text).is_err() {
                deep_docs.fetch_add(1, Ordering::Relaxed);
            }
            prop_assert_eq!(&doc["openapi"], "3.1.0");
            prop_assert!(doc["webhooks"].is_object());

            // NDJSON: one JSON record per line.
            let nd = ndjson(&caps);
            let lines: Vec<&[u8]> = nd
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .collect();
            prop_assert_eq!(lines.len(), caps.len());
            for (i, l) in lines.iter().enumerate() {
                let v: Value = serde_json::from_slice(l).unwrap();
                prop_assert_eq!(v["seq"].as_u64(), Some(i as u64 + 1));
            }

            // cURL: shell-safe text whose words are exactly the captured bytes.
            for (spec, c) in specs.iter().zip(&caps) {
                let uri_safe = spec
                    .suffix
                    .chars()
                    .chain(spec.query.iter().flat_map(|q| q.chars()))
                    .all(|ch| ch.is_ascii_alphanumeric() || "._~!$&'()*+,;=:@%/?-".contains(ch));
                let cmd = match curl::command(c, &base) {
                    Ok(cmd) => cmd,
                    Err(e) => {
                        prop_assert!(!uri_safe, "curl refused a plain capture: {e}");
                        continue;
                    }
                };
                curl_ok.fetch_add(1, Ordering::Relaxed);
                prop_assert!(
                    !cmd.chars().any(|ch| (ch.is_control()
                        && ch != '\n'
                        && ch != '\r'
                        && ch != '\t')
                        || matches!(ch, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')),
                    "raw control or bidi characters in {cmd:?}"
                );
                let tokens = sh_tokens(&cmd)
                    .map_err(|e| TestCaseError::fail(format!("not shell-safe ({e}): {cmd:?}")))?;
                let (argv, b64) = curl_argv(tokens);
                prop_assert_eq!(&argv[0], b"curl");
                let url = curl::target_url(&base, c).unwrap();
                prop_assert!(
                    argv.contains(&url.into_bytes()),
                    "URL word missing in {cmd:?}"
                );
                // Each replayable header appears as one -H word, in capture order.
                let want: Vec<Vec<u8>> = c
                    .headers()
                    .filter(|(k, _)| !hookrelay::export::is_unreplayable_header(k))
                    .map(|(k, v)| {
                        let mut w = k.to_vec();
                        if v.is_empty() {
                            w.push(b';');
                        } else {
                            w.extend_from_slice(b": ");
                            w.extend_from_slice(v);
                        }
                        w
                    })
                    .collect();
                let got: Vec<Vec<u8>> = argv
                    .windows(2)
                    .filter(|w| {
                        w[0] == b"-H"
                            && !matches!(
                                &w[1][..],
                                b"User-Agent:" | b"Accept:" | b"Content-Type:" | b"Expect:"
                            )
                    })
                    .map(|w| w[1].clone())
                    .collect();
                prop_assert_eq!(&got, &want, "headers in {:?}", cmd);
                // The body reaches curl exactly: inline or via base64 on stdin.
                let body = c.body();
                let data_at = argv.iter().position(|a| a == b"--data-binary");
                if !body.is_empty() {
                    let data = &argv[data_at.expect("--data-binary") + 1];
                    if data == b"@-" {
                        let decoded = base64::Engine::decode(
                            &base64::engine::general_purpose::STANDARD,
                            b64.as_ref().expect("piped body"),
                        )
                        .unwrap();
                        prop_assert_eq!(&decoded[..], &body[..]);
                    } else {
                        prop_assert_eq!(&data[..], &body[..]);
                    }
                }
                let mut samples = sh_samples.lock().unwrap();
                if samples.len() < 150 && !cmd.contains('\0') {
                    samples.push((cmd.clone(), argv.clone(), b64.clone()));
                }
            }
            Ok(())
        })
        .unwrap();

    // Ground truth: the tokenizer agrees with a real shell on a sample of commands.
    let samples = sh_samples.into_inner().unwrap();
    let commands: Vec<(String, bool)> = samples
        .iter()
        .map(|(cmd, _, b64)| (cmd.trim_end().to_string(), b64.is_some()))
        .collect();
    let real = sh_argv(&commands);
    assert_eq!(real.len(), samples.len());
    for ((cmd, argv, b64), (sh_args, sh_stdin)) in samples.iter().zip(&real) {
        assert_eq!(&argv[1..], &sh_args[..], "sh disagrees on {cmd:?}");
        if b64.is_some() {
            let body_arg = &argv[1..];
            assert!(body_arg.iter().any(|a| a == b"@-"));
            let decoded = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                b64.as_ref().unwrap(),
            )
            .unwrap();
            assert_eq!(&decoded, sh_stdin, "piped body of {cmd:?}");
        }
    }
    println!(
        "exporters: 1500 cases, {} captures ({} cURL commands checked, {} through sh; {} OpenAPI \
         documents nested past serde_json's 128 levels), {:.1} s",
        captures_seen.load(Ordering::Relaxed),
        curl_ok.load(Ordering::Relaxed),
        samples.len(),
        deep_docs.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
}

/// Regression: `is_date_time` sliced `&s[..10]` and panicked when a multi-byte character
/// straddled byte 10 of a body string (the OpenAPI export of such a bin always failed).
#[test]
fn openapi_export_takes_strings_with_multibyte_characters_near_the_date_prefix() {
    for text in [
        "2024-01-0\u{e9}T00:00:00Z----",
        "2024-01-01\u{e9}00:00:00Z",
        "\u{1F600}\u{1F600}\u{1F600}xxxxxxxxxxxx",
    ] {
        let spec = CapSpec {
            method: "POST".into(),
            suffix: "/dates".into(),
            query: None,
            headers: vec![(b"Content-Type".to_vec(), b"application/json".to_vec())],
            body: serde_json::to_vec(&serde_json::json!({ "type": "evt", "at": text })).unwrap(),
            version: 1,
            truncated: false,
            declared: None,
        };
        let doc = openapi::document(EXPORT_BIN, &[build_capture(&spec, 1)]);
        assert!(doc["webhooks"]["evt"].is_object(), "{doc}");
    }
}
