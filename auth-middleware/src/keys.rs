//! The service's long-term keys (from its keytab) and the KDC's signature
//! verification keys (from its JWK set), both swappable at run time.

use std::collections::HashMap;
use std::path::Path;

use kdc_proto::Keytab;
use kdc_proto::{JwkSet, Kvno, Principal, SecretKey, UnixMillis};

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

/// The largest JWK set fetched, bytes: a few keys take a few hundred.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;

/// Checks that `uri` may carry the KDC's signing keys: `https`, or plain
/// `http` to a loopback address when `allow_loopback_http` says so (tests
/// and a KDC on the same machine). Anything else would let a network
/// attacker substitute the keys that decide which tickets are genuine.
pub fn check_jwks_uri(uri: &str, allow_loopback_http: bool) -> Result<reqwest::Url, ConfigError> {
    let err = |reason: &str| ConfigError::Jwks { uri: uri.to_owned(), reason: reason.to_owned() };
    let url = reqwest::Url::parse(uri).map_err(|_| err("not an absolute URL"))?;
    let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    let loopback =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback && allow_loopback_http => Ok(url),
        "http" if loopback => Err(err("plain http: allow it for loopback explicitly, or use https")),
        _ => Err(err("the KDC's keys are fetched over https only")),
    }
}

/// A JWK set and how long the KDC said it may be kept
/// ([`kdc_proto::max_age`] of its `Cache-Control`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedJwks {
    /// The keys.
    pub set: JwkSet,
    /// `max-age`, seconds, when the answer gave one.
    pub max_age_secs: Option<u64>,
}

/// An error and its causes on one line (`error sending request: …: invalid
/// peer certificate: UnknownIssuer`): reqwest's own message alone does not
/// say why a request failed.
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = cause.source();
    }
    text
}

/// Fetches the KDC's JWK set from `url` (checked by [`check_jwks_uri`]),
/// reading at most [`MAX_JWKS_BYTES`]: a larger body is refused as it
/// streams in, never buffered whole.
pub async fn fetch_jwks(http: &reqwest::Client, url: &reqwest::Url) -> Result<FetchedJwks, ConfigError> {
    let err = |reason: String| ConfigError::Jwks { uri: url.to_string(), reason };
    let resp = http.get(url.clone()).send().await.map_err(|e| err(with_causes(&e)))?;
    if !resp.status().is_success() {
        return Err(err(format!("status {}", resp.status())));
    }
    let max_age_secs =
        resp.headers().get(reqwest::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).and_then(kdc_proto::max_age);
    let bytes = read_capped(resp, MAX_JWKS_BYTES).await.map_err(|e| err(e.replace("body", "JWK set")))?;
    let set = serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?;
    Ok(FetchedJwks { set, max_age_secs })
}

/// Most bytes of a discovery document [`discover_jwks_uri`] reads.
pub const MAX_DISCOVERY_BYTES: usize = 64 * 1024;

/// The `jwks_uri` a KDC's discovery document (`GET
/// {kdc_url}/.well-known/kdc-configuration`) names, fetched under the same
/// rules as the keys themselves: the discovery URL must pass
/// [`check_jwks_uri`] (`https`, or loopback `http` when allowed), the body is
/// bounded, and `http` should not follow redirects (a redirect could swap in
/// someone else's KDC). The named `jwks_uri` is checked the same way.
pub async fn discover_jwks_uri(
    http: &reqwest::Client,
    kdc_url: &str,
    allow_loopback_http: bool,
) -> Result<reqwest::Url, ConfigError> {
    let discovery = format!("{}/.well-known/kdc-configuration", kdc_url.trim_end_matches('/'));
    let url = check_jwks_uri(&discovery, allow_loopback_http)?;
    let err = |reason: String| ConfigError::Jwks { uri: discovery.clone(), reason };
    let resp = http.get(url).send().await.map_err(|e| err(with_causes(&e)))?;
    if !resp.status().is_success() {
        return Err(err(format!("status {}", resp.status())));
    }
    let body =
        read_capped(resp, MAX_DISCOVERY_BYTES).await.map_err(|e| err(e.replace("body", "discovery document")))?;
    let doc: kdc_proto::KdcConfiguration = serde_json::from_slice(&body).map_err(|e| err(e.to_string()))?;
    check_jwks_uri(&doc.jwks_uri, allow_loopback_http)
}

/// Reads a response body of at most `max` bytes: a larger declared length is
/// refused before reading, and a body that grows past `max` is refused as it
/// streams in, never buffered whole. The error says why, in one line.
pub(crate) async fn read_capped(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let too_large = || format!("body larger than {} KiB", max / 1024);
    if resp.content_length().is_some_and(|n| n > u64::try_from(max).unwrap_or(u64::MAX)) {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if bytes.len() + chunk.len() > max {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Whether `new` is suspicious next to `old`: it shares no key id with it (a
/// KDC that lost its keys, or someone else's keys), or it keeps a key id but
/// changes the key behind it (key ids name keys; they are never reused).
pub(crate) fn is_unrelated(old: &JwkSet, new: &JwkSet) -> bool {
    let shares_a_kid = new.keys.iter().any(|n| old.keys.iter().any(|o| o.kid == n.kid));
    let changes_a_key = new.keys.iter().any(|n| old.keys.iter().any(|o| o.kid == n.kid && o != n));
    !shares_a_kid || changes_a_key
}
