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
//! let stopped = auth_middleware::serve::serve(listener, app, Default::default(), std::future::pending()).await?;
//! if stopped.drained {
//!     auth.save_replay_state()?;
//! }
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod credentials;
pub mod error;
pub mod extract;
pub mod future;
pub mod keys;
pub mod layer;
pub mod rejection;
pub mod replay;
pub mod replay_redis;
pub mod replay_state;
pub mod serve;
pub mod service;
pub mod ticket_cache;
pub mod tls;
pub mod verifier;

pub use credentials::authorization_value;
pub use error::ConfigError;
pub use extract::AuthenticatedPrincipal;
pub use layer::{TicketAuthBuilder, TicketAuthLayer};
pub use rejection::AuthRejection;
pub use replay::{InMemoryReplayCache, ReplayCache};
pub use replay_redis::{RedisReplayCache, RedisReplayConfig};
pub use service::{AUTHENTICATION_INFO, TicketAuth};
pub use verifier::{AuthorityPolicy, BoundRequest, RoleRule, TicketVerifier, VerifiedRequest};
