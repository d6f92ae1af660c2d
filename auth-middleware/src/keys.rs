//! The service's long-term keys (from its keytab) and the KDC's signature
//! verification keys (from its JWK set), both swappable at run time.

use std::collections::HashMap;
use std::path::Path;

use kdc_proto::messages::Keytab;
use kdc_proto::{JwkSet, KdcVerifier, Kvno, Principal, SecretKey, UnixMillis};

use crate::error::ConfigError;

/// Every live key version of one service principal.
#[derive(Debug, Clone)]
pub struct ServiceKeyring {
    principal: Principal,
    keys: HashMap<Kvno, SecretKey>,
}

impl ServiceKeyring {
    /// The live keys of a keytab at `now` (retired versions are left out).
    pub fn from_keytab(keytab: &Keytab, now: UnixMillis) -> Result<Self, ConfigError> {
        let keys: HashMap<Kvno, SecretKey> = keytab
            .keys
            .iter()
            .filter(|k| k.expires_at.is_none_or(|e| e > now.as_secs()))
            .map(|k| (k.kvno, k.key.clone()))
            .collect();
        if keys.is_empty() {
            return Err(ConfigError::EmptyKeytab);
        }
        Ok(Self { principal: keytab.principal.clone(), keys })
    }

    /// Reads a JSON keytab file (as `kdc keytab export` writes it).
    pub fn from_file(path: &Path, now: UnixMillis) -> Result<Self, ConfigError> {
        let bytes = zeroize::Zeroizing::new(
            std::fs::read(path).map_err(|source| ConfigError::KeytabIo { path: path.to_owned(), source })?,
        );
        let keytab: Keytab = serde_json::from_slice(&bytes).map_err(|_| ConfigError::KeytabFormat(path.to_owned()))?;
        Self::from_keytab(&keytab, now)
    }

    /// The service principal.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// One key version.
    pub fn key(&self, kvno: Kvno) -> Option<&SecretKey> {
        self.keys.get(&kvno)
    }
}

/// Fetches the KDC's JWK set.
pub async fn fetch_jwks(http: &reqwest::Client, uri: &str) -> Result<JwkSet, ConfigError> {
    let err = |reason: String| ConfigError::Jwks { uri: uri.to_owned(), reason };
    let resp = http.get(uri).send().await.map_err(|e| err(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(err(format!("status {}", resp.status())));
    }
    let bytes = resp.bytes().await.map_err(|e| err(e.to_string()))?;
    if bytes.len() > 64 * 1024 {
        return Err(err("JWK set larger than 64 KiB".to_owned()));
    }
    serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))
}

/// A verifier for a JWK set.
pub fn verifier_for(set: &JwkSet) -> KdcVerifier {
    KdcVerifier::from_jwks(set)
}
