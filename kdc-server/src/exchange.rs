//! The three ticket exchanges — initial (AS), service (TGS) and renewal — as
//! plain functions of the request, the store and the current time.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use auth_middleware::ticket_digest;

use kdc_proto::SESSION_KID;
use kdc_proto::limits::MAX_SEALED_LEN;
use kdc_proto::long_term_kid;
use kdc_proto::password_salt;
use kdc_proto::{
    AcceptanceWindow, Argon2Params, LongTermKey, Principal, ProtoError, SealedTicket, SecretKey, TicketCheck,
    TicketClaims, TicketFlags, UnixMillis, VerifiedTicket, b64, mint_ticket, open_authenticator, open_ticket,
};
use kdc_proto::{
    EncTicketPart, InitialTicketRequest, PreAuthChallenge, PreAuthTimestamp, RenewRequest, ServiceTicketRequest,
    TicketReply,
};
use kdc_proto::{SealedObject, Usage};
use sha2::{Digest, Sha256};

use crate::error::KdcError;
use crate::kdc::Kdc;
use crate::policy::{LifetimeRequest, TicketTimes};
use crate::store::{PrincipalKind, PrincipalRecord};
use crate::throttle::Verdict;
use auth_middleware::{ReplayEntry, ReplayRefusal};

/// Longest nonce a client may send.
const MAX_NONCE_LEN: usize = 64;

fn check_nonce(nonce: &str) -> Result<(), KdcError> {
    if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN {
        return Err(KdcError::Malformed(format!("nonce must be 1 to {MAX_NONCE_LEN} characters")));
    }
    Ok(())
}

fn random_id() -> String {
    let mut id = [0u8; 12];
    rand::fill(&mut id[..]);
    b64::encode(id)
}

/// The lifetime constraints of a ticket from `client` for `service`.
fn lifetime_request(
    client: &PrincipalRecord,
    service: &PrincipalRecord,
    lifetime_secs: Option<u64>,
    renewable: Option<bool>,
) -> LifetimeRequest {
    LifetimeRequest {
        lifetime_secs,
        renewable,
        client_max_life: client.max_life_secs,
        service_max_life: service.max_life_secs,
        client_max_renew: client.max_renew_secs,
        service_max_renew: service.max_renew_secs,
        parent_end: None,
        parent_renew_till: None,
    }
}

/// Who an exchange turned out to involve, for the audit trail: filled in as
/// the exchange learns it, so a refusal records as much as was known when it
/// happened. Nothing here reaches the client.
#[derive(Debug, Clone, Default)]
pub struct Parties {
    /// The client: the name an initial request claims once it is found to
    /// be a principal of the realm (an unknown name, or one refused before
    /// the lookup, is left out: it may be a password typed into the name
    /// field), or the client a presented ticket names once its seal and
    /// signature verified.
    pub client: Option<Principal>,
    /// The service the ticket is, or was to be, for.
    pub service: Option<Principal>,
    /// Why a refusal happened where the client is told less on purpose:
    /// `unknown-principal`, `wrong-key` and `nonce-mismatch` all answer
    /// `preauth-failed`; `client-disabled` answers `client-not-permitted`.
    pub reason: Option<&'static str>,
}

/// What a ticket being issued will say.
struct Issue<'a> {
    client: &'a PrincipalRecord,
    client_name: Principal,
    service: &'a PrincipalRecord,
    service_name: Principal,
    service_key: &'a LongTermKey,
    auth_time: u64,
    times: TicketTimes,
    flags: TicketFlags,
    nonce: String,
}

impl Kdc {
    fn fake_key(&self, name: &Principal) -> SecretKey {
        let mut h = Sha256::new();
        h.update(self.fake_key_secret.expose());
        h.update(name.to_string().as_bytes());
        SecretKey::from_bytes(h.finalize().into())
    }

    /// Accepts an authenticator or pre-auth timestamp once within the skew.
    ///
    /// Unlike a service, the KDC does not refuse what predates its own start:
    /// a request replayed across a restart only buys a reply sealed for the
    /// holder of the key it was made with (the client's key, or the TGT
    /// session key), which the replayer lacks, while refusing would lock out
    /// honest clients whose clocks run behind for up to the skew after every
    /// restart.
    async fn remember(&self, tag: &[u8; 16], who: &str, ts: UnixMillis, now: UnixMillis) -> Result<(), KdcError> {
        let entry = ReplayEntry {
            key: *tag,
            principal: who,
            remember_until: AcceptanceWindow::of(ts.max(now), self.policy().max_skew_secs).closes,
            now,
        };
        self.replay.check_and_insert(entry).await.map_err(|r| match r {
            ReplayRefusal::Replay => KdcError::Replay,
            ReplayRefusal::Full { retry_after } => KdcError::ReplayCacheFull { retry_after },
            ReplayRefusal::Unavailable => KdcError::ReplayCacheUnavailable,
        })
    }

