//! Why a request was refused, and the one mapping of that to HTTP: `401` with
//! `WWW-Authenticate: Ticket realm="…", error="…"`, `403` for a missing role,
//! `503` when the replay cache cannot take more, each with a problem+json body
//! that says no more than its code.

use axum::body::Body;
use std::borrow::Cow;

use axum::http::{HeaderValue, Response, StatusCode, header};
use kdc_proto::Challenge;
use kdc_proto::{PROBLEM_CONTENT_TYPE, Problem, ProblemKind};

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthRejection {
    /// No `Authorization: Ticket …` header.
    MissingCredentials,
    /// The header is not `Ticket ticket="…", authenticator="…"` within limits.
    MalformedCredentials,
    /// The ticket does not open or its KDC signature does not verify.
    InvalidTicket,
    /// The ticket's end time has passed.
    TicketExpired,
    /// The ticket is for another service.
    WrongService,
    /// The ticket is sealed under a key version this service does not hold.
    KvnoUnknown,
    /// The authenticator does not open under the session key or does not match the ticket.
    InvalidAuthenticator,
    /// The authenticator's time is outside the allowed skew. `detail` is the
    /// service time sealed under the session key (usage `error-detail`).
    ClockSkew {
        /// Sealed [`kdc_proto::ErrorDetail`].
        detail: String,
    },
    /// The authenticator was seen before.
    Replay,
    /// The authenticator predates what the replay cache can vouch for (the
    /// process restarted with a volatile cache): retry with a fresh one.
    /// `detail` is the service time sealed under the session key.
    StaleAuthenticator {
        /// Sealed [`kdc_proto::ErrorDetail`].
        detail: String,
    },
    /// The authenticator was made for another request.
    BindingMismatch,
    /// The principal lacks a role this route requires.
    MissingRole,
    /// The replay cache is full or unreachable: failing closed.
    ReplayCacheUnavailable {
        /// Seconds after which a retry may succeed.
        retry_after: u64,
    },
    /// A bound request body is larger than the service reads.
    BodyTooLarge,
}

impl AuthRejection {
    /// The problem kind it is answered with.
    pub fn kind(&self) -> &'static ProblemKind {
        match self {
            AuthRejection::MissingCredentials => &ProblemKind::MissingCredentials,
            AuthRejection::MalformedCredentials => &ProblemKind::InvalidRequest,
            AuthRejection::InvalidTicket => &ProblemKind::InvalidTicket,
            AuthRejection::TicketExpired => &ProblemKind::TicketExpired,
            AuthRejection::WrongService => &ProblemKind::WrongService,
            AuthRejection::KvnoUnknown => &ProblemKind::KvnoUnknown,
            AuthRejection::InvalidAuthenticator => &ProblemKind::InvalidAuthenticator,
            AuthRejection::ClockSkew { .. } => &ProblemKind::ClockSkew,
            AuthRejection::Replay => &ProblemKind::Replay,
            AuthRejection::StaleAuthenticator { .. } => &ProblemKind::StaleAuthenticator,
            AuthRejection::BindingMismatch => &ProblemKind::BindingMismatch,
            AuthRejection::MissingRole => &ProblemKind::InsufficientRole,
            AuthRejection::ReplayCacheUnavailable { .. } => &ProblemKind::ReplayCacheUnavailable,
            AuthRejection::BodyTooLarge => &ProblemKind::PayloadTooLarge,
        }
    }

    /// The `error` code (for `401`), also the problem's `detail`.
    pub fn code(&self) -> Cow<'static, str> {
        self.kind().error_code()
    }

    /// The HTTP answer, naming `realm` in `WWW-Authenticate`.
    pub fn into_response_for(self, realm: &str) -> Response<Body> {
        let kind = self.kind();
        let mut problem = Problem::new(kind.clone()).detail(kind.error_code());
        let sealed_time = match &self {
            AuthRejection::ClockSkew { detail } | AuthRejection::StaleAuthenticator { detail } => Some(detail.clone()),
            _ => None,
        };
        if let Some(t) = &sealed_time {
            problem = problem.member("server_time_sealed", t.as_str());
        }
        let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = Response::new(Body::from(problem.to_json()));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
        if status == StatusCode::UNAUTHORIZED {
            let error = (self != AuthRejection::MissingCredentials).then(|| kind.clone());
            let challenge = Challenge::Ticket { realm: realm.to_owned(), error, server_time: sealed_time };
            if let Ok(v) = HeaderValue::from_str(&challenge.to_string()) {
                h.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        if let AuthRejection::ReplayCacheUnavailable { retry_after } = self {
            h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        resp
    }
}
