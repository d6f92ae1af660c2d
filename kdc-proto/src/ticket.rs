//! Tickets: claims signed by the KDC, then sealed under the service's key
//! (nested JWT: sign, then encrypt). [`VerifiedTicket`] is the proof that all
//! of that was checked; only [`open_ticket`] can build one.

use serde::{Deserialize, Serialize};

use crate::error::ProtoError;
use crate::keys::{Kvno, LongTermKey, SecretKey, long_term_kid, parse_long_term_kid};
use crate::limits::MAX_TICKET_LEN;
use crate::principal::{Principal, Realm};
use crate::seal::{self, SealedObject, Usage};
use crate::signing::{KdcSigningKey, KdcVerifier};
use crate::time::UnixMillis;

/// Ticket flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketFlags {
    /// Issued by the initial (AS) exchange, not from a TGT.
    #[serde(default)]
    pub initial: bool,
    /// The client pre-authenticated with its long-term key.
    #[serde(default)]
    pub pre_authent: bool,
    /// May be renewed up to `renew_till`.
    #[serde(default)]
    pub renewable: bool,
}

/// What a ticket says, as the KDC signed it. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketClaims {
    /// Random ticket id.
    pub jti: String,
    /// The issuing realm.
    pub iss: Realm,
    /// The client.
    pub sub: Principal,
    /// The client's immutable principal id (never reused, unlike names).
    pub cid: String,
    /// The service the ticket is for.
    pub aud: Principal,
    /// The service's immutable principal id.
    pub sid: String,
    /// The session key shared by client and service.
    pub skey: SecretKey,
    /// When the client first authenticated (initial exchange).
    pub auth_time: u64,
    /// Start of validity.
    pub nbf: u64,
    /// End of validity.
    pub exp: u64,
    /// Latest end time renewal may reach (renewable tickets only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_till: Option<u64>,
    /// Flags.
    #[serde(default)]
    pub flags: TicketFlags,
    /// Authorization data: the client's roles, from the KDC's store.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Signs `claims` with the KDC key and seals them under the service's current
/// long-term key. Refuses to mint a ticket longer than [`MAX_TICKET_LEN`].
pub fn mint_ticket(
    claims: &TicketClaims,
    signer: &KdcSigningKey,
    service_key: &LongTermKey,
) -> Result<String, ProtoError> {
    let jws = zeroize::Zeroizing::new(signer.sign(claims)?);
    let kid = long_term_kid(&claims.aud, service_key.kvno);
    let token = seal::seal(&service_key.key, &kid, Usage::Ticket, jws.as_bytes())?;
    if token.len() > MAX_TICKET_LEN {
        return Err(ProtoError::TicketTooLarge { size: token.len(), max: MAX_TICKET_LEN });
    }
    Ok(token)
}

/// A ticket split into its sealed parts, with the service and key version its
/// header names (unauthenticated: only for choosing a key).
#[derive(Debug)]
pub struct SealedTicket<'a> {
    /// The sealed object.
    pub sealed: SealedObject<'a>,
    /// The service named by the key id.
    pub service: Principal,
    /// The key version named by the key id.
    pub kvno: Kvno,
}

impl<'a> SealedTicket<'a> {
    /// Parses a ticket's framing and key id, bounded by [`MAX_TICKET_LEN`].
    pub fn parse(token: &'a str) -> Result<Self, ProtoError> {
        let sealed = SealedObject::parse(token, MAX_TICKET_LEN)?;
        if sealed.usage() != Usage::Ticket {
            return Err(ProtoError::Crypto);
        }
        let (service, kvno) = parse_long_term_kid(sealed.kid())?;
        Ok(Self { sealed, service, kvno })
    }
}

/// What a ticket must satisfy to be accepted.
#[derive(Debug, Clone, Copy)]
pub struct TicketCheck<'a> {
    /// The service doing the checking; the ticket must be for it.
    pub service: &'a Principal,
    /// The KDC's published signing keys.
    pub kdc: &'a KdcVerifier,
    /// The current time.
    pub now: UnixMillis,
    /// Allowed clock skew, in seconds.
    pub max_skew_secs: u64,
}

