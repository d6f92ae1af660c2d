//! The one mapping of the KDC's errors to HTTP: RFC 9457 problem+json with a
//! stable `type` per kind, the `WWW-Authenticate` challenge of a `401`,
//! `Retry-After` where waiting helps; never a stack trace, never a hint
//! about which part of a credential was wrong.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kdc_proto::Challenge;
use kdc_proto::Realm;
use kdc_proto::{PROBLEM_CONTENT_TYPE, Problem, ProblemKind};
use serde_json::Value;

use crate::error::KdcError;
use crate::store::StoreError;

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
    /// `error`, answered in `realm`: `401` answers name it in
    /// `WWW-Authenticate`.
    pub fn in_realm(error: KdcError, realm: &Realm) -> Self {
        Self { error, realm: Some(realm.as_str().to_owned()) }
    }

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

/// The problem for a refusal that no [`KdcError`] produced: an axum
/// extractor's plain-text rejection (a query string or path segment that
/// does not parse). `None` for statuses the KDC never refuses with, which
/// are left as they are rather than guessed at.
pub(crate) fn error_for_rejection(status: StatusCode) -> Option<KdcError> {
    Some(match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
            // The rejection's own text echoes the input and names
            // internals; the problem says only what kind of thing failed.
            KdcError::Malformed("the path or query string is malformed".to_owned())
        }
        StatusCode::NOT_FOUND => KdcError::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => KdcError::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => KdcError::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => KdcError::UnsupportedMediaType,
        StatusCode::INTERNAL_SERVER_ERROR => KdcError::Internal("an extractor failed"),
        _ => return None,
    })
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
            let mapped = error_for_rejection(status).map(|e| status_of(e.problem_kind()));
            assert_eq!(mapped, Some(status), "{s}");
        }
        let unprocessable = error_for_rejection(StatusCode::UNPROCESSABLE_ENTITY)
            .map(|e| (status_of(e.problem_kind()), e.problem_kind().slug()));
        assert_eq!(unprocessable, Some((StatusCode::BAD_REQUEST, "malformed-request")));
        assert!(error_for_rejection(StatusCode::UNAUTHORIZED).is_none());
        assert!(error_for_rejection(StatusCode::TOO_MANY_REQUESTS).is_none());
        assert!(error_for_rejection(StatusCode::SERVICE_UNAVAILABLE).is_none());
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
