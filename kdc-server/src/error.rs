//! The KDC's errors and their one mapping to HTTP: RFC 9457 problem+json with
//! a stable `type` per kind, never a stack trace, never a hint about which
//! part of a credential was wrong.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kdc_proto::headers::Challenge;
use kdc_proto::messages::PreAuthChallenge;
use kdc_proto::problem::{PROBLEM_CONTENT_TYPE, Problem, ProblemKind};
use kdc_proto::{Realm, UnixMillis};
use serde_json::Value;
use thiserror::Error;

use crate::master_key::MasterKeyError;
use crate::store::StoreError;

/// Everything the KDC can refuse or fail with.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KdcError {
    /// The request body or parameters are not well formed.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The body is not JSON.
    #[error("expected a JSON body (content-type: application/json)")]
    UnsupportedMediaType,
    /// The body is over the size limit.
    #[error("request body too large")]
    PayloadTooLarge,
    /// No such route.
    #[error("no such resource")]
    NotFound,
    /// The route exists, not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A principal of another realm was named.
    #[error("principal is not in this realm")]
    WrongRealm,
    /// Pre-authentication is required: derive the key and retry.
    #[error("pre-authentication required")]
    PreAuthRequired(Box<PreAuthChallenge>),
    /// Pre-authentication did not verify. Unknown principals get exactly this too.
    #[error("pre-authentication failed")]
    PreAuthFailed(Box<PreAuthChallenge>),
    /// Too many failed attempts; retry later.
    #[error("too many failed attempts")]
    Throttled {
        /// Seconds until a retry may succeed.
        retry_after: u64,
    },
    /// The requested service does not exist or cannot receive tickets.
    #[error("unknown service")]
    UnknownService,
    /// The client is disabled, deleted or replaced since its ticket was issued.
    #[error("client may not obtain tickets")]
    ClientNotPermitted,
    /// The presented ticket does not verify.
    #[error("invalid ticket")]
    InvalidTicket,
    /// The presented ticket has expired.
    #[error("ticket expired")]
    TicketExpired,
    /// The authenticator does not verify or match.
    #[error("invalid authenticator")]
    InvalidAuthenticator,
    /// A timestamp is outside the allowed skew.
    #[error("clock skew too great")]
    ClockSkew {
        /// The KDC's time.
        server_time: UnixMillis,
    },
    /// The authenticator or pre-auth data was seen before.
    #[error("replayed request")]
    Replay,
    /// The ticket cannot be renewed.
    #[error("ticket is not renewable")]
    NotRenewable,
    /// The ticket would exceed the size cap (too much authorization data).
    #[error("ticket would exceed the size cap")]
    TicketTooLarge,
    /// The replay cache is full: failing closed.
    #[error("replay cache full")]
    ReplayCacheFull {
        /// Seconds until room is expected.
        retry_after: u64,
    },
    /// The shared replay cache or pre-authentication throttle (Redis) cannot
    /// be reached or did not answer in time: failing closed (`503`,
    /// `Retry-After: 1`).
    #[error("replay cache unavailable")]
    ReplayCacheUnavailable,
    /// A principal with that name already exists.
    #[error("principal already exists")]
    PrincipalExists,
    /// No principal with that name.
    #[error("no such principal")]
    PrincipalNotFound,
    /// The operation does not apply to this kind of principal.
    #[error("{0}")]
    InvalidOperation(&'static str),
    /// A user's new password fails the password policy
    /// ([`crate::password_policy`]).
    #[error("password refused: {0}")]
    WeakPassword(crate::password_policy::WeakPassword),
    /// The audit trail cannot be written: an administrative change is
    /// refused (`applied: false`), or was made but not recorded.
    #[error("{}", if *applied {
        "the change was applied, but the audit trail could not record it"
    } else {
        "the audit trail cannot be written: administrative changes are refused until it can"
    })]
    AuditUnavailable {
        /// Whether the change was made before the audit write failed.
        applied: bool,
    },
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Key material could not be opened.
    #[error("key material: {0}")]
    Keys(#[from] MasterKeyError),
    /// Some other internal failure.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl KdcError {
    /// Attaches the realm, which `401` answers name in `WWW-Authenticate`.
    pub fn in_realm(self, realm: &Realm) -> ApiError {
        ApiError { error: self, realm: Some(realm.as_str().to_owned()) }
    }

    /// The problem kind the KDC answers this error with.
    pub fn problem_kind(&self) -> &'static ProblemKind {
        use KdcError::*;
        match self {
            Malformed(_) => &ProblemKind::MalformedRequest,
            UnsupportedMediaType => &ProblemKind::UnsupportedMediaType,
            PayloadTooLarge => &ProblemKind::PayloadTooLarge,
            NotFound => &ProblemKind::NotFound,
            MethodNotAllowed => &ProblemKind::MethodNotAllowed,
            WrongRealm => &ProblemKind::WrongRealm,
            PreAuthRequired(_) => &ProblemKind::PreauthRequired,
            PreAuthFailed(_) => &ProblemKind::PreauthFailed,
            Throttled { .. } => &ProblemKind::TooManyAttempts,
            UnknownService => &ProblemKind::UnknownService,
            ClientNotPermitted => &ProblemKind::ClientNotPermitted,
            InvalidTicket => &ProblemKind::InvalidTicket,
            TicketExpired => &ProblemKind::TicketExpired,
            InvalidAuthenticator => &ProblemKind::InvalidAuthenticator,
            ClockSkew { .. } => &ProblemKind::ClockSkew,
            Replay => &ProblemKind::Replay,
            NotRenewable => &ProblemKind::NotRenewable,
            TicketTooLarge => &ProblemKind::TicketTooLarge,
            ReplayCacheFull { .. } => &ProblemKind::ReplayCacheFull,
            ReplayCacheUnavailable => &ProblemKind::ReplayCacheUnavailable,
            PrincipalExists => &ProblemKind::PrincipalExists,
            PrincipalNotFound => &ProblemKind::PrincipalNotFound,
            AuditUnavailable { .. } => &ProblemKind::AuditUnavailable,
            InvalidOperation(_) => &ProblemKind::InvalidOperation,
            WeakPassword(_) => &ProblemKind::WeakPassword,
            Store(_) | Keys(_) | Internal(_) => &ProblemKind::Internal,
        }
    }

    /// The HTTP status and the stable problem kind's slug (for the audit
    /// trail and the metrics).
    pub fn status_and_slug(&self) -> (StatusCode, &'static str) {
        let kind = self.problem_kind();
        (status_of(kind), kind.slug())
    }

    /// The problem for a refusal that no [`KdcError`] produced: an axum
    /// extractor's plain-text rejection (a query string or path segment that
    /// does not parse). `None` for statuses the KDC never refuses with, which
    /// are left as they are rather than guessed at.
    pub fn for_rejection(status: StatusCode) -> Option<Self> {
        Some(match status {
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
                // The rejection's own text echoes the input and names
                // internals; the problem says only what kind of thing failed.
                Self::Malformed("the path or query string is malformed".to_owned())
            }
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            StatusCode::INTERNAL_SERVER_ERROR => Self::Internal("an extractor failed"),
            _ => return None,
        })
    }
}

