//! TLS on the client side: the platform's trust roots (reqwest's `rustls`
//! feature, through `rustls-platform-verifier`) plus any private CA the
//! caller names, and certificate failures told apart from an unreachable
//! host so that they are reported as what they are, never papered over.

use std::path::Path;

use crate::SdkError;

/// Reads every certificate in a PEM file (a private CA, or a bundle) to
/// trust besides the platform's roots ([`crate::ClientOptions::ca_certificates`]).
pub fn load_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, SdkError> {
    let err = |reason: String| SdkError::CaCertificate { path: path.display().to_string(), reason };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| err("not a PEM certificate file".into()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// The TLS failure behind a request error, if that is what it was.
pub(crate) fn tls_failure(e: &reqwest::Error) -> Option<String> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        // `io::Error::source` skips the error it wraps (and rustls' errors
        // arrive wrapped, sometimes twice): step into it instead.
        next = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

impl From<reqwest::Error> for SdkError {
    fn from(e: reqwest::Error) -> Self {
        match tls_failure(&e) {
            Some(reason) => {
                SdkError::Tls { host: e.url().and_then(|u| u.host_str()).unwrap_or("the server").to_owned(), reason }
            }
            None => SdkError::Http(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let missing = load_ca_file(&dir.path().join("nope.pem")).unwrap_err();
        assert!(matches!(missing, SdkError::CaCertificate { .. }) && missing.to_string().contains("nope.pem"));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "just text\n").unwrap();
        assert!(matches!(load_ca_file(&empty), Err(SdkError::CaCertificate { .. })));
    }
}
