//! The client's side of the three ticket exchanges (AS: `POST
//! /tickets/initial`, TGS: `POST /tickets`, renewal: `POST /tickets/renew`),
//! as plain functions: a request is built from keys, a nonce and the time;
//! a reply is opened and checked against the request it answers, giving an
//! [`IssuedTicket`]. The SDK and the KDC's tests both use these; only the
//! HTTP around them is theirs.
//!
//! ```
//! use kdc_proto::new_nonce;
//! use kdc_proto::long_term_kid;
//! use kdc_proto::{EncTicketPart, InitialTicketRequest, ServiceTicketRequest, TicketReply};
//! use kdc_proto::{Usage, seal_json};
//! use kdc_proto::{Kvno, Principal, SecretKey, TicketFlags, UnixMillis};
//!
//! let alice: Principal = "alice@EXAMPLE.TEST".parse()?;
//! let key = SecretKey::generate(); // derived from the password in real life
//! let now = UnixMillis::from_secs(1_800_000_000);
//! let request = InitialTicketRequest::pre_authenticated(alice.clone(), &key, Kvno(1), new_nonce(), now)?;
//!
//! // What the KDC answers (POST /tickets/initial), sealed under alice's key.
//! let part = EncTicketPart {
//!     session_key: SecretKey::generate(), nonce: request.nonce.clone(),
//!     service: Principal::ticket_granting(alice.realm()), auth_time: now.as_secs(),
//!     start_time: now.as_secs(), end_time: now.as_secs() + 36_000, renew_till: None,
//!     flags: TicketFlags::default(), kvno: Kvno(1),
//! };
//! let enc_part = seal_json(&key, &long_term_kid(&alice, Kvno(1)), Usage::AsReply, &part)?;
//! let reply = TicketReply { client: alice.clone(), ticket: "the TGT".into(), enc_part };
//!
//! // The client trusts only what opens under its key and answers its request.
//! let tgt = reply.open_initial(&request, &key, now)?;
//! assert_eq!(tgt.part, part);
//! let service: Principal = "HTTP/api.example.test@EXAMPLE.TEST".parse()?;
//! let tgs_request = ServiceTicketRequest::new(&alice, &tgt, service, new_nonce(), now)?;
//! assert_eq!(tgs_request.tgt, "the TGT");
//! # Ok::<(), kdc_proto::ProtoError>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::authenticator::Authenticator;
use crate::b64;
use crate::error::ProtoError;
use crate::keys::{Kvno, SecretKey, long_term_kid};
use crate::limits::MAX_SEALED_LEN;
use crate::messages::{
    EncTicketPart, InitialTicketRequest, PreAuthTimestamp, RenewRequest, ServiceTicketRequest, TicketReply,
};
use crate::principal::Principal;
use crate::seal::{self, SealedObject, Usage};
use crate::time::UnixMillis;

/// Tickets are refreshed (or renewed) after this share of their lifetime, in
/// percent: 80 % (two hours before the end of a ten-hour ticket), so a
/// client never meets a `401 ticket_expired`.
pub const REFRESH_FRACTION_PERCENT: u64 = 80;

/// A fresh request nonce: 96 random bits, base64url.
pub fn new_nonce() -> String {
    let mut n = [0u8; 12];
    rand::fill(&mut n[..]);
    b64::encode(n)
}

/// A ticket as its holder keeps it: the ticket, opaque, and the client's
/// part of the reply that delivered it (session key, service, times, flags).
/// `Debug` shows neither the ticket nor the session key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuedTicket {
    /// The ticket.
    pub ticket: String,
    /// The client's part of the reply, opened and checked.
    pub part: EncTicketPart,
}

impl std::fmt::Debug for IssuedTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedTicket")
            .field("service", &self.part.service)
            .field("end_time", &self.part.end_time)
            .field("renew_till", &self.part.renew_till)
            .finish_non_exhaustive()
    }
}

impl IssuedTicket {
    /// The service it is for.
    pub fn service(&self) -> &Principal {
        &self.part.service
    }

    /// Its session key.
    pub fn session_key(&self) -> &SecretKey {
        &self.part.session_key
    }

    /// Whether it is still usable at `now` (Unix seconds).
    pub fn valid_at(&self, now: u64) -> bool {
        now < self.part.end_time
    }

    /// Whether it should be refreshed at `now` (Unix seconds): once
    /// [`REFRESH_FRACTION_PERCENT`] of its lifetime has passed.
    pub fn needs_refresh(&self, now: u64) -> bool {
        let (start, end) = (self.part.start_time, self.part.end_time);
        let life = end.saturating_sub(start);
        now >= start.saturating_add(life * REFRESH_FRACTION_PERCENT / 100)
    }
}

impl InitialTicketRequest {
    /// A request without pre-authentication, for the KDC's challenge (its
    /// salt and Argon2id cost).
    pub fn without_pre_auth(client: Principal, nonce: String) -> Self {
        Self { client, service: None, nonce, lifetime_secs: None, renewable: None, pre_auth: None }
    }

