//! Signature verification on ingest, end to end: `hookrelay send --sign X` against a bin verifying X.

mod common;

use bytes::Bytes;
use clap::Parser;
use common::{TestServer, PAYMENT_SUCCESS};
use futures_util::StreamExt;
use hookrelay::{Cli, Command};
use http::{Method, StatusCode};
use serde_json::Value;

/// (scheme, secret, custom header)
const SCHEMES: &[(&str, &str, Option<&str>)] = &[
    ("stripe", "whsec_test_secret_4eC39HqLyjWDarjtT1zdp7dc", None),
    ("github", "It's a Secret to Everybody", None),
    ("standard", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", None),
    ("slack", "8f742231b10e8888abcd99yyyzzz85a5", None),
    ("shopify", "shpss_5f1c0ffee0ddba11", None),
    (
        "hmac-sha256",
        "my-webhook-secret",
        Some("X-Apidog-Signature"),
    ),
    (
        "header-secret",
        "rapid-secret-123",
        Some("x-rapidapi-webhook-secret"),
    ),
];

async fn send(args: &[&str]) -> Result<(), String> {
    let mut argv = vec!["hookrelay", "send"];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(argv).expect("valid send flags").command {
        Some(Command::Send(a)) => hookrelay::send::run(a).await.map_err(|e| e.to_string()),
        other => panic!("not a send command: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_signed_is_valid_for_every_scheme_and_tampering_is_caught() {
    let srv = TestServer::start(&[]).await;
    for (scheme, secret, header) in SCHEMES {
        let verify = match header {
            Some(h) => serde_json::json!({"scheme": scheme, "secret": secret, "header": h}),
            None => serde_json::json!({"scheme": scheme, "secret": secret}),
        };
        let (id, key) = srv
            .create_bin(&serde_json::json!({ "verify": verify }).to_string())
            .await;
        let url = format!("{}/{id}/hook", srv.base_url);
        let mut args = vec![
            url.as_str(),
            "--data",
            PAYMENT_SUCCESS,
            "--sign",
            scheme,
            "--secret",
            secret,
            "--retries",
            "0",
        ];
        if let Some(h) = header {
            args.extend(["--sign-header", h]);
        }
        send(&args)
            .await
            .unwrap_or_else(|e| panic!("{scheme}: {e}"));
        // Unsigned: missing header.
        send(&[url.as_str(), "--data", PAYMENT_SUCCESS, "--retries", "0"])
            .await
            .unwrap();
        let c = srv.captures(&id, &key, 0).await;
        assert_eq!(c.len(), 2, "{scheme}");
        let sig = &c[0]["signature"];
        assert_eq!(sig["scheme"], *scheme);
        assert_eq!(sig["valid"], true, "{scheme}: {sig}");
        let missing = &c[1]["signature"];
        assert_eq!(missing["valid"], false, "{scheme}");
        assert!(
            missing["detail"].as_str().unwrap().contains("missing"),
            "{scheme}: {missing}"
        );
        // Tampered body with a signature for the original: replay the signed headers with another body.
        let signed_headers: Vec<(String, String)> = c[0]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h[0].as_str().unwrap().to_string(),
                    h[1].as_str().unwrap().to_string(),
                )
            })
            .filter(|(k, _)| {
                !k.eq_ignore_ascii_case("content-length") && !k.eq_ignore_ascii_case("host")
            })
            .collect();
        let refs: Vec<(&str, &str)> = signed_headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let tampered = PAYMENT_SUCCESS.replace("738.05", "1.00");
        srv.request(Method::POST, &format!("/{id}/hook"), None, &refs, tampered)
            .await;
        let c = srv.captures(&id, &key, 2).await;
        let verdict = &c[0]["signature"];
        if *scheme == "header-secret" {
            assert_eq!(
                verdict["valid"], true,
                "header-secret does not sign the body"
            );
        } else {
            assert_eq!(verdict["valid"], false, "{scheme}: tampered body passed");
        }
        // The secret never shows up in reads, the stream or exports.
        let bin = srv
            .request(
                Method::GET,
                &format!("/api/bins/{id}"),
                Some(&key),
                &[],
                Bytes::new(),
            )
            .await;
        assert_eq!(bin.json()["settings"]["verify"]["secret"], Value::Null);
        assert_eq!(bin.json()["settings"]["verify"]["secret_set"], true);
        for path in ["export.ndjson", "export.har", "openapi.json", "requests"] {
            let r = srv
                .request(
                    Method::GET,
                    &format!("/api/bins/{id}/{path}"),
                    Some(&key),
                    &[],
                    Bytes::new(),
                )
                .await;
            let text = String::from_utf8_lossy(&r.body);
            if *scheme != "header-secret" {
                assert!(!text.contains(secret), "{scheme}: secret in {path}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_invalid_answers_401_but_still_captures() {
    let srv = TestServer::start(&[]).await;
    let (id, key) = srv
        .create_bin(r#"{"verify":{"scheme":"github","secret":"s3cr3t","reject_invalid":true}}"#)
        .await;
    let r = srv
        .request(
            Method::POST,
            &format!("/{id}"),
            None,
            &[("X-Hub-Signature-256", "sha256=00")],
            "{}",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"], "invalid_signature");
    let c = srv.captures(&id, &key, 0).await;
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["signature"]["valid"], false);
    assert_eq!(c[0]["response"]["status"], 401);
    let url = format!("{}/{id}", srv.base_url);
    send(&[
        url.as_str(),
        "--sample",
        "github.push",
        "--sign",
        "github",
        "--secret",
        "s3cr3t",
        "--retries",
        "0",
    ])
    .await
    .unwrap();
    let c = srv.captures(&id, &key, 1).await;
    assert_eq!(c[0]["signature"]["valid"], true);
    assert_eq!(c[0]["response"]["status"], 200);
    // A PATCH without the secret keeps it; the WebSocket hello doesn't show it.
    let r = srv
        .request(
            Method::PATCH,
            &format!("/api/bins/{id}"),
            Some(&key),
            &[],
            r#"{"verify":{"tolerance_s":60}}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    send(&[
        url.as_str(),
        "--sign",
        "github",
        "--secret",
        "s3cr3t",
        "--retries",
        "0",
    ])
    .await
    .unwrap();
    let url = format!("ws://{}/api/bins/{id}/ws", srv.addr);
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {key}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let hello = ws.next().await.unwrap().unwrap().into_text().unwrap();
    assert!(!hello.contains("s3cr3t"));
    assert!(hello.contains("\"secret_set\":true"));
}
