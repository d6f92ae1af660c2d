//! Problem details (RFC 9457): every refusal of the KDC and of a service is
//! `application/problem+json` whose `type` is `urn:kdc-http:problem:<kind>`.
//! [`ProblemKind`] is the one list of kinds, each with its HTTP status and
//! its `error` code (the `WWW-Authenticate` spelling, `_` for `-`);
//! [`Problem`] is the body, with one encoder ([`Problem::to_json`]) and one
//! parser ([`Problem::parse`]).
//!
//! ```
//! use kdc_proto::{Problem, ProblemKind};
//!
//! let body = Problem::new(ProblemKind::TicketExpired).detail("ticket_expired").to_json();
//! assert_eq!(
//!     body,
//!     r#"{"detail":"ticket_expired","status":401,"title":"Unauthorized","type":"urn:kdc-http:problem:ticket-expired"}"#
//! );
//! let back = Problem::parse(body.as_bytes(), 401);
//! assert_eq!(back.kind, ProblemKind::TicketExpired);
//! // A kind this code does not know is kept, not refused.
//! let other = Problem::parse(br#"{"type":"urn:kdc-http:problem:new-thing","status":400}"#, 400);
//! assert_eq!(other.kind, ProblemKind::Other("urn:kdc-http:problem:new-thing".into()));
//! ```

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Prefix of every problem `type` the protocol defines.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:kdc-http:problem:";

/// The media type of every refusal.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// RFC 9457's `type` for a problem that says no more than its status: what a
/// body without a `type` (or without JSON) means.
pub const ABOUT_BLANK: &str = "about:blank";

