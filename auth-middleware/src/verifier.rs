//! Validation of one request, as plain functions of (request parts, keys,
//! caches, now), in this order: parse the header; open the ticket under the
//! key version its `kid` names and verify the KDC signature (once per ticket,
//! then cached); check service, realm and validity; open the authenticator
//! under the session key; check its client and time; check its request
//! binding (method, authority, path with query, body) and that the authority
//! is one this service answers for; check it was not seen before; check route
//! roles on the normalised path.

use std::sync::{Arc, RwLock};

use hmac::{KeyInit, Mac};
use kdc_proto::Usage;
use kdc_proto::{
    AcceptanceWindow, Authenticator, ErrorDetail, KdcVerifier, ProtoError, RequestBinding, SealedTicket, TicketCheck,
    TimelyAuthenticator, UnixMillis, VerifiedTicket, open_authenticator_timely, open_ticket,
};

use crate::credentials::parse_authorization;
use crate::extract::AuthenticatedPrincipal;
use crate::keys::ServiceKeyring;
use crate::rejection::AuthRejection;
use crate::replay::{ReplayCache, ReplayEntry, ReplayRefusal};
use crate::ticket_cache::{VerifiedTicketCache, ticket_digest};

/// A role a route requires: requests whose path lies under `path_prefix`
/// are refused (`403`) unless the principal holds `role`.
///
/// Matching is segment-wise on the normalised path (percent-decoded, empty
/// and `.` segments dropped, `..` applied), so `/admin`, `//admin/`,
/// `/%61dmin` and `/x/../admin/users` all fall under the rule for `/admin`,
/// while `/administrator` does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRule {
    /// Path prefix, e.g. `/admin`.
    pub path_prefix: String,
    /// Required role.
    pub role: String,
}

/// A [`RoleRule`] with its prefix split once, at construction, rather than
/// on every request.
#[derive(Debug, Clone)]
struct CompiledRule {
    /// The prefix's normalised segments; `None` when it does not decode (such
    /// a rule covers everything: fail closed).
    prefix: Option<Vec<String>>,
    role: String,
}

impl CompiledRule {
    fn of(rule: &RoleRule) -> Self {
        Self { prefix: PathViews::of(&rule.path_prefix).map(|p| p.normalised), role: rule.role.clone() }
    }

    /// Whether the request path (as split by [`PathViews::of`]) falls under
    /// this rule, read either way.
    fn covers(&self, path: &PathViews) -> bool {
        self.prefix.as_ref().is_none_or(|p| path.literal.starts_with(p) || path.normalised.starts_with(p))
    }
}

/// Two readings of a request path, both percent-decoded and split at `/`
/// and `\` with empty and `.` segments dropped: `literal` keeps `..`
/// segments (as a router matching the raw path sees `/admin/..`), while
/// `normalised` applies them (as a server that resolves dot segments sees
/// `/x/../admin`). A rule applies when either reading falls under it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PathViews {
    literal: Vec<String>,
    normalised: Vec<String>,
}

impl PathViews {
    /// `None` when the path does not decode to UTF-8.
    fn of(path: &str) -> Option<Self> {
        let decoded = percent_encoding::percent_decode_str(path).decode_utf8().ok()?;
        let literal: Vec<String> =
            decoded.split(['/', '\\']).filter(|s| !s.is_empty() && *s != ".").map(str::to_owned).collect();
        let mut normalised: Vec<String> = Vec::with_capacity(literal.len());
        for seg in &literal {
            if seg == ".." {
                normalised.pop();
            } else {
                normalised.push(seg.clone());
            }
        }
        Some(Self { literal, normalised })
    }
}

/// Which `Host` values (authorities) a service answers for. The authority is
/// part of every request binding; this decides whether the one a request
/// names is this service's, so a request captured on its way to another
/// service that shares the principal cannot be replayed here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AuthorityPolicy {
    /// The host (port aside) must be the service principal's instance
    /// (`api.example.test` for `HTTP/api.example.test`), compared without
    /// case, or a loopback address or `localhost` (local tests and tools).
    /// The default.
    #[default]
    ServiceInstance,
    /// The authority must be one of these (`host` or `host:port`), compared
    /// without case; for services reached under names other than their
    /// principal's.
    Only(Vec<String>),
    /// Any authority: it is still bound, but this service does not check it
    /// is its own. Only for a service that is the sole holder of its key.
    Any,
}

