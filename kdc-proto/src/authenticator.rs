//! Authenticators: proof, under a ticket's session key, that the sender holds
//! that key now, for this request.

use serde::{Deserialize, Serialize};

use crate::b64;
use crate::binding::RequestBinding;
use crate::error::ProtoError;
use crate::keys::SecretKey;
use crate::limits::MAX_AUTHENTICATOR_LEN;
use crate::principal::Principal;
use crate::seal::{self, SealedObject, Usage};
use crate::ticket::VerifiedTicket;
use crate::time::{AcceptanceWindow, UnixMillis};

/// Key id named by objects sealed under a session key (the receiver knows
/// which session key from the ticket that travels alongside).
pub const SESSION_KID: &str = "session";

/// The HTTP auth-scheme name of `Authorization: Ticket …`.
pub const AUTH_SCHEME: &str = "Ticket";

/// The `Authorization` header value a client sends to a service:
/// `Ticket ticket="…", authenticator="…"`.
pub fn authorization_value(ticket: &str, sealed_authenticator: &str) -> String {
    format!("{AUTH_SCHEME} ticket=\"{ticket}\", authenticator=\"{sealed_authenticator}\"")
}

/// The plaintext of an authenticator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authenticator {
    /// The client, which must match the ticket's.
    pub client: Principal,
    /// When it was made, by the client's (offset-corrected) clock.
    pub ts: UnixMillis,
    /// 96 random bits, echoed in the mutual reply.
    pub nonce: String,
    /// The request binding digest (see [`RequestBinding`]).
    pub bnd: String,
    /// Whether the binding covers the body, so a verifier knows to read it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub body: bool,
}

impl Authenticator {
    /// A fresh authenticator for `binding`, with a random nonce.
    pub fn new(client: Principal, now: UnixMillis, binding: &RequestBinding) -> Self {
        let mut n = [0u8; 12];
        rand::fill(&mut n[..]);
        Self { client, ts: now, nonce: b64::encode(n), bnd: binding.digest(), body: binding.binds_body() }
    }

    /// Seals it under the session key for `usage` ([`Usage::Authenticator`]
    /// for services, [`Usage::TgsAuthenticator`] for the KDC).
    pub fn seal(&self, session_key: &SecretKey, usage: Usage) -> Result<String, ProtoError> {
        seal::seal_json(session_key, SESSION_KID, usage, self)
    }
}

/// An authenticator that opened under the ticket's session key and passed the
/// client, time and binding checks. The caller still owes the replay check,
/// keyed on [`CheckedAuthenticator::replay_key`].
#[derive(Debug, Clone)]
pub struct CheckedAuthenticator {
    authenticator: Authenticator,
    tag: [u8; 16],
}

impl CheckedAuthenticator {
    /// The authenticator's contents.
    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    /// The GCM tag of the sealed authenticator: a fixed-size value unique to
    /// this message, for the replay cache.
    pub fn replay_key(&self) -> &[u8; 16] {
        &self.tag
    }
}

/// An authenticator that opened under the ticket's session key and names the
/// ticket's client, with its time within the skew. Its request binding is
/// still to be checked ([`TimelyAuthenticator::check_binding`]).
#[derive(Debug, Clone)]
pub struct TimelyAuthenticator {
    authenticator: Authenticator,
    tag: [u8; 16],
}

impl TimelyAuthenticator {
    /// The authenticator's contents.
    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    /// Whether the client bound the request body (so the verifier must read it).
    pub fn binds_body(&self) -> bool {
        self.authenticator.body
    }

    /// The replay-cache key of this authenticator (as
    /// [`CheckedAuthenticator::replay_key`]). Available before the binding
    /// check: an authenticator is good for one request, so presenting it
    /// anywhere, even bound to another request, uses it up.
    pub fn replay_key(&self) -> &[u8; 16] {
        &self.tag
    }

    /// Checks the binding against the request as received.
    pub fn check_binding(self, binding: &RequestBinding) -> Result<CheckedAuthenticator, ProtoError> {
        if binding.binds_body() != self.authenticator.body || !binding.matches(&self.authenticator.bnd) {
            return Err(ProtoError::BindingMismatch);
        }
        Ok(CheckedAuthenticator { authenticator: self.authenticator, tag: self.tag })
    }
}

/// Opens `token` with the ticket's session key and checks that it names the
/// ticket's client and that its time is within `max_skew_secs` of `now`.
pub fn open_authenticator_timely(
    token: &str,
    ticket: &VerifiedTicket,
    usage: Usage,
    now: UnixMillis,
    max_skew_secs: u64,
) -> Result<TimelyAuthenticator, ProtoError> {
    let sealed = SealedObject::parse(token, MAX_AUTHENTICATOR_LEN)?;
    let plain = sealed.open(ticket.session_key(), usage)?;
    let authenticator: Authenticator =
        serde_json::from_slice(&plain).map_err(|_| ProtoError::Malformed("authenticator"))?;
    if &authenticator.client != ticket.client() {
        return Err(ProtoError::ClientMismatch);
    }
    if !AcceptanceWindow::of(authenticator.ts, max_skew_secs).contains(now) {
        return Err(ProtoError::ClockSkew { server_time: now, nonce: authenticator.nonce });
    }
    Ok(TimelyAuthenticator { authenticator, tag: *sealed.tag() })
}

