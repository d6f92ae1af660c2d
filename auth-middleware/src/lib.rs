//! A tower layer that authenticates requests by ticket of the HTTP ticket
//! authority: the service opens the ticket with its own key, verifies the
//! KDC's signature, checks the authenticator (identity, time, replay, request
//! binding), keeps no session state, and signs each response back
//! (`Authentication-Info: mutual="…"`, covering status and body).
//!
//! ```no_run
//! use auth_middleware::{AuthenticatedPrincipal, TicketAuthLayer};
//! use axum::{Router, routing::get};
//!
//! async fn hello(who: AuthenticatedPrincipal) -> String {
//!     format!("hello, {}", who.name())
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let auth = TicketAuthLayer::builder()
//!     .keytab_file("hello.keytab")
//!     .kdc_jwks_uri("https://kdc.example.test/.well-known/jwks.json")
//!     .replay_state_file("hello.replay-state")
//!     .require_role("/admin", "admin")
//!     .build()
//!     .await?;
//! let app = Router::new().route("/hello", get(hello)).layer(auth.clone());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let stopped = auth_middleware::serve(listener, app, Default::default(), std::future::pending()).await?;
//! if stopped.drained {
//!     auth.save_replay_state()?;
//! }
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![deny(unreachable_pub)]

mod credentials;
mod error;
mod extract;
mod future;
mod keys;
mod layer;
mod rejection;
mod replay;
mod replay_redis;
mod replay_state;
mod serve;
mod service;
mod ticket_cache;
mod tls;
mod verifier;

// The layer and what handlers see.
pub use error::ConfigError;
pub use extract::{AuthenticatedPrincipal, MissingAuthLayer};
pub use future::ResponseFuture;
pub use layer::{TicketAuthBuilder, TicketAuthLayer};
pub use rejection::AuthRejection;
pub use service::{AUTHENTICATION_INFO, TicketAuth};

// Checking requests without the layer (the KDC's own TGS does).
pub use credentials::{Credentials, MAX_AUTHORIZATION_LEN, parse_authorization};
pub use verifier::{
    AuthorityPolicy, BoundRequest, PendingAuth, RoleRule, TicketVerifier, VerifiedRequest, VerifierSettings,
};

// Keys: the service's keytab and the KDC's published signing keys.
pub use keys::{
    FetchedJwks, MAX_DISCOVERY_BYTES, MAX_JWKS_BYTES, ServiceKeyring, check_jwks_uri, discover_jwks_uri, fetch_jwks,
};

// Caches a verifier keeps: replayed authenticators, verified tickets.
pub use replay::{InMemoryReplayCache, ReplayCache, ReplayEntry, ReplayRefusal};
pub use replay_redis::{RedisReplayCache, RedisReplayConfig, RedisReplayError, connect as connect_redis_replay_cache};
pub use ticket_cache::{VerifiedTicketCache, ticket_digest};

// Serving, with or without TLS.
pub use serve::{ServeLimits, Stopped, serve, serve_tls};
pub use tls::{ServerTls, TlsError, crypto_provider, load_ca_file};