    /// Whether `rec` may be the client of an initial exchange: a user, or a
    /// service other than the KDC's own (`krbtgt`, `kadmin/admin`), whose
    /// keys no one but the KDC holds. A service needs a TGT to call other
    /// services, as in Kerberos; it proves its keytab's current key.
    fn may_log_in(&self, rec: &PrincipalRecord) -> bool {
        match rec.kind {
            PrincipalKind::User => true,
            PrincipalKind::Service => {
                let realm = self.realm();
                rec.name != Principal::ticket_granting(realm).to_string()
                    && rec.name != Principal::admin_service(realm).to_string()
            }
        }
    }

    /// A principal tickets may be issued for: a live service of this realm.
    async fn ticket_target(&self, name: &Principal) -> Result<PrincipalRecord, KdcError> {
        if name.realm() != self.realm() {
            return Err(KdcError::UnknownService);
        }
        match self.find(name).await? {
            Some(r) if r.kind == PrincipalKind::Service && !r.disabled => Ok(r),
            _ => Err(KdcError::UnknownService),
        }
    }

    /// Re-reads the client of a presented ticket: it must still exist under
    /// the same immutable id and name, and not be disabled.
    async fn current_client(&self, claims: &TicketClaims) -> Result<PrincipalRecord, KdcError> {
        self.current_principal(&claims.cid, &claims.sub).await
    }

    /// Re-reads a principal a ticket names by its immutable id (`cid`) and
    /// name (`sub`): it must still exist under that id with that name, and
    /// not be disabled; otherwise [`KdcError::ClientNotPermitted`], whichever
    /// of the three it is. Nothing a ticket says about authorization is
    /// trusted past this point: the record returned is the store's now.
    pub async fn current_principal(&self, id: &str, name: &Principal) -> Result<PrincipalRecord, KdcError> {
        match self.store().principal_by_id(id).await? {
            Some(r) if r.name == name.to_string() && !r.disabled => Ok(r),
            _ => Err(KdcError::ClientNotPermitted),
        }
    }

    fn issue(&self, issue: Issue<'_>) -> Result<(String, EncTicketPart), KdcError> {
        let session_key = SecretKey::generate();
        let claims = TicketClaims {
            jti: random_id(),
            iss: self.realm().clone(),
            sub: issue.client_name,
            cid: issue.client.id.clone(),
            aud: issue.service_name.clone(),
            sid: issue.service.id.clone(),
            skey: session_key.clone(),
            auth_time: issue.auth_time,
            nbf: issue.times.start,
            exp: issue.times.end,
            renew_till: issue.times.renew_till,
            flags: issue.flags,
            roles: issue.client.roles.clone(),
        };
        let signer = self.signer_at(issue.times.start)?;
        let ticket = mint_ticket(&claims, &signer, issue.service_key).map_err(|e| match e {
            ProtoError::TicketTooLarge { .. } => KdcError::TicketTooLarge,
            _ => KdcError::Internal("ticket signing failed"),
        })?;
        let enc = EncTicketPart {
            session_key,
            nonce: issue.nonce,
            service: issue.service_name,
            auth_time: issue.auth_time,
            start_time: issue.times.start,
            end_time: issue.times.end,
            renew_till: issue.times.renew_till,
            flags: issue.flags,
            kvno: issue.service_key.kvno,
        };
        Ok((ticket, enc))
    }

    fn seal_enc_part(key: &SecretKey, kid: &str, usage: Usage, enc: &EncTicketPart) -> Result<String, KdcError> {
        kdc_proto::seal_json(key, kid, usage, enc).map_err(|_| KdcError::Internal("sealing the reply failed"))
    }