/// A ticket whose seal, KDC signature, service and validity period have all
/// been checked. Only [`open_ticket`] constructs one.
#[derive(Debug, Clone)]
pub struct VerifiedTicket {
    claims: TicketClaims,
}

impl VerifiedTicket {
    /// The verified claims.
    pub fn claims(&self) -> &TicketClaims {
        &self.claims
    }

    /// The client principal.
    pub fn client(&self) -> &Principal {
        &self.claims.sub
    }

    /// The session key.
    pub fn session_key(&self) -> &SecretKey {
        &self.claims.skey
    }

    /// Checks that `now` is inside the ticket's validity, with `max_skew_secs`
    /// allowed at both ends. [`open_ticket`] does this; callers that keep
    /// verified tickets in a cache do it again on every use.
    pub fn check_validity(&self, now: UnixMillis, max_skew_secs: u64) -> Result<(), ProtoError> {
        let now = now.as_secs();
        if now.saturating_add(max_skew_secs) < self.claims.nbf {
            return Err(ProtoError::TicketNotYetValid);
        }
        if now >= self.claims.exp.saturating_add(max_skew_secs) {
            return Err(ProtoError::TicketExpired);
        }
        Ok(())
    }

    /// Consumes the proof, returning the claims.
    pub fn into_claims(self) -> TicketClaims {
        self.claims
    }
}

