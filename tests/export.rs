//! Exports against a real server: the cURL command is executed with the real `curl` and must
//! reproduce the capture byte for byte; HAR and NDJSON parse; the OpenAPI document passes
//! `openapi-spec-validator`. A missing `curl` or validator skips that check with a message,
//! except under `CI=true`, where it fails.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{TestServer, PAYMENT_SUCCESS};
use http::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skip (outside CI) or fail (in CI) because a tool is missing; returns whether to go on.
fn tool_available(ok: bool, what: &str) -> bool {
    if !ok {
        assert!(
            !in_ci(),
            "{what} (CI=true, so this is a failure, not a skip)"
        );
        println!("SKIPPED: {what}; install it or run with CI=true to require it");
    }
    ok
}

/// Send raw request bytes (exact header case and order) and wait for the response head:
/// ingest stores the capture before it answers, so it is readable afterwards.
async fn send_raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(10), async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed before a response");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("response in time");
    String::from_utf8_lossy(&buf).into_owned()
}

/// A raw HTTP/1.1 request; `Content-Length` is added when there is a body.
fn raw_request(method: &str, target: &str, headers: &[(&str, &[u8])], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
    for (k, v) in headers {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

type Headers = Vec<(Vec<u8>, Vec<u8>)>;

/// Headers of a stored capture as exact bytes, minus the names in `drop` (case-insensitive).
fn headers_without(c: &hookrelay::capture::Capture, drop: &[&str]) -> Headers {
    c.headers()
        .filter(|(k, _)| !drop.iter().any(|d| k.eq_ignore_ascii_case(d.as_bytes())))
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

fn show(headers: &Headers) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_command_reproduces_captures_byte_for_byte() {
    let curl_ok = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !tool_available(curl_ok, "curl is not installed") {
        return;
    }
    let server = TestServer::start(&[]).await;
    let (second, _second_key) = server.create_bin("{}").await;
    let host = server.addr.to_string();
    let id = &server.bin_id;

    let png: Vec<u8> = [
        &b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01"[..],
        &[0xff, 0x00, 0xfe, 0xff, b'\'', b'\n', 0x00][..],
    ]
    .concat();
    let big: Vec<u8> = format!("{{\"blob\":\"{}\"}}", "x'$(y)`z`\\".repeat(8000)).into_bytes();
    let sent: Vec<Vec<u8>> = vec![
        // payment.success with mixed-case, duplicate, quote-laden and non-UTF-8 headers.
        raw_request(
            "POST",
            &format!("/{id}/stripe/./events?a=1&b=%20x&c=it's&d=$(id)&e=[1]"),
            &[
                ("Host", host.as_bytes()),
                (
                    "User-Agent",
                    b"Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                ),
                ("Content-Type", b"application/json; charset=utf-8"),
                ("Stripe-Signature", b"t=1758613403,v1=abc,v1=def"),
                ("X-Mixed-CASE", b"Value With  Spaces"),
                ("x-dup", b"one"),
                ("X-Dup", b"two"),
                ("Keep-Alive", b"timeout=5"),
                (
                    "X-Nasty",
                    b"it's \"$(touch /tmp/hookrelay-pwned)\" `id` ; | & \\ $HOME",
                ),
                ("X-Empty", b""),
                ("X-Bytes", b"caf\xc3\xa9 \xff\xfe\x80"),
                ("Proxy-Authorization", b"Basic eDp5"),
                ("accept", b"*/*"),
                ("x-dup", b"three"),
            ],
            PAYMENT_SUCCESS.as_bytes(),
        ),
        // Binary body: NUL and 0xFF bytes go through the base64 pipeline.
        raw_request(
            "PUT",
            &format!("/{id}/upload"),
            &[
                ("Host", host.as_bytes()),
                ("Content-Type", b"image/png"),
                ("X-Hookrelay-Seq", b"41"),
            ],
            &png,
        ),
        // No User-Agent, Accept or Content-Type: curl must not add its own; `@` must not read a file.
        raw_request(
            "POST",
            &format!("/{id}"),
            &[("Host", host.as_bytes())],
            b"@/etc/passwd",
        ),
        // A bodiless GET with only Host.
        raw_request(
            "GET",
            &format!("/{id}/ping?x"),
            &[("Host", host.as_bytes())],
            b"",
        ),
        // A UTF-8 body over the inline limit.
        raw_request(
            "PATCH",
            &format!("/{id}/big"),
            &[
                ("Host", host.as_bytes()),
                ("Content-Type", b"application/json"),
            ],
            &big,
        ),
    ];
    for req in &sent {
        let head = send_raw(server.addr, req).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }

    let first = server.state.store.get(id).expect("ready bin");
    let target_bin = server.state.store.get(&second).expect("second bin");
    let target = format!("{}/{second}", server.base_url);
    for seq in 1..=sent.len() as u64 {
        let original = first.get(seq).expect("captured");
        assert!(
            original.meta().headers_exact,
            "the tap recorded the exact head"
        );
        let r = server
            .api_get(&format!(
                "/api/bins/{id}/requests/{seq}/curl?target={}",
                percent_encode(&target)
            ))
            .await;
        r.expect_status(StatusCode::OK);
        assert_eq!(r.headers["content-type"], "text/plain; charset=utf-8");
        let command = String::from_utf8(r.body.to_vec()).expect("the command is UTF-8 text");
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .env("NO_PROXY", "*")
            .env("no_proxy", "*")
            .output()
            .await
            .expect("sh runs");
        assert!(
            out.status.success(),
            "seq {seq}: {command}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let replayed = target_bin
            .get(seq)
            .unwrap_or_else(|| panic!("seq {seq} replayed: {command}"));
        assert_eq!(replayed.method(), original.method(), "seq {seq}");
        assert_eq!(replayed.path_suffix(), original.path_suffix(), "seq {seq}");
        assert_eq!(replayed.query(), original.query(), "seq {seq}");
        assert_eq!(replayed.body(), original.body(), "seq {seq} body");
        let want = headers_without(
            &original,
            &[
                "host",
                "content-length",
                "keep-alive",
                "proxy-authorization",
            ],
        );
        let got = headers_without(&replayed, &["host", "content-length"]);
        assert_eq!(show(&got), show(&want), "seq {seq}: {command}");
        assert_eq!(got, want, "seq {seq}: exact header bytes");
    }
    assert!(
        !std::path::Path::new("/tmp/hookrelay-pwned").exists(),
        "nothing in a header ran"
    );

    // The default target is the bin's own inbound URL, as the API client reached the server.
    let r = server
        .api_get(&format!("/api/bins/{id}/requests/4/curl"))
        .await;
    let command = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(
        command.contains(&format!("'http://{host}/{id}/ping?x'")),
        "{command}"
    );
    let r = server
        .api_get(&format!(
            "/api/bins/{id}/requests/1/curl?target=ftp%3A%2F%2Fx"
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "invalid_target");
    let r = server
        .api_get(&format!("/api/bins/{id}/requests/99/curl"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn har_and_ndjson_exports() {
    let server = TestServer::start(&[]).await;
    let id = server.bin_id.clone();
    server.post_capture("/pay?x=1", PAYMENT_SUCCESS).await;
    server
        .request(
            Method::POST,
            &format!("/{id}/bin"),
            None,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Cookie", "a=1; b=2"),
            ],
            &b"\x00\xff\x01"[..],
        )
        .await;

    let r = server.api_get(&format!("/api/bins/{id}/export.har")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "application/json");
    let disposition = r.headers["content-disposition"].to_str().unwrap();
    assert!(disposition.starts_with("attachment"), "{disposition}");
    let har = r.json();
    let log = &har["log"];
    assert_eq!(log["version"], "1.2");
    assert!(log["creator"]["name"].is_string() && log["creator"]["version"].is_string());
    let entries = log["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 2);
    for e in entries {
        assert!(e["startedDateTime"].is_string());
        assert!(e["time"].is_number());
        let req = &e["request"];
        for (key, check) in [
            ("method", Value::is_string as fn(&Value) -> bool),
            ("url", Value::is_string),
            ("httpVersion", Value::is_string),
            ("cookies", Value::is_array),
            ("headers", Value::is_array),
            ("queryString", Value::is_array),
            ("postData", Value::is_object),
            ("headersSize", Value::is_number),
            ("bodySize", Value::is_number),
        ] {
            assert!(check(&req[key]), "request.{key}: {req}");
        }
        let resp = &e["response"];
        for (key, check) in [
            ("status", Value::is_number as fn(&Value) -> bool),
            ("statusText", Value::is_string),
            ("httpVersion", Value::is_string),
            ("cookies", Value::is_array),
            ("headers", Value::is_array),
            ("content", Value::is_object),
            ("redirectURL", Value::is_string),
            ("headersSize", Value::is_number),
            ("bodySize", Value::is_number),
        ] {
            assert!(check(&resp[key]), "response.{key}: {resp}");
        }
        assert!(resp["content"]["size"].is_number() && resp["content"]["mimeType"].is_string());
        assert!(e["cache"].is_object());
        for t in ["send", "wait", "receive"] {
            assert!(e["timings"][t].is_number(), "timings.{t}");
        }
    }
    let pay = &entries[0]["request"];
    assert_eq!(pay["method"], "POST");
    assert!(pay["url"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/{id}/pay?x=1")));
    assert_eq!(pay["queryString"], json!([{"name": "x", "value": "1"}]));
    assert_eq!(pay["postData"]["text"], PAYMENT_SUCCESS);
    assert_eq!(pay["bodySize"], PAYMENT_SUCCESS.len());
    let bin = &entries[1]["request"];
    assert_eq!(bin["postData"]["encoding"], "base64");
    assert_eq!(bin["postData"]["text"], "AP8B");
    assert_eq!(bin["cookies"][1], json!({"name": "b", "value": "2"}));
    assert_eq!(entries[1]["response"]["status"], 200);

    let r = server
        .api_get(&format!("/api/bins/{id}/export.ndjson"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "application/x-ndjson");
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["seq"], 1);
    assert_eq!(records[0]["body"], PAYMENT_SUCCESS);
    assert_eq!(records[1]["body_encoding"], "base64");

    // The key is required.
    for path in [
        "export.har",
        "export.ndjson",
        "openapi.json",
        "requests/1/curl",
    ] {
        let r = server
            .request(
                Method::GET,
                &format!("/api/bins/{id}/{path}"),
                None,
                &[],
                bytes::Bytes::new(),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_has_one_webhook_per_event_and_validates() {
    let server = TestServer::start(&[]).await;
    let id = server.bin_id.clone();
    server.post_capture("", PAYMENT_SUCCESS).await;
    let with_coupon = PAYMENT_SUCCESS.replace("\"currency\"", "\"coupon\":null,\"currency\"");
    server.post_capture("", with_coupon).await;
    let push = json!({
        "ref": "refs/heads/main",
        "created": false,
        "repository": { "id": 1296269, "full_name": "octocat/Hello-World",
                        "html_url": "https://github.com/octocat/Hello-World" },
        "commits": [ { "id": "6dcb09b5b57875f334f61aebed695e2e4193db5e", "message": "Fix",
                       "timestamp": "2026-11-23T10:15:30Z", "added": [] } ],
        "pusher": { "name": "octocat", "email": "octocat@github.com" }
    });
    server
        .request(
            Method::POST,
            &format!("/{id}/github"),
            None,
            &[
                ("Content-Type", "application/json"),
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            ],
            push.to_string(),
        )
        .await;
    server
        .post_capture(
            "/stripe",
            r#"{"id":"evt_1","type":"invoice.paid","data":{"object":{"amount_paid":100}}}"#,
        )
        .await;

    let r = server
        .api_get(&format!("/api/bins/{id}/openapi.json"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "application/json");
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let hooks = doc["webhooks"].as_object().expect("webhooks");
    let mut names: Vec<&str> = hooks.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, ["invoice.paid", "payment.success", "push"]);

    let pay = &hooks["payment.success"]["post"];
    assert!(pay["operationId"].is_string());
    assert!(pay["responses"]["200"]["description"].is_string());
    let content = &pay["requestBody"]["content"]["application/json"];
    let schema = &content["schema"];
    assert_eq!(schema["type"], "object");
    assert_eq!(
        schema["required"],
        json!(["amount", "currency", "event", "orderId", "timestamp"])
    );
    assert_eq!(schema["properties"]["coupon"]["type"], "null");
    assert_eq!(schema["properties"]["amount"]["type"], "number");
    assert_eq!(content["example"]["event"], "payment.success");

    let push_schema =
        &hooks["push"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(
        push_schema["properties"]["repository"]["properties"]["id"]["type"],
        "integer"
    );
    assert_eq!(
        push_schema["properties"]["repository"]["properties"]["html_url"]["format"],
        "uri"
    );
    let commit = &push_schema["properties"]["commits"]["items"];
    assert_eq!(commit["properties"]["timestamp"]["format"], "date-time");
    assert_eq!(
        push_schema["properties"]["pusher"]["properties"]["email"]["format"],
        "email"
    );
    let params = hooks["push"]["post"]["parameters"].as_array().unwrap();
    assert!(params.iter().any(|p| p["in"] == "header"
        && p["name"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case("x-github-event")));

    // A real validator, not our own reading of the spec.
    let importable = std::process::Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !tool_available(
        importable,
        "python3 with openapi-spec-validator is not available (pip install openapi-spec-validator)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &r.body).unwrap();
    let out = tokio::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator", "--schema", "3.1"])
        .arg(&file)
        .output()
        .await
        .expect("validator runs");
    assert!(
        out.status.success(),
        "openapi-spec-validator rejected the document:\n{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        serde_json::to_string_pretty(&doc).unwrap()
    );
    println!("{}", String::from_utf8_lossy(&out.stdout).trim());
}
