//! The authenticated principal, as handlers see it.

use std::convert::Infallible;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedPrincipal {
    name: Principal,
    client_id: String,
    roles: Vec<String>,
    auth_time: u64,
    expires_at: u64,
}

impl AuthenticatedPrincipal {
    pub(crate) fn from_ticket(t: &VerifiedTicket) -> Self {
        let c = t.claims();
        Self {
            name: c.sub.clone(),
            client_id: c.cid.clone(),
            roles: c.roles.clone(),
            auth_time: c.auth_time,
            expires_at: c.exp,
        }
    }

    /// The client principal.
    pub fn name(&self) -> &Principal {
        &self.name
    }

    /// Its realm.
    pub fn realm(&self) -> &Realm {
        self.name.realm()
    }

    /// Its immutable principal id (stable across renames; never reused).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Its roles, as the KDC's store held them when the ticket was issued.
    pub fn roles(&self) -> &[String] {
        &self.roles
    }

    /// Whether it holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// When it authenticated to the KDC (Unix seconds).
    pub fn auth_time(&self) -> u64 {
        self.auth_time
    }

    /// When its ticket expires (Unix seconds).
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }
}

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