// By hand, not `#[from]`: the reason is part of this error's message, and
// as its source too it would be printed twice in an error chain.
impl From<crate::password_policy::WeakPassword> for KdcError {
    fn from(e: crate::password_policy::WeakPassword) -> Self {
        Self::WeakPassword(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        KdcError::from(e).into()
    }
}

/// A [`KdcError`] ready to become an HTTP answer.
#[derive(Debug)]
pub struct ApiError {
    error: KdcError,
    realm: Option<String>,
}

impl ApiError {
    /// The underlying error.
    pub fn error(&self) -> &KdcError {
        &self.error
    }
}

impl From<KdcError> for ApiError {
    fn from(error: KdcError) -> Self {
        Self { error, realm: None }
    }
}

/// The status of a kind, as axum writes it. Every kind has a valid status
/// (`kdc_proto::problem`'s table; `every_kind_has_its_reason_phrase` checks
/// them), so the fallback is never taken.
fn status_of(kind: &ProblemKind) -> StatusCode {
    StatusCode::from_u16(kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = self.error.problem_kind();
        let status = status_of(kind);
        let detail = match &self.error {
            KdcError::Store(_) | KdcError::Keys(_) | KdcError::Internal(_) => {
                tracing::error!(error = %self.error, "internal error");
                "internal error".to_owned()
            }
            e => e.to_string(),
        };
        let mut problem = Problem::new(kind.clone()).detail(detail);
        let mut retry_after = None;
        match &self.error {
            KdcError::PreAuthRequired(c) | KdcError::PreAuthFailed(c) => {
                if let Ok(Value::Object(m)) = serde_json::to_value(c.as_ref()) {
                    problem = problem.members(m);
                }
            }
            KdcError::ClockSkew { server_time } => problem = problem.member("server_time", server_time.0),
            KdcError::Throttled { retry_after: s } => retry_after = Some(*s),
            KdcError::ReplayCacheFull { retry_after: s } => retry_after = Some(*s),
            KdcError::ReplayCacheUnavailable => retry_after = Some(1),
            _ => {}
        }
        let mut resp = (status, problem.to_json()).into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
        if let Some(s) = retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if status == StatusCode::UNAUTHORIZED {
            let realm = self.realm.unwrap_or_default();
            let challenge = match &self.error {
                KdcError::InvalidTicket
                | KdcError::TicketExpired
                | KdcError::InvalidAuthenticator
                | KdcError::ClockSkew { .. }
                | KdcError::Replay => Challenge::Ticket { realm, error: Some(kind.clone()), server_time: None },
                _ => Challenge::PreAuth { realm },
            };
            if let Ok(v) = HeaderValue::from_str(&challenge.to_string()) {
                h.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rewritten rejection keeps its status (422 aside: the KDC documents
    /// 400 for input it cannot read) and leaves unknown statuses alone.
    #[test]
    fn rejections_map_to_problems_of_the_same_status() {
        for s in [400u16, 404, 405, 413, 415, 500] {
            let status = StatusCode::from_u16(s).unwrap_or(StatusCode::IM_A_TEAPOT);
            let mapped = KdcError::for_rejection(status).map(|e| e.status_and_slug().0);
            assert_eq!(mapped, Some(status), "{s}");
        }
        let unprocessable = KdcError::for_rejection(StatusCode::UNPROCESSABLE_ENTITY).map(|e| e.status_and_slug());
        assert_eq!(unprocessable, Some((StatusCode::BAD_REQUEST, "malformed-request")));
        assert!(KdcError::for_rejection(StatusCode::UNAUTHORIZED).is_none());
        assert!(KdcError::for_rejection(StatusCode::TOO_MANY_REQUESTS).is_none());
        assert!(KdcError::for_rejection(StatusCode::SERVICE_UNAVAILABLE).is_none());
    }

    /// A problem's `title` is its status's reason phrase, as axum (the
    /// `http` crate) spells it, for every kind the protocol knows.
    #[test]
    fn every_kind_has_its_reason_phrase() {
        for kind in ProblemKind::KNOWN {
            let status = StatusCode::from_u16(kind.status()).unwrap();
            assert_eq!(Some(Problem::new(kind.clone()).title.as_str()), status.canonical_reason(), "{kind}");
        }
    }
}
