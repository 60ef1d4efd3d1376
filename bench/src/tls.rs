//! TLS for the `tls-*` rows: the certificate made at bench time, the native
//! tokio-rustls echo baseline's server config, and the load generator's
//! client config. Both sides use rustls's ring provider, as pier's host does,
//! and the client trusts exactly the one certificate it was given.
//!
//! The certificate is an ECDSA P-256 self-signed leaf made by the openssl
//! CLI in a fresh temporary directory that is removed when the run ends: no
//! private key is ever committed or reused between runs.

use anyhow::{Context, Result, bail, ensure};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

/// The name the client checks the certificate against (its subjectAltName
/// also has IP 127.0.0.1).
pub const SERVER_NAME: &str = "localhost";

/// A certificate and its key in a temporary directory, removed on drop.
pub struct TempCert {
    dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TempCert {
    /// `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 ...`: a
    /// self-signed end-entity certificate (CA:FALSE, which webpki requires of
    /// a leaf) for localhost and 127.0.0.1, valid for two days.
    pub fn generate() -> Result<TempCert> {
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("pier-bench-tls-{}-{stamp}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let made = TempCert { cert: dir.join("cert.pem"), key: dir.join("key.pem"), dir };
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
            .arg(&made.key)
            .arg("-out")
            .arg(&made.cert)
            .stdin(Stdio::null())
            .output()
            .context("running openssl (the TLS rows make their certificate with the openssl CLI)")?;
        if !out.status.success() {
            bail!("openssl req failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        ensure!(made.cert.is_file() && made.key.is_file(), "openssl req wrote no certificate or key");
        Ok(made)
    }
}

impl Drop for TempCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    ensure!(!certs.is_empty(), "{} holds no certificate", path.display());
    Ok(certs)
}

/// The native baseline's config: rustls's defaults (TLS 1.3 and 1.2, the
/// default cipher suites and key exchange groups, two TLS 1.3 session
/// tickets per connection), ring, no client authentication.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading the key {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs(cert)?, key)
        .context("the certificate and key do not make a server config")?;
    Ok(Arc::new(config))
}

/// The load generator's client: TLS 1.3 only, default cipher suites and key
/// exchange (X25519 first), the certificate at `trust` as the only root, and
/// no session resumption, so that every connection is a full handshake.
pub fn connector(trust: &Path) -> Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(trust)? {
        roots.add(cert).with_context(|| format!("trusting {}", trust.display()))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(ring())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).expect("a valid DNS name")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The certificate openssl makes is one our client accepts (a CA:FALSE
    /// leaf as its own root, for `localhost`), over TLS 1.3, and it is gone
    /// with the guard.
    #[tokio::test]
    async fn handshake_with_the_bench_certificate() {
        let cert = TempCert::generate().expect("openssl makes a certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(&cert.cert, &cert.key).unwrap());
        let connector = connector(&cert.cert).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(stream).await.unwrap();
            let mut buf = [0u8; 5];
            tls.read_exact(&mut buf).await.unwrap();
            tls.write_all(&buf).await.unwrap();
            tls.shutdown().await.unwrap();
        });
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut tls = connector.connect(server_name(), stream).await.unwrap();
        assert_eq!(tls.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
        tls.write_all(b"hello").await.unwrap();
        let mut back = Vec::new();
        tls.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"hello");
        server.await.unwrap();
        let dir = cert.cert.parent().unwrap().to_path_buf();
        drop(cert);
        assert!(!dir.exists());
    }
}
