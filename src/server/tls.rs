//! TLS listener setup: rustls with the ring provider, ALPN h2 + http/1.1, dev certs via rcgen.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

use crate::error::Error;

/// A ready acceptor and, when the cert was generated now, its SHA-256 fingerprint.
pub struct TlsSetup {
    /// The acceptor.
    pub acceptor: TlsAcceptor,
    /// `AA:BB:…` fingerprint of a freshly generated certificate.
    pub generated_fingerprint: Option<String>,
    /// Fingerprint of the certificate in use.
    pub fingerprint: String,
}

/// Install ring as the process-wide rustls provider (idempotent).
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Load the cert/key pair, generating a self-signed one for `extra_host` + localhost when absent.
pub fn load_or_generate(
    cert_path: &Path,
    key_path: &Path,
    extra_host: Option<&str>,
) -> Result<TlsSetup, Error> {
    install_provider();
    let mut generated = false;
    if !cert_path.exists() && !key_path.exists() {
        generate(cert_path, key_path, extra_host)?;
        generated = true;
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| Error::Tls(format!("{}: {e}", cert_path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Tls(format!("{}: {e}", cert_path.display())))?;
    let first = certs
        .first()
        .ok_or_else(|| Error::Tls(format!("{}: no certificate", cert_path.display())))?;
    let fingerprint = fingerprint(first.as_ref());
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| Error::Tls(format!("{}: {e}", key_path.display())))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsSetup {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        generated_fingerprint: generated.then(|| fingerprint.clone()),
        fingerprint,
    })
}

fn generate(cert_path: &Path, key_path: &Path, extra_host: Option<&str>) -> Result<(), Error> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Some(host) = extra_host {
        if !names.iter().any(|n| n == host) {
            names.push(host.to_string());
        }
    }
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|e| Error::Tls(format!("generating a self-signed certificate: {e}")))?;
    for path in [cert_path, key_path] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
        }
    }
    std::fs::write(cert_path, certified.cert.pem())
        .map_err(|e| Error::io(cert_path.display().to_string(), e))?;
    write_private(key_path, certified.signing_key.serialize_pem().as_bytes())?;
    Ok(())
}

/// Write a file readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| Error::io(path.display().to_string(), e))?;
    file.write_all(bytes)
        .map_err(|e| Error::io(path.display().to_string(), e))
}

fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
