//! Validation of one request, as plain functions of (request parts, keys,
//! caches, now), in this order: parse the header; open the ticket under the
//! key version its `kid` names and verify the KDC signature (once per ticket,
//! then cached); check service, realm and validity; open the authenticator
//! under the session key; check its client and time; check its request
//! binding; check it was not seen before; check route roles.

use std::sync::{Arc, RwLock};

use hmac::{KeyInit, Mac};
use kdc_proto::seal::Usage;
use kdc_proto::{
    Authenticator, ErrorDetail, KdcVerifier, ProtoError, RequestBinding, SealedTicket, TicketCheck,
    TimelyAuthenticator, UnixMillis, VerifiedTicket, open_authenticator_timely, open_ticket,
};

use crate::credentials::parse_authorization;
use crate::extract::AuthenticatedPrincipal;
use crate::keys::ServiceKeyring;
use crate::rejection::AuthRejection;
use crate::replay::{ReplayCache, ReplayEntry, ReplayRefusal};
use crate::ticket_cache::{VerifiedTicketCache, ticket_digest};

/// A role a route requires: requests whose path starts with `path_prefix`
/// are refused (`403`) unless the principal holds `role`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRule {
    /// Path prefix, e.g. `/admin`.
    pub path_prefix: String,
    /// Required role.
    pub role: String,
}

/// Settings of validation.
#[derive(Debug, Clone)]
pub struct VerifierSettings {
    /// Allowed clock skew, seconds. Defaults to 300.
    pub max_skew_secs: u64,
    /// Refuse requests that carry a body their authenticator does not bind.
    /// Defaults to false.
    pub require_body_binding: bool,
    /// Role requirements by path prefix. Defaults to none.
    pub role_rules: Vec<RoleRule>,
    /// Largest request body read to check a body binding, bytes. Defaults to 1 MiB.
    pub max_body_bytes: usize,
    /// Largest response body the layer buffers to sign in the mutual reply,
    /// bytes. Defaults to 16 MiB.
    pub max_response_bytes: usize,
}

impl Default for VerifierSettings {
    fn default() -> Self {
        Self {
            max_skew_secs: 300,
            require_body_binding: false,
            role_rules: Vec::new(),
            max_body_bytes: 1 << 20,
            max_response_bytes: 16 << 20,
        }
    }
}

/// A ticket and an authenticator that opened and are timely; the request
/// binding and the replay check are still to come.
#[derive(Debug)]
pub struct PendingAuth {
    ticket: Arc<VerifiedTicket>,
    authenticator: TimelyAuthenticator,
}

impl PendingAuth {
    /// Whether the authenticator binds the body (so it must be read).
    pub fn binds_body(&self) -> bool {
        self.authenticator.binds_body()
    }
}

/// A request whose credentials passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedRequest {
    /// Who made it.
    pub principal: AuthenticatedPrincipal,
    /// The ticket it came with.
    pub ticket: Arc<VerifiedTicket>,
    /// Its authenticator (echoed in the mutual reply).
    pub authenticator: Authenticator,
}

/// Everything validation needs, shared by all requests.
pub struct TicketVerifier {
    keyring: RwLock<Arc<ServiceKeyring>>,
    kdc: RwLock<Arc<KdcVerifier>>,
    replay: Arc<dyn ReplayCache>,
    tickets: VerifiedTicketCache,
    settings: VerifierSettings,
}

impl std::fmt::Debug for TicketVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketVerifier")
            .field("service", &self.service())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn read<T>(l: &RwLock<Arc<T>>) -> Arc<T> {
    l.read().unwrap_or_else(|p| p.into_inner()).clone()
}

impl TicketVerifier {
    /// A verifier for the service whose keys `keyring` holds.
    pub fn new(
        keyring: ServiceKeyring,
        kdc: KdcVerifier,
        replay: Arc<dyn ReplayCache>,
        settings: VerifierSettings,
    ) -> Self {
        Self {
            keyring: RwLock::new(Arc::new(keyring)),
            kdc: RwLock::new(Arc::new(kdc)),
            replay,
            tickets: VerifiedTicketCache::new(10_000),
            settings,
        }
    }

    /// The service principal.
    pub fn service(&self) -> kdc_proto::Principal {
        read(&self.keyring).principal().clone()
    }

    /// The settings.
    pub fn settings(&self) -> &VerifierSettings {
        &self.settings
    }

    /// The replay cache (its size is observable).
    pub fn replay_cache(&self) -> &dyn ReplayCache {
        self.replay.as_ref()
    }