/// Declares [`ProblemKind`] and its table in one place: variant, slug (the
/// `type`'s last part), `error` code and status.
macro_rules! problem_kinds {
    ($( $(#[doc = $doc:literal])* $variant:ident => $slug:literal, $code:literal, $status:literal; )*) => {
        /// A problem `type`: every kind the KDC or a service answers, and
        /// [`ProblemKind::Other`] for one this code does not know.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ProblemKind {
            $( $(#[doc = $doc])* $variant, )*
            /// A `type` this code does not know (a newer peer's, or not the
            /// protocol's at all), as received: the whole URI.
            Other(String),
        }

        impl ProblemKind {
            /// Every kind this code knows.
            pub const KNOWN: &'static [ProblemKind] = &[$(ProblemKind::$variant),*];

            /// `error` code and status of a known kind.
            fn known(&self) -> Option<(&'static str, u16)> {
                match self {
                    $(Self::$variant => Some(($code, $status)),)*
                    Self::Other(_) => None,
                }
            }

            /// The kind's name, the last part of its `type`
            /// (`ticket-expired`); the whole URI for an
            /// [`ProblemKind::Other`] outside the protocol's prefix.
            pub fn slug(&self) -> &str {
                match self {
                    $(Self::$variant => $slug,)*
                    Self::Other(uri) => uri.strip_prefix(PROBLEM_TYPE_PREFIX).unwrap_or(uri),
                }
            }

            /// The known kind of a slug.
            fn from_known_slug(slug: &str) -> Option<Self> {
                match slug {
                    $($slug => Some(Self::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

problem_kinds! {
    // The KDC's.
    /// `400`: the body or parameters are not well formed.
    MalformedRequest => "malformed-request", "malformed_request", 400;
    /// `415`: a `POST` without `Content-Type: application/json`.
    UnsupportedMediaType => "unsupported-media-type", "unsupported_media_type", 415;
    /// `413`: the body is over the size limit (the KDC's, or a service's for
    /// a bound body).
    PayloadTooLarge => "payload-too-large", "payload_too_large", 413;
    /// `404`: no such route.
    NotFound => "not-found", "not_found", 404;
    /// `405`: the route exists, not for this method.
    MethodNotAllowed => "method-not-allowed", "method_not_allowed", 405;
    /// `400`: a principal of another realm was named.
    WrongRealm => "wrong-realm", "wrong_realm", 400;
    /// `401`: pre-authentication is required; the body carries the challenge.
    PreauthRequired => "preauth-required", "preauth_required", 401;
    /// `401`: pre-authentication did not verify (or the principal is
    /// unknown); the body carries the challenge.
    PreauthFailed => "preauth-failed", "preauth_failed", 401;
    /// `429`: too many failed attempts; `Retry-After` says when to retry.
    TooManyAttempts => "too-many-attempts", "too_many_attempts", 429;
    /// `400`: the service does not exist or cannot receive tickets.
    UnknownService => "unknown-service", "unknown_service", 400;
    /// `403`: the client is disabled, deleted or replaced.
    ClientNotPermitted => "client-not-permitted", "client_not_permitted", 403;
    /// `401`: the ticket does not parse, open or verify.
    InvalidTicket => "invalid-ticket", "invalid_ticket", 401;
    /// `401`: the ticket's end time has passed.
    TicketExpired => "ticket-expired", "ticket_expired", 401;
    /// `401`: the authenticator does not open, parse or match.
    InvalidAuthenticator => "invalid-authenticator", "invalid_authenticator", 401;
    /// `401`: a timestamp is outside the allowed skew.
    ClockSkew => "clock-skew", "clock_skew", 401;
    /// `401`: the authenticator or pre-authentication was seen before.
    Replay => "replay", "replay", 401;
    /// `400`: the ticket cannot be renewed.
    NotRenewable => "not-renewable", "not_renewable", 400;
    /// `422`: the ticket would exceed the size cap.
    TicketTooLarge => "ticket-too-large", "ticket_too_large", 422;
    /// `503`: the KDC's replay cache is full: failing closed.
    ReplayCacheFull => "replay-cache-full", "replay_cache_full", 503;
    /// `409`: a principal with that name already exists.
    PrincipalExists => "principal-exists", "principal_exists", 409;
    /// `404`: no principal with that name.
    PrincipalNotFound => "principal-not-found", "principal_not_found", 404;
    /// `503`: the audit trail cannot be written.
    AuditUnavailable => "audit-unavailable", "audit_unavailable", 503;
    /// `400`: the operation does not apply to this kind of principal.
    InvalidOperation => "invalid-operation", "invalid_operation", 400;
    /// `400`: a new password fails the KDC's password policy.
    WeakPassword => "weak-password", "weak_password", 400;
    /// `500`: an internal failure.
    Internal => "internal", "internal", 500;
    // A service's (`auth-middleware`), besides the ticket kinds above.
    /// `401`: no `Authorization: Ticket …` header.
    MissingCredentials => "missing-credentials", "missing_credentials", 401;
    /// `401`: the `Authorization` header is not `Ticket ticket="…",
    /// authenticator="…"` within the size bounds.
    InvalidRequest => "invalid-request", "invalid_request", 401;
    /// `401`: the ticket is for another service.
    WrongService => "wrong-service", "wrong_service", 401;
    /// `401`: the ticket is sealed under a key version the service does not
    /// hold.
    KvnoUnknown => "kvno-unknown", "kvno_unknown", 401;
    /// `401`: the authenticator predates what the service's replay cache
    /// can vouch for; retry with a fresh one.
    StaleAuthenticator => "stale-authenticator", "stale_authenticator", 401;
    /// `401`: the authenticator was made for another request.
    BindingMismatch => "binding-mismatch", "binding_mismatch", 401;
    /// `403`: the principal lacks a role the route requires.
    InsufficientRole => "insufficient-role", "insufficient_role", 403;
    /// `503`: the service's replay cache is full or unreachable.
    ReplayCacheUnavailable => "replay-cache-unavailable", "replay_cache_unavailable", 503;
}

impl ProblemKind {
    /// The kind a `type` URI names; [`ProblemKind::Other`] (never an error)
    /// for one this code does not know.
    pub fn from_type_uri(uri: &str) -> Self {
        uri.strip_prefix(PROBLEM_TYPE_PREFIX)
            .and_then(Self::from_known_slug)
            .unwrap_or_else(|| Self::Other(uri.to_owned()))
    }

    /// The kind a `WWW-Authenticate` `error` code names (`ticket_expired`);
    /// [`ProblemKind::Other`] for one this code does not know.
    pub fn from_error_code(code: &str) -> Self {
        let slug = code.replace('_', "-");
        Self::from_known_slug(&slug).unwrap_or_else(|| Self::Other(format!("{PROBLEM_TYPE_PREFIX}{slug}")))
    }

    /// The `error` code of `WWW-Authenticate` and of a service's `detail`
    /// (`ticket_expired`: the slug with `_` for `-`).
    pub fn error_code(&self) -> std::borrow::Cow<'_, str> {
        match self.known() {
            Some((code, _)) => code.into(),
            None => self.slug().replace('-', "_").into(),
        }
    }

    /// The `type` URI (`urn:kdc-http:problem:ticket-expired`).
    pub fn type_uri(&self) -> String {
        match self {
            Self::Other(uri) => uri.clone(),
            known => format!("{PROBLEM_TYPE_PREFIX}{}", known.slug()),
        }
    }

    /// The HTTP status the protocol answers this kind with. An
    /// [`ProblemKind::Other`] has none this code knows (a peer's answer
    /// carries its own, [`Problem::status`]): `500` here, as answering with
    /// a kind one does not know is a fault of one's own.
    pub fn status(&self) -> u16 {
        self.known().map_or(500, |(_, status)| status)
    }

    /// Whether this code knows the kind (it is not [`ProblemKind::Other`]).
    pub fn is_known(&self) -> bool {
        self.known().is_some()
    }
}

impl fmt::Display for ProblemKind {
    /// The slug (`ticket-expired`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.slug())
    }
}

impl Serialize for ProblemKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.type_uri())
    }
}

impl<'de> Deserialize<'de> for ProblemKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::from_type_uri(&String::deserialize(d)?))
    }
}

/// The reason phrase of an HTTP status, a problem's `title`: the phrase RFC
/// 9110 gives for every status the protocol answers with, `error` for any
/// other.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "error",
    }
}

