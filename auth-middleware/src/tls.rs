//! Serving TLS with rustls: a certificate chain and key read from PEM files,
//! swapped in place on [`ServerTls::reload`] (wired to `SIGHUP` by
//! [`ServerTls::reload_on_sighup`]) without dropping a connection.
//!
//! Handshakes already done keep the certificate they negotiated; every new
//! handshake after a reload gets the new one. A reload that fails (a
//! missing file, a key that does not match the certificate) leaves the
//! serving certificate in place and reports why, so a half-copied renewal
//! never takes the server down.
//!
//! One crypto provider for the whole workspace: aws-lc-rs, the one reqwest's
//! `rustls` feature (the SDK and the JWK-set fetch) already builds.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate or key could not be loaded. Names the file, never its
/// contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate file is missing, unreadable, or holds no PEM certificate.
    #[error("certificate {path}: {reason}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The key file is missing, unreadable, or holds no PEM private key.
    #[error("private key {path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The key is not one rustls can sign with, or does not match the certificate.
    #[error("{cert} and {key} do not make a usable pair: {reason}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The TLS configuration could not be built.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The crypto provider every TLS endpoint of the workspace uses.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A server certificate read from PEM files, reloadable in place.
#[derive(Debug)]
pub struct ServerTls {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Arc<CurrentCert>,
    config: Arc<rustls::ServerConfig>,
}

/// The certificate new handshakes get.
#[derive(Debug)]
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

impl ServerTls {
    /// Reads the certificate chain (leaf first) from `cert` and the private
    /// key (PKCS#8, PKCS#1 or SEC1) from `key`, both PEM, and checks that
    /// they belong together.
    pub fn from_pem_files(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Self, TlsError> {
        let (cert_path, key_path) = (cert.into(), key.into());
        let provider = crypto_provider();
        let loaded = load_pair(&cert_path, &key_path, &provider)?;
        let current = Arc::new(CurrentCert(RwLock::new(Arc::new(loaded))));
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // The servers speak HTTP/1.1 only; say so, so that a client offering
        // h2 falls back instead of failing after the handshake.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self { cert_path, key_path, provider, current, config: Arc::new(config) })
    }

    /// Re-reads both files and serves the new pair to every new handshake.
    /// On error the current pair stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = load_pair(&self.cert_path, &self.key_path, &self.provider)?;
        *self.current.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        Ok(())
    }

    /// Reloads on every `SIGHUP` for as long as the returned task runs,
    /// logging each outcome. Must be called within a tokio runtime.
    pub fn reload_on_sighup(self: &Arc<Self>) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let tls = self.clone();
        Ok(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match tls.reload() {
                    Ok(()) => tracing::info!(cert = %tls.cert_path.display(), "TLS certificate reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "TLS certificate reload failed; still serving the previous one")
                    }
                }
            }
        }))
    }

    /// The acceptor for new connections (it follows reloads).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }

    /// The certificate chain now served, leaf first.
    pub fn certificate_chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.0.read().unwrap_or_else(|p| p.into_inner()).cert.clone()
    }
}

/// Reads every certificate in a PEM file (a private CA, or a bundle) to
/// trust besides the platform's roots, for an https client (the JWK-set
/// fetch, the example service's discovery fetch).
pub fn load_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, TlsError> {
    let err = |reason: String| TlsError::Certificate { path: path.to_owned(), reason };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| err("not a PEM certificate file".to_owned()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in it".to_owned()));
    }
    Ok(certs)
}

fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let cert_err = |reason: String| TlsError::Certificate { path: cert.to_owned(), reason };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no PEM certificate in it".to_owned()));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError::Key { path: key.to_owned(), reason: describe_key_error(&e) })?;
    CertifiedKey::from_der(chain, private, provider).map_err(|e| TlsError::Pair {
        cert: cert.to_owned(),
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// A PEM error about the key file, without any of its bytes.
fn describe_key_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::NoItemsFound => "no PEM private key in it".to_owned(),
        Error::Io(io) => io.to_string(),
        // Other variants can quote what was found; keep key material out of
        // messages and logs.
        _ => "not a PEM private key".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
        let (c, k) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k, cert.der().to_vec())
    }

    #[test]
    fn loads_a_pair_and_reloads_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k, first) = write_pair(dir.path(), "a");
        let tls = ServerTls::from_pem_files(&c, &k).unwrap();
        assert_eq!(tls.certificate_chain()[0].as_ref(), first.as_slice());
        // A renewal copied over the same paths.
        let (c2, k2, second) = write_pair(dir.path(), "b");
        std::fs::rename(&c2, &c).unwrap();
        std::fs::rename(&k2, &k).unwrap();
        tls.reload().unwrap();
        assert_eq!(tls.certificate_chain()[0].as_ref(), second.as_slice());
    }

    #[test]
    fn a_failed_reload_keeps_the_serving_pair() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k, first) = write_pair(dir.path(), "a");
        let tls = ServerTls::from_pem_files(&c, &k).unwrap();
        // Half a renewal: a new certificate with the old key.
        let (c2, _, _) = write_pair(dir.path(), "b");
        std::fs::rename(&c2, &c).unwrap();
        let err = tls.reload().unwrap_err();
        assert!(matches!(err, TlsError::Pair { .. }), "{err}");
        assert_eq!(tls.certificate_chain()[0].as_ref(), first.as_slice());
    }

    #[test]
    fn errors_name_the_file_and_never_quote_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k, _) = write_pair(dir.path(), "a");
        let missing = ServerTls::from_pem_files(dir.path().join("nope.pem"), &k).unwrap_err();
        assert!(matches!(missing, TlsError::Certificate { .. }) && missing.to_string().contains("nope.pem"));
        // The certificate given as the key: no private key in it.
        let err = ServerTls::from_pem_files(&c, &c).unwrap_err();
        assert!(matches!(err, TlsError::Key { .. }), "{err}");
        let key_text = std::fs::read_to_string(&k).unwrap();
        let garbled = dir.path().join("garbled.key");
        std::fs::write(&garbled, key_text.replace("PRIVATE KEY", "PRIVATE KEEY")).unwrap();
        let err = ServerTls::from_pem_files(&c, &garbled).unwrap_err().to_string();
        let body: String = key_text.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!err.contains(&body[..20]), "{err}");
    }
}