impl AuthorityPolicy {
    fn accepts(&self, authority: &str, service: &kdc_proto::Principal) -> bool {
        let authority = authority.to_ascii_lowercase();
        match self {
            AuthorityPolicy::Any => true,
            AuthorityPolicy::Only(list) => list.iter().any(|a| a.eq_ignore_ascii_case(&authority)),
            AuthorityPolicy::ServiceInstance => {
                let host = host_of(&authority);
                is_loopback_host(host) || service.instance().is_some_and(|i| i.eq_ignore_ascii_case(host))
            }
        }
    }
}

/// The host of an authority (`host`, `host:port`, `[v6]`, `[v6]:port`).
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
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
    /// Which authorities this service answers for. Defaults to
    /// [`AuthorityPolicy::ServiceInstance`].
    pub authorities: AuthorityPolicy,
}

impl Default for VerifierSettings {
    fn default() -> Self {
        Self {
            max_skew_secs: 300,
            require_body_binding: false,
            role_rules: Vec::new(),
            max_body_bytes: 1 << 20,
            max_response_bytes: 16 << 20,
            authorities: AuthorityPolicy::default(),
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
    role_rules: Vec<CompiledRule>,
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
            role_rules: settings.role_rules.iter().map(CompiledRule::of).collect(),
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
            ProtoError::ClockSkew { server_time, nonce } => match sealed_detail(&ticket, server_time, nonce) {
                Ok(detail) => AuthRejection::ClockSkew { detail },
                Err(r) => r,
            },
            _ => AuthRejection::InvalidAuthenticator,
        })?;
        Ok(PendingAuth { ticket, authenticator })
    }

    /// Second half: the request binding (`body` when the authenticator binds
    /// it; `has_body` says whether the request carries one at all), the
    /// authority, staleness, the replay cache and route roles.
    pub async fn complete(
        &self,
        pending: PendingAuth,
        request: BoundRequest<'_>,
        now: UnixMillis,
    ) -> Result<VerifiedRequest, AuthRejection> {
        let PendingAuth { ticket, authenticator } = pending;
        let BoundRequest { method, authority, path_and_query, body, has_body } = request;
        if self.settings.require_body_binding && has_body && !authenticator.binds_body() {
            return Err(AuthRejection::BindingMismatch);
        }
        let authority = authority.filter(|a| !a.is_empty()).ok_or(AuthRejection::BindingMismatch)?;
        if !self.settings.authorities.accepts(authority, &ticket.claims().aud) {
            return Err(AuthRejection::BindingMismatch);
        }
        let window = AcceptanceWindow::of(authenticator.authenticator().ts, self.settings.max_skew_secs);
        // An authenticator whose window opened before this cache existed may
        // have been accepted, unseen, by an earlier process (say, with the
        // client's clock running fast): it is refused as stale.
        if self.replay.remembers_since().is_some_and(|since| window.opens < since) {
            let detail = sealed_detail(&ticket, now, authenticator.authenticator().nonce.clone())?;
            return Err(AuthRejection::StaleAuthenticator { detail });
        }
        // The replay check comes before the binding check: an authenticator
        // is good for one request, wherever it is presented. So a header
        // replayed at a sibling instance that a client reaches under another
        // `Host` (or at another path) is reported as the replay it is, and
        // the replay cache only ever holds authenticators that opened under
        // a genuine session key (no one else can make one).
        let entry = ReplayEntry {
            key: replay_key(&ticket, authenticator.replay_key()),
            // The immutable principal id: no allocation, and stable across renames.
            principal: &ticket.claims().cid,
            remember_until: window.closes,
            now,
        };
        self.replay.check_and_insert(entry).await.map_err(|r| match r {
            ReplayRefusal::Replay => AuthRejection::Replay,
            ReplayRefusal::Full { retry_after } => AuthRejection::ReplayCacheUnavailable { retry_after },
            ReplayRefusal::Unavailable => AuthRejection::ReplayCacheUnavailable { retry_after: 1 },
        })?;
        let bound_body = authenticator.binds_body().then(|| body.unwrap_or_default());
        let binding = RequestBinding::new(method, authority, path_and_query, bound_body);
        let checked = authenticator.check_binding(&binding).map_err(|_| AuthRejection::BindingMismatch)?;
        let auth = checked.authenticator().clone();
        let claims = ticket.claims();
        if !self.role_rules.is_empty() {
            let path = path_and_query.split('?').next().unwrap_or_default();
            // A path that does not decode is held to every rule.
            let views = PathViews::of(path);
            for rule in &self.role_rules {
                let covered = views.as_ref().is_none_or(|v| rule.covers(v));
                if covered && !claims.roles.iter().any(|r| r == &rule.role) {
                    return Err(AuthRejection::MissingRole);
                }
            }
        }
        let principal = AuthenticatedPrincipal::from_ticket(ticket.clone());
        Ok(VerifiedRequest { principal, ticket, authenticator: auth })
    }
}