    /// The initial (AS) exchange: pre-authentication, then a ticket (by
    /// default a TGT) and its session key sealed under the client's key. The
    /// client is a user (a password-derived key) or a service (its keytab's
    /// random key; see `may_log_in`).
    ///
    /// An unknown name gets the same challenge shape and the same failure as
    /// a wrong password: its challenge is derived from the name alone and its
    /// "key" from a per-process secret, so both paths do the same work.
    pub async fn initial_ticket(
        &self,
        req: InitialTicketRequest,
        addr: Option<IpAddr>,
        now: UnixMillis,
        parties: &mut Parties,
    ) -> Result<TicketReply, KdcError> {
        let client_name = req.client.clone();
        let service_name = req.service.clone().unwrap_or_else(|| Principal::ticket_granting(self.realm()));
        // The client is named in the trail only once it is known to be a
        // principal (below): a name that is not may be a password typed
        // into the name field.
        parties.service = Some(service_name.clone());
        check_nonce(&req.nonce)?;
        if client_name.realm() != self.realm() {
            return Err(KdcError::WrongRealm);
        }
        let now_s = now.as_secs();
        let client_str = client_name.to_string();
        // Checked before any work, for real and unknown names alike: the key
        // is the name as written, whether or not it exists. A guess
        // (pre-authentication data) counts as a failure from here on until it
        // proves right, so concurrent guesses cannot slip under a limit.
        let verdict = match req.pre_auth {
            Some(_) => self.throttle.begin_guess(&client_str, addr, now_s).await,
            None => self.throttle.check(&client_str, addr, now_s).await,
        }
        // A shared throttle that cannot be reached: fail closed.
        .map_err(|_| KdcError::ReplayCacheUnavailable)?;
        let delay = match verdict {
            Verdict::Refuse { retry_after } => return Err(KdcError::Throttled { retry_after }),
            Verdict::Proceed { delay } => delay,
        };
        let found = self.find(&client_name).await?;
        if found.is_some() {
            parties.client = Some(client_name.clone());
        }
        // A user or a service: whoever may log in.
        let user = found.filter(|r| self.may_log_in(r));
        if user.is_none() {
            parties.reason = Some("unknown-principal");
        }
        let (client_key, salt, params) = match &user {
            Some(rec) if rec.kind == PrincipalKind::Service => {
                // A service logs in with the random key from its keytab (as
                // `kinit -k` does): there is nothing to derive, and its
                // challenge is the one an unknown name gets, so a challenge
                // does not tell a service from a name that does not exist.
                let (key, _) = self.current_key(rec, now_s).await?;
                (key, password_salt(&client_name), Argon2Params::DEFAULT)
            }
            Some(rec) => {
                let (key, stored) = self.current_key(rec, now_s).await?;
                let pw = stored.password.ok_or(KdcError::Internal("user key without derivation parameters"))?;
                (key, pw.salt, pw.params)
            }
            None => {
                // The same work as for a real user: a key lookup that finds a
                // row, and unsealing a key, so the two cannot be told apart by time.
                let (decoy_id, decoy) = &self.decoy;
                let _ = self.store().live_keys(decoy_id, now_s).await?;
                let _ = self.open_key(decoy_id, decoy);
                let key = LongTermKey { kvno: kdc_proto::Kvno(1), key: self.fake_key(&client_name) };
                (key, password_salt(&client_name), Argon2Params::DEFAULT)
            }
        };
        let challenge = || {
            Box::new(PreAuthChallenge {
                realm: self.realm().clone(),
                kdf: "argon2id".to_owned(),
                salt: salt.clone(),
                argon2: params,
                server_time: now,
            })
        };
        let Some(pre_auth) = &req.pre_auth else {
            return Err(KdcError::PreAuthRequired(challenge()));
        };
        if !delay.is_zero() {
            // A principal failing from many addresses: every guess at it waits
            // (bounded by `max_delay_ms`), right or wrong, known name or not.
            tokio::time::sleep(delay).await;
        }
        let opened = SealedObject::parse(pre_auth, MAX_SEALED_LEN).and_then(|obj| {
            let plain = obj.open(&client_key.key, Usage::PreAuth)?;
            let ts: PreAuthTimestamp = serde_json::from_slice(&plain).map_err(|_| ProtoError::Malformed("pre-auth"))?;
            Ok((ts, *obj.tag()))
        });
        let (ts, tag) = match (opened, &user) {
            (Ok((ts, tag)), Some(_)) if ts.nonce == req.nonce => (ts, tag),
            (opened, _) => {
                if parties.reason.is_none() {
                    parties.reason = Some(if opened.is_ok() { "nonce-mismatch" } else { "wrong-key" });
                }
                // Already counted by `begin_guess`.
                tracing::debug!(client = %client_str, "pre-authentication failed");
                return Err(KdcError::PreAuthFailed(challenge()));
            }
        };
        let Some(client) = user else {
            return Err(KdcError::PreAuthFailed(challenge()));
        };
        if !AcceptanceWindow::of(ts.ts, self.policy().max_skew_secs).contains(now) {
            // The password was right: not a failure, but not a fresh login
            // either (it may be a stale capture), so nothing is reset.
            self.throttle.refund_guess(&client_str, addr, now_s).await;
            return Err(KdcError::ClockSkew { server_time: now });
        }
        self.remember(&tag, &client.id, ts.ts, now).await?;
        // The password was right, fresh and not a replay: this address's own
        // failures for this name start afresh.
        self.throttle.guess_succeeded(&client_str, addr, now_s).await;
        if client.disabled {
            parties.reason = Some("client-disabled");
            return Err(KdcError::ClientNotPermitted);
        }
        let service = self.ticket_target(&service_name).await?;
        let (service_key, _) = self.current_key(&service, now_s).await?;
        let times =
            self.policy().ticket_times(now_s, &lifetime_request(&client, &service, req.lifetime_secs, req.renewable));
        let flags = TicketFlags { initial: true, pre_authent: true, renewable: times.renew_till.is_some() };
        let (ticket, enc) = self.issue(Issue {
            client: &client,
            client_name: client_name.clone(),
            service: &service,
            service_name,
            service_key: &service_key,
            auth_time: now_s,
            times,
            flags,
            nonce: req.nonce,
        })?;
        let kid = long_term_kid(&client_name, client_key.kvno);
        let enc_part = Self::seal_enc_part(&client_key.key, &kid, Usage::AsReply, &enc)?;
        self.issued.initial.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(client = %client_name, service = %enc.service, "initial ticket issued");
        Ok(TicketReply { client: client_name, ticket, enc_part })
    }

