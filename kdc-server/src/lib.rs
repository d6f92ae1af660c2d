//! The key distribution center of the HTTP ticket authority: the ticket
//! exchanges and principal operations as plain functions ([`Kdc`]), their
//! HTTP glue ([`app`], [`serve`]), the principal store ([`PrincipalStore`]:
//! [`SqliteStore`], [`MemoryStore`]), the audit trail ([`AuditLog`]) and the
//! `kdc` command ([`main`]).
//!
//! Booting a KDC in-process on a fresh store:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use kdc_server::{AppState, Kdc, MasterKey, SqliteStore};
//! use kdc_proto::{Clock, SecretKey, SystemClock};
//!
//! let dir = std::env::temp_dir().join("kdc-demo");
//! std::fs::create_dir_all(&dir)?;
//! let store = Arc::new(SqliteStore::open(&dir.join("kdc.sqlite3")).await?);
//! let master_bytes = SecretKey::generate();
//! let master = MasterKey::new(master_bytes.clone());
//! let realm = "EXAMPLE.TEST".parse()?;
//! let now = SystemClock.now().as_secs();
//! Kdc::initialize(store.as_ref(), &master, &realm, "an admin password".to_owned().into(), now).await?;
//! let kdc = Kdc::open(store, MasterKey::new(master_bytes), Default::default(), Default::default(), SystemClock.now()).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let public_url = kdc_server::advertised_base_url(None, listener.local_addr()?, false)?;
//! let state = AppState::new(Arc::new(kdc), Arc::new(SystemClock), public_url, None).await?;
//! kdc_server::serve(listener, state, std::future::pending()).await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![deny(unreachable_pub)]
// This crate's documentation is for its maintainers (its users are the `kdc`
// binary and the project's tests), read with `--document-private-items`: its
// public items may point into the private modules that explain them.
#![allow(rustdoc::private_intra_doc_links)]

mod admin;
mod admin_client;
mod api_error;
mod api_json;
mod audit;
mod cli;
mod config;
mod cors;
mod data_dir;
mod error;
mod exchange;
mod http;
mod kdc;
mod master_key;
mod metrics;
mod password_policy;
mod policy;
mod principals;
mod request;
mod signing_keys;
mod state;
mod store;
mod throttle;
mod throttle_redis;

// The KDC and its operations.
pub use error::KdcError;
pub use kdc::{Credential, IssuedCounters, Kdc, KdcStats, PrincipalSpec};
pub use master_key::{MasterKey, MasterKeyError};
pub use policy::Policy;
pub use throttle::ThrottlePolicy;

// The principal store.
pub use store::{
    ChangeTopic, DatabaseUrl, MemoryStore, NewPrincipal, PasswordDerivation, PostgresStore, PrincipalKind,
    PrincipalRecord, PrincipalStore, PrincipalUpdate, RealmInit, SqliteStore, StoreError, StoredKey, StoredSigningKey,
};

// Serving over HTTP.
pub use admin::{CreatePrincipal, RotateRequest, UpdatePrincipal};
pub use api_error::ApiError;
pub use cors::AllowedOrigins;
pub use http::{all_routes, app, serve, serve_with, serve_with_tls};
pub use state::AppState;

// The audit trail.
pub use audit::{
    AuditDestination, AuditLog, AuditSink, AuditStats, FsyncPolicy, STALL_AFTER, VerifyError, VerifySummary,
    verify as verify_audit_trail,
};

// Configuration and the `kdc` command.
pub use cli::main;
pub use config::{
    CorsConfig, DEFAULT_DATA_DIR, DEFAULT_LISTEN, DEFAULT_REALM, DEFAULT_SHUTDOWN_GRACE_SECS, FileConfig,
    advertised_base_url,
};