/// A problem+json body: the members RFC 9457 defines, and the extension
/// members some kinds carry (a pre-authentication challenge's `salt` and
/// `argon2`, a `clock-skew`'s `server_time`, a service's
/// `server_time_sealed`).
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// `type`.
    pub kind: ProblemKind,
    /// `title`: the status's reason phrase.
    pub title: String,
    /// `status`.
    pub status: u16,
    /// `detail`, when given.
    pub detail: Option<String>,
    /// `instance`, when given (the KDC's `urn:kdc-http:request:<id>`).
    pub instance: Option<String>,
    /// Every other member.
    pub members: Map<String, Value>,
}

impl Problem {
    /// A problem of `kind`, with its status and that status's reason phrase
    /// as title.
    pub fn new(kind: ProblemKind) -> Self {
        let status = kind.status();
        Self {
            kind,
            title: reason_phrase(status).to_owned(),
            status,
            detail: None,
            instance: None,
            members: Map::new(),
        }
    }

    /// With `detail`.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// With an extension member (replacing one of the same name).
    pub fn member(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.members.insert(name.into(), value.into());
        self
    }

    /// With every member of `members` as an extension member.
    pub fn members(mut self, members: Map<String, Value>) -> Self {
        self.members.extend(members);
        self
    }

    /// An extension member.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.members.get(name)
    }

    /// The body as a JSON object. An extension member named like one of
    /// RFC 9457's is overwritten by it.
    pub fn to_value(&self) -> Value {
        let mut body = self.members.clone();
        body.insert("type".into(), Value::String(self.kind.type_uri()));
        body.insert("title".into(), Value::String(self.title.clone()));
        body.insert("status".into(), Value::from(self.status));
        if let Some(d) = &self.detail {
            body.insert("detail".into(), Value::String(d.clone()));
        }
        if let Some(i) = &self.instance {
            body.insert("instance".into(), Value::String(i.clone()));
        }
        Value::Object(body)
    }

    /// The body, compact JSON: what the KDC and services send.
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }

    /// Reads an answer's body as a problem; never fails. `status` is the
    /// answer's HTTP status, used when the body gives none. A body that is
    /// not a JSON object, or has no `type`, is [`ABOUT_BLANK`]: a problem
    /// that says no more than its status. Members of the wrong JSON type
    /// are left out.
    pub fn parse(body: &[u8], status: u16) -> Self {
        let mut members = match serde_json::from_slice(body) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        let mut text = |name: &str| match members.remove(name) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        let kind = ProblemKind::from_type_uri(text("type").as_deref().unwrap_or(ABOUT_BLANK));
        let (title, detail, instance) = (text("title"), text("detail"), text("instance"));
        let status =
            members.remove("status").and_then(|s| s.as_u64()).and_then(|s| u16::try_from(s).ok()).unwrap_or(status);
        Self {
            kind,
            title: title.unwrap_or_else(|| reason_phrase(status).to_owned()),
            status,
            detail,
            instance,
            members,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_kind_round_trips_through_its_uri_slug_and_code() {
        let mut slugs = std::collections::BTreeSet::new();
        for kind in ProblemKind::KNOWN {
            assert!(kind.is_known());
            assert!(slugs.insert(kind.slug()), "{kind}: slug used twice");
            assert_eq!(ProblemKind::from_type_uri(&kind.type_uri()), *kind);
            assert_eq!(ProblemKind::from_error_code(&kind.error_code()), *kind);
            assert_eq!(kind.error_code(), kind.slug().replace('-', "_"), "{kind}: code and slug disagree");
            assert!(kind.slug().bytes().all(|b| b.is_ascii_lowercase() || b == b'-'), "{kind}");
            assert_ne!(reason_phrase(kind.status()), "error", "{kind}: status without a reason phrase");
        }
    }

    #[test]
    fn unknown_kinds_are_kept_not_refused() {
        let other = ProblemKind::from_type_uri("https://example.test/problems/odd");
        assert_eq!(other, ProblemKind::Other("https://example.test/problems/odd".into()));
        assert_eq!((other.slug(), other.type_uri()), ("https://example.test/problems/odd", other.type_uri()));
        assert!(!other.is_known());
        let coded = ProblemKind::from_error_code("brand_new");
        assert_eq!(coded, ProblemKind::Other("urn:kdc-http:problem:brand-new".into()));
        assert_eq!((coded.slug(), coded.error_code().as_ref()), ("brand-new", "brand_new"));
        assert_eq!(ProblemKind::from_type_uri(""), ProblemKind::Other(String::new()));
    }

    #[test]
    fn the_body_round_trips_with_its_members() {
        let p = Problem::new(ProblemKind::ClockSkew).detail("clock skew too great").member("server_time", 5u64);
        let json = p.to_json();
        assert_eq!(
            json,
            r#"{"detail":"clock skew too great","server_time":5,"status":401,"title":"Unauthorized","type":"urn:kdc-http:problem:clock-skew"}"#
        );
        assert_eq!(Problem::parse(json.as_bytes(), 500), p);
        let with_instance = Problem { instance: Some("urn:kdc-http:request:r".into()), ..p };
        assert_eq!(Problem::parse(with_instance.to_json().as_bytes(), 500), with_instance);
    }

    #[test]
    fn parsing_never_fails() {
        for (body, status) in
            [(&b""[..], 502), (b"<html>", 403), (b"[1]", 400), (b"{\"type\":7,\"status\":\"x\"}", 401)]
        {
            let p = Problem::parse(body, status);
            assert_eq!((p.kind, p.status), (ProblemKind::Other(ABOUT_BLANK.into()), status));
        }
        let p = Problem::parse(br#"{"type":"urn:kdc-http:problem:replay","status":70000}"#, 401);
        assert_eq!((p.kind, p.status, p.title.as_str()), (ProblemKind::Replay, 401, "Unauthorized"));
    }

    #[test]
    fn a_kind_serializes_as_its_uri() {
        let v = serde_json::to_value(ProblemKind::InsufficientRole).unwrap();
        assert_eq!(v, "urn:kdc-http:problem:insufficient-role");
        assert_eq!(serde_json::from_value::<ProblemKind>(v).unwrap(), ProblemKind::InsufficientRole);
    }
}