/// Opens a ticket with `service_key` and checks everything about it that does
/// not need an authenticator: the seal, the KDC signature, that it is for
/// `check.service` in its realm, and that `check.now` is inside its validity
/// (with the allowed skew at both ends).
pub fn open_ticket(
    ticket: &SealedTicket<'_>,
    service_key: &SecretKey,
    check: &TicketCheck<'_>,
) -> Result<VerifiedTicket, ProtoError> {
    if &ticket.service != check.service {
        return Err(ProtoError::WrongService);
    }
    let plain = ticket.sealed.open(service_key, Usage::Ticket)?;
    let jws = std::str::from_utf8(&plain).map_err(|_| ProtoError::Crypto)?;
    let claims: TicketClaims = check.kdc.verify(jws)?;
    if &claims.aud != check.service || claims.iss != *check.service.realm() {
        return Err(ProtoError::WrongService);
    }
    let ticket = VerifiedTicket { claims };
    ticket.check_validity(check.now, check.max_skew_secs)?;
    Ok(ticket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::JwkSet;

    pub(crate) fn claims(service: &str, now: u64) -> TicketClaims {
        TicketClaims {
            jti: "t1".into(),
            iss: "EXAMPLE.TEST".parse().unwrap(),
            sub: "alice@EXAMPLE.TEST".parse().unwrap(),
            cid: "c1".into(),
            aud: service.parse().unwrap(),
            sid: "s1".into(),
            skey: SecretKey::generate(),
            auth_time: now,
            nbf: now,
            exp: now + 3600,
            renew_till: None,
            flags: TicketFlags::default(),
            roles: vec!["reader".into()],
        }
    }

    struct Fixture {
        signer: KdcSigningKey,
        verifier: KdcVerifier,
        key_a: LongTermKey,
        key_b: LongTermKey,
        a: Principal,
        b: Principal,
    }

    fn fixture() -> Fixture {
        let signer = KdcSigningKey::generate();
        let verifier = KdcVerifier::from_jwks(&JwkSet { keys: vec![signer.public_jwk()] });
        Fixture {
            signer,
            verifier,
            key_a: LongTermKey { kvno: Kvno(1), key: SecretKey::generate() },
            key_b: LongTermKey { kvno: Kvno(1), key: SecretKey::generate() },
            a: "HTTP/a.example.test@EXAMPLE.TEST".parse().unwrap(),
            b: "HTTP/b.example.test@EXAMPLE.TEST".parse().unwrap(),
        }
    }

    const NOW: u64 = 1_800_000_000;

    fn check<'a>(f: &'a Fixture, service: &'a Principal, now: u64) -> TicketCheck<'a> {
        TicketCheck { service, kdc: &f.verifier, now: UnixMillis::from_secs(now), max_skew_secs: 300 }
    }

    #[test]
    fn mint_and_open() {
        let f = fixture();
        let c = claims("HTTP/a.example.test@EXAMPLE.TEST", NOW);
        let t = mint_ticket(&c, &f.signer, &f.key_a).unwrap();
        let st = SealedTicket::parse(&t).unwrap();
        assert_eq!((st.service.clone(), st.kvno), (f.a.clone(), Kvno(1)));
        let v = open_ticket(&st, &f.key_a.key, &check(&f, &f.a, NOW + 10)).unwrap();
        assert_eq!(v.claims(), &c);
    }

    #[test]
    fn ticket_for_a_cannot_be_opened_by_b() {
        let f = fixture();
        let t = mint_ticket(&claims("HTTP/a.example.test@EXAMPLE.TEST", NOW), &f.signer, &f.key_a).unwrap();
        let st = SealedTicket::parse(&t).unwrap();
        // B, checking as itself: the ticket names A.
        assert_eq!(open_ticket(&st, &f.key_b.key, &check(&f, &f.b, NOW)).unwrap_err(), ProtoError::WrongService);
        // B's key, even when told the ticket is for A: cannot decrypt.
        assert_eq!(open_ticket(&st, &f.key_b.key, &check(&f, &f.a, NOW)).unwrap_err(), ProtoError::Crypto);
    }

    #[test]
    fn silver_ticket_without_kdc_signature_is_refused() {
        let f = fixture();
        let rogue = KdcSigningKey::generate();
        let t = mint_ticket(&claims("HTTP/a.example.test@EXAMPLE.TEST", NOW), &rogue, &f.key_a).unwrap();
        let st = SealedTicket::parse(&t).unwrap();
        assert_eq!(open_ticket(&st, &f.key_a.key, &check(&f, &f.a, NOW)).unwrap_err(), ProtoError::Signature);
    }

    #[test]
    fn validity_window_is_enforced() {
        let f = fixture();
        let t = mint_ticket(&claims("HTTP/a.example.test@EXAMPLE.TEST", NOW), &f.signer, &f.key_a).unwrap();
        let st = SealedTicket::parse(&t).unwrap();
        let k = &f.key_a.key;
        assert_eq!(open_ticket(&st, k, &check(&f, &f.a, NOW + 3600 + 300)).unwrap_err(), ProtoError::TicketExpired);
        assert_eq!(open_ticket(&st, k, &check(&f, &f.a, NOW - 301)).unwrap_err(), ProtoError::TicketNotYetValid);
        assert!(open_ticket(&st, k, &check(&f, &f.a, NOW + 3600 + 299)).is_ok());
    }

    #[test]
    fn oversized_ticket_is_not_minted() {
        let f = fixture();
        let mut c = claims("HTTP/a.example.test@EXAMPLE.TEST", NOW);
        c.roles = (0..200).map(|i| format!("role-with-a-long-name-{i:04}")).collect();
        assert!(matches!(mint_ticket(&c, &f.signer, &f.key_a), Err(ProtoError::TicketTooLarge { .. })));
    }

    #[test]
    fn ticket_with_many_roles_stays_under_header_limits() {
        let f = fixture();
        let mut c = claims("HTTP/a.example.test@EXAMPLE.TEST", NOW);
        c.roles = (0..crate::limits::MAX_ROLES).map(|i| format!("r{i:02}-{}", "x".repeat(30))).collect();
        let t = mint_ticket(&c, &f.signer, &f.key_a).unwrap();
        assert!(t.len() <= MAX_TICKET_LEN, "{}", t.len());
    }
}
