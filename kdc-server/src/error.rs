//! The KDC's errors, each with the stable problem kind it is answered with
//! (`kdc_proto::ProblemKind`). No HTTP here: `crate::api_error` renders
//! them.

use kdc_proto::PreAuthChallenge;
use kdc_proto::ProblemKind;
use kdc_proto::UnixMillis;
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
}

// By hand, not `#[from]`: the reason is part of this error's message, and
// as its source too it would be printed twice in an error chain.
impl From<crate::password_policy::WeakPassword> for KdcError {
    fn from(e: crate::password_policy::WeakPassword) -> Self {
        Self::WeakPassword(e)
    }
}
