//! The authenticated principal, as handlers see it.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use kdc_proto::{Principal, Realm, VerifiedTicket};

/// Who made a request that passed [`crate::TicketAuthLayer`]: put in the
/// request's extensions by the layer and extracted by handlers.
///
/// ```
/// use auth_middleware::AuthenticatedPrincipal;
/// async fn hello(who: AuthenticatedPrincipal) -> String {
///     format!("hello, {}", who.name())
/// }
/// ```
#[derive(Clone)]
pub struct AuthenticatedPrincipal {
    // Shared with the verified-ticket cache: cloning is a reference count, not
    // a copy. Only non-secret claims are reachable through the accessors.
    ticket: Arc<VerifiedTicket>,
}

impl AuthenticatedPrincipal {
    pub(crate) fn from_ticket(ticket: Arc<VerifiedTicket>) -> Self {
        Self { ticket }
    }

    /// The client principal.
    pub fn name(&self) -> &Principal {
        &self.ticket.claims().sub
    }

    /// Its realm.
    pub fn realm(&self) -> &Realm {
        self.name().realm()
    }

    /// Its immutable principal id (stable across renames; never reused).
    pub fn client_id(&self) -> &str {
        &self.ticket.claims().cid
    }

    /// Its roles, as the KDC's store held them when the ticket was issued.
    pub fn roles(&self) -> &[String] {
        &self.ticket.claims().roles
    }

    /// Whether it holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles().iter().any(|r| r == role)
    }

    /// When it authenticated to the KDC (Unix seconds).
    pub fn auth_time(&self) -> u64 {
        self.ticket.claims().auth_time
    }

    /// When its ticket expires (Unix seconds).
    pub fn expires_at(&self) -> u64 {
        self.ticket.claims().exp
    }

    /// Opens a secret the client sealed under this request's session key
    /// (usage `session-secret`): how a client sends a service a value that
    /// must stay confidential even without TLS (the admin API's passwords).
    pub fn open_secret(&self, sealed: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, kdc_proto::ProtoError> {
        kdc_proto::SealedObject::parse(sealed, kdc_proto::limits::MAX_SEALED_LEN)?
            .open(self.ticket.session_key(), kdc_proto::Usage::SessionSecret)
    }

    /// Seals a secret for the client under this request's session key (usage
    /// `session-secret-reply`, never `session-secret`: what a service sends
    /// cannot be replayed to it as what a client sent).
    pub fn seal_secret(&self, secret: &[u8]) -> Result<String, kdc_proto::ProtoError> {
        kdc_proto::seal(self.ticket.session_key(), kdc_proto::SESSION_KID, kdc_proto::Usage::SessionSecretReply, secret)
    }
}

impl std::fmt::Debug for AuthenticatedPrincipal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthenticatedPrincipal")
            .field("name", self.name())
            .field("client_id", &self.client_id())
            .field("roles", &self.roles())
            .field("auth_time", &self.auth_time())
            .field("expires_at", &self.expires_at())
            .finish()
    }
}

impl PartialEq for AuthenticatedPrincipal {
    fn eq(&self, other: &Self) -> bool {
        (self.name(), self.client_id(), self.roles(), self.auth_time(), self.expires_at())
            == (other.name(), other.client_id(), other.roles(), other.auth_time(), other.expires_at())
    }
}

impl Eq for AuthenticatedPrincipal {}

/// The extractor was used on a route without [`crate::TicketAuthLayer`]: a
/// wiring bug, so a `500`.
#[derive(Debug, Clone, Copy)]
pub struct MissingAuthLayer;

impl IntoResponse for MissingAuthLayer {
    fn into_response(self) -> Response {
        tracing::error!("AuthenticatedPrincipal extracted on a route without TicketAuthLayer");
        (StatusCode::INTERNAL_SERVER_ERROR, "authentication layer not installed").into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuthenticatedPrincipal {
    type Rejection = MissingAuthLayer;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Self>().cloned().ok_or(MissingAuthLayer)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for AuthenticatedPrincipal {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Self>().cloned())
    }
}