    /// Opens a presented ticket of this realm under the right key version of
    /// the service its key id names, which must be `expected` when given.
    async fn presented_ticket(
        &self,
        token: &str,
        expected: Option<&Principal>,
        now: UnixMillis,
    ) -> Result<(Arc<VerifiedTicket>, PrincipalRecord), KdcError> {
        let st = SealedTicket::parse(token).map_err(|_| KdcError::InvalidTicket)?;
        if expected.is_some_and(|e| e != &st.service) || st.service.realm() != self.realm() {
            return Err(KdcError::InvalidTicket);
        }
        let service = self.find(&st.service).await?.ok_or(KdcError::InvalidTicket)?;
        // The key version must still be live, cached or not.
        let stored = self.live_keys(&service, now.as_secs()).await?;
        let stored = stored.iter().find(|k| k.kvno == st.kvno).ok_or(KdcError::InvalidTicket)?;
        let skew = self.policy().max_skew_secs;
        let refused = |e| match e {
            ProtoError::TicketExpired => KdcError::TicketExpired,
            _ => KdcError::InvalidTicket,
        };
        // The seal and signature of a ticket seen before were verified then
        // (the digest covers every byte): only its times are checked again,
        // and its key is unsealed only on a miss.
        let digest = ticket_digest(token);
        let ticket = match self.verified_tickets.get(&digest) {
            Some(t) => {
                t.check_validity(now, skew).map_err(refused)?;
                t
            }
            None => {
                let key = self.open_key(&service.id, stored)?;
                let kdc = self.verifier();
                let check = TicketCheck { service: &st.service, kdc: &kdc, now, max_skew_secs: skew };
                let t = Arc::new(open_ticket(&st, &key.key, &check).map_err(refused)?);
                self.verified_tickets.insert(digest, t.clone(), now.as_secs());
                t
            }
        };
        if ticket.claims().sid != service.id {
            // The service was deleted and re-created under the same name.
            return Err(KdcError::InvalidTicket);
        }
        Ok((ticket, service))
    }

    async fn check_authenticator(
        &self,
        token: &str,
        ticket: &VerifiedTicket,
        binding: &kdc_proto::RequestBinding,
        now: UnixMillis,
    ) -> Result<(), KdcError> {
        let checked =
            open_authenticator(token, ticket, Usage::TgsAuthenticator, binding, now, self.policy().max_skew_secs)
                .map_err(|e| match e {
                    ProtoError::ClockSkew { server_time, .. } => KdcError::ClockSkew { server_time },
                    _ => KdcError::InvalidAuthenticator,
                })?;
        self.remember(checked.replay_key(), &ticket.claims().cid, checked.authenticator().ts, now).await
    }