/// The parts of a request its authenticator must be bound to, as received.
#[derive(Debug, Clone, Copy)]
pub struct BoundRequest<'a> {
    /// The method.
    pub method: &'a str,
    /// The authority (`Host` header, or the request target's authority);
    /// `None` when the request names none, which is refused.
    pub authority: Option<&'a str>,
    /// The request target's path with query, exactly as received.
    pub path_and_query: &'a str,
    /// The body, when the authenticator binds it.
    pub body: Option<&'a [u8]>,
    /// Whether the request carries a body at all.
    pub has_body: bool,
}

/// The service time, sealed under the session key for the client whose
/// authenticator carried `nonce`. If sealing fails, the refusal carries no
/// detail: an [`AuthRejection::InvalidAuthenticator`].
fn sealed_detail(ticket: &VerifiedTicket, server_time: UnixMillis, nonce: String) -> Result<String, AuthRejection> {
    ErrorDetail { server_time, nonce }.seal(ticket.session_key()).map_err(|_| AuthRejection::InvalidAuthenticator)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(prefix: &str) -> CompiledRule {
        CompiledRule::of(&RoleRule { path_prefix: prefix.into(), role: "admin".into() })
    }

    #[test]
    fn role_rules_match_the_path_however_it_is_read() {
        let admin = rule("/admin");
        for covered in [
            "/admin",
            "/admin/",
            "//admin",
            "/%61dmin",
            "/%61%64%6d%69%6e/users",
            "/x/../admin/u",
            "/./admin",
            "/admin/..",
            "/admin/%2e%2e",
            "/admin/../hello",
            "/admin%2F..",
            "\\admin\\x",
        ] {
            let v = PathViews::of(covered).unwrap();
            assert!(admin.covers(&v), "{covered} escaped the rule");
        }
        for free in ["/", "/administrator", "/hello/admin", "/adm", "/hello/x/.."] {
            let v = PathViews::of(free).unwrap();
            assert!(!admin.covers(&v), "{free} caught by the rule");
        }
        assert_eq!(PathViews::of("/%ff"), None, "invalid UTF-8 does not decode");
        assert!(rule("/").covers(&PathViews::of("/anything").unwrap()));
    }

    #[test]
    fn authority_policy() {
        let svc: kdc_proto::Principal = "HTTP/api.example.test@EXAMPLE.TEST".parse().unwrap();
        let p = AuthorityPolicy::ServiceInstance;
        for ok in ["api.example.test", "API.Example.Test:8443", "127.0.0.1:8080", "[::1]:80", "localhost:3000"] {
            assert!(p.accepts(ok, &svc), "{ok}");
        }
        for bad in ["web.example.test", "api.example.test.evil", "10.0.0.1:8080", "[::2]"] {
            assert!(!p.accepts(bad, &svc), "{bad}");
        }
        let only = AuthorityPolicy::Only(vec!["lb.example.test:8443".into()]);
        assert!(only.accepts("LB.example.test:8443", &svc));
        assert!(!only.accepts("lb.example.test", &svc));
        assert!(!only.accepts("api.example.test", &svc));
        assert!(AuthorityPolicy::Any.accepts("anything", &svc));
    }
}
