//! HTTPS (rustls, ALPN h2 + http/1.1) and h2c prior knowledge both capture correctly.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{TestServer, PAYMENT_SUCCESS};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

async fn tls_stream(srv: &TestServer, alpn: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
    hookrelay::server::tls::install_provider();
    let cert_path = srv.state_dir.path().join("cert.pem");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&cert_path).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(srv.tls_addr.unwrap()).await.unwrap();
    let stream = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("handshake with the generated certificate");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(alpn));
    stream
}

fn post(srv: &TestServer, suffix: &str) -> Request<Full<Bytes>> {
    Request::post(format!("https://localhost/{}{suffix}", srv.bin_id))
        .header("content-type", "application/json")
        .header("x-trace", "abc")
        .body(Full::new(Bytes::from_static(PAYMENT_SUCCESS.as_bytes())))
        .unwrap()
}

async fn start_tls() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem").display().to_string();
    let key = dir.path().join("key.pem").display().to_string();
    TestServer::start_in(
        dir,
        &[
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_h2_and_http11_capture() {
    let srv = start_tls().await;
    // HTTP/2 over TLS.
    let io = TokioIo::new(tls_stream(&srv, b"h2").await);
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(post(&srv, "/h2")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-hookrelay-seq"], "1");
    // HTTP/1.1 over TLS.
    let io = TokioIo::new(tls_stream(&srv, b"http/1.1").await);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let mut req = post(&srv, "/h1");
    req.headers_mut()
        .insert("host", "localhost".parse().unwrap());
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.as_ref(), b"{}");

    let captures = srv.captures(&srv.bin_id, &srv.bin_key, 0).await;
    assert_eq!(captures.len(), 2);
    let (h2, h1) = (&captures[0], &captures[1]);
    assert_eq!(h2["http_version"], "HTTP/2");
    assert_eq!(h2["scheme"], "https");
    assert_eq!(h2["headers_exact"], false);
    assert_eq!(h2["body"], PAYMENT_SUCCESS);
    assert_eq!(h2["path"], format!("/{}/h2", srv.bin_id));
    assert!(h2["headers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h[0] == "x-trace" && h[1] == "abc"));
    assert_eq!(h1["http_version"], "HTTP/1.1");
    assert_eq!(h1["scheme"], "https");
    assert_eq!(h1["body"], PAYMENT_SUCCESS);
    assert_eq!(h1["path"], format!("/{}/h1", srv.bin_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_on_the_plain_listener() {
    let srv = TestServer::start(&[]).await;
    let tcp = TcpStream::connect(srv.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    for i in 0..3 {
        let req = Request::post(format!("http://127.0.0.1/{}/c?i={i}", srv.bin_id))
            .body(Full::new(Bytes::from(vec![0u8, 159, 146, 150])))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let captures = srv.captures(&srv.bin_id, &srv.bin_key, 0).await;
    assert_eq!(captures.len(), 3);
    assert_eq!(captures[2]["http_version"], "HTTP/2");
    assert_eq!(captures[2]["query"], "i=2");
    assert_eq!(captures[2]["body_encoding"], "base64");
    assert_eq!(captures[2]["body"], "AJ+Slg==");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_writes_over_https_h2_pass_the_origin_check() {
    let srv = start_tls().await;
    let io = TokioIo::new(tls_stream(&srv, b"h2").await);
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let authority = format!("localhost:{}", srv.tls_addr.unwrap().port());
    for (origin, status) in [
        (format!("https://{authority}"), StatusCode::OK),
        ("https://evil.example".to_string(), StatusCode::FORBIDDEN),
    ] {
        let req = Request::patch(format!("https://{authority}/api/bins/{}", srv.bin_id))
            .header("origin", origin.as_str())
            .header("authorization", format!("Bearer {}", srv.bin_key))
            .body(Full::new(Bytes::from_static(br#"{"capacity":42}"#)))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), status, "Origin {origin}");
    }
}
