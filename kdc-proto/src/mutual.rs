//! Mutual authentication: the service's reply, sealed under the session key,
//! that proves to the client both the service's identity and the integrity of
//! the response (status and body digest), beyond Kerberos AP-REP.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::authenticator::{Authenticator, SESSION_KID};
use crate::binding::body_digest;
use crate::error::ProtoError;
use crate::keys::SecretKey;
use crate::limits::MAX_AUTHENTICATOR_LEN;
use crate::seal::{self, SealedObject, Usage};
use crate::time::UnixMillis;

/// The plaintext of `Authentication-Info: mutual="…"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MutualReply {
    /// The authenticator's timestamp, echoed.
    pub ts: UnixMillis,
    /// The authenticator's nonce, echoed.
    pub nonce: String,
    /// The HTTP status of the response.
    pub status: u16,
    /// `base64url(SHA-256(response body))`.
    pub bd: String,
}

impl MutualReply {
    /// The reply to `authenticator` for a response with `status` and `body`.
    pub fn for_response(authenticator: &Authenticator, status: u16, body: &[u8]) -> Self {
        Self { ts: authenticator.ts, nonce: authenticator.nonce.clone(), status, bd: body_digest(body) }
    }

    /// Seals it under the session key (usage `mutual-reply`).
    pub fn seal(&self, session_key: &SecretKey) -> Result<String, ProtoError> {
        seal::seal_json(session_key, SESSION_KID, Usage::MutualReply, self)
    }
}

/// Client side: checks a sealed mutual reply against the authenticator that
/// was sent and the response actually received. Any difference is an error.
pub fn verify_mutual_reply(
    token: &str,
    session_key: &SecretKey,
    sent: &Authenticator,
    status: u16,
    body: &[u8],
) -> Result<(), ProtoError> {
    let sealed = SealedObject::parse(token, MAX_AUTHENTICATOR_LEN)?;
    let plain = sealed.open(session_key, Usage::MutualReply)?;
    let reply: MutualReply = serde_json::from_slice(&plain).map_err(|_| ProtoError::Malformed("mutual reply"))?;
    let expected = MutualReply::for_response(sent, status, body);
    let same = reply.ts == expected.ts
        && reply.status == expected.status
        && bool::from(reply.nonce.as_bytes().ct_eq(expected.nonce.as_bytes()))
        && bool::from(reply.bd.as_bytes().ct_eq(expected.bd.as_bytes()));
    if same { Ok(()) } else { Err(ProtoError::Crypto) }
}

/// The authenticated detail of a `clock_skew` refusal: the service's time,
/// sealed under the session key (usage `error-detail`), so a man in the middle
/// cannot shift a client's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// The service's time.
    pub server_time: UnixMillis,
    /// The refused authenticator's nonce, so the detail cannot be replayed
    /// into another exchange.
    pub nonce: String,
}

impl ErrorDetail {
    /// Seals it under the session key.
    pub fn seal(&self, session_key: &SecretKey) -> Result<String, ProtoError> {
        seal::seal_json(session_key, SESSION_KID, Usage::ErrorDetail, self)
    }

    /// Opens and checks it against the authenticator that was sent.
    pub fn open(token: &str, session_key: &SecretKey, sent: &Authenticator) -> Result<Self, ProtoError> {
        let sealed = SealedObject::parse(token, MAX_AUTHENTICATOR_LEN)?;
        let plain = sealed.open(session_key, Usage::ErrorDetail)?;
        let d: Self = serde_json::from_slice(&plain).map_err(|_| ProtoError::Malformed("error detail"))?;
        if d.nonce != sent.nonce {
            return Err(ProtoError::Crypto);
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RequestBinding;

    #[test]
    fn reply_binds_status_body_and_authenticator() {
        let key = SecretKey::generate();
        let a = Authenticator::new(
            "alice@R".parse().unwrap(),
            UnixMillis(5),
            &RequestBinding::new("GET", "api.example.test", "/", None),
        );
        let tok = MutualReply::for_response(&a, 200, b"hello").seal(&key).unwrap();
        assert!(verify_mutual_reply(&tok, &key, &a, 200, b"hello").is_ok());
        assert!(verify_mutual_reply(&tok, &key, &a, 500, b"hello").is_err());
        assert!(verify_mutual_reply(&tok, &key, &a, 200, b"hellO").is_err());
        let other = Authenticator::new(
            "alice@R".parse().unwrap(),
            UnixMillis(5),
            &RequestBinding::new("GET", "api.example.test", "/", None),
        );
        assert!(verify_mutual_reply(&tok, &key, &other, 200, b"hello").is_err());
        assert!(verify_mutual_reply(&tok, &SecretKey::generate(), &a, 200, b"hello").is_err());
    }

    #[test]
    fn error_detail_is_bound_to_the_authenticator() {
        let key = SecretKey::generate();
        let a = Authenticator::new(
            "alice@R".parse().unwrap(),
            UnixMillis(5),
            &RequestBinding::new("GET", "api.example.test", "/", None),
        );
        let tok = ErrorDetail { server_time: UnixMillis(99), nonce: a.nonce.clone() }.seal(&key).unwrap();
        assert_eq!(ErrorDetail::open(&tok, &key, &a).unwrap().server_time, UnixMillis(99));
        let other = Authenticator::new(
            "alice@R".parse().unwrap(),
            UnixMillis(5),
            &RequestBinding::new("GET", "api.example.test", "/", None),
        );
        assert!(ErrorDetail::open(&tok, &key, &other).is_err());
    }
}