    /// Swaps in new service keys (keytab reload); forgets verified tickets.
    pub fn set_keyring(&self, keyring: ServiceKeyring) {
        *self.keyring.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keyring);
        self.tickets.clear();
    }

    /// Swaps in new KDC keys (JWK set refresh); forgets verified tickets.
    pub fn set_kdc_keys(&self, kdc: KdcVerifier) {
        *self.kdc.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(kdc);
        self.tickets.clear();
    }

    fn ticket(&self, token: &str, now: UnixMillis) -> Result<Arc<VerifiedTicket>, AuthRejection> {
        let skew = self.settings.max_skew_secs;
        let digest = ticket_digest(token);
        if let Some(t) = self.tickets.get(&digest) {
            t.check_validity(now, skew).map_err(|e| match e {
                ProtoError::TicketExpired => AuthRejection::TicketExpired,
                _ => AuthRejection::InvalidTicket,
            })?;
            return Ok(t);
        }
        let sealed = SealedTicket::parse(token).map_err(|_| AuthRejection::InvalidTicket)?;
        let keyring = read(&self.keyring);
        if &sealed.service != keyring.principal() {
            return Err(AuthRejection::WrongService);
        }
        let key = keyring.key(sealed.kvno).ok_or(AuthRejection::KvnoUnknown)?;
        let kdc = read(&self.kdc);
        let check = TicketCheck { service: keyring.principal(), kdc: &kdc, now, max_skew_secs: skew };
        let verified = open_ticket(&sealed, key, &check).map_err(|e| match e {
            ProtoError::TicketExpired => AuthRejection::TicketExpired,
            ProtoError::WrongService => AuthRejection::WrongService,
            _ => AuthRejection::InvalidTicket,
        })?;
        let verified = Arc::new(verified);
        self.tickets.insert(digest, verified.clone(), now.as_secs());
        Ok(verified)
    }

    /// First half: the header, the ticket and the authenticator's identity
    /// and time.
    pub fn open(&self, authorization: Option<&str>, now: UnixMillis) -> Result<PendingAuth, AuthRejection> {
        let creds = parse_authorization(authorization.ok_or(AuthRejection::MissingCredentials)?)?;
        let ticket = self.ticket(creds.ticket, now)?;
        let authenticator = open_authenticator_timely(
            creds.authenticator,
            &ticket,
            Usage::Authenticator,
            now,
            self.settings.max_skew_secs,
        )
        .map_err(|e| match e {
            ProtoError::ClockSkew { server_time, nonce } => {
                AuthRejection::ClockSkew { detail: ErrorDetail { server_time, nonce }.seal(ticket.session_key()) }
            }
            _ => AuthRejection::InvalidAuthenticator,
        })?;
        Ok(PendingAuth { ticket, authenticator })
    }

    /// Second half: the request binding (`body` when the authenticator binds
    /// it; `has_body` says whether the request carries one at all),
    /// staleness, the replay cache and route roles.
    pub async fn complete(
        &self,
        pending: PendingAuth,
        method: &str,
        path_and_query: &str,
        body: Option<&[u8]>,
        has_body: bool,
        now: UnixMillis,
    ) -> Result<VerifiedRequest, AuthRejection> {
        let PendingAuth { ticket, authenticator } = pending;
        if self.settings.require_body_binding && has_body && !authenticator.binds_body() {
            return Err(AuthRejection::BindingMismatch);
        }
        let bound_body = authenticator.binds_body().then(|| body.unwrap_or_default());
        let binding = RequestBinding::new(method, path_and_query, bound_body);
        let checked = authenticator.check_binding(&binding).map_err(|_| AuthRejection::BindingMismatch)?;
        let auth = checked.authenticator().clone();
        if self.replay.remembers_since().is_some_and(|since| auth.ts < since) {
            let detail = ErrorDetail { server_time: now, nonce: auth.nonce.clone() };
            return Err(AuthRejection::StaleAuthenticator { detail: detail.seal(ticket.session_key()) });
        }
        let entry = ReplayEntry {
            key: replay_key(&ticket, checked.replay_key()),
            // The immutable principal id: no allocation, and stable across renames.
            principal: &ticket.claims().cid,
            expires_at: auth.ts.plus_secs(self.settings.max_skew_secs),
            now,
        };
        self.replay.check_and_insert(entry).await.map_err(|r| match r {
            ReplayRefusal::Replay => AuthRejection::Replay,
            ReplayRefusal::Full { retry_after } => AuthRejection::ReplayCacheUnavailable { retry_after },
            ReplayRefusal::Unavailable => AuthRejection::ReplayCacheUnavailable { retry_after: 1 },
        })?;
        let claims = ticket.claims();
        let path = path_and_query.split('?').next().unwrap_or_default();
        for rule in &self.settings.role_rules {
            if path.starts_with(&rule.path_prefix) && !claims.roles.iter().any(|r| r == &rule.role) {
                return Err(AuthRejection::MissingRole);
            }
        }
        let principal = AuthenticatedPrincipal::from_ticket(ticket.clone());
        Ok(VerifiedRequest { principal, ticket, authenticator: auth })
    }
}

/// The replay-cache key: HMAC-SHA256 under the session key of the
/// authenticator's GCM tag, truncated to 128 bits. Fixed size, the same on
/// every instance of the service, unpredictable to anyone without the key.
fn replay_key(ticket: &VerifiedTicket, tag: &[u8; 16]) -> [u8; 16] {
    let mut out = [0u8; 16];
    if let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(ticket.session_key().expose()) {
        mac.update(tag);
        let full = mac.finalize().into_bytes();
        out.copy_from_slice(full.get(..16).unwrap_or(&[0u8; 16]));
    }
    out
}