    /// A request for a TGT, pre-authenticated at `now` under the client's
    /// long-term `key` of version `kvno` (named in the sealed timestamp's
    /// `kid`).
    pub fn pre_authenticated(
        client: Principal,
        key: &SecretKey,
        kvno: Kvno,
        nonce: String,
        now: UnixMillis,
    ) -> Result<Self, ProtoError> {
        let timestamp = PreAuthTimestamp { ts: now, nonce: nonce.clone() };
        let pre_auth = seal::seal_json(key, &long_term_kid(&client, kvno), Usage::PreAuth, &timestamp)?;
        Ok(Self { pre_auth: Some(pre_auth), ..Self::without_pre_auth(client, nonce) })
    }

    /// The service the reply must be for: the one asked for, by default
    /// the client realm's ticket-granting service.
    pub fn reply_service(&self) -> Principal {
        self.service.clone().unwrap_or_else(|| Principal::ticket_granting(self.client.realm()))
    }
}

impl ServiceTicketRequest {
    /// A request for a ticket to `service`, with an authenticator made at
    /// `now` under the session key of `tgt` and bound to the request.
    pub fn new(
        client: &Principal,
        tgt: &IssuedTicket,
        service: Principal,
        nonce: String,
        now: UnixMillis,
    ) -> Result<Self, ProtoError> {
        let binding = Self::binding_for(&service, &nonce, None, None);
        let authenticator =
            Authenticator::new(client.clone(), now, &binding).seal(tgt.session_key(), Usage::TgsAuthenticator)?;
        Ok(Self { tgt: tgt.ticket.clone(), authenticator, service, nonce, lifetime_secs: None, renewable: None })
    }
}

impl RenewRequest {
    /// A request to renew `ticket`, with an authenticator made at `now`
    /// under its session key and bound to the request.
    pub fn new(client: &Principal, ticket: &IssuedTicket, nonce: String, now: UnixMillis) -> Result<Self, ProtoError> {
        let authenticator = Authenticator::new(client.clone(), now, &Self::binding_for(&nonce))
            .seal(ticket.session_key(), Usage::TgsAuthenticator)?;
        Ok(Self { ticket: ticket.ticket.clone(), authenticator, nonce })
    }
}

impl TicketReply {
    /// Opens the reply to an AS `request` with the client's long-term `key`
    /// (usage `as-reply`) and checks it ([`Self::open_with`]).
    pub fn open_initial(
        self,
        request: &InitialTicketRequest,
        key: &SecretKey,
        now: UnixMillis,
    ) -> Result<IssuedTicket, ProtoError> {
        self.open_with(key, Usage::AsReply, &request.nonce, &request.reply_service(), now)
    }

    /// Opens the reply to a TGS `request` made with `tgt` under its session
    /// key (usage `tgs-reply`) and checks it ([`Self::open_with`]).
    pub fn open_service(
        self,
        request: &ServiceTicketRequest,
        tgt: &IssuedTicket,
        now: UnixMillis,
    ) -> Result<IssuedTicket, ProtoError> {
        self.open_with(tgt.session_key(), Usage::TgsReply, &request.nonce, &request.service, now)
    }

    /// Opens the reply to a renewal `request` of `renewed` under its session
    /// key (usage `tgs-reply`) and checks it ([`Self::open_with`]): the new
    /// ticket must be for the same service.
    pub fn open_renewal(
        self,
        request: &RenewRequest,
        renewed: &IssuedTicket,
        now: UnixMillis,
    ) -> Result<IssuedTicket, ProtoError> {
        self.open_with(renewed.session_key(), Usage::TgsReply, &request.nonce, renewed.service(), now)
    }

