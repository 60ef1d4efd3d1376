//! A listener's TLS settings made into a rustls `ServerConfig`, with every
//! way the files can be wrong named in one line: missing, not PEM, a key
//! that does not match the certificate, a certificate out of its validity.

use crate::config::ListenerConfig;
use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The one crypto provider pier uses (see the README's TLS section).
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The listener's TLS server configuration, or `None` for a plaintext one.
pub(crate) fn load(l: &ListenerConfig) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    let (Some(cert), Some(key)) = (&l.tls_cert, &l.tls_key) else { return Ok(None) };
    let name = &l.name;
    let chain = certificates(cert).with_context(|| format!("listener `{name}`: tls-cert `{}`", cert.display()))?;
    check_validity(&chain[0]).with_context(|| format!("listener `{name}`: tls-cert `{}`", cert.display()))?;
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| pem_error(&e))
        .with_context(|| format!("listener `{name}`: tls-key `{}`", key.display()))?;
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("the TLS provider supports no protocol version")?;
    let builder = match &l.tls_client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let what = || format!("listener `{name}`: tls-client-ca `{}`", ca.display());
            for der in certificates(ca).with_context(what)? {
                roots.add(der).map_err(|e| anyhow::anyhow!("{e}: not a usable CA certificate")).with_context(what)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .with_context(what)?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key_der).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => anyhow::anyhow!(
            "listener `{name}`: tls-key `{}` does not belong to tls-cert `{}`: give the key the certificate was made for",
            key.display(),
            cert.display()
        ),
        e => anyhow::anyhow!("listener `{name}`: tls-cert and tls-key cannot be used: {e}"),
    })?;
    config.alpn_protocols = l.tls_alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Some(Arc::new(config)))
}

/// Every certificate of a PEM file, in order; at least one.
fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(&e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(&e))?;
    if certs.is_empty() {
        bail!("no `BEGIN CERTIFICATE` block in it: give a PEM certificate file");
    }
    Ok(certs)
}

/// A PEM error as a person reads it: the file's own error, or what is wrong
/// with its contents.
fn pem_error(e: &rustls::pki_types::pem::Error) -> anyhow::Error {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(e) => anyhow::anyhow!("cannot be read: {e}"),
        Error::NoItemsFound => anyhow::anyhow!("no PEM block of the right kind in it: give a PEM file"),
        e => anyhow::anyhow!("is not valid PEM ({e:?}): give a PEM file"),
    }
}

/// Refuses a server certificate outside its validity period: clients would
/// refuse every handshake, so it is an error at start-up, not per connection.
fn check_validity(der: &CertificateDer<'_>) -> anyhow::Result<()> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| anyhow::anyhow!("not an X.509 certificate: {e}"))?;
    let validity = cert.validity();
    if !validity.is_valid() {
        bail!("the certificate is valid from {} to {}, not now: renew it", validity.not_before, validity.not_after);
    }
    Ok(())
}

/// The subject of a certificate (`CN=alice, O=Example`), for a handler.
pub(crate) fn subject(der: &CertificateDer<'_>) -> Option<String> {
    X509Certificate::from_der(der).ok().map(|(_, c)| c.subject().to_string())
}

/// The files a listener's TLS is read from, for the reload's "did it change".
pub(crate) fn files(l: &ListenerConfig) -> impl Iterator<Item = &Path> {
    [&l.tls_cert, &l.tls_key, &l.tls_client_ca].into_iter().flatten().map(|p| p.as_path())
}