/// Opens `token` with the ticket's session key and checks that it names the
/// ticket's client, that its time is within `max_skew_secs` of `now`, and that
/// it is bound to `binding`.
pub fn open_authenticator(
    token: &str,
    ticket: &VerifiedTicket,
    usage: Usage,
    binding: &RequestBinding,
    now: UnixMillis,
    max_skew_secs: u64,
) -> Result<CheckedAuthenticator, ProtoError> {
    open_authenticator_timely(token, ticket, usage, now, max_skew_secs)?.check_binding(binding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Kvno, LongTermKey};
    use crate::signing::{JwkSet, KdcSigningKey, KdcVerifier};
    use crate::ticket::{SealedTicket, TicketCheck, TicketClaims, TicketFlags, mint_ticket, open_ticket};

    const NOW: u64 = 1_800_000_000;

    fn verified(client: &str) -> VerifiedTicket {
        let signer = KdcSigningKey::generate();
        let verifier = KdcVerifier::from_jwks(&JwkSet { keys: vec![signer.public_jwk()] });
        let key = LongTermKey { kvno: Kvno(1), key: SecretKey::generate() };
        let svc: Principal = "HTTP/a@EXAMPLE.TEST".parse().unwrap();
        let claims = TicketClaims {
            jti: "j".into(),
            iss: "EXAMPLE.TEST".parse().unwrap(),
            sub: client.parse().unwrap(),
            cid: "c".into(),
            aud: svc.clone(),
            sid: "s".into(),
            skey: SecretKey::generate(),
            auth_time: NOW,
            nbf: NOW,
            exp: NOW + 600,
            renew_till: None,
            flags: TicketFlags::default(),
            roles: vec![],
        };
        let t = mint_ticket(&claims, &signer, &key).unwrap();
        let st = SealedTicket::parse(&t).unwrap();
        let check = TicketCheck { service: &svc, kdc: &verifier, now: UnixMillis::from_secs(NOW), max_skew_secs: 300 };
        open_ticket(&st, &key.key, &check).unwrap()
    }

    fn binding() -> RequestBinding {
        RequestBinding::new("GET", "api.example.test", "/hello", None)
    }

    #[test]
    fn accepts_a_fresh_matching_authenticator() {
        let t = verified("alice@EXAMPLE.TEST");
        let a = Authenticator::new(t.client().clone(), UnixMillis::from_secs(NOW), &binding());
        let tok = a.seal(t.session_key(), Usage::Authenticator).unwrap();
        let c = open_authenticator(&tok, &t, Usage::Authenticator, &binding(), UnixMillis::from_secs(NOW + 5), 300)
            .unwrap();
        assert_eq!(c.authenticator(), &a);
    }

    #[test]
    fn refuses_each_kind_of_mismatch() {
        let t = verified("alice@EXAMPLE.TEST");
        let now = UnixMillis::from_secs(NOW);
        let mk = |client: &str, at: UnixMillis, b: &RequestBinding, usage| {
            Authenticator::new(client.parse().unwrap(), at, b).seal(t.session_key(), usage).unwrap()
        };
        let open = |tok: &str| open_authenticator(tok, &t, Usage::Authenticator, &binding(), now, 300);
        assert_eq!(
            open(&mk("bob@EXAMPLE.TEST", now, &binding(), Usage::Authenticator)).unwrap_err(),
            ProtoError::ClientMismatch
        );
        let skewed = Authenticator::new("alice@EXAMPLE.TEST".parse().unwrap(), now.plus_secs(301), &binding());
        let tok = skewed.seal(t.session_key(), Usage::Authenticator).unwrap();
        assert_eq!(open(&tok).unwrap_err(), ProtoError::ClockSkew { server_time: now, nonce: skewed.nonce.clone() });
        let moved = RequestBinding::new("GET", "api.example.test", "/hello?moved=1", None);
        assert_eq!(
            open(&mk("alice@EXAMPLE.TEST", now, &moved, Usage::Authenticator)).unwrap_err(),
            ProtoError::BindingMismatch
        );
        assert_eq!(
            open(&mk("alice@EXAMPLE.TEST", now, &binding(), Usage::TgsAuthenticator)).unwrap_err(),
            ProtoError::Crypto
        );
        // Under another session key (another client's ticket).
        let other = verified("alice@EXAMPLE.TEST");
        let tok = Authenticator::new(other.client().clone(), now, &binding())
            .seal(other.session_key(), Usage::Authenticator)
            .unwrap();
        assert_eq!(open(&tok).unwrap_err(), ProtoError::Crypto);
    }
}