    /// The service-ticket (TGS) exchange: a TGT and an authenticator buy a
    /// ticket for a service. The client is re-read from the store: nothing
    /// the TGT carries about authorization is trusted.
    pub async fn service_ticket(
        &self,
        req: ServiceTicketRequest,
        now: UnixMillis,
        parties: &mut Parties,
    ) -> Result<TicketReply, KdcError> {
        parties.service = Some(req.service.clone());
        check_nonce(&req.nonce)?;
        let tgs = Principal::ticket_granting(self.realm());
        let (tgt, _) = self.presented_ticket(&req.tgt, Some(&tgs), now).await?;
        parties.client = Some(tgt.claims().sub.clone());
        self.check_authenticator(&req.authenticator, &tgt, &req.binding(), now).await?;
        let parent = tgt.claims();
        let client = self.current_client(parent).await?;
        let service = self.ticket_target(&req.service).await?;
        let now_s = now.as_secs();
        let (service_key, _) = self.current_key(&service, now_s).await?;
        let times = self.policy().ticket_times(
            now_s,
            &LifetimeRequest {
                parent_end: Some(parent.exp),
                parent_renew_till: parent.renew_till.filter(|_| parent.flags.renewable),
                ..lifetime_request(&client, &service, req.lifetime_secs, req.renewable)
            },
        );
        if times.end <= now_s {
            return Err(KdcError::TicketExpired);
        }
        let flags = TicketFlags {
            initial: false,
            pre_authent: parent.flags.pre_authent,
            renewable: times.renew_till.is_some(),
        };
        let (ticket, enc) = self.issue(Issue {
            client: &client,
            client_name: parent.sub.clone(),
            service: &service,
            service_name: req.service.clone(),
            service_key: &service_key,
            auth_time: parent.auth_time,
            times,
            flags,
            nonce: req.nonce,
        })?;
        let enc_part = Self::seal_enc_part(tgt.session_key(), SESSION_KID, Usage::TgsReply, &enc)?;
        self.issued.service.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(client = %parent.sub, service = %req.service, "service ticket issued");
        Ok(TicketReply { client: parent.sub.clone(), ticket, enc_part })
    }

    /// Renewal: a renewable, unexpired ticket gets a fresh session key and a
    /// new end time, never past its renew-till.
    pub async fn renew_ticket(
        &self,
        req: RenewRequest,
        now: UnixMillis,
        parties: &mut Parties,
    ) -> Result<TicketReply, KdcError> {
        check_nonce(&req.nonce)?;
        let (old, service) = self.presented_ticket(&req.ticket, None, now).await?;
        parties.client = Some(old.claims().sub.clone());
        parties.service = Some(old.claims().aud.clone());
        self.check_authenticator(&req.authenticator, &old, &req.binding(), now).await?;
        let claims = old.claims();
        let now_s = now.as_secs();
        let renew_till = match claims.renew_till {
            Some(rt) if claims.flags.renewable => rt,
            _ => return Err(KdcError::NotRenewable),
        };
        if now_s >= renew_till || now_s >= claims.exp {
            return Err(KdcError::TicketExpired);
        }
        let client = self.current_client(claims).await?;
        if service.kind != PrincipalKind::Service || service.disabled {
            return Err(KdcError::UnknownService);
        }
        let (service_key, _) = self.current_key(&service, now_s).await?;
        let end = self.policy().renewed_end(now_s, renew_till, client.max_life_secs, service.max_life_secs);
        let (ticket, enc) = self.issue(Issue {
            client: &client,
            client_name: claims.sub.clone(),
            service: &service,
            service_name: claims.aud.clone(),
            service_key: &service_key,
            auth_time: claims.auth_time,
            times: TicketTimes { start: now_s, end, renew_till: Some(renew_till) },
            flags: TicketFlags { initial: false, ..claims.flags },
            nonce: req.nonce,
        })?;
        let enc_part = Self::seal_enc_part(old.session_key(), SESSION_KID, Usage::TgsReply, &enc)?;
        self.issued.renewed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(client = %claims.sub, service = %claims.aud, "ticket renewed");
        Ok(TicketReply { client: claims.sub.clone(), ticket, enc_part })
    }
}
