//! Why a request was refused, and the one mapping of that to HTTP: `401` with
//! `WWW-Authenticate: Ticket realm="…", error="…"`, `403` for a missing role,
//! `503` when the replay cache cannot take more, each with a problem+json body
//! that says no more than its code.

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

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
    /// The `error` code (for `401`) or problem kind.
    pub fn code(&self) -> &'static str {
        match self {
            AuthRejection::MissingCredentials => "missing_credentials",
            AuthRejection::MalformedCredentials => "invalid_request",
            AuthRejection::InvalidTicket => "invalid_ticket",
            AuthRejection::TicketExpired => "ticket_expired",
            AuthRejection::WrongService => "wrong_service",
            AuthRejection::KvnoUnknown => "kvno_unknown",
            AuthRejection::InvalidAuthenticator => "invalid_authenticator",
            AuthRejection::ClockSkew { .. } => "clock_skew",
            AuthRejection::Replay => "replay",
            AuthRejection::StaleAuthenticator { .. } => "stale_authenticator",
            AuthRejection::BindingMismatch => "binding_mismatch",
            AuthRejection::MissingRole => "insufficient_role",
            AuthRejection::ReplayCacheUnavailable { .. } => "replay_cache_unavailable",
            AuthRejection::BodyTooLarge => "payload_too_large",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            AuthRejection::MissingRole => StatusCode::FORBIDDEN,
            AuthRejection::ReplayCacheUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AuthRejection::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The HTTP answer, naming `realm` in `WWW-Authenticate`.
    pub fn into_response_for(self, realm: &str) -> Response<Body> {
        let status = self.status();
        let code = self.code();
        let mut body = json!({
            "type": format!("urn:kdc-http:problem:{}", code.replace('_', "-")),
            "title": status.canonical_reason().unwrap_or("error"),
            "status": status.as_u16(),
            "detail": code,
        });
        if let (AuthRejection::ClockSkew { detail } | AuthRejection::StaleAuthenticator { detail }, Some(obj)) =
            (&self, body.as_object_mut())
        {
            obj.insert("server_time_sealed".to_owned(), json!(detail));
        }
        let mut resp = Response::new(Body::from(body.to_string()));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::UNAUTHORIZED {
            let realm = realm.replace(['"', '\\'], "");
            let value = match &self {
                AuthRejection::MissingCredentials => format!("Ticket realm=\"{realm}\""),
                AuthRejection::ClockSkew { detail } | AuthRejection::StaleAuthenticator { detail } => {
                    format!("Ticket realm=\"{realm}\", error=\"{code}\", server_time=\"{detail}\"")
                }
                _ => format!("Ticket realm=\"{realm}\", error=\"{code}\""),
            };
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        if let AuthRejection::ReplayCacheUnavailable { retry_after } = self {
            h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        resp
    }
}
