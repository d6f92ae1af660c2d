//! Ticket caches: what a client keeps between calls. Never a password or a
//! long-term key; session keys zeroize on drop and print as `<redacted>`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use kdc_proto::{Argon2Params, IssuedTicket, Principal};
use serde::{Deserialize, Serialize};

use crate::error::SdkError;

/// Current cache format version. Version 2 keeps each ticket's whole
/// reply part (`{"ticket": …, "part": {…}}`); a cache of an older version
/// reads as empty (log in again), one of a newer version is refused.
pub const CACHE_VERSION: u32 = 2;

/// One cached ticket and its session key: the ticket and the client's part
/// of the reply that delivered it, as the `kdc_proto` exchange openers open it
/// (`Debug` shows neither the ticket nor the key).
pub type CachedTicket = IssuedTicket;

/// Everything a cache holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CacheContents {
    /// Format version ([`CACHE_VERSION`]).
    pub version: u32,
    /// Who is logged in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<Principal>,
    /// The KDC it logged in to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdc: Option<String>,
    /// The ticket-granting ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tgt: Option<CachedTicket>,
    /// Service tickets by service name.
    #[serde(default)]
    pub tickets: BTreeMap<String, CachedTicket>,
    /// The KDC's last discovery document, kept as long as its
    /// `Cache-Control: max-age` allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<CachedDiscovery>,
    /// Password-key derivation parameters by principal name, from the last
    /// successful password login of each: the next login derives the key
    /// and pre-authenticates in its first request, skipping the challenge
    /// round trip. Public values (any challenge gives them out), never a
    /// key or a password.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kdf: BTreeMap<String, CachedKdf>,
}

/// The key-derivation parameters a KDC's challenge gave for one principal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CachedKdf {
    /// The salt (text, as the challenge gives it).
    pub salt: String,
    /// The Argon2id cost.
    pub argon2: Argon2Params,
}

/// A discovery document and when it may be used until.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CachedDiscovery {
    /// The KDC URL it was fetched from.
    pub kdc: String,
    /// The document.
    pub config: kdc_proto::KdcConfiguration,
    /// Fresh until (Unix seconds): fetched at + max-age.
    pub fresh_until: u64,
}

/// Where tickets are kept. Updates are read-modify-write under the cache's
/// own lock, so several processes can share one cache.
pub trait TicketCache: Send + Sync + 'static {
    /// A copy of the contents.
    fn snapshot(&self) -> Result<CacheContents, SdkError>;
    /// Applies `change` atomically.
    fn update(&self, change: &mut dyn FnMut(&mut CacheContents)) -> Result<(), SdkError>;
    /// Forgets everything (logout): session keys are zeroized, files removed.
    fn destroy(&self) -> Result<(), SdkError>;
}

/// An in-process cache (the default).
#[derive(Debug, Default)]
pub struct MemoryCache {
    contents: Mutex<CacheContents>,
}

impl TicketCache for MemoryCache {
    fn snapshot(&self) -> Result<CacheContents, SdkError> {
        Ok(self.contents.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    fn update(&self, change: &mut dyn FnMut(&mut CacheContents)) -> Result<(), SdkError> {
        let mut c = self.contents.lock().unwrap_or_else(|p| p.into_inner());
        c.version = CACHE_VERSION;
        change(&mut c);
        Ok(())
    }

    fn destroy(&self) -> Result<(), SdkError> {
        // Dropping the old contents zeroizes every session key.
        *self.contents.lock().unwrap_or_else(|p| p.into_inner()) = CacheContents::default();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_written_before_kdf_parameters_existed_still_reads() {
        let old: CacheContents = serde_json::from_str(r#"{"version":2,"tickets":{}}"#).unwrap();
        assert!(old.kdf.is_empty());
        // And one without parameters is written as before.
        assert_eq!(serde_json::to_string(&old).unwrap(), r#"{"version":2,"tickets":{}}"#);
        let mut c = old;
        c.kdf.insert(
            "alice@R".into(),
            CachedKdf { salt: "kdc-http/v1 salt:alice@R".into(), argon2: Argon2Params::DEFAULT },
        );
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<CacheContents>(&text).unwrap(), c);
        // Only public values: a salt and a cost.
        let bad = text.replace(r#""argon2""#, r#""key":"x","argon2""#);
        assert!(serde_json::from_str::<CacheContents>(&bad).is_err());
    }
}