    /// Opens `enc_part` under `key` for `usage`, and accepts it only when it
    /// echoes `nonce`, names `service`, starts no later than it ends, and has
    /// not ended at `now`. Only the sealed part is trusted: the cleartext
    /// `client` is not looked at. Opening failures are [`ProtoError::Crypto`],
    /// a part that does not answer the request [`ProtoError::ReplyMismatch`],
    /// an ended one [`ProtoError::TicketExpired`].
    pub fn open_with(
        self,
        key: &SecretKey,
        usage: Usage,
        nonce: &str,
        service: &Principal,
        now: UnixMillis,
    ) -> Result<IssuedTicket, ProtoError> {
        let plain = SealedObject::parse(&self.enc_part, MAX_SEALED_LEN)?.open(key, usage)?;
        let part: EncTicketPart =
            serde_json::from_slice(&plain).map_err(|_| ProtoError::Malformed("reply's enc_part"))?;
        if part.nonce != nonce || &part.service != service || part.start_time > part.end_time {
            return Err(ProtoError::ReplyMismatch);
        }
        if part.end_time <= now.as_secs() {
            return Err(ProtoError::TicketExpired);
        }
        Ok(IssuedTicket { ticket: self.ticket, part })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::TicketFlags;

    const NOW: u64 = 1_800_000_000;

    fn alice() -> Principal {
        "alice@EXAMPLE.TEST".parse().unwrap()
    }

    fn part(service: Principal, nonce: &str) -> EncTicketPart {
        EncTicketPart {
            session_key: SecretKey::generate(),
            nonce: nonce.to_owned(),
            service,
            auth_time: NOW,
            start_time: NOW,
            end_time: NOW + 100,
            renew_till: None,
            flags: TicketFlags::default(),
            kvno: Kvno(1),
        }
    }

    fn reply(key: &SecretKey, usage: Usage, part: &EncTicketPart) -> TicketReply {
        let enc_part = seal::seal_json(key, crate::authenticator::SESSION_KID, usage, part).unwrap();
        TicketReply { client: alice(), ticket: "t".into(), enc_part }
    }

    #[test]
    fn an_as_reply_must_answer_its_request() {
        let key = SecretKey::generate();
        let now = UnixMillis::from_secs(NOW);
        let req = InitialTicketRequest::pre_authenticated(alice(), &key, Kvno(1), new_nonce(), now).unwrap();
        let tgs = Principal::ticket_granting(alice().realm());
        assert_eq!(req.reply_service(), tgs);
        let good = part(tgs.clone(), &req.nonce);
        let issued = reply(&key, Usage::AsReply, &good).open_initial(&req, &key, now).unwrap();
        assert_eq!((issued.ticket.as_str(), &issued.part), ("t", &good));
        let other_service = part("HTTP/a.example.test@EXAMPLE.TEST".parse().unwrap(), &req.nonce);
        let other_nonce = part(tgs.clone(), "another");
        let backwards = EncTicketPart { start_time: NOW + 200, ..good.clone() };
        for bad in [other_service, other_nonce, backwards] {
            let e = reply(&key, Usage::AsReply, &bad).open_initial(&req, &key, now).unwrap_err();
            assert_eq!(e, ProtoError::ReplyMismatch);
        }
        let late = UnixMillis::from_secs(NOW + 100);
        let e = reply(&key, Usage::AsReply, &good).open_initial(&req, &key, late).unwrap_err();
        assert_eq!(e, ProtoError::TicketExpired);
        // The wrong key or usage opens nothing.
        let e = reply(&key, Usage::TgsReply, &good).open_initial(&req, &key, now).unwrap_err();
        assert_eq!(e, ProtoError::Crypto);
        let e = reply(&SecretKey::generate(), Usage::AsReply, &good).open_initial(&req, &key, now).unwrap_err();
        assert_eq!(e, ProtoError::Crypto);
    }

    #[test]
    fn tgs_and_renewal_requests_are_bound_and_their_replies_checked() {
        let now = UnixMillis::from_secs(NOW);
        let tgt = IssuedTicket { ticket: "tgt".into(), part: part(Principal::ticket_granting(alice().realm()), "n") };
        let api: Principal = "HTTP/api.example.test@EXAMPLE.TEST".parse().unwrap();
        let req = ServiceTicketRequest::new(&alice(), &tgt, api.clone(), new_nonce(), now).unwrap();
        assert_eq!(req.tgt, "tgt");
        let sealed = SealedObject::parse(&req.authenticator, MAX_SEALED_LEN).unwrap();
        let a: Authenticator =
            serde_json::from_slice(&sealed.open(tgt.session_key(), Usage::TgsAuthenticator).unwrap()).unwrap();
        assert_eq!((a.client, a.ts, a.bnd, a.body), (alice(), now, req.binding().digest(), true));
        let st = part(api.clone(), &req.nonce);
        let issued = reply(tgt.session_key(), Usage::TgsReply, &st).open_service(&req, &tgt, now).unwrap();
        assert_eq!(issued.service(), &api);

        let renew = RenewRequest::new(&alice(), &issued, new_nonce(), now).unwrap();
        assert_eq!(renew.ticket, "t");
        let again = part(api, &renew.nonce);
        let renewed = reply(issued.session_key(), Usage::TgsReply, &again).open_renewal(&renew, &issued, now).unwrap();
        assert_eq!(renewed.part, again);
        // A renewal answered with a ticket for another service is refused.
        let moved = part(Principal::ticket_granting(alice().realm()), &renew.nonce);
        let e = reply(issued.session_key(), Usage::TgsReply, &moved).open_renewal(&renew, &issued, now).unwrap_err();
        assert_eq!(e, ProtoError::ReplyMismatch);
    }

    #[test]
    fn refresh_comes_at_eighty_percent_of_the_lifetime() {
        let t = IssuedTicket { ticket: "t".into(), part: part(alice(), "n") };
        assert!(t.valid_at(NOW + 99) && !t.valid_at(NOW + 100));
        assert!(!t.needs_refresh(NOW + 79) && t.needs_refresh(NOW + 80));
        assert!(!format!("{t:?}").contains(&t.part.session_key.to_b64()));
    }

    #[test]
    fn nonces_are_fresh() {
        let (a, b) = (new_nonce(), new_nonce());
        assert_ne!(a, b);
        assert_eq!(b64::decode(&a, "nonce").unwrap().len(), 12);
    }
}
